//! Hooks through which the runtime reports what it did, for metrics.
//!
//! The runtime logs every failure with `tracing` itself; an [`Observer`] is for
//! the numbers a composition root wants to export (reconcile counts and
//! durations by outcome, resync results). Its methods are called on the
//! controller's own task, outside any lock, once per event: keep them cheap
//! and non-blocking (bump a counter, record a histogram sample).

use std::{fmt, time::Duration};

use crate::Priority;

/// Receives one call per finished reconcile and per resync.
///
/// Every method has a default that does nothing, so an implementation picks
/// the events it cares about.
pub trait Observer<K>: Send + Sync + 'static {
    /// A reconcile of `event.key` finished (successfully, with an error, or by
    /// panicking).
    fn reconciled(&self, event: &ReconcileEvent<'_, K>) {
        let _ = event;
    }

    /// A periodic resync listed the keys (or failed to).
    fn resynced(&self, outcome: &ResyncOutcome<'_>) {
        let _ = outcome;
    }
}

/// An observer that ignores everything; the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl<K> Observer<K> for NoopObserver {}

/// One finished reconcile.
pub struct ReconcileEvent<'a, K> {
    /// The key that was reconciled.
    pub key: &'a K,
    /// The priority it was popped with.
    pub priority: Priority,
    /// Wall time from the start of the reconcile future to its end.
    pub duration: Duration,
    /// How it ended.
    pub outcome: ReconcileOutcome<'a>,
}

impl<K: fmt::Debug> fmt::Debug for ReconcileEvent<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconcileEvent")
            .field("key", &self.key)
            .field("priority", &self.priority)
            .field("duration", &self.duration)
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// How one reconcile ended, and what the runtime scheduled next.
pub enum ReconcileOutcome<'a> {
    /// `reconcile` returned `Ok`. The key's failure count is reset.
    Success {
        /// The requeue the reconcile asked for, if any.
        requeue_after: Option<Duration>,
    },
    /// `reconcile` returned `Err`.
    Failure {
        /// The error, as returned by the reconcile.
        error: &'a dyn fmt::Display,
        /// Consecutive failures of this key, counting this one.
        failures: u32,
        /// When the error policy asked to retry (`None`: wait for a trigger).
        retry_after: Option<Duration>,
    },
    /// The reconcile panicked. Treated as a failure with the built-in backoff.
    Panicked {
        /// The panic message, when it was a string.
        message: &'a str,
        /// Consecutive failures of this key, counting this one.
        failures: u32,
        /// When the key will be retried.
        retry_after: Duration,
    },
}

impl ReconcileOutcome<'_> {
    /// A short label for metrics: `"ok"`, `"error"` or `"panic"`.
    #[must_use]
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Success { .. } => "ok",
            Self::Failure { .. } => "error",
            Self::Panicked { .. } => "panic",
        }
    }
}

impl fmt::Debug for ReconcileOutcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success { requeue_after } => f
                .debug_struct("Success")
                .field("requeue_after", requeue_after)
                .finish(),
            Self::Failure {
                error,
                failures,
                retry_after,
            } => f
                .debug_struct("Failure")
                .field("error", &format_args!("{error}"))
                .field("failures", failures)
                .field("retry_after", retry_after)
                .finish(),
            Self::Panicked {
                message,
                failures,
                retry_after,
            } => f
                .debug_struct("Panicked")
                .field("message", message)
                .field("failures", failures)
                .field("retry_after", retry_after)
                .finish(),
        }
    }
}

/// The result of one periodic resync.
pub enum ResyncOutcome<'a> {
    /// The list function returned this many keys, all enqueued.
    Listed {
        /// How many keys were listed.
        keys: usize,
    },
    /// The list function failed; the next resync is one interval later.
    Failed {
        /// The error, formatted with `{:#}` (the full chain for `anyhow`).
        error: &'a str,
    },
}

impl fmt::Debug for ResyncOutcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Listed { keys } => f.debug_struct("Listed").field("keys", keys).finish(),
            Self::Failed { error } => f.debug_struct("Failed").field("error", error).finish(),
        }
    }
}
