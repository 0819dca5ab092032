//! The agent's life: configuration, start, the stop, the exit.
//!
//! [`run`] prepares a private directory, opens the activity socket, starts
//! the connection ([`super::conn`]) and waits for the first manifest; then
//! it starts the scripts ([`super::scripts`]) and waits for the shutdown
//! signal. The stop is bounded by the container's stop timeout, counted
//! from the signal:
//!
//! 1. lifecycle `ShuttingDown`; no start script starts any more (the start
//!    sequence is dropped, even in the middle of a long blocking script);
//! 2. the `runOnStop` scripts, one after another, within the stop timeout
//!    minus a 5 s reserve (at least 2 s, or half of a shorter timeout);
//! 3. SIGTERM to every script's process group (so a script trapping TERM
//!    runs its trap), up to 3 s for them to go, SIGKILL to what is left;
//! 4. lifecycle `Off`; up to 2 s for the last lines to be acknowledged;
//! 5. the connection closes and [`run`] returns.

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::activity;
use super::conn::{self, Target, Tuning};
use super::protocol::{self, Lifecycle, ScriptStatus, Stream};
use super::scripts::{ChildEnv, Runner};
use super::state::Shared;

/// The environment variable carrying the per-start agent token.
pub const TOKEN_ENV: &str = "BERTH_AGENT_TOKEN";
/// The operator's base URL.
pub const API_URL_ENV: &str = "BERTH_API_URL";
/// The workspace's namespace.
pub const NAMESPACE_ENV: &str = "BERTH_NAMESPACE";
/// The workspace's name.
pub const WORKSPACE_ENV: &str = "BERTH_WORKSPACE";
/// Seconds between the container's SIGTERM and its SIGKILL.
pub const STOP_TIMEOUT_ENV: &str = "BERTH_STOP_TIMEOUT";
/// The agent's private directory (optional).
pub const AGENT_DIR_ENV: &str = "BERTH_AGENT_DIR";
/// Set (to `1`) by the local runtime: the agent runs on the operator's
/// host, not in a container, and runs the scripts only of templates that
/// allow it ([`Manifest::host_scripts`]).
pub const LOCAL_ENV: &str = "BERTH_AGENT_LOCAL";
/// The stop timeout when none is given.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Kept from the stop timeout for stopping processes and the last logs.
const STOP_RESERVE: Duration = Duration::from_secs(5);
/// The `runOnStop` scripts get at least this long (or half a shorter timeout).
const MIN_STOP_BUDGET: Duration = Duration::from_secs(2);
/// Between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// For the killed scripts' final states.
const KILL_GRACE: Duration = Duration::from_millis(500);
/// For the last lines to be acknowledged.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// How the agent is configured.
#[derive(Clone)]
pub struct AgentOptions {
    /// The operator's base URL (`http` or `https`), without a trailing `/`.
    pub api_url: String,
    /// The per-start agent token (secret: never logged, never passed on).
    pub token: String,
    /// The workspace's namespace.
    pub namespace: String,
    /// The workspace's name.
    pub workspace: String,
    /// Between the container's SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
    /// The private directory for script files and the activity socket;
    /// `None` = a fresh 0700 directory under `$TMPDIR`, removed at exit.
    pub agent_dir: Option<PathBuf>,
    /// Connection timings (defaults suit production).
    pub tuning: Tuning,
    /// Run by the local runtime, on the operator's host ([`LOCAL_ENV`]).
    pub local: bool,
}

