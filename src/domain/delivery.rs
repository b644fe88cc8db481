//! Delivery channels and what became of each attempt: a send tries the channels of `--delivery` in order (e.g.
//! KakaoTalk AlimTalk, then SMS) with the one code, and records every attempt, then what the carrier reported.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A way to the driver's phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryChannel {
    /// A KakaoTalk AlimTalk (알림톡) authentication template.
    AlimTalk,
    /// An SMS from the registered sender.
    Sms,
}

impl DeliveryChannel {
    /// The name in settings and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryChannel::AlimTalk => "alimtalk",
            DeliveryChannel::Sms => "sms",
        }
    }

    /// The channel a stored name means.
    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "alimtalk" => Some(DeliveryChannel::AlimTalk),
            "sms" => Some(DeliveryChannel::Sms),
            _ => None,
        }
    }
}

impl fmt::Display for DeliveryChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who carries a route: the provider whose API it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteProvider {
    /// The gateway `--sms-gateway` names (whatever it is: a provider, `http:`, `file:` or `log`); only for `sms`.
    SmsGateway,
    /// NHN Cloud (SMS: the authentication SMS API; AlimTalk: KakaoTalk Bizmessage).
    Nhn,
    /// Naver Cloud SENS (SMS).
    Sens,
    /// Solapi (SMS).
    Solapi,
}

/// One route of `--delivery`: a channel on a provider (`alimtalk@nhn`, `sms@sens`, or `sms` for the gateway of
/// `--sms-gateway`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryRoute {
    /// The channel.
    pub channel: DeliveryChannel,
    /// The provider.
    pub provider: RouteProvider,
}

impl fmt::Display for DeliveryRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.provider {
            RouteProvider::SmsGateway => f.write_str(self.channel.as_str()),
            RouteProvider::Nhn => write!(f, "{}@nhn", self.channel),
            RouteProvider::Sens => write!(f, "{}@sens", self.channel),
            RouteProvider::Solapi => write!(f, "{}@solapi", self.channel),
        }
    }
}

/// The label of the route an attempt took, from its channel and the gateway that spoke to the provider
/// (`sms` + `nhn-sms` is `sms@nhn`): what metrics, logs, the status view and `otpctl doctor` call it.
pub fn route_label(channel: DeliveryChannel, gateway: &str) -> String {
    let provider = match gateway {
        "nhn-sms" | "nhn-alimtalk" => "nhn",
        other => other,
    };
    format!("{channel}@{provider}")
}

/// The ordered routes of `--delivery`: at least one, none twice. `alimtalk,sms` is short for `alimtalk@nhn`
/// and the `--sms-gateway` one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRoutes(Vec<DeliveryRoute>);

impl DeliveryRoutes {
    /// The routes, in the order they are tried.
    pub fn iter(&self) -> impl Iterator<Item = DeliveryRoute> + '_ {
        self.0.iter().copied()
    }

    /// Whether a route uses `channel`.
    pub fn contains(&self, channel: DeliveryChannel) -> bool {
        self.0.iter().any(|r| r.channel == channel)
    }
}

impl Default for DeliveryRoutes {
    fn default() -> Self {
        Self(vec![DeliveryRoute { channel: DeliveryChannel::Sms, provider: RouteProvider::SmsGateway }])
    }
}

impl FromStr for DeliveryRoutes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut routes = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let (channel, provider) = match name.split_once('@') {
                Some((channel, provider)) => (channel, Some(provider)),
                None => (name, None),
            };
            let channel = DeliveryChannel::from_db(channel)
                .ok_or_else(|| format!("`{name}` is not a route: use alimtalk[@nhn] or sms[@nhn|@sens|@solapi]"))?;
            let provider = match (channel, provider) {
                (DeliveryChannel::Sms, None) => RouteProvider::SmsGateway,
                (DeliveryChannel::AlimTalk, None | Some("nhn")) | (DeliveryChannel::Sms, Some("nhn")) => {
                    RouteProvider::Nhn
                }
                (DeliveryChannel::Sms, Some("sens")) => RouteProvider::Sens,
                (DeliveryChannel::Sms, Some("solapi")) => RouteProvider::Solapi,
                (DeliveryChannel::AlimTalk, Some(_)) => {
                    return Err(format!("`{name}`: AlimTalk goes through nhn (alimtalk@nhn)"));
                }
                (DeliveryChannel::Sms, Some(_)) => {
                    return Err(format!("`{name}`: an SMS provider is nhn, sens or solapi"));
                }
            };
            let route = DeliveryRoute { channel, provider };
            if routes.contains(&route) {
                return Err(format!("`{name}` is listed twice"));
            }
            routes.push(route);
        }
        if routes.is_empty() {
            return Err("name at least one route (alimtalk@nhn, sms@nhn, sms@sens, sms@solapi, sms)".into());
        }
        Ok(Self(routes))
    }
}

