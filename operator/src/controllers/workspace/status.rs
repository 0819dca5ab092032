//! Phase and conditions of a workspace, computed from what was observed.
//! Pure functions: the reconcile gathers facts, these decide what to say.

use chrono::{DateTime, Utc};

use crate::api::meta::ConditionStatus;
use crate::api::workspace::{AgentStatus, Phase};
use crate::api::Condition;

/// How long an agent may be disconnected before `Ready=False,
/// reason: AgentDisconnected`: long enough for an operator restart or a
/// network blip (the agent reconnects within 10 s), short enough to say
/// soon that nobody can get in. A silent connection is closed after 45 s
/// and a dead replica's after 30 s, so an agent that stops reporting shows
/// as disconnected within about 75 s.
pub const AGENT_DISCONNECT_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// The facts a status is computed from.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The newest intent says the workspace should run.
    pub want_running: bool,
    /// Being deleted.
    pub deleting: bool,
    /// The ECS service exists and is ACTIVE.
    pub service_active: bool,
    /// Its desired count.
    pub desired: u32,
    /// Its running tasks.
    pub running: u32,
    /// Its pending tasks.
    pub pending: u32,
    /// The primary deployment finished rolling out.
    pub rollout_completed: bool,
    /// Why tasks fail to start, if they do.
    pub task_failure: Option<String>,
    /// A permanent cloud error of this pass (invalid role, missing cluster …).
    pub cloud_error: Option<String>,
    /// The running content differs from what the spec renders to: applies at the next start.
    pub pending_restart: Option<String>,
    /// The template version that runs (or ran last).
    pub running_version: Option<i32>,
    /// The version the workspace follows (pinned, or the active one).
    pub followed_version: i32,
    /// Whether the workspace is pinned.
    pub pinned: bool,
    /// Whether `Ready` needs the agent (no agent runs on the simulated
    /// cloud with `--sim-no-agents`: there a running task is ready).
    pub require_agent: bool,
    /// The agent of the current start, once it connected.
    pub agent: Option<AgentStatus>,
    /// How long the agent may be disconnected before it counts as gone
    /// (zero = [`AGENT_DISCONNECT_GRACE`]).
    pub agent_grace: std::time::Duration,
    /// The policy's `dormancyThreshold`, when it sets one.
    pub dormancy_threshold: Option<String>,
    /// Stopped and Dormant since then.
    pub dormant_since: Option<DateTime<Utc>>,
}

/// Whether the agent counts as gone: disconnected for longer than `grace`.
pub fn agent_gone(a: &AgentStatus, now: DateTime<Utc>, grace: std::time::Duration) -> bool {
    !a.connected
        && a.last_seen
            .is_none_or(|t| now.signed_duration_since(t).to_std().unwrap_or_default() >= grace)
}

impl Facts {
    /// The grace period of a disconnected agent.
    pub fn grace(&self) -> std::time::Duration {
        if self.agent_grace.is_zero() {
            AGENT_DISCONNECT_GRACE
        } else {
            self.agent_grace
        }
    }
}

