//! The deduplicating work queue: which key runs next, and when.
//!
//! [`WorkQueue`] is the pure heart of the runtime (the equivalent of
//! kube-runtime's `scheduler.rs` plus the "hold while running" rule of
//! `controller/runner.rs`). It does no I/O and never reads the clock: every
//! step takes `now`, so its decisions are unit-testable without a runtime.
//!
//! Each key the queue knows has one [`Phase`]:
//!
//! ```text
//!            schedule                 pop (due)
//!   Idle ───────────────► Queued ───────────────► Running
//!    ▲                      ▲                        │ schedule: held as `rerun`
//!    │ complete, nothing    │ complete with requeue, │
//!    │ more to do           │ retry or held rerun    │
//!    └──────────────────────┴────────────────────────┘
//! ```
//!
//! Rules, each enforced by one step function:
//! - **Dedup**: a key is in the queue at most once. Scheduling a queued key
//!   again keeps the *earliest* due time and the *highest* priority.
//! - **Never twice at once**: a key is either queued or running, never both. A
//!   request for a running key is held in [`Phase::Running`] and merged into
//!   what the reconcile asks for when it completes: it is neither lost nor run
//!   concurrently.
//! - **Backoff per key**: failures are counted per key and reset on success; a
//!   failed key gets a `not_before` instant that holds back [`Priority::Bulk`]
//!   requests (but not [`Priority::Interactive`] ones).
//! - **Priority**: among due keys, interactive ones pop first; within one
//!   priority, the earliest due time, then the earliest request, pops first.
//!
//! Stale heap entries (left behind when a key is rescheduled earlier) are
//! skipped lazily by comparing a per-key sequence number.

use std::{
    cmp::Ordering,
    collections::{hash_map::Entry as MapEntry, BinaryHeap, HashMap},
    time::Duration,
};

use rand::{rngs::SmallRng, Rng, SeedableRng};
use tokio::time::Instant;

use crate::{Backoff, Key, Priority};

/// A request to reconcile a key at `due` (or as soon after as a slot frees up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The earliest instant at which the reconcile may start.
    pub due: Instant,
    /// How urgent the request is once due.
    pub priority: Priority,
}

impl Request {
    /// Combines two requests for one key: the earliest due time and the highest
    /// priority win.
    #[must_use]
    pub fn merge(self, other: Self) -> Self {
        Self {
            due: self.due.min(other.due),
            priority: self.priority.max(other.priority),
        }
    }

    /// This request as held back by a backoff that ends at `not_before`: bulk
    /// requests wait for the end of the backoff, interactive ones do not.
    #[must_use]
    pub fn respecting_backoff(self, not_before: Option<Instant>) -> Self {
        match (self.priority, not_before) {
            (Priority::Bulk, Some(not_before)) => Self {
                due: self.due.max(not_before),
                ..self
            },
            _ => self,
        }
    }
}

/// Where one key is in its lifecycle (see the module docs for the diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Neither queued nor running. The queue only remembers an idle key while
    /// it has unresolved failures (so its backoff keeps growing); an idle key
    /// without failures is forgotten.
    Idle,
    /// Waiting to run.
    Queued(Request),
    /// A reconcile is in flight. `rerun` holds any request that arrived
    /// meanwhile, to be merged into the next schedule on completion.
    Running {
        /// The request held while running, if any.
        rerun: Option<Request>,
    },
}

/// How a reconcile ended, as far as scheduling is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The reconcile succeeded: failures reset, and the key runs again after
    /// `requeue_after` if set.
    Success {
        /// When to run again without any trigger.
        requeue_after: Option<Duration>,
    },
    /// The reconcile failed (or panicked): the failure count grows, and the
    /// key retries after `retry_after` if set; bulk triggers wait until then.
    Failure {
        /// When to retry; `None` waits for a trigger.
        retry_after: Option<Duration>,
    },
}

/// What the queue suggests for a failure, handed to the error policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How many consecutive failures this key has had, counting this one.
    pub failures: u32,
    /// The built-in backoff delay (with jitter) for that many failures.
    pub backoff: Duration,
}

/// A cheap snapshot of the queue and the counters of the runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Keys queued without a failure to back off from (due now or later).
    pub pending: usize,
    /// Keys queued for a retry after one or more consecutive failures.
    pub backing_off: usize,
    /// Keys whose reconcile is in flight.
    pub running: usize,
    /// Reconciles that returned `Ok` since the start.
    pub reconciles_ok: u64,
    /// Reconciles that returned `Err` or panicked since the start.
    pub reconciles_err: u64,
}

