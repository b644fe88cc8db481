//! Codes are stored only as argon2id PHC strings, salted per verification and keyed with the server's pepper.
//! Hashing is CPU- and memory-heavy, so it runs on its own threads ([`workers`]), one per permit of a semaphore
//! that bounds how many hashes run at once (and so how much memory they take), never on the async reactor.
//!
//! The queue in front of it is bounded too: a flow takes a [`Slot`] before it counts or stores anything, and when
//! the queue is full it waits a short, bounded time for one ([`admission`]: checks before sends, clients served in
//! turn) and is then refused (`OVERLOADED`) instead of waiting its caller into a timeout. A slot carries its
//! caller's deadline: work whose caller has gone by the time a worker is free is dropped unhashed.
//!
//! The codes of one verification (its resends and a looked-up code) share that verification's random salt, so a
//! guess is derived once and compared, in constant time, with each stored output: one argon2 computation per
//! guess however many codes are live. The salt still does what a salt is for: no two verifications share one,
//! so nothing can be precomputed across them; and the pepper, which the database never holds, is what makes a
//! stolen table useless for offline guessing. Codes live minutes and are single-use, so sharing a salt within one
//! verification gives an attacker nothing a wrong guess at the API does not.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::domain::OtpCode;
use crate::metrics::{HashOperation, HashRefusal, Metrics};

mod admission;
mod queue_size;
pub mod sizing;
mod workers;

pub use admission::Work;
use admission::{Places, client_key};
use queue_size::QueueSize;

/// The admission wait when none is configured: how long a call that finds the queue full waits for a place.
pub const DEFAULT_ADMISSION_WAIT: Duration = Duration::from_millis(50);

/// argon2id cost parameters (OWASP's second recommended set by default: m=19 MiB, t=2, p=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self { memory_kib: 19_456, iterations: 2, parallelism: 1 }
    }
}

impl Argon2Params {
    /// Checks the parameters the way argon2 will, so that a bad setting fails at start-up.
    pub fn validate(&self) -> Result<(), String> {
        self.params().map(|_| ()).map_err(|e| e.to_string())
    }

    fn params(&self) -> Result<Params, argon2::Error> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
    }
}

/// The server secret mixed into every hash, so that a stolen database alone cannot be brute-forced.
#[derive(Clone)]
pub struct Pepper(Arc<SecretSlice<u8>>);

impl Pepper {
    /// The shortest pepper accepted, in bytes.
    pub const MIN_LEN: usize = 16;
    /// Argon2's limit on the secret's length is far larger; this keeps configuration mistakes visible.
    pub const MAX_LEN: usize = 1024;

    /// Wraps secret bytes of an acceptable length.
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&bytes.len()) {
            return Err(format!("must be {} to {} bytes, got {}", Self::MIN_LEN, Self::MAX_LEN, bytes.len()));
        }
        Ok(Self(Arc::new(SecretSlice::from(bytes))))
    }

    /// A fresh pepper in the form a pepper file holds: 64 hex characters (256 bits from the OS).
    pub fn generate_text() -> SecretString {
        let mut bytes = [0u8; 32];
        OsRng.unwrap_err().try_fill_bytes(&mut bytes).unwrap_or_else(|e| match e {});
        SecretString::from(hex::encode(bytes))
    }
}

impl Pepper {
    /// A keyed hash (HMAC-SHA256) of a phone number, so the audit log can be searched by number without
    /// holding it in clear. Changing the pepper changes every key.
    pub fn phone_key(&self, e164: &str) -> String {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.0.expose_secret()) else {
            unreachable!("HMAC accepts keys of any length");
        };
        mac.update(b"otpd-audit-phone-v1:");
        mac.update(e164.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A team lead's sign-in code as stored: an HMAC-SHA256 under the pepper, bound to its sign-in's id. The
    /// code lives minutes, allows three tries and is useless without the pepper, which the database never holds,
    /// so a slow hash would add nothing (`docs/sign-in.md`).
    pub fn sign_in_code_mac(&self, sign_in: uuid::Uuid, code: &str) -> String {
        use hmac::Mac;
        hex::encode(self.sign_in_mac(sign_in, code).finalize().into_bytes())
    }

    /// Whether `code` is the one stored as `stored` for `sign_in` (compared in constant time).
    pub fn verify_sign_in_code_mac(&self, sign_in: uuid::Uuid, code: &str, stored: &str) -> bool {
        use hmac::Mac;
        hex::decode(stored).is_ok_and(|stored| self.sign_in_mac(sign_in, code).verify_slice(&stored).is_ok())
    }

    fn sign_in_mac(&self, sign_in: uuid::Uuid, code: &str) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.0.expose_secret()) else {
            unreachable!("HMAC accepts keys of any length");
        };
        mac.update(b"otpd-sign-in-code-v1:");
        mac.update(sign_in.as_bytes());
        mac.update(code.as_bytes());
        mac
    }
}