impl fmt::Display for DeliveryRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&names.join(","))
    }
}

/// One past attempt to reach a number, as the route choice reads it (`delivery_attempts` of its codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastAttempt {
    /// The code it carried (the newest code is the last send).
    pub code_id: i64,
    /// The route's label (`sms@nhn`).
    pub route: String,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// What the provider did.
    pub outcome: AttemptOutcome,
    /// The carrier's receipt: delivered (true) or failed (false); None when none came.
    pub delivered: Option<bool>,
    /// The carrier's result code of a failed receipt.
    pub receipt_code: Option<String>,
}

/// Why a route is tried after the others for this send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Demotion {
    /// Its newest verdict for the number within `--route-memory`: a failed receipt (blocked as spam,
    /// undeliverable), with the carrier's code, or the provider refused the number.
    FailedForNumber { code: Option<String> },
    /// It accepted the last send and produced no receipt within `--receipt-wait`.
    NoReceipt,
}

/// The order to offer the next code in (DESIGN: delivery, issue 22 section 4): the routes that did not fail for
/// the number keep their configured order and go first; a route whose newest verdict for the number (within the
/// memory `history` covers) was a failed receipt or a refusal, and the route that accepted the last send without a
/// receipt for `receipt_wait`, go after them, in configured order, so that a send still has every route. Only the
/// order changes: caps, cooldown and lockout are decided before, and one code still goes out once.
pub fn route_order(
    routes: &[String],
    history: &[PastAttempt],
    now: DateTime<Utc>,
    receipt_wait: chrono::TimeDelta,
) -> Vec<(usize, Option<Demotion>)> {
    let demotion = |route: &str| -> Option<Demotion> {
        // Newest first: the first verdict decides.
        for attempt in history.iter().rev().filter(|a| a.route == route) {
            match (attempt.outcome, attempt.delivered) {
                (_, Some(true)) => return None,
                (_, Some(false)) => return Some(Demotion::FailedForNumber { code: attempt.receipt_code.clone() }),
                (AttemptOutcome::Refused, None) => return Some(Demotion::FailedForNumber { code: None }),
                // No verdict: a provider outage is the breaker's business, an accepted one is still out.
                (AttemptOutcome::Accepted | AttemptOutcome::Failed | AttemptOutcome::Unconfirmed, None) => {}
            }
        }
        None
    };
    let last_code = history.iter().map(|a| a.code_id).max();
    let silent = history.iter().find(|a| {
        Some(a.code_id) == last_code
            && matches!(a.outcome, AttemptOutcome::Accepted | AttemptOutcome::Unconfirmed)
            && a.delivered.is_none()
            && now - a.at >= receipt_wait
    });
    let mut order: Vec<(usize, Option<Demotion>)> = routes
        .iter()
        .enumerate()
        .map(|(i, route)| {
            let why = demotion(route).or_else(|| silent.filter(|a| a.route == *route).map(|_| Demotion::NoReceipt));
            (i, why)
        })
        .collect();
    // A stable sort: the routes that did not fail keep their order, then the ones that did.
    order.sort_by_key(|(_, why)| why.is_some());
    order
}

/// What a provider did with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Taken by the provider: the carrier's receipt may follow.
    Accepted,
    /// Refused by the provider (not retried).
    Refused,
    /// The provider failed (after the retries).
    Failed,
    /// Handed over; the caller's deadline ended the wait for the answer.
    Unconfirmed,
}

impl AttemptOutcome {
    /// The name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Accepted => "accepted",
            AttemptOutcome::Refused => "refused",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Unconfirmed => "unconfirmed",
        }
    }

    /// The outcome a stored name means.
    pub fn from_db(s: &str) -> Option<Self> {
        [Self::Accepted, Self::Refused, Self::Failed, Self::Unconfirmed].into_iter().find(|o| o.as_str() == s)
    }
}

