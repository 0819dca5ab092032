//! Workspace lifecycle automation (seed: Coder's workspace lifecycle):
//! activity, autostop after inactivity, maximum lifetime, autostart on a
//! cron schedule in the owner's time zone, and the organization's policy.
//!
//! The decisions are pure functions of the time, the workspace, its policy,
//! its activity and its newest power intent ([`evaluate`]), driven by an
//! injectable [`Clock`], so tests never sleep. The loop ([`run`]) applies
//! them by recording power intents with dedupe keys, which makes every
//! automatic start and stop fire exactly once even with several replicas:
//! - autostop: `autostop:<uid>:<id of the intent that started this run>`;
//! - autostart: `autostart:<uid>:<scheduled time>`.
//!
//! "Last intent wins" then decides: an autostart does not undo a manual
//! stop made after it fired (the manual stop is newer), and re-applied YAML
//! records no intent at all.
//!
//! # Punctual autostart at scale
//! Many workspaces share a start time (`0 8 * * 1-5`) while AWS lets Berth
//! update about 5 services a second. [`plan_starts`] schedules the starts
//! backwards from their times: each starts at the latest moment that still
//! lets every start before its time finish, given the start rate and how
//! long a start takes — so each workspace is Running by its time and none
//! starts earlier than it must.

pub mod clock;
pub mod run;

pub use clock::{Clock, ManualClock, SystemClock};
pub use run::{run, LifecycleOptions};

use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};

use crate::api::policy::LifecyclePolicySpec;
use crate::api::validate;
use crate::api::WorkspaceSpec;
use crate::store::{Activity, PowerAction, PowerIntent};

pub use crate::api::workspace::EffectiveLifecycle as Effective;

fn dur(s: &Option<String>) -> Option<Duration> {
    s.as_deref().and_then(|d| validate::duration(d).ok())
}

/// Combines the workspace's schedule with its namespace's policy.
pub fn effective(ws: &WorkspaceSpec, policy: Option<&LifecyclePolicySpec>) -> Effective {
    let default_policy = LifecyclePolicySpec::default();
    let p = policy.unwrap_or(&default_policy);
    let mut e = Effective {
        max_lifetime: p.autostop.max_lifetime.clone(),
        max_after_inactivity: p.autostop.max_after_inactivity.clone(),
        autostart_allowed: p.autostart.allowed,
        autostart_days: p.autostart.days.clone(),
        require_active_version: p.require_active_version,
        dormancy_threshold: p.dormancy_threshold.clone(),
        dormant_deletion: p
            .dormant_deletion
            .clone()
            .filter(|_| p.dormancy_threshold.is_some()),
        dormancy_notice: p.dormancy_threshold.as_ref().map(|_| {
            p.dormancy_notice
                .clone()
                .unwrap_or_else(|| crate::api::policy::DEFAULT_DORMANCY_NOTICE.into())
        }),
        ..Default::default()
    };
    let own = ws.schedule.as_ref().and_then(|s| s.autostop.clone());
    let policy_default = p.autostop.default_after_inactivity.clone();
    let (mut after, mut source) = match (&policy_default, policy) {
        (Some(d), Some(_)) => (Some(d.clone()), "policy"),
        _ => (None, "none"),
    };
    if let Some(own) = own {
        if own.disabled {
            if p.allow_user_disable() {
                after = None;
                source = "workspace";
            } else {
                e.notes.push("autostop.disabled is ignored: the lifecycle policy does not allow users to disable auto-off".into());
            }
        } else if let Some(mine) = own.after_inactivity {
            if !p.autostop.allow_user_override {
                e.notes.push(format!(
                    "autostop.afterInactivity {mine} is ignored: the lifecycle policy does not allow users to change it"
                ));
            } else {
                let capped = match (
                    dur(&Some(mine.clone())),
                    dur(&p.autostop.max_after_inactivity),
                ) {
                    (Some(m), Some(max)) if m > max => {
                        let max_s = p.autostop.max_after_inactivity.clone().unwrap_or_default();
                        e.notes.push(format!("autostop.afterInactivity {mine} is longer than the policy's maximum {max_s}; {max_s} applies"));
                        max_s
                    }
                    _ => mine,
                };
                after = Some(capped);
                source = "workspace";
            }
        }
    }
    if ws.schedule.as_ref().is_some_and(|s| s.autostart.is_some()) && !p.autostart.allowed {
        e.notes
            .push("autostart is ignored: the lifecycle policy does not allow it".into());
    }
    if ws.template.version.is_some() && p.require_active_version {
        e.notes.push("template.version pin is ignored at start: the lifecycle policy requires the active version".into());
    }
    e.after_inactivity = after;
    e.source = source.into();
    e
}