impl Pepper {
    /// The fingerprint an idempotency key is stored with: an HMAC-SHA256 under the pepper of the method and the
    /// parsed request's fields, each length-prefixed. Keyed, because a VerifyCode's fields hold a code, which a
    /// plain hash of six digits would give away to whoever reads the table.
    pub fn request_fingerprint(&self, method: &str, fields: &[&str]) -> String {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.0.expose_secret()) else {
            unreachable!("HMAC accepts keys of any length");
        };
        mac.update(b"otpd-idempotency-v1:");
        for part in std::iter::once(method).chain(fields.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

impl Pepper {
    /// The audit chain's key when no `--audit-key-file` is given: an HMAC of a fixed label under the pepper, so
    /// it is as secret as the pepper but never equal to it. Rotating the pepper then changes the audit key, which
    /// is why production should give the chain a key file of its own.
    pub fn derive_audit_key(&self) -> crate::domain::audit::AuditKey {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.0.expose_secret()) else {
            unreachable!("HMAC accepts keys of any length");
        };
        mac.update(b"otpd-audit-chain-key-v2");
        let key = mac.finalize().into_bytes().to_vec();
        crate::domain::audit::AuditKey::new(key).unwrap_or_else(|_| unreachable!("32 bytes is long enough"))
    }
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

/// A code's stored form: an argon2id PHC string.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeHash(pub String);

impl CodeHash {
    /// The salt it was hashed with, to hash the next code of the same verification with.
    pub fn salt(&self) -> Option<CodeSalt> {
        let parsed = PasswordHash::new(&self.0).ok()?;
        parsed.salt.map(|salt| CodeSalt(salt.as_str().to_owned()))
    }

    /// Everything but the output: what decides the derivation (algorithm, version, parameters, salt).
    fn derivation(&self) -> &str {
        self.0.rfind('$').map_or(self.0.as_str(), |end| &self.0[..end])
    }
}

/// A verification's salt, as the PHC string writes it (B64, no padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSalt(String);

impl std::fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeHash(..)")
    }
}

/// The hashing failed: a bug or resource exhaustion, never the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// argon2 refused (e.g. out of memory).
    #[error("argon2: {0}")]
    Argon2(String),
    /// The computation panicked or its thread is gone.
    #[error("hashing worker failed")]
    Worker,
    /// The hashing pool was closed (the service is shutting down).
    #[error("hashing pool closed")]
    Closed,
    /// The queue is full: refused before anything was counted or stored.
    #[error("hashing queue full")]
    Overloaded,
    /// The caller's deadline passed while the work waited for a worker: dropped unhashed.
    #[error("caller's deadline passed in the hashing queue")]
    CallerGone,
}

/// How long the hashing queue may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// At most this many computations queued or running.
    Fixed(usize),
    /// As many as the workers finish within this delay: from one hash timed at start-up, then from how long the
    /// workers' computations take.
    Delay(Duration),
}

/// A place in the hashing queue; given back (to the next waiting call, or to the pool) when the work is done or
/// dropped.
pub struct Slot {
    places: Arc<Places>,
    deadline: Option<tokio::time::Instant>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("deadline", &self.deadline).finish_non_exhaustive()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.hash_queue_place(false);
        self.places.give_back();
    }
}

