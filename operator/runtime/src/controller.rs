//! The runner: turns triggers into bounded, never-overlapping reconciles.
//!
//! A [`Controller`] owns a [`WorkQueue`] behind a short-lived mutex, shared
//! with any number of [`Handle`]s. Its [`run`](Controller::run) loop is one
//! task that, in turn:
//!
//! 1. pops due keys from the queue while fewer than
//!    [`Config::max_concurrent_reconciles`] reconciles are in flight, and
//!    spawns one tokio task per reconcile;
//! 2. waits for the first of: shutdown, a reconcile finishing, a wake-up from
//!    a handle or the resync task, a key from the trigger stream, or the next
//!    due time;
//! 3. records the result in the queue (requeue, backoff, held rerun) and tells
//!    the [`Observer`].
//!
//! The periodic resync is a separate task that calls the user's list function
//! every interval and enqueues every key at bulk priority. The interval lives
//! in a `watch` channel so [`Handle::set_resync_interval`] takes effect at
//! once, without waiting for the old interval to run out.
//!
//! All scheduling decisions are made by the pure [`WorkQueue`]; this module
//! only moves keys between it and tokio.

use std::{
    fmt,
    future::Future,
    panic::AssertUnwindSafe,
    pin::pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use futures_util::{
    future::{self, BoxFuture},
    stream::{self, BoxStream, SelectAll},
    FutureExt, Stream, StreamExt,
};
use tokio::{
    sync::{watch, Notify},
    task::{JoinHandle, JoinSet},
    time::{sleep_until, Instant},
};
use tracing::Instrument;

use crate::{
    queue::{add, Completion, Request},
    Action, Backoff, Key, NoopObserver, Observer, Priority, ReconcileEvent, ReconcileOutcome,
    ResyncOutcome, Retry, Stats, WorkQueue,
};

/// Tunables of a [`Controller`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// The most reconciles in flight at once, over all keys. `0` is treated as
    /// `1`. Default: 16.
    pub max_concurrent_reconciles: usize,
    /// The built-in per-key backoff, offered to the error policy as
    /// [`Retry::backoff`] and used for panics. Default: 1 s doubling to 5 min,
    /// with up to half of each delay removed by jitter.
    pub backoff: Backoff,
    /// How long [`Controller::run`] waits for in-flight reconciles after the
    /// shutdown signal before dropping them. Default: 30 s.
    pub shutdown_grace: Duration,
    /// The initial resync interval, used when a resync list function is set.
    /// [`Duration::ZERO`] pauses resync. Default: 5 minutes.
    pub resync_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_concurrent_reconciles: 16,
            backoff: Backoff::default(),
            shutdown_grace: Duration::from_secs(30),
            resync_interval: Duration::from_secs(5 * 60),
        }
    }
}

/// Errors of a [`Handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The controller has received its shutdown signal (or finished); the key
    /// was not enqueued.
    #[error("the controller is shutting down; the key was not enqueued")]
    ShuttingDown,
}

/// What [`Controller::run`] reports when it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport<K> {
    /// Reconciles that were in flight at the shutdown signal and finished
    /// within the grace period.
    pub completed_during_grace: usize,
    /// Keys whose reconcile was still running when the grace period ended; their
    /// futures were dropped. ([`Handle::stats`] keeps counting them as
    /// running: the queue is not used again.)
    pub abandoned: Vec<K>,
}

/// The built-in error policy: retry after the per-key exponential backoff.
///
/// Pass it as the `error_policy` of [`Controller::run`], or call it from your
/// own policy for the errors you consider transient.
#[must_use]
pub fn retry_with_backoff<K, E>(_key: &K, _error: &E, retry: Retry) -> Action {
    Action::requeue(retry.backoff)
}

type ListFn<K> = Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<K>, String>> + Send + Sync>;

/// State shared by the runner, the resync task and every [`Handle`].
struct Shared<K> {
    queue: Mutex<WorkQueue<K>>,
    /// Wakes the runner after a handle or the resync task scheduled keys.
    wake: Notify,
    stopping: AtomicBool,
    resync_interval: watch::Sender<Duration>,
}

impl<K: Key> Shared<K> {
    /// Locks the queue. Never panics: a poisoned lock (a panic in another
    /// holder, which the queue's own code does not do) is recovered, because
    /// every queue step leaves the state consistent.
    fn lock(&self) -> MutexGuard<'_, WorkQueue<K>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn schedule(&self, keys: impl IntoIterator<Item = K>, request: Request) -> Result<(), Error> {
        if self.is_stopping() {
            return Err(Error::ShuttingDown);
        }
        {
            let mut queue = self.lock();
            for key in keys {
                queue.schedule(key, request);
            }
        }
        self.wake.notify_one();
        Ok(())
    }
}

/// A cheap, cloneable way to feed and inspect a [`Controller`] from outside:
/// enqueue keys (for example from an API handler, at
/// [`Priority::Interactive`]), change the resync interval, read [`Stats`].
///
/// Works before [`Controller::run`] starts (keys wait in the queue) and
/// returns [`Error::ShuttingDown`] once the shutdown signal has fired.
pub struct Handle<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Handle<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> fmt::Debug for Handle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl<K: Key> Handle<K> {
    /// Asks for `key` to be reconciled now.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] after the shutdown signal.
    pub fn enqueue(&self, key: K, priority: Priority) -> Result<(), Error> {
        self.enqueue_at(key, Instant::now(), priority)
    }

