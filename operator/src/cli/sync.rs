//! `berth sync GITSOURCE`: asks the GitSource controller to sync now (the
//! API sets the `berth.dev/sync-requested-at` annotation) and waits until
//! the controller reports having handled that request.
//!
//! Exit codes: 0 when the commit is applied (or already was), 1 when it was
//! rejected, the repository cannot be fetched, the source is suspended, or
//! the wait timed out.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::Client;
use super::render::{str_at, value_at};
use super::CliError;
use crate::api::gitsource::SyncError;
use crate::api::Kind;
use crate::gitops::SYNC_REQUEST_ANNOTATION;

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status
        .get("conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// `berth sync NAME`.
pub async fn sync(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<u8, CliError> {
    let current = client.get(Kind::GitSource, ns, name).await?;
    if value_at(&current.spec, "suspend").and_then(Value::as_bool) == Some(true) {
        return Err(CliError::Other(anyhow::anyhow!(
            "gitsource/{name} is suspended (spec.suspend: true); unset it to sync"
        )));
    }
    let requested = client.sync_gitsource(ns, name).await?;
    let token = requested
        .metadata
        .annotations
        .get(SYNC_REQUEST_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    if timeout.is_zero() {
        println!("gitsource/{name} sync requested");
        return Ok(0);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let o = client.get(Kind::GitSource, ns, name).await?;
        if str_at(&o.status, "lastHandledSyncRequest") == Some(token.as_str()) {
            let ready = condition(&o.status, "Ready");
            let status = ready.and_then(|c| c.get("status")).and_then(Value::as_str);
            let message = ready
                .and_then(|c| c.get("message"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if status == Some("True") {
                println!("gitsource/{name} synced: {message}");
                return Ok(0);
            }
            let mut lines = vec![format!("gitsource/{name}: {message}")];
            if let Some(errs) = value_at(&o.status, "errors").and_then(Value::as_array) {
                lines.extend(
                    errs.iter()
                        .filter_map(|e| serde_json::from_value::<SyncError>(e.clone()).ok())
                        .map(|e| e.to_string()),
                );
            }
            return Err(CliError::Many(lines));
        }
        if Instant::now() >= deadline {
            return Err(CliError::Other(anyhow::anyhow!(
                "gitsource/{name}: the sync was requested but not handled within {}; is the operator running?",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
