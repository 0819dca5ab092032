//! The workspace controller: makes ECS and EFS match each workspace.
//!
//! # Expected flow (one reconcile)
//! 1. Take the workspace's lease (another replica holds it → try later).
//! 2. Deleting → [`finalize`]: scale to 0, delete the service and the agent
//!    secret, remove the access point only under `deletionPolicy: Delete`,
//!    then drop the finalizer.
//! 3. Otherwise ensure the finalizer, resolve the template version it
//!    follows and the newest power intent ("last intent wins").
//! 4. Should run and is not running (or a restart was asked for): a
//!    *start*: ensure the access point, replace the agent token secret,
//!    register a task definition revision only if the rendered content hash
//!    changed, then set desiredCount 1 (creating the service if needed).
//!    Should run and runs: correct drift only; spec changes wait for the next
//!    start (`Synced=False`, reason `PendingRestart`), new template versions
//!    show `Outdated=True`.
//!    Should not run: desiredCount 0.
//! 5. Write status (phase, conditions, ECS/EFS ids) under the lease.
//!
//! # Guarantees
//! - Idempotent and crash-safe: every cloud object is tagged with the
//!   workspace's uid and found before any create (access points by tag, task
//!   definitions by content-hash tag, services by their deterministic name),
//!   so a crash between a create and the status write adopts the object.
//! - Transient cloud errors are returned (the runtime retries with per-key
//!   backoff); permanent ones are written to `Synced=False` with a Warning
//!   event and re-checked on a slow period.

pub mod render;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use berth_cloud::ecs::{
    AssignPublicIp, CreateService, DeleteService, DeploymentConfiguration, DesiredStatus,
    NetworkConfiguration, PropagateTags, RolloutState, Service, ServiceStatus, StopCode,
    UpdateService,
};
use berth_cloud::efs::{
    AccessPoint, CreateAccessPoint, CreationInfo, LifeCycleState, PosixUser, RootDirectory,
};
use berth_cloud::error::CloudError;
use berth_cloud::pacer::Priority as PacerPriority;
use berth_cloud::secrets::{PutSecret, SecretString};
use berth_cloud::tags;
use berth_runtime::Action;
use chrono::Utc;
use rand::Rng;

use self::render::WorkspaceIdent;
use self::status::Facts;
use super::observe::Observed;
use super::{Ctx, ReconcileError, WsKey};
use crate::api::template::WorkspaceTemplateSpec;
use crate::api::workspace::{
    DeletionPolicy, EcsStatus, EfsStatus, Phase, Transition, WorkspaceStatus,
};
use crate::api::{Kind, Workspace};
use crate::lifecycle;
use crate::store::{EventType, InvolvedObject, Lease, PowerAction, PowerIntent};

/// The finalizer the workspace controller puts on every workspace.
pub const FINALIZER: &str = "berth.dev/workspace-cloud";

/// How often a workspace in a transition is looked at again (a backstop;
/// the hot refresher usually wakes it first).
const TRANSITION_REQUEUE: Duration = Duration::from_secs(10);
/// How often a workspace with a permanent error is re-checked.
const PERMANENT_ERROR_RECHECK: Duration = Duration::from_secs(600);
/// The longest wait between looks at a start whose task fails (the wait
/// grows with how long it has failed: half of that, at least
/// [`TRANSITION_REQUEUE`]).
const FAILING_START_RECHECK_MAX: Duration = Duration::from_secs(300);

/// A test hook: stop the reconcile right after a cloud create, before the
/// status write, as a crash would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After CreateAccessPoint.
    AfterAccessPoint,
    /// After RegisterTaskDefinition.
    AfterRegister,
    /// After CreateService.
    AfterCreateService,
    /// Panic at the start of the reconcile (a bug's stand-in).
    Panic,
}

struct Pass<'a> {
    ctx: &'a Ctx,
    ws: &'a Workspace,
    involved: InvolvedObject,
    id: WorkspaceIdent<'a>,
}

impl Pass<'_> {
    async fn event(&self, type_: EventType, reason: &str, message: &str) {
        if let Err(e) = self
            .ctx
            .store
            .event_record(&self.involved, type_, reason, message, &self.ctx.source)
            .await
        {
            tracing::warn!(error = %e, workspace = %self.ws.metadata.name, "cannot record event");
        }
    }

    #[allow(clippy::panic)]
    fn crash(&self, at: CrashPoint) -> Result<(), ReconcileError> {
        if at == CrashPoint::Panic && self.ctx.crash_point == Some(at) {
            panic!("injected panic (test hook)");
        }
        if self.ctx.crash_point == Some(at) {
            return Err(ReconcileError::Crash(at));
        }
        Ok(())
    }
}