impl LifecyclePolicySpec {
    fn allow_user_disable(&self) -> bool {
        self.autostop.allow_user_disable
    }
}

/// When the current run started: the newest start intent's time.
pub fn run_started(intent: &PowerIntent) -> Option<DateTime<Utc>> {
    intent.action.runs().then_some(intent.at)
}

/// How long after its autostop time a workspace is actually stopped:
/// activity reports are written in batches every few seconds
/// ([`crate::server`]'s activity flush), and one still in a batch must not
/// be missed.
pub const REPORT_SLACK: std::time::Duration = std::time::Duration::from_secs(10);

/// When inactivity stops a running workspace: the last activity since
/// `started` (the run's [`PowerIntent::idle_from`]) plus the threshold, and
/// not before an extension made during the run. `None` when auto-off is off.
pub fn autostop_at(
    eff: &Effective,
    started: DateTime<Utc>,
    activity: Option<&Activity>,
) -> Option<DateTime<Utc>> {
    let after = dur(&eff.after_inactivity)?;
    let last = activity
        .map(|a| a.last_activity_at.max(started))
        .unwrap_or(started);
    // Checked: a duration that overflows the calendar means "never".
    let mut at = last.checked_add_signed(chrono::Duration::from_std(after).ok()?)?;
    if let Some(ext) = activity
        .and_then(|a| a.extended_until)
        .filter(|e| *e > started)
    {
        at = at.max(ext);
    }
    Some(at)
}

/// When the maximum lifetime stops a running workspace.
pub fn lifetime_end(eff: &Effective, started: DateTime<Utc>) -> Option<DateTime<Utc>> {
    started.checked_add_signed(chrono::Duration::from_std(dur(&eff.max_lifetime)?).ok()?)
}

/// The next autostart strictly after `after`, in the schedule's time zone,
/// on a day the policy allows. `None` when there is none or it is not allowed.
pub fn next_autostart(
    ws: &WorkspaceSpec,
    eff: &Effective,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !eff.autostart_allowed {
        return None;
    }
    let a = ws.schedule.as_ref()?.autostart.as_ref()?;
    let cron = validate::cron(&a.cron).ok()?;
    let tz = validate::timezone(&a.timezone).ok()?;
    // Whole seconds: occurrences are at whole seconds, never at `after`'s fraction.
    let after = chrono::SubsecRound::trunc_subsecs(after, 0);
    let days: Vec<chrono::Weekday> = eff
        .autostart_days
        .iter()
        .filter_map(|d| d.parse().ok())
        .collect();
    let mut from = tz.from_utc_datetime(&after.naive_utc());
    for _ in 0..400 {
        let next = cron.find_next_occurrence(&from, false).ok()?;
        if days.is_empty() || days.contains(&next.weekday()) {
            return Some(next.with_timezone(&Utc));
        }
        from = next;
    }
    None
}

/// What the lifecycle wants done to one workspace now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing.
    None,
    /// Stop it (reason `AutoStop` or `MaxLifetime`), exactly once per run.
    Stop {
        /// `AutoStop` or `MaxLifetime`.
        reason: &'static str,
        /// For the event and the intent.
        message: String,
        /// Exactly-once key.
        dedupe_key: String,
    },
    /// Start it for the autostart scheduled at `scheduled`.
    Start {
        /// The scheduled time this start is for.
        scheduled: DateTime<Utc>,
        /// Exactly-once key.
        dedupe_key: String,
    },
}