    /// Asks for `key` to be reconciled at `at` (an earlier request still wins).
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] after the shutdown signal.
    pub fn enqueue_at(&self, key: K, at: Instant, priority: Priority) -> Result<(), Error> {
        self.shared.schedule([key], Request { due: at, priority })
    }

    /// Asks for every key in `keys` to be reconciled now, under one lock.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] after the shutdown signal.
    pub fn enqueue_all(
        &self,
        keys: impl IntoIterator<Item = K>,
        priority: Priority,
    ) -> Result<(), Error> {
        self.shared.schedule(
            keys,
            Request {
                due: Instant::now(),
                priority,
            },
        )
    }

    /// Changes the resync interval. Takes effect at once: the next resync is
    /// due one new interval after the previous one started (immediately if
    /// that is already past). [`Duration::ZERO`] pauses resync.
    pub fn set_resync_interval(&self, interval: Duration) {
        self.shared.resync_interval.send_replace(interval);
    }

    /// The current resync interval.
    #[must_use]
    pub fn resync_interval(&self) -> Duration {
        *self.shared.resync_interval.borrow()
    }

    /// A snapshot of the queue gauges and reconcile counters (one short lock).
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats()
    }

    /// Whether the controller has received its shutdown signal.
    #[must_use]
    pub fn is_stopping(&self) -> bool {
        self.shared.is_stopping()
    }
}

/// A controller: a work queue, its inputs, and the runner that drives
/// `reconcile` (kube-runtime's `Controller` + `applier`, without kube).
///
/// # Expected flow
/// 1. [`Controller::new`] with a [`Config`]; take [`Controller::handle`]s for
///    whoever enqueues from outside (an API) or reads stats (metrics).
/// 2. Add inputs: [`Controller::trigger_stream`] for the store watch (each item
///    is a key to reconcile at [`Priority::Bulk`]) and
///    [`Controller::resync`] for the periodic "list all keys" backstop.
/// 3. Optionally [`Controller::observer`] for metrics.
/// 4. `.run(reconcile, error_policy, ctx, shutdown).await`, usually in its
///    own task. `reconcile(key, ctx)` reads the current state, converges it,
///    writes status atomically at the end and returns an [`Action`].
///
/// ```no_run
/// # use std::{sync::Arc, time::Duration};
/// # use berth_runtime::{Action, Config, Controller, Priority, retry_with_backoff};
/// # async fn example() {
/// struct Ctx;
/// let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
/// let controller = Controller::<String>::new(Config::default())
///     .resync(|| async { Ok::<_, std::io::Error>(vec!["alice".to_owned()]) });
/// let handle = controller.handle();
/// handle.enqueue("bob".to_owned(), Priority::Interactive).unwrap();
/// let run = tokio::spawn(controller.run(
///     |key: String, _ctx: Arc<Ctx>| async move {
///         tracing::info!(%key, "reconciling");
///         Ok::<_, std::io::Error>(Action::requeue(Duration::from_secs(600)))
///     },
///     retry_with_backoff,
///     Arc::new(Ctx),
///     async move { let _ = stop_rx.await; },
/// ));
/// // ... later, on SIGTERM:
/// let _ = stop_tx.send(());
/// let report = run.await.expect("controller task");
/// tracing::info!(abandoned = ?report.abandoned, "controller stopped");
/// # }
/// ```
///
/// # Guarantees
/// - **Never two reconciles of one key at once**, across all inputs. A key
///   triggered while its reconcile runs is held and reconciled once more right
///   after it finishes (however many triggers arrived): never lost, never
///   concurrent.
/// - **Dedup**: a key waits in the queue at most once; the earliest due time
///   and the highest priority of all its requests win.
/// - **Bounded concurrency**: at most `max_concurrent_reconciles` reconciles
///   in flight. Due interactive keys start before due bulk keys.
/// - **Requeue**: `Action::requeue(d)` runs the key again `d` after the
///   reconcile ended; `Action::await_change()` waits for a trigger.
/// - **Per-key backoff**: on `Err`, the error is logged (`tracing` warn,
///   formatted with `{:#}`), given to the observer, and the `error_policy`
///   decides the retry from a [`Retry`] carrying the built-in exponential
///   backoff with jitter. The failure count is per key and resets on the next
///   success, so one failing key never delays another. While a key backs off,
///   bulk triggers (watch, resync) wait for the end of the backoff; an
///   interactive enqueue does not.
/// - **Panics** in `reconcile` are caught, logged and treated as a failure
///   retried after the built-in backoff.
/// - **Graceful shutdown**: when `shutdown` resolves, the controller stops
///   starting reconciles, stops the resync, stops reading triggers and makes
///   [`Handle`]s refuse new keys; in-flight reconciles get up to
///   [`Config::shutdown_grace`] to finish, the rest are dropped, and `run`
///   returns a [`RunReport`].
///
/// # Caveats
/// - A reconcile dropped at shutdown stops at an `.await`; reconcilers must
///   tolerate that (write status atomically at the end, adopt half-created
///   cloud objects next time).
/// - The first resync runs as soon as `run` starts, then every interval
///   (measured from the start of one resync to the start of the next).
/// - Requeue and retry times are measured from the end of the reconcile, not
///   its start.
/// - The queue keeps keys in memory; an idle key is forgotten once it
///   succeeds, but a key whose last reconcile failed with
///   `Action::await_change()` from the error policy stays remembered (with its
///   failure count) until it succeeds.
/// - `error_policy` and the observer run on the controller task: keep them
///   quick, and do not panic in them.
pub struct Controller<K> {
    config: Config,
    shared: Arc<Shared<K>>,
    triggers: Vec<BoxStream<'static, K>>,
    resync: Option<ListFn<K>>,
    observer: Arc<dyn Observer<K>>,
}

