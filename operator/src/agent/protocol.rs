//! The wire protocol between a workspace agent and the operator: the only
//! thing the agent and the operator share.
//!
//! # Transport
//! One WebSocket per agent, opened by the agent (outbound only) at
//! `GET {BERTH_API_URL}/apis/berth.dev/v1alpha1/namespaces/{ns}/workspaces/{name}/agent`
//! with `Authorization: Bearer <agent token>` (the per-start token; a token
//! of an earlier start is refused with 401 before the upgrade). Every
//! message is one JSON text frame of at most [`MAX_MESSAGE_BYTES`], tagged
//! by `type`, carrying nothing secret except what the operator hands the
//! agent in [`ServerMessage::Welcome`] (nothing today). The operator pings
//! every [`HEARTBEAT`]; the agent answers pongs (the WebSocket library does)
//! and reconnects with backoff when the connection drops.
//!
//! # Expected flow
//! 1. The agent connects and sends [`AgentMessage::Hello`] with the
//!    protocol version, its own version, its lifecycle state and the state
//!    of every script it knows (empty on the first connection).
//! 2. The operator answers [`ServerMessage::Welcome`] with the manifest (the
//!    scripts of the template version that runs, `when` already applied)
//!    and, per script, the next log sequence number it expects
//!    (`logsAcked`). On a first connection the agent starts the scripts
//!    from the manifest; on a reconnection it ignores the manifest's
//!    scripts (they are already running) and resends every log line from
//!    the acknowledged sequence on.
//! 3. The agent sends [`AgentMessage::Script`] on every state change,
//!    [`AgentMessage::Logs`] in batches, [`AgentMessage::Lifecycle`] on every
//!    lifecycle change and [`AgentMessage::Activity`] when someone uses the
//!    workspace.
//! 4. The operator answers each stored batch of logs with
//!    [`ServerMessage::LogsAck`]; the agent drops acknowledged lines from its
//!    resend buffer.
//!
//! # Guarantees
//! - Reconnects resume, never repeat: log lines carry a per-script sequence
//!   number (0, 1, 2, … across stdout and stderr, in the order they were
//!   read), and the operator stores each `(start, script, seq)` once, so a
//!   resent batch is idempotent and a lost one is resent.
//! - Scripts are never restarted by a reconnect: the operator's
//!   manifest is used once per agent process.
//! - Every field has a bound ([`MAX_LOG_LINE_BYTES`], [`MAX_LINES_PER_BATCH`],
//!   [`MAX_SCRIPTS`], [`MAX_NAME_BYTES`]); [`AgentMessage::validate`] checks
//!   them, and the operator closes a connection that sends an invalid
//!   message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of this protocol. The operator refuses a `Hello` with another.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest message either side sends or accepts, in bytes (JSON text).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Longest log line, in bytes; the agent cuts longer lines (at a character
/// boundary) and marks the cut with `…`.
pub const MAX_LOG_LINE_BYTES: usize = 8 * 1024;
/// Most log lines in one [`AgentMessage::Logs`].
pub const MAX_LINES_PER_BATCH: usize = 100;
/// Most scripts in a manifest or a `Hello`.
pub const MAX_SCRIPTS: usize = 64;
/// Longest script name or version string, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// How often the operator pings; an agent not heard of for three of these
/// is considered gone by the replica holding its connection.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);
/// The path, under the API base, of the agent's WebSocket for workspace
/// `{ns}/{name}`.
pub fn agent_path(namespace: &str, name: &str) -> String {
    format!("/apis/berth.dev/v1alpha1/namespaces/{namespace}/workspaces/{name}/agent")
}

/// The agent's lifecycle, as `status.agent.lifecycle` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Lifecycle {
    /// Running the `blocksLogin` scripts.
    Starting,
    /// Every `blocksLogin` script succeeded.
    Ready,
    /// A `blocksLogin` script failed.
    StartError,
    /// SIGTERM received: running the `runOnStop` scripts and stopping the rest.
    ShuttingDown,
    /// The agent finished shutting down.
    Off,
}

