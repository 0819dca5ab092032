//! The agent's one connection to the operator: a WebSocket it opens and
//! reopens for as long as it runs.
//!
//! # Handshake
//! A plain HTTP/1.1 `GET` of the agent path with the upgrade headers and
//! `Authorization: Bearer <token>`, sent with reqwest (so `https` works
//! with the same TLS as the rest of Berth); a `101` answer's connection
//! becomes a client-side [`WebSocketStream`]. A `401`/`403` means the token
//! is not (or no longer) valid: only a new task brings a new one, so the
//! agent keeps trying, slowly, and says so at most once a minute.
//!
//! # Session
//! `Hello` (the full current state, taken under the state lock so that no
//! change falls between it and the queue), then `Welcome`: on the first one
//! the manifest is taken and handed to the supervisor, which starts the
//! scripts; on every one the log buffers rewind to what the operator
//! stored, and everything after it is resent. Then, until the connection
//! drops: queued changes go out as they happen; log lines go out in batches
//! when a script has a full batch pending or 200 ms after the first pending
//! line (at once during a stop); `LogsAck` drops acknowledged lines; an
//! `Error` or silence for three heartbeats ends the session.
//!
//! # Reconnecting
//! Exponential backoff with jitter (250 ms doubling to 10 s by default),
//! reset after a session that got its `Welcome`. Scripts are never
//! restarted by a reconnect, and no line is lost: lines stay buffered until
//! acknowledged.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::protocol::{
    self, AgentMessage, Lifecycle, Manifest, ServerMessage, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};
use super::state::Shared;

/// How often a refused token (or an unreachable operator) is logged.
const AUTH_WARN_EVERY: Duration = Duration::from_secs(60);
/// How long the operator has to answer `Hello`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// Most log batches taken from the buffers in one go (the rest follow at once).
const BATCHES_PER_ROUND: usize = 8;

/// Timings of the connection (defaults as the protocol suggests; tests
/// shorten them).
#[derive(Clone, Debug)]
pub struct Tuning {
    /// First reconnection delay.
    pub backoff_min: Duration,
    /// Longest reconnection delay (also the delay after a refused token).
    pub backoff_max: Duration,
    /// Silence after which the connection counts as dead.
    pub heartbeat_timeout: Duration,
    /// How long the first pending log line waits for more before a batch goes.
    pub flush_interval: Duration,
    /// Bound of each script's resend buffer, in bytes.
    pub log_cap_bytes: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            heartbeat_timeout: protocol::HEARTBEAT * 3,
            flush_interval: Duration::from_millis(200),
            log_cap_bytes: super::logbuf::DEFAULT_CAP_BYTES,
        }
    }
}

/// Why one connection attempt or session ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The HTTP request failed (DNS, TCP, TLS, …).
    #[error("cannot reach the operator: {}", chain(.0))]
    Http(#[from] reqwest::Error),
    /// The operator refused the agent token.
    #[error("the operator refused the agent token (HTTP {0})")]
    Unauthorized(u16),
    /// The operator answered something other than an upgrade.
    #[error("the operator answered HTTP {status} instead of a WebSocket upgrade: {body}")]
    NotUpgraded {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The operator sent `Error`.
    #[error("the operator closed the connection: {0}")]
    Server(String),
    /// The operator broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Nothing heard for too long.
    #[error("no message from the operator for {0:?}")]
    Silent(Duration),
    /// The operator closed the connection.
    #[error("the operator closed the connection")]
    Closed,
}

/// An error with its causes, `a: b: c` (reqwest keeps the useful part,
/// such as "connection refused", in the sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    /// `{BERTH_API_URL}{agent_path}` (http or https).
    pub url: String,
    /// The agent token (never logged: see the `Debug` impl).
    pub token: String,
    /// How relayed streams reach their targets.
    pub streams: super::streams::Opener,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("streams", &self.streams)
            .finish()
    }
}

