//! The `WorkspaceTemplate` resource. Every change of its spec creates a new,
//! immutable template version (1, 2, …), like `coder templates push` and like
//! ECS task definition revisions; the newest version is the active one.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::Resource;
use super::workspace::Resources;

/// A versioned workspace blueprint.
pub type WorkspaceTemplate = Resource<WorkspaceTemplateSpec, WorkspaceTemplateStatus>;

/// What a platform engineer declares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceTemplateSpec {
    /// Human-readable name shown in listings.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// What the template is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The AWS values the seed template keeps as "locals".
    pub infrastructure: Infrastructure,
    /// The workspace container.
    pub container: Container,
    /// Task size defaults and the choices offered to users.
    pub resources: TemplateResources,
    /// Parameters users set per workspace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    /// Startup scripts, run in order at container start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scripts: Vec<Script>,
    /// Web apps inside the workspace that the operator serves under
    /// `/@<owner>/<workspace>/apps/<slug>/` (VS Code Web, Jupyter, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<App>,
}

/// A web app served from inside the workspace, reached through the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    /// Identifier in the app's path (a DNS label: `vscode`).
    pub slug: String,
    /// Label of the app's button.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// The port it listens on, on the workspace's loopback.
    pub port: u16,
    /// Offer it only when this bool parameter is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Who may open it: `owner` (and admins), or any `authenticated` user.
    #[serde(default)]
    pub share: AppShare,
}

/// Who may open an app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AppShare {
    /// The workspace's owner and admins.
    #[default]
    Owner,
    /// Anyone signed in to Berth.
    Authenticated,
}

/// AWS infrastructure the workspaces run on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Infrastructure {
    /// AWS region, e.g. `us-west-2`.
    pub region: String,
    /// ECS cluster name or ARN.
    pub cluster: String,
    /// Subnets for the tasks' awsvpc network interfaces.
    pub subnets: Vec<String>,
    /// Security groups for the tasks.
    pub security_groups: Vec<String>,
    /// Give tasks a public IP (needed in a public subnet without NAT).
    #[serde(default)]
    pub assign_public_ip: bool,
    /// The shared EFS file system holding home directories (`fs-…`).
    pub file_system_id: String,
    /// Directory on the file system under which each owner gets `<root>/<namespace>/<owner>`.
    #[serde(default = "default_efs_root")]
    pub efs_root_directory: String,
    /// Role ECS uses to pull the image, read secrets and write logs.
    pub execution_role_arn: String,
    /// Role the workspace container runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    /// CloudWatch log group for container output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
    /// Mount the home with EFS IAM authorization (`iam: ENABLED`): the
    /// task role (`taskRoleArn`, required then) must be allowed
    /// `elasticfilesystem:ClientMount`/`ClientWrite`, and a file-system
    /// policy can require every mount to go through an access point (see
    /// `manifests/deploy/efs-file-system-policy.json`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub efs_iam_authorization: bool,
}

fn default_efs_root() -> String {
    "/home".to_string()
}

/// The workspace container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    /// Image reference.
    pub image: String,
    /// UID of the workspace user (owner of the home directory).
    #[serde(default = "default_id")]
    pub uid: u32,
    /// GID of the workspace user.
    #[serde(default = "default_id")]
    pub gid: u32,
    /// Where the owner's EFS directory is mounted in the container.
    pub home_path: String,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment variables filled from AWS Secrets Manager or SSM
    /// Parameter Store at container start: variable name → secret ARN.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Seconds between SIGTERM and SIGKILL on stop (Fargate allows 2–120).
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u32,
    /// Credentials of a private registry (not ECR) the image is pulled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_credentials: Option<RepositoryCredentials>,
}

/// `repositoryCredentials` of the ECS container definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryCredentials {
    /// ARN of the Secrets Manager secret holding `{"username": …,
    /// "password": …}`; the execution role must be allowed to read it.
    pub credentials_parameter: String,
}

fn default_id() -> u32 {
    1000
}

fn default_stop_timeout() -> u32 {
    30
}

/// Task size defaults and the choices offered to users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateResources {
    /// Used when a workspace sets no `resources`.
    pub default: Resources,
    /// CPU values users may choose; empty = any valid Fargate value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_options: Vec<u32>,
    /// Memory values users may choose; empty = any valid for the CPU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory_options: Vec<u32>,
}

/// Type of a template parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    /// `true` / `false`.
    Bool,
    /// Text.
    String,
    /// A number.
    Number,
}

impl ParameterType {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            ParameterType::Bool => "bool",
            ParameterType::String => "string",
            ParameterType::Number => "number",
        }
    }
}

/// A value users set per workspace, handed to the container as an environment variable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Parameter {
    /// Identifier (`enable_vscode_web`); becomes `BERTH_PARAM_<NAME>` in the container.
    pub name: String,
    /// Label shown to people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// Help text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Value type.
    #[serde(rename = "type")]
    pub type_: ParameterType,
    /// Default value; a parameter without one is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Allowed values; empty = any value of the type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<serde_json::Value>,
    /// Whether the value may change after the workspace is created.
    #[serde(default)]
    pub mutable: bool,
    /// Further checks on the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ParameterValidation>,
}

/// Checks on a parameter value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParameterValidation {
    /// A string must match this regular expression (whole value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// A number must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// A number must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A startup script.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Script {
    /// Identifier.
    pub name: String,
    /// Label shown to people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// The script (run with `/bin/sh`).
    pub script: String,
    /// Run only when this bool parameter is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Whether logins wait for the script to finish (false for long-running
    /// ones, which run in the background). `blocksLogin` scripts run one
    /// after another, in order; `Ready` waits for all of them.
    #[serde(default = "default_blocks_login")]
    pub blocks_login: bool,
    /// Run when the workspace stops (on SIGTERM, before the other processes
    /// are signalled) instead of at start, within the container's stop
    /// timeout: e.g. deregistering a GitHub Actions runner.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_on_stop: bool,
}

fn default_blocks_login() -> bool {
    true
}

/// Observed state of a template.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceTemplateStatus {
    /// The newest (active) version.
    #[serde(default)]
    pub latest_version: i32,
    /// The generation that produced `latestVersion`.
    #[serde(default)]
    pub observed_generation: i64,
}
