//! Reports of use from inside the workspace: a Unix socket in the agent's
//! private directory, its path exported to children as
//! `BERTH_AGENT_SOCKET`.
//!
//! The protocol is one line per connection: the client writes the kind
//! (`ssh`, `vscode`, `app`, `terminal`, `port-forward` or `manual`) and a
//! newline; the agent answers `ok` or `error: …` and forwards
//! [`AgentMessage::Activity`](super::protocol::AgentMessage::Activity). The
//! directory is mode 0700, so only the workspace's user can reach it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::protocol::ActivityKind;
use super::state::Shared;

/// The environment variable naming the socket, for processes the agent starts.
pub const SOCKET_ENV: &str = "BERTH_AGENT_SOCKET";
/// The socket's file name in the agent directory.
pub const SOCKET_NAME: &str = "agent.sock";
/// How long a client has to send its line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

const KINDS: [ActivityKind; 6] = [
    ActivityKind::Ssh,
    ActivityKind::Vscode,
    ActivityKind::App,
    ActivityKind::Terminal,
    ActivityKind::PortForward,
    ActivityKind::Manual,
];

/// The kind named `s` (as [`ActivityKind::as_str`] writes it).
pub fn parse_kind(s: &str) -> Option<ActivityKind> {
    KINDS.into_iter().find(|k| k.as_str() == s.trim())
}

/// Every kind's name.
pub fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.as_str()).collect()
}

/// Why a report could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    /// No such kind.
    #[error("unknown activity kind {0:?} (expected one of: {kinds})", kinds = kind_names().join(", "))]
    UnknownKind(String),
    /// The socket could not be reached.
    #[error("cannot reach the agent at {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The agent refused the report.
    #[error("the agent refused the report: {0}")]
    Refused(String),
}

/// Binds the socket in `dir` (replacing a stale one).
pub fn bind(dir: &Path) -> std::io::Result<(UnixListener, PathBuf)> {
    let path = dir.join(SOCKET_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok((UnixListener::bind(&path)?, path))
}

/// Serves reports until dropped (aborted).
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move { handle(stream, &shared).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "activity socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, shared: &Shared) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r.take(256));
    let read = r.read_line(&mut line);
    let answer = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(_)) => match parse_kind(&line) {
            Some(kind) => {
                tracing::debug!(kind = kind.as_str(), "activity reported");
                shared.activity(kind);
                "ok\n".to_string()
            }
            None => format!(
                "error: {}\n",
                ActivityError::UnknownKind(line.trim().into())
            ),
        },
        Ok(Err(e)) => format!("error: {e}\n"),
        Err(_) => "error: no report within 5 s\n".to_string(),
    };
    let _ = w.write_all(answer.as_bytes()).await;
    let _ = w.shutdown().await;
}

/// Sends one report to the agent listening at `socket`.
pub async fn report(socket: &Path, kind: ActivityKind) -> Result<(), ActivityError> {
    let connect_err = |source| ActivityError::Connect {
        path: socket.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(socket).await.map_err(connect_err)?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("{}\n", kind.as_str()).as_bytes())
        .await
        .map_err(connect_err)?;
    let mut answer = String::new();
    let mut r = BufReader::new(r.take(1024));
    let read = r.read_line(&mut answer);
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(_)) if answer.trim() == "ok" => Ok(()),
        Ok(Ok(_)) => Err(ActivityError::Refused(
            answer.trim().trim_start_matches("error: ").to_string(),
        )),
        Ok(Err(e)) => Err(connect_err(e)),
        Err(_) => Err(ActivityError::Refused("no answer within 5 s".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::AgentMessage;

    #[test]
    fn every_kind_parses_by_the_name_it_is_stored_under() {
        for k in KINDS {
            assert_eq!(parse_kind(k.as_str()), Some(k));
        }
        assert_eq!(
            parse_kind("port-forward\n"),
            Some(ActivityKind::PortForward)
        );
        assert_eq!(parse_kind("telnet"), None);
    }

    #[tokio::test]
    async fn a_report_on_the_socket_is_queued_for_the_operator() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = Arc::new(Shared::new(1024 * 1024));
        let _ = shared.lock().hello();
        let (listener, path) = bind(tmp.path()).expect("bind");
        let server = tokio::spawn(serve(listener, shared.clone()));
        report(&path, ActivityKind::Vscode).await.expect("report");
        let queued: Vec<AgentMessage> = shared.lock().queue.iter().cloned().collect();
        assert_eq!(
            queued,
            vec![AgentMessage::Activity {
                kind: ActivityKind::Vscode
            }]
        );
        server.abort();
        let missing = report(&tmp.path().join("nope.sock"), ActivityKind::Ssh).await;
        assert!(matches!(missing, Err(ActivityError::Connect { .. })));
    }
}
