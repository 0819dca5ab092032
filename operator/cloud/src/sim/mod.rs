//! An in-memory, stateful ECS/EFS/Secrets Manager.
//!
//! The simulator is what `berth up` runs against on a laptop and what
//! controller tests run against. It is faithful where a controller's logic
//! depends on AWS's behaviour:
//!
//! * **Task lifecycle.** Tasks move PROVISIONING → PENDING → RUNNING, and on
//!   scale-down or replacement DEPROVISIONING → STOPPED, over
//!   [`Delays`]. `runningCount`/`pendingCount` evolve as in ECS; a changed
//!   task definition or `forceNewDeployment` starts a new deployment whose
//!   `rolloutState` goes IN_PROGRESS → COMPLETED once the old tasks are
//!   replaced.
//! * **Failures.** A task whose image matches [`SimConfig::fail_images`]
//!   stops with `CannotPullContainerError`, a task whose secret or access
//!   point does not exist stops with `ResourceInitializationError`; the
//!   service keeps relaunching (after [`Delays::restart`]) as ECS does, so
//!   `runningCount` stays 0, and the circuit breaker (when enabled) marks the
//!   rollout FAILED.
//! * **Errors, limits and throttling** as AWS answers them: invalid Fargate
//!   sizes, unknown clusters, non-idempotent creates, `DescribeServices` with
//!   more than 10 names, `MISSING` failures, DRAINING then INACTIVE services,
//!   per-action token buckets at AWS's published rates.
//! * **Faults**: injected 5xx, throttling, lost responses (applied, then
//!   reported as a 5xx) and latency, from a seeded RNG.
//!
//! # Process-backed tasks
//! With [`SimConfig::process_backed`] (what the operator's local runtime
//! turns on, [`Sim::set_process_backed`]), a task that reached RUNNING is
//! taken to run a real local process, which the runtime starts from
//! [`Sim::tasks_snapshot`] (the task definition, [`Sim::secret_value`],
//! [`Sim::access_point`]) and whose exit it reports with
//! [`Sim::task_exited`]. Such a task stays DEPROVISIONING after a stop
//! request until its process has exited (instead of [`Delays::stopping`]),
//! at the latest a grace period after its stop timeout; a process that
//! exits while its task is RUNNING stops the task as an exited essential
//! container does (`EssentialContainerExited`, "Essential container in task
//! exited") and the service relaunches it after [`Delays::restart`]. Tasks
//! launched while the flag is off behave as above, so tests and benchmarks
//! without processes are unchanged.
//!
//! # Time
//! All state is a function of `tokio::time::Instant`: every call first
//! advances the simulation to "now" by replaying the task transitions that
//! fell due, in order. There are no background tasks, so tests under
//! `tokio::time::pause()` are deterministic, and a simulator that nobody
//! calls costs nothing.
//!
//! # Sharing
//! [`Sim`] is a handle; clones share one state. It implements
//! [`Ecs`](crate::Ecs), [`Efs`](crate::Efs) and [`Secrets`](crate::Secrets);
//! [`Cloud::from_sim`](crate::Cloud::from_sim) bundles it.

mod ecs;
mod efs;
mod secrets;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::ecs::{Service, TaskDefinition};
use crate::efs::AccessPoint;
use crate::error::{CloudError, CloudResult, ErrorCode};
use crate::ops::{Operation, Rate, TokenBucket};
use crate::secrets::SecretString;

/// How long the simulated cloud takes to do things.
#[derive(Clone, Debug, PartialEq)]
pub struct Delays {
    /// PROVISIONING: Fargate capacity and the task's ENI.
    pub provisioning: Duration,
    /// PENDING: image pull and container start (a failing image fails at
    /// the end of it).
    pub pending: Duration,
    /// DEPROVISIONING: from the stop request (SIGTERM) to STOPPED.
    pub stopping: Duration,
    /// Time before a service relaunches a task that failed to start.
    pub restart: Duration,
    /// An access point stays `creating` this long.
    pub access_point_creating: Duration,
    /// An access point stays `deleting` this long, then disappears.
    pub access_point_deleting: Duration,
    /// How long an INACTIVE service stays describable (ECS: about an hour).
    pub inactive_service_retention: Duration,
    /// How long a STOPPED task stays listable (ECS: about an hour).
    pub stopped_task_retention: Duration,
}

