//! Pure decisions of a sync: which documents a commit declares (with every
//! error located by file and document), and how the store differs from them.
//!
//! No I/O here: [`desired`] turns files into normalised objects, [`plan`]
//! compares them with stored objects. Both are unit-tested below.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::git::File;
use crate::api::gitsource::{DriftedObject, SyncError};
use crate::api::validate::{self, FieldError};
use crate::api::{yaml, DynObject, Kind};

/// `(kind, namespace, name)`.
pub type Key = (Kind, String, String);

/// `workspaces/default/alice`.
pub fn reference(k: &Key) -> String {
    format!("{}/{}/{}", k.0.plural(), k.1, k.2)
}

/// What one commit declares.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// The commit.
    pub commit: String,
    /// The documents as read (namespace filled in), in file order.
    pub docs: Vec<Value>,
    /// `(file, 1-based document)` of each of `docs`.
    pub origins: Vec<(String, usize)>,
    /// Each document decoded and normalised, with the owner label; `None`
    /// when it has errors.
    pub objects: Vec<Option<(Kind, DynObject)>>,
    /// Every problem of every document.
    pub errors: Vec<SyncError>,
}

impl Desired {
    /// The keys of the declared objects.
    pub fn keys(&self) -> BTreeSet<Key> {
        self.objects
            .iter()
            .flatten()
            .map(|(k, o)| (*k, o.metadata.namespace.clone(), o.metadata.name.clone()))
            .collect()
    }

    /// A field error of the request's document `i` (or of the whole
    /// request), located in its file.
    pub fn locate(&self, e: &FieldError) -> SyncError {
        let (file, document) = match e.document.and_then(|i| self.origins.get(i)) {
            Some((f, d)) => (f.clone(), Some(*d)),
            None => (String::new(), None),
        };
        SyncError {
            file,
            document,
            object: e.object.clone(),
            field: e.field.clone(),
            message: e.message.clone(),
        }
    }
}

/// Reads the documents of `files`: fills in `default_ns`, decodes and
/// checks each, and adds the owner label `label=value`.
pub fn desired(
    commit: &str,
    files: &[File],
    default_ns: &str,
    label: &str,
    value: &str,
) -> Desired {
    let mut d = Desired {
        commit: commit.to_string(),
        ..Default::default()
    };
    for f in files {
        let text = match std::str::from_utf8(&f.content) {
            Ok(t) => t,
            Err(_) => {
                d.errors.push(SyncError {
                    file: f.path.clone(),
                    message: "is not UTF-8 text".into(),
                    ..Default::default()
                });
                continue;
            }
        };
        let docs = match yaml::parse_documents(text) {
            Ok(docs) => docs,
            Err(e) => {
                d.errors.push(SyncError {
                    file: f.path.clone(),
                    message: e.to_string(),
                    ..Default::default()
                });
                continue;
            }
        };
        for (i, mut doc) in docs.into_iter().enumerate() {
            if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.entry("namespace")
                    .or_insert_with(|| Value::String(default_ns.to_string()));
            }
            d.docs.push(doc);
            d.origins.push((f.path.clone(), i + 1));
        }
    }
    let mut seen: BTreeMap<Key, usize> = BTreeMap::new();
    for (i, doc) in d.docs.iter().enumerate() {
        let mut errs = Vec::new();
        let decoded = match validate::decode(doc, Some(i)) {
            Ok((kind, mut obj)) => {
                let here = |field: &str, message: String| FieldError {
                    object: obj.reference(),
                    field: field.to_string(),
                    message,
                    document: Some(i),
                };
                if kind == Kind::GitSource {
                    errs.push(here(
                        "kind",
                        "a GitSource cannot be synced from git; apply it with `berth apply`".into(),
                    ));
                }
                if obj.metadata.labels.contains_key(label) {
                    errs.push(here(
                        &format!("metadata.labels.{label}"),
                        "is set by Berth on the objects a GitSource applies; remove it from the document".into(),
                    ));
                }
                if kind == Kind::Workspace
                    && obj
                        .spec
                        .get("owner")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .is_empty()
                {
                    errs.push(here(
                        "spec.owner",
                        "required for workspaces synced from git (there is no user applying them to default it to)".into(),
                    ));
                }
                let key = (
                    kind,
                    obj.metadata.namespace.clone(),
                    obj.metadata.name.clone(),
                );
                if let Some(first) = seen.get(&key) {
                    let (f, n) = &d.origins[*first];
                    errs.push(here(
                        "metadata.name",
                        format!("is declared twice in this commit (first in {f}, document {n})"),
                    ));
                } else {
                    seen.insert(key, i);
                }
                obj.metadata.resource_version = None;
                obj.metadata
                    .labels
                    .insert(label.to_string(), value.to_string());
                errs.is_empty().then_some((kind, obj))
            }
            Err(validate::Invalid(list)) => {
                errs.extend(list);
                None
            }
        };
        d.objects.push(decoded);
        let located: Vec<SyncError> = errs.iter().map(|e| d.locate(e)).collect();
        d.errors.extend(located);
    }
    d
}

