//! `berth bench relay`: throughput and added latency of relayed streams
//! (`berth ssh`, `berth port-forward`), next to local baselines measured in
//! the same run.
//!
//! The server is the API router with the replica heartbeat loop, as
//! `berth operator` runs them, minus the controllers (no cloud), on a fresh
//! database, listening on 127.0.0.1. The agent is a real `berth agent`, run
//! as a child process (its own runtime, as in a workspace, with `HOME` a
//! temporary directory for its SSH host key and `SHELL=/bin/sh`), given a
//! workspace's agent token written through the store. Clients open streams
//! the way `berth ssh` and `berth port-forward` do:
//! [`Client::connect_stream`] (a WebSocket to `…/connect`), relayed over the
//! agent's WebSocket to a TCP echo server on 127.0.0.1 (target `tcp`) or to
//! the agent's SSH server (target `ssh`, with [`crate::ssh::run_client`]
//! running `cat`).
//!
//! # Throughput
//! Each transfer writes N MiB of pseudo-random bytes and reads them back
//! concurrently (an echo, or `cat`), checking that they are identical; its
//! rate is N MiB over the time from the first write to the last byte read.
//! Baselines: an in-memory [`tokio::io::duplex`] echo, OS pipes through a
//! local `cat` child, and a direct TCP connection to the echo server.
//!
//! # Latency
//! Round trips of one byte (write it, read it back) on a direct TCP
//! connection to the echo server and on a relayed stream to it, after a few
//! warm-up ones; the relay's added latency is the difference.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::bench::BenchError;
use crate::cli::client::Client;
use crate::server::agent::AgentHub;
use crate::server::{router, AppState};
use crate::store::{Identity, Store, StoreError};

const NAMESPACE: &str = "bench";
const WORKSPACE: &str = "relay";
/// Round trips done before the measured ones, on each connection.
pub const WARMUP_ROUND_TRIPS: usize = 10;
/// How long the agent may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of `berth bench relay`.
#[derive(Clone, Debug)]
pub struct RelayBench {
    /// MiB per transfer.
    pub mib: usize,
    /// Measured 1-byte round trips per connection.
    pub round_trips: usize,
    /// The `berth` executable run as `berth agent`.
    pub agent_binary: PathBuf,
    /// Set TCP_NODELAY on the API server's accepted connections (`berth
    /// operator` does not: off measures production).
    pub server_nagle: bool,
}

/// One transfer: bytes written and read back.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    /// Bytes read back.
    pub bytes: u64,
    /// From the first write to the last byte read.
    pub elapsed: Duration,
    /// Whether the bytes read back are the bytes written (all of them).
    pub identical: bool,
}

impl Transfer {
    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Round-trip times of one connection.
#[derive(Clone, Debug, Default)]
pub struct RoundTrips {
    /// Each measured round trip, sorted.
    pub samples: Vec<Duration>,
}

impl RoundTrips {
    fn new(mut samples: Vec<Duration>) -> RoundTrips {
        samples.sort();
        RoundTrips { samples }
    }

    /// The `p`th percentile (nearest rank).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.samples.len() as f64).ceil() as usize;
        self.samples[rank.clamp(1, self.samples.len()) - 1]
    }

    /// The mean.
    pub fn mean(&self) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }
}

/// Figures of one run.
#[derive(Clone, Debug)]
pub struct RelayFigures {
    /// The settings.
    pub cfg: RelayBench,
    /// PostgreSQL's version.
    pub server_version: String,
    /// From spawning `berth agent` until the server held its connection.
    pub agent_connect: Duration,
    /// In-memory `tokio::io::duplex` echo.
    pub duplex: Transfer,
    /// OS pipes through a local `cat` child.
    pub pipe_cat: Transfer,
    /// A direct TCP connection to the echo server.
    pub tcp_direct: Transfer,
    /// A relayed stream (target `tcp`) to the echo server.
    pub relay_tcp: Transfer,
    /// `berth ssh -- cat`: an SSH session over a relayed stream (target `ssh`), handshake included.
    pub ssh_cat: Transfer,
    /// `berth ssh -- true`: connect, handshake, run, exit (the fixed cost inside `ssh_cat`).
    pub ssh_setup: Duration,
    /// 1-byte round trips on a direct TCP connection to the echo server.
    pub rtt_direct: RoundTrips,
    /// 1-byte round trips on a relayed stream to the echo server.
    pub rtt_relay: RoundTrips,
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn signed_micros(a: Duration, b: Duration) -> String {
    format!("{:+.0} µs", micros(a) - micros(b))
}

impl RelayFigures {
    /// Whether every transfer came back byte-identical.
    pub fn all_identical(&self) -> bool {
        [
            self.duplex,
            self.pipe_cat,
            self.tcp_direct,
            self.relay_tcp,
            self.ssh_cat,
        ]
        .iter()
        .all(|t| t.identical)
    }

