//! The local runtime: on the simulated cloud, every task that reaches
//! RUNNING runs its container's agent as a real child process of the
//! operator, so `berth up` on a laptop gives real shells, scripts and
//! files (DESIGN.md, "The local runtime").
//!
//! # Design
//! The simulator ([`Sim`]) has no background tasks; its state is a function
//! of time, advanced on every call. [`LocalRuntime::run`] is one loop that
//! polls [`Sim::tasks_snapshot`] every [`DEFAULT_POLL_INTERVAL`] and
//! reconciles the set of child processes against it, the way the ECS agent
//! does on a container instance:
//!
//! * a RUNNING task without a process gets one: the configured program
//!   (production: this binary's `agent` subcommand) in its own process
//!   group, with a cleared environment set to what the container would see
//!   (below), the working directory its home, stdout and stderr appended to
//!   `<data_dir>/tasks/<task-id>.log` (the container log, as CloudWatch
//!   would keep it; the simulator's ids are seeded, so after an operator
//!   restart a task id, and its log, may come again: each run is framed by
//!   `--- <time> berth: … ---` lines). A task's container runs at most
//!   once: when its process is gone, a new task (the service's relaunch)
//!   gets a new one.
//! * a DEPROVISIONING task's process group gets SIGTERM, and SIGKILL after
//!   the container's `stopTimeout` if it is still alive, as ECS does.
//! * every exit is reported with [`Sim::task_exited`]. The runtime turns on
//!   [`Sim::set_process_backed`], so a stopping task stays DEPROVISIONING
//!   until its process has exited (not a fixed delay), and a process that
//!   exits by itself while its task is RUNNING stops the task as an exited
//!   essential container does (the service relaunches it).
//! * at shutdown every child gets SIGTERM, then SIGKILL after its stop
//!   timeout, within [`SHUTDOWN_BUDGET`] in all.
//!
//! A process's own children share its process group and are signalled with
//! it; when the main process exits, what is left of the group is killed
//! (a container's processes do not outlive it).
//!
//! # Environment
//! The environment is cleared, then set to: `PATH` (the operator's), the
//! container definition's `environment`, every `secrets[]` entry resolved
//! from the simulated Secrets Manager ([`Sim::secret_value`]; see
//! "Failures" for secrets it does not hold), `HOME` = the
//! workspace's home directory on this machine, `BERTH_CONTAINER_HOME` = the
//! path the home is mounted at in the container (the template's
//! `homePath`), and `BERTH_STOP_TIMEOUT` = the container's `stopTimeout`
//! (30 when unset).
//!
//! # Homes
//! An EFS file system is a directory `<data_dir>/efs/<fileSystemId>`; an
//! access point is its root directory below it (leading `/` stripped, `.`
//! and `..` refused), so a workspace's home is
//! `<data_dir>/efs/<fs-id>/<access point root>`, created with mode 0700 when
//! missing and never deleted: files survive stop and start, as on EFS.
//!
//! # Failures
//! One task's failure never stops the loop: it is logged with the task ARN.
//! A task whose secret or access point cannot be resolved is skipped with
//! one warning (it keeps RUNNING without a process; a strict simulator
//! fails such tasks at start, so this should not happen). A permissive
//! simulator (`berth up`) takes secrets it does not hold, such as a
//! template's secrets of a real account, as existing: the process starts
//! without those variables, with a warning. A program that cannot be
//! started is reported as an exited container, as ECS reports a container
//! that cannot start.
//!
//! # Orphans
//! Each child's pid (with its start time, on Linux) is kept in
//! `<data_dir>/tasks/<task-id>.pid` while it runs. An operator that died
//! without stopping its children (SIGKILL, a crash) leaves them running
//! against homes that the next operator's tasks will use: at start the
//! runtime sends such still-running orphans SIGTERM, then SIGKILL, before
//! it starts anything. Without `/proc` (macOS) orphans cannot be told from
//! unrelated processes that reused the pid and are left alone.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use berth_cloud::ecs::{ContainerDefinition, TaskDefinition, TaskStatus};
use berth_cloud::sim::{Sim, SimTask};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often the runtime compares its processes with the simulated tasks.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// At operator shutdown, children get at most this long (in all) between
/// SIGTERM and SIGKILL.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);
/// ECS's default `stopTimeout`.
const DEFAULT_STOP_TIMEOUT_SECONDS: u32 = 30;
/// After SIGKILL, how long shutdown waits for the exits to be seen.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// Why a task's process could not be prepared or started.
#[derive(Debug, thiserror::Error)]
pub enum LocalRtError {
    /// The task definition has no container.
    #[error("task definition {0} has no container")]
    NoContainer(String),
    /// A `secrets[]` entry names no secret of the simulated Secrets Manager.
    #[error("secret {name} (valueFrom {value_from}) cannot be resolved")]
    Secret {
        /// The environment variable.
        name: String,
        /// The secret reference.
        value_from: String,
    },
    /// The EFS access point of the home volume does not exist.
    #[error("access point {0} does not exist")]
    AccessPoint(String),
    /// A file system id or root directory that cannot be a local path.
    #[error("{what} {value:?} cannot be mapped to a local directory")]
    BadPath {
        /// What the value is (file system id, root directory).
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A file or directory of the data directory could not be made.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The program could not be started.
    #[error("could not start {}: {source}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Runs the containers of the simulated cloud's RUNNING tasks as local
/// processes (see the module docs). Cheap to clone: it is configuration
/// and a [`Sim`] handle; [`LocalRuntime::run`] holds the processes.
#[derive(Clone, Debug)]
pub struct LocalRuntime {
    sim: Sim,
    data_dir: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    poll: Duration,
}

/// The directory an EFS file system's `root_directory` maps to under
/// `data_dir`: `<data_dir>/efs/<file_system_id>/<root_directory without its
/// leading '/'>`. Refuses ids and roots that are not plain relative paths
/// (`..`, `.`, separators in the id).
pub fn home_dir(
    data_dir: &Path,
    file_system_id: &str,
    root_directory: &str,
) -> Result<PathBuf, LocalRtError> {
    let fs_ok = !file_system_id.is_empty()
        && !file_system_id.contains('/')
        && file_system_id != "."
        && file_system_id != "..";
    if !fs_ok {
        return Err(LocalRtError::BadPath {
            what: "file system id",
            value: file_system_id.to_owned(),
        });
    }
    let mut dir = data_dir.join("efs").join(file_system_id);
    for component in Path::new(root_directory.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => dir.push(part),
            _ => {
                return Err(LocalRtError::BadPath {
                    what: "root directory",
                    value: root_directory.to_owned(),
                })
            }
        }
    }
    Ok(dir)
}

/// `path` made absolute against the current directory (HOME and the
/// children's working directory must not depend on it later).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Creates `dir` and its missing parents with mode 0700.
fn create_private_dir(dir: &Path) -> Result<(), LocalRtError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| LocalRtError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// The container the runtime runs: the first essential one, else the first.
fn main_container(td: &TaskDefinition) -> Option<&ContainerDefinition> {
    td.container_definitions
        .iter()
        .find(|c| c.essential)
        .or_else(|| td.container_definitions.first())
}

/// A started process of a task.
struct Proc {
    task_id: String,
    pid: Pid,
    started: Instant,
    stop_timeout: Duration,
    term_sent: Option<Instant>,
    kill_sent: bool,
}

impl Proc {
    /// Signals the process group; a group that is already gone is fine.
    fn signal(&self, signal: Signal, task_arn: &str) {
        // Never the operator's own group (pid 0 would mean it).
        if self.pid.as_raw() <= 1 {
            return;
        }
        match killpg(self.pid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(task = %task_arn, pid = %self.pid, %signal, error = %e, "could not signal the task's process group")
            }
        }
    }

