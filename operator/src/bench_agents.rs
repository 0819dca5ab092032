//! `berth bench agents`: N workspace agents connected to the API server for
//! a while, on a fresh database. Prints the heartbeats (pongs) the server
//! counted, the database writes PostgreSQL counted meanwhile (goal: at most
//! 1% of the heartbeats), and the process's RSS per connected agent.
//!
//! The server is the API router with the replica heartbeat loop, as
//! `berth operator` runs them, minus the controllers (no cloud). The agents
//! are lightweight clients in the same process: each connects the way
//! `berth agent` does (a WebSocket over an HTTP/1.1 upgrade with its
//! workspace's agent token, but with 4 KiB buffers so that the RSS growth
//! is mostly the server's), sends `Hello` with no scripts, waits for
//! `Welcome`, reports `Ready` and then only answers pings (the WebSocket
//! library does, as the socket is read).
//!
//! # Counting writes
//! PostgreSQL counts them: `tup_inserted + tup_updated + tup_deleted` (and
//! `xact_commit`) of the benchmark's database in `pg_stat_database`, read
//! over a connection to another database so the reads do not count. A
//! backend reports its counters when it goes idle, at most once a second,
//! and an idle one within 10 s (PostgreSQL 15's cumulative statistics), so
//! every reading is taken [`AgentsBench::stats_settle`] after the activity
//! it should include: the setup's writes land before the first reading,
//! and the window's writes are read `stats_settle` after the window ends
//! (agents still connected), which makes them an upper bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::json;
use sqlx::Row;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::agent::protocol::{self, AgentMessage, Lifecycle, ServerMessage, PROTOCOL_VERSION};
use crate::bench::BenchError;
use crate::server::agent::AgentHub;
use crate::server::{router, AppState};
use crate::store::{Identity, Store, StoreError};

/// The goal: database writes per heartbeat, in percent.
pub const GOAL_PERCENT: f64 = 1.0;
const NAMESPACE: &str = "bench";

/// Settings of `berth bench agents`.
#[derive(Clone, Debug)]
pub struct AgentsBench {
    /// Agents (and workspaces).
    pub agents: usize,
    /// How long all of them stay connected while heartbeats are counted.
    pub duration: Duration,
    /// The server's ping period ([`protocol::HEARTBEAT`] in production).
    pub heartbeat: Duration,
    /// How long to wait for PostgreSQL's statistics to include what
    /// happened before a reading.
    pub stats_settle: Duration,
    /// Agents connecting at once.
    pub connect_concurrency: usize,
}

impl AgentsBench {
    /// `agents` agents for `duration`, pinged every `heartbeat`.
    pub fn new(agents: usize, duration: Duration, heartbeat: Duration) -> AgentsBench {
        AgentsBench {
            agents,
            duration,
            heartbeat,
            stats_settle: Duration::from_secs(12),
            connect_concurrency: 64,
        }
    }
}

/// Counters of the benchmark's database in `pg_stat_database`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbCounts {
    /// Transactions committed (reads included).
    pub xact_commit: i64,
    /// Rows inserted, updated and deleted.
    pub rows: i64,
}

impl std::ops::Sub for DbCounts {
    type Output = DbCounts;
    fn sub(self, o: DbCounts) -> DbCounts {
        DbCounts {
            xact_commit: self.xact_commit - o.xact_commit,
            rows: self.rows - o.rows,
        }
    }
}

/// Figures of one run.
#[derive(Clone, Debug)]
pub struct AgentsFigures {
    /// The settings.
    pub cfg: AgentsBench,
    /// PostgreSQL's version.
    pub server_version: String,
    /// Agents the server held at the window's start.
    pub connected: usize,
    /// Agents the server held at the window's end.
    pub connected_end: usize,
    /// Time to connect all of them (until the last `Welcome`).
    pub connect_time: Duration,
    /// Database writes of connecting them (sessions, scripts, touches).
    pub connect_writes: DbCounts,
    /// Rows written while connecting, by table.
    pub connect_tables: Vec<(String, i64)>,
    /// The window, measured.
    pub window: Duration,
    /// Pongs the server counted during the window.
    pub heartbeats: u64,
    /// Pings the clients saw during the window.
    pub pings_seen: u64,
    /// Database writes from the window's start until `stats_settle` after its end.
    pub writes: DbCounts,
    /// Rows written during the window, by table (only tables written).
    pub tables: Vec<(String, i64)>,
    /// VmRSS before connecting, KiB.
    pub rss_before_kib: u64,
    /// VmRSS once all agents were connected, KiB.
    pub rss_connected_kib: u64,
    /// VmRSS at the window's end, KiB.
    pub rss_end_kib: u64,
}

