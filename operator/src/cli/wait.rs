//! `berth wait KIND/NAME --for=condition=TYPE[=STATUS] | --for=delete`,
//! like `kubectl wait`.
//!
//! Each object is read once and, unless it already satisfies the wait,
//! followed with a watch from its resourceVersion (reopened after a dropped
//! stream, re-read after `410 Gone`) until it does or the timeout passes.
//! Objects are waited for one after the other under one deadline.
//!
//! A condition counts only when it was computed for the object's current
//! generation (its `observedGeneration`, when set, is not older than
//! `metadata.generation`), so a wait right after a spec change does not
//! succeed on the previous generation's status.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::client::{ApiError, Client};
use super::CliError;
use crate::api::{DynObject, Kind};

/// What `--for` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// Condition `type_` has status `status` (compared case-insensitively).
    Condition {
        /// `Ready`, `Synced`, `Outdated`, ….
        type_: String,
        /// `True`, `False`, `Unknown`.
        status: String,
    },
    /// The object is gone.
    Delete,
}

/// Parses `condition=Ready`, `condition=Ready=False` or `delete`.
pub fn parse_for(s: &str) -> Result<WaitFor, String> {
    if s == "delete" {
        return Ok(WaitFor::Delete);
    }
    let expected = "expected condition=TYPE[=STATUS] or delete";
    let Some(rest) = s.strip_prefix("condition=") else {
        return Err(format!("unrecognized condition {s:?}; {expected}"));
    };
    let (type_, status) = match rest.split_once('=') {
        Some((t, st)) => (t, st),
        None => (rest, "True"),
    };
    if type_.is_empty() || status.is_empty() || status.contains('=') {
        return Err(format!("unrecognized condition {s:?}; {expected}"));
    }
    Ok(WaitFor::Condition {
        type_: type_.to_string(),
        status: status.to_string(),
    })
}

impl WaitFor {
    /// Whether `o` satisfies a condition wait (always false for `Delete`).
    pub fn met_by(&self, o: &DynObject) -> bool {
        let WaitFor::Condition { type_, status } = self else {
            return false;
        };
        let generation = o.metadata.generation.unwrap_or(0);
        o.status
            .get("conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| {
                c.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case(type_))
            })
            .is_some_and(|c| {
                let observed = c
                    .get("observedGeneration")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let current = observed == 0 || observed >= generation;
                current
                    && c.get("status")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.eq_ignore_ascii_case(status))
            })
    }
}

/// Splits `KIND/NAME …` or `KIND NAME …` into (kind, name) pairs.
pub fn parse_targets(args: &[String]) -> Result<Vec<(Kind, String)>, CliError> {
    let Some(first) = args.first() else {
        return Err(CliError::Other(anyhow::anyhow!(
            "name the objects to wait for: KIND/NAME (e.g. ws/alice)"
        )));
    };
    if first.contains('/') {
        args.iter()
            .map(|a| match a.split_once('/') {
                Some((k, n)) if !n.is_empty() && !n.contains('/') => {
                    Ok((super::parse_kind(k)?, n.to_string()))
                }
                _ => Err(CliError::Other(anyhow::anyhow!(
                    "{a:?}: expected KIND/NAME (e.g. ws/alice); don't mix KIND/NAME and KIND NAME"
                ))),
            })
            .collect()
    } else {
        let kind = super::parse_kind(first)?;
        if args.len() == 1 {
            return Err(CliError::Other(anyhow::anyhow!(
                "name the {} to wait for: {first} NAME, or {}/NAME",
                kind.plural(),
                kind.short()
            )));
        }
        args[1..]
            .iter()
            .map(|n| {
                if n.is_empty() || n.contains('/') {
                    Err(CliError::Other(anyhow::anyhow!(
                        "{n:?}: expected a name after the kind {first}"
                    )))
                } else {
                    Ok((kind, n.clone()))
                }
            })
            .collect()
    }
}

/// Runs `berth wait`: prints `KIND/NAME condition met` per object.
pub async fn wait(
    client: &Client,
    namespace: &str,
    targets: &[String],
    for_: &WaitFor,
    timeout: Duration,
) -> Result<(), CliError> {
    let targets = parse_targets(targets)?;
    let deadline = Instant::now() + timeout;
    for (kind, name) in targets {
        wait_one(client, kind, namespace, &name, for_, deadline).await?;
        println!("{}/{name} condition met", kind.singular());
    }
    Ok(())
}

enum Check {
    Met,
    /// Not yet; watch from this resourceVersion.
    From(String),
}

/// Reads the object once and decides.
async fn check(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    for_: &WaitFor,
) -> Result<Check, ApiError> {
    let o = match client.get(kind, namespace, name).await {
        Ok(o) => o,
        Err(e) if e.is_not_found() && *for_ == WaitFor::Delete => return Ok(Check::Met),
        // Waiting for a condition of an object that does not exist fails at
        // once, with the server's error naming it.
        Err(e) => return Err(e),
    };
    if for_.met_by(&o) {
        return Ok(Check::Met);
    }
    Ok(Check::From(
        o.metadata
            .resource_version
            .unwrap_or_else(|| "0".to_string()),
    ))
}

