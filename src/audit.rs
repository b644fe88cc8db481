//! Appending to the audit log (below both the flows that write it, `service` for lockouts and `supervision` for
//! the team leads' calls): builds events with the number masked and keyed, stores them sealed with the audit
//! key, and publishes each one's sequence and seal on the `audit` tracing target, outside the database, where an
//! operator keeps them to detect a cut-off tail (`otpd audit verify --expect-head`).

use std::sync::Arc;

use crate::clock::Clock;
use crate::domain::audit::{AuditAction, AuditEvent, AuditKey, AuditOutcome, NewAuditEvent, SYSTEM_ACTOR};
use crate::domain::{Actor, PhoneNumber};
use crate::hashing::Pepper;
use crate::store::{StoreResult, SupervisionStore};

/// The service's handle on the audit log.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn SupervisionStore>,
    pepper: Pepper,
    key: AuditKey,
    clock: Arc<dyn Clock>,
}

impl AuditLog {
    /// An audit log in `store`, keying numbers with `pepper` and sealing events with `key`.
    pub fn new(store: Arc<dyn SupervisionStore>, pepper: Pepper, key: AuditKey, clock: Arc<dyn Clock>) -> Self {
        Self { store, pepper, key, clock }
    }

    /// The store behind the log.
    pub fn store(&self) -> &Arc<dyn SupervisionStore> {
        &self.store
    }

    /// The key that seals events.
    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    /// The keyed hash under which events about `phone` are found.
    pub fn phone_key(&self, phone: &PhoneNumber) -> String {
        self.pepper.phone_key(phone.e164())
    }

    /// A new event by `actor` (None: the service itself) about `phone`, now.
    pub fn event(
        &self,
        actor: Option<&Actor>,
        action: AuditAction,
        phone: Option<&PhoneNumber>,
        outcome: AuditOutcome,
        detail: impl Into<String>,
    ) -> NewAuditEvent {
        NewAuditEvent {
            id: uuid::Uuid::now_v7(),
            at: self.clock.now(),
            actor_name: actor.map_or_else(|| SYSTEM_ACTOR.to_owned(), |a| a.name.clone()),
            actor_role: actor.map_or_else(|| SYSTEM_ACTOR.to_owned(), |a| a.role.as_str().to_owned()),
            action,
            phone_masked: phone.map(|p| p.masked().to_owned()),
            phone_key: phone.map(|p| self.phone_key(p)),
            ticket_id: None,
            reason: None,
            contact_channel: None,
            contact_matched: None,
            evidence: None,
            // Where the call came from, on every event of an actor's call; the service's own events have none.
            access: actor.map(|a| a.access.clone()).filter(|a| !a.is_empty()),
            outcome,
            detail: detail.into(),
        }
    }

    /// Appends `event`.
    pub async fn append(&self, event: NewAuditEvent) -> StoreResult<AuditEvent> {
        let event = self.store.append_audit(event, &self.key).await?;
        trace(&event);
        Ok(event)
    }
}

/// Writes `event` to the `audit` tracing target, with its sequence and seal: the chain's head, published.
pub fn trace(event: &AuditEvent) {
    let e = &event.event;
    tracing::info!(
        target: "audit",
        seq = event.seq,
        hash = %event.hash,
        id = %e.id,
        actor = %e.actor_name,
        role = %e.actor_role,
        action = e.action.as_str(),
        phone = e.phone_masked.as_deref().unwrap_or("-"),
        ticket = e.ticket_id.as_deref().unwrap_or("-"),
        contact = e.contact_channel.map_or("-", |c| c.as_str()),
        contact_matched = ?e.contact_matched,
        evidence = %e.evidence.as_ref().map_or_else(|| "-".to_owned(), crate::domain::Evidence::describe),
        from = %e.access.as_ref().map_or_else(|| "-".to_owned(), crate::domain::audit::AccessContext::describe),
        outcome = e.outcome.as_str(),
        detail = %e.detail,
        "audit event"
    );
}
