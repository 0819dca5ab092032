//! `GET …/namespaces/{ns}/workspaces/{name}/connect?target=ssh|tcp&port=N`:
//! a client's byte stream into a workspace, as a WebSocket of binary
//! messages (see [`crate::relay::ws`]), relayed over the workspace agent's
//! connection. Only the owner (or an admin) may connect, with a user token
//! in the `Authorization` header.
//!
//! With several replicas, the agent is connected to one of them; a client
//! that reached another is forwarded to it (over the URL that replica
//! advertises, with the client's own credentials, so it checks them again).
//! While a stream is open it counts as the workspace's activity, with its
//! source (`ssh`, `port-forward:8080`); opening and closing are events.

use std::time::{Duration, Instant};

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use crate::agent::protocol::StreamTarget;
use crate::api::Kind;
use crate::store::{EventType, InvolvedObject};

/// Set on a request one replica forwards to another (which must not forward again).
pub const FORWARDED_HEADER: &str = "x-berth-forwarded";
/// On a forwarded request: a one-time relay ticket standing for the user
/// whom the forwarding replica authenticated (from a browser session, which
/// has no token to pass on). Redeemed once, for one workspace and target.
pub const RELAY_TICKET_HEADER: &str = "x-berth-relay-ticket";
/// How long a relay ticket is good for (the forward happens at once).
const RELAY_TICKET_TTL: Duration = Duration::from_secs(30);
/// How often an open stream renews the workspace's activity.
const ACTIVITY_EVERY: Duration = Duration::from_secs(30);

/// Query of `…/connect`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectQuery {
    /// `ssh` (the agent's SSH server) or `tcp` (a port on the workspace's loopback).
    target: String,
    /// With `tcp`: the port.
    port: Option<u16>,
}

impl ConnectQuery {
    fn target(&self) -> Result<StreamTarget, ApiError> {
        match (self.target.as_str(), self.port) {
            ("ssh", None) => Ok(StreamTarget::Ssh),
            ("tcp", Some(port)) if port > 0 => Ok(StreamTarget::Tcp { port }),
            ("tcp", _) => Err(ApiError::BadRequest(
                "target=tcp needs port=1..65535".into(),
            )),
            (other, _) => Err(ApiError::BadRequest(format!(
                "target: {other:?} is not ssh or tcp"
            ))),
        }
    }
}