/// Everything [`evaluate`] looks at for one workspace.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The workspace's uid.
    pub uid: String,
    /// Its spec.
    pub spec: &'a WorkspaceSpec,
    /// The values in force.
    pub effective: &'a Effective,
    /// Its newest power intent.
    pub intent: Option<&'a PowerIntent>,
    /// Its activity.
    pub activity: Option<&'a Activity>,
}

fn human(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs - secs % 60)).to_string()
}

/// The running-side decision for one workspace at `now`: autostop after
/// inactivity, or the maximum lifetime.
pub fn evaluate_running(now: DateTime<Utc>, i: &Input<'_>) -> Decision {
    let Some(intent) = i.intent.filter(|t| t.action.runs()) else {
        return Decision::None;
    };
    let started = intent.at;
    let idle_from = intent.idle_from();
    if let Some(end) = lifetime_end(i.effective, started) {
        if now >= end {
            return Decision::Stop {
                reason: "MaxLifetime",
                message: format!(
                    "running for {} reached the policy's maximum lifetime {}",
                    human(now - started),
                    i.effective.max_lifetime.clone().unwrap_or_default()
                ),
                dedupe_key: format!("autostop:{}:{}", i.uid, intent.id),
            };
        }
    }
    if let Some(at) = autostop_at(i.effective, idle_from, i.activity) {
        // Reports of the last few seconds may still be in a replica's batch.
        let slack = chrono::Duration::from_std(REPORT_SLACK).unwrap_or_default();
        if at.checked_add_signed(slack).is_some_and(|due| now >= due) {
            let last = i
                .activity
                .map(|a| a.last_activity_at.max(idle_from))
                .unwrap_or(idle_from);
            return Decision::Stop {
                reason: "AutoStop",
                message: format!(
                    "idle for {} (no activity since {}; threshold {} from {})",
                    human(now - last),
                    last.format("%Y-%m-%d %H:%M:%S UTC"),
                    i.effective.after_inactivity.clone().unwrap_or_default(),
                    i.effective.source
                ),
                dedupe_key: format!("autostop:{}:{}", i.uid, intent.id),
            };
        }
    }
    Decision::None
}

/// The next scheduled autostart of a stopped workspace at or after the
/// moment it was stopped (so an autostart that fired is not fired again,
/// and one scheduled while it ran is skipped).
pub fn pending_autostart(
    now: DateTime<Utc>,
    i: &Input<'_>,
    grace: Duration,
) -> Option<DateTime<Utc>> {
    let intent = i.intent?;
    if intent.action.runs() {
        return None;
    }
    // Occurrences from the stop on; a missed one (operator down) is still
    // started within `grace`.
    let from = intent
        .at
        .max(now.checked_sub_signed(chrono::Duration::from_std(grace).ok()?)?);
    // At or after `from`: strictly after the whole second before it (an
    // occurrence earlier in `from`'s own second is before it).
    let whole = chrono::SubsecRound::trunc_subsecs(from, 0);
    let after = if whole == from {
        whole.checked_sub_signed(chrono::Duration::seconds(1))?
    } else {
        whole
    };
    next_autostart(i.spec, i.effective, after)
}

/// A stopped workspace's dormancy (Coder's workspace dormancy), from the
/// policy's `dormancyThreshold`, `dormantDeletion` and `dormancyNotice`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dormancy {
    /// Its last use: the newest of its creation, its last start or stop and
    /// its last activity (waking it is activity).
    pub last_used: DateTime<Utc>,
    /// When it becomes (or became) Dormant.
    pub dormant_at: DateTime<Utc>,
    /// When, Dormant, it is deleted.
    pub delete_at: Option<DateTime<Utc>>,
    /// How long ahead of each the Warning event comes.
    pub notice: chrono::Duration,
}

impl Dormancy {
    /// Whether it is Dormant at `now`.
    pub fn is_dormant(&self, now: DateTime<Utc>) -> bool {
        now >= self.dormant_at
    }

    /// When the warning that it becomes Dormant is due (not before its last use).
    pub fn dormancy_warning_at(&self) -> DateTime<Utc> {
        self.dormant_at
            .checked_sub_signed(self.notice)
            .map_or(self.last_used, |t| t.max(self.last_used))
    }

