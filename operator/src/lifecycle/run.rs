//! The lifecycle loop: evaluates every workspace on each tick and records
//! the automatic intents (exactly once, by dedupe key).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    dormancy, effective, evaluate_running, pending_autostart, plan_starts, Clock, Decision,
    Dormancy, Input, Upcoming,
};
use crate::api::policy::LifecyclePolicySpec;
use crate::api::selector::Selector;
use crate::api::{Kind, WorkspaceSpec};
use crate::store::{EventType, InvolvedObject, NewIntent, PowerAction, Store, StoreError};

/// Tunables of the lifecycle loop.
#[derive(Clone, Debug)]
pub struct LifecycleOptions {
    /// How often every workspace is evaluated.
    pub tick: Duration,
    /// Starts per second the cloud allows Berth (paced UpdateService rate).
    pub start_rate: f64,
    /// How long a start takes until Running (Fargate: about a minute).
    pub start_lead: Duration,
    /// How far ahead autostarts are planned.
    pub window: Duration,
    /// A missed autostart (operator down) still fires this long after its time.
    pub grace: Duration,
    /// Where panics in one workspace's evaluation are counted
    /// (`berth_reconciles_total{controller="lifecycle",outcome="panic"}`).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Default for LifecycleOptions {
    fn default() -> Self {
        LifecycleOptions {
            tick: Duration::from_secs(5),
            start_rate: 4.0,
            start_lead: Duration::from_secs(90),
            window: Duration::from_secs(4 * 3600),
            grace: Duration::from_secs(15 * 60),
            metrics: None,
        }
    }
}

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Stops recorded by this replica.
    pub stopped: usize,
    /// Starts recorded by this replica.
    pub started: usize,
    /// Autostarts planned for later.
    pub planned: usize,
    /// Workspaces whose evaluation panicked (reported, then skipped).
    pub panicked: usize,
    /// Dormant workspaces deleted (`dormantDeletion`).
    pub deleted: usize,
}

#[derive(Clone)]
struct Ws {
    ns: String,
    name: String,
    uid: uuid::Uuid,
    spec: WorkspaceSpec,
}

