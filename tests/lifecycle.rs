//! Lifecycle automation end to end, under a controlled clock: a real
//! PostgreSQL, the workspace controller on the sim, and the lifecycle loop
//! ticked by hand.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth::api::meta::ConditionStatus;
use berth::api::Kind;
use berth::lifecycle::run::tick;
use berth::lifecycle::{Clock, LifecycleOptions, ManualClock};
use berth::store::{NewIntent, PowerAction, Store};
use berth_cloud::ops::Operation;
use berth_cloud::sim::{Outcome, Sim};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use common::sim::*;
use reqwest::StatusCode;

fn lopts() -> LifecycleOptions {
    LifecycleOptions {
        start_lead: Duration::from_secs(90),
        start_rate: 4.0,
        ..LifecycleOptions::default()
    }
}

async fn setup(policy: Option<&str>) -> (Store, Sim, ManualClock, Running) {
    let store = common::store().await;
    let sim = fast_sim();
    let clock = ManualClock::new(Utc::now());
    let mut c = ctx(&store, &sim);
    c.clock = Arc::new(clock.clone());
    let running = spawn_controller(Arc::new(c));
    apply_yaml(&store, common::TEMPLATE).await;
    if let Some(p) = policy {
        apply_yaml(&store, &format!("apiVersion: berth.dev/v1alpha1\nkind: LifecyclePolicy\nmetadata: {{name: org}}\nspec:\n{p}")).await;
    }
    (store, sim, clock, running)
}

