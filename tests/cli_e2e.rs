//! End to end through the CLI: the built `berth operator --cloud sim` (API
//! and controllers on the simulated cloud, delays scaled down) on a fresh
//! database; the examples are applied, a workspace becomes Ready, is stopped
//! and started again, all with `berth` commands.
//!
//! Needs `DATABASE_URL`, like the golden tests (`scripts/test.sh` starts a
//! private PostgreSQL).

#[path = "cli_common.rs"]
mod cli_common;

use std::path::Path;
use std::time::{Duration, Instant};

use cli_common::{CliOutput, Operator};
use serde_json::Value;

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/examples")
        .to_string_lossy()
        .into_owned()
}

/// Runs `berth ARGS`; panics with the command's output, the workspace's
/// description and the operator's log when it fails.
fn ok(op: &Operator, args: &[&str]) -> CliOutput {
    let out = op.cli(args);
    if out.code != 0 {
        let describe = op.cli(&["describe", "ws", "alice"]);
        panic!(
            "berth {} exited {}:\n{}{}\n--- berth describe ws alice:\n{}{}\n--- operator log (tail):\n{}",
            args.join(" "),
            out.code,
            out.stdout,
            out.stderr,
            describe.stdout,
            describe.stderr,
            tail(&op.log(), 40)
        );
    }
    out
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn workspace(op: &Operator, name: &str) -> Value {
    let out = ok(op, &["get", "ws", name, "-o", "json"]);
    serde_json::from_str(&out.stdout).expect("get -o json prints JSON")
}

fn phase(ws: &Value) -> &str {
    ws.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn desired(ws: &Value) -> Option<i64> {
    ws.pointer("/status/ecs/desiredCount")
        .and_then(Value::as_i64)
}

/// Polls `berth get ws NAME -o json` until `done` holds.
fn eventually(op: &Operator, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ws = workspace(op, name);
        if done(&ws) {
            return ws;
        }
        if Instant::now() > deadline {
            panic!(
                "workspaces/{name}: not {what} within 60s; last seen:\n{ws:#}\n--- operator log (tail):\n{}",
                tail(&op.log(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn examples_start_on_the_simulated_cloud_and_stop_and_start_with_the_cli() {
    let op = Operator::start_with(&["--cloud", "sim", "--sim-delay-scale", "0.05"]);
    assert!(
        op.log().contains("simulated cloud"),
        "the operator should say it drives the simulated cloud:\n{}",
        op.log()
    );
    ok(&op, &["apply", "-f", &examples()]);

    let out = ok(
        &op,
        &["wait", "ws/alice", "--for=condition=Ready", "--timeout=60s"],
    );
    assert_eq!(out.stdout, "workspace/alice condition met\n");
    let ws = workspace(&op, "alice");
    assert_eq!(phase(&ws), "Running", "{ws:#}");
    assert_eq!(desired(&ws), Some(1), "{ws:#}");

    // A watch prints a row per change: it shows alice go from Running to Stopped.
    let mut watch = op
        .command(&["get", "ws", "alice", "-w"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berth get -w");
    let (tx, rows) = std::sync::mpsc::channel::<String>();
    let stdout = watch.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut watched = Vec::new();
    // The header and alice's current row: the watch is open before the stop.
    while watched.len() < 2 {
        watched.push(
            rows.recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("berth get -w printed only {watched:?}")),
        );
    }

    let out = ok(&op, &["stop", "alice"]);
    assert_eq!(out.stdout, "workspace/alice stop requested\n");
    let out = ok(
        &op,
        &[
            "wait",
            "ws/alice",
            "--for=condition=Ready=False",
            "--timeout=60s",
        ],
    );
    assert_eq!(out.stdout, "workspace/alice condition met\n");
    let ws = eventually(&op, "alice", "Stopped", |ws| phase(ws) == "Stopped");
    assert_eq!(desired(&ws), Some(0), "{ws:#}");

    std::thread::sleep(Duration::from_millis(500));
    watch.kill().expect("stop berth get -w");
    let _ = watch.wait();
    reader.join().expect("watch reader");
    watched.extend(rows.try_iter());
    let phases: Vec<&str> = watched
        .iter()
        .filter(|l| l.starts_with("alice "))
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(phases.first(), Some(&"Running"), "get -w:\n{watched:#?}");
    assert_eq!(phases.last(), Some(&"Stopped"), "get -w:\n{watched:#?}");
    // Status writes that no column shows print nothing: no row repeats the
    // one printed before it.
    let alice_rows: Vec<&String> = watched.iter().filter(|l| l.starts_with("alice ")).collect();
    for pair in alice_rows.windows(2) {
        assert_ne!(pair[0], pair[1], "get -w repeated a row:\n{watched:#?}");
    }

    let wide = ok(&op, &["get", "ws", "-o", "wide"]);
    let row = wide
        .stdout
        .lines()
        .find(|l| l.starts_with("alice "))
        .unwrap_or_else(|| panic!("no alice row:\n{}", wide.stdout));
    assert!(row.contains(" Stopped "), "{}", wide.stdout);

    let describe = ok(&op, &["describe", "ws", "alice"]);
    for want in [
        "Phase:             Stopped",
        "Template Version:  1",
        "0 desired, 0 running, 0 pending",
        "Root Directory:  /default/alice",
        "Last Transition:   stop (Manual)",
        "Ready      False",
    ] {
        assert!(
            describe.stdout.contains(want),
            "describe lacks {want:?}:\n{}",
            describe.stdout
        );
    }

    // Started again, it becomes Ready again.
    ok(&op, &["start", "alice"]);
    ok(
        &op,
        &["wait", "ws/alice", "--for=condition=Ready", "--timeout=60s"],
    );
    let ws = eventually(&op, "alice", "Running", |ws| phase(ws) == "Running");
    assert_eq!(desired(&ws), Some(1), "{ws:#}");
}

/// `berth up` again on a database that already has an admin, with a new
/// HOME (a laptop's data directory kept, the CLI config gone): the new
/// config gets a working admin token, the old one keeps working, and a
/// restart with the same HOME keeps the token it has.
#[test]
fn up_with_a_kept_database_and_a_new_home_writes_a_working_admin_token() {
    let db = cli_common::TestDb::create();
    let homes = tempfile::tempdir().expect("tempdir");
    let up = |home: &Path| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(cli_common::BERTH)
            .args(["up", "--cloud", "none", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--database-url")
            .arg(db.url())
            .env("HOME", home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("BERTH_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn berth up");
        let config = home.join(".config/berth/config.yaml");
        let whoami = || {
            std::process::Command::new(cli_common::BERTH)
                .arg("whoami")
                .env("BERTH_CONFIG", &config)
                .env_remove("BERTH_SERVER")
                .env_remove("BERTH_TOKEN")
                .output()
                .expect("berth whoami")
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = whoami();
            if out.status.success() {
                assert!(
                    String::from_utf8_lossy(&out.stdout).contains("admin"),
                    "{out:?}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no working admin token in {} within 60 s: {out:?}",
                config.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let token = std::fs::read_to_string(&config)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("token:").map(|t| t.trim().to_string()))
            .expect("a token in the config");
        (child, config, token)
    };
    let stop = |mut child: std::process::Child| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    };
    let (first_home, second_home) = (homes.path().join("a"), homes.path().join("b"));
    let (child, _, first_token) = up(&first_home);
    stop(child);
    let (child, second_config, second_token) = up(&second_home);
    assert_ne!(first_token, second_token, "a token of its own");
    stop(child);
    // The first HOME's token still works, and the second keeps its own.
    let (child, _, again) = up(&first_home);
    assert_eq!(again, first_token);
    stop(child);
    let (child, config, again) = up(&second_home);
    assert_eq!((config, again), (second_config, second_token));
    stop(child);
}
