//! The pumping guard's rule (issue 18 §2), as a pure function of the shared figures and the time, so that every
//! replica reading the same rows at the same moment reaches the same decision.
//!
//! SMS pumping sends codes to ranges of numbers that never verify. Per destination prefix (and per country), the
//! store keeps sends and approvals in time buckets; the guard sums them over a short and a long window. A scope
//! with at least V sends in a window whose conversion (approvals ÷ sends) is below C is guarded. Every refusal
//! carries the figures that tripped it, and an admin can exempt or block a prefix until a time.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};

/// How many buckets make the short window: the guard's figures move in steps of a twelfth of it.
pub const BUCKETS_PER_SHORT_WINDOW: i64 = 12;
/// A country's volume threshold is this many times a prefix's: a country holds many prefixes.
pub const COUNTRY_FACTOR: u32 = 10;

/// `--pumping-guard`: what the guard does with its decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// Nothing counted, nothing decided.
    Off,
    /// Decides and records as `enforce` would (metric, log line), refuses nothing.
    Shadow,
    /// Refuses sends to a guarded prefix or country.
    Enforce,
}

impl GuardMode {
    /// The name on the command line and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardMode::Off => "off",
            GuardMode::Shadow => "shadow",
            GuardMode::Enforce => "enforce",
        }
    }
}

impl FromStr for GuardMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(GuardMode::Off),
            "shadow" => Ok(GuardMode::Shadow),
            "enforce" => Ok(GuardMode::Enforce),
            _ => Err("must be off, shadow or enforce".into()),
        }
    }
}

impl fmt::Display for GuardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A window and the sends it needs before its conversion counts: `1h:50`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardWindow {
    /// How far back the window looks.
    pub length: TimeDelta,
    /// V: the fewest sends in the window for the guard to judge its conversion.
    pub min_sends: u32,
}

impl FromStr for GuardWindow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a window: write DURATION:SENDS, e.g. 1h:50");
        let (length, sends) = s.trim().split_once(':').ok_or_else(bad)?;
        let length: humantime::Duration = length.trim().parse().map_err(|_| bad())?;
        let min_sends: u32 = sends.trim().parse().map_err(|_| bad())?;
        let length = TimeDelta::from_std(*length).map_err(|_| bad())?;
        if min_sends == 0 || length < TimeDelta::minutes(1) || length > TimeDelta::days(2) {
            return Err(format!("`{s}`: the window must be between 1m and 48h, and the sends at least 1"));
        }
        Ok(Self { length, min_sends })
    }
}

impl fmt::Display for GuardWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let std = self.length.to_std().unwrap_or_default();
        write!(f, "{}:{}", humantime::format_duration(std), self.min_sends)
    }
}

/// The guard's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardPolicy {
    /// Off, shadow or enforce.
    pub mode: GuardMode,
    /// The short window: catches a burst within the hour.
    pub short: GuardWindow,
    /// The long window: catches a slow drip the short one never sees.
    pub long: GuardWindow,
    /// C, in percent: a window converting below it (with enough sends) guards its scope.
    pub min_conversion_pct: u32,
    /// Digits of the E.164 number that make a prefix (`--prefix-digits`).
    pub prefix_digits: usize,
}

impl GuardPolicy {
    /// The defaults: shadow; 1h:50 and 24h:200; 35%.
    pub fn defaults(prefix_digits: usize) -> Self {
        Self {
            mode: GuardMode::Shadow,
            short: GuardWindow { length: TimeDelta::hours(1), min_sends: 50 },
            long: GuardWindow { length: TimeDelta::hours(24), min_sends: 200 },
            min_conversion_pct: 35,
            prefix_digits,
        }
    }

    /// Checks that the windows fit together: the long one longer than the short one.
    pub fn validate(&self) -> Result<(), String> {
        if self.long.length <= self.short.length {
            return Err("the long window must be longer than the short one".into());
        }
        if !(1..=99).contains(&self.min_conversion_pct) {
            return Err("the conversion must be between 1 and 99 (percent)".into());
        }
        Ok(())
    }

    /// How wide one bucket of counts is, in milliseconds.
    pub fn bucket_ms(&self) -> i64 {
        (self.short.length.num_milliseconds() / BUCKETS_PER_SHORT_WINDOW).max(1)
    }

    /// The start of the bucket `at` falls in.
    pub fn bucket(&self, at: DateTime<Utc>) -> i64 {
        let width = self.bucket_ms();
        at.timestamp_millis().div_euclid(width) * width
    }