impl AgentsFigures {
    /// Row writes as a percentage of heartbeats.
    pub fn percent(&self) -> f64 {
        if self.heartbeats == 0 {
            return f64::INFINITY;
        }
        self.writes.rows as f64 * 100.0 / self.heartbeats as f64
    }

    /// Whether the goal (at most [`GOAL_PERCENT`]) is met.
    pub fn pass(&self) -> bool {
        self.heartbeats > 0 && self.percent() <= GOAL_PERCENT
    }

    /// RSS growth per connected agent, KiB (client and server together).
    pub fn rss_per_agent_kib(&self) -> f64 {
        self.rss_connected_kib.saturating_sub(self.rss_before_kib) as f64
            / self.connected.max(1) as f64
    }

    /// Lines for people.
    pub fn render(&self) -> String {
        let c = &self.cfg;
        let mib = |k: u64| k as f64 / 1024.0;
        let expected =
            self.connected as f64 * self.window.as_secs_f64() / c.heartbeat.as_secs_f64();
        let production = protocol::HEARTBEAT.as_secs_f64() / c.heartbeat.as_secs_f64();
        let by_table = |v: &[(String, i64)]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        format!(
            "berth bench agents: N={} agents for {:.0} s, server ping period {} (production: {}), \
             on a fresh database (PostgreSQL {})\n  \
             connected                  {} of {} in {:.2} s; connecting wrote {} rows ({:.1} per agent; {})\n  \
             heartbeats (pongs)         {} counted by the server over {:.1} s (expected ≈ {:.0}; the clients saw {} pings)\n  \
             database writes            {} rows inserted/updated/deleted over {:.1} s (by table: {}); {} transactions committed, reads included\n  \
             writes / heartbeats        {:.4} %   goal ≤ {} %   {}\n  \
             at the production period   {:.4} % (the same writes against heartbeats every {}, if writes do not grow with the ping rate)\n  \
             RSS                        {:.1} MiB before connecting, {:.1} MiB with all connected, {:.1} MiB at the window's end\n  \
             RSS per connected agent    {:.1} KiB (clients, with 4 KiB WebSocket buffers, and server share this process: an upper bound for the server's share)\n  \
             (writes are counted by PostgreSQL from the window's start until {:.0} s after its end, as its statistics arrive up to 10 s late: \
             an upper bound; agents stayed connected throughout; no controllers ran)\n",
            c.agents,
            c.duration.as_secs_f64(),
            humantime::format_duration(c.heartbeat),
            humantime::format_duration(protocol::HEARTBEAT),
            self.server_version,
            self.connected,
            c.agents,
            self.connect_time.as_secs_f64(),
            self.connect_writes.rows,
            self.connect_writes.rows as f64 / c.agents.max(1) as f64,
            by_table(&self.connect_tables),
            self.heartbeats,
            self.window.as_secs_f64(),
            expected,
            self.pings_seen,
            self.writes.rows,
            self.window.as_secs_f64() + c.stats_settle.as_secs_f64(),
            by_table(&self.tables),
            self.writes.xact_commit,
            self.percent(),
            GOAL_PERCENT,
            if self.pass() { "PASS" } else { "FAIL" },
            self.percent() * production,
            humantime::format_duration(protocol::HEARTBEAT),
            mib(self.rss_before_kib),
            mib(self.rss_connected_kib),
            mib(self.rss_end_kib),
            self.rss_per_agent_kib(),
            c.stats_settle.as_secs_f64(),
        )
    }
}

/// VmRSS of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Request(e.to_string())
}

/// Runs the benchmark on a fresh database created on `database_url`'s server.
pub async fn bench_agents(
    database_url: &str,
    cfg: &AgentsBench,
) -> Result<AgentsFigures, BenchError> {
    if cfg.heartbeat.is_zero() {
        return Err(err("the heartbeat period must be more than 0"));
    }
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .map_err(StoreError::from)?;
    let r = crate::bench::with_scratch_database(database_url, |url| {
        let admin = admin.clone();
        async move { run(&url, &admin, cfg).await }
    })
    .await;
    admin.close().await;
    r
}

