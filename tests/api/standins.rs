//! Real HTTP servers on loopback that play the Korean providers, each implementing the provider's published
//! protocol (../shared/providers.md) including its authentication, written from the documentation and not from
//! otpd's adapters: NHN Cloud SMS and AlimTalk (`X-Secret-Key`), Naver Cloud SENS (signature v2) and Solapi
//! (`HMAC-SHA256 apiKey, date, salt, signature`). Each records what it received and can be told to fail.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The credentials every stand-in knows.
pub const APP_KEY: &str = "app-key-1";
pub const SECRET_KEY: &str = "secret-key-1";
pub const SERVICE_ID: &str = "ncp:sms:kr:1234:otp";
pub const ACCESS_KEY: &str = "access-key-1";
pub const SENDER_KEY: &str = "sender-key-1";
pub const TEMPLATE_CODE: &str = "OTP_AUTH_01";
/// The approved AlimTalk template of the lookup notice.
pub const NOTICE_TEMPLATE_CODE: &str = "OTP_NOTICE_01";

/// One request a stand-in accepted or refused.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// What the stand-in answered.
    pub status: u16,
}

/// What a stand-in does with the next requests, before it checks anything.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// 503 Service Unavailable.
    Unavailable,
    /// A refusal in the provider's own form (AlimTalk: the recipient has no KakaoTalk).
    Refuse,
}

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    faults: VecDeque<Fault>,
    signatures: HashSet<String>,
    next_id: u32,
    /// Answer every request `307 Temporary Redirect` to this base URL (same path) instead of handling it.
    redirect_to: Option<String>,
}

/// A running stand-in.
#[derive(Clone)]
pub struct StandIn {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl StandIn {
    /// NHN Cloud SMS (`/sms/v3.0/appKeys/{appKey}/sender/auth/sms`) and AlimTalk
    /// (`/alimtalk/v2.3/appkeys/{appkey}/auth/messages`, and `/messages` for template messages such as the lookup
    /// notice) on one server.
    pub async fn nhn() -> Self {
        Self::serve(
            axum::Router::new()
                .route("/sms/v3.0/appKeys/{app_key}/sender/auth/sms", post(nhn_sms))
                .route("/alimtalk/v2.3/appkeys/{app_key}/auth/messages", post(nhn_alimtalk))
                .route("/alimtalk/v2.3/appkeys/{app_key}/messages", post(nhn_alimtalk_message)),
        )
        .await
    }

    /// Naver Cloud SENS (`/sms/v2/services/{serviceId}/messages`).
    pub async fn sens() -> Self {
        Self::serve(axum::Router::new().route("/sms/v2/services/{service_id}/messages", post(sens))).await
    }

    /// Solapi (`/messages/v4/send`).
    pub async fn solapi() -> Self {
        Self::serve(axum::Router::new().route("/messages/v4/send", post(solapi))).await
    }

    async fn serve(router: axum::Router<Arc<Mutex<Inner>>>) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router.layer(axum::middleware::from_fn_with_state(inner.clone(), redirect)).with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, inner }
    }

    /// The base URL to configure.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// From now on every request is answered `307` to the same path on `target` (RFC 9110 §15.4.8: a client
    /// that follows it repeats the request, body and all, there).
    pub fn redirect_to(&self, target: &StandIn) {
        self.inner.lock().unwrap().redirect_to = Some(target.base());
    }

    /// The next requests meet these faults, in order.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.inner.lock().unwrap().faults.extend(faults);
    }
}

type St = State<Arc<Mutex<Inner>>>;

