//! Validation of documents and objects.
//!
//! Every rule reports a [`FieldError`] naming the object and the field path
//! (`workspaces/alice: spec.resources.memory: …`) and rules never stop at the
//! first failure: callers collect every error of every document so that a
//! multi-document apply reports all of them and writes nothing.
//!
//! Rules come in two layers:
//! - [`decode`]: one document on its own — `apiVersion`, `kind`, names,
//!   unknown fields, types, and everything checkable without the store
//!   (Fargate sizes, cron, time zones, durations, template parameter
//!   definitions).
//! - [`workspace_against_template`]: a workspace checked against the template
//!   version it uses and against its previous spec (immutable parameters).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fargate;
use super::gitsource::{self, GitSourceSpec};
use super::meta::{DynObject, Kind, ObjectMeta};
use super::policy::LifecyclePolicySpec;
use super::template::{Parameter, ParameterType, WorkspaceTemplateSpec};
use super::workspace::WorkspaceSpec;
use super::API_VERSION;

/// One problem with one field of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// `workspaces/alice` (or `document 3` when the name is unreadable).
    pub object: String,
    /// Dotted path, e.g. `spec.resources.memory`; empty for the whole object.
    pub field: String,
    /// What is wrong, for people.
    pub message: String,
    /// Index of the document in a multi-document request, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.object, self.message)
        } else {
            write!(f, "{}: {}: {}", self.object, self.field, self.message)
        }
    }
}

/// A non-empty list of field errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<FieldError>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors for one object.
pub struct Errors {
    object: String,
    document: Option<usize>,
    /// The errors so far.
    pub list: Vec<FieldError>,
}

impl Errors {
    /// Starts collecting for `object` (`workspaces/alice`).
    pub fn new(object: impl Into<String>, document: Option<usize>) -> Self {
        Errors {
            object: object.into(),
            document,
            list: Vec::new(),
        }
    }

    /// Records an error at `field`.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(FieldError {
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
            document: self.document,
        });
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `Ok(())` when empty, else the errors.
    pub fn into_result(self) -> Result<(), Invalid> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(Invalid(self.list))
        }
    }
}

/// Checks an RFC 1123 DNS label: 1–63 lower-case alphanumerics or '-',
/// starting and ending with an alphanumeric.
pub fn dns_label(s: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("must be at most 63 characters (got {})", s.len()));
    }
    if !s.chars().all(|c| ok_char(c) || c == '-')
        || !s.starts_with(ok_char)
        || !s.ends_with(ok_char)
    {
        return Err(format!(
            "{s:?} is not a valid name: use lower-case letters, digits and '-', starting and ending with a letter or digit (RFC 1123 label)"
        ));
    }
    Ok(())
}

/// Parses a duration such as `90m`, `2h` or `1h30m`; it must be positive.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 90m, 2h, 1h30m"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: duration must be greater than zero"));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "{s:?}: durations are whole seconds (at least 1s), e.g. 90s, 2h"
        ));
    }
    if d > MAX_DURATION {
        return Err(format!(
            "{s:?} is longer than the maximum of 10 years (87600h)"
        ));
    }
    Ok(d)
}

/// The longest duration any field accepts: 10 years. Every time computed
/// from a user's duration then stays far inside chrono's range.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The shortest inactivity threshold or lifetime that means anything: 1 minute.
pub const MIN_LIFECYCLE_DURATION: Duration = Duration::from_secs(60);

/// A lifecycle duration (afterInactivity, maxAfterInactivity, maxLifetime,
/// `berth extend`): 1 minute to 10 years, whole seconds.
pub fn lifecycle_duration(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d < MIN_LIFECYCLE_DURATION {
        return Err(format!("{s:?} is too short; the minimum is 1m"));
    }
    Ok(d)
}

/// Parses a five-field cron expression (minute hour day-of-month month day-of-week).
pub fn cron(s: &str) -> Result<croner::Cron, String> {
    if s.split_whitespace().count() != 5 {
        return Err(format!(
            "{s:?} is not a cron expression: expected 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 8 * * 1-5\""
        ));
    }
    let c = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| format!("{s:?} is not a valid cron expression: {e}"))?;
    // `0 8 30 2 *` parses but never fires; February 29th fires every 4 years.
    let from = chrono::DateTime::<chrono::Utc>::from_timestamp(0, 0).unwrap_or_default();
    match c.find_next_occurrence(&from, false) {
        Ok(t) if t.signed_duration_since(from) < chrono::Duration::days(8 * 366) => Ok(c),
        _ => Err(format!(
            "{s:?} never fires (no such date, e.g. February 30th)"
        )),
    }
}