impl std::fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentOptions")
            .field("api_url", &self.api_url)
            .field("token", &"<redacted>")
            .field("namespace", &self.namespace)
            .field("workspace", &self.workspace)
            .field("stop_timeout", &self.stop_timeout)
            .field("agent_dir", &self.agent_dir)
            .field("tuning", &self.tuning)
            .field("local", &self.local)
            .finish()
    }
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A required setting is missing.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A setting is invalid.
    #[error("{name}: {message}")]
    Invalid {
        /// The environment variable (or flag) name.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The private directory could not be prepared.
    #[error("preparing the agent directory {path}: {source}")]
    AgentDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn invalid(name: &'static str, message: impl Into<String>) -> AgentError {
    AgentError::Invalid {
        name,
        message: message.into(),
    }
}

impl AgentOptions {
    /// Reads the options from the process environment (`BERTH_API_URL`,
    /// `BERTH_AGENT_TOKEN`, `BERTH_NAMESPACE`, `BERTH_WORKSPACE`,
    /// `BERTH_STOP_TIMEOUT`, `BERTH_AGENT_DIR`).
    pub fn from_env() -> Result<AgentOptions, AgentError> {
        AgentOptions::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the options through `get` (an environment variable's value by
    /// its name), so flags can override the environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<AgentOptions, AgentError> {
        let need = |name: &'static str| {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(AgentError::Missing(name))
        };
        let stop_timeout = match get(STOP_TIMEOUT_ENV).filter(|v| !v.trim().is_empty()) {
            None => DEFAULT_STOP_TIMEOUT,
            Some(v) => {
                let secs: u64 = v.trim().parse().map_err(|_| {
                    invalid(
                        STOP_TIMEOUT_ENV,
                        format!("{v:?} is not a number of seconds"),
                    )
                })?;
                Duration::from_secs(secs)
            }
        };
        let opts = AgentOptions {
            api_url: need(API_URL_ENV)?.trim().trim_end_matches('/').to_string(),
            token: need(TOKEN_ENV)?.trim().to_string(),
            namespace: need(NAMESPACE_ENV)?,
            workspace: need(WORKSPACE_ENV)?,
            stop_timeout,
            agent_dir: get(AGENT_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            tuning: Tuning::default(),
            local: get(LOCAL_ENV).is_some_and(|v| v == "1"),
        };
        opts.validate()?;
        Ok(opts)
    }

    /// Checks the options.
    pub fn validate(&self) -> Result<(), AgentError> {
        if !(self.api_url.starts_with("http://") || self.api_url.starts_with("https://")) {
            return Err(invalid(
                API_URL_ENV,
                format!("{:?} is not an http or https URL", self.api_url),
            ));
        }
        reqwest::Url::parse(&self.api_url).map_err(|e| invalid(API_URL_ENV, e.to_string()))?;
        if self.token.is_empty() {
            return Err(AgentError::Missing(TOKEN_ENV));
        }
        let path_safe = |s: &str| {
            !s.is_empty()
                && s.len() <= protocol::MAX_NAME_BYTES
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        };
        if !path_safe(&self.namespace) {
            return Err(invalid(
                NAMESPACE_ENV,
                format!("{:?} is not a namespace name", self.namespace),
            ));
        }
        if !path_safe(&self.workspace) {
            return Err(invalid(
                WORKSPACE_ENV,
                format!("{:?} is not a workspace name", self.workspace),
            ));
        }
        Ok(())
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!(
            "{}{}",
            self.api_url,
            protocol::agent_path(&self.namespace, &self.workspace)
        )
    }
}

/// How the agent ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentExit {
    /// The last lifecycle (`Off`).
    pub lifecycle: Lifecycle,
    /// Every script's final status, in manifest order (empty when no
    /// manifest arrived before the stop).
    pub scripts: Vec<ScriptStatus>,
    /// Log lines the operator had not acknowledged at exit.
    pub unacked_lines: usize,
}

/// The agent's private directory; removed at exit when the agent made it.
struct AgentDir {
    path: PathBuf,
    owned: bool,
}

impl AgentDir {
    fn prepare(given: Option<&PathBuf>) -> Result<AgentDir, AgentError> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        let err = |path: &PathBuf| {
            let path = path.clone();
            move |source| AgentDir::error(path, source)
        };
        if let Some(p) = given {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(p)
                .map_err(err(p))?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).map_err(err(p))?;
            return Ok(AgentDir {
                path: p.clone(),
                owned: false,
            });
        }
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let suffix: u64 = rand::random();
            let p = base.join(format!("berth-agent-{suffix:016x}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => {
                    return Ok(AgentDir {
                        path: p,
                        owned: true,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(AgentDir::error(p, e)),
            }
        }
        Err(AgentDir::error(
            base,
            std::io::Error::other("no free directory name"),
        ))
    }

    fn error(path: PathBuf, source: std::io::Error) -> AgentError {
        AgentError::AgentDir { path, source }
    }
}

impl Drop for AgentDir {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                tracing::debug!(dir = %self.path.display(), error = %e, "cannot remove the agent directory");
            }
        }
    }
}

/// Where the SSH host key lives: in the home directory, so the workspace
/// keeps its host key across restarts.
pub const HOST_KEY_PATH: &str = ".berth/ssh_host_ed25519_key";