/// `Ready` of a workspace whose task runs: the agent is connected and every
/// `blocksLogin` script finished.
fn running_ready(f: &Facts, now: DateTime<Utc>) -> (String, ConditionStatus, String, String) {
    if !f.require_agent {
        return cond(
            "Ready",
            true,
            "Running",
            "the workspace's task is running (no agent runs here)".into(),
        );
    }
    let Some(a) = &f.agent else {
        return cond(
            "Ready",
            false,
            "AgentConnecting",
            "the task is running; waiting for its agent to connect (the container's log says why it cannot)".into(),
        );
    };
    if agent_gone(a, now, f.grace()) {
        let since = a
            .last_seen
            .map(|t| {
                format!(
                    " since {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default();
        return cond(
            "Ready",
            false,
            "AgentDisconnected",
            format!("the agent has not reported{since}"),
        );
    }
    if let Some(s) = a
        .scripts
        .iter()
        .find(|s| s.blocks_login && s.state == "Failed")
    {
        let code = s
            .exit_code
            .map(|c| format!(" with exit code {c}"))
            .unwrap_or_default();
        return cond(
            "Ready",
            false,
            "StartupScriptFailed",
            format!(
                "startup script {:?} failed{code} (berth logs --script {})",
                s.name, s.name
            ),
        );
    }
    let waiting: Vec<&str> = a
        .scripts
        .iter()
        .filter(|s| s.blocks_login && !matches!(s.state.as_str(), "Succeeded" | "Skipped"))
        .map(|s| s.name.as_str())
        .collect();
    if !waiting.is_empty() {
        return cond(
            "Ready",
            false,
            "StartupScriptsRunning",
            format!("waiting for startup scripts: {}", waiting.join(", ")),
        );
    }
    match a.lifecycle.as_str() {
        "ShuttingDown" | "Off" => cond(
            "Ready",
            false,
            "AgentShuttingDown",
            format!("the agent is {}", a.lifecycle),
        ),
        "Starting" => cond(
            "Ready",
            false,
            "AgentStarting",
            "the agent is starting its scripts".into(),
        ),
        _ => cond(
            "Ready",
            true,
            "AgentReady",
            "the agent is connected and every blocking startup script finished".into(),
        ),
    }
}

/// The lifecycle phase.
pub fn phase(f: &Facts) -> Phase {
    if f.deleting {
        return Phase::Deleting;
    }
    if f.cloud_error.is_some() && !(f.service_active && f.running > 0) {
        return Phase::Failed;
    }
    if f.want_running {
        if f.service_active && f.running >= 1 && f.rollout_completed {
            Phase::Running
        } else {
            Phase::Starting
        }
    } else if !f.service_active || (f.running == 0 && f.pending == 0) {
        if f.dormant_since.is_some() {
            Phase::Dormant
        } else {
            Phase::Stopped
        }
    } else {
        Phase::Stopping
    }
}

fn cond(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
) -> (String, ConditionStatus, String, String) {
    (
        type_.to_string(),
        if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason.to_string(),
        message,
    )
}

/// `Ready`, `Synced` and `Outdated`, keeping each one's last transition time
/// when its status did not change.
pub fn conditions(
    prev: &[Condition],
    f: &Facts,
    generation: i64,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let p = phase(f);
    let ready = match p {
        Phase::Running => running_ready(f, now),
        Phase::Starting => match &f.task_failure {
            Some(why) => cond("Ready", false, "TaskFailedToStart", why.clone()),
            None => cond(
                "Ready",
                false,
                "Starting",
                format!(
                    "waiting for the task to run (running {}, pending {})",
                    f.running, f.pending
                ),
            ),
        },
        Phase::Stopped => cond("Ready", false, "Stopped", "the workspace is stopped".into()),
        Phase::Dormant => cond(
            "Ready",
            false,
            "Dormant",
            "the workspace is Dormant: wake it to start it (berth wake, or berth start --wake)"
                .into(),
        ),
        Phase::Stopping => cond("Ready", false, "Stopping", "the task is stopping".into()),
        Phase::Failed => cond(
            "Ready",
            false,
            "Failed",
            f.cloud_error.clone().unwrap_or_default(),
        ),
        Phase::Deleting => cond(
            "Ready",
            false,
            "Deleting",
            "the workspace is being deleted".into(),
        ),
        Phase::Pending => cond("Ready", false, "Pending", String::new()),
    };
    let synced = if let Some(e) = &f.cloud_error {
        cond("Synced", false, "CloudError", e.clone())
    } else if let Some(why) = f.task_failure.as_ref().filter(|_| p == Phase::Starting) {
        cond(
            "Synced",
            false,
            "TaskFailedToStart",
            format!("ECS has the service but cannot run its task: {why}"),
        )
    } else if let Some(why) = &f.pending_restart {
        cond("Synced", false, "PendingRestart", why.clone())
    } else if f.want_running && (!f.service_active || f.desired != 1)
        || !f.want_running && f.service_active && f.desired != 0
    {
        cond(
            "Synced",
            false,
            "Converging",
            "ECS does not match the declared state yet".into(),
        )
    } else {
        cond(
            "Synced",
            true,
            "Synced",
            "ECS and EFS match the declared state".into(),
        )
    };
    let outdated = match f.running_version {
        Some(v) if v < f.followed_version => cond(
            "Outdated",
            true,
            "NewerVersion",
            format!(
                "runs template version {v}; version {} applies at the next start (berth restart)",
                f.followed_version
            ),
        ),
        Some(v) if f.pinned => cond(
            "Outdated",
            false,
            "Pinned",
            format!("pinned to template version {v}"),
        ),
        _ => cond(
            "Outdated",
            false,
            "UpToDate",
            "runs the version it follows".into(),
        ),
    };
    // Only where the policy sets a dormancyThreshold.
    let dormant = f.dormancy_threshold.as_ref().map(|t| match f.dormant_since {
        Some(since) => cond(
            "Dormant",
            true,
            "Unused",
            format!(
                "stopped and unused for the lifecycle policy's dormancyThreshold {t} (Dormant since {}); schedules do not start it",
                since.format("%Y-%m-%d %H:%M UTC")
            ),
        ),
        None => cond(
            "Dormant",
            false,
            "InUse",
            format!("used within the lifecycle policy's dormancyThreshold {t}"),
        ),
    });
    [Some(ready), Some(synced), Some(outdated), dormant]
        .into_iter()
        .flatten()
        .map(|(type_, status, reason, message)| {
            let last_transition_time = prev
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map(|c| c.last_transition_time)
                .unwrap_or(now);
            Condition {
                type_,
                status,
                reason,
                message,
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> Facts {
        Facts {
            want_running: true,
            service_active: true,
            desired: 1,
            running: 1,
            rollout_completed: true,
            running_version: Some(1),
            followed_version: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_running_task_with_a_completed_rollout_is_ready_and_synced() {
        let c = conditions(&[], &running(), 1, Utc::now());
        assert_eq!(phase(&running()), Phase::Running);
        assert!(
            c.iter()
                .all(|c| (c.type_ == "Outdated") != (c.status == ConditionStatus::True)),
            "{c:?}"
        );
    }

    #[test]
    fn failing_tasks_keep_the_workspace_starting_with_the_reason() {
        let f = Facts {
            running: 0,
            rollout_completed: false,
            task_failure: Some("CannotPullContainerError: nope".into()),
            ..running()
        };
        assert_eq!(phase(&f), Phase::Starting);
        let ready = conditions(&[], &f, 1, Utc::now())
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.reason, "TaskFailedToStart");
        assert!(ready.message.contains("CannotPull"));
    }

    #[test]
    fn a_newer_template_version_makes_a_running_workspace_outdated_not_restarted() {
        let f = Facts {
            followed_version: 2,
            ..running()
        };
        assert_eq!(phase(&f), Phase::Running);
        let out = conditions(&[], &f, 1, Utc::now())
            .into_iter()
            .find(|c| c.type_ == "Outdated")
            .unwrap();
        assert_eq!(out.status, ConditionStatus::True);
    }

    #[test]
    fn stopped_and_stopping_follow_the_task_counts() {
        let f = Facts {
            want_running: false,
            desired: 0,
            running: 1,
            rollout_completed: false,
            ..running()
        };
        assert_eq!(phase(&f), Phase::Stopping);
        let f = Facts { running: 0, ..f };
        assert_eq!(phase(&f), Phase::Stopped);
        assert_eq!(
            phase(&Facts {
                service_active: false,
                ..f
            }),
            Phase::Stopped
        );
    }

    fn ready(f: &Facts, now: DateTime<Utc>) -> Condition {
        conditions(&[], f, 1, now)
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
    }

    fn script(name: &str, state: &str, blocks: bool) -> crate::api::workspace::AgentScriptStatus {
        crate::api::workspace::AgentScriptStatus {
            name: name.into(),
            state: state.into(),
            blocks_login: blocks,
            exit_code: (state == "Failed").then_some(3),
            ..Default::default()
        }
    }

    #[test]
    fn with_an_agent_ready_means_connected_with_every_blocking_script_finished() {
        let now = Utc::now();
        let mut f = Facts {
            require_agent: true,
            ..running()
        };
        assert_eq!(
            ready(&f, now).reason,
            "AgentConnecting",
            "a running task is not enough"
        );
        let mut a = AgentStatus {
            connected: true,
            lifecycle: "Starting".into(),
            last_seen: Some(now),
            scripts: vec![
                script("persist", "Running", true),
                script("web", "Running", false),
            ],
            ..Default::default()
        };
        f.agent = Some(a.clone());
        let r = ready(&f, now);
        assert_eq!(
            (r.status, r.reason.as_str()),
            (ConditionStatus::False, "StartupScriptsRunning")
        );
        assert!(
            r.message.contains("persist") && !r.message.contains("web"),
            "{}",
            r.message
        );
        a.scripts[0].state = "Succeeded".into();
        a.lifecycle = "Ready".into();
        f.agent = Some(a.clone());
        let r = ready(&f, now);
        assert_eq!(
            (r.status, r.reason.as_str()),
            (ConditionStatus::True, "AgentReady"),
            "a background script does not hold Ready"
        );
        a.scripts[0].state = "Failed".into();
        a.scripts[0].exit_code = Some(3);
        a.lifecycle = "StartError".into();
        f.agent = Some(a.clone());
        let r = ready(&f, now);
        assert_eq!(r.reason, "StartupScriptFailed");
        assert!(
            r.message.contains("\"persist\" failed with exit code 3"),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_disconnected_agent_keeps_ready_through_the_grace_then_is_reported_gone() {
        let now = Utc::now();
        let a = AgentStatus {
            connected: false,
            lifecycle: "Ready".into(),
            last_seen: Some(now - chrono::Duration::seconds(5)),
            ..Default::default()
        };
        let mut f = Facts {
            require_agent: true,
            agent: Some(a.clone()),
            ..running()
        };
        assert_eq!(
            ready(&f, now).reason,
            "AgentReady",
            "a reconnect in progress"
        );
        f.agent = Some(AgentStatus {
            last_seen: Some(now - chrono::Duration::seconds(31)),
            ..a
        });
        let r = ready(&f, now);
        assert_eq!(
            (r.status, r.reason.as_str()),
            (ConditionStatus::False, "AgentDisconnected")
        );
        assert!(
            r.message.contains("has not reported since"),
            "{}",
            r.message
        );
    }

    #[test]
    fn transition_times_are_kept_while_a_condition_holds() {
        let t0 = Utc::now() - chrono::Duration::hours(1);
        let first = conditions(&[], &running(), 1, t0);
        let again = conditions(&first, &running(), 2, Utc::now());
        assert!(again.iter().all(|c| c.last_transition_time == t0));
        let stopped = Facts {
            want_running: false,
            desired: 0,
            running: 0,
            ..running()
        };
        let changed = conditions(&again, &stopped, 3, Utc::now());
        let ready = changed.iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(ready.last_transition_time > t0);
    }
}