/// Opens the stream, then upgrades: a refused stream is an HTTP error the
/// client can show.
///
/// A request that carries a relay ticket is a stream another replica opened
/// for one of its own sessions (an app, a web terminal): that replica
/// reports its events and activity, so this one only relays.
pub async fn connect(
    st: AppState,
    ns: String,
    name: String,
    headers: HeaderMap,
    q: ConnectQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let target = q.target()?;
    let ticket = headers
        .get(RELAY_TICKET_HEADER)
        .filter(|_| headers.contains_key(FORWARDED_HEADER))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let caller = match &ticket {
        Some(t) => {
            let obj = st.store.object_get(Kind::Workspace, &ns, &name).await?;
            let scope = relay_scope(obj.and_then(|o| o.metadata.uid).unwrap_or_default(), target);
            Caller(
                st.store
                    .web_ticket_redeem(t, &scope)
                    .await?
                    .ok_or_else(|| ApiError::Unauthorized("unknown or used relay ticket".into()))?,
            )
        }
        None => Caller::from_headers(&st, &axum::http::Method::GET, &headers).await?,
    };
    let report = ticket.is_none();
    let obj = st
        .store
        .object_get(Kind::Workspace, &ns, &name)
        .await?
        .filter(|o| caller.can_read(o))
        .ok_or_else(|| {
            ApiError::NotFound(format!("workspaces/{name} not found in namespace {ns:?}"))
        })?;
    let ws = ws.map_err(|e| ApiError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    let uid = obj.metadata.uid.unwrap_or_default();
    if !st.agents.holds(uid) {
        return forward(&st, &ns, &name, uid, &headers, &q, ws).await;
    }
    let end = st
        .agents
        .open_stream(uid, target)
        .await
        .map_err(|e| ApiError::Unavailable(format!("workspaces/{name}: {e}")))?;
    if !report {
        return Ok(ws
            .on_upgrade(move |socket: WebSocket| async move {
                let _ = crate::relay::pump(end, crate::relay::ws::axum_io(socket)).await;
            })
            .into_response());
    }
    let user = caller.0.user.clone();
    let source = target.activity_source();
    // Renew activity well within the workspace's inactivity threshold.
    let coalesce = obj
        .status
        .pointer("/lifecycle/afterInactivity")
        .and_then(|v| v.as_str())
        .and_then(|d| crate::api::validate::duration(d).ok())
        .map(|d| (d / 4).clamp(Duration::from_secs(10), super::activity::COALESCE))
        .unwrap_or(super::activity::COALESCE);
    Ok(ws
        .on_upgrade(move |socket: WebSocket| async move {
            let involved = InvolvedObject {
                kind: "Workspace".into(),
                namespace: ns.clone(),
                name: name.clone(),
                uid,
            };
            let _ = st
                .store
                .event_record(
                    &involved,
                    EventType::Normal,
                    "Connected",
                    &format!("{user} connected ({source})"),
                    "relay",
                )
                .await;
            let began = Instant::now();
            let io = crate::relay::ws::axum_io(socket);
            let pumping = crate::relay::pump(end, io);
            tokio::pin!(pumping);
            let mut tick = tokio::time::interval(ACTIVITY_EVERY.min(coalesce / 2));
            let result = loop {
                tokio::select! {
                    r = &mut pumping => break r,
                    _ = tick.tick() => {
                        if let Err(e) = super::activity::record_within(&st, uid, &ns, &name, &source, coalesce).await {
                            tracing::warn!(workspace = %format!("{ns}/{name}"), error = %e, "cannot record activity");
                        }
                    }
                }
            };
            let took = began.elapsed().as_secs();
            let how = match &result {
                Ok(m) => format!("{} bytes in, {} bytes out", m.sent, m.received),
                Err(e) => e.to_string(),
            };
            let _ = st
                .store
                .event_record(
                    &involved,
                    EventType::Normal,
                    "Disconnected",
                    &format!("{user} disconnected ({source}) after {took}s: {how}"),
                    "relay",
                )
                .await;
        })
        .into_response())
}

/// The agent is not connected here: forward to the replica that holds it,
/// or say that nobody does.
async fn forward(
    st: &AppState,
    ns: &str,
    name: &str,
    uid: uuid::Uuid,
    headers: &HeaderMap,
    q: &ConnectQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let not_connected = || {
        ApiError::Unavailable(format!(
            "workspaces/{name}: its agent is not connected (start it with `berth start {name}`, or see `berth describe ws {name}`)"
        ))
    };
    if headers.contains_key(FORWARDED_HEADER) {
        return Err(not_connected());
    }
    let mut h = reqwest::header::HeaderMap::new();
    if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
        if let Ok(v) = reqwest::header::HeaderValue::from_bytes(auth.as_bytes()) {
            h.insert(reqwest::header::AUTHORIZATION, v);
        }
    }
    let upstream = dial_holder(st, ns, name, uid, q.target()?, h)
        .await?
        .ok_or_else(not_connected)?;
    Ok(ws
        .on_upgrade(move |socket: WebSocket| async move {
            let mut client_io = crate::relay::ws::axum_io(socket);
            let mut upstream_io = crate::relay::ws::tungstenite_io(upstream);
            let _ = tokio::io::copy_bidirectional(&mut client_io, &mut upstream_io).await;
        })
        .into_response())
}

fn relay_scope(uid: uuid::Uuid, target: StreamTarget) -> String {
    match target {
        StreamTarget::Ssh => format!("relay:{uid}:ssh"),
        StreamTarget::Tcp { port } => format!("relay:{uid}:tcp:{port}"),
    }
}

