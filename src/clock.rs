//! Time as an injectable dependency: the system clock in production, a manual clock in tests, so that lockout,
//! TTL and cooldown tests move time instead of sleeping.

use std::sync::Mutex;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// A source of the current time.
///
/// Times have millisecond precision: the finest that both backends store exactly (SQLite keeps Unix
/// milliseconds), so a time read back from the store equals the one written and retry delays are exact.
pub trait Clock: Send + Sync + 'static {
    /// Now, in UTC, truncated to the millisecond.
    fn now(&self) -> DateTime<Utc>;
}

/// Truncates `t` to the millisecond.
pub fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t)
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        to_millis(Utc::now())
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock stopped at `start` (truncated to the millisecond).
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(to_millis(start)))
    }

    /// Moves the clock forward by `by` (truncated to the millisecond).
    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = to_millis(*now + by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
