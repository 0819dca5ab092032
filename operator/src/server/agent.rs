//! The operator's end of the agent protocol ([`crate::agent::protocol`]):
//! the agent's WebSocket, script states and logs into the store, and the
//! logs as users read them (`berth logs`).
//!
//! # Authentication
//! An agent authenticates only with the current agent token of the
//! workspace named in the path: a token of an earlier start, another
//! workspace's token and a person's API token are all refused alike (401,
//! the same answer whether or not the workspace exists). Everything the
//! agent writes is keyed by the workspace and start its token belongs to,
//! so an agent can act on nothing else.
//!
//! # Per connection
//! `Hello` → manifest and `Welcome` → messages, each validated (bounds, and
//! state transitions against what this connection has seen); an invalid
//! message gets an `Error` and the connection is closed. State changes
//! touch the workspace so its controller recomputes `status.agent` and
//! `Ready`; log batches are stored and acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::Notify;
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use crate::agent::protocol::{
    self, AgentMessage, Lifecycle, Manifest, ManifestScript, ScriptState, ServerMessage,
};
use crate::api::template::WorkspaceTemplateSpec;
use crate::api::{DynObject, Kind, WorkspaceSpec};
use crate::store::{EventType, InvolvedObject, Store, StoreError};

/// How long an agent has to send `Hello` after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Protocol replies (log acks, errors) queued for the writer; the reader
/// waits when it is full, so a writer that cannot send holds back acks only.
const OUTBOX: usize = 64;

/// The agents connected to this replica.
#[derive(Debug)]
pub struct AgentHub {
    /// This replica's id (as recorded in agent sessions and `replicas`).
    pub replica: String,
    /// How often this replica pings each agent: [`protocol::HEARTBEAT`]
    /// (`berth bench agents` shortens it to count heartbeats in a minute).
    pub heartbeat: Duration,
    connected: AtomicUsize,
    heartbeats: AtomicU64,
    messages: AtomicU64,
    logs: Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// The stream multiplexer of every agent connected to this replica.
    links: Mutex<HashMap<Uuid, Arc<crate::relay::Mux>>>,
}

impl Default for AgentHub {
    fn default() -> Self {
        AgentHub::new(format!(
            "berth-{}",
            &Uuid::new_v4().simple().to_string()[..12]
        ))
    }
}

impl AgentHub {
    /// A hub for replica `replica`.
    pub fn new(replica: String) -> AgentHub {
        AgentHub {
            replica,
            heartbeat: protocol::HEARTBEAT,
            connected: AtomicUsize::new(0),
            heartbeats: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            logs: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<crate::relay::Mux>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the agent of workspace `uid` is connected to this replica.
    pub fn holds(&self, uid: Uuid) -> bool {
        self.links().contains_key(&uid)
    }

    /// Opens a relayed stream to `target` in workspace `uid`, whose agent
    /// is connected to this replica.
    pub async fn open_stream(
        &self,
        uid: Uuid,
        target: protocol::StreamTarget,
    ) -> Result<crate::relay::StreamEnd, crate::relay::StreamError> {
        let mux = self
            .links()
            .get(&uid)
            .cloned()
            .ok_or(crate::relay::StreamError::Gone)?;
        mux.open(target).await
    }

    /// Agents connected to this replica now.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Heartbeats (pongs) received since the start.
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats.load(Ordering::Relaxed)
    }

    /// Protocol messages received since the start.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    fn notifier(&self, uid: Uuid) -> Arc<Notify> {
        let mut g = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(uid).or_default().clone()
    }

