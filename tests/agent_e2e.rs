//! The workspace agent end to end, through the built `berth` binary on a
//! real PostgreSQL:
//!
//! * on the simulated cloud's local runtime (what `berth up` runs), a
//!   template's scripts run in a real agent process: their states and exit
//!   codes reach `status.agent`, their output `berth logs` (live with `-f`),
//!   a stop runs the stop hook and the scripts' own TERM traps (under
//!   `/bin/sh`, dash on Debian) within the stop timeout, and a new start
//!   keeps the home's files and its logs apart from the previous start's;
//! * a `berth agent` process (as in a container) outlives a crash of the
//!   operator: it reconnects, no script runs twice and no output line is
//!   lost or stored twice.

#[path = "cli_common.rs"]
mod cli_common;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_common::{runtime, CliOutput, Operator, BERTH};
use serde_json::Value;

fn ok(op: &Operator, args: &[&str]) -> CliOutput {
    let out = op.cli(args);
    assert_eq!(
        out.code,
        0,
        "berth {}:\n{}{}\n--- operator log (tail):\n{}",
        args.join(" "),
        out.stdout,
        out.stderr,
        tail(&op.log(), 40)
    );
    out
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn apply(op: &Operator, yaml: &str) {
    let file = op
        .dir()
        .join(format!("{}.yaml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, yaml).unwrap();
    ok(op, &["apply", "-f", file.to_str().unwrap()]);
}

fn workspace(op: &Operator, name: &str) -> Value {
    serde_json::from_str(&ok(op, &["get", "ws", name, "-o", "json"]).stdout).unwrap()
}

/// Polls the workspace until `done` holds (60 s).
fn eventually(op: &Operator, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ws = workspace(op, name);
        if done(&ws) {
            return ws;
        }
        assert!(
            Instant::now() < deadline,
            "workspaces/{name}: not {what} within 60s:\n{:#}\n--- operator log (tail):\n{}",
            ws["status"],
            tail(&op.log(), 60)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn script<'a>(ws: &'a Value, name: &str) -> Option<&'a Value> {
    ws.pointer("/status/agent/scripts")?
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

fn state(ws: &Value, name: &str) -> String {
    script(ws, name)
        .and_then(|s| s["state"].as_str())
        .unwrap_or("")
        .to_string()
}

fn ready(ws: &Value) -> (String, String, String) {
    let c = ws
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
    (s("status"), s("reason"), s("message"))
}

const LOCAL_TEMPLATE: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: WorkspaceTemplate
metadata:
  name: e2e
  annotations:
    berth.dev/local-scripts: "true"
spec:
  infrastructure:
    region: us-west-2
    cluster: CoderCluster
    subnets: [subnet-1]
    securityGroups: [sg-1]
    fileSystemId: fs-1
    efsRootDirectory: /homes
    executionRoleArn: arn:aws:iam::123456789012:role/exec
  container:
    image: ghcr.io/example/dev:1
    homePath: /home/dev
    stopTimeout: 20
  resources:
    default: {cpu: 1024, memory: 2048}
  scripts:
    - name: setup
      script: |
        n=$(cat "$HOME/starts" 2>/dev/null || echo 0)
        n=$((n + 1))
        echo "$n" > "$HOME/starts"
        echo "start $n"
    - name: ticker
      blocksLogin: false
      script: |
        # Stands in for the GitHub runner: cleans up on SIGTERM.
        trap 'echo cleaned > "$HOME/cleanup-ran"; exit 0' TERM
        i=0
        while :; do
          i=$((i + 1))
          echo "tick $i"
          sleep 0.3 & wait $!
        done
    - name: broken
      script: |
        echo "about to fail" >&2
        exit 3
    - name: bye
      runOnStop: true
      script: |
        echo bye > "$HOME/stop-marker"
        echo "stop hook ran"
---
apiVersion: berth.dev/v1alpha1
kind: Workspace
metadata:
  name: erin
spec:
  owner: erin
  template:
    name: e2e
"#;

fn ticks(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("tick "))
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[test]
fn on_the_local_runtime_scripts_report_and_log_a_stop_runs_the_hooks_and_a_new_start_keeps_the_home(
) {
    let op = Operator::start_with(&["--cloud", "sim", "--sim-delay-scale", "0.05"]);
    apply(&op, LOCAL_TEMPLATE);
    // The owner's directory: <data dir>/efs/<file system>/<access point root>.
    let home: PathBuf = op.dir().join("sim/efs/fs-1/homes/default/erin");

    let ws = eventually(&op, "erin", "reporting its scripts", |ws| {
        state(ws, "setup") == "Succeeded"
            && state(ws, "broken") == "Failed"
            && state(ws, "ticker") == "Running"
    });
    assert_eq!(script(&ws, "setup").unwrap()["exitCode"], 0);
    assert_eq!(script(&ws, "broken").unwrap()["exitCode"], 3);
    assert_eq!(
        state(&ws, "bye"),
        "Pending",
        "a stop hook waits for the stop"
    );
    assert!(script(&ws, "broken").unwrap()["finishedAt"].is_string());
    assert_eq!(
        ws.pointer("/status/agent/connected"),
        Some(&Value::Bool(true))
    );
    let ws = eventually(&op, "erin", "StartupScriptFailed", |ws| {
        ready(ws).1 == "StartupScriptFailed"
    });
    let (status, _, message) = ready(&ws);
    assert_eq!(status, "False");
    assert!(
        message.contains("\"broken\" failed with exit code 3"),
        "{message}"
    );
    assert_eq!(ws.pointer("/status/phase"), Some(&Value::from("Running")));
    assert_eq!(
        std::fs::read_to_string(home.join("starts")).unwrap().trim(),
        "1",
        "the script ran with HOME = the owner's directory"
    );

    // berth logs: per script, stdout and stderr as written; all scripts prefixed.
    let out = ok(&op, &["logs", "erin", "--script", "broken"]);
    assert!(out.stderr.contains("about to fail"), "{}", out.stderr);
    let out = ok(&op, &["logs", "erin"]);
    assert!(out.stdout.contains("[setup] start 1\n"), "{}", out.stdout);
    assert!(out.stdout.contains("[ticker] tick 1\n"), "{}", out.stdout);
    let seen = ticks(&ok(&op, &["logs", "erin", "--script", "ticker"]).stdout);
    assert!(!seen.is_empty());
    assert_eq!(
        seen,
        (1..=seen.len() as u64).collect::<Vec<_>>(),
        "in order, none lost"
    );

    // -f follows: lines written after it started arrive live.
    let mut follow = op
        .command(&["logs", "erin", "--script", "ticker", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let last_seen = *seen.last().unwrap();
    let mut followed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while followed.iter().filter(|n| **n > last_seen + 1).count() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("berth logs -f printed only {followed:?}"));
        followed.extend(ticks(&line));
    }

    // describe shows the scripts table; get -o wide the agent.
    let out = ok(&op, &["describe", "ws", "erin"]);
    let row = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("broken "))
        .unwrap_or_else(|| panic!("no scripts row for broken:\n{}", out.stdout));
    assert!(row.contains("Failed") && row.contains(" 3 "), "{row}");
    assert!(out.stdout.contains("Scripts:"), "{}", out.stdout);
    let out = ok(&op, &["get", "ws", "erin", "-o", "wide"]);
    assert!(
        out.stdout.lines().next().unwrap().contains("AGENT"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("StartError"), "{}", out.stdout);

    // Stop: the stop hook and the ticker's own TERM trap run, promptly.
    let stopped_at = Instant::now();
    ok(&op, &["stop", "erin"]);
    eventually(&op, "erin", "Stopped", |ws| {
        ws.pointer("/status/phase") == Some(&Value::from("Stopped"))
    });
    let took = stopped_at.elapsed();
    // The agent's last reports reach the status right after.
    let ws = eventually(&op, "erin", "reporting its stop", |ws| {
        ws.pointer("/status/agent/lifecycle") == Some(&Value::from("Off"))
            && state(ws, "bye") == "Succeeded"
    });
    assert!(
        took < Duration::from_secs(20),
        "the agent exited within the stop timeout (20 s): {took:?}"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("stop-marker")).unwrap(),
        "bye\n",
        "the runOnStop script wrote its marker into the home"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("cleanup-ran")).unwrap(),
        "cleaned\n",
        "the background script's TERM trap ran (/bin/sh is {:?})",
        std::fs::read_link("/bin/sh").ok()
    );
    assert_eq!(
        state(&ws, "bye"),
        "Succeeded",
        "{:#}",
        ws["status"]["agent"]
    );
    assert_eq!(
        ws.pointer("/status/agent/lifecycle"),
        Some(&Value::from("Off"))
    );
    // The follower ends with the agent.
    let deadline = Instant::now() + Duration::from_secs(20);
    while follow.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "berth logs -f did not end after the stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ok(&op, &["logs", "erin", "--script", "bye"]);
    assert_eq!(out.stdout, "stop hook ran\n");

    // Start again: the home is kept, and logs are per start.
    ok(&op, &["start", "erin"]);
    eventually(&op, "erin", "running its second start's scripts", |ws| {
        state(ws, "broken") == "Failed" && state(ws, "bye") == "Pending"
    });
    assert_eq!(
        std::fs::read_to_string(home.join("starts")).unwrap().trim(),
        "2"
    );
    assert!(
        home.join("stop-marker").exists(),
        "files survive stop and start"
    );
    let now = ok(&op, &["logs", "erin", "--script", "setup"]);
    assert_eq!(now.stdout, "start 2\n");
    let before = ok(&op, &["logs", "erin", "--script", "setup", "--previous"]);
    assert_eq!(before.stdout, "start 1\n");
    let before = ok(&op, &["logs", "erin", "--script", "bye", "--previous"]);
    assert_eq!(before.stdout, "stop hook ran\n");
    assert_eq!(ok(&op, &["logs", "erin", "--script", "bye"]).stdout, "");
}

const AGENT_TEMPLATE: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: WorkspaceTemplate
metadata:
  name: counted
spec:
  infrastructure:
    region: us-west-2
    cluster: CoderCluster
    subnets: [subnet-1]
    securityGroups: [sg-1]
    fileSystemId: fs-1
    executionRoleArn: arn:aws:iam::123456789012:role/exec
  container:
    image: ghcr.io/example/dev:1
    homePath: /home/dev
  resources:
    default: {cpu: 1024, memory: 2048}
  scripts:
    - name: count
      script: |
        echo run >> "$HOME/runs"
        i=1
        while [ $i -le 300 ]; do
          echo "line $i"
          i=$((i + 1))
          sleep 0.02
        done
---
apiVersion: berth.dev/v1alpha1
kind: Workspace
metadata:
  name: frank
spec:
  owner: frank
  template:
    name: counted
"#;

/// The stored lines of script `count` (text by sequence number) and its state.
fn stored(db: &str) -> (Vec<(i64, String)>, String, i64) {
    runtime().block_on(async {
        use sqlx::Row as _;
        let pool = sqlx::PgPool::connect(db).await.unwrap();
        let lines =
            sqlx::query("SELECT seq, line FROM agent_logs WHERE script = 'count' ORDER BY seq")
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<i64, _>("seq"), r.get::<String, _>("line")))
                .collect();
        let (state, dropped) =
            sqlx::query("SELECT state, dropped FROM agent_scripts WHERE name = 'count'")
                .fetch_optional(&pool)
                .await
                .unwrap()
                .map(|r| (r.get::<String, _>("state"), r.get::<i64, _>("dropped")))
                .unwrap_or_default();
        pool.close().await;
        (lines, state, dropped)
    })
}