/// Answers `307` (recording the request) while a redirect is set; otherwise hands the request on.
async fn redirect(State(inner): St, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(target) = inner.lock().unwrap().redirect_to.clone() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let path = parts.uri.path().to_owned();
    record(&inner, path.clone(), &parts.headers, &String::from_utf8_lossy(&body));
    let response = (StatusCode::TEMPORARY_REDIRECT, [("location", format!("{target}{path}"))]).into_response();
    answered(&inner, response)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Records the request, and answers with the next fault if one is queued.
fn record(inner: &Mutex<Inner>, path: String, headers: &HeaderMap, body: &str) -> (Option<Fault>, String) {
    let mut inner = inner.lock().unwrap();
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    inner.seen.push(Seen { path, headers: headers.clone(), body, status: 0 });
    inner.next_id += 1;
    (inner.faults.pop_front(), format!("{:04}", inner.next_id))
}

fn answered(inner: &Mutex<Inner>, response: Response) -> Response {
    if let Some(last) = inner.lock().unwrap().seen.last_mut() {
        last.status = response.status().as_u16();
    }
    response
}

/// NHN's envelope: `{"header": {isSuccessful, resultCode, resultMessage}, …}`.
fn nhn_header(ok: bool, code: i64, message: &str) -> Value {
    json!({ "isSuccessful": ok, "resultCode": code, "resultMessage": message })
}

/// NHN Cloud SMS authentication message. The app key in the path and `X-Secret-Key` must match (else NHN answers
/// `isSuccessful: false`); the body needs an authentication word; `sendNo` must be the registered sender as digits.
async fn nhn_sms(State(inner): St, Path(app_key): Path<String>, headers: HeaderMap, body: String) -> Response {
    let (fault, id) = record(&inner, format!("/sms/v3.0/appKeys/{app_key}/sender/auth/sms"), &headers, &body);
    let response = match fault {
        Some(Fault::Unavailable) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Some(Fault::Refuse) => Json(json!({ "header": nhn_header(false, -2019, "refused") })).into_response(),
        None => {
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let text = body["body"].as_str().unwrap_or("");
            let refusal = if app_key != APP_KEY || header(&headers, "x-secret-key") != SECRET_KEY {
                Some((-1000, "Invalid appKey or secretKey"))
            } else if !header(&headers, "content-type").starts_with("application/json") {
                Some((-1001, "content type"))
            } else if !["인증", "비밀번호", "auth", "password", "verif"].iter().any(|w| text.to_lowercase().contains(w))
            {
                Some((-2031, "no authentication word"))
            } else if body["sendNo"] != "18003400" {
                Some((-2018, "unregistered sendNo"))
            } else {
                None
            };
            match refusal {
                Some((code, message)) => Json(json!({ "header": nhn_header(false, code, message) })).into_response(),
                None => Json(json!({
                    "header": nhn_header(true, 0, "SUCCESS"),
                    "body": { "data": {
                        "requestId": format!("20261129-nhn-{id}"),
                        "statusCode": "2",
                        "sendResultList": [{
                            "recipientNo": body["recipientList"][0]["recipientNo"],
                            "resultCode": 0, "resultMessage": "SUCCESS", "recipientSeq": 1
                        }]
                    }}
                }))
                .into_response(),
            }
        }
    };
    answered(&inner, response)
}

/// NHN Cloud AlimTalk authentication message: app key and `X-Secret-Key`, the channel's sender key, the approved
/// template code with its `code` parameter, and the provider-side SMS fallback. NHN Cloud AlimTalk API v2.3 Guide
/// (toast-docs `Alimtalk/ko/alimtalk-api-guide.md`), 인증 메시지 > 메시지 치환 발송 요청:
/// `POST /alimtalk/v2.3/appkeys/{appkey}/auth/messages`; the `code` variable is the one our test template
/// `OTP_AUTH_01` is registered with (templateParameter: "치환 변수가 있을 경우 필수").
async fn nhn_alimtalk(State(inner): St, Path(app_key): Path<String>, headers: HeaderMap, body: String) -> Response {
    let path = format!("/alimtalk/v2.3/appkeys/{app_key}/auth/messages");
    alimtalk(inner, path, app_key, headers, body, |body| {
        body["templateCode"] == TEMPLATE_CODE
            && body["recipientList"][0]["templateParameter"]["code"].as_str().is_some_and(|c| c.len() >= 6)
    })
}

/// NHN Cloud AlimTalk template message (the lookup notice): the notice template, which takes no parameters, so
/// no code rides along; the provider-side SMS fallback says the same. Same guide, 일반 메시지 > 메시지 치환 발송
/// 요청: `POST /alimtalk/v2.3/appkeys/{appkey}/messages`, the same header and body as the authentication API; our
/// test template `OTP_NOTICE_01` has no variables, so it takes no templateParameter.
async fn nhn_alimtalk_message(
    State(inner): St,
    Path(app_key): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/alimtalk/v2.3/appkeys/{app_key}/messages");
    alimtalk(inner, path, app_key, headers, body, |body| {
        body["templateCode"] == NOTICE_TEMPLATE_CODE && body["recipientList"][0].get("templateParameter").is_none()
    })
}

/// What both AlimTalk send APIs check, from the guide's [Header] and [Request body] tables (v2.3, 메시지 치환 발송
/// 요청): `X-Secret-Key` (필수), `senderKey` (발신 키, 필수), `templateCode` (등록한 발송 템플릿 코드, 필수),
/// `recipientList[].resendParameter.isResend` and `resendSendNo` (대체 발송 발신 번호: "SMS 서비스에 등록된 발신
/// 번호", 1800-3400 here). The refusal's `resultCode` -3024 is ours, not checked against the guide's error-code
/// list (issue 22 rewrites these stand-ins from the documents).
fn alimtalk(
    inner: Arc<Mutex<Inner>>,
    path: String,
    app_key: String,
    headers: HeaderMap,
    body: String,
    template: impl Fn(&Value) -> bool,
) -> Response {
    let (fault, id) = record(&inner, path, &headers, &body);
    let response = match fault {
        Some(Fault::Unavailable) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Some(Fault::Refuse) => Json(json!({
            "header": nhn_header(true, 0, "success"),
            "message": { "requestId": format!("at-{id}"), "sendResults": [{
                "recipientSeq": 1, "resultCode": -3024, "resultMessage": "not a KakaoTalk user"
            }]}
        }))
        .into_response(),
        None => {
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let recipient = &body["recipientList"][0];
            let ok = app_key == APP_KEY
                && header(&headers, "x-secret-key") == SECRET_KEY
                && body["senderKey"] == SENDER_KEY
                && template(&body)
                && recipient["resendParameter"]["isResend"] == true
                && recipient["resendParameter"]["resendSendNo"] == "18003400";
            if ok {
                Json(json!({
                    "header": nhn_header(true, 0, "success"),
                    "message": { "requestId": format!("at-{id}"), "sendResults": [{
                        "recipientSeq": 1, "recipientNo": recipient["recipientNo"], "resultCode": 0,
                        "resultMessage": "success"
                    }]}
                }))
                .into_response()
            } else {
                Json(json!({ "header": nhn_header(false, -1000, "Invalid request") })).into_response()
            }
        }
    };
    answered(&inner, response)
}

fn hmac_sha256(key: &str, message: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Naver Cloud SENS: `x-ncp-apigw-timestamp` within 5 minutes, a known `x-ncp-iam-access-key`, and
/// `x-ncp-apigw-signature-v2` = base64(HMAC-SHA256(secretKey, "POST {path}\n{timestamp}\n{accessKey}")).
async fn sens(State(inner): St, Path(service_id): Path<String>, headers: HeaderMap, body: String) -> Response {
    let path = format!("/sms/v2/services/{service_id}/messages");
    let (fault, id) = record(&inner, path.clone(), &headers, &body);
    let response = match fault {
        Some(Fault::Unavailable) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Some(Fault::Refuse) => (StatusCode::BAD_REQUEST, Json(json!({ "status": 400 }))).into_response(),
        None => {
            let timestamp = header(&headers, "x-ncp-apigw-timestamp");
            let fresh = timestamp
                .parse::<i64>()
                .is_ok_and(|ms| (chrono::Utc::now().timestamp_millis() - ms).abs() <= 5 * 60 * 1000);
            let access_key = header(&headers, "x-ncp-iam-access-key");
            let expected = base64::engine::general_purpose::STANDARD
                .encode(hmac_sha256(SECRET_KEY, &format!("POST {path}\n{timestamp}\n{access_key}")));
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if !fresh || access_key != ACCESS_KEY || header(&headers, "x-ncp-apigw-signature-v2") != expected {
                (StatusCode::UNAUTHORIZED, Json(json!({ "errorCode": "200", "message": "Authentication Failed" })))
                    .into_response()
            } else if service_id != SERVICE_ID || body["from"] != "18003400" || body["type"] != "SMS" {
                (StatusCode::BAD_REQUEST, Json(json!({ "status": 400 }))).into_response()
            } else {
                (
                    StatusCode::ACCEPTED,
                    Json(json!({
                        "requestId": format!("RSSA-{id}"), "requestTime": "2026-11-29T18:00:00.000",
                        "statusCode": "202", "statusName": "success"
                    })),
                )
                    .into_response()
            }
        }
    };
    answered(&inner, response)
}

/// Solapi: `Authorization: HMAC-SHA256 apiKey=…, date=…, salt=…, signature=…` with the date within 15 minutes, a
/// salt of 12 to 64 characters, signature = hex(HMAC-SHA256(apiSecret, date + salt)), never used before.
async fn solapi(State(inner): St, headers: HeaderMap, body: String) -> Response {
    let (fault, id) = record(&inner, "/messages/v4/send".into(), &headers, &body);
    let response = match fault {
        Some(Fault::Unavailable) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Some(Fault::Refuse) => Json(json!({ "statusCode": "3059", "statusMessage": "refused" })).into_response(),
        None => {
            let auth = header(&headers, "authorization");
            let fields: std::collections::HashMap<&str, &str> = auth
                .strip_prefix("HMAC-SHA256 ")
                .unwrap_or("")
                .split(", ")
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let field = |k: &str| fields.get(k).copied().unwrap_or("");
            let (date, salt, signature) = (field("date"), field("salt"), field("signature"));
            let fresh = chrono::DateTime::parse_from_rfc3339(date)
                .is_ok_and(|at| (chrono::Utc::now() - at.to_utc()).num_minutes().abs() <= 15);
            let expected = hex::encode(hmac_sha256(SECRET_KEY, &format!("{date}{salt}")));
            let reused = !inner.lock().unwrap().signatures.insert(signature.to_owned());
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if field("apiKey") != ACCESS_KEY
                || !fresh
                || !(12..=64).contains(&salt.len())
                || signature != expected
                || reused
            {
                (
                    StatusCode::FORBIDDEN,
                    Json(json!({ "errorCode": "SignatureDoesNotMatch", "errorMessage": "signature" })),
                )
                    .into_response()
            } else if body["message"]["from"] != "18003400" {
                (StatusCode::BAD_REQUEST, Json(json!({ "errorCode": "InvalidSender" }))).into_response()
            } else {
                Json(json!({
                    "groupId": format!("G4V-{id}"), "messageId": format!("M4V-{id}"),
                    "statusCode": "2000", "statusMessage": "정상 접수(이통사로 접수 예정)"
                }))
                .into_response()
            }
        }
    };
    answered(&inner, response)
}