    /// Lines for people.
    pub fn render(&self) -> String {
        let c = &self.cfg;
        let t = |x: &Transfer| {
            format!(
                "{:>8.1} MB/s  {:>7.3} s  {}",
                x.mb_per_s(),
                x.elapsed.as_secs_f64(),
                if x.identical {
                    "identical"
                } else {
                    "BYTES DIFFER"
                }
            )
        };
        let r = |x: &RoundTrips| {
            format!(
                "p50 {:>7.0} µs  p99 {:>7.0} µs  mean {:>7.0} µs",
                micros(x.percentile(50.0)),
                micros(x.percentile(99.0)),
                micros(x.mean())
            )
        };
        let ratio = |x: &Transfer| self.pipe_cat.mb_per_s() / x.mb_per_s().max(1e-9);
        format!(
            "berth bench relay: {} MiB per transfer, {} round trips per connection; API server in this process \
             (router + replica heartbeat, no controllers) on 127.0.0.1, fresh database (PostgreSQL {}); \
             the agent is a child `berth agent` process (HOME = a temporary directory); \
             the server's sockets {}\n  \
             agent connected in         {:.2} s\n  \
             throughput: {} MiB written and read back concurrently (echo or cat), bytes checked; MB/s = 10^6 bytes/s of payload\n    \
             in-memory duplex echo      {}\n    \
             local pipe through `cat`   {}   (OS pipes, child `cat`: the baseline)\n    \
             direct TCP to echo         {}\n    \
             relay, target tcp → echo   {}   ({:.1}× slower than the local pipe)\n    \
             `berth ssh -- cat`         {}   ({:.1}× slower than the local pipe; includes the session's setup: \
             `berth ssh -- true` takes {:.0} ms)\n  \
             latency: 1-byte round trips, {} measured after {} warm-up ones per connection\n    \
             direct TCP to echo         {}\n    \
             relay, target tcp → echo   {}\n    \
             added by the relay         p50 {}  p99 {}  mean {} per round trip\n  \
             (relay path: client WebSocket → API server → the agent's WebSocket → agent → TCP to the echo server, and back; \
             all on this machine, so network latency is not included)\n",
            c.mib,
            c.round_trips,
            self.server_version,
            if c.server_nagle {
                "without TCP_NODELAY (--server-nagle; `berth operator` sets it)"
            } else {
                "with TCP_NODELAY, as `berth operator` serves"
            },
            self.agent_connect.as_secs_f64(),
            c.mib,
            t(&self.duplex),
            t(&self.pipe_cat),
            t(&self.tcp_direct),
            t(&self.relay_tcp),
            ratio(&self.relay_tcp),
            t(&self.ssh_cat),
            ratio(&self.ssh_cat),
            self.ssh_setup.as_secs_f64() * 1e3,
            c.round_trips,
            WARMUP_ROUND_TRIPS,
            r(&self.rtt_direct),
            r(&self.rtt_relay),
            signed_micros(
                self.rtt_relay.percentile(50.0),
                self.rtt_direct.percentile(50.0)
            ),
            signed_micros(
                self.rtt_relay.percentile(99.0),
                self.rtt_direct.percentile(99.0)
            ),
            signed_micros(self.rtt_relay.mean(), self.rtt_direct.mean()),
        )
    }
}

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Request(e.to_string())
}

