//! Idempotency keys in the shared store (issue 18 §3; Stripe's design: the key, a fingerprint of the request, the
//! recorded outcome and a lock state in one row, inserted first). A claim is one `INSERT … ON CONFLICT`, so of any
//! number of duplicates on any replicas exactly one acts; the claim carries a lease that its owner renews while it
//! works and another replica may take over once it lapses (a replica killed mid-call); every write of the owner is
//! conditioned on its token, so a replica whose claim was taken over can no longer record anything.

use chrono::{DateTime, Utc};

use super::{CodeId, StoreResult};

/// A claim to make: who, for which request, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyClaim {
    /// The method and the caller (never shared between two of either).
    pub scope: String,
    /// The caller's key.
    pub key: String,
    /// The keyed hash of the parsed request.
    pub fingerprint: String,
    /// This attempt's token: what its later writes are conditioned on.
    pub token: uuid::Uuid,
    /// Now.
    pub now: DateTime<Utc>,
    /// Until when the claim holds unless renewed.
    pub lease_until: DateTime<Utc>,
    /// When the row (and its outcome) is forgotten.
    pub expires_at: DateTime<Utc>,
}

/// A recorded outcome: `code` 0 with the response message's bytes, or a gRPC status code with its message and
/// details (an encoded `google.rpc.Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOutcome {
    /// 0 (OK) or the status code.
    pub code: i32,
    /// The status message (empty for OK).
    pub message: String,
    /// The response, or the status's details.
    pub body: Vec<u8>,
}

/// What a first attempt left of a send before it handed the SMS over: its code, what became of it, and the
/// answer it would give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendProgress {
    /// The code issued.
    pub code: CodeId,
    /// Its `codes.delivery` (`pending`, `delivered`, `failed`), or None when the row is gone (withdrawn: never
    /// handed over).
    pub delivery: Option<String>,
    /// The encoded response the send answers.
    pub provisional: Vec<u8>,
}

/// A key's row as another attempt finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The fingerprint of the request that claimed it.
    pub fingerprint: String,
    /// Set once the outcome is recorded.
    pub outcome: Option<KeyOutcome>,
    /// While running: when another replica may take over.
    pub lease_until: Option<DateTime<Utc>>,
    /// A send's progress, if it issued a code.
    pub progress: Option<SendProgress>,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The key was free (or its row expired): this attempt owns it.
    Mine,
    /// Another attempt claimed it.
    Taken(KeyRecord),
}

/// What idempotency keys need from the store.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Claims the key, or returns the row of the attempt that holds it: one statement, so that of many
    /// concurrent claims exactly one gets [`Claimed::Mine`]. An expired row is claimed afresh.
    async fn claim_key(&self, claim: &KeyClaim) -> StoreResult<Claimed>;

    /// The key's row (None once purged or never claimed).
    async fn key_record(&self, scope: &str, key: &str) -> StoreResult<Option<KeyRecord>>;

    /// Takes over a running claim whose lease ran out at `claim.now`, giving it `claim.token` and a new lease:
    /// true for the one attempt that did. The fingerprint must match.
    async fn take_over_key(&self, claim: &KeyClaim) -> StoreResult<bool>;

    /// Moves the lease of the claim held by `token` on; false when the claim is no longer its own.
    async fn renew_key(&self, scope: &str, key: &str, token: uuid::Uuid, until: DateTime<Utc>) -> StoreResult<bool>;

    /// Records, before the SMS is handed over, the code a send issued and the answer it will give; false when
    /// the claim is no longer `token`'s (then nothing may be sent).
    async fn key_progress(
        &self,
        scope: &str,
        key: &str,
        token: uuid::Uuid,
        code: CodeId,
        provisional: &[u8],
    ) -> StoreResult<bool>;

    /// Records the outcome of the claim held by `token`; false when the claim is no longer its own.
    async fn finish_key(&self, scope: &str, key: &str, token: uuid::Uuid, outcome: &KeyOutcome) -> StoreResult<bool>;

    /// Frees the key held by `token` (an outcome a retry may change: nothing took effect).
    async fn release_key(&self, scope: &str, key: &str, token: uuid::Uuid) -> StoreResult<()>;
}