/// Reconciles one workspace. See the module docs.
pub async fn reconcile(key: WsKey, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let lease_key = format!("Workspace/{}/{}", key.namespace, key.name);
    let Some(lease) = ctx
        .store
        .lease_acquire(&lease_key, &ctx.source, ctx.lease_ttl)
        .await?
    else {
        // Another replica is on it: look again as its lease would expire,
        // so that if it died this replica takes over at once.
        let left = ctx
            .store
            .lease_remaining(&lease_key)
            .await?
            .unwrap_or_default();
        let jitter = Duration::from_millis(rand::rng().random_range(50..500));
        return Ok(Action::requeue(left + jitter));
    };
    // No change is sent once the lease may have expired: a quarter of its
    // TTL before, counted from when it was taken or last renewed.
    let check: berth_cloud::fence::Check = {
        let (acquired, ttl, renewed) = (lease.acquired, ctx.lease_ttl, ctx.lease_renewed.clone());
        Arc::new(move || {
            let renewed = *renewed.lock().unwrap_or_else(|p| p.into_inner());
            let since = renewed.map_or(acquired, |r| r.max(acquired));
            since.elapsed() + ttl / 4 < ttl
        })
    };
    let result = match berth_cloud::fence::scope(check, reconcile_leased(&key, &ctx, &lease)).await
    {
        // Waiting on the cloud is not a failure: look again shortly.
        Err(ReconcileError::NotYet(why)) => {
            tracing::debug!(workspace = %key.name, %why, "waiting");
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        other => other,
    };
    if let Err(e) = ctx.store.lease_release(&lease).await {
        tracing::warn!(error = %e, "cannot release lease (it will expire)");
    }
    result
}

async fn reconcile_leased(key: &WsKey, ctx: &Ctx, lease: &Lease) -> Result<Action, ReconcileError> {
    let Some(obj) = ctx
        .store
        .object_get(Kind::Workspace, &key.namespace, &key.name)
        .await?
    else {
        return Ok(Action::await_change());
    };
    let ws: Workspace = obj
        .to_typed()
        .map_err(|e| ReconcileError::Corrupt(e.to_string()))?;
    let uid = ws.metadata.uid.map(|u| u.to_string()).unwrap_or_default();
    let recorded = ws
        .status
        .as_ref()
        .and_then(|s| s.ecs.as_ref())
        .map(|e| e.service_name.clone());
    let pass = Pass {
        ctx,
        ws: &ws,
        involved: InvolvedObject {
            kind: "Workspace".into(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            uid: ws.metadata.uid.unwrap_or_default(),
        },
        id: WorkspaceIdent {
            namespace: &key.namespace,
            name: &key.name,
            uid: &uid,
            recorded: recorded.as_deref(),
        },
    };
    pass.crash(CrashPoint::Panic)?;
    if ws.metadata.deletion_timestamp.is_some() {
        let status = ws.status.clone().unwrap_or_default();
        let latest = ctx
            .store
            .template_version_get(&key.namespace, &ws.spec.template.name, None)
            .await?
            .and_then(|t| serde_json::from_value::<WorkspaceTemplateSpec>(t.spec).ok());
        let region = match &latest {
            Some(t) => service_region(&status, t),
            None => status.ecs.map(|e| e.region).unwrap_or_default(),
        };
        return berth_cloud::region::scope(region, finalize(&pass, lease)).await;
    }
    if !ws.metadata.finalizers.iter().any(|f| f == FINALIZER) {
        let mut f = ws.metadata.finalizers.clone();
        f.push(FINALIZER.to_string());
        ctx.store
            .object_set_finalizers(Kind::Workspace, &key.namespace, &key.name, &f, None)
            .await?;
    }
    let prev = ws.status.clone().unwrap_or_default();
    let generation = ws.metadata.generation.unwrap_or(0);

    // The template version the workspace follows.
    let latest = ctx
        .store
        .template_version_get(&key.namespace, &ws.spec.template.name, None)
        .await?;
    let Some(latest) = latest else {
        let msg = format!("template {:?} does not exist", ws.spec.template.name);
        return write_failure(&pass, lease, prev, generation, "TemplateMissing", &msg).await;
    };
    let policy = ctx.policy(&key.namespace).await?;
    let require_active = policy.as_ref().is_some_and(|p| p.require_active_version);
    let pinned = ws.spec.template.version.filter(|_| !require_active);
    let followed_version = pinned.unwrap_or(latest.version);
    let followed = if followed_version == latest.version {
        latest
    } else {
        match ctx
            .store
            .template_version_get(
                &key.namespace,
                &ws.spec.template.name,
                Some(followed_version),
            )
            .await?
        {
            Some(v) => v,
            None => {
                let msg = format!(
                    "template {:?} has no version {followed_version}",
                    ws.spec.template.name
                );
                return write_failure(&pass, lease, prev, generation, "TemplateMissing", &msg)
                    .await;
            }
        }
    };
    let followed_spec: WorkspaceTemplateSpec = serde_json::from_value(followed.spec.clone())
        .map_err(|e| ReconcileError::Corrupt(e.to_string()))?;

    let intent = ctx
        .store
        .intent_latest(ws.metadata.uid.unwrap_or_default())
        .await?;
    let want_running = intent
        .as_ref()
        .map(|i| i.action.runs())
        .unwrap_or(ws.spec.running);
    let new_intent = intent.as_ref().filter(|i| i.id > prev.observed_intent);
    let restart_asked = new_intent.is_some_and(|i| i.action == PowerAction::Restart);

    let mut status = prev.clone();
    // A person's own start/stop (not yet acted on) goes ahead of bulk work
    // (autostarts, resyncs, rollouts) at the cloud pacer.
    let interactive =
        new_intent.is_some_and(|i| matches!(i.reason.as_str(), "Manual" | "Spec" | "Connect"));
    let priority = if interactive {
        PacerPriority::Interactive
    } else {
        PacerPriority::Bulk
    };
    // Every call goes to the region the service runs in (the template's
    // for a first start).
    let region = service_region(&status, &followed_spec);
    let outcome = berth_cloud::region::scope(
        region,
        priority.scope(converge(
            &pass,
            &followed_spec,
            followed_version,
            want_running,
            restart_asked,
            intent.as_ref(),
            &mut status,
        )),
    )
    .await;
    let mut facts = match outcome {
        Ok(f) => f,
        Err(e @ (ReconcileError::Cloud(_) | ReconcileError::Foreign(_))) if !matches!(&e, ReconcileError::Cloud(c) if c.is_transient()) =>
        {
            let reason = match &e {
                ReconcileError::Foreign(_) => "ForeignObject",
                _ => "CloudError",
            };
            let msg = e.to_string();
            if !prev
                .conditions
                .iter()
                .any(|c| c.type_ == "Synced" && c.message == msg)
            {
                pass.event(EventType::Warning, reason, &msg).await;
            }
            let mut f = Facts {
                want_running,
                cloud_error: Some(msg),
                ..Default::default()
            };
            f.followed_version = followed_version;
            f.running_version = status.template_version;
            f.pinned = pinned.is_some();
            if let Some(svc) = status_service(ctx, &status) {
                fill_service_facts(&mut f, &svc);
            }
            f
        }
        Err(e) => return Err(e),
    };
    facts.followed_version = followed_version;
    facts.pinned = pinned.is_some();
    facts.require_agent = ctx.require_agent;
    facts.agent_grace = ctx.agent_disconnect_grace;
    status.agent = agent_status(ctx, ws.metadata.uid.unwrap_or_default()).await?;
    facts.agent = status.agent.clone();
    if let Some(i) = &intent {
        status.observed_intent = status.observed_intent.max(i.id);
    }
    let now = ctx.clock.now();
    let next_resources = render::resources(&ws.spec, &followed_spec);
    status.pending_resources = (status.resources != Some(next_resources)).then_some(next_resources);
    lifecycle_status(ctx, &ws, policy.as_ref(), intent.as_ref(), now, &mut status).await?;
    facts.dormancy_threshold = status
        .lifecycle
        .as_ref()
        .and_then(|l| l.dormancy_threshold.clone());
    facts.dormant_since = status
        .dormant_at
        .filter(|t| now >= *t && !facts.want_running);
    status.phase = status::phase(&facts);
    status.conditions = status::conditions(&prev.conditions, &facts, generation, now);
    status.observed_generation = generation;
    let transitional = matches!(status.phase, Phase::Starting | Phase::Stopping);
    // A start that fails is looked at less and less often (ECS itself
    // retries; a change to the template or the workspace wakes us at once).
    let failing_for = facts.task_failure.as_ref().map(|_| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .and_then(|c| {
                now.signed_duration_since(c.last_transition_time)
                    .to_std()
                    .ok()
            })
            .unwrap_or_default()
    });
    if let Some(ecs) = &status.ecs {
        ctx.cache.set_hot(
            &ecs.region,
            &ecs.cluster,
            &ecs.service_name,
            key,
            transitional && failing_for.is_none(),
        );
    }
    write_status(&pass, lease, &status).await?;
    let ready = |conds: &[crate::api::Condition]| {
        conds
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.reason.clone())
    };
    let now_ready = ready(&status.conditions);
    if let Some(why) = facts.task_failure.as_ref() {
        let told = prev
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "TaskFailedToStart" && &c.message == why);
        if now_ready.as_deref() == Some("TaskFailedToStart") && !told {
            pass.event(EventType::Warning, "TaskFailedToStart", why)
                .await;
        }
    }
    if now_ready.as_deref() == Some("AgentDisconnected") && ready(&prev.conditions) != now_ready {
        let msg = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        pass.event(EventType::Warning, "AgentDisconnected", &msg)
            .await;
    }
    if facts.cloud_error.is_some() {
        return Ok(Action::requeue(PERMANENT_ERROR_RECHECK));
    }
    // An agent that just disconnected: look again when its grace ends.
    let grace_left = status
        .agent
        .as_ref()
        .filter(|a| !a.connected && !status::agent_gone(a, now, facts.grace()))
        .and_then(|a| a.last_seen)
        .and_then(|t| {
            (t + chrono::Duration::from_std(facts.grace()).ok()?)
                .signed_duration_since(now)
                .to_std()
                .ok()
        });
    let next = if let Some(age) = failing_for {
        (age / 2).clamp(TRANSITION_REQUEUE, FAILING_START_RECHECK_MAX)
    } else if transitional {
        TRANSITION_REQUEUE
    } else {
        ctx.steady_requeue
    };
    // Once the next autostart's time passes, `nextAutostartAt` must move on
    // (to the following one) even when nothing else about it changes.
    let autostart_left = status
        .next_autostart_at
        .and_then(|t| t.signed_duration_since(now).to_std().ok());
    // The phase turns Dormant at its time.
    let dormant_left = status
        .dormant_at
        .and_then(|t| t.signed_duration_since(now).to_std().ok());
    Ok(Action::requeue(
        [grace_left, autostart_left, dormant_left]
            .into_iter()
            .flatten()
            .map(|left| left + Duration::from_secs(1))
            .fold(next, Duration::min),
    ))
}

