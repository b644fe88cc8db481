//! Carrying one code to the driver over the channels of `--delivery`, in order: the next channel is tried when
//! one refuses or fails, within the caller's deadline, and every attempt is kept for the record. Each channel is
//! its own gateway, so each has its own breaker. One code per send, whichever channel carries it.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{AttemptOutcome, AttemptReason, DeliveryAttempt, DeliveryChannel};
use crate::sms::{Deadline, Delivery, MessageKind, SmsError, SmsMessage};

use super::VerificationService;

/// How long past its deadline a gateway is waited for before it is abandoned.
const GATEWAY_GRACE: Duration = Duration::from_millis(50);

pub use crate::sms::Channels;

impl VerificationService {
    /// How long every channel would refuse a send at once (all breakers open); None when one may go out.
    pub(super) fn channels_refusing_for(&self) -> Option<Duration> {
        self.channels()
            .iter()
            .map(|(_, gateway)| gateway.refusing_for())
            .try_fold(Duration::MAX, |shortest, open| open.map(|open| shortest.min(open)))
    }

    /// Each channel with its gateway's name and provider (`host:port`), for the record of a send none of them
    /// was asked to carry.
    pub(super) fn channels_for_record(&self) -> Vec<(DeliveryChannel, &'static str, Option<String>)> {
        self.channels().iter().map(|(channel, gateway)| (*channel, gateway.name(), gateway.endpoint())).collect()
    }

    fn channels(&self) -> Channels {
        let this = &self.inner;
        if this.channels.is_empty() {
            vec![(DeliveryChannel::Sms, Arc::clone(&this.gateway))]
        } else {
            this.channels.clone()
        }
    }

    /// Offers `message` to each channel in turn until one takes it. The error is the last provider's answer, or
    /// when no channel reached a provider, why not (so that the send can be withdrawn).
    pub(super) async fn deliver(
        &self,
        message: &SmsMessage,
        deadline: Deadline,
    ) -> (Result<Delivery, SmsError>, Vec<DeliveryAttempt>) {
        self.deliver_over(self.channels(), message, deadline).await
    }

