//! Running the manifest's scripts as real processes.
//!
//! Each script is written to a file (mode 0700) in the agent's private
//! directory and run as `/bin/sh <file>` in a process group of its own (so
//! a stop can signal it and everything it started with one `killpg`), with
//! stdin from `/dev/null`, stdout and stderr read line by line into the
//! script's log buffer, the working directory `$HOME` (when it is a
//! directory) and an environment built explicitly: the agent's environment
//! without the agent token and without the template secrets, plus — for
//! scripts only — the secrets, plus `BERTH_SCRIPT=<name>`.
//!
//! Every script runs in a task of its own that waits for its process and
//! records its final state, so the sequence that starts scripts (blocking
//! ones one after another, the others in the background) can be abandoned
//! at any moment — on a stop — without losing track of what runs.
//!
//! The runner keeps every process group it started (a finished script's
//! background processes stay in its group), so a stop reaches daemons a
//! script left behind too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::protocol::{self, Lifecycle, ManifestScript, ScriptState, Stream};
use super::state::Shared;

/// How long, after a script exits, its output is still awaited before its
/// final state is recorded (a background process it started may hold the
/// pipes open; its lines are still read, later).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);
/// How often the stop checks whether the processes are gone.
const POLL: Duration = Duration::from_millis(25);

/// The environment of the processes the agent starts.
#[derive(Clone, Debug, Default)]
pub struct ChildEnv {
    /// Everything children get: the agent's environment without the agent
    /// token and without the template secrets.
    pub base: Vec<(OsString, OsString)>,
    /// The template secrets, for scripts only.
    pub secrets: Vec<(OsString, OsString)>,
}

impl ChildEnv {
    /// Splits `vars` (the agent's own environment) into what children get:
    /// `remove` is dropped everywhere, `secret` names go to scripts only.
    pub fn split(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        remove: &[&str],
        secret: &[String],
    ) -> ChildEnv {
        let mut env = ChildEnv::default();
        for (k, v) in vars {
            let name = k.to_string_lossy();
            if remove.iter().any(|r| *r == name) {
                continue;
            }
            if secret.iter().any(|s| *s == name) {
                env.secrets.push((k, v));
            } else {
                env.base.push((k, v));
            }
        }
        env
    }

    fn get(&self, name: &str) -> Option<&OsString> {
        self.base
            .iter()
            .rev()
            .find(|(k, _)| k.as_os_str() == name)
            .map(|(_, v)| v)
    }
}

/// What the runner lets start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Gate {
    /// Anything.
    Open,
    /// Only `runOnStop` scripts (a stop began).
    StopOnly,
    /// Nothing (the processes are being killed).
    Closed,
}

#[derive(Debug)]
struct Procs {
    gate: Gate,
    /// Every process group started (by its leader's pid).
    groups: Vec<Pid>,
    /// Scripts whose process has not been reaped yet: (index, group).
    running: Vec<(usize, Pid)>,
}

/// A script started by [`Runner::spawn_script`].
#[derive(Debug)]
pub struct ScriptTask {
    /// Resolves once the script's process was started (or could not be).
    pub started: oneshot::Receiver<()>,
    /// Ends with the script's final state (`Pending` when a stop came
    /// before it could start).
    pub done: JoinHandle<ScriptState>,
}

/// Runs one manifest's scripts and stops them.
#[derive(Debug)]
pub struct Runner {
    shared: Arc<Shared>,
    scripts: Vec<ManifestScript>,
    dir: PathBuf,
    env: ChildEnv,
    procs: Mutex<Procs>,
}

