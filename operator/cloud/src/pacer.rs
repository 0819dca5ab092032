//! Client-side pacing: stay below AWS's throttles, people first.
//!
//! AWS throttles ECS per account and region; a throttled call costs a retry
//! and delays everything behind it, and a mass autostart at 08:00 could
//! otherwise starve a person who just clicked "start". The [`Pacer`] keeps a
//! token bucket per API [`Category`] at a fraction of AWS's published rate
//! (80% by default) and serves waiting callers in priority order:
//! [`Priority::Interactive`] (a person's own start/stop) before
//! [`Priority::Bulk`] (autostarts, resyncs, rollouts), FIFO within a
//! priority.
//!
//! # Passing the priority
//! The priority travels in a tokio task-local, so the cloud traits keep
//! their signatures. Wrap the work in [`Priority::scope`]:
//!
//! ```
//! # use berth_cloud::pacer::Priority;
//! # async fn reconcile() {}
//! # async fn demo() {
//! Priority::Interactive.scope(reconcile()).await;
//! # }
//! ```
//!
//! Calls made outside any scope are [`Priority::Bulk`]. Note that task-locals
//! do not cross `tokio::spawn`: scope the spawned future itself.
//!
//! # Guarantees
//! * Grants per category never exceed `burst + rate × elapsed`.
//! * While an interactive caller waits on a bucket, no bulk caller of that
//!   bucket is granted a token.
//! * Cancelling a waiting call (dropping its future) gives its place up.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ecs::{
    CreateService, DeleteService, DescribeServicesOutput, DescribeTasksOutput, DesiredStatus, Ecs,
    RegisterTaskDefinition, Service, TaskDefinition, UpdateService, MAX_DESCRIBE_SERVICES,
};
use crate::efs::{AccessPoint, CreateAccessPoint, Efs};
use crate::error::CloudResult;
use crate::ops::{Category, Operation, Rate, TokenBucket};
use crate::secrets::{PutSecret, SecretRef, Secrets};

/// Who is waiting for a cloud call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Priority {
    /// A person's own action (start, stop, restart): served first.
    Interactive,
    /// Background work (autostart, resync, rollout, GC). The default.
    #[default]
    Bulk,
}

tokio::task_local! {
    static PRIORITY: Priority;
}

impl Priority {
    /// The priority of the current task: the innermost [`Priority::scope`],
    /// or [`Priority::Bulk`] outside any scope.
    pub fn current() -> Priority {
        PRIORITY.try_with(|p| *p).unwrap_or_default()
    }

    /// Runs `fut` with this priority for every paced call it makes.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        PRIORITY.scope(self, fut).await
    }

    fn index(self) -> usize {
        match self {
            Priority::Interactive => 0,
            Priority::Bulk => 1,
        }
    }
}

/// Rates of a [`Pacer`], per category.
#[derive(Clone, Debug, PartialEq)]
pub struct PacerConfig {
    /// Bucket per category; categories missing here are not paced.
    pub rates: BTreeMap<Category, Rate>,
}

impl PacerConfig {
    /// Every category at `fraction` of AWS's published rate and burst.
    pub fn fraction_of_aws(fraction: f64) -> Self {
        PacerConfig {
            rates: Category::ALL
                .into_iter()
                .map(|c| (c, c.aws_rate().scaled(fraction)))
                .collect(),
        }
    }

    /// No pacing at all.
    pub fn unlimited() -> Self {
        PacerConfig {
            rates: BTreeMap::new(),
        }
    }
}

impl Default for PacerConfig {
    /// 80% of AWS's rates: e.g. UpdateService 4/s (burst 40),
    /// RegisterTaskDefinition 0.8/s (burst 16), DescribeServices 16/s
    /// (burst 80).
    fn default() -> Self {
        PacerConfig::fraction_of_aws(0.8)
    }
}

/// How much observation (DescribeServices) the pacer allows, to size the
/// controller's resync interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ObservationBudget {
    /// Sustained DescribeServices calls per second.
    pub calls_per_second: f64,
    /// Calls that may be made at once.
    pub burst: f64,
    /// Services per call (ECS: 10).
    pub services_per_call: usize,
}

impl ObservationBudget {
    /// Services that can be observed per second.
    pub fn services_per_second(&self) -> f64 {
        self.calls_per_second * self.services_per_call as f64
    }