/// Hashes and verifies codes on the hashing threads, behind a bounded queue.
#[derive(Clone)]
pub struct CodeHasher {
    pepper: Pepper,
    params: Argon2Params,
    permits: Arc<Semaphore>,
    threads: Arc<workers::Workers>,
    hashes: Arc<AtomicU64>,
    places: Arc<Places>,
    /// The automatic bound, when the queue is sized from a delay.
    size: Option<Arc<QueueSize>>,
    metrics: Arc<Metrics>,
}

impl CodeHasher {
    /// A hasher that runs at most `workers` argon2 computations at once, on threads `nice` steps below the rest of
    /// the process in CPU priority, with a queue of at most `limit`.
    pub fn new(
        pepper: Pepper,
        params: Argon2Params,
        workers: usize,
        nice: u8,
        limit: QueueLimit,
    ) -> Result<Self, String> {
        params.validate()?;
        let workers = workers.max(1);
        let mut hasher = Self {
            pepper,
            params,
            permits: Arc::new(Semaphore::new(workers)),
            threads: Arc::new(workers::Workers::start(workers, nice).map_err(|e| format!("hashing threads: {e}"))?),
            hashes: Arc::new(AtomicU64::new(0)),
            places: Arc::new(Places::new(usize::MAX, DEFAULT_ADMISSION_WAIT)),
            size: None,
            metrics: Arc::default(),
        };
        let queue_limit = match limit {
            QueueLimit::Fixed(n) => n.max(1),
            QueueLimit::Delay(delay) => {
                let size = QueueSize::new(delay, workers, hasher.time_one_hash()?);
                let limit = size.limit();
                hasher.size = Some(Arc::new(size));
                limit
            }
        };
        hasher.places = Arc::new(Places::new(queue_limit, DEFAULT_ADMISSION_WAIT));
        tracing::info!(workers, queue = queue_limit, "argon2 hashing pool");
        Ok(hasher)
    }

    /// A call that finds the queue full waits at most `wait` for a place (zero: refused at once). Set before the
    /// hasher is shared.
    pub fn with_admission_wait(mut self, wait: Duration) -> Self {
        self.places = Arc::new(Places::new(self.places.limit(), wait));
        self
    }

