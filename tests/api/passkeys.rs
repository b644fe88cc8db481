//! Passkeys over gRPC (issue 17): a software authenticator (webauthn-authenticator-rs, user verification on)
//! enrols from a session, then signs in with the personal token and the passkey alone, for a session that opens
//! lookups under `--require-second-factor`; its counter is kept. An answer without user verification, one made for
//! another origin, and one replayed are refused and counted as failed sign-ins; a bare token cannot enrol. Both
//! backends, real gRPC on loopback. (The browser's side, with Chromium's virtual authenticator: console.rs.)

use otpd::domain::audit::{AuditAction, AuditOutcome};
use otpd::pb::otp::v1 as pb;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::both_backends;
use crate::helpers::*;
use crate::signin::{client, events, phone_session, set_contact};

/// The console's origin, as the default relying party derives it from the admin listener.
fn origin(app: &TestApp) -> Url {
    Url::parse(&format!("http://localhost:{}", app.admin_addr.port())).unwrap()
}

/// `credential` as a browser's `toJSON()` gives it (`clientExtensionResults`, not webauthn-rs' `extensions`).
fn to_json<T: serde::Serialize>(credential: &T) -> String {
    let mut value = serde_json::to_value(credential).unwrap();
    let object = value.as_object_mut().unwrap();
    let extensions = object.remove("extensions").unwrap_or(json!({}));
    object.insert("clientExtensionResults".into(), extensions);
    value.to_string()
}

/// Enrols a passkey on `key` for the session's person; returns the passkey's id.
async fn enrol(app: &TestApp, key: &mut WebauthnAuthenticator<SoftPasskey>, session: &str, label: &str) -> String {
    let mut signin = client(app).await;
    let started = signin
        .start_passkey_enrolment(authed(pb::StartPasskeyEnrolmentRequest::default(), session))
        .await
        .unwrap()
        .into_inner();
    let options: Value = serde_json::from_str(&started.passkey_creation_options_json).unwrap();
    assert_eq!(options["rp"]["id"], "localhost");
    assert_eq!(options["authenticatorSelection"]["userVerification"], "required");
    let ccr: CreationChallengeResponse = serde_json::from_value(json!({ "publicKey": options })).unwrap();
    let credential = key.do_registration(origin(app), ccr).unwrap();
    let req = pb::FinishPasskeyEnrolmentRequest {
        enrolment_id: started.enrolment_id,
        passkey_credential_json: to_json(&credential),
        label: label.into(),
    };
    signin.finish_passkey_enrolment(authed(req, session)).await.unwrap().into_inner().passkey_id
}

/// Starts a passkey sign-in as `token` and has `key` answer it from `at`, the options first changed by `change`.
async fn answer(
    app: &TestApp,
    key: &mut WebauthnAuthenticator<SoftPasskey>,
    token: &str,
    at: Url,
    change: impl FnOnce(&mut Value),
) -> (String, String) {
    let req = pb::StartSignInRequest { factor: pb::SecondFactor::Passkey.into() };
    let started = client(app).await.start_sign_in(authed(req, token)).await.unwrap().into_inner();
    assert!(started.destination.is_empty());
    let mut options: Value = serde_json::from_str(&started.passkey_request_options_json).unwrap();
    change(&mut options);
    let rcr: RequestChallengeResponse = serde_json::from_value(json!({ "publicKey": options })).unwrap();
    let assertion = key.do_authentication(at, rcr).unwrap();
    (started.sign_in_id, to_json(&assertion))
}

async fn finish(app: &TestApp, token: &str, id: &str, answer: &str) -> Result<pb::FinishSignInResponse, tonic::Status> {
    let req =
        pb::FinishSignInRequest { sign_in_id: id.into(), passkey_credential_json: answer.into(), ..Default::default() };
    client(app).await.finish_sign_in(authed(req, token)).await.map(tonic::Response::into_inner)
}

both_backends!(
    a_passkey_enrolled_from_a_session_signs_in_with_the_token_alone,
    refused_passkey_answers_count_as_failed_sign_ins,
);

