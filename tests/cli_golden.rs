//! Golden tests for the `berth` CLI: each test starts the built `berth
//! operator` on a free port against a fresh database, runs a scenario of CLI
//! commands, and compares the transcript (stdout, stderr, exit code) with
//! `tests/golden/<name>.txt`, uids, timestamps, resource versions, tokens
//! and ages redacted.
//!
//! Needs `DATABASE_URL` (any PostgreSQL the tests may create databases on;
//! `scripts/test.sh` starts a private one). `BERTH_UPDATE_GOLDEN=1` rewrites
//! the golden files instead of comparing.

#[path = "cli_common.rs"]
mod cli_common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use cli_common::{golden_dir, CliOutput, Operator};

/// Records commands and their output for one golden file.
struct Transcript<'a> {
    op: &'a Operator,
    text: String,
}

impl<'a> Transcript<'a> {
    fn new(op: &'a Operator) -> Self {
        Transcript {
            op,
            text: String::new(),
        }
    }

    /// Runs a command, records it, and returns its exit code.
    fn run(&mut self, args: &[&str]) -> i32 {
        let out = self.op.cli(args);
        self.record(args, out)
    }

    /// Starts a command, calls `meanwhile` while it runs, then records it.
    fn run_while(&mut self, args: &[&str], meanwhile: impl FnOnce()) -> i32 {
        let child = self
            .op
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth");
        meanwhile();
        let out = child.wait_with_output().expect("wait for berth");
        self.record(args, CliOutput::from(out))
    }

    fn record(&mut self, args: &[&str], out: CliOutput) -> i32 {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(&format!("$ berth {}\n", args.join(" ")));
        self.text.push_str(&out.stdout);
        if !out.stderr.is_empty() {
            self.text.push_str("[stderr]\n");
            self.text.push_str(&out.stderr);
        }
        if out.code != 0 {
            self.text.push_str(&format!("[exit {}]\n", out.code));
        }
        out.code
    }

    /// Runs a command that must succeed, without recording it.
    fn setup(&self, args: &[&str]) {
        let out = self.op.cli(args);
        assert_eq!(
            out.code,
            0,
            "berth {}: {}{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
    }

    fn check(self, name: &str) {
        check_golden(name, &redact(&self.text));
    }
}

/// Replaces what changes from run to run.
fn redact(s: &str) -> String {
    let rules = [
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "<uid>",
        ),
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
            "<time>",
        ),
        (
            r"(resourceVersion|\x22resourceVersion\x22): ('[^']*'|\x22[^\x22]*\x22|\d+)",
            "$1: <rv>",
        ),
        (r"berth_[A-Za-z0-9_\-]+", "<token>"),
        // Cloud names end in 8 hex digits of the workspace's uid's hash.
        (r"\b(berth-[a-z0-9-]+)-[0-9a-f]{8}\b", "$1-<uidhash>"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:<port>"),
    ];
    let mut out = s.to_string();
    for (re, with) in rules {
        out = regex::Regex::new(re)
            .unwrap()
            .replace_all(&out, with)
            .into_owned();
    }
    // With the times redacted, the order of a run of timed lines (describe's
    // Upcoming) depends only on the time of day the test runs at: sort them.
    let mut lines: Vec<&str> = out.split_inclusive('\n').collect();
    let timed = |l: &str| l.trim_start().starts_with("<time>:");
    let mut i = 0;
    while i < lines.len() {
        let run = lines[i..].iter().take_while(|l| timed(l)).count();
        lines[i..i + run].sort_unstable();
        i += run.max(1);
    }
    lines.concat()
}

fn check_golden(name: &str, actual: &str) {
    let path = golden_dir().join(format!("{name}.txt"));
    if std::env::var_os("BERTH_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
            .unified_diff()
            .header(&format!("tests/golden/{name}.txt"), "actual")
            .to_string();
        panic!("CLI output differs from tests/golden/{name}.txt (rerun with BERTH_UPDATE_GOLDEN=1 to accept):\n{diff}");
    }
}

#[test]
fn apply_and_get_print_kubectl_style_results_and_tables() {
    let op = Operator::start();
    let mut t = Transcript::new(&op);
    t.run(&["apply", "-f", ".", "--dry-run"]);
    t.run(&["get", "workspaces"]);
    t.run(&["apply", "-f", "."]);
    t.run(&["apply", "-f", "."]);
    t.run(&["get", "ws"]);
    t.run(&["get", "ws", "-o", "wide"]);
    t.run(&["get", "wst"]);
    t.run(&["get", "lp"]);
    t.run(&["get", "ws", "-A"]);
    t.run(&["get", "ws", "-l", "team=platform"]);
    t.run(&["get", "ws", "-l", "team!=platform", "-o", "name"]);
    t.run(&["get", "workspace", "bob", "-o", "yaml"]);
    t.run(&["get", "ws", "-n", "elsewhere"]);
    t.check("apply_get");
}