    /// How long one hash with the configured parameters takes here (at start-up, to size the queue).
    fn time_one_hash(&self) -> Result<Duration, String> {
        let params = self.params.params().map_err(|e| e.to_string())?;
        let argon2 =
            Argon2::new_with_secret(self.pepper.0.expose_secret(), Algorithm::Argon2id, Version::V0x13, params)
                .map_err(|e| e.to_string())?;
        // The best of three, in memory allocated once as the workers keep it: a cold first hash (page faults, a
        // machine still busy with something else) would size the queue far too small.
        let mut memory = vec![argon2::Block::default(); argon2.params().block_count()];
        let mut out = [0u8; 32];
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let started = std::time::Instant::now();
            argon2
                .hash_password_into_with_memory(b"000000", b"calibration salt", &mut out, &mut memory)
                .map_err(|e| e.to_string())?;
            best = best.min(started.elapsed());
        }
        Ok(best)
    }

    /// Reports the queue and the computations to `metrics` (before any work is admitted).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.hash_queue_limit(self.places.limit());
        self.metrics = metrics;
        self
    }

    /// The longest the queue may be (queued and running computations).
    pub fn queue_limit(&self) -> usize {
        self.places.limit()
    }

    /// Takes a place in the queue for `work` of `client`, whose caller waits until `deadline`; when the queue is
    /// full, waits for one at most the admission wait (never past the deadline), then refuses. Take it before
    /// counting or storing anything, so that a refusal costs nothing.
    pub async fn admit(
        &self,
        work: Work,
        client: Option<IpAddr>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Slot, HashError> {
        match self.places.take(work, client_key(client), deadline).await {
            Ok(()) => {
                self.metrics.hash_queue_place(true);
                Ok(Slot { places: Arc::clone(&self.places), deadline, metrics: Arc::clone(&self.metrics) })
            }
            Err(admission::NoPlace::Full) => {
                self.metrics.hash_refused(HashRefusal::Overloaded);
                Err(HashError::Overloaded)
            }
        }
    }

    /// How many argon2 computations (hashes and verifications) this hasher has run.
    pub fn computations(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }

    /// Hashes a new code with its verification's `salt`, or a fresh one for a new verification.
    pub async fn hash(&self, slot: Slot, code: &OtpCode, salt: Option<CodeSalt>) -> Result<CodeHash, HashError> {
        let code = SecretString::from(code.expose().to_owned());
        let counter = Arc::clone(&self.hashes);
        self.run(slot, HashOperation::Hash, move |argon2| {
            let salt = match salt {
                Some(CodeSalt(salt)) => SaltString::from_b64(&salt),
                None => {
                    let mut salt = [0u8; 16];
                    OsRng.unwrap_err().try_fill_bytes(&mut salt).unwrap_or_else(|e| match e {});
                    SaltString::encode_b64(&salt)
                }
            }
            .map_err(|e| HashError::Argon2(e.to_string()))?;
            counter.fetch_add(1, Ordering::Relaxed);
            let mut salt_bytes = [0u8; 64];
            let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| HashError::Argon2(e.to_string()))?;
            let output = hash_reusing_memory(argon2, code.expose_secret().as_bytes(), salt_bytes)
                .map_err(|e| HashError::Argon2(e.to_string()))?;
            let phc = PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: argon2
                    .params()
                    .try_into()
                    .map_err(|e: argon2::password_hash::Error| HashError::Argon2(e.to_string()))?,
                salt: Some(salt.as_salt()),
                hash: Some(output),
            };
            Ok(CodeHash(phc.to_string()))
        })
        .await
    }

    /// Returns the index of the first hash in `hashes` that `code` matches. The guess is derived once per
    /// distinct salt and parameters (once, for the codes of one verification) and compared in constant time
    /// with every stored output.
    pub async fn find_match(
        &self,
        slot: Slot,
        code: &OtpCode,
        hashes: Vec<CodeHash>,
    ) -> Result<Option<usize>, HashError> {
        let code = SecretString::from(code.expose().to_owned());
        let counter = Arc::clone(&self.hashes);
        self.run(slot, HashOperation::Verify, move |argon2| {
            let mut derived: Vec<(&str, Option<argon2::password_hash::Output>)> = Vec::new();
            let mut found = None;
            for (i, hash) in hashes.iter().enumerate() {
                let Ok(parsed) = PasswordHash::new(&hash.0) else {
                    // A row that is not a PHC string can never match; it is a data problem, not the caller's.
                    tracing::error!(index = i, "stored code hash is not a PHC string");
                    continue;
                };
                let guess = match derived.iter().find(|(derivation, _)| *derivation == hash.derivation()) {
                    Some((_, guess)) => *guess,
                    None => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        let guess = derive(argon2, code.expose_secret().as_bytes(), &parsed);
                        derived.push((hash.derivation(), guess));
                        guess
                    }
                };
                // Every stored output is compared, matched or not, so the time does not tell which one matched.
                if guess.is_some() && guess == parsed.hash && found.is_none() {
                    found = Some(i);
                }
            }
            Ok(found)
        })
        .await
    }

    /// Runs `f` with a keyed argon2id instance on a hashing thread, holding a permit and `slot`, inside the
    /// current span; drops the work unrun if the slot's deadline passes before a worker is free.
    async fn run<T: Send + 'static>(
        &self,
        slot: Slot,
        operation: HashOperation,
        f: impl FnOnce(&Argon2<'_>) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let asked = std::time::Instant::now();
        let gone = |metrics: &Metrics| {
            metrics.hash_refused(HashRefusal::DeadlinePassedInQueue);
            HashError::CallerGone
        };
        let acquire = Arc::clone(&self.permits).acquire_owned();
        let permit = match slot.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, acquire).await.map_err(|_| gone(&self.metrics))?,
            None => acquire.await,
        }
        .map_err(|_| HashError::Closed)?;
        if slot.deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
            return Err(gone(&self.metrics));
        }
        let pepper = self.pepper.clone();
        let params = self.params;
        let span = tracing::Span::current();
        let metrics = Arc::clone(&self.metrics);
        let size = self.size.clone();
        let (answer, result) = tokio::sync::oneshot::channel();
        let job: workers::Job = Box::new(move || {
            let _entered = span.enter();
            let started = std::time::Instant::now();
            metrics.hash_queue_wait(started - asked);
            let computed = params.params().map_err(|e| HashError::Argon2(e.to_string())).and_then(|params| {
                let argon2 =
                    Argon2::new_with_secret(pepper.0.expose_secret(), Algorithm::Argon2id, Version::V0x13, params)
                        .map_err(|e| HashError::Argon2(e.to_string()))?;
                f(&argon2)
            });
            let took = started.elapsed();
            metrics.hash_duration(operation, took);
            if let Some(limit) = size.map(|size| size.observe(took)).filter(|limit| *limit != slot.places.limit()) {
                slot.places.set_limit(limit);
                metrics.hash_queue_limit(limit);
            }
            let _ = answer.send(computed);
            Box::new((permit, slot))
        });
        if let Err(job) = self.threads.run(job) {
            // No idle thread although a permit was free: one has died. The blocking pool stands in.
            tracing::error!("no idle hashing thread; using the blocking pool");
            tokio::task::spawn_blocking(move || drop(job()));
        }
        result.instrument(tracing::debug_span!("argon2")).await.map_err(|_| HashError::Worker)?
    }
}

