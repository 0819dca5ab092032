//! Controllers: reconcile what the store declares onto the cloud.
//!
//! The workspace controller runs on [`berth_runtime`]: a watch of the store
//! (resumed from the last revision seen, with LISTEN/NOTIFY as a wake-up and
//! a poll as the backstop) feeds a deduplicating queue; a periodic resync
//! lists every workspace and refreshes the shared service cache in
//! DescribeServices batches of 10, and its interval adapts so observation
//! uses at most a set share of the DescribeServices budget.

pub mod metered;
pub mod observe;
pub mod workspace;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_cloud::ecs::Ecs;
use berth_cloud::efs::Efs;
use berth_cloud::error::CloudError;
use berth_cloud::pacer::{ObservationBudget, Pacer};
use berth_cloud::secrets::Secrets;
use berth_cloud::Cloud;
use berth_runtime::{
    Action, Config, Controller, Priority, ReconcileEvent, ReconcileOutcome, Retry, RunReport,
};
use futures_util::StreamExt;

use self::observe::ServiceCache;
use self::workspace::CrashPoint;
use crate::api::policy::LifecyclePolicySpec;
use crate::api::selector::Selector;
use crate::api::workspace::Phase;
use crate::api::{Kind, WorkspaceStatus};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, WatchFilter};

/// The key of a workspace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WsKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A cloud call failed.
    #[error("{0}")]
    Cloud(CloudError),
    /// A stored object could not be decoded.
    #[error("corrupt object: {0}")]
    Corrupt(String),
    /// Waiting on the cloud (e.g. an access point still creating).
    #[error("waiting: {0}")]
    NotYet(String),
    /// A cloud object with the workspace's name belongs to someone else
    /// (its ownership tags say so): Berth leaves it alone.
    #[error("{0}")]
    Foreign(String),
    /// The test hook stopped the reconcile.
    #[error("injected crash at {0:?}")]
    Crash(CrashPoint),
}

/// What every reconcile needs (kube-rs `Context` style).
pub struct Ctx {
    /// The object store.
    pub store: Store,
    /// Cloud clients (paced and metered).
    pub cloud: Cloud,
    /// Shared observation cache.
    pub cache: ServiceCache,
    /// This replica's id (lease holder, event source).
    pub source: String,
    /// Lease time-to-live; renewed at a third of it. A replica that dies
    /// is replaced within about this (its leases expire, and the others
    /// look again at that moment).
    pub lease_ttl: Duration,
    /// When this replica's leases were last renewed (the start of the
    /// renewal that succeeded): a reconcile stops sending changes once its
    /// lease may have expired (see [`berth_cloud::fence`]).
    pub lease_renewed: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Requeue of a converged workspace (besides resync).
    pub steady_requeue: Duration,
    /// How workspaces reach the API and get their agent binary.
    pub agent: workspace::render::AgentDelivery,
    /// Whether `Ready` needs the workspace agent (false where no agent
    /// runs: the simulated cloud with `--sim-no-agents`, controller tests).
    pub require_agent: bool,
    /// How long an agent may be disconnected before `Ready=False,
    /// reason: AgentDisconnected` (tests shorten it).
    pub agent_disconnect_grace: Duration,
    /// Test hook (see [`CrashPoint`]).
    pub crash_point: Option<CrashPoint>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The time source of lifecycle decisions.
    pub clock: Arc<dyn crate::lifecycle::Clock>,
}

impl Ctx {
    /// ECS.
    pub fn ecs(&self) -> &dyn Ecs {
        self.cloud.ecs.as_ref()
    }

    /// EFS.
    pub fn efs(&self) -> &dyn Efs {
        self.cloud.efs.as_ref()
    }

    /// Secrets Manager.
    pub fn secrets(&self) -> &dyn Secrets {
        self.cloud.secrets.as_ref()
    }

    /// The namespace's lifecycle policy, if any.
    pub async fn policy(&self, ns: &str) -> Result<Option<LifecyclePolicySpec>, StoreError> {
        let (items, _) = self
            .store
            .object_list(Kind::LifecyclePolicy, Some(ns), &Selector::default(), None)
            .await?;
        Ok(items
            .into_iter()
            .next()
            .and_then(|o| serde_json::from_value(o.spec).ok()))
    }
}

