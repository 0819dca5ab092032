//! Relayed byte streams: a client (`berth ssh`, `berth port-forward`, an
//! app request) reaches a port or the SSH server inside a workspace through
//! the operator, over the agent's one outbound connection, so the task needs
//! no inbound port.
//!
//! # Multiplexing
//! Many streams share the agent's WebSocket. Control goes in text frames
//! ([`StreamControl`]: open, opened, window, eof, reset); data in binary
//! frames, a 4-byte big-endian stream id and then the bytes (at most
//! [`MAX_CHUNK`]). Each direction of each stream has a window: a side
//! sends at most [`WINDOW`] bytes the other has not credited back with
//! `Window`, and the receiver credits what it has written on. So one bulk
//! transfer has at most a window in flight ahead of an interactive shell's
//! keystrokes, and a slow reader slows only its own stream; a side that
//! sends beyond its window breaks the protocol and its stream is reset.
//!
//! [`Mux`] is one connection's table of streams (the same code on the
//! operator's and the agent's side); [`pump`] joins one stream to anything
//! that reads and writes bytes (a TCP connection, an in-process SSH server,
//! a client's WebSocket through [`ws`]).

pub mod ws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::agent::protocol::{StreamControl, StreamTarget};

/// Bytes a side may send on a stream before the other credits them back.
pub const WINDOW: u32 = 256 * 1024;
/// Largest data frame payload.
pub const MAX_CHUNK: usize = 32 * 1024;
/// Streams one connection carries at most (so what is queued toward one
/// agent is bounded by this many windows).
pub const MAX_STREAMS: usize = 256;
/// How long an open waits for the agent's answer.
pub const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// A binary data frame: the stream id, then the bytes.
pub fn data_frame(id: u32, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + data.len());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(data);
    f
}

/// The stream id and bytes of a binary frame (`None` if shorter than an id).
pub fn parse_frame(frame: &[u8]) -> Option<(u32, &[u8])> {
    let id = u32::from_be_bytes(frame.get(..4)?.try_into().ok()?);
    Some((id, &frame[4..]))
}

/// What a [`Mux`] needs sent on its connection.
#[derive(Debug)]
pub enum Out {
    /// A control message (a text frame).
    Control(StreamControl),
    /// Data of a stream (a binary frame).
    Data(u32, Vec<u8>),
}

/// What reaches a stream's local end.
#[derive(Debug)]
enum In {
    Data(Vec<u8>),
    Eof,
    Reset(String),
}

/// Why a stream could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The other side refused or reset it.
    #[error("{0}")]
    Reset(String),
    /// The connection carrying it is gone.
    #[error("the connection to the workspace's agent is gone")]
    Gone,
}

struct Slot {
    tx: mpsc::UnboundedSender<In>,
    /// What we may still send.
    credit: Arc<Semaphore>,
    /// Bytes we sent that the other side has not credited back: a `Window`
    /// beyond it is a lie (it would let us queue without bound).
    in_flight: Arc<AtomicU64>,
    /// Bytes received and not credited back yet.
    owed: Arc<AtomicU64>,
    /// The other side sent its EOF: no data may follow.
    eof: bool,
    /// Told when the stream is reset (its pump may be waiting on its local end).
    reset: Arc<tokio::sync::Notify>,
    /// For a stream we opened: told when the other side answers.
    opened: Option<oneshot::Sender<Result<(), String>>>,
}

/// The streams of one connection.
pub struct Mux {
    out: mpsc::UnboundedSender<Out>,
    streams: Mutex<HashMap<u32, Slot>>,
    next_id: AtomicU32,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux").field("streams", &self.len()).finish()
    }
}

/// The local end of one stream: hand it to [`pump`].
#[derive(Debug)]
pub struct StreamEnd {
    id: u32,
    mux: Arc<Mux>,
    rx: mpsc::UnboundedReceiver<In>,
    credit: Arc<Semaphore>,
    in_flight: Arc<AtomicU64>,
    owed: Arc<AtomicU64>,
    reset: Arc<tokio::sync::Notify>,
    /// Both directions closed cleanly: nothing to reset.
    done: bool,
}

