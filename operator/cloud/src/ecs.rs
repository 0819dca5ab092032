//! The ECS seam: task definitions and services.
//!
//! A workspace is one ECS *service* (desiredCount 0 or 1) running one Fargate
//! task whose *task definition* is rendered from the template version,
//! parameters and resources. These types mirror the ECS API (same names,
//! states and limits) but carry only what the controller reads or writes, so
//! the AWS implementation is a mechanical mapping and the simulator can be
//! faithful without pretending to be all of ECS.
//!
//! # Expected flow
//! 1. `describe_task_definition(family)` with tags: reuse the latest revision
//!    when its content hash tag matches, else `register_task_definition`.
//! 2. `describe_services` (batched, ≤ 10 names): a `MISSING` failure or an
//!    `INACTIVE` service means `create_service` (idempotent through
//!    `client_token`); otherwise `update_service` with the wanted
//!    `desired_count` / task definition.
//! 3. Observe `running_count`, `pending_count` and the primary deployment's
//!    `rollout_state`; when tasks keep failing, `list_tasks` with
//!    [`DesiredStatus::Stopped`] + `describe_tasks` give the `stopped_reason`
//!    (e.g. `CannotPullContainerError: …`).
//!
//! # Caveats
//! * ECS accepts a cluster or service either by name or by ARN; so do these
//!   traits.
//! * `describe_services` does not fail for unknown services: they come back
//!   as [`Failure`]s with reason `MISSING`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::CloudResult;
use crate::tags::Tags;

/// ECS limit: `DescribeServices` takes at most 10 services per call.
pub const MAX_DESCRIBE_SERVICES: usize = 10;
/// ECS limit: `DescribeTasks` takes at most 100 tasks per call.
pub const MAX_DESCRIBE_TASKS: usize = 100;
/// Fargate limit: a container's `stopTimeout` is at most 120 seconds.
pub const MAX_STOP_TIMEOUT_SECONDS: u32 = 120;
/// The `reason` ECS gives in a [`Failure`] for an unknown service or task.
pub const FAILURE_MISSING: &str = "MISSING";

/// Input of `RegisterTaskDefinition` for a Fargate (`awsvpc`) task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterTaskDefinition {
    /// Family name (letters, digits, `-`, `_`; up to 255). Revisions number
    /// from 1 within a family and are never reused.
    pub family: String,
    /// Task CPU units (a Fargate value, see [`crate::fargate`]).
    pub cpu: u32,
    /// Task memory in MiB (valid for `cpu`).
    pub memory: u32,
    /// Role ECS uses to pull the image, write logs and read secrets.
    pub execution_role_arn: Option<String>,
    /// Role the workspace container gets.
    pub task_role_arn: Option<String>,
    /// The containers (a workspace has one).
    pub container_definitions: Vec<ContainerDefinition>,
    /// Volumes the containers may mount (the user's EFS home).
    pub volumes: Vec<Volume>,
    /// Tags on the task definition revision.
    pub tags: Tags,
}

/// One container of a task definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Whether the task stops when this container stops.
    pub essential: bool,
    /// `ENTRYPOINT` override.
    pub entry_point: Vec<String>,
    /// `CMD` override.
    pub command: Vec<String>,
    /// Plain environment variables.
    pub environment: BTreeMap<String, String>,
    /// Environment variables whose values ECS reads from Secrets Manager at
    /// task start.
    pub secrets: Vec<SecretEnv>,
    /// EFS (or other) volumes mounted into the container.
    pub mount_points: Vec<MountPoint>,
    /// Seconds between SIGTERM and SIGKILL on stop (Fargate: ≤ 120).
    pub stop_timeout: Option<u32>,
    /// `user` (`uid`, `uid:gid` or a name).
    pub user: Option<String>,
    /// Working directory.
    pub working_directory: Option<String>,
    /// Log driver configuration (usually `awslogs`).
    pub log_configuration: Option<LogConfiguration>,
    /// `linuxParameters.initProcessEnabled`: run an init process (tini) as
    /// PID 1 that forwards signals and reaps orphaned processes.
    #[serde(default)]
    pub init_process_enabled: bool,
    /// `repositoryCredentials.credentialsParameter`: the Secrets Manager
    /// secret (ARN) with the username and password of a private registry
    /// (not ECR); the execution role must be allowed to read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_credentials: Option<String>,
}

