//! `berth apply`, `berth diff` and `berth delete`: reading manifests from
//! files, directories and stdin, and mapping the server's answers back to
//! them.
//!
//! # Guarantees
//! `apply` sends every document of every file in **one** request, so the
//! server's all-or-nothing apply covers the whole command line: one bad
//! document means nothing is written. A cause the server reports for
//! document *i* of the request is printed as `FILE (document K): …`.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use super::client::{Client, PruneArgs};
use super::{CliError, FileArgs};
use crate::api::{DynObject, Kind};

/// Where one document of the request came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file (`-` for stdin).
    pub file: String,
    /// 1-based position in the file.
    pub index: usize,
    /// Documents in that file.
    pub of: usize,
}

impl Origin {
    /// `FILE` or `FILE (document K)` when the file has several documents.
    pub fn label(&self) -> String {
        if self.of > 1 {
            format!("{} (document {})", self.file, self.index)
        } else {
            self.file.clone()
        }
    }
}

/// All documents named by `-f`, in order, with their origins.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// The documents.
    pub documents: Vec<Value>,
    /// Where each came from (same length as `documents`).
    pub origins: Vec<Origin>,
}

/// Expands `-f` arguments into files: a directory contributes its `.yaml`,
/// `.yml` and `.json` files, sorted (recursively with `-R`).
pub fn expand_files(args: &FileArgs) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for f in &args.files {
        if f.as_os_str() == "-" {
            out.push(f.clone());
        } else if f.is_dir() {
            collect_dir(f, args.recursive, &mut out)?;
        } else if f.exists() {
            out.push(f.clone());
        } else {
            anyhow::bail!("the path \"{}\" does not exist", f.display());
        }
    }
    Ok(out)
}

