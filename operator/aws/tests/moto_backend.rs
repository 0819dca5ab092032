//! Every method of the AWS backend against a real AWS API endpoint nobody
//! here wrote: moto_server, started per test on a free loopback port.
//!
//! moto does not validate Fargate sizes, never runs tasks, does not paginate
//! or enforce the 10-name limit, and ignores client tokens; these tests
//! check the *mapping* (requests carry what Berth sends, responses come back
//! with tags, states and errors mapped), not AWS's validation.

use std::collections::BTreeMap;

use berth_aws::testing::{Infrastructure, Moto};
use berth_cloud::ecs::{
    describe_services_chunked, AssignPublicIp, ContainerDefinition, CreateService, DeleteService,
    DesiredStatus, EfsVolumeConfiguration, LogConfiguration, MountPoint, NetworkConfiguration,
    RegisterTaskDefinition, SecretEnv, ServiceStatus, TaskDefinitionStatus, UpdateService, Volume,
    FAILURE_MISSING,
};
use berth_cloud::efs::{CreateAccessPoint, CreationInfo, LifeCycleState, PosixUser, RootDirectory};
use berth_cloud::secrets::{PutSecret, SecretString};
use berth_cloud::{tags, Cloud, ErrorCode, Tags};

async fn cloud(moto: &Moto) -> Cloud {
    berth_aws::connect(moto.options())
        .await
        .expect("connect to moto")
}

fn owner(uid: &str, name: &str) -> Tags {
    tags::owner_tags(uid, "acme", name)
}

fn task_definition(
    family: &str,
    cpu: u32,
    memory: u32,
    fs: &str,
    ap: &str,
) -> RegisterTaskDefinition {
    let mut t = owner("uid-1", "alice");
    t.insert(tags::CONTENT_HASH.into(), format!("hash-{cpu}-{memory}"));
    RegisterTaskDefinition {
        family: family.into(),
        cpu,
        memory,
        execution_role_arn: Some("arn:aws:iam::123456789012:role/berth-execution".into()),
        task_role_arn: Some("arn:aws:iam::123456789012:role/berth-workspace".into()),
        container_definitions: vec![ContainerDefinition {
            name: "dev".into(),
            image: "ghcr.io/acme/dev:1".into(),
            essential: true,
            entry_point: vec!["/bin/sh".into(), "-c".into()],
            command: vec!["exec sleep infinity".into()],
            environment: BTreeMap::from([
                ("BERTH_WORKSPACE".into(), "alice".into()),
                ("HOME".into(), "/home/coder".into()),
            ]),
            secrets: vec![SecretEnv {
                name: "BERTH_AGENT_TOKEN".into(),
                value_from: "arn:aws:secretsmanager:us-east-1:123456789012:secret:berth/acme/alice/agent-token-AbCdEf".into(),
            }],
            mount_points: vec![MountPoint {
                source_volume: "home".into(),
                container_path: "/home/coder".into(),
                read_only: false,
            }],
            stop_timeout: Some(120),
            user: Some("1000:1000".into()),
            working_directory: Some("/home/coder".into()),
            init_process_enabled: true,
            repository_credentials: Some(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:berth/registry-AbCdEf".into(),
            ),
            log_configuration: Some(LogConfiguration {
                log_driver: "awslogs".into(),
                options: BTreeMap::from([
                    ("awslogs-group".into(), "/berth/workspaces".into()),
                    ("awslogs-region".into(), "us-east-1".into()),
                    ("awslogs-stream-prefix".into(), "alice".into()),
                ]),
            }),
        }],
        volumes: vec![Volume {
            name: "home".into(),
            efs_volume_configuration: Some(EfsVolumeConfiguration {
                file_system_id: fs.into(),
                root_directory: None,
                transit_encryption: true,
                access_point_id: Some(ap.into()),
                iam_authorization: true,
            }),
        }],
        tags: t,
    }
}

