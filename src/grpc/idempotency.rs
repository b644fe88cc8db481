//! Idempotency keys for SendCode and VerifyCode (issue 18 §3): a call with an `idempotency-key` header claims the
//! key in the shared store before it acts, and records its outcome there; a repeat on any replica answers that
//! outcome and does nothing else.
//!
//! - **Scope.** A key is scoped by the method and by the caller, the TCP peer's address (the backend host that
//!   called, never `x-forwarded-for`, which names the driver): the same key from two backends, or for SendCode
//!   and VerifyCode, names two different rows, so no backend can collide with or read another's outcome.
//! - **Fingerprint.** The method and the parsed request's fields (numbers in E.164, not the bytes sent), as an
//!   HMAC under the pepper: a check's code is never stored recoverably. The same key with another request is
//!   refused `FAILED_PRECONDITION` `IDEMPOTENCY_KEY_REUSED`.
//! - **Claim, then act.** The claim is one `INSERT … ON CONFLICT`; of many duplicates on many replicas one acts,
//!   the others wait for its outcome within their deadline (else `ABORTED` `IDEMPOTENCY_KEY_IN_USE` with
//!   `RetryInfo`). The owner renews a lease while it works; a claim whose lease ran out (its replica was killed)
//!   is taken over by the next repeat, with a new token that fences the old owner's writes.
//! - **No second SMS after a takeover.** A send records the code it issued, and the answer it would give, before
//!   it hands the SMS to the provider (and sends nothing if its claim was taken over meanwhile). A takeover that
//!   finds that record answers it (`delivery_unconfirmed` while the code's delivery is unknown) and sends nothing;
//!   only a send that never issued a code, or whose code never reached a provider, is done again.
//! - **What is kept.** An answer (a send, a check's result) and a refusal that a retry would only repeat
//!   (`SIM_MISMATCH`, `NO_PENDING_VERIFICATION`, `ALREADY_VERIFIED`, `SMS_NOT_CONFIRMED`) are kept for a day. A
//!   refusal after which nothing took effect and that the caller is told to retry (`RetryInfo`: cooldown, caps,
//!   lock, limits, overload, a failed delivery, an unreachable database; a deadline too short) frees the key
//!   instead, so that the retry is judged afresh: it cannot act twice, because the first did not act.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use prost::Message;
use tonic::Status;

use crate::clock::Clock;
use crate::hashing::Pepper;
use crate::service::{FieldViolation, HandOver, SendOutcome, ServiceError};
use crate::store::idempotency::{Claimed, KeyClaim, KeyOutcome, KeyRecord, SendProgress};
use crate::store::{CodeId, KeyStore};

/// The request header that carries the key.
pub const HEADER: &str = "idempotency-key";
/// The response header set on an answer replayed from a key's record.
pub const REPLAY_HEADER: &str = "otp-idempotent-replay";
/// How long a key and its outcome are kept.
pub const RETENTION: TimeDelta = TimeDelta::hours(24);
/// How long a repeat waits for a running first call when it set no deadline: the longest a call is served.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// What is kept of the caller's deadline to answer `ABORTED` before it passes: a fifth of it, within these bounds.
const ANSWER_RESERVE: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(250));
/// The first and the longest pause between two reads of a running claim.
const POLL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(200));

/// The shared store's keys, and what a claim needs.
#[derive(Clone)]
pub struct IdempotencyKeys {
    store: Arc<dyn KeyStore>,
    pepper: Pepper,
    clock: Arc<dyn Clock>,
    lease: Duration,
}

/// One keyed call: its scope, key and fingerprint.
#[derive(Debug, Clone)]
pub(super) struct Keyed {
    scope: String,
    key: String,
    fingerprint: String,
}

/// An answer, and whether it was replayed from the key's record.
pub(super) struct Answer<M> {
    pub message: M,
    pub replayed: bool,
}

impl IdempotencyKeys {
    /// Keys in `store`, fingerprinted under `pepper`, claimed with a lease of `lease` that the owner renews.
    pub fn new(store: Arc<dyn KeyStore>, pepper: Pepper, clock: Arc<dyn Clock>, lease: Duration) -> Self {
        Self { store, pepper, clock, lease }
    }