/// The agent of the workspace's current start, as the store knows it.
async fn agent_status(
    ctx: &Ctx,
    uid: uuid::Uuid,
) -> Result<Option<crate::api::workspace::AgentStatus>, ReconcileError> {
    let Some(s) = ctx.store.agent_session(uid).await? else {
        return Ok(None);
    };
    let scripts = ctx.store.agent_scripts(uid, s.start_id).await?;
    Ok(Some(crate::api::workspace::AgentStatus {
        connected: s.connected,
        version: s.agent_version,
        // Connected: when it last connected or changed state (a heartbeat
        // writes nothing); disconnected: when it went away.
        last_seen: Some(if s.connected {
            s.last_seen
        } else {
            s.disconnected_at.unwrap_or(s.last_seen)
        }),
        lifecycle: s.lifecycle,
        scripts: scripts
            .into_iter()
            .map(|x| crate::api::workspace::AgentScriptStatus {
                name: x.name,
                display_name: x.display_name,
                state: x.state,
                blocks_login: x.blocks_login,
                run_on_stop: x.run_on_stop,
                exit_code: x.exit_code,
                started_at: x.started_at,
                finished_at: x.finished_at,
                dropped_lines: x.dropped,
            })
            .collect(),
    }))
}

/// Fills the lifecycle fields shown by `get -o wide` and `describe`: last
/// activity, when autostop and the maximum lifetime will stop it, the next
/// autostart, and the values in force.
async fn lifecycle_status(
    ctx: &Ctx,
    ws: &Workspace,
    policy: Option<&crate::api::policy::LifecyclePolicySpec>,
    intent: Option<&PowerIntent>,
    now: chrono::DateTime<Utc>,
    status: &mut WorkspaceStatus,
) -> Result<(), ReconcileError> {
    let eff = lifecycle::effective(&ws.spec, policy);
    let activity = ctx
        .store
        .activity_get(ws.metadata.uid.unwrap_or_default())
        .await?;
    status.last_activity_at = activity.as_ref().map(|a| a.last_activity_at);
    status.last_activity_source = activity.as_ref().map(|a| a.source.clone());
    let running = intent.is_none_or(|i| i.action.runs());
    match intent.filter(|i| i.action.runs()) {
        Some(i) => {
            status.autostop_at = lifecycle::autostop_at(&eff, i.idle_from(), activity.as_ref());
            status.lifetime_ends_at = lifecycle::lifetime_end(&eff, i.at);
        }
        None => {
            status.autostop_at = None;
            status.lifetime_ends_at = None;
        }
    }
    status.next_autostart_at = if running {
        // An early autostart's own scheduled time is not "next".
        let after = intent
            .and_then(|i| i.scheduled_for)
            .map_or(now, |s| s.max(now));
        lifecycle::next_autostart(&ws.spec, &eff, after)
    } else {
        let input = lifecycle::Input {
            uid: String::new(),
            spec: &ws.spec,
            effective: &eff,
            intent,
            activity: activity.as_ref(),
        };
        let dormancy = lifecycle::dormancy(&input, ws.metadata.creation_timestamp);
        status.dormant_at = dormancy.map(|d| d.dormant_at);
        status.dormant_deletion_at = dormancy.and_then(|d| d.delete_at);
        // A Dormant workspace is not started by its schedule.
        lifecycle::pending_autostart(now, &input, Duration::from_secs(15 * 60))
            .filter(|_| !dormancy.is_some_and(|d| d.is_dormant(now)))
    };
    if running {
        status.dormant_at = None;
        status.dormant_deletion_at = None;
    }
    status.lifecycle = Some(eff);
    Ok(())
}

fn status_service(ctx: &Ctx, status: &WorkspaceStatus) -> Option<Service> {
    let ecs = status.ecs.as_ref()?;
    ctx.cache
        .get(&ecs.cluster, &ecs.service_name)?
        .active()
        .cloned()
}

fn fill_service_facts(f: &mut Facts, svc: &Service) {
    f.service_active = svc.status == ServiceStatus::Active;
    f.desired = svc.desired_count;
    f.running = svc.running_count;
    f.pending = svc.pending_count;
    f.rollout_completed = svc
        .primary_deployment()
        .is_none_or(|d| d.rollout_state == RolloutState::Completed);
}

async fn write_status(
    pass: &Pass<'_>,
    lease: &Lease,
    status: &WorkspaceStatus,
) -> Result<(), ReconcileError> {
    let v = serde_json::to_value(status).map_err(|e| ReconcileError::Corrupt(e.to_string()))?;
    pass.ctx
        .store
        .object_update_status_leased(Kind::Workspace, pass.id.namespace, pass.id.name, &v, lease)
        .await?;
    Ok(())
}

async fn write_failure(
    pass: &Pass<'_>,
    lease: &Lease,
    prev: WorkspaceStatus,
    generation: i64,
    reason: &str,
    msg: &str,
) -> Result<Action, ReconcileError> {
    let mut status = prev.clone();
    let f = Facts {
        cloud_error: Some(msg.to_string()),
        running_version: prev.template_version,
        ..Default::default()
    };
    status.phase = Phase::Failed;
    status.conditions = status::conditions(&prev.conditions, &f, generation, Utc::now());
    for c in &mut status.conditions {
        if c.type_ == "Synced" {
            c.reason = reason.to_string();
        }
    }
    if !prev.conditions.iter().any(|c| c.reason == reason) {
        pass.event(EventType::Warning, reason, msg).await;
    }
    write_status(pass, lease, &status).await?;
    Ok(Action::requeue(PERMANENT_ERROR_RECHECK))
}

