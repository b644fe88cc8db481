//! The `Store` contract, checked directly against both backends with the same tests.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use otpd::domain::{AllowedCountries, Channel, PhoneNumber, Policy, Purpose, SendRefusal};
use otpd::hashing::CodeHash;
use otpd::store::{Approval, DeliveryOutcome, IssuedCode, NewCode, Reservation, Store};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    resend_extends_the_pending_verification_until_it_expires,
    issue_code_applies_the_policy_inside_the_transaction,
    reservations_count_lock_and_restart_after_the_lock,
    approval_is_exactly_once_and_resets_the_count,
    release_gives_back_an_attempt_and_its_provisional_lock,
    failed_delivery_revokes_the_code_but_counts_toward_caps,
    purge_deletes_old_rows_only,
    purge_forgets_numbers_with_nothing_to_remember,
    supervisor_code_is_refused_and_audited_if_the_number_changed_meanwhile,
    a_replaced_verification_is_not_approved,
    release_never_undoes_another_reservations_lock,
    losers_reserving_after_the_winner_reset_give_everything_back,
    call_events_leave_the_state_the_latest_event_says,
    agent_ids_belong_to_one_supervisor_and_are_audited,
    purge_forgets_calls_a_day_after_their_last_event,
);

async fn supervision_store(backend: Backend) -> (Arc<dyn otpd::store::SupervisionStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path()).await;
    let stores = otpd::store::connect(&db.url).await.unwrap();
    stores.verification.migrate().await.unwrap();
    (stores.supervision, dir)
}

fn call_event(
    id: &str,
    kind: otpd::domain::CallEventKind,
    agent: &str,
    at: chrono::DateTime<Utc>,
) -> otpd::domain::CallEvent {
    otpd::domain::CallEvent {
        call_id: otpd::domain::CallId::parse(id).unwrap(),
        kind,
        direction: otpd::domain::CallDirection::Inbound,
        number: phone(),
        agent: agent.parse().unwrap(),
        at,
    }
}

async fn call_events_leave_the_state_the_latest_event_says(backend: Backend) {
    use otpd::domain::{CallEventKind::*, CallId};
    let (store, _dir) = supervision_store(backend).await;
    let t0 = now();
    let id = CallId::parse("C-1").unwrap();
    assert!(store.call(&id).await.unwrap().is_none());
    assert!(store.record_call_event(&call_event("C-1", Answered, "7001", t0), t0).await.unwrap());
    let call = store.call(&id).await.unwrap().unwrap();
    assert_eq!((call.agent.as_str(), call.answered_at, call.ended_at), ("7001", Some(t0), None));
    assert_eq!(call.number, phone());
    // The same event again changes nothing.
    assert!(!store.record_call_event(&call_event("C-1", Answered, "7001", t0), t0).await.unwrap());
    // A transfer: a later answer by another agent.
    let t1 = t0 + TimeDelta::seconds(30);
    assert!(store.record_call_event(&call_event("C-1", Answered, "7002", t1), t1).await.unwrap());
    let agent = |a: &str| a.parse::<otpd::domain::AgentId>().unwrap();
    assert_eq!(store.agent_calls(&agent("7002")).await.unwrap().len(), 1);
    assert!(store.agent_calls(&agent("7001")).await.unwrap().is_empty());
    // An older answer arriving late does not move it back.
    assert!(!store.record_call_event(&call_event("C-1", Answered, "7001", t0), t1).await.unwrap());
    assert_eq!(store.call(&id).await.unwrap().unwrap().agent.as_str(), "7002");
    // Ended for good: a later answer does not re-open it, a second end does not move it.
    let t2 = t1 + TimeDelta::seconds(30);
    assert!(store.record_call_event(&call_event("C-1", Ended, "7002", t2), t2).await.unwrap());
    assert!(!store.record_call_event(&call_event("C-1", Ended, "7002", t2 + TimeDelta::seconds(9)), t2).await.unwrap());
    store.record_call_event(&call_event("C-1", Answered, "7003", t2 + TimeDelta::seconds(5)), t2).await.unwrap();
    let call = store.call(&id).await.unwrap().unwrap();
    assert_eq!(call.ended_at, Some(t2));
    assert!(store.agent_calls(&agent("7002")).await.unwrap().is_empty(), "ended calls are not on the line");
    // Out of order: the end first, then its answer; the call stays ended.
    assert!(store.record_call_event(&call_event("C-2", Ended, "7001", t2), t2).await.unwrap());
    assert!(store.record_call_event(&call_event("C-2", Answered, "7001", t1), t2).await.unwrap());
    let call = store.call(&CallId::parse("C-2").unwrap()).await.unwrap().unwrap();
    assert_eq!((call.answered_at, call.ended_at), (Some(t1), Some(t2)));
}