    /// When the warning of its deletion is due (not before it is Dormant).
    pub fn deletion_warning_at(&self) -> Option<DateTime<Utc>> {
        let at = self.delete_at?;
        Some(
            at.checked_sub_signed(self.notice)
                .map_or(self.dormant_at, |t| t.max(self.dormant_at)),
        )
    }
}

/// The dormancy of a workspace that is stopped (its newest intent is a
/// stop, or it has none and `spec.running` is false); `None` when it runs
/// or the policy sets no `dormancyThreshold`. `created` is its creation time.
pub fn dormancy(i: &Input<'_>, created: Option<DateTime<Utc>>) -> Option<Dormancy> {
    let threshold = dur(&i.effective.dormancy_threshold)?;
    let stopped = i.intent.map_or(!i.spec.running, |t| !t.action.runs());
    if !stopped {
        return None;
    }
    let last_used = [
        created,
        i.intent.map(|t| t.at),
        i.activity.map(|a| a.last_activity_at),
    ]
    .into_iter()
    .flatten()
    .max()?;
    // Checked: a time past the calendar's end means "never".
    let dormant_at = last_used.checked_add_signed(chrono::Duration::from_std(threshold).ok()?)?;
    let delete_at = dur(&i.effective.dormant_deletion)
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| dormant_at.checked_add_signed(d));
    let notice = dur(&i.effective.dormancy_notice)
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .unwrap_or_else(|| chrono::Duration::hours(24));
    Some(Dormancy {
        last_used,
        dormant_at,
        delete_at,
        notice,
    })
}

/// The namespace's lifecycle policy (the first, as the lifecycle loop uses).
pub async fn policy_of(
    store: &crate::store::Store,
    ns: &str,
) -> Result<Option<LifecyclePolicySpec>, crate::store::StoreError> {
    let (policies, _) = store
        .object_list(
            crate::api::Kind::LifecyclePolicy,
            Some(ns),
            &crate::api::selector::Selector::default(),
            None,
        )
        .await?;
    Ok(policies
        .into_iter()
        .next()
        .and_then(|p| serde_json::from_value(p.spec).ok()))
}

/// The dormancy of a stored workspace now, as the lifecycle loop sees it.
pub async fn dormancy_of(
    store: &crate::store::Store,
    obj: &crate::api::DynObject,
) -> Result<Option<Dormancy>, crate::store::StoreError> {
    let Ok(spec) = serde_json::from_value::<WorkspaceSpec>(obj.spec.clone()) else {
        return Ok(None);
    };
    let policy = policy_of(store, &obj.metadata.namespace).await?;
    let eff = effective(&spec, policy.as_ref());
    if eff.dormancy_threshold.is_none() {
        return Ok(None);
    }
    let uid = obj.metadata.uid.unwrap_or_default();
    let intent = store.intent_latest(uid).await?;
    let activity = store.activity_get(uid).await?;
    let input = Input {
        uid: uid.to_string(),
        spec: &spec,
        effective: &eff,
        intent: intent.as_ref(),
        activity: activity.as_ref(),
    };
    Ok(dormancy(&input, obj.metadata.creation_timestamp))
}

/// An upcoming autostart to plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Upcoming<K> {
    /// Which workspace.
    pub key: K,
    /// Its scheduled time.
    pub scheduled: DateTime<Utc>,
}

/// Plans when to begin each upcoming start so that, at `rate` starts per
/// second and `lead` from a start to Running, every workspace is Running by
/// its scheduled time and none begins earlier than it must (backward
/// scheduling from the latest scheduled time).
pub fn plan_starts<K: Clone>(
    mut upcoming: Vec<Upcoming<K>>,
    rate: f64,
    lead: Duration,
) -> Vec<(K, DateTime<Utc>, DateTime<Utc>)> {
    upcoming.sort_by_key(|u| std::cmp::Reverse(u.scheduled));
    let gap = chrono::Duration::from_std(Duration::from_secs_f64(1.0 / rate.max(0.001)))
        .unwrap_or_default();
    let lead = chrono::Duration::from_std(lead).unwrap_or_default();
    let mut next_slot: Option<DateTime<Utc>> = None;
    let mut out = Vec::with_capacity(upcoming.len());
    for u in upcoming {
        let latest = u.scheduled - lead;
        let begin = match next_slot {
            Some(slot) => latest.min(slot - gap),
            None => latest,
        };
        next_slot = Some(begin);
        out.push((u.key, u.scheduled, begin));
    }
    out.reverse();
    out
}