/// Tunables of the controllers.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Reconciles in flight at once.
    pub concurrency: usize,
    /// Share of the DescribeServices budget observation may use.
    pub observation_share: f64,
    /// Bounds of the adaptive resync interval.
    pub resync_min: Duration,
    /// Upper bound of the adaptive resync interval.
    pub resync_max: Duration,
    /// How often services in a transition are described.
    pub hot_interval: Duration,
    /// Poll backstop of the store watch.
    pub watch_poll: Duration,
    /// Grace period for in-flight reconciles at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            concurrency: 16,
            observation_share: 0.25,
            resync_min: Duration::from_secs(30),
            resync_max: Duration::from_secs(3600),
            hot_interval: Duration::from_secs(2),
            watch_poll: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Builds a context with the usual wiring: metered, then paced cloud clients.
pub fn context(
    store: Store,
    cloud: Cloud,
    pacer: Option<Arc<Pacer>>,
    metrics: Arc<Metrics>,
    access_url: &str,
) -> Ctx {
    // Innermost: a change is refused once the reconcile's lease may have
    // expired, after any wait for the pacer or a retry.
    let cloud = cloud.fenced();
    let cloud = metered::meter(cloud, metrics.clone());
    let cloud = match pacer {
        Some(p) => cloud.paced(p),
        None => cloud,
    };
    let cloud = metered::retrying(cloud, 3);
    Ctx {
        cache: ServiceCache::new(cloud.ecs.clone()),
        store,
        cloud,
        source: format!("berth-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        lease_ttl: LEASE_TTL,
        lease_renewed: Arc::default(),
        steady_requeue: Duration::from_secs(3600),
        agent: workspace::render::AgentDelivery {
            access_url: access_url.to_string(),
            digests: Default::default(),
        },
        require_agent: true,
        agent_disconnect_grace: workspace::status::AGENT_DISCONNECT_GRACE,
        crash_point: None,
        metrics,
        clock: Arc::new(crate::lifecycle::SystemClock),
    }
}

/// Lease time-to-live of a workspace's reconcile: renewed every 3 s, so a
/// replica that dies is replaced about 9 s later (the others look again as
/// its lease expires).
pub const LEASE_TTL: Duration = Duration::from_secs(9);

/// How often a replica re-reads how many replicas are live to split the
/// account's API budget: a replica that joins is accounted for by the
/// others within this.
pub const PACING_SHARE_REFRESH: Duration = Duration::from_secs(2);

/// Splits the account's AWS API budget between the live replicas: every
/// `every`, this replica's pacer takes 1/N of the configured rates, N the
/// replicas whose heartbeat is fresh (the table `replicas`). Runs until
/// dropped; a failed read keeps the last share.
pub async fn pace_by_live_replicas(store: Store, pacer: Arc<Pacer>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = 0;
    loop {
        tick.tick().await;
        match store.replicas_live().await {
            Ok(n) => {
                let n = n.max(1);
                if n != last {
                    pacer.set_share(1.0 / n as f64);
                    tracing::info!(
                        replicas = n,
                        "AWS API budget split between {n} live replica(s)"
                    );
                    last = n;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not count the live replicas; pacing share kept")
            }
        }
    }
}

fn error_policy(_key: &WsKey, err: &ReconcileError, retry: Retry) -> Action {
    match err {
        ReconcileError::NotYet(_) => Action::requeue(
            Duration::from_millis(500).max(retry.backoff.min(Duration::from_secs(2))),
        ),
        ReconcileError::Crash(_) => Action::await_change(),
        _ => Action::requeue(retry.backoff),
    }
}

/// Counts reconciles; a panicking one is also a Warning event on its
/// workspace (once per run of panics) and an error log, so a bug in one
/// workspace's reconcile is seen, while the controller goes on.
struct MetricsObserver(Arc<Metrics>, Store);

impl berth_runtime::Observer<WsKey> for MetricsObserver {
    fn reconciled(&self, event: &ReconcileEvent<'_, WsKey>) {
        let outcome = match event.outcome {
            ReconcileOutcome::Success { .. } => "ok",
            ReconcileOutcome::Failure { .. } => "error",
            _ => "panic",
        };
        self.0.reconciled("workspace", outcome, event.duration);
        if let ReconcileOutcome::Panicked {
            message,
            failures,
            retry_after,
        } = &event.outcome
        {
            let key = event.key.clone();
            tracing::error!(workspace = %format!("{}/{}", key.namespace, key.name), panic = %message, failures, "reconcile panicked; retrying");
            if *failures > 1 {
                return;
            }
            let (store, message, retry) = (self.1.clone(), message.to_string(), *retry_after);
            tokio::spawn(async move {
                let Ok(Some(obj)) = store
                    .object_get(Kind::Workspace, &key.namespace, &key.name)
                    .await
                else {
                    return;
                };
                let involved = crate::store::InvolvedObject {
                    kind: "Workspace".into(),
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    uid: obj.metadata.uid.unwrap_or_default(),
                };
                let _ = store
                    .event_record(
                        &involved,
                        crate::store::EventType::Warning,
                        "ReconcilePanicked",
                        &format!("the controller hit a bug reconciling this workspace ({message}); retrying in {}s, other workspaces are unaffected", retry.as_secs()),
                        "controller",
                    )
                    .await;
            });
        }
    }
}

/// Runs the workspace controller until `shutdown` resolves.
pub async fn run_workspace_controller(
    ctx: Arc<Ctx>,
    opts: ControllerOptions,
    budget: Option<ObservationBudget>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> RunReport<WsKey> {
    let controller = Controller::<WsKey>::new(Config {
        max_concurrent_reconciles: opts.concurrency,
        shutdown_grace: opts.shutdown_grace,
        resync_interval: opts.resync_min,
        // Transient errors are retried per call first; a workspace that
        // still fails backs off from 500 ms up to 30 s.
        backoff: berth_runtime::Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            jitter: 0.5,
        },
    });
    let handle = controller.handle();
    let mut tasks = tokio::task::JoinSet::new();

    // Watch → queue. Status writes (our own) are not triggers.
    {
        let (ctx, handle, poll) = (ctx.clone(), handle.clone(), opts.watch_poll);
        tasks.spawn(async move {
            let mut since: i64 = ctx.store.revision_current().await.unwrap_or_default();
            loop {
                let filter = WatchFilter {
                    kinds: vec![
                        Kind::Workspace,
                        Kind::WorkspaceTemplate,
                        Kind::LifecyclePolicy,
                    ],
                    skip_status_writes: true,
                    ..Default::default()
                };
                let mut stream = Box::pin(ctx.store.watch(filter, since, poll));
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(change) => {
                            since = change.revision;
                            if change.write == "status" {
                                continue;
                            }
                            let prio = if change.interactive {
                                Priority::Interactive
                            } else {
                                Priority::Bulk
                            };
                            for key in keys_for_change(&ctx.store, &change.object).await {
                                let _ = handle.enqueue(key, prio);
                            }
                        }
                        Err(StoreError::Gone(_)) => {
                            since = ctx.store.revision_current().await.unwrap_or(since);
                            if let Ok(keys) = list_keys(&ctx.store).await {
                                let _ = handle.enqueue_all(keys, Priority::Bulk);
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "store watch failed; resuming");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            break;
                        }
                    }
                }
                if handle.is_stopping() {
                    return;
                }
            }
        });
    }
    // Hot services: describe them often, wake their workspaces on change.
    // A round of N hot services costs N/10 DescribeServices calls; rounds
    // are spaced so they use at most half of the DescribeServices budget.
    {
        let (ctx, handle, every) = (ctx.clone(), handle.clone(), opts.hot_interval);
        tasks.spawn(async move {
            loop {
                let hot = ctx.cache.hot_count();
                match ctx.cache.refresh_hot().await {
                    Ok(keys) => {
                        for k in keys {
                            let _ = handle.enqueue(k, Priority::Bulk);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "hot refresh failed"),
                }
                let stats = handle.stats();
                ctx.metrics
                    .queue("workspace", stats.pending, stats.running, stats.backing_off);
                let calls = hot.div_ceil(10) as f64;
                let gap = budget
                    .map(|b| Duration::from_secs_f64(calls / (b.calls_per_second * 0.5).max(0.1)))
                    .unwrap_or_default();
                tokio::time::sleep(every.max(gap)).await;
            }
        });
    }
    // Lease heartbeat.
    {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(ctx.lease_ttl / 3);
            loop {
                tick.tick().await;
                let started = std::time::Instant::now();
                match ctx.store.lease_renew_all(&ctx.source, ctx.lease_ttl).await {
                    Ok(_) => {
                        *ctx.lease_renewed.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(started);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot renew leases; changes stop when they may have expired"),
                }
            }
        });
    }
    let resync_ctx = ctx.clone();
    let resync_handle = handle.clone();
    let controller = controller
        .resync(move || {
            let ctx = resync_ctx.clone();
            let handle = resync_handle.clone();
            let opts = opts.clone();
            async move {
                let (items, _) = ctx.store.object_list(Kind::Workspace, None, &Selector::default(), None).await?;
                // Observe every service in DescribeServices batches of 10, then
                // reconcile only what needs it: services whose observed state
                // changed (drift included), specs not yet acted on, and
                // workspaces never started or in a transition. Converged
                // workspaces requeue themselves on a slow period, so a resync
                // of 10,000 steady workspaces costs 1,000 describes, not
                // 10,000 reconciles.
                let mut services: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
                let mut by_service: std::collections::HashMap<(String, String), WsKey> = Default::default();
                let mut phases: BTreeMap<String, i64> = BTreeMap::new();
                let mut keys = Vec::new();
                for o in &items {
                    let st: WorkspaceStatus = serde_json::from_value(o.status.clone()).unwrap_or_default();
                    *phases.entry(format!("{:?}", st.phase)).or_default() += 1;
                    let key = WsKey { namespace: o.metadata.namespace.clone(), name: o.metadata.name.clone() };
                    let settled = matches!(st.phase, Phase::Running | Phase::Stopped)
                        && st.observed_generation == o.metadata.generation.unwrap_or(0)
                        && o.metadata.deletion_timestamp.is_none();
                    match st.ecs.filter(|e| !e.service_name.is_empty()) {
                        Some(e) => {
                            services.entry((e.region.clone(), e.cluster.clone())).or_default().push(e.service_name.clone());
                            if settled {
                                by_service.insert((e.cluster, e.service_name), key);
                            } else {
                                keys.push(key);
                            }
                        }
                        None => keys.push(key),
                    }
                }
                ctx.metrics.workspaces_by_phase(&phases);
                match ctx.cache.refresh(&services).await {
                    Ok(changed) => keys.extend(changed.into_iter().filter_map(|id| by_service.remove(&id))),
                    Err(e) => {
                        tracing::warn!(error = %e, "resync: describing services failed; reconciling every workspace");
                        keys.extend(by_service.into_values());
                    }
                }
                if let Some(b) = budget {
                    let n: usize = services.values().map(Vec::len).sum();
                    let iv = b.resync_interval(n, opts.observation_share).clamp(opts.resync_min, opts.resync_max);
                    handle.set_resync_interval(iv);
                }
                Ok::<_, StoreError>(keys)
            }
        })
        .observer(MetricsObserver(ctx.metrics.clone(), ctx.store.clone()));
    let report = controller
        .run(workspace::reconcile, error_policy, ctx, shutdown)
        .await;
    tasks.abort_all();
    report
}

