//! The rules for sending and checking codes, as pure functions of the history and the time, so that the store
//! can apply them inside its transaction and tests can check them without a database.

use chrono::{DateTime, TimeDelta, Utc};

use super::CodeLength;

/// Every knob of the verification policy (DESIGN.md, "Policy").
#[derive(Debug, Clone)]
pub struct Policy {
    /// Digits per code.
    pub code_length: CodeLength,
    /// How long a code works after it is issued.
    pub code_ttl: TimeDelta,
    /// Consecutive failed checks per number before the lockout.
    pub max_failed_attempts: u32,
    /// How long a number stays locked.
    pub lockout: TimeDelta,
    /// Minimum time between two SMS to one number.
    pub resend_cooldown: TimeDelta,
    /// SMS per number per rolling hour.
    pub max_sends_per_hour: u32,
    /// SMS per number per rolling day.
    pub max_sends_per_day: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            code_length: CodeLength::default(),
            code_ttl: TimeDelta::minutes(3),
            max_failed_attempts: 10,
            lockout: TimeDelta::hours(24),
            resend_cooldown: TimeDelta::seconds(30),
            max_sends_per_hour: 5,
            max_sends_per_day: 10,
        }
    }
}

/// One SMS sent to a number, as the send caps see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentSms {
    /// When the send was attempted.
    pub at: DateTime<Utc>,
    /// The gateway reported a failure; such a send counts toward the caps but starts no cooldown.
    pub failed: bool,
}

/// What the store knows about a number when it is asked to send to it.
#[derive(Debug, Clone, Default)]
pub struct SendHistory {
    /// Set while the number is locked (a lock in the past is not returned).
    pub locked_until: Option<DateTime<Utc>>,
    /// SMS sent to the number in the last 24 hours, in any order.
    pub sent: Vec<SentSms>,
}

/// Why a send is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRefusal {
    /// Too many failed checks; nothing is sent until `until`.
    Locked { until: DateTime<Utc> },
    /// The last SMS went out less than the cooldown ago.
    Cooldown { retry_at: DateTime<Utc> },
    /// The hourly or daily cap is reached.
    Limit { retry_at: DateTime<Utc> },
}

/// What the caller is told after a send is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendAllowance {
    /// SMS left under the tighter of the two caps, after this one.
    pub sends_remaining: u32,
    /// The earliest time the next send can succeed.
    pub resend_available_at: DateTime<Utc>,
}

impl Policy {
    /// Decides whether a new SMS may go to a number with `history` at `now`.
    pub fn check_send(&self, history: &SendHistory, now: DateTime<Utc>) -> Result<SendAllowance, SendRefusal> {
        if let Some(until) = history.locked_until.filter(|until| *until > now) {
            return Err(SendRefusal::Locked { until });
        }
        let cooldown_end = self.cooldown_end(&history.sent);
        if cooldown_end > now {
            return Err(SendRefusal::Cooldown { retry_at: cooldown_end });
        }
        let cap_end = self.cap_end(&history.sent, now);
        if cap_end > now {
            return Err(SendRefusal::Limit { retry_at: cap_end });
        }

        let mut after = history.sent.clone();
        after.push(SentSms { at: now, failed: false });
        let remaining = |window: TimeDelta, max: u32| {
            let used = after.iter().filter(|s| s.at > now - window).count();
            max.saturating_sub(u32::try_from(used).unwrap_or(u32::MAX))
        };
        Ok(SendAllowance {
            sends_remaining: remaining(TimeDelta::hours(1), self.max_sends_per_hour)
                .min(remaining(TimeDelta::days(1), self.max_sends_per_day)),
            resend_available_at: self.cooldown_end(&after).max(self.cap_end(&after, now)),
        })
    }

