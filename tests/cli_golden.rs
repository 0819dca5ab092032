//! Golden tests for the `berth` CLI: each test starts the built `berth
//! operator` on a free port against a fresh database, runs a scenario of CLI
//! commands, and compares the transcript (stdout, stderr, exit code) with
//! `tests/golden/<name>.txt`, uids, timestamps, resource versions, tokens
//! and ages redacted.
//!
//! Needs `DATABASE_URL` (any PostgreSQL the tests may create databases on;
//! `scripts/test.sh` starts a private one). `BERTH_UPDATE_GOLDEN=1` rewrites
//! the golden files instead of comparing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A database of its own on the server named by `DATABASE_URL`.
struct TestDb {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDb {
    fn create() -> TestDb {
        let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "DATABASE_URL is not set: the CLI golden tests need a PostgreSQL server to create \
                 databases on. Run scripts/test.sh (it starts a private PostgreSQL), or set \
                 DATABASE_URL=postgres://user@host:port/db"
            )
        });
        let name = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
        runtime().block_on(async {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL: {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        });
        let mut url = reqwest::Url::parse(&admin_url).expect("DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        TestDb {
            admin_url,
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        runtime().block_on(async move {
            use sqlx::Connection as _;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        });
    }
}

/// A running operator and a CLI config pointing at it.
struct Operator {
    child: Child,
    dir: tempfile::TempDir,
    config: PathBuf,
    _db: TestDb,
}

impl Operator {
    fn start() -> Operator {
        let db = TestDb::create();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.yaml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("operator.log")).unwrap();
        let child = Command::new(BERTH)
            .args([
                "operator",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--write-cli-config",
            ])
            .arg(&config)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn berth operator");
        let mut op = Operator {
            child,
            dir,
            config,
            _db: db,
        };
        op.wait_ready();
        op
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("operator.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the operator exited ({status}) before becoming ready:\n{}",
                    self.log()
                );
            }
            if self.config.exists() {
                let out = self.cli(&["whoami"]);
                if out.code == 0 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "the operator did not become ready within 60s:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `berth ARGS` from `tests/golden/fixtures` with this operator's config.
    fn cli(&self, args: &[&str]) -> CliOutput {
        let out = Command::new(BERTH)
            .args(args)
            .current_dir(golden_dir().join("fixtures"))
            .env("BERTH_CONFIG", &self.config)
            .env("BERTH_TEST_FIXED_AGE", "<age>")
            .env_remove("BERTH_SERVER")
            .env_remove("BERTH_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run berth");
        CliOutput {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code().unwrap_or(-1),
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct CliOutput {
    stdout: String,
    stderr: String,
    code: i32,
}

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
        (r"127\.0\.0\.1:\d+", "127.0.0.1:<port>"),
    ];
    let mut out = s.to_string();
    for (re, with) in rules {
        out = regex::Regex::new(re)
            .unwrap()
            .replace_all(&out, with)
            .into_owned();
    }
    out
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