async fn a_passkey_enrolled_from_a_session_signs_in_with_the_token_alone(backend: Backend) {
    let app = spawn_app_with(backend, &["--require-second-factor", "true"]).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    set_contact(&app, "kim").await;
    let mut key = WebauthnAuthenticator::new(SoftPasskey::new(true));

    // No passkey yet: not offered, and asking for one says so.
    let factors = client(&app).await.list_sign_in_factors(authed(pb::ListSignInFactorsRequest {}, &kim)).await;
    assert!(factors.unwrap().into_inner().factors.iter().all(|f| f.factor() != pb::SecondFactor::Passkey));
    let req = pb::StartSignInRequest { factor: pb::SecondFactor::Passkey.into() };
    let none = client(&app).await.start_sign_in(authed(req, &kim)).await.unwrap_err();
    assert_eq!(reason(&none), "FACTOR_NOT_AVAILABLE");

    // The bare token cannot enrol: a second factor first.
    let req = pb::StartPasskeyEnrolmentRequest::default();
    let bare = client(&app).await.start_passkey_enrolment(authed(req, &kim)).await.unwrap_err();
    assert_eq!((bare.code(), reason(&bare).as_str()), (tonic::Code::Unauthenticated, "SESSION_REQUIRED"));

    let session = phone_session(&app, &kim).await;
    let passkey_id = enrol(&app, &mut key, &session, "업무용 노트북").await;
    let enrolled: Vec<_> =
        events(&app).await.into_iter().filter(|e| e.event.action == AuditAction::PasskeyEnrolled).collect();
    assert_eq!(enrolled.len(), 1);
    assert_eq!((enrolled[0].event.actor_name.as_str(), enrolled[0].event.outcome), ("kim", AuditOutcome::Granted));
    assert!(enrolled[0].event.detail.contains(&passkey_id), "{}", enrolled[0].event.detail);
    let stored = app.stores.sign_in.passkeys("kim").await.unwrap();
    assert_eq!((stored.len(), stored[0].label.as_str()), (1, "업무용 노트북"));

    // Offered first now; the token and the passkey alone open a session.
    let factors = client(&app).await.list_sign_in_factors(authed(pb::ListSignInFactorsRequest {}, &kim)).await;
    let factors = factors.unwrap().into_inner().factors;
    assert_eq!(factors[0].factor(), pb::SecondFactor::Passkey);
    let (id, assertion) = answer(&app, &mut key, &kim, origin(&app), |_| {}).await;
    let signed_in = finish(&app, &kim, &id, &assertion).await.unwrap();
    assert!(signed_in.session_token.starts_with("otpsess_"));
    // The answer works once.
    let replayed = finish(&app, &kim, &id, &assertion).await.unwrap_err();
    assert_eq!(reason(&replayed), "SIGN_IN_EXPIRED");
    let used = &app.stores.sign_in.passkeys("kim").await.unwrap()[0];
    assert!(used.last_used_at.is_some());
    assert_ne!(used.passkey, stored[0].passkey, "the signature counter moved and was stored");
    let granted: Vec<_> = events(&app)
        .await
        .into_iter()
        .filter(|e| e.event.action == AuditAction::SignIn && e.event.outcome == AuditOutcome::Granted)
        .collect();
    assert!(granted.last().unwrap().event.detail.starts_with("signed in with passkey"), "{:?}", granted.last());

    app.send(PHONE, pb::Purpose::Login).await.unwrap();
    let looked_up = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &signed_in.session_token)).await;
    assert_eq!(looked_up.unwrap().into_inner().code.len(), 6);
    app.stop().await;
}

async fn refused_passkey_answers_count_as_failed_sign_ins(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    set_contact(&app, "kim").await;
    let mut key = WebauthnAuthenticator::new(SoftPasskey::new(true));
    let session = phone_session(&app, &kim).await;
    enrol(&app, &mut key, &session, "laptop").await;
    let denied = || async {
        events(&app)
            .await
            .into_iter()
            .filter(|e| e.event.action == AuditAction::SignIn && e.event.outcome == AuditOutcome::Denied)
            .count()
    };
    let before = denied().await;

    // Presence only: a genuine signature without the user-verified flag.
    let (id, uv_less) =
        answer(&app, &mut key, &kim, origin(&app), |o| o["userVerification"] = json!("discouraged")).await;
    let refused = finish(&app, &kim, &id, &uv_less).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (tonic::Code::Unauthenticated, "PASSKEY_REJECTED"));
    // The refused ceremony is spent: the same sign-in takes no second answer.
    let (_, good) = answer(&app, &mut key, &kim, origin(&app), |_| {}).await;
    assert_eq!(reason(&finish(&app, &kim, &id, &good).await.unwrap_err()), "SIGN_IN_EXPIRED");

    // Made for another origin (a look-alike site on the same name).
    let elsewhere = Url::parse("https://evil.localhost").unwrap();
    let (id, phished) = answer(&app, &mut key, &kim, elsewhere, |_| {}).await;
    assert_eq!(reason(&finish(&app, &kim, &id, &phished).await.unwrap_err()), "PASSKEY_REJECTED");

    // Garbage in place of an answer.
    let (id, _) = answer(&app, &mut key, &kim, origin(&app), |_| {}).await;
    assert_eq!(reason(&finish(&app, &kim, &id, "{\"id\": 7}").await.unwrap_err()), "PASSKEY_REJECTED");

    // Each refusal is a failed sign-in of kim's (the audit log holds them, one event per person per minute).
    assert!(denied().await > before, "the refusals are audited");
    let guard = app.stores.sign_in.sign_in_lock("person:kim", app.now()).await.unwrap();
    assert!(guard.is_none(), "three failures lock nobody yet");
    // Two more failures lock kim's sign-in, passkey or not.
    for _ in 0..2 {
        let (id, _) = answer(&app, &mut key, &kim, origin(&app), |_| {}).await;
        finish(&app, &kim, &id, "{}").await.unwrap_err();
    }
    let req = pb::StartSignInRequest { factor: pb::SecondFactor::Passkey.into() };
    let locked = client(&app).await.start_sign_in(authed(req, &kim)).await.unwrap_err();
    assert_eq!(reason(&locked), "SIGN_IN_LOCKED");
    app.stop().await;
}

