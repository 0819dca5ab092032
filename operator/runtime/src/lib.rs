//! A small kube-runtime-like controller runtime on tokio.
//!
//! Berth's controllers reconcile declared objects against the cloud. This
//! crate is the machinery between "something may have changed" and "run
//! `reconcile(key)`": a deduplicating, prioritised work queue, a runner with
//! bounded concurrency that never reconciles one key twice at once, requeue
//! and per-key backoff, a periodic resync, and graceful shutdown. It knows
//! nothing of PostgreSQL or AWS: keys come in through a trigger stream, a
//! [`Handle`] and a resync list function, all supplied by the composition root.
//!
//! - [`queue`]: the pure [`WorkQueue`] state machine (dedup, hold, backoff).
//! - [`backoff`]: the pure exponential [`Backoff`] with jitter.
//! - [`controller`]: [`Controller`], the async runner, and its [`Handle`].
//! - [`observer`]: the [`Observer`] hook for metrics.

pub mod action;
pub mod backoff;
pub mod controller;
pub mod observer;
pub mod queue;

pub use action::{Action, Key, Priority};
pub use backoff::Backoff;
pub use controller::{retry_with_backoff, Config, Controller, Error, Handle, RunReport};
pub use observer::{NoopObserver, Observer, ReconcileEvent, ReconcileOutcome, ResyncOutcome};
pub use queue::{Retry, Stats, WorkQueue};
