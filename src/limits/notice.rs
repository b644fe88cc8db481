//! What the front line tells the operator, without flooding the log: refusals at most once a minute per limit
//! (with how many were not logged), and a one-time warning per address when a single client address asks for
//! codes for many different numbers — the sign of a backend whose drivers all arrive from its address and share
//! one address's budget (README: "Behind your backend").

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::PhoneNumber;

/// Distinct numbers from one address within [`TALLY_WINDOW`] that suggest it speaks for many drivers: more than a
/// driver's phone ever asks for (one number, a second when changing it), fewer than the per-IP burst (10), so the
/// warning comes before the limit starts refusing that backend's drivers.
pub const MANY_NUMBERS: usize = 8;
/// How long an address's numbers are remembered.
const TALLY_WINDOW: TimeDelta = TimeDelta::hours(1);
/// Addresses tallied at once: past it new addresses are not tallied until the hourly cleanup (bounded memory
/// whatever a flood of addresses does).
const MAX_ADDRESSES: usize = 10_000;
/// The least time between two log lines about refusals of one limit.
const REFUSAL_LOG_EVERY: TimeDelta = TimeDelta::minutes(1);

struct Tally {
    since: DateTime<Utc>,
    numbers: HashSet<u64>,
    warned: bool,
}

/// Notices addresses that send for many numbers.
#[derive(Default)]
pub struct SharedAddresses {
    tallies: Mutex<HashMap<IpAddr, Tally>>,
}

impl SharedAddresses {
    /// Counts a send for `phone` from `client`; warns once per address when it reaches [`MANY_NUMBERS`]. Returns
    /// whether this call warned.
    pub fn note(&self, client: IpAddr, phone: &PhoneNumber, now: DateTime<Utc>) -> bool {
        let mut tallies = self.tallies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !tallies.contains_key(&client) && tallies.len() >= MAX_ADDRESSES {
            return false;
        }
        let tally =
            tallies.entry(client).or_insert_with(|| Tally { since: now, numbers: HashSet::new(), warned: false });
        if now - tally.since > TALLY_WINDOW && !tally.warned {
            *tally = Tally { since: now, numbers: HashSet::new(), warned: false };
        }
        if tally.warned || tally.numbers.len() >= MANY_NUMBERS {
            return false;
        }
        // A hash, not the number: nothing here needs the number back.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        phone.e164().hash(&mut hasher);
        tally.numbers.insert(hasher.finish());
        if tally.numbers.len() < MANY_NUMBERS {
            return false;
        }
        tally.warned = true;
        tracing::warn!(
            %client,
            numbers = MANY_NUMBERS,
            "one client address is asking for codes for many different numbers within an hour; if it is your \
             backend, forward each driver's address in x-forwarded-for and list the backend in --trusted-proxies, \
             or every driver behind it shares this address's limits (--send-limit-per-ip)"
        );
        true
    }

    /// Forgets tallies older than the window (an address warned about stays warned about until then too).
    pub fn cleanup(&self, now: DateTime<Utc>) {
        let mut tallies = self.tallies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tallies.retain(|_, tally| now - tally.since <= TALLY_WINDOW);
        tallies.shrink_to_fit();
    }
}

/// Logs one limit's refusals at most once per [`REFUSAL_LOG_EVERY`], with the count not logged since.
#[derive(Default)]
pub struct RefusalLog {
    next_ms: AtomicI64,
    unlogged: AtomicU64,
}

impl RefusalLog {
    /// Records a refusal by `limit` of a call from `client`; logs it unless one was logged within the minute.
    /// Returns whether it logged.
    pub fn refused(&self, limit: &'static str, client: Option<IpAddr>, now: DateTime<Utc>) -> bool {
        let now_ms = now.timestamp_millis();
        let next = self.next_ms.load(Ordering::Relaxed);
        let due = now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms + REFUSAL_LOG_EVERY.num_milliseconds(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if !due {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
        match client {
            Some(client) => tracing::warn!(limit, %client, unlogged, "front-line limit refused a call (RATE_LIMITED)"),
            None => tracing::warn!(limit, unlogged, "front-line limit refused a call (RATE_LIMITED)"),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(n: usize) -> PhoneNumber {
        PhoneNumber::parse(&format!("010-1234-{n:04}"), &Default::default()).unwrap()
    }

    #[test]
    fn many_numbers_from_one_address_warn_once() {
        let shared = SharedAddresses::default();
        let (backend, driver) = ("192.0.2.7".parse().unwrap(), "198.51.100.1".parse().unwrap());
        let now = Utc::now();
        let warned: Vec<bool> = (0..20).map(|n| shared.note(backend, &phone(n), now)).collect();
        assert_eq!(warned.iter().filter(|w| **w).count(), 1);
        assert!(warned[MANY_NUMBERS - 1], "at the {MANY_NUMBERS}th number");
        // One number asked for again and again is a driver, not a backend.
        assert!((0..50).all(|_| !shared.note(driver, &phone(1), now)));
        shared.cleanup(now + TimeDelta::hours(2));
        assert!(shared.tallies.lock().unwrap().is_empty());
    }

    #[test]
    fn refusals_are_logged_at_most_once_a_minute() {
        let log = RefusalLog::default();
        let now = Utc::now();
        let logged: Vec<bool> = (0..100).map(|_| log.refused("client_ip", None, now)).collect();
        assert_eq!(logged.iter().filter(|l| **l).count(), 1);
        assert_eq!(log.unlogged.load(Ordering::Relaxed), 99);
        assert!(log.refused("client_ip", None, now + TimeDelta::seconds(61)));
        assert_eq!(log.unlogged.load(Ordering::Relaxed), 0, "the count went out with the line");
    }
}