    fn term(&mut self, task_arn: &str, now: Instant) {
        if self.term_sent.is_none() {
            self.term_sent = Some(now);
            self.signal(Signal::SIGTERM, task_arn);
        }
    }

    fn kill(&mut self, task_arn: &str) {
        if !self.kill_sent {
            self.kill_sent = true;
            self.signal(Signal::SIGKILL, task_arn);
        }
    }

    /// True when it was sent SIGTERM at least its stop timeout ago.
    fn overdue(&self, now: Instant) -> bool {
        !self.kill_sent
            && self
                .term_sent
                .is_some_and(|t| now.saturating_duration_since(t) >= self.stop_timeout)
    }
}

/// A process exit, from the task waiting on the child.
struct Exit {
    task_arn: String,
    status: io::Result<ExitStatus>,
}

/// What [`LocalRuntime::run`] holds.
#[derive(Default)]
struct RunState {
    /// Task ARN → its running process.
    procs: HashMap<String, Proc>,
    /// Tasks whose process ran and exited, or that were skipped: never
    /// (re)started. Forgotten once the task leaves the snapshot.
    done: HashSet<String>,
}

/// Everything a process is started with.
struct Launch {
    env: Vec<(String, String)>,
    home: PathBuf,
    stop_timeout: u32,
}

impl LocalRuntime {
    /// A runtime over `sim` keeping homes and logs under `data_dir` and
    /// running `program args` for every task (production:
    /// `std::env::current_exe()` with `["agent"]`). Turns on
    /// [`Sim::set_process_backed`], so tasks launched from now on wait for
    /// their process to exit when they stop.
    pub fn new(sim: Sim, data_dir: PathBuf, program: PathBuf, args: Vec<String>) -> Self {
        sim.set_process_backed(true);
        LocalRuntime {
            sim,
            data_dir: absolute(&data_dir),
            program,
            args,
            poll: DEFAULT_POLL_INTERVAL,
        }
    }

    /// Changes how often the simulated tasks are polled.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// Where homes (`efs/`) and container logs (`tasks/`) are kept.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Moves homes and logs to `data_dir` (before [`LocalRuntime::run`]).
    pub fn set_data_dir(&mut self, data_dir: PathBuf) {
        self.data_dir = absolute(&data_dir);
    }

    /// The container log of a task: `<data_dir>/tasks/<task-id>.log`.
    pub fn log_path(&self, task_id: &str) -> PathBuf {
        self.data_dir.join("tasks").join(format!("{task_id}.log"))
    }

    fn pid_path(&self, task_id: &str) -> PathBuf {
        self.data_dir.join("tasks").join(format!("{task_id}.pid"))
    }

