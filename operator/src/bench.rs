//! Benchmarks that print figures (`berth bench …`). Speed targets live here,
//! not in timed tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;

use crate::server::{router, AppState};
use crate::store::{Store, StoreError};

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The store failed.
    #[error("store")]
    Store(#[from] StoreError),
    /// A request failed.
    #[error("request failed: {0}")]
    Request(String),
    /// A socket could not be bound.
    #[error("bind")]
    Io(#[from] std::io::Error),
}

/// Latency and throughput figures of one series.
#[derive(Debug, Clone)]
pub struct Series {
    /// What was measured.
    pub name: String,
    /// Operations done.
    pub n: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Per-operation latencies, sorted.
    pub latencies: Vec<Duration>,
}

impl Series {
    fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }

    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "{:<44} n={:<6} {:>9.1} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   total {:.2} s",
            self.name,
            self.n,
            self.n as f64 / self.elapsed.as_secs_f64(),
            self.pct(0.50).as_secs_f64() * 1e3,
            self.pct(0.99).as_secs_f64() * 1e3,
            self.elapsed.as_secs_f64()
        )
    }
}

async fn run_concurrent<F, Fut>(
    name: &str,
    n: usize,
    concurrency: usize,
    f: F,
) -> Result<Series, BenchError>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BenchError>> + Send,
{
    let f = Arc::new(f);
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| BenchError::Request(e.to_string()))?;
        let f = f.clone();
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = f(i).await;
            drop(permit);
            r.map(|_| t.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for h in handles {
        latencies.push(h.await.map_err(|e| BenchError::Request(e.to_string()))??);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(Series {
        name: name.to_string(),
        n,
        elapsed,
        latencies,
    })
}

/// `berth bench apply`: applies `n` generated workspaces through the HTTP
/// API (one request each, `concurrency` at a time) on a fresh database, then
/// re-applies them unchanged, and measures the raw rate of single-row
/// upserts into the same PostgreSQL for comparison.
pub async fn bench_apply(
    database_url: &str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<Series>, BenchError> {
    let store = Store::connect(database_url).await?;
    let token = match store.token_bootstrap_admin().await? {
        Some(t) => t,
        None => store.token_create("bench", true, "bench").await?,
    };
    let app = router(AppState::new(store.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}/apis/berth.dev/v1alpha1");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(|e| BenchError::Request(e.to_string()))?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
    let ns = format!("bench-{run_id}");

    let template = json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "WorkspaceTemplate",
        "metadata": {"name": "bench", "namespace": ns},
        "spec": {
            "infrastructure": {"region": "us-west-2", "cluster": "bench", "subnets": ["subnet-1"], "securityGroups": ["sg-1"],
                "fileSystemId": "fs-1", "executionRoleArn": "arn:aws:iam::123456789012:role/exec"},
            "container": {"image": "example/dev:1", "homePath": "/home/dev"},
            "resources": {"default": {"cpu": 1024, "memory": 2048}},
            "parameters": [{"name": "vscode_web", "type": "bool", "default": false, "mutable": true}]
        }
    });
    post(&client, &base, &token, &template.to_string()).await?;

    let mut out = Vec::new();
    for (label, expect) in [
        ("apply via API (create)", "created"),
        ("apply via API (unchanged re-apply)", "unchanged"),
    ] {
        let (client, base, token, ns) = (client.clone(), base.clone(), token.clone(), ns.clone());
        let series = run_concurrent(label, n, concurrency, move |i| {
            let (client, base, token, ns) = (client.clone(), base.clone(), token.clone(), ns.clone());
            async move {
                let doc = json!({
                    "apiVersion": "berth.dev/v1alpha1", "kind": "Workspace",
                    "metadata": {"name": format!("ws-{i:06}"), "namespace": ns, "labels": {"bench": "yes"}},
                    "spec": {"owner": format!("user-{}", i % 500), "template": {"name": "bench"}, "running": i % 2 == 0,
                             "resources": {"cpu": 2048, "memory": 4096}, "parameters": {"vscode_web": i % 3 == 0}}
                });
                let body = post(&client, &base, &token, &doc.to_string()).await?;
                if !body.contains(expect) {
                    return Err(BenchError::Request(format!("expected {expect}: {body}")));
                }
                Ok(())
            }
        })
        .await?;
        out.push(series);
    }

    // The same PostgreSQL's raw rate of single-row upserts, same concurrency.
    let pool = store.pool().clone();
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_upserts (k TEXT PRIMARY KEY, v JSONB NOT NULL)")
        .execute(&pool)
        .await
        .map_err(StoreError::from)?;
    let series = run_concurrent("raw single-row upsert (same PostgreSQL)", n, concurrency, move |i| {
        let pool = pool.clone();
        let run_id = run_id.clone();
        async move {
            sqlx::query("INSERT INTO bench_upserts (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")
                .bind(format!("{run_id}-{i}"))
                .bind(json!({"owner": format!("user-{}", i % 500), "cpu": 2048, "memory": 4096}))
                .execute(&pool)
                .await
                .map_err(StoreError::from)?;
            Ok(())
        }
    })
    .await?;
    out.push(series);
    sqlx::query("DROP TABLE bench_upserts")
        .execute(store.pool())
        .await
        .map_err(StoreError::from)?;
    server.abort();
    Ok(out)
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: &str,
) -> Result<String, BenchError> {
    let r = client
        .post(format!("{base}/apply"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| BenchError::Request(e.to_string()))?;
    let status = r.status();
    let text = r
        .text()
        .await
        .map_err(|e| BenchError::Request(e.to_string()))?;
    if !status.is_success() {
        return Err(BenchError::Request(format!("{status}: {text}")));
    }
    Ok(text)
}

/// Settings of `berth bench reconcile`.
#[derive(Clone, Debug)]
pub struct ReconcileBench {
    /// Workspaces.
    pub n: usize,
    /// AWS's API rates are multiplied by this (the sim's limits and Berth's pacing alike).
    pub rate_scale: f64,
    /// The sim's task and access point delays are multiplied by this.
    pub delay_scale: f64,
    /// Concurrent reconciles.
    pub concurrency: usize,
}

/// One phase of the reconcile benchmark.
#[derive(Clone, Debug)]
pub struct PhaseFigures {
    /// `create`, `stop`, `start`.
    pub name: &'static str,
    /// Time until every workspace reached the phase.
    pub took: Duration,
    /// The least time the (scaled) rate limits allow.
    pub bound: Duration,
    /// Cloud calls during the phase, by operation (successful, throttled).
    pub calls: Vec<(String, u64, u64)>,
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn count_phase(store: &Store, ns: &str, phase: &str) -> Result<i64, BenchError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM objects WHERE kind = 'Workspace' AND namespace = $1 AND status->>'phase' = $2")
        .bind(ns)
        .bind(phase)
        .fetch_one(store.pool())
        .await
        .map_err(StoreError::from)?)
}

async fn wait_phase(
    store: &Store,
    ns: &str,
    phase: &str,
    n: usize,
    limit: Duration,
) -> Result<Duration, BenchError> {
    let start = Instant::now();
    loop {
        if count_phase(store, ns, phase).await? as usize >= n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            let got = count_phase(store, ns, phase).await?;
            return Err(BenchError::Request(format!(
                "only {got} of {n} workspaces reached {phase} within {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `berth bench reconcile`: N workspaces created, then all stopped, then all
/// started, on the sim with AWS-like rate limits (scaled by a stated
/// factor), against a fresh database on `database_url`'s server. Prints
/// time to converge next to the bound the rate limits allow, cloud calls by
/// operation next to the minimum needed, throttling errors provoked, and
/// peak RSS.
pub async fn bench_reconcile(
    database_url: &str,
    cfg: &ReconcileBench,
) -> Result<(Vec<PhaseFigures>, String), BenchError> {
    use berth_cloud::ops::Operation;
    use berth_cloud::pacer::{Pacer, PacerConfig};
    use berth_cloud::sim::{Delays, Outcome, RateLimits, Sim, SimConfig};

    with_scratch_database(database_url, |url| async move {
        let store = Store::connect(&url).await?;
        let mut sim_cfg = SimConfig::permissive();
        let d = Delays::default();
        let scale = |x: Duration| x.mul_f64(cfg.delay_scale);
        sim_cfg.delays = Delays {
            provisioning: scale(d.provisioning),
            pending: scale(d.pending),
            stopping: scale(d.stopping),
            restart: scale(d.restart),
            access_point_creating: scale(d.access_point_creating),
            access_point_deleting: scale(d.access_point_deleting),
            ..d
        };
        sim_cfg.rate_limits = RateLimits { scale: cfg.rate_scale, ..RateLimits::default() };
        let sim = Sim::new(sim_cfg);
        let pacer = Arc::new(Pacer::new(PacerConfig::fraction_of_aws(0.8 * cfg.rate_scale)));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let ctx = Arc::new(crate::controllers::context(
            store.clone(),
            berth_cloud::Cloud::from_sim(&sim),
            Some(pacer.clone()),
            metrics,
            "",
        ));
        let opts = crate::controllers::ControllerOptions { concurrency: cfg.concurrency, ..Default::default() };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let budget = Some(pacer.observation_budget());
        let controller = tokio::spawn(crate::controllers::run_workspace_controller(ctx, opts, budget, async move {
            let _ = stop_rx.await;
        }));

        let admin_id = crate::store::Identity { user: "bench".into(), admin: true };
        let ns = "bench";
        let template = json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "WorkspaceTemplate",
            "metadata": {"name": "bench", "namespace": ns},
            "spec": {
                "infrastructure": {"region": "us-west-2", "cluster": "bench", "subnets": ["subnet-1"], "securityGroups": ["sg-1"],
                    "fileSystemId": "fs-bench", "executionRoleArn": "arn:aws:iam::123456789012:role/exec"},
                "container": {"image": "example/dev:1", "homePath": "/home/dev"},
                "resources": {"default": {"cpu": 1024, "memory": 2048}}
            }
        });
        crate::apply::apply(&store, &admin_id, &[template], false).await.map_err(|e| BenchError::Request(e.to_string()))?;

        // The least time N calls of `op` take: the burst goes at once, the rest at the sustained rate.
        let least = |op: Operation, n: f64| {
            let r = op.aws_rate().scaled(cfg.rate_scale);
            (n - r.burst).max(0.0) / r.per_second
        };
        let limit = Duration::from_secs(3600);
        let mut phases = Vec::new();
        let mut last = sim.calls();
        let mut snapshot = |name: &'static str, took: Duration, bound: Duration, sim: &Sim| {
            let now = sim.calls();
            let mut calls = Vec::new();
            for op in [
                Operation::CreateAccessPoint,
                Operation::DescribeAccessPoints,
                Operation::PutSecretValue,
                Operation::DescribeTaskDefinition,
                Operation::RegisterTaskDefinition,
                Operation::CreateService,
                Operation::UpdateService,
                Operation::DescribeServices,
            ] {
                let ok = now.get(op, Outcome::Ok) - last.get(op, Outcome::Ok);
                let thr = now.get(op, Outcome::Throttled) - last.get(op, Outcome::Throttled);
                calls.push((op.as_str().to_string(), ok, thr));
            }
            last = now;
            PhaseFigures { name, took, bound, calls }
        };

        // Create (and start) N workspaces, in batches of 1,000 documents.
        let t0 = Instant::now();
        for chunk in (0..cfg.n).collect::<Vec<_>>().chunks(1000) {
            let docs: Vec<serde_json::Value> = chunk
                .iter()
                .map(|i| {
                    json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Workspace",
                           "metadata": {"name": format!("ws-{i:05}"), "namespace": ns},
                           "spec": {"owner": format!("user-{i:05}"), "template": {"name": "bench"}}})
                })
                .collect();
            crate::apply::apply(&store, &admin_id, &docs, false).await.map_err(|e| BenchError::Request(e.to_string()))?;
        }
        wait_phase(&store, ns, "Running", cfg.n, limit).await?;
        let n = cfg.n as f64;
        let bound = Duration::from_secs_f64(
            least(Operation::RegisterTaskDefinition, n)
                .max(least(Operation::CreateService, n))
                .max(least(Operation::CreateAccessPoint, n)),
        );
        phases.push(snapshot("create+start", t0.elapsed(), bound, &sim));

        for (name, action, phase) in [
            ("stop", crate::store::PowerAction::Stop, "Stopped"),
            ("start", crate::store::PowerAction::Start, "Running"),
        ] {
            let t = Instant::now();
            for i in 0..cfg.n {
                let intent = crate::store::NewIntent { reason: "Bench", ..crate::store::NewIntent::manual(action, "bench") };
                store.intent_record(ns, &format!("ws-{i:05}"), &intent).await?;
            }
            wait_phase(&store, ns, phase, cfg.n, limit).await?;
            let bound = Duration::from_secs_f64(least(Operation::UpdateService, n));
            phases.push(snapshot(name, t.elapsed(), bound, &sim));
        }
        let _ = stop_tx.send(());
        let _ = controller.await;
        let throttled = sim.calls().total_outcome(Outcome::Throttled);
        let pacing = pacer.stats();
        let waited: Duration = pacing.waited.values().sum();
        let extra = format!(
            "throttling errors provoked: {throttled}; time spent waiting for pacing (all calls): {:.1} s; peak RSS: {:.1} MiB",
            waited.as_secs_f64(),
            peak_rss_mib()
        );
        store.pool().close().await;
        Ok::<_, BenchError>((phases, extra))
    })
    .await
}

/// Runs `f` on a fresh database created on `database_url`'s server, and
/// drops the database afterwards whatever `f` returned.
pub async fn with_scratch_database<T, F, Fut>(database_url: &str, f: F) -> Result<T, BenchError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, BenchError>>,
{
    let db = format!(
        "berth_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let admin = sqlx::PgPool::connect(database_url)
        .await
        .map_err(StoreError::from)?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .map_err(StoreError::from)?;
    let result = f(replace_database(database_url, &db)).await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&admin)
        .await;
    result
}

/// `url` with its database replaced by `db`.
pub fn replace_database(url: &str, db: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_path(&format!("/{db}"));
            u.to_string()
        }
        // Not a URL (e.g. key=value connection strings): append the name.
        Err(_) => format!("{url} dbname={db}"),
    }
}