fn collect_dir(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                collect_dir(&p, recursive, out)?;
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads and parses every document named by `-f`. Parse errors are
/// collected for all files before failing.
pub fn read_manifests(args: &FileArgs) -> Result<Manifests, CliError> {
    if args.files.is_empty() {
        return Err(CliError::Other(anyhow::anyhow!(
            "must specify one of -f and -R (e.g. -f manifests/)"
        )));
    }
    let files = expand_files(args)?;
    let mut m = Manifests::default();
    let mut errors = Vec::new();
    for f in files {
        let (name, text) = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading stdin")?;
            ("-".to_string(), s)
        } else {
            let name = f.display().to_string();
            match std::fs::read_to_string(&f) {
                Ok(t) => (name, t),
                Err(e) => {
                    errors.push(format!("{name}: {e}"));
                    continue;
                }
            }
        };
        match crate::api::yaml::parse_documents(&text) {
            Ok(docs) => {
                let of = docs.len();
                for (i, d) in docs.into_iter().enumerate() {
                    m.documents.push(d);
                    m.origins.push(Origin {
                        file: name.clone(),
                        index: i + 1,
                        of,
                    });
                }
            }
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(CliError::Many(errors));
    }
    if m.documents.is_empty() {
        return Err(CliError::Other(anyhow::anyhow!(
            "no objects passed to apply"
        )));
    }
    Ok(m)
}

/// Fills in a missing `metadata.namespace` with `ns`; with an explicit
/// `-n`, a document naming another namespace is an error (as in kubectl).
fn set_namespaces(m: &mut Manifests, ns: &str, explicit: bool) -> Result<(), CliError> {
    let mut errors = Vec::new();
    for (doc, origin) in m.documents.iter_mut().zip(&m.origins) {
        let Some(obj) = doc.as_object_mut() else {
            continue;
        };
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        let Some(meta) = meta.as_object_mut() else {
            continue;
        };
        match meta.get("namespace").and_then(Value::as_str) {
            None => {
                meta.insert("namespace".into(), Value::String(ns.to_string()));
            }
            Some(other) if explicit && other != ns => errors.push(format!(
                "{}: the namespace from the provided object \"{other}\" does not match the namespace \"{ns}\"; \
                 pass -n {other} or remove metadata.namespace",
                origin.label()
            )),
            Some(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Many(errors))
    }
}

/// Apply request through the server, with causes mapped back to files.
async fn server_apply(
    client: &Client,
    m: &Manifests,
    dry_run: bool,
) -> Result<Vec<super::client::ApplyResult>, CliError> {
    client.apply(&m.documents, dry_run).await.map_err(|e| {
        let locate = |d: usize| m.origins.get(d).map(Origin::label);
        CliError::Many(e.lines(Some(&locate)))
    })
}

/// Apply with prune through the server, with causes mapped back to files.
async fn server_apply_prune(
    client: &Client,
    m: &Manifests,
    dry_run: bool,
    prune: &PruneArgs,
) -> Result<super::client::ApplyResponse, CliError> {
    client
        .apply_prune(&m.documents, dry_run, prune)
        .await
        .map_err(|e| {
            let locate = |d: usize| m.origins.get(d).map(Origin::label);
            CliError::Many(e.lines(Some(&locate)))
        })
}

/// `-l` as `apply --prune` needs it: required, like kubectl.
pub fn prune_args(ns: &str, selector: Option<&str>) -> Result<PruneArgs, CliError> {
    match selector.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Ok(PruneArgs {
            selector: s.to_string(),
            namespace: ns.to_string(),
        }),
        None => Err(CliError::Other(anyhow::anyhow!(
            "--prune needs a label selector (-l key=value): prune deletes the objects matching it that the files no longer contain"
        ))),
    }
}

fn singular(kind: &str) -> String {
    Kind::from_kind_field(kind)
        .map(Kind::singular)
        .unwrap_or(kind)
        .to_string()
}

/// `berth apply` (with `prune`: `berth apply --prune -l …`).
pub async fn apply(
    client: &Client,
    ns: &str,
    explicit_ns: bool,
    files: &FileArgs,
    dry_run: bool,
    prune: Option<&PruneArgs>,
) -> Result<(), CliError> {
    let mut m = read_manifests(files)?;
    set_namespaces(&mut m, ns, explicit_ns)?;
    let suffix = if dry_run { " (dry run)" } else { "" };
    let (results, pruned) = match prune {
        None => (server_apply(client, &m, dry_run).await?, Vec::new()),
        Some(p) => {
            let r = server_apply_prune(client, &m, dry_run, p).await?;
            (r.results, r.pruned)
        }
    };
    for r in results {
        println!("{}/{} {}{suffix}", singular(&r.kind), r.name, r.action);
    }
    for p in pruned {
        let kind = singular(&p.kind);
        match p.action.as_str() {
            "kept" => eprintln!("warning: {kind}/{} not pruned yet: {}", p.name, p.message),
            "deleting" => println!("{kind}/{} pruned (deleting){suffix}", p.name),
            _ => println!("{kind}/{} pruned{suffix}", p.name),
        }
    }
    Ok(())
}

/// The part of an object `diff` compares: name, namespace, labels, annotations and spec.
pub fn comparable(o: &DynObject) -> Value {
    let mut meta = serde_json::Map::new();
    meta.insert("name".into(), Value::String(o.metadata.name.clone()));
    meta.insert(
        "namespace".into(),
        Value::String(o.metadata.namespace.clone()),
    );
    if !o.metadata.labels.is_empty() {
        meta.insert(
            "labels".into(),
            serde_json::to_value(&o.metadata.labels).unwrap_or_default(),
        );
    }
    if !o.metadata.annotations.is_empty() {
        meta.insert(
            "annotations".into(),
            serde_json::to_value(&o.metadata.annotations).unwrap_or_default(),
        );
    }
    serde_json::json!({
        "apiVersion": o.api_version,
        "kind": o.kind,
        "metadata": Value::Object(meta),
        "spec": o.spec,
    })
}

/// A unified diff between the live and the applied form of one object; empty when equal.
pub fn unified_diff(reference: &str, live: Option<&DynObject>, applied: &DynObject) -> String {
    let old = live
        .map(|l| crate::api::yaml::to_yaml(&comparable(l)))
        .unwrap_or_default();
    let new = crate::api::yaml::to_yaml(&comparable(applied));
    if old == new {
        return String::new();
    }
    let old_header = if live.is_some() {
        format!("{reference} (live)")
    } else {
        "/dev/null".to_string()
    };
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&old_header, &format!("{reference} (applied)"))
        .to_string()
}

