//! Fixtures for tests that run the workspace controller on the simulated cloud.

use std::sync::Arc;
use std::time::Duration;

use berth::api::meta::ConditionStatus;
use berth::api::workspace::Phase;
use berth::api::yaml::parse_documents;
use berth::api::{Kind, WorkspaceStatus};
use berth::apply::apply;
use berth::controllers::{self, ControllerOptions, Ctx};
use berth::metrics::Metrics;
use berth::store::{Identity, Store};
use berth_cloud::sim::{Delays, RateLimits, Sim, SimConfig};
use berth_cloud::Cloud;

pub const CLUSTER: &str = "CoderCluster";

pub fn fast_sim() -> Sim {
    let mut cfg = SimConfig::permissive();
    cfg.delays = Delays {
        provisioning: Duration::from_millis(100),
        pending: Duration::from_millis(100),
        stopping: Duration::from_millis(100),
        restart: Duration::from_millis(200),
        access_point_creating: Duration::from_millis(50),
        access_point_deleting: Duration::from_millis(50),
        ..Delays::default()
    };
    cfg.rate_limits = RateLimits::disabled();
    Sim::new(cfg)
}

pub fn opts() -> ControllerOptions {
    ControllerOptions {
        concurrency: 16,
        resync_min: Duration::from_secs(1),
        resync_max: Duration::from_secs(2),
        hot_interval: Duration::from_millis(100),
        watch_poll: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(2),
        ..ControllerOptions::default()
    }
}

pub fn ctx(store: &Store, sim: &Sim) -> Ctx {
    let mut c = controllers::context(
        store.clone(),
        Cloud::from_sim(sim),
        None,
        Arc::new(Metrics::new()),
        "http://berth.test",
    );
    c.lease_ttl = Duration::from_secs(3);
    // No agent runs in these tests: a running task is ready.
    c.require_agent = false;
    c
}

pub struct Running {
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<()>,
}

pub fn spawn_controller(ctx: Arc<Ctx>) -> Running {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        controllers::run_workspace_controller(ctx, opts(), None, async move {
            let _ = rx.await;
        })
        .await;
    });
    Running { stop: tx, task }
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

pub fn admin() -> Identity {
    Identity {
        user: "admin".into(),
        admin: true,
    }
}

pub async fn apply_yaml(store: &Store, yaml: &str) {
    apply(store, &admin(), &parse_documents(yaml).unwrap(), false)
        .await
        .unwrap();
}

pub async fn status(store: &Store, name: &str) -> WorkspaceStatus {
    let o = store
        .object_get(Kind::Workspace, "default", name)
        .await
        .unwrap()
        .expect("workspace exists");
    serde_json::from_value(o.status).unwrap_or_default()
}

pub fn condition(st: &WorkspaceStatus, t: &str) -> (ConditionStatus, String) {
    st.conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status, c.reason.clone()))
        .unwrap_or((ConditionStatus::Unknown, String::new()))
}

pub async fn wait_until<F: Fn(&WorkspaceStatus) -> bool>(
    store: &Store,
    name: &str,
    what: &str,
    f: F,
) -> WorkspaceStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(store, name).await;
        if f(&st) {
            return st;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{name}: timed out waiting for {what}; status: {}",
                serde_json::to_string_pretty(&st).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn is_running(st: &WorkspaceStatus) -> bool {
    st.phase == Phase::Running && condition(st, "Ready").0 == ConditionStatus::True
}

pub fn is_stopped(st: &WorkspaceStatus) -> bool {
    st.phase == Phase::Stopped
}

/// The ECS service name and task definition family of workspace `name`
/// (it has the workspace's uid in it).
#[allow(dead_code)]
pub async fn family(store: &Store, name: &str) -> String {
    let o = store
        .object_get(Kind::Workspace, "default", name)
        .await
        .unwrap()
        .expect("workspace exists");
    let uid = o.metadata.uid.expect("uid").to_string();
    berth::controllers::workspace::render::WorkspaceIdent {
        namespace: "default",
        name,
        uid: &uid,
        recorded: None,
    }
    .family()
}

/// The name of the agent token's secret of workspace `name` (by its uid).
#[allow(dead_code)]
pub async fn agent_secret(store: &Store, name: &str) -> String {
    let uid = store
        .object_get(Kind::Workspace, "default", name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no workspace {name}"))
        .metadata
        .uid
        .unwrap();
    format!("berth/default/{name}/{uid}/agent-token")
}

pub async fn events(store: &Store, name: &str) -> Vec<(String, String)> {
    store
        .event_list(Kind::Workspace, "default", name, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.reason, e.message))
        .collect()
}

/// Waits (up to 30 s) for an event of `name` that `f` accepts: a reconcile
/// records its events after the status it writes, so a test that has just
/// seen the status may have to wait a moment for the event.
#[allow(dead_code)]
pub async fn wait_for_event<F: Fn(&str, &str) -> bool>(
    store: &Store,
    name: &str,
    f: F,
) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let evs = events(store, name).await;
        if evs.iter().any(|(r, m)| f(r, m)) {
            return evs;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{name}: timed out waiting for an event; events: {evs:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reconciles `key` with a context whose crash point is `point` until the
/// reconcile stops there (access points take a moment to become available,
/// so the first passes may end earlier); panics if it never does.
pub async fn reconcile_until_crash(
    key: &berth::controllers::WsKey,
    ctx: Arc<Ctx>,
    point: berth::controllers::workspace::CrashPoint,
) {
    for _ in 0..50 {
        match berth::controllers::workspace::reconcile(key.clone(), ctx.clone()).await {
            Err(berth::controllers::ReconcileError::Crash(p)) => {
                assert_eq!(p, point);
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("{point:?} never reached");
}
