//! `berth get`: tables per kind (and `-o wide`), YAML/JSON/name output, and
//! `-w` watches that resume from the last resourceVersion seen.
//!
//! # Watch
//! The list's `metadata.resourceVersion` starts the watch. When the stream
//! drops it is reopened from the last resourceVersion seen; a `410 Gone`
//! (too old) re-lists and starts again from the new list.

use std::io::Write as _;

use serde_json::Value;

use super::client::{ApiError, Client};
use super::render::{self, cell, relative, str_at, time_at, value_at, Table, NONE};
use super::{CliError, Output};
use crate::api::{DynObject, Kind};

/// What `get` was asked for.
#[derive(Clone, Debug)]
pub struct GetRequest {
    /// The kind.
    pub kind: Kind,
    /// One object, or all.
    pub name: Option<String>,
    /// The namespace, or None for all namespaces.
    pub namespace: Option<String>,
    /// Output format (None: table).
    pub output: Option<Output>,
    /// Label selector.
    pub selector: Option<String>,
    /// Keep printing changes.
    pub watch: bool,
}

/// Runs `get`.
pub async fn get(client: &Client, req: &GetRequest) -> Result<(), CliError> {
    let (objects, resource_version) = match (&req.name, &req.namespace) {
        (Some(name), Some(ns)) => (vec![client.get(req.kind, ns, name).await?], None),
        (Some(_), None) => {
            return Err(CliError::Other(anyhow::anyhow!(
                "a resource cannot be retrieved by name across all namespaces; drop -A or pass -n NAMESPACE"
            )))
        }
        (None, ns) => {
            let list = client.list(req.kind, ns.as_deref(), req.selector.as_deref()).await?;
            (list.items, list.metadata.resource_version)
        }
    };
    let all_ns = req.namespace.is_none();
    let mut widths = None;
    let mut printed = Printed::new();
    let mut stdout = std::io::stdout().lock();
    match req.output {
        Some(Output::Yaml) | Some(Output::Json) if req.name.is_some() && !req.watch => {
            write!(stdout, "{}", format_object(&objects[0], req.output))?;
        }
        Some(Output::Yaml) | Some(Output::Json) => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": { "resourceVersion": resource_version.clone().unwrap_or_default() },
                "items": objects,
            });
            if !req.watch {
                write!(stdout, "{}", format_value(&list, req.output))?;
            } else {
                for o in &objects {
                    if req.output == Some(Output::Yaml) {
                        writeln!(stdout, "---")?;
                    }
                    write!(stdout, "{}", format_object(o, req.output))?;
                }
            }
        }
        Some(Output::Name) => {
            for o in &objects {
                writeln!(stdout, "{}/{}", req.kind.singular(), o.metadata.name)?;
            }
        }
        None | Some(Output::Wide) => {
            if objects.is_empty() && !req.watch {
                match &req.namespace {
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                    None => eprintln!("No resources found"),
                }
            } else if !objects.is_empty() {
                let t = table(req.kind, &objects, req.output == Some(Output::Wide), all_ns);
                if req.watch {
                    // Room for the values a column takes over time, so later rows line up.
                    let w = watch_widths(&t);
                    write!(stdout, "{}", render::format_row(&t.headers, &w))?;
                    for (r, o) in t.rows.iter().zip(&objects) {
                        write!(stdout, "{}", render::format_row(r, &w))?;
                        printed.insert(row_key(o), shown_cells(&t.headers, r));
                    }
                    widths = Some(w);
                } else {
                    write!(stdout, "{}", t.render())?;
                }
            }
        }
    }
    stdout.flush()?;
    drop(stdout);
    if req.watch {
        watch(client, req, resource_version, widths, printed).await?;
    }
    Ok(())
}

/// The row last printed per object (see [`shown_cells`]): the controller
/// writes status fields that no column shows (observedGeneration, condition
/// times), and a row identical to the one above it says nothing.
type Printed = std::collections::HashMap<(String, String), Vec<String>>;

fn row_key(o: &DynObject) -> (String, String) {
    (o.metadata.namespace.clone(), o.metadata.name.clone())
}

/// The cells of a row that make it new: all but AGE, which moves by itself.
fn shown_cells(headers: &[String], row: &[String]) -> Vec<String> {
    headers
        .iter()
        .zip(row)
        .filter(|(h, _)| h.as_str() != "AGE")
        .map(|(_, c)| c.clone())
        .collect()
}