fn create_service(infra: &Infrastructure, name: &str, td: &str, uid: &str) -> CreateService {
    CreateService {
        cluster: infra.cluster.clone(),
        service_name: name.into(),
        task_definition: td.into(),
        desired_count: 1,
        platform_version: None,
        network_configuration: NetworkConfiguration {
            subnets: vec![infra.subnet.clone()],
            security_groups: vec![infra.security_group.clone()],
            assign_public_ip: AssignPublicIp::Enabled,
        },
        client_token: Some(format!("berth-{uid}")),
        tags: owner(uid, name),
        enable_execute_command: true,
        deployment_circuit_breaker: true,
        deployment_configuration: Some(berth_cloud::ecs::DeploymentConfiguration::ONE_AT_A_TIME),
        propagate_tags: Some(berth_cloud::ecs::PropagateTags::Service),
        enable_ecs_managed_tags: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_definitions_register_describe_and_deregister_with_content_and_tags() {
    let moto = Moto::start();
    let infra = moto.setup();
    let cloud = cloud(&moto).await;
    let family = "berth-acme-alice";

    let input = task_definition(
        family,
        1024,
        4096,
        &infra.file_system,
        "fsap-0123456789abcdef0",
    );
    let td1 = cloud
        .ecs
        .register_task_definition(input.clone())
        .await
        .expect("register");
    assert_eq!(td1.family, family);
    assert_eq!(td1.revision, 1);
    assert_eq!((td1.cpu, td1.memory), (1024, 4096));
    assert_eq!(td1.status, TaskDefinitionStatus::Active);
    assert!(
        td1.task_definition_arn
            .ends_with(":task-definition/berth-acme-alice:1"),
        "{}",
        td1.task_definition_arn
    );
    assert_eq!(td1.tags, input.tags);

    // Describe by family (latest), with tags: the content round-trips.
    let got = cloud
        .ecs
        .describe_task_definition(family, true)
        .await
        .expect("describe");
    assert_eq!(got.task_definition_arn, td1.task_definition_arn);
    assert_eq!(
        got.tags.get(tags::CONTENT_HASH).map(String::as_str),
        Some("hash-1024-4096")
    );
    assert_eq!(got.tags.get(tags::UID).map(String::as_str), Some("uid-1"));
    assert_eq!(got.container_definitions, input.container_definitions);
    // ECS (and moto) report the default root directory "/" of an EFS
    // volume mounted through an access point.
    let mut want_volumes = input.volumes.clone();
    for v in &mut want_volumes {
        if let Some(e) = v.efs_volume_configuration.as_mut() {
            e.root_directory.get_or_insert_with(|| "/".into());
        }
    }
    assert_eq!(got.volumes, want_volumes);
    assert_eq!(got.execution_role_arn, input.execution_role_arn);
    assert_eq!(got.task_role_arn, input.task_role_arn);

    // Without tags asked for, none come back.
    let untagged = cloud
        .ecs
        .describe_task_definition(family, false)
        .await
        .expect("describe");
    assert!(untagged.tags.is_empty(), "{:?}", untagged.tags);

    // A second registration is revision 2 and becomes the family's latest.
    let td2 = cloud
        .ecs
        .register_task_definition(task_definition(
            family,
            2048,
            8192,
            &infra.file_system,
            "fsap-0123456789abcdef0",
        ))
        .await
        .expect("register 2");
    assert_eq!(td2.revision, 2);
    let latest = cloud
        .ecs
        .describe_task_definition(family, true)
        .await
        .unwrap();
    assert_eq!(
        (latest.revision, latest.cpu, latest.memory),
        (2, 2048, 8192)
    );
    assert_eq!(
        latest.tags.get(tags::CONTENT_HASH).map(String::as_str),
        Some("hash-2048-8192")
    );
    // family:revision and the ARN address revision 1.
    let by_rev = cloud
        .ecs
        .describe_task_definition(&format!("{family}:1"), true)
        .await
        .unwrap();
    assert_eq!(by_rev.revision, 1);
    let by_arn = cloud
        .ecs
        .describe_task_definition(&td1.task_definition_arn, false)
        .await
        .unwrap();
    assert_eq!(by_arn.revision, 1);

    // Deregister: INACTIVE, still describable by revision.
    let gone = cloud
        .ecs
        .deregister_task_definition(&format!("{family}:1"))
        .await
        .expect("deregister");
    assert_eq!(gone.status, TaskDefinitionStatus::Inactive);

    // An unknown family is a ClientException (permanent), as on AWS.
    let err = cloud
        .ecs
        .describe_task_definition("berth-acme-nobody", true)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Client, "{err}");
    assert!(!err.is_transient());
    assert_eq!(err.operation, "DescribeTaskDefinition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_create_update_describe_delete_and_missing() {
    let moto = Moto::start();
    let infra = moto.setup();
    let cloud = cloud(&moto).await;
    let td = cloud
        .ecs
        .register_task_definition(task_definition(
            "berth-acme-alice",
            512,
            1024,
            &infra.file_system,
            "fsap-0123456789abcdef0",
        ))
        .await
        .unwrap();

    let created = cloud
        .ecs
        .create_service(create_service(
            &infra,
            "berth-acme-alice",
            &td.task_definition_arn,
            "uid-1",
        ))
        .await
        .expect("create service");
    assert_eq!(created.service_name, "berth-acme-alice");
    assert_eq!(created.status, ServiceStatus::Active);
    assert_eq!(created.desired_count, 1);
    assert_eq!(
        created.network_configuration.subnets,
        vec![infra.subnet.clone()]
    );
    assert_eq!(
        created.network_configuration.security_groups,
        vec![infra.security_group.clone()]
    );
    assert_eq!(
        created.network_configuration.assign_public_ip,
        AssignPublicIp::Enabled
    );

    // Describe with tags: found by name, ownership tags present; an unknown
    // name is a MISSING failure, not an error.
    let out = cloud
        .ecs
        .describe_services(
            &infra.cluster,
            &["berth-acme-alice".into(), "berth-acme-nobody".into()],
            true,
        )
        .await
        .expect("describe");
    assert_eq!(out.services.len(), 1);
    let svc = &out.services[0];
    assert_eq!(svc.tags.get(tags::UID).map(String::as_str), Some("uid-1"));
    assert_eq!(
        svc.tags.get(tags::NAME).map(String::as_str),
        Some("berth-acme-alice")
    );
    assert_eq!(svc.task_definition, td.task_definition_arn);
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].reason, FAILURE_MISSING);
    assert!(
        out.failures[0].arn.contains("berth-acme-nobody"),
        "{:?}",
        out.failures
    );
    // The primary deployment is first and names the task definition.
    let primary = svc.primary_deployment().expect("primary deployment");
    assert_eq!(primary.task_definition, td.task_definition_arn);

    // Stop: desiredCount 0.
    let stopped = cloud
        .ecs
        .update_service(UpdateService {
            cluster: infra.cluster.clone(),
            service: "berth-acme-alice".into(),
            desired_count: Some(0),
            ..Default::default()
        })
        .await
        .expect("scale to 0");
    assert_eq!(stopped.desired_count, 0);
    // moto never runs tasks: on an update its runningCount jumps to the
    // desiredCount (real ECS starts and stops tasks over time).
    assert_eq!(stopped.running_count, 0);

    // New revision, start again.
    let td2 = cloud
        .ecs
        .register_task_definition(task_definition(
            "berth-acme-alice",
            1024,
            2048,
            &infra.file_system,
            "fsap-0123456789abcdef0",
        ))
        .await
        .unwrap();
    let started = cloud
        .ecs
        .update_service(UpdateService {
            cluster: infra.cluster.clone(),
            service: "berth-acme-alice".into(),
            desired_count: Some(1),
            task_definition: Some(td2.task_definition_arn.clone()),
            force_new_deployment: false,
            enable_execute_command: None,
            deployment_configuration: None,
        })
        .await
        .expect("start with revision 2");
    assert_eq!(started.desired_count, 1);
    assert_eq!(
        started.running_count, 1,
        "moto: runningCount jumps to desiredCount"
    );
    assert!(
        started.task_definition.ends_with("berth-acme-alice:2"),
        "{}",
        started.task_definition
    );

    // ListServices lists it by ARN.
    let arns = cloud.ecs.list_services(&infra.cluster).await.expect("list");
    assert_eq!(arns.len(), 1);
    assert!(arns[0].ends_with("berth-acme-alice"), "{arns:?}");

    // No tasks ever run under moto; the calls still work.
    let running = cloud
        .ecs
        .list_tasks(&infra.cluster, "berth-acme-alice", DesiredStatus::Running)
        .await
        .expect("list tasks");
    let stopped_tasks = cloud
        .ecs
        .list_tasks(&infra.cluster, "berth-acme-alice", DesiredStatus::Stopped)
        .await
        .expect("list stopped tasks");
    assert!(running.is_empty() && stopped_tasks.is_empty());
    let described = cloud
        .ecs
        .describe_tasks(
            &infra.cluster,
            &[format!(
                "arn:aws:ecs:us-east-1:123456789012:task/{}/0123456789abcdef",
                infra.cluster
            )],
        )
        .await
        .expect("describe tasks");
    assert!(described.tasks.is_empty());

    // Delete (force): the service turns DRAINING/INACTIVE, which the
    // controller treats as gone; updating it is refused.
    let deleted = cloud
        .ecs
        .delete_service(DeleteService {
            cluster: infra.cluster.clone(),
            service: "berth-acme-alice".into(),
            force: true,
        })
        .await
        .expect("delete");
    assert_ne!(deleted.status, ServiceStatus::Active);
    let after = cloud
        .ecs
        .describe_services(&infra.cluster, &["berth-acme-alice".into()], true)
        .await
        .unwrap();
    let gone = after
        .services
        .iter()
        .all(|s| s.status == ServiceStatus::Inactive)
        && after.failures.iter().all(|f| f.reason == FAILURE_MISSING);
    assert!(
        gone,
        "deleted service must read as INACTIVE or MISSING: {after:?}"
    );
    // (AWS refuses to update an INACTIVE service with
    // ServiceNotActiveException; moto accepts it, so the controller never
    // updates a service it did not see ACTIVE.)

    // Updating a service that never existed.
    let err = cloud
        .ecs
        .update_service(UpdateService {
            cluster: infra.cluster.clone(),
            service: "berth-acme-never".into(),
            desired_count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ServiceNotFound, "{err}");

    // An unknown cluster.
    let err = cloud
        .ecs
        .create_service(CreateService {
            cluster: "no-such-cluster".into(),
            ..create_service(&infra, "berth-acme-bob", &td.task_definition_arn, "uid-2")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ClusterNotFound, "{err}");
    assert!(!err.is_transient());

    // A client token longer than ECS allows is refused before the call.
    let err = cloud
        .ecs
        .create_service(CreateService {
            client_token: Some("x".repeat(37)),
            ..create_service(&infra, "berth-acme-carol", &td.task_definition_arn, "uid-3")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidParameter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_services_handles_more_than_ten_names() {
    let moto = Moto::start();
    let infra = moto.setup();
    let cloud = cloud(&moto).await;
    let td = cloud
        .ecs
        .register_task_definition(task_definition(
            "berth-acme-bulk",
            256,
            512,
            &infra.file_system,
            "fsap-0123456789abcdef0",
        ))
        .await
        .unwrap();
    let mut names = Vec::new();
    for i in 0..12 {
        let name = format!("berth-acme-ws{i:02}");
        cloud
            .ecs
            .create_service(create_service(
                &infra,
                &name,
                &td.task_definition_arn,
                &format!("uid-{i}"),
            ))
            .await
            .expect("create");
        names.push(name);
    }
    names.push("berth-acme-missing".into());

    // Through the seam's chunking helper (what the controller uses) …
    let out = describe_services_chunked(cloud.ecs.as_ref(), &infra.cluster, &names, true)
        .await
        .expect("chunked describe");
    assert_eq!(out.services.len(), 12);
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].reason, FAILURE_MISSING);
    for (i, s) in out.services.iter().enumerate() {
        assert_eq!(s.service_name, names[i]);
        assert_eq!(s.tags.get(tags::UID), Some(&format!("uid-{i}")));
    }
    // … and directly: the backend splits into calls of at most 10 itself.
    let direct = cloud
        .ecs
        .describe_services(&infra.cluster, &names, true)
        .await
        .expect("direct describe");
    assert_eq!(direct.services.len(), 12);
    assert_eq!(direct.failures.len(), 1);

    // ListServices returns all of them (moto does not paginate; the
    // backend follows nextToken when AWS does).
    let arns = cloud.ecs.list_services(&infra.cluster).await.unwrap();
    assert_eq!(arns.len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_points_create_describe_and_delete() {
    let moto = Moto::start();
    let infra = moto.setup();
    let cloud = cloud(&moto).await;
    let input = CreateAccessPoint {
        client_token: "berth-0123456789abcdef0123456789abcd".into(),
        file_system_id: infra.file_system.clone(),
        posix_user: Some(PosixUser {
            uid: 1000,
            gid: 1000,
            secondary_gids: vec![100],
        }),
        root_directory: Some(RootDirectory {
            path: "/home/alice".into(),
            creation_info: Some(CreationInfo {
                owner_uid: 1000,
                owner_gid: 1000,
                permissions: "0750".into(),
            }),
        }),
        tags: owner("uid-1", "alice"),
    };
    let ap = cloud
        .efs
        .create_access_point(input.clone())
        .await
        .expect("create");
    assert!(
        ap.access_point_id.starts_with("fsap-"),
        "{}",
        ap.access_point_id
    );
    assert!(ap.access_point_arn.contains(&ap.access_point_id));
    assert_eq!(ap.file_system_id, infra.file_system);
    assert_eq!(ap.posix_user, input.posix_user);
    assert_eq!(Some(ap.root_directory.clone()), input.root_directory);
    assert_eq!(ap.tags, input.tags);

    // A second workspace's access point on the same file system.
    let other = cloud
        .efs
        .create_access_point(CreateAccessPoint {
            client_token: "berth-other".into(),
            tags: owner("uid-2", "bob"),
            root_directory: Some(RootDirectory {
                path: "/home/bob".into(),
                creation_info: None,
            }),
            ..input.clone()
        })
        .await
        .unwrap();

    // Describe by file system: both, with tags, so the controller finds
    // each workspace's by its uid tag.
    let all = cloud
        .efs
        .describe_access_points(&infra.file_system)
        .await
        .expect("describe");
    assert_eq!(all.len(), 2);
    let mine = all
        .iter()
        .find(|a| tags::is_owned_by(&a.tags, "uid-1"))
        .expect("found by tag");
    assert_eq!(mine.access_point_id, ap.access_point_id);
    assert_eq!(mine.root_directory.path, "/home/alice");
    assert_eq!(mine.life_cycle_state, LifeCycleState::Available);
    assert_eq!(mine.posix_user.as_ref().map(|p| p.uid), Some(1000));

    // Describe one by id.
    let one = cloud
        .efs
        .describe_access_point(&other.access_point_id)
        .await
        .expect("by id");
    assert_eq!(one.root_directory.path, "/home/bob");
    assert_eq!(one.tags.get(tags::NAME).map(String::as_str), Some("bob"));

    // Delete: gone from the listing; by id → AccessPointNotFound. (AWS also
    // answers AccessPointNotFound to a second delete, which the controller
    // treats as done; moto answers 200, so that is not asserted here.)
    cloud
        .efs
        .delete_access_point(&ap.access_point_id)
        .await
        .expect("delete");
    let rest = cloud
        .efs
        .describe_access_points(&infra.file_system)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].access_point_id, other.access_point_id);
    let err = cloud
        .efs
        .describe_access_point(&ap.access_point_id)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AccessPointNotFound, "{err}");
    assert!(err.is_not_found());

    // (AWS answers FileSystemNotFound for an unknown file system; moto
    // creates the access point anyway, so that is not asserted here.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_put_creates_then_updates_with_a_stable_arn_and_delete() {
    let moto = Moto::start();
    let cloud = cloud(&moto).await;
    let name = "berth/acme/alice/agent-token";
    let put = |value: &str| PutSecret {
        name: name.into(),
        value: SecretString::new(value),
        description: Some("Berth agent token of workspace acme/alice".into()),
        tags: owner("uid-1", "alice"),
    };
    let first = cloud
        .secrets
        .put_secret_value(put("token-1"))
        .await
        .expect("create");
    assert!(
        first.arn.contains(":secret:berth/acme/alice/agent-token"),
        "{}",
        first.arn
    );
    assert_eq!(first.name, name);
    assert!(!first.version_id.is_empty());

    let second = cloud
        .secrets
        .put_secret_value(put("token-2"))
        .await
        .expect("update");
    assert_eq!(
        second.arn, first.arn,
        "the ARN a task definition references stays"
    );
    assert_ne!(second.version_id, first.version_id);

    // The stored value is the latest (read through moto's state dump).
    let state = moto.data_json();
    assert!(state.contains("token-2"), "latest value stored");

    cloud.secrets.delete_secret(name).await.expect("delete");

    // Recreated on the next start.
    let again = cloud
        .secrets
        .put_secret_value(put("token-3"))
        .await
        .expect("recreate");
    assert!(again.arn.contains(":secret:berth/acme/alice/agent-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_are_transient() {
    // Nothing listens on this port: the call fails fast and is retryable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cloud = berth_aws::connect(berth_aws::AwsOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        static_credentials: Some(berth_aws::StaticCredentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = cloud.ecs.list_services("berth").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.operation, "ListServices");
}