/// Looks at the service (cache first) and does what the declared state needs.
async fn converge(
    pass: &Pass<'_>,
    template: &WorkspaceTemplateSpec,
    followed_version: i32,
    want_running: bool,
    restart_asked: bool,
    intent: Option<&PowerIntent>,
    status: &mut WorkspaceStatus,
) -> Result<Facts, ReconcileError> {
    let ctx = pass.ctx;
    let service_name = pass.id.family();
    // A service keeps running in the cluster it was started in.
    let cluster = status
        .ecs
        .as_ref()
        .filter(|e| !e.cluster.is_empty())
        .map(|e| e.cluster.clone())
        .unwrap_or_else(|| template.infrastructure.cluster.clone());
    let observed = match ctx.cache.get(&cluster, &service_name) {
        // Another replica may have acted on this workspace since our cache
        // was filled: when what the status records (written by whoever made
        // the last change) disagrees with the cache, describe it afresh
        // before deciding, so no write is repeated.
        Some(o) if cache_disagrees(&o, status) => {
            ctx.cache.refresh_one(&cluster, &service_name).await?
        }
        Some(o) => o,
        // Never started (as far as the status knows): the start path
        // describes the service afresh before creating anything.
        None if status.ecs.is_none() => Observed::Missing,
        None => ctx.cache.refresh_one(&cluster, &service_name).await?,
    };
    let mut svc: Option<Service> = match &observed {
        Observed::Found(s) => Some((**s).clone()),
        Observed::Missing => None,
    };
    // Never adopt, scale or delete a service that is not this workspace's.
    if let Some(s) = svc.as_ref().filter(|s| s.status != ServiceStatus::Inactive) {
        foreign_check("ECS service", &s.service_name, &s.tags, pass.id.uid)?;
    }
    let active = svc
        .as_ref()
        .is_some_and(|s| s.status == ServiceStatus::Active);
    let reason = intent
        .map(|i| i.reason.clone())
        .unwrap_or_else(|| "Spec".into());
    let mut facts = Facts {
        want_running,
        running_version: status.template_version,
        ..Default::default()
    };

    let mut failing: Option<String> = None;
    if want_running {
        let desired_now = svc
            .as_ref()
            .filter(|_| active)
            .map(|s| s.desired_count)
            .unwrap_or(0);
        // Without a recorded start (a crash before the status write), adopt
        // what exists through the start path; it creates nothing that exists.
        let never_recorded = status
            .ecs
            .as_ref()
            .is_none_or(|e| e.content_hash.is_empty());
        // A start whose task cannot run (ECS says why) is planned again
        // as soon as the template or the workspace changes: the fix is the
        // change, and waiting for a restart would leave it failing.
        failing = match svc.as_ref().filter(|s| active && s.desired_count >= 1) {
            Some(s) if !restart_asked && !never_recorded => {
                let was_failing = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "TaskFailedToStart");
                start_failure(pass, &cluster, &service_name, s, was_failing).await
            }
            _ => None,
        };
        let replan = failing.is_some()
            && (status.template_version != Some(followed_version)
                || pending_restart(pass, status).await?.is_some());
        if replan {
            pass.event(
                EventType::Normal,
                "Replanned",
                &format!(
                    "the task could not start ({}); starting again with the changed spec (template version {followed_version})",
                    failing.as_deref().unwrap_or_default()
                ),
            )
            .await;
        }
        if !active || desired_now == 0 || restart_asked || never_recorded || replan {
            if svc
                .as_ref()
                .is_some_and(|s| s.status == ServiceStatus::Draining)
            {
                // The previous service is still draining; ECS refuses a new one of that name until it is gone.
                facts.pending_restart = None;
                fill_service_facts(&mut facts, svc.as_ref().expect("checked"));
                facts.service_active = false;
                return Ok(facts);
            }
            let drift = active
                && desired_now == 0
                && status.ecs.as_ref().is_some_and(|e| e.desired_count == 1)
                && !restart_asked
                && intent.is_none_or(|i| i.id <= status.observed_intent);
            let (started, changed) = start(
                pass,
                template,
                followed_version,
                &cluster,
                svc.as_ref().filter(|_| active),
                restart_asked,
                status,
            )
            .await?;
            if changed {
                failing = None;
                let why = if drift {
                    pass.event(
                        EventType::Warning,
                        "DriftCorrected",
                        "desiredCount was set to 0 outside Berth; set it back to 1",
                    )
                    .await;
                    "DriftCorrected".to_string()
                } else {
                    reason.clone()
                };
                let verb = if restart_asked || replan {
                    "Restarted"
                } else {
                    "Started"
                };
                pass.event(
                    EventType::Normal,
                    verb,
                    &format!(
                        "desiredCount 1 with task definition {} (template version {followed_version}; {why})",
                        short_arn(&started.task_definition)
                    ),
                )
                .await;
                status.last_transition = Some(Transition {
                    action: "start".into(),
                    reason: why,
                    at: Utc::now(),
                });
            } else {
                pass.event(
                    EventType::Normal,
                    "Adopted",
                    &format!("found the running service {service_name}; nothing to change"),
                )
                .await;
            }
            ctx.cache.put(&cluster, started.clone());
            svc = Some(started);
        } else if let Some(s) = svc.as_ref() {
            // Running: correct drift of the task definition; never apply spec changes now.
            let ours = status
                .ecs
                .as_ref()
                .map(|e| e.task_definition_arn.clone())
                .unwrap_or_default();
            if let Some(found) = s
                .deployment_configuration
                .filter(|c| *c != DeploymentConfiguration::ONE_AT_A_TIME)
            {
                let updated = ctx
                    .ecs()
                    .update_service(UpdateService {
                        cluster: cluster.clone(),
                        service: service_name.clone(),
                        deployment_configuration: Some(DeploymentConfiguration::ONE_AT_A_TIME),
                        ..Default::default()
                    })
                    .await?;
                pass.event(
                    EventType::Warning,
                    "DriftCorrected",
                    &format!(
                        "deployment configuration was minimumHealthyPercent {} / maximumPercent {}; set back to 0 / 100 (one task per home: the old task stops before a new one starts)",
                        found.minimum_healthy_percent, found.maximum_percent
                    ),
                )
                .await;
                ctx.cache.put(&cluster, updated);
            }
            let s = ctx
                .cache
                .get(&cluster, &service_name)
                .and_then(|e| e.active().cloned())
                .unwrap_or_else(|| s.clone());
            if !ours.is_empty() && !same_task_definition(&s.task_definition, &ours) {
                let updated = ctx
                    .ecs()
                    .update_service(UpdateService {
                        cluster: cluster.clone(),
                        service: service_name.clone(),
                        task_definition: Some(ours.clone()),
                        ..Default::default()
                    })
                    .await?;
                pass.event(
                    EventType::Warning,
                    "DriftCorrected",
                    &format!(
                        "task definition was replaced outside Berth with {}; set back to {}",
                        short_arn(&s.task_definition),
                        short_arn(&ours)
                    ),
                )
                .await;
                ctx.cache.put(&cluster, updated.clone());
                svc = Some(updated);
            }
            facts.pending_restart = pending_restart(pass, status).await?;
        }
    } else if let Some(s) = svc.as_ref().filter(|_| active) {
        if s.desired_count != 0 {
            let updated = ctx
                .ecs()
                .update_service(UpdateService {
                    cluster: cluster.clone(),
                    service: service_name.clone(),
                    desired_count: Some(0),
                    ..Default::default()
                })
                .await?;
            pass.event(
                EventType::Normal,
                "Stopped",
                &format!("desiredCount 0 ({reason}); ECS sends SIGTERM, the stop timeout applies"),
            )
            .await;
            status.last_transition = Some(Transition {
                action: "stop".into(),
                reason: reason.clone(),
                at: Utc::now(),
            });
            ctx.cache.put(&cluster, updated.clone());
            svc = Some(updated);
        }
    }

    if let Some(s) = &svc {
        fill_service_facts(&mut facts, s);
        if let Some(e) = status.ecs.as_mut() {
            e.desired_count = s.desired_count as i32;
            e.running_count = s.running_count as i32;
            e.pending_count = s.pending_count as i32;
            e.service_arn = s.service_arn.clone();
        }
        facts.task_failure = failing;
    } else if let Some(e) = status.ecs.as_mut() {
        e.desired_count = 0;
        e.running_count = 0;
        e.pending_count = 0;
    }
    facts.running_version = status.template_version;
    Ok(facts)
}

