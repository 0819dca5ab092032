//! Throttling and 5xx through a fault-injecting proxy in front of moto:
//! error codes are mapped (transient, throttling), the SDK's own retries
//! are off by default (one request per call), and when turned on they stay
//! bounded by `max_attempts` without duplicating a create.

use berth_aws::testing::{Fault, FaultProxy, Moto};
use berth_aws::AwsOptions;
use berth_cloud::ecs::{
    AssignPublicIp, ContainerDefinition, CreateService, NetworkConfiguration,
    RegisterTaskDefinition,
};
use berth_cloud::ErrorCode;

fn through(proxy: &FaultProxy, moto: &Moto, max_attempts: u32) -> AwsOptions {
    AwsOptions {
        endpoint_url: Some(proxy.endpoint()),
        max_attempts,
        ..moto.options()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_map_to_transient_codes_and_the_sdk_does_not_retry_by_default() {
    let moto = Moto::start();
    let infra = moto.setup();
    let proxy = FaultProxy::start(&moto);
    let cloud = berth_aws::connect(through(&proxy, &moto, 1)).await.unwrap();
    proxy.inject([Fault::Throttle, Fault::Unavailable, Fault::ServerError]);

    let e = cloud.ecs.list_services(&infra.cluster).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Throttling, "{e}");
    assert!(e.is_throttling() && e.is_transient());
    assert_eq!(e.message, "Rate exceeded");
    let e = cloud.ecs.list_services(&infra.cluster).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::ServiceUnavailable, "{e}");
    assert!(e.is_transient());
    let e = cloud
        .efs
        .describe_access_points(&infra.file_system)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Server, "{e}");
    assert!(e.is_transient());
    assert_eq!(
        proxy.requests(),
        3,
        "one request per call: SDK retries are off"
    );

    assert!(cloud
        .ecs
        .list_services(&infra.cluster)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(proxy.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_retries_when_enabled_are_bounded_and_do_not_duplicate() {
    let moto = Moto::start();
    let infra = moto.setup();
    let proxy = FaultProxy::start(&moto);
    let cloud = berth_aws::connect(through(&proxy, &moto, 3)).await.unwrap();
    let td = cloud
        .ecs
        .register_task_definition(RegisterTaskDefinition {
            family: "berth-acme-alice".into(),
            cpu: 256,
            memory: 512,
            container_definitions: vec![ContainerDefinition {
                name: "dev".into(),
                image: "busybox".into(),
                essential: true,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let before = proxy.requests();

    // Two throttles, then success: three requests, one service.
    proxy.inject([Fault::Throttle, Fault::Throttle]);
    let create = CreateService {
        cluster: infra.cluster.clone(),
        service_name: "berth-acme-alice".into(),
        task_definition: td.task_definition_arn.clone(),
        desired_count: 1,
        network_configuration: NetworkConfiguration {
            subnets: vec![infra.subnet.clone()],
            security_groups: vec![infra.security_group.clone()],
            assign_public_ip: AssignPublicIp::Disabled,
        },
        client_token: Some("berth-0123456789abcdef".into()),
        ..Default::default()
    };
    cloud
        .ecs
        .create_service(create)
        .await
        .expect("retried create");
    assert_eq!(proxy.requests() - before, 3);
    assert_eq!(proxy.forwarded() - before, 1, "only one create reached AWS");
    let state: serde_json::Value = serde_json::from_str(&moto.data_json()).unwrap();
    assert_eq!(state["ecs"]["Service"].as_array().map(Vec::len), Some(1));

    // Persistent 503: exactly max_attempts requests, then a transient error.
    let before = proxy.requests();
    proxy.inject([
        Fault::Unavailable,
        Fault::Unavailable,
        Fault::Unavailable,
        Fault::Unavailable,
    ]);
    let e = cloud.ecs.list_services(&infra.cluster).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(proxy.requests() - before, 3, "bounded by max_attempts");
}
