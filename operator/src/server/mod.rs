//! The HTTP API: Kubernetes-shaped paths, bearer-token auth, JSON and YAML
//! bodies, watch streams, health.
//!
//! Paths (base `/apis/berth.dev/v1alpha1`):
//! - `POST /apply[?dryRun=true][&prune=true&labelSelector=…&namespace=…]` —
//!   all-or-nothing apply of many documents; with prune, matching objects the
//!   request does not contain are deleted in the same transaction
//! - `POST /namespaces/{ns}/gitsources/{name}/sync` — sync a GitSource now (admins)
//! - `GET /{plural}`, `GET /namespaces/{ns}/{plural}` — list (`labelSelector`)
//!   or watch (`watch=true&resourceVersion=N`, newline-delimited JSON)
//! - `GET|PUT|DELETE /namespaces/{ns}/{plural}/{name}`
//! - `PUT /namespaces/{ns}/{plural}/{name}/status` — controllers only
//! - `GET /namespaces/{ns}/events?kind=&name=`
//! - `GET /namespaces/{ns}/workspacetemplates/{name}/versions`
//! - `POST /tokens`, `GET /whoami`
//! - `GET /namespaces/{ns}/workspaces/{name}/agent` — the agent's WebSocket
//!   (agent token), `…/logs[?script=&follow=true&previous=true]` — script
//!   logs as newline-delimited JSON (owner or admin)
//! - `GET …/namespaces/{ns}/workspaces/{name}/terminal` — the dashboard's
//!   web terminal (WebSocket; see [`dashboard::terminal`])
//! - `GET /bin/berth-linux-{amd64,arm64}` — the agent binary (no auth)
//! - `/`, `/login`, `/logout`, `/workspaces/{ns}/{name}`, `/dashboard/…` —
//!   the web dashboard (see [`dashboard`])
//! - `/healthz`, `/readyz` (no auth)

mod activity;
pub use activity::{flush as flush_activity, flush_loop as activity_flush_loop};
pub mod agent;
pub mod apps;
mod auth;
pub mod binaries;
pub mod connect;
pub mod dashboard;
mod error;
mod routes;

pub use error::ApiError;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Router;

use std::sync::Arc;

use crate::controllers::{self, ControllerOptions, Ctx};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Shared state of the HTTP handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The object store.
    pub store: Store,
    /// Backstop poll interval of watch streams.
    pub watch_poll: Duration,
    /// Metrics served on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Coalesces activity reports in memory before they reach the database.
    pub activity: Arc<activity::ActivityCache>,
    /// The agents connected to this replica.
    pub agents: Arc<agent::AgentHub>,
    /// The agent binaries served at `/bin/`.
    pub binaries: Arc<binaries::AgentBinaries>,
    /// When set, `/metrics` answers only requests bearing this token.
    pub metrics_token: Option<Arc<str>>,
    /// Per-app origins (`--apps-domain`): each app on a host of its own.
    pub apps_domain: Option<Arc<apps::AppsDomain>>,
}

impl AppState {
    /// State with default settings and fresh metrics.
    pub fn new(store: Store) -> AppState {
        AppState {
            store,
            watch_poll: routes::DEFAULT_WATCH_POLL,
            metrics: Arc::new(Metrics::new()),
            activity: Arc::default(),
            agents: Arc::default(),
            binaries: Arc::default(),
            metrics_token: None,
            apps_domain: None,
        }
    }
}

/// Builds the API router.
pub fn router(state: AppState) -> Router {
    let base = "/apis/berth.dev/v1alpha1";
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/bin/{file}", get(binaries::serve))
        // Workspace apps: `/@owner/workspace/apps/slug/…` (the handler
        // refuses an owner segment without its `@`).
        .route(
            "/{owner}/{workspace}/apps/{slug}",
            axum::routing::any(apps::serve),
        )
        .route(
            "/{owner}/{workspace}/apps/{slug}/{*rest}",
            axum::routing::any(apps::serve),
        )
        .route(
            "/{owner}/{workspace}/apps/{slug}/",
            axum::routing::any(apps::serve),
        )
        .route(&format!("{base}/apply"), post(routes::apply_many))
        .route(&format!("{base}/tokens"), post(routes::create_token))
        .route(&format!("{base}/whoami"), get(routes::whoami))
        .route(
            &format!("{base}/namespaces/{{ns}}/events"),
            get(routes::list_events),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/workspacetemplates/{{name}}/versions"),
            get(routes::template_versions),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}"),
            get(routes::list_namespaced),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}/{{name}}"),
            get(routes::get_object)
                .put(routes::put_object)
                .delete(routes::delete_object),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}/{{name}}/status"),
            put(routes::put_status),
        )
        // Static "workspaces" wins over {plural} in the router, so this route
        // also serves the workspace status path.
        .route(
            &format!("{base}/namespaces/{{ns}}/workspaces/{{name}}/{{action}}"),
            post(activity::workspace_action)
                .put(routes::put_workspace_status)
                .get(activity::workspace_get_action),
        )
        // Like workspaces above: the static segment wins, so this route also
        // serves the GitSource status path.
        .route(
            &format!("{base}/namespaces/{{ns}}/gitsources/{{name}}/{{action}}"),
            post(routes::gitsource_action).put(routes::put_gitsource_status),
        )
        .route(&format!("{base}/{{plural}}"), get(routes::list_all))
        .merge(dashboard::routes())
        // A request to an app's own host (`--apps-domain`) is the app's,
        // whatever its path: the API and the dashboard are not on that origin.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            apps::by_host,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::api::yaml::MAX_INPUT_BYTES,
        ))
        .with_state(state)
}