    /// The shortest interval at which `services` services can all be
    /// described using at most `share` (0–1] of the budget, leaving the rest
    /// for interactive work.
    pub fn resync_interval(&self, services: usize, share: f64) -> Duration {
        let per_second = self.services_per_second() * share.clamp(0.01, 1.0);
        if per_second <= 0.0 {
            return Duration::from_secs(3600);
        }
        Duration::from_secs_f64(services as f64 / per_second)
    }
}

/// What a [`Pacer`] has done, for metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PacerStats {
    /// Calls let through, by category and priority.
    pub granted: BTreeMap<(Category, Priority), u64>,
    /// Total time callers waited, by category and priority.
    pub waited: BTreeMap<(Category, Priority), Duration>,
}

struct LaneState {
    bucket: TokenBucket,
    queues: [VecDeque<u64>; 2],
    next_ticket: u64,
}

impl LaneState {
    fn head(&self) -> Option<(usize, u64)> {
        self.queues
            .iter()
            .enumerate()
            .find_map(|(i, q)| q.front().map(|t| (i, *t)))
    }

    fn remove(&mut self, queue: usize, ticket: u64) {
        self.queues[queue].retain(|t| *t != ticket);
    }
}

struct Lane {
    state: Mutex<LaneState>,
    notify: Notify,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().expect("pacer lane mutex poisoned")
    }
}

/// One turn of a waiter's loop.
enum Step {
    Granted,
    Queued,
    Refill(Duration),
}

/// Removes a waiting ticket when its `acquire` future is dropped.
struct Waiting<'a> {
    lane: &'a Lane,
    queue: usize,
    ticket: u64,
    granted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.granted {
            self.lane.lock().remove(self.queue, self.ticket);
            self.lane.notify.notify_waiters();
        }
    }
}

/// Token buckets per API category with two priorities. Share one `Pacer`
/// (in an `Arc`) between all cloud clients of a process.
pub struct Pacer {
    config: PacerConfig,
    lanes: BTreeMap<Category, Lane>,
    stats: Mutex<PacerStats>,
    /// This process's share (0–1] of the configured rates: the account's
    /// budget is split between the live replicas.
    share: Mutex<f64>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new(PacerConfig::default())
    }
}

impl Pacer {
    /// A pacer with full buckets.
    pub fn new(config: PacerConfig) -> Self {
        let now = Instant::now();
        let lanes = config
            .rates
            .iter()
            .map(|(category, rate)| {
                let lane = Lane {
                    state: Mutex::new(LaneState {
                        bucket: TokenBucket::new(*rate, now),
                        queues: [VecDeque::new(), VecDeque::new()],
                        next_ticket: 0,
                    }),
                    notify: Notify::new(),
                };
                (*category, lane)
            })
            .collect();
        Pacer {
            config,
            lanes,
            stats: Mutex::new(PacerStats::default()),
            share: Mutex::new(1.0),
        }
    }

    /// Uses `share` (clamped to 0.001–1) of the configured rates and bursts
    /// from now on: with N replicas on one account each takes 1/N, so
    /// together they stay within the account's budget. Tokens already in
    /// a bucket are capped at the new burst.
    pub fn set_share(&self, share: f64) {
        let share = if share.is_finite() {
            share.clamp(0.001, 1.0)
        } else {
            1.0
        };
        *self.share.lock().unwrap_or_else(|p| p.into_inner()) = share;
        let now = Instant::now();
        for (category, lane) in &self.lanes {
            if let Some(rate) = self.config.rates.get(category) {
                lane.lock().bucket.set_rate(rate.scaled(share), now);
            }
            lane.notify.notify_waiters();
        }
    }