/// `pg_stat_database` of `db`, read over `admin` (another database).
async fn db_counts(admin: &sqlx::PgPool, db: &str) -> Result<DbCounts, BenchError> {
    let r = sqlx::query(
        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS rows
         FROM pg_stat_database WHERE datname = $1",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .map_err(StoreError::from)?;
    Ok(DbCounts {
        xact_commit: r.try_get("xact_commit").map_err(StoreError::from)?,
        rows: r.try_get("rows").map_err(StoreError::from)?,
    })
}

/// Rows written per table of the benchmark's database (read on it: one
/// read-only transaction of its own each time).
async fn table_counts(store: &Store) -> Result<Vec<(String, i64)>, BenchError> {
    let rows = sqlx::query(
        "SELECT relname::text AS t, n_tup_ins + n_tup_upd + n_tup_del AS n
         FROM pg_stat_user_tables ORDER BY relname",
    )
    .fetch_all(store.pool())
    .await
    .map_err(StoreError::from)?;
    rows.iter()
        .map(|r| Ok((r.try_get("t")?, r.try_get("n")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| StoreError::from(e).into())
}

fn table_delta(before: &[(String, i64)], after: &[(String, i64)]) -> Vec<(String, i64)> {
    after
        .iter()
        .map(|(t, n)| {
            let b = before.iter().find(|(u, _)| u == t).map_or(0, |(_, m)| *m);
            (t.clone(), n - b)
        })
        .filter(|(_, n)| *n != 0)
        .collect()
}

async fn run(
    url: &str,
    admin: &sqlx::PgPool,
    cfg: &AgentsBench,
) -> Result<AgentsFigures, BenchError> {
    let store = Store::connect(url).await?;
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(store.pool())
        .await
        .map_err(StoreError::from)?;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(store.pool())
        .await
        .map_err(StoreError::from)?;

    // Setup: a template without scripts, N workspaces, an agent token each.
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
    crate::apply::apply(&store, &who, &[template], false)
        .await
        .map_err(|e| err(format!("apply template: {e:?}")))?;
    let mut agents = Vec::with_capacity(cfg.agents);
    for chunk in (0..cfg.agents).collect::<Vec<_>>().chunks(1000) {
        let docs: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| {
                json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Workspace",
                       "metadata": {"name": format!("ws-{i:05}"), "namespace": NAMESPACE},
                       "spec": {"owner": format!("user-{}", i % 500), "template": {"name": "bench"}}})
            })
            .collect();
        for r in crate::apply::apply(&store, &who, &docs, false)
            .await
            .map_err(|e| err(format!("apply workspaces: {e:?}")))?
        {
            let uid = r
                .object
                .metadata
                .uid
                .ok_or_else(|| err(format!("workspaces/{}: no uid", r.name)))?;
            let token = agent_token();
            store.agent_token_set(uid, &token).await?;
            agents.push((r.name, token));
        }
    }

    // The server: the API and the replica heartbeat, as `berth operator` runs them.
    let mut hub = AgentHub::default();
    hub.heartbeat = cfg.heartbeat;
    let hub = Arc::new(hub);
    let mut state = AppState::new(store.clone());
    state.agents = hub.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    store.replica_heartbeat(&hub.replica, &base).await?;
    let replica = tokio::spawn(crate::server::replica_heartbeat(
        store.clone(),
        hub.replica.clone(),
        base.clone(),
    ));
    let app = router(state);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let (stop_tx, stop_rx) = watch::channel(false);
    let pings = Arc::new(AtomicU64::new(0));

    let result = async {
        tokio::time::sleep(cfg.stats_settle).await;
        let before_connect = db_counts(admin, &db).await?;
        let tables_before = table_counts(&store).await?;
        let rss_before_kib = rss_kib();

        // Connect them all, `connect_concurrency` at a time.
        let client = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(err)?;
        let sem = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
        let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(cfg.agents.max(1));
        let t = Instant::now();
        let mut tasks = Vec::with_capacity(cfg.agents);
        for (name, token) in agents {
            let url = format!("{base}{}", protocol::agent_path(NAMESPACE, &name));
            tasks.push(tokio::spawn(agent(
                client.clone(),
                url,
                token,
                sem.clone(),
                ready_tx.clone(),
                stop_rx.clone(),
                pings.clone(),
            )));
        }
        drop(ready_tx);
        let mut ready = 0;
        while let Some(r) = ready_rx.recv().await {
            r.map_err(|e| err(format!("an agent could not connect: {e}")))?;
            ready += 1;
            if ready == cfg.agents {
                break;
            }
        }
        let connect_time = t.elapsed();
        let rss_connected_kib = rss_kib();

        // The window.
        tokio::time::sleep(cfg.stats_settle).await;
        let s0 = db_counts(admin, &db).await?;
        let tables0 = table_counts(&store).await?;
        let (h0, p0, connected) = (
            hub.heartbeats(),
            pings.load(Ordering::Relaxed),
            hub.connected(),
        );
        let t0 = Instant::now();
        tokio::time::sleep(cfg.duration).await;
        let (h1, p1, connected_end) = (
            hub.heartbeats(),
            pings.load(Ordering::Relaxed),
            hub.connected(),
        );
        let window = t0.elapsed();
        let rss_end_kib = rss_kib();
        tokio::time::sleep(cfg.stats_settle).await;
        let s1 = db_counts(admin, &db).await?;
        let tables1 = table_counts(&store).await?;

        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        // Let the server record the disconnects before the pool closes.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            let open: i64 =
                sqlx::query_scalar("SELECT count(*) FROM agent_sessions WHERE replica IS NOT NULL")
                    .fetch_one(store.pool())
                    .await
                    .map_err(StoreError::from)?;
            if open == 0 && hub.connected() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(AgentsFigures {
            cfg: cfg.clone(),
            server_version: server_version.clone(),
            connected,
            connected_end,
            connect_time,
            connect_writes: s0 - before_connect,
            connect_tables: table_delta(&tables_before, &tables0),
            window,
            heartbeats: h1 - h0,
            pings_seen: p1 - p0,
            writes: s1 - s0,
            tables: table_delta(&tables0, &tables1),
            rss_before_kib,
            rss_connected_kib,
            rss_end_kib,
        })
    }
    .await;
    let _ = stop_tx.send(true);
    server.abort();
    replica.abort();
    store.pool().close().await;
    result
}

