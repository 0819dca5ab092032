//! [`Ecs`] on `aws-sdk-ecs`.

use async_trait::async_trait;
use aws_sdk_ecs::types as t;
use aws_sdk_ecs::Client;
use berth_cloud::ecs::{
    AssignPublicIp, ContainerDefinition, CreateService, DeleteService, Deployment,
    DeploymentConfiguration, DeploymentStatus, DescribeServicesOutput, DescribeTasksOutput,
    DesiredStatus, Ecs, EfsVolumeConfiguration, Failure, LogConfiguration, MountPoint,
    NetworkConfiguration, PropagateTags, RegisterTaskDefinition, RolloutState, SecretEnv, Service,
    ServiceEvent, ServiceStatus, StopCode, Task, TaskDefinition, TaskDefinitionStatus, TaskStatus,
    UpdateService, Volume, MAX_DESCRIBE_SERVICES, MAX_DESCRIBE_TASKS,
};
use berth_cloud::{CloudError, CloudResult, ErrorCode, Tags};

use crate::convert::{count, int, non_empty, opt_time, time};
use crate::error::map_sdk_error;
use crate::invalid;

/// Pages followed at most by one list call (a guard against an endpoint that
/// keeps returning a token).
const MAX_PAGES: usize = 10_000;

/// ECS through the AWS SDK.
#[derive(Clone, Debug)]
pub struct AwsEcs {
    ecs: Client,
}

impl AwsEcs {
    /// Wraps an SDK client.
    pub fn new(ecs: Client) -> Self {
        AwsEcs { ecs }
    }
}

fn ecs_tags(tags: &Tags) -> Option<Vec<t::Tag>> {
    (!tags.is_empty()).then(|| {
        tags.iter()
            .map(|(k, v)| t::Tag::builder().key(k).value(v).build())
            .collect()
    })
}

fn tags_from(tags: &[t::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key.clone()?, t.value.clone().unwrap_or_default())))
        .collect()
}

fn build_err(op: &'static str, e: aws_smithy_types::error::operation::BuildError) -> CloudError {
    invalid(op, e.to_string())
}