    /// The share of the configured rates in use (see [`Pacer::set_share`]).
    pub fn share(&self) -> f64 {
        *self.share.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration.
    pub fn config(&self) -> &PacerConfig {
        &self.config
    }

    /// Waits until a call of `category` may be made with `priority`.
    pub async fn acquire(&self, category: Category, priority: Priority) {
        let Some(lane) = self.lanes.get(&category) else {
            return;
        };
        let started = Instant::now();
        let queue = priority.index();
        let ticket = {
            let mut st = lane.lock();
            let ticket = st.next_ticket;
            st.next_ticket += 1;
            st.queues[queue].push_back(ticket);
            ticket
        };
        let mut waiting = Waiting {
            lane,
            queue,
            ticket,
            granted: false,
        };
        loop {
            let mut notified = pin!(lane.notify.notified());
            notified.as_mut().enable();
            let step = {
                let mut st = lane.lock();
                if st.head() == Some((queue, ticket)) {
                    match st.bucket.try_take(Instant::now()) {
                        Ok(()) => {
                            st.remove(queue, ticket);
                            waiting.granted = true;
                            Step::Granted
                        }
                        Err(wait) => Step::Refill(wait),
                    }
                } else {
                    Step::Queued
                }
            };
            match step {
                Step::Granted => break,
                // Someone ahead of us: wait until a grant or cancellation
                // changes the head of the line.
                Step::Queued => notified.await,
                // We are next: wait for the refill (or a change of head).
                Step::Refill(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = notified => {}
                    }
                }
            }
        }
        lane.notify.notify_waiters();
        let mut stats = self.stats.lock().expect("pacer stats mutex poisoned");
        *stats.granted.entry((category, priority)).or_insert(0) += 1;
        *stats.waited.entry((category, priority)).or_default() += started.elapsed();
    }

    /// Waits for the category of `op` with the current task's priority.
    pub async fn acquire_for(&self, op: Operation) {
        self.acquire(op.category(), Priority::current()).await;
    }

    /// The DescribeServices budget, to size resync intervals.
    pub fn observation_budget(&self) -> ObservationBudget {
        let rate = self
            .config
            .rates
            .get(&Category::Observation)
            .copied()
            .unwrap_or_else(|| Category::Observation.aws_rate());
        ObservationBudget {
            calls_per_second: rate.per_second,
            burst: rate.burst,
            services_per_call: MAX_DESCRIBE_SERVICES,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> PacerStats {
        self.stats
            .lock()
            .expect("pacer stats mutex poisoned")
            .clone()
    }
}

/// Wraps a cloud implementation so every call first waits for the
/// [`Pacer`], at the current task's [`Priority`]. Implements
/// [`Ecs`], [`Efs`] and [`Secrets`] when `T` does.
#[derive(Clone)]
pub struct Paced<T> {
    inner: T,
    pacer: Arc<Pacer>,
}

impl<T> std::fmt::Debug for Paced<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paced")
            .field("pacer", &self.pacer)
            .finish_non_exhaustive()
    }
}

impl<T> Paced<T> {
    /// Paces `inner` with `pacer`.
    pub fn new(inner: T, pacer: Arc<Pacer>) -> Self {
        Paced { inner, pacer }
    }

    /// The wrapped implementation.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The pacer.
    pub fn pacer(&self) -> &Arc<Pacer> {
        &self.pacer
    }
}

#[async_trait]
impl<T: Ecs> Ecs for Paced<T> {
    async fn register_task_definition(
        &self,
        input: RegisterTaskDefinition,
    ) -> CloudResult<TaskDefinition> {
        self.pacer
            .acquire_for(Operation::RegisterTaskDefinition)
            .await;
        self.inner.register_task_definition(input).await
    }

    async fn describe_task_definition(
        &self,
        task_definition: &str,
        include_tags: bool,
    ) -> CloudResult<TaskDefinition> {
        self.pacer
            .acquire_for(Operation::DescribeTaskDefinition)
            .await;
        self.inner
            .describe_task_definition(task_definition, include_tags)
            .await
    }

    async fn deregister_task_definition(
        &self,
        task_definition: &str,
    ) -> CloudResult<TaskDefinition> {
        self.pacer
            .acquire_for(Operation::DeregisterTaskDefinition)
            .await;
        self.inner.deregister_task_definition(task_definition).await
    }

    async fn create_service(&self, input: CreateService) -> CloudResult<Service> {
        self.pacer.acquire_for(Operation::CreateService).await;
        self.inner.create_service(input).await
    }

    async fn update_service(&self, input: UpdateService) -> CloudResult<Service> {
        self.pacer.acquire_for(Operation::UpdateService).await;
        self.inner.update_service(input).await
    }

    async fn delete_service(&self, input: DeleteService) -> CloudResult<Service> {
        self.pacer.acquire_for(Operation::DeleteService).await;
        self.inner.delete_service(input).await
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
        include_tags: bool,
    ) -> CloudResult<DescribeServicesOutput> {
        self.pacer.acquire_for(Operation::DescribeServices).await;
        self.inner
            .describe_services(cluster, services, include_tags)
            .await
    }