fn format_value(v: &Value, output: Option<Output>) -> String {
    match output {
        Some(Output::Json) => format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()),
        _ => crate::api::yaml::to_yaml(v),
    }
}

fn format_object(o: &DynObject, output: Option<Output>) -> String {
    match output {
        Some(Output::Json) => format!("{}\n", serde_json::to_string_pretty(o).unwrap_or_default()),
        _ => crate::api::yaml::to_yaml(o),
    }
}

/// Follows changes; `widths` are the column widths of the table already
/// printed (None: no header printed yet). Columns only ever grow.
async fn watch(
    client: &Client,
    req: &GetRequest,
    mut rv: Option<String>,
    mut widths: Option<Vec<usize>>,
    mut printed: Printed,
) -> Result<(), CliError> {
    let wide = req.output == Some(Output::Wide);
    let all_ns = req.namespace.is_none();
    let mut need_header = widths.is_none();
    let mut failures = 0u32;
    loop {
        let from = match &rv {
            Some(v) => v.clone(),
            None => {
                let list = client
                    .list(req.kind, req.namespace.as_deref(), req.selector.as_deref())
                    .await?;
                list.metadata
                    .resource_version
                    .unwrap_or_else(|| "0".to_string())
            }
        };
        let mut stream = match client
            .watch(
                req.kind,
                req.namespace.as_deref(),
                &from,
                req.selector.as_deref(),
            )
            .await
        {
            Ok(s) => s,
            Err(ApiError::Status(s)) if s.code == 410 => {
                rv = None;
                continue;
            }
            Err(e @ ApiError::Transport { .. }) if failures < 5 => {
                failures += 1;
                tracing::debug!("watch failed, retrying: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(failures))).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            match stream.next().await {
                Ok(Some(ev)) => {
                    failures = 0;
                    let obj: DynObject = match serde_json::from_value(ev.object.clone()) {
                        Ok(o) => o,
                        Err(_) => continue,
                    };
                    if let Some(v) = &obj.metadata.resource_version {
                        rv = Some(v.clone());
                    }
                    if !matches!(ev.type_.as_str(), "ADDED" | "MODIFIED" | "DELETED") {
                        continue;
                    }
                    if let Some(name) = &req.name {
                        if &obj.metadata.name != name {
                            continue;
                        }
                    }
                    let mut out = std::io::stdout().lock();
                    match req.output {
                        Some(Output::Yaml) => {
                            write!(out, "---\n{}", format_object(&obj, req.output))?
                        }
                        Some(Output::Json) => write!(out, "{}", format_object(&obj, req.output))?,
                        Some(Output::Name) => {
                            writeln!(out, "{}/{}", req.kind.singular(), obj.metadata.name)?
                        }
                        None | Some(Output::Wide) => {
                            let t = table(req.kind, std::slice::from_ref(&obj), wide, all_ns);
                            let key = row_key(&obj);
                            let shown = shown_cells(&t.headers, &t.rows[0]);
                            if ev.type_ != "DELETED" && printed.get(&key) == Some(&shown) {
                                continue;
                            }
                            if ev.type_ == "DELETED" {
                                printed.remove(&key);
                            } else {
                                printed.insert(key, shown);
                            }
                            let w = widths.get_or_insert_with(|| watch_widths(&t));
                            for (have, need) in w.iter_mut().zip(t.widths()) {
                                *have = (*have).max(need);
                            }
                            if need_header {
                                write!(out, "{}", render::format_row(&t.headers, w))?;
                                need_header = false;
                            }
                            write!(out, "{}", render::format_row(&t.rows[0], w))?;
                        }
                    }
                    out.flush()?;
                }
                Ok(None) => break,
                Err(ApiError::Status(s)) if s.code == 410 => {
                    rv = None;
                    break;
                }
                Err(e @ ApiError::Transport { .. }) => {
                    tracing::debug!("watch dropped, reconnecting: {e}");
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Column widths for a watch: the table's, but at least as wide as the
/// values of fixed vocabulary (phases, `<default>`, `<unknown>`, ages) need,
/// so that rows printed later as things change still line up.
fn watch_widths(t: &Table) -> Vec<usize> {
    t.headers
        .iter()
        .zip(t.widths())
        .map(|(h, w)| {
            let floor = match h.as_str() {
                "PHASE" => "Deleting".len(),
                "CPU" | "MEMORY" => "<default>".len(),
                "OUTDATED" | "READY" => "<unknown>".len(),
                "AGE" => "9m59s".len(),
                "LAST-ACTIVE" | "AUTOSTOP-AT" | "NEXT-START" => "7h59m ago".len(),
                _ => 0,
            };
            w.max(floor)
        })
        .collect()
}

/// The table for `objects` of `kind`.
pub fn table(kind: Kind, objects: &[DynObject], wide: bool, all_namespaces: bool) -> Table {
    let mut headers: Vec<&str> = match kind {
        Kind::Workspace => vec!["NAME", "OWNER", "TEMPLATE", "PHASE", "CPU", "MEMORY", "AGE"],
        Kind::WorkspaceTemplate => vec!["NAME", "LATEST", "IMAGE", "CPU", "MEMORY", "AGE"],
        Kind::LifecyclePolicy => vec!["NAME", "AUTOSTOP", "MAX-LIFETIME", "AUTOSTART", "AGE"],
        Kind::GitSource => vec![
            "NAME",
            "REPOSITORY",
            "BRANCH",
            "COMMIT",
            "SYNCED",
            "MESSAGE",
            "AGE",
        ],
    };
    if wide && kind == Kind::Workspace {
        headers.extend([
            "VERSION",
            "OUTDATED",
            "READY",
            "AGENT",
            "LAST-ACTIVE",
            "AUTOSTOP-AT",
            "NEXT-START",
        ]);
    }
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let mut t = Table::new(headers);
    for o in objects {
        let mut row = row(kind, o, wide);
        if all_namespaces {
            row.insert(0, o.metadata.namespace.clone());
        }
        t.push(row);
    }
    t
}

/// A workspace's CPU or memory as it runs (`status.resources`), with a
/// change the next start applies shown as `8Gi→16Gi`; before the controller
/// has written either, the spec's value (or `<default>`).
fn running_resource(spec: &Value, status: &Value, field: &str, show: fn(u64) -> String) -> String {
    let at =
        |v: &Value, path: &str| value_at(v, &format!("{path}.{field}")).and_then(Value::as_u64);
    match (at(status, "resources"), at(status, "pendingResources")) {
        (Some(now), Some(next)) if now != next => format!("{}→{}", show(now), show(next)),
        (Some(now), _) => show(now),
        (None, Some(next)) => show(next),
        (None, None) => at(spec, "resources").map_or_else(|| "<default>".into(), show),
    }
}

fn row(kind: Kind, o: &DynObject, wide: bool) -> Vec<String> {
    let spec = &o.spec;
    let status = &o.status;
    let age = render::age(o.metadata.creation_timestamp);
    match kind {
        Kind::Workspace => {
            let mut r = vec![
                o.metadata.name.clone(),
                cell(value_at(spec, "owner")),
                template_ref(spec),
                phase(o),
                running_resource(spec, status, "cpu", |v| v.to_string()),
                running_resource(spec, status, "memory", render::memory),
                age,
            ];
            if wide {
                r.extend([
                    cell(value_at(status, "templateVersion")),
                    condition_status(status, "Outdated"),
                    condition_status(status, "Ready"),
                    agent_state(status),
                    relative(time_at(status, "lastActivityAt")),
                    relative(time_at(status, "autostopAt")),
                    relative(time_at(status, "nextAutostartAt")),
                ]);
            }
            r
        }
        Kind::WorkspaceTemplate => vec![
            o.metadata.name.clone(),
            match value_at(status, "latestVersion").and_then(Value::as_i64) {
                Some(v) if v > 0 => v.to_string(),
                _ => NONE.to_string(),
            },
            cell(value_at(spec, "container.image")),
            cell(value_at(spec, "resources.default.cpu")),
            value_at(spec, "resources.default.memory")
                .and_then(Value::as_u64)
                .map(render::memory)
                .unwrap_or_else(|| NONE.into()),
            age,
        ],
        Kind::LifecyclePolicy => vec![
            o.metadata.name.clone(),
            cell(value_at(spec, "autostop.defaultAfterInactivity")),
            cell(value_at(spec, "autostop.maxLifetime")),
            autostart_policy(spec),
            age,
        ],
        Kind::GitSource => vec![
            o.metadata.name.clone(),
            cell(value_at(spec, "repository")),
            cell(value_at(spec, "branch")),
            str_at(status, "lastAppliedCommit")
                .map(|c| c.chars().take(7).collect())
                .unwrap_or_else(|| NONE.to_string()),
            if value_at(spec, "suspend").and_then(Value::as_bool) == Some(true) {
                "Suspended".to_string()
            } else {
                condition_status(status, "Synced")
            },
            condition_message(status, "Ready"),
            age,
        ],
    }
}

/// The message of condition `type_`, or `<none>`.
pub fn condition_message(status: &Value, type_: &str) -> String {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        })
        .and_then(|c| c.get("message").and_then(Value::as_str))
        .filter(|m| !m.is_empty())
        .unwrap_or(NONE)
        .to_string()
}

/// The AGENT column: the agent's lifecycle while it is connected,
/// `Disconnected` once it is not, `<none>` before it first connected.
pub fn agent_state(status: &Value) -> String {
    match value_at(status, "agent") {
        None => NONE.to_string(),
        Some(a) if value_at(a, "connected").and_then(Value::as_bool) != Some(true) => {
            "Disconnected".to_string()
        }
        Some(a) => cell(value_at(a, "lifecycle")),
    }
}

/// `base` or `base@v3` when pinned.
pub fn template_ref(spec: &Value) -> String {
    match (
        str_at(spec, "template.name"),
        value_at(spec, "template.version"),
    ) {
        (Some(n), Some(v)) => format!("{n}@v{v}"),
        (Some(n), None) => n.to_string(),
        _ => NONE.to_string(),
    }
}

/// The phase, or `Deleting` while a deletion waits on finalizers.
pub fn phase(o: &DynObject) -> String {
    // Being deleted wins over the last phase the controller wrote (as
    // kubectl shows Terminating); not yet seen by the controller is Pending.
    if o.metadata.deletion_timestamp.is_some() {
        return "Deleting".to_string();
    }
    str_at(&o.status, "phase").unwrap_or("Pending").to_string()
}

/// The status of condition `type_`, or `<unknown>`.
pub fn condition_status(status: &Value, type_: &str) -> String {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str))
        .unwrap_or("<unknown>")
        .to_string()
}

/// `allowed`, `Mon,Tue` (allowed on those days) or `disabled`.
pub fn autostart_policy(spec: &Value) -> String {
    if value_at(spec, "autostart.allowed").and_then(Value::as_bool) == Some(false) {
        return "disabled".to_string();
    }
    match value_at(spec, "autostart.days").and_then(Value::as_array) {
        Some(days) if !days.is_empty() => days
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => "allowed".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::meta::new_object;
    use serde_json::json;

    #[test]
    fn workspace_rows_show_pins_defaults_and_namespaces() {
        std::env::set_var(render::FIXED_AGE_ENV, "1m");
        let mut a = new_object(
            Kind::Workspace,
            "default",
            "alice",
            json!({"owner": "alice", "template": {"name": "dev", "version": 2}, "resources": {"cpu": 1024, "memory": 4096}}),
        );
        a.status = json!({"phase": "Running"});
        let b = new_object(
            Kind::Workspace,
            "acme",
            "bob",
            json!({"owner": "bob", "template": {"name": "dev"}}),
        );
        let t = table(Kind::Workspace, &[a, b], false, true);
        assert_eq!(
            t.render(),
            "NAMESPACE   NAME    OWNER   TEMPLATE   PHASE     CPU         MEMORY      AGE\n\
             default     alice   alice   dev@v2     Running   1024        4Gi         1m\n\
             acme        bob     bob     dev        Pending   <default>   <default>   1m\n"
        );
    }

    #[test]
    fn policy_autostart_column_says_allowed_days_or_disabled() {
        assert_eq!(autostart_policy(&json!({})), "allowed");
        assert_eq!(
            autostart_policy(&json!({"autostart": {"days": ["Mon", "Tue"]}})),
            "Mon,Tue"
        );
        assert_eq!(
            autostart_policy(&json!({"autostart": {"allowed": false}})),
            "disabled"
        );
    }
}