fn cache_disagrees(o: &Observed, status: &WorkspaceStatus) -> bool {
    let Some(e) = status.ecs.as_ref().filter(|e| !e.service_name.is_empty()) else {
        return false;
    };
    match o.active() {
        Some(s) => {
            s.desired_count as i32 != e.desired_count
                || !same_task_definition(&s.task_definition, &e.task_definition_arn)
        }
        None => true,
    }
}

/// Why the service's current deployment cannot run its task, when ECS
/// says so: the service could not place one (the account's vCPU quota: no
/// task exists, `failedTasks` stays 0), or the newest of the deployment's
/// stopped tasks stopped before running (`CannotPullContainerError`,
/// `ResourceInitializationError` for a secret or the EFS mount, …),
/// whether or not ECS counts it in `failedTasks`. None while a task runs.
async fn start_failure(
    pass: &Pass<'_>,
    cluster: &str,
    service: &str,
    svc: &Service,
    was_failing: bool,
) -> Option<String> {
    let dep = svc.primary_deployment()?;
    if svc.running_count > 0 || dep.running_count > 0 {
        return None;
    }
    // Newest first: a placement failure since the deployment began and
    // not followed by a task being started.
    for e in &svc.events {
        if e.created_at < dep.created_at || e.message.contains("has started") {
            break;
        }
        if e.message.contains("was unable to place a task") {
            return Some(e.message.clone());
        }
    }
    // A task on its way with no failure seen yet: nothing to look up (a
    // start costs no extra calls). Once one failed, keep looking, so the
    // reason does not come and go with each relaunch.
    if dep.failed_tasks == 0 && dep.pending_count > 0 && !was_failing {
        return None;
    }
    let ecs = pass.ctx.ecs();
    let arns = ecs
        .list_tasks(cluster, service, DesiredStatus::Stopped)
        .await
        .inspect_err(|e| tracing::debug!(%service, error = %e, "listing stopped tasks"))
        .ok()?;
    if arns.is_empty() {
        return None;
    }
    let newest_first = arns.len().saturating_sub(100);
    let out = ecs
        .describe_tasks(cluster, &arns[newest_first..])
        .await
        .inspect_err(|e| tracing::debug!(%service, error = %e, "describing stopped tasks"))
        .ok()?;
    // The newest by time, not the last in the list (ListTasks has no order).
    out.tasks
        .into_iter()
        .filter(|t| {
            t.started_by == dep.id
                || (t.started_by.is_empty()
                    && same_task_definition(&t.task_definition_arn, &dep.task_definition)
                    && t.created_at >= dep.created_at)
        })
        .filter(|t| t.started_at.is_none() || t.stop_code == Some(StopCode::TaskFailedToStart))
        .max_by_key(|t| t.stopped_at.or(t.stopping_at).unwrap_or(t.created_at))
        .and_then(|t| t.stopped_reason)
}

fn short_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The region of a workspace's cloud objects: the one its status records
/// once a service was started (empty for services started before Berth
/// recorded it: the operator's own region), else the template's.
fn service_region(status: &WorkspaceStatus, template: &WorkspaceTemplateSpec) -> String {
    match status.ecs.as_ref().filter(|e| !e.service_name.is_empty()) {
        Some(e) => e.region.clone(),
        None => template.infrastructure.region.clone(),
    }
}

/// How many task definition revisions of a workspace stay ACTIVE: the one
/// that runs and a couple before it (ECS keeps INACTIVE ones describable,
/// and a task that runs one goes on running).
pub const ACTIVE_REVISIONS_KEPT: u32 = 3;

/// Deregisters the revision that falls out of the kept window when
/// `revision` is registered: one call per new revision keeps a family at
/// [`ACTIVE_REVISIONS_KEPT`] ACTIVE revisions. Housekeeping: a failure is
/// logged and retried with the next revision, never fails the start.
async fn retire_old_revision(pass: &Pass<'_>, family: &str, revision: u32) {
    let Some(old) = revision
        .checked_sub(ACTIVE_REVISIONS_KEPT)
        .filter(|r| *r > 0)
    else {
        return;
    };
    let td = format!("{family}:{old}");
    match pass.ctx.ecs().deregister_task_definition(&td).await {
        Ok(_) => tracing::debug!(task_definition = %td, "deregistered an old revision"),
        Err(e) if e.is_not_found() => {}
        Err(e) => {
            tracing::warn!(task_definition = %td, error = %e, "could not deregister an old revision")
        }
    }
}

/// Refuses an object whose ownership tags name another workspace (or none).
fn foreign_check(
    what: &str,
    name: &str,
    object_tags: &berth_cloud::tags::Tags,
    uid: &str,
) -> Result<(), ReconcileError> {
    if tags::is_owned_by(object_tags, uid) {
        return Ok(());
    }
    let whose = match tags::Owner::from_tags(object_tags) {
        Some(o) => format!("workspace {}/{} (uid {})", o.namespace, o.name, o.uid),
        None => "no Berth workspace (it has no berth.dev ownership tags)".into(),
    };
    Err(ReconcileError::Foreign(format!(
        "{what} {name} belongs to {whose}, not to this workspace (uid {uid}); Berth leaves it alone"
    )))
}

/// Compares task definitions by family and revision whatever form they are in.
fn same_task_definition(a: &str, b: &str) -> bool {
    short_arn(a) == short_arn(b)
}