/// What a start intent means for [`PowerAction`] bookkeeping in tests.
pub fn is_start(i: &PowerIntent) -> bool {
    i.action != PowerAction::Stop
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::Los_Angeles;

    #[test]
    fn autostarts_fall_on_whole_seconds_and_one_before_a_stop_in_its_second_is_not_pending() {
        let spec = ws("owner: a\ntemplate: {name: t}\nschedule:\n  autostart: {cron: '* * * * *', timezone: UTC}\n");
        let eff = effective(&spec, None);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            next_autostart(&spec, &eff, at("2026-12-04T03:05:59.900Z")),
            Some(at("2026-12-04T03:06:00Z"))
        );
        // Stopped at 03:06:00.9: the 03:06:00 occurrence came before the stop.
        let stop = PowerIntent {
            id: 1,
            action: PowerAction::Stop,
            reason: "Spec".into(),
            actor: "a".into(),
            message: String::new(),
            at: at("2026-12-04T03:06:00.900Z"),
            scheduled_for: None,
        };
        let input = Input {
            uid: "u".into(),
            spec: &spec,
            effective: &eff,
            intent: Some(&stop),
            activity: None,
        };
        assert_eq!(
            pending_autostart(stop.at, &input, Duration::from_secs(900)),
            Some(at("2026-12-04T03:07:00Z"))
        );
        // Stopped at exactly 03:06:00: that occurrence is at the stop, pending.
        let exact = PowerIntent {
            at: at("2026-12-04T03:06:00Z"),
            ..stop.clone()
        };
        let input = Input {
            intent: Some(&exact),
            ..input
        };
        assert_eq!(
            pending_autostart(exact.at, &input, Duration::from_secs(900)),
            Some(at("2026-12-04T03:06:00Z"))
        );
    }

    fn ws(yaml: &str) -> WorkspaceSpec {
        let v: serde_json::Value = crate::api::yaml::parse_documents(yaml).unwrap().remove(0);
        serde_json::from_value(v).unwrap()
    }

    fn policy(yaml: &str) -> LifecyclePolicySpec {
        let v: serde_json::Value = crate::api::yaml::parse_documents(yaml).unwrap().remove(0);
        serde_json::from_value(v).unwrap()
    }

    fn la(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Los_Angeles
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    const WEEKDAYS_8AM: &str = "owner: a\ntemplate: {name: t}\nschedule:\n  autostart: {cron: '0 8 * * 1-5', timezone: America/Los_Angeles}\n";

    #[test]
    fn autostart_is_at_8am_local_time_across_both_daylight_saving_changes() {
        let w = ws(WEEKDAYS_8AM);
        let e = effective(&w, None);
        // Spring forward: Sunday 2026-03-08. Friday 8:00 PST, then Monday 8:00 PDT.
        let fri = la(2026, 3, 6, 8, 0);
        assert_eq!(next_autostart(&w, &e, la(2026, 3, 6, 7, 0)), Some(fri));
        let mon = next_autostart(&w, &e, fri).unwrap();
        assert_eq!(mon, la(2026, 3, 9, 8, 0));
        assert_eq!(
            mon - fri,
            chrono::Duration::hours(71),
            "one hour less across spring-forward, no skipped day"
        );
        // Fall back: Sunday 2026-11-01.
        let fri = la(2026, 10, 30, 8, 0);
        let mon = next_autostart(&w, &e, fri).unwrap();
        assert_eq!(mon, la(2026, 11, 2, 8, 0));
        assert_eq!(
            mon - fri,
            chrono::Duration::hours(73),
            "one hour more across fall-back, no double start"
        );
        // Each weekday exactly once in a DST week.
        let mut t = la(2026, 3, 8, 0, 0);
        let mut days = Vec::new();
        for _ in 0..5 {
            t = next_autostart(&w, &e, t).unwrap();
            days.push(t);
        }
        assert_eq!(
            days,
            (9..=13).map(|d| la(2026, 3, d, 8, 0)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn policy_days_and_prohibition_restrict_autostart() {
        let w = ws(WEEKDAYS_8AM);
        let p = policy("autostart: {allowed: true, days: [Wed]}");
        let e = effective(&w, Some(&p));
        assert_eq!(
            next_autostart(&w, &e, la(2026, 3, 9, 9, 0)),
            Some(la(2026, 3, 11, 8, 0))
        );
        let p = policy("autostart: {allowed: false}");
        let e = effective(&w, Some(&p));
        assert_eq!(next_autostart(&w, &e, la(2026, 3, 9, 9, 0)), None);
        assert!(e.notes.iter().any(|n| n.contains("autostart is ignored")));
    }

    #[test]
    fn a_policy_that_forbids_overrides_ignores_the_workspace_setting_and_says_why() {
        let w = ws("owner: a\ntemplate: {name: t}\nschedule: {autostop: {afterInactivity: 8h}}\n");
        let p = policy("autostop: {defaultAfterInactivity: 2h, allowUserOverride: false}");
        let e = effective(&w, Some(&p));
        assert_eq!(e.after_inactivity.as_deref(), Some("2h"));
        assert_eq!(e.source, "policy");
        assert!(
            e.notes[0].contains("does not allow users to change it"),
            "{:?}",
            e.notes
        );
        let w = ws("owner: a\ntemplate: {name: t}\nschedule: {autostop: {disabled: true}}\n");
        let e = effective(&w, Some(&p));
        assert_eq!(e.after_inactivity.as_deref(), Some("2h"));
        assert!(e.notes[0].contains("disable"));
        let p = policy("autostop: {defaultAfterInactivity: 2h, maxAfterInactivity: 4h}");
        let w = ws("owner: a\ntemplate: {name: t}\nschedule: {autostop: {afterInactivity: 8h}}\n");
        assert_eq!(
            effective(&w, Some(&p)).after_inactivity.as_deref(),
            Some("4h")
        );
    }

    fn intent(id: i64, action: PowerAction, at: DateTime<Utc>) -> PowerIntent {
        PowerIntent {
            id,
            action,
            reason: "Manual".into(),
            actor: "a".into(),
            message: String::new(),
            at,
            scheduled_for: None,
        }
    }

    #[test]
    fn an_early_autostart_is_not_idle_before_its_scheduled_time() {
        let e = effective(
            &ws("owner: a\ntemplate: {name: t}\nschedule: {autostop: {afterInactivity: 1m}}\n"),
            None,
        );
        let eight = la(2026, 3, 9, 8, 0);
        let begun = eight - chrono::Duration::seconds(90);
        let i = PowerIntent {
            reason: "AutoStart".into(),
            scheduled_for: Some(eight),
            ..intent(7, PowerAction::Start, begun)
        };
        let spec = ws("owner: a\ntemplate: {name: t}\n");
        let input = Input {
            uid: "u".into(),
            spec: &spec,
            effective: &e,
            intent: Some(&i),
            activity: None,
        };
        // Running at 7:58:30 with a one-minute threshold: still up at 8:00:30.
        for secs in [0, 60, 89, 120] {
            assert_eq!(
                evaluate_running(begun + chrono::Duration::seconds(secs), &input),
                Decision::None,
                "{secs}s after the early start"
            );
        }
        assert_eq!(
            autostop_at(&e, i.idle_from(), None),
            Some(eight + chrono::Duration::minutes(1))
        );
        let late = eight
            + chrono::Duration::minutes(1)
            + chrono::Duration::from_std(REPORT_SLACK).unwrap();
        assert!(matches!(
            evaluate_running(late, &input),
            Decision::Stop {
                reason: "AutoStop",
                ..
            }
        ));
        // A start that was not early counts from the start.
        let manual = intent(8, PowerAction::Start, eight);
        assert_eq!(manual.idle_from(), eight);
    }

    #[test]
    fn a_duration_too_large_for_the_calendar_means_never_and_does_not_panic() {
        // As if validation had been bypassed (written to the store directly).
        let w = ws(
            "owner: a\ntemplate: {name: t}\nschedule: {autostop: {afterInactivity: 3000000000h}}\n",
        );
        let mut e = effective(&w, None);
        e.max_lifetime = Some("3000000000h".into());
        let t0 = la(2026, 5, 4, 9, 0);
        assert_eq!(autostop_at(&e, t0, None), None);
        assert_eq!(lifetime_end(&e, t0), None);
        // Even a value under the validation bound near the end of time is checked.
        e.after_inactivity = Some("87600h".into());
        assert_eq!(autostop_at(&e, DateTime::<Utc>::MAX_UTC, None), None);
        e.after_inactivity = Some("3000000000h".into());
        let started = intent(1, PowerAction::Start, t0);
        let i = Input {
            uid: "u".into(),
            spec: &w,
            effective: &e,
            intent: Some(&started),
            activity: None,
        };
        assert_eq!(
            evaluate_running(t0 + chrono::Duration::days(3650), &i),
            Decision::None
        );
    }

    #[test]
    fn idle_past_the_threshold_stops_counting_from_the_start_when_there_was_no_activity() {
        let w = ws("owner: a\ntemplate: {name: t}\nschedule: {autostop: {afterInactivity: 2h}}\n");
        let e = effective(&w, None);
        let t0 = la(2026, 5, 4, 9, 0);
        let started = intent(1, PowerAction::Start, t0);
        let i = Input {
            uid: "u".into(),
            spec: &w,
            effective: &e,
            intent: Some(&started),
            activity: None,
        };
        assert_eq!(
            evaluate_running(t0 + chrono::Duration::minutes(119), &i),
            Decision::None
        );
        match evaluate_running(t0 + chrono::Duration::minutes(121), &i) {
            Decision::Stop {
                reason: "AutoStop",
                message,
                dedupe_key,
            } => {
                assert!(message.contains("idle for 2h 1m"), "{message}");
                assert_eq!(dedupe_key, "autostop:u:1");
            }
            other => panic!("{other:?}"),
        }
        // Activity pushes it out; an extension beyond that too.
        let act = Activity {
            last_activity_at: t0 + chrono::Duration::hours(1),
            source: "ssh".into(),
            extended_until: None,
        };
        let i2 = Input {
            activity: Some(&act),
            ..i.clone()
        };
        assert_eq!(
            autostop_at(&e, t0, Some(&act)),
            Some(t0 + chrono::Duration::hours(3))
        );
        assert_eq!(
            evaluate_running(t0 + chrono::Duration::minutes(150), &i2),
            Decision::None
        );
        let ext = Activity {
            extended_until: Some(t0 + chrono::Duration::hours(5)),
            ..act
        };
        assert_eq!(
            autostop_at(&e, t0, Some(&ext)),
            Some(t0 + chrono::Duration::hours(5))
        );
    }

    #[test]
    fn backward_planning_makes_every_start_punctual_and_none_earlier_than_needed() {
        let t = la(2026, 5, 4, 8, 0);
        let up: Vec<Upcoming<usize>> = (0..100)
            .map(|k| Upcoming {
                key: k,
                scheduled: t,
            })
            .collect();
        let plan = plan_starts(up, 5.0, Duration::from_secs(60));
        let begins: Vec<DateTime<Utc>> = plan.iter().map(|p| p.2).collect();
        // The last start begins exactly lead before 8:00; 100 starts at 5/s span 19.8 s before it.
        assert_eq!(
            *begins.iter().max().unwrap(),
            t - chrono::Duration::seconds(60)
        );
        assert_eq!(
            *begins.iter().min().unwrap(),
            t - chrono::Duration::seconds(60) - chrono::Duration::milliseconds(19_800)
        );
        // A lone later start is not pulled earlier by the crowd.
        let up = vec![
            Upcoming {
                key: 0,
                scheduled: t,
            },
            Upcoming {
                key: 1,
                scheduled: t + chrono::Duration::hours(1),
            },
        ];
        let plan = plan_starts(up, 5.0, Duration::from_secs(60));
        assert_eq!(
            plan[1].2,
            t + chrono::Duration::hours(1) - chrono::Duration::seconds(60)
        );
        assert_eq!(plan[0].2, t - chrono::Duration::seconds(60));
    }
}