/// Why an attempt was not accepted, as far as otpd can tell (the provider's own text stays in the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptReason {
    /// The channel's circuit breaker was open (the provider kept failing): the provider was not called.
    CircuitOpen,
    /// The provider failed: no connection, no answer in time, or a server error after the retries.
    ProviderDown,
    /// The provider refused the message (the number, sender, template or credentials): not retried.
    ProviderRefused,
    /// Handed over, but the caller's deadline ended the wait for the answer.
    NoAnswer,
}

impl AttemptReason {
    /// The name in the database and in GetPhoneStatus.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptReason::CircuitOpen => "circuit_open",
            AttemptReason::ProviderDown => "provider_down",
            AttemptReason::ProviderRefused => "provider_refused",
            AttemptReason::NoAnswer => "no_answer",
        }
    }

    /// The reason a stored name means.
    pub fn from_db(s: &str) -> Option<Self> {
        [Self::CircuitOpen, Self::ProviderDown, Self::ProviderRefused, Self::NoAnswer]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// What a team lead reads (Korean, then English), after "발송 실패: ".
    pub fn words(self) -> (&'static str, &'static str) {
        match self {
            AttemptReason::CircuitOpen => ("문자 발송 업체 장애", "SMS provider outage (breaker open)"),
            AttemptReason::ProviderDown => ("문자 발송 업체 장애", "SMS provider outage"),
            AttemptReason::ProviderRefused => ("발송 업체가 거절", "refused by the provider"),
            AttemptReason::NoAnswer => ("결과 미수신", "no answer in time"),
        }
    }
}

/// One channel's attempt to carry a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// The channel.
    pub channel: DeliveryChannel,
    /// The gateway that spoke to the provider (`nhn-alimtalk`, `nhn-sms`, `sens`, `solapi`, `http`, …).
    pub gateway: &'static str,
    /// When the provider answered (or the attempt ended).
    pub at: DateTime<Utc>,
    /// What it came to.
    pub outcome: AttemptOutcome,
    /// The provider's message or request id (receipts name it).
    pub provider_id: Option<String>,
    /// Why it was not accepted; None for an accepted attempt.
    pub reason: Option<AttemptReason>,
}

/// How far a provider's clock may be from ours: a receipt is taken only if it is dated no earlier than its
/// attempt and no later than now, each within this much.
pub const RECEIPT_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// What became of a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// It is now the attempt's result.
    Recorded,
    /// The attempt is known, but the receipt changes nothing: the stored one is as new or newer (a replay, or an
    /// older receipt arriving late), or it is dated before the attempt was made.
    Superseded,
    /// No accepted attempt has that provider id.
    Unknown,
}

/// What the carrier reported for an accepted attempt (a delivery receipt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Delivered to the phone, or given up on.
    pub delivered: bool,
    /// When the carrier delivered it or gave up.
    pub at: DateTime<Utc>,
    /// The provider's result code (why it failed), when it gives one.
    pub code: Option<String>,
}

