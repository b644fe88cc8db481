//! Real HTTP servers on loopback that play the Korean providers, written from each provider's own documents and
//! not from otpd's adapters. Every rule a stand-in enforces cites the section it comes from:
//!
//! - NHN Cloud SMS: TOAST-DOCS/SMS `ko/api-guide.md` ("Notification > SMS > API v3.0 Guide"), its result codes
//!   `ko/error-code.md` ("API 결과 코드");
//! - NHN Cloud AlimTalk: TOAST-DOCS/Alimtalk `ko/alimtalk-api-guide.md` ("알림톡 > API v2.3 Guide"), its codes
//!   `ko/error-code.md` ("API 응답 코드");
//! - Naver Cloud SENS: api.ncloud-docs.com `sens-sms-send`, `sens-sms-list`, `sens-sms-get` and the common
//!   request headers (signature v2);
//! - Solapi: solapi/documents `authentication/`, `api-reference/messages/getMessageList.md`,
//!   `api-reference/message-status-codes.md`.
//!
//! Each records what it received (sends in [`StandIn::seen`], result queries in [`StandIn::queries`]), can be told
//! to fail, and for the providers otpd polls (SENS, Solapi) answers result queries with what a test reports.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
/// The sender number registered with every stand-in (발신번호 사전등록제), as digits.
pub const REGISTERED_SENDER: &str = "18003400";

/// One send request a stand-in accepted or refused.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// What the stand-in answered.
    pub status: u16,
}