impl Lifecycle {
    /// The name as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Starting => "Starting",
            Lifecycle::Ready => "Ready",
            Lifecycle::StartError => "StartError",
            Lifecycle::ShuttingDown => "ShuttingDown",
            Lifecycle::Off => "Off",
        }
    }

    /// Whether the agent may go from `self` to `next`. Staying is allowed.
    /// Starting → Ready | StartError → ShuttingDown → Off, and a stop can
    /// come at any time.
    pub fn may_become(self, next: Lifecycle) -> bool {
        use Lifecycle::*;
        self == next
            || matches!(
                (self, next),
                (Starting, Ready | StartError | ShuttingDown | Off)
                    | (Ready | StartError, ShuttingDown | Off)
                    | (ShuttingDown, Off)
            )
    }
}

/// A script's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ScriptState {
    /// Not started yet.
    Pending,
    /// Running.
    Running,
    /// Exited with status 0.
    Succeeded,
    /// Exited non-zero, was killed, or could not be started.
    Failed,
    /// Not run: the local runtime runs a template's scripts on the host
    /// only when the template allows it (`berth.dev/local-scripts`).
    Skipped,
}

impl ScriptState {
    /// The name as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptState::Pending => "Pending",
            ScriptState::Running => "Running",
            ScriptState::Succeeded => "Succeeded",
            ScriptState::Failed => "Failed",
            ScriptState::Skipped => "Skipped",
        }
    }

    /// Whether the script finished.
    pub fn finished(self) -> bool {
        matches!(
            self,
            ScriptState::Succeeded | ScriptState::Failed | ScriptState::Skipped
        )
    }

    /// Whether a script may go from `self` to `next`: Pending → Running →
    /// Succeeded | Failed, Pending → Failed (could not start) or Skipped. Staying
    /// is allowed; going back is not.
    pub fn may_become(self, next: ScriptState) -> bool {
        use ScriptState::*;
        self == next
            || matches!(
                (self, next),
                (Pending, Running | Failed | Succeeded | Skipped) | (Running, Succeeded | Failed)
            )
    }
}

/// One script of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestScript {
    /// Identifier (unique in the manifest).
    pub name: String,
    /// Label shown to people.
    #[serde(default)]
    pub display_name: String,
    /// The script, run with `/bin/sh -c`-like semantics from a file.
    pub script: String,
    /// Whether logins wait for it: run one after another, in order.
    pub blocks_login: bool,
    /// Run on SIGTERM instead of at start.
    pub run_on_stop: bool,
}

/// What the operator tells an agent to run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Namespace of the workspace.
    pub namespace: String,
    /// Name of the workspace.
    pub workspace: String,
    /// Its owner.
    pub owner: String,
    /// The template version the scripts come from.
    pub template_version: i32,
    /// Scripts in template order (those whose `when` is false are left out).
    pub scripts: Vec<ManifestScript>,
    /// Names of environment variables that carry template secrets: the
    /// agent hands them to scripts only, never to sessions or anything else.
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// The template lets the local runtime (`berth up`) run its scripts on
    /// the host (annotation `berth.dev/local-scripts: "true"`); an agent of
    /// the local runtime skips them otherwise. Agents in containers ignore it.
    #[serde(default)]
    pub host_scripts: bool,
}

/// The state of one script, as the agent reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptStatus {
    /// The script's name.
    pub name: String,
    /// Its state.
    pub state: ScriptState,
    /// Exit code once finished (`None` when killed by a signal or never started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// Which output a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of a script's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Position in the script's output, from 0, without gaps.
    pub seq: u64,
    /// Where it came from.
    pub stream: Stream,
    /// When the agent read it.
    pub at: DateTime<Utc>,
    /// The line, without its newline (at most [`MAX_LOG_LINE_BYTES`]).
    pub text: String,
}

