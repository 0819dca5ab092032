//! Fargate task sizes.
//!
//! Fargate only runs a fixed table of CPU/memory combinations; anything else
//! is rejected by `RegisterTaskDefinition`. The table lives here once so the
//! API's validation (`spec.resources`), the simulator and error messages agree.

/// The CPU values (in CPU units, 1024 = 1 vCPU) Fargate accepts.
pub const CPU_VALUES: [u32; 7] = [256, 512, 1024, 2048, 4096, 8192, 16384];

/// The memory values (MiB) Fargate accepts with `cpu` units, in increasing
/// order; `None` when `cpu` itself is not a Fargate value.
pub fn memory_values(cpu: u32) -> Option<Vec<u32>> {
    let (from, to, step) = match cpu {
        256 => return Some(vec![512, 1024, 2048]),
        512 => (1024, 4096, 1024),
        1024 => (2048, 8192, 1024),
        2048 => (4096, 16384, 1024),
        4096 => (8192, 30720, 1024),
        8192 => (16384, 61440, 4096),
        16384 => (32768, 122880, 8192),
        _ => return None,
    };
    Some((from..=to).step_by(step as usize).collect())
}

/// True when Fargate runs a task of `cpu` units and `memory` MiB.
pub fn is_valid(cpu: u32, memory: u32) -> bool {
    memory_values(cpu).is_some_and(|values| values.contains(&memory))
}

/// Explains why `cpu`/`memory` is not a Fargate size, listing the valid
/// memory values for `cpu` (or the valid CPU values); `None` when valid.
pub fn explain_invalid(cpu: u32, memory: u32) -> Option<String> {
    match memory_values(cpu) {
        None => Some(format!(
            "cpu {cpu} is not a Fargate CPU value; valid values: {}",
            join(&CPU_VALUES)
        )),
        Some(values) if !values.contains(&memory) => Some(format!(
            "memory {memory} MiB is not valid with cpu {cpu}; valid values: {}",
            join(&values)
        )),
        Some(_) => None,
    }
}

fn join(values: &[u32]) -> String {
    values
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_fargate_table_is_encoded() {
        assert_eq!(memory_values(256), Some(vec![512, 1024, 2048]));
        assert_eq!(memory_values(512).map(|v| v.len()), Some(4));
        assert!(is_valid(1024, 8192));
        assert!(!is_valid(1024, 9216));
        assert!(is_valid(4096, 30720));
        assert!(is_valid(8192, 20480));
        assert!(!is_valid(8192, 17408));
        assert!(is_valid(16384, 122880));
        assert!(!is_valid(16384, 36864));
        assert!(!is_valid(300, 512));
    }

    #[test]
    fn invalid_sizes_are_explained_with_the_valid_values() {
        let msg = explain_invalid(256, 4096).unwrap_or_default();
        assert!(msg.contains("512, 1024, 2048"), "{msg}");
        assert!(explain_invalid(512, 2048).is_none());
        assert!(explain_invalid(3, 512)
            .unwrap_or_default()
            .contains("256, 512"));
    }
}
