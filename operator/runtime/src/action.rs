//! What a reconcile asks for next, and how urgent a request to run is.
//!
//! A reconcile never learns *why* it runs (STYLE habit 1); it only tells the
//! runtime when it wants to look again. [`Action`] carries that answer, and
//! [`Priority`] orders requests that are due at the same time, so a person's
//! own action ("start my workspace now") goes ahead of bulk work (a resync of
//! ten thousand workspaces).

use std::{fmt::Debug, hash::Hash, time::Duration};

/// The bounds a key (the name of the object a controller reconciles) must meet.
///
/// Blanket-implemented for every type that meets them, such as `String`, a
/// `(namespace, name)` tuple or a uid.
pub trait Key: Clone + Eq + Hash + Send + Sync + Debug + 'static {}

impl<T> Key for T where T: Clone + Eq + Hash + Send + Sync + Debug + 'static {}

/// What a successful reconcile (or an error policy) wants to happen next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Run the reconcile for this key again after `duration`, even if nothing
    /// changes.
    ///
    /// An earlier trigger still runs it earlier: the earliest due time wins.
    #[must_use]
    pub const fn requeue(duration: Duration) -> Self {
        Self {
            requeue_after: Some(duration),
        }
    }

    /// Do not run again until something triggers this key (a watch event, a
    /// resync or an explicit enqueue).
    #[must_use]
    pub const fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }

    /// The delay after which this action asks to run again, if any.
    #[must_use]
    pub const fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// How urgent a request to reconcile a key is.
///
/// When several keys are due, every due [`Priority::Interactive`] key starts
/// before any due [`Priority::Bulk`] key. A key asked for at both priorities
/// takes the higher one. Priority orders *due* work only; it never makes a key
/// run before its due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Background work: watch events, resyncs, requeues and retries.
    ///
    /// A bulk request for a key that is backing off after an error waits for
    /// the end of the backoff, so a storm of triggers (for example the watch
    /// event caused by the reconciler's own status write) cannot turn a
    /// failing key into a hot loop.
    #[default]
    Bulk,
    /// A person is waiting (an API call such as `berth start`).
    ///
    /// Runs before due bulk work and is not held back by a key's backoff.
    Interactive,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_carries_its_delay_and_await_change_carries_none() {
        assert_eq!(
            Action::requeue(Duration::from_secs(3)).requeue_after(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(Action::await_change().requeue_after(), None);
    }

    #[test]
    fn interactive_outranks_bulk() {
        assert!(Priority::Interactive > Priority::Bulk);
        assert_eq!(Priority::default(), Priority::Bulk);
    }
}