/// What kind of use a report of activity stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityKind {
    /// An SSH session or `berth ssh`.
    Ssh,
    /// VS Code (Desktop over SSH, or Web).
    Vscode,
    /// An app request.
    App,
    /// A web terminal.
    Terminal,
    /// A port-forward.
    PortForward,
    /// Reported by hand (`berth agent activity` inside the workspace).
    Manual,
}

impl ActivityKind {
    /// The name as stored (`lastActivitySource`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Ssh => "ssh",
            ActivityKind::Vscode => "vscode",
            ActivityKind::App => "app",
            ActivityKind::Terminal => "terminal",
            ActivityKind::PortForward => "port-forward",
            ActivityKind::Manual => "manual",
        }
    }
}

/// Agent → operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum AgentMessage {
    /// First message of every connection.
    #[serde(rename_all = "camelCase")]
    Hello {
        /// [`PROTOCOL_VERSION`] of the agent.
        protocol: u32,
        /// The agent's build (`berth --version`).
        agent_version: String,
        /// Its lifecycle now.
        lifecycle: Lifecycle,
        /// Every script it knows, in manifest order (empty before it has a manifest).
        #[serde(default)]
        scripts: Vec<ScriptStatus>,
    },
    /// The agent's lifecycle changed.
    Lifecycle {
        /// The new state.
        state: Lifecycle,
    },
    /// A script's state changed.
    Script {
        /// Its new status.
        status: ScriptStatus,
    },
    /// Output of one script, lines in sequence order.
    #[serde(rename_all = "camelCase")]
    Logs {
        /// The script's name.
        script: String,
        /// The lines (at most [`MAX_LINES_PER_BATCH`]).
        lines: Vec<LogLine>,
        /// Lines the agent had to drop before these (its resend buffer was
        /// full while disconnected); counted into the script's drop count.
        #[serde(default)]
        dropped: u64,
    },
    /// Someone used the workspace.
    Activity {
        /// What kind of use.
        kind: ActivityKind,
    },
    /// A relayed stream's control message (data travels in binary frames,
    /// see [`crate::relay`]).
    Stream {
        /// What happens to the stream.
        control: StreamControl,
    },
}

/// Control of one relayed byte stream between a client and the agent,
/// multiplexed over the agent's connection. Data goes in binary frames
/// (stream id, then bytes); a side sends at most the window the other
/// granted (an initial [`crate::relay::WINDOW`], then `Window` credits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum StreamControl {
    /// Operator → agent: open stream `id` to `target` inside the workspace.
    Open {
        /// The stream (chosen by the operator).
        id: u32,
        /// Where it goes.
        target: StreamTarget,
    },
    /// Agent → operator: stream `id` is connected.
    Opened {
        /// The stream.
        id: u32,
    },
    /// Either way: the sender consumed `bytes` more; that much more may be sent.
    Window {
        /// The stream.
        id: u32,
        /// Bytes granted.
        bytes: u32,
    },
    /// Either way: the sender will send no more data (half close).
    Eof {
        /// The stream.
        id: u32,
    },
    /// Either way: the stream is gone, or could not be opened.
    Reset {
        /// The stream.
        id: u32,
        /// Why (for people).
        message: String,
    },
}

impl StreamControl {
    /// The stream this is about.
    pub fn id(&self) -> u32 {
        match self {
            StreamControl::Open { id, .. }
            | StreamControl::Opened { id }
            | StreamControl::Window { id, .. }
            | StreamControl::Eof { id }
            | StreamControl::Reset { id, .. } => *id,
        }
    }
}

/// Where a relayed stream goes inside the workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum StreamTarget {
    /// The agent's SSH server.
    Ssh,
    /// A TCP port on the workspace's loopback (port-forward, apps).
    Tcp {
        /// The port.
        port: u16,
    },
}

