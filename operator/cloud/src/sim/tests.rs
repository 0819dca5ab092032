//! Scenario tests of the simulator, under paused tokio time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::advance;

use super::*;
use crate::ecs::{
    ContainerDefinition, CreateService, DeleteService, DeploymentStatus, DesiredStatus, Ecs,
    EfsVolumeConfiguration, MountPoint, NetworkConfiguration, RegisterTaskDefinition, RolloutState,
    SecretEnv, ServiceStatus, StopCode, TaskDefinitionStatus, TaskStatus, UpdateService, Volume,
};
use crate::efs::{CreateAccessPoint, CreationInfo, Efs, LifeCycleState, PosixUser, RootDirectory};
use crate::secrets::{PutSecret, Secrets};
use crate::tags::{owner_tags, Tags};
use crate::Cloud;

const CLUSTER: &str = "dev";
const FS: &str = "fs-0123456789abcdef0";

fn config() -> SimConfig {
    SimConfig {
        clusters: vec![CLUSTER.into()],
        file_systems: vec![FS.into()],
        delays: Delays {
            provisioning: Duration::from_secs(2),
            pending: Duration::from_secs(3),
            stopping: Duration::from_secs(2),
            restart: Duration::from_secs(5),
            ..Delays::default()
        },
        ..SimConfig::default()
    }
}

fn sim() -> Sim {
    Sim::new(config())
}

fn task_def(family: &str, image: &str) -> RegisterTaskDefinition {
    RegisterTaskDefinition {
        family: family.into(),
        cpu: 1024,
        memory: 2048,
        container_definitions: vec![ContainerDefinition {
            name: "workspace".into(),
            image: image.into(),
            essential: true,
            stop_timeout: Some(30),
            user: Some("1000:1000".into()),
            ..ContainerDefinition::default()
        }],
        tags: owner_tags("uid-1", "default", "alice"),
        ..RegisterTaskDefinition::default()
    }
}

fn create(name: &str, task_definition: &str, desired: u32) -> CreateService {
    CreateService {
        cluster: CLUSTER.into(),
        service_name: name.into(),
        task_definition: task_definition.into(),
        desired_count: desired,
        network_configuration: NetworkConfiguration {
            subnets: vec!["subnet-1".into()],
            security_groups: vec!["sg-1".into()],
            ..NetworkConfiguration::default()
        },
        client_token: Some(format!("token-{name}")),
        tags: owner_tags("uid-1", "default", name),
        ..CreateService::default()
    }
}

fn scale(name: &str, desired: u32) -> UpdateService {
    UpdateService {
        cluster: CLUSTER.into(),
        service: name.into(),
        desired_count: Some(desired),
        ..UpdateService::default()
    }
}

async fn describe(sim: &Sim, name: &str) -> crate::ecs::Service {
    let out = sim
        .describe_services(CLUSTER, &[name.to_owned()], true)
        .await
        .expect("describe");
    out.services.into_iter().next().expect("service exists")
}

async fn task_statuses(sim: &Sim, name: &str) -> Vec<crate::ecs::Task> {
    let mut arns = sim
        .list_tasks(CLUSTER, name, DesiredStatus::Running)
        .await
        .expect("list running");
    arns.extend(
        sim.list_tasks(CLUSTER, name, DesiredStatus::Stopped)
            .await
            .expect("list stopped"),
    );
    sim.describe_tasks(CLUSTER, &arns)
        .await
        .expect("describe tasks")
        .tasks
}

async fn running_service(sim: &Sim, name: &str) -> crate::ecs::Service {
    sim.register_task_definition(task_def(name, "ghcr.io/berth/dev:1"))
        .await
        .expect("register");
    sim.create_service(create(name, name, 1))
        .await
        .expect("create");
    advance(Duration::from_secs(5)).await;
    let svc = describe(sim, name).await;
    assert_eq!(svc.running_count, 1);
    svc
}