/// When the content the spec renders to (for the version that runs) differs
/// from what runs, the change applies at the next start.
async fn pending_restart(
    pass: &Pass<'_>,
    status: &WorkspaceStatus,
) -> Result<Option<String>, ReconcileError> {
    let (Some(ecs), Some(efs), Some(version)) = (
        status.ecs.as_ref(),
        status.efs.as_ref(),
        status.template_version,
    ) else {
        return Ok(None);
    };
    if ecs.content_hash.is_empty() || ecs.agent_secret_arn.is_empty() {
        return Ok(None);
    }
    let Some(tv) = pass
        .ctx
        .store
        .template_version_get(
            pass.id.namespace,
            &pass.ws.spec.template.name,
            Some(version),
        )
        .await?
    else {
        return Ok(None);
    };
    let template: WorkspaceTemplateSpec =
        serde_json::from_value(tv.spec).map_err(|e| ReconcileError::Corrupt(e.to_string()))?;
    let rendered = render::task_definition(
        &pass.id,
        &pass.ws.spec,
        &template,
        version,
        &efs.access_point_id,
        &ecs.agent_secret_arn,
        &pass.ctx.agent,
    );
    Ok((rendered.hash != ecs.content_hash).then(|| {
        "the spec changed since the workspace started (resources or parameters); it applies at the next start (berth restart)".to_string()
    }))
}

/// A start: access point, agent token, task definition (only if its content
/// changed), then the service at desiredCount 1.
async fn start(
    pass: &Pass<'_>,
    template: &WorkspaceTemplateSpec,
    version: i32,
    cluster: &str,
    active: Option<&Service>,
    restart: bool,
    status: &mut WorkspaceStatus,
) -> Result<(Service, bool), ReconcileError> {
    let ctx = pass.ctx;
    let service_name = pass.id.family();
    // Never trust a cached "missing" before a create: describe afresh; and
    // never adopt a service of that name that is not this workspace's.
    let active: Option<Service> = match active {
        Some(s) => Some(s.clone()),
        None => match ctx.cache.refresh_one(cluster, &service_name).await? {
            Observed::Found(s) if s.status == ServiceStatus::Active => Some(*s),
            _ => None,
        },
    };
    if let Some(s) = &active {
        foreign_check("ECS service", &s.service_name, &s.tags, pass.id.uid)?;
    }
    let ap = ensure_access_point(pass, template, status).await?;
    // A fresh agent token per start, delivered through the secret the task
    // definition references (the token never enters the task definition).
    let token = new_agent_token();
    let secret = ctx
        .secrets()
        .put_secret_value(PutSecret {
            name: pass.id.secret_name(),
            value: SecretString::new(token.clone()),
            description: Some(format!(
                "Berth agent token of workspace {}/{}",
                pass.id.namespace, pass.id.name
            )),
            tags: pass.id.tags(),
        })
        .await?;
    if let Some(uid) = pass.ws.metadata.uid {
        ctx.store.agent_token_set(uid, &token).await?;
    }
    let rendered = render::task_definition(
        &pass.id,
        &pass.ws.spec,
        template,
        version,
        &ap.access_point_id,
        &secret.arn,
        &ctx.agent,
    );
    let prev_ecs = status.ecs.clone().unwrap_or_default();
    let td_arn =
        if prev_ecs.content_hash == rendered.hash && !prev_ecs.task_definition_arn.is_empty() {
            prev_ecs.task_definition_arn.clone()
        } else {
            // Adopt a revision with the same content (a crash after register).
            let existing = match ctx
                .ecs()
                .describe_task_definition(&pass.id.family(), true)
                .await
            {
                Ok(td) => Some(td),
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(_) => None,
            };
            if let Some(td) = &existing {
                foreign_check("task definition family", &td.family, &td.tags, pass.id.uid)?;
            }
            match existing.filter(|td| {
                td.tags.get(tags::CONTENT_HASH) == Some(&rendered.hash)
                    && tags::is_owned_by(&td.tags, pass.id.uid)
            }) {
                Some(td) => td.task_definition_arn,
                None => {
                    let td = ctx
                        .ecs()
                        .register_task_definition(rendered.request.clone())
                        .await?;
                    pass.event(
                        EventType::Normal,
                        "RegisteredTaskDefinition",
                        &format!(
                            "{}:{} (cpu {}, memory {}, template version {version})",
                            td.family, td.revision, td.cpu, td.memory
                        ),
                    )
                    .await;
                    pass.crash(CrashPoint::AfterRegister)?;
                    retire_old_revision(pass, &td.family, td.revision).await;
                    td.task_definition_arn
                }
            }
        };
    let region = if prev_ecs.service_name.is_empty() {
        template.infrastructure.region.clone()
    } else {
        prev_ecs.region.clone()
    };
    status.ecs = Some(EcsStatus {
        region,
        cluster: cluster.to_string(),
        service_name: service_name.clone(),
        task_definition_arn: td_arn.clone(),
        content_hash: rendered.hash.clone(),
        agent_secret_arn: secret.arn.clone(),
        ..prev_ecs
    });
    status.template_version = Some(version);
    status.resources = Some(render::resources(&pass.ws.spec, template));
    let svc = match active {
        Some(s)
            if s.desired_count == 1
                && same_task_definition(&s.task_definition, &td_arn)
                && !restart =>
        {
            // Already what we want (adopted after a crash): nothing to write.
            return Ok((s, false));
        }
        Some(s) => {
            let force = restart
                && s.desired_count >= 1
                && same_task_definition(&s.task_definition, &td_arn);
            // A service made before Berth set it (or changed outside
            // Berth) gets one task at a time with this start.
            let dc = s
                .deployment_configuration
                .filter(|c| *c != DeploymentConfiguration::ONE_AT_A_TIME)
                .map(|_| DeploymentConfiguration::ONE_AT_A_TIME);
            ctx.ecs()
                .update_service(UpdateService {
                    cluster: cluster.to_string(),
                    service: service_name.clone(),
                    desired_count: Some(1),
                    task_definition: (!same_task_definition(&s.task_definition, &td_arn))
                        .then(|| td_arn.clone()),
                    force_new_deployment: force,
                    enable_execute_command: None,
                    deployment_configuration: dc,
                })
                .await?
        }
        None => {
            let inf = &template.infrastructure;
            let e = status.ecs.as_mut().expect("recorded above");
            if !e.service_arn.is_empty() {
                // The service it had is gone (deleted outside Berth): make
                // it again under a new client token.
                pass.event(
                    EventType::Warning,
                    "DriftCorrected",
                    &format!(
                        "ECS service {service_name} was deleted outside Berth; creating it again"
                    ),
                )
                .await;
                e.service_attempt = e.service_attempt.saturating_add(1);
                e.service_arn.clear();
            }
            let attempt = e.service_attempt;
            let created = ctx
                .ecs()
                .create_service(CreateService {
                    cluster: cluster.to_string(),
                    service_name: service_name.clone(),
                    task_definition: td_arn.clone(),
                    desired_count: 1,
                    platform_version: None,
                    network_configuration: NetworkConfiguration {
                        subnets: inf.subnets.clone(),
                        security_groups: inf.security_groups.clone(),
                        assign_public_ip: if inf.assign_public_ip {
                            AssignPublicIp::Enabled
                        } else {
                            AssignPublicIp::Disabled
                        },
                    },
                    client_token: Some(pass.id.client_token("service", attempt)),
                    tags: pass.id.tags(),
                    enable_execute_command: true,
                    deployment_circuit_breaker: false,
                    // One task per home: the old task stops before the new
                    // one starts (restarts, new revisions, task retirement).
                    deployment_configuration: Some(DeploymentConfiguration::ONE_AT_A_TIME),
                    // Tasks carry the workspace's ownership tags (costs per
                    // workspace) and ECS's own service and cluster tags.
                    propagate_tags: Some(PropagateTags::Service),
                    enable_ecs_managed_tags: true,
                })
                .await?;
            pass.event(
                EventType::Normal,
                "CreatedService",
                &format!("ECS service {service_name} in {cluster}"),
            )
            .await;
            pass.crash(CrashPoint::AfterCreateService)?;
            created
        }
    };
    Ok((svc, true))
}