/// A lead with no phone or e-mail at hand enrols with the personal token and a one-time code an operator issued
/// (`otpd supervisors passkey-code`): the code is spent by the enrolment, a wrong one counts as a failed sign-in,
/// and the passkey then signs in with the token alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolment_code_from_an_operator_enrols_a_passkey_without_a_session() {
    let app = spawn_app_with(Backend::Sqlite, &["--require-second-factor", "true"]).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let otpd = |args: &[&str]| app.otpd_command(args);
    let issued = otpd(&["supervisors", "passkey-code", "kim"]);
    assert!(issued.status.success(), "{issued:?}");
    let code = String::from_utf8_lossy(&issued.stdout).trim().to_owned();
    assert!(code.starts_with("otpenr_"), "{code}");
    let log = events(&app).await;
    let event = log.iter().find(|e| e.event.action == AuditAction::PasskeyEnrolmentCodeIssued).unwrap();
    assert!(!event.event.detail.contains(&code), "the code is never in the audit log");

    let start = |code: String| {
        let (app, kim) = (&app, kim.clone());
        async move {
            let req = pb::StartPasskeyEnrolmentRequest { enrolment_code: code };
            client(app).await.start_passkey_enrolment(authed(req, &kim)).await.map(tonic::Response::into_inner)
        }
    };
    // A wrong code: refused, counted.
    let mut wrong = code.clone();
    wrong.pop();
    wrong.push(if code.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(reason(&start(wrong).await.unwrap_err()), "SIGN_IN_EXPIRED");
    let failed = events(&app).await.into_iter().rev().find(|e| e.event.action == AuditAction::SignIn).unwrap();
    assert!(failed.event.detail.contains("enrolment code"), "{}", failed.event.detail);

    // The right code opens one ceremony, finished with the personal token.
    let started = start(code.clone()).await.unwrap();
    assert_eq!(reason(&start(code.clone()).await.unwrap_err()), "SIGN_IN_EXPIRED", "the code works once");
    let mut key = WebauthnAuthenticator::new(SoftPasskey::new(true));
    let options: Value = serde_json::from_str(&started.passkey_creation_options_json).unwrap();
    let ccr: CreationChallengeResponse = serde_json::from_value(json!({ "publicKey": options })).unwrap();
    let credential = key.do_registration(origin(&app), ccr).unwrap();
    let req = pb::FinishPasskeyEnrolmentRequest {
        enrolment_id: started.enrolment_id,
        passkey_credential_json: to_json(&credential),
        label: "보안 키".into(),
    };
    client(&app).await.finish_passkey_enrolment(authed(req, &kim)).await.unwrap();
    let enrolled = events(&app).await.into_iter().rev().find(|e| e.event.action == AuditAction::PasskeyEnrolled);
    assert!(enrolled.unwrap().event.detail.ends_with("with an enrolment code"));

    // A ceremony opened from a session still needs the session to finish: the bare token cannot.
    let (id, assertion) = answer(&app, &mut key, &kim, origin(&app), |_| {}).await;
    let session = finish(&app, &kim, &id, &assertion).await.unwrap().session_token;
    let req = pb::StartPasskeyEnrolmentRequest::default();
    let from_session = client(&app).await.start_passkey_enrolment(authed(req, &session)).await.unwrap().into_inner();
    let mut other = WebauthnAuthenticator::new(SoftPasskey::new(true));
    let options: Value = serde_json::from_str(&from_session.passkey_creation_options_json).unwrap();
    let ccr: CreationChallengeResponse = serde_json::from_value(json!({ "publicKey": options })).unwrap();
    let credential = other.do_registration(origin(&app), ccr).unwrap();
    let req = pb::FinishPasskeyEnrolmentRequest {
        enrolment_id: from_session.enrolment_id,
        passkey_credential_json: to_json(&credential),
        label: "second".into(),
    };
    let bare = client(&app).await.finish_passkey_enrolment(authed(req, &kim)).await.unwrap_err();
    assert_eq!(reason(&bare), "SESSION_REQUIRED");
}
