//! Workspace actions: `start`, `stop`, `restart` (a person's power
//! intents), `activity` (from the workspace's agent or its owner) and
//! `extend` (push autostop out within the policy's limits).
//!
//! Activity reports are cheap but never lost: a replica writes a
//! workspace's first report at once; one that arrives within [`COALESCE`]
//! of the last write is kept in memory (the newest per workspace) and all
//! of those are written together every [`FLUSH_EVERY`], in one statement.
//! Autostop allows for that delay ([`crate::lifecycle::REPORT_SLACK`]), so
//! a workspace reporting more often than its threshold is never stopped.
//! Agent tokens a replica has verified are cached. 10,000 busy agents thus
//! cost one write per workspace per minute plus one batch every 5 s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use crate::api::{Kind, WorkspaceSpec};
use crate::store::Identity;

/// A workspace's activity is written at once at most this often; reports
/// in between are batched.
pub const COALESCE: Duration = Duration::from_secs(60);
/// How often the batched reports are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// The newest report of a workspace not written yet.
#[derive(Clone, Debug)]
struct Pending {
    at: chrono::DateTime<chrono::Utc>,
    kind: String,
}
const AGENT_TOKEN_TTL: Duration = Duration::from_secs(300);

/// In-memory coalescing state of one API replica.
#[derive(Default, Debug)]
pub struct ActivityCache {
    written: Mutex<HashMap<uuid::Uuid, Instant>>,
    agents: Mutex<HashMap<String, (uuid::Uuid, Instant)>>,
    pending: Mutex<HashMap<uuid::Uuid, Pending>>,
}

impl ActivityCache {
    fn keep(&self, uid: uuid::Uuid, at: chrono::DateTime<chrono::Utc>, kind: &str) {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let e = g.entry(uid).or_insert_with(|| Pending {
            at,
            kind: kind.to_string(),
        });
        if at >= e.at {
            e.at = at;
            e.kind = kind.to_string();
        }
    }

    fn take_pending(&self) -> Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>, String)> {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        g.drain().map(|(u, p)| (u, p.at, p.kind)).collect()
    }

    /// The newest report of `uid` not yet written, if any.
    fn pending_at(&self, uid: uuid::Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
        let g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        g.get(&uid).map(|p| p.at)
    }

    fn forget_pending(&self, uid: uuid::Uuid) {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        g.remove(&uid);
    }
    fn recently_written(&self, uid: uuid::Uuid, within: Duration) -> bool {
        let g = self.written.lock().unwrap_or_else(|p| p.into_inner());
        g.get(&uid).is_some_and(|t| t.elapsed() < within)
    }

    fn mark_written(&self, uid: uuid::Uuid) {
        let mut g = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 100_000 {
            g.retain(|_, t| t.elapsed() < COALESCE);
        }
        g.insert(uid, Instant::now());
    }

    fn agent(&self, token_hash: &str) -> Option<uuid::Uuid> {
        let g = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        g.get(token_hash)
            .filter(|(_, t)| t.elapsed() < AGENT_TOKEN_TTL)
            .map(|(u, _)| *u)
    }

    fn remember_agent(&self, token_hash: String, uid: uuid::Uuid) {
        let mut g = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 100_000 {
            g.retain(|_, (_, t)| t.elapsed() < AGENT_TOKEN_TTL);
        }
        g.insert(token_hash, (uid, Instant::now()));
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("missing bearer token (Authorization: Bearer …)".into())
        })
}

fn query<T: serde::de::DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))
}

/// A person: a bearer token, or the dashboard's session (with its CSRF
/// token when `write`).
async fn person(st: &AppState, headers: &HeaderMap, write: bool) -> Result<Caller, ApiError> {
    let method = if write {
        axum::http::Method::POST
    } else {
        axum::http::Method::GET
    };
    Caller::from_headers(st, &method, headers).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityBody {
    #[serde(default)]
    kind: Option<String>,
}

/// Query of a power action: `?reason=connect` marks a start asked for by
/// connecting to a stopped workspace (`berth ssh`, port-forward, apps).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerQuery {
    reason: Option<String>,
    /// `start --wake`: wake a Dormant workspace, then start it.
    #[serde(default)]
    wake: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    duration: String,
}

