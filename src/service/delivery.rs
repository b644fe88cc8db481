//! Carrying one code to the driver over the channels of `--delivery`, in order: the next channel is tried when
//! one refuses or fails, within the caller's deadline, and every attempt is kept for the record. Each channel is
//! its own gateway, so each has its own breaker. One code per send, whichever channel carries it.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{AttemptOutcome, DeliveryAttempt, DeliveryChannel};
use crate::sms::{Deadline, Delivery, SmsError, SmsMessage};

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
        let mut attempts = Vec::new();
        let mut last: Option<SmsError> = None;
        for (channel, gateway) in self.channels() {
            if tokio::time::Instant::now() >= deadline.at {
                break;
            }
            // The gateway ends by `deadline` itself; this bound only catches one that does not.
            let result = tokio::time::timeout_at(deadline.at + GATEWAY_GRACE, gateway.send(message, deadline))
                .await
                .unwrap_or_else(|_| Err(SmsError::Unavailable("the gateway overran its deadline".into())));
            let attempt = |outcome, provider_id| DeliveryAttempt {
                channel,
                gateway: gateway.name(),
                at: self.inner.clock.now(),
                outcome,
                provider_id,
            };
            match result {
                Ok(delivery) => {
                    attempts.push(attempt(AttemptOutcome::Accepted, delivery.message_id.clone()));
                    return (Ok(delivery), attempts);
                }
                Err(error @ SmsError::Unconfirmed(_)) => {
                    // It may still arrive: a second channel now would only race it.
                    attempts.push(attempt(AttemptOutcome::Unconfirmed, None));
                    return (Err(error), attempts);
                }
                Err(error @ (SmsError::Rejected(_) | SmsError::Unavailable(_))) => {
                    let outcome = match error {
                        SmsError::Rejected(_) => AttemptOutcome::Refused,
                        _ => AttemptOutcome::Failed,
                    };
                    tracing::warn!(%channel, error = %error, "delivery channel did not take the code");
                    attempts.push(attempt(outcome, None));
                    last = Some(error);
                }
                Err(error @ (SmsError::NotSent(_) | SmsError::CircuitOpen { .. })) => {
                    // Never reached the provider: an earlier channel's answer, if any, stays the one that counts.
                    tracing::info!(%channel, error = %error, "delivery channel not tried");
                    last = last.or(Some(error));
                }
            }
        }
        let last = last.unwrap_or_else(|| SmsError::NotSent("the deadline passed before any channel".into()));
        (Err(last), attempts)
    }
}