    /// The keyed call of `method` with `key` from `peer`, whose parsed request has `fields`.
    pub(super) fn keyed(&self, key: String, method: &str, peer: Option<IpAddr>, fields: &[&str]) -> Keyed {
        let peer = peer.map_or_else(|| "local".to_owned(), |ip| ip.to_canonical().to_string());
        Keyed { scope: format!("{method}@{peer}"), key, fingerprint: self.pepper.request_fingerprint(method, fields) }
    }

    fn claim(&self, keyed: &Keyed) -> KeyClaim {
        let now = self.clock.now();
        KeyClaim {
            scope: keyed.scope.clone(),
            key: keyed.key.clone(),
            fingerprint: keyed.fingerprint.clone(),
            token: uuid::Uuid::new_v4(),
            now,
            lease_until: now + lease_delta(self.lease),
            expires_at: now + RETENTION,
        }
    }

    /// Runs `work` once for the key: claims it, acts, records the outcome; or answers the outcome another attempt
    /// recorded, waiting for a running one within `deadline`. `recover` turns a send's progress, found on a
    /// takeover, into its answer (None: the work is done again).
    pub(super) async fn run<M, Fut>(
        &self,
        keyed: Keyed,
        deadline: Option<tokio::time::Instant>,
        recover: impl Fn(&SendProgress) -> Option<M>,
        work: impl FnOnce(Arc<dyn HandOver>) -> Fut,
    ) -> Result<Answer<M>, Status>
    where
        M: Message + Default,
        Fut: Future<Output = Result<M, ServiceError>>,
    {
        let wait_until = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                deadline - (left / 5).clamp(ANSWER_RESERVE.0, ANSWER_RESERVE.1).min(left)
            }
            None => tokio::time::Instant::now() + MAX_WAIT,
        };
        let mut poll = POLL.0;
        loop {
            let claim = self.claim(&keyed);
            let mut record = match self.store.claim_key(&claim).await.map_err(ServiceError::from)? {
                Claimed::Mine => return self.act(claim, work).await,
                Claimed::Taken(record) => record,
            };
            // Another attempt holds the key: its outcome, once there is one.
            loop {
                if record.fingerprint != keyed.fingerprint {
                    return Err(ServiceError::IdempotencyKeyReused.into());
                }
                if let Some(outcome) = record.outcome {
                    return replay(outcome);
                }
                let now = self.clock.now();
                let lease_until = record.lease_until.unwrap_or(now);
                if lease_until <= now {
                    let claim = self.claim(&keyed);
                    if self.store.take_over_key(&claim).await.map_err(ServiceError::from)? {
                        tracing::warn!(
                            scope = %keyed.scope,
                            "idempotency key taken over: the attempt that held it stopped renewing its lease"
                        );
                        return self.take_over(claim, recover, work).await;
                    }
                }
                let left = wait_until.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    // Soon: a live first call is usually done within a second; a dead one's lease runs out in
                    // at most this long, and each retry says again how long is left.
                    let lease_left = (lease_until - now).to_std().unwrap_or(Duration::ZERO);
                    let retry_after = lease_left.clamp(Duration::from_millis(100), Duration::from_secs(1));
                    return Err(ServiceError::IdempotencyKeyInUse { retry_after }.into());
                }
                tokio::time::sleep(poll.min(left)).await;
                poll = (poll * 2).min(POLL.1);
                match self.store.key_record(&keyed.scope, &keyed.key).await.map_err(ServiceError::from)? {
                    Some(next) => record = next,
                    // Freed (its outcome is one a retry may change) or purged: claim it again.
                    None => break,
                }
            }
        }
    }

    /// After a takeover: answers what the first attempt's send left, or does the work again.
    async fn take_over<M, Fut>(
        &self,
        claim: KeyClaim,
        recover: impl Fn(&SendProgress) -> Option<M>,
        work: impl FnOnce(Arc<dyn HandOver>) -> Fut,
    ) -> Result<Answer<M>, Status>
    where
        M: Message + Default,
        Fut: Future<Output = Result<M, ServiceError>>,
    {
        // Read again under the new token: the old owner can no longer change the row.
        let record: Option<KeyRecord> =
            self.store.key_record(&claim.scope, &claim.key).await.map_err(ServiceError::from)?;
        if let Some(message) = record.and_then(|r| r.progress).as_ref().and_then(&recover) {
            let outcome = KeyOutcome { code: 0, message: String::new(), body: message.encode_to_vec() };
            self.finish(&claim, &outcome).await;
            return Ok(Answer { message, replayed: true });
        }
        self.act(claim, work).await
    }

    /// Does the work under the claim, renewing its lease meanwhile, and records or frees the key.
    async fn act<M, Fut>(
        &self,
        claim: KeyClaim,
        work: impl FnOnce(Arc<dyn HandOver>) -> Fut,
    ) -> Result<Answer<M>, Status>
    where
        M: Message + Default,
        Fut: Future<Output = Result<M, ServiceError>>,
    {
        let _renewing = self.renew_while_running(&claim);
        let fence = Arc::new(Fence { store: Arc::clone(&self.store), claim: claim.clone() });
        match work(fence).await {
            Ok(message) => {
                let outcome = KeyOutcome { code: 0, message: String::new(), body: message.encode_to_vec() };
                self.finish(&claim, &outcome).await;
                Ok(Answer { message, replayed: false })
            }
            Err(error) if stands(&error) => {
                let status = Status::from(error);
                let outcome = KeyOutcome {
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                    body: status.details().to_vec(),
                };
                self.finish(&claim, &outcome).await;
                Err(status)
            }
            Err(error) => {
                if let Err(e) = self.store.release_key(&claim.scope, &claim.key, claim.token).await {
                    // The key then frees itself when its lease runs out.
                    tracing::warn!(error = %crate::telemetry::ErrorChain(&e), "could not free an idempotency key");
                }
                Err(error.into())
            }
        }
    }

    async fn finish(&self, claim: &KeyClaim, outcome: &KeyOutcome) {
        match self.store.finish_key(&claim.scope, &claim.key, claim.token, outcome).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(scope = %claim.scope, "idempotency key taken over before its outcome was kept"),
            // The answer still goes to this caller; a repeat after the lease finds no outcome and acts again
            // (a send then answers the code recorded before its hand-over, and sends nothing).
            Err(error) => {
                tracing::error!(error = %crate::telemetry::ErrorChain(&error), "could not keep an idempotency outcome")
            }
        }
    }

    /// Renews the claim's lease every third of it until the returned guard is dropped.
    fn renew_while_running(&self, claim: &KeyClaim) -> AbortOnDrop {
        let (store, clock, lease) = (Arc::clone(&self.store), Arc::clone(&self.clock), self.lease);
        let (scope, key, token) = (claim.scope.clone(), claim.key.clone(), claim.token);
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let until = clock.now() + lease_delta(lease);
                match store.renew_key(&scope, &key, token, until).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(error) => {
                        tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "could not renew an idempotency key")
                    }
                }
            }
        }))
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records a send's code and answer under the claim before the SMS is handed over; refuses the hand-over when
/// the claim was taken over meanwhile.
struct Fence {
    store: Arc<dyn KeyStore>,
    claim: KeyClaim,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence").field("scope", &self.claim.scope).field("token", &self.claim.token).finish()
    }
}