/// Renders reconcile figures for people.
pub fn render_reconcile(cfg: &ReconcileBench, phases: &[PhaseFigures], extra: &str) -> String {
    let mut out = format!(
        "berth bench reconcile: N={} on the sim; AWS rate limits ×{} (sim and pacing), sim delays ×{}, {} concurrent reconciles\n",
        cfg.n, cfg.rate_scale, cfg.delay_scale, cfg.concurrency
    );
    for p in phases {
        out.push_str(&format!(
            "  {:<13} converged in {:>8.1} s   bound from rate limits {:>8.1} s\n",
            p.name,
            p.took.as_secs_f64(),
            p.bound.as_secs_f64()
        ));
        let min = |op: &str| -> String {
            match (p.name, op) {
                (
                    "create+start",
                    "CreateAccessPoint"
                    | "RegisterTaskDefinition"
                    | "CreateService"
                    | "PutSecretValue",
                ) => cfg.n.to_string(),
                ("stop", "UpdateService") => cfg.n.to_string(),
                ("start", "UpdateService" | "PutSecretValue") => cfg.n.to_string(),
                (_, "DescribeServices") => format!("{} per pass", cfg.n.div_ceil(10)),
                _ => "0".to_string(),
            }
        };
        for (op, ok, thr) in &p.calls {
            if *ok > 0 || *thr > 0 {
                out.push_str(&format!(
                    "      {op:<24} {ok:>8} calls  (minimum {:>14})  throttled {thr}\n",
                    min(op)
                ));
            }
        }
    }
    out.push_str(&format!("  {extra}\n"));
    out
}