/// Environment variables Berth sets in every workspace container: a
/// template may not set them (they would be silently overridden).
pub fn reserved_env(name: &str) -> bool {
    name == "HOME" || name.starts_with("BERTH_")
}

/// Parses an IANA time zone name.
pub fn timezone(s: &str) -> Result<chrono_tz::Tz, String> {
    s.parse::<chrono_tz::Tz>().map_err(|_| {
        format!("{s:?} is not an IANA time zone (e.g. America/Los_Angeles, Europe/Berlin, UTC)")
    })
}

/// Checks a Fargate task size, naming the valid memory values for the CPU.
pub fn fargate_size(errs: &mut Errors, path: &str, cpu: u32, memory: u32) {
    if fargate::memory_values(cpu).is_none() {
        errs.add(
            format!("{path}.cpu"),
            format!(
                "{cpu} is not a Fargate CPU value; valid values: {}",
                fargate::CPU_VALUES.map(|c| c.to_string()).join(", ")
            ),
        );
    } else if !fargate::is_valid(cpu, memory) {
        errs.add(
            format!("{path}.memory"),
            format!(
                "{memory} MiB is not valid with cpu {cpu}; valid memory values for cpu {cpu}: {}",
                fargate::describe_memory_values(cpu)
            ),
        );
    }
}

/// Turns a serde_path_to_error path into our dotted form (`spec.parameters[0].name`).
fn path_string(prefix: &str, p: &serde_path_to_error::Path) -> String {
    let mut out = prefix.to_string();
    for seg in p.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// Cleans serde's message: the path is reported separately.
fn serde_message(e: &serde_json::Error) -> String {
    let m = e.to_string();
    // serde_json appends " at line X column Y" for text input; values have none.
    match m.find(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m,
    }
}

/// One step into a JSON value, as serde_path_to_error reports it.
enum Step {
    Index(usize),
    Key(String),
}

fn steps(p: &serde_path_to_error::Path) -> Option<Vec<Step>> {
    p.iter()
        .map(|seg| match seg {
            serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
            _ => None,
        })
        .collect()
}

fn at_mut<'a>(v: &'a mut Value, steps: &[Step]) -> Option<&'a mut Value> {
    steps.iter().try_fold(v, |v, s| match s {
        Step::Index(i) => v.as_array_mut()?.get_mut(*i),
        Step::Key(k) => v.as_object_mut()?.get_mut(k),
    })
}

/// Stand-ins for a field serde could not read, tried in order: a value of
/// some type that lets decoding go on to the fields after it.
const STAND_INS: [fn() -> Value; 5] = [
    || Value::from(0),
    || Value::from(""),
    || Value::Bool(false),
    || Value::Array(Vec::new()),
    || Value::Object(serde_json::Map::new()),
];

/// At most this many fields of one document are stood in for, so that a
/// hostile document cannot make decoding loop for long.
const MAX_STAND_INS: usize = 64;