/// An environment variable read from a secret (`secrets[].valueFrom`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretEnv {
    /// Environment variable name.
    pub name: String,
    /// Secret ARN (or name) the value is read from.
    pub value_from: String,
}

/// A volume mounted into a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    /// Name of a [`Volume`] of the task definition.
    pub source_volume: String,
    /// Where it is mounted.
    pub container_path: String,
    /// Read-only mount.
    pub read_only: bool,
}

/// Container log configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogConfiguration {
    /// Log driver, e.g. `awslogs`.
    pub log_driver: String,
    /// Driver options (`awslogs-group`, `awslogs-region`,
    /// `awslogs-stream-prefix`, …).
    pub options: BTreeMap<String, String>,
}

/// A task volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Volume name referenced by [`MountPoint::source_volume`].
    pub name: String,
    /// EFS configuration; `None` is a task-scoped ephemeral volume.
    pub efs_volume_configuration: Option<EfsVolumeConfiguration>,
}

/// `efsVolumeConfiguration` of a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EfsVolumeConfiguration {
    /// `fs-…` id.
    pub file_system_id: String,
    /// Root directory; must be `/` (or unset) with an access point.
    pub root_directory: Option<String>,
    /// TLS to the mount target; ECS requires it with an access point.
    pub transit_encryption: bool,
    /// `fsap-…` id of the access point to mount through.
    pub access_point_id: Option<String>,
    /// Use the task role for EFS IAM authorization.
    pub iam_authorization: bool,
}

/// Whether a task definition revision can be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskDefinitionStatus {
    /// Usable for new services and deployments.
    Active,
    /// Deregistered: still describable, running tasks keep running, but no
    /// new service or deployment may use it.
    Inactive,
}

/// A registered task definition revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    /// `arn:aws:ecs:…:task-definition/{family}:{revision}`.
    pub task_definition_arn: String,
    /// Family.
    pub family: String,
    /// Revision within the family (1, 2, …; never reused).
    pub revision: u32,
    /// ACTIVE or INACTIVE.
    pub status: TaskDefinitionStatus,
    /// CPU units.
    pub cpu: u32,
    /// Memory MiB.
    pub memory: u32,
    /// Execution role.
    pub execution_role_arn: Option<String>,
    /// Task role.
    pub task_role_arn: Option<String>,
    /// Containers.
    pub container_definitions: Vec<ContainerDefinition>,
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// When the revision was registered.
    pub registered_at: SystemTime,
    /// Tags (filled when asked for with `include_tags`, and on register).
    pub tags: Tags,
}

/// `assignPublicIp` of an `awsvpc` network configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssignPublicIp {
    /// The task's ENI gets a public IP.
    Enabled,
    /// No public IP (the task needs a NAT or VPC endpoints).
    #[default]
    Disabled,
}

/// `networkConfiguration.awsvpcConfiguration` of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfiguration {
    /// Subnet ids (1–16).
    pub subnets: Vec<String>,
    /// Security group ids (≤ 5).
    pub security_groups: Vec<String>,
    /// Public IP assignment.
    pub assign_public_ip: AssignPublicIp,
}

