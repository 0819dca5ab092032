//! Valid Fargate task sizes (CPU units → memory MiB).

/// CPU values Fargate accepts.
pub const CPU_VALUES: [u32; 7] = [256, 512, 1024, 2048, 4096, 8192, 16384];

/// The memory values (MiB) Fargate accepts for `cpu`, or `None` if `cpu` is invalid.
pub fn memory_values(cpu: u32) -> Option<Vec<u32>> {
    let range =
        |lo: u32, hi: u32, step: u32| (lo..=hi).step_by(step as usize).collect::<Vec<u32>>();
    Some(match cpu {
        256 => vec![512, 1024, 2048],
        512 => range(1024, 4096, 1024),
        1024 => range(2048, 8192, 1024),
        2048 => range(4096, 16384, 1024),
        4096 => range(8192, 30720, 1024),
        8192 => range(16384, 61440, 4096),
        16384 => range(32768, 122880, 8192),
        _ => return None,
    })
}

/// Whether `cpu`/`memory` is a task size Fargate accepts.
pub fn is_valid(cpu: u32, memory: u32) -> bool {
    memory_values(cpu).is_some_and(|m| m.contains(&memory))
}

/// Lists the valid memory values for `cpu`, for error messages.
pub fn describe_memory_values(cpu: u32) -> String {
    memory_values(cpu)
        .unwrap_or_default()
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_combination_is_valid_and_neighbours_are_not() {
        assert!(is_valid(256, 512));
        assert!(!is_valid(256, 3072));
        assert!(is_valid(2048, 4096));
        assert!(!is_valid(2048, 2048));
        assert!(is_valid(4096, 30720));
        assert!(!is_valid(4096, 31744));
        assert!(is_valid(8192, 20480));
        assert!(!is_valid(8192, 17408));
        assert!(is_valid(16384, 122880));
        assert!(!is_valid(16384, 36864));
        assert!(!is_valid(300, 1024));
        assert_eq!(memory_values(512).unwrap(), vec![1024, 2048, 3072, 4096]);
    }
}
