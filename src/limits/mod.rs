//! Front-line limits with `governor`, checked before any database work or hashing: per client IP on SendCode
//! and VerifyCode, per destination prefix (the SMS-pumping pattern: many numbers of one range), and a global SMS
//! rate for the replica. They live in process memory, so they are per-replica shields; every limit that must
//! hold across replicas is in the store. The limiters run on the service's [`Clock`], so tests move time.
//! What they refuse, and an address that sends for many numbers, is told to the operator by [`notice`].

mod notice;

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::Clock;
use crate::domain::PhoneNumber;
use crate::metrics::{FrontLimit, Metrics};

pub use notice::MANY_NUMBERS;
use notice::{RefusalLog, SharedAddresses};

/// A sustained rate: `N/s`, `N/m` or `N/h`; `off` disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: NonZeroU32,
    per: Duration,
}

impl Rate {
    /// `count` per `per`.
    pub fn new(count: u32, per: Duration) -> Option<Self> {
        NonZeroU32::new(count).filter(|_| !per.is_zero()).map(|count| Self { count, per })
    }

    /// The time one unit of the rate takes: the GCRA emission interval.
    pub fn interval(self) -> Duration {
        (self.per / self.count.get()).max(Duration::from_millis(1))
    }

    fn quota(self, burst: u32) -> Quota {
        let period = self.per / self.count.get();
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .map_or(Quota::per_second(self.count), |q| q.allow_burst(burst))
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a rate: write N/s, N/m or N/h");
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Self::new(count, per).ok_or_else(|| "the count must be at least 1 (use `off` to disable)".into())
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// A rate, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateOrOff(pub Option<Rate>);

impl FromStr for RateOrOff {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("off") { Ok(Self(None)) } else { s.parse().map(|r| Self(Some(r))) }
    }
}

impl fmt::Display for RateOrOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(rate) => rate.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// A limit: a sustained rate and a burst, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The sustained rate; `None` disables the limit.
    pub rate: Option<Rate>,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
}

/// Every front-line limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// SendCode calls per client IP (IPv6: per /64).
    pub send_per_ip: Limit,
    /// VerifyCode calls per client IP (IPv6: per /64).
    pub verify_per_ip: Limit,
    /// SMS per destination prefix.
    pub sms_per_prefix: Limit,
    /// How many leading digits of the E.164 number make the prefix.
    pub prefix_digits: usize,
    /// SMS for the whole replica.
    pub global_sms: Limit,
}

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, LimiterClock, NoOpMiddleware<Nanos>>;
type Direct = RateLimiter<NotKeyed, InMemoryState, LimiterClock, NoOpMiddleware<Nanos>>;

/// governor's view of the service clock.
#[derive(Clone)]
struct LimiterClock(Arc<dyn Clock>);

impl governor::clock::Clock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let nanos = self.0.now().timestamp_nanos_opt().unwrap_or(0);
        Nanos::from(u64::try_from(nanos).unwrap_or(0))
    }
}

/// A front-line limit refused the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Which limit: `client_ip`, `destination_prefix` or `global_sms`.
    pub limit: &'static str,
    /// When a retry can pass.
    pub retry_after: Duration,
}

/// The limiters of one replica.
pub struct FrontLimits {
    send_ip: Option<Keyed<IpAddr>>,
    verify_ip: Option<Keyed<IpAddr>>,
    prefix: Option<Keyed<String>>,
    prefix_digits: usize,
    global: Option<Direct>,
    clock: LimiterClock,
    metrics: Arc<Metrics>,
    shared_addresses: SharedAddresses,
    /// Per limit: client IP (send, verify), destination prefix, replica SMS rate.
    refusal_logs: [RefusalLog; 4],
}

impl FrontLimits {
    /// Limiters for `settings`, on `clock`.
    pub fn new(settings: &LimitSettings, clock: Arc<dyn Clock>) -> Self {
        let clock = LimiterClock(clock);
        fn keyed<K: std::hash::Hash + Eq + Clone>(limit: Limit, clock: &LimiterClock) -> Option<Keyed<K>> {
            limit.rate.map(|r| Keyed::dashmap_with_clock(r.quota(limit.burst), clock.clone()))
        }
        Self {
            send_ip: keyed(settings.send_per_ip, &clock),
            verify_ip: keyed(settings.verify_per_ip, &clock),
            prefix: keyed(settings.sms_per_prefix, &clock),
            prefix_digits: settings.prefix_digits,
            global: settings
                .global_sms
                .rate
                .map(|r| Direct::direct_with_clock(r.quota(settings.global_sms.burst), clock.clone())),
            clock,
            metrics: Arc::default(),
            shared_addresses: SharedAddresses::default(),
            refusal_logs: Default::default(),
        }
    }