/// What a stand-in does with the next send requests, before it checks anything.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// 503 Service Unavailable.
    Unavailable,
    /// A documented refusal in the provider's own form (NHN SMS `-2019` 수신자 번호가 유효하지 않은 경우; AlimTalk
    /// `-1027` 발신 프로필이 차단 상태; SENS 400; Solapi 1062 발신번호 미등록).
    Refuse,
    /// NHN's `-9999` 시스템 오류 (both APIs): `isSuccessful: false`, and nothing sent.
    SystemError,
    /// NHN SMS `-2021` 시스템 오류(큐 저장 실패): nothing queued.
    QueueFailed,
    /// Takes the message as usual (it is sent, its idempotency key remembered), but answers only after this long.
    Slow(Duration),
}

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    queries: Vec<String>,
    faults: VecDeque<Fault>,
    signatures: HashSet<String>,
    next_id: u32,
    /// AlimTalk's X-NC-API-IDEMPOTENCY-KEY values and when each was first used.
    idempotency: HashMap<String, Instant>,
    /// Messages the provider actually took (sent on to the carrier or KakaoTalk).
    taken: Vec<Value>,
    /// SENS: request id → message id.
    sens_messages: HashMap<String, String>,
    /// AlimTalk: the provider's own SMS fallback per request id (resendStatus, resendRequestId).
    fallbacks: HashMap<String, (String, String)>,
    /// AlimTalk: the request ids of the authentication messages taken, which 메시지 단건 조회 finds.
    alimtalk_auth_ids: HashSet<String>,
    /// Solapi: the message ids taken.
    solapi_messages: HashSet<String>,
    /// The carrier's result reported per provider id (SENS request id, Solapi message id): status code, time.
    results: HashMap<String, (String, chrono::DateTime<chrono::Utc>)>,
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
                .route("/alimtalk/v2.3/appkeys/{app_key}/messages", post(nhn_alimtalk_message))
                .route("/alimtalk/v2.3/appkeys/{app_key}/auth/messages/{request_id}/{seq}", get(nhn_alimtalk_get)),
        )
        .await
    }

    /// Naver Cloud SENS (`POST /sms/v2/services/{serviceId}/messages`, and the two result queries).
    pub async fn sens() -> Self {
        Self::serve(
            axum::Router::new()
                .route("/sms/v2/services/{service_id}/messages", post(sens).get(sens_list))
                .route("/sms/v2/services/{service_id}/messages/{message_id}", get(sens_get)),
        )
        .await
    }

    /// Solapi (`POST /messages/v4/send`, `GET /messages/v4/list`).
    pub async fn solapi() -> Self {
        Self::serve(
            axum::Router::new().route("/messages/v4/send", post(solapi)).route("/messages/v4/list", get(solapi_list)),
        )
        .await
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

    /// Every send request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// Every result query received so far (path and query).
    pub fn queries(&self) -> Vec<String> {
        self.inner.lock().unwrap().queries.clone()
    }

    /// The messages the provider took and sent on (a refused or failed request sends nothing; a repeated
    /// idempotency key sends nothing more).
    pub fn taken(&self) -> Vec<Value> {
        self.inner.lock().unwrap().taken.clone()
    }

    /// From now on every request is answered `307` to the same path on `target` (RFC 9110 §15.4.8: a client
    /// that follows it repeats the request, body and all, there).
    pub fn redirect_to(&self, target: &StandIn) {
        self.inner.lock().unwrap().redirect_to = Some(target.base());
    }

    /// The next send requests meet these faults, in order.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    /// AlimTalk: NHN's own SMS fallback for the AlimTalk `request_id` (대체 발송 상태 `status`, RSC01–RSC05, and the
    /// fallback SMS's request id), as the message query reports it. Until then it says RSC01 (대체 발송 미대상).
    pub fn fall_back(&self, request_id: &str, status: &str, sms_request_id: &str) {
        let fallback = (status.to_owned(), sms_request_id.to_owned());
        self.inner.lock().unwrap().fallbacks.insert(request_id.to_owned(), fallback);
    }

    /// The carrier's result for the message the provider knows as `provider_id` (the id its send answer gave):
    /// SENS `statusCode` ("0" delivered), Solapi 메시지 상태 코드 ("4000" delivered). Until then queries say it is
    /// still on its way.
    pub fn report(&self, provider_id: &str, code: &str) {
        self.inner.lock().unwrap().results.insert(provider_id.to_owned(), (code.to_owned(), chrono::Utc::now()));
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

/// Sets the status of the request `record` added last for this connection: the newest one with no status yet.
fn answered(inner: &Mutex<Inner>, response: Response) -> Response {
    if let Some(last) = inner.lock().unwrap().seen.iter_mut().rev().find(|s| s.status == 0) {
        last.status = response.status().as_u16();
    }
    response
}

fn take(inner: &Mutex<Inner>, body: &Value) {
    inner.lock().unwrap().taken.push(body.clone());
}

/// A `Slow` fault: the answer waits.
async fn slow(fault: Option<Fault>) {
    if let Some(Fault::Slow(wait)) = fault {
        tokio::time::sleep(wait).await;
    }
}

/// NHN's envelope: `{"header": {isSuccessful, resultCode, resultMessage}, …}` (SMS API v3.0, 응답).
fn nhn_header(ok: bool, code: i64, message: &str) -> Value {
    json!({ "isSuccessful": ok, "resultCode": code, "resultMessage": message })
}

fn nhn_refusal(code: i64, message: &str) -> Response {
    Json(json!({ "header": nhn_header(false, code, message) })).into_response()
}

/// NHN Cloud SMS API v3.0, 인증용 SMS(긴급) > 인증용 SMS 발송 (`POST /sms/v3.0/appKeys/{appKey}/sender/auth/sms`).
async fn nhn_sms(State(inner): St, Path(app_key): Path<String>, headers: HeaderMap, body: String) -> Response {
    let (fault, id) = record(&inner, format!("/sms/v3.0/appKeys/{app_key}/sender/auth/sms"), &headers, &body);
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let text = body["body"].as_str().unwrap_or("");
    let recipient = &body["recipientList"][0];
    let response = match fault {
        Some(Fault::Unavailable) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        // error-code.md, API 결과 코드: -2019 수신자 번호가 유효하지 않은 경우.
        Some(Fault::Refuse) => nhn_refusal(-2019, "RecipientNo is invalid."),
        // -9999 시스템 오류(예기치 못한 오류) and -2021 시스템 오류(큐 저장 실패): nothing was sent.
        Some(Fault::SystemError) => nhn_refusal(-9999, "System error. Please inquire at support@toast.com."),
        Some(Fault::QueueFailed) => nhn_refusal(-2021, "System error. Failed insert queue."),
        fault @ (None | Some(Fault::Slow(_))) => {
            // [Path parameter] appKey 고유의 앱키 (-1000 유효하지 않은 앱키). [Header] X-Secret-Key ("v3.0 API 호출 시에는
            // 헤더에 시크릿 키를 추가해야 성공하게 됩니다"; the code page names no code for a wrong secret key, so the
            // stand-in answers the app key's).
            let refusal = if app_key != APP_KEY || header(&headers, "x-secret-key") != SECRET_KEY {
                Some((-1000, "Invalid appKey."))
            // [URL] Content-Type: application/json;charset=UTF-8 (-9996 유효하지 않은 contentType).
            } else if !header(&headers, "content-type").starts_with("application/json") {
                Some((-9996, "Only application/json Content-type is supported."))
            // 인증용 SMS 발송 1. 인증 문구: "auth, password, verify, にんしょう, 認証, 비밀번호, 인증", English in any
            // case (예시 1-2), else the send fails (-8000 인증 발송에 인증 문구가 포함되지 않은 경우).
            } else if !["auth", "password", "verify", "にんしょう", "認証", "비밀번호", "인증"]
                .iter()
                .any(|word| text.to_lowercase().contains(word))
            {
                Some((-8000, "The body must contain auth guide ment."))
            // sendNo 발신 번호, registered in advance (-2312 발신 번호가 비어 있거나 미등록 상태).
            } else if body["sendNo"] != REGISTERED_SENDER {
                Some((-2312, "Not regist sendno."))
            // recipientList[].recipientNo 필수 (-2018 수신자 번호가 비어 있는 경우).
            } else if recipient["recipientNo"].as_str().is_none_or(str::is_empty) {
                Some((-2018, "RecipientNo can not be empty."))
            } else {
                None
            };
            match refusal {
                Some((code, message)) => nhn_refusal(code, message),
                None => {
                    take(&inner, &body);
                    slow(fault).await;
                    Json(json!({
                        "header": nhn_header(true, 0, "SUCCESS"),
                        "body": { "data": {
                            "requestId": format!("20261129-nhn-{id}"),
                            "statusCode": "2",
                            "sendResultList": [{
                                "recipientNo": recipient["recipientNo"],
                                "resultCode": 0, "resultMessage": "SUCCESS", "recipientSeq": 1
                            }]
                        }}
                    }))
                    .into_response()
                }
            }
        }
    };
    answered(&inner, response)
}

/// NHN Cloud AlimTalk API v2.3, 인증 메시지 > 메시지 치환 발송 요청
/// (`POST /alimtalk/v2.3/appkeys/{appkey}/auth/messages`): the approved template `OTP_AUTH_01`, registered with the
/// variable `code` (templateParameter "템플릿에 치환할 변수 포함 시, 필수"; -3004 템플릿 파라미터 오류).
async fn nhn_alimtalk(State(inner): St, Path(app_key): Path<String>, headers: HeaderMap, body: String) -> Response {
    let path = format!("/alimtalk/v2.3/appkeys/{app_key}/auth/messages");
    alimtalk(inner, path, app_key, headers, body, TEMPLATE_CODE, |recipient| {
        recipient["templateParameter"]["code"].as_str().is_some_and(|c| c.len() >= 6)
    })
    .await
}

/// Same guide, 일반 메시지 > 메시지 치환 발송 요청 (`POST /alimtalk/v2.3/appkeys/{appkey}/messages`): the lookup
/// notice's template `OTP_NOTICE_01` has no variables, so it takes no templateParameter.
async fn nhn_alimtalk_message(
    State(inner): St,
    Path(app_key): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/alimtalk/v2.3/appkeys/{app_key}/messages");
    alimtalk(inner, path, app_key, headers, body, NOTICE_TEMPLATE_CODE, |recipient| {
        recipient.get("templateParameter").is_none()
    })
    .await
}

/// What both AlimTalk send APIs check, from the guide's [Header] and [Request body] tables and the API 응답 코드.
/// A phone without KakaoTalk is no API error: NHN takes the message and falls back to SMS itself
/// (resendParameter; 대체 발송 상태 RSC01–RSC05), so this stand-in never refuses a recipient for it.
async fn alimtalk(
    inner: Arc<Mutex<Inner>>,
    path: String,
    app_key: String,
    headers: HeaderMap,
    body: String,
    template: &str,
    parameters_fit: impl Fn(&Value) -> bool,
) -> Response {
    let auth = path.ends_with("/auth/messages");
    let (fault, id) = record(&inner, path, &headers, &body);
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let recipient = &body["recipientList"][0];
    let response = match fault {
        Some(Fault::Unavailable) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        // -1027 발신 프로필이 차단 상태일 경우.
        Some(Fault::Refuse) => nhn_refusal(-1027, "The sender is blocked status."),
        Some(Fault::SystemError | Fault::QueueFailed) => nhn_refusal(-9999, "System error."),
        fault @ (None | Some(Fault::Slow(_))) => {
            let key = header(&headers, "x-nc-api-idempotency-key").to_owned();
            let repeated = !key.is_empty() && {
                let mut inner = inner.lock().unwrap();
                let now = Instant::now();
                // "10분간 동일한 key로 요청 시 해당 요청을 실패 처리합니다" (X-NC-API-IDEMPOTENCY-KEY).
                let first = *inner.idempotency.entry(key).or_insert(now);
                first != now && now.duration_since(first) < Duration::from_secs(600)
            };
            let resend = &recipient["resendParameter"];
            let refusal = if app_key != APP_KEY {
                Some((-1000, "Invalid appKey."))
            } else if header(&headers, "x-secret-key") != SECRET_KEY {
                Some((-1001, "Invalid secretKey."))
            } else if repeated {
                Some((-1005, "The same 'X-NC-API-IDEMPOTENCY-KEY' was used within the last 10 minute."))
            // senderKey 발신 키(40자), 필수 (-2017 존재하지 않는 발신 프로필).
            } else if body["senderKey"] != SENDER_KEY {
                Some((-2017, "Not exist plus friend."))
            // templateCode 등록한 발송 템플릿 코드, 필수 (-3003 존재하는 않는 템플릿).
            } else if body["templateCode"] != template {
                Some((-3003, "Not exist template."))
            } else if !parameters_fit(recipient) {
                Some((-3004, "Template parameter error."))
            // recipientNo 수신번호(최대 15자) (-2000 특정 필드값이 최대 길이 초과할 경우).
            } else if recipient["recipientNo"].as_str().is_none_or(|n| n.is_empty() || n.len() > 15) {
                Some((-2000, "The 'recipientNo' must be at less than or equal to 15."))
            // resendSendNo: "SMS 서비스에 등록된 발신 번호가 아닐 경우, 대체 발송에 실패할 수 있습니다"
            // (-1003 유효하지 않은 SMS 발신 번호).
            } else if resend["isResend"] != true || resend["resendSendNo"] != REGISTERED_SENDER {
                Some((-1003, "Invalid Sms Sendno"))
            } else {
                None
            };
            match refusal {
                Some((code, message)) => nhn_refusal(code, message),
                None => {
                    take(&inner, &body);
                    let request_id = format!("at-{id}");
                    if auth {
                        inner.lock().unwrap().alimtalk_auth_ids.insert(request_id.clone());
                    }
                    slow(fault).await;
                    Json(json!({
                        "header": nhn_header(true, 0, "success"),
                        "message": { "requestId": request_id, "sendResults": [{
                            "recipientSeq": 1, "recipientNo": recipient["recipientNo"], "resultCode": 0,
                            "resultMessage": "success"
                        }]}
                    }))
                    .into_response()
                }
            }
        }
    };
    answered(&inner, response)
}

/// NHN Cloud AlimTalk API v2.3, 인증 메시지 > 메시지 단건 조회
/// (`GET /alimtalk/v2.3/appkeys/{appkey}/auth/messages/{requestId}/{recipientSeq}`, header `X-Secret-Key`): the
/// message with `resendStatus` (대체 발송 상태 코드) and `resendRequestId` (대체 발송 SMS 요청 ID).
async fn nhn_alimtalk_get(
    State(inner): St,
    Path((app_key, request_id, seq)): Path<(String, String, u32)>,
    headers: HeaderMap,
) -> Response {
    inner.lock().unwrap().queries.push(format!("/alimtalk/v2.3/appkeys/{app_key}/auth/messages/{request_id}/{seq}"));
    if app_key != APP_KEY {
        return nhn_refusal(-1000, "Invalid appKey.");
    }
    if header(&headers, "x-secret-key") != SECRET_KEY {
        return nhn_refusal(-1001, "Invalid secretKey.");
    }
    let inner = inner.lock().unwrap();
    if seq != 1 || !inner.alimtalk_auth_ids.contains(&request_id) {
        // -1016 requestId 혹은 recipientSeq로 메시지를 찾을 수 없는 경우.
        return nhn_refusal(-1016, "Not found message.");
    }
    let (status, resend_id) = inner.fallbacks.get(&request_id).cloned().unwrap_or(("RSC01".into(), String::new()));
    Json(json!({
        "header": nhn_header(true, 0, "success"),
        "message": {
            "requestId": request_id, "recipientSeq": seq, "senderKey": SENDER_KEY, "templateCode": TEMPLATE_CODE,
            "recipientNo": "01012345678", "requestDate": "2026-11-29 18:00:00", "createDate": "2026-11-29 18:00:00",
            "resendStatus": status, "resendStatusName": "", "resendRequestId": if resend_id.is_empty() { Value::Null } else { resend_id.into() },
            "messageStatus": "FAILED", "resultCode": "3019"
        }
    }))
    .into_response()
}

fn hmac_sha256(key: &str, message: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// SENS common request headers: `x-ncp-apigw-timestamp` (ms; "API Gateway 서버와 시간 차가 5분 이상 나는 경우
/// 유효하지 않은 요청"), `x-ncp-iam-access-key`, and `x-ncp-apigw-signature-v2` = base64(HmacSHA256(secretKey,
/// "{method} {uri}\n{timestamp}\n{accessKey}")), the URI with its query string.
fn sens_signed(headers: &HeaderMap, method: &str, uri: &str) -> bool {
    let timestamp = header(headers, "x-ncp-apigw-timestamp");
    let fresh =
        timestamp.parse::<i64>().is_ok_and(|ms| (chrono::Utc::now().timestamp_millis() - ms).abs() <= 5 * 60 * 1000);
    let access_key = header(headers, "x-ncp-iam-access-key");
    let expected = base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256(SECRET_KEY, &format!("{method} {uri}\n{timestamp}\n{access_key}")));
    fresh && access_key == ACCESS_KEY && header(headers, "x-ncp-apigw-signature-v2") == expected
}

fn sens_unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({ "errorCode": "200", "message": "Authentication Failed" }))).into_response()
}