/// The output of `code` under the derivation `stored` was made with (its algorithm, version, parameters and
/// salt), keyed with the pepper `argon2` holds; None if `stored` names something argon2 cannot compute.
fn derive(argon2: &Argon2<'_>, code: &[u8], stored: &PasswordHash<'_>) -> Option<argon2::password_hash::Output> {
    let params = Params::try_from(stored).ok()?;
    let salt = stored.salt?;
    if hashed_as_we_hash(argon2.params(), stored, &params) {
        let mut salt_bytes = [0u8; 64];
        return hash_reusing_memory(argon2, code, salt.decode_b64(&mut salt_bytes).ok()?).ok();
    }
    // Hashed under other settings (the cost was changed since): argon2's own path, which allocates.
    let derived = argon2.hash_password_customized(code, Some(stored.algorithm), stored.version, params, salt);
    derived.ok()?.hash
}

/// Whether `stored` (whose parameters are `params`) was hashed as `own` hashes now: then its check can run in
/// the thread's reused memory. Parameters read from a PHC string carry the output length, which `own` leaves
/// at its default, so the costs are compared one by one.
fn hashed_as_we_hash(own: &Params, stored: &PasswordHash<'_>, params: &Params) -> bool {
    stored.algorithm == Algorithm::Argon2id.ident()
        && stored.version == Some(Version::V0x13.into())
        && (params.m_cost(), params.t_cost(), params.p_cost()) == (own.m_cost(), own.t_cost(), own.p_cost())
        && params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)
            == own.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)
        && params.keyid().is_empty()
        && params.data().is_empty()
}