impl Default for Delays {
    /// Seconds, not minutes: fast enough for a laptop demo, slow enough to
    /// watch a workspace go Starting → Running.
    fn default() -> Self {
        Delays {
            provisioning: Duration::from_secs(2),
            pending: Duration::from_secs(3),
            stopping: Duration::from_secs(2),
            restart: Duration::from_secs(5),
            access_point_creating: Duration::from_millis(500),
            access_point_deleting: Duration::from_millis(500),
            inactive_service_retention: Duration::from_secs(3600),
            stopped_task_retention: Duration::from_secs(3600),
        }
    }
}

/// The simulator's request-rate limits.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimits {
    /// When false nothing is throttled (injected throttling still applies).
    pub enabled: bool,
    /// Multiplies every rate and burst (e.g. 0.1 to provoke throttling in a
    /// small benchmark).
    pub scale: f64,
    /// Per-operation rates replacing AWS's defaults.
    pub overrides: BTreeMap<Operation, Rate>,
}

impl Default for RateLimits {
    /// AWS's published per-action rates.
    fn default() -> Self {
        RateLimits {
            enabled: true,
            scale: 1.0,
            overrides: BTreeMap::new(),
        }
    }
}

impl RateLimits {
    /// No throttling at all.
    pub fn disabled() -> Self {
        RateLimits {
            enabled: false,
            ..RateLimits::default()
        }
    }

    /// The effective rate of `op`.
    pub fn rate(&self, op: Operation) -> Rate {
        self.overrides
            .get(&op)
            .copied()
            .unwrap_or_else(|| op.aws_rate())
            .scaled(self.scale)
    }
}

/// Injected faults. Probabilities are per call, drawn from an RNG seeded
/// with `seed`, so a run is reproducible.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Probability of answering `ServerException` without applying the call.
    pub error_rate: f64,
    /// Probability of answering `ThrottlingException` without applying it.
    pub throttle_rate: f64,
    /// Probability of applying the call and then answering
    /// `ServerException` anyway (a lost response: tests idempotency).
    pub lost_response_rate: f64,
    /// Latency added to every call.
    pub latency: Duration,
    /// RNG seed for fault draws and generated ids.
    pub seed: u64,
}

impl Default for Faults {
    /// No faults, no latency, seed 0.
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            throttle_rate: 0.0,
            lost_response_rate: 0.0,
            latency: Duration::ZERO,
            seed: 0,
        }
    }
}

/// Configuration of a [`Sim`].
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Region used in ARNs.
    pub region: String,
    /// Account id used in ARNs.
    pub account_id: String,
    /// When true, unknown ECS clusters and EFS file systems are created on
    /// first use (what `berth up` wants); when false they are errors as in
    /// AWS and must be created with [`Sim::create_cluster`] /
    /// [`Sim::create_file_system`].
    pub permissive: bool,
    /// Clusters that exist from the start.
    pub clusters: Vec<String>,
    /// File systems (`fs-…`) that exist from the start.
    pub file_systems: Vec<String>,
    /// An image containing any of these substrings fails to pull.
    pub fail_images: Vec<String>,
    /// Timings.
    pub delays: Delays,
    /// Throttling.
    pub rate_limits: RateLimits,
    /// Fault injection.
    pub faults: Faults,
    /// The account's Fargate On-Demand vCPU quota (AWS's default for a new
    /// account is 6): a task that would exceed it is not placed, and the
    /// service says so in an event. `None`: unlimited.
    pub vcpu_quota: Option<u32>,
    /// When true, tasks launched from now on are backed by local processes
    /// (see the module docs): they stop when [`Sim::task_exited`] says
    /// their process exited, not after [`Delays::stopping`].
    pub process_backed: bool,
}