/// Runs the benchmark on a fresh database created on `database_url`'s server.
pub async fn bench_relay(database_url: &str, cfg: &RelayBench) -> Result<RelayFigures, BenchError> {
    if cfg.mib == 0 || cfg.round_trips == 0 {
        return Err(err("--mib and --round-trips must be more than 0"));
    }
    let dir = std::env::temp_dir().join(format!(
        "berth-bench-relay-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    ));
    std::fs::create_dir_all(dir.join("home"))?;
    let r =
        crate::bench::with_scratch_database(database_url, |url| run(url, dir.clone(), cfg)).await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// N bytes that do not repeat in any short period (xorshift64*).
fn payload(n: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(n);
    Bytes::from(v)
}

/// A TCP server on 127.0.0.1 that echoes each connection until its EOF.
async fn echo_server() -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Ok((addr, task))
}

/// Reads `r` to its end, comparing with `expected` as the bytes arrive.
async fn read_compare<R: AsyncRead + Unpin>(
    r: &mut R,
    expected: &[u8],
) -> std::io::Result<(u64, bool)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0usize;
    let mut same = true;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((pos as u64, same && pos == expected.len()));
        }
        same = same && expected.get(pos..pos + n) == Some(&buf[..n]);
        pos += n;
    }
}

/// Writes `data` into `w` (then EOF) while reading it back from `r`.
async fn transfer<R, W>(mut r: R, mut w: W, data: Bytes) -> Result<Transfer, BenchError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let t = Instant::now();
    let sent = data.clone();
    // Dropped at the end: shutting down a pipe (a child's stdin) does not
    // close it, dropping it does.
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await?;
        w.shutdown().await?;
        drop(w);
        Ok::<_, std::io::Error>(())
    });
    let (bytes, identical) = read_compare(&mut r, &data).await?;
    let elapsed = t.elapsed();
    writer.await.map_err(err)??;
    Ok(Transfer {
        bytes,
        elapsed,
        identical,
    })
}

/// [`transfer`] on one bidirectional stream.
async fn transfer_on<S>(s: S, data: Bytes) -> Result<Transfer, BenchError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(s);
    transfer(r, w, data).await
}

/// `n` measured 1-byte round trips (after the warm-up ones).
async fn round_trips<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    n: usize,
) -> Result<RoundTrips, BenchError> {
    let mut samples = Vec::with_capacity(n);
    let mut b = [0u8; 1];
    for i in 0..WARMUP_ROUND_TRIPS + n {
        let byte = (i % 251) as u8;
        let t = Instant::now();
        s.write_all(&[byte]).await?;
        s.flush().await?;
        s.read_exact(&mut b).await?;
        let took = t.elapsed();
        if b[0] != byte {
            return Err(err(format!(
                "round trip {i}: sent {byte}, got {} back",
                b[0]
            )));
        }
        if i >= WARMUP_ROUND_TRIPS {
            samples.push(took);
        }
    }
    Ok(RoundTrips::new(samples))
}

/// Compares what is written with `expected` (the stdout of `ssh -- cat`).
struct Verify {
    expected: Bytes,
    state: Arc<Mutex<(u64, bool)>>,
}