#[tokio::test(start_paused = true)]
async fn scaled_up_service_reaches_running_after_provisioning_and_pending() {
    let sim = sim();
    let td = sim
        .register_task_definition(task_def("ws-alice", "ghcr.io/berth/dev:1"))
        .await
        .expect("register");
    assert_eq!(td.revision, 1);
    let created = sim
        .create_service(create("ws-alice", &td.task_definition_arn, 0))
        .await
        .expect("create");
    assert_eq!(created.status, ServiceStatus::Active);
    assert_eq!(
        created.primary_deployment().map(|d| d.rollout_state),
        Some(RolloutState::Completed)
    );

    let svc = sim
        .update_service(scale("ws-alice", 1))
        .await
        .expect("scale");
    assert_eq!(
        (svc.desired_count, svc.pending_count, svc.running_count),
        (1, 1, 0)
    );
    let tasks = task_statuses(&sim, "ws-alice").await;
    assert_eq!(tasks[0].last_status, TaskStatus::Provisioning);

    advance(Duration::from_secs(2)).await;
    let tasks = task_statuses(&sim, "ws-alice").await;
    assert_eq!(tasks[0].last_status, TaskStatus::Pending);
    assert_eq!(describe(&sim, "ws-alice").await.pending_count, 1);

    advance(Duration::from_millis(2999)).await;
    assert_eq!(describe(&sim, "ws-alice").await.running_count, 0);
    advance(Duration::from_millis(1)).await;
    let svc = describe(&sim, "ws-alice").await;
    assert_eq!((svc.pending_count, svc.running_count), (0, 1));
    assert!(svc.events[0].message.contains("has reached a steady state"));
    let tasks = task_statuses(&sim, "ws-alice").await;
    assert_eq!(tasks[0].last_status, TaskStatus::Running);
    assert!(tasks[0].started_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn scaled_down_service_deprovisions_then_stops() {
    let sim = sim();
    running_service(&sim, "ws-bob").await;
    let svc = sim
        .update_service(scale("ws-bob", 0))
        .await
        .expect("scale down");
    assert_eq!(svc.running_count, 0);
    assert!(svc.events[0]
        .message
        .contains("has stopped 1 running tasks"));
    let tasks = task_statuses(&sim, "ws-bob").await;
    assert_eq!(tasks[0].last_status, TaskStatus::Deprovisioning);
    assert_eq!(tasks[0].desired_status, TaskStatus::Stopped);

    advance(Duration::from_secs(2)).await;
    let tasks = task_statuses(&sim, "ws-bob").await;
    assert_eq!(tasks[0].last_status, TaskStatus::Stopped);
    assert_eq!(
        tasks[0].stop_code,
        Some(StopCode::ServiceSchedulerInitiated)
    );
    assert!(sim
        .list_tasks(CLUSTER, "ws-bob", DesiredStatus::Running)
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test(start_paused = true)]
async fn failing_image_keeps_retrying_and_never_runs() {
    let sim = sim();
    sim.register_task_definition(task_def("ws-carol", "ghcr.io/berth/fail:1"))
        .await
        .expect("register");
    let mut input = create("ws-carol", "ws-carol", 1);
    input.deployment_circuit_breaker = true;
    sim.create_service(input).await.expect("create");

    // Each attempt: 2 s provisioning + 3 s pending, then 5 s before the next.
    advance(Duration::from_secs(60)).await;
    let svc = describe(&sim, "ws-carol").await;
    assert_eq!(svc.running_count, 0);
    assert_eq!(svc.desired_count, 1);
    let primary = svc.primary_deployment().expect("primary");
    assert_eq!(primary.failed_tasks, 6);
    assert_eq!(primary.rollout_state, RolloutState::Failed);
    assert!(svc
        .events
        .iter()
        .any(|e| e.message.contains("unable to consistently start tasks")));

    let stopped = sim
        .list_tasks(CLUSTER, "ws-carol", DesiredStatus::Stopped)
        .await
        .expect("list");
    assert_eq!(stopped.len(), 6);
    let tasks = sim
        .describe_tasks(CLUSTER, &stopped)
        .await
        .expect("describe");
    for task in &tasks.tasks {
        assert_eq!(task.stop_code, Some(StopCode::TaskFailedToStart));
        let reason = task.stopped_reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("CannotPullContainerError:"), "{reason}");
    }
    // And it keeps trying: a task is being started again right now or soon.
    advance(Duration::from_secs(10)).await;
    let svc = describe(&sim, "ws-carol").await;
    assert_eq!(svc.primary_deployment().map(|d| d.failed_tasks), Some(7));
}

#[tokio::test(start_paused = true)]
async fn the_vcpu_quota_leaves_a_task_unplaced_until_another_service_frees_room() {
    let mut cfg = config();
    cfg.vcpu_quota = Some(1);
    let sim = Sim::new(cfg);
    running_service(&sim, "ws-a").await;
    sim.register_task_definition(task_def("ws-b", "ghcr.io/berth/dev:1"))
        .await
        .expect("register");
    sim.create_service(create("ws-b", "ws-b", 1))
        .await
        .expect("create");
    advance(Duration::from_secs(30)).await;
    let b = describe(&sim, "ws-b").await;
    assert_eq!((b.running_count, b.pending_count), (0, 0));
    // Not a failed task: there is no task, only the service's event.
    assert_eq!(b.primary_deployment().unwrap().failed_tasks, 0);
    assert!(task_statuses(&sim, "ws-b").await.is_empty());
    assert!(
        b.events[0].message.contains("unable to place a task")
            && b.events[0].message.contains("vCPUs"),
        "{:?}",
        b.events
    );
    // The other service stops: ECS places the task at its next try.
    sim.update_service(scale("ws-a", 0)).await.expect("scale");
    advance(Duration::from_secs(20)).await;
    let b = describe(&sim, "ws-b").await;
    assert_eq!(b.running_count, 1, "{:?}", b.events);
}

#[tokio::test(start_paused = true)]
async fn new_task_definition_rolls_out_a_new_deployment_and_retires_the_old_one() {
    let sim = sim();
    running_service(&sim, "ws-dave").await;
    let v2 = sim
        .register_task_definition(task_def("ws-dave", "ghcr.io/berth/dev:2"))
        .await
        .expect("register v2");
    assert_eq!(v2.revision, 2);
    let svc = sim
        .update_service(UpdateService {
            task_definition: Some("ws-dave".into()),
            ..scale("ws-dave", 1)
        })
        .await
        .expect("update");
    assert_eq!(svc.deployments.len(), 2);
    assert_eq!(svc.deployments[0].status, DeploymentStatus::Primary);
    assert_eq!(svc.deployments[0].rollout_state, RolloutState::InProgress);
    assert_eq!(svc.task_definition, v2.task_definition_arn);
    assert_eq!((svc.running_count, svc.pending_count), (1, 1));

    advance(Duration::from_secs(5)).await;
    let svc = describe(&sim, "ws-dave").await;
    // New task runs; the old one is deprovisioning.
    assert_eq!(svc.running_count, 1);
    assert_eq!(svc.deployments.len(), 2);
    advance(Duration::from_secs(2)).await;
    let svc = describe(&sim, "ws-dave").await;
    assert_eq!(svc.deployments.len(), 1);
    assert_eq!(svc.deployments[0].rollout_state, RolloutState::Completed);
    assert_eq!(svc.deployments[0].running_count, 1);
    assert!(svc
        .events
        .iter()
        .any(|e| e.message.contains("deployment completed")));

    // Same task definition, no force: no new deployment.
    let svc = sim
        .update_service(UpdateService {
            task_definition: Some(v2.task_definition_arn.clone()),
            ..scale("ws-dave", 1)
        })
        .await
        .expect("noop update");
    assert_eq!(svc.deployments.len(), 1);
    // forceNewDeployment replaces the task.
    let svc = sim
        .update_service(UpdateService {
            force_new_deployment: true,
            ..scale("ws-dave", 1)
        })
        .await
        .expect("force");
    assert_eq!(svc.deployments.len(), 2);
}

/// The most tasks of `name` not yet STOPPED at once, sampled every 100 ms
/// for `secs`.
async fn most_tasks_at_once(sim: &Sim, name: &str, secs: u64) -> usize {
    let mut most = 0;
    for _ in 0..secs * 10 {
        let live = task_statuses(sim, name)
            .await
            .iter()
            .filter(|t| t.last_status != crate::ecs::TaskStatus::Stopped)
            .count();
        most = most.max(live);
        advance(Duration::from_millis(100)).await;
    }
    most
}

#[tokio::test(start_paused = true)]
async fn a_new_revision_under_zero_and_one_hundred_percent_stops_the_old_task_before_the_new_one_starts(
) {
    use crate::ecs::DeploymentConfiguration;
    // ECS's default (100/200): the new task starts while the old one runs.
    let sim = sim();
    running_service(&sim, "ws-two").await;
    sim.register_task_definition(task_def("ws-two", "ghcr.io/berth/dev:2"))
        .await
        .unwrap();
    sim.update_service(UpdateService {
        task_definition: Some("ws-two".into()),
        ..scale("ws-two", 1)
    })
    .await
    .unwrap();
    assert_eq!(most_tasks_at_once(&sim, "ws-two", 20).await, 2);

    // 0/100: never two tasks, and the new one runs in the end.
    let sim = self::sim();
    sim.register_task_definition(task_def("ws-one", "ghcr.io/berth/dev:1"))
        .await
        .unwrap();
    let svc = sim
        .create_service(CreateService {
            deployment_configuration: Some(DeploymentConfiguration::ONE_AT_A_TIME),
            ..create("ws-one", "ws-one", 1)
        })
        .await
        .unwrap();
    assert_eq!(
        svc.deployment_configuration,
        Some(DeploymentConfiguration::ONE_AT_A_TIME)
    );
    advance(Duration::from_secs(10)).await;
    assert_eq!(describe(&sim, "ws-one").await.running_count, 1);
    let v2 = sim
        .register_task_definition(task_def("ws-one", "ghcr.io/berth/dev:2"))
        .await
        .unwrap();
    sim.update_service(UpdateService {
        task_definition: Some("ws-one".into()),
        ..scale("ws-one", 1)
    })
    .await
    .unwrap();
    assert_eq!(most_tasks_at_once(&sim, "ws-one", 30).await, 1);
    let svc = describe(&sim, "ws-one").await;
    assert_eq!((svc.running_count, svc.deployments.len()), (1, 1));
    assert_eq!(svc.task_definition, v2.task_definition_arn);
    // A restart (forceNewDeployment) too.
    sim.update_service(UpdateService {
        force_new_deployment: true,
        ..scale("ws-one", 1)
    })
    .await
    .unwrap();
    assert_eq!(most_tasks_at_once(&sim, "ws-one", 30).await, 1);
    assert_eq!(describe(&sim, "ws-one").await.running_count, 1);
    // ECS's bounds are enforced.
    let bad = sim
        .update_service(UpdateService {
            deployment_configuration: Some(DeploymentConfiguration {
                minimum_healthy_percent: 0,
                maximum_percent: 50,
            }),
            ..scale("ws-one", 1)
        })
        .await;
    assert!(bad.is_err());
}

#[tokio::test(start_paused = true)]
async fn invalid_fargate_sizes_are_rejected_as_aws_does() {
    let sim = sim();
    let mut input = task_def("ws-erin", "img");
    input.cpu = 256;
    input.memory = 4096;
    let err = sim
        .register_task_definition(input)
        .await
        .expect_err("invalid");
    assert_eq!(err.code, ErrorCode::Client);
    assert!(err
        .message
        .contains("No Fargate configuration exists for given values: 256 CPU, 4096 memory"));
    assert!(!err.is_transient());
    for (cpu, memory) in [(256, 512), (4096, 30720), (8192, 20480), (16384, 122880)] {
        let mut input = task_def("ws-erin", "img");
        input.cpu = cpu;
        input.memory = memory;
        sim.register_task_definition(input)
            .await
            .expect("valid size");
    }
    let mut input = task_def("ws-erin", "img");
    input.memory = 2560;
    assert!(sim.register_task_definition(input).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn describe_services_rejects_more_than_ten_names() {
    let sim = sim();
    let names: Vec<String> = (0..11).map(|i| format!("ws-{i}")).collect();
    let err = sim
        .describe_services(CLUSTER, &names, false)
        .await
        .expect_err("too many");
    assert_eq!(err.code, ErrorCode::InvalidParameter);
    let ok = sim
        .describe_services(CLUSTER, &names[..10], false)
        .await
        .expect("ten is fine");
    assert_eq!(ok.failures.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn unknown_services_are_reported_as_missing_failures() {
    let sim = sim();
    running_service(&sim, "ws-frank").await;
    let out = sim
        .describe_services(CLUSTER, &["ws-frank".into(), "ws-nobody".into()], false)
        .await
        .expect("describe");
    assert_eq!(out.services.len(), 1);
    assert!(out.services[0].tags.is_empty(), "tags only when asked");
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].reason, "MISSING");
    assert!(out.failures[0].arn.ends_with("service/dev/ws-nobody"));
    let err = sim
        .update_service(scale("ws-nobody", 1))
        .await
        .expect_err("missing");
    assert_eq!(err.code, ErrorCode::ServiceNotFound);
    assert!(err.is_not_found());
}

#[tokio::test(start_paused = true)]
async fn deleted_service_drains_then_turns_inactive_and_stays_describable() {
    let sim = sim();
    running_service(&sim, "ws-gina").await;
    let delete = DeleteService {
        cluster: CLUSTER.into(),
        service: "ws-gina".into(),
        force: false,
    };
    let err = sim
        .delete_service(delete.clone())
        .await
        .expect_err("scaled");
    assert_eq!(err.code, ErrorCode::InvalidParameter);

    let svc = sim
        .delete_service(DeleteService {
            force: true,
            ..delete.clone()
        })
        .await
        .expect("delete");
    assert_eq!(svc.status, ServiceStatus::Draining);
    assert_eq!(sim.service_count(), 1);
    let err = sim
        .create_service(create("ws-gina", "ws-gina", 1))
        .await
        .expect_err("still draining");
    assert_eq!(err.code, ErrorCode::InvalidParameter);

    advance(Duration::from_secs(2)).await;
    let svc = describe(&sim, "ws-gina").await;
    assert_eq!(svc.status, ServiceStatus::Inactive);
    assert_eq!(sim.service_count(), 0);
    let err = sim
        .update_service(scale("ws-gina", 1))
        .await
        .expect_err("inactive");
    assert_eq!(err.code, ErrorCode::ServiceNotActive);
    assert!(err.is_not_found());

    // The name can be reused by a new service, under a new client token:
    // the old one is spent.
    let err = sim
        .create_service(create("ws-gina", "ws-gina", 0))
        .await
        .expect_err("the token of the deleted service");
    assert_eq!(err.code, ErrorCode::InvalidParameter);
    let mut input = create("ws-gina", "ws-gina", 0);
    input.client_token = Some("token-ws-gina-2".into());
    let again = sim.create_service(input).await.expect("recreate");
    assert_eq!(again.status, ServiceStatus::Active);
    sim.delete_service(delete).await.expect("delete at 0");

    // INACTIVE services are forgotten after about an hour.
    advance(Duration::from_secs(3601)).await;
    let out = sim
        .describe_services(CLUSTER, &["ws-gina".into()], false)
        .await
        .expect("describe");
    assert_eq!(out.failures.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn create_with_the_name_of_an_active_service_is_idempotent_only_with_its_token() {
    let sim = sim();
    sim.register_task_definition(task_def("ws-hank", "img"))
        .await
        .expect("register");
    let first = sim
        .create_service(create("ws-hank", "ws-hank", 1))
        .await
        .expect("create");
    let again = sim
        .create_service(create("ws-hank", "ws-hank", 1))
        .await
        .expect("same token");
    assert_eq!(first.service_arn, again.service_arn);
    assert_eq!(sim.service_count(), 1);
    let mut other = create("ws-hank", "ws-hank", 1);
    other.client_token = Some("another".into());
    let err = sim.create_service(other).await.expect_err("not idempotent");
    assert_eq!(err.code, ErrorCode::InvalidParameter);
    assert_eq!(err.message, "Creation of service was not idempotent.");
}

#[tokio::test(start_paused = true)]
async fn unknown_cluster_is_rejected_unless_permissive() {
    let strict = sim();
    strict
        .register_task_definition(task_def("ws", "img"))
        .await
        .expect("register");
    let mut input = create("ws", "ws", 0);
    input.cluster = "nope".into();
    let err = strict
        .create_service(input.clone())
        .await
        .expect_err("no cluster");
    assert_eq!(err.code, ErrorCode::ClusterNotFound);
    strict.create_cluster("nope");
    strict
        .create_service(input.clone())
        .await
        .expect("cluster created");

    let permissive = Sim::new(SimConfig::permissive());
    permissive
        .register_task_definition(task_def("ws", "img"))
        .await
        .expect("register");
    permissive.create_service(input).await.expect("any cluster");
    permissive
        .describe_access_points("fs-anything")
        .await
        .expect("any file system");
}

#[tokio::test(start_paused = true)]
async fn task_definition_revisions_increase_and_are_never_reused() {
    let sim = sim();
    for expected in 1..=3 {
        let td = sim
            .register_task_definition(task_def("fam", "img"))
            .await
            .expect("register");
        assert_eq!(td.revision, expected);
        assert!(td
            .task_definition_arn
            .ends_with(&format!("task-definition/fam:{expected}")));
    }
    let gone = sim
        .deregister_task_definition("fam:3")
        .await
        .expect("deregister");
    assert_eq!(gone.status, TaskDefinitionStatus::Inactive);
    assert_eq!(
        sim.describe_task_definition("fam", false)
            .await
            .expect("latest")
            .revision,
        2
    );
    let td = sim
        .register_task_definition(task_def("fam", "img"))
        .await
        .expect("register");
    assert_eq!(td.revision, 4);
    assert_eq!(sim.revisions("fam"), vec![1, 2, 3, 4]);
    let three = sim
        .describe_task_definition(&gone.task_definition_arn, true)
        .await
        .expect("describe by arn");
    assert_eq!(three.status, TaskDefinitionStatus::Inactive);
    assert_eq!(
        three.tags.get(crate::tags::UID).map(String::as_str),
        Some("uid-1")
    );
    let untagged = sim
        .describe_task_definition("fam:4", false)
        .await
        .expect("d");
    assert!(untagged.tags.is_empty());
    let err = sim
        .create_service(create("ws", "fam:3", 0))
        .await
        .expect_err("inactive revision");
    assert_eq!(err.code, ErrorCode::Client);
    let err = sim
        .describe_task_definition("unknown", false)
        .await
        .expect_err("unknown");
    assert_eq!(err.code, ErrorCode::Client);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_throttles_the_21st_immediate_register_then_recovers() {
    let sim = sim();
    for _ in 0..20 {
        sim.register_task_definition(task_def("burst", "img"))
            .await
            .expect("within burst");
    }
    let err = sim
        .register_task_definition(task_def("burst", "img"))
        .await
        .expect_err("21st is throttled");
    assert!(err.is_throttling());
    assert!(err.is_transient());
    let calls = sim.calls();
    assert_eq!(
        calls.get(Operation::RegisterTaskDefinition, Outcome::Ok),
        20
    );
    assert_eq!(
        calls.get(Operation::RegisterTaskDefinition, Outcome::Throttled),
        1
    );
    // A throttled call registers nothing.
    assert_eq!(sim.revisions("burst").len(), 20);

    advance(Duration::from_millis(999)).await;
    assert!(sim
        .register_task_definition(task_def("burst", "img"))
        .await
        .is_err());
    advance(Duration::from_millis(1)).await;
    let td = sim
        .register_task_definition(task_def("burst", "img"))
        .await
        .expect("refilled");
    assert_eq!(td.revision, 21);
}

#[tokio::test(start_paused = true)]
async fn rate_limits_can_be_scaled_and_disabled() {
    let sim = sim();
    sim.set_rate_limits(RateLimits {
        scale: 0.1,
        ..RateLimits::default()
    });
    // DescribeServices burst 100 × 0.1 = 10.
    let names = ["x".to_owned()];
    for _ in 0..10 {
        sim.describe_services(CLUSTER, &names, false)
            .await
            .expect("ok");
    }
    assert!(sim.describe_services(CLUSTER, &names, false).await.is_err());
    sim.set_rate_limits(RateLimits::disabled());
    for _ in 0..500 {
        sim.describe_services(CLUSTER, &names, false)
            .await
            .expect("unlimited");
    }
}

async fn fault_run(seed: u64) -> CallCounts {
    let sim = Sim::new(SimConfig {
        rate_limits: RateLimits::disabled(),
        faults: Faults {
            error_rate: 0.2,
            throttle_rate: 0.1,
            seed,
            ..Faults::default()
        },
        ..config()
    });
    for _ in 0..2000 {
        let _ = sim
            .describe_services(CLUSTER, &["x".to_owned()], false)
            .await;
    }
    sim.calls()
}

#[tokio::test(start_paused = true)]
async fn fault_injection_rates_are_roughly_honored_and_reproducible() {
    let calls = fault_run(42).await;
    let op = Operation::DescribeServices;
    let throttled = calls.get(op, Outcome::InjectedThrottle) as f64;
    let errors = calls.get(op, Outcome::InjectedError) as f64;
    let ok = calls.get(op, Outcome::Ok) as f64;
    assert_eq!(calls.total(op), 2000);
    // Expected: 200 throttled, 0.9 × 0.2 × 2000 = 360 errors, 1440 ok.
    assert!((150.0..250.0).contains(&throttled), "{throttled}");
    assert!((290.0..430.0).contains(&errors), "{errors}");
    assert!((1340.0..1540.0).contains(&ok), "{ok}");
    assert_eq!(fault_run(42).await, calls, "same seed, same faults");
    assert_ne!(fault_run(7).await, calls);
}

#[tokio::test(start_paused = true)]
async fn lost_response_applies_the_change_and_a_retry_with_the_token_adopts_it() {
    let sim = sim();
    sim.register_task_definition(task_def("ws-ivy", "img"))
        .await
        .expect("register");
    sim.set_faults(Faults {
        lost_response_rate: 1.0,
        ..Faults::default()
    });
    let err = sim
        .create_service(create("ws-ivy", "ws-ivy", 1))
        .await
        .expect_err("lost");
    assert!(err.is_transient());
    assert_eq!(sim.service_count(), 1, "the create was applied");
    sim.set_faults(Faults::default());
    sim.create_service(create("ws-ivy", "ws-ivy", 1))
        .await
        .expect("retry adopts");
    assert_eq!(sim.service_count(), 1);
    assert_eq!(
        sim.calls()
            .get(Operation::CreateService, Outcome::LostResponse),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn injected_latency_delays_every_call() {
    let sim = sim();
    sim.set_faults(Faults {
        latency: Duration::from_millis(120),
        ..Faults::default()
    });
    let start = tokio::time::Instant::now();
    sim.list_services(CLUSTER).await.expect("list");
    assert_eq!(start.elapsed(), Duration::from_millis(120));
}

fn access_point_input(token: &str, uid: u32) -> CreateAccessPoint {
    CreateAccessPoint {
        client_token: token.into(),
        file_system_id: FS.into(),
        posix_user: Some(PosixUser {
            uid,
            gid: uid,
            secondary_gids: vec![],
        }),
        root_directory: Some(RootDirectory {
            path: "/home/alice".into(),
            creation_info: Some(CreationInfo {
                owner_uid: uid,
                owner_gid: uid,
                permissions: "0750".into(),
            }),
        }),
        tags: owner_tags("uid-1", "default", "alice"),
    }
}

#[tokio::test(start_paused = true)]
async fn access_points_are_created_idempotently_and_deleted() {
    let sim = sim();
    let ap = sim
        .create_access_point(access_point_input("uid-1", 1000))
        .await
        .expect("create");
    assert!(ap.access_point_id.starts_with("fsap-"));
    assert_eq!(ap.life_cycle_state, LifeCycleState::Creating);
    let again = sim
        .create_access_point(access_point_input("uid-1", 1000))
        .await
        .expect("same token, same parameters");
    assert_eq!(again.access_point_id, ap.access_point_id);
    let err = sim
        .create_access_point(access_point_input("uid-1", 1001))
        .await
        .expect_err("same token, other parameters");
    assert_eq!(err.code, ErrorCode::AccessPointAlreadyExists);

    advance(Duration::from_millis(500)).await;
    let listed = sim.describe_access_points(FS).await.expect("describe");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].life_cycle_state, LifeCycleState::Available);
    assert_eq!(listed[0].root_directory.path, "/home/alice");
    assert_eq!(
        listed[0].tags.get(crate::tags::NAME).map(String::as_str),
        Some("alice")
    );

    sim.delete_access_point(&ap.access_point_id)
        .await
        .expect("delete");
    let deleting = sim
        .describe_access_point(&ap.access_point_id)
        .await
        .expect("still there");
    assert_eq!(deleting.life_cycle_state, LifeCycleState::Deleting);
    advance(Duration::from_millis(500)).await;
    let err = sim
        .describe_access_point(&ap.access_point_id)
        .await
        .expect_err("gone");
    assert_eq!(err.code, ErrorCode::AccessPointNotFound);
    assert_eq!(sim.access_point_count(), 0);

    let mut bad = access_point_input("t2", 1000);
    bad.file_system_id = "fs-unknown".into();
    let err = sim.create_access_point(bad).await.expect_err("no fs");
    assert_eq!(err.code, ErrorCode::FileSystemNotFound);
    let mut bad = access_point_input("t3", 1000);
    if let Some(root) = bad.root_directory.as_mut() {
        root.path = "/home/../etc".into();
    }
    assert_eq!(
        sim.create_access_point(bad)
            .await
            .expect_err("bad path")
            .code,
        ErrorCode::BadRequest
    );
}

#[tokio::test(start_paused = true)]
async fn secrets_are_created_then_replaced_under_a_stable_arn() {
    let sim = sim();
    let put = |value: &str| PutSecret {
        name: "berth/default/alice/agent-token".into(),
        value: SecretString::new(value),
        description: None,
        tags: owner_tags("uid-1", "default", "alice"),
    };
    let first = sim.put_secret_value(put("one")).await.expect("create");
    let second = sim.put_secret_value(put("two")).await.expect("replace");
    assert_eq!(first.arn, second.arn);
    assert_ne!(first.version_id, second.version_id);
    assert_eq!(
        sim.secret_value("berth/default/alice/agent-token")
            .map(|v| v.expose().to_owned()),
        Some("two".to_owned())
    );
    assert!(!format!("{:?}", put("hunter2")).contains("hunter2"));
    sim.delete_secret(&first.name).await.expect("delete");
    let err = sim.delete_secret(&first.name).await.expect_err("gone");
    assert_eq!(err.code, ErrorCode::ResourceNotFound);
    assert!(err.is_not_found());
}

fn workspace_task_def(secret_arn: &str, access_point: &str) -> RegisterTaskDefinition {
    let mut td = task_def("ws-jane", "ghcr.io/berth/dev:1");
    td.execution_role_arn = Some("arn:aws:iam::123456789012:role/exec".into());
    td.volumes = vec![Volume {
        name: "home".into(),
        efs_volume_configuration: Some(EfsVolumeConfiguration {
            file_system_id: FS.into(),
            root_directory: None,
            transit_encryption: true,
            access_point_id: Some(access_point.into()),
            iam_authorization: false,
        }),
    }];
    let container = &mut td.container_definitions[0];
    container.secrets = vec![SecretEnv {
        name: "BERTH_AGENT_TOKEN".into(),
        value_from: secret_arn.into(),
    }];
    container.mount_points = vec![MountPoint {
        source_volume: "home".into(),
        container_path: "/home/coder".into(),
        read_only: false,
    }];
    container.environment = BTreeMap::from([("TZ".into(), "UTC".into())]);
    td
}

#[tokio::test(start_paused = true)]
async fn task_with_its_secret_and_access_point_runs_and_without_them_fails() {
    let sim = sim();
    let cloud = Cloud::from_sim(&sim);
    let ap = cloud
        .efs
        .create_access_point(access_point_input("uid-1", 1000))
        .await
        .expect("ap");
    let secret = cloud
        .secrets
        .put_secret_value(PutSecret {
            name: "jane-token".into(),
            value: SecretString::new("t0k3n"),
            description: None,
            tags: Tags::new(),
        })
        .await
        .expect("secret");
    let td = cloud
        .ecs
        .register_task_definition(workspace_task_def(&secret.arn, &ap.access_point_id))
        .await
        .expect("register");
    cloud
        .ecs
        .create_service(create("ws-jane", &td.task_definition_arn, 1))
        .await
        .expect("create");
    advance(Duration::from_secs(5)).await;
    assert_eq!(describe(&sim, "ws-jane").await.running_count, 1);

    // Stop, delete the secret, start again: the task cannot read it.
    sim.update_service(scale("ws-jane", 0)).await.expect("stop");
    sim.delete_secret("jane-token")
        .await
        .expect("delete secret");
    sim.update_service(scale("ws-jane", 1))
        .await
        .expect("start");
    advance(Duration::from_secs(5)).await;
    let svc = describe(&sim, "ws-jane").await;
    assert_eq!(svc.running_count, 0);
    let stopped = sim
        .list_tasks(CLUSTER, "ws-jane", DesiredStatus::Stopped)
        .await
        .expect("list");
    let tasks = sim
        .describe_tasks(CLUSTER, &stopped)
        .await
        .expect("describe");
    assert!(tasks.tasks.iter().any(|t| t
        .stopped_reason
        .as_deref()
        .is_some_and(|r| r.starts_with("ResourceInitializationError"))));
}

#[tokio::test(start_paused = true)]
async fn task_definition_rules_of_fargate_and_efs_are_enforced() {
    let sim = sim();
    let mut td = workspace_task_def("arn:secret", "fsap-1");
    td.execution_role_arn = None;
    let err = sim.register_task_definition(td).await.expect_err("no role");
    assert!(err.message.contains("executionRoleArn"));

    let mut td = workspace_task_def("arn:secret", "fsap-1");
    if let Some(efs) = td.volumes[0].efs_volume_configuration.as_mut() {
        efs.transit_encryption = false;
    }
    assert_eq!(
        sim.register_task_definition(td)
            .await
            .expect_err("tls")
            .code,
        ErrorCode::Client
    );

    let mut td = workspace_task_def("arn:secret", "fsap-1");
    td.container_definitions[0].stop_timeout = Some(121);
    assert!(sim.register_task_definition(td).await.is_err());

    let mut td = workspace_task_def("arn:secret", "fsap-1");
    td.container_definitions[0].mount_points[0].source_volume = "nope".into();
    assert!(sim.register_task_definition(td).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn calls_are_counted_by_operation_and_outcome() {
    let sim = sim();
    sim.list_services(CLUSTER).await.expect("list");
    let _ = sim.list_services("unknown").await;
    let calls = sim.calls();
    assert_eq!(calls.get(Operation::ListServices, Outcome::Ok), 1);
    assert_eq!(calls.get(Operation::ListServices, Outcome::Error), 1);
    assert_eq!(calls.total_calls(), 2);
    assert_eq!(calls.iter().count(), 2);
    sim.reset_calls();
    assert_eq!(sim.calls().total_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn paced_cloud_over_the_sim_is_usable_as_trait_objects() {
    let sim = sim();
    let cloud = Cloud::from_sim(&sim).paced(Arc::new(crate::Pacer::default()));
    cloud
        .ecs
        .register_task_definition(task_def("ws-kim", "img"))
        .await
        .expect("register");
    let svc = crate::Priority::Interactive
        .scope(cloud.ecs.create_service(create("ws-kim", "ws-kim", 1)))
        .await
        .expect("create");
    assert_eq!(svc.pending_count, 1);
    assert_eq!(sim.service_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn many_services_converge_over_a_long_run_without_leaking_tasks() {
    let sim = Sim::new(SimConfig {
        rate_limits: RateLimits::disabled(),
        ..config()
    });
    sim.register_task_definition(task_def("ok", "img"))
        .await
        .expect("register");
    sim.register_task_definition(task_def("bad", "fail"))
        .await
        .expect("register");
    for i in 0..20 {
        let family = if i % 5 == 0 { "bad" } else { "ok" };
        sim.create_service(create(&format!("ws-{i}"), family, 1))
            .await
            .expect("create");
    }
    advance(Duration::from_secs(6 * 3600)).await;
    let names: Vec<String> = (0..10).map(|i| format!("ws-{i}")).collect();
    let out = sim
        .describe_services(CLUSTER, &names, false)
        .await
        .expect("describe");
    for svc in &out.services {
        let expected = u32::from(svc.service_name != "ws-0" && svc.service_name != "ws-5");
        assert_eq!(svc.running_count, expected, "{}", svc.service_name);
    }
    let stopped = sim
        .list_tasks(CLUSTER, "ws-0", DesiredStatus::Stopped)
        .await
        .expect("list");
    assert!(stopped.len() <= 20, "{}", stopped.len());
}

#[tokio::test(start_paused = true)]
async fn zero_delays_converge_within_the_same_instant() {
    let sim = Sim::new(SimConfig {
        delays: Delays {
            provisioning: Duration::ZERO,
            pending: Duration::ZERO,
            stopping: Duration::ZERO,
            restart: Duration::ZERO,
            access_point_creating: Duration::ZERO,
            access_point_deleting: Duration::ZERO,
            ..Delays::default()
        },
        ..config()
    });
    sim.register_task_definition(task_def("z", "img"))
        .await
        .expect("register");
    let svc = sim
        .create_service(create("z", "z", 1))
        .await
        .expect("create");
    assert_eq!(svc.running_count, 1);
    assert_eq!(
        svc.primary_deployment().map(|d| d.rollout_state),
        Some(RolloutState::Completed)
    );
    sim.register_task_definition(task_def("z", "img2"))
        .await
        .expect("register");
    let svc = sim
        .update_service(UpdateService {
            task_definition: Some("z".into()),
            ..scale("z", 1)
        })
        .await
        .expect("roll");
    assert_eq!(svc.deployments.len(), 1);
    assert_eq!(svc.running_count, 1);
    assert!(svc.task_definition.ends_with(":2"));

    // A failing image with zero delays still terminates (bounded restarts).
    sim.register_task_definition(task_def("zf", "fail"))
        .await
        .expect("register");
    sim.create_service(create("zf", "zf", 1))
        .await
        .expect("create");
    advance(Duration::from_secs(60)).await;
    let svc = describe(&sim, "zf").await;
    assert_eq!(svc.running_count, 0);
    assert!(
        svc.primary_deployment()
            .map(|d| d.failed_tasks)
            .unwrap_or(0)
            >= 500
    );
}

#[tokio::test(start_paused = true)]
async fn chunked_describe_covers_any_number_of_services_ten_at_a_time() {
    let sim = sim();
    running_service(&sim, "ws-0").await;
    let names: Vec<String> = (0..25).map(|i| format!("ws-{i}")).collect();
    let out = crate::ecs::describe_services_chunked(&sim, CLUSTER, &names, false)
        .await
        .expect("describe");
    assert_eq!(out.services.len(), 1);
    assert_eq!(out.failures.len(), 24);
    assert_eq!(
        sim.calls().get(Operation::DescribeServices, Outcome::Ok),
        3 + 1
    );
}

fn process_backed_sim() -> Sim {
    Sim::new(SimConfig {
        process_backed: true,
        ..config()
    })
}

fn only_task(sim: &Sim) -> SimTask {
    let mut tasks = sim.tasks_snapshot();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    tasks.remove(0)
}

#[tokio::test(start_paused = true)]
async fn snapshot_shows_live_tasks_with_their_task_definition() {
    let sim = sim();
    assert!(sim.tasks_snapshot().is_empty());
    running_service(&sim, "ws-snap").await;
    let task = only_task(&sim);
    assert_eq!(task.last_status, TaskStatus::Running);
    assert_eq!(
        (task.cluster.as_str(), task.service.as_str()),
        (CLUSTER, "ws-snap")
    );
    assert!(task.task_arn.ends_with(&task.task_id));
    assert_eq!(task.task_definition.family, "ws-snap");
    assert_eq!(task.stop_timeout, Duration::from_secs(30));
    assert!(!task.process_backed && !task.stop_requested && task.stopping_since.is_none());
    sim.update_service(scale("ws-snap", 0))
        .await
        .expect("scale");
    let task = only_task(&sim);
    assert_eq!(task.last_status, TaskStatus::Deprovisioning);
    assert!(task.stop_requested && task.stopping_since.is_some());
    advance(Duration::from_secs(2)).await;
    assert!(
        sim.tasks_snapshot().is_empty(),
        "stopped tasks are left out"
    );
    // Without process backing, exits are not taken.
    assert!(!sim.task_exited(&task.task_arn, Some(0)));
}

#[tokio::test(start_paused = true)]
async fn process_backed_task_stops_when_its_process_exits() {
    let sim = process_backed_sim();
    running_service(&sim, "ws-pb").await;
    let task = only_task(&sim);
    assert!(task.process_backed);
    sim.update_service(scale("ws-pb", 0)).await.expect("scale");
    // Far beyond Delays::stopping, the task still waits for its process.
    advance(Duration::from_secs(20)).await;
    let svc = describe(&sim, "ws-pb").await;
    assert_eq!((svc.running_count, svc.pending_count), (0, 0));
    assert_eq!(only_task(&sim).last_status, TaskStatus::Deprovisioning);
    assert!(sim.task_exited(&task.task_arn, Some(0)));
    assert!(!sim.task_exited(&task.task_arn, Some(0)), "reported once");
    assert!(sim.tasks_snapshot().is_empty());
    let tasks = task_statuses(&sim, "ws-pb").await;
    assert_eq!(tasks[0].last_status, TaskStatus::Stopped);
    assert_eq!(
        tasks[0].stop_code,
        Some(StopCode::ServiceSchedulerInitiated)
    );
    assert_eq!(
        tasks[0]
            .stopped_at
            .and_then(|s| s.duration_since(tasks[0].stopping_at?).ok()),
        Some(Duration::from_secs(20))
    );
}

#[tokio::test(start_paused = true)]
async fn unreported_process_backed_task_stops_a_grace_after_its_stop_timeout() {
    let sim = process_backed_sim();
    running_service(&sim, "ws-grace").await;
    sim.update_service(scale("ws-grace", 0))
        .await
        .expect("scale");
    advance(Duration::from_secs(30) + super::ecs::PROCESS_EXIT_GRACE - Duration::from_millis(1))
        .await;
    assert_eq!(only_task(&sim).last_status, TaskStatus::Deprovisioning);
    advance(Duration::from_millis(1)).await;
    assert!(sim.tasks_snapshot().is_empty());
}

#[tokio::test(start_paused = true)]
async fn process_backed_task_stopped_before_running_stops_after_the_usual_delay() {
    let sim = process_backed_sim();
    sim.register_task_definition(task_def("ws-early", "ghcr.io/berth/dev:1"))
        .await
        .expect("register");
    sim.create_service(create("ws-early", "ws-early", 1))
        .await
        .expect("create");
    advance(Duration::from_secs(1)).await;
    sim.update_service(scale("ws-early", 0))
        .await
        .expect("scale");
    advance(Duration::from_secs(2)).await;
    assert!(sim.tasks_snapshot().is_empty());
}

#[tokio::test(start_paused = true)]
async fn exited_essential_container_stops_the_task_and_the_service_relaunches() {
    let sim = process_backed_sim();
    running_service(&sim, "ws-crash").await;
    let first = only_task(&sim);
    assert!(sim.task_exited(&first.task_arn, Some(3)));
    let tasks = task_statuses(&sim, "ws-crash").await;
    let stopped = tasks
        .iter()
        .find(|t| t.task_arn == first.task_arn)
        .expect("first task");
    assert_eq!(stopped.last_status, TaskStatus::Stopped);
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(describe(&sim, "ws-crash").await.running_count, 0);
    // Relaunched after Delays::restart, then provisioning and pending.
    advance(Duration::from_secs(5 + 5)).await;
    let second = only_task(&sim);
    assert_ne!(second.task_arn, first.task_arn);
    assert_eq!(second.last_status, TaskStatus::Running);
    assert_eq!(describe(&sim, "ws-crash").await.running_count, 1);
}

#[tokio::test(start_paused = true)]
async fn process_backing_applies_to_tasks_launched_after_it_is_turned_on() {
    let sim = sim();
    running_service(&sim, "ws-later").await;
    sim.set_process_backed(true);
    assert!(sim.config().process_backed);
    assert!(!only_task(&sim).process_backed);
    sim.update_service(scale("ws-later", 0))
        .await
        .expect("scale");
    advance(Duration::from_secs(2)).await;
    assert!(sim.tasks_snapshot().is_empty(), "stops as it was launched");
}

#[tokio::test(start_paused = true)]
async fn secret_values_resolve_as_ecs_value_from_does() {
    let sim = sim();
    let put = |name: &str, value: &str| PutSecret {
        name: name.into(),
        value: SecretString::new(value),
        description: None,
        tags: Tags::new(),
    };
    let plain = sim.put_secret_value(put("plain", "v1")).await.expect("put");
    let json = sim
        .put_secret_value(put("json", r#"{"user":"u","port":5432}"#))
        .await
        .expect("put");
    let value = |from: &str| sim.secret_value(from).map(|v| v.expose().to_owned());
    assert_eq!(value("plain").as_deref(), Some("v1"));
    assert_eq!(value(&plain.arn).as_deref(), Some("v1"));
    let partial = plain.arn.rsplit_once('-').expect("suffix").0;
    assert_eq!(value(partial).as_deref(), Some("v1"));
    assert_eq!(value(&format!("{}:user::", json.arn)).as_deref(), Some("u"));
    assert_eq!(
        value(&format!("{}:port::", json.arn)).as_deref(),
        Some("5432")
    );
    assert_eq!(value(&format!("{}:::", plain.arn)).as_deref(), Some("v1"));
    assert_eq!(value(&format!("{}:nope::", json.arn)), None);
    assert_eq!(value("missing"), None);
}

#[tokio::test(start_paused = true)]
async fn access_point_is_readable_until_it_is_gone() {
    let sim = sim();
    let ap = sim
        .create_access_point(access_point_input("t-peek", 1000))
        .await
        .expect("create");
    let seen = sim.access_point(&ap.access_point_id).expect("exists");
    assert_eq!(seen.file_system_id, FS);
    assert_eq!(seen.root_directory, ap.root_directory);
    assert!(sim.access_point("fsap-unknown").is_none());
    sim.delete_access_point(&ap.access_point_id)
        .await
        .expect("delete");
    advance(Duration::from_secs(1)).await;
    assert!(sim.access_point(&ap.access_point_id).is_none());
}
