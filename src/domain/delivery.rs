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

/// The ordered channels of `--delivery`: at least one, none twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryChannels(Vec<DeliveryChannel>);

impl DeliveryChannels {
    /// The channels, in the order they are tried.
    pub fn iter(&self) -> impl Iterator<Item = DeliveryChannel> + '_ {
        self.0.iter().copied()
    }

    /// Whether the list has `channel`.
    pub fn contains(&self, channel: DeliveryChannel) -> bool {
        self.0.contains(&channel)
    }
}

impl Default for DeliveryChannels {
    fn default() -> Self {
        Self(vec![DeliveryChannel::Sms])
    }
}

impl FromStr for DeliveryChannels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut channels = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let channel = DeliveryChannel::from_db(name)
                .ok_or_else(|| format!("`{name}` is not a channel: use alimtalk or sms"))?;
            if channels.contains(&channel) {
                return Err(format!("`{name}` is listed twice"));
            }
            channels.push(channel);
        }
        if channels.is_empty() {
            return Err("name at least one channel (alimtalk, sms)".into());
        }
        Ok(Self(channels))
    }
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
    fn channel_lists_parse_in_order_without_repeats() {
        let list: DeliveryChannels = "alimtalk, sms".parse().unwrap();
        assert_eq!(list.iter().collect::<Vec<_>>(), [DeliveryChannel::AlimTalk, DeliveryChannel::Sms]);
        assert!("sms,sms".parse::<DeliveryChannels>().is_err());
        assert!("".parse::<DeliveryChannels>().is_err());
        assert!("pigeon".parse::<DeliveryChannels>().is_err());
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
}