#[async_trait::async_trait]
impl HandOver for Fence {
    async fn issued(&self, code: CodeId, outcome: &SendOutcome) -> Result<(), ServiceError> {
        let provisional = crate::pb::otp::v1::SendCodeResponse::from(outcome.clone()).encode_to_vec();
        let claim = &self.claim;
        if self.store.key_progress(&claim.scope, &claim.key, claim.token, code, &provisional).await? {
            Ok(())
        } else {
            Err(ServiceError::IdempotencyKeyInUse { retry_after: Duration::from_secs(1) })
        }
    }
}

/// The key of a request: None without the header; a header that is not 1-255 printable ASCII characters is
/// `INVALID_ARGUMENT`.
pub(super) fn key_of(headers: &tonic::codegen::http::HeaderMap) -> Result<Option<String>, ServiceError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let key = value.to_str().ok().filter(|k| {
        (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ') && values.next().is_none()
    });
    match key {
        Some(key) => Ok(Some(key.to_owned())),
        None => Err(ServiceError::InvalidArgument(vec![FieldViolation {
            field: HEADER,
            reason: "INVALID_IDEMPOTENCY_KEY",
            description: "must be one value of 1-255 printable ASCII characters".into(),
        }])),
    }
}

/// Whether an outcome stands for the key: an answer, or a refusal a retry would only repeat. Every other refusal
/// means nothing took effect and the caller is told to retry, so the key is freed for that retry.
fn stands(error: &ServiceError) -> bool {
    match error {
        ServiceError::SimMismatch
        | ServiceError::NoPendingVerification
        | ServiceError::AlreadyVerified
        | ServiceError::DeliveryUnconfirmed
        | ServiceError::InvalidArgument(_) => true,
        ServiceError::PhoneLocked { .. }
        | ServiceError::ResendCooldown { .. }
        | ServiceError::SendLimit { .. }
        | ServiceError::RateLimited { .. }
        | ServiceError::PumpingGuard(_)
        | ServiceError::SmsDeliveryFailed { .. }
        | ServiceError::DeadlineTooShort { .. }
        | ServiceError::IdempotencyKeyReused
        | ServiceError::IdempotencyKeyInUse { .. }
        | ServiceError::Store(_)
        | ServiceError::Hash(_)
        | ServiceError::Task(_) => false,
        // Supervisor and sign-in refusals: never the outcome of SendCode or VerifyCode.
        ServiceError::Unauthenticated
        | ServiceError::SupervisorDisabled
        | ServiceError::AuditUnavailable
        | ServiceError::WrongRole
        | ServiceError::ThirdPartyNumber
        | ServiceError::CallNotFound
        | ServiceError::CallNotYours
        | ServiceError::CallEnded
        | ServiceError::CallRequired
        | ServiceError::CallEvidenceOff
        | ServiceError::NoRecentSend
        | ServiceError::LookupLocked { .. }
        | ServiceError::LookupQuota { .. }
        | ServiceError::SignInLocked { .. }
        | ServiceError::SessionRequired
        | ServiceError::SessionExpired
        | ServiceError::WrongSignInCode { .. }
        | ServiceError::SignInExpired
        | ServiceError::FactorUnavailable(_)
        | ServiceError::EmailDeliveryFailed
        | ServiceError::PasskeyRejected
        | ServiceError::PasskeyFailed(_) => false,
    }
}