async fn metrics(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if let Some(want) = &st.metrics_token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compared without an early exit (no timing hint of the token).
        let same = given.len() == want.len()
            && given
                .bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return (
                StatusCode::UNAUTHORIZED,
                "metrics need the metrics token (Authorization: Bearer …)\n",
            )
                .into_response();
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        st.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(st): State<AppState>) -> (StatusCode, &'static str) {
    match st.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

/// How to run the operator (API server and, later, controllers).
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    /// PostgreSQL connection URL.
    pub database_url: String,
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Where to write the CLI config (server + admin token) on first start.
    pub cli_config_path: Option<PathBuf>,
    /// The URL clients should use to reach this server (written into the CLI config).
    pub advertise_url: String,
    /// The GitSource controller (runs with or without a cloud).
    pub gitops: crate::gitops::GitOpsOptions,
    /// The URL workspaces use to reach the API (`None` = `advertise_url`).
    pub access_url: Option<String>,
    /// Where agent binaries for other architectures are (`/bin/`).
    pub agent_binary_dir: Option<PathBuf>,
    /// Print a one-time dashboard sign-in link for the admin (`berth up`).
    pub sign_in_link: bool,
    /// `/metrics` only with this bearer token (`--metrics-token`).
    pub metrics_token: Option<String>,
    /// Serve each app on a host of its own under this domain (`--apps-domain`).
    pub apps_domain: Option<String>,
    /// Make sure the CLI config holds a working admin token even when the
    /// database already has an admin (`berth up` with a new HOME).
    pub ensure_cli_token: bool,
}

/// Errors that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be reached or migrated.
    #[error("cannot use the database")]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// Serving failed.
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// `--apps-domain` is not usable.
    #[error("--apps-domain: {0}")]
    AppsDomain(String),
    /// The CLI config with the admin token could not be written.
    #[error("cannot write the CLI config {0}")]
    Config(PathBuf, #[source] std::io::Error),
}

/// `berth up` on a database that already has an admin (a data directory
/// kept, a new HOME): the CLI config at `path` gets a working admin token.
/// A config whose token is an admin's of this database is kept as it is
/// (its server corrected); otherwise a new admin token is minted and
/// written, keeping the config's namespace. A config that cannot be read is
/// left alone, with a warning saying how to get a token.
async fn ensure_cli_config(
    store: &Store,
    path: &std::path::Path,
    server: &str,
) -> Result<(), ServeError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => match crate::cli::config::parse(&text) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "the CLI config cannot be read, so no admin token was written to it; fix or move it and run `berth up` again, or use `berth --token … token create`"
                );
                return Ok(());
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => crate::cli::Config::default(),
        Err(e) => return Err(ServeError::Config(path.to_path_buf(), e)),
    };
    let valid = match existing.token.as_deref() {
        Some(t) => store.token_lookup(t).await?.is_some_and(|id| id.admin),
        None => false,
    };
    let token = match (valid, existing.token) {
        (true, Some(t)) => {
            if existing.server.as_deref() == Some(server) {
                return Ok(());
            }
            t
        }
        _ => {
            let t = store
                .token_create(
                    "admin",
                    true,
                    &format!("berth up: CLI config {}", path.display()),
                )
                .await?;
            tracing::info!(path = %path.display(), "the CLI config had no admin token of this database: a new one was written to it (mode 0600)");
            t
        }
    };
    write_cli_config_in(path, server, &token, existing.namespace.as_deref())
        .map_err(|e| ServeError::Config(path.to_path_buf(), e))
}

/// Writes the CLI config (server URL and token) with mode 0600.
pub fn write_cli_config(path: &std::path::Path, server: &str, token: &str) -> std::io::Result<()> {
    write_cli_config_in(path, server, token, None)
}

