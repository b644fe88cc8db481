//! Team leads' sign-in (docs/sign-in.md): the person's own token is the first factor; a second factor (a
//! passkey, a code otpd sends to their registered phone, or an emergency code by e-mail) opens a session that
//! ends after `--session-idle` without a call and `--session-max` after sign-in. Failed sign-ins lock the person
//! and the client address; they are audited, but one event per person (or address) per minute with a count, so
//! a guesser cannot flood the audit chain.

pub mod mail;
pub mod passkey;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::domain::audit::{AccessContext, AuditAction, AuditOutcome, NewAuditEvent};
use crate::domain::{Actor, CodeLength, EmailAddress, OtpCode, PhoneNumber, SecondFactor, SignInPolicy, TokenKind};
use crate::hashing::Pepper;
use crate::service::{ServiceError, until};
use crate::store::signin::{
    ChallengeKind, ChallengeStart, CodeLimits, FailurePolicy, NewChallenge, NewSession, PasskeyRecord, SessionEnd,
    SessionState, SignInAccount, SignInStore, address_subject, person_subject,
};
use crate::supervision::token;

/// Session tokens start with this (personal tokens with [`token::PREFIX`]).
pub const SESSION_PREFIX: &str = "otpsess_";

/// Sends a sign-in code to a person's registered phone (AlimTalk, then SMS, from the configured sender).
#[async_trait::async_trait]
pub trait PhoneCodeSender: Send + Sync + 'static {
    /// Sends `code`; Err: no channel took it.
    async fn send(&self, phone: &PhoneNumber, code: &OtpCode) -> Result<(), ServiceError>;
}

/// Sends the emergency sign-in code by e-mail.
#[async_trait::async_trait]
pub trait CodeMailer: Send + Sync + 'static {
    /// Sends `code` to `to`, saying who asked and from where.
    async fn send(&self, to: &EmailAddress, message: &SignInMail<'_>) -> Result<(), ServiceError>;
}

/// What the emergency e-mail says.
#[derive(Debug)]
pub struct SignInMail<'a> {
    /// The person signing in.
    pub name: &'a str,
    /// The code.
    pub code: &'a OtpCode,
    /// When it was asked for.
    pub at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// Where the sign-in came from.
    pub origin: &'a AccessContext,
}

/// A factor a person can use now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvailableFactor {
    /// The factor.
    pub factor: SecondFactor,
    /// Where a code would go, masked; for passkeys, how many are enrolled.
    pub destination: String,
}

/// A started sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Its id.
    pub id: uuid::Uuid,
    /// Where the code went, masked.
    pub destination: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// For a passkey: the request options (JSON).
    pub passkey_options: Option<String>,
}

/// The proof that finishes a sign-in.
#[derive(Debug)]
pub enum Proof {
    /// A code's digits as typed.
    Code(SecretString),
    /// A passkey's assertion (`PublicKeyCredential.toJSON()`).
    Passkey(String),
}

/// A new session.
#[derive(Debug)]
pub struct Session {
    /// Its bearer token, shown once.
    pub token: SecretString,
    /// Its id.
    pub id: uuid::Uuid,
    /// When it ends unless used.
    pub idle_until: DateTime<Utc>,
    /// When it ends in any case.
    pub expires_at: DateTime<Utc>,
}

/// What a supervisor call's bearer token resolved to.
#[derive(Debug)]
pub enum Bearer {
    /// A session, or a token allowed without one.
    Actor(Actor),
    /// A disabled person's token whose refusal is due in the audit log (the handler records what the call
    /// named); `held_back` failures of theirs were not recorded one by one.
    Disabled { actor: Actor, disabled_at: DateTime<Utc>, held_back: u32 },
}

/// The sign-in service.
#[derive(Clone)]
pub struct SignInService {
    store: Arc<dyn SignInStore>,
    audit: AuditLog,
    pepper: Pepper,
    clock: Arc<dyn Clock>,
    policy: SignInPolicy,
    phone: Option<Arc<dyn PhoneCodeSender>>,
    mail: Option<Arc<dyn CodeMailer>>,
    passkeys: Option<Arc<passkey::Passkeys>>,
    allowed: crate::domain::AllowedCountries,
}

