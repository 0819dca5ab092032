//! The checked-in `crds/` must match what `berth crd` generates from the
//! Rust types (run `cargo run -- crd` after changing a resource type).

use std::path::Path;

#[test]
fn checked_in_crds_match_the_rust_types() {
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let fresh = tempfile::tempdir().unwrap();
    berth::cli::crd::write_all(fresh.path()).unwrap();
    let mut stale = Vec::new();
    for (name, contents) in berth::cli::crd::files() {
        let current = std::fs::read_to_string(checked_in.join(&name)).unwrap_or_default();
        if current != contents {
            stale.push(name);
        }
    }
    let mut extra: Vec<String> = std::fs::read_dir(&checked_in)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    extra.retain(|n| !fresh.path().join(n).exists() && n != "README.md");
    assert!(
        stale.is_empty() && extra.is_empty(),
        "crds/ is stale (differs: {stale:?}; not generated: {extra:?}): run `cargo run -- crd` and commit crds/"
    );
}
