//! The workspace controller end to end: a real PostgreSQL, the API's apply
//! engine, and the simulated ECS/EFS (`sim`) with short delays.

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
use berth_cloud::ecs::{DeleteService, Ecs, UpdateService};
use berth_cloud::ops::Operation;
use berth_cloud::sim::{Faults, Outcome, Sim};
use berth_cloud::Cloud;

use common::sim::{
    agent_secret, apply_yaml, condition, ctx as base_ctx, family, fast_sim, is_running, is_stopped,
    spawn_controller, wait_until, CLUSTER,
};

fn ctx(store: &Store, sim: &Sim) -> Arc<Ctx> {
    Arc::new(base_ctx(store, sim))
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
            "{name} was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn events(store: &Store, name: &str) -> Vec<String> {
    common::sim::events(store, name)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect()
}

#[tokio::test]
async fn a_new_workspace_becomes_ready_with_its_access_point_task_definition_and_service() {
    let store = common::store().await;
    let sim = fast_sim();
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, common::TEMPLATE).await;
    apply_yaml(
        &store,
        &common::workspace("alice", "alice", "  resources: {cpu: 2048, memory: 4096}\n"),
    )
    .await;
    let st = wait_until(&store, "alice", "Ready", is_running).await;
    assert_eq!(condition(&st, "Synced").0, ConditionStatus::True);
    assert_eq!(st.template_version, Some(1));
    // Everything is made in the template's region (us-west-2), not the
    // simulator's default (us-east-1).
    let e = st.ecs.as_ref().unwrap();
    assert_eq!(e.region, "us-west-2");
    for arn in [&e.service_arn, &e.task_definition_arn, &e.agent_secret_arn] {
        assert!(arn.contains(":us-west-2:"), "{arn}");
    }
    let svc = sim
        .service(CLUSTER, &family(&store, "alice").await)
        .expect("service");
    assert_eq!(svc.desired_count, 1);
    assert_eq!(
        svc.tags.get("berth.dev/name").map(String::as_str),
        Some("alice")
    );
    let td = sim.task_definition(&svc.task_definition).unwrap();
    assert_eq!((td.cpu, td.memory), (2048, 4096));
    let vol = td.volumes[0].efs_volume_configuration.clone().unwrap();
    let aps = sim.access_points("fs-1");
    assert_eq!(aps.len(), 1);
    assert_eq!(
        vol.access_point_id.as_deref(),
        Some(aps[0].access_point_id.as_str())
    );
    // The owner's home in the namespace.
    assert_eq!(aps[0].root_directory.path, "/home/default/alice");
    assert_eq!(
        aps[0].posix_user.as_ref().map(|p| (p.uid, p.gid)),
        Some((1000, 1000))
    );
    assert_eq!(
        st.efs.as_ref().unwrap().access_point_id,
        aps[0].access_point_id
    );
    let env = &td.container_definitions[0].environment;
    assert_eq!(
        env.get("BERTH_PARAM_VSCODE_WEB").map(String::as_str),
        Some("false")
    );
    // The agent token is a secret reference, never in the task definition or status.
    let token = sim
        .secret_value(&agent_secret(&store, "alice").await)
        .expect("agent token secret");
    assert!(!serde_json::to_string(&td).unwrap().contains(token.expose()));
    assert!(!serde_json::to_string(&st).unwrap().contains(token.expose()));
    let ev = events(&store, "alice").await;
    for reason in [
        "CreatedAccessPoint",
        "RegisteredTaskDefinition",
        "CreatedService",
        "Started",
    ] {
        assert!(
            ev.iter().any(|e| e == reason),
            "missing event {reason}: {ev:?}"
        );
    }
    c.stop().await;
}