#[test]
fn describe_shows_spec_status_conditions_and_events_per_kind() {
    let op = Operator::start();
    let mut t = Transcript::new(&op);
    t.setup(&["apply", "-f", "."]);
    t.run(&["describe", "ws", "alice"]);
    t.run(&["describe", "workspace", "bob"]);
    t.run(&["describe", "wst", "dev"]);
    t.run(&["describe", "lifecyclepolicy", "default"]);
    t.check("describe");
}

#[test]
fn diff_prints_unified_diffs_and_uses_kubectl_exit_codes() {
    let op = Operator::start();
    let mut t = Transcript::new(&op);
    t.setup(&["apply", "-f", "."]);
    assert_eq!(t.run(&["diff", "-f", "."]), 0);
    assert_eq!(t.run(&["diff", "-f", "changed/alice.yaml"]), 1);
    assert_eq!(t.run(&["diff", "-f", "bad/workspaces.yaml"]), 2);
    t.check("diff");
}

#[test]
fn errors_name_file_document_object_and_field_and_nothing_is_written() {
    let op = Operator::start();
    let mut t = Transcript::new(&op);
    t.setup(&["apply", "-f", "00-policy.yaml", "-f", "10-template.yaml"]);
    assert_eq!(t.run(&["apply", "-f", "bad/workspaces.yaml"]), 1);
    assert_eq!(
        t.run(&[
            "apply",
            "-f",
            "20-workspaces.yaml",
            "-f",
            "bad/workspaces.yaml"
        ]),
        1
    );
    t.run(&["get", "ws"]);
    assert_eq!(t.run(&["apply", "-f", "bad/syntax.yaml"]), 1);
    assert_eq!(t.run(&["apply", "-f", "missing.yaml"]), 1);
    assert_eq!(t.run(&["get", "ws", "nobody"]), 1);
    assert_eq!(t.run(&["get", "gadgets"]), 1);
    assert_eq!(
        t.run(&["--token", "berth_not_a_real_token", "get", "ws"]),
        1
    );
    t.check("errors");
}

#[test]
fn delete_by_name_and_by_file_and_tokens() {
    let op = Operator::start();
    let mut t = Transcript::new(&op);
    t.setup(&["apply", "-f", "."]);
    // A template in use is not deleted; the error names it once.
    t.run(&["delete", "wst", "dev"]);
    t.run(&["delete", "ws", "alice"]);
    t.run(&["delete", "ws", "alice"]);
    t.run(&["delete", "ws", "alice", "--ignore-not-found"]);
    t.run(&["delete", "-f", "20-workspaces.yaml", "--ignore-not-found"]);
    t.run(&["whoami"]);
    let token = op.cli(&["token", "create", "alice"]);
    assert_eq!(token.code, 0, "{}", token.stderr);
    assert!(
        token.stdout.starts_with("berth_") && token.stdout.lines().count() == 1,
        "{}",
        token.stdout
    );
    t.run(&["--token", token.stdout.trim(), "whoami"]);
    t.run(&[
        "--token",
        token.stdout.trim(),
        "token",
        "create",
        "mallory",
        "--admin",
    ]);
    t.check("delete_tokens");
}

#[test]
fn start_stop_restart_request_intents_and_wait_times_out_without_controllers() {
    let op = Operator::start();
    let mut t = Transcript::new(&op);
    t.setup(&["apply", "-f", "."]);
    assert_eq!(t.run(&["start", "alice"]), 0);
    assert_eq!(t.run(&["stop", "alice", "bob"]), 0);
    assert_eq!(t.run(&["restart", "ws/alice"]), 0);
    assert_eq!(t.run(&["start", "nobody"]), 1);
    assert_eq!(t.run(&["stop", "alice", "nobody"]), 1);
    assert_eq!(t.run(&["-n", "elsewhere", "stop", "alice"]), 1);
    assert_eq!(t.run(&["restart", "wst/dev"]), 1);
    // The operator runs without a cloud: nothing ever sets Ready.
    let started = Instant::now();
    assert_eq!(
        t.run(&["wait", "ws/alice", "--for=condition=Ready", "--timeout=1s"]),
        1
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(20),
        "wait --timeout=1s took {waited:?}"
    );
    assert_eq!(
        t.run(&[
            "wait",
            "ws/alice",
            "--for=condition=Ready=False",
            "--timeout=1s"
        ]),
        1
    );
    assert_eq!(
        t.run(&["wait", "ws/nobody", "--for=condition=Ready", "--timeout=1s"]),
        1
    );
    assert_eq!(t.run(&["wait", "ws/alice", "--for=jsonpath={.status}"]), 2);
    assert_eq!(t.run(&["delete", "ws", "bob"]), 0);
    assert_eq!(
        t.run(&["wait", "ws", "bob", "--for=delete", "--timeout=1s"]),
        0
    );
    t.check("power_wait");
}