/// The length of sign-in codes: six digits.
fn code_length() -> CodeLength {
    CodeLength::default()
}

impl SignInService {
    /// Assembles the service; factors are added with [`Self::with_phone`] and [`Self::with_mail`].
    pub fn new(
        store: Arc<dyn SignInStore>,
        audit: AuditLog,
        pepper: Pepper,
        clock: Arc<dyn Clock>,
        policy: SignInPolicy,
        allowed: crate::domain::AllowedCountries,
    ) -> Self {
        Self { store, audit, pepper, clock, policy, phone: None, mail: None, passkeys: None, allowed }
    }

    /// Codes to the person's phone go through `sender`.
    pub fn with_phone(mut self, sender: Arc<dyn PhoneCodeSender>) -> Self {
        self.phone = Some(sender);
        self
    }

    /// Emergency codes go through `mailer`.
    pub fn with_mail(mut self, mailer: Arc<dyn CodeMailer>) -> Self {
        self.mail = Some(mailer);
        self
    }

    /// Passkeys are checked by `passkeys` (the relying party of the console's origin).
    pub fn with_passkeys(mut self, passkeys: Arc<passkey::Passkeys>) -> Self {
        self.passkeys = Some(passkeys);
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> &SignInPolicy {
        &self.policy
    }

    fn failure_policy(&self) -> FailurePolicy {
        FailurePolicy {
            lock_after: self.policy.lock_after,
            lock_for: self.policy.lock_for,
            audit_every: TimeDelta::minutes(1),
        }
    }

    /// The person a personal token names, refusing (and counting) a bad token, a disabled person, a locked
    /// person or address, and a service token (scripts do not sign in).
    async fn person(&self, token: &str, origin: &AccessContext) -> Result<SignInAccount, ServiceError> {
        let account = self.account(token, origin).await?;
        if account.disabled_at.is_some() {
            self.failed(Some(&account.actor), origin, "token of a disabled supervisor").await?;
            return Err(ServiceError::SupervisorDisabled);
        }
        if account.actor.kind == TokenKind::Service {
            return Err(ServiceError::FactorUnavailable("service tokens are used without a session"));
        }
        Ok(account)
    }

    /// The holder of a personal token, refusing a locked person or address (with the same answer whether the
    /// token is good or not, so a locked address learns nothing) and counting an unknown token as a failure.
    async fn account(&self, token: &str, origin: &AccessContext) -> Result<SignInAccount, ServiceError> {
        let now = self.clock.now();
        let address = origin.client_address().map(address_subject);
        let Some(mut account) = self.store.sign_in_account(&token::hash(token), address.as_deref(), now).await? else {
            if let Some(address) = &address
                && let Some(until) = self.store.sign_in_lock(address, now).await?
            {
                return Err(locked(until, now));
            }
            self.failed(None, origin, "unknown token").await?;
            return Err(ServiceError::Unauthenticated);
        };
        if let Some(until) = account.locked_until {
            return Err(locked(until, now));
        }
        account.actor.access = origin.clone();
        Ok(account)
    }

    /// Counts a failed sign-in of `who` (None: an unknown token) from `origin` and writes the audit event due, if
    /// one is (at most one per person or address per minute, and always one when a lock starts).
    async fn failed(&self, who: Option<&Actor>, origin: &AccessContext, why: &str) -> Result<(), ServiceError> {
        self.failed_with(who, origin, why, None).await.map(|_| ())
    }

    /// [`Self::failed`], except that with `action` the event due (unless a lock started) is left to the caller,
    /// which records what the call named: returns the failures it covers (0: none due, or written here).
    async fn failed_with(
        &self,
        who: Option<&Actor>,
        origin: &AccessContext,
        why: &str,
        action: Option<AuditAction>,
    ) -> Result<u32, ServiceError> {
        let now = self.clock.now();
        let policy = self.failure_policy();
        let address = match origin.client_address() {
            Some(a) => Some(self.store.record_failure(&address_subject(a), now, policy).await?),
            None => None,
        };
        let person = match who {
            Some(actor) => Some(self.store.record_failure(&person_subject(&actor.name), now, policy).await?),
            None => None,
        };
        // The event follows the person when known, else the address.
        let (due, locked_now) = match (&person, &address) {
            (Some(p), _) => (p.to_audit, p.newly_locked.then_some(p.locked_until).flatten()),
            (None, Some(a)) => (a.to_audit, a.newly_locked.then_some(a.locked_until).flatten()),
            (None, None) => (1, None),
        };
        let address_locked = address.filter(|a| a.newly_locked && person.is_some()).and_then(|a| a.locked_until);
        tracing::warn!(target: "audit", reason = why, from = %from(origin), due, "failed sign-in");
        if action.is_some() && due > 0 && locked_now.is_none() {
            // The caller writes the event (with what the call named).
            return Ok(due);
        }
        if due > 0 || locked_now.is_some() {
            let mut detail = format!("{} failed sign-in(s) from {}: {why}", due.max(1), from(origin));
            if let Some(until) = locked_now {
                detail.push_str(&format!("; sign-in locked until {}", rfc3339(until)));
            }
            self.append(origin, who, action.unwrap_or(AuditAction::SignIn), AuditOutcome::Denied, detail).await?;
        }
        if let Some(until) = address_locked {
            let detail =
                format!("sign-in from {} locked until {} after repeated failures", from(origin), rfc3339(until));
            self.append(origin, None, AuditAction::SignIn, AuditOutcome::Denied, detail).await?;
        }
        Ok(0)
    }

    async fn append(
        &self,
        origin: &AccessContext,
        who: Option<&Actor>,
        action: AuditAction,
        outcome: AuditOutcome,
        detail: String,
    ) -> Result<(), ServiceError> {
        let mut event = self.audit.event(who, action, None, outcome, detail);
        if who.is_none() {
            event.actor_name = "anonymous".into();
            event.actor_role = "none".into();
        }
        if !origin.is_empty() {
            event.access = Some(origin.clone());
        }
        self.audit.append(event).await.map_err(audit_failed)?;
        Ok(())
    }

    /// The factors the token's holder can use now.
    pub async fn factors(
        &self,
        token: &str,
        origin: &AccessContext,
    ) -> Result<(String, Vec<AvailableFactor>), ServiceError> {
        let account = self.person(token, origin).await?;
        let mut factors = Vec::new();
        if account.passkeys > 0 {
            let destination = format!("{} passkey(s)", account.passkeys);
            factors.push(AvailableFactor { factor: SecondFactor::Passkey, destination });
        }
        if self.phone.is_some()
            && let Some(phone) = self.registered_phone(&account)
        {
            factors.push(AvailableFactor { factor: SecondFactor::PhoneCode, destination: phone.masked().to_owned() });
        }
        if self.mail.is_some()
            && let Some(email) = registered_email(&account)
        {
            factors.push(AvailableFactor { factor: SecondFactor::EmailCode, destination: email.masked() });
        }
        Ok((account.actor.name, factors))
    }

    fn registered_phone(&self, account: &SignInAccount) -> Option<PhoneNumber> {
        PhoneNumber::parse(account.phone.as_deref()?, &self.allowed).ok()
    }

    /// Starts a sign-in with `factor`: a code is sent, or a passkey challenge returned.
    pub async fn start(
        &self,
        token: &str,
        factor: SecondFactor,
        origin: &AccessContext,
    ) -> Result<Started, ServiceError> {
        let account = self.person(token, origin).await?;
        let now = self.clock.now();
        let id = uuid::Uuid::now_v7();
        let expires_at = now + self.policy.challenge_ttl;
        let limits = CodeLimits { cooldown: self.policy.code_cooldown, per_hour: self.policy.codes_per_hour };
        let code = OtpCode::generate(code_length());
        let challenge = |secret_hash: Option<String>| NewChallenge {
            id,
            supervisor: account.actor.name.clone(),
            kind: ChallengeKind::SignIn(factor),
            secret_hash,
            state: None,
            created_at: now,
            expires_at,
        };
        let destination = match factor {
            SecondFactor::PhoneCode => {
                let (Some(sender), Some(phone)) = (&self.phone, self.registered_phone(&account)) else {
                    return Err(ServiceError::FactorUnavailable("no phone is registered for sign-in codes"));
                };
                let hash = self.pepper.sign_in_code_mac(id, code.expose());
                started(self.store.start_challenge(challenge(Some(hash)), Some(limits)).await?, now)?;
                sender.send(&phone, &code).await?;
                phone.masked().to_owned()
            }
            SecondFactor::EmailCode => {
                let (Some(mailer), Some(email)) = (&self.mail, registered_email(&account)) else {
                    return Err(ServiceError::FactorUnavailable("no e-mail address or mail server for sign-in codes"));
                };
                let hash = self.pepper.sign_in_code_mac(id, code.expose());
                started(self.store.start_challenge(challenge(Some(hash)), Some(limits)).await?, now)?;
                let mail = SignInMail { name: &account.actor.name, code: &code, at: now, expires_at, origin };
                mailer.send(&email, &mail).await?;
                email.masked()
            }
            SecondFactor::Passkey => {
                let rp = self.relying_party()?;
                let enrolled = plain(self.store.passkeys(&account.actor.name).await?);
                let (options, state) = rp.start_authentication(&enrolled).map_err(passkey_failed)?;
                let mut ceremony = challenge(None);
                ceremony.state = Some(state);
                started(self.store.start_challenge(ceremony, None).await?, now)?;
                return Ok(Started { id, destination: String::new(), expires_at, passkey_options: Some(options) });
            }
        };
        tracing::info!(name = %account.actor.name, factor = factor.as_str(), to = %destination, "sign-in code sent");
        Ok(Started { id, destination, expires_at, passkey_options: None })
    }

    /// Finishes a sign-in: checks the proof and opens a session.
    pub async fn finish(
        &self,
        token: &str,
        sign_in: uuid::Uuid,
        proof: Proof,
        origin: &AccessContext,
    ) -> Result<Session, ServiceError> {
        let account = self.person(token, origin).await?;
        let now = self.clock.now();
        let challenge = self
            .store
            .challenge(sign_in)
            .await?
            .filter(|c| c.supervisor == account.actor.name && c.used_at.is_none() && c.expires_at > now);
        let Some(challenge) = challenge else {
            return Err(ServiceError::SignInExpired);
        };
        let ChallengeKind::SignIn(factor) = challenge.kind else {
            return Err(ServiceError::SignInExpired);
        };
        match (factor, proof) {
            (SecondFactor::PhoneCode | SecondFactor::EmailCode, Proof::Code(typed)) => {
                let code = OtpCode::parse(typed.expose_secret(), code_length()).map_err(|e| {
                    ServiceError::InvalidArgument(vec![crate::service::FieldViolation {
                        field: "code",
                        reason: "INVALID_CODE",
                        description: e.to_string(),
                    }])
                })?;
                let right = challenge
                    .secret_hash
                    .as_deref()
                    .is_some_and(|stored| self.pepper.verify_sign_in_code_mac(sign_in, code.expose(), stored));
                if !right {
                    let wrong = self.store.wrong_answer(sign_in, self.policy.code_attempts, now).await?;
                    self.failed(Some(&account.actor), origin, &format!("wrong {} code", factor.as_str())).await?;
                    return Err(ServiceError::WrongSignInCode {
                        attempts_remaining: self.policy.code_attempts.saturating_sub(wrong),
                    });
                }
            }
            (SecondFactor::Passkey, Proof::Passkey(answer)) => {
                let rp = self.relying_party()?;
                let enrolled = plain(self.store.passkeys(&account.actor.name).await?);
                let state = challenge.state.as_deref().unwrap_or_default();
                match rp.finish_authentication(state, &answer, &enrolled) {
                    Ok(used) => {
                        let updated = used.updated_passkey_json.as_deref();
                        self.store.passkey_used(&used.credential_id, updated, now).await?;
                    }
                    Err(error @ (passkey::PasskeyError::Refused(_) | passkey::PasskeyError::Malformed(_))) => {
                        // One answer per ceremony: a refused one spends it, so its challenge cannot be tried again.
                        self.store.spend_challenge(sign_in, now).await?;
                        self.failed(Some(&account.actor), origin, &error.to_string()).await?;
                        return Err(ServiceError::PasskeyRejected);
                    }
                    Err(other) => return Err(passkey_failed(other)),
                }
            }
            (SecondFactor::Passkey, Proof::Code(_)) => {
                return Err(ServiceError::FactorUnavailable("this sign-in takes the passkey's answer, not a code"));
            }
            (_, Proof::Passkey(_)) => {
                return Err(ServiceError::FactorUnavailable("this sign-in takes a code, not a passkey"));
            }
        }
        self.open(&account, sign_in, factor, origin, now).await
    }

    async fn open(
        &self,
        account: &SignInAccount,
        challenge: uuid::Uuid,
        factor: SecondFactor,
        origin: &AccessContext,
        now: DateTime<Utc>,
    ) -> Result<Session, ServiceError> {
        let secret = generate_session_token();
        let id = uuid::Uuid::now_v7();
        let expires_at = now + self.policy.session_max;
        let idle_until = (now + self.policy.session_idle).min(expires_at);
        let held_back = self.store.clear_failures(&person_subject(&account.actor.name)).await?;
        let mut detail = format!("signed in with {} from {}; session {id}", factor.as_str(), from(origin));
        if held_back > 0 {
            detail.push_str(&format!(" ({held_back} earlier failed sign-in(s) not recorded one by one)"));
        }
        let mut actor = account.actor.clone();
        actor.session = Some(id);
        actor.access = origin.clone().with_session_id(&id.to_string());
        let event = self.audit.event(Some(&actor), AuditAction::SignIn, None, AuditOutcome::Granted, detail);
        let session = NewSession {
            id,
            supervisor: account.actor.name.clone(),
            token_hash: token::hash(secret.expose_secret()),
            factor,
            created_at: now,
            idle_until,
            expires_at,
        };
        let opened =
            self.store.open_session(challenge, session, event, self.audit.key()).await.map_err(audit_failed)?;
        let Some(event) = opened else {
            return Err(ServiceError::SignInExpired);
        };
        crate::audit::trace(&event);
        Ok(Session { token: secret, id, idle_until, expires_at })
    }

    fn relying_party(&self) -> Result<&passkey::Passkeys, ServiceError> {
        self.passkeys.as_deref().ok_or(ServiceError::FactorUnavailable("passkeys are not enabled on this server"))
    }

    /// Starts enrolling a passkey for `actor`, signed in with a session (a second factor already proven): the
    /// creation options for the browser. The ceremony's state waits in the shared store for any replica.
    pub async fn start_enrolment(&self, actor: &Actor) -> Result<Started, ServiceError> {
        if actor.session.is_none() || actor.kind != TokenKind::Person {
            return Err(ServiceError::SessionRequired);
        }
        self.begin_enrolment(actor, None).await
    }

    /// Starts enrolling a passkey with the personal token and a one-time enrolment code an admin issued
    /// (`otpd supervisors passkey-code`), for a person with no other second factor at hand. The code is spent
    /// here; a wrong, used or expired one counts as a failed sign-in. The ceremony it opens may be finished with
    /// the personal token.
    pub async fn start_enrolment_with_code(
        &self,
        token: &str,
        code: &str,
        origin: &AccessContext,
    ) -> Result<Started, ServiceError> {
        let account = self.person(token, origin).await?;
        let now = self.clock.now();
        let id = enrolment_code_id(code);
        let challenge = match id {
            Some(id) => self.store.challenge(id).await?,
            None => None,
        };
        let good = challenge.filter(|c| {
            c.supervisor == account.actor.name
                && c.kind == ChallengeKind::EnrolmentCode
                && c.used_at.is_none()
                && c.expires_at > now
                && c.secret_hash.as_deref() == Some(token::hash(code).as_str())
        });
        let Some(good) = good else {
            self.failed(Some(&account.actor), origin, "wrong, used or expired enrolment code").await?;
            return Err(ServiceError::SignInExpired);
        };
        if !self.store.spend_challenge(good.id, now).await? {
            return Err(ServiceError::SignInExpired);
        }
        self.begin_enrolment(&account.actor, Some(good.id)).await
    }

    async fn begin_enrolment(&self, actor: &Actor, by_code: Option<uuid::Uuid>) -> Result<Started, ServiceError> {
        let rp = self.relying_party()?;
        let now = self.clock.now();
        let id = uuid::Uuid::now_v7();
        let expires_at = now + self.policy.challenge_ttl;
        let enrolled = plain(self.store.passkeys(&actor.name).await?);
        let (options, state) =
            rp.start_registration(passkey_user(&actor.name), &actor.name, &enrolled).map_err(passkey_failed)?;
        let ceremony = NewChallenge {
            id,
            supervisor: actor.name.clone(),
            kind: ChallengeKind::PasskeyEnrolment,
            // Opened with an enrolment code: its person may finish it with the personal token.
            secret_hash: by_code.map(|code| format!("{BY_CODE}{code}")),
            state: Some(state),
            created_at: now,
            expires_at,
        };
        started(self.store.start_challenge(ceremony, None).await?, now)?;
        Ok(Started { id, destination: String::new(), expires_at, passkey_options: Some(options) })
    }

    /// Stores the passkey the authenticator made for `actor`'s enrolment `id`, named `label`; audited.
    pub async fn finish_enrolment(
        &self,
        actor: &Actor,
        id: uuid::Uuid,
        answer: &str,
        label: &str,
    ) -> Result<uuid::Uuid, ServiceError> {
        let rp = self.relying_party()?;
        if actor.kind != TokenKind::Person {
            return Err(ServiceError::SessionRequired);
        }
        let label = label.trim();
        if label.is_empty() || label.chars().count() > 64 || label.chars().any(char::is_control) {
            return Err(ServiceError::InvalidArgument(vec![crate::service::FieldViolation {
                field: "label",
                reason: "INVALID_ARGUMENT",
                description: "name the passkey in 1 to 64 characters".into(),
            }]));
        }
        let now = self.clock.now();
        let challenge = self.store.challenge(id).await?.filter(|c| {
            c.supervisor == actor.name
                && c.kind == ChallengeKind::PasskeyEnrolment
                && c.used_at.is_none()
                && c.expires_at > now
        });
        let Some(challenge) = challenge else {
            return Err(ServiceError::SignInExpired);
        };
        // A session, or the personal token for a ceremony an enrolment code opened.
        let by_code = challenge.secret_hash.as_deref().is_some_and(|h| h.starts_with(BY_CODE));
        if actor.session.is_none() && !by_code {
            return Err(ServiceError::SessionRequired);
        }
        let made = match rp.finish_registration(challenge.state.as_deref().unwrap_or_default(), answer) {
            Ok(made) => made,
            Err(error @ (passkey::PasskeyError::Internal(_) | passkey::PasskeyError::NoneEnrolled)) => {
                return Err(passkey_failed(error));
            }
            Err(error) => {
                self.store.spend_challenge(id, now).await?;
                tracing::warn!(name = %actor.name, %error, "passkey enrolment refused");
                return Err(ServiceError::PasskeyRejected);
            }
        };
        let record = PasskeyRecord {
            id: uuid::Uuid::now_v7(),
            credential_id: made.credential_id,
            passkey: made.passkey_json,
            label: label.to_owned(),
            created_at: now,
            last_used_at: None,
        };
        let passkey_id = record.id;
        let how = if by_code { " with an enrolment code" } else { "" };
        let detail = format!("enrolled passkey \"{label}\" ({passkey_id}){how}");
        let event = self.audit.event(Some(actor), AuditAction::PasskeyEnrolled, None, AuditOutcome::Granted, detail);
        let added = self.store.add_passkey(id, &actor.name, record, event, self.audit.key()).await;
        match added.map_err(audit_failed)? {
            Some(event) => {
                crate::audit::trace(&event);
                Ok(passkey_id)
            }
            // Spent meanwhile (a second tab), or the credential is enrolled already.
            None => Err(ServiceError::SignInExpired),
        }
    }

    /// Ends the caller's session.
    pub async fn sign_out(&self, actor: &Actor) -> Result<(), ServiceError> {
        let Some(id) = actor.session else {
            return Err(ServiceError::SessionRequired);
        };
        let now = self.clock.now();
        let event = self.audit.event(Some(actor), AuditAction::SignOut, None, AuditOutcome::Granted, "signed out");
        match self.store.end_session(id, now, SessionEnd::SignedOut, event, self.audit.key()).await {
            Ok(Some(event)) => {
                crate::audit::trace(&event);
                Ok(())
            }
            Ok(None) => Err(ServiceError::SessionExpired),
            Err(error) => Err(audit_failed(error)),
        }
    }

    /// Resolves a supervisor call's bearer token: a session token to its person; a personal token to its
    /// holder, refused for `action` when it needs a session (`--require-second-factor`); bad tokens counted
    /// as failed sign-ins.
    pub async fn bearer(
        &self,
        token: &str,
        origin: &AccessContext,
        action: Option<AuditAction>,
    ) -> Result<Bearer, ServiceError> {
        let now = self.clock.now();
        if token.starts_with(SESSION_PREFIX) {
            return match self.store.use_session(&token::hash(token), now, self.policy.session_idle).await? {
                SessionState::Live(mut actor) => {
                    let session = actor.session.map(|id| id.to_string()).unwrap_or_default();
                    actor.access = origin.clone().with_session_id(&session);
                    Ok(Bearer::Actor(*actor))
                }
                SessionState::Ended => Err(ServiceError::SessionExpired),
                SessionState::Unknown => {
                    self.failed(None, origin, "unknown session token").await?;
                    Err(ServiceError::Unauthenticated)
                }
            };
        }
        let account = self.account(token, origin).await?;
        if let Some(disabled_at) = account.disabled_at {
            let named = action.filter(|a| names_a_number(*a));
            let due = self.failed_with(Some(&account.actor), origin, "token of a disabled supervisor", named).await?;
            if due > 0 {
                return Ok(Bearer::Disabled { actor: account.actor, disabled_at, held_back: due - 1 });
            }
            return Err(ServiceError::SupervisorDisabled);
        }
        if self.policy.require_second_factor
            && account.actor.kind == TokenKind::Person
            && action.is_some_and(needs_session)
        {
            let why = "SESSION_REQUIRED: a bare personal token; sign in with a second factor";
            let event = self.audit.event(
                Some(&account.actor),
                action.unwrap_or(AuditAction::SignIn),
                None,
                AuditOutcome::Denied,
                why,
            );
            self.audit.append(event).await.map_err(audit_failed)?;
            return Err(ServiceError::SessionRequired);
        }
        Ok(Bearer::Actor(account.actor))
    }

    /// Lifts the sign-in lock of a person (`person:NAME`) or an address (`address:IP`), audited as `by`'s (None:
    /// the operator on the command line).
    pub async fn lift_lock(
        &self,
        by: Option<&Actor>,
        subject: &str,
    ) -> Result<(bool, crate::domain::audit::AuditEvent), ServiceError> {
        let now = self.clock.now();
        let detail = format!("sign-in lock of {subject} lifted");
        let event = match by {
            Some(actor) => {
                self.audit.event(Some(actor), AuditAction::SignInLockLifted, None, AuditOutcome::Granted, detail)
            }
            None => NewAuditEvent::by_operator(AuditAction::SignInLockLifted, now, detail),
        };
        let (was_locked, event) =
            self.store.lift_sign_in_lock(subject, now, event, self.audit.key()).await.map_err(audit_failed)?;
        crate::audit::trace(&event);
        Ok((was_locked, event))
    }

    /// An admin's [`Self::lift_lock`] over the API; any other role is refused and audited.
    pub async fn lift_lock_as(
        &self,
        actor: &Actor,
        subject: &str,
    ) -> Result<(bool, crate::domain::audit::AuditEvent), ServiceError> {
        if !actor.has_any(&[crate::domain::Role::Admin]) {
            let detail = format!("ROLE_NOT_ALLOWED: lifting the sign-in lock of {subject}");
            let event =
                self.audit.event(Some(actor), AuditAction::SignInLockLifted, None, AuditOutcome::Denied, detail);
            self.audit.append(event).await.map_err(audit_failed)?;
            return Err(ServiceError::WrongRole);
        }
        self.lift_lock(Some(actor), subject).await
    }
}

/// Calls that reveal or change a driver's data: under `--require-second-factor` only a session opens them.
fn needs_session(action: AuditAction) -> bool {
    matches!(
        action,
        AuditAction::LookupCode
            | AuditAction::GetPhoneStatus
            | AuditAction::UnlockPhone
            | AuditAction::SignInLockLifted
            | AuditAction::PrefixGuardSet
    )
}

/// Calls whose refusal records the number and ticket they named.
fn names_a_number(action: AuditAction) -> bool {
    matches!(action, AuditAction::LookupCode | AuditAction::GetPhoneStatus | AuditAction::UnlockPhone)
}

/// The stored passkeys as the relying party reads them.
fn plain(records: Vec<PasskeyRecord>) -> Vec<passkey::StoredPasskey> {
    records
        .into_iter()
        .map(|r| passkey::StoredPasskey { credential_id: r.credential_id, passkey_json: r.passkey })
        .collect()
}

/// The WebAuthn user handle of a person: stable (so an authenticator keeps one passkey per person and site) and
/// not their name (authenticators may show or sync it): the first 16 bytes of SHA-256 over a label and the name.
fn passkey_user(name: &str) -> uuid::Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("otpd passkey user\0{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::from_bytes(bytes)
}

/// A passkey ceremony that failed on our side, or cannot start.
fn passkey_failed(error: passkey::PasskeyError) -> ServiceError {
    match error {
        passkey::PasskeyError::NoneEnrolled => ServiceError::FactorUnavailable("no passkey is enrolled"),
        passkey::PasskeyError::Refused(_)
        | passkey::PasskeyError::Malformed(_)
        | passkey::PasskeyError::AlreadyEnrolled => ServiceError::PasskeyRejected,
        passkey::PasskeyError::Internal(why) => ServiceError::PasskeyFailed(why),
    }
}

fn registered_email(account: &SignInAccount) -> Option<EmailAddress> {
    account.email.as_deref()?.parse().ok()
}

fn locked(at: DateTime<Utc>, now: DateTime<Utc>) -> ServiceError {
    ServiceError::SignInLocked { until: at, retry_after: until(at, now) }
}

fn started(start: ChallengeStart, now: DateTime<Utc>) -> Result<(), ServiceError> {
    match start {
        ChallengeStart::Started => Ok(()),
        ChallengeStart::Cooldown(at) => Err(ServiceError::ResendCooldown { retry_at: at, retry_after: until(at, now) }),
        ChallengeStart::Capped(at) => Err(ServiceError::SendLimit { retry_at: at, retry_after: until(at, now) }),
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A fresh session token: 256 random bits after [`SESSION_PREFIX`].
pub fn generate_session_token() -> SecretString {
    token::generate_with(SESSION_PREFIX)
}

fn audit_failed(error: crate::store::StoreError) -> ServiceError {
    tracing::error!(error = %crate::telemetry::ErrorChain(&error), "could not write a sign-in's audit event");
    ServiceError::AuditUnavailable
}

/// Where a sign-in came from, for details and messages.
fn from(origin: &AccessContext) -> String {
    match origin.describe() {
        described if described.is_empty() => "an unknown address".to_owned(),
        described => described,
    }
}

/// One-time passkey enrolment codes start with this; the sign-in challenge's id follows (32 hex digits), then the
/// secret.
pub const ENROLMENT_PREFIX: &str = "otpenr_";

/// Marks a passkey ceremony that an enrolment code opened.
const BY_CODE: &str = "enrolment-code:";

/// A new enrolment code for challenge `id`: shown once; stored as its SHA-256.
pub fn generate_enrolment_code(id: uuid::Uuid) -> SecretString {
    token::generate_with(&format!("{ENROLMENT_PREFIX}{}", id.simple()))
}

/// The challenge an enrolment code names.
fn enrolment_code_id(code: &str) -> Option<uuid::Uuid> {
    let rest = code.strip_prefix(ENROLMENT_PREFIX)?;
    uuid::Uuid::try_parse(rest.get(..32)?).ok()
}