    fn wake(&self, uid: Uuid) {
        let g = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = g.get(&uid) {
            n.notify_waiters();
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Authenticates an agent for `{ns}/{name}`: its workspace and start.
async fn agent_auth(
    st: &AppState,
    headers: &HeaderMap,
    ns: &str,
    name: &str,
) -> Result<(DynObject, i64), ApiError> {
    let refused = || {
        ApiError::Unauthorized(format!(
            "workspaces/{name}: not the current agent token of this workspace"
        ))
    };
    let token = bearer(headers).ok_or_else(refused)?;
    let (uid, start) = st
        .store
        .agent_token_lookup(token)
        .await?
        .ok_or_else(refused)?;
    let obj = st
        .store
        .object_get(Kind::Workspace, ns, name)
        .await?
        .filter(|o| o.metadata.uid == Some(uid))
        .ok_or_else(refused)?;
    Ok((obj, start))
}

/// `GET …/workspaces/{name}/agent`: the agent's WebSocket.
pub async fn agent_socket(
    st: AppState,
    ns: String,
    name: String,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (obj, start) = agent_auth(&st, &headers, &ns, &name).await?;
    let ws = ws.map_err(|e| ApiError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    Ok(ws
        // Agents are mostly idle: a small read buffer (it grows for a large
        // frame) keeps 10,000 connections in a fraction of the memory the
        // 128 KiB default takes (`berth bench agents`).
        .read_buffer_size(8 * 1024)
        .max_message_size(protocol::MAX_MESSAGE_BYTES)
        .max_frame_size(protocol::MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let uid = obj.metadata.uid.unwrap_or_default();
            st.agents.connected.fetch_add(1, Ordering::Relaxed);
            let mut conn = Connection::new(st.clone(), obj, start);
            let r = conn.serve(socket).await;
            st.agents.connected.fetch_sub(1, Ordering::Relaxed);
            match r {
                Ok(()) => tracing::debug!(workspace = %format!("{ns}/{name}"), "agent disconnected"),
                Err(e) => tracing::info!(workspace = %format!("{ns}/{name}"), error = %e, "agent connection ended"),
            }
            if let Some(at) = conn.opened {
                if let Err(e) = st.store.agent_session_close(uid, start, at).await {
                    tracing::warn!(workspace = %format!("{ns}/{name}"), error = %e, "could not record the agent's disconnect");
                }
            }
            touch(&st.store, &ns, &name).await;
        })
        .into_response())
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("the agent broke the protocol: {0}")]
    Protocol(String),
    #[error("store")]
    Store(#[from] StoreError),
    #[error("websocket: {0}")]
    Socket(String),
    #[error("no message from the agent for {0:?}")]
    Silent(Duration),
}

struct Connection {
    st: AppState,
    obj: DynObject,
    uid: Uuid,
    start: i64,
    lifecycle: Lifecycle,
    scripts: BTreeMap<String, ScriptState>,
    /// When this connection's session was opened (it closes only that one).
    opened: Option<chrono::DateTime<chrono::Utc>>,
}

impl Connection {
    fn new(st: AppState, obj: DynObject, start: i64) -> Connection {
        let uid = obj.metadata.uid.unwrap_or_default();
        Connection {
            st,
            obj,
            uid,
            start,
            lifecycle: Lifecycle::Starting,
            scripts: BTreeMap::new(),
            opened: None,
        }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.obj.metadata.namespace, self.obj.metadata.name)
    }

    async fn send(socket: &mut WebSocket, m: &ServerMessage) -> Result<(), ConnError> {
        socket
            .send(Message::Text(m.encode().into()))
            .await
            .map_err(|e| ConnError::Socket(e.to_string()))
    }

    async fn refuse(socket: &mut WebSocket, why: String) -> ConnError {
        let _ = Self::send(
            socket,
            &ServerMessage::Error {
                message: why.clone(),
            },
        )
        .await;
        let _ = socket.send(Message::Close(None)).await;
        ConnError::Protocol(why)
    }

    async fn next_text(
        socket: &mut WebSocket,
        hub: &AgentHub,
    ) -> Result<Option<String>, ConnError> {
        loop {
            match socket.recv().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ConnError::Socket(e.to_string())),
                Some(Ok(Message::Text(t))) => return Ok(Some(t.to_string())),
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Pong(_))) => {
                    hub.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Binary(_))) => {
                    return Err(ConnError::Protocol(
                        "binary frames are not part of protocol 1".into(),
                    ))
                }
            }
        }
    }

    async fn serve(&mut self, mut socket: WebSocket) -> Result<(), ConnError> {
        let hub = self.st.agents.clone();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, Self::next_text(&mut socket, &hub))
            .await
        {
            Ok(Ok(Some(t))) => t,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Self::refuse(&mut socket, "no hello within 10 s".into()).await),
        };
        let (agent_version, lifecycle, reported) = match AgentMessage::decode(&hello) {
            Ok(AgentMessage::Hello {
                protocol: p,
                agent_version,
                lifecycle,
                scripts,
            }) => {
                if p != protocol::PROTOCOL_VERSION {
                    return Err(Self::refuse(
                        &mut socket,
                        format!(
                            "protocol {p} is not supported; this operator speaks {}",
                            protocol::PROTOCOL_VERSION
                        ),
                    )
                    .await);
                }
                (agent_version, lifecycle, scripts)
            }
            Ok(_) => {
                return Err(
                    Self::refuse(&mut socket, "the first message must be hello".into()).await,
                )
            }
            Err(e) => return Err(Self::refuse(&mut socket, e.to_string()).await),
        };
        let manifest = match manifest(&self.st.store, &self.obj).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(workspace = %self.label(), error = %e, "cannot build the agent's manifest");
                return Err(Self::refuse(&mut socket, "the operator cannot build this workspace's manifest; see the workspace's events".into()).await);
            }
        };
        // Transitions are checked against what the store knows of this start.
        if let Some(prev) = self
            .st
            .store
            .agent_session(self.uid)
            .await?
            .filter(|s| s.start_id == self.start)
        {
            if let Some(p) = parse_lifecycle(&prev.lifecycle) {
                if !p.may_become(lifecycle) {
                    return Err(Self::refuse(
                        &mut socket,
                        format!(
                            "lifecycle: {} cannot become {}",
                            p.as_str(),
                            lifecycle.as_str()
                        ),
                    )
                    .await);
                }
            }
        }
        for s in &manifest.scripts {
            self.scripts.insert(s.name.clone(), ScriptState::Pending);
        }
        let known = self.st.store.agent_scripts(self.uid, self.start).await?;
        for k in &known {
            if let (Some(state), true) = (parse_state(&k.state), self.scripts.contains_key(&k.name))
            {
                self.scripts.insert(k.name.clone(), state);
            }
        }
        for (i, s) in reported.iter().enumerate() {
            if let Err(why) = self.check_script(s) {
                return Err(Self::refuse(&mut socket, format!("scripts[{i}]: {why}")).await);
            }
            self.scripts.insert(s.name.clone(), s.state);
        }
        self.lifecycle = lifecycle;
        let (opened, acked) = self
            .st
            .store
            .agent_session_open(
                self.uid,
                self.start,
                &hub.replica,
                &agent_version,
                lifecycle.as_str(),
                manifest.template_version,
                &manifest.scripts,
                &reported,
            )
            .await?;
        self.opened = Some(opened);
        Self::send(
            &mut socket,
            &ServerMessage::Welcome {
                protocol: protocol::PROTOCOL_VERSION,
                manifest,
                logs_acked: acked,
            },
        )
        .await?;
        tracing::info!(workspace = %self.label(), start = self.start, version = %agent_version, "agent connected");
        touch(
            &self.st.store,
            &self.obj.metadata.namespace,
            &self.obj.metadata.name,
        )
        .await;

        // Relayed streams: registered for clients of this replica, and all
        // ended when this connection ends.
        let (mux, mut mux_out) = crate::relay::Mux::new();
        hub.links().insert(self.uid, mux.clone());
        struct Unlink(Arc<AgentHub>, Uuid, Arc<crate::relay::Mux>);
        impl Drop for Unlink {
            fn drop(&mut self) {
                let mut links = self.0.links();
                if links.get(&self.1).is_some_and(|m| Arc::ptr_eq(m, &self.2)) {
                    links.remove(&self.1);
                }
                drop(links);
                self.2.close_all();
            }
        }
        let _unlink = Unlink(hub.clone(), self.uid, mux.clone());

        // Reading and writing run side by side: a send that waits (an agent
        // slow to read, a full socket buffer) never stops this side from
        // reading — window updates, acks, the agent's own sends — which
        // could otherwise wedge both ends.
        use futures_util::{SinkExt as _, StreamExt as _};
        let (mut sink, mut stream) = socket.split();
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Message>(OUTBOX);
        let heartbeat = hub.heartbeat;
        let writer = async move {
            let mut ping = tokio::time::interval(heartbeat);
            ping.tick().await;
            loop {
                // Protocol replies first, then relayed bytes, then pings.
                let m = tokio::select! {
                    biased;
                    m = out_rx.recv() => match m {
                        Some(m) => m,
                        None => return Ok(()),
                    },
                    Some(o) = mux_out.recv() => match o {
                        crate::relay::Out::Control(control) => Message::Text(ServerMessage::Stream { control }.encode().into()),
                        crate::relay::Out::Data(id, d) => Message::Binary(crate::relay::data_frame(id, &d).into()),
                    },
                    _ = ping.tick() => Message::Ping(Vec::new().into()),
                };
                let close = matches!(m, Message::Close(_));
                // An agent that stops reading must not hold its queue forever.
                match tokio::time::timeout(heartbeat * 3, sink.send(m)).await {
                    Ok(r) => r.map_err(|e| ConnError::Socket(e.to_string()))?,
                    Err(_) => return Err(ConnError::Silent(heartbeat * 3)),
                }
                if close {
                    return Ok(());
                }
            }
        };
        tokio::pin!(writer);
        let mut reader = Box::pin(self.read_loop(&mut stream, &out_tx, &mux, &hub));
        let result = tokio::select! {
            w = &mut writer => return w,
            r = &mut reader => r,
        };
        // A refusal queued its error and a close: let the writer send them.
        drop(reader);
        drop(out_tx);
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
        result
    }

    /// The reading half of [`Self::serve`]'s loop; replies go to `out`.
    async fn read_loop(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
        out: &tokio::sync::mpsc::Sender<Message>,
        mux: &Arc<crate::relay::Mux>,
        hub: &Arc<AgentHub>,
    ) -> Result<(), ConnError> {
        use futures_util::StreamExt as _;
        let refuse = |why: String| async move {
            let _ = out
                .send(Message::Text(
                    ServerMessage::Error {
                        message: why.clone(),
                    }
                    .encode()
                    .into(),
                ))
                .await;
            let _ = out.send(Message::Close(None)).await;
            ConnError::Protocol(why)
        };
        let mut check = tokio::time::interval(hub.heartbeat);
        check.tick().await;
        let mut heard = Instant::now();
        loop {
            let msg = tokio::select! {
                _ = check.tick() => {
                    let silent = heard.elapsed();
                    if silent > hub.heartbeat * 3 {
                        return Err(ConnError::Silent(silent));
                    }
                    continue;
                }
                msg = stream.next() => msg,
            };
            heard = Instant::now();
            let text = match msg {
                None | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Err(e)) => return Err(ConnError::Socket(e.to_string())),
                Some(Ok(Message::Pong(_))) => {
                    hub.heartbeats.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Some(Ok(Message::Ping(_))) => continue,
                Some(Ok(Message::Binary(b))) => {
                    match crate::relay::parse_frame(&b) {
                        Some((id, data)) => mux.on_data(id, data),
                        None => {
                            return Err(refuse("a binary frame without a stream id".into()).await)
                        }
                    }
                    continue;
                }
                Some(Ok(Message::Text(t))) => t,
            };
            hub.messages.fetch_add(1, Ordering::Relaxed);
            let m = match AgentMessage::decode(text.as_str()) {
                Ok(m) => m,
                Err(e) => return Err(refuse(e.to_string()).await),
            };
            if let AgentMessage::Stream { control } = m {
                mux.on_control(control);
                continue;
            }
            if let Err(why) = self.handle(out, m).await? {
                return Err(refuse(why).await);
            }
        }
    }

    fn check_script(&self, s: &protocol::ScriptStatus) -> Result<(), String> {
        let Some(prev) = self.scripts.get(&s.name) else {
            return Err(format!(
                "no script {:?} in this workspace's manifest",
                s.name
            ));
        };
        if !prev.may_become(s.state) {
            return Err(format!(
                "script {:?}: {} cannot become {}",
                s.name,
                prev.as_str(),
                s.state.as_str()
            ));
        }
        Ok(())
    }

    /// Handles one valid message; replies go to `out`. `Ok(Err(why))` =
    /// refuse and close.
    async fn handle(
        &mut self,
        out: &tokio::sync::mpsc::Sender<Message>,
        m: AgentMessage,
    ) -> Result<Result<(), String>, ConnError> {
        let (ns, name) = (
            self.obj.metadata.namespace.clone(),
            self.obj.metadata.name.clone(),
        );
        match m {
            AgentMessage::Hello { .. } => return Ok(Err("hello may be sent only once".into())),
            // Handled by the connection's stream multiplexer.
            AgentMessage::Stream { .. } => {}
            AgentMessage::Lifecycle { state } => {
                if !self.lifecycle.may_become(state) {
                    return Ok(Err(format!(
                        "lifecycle: {} cannot become {}",
                        self.lifecycle.as_str(),
                        state.as_str()
                    )));
                }
                if state != self.lifecycle {
                    self.lifecycle = state;
                    self.st
                        .store
                        .agent_lifecycle_set(self.uid, self.start, state.as_str())
                        .await?;
                    touch(&self.st.store, &ns, &name).await;
                }
            }
            AgentMessage::Script { status } => {
                if let Err(why) = self.check_script(&status) {
                    return Ok(Err(format!("status: {why}")));
                }
                self.scripts.insert(status.name.clone(), status.state);
                self.st
                    .store
                    .agent_script_set(self.uid, self.start, &status)
                    .await?;
                if status.state == ScriptState::Failed {
                    let involved = InvolvedObject {
                        kind: "Workspace".into(),
                        namespace: ns.clone(),
                        name: name.clone(),
                        uid: self.uid,
                    };
                    let code = status
                        .exit_code
                        .map(|c| format!("exit code {c}"))
                        .unwrap_or_else(|| "no exit code (killed or not started)".into());
                    let _ = self
                        .st
                        .store
                        .event_record(
                            &involved,
                            EventType::Warning,
                            "ScriptFailed",
                            &format!(
                                "script {:?} failed: {code} (berth logs {name} --script {})",
                                status.name, status.name
                            ),
                            "agent",
                        )
                        .await;
                }
                touch(&self.st.store, &ns, &name).await;
            }
            AgentMessage::Logs { script, lines, .. } => {
                if !self.scripts.contains_key(&script) {
                    return Ok(Err(format!(
                        "script: no script {script:?} in this workspace's manifest"
                    )));
                }
                let Some(next) = self
                    .st
                    .store
                    .agent_logs_append(self.uid, self.start, &script, &lines)
                    .await?
                else {
                    return Ok(Err(format!("script: unknown script {script:?}")));
                };
                self.st.agents.wake(self.uid);
                let ack = ServerMessage::LogsAck {
                    script,
                    next_seq: next,
                };
                out.send(Message::Text(ack.encode().into()))
                    .await
                    .map_err(|_| ConnError::Socket("the connection's writer ended".into()))?;
            }
            AgentMessage::Activity { kind } => {
                super::activity::record(&self.st, self.uid, &ns, &name, kind.as_str()).await?;
            }
        }
        Ok(Ok(()))
    }
}

