//! Shared by the CLI tests (`cli_golden`, `cli_e2e`): a fresh database per
//! test on the server named by `DATABASE_URL`, and the built `berth
//! operator` on a free port with a CLI config pointing at it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A database of its own on the server named by `DATABASE_URL`.
pub struct TestDb {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "DATABASE_URL is not set: the CLI golden tests need a PostgreSQL server to create \
                 databases on. Run scripts/test.sh (it starts a private PostgreSQL), or set \
                 DATABASE_URL=postgres://user@host:port/db"
            )
        });
        // berth_test_<unix seconds>_<random>, as tests/common names its
        // databases: their sweep drops only those over an hour old (a name
        // without the time would be taken for a leftover and dropped while
        // in use by a test running beside it).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let name = format!(
            "berth_test_{now}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
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

impl TestDb {
    /// Its connection URL.
    pub fn url(&self) -> &str {
        &self.url
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
pub struct Operator {
    child: Child,
    dir: tempfile::TempDir,
    config: PathBuf,
    db: TestDb,
    /// The arguments it was started with (a restart reuses them).
    args: Vec<std::ffi::OsString>,
}

impl Operator {
    /// An operator without a cloud (the API only).
    pub fn start() -> Operator {
        Operator::start_with(&[])
    }

    /// An operator with extra flags (e.g. `--cloud sim`).
    pub fn start_with(extra: &[&str]) -> Operator {
        let db = TestDb::create();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.yaml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut args: Vec<std::ffi::OsString> = vec![
            "operator".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--write-cli-config".into(),
            config.clone().into(),
        ];
        args.extend(extra.iter().map(Into::into));
        // Agents of simulated tasks keep their homes and logs in the
        // test's directory, never in the tester's home.
        if extra.contains(&"sim") {
            args.push("--sim-data-dir".into());
            args.push(dir.path().join("sim").into());
        }
        let child = Self::spawn(&args, &db, dir.path());
        let mut op = Operator {
            child,
            dir,
            config,
            db,
            args,
        };
        op.wait_ready();
        op
    }

    fn spawn(args: &[std::ffi::OsString], db: &TestDb, dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("operator.log"))
            .unwrap();
        Command::new(BERTH)
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn berth operator")
    }

    /// Kills the operator with SIGKILL (as a crash would) and starts it
    /// again with the same arguments, database and port.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.args, &self.db, self.dir.path());
        self.wait_ready();
    }

    /// Another replica on the same database (its own port, `extra` flags);
    /// returns its child process and URL. The caller kills it.
    pub fn start_replica(&self, extra: &[&str]) -> (Child, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("replica-{port}.log")))
            .unwrap();
        let child = Command::new(BERTH)
            .args(["operator", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("DATABASE_URL", &self.db.url)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn a second replica");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http_ok(&format!("{url}/readyz")) {
            assert!(
                Instant::now() < deadline,
                "the second replica did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        (child, url)
    }

    /// Kills the operator (SIGKILL), as a crash would; it is not restarted.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The operator's database.
    pub fn database_url(&self) -> &str {
        &self.db.url
    }

    /// The test's private directory (the simulated cloud's data is in `sim/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the operator has logged so far.
    pub fn log(&self) -> String {
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

    /// `berth ARGS`, run from `tests/golden/fixtures` with this operator's config.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BERTH);
        cmd.args(args)
            .current_dir(golden_dir().join("fixtures"))
            .env("BERTH_CONFIG", &self.config)
            .env("BERTH_TEST_FIXED_AGE", "<age>")
            .env_remove("BERTH_SERVER")
            .env_remove("BERTH_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `berth ARGS` and collects its output.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let out = self.command(args).output().expect("run berth");
        CliOutput::from(out)
    }

    /// `(server, token)` from the CLI config the operator wrote.
    pub fn server_and_token(&self) -> (String, String) {
        let text = std::fs::read_to_string(&self.config).expect("CLI config");
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
                .unwrap_or_else(|| panic!("no {key} in the CLI config:\n{text}"))
        };
        (value("server:"), value("token:"))
    }

    /// Writes a workspace's status through the status path, as a controller does.
    pub fn put_workspace_status(&self, name: &str, status: serde_json::Value) {
        let (server, token) = self.server_and_token();
        let url =
            format!("{server}/apis/berth.dev/v1alpha1/namespaces/default/workspaces/{name}/status");
        runtime().block_on(async {
            let resp = reqwest::Client::new()
                .put(&url)
                .bearer_auth(&token)
                .json(&serde_json::json!({ "status": status }))
                .send()
                .await
                .expect("PUT status");
            let code = resp.status();
            let body = resp.text().await.unwrap_or_default();
            assert!(code.is_success(), "PUT {url}: {code}: {body}");
        });
    }
}

impl Drop for Operator {
    /// SIGTERM first, so the operator stops the agents it runs; SIGKILL
    /// only if it has not exited after 20 s.
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct CliOutput {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl From<std::process::Output> for CliOutput {
    fn from(out: std::process::Output) -> Self {
        CliOutput {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code().unwrap_or(-1),
        }
    }
}

/// Whether a GET of `url` answers 2xx.
pub fn http_ok(url: &str) -> bool {
    runtime().block_on(async {
        match reqwest::get(url).await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    })
}