/// Dials `…/connect` on the replica that holds the workspace's agent (not
/// this one), with `auth` (the client's own headers, or a relay ticket).
/// `None` when no other replica holds it.
async fn dial_holder(
    st: &AppState,
    ns: &str,
    name: &str,
    uid: uuid::Uuid,
    target: StreamTarget,
    mut auth: reqwest::header::HeaderMap,
) -> Result<Option<tokio_tungstenite::WebSocketStream<reqwest::Upgraded>>, ApiError> {
    let Some((replica, url)) = st.store.agent_replica(uid).await? else {
        return Ok(None);
    };
    if replica == st.agents.replica || url.is_empty() {
        return Ok(None);
    }
    let query = match target {
        StreamTarget::Ssh => "target=ssh".to_string(),
        StreamTarget::Tcp { port } => format!("target=tcp&port={port}"),
    };
    let upstream_url = format!(
        "{}/apis/berth.dev/v1alpha1/namespaces/{ns}/workspaces/{name}/connect?{query}",
        url.trim_end_matches('/')
    );
    auth.insert(
        FORWARDED_HEADER,
        reqwest::header::HeaderValue::from_static("1"),
    );
    let client = reqwest::Client::builder()
        .http1_only()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let upstream = crate::relay::ws::dial(&client, &upstream_url, auth)
        .await
        .map_err(|e| match e {
            crate::relay::ws::DialError::Refused { status, message } if status < 500 => {
                ApiError::BadRequest(message)
            }
            other => {
                tracing::warn!(replica = %replica, error = %other, "cannot forward a connection to the replica holding the agent");
                ApiError::Unavailable(format!(
                    "workspaces/{name}: the replica holding its agent cannot be reached: {other}"
                ))
            }
        })?;
    tracing::debug!(replica = %replica, workspace = %format!("{ns}/{name}"), "forwarding a connection");
    Ok(Some(upstream))
}

/// Why [`open_duplex`] has no stream.
#[derive(Debug)]
pub enum OpenError {
    /// No replica holds the workspace's agent.
    NotConnected,
    /// The agent (or the holding replica) refused or failed to open it.
    Failed(String),
    /// The database or another internal failure.
    Api(ApiError),
}

impl From<ApiError> for OpenError {
    fn from(e: ApiError) -> Self {
        OpenError::Api(e)
    }
}

/// A byte stream to `target` in a workspace for `who` (already authorized
/// by the caller), wherever its agent is connected: over this replica's
/// agent connection, or through the replica that holds it (with a
/// one-time relay ticket for `who`). The caller reports events and activity.
pub async fn open_duplex(
    st: &AppState,
    ns: &str,
    name: &str,
    uid: uuid::Uuid,
    target: StreamTarget,
    who: &crate::store::Identity,
) -> Result<tokio::io::DuplexStream, OpenError> {
    let (near, far) = tokio::io::duplex(4 * crate::relay::MAX_CHUNK);
    if st.agents.holds(uid) {
        let end = st
            .agents
            .open_stream(uid, target)
            .await
            .map_err(|e| OpenError::Failed(e.to_string()))?;
        tokio::spawn(crate::relay::pump(end, far));
        return Ok(near);
    }
    let ticket = st
        .store
        .web_ticket_create(who, &relay_scope(uid, target), RELAY_TICKET_TTL)
        .await
        .map_err(ApiError::from)?;
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        RELAY_TICKET_HEADER,
        reqwest::header::HeaderValue::from_str(&ticket)
            .map_err(|e| ApiError::Internal(Box::new(e)))?,
    );
    let upstream = match dial_holder(st, ns, name, uid, target, auth).await {
        Ok(Some(u)) => u,
        Ok(None) => return Err(OpenError::NotConnected),
        Err(ApiError::Unavailable(m) | ApiError::BadRequest(m)) => {
            return Err(OpenError::Failed(m))
        }
        Err(e) => return Err(OpenError::Api(e)),
    };
    tokio::spawn(async move {
        let mut far = far;
        let mut up = crate::relay::ws::tungstenite_io(upstream);
        let _ = tokio::io::copy_bidirectional(&mut far, &mut up).await;
    });
    Ok(near)
}