/// A status such as the workspace controller writes for a running workspace
/// on template version 1.
fn running_status() -> serde_json::Value {
    let at = "2024-06-03T08:00:00Z";
    serde_json::json!({
        "observedGeneration": 1,
        "phase": "Running",
        "templateVersion": 1,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Running",
             "message": "the workspace's task is running", "lastTransitionTime": at, "observedGeneration": 1},
            {"type": "Synced", "status": "True", "reason": "Synced",
             "message": "ECS and EFS match the declared state", "lastTransitionTime": at, "observedGeneration": 1},
            {"type": "Outdated", "status": "True", "reason": "NewerVersion",
             "message": "runs template version 1; version 2 applies at the next start (berth restart)",
             "lastTransitionTime": at, "observedGeneration": 1}
        ],
        "ecs": {
            "cluster": "arn:aws:ecs:us-west-2:123456789012:cluster/workspaces",
            "serviceName": "berth-default-alice",
            "serviceArn": "arn:aws:ecs:us-west-2:123456789012:service/workspaces/berth-default-alice",
            "taskDefinitionArn": "arn:aws:ecs:us-west-2:123456789012:task-definition/berth-default-alice:4",
            "desiredCount": 1, "runningCount": 1, "pendingCount": 0
        },
        "efs": {"accessPointId": "fsap-0123456789abcdef0", "rootDirectory": "/alice"},
        "lastActivityAt": at,
        "autostopAt": "2024-06-03T09:30:00Z",
        "lastTransition": {"action": "start", "reason": "Manual", "at": at}
    })
}

#[test]
fn wait_follows_status_changes_and_describe_and_wide_show_the_status() {
    let op = Operator::start();
    let mut t = Transcript::new(&op);
    t.setup(&["apply", "-f", "."]);
    // Template version 2: alice (following the active version) is outdated.
    t.setup(&["apply", "-f", "v2/10-template.yaml"]);
    let code = t.run_while(
        &["wait", "ws/alice", "--for=condition=Ready", "--timeout=60s"],
        || {
            std::thread::sleep(Duration::from_millis(500));
            op.put_workspace_status("alice", running_status());
        },
    );
    assert_eq!(code, 0);
    t.run(&["get", "ws", "-o", "wide"]);
    t.run(&["describe", "ws", "alice"]);
    t.check("wait_status");
}

/// What runs, from the status the controller writes on the simulated cloud:
/// `get` shows the running CPU and memory and a change the next start
/// applies (`8Gi→16Gi`); `describe` shows both and the PendingRestart.
#[test]
fn get_and_describe_show_what_runs_and_the_pending_change() {
    let op = Operator::start_with(&["--cloud", "sim", "--sim-delay-scale", "0.05"]);
    let mut t = Transcript::new(&op);
    t.setup(&["apply", "-f", "."]);
    t.setup(&[
        "wait",
        "ws/alice",
        "--for=condition=Ready",
        "--timeout=120s",
    ]);
    t.run(&["get", "ws", "alice", "-o", "wide"]);
    t.setup(&["apply", "-f", "changed/alice.yaml"]);
    t.setup(&[
        "wait",
        "ws/alice",
        "--for=condition=Synced=False",
        "--timeout=60s",
    ]);
    t.run(&["get", "ws", "alice", "-o", "wide"]);
    t.run(&["describe", "ws", "alice"]);
    t.check("running_status");
}

/// `berth get ws | head -1`: when the reader goes away, berth ends quietly
/// (as a program killed by SIGPIPE: status 141), never with a panic.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    let op = Operator::start();
    // `apply` prints line by line, `get` writes a table.
    for args in [&["apply", "-f", "."][..], &["get", "ws", "-o", "yaml"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = op
            .command(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run berth");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.is_empty(),
            "berth {args:?}: nothing on stderr: {stderr}"
        );
        assert_eq!(
            out.status.code().or(out.status.signal().map(|s| 128 + s)),
            Some(141),
            "berth {args:?}"
        );
    }
}