impl AsyncWrite for Verify {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let pos = s.0 as usize;
        s.1 = s.1 && self.expected.get(pos..pos + buf.len()) == Some(buf);
        s.0 += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `berth ssh WS -- CMD` with `stdin` as its input; returns the exit
/// status and what reached stdout (bytes, identical to `expected`).
async fn ssh(
    client: &Client,
    command: &str,
    stdin: Bytes,
    expected: Bytes,
) -> Result<(i32, u64, bool), BenchError> {
    let stream = client
        .connect_stream(NAMESPACE, WORKSPACE, "ssh", None)
        .await
        .map_err(|e| err(format!("connect ssh: {e:?}")))?;
    let state = Arc::new(Mutex::new((0u64, true)));
    let opts = crate::ssh::ClientOptions {
        user: "bench".into(),
        command: Some(command.into()),
        pty: false,
        term: "dumb".into(),
        local_tty: false,
        env: Vec::new(),
        io: crate::ssh::ClientIo {
            stdin: Box::new(std::io::Cursor::new(stdin)),
            stdout: Box::new(Verify {
                expected: expected.clone(),
                state: state.clone(),
            }),
            stderr: Box::new(tokio::io::sink()),
        },
    };
    let status = crate::ssh::run_client(stream, opts)
        .await
        .map_err(|e| err(format!("ssh -- {command}: {e}")))?;
    let (n, same) = *state.lock().unwrap_or_else(|p| p.into_inner());
    Ok((status, n, same && n == expected.len() as u64))
}

/// The `berth agent` child and its log.
struct Agent {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Agent {
    fn spawn(binary: &Path, dir: &Path, api_url: &str, token: &str) -> Result<Agent, BenchError> {
        let log = dir.join("agent.log");
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(binary)
            .arg("agent")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.join("home"))
            .env("SHELL", "/bin/sh")
            .env(crate::agent::supervisor::API_URL_ENV, api_url)
            .env(crate::agent::supervisor::TOKEN_ENV, token)
            .env(crate::agent::supervisor::NAMESPACE_ENV, NAMESPACE)
            .env(crate::agent::supervisor::WORKSPACE_ENV, WORKSPACE)
            .env(
                crate::agent::supervisor::AGENT_DIR_ENV,
                dir.join("agent-dir"),
            )
            .env(crate::agent::supervisor::STOP_TIMEOUT_ENV, "5")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(format!("cannot run {} agent: {e}", binary.display())))?;
        Ok(Agent { child, log })
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A token shaped like the workspace controller's.
fn agent_token() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("berth_agent_{body}")
}

async fn run(url: String, dir: PathBuf, cfg: &RelayBench) -> Result<RelayFigures, BenchError> {
    let store = Store::connect(&url).await?;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(store.pool())
        .await
        .map_err(StoreError::from)?;

    // A template without scripts, a workspace, its agent token, a user token.
    let who = Identity {
        user: "bench".into(),
        admin: true,
    };
    let template = json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "WorkspaceTemplate",
        "metadata": {"name": "bench", "namespace": NAMESPACE},
        "spec": {
            "infrastructure": {"region": "us-west-2", "cluster": "bench", "subnets": ["subnet-1"], "securityGroups": ["sg-1"],
                "fileSystemId": "fs-bench", "executionRoleArn": "arn:aws:iam::123456789012:role/exec"},
            "container": {"image": "example/dev:1", "homePath": "/home/dev"},
            "resources": {"default": {"cpu": 1024, "memory": 2048}}
        }
    });
    let workspace = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Workspace",
        "metadata": {"name": WORKSPACE, "namespace": NAMESPACE},
        "spec": {"owner": "bench", "template": {"name": "bench"}}});
    crate::apply::apply(&store, &who, &[template, workspace], false)
        .await
        .map_err(|e| err(format!("apply: {e:?}")))?;
    let uid = store
        .object_get(crate::api::Kind::Workspace, NAMESPACE, WORKSPACE)
        .await?
        .and_then(|o| o.metadata.uid)
        .ok_or_else(|| err(format!("workspaces/{WORKSPACE}: no uid")))?;
    let token = agent_token();
    store.agent_token_set(uid, &token).await?;
    let user_token = store
        .token_create("bench", true, "berth bench relay")
        .await?;

    // The server: the API and the replica heartbeat, as `berth operator` runs them.
    let hub = Arc::new(AgentHub::default());
    let mut state = AppState::new(store.clone());
    state.agents = hub.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    store.replica_heartbeat(&hub.replica, &base).await?;
    let replica = tokio::spawn(crate::server::replica_heartbeat(
        store.clone(),
        hub.replica.clone(),
        base.clone(),
    ));
    let app = router(state);
    let server = if !cfg.server_nagle {
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await })
    } else {
        tokio::spawn(async move { axum::serve(listener, app).await })
    };
    let (echo, echo_task) = echo_server().await?;

    let t = Instant::now();
    let agent = Agent::spawn(&cfg.agent_binary, &dir, &base, &token)?;
    let result = async {
        let mut agent = agent;
        let connected = async {
            while !hub.holds(uid) {
                if let Some(status) = agent.child.try_wait()? {
                    return Err(err(format!(
                        "`berth agent` exited ({status}) before connecting:\n{}",
                        agent.log_tail()
                    )));
                }
                if t.elapsed() > CONNECT_TIMEOUT {
                    return Err(err(format!(
                        "`berth agent` did not connect within {CONNECT_TIMEOUT:?}:\n{}",
                        agent.log_tail()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(t.elapsed())
        }
        .await;
        let figures = match connected {
            Ok(agent_connect) => measure(
                cfg,
                &base,
                &user_token,
                echo,
                agent_connect,
                &server_version,
            )
            .await
            .map_err(|e| err(format!("{e}\n`berth agent`'s log:\n{}", agent.log_tail()))),
            Err(e) => Err(e),
        };
        agent.stop().await;
        figures
    }
    .await;
    echo_task.abort();
    server.abort();
    replica.abort();
    store.pool().close().await;
    result
}

async fn measure(
    cfg: &RelayBench,
    base: &str,
    user_token: &str,
    echo: std::net::SocketAddr,
    agent_connect: Duration,
    server_version: &str,
) -> Result<RelayFigures, BenchError> {
    let data = payload(cfg.mib * 1024 * 1024);
    let client =
        Client::new(base, Some(user_token.to_string())).map_err(|e| err(format!("{e:?}")))?;
    let relayed = || async {
        client
            .connect_stream(NAMESPACE, WORKSPACE, "tcp", Some(echo.port()))
            .await
            .map_err(|e| err(format!("connect tcp:{}: {e:?}", echo.port())))
    };

    // Baselines.
    tracing::debug!("duplex");
    let duplex = {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let echo = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(far);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
        let t = transfer_on(near, data.clone()).await?;
        let _ = echo.await;
        t
    };
    tracing::debug!("pipe_cat");
    let pipe_cat = {
        let mut cat = tokio::process::Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(format!("cannot run cat: {e}")))?;
        let (Some(stdin), Some(stdout)) = (cat.stdin.take(), cat.stdout.take()) else {
            return Err(err("cat: no pipes"));
        };
        let t = transfer(stdout, stdin, data.clone()).await?;
        let _ = cat.wait().await;
        t
    };
    tracing::debug!("tcp_direct");
    let tcp_direct = {
        let tcp = tokio::net::TcpStream::connect(echo).await?;
        tcp.set_nodelay(true)?;
        transfer_on(tcp, data.clone()).await?
    };

    // Through the relay.
    tracing::debug!("relay_tcp");
    let relay_tcp = transfer_on(relayed().await?, data.clone()).await?;
    // `ssh -- true` first: the session's fixed cost (and the agent has its
    // manifest, which its SSH server waits for, by now).
    tracing::debug!("ssh -- true");
    let t = Instant::now();
    let (status, _, _) = ssh(&client, "true", Bytes::new(), Bytes::new()).await?;
    let ssh_setup = t.elapsed();
    if status != 0 {
        return Err(err(format!("ssh -- true exited {status}")));
    }
    tracing::debug!("ssh -- cat");
    let t = Instant::now();
    let (status, bytes, identical) = ssh(&client, "cat", data.clone(), data.clone()).await?;
    let ssh_cat = Transfer {
        bytes,
        elapsed: t.elapsed(),
        identical,
    };
    if status != 0 {
        return Err(err(format!("ssh -- cat exited {status}")));
    }

    // Latency.
    tracing::debug!("rtt_direct");
    let rtt_direct = {
        let mut tcp = tokio::net::TcpStream::connect(echo).await?;
        tcp.set_nodelay(true)?;
        round_trips(&mut tcp, cfg.round_trips).await?
    };
    tracing::debug!("rtt_relay");
    let rtt_relay = {
        let mut s = relayed().await?;
        round_trips(&mut s, cfg.round_trips).await?
    };

    Ok(RelayFigures {
        cfg: cfg.clone(),
        server_version: server_version.to_string(),
        agent_connect,
        duplex,
        pipe_cat,
        tcp_direct,
        relay_tcp,
        ssh_cat,
        ssh_setup,
        rtt_direct,
        rtt_relay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let r = RoundTrips::new((1..=100).rev().map(Duration::from_micros).collect());
        assert_eq!(r.percentile(50.0), Duration::from_micros(50));
        assert_eq!(r.percentile(99.0), Duration::from_micros(99));
        assert_eq!(r.percentile(100.0), Duration::from_micros(100));
        assert_eq!(r.mean(), Duration::from_nanos(50_500));
        assert_eq!(RoundTrips::default().percentile(50.0), Duration::ZERO);
    }

    #[test]
    fn the_payload_does_not_repeat_early() {
        let p = payload(1 << 20);
        assert_eq!(p.len(), 1 << 20);
        assert_ne!(p[..4096], p[4096..8192]);
        assert_eq!(payload(1000)[..], p[..1000]);
    }
}