/// Decodes `v` as `T`, reporting every field serde cannot read, not only the
/// first: each unreadable field is reported, then removed (unknown fields) or
/// stood in for (missing or mistyped ones) and decoding goes on. Returns the
/// value and the paths that were stood in for; checks of the decoded value
/// must not report on those paths (their values are not the user's).
fn typed<T: serde::de::DeserializeOwned>(
    errs: &mut Errors,
    prefix: &str,
    v: &Value,
) -> Option<(T, Vec<String>)> {
    let mut value = v.clone();
    let mut stood_in = Vec::new();
    for _ in 0..MAX_STAND_INS {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => return Some((t, stood_in)),
            Err(e) => e,
        };
        let path = path_string(prefix, e.path());
        let msg = serde_message(e.inner());
        let mut container = steps(e.path())?;
        // The field to repair, inside `container`, and how.
        let (field_path, repair) = if let Some(rest) = msg.strip_prefix("unknown field `") {
            // An unknown field is reported at the field itself.
            let name = rest.split('`').next().unwrap_or_default().to_string();
            if matches!(container.last(), Some(Step::Key(k)) if *k == name) {
                container.pop();
            }
            let at = if path.is_empty() {
                name.clone()
            } else if path == name || path.ends_with(&format!(".{name}")) {
                path.clone()
            } else {
                format!("{path}.{name}")
            };
            (at, Some(name))
        } else if let Some(rest) = msg.strip_prefix("missing field `") {
            let name = rest.split('`').next().unwrap_or_default().to_string();
            let at = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            container.push(Step::Key(name));
            (at, None)
        } else {
            (path.clone(), None)
        };
        // A missing field is reported at its parent (the field is not there).
        let report_at = if msg.starts_with("missing field `") {
            path.clone()
        } else {
            field_path.clone()
        };
        // Errors inside a value that was stood in for are the stand-in's, not
        // the user's: repaired, not reported.
        if !under_any(&stood_in, &field_path) {
            errs.add(report_at, msg.clone());
        }
        match repair {
            Some(unknown) => {
                at_mut(&mut value, &container)?
                    .as_object_mut()?
                    .remove(&unknown)?;
            }
            None => {
                // Missing or mistyped: the first stand-in that moves the
                // error elsewhere.
                let (parent, last) = container.split_at(container.len().checked_sub(1)?);
                let Step::Key(key) = &last[0] else {
                    let Step::Index(i) = last[0] else { return None };
                    let arr = at_mut(&mut value, parent)?.as_array_mut()?;
                    arr.get(i)?;
                    // A mistyped list item: drop it.
                    arr.remove(i);
                    stood_in.push(field_path);
                    continue;
                };
                let mut moved = false;
                // An optional field that is there but unreadable is left out;
                // otherwise the first stand-in that serde reads.
                let present = at_mut(&mut value, parent)?.as_object()?.contains_key(key);
                let removal = present.then_some(None);
                for make in removal.into_iter().chain(STAND_INS.map(Some)) {
                    let mut trial = value.clone();
                    let obj = at_mut(&mut trial, parent)?.as_object_mut()?;
                    match make {
                        Some(make) => obj.insert(key.clone(), make()),
                        None => obj.remove(key),
                    };
                    let still = match serde_path_to_error::deserialize::<_, T>(trial.clone()) {
                        Ok(_) => false,
                        Err(e2) => {
                            let p2 = path_string(prefix, e2.path());
                            let m2 = serde_message(e2.inner());
                            let f2 = match m2.strip_prefix("missing field `") {
                                Some(rest) => {
                                    let name = rest.split('`').next().unwrap_or_default();
                                    if p2.is_empty() {
                                        name.to_string()
                                    } else {
                                        format!("{p2}.{name}")
                                    }
                                }
                                None => p2.clone(),
                            };
                            f2 == field_path || (p2 == path && m2 == msg)
                        }
                    };
                    if !still {
                        value = trial;
                        moved = true;
                        break;
                    }
                }
                if !moved {
                    return None;
                }
                stood_in.push(field_path);
            }
        }
    }
    None
}

/// Drops the errors at or under a stood-in path (see [`typed`]) from
/// `errs.list[from..]`.
fn drop_stood_in(errs: &mut Errors, from: usize, stood_in: &[String]) {
    let mut i = 0;
    errs.list.retain(|e| {
        i += 1;
        i <= from || !under_any(stood_in, &e.field)
    });
}

/// Whether the field path `f` is one of `paths` or inside one of them.
fn under_any(paths: &[String], f: &str) -> bool {
    paths.iter().any(|p| {
        f == p
            || f.strip_prefix(p.as_str())
                .is_some_and(|r| r.starts_with(['.', '[']))
    })
}