/// The fields in which `stored` differs from `desired`: spec, labels and
/// annotations (status, finalizers and server-set metadata are not compared).
pub fn differences(desired: &DynObject, stored: &DynObject) -> Vec<String> {
    let mut out = Vec::new();
    map_diff(
        "metadata.labels",
        &desired.metadata.labels,
        &stored.metadata.labels,
        &mut out,
    );
    map_diff(
        "metadata.annotations",
        &desired.metadata.annotations,
        &stored.metadata.annotations,
        &mut out,
    );
    value_diff("spec", &desired.spec, &stored.spec, &mut out);
    out
}

fn map_diff(
    prefix: &str,
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    out: &mut Vec<String>,
) {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        if a.get(k) != b.get(k) {
            out.push(format!("{prefix}.{k}"));
        }
    }
}

fn value_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                value_diff(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// How the store differs from a commit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Declared objects that do not exist.
    pub create: Vec<Key>,
    /// Owned objects that differ, with the fields.
    pub change: Vec<(Key, Vec<String>)>,
    /// Declared objects that exist but belong to someone else (the apply
    /// will refuse them).
    pub conflict: Vec<Key>,
    /// Declared objects still being deleted (left out of this apply).
    pub waiting: Vec<Key>,
    /// Owned objects the commit no longer declares.
    pub prune: Vec<Key>,
}

impl Plan {
    /// Whether applying the commit would write nothing.
    pub fn is_noop(&self) -> bool {
        self.create.is_empty()
            && self.change.is_empty()
            && self.conflict.is_empty()
            && self.prune.is_empty()
    }

    /// Owned objects that differ or are gone, as drift.
    pub fn drift(&self) -> Vec<DriftedObject> {
        let mut out: Vec<DriftedObject> = self
            .change
            .iter()
            .map(|(k, f)| DriftedObject {
                object: reference(k),
                fields: f.clone(),
            })
            .collect();
        out.extend(self.create.iter().map(|k| DriftedObject {
            object: reference(k),
            fields: vec!["<deleted>".into()],
        }));
        out.sort_by(|a, b| a.object.cmp(&b.object));
        out
    }
}