async fn uid(store: &Store, name: &str) -> uuid::Uuid {
    store
        .object_get(Kind::Workspace, "default", name)
        .await
        .unwrap()
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

fn mins(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

#[tokio::test]
async fn an_idle_workspace_past_its_threshold_is_stopped_exactly_once_and_activity_pushes_it_out() {
    let (store, sim, clock, c) = setup(None).await;
    apply_yaml(
        &store,
        &common::workspace(
            "idle",
            "ivy",
            "  schedule: {autostop: {afterInactivity: 2h}}\n",
        ),
    )
    .await;
    let st = wait_until(&store, "idle", "Ready", is_running).await;
    let t0 = clock.now();
    let stop_at = st.autostop_at.expect("autostopAt is shown");
    assert!(
        stop_at > t0 + mins(115) && stop_at < t0 + mins(125),
        "{stop_at} vs {t0}"
    );

    // Activity one hour in pushes autostop to three hours.
    store
        .activity_report(
            uid(&store, "idle").await,
            t0 + mins(60),
            "ssh",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    clock.set(t0 + mins(150));
    assert_eq!(
        tick(&store, clock.now(), &lopts(), "a")
            .await
            .unwrap()
            .stopped,
        0
    );
    clock.set(t0 + mins(185));
    assert_eq!(
        tick(&store, clock.now(), &lopts(), "a")
            .await
            .unwrap()
            .stopped,
        1
    );
    assert_eq!(
        tick(&store, clock.now(), &lopts(), "b")
            .await
            .unwrap()
            .stopped,
        0,
        "exactly once"
    );
    let st = wait_until(&store, "idle", "Stopped", is_stopped).await;
    assert_eq!(
        st.last_transition.as_ref().map(|t| t.reason.as_str()),
        Some("AutoStop")
    );
    assert_eq!(store.intent_count("AutoStop").await.unwrap(), 1);
    let ev = events(&store, "idle").await;
    let auto = ev
        .iter()
        .find(|(r, _)| r == "AutoStop")
        .expect("AutoStop event");
    assert!(auto.1.contains("idle for 2h"), "{}", auto.1);
    assert_eq!(
        sim.service(CLUSTER, &family(&store, "idle").await)
            .unwrap()
            .desired_count,
        0
    );

    // Re-applying the same YAML records no intent: it stays stopped.
    apply_yaml(
        &store,
        &common::workspace(
            "idle",
            "ivy",
            "  schedule: {autostop: {afterInactivity: 2h}}\n",
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(is_stopped(&status(&store, "idle").await));
    assert_eq!(
        sim.service(CLUSTER, &family(&store, "idle").await)
            .unwrap()
            .desired_count,
        0
    );
    c.stop().await;
}

#[tokio::test]
async fn the_maximum_lifetime_stops_a_busy_workspace() {
    let (store, _sim, clock, c) = setup(Some(
        "  autostop: {defaultAfterInactivity: 1h, maxLifetime: 12h}\n",
    ))
    .await;
    apply_yaml(&store, &common::workspace("busy", "bea", "")).await;
    wait_until(&store, "busy", "Ready", is_running).await;
    let t0 = clock.now();
    let id = uid(&store, "busy").await;
    for h in 1..=12 {
        store
            .activity_report(
                id,
                t0 + chrono::Duration::hours(h) - mins(10),
                "vscode",
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        clock.set(t0 + chrono::Duration::hours(h) - mins(5));
        assert_eq!(
            tick(&store, clock.now(), &lopts(), "a")
                .await
                .unwrap()
                .stopped,
            0,
            "hour {h}"
        );
    }
    clock.set(t0 + chrono::Duration::hours(12) + mins(1));
    assert_eq!(
        tick(&store, clock.now(), &lopts(), "a")
            .await
            .unwrap()
            .stopped,
        1
    );
    let st = wait_until(&store, "busy", "Stopped", is_stopped).await;
    assert_eq!(st.last_transition.unwrap().reason, "MaxLifetime");
    c.stop().await;
}

#[tokio::test]
async fn a_policy_that_forbids_user_overrides_ignores_the_workspace_setting_and_says_why() {
    let (store, _sim, clock, c) = setup(Some(
        "  autostop: {defaultAfterInactivity: 1h, allowUserOverride: false}\n",
    ))
    .await;
    apply_yaml(
        &store,
        &common::workspace(
            "own",
            "oli",
            "  schedule: {autostop: {afterInactivity: 8h}}\n",
        ),
    )
    .await;
    let st = wait_until(&store, "own", "Ready", is_running).await;
    let eff = st.lifecycle.expect("effective lifecycle in status");
    assert_eq!(
        (eff.after_inactivity.as_deref(), eff.source.as_str()),
        (Some("1h"), "policy")
    );
    assert!(
        eff.notes
            .iter()
            .any(|n| n.contains("does not allow users to change it")),
        "{:?}",
        eff.notes
    );
    clock.advance(mins(61));
    assert_eq!(
        tick(&store, clock.now(), &lopts(), "a")
            .await
            .unwrap()
            .stopped,
        1
    );
    c.stop().await;
}

fn next_monday_7am_la(after: DateTime<Utc>) -> DateTime<Utc> {
    let tz = chrono_tz::America::Los_Angeles;
    let local = after.with_timezone(&tz).date_naive();
    let mut d = local + chrono::Duration::days(1);
    while d.weekday() != chrono::Weekday::Mon {
        d += chrono::Duration::days(1);
    }
    tz.from_local_datetime(&d.and_hms_opt(7, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn autostart_begins_just_early_enough_and_a_later_manual_stop_is_not_undone() {
    let (store, _sim, clock, c) = setup(None).await;
    let sched = "  running: false\n  schedule:\n    autostart: {cron: '0 8 * * 1-5', timezone: America/Los_Angeles}\n";
    apply_yaml(&store, &common::workspace("early", "eve", sched)).await;
    wait_until(&store, "early", "Stopped", is_stopped).await;
    let seven = next_monday_7am_la(Utc::now());
    let eight = seven + mins(60);
    clock.set(seven);
    store
        .object_touch(Kind::Workspace, "default", "early")
        .await
        .unwrap();
    wait_until(&store, "early", "nextAutostartAt", |s| {
        s.next_autostart_at == Some(eight)
    })
    .await;
    // Lead 90 s: nothing at 7:58:00, the start at 7:58:30.
    clock.set(eight - chrono::Duration::seconds(120));
    assert_eq!(
        tick(&store, clock.now(), &lopts(), "a")
            .await
            .unwrap()
            .started,
        0
    );
    clock.set(eight - chrono::Duration::seconds(90));
    assert_eq!(
        tick(&store, clock.now(), &lopts(), "a")
            .await
            .unwrap()
            .started,
        1
    );
    let st = wait_until(&store, "early", "Running", is_running).await;
    assert_eq!(st.last_transition.unwrap().reason, "AutoStart");
    // The autostart that fired is not "next" any more: tomorrow's is.
    assert_eq!(
        st.next_autostart_at,
        Some(eight + chrono::Duration::days(1)),
        "nextAutostartAt moves on once the run it planned has begun"
    );
    // The owner stops it at 8:05: the autostart that already fired does not undo that.
    clock.set(eight + mins(5));
    let stop = NewIntent {
        at: Some(clock.now()),
        ..NewIntent::manual(PowerAction::Stop, "eve")
    };
    store
        .intent_record("default", "early", &stop)
        .await
        .unwrap();
    wait_until(&store, "early", "Stopped", is_stopped).await;
    for m in [6, 10, 14] {
        clock.set(eight + mins(m));
        assert_eq!(
            tick(&store, clock.now(), &lopts(), "a")
                .await
                .unwrap()
                .started,
            0,
            "minute {m}"
        );
    }
    // The next one is Tuesday 8:00.
    store
        .object_touch(Kind::Workspace, "default", "early")
        .await
        .unwrap();
    let st = wait_until(&store, "early", "next autostart tomorrow", |s| {
        s.next_autostart_at == Some(eight + chrono::Duration::days(1))
    })
    .await;
    assert!(is_stopped(&st));
    assert_eq!(store.intent_count("AutoStart").await.unwrap(), 1);
    c.stop().await;
}

#[tokio::test]
async fn an_early_autostart_is_not_stopped_as_idle_before_its_scheduled_time() {
    let (store, _sim, clock, c) = setup(None).await;
    let sched = "  running: false\n  schedule:\n    autostart: {cron: '0 8 * * 1-5', timezone: America/Los_Angeles}\n    autostop: {afterInactivity: 1m}\n";
    apply_yaml(&store, &common::workspace("dawn", "dan", sched)).await;
    wait_until(&store, "dawn", "Stopped", is_stopped).await;
    let eight = next_monday_7am_la(Utc::now()) + mins(60);
    // Lead 90 s: the start is recorded at 7:58:30.
    clock.set(eight - chrono::Duration::seconds(90));
    assert_eq!(
        tick(&store, clock.now(), &lopts(), "a")
            .await
            .unwrap()
            .started,
        1
    );
    wait_until(&store, "dawn", "Running", is_running).await;
    // Nobody has touched it yet, but its day begins at 8:00: not idle before
    // 8:01 (plus the report slack), however early it started.
    for secs in [-30, 0, 45, 60] {
        clock.set(eight + chrono::Duration::seconds(secs));
        assert_eq!(
            tick(&store, clock.now(), &lopts(), "a")
                .await
                .unwrap()
                .stopped,
            0,
            "{secs}s from 8:00"
        );
    }
    store
        .object_touch(Kind::Workspace, "default", "dawn")
        .await
        .unwrap();
    wait_until(&store, "dawn", "autostopAt from 8:00", |s| {
        s.autostop_at == Some(eight + mins(1))
    })
    .await;
    clock.set(eight + chrono::Duration::seconds(75));
    assert_eq!(
        tick(&store, clock.now(), &lopts(), "a")
            .await
            .unwrap()
            .stopped,
        1
    );
    wait_until(&store, "dawn", "Stopped", is_stopped).await;
    c.stop().await;
}

#[tokio::test]
async fn a_template_update_shows_outdated_and_is_applied_at_the_next_autostart() {
    let (store, sim, clock, c) = setup(None).await;
    let sched = "  schedule:\n    autostart: {cron: '0 8 * * 1-5', timezone: America/Los_Angeles}\n    autostop: {afterInactivity: 1h}\n";
    apply_yaml(&store, &common::workspace("upd", "uma", sched)).await;
    wait_until(&store, "upd", "Ready", is_running).await;
    apply_yaml(&store, &common::TEMPLATE.replace("dev:1", "dev:2")).await;
    wait_until(&store, "upd", "Outdated", |s| {
        condition(s, "Outdated").0 == ConditionStatus::True
    })
    .await;
    // Idle → stopped; the next autostart starts version 2.
    clock.advance(mins(61));
    assert_eq!(
        tick(&store, clock.now(), &lopts(), "a")
            .await
            .unwrap()
            .stopped,
        1
    );
    wait_until(&store, "upd", "Stopped", is_stopped).await;
    let eight = next_monday_7am_la(clock.now()) + mins(60);
    clock.set(eight - chrono::Duration::seconds(30));
    assert_eq!(
        tick(&store, clock.now(), &lopts(), "a")
            .await
            .unwrap()
            .started,
        1
    );
    let st = wait_until(&store, "upd", "Running v2", |s| {
        is_running(s) && s.template_version == Some(2)
    })
    .await;
    assert_eq!(condition(&st, "Outdated").0, ConditionStatus::False);
    let td = sim
        .task_definition(
            &sim.service(CLUSTER, &family(&store, "upd").await)
                .unwrap()
                .task_definition,
        )
        .unwrap();
    assert_eq!(td.container_definitions[0].image, "ghcr.io/example/dev:2");
    c.stop().await;
}

#[tokio::test]
async fn extend_pushes_autostop_out_within_the_policy_limit() {
    let api = common::Api::start().await;
    api.apply(&api.admin, common::TEMPLATE).await;
    let policy = "apiVersion: berth.dev/v1alpha1\nkind: LifecyclePolicy\nmetadata: {name: org}\nspec: {autostop: {defaultAfterInactivity: 1h, maxAfterInactivity: 8h}}\n";
    assert_eq!(api.apply(&api.admin, policy).await.status(), StatusCode::OK);
    let alice = api.user("alice").await;
    api.apply(&alice, &common::workspace("ext", "alice", ""))
        .await;
    let url = format!("{}/namespaces/default/workspaces/ext/extend", api.base);
    let r = api
        .client
        .post(&url)
        .bearer_auth(&alice)
        .json(&serde_json::json!({"duration": "10h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("longer than the lifecycle policy allows (8h)"));
    let r = api
        .client
        .post(&url)
        .bearer_auth(&alice)
        .json(&serde_json::json!({"duration": "3h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    let time = |k: &str| {
        DateTime::parse_from_rfc3339(body[k].as_str().unwrap_or_else(|| panic!("{k} in {body}")))
            .unwrap()
            .with_timezone(&Utc)
    };
    // The answer says when autostop now is: the extension, the later one.
    assert_eq!(time("autostopAt"), time("autostopNotBefore"));
    assert!(
        (time("autostopAt") - Utc::now() - mins(180))
            .num_seconds()
            .abs()
            < 30
    );
    let bob = api.user("bob").await;
    let r = api
        .client
        .post(&url)
        .bearer_auth(&bob)
        .json(&serde_json::json!({"duration": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "another user cannot extend it"
    );
    // Running since now with 1h inactivity: the extension keeps it until 3h.
    let now = Utc::now();
    assert_eq!(
        tick(&api.store, now + mins(150), &lopts(), "a")
            .await
            .unwrap()
            .stopped,
        0
    );
    assert_eq!(
        tick(&api.store, now + mins(185), &lopts(), "a")
            .await
            .unwrap()
            .stopped,
        1
    );
    // Stopped: nothing to extend, and it says so.
    let r = api
        .client
        .post(&url)
        .bearer_auth(&alice)
        .json(&serde_json::json!({"duration": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("workspaces/ext is stopped") && text.contains("berth start ext"),
        "{text}"
    );
}

#[tokio::test]
async fn an_extension_shorter_than_the_threshold_reports_the_later_autostop() {
    let api = common::Api::start().await;
    api.apply(&api.admin, common::TEMPLATE).await;
    let alice = api.user("alice").await;
    let sched = "  schedule:\n    autostop: {afterInactivity: 2h}\n";
    api.apply(&alice, &common::workspace("short", "alice", sched))
        .await;
    let url = format!("{}/namespaces/default/workspaces/short/extend", api.base);
    let r = api
        .client
        .post(&url)
        .bearer_auth(&alice)
        .json(&serde_json::json!({"duration": "30m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    let at = DateTime::parse_from_rfc3339(body["autostopAt"].as_str().unwrap()).unwrap();
    let floor = DateTime::parse_from_rfc3339(body["autostopNotBefore"].as_str().unwrap()).unwrap();
    assert!(at > floor, "the 2h threshold ends after +30m: {body}");
    assert!(
        (at.with_timezone(&Utc) - Utc::now() - mins(120))
            .num_seconds()
            .abs()
            < 30,
        "{body}"
    );
    // A workspace without autostop has nothing to extend.
    api.apply(&alice, &common::workspace("noauto", "alice", ""))
        .await;
    let r = api
        .client
        .post(format!(
            "{}/namespaces/default/workspaces/noauto/extend",
            api.base
        ))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"duration": "30m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("has no autostop"));
}

#[tokio::test]
async fn activity_is_accepted_from_the_agent_token_and_the_owner_batched_and_never_lost() {
    let api = common::Api::start().await;
    api.apply(&api.admin, common::TEMPLATE).await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    api.apply(&alice, &common::workspace("act", "alice", ""))
        .await;
    let id = uid(&api.store, "act").await;
    api.store
        .agent_token_set(id, "berth_agent_secret")
        .await
        .unwrap();
    let url = format!("{}/namespaces/default/workspaces/act/activity", api.base);
    let post = |token: String, kind: &'static str| {
        let (client, url) = (api.client.clone(), url.clone());
        async move {
            client
                .post(&url)
                .bearer_auth(token)
                .json(&serde_json::json!({"kind": kind}))
                .send()
                .await
                .unwrap()
        }
    };
    let r = post("berth_agent_secret".into(), "ssh").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["recorded"],
        true
    );
    // A burst of heartbeats is one write.
    let rev = api.store.revision_current().await.unwrap();
    for _ in 0..50 {
        assert_eq!(
            post("berth_agent_secret".into(), "vscode").await.status(),
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(
        api.store.revision_current().await.unwrap(),
        rev,
        "batched reports write no object"
    );
    let first = api.store.activity_get(id).await.unwrap().unwrap();
    assert_eq!(first.source, "ssh");
    // ... but the newest report is not lost: it is written with the next batch.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let a = api.store.activity_get(id).await.unwrap().unwrap();
        if a.source == "vscode" {
            assert!(
                a.last_activity_at > first.last_activity_at,
                "the time moved forward"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the batched report never landed: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // An unknown token is refused alike for existing and missing workspaces.
    let missing = format!("{}/namespaces/default/workspaces/nope/activity", api.base);
    let r = api
        .client
        .post(&missing)
        .bearer_auth("berth_agent_wrong")
        .json(&serde_json::json!({"kind": "ssh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no existence oracle");
    assert_eq!(
        post(alice.clone(), "manual").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(post(bob, "manual").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        post("berth_agent_wrong".into(), "ssh").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(alice, "dance").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn two_replicas_stop_200_idle_workspaces_exactly_once() {
    let store = common::store().await;
    let sim = fast_sim();
    let clock = ManualClock::new(Utc::now());
    let mut a = ctx(&store, &sim);
    a.clock = Arc::new(clock.clone());
    let mut b = ctx(&store, &sim);
    b.clock = Arc::new(clock.clone());
    let (ca, cb) = (spawn_controller(Arc::new(a)), spawn_controller(Arc::new(b)));
    apply_yaml(&store, common::TEMPLATE).await;
    let mut yaml = String::new();
    for i in 0..200 {
        yaml.push_str(&common::workspace(
            &format!("w{i:03}"),
            &format!("u{}", i % 20),
            "  schedule: {autostop: {afterInactivity: 30m}}\n",
        ));
        yaml.push_str("---\n");
    }
    apply_yaml(&store, &yaml).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let n = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM objects WHERE kind='Workspace' AND status->>'phase' = 'Running'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if n == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n} running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = sim.calls().get(Operation::UpdateService, Outcome::Ok);
    clock.advance(mins(31));
    // Two replicas' lifecycle loops tick at the same moment, several times.
    let now = clock.now();
    let o = lopts();
    for _ in 0..3 {
        let (ra, rb) = tokio::join!(tick(&store, now, &o, "a"), tick(&store, now, &o, "b"));
        let _ = (ra.unwrap(), rb.unwrap());
    }
    assert_eq!(
        store.intent_count("AutoStop").await.unwrap(),
        200,
        "each stopped exactly once"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let n = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM objects WHERE kind='Workspace' AND status->>'phase' = 'Stopped'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if n == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n} stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ca.stop().await;
    cb.stop().await;
    assert_eq!(
        sim.calls().get(Operation::UpdateService, Outcome::Ok) - before,
        200,
        "one cloud write per stop"
    );
}

#[tokio::test]
async fn a_workspace_with_a_huge_duration_written_past_validation_does_not_stop_the_loop_for_others(
) {
    let (store, _sim, clock, c) = setup(None).await;
    for name in ["huge", "idle"] {
        apply_yaml(
            &store,
            &common::workspace(
                name,
                "ivy",
                "  schedule: {autostop: {afterInactivity: 2h}}\n",
            ),
        )
        .await;
    }
    wait_until(&store, "huge", "Ready", is_running).await;
    wait_until(&store, "idle", "Ready", is_running).await;
    // Validation refuses it at apply; write it into the store directly.
    sqlx::query(
        "UPDATE objects SET spec = jsonb_set(spec, '{schedule,autostop,afterInactivity}', '\"3000000000h\"') WHERE kind = 'Workspace' AND name = 'huge'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store
        .object_touch(Kind::Workspace, "default", "huge")
        .await
        .unwrap();
    let t0 = clock.now();
    clock.set(t0 + mins(125));
    let r = tick(&store, clock.now(), &lopts(), "a").await.unwrap();
    assert_eq!(
        (r.stopped, r.panicked),
        (1, 0),
        "idle stops on time; huge means never"
    );
    let st = wait_until(&store, "idle", "Stopped", is_stopped).await;
    assert_eq!(
        st.last_transition.as_ref().map(|t| t.reason.as_str()),
        Some("AutoStop")
    );
    // The huge one still runs and its status shows no autostop, without a panic.
    let huge = status(&store, "huge").await;
    assert!(is_running(&huge));
    c.stop().await;
}

/// The events of `name` with `reason`, with their counts.
async fn event_counts(store: &Store, name: &str, reason: &str) -> Vec<(String, i32)> {
    store
        .event_list(Kind::Workspace, "default", name, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.reason == reason)
        .map(|e| (e.message, e.count))
        .collect()
}

/// Dormancy (Coder's): a workspace stopped and unused for the policy's
/// `dormancyThreshold` is warned a `dormancyNotice` ahead, becomes Dormant
/// (phase, condition, event), is not started by its schedule, is warned
/// again before `dormantDeletion` and then deleted with its deletionPolicy
/// (Retain: its access point, and so its home, stays). Each notice once,
/// whatever the number of ticks and replicas.
#[tokio::test]
async fn a_stopped_unused_workspace_becomes_dormant_is_not_autostarted_and_is_deleted_keeping_its_home(
) {
    let (store, sim, clock, c) = setup(Some(
        "  dormancyThreshold: 72h\n  dormantDeletion: 48h\n  dormancyNotice: 24h\n",
    ))
    .await;
    // It ran once (so it has an access point, and a home), then stopped.
    apply_yaml(&store, &common::workspace("old", "olga", "")).await;
    wait_until(&store, "old", "Ready", is_running).await;
    assert_eq!(sim.access_points("fs-1").len(), 1);
    apply_yaml(
        &store,
        &common::workspace("old", "olga", "  running: false\n"),
    )
    .await;
    let st = wait_until(&store, "old", "Stopped", |s| {
        is_stopped(s) && s.dormant_at.is_some()
    })
    .await;
    let dormant_at = st.dormant_at.unwrap();
    let t0 = dormant_at - chrono::Duration::hours(72);
    assert!((t0 - Utc::now()).num_seconds().abs() < 60, "{t0}");
    assert_eq!(
        st.dormant_deletion_at,
        Some(dormant_at + chrono::Duration::hours(48))
    );
    assert_eq!(
        condition(&st, "Dormant"),
        (ConditionStatus::False, "InUse".to_string())
    );
    let tick_at = |h: i64| {
        let (store, clock) = (store.clone(), clock.clone());
        async move {
            clock.set(t0 + chrono::Duration::hours(h) + mins(1));
            let a = tick(&store, clock.now(), &lopts(), "a").await.unwrap();
            let b = tick(&store, clock.now(), &lopts(), "b").await.unwrap();
            (a, b)
        }
    };
    tick_at(47).await;
    assert!(event_counts(&store, "old", "DormancySoon").await.is_empty());
    tick_at(49).await;
    tick_at(50).await;
    let soon = event_counts(&store, "old", "DormancySoon").await;
    assert_eq!(soon.len(), 1, "{soon:?}");
    assert_eq!(soon[0].1, 1, "warned once: {soon:?}");
    assert!(soon[0].0.contains("becomes Dormant at"), "{soon:?}");

    tick_at(72).await;
    store
        .object_touch(Kind::Workspace, "default", "old")
        .await
        .unwrap();
    let st = wait_until(&store, "old", "Dormant", |s| {
        s.phase == berth::api::workspace::Phase::Dormant
    })
    .await;
    assert_eq!(
        condition(&st, "Dormant"),
        (ConditionStatus::True, "Unused".to_string())
    );
    let dormant = event_counts(&store, "old", "Dormant").await;
    assert_eq!(dormant.len(), 1, "{dormant:?}");
    assert_eq!(dormant[0].1, 1, "{dormant:?}");

    // An hourly autostart does not start a Dormant workspace.
    apply_yaml(
        &store,
        &common::workspace(
            "old",
            "olga",
            "  running: false\n  schedule:\n    autostart: {cron: '0 * * * *', timezone: UTC}\n",
        ),
    )
    .await;
    for h in [74, 75, 76] {
        let (a, b) = tick_at(h).await;
        assert_eq!((a.started, b.started), (0, 0), "hour {h}");
    }
    store
        .object_touch(Kind::Workspace, "default", "old")
        .await
        .unwrap();
    let st = wait_until(&store, "old", "still Dormant, no autostart", |s| {
        s.phase == berth::api::workspace::Phase::Dormant && s.lifecycle.is_some()
    })
    .await;
    assert_eq!(st.next_autostart_at, None);

    // A day before its deletion: warned; then deleted, its access point kept.
    tick_at(95).await;
    assert!(event_counts(&store, "old", "DormantDeletionSoon")
        .await
        .is_empty());
    tick_at(97).await;
    tick_at(98).await;
    let soon = event_counts(&store, "old", "DormantDeletionSoon").await;
    assert_eq!(soon.len(), 1, "{soon:?}");
    assert_eq!(soon[0].1, 1, "{soon:?}");
    let (a, b) = tick_at(121).await;
    assert_eq!(a.deleted + b.deleted, 1, "deleted once");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store
        .object_get(Kind::Workspace, "default", "old")
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Dormant workspace was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deleted = event_counts(&store, "old", "DormantDeleted").await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(deleted[0].0.contains("Retain"), "{deleted:?}");
    assert_eq!(
        sim.access_points("fs-1").len(),
        1,
        "deletionPolicy Retain keeps the access point and its home"
    );
    c.stop().await;
}

/// A Dormant workspace is not started by `berth start` (nor by connecting
/// to it) until it is woken: `berth wake`, or `berth start --wake`.
#[tokio::test]
async fn a_dormant_workspace_must_be_woken_before_it_starts() {
    let api = common::Api::start().await;
    api.apply(&api.admin, common::TEMPLATE).await;
    let policy = "apiVersion: berth.dev/v1alpha1\nkind: LifecyclePolicy\nmetadata: {name: org}\nspec: {dormancyThreshold: 1h}\n";
    assert_eq!(api.apply(&api.admin, policy).await.status(), StatusCode::OK);
    let alice = api.user("alice").await;
    api.apply(
        &alice,
        &common::workspace("nap", "alice", "  running: false\n"),
    )
    .await;
    // Unused for two hours: created, stopped and last active that long ago.
    let age = |store: Store| async move {
        for q in [
            "UPDATE objects SET created_at = now() - interval '2 hours' WHERE kind = 'Workspace' AND name = 'nap'",
            "UPDATE power_intents SET at = now() - interval '2 hours'",
            "UPDATE workspace_activity SET last_activity_at = now() - interval '2 hours'",
        ] {
            sqlx::query(q).execute(store.pool()).await.unwrap();
        }
    };
    age(api.store.clone()).await;
    let post = |path: &str| {
        api.client
            .post(format!(
                "{}/namespaces/default/workspaces/nap/{path}",
                api.base
            ))
            .bearer_auth(&alice)
            .send()
    };
    for path in ["start", "restart", "start?reason=connect"] {
        let r = post(path).await.unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT, "{path}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("workspaces/nap is Dormant") && body.contains("berth wake nap"),
            "{path}: {body}"
        );
    }
    let newest = |store: Store| async move {
        let uid = store
            .object_get(Kind::Workspace, "default", "nap")
            .await
            .unwrap()
            .unwrap()
            .metadata
            .uid
            .unwrap();
        store.intent_latest(uid).await.unwrap().unwrap().action
    };
    assert_eq!(
        newest(api.store.clone()).await,
        PowerAction::Stop,
        "nothing recorded"
    );

    // berth wake: no longer Dormant (still stopped), so it starts.
    let r = post("wake").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["woken"], true);
    let r = post("wake").await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["woken"], false);
    assert_eq!(
        newest(api.store.clone()).await,
        PowerAction::Stop,
        "woken, still stopped"
    );
    assert_eq!(post("start").await.unwrap().status(), StatusCode::ACCEPTED);
    assert_eq!(newest(api.store.clone()).await, PowerAction::Start);
    let woken = api
        .store
        .event_list(Kind::Workspace, "default", "nap", 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.reason == "Woken")
        .count();
    assert_eq!(woken, 1);

    // Dormant again: `start --wake` wakes it and starts it in one go.
    let stop = NewIntent::manual(PowerAction::Stop, "alice");
    api.store
        .intent_record("default", "nap", &stop)
        .await
        .unwrap();
    age(api.store.clone()).await;
    assert_eq!(post("start").await.unwrap().status(), StatusCode::CONFLICT);
    assert_eq!(
        post("start?wake=true").await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(newest(api.store.clone()).await, PowerAction::Start);
}