thread_local! {
    /// argon2's working memory, kept by each blocking-pool thread between hashes: allocating and zeroing
    /// 19–64 MiB for every hash costs as much as a good part of the hash. argon2 writes every block before it
    /// reads it, so what a previous hash left there changes nothing.
    static MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `argon2`'s output for `code` and `salt`, in this thread's reused memory.
fn hash_reusing_memory(
    argon2: &Argon2<'_>,
    code: &[u8],
    salt: &[u8],
) -> Result<argon2::password_hash::Output, argon2::Error> {
    let blocks = argon2.params().block_count();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        argon2.hash_password_into_with_memory(code, salt, &mut out, &mut memory[..blocks])
    })?;
    argon2::password_hash::Output::new(&out).map_err(|_| argon2::Error::OutputTooShort)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CodeLength;

    fn fresh() -> Pepper {
        Pepper::new(Pepper::generate_text().expose_secret().as_bytes().to_vec()).unwrap()
    }

    fn hasher(pepper: Pepper) -> CodeHasher {
        let params = Argon2Params { memory_kib: 1024, iterations: 1, parallelism: 1 };
        CodeHasher::new(pepper, params, 2, 0, QueueLimit::Fixed(64)).unwrap()
    }

    /// Hashes outside any flow: a slot with no deadline.
    async fn hash(h: &CodeHasher, code: &OtpCode, salt: Option<CodeSalt>) -> CodeHash {
        h.hash(h.admit(Work::Send, None, None).await.unwrap(), code, salt).await.unwrap()
    }

    async fn find(h: &CodeHasher, code: &OtpCode, hashes: Vec<CodeHash>) -> Option<usize> {
        h.find_match(h.admit(Work::Check, None, None).await.unwrap(), code, hashes).await.unwrap()
    }

    #[tokio::test]
    async fn the_queue_refuses_past_its_bound_and_frees_places() {
        let h = CodeHasher::new(fresh(), Argon2Params::default(), 1, 0, QueueLimit::Fixed(2)).unwrap();
        let h = h.with_admission_wait(Duration::ZERO);
        let a = h.admit(Work::Send, None, None).await.unwrap();
        let _b = h.admit(Work::Send, None, None).await.unwrap();
        assert!(matches!(h.admit(Work::Check, None, None).await, Err(HashError::Overloaded)));
        drop(a);
        assert!(h.admit(Work::Send, None, None).await.is_ok());
        let sized = CodeHasher::new(fresh(), Argon2Params::default(), 2, 0, QueueLimit::Delay(Duration::from_secs(1)));
        let limit = sized.unwrap().queue_limit();
        assert!(limit >= 2 && limit % 2 == 0, "whole hashes per worker: {limit}");
    }

    #[tokio::test]
    async fn an_automatic_queue_follows_how_long_the_workers_take() {
        let cheap = Argon2Params { memory_kib: 1024, iterations: 1, parallelism: 1 };
        let h = CodeHasher::new(fresh(), cheap, 2, 0, QueueLimit::Delay(Duration::from_secs(1))).unwrap();
        assert!(h.queue_limit() > 2, "a cheap hash: many per second");
        // As if the workers had slowed to 10 s a hash (a machine taken by something else): the next computation
        // brings the bound down to one a worker.
        let size = Arc::clone(h.size.as_ref().unwrap());
        for _ in 0..64 {
            size.observe(Duration::from_secs(10));
        }
        assert!(h.queue_limit() > 2, "the places change when a worker reports, not before");
        hash(&h, &OtpCode::parse("123456", CodeLength::default()).unwrap(), None).await;
        assert_eq!(h.queue_limit(), 2);
    }

    #[tokio::test]
    async fn hash_verifies_only_the_same_code_with_the_same_pepper() {
        let pepper = fresh();
        let h = hasher(pepper.clone());
        let code = OtpCode::parse("123456", CodeLength::default()).unwrap();
        let other = OtpCode::parse("123457", CodeLength::default()).unwrap();
        let hash = hash(&h, &code, None).await;
        assert!(hash.0.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(!hash.0.contains("123456"));
        assert_eq!(find(&h, &code, vec![hash.clone()]).await, Some(0));
        assert_eq!(find(&h, &other, vec![hash.clone()]).await, None);
        let other_pepper = hasher(fresh());
        assert_eq!(find(&other_pepper, &code, vec![hash]).await, None);
    }

    #[tokio::test]
    async fn reusing_memory_gives_what_argon2_gives() {
        let pepper = fresh();
        let h = hasher(pepper.clone());
        let code = OtpCode::parse("482913", CodeLength::default()).unwrap();
        let ours = hash(&h, &code, None).await;
        let salt = ours.salt().unwrap();
        let params = Params::new(1024, 1, 1, None).unwrap();
        let argon2 =
            Argon2::new_with_secret(pepper.0.expose_secret(), Algorithm::Argon2id, Version::V0x13, params).unwrap();
        let salt_string = SaltString::from_b64(&salt.0).unwrap();
        let theirs = argon2.hash_password(b"482913", &salt_string).unwrap();
        assert_eq!(ours.0, theirs.to_string(), "the same PHC string as argon2's own hash");
        // And again on a thread whose memory already holds another hash's blocks.
        assert_eq!(hash(&h, &code, Some(salt)).await, ours);
    }

    #[tokio::test]
    async fn checks_of_our_own_hashes_run_in_reused_memory() {
        let h = hasher(fresh());
        let code = OtpCode::parse("482913", CodeLength::default()).unwrap();
        let stored = hash(&h, &code, None).await;
        let parsed = PasswordHash::new(&stored.0).unwrap();
        let params = Params::try_from(&parsed).unwrap();
        assert_eq!(params.output_len(), Some(32), "a PHC string's parameters carry the output length");
        let own = Params::new(1024, 1, 1, None).unwrap();
        assert!(hashed_as_we_hash(&own, &parsed, &params));
        assert!(!hashed_as_we_hash(&Params::new(2048, 1, 1, None).unwrap(), &parsed, &params));
    }

    #[tokio::test]
    async fn same_code_hashes_differently_each_time() {
        let h = hasher(fresh());
        let code = OtpCode::parse("000000", CodeLength::default()).unwrap();
        assert_ne!(hash(&h, &code, None).await, hash(&h, &code, None).await);
    }

    #[tokio::test]
    async fn codes_of_one_verification_cost_one_derivation_per_guess() {
        let h = hasher(fresh());
        let codes: Vec<_> =
            ["111111", "222222", "333333"].iter().map(|c| OtpCode::parse(c, CodeLength::default()).unwrap()).collect();
        let first = hash(&h, &codes[0], None).await;
        let mut hashes = vec![first.clone()];
        for code in &codes[1..] {
            hashes.push(hash(&h, code, first.salt()).await);
        }
        assert!(hashes.iter().all(|c| c.salt() == first.salt()));
        assert_ne!(hashes[0], hashes[1]);

        let before = h.computations();
        let wrong = OtpCode::parse("999999", CodeLength::default()).unwrap();
        assert_eq!(find(&h, &wrong, hashes.clone()).await, None);
        assert_eq!(h.computations() - before, 1, "one derivation for three codes");
        for (i, code) in codes.iter().enumerate() {
            assert_eq!(find(&h, code, hashes.clone()).await, Some(i));
        }

        // Codes with their own salts (written before shared salts) still match, one derivation each.
        let other = hash(&h, &codes[1], None).await;
        let before = h.computations();
        assert_eq!(find(&h, &codes[1], vec![first, other]).await, Some(1));
        assert_eq!(h.computations() - before, 2);
    }

    #[test]
    fn pepper_length_is_checked() {
        assert!(Pepper::new(vec![0; 15]).is_err());
        assert!(Pepper::new(vec![0; 16]).is_ok());
    }

    #[tokio::test]
    async fn the_hashing_queue_reports_its_depth_refusals_and_work() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let pepper = Pepper::new(b"metrics-test-pepper-0123".to_vec()).unwrap();
        let params = Argon2Params { memory_kib: 1024, iterations: 1, parallelism: 1 };
        let hasher =
            CodeHasher::new(pepper, params, 1, 0, QueueLimit::Fixed(2)).unwrap().with_metrics(Arc::clone(&metrics));
        let hasher = hasher.with_admission_wait(Duration::ZERO);
        let admit = |deadline| hasher.admit(Work::Send, None, deadline);
        assert_eq!(metrics.sample("otpd_hash_queue_limit"), Some(2.0));
        let first = admit(None).await.unwrap();
        let second = admit(None).await.unwrap();
        assert!(admit(None).await.is_err());
        assert_eq!(metrics.sample("otpd_hash_queue_depth"), Some(2.0));
        assert_eq!(metrics.sample("otpd_hash_queue_refusals_total{reason=\"overloaded\"}"), Some(1.0));

        let code = crate::domain::OtpCode::generate(crate::domain::CodeLength::default());
        hasher.hash(first, &code, None).await.unwrap();
        drop(second);
        let past = admit(Some(tokio::time::Instant::now())).await.unwrap();
        assert!(hasher.hash(past, &code, None).await.is_err(), "its deadline has passed");
        let refusals = "otpd_hash_queue_refusals_total{reason=\"deadline_passed_in_queue\"}";
        assert_eq!(metrics.sample(refusals), Some(1.0));
        assert_eq!(metrics.sample("otpd_hash_duration_seconds_count{operation=\"hash\"}"), Some(1.0));
        assert_eq!(metrics.sample("otpd_hash_queue_wait_seconds_count"), Some(1.0));
        // The worker gives its place back once it is idle again.
        for _ in 0..1000 {
            if metrics.sample("otpd_hash_queue_depth") == Some(0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(metrics.sample("otpd_hash_queue_depth"), Some(0.0));
    }
}
