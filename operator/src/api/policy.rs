//! The `LifecyclePolicy` resource: one per namespace (organization), holding
//! its defaults and limits for workspace lifecycles (seed: Coder's lifecycle).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::Resource;

/// Organization defaults and limits.
pub type LifecyclePolicy = Resource<LifecyclePolicySpec, LifecyclePolicyStatus>;

/// What the organization decides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecyclePolicySpec {
    /// Auto-off after inactivity.
    #[serde(default)]
    pub autostop: AutostopPolicy,
    /// Scheduled starts.
    #[serde(default)]
    pub autostart: AutostartPolicy,
    /// Every start must use the template's active version (pins are overridden).
    #[serde(default)]
    pub require_active_version: bool,
    /// A workspace stopped and unused this long becomes Dormant (Coder's
    /// dormancy): schedules no longer start it, and a person must wake it
    /// (`berth wake`, `berth start --wake`) before it starts. Omitted = never.
    /// Whole seconds, from `1m` to 10 years (`87600h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormancy_threshold: Option<String>,
    /// A Dormant workspace is deleted (with its `deletionPolicy`; the files
    /// of its home are never deleted) after it has been Dormant this long.
    /// Needs `dormancyThreshold`. Omitted = never.
    /// Whole seconds, from `1m` to 10 years (`87600h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormant_deletion: Option<String>,
    /// How long before a workspace becomes Dormant, and before a Dormant one
    /// is deleted, a Warning event says so. Default `24h`.
    /// Whole seconds, from `1m` to 10 years (`87600h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormancy_notice: Option<String>,
}

/// Default of [`LifecyclePolicySpec::dormancy_notice`].
pub const DEFAULT_DORMANCY_NOTICE: &str = "24h";

/// Auto-off rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutostopPolicy {
    /// Default inactivity threshold (`2h`); omitted = no default auto-off.
    /// Whole seconds, from `1m` to 10 years (`87600h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_after_inactivity: Option<String>,
    /// Users may set their own `afterInactivity`.
    #[serde(default = "yes")]
    pub allow_user_override: bool,
    /// Users may disable auto-off for their workspace.
    #[serde(default)]
    pub allow_user_disable: bool,
    /// Longest a user may choose or extend to (`8h`).
    /// Whole seconds, from `1m` to 10 years (`87600h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_after_inactivity: Option<String>,
    /// A running workspace is stopped after this long whatever its activity (`12h`).
    /// Whole seconds, from `1m` to 10 years (`87600h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<String>,
}

impl Default for AutostopPolicy {
    fn default() -> Self {
        AutostopPolicy {
            default_after_inactivity: None,
            allow_user_override: true,
            allow_user_disable: false,
            max_after_inactivity: None,
            max_lifetime: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// Scheduled-start rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutostartPolicy {
    /// Whether workspaces may start on a schedule.
    #[serde(default = "yes")]
    pub allowed: bool,
    /// Days of the week on which autostart may fire (`Mon` … `Sun`); empty = every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
}

impl Default for AutostartPolicy {
    fn default() -> Self {
        AutostartPolicy {
            allowed: true,
            days: Vec::new(),
        }
    }
}

/// Observed state of a policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecyclePolicyStatus {
    /// The generation last acted on.
    #[serde(default)]
    pub observed_generation: i64,
}