#[test]
fn a_berth_agent_outlives_an_operator_crash_without_rerunning_scripts_or_losing_lines() {
    let mut op = Operator::start();
    apply(&op, AGENT_TEMPLATE);
    // The controller would hand the container its token; here the test does.
    let token = "berth_agent_e2e_frank";
    runtime().block_on(async {
        let store = berth::store::Store::connect(op.database_url())
            .await
            .unwrap();
        let uid = store
            .object_get(berth::api::Kind::Workspace, "default", "frank")
            .await
            .unwrap()
            .unwrap()
            .metadata
            .uid
            .unwrap();
        store.agent_token_set(uid, token).await.unwrap();
    });
    let (server, _) = op.server_and_token();
    let home = op.dir().join("frank-home");
    std::fs::create_dir_all(&home).unwrap();
    let log = std::fs::File::create(op.dir().join("agent.log")).unwrap();
    let mut agent = Command::new(BERTH)
        .arg("agent")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("BERTH_API_URL", &server)
        .env("BERTH_AGENT_TOKEN", token)
        .env("BERTH_NAMESPACE", "default")
        .env("BERTH_WORKSPACE", "frank")
        .env("BERTH_AGENT_DIR", op.dir().join("agent-dir"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();

    // Mid-script (some lines stored, most not yet written), the operator dies.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(op.database_url()).0.len() < 20 {
        assert!(
            Instant::now() < deadline,
            "no output stored:\n{}",
            agent_log(op.dir())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = stored(op.database_url()).0.len();
    assert!(
        before < 250,
        "the crash must come mid-script ({before} lines)"
    );
    op.crash_and_restart();

    let deadline = Instant::now() + Duration::from_secs(60);
    let (lines, state, dropped) = loop {
        let s = stored(op.database_url());
        if s.1 == "Succeeded" && s.0.len() >= 300 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the script did not finish with its 300 lines stored ({} lines, {}):\n{}",
            s.0.len(),
            s.1,
            agent_log(op.dir())
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(state, "Succeeded");
    assert_eq!(dropped, 0, "no line was dropped");
    assert_eq!(lines.len(), 300, "every line stored exactly once");
    for (i, (seq, text)) in lines.iter().enumerate() {
        assert_eq!(*seq, i as i64);
        assert_eq!(text, &format!("line {}", i + 1));
    }
    assert_eq!(
        std::fs::read_to_string(home.join("runs")).unwrap(),
        "run\n",
        "the script ran once"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = agent.wait().unwrap();
    assert!(
        status.success(),
        "the agent exits 0 on SIGTERM: {status:?}\n{}",
        agent_log(op.dir())
    );
}

fn agent_log(dir: &Path) -> String {
    tail(
        &std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default(),
        40,
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A web app "inside the workspace" (the local runtime's workspace shares
/// this machine's loopback): a page and a WebSocket echo under its base path.
fn start_app(port: u16, base: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        runtime().block_on(async move {
            use axum::extract::ws::{Message, WebSocketUpgrade};
            use axum::routing::get;
            let app = axum::Router::new()
                .route(
                    base,
                    get(|headers: axum::http::HeaderMap| async move {
                        let leaked = headers.contains_key("authorization")
                            || headers
                                .get("cookie")
                                .and_then(|c| c.to_str().ok())
                                .is_some_and(|c| c.contains("berth_app_session"));
                        format!("hello from the app; berth credentials seen: {leaked}")
                    }),
                )
                .route(
                    &format!("{base}echo"),
                    get(|ws: WebSocketUpgrade| async move {
                        ws.on_upgrade(|mut s| async move {
                            while let Some(Ok(m)) = s.recv().await {
                                if let Message::Text(t) = m {
                                    let _ =
                                        s.send(Message::Text(format!("echo: {t}").into())).await;
                                }
                            }
                        })
                    }),
                );
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            axum::serve(l, app).await.unwrap();
        })
    })
}

/// `--apps-domain`: each app on a host of its own. The owner's link signs
/// the browser in on that host only; `share: authenticated` lets another
/// user in there, `share: owner` does not; the host serves the app (with
/// its base path) and never the API; requests from other sites, and
/// same-site ones other than a page navigation, are refused.
#[test]
fn apps_on_origins_of_their_own_honour_share_and_keep_the_api_out_of_reach() {
    let op = Operator::start_with(&[
        "--cloud",
        "sim",
        "--sim-delay-scale",
        "0.05",
        "--apps-domain",
        "apps.test",
    ]);
    let (web_port, pub_port) = (free_port(), free_port());
    let _web = start_app(web_port, "/@gina/gina/apps/web/");
    let _pub = start_app(pub_port, "/@gina/gina/apps/pub/");
    apply(
        &op,
        &LOCAL_TEMPLATE
            .replace("name: e2e\n", "name: apps\n")
            .replace("    name: e2e\n", "    name: apps\n")
            .replace("name: erin", "name: gina")
            .replace("owner: erin", "owner: gina")
            .replace(
                "  scripts:\n",
                &format!(
                    "  apps:\n    - slug: web\n      displayName: Web\n      port: {web_port}\n    - slug: pub\n      displayName: Shared\n      port: {pub_port}\n      share: authenticated\n  scripts:\n"
                ),
            ),
    );
    eventually(&op, "gina", "running its agent", |ws| {
        ws.pointer("/status/agent/connected") == Some(&Value::Bool(true))
    });
    let (server, _admin) = op.server_and_token();
    let port: u16 = server.rsplit(':').next().unwrap().parse().unwrap();
    let loopback: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let gina = ok(&op, &["token", "create", "gina"])
        .stdout
        .trim()
        .to_string();
    let mallory = ok(&op, &["token", "create", "mallory"])
        .stdout
        .trim()
        .to_string();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("web--gina--default.apps.test", loopback)
        .resolve("pub--gina--default.apps.test", loopback)
        .resolve("nope--gina--default.apps.test", loopback)
        .build()
        .unwrap();
    let open = |token: String, app: &'static str| {
        let http = http.clone();
        let server = server.clone();
        async move {
            http.post(format!(
                "{server}/apis/berth.dev/v1alpha1/namespaces/default/workspaces/gina/open"
            ))
            .bearer_auth(token)
            .json(&serde_json::json!({ "app": app }))
            .send()
            .await
            .unwrap()
        }
    };
    // Follows a sign-in link: the session cookie for that host.
    let sign_in = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 303, "{url}");
            assert_eq!(r.headers()["location"], "/");
            let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
            assert!(
                cookie.contains("Path=/;")
                    && cookie.contains("HttpOnly")
                    && cookie.contains("SameSite=Strict"),
                "{cookie}"
            );
            cookie.split(';').next().unwrap().to_string()
        }
    };
    runtime().block_on(async {
        let r = open(gina.clone(), "web").await;
        assert_eq!(r.status(), 201);
        let link: Value = r.json().await.unwrap();
        let url = link["url"].as_str().unwrap().to_string();
        assert!(
            url.starts_with(&format!(
                "http://web--gina--default.apps.test:{port}/?berth_ticket="
            )),
            "{url}"
        );
        let session = sign_in(url).await;
        let web = format!("http://web--gina--default.apps.test:{port}/");
        let page = http
            .get(&web)
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "the app at the root of its host");
        assert_eq!(
            page.text().await.unwrap(),
            "hello from the app; berth credentials seen: false"
        );
        // The cookie is that host's: the other app's host does not take it.
        let r = http
            .get(format!("http://pub--gina--default.apps.test:{port}/"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // A host that names no app answers like one that does to a caller
        // who is not signed in (no existence oracle).
        let r = http
            .get(format!("http://nope--gina--default.apps.test:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // The host is the app's: the API is not reachable there.
        let r = http
            .get(format!("{web}apis/berth.dev/v1alpha1/whoami"))
            .bearer_auth(&gina)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(!body.contains("\"user\""), "{status}: {body}");
        // Other sites are refused; a sibling app's page only by navigating.
        for (site, mode, code) in [
            ("cross-site", "navigate", 403),
            ("same-site", "cors", 403),
            ("same-site", "navigate", 200),
        ] {
            let r = http
                .get(&web)
                .header("cookie", &session)
                .header("sec-fetch-site", site)
                .header("sec-fetch-mode", mode)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), code, "{site} {mode}");
        }
        // share: owner: another user gets no link; share: authenticated: they do.
        assert_eq!(open(mallory.clone(), "web").await.status(), 404);
        let r = open(mallory.clone(), "pub").await;
        assert_eq!(r.status(), 201, "share: authenticated");
        let link: Value = r.json().await.unwrap();
        let session = sign_in(link["url"].as_str().unwrap().to_string()).await;
        let page = http
            .get(format!("http://pub--gina--default.apps.test:{port}/"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        // Their session does not open the owner-only app, even with its host.
        let r = http.get(&web).bearer_auth(&mallory).send().await.unwrap();
        assert_eq!(r.status(), 404, "share: owner");
    });
}

#[test]
fn apps_port_forward_and_relay_paths_admit_the_owner_only() {
    let op = Operator::start_with(&["--cloud", "sim", "--sim-delay-scale", "0.05"]);
    let port = free_port();
    let _app = start_app(port, "/@gina/gina/apps/web/");
    apply(
        &op,
        &LOCAL_TEMPLATE
            .replace("name: e2e\n", "name: apps\n")
            .replace("    name: e2e\n", "    name: apps\n")
            .replace("name: erin", "name: gina")
            .replace("owner: erin", "owner: gina")
            .replace(
                "  scripts:\n",
                &format!("  apps:\n    - slug: web\n      displayName: Web\n      port: {port}\n  scripts:\n"),
            ),
    );
    eventually(&op, "gina", "running its agent", |ws| {
        ws.pointer("/status/agent/connected") == Some(&Value::Bool(true))
    });
    let (server, admin) = op.server_and_token();
    let gina = ok(&op, &["token", "create", "gina"])
        .stdout
        .trim()
        .to_string();
    let mallory = ok(&op, &["token", "create", "mallory"])
        .stdout
        .trim()
        .to_string();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let app_url = format!("{server}/@gina/gina/apps/web/");
    runtime().block_on(async {
        // Without a session: refused.
        let r = http.get(&app_url).send().await.unwrap();
        assert_eq!(r.status(), 401);
        // The owner gets a one-time link; it becomes a cookie.
        let open = http
            .post(format!("{server}/apis/berth.dev/v1alpha1/namespaces/default/workspaces/gina/open"))
            .bearer_auth(&gina)
            .json(&serde_json::json!({"app": "web"}))
            .send()
            .await
            .unwrap();
        assert_eq!(open.status(), 201);
        let link: Value = open.json().await.unwrap();
        let url = format!("{server}{}", link["url"].as_str().unwrap());
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/@gina/gina/apps/web/");
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        assert!(cookie.contains("Path=/@gina/gina/apps/web/"), "{cookie}");
        let session = cookie.split(';').next().unwrap().to_string();
        assert_eq!(http.get(&url).send().await.unwrap().status(), 401, "a link works once");
        let page = http.get(&app_url).header("cookie", &session).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(
            page.text().await.unwrap(),
            "hello from the app; berth credentials seen: false"
        );
        // Cross-site requests are refused even with the cookie.
        let r = http
            .get(&app_url)
            .header("cookie", &session)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        // A WebSocket through the app path, with the cookie.
        use futures_util::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let ws_url = format!("{}echo", app_url.replace("http://", "ws://"));
        let mut req = ws_url.clone().into_client_request().unwrap();
        req.headers_mut().insert("cookie", session.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("websocket with the cookie");
        ws.send(tokio_tungstenite::tungstenite::Message::text("hi")).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.to_text().unwrap(), "echo: hi");
        match tokio_tungstenite::connect_async(ws_url.clone()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
            other => panic!("a websocket without the cookie must be refused: {other:?}"),
        }
        // Another user: refused on the app (token or ticket), the relay and port-forwards.
        let r = http.get(&app_url).bearer_auth(&mallory).send().await.unwrap();
        assert_eq!(r.status(), 404, "another user's token on the app");
        let r = http
            .post(format!("{server}/apis/berth.dev/v1alpha1/namespaces/default/workspaces/gina/open"))
            .bearer_auth(&mallory)
            .json(&serde_json::json!({"app": "web"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "another user cannot mint a link");
        for target in ["target=ssh", &format!("target=tcp&port={port}")] {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("authorization", format!("Bearer {mallory}").parse().unwrap());
            let url = format!("{server}/apis/berth.dev/v1alpha1/namespaces/default/workspaces/gina/connect?{target}");
            match berth::relay::ws::dial(&reqwest::Client::new(), &url, h).await {
                Err(berth::relay::ws::DialError::Refused { status, .. }) => assert_eq!(status, 404, "{target}"),
                other => panic!("{target}: another user's token must be refused: {:?}", other.err()),
            }
        }
        let _ = admin;
    });

    // berth port-forward reaches the same server inside the workspace.
    let local = free_port();
    let mut pf = op
        .command(&["port-forward", "gina", &format!("{local}:{port}")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut lines = std::io::BufReader::new(pf.stdout.take().unwrap());
    lines.read_line(&mut first).unwrap();
    assert_eq!(
        first,
        format!("Forwarding from 127.0.0.1:{local} -> {port}\n")
    );
    let body = runtime().block_on(async {
        reqwest::get(format!("http://127.0.0.1:{local}/@gina/gina/apps/web/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(body.starts_with("hello from the app"), "{body}");
    let mut second = String::new();
    lines.read_line(&mut second).unwrap();
    assert_eq!(second, format!("Handling connection for {local}\n"));
    let _ = pf.kill();
    let _ = pf.wait();
    let out = ok(&op, &["describe", "ws", "gina"]);
    assert!(
        out.stdout
            .contains(&format!("connected (port-forward:{port})")),
        "{}",
        out.stdout
    );
    let ws = workspace(&op, "gina");
    let source = ws
        .pointer("/status/lastActivitySource")
        .and_then(Value::as_str)
        .unwrap_or("");
    assert!(
        source == "app:web" || source.starts_with("port-forward:"),
        "{source}"
    );
}

/// The local template under another name, for a workspace `name` owned by `name`.
fn local_template(template: &str, name: &str) -> String {
    LOCAL_TEMPLATE
        .replace("name: e2e\n", &format!("name: {template}\n"))
        .replace("name: erin", &format!("name: {name}"))
        .replace("owner: erin", &format!("owner: {name}"))
}

#[test]
fn berth_ssh_and_openssh_through_config_ssh_reach_the_workspace_and_a_stopped_one_is_started() {
    let op = Operator::start_with(&["--cloud", "sim", "--sim-delay-scale", "0.05"]);
    apply(&op, &local_template("sshy", "hank"));
    eventually(&op, "hank", "running its agent", |ws| {
        ws.pointer("/status/agent/connected") == Some(&Value::Bool(true))
    });
    let home = op.dir().join("sim/efs/fs-1/homes/default/hank");

    // A command: its output, its exit status; words reach the shell as given.
    let out = op.cli(&["ssh", "hank", "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(
        (out.stdout.as_str(), out.code),
        ("hi\n", 3),
        "{}",
        out.stderr
    );
    // 10 MiB through cat, byte for byte.
    let blob: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut cat = op
        .command(&["ssh", "hank", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = cat.stdin.take().unwrap();
    let sent = blob.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        stdin.write_all(&sent).unwrap();
    });
    let back = cat.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert_eq!(back.stdout.len(), blob.len());
    assert!(back.stdout == blob, "10 MiB come back identical");
    // A file written through ssh lands in the owner's home.
    let out = op.cli(&["ssh", "hank", "--", "sh", "-c", "echo kept > notes.txt"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(home.join("notes.txt")).unwrap(),
        "kept\n"
    );

    // The stock OpenSSH client through the ProxyCommand config-ssh writes.
    let ssh_config = op.dir().join("ssh_config");
    std::fs::write(&ssh_config, "Host other\n  User me\n").unwrap();
    let (server, token) = op.server_and_token();
    let cfg = |args: &[&str]| {
        let out = Command::new(BERTH)
            .args([
                "--server",
                &server,
                "--token",
                &token,
                "config-ssh",
                "--ssh-config",
            ])
            .arg(&ssh_config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(cfg(&["--dry-run"]).contains("+Host berth.*"));
    assert_eq!(
        std::fs::read_to_string(&ssh_config).unwrap(),
        "Host other\n  User me\n",
        "a dry run writes nothing"
    );
    cfg(&[]);
    let written = std::fs::read_to_string(&ssh_config).unwrap();
    assert!(written.starts_with("Host other\n  User me\n"), "{written}");
    assert!(cfg(&[]).contains("up to date"));
    // The ProxyCommand's berth finds the server and token in its environment.
    let openssh = |args: &[&str]| {
        Command::new("ssh")
            .arg("-F")
            .arg(&ssh_config)
            .args(args)
            .env("BERTH_SERVER", &server)
            .env("BERTH_TOKEN", &token)
            .output()
            .unwrap()
    };
    let out = openssh(&["berth.hank", "true"]);
    assert!(
        out.status.success(),
        "ssh berth.hank true: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = op.dir().join("upload.txt");
    std::fs::write(&local, "through scp\n").unwrap();
    let out = Command::new("scp")
        .arg("-F")
        .arg(&ssh_config)
        .arg(&local)
        .arg("berth.hank:uploaded.txt")
        .env("BERTH_SERVER", &server)
        .env("BERTH_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(home.join("uploaded.txt")).unwrap(),
        "through scp\n"
    );

    // A stopped workspace: --no-start refuses; a plain ssh starts it (reason Connect).
    ok(&op, &["stop", "hank"]);
    eventually(&op, "hank", "Stopped", |ws| {
        ws.pointer("/status/phase") == Some(&Value::from("Stopped"))
    });
    let out = op.cli(&["ssh", "hank", "--no-start", "--", "true"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("is Stopped"), "{}", out.stderr);
    let out = op.cli(&["ssh", "hank", "--", "cat", "notes.txt"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "kept\n", "the file survived stop and start");
    assert!(
        out.stderr.contains("Starting workspace hank"),
        "{}",
        out.stderr
    );
    let ws = workspace(&op, "hank");
    assert_eq!(
        ws.pointer("/status/lastTransition/reason"),
        Some(&Value::from("Connect")),
        "{:#}",
        ws["status"]["lastTransition"]
    );
}

/// A one-backend TCP load balancer whose backend can be switched.
fn balancer(backend: std::sync::Arc<std::sync::Mutex<String>>) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((mut client, _)) = l.accept().await else {
                    continue;
                };
                let to = backend.lock().unwrap().clone();
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                    }
                });
            }
        })
    });
    format!("http://{addr}")
}

#[test]
fn with_two_replicas_a_client_on_either_reaches_the_agent_and_a_dead_replicas_agent_moves() {
    let mut op = Operator::start();
    let app_port = free_port();
    let _app = start_app(app_port, "/@frank/frank/apps/web/");
    apply(
        &op,
        AGENT_TEMPLATE
            .replace("sleep 0.02", "sleep 0.001")
            .replace(
                "  scripts:\n",
                &format!("  apps:\n    - slug: web\n      displayName: Web\n      port: {app_port}\n  scripts:\n"),
            )
            .as_str(),
    );
    let (b, b_url) = op.start_replica(&[]);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _b = Kill(b);
    let token = "berth_agent_e2e_frank_2";
    runtime().block_on(async {
        let store = berth::store::Store::connect(op.database_url())
            .await
            .unwrap();
        let uid = store
            .object_get(berth::api::Kind::Workspace, "default", "frank")
            .await
            .unwrap()
            .unwrap()
            .metadata
            .uid
            .unwrap();
        store.agent_token_set(uid, token).await.unwrap();
    });
    let (a_url, admin) = op.server_and_token();
    // The agent reaches "the operator" through a balancer that sends it to A.
    let backend = std::sync::Arc::new(std::sync::Mutex::new(
        a_url.trim_start_matches("http://").to_string(),
    ));
    let lb = balancer(backend.clone());
    let home = op.dir().join("frank-home");
    std::fs::create_dir_all(&home).unwrap();
    let log = std::fs::File::create(op.dir().join("agent.log")).unwrap();
    let agent = Command::new(BERTH)
        .arg("agent")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("BERTH_API_URL", &lb)
        .env("BERTH_AGENT_TOKEN", token)
        .env("BERTH_NAMESPACE", "default")
        .env("BERTH_WORKSPACE", "frank")
        .env("BERTH_AGENT_DIR", op.dir().join("agent-dir"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _agent = Kill(agent);
    let dir = op.dir().to_path_buf();
    let ssh_via = |server: &str, what: &str| {
        Command::new(BERTH)
            .args([
                "--server", server, "--token", &admin, "ssh", "frank", "--", "echo", what,
            ])
            .env_remove("BERTH_CONFIG")
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let until_ok = |server: &str, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let out = ssh_via(server, what);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "ssh via {server}: {}\n--- agent:\n{}",
                String::from_utf8_lossy(&out.stderr),
                agent_log(&dir)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // Agent on A; the client on A, then on B (forwarded to A).
    assert_eq!(until_ok(&a_url, "via-a"), "via-a\n");
    assert_eq!(until_ok(&b_url, "via-b"), "via-b\n");
    // An app through B too: a browser session has no token to pass on, so
    // B opens the stream through A with a one-time relay ticket.
    runtime().block_on(async {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let open = http
            .post(format!(
                "{b_url}/apis/berth.dev/v1alpha1/namespaces/default/workspaces/frank/open"
            ))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"app": "web"}))
            .send()
            .await
            .unwrap();
        assert_eq!(open.status(), 201);
        let link: Value = open.json().await.unwrap();
        let r = http
            .get(format!("{b_url}{}", link["url"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let session = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let app_url = format!("{b_url}/@frank/frank/apps/web/");
        let page = http
            .get(&app_url)
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(
            page.status(),
            200,
            "the app through the replica without the agent"
        );
        assert_eq!(
            page.text().await.unwrap(),
            "hello from the app; berth credentials seen: false"
        );
        use futures_util::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut req = format!("{}echo", app_url.replace("http://", "ws://"))
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("cookie", session.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("an app websocket through B");
        ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.to_text().unwrap(), "echo: hi");
        // A relay ticket is good once, and only from a forwarding replica.
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-berth-relay-ticket", "berth_forged".parse().unwrap());
        h.insert("x-berth-forwarded", "1".parse().unwrap());
        let url = format!(
            "{a_url}/apis/berth.dev/v1alpha1/namespaces/default/workspaces/frank/connect?target=ssh"
        );
        match berth::relay::ws::dial(&reqwest::Client::new(), &url, h).await {
            Err(berth::relay::ws::DialError::Refused { status, .. }) => assert_eq!(status, 401),
            other => panic!("a forged relay ticket must be refused: {:?}", other.err()),
        }
    });
    // A dies; the balancer sends the agent to B, and B serves new sessions.
    op.kill();
    *backend.lock().unwrap() = b_url.trim_start_matches("http://").to_string();
    let moved = Instant::now();
    assert_eq!(until_ok(&b_url, "after-failover"), "after-failover\n");
    println!(
        "ssh through B works {:?} after A was killed",
        moved.elapsed()
    );
}

/// Real activity: an open `berth ssh` session keeps a workspace with
/// `afterInactivity: 1m` running past its minute; once it ends, the
/// workspace stops about a minute later. (About 3 minutes of wall time.)
#[test]
fn an_open_session_holds_off_autostop_and_the_workspace_stops_a_minute_after_it_ends() {
    let op = Operator::start_with(&["--cloud", "sim", "--sim-delay-scale", "0.05"]);
    apply(
        &op,
        &local_template("idle", "ivan").replace(
            "    name: idle\n",
            "    name: idle\n  schedule:\n    autostop:\n      afterInactivity: 1m\n",
        ),
    );
    eventually(&op, "ivan", "running its agent", |ws| {
        ws.pointer("/status/agent/connected") == Some(&Value::Bool(true))
    });
    let began = Instant::now();
    let session = op
        .command(&["ssh", "ivan", "--", "sleep", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = session.wait_with_output().unwrap();
    assert!(out.status.success(), "the session ran to its end");
    let ws = workspace(&op, "ivan");
    assert_eq!(
        ws.pointer("/status/phase"),
        Some(&Value::from("Running")),
        "still running {:?} after the session began, with afterInactivity 1m",
        began.elapsed()
    );
    assert_eq!(
        ws.pointer("/status/lastActivitySource"),
        Some(&Value::from("ssh"))
    );
    let ended = Instant::now();
    let deadline = ended + Duration::from_secs(150);
    loop {
        let ws = workspace(&op, "ivan");
        if matches!(
            ws.pointer("/status/phase").and_then(Value::as_str),
            Some("Stopping" | "Stopped")
        ) {
            assert_eq!(
                ws.pointer("/status/lastTransition/reason"),
                Some(&Value::from("AutoStop")),
                "{:#}",
                ws["status"]["lastTransition"]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not stopped 150 s after the session ended"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let idle = ended.elapsed();
    println!("stopped {idle:?} after the session ended");
    assert!(
        idle >= Duration::from_secs(30),
        "stopped too early: {idle:?}"
    );
}