/// Input of `CreateService` (launch type FARGATE, `REPLICA` scheduling).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateService {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service name (letters, digits, `-`, `_`; up to 255), unique among the
    /// cluster's ACTIVE and DRAINING services.
    pub service_name: String,
    /// Task definition: `family`, `family:revision` or ARN.
    pub task_definition: String,
    /// Number of tasks to run.
    pub desired_count: u32,
    /// Fargate platform version (`LATEST` when unset).
    pub platform_version: Option<String>,
    /// Subnets, security groups, public IP.
    pub network_configuration: NetworkConfiguration,
    /// Idempotency token (≤ 36 ASCII characters): repeating a create with the
    /// same token returns the existing service instead of failing.
    pub client_token: Option<String>,
    /// Tags on the service.
    pub tags: Tags,
    /// Enable ECS Exec.
    pub enable_execute_command: bool,
    /// Deployment circuit breaker: mark a deployment FAILED when its tasks
    /// keep failing to start.
    pub deployment_circuit_breaker: bool,
    /// Minimum healthy and maximum percent; ECS's default when `None`.
    #[serde(default)]
    pub deployment_configuration: Option<DeploymentConfiguration>,
    /// Copy these tags onto the service's tasks (so that costs are
    /// attributable per workspace); ECS's `NONE` when `None`.
    #[serde(default)]
    pub propagate_tags: Option<PropagateTags>,
    /// Add ECS's own `aws:ecs:serviceName`/`clusterName` tags to tasks.
    #[serde(default)]
    pub enable_ecs_managed_tags: bool,
}

/// Which tags ECS copies onto a service's tasks (`propagateTags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PropagateTags {
    /// None.
    None,
    /// The service's.
    Service,
    /// The task definition's.
    TaskDefinition,
}

/// How a service replaces its tasks (`deploymentConfiguration`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    /// The fewest tasks, as a percentage of desiredCount, that keep running
    /// during a deployment.
    pub minimum_healthy_percent: u32,
    /// The most tasks (RUNNING or PENDING), as a percentage of desiredCount,
    /// during a deployment.
    pub maximum_percent: u32,
}

impl DeploymentConfiguration {
    /// ECS's default: 100 / 200 (the new task starts before the old stops).
    pub const ECS_DEFAULT: DeploymentConfiguration = DeploymentConfiguration {
        minimum_healthy_percent: 100,
        maximum_percent: 200,
    };
    /// Stop the old task before starting the new one: never two tasks of
    /// one workspace (two servers on one home directory).
    pub const ONE_AT_A_TIME: DeploymentConfiguration = DeploymentConfiguration {
        minimum_healthy_percent: 0,
        maximum_percent: 100,
    };
}

impl Default for DeploymentConfiguration {
    fn default() -> Self {
        DeploymentConfiguration::ECS_DEFAULT
    }
}

/// Input of `UpdateService`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateService {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service name or ARN.
    pub service: String,
    /// New desired count; unchanged when `None`.
    pub desired_count: Option<u32>,
    /// New task definition (`family`, `family:revision` or ARN); a different
    /// revision starts a new deployment.
    pub task_definition: Option<String>,
    /// Start a new deployment even when nothing changed (replaces tasks).
    pub force_new_deployment: bool,
    /// Change ECS Exec.
    pub enable_execute_command: Option<bool>,
    /// Change the minimum healthy and maximum percent.
    #[serde(default)]
    pub deployment_configuration: Option<DeploymentConfiguration>,
}

/// Input of `DeleteService`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteService {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service name or ARN.
    pub service: String,
    /// Delete even when desiredCount > 0 (ECS otherwise refuses).
    pub force: bool,
}

/// Service status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceStatus {
    /// Running normally.
    Active,
    /// Deleted; its tasks are stopping.
    Draining,
    /// Deleted and all tasks stopped; still describable for a while.
    Inactive,
}

/// `rolloutState` of a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutState {
    /// Tasks of the deployment are being started / old ones stopped.
    InProgress,
    /// The deployment reached its desired count and replaced the old ones.
    Completed,
    /// The circuit breaker tripped: tasks keep failing to start.
    Failed,
}

/// `status` of a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    /// The newest deployment, the one the service converges to.
    Primary,
    /// An older deployment whose tasks are being replaced.
    Active,
    /// A finished older deployment.
    Inactive,
}