/// One attempt as the status view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptStatus {
    /// The attempt.
    pub attempt: DeliveryAttempt,
    /// The carrier's receipt, if one came.
    pub receipt: Option<Receipt>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_lists_parse_in_order_without_repeats() {
        let list: DeliveryRoutes = "alimtalk, sms".parse().unwrap();
        let routes: Vec<String> = list.iter().map(|r| r.to_string()).collect();
        assert_eq!(routes, ["alimtalk@nhn", "sms"], "today's form: AlimTalk on NHN, then the --sms-gateway");
        let list: DeliveryRoutes = "alimtalk@nhn,sms@nhn,sms@sens,sms@solapi".parse().unwrap();
        assert_eq!(list.to_string(), "alimtalk@nhn,sms@nhn,sms@sens,sms@solapi");
        assert!("sms,sms".parse::<DeliveryRoutes>().is_err());
        assert!("alimtalk,alimtalk@nhn".parse::<DeliveryRoutes>().is_err(), "the same route twice");
        assert!("sms@sens,sms".parse::<DeliveryRoutes>().is_ok(), "the --sms-gateway route is another one");
        assert!("alimtalk@sens".parse::<DeliveryRoutes>().is_err());
        assert!("sms@pigeon".parse::<DeliveryRoutes>().is_err());
        assert!("".parse::<DeliveryRoutes>().is_err());
        assert!("pigeon".parse::<DeliveryRoutes>().is_err());
        assert_eq!(route_label(DeliveryChannel::AlimTalk, "nhn-alimtalk"), "alimtalk@nhn");
        assert_eq!(route_label(DeliveryChannel::Sms, "sens"), "sms@sens");
        for outcome in
            [AttemptOutcome::Accepted, AttemptOutcome::Refused, AttemptOutcome::Failed, AttemptOutcome::Unconfirmed]
        {
            assert_eq!(AttemptOutcome::from_db(outcome.as_str()), Some(outcome));
        }
        for reason in [
            AttemptReason::CircuitOpen,
            AttemptReason::ProviderDown,
            AttemptReason::ProviderRefused,
            AttemptReason::NoAnswer,
        ] {
            assert_eq!(AttemptReason::from_db(reason.as_str()), Some(reason));
        }
        assert_eq!(AttemptReason::CircuitOpen.words().0, "문자 발송 업체 장애", "the issue's words (21, section 5)");
    }

    fn past(code_id: i64, route: &str, secs_ago: i64, outcome: AttemptOutcome, delivered: Option<bool>) -> PastAttempt {
        PastAttempt {
            code_id,
            route: route.into(),
            at: Utc::now() - chrono::TimeDelta::seconds(secs_ago),
            outcome,
            delivered,
            receipt_code: delivered.is_some_and(|d| !d).then(|| "3012".into()),
        }
    }

    #[test]
    fn a_route_that_failed_for_the_number_goes_last_until_it_delivers_again() {
        let routes = ["sms@nhn".to_owned(), "alimtalk@nhn".into(), "sms@sens".into()];
        let wait = chrono::TimeDelta::seconds(30);
        let order = |history: &[PastAttempt]| -> Vec<usize> {
            route_order(&routes, history, Utc::now(), wait).into_iter().map(|(i, _)| i).collect()
        };
        assert_eq!(order(&[]), [0, 1, 2]);
        let blocked = past(1, "sms@nhn", 600, AttemptOutcome::Accepted, Some(false));
        assert_eq!(order(std::slice::from_ref(&blocked)), [1, 2, 0], "3012: the next code starts with AlimTalk");
        let why = route_order(&routes, std::slice::from_ref(&blocked), Utc::now(), wait);
        assert_eq!(why[2].1, Some(Demotion::FailedForNumber { code: Some("3012".into()) }));
        let later = past(2, "sms@nhn", 300, AttemptOutcome::Accepted, Some(true));
        assert_eq!(order(&[blocked.clone(), later]), [0, 1, 2], "it delivered since: forgiven");
        let refused = past(3, "alimtalk@nhn", 200, AttemptOutcome::Refused, None);
        let carried = past(3, "sms@sens", 200, AttemptOutcome::Accepted, Some(true));
        assert_eq!(order(&[blocked, refused, carried]), [2, 0, 1]);
        let down = past(4, "sms@nhn", 100, AttemptOutcome::Failed, None);
        assert_eq!(order(&[down]), [0, 1, 2], "an outage is the breaker's business, not the number's");
    }

    #[test]
    fn the_last_sends_route_without_a_receipt_after_the_wait_lets_the_next_start_elsewhere() {
        let routes = ["sms@nhn".to_owned(), "sms@sens".into()];
        let wait = chrono::TimeDelta::seconds(30);
        let order = |history: &[PastAttempt]| -> Vec<usize> {
            route_order(&routes, history, Utc::now(), wait).into_iter().map(|(i, _)| i).collect()
        };
        assert_eq!(order(&[past(1, "sms@nhn", 10, AttemptOutcome::Accepted, None)]), [0, 1], "still waiting");
        let silent = past(1, "sms@nhn", 40, AttemptOutcome::Accepted, None);
        assert_eq!(order(std::slice::from_ref(&silent)), [1, 0]);
        let next = past(2, "sms@sens", 35, AttemptOutcome::Accepted, None);
        assert_eq!(order(&[silent, next]), [0, 1], "only the last send counts: now SENS was silent");
    }
}