/// The embedded SSH server that relayed `ssh` streams reach. Sessions get
/// the agent's environment without the agent token and without template
/// secrets (those are for scripts only); they start in `$HOME` with
/// `$SHELL` (else `/bin/sh`). `None` when the host key cannot be had.
fn ssh_server(
    vars: &[(OsString, OsString)],
    shared: Arc<Shared>,
    secret_names: Arc<std::sync::OnceLock<Vec<String>>>,
) -> Option<super::streams::SshServer> {
    let home = vars
        .iter()
        .find(|(k, _)| k == "HOME")
        .map(|(_, v)| PathBuf::from(v))
        .filter(|h| !h.as_os_str().is_empty())?;
    let key_path = home.join(HOST_KEY_PATH);
    let host_key = match crate::ssh::load_or_create_host_key(&key_path) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(path = %key_path.display(), error = %e, "no SSH host key: SSH into this workspace is off");
            return None;
        }
    };
    let shell = vars
        .iter()
        .find(|(k, _)| k == "SHELL")
        .map(|(_, v)| PathBuf::from(v))
        .filter(|s| !s.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"));
    let vars = vars.to_vec();
    let config: Arc<std::sync::OnceLock<Arc<crate::ssh::ServerConfig>>> = Arc::default();
    Some(Arc::new(move |io: tokio::io::DuplexStream| {
        let Some(secrets) = secret_names.get() else {
            tracing::info!("an SSH connection before the manifest came: refused");
            return;
        };
        let cfg = config
            .get_or_init(|| {
                let env = ChildEnv::split(vars.clone(), &[TOKEN_ENV], secrets).base;
                let shared = shared.clone();
                Arc::new(crate::ssh::ServerConfig {
                    host_key: host_key.clone(),
                    shell: shell.clone(),
                    home: home.clone(),
                    env,
                    activity: Arc::new(move |kind| {
                        if let Some(k) = activity::parse_kind(kind) {
                            shared.activity(k);
                        }
                    }),
                })
            })
            .clone();
        tokio::spawn(async move {
            if let Err(e) = crate::ssh::serve(io, cfg).await {
                tracing::debug!(error = %e, "SSH connection ended");
            }
        });
    }))
}