/// [`write_cli_config`], with the config's default namespace.
fn write_cli_config_in(
    path: &std::path::Path,
    server: &str,
    token: &str,
    namespace: Option<&str>,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut body = serde_json::json!({ "server": server, "token": token });
    if let Some(ns) = namespace {
        body["namespace"] = ns.into();
    }
    f.write_all(crate::api::yaml::to_yaml(&body).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The cloud the controllers drive, with its pacing.
#[derive(Clone)]
pub struct CloudSetup {
    /// The clients.
    pub cloud: berth_cloud::Cloud,
    /// Client-side pacing (None = unpaced).
    pub pacer: Option<Arc<berth_cloud::pacer::Pacer>>,
    /// Controller tunables.
    pub controllers: ControllerOptions,
    /// Lifecycle loop tunables.
    pub lifecycle: crate::lifecycle::LifecycleOptions,
    /// On the simulated cloud: runs RUNNING tasks' agents as local
    /// processes until shutdown (None: tasks run nothing).
    pub local_runtime: Option<crate::localrt::LocalRuntime>,
    /// Whether `Ready` needs the workspace agent (false on the simulated
    /// cloud with `--sim-no-agents`, where no agent runs).
    pub require_agent: bool,
}

impl std::fmt::Debug for CloudSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudSetup")
            .field("controllers", &self.controllers)
            .finish_non_exhaustive()
    }
}

/// Runs the API only (no controllers). See [`run_operator_with`].
pub async fn run_operator(
    opts: OperatorOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_operator_with(opts, None, shutdown).await
}