impl Runner {
    /// A runner for `scripts` (indexed as in the shared state), writing
    /// script files into `dir`.
    pub fn new(
        shared: Arc<Shared>,
        scripts: Vec<ManifestScript>,
        dir: PathBuf,
        env: ChildEnv,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            shared,
            scripts,
            dir,
            env,
            procs: Mutex::new(Procs {
                gate: Gate::Open,
                groups: Vec::new(),
                running: Vec::new(),
            }),
        })
    }

    fn procs(&self) -> MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the start scripts (all but `runOnStop`) in order: a
    /// `blocksLogin` one to completion before the next, the others in the
    /// background. Sets the lifecycle: `Ready` at once when nothing blocks;
    /// else, once every blocking script finished, `Ready` if they all
    /// succeeded and `StartError` if not. Returns when the last blocking
    /// script finished (background ones may still run); may be dropped at
    /// any point (the scripts started keep being tracked).
    pub async fn run_start(self: Arc<Self>) {
        let start: Vec<usize> = (0..self.scripts.len())
            .filter(|&i| !self.scripts[i].run_on_stop)
            .collect();
        let blocking = start.iter().any(|&i| self.scripts[i].blocks_login);
        if !blocking {
            self.shared.set_lifecycle(Lifecycle::Ready);
        }
        let mut all_ok = true;
        for i in start {
            let task = self.spawn_script(i);
            if self.scripts[i].blocks_login {
                let state = task.done.await.unwrap_or(ScriptState::Failed);
                all_ok &= state == ScriptState::Succeeded;
            } else {
                // In the background: move on once its process exists, so
                // scripts start in manifest order.
                let _ = task.started.await;
            }
        }
        if blocking {
            self.shared.set_lifecycle(if all_ok {
                Lifecycle::Ready
            } else {
                Lifecycle::StartError
            });
        }
    }

    /// A stop began: no start script starts from now on.
    pub fn close_start(&self) {
        let mut p = self.procs();
        p.gate = p.gate.max(Gate::StopOnly);
    }

    /// Runs the `runOnStop` scripts one after another until `deadline`;
    /// one still running then is left to [`Runner::terminate`].
    pub async fn run_stop(self: &Arc<Self>, deadline: Instant) {
        self.close_start();
        for i in 0..self.scripts.len() {
            if !self.scripts[i].run_on_stop {
                continue;
            }
            let task = self.spawn_script(i);
            if tokio::time::timeout_at(deadline, task.done).await.is_err() {
                tracing::warn!(script = %self.scripts[i].name, "runOnStop script still running at the end of its budget; stopping it");
                break;
            }
        }
    }

    /// Stops everything: SIGTERM to every process group, up to
    /// `term_deadline` for them to go, SIGKILL to what is left, then up to
    /// `reap_deadline` for the scripts' final states to be recorded.
    pub async fn terminate(&self, term_deadline: Instant, reap_deadline: Instant) {
        let groups = {
            let mut p = self.procs();
            p.gate = Gate::Closed;
            p.groups.clone()
        };
        signal_groups(&groups, Signal::SIGTERM);
        if !self.wait_gone(&groups, term_deadline).await {
            let left: Vec<Pid> = groups.iter().copied().filter(|g| alive(*g)).collect();
            tracing::warn!(
                groups = left.len(),
                "processes still running after SIGTERM; sending SIGKILL"
            );
            signal_groups(&left, Signal::SIGKILL);
            self.wait_gone(&groups, reap_deadline).await;
        }
    }

    /// Waits until no script process is unreaped and no group has a
    /// member, or `deadline`; returns whether everything is gone.
    async fn wait_gone(&self, groups: &[Pid], deadline: Instant) -> bool {
        loop {
            let idle = self.procs().running.is_empty();
            if idle && !groups.iter().any(|g| alive(*g)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep_until((Instant::now() + POLL).min(deadline)).await;
        }
    }

    /// Whether some script process is still running.
    pub fn any_running(&self) -> bool {
        !self.procs().running.is_empty()
    }

    /// Starts script `idx` in a task of its own.
    pub fn spawn_script(self: &Arc<Self>, idx: usize) -> ScriptTask {
        let me = self.clone();
        let (tx, started) = oneshot::channel();
        let done = tokio::spawn(async move { me.run_script(idx, tx).await });
        ScriptTask { started, done }
    }

    async fn run_script(&self, idx: usize, started: oneshot::Sender<()>) -> ScriptState {
        let script = &self.scripts[idx];
        let mut started = Some(started);
        let mut fail = |why: String| {
            if let Some(tx) = started.take() {
                let _ = tx.send(());
            }
            tracing::warn!(script = %script.name, "{why}");
            self.shared
                .log(idx, Stream::Stderr, &format!("berth agent: {why}"));
            self.shared.script_finished(idx, None);
            ScriptState::Failed
        };
        let file = match write_script(&self.dir, idx, script).await {
            Ok(f) => f,
            Err(e) => return fail(format!("cannot write the script file: {e}")),
        };
        let mut cmd = Command::new("/bin/sh");
        cmd.arg(&file)
            .env_clear()
            .envs(self.env.base.iter().cloned())
            .envs(self.env.secrets.iter().cloned())
            .env("BERTH_SCRIPT", &script.name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(home) = self.env.get("HOME").filter(|h| Path::new(h).is_dir()) {
            cmd.current_dir(home);
        }
        // Spawning and registering happen under the lock, so a stop sees
        // every group it has to signal.
        let spawned = {
            let mut p = self.procs();
            let allowed = match p.gate {
                Gate::Open => true,
                Gate::StopOnly => script.run_on_stop,
                Gate::Closed => false,
            };
            if !allowed {
                return ScriptState::Pending;
            }
            match cmd.spawn() {
                Ok(child) => {
                    let group = child
                        .id()
                        .and_then(|id| i32::try_from(id).ok())
                        .map(Pid::from_raw);
                    if let Some(g) = group {
                        p.groups.push(g);
                        p.running.push((idx, g));
                    }
                    Ok((child, group))
                }
                Err(e) => Err(e),
            }
        };
        let (mut child, group) = match spawned {
            Ok(c) => c,
            Err(e) => return fail(format!("cannot start /bin/sh: {e}")),
        };
        self.shared.script_running(idx);
        if let Some(tx) = started.take() {
            let _ = tx.send(());
        }
        tracing::info!(script = %script.name, "script started");
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(self.spawn_reader(idx, Stream::Stdout, out));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(self.spawn_reader(idx, Stream::Stderr, err));
        }
        let code = match child.wait().await {
            Ok(status) => status.code(),
            Err(e) => {
                self.shared.log(
                    idx,
                    Stream::Stderr,
                    &format!("berth agent: lost track of the script: {e}"),
                );
                None
            }
        };
        let grace = Instant::now() + OUTPUT_GRACE;
        for r in readers {
            // A reader still busy after the grace period keeps reading (a
            // background process holds the pipe); its lines still count.
            let _ = tokio::time::timeout_at(grace, r).await;
        }
        {
            let mut p = self.procs();
            p.running.retain(|(i, g)| Some(*g) != group || *i != idx);
        }
        self.shared.script_finished(idx, code);
        let state = if code == Some(0) {
            ScriptState::Succeeded
        } else {
            ScriptState::Failed
        };
        tracing::info!(script = %script.name, exit_code = ?code, state = state.as_str(), "script finished");
        state
    }

    fn spawn_reader(
        &self,
        idx: usize,
        stream: Stream,
        r: impl AsyncRead + Unpin + Send + 'static,
    ) -> JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            read_lines(r, |line| shared.log(idx, stream, line)).await;
        })
    }
}