fn container_to_sdk(
    op: &'static str,
    c: &ContainerDefinition,
) -> CloudResult<t::ContainerDefinition> {
    let environment = c
        .environment
        .iter()
        .map(|(k, v)| t::KeyValuePair::builder().name(k).value(v).build())
        .collect::<Vec<_>>();
    let secrets = c
        .secrets
        .iter()
        .map(|s| {
            t::Secret::builder()
                .name(&s.name)
                .value_from(&s.value_from)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| build_err(op, e))?;
    let mount_points = c
        .mount_points
        .iter()
        .map(|m| {
            t::MountPoint::builder()
                .source_volume(&m.source_volume)
                .container_path(&m.container_path)
                .read_only(m.read_only)
                .build()
        })
        .collect::<Vec<_>>();
    let log_configuration = match &c.log_configuration {
        Some(l) => Some(
            t::LogConfiguration::builder()
                .log_driver(t::LogDriver::from(l.log_driver.as_str()))
                .set_options(Some(
                    l.options
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ))
                .build()
                .map_err(|e| build_err(op, e))?,
        ),
        None => None,
    };
    Ok(t::ContainerDefinition::builder()
        .name(&c.name)
        .image(&c.image)
        .essential(c.essential)
        .set_entry_point((!c.entry_point.is_empty()).then(|| c.entry_point.clone()))
        .set_command((!c.command.is_empty()).then(|| c.command.clone()))
        .set_environment((!environment.is_empty()).then_some(environment))
        .set_secrets((!secrets.is_empty()).then_some(secrets))
        .set_mount_points((!mount_points.is_empty()).then_some(mount_points))
        .set_stop_timeout(c.stop_timeout.map(int))
        .set_user(c.user.clone())
        .set_working_directory(c.working_directory.clone())
        .set_log_configuration(log_configuration)
        .set_linux_parameters(c.init_process_enabled.then(|| {
            t::LinuxParameters::builder()
                .init_process_enabled(true)
                .build()
        }))
        .set_repository_credentials(match &c.repository_credentials {
            Some(arn) => Some(
                t::RepositoryCredentials::builder()
                    .credentials_parameter(arn)
                    .build()
                    .map_err(|e| build_err(op, e))?,
            ),
            None => None,
        })
        .build())
}

fn container_from_sdk(c: &t::ContainerDefinition) -> ContainerDefinition {
    ContainerDefinition {
        name: c.name.clone().unwrap_or_default(),
        image: c.image.clone().unwrap_or_default(),
        essential: c.essential.unwrap_or(true),
        entry_point: c.entry_point.clone().unwrap_or_default(),
        command: c.command.clone().unwrap_or_default(),
        environment: c
            .environment()
            .iter()
            .filter_map(|kv| Some((kv.name.clone()?, kv.value.clone().unwrap_or_default())))
            .collect(),
        secrets: c
            .secrets()
            .iter()
            .map(|s| SecretEnv {
                name: s.name.clone(),
                value_from: s.value_from.clone(),
            })
            .collect(),
        mount_points: c
            .mount_points()
            .iter()
            .map(|m| MountPoint {
                source_volume: m.source_volume.clone().unwrap_or_default(),
                container_path: m.container_path.clone().unwrap_or_default(),
                read_only: m.read_only.unwrap_or(false),
            })
            .collect(),
        stop_timeout: c.stop_timeout.map(count),
        user: c.user.clone(),
        working_directory: c.working_directory.clone(),
        init_process_enabled: c
            .linux_parameters
            .as_ref()
            .and_then(|l| l.init_process_enabled)
            .unwrap_or(false),
        repository_credentials: c
            .repository_credentials
            .as_ref()
            .map(|r| r.credentials_parameter.clone()),
        log_configuration: c.log_configuration.as_ref().map(|l| LogConfiguration {
            log_driver: l.log_driver.as_str().to_owned(),
            options: l
                .options
                .as_ref()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        }),
    }
}

fn volume_to_sdk(op: &'static str, v: &Volume) -> CloudResult<t::Volume> {
    let efs = match &v.efs_volume_configuration {
        Some(e) => Some(
            t::EfsVolumeConfiguration::builder()
                .file_system_id(&e.file_system_id)
                .set_root_directory(e.root_directory.clone())
                .transit_encryption(if e.transit_encryption {
                    t::EfsTransitEncryption::Enabled
                } else {
                    t::EfsTransitEncryption::Disabled
                })
                .set_authorization_config(
                    (e.access_point_id.is_some() || e.iam_authorization).then(|| {
                        t::EfsAuthorizationConfig::builder()
                            .set_access_point_id(e.access_point_id.clone())
                            .iam(if e.iam_authorization {
                                t::EfsAuthorizationConfigIam::Enabled
                            } else {
                                t::EfsAuthorizationConfigIam::Disabled
                            })
                            .build()
                    }),
                )
                .build()
                .map_err(|e| build_err(op, e))?,
        ),
        None => None,
    };
    Ok(t::Volume::builder()
        .name(&v.name)
        .set_efs_volume_configuration(efs)
        .build())
}

fn volume_from_sdk(v: &t::Volume) -> Volume {
    Volume {
        name: v.name.clone().unwrap_or_default(),
        efs_volume_configuration: v.efs_volume_configuration.as_ref().map(|e| {
            let auth = e.authorization_config.as_ref();
            EfsVolumeConfiguration {
                file_system_id: e.file_system_id.clone(),
                root_directory: e.root_directory.clone(),
                transit_encryption: e.transit_encryption == Some(t::EfsTransitEncryption::Enabled),
                access_point_id: auth.and_then(|a| a.access_point_id.clone()),
                iam_authorization: auth
                    .is_some_and(|a| a.iam == Some(t::EfsAuthorizationConfigIam::Enabled)),
            }
        }),
    }
}

fn parse_u32(s: Option<&str>) -> u32 {
    s.and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn task_definition_from_sdk(td: &t::TaskDefinition, tags: &[t::Tag]) -> TaskDefinition {
    TaskDefinition {
        task_definition_arn: td.task_definition_arn.clone().unwrap_or_default(),
        family: td.family.clone().unwrap_or_default(),
        revision: count(td.revision),
        status: match td.status {
            Some(t::TaskDefinitionStatus::Active) | None => TaskDefinitionStatus::Active,
            Some(_) => TaskDefinitionStatus::Inactive,
        },
        cpu: parse_u32(td.cpu.as_deref()),
        memory: parse_u32(td.memory.as_deref()),
        execution_role_arn: td.execution_role_arn.clone(),
        task_role_arn: td.task_role_arn.clone(),
        container_definitions: td
            .container_definitions()
            .iter()
            .map(container_from_sdk)
            .collect(),
        volumes: td.volumes().iter().map(volume_from_sdk).collect(),
        registered_at: time(td.registered_at.as_ref()),
        tags: tags_from(tags),
    }
}

fn service_status(s: Option<&str>) -> ServiceStatus {
    match s {
        Some("ACTIVE") => ServiceStatus::Active,
        Some("INACTIVE") => ServiceStatus::Inactive,
        Some("DRAINING") => ServiceStatus::Draining,
        // An unknown status is not usable and not gone: wait.
        other => {
            tracing::warn!(status = ?other, "unknown ECS service status; treated as DRAINING");
            ServiceStatus::Draining
        }
    }
}

fn deployment_from_sdk(d: &t::Deployment) -> Deployment {
    let desired = count(d.desired_count);
    let running = count(d.running_count);
    let pending = count(d.pending_count);
    Deployment {
        id: d.id.clone().unwrap_or_default(),
        status: match d.status.as_deref() {
            Some("PRIMARY") => DeploymentStatus::Primary,
            Some("ACTIVE") => DeploymentStatus::Active,
            _ => DeploymentStatus::Inactive,
        },
        task_definition: d.task_definition.clone().unwrap_or_default(),
        desired_count: desired,
        pending_count: pending,
        running_count: running,
        failed_tasks: count(d.failed_tasks),
        rollout_state: match &d.rollout_state {
            Some(t::DeploymentRolloutState::Completed) => RolloutState::Completed,
            Some(t::DeploymentRolloutState::Failed) => RolloutState::Failed,
            Some(t::DeploymentRolloutState::InProgress) => RolloutState::InProgress,
            // ECS always reports it for the ECS deployment controller;
            // emulators may not: derive it from the counts.
            _ if running == desired && pending == 0 => RolloutState::Completed,
            _ => RolloutState::InProgress,
        },
        rollout_state_reason: d.rollout_state_reason.clone().unwrap_or_default(),
        created_at: time(d.created_at.as_ref()),
        updated_at: time(d.updated_at.as_ref()),
    }
}

fn network_from_sdk(n: Option<&t::NetworkConfiguration>) -> NetworkConfiguration {
    let Some(v) = n.and_then(|n| n.awsvpc_configuration.as_ref()) else {
        return NetworkConfiguration::default();
    };
    NetworkConfiguration {
        subnets: v.subnets.clone(),
        security_groups: v.security_groups.clone().unwrap_or_default(),
        assign_public_ip: match v.assign_public_ip {
            Some(t::AssignPublicIp::Enabled) => AssignPublicIp::Enabled,
            _ => AssignPublicIp::Disabled,
        },
    }
}

fn service_from_sdk(s: &t::Service) -> Service {
    let mut deployments: Vec<Deployment> =
        s.deployments().iter().map(deployment_from_sdk).collect();
    // Primary first, as the seam documents.
    deployments.sort_by_key(|d| d.status != DeploymentStatus::Primary);
    let task_definition = s
        .task_definition
        .clone()
        .or_else(|| {
            deployments
                .iter()
                .find(|d| d.status == DeploymentStatus::Primary)
                .map(|d| d.task_definition.clone())
        })
        .unwrap_or_default();
    Service {
        service_arn: s.service_arn.clone().unwrap_or_default(),
        service_name: s.service_name.clone().unwrap_or_default(),
        cluster_arn: s.cluster_arn.clone().unwrap_or_default(),
        status: service_status(s.status.as_deref()),
        desired_count: count(s.desired_count),
        running_count: count(s.running_count),
        pending_count: count(s.pending_count),
        task_definition,
        deployments,
        events: s
            .events()
            .iter()
            .map(|e| ServiceEvent {
                id: e.id.clone().unwrap_or_default(),
                created_at: time(e.created_at.as_ref()),
                message: e.message.clone().unwrap_or_default(),
            })
            .collect(),
        network_configuration: network_from_sdk(s.network_configuration.as_ref()),
        enable_execute_command: s.enable_execute_command,
        deployment_configuration: s.deployment_configuration.as_ref().and_then(|c| {
            Some(DeploymentConfiguration {
                minimum_healthy_percent: u32::try_from(c.minimum_healthy_percent?).ok()?,
                maximum_percent: u32::try_from(c.maximum_percent?).ok()?,
            })
        }),
        propagate_tags: s.propagate_tags.as_ref().and_then(|p| match p {
            t::PropagateTags::None => Some(PropagateTags::None),
            t::PropagateTags::Service => Some(PropagateTags::Service),
            t::PropagateTags::TaskDefinition => Some(PropagateTags::TaskDefinition),
            _ => None,
        }),
        created_at: time(s.created_at.as_ref()),
        tags: tags_from(s.tags()),
    }
}

fn task_status(s: Option<&str>) -> TaskStatus {
    match s.unwrap_or_default() {
        "PROVISIONING" => TaskStatus::Provisioning,
        "PENDING" | "ACTIVATING" => TaskStatus::Pending,
        "RUNNING" => TaskStatus::Running,
        "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => TaskStatus::Deprovisioning,
        "STOPPED" | "DELETED" => TaskStatus::Stopped,
        _ => TaskStatus::Pending,
    }
}

fn task_from_sdk(task: &t::Task) -> Task {
    Task {
        task_arn: task.task_arn.clone().unwrap_or_default(),
        cluster_arn: task.cluster_arn.clone().unwrap_or_default(),
        task_definition_arn: task.task_definition_arn.clone().unwrap_or_default(),
        group: task.group.clone().unwrap_or_default(),
        started_by: task.started_by.clone().unwrap_or_default(),
        last_status: task_status(task.last_status.as_deref()),
        desired_status: task_status(task.desired_status.as_deref()),
        created_at: time(task.created_at.as_ref()),
        started_at: opt_time(task.started_at.as_ref()),
        stopping_at: opt_time(task.stopping_at.as_ref()),
        stopped_at: opt_time(task.stopped_at.as_ref()),
        stop_code: task.stop_code.as_ref().and_then(|c| match c {
            t::TaskStopCode::TaskFailedToStart => Some(StopCode::TaskFailedToStart),
            t::TaskStopCode::EssentialContainerExited => Some(StopCode::EssentialContainerExited),
            t::TaskStopCode::UserInitiated => Some(StopCode::UserInitiated),
            t::TaskStopCode::ServiceSchedulerInitiated => Some(StopCode::ServiceSchedulerInitiated),
            _ => None,
        }),
        stopped_reason: task.stopped_reason.clone(),
    }
}

fn failure_from_sdk(f: &t::Failure) -> Failure {
    Failure {
        arn: f.arn.clone().unwrap_or_default(),
        reason: f.reason.clone().unwrap_or_default(),
        detail: f.detail.clone(),
    }
}

/// The service a create/update/delete answered with; ECS always returns it.
fn answered_service(op: &'static str, s: Option<&t::Service>) -> CloudResult<Service> {
    s.map(service_from_sdk).ok_or_else(|| {
        CloudError::new(
            op,
            ErrorCode::Other("MissingService".into()),
            "the response carried no service",
        )
    })
}

#[async_trait]
impl Ecs for AwsEcs {
    async fn register_task_definition(
        &self,
        input: RegisterTaskDefinition,
    ) -> CloudResult<TaskDefinition> {
        const OP: &str = "RegisterTaskDefinition";
        let containers = input
            .container_definitions
            .iter()
            .map(|c| container_to_sdk(OP, c))
            .collect::<CloudResult<Vec<_>>>()?;
        let volumes = input
            .volumes
            .iter()
            .map(|v| volume_to_sdk(OP, v))
            .collect::<CloudResult<Vec<_>>>()?;
        let out = self
            .ecs
            .register_task_definition()
            .family(&input.family)
            .requires_compatibilities(t::Compatibility::Fargate)
            .network_mode(t::NetworkMode::Awsvpc)
            .cpu(input.cpu.to_string())
            .memory(input.memory.to_string())
            .set_execution_role_arn(input.execution_role_arn.clone())
            .set_task_role_arn(input.task_role_arn.clone())
            .set_container_definitions(Some(containers))
            .set_volumes((!volumes.is_empty()).then_some(volumes))
            .set_tags(ecs_tags(&input.tags))
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        let td = out.task_definition.as_ref().ok_or_else(|| {
            CloudError::new(
                OP,
                ErrorCode::Other("MissingTaskDefinition".into()),
                "empty response",
            )
        })?;
        let mut td = task_definition_from_sdk(td, out.tags());
        if td.tags.is_empty() {
            // RegisterTaskDefinition echoes the tags; fall back to the input.
            td.tags = input.tags;
        }
        Ok(td)
    }

    async fn describe_task_definition(
        &self,
        task_definition: &str,
        include_tags: bool,
    ) -> CloudResult<TaskDefinition> {
        const OP: &str = "DescribeTaskDefinition";
        let mut req = self
            .ecs
            .describe_task_definition()
            .task_definition(task_definition);
        if include_tags {
            req = req.include(t::TaskDefinitionField::Tags);
        }
        let out = req.send().await.map_err(|e| map_sdk_error(OP, e))?;
        let td = out.task_definition.as_ref().ok_or_else(|| {
            CloudError::new(OP, ErrorCode::Client, "Unable to describe task definition.")
        })?;
        Ok(task_definition_from_sdk(td, out.tags()))
    }

    async fn deregister_task_definition(
        &self,
        task_definition: &str,
    ) -> CloudResult<TaskDefinition> {
        const OP: &str = "DeregisterTaskDefinition";
        let out = self
            .ecs
            .deregister_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        let td = out.task_definition.as_ref().ok_or_else(|| {
            CloudError::new(
                OP,
                ErrorCode::Other("MissingTaskDefinition".into()),
                "empty response",
            )
        })?;
        Ok(task_definition_from_sdk(td, &[]))
    }

    async fn create_service(&self, input: CreateService) -> CloudResult<Service> {
        const OP: &str = "CreateService";
        if let Some(token) = &input.client_token {
            if token.len() > 36 {
                return Err(invalid(OP, "clientToken must be at most 36 characters."));
            }
        }
        let n = &input.network_configuration;
        let vpc = t::AwsVpcConfiguration::builder()
            .set_subnets(Some(n.subnets.clone()))
            .set_security_groups(Some(n.security_groups.clone()))
            .assign_public_ip(match n.assign_public_ip {
                AssignPublicIp::Enabled => t::AssignPublicIp::Enabled,
                AssignPublicIp::Disabled => t::AssignPublicIp::Disabled,
            })
            .build()
            .map_err(|e| build_err(OP, e))?;
        let mut req = self
            .ecs
            .create_service()
            .cluster(&input.cluster)
            .service_name(&input.service_name)
            .task_definition(&input.task_definition)
            .desired_count(int(input.desired_count))
            .launch_type(t::LaunchType::Fargate)
            .scheduling_strategy(t::SchedulingStrategy::Replica)
            .set_platform_version(input.platform_version.clone())
            .network_configuration(
                t::NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            )
            .set_client_token(input.client_token.clone())
            .set_tags(ecs_tags(&input.tags))
            .enable_execute_command(input.enable_execute_command)
            .set_propagate_tags(input.propagate_tags.map(|p| match p {
                PropagateTags::None => t::PropagateTags::None,
                PropagateTags::Service => t::PropagateTags::Service,
                PropagateTags::TaskDefinition => t::PropagateTags::TaskDefinition,
            }))
            .enable_ecs_managed_tags(input.enable_ecs_managed_tags);
        if input.deployment_circuit_breaker || input.deployment_configuration.is_some() {
            let mut dc = t::DeploymentConfiguration::builder();
            if input.deployment_circuit_breaker {
                dc = dc.deployment_circuit_breaker(
                    t::DeploymentCircuitBreaker::builder()
                        .enable(true)
                        .rollback(false)
                        .build(),
                );
            }
            if let Some(c) = input.deployment_configuration {
                dc = dc
                    .minimum_healthy_percent(int(c.minimum_healthy_percent))
                    .maximum_percent(int(c.maximum_percent));
            }
            req = req.deployment_configuration(dc.build());
        }
        let out = req.send().await.map_err(|e| map_sdk_error(OP, e))?;
        let mut svc = answered_service(OP, out.service.as_ref())?;
        if svc.tags.is_empty() {
            svc.tags = input.tags;
        }
        Ok(svc)
    }

    async fn update_service(&self, input: UpdateService) -> CloudResult<Service> {
        const OP: &str = "UpdateService";
        let out = self
            .ecs
            .update_service()
            .cluster(&input.cluster)
            .service(&input.service)
            .set_desired_count(input.desired_count.map(int))
            .set_task_definition(input.task_definition.clone())
            .force_new_deployment(input.force_new_deployment)
            .set_enable_execute_command(input.enable_execute_command)
            .set_deployment_configuration(input.deployment_configuration.map(|c| {
                t::DeploymentConfiguration::builder()
                    .minimum_healthy_percent(int(c.minimum_healthy_percent))
                    .maximum_percent(int(c.maximum_percent))
                    .build()
            }))
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        answered_service(OP, out.service.as_ref())
    }

    async fn delete_service(&self, input: DeleteService) -> CloudResult<Service> {
        const OP: &str = "DeleteService";
        let out = self
            .ecs
            .delete_service()
            .cluster(&input.cluster)
            .service(&input.service)
            .force(input.force)
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        answered_service(OP, out.service.as_ref())
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
        include_tags: bool,
    ) -> CloudResult<DescribeServicesOutput> {
        const OP: &str = "DescribeServices";
        let mut result = DescribeServicesOutput::default();
        // ECS takes at most 10 names a call; split here too, so a caller
        // that passes more still works against AWS.
        for chunk in services.chunks(MAX_DESCRIBE_SERVICES) {
            let mut req = self
                .ecs
                .describe_services()
                .cluster(cluster)
                .set_services(Some(chunk.to_vec()));
            if include_tags {
                req = req.include(t::ServiceField::Tags);
            }
            let out = req.send().await.map_err(|e| map_sdk_error(OP, e))?;
            result
                .services
                .extend(out.services().iter().map(service_from_sdk));
            result
                .failures
                .extend(out.failures().iter().map(failure_from_sdk));
        }
        Ok(result)
    }

    async fn list_services(&self, cluster: &str) -> CloudResult<Vec<String>> {
        const OP: &str = "ListServices";
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let out = self
                .ecs
                .list_services()
                .cluster(cluster)
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk_error(OP, e))?;
            arns.extend(out.service_arns().iter().cloned());
            match out.next_token.as_deref().and_then(non_empty) {
                Some(next) => token = Some(next),
                None => return Ok(arns),
            }
        }
        Err(CloudError::new(
            OP,
            ErrorCode::Other("TooManyPages".into()),
            "pagination did not end",
        ))
    }

    async fn list_tasks(
        &self,
        cluster: &str,
        service_name: &str,
        desired_status: DesiredStatus,
    ) -> CloudResult<Vec<String>> {
        const OP: &str = "ListTasks";
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let out = self
                .ecs
                .list_tasks()
                .cluster(cluster)
                .service_name(service_name)
                .desired_status(match desired_status {
                    DesiredStatus::Running => t::DesiredStatus::Running,
                    DesiredStatus::Stopped => t::DesiredStatus::Stopped,
                })
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk_error(OP, e))?;
            arns.extend(out.task_arns().iter().cloned());
            match out.next_token.as_deref().and_then(non_empty) {
                Some(next) => token = Some(next),
                None => return Ok(arns),
            }
        }
        Err(CloudError::new(
            OP,
            ErrorCode::Other("TooManyPages".into()),
            "pagination did not end",
        ))
    }

    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> CloudResult<DescribeTasksOutput> {
        const OP: &str = "DescribeTasks";
        let mut result = DescribeTasksOutput::default();
        for chunk in tasks.chunks(MAX_DESCRIBE_TASKS) {
            let out = self
                .ecs
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| map_sdk_error(OP, e))?;
            result.tasks.extend(out.tasks().iter().map(task_from_sdk));
            result
                .failures
                .extend(out.failures().iter().map(failure_from_sdk));
        }
        Ok(result)
    }
}