    async fn list_services(&self, cluster: &str) -> CloudResult<Vec<String>> {
        self.pacer.acquire_for(Operation::ListServices).await;
        self.inner.list_services(cluster).await
    }

    async fn list_tasks(
        &self,
        cluster: &str,
        service_name: &str,
        desired_status: DesiredStatus,
    ) -> CloudResult<Vec<String>> {
        self.pacer.acquire_for(Operation::ListTasks).await;
        self.inner
            .list_tasks(cluster, service_name, desired_status)
            .await
    }

    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> CloudResult<DescribeTasksOutput> {
        self.pacer.acquire_for(Operation::DescribeTasks).await;
        self.inner.describe_tasks(cluster, tasks).await
    }
}

#[async_trait]
impl<T: Efs> Efs for Paced<T> {
    async fn create_access_point(&self, input: CreateAccessPoint) -> CloudResult<AccessPoint> {
        self.pacer.acquire_for(Operation::CreateAccessPoint).await;
        self.inner.create_access_point(input).await
    }

    async fn describe_access_points(&self, file_system_id: &str) -> CloudResult<Vec<AccessPoint>> {
        self.pacer
            .acquire_for(Operation::DescribeAccessPoints)
            .await;
        self.inner.describe_access_points(file_system_id).await
    }

    async fn describe_access_point(&self, access_point_id: &str) -> CloudResult<AccessPoint> {
        self.pacer
            .acquire_for(Operation::DescribeAccessPoints)
            .await;
        self.inner.describe_access_point(access_point_id).await
    }

    async fn delete_access_point(&self, access_point_id: &str) -> CloudResult<()> {
        self.pacer.acquire_for(Operation::DeleteAccessPoint).await;
        self.inner.delete_access_point(access_point_id).await
    }
}

#[async_trait]
impl<T: Secrets> Secrets for Paced<T> {
    async fn put_secret_value(&self, input: PutSecret) -> CloudResult<SecretRef> {
        self.pacer.acquire_for(Operation::PutSecretValue).await;
        self.inner.put_secret_value(input).await
    }