/// One deployment of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `ecs-svc/…` id.
    pub id: String,
    /// PRIMARY, ACTIVE or INACTIVE.
    pub status: DeploymentStatus,
    /// Task definition ARN of the deployment.
    pub task_definition: String,
    /// Tasks wanted.
    pub desired_count: u32,
    /// Tasks in PROVISIONING/PENDING.
    pub pending_count: u32,
    /// Tasks RUNNING.
    pub running_count: u32,
    /// Tasks of this deployment that stopped before reaching RUNNING.
    pub failed_tasks: u32,
    /// Rollout state.
    pub rollout_state: RolloutState,
    /// Why the rollout is in its state.
    pub rollout_state_reason: String,
    /// Created.
    pub created_at: SystemTime,
    /// Last changed.
    pub updated_at: SystemTime,
}

/// A service event (newest first in [`Service::events`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    /// Event id.
    pub id: String,
    /// When.
    pub created_at: SystemTime,
    /// ECS's message, e.g. `(service ws-alice) has reached a steady state.`
    pub message: String,
}

/// An ECS service as `DescribeServices` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `arn:aws:ecs:…:service/{cluster}/{name}`.
    pub service_arn: String,
    /// Name.
    pub service_name: String,
    /// Cluster ARN.
    pub cluster_arn: String,
    /// ACTIVE, DRAINING or INACTIVE.
    pub status: ServiceStatus,
    /// Tasks wanted.
    pub desired_count: u32,
    /// Tasks RUNNING (all deployments).
    pub running_count: u32,
    /// Tasks PROVISIONING or PENDING (all deployments).
    pub pending_count: u32,
    /// Task definition ARN of the primary deployment.
    pub task_definition: String,
    /// Deployments, primary first.
    pub deployments: Vec<Deployment>,
    /// Recent service events, newest first (ECS keeps the last 100).
    pub events: Vec<ServiceEvent>,
    /// Network configuration.
    pub network_configuration: NetworkConfiguration,
    /// ECS Exec enabled.
    pub enable_execute_command: bool,
    /// Minimum healthy and maximum percent in force (`None` when the
    /// answer did not say; ECS always does).
    #[serde(default)]
    pub deployment_configuration: Option<DeploymentConfiguration>,
    /// Which tags its tasks get (`None` when the answer did not say).
    #[serde(default)]
    pub propagate_tags: Option<PropagateTags>,
    /// Created.
    pub created_at: SystemTime,
    /// Tags (filled when asked for with `include_tags`).
    pub tags: Tags,
}

impl Service {
    /// The PRIMARY deployment, if any.
    pub fn primary_deployment(&self) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.status == DeploymentStatus::Primary)
    }
}

/// A per-item failure of a describe call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// ARN of the item that could not be described.
    pub arn: String,
    /// `MISSING` for unknown items.
    pub reason: String,
    /// More detail, when ECS gives it.
    pub detail: Option<String>,
}

/// Output of `DescribeServices`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeServicesOutput {
    /// Services found (in request order).
    pub services: Vec<Service>,
    /// Services not found.
    pub failures: Vec<Failure>,
}

/// Task `lastStatus` / `desiredStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Fargate capacity and the ENI are being provisioned.
    Provisioning,
    /// The image is pulled and the container started.
    Pending,
    /// The container runs.
    Running,
    /// The task is being stopped (SIGTERM, stop timeout).
    Deprovisioning,
    /// Stopped.
    Stopped,
}

/// The `desiredStatus` filter of `ListTasks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredStatus {
    /// Tasks ECS wants running (including those still starting).
    Running,
    /// Tasks ECS stopped or that stopped by themselves (kept about an hour).
    Stopped,
}

/// `stopCode` of a stopped task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum StopCode {
    /// The task failed to start (image pull, secrets, EFS mount).
    TaskFailedToStart,
    /// An essential container exited.
    EssentialContainerExited,
    /// The service scheduler stopped it (scale-down, deployment, delete).
    ServiceSchedulerInitiated,
    /// Someone called StopTask.
    UserInitiated,
}