#[tokio::test]
async fn stop_and_start_ten_times_register_no_new_revision_and_a_cpu_change_registers_one_at_the_next_start(
) {
    let store = common::store().await;
    let sim = fast_sim();
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, common::TEMPLATE).await;
    apply_yaml(&store, &common::workspace("bob", "bob", "")).await;
    wait_until(&store, "bob", "Ready", is_running).await;
    for i in 0..10 {
        store
            .intent_record(
                "default",
                "bob",
                &NewIntent::manual(PowerAction::Stop, "bob"),
            )
            .await
            .unwrap();
        let st = wait_until(&store, "bob", &format!("stop {i}"), is_stopped).await;
        assert_eq!(st.ecs.as_ref().unwrap().desired_count, 0);
        assert_eq!(
            sim.service(CLUSTER, &family(&store, "bob").await)
                .unwrap()
                .desired_count,
            0
        );
        store
            .intent_record(
                "default",
                "bob",
                &NewIntent::manual(PowerAction::Start, "bob"),
            )
            .await
            .unwrap();
        wait_until(&store, "bob", &format!("start {i}"), is_running).await;
    }
    assert_eq!(
        sim.revisions(&family(&store, "bob").await).len(),
        1,
        "restarts without changes must not register revisions"
    );
    let bob_secret = agent_secret(&store, "bob").await;
    let secret_before = sim.secret_value(&bob_secret).unwrap();

    // A CPU change while running waits for the next start, and Synced says so.
    apply_yaml(
        &store,
        &common::workspace("bob", "bob", "  resources: {cpu: 2048, memory: 4096}\n"),
    )
    .await;
    let st = wait_until(&store, "bob", "PendingRestart", |s| {
        condition(s, "Synced").1 == "PendingRestart"
    })
    .await;
    assert_eq!(st.phase, Phase::Running);
    assert_eq!(sim.revisions(&family(&store, "bob").await).len(), 1);
    store
        .intent_record(
            "default",
            "bob",
            &NewIntent::manual(PowerAction::Restart, "bob"),
        )
        .await
        .unwrap();
    let st = wait_until(&store, "bob", "restarted with the new size", |s| {
        is_running(s) && condition(s, "Synced").0 == ConditionStatus::True
    })
    .await;
    assert_eq!(
        sim.revisions(&family(&store, "bob").await).len(),
        2,
        "exactly one new revision for the CPU change"
    );
    let td = sim
        .task_definition(&st.ecs.as_ref().unwrap().task_definition_arn)
        .unwrap();
    assert_eq!((td.cpu, td.memory), (2048, 4096));
    assert_ne!(
        sim.secret_value(&bob_secret).unwrap(),
        secret_before,
        "each start gets a fresh token"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_new_template_version_shows_outdated_and_applies_on_restart() {
    let store = common::store().await;
    let sim = fast_sim();
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, common::TEMPLATE).await;
    apply_yaml(&store, &common::workspace("carol", "carol", "")).await;
    wait_until(&store, "carol", "Ready", is_running).await;
    let before = sim
        .service(CLUSTER, &family(&store, "carol").await)
        .unwrap()
        .task_definition;
    apply_yaml(&store, &common::TEMPLATE.replace("dev:1", "dev:2")).await;
    let st = wait_until(&store, "carol", "Outdated", |s| {
        condition(s, "Outdated").0 == ConditionStatus::True
    })
    .await;
    assert_eq!(st.template_version, Some(1));
    assert_eq!(
        st.phase,
        Phase::Running,
        "a new version never touches a running workspace"
    );
    assert_eq!(
        sim.service(CLUSTER, &family(&store, "carol").await)
            .unwrap()
            .task_definition,
        before
    );
    store
        .intent_record(
            "default",
            "carol",
            &NewIntent::manual(PowerAction::Restart, "carol"),
        )
        .await
        .unwrap();
    let st = wait_until(&store, "carol", "updated", |s| {
        s.template_version == Some(2) && is_running(s)
    })
    .await;
    assert_eq!(condition(&st, "Outdated").0, ConditionStatus::False);
    let td = sim
        .task_definition(
            &sim.service(CLUSTER, &family(&store, "carol").await)
                .unwrap()
                .task_definition,
        )
        .unwrap();
    assert_eq!(td.container_definitions[0].image, "ghcr.io/example/dev:2");
    c.stop().await;
}

#[tokio::test]
async fn deletion_removes_the_service_and_only_under_delete_policy_the_access_point() {
    let store = common::store().await;
    let sim = fast_sim();
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, common::TEMPLATE).await;
    apply_yaml(&store, &common::workspace("keep", "dora", "")).await;
    apply_yaml(
        &store,
        &common::workspace("drop", "erin", "  deletionPolicy: Delete\n"),
    )
    .await;
    wait_until(&store, "keep", "Ready", is_running).await;
    wait_until(&store, "drop", "Ready", is_running).await;
    assert_eq!(sim.access_point_count(), 2);
    store
        .object_delete(Kind::Workspace, "default", "keep", None)
        .await
        .unwrap();
    store
        .object_delete(Kind::Workspace, "default", "drop", None)
        .await
        .unwrap();
    wait_gone(&store, "keep").await;
    wait_gone(&store, "drop").await;
    // Deleted services drain before they are gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.service_count() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "services not deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let aps = sim.access_points("fs-1");
    assert_eq!(aps.len(), 1, "Retain keeps the access point: {aps:?}");
    assert_eq!(aps[0].root_directory.path, "/home/default/dora");
    let retained = aps[0].access_point_id.clone();
    assert!(
        !sim.secret_names()
            .iter()
            .any(|n| n.starts_with("berth/default/keep/")),
        "{:?}",
        sim.secret_names()
    );
    // Made again with the same name at once: a secret of its own (by uid),
    // never the deleted one's.
    apply_yaml(&store, &common::workspace("keep", "dora", "")).await;
    let st = wait_until(&store, "keep", "Ready again", is_running).await;
    // The retained home is adopted, not made again.
    assert_eq!(st.efs.unwrap().access_point_id, retained);
    assert_eq!(sim.access_points("fs-1").len(), 1);
    let secret = agent_secret(&store, "keep").await;
    assert_eq!(
        sim.secret_names()
            .into_iter()
            .filter(|n| n.starts_with("berth/default/keep/"))
            .collect::<Vec<_>>(),
        vec![secret]
    );
    c.stop().await;
}

