//! `berth describe`: one object in detail, kubectl style: metadata, a spec
//! summary per kind, status, a conditions table and the object's events.

use std::fmt::Write as _;

use serde_json::Value;

use super::client::{Client, Event, TemplateVersion};
use super::get::{autostart_policy, template_ref};
use super::render::{self, cell, str_at, value_at, Table, NONE};
use super::CliError;
use crate::api::{DynObject, Kind};

/// Fetches and renders `kind/name`.
pub async fn describe(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<String, CliError> {
    let obj = client.get(kind, namespace, name).await?;
    let events = client
        .events(namespace, kind, name)
        .await
        .map_err(|e| e.to_string());
    let versions = if kind == Kind::WorkspaceTemplate {
        client.template_versions(namespace, name).await.ok()
    } else {
        None
    };
    let followed = if kind == Kind::Workspace
        && super::get::condition_status(&obj.status, "Outdated") == "True"
    {
        followed_version(client, namespace, &obj).await
    } else {
        None
    };
    Ok(render_object(&obj, events, versions.as_deref(), followed))
}

/// The template version a workspace follows: its pin, else the template's latest.
async fn followed_version(client: &Client, namespace: &str, o: &DynObject) -> Option<i64> {
    if let Some(v) = value_at(&o.spec, "template.version").and_then(Value::as_i64) {
        return Some(v);
    }
    let template = str_at(&o.spec, "template.name")?;
    let t = client
        .get(Kind::WorkspaceTemplate, namespace, template)
        .await
        .ok()?;
    value_at(&t.status, "latestVersion")
        .and_then(Value::as_i64)
        .filter(|v| *v > 0)
}

/// Lines of a description before alignment: values of consecutive
/// `key: value` lines at one level line up (like kubectl's tabwriter); any
/// other line (a section header, a table, a field at another level) ends
/// the block.
#[derive(Default)]
struct Doc {
    lines: Vec<Line>,
}

enum Line {
    Field {
        level: usize,
        key: String,
        value: String,
    },
    Raw(String),
}

impl Doc {
    /// A `Key:  value` line at `level` (two spaces per level).
    fn field(&mut self, level: usize, key: &str, value: impl std::fmt::Display) {
        self.lines.push(Line::Field {
            level,
            key: key.to_string(),
            value: value.to_string(),
        });
    }

    /// A section header (`Spec:`) at `level`.
    fn section(&mut self, level: usize, key: &str) {
        self.raw(format!("{}{key}:", "  ".repeat(level)));
    }

    /// Lines printed as they are (each without its newline).
    fn raw(&mut self, text: impl AsRef<str>) {
        for l in text.as_ref().lines() {
            self.lines.push(Line::Raw(l.to_string()));
        }
    }

    /// A key whose value is a list: first item on the key's line, the rest below it.
    fn multi(&mut self, level: usize, key: &str, items: &[String]) {
        match items.split_first() {
            None => self.field(level, key, NONE),
            Some((first, rest)) => {
                self.field(level, key, first);
                for i in rest {
                    self.field(level, "", i);
                }
            }
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.lines.len() {
            // A block is a run of fields at one level.
            let level_of = |l: &Line| match l {
                Line::Field { level, .. } => Some(*level),
                Line::Raw(_) => None,
            };
            let first = level_of(&self.lines[i]);
            let block_end = if first.is_none() {
                i
            } else {
                self.lines[i..]
                    .iter()
                    .position(|l| level_of(l) != first)
                    .map_or(self.lines.len(), |p| i + p)
            };
            if block_end == i {
                if let Line::Raw(t) = &self.lines[i] {
                    let _ = writeln!(out, "{t}");
                }
                i += 1;
                continue;
            }
            let label = |level: usize, key: &str| {
                if key.is_empty() {
                    "  ".repeat(level)
                } else {
                    format!("{}{key}:", "  ".repeat(level))
                }
            };
            let width = self.lines[i..block_end]
                .iter()
                .map(|l| match l {
                    Line::Field { level, key, .. } => label(*level, key).chars().count(),
                    Line::Raw(_) => 0,
                })
                .max()
                .unwrap_or(0)
                + 2;
            for l in &self.lines[i..block_end] {
                if let Line::Field { level, key, value } = l {
                    let line = format!("{:<width$}{value}", label(*level, key));
                    let _ = writeln!(out, "{}", line.trim_end());
                }
            }
            i = block_end;
        }
        out
    }
}

fn map_lines(v: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    v.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Renders an object, its events (or why they could not be read) and, for
/// templates, its versions; `followed` is the template version an outdated
/// workspace gets at its next start, when known.
pub fn render_object(
    o: &DynObject,
    events: Result<Vec<Event>, String>,
    versions: Option<&[TemplateVersion]>,
    followed: Option<i64>,
) -> String {
    let mut doc = Doc::default();
    let out = &mut doc;
    let m = &o.metadata;
    out.field(0, "Name", &m.name);
    out.field(0, "Namespace", &m.namespace);
    out.multi(0, "Labels", &map_lines(&m.labels));
    out.multi(0, "Annotations", &map_lines(&m.annotations));
    out.field(
        0,
        "UID",
        m.uid.map(|u| u.to_string()).unwrap_or_else(|| NONE.into()),
    );
    out.field(
        0,
        "Created",
        m.creation_timestamp
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| NONE.into()),
    );
    if let Some(t) = m.deletion_timestamp {
        out.field(
            0,
            "Deleting Since",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        out.multi(0, "Finalizers", &m.finalizers);
    }
    out.field(
        0,
        "Generation",
        m.generation
            .map(|g| g.to_string())
            .unwrap_or_else(|| NONE.into()),
    );
    match o.kind() {
        Some(Kind::Workspace) => workspace(out, o, followed),
        Some(Kind::WorkspaceTemplate) => template(out, o, versions),
        Some(Kind::LifecyclePolicy) => policy(out, o),
        Some(Kind::GitSource) => gitsource(out, o),
        None => {}
    }
    conditions(out, &o.status);
    match events {
        Ok(evs) if evs.is_empty() => out.field(0, "Events", NONE),
        Ok(evs) => {
            out.section(0, "Events");
            let mut t = Table::new(["TYPE", "REASON", "AGE", "MESSAGE"]);
            for e in evs {
                let mut age = render::age(e.last_timestamp.or(e.first_timestamp));
                if let Some(c) = e.count.filter(|c| *c > 1) {
                    age = format!("{age} (x{c} over {})", render::age(e.first_timestamp));
                }
                t.push(vec![e.type_, e.reason, age, e.message]);
            }
            out.raw(t.render_indented(2));
        }
        Err(e) => {
            out.field(0, "Events", format!("<unavailable: {e}>"));
        }
    }
    doc.render()
}

fn workspace(out: &mut Doc, o: &DynObject, followed: Option<i64>) {
    let s = &o.spec;
    out.section(0, "Spec");
    out.field(1, "Owner", cell(value_at(s, "owner")));
    let tmpl = match value_at(s, "template.version") {
        Some(v) => format!(
            "{} version {v} (pinned)",
            str_at(s, "template.name").unwrap_or(NONE)
        ),
        None => format!("{} (follows active)", template_ref(s)),
    };
    out.field(1, "Template", tmpl);
    out.field(1, "Running", cell(value_at(s, "running")));
    let resources = match (
        value_at(s, "resources.cpu"),
        value_at(s, "resources.memory").and_then(Value::as_u64),
    ) {
        (Some(c), Some(m)) => format!("cpu {c}, memory {}", render::memory(m)),
        _ => "<template default>".to_string(),
    };
    out.field(1, "Resources", resources);
    match s
        .get("parameters")
        .and_then(Value::as_object)
        .filter(|p| !p.is_empty())
    {
        Some(params) => {
            out.section(1, "Parameters");
            for (k, v) in params {
                out.field(2, k, cell(Some(v)));
            }
        }
        None => out.field(1, "Parameters", NONE),
    }
    let autostart = match str_at(s, "schedule.autostart.cron") {
        Some(c) => format!(
            "{c} ({})",
            str_at(s, "schedule.autostart.timezone").unwrap_or("UTC")
        ),
        None => NONE.to_string(),
    };
    let autostop =
        if value_at(s, "schedule.autostop.disabled").and_then(Value::as_bool) == Some(true) {
            "disabled".to_string()
        } else {
            match str_at(s, "schedule.autostop.afterInactivity") {
                Some(d) => format!("after {d} of inactivity"),
                None => "policy default".to_string(),
            }
        };
    out.section(1, "Schedule");
    out.field(2, "Autostart", autostart);
    out.field(2, "Autostop", autostop);
    out.field(
        1,
        "Deletion Policy",
        str_at(s, "deletionPolicy").unwrap_or("Retain"),
    );

    let st = &o.status;
    out.section(0, "Status");
    out.field(1, "Phase", super::get::phase(o));
    let mut version = cell(value_at(st, "templateVersion"));
    if super::get::condition_status(st, "Outdated") == "True" {
        match followed {
            Some(v) => version.push_str(&format!(" (outdated: v{v} applies at next start)")),
            None => version.push_str(" (outdated: a newer version applies at next start)"),
        }
    }
    out.field(1, "Template Version", version);
    let sized = |v: Option<&Value>| {
        let v = v?;
        Some(format!(
            "cpu {}, memory {}",
            value_at(v, "cpu")?,
            render::memory(value_at(v, "memory")?.as_u64()?)
        ))
    };
    if let Some(r) = sized(value_at(st, "resources")) {
        out.field(1, "Resources", r);
    }
    if let Some(r) = sized(value_at(st, "pendingResources")) {
        let when = if value_at(st, "resources").is_some() {
            " (at the next start: berth restart)"
        } else {
            ""
        };
        out.field(1, "Pending Resources", format!("{r}{when}"));
    }
    if let Some(t) = value_at(st, "lastTransition") {
        out.field(
            1,
            "Last Transition",
            format!(
                "{} ({}) at {}",
                cell(value_at(t, "action")),
                cell(value_at(t, "reason")),
                render::timestamp(value_at(t, "at"))
            ),
        );
    }
    let activity = match (
        str_at(st, "lastActivityAt"),
        str_at(st, "lastActivitySource"),
    ) {
        (Some(at), Some(src)) => format!("{} ({src})", render::timestamp(Some(&Value::from(at)))),
        (Some(at), None) => render::timestamp(Some(&Value::from(at))),
        _ => NONE.to_string(),
    };
    out.field(1, "Last Activity", activity);
    out.field(
        1,
        "Autostop At",
        render::timestamp(value_at(st, "autostopAt")),
    );
    out.field(
        1,
        "Next Autostart",
        render::timestamp(value_at(st, "nextAutostartAt")),
    );
    if let Some(at) = render::time_at(st, "dormantAt").filter(|t| *t <= chrono::Utc::now()) {
        out.field(
            1,
            "Dormant Since",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    if let Some(l) = value_at(st, "lifecycle") {
        out.section(1, "Lifecycle (in force)");
        let after = match (str_at(l, "afterInactivity"), str_at(l, "source")) {
            (Some(a), Some(src)) => format!("{a} (from {src})"),
            _ => "off".to_string(),
        };
        out.field(2, "Autostop After", after);
        out.field(2, "Max Lifetime", cell(value_at(l, "maxLifetime")));
        out.field(2, "Max Extension", cell(value_at(l, "maxAfterInactivity")));
        let allowed = value_at(l, "autostartAllowed")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let days: Vec<&str> = value_at(l, "autostartDays")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let autostart = match (allowed, days.is_empty()) {
            (false, _) => "not allowed".to_string(),
            (true, true) => "allowed".to_string(),
            (true, false) => format!("allowed on {}", days.join(", ")),
        };
        out.field(2, "Autostart", autostart);
        if let Some(t) = str_at(l, "dormancyThreshold") {
            let mut d = format!("after {t} stopped and unused");
            if let Some(del) = str_at(l, "dormantDeletion") {
                d.push_str(&format!("; deleted after {del} Dormant"));
            }
            out.field(2, "Dormancy", d);
        }
        if value_at(l, "requireActiveVersion").and_then(Value::as_bool) == Some(true) {
            out.field(
                2,
                "Template Version",
                "the active version at every start (policy)",
            );
        }
        if let Some(notes) = value_at(l, "notes").and_then(Value::as_array) {
            for n in notes.iter().filter_map(Value::as_str) {
                out.field(2, "Note", n);
            }
        }
        // The timeline of upcoming transitions, soonest first; none past.
        let now = chrono::Utc::now();
        let mut upcoming: Vec<(chrono::DateTime<chrono::Utc>, &str)> = [
            ("autostop (inactivity)", "autostopAt"),
            ("stop (maximum lifetime)", "lifetimeEndsAt"),
            ("autostart", "nextAutostartAt"),
            ("becomes Dormant", "dormantAt"),
            ("deleted (Dormant)", "dormantDeletionAt"),
        ]
        .into_iter()
        .filter_map(|(what, key)| Some((render::time_at(st, key)?, what)))
        .filter(|(at, _)| *at > now)
        .collect();
        upcoming.sort();
        if !upcoming.is_empty() {
            out.section(1, "Upcoming");
            for (at, what) in upcoming {
                out.field(
                    2,
                    &at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    what,
                );
            }
        }
    }
    match value_at(st, "ecs") {
        Some(ecs) => {
            out.section(1, "ECS");
            if let Some(c) = str_at(ecs, "cluster") {
                out.field(2, "Cluster", short_arn(c));
            }
            let service = str_at(ecs, "serviceName")
                .or_else(|| str_at(ecs, "serviceArn").map(short_arn))
                .unwrap_or(NONE);
            out.field(2, "Service", service);
            out.field(
                2,
                "Task Definition",
                str_at(ecs, "taskDefinitionArn")
                    .map(short_arn)
                    .unwrap_or(NONE),
            );
            let n = |k: &str| value_at(ecs, k).and_then(Value::as_i64).unwrap_or(0);
            out.field(
                2,
                "Tasks",
                format!(
                    "{} desired, {} running, {} pending",
                    n("desiredCount"),
                    n("runningCount"),
                    n("pendingCount")
                ),
            );
        }
        None => out.field(1, "ECS", NONE),
    }
    match value_at(st, "efs") {
        Some(efs) => {
            out.section(1, "EFS");
            out.field(2, "Access Point", cell(value_at(efs, "accessPointId")));
            out.field(2, "Root Directory", cell(value_at(efs, "rootDirectory")));
        }
        None => out.field(1, "EFS", NONE),
    }
    agent(out, st, &o.metadata.name);
}

/// The agent of the current start and its scripts.
fn agent(out: &mut Doc, st: &Value, name: &str) {
    let Some(a) = value_at(st, "agent") else {
        out.field(1, "Agent", "<none> (no agent has connected in this start)");
        return;
    };
    out.section(1, "Agent");
    let connected = value_at(a, "connected").and_then(Value::as_bool) == Some(true);
    let version = str_at(a, "version")
        .map(|v| format!(", version {v}"))
        .unwrap_or_default();
    // Whole seconds: enough for people, and a table that fits.
    let at = |v: &Value, k: &str| {
        render::time_at(v, k)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| NONE.to_string())
    };
    let seen = at(a, "lastSeen");
    out.field(
        2,
        "Connected",
        if connected {
            format!("yes{version}, last report {seen}")
        } else {
            format!("no{version}, gone since {seen}")
        },
    );
    out.field(2, "Lifecycle", cell(value_at(a, "lifecycle")));
    let scripts = value_at(a, "scripts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if scripts.is_empty() {
        out.field(2, "Scripts", NONE);
        return;
    }
    out.section(2, "Scripts");
    let mut t = render::Table::new(["NAME", "STATE", "EXIT", "BLOCKS", "STARTED", "FINISHED"]);
    for s in &scripts {
        let mut state = cell(value_at(s, "state"));
        if value_at(s, "runOnStop").and_then(Value::as_bool) == Some(true) {
            state.push_str(" (on stop)");
        }
        if let Some(n) = value_at(s, "droppedLines").and_then(Value::as_i64) {
            state.push_str(&format!(" ({n} lines dropped)"));
        }
        t.push(vec![
            cell(value_at(s, "name")),
            state,
            cell(value_at(s, "exitCode")),
            if value_at(s, "blocksLogin").and_then(Value::as_bool) == Some(true) {
                "yes".into()
            } else {
                "no".into()
            },
            at(s, "startedAt"),
            at(s, "finishedAt"),
        ]);
    }
    out.raw(t.render_indented(6));
    out.field(2, "Logs", format!("berth logs {name} [--script NAME] [-f]"));
}

/// The part of an ARN after its resource type: `family:3` for a task
/// definition, the name for a cluster; anything else as it is.
fn short_arn(arn: &str) -> &str {
    if !arn.starts_with("arn:") {
        return arn;
    }
    let resource = arn.splitn(6, ':').nth(5).unwrap_or(arn);
    match resource.split_once('/') {
        Some((_, rest)) => rest.rsplit('/').next().unwrap_or(rest),
        None => resource,
    }
}

fn template(out: &mut Doc, o: &DynObject, versions: Option<&[TemplateVersion]>) {
    let s = &o.spec;
    let latest = match value_at(&o.status, "latestVersion").and_then(Value::as_i64) {
        Some(v) if v > 0 => v.to_string(),
        _ => NONE.to_string(),
    };
    out.field(0, "Latest Version", latest);
    if let Some(vs) = versions.filter(|v| !v.is_empty()) {
        let list: Vec<String> = vs.iter().map(|v| v.version.to_string()).collect();
        out.field(0, "Versions", list.join(", "));
    }
    out.section(0, "Spec");
    if let Some(d) = str_at(s, "displayName") {
        out.field(1, "Display Name", d);
    }
    if let Some(d) = str_at(s, "description") {
        out.field(1, "Description", d);
    }
    out.field(1, "Image", cell(value_at(s, "container.image")));
    out.field(1, "Home", cell(value_at(s, "container.homePath")));
    let resources = match (
        value_at(s, "resources.default.cpu"),
        value_at(s, "resources.default.memory").and_then(Value::as_u64),
    ) {
        (Some(c), Some(m)) => format!("cpu {c}, memory {} (default)", render::memory(m)),
        _ => NONE.to_string(),
    };
    out.field(1, "Resources", resources);
    out.section(1, "Infrastructure");
    out.field(2, "Region", cell(value_at(s, "infrastructure.region")));
    out.field(2, "Cluster", cell(value_at(s, "infrastructure.cluster")));
    out.field(
        2,
        "File System",
        cell(value_at(s, "infrastructure.fileSystemId")),
    );
    match s
        .get("parameters")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
    {
        Some(params) => {
            out.section(1, "Parameters");
            let mut t = Table::new(["NAME", "TYPE", "DEFAULT", "MUTABLE", "OPTIONS"]);
            for p in params {
                let options = p
                    .get("options")
                    .and_then(Value::as_array)
                    .filter(|o| !o.is_empty())
                    .map(|o| {
                        o.iter()
                            .map(|v| cell(Some(v)))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_else(|| NONE.into());
                t.push(vec![
                    cell(p.get("name")),
                    cell(p.get("type")),
                    match p.get("default") {
                        None | Some(Value::Null) => "<required>".into(),
                        Some(Value::String(d)) if d.is_empty() => "\"\"".into(),
                        d => cell(d),
                    },
                    cell(Some(p.get("mutable").unwrap_or(&Value::Bool(false)))),
                    options,
                ]);
            }
            out.raw(t.render_indented(4));
        }
        None => out.field(1, "Parameters", NONE),
    }
    match s
        .get("scripts")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
    {
        Some(scripts) => {
            out.section(1, "Scripts");
            for (i, sc) in scripts.iter().enumerate() {
                let mut notes = Vec::new();
                if let Some(w) = str_at(sc, "when") {
                    notes.push(format!("when {w}"));
                }
                if sc.get("blocksLogin").and_then(Value::as_bool) == Some(false) {
                    notes.push("does not block login".to_string());
                }
                let notes = if notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", notes.join(", "))
                };
                out.raw(format!("    {}. {}{notes}", i + 1, cell(sc.get("name"))));
            }
        }
        None => out.field(1, "Scripts", NONE),
    }
}

fn gitsource(out: &mut Doc, o: &DynObject) {
    let (s, st) = (&o.spec, &o.status);
    out.section(0, "Spec");
    out.field(1, "Repository", cell(value_at(s, "repository")));
    out.field(1, "Branch", cell(value_at(s, "branch")));
    out.field(1, "Path", str_at(s, "path").unwrap_or("<repository root>"));
    out.field(1, "Interval", cell(value_at(s, "interval")));
    out.field(1, "Prune", cell(value_at(s, "prune")));
    out.field(1, "Suspend", cell(value_at(s, "suspend")));
    out.section(0, "Sync");
    out.field(
        1,
        "Last Applied Commit",
        cell(value_at(st, "lastAppliedCommit")),
    );
    out.field(1, "Last Applied At", cell(value_at(st, "lastAppliedAt")));
    out.field(
        1,
        "Last Attempted Commit",
        cell(value_at(st, "lastAttemptedCommit")),
    );
    let count = |key: &str| {
        value_at(st, key)
            .and_then(Value::as_array)
            .map(Vec::len)
            .unwrap_or(0)
    };
    out.field(1, "Inventory", format!("{} object(s)", count("inventory")));
    let errors: Vec<String> = value_at(st, "errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    serde_json::from_value::<crate::api::gitsource::SyncError>(e.clone()).ok()
                })
                .map(|e| e.to_string())
                .collect()
        })
        .unwrap_or_default();
    out.multi(1, "Errors", &errors);
    let drift: Vec<String> = value_at(st, "drift")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|d| {
                    let fields: Vec<&str> = d
                        .get("fields")
                        .and_then(Value::as_array)
                        .map(|f| f.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    format!("{}: {}", cell(d.get("object")), fields.join(", "))
                })
                .collect()
        })
        .unwrap_or_default();
    out.multi(1, "Drift", &drift);
}