fn parse_lifecycle(s: &str) -> Option<Lifecycle> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

fn parse_state(s: &str) -> Option<ScriptState> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

async fn touch(store: &Store, ns: &str, name: &str) {
    match store.object_touch(Kind::Workspace, ns, name).await {
        Ok(_) | Err(StoreError::NotFound(_)) => {}
        Err(e) => {
            tracing::warn!(workspace = %format!("{ns}/{name}"), error = %e, "could not wake the workspace's controller")
        }
    }
}

/// Why a manifest cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The store failed.
    #[error("store")]
    Store(#[from] StoreError),
    /// The workspace or template version does not decode, or is gone.
    #[error("{0}")]
    Corrupt(String),
}

/// The manifest of a workspace's agent: the scripts of the template version
/// that runs (`status.templateVersion`, else the one the workspace
/// follows), with `when` applied.
pub async fn manifest(store: &Store, obj: &DynObject) -> Result<Manifest, ManifestError> {
    let ns = &obj.metadata.namespace;
    let spec: WorkspaceSpec = serde_json::from_value(obj.spec.clone()).map_err(|e| {
        ManifestError::Corrupt(format!("workspaces/{}: spec: {e}", obj.metadata.name))
    })?;
    let running = obj
        .status
        .get("templateVersion")
        .and_then(|v| v.as_i64())
        .map(|v| v as i32)
        .or(spec.template.version);
    let tv = store
        .template_version_get(ns, &spec.template.name, running)
        .await?
        .ok_or_else(|| {
            ManifestError::Corrupt(format!(
                "workspacetemplates/{}: version {running:?} not found",
                spec.template.name
            ))
        })?;
    let tspec: WorkspaceTemplateSpec = serde_json::from_value(tv.spec.clone()).map_err(|e| {
        ManifestError::Corrupt(format!(
            "workspacetemplates/{} version {}: spec: {e}",
            spec.template.name, tv.version
        ))
    })?;
    let params = crate::controllers::workspace::render::effective_parameters(&spec, &tspec);
    let scripts = tspec
        .scripts
        .iter()
        .filter(|s| {
            s.when
                .as_ref()
                .is_none_or(|w| params.get(w) == Some(&serde_json::Value::Bool(true)))
        })
        .map(|s| ManifestScript {
            name: s.name.clone(),
            display_name: s.display_name.clone(),
            script: s.script.clone(),
            blocks_login: s.blocks_login && !s.run_on_stop,
            run_on_stop: s.run_on_stop,
        })
        .collect();
    Ok(Manifest {
        namespace: ns.clone(),
        workspace: obj.metadata.name.clone(),
        owner: spec.owner.clone(),
        template_version: tv.version,
        scripts,
        secret_env: tspec.container.secrets.keys().cloned().collect(),
        host_scripts: template_allows_host_scripts(store, ns, &spec.template.name).await?,
    })
}

