//! Small conversions shared by the three clients.

use std::time::SystemTime;

use aws_smithy_types::DateTime;

/// An SDK timestamp as [`SystemTime`]; missing or out-of-range → epoch.
pub(crate) fn time(t: Option<&DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// An optional SDK timestamp as an optional [`SystemTime`].
pub(crate) fn opt_time(t: Option<&DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

/// A non-negative SDK integer as `u32` (negative → 0).
pub(crate) fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// A `u32` as the SDK's `i32` (saturating).
pub(crate) fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// `Some(s)` unless `s` is empty.
pub(crate) fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}