async fn agent_ids_belong_to_one_supervisor_and_are_audited(backend: Backend) {
    use otpd::domain::audit::{AuditAction, NewAuditEvent};
    use otpd::store::AgentChange;
    let (store, _dir) = supervision_store(backend).await;
    let key = test_audit_key();
    let t = now();
    for name in ["kim", "lee"] {
        let event = NewAuditEvent::by_operator(AuditAction::SupervisorAdded, t, "added");
        let parsed = name.parse().unwrap();
        let added = store.add_supervisor(&parsed, "supervisor".parse().unwrap(), Default::default(), name, event, &key);
        added.await.unwrap().unwrap();
    }
    let set = |name: &str, agent: Option<&str>| {
        let store = store.clone();
        let key = key.clone();
        let name = name.parse().unwrap();
        let agent: Option<otpd::domain::AgentId> = agent.map(|a| a.parse().unwrap());
        async move {
            let event = NewAuditEvent::by_operator(AuditAction::SupervisorAgentSet, t, "agent");
            store.set_agent(&name, agent.as_ref(), event, &key).await.unwrap()
        }
    };
    assert!(matches!(set("kim", Some("7001")).await, AgentChange::Set(_)));
    assert_eq!(set("lee", Some("7001")).await, AgentChange::Taken { by: "kim".into() });
    assert_eq!(set("nobody", Some("7009")).await, AgentChange::NoSuchSupervisor);
    assert!(matches!(set("kim", Some("7001")).await, AgentChange::Set(_)), "setting one's own id again is fine");
    let holder = store.token_holder("kim").await.unwrap().unwrap();
    assert_eq!(holder.actor.agent_id.map(|a| a.as_str().to_owned()).as_deref(), Some("7001"));
    assert!(matches!(set("kim", None).await, AgentChange::Set(_)));
    assert!(matches!(set("lee", Some("7001")).await, AgentChange::Set(_)), "free once cleared");
    let listed = store.list_supervisors().await.unwrap();
    assert_eq!(listed.iter().map(|s| s.agent_id.as_deref()).collect::<Vec<_>>(), [None, Some("7001")]);
    let events = store.audit_chain(0, 100).await.unwrap();
    let sets = events.iter().filter(|e| e.event.action == AuditAction::SupervisorAgentSet).count();
    assert_eq!(sets, 4, "each change audited, refusals append nothing");
}

async fn purge_forgets_calls_a_day_after_their_last_event(backend: Backend) {
    use otpd::domain::{CallEventKind::*, CallId};
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path()).await;
    let stores = otpd::store::connect(&db.url).await.unwrap();
    stores.verification.migrate().await.unwrap();
    let t = now();
    let old = t - TimeDelta::hours(25);
    stores.supervision.record_call_event(&call_event("OLD", Ended, "7001", old), old).await.unwrap();
    stores.supervision.record_call_event(&call_event("NEW", Answered, "7001", t), t).await.unwrap();
    stores.verification.purge(t - TimeDelta::days(1), t).await.unwrap();
    assert!(stores.supervision.call(&CallId::parse("OLD").unwrap()).await.unwrap().is_none());
    assert!(stores.supervision.call(&CallId::parse("NEW").unwrap()).await.unwrap().is_some());
}