/// The deduplicating, prioritised, backoff-aware work queue (pure state).
///
/// See the [module docs](self) for the rules it enforces.
#[derive(Debug)]
pub struct WorkQueue<K> {
    keys: HashMap<K, KeyState>,
    /// One min-heap per priority: index 0 bulk, 1 interactive.
    heaps: [BinaryHeap<HeapEntry<K>>; 2],
    next_seq: u64,
    backoff: Backoff,
    rng: SmallRng,
    stats: Stats,
}

#[derive(Debug, Clone, Copy)]
struct KeyState {
    phase: Phase,
    /// Consecutive failures; reset by a success.
    failures: u32,
    /// The end of the current backoff, if the last completion was a failure.
    not_before: Option<Instant>,
    /// Sequence number of the live heap entry when queued.
    seq: u64,
}

/// Which [`Stats`] gauge a key counts towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Uncounted,
    Pending,
    BackingOff,
    Running,
}

impl KeyState {
    const fn new() -> Self {
        Self {
            phase: Phase::Idle,
            failures: 0,
            not_before: None,
            seq: 0,
        }
    }

    const fn class(&self) -> Class {
        match self.phase {
            Phase::Idle => Class::Uncounted,
            Phase::Queued(_) if self.failures > 0 => Class::BackingOff,
            Phase::Queued(_) => Class::Pending,
            Phase::Running { .. } => Class::Running,
        }
    }
}

#[derive(Debug)]
struct HeapEntry<K> {
    due: Instant,
    seq: u64,
    key: K,
}

impl<K> PartialEq for HeapEntry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K> Eq for HeapEntry<K> {}