impl Default for SimConfig {
    /// A strict (non-permissive) simulator with AWS's rate limits, no faults
    /// and [`Delays::default`]; images containing `fail` fail to pull.
    fn default() -> Self {
        SimConfig {
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            permissive: false,
            clusters: Vec::new(),
            file_systems: Vec::new(),
            fail_images: vec!["fail".into()],
            delays: Delays::default(),
            rate_limits: RateLimits::default(),
            faults: Faults::default(),
            vcpu_quota: None,
            process_backed: false,
        }
    }
}

impl SimConfig {
    /// The `berth up` configuration: permissive (any cluster and file system
    /// exists), otherwise [`SimConfig::default`].
    pub fn permissive() -> Self {
        SimConfig {
            permissive: true,
            ..SimConfig::default()
        }
    }
}

/// How a call ended, for [`CallCounts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Outcome {
    /// Succeeded.
    Ok,
    /// Rejected by the rate limit (`ThrottlingException`).
    Throttled,
    /// Injected `ThrottlingException`.
    InjectedThrottle,
    /// Injected `ServerException`.
    InjectedError,
    /// Applied, then answered with an injected `ServerException`.
    LostResponse,
    /// Failed with an error of the simulated API (invalid parameter, not
    /// found, …).
    Error,
}

/// A snapshot of calls made to a [`Sim`], by operation and outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    counts: BTreeMap<(Operation, Outcome), u64>,
}

impl CallCounts {
    /// Calls of `op` that ended with `outcome`.
    pub fn get(&self, op: Operation, outcome: Outcome) -> u64 {
        self.counts.get(&(op, outcome)).copied().unwrap_or(0)
    }

    /// All calls of `op`.
    pub fn total(&self, op: Operation) -> u64 {
        self.counts
            .iter()
            .filter(|((o, _), _)| *o == op)
            .map(|(_, n)| n)
            .sum()
    }

    /// All calls that ended with `outcome`.
    pub fn total_outcome(&self, outcome: Outcome) -> u64 {
        self.counts
            .iter()
            .filter(|((_, o), _)| *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    /// All calls.
    pub fn total_calls(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Every non-zero `(operation, outcome) → count`.
    pub fn iter(&self) -> impl Iterator<Item = (Operation, Outcome, u64)> + '_ {
        self.counts.iter().map(|((op, out), n)| (*op, *out, *n))
    }
}

/// A launched, not yet STOPPED task as the local runtime needs it
/// ([`Sim::tasks_snapshot`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SimTask {
    /// `arn:aws:ecs:…:task/{cluster}/{id}`.
    pub task_arn: String,
    /// The task id (the ARN's last segment).
    pub task_id: String,
    /// Cluster name.
    pub cluster: String,
    /// Service name.
    pub service: String,
    /// PROVISIONING, PENDING, RUNNING or DEPROVISIONING.
    pub last_status: crate::ecs::TaskStatus,
    /// When the task began stopping (a stop request, a failed start or
    /// its process exiting), if it did.
    pub stopping_since: Option<Instant>,
    /// Whether the service scheduler asked the task to stop (SIGTERM).
    pub stop_requested: bool,
    /// Why it stops, as `DescribeTasks` will say.
    pub stop_reason: Option<String>,
    /// Time between SIGTERM and SIGKILL: the largest `stopTimeout` of its
    /// containers (ECS's default 30 s when unset).
    pub stop_timeout: Duration,
    /// Whether the task was launched with [`SimConfig::process_backed`].
    pub process_backed: bool,
    /// Whether [`Sim::task_exited`] was already reported for it.
    pub exit_reported: bool,
    /// The task definition revision the task runs.
    pub task_definition: TaskDefinition,
}

/// The region of the current call: its [`crate::region::scope`], else the
/// configured one.
fn region_now(cfg: &SimConfig) -> String {
    crate::region::current().unwrap_or_else(|| cfg.region.clone())
}

/// Maps the simulator's monotonic clock to wall-clock timestamps.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: Instant,
    epoch: SystemTime,
}