/// SENS `sens-sms-send` (`POST /sms/v2/services/{serviceId}/messages`): answered 202 with `requestId` and
/// `statusCode` "202"; `type` SMS holds 90 bytes; `from` must be registered (발신번호).
async fn sens(State(inner): St, Path(service_id): Path<String>, headers: HeaderMap, body: String) -> Response {
    let path = format!("/sms/v2/services/{service_id}/messages");
    let (fault, id) = record(&inner, path.clone(), &headers, &body);
    let response = match fault {
        Some(Fault::Unavailable | Fault::SystemError | Fault::QueueFailed) => {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Some(Fault::Refuse) => (StatusCode::BAD_REQUEST, Json(json!({ "status": 400 }))).into_response(),
        fault @ (None | Some(Fault::Slow(_))) => {
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if !sens_signed(&headers, "POST", &path) {
                sens_unauthorized()
            } else if service_id != SERVICE_ID || body["from"] != REGISTERED_SENDER || body["type"] != "SMS" {
                (StatusCode::BAD_REQUEST, Json(json!({ "status": 400 }))).into_response()
            } else {
                let request_id = format!("RSSA-{id}");
                inner.lock().unwrap().sens_messages.insert(request_id.clone(), format!("MSG-{id}"));
                take(&inner, &body);
                slow(fault).await;
                (
                    StatusCode::ACCEPTED,
                    Json(json!({
                        "requestId": request_id, "requestTime": "2026-11-29T18:00:00.000",
                        "statusCode": "202", "statusName": "success"
                    })),
                )
                    .into_response()
            }
        }
    };
    answered(&inner, response)
}

/// SENS `sens-sms-list` (메시지 발송 목록 조회, `GET /sms/v2/services/{serviceId}/messages?requestId=…`): the
/// request's messages with their `messageId`.
async fn sens_list(
    State(inner): St,
    Path(service_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let uri = uri.path_and_query().map(ToString::to_string).unwrap_or_default();
    inner.lock().unwrap().queries.push(uri.clone());
    if !sens_signed(&headers, "GET", &uri) || service_id != SERVICE_ID {
        return sens_unauthorized();
    }
    let request_id = query.get("requestId").cloned().unwrap_or_default();
    let Some(message_id) = inner.lock().unwrap().sens_messages.get(&request_id).cloned() else {
        return (StatusCode::NOT_FOUND, Json(json!({ "status": 404 }))).into_response();
    };
    Json(json!({
        "requestId": request_id, "statusCode": "202", "statusName": "success",
        "messages": [{ "messageId": message_id, "requestTime": "2026-11-29 18:00:00", "contentType": "COMM",
            "countryCode": "82", "from": REGISTERED_SENDER, "to": "01012345678" }]
    }))
    .into_response()
}

/// SENS `sens-sms-get` (메시지 발송 결과 조회, `GET /sms/v2/services/{serviceId}/messages/{messageId}`): `status`
/// READY / PROCESSING / COMPLETED; once COMPLETED, `statusCode` "0" (성공) or the failure code, `statusName`
/// success / fail, and `completeTime` (yyyy-MM-dd HH:mm:ss, Korean time).
async fn sens_get(
    State(inner): St,
    Path((service_id, message_id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let uri = uri.path_and_query().map(ToString::to_string).unwrap_or_default();
    inner.lock().unwrap().queries.push(uri.clone());
    if !sens_signed(&headers, "GET", &uri) || service_id != SERVICE_ID {
        return sens_unauthorized();
    }
    let inner = inner.lock().unwrap();
    let Some(request_id) = inner.sens_messages.iter().find(|(_, m)| **m == message_id).map(|(r, _)| r.clone()) else {
        return (StatusCode::NOT_FOUND, Json(json!({ "status": 404 }))).into_response();
    };
    let mut message = json!({ "requestId": request_id, "messageId": message_id, "requestTime": "2026-11-29 18:00:00",
        "contentType": "COMM", "type": "SMS", "countryCode": "82", "from": REGISTERED_SENDER, "to": "01012345678",
        "status": "PROCESSING" });
    if let Some((code, at)) = inner.results.get(&request_id) {
        let kst = (*at + chrono::TimeDelta::hours(9)).format("%Y-%m-%d %H:%M:%S").to_string();
        message["status"] = "COMPLETED".into();
        message["statusCode"] = code.as_str().into();
        message["statusName"] = if code == "0" { "success" } else { "fail" }.into();
        message["statusMessage"] = if code == "0" { "성공" } else { "실패" }.into();
        message["completeTime"] = kst.into();
        message["telcoCode"] = "SKT".into();
    }
    Json(json!({ "statusCode": "202", "statusName": "success", "messages": [message] })).into_response()
}

/// Solapi's authentication (solapi/documents `authentication/`): `Authorization: HMAC-SHA256 apiKey=…, date=…,
/// salt=…, signature=…`, the date within 15 minutes, a salt of 12 to 64 characters, signature =
/// hex(HMAC-SHA256(apiSecret, date + salt)), never used before.
fn solapi_signed(inner: &Mutex<Inner>, headers: &HeaderMap) -> bool {
    let auth = header(headers, "authorization");
    let fields: HashMap<&str, &str> =
        auth.strip_prefix("HMAC-SHA256 ").unwrap_or("").split(", ").filter_map(|kv| kv.split_once('=')).collect();
    let field = |k: &str| fields.get(k).copied().unwrap_or("");
    let (date, salt, signature) = (field("date"), field("salt"), field("signature"));
    let fresh = chrono::DateTime::parse_from_rfc3339(date)
        .is_ok_and(|at| (chrono::Utc::now() - at.to_utc()).num_minutes().abs() <= 15);
    let expected = hex::encode(hmac_sha256(SECRET_KEY, &format!("{date}{salt}")));
    let reused = !inner.lock().unwrap().signatures.insert(signature.to_owned());
    field("apiKey") == ACCESS_KEY && fresh && (12..=64).contains(&salt.len()) && signature == expected && !reused
}

fn solapi_forbidden() -> Response {
    (StatusCode::FORBIDDEN, Json(json!({ "errorCode": "SignatureDoesNotMatch", "errorMessage": "signature" })))
        .into_response()
}

/// Whether every character is in EUC-KR 완성형 (KS X 1001): ASCII, or a two-byte EUC-KR code whose bytes are both
/// in 0xA1–0xFE (the KS X 1001 code table as EUC-KR lays it out).
fn ks_x_1001(text: &str) -> bool {
    text.chars().all(|c| {
        let mut buffer = [0; 4];
        let (bytes, _, unmappable) = encoding_rs::EUC_KR.encode(c.encode_utf8(&mut buffer));
        !unmappable
            && match bytes.as_ref() {
                [b] => b.is_ascii(),
                [lead, trail] => (0xA1..=0xFE).contains(lead) && (0xA1..=0xFE).contains(trail),
                _ => false,
            }
    })
}

/// Solapi `POST /messages/v4/send`: `to` national with `country` its calling code (82 when left out), `from`
/// registered (1062 발신번호 미등록), the text within EUC-KR 완성형 (1029 "문자메시지의 경우 EUC-KR(완성형 한글)
/// 범위 안에 있는 문자만 사용"); taken as 2000 정상 접수 with its `messageId`.
async fn solapi(State(inner): St, headers: HeaderMap, body: String) -> Response {
    let (fault, id) = record(&inner, "/messages/v4/send".into(), &headers, &body);
    let response = match fault {
        Some(Fault::Unavailable | Fault::SystemError | Fault::QueueFailed) => {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Some(Fault::Refuse) => {
            Json(json!({ "statusCode": "1062", "statusMessage": "발신번호 미등록" })).into_response()
        }
        fault @ (None | Some(Fault::Slow(_))) => {
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let message = &body["message"];
            if !solapi_signed(&inner, &headers) {
                solapi_forbidden()
            } else if message["from"] != REGISTERED_SENDER {
                Json(json!({ "statusCode": "1062", "statusMessage": "발신번호 미등록" })).into_response()
            } else if !ks_x_1001(message["text"].as_str().unwrap_or("")) {
                Json(json!({
                    "statusCode": "1029",
                    "statusMessage": "문자메시지의 경우 EUC-KR(완성형 한글) 범위 안에 있는 문자만 사용 합니다."
                }))
                .into_response()
            } else {
                take(&inner, &body);
                inner.lock().unwrap().solapi_messages.insert(format!("M4V-{id}"));
                slow(fault).await;
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

/// Solapi 메시지 조회 (`GET /messages/v4/list?messageId=…`, getMessageList.md): `messageList` keyed by message
/// id, each with its `statusCode` (3000 이통사로 접수 until the carrier reports; 4000 발송 처리 완료, or the
/// failure code) and `dateReceived`/`dateReported` (ISO 8601).
async fn solapi_list(State(inner): St, Query(query): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let id = query.get("messageId").cloned().unwrap_or_default();
    inner.lock().unwrap().queries.push(format!("/messages/v4/list?messageId={id}"));
    if !solapi_signed(&inner, &headers) {
        return solapi_forbidden();
    }
    let inner = inner.lock().unwrap();
    if !inner.solapi_messages.contains(&id) {
        return Json(json!({ "startKey": null, "limit": 20, "messageList": {} })).into_response();
    }
    let (code, at) = match inner.results.get(&id) {
        Some((code, at)) => (code.clone(), Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
        None => ("3000".to_owned(), None),
    };
    Json(json!({ "startKey": null, "limit": 20, "messageList": { id.clone(): {
        "messageId": id, "statusCode": code, "country": "82", "type": "SMS",
        "dateReported": at, "dateReceived": at, "dateCreated": "2026-11-29T09:00:00.000Z",
        "dateUpdated": at,
    }}}))
    .into_response()
}
