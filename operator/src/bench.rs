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