/// Exponential backoff with jitter: each delay is drawn from the upper
/// half of `min · 2ⁿ` (capped at `max`).
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays from `min` doubling to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let full = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = full / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter)
    }

    /// Back to the first delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How a session ended without an error.
enum End {
    /// The supervisor asked to close.
    Stopped,
}

/// Keeps the agent connected until `stop` turns true: connects, sends
/// `Hello`, hands the first `Welcome`'s manifest (and what the operator had
/// already stored) to `manifest`, and reports the shared state.
pub async fn run(
    target: Target,
    tuning: Tuning,
    shared: Arc<Shared>,
    manifest: oneshot::Sender<Manifest>,
    mut stop: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("berth-agent/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client; the agent stays disconnected");
            stopped(&mut stop).await;
            return;
        }
    };
    let mut manifest = Some(manifest);
    let mut backoff = Backoff::new(tuning.backoff_min, tuning.backoff_max);
    let mut last_auth_warn: Option<Instant> = None;
    // Failures to connect are logged at warn once per outage and then once a minute.
    let mut last_fail_warn: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut welcomed = false;
        let r = session(
            &client,
            &target,
            &tuning,
            &shared,
            &mut manifest,
            &mut stop,
            &mut welcomed,
        )
        .await;
        shared.lock().disconnected();
        let delay = match r {
            Ok(End::Stopped) => return,
            Err(ConnError::Unauthorized(code)) => {
                if last_auth_warn.is_none_or(|t| t.elapsed() >= AUTH_WARN_EVERY) {
                    tracing::warn!(
                        status = code,
                        "the operator refuses the agent token; retrying (only a new start brings a new token)"
                    );
                    last_auth_warn = Some(Instant::now());
                }
                tuning.backoff_max
            }
            Err(e) => {
                if welcomed {
                    backoff.reset();
                    last_fail_warn = None;
                    tracing::warn!(error = %e, "connection to the operator lost; reconnecting");
                } else if last_fail_warn.is_none_or(|t| t.elapsed() >= AUTH_WARN_EVERY) {
                    last_fail_warn = Some(Instant::now());
                    tracing::warn!(error = %e, "cannot connect to the operator; retrying");
                } else {
                    tracing::debug!(error = %e, "cannot connect to the operator; retrying");
                }
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

type Ws = WebSocketStream<reqwest::Upgraded>;

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A random `Sec-WebSocket-Key`: 16 random bytes, base64.
pub(crate) fn websocket_key() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    base64(&bytes)
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn connect(client: &reqwest::Client, target: &Target) -> Result<Ws, ConnError> {
    let resp = client
        .get(&target.url)
        .header(reqwest::header::CONNECTION, "Upgrade")
        .header(reqwest::header::UPGRADE, "websocket")
        .header(reqwest::header::SEC_WEBSOCKET_VERSION, "13")
        .header(reqwest::header::SEC_WEBSOCKET_KEY, websocket_key())
        .bearer_auth(&target.token)
        .send()
        .await?;
    let status = resp.status().as_u16();
    match status {
        101 => {}
        401 | 403 => return Err(ConnError::Unauthorized(status)),
        _ => {
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            return Err(ConnError::NotUpgraded { status, body });
        }
    }
    let upgraded = resp.upgrade().await?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    Ok(WebSocketStream::from_raw_socket(upgraded, Role::Client, Some(config)).await)
}

async fn send<S>(ws: &mut S, m: &AgentMessage, limit: Duration) -> Result<(), ConnError>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    send_raw(ws, Message::text(m.encode()), limit).await
}

async fn send_raw<S>(ws: &mut S, m: Message, limit: Duration) -> Result<(), ConnError>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    match tokio::time::timeout(limit, ws.send(m)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ConnError::Silent(limit)),
    }
}

/// What one read of the socket gave.
enum Incoming {
    /// A protocol message.
    Message(ServerMessage),
    /// A relayed stream's data.
    Data(Vec<u8>),
    /// A ping or pong (pings are answered by the library as the stream is read).
    Control,
}