/// The annotation with which a template lets the local runtime run its
/// scripts on the host.
pub const LOCAL_SCRIPTS_ANNOTATION: &str = "berth.dev/local-scripts";

async fn template_allows_host_scripts(
    store: &Store,
    ns: &str,
    template: &str,
) -> Result<bool, ManifestError> {
    Ok(store
        .object_get(Kind::WorkspaceTemplate, ns, template)
        .await?
        .is_some_and(|t| {
            t.metadata
                .annotations
                .get(LOCAL_SCRIPTS_ANNOTATION)
                .is_some_and(|v| v == "true")
        }))
}

/// Query of `GET …/workspaces/{name}/logs`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogsQuery {
    /// Only this script.
    script: Option<String>,
    /// Keep streaming new lines until the agent is off.
    #[serde(default)]
    follow: bool,
    /// The start before the current one.
    #[serde(default)]
    previous: bool,
}

/// `GET …/workspaces/{name}/logs[?script=&follow=true&previous=true]`:
/// newline-delimited JSON, one object per line (`script`, `seq`, `stream`,
/// `at`, `text`), preceded per script by `{"script", "dropped"}` when lines
/// were dropped. Owners and admins only.
pub async fn logs(
    st: AppState,
    ns: String,
    name: String,
    q: LogsQuery,
    caller: Caller,
) -> Result<Response, ApiError> {
    let obj = st
        .store
        .object_get(Kind::Workspace, &ns, &name)
        .await?
        .filter(|o| caller.can_read(o))
        .ok_or_else(|| {
            ApiError::NotFound(format!("workspaces/{name} not found in namespace {ns:?}"))
        })?;
    let uid = obj.metadata.uid.unwrap_or_default();
    let starts = st.store.agent_starts(uid).await?;
    let current = st
        .store
        .agent_current_start(uid)
        .await?
        .or(starts.first().copied());
    let start = match (current, q.previous) {
        (None, _) => None,
        (Some(c), false) => Some(c),
        (Some(c), true) => starts.iter().copied().find(|s| *s < c),
    };
    let Some(start) = start else {
        let what = if q.previous {
            "no previous start"
        } else {
            "no start yet"
        };
        return Err(ApiError::NotFound(format!(
            "workspaces/{name}: {what} with logs"
        )));
    };
    let scripts = st.store.agent_scripts(uid, start).await?;
    if let Some(s) = &q.script {
        if !scripts.iter().any(|x| &x.name == s) {
            let names: Vec<&str> = scripts.iter().map(|x| x.name.as_str()).collect();
            return Err(ApiError::NotFound(format!(
                "workspaces/{name}: no script {s:?} in this start (scripts: {})",
                if names.is_empty() {
                    "none yet".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
    }
    let follow = q.follow && !q.previous;
    let script = q.script.clone();
    let notify = st.agents.notifier(uid);
    let store = st.store.clone();
    let stream = async_stream::stream! {
        let mut from: BTreeMap<String, i64> = BTreeMap::new();
        for s in &scripts {
            if script.as_ref().is_none_or(|n| n == &s.name) && s.dropped > 0 {
                let line = serde_json::json!({"script": s.name, "dropped": s.dropped});
                yield Ok::<_, std::io::Error>(format!("{line}\n"));
            }
        }
        loop {
            let waiter = notify.notified();
            let batch = match store.agent_logs(uid, start, script.as_deref(), &from, 1000).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "reading logs failed");
                    break;
                }
            };
            let full = batch.len() == 1000;
            for l in batch {
                from.insert(l.script.clone(), l.seq + 1);
                yield Ok(format!("{}\n", serde_json::to_string(&l).unwrap_or_default()));
            }
            if full {
                continue;
            }
            if !follow {
                break;
            }
            // Until the agent of this start is off (or a newer start began).
            let done = match store.agent_session(uid).await {
                Ok(Some(s)) => s.start_id != start || s.lifecycle == Lifecycle::Off.as_str(),
                Ok(None) => matches!(store.agent_current_start(uid).await, Ok(Some(c)) if c != start),
                Err(_) => true,
            };
            if done {
                // One last read for lines stored just before the end.
                if let Ok(rest) = store.agent_logs(uid, start, script.as_deref(), &from, 10_000).await {
                    for l in rest {
                        yield Ok(format!("{}\n", serde_json::to_string(&l).unwrap_or_default()));
                    }
                }
                break;
            }
            // Woken by a batch stored on this replica, or poll (another replica).
            let _ = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        }
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}