/// `POST /namespaces/{ns}/workspaces/{name}/{action}`.
pub async fn workspace_action(
    State(st): State<AppState>,
    Path((ns, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    match action.as_str() {
        "start" | "stop" | "restart" => {
            let caller = person(&st, &headers, true).await?;
            let q = query::<PowerQuery>(&uri)?;
            let connect = match q.reason.as_deref() {
                None => false,
                Some("connect") if action == "start" => true,
                Some(other) => {
                    return Err(ApiError::BadRequest(format!(
                        "reason: {other:?} is not supported (only `connect`, on start)"
                    )))
                }
            };
            if q.wake && action == "stop" {
                return Err(ApiError::BadRequest(
                    "wake: only a start or a restart wakes a workspace".into(),
                ));
            }
            super::routes::power(st, caller, ns, name, &action, connect, q.wake).await
        }
        "wake" => {
            let caller = person(&st, &headers, true).await?;
            let obj = super::routes::visible(&st, &caller, Kind::Workspace, &ns, &name).await?;
            let woke = wake(&st, &caller, &obj).await?;
            Ok(Json(json!({ "workspace": name, "namespace": ns, "woken": woke })).into_response())
        }
        "activity" => activity(st, &headers, &ns, &name, &body).await,
        "open" => {
            let caller = person(&st, &headers, true).await?;
            super::apps::open(st, caller, &ns, &name, &body).await
        }
        "extend" => {
            let caller = person(&st, &headers, true).await?;
            extend(st, caller, &ns, &name, &body).await
        }
        other => Err(ApiError::NotFound(format!(
            "no action {other:?} (start, stop, restart, wake, activity, extend, open)"
        ))),
    }
}

/// Wakes a Dormant workspace (`berth wake`): a use of it, so it is no
/// longer unused (kind `wake`); an event says who. Returns whether it was
/// Dormant. A workspace that is not Dormant is left as it is.
pub async fn wake(
    st: &AppState,
    caller: &Caller,
    obj: &crate::api::DynObject,
) -> Result<bool, ApiError> {
    let Some(d) = crate::lifecycle::dormancy_of(&st.store, obj).await? else {
        return Ok(false);
    };
    let now = chrono::Utc::now();
    if !d.is_dormant(now) {
        return Ok(false);
    }
    let uid = obj.metadata.uid.unwrap_or_default();
    st.store
        .activity_report_many(&[(uid, now, "wake".to_string())])
        .await?;
    let involved = crate::store::InvolvedObject {
        kind: "Workspace".into(),
        namespace: obj.metadata.namespace.clone(),
        name: obj.metadata.name.clone(),
        uid,
    };
    st.store
        .event_record(
            &involved,
            crate::store::EventType::Normal,
            "Woken",
            &format!(
                "woken by {} (Dormant since {})",
                caller.0.user,
                d.dormant_at.format("%Y-%m-%d %H:%M UTC")
            ),
            "api",
        )
        .await?;
    // The controller shows it Stopped again.
    st.store
        .object_touch(Kind::Workspace, &obj.metadata.namespace, &obj.metadata.name)
        .await?;
    Ok(true)
}

async fn activity(
    st: AppState,
    headers: &HeaderMap,
    ns: &str,
    name: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let token = bearer(headers)?;
    // Who is asking comes first, so a missing and a forbidden workspace
    // answer alike (no existence oracle).
    let hash = crate::store::token_hash(token);
    let agent_of = match st.activity.agent(&hash) {
        Some(u) => Some(u),
        None => match st.store.agent_token_lookup(token).await? {
            Some((u, _)) => {
                st.activity.remember_agent(hash, u);
                Some(u)
            }
            None => None,
        },
    };
    let person = match agent_of {
        Some(_) => None,
        None => Some(
            st.store
                .token_lookup(token)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))?,
        ),
    };
    let not_found =
        || ApiError::NotFound(format!("workspaces/{name} not found in namespace {ns:?}"));
    let obj = st
        .store
        .object_get(Kind::Workspace, ns, name)
        .await?
        .ok_or_else(not_found)?;
    let uid = obj.metadata.uid.unwrap_or_default();
    let authorized = match (agent_of, &person) {
        (Some(u), _) => u == uid,
        (None, Some(Identity { admin: true, .. })) => true,
        (None, Some(id)) => {
            obj.spec.get("owner").and_then(|o| o.as_str()) == Some(id.user.as_str())
        }
        (None, None) => false,
    };
    if !authorized {
        return Err(ApiError::NotFound(format!(
            "workspaces/{name} not found in namespace {ns:?}"
        )));
    }
    // The body is looked at only once the caller may act on the workspace.
    let req: ActivityBody = if body.is_empty() {
        ActivityBody::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("activity body: {e}")))?
    };
    let kind = req.kind.unwrap_or_else(|| "manual".into());
    if !matches!(
        kind.as_str(),
        "ssh" | "vscode" | "app" | "terminal" | "port-forward" | "manual"
    ) {
        return Err(ApiError::Invalid(
            format!(
                "kind: {kind:?} is not one of ssh, vscode, app, terminal, port-forward, manual"
            ),
            Vec::new(),
        ));
    }
    let wrote = record(&st, uid, ns, name, &kind).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"recorded": true, "written": wrote, "batched": !wrote})),
    )
        .into_response())
}

