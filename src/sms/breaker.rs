//! A circuit breaker for the SMS provider: after `threshold` consecutive failed deliveries it opens and every
//! delivery fails at once, without calling the provider, until `cooldown` has passed; then one probe is let
//! through (half-open), whose outcome closes or re-opens it. Time comes from the service's [`Clock`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::clock::Clock;
use crate::metrics::{BreakerState, Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: DateTime<Utc>,
    },
    /// One probe is out since `since`; if it never reports (it cannot, through the guard, but a stuck request
    /// can take long), another is let through after a further cool-down.
    HalfOpen {
        since: DateTime<Utc>,
    },
}

/// A breaker's state as `otpd doctor` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerView {
    /// Closed, open or half-open (a probe out), as of now.
    pub state: BreakerState,
    /// Since when it has been in that state (closed: since it last closed or since start).
    pub since: DateTime<Utc>,
    /// Consecutive failures counted while closed.
    pub failures: u32,
}

/// Counts consecutive failures and decides whether the provider may be called.
pub struct Breaker {
    state: Mutex<State>,
    /// When the state last changed between closed, open and half-open.
    changed: Mutex<DateTime<Utc>>,
    threshold: u32,
    cooldown: TimeDelta,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
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
            changed: Mutex::new(clock.now()),
            threshold: threshold.max(1),
            cooldown: TimeDelta::from_std(cooldown).unwrap_or(TimeDelta::seconds(30)),
            clock,
            metrics: Arc::default(),
        }
    }

    /// Publishes the state to `metrics` (`otpd_sms_breaker_state`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Asks to call the provider. While half-open only the one probe is admitted. The returned guard must be
    /// told the outcome; dropped without one (a cancelled call) it counts as a failure.
    pub fn admit(&self) -> Result<Admission<'_>, Open> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now();
        if let Some(open) = refusal(*state, now) {
            return Err(open);
        }
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { .. } | State::HalfOpen { .. } => {
                self.changed(*state, State::HalfOpen { since: now });
                *state = State::HalfOpen { since: now + self.cooldown };
                self.metrics.breaker(BreakerState::HalfOpen);
                tracing::info!("SMS circuit breaker half-open: probing the provider");
                true
            }
        };
        Ok(Admission { breaker: self, recorded: false, probe })
    }

    /// The state now, with its age: an open breaker whose cool-down has ended shows as half-open (the next call
    /// probes).
    pub fn view(&self) -> BreakerView {
        let state = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let since = *self.changed.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now();
        let (state, failures) = match state {
            State::Closed { failures } => (BreakerState::Closed, failures),
            State::Open { until } if now < until => (BreakerState::Open, self.threshold),
            State::Open { .. } | State::HalfOpen { .. } => (BreakerState::HalfOpen, self.threshold),
        };
        BreakerView { state, since, failures }
    }

    fn changed(&self, from: State, to: State) {
        let kind = |s: State| std::mem::discriminant(&s);
        if kind(from) != kind(to) {
            *self.changed.lock().unwrap_or_else(PoisonError::into_inner) = self.clock.now();
        }
    }

    /// Whether a call now would be refused, without asking to make one: lets a send give up before it does any
    /// work (a hash, a code row) for a message that cannot go out.
    pub fn refusing(&self) -> Option<Open> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        refusal(*state, self.clock.now())
    }

    /// An admitted call that never reached the provider (or was cut short by its caller's deadline) says
    /// nothing about the provider: the count stays as it was, and a probe that did not probe lets the next call
    /// probe at once.
    fn neutral(&self, probe: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if probe && matches!(*state, State::HalfOpen { .. }) {
            self.changed(*state, State::Open { until: self.clock.now() });
            *state = State::Open { until: self.clock.now() };
            self.metrics.breaker(BreakerState::Open);
        }
    }

    /// Records the outcome of an admitted call: `true` if the provider answered (even with a refusal).
    fn record(&self, provider_ok: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let next = match (*state, provider_ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => {
                State::Closed { failures: failures + 1 }
            }
            (State::Open { until }, false) => State::Open { until },
            (State::Closed { .. } | State::HalfOpen { .. }, false) => {
                let until = self.clock.now() + self.cooldown;
                tracing::warn!(%until, "SMS circuit breaker open: failing fast");
                self.metrics.breaker_opened();
                State::Open { until }
            }
        };
        if matches!(*state, State::HalfOpen { .. } | State::Open { .. }) && matches!(next, State::Closed { .. }) {
            tracing::info!("SMS circuit breaker closed: the provider answers again");
        }
        self.changed(*state, next);
        *state = next;
        self.metrics.breaker(match next {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        });
    }
}

