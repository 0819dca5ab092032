//! The web dashboard, end to end through the built `berth operator` on a
//! real PostgreSQL:
//!
//! * in a real Chromium (Debian's `chromium` + `chromium-driver`, headless,
//!   driven over WebDriver): an owner signs in with a token, sees their
//!   workspace, stops and starts it from its page and watches it come back
//!   Running with its agent Ready without a reload, reads a script's output
//!   as it is written, runs a command in the web terminal; another user
//!   signs in with the keyboard alone, sees only their own workspace (and a
//!   stop made elsewhere without a reload) and is refused another's page
//!   and API; at a phone's width (390×844) the list and a workspace's page
//!   fit the screen with their main buttons on it;
//! * settings: the size that runs and a change pending for the next start,
//!   CPU and memory offered only as valid Fargate pairs (within the
//!   template's options; memory follows a change of CPU), a saved change of
//!   size, parameters and schedule (checked with `berth get -o json`), a
//!   value the API refuses shown next to its field and not saved, immutable
//!   parameters read-only, a change made elsewhere refused (409) with a
//!   Reload; creating a workspace from a template (a bad name refused next
//!   to its field) that reaches Running; the templates page with each
//!   version's creation time, what it changed, resources and parameters, the
//!   active one marked; an admin publishing a new version from the page (an
//!   invalid one refused with the API's error, nothing changed; a stale one
//!   refused), a user without write controls whose direct write is refused;
//! * over plain HTTP: the session cookie's flags, the CSRF token and the
//!   origin checks on state-changing requests, sign-out, and the one-time
//!   sign-in ticket.
//!
//! Screenshots go to `target/dashboard-screenshots/`.

#[path = "cli_common.rs"]
mod cli_common;

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_common::{runtime, CliOutput, Operator};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const API: &str = "/apis/berth.dev/v1alpha1";

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

/// A token for `user` (not an admin), minted with the admin's token.
async fn user_token(op: &Operator, user: &str) -> String {
    let (server, admin) = op.server_and_token();
    let resp = reqwest::Client::new()
        .post(format!("{server}{API}/tokens"))
        .bearer_auth(admin)
        .json(&json!({"user": user}))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "POST /tokens: {}",
        resp.status()
    );
    resp.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

const TEMPLATE: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: WorkspaceTemplate
metadata:
  name: web
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
    stopTimeout: 10
  resources:
    default: {cpu: 1024, memory: 2048}
  apps:
    - slug: vscode
      displayName: VS Code Web
      port: 13337
  scripts:
    - name: setup
      script: |
        echo "setting up"
    - name: ticker
      blocksLogin: false
      script: |
        trap 'exit 0' TERM
        i=0
        while :; do
          i=$((i + 1))
          echo "tick $i"
          sleep 0.3 & wait $!
        done
---
apiVersion: berth.dev/v1alpha1
kind: Workspace
metadata:
  name: erin
spec:
  owner: erin
  template:
    name: web
---
apiVersion: berth.dev/v1alpha1
kind: Workspace
metadata:
  name: bob
spec:
  owner: bob
  template:
    name: web
"#;

// ---- the browser ------------------------------------------------------

/// A headless Chromium behind its own chromedriver.
struct Browser {
    driver: Child,
    client: Client,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, so that Chromium goes with it even when a
        // failing test never closes the session.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian: apt-get install chromium chromium-driver)");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--disable-breakpad", "--window-size=1280,800"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "chromedriver: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser { driver, client }
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.driver.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.driver.wait();
    }
}

