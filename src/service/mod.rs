//! The SendCode and VerifyCode flows (DESIGN.md, "Flows"), independent of gRPC: they take parsed domain values
//! and return domain outcomes.

mod delivery;
mod error;
mod guard;
mod labels;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::domain::audit::{AuditAction, AuditOutcome};
use crate::domain::{
    AppHash, Channel, OtpCode, PhoneNumber, Policy, Purpose, SendRefusal, TestNumbers, VerificationId,
};
use crate::hashing::{CodeHasher, Slot, Work};
use crate::limits::FrontLimits;
use crate::metrics::{GatewayFailure, Metrics, SendResult, VerifyResult};
use crate::sms::{Deadline, SmsError, SmsGateway, SmsMessage, SmsTemplate};
use crate::store::{Approval, CodeId, DeliveryOutcome, NewCode, Reservation, Store};

pub use delivery::{Channels, DOCTOR_WINDOWS, Diagnosis, RouteBook, RouteLearning, RouteReport};
pub(crate) use error::until;
pub use error::{FieldViolation, GuardRefusal, ServiceError};
pub use guard::SendGuard;

/// How long a caller should wait before retrying after the gateway failed.
const DELIVERY_RETRY_AFTER: Duration = Duration::from_secs(10);
/// What is kept of the caller's deadline for the work after delivery (recording it, answering).
const DEADLINE_RESERVE: Duration = Duration::from_millis(250);

/// A request to send a code.
#[derive(Debug)]
pub struct SendCommand {
    /// The number to verify.
    pub phone: PhoneNumber,
    /// What for.
    pub purpose: Purpose,
    /// The number the device's SIM reports, when the app knows it.
    pub sim_phone: Option<PhoneNumber>,
    /// Android SMS Retriever hash to append.
    pub app_hash: Option<AppHash>,
    /// When the caller stops waiting (its gRPC deadline), if it set one.
    pub deadline: Option<tokio::time::Instant>,
    /// Told of the code and the answer it will give before the SMS is handed over (an idempotency key's claim
    /// records them there); an error stops the send before the provider sees it.
    pub hand_over: Option<Arc<dyn HandOver>>,
}

/// What must happen between issuing a code and handing its SMS to the provider.
#[async_trait::async_trait]
pub trait HandOver: Send + Sync + std::fmt::Debug {
    /// The code `code` was issued and the send will answer `outcome` if delivered. An error withdraws the code
    /// and is the send's answer: nothing reaches the provider.
    async fn issued(&self, code: CodeId, outcome: &SendOutcome) -> Result<(), ServiceError>;
}

/// A code was sent.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    /// The pending verification.
    pub verification_id: VerificationId,
    /// When the code just sent stops working.
    pub expires_at: DateTime<Utc>,
    /// The earliest time the next send can succeed.
    pub resend_available_at: DateTime<Utc>,
    /// SMS left under the tighter cap.
    pub sends_remaining: u32,
    /// The sender number the SMS came from.
    pub sender: String,
    /// The destination, masked.
    pub masked_phone: String,
}

/// A request to check a code.
#[derive(Debug)]
pub struct VerifyCommand {
    /// The number being verified.
    pub phone: PhoneNumber,
    /// What for.
    pub purpose: Purpose,
    /// What the driver typed.
    pub code: OtpCode,
    /// When the caller stops waiting (its gRPC deadline), if it set one.
    pub deadline: Option<tokio::time::Instant>,
}

/// The expected outcomes of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The code matched; the verification is consumed.
    Approved { verification_id: VerificationId },
    /// No live code matched; `locked_until` is set when this attempt locked the number.
    WrongCode { verification_id: VerificationId, attempts_remaining: u32, locked_until: Option<DateTime<Utc>> },
    /// Every code of the verification has expired; not counted as a failure.
    Expired { verification_id: VerificationId, attempts_remaining: u32 },
}

/// Sends and checks codes.
#[derive(Clone)]
pub struct VerificationService {
    inner: Arc<ServiceParts>,
    book: Arc<RouteBook>,
}