/// Runs the operator until `shutdown` resolves: connects to the database
/// (running migrations), creates the first admin token on the very first
/// start (written to `cli_config_path`, never logged), serves the API and,
/// with a cloud, runs the controllers.
pub async fn run_operator_with(
    opts: OperatorOptions,
    cloud: Option<CloudSetup>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = Store::connect(&opts.database_url).await?;
    match (store.token_bootstrap_admin().await?, &opts.cli_config_path) {
        (Some(token), Some(path)) => {
            write_cli_config(path, &opts.advertise_url, &token)
                .map_err(|e| ServeError::Config(path.clone(), e))?;
            tracing::info!(path = %path.display(), "first start: admin token written to the CLI config (mode 0600)");
        }
        (Some(_), None) => tracing::warn!(
            "first start: an admin token was created but no CLI config path is set to write it to"
        ),
        (None, Some(path)) if opts.ensure_cli_token => {
            ensure_cli_config(&store, path, &opts.advertise_url).await?;
        }
        (None, _) => {}
    }
    if opts.sign_in_link {
        let link = dashboard::sign_in_link(&store, &opts.advertise_url).await?;
        eprintln!(
            "berth: dashboard: sign in as admin with this one-time link (good for {} min): {link}",
            dashboard::SIGN_IN_TICKET_TTL.as_secs() / 60
        );
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| ServeError::Bind(opts.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(opts.listen, e))?;
    tracing::info!(%addr, "API listening");
    let compactor = tokio::spawn(compact_changes(store.clone()));
    let mut state = AppState::new(store.clone());
    let dir = opts.agent_binary_dir.clone();
    let binaries =
        tokio::task::spawn_blocking(move || binaries::AgentBinaries::discover(dir.as_deref()))
            .await
            .unwrap_or_default();
    let digests = binaries.digests();
    state.binaries = Arc::new(binaries);
    state.metrics_token = opts
        .metrics_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(Arc::from);
    if let Some(domain) = opts.apps_domain.as_deref().filter(|d| !d.is_empty()) {
        let apps =
            apps::AppsDomain::new(domain, &opts.advertise_url).map_err(ServeError::AppsDomain)?;
        tracing::info!(domain = %apps.domain, "apps on origins of their own: {}", apps.origin("<app>--<workspace>--<namespace>"));
        state.apps_domain = Some(Arc::new(apps));
    }
    // Agents count as connected only while their replica proves it is alive.
    store
        .replica_heartbeat(&state.agents.replica, &opts.advertise_url)
        .await?;
    let heartbeat = tokio::spawn(replica_heartbeat(
        store.clone(),
        state.agents.replica.clone(),
        opts.advertise_url.clone(),
    ));
    let activity_flusher = tokio::spawn(activity::flush_loop(state.clone()));
    let access_url = opts
        .access_url
        .clone()
        .unwrap_or_else(|| opts.advertise_url.clone());
    let metrics = state.metrics.clone();
    let state_for_flush = state.clone();
    let app = router(state);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut cloud = cloud;
    let local_runtime = cloud
        .as_mut()
        .and_then(|setup| setup.local_runtime.take())
        .map(|runtime| {
            let mut rx = rx.clone();
            tokio::spawn(runtime.run(async move {
                let _ = rx.wait_for(|v| *v).await;
            }))
        });
    // The account's API budget is split between the live replicas.
    let pacing = cloud
        .as_ref()
        .and_then(|setup| setup.pacer.clone())
        .map(|pacer| {
            tokio::spawn(controllers::pace_by_live_replicas(
                store.clone(),
                pacer,
                controllers::PACING_SHARE_REFRESH,
            ))
        });
    let controller = cloud.map(|setup| {
        let budget = setup.pacer.as_ref().map(|p| p.observation_budget());
        let lifecycle_rx = rx.clone();
        let mut ctx = controllers::context(
            store.clone(),
            setup.cloud,
            setup.pacer,
            metrics.clone(),
            &access_url,
        );
        ctx.agent.digests = digests.clone();
        ctx.require_agent = setup.require_agent;
        let ctx: Arc<Ctx> = Arc::new(ctx);
        let mut lifecycle_rx = lifecycle_rx;
        tokio::spawn(crate::lifecycle::run(
            store.clone(),
            ctx.clock.clone(),
            crate::lifecycle::LifecycleOptions {
                metrics: Some(metrics.clone()),
                ..setup.lifecycle.clone()
            },
            ctx.source.clone(),
            async move {
                let _ = lifecycle_rx.wait_for(|v| *v).await;
            },
        ));
        let mut rx = rx.clone();
        tokio::spawn(controllers::run_workspace_controller(
            ctx,
            setup.controllers,
            budget,
            async move {
                let _ = rx.wait_for(|v| *v).await;
            },
        ))
    });
    let shutdown_flag = async move {
        shutdown.await;
        let _ = tx.send(true);
    };
    tokio::spawn(shutdown_flag);
    let mut rx2 = rx.clone();
    let graceful = async move {
        let _ = rx2.wait_for(|v| *v).await;
    };
    // Relayed streams carry keystrokes and small credit frames: without
    // TCP_NODELAY each round trip waits out a delayed ACK (~40 ms,
    // `berth bench relay --server-nagle` shows it).
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
    let gitops = {
        let mut rx = rx.clone();
        let controller = crate::gitops::Controller::new(store.clone(), opts.gitops.clone());
        tokio::spawn(controller.run(async move {
            let _ = rx.wait_for(|v| *v).await;
        }))
    };
    let mut rx3 = rx;
    let result = tokio::select! {
        r = server => r.map_err(ServeError::Serve),
        // Open watch streams never end on their own: give in-flight requests
        // a few seconds after the signal, then stop.
        _ = async move {
            let _ = rx3.wait_for(|v| *v).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => Ok(()),
    };
    compactor.abort();
    heartbeat.abort();
    activity_flusher.abort();
    if let Some(p) = pacing {
        p.abort();
    }
    // Batched activity reports are written before the replica goes.
    activity::flush(&state_for_flush).await;
    let _ = gitops.await;
    if let Some(c) = controller {
        // In-flight reconciles finish (or are abandoned after the grace period).
        match c.await {
            Ok(report) if !report.abandoned.is_empty() => tracing::warn!(
                abandoned = report.abandoned.len(),
                "reconciles abandoned at shutdown"
            ),
            _ => {}
        }
    }
    if let Some(runtime) = local_runtime {
        // Children get SIGTERM, then SIGKILL after their stop timeout.
        let _ = runtime.await;
    }
    tracing::info!("operator stopped");
    result
}

/// Proves this replica alive every third of [`crate::store::REPLICA_TIMEOUT`]
/// and closes the agent sessions of replicas that stopped doing so.
pub async fn replica_heartbeat(store: Store, replica: String, url: String) {
    let mut tick = tokio::time::interval(crate::store::REPLICA_TIMEOUT / 3);
    loop {
        tick.tick().await;
        if let Err(e) = store.replica_heartbeat(&replica, &url).await {
            tracing::warn!(error = %e, "replica heartbeat failed; agents held here may show as disconnected");
        }
        // Agents held by a replica that died: disconnected, so their
        // workspaces say so.
        match store.agent_sessions_reap().await {
            Ok(gone) => {
                for (ns, name) in gone {
                    tracing::info!(workspace = %format!("{ns}/{name}"), "its agent's replica is gone; the agent counts as disconnected");
                    match store
                        .object_touch(crate::api::Kind::Workspace, &ns, &name)
                        .await
                    {
                        Ok(_) | Err(crate::store::StoreError::NotFound(_)) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "could not wake a workspace's controller")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not check for agents of dead replicas"),
        }
    }
}

async fn compact_changes(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        match store.changes_compact(Duration::from_secs(24 * 3600)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "compacted the change log"),
            Err(e) => tracing::warn!(error = %e, "change log compaction failed"),
        }
    }
}