/// Runs the agent until `shutdown` resolves (the CLI passes SIGTERM or
/// SIGINT), then stops within `opts.stop_timeout` of it and returns.
pub async fn run(
    opts: AgentOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<AgentExit, AgentError> {
    opts.validate()?;
    let dir = AgentDir::prepare(opts.agent_dir.as_ref())?;
    let shared = Arc::new(Shared::new(opts.tuning.log_cap_bytes));

    // What children inherit: the agent's environment without its token.
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let activity_server = match activity::bind(&dir.path) {
        Ok((listener, path)) => {
            vars.retain(|(k, _)| k != activity::SOCKET_ENV);
            vars.push((activity::SOCKET_ENV.into(), path.into_os_string()));
            Some(tokio::spawn(activity::serve(listener, shared.clone())))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the activity socket; `berth agent activity` will not work");
            None
        }
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (manifest_tx, manifest_rx) = oneshot::channel();
    // Template secrets are named by the manifest; until it came, SSH waits.
    let secret_names: Arc<std::sync::OnceLock<Vec<String>>> = Arc::default();
    let target = Target {
        url: opts.url(),
        token: opts.token.clone(),
        streams: super::streams::Opener {
            ssh: ssh_server(&vars, shared.clone(), secret_names.clone()),
        },
    };
    tracing::info!(url = %target.url, stop_timeout = ?opts.stop_timeout, "agent starting");
    let conn = tokio::spawn(conn::run(
        target,
        opts.tuning.clone(),
        shared.clone(),
        manifest_tx,
        stop_rx,
    ));

    tokio::pin!(shutdown);
    let manifest = tokio::select! {
        m = manifest_rx => match m {
            Ok(m) => Some(m),
            Err(_) => {
                // Only a panic ends the connection before a stop.
                tracing::error!("the connection to the operator ended; waiting for the stop");
                (&mut shutdown).await;
                None
            }
        },
        () = &mut shutdown => None,
    };
    let mut runner = None;
    if let Some(manifest) = manifest {
        let _ = secret_names.set(manifest.secret_env.clone());
        if opts.local && !manifest.host_scripts {
            // Template scripts are written for the image's filesystem; on
            // the operator's host they could touch the user's own files.
            tracing::warn!(
                "the local runtime does not run this template's scripts on this machine; annotate the template berth.dev/local-scripts=\"true\" to allow it"
            );
            for (i, s) in manifest.scripts.iter().enumerate() {
                shared.log(
                    i,
                    Stream::Stderr,
                    &format!(
                        "berth: script {} skipped: the local runtime runs a template's scripts on this machine only when the template is annotated berth.dev/local-scripts=\"true\"",
                        s.name
                    ),
                );
                shared.script_skipped(i);
            }
            shared.set_lifecycle(Lifecycle::Ready);
            shutdown.await;
        } else {
            let env = ChildEnv::split(vars, &[TOKEN_ENV], &manifest.secret_env);
            let r = Runner::new(shared.clone(), manifest.scripts, dir.path.clone(), env);
            let start = tokio::spawn(r.clone().run_start());
            shutdown.await;
            start.abort();
            runner = Some(r);
        }
    }
    let began = Instant::now();
    tracing::info!("stopping");
    stop(runner.as_ref(), &shared, began, opts.stop_timeout).await;

    let hard = began + opts.stop_timeout;
    let flush_deadline = (Instant::now() + FLUSH_GRACE)
        .min(hard.checked_sub(Duration::from_millis(250)).unwrap_or(hard));
    // Wait for the last changes and lines to be acknowledged; while
    // disconnected with no line left, there is nothing worth waiting for.
    while !shared.settled() && !shared.idle_disconnected() && Instant::now() < flush_deadline {
        tokio::time::sleep(Duration::from_millis(20).min(flush_deadline - Instant::now())).await;
    }
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(1), conn)
        .await
        .is_err()
    {
        tracing::debug!("the connection did not close in time");
    }
    if let Some(a) = activity_server {
        a.abort();
    }
    let exit = AgentExit {
        lifecycle: shared.lifecycle(),
        scripts: shared.statuses(),
        unacked_lines: shared.unacked_lines(),
    };
    if exit.unacked_lines > 0 {
        tracing::warn!(
            lines = exit.unacked_lines,
            "exiting with log lines the operator did not acknowledge"
        );
    }
    tracing::info!("agent stopped");
    drop(dir);
    Ok(exit)
}

/// The stop, steps 1 to 4 of the module docs (without the last flush),
/// counted from `began`.
pub(crate) async fn stop(
    runner: Option<&Arc<Runner>>,
    shared: &Shared,
    began: Instant,
    stop_timeout: Duration,
) {
    shared.set_lifecycle(Lifecycle::ShuttingDown);
    if let Some(r) = runner {
        r.close_start();
        let budget = stop_timeout
            .saturating_sub(STOP_RESERVE)
            .max(MIN_STOP_BUDGET.min(stop_timeout / 2));
        r.run_stop(began + budget).await;
        let hard = began + stop_timeout;
        let latest_term = hard
            .checked_sub(FLUSH_GRACE)
            .unwrap_or(hard)
            .max(Instant::now() + Duration::from_millis(200));
        let term_deadline = (Instant::now() + TERM_GRACE).min(latest_term);
        let reap_deadline = term_deadline + KILL_GRACE;
        r.terminate(term_deadline, reap_deadline).await;
    }
    shared.set_lifecycle(Lifecycle::Off);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::agent::protocol::{LogLine, ScriptState};
    use crate::agent::scripts::tests::{env_with, fixture, script, texts};

    #[test]
    fn options_come_from_the_environment_and_the_token_is_never_shown() {
        let env = |name: &str| {
            match name {
                API_URL_ENV => Some("https://berth.example.com/"),
                TOKEN_ENV => Some("sekrit-token"),
                NAMESPACE_ENV => Some("team"),
                WORKSPACE_ENV => Some("alice"),
                STOP_TIMEOUT_ENV => Some("45"),
                _ => None,
            }
            .map(String::from)
        };
        let o = AgentOptions::from_lookup(env).expect("options");
        assert_eq!(
            o.url(),
            "https://berth.example.com/apis/berth.dev/v1alpha1/namespaces/team/workspaces/alice/agent"
        );
        assert_eq!(o.stop_timeout, Duration::from_secs(45));
        assert!(!format!("{o:?}").contains("sekrit"));
        let missing = AgentOptions::from_lookup(|n| if n == TOKEN_ENV { None } else { env(n) });
        assert!(matches!(missing, Err(AgentError::Missing(TOKEN_ENV))));
        let bad = AgentOptions::from_lookup(|n| {
            if n == API_URL_ENV {
                Some("ftp://x".into())
            } else {
                env(n)
            }
        });
        assert!(matches!(
            bad,
            Err(AgentError::Invalid {
                name: API_URL_ENV,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_stop_during_a_long_blocking_script_is_prompt_runs_the_stop_hooks_and_lets_trapping_scripts_clean_up(
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().display();
        let scripts = vec![
            // In the background, traps TERM and cleans up.
            script(
                "daemon",
                &format!("trap 'echo cleaning; touch {d}/daemon.cleaned; exit 0' TERM; touch {d}/daemon.up; sleep 1000 & wait $!"),
                false,
                false,
            ),
            script(
                "long",
                &format!("while [ ! -e {d}/daemon.up ]; do sleep 0.01; done; touch {d}/long.up; sleep 1000"),
                true,
                false,
            ),
            script("never", &format!("touch {d}/never.ran"), true, false),
            script(
                "deregister",
                &format!("echo deregistering; [ -e {d}/daemon.cleaned ] && exit 5; touch {d}/deregistered"),
                false,
                true,
            ),
            script("ignores-term", "trap '' TERM; sleep 1000", false, true),
        ];
        let (shared, runner) = fixture(tmp.path(), scripts, env_with(&[]));
        let start = tokio::spawn(runner.clone().run_start());
        let up = Instant::now() + Duration::from_secs(5);
        while !tmp.path().join("long.up").exists() && Instant::now() < up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(tmp.path().join("long.up").exists());
        assert_eq!(shared.lifecycle(), Lifecycle::Starting);

        // The signal.
        let began = Instant::now();
        start.abort();
        stop(Some(&runner), &shared, began, Duration::from_secs(4)).await;
        let took = began.elapsed();
        // The stop hooks' budget is 2 s here ("ignores-term" uses it up),
        // then SIGTERM, then SIGKILL for "ignores-term" as the 2 s kept for
        // the last logs begin.
        assert!(took < Duration::from_millis(3500), "stop took {took:?}");

        assert!(
            tmp.path().join("deregistered").exists(),
            "runOnStop ran before the others were signalled"
        );
        assert!(
            tmp.path().join("daemon.cleaned").exists(),
            "the TERM trap ran"
        );
        assert!(
            !tmp.path().join("never.ran").exists(),
            "nothing starts after the signal"
        );
        assert_eq!(shared.lifecycle(), Lifecycle::Off);
        let s = shared.statuses();
        assert_eq!(s[0].state, ScriptState::Succeeded, "the trap exited 0");
        assert_eq!(
            (s[1].state, s[1].exit_code),
            (ScriptState::Failed, None),
            "killed by SIGTERM"
        );
        assert_eq!(s[2].state, ScriptState::Pending);
        assert_eq!(s[3].state, ScriptState::Succeeded);
        assert_eq!(
            (s[4].state, s[4].exit_code),
            (ScriptState::Failed, None),
            "SIGKILLed"
        );
        // (dash also reports its `sleep` as "Terminated".)
        assert!(texts(&shared, 0).contains(&"cleaning".to_string()));
        assert_eq!(texts(&shared, 3), vec!["deregistering"]);
        assert!(!runner.any_running());
    }

    /// A stand-in for the operator's end of the agent WebSocket: refuses
    /// the first attempt with 401 (as for a stale token), then hands every
    /// accepted connection to the test.
    mod operator {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::time::Duration;

        use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::{IntoResponse, Response};
        use tokio::sync::mpsc;

        use crate::agent::protocol::{self, AgentMessage, ServerMessage};

        #[derive(Clone)]
        struct Ctx {
            attempts: Arc<AtomicUsize>,
            conns: mpsc::UnboundedSender<WebSocket>,
        }

        async fn agent(
            State(ctx): State<Ctx>,
            headers: HeaderMap,
            ws: WebSocketUpgrade,
        ) -> Response {
            let n = ctx.attempts.fetch_add(1, Ordering::SeqCst);
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
            if n == 0 || auth != Some("Bearer tok-1") {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            ws.max_message_size(protocol::MAX_MESSAGE_BYTES)
                .on_upgrade(move |socket| async move {
                    let _ = ctx.conns.send(socket);
                })
        }

        /// Serves on a free port: its base URL, the attempts counter and the connections.
        pub async fn start() -> (String, Arc<AtomicUsize>, mpsc::UnboundedReceiver<WebSocket>) {
            let (tx, rx) = mpsc::unbounded_channel();
            let attempts = Arc::new(AtomicUsize::new(0));
            let ctx = Ctx {
                attempts: attempts.clone(),
                conns: tx,
            };
            let app = axum::Router::new()
                .route(
                    "/apis/berth.dev/v1alpha1/namespaces/{ns}/workspaces/{name}/agent",
                    axum::routing::get(agent),
                )
                .with_state(ctx);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            (format!("http://{addr}"), attempts, rx)
        }

        /// The next protocol message (`None` once the agent closed).
        pub async fn next(ws: &mut WebSocket) -> Option<AgentMessage> {
            loop {
                let m = tokio::time::timeout(Duration::from_secs(5), ws.recv())
                    .await
                    .expect("the agent went silent")?;
                match m {
                    Ok(Message::Text(t)) => {
                        return Some(AgentMessage::decode(t.as_str()).expect("a valid message"))
                    }
                    Ok(Message::Close(_)) | Err(_) => return None,
                    Ok(_) => continue,
                }
            }
        }

        pub async fn send(ws: &mut WebSocket, m: &ServerMessage) {
            ws.send(Message::Text(m.encode().into()))
                .await
                .expect("send");
        }
    }

    /// What the stand-in operator stored, as the real store does: lines
    /// below a script's next sequence are skipped, the others kept.
    #[derive(Default)]
    struct Stored {
        lines: BTreeMap<String, BTreeMap<u64, String>>,
        next: BTreeMap<String, u64>,
        resent: usize,
    }

    impl Stored {
        fn append(&mut self, script: &str, lines: &[LogLine]) -> u64 {
            let next = self.next.entry(script.to_string()).or_default();
            let kept = self.lines.entry(script.to_string()).or_default();
            for l in lines {
                if l.seq < *next {
                    self.resent += 1;
                    assert_eq!(
                        kept.get(&l.seq),
                        Some(&l.text),
                        "a resent line is the same line"
                    );
                    continue;
                }
                assert!(kept.insert(l.seq, l.text.clone()).is_none());
                *next = l.seq + 1;
            }
            *next
        }

        fn texts(&self, script: &str) -> Vec<String> {
            self.lines
                .get(script)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        }
    }

    #[tokio::test]
    async fn the_agent_survives_a_refused_token_and_a_dropped_connection_without_rerunning_scripts_or_losing_lines(
    ) {
        use crate::agent::protocol::{AgentMessage, Manifest, ServerMessage};

        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().display();
        let (url, attempts, mut conns) = operator::start().await;
        let manifest = Manifest {
            namespace: "team".into(),
            workspace: "alice".into(),
            owner: "alice".into(),
            template_version: 3,
            scripts: vec![
                script(
                    "setup",
                    &format!("echo setup >> {d}/runs; echo one; echo two >&2"),
                    true,
                    false,
                ),
                script(
                    "count",
                    &format!(
                        "echo count >> {d}/runs; i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); \
                         [ $((i % 50)) -eq 0 ] && sleep 0.05; done; exec sleep 1000"
                    ),
                    false,
                    false,
                ),
                script("bye", &format!("echo bye >> {d}/runs; echo bye"), false, true),
            ],
            secret_env: vec![],
            host_scripts: false,
        };
        let opts = AgentOptions {
            api_url: url,
            token: "tok-1".into(),
            namespace: "team".into(),
            workspace: "alice".into(),
            stop_timeout: Duration::from_secs(8),
            agent_dir: Some(tmp.path().join("agent")),
            tuning: Tuning {
                backoff_min: Duration::from_millis(20),
                backoff_max: Duration::from_millis(100),
                heartbeat_timeout: Duration::from_secs(5),
                flush_interval: Duration::from_millis(50),
                ..Tuning::default()
            },
            local: false,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let agent = tokio::spawn(run(opts, async move {
            let _ = stop_rx.await;
        }));
        let mut stored = Stored::default();
        let mut states: Vec<(String, ScriptState)> = Vec::new();
        let mut lifecycles: Vec<Lifecycle> = Vec::new();
        let record = |m: &AgentMessage, states: &mut Vec<_>, lifecycles: &mut Vec<_>| match m {
            AgentMessage::Script { status } => states.push((status.name.clone(), status.state)),
            AgentMessage::Lifecycle { state } => lifecycles.push(*state),
            _ => {}
        };

        // First connection (after the refused attempt).
        let mut ws = tokio::time::timeout(Duration::from_secs(5), conns.recv())
            .await
            .expect("the agent retried after 401")
            .expect("a connection");
        assert!(attempts.load(std::sync::atomic::Ordering::SeqCst) >= 2);
        let Some(AgentMessage::Hello {
            protocol: 1,
            lifecycle: Lifecycle::Starting,
            scripts,
            ..
        }) = operator::next(&mut ws).await
        else {
            panic!("expected a first hello");
        };
        assert!(scripts.is_empty());
        let welcome = |acked: BTreeMap<String, u64>| ServerMessage::Welcome {
            protocol: 1,
            manifest: manifest.clone(),
            logs_acked: acked,
        };
        operator::send(&mut ws, &welcome(BTreeMap::new())).await;
        // Take batches until two of "count" arrived; drop the connection
        // without acknowledging the second one.
        let mut count_batches = 0;
        let unacked_from;
        loop {
            let m = operator::next(&mut ws).await.expect("more messages");
            record(&m, &mut states, &mut lifecycles);
            if let AgentMessage::Logs { script, lines, .. } = &m {
                if script == "count" {
                    count_batches += 1;
                    if count_batches == 2 {
                        unacked_from = lines[0].seq;
                        break;
                    }
                }
                let next = stored.append(script, lines);
                operator::send(
                    &mut ws,
                    &ServerMessage::LogsAck {
                        script: script.clone(),
                        next_seq: next,
                    },
                )
                .await;
            }
        }
        drop(ws);

        // Second connection: the agent reports what runs and resends.
        let mut ws = tokio::time::timeout(Duration::from_secs(5), conns.recv())
            .await
            .expect("the agent reconnected")
            .expect("a connection");
        let Some(AgentMessage::Hello {
            lifecycle, scripts, ..
        }) = operator::next(&mut ws).await
        else {
            panic!("expected a second hello");
        };
        assert_eq!(lifecycle, Lifecycle::Ready);
        let by_name: BTreeMap<String, ScriptState> =
            scripts.iter().map(|s| (s.name.clone(), s.state)).collect();
        assert_eq!(by_name["setup"], ScriptState::Succeeded);
        assert_eq!(by_name["count"], ScriptState::Running);
        assert_eq!(by_name["bye"], ScriptState::Pending);
        assert_eq!(stored.next["count"], unacked_from);
        operator::send(&mut ws, &welcome(stored.next.clone())).await;
        let mut resumed_at = None;
        loop {
            let Some(m) = operator::next(&mut ws).await else {
                break;
            };
            record(&m, &mut states, &mut lifecycles);
            if let AgentMessage::Logs { script, lines, .. } = &m {
                if script == "count" && resumed_at.is_none() {
                    resumed_at = Some(lines[0].seq);
                }
                let next = stored.append(script, lines);
                operator::send(
                    &mut ws,
                    &ServerMessage::LogsAck {
                        script: script.clone(),
                        next_seq: next,
                    },
                )
                .await;
                if stored.next.get("count") == Some(&300) {
                    // Every line is in: stop the agent (its SIGTERM).
                    let _ = stop_tx.send(());
                    break;
                }
            }
        }
        // Until the agent closes, as the real operator would.
        loop {
            let Some(m) = operator::next(&mut ws).await else {
                break;
            };
            record(&m, &mut states, &mut lifecycles);
            if let AgentMessage::Logs { script, lines, .. } = &m {
                let next = stored.append(script, lines);
                operator::send(
                    &mut ws,
                    &ServerMessage::LogsAck {
                        script: script.clone(),
                        next_seq: next,
                    },
                )
                .await;
            }
        }
        let exit = tokio::time::timeout(Duration::from_secs(10), agent)
            .await
            .expect("the agent exited")
            .expect("no panic")
            .expect("no error");

        let runs = std::fs::read_to_string(tmp.path().join("runs")).expect("runs");
        assert_eq!(runs, "setup\ncount\nbye\n", "no script ran twice");
        let want: Vec<String> = (0..300).map(|i| format!("line {i}")).collect();
        assert_eq!(stored.texts("count"), want, "no gap, no duplicate");
        assert_eq!(
            resumed_at,
            Some(unacked_from),
            "the unacknowledged batch was resent first"
        );
        assert_eq!(stored.resent, 0, "nothing acknowledged was resent");
        assert_eq!(stored.texts("setup"), vec!["one", "two"]);
        assert_eq!(stored.texts("bye"), vec!["bye"]);
        // Ready came on the first connection or with the second hello.
        assert!(
            lifecycles.ends_with(&[Lifecycle::ShuttingDown, Lifecycle::Off]),
            "{lifecycles:?}"
        );
        assert!(lifecycles.len() <= 3, "{lifecycles:?}");
        assert!(states.contains(&("bye".into(), ScriptState::Succeeded)));
        assert!(states.contains(&("count".into(), ScriptState::Failed)));
        assert_eq!(exit.lifecycle, Lifecycle::Off);
        assert_eq!(exit.unacked_lines, 0);
        let final_states: Vec<ScriptState> = exit.scripts.iter().map(|s| s.state).collect();
        assert_eq!(
            final_states,
            vec![
                ScriptState::Succeeded,
                ScriptState::Failed,
                ScriptState::Succeeded
            ]
        );
    }

    async fn accept(
        conns: &mut tokio::sync::mpsc::UnboundedReceiver<axum::extract::ws::WebSocket>,
    ) -> axum::extract::ws::WebSocket {
        tokio::time::timeout(Duration::from_secs(5), conns.recv())
            .await
            .expect("a connection in time")
            .expect("a connection")
    }

    #[tokio::test]
    async fn an_operator_that_errors_or_goes_silent_is_left_and_the_agent_reconnects_without_rerunning_scripts(
    ) {
        use crate::agent::protocol::{AgentMessage, Manifest, ServerMessage};

        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().display();
        let (url, _, mut conns) = operator::start().await;
        let manifest = Manifest {
            scripts: vec![script(
                "once",
                &format!("echo once >> {d}/runs; exec sleep 1000"),
                false,
                false,
            )],
            ..Manifest::default()
        };
        let opts = AgentOptions {
            api_url: url,
            token: "tok-1".into(),
            namespace: "team".into(),
            workspace: "alice".into(),
            stop_timeout: Duration::from_secs(5),
            agent_dir: Some(tmp.path().join("agent")),
            tuning: Tuning {
                backoff_min: Duration::from_millis(20),
                backoff_max: Duration::from_millis(50),
                heartbeat_timeout: Duration::from_millis(300),
                flush_interval: Duration::from_millis(20),
                ..Tuning::default()
            },
            local: false,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let agent = tokio::spawn(run(opts, async move {
            let _ = stop_rx.await;
        }));
        let welcome = ServerMessage::Welcome {
            protocol: 1,
            manifest: manifest.clone(),
            logs_acked: BTreeMap::new(),
        };

        // 1: an error from the operator ends the connection.
        let mut ws = accept(&mut conns).await;
        assert!(matches!(
            operator::next(&mut ws).await,
            Some(AgentMessage::Hello { .. })
        ));
        operator::send(&mut ws, &welcome).await;
        operator::send(
            &mut ws,
            &ServerMessage::Error {
                message: "testing".into(),
            },
        )
        .await;
        // 2: an operator that says nothing after its welcome is given up on.
        let mut ws2 = accept(&mut conns).await;
        let Some(AgentMessage::Hello { scripts, .. }) = operator::next(&mut ws2).await else {
            panic!("expected a hello");
        };
        assert_eq!(scripts.len(), 1, "the agent reports the script it runs");
        operator::send(&mut ws2, &welcome).await;
        let silent_since = Instant::now();
        // 3: the reconnection after the silence.
        let mut ws3 = accept(&mut conns).await;
        assert!(silent_since.elapsed() >= Duration::from_millis(250));
        assert!(matches!(
            operator::next(&mut ws3).await,
            Some(AgentMessage::Hello { .. })
        ));
        operator::send(&mut ws3, &welcome).await;
        let _ = stop_tx.send(());
        while let Some(m) = operator::next(&mut ws3).await {
            if let AgentMessage::Logs { script, lines, .. } = m {
                let next_seq = lines.last().map_or(0, |l| l.seq + 1);
                operator::send(&mut ws3, &ServerMessage::LogsAck { script, next_seq }).await;
            }
        }
        let exit = tokio::time::timeout(Duration::from_secs(10), agent)
            .await
            .expect("the agent exited")
            .expect("no panic")
            .expect("no error");
        assert_eq!(exit.lifecycle, Lifecycle::Off);
        let runs = std::fs::read_to_string(tmp.path().join("runs")).expect("runs");
        assert_eq!(runs, "once\n", "reconnections never rerun a script");
        drop((ws, ws2));
    }
}