/// The diff of an object prune would delete.
pub fn deletion_diff(reference: &str, live: &DynObject) -> String {
    let old = crate::api::yaml::to_yaml(&comparable(live));
    similar::TextDiff::from_lines(old.as_str(), "")
        .unified_diff()
        .context_radius(3)
        .header(&format!("{reference} (live)"), "/dev/null")
        .to_string()
}

/// `berth diff`: returns whether anything would change.
pub async fn diff(
    client: &Client,
    ns: &str,
    explicit_ns: bool,
    files: &FileArgs,
    prune: Option<&PruneArgs>,
) -> Result<bool, CliError> {
    let mut m = read_manifests(files)?;
    set_namespaces(&mut m, ns, explicit_ns)?;
    let (results, pruned) = match prune {
        None => (server_apply(client, &m, true).await?, Vec::new()),
        Some(p) => {
            let r = server_apply_prune(client, &m, true, p).await?;
            (r.results, r.pruned)
        }
    };
    let mut changed = false;
    for p in pruned.iter().filter(|p| p.action != "kept") {
        let Some(kind) = Kind::from_kind_field(&p.kind) else {
            continue;
        };
        if let Some(live) = client.get_opt(kind, &p.namespace, &p.name).await? {
            changed = true;
            let reference = format!("{}/{}/{}", kind.plural(), p.namespace, p.name);
            print!("{}", deletion_diff(&reference, &live));
        }
    }
    for r in results {
        let (Some(kind), Some(applied)) = (Kind::from_kind_field(&r.kind), r.object.as_ref())
        else {
            continue;
        };
        let namespace = if r.namespace.is_empty() {
            applied.metadata.namespace.clone()
        } else {
            r.namespace.clone()
        };
        let live = client.get_opt(kind, &namespace, &r.name).await?;
        let reference = format!("{}/{namespace}/{}", kind.plural(), r.name);
        let d = unified_diff(&reference, live.as_ref(), applied);
        if !d.is_empty() {
            changed = true;
            print!("{d}");
        }
    }
    Ok(changed)
}