    /// The first bucket a window of `length` ending at `now` holds (the current bucket and the ones before it).
    pub fn window_start(&self, length: TimeDelta, now: DateTime<Utc>) -> i64 {
        let width = self.bucket_ms();
        let buckets = (length.num_milliseconds() + width - 1) / width;
        self.bucket(now) - (buckets - 1) * width
    }

    /// When the figures next move without a new send: the next bucket boundary, when the oldest bucket leaves
    /// each window. What `RetryInfo` tells a refused caller.
    pub fn next_evaluation(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.bucket(now) + self.bucket_ms()).unwrap_or(now)
    }

    /// The destination prefix of `e164` (its first `prefix_digits` digits).
    pub fn prefix_of(&self, e164: &str) -> String {
        e164.chars().filter(char::is_ascii_digit).take(self.prefix_digits).collect()
    }

    /// The decision for a send at `now` from the figures read from the shared store.
    pub fn decide(&self, figures: &GuardFigures, now: DateTime<Utc>) -> Verdict {
        if let Some(o) = figures.override_.as_ref().filter(|o| o.until > now) {
            return match o.action {
                OverrideAction::Exempt => Verdict::Exempt(o.clone()),
                OverrideAction::Block => Verdict::Blocked(o.clone()),
            };
        }
        let scopes = [(Scope::Prefix, &figures.prefix, 1), (Scope::Country, &figures.country, COUNTRY_FACTOR)];
        for (scope, counts, factor) in scopes {
            for (window, window_counts) in [(self.short, counts.short), (self.long, counts.long)] {
                let min_sends = u64::from(window.min_sends.saturating_mul(factor));
                let low = window_counts.approvals * 100 < u64::from(self.min_conversion_pct) * window_counts.sends;
                if window_counts.sends >= min_sends && low {
                    return Verdict::Guarded(Trip {
                        scope,
                        key: counts.key.clone(),
                        window: window.length,
                        sends: window_counts.sends,
                        approvals: window_counts.approvals,
                        min_sends,
                        min_conversion_pct: self.min_conversion_pct,
                    });
                }
            }
        }
        Verdict::Clear
    }
}

/// Sends and approvals in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// SMS handed to a provider.
    pub sends: u64,
    /// Verifications approved.
    pub approvals: u64,
}

impl Counts {
    /// Approvals ÷ sends, in whole percent (100 with no sends).
    pub fn conversion_pct(&self) -> u64 {
        (self.approvals * 100).checked_div(self.sends).unwrap_or(100)
    }
}

/// One scope's figures over both windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeCounts {
    /// The key's value: the prefix's digits, or the country's calling code.
    pub key: String,
    /// Over the short window.
    pub short: Counts,
    /// Over the long window.
    pub long: Counts,
}

/// What the guard reads for one send: its prefix's and its country's figures, and an admin's override.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardFigures {
    /// The destination prefix.
    pub prefix: ScopeCounts,
    /// The destination's country.
    pub country: ScopeCounts,
    /// An admin's exemption or block of the prefix (possibly expired).
    pub override_: Option<Override>,
}

/// What the guard watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A destination prefix (`--prefix-digits` digits of the E.164 number).
    Prefix,
    /// A country calling code.
    Country,
}

impl Scope {
    /// The name in metadata, metrics and the store's keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Prefix => "prefix",
            Scope::Country => "country",
        }
    }
}

/// The figures that guarded a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    /// Prefix or country.
    pub scope: Scope,
    /// The prefix's digits or the calling code.
    pub key: String,
    /// The window that tripped.
    pub window: TimeDelta,
    /// Its sends.
    pub sends: u64,
    /// Its approvals.
    pub approvals: u64,
    /// V for this scope and window.
    pub min_sends: u64,
    /// C.
    pub min_conversion_pct: u32,
}

impl Trip {
    /// For people: "prefix 8210123: 200 sends, 0 approved (0%) in 1h; guarded at 50 sends below 35%".
    pub fn explain(&self) -> String {
        let window = humantime::format_duration(self.window.to_std().unwrap_or_default());
        let counts = Counts { sends: self.sends, approvals: self.approvals };
        format!(
            "{} {}: {} sends, {} approved ({}%) in {window}; guarded at {} sends below {}%",
            self.scope.as_str(),
            self.key,
            self.sends,
            self.approvals,
            counts.conversion_pct(),
            self.min_sends,
            self.min_conversion_pct
        )
    }
}