    async fn delete_secret(&self, name: &str) -> CloudResult<()> {
        self.pacer.acquire_for(Operation::DeleteSecret).await;
        self.inner.delete_secret(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_lane(rate: Rate) -> Arc<Pacer> {
        Arc::new(Pacer::new(PacerConfig {
            rates: BTreeMap::from([(Category::ServiceMutation, rate)]),
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn interactive_waiters_are_served_before_bulk_waiters() {
        let pacer = one_lane(Rate::new(1.0, 1.0));
        // Drain the single token.
        pacer
            .acquire(Category::ServiceMutation, Priority::Bulk)
            .await;

        let order = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..3 {
            let (pacer, order) = (pacer.clone(), order.clone());
            handles.push(tokio::spawn(async move {
                pacer
                    .acquire(Category::ServiceMutation, Priority::Bulk)
                    .await;
                order.lock().expect("order").push(format!("bulk{i}"));
            }));
            tokio::task::yield_now().await;
        }
        for i in 0..2 {
            let (pacer, order) = (pacer.clone(), order.clone());
            handles.push(tokio::spawn(Priority::Interactive.scope(async move {
                pacer
                    .acquire(Category::ServiceMutation, Priority::current())
                    .await;
                order.lock().expect("order").push(format!("interactive{i}"));
            })));
            tokio::task::yield_now().await;
        }
        for h in handles {
            h.await.expect("task");
        }
        let order = order.lock().expect("order").clone();
        assert_eq!(
            order,
            ["interactive0", "interactive1", "bulk0", "bulk1", "bulk2"]
        );
        let stats = pacer.stats();
        assert_eq!(
            stats
                .granted
                .get(&(Category::ServiceMutation, Priority::Interactive)),
            Some(&2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_never_grants_more_than_burst_plus_rate_times_elapsed() {
        let rate = Rate::new(4.0, 10.0);
        let pacer = one_lane(rate);
        let start = Instant::now();
        let grants = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..60 {
            let (pacer, grants) = (pacer.clone(), grants.clone());
            let priority = if i % 3 == 0 {
                Priority::Interactive
            } else {
                Priority::Bulk
            };
            handles.push(tokio::spawn(async move {
                pacer.acquire(Category::ServiceMutation, priority).await;
                grants.lock().expect("grants").push(Instant::now());
            }));
        }
        for h in handles {
            h.await.expect("task");
        }
        let grants = grants.lock().expect("grants").clone();
        assert_eq!(grants.len(), 60);
        for (n, at) in grants.iter().enumerate() {
            let elapsed = at.duration_since(start).as_secs_f64();
            let allowed = rate.burst + rate.per_second * elapsed + 1e-6;
            assert!(
                (n + 1) as f64 <= allowed,
                "grant {n} at {elapsed}s exceeds the rate"
            );
        }
        // 60 grants with burst 10 at 4/s need 12.5 s.
        let total = grants
            .last()
            .map(|t| t.duration_since(start))
            .unwrap_or_default();
        assert!(total >= Duration::from_millis(12_400), "{total:?}");
        assert!(total <= Duration::from_millis(12_600), "{total:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiter_gives_up_its_place() {
        let pacer = one_lane(Rate::new(1.0, 1.0));
        pacer
            .acquire(Category::ServiceMutation, Priority::Bulk)
            .await;
        let blocked = tokio::time::timeout(
            Duration::from_millis(100),
            pacer.acquire(Category::ServiceMutation, Priority::Interactive),
        )
        .await;
        assert!(blocked.is_err(), "no token yet");
        let before = Instant::now();
        pacer
            .acquire(Category::ServiceMutation, Priority::Bulk)
            .await;
        assert!(before.elapsed() <= Duration::from_secs(1));
    }

    #[test]
    fn priority_outside_a_scope_is_bulk() {
        assert_eq!(Priority::current(), Priority::Bulk);
    }

    #[test]
    fn default_rates_stay_below_aws_and_size_the_resync_interval() {
        let pacer = Pacer::default();
        let budget = pacer.observation_budget();
        assert!((budget.calls_per_second - 16.0).abs() < 1e-9);
        assert_eq!(budget.services_per_call, 10);
        // 1000 services at half of 160 services/s: 12.5 s.
        let interval = budget.resync_interval(1000, 0.5);
        assert_eq!(interval, Duration::from_millis(12_500));
        for (category, rate) in &pacer.config().rates {
            let aws = category.aws_rate();
            assert!(rate.per_second < aws.per_second, "{category:?}");
            assert!(rate.burst <= aws.burst, "{category:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paced_wrapper_delays_calls_beyond_the_burst() {
        use crate::sim::{RateLimits, Sim, SimConfig};
        let sim = Sim::new(SimConfig {
            permissive: true,
            rate_limits: RateLimits::disabled(),
            ..SimConfig::default()
        });
        let pacer = Arc::new(Pacer::new(PacerConfig {
            rates: BTreeMap::from([(Category::Observation, Rate::new(2.0, 2.0))]),
        }));
        let paced = Paced::new(sim.clone(), pacer);
        let start = Instant::now();
        for _ in 0..4 {
            paced
                .describe_services("c", &["a".to_owned()], false)
                .await
                .expect("describe");
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    /// Counts the grants of `n` acquirers that try for `secs` seconds.
    async fn grants_within(pacer: &Arc<Pacer>, n: usize, secs: u64) -> usize {
        let granted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..n {
            let (pacer, granted) = (pacer.clone(), granted.clone());
            handles.push(tokio::spawn(async move {
                pacer
                    .acquire(Category::ServiceMutation, Priority::Bulk)
                    .await;
                granted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        for h in handles {
            h.abort();
        }
        granted.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_of_the_budget_scales_rate_and_burst() {
        let pacer = one_lane(Rate::new(4.0, 10.0));
        // Half of the account's budget: burst 5, then 2 per second.
        pacer.set_share(0.5);
        assert_eq!(pacer.share(), 0.5);
        let n = grants_within(&pacer, 200, 10).await;
        assert!(
            (24..=26).contains(&n),
            "{n} grants in 10 s at half of 4/s + 10"
        );
        // Back to the whole budget: 4 per second.
        pacer.set_share(1.0);
        let n = grants_within(&pacer, 200, 10).await;
        assert!((40..=51).contains(&n), "{n} grants in 10 s at 4/s");
        // Nonsense is clamped, never zero or more than all.
        pacer.set_share(f64::NAN);
        assert_eq!(pacer.share(), 1.0);
        pacer.set_share(0.0);
        assert!(pacer.share() > 0.0);
    }
}