fn new_agent_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("berth_agent_{body}")
}

/// The workspace's home: the access point its status records when it is
/// still there, else its owner's home in the namespace on the template's
/// file system (one access point per owner, namespace and file system,
/// shared by the owner's workspaces there, rooted at
/// `<efsRootDirectory>/<namespace>/<owner>`), made when the owner has none.
/// Waits (by returning a transient error) until it is available.
///
/// No listing of the file system's access points: the home's row in the
/// store says which access point it is and under which client token it
/// was made, and a create after a crash is answered with the same one.
async fn ensure_access_point(
    pass: &Pass<'_>,
    template: &WorkspaceTemplateSpec,
    status: &mut WorkspaceStatus,
) -> Result<AccessPoint, ReconcileError> {
    let ctx = pass.ctx;
    let fs = &template.infrastructure.file_system_id;
    let (ns, owner) = (pass.id.namespace, pass.ws.spec.owner.as_str());
    // Homes carry the owner's tags; access points of earlier versions
    // (one per workspace, rooted at <root>/<owner>) the workspace's uid.
    let usable = |ap: &AccessPoint| {
        (tags::is_home_of(&ap.tags, ns, owner) || tags::is_owned_by(&ap.tags, pass.id.uid))
            && ap.file_system_id == *fs
            && ap.life_cycle_state != LifeCycleState::Deleting
            && ap.life_cycle_state != LifeCycleState::Deleted
    };
    let describe = |id: String| async move {
        match ctx.efs().describe_access_point(&id).await {
            Ok(ap) => Ok(Some(ap)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(ReconcileError::from(e)),
        }
    };
    let mut found = None;
    let mut gone = None;
    if let Some(known) = status
        .efs
        .as_ref()
        .map(|e| e.access_point_id.clone())
        .filter(|id| !id.is_empty())
    {
        match describe(known.clone()).await? {
            Some(ap) if usable(&ap) => found = Some(ap),
            Some(_) => {}
            None => gone = Some(known),
        }
    }
    let mut home = ctx.store.home_get_or_insert(fs, ns, owner).await?;
    if let Some(ap) = &found {
        // A workspace that runs on an access point of an earlier version
        // keeps it, and it becomes its owner's home when the owner has
        // none: the files stay where they are.
        if home.access_point_id.is_empty() {
            ctx.store
                .home_set_access_point(fs, ns, owner, home.attempt, &ap.access_point_id)
                .await?;
        }
    } else {
        if !home.access_point_id.is_empty() {
            match describe(home.access_point_id.clone()).await? {
                Some(ap) if usable(&ap) => found = Some(ap),
                _ => {
                    gone.get_or_insert_with(|| home.access_point_id.clone());
                    home = ctx
                        .store
                        .home_next_attempt(fs, ns, owner, home.attempt)
                        .await?;
                }
            }
        }
        if let Some(id) = &gone {
            pass.event(
                EventType::Warning,
                "DriftCorrected",
                &format!("access point {id} was deleted outside Berth; using the owner's home, made again if needed (the files on EFS are untouched)"),
            )
            .await;
        }
    }
    let mut ap = match found {
        Some(ap) => ap,
        None => create_home(pass, template, &home).await?,
    };
    status.efs = Some(EfsStatus {
        access_point_id: ap.access_point_id.clone(),
        root_directory: ap.root_directory.path.clone(),
    });
    // A new access point takes a few seconds to become available.
    for _ in 0..20 {
        if ap.life_cycle_state == LifeCycleState::Available {
            return Ok(ap);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        ap = ctx.efs().describe_access_point(&ap.access_point_id).await?;
    }
    Err(ReconcileError::NotYet(format!(
        "access point {} is {:?}",
        ap.access_point_id, ap.life_cycle_state
    )))
}

/// Creates the owner's home under its attempt's client token (the same
/// call from every workspace of the owner, and again after a crash, gets
/// the same access point) and records it.
async fn create_home(
    pass: &Pass<'_>,
    template: &WorkspaceTemplateSpec,
    home: &crate::store::Home,
) -> Result<AccessPoint, ReconcileError> {
    let ctx = pass.ctx;
    let (fs, ns, owner) = (&home.file_system_id, &home.namespace, &home.owner);
    let root = render::home_directory(template, ns, owner);
    // One create per home: the owner's other workspaces wait for it.
    if !ctx
        .store
        .home_claim_create(fs, ns, owner, home.attempt, pass.id.uid)
        .await?
    {
        return Err(ReconcileError::NotYet(format!(
            "another workspace of {owner}'s is making their home in {ns}"
        )));
    }
    if home.create_started {
        // An earlier pass may have made it and stopped before recording it
        // (EFS would answer the same token with it, but not every EFS-like
        // service does): look for it by its tags once.
        let left = ctx
            .efs()
            .describe_access_points(fs)
            .await?
            .into_iter()
            .find(|ap| {
                tags::is_home_of(&ap.tags, ns, owner)
                    && ap.root_directory.path == root
                    && !matches!(
                        ap.life_cycle_state,
                        LifeCycleState::Deleting | LifeCycleState::Deleted
                    )
            });
        if let Some(ap) = left {
            ctx.store
                .home_set_access_point(fs, ns, owner, home.attempt, &ap.access_point_id)
                .await?;
            return Ok(ap);
        }
    }
    let created = ctx
        .efs()
        .create_access_point(CreateAccessPoint {
            client_token: render::home_client_token(fs, ns, owner, home.attempt),
            file_system_id: fs.clone(),
            posix_user: Some(PosixUser {
                uid: template.container.uid,
                gid: template.container.gid,
                secondary_gids: vec![],
            }),
            root_directory: Some(RootDirectory {
                path: root.clone(),
                creation_info: Some(CreationInfo {
                    owner_uid: template.container.uid,
                    owner_gid: template.container.gid,
                    permissions: "0750".into(),
                }),
            }),
            tags: tags::home_tags(ns, owner),
        })
        .await;
    let ap = match created {
        Ok(ap) => ap,
        Err(e) if e.code == berth_cloud::error::ErrorCode::AccessPointAlreadyExists => {
            // The token was spent on other parameters (another template's
            // uid or root for this home): the next attempt gets a new one.
            ctx.store
                .home_next_attempt(fs, ns, owner, home.attempt)
                .await?;
            return Err(ReconcileError::NotYet(format!(
                "the client token of {owner}'s home was used with other parameters ({e}); trying again with a new one"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    pass.crash(CrashPoint::AfterAccessPoint)?;
    if ctx
        .store
        .home_set_access_point(fs, ns, owner, home.attempt, &ap.access_point_id)
        .await?
    {
        pass.event(
            EventType::Normal,
            "CreatedAccessPoint",
            &format!(
                "{} rooted at {root} on {fs}: the home of {owner} in {ns}, shared by their workspaces",
                ap.access_point_id
            ),
        )
        .await;
    }
    Ok(ap)
}

/// Cleanup on deletion; tolerates a workspace that never started.
async fn finalize(pass: &Pass<'_>, lease: &Lease) -> Result<Action, ReconcileError> {
    let ctx = pass.ctx;
    let ws = pass.ws;
    let status = ws.status.clone().unwrap_or_default();
    let service_name = pass.id.family();
    let cluster = match status.ecs.as_ref().filter(|e| !e.cluster.is_empty()) {
        Some(e) => Some(e.cluster.clone()),
        None => match ctx
            .store
            .template_version_get(pass.id.namespace, &ws.spec.template.name, None)
            .await?
        {
            Some(t) => serde_json::from_value::<WorkspaceTemplateSpec>(t.spec)
                .ok()
                .map(|t| t.infrastructure.cluster),
            None => None,
        },
    };
    if let Some(cluster) = &cluster {
        match ctx.cache.refresh_one(cluster, &service_name).await? {
            // Only a service tagged as this workspace's is touched.
            Observed::Found(s)
                if s.status == ServiceStatus::Active && tags::is_owned_by(&s.tags, pass.id.uid) =>
            {
                if s.desired_count != 0 {
                    ctx.ecs()
                        .update_service(UpdateService {
                            cluster: cluster.clone(),
                            service: service_name.clone(),
                            desired_count: Some(0),
                            ..Default::default()
                        })
                        .await?;
                }
                ctx.ecs()
                    .delete_service(DeleteService {
                        cluster: cluster.clone(),
                        service: service_name.clone(),
                        force: true,
                    })
                    .await?;
                pass.event(
                    EventType::Normal,
                    "DeletedService",
                    &format!("ECS service {service_name} scaled to 0 and deleted"),
                )
                .await;
            }
            _ => {}
        }
        ctx.cache.forget(cluster, &service_name);
    }
    // The secret of the last start (as recorded), and the names this and
    // earlier versions of Berth give it.
    let recorded = ws
        .status
        .as_ref()
        .and_then(|s| s.ecs.as_ref())
        .map(|e| e.agent_secret_arn.clone())
        .filter(|a| !a.is_empty());
    let names = recorded
        .into_iter()
        .chain([pass.id.secret_name(), pass.id.legacy_secret_name()]);
    for name in names {
        match ctx.secrets().delete_secret(&name).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    if ws.spec.deletion_policy == DeletionPolicy::Delete {
        let fs = match ctx
            .store
            .template_version_get(pass.id.namespace, &ws.spec.template.name, None)
            .await?
        {
            Some(t) => serde_json::from_value::<WorkspaceTemplateSpec>(t.spec)
                .ok()
                .map(|t| t.infrastructure.file_system_id),
            None => None,
        };
        if let Some(fs) = fs {
            remove_home_if_last(pass, &fs, &status).await?;
        }
    }
    let _ = lease;
    let rest: Vec<String> = ws
        .metadata
        .finalizers
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    ctx.store
        .object_set_finalizers(
            Kind::Workspace,
            pass.id.namespace,
            pass.id.name,
            &rest,
            None,
        )
        .await?;
    Ok(Action::await_change())
}

/// With `deletionPolicy: Delete`, removes the workspace's access point
/// (and forgets the owner's home) only when no other workspace of the
/// owner in the namespace needs it: the home is shared. Files on EFS are
/// never deleted, either way.
async fn remove_home_if_last(
    pass: &Pass<'_>,
    fs: &str,
    status: &WorkspaceStatus,
) -> Result<(), ReconcileError> {
    let ctx = pass.ctx;
    let (ns, owner) = (pass.id.namespace, pass.ws.spec.owner.as_str());
    let (objects, _) = ctx
        .store
        .object_list(
            Kind::Workspace,
            Some(ns),
            &crate::api::selector::Selector::default(),
            Some(owner),
        )
        .await?;
    // The owner's other workspaces, but for those going away with it.
    let others: Vec<Workspace> = objects
        .into_iter()
        .filter_map(|o| {
            o.to_typed::<crate::api::workspace::WorkspaceSpec, WorkspaceStatus>()
                .ok()
        })
        .filter(|w| w.metadata.uid != pass.ws.metadata.uid)
        .filter(|w| {
            w.metadata.deletion_timestamp.is_none()
                || w.spec.deletion_policy != DeletionPolicy::Delete
        })
        .collect();
    let home = ctx.store.home_get(fs, ns, owner).await?;
    let home_ap = home
        .as_ref()
        .map(|h| h.access_point_id.clone())
        .filter(|id| !id.is_empty());
    let recorded = status
        .efs
        .as_ref()
        .map(|e| e.access_point_id.clone())
        .filter(|id| !id.is_empty());
    let mut candidates: Vec<String> = recorded.into_iter().chain(home_ap.clone()).collect();
    candidates.dedup();
    for id in candidates {
        let users: Vec<&str> = others
            .iter()
            .filter(|w| {
                home_ap.as_deref() == Some(id.as_str())
                    || w.status
                        .as_ref()
                        .and_then(|s| s.efs.as_ref())
                        .is_some_and(|e| e.access_point_id == id)
            })
            .map(|w| w.metadata.name.as_str())
            .collect();
        if !users.is_empty() {
            pass.event(
                EventType::Normal,
                "KeptAccessPoint",
                &format!(
                    "{id} stays: it is the home of {owner}'s other workspaces in {ns} ({})",
                    users.join(", ")
                ),
            )
            .await;
            continue;
        }
        let ap = match ctx.efs().describe_access_point(&id).await {
            Ok(ap) => ap,
            Err(e) if e.is_not_found() => {
                if home_ap.as_deref() == Some(id.as_str()) {
                    ctx.store.home_delete(fs, ns, owner, &id).await?;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let ours =
            tags::is_home_of(&ap.tags, ns, owner) || tags::is_owned_by(&ap.tags, pass.id.uid);
        if !ours || ap.life_cycle_state == LifeCycleState::Deleting {
            continue;
        }
        match ctx.efs().delete_access_point(&id).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        if home_ap.as_deref() == Some(id.as_str()) {
            ctx.store.home_delete(fs, ns, owner, &id).await?;
        }
        pass.event(
            EventType::Normal,
            "DeletedAccessPoint",
            &format!(
                "{id} removed (deletionPolicy Delete; {owner}'s last workspace in {ns}); the files in {} stay on EFS",
                ap.root_directory.path
            ),
        )
        .await;
    }
    Ok(())
}

impl From<CloudError> for ReconcileError {
    fn from(e: CloudError) -> Self {
        ReconcileError::Cloud(e)
    }
}