/// Evaluates every workspace once at `now` and records what is due.
pub async fn tick(
    store: &Store,
    now: DateTime<Utc>,
    opts: &LifecycleOptions,
    source: &str,
) -> Result<TickReport, StoreError> {
    let (items, _) = store
        .object_list(Kind::Workspace, None, &Selector::default(), None)
        .await?;
    let (policies, _) = store
        .object_list(Kind::LifecyclePolicy, None, &Selector::default(), None)
        .await?;
    let policies: HashMap<String, LifecyclePolicySpec> = policies
        .into_iter()
        .filter_map(|p| {
            Some((
                p.metadata.namespace.clone(),
                serde_json::from_value(p.spec).ok()?,
            ))
        })
        .collect();
    let intents = store.intent_latest_all().await?;
    let activity = store.activity_all().await?;
    let mut report = TickReport::default();
    let mut upcoming = Vec::new();
    for o in items {
        if o.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(uid), Ok(spec)) = (
            o.metadata.uid,
            serde_json::from_value::<WorkspaceSpec>(o.spec.clone()),
        ) else {
            continue;
        };
        let ws = Ws {
            ns: o.metadata.namespace.clone(),
            name: o.metadata.name.clone(),
            uid,
            spec,
        };
        let eff = effective(&ws.spec, policies.get(&ws.ns));
        let input = Input {
            uid: uid.to_string(),
            spec: &ws.spec,
            effective: &eff,
            intent: intents.get(&uid),
            activity: activity.get(&uid),
        };
        // One workspace that cannot be evaluated must not stop the others.
        let created = o.metadata.creation_timestamp;
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (
                evaluate_running(now, &input),
                pending_autostart(now, &input, opts.grace),
                dormancy(&input, created),
            )
        }));
        let (decision, pending, dormant) = match decided {
            Ok(d) => d,
            Err(p) => {
                report.panicked += 1;
                let why = panic_message(p.as_ref());
                tracing::error!(workspace = %format!("{}/{}", ws.ns, ws.name), panic = %why, "lifecycle evaluation panicked; skipping this workspace");
                if let Some(m) = &opts.metrics {
                    m.reconciled("lifecycle", "panic", Duration::ZERO);
                }
                let involved = InvolvedObject {
                    kind: "Workspace".into(),
                    namespace: ws.ns.clone(),
                    name: ws.name.clone(),
                    uid: ws.uid,
                };
                let _ = store
                    .event_record(
                        &involved,
                        EventType::Warning,
                        "LifecycleError",
                        &format!("the lifecycle could not evaluate this workspace ({why}); its autostop and autostart are not applied"),
                        source,
                    )
                    .await;
                continue;
            }
        };
        match decision {
            Decision::Stop {
                reason,
                message,
                dedupe_key,
            } => {
                let intent = NewIntent {
                    action: PowerAction::Stop,
                    reason,
                    actor: "lifecycle",
                    message: &message,
                    dedupe_key: Some(&dedupe_key),
                    at: Some(now),
                    scheduled_for: None,
                };
                if record(store, &ws, &intent, source).await? {
                    report.stopped += 1;
                }
            }
            Decision::Start { .. } | Decision::None => {}
        }
        // A Dormant workspace is not started by its schedule.
        let pending = match dormant {
            Some(d) => {
                if dormancy_step(store, &ws, &eff, &d, now, revision_of(&o), source).await? {
                    report.deleted += 1;
                    continue;
                }
                pending.filter(|_| !d.is_dormant(now))
            }
            None => pending,
        };
        if let Some(t) = pending {
            let horizon = chrono::Duration::from_std(opts.window)
                .ok()
                .and_then(|w| now.checked_add_signed(w))
                .unwrap_or(now);
            if t <= horizon {
                upcoming.push(Upcoming {
                    key: ws,
                    scheduled: t,
                });
            }
        }
    }
    for (ws, scheduled, begin) in plan_starts(upcoming, opts.start_rate, opts.start_lead) {
        if now < begin {
            report.planned += 1;
            continue;
        }
        let key = format!("autostart:{}:{}", ws.uid, scheduled.timestamp());
        let early = (scheduled - now).num_seconds();
        let message = if early > 0 {
            format!("autostart scheduled for {} begins {early}s early so the workspace is Running on time", scheduled.format("%Y-%m-%d %H:%M UTC"))
        } else {
            format!(
                "autostart scheduled for {}",
                scheduled.format("%Y-%m-%d %H:%M UTC")
            )
        };
        let intent = NewIntent {
            action: PowerAction::Start,
            reason: "AutoStart",
            actor: "lifecycle",
            message: &message,
            dedupe_key: Some(&key),
            at: Some(now),
            scheduled_for: Some(scheduled),
        };
        if record(store, &ws, &intent, source).await? {
            report.started += 1;
        }
    }
    Ok(report)
}

fn revision_of(o: &crate::api::DynObject) -> Option<i64> {
    o.metadata.resource_version.as_deref()?.parse().ok()
}

fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Gives a stopped workspace's dormancy notices once each (the warning
/// ahead, becoming Dormant, the warning before deletion) and deletes it when
/// its `dormantDeletion` is up. Returns whether it was deleted.
async fn dormancy_step(
    store: &Store,
    ws: &Ws,
    eff: &super::Effective,
    d: &Dormancy,
    now: DateTime<Utc>,
    revision: Option<i64>,
    source: &str,
) -> Result<bool, StoreError> {
    let involved = InvolvedObject {
        kind: "Workspace".into(),
        namespace: ws.ns.clone(),
        name: ws.name.clone(),
        uid: ws.uid,
    };
    let threshold = eff.dormancy_threshold.clone().unwrap_or_default();
    let deletion = eff.dormant_deletion.clone().unwrap_or_default();
    let name = &ws.name;
    let mut notices: Vec<(String, EventType, &str, String)> = Vec::new();
    if now >= d.dormancy_warning_at() && !d.is_dormant(now) {
        notices.push((
            format!("dormancy-warning:{}", d.dormant_at.timestamp()),
            EventType::Warning,
            "DormancySoon",
            format!(
                "stopped and unused since {}: becomes Dormant at {} (the lifecycle policy's dormancyThreshold is {threshold}); start it or wake it (berth wake {name}) to keep it active",
                at(d.last_used),
                at(d.dormant_at)
            ),
        ));
    }
    if d.is_dormant(now) {
        notices.push((
            format!("dormant:{}", d.dormant_at.timestamp()),
            EventType::Normal,
            "Dormant",
            format!(
                "stopped and unused since {} (dormancyThreshold {threshold}): Dormant; schedules no longer start it, wake it first (berth wake {name}, or berth start --wake {name})",
                at(d.last_used)
            ),
        ));
    }
    if let (Some(delete_at), Some(warn_at)) = (d.delete_at, d.deletion_warning_at()) {
        if now >= warn_at && now < delete_at {
            notices.push((
                format!("deletion-warning:{}", delete_at.timestamp()),
                EventType::Warning,
                "DormantDeletionSoon",
                format!(
                    "Dormant since {}: deleted at {} (the lifecycle policy's dormantDeletion is {deletion}; with its deletionPolicy, the files of its home are kept) unless it is woken (berth wake {name})",
                    at(d.dormant_at),
                    at(delete_at)
                ),
            ));
        }
    }
    for (key, type_, reason, message) in notices {
        if store.notice_claim(ws.uid, &key).await? {
            store
                .event_record(&involved, type_, reason, &message, source)
                .await?;
        }
    }
    let Some(delete_at) = d.delete_at.filter(|t| now >= *t) else {
        return Ok(false);
    };
    // Woken since this tick listed it: not Dormant any more.
    if store
        .activity_get(ws.uid)
        .await?
        .is_some_and(|a| a.last_activity_at > d.last_used)
    {
        return Ok(false);
    }
    // Only the object this tick judged: a change since (a new intent, an
    // edit) is judged again next tick.
    match store
        .object_delete(Kind::Workspace, &ws.ns, &ws.name, revision)
        .await
    {
        Ok(_) => {
            store
                .event_record(
                    &involved,
                    EventType::Normal,
                    "DormantDeleted",
                    &format!(
                        "Dormant since {} for the lifecycle policy's dormantDeletion {deletion} (due {}): deleted with its deletionPolicy {:?}; the files of its home are kept",
                        at(d.dormant_at),
                        at(delete_at),
                        ws.spec.deletion_policy
                    ),
                    source,
                )
                .await?;
            Ok(true)
        }
        Err(StoreError::NotFound(_) | StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn record(
    store: &Store,
    ws: &Ws,
    intent: &NewIntent<'_>,
    source: &str,
) -> Result<bool, StoreError> {
    match store.intent_record(&ws.ns, &ws.name, intent).await {
        Ok(Some(_)) => {
            let involved = InvolvedObject {
                kind: "Workspace".into(),
                namespace: ws.ns.clone(),
                name: ws.name.clone(),
                uid: ws.uid,
            };
            store
                .event_record(
                    &involved,
                    EventType::Normal,
                    intent.reason,
                    intent.message,
                    source,
                )
                .await?;
            Ok(true)
        }
        // Another replica (or an earlier tick) already recorded it.
        Ok(None) => Ok(false),
        // Deleted or being deleted meanwhile.
        Err(StoreError::NotFound(_) | StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the lifecycle loop until `shutdown` resolves.
pub async fn run(
    store: Store,
    clock: Arc<dyn Clock>,
    opts: LifecycleOptions,
    source: String,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    loop {
        use futures_util::FutureExt as _;
        let ticked = std::panic::AssertUnwindSafe(tick(&store, clock.now(), &opts, &source))
            .catch_unwind()
            .await
            .unwrap_or_else(|p| {
                let why = panic_message(p.as_ref());
                tracing::error!(panic = %why, "lifecycle tick panicked; retrying next tick");
                if let Some(m) = &opts.metrics {
                    m.reconciled("lifecycle", "panic", Duration::ZERO);
                }
                Ok(TickReport::default())
            });
        match ticked {
            Ok(r) if r.stopped + r.started > 0 => tracing::info!(
                stopped = r.stopped,
                started = r.started,
                planned = r.planned,
                "lifecycle"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "lifecycle tick failed; retrying next tick"),
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(opts.tick) => {}
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
