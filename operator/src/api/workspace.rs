//! The `Workspace` resource: one developer's container and home directory.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{Condition, Resource};

/// A developer's workspace.
pub type Workspace = Resource<WorkspaceSpec, WorkspaceStatus>;

fn default_true() -> bool {
    true
}

/// What the workspace's author declares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceSpec {
    /// The user who owns the workspace; defaults to the user applying it.
    #[serde(default)]
    pub owner: String,
    /// The template the workspace is built from.
    pub template: TemplateRef,
    /// The desired power state. Defaults to `true` (a new workspace starts).
    #[serde(default = "default_true")]
    pub running: bool,
    /// Fargate CPU units and memory; defaults to the template's `resources.default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Values for the template's parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Automatic start and stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// What happens to the EFS access point when the workspace is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A reference to a template, optionally pinned to one version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateRef {
    /// The template's name (same namespace).
    pub name: String,
    /// Pin to this version; omitted = follow the active (newest) version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
}

/// Fargate task size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPU units: 256, 512, 1024, 2048, 4096, 8192 or 16384.
    pub cpu: u32,
    /// Memory in MiB; valid values depend on `cpu`.
    pub memory: u32,
}

/// Automatic start and stop.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedule {
    /// Start the workspace on a cron schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<Autostart>,
    /// Stop the workspace after a period of inactivity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<Autostop>,
}

/// A cron schedule in an IANA time zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autostart {
    /// Five-field cron expression, e.g. `0 8 * * 1-5`.
    pub cron: String,
    /// IANA time zone, e.g. `America/Los_Angeles`. Defaults to `UTC`.
    #[serde(default = "default_tz")]
    pub timezone: String,
}

fn default_tz() -> String {
    "UTC".to_string()
}

/// Inactivity-based stop.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autostop {
    /// Stop after this long without activity (`90m`, `2h`); defaults to the policy's.
    /// Whole seconds, from `1m` to 10 years (`87600h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_inactivity: Option<String>,
    /// Never stop for inactivity (if the lifecycle policy allows it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// What deleting a workspace does to its cloud storage objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the EFS access point and the home directory.
    #[default]
    Retain,
    /// Remove the access point too. Files on EFS are never deleted by Berth.
    Delete,
}

/// Lifecycle phase of a workspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, not yet acted on.
    #[default]
    Pending,
    /// Scaling up.
    Starting,
    /// The container runs.
    Running,
    /// Scaling down.
    Stopping,
    /// Scaled to zero.
    Stopped,
    /// Cannot converge without a change.
    Failed,
    /// Being deleted.
    Deleting,
    /// Stopped and unused for the policy's `dormancyThreshold`: schedules
    /// do not start it; a person wakes it first.
    Dormant,
}

/// Observed state of a workspace, written by the workspace controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// The generation this status was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// Where the workspace is in its lifecycle.
    #[serde(default)]
    pub phase: Phase,
    /// `Ready`, `Synced`, `Outdated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The template version that runs (or ran last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<i32>,
    /// Live ECS state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecs: Option<EcsStatus>,
    /// The workspace's EFS access point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efs: Option<EfsStatus>,
    /// Last reported activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<DateTime<Utc>>,
    /// When inactivity will stop the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop_at: Option<DateTime<Utc>>,
    /// When the schedule will next start the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_autostart_at: Option<DateTime<Utc>>,
    /// The last start or stop, why and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<Transition>,
    /// The kind of the last activity (`ssh`, `vscode`, `app`, `manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_source: Option<String>,
    /// When the maximum lifetime stops the running workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_ends_at: Option<DateTime<Utc>>,
    /// When the stopped workspace becomes (or became) Dormant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormant_at: Option<DateTime<Utc>>,
    /// When the Dormant workspace is deleted (`dormantDeletion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormant_deletion_at: Option<DateTime<Utc>>,
    /// The lifecycle values in force (workspace schedule combined with the
    /// namespace's policy) and why a setting is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<EffectiveLifecycle>,
    /// Id of the newest power intent the controller has acted on.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub observed_intent: i64,
    /// The workspace agent of the current start, once it connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentStatus>,
    /// CPU and memory of the task definition that runs (or ran last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// CPU and memory the next start will use (the spec, or the followed
    /// template version's default), when they differ from `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_resources: Option<Resources>,
}

/// The workspace agent (`berth agent`) as the operator last heard of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Whether the agent holds a connection to a live replica now.
    #[serde(default)]
    pub connected: bool,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// When the agent was last heard of (its connection is alive while `connected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    /// `Starting`, `Ready`, `StartError`, `ShuttingDown` or `Off`.
    #[serde(default)]
    pub lifecycle: String,
    /// The template's scripts of this start, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scripts: Vec<AgentScriptStatus>,
}

/// One script of the current start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentScriptStatus {
    /// The script's name.
    pub name: String,
    /// Its label.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Skipped`.
    pub state: String,
    /// Whether logins wait for it (`Ready` needs it finished).
    #[serde(default)]
    pub blocks_login: bool,
    /// Runs on stop.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_on_stop: bool,
    /// The exit code once finished (none when killed or never started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Output lines dropped (oldest first) to keep within the size cap.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_lines: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Live ECS state of the workspace's service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EcsStatus {
    /// The region the service runs in (the template's when it started;
    /// empty for services started before Berth recorded it: the operator's
    /// region).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// The cluster the service runs in.
    #[serde(default)]
    pub cluster: String,
    /// The ECS service's name.
    #[serde(default)]
    pub service_name: String,
    /// ARN of the ECS service.
    #[serde(default)]
    pub service_arn: String,
    /// ARN of the task definition revision in use.
    #[serde(default)]
    pub task_definition_arn: String,
    /// Desired task count (0 or 1).
    #[serde(default)]
    pub desired_count: i32,
    /// Running tasks.
    #[serde(default)]
    pub running_count: i32,
    /// Pending tasks.
    #[serde(default)]
    pub pending_count: i32,
    /// Hash of the rendered task definition content in use.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_hash: String,
    /// ARN of the secret that carries the per-start agent token (not the token).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_secret_arn: String,
    /// Mixed into the service's client token: counts the times the service
    /// was deleted behind Berth's back and made again.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub service_attempt: u32,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// The workspace's EFS access point.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EfsStatus {
    /// `fsap-…`.
    #[serde(default)]
    pub access_point_id: String,
    /// The owner's directory on the file system.
    #[serde(default)]
    pub root_directory: String,
}

/// A start or stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// `start` or `stop`.
    pub action: String,
    /// Why (`Manual`, `Spec`, `AutoStop`, `AutoStart`, ...).
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The lifecycle values in force for one workspace, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveLifecycle {
    /// Stop after this long without activity (`None` = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_inactivity: Option<String>,
    /// Where `afterInactivity` comes from: `workspace`, `policy` or `none`.
    pub source: String,
    /// A running workspace is stopped after this long whatever its activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<String>,
    /// Longest `berth extend` (and user threshold) allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_after_inactivity: Option<String>,
    /// Whether the workspace's autostart may fire.
    pub autostart_allowed: bool,
    /// Days on which autostart may fire (empty = every day).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub autostart_days: Vec<String>,
    /// Every start uses the active template version.
    pub require_active_version: bool,
    /// Stopped and unused this long: Dormant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormancy_threshold: Option<String>,
    /// Dormant this long: deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormant_deletion: Option<String>,
    /// Warning events come this long ahead of dormancy and deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormancy_notice: Option<String>,
    /// Why a setting of the workspace is not in force, for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}