async fn list_keys(store: &Store) -> Result<Vec<WsKey>, StoreError> {
    let (items, _) = store
        .object_list(Kind::Workspace, None, &Selector::default(), None)
        .await?;
    Ok(items
        .into_iter()
        .map(|o| WsKey {
            namespace: o.metadata.namespace,
            name: o.metadata.name,
        })
        .collect())
}

/// The workspaces a change concerns: the workspace itself; for a template,
/// the workspaces using it; for a policy, every workspace of the namespace.
async fn keys_for_change(store: &Store, obj: &crate::api::DynObject) -> Vec<WsKey> {
    let ns = obj.metadata.namespace.clone();
    match obj.kind() {
        Some(Kind::Workspace) => vec![WsKey {
            namespace: ns,
            name: obj.metadata.name.clone(),
        }],
        Some(kind @ (Kind::WorkspaceTemplate | Kind::LifecyclePolicy)) => {
            let Ok((items, _)) = store
                .object_list(Kind::Workspace, Some(&ns), &Selector::default(), None)
                .await
            else {
                return Vec::new();
            };
            items
                .into_iter()
                .filter(|w| {
                    kind == Kind::LifecyclePolicy
                        || w.spec.pointer("/template/name").and_then(|v| v.as_str())
                            == Some(obj.metadata.name.as_str())
                })
                .map(|w| WsKey {
                    namespace: w.metadata.namespace,
                    name: w.metadata.name,
                })
                .collect()
        }
        Some(Kind::GitSource) | None => Vec::new(),
    }
}