/// Writes the batched reports every [`FLUSH_EVERY`] until the process ends;
/// a failed batch is kept for the next round.
pub async fn flush_loop(st: AppState) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tick.tick().await;
        flush(&st).await;
    }
}

/// Writes the batched reports now (also at shutdown).
pub async fn flush(st: &AppState) {
    let batch = st.activity.take_pending();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = st.store.activity_report_many(&batch).await {
        tracing::warn!(error = %e, reports = batch.len(), "cannot write batched activity; retrying");
        for (uid, at, kind) in batch {
            st.activity.keep(uid, at, &kind);
        }
    }
}

/// Records activity of kind `kind` for an authorized caller (a person or
/// the workspace's agent), coalesced. Returns whether it was written.
pub(super) async fn record(
    st: &AppState,
    uid: uuid::Uuid,
    ns: &str,
    name: &str,
    kind: &str,
) -> Result<bool, crate::store::StoreError> {
    record_within(st, uid, ns, name, kind, COALESCE).await
}

/// [`record`], coalescing over `within` (at most [`COALESCE`]): an open
/// session of a workspace with a short `afterInactivity` must be written
/// often enough that autostop never falls between two writes.
pub(super) async fn record_within(
    st: &AppState,
    uid: uuid::Uuid,
    ns: &str,
    name: &str,
    kind: &str,
    within: Duration,
) -> Result<bool, crate::store::StoreError> {
    let within = within.min(COALESCE);
    let now = chrono::Utc::now();
    if st.activity.recently_written(uid, within) {
        // Kept, and written with the next batch.
        st.activity.keep(uid, now, kind);
        return Ok(false);
    }
    st.activity.forget_pending(uid);
    let wrote = st.store.activity_report(uid, now, kind, within).await?;
    st.activity.mark_written(uid);
    if wrote {
        // The workspace's deadline moved: let the controller refresh its status.
        match st.store.object_touch(Kind::Workspace, ns, name).await {
            Ok(_) | Err(crate::store::StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(wrote)
}

/// `GET /namespaces/{ns}/workspaces/{name}/{action}`: the agent's
/// WebSocket (`agent`) and script logs (`logs`).
pub async fn workspace_get_action(
    State(st): State<AppState>,
    Path((ns, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    ws: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<Response, ApiError> {
    match action.as_str() {
        "agent" => super::agent::agent_socket(st, ns, name, headers, ws).await,
        "logs" => {
            let caller = person(&st, &headers, false).await?;
            let q = query::<super::agent::LogsQuery>(&uri)?;
            super::agent::logs(st, ns, name, q, caller).await
        }
        "connect" => {
            let q = query::<super::connect::ConnectQuery>(&uri)?;
            super::connect::connect(st, ns, name, headers, q, ws).await
        }
        "terminal" => super::dashboard::terminal::serve(st, ns, name, headers, uri, ws).await,
        other => Err(ApiError::NotFound(format!(
            "no {other:?} of workspaces (agent, logs, connect, terminal, status)"
        ))),
    }
}

async fn extend(
    st: AppState,
    caller: Caller,
    ns: &str,
    name: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let obj = st
        .store
        .object_get(Kind::Workspace, ns, name)
        .await?
        .filter(|o| caller.can_read(o))
        .ok_or_else(|| {
            ApiError::NotFound(format!("workspaces/{name} not found in namespace {ns:?}"))
        })?;
    let req: ExtendBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("extend body: {e}")))?;
    let d = crate::api::validate::lifecycle_duration(&req.duration)
        .map_err(|e| ApiError::Invalid(format!("duration: {e}"), Vec::new()))?;
    let spec: WorkspaceSpec =
        serde_json::from_value(obj.spec.clone()).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let policy = crate::lifecycle::policy_of(&st.store, ns).await?;
    let eff = crate::lifecycle::effective(&spec, policy.as_ref());
    let limit = eff
        .max_after_inactivity
        .as_deref()
        .and_then(|m| crate::api::validate::duration(m).ok())
        .unwrap_or(Duration::from_secs(24 * 3600));
    if d > limit {
        let shown = eff
            .max_after_inactivity
            .clone()
            .unwrap_or_else(|| "24h".into());
        return Err(ApiError::Invalid(
            format!("workspaces/{name}: duration: {} is longer than the lifecycle policy allows ({shown})", req.duration),
            Vec::new(),
        ));
    }
    let uid = obj.metadata.uid.unwrap_or_default();
    // Only a running workspace has an autostop to push out.
    let Some(run) = st
        .store
        .intent_latest(uid)
        .await?
        .filter(|i| i.action.runs())
    else {
        return Err(ApiError::Conflict(
            format!("workspaces/{name} is stopped; there is no autostop to extend (start it with: berth start {name})"),
            Vec::new(),
        ));
    };
    if eff.after_inactivity.is_none() {
        return Err(ApiError::Conflict(
            format!("workspaces/{name} has no autostop (spec.schedule.autostop.afterInactivity is not set and no lifecycle policy sets a default); there is nothing to extend"),
            Vec::new(),
        ));
    }
    let now = chrono::Utc::now();
    let until = chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        // As PostgreSQL keeps it, so the answer matches what is stored.
        .map(|t| chrono::SubsecRound::trunc_subsecs(t, 6))
        .ok_or_else(|| {
            ApiError::Invalid(
                format!("duration: {} is too long", req.duration),
                Vec::new(),
            )
        })?;
    st.store.activity_extend(uid, until, now).await?;
    // What the lifecycle now decides from: the later of the extension and
    // the inactivity threshold counted from the newest activity (including
    // reports this replica still holds in its batch).
    let mut activity = st.store.activity_get(uid).await?;
    if let (Some(a), Some(newer)) = (activity.as_mut(), st.activity.pending_at(uid)) {
        a.last_activity_at = a.last_activity_at.max(newer);
    }
    let autostop_at = crate::lifecycle::autostop_at(&eff, run.idle_from(), activity.as_ref());
    st.store.object_touch(Kind::Workspace, ns, name).await?;
    Ok((
        StatusCode::OK,
        Json(json!({
            "workspace": name,
            "autostopNotBefore": until,
            "autostopAt": autostop_at,
            "afterInactivity": eff.after_inactivity,
        })),
    )
        .into_response())
}