/// Polls the text of `css` until `done` holds (60 s).
async fn wait_text(c: &Client, css: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await {
            if let Ok(t) = el.text().await {
                if done(&t) {
                    return t;
                }
                last = t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {css} still shows {last:?} after 60s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the web terminal's buffer holds, line by line.
async fn terminal_text(c: &Client) -> String {
    let v = c
        .execute(
            "const t = window.berthTerminal; if (!t) return '';
             const b = t.buffer.active; const out = [];
             for (let i = 0; i < b.length; i++) { const l = b.getLine(i); if (l) out.push(l.translateToString(true)); }
             return out.join('\\n');",
            vec![],
        )
        .await
        .unwrap();
    v.as_str().unwrap_or_default().to_string()
}

/// Polls `check` until it holds (60 s).
async fn wait_until<F, Fut>(check: F, what: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 60s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(png) = c.screenshot().await {
        let _ = std::fs::write(dir.join(format!("{name}.png")), png);
    }
}

async fn sign_in(c: &Client, server: &str, token: &str) {
    c.goto(&format!("{server}/")).await.unwrap();
    let input = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#token"))
        .await
        .expect("the sign-in form");
    input.send_keys(token).await.unwrap();
    c.find(Locator::Css("#signin"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// What `fetch(path)` answers inside the page (with the session cookie).
async fn page_fetch_status(c: &Client, path: &str) -> i64 {
    let v = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], {credentials: 'same-origin'}).then(r => done(r.status), e => done(-1));",
            vec![json!(path)],
        )
        .await
        .unwrap();
    v.as_i64().unwrap()
}

/// Asserts that the page is no wider than the window (no sideways
/// scrolling), naming the elements that stick out when it is.
async fn fits_the_width(c: &Client, what: &str) {
    let v = c
        .execute(
            "const w = window.innerWidth;
             const wide = [...document.querySelectorAll('body *')]
               .filter(e => e.getBoundingClientRect().right > w + 0.5)
               .slice(0, 8)
               .map(e => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${e.className} (${Math.round(e.getBoundingClientRect().right)}px)`);
             return [document.documentElement.scrollWidth, w, wide];",
            vec![],
        )
        .await
        .unwrap();
    let (scroll, width) = (v[0].as_i64().unwrap(), v[1].as_i64().unwrap());
    assert!(
        scroll <= width,
        "{what} is {scroll}px wide in a {width}px window; sticking out: {}",
        v[2]
    );
}

/// Asserts that the element at `css` is shown, inside the window's width.
async fn assert_on_screen(c: &Client, css: &str) {
    let v = c
        .execute(
            "const e = document.querySelector(arguments[0]);
             if (!e) return 'missing';
             const r = e.getBoundingClientRect();
             const s = getComputedStyle(e);
             if (e.hidden || s.display === 'none' || s.visibility === 'hidden' || r.width === 0 || r.height === 0) return 'hidden';
             if (r.left < 0 || r.right > window.innerWidth) return `outside the window (${Math.round(r.left)}..${Math.round(r.right)} of ${window.innerWidth}px)`;
             return 'ok';",
            vec![json!(css)],
        )
        .await
        .unwrap();
    assert_eq!(v, json!("ok"), "{css}");
}

fn ticks(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("tick "))
        .filter_map(|n| n.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn in_chromium_an_owner_signs_in_controls_their_workspace_and_sees_only_their_own() {
    let op = Operator::start_with(&["--cloud", "sim", "--sim-delay-scale", "0.05"]);
    apply(&op, TEMPLATE);
    let (server, _) = op.server_and_token();
    runtime().block_on(async {
        let erin = user_token(&op, "erin").await;
        let bob = user_token(&op, "bob").await;
        let b = Browser::start().await;
        let c = &b.client;

        // Sign in; the workspace is listed (and bob's is not).
        sign_in(c, &server, &erin).await;
        let row = "tr[data-workspace='default/erin']";
        wait_text(c, &format!("{row} .phase"), "erin's workspace", |t| {
            t == "Running"
        })
        .await;
        wait_text(c, &format!("{row} .agent"), "erin's agent", |t| {
            t.contains("connected · Ready")
        })
        .await;
        assert!(
            c.find(Locator::Css("tr[data-workspace='default/bob']"))
                .await
                .is_err(),
            "erin sees bob's workspace"
        );
        assert_eq!(
            wait_text(c, "#count", "the count", |t| !t.is_empty()).await,
            "1 workspace"
        );
        let cookies = c.get_all_cookies().await.unwrap();
        let session = cookies
            .iter()
            .find(|k| k.name() == "berth_session")
            .expect("a session cookie");
        assert_eq!(session.http_only(), Some(true));
        assert!(
            !c.source().await.unwrap().contains(&erin),
            "the token is in the page"
        );
        screenshot(c, "workspaces").await;

        // The workspace's page: the ticker's lines arrive as it writes them.
        c.find(Locator::Css(&format!("{row} a")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let log = "pre[data-script='ticker']";
        let first = ticks(&wait_text(c, log, "ticker output", |t| ticks(t) >= 2).await);
        let later =
            ticks(&wait_text(c, log, "more ticker output", |t| ticks(t) >= first + 3).await);
        assert!(later > first);
        assert!(c
            .find(Locator::Css("button[data-app='vscode']"))
            .await
            .is_ok());
        assert!(
            !c.find(Locator::Css("#action-update"))
                .await
                .unwrap()
                .is_displayed()
                .await
                .unwrap(),
            "Update is offered though the workspace is not outdated"
        );

        // Stop, then Start, without a reload.
        c.execute("window.__noReload = true;", vec![])
            .await
            .unwrap();
        c.find(Locator::Css("#action-stop"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_text(c, "#phase", "stopped", |t| t == "Stopped").await;
        c.find(Locator::Css("#action-start"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_text(c, "#phase", "running again", |t| t == "Running").await;
        wait_text(c, "#agent-state", "the agent again", |t| {
            t.contains("connected · Ready")
        })
        .await;
        // The new start's output streams into the panel as it is written.
        let again = ticks(&wait_text(c, log, "the new start's ticker", |t| ticks(t) >= 2).await);
        wait_text(c, log, "the new start's ticker, later", |t| {
            ticks(t) >= again + 3
        })
        .await;
        let still = c
            .execute("return window.__noReload === true;", vec![])
            .await
            .unwrap();
        assert_eq!(still, Value::Bool(true), "the page reloaded");
        wait_text(c, "#events", "events", |t| t.contains("erin")).await;

        // The web terminal.
        c.find(Locator::Css("#open-terminal"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let area = c
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#terminal .xterm-helper-textarea"))
            .await
            .expect("the terminal");
        // Typed only once the shell shows its prompt: a shell starting up
        // may flush input typed ahead of it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while terminal_text(c).await.trim().is_empty() {
            assert!(Instant::now() < deadline, "the shell shows no prompt");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for ch in "echo $((6*7))".chars() {
            area.send_keys(&ch.to_string()).await.unwrap();
        }
        area.send_keys("\u{E007}").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = terminal_text(c).await;
            if text.lines().any(|l| l.trim() == "42") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal shows no 42:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c.execute(
            "document.getElementById('terminal-box').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
        screenshot(c, "terminal").await;

        // A new template version: Update appears, and restarts onto it.
        apply(
            &op,
            &TEMPLATE.replace("echo \"setting up\"", "echo \"setting up v2\""),
        );
        let update = c.find(Locator::Css("#action-update")).await.unwrap();
        wait_until(
            || async { update.is_displayed().await.unwrap_or(false) },
            "Update offered",
        )
        .await;
        c.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
        screenshot(c, "workspace").await;
        update.click().await.unwrap();
        wait_text(
            c,
            "#overview dd[data-key='Template']",
            "the new version",
            |t| t == "web@2",
        )
        .await;
        wait_until(
            || async { !update.is_displayed().await.unwrap_or(true) },
            "Update gone",
        )
        .await;
        wait_text(c, "pre[data-script='setup']", "the new setup", |t| {
            t.contains("setting up v2")
        })
        .await;
        wait_text(c, "#phase", "running on v2", |t| t == "Running").await;

        // Another user: only their own workspace; erin's page and API refused.
        c.find(Locator::Css("#signout"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#token"))
            .await
            .expect("signed out");
        // Keyboard only: the token field has focus, Enter signs in.
        c.goto(&format!("{server}/")).await.unwrap();
        c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#token:focus"))
            .await
            .expect("the token field has focus");
        c.active_element()
            .await
            .unwrap()
            .send_keys(&format!("{bob}\u{E007}"))
            .await
            .unwrap();
        let bob_phase = "tr[data-workspace='default/bob'] .phase";
        wait_text(c, bob_phase, "bob's workspace", |t| t == "Running").await;
        // The list follows the watch: a stop made elsewhere shows up.
        let r = reqwest::Client::new()
            .post(format!(
                "{server}{API}/namespaces/default/workspaces/bob/stop"
            ))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        wait_text(c, bob_phase, "bob's workspace stopped", |t| t == "Stopped").await;
        assert!(c
            .find(Locator::Css("tr[data-workspace='default/erin']"))
            .await
            .is_err());
        // Phone width: nothing wider than the screen, the main buttons there.
        c.set_window_size(390, 844).await.unwrap();
        wait_until(
            || async {
                c.execute("return window.innerWidth;", vec![])
                    .await
                    .ok()
                    .and_then(|v| v.as_i64())
                    .is_some_and(|w| w <= 390)
            },
            "the phone-sized window",
        )
        .await;
        fits_the_width(c, "the workspaces page").await;
        for css in [
            "#create-workspace",
            "#signout",
            "tr[data-workspace='default/bob'] a",
        ] {
            assert_on_screen(c, css).await;
        }
        screenshot(c, "workspaces-phone").await;
        click(c, "tr[data-workspace='default/bob'] a").await;
        wait_text(c, "#phase", "bob's page", |t| t == "Stopped").await;
        c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#settings-form"))
            .await
            .expect("the settings form");
        fits_the_width(c, "a workspace's page").await;
        for css in [
            "#action-start",
            "#action-stop",
            "#action-restart",
            "#open-terminal",
            "#settings-save",
        ] {
            c.execute(
                "document.querySelector(arguments[0]).scrollIntoView({block: 'center'});",
                vec![json!(css)],
            )
            .await
            .unwrap();
            assert_on_screen(c, css).await;
        }
        c.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
        screenshot(c, "workspace-phone").await;
        c.set_window_size(1280, 800).await.unwrap();
        assert_eq!(
            page_fetch_status(c, &format!("{API}/namespaces/default/workspaces/erin")).await,
            404
        );
        assert_eq!(
            page_fetch_status(c, &format!("{API}/namespaces/default/workspaces/bob")).await,
            200
        );
        c.goto(&format!("{server}/workspaces/default/erin"))
            .await
            .unwrap();
        let body = c
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("not found"), "{body}");
        assert!(!body.contains("tick"), "{body}");
        b.close().await;
    });
}

// ---- plain HTTP ---------------------------------------------------------

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token`; returns the session cookie's `Set-Cookie` header.
async fn login(server: &str, token: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut req = no_redirects()
        .post(format!("{server}/login"))
        .json(&json!({"token": token}));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

#[test]
fn the_session_cookie_is_http_only_and_strict_and_writes_need_the_csrf_token_and_this_origin() {
    let op = Operator::start();
    apply(&op, TEMPLATE);
    let (server, admin) = op.server_and_token();
    runtime().block_on(async {
        let erin = user_token(&op, "erin").await;
        let bob = user_token(&op, "bob").await;
        let http = no_redirects();

        // A wrong token opens nothing; a foreign page cannot sign anyone in.
        assert_eq!(login(&server, "nope", &[]).await.status(), 401);
        assert_eq!(
            login(&server, &erin, &[("origin", "http://evil.example")])
                .await
                .status(),
            403
        );

        let resp = login(&server, &erin, &[]).await;
        assert_eq!(resp.status(), 200);
        let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(set.starts_with("berth_session="), "{set}");
        assert!(set.contains("; HttpOnly"), "{set}");
        assert!(set.contains("; SameSite=Strict"), "{set}");
        assert!(set.contains("; Path=/;"), "{set}");
        assert!(!set.contains("Secure"), "{set}");
        let https = login(&server, &erin, &[("x-forwarded-proto", "https")]).await;
        let set_https = https.headers()["set-cookie"].to_str().unwrap();
        assert!(set_https.ends_with("; Secure"), "{set_https}");
        let cookie = cookie_pair(&set);

        let info: Value = http
            .get(format!("{server}/dashboard/session"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["user"], "erin");
        assert_eq!(info["admin"], false);
        let csrf = info["csrf"].as_str().unwrap().to_string();

        let ws = format!("{server}{API}/namespaces/default/workspaces/erin");
        // Reads need the cookie only.
        let get = http
            .get(&ws)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 200);
        let other = http
            .get(format!("{server}{API}/namespaces/default/workspaces/bob"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 404, "erin reads bob's workspace");
        let list: Value = http
            .get(format!("{server}{API}/workspaces"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["erin"]);

        let stop = format!("{ws}/stop");
        let post = |headers: Vec<(&'static str, String)>| {
            let mut req = http.post(&stop).header("cookie", &cookie);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send()
        };
        // No CSRF token, a wrong one, a foreign origin, a cross-site fetch: refused.
        let r = post(vec![]).await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("CSRF"));
        assert_eq!(
            post(vec![("x-berth-csrf", "0".repeat(64))])
                .await
                .unwrap()
                .status(),
            403
        );
        assert_eq!(
            post(vec![
                ("x-berth-csrf", csrf.clone()),
                ("origin", "http://evil.example".into())
            ])
            .await
            .unwrap()
            .status(),
            403
        );
        assert_eq!(
            post(vec![
                ("x-berth-csrf", csrf.clone()),
                ("sec-fetch-site", "cross-site".into())
            ])
            .await
            .unwrap()
            .status(),
            403
        );
        // A foreign page cannot read through the cookie either.
        let cross_get = http
            .get(&ws)
            .header("cookie", &cookie)
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(cross_get.status(), 403);
        // With the token, from this origin: done.
        let host = server.trim_start_matches("http://").to_string();
        let r = post(vec![
            ("x-berth-csrf", csrf.clone()),
            ("origin", format!("http://{host}")),
            ("sec-fetch-site", "same-origin".into()),
        ])
        .await
        .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        // Behind a reverse proxy on another host name: the origin the proxy
        // reports counts, this replica's own address no longer does.
        let proxied = |origin: String| {
            http.get(&ws)
                .header("cookie", &cookie)
                .header("x-forwarded-host", "berth.example.com")
                .header("x-forwarded-proto", "https")
                .header("origin", origin)
                .header("sec-fetch-site", "same-origin")
                .send()
        };
        assert_eq!(
            proxied("https://berth.example.com".into())
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            proxied(format!("http://{host}")).await.unwrap().status(),
            403
        );
        assert_eq!(
            proxied("https://evil.example".into())
                .await
                .unwrap()
                .status(),
            403
        );
        // Another's workspace is refused even with a valid session and token.
        let r = http
            .post(format!(
                "{server}{API}/namespaces/default/workspaces/bob/stop"
            ))
            .header("cookie", &cookie)
            .header("x-berth-csrf", &csrf)
            .send()
            .await
            .unwrap();
        assert!(matches!(r.status().as_u16(), 403 | 404), "{}", r.status());
        let page = http
            .get(format!("{server}/workspaces/default/bob"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 404);
        // Bearer tokens work as before.
        let r = http
            .post(format!(
                "{server}{API}/namespaces/default/workspaces/bob/start"
            ))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());

        // Signing out needs the token too, and ends the session.
        let r = http
            .post(format!("{server}/logout"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = http
            .post(format!("{server}/logout"))
            .header("cookie", &cookie)
            .header("x-berth-csrf", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
        let gone = http
            .get(&ws)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 401);

        // The one-time sign-in link `berth up` prints.
        let store = berth::store::Store::connect(op.database_url())
            .await
            .unwrap();
        let link = berth::server::dashboard::sign_in_link(&store, &server)
            .await
            .unwrap();
        let foreign = http
            .get(&link)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(foreign.status(), 403, "a foreign page used the link");
        let r = http.get(&link).send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        let info: Value = http
            .get(format!("{server}/dashboard/session"))
            .header("cookie", cookie_pair(&set))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["user"], "admin");
        assert_eq!(info["admin"], true);
        let again = http.get(&link).send().await.unwrap();
        assert_eq!(again.status(), 303);
        assert_eq!(again.headers()["location"], "/login#ticket-invalid");
        assert!(again.headers().get("set-cookie").is_none());
        let _ = admin;
    });
}

// ---- settings, creating a workspace, templates ---------------------------

const DEV_TEMPLATE: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: WorkspaceTemplate
metadata:
  name: dev
  annotations:
    berth.dev/local-scripts: "true"
spec:
  displayName: Dev box
  description: A box for development
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
    stopTimeout: 10
  resources:
    default: {cpu: 1024, memory: 2048}
  parameters:
    - name: region
      displayName: Region
      type: string
      default: eu
      options: [eu, us]
    - name: branch
      displayName: Branch
      type: string
      default: main
      mutable: true
    - name: disk
      displayName: Scratch disk (GiB)
      type: number
      default: 20
      mutable: true
      validation: {min: 10, max: 100}
  scripts:
    - name: setup
      script: |
        echo "ready"
"#;

const ERIN_DEV: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: Workspace
metadata:
  name: erin
spec:
  owner: erin
  template:
    name: dev
  parameters:
    region: us
"#;

/// `berth get ws NAME -o json`, parsed.
fn ws_json(op: &Operator, name: &str) -> Value {
    serde_json::from_str(&ok(op, &["get", "ws", name, "-o", "json"]).stdout).unwrap()
}

async fn set_value(c: &Client, css: &str, value: &str) {
    let el = c.find(Locator::Css(css)).await.unwrap();
    el.clear().await.unwrap();
    el.send_keys(value).await.unwrap();
}

/// The values a `<select>` offers, in order.
async fn options(c: &Client, css: &str) -> Vec<String> {
    let v = c
        .execute(
            "return [...document.querySelector(arguments[0]).options].map(o => o.value);",
            vec![json!(css)],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// `lo..=hi` MiB in steps of `step`, as a select's values.
fn mib(lo: u32, hi: u32, step: usize) -> Vec<String> {
    (lo..=hi).step_by(step).map(|m| m.to_string()).collect()
}

/// Picks `value` in the `<select>` at `css` as a user would.
async fn choose(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("{css}: no option {value}: {e}"));
}

/// Clicks `css` once it is there (20 s).
async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// A property of the element at `css`; found again when live updates
/// replace the element between finding and reading it.
async fn prop(c: &Client, css: &str, name: &str) -> String {
    for _ in 0..20 {
        let el = c.find(Locator::Css(css)).await.unwrap();
        match el.prop(name).await {
            Ok(v) => return v.unwrap_or_default(),
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{css}: {name}: {e}"),
        }
    }
    panic!("{css}: replaced 20 times in a row while reading {name}")
}

#[test]
fn in_chromium_settings_save_sizes_parameters_and_schedule_and_show_field_errors_and_conflicts() {
    let op = Operator::start_with(&["--cloud", "sim", "--sim-delay-scale", "0.05"]);
    apply(&op, &format!("{DEV_TEMPLATE}---{ERIN_DEV}"));
    let (server, _) = op.server_and_token();
    runtime().block_on(async {
        let erin = user_token(&op, "erin").await;
        let b = Browser::start().await;
        let c = &b.client;
        sign_in(c, &server, &erin).await;
        wait_text(
            c,
            "tr[data-workspace='default/erin'] .phase",
            "listed",
            |t| t == "Running",
        )
        .await;
        c.goto(&format!("{server}/workspaces/default/erin"))
            .await
            .unwrap();
        wait_text(c, "#phase", "running", |t| t == "Running").await;
        // What runs, from status.resources (the template's default here).
        let size = "#overview dd[data-key='CPU / memory']";
        wait_text(c, size, "the running size", |t| {
            t == "1024 CPU units / 2048 MiB"
        })
        .await;
        // The form shows the workspace's values; the immutable one is read-only.
        c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#settings-form"))
            .await
            .expect("the settings form");
        assert_eq!(prop(c, "#set-memory", "value").await, "2048");
        assert_eq!(prop(c, "#set-cpu", "value").await, "1024");
        let region = c.find(Locator::Css("#set-param-region")).await.unwrap();
        assert!(!region.is_enabled().await.unwrap(), "region is editable");
        assert_eq!(
            region
                .find(Locator::Css("option:checked"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            "us"
        );
        assert_eq!(prop(c, "#set-param-branch", "value").await, "main");

        // CPU and memory are lists of the Fargate pairs (the template offers
        // any size): every Fargate CPU, and the memory that CPU runs with.
        assert_eq!(
            options(c, "#set-cpu").await,
            ["256", "512", "1024", "2048", "4096", "8192", "16384"]
        );
        assert_eq!(options(c, "#set-memory").await, mib(2048, 8192, 1024));
        // Another CPU: the memory list follows; a memory still valid stays.
        choose(c, "#set-cpu", "512").await;
        assert_eq!(
            options(c, "#set-memory").await,
            ["1024", "2048", "3072", "4096"]
        );
        assert_eq!(prop(c, "#set-memory", "value").await, "2048");
        // One it no longer runs with gives way to the smallest valid one.
        choose(c, "#set-cpu", "4096").await;
        assert_eq!(options(c, "#set-memory").await, mib(8192, 30720, 1024));
        assert_eq!(prop(c, "#set-memory", "value").await, "8192");
        choose(c, "#set-cpu", "16384").await;
        assert_eq!(options(c, "#set-memory").await, mib(32768, 122880, 8192));
        choose(c, "#set-cpu", "1024").await;
        assert_eq!(options(c, "#set-memory").await, mib(2048, 8192, 1024));
        choose(c, "#set-memory", "8192").await;

        // A value the API refuses (the form lets any number through): the
        // error shows next to its field; nothing is saved.
        set_value(c, "#set-param-disk", "500").await;
        click(c, "#settings-save").await;
        let err = wait_text(c, "#set-param-disk-error", "the disk error", |t| {
            !t.is_empty()
        })
        .await;
        assert!(err.contains("greater than the maximum 100"), "{err}");
        let invalid = c
            .find(Locator::Css("div.field.invalid #set-param-disk"))
            .await;
        assert!(invalid.is_ok(), "the disk field is not marked invalid");
        for other in [
            "#set-cpu-error",
            "#set-memory-error",
            "#set-param-branch-error",
        ] {
            assert_eq!(wait_text(c, other, "no other error", |_| true).await, "");
        }
        screenshot(c, "settings-error").await;
        let spec = &ws_json(&op, "erin")["spec"];
        assert!(spec.get("resources").is_none(), "{spec}");
        assert_eq!(spec["parameters"], json!({"region": "us"}));
        set_value(c, "#set-param-disk", "20").await;

        // A valid change: saved, and shown as applying at the next start.
        choose(c, "#set-memory", "4096").await;
        set_value(c, "#set-param-branch", "dev").await;
        set_value(c, "#set-after", "2h").await;
        set_value(c, "#set-cron", "0 9 * * 1-5").await;
        set_value(c, "#set-tz", "Europe/Berlin").await;
        click(c, "#settings-save").await;
        wait_text(c, "#settings-saved", "saved", |t| t.starts_with("Saved")).await;
        assert_eq!(
            wait_text(c, "#set-param-disk-error", "error cleared", |_| true).await,
            ""
        );
        wait_text(c, size, "the pending change", |t| {
            t == "1024 CPU units / 2048 MiB · 2048 → 4096 MiB at next start"
        })
        .await;
        let spec = ws_json(&op, "erin")["spec"].clone();
        assert_eq!(spec["resources"], json!({"cpu": 1024, "memory": 4096}));
        assert_eq!(spec["parameters"], json!({"region": "us", "branch": "dev"}));
        assert_eq!(spec["schedule"]["autostop"]["afterInactivity"], "2h");
        assert_eq!(
            spec["schedule"]["autostart"],
            json!({"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"})
        );
        c.execute("document.getElementById('h-set').scrollIntoView();", vec![])
            .await
            .unwrap();
        screenshot(c, "settings").await;
        // The whole page, for the README.
        c.set_window_size(1280, 1300).await.unwrap();
        c.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
        screenshot(c, "workspace-settings").await;
        c.set_window_size(1280, 800).await.unwrap();

        // Changed elsewhere: the page says so and a save is refused (409).
        apply(
            &op,
            &format!("{ERIN_DEV}  resources: {{cpu: 1024, memory: 8192}}\n"),
        );
        let stale = c.find(Locator::Css("#settings-stale")).await.unwrap();
        wait_until(
            || async { stale.is_displayed().await.unwrap_or(false) },
            "the stale notice",
        )
        .await;
        choose(c, "#set-memory", "5120").await;
        click(c, "#settings-save").await;
        let msg = wait_text(c, "#settings-form .form-error", "the conflict", |t| {
            !t.is_empty()
        })
        .await;
        assert!(msg.contains("changed elsewhere"), "{msg}");
        assert_eq!(
            ws_json(&op, "erin")["spec"]["resources"]["memory"],
            8192,
            "the stale form overwrote the change"
        );
        click(c, "#settings-reload").await;
        wait_until(
            || async { prop(c, "#set-memory", "value").await == "8192" },
            "the reloaded form",
        )
        .await;
        assert!(!stale.is_displayed().await.unwrap_or(true));

        // After a restart the new size is what runs.
        click(c, "#action-restart").await;
        wait_text(c, size, "the new size running", |t| {
            t == "1024 CPU units / 8192 MiB"
        })
        .await;
        wait_text(c, "#phase", "running again", |t| t == "Running").await;
        b.close().await;
    });
}

#[test]
fn in_chromium_a_user_creates_a_workspace_from_a_template_and_reads_the_templates_page() {
    let op = Operator::start_with(&["--cloud", "sim", "--sim-delay-scale", "0.05"]);
    apply(&op, DEV_TEMPLATE);
    // Version 2: offered sizes and a new parameter.
    apply(
        &op,
        &DEV_TEMPLATE.replace(
            "    default: {cpu: 1024, memory: 2048}\n",
            "    default: {cpu: 1024, memory: 2048}\n    cpuOptions: [1024, 2048]\n    memoryOptions: [2048, 4096, 8192]\n",
        )
        .replace(
            "  scripts:\n",
            "    - name: dotfiles\n      type: bool\n      default: false\n      mutable: true\n  scripts:\n",
        ),
    );
    let (server, _) = op.server_and_token();
    runtime().block_on(async {
        let erin = user_token(&op, "erin").await;
        let b = Browser::start().await;
        let c = &b.client;
        sign_in(c, &server, &erin).await;
        wait_text(c, "#count", "the list", |t| t == "0 workspaces").await;

        // The templates page: both versions, the active one marked, each
        // with its own parameters and resources.
        click(c, "nav.pages a[href='/templates']").await;
        let tpl = "section[data-template='default/dev']";
        let v2 = format!("{tpl} details[data-version='2']");
        let v1 = format!("{tpl} details[data-version='1']");
        let t2 = wait_text(c, &format!("{v2} summary"), "version 2", |t| !t.is_empty()).await;
        assert!(t2.contains("Version 2") && t2.contains("active"), "{t2}");
        let t1 = c
            .find(Locator::Css(&format!("{v1} summary")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(t1.contains("Version 1") && !t1.contains("active"), "{t1}");
        let r2 = wait_text(
            c,
            &format!("{v2} dd[data-key='Resources']"),
            "v2 resources",
            |t| !t.is_empty(),
        )
        .await;
        assert!(
            r2.contains("1024 CPU units / 2048 MiB default")
                && r2.contains("CPU 1024, 2048")
                && r2.contains("memory 2048, 4096, 8192 MiB"),
            "{r2}"
        );
        assert!(c
            .find(Locator::Css(&format!("{v2} tr[data-param='dotfiles']")))
            .await
            .is_ok());
        // What version 2 changed, by field path; version 1 was the first.
        let changes = wait_text(
            c,
            &format!("{v2} dd[data-key='Changes']"),
            "v2 changes",
            |t| !t.is_empty(),
        )
        .await;
        assert!(
            changes.contains("spec.resources.cpuOptions added: [1024,2048]")
                && changes.contains("spec.resources.memoryOptions added: [2048,4096,8192]")
                && changes.contains("spec.parameters[dotfiles] added:"),
            "{changes}"
        );
        assert!(!changes.contains("spec.parameters[region]"), "{changes}");
        assert!(
            c.find(Locator::Css(&format!("{v2} dd[data-key='Created']")))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .contains("UTC")
        );
        // Not an admin: no way to write a template.
        assert!(c
            .find(Locator::Css(&format!("{tpl} details[data-editor]")))
            .await
            .is_err());
        // Version 1 is collapsed: open it to read it.
        click(c, &format!("{v1} summary")).await;
        assert_eq!(
            wait_text(
                c,
                &format!("{v1} dd[data-key='Changes']"),
                "v1 changes",
                |t| !t.is_empty()
            )
            .await,
            "First version."
        );
        assert!(c
            .find(Locator::Css(&format!("{v1} tr[data-param='dotfiles']")))
            .await
            .is_err());
        let region = c
            .find(Locator::Css(&format!("{v1} tr[data-param='region']")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            region.contains("eu") && region.contains("immutable") && region.contains("eu, us"),
            "{region}"
        );
        screenshot(c, "templates").await;

        // Create a workspace from the list's button.
        c.goto(&format!("{server}/")).await.unwrap();
        click(c, "#create-workspace").await;
        let sel = c
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#new-template option[value='default/dev']"))
            .await
            .expect("the template choice");
        let _ = sel;
        c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#new-param-region"))
            .await
            .expect("the template's parameters");
        // The active version's choices: offered sizes as lists, defaults filled in.
        assert_eq!(prop(c, "#new-memory", "tagName").await, "SELECT");
        assert_eq!(prop(c, "#new-memory", "value").await, "2048");
        // Only the template's CPUs, and of its memory only what Fargate runs
        // with the chosen CPU (2048 MiB is too little for 2048 CPU units).
        assert_eq!(options(c, "#new-cpu").await, ["1024", "2048"]);
        assert_eq!(options(c, "#new-memory").await, ["2048", "4096", "8192"]);
        choose(c, "#new-cpu", "2048").await;
        assert_eq!(options(c, "#new-memory").await, ["4096", "8192"]);
        assert_eq!(prop(c, "#new-memory", "value").await, "4096");
        choose(c, "#new-cpu", "1024").await;
        assert_eq!(options(c, "#new-memory").await, ["2048", "4096", "8192"]);
        assert_eq!(prop(c, "#new-memory", "value").await, "4096");
        assert_eq!(prop(c, "#new-param-branch", "value").await, "main");
        assert!(c.find(Locator::Css("#new-param-dotfiles")).await.is_ok());
        // A bad name is refused next to the name field.
        set_value(c, "#new-name", "Erin_Box").await;
        click(c, "#new-create").await;
        let err = wait_text(c, "#new-name-error", "the name error", |t| !t.is_empty()).await;
        assert!(!err.is_empty());
        assert!(ws_list(&op).is_empty(), "a workspace was created");
        // A good one.
        set_value(c, "#new-name", "box").await;
        c.find(Locator::Css("#new-param-region"))
            .await
            .unwrap()
            .select_by_label("us")
            .await
            .unwrap();
        c.find(Locator::Css("#new-memory"))
            .await
            .unwrap()
            .select_by_value("4096")
            .await
            .unwrap();
        click(c, "#new-param-dotfiles").await;
        screenshot(c, "create").await;
        click(c, "#new-create").await;
        wait_until(
            || async {
                c.current_url()
                    .await
                    .map(|u| u.path() == "/workspaces/default/box")
                    .unwrap_or(false)
            },
            "the new workspace's page",
        )
        .await;
        wait_text(c, "#phase", "the new workspace running", |t| t == "Running").await;
        wait_text(
            c,
            "#overview dd[data-key='CPU / memory']",
            "its size",
            |t| t == "1024 CPU units / 4096 MiB",
        )
        .await;
        let spec = ws_json(&op, "box")["spec"].clone();
        assert_eq!(spec["owner"], "erin");
        assert_eq!(spec["template"]["name"], "dev");
        assert_eq!(
            spec["parameters"],
            json!({"region": "us", "dotfiles": true})
        );
        assert_eq!(spec["resources"], json!({"cpu": 1024, "memory": 4096}));
        // Its settings follow version 2: region is now read-only.
        c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#set-param-dotfiles"))
            .await
            .expect("the new workspace's settings");
        assert!(!c
            .find(Locator::Css("#set-param-region"))
            .await
            .unwrap()
            .is_enabled()
            .await
            .unwrap());
        // The templates page says which workspaces run which version.
        click(c, "nav.pages a[href='/templates']").await;
        wait_text(
            c,
            "section[data-template='default/dev'] details[data-version='2'] dd[data-key='Workspaces']",
            "box on version 2",
            |t| t.split(", ").any(|n| n == "box"),
        )
        .await;
        click(
            c,
            "section[data-template='default/dev'] details[data-version='1'] summary",
        )
        .await;
        let v1 = wait_text(
            c,
            "section[data-template='default/dev'] details[data-version='1'] dd[data-key='Workspaces']",
            "version 1's workspaces",
            |t| !t.is_empty(),
        )
        .await;
        assert!(!v1.split(", ").any(|n| n == "box"), "{v1}");
        b.close().await;
    });
}

/// `berth get wst NAME -o json`, parsed.
fn wst_json(op: &Operator, name: &str) -> Value {
    serde_json::from_str(&ok(op, &["get", "wst", name, "-o", "json"]).stdout).unwrap()
}

/// Replaces `from` (a regular expression) with `to` in the textarea at `css`.
async fn edit_textarea(c: &Client, css: &str, from: &str, to: &str) {
    let v = c
        .execute(
            "const t = document.querySelector(arguments[0]);
             const before = t.value;
             t.value = before.replace(new RegExp(arguments[1]), arguments[2]);
             t.dispatchEvent(new Event('input', {bubbles: true}));
             return t.value !== before;",
            vec![json!(css), json!(from), json!(to)],
        )
        .await
        .unwrap();
    assert_eq!(v, Value::Bool(true), "{css}: no {from:?} to replace");
}

#[test]
fn in_chromium_an_admin_publishes_a_template_version_and_everyone_sees_what_changed() {
    let op = Operator::start();
    apply(&op, DEV_TEMPLATE);
    let (server, admin) = op.server_and_token();
    runtime().block_on(async {
        let erin = user_token(&op, "erin").await;
        let b = Browser::start().await;
        let c = &b.client;
        sign_in(c, &server, &admin).await;
        wait_text(c, "#who", "signed in", |t| t.contains("(admin)")).await;
        click(c, "nav.pages a[href='/templates']").await;
        let tpl = "section[data-template='default/dev']";
        let editor = format!("{tpl} details[data-editor='default/dev']");
        let yaml = "#tpl-yaml-default-dev";
        // The editor holds the template as YAML, read when it is opened.
        click(c, &format!("{editor} summary")).await;
        wait_until(
            || async {
                let v = prop(c, yaml, "value").await;
                v.contains("kind: WorkspaceTemplate") && v.contains("resourceVersion")
            },
            "the template's YAML",
        )
        .await;
        assert!(c
            .find(Locator::Css(&format!("{tpl} details[data-version='2']")))
            .await
            .is_err());

        // An invalid change: the API's error is shown; nothing changes.
        edit_textarea(c, yaml, "memory: 2048", "memory: 3000").await;
        click(c, &format!("{editor} button.apply-template")).await;
        let err = wait_text(c, "#tpl-yaml-default-dev-error", "the apply error", |t| {
            !t.is_empty()
        })
        .await;
        assert!(
            err.contains("nothing was changed") && err.contains("spec.resources.default.memory"),
            "{err}"
        );
        assert!(err.contains("3000"), "{err}");
        assert!(!err.contains("null"), "{err}");
        screenshot(c, "template-apply-error").await;
        let t = wst_json(&op, "dev");
        assert_eq!(t["status"]["latestVersion"], 1, "{t}");
        assert_eq!(t["spec"]["resources"]["default"]["memory"], 2048);

        // A valid one: version 2, and the page lists what changed.
        edit_textarea(c, yaml, "memory: 3000", "memory: 2048").await;
        edit_textarea(c, yaml, "example/dev:1", "example/dev:2").await;
        click(c, &format!("{editor} button.apply-template")).await;
        let v2 = format!("{tpl} details[data-version='2']");
        let t2 = wait_text(c, &format!("{v2} summary"), "version 2", |t| {
            t.contains("Version 2")
        })
        .await;
        assert!(t2.contains("active"), "{t2}");
        let changes = wait_text(
            c,
            &format!("{v2} dd[data-key='Changes']"),
            "what version 2 changed",
            |t| !t.is_empty(),
        )
        .await;
        assert_eq!(
            changes,
            "spec.container.image \"ghcr.io/example/dev:1\" → \"ghcr.io/example/dev:2\""
        );
        let t = wst_json(&op, "dev");
        assert_eq!(t["status"]["latestVersion"], 2, "{t}");
        assert_eq!(t["spec"]["container"]["image"], "ghcr.io/example/dev:2");
        screenshot(c, "template-versions").await;

        // Someone else changed it meanwhile: a stale edit is refused.
        click(c, &format!("{editor} summary")).await;
        wait_until(
            || async { prop(c, yaml, "value").await.contains("example/dev:2") },
            "the new YAML",
        )
        .await;
        apply(&op, &DEV_TEMPLATE.replace("example/dev:1", "example/dev:3"));
        edit_textarea(c, yaml, "example/dev:2", "example/dev:4").await;
        click(c, &format!("{editor} button.apply-template")).await;
        let err = wait_text(c, "#tpl-yaml-default-dev-error", "the conflict", |t| {
            !t.is_empty()
        })
        .await;
        assert!(err.contains("changed since you opened it"), "{err}");
        assert_eq!(
            wst_json(&op, "dev")["spec"]["container"]["image"],
            "ghcr.io/example/dev:3"
        );

        // Not an admin: no editor, and a direct write is refused.
        click(c, "#signout").await;
        c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#token"))
            .await
            .expect("signed out");
        sign_in(c, &server, &erin).await;
        wait_text(c, "#who", "erin", |t| t == "erin").await;
        c.goto(&format!("{server}/templates")).await.unwrap();
        wait_text(c, &format!("{tpl} details[data-version='3'] summary"), "v3", |t| {
            t.contains("Version 3")
        })
        .await;
        assert!(c
            .find(Locator::Css(&format!("{tpl} details[data-editor]")))
            .await
            .is_err());
        assert!(c.find(Locator::Css("textarea")).await.is_err());
        let status = c
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 (async () => {
                   const s = await (await fetch('/dashboard/session')).json();
                   const yaml = await (await fetch('/dashboard/template-manifest/default/dev')).text();
                   const r = await fetch(arguments[0], {method: 'POST', credentials: 'same-origin',
                     headers: {'Content-Type': 'application/yaml', 'X-Berth-CSRF': s.csrf},
                     body: yaml.replace('example/dev:3', 'example/dev:5')});
                   return r.status;
                 })().then(done, () => done(-1));",
                vec![json!(format!("{API}/apply"))],
            )
            .await
            .unwrap();
        assert_eq!(status, json!(403));
        let t = wst_json(&op, "dev");
        assert_eq!(t["status"]["latestVersion"], 3, "{t}");
        assert_eq!(t["spec"]["container"]["image"], "ghcr.io/example/dev:3");
        b.close().await;
    });
}

/// The names `berth get ws -o json` lists.
fn ws_list(op: &Operator) -> Vec<String> {
    let v: Value = serde_json::from_str(&ok(op, &["get", "ws", "-o", "json"]).stdout).unwrap();
    v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| {
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}