/// Decodes and validates one document on its own.
///
/// On success the returned object is normalised: defaults are filled in and
/// server-set metadata is cleared (except `resourceVersion`, which makes the
/// write conditional), so comparing it with the stored spec shows only real
/// changes.
pub fn decode(doc: &Value, document: Option<usize>) -> Result<(Kind, DynObject), Invalid> {
    let label = document
        .map(|i| format!("document {}", i + 1))
        .unwrap_or_else(|| "document".into());
    let obj = match doc {
        Value::Object(m) => m,
        _ => {
            let mut e = Errors::new(label, document);
            e.add(
                "",
                "a document must be a mapping with apiVersion, kind, metadata and spec",
            );
            return Err(Invalid(e.list));
        }
    };
    let kind_s = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = Kind::from_kind_field(kind_s);
    let reference = match (kind, name.is_empty()) {
        (Some(k), false) => format!("{}/{}", k.plural(), name),
        (None, false) if !kind_s.is_empty() => format!("{kind_s}/{name}"),
        _ => label,
    };
    let mut errs = Errors::new(reference, document);
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => errs.add(
            "apiVersion",
            format!("{other:?} is not supported; use {API_VERSION}"),
        ),
        None => errs.add("apiVersion", format!("required; use {API_VERSION}")),
    }
    let Some(kind) = kind else {
        errs.add(
            "kind",
            if kind_s.is_empty() {
                "required: one of LifecyclePolicy, WorkspaceTemplate, Workspace, GitSource".to_string()
            } else {
                format!("{kind_s:?} is not a Berth kind: one of LifecyclePolicy, WorkspaceTemplate, Workspace, GitSource")
            },
        );
        return Err(Invalid(errs.list));
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) {
            errs.add(key.clone(), format!("unknown field `{key}`"));
        }
    }
    let (meta, meta_stood_in): (Option<ObjectMeta>, Vec<String>) = match obj.get("metadata") {
        Some(m) => match typed(&mut errs, "metadata", m) {
            Some((m, stood_in)) => (Some(m), stood_in),
            None => (None, Vec::new()),
        },
        None => {
            errs.add("metadata", "required");
            (None, Vec::new())
        }
    };
    let meta_from = errs.list.len();
    if let Some(m) = &meta {
        if let Err(e) = dns_label(&m.name) {
            errs.add("metadata.name", e);
        }
        if let Err(e) = dns_label(&m.namespace) {
            errs.add("metadata.namespace", e);
        }
        for k in m.labels.keys() {
            if let Err(e) = label_key(k) {
                errs.add(format!("metadata.labels.{k}"), e);
            }
        }
        for (k, v) in &m.labels {
            if v.len() > 63
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                errs.add(
                    format!("metadata.labels.{k}"),
                    format!("{v:?} is not a valid label value (at most 63 of A-Z a-z 0-9 - _ .)"),
                );
            }
        }
    }
    drop_stood_in(&mut errs, meta_from, &meta_stood_in);
    let spec_v = obj.get("spec").cloned().unwrap_or(Value::Null);
    if spec_v.is_null() {
        errs.add("spec", "required");
    }
    let spec = if spec_v.is_null() {
        None
    } else {
        // Checks of the decoded spec skip the fields that were stood in for.
        fn checked<T: serde::de::DeserializeOwned + serde::Serialize>(
            errs: &mut Errors,
            v: &Value,
            check: impl FnOnce(&mut Errors, &T),
        ) -> Option<Result<Value, serde_json::Error>> {
            let (s, stood_in) = typed::<T>(errs, "spec", v)?;
            let from = errs.list.len();
            check(errs, &s);
            drop_stood_in(errs, from, &stood_in);
            Some(serde_json::to_value(s))
        }
        match kind {
            Kind::Workspace => checked::<WorkspaceSpec>(&mut errs, &spec_v, workspace_spec),
            Kind::WorkspaceTemplate => {
                checked::<WorkspaceTemplateSpec>(&mut errs, &spec_v, template_spec)
            }
            Kind::LifecyclePolicy => {
                checked::<LifecyclePolicySpec>(&mut errs, &spec_v, policy_spec)
            }
            Kind::GitSource => checked::<GitSourceSpec>(&mut errs, &spec_v, |errs, s| {
                gitsource::check_spec(errs, s);
                if let Some(m) = &meta {
                    // Objects it applies carry `namespace.name` as a label value.
                    if m.namespace.len() + 1 + m.name.len() > 63 {
                        errs.add(
                            "metadata.name",
                            format!(
                                "{:?} is too long: namespace and name together ({}.{}) must fit a label value of at most 63 characters",
                                m.name, m.namespace, m.name
                            ),
                        );
                    }
                }
            }),
        }
    };
    if !errs.is_empty() {
        return Err(Invalid(errs.list));
    }
    let (Some(meta), Some(Ok(spec))) = (meta, spec) else {
        errs.add("spec", "could not be normalised");
        return Err(Invalid(errs.list));
    };
    let metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        labels: meta.labels,
        annotations: meta.annotations,
        resource_version: meta.resource_version,
        ..Default::default()
    };
    Ok((
        kind,
        DynObject {
            api_version: API_VERSION.into(),
            kind: kind.as_str().into(),
            metadata,
            spec,
            status: Value::Null,
        },
    ))
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name
/// of at most 63 of `A-Z a-z 0-9 - _ .` starting and ending alphanumeric.
pub fn label_key(k: &str) -> Result<(), String> {
    let name = k.rsplit('/').next().unwrap_or(k);
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && k.len() <= 317;
    if ok {
        Ok(())
    } else {
        Err(format!("{k:?} is not a valid label key"))
    }
}