impl StreamEnd {
    /// The stream's id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for StreamEnd {
    /// An end dropped before its stream closed cleanly (never pumped, or
    /// failed) resets it, so the other side lets go too.
    fn drop(&mut self) {
        if !self.done {
            let _ = self.mux.out.send(Out::Control(StreamControl::Reset {
                id: self.id,
                message: "closed".into(),
            }));
        }
        self.mux.remove(self.id);
    }
}

impl Mux {
    /// A mux and the receiver of what it needs sent.
    pub fn new() -> (Arc<Mux>, mpsc::UnboundedReceiver<Out>) {
        let (out, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Mux {
                out,
                streams: Mutex::new(HashMap::new()),
                next_id: AtomicU32::new(1),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
            rx,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Slot>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(
        self: &Arc<Self>,
        id: u32,
        opened: Option<oneshot::Sender<Result<(), String>>>,
    ) -> StreamEnd {
        let (tx, rx) = mpsc::unbounded_channel();
        let credit = Arc::new(Semaphore::new(WINDOW as usize));
        let in_flight = Arc::new(AtomicU64::new(0));
        let owed = Arc::new(AtomicU64::new(0));
        let reset = Arc::new(tokio::sync::Notify::new());
        {
            let mut streams = self.lock();
            if self.closed.load(Ordering::Relaxed) {
                // The connection is gone: the stream is born dead.
                credit.close();
                let _ = tx.send(In::Reset("the agent's connection closed".into()));
            } else {
                streams.insert(
                    id,
                    Slot {
                        tx,
                        credit: credit.clone(),
                        in_flight: in_flight.clone(),
                        owed: owed.clone(),
                        eof: false,
                        reset: reset.clone(),
                        opened,
                    },
                );
            }
        }
        StreamEnd {
            id,
            mux: self.clone(),
            rx,
            credit,
            in_flight,
            owed,
            reset,
            done: false,
        }
    }

    /// Opens a stream to `target` on the other side (the operator's side
    /// does this) and waits (at most [`OPEN_TIMEOUT`]) for it to be
    /// connected. At most [`MAX_STREAMS`] are open at once.
    pub async fn open(self: &Arc<Self>, target: StreamTarget) -> Result<StreamEnd, StreamError> {
        if self.len() >= MAX_STREAMS {
            return Err(StreamError::Reset(format!(
                "the workspace has {MAX_STREAMS} streams open already"
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let end = self.insert(id, Some(tx));
        if self
            .out
            .send(Out::Control(StreamControl::Open { id, target }))
            .is_err()
        {
            self.remove(id);
            return Err(StreamError::Gone);
        }
        match tokio::time::timeout(OPEN_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(end),
            Ok(Ok(Err(why))) => {
                self.remove(id);
                Err(StreamError::Reset(why))
            }
            Ok(Err(_)) => Err(StreamError::Gone),
            // `end` is dropped: it resets the stream.
            Err(_) => Err(StreamError::Reset(format!(
                "the agent did not answer within {}s",
                OPEN_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Accepts a stream the other side opened (the agent's side does this,
    /// once it reached the target) and says so.
    pub fn accept(self: &Arc<Self>, id: u32) -> StreamEnd {
        let end = self.insert(id, None);
        let _ = self.out.send(Out::Control(StreamControl::Opened { id }));
        end
    }

    /// Refuses a stream the other side opened.
    pub fn refuse(&self, id: u32, why: &str) {
        let _ = self.out.send(Out::Control(StreamControl::Reset {
            id,
            message: why.to_string(),
        }));
    }

    fn remove(&self, id: u32) {
        self.lock().remove(&id);
    }

    /// A data frame arrived. Data beyond the window the sender was granted
    /// (or for a stream that is not open) resets that stream.
    pub fn on_data(&self, id: u32, data: &[u8]) {
        let mut streams = self.lock();
        let Some(slot) = streams.get(&id) else {
            return;
        };
        let owed = slot.owed.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
        let why = if data.is_empty() {
            Some("an empty data frame")
        } else if slot.eof {
            Some("data after its EOF")
        } else if owed > u64::from(WINDOW) || data.len() > MAX_CHUNK {
            Some("data beyond its window")
        } else {
            None
        };
        if let Some(why) = why {
            let _ = slot
                .tx
                .send(In::Reset(format!("the other side sent {why}")));
            slot.credit.close();
            slot.reset.notify_one();
            streams.remove(&id);
            drop(streams);
            let _ = self.out.send(Out::Control(StreamControl::Reset {
                id,
                message: format!("protocol: {why}"),
            }));
            return;
        }
        let _ = slot.tx.send(In::Data(data.to_vec()));
    }

    /// A control message for a stream arrived (`Open` is the caller's to
    /// handle: only the agent's side accepts it).
    pub fn on_control(&self, c: StreamControl) {
        let mut streams = self.lock();
        match c {
            StreamControl::Open { .. } => {}
            StreamControl::Opened { id } => {
                if let Some(tx) = streams.get_mut(&id).and_then(|s| s.opened.take()) {
                    let _ = tx.send(Ok(()));
                }
            }
            StreamControl::Window { id, bytes } => {
                let Some(s) = streams.get(&id) else { return };
                // Credit for bytes never sent would let us queue without bound.
                let sent = s.in_flight.load(Ordering::Relaxed);
                if u64::from(bytes) > sent {
                    s.credit.close();
                    s.reset.notify_one();
                    let _ =
                        s.tx.send(In::Reset("the other side credited bytes never sent".into()));
                    streams.remove(&id);
                    drop(streams);
                    let _ = self.out.send(Out::Control(StreamControl::Reset {
                        id,
                        message: "protocol: window credit beyond what was sent".into(),
                    }));
                    return;
                }
                s.in_flight.fetch_sub(u64::from(bytes), Ordering::Relaxed);
                s.credit.add_permits(bytes as usize);
            }
            StreamControl::Eof { id } => {
                if let Some(s) = streams.get_mut(&id) {
                    if !s.eof {
                        s.eof = true;
                        let _ = s.tx.send(In::Eof);
                    }
                }
            }
            StreamControl::Reset { id, message } => {
                if let Some(mut s) = streams.remove(&id) {
                    s.credit.close();
                    s.reset.notify_one();
                    match s.opened.take() {
                        Some(tx) => {
                            let _ = tx.send(Err(message));
                        }
                        None => {
                            let _ = s.tx.send(In::Reset(message));
                        }
                    }
                }
            }
        }
    }

    /// The connection is gone: every stream ends, and none opens any more.
    pub fn close_all(&self) {
        let mut streams = self.lock();
        self.closed.store(true, Ordering::Relaxed);
        for (_, s) in streams.drain() {
            s.credit.close();
            s.reset.notify_one();
            let _ = s.tx.send(In::Reset("the agent's connection closed".into()));
        }
    }
}

/// Bytes moved by one [`pump`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// From the local end into the stream.
    pub sent: u64,
    /// From the stream to the local end.
    pub received: u64,
}

/// Joins `end` to `io` until both directions are closed (or the stream is
/// reset, or `io` fails): bytes read from `io` go out within the window,
/// bytes arriving are written to `io` and credited back once written.
pub async fn pump<IO>(mut end: StreamEnd, io: IO) -> Result<Moved, StreamError>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let id = end.id;
    let (credit, owed, out) = (end.credit.clone(), end.owed.clone(), end.mux.out.clone());
    let in_flight = end.in_flight.clone();
    let rx = &mut end.rx;
    let (mut r, mut w) = tokio::io::split(io);
    let up = async {
        let mut buf = vec![0u8; MAX_CHUNK];
        let mut sent = 0u64;
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) => {
                    let _ = out.send(Out::Control(StreamControl::Eof { id }));
                    return Ok(sent);
                }
                Ok(n) => n,
                Err(e) => return Err(StreamError::Reset(format!("read: {e}"))),
            };
            match credit.acquire_many(n as u32).await {
                Ok(p) => p.forget(),
                Err(_) => return Err(StreamError::Gone),
            }
            in_flight.fetch_add(n as u64, Ordering::Relaxed);
            if out.send(Out::Data(id, buf[..n].to_vec())).is_err() {
                return Err(StreamError::Gone);
            }
            sent += n as u64;
        }
    };
    let down = async {
        let mut received = 0u64;
        while let Some(m) = rx.recv().await {
            match m {
                In::Data(d) => {
                    if let Err(e) = w.write_all(&d).await {
                        return Err(StreamError::Reset(format!("write: {e}")));
                    }
                    received += d.len() as u64;
                    owed.fetch_sub(d.len() as u64, Ordering::Relaxed);
                    let _ = out.send(Out::Control(StreamControl::Window {
                        id,
                        bytes: d.len() as u32,
                    }));
                }
                In::Eof => {
                    let _ = w.flush().await;
                    let _ = w.shutdown().await;
                    return Ok(received);
                }
                In::Reset(why) => return Err(StreamError::Reset(why)),
            }
        }
        Err(StreamError::Gone)
    };
    tokio::pin!(up, down);
    let reset = end.reset.clone();
    let reset_ = reset.clone();
    let was_reset = || async move {
        reset_.notified().await;
        Err::<u64, _>(StreamError::Reset("reset by the other side".into()))
    };
    // Either direction failing (or a reset) ends both; a clean EOF waits
    // for the other direction.
    let result = tokio::select! {
        u = &mut up => match u {
            Ok(sent) => tokio::select! {
                d = &mut down => d.map(|received| Moved { sent, received }),
                r = was_reset() => r.map(|_| Moved::default()),
            },
            Err(e) => Err(e),
        },
        d = &mut down => match d {
            Ok(received) => tokio::select! {
                u = &mut up => u.map(|sent| Moved { sent, received }),
                r = was_reset() => r.map(|_| Moved::default()),
            },
            Err(e) => Err(e),
        },
    };
    drop(reset);
    match &result {
        Ok(_) => end.done = true,
        Err(StreamError::Gone) => {}
        Err(e) => {
            let _ = end.mux.out.send(Out::Control(StreamControl::Reset {
                id,
                message: e.to_string(),
            }));
            end.done = true;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two muxes wired to each other, as the operator and the agent are.
    fn wired() -> (Arc<Mux>, Arc<Mux>, tokio::task::JoinSet<()>) {
        let (a, mut a_out) = Mux::new();
        let (b, mut b_out) = Mux::new();
        let mut tasks = tokio::task::JoinSet::new();
        let deliver = |to: Arc<Mux>, from_open: bool| {
            move |o: Out| match o {
                Out::Data(id, d) => to.on_data(id, &d),
                Out::Control(StreamControl::Open { id, .. }) if from_open => {
                    let end = to.accept(id);
                    // Echo server on the agent's side.
                    tokio::spawn(async move {
                        let (x, y) = tokio::io::duplex(64 * 1024);
                        let (mut r, mut w) = tokio::io::split(y);
                        tokio::spawn(async move {
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            let _ = w.shutdown().await;
                        });
                        let _ = pump(end, x).await;
                    });
                }
                Out::Control(c) => to.on_control(c),
            }
        };
        let to_b = deliver(b.clone(), true);
        let to_a = deliver(a.clone(), false);
        tasks.spawn(async move {
            while let Some(o) = a_out.recv().await {
                to_b(o);
            }
        });
        tasks.spawn(async move {
            while let Some(o) = b_out.recv().await {
                to_a(o);
            }
        });
        (a, b, tasks)
    }

    #[tokio::test]
    async fn bytes_round_trip_through_an_echo_with_windows_and_eof() {
        let (a, _b, _tasks) = wired();
        let end = a.open(StreamTarget::Ssh).await.unwrap();
        let (client, far) = tokio::io::duplex(64 * 1024);
        let pumping = tokio::spawn(pump(end, far));
        let (mut r, mut w) = tokio::io::split(client);
        // Ten windows' worth: only credits let it through.
        let data: Vec<u8> = (0..(10 * WINDOW as usize))
            .map(|i| (i % 251) as u8)
            .collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "the bytes come back identical");
        let moved = pumping.await.unwrap().unwrap();
        assert_eq!(moved.sent, data.len() as u64);
        assert_eq!(moved.received, data.len() as u64);
        assert!(a.is_empty(), "a finished stream is removed");
    }

    #[tokio::test]
    async fn a_sender_beyond_its_window_gets_its_stream_reset() {
        let (a, mut out) = Mux::new();
        let end = a.accept(7);
        assert!(matches!(
            out.recv().await,
            Some(Out::Control(StreamControl::Opened { id: 7 }))
        ));
        for _ in 0..(WINDOW as usize / MAX_CHUNK) {
            a.on_data(7, &[0u8; MAX_CHUNK]);
        }
        assert_eq!(a.len(), 1, "a full window is allowed");
        a.on_data(7, &[0u8; 1]);
        assert!(a.is_empty(), "one byte more resets the stream");
        assert!(matches!(
            out.recv().await,
            Some(Out::Control(StreamControl::Reset { id: 7, .. }))
        ));
        drop(end);
    }

    #[tokio::test]
    async fn a_refused_open_says_why_and_a_closed_connection_ends_every_stream() {
        let (a, mut out) = Mux::new();
        let opening = {
            let a = a.clone();
            tokio::spawn(async move { a.open(StreamTarget::Tcp { port: 9 }).await })
        };
        let Some(Out::Control(StreamControl::Open { id, .. })) = out.recv().await else {
            panic!("expected an open")
        };
        a.on_control(StreamControl::Reset {
            id,
            message: "connection refused".into(),
        });
        assert_eq!(
            opening.await.unwrap().unwrap_err(),
            StreamError::Reset("connection refused".into())
        );
        let end = a.accept(42);
        let (x, _y) = tokio::io::duplex(1024);
        let p = tokio::spawn(pump(end, x));
        a.close_all();
        assert!(p.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn credit_for_bytes_never_sent_an_empty_frame_and_data_after_eof_reset_the_stream() {
        // A window credit beyond what was sent would let the operator queue without bound.
        let (a, mut out) = Mux::new();
        let _end = a.accept(1);
        let _ = out.recv().await;
        a.on_control(StreamControl::Window {
            id: 1,
            bytes: 1 << 30,
        });
        assert!(a.is_empty(), "a lying window resets the stream");
        assert!(matches!(
            out.recv().await,
            Some(Out::Control(StreamControl::Reset { id: 1, .. }))
        ));
        let _e2 = a.accept(2);
        let _ = out.recv().await;
        a.on_data(2, &[]);
        assert!(a.is_empty(), "an empty data frame resets the stream");
        let _e3 = a.accept(3);
        let _ = out.recv().await;
        a.on_control(StreamControl::Eof { id: 3 });
        a.on_control(StreamControl::Eof { id: 3 });
        a.on_data(3, b"late");
        assert!(a.is_empty(), "data after EOF resets the stream");
    }

    #[tokio::test]
    async fn a_reset_after_the_peers_eof_ends_the_pump_and_a_closed_mux_opens_nothing() {
        let (a, mut out) = Mux::new();
        let end = a.accept(5);
        let _ = out.recv().await;
        // The local end never closes: only the reset can end the pump.
        let (near, _keep) = tokio::io::duplex(1024);
        let p = tokio::spawn(pump(end, near));
        a.on_control(StreamControl::Eof { id: 5 });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        a.on_control(StreamControl::Reset {
            id: 5,
            message: "gone".into(),
        });
        let r = tokio::time::timeout(std::time::Duration::from_secs(2), p)
            .await
            .expect("the pump ends on the reset");
        assert!(r.unwrap().is_err());
        a.close_all();
        let late = a.accept(6);
        assert!(a.is_empty(), "nothing registers on a closed connection");
        let (x, _y) = tokio::io::duplex(64);
        assert!(pump(late, x).await.is_err());
    }

    #[test]
    fn frames_carry_the_stream_id_first() {
        let f = data_frame(0x0102_0304, b"hi");
        assert_eq!(f, [1, 2, 3, 4, b'h', b'i']);
        assert_eq!(parse_frame(&f), Some((0x0102_0304, &b"hi"[..])));
        assert_eq!(parse_frame(&[1, 2]), None);
    }
}