    /// Runs until `shutdown` resolves, then stops every child (SIGTERM,
    /// SIGKILL after its stop timeout, [`SHUTDOWN_BUDGET`] in all).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(
            data_dir = %self.data_dir.display(),
            program = %self.program.display(),
            "local runtime: RUNNING tasks of the simulated cloud run as local processes"
        );
        self.reap_orphans().await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut st = RunState::default();
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(exit) = rx.recv() => self.exited(&mut st, exit),
                _ = tick.tick() => self.step(&mut st, &tx),
            }
        }
        self.stop_all(&mut st, &mut rx).await;
        self.sim.set_process_backed(false);
        tracing::info!("local runtime stopped");
    }

    /// One comparison of the processes with the simulated tasks.
    fn step(&self, st: &mut RunState, tx: &mpsc::UnboundedSender<Exit>) {
        let tasks = self.sim.tasks_snapshot();
        let now = Instant::now();
        for task in &tasks {
            match task.last_status {
                TaskStatus::Running => {
                    if st.procs.contains_key(&task.task_arn) || st.done.contains(&task.task_arn) {
                        continue;
                    }
                    match self.spawn(task, tx) {
                        Ok(proc) => {
                            st.procs.insert(task.task_arn.clone(), proc);
                        }
                        Err(e @ LocalRtError::Spawn { .. }) => {
                            tracing::warn!(task = %task.task_arn, error = %e, "the task's container cannot start; it stops as an exited container");
                            st.done.insert(task.task_arn.clone());
                            self.sim.task_exited(&task.task_arn, None);
                        }
                        Err(e) => {
                            tracing::warn!(task = %task.task_arn, error = %e, "not starting a process for the task");
                            st.done.insert(task.task_arn.clone());
                        }
                    }
                }
                TaskStatus::Deprovisioning => match st.procs.get_mut(&task.task_arn) {
                    Some(proc) if proc.term_sent.is_none() => {
                        tracing::info!(task = %task.task_arn, pid = %proc.pid, stop_timeout = ?proc.stop_timeout, "stopping the task's process (SIGTERM)");
                        proc.term(&task.task_arn, now);
                    }
                    Some(_) => {}
                    // Stopped before a process was started (or one was
                    // never started): nothing to wait for.
                    None if task.process_backed && task.stop_requested && !task.exit_reported => {
                        self.sim.task_exited(&task.task_arn, None);
                    }
                    None => {}
                },
                _ => {}
            }
        }
        let live: HashSet<&str> = tasks.iter().map(|t| t.task_arn.as_str()).collect();
        for (arn, proc) in &mut st.procs {
            if !live.contains(arn.as_str()) && !proc.kill_sent {
                tracing::warn!(task = %arn, pid = %proc.pid, "the task stopped while its process runs: SIGKILL");
                proc.kill(arn);
            } else if proc.overdue(now) {
                tracing::warn!(task = %arn, pid = %proc.pid, stop_timeout = ?proc.stop_timeout, "the task's process did not exit within its stop timeout: SIGKILL");
                proc.kill(arn);
            }
        }
        st.done.retain(|arn| live.contains(arn.as_str()));
    }

    /// Everything the process of `task` is started with.
    fn prepare(&self, task: &SimTask) -> Result<Launch, LocalRtError> {
        let td = &task.task_definition;
        let container = main_container(td)
            .ok_or_else(|| LocalRtError::NoContainer(td.task_definition_arn.clone()))?;
        let mut env: Vec<(String, String)> = Vec::new();
        if let Some(path) = std::env::var_os("PATH") {
            env.push(("PATH".into(), path.to_string_lossy().into_owned()));
        }
        env.extend(
            container
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        // A permissive simulator (`berth up`) runs tasks whose secrets live
        // in a real account only; they start without those variables.
        let permissive = self.sim.config().permissive;
        for secret in &container.secrets {
            match self.sim.secret_value(&secret.value_from) {
                Some(value) => env.push((secret.name.clone(), value.expose().to_owned())),
                None if permissive => tracing::warn!(
                    task = %task.task_arn,
                    variable = %secret.name,
                    value_from = %secret.value_from,
                    "the secret is not in the simulated Secrets Manager: the process starts without the variable"
                ),
                None => {
                    return Err(LocalRtError::Secret {
                        name: secret.name.clone(),
                        value_from: secret.value_from.clone(),
                    })
                }
            }
        }
        let (home, container_home) = self.home_of(task, container)?;
        create_private_dir(&home)?;
        let stop_timeout = container
            .stop_timeout
            .unwrap_or(DEFAULT_STOP_TIMEOUT_SECONDS);
        env.push(("HOME".into(), home.to_string_lossy().into_owned()));
        env.push(("BERTH_CONTAINER_HOME".into(), container_home));
        env.push(("BERTH_STOP_TIMEOUT".into(), stop_timeout.to_string()));
        env.push((crate::agent::supervisor::LOCAL_ENV.into(), "1".into()));
        Ok(Launch {
            env,
            home,
            stop_timeout,
        })
    }

    /// The local home directory of `container` and the path it is mounted
    /// at in the container: its EFS mount (the one at `$HOME` when there
    /// are several), or, without one, a scratch directory of the task.
    fn home_of(
        &self,
        task: &SimTask,
        container: &ContainerDefinition,
    ) -> Result<(PathBuf, String), LocalRtError> {
        let td = &task.task_definition;
        let env_home = container.environment.get("HOME");
        let mut efs_mounts = container.mount_points.iter().filter_map(|m| {
            td.volumes
                .iter()
                .find(|v| v.name == m.source_volume)
                .and_then(|v| v.efs_volume_configuration.as_ref())
                .map(|efs| (m, efs))
        });
        let mount = match env_home {
            Some(h) => efs_mounts
                .clone()
                .find(|(m, _)| &m.container_path == h)
                .or_else(|| efs_mounts.next()),
            None => efs_mounts.next(),
        };
        let Some((mount, efs)) = mount else {
            let scratch = self
                .data_dir
                .join("tasks")
                .join(format!("{}.home", task.task_id));
            return Ok((scratch, env_home.cloned().unwrap_or_else(|| "/".into())));
        };
        let (fs_id, root) = match &efs.access_point_id {
            Some(ap_id) => {
                let ap = self
                    .sim
                    .access_point(ap_id)
                    .ok_or_else(|| LocalRtError::AccessPoint(ap_id.clone()))?;
                (ap.file_system_id, ap.root_directory.path)
            }
            None => (
                efs.file_system_id.clone(),
                efs.root_directory.clone().unwrap_or_else(|| "/".into()),
            ),
        };
        Ok((
            home_dir(&self.data_dir, &fs_id, &root)?,
            mount.container_path.clone(),
        ))
    }

    /// Starts the process of `task` and a task that reports its exit.
    fn spawn(
        &self,
        task: &SimTask,
        tx: &mpsc::UnboundedSender<Exit>,
    ) -> Result<Proc, LocalRtError> {
        let launch = self.prepare(task)?;
        let tasks_dir = self.data_dir.join("tasks");
        create_private_dir(&tasks_dir)?;
        let log_path = self.log_path(&task.task_id);
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LocalRtError::Io { path, source }
        };
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        log_line(&mut log, &format!("task {} starts", task.task_arn)).map_err(io_err(&log_path))?;
        let log_err = log.try_clone().map_err(io_err(&log_path))?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.home)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| LocalRtError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        let Some(raw_pid) = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .filter(|p| *p > 1)
        else {
            return Err(LocalRtError::Spawn {
                program: self.program.clone(),
                source: io::Error::other("the started process has no pid"),
            });
        };
        let pid = Pid::from_raw(raw_pid);
        self.write_pid_file(&task.task_id, pid, launch.stop_timeout);
        tracing::info!(
            task = %task.task_arn,
            service = %task.service,
            %pid,
            home = %launch.home.display(),
            log = %log_path.display(),
            "started the task's process"
        );
        let tx = tx.clone();
        let task_arn = task.task_arn.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // A container's processes do not outlive it.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = tx.send(Exit { task_arn, status });
        });
        Ok(Proc {
            task_id: task.task_id.clone(),
            pid,
            started: Instant::now(),
            stop_timeout: Duration::from_secs(u64::from(launch.stop_timeout)),
            term_sent: None,
            kill_sent: false,
        })
    }

    /// A process exited: log it and report it to the simulator.
    fn exited(&self, st: &mut RunState, exit: Exit) {
        let Some(proc) = st.procs.remove(&exit.task_arn) else {
            return;
        };
        st.done.insert(exit.task_arn.clone());
        let _ = std::fs::remove_file(self.pid_path(&proc.task_id));
        let now = Instant::now();
        let ran_for = now.saturating_duration_since(proc.started);
        let stop_took = proc.term_sent.map(|t| now.saturating_duration_since(t));
        let line = match &exit.status {
            Ok(status) => format!("the process exited ({status})"),
            Err(e) => format!("the process was lost ({e})"),
        };
        let log_path = self.log_path(&proc.task_id);
        let appended = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .and_then(|mut log| log_line(&mut log, &line));
        if let Err(e) = appended {
            tracing::debug!(path = %log_path.display(), error = %e, "could not append to the container log");
        }
        let code = match &exit.status {
            Ok(status) => {
                tracing::info!(
                    task = %exit.task_arn,
                    pid = %proc.pid,
                    %status,
                    ?ran_for,
                    ?stop_took,
                    killed = proc.kill_sent,
                    "the task's process exited"
                );
                status.code()
            }
            Err(e) => {
                tracing::warn!(task = %exit.task_arn, pid = %proc.pid, error = %e, "could not wait for the task's process; taking it as exited");
                None
            }
        };
        if !self.sim.task_exited(&exit.task_arn, code) {
            tracing::debug!(task = %exit.task_arn, "the simulator did not take the exit (task already stopped or not process-backed)");
        }
    }

    /// Shutdown: SIGTERM to every child, SIGKILL to each after its stop
    /// timeout, within [`SHUTDOWN_BUDGET`].
    async fn stop_all(&self, st: &mut RunState, rx: &mut mpsc::UnboundedReceiver<Exit>) {
        if st.procs.is_empty() {
            return;
        }
        tracing::info!(
            processes = st.procs.len(),
            "stopping the local task processes"
        );
        let start = Instant::now();
        for (arn, proc) in &mut st.procs {
            proc.term(arn, start);
        }
        let deadline = start + SHUTDOWN_BUDGET;
        let mut killed_at: Option<Instant> = None;
        while !st.procs.is_empty() {
            let now = Instant::now();
            if killed_at.is_none() && now >= deadline {
                for (arn, proc) in &mut st.procs {
                    tracing::warn!(task = %arn, pid = %proc.pid, "the task's process did not exit at shutdown: SIGKILL");
                    proc.kill(arn);
                }
                killed_at = Some(now);
            }
            for (arn, proc) in &mut st.procs {
                if proc.overdue(now) {
                    tracing::warn!(task = %arn, pid = %proc.pid, "the task's process did not exit within its stop timeout: SIGKILL");
                    proc.kill(arn);
                }
            }
            if killed_at.is_some_and(|k| now >= k + KILL_WAIT) {
                tracing::warn!(
                    processes = st.procs.len(),
                    "giving up waiting for killed task processes"
                );
                break;
            }
            tokio::select! {
                Some(exit) = rx.recv() => self.exited(st, exit),
                _ = tokio::time::sleep(self.poll.min(Duration::from_millis(100))) => {}
            }
        }
    }

    /// Remembers a child's pid (and start time) until it exits.
    fn write_pid_file(&self, task_id: &str, pid: Pid, stop_timeout: u32) {
        let start = proc_identity(pid)
            .map(|(_, start)| start.to_string())
            .unwrap_or_else(|| "-".into());
        let path = self.pid_path(task_id);
        if let Err(e) = std::fs::write(&path, format!("{pid} {start} {stop_timeout}\n")) {
            tracing::warn!(path = %path.display(), error = %e, "could not write the pid file");
        }
    }

    /// Stops processes a previous operator left running (see the module
    /// docs), then forgets their pid files.
    async fn reap_orphans(&self) {
        let dir = self.data_dir.join("tasks");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut orphans: Vec<(Pid, u64, Duration)> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "pid") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let _ = std::fs::remove_file(&path);
            let mut fields = text.split_whitespace();
            let pid = fields.next().and_then(|p| p.parse::<i32>().ok());
            let start = fields.next().and_then(|s| s.parse::<u64>().ok());
            let timeout = fields
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::from(DEFAULT_STOP_TIMEOUT_SECONDS));
            let (Some(pid), Some(start)) = (pid, start) else {
                continue;
            };
            let pid = Pid::from_raw(pid);
            if is_same_group_leader(pid, start) {
                tracing::warn!(%pid, file = %path.display(), "a task process of a previous operator still runs: stopping it");
                let _ = killpg(pid, Signal::SIGTERM);
                orphans.push((pid, start, Duration::from_secs(timeout)));
            }
        }
        if orphans.is_empty() {
            return;
        }
        let longest = orphans.iter().map(|o| o.2).max().unwrap_or_default();
        let deadline = Instant::now() + longest.min(SHUTDOWN_BUDGET);
        while Instant::now() < deadline {
            orphans.retain(|(pid, start, _)| is_same_group_leader(*pid, *start));
            if orphans.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (pid, start, _) in orphans {
            if is_same_group_leader(pid, start) {
                tracing::warn!(%pid, "SIGKILL to a task process of a previous operator");
                let _ = killpg(pid, Signal::SIGKILL);
            }
        }
    }
}