#[tokio::test]
async fn drift_made_behind_berths_back_is_corrected_at_the_next_resync() {
    let store = common::store().await;
    let sim = fast_sim();
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, common::TEMPLATE).await;
    apply_yaml(&store, &common::workspace("frank", "frank", "")).await;
    wait_until(&store, "frank", "Ready", is_running).await;
    // Someone scales the service to 0 in the console.
    sim.update_service(UpdateService {
        cluster: CLUSTER.into(),
        service: family(&store, "frank").await,
        desired_count: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !events(&store, "frank")
        .await
        .iter()
        .any(|e| e == "DriftCorrected")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "drift not corrected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sim.service(CLUSTER, &family(&store, "frank").await)
            .unwrap()
            .desired_count,
        1
    );
    wait_until(&store, "frank", "running again", is_running).await;
    // Someone deletes the service.
    sim.delete_service(DeleteService {
        cluster: CLUSTER.into(),
        service: family(&store, "frank").await,
        force: true,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_until(&store, "frank", "recreated", is_running).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sim
        .service(CLUSTER, &family(&store, "frank").await)
        .is_none_or(|s| s.desired_count != 1 || s.status != berth_cloud::ecs::ServiceStatus::Active)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "service not recreated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sim.revisions(&family(&store, "frank").await).len(),
        1,
        "recreating reuses the revision"
    );
    c.stop().await;
}

/// One task per home: services are created with minimumHealthyPercent 0 /
/// maximumPercent 100, so a restart stops the old task before the new one
/// starts (never two servers writing one home); a deployment configuration
/// changed behind Berth's back is set back, with an event naming it.
#[tokio::test]
async fn a_restart_never_runs_two_tasks_of_one_workspace_and_the_deployment_configuration_is_kept()
{
    use berth_cloud::ecs::DeploymentConfiguration;
    let store = common::store().await;
    let sim = fast_sim();
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, common::TEMPLATE).await;
    apply_yaml(&store, &common::workspace("hana", "hana", "")).await;
    wait_until(&store, "hana", "Ready", is_running).await;
    let svc = sim.service(CLUSTER, &family(&store, "hana").await).unwrap();
    assert_eq!(
        svc.deployment_configuration,
        Some(DeploymentConfiguration::ONE_AT_A_TIME)
    );
    assert_eq!(
        svc.propagate_tags,
        Some(berth_cloud::ecs::PropagateTags::Service)
    );
    let hana = family(&store, "hana").await;
    let tasks_now = || {
        sim.tasks_snapshot()
            .into_iter()
            .filter(|t| t.service == hana)
            .count()
    };
    store
        .intent_record(
            "default",
            "hana",
            &berth::store::NewIntent::manual(berth::store::PowerAction::Restart, "hana"),
        )
        .await
        .unwrap();
    let mut most = 0;
    let mut replaced = false;
    let first = sim.tasks_snapshot()[0].task_id.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !replaced {
        most = most.max(tasks_now());
        replaced = sim.tasks_snapshot().iter().any(|t| {
            t.service == hana
                && t.task_id != first
                && t.last_status == berth_cloud::ecs::TaskStatus::Running
        });
        assert!(tokio::time::Instant::now() < deadline, "not restarted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        most, 1,
        "two tasks of one workspace at once during a restart"
    );

    // Someone sets ECS's default back in the console.
    sim.update_service(UpdateService {
        cluster: CLUSTER.into(),
        service: family(&store, "hana").await,
        deployment_configuration: Some(DeploymentConfiguration::ECS_DEFAULT),
        ..Default::default()
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let evs = common::sim::events(&store, "hana").await;
        if evs.iter().any(|(r, m)| {
            r == "DriftCorrected" && m.contains("minimumHealthyPercent 100 / maximumPercent 200")
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deployment configuration drift not corrected: {evs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sim.service(CLUSTER, &family(&store, "hana").await)
            .unwrap()
            .deployment_configuration,
        Some(DeploymentConfiguration::ONE_AT_A_TIME)
    );
    c.stop().await;
}

#[tokio::test]
async fn a_crash_between_a_cloud_create_and_the_status_write_adopts_instead_of_duplicating() {
    for point in [
        CrashPoint::AfterAccessPoint,
        CrashPoint::AfterRegister,
        CrashPoint::AfterCreateService,
    ] {
        let store = common::store().await;
        let sim = fast_sim();
        apply_yaml(&store, common::TEMPLATE).await;
        apply_yaml(&store, &common::workspace("gina", "gina", "")).await;
        let key = WsKey {
            namespace: "default".into(),
            name: "gina".into(),
        };
        let mut crashing = controllers::context(
            store.clone(),
            Cloud::from_sim(&sim),
            None,
            Arc::new(Metrics::new()),
            "http://berth.test",
        );
        crashing.crash_point = Some(point);
        let crashing = Arc::new(crashing);
        common::sim::reconcile_until_crash(&key, crashing, point).await;
        // A restarted controller: fresh process state, same store and cloud.
        let c = spawn_controller(ctx(&store, &sim));
        wait_until(&store, "gina", "Ready after restart", is_running).await;
        c.stop().await;
        assert_eq!(sim.service_count(), 1, "{point:?}: one service");
        assert_eq!(sim.access_point_count(), 1, "{point:?}: one access point");
        assert_eq!(
            sim.revisions(&family(&store, "gina").await).len(),
            1,
            "{point:?}: one task definition revision"
        );
        assert_eq!(
            sim.calls().get(Operation::CreateService, Outcome::Ok),
            1,
            "{point:?}"
        );
    }
}

fn many_workspaces(n: usize) -> String {
    let mut yaml = String::new();
    for i in 0..n {
        yaml.push_str(&common::workspace(
            &format!("w{i:03}"),
            &format!("u{}", i % 50),
            "",
        ));
        yaml.push_str("---\n");
    }
    yaml
}

async fn wait_all_running(store: &Store, n: usize, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (items, _) = store
            .object_list(Kind::Workspace, None, &Default::default(), None)
            .await
            .unwrap();
        let running = items
            .iter()
            .filter(|o| {
                serde_json::from_value::<WorkspaceStatus>(o.status.clone())
                    .is_ok_and(|s| is_running(&s))
            })
            .count();
        if running == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {running} of {n} running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn two_replicas_converge_200_workspaces_without_duplicate_cloud_writes_and_survive_one_dying()
{
    let store = common::store().await;
    let sim = fast_sim();
    apply_yaml(&store, common::TEMPLATE).await;
    let a = spawn_controller(ctx(&store, &sim));
    let b = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, &many_workspaces(200)).await;
    // Kill one replica mid-way: its leases expire and the other finishes.
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.task.abort();
    wait_all_running(&store, 200, 120).await;
    b.stop().await;
    let calls = sim.calls();
    assert_eq!(sim.service_count(), 200);
    assert_eq!(sim.access_point_count(), 50);
    assert_eq!(
        calls.get(Operation::CreateService, Outcome::Ok),
        200,
        "one CreateService per workspace"
    );
    assert_eq!(
        calls.get(Operation::RegisterTaskDefinition, Outcome::Ok),
        200
    );
    assert_eq!(
        calls.get(Operation::UpdateService, Outcome::Ok),
        0,
        "no redundant UpdateService"
    );
}

#[tokio::test]
async fn with_throttling_and_server_errors_200_workspaces_still_converge_without_duplicates() {
    let store = common::store().await;
    let sim = fast_sim();
    sim.set_faults(Faults {
        throttle_rate: 0.30,
        error_rate: 0.05,
        seed: 7,
        ..Faults::default()
    });
    apply_yaml(&store, common::TEMPLATE).await;
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, &many_workspaces(200)).await;
    wait_all_running(&store, 200, 240).await;
    c.stop().await;
    assert_eq!(sim.service_count(), 200);
    assert_eq!(sim.access_point_count(), 50);
    for i in 0..200 {
        assert_eq!(
            sim.revisions(&family(&store, &format!("w{i:03}")).await)
                .len(),
            1,
            "w{i:03}"
        );
    }
    assert!(sim.calls().total_outcome(Outcome::InjectedThrottle) > 0);
}

#[tokio::test]
async fn a_panicking_reconcile_is_a_warning_event_and_a_metric_and_the_controller_goes_on() {
    let store = common::store().await;
    let sim = fast_sim();
    let mut c = base_ctx(&store, &sim);
    c.crash_point = Some(CrashPoint::Panic);
    let metrics = c.metrics.clone();
    let running = spawn_controller(Arc::new(c));
    apply_yaml(&store, common::TEMPLATE).await;
    apply_yaml(&store, &common::workspace("alice", "alice", "")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let evs = common::sim::events(&store, "alice").await;
        if let Some((_, m)) = evs.iter().find(|(r, _)| r == "ReconcilePanicked") {
            assert!(m.contains("injected panic"), "{m}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ReconcilePanicked event: {evs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Retried with backoff: still panicking, counted, and one event only.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = metrics.render();
    assert!(
        text.lines().any(|l| l.contains("controller=\"workspace\"")
            && l.contains("outcome=\"panic\"")
            && !l.ends_with(" 0")),
        "{text}"
    );
    let n = common::sim::events(&store, "alice")
        .await
        .iter()
        .filter(|(r, _)| r == "ReconcilePanicked")
        .count();
    assert_eq!(n, 1, "one event per run of panics");
    running.stop().await;
}

fn ready_message(st: &WorkspaceStatus) -> String {
    st.conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn failing_to_start(st: &WorkspaceStatus) -> bool {
    st.phase == Phase::Starting && condition(st, "Ready").1 == "TaskFailedToStart"
}

async fn warnings(store: &Store, name: &str, reason: &str) -> Vec<String> {
    common::sim::events(store, name)
        .await
        .into_iter()
        .filter(|e| e.0 == reason)
        .map(|e| e.1)
        .collect()
}

/// A start whose task cannot run: `Ready=False` and `Synced=False` with
/// ECS's reason, one Warning event for it, and a fix to the template (a
/// new version the workspace follows) starts it again without a restart.
async fn a_failing_start_surfaces_and_the_template_fix_recovers_it(
    sim: Sim,
    broken: &str,
    expect: &str,
) {
    let store = common::store().await;
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, broken).await;
    apply_yaml(&store, &common::workspace("frank", "frank", "")).await;
    let st = wait_until(&store, "frank", "TaskFailedToStart", failing_to_start).await;
    let msg = ready_message(&st);
    assert!(msg.contains(expect), "Ready says {msg:?}");
    assert_eq!(
        condition(&st, "Synced"),
        (ConditionStatus::False, "TaskFailedToStart".into())
    );
    // ECS goes on relaunching; the Warning is said once for one reason.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = common::sim::status(&store, "frank").await;
    assert!(failing_to_start(&st), "{st:?}");
    let told = warnings(&store, "frank", "TaskFailedToStart").await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains(expect), "{told:?}");
    // The fix: a new template version.
    apply_yaml(&store, common::TEMPLATE).await;
    let st = wait_until(&store, "frank", "running after the fix", is_running).await;
    assert_eq!(st.template_version, Some(2));
    assert_eq!(condition(&st, "Synced").0, ConditionStatus::True);
    let replanned = warnings(&store, "frank", "Replanned").await;
    assert_eq!(replanned.len(), 1, "{replanned:?}");
    assert!(replanned[0].contains(expect), "{replanned:?}");
    c.stop().await;
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_reported_and_a_fixed_image_recovers() {
    let broken = common::TEMPLATE.replace("ghcr.io/example/dev:1", "ghcr.io/example/fail:1");
    a_failing_start_surfaces_and_the_template_fix_recovers_it(
        fast_sim(),
        &broken,
        "CannotPullContainerError",
    )
    .await;
}

#[tokio::test]
async fn a_secret_that_does_not_exist_is_reported_and_removing_it_recovers() {
    // A strict account: the template's secret is not in it.
    let sim = fast_sim();
    let mut cfg = sim.config();
    cfg.permissive = false;
    let sim = Sim::new(cfg);
    sim.create_cluster(CLUSTER);
    sim.add_file_system("fs-1");
    let broken = common::TEMPLATE.replace(
        "    homePath: /home/dev\n",
        "    homePath: /home/dev\n    secrets:\n      GH_TOKEN: arn:aws:secretsmanager:us-east-1:123456789012:secret:nowhere\n",
    );
    a_failing_start_surfaces_and_the_template_fix_recovers_it(
        sim,
        &broken,
        "ResourceInitializationError",
    )
    .await;
}

#[tokio::test]
async fn the_accounts_vcpu_quota_is_reported_though_no_task_failed_and_a_smaller_size_recovers() {
    let sim = fast_sim();
    let mut cfg = sim.config();
    cfg.vcpu_quota = Some(1);
    let sim = Sim::new(cfg);
    let store = common::store().await;
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, common::TEMPLATE).await;
    apply_yaml(
        &store,
        &common::workspace("gina", "gina", "  resources: {cpu: 2048, memory: 4096}\n"),
    )
    .await;
    let st = wait_until(&store, "gina", "TaskFailedToStart", failing_to_start).await;
    assert!(ready_message(&st).contains("vCPUs"), "{st:?}");
    // ECS made no task, so none failed: the service's event says why.
    let svc = sim.service(CLUSTER, &family(&store, "gina").await).unwrap();
    assert_eq!(svc.primary_deployment().unwrap().failed_tasks, 0);
    assert!(sim.tasks_snapshot().is_empty());
    assert_eq!(warnings(&store, "gina", "TaskFailedToStart").await.len(), 1);
    // A size within the quota: planned again at once, no restart asked.
    apply_yaml(
        &store,
        &common::workspace("gina", "gina", "  resources: {cpu: 1024, memory: 2048}\n"),
    )
    .await;
    let st = wait_until(&store, "gina", "running at 1 vCPU", is_running).await;
    assert_eq!(st.resources.map(|r| r.cpu), Some(1024));
    assert_eq!(warnings(&store, "gina", "Replanned").await.len(), 1);
    c.stop().await;
}

fn in_namespace(yaml: &str, ns: &str) -> String {
    yaml.replacen("metadata:\n", &format!("metadata:\n  namespace: {ns}\n"), 1)
}

async fn status_in(store: &Store, ns: &str, name: &str) -> Option<WorkspaceStatus> {
    store
        .object_get(Kind::Workspace, ns, name)
        .await
        .unwrap()
        .map(|o| serde_json::from_value(o.status).unwrap_or_default())
}

async fn wait_running_in(store: &Store, ns: &str, name: &str) -> WorkspaceStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = status_in(store, ns, name).await.filter(is_running) {
            return st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ns}/{name} not running: {:?}",
            status_in(store, ns, name).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn available_roots(sim: &Sim) -> Vec<String> {
    let mut roots: Vec<String> = sim
        .access_points("fs-1")
        .into_iter()
        .filter(|ap| ap.life_cycle_state == berth_cloud::efs::LifeCycleState::Available)
        .map(|ap| ap.root_directory.path)
        .collect();
    roots.sort();
    roots
}

#[tokio::test]
async fn an_owners_workspaces_share_one_home_per_namespace_and_only_the_last_delete_removes_it() {
    let store = common::store().await;
    let sim = fast_sim();
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, common::TEMPLATE).await;
    apply_yaml(&store, &in_namespace(common::TEMPLATE, "team")).await;
    let delete = "  deletionPolicy: Delete\n";
    apply_yaml(&store, &common::workspace("one", "kim", delete)).await;
    apply_yaml(&store, &common::workspace("two", "kim", delete)).await;
    apply_yaml(
        &store,
        &in_namespace(&common::workspace("one", "kim", delete), "team"),
    )
    .await;
    let one = wait_until(&store, "one", "Ready", is_running).await;
    let two = wait_until(&store, "two", "Ready", is_running).await;
    let team = wait_running_in(&store, "team", "one").await;
    // One home per owner and namespace: two organizations' "kim" never share.
    assert_eq!(
        available_roots(&sim),
        vec![
            "/home/default/kim".to_string(),
            "/home/team/kim".to_string()
        ]
    );
    let home = one.efs.as_ref().unwrap().access_point_id.clone();
    assert_eq!(two.efs.as_ref().unwrap().access_point_id, home);
    assert_ne!(team.efs.as_ref().unwrap().access_point_id, home);

    // Deleting one of kim's two workspaces keeps the home for the other.
    store
        .object_delete(Kind::Workspace, "default", "one", None)
        .await
        .unwrap();
    wait_gone(&store, "one").await;
    let kept = events(&store, "one").await;
    assert!(kept.iter().any(|e| e == "KeptAccessPoint"), "{kept:?}");
    assert!(sim.access_point(&home).is_some());
    assert_eq!(available_roots(&sim).len(), 2);
    // Deleting the last one (Delete) removes it; the other namespace's stays.
    store
        .object_delete(Kind::Workspace, "default", "two", None)
        .await
        .unwrap();
    wait_gone(&store, "two").await;
    wait_for("kim's default home removed", || {
        available_roots(&sim) == vec!["/home/team/kim".to_string()]
    })
    .await;
    // A new workspace of kim's makes a new home.
    apply_yaml(&store, &common::workspace("three", "kim", "")).await;
    let three = wait_until(&store, "three", "Ready", is_running).await;
    assert_ne!(three.efs.unwrap().access_point_id, home);
    assert_eq!(available_roots(&sim).len(), 2);
    c.stop().await;
}

#[tokio::test]
async fn names_that_collided_no_longer_do_and_a_foreign_service_with_the_name_is_left_alone() {
    let store = common::store().await;
    let sim = fast_sim();
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, common::TEMPLATE).await;
    for ns in ["team-a", "team"] {
        apply_yaml(&store, &in_namespace(common::TEMPLATE, ns)).await;
    }
    // Once both `berth-team-a-x`.
    apply_yaml(
        &store,
        &in_namespace(&common::workspace("x", "ann", ""), "team-a"),
    )
    .await;
    apply_yaml(
        &store,
        &in_namespace(&common::workspace("a-x", "ann", ""), "team"),
    )
    .await;
    let x = wait_running_in(&store, "team-a", "x").await;
    let ax = wait_running_in(&store, "team", "a-x").await;
    let (sx, sax) = (x.ecs.unwrap().service_name, ax.ecs.unwrap().service_name);
    assert_ne!(sx, sax);
    assert_eq!(sim.service_count(), 2);
    assert!(sx.starts_with("berth-team-a-x-"), "{sx}");

    // Someone else's service already has the name the workspace gets.
    apply_yaml(
        &store,
        &common::workspace("zed", "zed", "  running: false\n"),
    )
    .await;
    let name = family(&store, "zed").await;
    let td = sim
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
    sim.create_service(berth_cloud::ecs::CreateService {
        cluster: CLUSTER.into(),
        service_name: name.clone(),
        task_definition: td.task_definition_arn.clone(),
        desired_count: 1,
        network_configuration: berth_cloud::ecs::NetworkConfiguration {
            subnets: vec!["subnet-9".into()],
            ..Default::default()
        },
        tags: berth_cloud::tags::owner_tags("someone-else", "default", "zed"),
        ..Default::default()
    })
    .await
    .unwrap();
    apply_yaml(
        &store,
        &common::workspace("zed", "zed", "  running: true\n"),
    )
    .await;
    let st = wait_until(&store, "zed", "Failed", |st| st.phase == Phase::Failed).await;
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Synced" && c.message.contains("someone-else")),
        "{st:?}"
    );
    common::sim::wait_for_event(&store, "zed", |reason, _| reason == "ForeignObject").await;
    // Stopping and deleting the workspace leave it alone too.
    apply_yaml(
        &store,
        &common::workspace("zed", "zed", "  running: false\n"),
    )
    .await;
    store
        .object_delete(Kind::Workspace, "default", "zed", None)
        .await
        .unwrap();
    wait_gone(&store, "zed").await;
    let svc = sim.service(CLUSTER, &name).expect("the foreign service");
    assert_eq!(svc.status, berth_cloud::ecs::ServiceStatus::Active);
    assert_eq!(svc.desired_count, 1);
    assert_eq!(svc.task_definition, td.task_definition_arn);
    assert_eq!(sim.revisions(&name), vec![1]);
    c.stop().await;
}

#[tokio::test]
async fn a_service_and_access_point_deleted_behind_berths_back_are_made_again_under_new_client_tokens(
) {
    let store = common::store().await;
    let sim = fast_sim();
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, common::TEMPLATE).await;
    apply_yaml(&store, &common::workspace("ivy", "ivy", "")).await;
    let st = wait_until(&store, "ivy", "Ready", is_running).await;
    let (service, old_ap) = (
        st.ecs.as_ref().unwrap().service_name.clone(),
        st.efs.as_ref().unwrap().access_point_id.clone(),
    );
    assert_eq!(st.ecs.as_ref().unwrap().service_attempt, 0);
    // Someone deletes both in the console.
    sim.delete_service(DeleteService {
        cluster: CLUSTER.into(),
        service: service.clone(),
        force: true,
    })
    .await
    .unwrap();
    berth_cloud::efs::Efs::delete_access_point(&sim, &old_ap)
        .await
        .unwrap();
    // The same tokens would be refused now (AWS remembers them).
    let st = wait_until(&store, "ivy", "made again", |st| {
        is_running(st) && st.efs.as_ref().unwrap().access_point_id != old_ap
    })
    .await;
    assert_eq!(st.ecs.as_ref().unwrap().service_attempt, 1);
    assert_eq!(
        sim.service(CLUSTER, &service).map(|s| s.status),
        Some(berth_cloud::ecs::ServiceStatus::Active)
    );
    assert_eq!(available_roots(&sim), vec!["/home/default/ivy".to_string()]);
    let drift: Vec<String> = common::sim::events(&store, "ivy")
        .await
        .into_iter()
        .filter(|e| e.0 == "DriftCorrected")
        .map(|e| e.1)
        .collect();
    assert!(drift.iter().any(|m| m.contains("ECS service")), "{drift:?}");
    assert!(drift.iter().any(|m| m.contains(&old_ap)), "{drift:?}");
    c.stop().await;
}

#[tokio::test]
async fn old_task_definition_revisions_are_deregistered_keeping_the_last_three() {
    let store = common::store().await;
    let sim = fast_sim();
    let c = spawn_controller(ctx(&store, &sim));
    apply_yaml(&store, common::TEMPLATE).await;
    apply_yaml(&store, &common::workspace("rev", "rev", "")).await;
    wait_until(&store, "rev", "Ready", is_running).await;
    // Four changes, each applied by a restart: five revisions in all.
    for (i, cpu) in [512, 2048, 1024, 512].into_iter().enumerate() {
        apply_yaml(
            &store,
            &common::workspace(
                "rev",
                "rev",
                &format!("  resources: {{cpu: {cpu}, memory: 4096}}\n"),
            ),
        )
        .await;
        wait_until(&store, "rev", "PendingRestart", |s| {
            condition(s, "Synced").1 == "PendingRestart"
        })
        .await;
        store
            .intent_record(
                "default",
                "rev",
                &NewIntent::manual(PowerAction::Restart, "rev"),
            )
            .await
            .unwrap();
        wait_until(&store, "rev", &format!("restart {i}"), |s| {
            is_running(s) && s.resources.is_some_and(|r| r.cpu == cpu)
        })
        .await;
    }
    let fam = family(&store, "rev").await;
    assert_eq!(sim.revisions(&fam), vec![1, 2, 3, 4, 5]);
    let status = |r: u32| sim.task_definition(&format!("{fam}:{r}")).unwrap().status;
    use berth_cloud::ecs::TaskDefinitionStatus::{Active, Inactive};
    assert_eq!(
        (1..=5).map(status).collect::<Vec<_>>(),
        vec![Inactive, Inactive, Active, Active, Active]
    );
    c.stop().await;
}

/// Two replicas on one account, each pacing at 80% of the account's rates
/// (here 10 calls per second, burst 10, per action), start 60 workspaces.
/// Returns how many calls the account throttled.
async fn two_replicas_on_one_account(split_the_budget: bool) -> u64 {
    use berth_cloud::ops::{Category, Rate};
    use berth_cloud::pacer::{Pacer, PacerConfig};
    let store = common::store().await;
    let sim = fast_sim();
    sim.set_rate_limits(berth_cloud::sim::RateLimits {
        enabled: true,
        scale: 1.0,
        overrides: Operation::ALL
            .into_iter()
            .map(|op| (op, Rate::new(10.0, 10.0)))
            .collect(),
    });
    apply_yaml(&store, common::TEMPLATE).await;
    let mut replicas = Vec::new();
    for id in ["replica-a", "replica-b"] {
        let pacer = Arc::new(Pacer::new(PacerConfig {
            rates: Category::ALL
                .into_iter()
                .map(|c| (c, Rate::new(8.0, 8.0)))
                .collect(),
        }));
        store.replica_heartbeat(id, "").await.unwrap();
        let mut c = controllers::context(
            store.clone(),
            Cloud::from_sim(&sim),
            Some(pacer.clone()),
            Arc::new(Metrics::new()),
            "http://berth.test",
        );
        c.require_agent = false;
        let share = split_the_budget.then(|| {
            tokio::spawn(controllers::pace_by_live_replicas(
                store.clone(),
                pacer.clone(),
                Duration::from_millis(100),
            ))
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        replicas.push((spawn_controller(Arc::new(c)), share, pacer));
    }
    if split_the_budget {
        for (_, _, pacer) in &replicas {
            assert_eq!(pacer.share(), 0.5);
        }
    }
    apply_yaml(&store, &many_workspaces(60)).await;
    wait_all_running(&store, 60, 120).await;
    for (c, share, _) in replicas {
        c.stop().await;
        if let Some(s) = share {
            s.abort();
        }
    }
    sim.calls().total_outcome(Outcome::Throttled)
}

#[tokio::test]
async fn two_replicas_split_the_accounts_api_budget_and_stay_within_its_rate() {
    let throttled = two_replicas_on_one_account(true).await;
    assert_eq!(throttled, 0, "calls throttled with the budget split");
    // The same two replicas, each taking the whole budget: AWS throttles.
    let throttled = two_replicas_on_one_account(false).await;
    assert!(throttled > 0, "without the split the account is overrun");
}

async fn leased_by(store: &Store, holder: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT key FROM leases WHERE holder = $1 AND expires_at > now()")
        .bind(holder)
        .fetch_all(store.pool())
        .await
        .unwrap()
}

/// A replica killed in the middle of its work: another one takes over each
/// workspace it held as its lease expires (printed), and no workspace is
/// ever acted on by two at once (one service, one revision each).
#[tokio::test]
async fn a_killed_replicas_workspaces_are_taken_over_as_its_leases_expire() {
    let store = common::store().await;
    let sim = fast_sim();
    // Slow calls, so that the kill finds work in flight.
    sim.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    apply_yaml(&store, common::TEMPLATE).await;
    let replica = || {
        let mut c = base_ctx(&store, &sim);
        c.lease_ttl = controllers::LEASE_TTL;
        Arc::new(c)
    };
    let (a_ctx, b_ctx) = (replica(), replica());
    let (a_id, b_id) = (a_ctx.source.clone(), b_ctx.source.clone());
    let a = spawn_controller(a_ctx);
    apply_yaml(&store, &many_workspaces(8)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let held = loop {
        let held = leased_by(&store, &a_id).await;
        if held.len() >= 2 {
            break held;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never held leases"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let b = spawn_controller(b_ctx);
    // kill -9: no release, no more renewals.
    a.task.abort();
    let killed = tokio::time::Instant::now();
    let mut taken: std::collections::BTreeMap<String, Duration> = Default::default();
    while taken.len() < held.len() {
        for key in leased_by(&store, &b_id).await {
            if held.contains(&key) {
                taken.entry(key).or_insert_with(|| killed.elapsed());
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(40),
            "not taken over: {held:?} vs {taken:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slowest = taken.values().max().copied().unwrap_or_default();
    println!(
        "takeover after the kill: {} workspaces, slowest {:.1} s (lease TTL {:?}): {taken:?}",
        taken.len(),
        slowest.as_secs_f64(),
        controllers::LEASE_TTL
    );
    wait_all_running(&store, 8, 60).await;
    b.stop().await;
    let calls = sim.calls();
    assert_eq!(sim.service_count(), 8);
    assert_eq!(calls.get(Operation::CreateService, Outcome::Ok), 8);
    assert_eq!(calls.get(Operation::RegisterTaskDefinition, Outcome::Ok), 8);
}
