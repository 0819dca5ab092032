//! The workspace controller end to end on the **AWS backend** (aws-sdk-ecs,
//! aws-sdk-efs, aws-sdk-secretsmanager) against moto_server, an AWS API
//! emulator started per test on a free loopback port, with a real
//! PostgreSQL.
//!
//! What moto does not do shapes the expectations: it never runs tasks (a
//! service's runningCount only jumps to desiredCount on an update, and its
//! deployment stays IN_PROGRESS), so a started workspace reads `Starting`
//! with desiredCount 1 rather than `Running`; it ignores client tokens and
//! silently replaces a service created twice, so "no duplicate" is proven by
//! counting successful CreateService calls, not only objects in moto's state;
//! and it does not echo a service's deploymentConfiguration, so drift of
//! that is proven on the sim (tests/controller.rs), desiredCount and task
//! definition drift here.
//! Convergence and validation are covered against the sim
//! (tests/controller.rs).

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth::api::meta::ConditionStatus;
use berth::api::workspace::Phase;
use berth::api::{Kind, WorkspaceStatus};
use berth::controllers::workspace::CrashPoint;
use berth::controllers::{self, Ctx, WsKey};
use berth::metrics::Metrics;
use berth::store::{NewIntent, PowerAction, Store};
use berth_aws::testing::{Infrastructure, Moto};
use berth_cloud::ecs::{ServiceStatus, TaskDefinition, FAILURE_MISSING};
use berth_cloud::efs::AccessPoint;
use berth_cloud::{tags, Cloud};

use common::sim::{apply_yaml, condition, spawn_controller, status, wait_until};

fn template(infra: &Infrastructure) -> String {
    format!(
        r#"
apiVersion: berth.dev/v1alpha1
kind: WorkspaceTemplate
metadata:
  name: dev
spec:
  infrastructure:
    region: us-east-1
    cluster: {cluster}
    subnets: [{subnet}]
    securityGroups: [{sg}]
    assignPublicIp: true
    fileSystemId: {fs}
    executionRoleArn: arn:aws:iam::123456789012:role/berth-execution
    taskRoleArn: arn:aws:iam::123456789012:role/berth-workspace
    logGroup: /berth/workspaces
  container:
    image: ghcr.io/example/dev:1
    homePath: /home/dev
  resources:
    default: {{cpu: 1024, memory: 2048}}
"#,
        cluster = infra.cluster,
        subnet = infra.subnet,
        sg = infra.security_group,
        fs = infra.file_system,
    )
}

struct Env {
    moto: Moto,
    infra: Infrastructure,
    /// An unwrapped client for assertions (not metered).
    cloud: Cloud,
    store: Store,
    metrics: Arc<Metrics>,
}