fn workspace_spec(errs: &mut Errors, s: &WorkspaceSpec) {
    if !s.owner.is_empty() {
        if let Err(e) = dns_label(&s.owner) {
            errs.add("spec.owner", e);
        }
    }
    if let Err(e) = dns_label(&s.template.name) {
        errs.add("spec.template.name", e);
    }
    if let Some(v) = s.template.version {
        if v < 1 {
            errs.add(
                "spec.template.version",
                format!("{v} is not a version: versions start at 1"),
            );
        }
    }
    if let Some(r) = s.resources {
        fargate_size(errs, "spec.resources", r.cpu, r.memory);
    }
    if let Some(sched) = &s.schedule {
        if let Some(a) = &sched.autostart {
            if let Err(e) = cron(&a.cron) {
                errs.add("spec.schedule.autostart.cron", e);
            }
            if let Err(e) = timezone(&a.timezone) {
                errs.add("spec.schedule.autostart.timezone", e);
            }
        }
        if let Some(a) = &sched.autostop {
            if let Some(d) = &a.after_inactivity {
                if let Err(e) = lifecycle_duration(d) {
                    errs.add("spec.schedule.autostop.afterInactivity", e);
                }
                if a.disabled {
                    errs.add(
                        "spec.schedule.autostop",
                        "set either afterInactivity or disabled: true, not both",
                    );
                }
            }
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn template_spec(errs: &mut Errors, s: &WorkspaceTemplateSpec) {
    let inf = &s.infrastructure;
    for (field, v) in [
        ("region", &inf.region),
        ("cluster", &inf.cluster),
        ("fileSystemId", &inf.file_system_id),
        ("executionRoleArn", &inf.execution_role_arn),
    ] {
        if v.trim().is_empty() {
            errs.add(format!("spec.infrastructure.{field}"), "required");
        }
    }
    if inf.subnets.is_empty() {
        errs.add(
            "spec.infrastructure.subnets",
            "at least one subnet is required",
        );
    }
    if !inf.efs_root_directory.starts_with('/') {
        errs.add(
            "spec.infrastructure.efsRootDirectory",
            "must be an absolute path",
        );
    } else if inf
        .efs_root_directory
        .split('/')
        .any(|seg| seg == "." || seg == "..")
        || inf.efs_root_directory.chars().any(|c| c.is_control())
        || inf.efs_root_directory.len() > 90
    {
        errs.add(
            "spec.infrastructure.efsRootDirectory",
            format!(
                "{:?} must be a plain absolute path (no '.' or '..' segments, at most 90 characters: EFS access point paths are at most 100 with the owner's name)",
                inf.efs_root_directory
            ),
        );
    }
    if let Some(g) = &inf.log_group {
        let ok = !g.is_empty()
            && g.len() <= 512
            && g.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c));
        if !ok {
            errs.add(
                "spec.infrastructure.logGroup",
                format!("{g:?} is not a CloudWatch log group name (1 to 512 of letters, digits and . _ - / #)"),
            );
        }
    }
    if inf.efs_iam_authorization && inf.task_role_arn.is_none() {
        errs.add(
            "spec.infrastructure.efsIamAuthorization",
            "needs spec.infrastructure.taskRoleArn: with IAM authorization the task role mounts the file system",
        );
    }
    if let Some(rc) = &s.container.repository_credentials {
        let arn = &rc.credentials_parameter;
        let parts: Vec<&str> = arn.splitn(7, ':').collect();
        let ok = parts.len() == 7
            && parts[0] == "arn"
            && parts[2] == "secretsmanager"
            && parts[5] == "secret"
            && !parts[6].is_empty()
            && !arn.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            errs.add(
                "spec.container.repositoryCredentials.credentialsParameter",
                format!("{arn:?} is not the ARN of a Secrets Manager secret (arn:aws:secretsmanager:<region>:<account>:secret:<name>)"),
            );
        }
    }
    let image = &s.container.image;
    if image.trim().is_empty() {
        errs.add("spec.container.image", "required");
    } else if image.len() > 255 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errs.add(
            "spec.container.image",
            format!("{image:?} is not an image reference (no spaces or control characters, at most 255)"),
        );
    }
    if !s.container.home_path.starts_with('/') {
        errs.add(
            "spec.container.homePath",
            format!("{:?} must be an absolute path", s.container.home_path),
        );
    }
    if !(2..=120).contains(&s.container.stop_timeout) {
        errs.add(
            "spec.container.stopTimeout",
            format!(
                "{} is out of range: Fargate allows 2 to 120 seconds",
                s.container.stop_timeout
            ),
        );
    }
    for k in s.container.env.keys() {
        if !is_identifier(k) || k.contains('-') {
            errs.add(
                format!("spec.container.env.{k}"),
                "not a valid environment variable name",
            );
        } else if reserved_env(k) {
            errs.add(
                format!("spec.container.env.{k}"),
                "is set by Berth (HOME and BERTH_* are reserved)",
            );
        }
    }
    for (k, arn) in &s.container.secrets {
        if !is_identifier(k) || k.contains('-') {
            errs.add(
                format!("spec.container.secrets.{k}"),
                "not a valid environment variable name",
            );
        } else if reserved_env(k) {
            errs.add(
                format!("spec.container.secrets.{k}"),
                "is set by Berth (HOME and BERTH_* are reserved)",
            );
        }
        if !arn.starts_with("arn:") {
            errs.add(
                format!("spec.container.secrets.{k}"),
                format!("{arn:?} is not an ARN of a Secrets Manager secret or SSM parameter"),
            );
        }
        if s.container.env.contains_key(k) {
            errs.add(
                format!("spec.container.secrets.{k}"),
                "is also set in env; set it in one place",
            );
        }
    }
    let r = &s.resources;
    fargate_size(
        errs,
        "spec.resources.default",
        r.default.cpu,
        r.default.memory,
    );
    for (i, c) in r.cpu_options.iter().enumerate() {
        if fargate::memory_values(*c).is_none() {
            errs.add(
                format!("spec.resources.cpuOptions[{i}]"),
                format!("{c} is not a Fargate CPU value"),
            );
        }
    }
    if !r.cpu_options.is_empty() && !r.cpu_options.contains(&r.default.cpu) {
        errs.add(
            "spec.resources.default.cpu",
            format!("{} is not one of cpuOptions", r.default.cpu),
        );
    }
    if !r.memory_options.is_empty() && !r.memory_options.contains(&r.default.memory) {
        errs.add(
            "spec.resources.default.memory",
            format!("{} is not one of memoryOptions", r.default.memory),
        );
    }
    let mut names = BTreeSet::new();
    let mut env_names = std::collections::BTreeMap::new();
    for (i, p) in s.parameters.iter().enumerate() {
        let path = format!("spec.parameters[{i}]");
        // Parameters reach the container as BERTH_PARAM_<NAME> ('-' as '_').
        let env = p.name.to_ascii_uppercase().replace('-', "_");
        if let Some(other) = env_names.insert(env.clone(), p.name.clone()) {
            if other != p.name {
                errs.add(
                    format!("{path}.name"),
                    format!("{:?} and {other:?} would both be the environment variable BERTH_PARAM_{env}", p.name),
                );
            }
        }
        if !is_identifier(&p.name) {
            errs.add(format!("{path}.name"), format!("{:?} is not a valid parameter name (letters, digits, '_' and '-', starting with a letter)", p.name));
        }
        if !names.insert(p.name.as_str()) {
            errs.add(
                format!("{path}.name"),
                format!("duplicate parameter {:?}", p.name),
            );
        }
        parameter_definition(errs, &path, p);
    }
    apps(errs, s);
    let mut script_names = BTreeSet::new();
    for (i, sc) in s.scripts.iter().enumerate() {
        let path = format!("spec.scripts[{i}]");
        if !is_identifier(&sc.name) {
            errs.add(
                format!("{path}.name"),
                format!("{:?} is not a valid script name", sc.name),
            );
        }
        if !script_names.insert(sc.name.as_str()) {
            errs.add(
                format!("{path}.name"),
                format!("duplicate script {:?}", sc.name),
            );
        }
        if sc.script.trim().is_empty() {
            errs.add(format!("{path}.script"), "must not be empty");
        }
        if let Some(w) = &sc.when {
            match s.parameters.iter().find(|p| &p.name == w) {
                None => errs.add(format!("{path}.when"), format!("names no parameter {w:?}")),
                Some(p) if p.type_ != ParameterType::Bool => errs.add(
                    format!("{path}.when"),
                    format!(
                        "parameter {w:?} is {}, but `when` needs a bool parameter",
                        p.type_.as_str()
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}

/// Apps: slugs are unique DNS labels, ports are not 0, `when` names a bool parameter.
fn apps(errs: &mut Errors, s: &WorkspaceTemplateSpec) {
    let mut slugs = BTreeSet::new();
    for (i, a) in s.apps.iter().enumerate() {
        let path = format!("spec.apps[{i}]");
        let label = !a.slug.is_empty()
            && a.slug.len() <= 63
            && a.slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !a.slug.starts_with('-')
            && !a.slug.ends_with('-');
        if !label {
            errs.add(
                format!("{path}.slug"),
                format!(
                    "{:?} is not a DNS label (lowercase letters, digits and '-', at most 63)",
                    a.slug
                ),
            );
        }
        if !slugs.insert(a.slug.as_str()) {
            errs.add(
                format!("{path}.slug"),
                format!("duplicate app {:?}", a.slug),
            );
        }
        if a.port == 0 {
            errs.add(format!("{path}.port"), "must be from 1 to 65535");
        }
        if let Some(w) = &a.when {
            match s.parameters.iter().find(|p| &p.name == w) {
                None => errs.add(format!("{path}.when"), format!("names no parameter {w:?}")),
                Some(p) if p.type_ != ParameterType::Bool => errs.add(
                    format!("{path}.when"),
                    format!(
                        "parameter {w:?} is {}, but `when` needs a bool parameter",
                        p.type_.as_str()
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}

fn parameter_definition(errs: &mut Errors, path: &str, p: &Parameter) {
    let mut regex = None;
    if let Some(v) = &p.validation {
        if let Some(r) = &v.regex {
            if p.type_ != ParameterType::String {
                errs.add(
                    format!("{path}.validation.regex"),
                    "only string parameters take a regex",
                );
            }
            match regex::Regex::new(&format!("^(?:{r})$")) {
                Ok(re) => regex = Some(re),
                Err(e) => errs.add(
                    format!("{path}.validation.regex"),
                    format!("invalid regular expression: {e}"),
                ),
            }
        }
        if (v.min.is_some() || v.max.is_some()) && p.type_ != ParameterType::Number {
            errs.add(
                format!("{path}.validation"),
                "only number parameters take min/max",
            );
        }
        if let (Some(lo), Some(hi)) = (v.min, v.max) {
            if lo > hi {
                errs.add(
                    format!("{path}.validation.min"),
                    format!("min {lo} is greater than max {hi}"),
                );
            }
        }
    }
    for (j, o) in p.options.iter().enumerate() {
        if let Err(e) = type_check(p.type_, o) {
            errs.add(format!("{path}.options[{j}]"), e);
        }
    }
    if let Some(d) = &p.default {
        if let Err(e) = parameter_value(p, regex.as_ref(), d) {
            errs.add(format!("{path}.default"), e);
        }
    }
}

fn type_check(t: ParameterType, v: &Value) -> Result<(), String> {
    let ok = match t {
        ParameterType::Bool => v.is_boolean(),
        ParameterType::String => v.is_string(),
        ParameterType::Number => v.is_number(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{v} is not a {}", t.as_str()))
    }
}

/// Whether two parameter values are the same; numbers compare by value, so
/// `1` and `1.0` (which YAML reads as an integer and a float) are equal.
fn same_value(a: &Value, b: &Value) -> bool {
    a == b
        || match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                x.as_f64().is_some_and(|x| Some(x) == y.as_f64())
            }
            _ => false,
        }
}

/// Checks one value against a parameter definition (type, options, regex, min, max).
pub fn parameter_value(
    p: &Parameter,
    regex: Option<&regex::Regex>,
    v: &Value,
) -> Result<(), String> {
    type_check(p.type_, v)?;
    if !p.options.is_empty() && !p.options.iter().any(|o| same_value(o, v)) {
        let opts: Vec<String> = p.options.iter().map(Value::to_string).collect();
        return Err(format!(
            "{v} is not one of the options: {}",
            opts.join(", ")
        ));
    }
    if let Some(val) = &p.validation {
        if let (Some(s), Some(re)) = (v.as_str(), regex) {
            if !re.is_match(s) {
                return Err(format!(
                    "{v} does not match /{}/",
                    val.regex.as_deref().unwrap_or_default()
                ));
            }
        }
        if let Some(n) = v.as_f64() {
            if let Some(lo) = val.min {
                if n < lo {
                    return Err(format!("{v} is less than the minimum {lo}"));
                }
            }
            if let Some(hi) = val.max {
                if n > hi {
                    return Err(format!("{v} is greater than the maximum {hi}"));
                }
            }
        }
    }
    Ok(())
}

fn policy_spec(errs: &mut Errors, s: &LifecyclePolicySpec) {
    for (field, v) in [
        (
            "defaultAfterInactivity",
            &s.autostop.default_after_inactivity,
        ),
        ("maxAfterInactivity", &s.autostop.max_after_inactivity),
        ("maxLifetime", &s.autostop.max_lifetime),
    ] {
        if let Some(d) = v {
            if let Err(e) = lifecycle_duration(d) {
                errs.add(format!("spec.autostop.{field}"), e);
            }
        }
    }
    if let (Some(d), Some(m)) = (
        &s.autostop.default_after_inactivity,
        &s.autostop.max_after_inactivity,
    ) {
        if let (Ok(d), Ok(m)) = (duration(d), duration(m)) {
            if d > m {
                errs.add(
                    "spec.autostop.defaultAfterInactivity",
                    "is longer than maxAfterInactivity",
                );
            }
        }
    }
    for (field, v) in [
        ("dormancyThreshold", &s.dormancy_threshold),
        ("dormantDeletion", &s.dormant_deletion),
        ("dormancyNotice", &s.dormancy_notice),
    ] {
        if let Some(d) = v {
            if let Err(e) = lifecycle_duration(d) {
                errs.add(format!("spec.{field}"), e);
            }
        }
    }
    if s.dormancy_threshold.is_none() {
        for (field, v) in [
            ("dormantDeletion", &s.dormant_deletion),
            ("dormancyNotice", &s.dormancy_notice),
        ] {
            if v.is_some() {
                errs.add(
                    format!("spec.{field}"),
                    "needs spec.dormancyThreshold (no workspace becomes Dormant without it)",
                );
            }
        }
    }
    for (i, d) in s.autostart.days.iter().enumerate() {
        if d.parse::<chrono::Weekday>().is_err() {
            errs.add(
                format!("spec.autostart.days[{i}]"),
                format!("{d:?} is not a day of the week (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"),
            );
        }
    }
}

/// Checks a workspace against the template version it uses.
///
/// `previous` is the workspace's stored spec when it already exists:
/// immutable parameters may not change, and a parameter that was set at
/// creation stays as it was.
pub fn workspace_against_template(
    errs: &mut Errors,
    ws: &WorkspaceSpec,
    template: &WorkspaceTemplateSpec,
    previous: Option<&WorkspaceSpec>,
) {
    let defs: BTreeMap<&str, &Parameter> = template
        .parameters
        .iter()
        .map(|p| (p.name.as_str(), p))
        .collect();
    for (k, v) in &ws.parameters {
        let Some(p) = defs.get(k.as_str()) else {
            let known: Vec<&str> = defs.keys().copied().collect();
            errs.add(
                format!("spec.parameters.{k}"),
                format!(
                    "template {:?} has no parameter {k:?}; its parameters: {}",
                    ws.template.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            continue;
        };
        let re = p
            .validation
            .as_ref()
            .and_then(|v| v.regex.as_ref())
            .and_then(|r| regex::Regex::new(&format!("^(?:{r})$")).ok());
        if let Err(e) = parameter_value(p, re.as_ref(), v) {
            errs.add(format!("spec.parameters.{k}"), e);
        }
    }
    for p in &template.parameters {
        if p.default.is_none() && !ws.parameters.contains_key(&p.name) {
            errs.add(
                format!("spec.parameters.{}", p.name),
                "required: the template gives this parameter no default",
            );
        }
        if let Some(prev) = previous {
            if !p.mutable {
                let resolve = |s: &WorkspaceSpec| {
                    s.parameters
                        .get(&p.name)
                        .cloned()
                        .or_else(|| p.default.clone())
                };
                let (old, new) = (resolve(prev), resolve(ws));
                let unchanged = match (&old, &new) {
                    (Some(a), Some(b)) => same_value(a, b),
                    (a, b) => a == b,
                };
                if !unchanged {
                    errs.add(
                        format!("spec.parameters.{}", p.name),
                        format!(
                            "is immutable: it was {} at creation and cannot change (got {})",
                            old.map(|v| v.to_string()).unwrap_or_else(|| "unset".into()),
                            new.map(|v| v.to_string()).unwrap_or_else(|| "unset".into())
                        ),
                    );
                }
            }
        }
    }
    let r = ws.resources.unwrap_or(template.resources.default);
    if !template.resources.cpu_options.is_empty()
        && !template.resources.cpu_options.contains(&r.cpu)
    {
        errs.add(
            "spec.resources.cpu",
            format!(
                "{} is not offered by template {:?}; choose one of {}",
                r.cpu,
                ws.template.name,
                join(&template.resources.cpu_options)
            ),
        );
    }
    if !template.resources.memory_options.is_empty()
        && !template.resources.memory_options.contains(&r.memory)
    {
        errs.add(
            "spec.resources.memory",
            format!(
                "{} is not offered by template {:?}; choose one of {}",
                r.memory,
                ws.template.name,
                join(&template.resources.memory_options)
            ),
        );
    }
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}
