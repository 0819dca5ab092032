//! Lifecycle automation end to end in real time: the built `berth operator
//! --cloud sim` on real PostgreSQL (its lifecycle loop, its activity
//! batching), driven with `berth` commands as a user would.
//!
//! Needs `DATABASE_URL`, like the other CLI tests. Each test takes a few
//! minutes of wall time (the thresholds are a minute, the smallest a
//! lifecycle duration may be); they run side by side.

#[path = "cli_common.rs"]
mod cli_common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cli_common::Operator;
use serde_json::Value;

fn start() -> Operator {
    let op = Operator::start_with(&["--cloud", "sim", "--sim-delay-scale", "0.05"]);
    let out = op.cli(&["apply", "-f", "10-template.yaml"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    op
}

fn apply(op: &Operator, yaml: &str) {
    let file = op.dir().join("ws.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = op.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

fn workspace(op: &Operator, name: &str) -> Value {
    let out = op.cli(&["get", "ws", name, "-o", "json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).expect("JSON")
}

fn phase(ws: &Value) -> String {
    ws.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn last_reason(ws: &Value) -> String {
    ws.pointer("/status/lastTransition/reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Polls until `done` holds, for at most `within`.
fn wait_for(
    op: &Operator,
    name: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let ws = workspace(op, name);
        if done(&ws) {
            return ws;
        }
        assert!(
            Instant::now() < deadline,
            "workspaces/{name}: not {what} within {within:?}:\n{ws:#}\n--- operator log:\n{}",
            op.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn ws_yaml(name: &str, schedule: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: {name}\nspec:\n  owner: admin\n  template:\n    name: dev\n{schedule}"
    )
}

/// Reports every 20 s for 3 minutes under a 1-minute threshold: never
/// stopped (a report within a minute of the one before is batched, never
/// lost). Then silence: stopped about a minute after the last report.
#[test]
fn a_workspace_reporting_more_often_than_its_threshold_is_never_stopped_and_silence_stops_it() {
    let op = start();
    apply(
        &op,
        &ws_yaml(
            "busy",
            "  schedule:\n    autostop:\n      afterInactivity: 1m\n",
        ),
    );
    wait_for(&op, "busy", "Running", Duration::from_secs(60), |w| {
        phase(w) == "Running"
    });
    let begin = Instant::now();
    let mut last_report = Instant::now();
    while begin.elapsed() < Duration::from_secs(180) {
        let out = op.cli(&["activity", "busy", "--kind", "ssh"]);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        last_report = Instant::now();
        // Checked every few seconds until the next report is due.
        while last_report.elapsed() < Duration::from_secs(20) {
            let ws = workspace(&op, "busy");
            assert_eq!(
                phase(&ws),
                "Running",
                "stopped {:?} into reports every 20 s under a 1m threshold:\n{ws:#}",
                begin.elapsed()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let ws = wait_for(
        &op,
        "busy",
        "stopped after the reports end",
        Duration::from_secs(120),
        |w| matches!(phase(w).as_str(), "Stopping" | "Stopped"),
    );
    let after = last_report.elapsed();
    assert_eq!(last_reason(&ws), "AutoStop", "{ws:#}");
    assert!(
        after >= Duration::from_secs(60) && after <= Duration::from_secs(100),
        "stopped {after:?} after the last report; expected about a minute"
    );
}

/// An autostart that begins early (so the workspace is Running at its
/// scheduled time) is not idle before that time: under a 1-minute threshold
/// it runs until a minute past its scheduled time, then autostop stops it.
#[test]
fn an_early_autostart_stays_up_until_a_threshold_past_its_scheduled_time() {
    let op = start();
    // Early in a minute, so that the next minute's autostart is well ahead
    // of the stop and of the lifecycle's next tick.
    while !(5..40).contains(&chrono::Timelike::second(&Utc::now())) {
        std::thread::sleep(Duration::from_millis(500));
    }
    apply(
        &op,
        &ws_yaml(
            "dawn",
            "  running: false\n  schedule:\n    autostart: {cron: '* * * * *', timezone: UTC}\n    autostop: {afterInactivity: 1m}\n",
        ),
    );
    // The lifecycle begins each start 90 s ahead: the next minute's
    // autostart begins at once, early.
    let ws = wait_for(&op, "dawn", "autostarted", Duration::from_secs(90), |w| {
        phase(w) == "Running" && last_reason(w) == "AutoStart"
    });
    let started: DateTime<Utc> = ws
        .pointer("/status/lastTransition/at")
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
        .expect("lastTransition.at");
    let scheduled = cli_common::runtime().block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(op.database_url()).await.unwrap();
        sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "SELECT scheduled_for FROM power_intents WHERE reason = 'AutoStart' ORDER BY id LIMIT 1",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .expect("an early autostart keeps its scheduled time")
    });
    assert!(
        scheduled > started,
        "began early: {started} for {scheduled}"
    );
    // Running until a threshold past the scheduled time (not the start).
    let idle_until = scheduled + chrono::Duration::seconds(55);
    while Utc::now() < idle_until {
        let ws = workspace(&op, "dawn");
        assert_eq!(
            phase(&ws),
            "Running",
            "stopped before a minute past its scheduled time {scheduled} (began {started}):\n{ws:#}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let ws = wait_for(&op, "dawn", "autostopped", Duration::from_secs(60), |w| {
        last_reason(w) == "AutoStop"
    });
    let stopped: DateTime<Utc> = ws
        .pointer("/status/lastTransition/at")
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
        .expect("lastTransition.at");
    assert!(
        stopped >= scheduled + chrono::Duration::seconds(60),
        "stopped at {stopped}, before a minute past {scheduled}"
    );
}