/// `berth delete KIND NAME…` or `berth delete -f …`.
pub async fn delete(
    client: &Client,
    ns: &str,
    explicit_ns: bool,
    kind: Option<&str>,
    names: &[String],
    files: &FileArgs,
    ignore_not_found: bool,
) -> Result<(), CliError> {
    let mut targets: Vec<(Kind, String, String)> = Vec::new();
    match (kind, files.files.is_empty()) {
        (Some(k), true) => {
            // `delete workspace/alice` as well as `delete workspace alice`.
            let (k, first) = match k.split_once('/') {
                Some((k, n)) => (k, Some(n.to_string())),
                None => (k, None),
            };
            let kind = super::parse_kind(k)?;
            let all: Vec<String> = first.into_iter().chain(names.iter().cloned()).collect();
            if all.is_empty() {
                return Err(CliError::Other(anyhow::anyhow!(
                    "resource name may not be empty: berth delete {} NAME",
                    kind.singular()
                )));
            }
            targets.extend(all.into_iter().map(|n| (kind, ns.to_string(), n)));
        }
        (None, false) => {
            let mut m = read_manifests(files)?;
            set_namespaces(&mut m, ns, explicit_ns)?;
            let mut errors = Vec::new();
            for (doc, origin) in m.documents.iter().zip(&m.origins) {
                let kind = doc
                    .get("kind")
                    .and_then(Value::as_str)
                    .and_then(Kind::from_kind_field);
                let name = doc.pointer("/metadata/name").and_then(Value::as_str);
                let namespace = doc
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(ns);
                match (kind, name) {
                    (Some(k), Some(n)) => targets.push((k, namespace.to_string(), n.to_string())),
                    (None, _) => {
                        errors.push(format!("{}: kind: unknown or missing kind", origin.label()))
                    }
                    (_, None) => {
                        errors.push(format!("{}: metadata.name: required", origin.label()))
                    }
                }
            }
            if !errors.is_empty() {
                return Err(CliError::Many(errors));
            }
        }
        (Some(_), false) => {
            return Err(CliError::Other(anyhow::anyhow!(
                "pass either KIND NAME or -f FILE, not both"
            )));
        }
        (None, true) => {
            return Err(CliError::Other(anyhow::anyhow!(
                "you must specify the objects to delete: berth delete KIND NAME or berth delete -f FILE"
            )));
        }
    }
    let mut errors = Vec::new();
    let mut seen = BTreeMap::new();
    for (kind, namespace, name) in targets {
        if seen
            .insert((kind, namespace.clone(), name.clone()), ())
            .is_some()
        {
            continue;
        }
        match client.delete(kind, &namespace, &name).await {
            Ok(_) => println!("{}/{name} deleted", kind.singular()),
            Err(e) if e.is_not_found() && ignore_not_found => {}
            Err(e) if e.is_not_found() => errors.extend(e.lines(None)),
            // Name the object, unless the server's message already does.
            Err(e) => errors.extend(e.lines(None).into_iter().map(|l| {
                let object = format!("{}/{name}", kind.plural());
                if l.starts_with(&object) {
                    l
                } else {
                    format!("{object}: {l}")
                }
            })),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Many(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::meta::new_object;
    use serde_json::json;

    #[test]
    fn origins_name_the_document_only_in_multi_document_files() {
        assert_eq!(
            Origin {
                file: "a.yaml".into(),
                index: 1,
                of: 1
            }
            .label(),
            "a.yaml"
        );
        assert_eq!(
            Origin {
                file: "a.yaml".into(),
                index: 2,
                of: 3
            }
            .label(),
            "a.yaml (document 2)"
        );
    }

    #[test]
    fn directories_contribute_sorted_manifest_files_only() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.yaml", "a.yml", "c.json", "notes.txt"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/d.yaml"), "").unwrap();
        let names = |recursive| {
            expand_files(&FileArgs {
                files: vec![dir.path().to_path_buf()],
                recursive,
            })
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect::<Vec<_>>()
        };
        assert_eq!(names(false), vec!["a.yml", "b.yaml", "c.json"]);
        assert_eq!(names(true), vec!["a.yml", "b.yaml", "c.json", "sub/d.yaml"]);
    }

    #[test]
    fn missing_namespaces_are_filled_and_conflicts_with_explicit_n_rejected() {
        let mut m = Manifests {
            documents: vec![
                json!({"metadata": {"name": "a"}}),
                json!({"metadata": {"name": "b", "namespace": "x"}}),
            ],
            origins: vec![
                Origin {
                    file: "f".into(),
                    index: 1,
                    of: 2,
                },
                Origin {
                    file: "f".into(),
                    index: 2,
                    of: 2,
                },
            ],
        };
        set_namespaces(&mut m, "default", false).unwrap();
        assert_eq!(m.documents[0]["metadata"]["namespace"], "default");
        let err = set_namespaces(&mut m, "y", true).unwrap_err();
        assert!(
            err.lines().iter().all(|l| l.starts_with("f (document")),
            "{:?}",
            err.lines()
        );
    }

    #[test]
    fn diff_of_equal_objects_is_empty_and_new_objects_diff_against_dev_null() {
        let a = new_object(
            Kind::Workspace,
            "default",
            "alice",
            json!({"owner": "alice", "running": true}),
        );
        let mut b = a.clone();
        b.status = json!({"phase": "Running"});
        b.metadata.generation = Some(4);
        assert_eq!(unified_diff("workspaces/default/alice", Some(&b), &a), "");
        let mut c = a.clone();
        c.spec["running"] = json!(false);
        let d = unified_diff("workspaces/default/alice", Some(&a), &c);
        assert!(
            d.starts_with(
                "--- workspaces/default/alice (live)\n+++ workspaces/default/alice (applied)\n"
            ),
            "{d}"
        );
        assert!(d.contains("-  running: true\n+  running: false\n"), "{d}");
        assert!(unified_diff("w", None, &a).starts_with("--- /dev/null\n"));
    }
}