impl<K> fmt::Debug for Controller<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("config", &self.config)
            .field("triggers", &self.triggers.len())
            .field("resync", &self.resync.is_some())
            .finish_non_exhaustive()
    }
}

/// What one reconcile task hands back to the runner.
struct Finished<K, E> {
    key: K,
    priority: Priority,
    duration: Duration,
    /// `Err` carries the panic message.
    result: Result<Result<Action, E>, String>,
}

impl<K: Key> Controller<K> {
    /// A controller with an empty queue, no inputs yet and a no-op observer.
    #[must_use]
    pub fn new(config: Config) -> Self {
        let (resync_interval, _) = watch::channel(config.resync_interval);
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(WorkQueue::new(config.backoff)),
                wake: Notify::new(),
                stopping: AtomicBool::new(false),
                resync_interval,
            }),
            config,
            triggers: Vec::new(),
            resync: None,
            observer: Arc::new(NoopObserver),
        }
    }

    /// A handle to enqueue keys, change the resync interval and read stats.
    #[must_use]
    pub fn handle(&self) -> Handle<K> {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Adds a stream of keys to reconcile now at [`Priority::Bulk`] (typically
    /// the store watch). May be called several times; the streams are merged.
    /// A stream that ends is simply no longer polled.
    #[must_use]
    pub fn trigger_stream(mut self, triggers: impl Stream<Item = K> + Send + 'static) -> Self {
        self.triggers.push(triggers.boxed());
        self
    }

    /// Sets the periodic resync: every [`Config::resync_interval`] (changeable
    /// through [`Handle::set_resync_interval`]), call `list` and enqueue every
    /// key it returns at [`Priority::Bulk`]. A failed list is logged, reported
    /// to the observer and retried at the next interval.
    #[must_use]
    pub fn resync<F, Fut, LE>(mut self, list: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<K>, LE>> + Send + 'static,
        LE: fmt::Display + 'static,
    {
        self.resync = Some(Arc::new(move || {
            list()
                .map(|listed| listed.map_err(|error| format!("{error:#}")))
                .boxed()
        }));
        self
    }

    /// Sets the observer that receives every reconcile and resync outcome.
    #[must_use]
    pub fn observer(mut self, observer: impl Observer<K>) -> Self {
        self.observer = Arc::new(observer);
        self
    }

    /// Runs the controller until `shutdown` resolves and in-flight reconciles
    /// have finished or the grace period has passed. See the type docs for the
    /// expected flow, guarantees and caveats.
    pub async fn run<C, R, Fut, E, P, S>(
        self,
        reconcile: R,
        error_policy: P,
        ctx: Arc<C>,
        shutdown: S,
    ) -> RunReport<K>
    where
        C: Send + Sync + 'static,
        R: Fn(K, Arc<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
        P: Fn(&K, &E, Retry) -> Action + Send + Sync,
        S: Future<Output = ()> + Send,
    {
        let Self {
            config,
            shared,
            triggers,
            resync,
            observer,
        } = self;
        let max_in_flight = config.max_concurrent_reconciles.max(1);
        let reconcile = Arc::new(reconcile);
        let mut tasks = JoinSet::new();
        // Aborted on drop, so dropping the `run` future also stops the resync.
        let resync_task = resync.map(|list| {
            AbortOnDrop(tokio::spawn(resync_loop(
                Arc::clone(&shared),
                list,
                Arc::clone(&observer),
            )))
        });
        let mut triggers: Option<SelectAll<BoxStream<'static, K>>> =
            (!triggers.is_empty()).then(|| stream::select_all(triggers));
        let mut shutdown = pin!(shutdown);
        let finish = |finished| record(&shared, &*observer, &error_policy, finished);

        loop {
            let next_due = {
                let mut queue = shared.lock();
                let now = Instant::now();
                while tasks.len() < max_in_flight {
                    let Some((key, priority)) = queue.pop(now) else {
                        break;
                    };
                    spawn_reconcile(&mut tasks, key, priority, &reconcile, &ctx);
                }
                (tasks.len() < max_in_flight)
                    .then(|| queue.next_due())
                    .flatten()
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    finish_joined(joined, &finish);
                }
                () = shared.wake.notified() => {}
                item = next_trigger(&mut triggers), if triggers.is_some() => match item {
                    Some(key) => shared.lock().schedule(key, Request {
                        due: Instant::now(),
                        priority: Priority::Bulk,
                    }),
                    None => triggers = None,
                },
                () = sleep_until_some(next_due), if next_due.is_some() => {}
            }
        }

        shared.stopping.store(true, Ordering::Release);
        drop(resync_task);
        drop(triggers);
        let in_flight = tasks.len();
        tracing::info!(
            in_flight,
            grace = ?config.shutdown_grace,
            "controller shutting down; waiting for in-flight reconciles"
        );
        let deadline = add(Instant::now(), config.shutdown_grace);
        let mut completed_during_grace = 0;
        loop {
            tokio::select! {
                biased;
                joined = tasks.join_next() => match joined {
                    Some(joined) => {
                        completed_during_grace += 1;
                        finish_joined(joined, &finish);
                    }
                    None => break,
                },
                () = sleep_until(deadline) => break,
            }
        }
        tasks.abort_all();
        let abandoned: Vec<K> = shared.lock().running().cloned().collect();
        if !abandoned.is_empty() {
            tracing::warn!(
                ?abandoned,
                "grace period over; abandoning in-flight reconciles"
            );
        }
        RunReport {
            completed_during_grace,
            abandoned,
        }
    }
}

/// Aborts a spawned task when dropped (the resync task is tied to `run`).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next key of the trigger streams (pending forever when there are none).
async fn next_trigger<K>(triggers: &mut Option<SelectAll<BoxStream<'static, K>>>) -> Option<K> {
    match triggers {
        Some(triggers) => triggers.next().await,
        None => future::pending().await,
    }
}

/// Sleeps until `due`, or forever when there is nothing due.
async fn sleep_until_some(due: Option<Instant>) {
    match due {
        Some(due) => sleep_until(due).await,
        None => future::pending().await,
    }
}

fn spawn_reconcile<K, C, R, Fut, E>(
    tasks: &mut JoinSet<Finished<K, E>>,
    key: K,
    priority: Priority,
    reconcile: &Arc<R>,
    ctx: &Arc<C>,
) where
    K: Key,
    C: Send + Sync + 'static,
    R: Fn(K, Arc<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: Send + 'static,
{
    let reconcile = Arc::clone(reconcile);
    let ctx = Arc::clone(ctx);
    let span = tracing::info_span!("reconcile", key = ?key, ?priority);
    tasks.spawn(
        async move {
            let started = Instant::now();
            let result = AssertUnwindSafe(async { reconcile(key.clone(), ctx).await })
                .catch_unwind()
                .await
                .map_err(|payload| {
                    payload
                        .downcast_ref::<&str>()
                        .map(|message| (*message).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".to_owned())
                });
            Finished {
                key,
                priority,
                duration: started.elapsed(),
                result,
            }
        }
        .instrument(span),
    );
}

/// Handles a joined reconcile task. Tasks catch their own panics and are only
/// aborted after the run loop, so a join error is not expected.
fn finish_joined<K, E>(
    joined: Result<Finished<K, E>, tokio::task::JoinError>,
    finish: &impl Fn(Finished<K, E>),
) {
    match joined {
        Ok(finished) => finish(finished),
        Err(error) => tracing::error!(%error, "reconcile task ended without a result"),
    }
}

/// Records a finished reconcile in the queue, logs it and tells the observer.
fn record<K, E, P>(
    shared: &Shared<K>,
    observer: &dyn Observer<K>,
    error_policy: &P,
    finished: Finished<K, E>,
) where
    K: Key,
    E: fmt::Display,
    P: Fn(&K, &E, Retry) -> Action,
{
    let Finished {
        key,
        priority,
        duration,
        result,
    } = finished;
    let now = Instant::now();
    let event = |outcome| ReconcileEvent {
        key: &key,
        priority,
        duration,
        outcome,
    };
    match result {
        Ok(Ok(action)) => {
            let requeue_after = action.requeue_after();
            shared
                .lock()
                .complete(&key, Completion::Success { requeue_after }, now);
            tracing::debug!(?key, ?duration, ?requeue_after, "reconciled");
            observer.reconciled(&event(ReconcileOutcome::Success { requeue_after }));
        }
        Ok(Err(error)) => {
            let retry = shared.lock().retry_for(&key);
            let retry_after = error_policy(&key, &error, retry).requeue_after();
            shared
                .lock()
                .complete(&key, Completion::Failure { retry_after }, now);
            tracing::warn!(
                ?key,
                error = %Alternate(&error),
                failures = retry.failures,
                ?retry_after,
                ?duration,
                "reconcile failed"
            );
            observer.reconciled(&event(ReconcileOutcome::Failure {
                error: &error,
                failures: retry.failures,
                retry_after,
            }));
        }
        Err(message) => {
            let retry = shared.lock().retry_for(&key);
            shared.lock().complete(
                &key,
                Completion::Failure {
                    retry_after: Some(retry.backoff),
                },
                now,
            );
            tracing::error!(
                ?key,
                panic = %message,
                failures = retry.failures,
                retry_after = ?retry.backoff,
                "reconcile panicked"
            );
            observer.reconciled(&event(ReconcileOutcome::Panicked {
                message: &message,
                failures: retry.failures,
                retry_after: retry.backoff,
            }));
        }
    }
}

/// Displays with the alternate flag, so `anyhow` errors print their chain.
struct Alternate<'a, T>(&'a T);

impl<T: fmt::Display> fmt::Display for Alternate<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

/// The periodic resync: list every key and enqueue it, once per interval.
async fn resync_loop<K: Key>(
    shared: Arc<Shared<K>>,
    list: ListFn<K>,
    observer: Arc<dyn Observer<K>>,
) {
    let mut interval_rx = shared.resync_interval.subscribe();
    let mut last_start: Option<Instant> = None;
    loop {
        let interval = *interval_rx.borrow_and_update();
        let due = (!interval.is_zero())
            .then(|| last_start.map_or_else(Instant::now, |last| add(last, interval)));
        tokio::select! {
            () = sleep_until_some(due) => {}
            changed = interval_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        last_start = Some(Instant::now());
        match list().await {
            Ok(keys) => {
                let count = keys.len();
                let request = Request {
                    due: Instant::now(),
                    priority: Priority::Bulk,
                };
                if shared.schedule(keys, request).is_err() {
                    return;
                }
                tracing::debug!(keys = count, "resync enqueued all keys");
                observer.resynced(&ResyncOutcome::Listed { keys: count });
            }
            Err(error) => {
                tracing::warn!(%error, next_in = ?interval, "resync failed to list keys");
                observer.resynced(&ResyncOutcome::Failed { error: &error });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::atomic::{AtomicUsize, Ordering::SeqCst},
    };

    use tokio::{
        sync::{mpsc, oneshot},
        time::sleep,
    };

    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A shared log of `(key, seconds since start)` for every reconcile start.
    #[derive(Default)]
    struct Probe {
        starts: Mutex<Vec<(String, Duration)>>,
        in_flight: Mutex<HashMap<String, usize>>,
        max_per_key: AtomicUsize,
        total_in_flight: AtomicUsize,
        max_total: AtomicUsize,
        finished: AtomicUsize,
    }

    impl Probe {
        fn enter(&self, key: &str, start: Instant) {
            self.starts
                .lock()
                .unwrap()
                .push((key.to_owned(), start.elapsed()));
            let mut in_flight = self.in_flight.lock().unwrap();
            let count = in_flight.entry(key.to_owned()).or_default();
            *count += 1;
            self.max_per_key.fetch_max(*count, SeqCst);
            let total = self.total_in_flight.fetch_add(1, SeqCst) + 1;
            self.max_total.fetch_max(total, SeqCst);
        }

        fn exit(&self, key: &str) {
            *self
                .in_flight
                .lock()
                .unwrap()
                .entry(key.to_owned())
                .or_default() -= 1;
            self.total_in_flight.fetch_sub(1, SeqCst);
            self.finished.fetch_add(1, SeqCst);
        }

        fn starts_of(&self, key: &str) -> Vec<Duration> {
            self.starts
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, at)| *at)
                .collect()
        }
    }

    #[derive(Debug)]
    struct Failed;

    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("failed")
        }
    }

    fn config() -> Config {
        Config {
            max_concurrent_reconciles: 4,
            backoff: Backoff {
                jitter: 0.0,
                ..Backoff::default()
            },
            shutdown_grace: secs(10),
            resync_interval: secs(60),
        }
    }

    /// A shutdown future and the sender that fires it.
    fn shutdown_signal() -> (oneshot::Sender<()>, impl Future<Output = ()> + Send) {
        let (tx, rx) = oneshot::channel::<()>();
        (tx, async move {
            let _ = rx.await;
        })
    }

    /// Runs `controller` with a reconcile that records into `probe`, sleeps
    /// `work` and then returns what `outcome(key, attempt)` says.
    fn spawn_controller<F>(
        controller: Controller<String>,
        probe: Arc<Probe>,
        work: Duration,
        outcome: F,
    ) -> (
        oneshot::Sender<()>,
        tokio::task::JoinHandle<RunReport<String>>,
    )
    where
        F: Fn(&str, usize) -> Result<Action, Failed> + Send + Sync + 'static,
    {
        let start = Instant::now();
        let (stop, shutdown) = shutdown_signal();
        let outcome = Arc::new(outcome);
        let run = controller.run(
            move |key: String, probe: Arc<Probe>| {
                let outcome = Arc::clone(&outcome);
                async move {
                    probe.enter(&key, start);
                    let attempt = probe.starts_of(&key).len();
                    sleep(work).await;
                    probe.exit(&key);
                    outcome(&key, attempt)
                }
            },
            retry_with_backoff,
            probe,
            shutdown,
        );
        (stop, tokio::spawn(run))
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_triggers_before_run_collapse_into_one_reconcile() {
        let probe = Arc::new(Probe::default());
        let controller = Controller::new(config());
        let handle = controller.handle();
        for _ in 0..10 {
            handle.enqueue("a".to_owned(), Priority::Bulk).unwrap();
        }
        assert_eq!(handle.stats().pending, 1);
        let (stop, run) = spawn_controller(controller, Arc::clone(&probe), secs(1), |_, _| {
            Ok(Action::await_change())
        });
        sleep(secs(5)).await;
        assert_eq!(probe.starts_of("a"), [secs(0)]);
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn never_two_concurrent_reconciles_per_key_and_the_retrigger_is_not_lost() {
        let probe = Arc::new(Probe::default());
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        let triggers = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) });
        let controller = Controller::new(config()).trigger_stream(triggers);
        let handle = controller.handle();
        let (stop, run) = spawn_controller(controller, Arc::clone(&probe), secs(10), |_, _| {
            Ok(Action::await_change())
        });
        tx.send("a".to_owned()).unwrap();
        sleep(secs(1)).await;
        for _ in 0..50 {
            tx.send("a".to_owned()).unwrap();
            handle
                .enqueue("a".to_owned(), Priority::Interactive)
                .unwrap();
            sleep(Duration::from_millis(100)).await;
        }
        sleep(secs(30)).await;
        assert_eq!(probe.max_per_key.load(SeqCst), 1);
        assert_eq!(
            probe.starts_of("a"),
            [secs(0), secs(10)],
            "the triggers during the first run collapse into exactly one rerun"
        );
        assert_eq!(handle.stats().reconciles_ok, 2);
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_bound_is_honoured() {
        let probe = Arc::new(Probe::default());
        let controller = Controller::new(Config {
            max_concurrent_reconciles: 3,
            ..config()
        });
        let handle = controller.handle();
        handle
            .enqueue_all((0..10).map(|i| format!("k{i}")), Priority::Bulk)
            .unwrap();
        let (stop, run) = spawn_controller(controller, Arc::clone(&probe), secs(1), |_, _| {
            Ok(Action::await_change())
        });
        sleep(Duration::from_millis(500)).await;
        assert_eq!(handle.stats().running, 3);
        assert_eq!(handle.stats().pending, 7);
        sleep(secs(4)).await;
        assert_eq!(probe.max_total.load(SeqCst), 3);
        assert_eq!(probe.finished.load(SeqCst), 10);
        let last_start = probe.starts.lock().unwrap().iter().map(|(_, at)| *at).max();
        assert_eq!(last_start, Some(secs(3)), "ten keys in batches of three");
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn interactive_keys_start_before_queued_bulk_keys() {
        let probe = Arc::new(Probe::default());
        let controller = Controller::new(Config {
            max_concurrent_reconciles: 1,
            ..config()
        });
        let handle = controller.handle();
        handle
            .enqueue_all(["b1".to_owned(), "b2".to_owned()], Priority::Bulk)
            .unwrap();
        handle
            .enqueue("person".to_owned(), Priority::Interactive)
            .unwrap();
        let (stop, run) = spawn_controller(controller, Arc::clone(&probe), secs(1), |_, _| {
            Ok(Action::await_change())
        });
        sleep(secs(5)).await;
        let order: Vec<String> = probe
            .starts
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(order, ["person", "b1", "b2"]);
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_fires_at_the_requested_time() {
        let probe = Arc::new(Probe::default());
        let controller = Controller::new(config());
        controller
            .handle()
            .enqueue("a".to_owned(), Priority::Bulk)
            .unwrap();
        let (stop, run) = spawn_controller(controller, Arc::clone(&probe), secs(2), |_, _| {
            Ok(Action::requeue(secs(30)))
        });
        sleep(secs(70)).await;
        assert_eq!(
            probe.starts_of("a"),
            [secs(0), secs(32), secs(64)],
            "each requeue counts from the end of the reconcile"
        );
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_exponentially_and_resets_after_success() {
        let probe = Arc::new(Probe::default());
        let controller = Controller::new(config());
        let handle = controller.handle();
        handle.enqueue("a".to_owned(), Priority::Bulk).unwrap();
        // Attempts 1-3 fail, 4 succeeds and asks to come back after 100s,
        // 5 fails again.
        let (stop, run) = spawn_controller(
            controller,
            Arc::clone(&probe),
            Duration::ZERO,
            |_, attempt| match attempt {
                4 => Ok(Action::requeue(secs(100))),
                6.. => Ok(Action::await_change()),
                _ => Err(Failed),
            },
        );
        sleep(secs(5)).await;
        assert_eq!(handle.stats().backing_off, 1);
        sleep(secs(200)).await;
        assert_eq!(
            probe.starts_of("a"),
            [secs(0), secs(1), secs(3), secs(7), secs(107), secs(108)],
            "1s, 2s, 4s, then success; after it the backoff starts again at 1s"
        );
        let stats = handle.stats();
        assert_eq!((stats.reconciles_ok, stats.reconciles_err), (2, 4));
        assert_eq!(stats.backing_off, 0);
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_jitter_stays_within_bounds_in_the_runner() {
        let probe = Arc::new(Probe::default());
        let controller = Controller::new(Config {
            backoff: Backoff {
                base: secs(10),
                max: secs(1000),
                jitter: 0.5,
            },
            ..config()
        });
        controller
            .handle()
            .enqueue("a".to_owned(), Priority::Bulk)
            .unwrap();
        let (stop, run) =
            spawn_controller(controller, Arc::clone(&probe), Duration::ZERO, |_, _| {
                Err(Failed)
            });
        sleep(secs(2000)).await;
        let starts = probe.starts_of("a");
        assert!(starts.len() >= 5, "{starts:?}");
        for (n, pair) in starts.windows(2).take(5).enumerate() {
            let gap = pair[1] - pair[0];
            let ceiling = secs(10 * (1 << n));
            assert!(gap <= ceiling && gap >= ceiling / 2, "retry {n}: {gap:?}");
        }
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_key_does_not_delay_others() {
        let probe = Arc::new(Probe::default());
        let controller = Controller::new(Config {
            max_concurrent_reconciles: 1,
            ..config()
        });
        let handle = controller.handle();
        handle
            .enqueue_all(["bad".to_owned(), "good".to_owned()], Priority::Bulk)
            .unwrap();
        let (stop, run) =
            spawn_controller(controller, Arc::clone(&probe), Duration::ZERO, |key, _| {
                if key == "bad" {
                    Err(Failed)
                } else {
                    Ok(Action::requeue(secs(1)))
                }
            });
        sleep(Duration::from_millis(5500)).await;
        assert_eq!(
            probe.starts_of("good"),
            (0..=5).map(secs).collect::<Vec<_>>(),
            "the good key keeps its one-second rhythm"
        );
        assert_eq!(probe.starts_of("bad"), [secs(0), secs(1), secs(3)]);
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn bulk_triggers_wait_for_backoff_but_interactive_ones_do_not() {
        let probe = Arc::new(Probe::default());
        let controller = Controller::new(Config {
            backoff: Backoff {
                base: secs(60),
                max: secs(60),
                jitter: 0.0,
            },
            ..config()
        });
        let handle = controller.handle();
        handle.enqueue("a".to_owned(), Priority::Bulk).unwrap();
        let (stop, run) = spawn_controller(
            controller,
            Arc::clone(&probe),
            Duration::ZERO,
            |_, attempt| {
                if attempt == 1 {
                    Err(Failed)
                } else {
                    Ok(Action::await_change())
                }
            },
        );
        sleep(secs(1)).await;
        handle.enqueue("a".to_owned(), Priority::Bulk).unwrap();
        sleep(secs(9)).await;
        assert_eq!(
            probe.starts_of("a"),
            [secs(0)],
            "bulk trigger held by backoff"
        );
        handle
            .enqueue("a".to_owned(), Priority::Interactive)
            .unwrap();
        sleep(secs(1)).await;
        assert_eq!(probe.starts_of("a"), [secs(0), secs(10)]);
        sleep(secs(100)).await;
        assert_eq!(probe.starts_of("a").len(), 2, "success cancelled the retry");
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_reconcile_is_counted_and_retried_with_backoff() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let controller = Controller::<String>::new(config());
        let handle = controller.handle();
        handle.enqueue("a".to_owned(), Priority::Bulk).unwrap();
        let (stop, shutdown) = shutdown_signal();
        let counter = Arc::clone(&attempts);
        let run = tokio::spawn(controller.run(
            move |_key: String, _ctx: Arc<()>| {
                let counter = Arc::clone(&counter);
                async move {
                    if counter.fetch_add(1, SeqCst) == 0 {
                        panic!("boom");
                    }
                    Ok::<_, Failed>(Action::await_change())
                }
            },
            retry_with_backoff,
            Arc::new(()),
            shutdown,
        ));
        sleep(Duration::from_millis(500)).await;
        assert_eq!(attempts.load(SeqCst), 1);
        assert_eq!(handle.stats().reconciles_err, 1);
        sleep(secs(1)).await;
        assert_eq!(attempts.load(SeqCst), 2);
        assert_eq!(handle.stats().reconciles_ok, 1);
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn resync_enqueues_all_keys_every_interval_and_the_interval_can_change() {
        let probe = Arc::new(Probe::default());
        let lists = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&lists);
        let controller = Controller::new(config()).resync(move || {
            counter.fetch_add(1, SeqCst);
            async { Ok::<_, Failed>(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]) }
        });
        let handle = controller.handle();
        let (stop, run) =
            spawn_controller(controller, Arc::clone(&probe), Duration::ZERO, |_, _| {
                Ok(Action::await_change())
            });
        sleep(secs(130)).await;
        for key in ["a", "b", "c"] {
            assert_eq!(probe.starts_of(key), [secs(0), secs(60), secs(120)]);
        }
        handle.set_resync_interval(secs(10));
        assert_eq!(handle.resync_interval(), secs(10));
        sleep(Duration::from_millis(100)).await;
        assert_eq!(
            probe.starts_of("a").last(),
            Some(&secs(130)),
            "past due under the new interval: resync at once"
        );
        sleep(secs(25)).await;
        assert_eq!(probe.starts_of("a")[3..], [secs(130), secs(140), secs(150)]);
        handle.set_resync_interval(Duration::ZERO);
        sleep(secs(100)).await;
        assert_eq!(
            probe.starts_of("a").len(),
            6,
            "a zero interval pauses resync"
        );
        assert_eq!(lists.load(SeqCst), 6);
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_resync_is_reported_and_retried_next_interval() {
        #[derive(Default)]
        struct Seen(Mutex<Vec<String>>);
        impl Observer<String> for Arc<Seen> {
            fn resynced(&self, outcome: &ResyncOutcome<'_>) {
                self.0.lock().unwrap().push(format!("{outcome:?}"));
            }
        }
        let seen = Arc::new(Seen::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let controller = Controller::new(config())
            .observer(Arc::clone(&seen))
            .resync(move || {
                let call = counter.fetch_add(1, SeqCst);
                async move {
                    if call == 0 {
                        Err(Failed)
                    } else {
                        Ok(vec!["a".to_owned()])
                    }
                }
            });
        let (stop, run) = spawn_controller(
            controller,
            Arc::new(Probe::default()),
            Duration::ZERO,
            |_, _| Ok(Action::await_change()),
        );
        sleep(secs(61)).await;
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                r#"Failed { error: "failed" }"#.to_owned(),
                "Listed { keys: 1 }".to_owned()
            ]
        );
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_sees_every_reconcile_with_its_duration() {
        #[derive(Default)]
        struct Seen(Mutex<Vec<(String, &'static str, Duration)>>);
        impl Observer<String> for Arc<Seen> {
            fn reconciled(&self, event: &ReconcileEvent<'_, String>) {
                self.0.lock().unwrap().push((
                    event.key.clone(),
                    event.outcome.label(),
                    event.duration,
                ));
            }
        }
        let seen = Arc::new(Seen::default());
        let controller = Controller::new(config()).observer(Arc::clone(&seen));
        controller
            .handle()
            .enqueue_all(["ok".to_owned(), "bad".to_owned()], Priority::Bulk)
            .unwrap();
        let (stop, run) =
            spawn_controller(controller, Arc::new(Probe::default()), secs(3), |key, _| {
                if key == "bad" {
                    Err(Failed)
                } else {
                    Ok(Action::await_change())
                }
            });
        sleep(secs(4)).await;
        let mut events = seen.0.lock().unwrap().clone();
        events.sort();
        assert_eq!(
            events,
            [
                ("bad".to_owned(), "error", secs(3)),
                ("ok".to_owned(), "ok", secs(3))
            ]
        );
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_in_flight_work_within_the_grace_period() {
        let probe = Arc::new(Probe::default());
        let controller = Controller::new(config());
        let handle = controller.handle();
        handle.enqueue("a".to_owned(), Priority::Bulk).unwrap();
        handle
            .enqueue_at("later".to_owned(), Instant::now() + secs(2), Priority::Bulk)
            .unwrap();
        let (stop, run) = spawn_controller(controller, Arc::clone(&probe), secs(5), |_, _| {
            Ok(Action::await_change())
        });
        sleep(secs(1)).await;
        let stopped_at = Instant::now();
        stop.send(()).unwrap();
        let report = run.await.unwrap();
        assert_eq!(
            stopped_at.elapsed(),
            secs(4),
            "waited for the reconcile to end"
        );
        assert_eq!(report.completed_during_grace, 1);
        assert!(report.abandoned.is_empty());
        assert_eq!(probe.starts_of("later"), [], "no new work after the signal");
        assert_eq!(
            handle.enqueue("b".to_owned(), Priority::Interactive),
            Err(Error::ShuttingDown)
        );
        assert!(handle.is_stopping());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_work_still_running_after_the_grace_period() {
        let probe = Arc::new(Probe::default());
        let controller = Controller::new(config());
        controller
            .handle()
            .enqueue("slow".to_owned(), Priority::Bulk)
            .unwrap();
        let (stop, run) = spawn_controller(controller, Arc::clone(&probe), secs(100), |_, _| {
            Ok(Action::await_change())
        });
        sleep(secs(1)).await;
        let stopped_at = Instant::now();
        stop.send(()).unwrap();
        let report = run.await.unwrap();
        assert_eq!(
            stopped_at.elapsed(),
            secs(10),
            "returned at the end of the grace"
        );
        assert_eq!(report.abandoned, ["slow"]);
        assert_eq!(report.completed_during_grace, 0);
        sleep(secs(200)).await;
        assert_eq!(
            probe.finished.load(SeqCst),
            0,
            "the dropped reconcile never finished"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_run_future_stops_the_resync_and_the_reconciles() {
        let lists = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&lists);
        let controller = Controller::new(config()).resync(move || {
            counter.fetch_add(1, SeqCst);
            async { Ok::<_, Failed>(vec!["a".to_owned()]) }
        });
        let probe = Arc::new(Probe::default());
        let (_stop, run) = spawn_controller(controller, Arc::clone(&probe), secs(30), |_, _| {
            Ok(Action::await_change())
        });
        sleep(secs(1)).await;
        assert_eq!(lists.load(SeqCst), 1);
        run.abort();
        sleep(secs(600)).await;
        assert_eq!(lists.load(SeqCst), 1, "no resync after the drop");
        assert_eq!(probe.finished.load(SeqCst), 0, "the reconcile was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn the_run_future_is_send_and_returns_at_once_when_idle() {
        fn assert_send<T: Send>(value: T) -> T {
            value
        }
        let controller = Controller::<String>::new(config());
        let run = assert_send(controller.run(
            |_key: String, _ctx: Arc<()>| async { Ok::<_, Failed>(Action::await_change()) },
            retry_with_backoff,
            Arc::new(()),
            async {},
        ));
        let started = Instant::now();
        let report = run.await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(report.completed_during_grace, 0);
    }
}
