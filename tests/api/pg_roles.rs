//! Production posture on PostgreSQL: `otpd serve` runs as the role docs/postgres-app-role.sql creates, which does
//! everything the service needs but cannot alter the audit log, nor disable its triggers, nor mint supervisors.

use otpd::domain::audit::{AuditAction, NewAuditEvent};
use otpd::pb::otp::v1::{Purpose, VerifyResult};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_role_serves_but_cannot_touch_the_audit_log() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path()).await;
    let owner = otpd::store::connect(&db.url).await.unwrap();
    owner.verification.migrate().await.unwrap();

    let role = format!("otpd_test_app_{}", uuid::Uuid::new_v4().simple());
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/postgres-app-role.sql")).unwrap();
    let mut owner_conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(&script.replace("otpd_app", &role)).execute(&mut owner_conn).await.unwrap();

    // A supervisor, added by the owner (the service role cannot).
    let token = otpd::supervision::token::generate();
    let event = NewAuditEvent::by_operator(AuditAction::SupervisorAdded, chrono::Utc::now(), "added kim (supervisor)");
    let hash = otpd::supervision::token::hash_secret(&token);
    owner
        .supervision
        .add_supervisor(
            &"kim".parse().unwrap(),
            "supervisor".parse().unwrap(),
            Default::default(),
            &hash,
            event,
            &test_audit_key(),
        )
        .await
        .unwrap();
    let token = secrecy::ExposeSecret::expose_secret(&token).to_owned();

    let app_url = db.url.replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    let app_db = TestDb { url: app_url.clone(), backend: Backend::Postgres };
    let app = spawn_app_at(app_db, dir, &["--migrate-on-start=false"]).await;

    // The whole service works under the role: send, a lookup (code + audit insert), lockout, verify.
    app.send(PHONE, Purpose::Login).await.unwrap();
    let looked_up = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &token)).await.unwrap().into_inner();
    assert_eq!(app.verify(PHONE, Purpose::Login, &looked_up.code).await.unwrap().result(), VerifyResult::Approved);
    app.advance(chrono::TimeDelta::seconds(31));
    let code2 = app.send_and_read(PHONE, Purpose::Login).await;
    for _ in 0..10 {
        app.verify(PHONE, Purpose::Login, &wrong_code(&code2)).await.unwrap();
    }

    // What the role cannot do.
    let mut conn = sqlx::PgConnection::connect(&app_url).await.unwrap();
    for sql in [
        "UPDATE audit_events SET detail = 'forged'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "ALTER TABLE audit_events DISABLE TRIGGER ALL",
        "INSERT INTO supervisors (name, role, token_hash, created_at) VALUES ('evil', 'admin', 'x', now())",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("permission denied") || text.contains("must be owner"), "{sql}: {text}");
    }
    conn.close().await.unwrap();
    let events = owner.supervision.audit_chain(0, 100).await.unwrap();
    let actions: Vec<_> = events.iter().map(|e| e.event.action).collect();
    assert_eq!(actions, [AuditAction::SupervisorAdded, AuditAction::LookupCode, AuditAction::PhoneLocked]);

    app.stop().await;
    sqlx::query(&format!("DROP OWNED BY {role}")).execute(&mut owner_conn).await.unwrap();
    owner_conn.close().await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
    sqlx::query(&format!("DROP ROLE {role}")).execute(&mut admin).await.unwrap();
}
