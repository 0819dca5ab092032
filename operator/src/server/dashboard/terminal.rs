//! `GET …/namespaces/{ns}/workspaces/{name}/terminal`: the dashboard's web
//! terminal. A WebSocket from the workspace's page (session cookie, this
//! origin; or a bearer token) to a login shell in the workspace: the
//! operator opens a relayed SSH stream to the agent and runs Berth's own
//! SSH client on it with a pty, so the browser speaks no SSH.
//!
//! Messages: binary from the browser is terminal input; text is JSON
//! `{"type":"resize","cols":N,"rows":N}`; binary to the browser is terminal
//! output. The socket closes when the shell exits. An open terminal counts
//! as the workspace's activity (`terminal`); opening and closing are events.

use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::super::auth::Caller;
use super::super::error::ApiError;
use super::super::AppState;
use crate::agent::protocol::StreamTarget;
use crate::api::Kind;
use crate::store::{EventType, InvolvedObject};

const ACTIVITY_EVERY: Duration = Duration::from_secs(30);
const MAX_COLS_ROWS: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize { cols: u32, rows: u32 },
}

fn size(cols: u32, rows: u32) -> Option<(u32, u32)> {
    ((1..=MAX_COLS_ROWS).contains(&cols) && (1..=MAX_COLS_ROWS).contains(&rows))
        .then_some((cols, rows))
}

/// Query of `…/terminal`: the terminal's size at the start.
#[derive(Debug, Default, Deserialize)]
struct TerminalQuery {
    cols: Option<u32>,
    rows: Option<u32>,
}

/// Checks the caller and the workspace, opens the SSH stream, then upgrades.
pub async fn serve(
    st: AppState,
    ns: String,
    name: String,
    headers: HeaderMap,
    uri: axum::http::Uri,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // A WebSocket is a GET that no CSRF header can accompany: the origin
    // check (in the session's caller, and here for every caller) stands in.
    if !super::same_origin(&headers) {
        return Err(ApiError::Forbidden(
            "cross-site terminal refused".into(),
            Vec::new(),
        ));
    }
    let caller = Caller::from_headers(&st, &Method::GET, &headers).await?;
    let q = axum::extract::Query::<TerminalQuery>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
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
    // Over this replica's agent connection, or the replica that holds it.
    use super::super::connect::{open_duplex, OpenError};
    let end = match open_duplex(&st, &ns, &name, uid, StreamTarget::Ssh, &caller.0).await {
        Ok(near) => near,
        Err(OpenError::NotConnected) => {
            return Err(ApiError::Unavailable(format!(
                "workspaces/{name}: its agent is not connected (start the workspace, or see `berth describe ws {name}`)"
            )))
        }
        Err(OpenError::Failed(e)) => {
            return Err(ApiError::Unavailable(format!("workspaces/{name}: {e}")))
        }
        Err(OpenError::Api(e)) => return Err(e),
    };
    let initial = q
        .cols
        .zip(q.rows)
        .and_then(|(c, r)| size(c, r))
        .unwrap_or((80, 24));
    let user = caller.0.user.clone();
    Ok(ws
        .on_upgrade(move |socket| async move {
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
                    &format!("{user} opened a web terminal"),
                    "dashboard",
                )
                .await;
            let began = Instant::now();
            let activity = {
                let (st, ns, name) = (st.clone(), ns.clone(), name.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(ACTIVITY_EVERY);
                    loop {
                        tick.tick().await;
                        if let Err(e) =
                            super::super::activity::record(&st, uid, &ns, &name, "terminal").await
                        {
                            tracing::warn!(workspace = %format!("{ns}/{name}"), error = %e, "cannot record activity");
                        }
                    }
                })
            };
            let how = match bridge(socket, end, initial, &user).await {
                Ok(code) => format!("the shell exited with {code}"),
                Err(e) => e,
            };
            activity.abort();
            let _ = st
                .store
                .event_record(
                    &involved,
                    EventType::Normal,
                    "Disconnected",
                    &format!(
                        "{user} closed a web terminal after {}s: {how}",
                        began.elapsed().as_secs()
                    ),
                    "dashboard",
                )
                .await;
        })
        .into_response())
}

/// Runs the SSH session over `ssh_side` (a stream to the agent's SSH
/// server), its pty's bytes to and from `socket`.
async fn bridge(
    socket: WebSocket,
    ssh_side: tokio::io::DuplexStream,
    initial: (u32, u32),
    user: &str,
) -> Result<i32, String> {
    let (mut stdin_w, stdin_r) = tokio::io::duplex(64 * 1024);
    let (stdout_w, mut stdout_r) = tokio::io::duplex(64 * 1024);
    let (resize_tx, resize_rx) = tokio::sync::mpsc::channel(16);
    let opts = crate::ssh::ClientOptions {
        user: user.to_string(),
        command: None,
        pty: true,
        term: "xterm-256color".into(),
        local_tty: false,
        env: Vec::new(),
        io: crate::ssh::ClientIo {
            stdin: Box::new(stdin_r),
            // A pty merges stderr into stdout; anything else still reaches the page.
            stderr: Box::new(tokio::io::sink()),
            stdout: Box::new(stdout_w),
        },
    };
    let mut session = tokio::spawn(crate::ssh::run_client_sized(
        ssh_side,
        opts,
        Some(crate::ssh::WindowSizes {
            initial,
            changes: resize_rx,
        }),
    ));
    let (mut sink, mut stream) = socket.split();
    let output = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdout_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    let input = async {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                // Input is written in the guard; a failed write ends the input.
                Message::Binary(b) if stdin_w.write_all(&b).await.is_err() => break,
                Message::Text(t) => match serde_json::from_str::<Control>(t.as_str()) {
                    Ok(Control::Resize { cols, rows }) => {
                        if let Some(s) = size(cols, rows) {
                            let _ = resize_tx.try_send(s);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "web terminal: ignored a text message"),
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    // The output ends when the shell does; the input when the page goes.
    tokio::select! {
        _ = output => {}
        _ = input => {}
    }
    drop(stdin_w);
    let result = match tokio::time::timeout(Duration::from_secs(5), &mut session).await {
        Ok(Ok(Ok(code))) => Ok(code),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            session.abort();
            Err("the page went away".to_string())
        }
    };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resize_message_parses_and_sizes_out_of_range_are_ignored() {
        let Control::Resize { cols, rows } =
            serde_json::from_str(r#"{"type":"resize","cols":120,"rows":40}"#).unwrap();
        assert_eq!(size(cols, rows), Some((120, 40)));
        assert_eq!(size(0, 40), None);
        assert_eq!(size(120, 100_000), None);
        assert!(serde_json::from_str::<Control>(r#"{"type":"paste"}"#).is_err());
    }
}