fn policy(out: &mut Doc, o: &DynObject) {
    let s = &o.spec;
    let flag = |path: &str, default: bool| {
        value_at(s, path)
            .and_then(Value::as_bool)
            .unwrap_or(default)
            .to_string()
    };
    out.section(0, "Spec");
    out.section(1, "Autostop");
    out.field(
        2,
        "Default After Inactivity",
        cell(value_at(s, "autostop.defaultAfterInactivity")),
    );
    out.field(
        2,
        "Allow User Override",
        flag("autostop.allowUserOverride", true),
    );
    out.field(
        2,
        "Allow User Disable",
        flag("autostop.allowUserDisable", false),
    );
    out.field(
        2,
        "Max After Inactivity",
        cell(value_at(s, "autostop.maxAfterInactivity")),
    );
    out.field(2, "Max Lifetime", cell(value_at(s, "autostop.maxLifetime")));
    out.field(1, "Autostart", autostart_policy(s));
    out.field(
        1,
        "Require Active Version",
        flag("requireActiveVersion", false),
    );
}

fn conditions(out: &mut Doc, status: &Value) {
    match status
        .get("conditions")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    {
        None => out.field(0, "Conditions", NONE),
        Some(cs) => {
            out.section(0, "Conditions");
            let mut t = Table::new(["TYPE", "STATUS", "REASON", "MESSAGE", "AGE"]);
            for c in cs {
                t.push(vec![
                    cell(c.get("type")),
                    cell(c.get("status")),
                    cell(c.get("reason")),
                    cell(c.get("message")),
                    render::age(render::time_at(c, "lastTransitionTime")),
                ]);
            }
            out.raw(t.render_indented(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::meta::new_object;
    use serde_json::json;

    #[test]
    fn workspace_description_names_template_mode_and_empty_sections() {
        let o = new_object(
            Kind::Workspace,
            "default",
            "alice",
            json!({"owner": "alice", "template": {"name": "dev"}, "running": true}),
        );
        let text = render_object(&o, Ok(vec![]), None, None);
        assert!(
            text.starts_with("Name:         alice\nNamespace:    default\nLabels:       <none>\n"),
            "{text}"
        );
        assert!(
            text.contains("Spec:\n  Owner:       alice\n  Template:    dev (follows active)\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Conditions:  <none>\nEvents:      <none>\n"),
            "{text}"
        );
    }

    #[test]
    fn a_reconciled_workspace_shows_phase_cloud_objects_transition_conditions_and_events() {
        std::env::set_var(render::FIXED_AGE_ENV, "1m");
        let mut o = new_object(
            Kind::Workspace,
            "default",
            "alice",
            json!({"owner": "alice", "template": {"name": "dev"}, "running": true}),
        );
        o.status = json!({
            "phase": "Running",
            "templateVersion": 1,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Running", "message": "the workspace's task is running", "lastTransitionTime": "2024-06-01T10:00:00Z"},
                {"type": "Outdated", "status": "True", "reason": "NewerVersion", "message": "runs template version 1; version 2 applies at the next start (berth restart)", "lastTransitionTime": "2024-06-01T10:00:00Z"}
            ],
            "ecs": {
                "cluster": "arn:aws:ecs:us-west-2:123456789012:cluster/CoderCluster",
                "serviceName": "berth-default-alice",
                "serviceArn": "arn:aws:ecs:us-west-2:123456789012:service/CoderCluster/berth-default-alice",
                "taskDefinitionArn": "arn:aws:ecs:us-west-2:123456789012:task-definition/berth-default-alice:3",
                "desiredCount": 1, "runningCount": 1, "pendingCount": 0
            },
            "efs": {"accessPointId": "fsap-0123", "rootDirectory": "/alice"},
            "lastTransition": {"action": "start", "reason": "Manual", "at": "2024-06-01T10:00:00Z"},
            "agent": {
                "connected": true, "version": "0.1.0", "lastSeen": "2024-06-01T10:00:05Z", "lifecycle": "Ready",
                "scripts": [
                    {"name": "persist", "state": "Succeeded", "blocksLogin": true, "exitCode": 0,
                     "startedAt": "2024-06-01T10:00:06Z", "finishedAt": "2024-06-01T10:00:07Z"},
                    {"name": "runner", "state": "Running", "blocksLogin": false, "startedAt": "2024-06-01T10:00:07Z",
                     "droppedLines": 12},
                    {"name": "deregister", "state": "Pending", "blocksLogin": false, "runOnStop": true}
                ]
            }
        });
        let events = vec![Event {
            type_: "Normal".into(),
            reason: "Started".into(),
            message: "desiredCount 1".into(),
            count: Some(2),
            ..Event::default()
        }];
        let text = render_object(&o, Ok(events), None, Some(2));
        let status = &text[text.find("Status:").unwrap()..];
        let expected = "\
Status:
  Phase:             Running
  Template Version:  1 (outdated: v2 applies at next start)
  Last Transition:   start (Manual) at 2024-06-01T10:00:00Z
  Last Activity:     <none>
  Autostop At:       <none>
  Next Autostart:    <none>
  ECS:
    Cluster:          CoderCluster
    Service:          berth-default-alice
    Task Definition:  berth-default-alice:3
    Tasks:            1 desired, 1 running, 0 pending
  EFS:
    Access Point:    fsap-0123
    Root Directory:  /alice
  Agent:
    Connected:  yes, version 0.1.0, last report 2024-06-01T10:00:05Z
    Lifecycle:  Ready
    Scripts:
      NAME         STATE                        EXIT     BLOCKS   STARTED                FINISHED
      persist      Succeeded                    0        yes      2024-06-01T10:00:06Z   2024-06-01T10:00:07Z
      runner       Running (12 lines dropped)   <none>   no       2024-06-01T10:00:07Z   <none>
      deregister   Pending (on stop)            <none>   no       <none>                 <none>
    Logs:  berth logs alice [--script NAME] [-f]
Conditions:
  TYPE       STATUS   REASON         MESSAGE                                                                        AGE
  Ready      True     Running        the workspace's task is running                                                1m
  Outdated   True     NewerVersion   runs template version 1; version 2 applies at the next start (berth restart)   1m
Events:
  TYPE     REASON    AGE               MESSAGE
  Normal   Started   1m (x2 over 1m)   desiredCount 1
";
        assert_eq!(status, expected);
        let unknown = render_object(&o, Ok(vec![]), None, None);
        assert!(
            unknown.contains("1 (outdated: a newer version applies at next start)"),
            "{unknown}"
        );
        assert_eq!(
            short_arn("arn:aws:ecs:us-west-2:1:task-definition/fam:7"),
            "fam:7"
        );
        assert_eq!(short_arn("CoderCluster"), "CoderCluster");
    }
}