impl<K> PartialOrd for HeapEntry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for HeapEntry<K> {
    /// Reversed, so that `BinaryHeap` (a max-heap) yields the earliest due
    /// time first, and among equal ones the oldest request.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

const fn heap_index(priority: Priority) -> usize {
    match priority {
        Priority::Bulk => 0,
        Priority::Interactive => 1,
    }
}

/// `now + delay`, saturating at roughly thirty years ahead instead of panicking.
pub(crate) fn add(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .or_else(|| now.checked_add(Duration::from_secs(30 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

impl<K: Key> WorkQueue<K> {
    /// An empty queue whose built-in backoff follows `backoff`, with jitter
    /// from an entropy-seeded generator.
    #[must_use]
    pub fn new(backoff: Backoff) -> Self {
        Self::with_rng(backoff, SmallRng::from_os_rng())
    }

    /// An empty queue with jitter drawn from a generator seeded with `seed`,
    /// for reproducible tests.
    #[must_use]
    pub fn with_seed(backoff: Backoff, seed: u64) -> Self {
        Self::with_rng(backoff, SmallRng::seed_from_u64(seed))
    }

    fn with_rng(backoff: Backoff, rng: SmallRng) -> Self {
        Self {
            keys: HashMap::new(),
            heaps: [BinaryHeap::new(), BinaryHeap::new()],
            next_seq: 0,
            backoff,
            rng,
            stats: Stats::default(),
        }
    }

    /// Asks for `key` to run at `request.due` (or later, if it is running or
    /// backing off).
    ///
    /// - Idle: becomes queued (bulk requests wait for any backoff).
    /// - Queued: keeps the earliest due time and the highest priority.
    /// - Running: the request is held and merged in when the reconcile
    ///   completes.
    pub fn schedule(&mut self, key: K, request: Request) {
        let Self {
            keys,
            heaps,
            next_seq,
            stats,
            ..
        } = self;
        let state = keys.entry(key.clone()).or_insert_with(KeyState::new);
        let before = state.class();
        match state.phase {
            Phase::Idle => {
                let request = request.respecting_backoff(state.not_before);
                enqueue(heaps, next_seq, state, key, request);
            }
            Phase::Queued(current) => {
                let merged = current.merge(request.respecting_backoff(state.not_before));
                if merged != current {
                    enqueue(heaps, next_seq, state, key, merged);
                }
            }
            Phase::Running { rerun } => {
                let held = rerun.map_or(request, |held| held.merge(request));
                state.phase = Phase::Running { rerun: Some(held) };
            }
        }
        let after = state.class();
        recount(stats, before, after);
    }

    /// Takes the next due key (interactive before bulk) and marks it running.
    ///
    /// Returns `None` when no queued key is due at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<(K, Priority)> {
        for priority in [Priority::Interactive, Priority::Bulk] {
            self.drop_stale(priority);
            let heap = &mut self.heaps[heap_index(priority)];
            if heap.peek().is_some_and(|top| top.due <= now) {
                let entry = heap.pop()?;
                let state = self.keys.get_mut(&entry.key)?;
                let before = state.class();
                state.phase = Phase::Running { rerun: None };
                recount(&mut self.stats, before, Class::Running);
                return Some((entry.key, priority));
            }
        }
        None
    }

    /// The earliest due time of any queued key, if some key is queued.
    pub fn next_due(&mut self) -> Option<Instant> {
        self.drop_stale(Priority::Interactive);
        self.drop_stale(Priority::Bulk);
        self.heaps
            .iter()
            .filter_map(|heap| heap.peek().map(|top| top.due))
            .min()
    }

    /// The failure count and built-in backoff that a failure of `key` right
    /// now would mean; draws jitter. Does not change the key's state (call
    /// [`WorkQueue::complete`] for that).
    pub fn retry_for(&mut self, key: &K) -> Retry {
        let failures = self
            .keys
            .get(key)
            .map_or(0, |state| state.failures)
            .saturating_add(1);
        let unit = self.rng.random_range(0.0..=1.0);
        Retry {
            failures,
            backoff: self.backoff.delay(failures, unit),
        }
    }

    /// Records that the reconcile of running `key` ended at `now`, and
    /// schedules what comes next: the earliest of the completion's requeue or
    /// retry and any request held while it ran.
    ///
    /// Returns the next due time, or `None` if the key waits for a trigger.
    /// Ignored (returns `None`) for a key that is not running.
    pub fn complete(&mut self, key: &K, completion: Completion, now: Instant) -> Option<Instant> {
        let Self {
            keys,
            heaps,
            next_seq,
            stats,
            ..
        } = self;
        let MapEntry::Occupied(mut slot) = keys.entry(key.clone()) else {
            return None;
        };
        let state = slot.get_mut();
        let Phase::Running { rerun } = state.phase else {
            return None;
        };
        let follow_up = match completion {
            Completion::Success { requeue_after } => {
                stats.reconciles_ok += 1;
                state.failures = 0;
                state.not_before = None;
                requeue_after
            }
            Completion::Failure { retry_after } => {
                stats.reconciles_err += 1;
                state.failures = state.failures.saturating_add(1);
                state.not_before = retry_after.map(|delay| add(now, delay));
                retry_after
            }
        };
        let follow_up = follow_up.map(|delay| Request {
            due: add(now, delay),
            priority: Priority::Bulk,
        });
        let rerun = rerun.map(|held| held.respecting_backoff(state.not_before));
        let next = match (follow_up, rerun) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => a.or(b),
        };
        let due = next.map(|request| request.due);
        if let Some(request) = next {
            enqueue(heaps, next_seq, state, key.clone(), request);
            recount(stats, Class::Running, state.class());
        } else {
            state.phase = Phase::Idle;
            recount(stats, Class::Running, Class::Uncounted);
            if state.failures == 0 {
                slot.remove();
            }
        }
        due
    }

    /// The phase of `key` (`Idle` for keys the queue does not remember).
    #[must_use]
    pub fn phase(&self, key: &K) -> Phase {
        self.keys.get(key).map_or(Phase::Idle, |state| state.phase)
    }

    /// The consecutive failures recorded for `key`.
    #[must_use]
    pub fn failures(&self, key: &K) -> u32 {
        self.keys.get(key).map_or(0, |state| state.failures)
    }

    /// The keys whose reconcile is in flight.
    pub fn running(&self) -> impl Iterator<Item = &K> {
        self.keys
            .iter()
            .filter(|(_, state)| matches!(state.phase, Phase::Running { .. }))
            .map(|(key, _)| key)
    }

    /// The current gauges and counters.
    #[must_use]
    pub const fn stats(&self) -> Stats {
        self.stats
    }

    /// Pops heap entries of `priority` that no longer match their key's state.
    fn drop_stale(&mut self, priority: Priority) {
        let heap = &mut self.heaps[heap_index(priority)];
        while let Some(top) = heap.peek() {
            let live = self.keys.get(&top.key).is_some_and(|state| {
                state.seq == top.seq
                    && matches!(state.phase, Phase::Queued(r) if r.priority == priority)
            });
            if live {
                return;
            }
            heap.pop();
        }
    }
}

/// Puts `key` in the queue with `request`, superseding any earlier entry.
fn enqueue<K>(
    heaps: &mut [BinaryHeap<HeapEntry<K>>; 2],
    next_seq: &mut u64,
    state: &mut KeyState,
    key: K,
    request: Request,
) {
    *next_seq += 1;
    state.seq = *next_seq;
    state.phase = Phase::Queued(request);
    heaps[heap_index(request.priority)].push(HeapEntry {
        due: request.due,
        seq: state.seq,
        key,
    });
}

/// Moves one key from the gauge of `before` to the gauge of `after`.
fn recount(stats: &mut Stats, before: Class, after: Class) {
    if before == after {
        return;
    }
    match before {
        Class::Uncounted => {}
        Class::Pending => stats.pending = stats.pending.saturating_sub(1),
        Class::BackingOff => stats.backing_off = stats.backing_off.saturating_sub(1),
        Class::Running => stats.running = stats.running.saturating_sub(1),
    }
    match after {
        Class::Uncounted => {}
        Class::Pending => stats.pending += 1,
        Class::BackingOff => stats.backing_off += 1,
        Class::Running => stats.running += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> WorkQueue<&'static str> {
        WorkQueue::with_seed(
            Backoff {
                jitter: 0.0,
                ..Backoff::default()
            },
            7,
        )
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    fn bulk(due: Instant) -> Request {
        Request {
            due,
            priority: Priority::Bulk,
        }
    }

    fn interactive(due: Instant) -> Request {
        Request {
            due,
            priority: Priority::Interactive,
        }
    }

    fn drain(queue: &mut WorkQueue<&'static str>, now: Instant) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.pop(now).map(|(key, _)| key)).collect()
    }

    #[test]
    fn duplicate_keys_collapse_and_the_earliest_due_time_wins() {
        let t0 = Instant::now();
        let mut queue = queue();
        queue.schedule("a", bulk(at(t0, 30)));
        queue.schedule("a", bulk(at(t0, 10)));
        queue.schedule("a", bulk(at(t0, 20)));
        assert_eq!(queue.stats().pending, 1);
        assert_eq!(queue.next_due(), Some(at(t0, 10)));
        assert_eq!(queue.pop(at(t0, 9)), None);
        assert_eq!(queue.pop(at(t0, 10)), Some(("a", Priority::Bulk)));
        assert_eq!(queue.pop(at(t0, 100)), None, "stale entries never pop");
        assert_eq!(queue.next_due(), None);
    }

    #[test]
    fn due_keys_pop_in_due_order() {
        let t0 = Instant::now();
        let mut queue = queue();
        queue.schedule("late", bulk(at(t0, 3)));
        queue.schedule("early", bulk(at(t0, 1)));
        queue.schedule("middle", bulk(at(t0, 2)));
        assert_eq!(drain(&mut queue, at(t0, 5)), ["early", "middle", "late"]);
    }

    #[test]
    fn interactive_keys_pop_before_bulk_keys_when_both_are_due() {
        let t0 = Instant::now();
        let mut queue = queue();
        queue.schedule("bulk", bulk(t0));
        queue.schedule("person", interactive(at(t0, 1)));
        queue.schedule("upgraded", bulk(t0));
        queue.schedule("upgraded", interactive(at(t0, 2)));
        assert_eq!(drain(&mut queue, t0), ["upgraded", "bulk"]);
        assert_eq!(drain(&mut queue, at(t0, 1)), ["person"]);
    }

    #[test]
    fn a_request_for_a_running_key_is_held_until_it_completes() {
        let t0 = Instant::now();
        let mut queue = queue();
        queue.schedule("a", bulk(t0));
        assert_eq!(queue.pop(t0), Some(("a", Priority::Bulk)));
        for _ in 0..5 {
            queue.schedule("a", bulk(t0));
        }
        assert_eq!(queue.pop(t0), None, "never twice at once");
        assert_eq!(
            queue.phase(&"a"),
            Phase::Running {
                rerun: Some(bulk(t0))
            }
        );
        let done = at(t0, 4);
        let next = queue.complete(
            &"a",
            Completion::Success {
                requeue_after: Some(Duration::from_secs(60)),
            },
            done,
        );
        assert_eq!(next, Some(t0), "the held request beats the requeue");
        assert_eq!(queue.pop(done), Some(("a", Priority::Bulk)));
    }

    #[test]
    fn a_success_without_requeue_forgets_the_key() {
        let t0 = Instant::now();
        let mut queue = queue();
        queue.schedule("a", bulk(t0));
        queue.pop(t0);
        assert_eq!(queue.stats().running, 1);
        let next = queue.complete(
            &"a",
            Completion::Success {
                requeue_after: None,
            },
            t0,
        );
        assert_eq!(next, None);
        assert_eq!(queue.phase(&"a"), Phase::Idle);
        assert!(queue.keys.is_empty());
        assert_eq!(
            queue.stats(),
            Stats {
                reconciles_ok: 1,
                ..Stats::default()
            }
        );
    }

    #[test]
    fn backoff_holds_bulk_triggers_but_not_interactive_ones_and_resets_on_success() {
        let t0 = Instant::now();
        let mut queue = queue();
        queue.schedule("a", bulk(t0));
        queue.pop(t0);
        let retry = queue.retry_for(&"a");
        assert_eq!(retry.failures, 1);
        assert_eq!(retry.backoff, Duration::from_secs(1));
        queue.complete(
            &"a",
            Completion::Failure {
                retry_after: Some(Duration::from_secs(8)),
            },
            t0,
        );
        assert_eq!(queue.stats().backing_off, 1);
        queue.schedule("a", bulk(t0));
        assert_eq!(queue.next_due(), Some(at(t0, 8)), "bulk waits for backoff");
        queue.schedule("a", interactive(at(t0, 1)));
        assert_eq!(queue.next_due(), Some(at(t0, 1)), "a person does not");
        queue.pop(at(t0, 1));
        assert_eq!(queue.retry_for(&"a").failures, 2);
        queue.complete(
            &"a",
            Completion::Success {
                requeue_after: None,
            },
            at(t0, 2),
        );
        assert_eq!(queue.failures(&"a"), 0);
        assert_eq!(queue.retry_for(&"a").failures, 1, "reset after success");
        queue.schedule("a", bulk(at(t0, 2)));
        assert_eq!(queue.next_due(), Some(at(t0, 2)));
    }

    #[test]
    fn a_failure_with_no_retry_keeps_its_count_and_waits_for_a_trigger() {
        let t0 = Instant::now();
        let mut queue = queue();
        queue.schedule("a", bulk(t0));
        queue.pop(t0);
        let next = queue.complete(&"a", Completion::Failure { retry_after: None }, t0);
        assert_eq!(next, None);
        assert_eq!(queue.failures(&"a"), 1);
        assert_eq!(queue.stats().reconciles_err, 1);
        queue.schedule("a", bulk(at(t0, 1)));
        assert_eq!(queue.pop(at(t0, 1)), Some(("a", Priority::Bulk)));
    }

    #[test]
    fn gauges_follow_every_transition() {
        let t0 = Instant::now();
        let mut queue = queue();
        for key in ["a", "b", "c"] {
            queue.schedule(key, bulk(t0));
        }
        queue.pop(t0);
        queue.pop(t0);
        let stats = queue.stats();
        assert_eq!((stats.pending, stats.running, stats.backing_off), (1, 2, 0));
        let running: Vec<_> = queue.running().copied().collect();
        for key in running {
            queue.complete(
                &key,
                Completion::Failure {
                    retry_after: Some(Duration::from_secs(1)),
                },
                t0,
            );
        }
        let stats = queue.stats();
        assert_eq!((stats.pending, stats.running, stats.backing_off), (1, 0, 2));
    }

    #[test]
    fn completing_a_key_that_is_not_running_changes_nothing() {
        let t0 = Instant::now();
        let mut queue = queue();
        queue.schedule("a", bulk(t0));
        let completion = Completion::Success {
            requeue_after: None,
        };
        assert_eq!(queue.complete(&"a", completion, t0), None);
        assert_eq!(queue.complete(&"b", completion, t0), None);
        assert_eq!(queue.stats().pending, 1);
        assert_eq!(queue.stats().reconciles_ok, 0);
    }
}