    /// Notes a send for `phone` from `client` (as the limits see it): warns once when one address asks for many
    /// numbers, the mark of a backend that does not forward its drivers' addresses.
    pub fn note_send(&self, client: Option<IpAddr>, phone: &PhoneNumber) {
        if let Some(client) = client {
            self.shared_addresses.note(ip_key(client), phone, self.clock.0.now());
        }
    }

    fn refused(&self, limit: FrontLimit, client: Option<IpAddr>) {
        self.metrics.refused(limit);
        let (log, name) = match limit {
            FrontLimit::SendClientIp => (&self.refusal_logs[0], "send_client_ip"),
            FrontLimit::VerifyClientIp => (&self.refusal_logs[1], "verify_client_ip"),
            FrontLimit::DestinationPrefix => (&self.refusal_logs[2], "destination_prefix"),
            FrontLimit::GlobalSms => (&self.refusal_logs[3], "global_sms"),
        };
        log.refused(name, client, self.clock.0.now());
    }

    /// Counts refusals in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// SendCode, before the request is even parsed: the client's IP.
    pub fn check_send_client(&self, client: Option<IpAddr>) -> Result<(), Limited> {
        match client {
            Some(ip) => self.keyed(&self.send_ip, &ip_key(ip), "client_ip"),
            None => Ok(()),
        }
        .inspect_err(|_| self.refused(FrontLimit::SendClientIp, client))
    }

    /// SendCode, once the number is known: its prefix, then the replica's SMS rate.
    pub fn check_send_destination(&self, phone: &PhoneNumber) -> Result<(), Limited> {
        let digits: String = phone.e164().chars().filter(char::is_ascii_digit).take(self.prefix_digits).collect();
        self.keyed(&self.prefix, &digits, "destination_prefix")
            .inspect_err(|_| self.refused(FrontLimit::DestinationPrefix, None))?;
        match &self.global {
            Some(limiter) => limiter.check().map_err(|n| self.limited("global_sms", &n)),
            None => Ok(()),
        }
        .inspect_err(|_| self.refused(FrontLimit::GlobalSms, None))
    }

    /// VerifyCode: the client's IP.
    pub fn check_verify(&self, client: Option<IpAddr>) -> Result<(), Limited> {
        match client {
            Some(ip) => self.keyed(&self.verify_ip, &ip_key(ip), "client_ip"),
            None => Ok(()),
        }
        .inspect_err(|_| self.refused(FrontLimit::VerifyClientIp, client))
    }

    /// Forgets keys whose bucket is full again and releases the memory, keeping the keyed state bounded by
    /// the keys active within one refill period.
    pub fn cleanup(&self) {
        fn clean<K: std::hash::Hash + Eq + Clone>(limiter: &Option<Keyed<K>>) {
            if let Some(limiter) = limiter {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        clean(&self.send_ip);
        clean(&self.verify_ip);
        clean(&self.prefix);
        self.shared_addresses.cleanup(self.clock.0.now());
    }

    /// How many keys the limiters hold.
    pub fn tracked_keys(&self) -> usize {
        self.send_ip.as_ref().map_or(0, Keyed::len)
            + self.verify_ip.as_ref().map_or(0, Keyed::len)
            + self.prefix.as_ref().map_or(0, Keyed::len)
    }

    fn keyed<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &Option<Keyed<K>>,
        key: &K,
        name: &'static str,
    ) -> Result<(), Limited> {
        match limiter {
            Some(limiter) => limiter.check_key(key).map_err(|n| self.limited(name, &n)),
            None => Ok(()),
        }
    }

    fn limited(&self, limit: &'static str, not_until: &governor::NotUntil<Nanos>) -> Limited {
        Limited { limit, retry_after: not_until.wait_time_from(self.clock.now()) }
    }
}

/// How a client address is keyed, here and wherever clients are told apart (the hashing queue's turns): IPv4
/// addresses as they are; IPv6 by their /64 (one subscriber's usual allocation), so rotating addresses within it
/// gains nothing.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::AllowedCountries;
    use chrono::{TimeDelta, Utc};

    fn limit(rate: &str, burst: u32) -> Limit {
        Limit { rate: Some(rate.parse().unwrap()), burst }
    }

    const OFF: Limit = Limit { rate: None, burst: 0 };