/// An ECS task as `DescribeTasks` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// `arn:aws:ecs:…:task/{cluster}/{id}`.
    pub task_arn: String,
    /// Cluster ARN.
    pub cluster_arn: String,
    /// Task definition ARN.
    pub task_definition_arn: String,
    /// `service:{name}`.
    pub group: String,
    /// Deployment id that started it.
    pub started_by: String,
    /// Where the task is in its lifecycle.
    pub last_status: TaskStatus,
    /// RUNNING or STOPPED.
    pub desired_status: TaskStatus,
    /// Created.
    pub created_at: SystemTime,
    /// Reached RUNNING.
    pub started_at: Option<SystemTime>,
    /// Began stopping.
    pub stopping_at: Option<SystemTime>,
    /// Reached STOPPED.
    pub stopped_at: Option<SystemTime>,
    /// Why it stopped, by category.
    pub stop_code: Option<StopCode>,
    /// Why it stopped, e.g. `CannotPullContainerError: …`.
    pub stopped_reason: Option<String>,
}

/// Output of `DescribeTasks`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeTasksOutput {
    /// Tasks found.
    pub tasks: Vec<Task>,
    /// Tasks not found (`MISSING`).
    pub failures: Vec<Failure>,
}

/// The ECS calls a Berth controller makes.
#[async_trait]
pub trait Ecs: Send + Sync {
    /// Registers a new revision of `input.family`; the revision number is
    /// one more than any revision the family ever had.
    async fn register_task_definition(
        &self,
        input: RegisterTaskDefinition,
    ) -> CloudResult<TaskDefinition>;

    /// Describes `family` (latest ACTIVE revision), `family:revision` or a
    /// task definition ARN. Tags are filled when `include_tags`.
    /// Unknown → `ClientException`.
    async fn describe_task_definition(
        &self,
        task_definition: &str,
        include_tags: bool,
    ) -> CloudResult<TaskDefinition>;

    /// Marks a revision INACTIVE (`family:revision` or ARN).
    async fn deregister_task_definition(
        &self,
        task_definition: &str,
    ) -> CloudResult<TaskDefinition>;

    /// Creates a service. Idempotent with the same `client_token`; a name
    /// already used by an ACTIVE service otherwise fails with
    /// `InvalidParameterException` ("Creation of service was not
    /// idempotent.").
    async fn create_service(&self, input: CreateService) -> CloudResult<Service>;

    /// Changes desired count and/or task definition. Missing service →
    /// `ServiceNotFoundException`; DRAINING/INACTIVE →
    /// `ServiceNotActiveException`.
    async fn update_service(&self, input: UpdateService) -> CloudResult<Service>;

    /// Deletes a service: it turns DRAINING, its tasks stop, then INACTIVE.
    async fn delete_service(&self, input: DeleteService) -> CloudResult<Service>;

    /// Describes up to [`MAX_DESCRIBE_SERVICES`] services by name or ARN
    /// (more → `InvalidParameterException`); unknown ones come back as
    /// `MISSING` failures. Tags are filled when `include_tags`.
    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
        include_tags: bool,
    ) -> CloudResult<DescribeServicesOutput>;

    /// ARNs of the cluster's ACTIVE and DRAINING services (all pages).
    async fn list_services(&self, cluster: &str) -> CloudResult<Vec<String>>;

    /// ARNs of a service's tasks with the given desired status (all pages).
    async fn list_tasks(
        &self,
        cluster: &str,
        service_name: &str,
        desired_status: DesiredStatus,
    ) -> CloudResult<Vec<String>>;

    /// Describes up to [`MAX_DESCRIBE_TASKS`] tasks by ARN or id.
    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> CloudResult<DescribeTasksOutput>;
}

/// Describes any number of services in chunks of [`MAX_DESCRIBE_SERVICES`]
/// (one `DescribeServices` call per chunk, in order), merging the outputs.
/// Stops at the first failed call.
pub async fn describe_services_chunked(
    ecs: &dyn Ecs,
    cluster: &str,
    services: &[String],
    include_tags: bool,
) -> CloudResult<DescribeServicesOutput> {
    let mut out = DescribeServicesOutput::default();
    for chunk in services.chunks(MAX_DESCRIBE_SERVICES) {
        let part = ecs.describe_services(cluster, chunk, include_tags).await?;
        out.services.extend(part.services);
        out.failures.extend(part.failures);
    }
    Ok(out)
}