async fn wait_one(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    for_: &WaitFor,
    deadline: Instant,
) -> Result<(), CliError> {
    // The first read is not bounded by the deadline, so `--timeout=0`
    // checks once, as kubectl does.
    let rv = match check(client, kind, namespace, name, for_).await? {
        Check::Met => return Ok(()),
        Check::From(rv) => rv,
    };
    let follow = async {
        let mut rv = Some(rv);
        loop {
            let from = match rv.take() {
                Some(rv) => rv,
                None => match check(client, kind, namespace, name, for_).await {
                    Ok(Check::Met) => return Ok(()),
                    Ok(Check::From(rv)) => rv,
                    Err(e @ ApiError::Transport { .. }) => {
                        tracing::debug!("wait: read failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(e) => return Err(CliError::from(e)),
                },
            };
            match watch_until(client, kind, namespace, name, for_, &from).await {
                Ok(Watched::Met) => return Ok(()),
                Ok(Watched::Deleted) => {
                    return Err(CliError::Other(anyhow::anyhow!(
                        "{}/{name} was deleted while waiting for the condition",
                        kind.plural()
                    )))
                }
                // The stream ended or was too old: read again, then reopen.
                Ok(Watched::Ended) => {}
                Err(e @ ApiError::Transport { .. }) => {
                    tracing::debug!("wait: watch failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    match tokio::time::timeout_at(deadline, follow).await {
        Ok(result) => result,
        Err(_) => Err(CliError::Other(anyhow::anyhow!(
            "timed out waiting for the condition on {}/{name}",
            kind.plural()
        ))),
    }
}

/// How following a watch ended.
enum Watched {
    /// The wait is satisfied.
    Met,
    /// The object was deleted while waiting for a condition.
    Deleted,
    /// The stream ended or was too old (410): read again.
    Ended,
}

/// Follows a watch of the namespace's `kind` from `from`, looking at `name` only.
async fn watch_until(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    for_: &WaitFor,
    from: &str,
) -> Result<Watched, ApiError> {
    let mut stream = match client.watch(kind, Some(namespace), from, None).await {
        Ok(s) => s,
        Err(ApiError::Status(s)) if s.code == 410 => return Ok(Watched::Ended),
        Err(e) => return Err(e),
    };
    loop {
        let ev = match stream.next().await {
            Ok(Some(ev)) => ev,
            Ok(None) => return Ok(Watched::Ended),
            Err(ApiError::Status(s)) if s.code == 410 => return Ok(Watched::Ended),
            Err(e) => return Err(e),
        };
        if ev.object.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
            continue;
        }
        match (ev.type_.as_str(), for_) {
            ("DELETED", WaitFor::Delete) => return Ok(Watched::Met),
            ("DELETED", WaitFor::Condition { .. }) => return Ok(Watched::Deleted),
            ("ADDED" | "MODIFIED", _) => {
                if let Ok(o) = serde_json::from_value::<DynObject>(ev.object) {
                    if for_.met_by(&o) {
                        return Ok(Watched::Met);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::meta::new_object;
    use serde_json::json;

    fn ws(generation: i64, conditions: Value) -> DynObject {
        let mut o = new_object(Kind::Workspace, "default", "alice", json!({}));
        o.metadata.generation = Some(generation);
        o.status = json!({ "conditions": conditions });
        o
    }

    #[test]
    fn for_parses_conditions_with_a_default_status_and_delete() {
        assert_eq!(
            parse_for("condition=Ready").unwrap(),
            WaitFor::Condition {
                type_: "Ready".into(),
                status: "True".into()
            }
        );
        assert_eq!(
            parse_for("condition=Ready=False").unwrap(),
            WaitFor::Condition {
                type_: "Ready".into(),
                status: "False".into()
            }
        );
        assert_eq!(parse_for("delete").unwrap(), WaitFor::Delete);
        for bad in [
            "Ready",
            "condition=",
            "condition==True",
            "condition=A=B=C",
            "jsonpath={.x}",
        ] {
            assert!(parse_for(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_condition_counts_only_for_the_current_generation() {
        let ready = parse_for("condition=ready").unwrap();
        let c = |status: &str, gen: i64| json!([{"type": "Ready", "status": status, "observedGeneration": gen}]);
        assert!(ready.met_by(&ws(2, c("True", 2))));
        assert!(!ready.met_by(&ws(3, c("True", 2))), "stale generation");
        assert!(!ready.met_by(&ws(2, c("False", 2))));
        assert!(ready.met_by(&ws(2, json!([{"type": "Ready", "status": "True"}]))));
        assert!(!ready.met_by(&ws(1, json!([]))));
        let not_ready = parse_for("condition=Ready=False").unwrap();
        assert!(not_ready.met_by(&ws(2, c("False", 2))));
        assert!(!WaitFor::Delete.met_by(&ws(1, json!([]))));
    }

    #[test]
    fn targets_are_kind_slash_name_or_kind_then_names() {
        let t = parse_targets(&["ws/alice".into(), "workspace/bob".into()]).unwrap();
        assert_eq!(
            t,
            vec![
                (Kind::Workspace, "alice".to_string()),
                (Kind::Workspace, "bob".to_string())
            ]
        );
        let t = parse_targets(&["wst".into(), "dev".into()]).unwrap();
        assert_eq!(t, vec![(Kind::WorkspaceTemplate, "dev".to_string())]);
        assert!(parse_targets(&["ws".into()]).is_err());
        assert!(parse_targets(&["ws/alice".into(), "bob".into()]).is_err());
        assert!(parse_targets(&["gadget/x".into()]).is_err());
    }
}
