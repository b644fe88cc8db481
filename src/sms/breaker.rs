//! A circuit breaker for the SMS provider: after `threshold` consecutive failed deliveries it opens and every
//! delivery fails at once, without calling the provider, until `cooldown` has passed; then one probe is let
//! through (half-open), whose outcome closes or re-opens it. Time comes from the service's [`Clock`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::clock::Clock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: DateTime<Utc> },
    HalfOpen,
}

/// Counts consecutive failures and decides whether the provider may be called.
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: TimeDelta,
    clock: Arc<dyn Clock>,
}

/// The breaker refused a call; retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// Until the next probe may go out.
    pub retry_after: Duration,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown: TimeDelta::from_std(cooldown).unwrap_or(TimeDelta::seconds(30)),
            clock,
        }
    }

    /// Asks to call the provider. While half-open only the one probe is admitted.
    pub fn admit(&self) -> Result<(), Open> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                tracing::info!("SMS circuit breaker half-open: probing the provider");
                Ok(())
            }
            State::Open { until } => Err(Open { retry_after: (until - now).to_std().unwrap_or(Duration::ZERO) }),
            State::HalfOpen => Err(Open { retry_after: Duration::from_secs(1) }),
        }
    }

    /// Records the outcome of an admitted call: `true` if the provider answered (even with a refusal).
    pub fn record(&self, provider_ok: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let next = match (*state, provider_ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => {
                State::Closed { failures: failures + 1 }
            }
            (State::Open { until }, false) => State::Open { until },
            (State::Closed { .. } | State::HalfOpen, false) => {
                let until = self.clock.now() + self.cooldown;
                tracing::warn!(%until, "SMS circuit breaker open: failing fast");
                State::Open { until }
            }
        };
        if matches!(*state, State::HalfOpen | State::Open { .. }) && matches!(next, State::Closed { .. }) {
            tracing::info!("SMS circuit breaker closed: the provider answers again");
        }
        *state = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn opens_after_threshold_probes_after_cooldown_and_closes_on_success() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let breaker = Breaker::new(3, Duration::from_secs(30), clock.clone());
        for _ in 0..2 {
            breaker.admit().unwrap();
            breaker.record(false);
        }
        breaker.admit().unwrap();
        breaker.record(false);
        assert_eq!(breaker.admit(), Err(Open { retry_after: Duration::from_secs(30) }));

        clock.advance(TimeDelta::seconds(30));
        breaker.admit().unwrap();
        assert!(breaker.admit().is_err(), "only one probe while half-open");
        breaker.record(false);
        assert!(breaker.admit().is_err(), "a failed probe re-opens");

        clock.advance(TimeDelta::seconds(30));
        breaker.admit().unwrap();
        breaker.record(true);
        breaker.admit().unwrap();
        breaker.admit().unwrap();
    }

    #[test]
    fn a_success_resets_the_count() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let breaker = Breaker::new(2, Duration::from_secs(30), clock);
        breaker.record(false);
        breaker.record(true);
        breaker.record(false);
        assert!(breaker.admit().is_ok());
    }
}
