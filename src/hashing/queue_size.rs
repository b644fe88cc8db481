//! The automatic bound of the hashing queue (`--hash-queue-delay`): as many computations as the workers finish
//! within the delay, from how long a computation takes on them now.
//!
//! One hash timed at start-up gives the first bound, but it runs alone on an idle machine: with every worker busy,
//! and the reactor, the database and whatever else shares the cores, a hash takes longer, and a queue sized at
//! start-up for 250 ms kept served calls waiting 423 to 455 ms (p99; docs/performance.md, "512 in flight"). So every
//! computation's duration feeds a moving average (weight 1/8: a change of load shows within a few dozen hashes),
//! and the bound follows it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The queue bound that follows the workers' pace.
#[derive(Debug)]
pub(super) struct QueueSize {
    delay: Duration,
    workers: usize,
    /// The moving average of one computation's duration, in nanoseconds.
    average_nanos: AtomicU64,
}

impl QueueSize {
    /// A bound for `workers` workers and `delay`, starting from one computation timed at `first`.
    pub(super) fn new(delay: Duration, workers: usize, first: Duration) -> Self {
        let first = u64::try_from(first.as_nanos()).unwrap_or(u64::MAX).max(1);
        Self { delay, workers: workers.max(1), average_nanos: AtomicU64::new(first) }
    }

    /// The bound: whole computations per worker within the delay, at least one each.
    pub(super) fn limit(&self) -> usize {
        let each = self.average_nanos.load(Ordering::Relaxed).max(1);
        let per_worker = u64::try_from(self.delay.as_nanos()).unwrap_or(u64::MAX) / each;
        self.workers.saturating_mul(usize::try_from(per_worker).unwrap_or(usize::MAX).max(1))
    }

    /// Records how long a computation took, and returns the bound that follows.
    pub(super) fn observe(&self, took: Duration) -> usize {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let _ = self.average_nanos.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |average| {
            Some((average - average / 8).saturating_add(took / 8).max(1))
        });
        self.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_bound_is_what_the_workers_finish_within_the_delay() {
        let size = QueueSize::new(250 * MS, 2, 20 * MS);
        assert_eq!(size.limit(), 24, "12 whole hashes of 20 ms per worker in 250 ms");
        assert_eq!(QueueSize::new(250 * MS, 2, 400 * MS).limit(), 2, "at least one per worker");
    }

    #[test]
    fn the_bound_follows_the_pace_of_the_workers() {
        let size = QueueSize::new(250 * MS, 2, 20 * MS);
        // Under load a hash takes 30 ms: within a few dozen hashes the queue holds 250 ms of them again.
        let mut limit = size.limit();
        for _ in 0..40 {
            limit = size.observe(30 * MS);
        }
        assert_eq!(limit, 16);
        for _ in 0..40 {
            limit = size.observe(20 * MS);
        }
        assert_eq!(limit, 24, "and grows back when the load goes");
    }
}