async fn store(backend: Backend) -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path()).await;
    let store = otpd::store::connect(&db.url).await.unwrap().verification;
    store.migrate().await.unwrap();
    store.migrate().await.unwrap(); // idempotent
    (store, dir)
}

fn now() -> chrono::DateTime<Utc> {
    otpd::clock::to_millis(Utc::now())
}

fn phone() -> PhoneNumber {
    PhoneNumber::parse(PHONE, &AllowedCountries::default()).unwrap()
}

fn new_code(purpose: Purpose, now: chrono::DateTime<Utc>, n: u32) -> NewCode {
    NewCode {
        phone: phone(),
        purpose,
        hash: CodeHash(format!("$argon2id$v=19$m=1024,t=1,p=1$c2FsdA${n}")),
        channel: Channel::Sms,
        now,
        expires_at: now + TimeDelta::minutes(3),
    }
}

fn no_limits() -> Policy {
    Policy { resend_cooldown: TimeDelta::zero(), max_sends_per_hour: 100, max_sends_per_day: 100, ..Policy::default() }
}

async fn issue(store: &dyn Store, purpose: Purpose, now: chrono::DateTime<Utc>, n: u32) -> IssuedCode {
    store.issue_code(new_code(purpose, now, n), &no_limits()).await.unwrap().unwrap()
}

async fn resend_extends_the_pending_verification_until_it_expires(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let t0 = now();
    let a = issue(&*store, Purpose::Login, t0, 1).await;
    let b = issue(&*store, Purpose::Login, t0 + TimeDelta::minutes(1), 2).await;
    assert_eq!(a.verification_id, b.verification_id);
    let other = issue(&*store, Purpose::Signup, t0 + TimeDelta::minutes(1), 3).await;
    assert_ne!(other.verification_id, a.verification_id, "one pending verification per (phone, purpose)");

    let state = store.check_state(&phone(), Purpose::Login, t0 + TimeDelta::minutes(2)).await.unwrap();
    let pending = state.pending.unwrap();
    assert_eq!(pending.id, a.verification_id);
    assert_eq!(pending.live_codes.len(), 2, "both codes are live");
    let state = store.check_state(&phone(), Purpose::Login, t0 + TimeDelta::seconds(200)).await.unwrap();
    assert_eq!(state.pending.unwrap().live_codes.len(), 1, "the first code expired, the resent one lives");

    let c = issue(&*store, Purpose::Login, t0 + TimeDelta::minutes(10), 4).await;
    assert_ne!(c.verification_id, a.verification_id, "a dead verification is replaced");
    let state = store.check_state(&phone(), Purpose::Login, t0 + TimeDelta::minutes(10)).await.unwrap();
    assert_eq!(state.pending.unwrap().id, c.verification_id);
}

async fn issue_code_applies_the_policy_inside_the_transaction(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let policy = Policy::default();
    let t0 = now();
    store.issue_code(new_code(Purpose::Login, t0, 1), &policy).await.unwrap().unwrap();
    let refused = store.issue_code(new_code(Purpose::Signup, t0 + TimeDelta::seconds(5), 2), &policy).await.unwrap();
    assert_eq!(refused.unwrap_err(), SendRefusal::Cooldown { retry_at: t0 + TimeDelta::seconds(30) });
    let history = store.send_history(&phone(), Purpose::Login, t0 + TimeDelta::seconds(5)).await.unwrap().history;
    assert_eq!(history.sent.len(), 1, "a refused send records nothing");
}

