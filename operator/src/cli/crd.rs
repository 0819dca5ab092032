//! `berth crd`: JSON Schemas and CRD-style YAML generated from the Rust
//! resource types, checked in under `crds/` so that editors can validate
//! manifests (yaml-language-server, VS Code) and reviewers see every change
//! of shape. A test regenerates them and fails when the checked-in copy is
//! stale.
//!
//! Per kind: `crds/<plural>.schema.json` (the JSON Schema as schemars emits
//! it) and `crds/<plural>.yaml` (a Kubernetes `CustomResourceDefinition`
//! whose `openAPIV3Schema` is the same schema made structural: references
//! inlined, `null` alternatives turned into `nullable`, free-form values
//! marked `x-kubernetes-preserve-unknown-fields`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{json, Map, Value};

use crate::api::{GitSource, Kind, LifecyclePolicy, Workspace, WorkspaceTemplate, GROUP, VERSION};

/// The JSON Schema of one kind.
pub fn schema(kind: Kind) -> Value {
    let s = match kind {
        Kind::Workspace => schemars::schema_for!(Workspace),
        Kind::WorkspaceTemplate => schemars::schema_for!(WorkspaceTemplate),
        Kind::LifecyclePolicy => schemars::schema_for!(LifecyclePolicy),
        Kind::GitSource => schemars::schema_for!(GitSource),
    };
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        // Editors key schemas by `title`; make it the kind, not `Resource_for_…`.
        o.insert("title".into(), Value::String(kind.as_str().to_string()));
        if let Some(Value::Object(props)) = o.get_mut("properties") {
            if let Some(Value::Object(av)) = props.get_mut("apiVersion") {
                av.insert(
                    "const".into(),
                    Value::String(crate::api::API_VERSION.to_string()),
                );
            }
            if let Some(Value::Object(k)) = props.get_mut("kind") {
                k.insert("const".into(), Value::String(kind.as_str().to_string()));
            }
        }
    }
    v
}

/// The CRD-style document of one kind.
pub fn crd(kind: Kind) -> Value {
    let schema = schema(kind);
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let mut open_api = structural(&schema, &defs, 0);
    if let Some(o) = open_api.as_object_mut() {
        o.remove("title");
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{}.{GROUP}", kind.plural()) },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.as_str(),
                "plural": kind.plural(),
                "singular": kind.singular(),
                "shortNames": [kind.short()],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": open_api },
                "subresources": { "status": {} },
            }],
        },
    })
}

/// Makes a schemars schema structural (Kubernetes' openAPIV3Schema rules).
fn structural(v: &Value, defs: &Value, depth: usize) -> Value {
    if depth > 64 {
        return json!({ "x-kubernetes-preserve-unknown-fields": true });
    }
    match v {
        Value::Bool(true) => json!({ "x-kubernetes-preserve-unknown-fields": true }),
        Value::Object(o) => {
            if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                let name = r.rsplit('/').next().unwrap_or("");
                let mut target = structural(
                    defs.get(name).unwrap_or(&Value::Bool(true)),
                    defs,
                    depth + 1,
                );
                if let (Some(t), Some(d)) = (target.as_object_mut(), o.get("description")) {
                    t.insert("description".into(), d.clone());
                }
                return target;
            }
            let mut out = Map::new();
            for (k, val) in o {
                match k.as_str() {
                    "$schema" | "$defs" | "title" => {}
                    "type" => match val {
                        Value::Array(types) => {
                            let non_null: Vec<&Value> = types
                                .iter()
                                .filter(|t| t.as_str() != Some("null"))
                                .collect();
                            if non_null.len() < types.len() {
                                out.insert("nullable".into(), Value::Bool(true));
                            }
                            if let [one] = non_null.as_slice() {
                                out.insert("type".into(), (*one).clone());
                            }
                        }
                        other => {
                            out.insert("type".into(), other.clone());
                        }
                    },
                    "anyOf" | "oneOf" => {
                        let alts: Vec<&Value> = val
                            .as_array()
                            .map(|a| a.iter().collect())
                            .unwrap_or_default();
                        let non_null: Vec<&&Value> = alts
                            .iter()
                            .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                            .collect();
                        if non_null.len() < alts.len() {
                            out.insert("nullable".into(), Value::Bool(true));
                        }
                        if let [one] = non_null.as_slice() {
                            if let Value::Object(inner) = structural(one, defs, depth + 1) {
                                for (ik, iv) in inner {
                                    out.entry(ik).or_insert(iv);
                                }
                            }
                        } else {
                            // Enums of described strings come as oneOf [{const}, …].
                            let consts: Vec<Value> = non_null
                                .iter()
                                .filter_map(|a| a.get("const").cloned())
                                .collect();
                            if consts.len() == non_null.len() && !consts.is_empty() {
                                out.insert("type".into(), Value::String("string".into()));
                                out.insert("enum".into(), Value::Array(consts));
                            } else {
                                out.insert(
                                    "x-kubernetes-preserve-unknown-fields".into(),
                                    Value::Bool(true),
                                );
                            }
                        }
                    }
                    "const" => {
                        out.insert("enum".into(), Value::Array(vec![val.clone()]));
                    }
                    "additionalProperties" if val == &Value::Bool(false) => {}
                    "additionalProperties" | "items" => {
                        out.insert(k.clone(), structural(val, defs, depth + 1));
                    }
                    "properties" => {
                        let props: Map<String, Value> = val
                            .as_object()
                            .map(|p| {
                                p.iter()
                                    .map(|(pk, pv)| (pk.clone(), structural(pv, defs, depth + 1)))
                                    .collect()
                            })
                            .unwrap_or_default();
                        out.insert(k.clone(), Value::Object(props));
                    }
                    "format"
                        if !matches!(
                            val.as_str(),
                            Some("date-time" | "uuid" | "int32" | "int64" | "double")
                        ) => {}
                    _ => {
                        out.insert(k.clone(), val.clone());
                    }
                }
            }
            if out.is_empty()
                || (!out.contains_key("type")
                    && !out.contains_key("x-kubernetes-preserve-unknown-fields"))
            {
                out.insert(
                    "x-kubernetes-preserve-unknown-fields".into(),
                    Value::Bool(true),
                );
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The files `berth crd` writes: (file name, contents), sorted by name.
pub fn files() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let json = serde_json::to_string_pretty(&schema(kind)).unwrap_or_default() + "\n";
        out.push((format!("{}.schema.json", kind.plural()), json));
        let yaml = format!(
            "# Generated by `cargo run -- crd` from the Rust types; do not edit.\n{}",
            crate::api::yaml::to_yaml(&crd(kind))
        );
        out.push((format!("{}.yaml", kind.plural()), yaml));
    }
    out.sort();
    out
}

/// Writes every file into `dir` (created if needed); returns the paths written.
pub fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, contents) in files() {
        let path = dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_schemas_are_structural() {
        for kind in Kind::ALL {
            let crd = crd(kind);
            let text = serde_json::to_string(&crd).unwrap();
            assert!(!text.contains("$ref"), "{kind}: {text}");
            assert!(!text.contains("$defs"), "{kind}");
            let spec =
                &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
            assert_eq!(spec["type"], "object", "{kind}: {spec}");
        }
    }

    #[test]
    fn json_schemas_pin_api_version_and_kind() {
        let s = schema(Kind::Workspace);
        assert_eq!(s["title"], "Workspace");
        assert_eq!(s["properties"]["kind"]["const"], "Workspace");
    }
}