/// The next frame; `Ok(None)` = closed.
async fn recv<S>(ws: &mut S) -> Result<Option<Incoming>, ConnError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    match ws.next().await {
        None | Some(Ok(Message::Close(_))) => Ok(None),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(Message::Text(t))) => ServerMessage::decode(t.as_str())
            .map(|m| Some(Incoming::Message(m)))
            .map_err(|e| ConnError::Protocol(e.to_string())),
        Some(Ok(Message::Binary(b))) => Ok(Some(Incoming::Data(b.to_vec()))),
        Some(Ok(_)) => Ok(Some(Incoming::Control)),
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    client: &reqwest::Client,
    target: &Target,
    tuning: &Tuning,
    shared: &Arc<Shared>,
    manifest_tx: &mut Option<oneshot::Sender<Manifest>>,
    stop: &mut watch::Receiver<bool>,
    welcomed: &mut bool,
) -> Result<End, ConnError> {
    let mut ws = tokio::select! {
        r = connect(client, target) => r?,
        () = stopped(stop) => return Ok(End::Stopped),
    };
    let limit = tuning.heartbeat_timeout;
    let hello = shared.lock().hello();
    send(&mut ws, &hello, limit).await?;
    let welcome = tokio::select! {
        r = tokio::time::timeout(WELCOME_TIMEOUT, async {
            loop {
                match recv(&mut ws).await? {
                    None => return Err(ConnError::Closed),
                    Some(Incoming::Message(ServerMessage::Error { message })) => {
                        return Err(ConnError::Server(message))
                    }
                    Some(Incoming::Message(w @ ServerMessage::Welcome { .. })) => return Ok(w),
                    Some(_) => continue,
                }
            }
        }) => r.map_err(|_| ConnError::Silent(WELCOME_TIMEOUT))??,
        () = stopped(stop) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
            return Ok(End::Stopped);
        }
    };
    let ServerMessage::Welcome {
        protocol: p,
        manifest,
        logs_acked,
    } = welcome
    else {
        return Err(ConnError::Protocol("expected a welcome".into()));
    };
    if p != PROTOCOL_VERSION {
        return Err(ConnError::Protocol(format!(
            "the operator speaks protocol {p}; this agent speaks {PROTOCOL_VERSION}"
        )));
    }
    *welcomed = true;
    if let Some(tx) = manifest_tx.take() {
        if shared.take_manifest(&manifest, &logs_acked) {
            tracing::info!(
                scripts = manifest.scripts.len(),
                template_version = manifest.template_version,
                "manifest received"
            );
            let _ = tx.send(manifest);
        }
    }
    {
        let mut st = shared.lock();
        st.rewind(&logs_acked);
        if let Some(kind) = st.pending_activity.take() {
            st.queue.push_back(AgentMessage::Activity { kind });
        }
    }
    tracing::info!(url = %target.url, "connected to the operator");

    let mut flush_at: Option<Instant> = None;
    // Relayed streams live as long as this connection.
    let (mux, mut mux_out) = crate::relay::Mux::new();
    struct CloseAll(Arc<crate::relay::Mux>);
    impl Drop for CloseAll {
        fn drop(&mut self) {
            self.0.close_all();
        }
    }
    let _close_all = CloseAll(mux.clone());
    // Reading and writing run side by side: a send that waits (a slow
    // operator, a full socket buffer) never stops this side from reading
    // window updates, acks and the operator's own sends.
    let (mut sink, mut stream) = ws.split();
    let writer = async {
        loop {
            // Send what is due.
            let now = Instant::now();
            let (events, batches, pending) = {
                let mut st = shared.lock();
                // A script's final state goes after every line it wrote, so a
                // reader who sees it finished sees its whole output.
                let finishing = st.queue.iter().any(
                    |m| matches!(m, AgentMessage::Script { status } if status.state.finished()),
                );
                let urgent =
                    finishing || matches!(st.lifecycle, Lifecycle::ShuttingDown | Lifecycle::Off);
                let due = urgent || flush_at.is_some_and(|t| t <= now);
                let mut batches = Vec::new();
                while batches.len() < BATCHES_PER_ROUND {
                    match st.next_batch(!due) {
                        Some(b) => batches.push(b),
                        None => break,
                    }
                }
                let more = batches.len() == BATCHES_PER_ROUND;
                // With lines still to send, a final state waits for the next round.
                let events: Vec<AgentMessage> = if finishing && more {
                    Vec::new()
                } else {
                    st.queue.drain(..).collect()
                };
                if due && !more {
                    flush_at = None;
                }
                if more {
                    shared.changed.notify_one();
                }
                (events, batches, st.has_unsent())
            };
            if pending && flush_at.is_none() {
                flush_at = Some(now + tuning.flush_interval);
            }
            for (script, lines, dropped) in batches {
                let m = AgentMessage::Logs {
                    script,
                    lines,
                    dropped,
                };
                send(&mut sink, &m, limit).await?;
            }
            for m in &events {
                send(&mut sink, m, limit).await?;
            }
            tokio::select! {
                _ = shared.changed.notified() => {}
                _ = tokio::time::sleep_until(flush_at.unwrap_or(now)), if flush_at.is_some() => {}
                Some(o) = mux_out.recv() => {
                    let m = match o {
                        crate::relay::Out::Control(control) => Message::text(AgentMessage::Stream { control }.encode()),
                        crate::relay::Out::Data(id, d) => Message::binary(crate::relay::data_frame(id, &d)),
                    };
                    send_raw(&mut sink, m, limit).await?;
                }
                () = stopped(stop) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                    return Ok(End::Stopped);
                }
            }
        }
    };
    let reader = async {
        let mut heard = Instant::now();
        loop {
            let m = tokio::select! {
                _ = tokio::time::sleep_until(heard + limit) => {
                    return Err(ConnError::Silent(heard.elapsed()));
                }
                m = recv(&mut stream) => m,
            };
            heard = Instant::now();
            match m? {
                None => return Err(ConnError::Closed),
                Some(Incoming::Control) => {}
                Some(Incoming::Data(frame)) => match crate::relay::parse_frame(&frame) {
                    Some((id, data)) => mux.on_data(id, data),
                    None => {
                        return Err(ConnError::Protocol(
                            "a binary frame without a stream id".into(),
                        ))
                    }
                },
                Some(Incoming::Message(ServerMessage::Stream {
                    control: crate::agent::protocol::StreamControl::Open { id, target: to },
                })) => {
                    target.streams.open(&mux, id, to);
                }
                Some(Incoming::Message(ServerMessage::Stream { control })) => {
                    mux.on_control(control)
                }
                Some(Incoming::Message(ServerMessage::LogsAck { script, next_seq })) => {
                    shared.lock().ack(&script, next_seq);
                }
                Some(Incoming::Message(ServerMessage::Error { message })) => {
                    return Err(ConnError::Server(message))
                }
                Some(Incoming::Message(ServerMessage::Welcome { .. })) => {
                    tracing::debug!("ignoring a second welcome on one connection");
                }
            }
        }
    };
    tokio::select! {
        r = writer => r,
        r = reader => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_are_base64_of_sixteen_bytes() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let k = websocket_key();
        assert_eq!(k.len(), 24);
        assert!(k.ends_with("=="));
        assert_ne!(k, websocket_key());
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(250), Duration::from_secs(10));
        let mut b = Backoff::new(min, max);
        let first = b.next_delay();
        assert!(first >= min / 2 && first <= min, "{first:?}");
        let later: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(later.iter().all(|d| *d <= max));
        // Capped after six doublings: from then on between max/2 and max.
        assert!(later[6..].iter().all(|d| *d >= max / 2), "{later:?}");
        b.reset();
        assert!(b.next_delay() <= min);
    }

    #[test]
    fn the_token_is_not_in_the_debug_output_of_a_target() {
        let t = Target {
            url: "https://x".into(),
            token: "sekrit".into(),
            streams: Default::default(),
        };
        assert!(!format!("{t:?}").contains("sekrit"));
    }
}
