//! `berth start|stop|restart WORKSPACE…`: records a power intent per
//! workspace (`POST …/workspaces/{name}/{action}`). The server answers 202:
//! the workspace controller acts on the intent; `berth wait` follows it.

use super::client::Client;
use super::CliError;
use crate::api::Kind;

/// What to do to a workspace's power state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    /// Run it.
    Start,
    /// Scale it to zero.
    Stop,
    /// Stop and start it (applies a newer template version).
    Restart,
}

impl PowerAction {
    /// `start`, `stop`, `restart` (the API path segment and the CLI verb).
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Stop => "stop",
            PowerAction::Restart => "restart",
        }
    }
}

/// A workspace name as typed: `alice`, `ws/alice`, `workspace/alice` or
/// `workspaces/alice`.
pub fn workspace_name(arg: &str, verb: &str) -> Result<String, String> {
    match arg.split_once('/') {
        None if !arg.is_empty() => Ok(arg.to_string()),
        Some((kind, name)) if !name.is_empty() && !name.contains('/') => {
            match Kind::from_user(kind) {
                Some(Kind::Workspace) => Ok(name.to_string()),
                Some(k) => Err(format!(
                    "{verb} works on workspaces only; {arg} is a {}",
                    k.singular()
                )),
                None => Err(format!(
                    "{arg}: expected a workspace name (`alice` or `ws/alice`)"
                )),
            }
        }
        _ => Err(format!(
            "{arg:?}: expected a workspace name (`alice` or `ws/alice`)"
        )),
    }
}

/// Requests `action` for each workspace; prints `workspace/NAME ACTION
/// requested` per success and reports every failure (after trying all).
pub async fn request(
    client: &Client,
    namespace: &str,
    action: PowerAction,
    names: &[String],
) -> Result<(), CliError> {
    request_waking(client, namespace, action, names, false).await
}

/// [`request`]; with `wake`, Dormant workspaces are woken first.
pub async fn request_waking(
    client: &Client,
    namespace: &str,
    action: PowerAction,
    names: &[String],
    wake: bool,
) -> Result<(), CliError> {
    let mut errors = Vec::new();
    for arg in names {
        let name = match workspace_name(arg, action.as_str()) {
            Ok(n) => n,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match client
            .power_waking(namespace, &name, action.as_str(), wake)
            .await
        {
            Ok(_) => println!("workspace/{name} {} requested", action.as_str()),
            Err(e) => errors.extend(e.lines(None)),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Many(errors))
    }
}

/// `berth wake WORKSPACE…`: wakes Dormant workspaces (they stay stopped).
pub async fn wake(client: &Client, namespace: &str, names: &[String]) -> Result<(), CliError> {
    let mut errors = Vec::new();
    for arg in names {
        let name = match workspace_name(arg, "wake") {
            Ok(n) => n,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match client.wake(namespace, &name).await {
            Ok(v) if v.get("woken").and_then(serde_json::Value::as_bool) == Some(true) => {
                println!("workspace/{name} woken (still stopped: berth start {name})")
            }
            Ok(_) => println!("workspace/{name} is not Dormant"),
            Err(e) => errors.extend(e.lines(None)),
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

    #[test]
    fn workspace_names_may_carry_the_workspace_kind_only() {
        assert_eq!(workspace_name("alice", "stop").unwrap(), "alice");
        assert_eq!(workspace_name("ws/alice", "stop").unwrap(), "alice");
        assert_eq!(workspace_name("workspaces/alice", "stop").unwrap(), "alice");
        assert_eq!(
            workspace_name("wst/dev", "stop").unwrap_err(),
            "stop works on workspaces only; wst/dev is a workspacetemplate"
        );
        assert!(workspace_name("gadget/x", "stop").is_err());
        assert!(workspace_name("ws/", "stop").is_err());
        assert!(workspace_name("", "stop").is_err());
    }
}