impl StreamTarget {
    /// The activity source this use stands for (`ssh`, `port-forward:8080`).
    pub fn activity_source(&self) -> String {
        match self {
            StreamTarget::Ssh => "ssh".into(),
            StreamTarget::Tcp { port } => format!("port-forward:{port}"),
        }
    }
}

/// Operator → agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ServerMessage {
    /// Answer to `Hello`.
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// [`PROTOCOL_VERSION`] of the operator.
        protocol: u32,
        /// What to run (used on the agent's first connection only).
        manifest: Manifest,
        /// Per script, the next sequence number the operator expects
        /// (everything below is stored). Missing = 0.
        #[serde(default)]
        logs_acked: std::collections::BTreeMap<String, u64>,
    },
    /// Lines of `script` below `next_seq` are stored.
    #[serde(rename_all = "camelCase")]
    LogsAck {
        /// The script.
        script: String,
        /// The next sequence number expected.
        next_seq: u64,
    },
    /// The operator refuses the connection or a message; it closes after this.
    Error {
        /// Why.
        message: String,
    },
    /// A relayed stream's control message.
    Stream {
        /// What happens to the stream.
        control: StreamControl,
    },
}

/// Why a message is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A field exceeds its bound.
    #[error("{field}: {message}")]
    Invalid {
        /// The field path, e.g. `lines[3].text`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Not JSON of a known message.
    #[error("not a protocol message: {0}")]
    Decode(String),
    /// The message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is larger than the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ProtocolError {
    ProtocolError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn check_name(field: &str, s: &str) -> Result<(), ProtocolError> {
    if s.is_empty() || s.len() > MAX_NAME_BYTES {
        return Err(invalid(
            field,
            format!("must be 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn check_status(field: &str, s: &ScriptStatus) -> Result<(), ProtocolError> {
    check_name(&format!("{field}.name"), &s.name)?;
    if let (Some(a), Some(b)) = (s.started_at, s.finished_at) {
        if b < a {
            return Err(invalid(
                format!("{field}.finishedAt"),
                "is before startedAt",
            ));
        }
    }
    if s.finished_at.is_some() && !s.state.finished() {
        return Err(invalid(
            format!("{field}.finishedAt"),
            format!("set on a script that is {}", s.state.as_str()),
        ));
    }
    if s.exit_code.is_some() && !s.state.finished() {
        return Err(invalid(
            format!("{field}.exitCode"),
            format!("set on a script that is {}", s.state.as_str()),
        ));
    }
    Ok(())
}

impl AgentMessage {
    /// Decodes and validates one text frame.
    pub fn decode(text: &str) -> Result<AgentMessage, ProtocolError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(ProtocolError::TooLarge(text.len()));
        }
        let m: AgentMessage =
            serde_json::from_str(text).map_err(|e| ProtocolError::Decode(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Checks every bound of the message (not the state transitions, which
    /// need the previous state: see [`Lifecycle::may_become`] and
    /// [`ScriptState::may_become`]).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        match self {
            AgentMessage::Hello {
                agent_version,
                scripts,
                ..
            } => {
                if agent_version.len() > MAX_NAME_BYTES {
                    return Err(invalid("agentVersion", "too long"));
                }
                if scripts.len() > MAX_SCRIPTS {
                    return Err(invalid(
                        "scripts",
                        format!("more than {MAX_SCRIPTS} scripts"),
                    ));
                }
                for (i, s) in scripts.iter().enumerate() {
                    check_status(&format!("scripts[{i}]"), s)?;
                }
                Ok(())
            }
            AgentMessage::Lifecycle { .. } | AgentMessage::Activity { .. } => Ok(()),
            AgentMessage::Stream { control } => match control {
                StreamControl::Open { .. } => {
                    Err(invalid("control.op", "an agent cannot open streams"))
                }
                StreamControl::Reset { message, .. } if message.len() > 1024 => {
                    Err(invalid("control.message", "longer than 1024 bytes"))
                }
                _ => Ok(()),
            },
            AgentMessage::Script { status } => check_status("status", status),
            AgentMessage::Logs { script, lines, .. } => {
                check_name("script", script)?;
                if lines.len() > MAX_LINES_PER_BATCH {
                    return Err(invalid(
                        "lines",
                        format!("more than {MAX_LINES_PER_BATCH} lines"),
                    ));
                }
                for (i, l) in lines.iter().enumerate() {
                    if l.text.len() > MAX_LOG_LINE_BYTES {
                        return Err(invalid(
                            format!("lines[{i}].text"),
                            format!("longer than {MAX_LOG_LINE_BYTES} bytes"),
                        ));
                    }
                    if i > 0 && l.seq != lines[i - 1].seq.wrapping_add(1) {
                        return Err(invalid(
                            format!("lines[{i}].seq"),
                            "sequence numbers must be consecutive",
                        ));
                    }
                    if l.seq > i64::MAX as u64 {
                        return Err(invalid(format!("lines[{i}].seq"), "too large"));
                    }
                }
                Ok(())
            }
        }
    }

    /// Encodes the message as one text frame.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl ServerMessage {
    /// Decodes one text frame.
    pub fn decode(text: &str) -> Result<ServerMessage, ProtocolError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(ProtocolError::TooLarge(text.len()));
        }
        serde_json::from_str(text).map_err(|e| ProtocolError::Decode(e.to_string()))
    }

    /// Encodes the message as one text frame.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Cuts `line` to at most [`MAX_LOG_LINE_BYTES`] at a character boundary,
/// ending a cut line with `…`.
pub fn clip_line(line: &str) -> String {
    if line.len() <= MAX_LOG_LINE_BYTES {
        return line.to_string();
    }
    let mut end = MAX_LOG_LINE_BYTES - '…'.len_utf8();
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let m = AgentMessage::Logs {
            script: "build".into(),
            lines: vec![LogLine {
                seq: 7,
                stream: Stream::Stderr,
                at: Utc::now(),
                text: "hello".into(),
            }],
            dropped: 0,
        };
        let text = m.encode();
        assert!(text.contains(r#""type":"logs""#), "{text}");
        assert_eq!(AgentMessage::decode(&text).unwrap(), m);
    }

    #[test]
    fn oversized_and_gapped_batches_are_refused_with_the_field() {
        let line = |seq, text: &str| LogLine {
            seq,
            stream: Stream::Stdout,
            at: Utc::now(),
            text: text.into(),
        };
        let gap = AgentMessage::Logs {
            script: "s".into(),
            lines: vec![line(1, "a"), line(3, "b")],
            dropped: 0,
        };
        assert!(
            matches!(gap.validate(), Err(ProtocolError::Invalid { field, .. }) if field == "lines[1].seq")
        );
        let long = AgentMessage::Logs {
            script: "s".into(),
            lines: vec![line(0, &"x".repeat(MAX_LOG_LINE_BYTES + 1))],
            dropped: 0,
        };
        assert!(
            matches!(long.validate(), Err(ProtocolError::Invalid { field, .. }) if field == "lines[0].text")
        );
        assert!(matches!(
            AgentMessage::decode(r#"{"type":"hello","protocol":1}"#),
            Err(ProtocolError::Decode(_))
        ));
    }

    #[test]
    fn states_only_move_forward() {
        assert!(ScriptState::Pending.may_become(ScriptState::Running));
        assert!(!ScriptState::Succeeded.may_become(ScriptState::Running));
        assert!(Lifecycle::Ready.may_become(Lifecycle::ShuttingDown));
        assert!(!Lifecycle::Off.may_become(Lifecycle::Starting));
    }

    #[test]
    fn long_lines_are_clipped_at_a_character_boundary() {
        let s = "é".repeat(MAX_LOG_LINE_BYTES);
        let c = clip_line(&s);
        assert!(c.len() <= MAX_LOG_LINE_BYTES);
        assert!(c.ends_with('…'));
    }
}