impl Env {
    async fn new() -> Env {
        let moto = Moto::start();
        let infra = moto.setup();
        let cloud = berth_aws::connect(moto.options()).await.expect("connect");
        let store = common::store().await;
        apply_yaml(&store, &template(&infra)).await;
        Env {
            moto,
            infra,
            cloud,
            store,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// A controller context on the AWS backend (metered, retried), sharing
    /// this environment's metrics.
    async fn ctx(&self) -> Ctx {
        let cloud = berth_aws::connect_routed(self.moto.options())
            .await
            .expect("connect");
        let mut c = controllers::context(
            self.store.clone(),
            cloud,
            None,
            self.metrics.clone(),
            "http://berth.test",
        );
        c.lease_ttl = Duration::from_secs(3);
        // No agent runs on moto: a running task is ready.
        c.require_agent = false;
        c
    }

    async fn service(&self, name: &str) -> Option<berth_cloud::ecs::Service> {
        let svc = family(&self.store, name).await;
        self.service_named(&svc).await
    }

    async fn service_named(&self, svc: &str) -> Option<berth_cloud::ecs::Service> {
        let out = self
            .cloud
            .ecs
            .describe_services(&self.infra.cluster, &[svc.to_string()], true)
            .await
            .expect("describe services");
        if let Some(f) = out.failures.first() {
            assert_eq!(f.reason, FAILURE_MISSING);
        }
        out.services.into_iter().next()
    }

    async fn task_definition(&self, td: &str) -> TaskDefinition {
        self.cloud
            .ecs
            .describe_task_definition(td, true)
            .await
            .expect("describe task definition")
    }

    async fn access_points(&self) -> Vec<AccessPoint> {
        self.cloud
            .efs
            .describe_access_points(&self.infra.file_system)
            .await
            .expect("describe access points")
    }

    /// moto's state: (services, access points, task definitions) stored.
    fn moto_counts(&self) -> (usize, usize, usize) {
        let d: serde_json::Value = serde_json::from_str(&self.moto.data_json()).unwrap();
        let n = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
        (
            n(&d["ecs"]["Service"]),
            n(&d["efs"]["AccessPoint"]),
            n(&d["ecs"]["TaskDefinition"]),
        )
    }

    fn created_services(&self) -> u64 {
        self.metrics.cloud_calls("CreateService", "ok")
    }
}

async fn family(store: &Store, name: &str) -> String {
    common::sim::family(store, name).await
}

fn workspace(name: &str, extra: &str) -> String {
    common::workspace(name, name, extra)
}

/// Started as far as moto goes: the service exists with desiredCount 1 and
/// the status records it (moto never runs the task, so not `Running`).
fn is_started(st: &WorkspaceStatus) -> bool {
    st.ecs
        .as_ref()
        .is_some_and(|e| e.desired_count == 1 && !e.service_arn.is_empty())
        && matches!(st.phase, Phase::Starting | Phase::Running)
}

fn is_stopped(st: &WorkspaceStatus) -> bool {
    st.phase == Phase::Stopped && st.ecs.as_ref().is_some_and(|e| e.desired_count == 0)
}

async fn intent(store: &Store, name: &str, action: PowerAction) {
    store
        .intent_record("default", name, &NewIntent::manual(action, name))
        .await
        .unwrap();
}

async fn wait_gone(store: &Store, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store
        .object_get(Kind::Workspace, "default", name)
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} was not deleted: {:?}",
            status(store, name).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_starts_stops_and_changes_cpu_on_the_aws_backend() {
    let env = Env::new().await;
    let c = spawn_controller(Arc::new(env.ctx().await));
    apply_yaml(&env.store, &workspace("alice", "")).await;
    let st = wait_until(&env.store, "alice", "started", is_started).await;
    assert_eq!(st.phase, Phase::Starting, "moto never runs tasks");
    assert_eq!(condition(&st, "Ready").0, ConditionStatus::False);
    assert_eq!(st.template_version, Some(1));

    // The ECS service: desiredCount 1, tagged, in the template's network.
    let svc = env.service("alice").await.expect("service");
    assert_eq!(svc.status, ServiceStatus::Active);
    assert_eq!(svc.desired_count, 1);
    assert_eq!(svc.service_arn, st.ecs.as_ref().unwrap().service_arn);
    assert_eq!(svc.tags.get(tags::NAME).map(String::as_str), Some("alice"));
    assert_eq!(
        svc.tags.get(tags::NAMESPACE).map(String::as_str),
        Some("default")
    );
    let uid = svc.tags.get(tags::UID).cloned().expect("uid tag");
    assert_eq!(
        svc.network_configuration.subnets,
        vec![env.infra.subnet.clone()]
    );
    assert_eq!(
        svc.network_configuration.security_groups,
        vec![env.infra.security_group.clone()]
    );
    // Tasks carry the service's (the workspace's) tags, for costs per workspace.
    assert_eq!(
        svc.propagate_tags,
        Some(berth_cloud::ecs::PropagateTags::Service),
        "propagateTags as moto read it back"
    );

    // The task definition: CPU/memory, roles, env, the agent token as a
    // secret reference, the EFS volume through the access point.
    let td = env.task_definition(&svc.task_definition).await;
    assert_eq!((td.cpu, td.memory), (1024, 2048));
    assert_eq!(td.revision, 1);
    assert_eq!(
        td.execution_role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/berth-execution")
    );
    assert!(tags::is_owned_by(&td.tags, &uid));
    assert_eq!(
        td.tags.get(tags::CONTENT_HASH),
        Some(&st.ecs.as_ref().unwrap().content_hash)
    );
    let container = &td.container_definitions[0];
    assert_eq!(container.image, "ghcr.io/example/dev:1");
    assert!(!container.environment.is_empty());
    assert!(
        container.secrets.iter().any(|s| s
            .value_from
            .contains(&format!(":secret:berth/default/alice/{uid}/agent-token"))),
        "{:?}",
        container.secrets
    );
    let mount = container.mount_points.first().expect("home mount");
    assert_eq!(mount.container_path, "/home/dev");
    let vol = td
        .volumes
        .iter()
        .find(|v| v.name == mount.source_volume)
        .and_then(|v| v.efs_volume_configuration.clone())
        .expect("EFS volume");
    assert_eq!(vol.file_system_id, env.infra.file_system);
    assert!(vol.transit_encryption);

    // The access point: the owner's directory, the POSIX user, tagged.
    let aps = env.access_points().await;
    assert_eq!(aps.len(), 1);
    let ap = &aps[0];
    assert_eq!(
        vol.access_point_id.as_deref(),
        Some(ap.access_point_id.as_str())
    );
    assert_eq!(ap.root_directory.path, "/home/default/alice");
    assert!(ap.root_directory.creation_info.is_some());
    assert!(ap.posix_user.is_some());
    // The owner's home: tagged with the namespace and owner, read back from moto.
    assert!(
        tags::is_home_of(&ap.tags, "default", "alice"),
        "{:?}",
        ap.tags
    );
    assert_eq!(st.efs.as_ref().unwrap().access_point_id, ap.access_point_id);

    // A CPU change while started: no new revision now (applies at the next
    // start), the workspace says so.
    apply_yaml(
        &env.store,
        &workspace("alice", "  resources: {cpu: 2048, memory: 4096}\n"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.task_definition(&family(&env.store, "alice").await)
            .await
            .revision,
        1
    );
    let svc = env.service("alice").await.unwrap();
    assert!(
        svc.task_definition.ends_with(":1"),
        "{}",
        svc.task_definition
    );

    // Stop: desiredCount 0.
    intent(&env.store, "alice", PowerAction::Stop).await;
    wait_until(&env.store, "alice", "stopped", is_stopped).await;
    assert_eq!(env.service("alice").await.unwrap().desired_count, 0);
    assert_eq!(
        env.task_definition(&family(&env.store, "alice").await)
            .await
            .revision,
        1
    );

    // Start: the new revision with the new CPU, on the same service.
    intent(&env.store, "alice", PowerAction::Start).await;
    let st = wait_until(&env.store, "alice", "restarted", |st| {
        is_started(st)
            && st
                .ecs
                .as_ref()
                .is_some_and(|e| e.task_definition_arn.ends_with(":2"))
    })
    .await;
    let svc = env.service("alice").await.unwrap();
    assert_eq!(svc.desired_count, 1);
    assert!(
        svc.task_definition
            .ends_with(&format!("{}:2", family(&env.store, "alice").await)),
        "{}",
        svc.task_definition
    );
    let td2 = env.task_definition(&svc.task_definition).await;
    assert_eq!((td2.cpu, td2.memory), (2048, 4096));
    assert_eq!(st.ecs.as_ref().unwrap().service_arn, svc.service_arn);

    // Stop and start again without a change: no third revision.
    intent(&env.store, "alice", PowerAction::Stop).await;
    wait_until(&env.store, "alice", "stopped again", is_stopped).await;
    intent(&env.store, "alice", PowerAction::Start).await;
    wait_until(&env.store, "alice", "started again", is_started).await;
    assert_eq!(
        env.task_definition(&family(&env.store, "alice").await)
            .await
            .revision,
        2
    );

    // One service, one access point, two revisions; one CreateService.
    assert_eq!(env.moto_counts(), (1, 1, 2));
    assert_eq!(env.created_services(), 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_removes_the_service_and_the_access_point_only_under_delete() {
    let env = Env::new().await;
    let c = spawn_controller(Arc::new(env.ctx().await));
    apply_yaml(&env.store, &workspace("keep", "")).await;
    apply_yaml(&env.store, &workspace("drop", "  deletionPolicy: Delete\n")).await;
    wait_until(&env.store, "keep", "started", is_started).await;
    wait_until(&env.store, "drop", "started", is_started).await;
    let names = [
        family(&env.store, "keep").await,
        family(&env.store, "drop").await,
    ];
    // One home per owner (here: keep and drop).
    assert_eq!(env.access_points().await.len(), 2);

    env.store
        .object_delete(Kind::Workspace, "default", "keep", None)
        .await
        .unwrap();
    env.store
        .object_delete(Kind::Workspace, "default", "drop", None)
        .await
        .unwrap();
    wait_gone(&env.store, "keep").await;
    wait_gone(&env.store, "drop").await;

    // Both services are gone (INACTIVE, as ECS keeps deleted services
    // describable for a while) …
    for name in &names {
        if let Some(s) = env.service_named(name).await {
            assert_eq!(s.status, ServiceStatus::Inactive, "{name}: {s:?}");
        }
    }
    // … the Retain workspace's home stays, the Delete one's (its owner's
    // last workspace) is gone.
    let aps = env.access_points().await;
    assert_eq!(aps.len(), 1, "{aps:?}");
    assert!(tags::is_home_of(&aps[0].tags, "default", "keep"), "{aps:?}");
    assert_eq!(aps[0].root_directory.path, "/home/default/keep");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_create_and_the_status_write_adopts_instead_of_duplicating() {
    for point in [
        CrashPoint::AfterAccessPoint,
        CrashPoint::AfterRegister,
        CrashPoint::AfterCreateService,
    ] {
        let env = Env::new().await;
        apply_yaml(&env.store, &workspace("gina", "")).await;
        let key = WsKey {
            namespace: "default".into(),
            name: "gina".into(),
        };
        let mut crashing = env.ctx().await;
        crashing.crash_point = Some(point);
        let crashing = Arc::new(crashing);
        common::sim::reconcile_until_crash(&key, crashing, point).await;
        // A restarted controller: fresh process state and clients, same
        // store and the same AWS account.
        let c = spawn_controller(Arc::new(env.ctx().await));
        wait_until(&env.store, "gina", "started after restart", is_started).await;
        // Let a few more passes run: none may create anything.
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.stop().await;
        assert_eq!(
            env.moto_counts(),
            (1, 1, 1),
            "{point:?}: one service, one access point, one task definition revision"
        );
        assert_eq!(env.access_points().await.len(), 1, "{point:?}");
        assert_eq!(env.created_services(), 1, "{point:?}: one CreateService");
        assert_eq!(
            env.metrics.cloud_calls("CreateAccessPoint", "ok"),
            1,
            "{point:?}: one CreateAccessPoint"
        );
        assert_eq!(
            env.metrics.cloud_calls("RegisterTaskDefinition", "ok"),
            1,
            "{point:?}: one RegisterTaskDefinition"
        );
        let st = status(&env.store, "gina").await;
        let svc = env.service("gina").await.expect("service");
        assert_eq!(st.ecs.as_ref().unwrap().service_arn, svc.service_arn);
        assert_eq!(
            st.efs.as_ref().unwrap().access_point_id,
            env.access_points().await[0].access_point_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_5xx_are_retried_a_bounded_number_of_times_and_counted() {
    use berth_aws::testing::{Fault, FaultProxy};
    let moto = Moto::start();
    let infra = moto.setup();
    let proxy = FaultProxy::start(&moto);
    let cloud = berth_aws::connect(berth_aws::AwsOptions {
        endpoint_url: Some(proxy.endpoint()),
        ..moto.options()
    })
    .await
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    let ctx = controllers::context(
        common::store().await,
        cloud,
        None,
        metrics.clone(),
        "http://berth.test",
    );

    // Two throttles then success: Berth's single-call retry absorbs them,
    // and every throttled attempt shows in the metrics.
    proxy.inject([Fault::Throttle, Fault::Throttle]);
    ctx.ecs()
        .list_services(&infra.cluster)
        .await
        .expect("retried");
    assert_eq!(proxy.requests(), 3);
    assert_eq!(metrics.cloud_calls("ListServices", "throttled"), 2);
    assert_eq!(metrics.cloud_calls("ListServices", "ok"), 1);

    // A persistent 503: exactly 3 attempts (SDK retries off), then a
    // transient error for the workspace's own backoff.
    proxy.inject(vec![Fault::Unavailable; 10]);
    let err = ctx.ecs().list_services(&infra.cluster).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(proxy.requests(), 6, "3 attempts, not 3 × SDK retries");
    assert_eq!(metrics.cloud_calls("ListServices", "transient"), 3);
}

async fn started_in(store: &Store, ns: &str, name: &str) -> WorkspaceStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st: Option<WorkspaceStatus> = store
            .object_get(Kind::Workspace, ns, name)
            .await
            .unwrap()
            .map(|o| serde_json::from_value(o.status).unwrap_or_default());
        if let Some(st) = st.filter(is_started) {
            return st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ns}/{name} not started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn in_namespace(yaml: &str, ns: &str) -> String {
    yaml.replacen("metadata:\n", &format!("metadata:\n  namespace: {ns}\n"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homes_are_per_owner_and_namespace_and_names_that_collided_are_distinct_on_moto() {
    let env = Env::new().await;
    for ns in ["team-a", "team"] {
        apply_yaml(&env.store, &in_namespace(&template(&env.infra), ns)).await;
    }
    let c = spawn_controller(Arc::new(env.ctx().await));
    // Two of kim's workspaces in one namespace, one in another; and the two
    // names that `berth-<ns>-<name>` made one.
    apply_yaml(&env.store, &common::workspace("one", "kim", "")).await;
    apply_yaml(&env.store, &common::workspace("two", "kim", "")).await;
    apply_yaml(
        &env.store,
        &in_namespace(&common::workspace("x", "kim", ""), "team-a"),
    )
    .await;
    apply_yaml(
        &env.store,
        &in_namespace(&common::workspace("a-x", "kim", ""), "team"),
    )
    .await;
    let one = started_in(&env.store, "default", "one").await;
    let two = started_in(&env.store, "default", "two").await;
    let x = started_in(&env.store, "team-a", "x").await;
    let ax = started_in(&env.store, "team", "a-x").await;
    let ap = |st: &WorkspaceStatus| st.efs.as_ref().unwrap().access_point_id.clone();
    assert_eq!(ap(&one), ap(&two), "one home for kim in default");
    assert_ne!(ap(&x), ap(&one));
    assert_ne!(ap(&x), ap(&ax));
    // Read back from moto: three access points, one per (namespace, owner).
    let mut roots: Vec<String> = env
        .access_points()
        .await
        .into_iter()
        .map(|a| a.root_directory.path)
        .collect();
    roots.sort();
    assert_eq!(
        roots,
        ["/home/default/kim", "/home/team-a/kim", "/home/team/kim"]
    );
    // Four services, the collided pair among them.
    let (sx, sax) = (x.ecs.unwrap().service_name, ax.ecs.unwrap().service_name);
    assert_ne!(sx, sax);
    for svc in [&sx, &sax] {
        assert!(env.service_named(svc).await.is_some(), "{svc} on moto");
    }
    assert_eq!(env.moto_counts().0, 4);

    // Deleted with Retain and made again: the home is adopted, not re-made.
    for name in ["one", "two"] {
        env.store
            .object_delete(Kind::Workspace, "default", name, None)
            .await
            .unwrap();
        wait_gone(&env.store, name).await;
    }
    apply_yaml(&env.store, &common::workspace("one", "kim", "")).await;
    let again = started_in(&env.store, "default", "one").await;
    assert_eq!(ap(&again), ap(&one));
    assert_eq!(env.access_points().await.len(), 3);
    assert_eq!(env.metrics.cloud_calls("CreateAccessPoint", "ok"), 3);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workspace_runs_in_its_templates_region_on_one_moto() {
    let env = Env::new().await;
    // A second region with infrastructure of its own, and a template there.
    let west = env.moto.setup_in("eu-west-1");
    let tpl = template(&west)
        .replace("  name: dev\n", "  name: dev-eu\n")
        .replace("region: us-east-1", "region: eu-west-1");
    apply_yaml(&env.store, &tpl).await;
    let c = spawn_controller(Arc::new(env.ctx().await));
    apply_yaml(&env.store, &workspace("east", "")).await;
    apply_yaml(
        &env.store,
        &workspace("west", "").replace("    name: dev\n", "    name: dev-eu\n"),
    )
    .await;
    let east = wait_until(&env.store, "east", "started", is_started).await;
    let west_st = wait_until(&env.store, "west", "started", is_started).await;
    c.stop().await;
    let (e, w) = (east.ecs.unwrap(), west_st.ecs.unwrap());
    assert_eq!(
        (e.region.as_str(), w.region.as_str()),
        ("us-east-1", "eu-west-1")
    );
    assert!(w.service_arn.contains(":eu-west-1:"), "{}", w.service_arn);
    assert!(
        w.task_definition_arn.contains(":eu-west-1:"),
        "{}",
        w.task_definition_arn
    );
    assert!(
        w.agent_secret_arn.contains(":eu-west-1:"),
        "{}",
        w.agent_secret_arn
    );
    assert!(e.service_arn.contains(":us-east-1:"), "{}", e.service_arn);
    // Read back from moto, region by region.
    let eu = berth_aws::connect(env.moto.options_in("eu-west-1"))
        .await
        .unwrap();
    let found = eu
        .ecs
        .describe_services(&west.cluster, std::slice::from_ref(&w.service_name), true)
        .await
        .unwrap();
    assert_eq!(found.services.len(), 1, "the west service is in eu-west-1");
    assert!(
        env.service_named(&w.service_name).await.is_none(),
        "not in us-east-1"
    );
    assert!(env.service("east").await.is_some());
    let aps = eu
        .efs
        .describe_access_points(&west.file_system)
        .await
        .unwrap();
    assert_eq!(aps.len(), 1);
    assert_eq!(west_st.efs.unwrap().access_point_id, aps[0].access_point_id);
    assert_eq!(env.access_points().await.len(), 1, "east's home only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_made_in_moto_is_corrected_at_the_next_resync_with_an_event_naming_it() {
    use berth_cloud::ecs::UpdateService;
    let env = Env::new().await;
    let c = spawn_controller(Arc::new(env.ctx().await));
    apply_yaml(&env.store, &workspace("drifty", "")).await;
    let st = wait_until(&env.store, "drifty", "started", is_started).await;
    let e = st.ecs.unwrap();
    // Someone points the service at another revision of the family …
    let mut other = env.task_definition(&e.task_definition_arn).await;
    other.container_definitions[0].image = "example/other:9".into();
    let foreign = env
        .cloud
        .ecs
        .register_task_definition(berth_cloud::ecs::RegisterTaskDefinition {
            family: other.family.clone(),
            cpu: other.cpu,
            memory: other.memory,
            container_definitions: other.container_definitions.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    env.cloud
        .ecs
        .update_service(UpdateService {
            cluster: e.cluster.clone(),
            service: e.service_name.clone(),
            task_definition: Some(foreign.task_definition_arn.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    common::sim::wait_for_event(&env.store, "drifty", |r, m| {
        r == "DriftCorrected" && m.contains(&format!(":{}", foreign.revision))
    })
    .await;
    let svc = env.service_named(&e.service_name).await.unwrap();
    assert!(
        svc.task_definition
            .ends_with(&format!(":{}", other.revision)),
        "set back: {}",
        svc.task_definition
    );
    // … then scales it to 0.
    env.cloud
        .ecs
        .update_service(UpdateService {
            cluster: e.cluster.clone(),
            service: e.service_name.clone(),
            desired_count: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    common::sim::wait_for_event(&env.store, "drifty", |r, m| {
        r == "DriftCorrected" && m.contains("desiredCount was set to 0")
    })
    .await;
    assert_eq!(
        env.service_named(&e.service_name)
            .await
            .unwrap()
            .desired_count,
        1
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_service_is_left_alone_and_deleted_objects_are_made_again_on_moto() {
    let env = Env::new().await;
    // Someone else's service already has the name the workspace will get.
    apply_yaml(&env.store, &workspace("zed", "  running: false\n")).await;
    let name = family(&env.store, "zed").await;
    let td = env
        .cloud
        .ecs
        .register_task_definition(berth_cloud::ecs::RegisterTaskDefinition {
            family: name.clone(),
            cpu: 256,
            memory: 512,
            container_definitions: vec![berth_cloud::ecs::ContainerDefinition {
                name: "other".into(),
                image: "example/other:1".into(),
                essential: true,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    env.cloud
        .ecs
        .create_service(berth_cloud::ecs::CreateService {
            cluster: env.infra.cluster.clone(),
            service_name: name.clone(),
            task_definition: td.task_definition_arn.clone(),
            desired_count: 1,
            network_configuration: berth_cloud::ecs::NetworkConfiguration {
                subnets: vec![env.infra.subnet.clone()],
                ..Default::default()
            },
            tags: tags::owner_tags("someone-else", "default", "zed"),
            ..Default::default()
        })
        .await
        .unwrap();
    let c = spawn_controller(Arc::new(env.ctx().await));
    apply_yaml(&env.store, &workspace("zed", "  running: true\n")).await;
    wait_until(&env.store, "zed", "Failed", |st| st.phase == Phase::Failed).await;
    common::sim::wait_for_event(&env.store, "zed", |r, m| {
        r == "ForeignObject" && m.contains("someone-else")
    })
    .await;
    let svc = env.service_named(&name).await.unwrap();
    assert_eq!(svc.task_definition, td.task_definition_arn, "untouched");
    assert_eq!(
        svc.tags.get(tags::UID).map(String::as_str),
        Some("someone-else")
    );

    // Another workspace's service and home deleted in the console: made
    // again (under a new client token for the service).
    apply_yaml(&env.store, &workspace("ivy", "")).await;
    let st = wait_until(&env.store, "ivy", "started", is_started).await;
    let (e, ap) = (st.ecs.unwrap(), st.efs.unwrap().access_point_id);
    env.cloud
        .ecs
        .delete_service(berth_cloud::ecs::DeleteService {
            cluster: e.cluster.clone(),
            service: e.service_name.clone(),
            force: true,
        })
        .await
        .unwrap();
    env.cloud.efs.delete_access_point(&ap).await.unwrap();
    let st = wait_until(&env.store, "ivy", "made again", |st| {
        is_started(st) && st.efs.as_ref().is_some_and(|f| f.access_point_id != ap)
    })
    .await;
    assert_eq!(st.ecs.as_ref().unwrap().service_attempt, 1);
    let again = env.service_named(&e.service_name).await.unwrap();
    assert_eq!(again.status, ServiceStatus::Active);
    assert_eq!(again.desired_count, 1);
    let aps = env.access_points().await;
    assert!(aps.iter().all(|a| a.access_point_id != ap));
    assert!(aps
        .iter()
        .any(|a| a.access_point_id == st.efs.as_ref().unwrap().access_point_id));
    c.stop().await;
}