impl Clock {
    fn wall(&self, at: Instant) -> SystemTime {
        self.epoch + at.saturating_duration_since(self.start)
    }
}

/// Everything behind the mutex.
struct State {
    cfg: SimConfig,
    clock: Clock,
    ids: StdRng,
    faults: StdRng,
    buckets: BTreeMap<Operation, TokenBucket>,
    counts: BTreeMap<(Operation, Outcome), u64>,
    ecs: ecs::EcsState,
    efs: efs::EfsState,
    secrets: secrets::SecretsState,
}

impl State {
    fn advance(&mut self, now: Instant) {
        let State {
            cfg,
            clock,
            ids,
            ecs,
            efs,
            secrets,
            ..
        } = self;
        let env = ecs::Env {
            cfg,
            clock: *clock,
            efs,
            secrets,
            cpu_elsewhere: 0,
        };
        ecs.advance(now, &env, ids);
        efs.advance(now, &cfg.delays);
    }

    fn count(&mut self, op: Operation, outcome: Outcome) {
        *self.counts.entry((op, outcome)).or_insert(0) += 1;
    }

    /// Rate limit and injected faults that reject a call before it applies.
    fn admit(&mut self, op: Operation, now: Instant) -> Result<(), (Outcome, CloudError)> {
        if self.cfg.rate_limits.enabled {
            let rate = self.cfg.rate_limits.rate(op);
            let bucket = self
                .buckets
                .entry(op)
                .or_insert_with(|| TokenBucket::new(rate, now));
            if bucket.rate() != rate {
                bucket.set_rate(rate, now);
            }
            if bucket.try_take(now).is_err() {
                return Err((
                    Outcome::Throttled,
                    CloudError::new(op.as_str(), ErrorCode::Throttling, "Rate exceeded"),
                ));
            }
        }
        let faults = &self.cfg.faults;
        let (throttle, error) = (faults.throttle_rate, faults.error_rate);
        if draw(&mut self.faults, throttle) {
            return Err((
                Outcome::InjectedThrottle,
                CloudError::new(op.as_str(), ErrorCode::Throttling, "Rate exceeded"),
            ));
        }
        if draw(&mut self.faults, error) {
            return Err((
                Outcome::InjectedError,
                CloudError::new(
                    op.as_str(),
                    ErrorCode::Server,
                    "Service encountered an unexpected error (injected fault).",
                ),
            ));
        }
        Ok(())
    }
}

fn draw(rng: &mut StdRng, probability: f64) -> bool {
    probability > 0.0 && rng.random_bool(probability.clamp(0.0, 1.0))
}

/// A handle on one simulated account and region. Clones share state.
#[derive(Clone)]
pub struct Sim {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").finish_non_exhaustive()
    }
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new(SimConfig::default())
    }
}