/// Whether process group `group` has a member that is not a zombie.
/// (Zombies count for `kill`, and an orphan's zombie lasts until PID 1
/// reaps it, which some inits do only now and then.)
fn alive(group: Pid) -> bool {
    if killpg(group, None).is_err() {
        return false;
    }
    live_member(group).unwrap_or(true)
}

/// Whether `/proc` shows a process of `group` that is not a zombie;
/// `None` without a readable `/proc`.
fn live_member(group: Pid) -> Option<bool> {
    let want = group.as_raw().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold anything but `)` ends it last.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1);
        if pgrp == Some(want.as_str()) && !matches!(state, Some("Z" | "X")) {
            return Some(true);
        }
    }
    Some(false)
}

fn signal_groups(groups: &[Pid], sig: Signal) {
    for g in groups {
        match killpg(*g, sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(group = g.as_raw(), signal = %sig, error = %e, "cannot signal a script's processes")
            }
        }
    }
}

/// The file name of script `idx`: its index and its name, reduced to
/// characters safe in a path.
fn file_name(idx: usize, name: &str) -> String {
    let safe: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{idx:02}-{safe}.sh")
}

async fn write_script(dir: &Path, idx: usize, script: &ManifestScript) -> std::io::Result<PathBuf> {
    use tokio::io::AsyncWriteExt as _;
    let path = dir.join(file_name(idx, &script.name));
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o700)
        .open(&path)
        .await?;
    f.write_all(script.script.as_bytes()).await?;
    if !script.script.ends_with('\n') {
        f.write_all(b"\n").await?;
    }
    f.flush().await?;
    Ok(path)
}