async fn reservations_count_lock_and_restart_after_the_lock(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let policy = Policy::default();
    let t0 = now();
    assert_eq!(store.reserve_attempt(&phone(), t0, &policy).await.unwrap(), Reservation::Unknown);
    issue(&*store, Purpose::Login, t0, 1).await;
    for attempt in 1..10 {
        let r = store.reserve_attempt(&phone(), t0, &policy).await.unwrap();
        assert_eq!(r, Reservation::Granted { attempt, locks_until: None, epoch: 0 });
    }
    let until = t0 + TimeDelta::hours(24);
    let last = store.reserve_attempt(&phone(), t0, &policy).await.unwrap();
    assert_eq!(last, Reservation::Granted { attempt: 10, locks_until: Some(until), epoch: 0 });
    assert_eq!(store.reserve_attempt(&phone(), t0, &policy).await.unwrap(), Reservation::Locked { until });
    let state = store.check_state(&phone(), Purpose::Login, t0).await.unwrap();
    assert_eq!((state.locked_until, state.failed_attempts), (Some(until), 10));
    assert_eq!(store.send_history(&phone(), Purpose::Login, t0).await.unwrap().history.locked_until, Some(until));

    let later = until + TimeDelta::seconds(1);
    let state = store.check_state(&phone(), Purpose::Login, later).await.unwrap();
    assert_eq!((state.locked_until, state.failed_attempts), (None, 0), "an expired lock restarts the count");
    let r = store.reserve_attempt(&phone(), later, &policy).await.unwrap();
    assert_eq!(r, Reservation::Granted { attempt: 1, locks_until: None, epoch: 1 }, "the expiry was a reset");
}

async fn approval_is_exactly_once_and_resets_the_count(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let policy = Policy::default();
    let t0 = now();
    let issued = issue(&*store, Purpose::Login, t0, 1).await;
    store.reserve_attempt(&phone(), t0, &policy).await.unwrap();
    store.reserve_attempt(&phone(), t0, &policy).await.unwrap();
    assert_eq!(store.approve(issued.verification_id, &phone(), t0).await.unwrap(), Approval::Approved);
    assert_eq!(store.approve(issued.verification_id, &phone(), t0).await.unwrap(), Approval::AlreadyApproved);
    let state = store.check_state(&phone(), Purpose::Login, t0).await.unwrap();
    assert_eq!(state.failed_attempts, 0);
    assert!(state.pending.is_none());
    assert_eq!(state.last_approved_at.map(|t| t.timestamp_millis()), Some(t0.timestamp_millis()));
}

async fn release_gives_back_an_attempt_and_its_provisional_lock(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let policy = Policy { max_failed_attempts: 2, ..Policy::default() };
    let t0 = now();
    issue(&*store, Purpose::Login, t0, 1).await;
    store.reserve_attempt(&phone(), t0, &policy).await.unwrap();
    let last = store.reserve_attempt(&phone(), t0, &policy).await.unwrap();
    assert!(matches!(last, Reservation::Granted { attempt: 2, locks_until: Some(_), .. }));
    store.release_attempt(&phone(), last, t0).await.unwrap();
    let state = store.check_state(&phone(), Purpose::Login, t0).await.unwrap();
    assert_eq!((state.failed_attempts, state.locked_until), (1, None));
    // Releasing never goes below zero.
    let granted = Reservation::Granted { attempt: 1, locks_until: None, epoch: 0 };
    for _ in 0..3 {
        store.release_attempt(&phone(), granted, t0).await.unwrap();
    }
    assert_eq!(store.check_state(&phone(), Purpose::Login, t0).await.unwrap().failed_attempts, 0);
}

async fn failed_delivery_revokes_the_code_but_counts_toward_caps(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let t0 = now();
    let a = issue(&*store, Purpose::Login, t0, 1).await;
    let b = issue(&*store, Purpose::Login, t0, 2).await;
    store.record_delivery(a.code_id, DeliveryOutcome::Failed, &[], t0).await.unwrap();
    store
        .record_delivery(b.code_id, DeliveryOutcome::Delivered { message_id: Some("m-1".into()) }, &[], t0)
        .await
        .unwrap();
    let state = store.check_state(&phone(), Purpose::Login, t0).await.unwrap();
    assert_eq!(state.pending.unwrap().live_codes, vec![CodeHash("$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$2".into())]);
    let history = store.send_history(&phone(), Purpose::Login, t0).await.unwrap().history;
    let mut failed: Vec<bool> = history.sent.iter().map(|s| s.failed).collect();
    failed.sort_unstable();
    assert_eq!(failed, [false, true]);
}