/// Appends `--- <UTC time> berth: <text> ---` to a container log: the
/// runtime's own lines between the process's output.
fn log_line(log: &mut std::fs::File, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    writeln!(log, "--- {now} berth: {text} ---")
}

/// `(process group, start time in clock ticks since boot)` of a live
/// process, from `/proc/<pid>/stat` (None elsewhere, and for zombies).
fn proc_identity(pid: Pid) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: fields after its ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    let pgrp = fields.get(2)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((pgrp, start))
}

/// True when `pid` is still the process the runtime started (same start
/// time) and leads its own process group.
fn is_same_group_leader(pid: Pid, start: u64) -> bool {
    proc_identity(pid).is_some_and(|(pgrp, s)| pgrp == pid.as_raw() && s == start)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use berth_cloud::ecs::{
        ContainerDefinition, CreateService, DesiredStatus, EfsVolumeConfiguration, MountPoint,
        NetworkConfiguration, RegisterTaskDefinition, SecretEnv, StopCode, UpdateService, Volume,
    };
    use berth_cloud::efs::{CreateAccessPoint, CreationInfo, PosixUser, RootDirectory};
    use berth_cloud::secrets::PutSecret;
    use berth_cloud::sim::{Delays, RateLimits, SimConfig};
    use berth_cloud::{Ecs, Efs, SecretString, Secrets};

    use super::*;

    const CLUSTER: &str = "dev";
    const FS: &str = "fs-0123456789abcdef0";
    const SERVICE: &str = "ws-alice";
    const POLL: Duration = Duration::from_millis(50);

    /// Writes its environment, cwd and pid into $HOME, counts starts, and
    /// on TERM writes a marker, waits a little and exits.
    const AGENT: &str = r#"env > "$HOME/env.txt"; pwd > "$HOME/cwd.txt"; echo $$ > "$HOME/pid"
echo started >> "$HOME/starts"; echo "hello from the agent"
trap 'echo term > "$HOME/term.marker"; sleep 0.5; exit 0' TERM
while :; do sleep 0.1; done"#;
    /// Ignores TERM.
    const STUBBORN: &str = r#"echo $$ > "$HOME/pid"; trap '' TERM
while :; do sleep 0.1; done"#;

    fn fast_sim() -> Sim {
        fast_sim_with(false)
    }

    fn fast_sim_with(permissive: bool) -> Sim {
        Sim::new(SimConfig {
            permissive,
            clusters: vec![CLUSTER.into()],
            file_systems: vec![FS.into()],
            delays: Delays {
                provisioning: Duration::from_millis(50),
                pending: Duration::from_millis(50),
                stopping: Duration::from_millis(50),
                restart: Duration::from_millis(100),
                access_point_creating: Duration::ZERO,
                access_point_deleting: Duration::ZERO,
                ..Delays::default()
            },
            rate_limits: RateLimits::disabled(),
            ..SimConfig::default()
        })
    }

    struct Fixture {
        sim: Sim,
        data: tempfile::TempDir,
        home: PathBuf,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        runtime: Option<tokio::task::JoinHandle<()>>,
    }

    impl Fixture {
        /// A sim with a secret, an access point and a service of
        /// desiredCount 1 whose container runs `script` under the runtime.
        async fn start(script: &str, stop_timeout: u32) -> Fixture {
            Fixture::start_with(script, stop_timeout, false).await
        }

        /// With `permissive`, the container also has a secret of a real
        /// account, which the simulator does not hold.
        async fn start_with(script: &str, stop_timeout: u32, permissive: bool) -> Fixture {
            let sim = fast_sim_with(permissive);
            let data = tempfile::tempdir().expect("tempdir");
            let secret = sim
                .put_secret_value(PutSecret {
                    name: "berth/default/alice/agent-token".into(),
                    value: SecretString::new("t0k3n"),
                    description: None,
                    tags: Default::default(),
                })
                .await
                .expect("secret");
            let ap = sim
                .create_access_point(CreateAccessPoint {
                    client_token: "uid-1".into(),
                    file_system_id: FS.into(),
                    posix_user: Some(PosixUser {
                        uid: 1000,
                        gid: 1000,
                        secondary_gids: Vec::new(),
                    }),
                    root_directory: Some(RootDirectory {
                        path: "/berth/default/alice".into(),
                        creation_info: Some(CreationInfo {
                            owner_uid: 1000,
                            owner_gid: 1000,
                            permissions: "0750".into(),
                        }),
                    }),
                    tags: Default::default(),
                })
                .await
                .expect("access point");
            let runtime = LocalRuntime::new(
                sim.clone(),
                data.path().to_owned(),
                "/bin/sh".into(),
                vec!["-c".into(), script.into()],
            )
            .with_poll_interval(POLL);
            sim.register_task_definition(RegisterTaskDefinition {
                family: SERVICE.into(),
                cpu: 1024,
                memory: 2048,
                execution_role_arn: Some("arn:aws:iam::123456789012:role/exec".into()),
                container_definitions: vec![ContainerDefinition {
                    name: "workspace".into(),
                    image: "ghcr.io/berth/dev:1".into(),
                    essential: true,
                    environment: BTreeMap::from([
                        ("GREETING".to_string(), "hi there".to_string()),
                        ("HOME".to_string(), "/home/coder".to_string()),
                    ]),
                    secrets: std::iter::once(SecretEnv {
                        name: "BERTH_AGENT_TOKEN".into(),
                        value_from: secret.arn.clone(),
                    })
                    .chain(
                        permissive.then(|| SecretEnv {
                            name: "GITHUB_RUNNER_PAT".into(),
                            value_from:
                                "arn:aws:secretsmanager:us-west-2:271851283454:secret:pat-H25W0G"
                                    .into(),
                        }),
                    )
                    .collect(),
                    mount_points: vec![MountPoint {
                        source_volume: "home".into(),
                        container_path: "/home/coder".into(),
                        read_only: false,
                    }],
                    stop_timeout: Some(stop_timeout),
                    ..ContainerDefinition::default()
                }],
                volumes: vec![Volume {
                    name: "home".into(),
                    efs_volume_configuration: Some(EfsVolumeConfiguration {
                        file_system_id: FS.into(),
                        root_directory: None,
                        transit_encryption: true,
                        access_point_id: Some(ap.access_point_id.clone()),
                        iam_authorization: false,
                    }),
                }],
                ..RegisterTaskDefinition::default()
            })
            .await
            .expect("register");
            sim.create_service(CreateService {
                cluster: CLUSTER.into(),
                service_name: SERVICE.into(),
                task_definition: SERVICE.into(),
                desired_count: 1,
                network_configuration: NetworkConfiguration {
                    subnets: vec!["subnet-1".into()],
                    ..NetworkConfiguration::default()
                },
                ..CreateService::default()
            })
            .await
            .expect("create service");
            let (tx, rx) = tokio::sync::oneshot::channel();
            let handle = tokio::spawn(runtime.run(async move {
                let _ = rx.await;
            }));
            let home = data.path().join("efs").join(FS).join("berth/default/alice");
            Fixture {
                sim,
                data,
                home,
                stop: Some(tx),
                runtime: Some(handle),
            }
        }

        async fn scale(&self, desired: u32) {
            self.sim
                .update_service(UpdateService {
                    cluster: CLUSTER.into(),
                    service: SERVICE.into(),
                    desired_count: Some(desired),
                    ..UpdateService::default()
                })
                .await
                .expect("scale");
        }

        /// Every task of the service, as DescribeTasks shows it.
        async fn tasks(&self) -> Vec<berth_cloud::ecs::Task> {
            let mut arns = Vec::new();
            for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
                arns.extend(
                    self.sim
                        .list_tasks(CLUSTER, SERVICE, status)
                        .await
                        .expect("list"),
                );
            }
            self.sim
                .describe_tasks(CLUSTER, &arns)
                .await
                .expect("describe")
                .tasks
        }

        fn read(&self, name: &str) -> Option<String> {
            std::fs::read_to_string(self.home.join(name)).ok()
        }

        async fn shutdown(mut self) {
            self.stop_runtime().await;
        }

        async fn stop_runtime(&mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            if let Some(h) = self.runtime.take() {
                tokio::time::timeout(Duration::from_secs(15), h)
                    .await
                    .expect("the runtime stops")
                    .expect("the runtime does not panic");
            }
        }
    }

    async fn eventually<F: FnMut() -> bool>(what: &str, timeout: Duration, mut f: F) {
        let deadline = Instant::now() + timeout;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn alive(pid: &str) -> bool {
        let pid: i32 = pid.trim().parse().expect("pid");
        nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
    }

    fn env_map(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn home_dirs_map_access_point_roots_under_the_data_dir() {
        let data = Path::new("/data");
        assert_eq!(
            home_dir(data, "fs-1", "/berth/default/alice").expect("ok"),
            PathBuf::from("/data/efs/fs-1/berth/default/alice")
        );
        assert_eq!(
            home_dir(data, "fs-1", "/").expect("ok"),
            PathBuf::from("/data/efs/fs-1")
        );
        assert!(home_dir(data, "fs-1", "/a/../../etc").is_err());
        assert!(home_dir(data, "fs-1", "/..").is_err());
        assert!(home_dir(data, "..", "/").is_err());
        assert!(home_dir(data, "fs/1", "/").is_err());
        assert!(home_dir(data, "", "/").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn running_task_runs_the_program_with_the_containers_env_in_its_home() {
        let fx = Fixture::start(AGENT, 10).await;
        eventually("the process to start", Duration::from_secs(10), || {
            fx.read("env.txt")
                .is_some_and(|e| e.contains("BERTH_STOP_TIMEOUT"))
        })
        .await;
        // Written before the env file is complete? `env >` writes at once;
        // give the shell a moment to finish the other files.
        eventually("the cwd file", Duration::from_secs(5), || {
            fx.read("cwd.txt").is_some()
        })
        .await;
        let env = env_map(&fx.read("env.txt").expect("env"));
        let home = fx.home.to_string_lossy().into_owned();
        assert_eq!(env.get("HOME"), Some(&home));
        assert_eq!(
            env.get("BERTH_AGENT_TOKEN").map(String::as_str),
            Some("t0k3n")
        );
        assert_eq!(env.get("GREETING").map(String::as_str), Some("hi there"));
        assert_eq!(
            env.get("BERTH_CONTAINER_HOME").map(String::as_str),
            Some("/home/coder")
        );
        assert_eq!(
            env.get("BERTH_STOP_TIMEOUT").map(String::as_str),
            Some("10")
        );
        assert!(env.contains_key("PATH"));
        assert!(
            !env.keys()
                .any(|k| k.starts_with("CARGO") || k == "RUST_TEST_THREADS"),
            "the operator's environment is not inherited: {env:?}"
        );
        let cwd = fx.read("cwd.txt").expect("cwd");
        assert_eq!(
            std::fs::canonicalize(cwd.trim()).expect("cwd exists"),
            std::fs::canonicalize(&fx.home).expect("home exists")
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&fx.home).expect("home").permissions(),
        );
        assert_eq!(mode & 0o077, 0, "home is private: {mode:o}");
        let tasks = fx.tasks().await;
        assert_eq!(tasks.len(), 1);
        let task_id = tasks[0].task_arn.rsplit('/').next().expect("id").to_owned();
        let log = fx.data.path().join("tasks").join(format!("{task_id}.log"));
        eventually("the container log", Duration::from_secs(5), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("hello from the agent"))
        })
        .await;
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(
            text.starts_with("--- ")
                && text.contains(&format!("berth: task {} starts", tasks[0].task_arn)),
            "{text}"
        );
        assert!(fx
            .data
            .path()
            .join("tasks")
            .join(format!("{task_id}.pid"))
            .is_file());
        fx.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_permissive_sim_starts_without_secrets_it_does_not_hold() {
        let fx = Fixture::start_with(AGENT, 10, true).await;
        eventually("the process to start", Duration::from_secs(10), || {
            fx.read("env.txt")
                .is_some_and(|e| e.contains("BERTH_STOP_TIMEOUT"))
        })
        .await;
        let env = env_map(&fx.read("env.txt").expect("env"));
        assert_eq!(
            env.get("BERTH_AGENT_TOKEN").map(String::as_str),
            Some("t0k3n")
        );
        assert!(!env.contains_key("GITHUB_RUNNER_PAT"), "{env:?}");
        fx.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scaling_to_zero_sends_sigterm_and_the_task_stops_after_its_process_exits() {
        let fx = Fixture::start(AGENT, 10).await;
        eventually("the process to start", Duration::from_secs(10), || {
            fx.read("pid").is_some_and(|p| !p.trim().is_empty())
        })
        .await;
        std::fs::write(fx.home.join("notes.txt"), "keep me").expect("write");
        let pid = fx.read("pid").expect("pid");
        fx.scale(0).await;
        eventually("the TERM marker", Duration::from_secs(5), || {
            fx.read("term.marker").is_some()
        })
        .await;
        // The trap sleeps 0.5 s: the task is still stopping, far beyond
        // Delays::stopping (50 ms).
        let tasks = fx.tasks().await;
        assert_eq!(
            tasks[0].last_status,
            TaskStatus::Deprovisioning,
            "{tasks:?}"
        );
        let mut stopped = None;
        for _ in 0..200 {
            let tasks = fx.tasks().await;
            if tasks[0].last_status == TaskStatus::Stopped {
                stopped = Some(tasks[0].clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stopped = stopped.expect("the task stops");
        assert!(!alive(&pid), "the process exited");
        assert_eq!(stopped.stop_code, Some(StopCode::ServiceSchedulerInitiated));
        let took = stopped
            .stopped_at
            .and_then(|s| s.duration_since(stopped.stopping_at?).ok())
            .expect("stop times");
        let task_id = stopped.task_arn.rsplit('/').next().expect("id");
        let log =
            std::fs::read_to_string(fx.data.path().join("tasks").join(format!("{task_id}.log")))
                .expect("log");
        assert!(
            log.contains("berth: the process exited (exit status: 0) ---"),
            "{log}"
        );
        assert!(
            took >= Duration::from_millis(500),
            "stopped after the process exited: {took:?}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");

        // A new start uses the same home: the file survives.
        fx.scale(1).await;
        eventually("the second start", Duration::from_secs(10), || {
            fx.read("starts").is_some_and(|s| s.lines().count() == 2)
        })
        .await;
        assert_eq!(fx.read("notes.txt").as_deref(), Some("keep me"));
        fx.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_program_that_ignores_sigterm_is_killed_after_the_stop_timeout() {
        let fx = Fixture::start(STUBBORN, 2).await;
        eventually("the process to start", Duration::from_secs(10), || {
            fx.read("pid").is_some_and(|p| !p.trim().is_empty())
        })
        .await;
        let pid = fx.read("pid").expect("pid");
        fx.scale(0).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(alive(&pid), "TERM is ignored");
        assert_eq!(fx.tasks().await[0].last_status, TaskStatus::Deprovisioning);
        let mut stopped = None;
        for _ in 0..200 {
            let tasks = fx.tasks().await;
            if tasks[0].last_status == TaskStatus::Stopped {
                stopped = Some(tasks[0].clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stopped = stopped.expect("the task stops");
        assert!(!alive(&pid), "SIGKILLed");
        let took = stopped
            .stopped_at
            .and_then(|s| s.duration_since(stopped.stopping_at?).ok())
            .expect("stop times");
        assert!(took >= Duration::from_secs(2), "{took:?}");
        assert!(
            took < Duration::from_secs(4),
            "killed by the runtime, not the sim's grace: {took:?}"
        );
        fx.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_that_exits_stops_its_task_and_the_service_relaunches() {
        let script = r#"echo started >> "$HOME/starts"; exit 3"#;
        let fx = Fixture::start(script, 10).await;
        eventually("a relaunch", Duration::from_secs(10), || {
            fx.read("starts").is_some_and(|s| s.lines().count() >= 2)
        })
        .await;
        let tasks = fx.tasks().await;
        let exited = tasks
            .iter()
            .find(|t| t.last_status == TaskStatus::Stopped)
            .expect("a stopped task");
        assert_eq!(exited.stop_code, Some(StopCode::EssentialContainerExited));
        assert_eq!(
            exited.stopped_reason.as_deref(),
            Some("Essential container in task exited")
        );
        fx.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_stops_every_child() {
        let fx = Fixture::start(AGENT, 10).await;
        eventually("the process to start", Duration::from_secs(10), || {
            fx.read("pid").is_some_and(|p| !p.trim().is_empty())
        })
        .await;
        let pid = fx.read("pid").expect("pid");
        let mut fx = fx;
        fx.stop_runtime().await;
        assert!(!alive(&pid), "the child was stopped");
        assert!(fx.read("term.marker").is_some(), "with SIGTERM first");
        let left: Vec<_> = std::fs::read_dir(fx.data.path().join("tasks"))
            .expect("tasks dir")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .collect();
        assert!(left.is_empty(), "pid files are removed: {left:?}");
        assert!(!fx.sim.config().process_backed, "turned off again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orphans_of_a_previous_operator_are_stopped_at_start() {
        if proc_identity(nix::unistd::getpid()).is_none() {
            return; // no /proc
        }
        let data = tempfile::tempdir().expect("tempdir");
        let tasks = data.path().join("tasks");
        create_private_dir(&tasks).expect("dir");
        let mut orphan = tokio::process::Command::new("/bin/sh")
            .args(["-c", "trap '' TERM; while :; do sleep 0.1; done"])
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let pid = Pid::from_raw(orphan.id().expect("pid") as i32);
        let (_, start) = proc_identity(pid).expect("identity");
        std::fs::write(tasks.join("abc.pid"), format!("{pid} {start} 1\n")).expect("pid file");
        // A stale file whose process is gone (or another process) is ignored.
        std::fs::write(tasks.join("old.pid"), format!("{pid} {} 1\n", start + 1))
            .expect("pid file");
        let rt = LocalRuntime::new(
            fast_sim(),
            data.path().to_owned(),
            "/bin/true".into(),
            Vec::new(),
        );
        tokio::time::timeout(Duration::from_secs(5), rt.reap_orphans())
            .await
            .expect("bounded");
        let status = tokio::time::timeout(Duration::from_secs(2), orphan.wait())
            .await
            .expect("the orphan is killed")
            .expect("wait");
        assert!(status.code().is_none(), "killed by a signal: {status}");
        assert!(!tasks.join("abc.pid").exists() && !tasks.join("old.pid").exists());
    }
}