/// A token shaped like the workspace controller's.
fn agent_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("berth_agent_{body}")
}

type Ws = WebSocketStream<reqwest::Upgraded>;

/// Opens the agent's WebSocket the way `berth agent` does.
async fn connect(client: &reqwest::Client, url: &str, token: &str) -> Result<Ws, String> {
    let resp = client
        .get(url)
        .header(reqwest::header::CONNECTION, "Upgrade")
        .header(reqwest::header::UPGRADE, "websocket")
        .header(reqwest::header::SEC_WEBSOCKET_VERSION, "13")
        .header(
            reqwest::header::SEC_WEBSOCKET_KEY,
            crate::agent::conn::websocket_key(),
        )
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if resp.status().as_u16() != 101 {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("{status}: {body}"));
    }
    let upgraded = resp.upgrade().await.map_err(|e| format!("upgrade: {e}"))?;
    // Small buffers (`berth agent` uses the 128 KiB defaults, in its own
    // process): the process's RSS growth is then mostly the server's.
    let config = WebSocketConfig::default()
        .max_message_size(Some(protocol::MAX_MESSAGE_BYTES))
        .max_frame_size(Some(protocol::MAX_MESSAGE_BYTES))
        .read_buffer_size(4096)
        .write_buffer_size(0);
    Ok(WebSocketStream::from_raw_socket(upgraded, Role::Client, Some(config)).await)
}

/// One agent: connects, says `Hello` (no scripts), waits for `Welcome`,
/// says it is `Ready` and reports so to the benchmark, then reads the socket (which answers pings) until `stop`.
async fn agent(
    client: reqwest::Client,
    url: String,
    token: String,
    sem: Arc<Semaphore>,
    ready: mpsc::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
    pings: Arc<AtomicU64>,
) {
    let welcomed = async {
        let _permit = sem.acquire().await.map_err(|e| e.to_string())?;
        let mut ws = connect(&client, &url, &token).await?;
        let hello = AgentMessage::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: concat!("bench-", env!("CARGO_PKG_VERSION")).into(),
            lifecycle: Lifecycle::Starting,
            scripts: Vec::new(),
        };
        ws.send(Message::text(hello.encode()))
            .await
            .map_err(|e| format!("send hello: {e}"))?;
        let wait = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => match ServerMessage::decode(t.as_str()) {
                        Ok(ServerMessage::Welcome { .. }) => return Ok(()),
                        Ok(ServerMessage::Error { message }) => return Err(message),
                        Ok(_) => continue,
                        Err(e) => return Err(e.to_string()),
                    },
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("closed before welcome".into()),
                }
            }
        });
        wait.await
            .map_err(|_| "no welcome within 30 s".to_string())??;
        // No blocking scripts: ready at once, as `berth agent` reports it.
        let ready = AgentMessage::Lifecycle {
            state: Lifecycle::Ready,
        };
        ws.send(Message::text(ready.encode()))
            .await
            .map_err(|e| format!("send lifecycle: {e}"))?;
        Ok::<_, String>(ws)
    }
    .await;
    let mut ws = match welcomed {
        Ok(ws) => {
            let _ = ready.send(Ok(())).await;
            ws
        }
        Err(e) => {
            let _ = ready.send(Err(e)).await;
            return;
        }
    };
    drop(ready);
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Ping(_))) => { pings.fetch_add(1, Ordering::Relaxed); }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_delta_keeps_only_tables_written() {
        let before = vec![("a".to_string(), 5), ("b".to_string(), 1)];
        let after = vec![
            ("a".to_string(), 5),
            ("b".to_string(), 4),
            ("c".to_string(), 2),
        ];
        assert_eq!(
            table_delta(&before, &after),
            vec![("b".to_string(), 3), ("c".to_string(), 2)]
        );
    }
}