/// What the service is built from.
pub struct ServiceParts {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Code hashing.
    pub hasher: CodeHasher,
    /// SMS delivery.
    pub gateway: Arc<dyn SmsGateway>,
    /// The routes of `--delivery`, in order, each a channel with its gateway; empty: SMS through `gateway` alone.
    pub channels: Channels,
    /// How a number's history reorders the routes.
    pub learning: RouteLearning,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The rules.
    pub policy: Policy,
    /// The sender number on every SMS.
    pub sender: String,
    /// The message text.
    pub template: SmsTemplate,
    /// How long the gateway may take for one SMS.
    pub delivery_timeout: Duration,
    /// The least time before the caller's deadline that SendCode needs to hash, record and hand over an SMS.
    pub min_send_deadline: Duration,
    /// Staging numbers with fixed codes that never reach the gateway.
    pub test_numbers: TestNumbers,
    /// Where lockouts are recorded.
    pub audit: AuditLog,
    /// The per-destination and per-replica SMS limits.
    pub limits: Arc<FrontLimits>,
    /// Where sends, checks, lockouts and deliveries are counted.
    pub metrics: Arc<Metrics>,
    /// The shared SMS budgets and the pumping guard.
    pub guard: Arc<SendGuard>,
}

impl VerificationService {
    /// Assembles the service.
    pub fn new(parts: ServiceParts) -> Self {
        Self { inner: Arc::new(parts), book: Arc::default() }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// A place in the hashing queue for a SendCode ([`Work::Send`]) or a VerifyCode ([`Work::Check`]) of `client`,
    /// taken before the request is decoded, counted or stored (a keyed call's once its key is claimed): past a full
    /// queue a call waits at most the admission wait (never past `deadline`) and is refused `OVERLOADED`, at about
    /// a health check's cost (docs/performance.md, "Clients that retry at once"). The refusal is counted by the
    /// hashing queue alone: the request's purpose is not read yet.
    pub async fn admit(
        &self,
        work: Work,
        client: Option<std::net::IpAddr>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Slot, ServiceError> {
        Ok(self.inner.hasher.admit(work, client, deadline).await?)
    }

    /// SendCode, holding its place in the hashing queue ([`Self::admit`]): checks the SIM, the lock, the cooldown
    /// and the caps; issues a code, records it and hands the SMS to the gateway. A failed delivery revokes the code.
    pub async fn send_code(&self, cmd: SendCommand, slot: Slot) -> Result<SendOutcome, ServiceError> {
        let purpose = cmd.purpose;
        // Set where the error alone does not tell what became of the send (a failed SMS, or one never sent).
        let mut verdict = None;
        let result = self.send(cmd, slot, &mut verdict).await;
        self.inner.metrics.send(purpose, Channel::Sms, verdict.unwrap_or_else(|| SendResult::of(&result)));
        result
    }

    #[tracing::instrument(skip_all, fields(phone = %cmd.phone, purpose = %cmd.purpose))]
    async fn send(
        &self,
        cmd: SendCommand,
        slot: Slot,
        verdict: &mut Option<SendResult>,
    ) -> Result<SendOutcome, ServiceError> {
        let this = &self.inner;
        if cmd.sim_phone.as_ref().is_some_and(|sim| *sim != cmd.phone) {
            return Err(ServiceError::SimMismatch);
        }
        // A caller that will have hung up before the provider can be reached must cost nothing: no hash, no
        // code, no count toward the number's caps.
        let too_short = cmd.deadline.is_some_and(|deadline| {
            deadline.saturating_duration_since(tokio::time::Instant::now()) < this.min_send_deadline
        });
        if too_short {
            return Err(ServiceError::DeadlineTooShort { needed: this.min_send_deadline });
        }
        // Cheap pre-check so that refused sends cost no hash; the transaction below decides.
        let now = this.clock.now();
        let state = this.store.send_history(&cmd.phone, cmd.purpose, now).await?;
        this.policy.check_send(&state.history, now).map_err(|r| refusal(r, now))?;
        let test_code = this.test_numbers.code_for(&cmd.phone, this.policy.code_length);
        let is_test_number = test_code.is_some();
        // While the provider is known to be down no SMS can go out, but the driver's attempt is still recorded (the
        // pending verification and the refused send), so that a team lead on a call can issue a code for it.
        let breaker_open = if is_test_number { None } else { self.channels_refusing_for() };
        if !is_test_number && breaker_open.is_none() {
            // Charged only for a send the store would allow, so refused resends cannot drain a prefix's budget.
            this.limits.check_send_destination(&cmd.phone)?;
            // Then the shared store: the pumping guard's decision and one charge against the shared budgets.
            this.guard.admit(&cmd.phone).await?;
        }

        let code = test_code.unwrap_or_else(|| OtpCode::generate(this.policy.code_length));
        let hash = this.hasher.hash(slot, &code, state.salt).await?;
        let now = this.clock.now();
        let new_code = NewCode {
            phone: cmd.phone.clone(),
            purpose: cmd.purpose,
            hash,
            channel: Channel::Sms,
            now,
            expires_at: now + this.policy.code_ttl,
        };
        let issued = this.store.issue_code(new_code, &this.policy).await?.map_err(|r| refusal(r, now))?;

        let message = SmsMessage {
            kind: crate::sms::MessageKind::Code,
            to: cmd.phone.clone(),
            from: this.sender.clone(),
            body: this.template.render(&code, this.policy.code_ttl, cmd.app_hash.as_ref()),
            code: secrecy::SecretString::from(code.expose().to_owned()),
            verification_id: issued.verification_id,
            sent_at: now,
            idempotency_key: format!("{}-{}", issued.verification_id, issued.code_id.0),
        };
        drop(code);
        if let Some(hand_over) = &cmd.hand_over {
            let outcome = SendOutcome {
                verification_id: issued.verification_id,
                expires_at: issued.expires_at,
                resend_available_at: issued.allowance.resend_available_at,
                sends_remaining: issued.allowance.sends_remaining,
                sender: this.sender.clone(),
                masked_phone: cmd.phone.masked().to_owned(),
            };
            if let Err(error) = hand_over.issued(issued.code_id, &outcome).await {
                self.withdraw(issued.code_id).await?;
                *verdict = Some(SendResult::NotSent);
                return Err(error);
            }
        }
        if let Some(retry_after) = breaker_open {
            return Err(self.refused_by_breaker(issued.code_id, retry_after, verdict).await);
        }
        let mut attempts = Vec::new();
        let outcome = if is_test_number {
            tracing::info!("test number: SMS not sent");
            DeliveryOutcome::Delivered { message_id: Some("test-number".into()) }
        } else {
            // The number's own order of the routes; the delivery's deadline is measured after reading it.
            let routes = self.routes_for(&cmd.phone).await;
            let deadline = self.delivery_deadline(cmd.deadline);
            let started = tokio::time::Instant::now();
            let (result, tried) = self.deliver_by(routes, &message, deadline).await;
            this.metrics.sms_delivery(started.elapsed(), GatewayFailure::of_delivery(&result));
            attempts = tried;
            match result {
                Ok(delivery) => DeliveryOutcome::Delivered { message_id: delivery.message_id },
                Err(SmsError::Unconfirmed(why)) => {
                    // Handed over: it may arrive, so its code stays and the send counts, as any other.
                    tracing::warn!(%why, "SMS not confirmed before the caller's deadline; code kept");
                    self.record_attempts(issued.code_id, &attempts).await;
                    this.guard.count_send(&cmd.phone).await;
                    return Err(ServiceError::DeliveryUnconfirmed);
                }
                Err(error @ (SmsError::NotSent(_) | SmsError::CircuitOpen { .. })) => {
                    // The provider never saw it: the send did not happen, and counts toward nothing.
                    tracing::warn!(error = %error, "SMS not handed to the provider; code withdrawn");
                    self.withdraw(issued.code_id).await?;
                    *verdict = Some(SendResult::NotSent);
                    return Err(match error {
                        SmsError::CircuitOpen { retry_after } => {
                            ServiceError::SmsDeliveryFailed { retry_after: retry_after.max(Duration::from_secs(1)) }
                        }
                        // The deadline that ran out before the hand-over was the caller's: it has gone.
                        _ if deadline.callers => ServiceError::DeadlineTooShort { needed: this.min_send_deadline },
                        _ => ServiceError::SmsDeliveryFailed { retry_after: DELIVERY_RETRY_AFTER },
                    });
                }
                Err(error) => {
                    tracing::warn!(error = %error, "SMS delivery failed; code revoked");
                    DeliveryOutcome::Failed
                }
            }
        };
        let delivered = outcome != DeliveryOutcome::Failed;
        // The outcome and each channel's attempt in one transaction.
        let recorded = this.store.record_delivery(issued.code_id, outcome, &attempts, this.clock.now()).await;
        if let Err(error) = recorded {
            // A delivered SMS stays valid even if its receipt is lost; a failed one must be revoked, so that
            // failure is the caller's too.
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), delivered, "recording SMS delivery failed");
            if !delivered {
                return Err(error.into());
            }
        }
        if !delivered {
            *verdict = Some(SendResult::Failed);
            return Err(ServiceError::SmsDeliveryFailed { retry_after: DELIVERY_RETRY_AFTER });
        }
        if is_test_number {
            *verdict = Some(SendResult::TestNumber);
        } else {
            this.guard.count_send(&cmd.phone).await;
        }
        tracing::info!(verification_id = %issued.verification_id, "code sent");
        Ok(SendOutcome {
            verification_id: issued.verification_id,
            expires_at: issued.expires_at,
            resend_available_at: issued.allowance.resend_available_at,
            sends_remaining: issued.allowance.sends_remaining,
            sender: this.sender.clone(),
            masked_phone: cmd.phone.masked().to_owned(),
        })
    }