    /// A lookup notice (never a code) to `phone` over the channels of `--delivery` that carry notices, in order
    /// (AlimTalk with its notice template, then SMS), within `--sms-timeout`, charged to the per-destination and
    /// per-replica SMS limits but not to the number's hourly and daily caps (no code row). Recorded for the status
    /// view; never fails the lookup that caused it.
    pub async fn send_notice(&self, phone: &crate::domain::PhoneNumber, text: &str) -> crate::store::NoticeStatus {
        let this = &self.inner;
        let record = |outcome: &str, gateway: Option<&str>, provider_id: Option<String>| crate::store::NoticeStatus {
            sent_at: this.clock.now(),
            outcome: outcome.to_owned(),
            gateway: gateway.map(str::to_owned),
            provider_id,
        };
        let channels: crate::sms::Channels =
            self.channels().into_iter().filter(|(_, gateway)| gateway.carries(MessageKind::Notice)).collect();
        let status = if this.test_numbers.code_for(phone, this.policy.code_length).is_some() {
            tracing::info!(%phone, "lookup notice: test number, not sent");
            record("not_sent", None, None)
        } else if let Err(limited) = this.limits.check_send_destination(phone) {
            tracing::warn!(%phone, limit = limited.limit, "lookup notice held back by an SMS limit");
            record("not_sent", None, None)
        } else if channels.is_empty() {
            tracing::warn!(%phone, "lookup notice not sent: no channel in --delivery carries it");
            record("not_sent", None, None)
        } else {
            let reference = crate::domain::VerificationId::new();
            let message = SmsMessage {
                kind: MessageKind::Notice,
                to: phone.clone(),
                from: this.sender.clone(),
                body: secrecy::SecretString::from(text.to_owned()),
                code: secrecy::SecretString::from(String::new()),
                verification_id: reference,
                sent_at: this.clock.now(),
                idempotency_key: format!("notice-{reference}"),
            };
            let deadline = Deadline { at: tokio::time::Instant::now() + this.delivery_timeout, callers: false };
            let (result, attempts) = self.deliver_over(channels, &message, deadline).await;
            let gateway = attempts.last().map(|a| a.gateway);
            match result {
                Ok(delivery) => record("accepted", gateway, delivery.message_id),
                Err(error) => {
                    tracing::warn!(%phone, error = %error, "lookup notice not delivered");
                    let outcome = match (&error, attempts.last()) {
                        (_, Some(attempt)) => attempt.outcome.as_str(),
                        _ => "not_sent",
                    };
                    record(outcome, gateway, None)
                }
            }
        };
        if let Err(error) = this.store.record_notice(phone, &status).await {
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), "recording a lookup notice failed");
        }
        tracing::info!(%phone, outcome = %status.outcome, "lookup notice");
        status
    }

    async fn deliver_over(
        &self,
        channels: Channels,
        message: &SmsMessage,
        deadline: Deadline,
    ) -> (Result<Delivery, SmsError>, Vec<DeliveryAttempt>) {
        let mut attempts = Vec::new();
        let mut last: Option<SmsError> = None;
        for (channel, gateway) in channels {
            if tokio::time::Instant::now() >= deadline.at {
                break;
            }
            // The gateway ends by `deadline` itself; this bound only catches one that does not.
            let result = tokio::time::timeout_at(deadline.at + GATEWAY_GRACE, gateway.send(message, deadline))
                .await
                .unwrap_or_else(|_| Err(SmsError::Unavailable("the gateway overran its deadline".into())));
            let attempt = |outcome, provider_id, reason| DeliveryAttempt {
                channel,
                gateway: gateway.name(),
                at: self.inner.clock.now(),
                outcome,
                provider_id,
                reason,
            };
            // Where the provider is (host:port, never a path, which may hold a key) and why: never the message.
            let endpoint = gateway.endpoint().unwrap_or_else(|| "-".into());
            match result {
                Ok(delivery) => {
                    attempts.push(attempt(AttemptOutcome::Accepted, delivery.message_id.clone(), None));
                    return (Ok(delivery), attempts);
                }
                Err(error @ SmsError::Unconfirmed(_)) => {
                    // It may still arrive: a second channel now would only race it.
                    tracing::warn!(
                        %channel,
                        gateway = gateway.name(),
                        provider = %endpoint,
                        reason = "no_answer",
                        error = %error,
                        "delivery unconfirmed before the deadline"
                    );
                    attempts.push(attempt(AttemptOutcome::Unconfirmed, None, Some(AttemptReason::NoAnswer)));
                    return (Err(error), attempts);
                }
                Err(error @ (SmsError::Rejected(_) | SmsError::Unavailable(_))) => {
                    let (outcome, reason) = match error {
                        SmsError::Rejected(_) => (AttemptOutcome::Refused, AttemptReason::ProviderRefused),
                        _ => (AttemptOutcome::Failed, AttemptReason::ProviderDown),
                    };
                    tracing::warn!(
                        %channel,
                        gateway = gateway.name(),
                        provider = %endpoint,
                        reason = reason.as_str(),
                        error = %error,
                        "delivery channel did not take the code"
                    );
                    attempts.push(attempt(outcome, None, Some(reason)));
                    last = Some(error);
                }
                Err(error @ (SmsError::NotSent(_) | SmsError::CircuitOpen { .. })) => {
                    // Never reached the provider: an earlier channel's answer, if any, stays the one that counts.
                    tracing::info!(
                        %channel,
                        gateway = gateway.name(),
                        provider = %endpoint,
                        error = %error,
                        "delivery channel not tried"
                    );
                    last = last.or(Some(error));
                }
            }
        }
        let last = last.unwrap_or_else(|| SmsError::NotSent("the deadline passed before any channel".into()));
        (Err(last), attempts)
    }
}

impl VerificationService {
    /// A team lead's sign-in code to their own registered phone (docs/sign-in.md), over every channel of
    /// `--delivery` in turn (AlimTalk, then SMS) with the code template, from the configured sender, within
    /// `--sms-timeout`. Charged to the per-destination and per-replica SMS limits; the sign-in's own cooldown
    /// and hourly cap are counted by the sign-in service. Err: no channel took it.
    pub async fn send_sign_in_code(
        &self,
        phone: &crate::domain::PhoneNumber,
        code: &crate::domain::OtpCode,
        ttl: chrono::TimeDelta,
    ) -> Result<(), super::ServiceError> {
        let this = &self.inner;
        this.limits.check_send_destination(phone)?;
        let reference = crate::domain::VerificationId::new();
        let message = SmsMessage {
            kind: MessageKind::Code,
            to: phone.clone(),
            from: this.sender.clone(),
            body: this.template.render(code, ttl, None),
            code: secrecy::SecretString::from(code.expose().to_owned()),
            verification_id: reference,
            sent_at: this.clock.now(),
            idempotency_key: format!("sign-in-{reference}"),
        };
        let deadline = Deadline { at: tokio::time::Instant::now() + this.delivery_timeout, callers: false };
        let (result, attempts) = self.deliver(&message, deadline).await;
        let by = attempts.last().map_or("-", |a| a.gateway);
        match result {
            Ok(_) => {
                tracing::info!(%phone, gateway = by, "sign-in code sent");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%phone, gateway = by, %error, "sign-in code not delivered");
                Err(super::ServiceError::SmsDeliveryFailed { retry_after: Duration::from_secs(30) })
            }
        }
    }
}