async fn purge_deletes_old_rows_only(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let t0 = now() - TimeDelta::days(3);
    let old = issue(&*store, Purpose::Login, t0, 1).await;
    assert_eq!(store.approve(old.verification_id, &phone(), t0).await.unwrap(), Approval::Approved);
    let now = now();
    issue(&*store, Purpose::Signup, now, 2).await;
    let purged = store.purge(now - TimeDelta::days(2), now).await.unwrap();
    assert_eq!(purged, 2, "the old code and its finished verification; the number has a pending one");
    assert!(store.check_state(&phone(), Purpose::Signup, now).await.unwrap().pending.is_some());
    assert_eq!(store.send_history(&phone(), Purpose::Login, now).await.unwrap().history.sent.len(), 1);
}

/// `phone_state` rows were never removed: anyone could grow the table by asking for codes to many numbers. The
/// purge forgets numbers with nothing to remember, and keeps failures and locks in force.
async fn purge_forgets_numbers_with_nothing_to_remember(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path()).await;
    let store = otpd::store::connect(&db.url).await.unwrap().verification;
    store.migrate().await.unwrap();
    let t0 = now() - TimeDelta::days(3);
    let number = |n: u32| PhoneNumber::parse(&format!("010-1111-{n:04}"), &AllowedCountries::default()).unwrap();
    let week_lock = Policy { lockout: TimeDelta::days(7), ..Policy::default() };
    for n in 1..=4 {
        let code = NewCode { phone: number(n), ..new_code(Purpose::Login, t0, n) };
        let issued = store.issue_code(code, &no_limits()).await.unwrap().unwrap();
        let failures = [0, 3, 10, 10][n as usize - 1];
        let policy = if n == 4 { &week_lock } else { &Policy::default() };
        for _ in 0..failures {
            store.reserve_attempt(&number(n), t0, policy).await.unwrap();
        }
        if n == 1 {
            store.approve(issued.verification_id, &number(1), t0).await.unwrap();
        }
    }
    // Many numbers that were only ever touched, to go through several batches.
    let touched = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1100)
                   INSERT INTO phone_state (phone, updated_at) SELECT '+8210999' || i, $1 FROM n";
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query(touched).bind(t0.timestamp_millis()).execute(&pool).await.unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query(touched).bind(t0).execute(&pool).await.unwrap();
        }
    }

    // Two replicas purge at once: each number is forgotten once, and neither waits for or fails on the other.
    let other = otpd::store::connect(&db.url).await.unwrap().verification;
    let now = now();
    let (a, b) = tokio::join!(store.purge(now - TimeDelta::days(2), now), other.purge(now - TimeDelta::days(2), now));
    let purged = a.unwrap() + b.unwrap();
    // 4 codes, 4 verifications, the approved number, the expired lock and the 1,100 touched numbers.
    assert_eq!(purged, 4 + 4 + 2 + 1100);

    let forgotten = |r: Reservation| r == Reservation::Unknown;
    assert!(forgotten(store.reserve_attempt(&number(1), now, &Policy::default()).await.unwrap()), "approved");
    let kept = store.reserve_attempt(&number(2), now, &Policy::default()).await.unwrap();
    assert!(matches!(kept, Reservation::Granted { attempt: 4, .. }), "3 failures are remembered: {kept:?}");
    assert!(forgotten(store.reserve_attempt(&number(3), now, &Policy::default()).await.unwrap()), "lock over");
    let locked = store.reserve_attempt(&number(4), now, &Policy::default()).await.unwrap();
    assert!(matches!(locked, Reservation::Locked { .. }), "a lock in force is remembered: {locked:?}");
    assert_eq!(store.purge(now - TimeDelta::days(2), now).await.unwrap(), 0);
}