impl Sim {
    /// A simulator with `cfg`; time starts at the current
    /// `tokio::time::Instant`.
    pub fn new(cfg: SimConfig) -> Self {
        let now = Instant::now();
        let mut ecs = ecs::EcsState::default();
        ecs.clusters.extend(cfg.clusters.iter().cloned());
        let mut efs = efs::EfsState::default();
        efs.file_systems.extend(cfg.file_systems.iter().cloned());
        let seed = cfg.faults.seed;
        let state = State {
            cfg,
            clock: Clock {
                start: now,
                epoch: SystemTime::now(),
            },
            ids: StdRng::seed_from_u64(seed ^ 0x05ee_d1d5),
            faults: StdRng::seed_from_u64(seed),
            buckets: BTreeMap::new(),
            counts: BTreeMap::new(),
            ecs,
            efs,
            secrets: secrets::SecretsState::default(),
        };
        Sim {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("sim state mutex poisoned")
    }

    /// Runs one API call: latency, advance to now, rate limit and faults,
    /// the call itself, a possible lost response, and counting.
    async fn call<T>(
        &self,
        op: Operation,
        f: impl FnOnce(&mut State, Instant) -> CloudResult<T>,
    ) -> CloudResult<T> {
        let latency = self.lock().cfg.faults.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let now = Instant::now();
        let mut st = self.lock();
        st.advance(now);
        if let Err((outcome, err)) = st.admit(op, now) {
            st.count(op, outcome);
            tracing::debug!(operation = %op, error = %err, "sim call rejected");
            return Err(err);
        }
        let result = f(&mut st, now);
        match &result {
            Ok(_) => {
                let lost = st.cfg.faults.lost_response_rate;
                if draw(&mut st.faults, lost) {
                    st.count(op, Outcome::LostResponse);
                    return Err(CloudError::new(
                        op.as_str(),
                        ErrorCode::Server,
                        "Service encountered an unexpected error (injected lost response).",
                    ));
                }
                st.count(op, Outcome::Ok);
            }
            Err(err) => {
                st.count(op, Outcome::Error);
                tracing::debug!(operation = %op, error = %err, "sim call failed");
            }
        }
        result
    }

    /// Calls so far, by operation and outcome.
    pub fn calls(&self) -> CallCounts {
        CallCounts {
            counts: self.lock().counts.clone(),
        }
    }

    /// Forgets all call counts.
    pub fn reset_calls(&self) {
        self.lock().counts.clear();
    }

    /// Creates an ECS cluster (no-op when it exists); returns its ARN.
    pub fn create_cluster(&self, name: &str) -> String {
        let mut st = self.lock();
        st.ecs.clusters.insert(name.to_owned());
        ecs::cluster_arn(&st.cfg, &region_now(&st.cfg), name)
    }

    /// Creates an EFS file system and returns its `fs-…` id.
    pub fn create_file_system(&self) -> String {
        let mut st = self.lock();
        let id = format!("fs-{}", hex(&mut st.ids, 17));
        st.efs.file_systems.insert(id.clone());
        id
    }

    /// Makes a file system with a chosen id exist.
    pub fn add_file_system(&self, id: &str) {
        self.lock().efs.file_systems.insert(id.to_owned());
    }

    /// Replaces the fault injection settings (the RNG keeps its sequence).
    pub fn set_faults(&self, faults: Faults) {
        self.lock().cfg.faults = faults;
    }

    /// Replaces the rate limits; buckets keep their tokens, capped at the
    /// new bursts.
    pub fn set_rate_limits(&self, limits: RateLimits) {
        self.lock().cfg.rate_limits = limits;
    }

    /// Replaces the set of failing image markers.
    pub fn set_fail_images(&self, markers: Vec<String>) {
        self.lock().cfg.fail_images = markers;
    }

    /// The current configuration.
    pub fn config(&self) -> SimConfig {
        self.lock().cfg.clone()
    }

    /// Number of ACTIVE or DRAINING services over all clusters.
    pub fn service_count(&self) -> usize {
        let mut st = self.lock();
        st.advance(Instant::now());
        st.ecs.live_service_count()
    }

    /// A service as `DescribeServices` would show it now (with tags),
    /// without counting a call or consuming rate limit.
    pub fn service(&self, cluster: &str, name: &str) -> Option<Service> {
        let now = Instant::now();
        let mut st = self.lock();
        st.advance(now);
        let st = &*st;
        st.ecs.peek_service(&st.cfg, st.clock, cluster, name, now)
    }

    /// Revision numbers ever registered in `family` (ACTIVE or INACTIVE).
    pub fn revisions(&self, family: &str) -> Vec<u32> {
        self.lock().ecs.revisions(family)
    }

    /// A task definition by `family`, `family:revision` or ARN, without
    /// counting a call.
    pub fn task_definition(&self, task_definition: &str) -> Option<TaskDefinition> {
        self.lock().ecs.peek_task_definition(task_definition)
    }

    /// Access points of a file system as they are now (not deleted ones).
    pub fn access_points(&self, file_system_id: &str) -> Vec<AccessPoint> {
        let now = Instant::now();
        let mut st = self.lock();
        st.advance(now);
        let st = &*st;
        st.efs
            .list(file_system_id, now, &st.cfg.delays)
            .unwrap_or_default()
    }

    /// Number of existing access points over all file systems.
    pub fn access_point_count(&self) -> usize {
        let now = Instant::now();
        let mut st = self.lock();
        st.advance(now);
        st.efs.count()
    }

    /// The current value of a secret, as ECS resolves a container's
    /// `secrets[].valueFrom`: by name, full ARN, partial ARN (without the
    /// random suffix) or full ARN with a JSON key
    /// (`arn:…:secret:name-AbCdEf:key::`, the key's value in a JSON object
    /// secret). None when nothing matches.
    pub fn secret_value(&self, name_or_value_from: &str) -> Option<SecretString> {
        self.lock().secrets.resolve(name_or_value_from)
    }

    /// The names of the secrets the simulator holds, sorted.
    pub fn secret_names(&self) -> Vec<String> {
        self.lock().secrets.names()
    }

    /// An access point by `fsap-…` id as it is now (until it is gone after
    /// deletion), without counting a call.
    pub fn access_point(&self, access_point_id: &str) -> Option<AccessPoint> {
        let now = Instant::now();
        let mut st = self.lock();
        st.advance(now);
        let st = &*st;
        st.efs.peek(access_point_id, now, &st.cfg.delays)
    }

    /// Advances the simulation to now and returns every launched task that
    /// is not STOPPED, with the task definition it runs, without counting a
    /// call. What the local runtime polls.
    pub fn tasks_snapshot(&self) -> Vec<SimTask> {
        let now = Instant::now();
        let mut st = self.lock();
        st.advance(now);
        let st = &*st;
        st.ecs.snapshot(&st.cfg, now)
    }

    /// Reports that the local process of a process-backed task exited now
    /// (`exit_code` None: killed by a signal, or it never started): a
    /// DEPROVISIONING task becomes STOPPED; a RUNNING one stops with
    /// `EssentialContainerExited` and its service relaunches it. Returns
    /// false (and changes nothing) for an unknown, stopped, not
    /// process-backed or already reported task.
    pub fn task_exited(&self, task_arn: &str, exit_code: Option<i32>) -> bool {
        let now = Instant::now();
        let mut st = self.lock();
        st.advance(now);
        st.task_exited(task_arn, exit_code, now)
    }

    /// Turns [`SimConfig::process_backed`] on or off for tasks launched
    /// from now on (tasks already launched keep how they were launched).
    pub fn set_process_backed(&self, on: bool) {
        self.lock().cfg.process_backed = on;
    }
}

/// `n` random lowercase hex digits.
fn hex(rng: &mut StdRng, n: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..n)
        .map(|_| DIGITS[rng.random_range(0..16)] as char)
        .collect()
}

/// `n` random alphanumerics.
fn alnum(rng: &mut StdRng, n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// The last `/`-separated segment of a name-or-ARN.
fn last_segment(name_or_arn: &str) -> &str {
    if name_or_arn.starts_with("arn:") {
        name_or_arn.rsplit('/').next().unwrap_or(name_or_arn)
    } else {
        name_or_arn
    }
}

/// AWS-style names: 1–255 letters, digits, hyphens, underscores.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests;
