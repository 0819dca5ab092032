//! The operator's IAM policy (`manifests/deploy/iam-policy.json`) lists
//! exactly the AWS actions this crate calls: every SDK operation found in
//! the source (`self.ecs.create_service()` → `ecs:CreateService`), plus the
//! `TagResource` that tagging on create needs and `iam:PassRole` for the
//! roles a task definition names; nothing else.

use std::collections::BTreeSet;
use std::path::Path;

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `(prefix, field)`: how each SDK client is held in the source.
const CLIENTS: [(&str, &str); 3] = [
    ("ecs", "self.ecs"),
    ("elasticfilesystem", "self.efs"),
    ("secretsmanager", "self.sm"),
];

/// SDK operations called in `src/`, as IAM actions.
fn called_actions() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut actions = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        // Join lines so `self.ecs\n    .create_service()` reads as one call.
        let text: String = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("");
        for (prefix, field) in CLIENTS {
            let needle = format!("{field}.");
            let mut rest = text.as_str();
            while let Some(i) = rest.find(&needle) {
                rest = &rest[i + needle.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && rest[name.len()..].starts_with("()") {
                    actions.insert(format!("{prefix}:{}", pascal(&name)));
                }
            }
        }
    }
    actions
}

fn policy_actions() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/deploy/iam-policy.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("policy is JSON");
    let mut out = BTreeSet::new();
    for st in doc["Statement"].as_array().expect("Statement array") {
        assert_eq!(st["Effect"], "Allow", "only Allow statements: {st}");
        match &st["Action"] {
            serde_json::Value::String(a) => {
                out.insert(a.clone());
            }
            serde_json::Value::Array(a) => {
                out.extend(a.iter().map(|v| v.as_str().unwrap().to_owned()));
            }
            other => panic!("bad Action {other}"),
        }
    }
    out
}

#[test]
fn the_source_calls_what_the_scanner_expects() {
    let called = called_actions();
    // A sanity floor: the scanner must see the calls the seam is built on.
    for a in [
        "ecs:RegisterTaskDefinition",
        "ecs:DescribeServices",
        "ecs:CreateService",
        "elasticfilesystem:CreateAccessPoint",
        "elasticfilesystem:DescribeAccessPoints",
        "secretsmanager:PutSecretValue",
        "secretsmanager:CreateSecret",
    ] {
        assert!(called.contains(a), "scanner missed {a}: {called:?}");
    }
}

#[test]
fn the_policy_lists_exactly_the_actions_the_backend_calls() {
    let called = called_actions();
    let policy = policy_actions();
    for a in &called {
        assert!(
            policy.contains(a),
            "manifests/deploy/iam-policy.json lacks {a}, which src/ calls"
        );
    }
    // Implied actions: tag-on-create needs TagResource on each service;
    // registering a task definition with roles needs iam:PassRole.
    let implied: BTreeSet<String> = [
        "ecs:TagResource",
        "elasticfilesystem:TagResource",
        "secretsmanager:TagResource",
        "iam:PassRole",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for a in &implied {
        assert!(policy.contains(a), "policy lacks {a}");
    }
    let extra: Vec<_> = policy
        .iter()
        .filter(|a| !called.contains(*a) && !implied.contains(*a))
        .collect();
    assert!(
        extra.is_empty(),
        "policy grants actions the backend never calls: {extra:?}"
    );
    assert!(
        policy.iter().all(|a| !a.contains('*')),
        "no wildcard actions: {policy:?}"
    );
}

/// The shipped operator task definition keeps its root file system
/// read-only and gives GitOps a writable `/tmp` (an ephemeral volume), and
/// the shipped image has git and CA certificates.
#[test]
fn the_operator_task_definition_gives_gitops_a_writable_tmp_and_the_image_has_git() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/deploy");
    let td: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("operator-task-definition.json")).unwrap(),
    )
    .unwrap();
    let c = &td["containerDefinitions"][0];
    assert_eq!(c["readonlyRootFilesystem"], true);
    let tmp = c["mountPoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["containerPath"] == "/tmp")
        .expect("a mount at /tmp");
    assert_ne!(tmp["readOnly"], true);
    let volume = td["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == tmp["sourceVolume"])
        .expect("the /tmp volume");
    assert!(
        volume.get("efsVolumeConfiguration").is_none(),
        "ephemeral, not EFS"
    );
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    let install = dockerfile
        .lines()
        .find(|l| l.contains("apt-get install"))
        .expect("an apt-get install line");
    for pkg in ["git", "ca-certificates"] {
        assert!(
            install.split_whitespace().any(|w| w == pkg),
            "{pkg} in {install:?}"
        );
    }
}