/// The refusal `state` gives a call at `now`: open, or half-open with the probe out, until the cool-down ends.
fn refusal(state: State, now: DateTime<Utc>) -> Option<Open> {
    match state {
        State::Open { until } | State::HalfOpen { since: until } if now < until => {
            let retry_after = (until - now).to_std().unwrap_or(Duration::ZERO).max(Duration::from_secs(1));
            Some(Open { retry_after })
        }
        State::Closed { .. } | State::Open { .. } | State::HalfOpen { .. } => None,
    }
}

/// A call the breaker let through; reports its outcome once.
pub struct Admission<'a> {
    breaker: &'a Breaker,
    recorded: bool,
    /// This call is the half-open probe.
    probe: bool,
}

impl Admission<'_> {
    /// The provider answered (a delivery, or a refusal that shows it is up).
    pub fn provider_answered(mut self) {
        self.recorded = true;
        self.breaker.record(true);
    }

    /// The provider failed (timeouts, connection errors, 5xx after retries).
    pub fn provider_failed(mut self) {
        self.recorded = true;
        self.breaker.record(false);
    }

    /// The provider was never reached, or every attempt was cut short by the caller's deadline: no evidence
    /// either way. Counting it would let any caller open the breaker with short deadlines.
    pub fn not_the_providers_doing(mut self) {
        self.recorded = true;
        self.breaker.neutral(self.probe);
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record(false);
        }
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
            breaker.admit().unwrap().provider_failed();
        }
        breaker.admit().unwrap().provider_failed();
        assert_eq!(breaker.admit().err(), Some(Open { retry_after: Duration::from_secs(30) }));

        clock.advance(TimeDelta::seconds(30));
        let probe = breaker.admit().unwrap();
        assert!(breaker.admit().is_err(), "only one probe while half-open");
        probe.provider_failed();
        assert!(breaker.admit().is_err(), "a failed probe re-opens");

        clock.advance(TimeDelta::seconds(30));
        breaker.admit().unwrap().provider_answered();
        breaker.admit().unwrap().provider_answered();
        breaker.admit().unwrap().provider_answered();
    }

    #[test]
    fn an_admission_dropped_without_an_outcome_is_a_failure_and_cannot_wedge_half_open() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let breaker = Breaker::new(1, Duration::from_secs(30), clock.clone());
        drop(breaker.admit().unwrap());
        assert!(breaker.admit().is_err(), "the dropped call counted as a failure");
        clock.advance(TimeDelta::seconds(30));
        let stuck_probe = breaker.admit().unwrap();
        std::mem::forget(stuck_probe);
        assert!(breaker.admit().is_err());
        clock.advance(TimeDelta::seconds(30));
        breaker.admit().unwrap().provider_answered();
        assert!(breaker.admit().is_ok(), "a new probe went out after another cool-down and closed it");
    }

    #[test]
    fn calls_that_never_reached_the_provider_neither_open_nor_wedge_the_breaker() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let breaker = Breaker::new(2, Duration::from_secs(30), clock.clone());
        for _ in 0..10 {
            breaker.admit().unwrap().not_the_providers_doing();
        }
        breaker.admit().unwrap().provider_failed();
        let still_closed = breaker.admit().expect("one real failure, below the threshold: still closed");
        still_closed.not_the_providers_doing();
        breaker.admit().unwrap().provider_failed();
        assert!(breaker.admit().is_err(), "neutral calls kept the count: two real failures open it");

        clock.advance(TimeDelta::seconds(30));
        let probe = breaker.admit().unwrap();
        assert!(breaker.admit().is_err(), "one probe at a time");
        probe.not_the_providers_doing();
        let probe = breaker.admit().expect("a probe that did not probe lets the next call probe at once");
        probe.provider_answered();
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn a_success_resets_the_count() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let breaker = Breaker::new(2, Duration::from_secs(30), clock);
        breaker.admit().unwrap().provider_failed();
        breaker.admit().unwrap().provider_answered();
        breaker.admit().unwrap().provider_failed();
        assert!(breaker.admit().is_ok());
    }
}