/// An admin's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideAction {
    /// Never guarded until the time.
    Exempt,
    /// Every send refused until the time.
    Block,
}

impl OverrideAction {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideAction::Exempt => "exempt",
            OverrideAction::Block => "block",
        }
    }

    /// The inverse of [`Self::as_str`].
    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "exempt" => Some(OverrideAction::Exempt),
            "block" => Some(OverrideAction::Block),
            _ => None,
        }
    }
}

/// An admin's exemption or block of a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Exempt or block.
    pub action: OverrideAction,
    /// Until when.
    pub until: DateTime<Utc>,
    /// The ticket it was set under.
    pub ticket_id: String,
    /// Why.
    pub reason: String,
    /// Who set it.
    pub set_by: String,
    /// When.
    pub set_at: DateTime<Utc>,
}

/// The guard's decision for one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing tripped.
    Clear,
    /// An admin exempted the prefix.
    Exempt(Override),
    /// A scope tripped.
    Guarded(Trip),
    /// An admin blocked the prefix.
    Blocked(Override),
}

impl Verdict {
    /// Whether a send would be refused in enforce mode.
    pub fn refuses(&self) -> bool {
        matches!(self, Verdict::Guarded(_) | Verdict::Blocked(_))
    }

    /// The metric's label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Clear => "clear",
            Verdict::Exempt(_) => "exempt",
            Verdict::Guarded(_) => "guarded",
            Verdict::Blocked(_) => "blocked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(sends: u64, approvals: u64) -> GuardFigures {
        let counts = Counts { sends, approvals };
        GuardFigures {
            prefix: ScopeCounts { key: "8210123".into(), short: counts, long: counts },
            country: ScopeCounts { key: "82".into(), short: counts, long: counts },
            override_: None,
        }
    }

    #[test]
    fn the_issue_s_two_cases_hold_with_the_defaults() {
        let policy = GuardPolicy::defaults(7);
        let now = Utc::now();
        // 200 sends within an hour and no approval at all: guarded.
        assert!(policy.decide(&figures(200, 0), now).refuses());
        // Converting 70%: never, whatever the volume.
        for sends in [10, 50, 200, 1_000, 100_000] {
            assert_eq!(policy.decide(&figures(sends, sends * 7 / 10), now), Verdict::Clear, "{sends}");
        }
        // Below V nothing is judged.
        assert_eq!(policy.decide(&figures(49, 0), now), Verdict::Clear);
        let Verdict::Guarded(trip) = policy.decide(&figures(50, 0), now) else { panic!() };
        assert_eq!((trip.scope, trip.sends, trip.min_sends), (Scope::Prefix, 50, 50));
        assert!(trip.explain().starts_with("prefix 8210123: 50 sends, 0 approved (0%) in 1h"), "{}", trip.explain());
    }

    #[test]
    fn an_override_wins_until_it_ends() {
        let policy = GuardPolicy::defaults(7);
        let now = Utc::now();
        let mut f = figures(500, 0);
        let o = Override {
            action: OverrideAction::Exempt,
            until: now + TimeDelta::hours(1),
            ticket_id: "T-1".into(),
            reason: "campaign".into(),
            set_by: "park".into(),
            set_at: now,
        };
        f.override_ = Some(o.clone());
        assert!(matches!(policy.decide(&f, now), Verdict::Exempt(_)));
        assert!(policy.decide(&f, now + TimeDelta::hours(1)).refuses(), "ended: the figures decide again");
        f = figures(0, 0);
        f.override_ = Some(Override { action: OverrideAction::Block, ..o });
        assert!(matches!(policy.decide(&f, now), Verdict::Blocked(_)));
    }

    #[test]
    fn buckets_and_windows_line_up() {
        let policy = GuardPolicy::defaults(7);
        assert_eq!(policy.bucket_ms(), 300_000);
        let now = DateTime::from_timestamp_millis(1_000_000_123).unwrap();
        let bucket = policy.bucket(now);
        assert_eq!(bucket % 300_000, 0);
        assert_eq!(policy.window_start(TimeDelta::hours(1), now), bucket - 11 * 300_000);
        assert_eq!(policy.next_evaluation(now).timestamp_millis(), bucket + 300_000);
        assert_eq!("1h:50".parse::<GuardWindow>().unwrap(), policy.short);
        assert!("1h".parse::<GuardWindow>().is_err());
        assert!("1h:0".parse::<GuardWindow>().is_err());
        assert_eq!(policy.prefix_of("+821012345678"), "8210123");
    }
}