/// On PostgreSQL a purge skips a number another transaction holds (a send, or another replica's purge) rather
/// than wait for it.
#[tokio::test]
async fn purge_skips_numbers_locked_by_others_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path()).await;
    let store = otpd::store::connect(&db.url).await.unwrap().verification;
    store.migrate().await.unwrap();
    let t0 = now() - TimeDelta::days(3);
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query("INSERT INTO phone_state (phone, updated_at) VALUES ('+821099990001', $1), ('+821099990002', $1)")
        .bind(t0)
        .execute(&pool)
        .await
        .unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM phone_state WHERE phone = '+821099990001' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();

    let now = now();
    let purge = store.purge(now - TimeDelta::days(2), now);
    let purged = tokio::time::timeout(std::time::Duration::from_secs(10), purge).await;
    assert_eq!(purged.expect("the purge did not wait for the held row").unwrap(), 1);
    holder.commit().await.unwrap();
    assert_eq!(store.purge(now - TimeDelta::days(2), now).await.unwrap(), 1, "the next purge takes it");
}

async fn supervisor_code_is_refused_and_audited_if_the_number_changed_meanwhile(backend: Backend) {
    use otpd::domain::audit::{AuditAction, AuditOutcome, NewAuditEvent};
    use otpd::store::{LookupIssue, LookupQuota};

    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path()).await;
    let stores = otpd::store::connect(&db.url).await.unwrap();
    stores.verification.migrate().await.unwrap();
    let (store, supervision) = (stores.verification, stores.supervision);
    let t0 = now();
    let quota = LookupQuota { max: 20, window: TimeDelta::hours(1) };
    let event = || {
        let mut e = NewAuditEvent::by_operator(AuditAction::LookupCode, t0, "code issued");
        e.actor_name = "kim".into();
        e
    };
    let supervisor_code = || NewCode { channel: Channel::Supervisor, ..new_code(Purpose::Login, t0, 9) };

    // Approved between the lookup's checks and its transaction.
    let issued = issue(&*store, Purpose::Login, t0, 1).await;
    assert_eq!(store.approve(issued.verification_id, &phone(), t0).await.unwrap(), Approval::Approved);
    let outcome = supervision
        .issue_supervisor_code(issued.verification_id, supervisor_code(), quota, event(), &test_audit_key())
        .await
        .unwrap();
    let LookupIssue::NotPending { event: denied } = outcome else { panic!("{outcome:?}") };
    assert_eq!(denied.event.outcome, AuditOutcome::Denied);

    // Locked by a 10th wrong code meanwhile.
    let issued = issue(&*store, Purpose::Login, t0, 2).await;
    for _ in 0..10 {
        store.reserve_attempt(&phone(), t0, &Policy::default()).await.unwrap();
    }
    let outcome = supervision
        .issue_supervisor_code(issued.verification_id, supervisor_code(), quota, event(), &test_audit_key())
        .await
        .unwrap();
    let LookupIssue::Locked { until, event: denied } = outcome else { panic!("{outcome:?}") };
    assert_eq!(until, t0 + TimeDelta::hours(24));
    assert_eq!(denied.event.outcome, AuditOutcome::Denied);
    assert_eq!(
        store.check_state(&phone(), Purpose::Login, t0).await.unwrap().pending.unwrap().live_codes.len(),
        1,
        "no code recorded"
    );
    assert_eq!(supervision.audit_chain(0, 10).await.unwrap().len(), 2);
}

async fn a_replaced_verification_is_not_approved(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let t0 = now();
    let old = issue(&*store, Purpose::Login, t0, 1).await;
    let new = issue(&*store, Purpose::Login, t0 + TimeDelta::minutes(10), 2).await;
    assert_ne!(old.verification_id, new.verification_id);
    assert_eq!(store.approve(old.verification_id, &phone(), t0).await.unwrap(), Approval::Replaced);
    assert_eq!(store.approve(new.verification_id, &phone(), t0).await.unwrap(), Approval::Approved);
}