/// A recorded outcome as the answer it was.
fn replay<M: Message + Default>(outcome: KeyOutcome) -> Result<Answer<M>, Status> {
    if outcome.code == 0 {
        return match M::decode(outcome.body.as_slice()) {
            Ok(message) => Ok(Answer { message, replayed: true }),
            Err(error) => {
                tracing::error!(%error, "an idempotency key's recorded response does not decode");
                Err(Status::internal("internal error"))
            }
        };
    }
    let mut status = Status::with_details(tonic::Code::from_i32(outcome.code), outcome.message, outcome.body.into());
    status.metadata_mut().insert(REPLAY_HEADER, tonic::metadata::MetadataValue::from_static("true"));
    Err(status)
}

fn lease_delta(lease: Duration) -> TimeDelta {
    TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(10))
}

/// A send's progress as its answer after a takeover: delivered, the answer as it was; still pending (the replica
/// stopped between the hand-over and the provider's answer), the same answer marked `delivery_unconfirmed`;
/// failed or withdrawn (no SMS went out), None: the send is done again.
pub(super) fn recovered_send(progress: &SendProgress) -> Option<crate::pb::otp::v1::SendCodeResponse> {
    let mut response = crate::pb::otp::v1::SendCodeResponse::decode(progress.provisional.as_slice()).ok()?;
    match progress.delivery.as_deref() {
        Some("delivered") => Some(response),
        Some("pending") => {
            response.delivery_unconfirmed = true;
            Some(response)
        }
        _ => None,
    }
}