    fn phone(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s, &AllowedCountries::default()).unwrap()
    }

    #[test]
    fn rates_parse() {
        assert_eq!("60/h".parse::<Rate>().unwrap(), Rate::new(60, Duration::from_secs(3600)).unwrap());
        assert_eq!("20/s".parse::<Rate>().unwrap().to_string(), "20/s");
        assert!("0/h".parse::<Rate>().is_err());
        assert!("ten/h".parse::<Rate>().is_err());
        assert!("10/d".parse::<Rate>().is_err());
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        assert_eq!(ip_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn burst_then_rate_with_retry_after() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let settings = LimitSettings {
            send_per_ip: limit("60/h", 3),
            verify_per_ip: OFF,
            sms_per_prefix: OFF,
            prefix_digits: 7,
            global_sms: OFF,
        };
        let limits = FrontLimits::new(&settings, clock.clone());
        let ip = Some("192.0.2.1".parse().unwrap());
        let to = phone("010-1234-5678");
        for _ in 0..3 {
            limits.check_send_client(ip).unwrap();
            limits.check_send_destination(&to).unwrap();
        }
        let refused = limits.check_send_client(ip).unwrap_err();
        assert_eq!(refused.limit, "client_ip");
        assert_eq!(refused.retry_after, Duration::from_secs(60));
        limits.check_send_client(Some("192.0.2.2".parse().unwrap())).unwrap();
        clock.advance(TimeDelta::seconds(60));
        limits.check_send_client(ip).unwrap();
    }

    #[test]
    fn prefix_limit_cuts_sends_across_numbers_of_one_range() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let settings = LimitSettings {
            send_per_ip: OFF,
            verify_per_ip: OFF,
            sms_per_prefix: limit("10/h", 10),
            prefix_digits: 7,
            global_sms: OFF,
        };
        let limits = FrontLimits::new(&settings, clock);
        for n in 0..10 {
            limits.check_send_destination(&phone(&format!("010-1234-{n:04}"))).unwrap();
        }
        let refused = limits.check_send_destination(&phone("010-1234-9999")).unwrap_err();
        assert_eq!(refused.limit, "destination_prefix");
        limits.check_send_destination(&phone("010-9876-0000")).unwrap();
    }

    #[test]
    fn hundred_thousand_ips_are_forgotten_after_cleanup() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let settings = LimitSettings {
            send_per_ip: OFF,
            verify_per_ip: limit("360/h", 30),
            sms_per_prefix: OFF,
            prefix_digits: 7,
            global_sms: OFF,
        };
        let limits = FrontLimits::new(&settings, clock.clone());
        for i in 0..100_000u32 {
            limits.check_verify(Some(IpAddr::V4(i.into()))).unwrap();
        }
        assert_eq!(limits.tracked_keys(), 100_000);
        limits.cleanup();
        assert_eq!(limits.tracked_keys(), 100_000, "keys whose bucket is not full again stay");
        // 360/h refills one request per 10 s; once every bucket is full again, no key is distinguishable from a
        // fresh one and the cleanup forgets them all.
        clock.advance(TimeDelta::minutes(6));
        limits.cleanup();
        assert_eq!(limits.tracked_keys(), 0);
    }

    #[test]
    fn every_front_line_limit_counts_its_refusals() {
        let one = Limit { rate: Rate::new(1, Duration::from_secs(3600)), burst: 1 };
        let settings = LimitSettings {
            send_per_ip: one,
            verify_per_ip: one,
            sms_per_prefix: one,
            prefix_digits: 7,
            global_sms: one,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let clock = Arc::new(crate::clock::ManualClock::new(chrono::Utc::now()));
        let limits = FrontLimits::new(&settings, clock).with_metrics(Arc::clone(&metrics));
        let ip = Some("192.0.2.1".parse().unwrap());
        let countries = crate::domain::AllowedCountries::default();
        let phone = |n: &str| crate::domain::PhoneNumber::parse(n, &countries).unwrap();
        for _ in 0..3 {
            let _ = limits.check_send_client(ip);
            let _ = limits.check_verify(ip);
        }
        assert!(limits.check_send_destination(&phone("010-1234-5678")).is_ok());
        assert!(limits.check_send_destination(&phone("010-1234-5679")).is_err(), "the same prefix");
        assert!(limits.check_send_destination(&phone("010-9999-5678")).is_err(), "another prefix, the replica's rate");
        for (limit, n) in
            [("send_client_ip", 2.0), ("verify_client_ip", 2.0), ("destination_prefix", 1.0), ("global_sms", 1.0)]
        {
            let series = format!("otpd_front_line_refusals_total{{limit=\"{limit}\"}}");
            assert_eq!(metrics.sample(&series), Some(n), "{series}");
        }
    }
}