async fn release_never_undoes_another_reservations_lock(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let policy = Policy { max_failed_attempts: 3, ..Policy::default() };
    let t0 = now();
    let issued = issue(&*store, Purpose::Login, t0, 1).await;
    let mine = store.reserve_attempt(&phone(), t0, &policy).await.unwrap();
    assert_eq!(mine, Reservation::Granted { attempt: 1, locks_until: None, epoch: 0 });
    // Others' failures lock the number while my check is in flight: my release gives back my attempt only.
    store.reserve_attempt(&phone(), t0, &policy).await.unwrap();
    let theirs = store.reserve_attempt(&phone(), t0, &policy).await.unwrap();
    assert!(matches!(theirs, Reservation::Granted { attempt: 3, locks_until: Some(_), .. }));
    store.release_attempt(&phone(), mine, t0).await.unwrap();
    let state = store.check_state(&phone(), Purpose::Login, t0).await.unwrap();
    assert_eq!(state.failed_attempts, 2, "my attempt is given back");
    assert!(state.locked_until.is_some(), "their lock stays");

    // After a reset (an approval), a release of an attempt reserved before it undoes nothing that came after.
    let t1 = t0 + TimeDelta::days(2);
    let fresh = issue(&*store, Purpose::Login, t1, 2).await;
    assert_ne!(fresh.verification_id, issued.verification_id);
    let before_reset = store.reserve_attempt(&phone(), t1, &policy).await.unwrap();
    assert!(matches!(before_reset, Reservation::Granted { epoch: 1, .. }), "{before_reset:?}");
    assert_eq!(store.approve(fresh.verification_id, &phone(), t1).await.unwrap(), Approval::Approved);
    issue(&*store, Purpose::Signup, t1, 3).await;
    for _ in 0..3 {
        store.reserve_attempt(&phone(), t1, &policy).await.unwrap();
    }
    store.release_attempt(&phone(), before_reset, t1).await.unwrap();
    let state = store.check_state(&phone(), Purpose::Signup, t1).await.unwrap();
    assert_eq!(state.failed_attempts, 3, "the stale release changed nothing");
    assert!(state.locked_until.is_some());
}

/// The interleaving a clean-clone CI run once hit: the winner approves (a reset), then ten losers that had read
/// the verification before it reserve, the tenth setting a provisional lock, and all of them release.
async fn losers_reserving_after_the_winner_reset_give_everything_back(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let policy = Policy::default();
    let t0 = now();
    let issued = issue(&*store, Purpose::Login, t0, 1).await;
    let winner = store.reserve_attempt(&phone(), t0, &policy).await.unwrap();
    assert!(matches!(winner, Reservation::Granted { attempt: 1, .. }));
    assert_eq!(store.approve(issued.verification_id, &phone(), t0).await.unwrap(), Approval::Approved);
    let mut losers = Vec::new();
    for _ in 0..10 {
        losers.push(store.reserve_attempt(&phone(), t0, &policy).await.unwrap());
    }
    assert!(matches!(losers[9], Reservation::Granted { attempt: 10, locks_until: Some(_), .. }));
    for (i, loser) in losers.into_iter().enumerate() {
        assert_eq!(store.approve(issued.verification_id, &phone(), t0).await.unwrap(), Approval::AlreadyApproved);
        store.release_attempt(&phone(), loser, t0).await.unwrap();
        let state = store.check_state(&phone(), Purpose::Login, t0).await.unwrap();
        assert_eq!(state.failed_attempts, 9 - u32::try_from(i).unwrap(), "after release {i}");
    }
    let state = store.check_state(&phone(), Purpose::Login, t0).await.unwrap();
    assert_eq!((state.failed_attempts, state.locked_until), (0, None));
}