/// Compares a commit's objects with the store. An object is owned when it
/// carries `label=value`, or when it is in `inventory` (applied before) and
/// carries no owner label at all (someone re-applied it without the label).
pub fn plan(
    desired: &Desired,
    stored: &HashMap<Key, DynObject>,
    label: &str,
    value: &str,
    inventory: &BTreeSet<String>,
    prune: bool,
) -> Plan {
    let mut p = Plan::default();
    let keys = desired.keys();
    for (kind, obj) in desired.objects.iter().flatten() {
        let key = (
            *kind,
            obj.metadata.namespace.clone(),
            obj.metadata.name.clone(),
        );
        match stored.get(&key) {
            None => p.create.push(key),
            Some(s) if s.metadata.deletion_timestamp.is_some() => p.waiting.push(key),
            Some(s) => {
                let holder = s.metadata.labels.get(label);
                let owned = holder.map(String::as_str) == Some(value)
                    || (holder.is_none() && inventory.contains(&reference(&key)));
                if !owned {
                    p.conflict.push(key);
                    continue;
                }
                let diff = differences(obj, s);
                if !diff.is_empty() {
                    p.change.push((key, diff));
                }
            }
        }
    }
    if prune {
        for (key, s) in stored {
            if s.metadata.labels.get(label).map(String::as_str) == Some(value)
                && s.metadata.deletion_timestamp.is_none()
                && !keys.contains(key)
            {
                p.prune.push(key.clone());
            }
        }
        p.prune.sort();
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LABEL: &str = "berth.dev/gitsource";

    fn file(path: &str, text: &str) -> File {
        File {
            path: path.into(),
            content: text.as_bytes().to_vec(),
        }
    }

    fn ws(name: &str, extra: &str) -> String {
        format!(
            "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: {name}\nspec:\n  owner: alice\n  template:\n    name: dev\n{extra}"
        )
    }

    fn stored_of(d: &Desired) -> HashMap<Key, DynObject> {
        d.objects
            .iter()
            .flatten()
            .map(|(k, o)| {
                (
                    (*k, o.metadata.namespace.clone(), o.metadata.name.clone()),
                    o.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn errors_name_the_file_the_document_and_the_field() {
        let text = format!(
            "{}---\n{}",
            ws("a", ""),
            ws("b", "  resources: {cpu: 1024, memory: 1}\n")
        );
        let d = desired(
            "c1",
            &[file("team/ws.yaml", &text)],
            "default",
            LABEL,
            "default.gs",
        );
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        let e = &d.errors[0];
        assert_eq!((e.file.as_str(), e.document), ("team/ws.yaml", Some(2)));
        assert_eq!(e.field, "spec.resources.memory");
        assert_eq!(e.object, "workspaces/b");
    }

    #[test]
    fn defaults_make_a_freshly_applied_commit_equal_to_its_documents() {
        let d = desired(
            "c1",
            &[file("a.yaml", &ws("a", ""))],
            "default",
            LABEL,
            "default.gs",
        );
        let stored = stored_of(&d);
        // Written out in full (defaults spelled out, keys reordered) it is the same object.
        let full = "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  namespace: default\n  name: a\nspec:\n  running: true\n  deletionPolicy: Retain\n  template: {name: dev}\n  owner: alice\n";
        let d2 = desired(
            "c2",
            &[file("a.yaml", full)],
            "default",
            LABEL,
            "default.gs",
        );
        assert!(d2.errors.is_empty(), "{:?}", d2.errors);
        let p = plan(&d2, &stored, LABEL, "default.gs", &BTreeSet::new(), true);
        assert!(p.is_noop(), "{p:?}");
    }

    #[test]
    fn changed_fields_are_named_and_foreign_objects_are_conflicts() {
        let d = desired(
            "c1",
            &[file("a.yaml", &ws("a", ""))],
            "default",
            LABEL,
            "default.gs",
        );
        let mut stored = stored_of(&d);
        let key = (Kind::Workspace, "default".to_string(), "a".to_string());
        let s = stored.get_mut(&key).unwrap();
        s.spec["resources"] = json!({"cpu": 2048, "memory": 4096});
        s.metadata.labels.insert("team".into(), "x".into());
        let p = plan(&d, &stored, LABEL, "default.gs", &BTreeSet::new(), false);
        assert_eq!(
            p.change,
            vec![(
                key.clone(),
                vec![
                    "metadata.labels.team".to_string(),
                    "spec.resources".to_string()
                ]
            )]
        );
        stored.get_mut(&key).unwrap().metadata.labels.remove(LABEL);
        let p = plan(&d, &stored, LABEL, "default.gs", &BTreeSet::new(), false);
        assert_eq!(p.conflict, vec![key.clone()]);
        // Applied before and relabelled by hand: drift, not a conflict.
        let inv: BTreeSet<String> = [reference(&key)].into();
        let p = plan(&d, &stored, LABEL, "default.gs", &inv, false);
        assert!(p.conflict.is_empty() && p.change.len() == 1, "{p:?}");
    }

    #[test]
    fn prune_lists_only_owned_objects_gone_from_the_commit() {
        let both = format!("{}---\n{}", ws("a", ""), ws("b", ""));
        let d = desired(
            "c1",
            &[file("a.yaml", &both)],
            "default",
            LABEL,
            "default.gs",
        );
        let mut stored = stored_of(&d);
        let mut hand = stored.values().next().unwrap().clone();
        hand.metadata.name = "hand".into();
        hand.metadata.labels.clear();
        stored.insert((Kind::Workspace, "default".into(), "hand".into()), hand);
        let only_a = desired(
            "c2",
            &[file("a.yaml", &ws("a", ""))],
            "default",
            LABEL,
            "default.gs",
        );
        let p = plan(
            &only_a,
            &stored,
            LABEL,
            "default.gs",
            &BTreeSet::new(),
            true,
        );
        assert_eq!(
            p.prune,
            vec![(Kind::Workspace, "default".into(), "b".into())]
        );
        let p = plan(
            &only_a,
            &stored,
            LABEL,
            "default.gs",
            &BTreeSet::new(),
            false,
        );
        assert!(p.is_noop());
    }

    #[test]
    fn git_sources_owner_labels_duplicates_and_missing_owners_are_refused() {
        let text = format!(
            "{}---\n{}---\n{}",
            ws("a", ""),
            ws("a", ""),
            "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: c\n  labels: {berth.dev/gitsource: x.y}\nspec:\n  template: {name: dev}\n"
        );
        let d = desired(
            "c1",
            &[file("a.yaml", &text)],
            "default",
            LABEL,
            "default.gs",
        );
        let fields: Vec<(Option<usize>, &str)> = d
            .errors
            .iter()
            .map(|e| (e.document, e.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                (Some(2), "metadata.name"),
                (Some(3), "metadata.labels.berth.dev/gitsource"),
                (Some(3), "spec.owner"),
            ]
        );
    }
}