    /// When the cooldown after the last successful (or pending) send ends.
    fn cooldown_end(&self, sent: &[SentSms]) -> DateTime<Utc> {
        sent.iter().filter(|s| !s.failed).map(|s| s.at + self.resend_cooldown).max().unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The earliest time both rolling-window caps have room again (`MIN_UTC` if they have room now).
    fn cap_end(&self, sent: &[SentSms], now: DateTime<Utc>) -> DateTime<Utc> {
        let window_end = |window: TimeDelta, max: u32| {
            let mut times: Vec<_> = sent.iter().map(|s| s.at).filter(|at| *at > now - window).collect();
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if times.len() < max {
                return DateTime::<Utc>::MIN_UTC;
            }
            times.sort_unstable();
            // One send must leave the window for each one over the cap, and one more to make room.
            times[times.len() - max] + window
        };
        window_end(TimeDelta::hours(1), self.max_sends_per_hour)
            .max(window_end(TimeDelta::days(1), self.max_sends_per_day))
    }

    /// Checks left after `failed` consecutive failures.
    pub fn attempts_remaining(&self, failed: u32) -> u32 {
        self.max_failed_attempts.saturating_sub(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn sent(at: DateTime<Utc>) -> SentSms {
        SentSms { at, failed: false }
    }

    #[test]
    fn first_send_is_allowed_with_full_allowance() {
        let p = Policy::default();
        let a = p.check_send(&SendHistory::default(), t0()).unwrap();
        assert_eq!(a.sends_remaining, 4);
        assert_eq!(a.resend_available_at, t0() + TimeDelta::seconds(30));
    }

    #[test]
    fn cooldown_refuses_until_it_ends() {
        let p = Policy::default();
        let h = SendHistory { locked_until: None, sent: vec![sent(t0())] };
        let retry_at = t0() + TimeDelta::seconds(30);
        assert_eq!(p.check_send(&h, t0() + TimeDelta::seconds(29)), Err(SendRefusal::Cooldown { retry_at }));
        assert!(p.check_send(&h, retry_at).is_ok());
    }

    #[test]
    fn failed_send_starts_no_cooldown_but_counts() {
        let p = Policy::default();
        let h = SendHistory { locked_until: None, sent: vec![SentSms { at: t0(), failed: true }] };
        let a = p.check_send(&h, t0() + TimeDelta::seconds(1)).unwrap();
        assert_eq!(a.sends_remaining, 3);
    }

    #[test]
    fn hourly_cap_refuses_until_the_oldest_send_leaves_the_window() {
        let p = Policy::default();
        let sent: Vec<_> = (0..5).map(|i| sent(t0() + TimeDelta::minutes(i))).collect();
        let h = SendHistory { locked_until: None, sent };
        let now = t0() + TimeDelta::minutes(10);
        assert_eq!(p.check_send(&h, now), Err(SendRefusal::Limit { retry_at: t0() + TimeDelta::hours(1) }));
        assert!(p.check_send(&h, t0() + TimeDelta::hours(1)).is_ok());
    }

    #[test]
    fn daily_cap_holds_across_hours() {
        let p = Policy::default();
        let sent: Vec<_> = (0..10).map(|i| sent(t0() + TimeDelta::hours(i))).collect();
        let h = SendHistory { locked_until: None, sent };
        let now = t0() + TimeDelta::hours(12);
        assert_eq!(p.check_send(&h, now), Err(SendRefusal::Limit { retry_at: t0() + TimeDelta::days(1) }));
    }

    #[test]
    fn last_send_under_the_cap_reports_when_the_next_is_possible() {
        let p = Policy::default();
        let sent: Vec<_> = (0..4).map(|i| sent(t0() + TimeDelta::minutes(i))).collect();
        let h = SendHistory { locked_until: None, sent };
        let a = p.check_send(&h, t0() + TimeDelta::minutes(5)).unwrap();
        assert_eq!(a.sends_remaining, 0);
        assert_eq!(a.resend_available_at, t0() + TimeDelta::hours(1));
    }

    #[test]
    fn lock_wins_and_expires() {
        let p = Policy::default();
        let until = t0() + TimeDelta::hours(24);
        let h = SendHistory { locked_until: Some(until), sent: vec![] };
        assert_eq!(p.check_send(&h, t0()), Err(SendRefusal::Locked { until }));
        assert!(p.check_send(&h, until).is_ok());
    }
}