/// Reads `r` line by line, calling `emit` with each line (without its
/// newline or a trailing `\r`, invalid UTF-8 replaced, at most
/// [`protocol::MAX_LOG_LINE_BYTES`] — the rest of a longer line is read
/// and dropped). A last line without a newline counts too.
pub async fn read_lines(r: impl AsyncRead + Unpin, mut emit: impl FnMut(&str)) {
    // A little over the limit, so the clipped line gets its `…`.
    const KEEP: usize = protocol::MAX_LOG_LINE_BYTES + 4;
    let mut r = BufReader::new(r);
    let mut line: Vec<u8> = Vec::new();
    let mut flush = |line: &mut Vec<u8>| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        emit(&protocol::clip_line(&String::from_utf8_lossy(line)));
        line.clear();
    };
    loop {
        let buf = match r.fill_buf().await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "reading a script's output");
                break;
            }
        };
        if buf.is_empty() {
            if !line.is_empty() {
                flush(&mut line);
            }
            break;
        }
        let (chunk, used, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = KEEP.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        r.consume(used);
        if end {
            flush(&mut line);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::agent::logbuf::DEFAULT_CAP_BYTES;
    use crate::agent::protocol::{LogLine, Manifest, ScriptStatus};
    use std::collections::BTreeMap;

    pub(crate) fn script(name: &str, body: &str, blocks: bool, on_stop: bool) -> ManifestScript {
        ManifestScript {
            name: name.into(),
            display_name: String::new(),
            script: body.into(),
            blocks_login: blocks,
            run_on_stop: on_stop,
        }
    }

    /// A runner for `scripts`, its state queueing changes as if connected.
    pub(crate) fn fixture(
        dir: &Path,
        scripts: Vec<ManifestScript>,
        env: ChildEnv,
    ) -> (Arc<Shared>, Arc<Runner>) {
        let shared = Arc::new(Shared::new(DEFAULT_CAP_BYTES));
        let _ = shared.lock().hello();
        let manifest = Manifest {
            scripts: scripts.clone(),
            ..Manifest::default()
        };
        assert!(shared.take_manifest(&manifest, &BTreeMap::new()));
        let runner = Runner::new(shared.clone(), scripts, dir.to_path_buf(), env);
        (shared, runner)
    }

    pub(crate) fn env_with(vars: &[(&str, &str)]) -> ChildEnv {
        let mut vars: Vec<(OsString, OsString)> = vars
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        vars.push(("PATH".into(), "/usr/bin:/bin".into()));
        ChildEnv::split(vars, &["BERTH_AGENT_TOKEN"], &["SECRET_X".to_string()])
    }

    pub(crate) fn lines(shared: &Shared, idx: usize) -> Vec<LogLine> {
        let mut st = shared.lock();
        let logs = &mut st.scripts[idx].logs;
        logs.rewind(0);
        let mut out = Vec::new();
        while let Some((l, _)) = logs.next_batch() {
            out.extend(l);
        }
        out
    }

    pub(crate) fn texts(shared: &Shared, idx: usize) -> Vec<String> {
        lines(shared, idx).into_iter().map(|l| l.text).collect()
    }

    fn status(shared: &Shared, idx: usize) -> ScriptStatus {
        shared.statuses()[idx].clone()
    }

    async fn until_finished(shared: &Shared, idx: usize) -> ScriptStatus {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !status(shared, idx).state.finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        status(shared, idx)
    }

    #[tokio::test]
    async fn a_background_script_keeps_running_while_the_next_blocking_one_starts_and_blocking_ones_run_in_turn(
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().display();
        let scripts = vec![
            // In the background: waits for "b", which starts only after "a" finished.
            script(
                "bg",
                &format!("touch {d}/bg.started; while [ ! -e {d}/b.done ]; do sleep 0.02; done; [ -e {d}/a.done ] || exit 9; echo bg-saw-b"),
                false,
                false,
            ),
            script(
                "a",
                &format!("sleep 0.2; [ -e {d}/b.done ] && exit 4; touch {d}/a.done"),
                true,
                false,
            ),
            script("b", &format!("[ -e {d}/a.done ] || exit 3; touch {d}/b.done"), true, false),
            script("on-stop", "exit 1", false, true),
        ];
        let (shared, runner) = fixture(tmp.path(), scripts, env_with(&[]));
        assert_eq!(shared.lifecycle(), Lifecycle::Starting);
        runner.clone().run_start().await;
        assert_eq!(status(&shared, 1).state, ScriptState::Succeeded);
        assert_eq!(
            status(&shared, 2).state,
            ScriptState::Succeeded,
            "b ran after a finished"
        );
        assert_eq!(shared.lifecycle(), Lifecycle::Ready);
        assert_eq!(
            status(&shared, 3).state,
            ScriptState::Pending,
            "runOnStop scripts wait for the stop"
        );
        let bg = until_finished(&shared, 0).await;
        assert_eq!(bg.state, ScriptState::Succeeded, "{:?}", texts(&shared, 0));
        assert_eq!(texts(&shared, 0), vec!["bg-saw-b"]);
        assert!(bg.started_at <= status(&shared, 1).started_at);
        // It waited for b's file (its output says it saw it), so it finished
        // after b started; comparing the two finish times would race (both
        // exit within moments of b's file appearing).
        assert!(
            bg.finished_at >= status(&shared, 2).started_at,
            "bg outlived b's start"
        );
        assert!(!runner.any_running());
    }

    #[tokio::test]
    async fn exit_codes_are_reported_and_a_failed_blocking_script_means_start_error_while_the_rest_still_run(
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let scripts = vec![
            script("ok", "true", true, false),
            script("bad", "echo failing >&2; exit 7", true, false),
            script("after", "echo still-ran", true, false),
            script("killed", "kill -9 $$", true, false),
        ];
        let (shared, runner) = fixture(tmp.path(), scripts, env_with(&[]));
        runner.clone().run_start().await;
        let s = shared.statuses();
        assert_eq!(
            (s[0].state, s[0].exit_code),
            (ScriptState::Succeeded, Some(0))
        );
        assert_eq!((s[1].state, s[1].exit_code), (ScriptState::Failed, Some(7)));
        assert_eq!(
            (s[2].state, s[2].exit_code),
            (ScriptState::Succeeded, Some(0))
        );
        assert_eq!(
            (s[3].state, s[3].exit_code),
            (ScriptState::Failed, None),
            "killed by a signal"
        );
        assert!(s
            .iter()
            .all(|s| s.started_at.is_some() && s.finished_at >= s.started_at));
        assert_eq!(shared.lifecycle(), Lifecycle::StartError);
        assert_eq!(texts(&shared, 1), vec!["failing"]);
        assert_eq!(texts(&shared, 2), vec!["still-ran"]);
        // Every transition was queued for the connection, in order.
        let st = shared.lock();
        let states: Vec<(String, ScriptState)> = st
            .queue
            .iter()
            .filter_map(|m| match m {
                protocol::AgentMessage::Script { status } => {
                    Some((status.name.clone(), status.state))
                }
                _ => None,
            })
            .collect();
        assert_eq!(states[0], ("ok".to_string(), ScriptState::Running));
        assert_eq!(states[1], ("ok".to_string(), ScriptState::Succeeded));
        assert_eq!(states.len(), 8);
    }

    #[tokio::test]
    async fn a_script_that_cannot_start_fails_with_a_line_that_says_why() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("gone");
        let (shared, runner) = fixture(
            &missing,
            vec![script("s", "true", true, false)],
            env_with(&[]),
        );
        runner.clone().run_start().await;
        let s = status(&shared, 0);
        assert_eq!(
            (s.state, s.exit_code, s.started_at),
            (ScriptState::Failed, None, None)
        );
        let t = texts(&shared, 0);
        assert!(
            t[0].starts_with("berth agent: cannot write the script file"),
            "{t:?}"
        );
        assert_eq!(shared.lifecycle(), Lifecycle::StartError);
    }

    #[tokio::test]
    async fn output_lines_are_sequenced_across_stdout_and_stderr_in_read_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let body =
            "echo out1; sleep 0.05; echo err1 >&2; sleep 0.05; printf 'out2\\r\\n'; sleep 0.05; \
                    head -c 20000 /dev/zero | tr '\\0' x; echo; sleep 0.05; printf 'last' >&2";
        let (shared, runner) = fixture(
            tmp.path(),
            vec![script("s", body, true, false)],
            env_with(&[]),
        );
        runner.clone().run_start().await;
        let l = lines(&shared, 0);
        let got: Vec<(u64, Stream, usize)> =
            l.iter().map(|l| (l.seq, l.stream, l.text.len())).collect();
        assert_eq!(
            got,
            vec![
                (0, Stream::Stdout, 4),
                (1, Stream::Stderr, 4),
                (2, Stream::Stdout, 4),
                (3, Stream::Stdout, protocol::MAX_LOG_LINE_BYTES),
                (4, Stream::Stderr, 4),
            ]
        );
        assert_eq!(l[2].text, "out2", "the \\r of a CRLF line is dropped");
        assert!(
            l[3].text.ends_with('…'),
            "a long line is clipped and marked"
        );
        assert_eq!(l[4].text, "last", "a last line without a newline counts");
        assert!(l.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[tokio::test]
    async fn secrets_reach_scripts_only_and_the_agent_token_reaches_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let env = env_with(&[
            ("BERTH_AGENT_TOKEN", "tok-123"),
            ("SECRET_X", "s3cret"),
            ("PLAIN", "p"),
            ("HOME", &tmp.path().display().to_string()),
        ]);
        assert!(env
            .base
            .iter()
            .all(|(k, _)| k != "SECRET_X" && k != "BERTH_AGENT_TOKEN"));
        assert!(env.secrets.iter().any(|(k, _)| k == "SECRET_X"));
        let body = "echo \"secret=$SECRET_X token=${BERTH_AGENT_TOKEN:-unset} plain=$PLAIN script=$BERTH_SCRIPT cwd=$(pwd)\"; env | grep -c tok-123 || true";
        let (shared, runner) = fixture(tmp.path(), vec![script("envy", body, true, false)], env);
        runner.clone().run_start().await;
        let cwd = std::fs::canonicalize(tmp.path()).expect("canonical");
        assert_eq!(
            texts(&shared, 0),
            vec![
                format!(
                    "secret=s3cret token=unset plain=p script=envy cwd={}",
                    cwd.display()
                ),
                "0".to_string()
            ]
        );
    }
}