    /// A send every channel's breaker refused: its code is revoked at once (no SMS code is live), each channel's
    /// refusal is recorded for the status view, logged and counted (`circuit_open`), and the driver is told the
    /// call centre can help (the pending verification stays, so a lookup by call can issue a code).
    async fn refused_by_breaker(
        &self,
        code: CodeId,
        retry_after: Duration,
        verdict: &mut Option<SendResult>,
    ) -> ServiceError {
        let this = &self.inner;
        let now = this.clock.now();
        let attempts: Vec<crate::domain::DeliveryAttempt> = self
            .channels_for_record()
            .into_iter()
            .map(|(channel, gateway, endpoint)| {
                tracing::warn!(
                    route = %crate::domain::route_label(channel, gateway),
                    gateway,
                    provider = endpoint.as_deref().unwrap_or("-"),
                    reason = "circuit_open",
                    retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                    "SMS refused by the open circuit breaker; the attempt is recorded, no code is live"
                );
                crate::domain::DeliveryAttempt {
                    channel,
                    gateway,
                    at: now,
                    outcome: crate::domain::AttemptOutcome::Refused,
                    provider_id: None,
                    reason: Some(crate::domain::AttemptReason::CircuitOpen),
                }
            })
            .collect();
        this.metrics.sms_refused(crate::metrics::GatewayFailure::CircuitOpen);
        *verdict = Some(SendResult::Failed);
        // The refusal and each channel's refused attempt in one transaction.
        if let Err(error) = this.store.record_delivery(code, DeliveryOutcome::Failed, &attempts, now).await {
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), "recording a refused send failed");
            return error.into();
        }
        ServiceError::SmsDeliveryFailed { retry_after: retry_after.max(Duration::from_secs(1)) }
    }

    /// Keeps the record of each channel's attempt; losing it costs the status view, not the send.
    async fn record_attempts(&self, code: CodeId, attempts: &[crate::domain::DeliveryAttempt]) {
        if attempts.is_empty() {
            return;
        }
        if let Err(error) = self.inner.store.record_attempts(code, attempts).await {
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), "recording delivery attempts failed");
        }
    }

    /// Takes back a code whose SMS never reached the provider; if that fails, revokes it, so that it can never
    /// approve (it then counts toward the caps, the safe side).
    async fn withdraw(&self, code: CodeId) -> Result<(), ServiceError> {
        let this = &self.inner;
        if let Err(error) = this.store.withdraw_code(code).await {
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), "could not withdraw a code; revoking it");
            this.store.record_delivery(code, DeliveryOutcome::Failed, &[], this.clock.now()).await?;
        }
        Ok(())
    }

    /// The gateway's deadline: the delivery timeout, shortened to end a little before the caller's own.
    fn delivery_deadline(&self, caller: Option<tokio::time::Instant>) -> Deadline {
        let now = tokio::time::Instant::now();
        let own = now + self.inner.delivery_timeout;
        let callers = caller.map(|caller| {
            let left = caller.saturating_duration_since(now);
            now + left.saturating_sub(DEADLINE_RESERVE.min(left / 5))
        });
        match callers {
            Some(at) if at < own => Deadline { at, callers: true },
            _ => Deadline { at: own, callers: false },
        }
    }

    /// VerifyCode, holding its place in the hashing queue ([`Self::admit`]): refuses while locked, reserves the
    /// attempt in the store before any hash is checked, then approves exactly once or counts the failure.
    pub async fn verify_code(&self, cmd: VerifyCommand, slot: Slot) -> Result<VerifyOutcome, ServiceError> {
        let purpose = cmd.purpose;
        let result = self.verify(cmd, slot).await;
        self.inner.metrics.verification(purpose, VerifyResult::of(&result));
        result
    }

    #[tracing::instrument(skip_all, fields(phone = %cmd.phone, purpose = %cmd.purpose))]
    async fn verify(&self, cmd: VerifyCommand, slot: Slot) -> Result<VerifyOutcome, ServiceError> {
        let this = &self.inner;
        let now = this.clock.now();
        let state = this.store.check_state(&cmd.phone, cmd.purpose, now).await?;
        if let Some(until) = state.locked_until {
            return Err(locked(until, now));
        }
        let Some(pending) = state.pending else {
            let recently_approved = state.last_approved_at.is_some_and(|at| at > now - this.policy.code_ttl);
            return Err(if recently_approved {
                ServiceError::AlreadyVerified
            } else {
                ServiceError::NoPendingVerification
            });
        };
        let verification_id = pending.id;
        if pending.live_codes.is_empty() {
            let attempts_remaining = this.policy.attempts_remaining(state.failed_attempts);
            return Ok(VerifyOutcome::Expired { verification_id, attempts_remaining });
        }

        let reservation = this.store.reserve_attempt(&cmd.phone, now, &this.policy).await?;
        let (attempt, locks_until) = match reservation {
            Reservation::Granted { attempt, locks_until, .. } => (attempt, locks_until),
            Reservation::Locked { until } => return Err(locked(until, now)),
            Reservation::Unknown => return Err(ServiceError::NoPendingVerification),
        };
        let matched = match this.hasher.find_match(slot, &cmd.code, pending.live_codes).await {
            Ok(matched) => matched,
            Err(error) => {
                // Our failure (or a caller gone while queued) is not a wrong code: give the attempt back.
                this.store.release_attempt(&cmd.phone, reservation, this.clock.now()).await?;
                return Err(error.into());
            }
        };
        if matched.is_some() {
            let approval = match this.store.approve(verification_id, &cmd.phone, this.clock.now()).await {
                Ok(approval) => approval,
                Err(error) => {
                    // A right code must not stay counted as a failure (it may have been the 10th) because the
                    // database hiccupped; the caller may simply try again.
                    if let Err(e) = this.store.release_attempt(&cmd.phone, reservation, this.clock.now()).await {
                        tracing::error!(error = %crate::telemetry::ErrorChain(&e), "could not give back an attempt");
                    }
                    return Err(error.into());
                }
            };
            if approval == Approval::Approved {
                tracing::info!(%verification_id, "verification approved");
                // A test number's sends are not counted, so neither are its approvals (they would raise its
                // prefix's conversion and hide pumping).
                if this.test_numbers.code_for(&cmd.phone, this.policy.code_length).is_none() {
                    this.guard.count_approval(&cmd.phone).await;
                }
                return Ok(VerifyOutcome::Approved { verification_id });
            }
            this.store.release_attempt(&cmd.phone, reservation, this.clock.now()).await?;
            return match approval {
                Approval::Replaced => Ok(VerifyOutcome::Expired {
                    verification_id,
                    attempts_remaining: this.policy.attempts_remaining(attempt.saturating_sub(1)),
                }),
                Approval::Approved | Approval::AlreadyApproved => Err(ServiceError::AlreadyVerified),
            };
        }
        if let Some(until) = locks_until {
            this.metrics.lockout(cmd.purpose);
            let detail = format!(
                "locked until {} after {attempt} consecutive wrong codes",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            let event =
                this.audit.event(None, AuditAction::PhoneLocked, Some(&cmd.phone), AuditOutcome::Granted, detail);
            if let Err(error) = this.audit.append(event).await {
                // The lock itself is in place; only its audit record is missing, which the log shows.
                tracing::error!(error = %crate::telemetry::ErrorChain(&error), "could not audit a lockout");
            }
        } else {
            tracing::info!(attempt, "wrong code");
        }
        Ok(VerifyOutcome::WrongCode {
            verification_id,
            attempts_remaining: this.policy.attempts_remaining(attempt),
            locked_until: locks_until,
        })
    }
}

fn locked(until: DateTime<Utc>, now: DateTime<Utc>) -> ServiceError {
    ServiceError::PhoneLocked { until, retry_after: error::until(until, now) }
}

fn refusal(refusal: SendRefusal, now: DateTime<Utc>) -> ServiceError {
    match refusal {
        SendRefusal::Locked { until } => locked(until, now),
        SendRefusal::Cooldown { retry_at } => {
            ServiceError::ResendCooldown { retry_at, retry_after: until(retry_at, now) }
        }
        SendRefusal::Limit { retry_at } => ServiceError::SendLimit { retry_at, retry_after: until(retry_at, now) },
    }
}
