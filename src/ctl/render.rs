//! What `otpctl` prints: Korean first, English after, times in KST; JSON with the same facts for scripts.

use std::fmt::Write;

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::json;
use tonic_types::StatusExt;

use super::Output;
use crate::pb::otp::v1 as pb;

fn kst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).unwrap_or_else(|| unreachable!("+09:00 is a valid offset"))
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

fn rfc3339(t: Option<&prost_types::Timestamp>) -> serde_json::Value {
    time(t).map_or(serde_json::Value::Null, |t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
}

fn clock(t: DateTime<Utc>) -> String {
    t.with_timezone(&kst()).format("%Y-%m-%d %H:%M:%S KST").to_string()
}

fn purpose_name(p: pb::Purpose) -> (&'static str, &'static str) {
    match p {
        pb::Purpose::Login => ("로그인", "login"),
        pb::Purpose::Signup => ("가입", "signup"),
        pb::Purpose::Reauth => ("재인증", "reauth"),
        pb::Purpose::ChangePhone => ("번호 변경", "change_phone"),
        pb::Purpose::Unspecified => ("-", "unspecified"),
    }
}

/// A masked number as a Korean call centre writes it: "+82 10-****-5678" → "010-****-5678"; others unchanged.
pub fn local(masked: &str) -> String {
    match masked.strip_prefix("+82 ") {
        Some(rest) if !rest.starts_with('0') => format!("0{rest}"),
        _ => masked.to_owned(),
    }
}

/// "1/5": a count beside its cap (the count alone when no cap is known).
fn of_cap(n: i32, cap: i32) -> String {
    if cap > 0 { format!("{n}/{cap}") } else { n.to_string() }
}

/// "2분 58초 남음 / 2 min 58 s left", or expired.
fn remaining(until: DateTime<Utc>) -> String {
    let left = (until - Utc::now()).num_seconds();
    if left <= 0 {
        return "만료됨 / expired".into();
    }
    format!("{}분 {}초 남음 / {} min {} s left", left / 60, left % 60, left / 60, left % 60)
}

/// A looked-up code, large and clear.
pub fn lookup(r: &pb::LookupCodeResponse) -> Output {
    let spaced: Vec<String> = r.code.chars().map(String::from).collect();
    let (ko, en) = purpose_name(r.purpose());
    let mut text = String::new();
    let _ = writeln!(text);
    let _ = writeln!(text, "    인증번호 / CODE      {}", spaced.join("  "));
    let _ = writeln!(text);
    let _ = writeln!(text, "번호 / number          {}", local(&r.masked_phone_number));
    let _ = writeln!(text, "용도 / purpose         {ko} / {en}");
    if let Some(until) = time(r.expires_at.as_ref()) {
        let _ = writeln!(text, "유효 / valid           {} (until {})", remaining(until), clock(until));
    }
    let _ = writeln!(text, "감사 기록 / audit      {}", r.audit_event_id);
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "기사님께 위 인증번호를 불러 주세요. 앱에 입력하면 인증됩니다. 문자로 받은 번호도 계속 유효합니다."
    );
    let _ = writeln!(text, "Read the code to the driver, who enters it in the app. The SMS code keeps working too.");
    let json = json!({
        "code": r.code,
        "verification_id": r.verification_id,
        "purpose": en,
        "expires_at": rfc3339(r.expires_at.as_ref()),
        "masked_phone_number": r.masked_phone_number,
        "audit_event_id": r.audit_event_id,
    });
    Output { text, json }
}

/// Why a number cannot log in.
pub fn status(r: &pb::GetPhoneStatusResponse) -> Output {
    let mut text = String::new();
    let _ = writeln!(text, "번호 / number                  {}", local(&r.masked_phone_number));
    let _ = writeln!(
        text,
        "연속 실패 / failed attempts    {} (남은 시도 / left: {})",
        r.failed_attempts, r.attempts_remaining
    );
    match time(r.locked_until.as_ref()) {
        Some(until) => {
            let _ = writeln!(text, "잠금 / locked                  예 / yes, until {}", clock(until));
        }
        None => {
            let _ = writeln!(text, "잠금 / locked                  아니오 / no");
        }
    }
    let _ = writeln!(text, "SMS 1시간 / last hour          {}", of_cap(r.sms_last_hour, r.sms_hour_cap));
    let _ = writeln!(text, "SMS 24시간 / last day          {}", of_cap(r.sms_last_day, r.sms_day_cap));
    if let Some(g) = r.prefix_guard.as_ref().filter(|g| g.guarded) {
        let _ = writeln!(text, "번호 대역 발송 제한 / prefix guarded ({}): {}", g.mode, g.explanation);
    }
    if !r.checklist.is_empty() {
        let _ = writeln!(text, "\n확인 사항 / checklist");
    }
    for c in &r.checklist {
        let mark = match c.state.as_str() {
            "act" => "▶",
            "ok" => "✓",
            _ => "?",
        };
        let _ = writeln!(text, "  {mark} {}: {}", c.finding_ko, c.next_step_ko);
        let _ = writeln!(text, "    {}: {}", c.finding_en, c.next_step_en);
    }
    if r.pending.is_empty() {
        let _ = writeln!(text, "대기 중인 인증 없음 / no pending verification");
    }
    let mut pending_json = Vec::new();
    for v in &r.pending {
        let (ko, en) = purpose_name(v.purpose());
        match time(v.approved_at.as_ref()) {
            Some(at) => {
                let _ = writeln!(text, "\n인증 완료 / approved {}: {ko} / {en}  ({})", clock(at), v.verification_id);
            }
            None => {
                let _ = writeln!(text, "\n대기 중 / pending: {ko} / {en}  ({})", v.verification_id);
            }
        }
        let mut sends = Vec::new();
        for s in &v.sends {
            let channel = match s.channel() {
                pb::CodeChannel::Sms => "SMS",
                pb::CodeChannel::Supervisor => "팀장 조회 / lookup",
                pb::CodeChannel::Unspecified => "-",
            };
            // The provider's acceptance is not the phone's: a carrier's receipt, when one came, says more.
            let carrier = s.attempts.iter().rev().find(|a| !a.receipt.is_empty()).map(|a| a.receipt.as_str());
            let delivery = match (s.delivery(), carrier) {
                (pb::DeliveryStatus::Delivered, Some("delivered")) => "수신 완료 / delivered",
                (pb::DeliveryStatus::Delivered, Some(_)) => "수신 실패 / not delivered",
                (pb::DeliveryStatus::Delivered, None) => "접수됨 / accepted",
                (pb::DeliveryStatus::Failed, _) => "실패 / failed",
                (pb::DeliveryStatus::Pending, _) => "전송 중 / pending",
                (pb::DeliveryStatus::Unspecified, _) => "-",
            };
            let live = match (s.live, s.delivery()) {
                (true, _) => "유효 / live",
                (false, pb::DeliveryStatus::Failed) => "무효 (발송 실패) / void (send failed)",
                (false, _) => "만료 / expired",
            };
            let sent = time(s.sent_at.as_ref()).map(clock).unwrap_or_default();
            let channel = match s.delivered_by.as_str() {
                "alimtalk" => "알림톡 / AlimTalk",
                _ => channel,
            };
            let _ = writeln!(text, "  {sent}  {channel:<20} {delivery:<22} {live}");
            let attempts = attempts_text(&mut text, &s.attempts);
            sends.push(json!({
                "sent_at": rfc3339(s.sent_at.as_ref()),
                "channel": match s.channel() { pb::CodeChannel::Sms => "sms", pb::CodeChannel::Supervisor => "supervisor", pb::CodeChannel::Unspecified => "unspecified" },
                "delivery": match s.delivery() { pb::DeliveryStatus::Delivered => "delivered", pb::DeliveryStatus::Failed => "failed", pb::DeliveryStatus::Pending => "pending", pb::DeliveryStatus::Unspecified => "unspecified" },
                "expires_at": rfc3339(s.expires_at.as_ref()),
                "live": s.live,
                "provider_message_id": s.provider_message_id,
                "delivered_by": s.delivered_by,
                "attempts": attempts,
            }));
        }
        pending_json.push(json!({
            "approved_at": rfc3339(v.approved_at.as_ref()),
            "verification_id": v.verification_id,
            "purpose": en,
            "created_at": rfc3339(v.created_at.as_ref()),
            "expires_at": rfc3339(v.expires_at.as_ref()),
            "sends": sends,
        }));
    }
    let json = json!({
        "masked_phone_number": r.masked_phone_number,
        "failed_attempts": r.failed_attempts,
        "attempts_remaining": r.attempts_remaining,
        "locked_until": rfc3339(r.locked_until.as_ref()),
        "sms_last_hour": r.sms_last_hour,
        "sms_last_day": r.sms_last_day,
        "sms_hour_cap": r.sms_hour_cap,
        "sms_day_cap": r.sms_day_cap,
        "pending": pending_json,
        "checklist": r.checklist.iter().map(|c| json!({
            "check": c.check,
            "state": c.state,
            "finding_ko": c.finding_ko,
            "finding_en": c.finding_en,
            "next_step_ko": c.next_step_ko,
            "next_step_en": c.next_step_en,
        })).collect::<Vec<_>>(),
        "audit_event_id": r.audit_event_id,
    });
    Output { text, json }
}

/// `otpctl guard`: a prefix as the pumping guard sees it (and, after a change, its audit event).
pub fn guard(g: Option<&pb::PrefixGuard>, audit_event_id: Option<&str>) -> Output {
    let Some(g) = g else {
        return Output { text: "-\n".into(), json: json!(null) };
    };
    let mut text = String::new();
    let state = if g.guarded { "제한 중 / guarded" } else { "제한 없음 / not guarded" };
    let _ = writeln!(text, "번호 대역 / prefix   {} (국가 / country +{}), 모드 / mode {}", g.prefix, g.country, g.mode);
    let _ = writeln!(text, "상태 / state         {state}: {}", g.explanation);
    let figures = |scope: &str, text: &mut String, rows: &[pb::GuardWindowFigures]| {
        for f in rows {
            let _ = writeln!(
                text,
                "  {scope} {:>4}  발송 / sends {:>6} (기준 / V {:>5})  인증 / approved {:>6}  전환 / conversion {:>3}%",
                f.window, f.sends, f.min_sends, f.approvals, f.conversion_pct
            );
        }
    };
    figures("prefix ", &mut text, &g.prefix_figures);
    figures("country", &mut text, &g.country_figures);
    let _ = writeln!(text, "기준 전환율 / C      {}%", g.min_conversion_pct);
    if let Some(at) = time(g.next_evaluation.as_ref()) {
        let _ = writeln!(text, "다음 재평가 / next   {}", clock(at));
    }
    if !g.override_action.is_empty() {
        let until = time(g.override_until.as_ref()).map(clock).unwrap_or_default();
        let _ = writeln!(
            text,
            "관리자 / admin       {} until {until} by {} (ticket {}): {}",
            g.override_action, g.override_set_by, g.override_ticket_id, g.override_reason
        );
    }
    if let Some(id) = audit_event_id {
        let _ = writeln!(text, "감사 기록 / audit    {id}");
    }
    let rows = |rows: &[pb::GuardWindowFigures]| {
        rows.iter()
            .map(|f| json!({"window": f.window, "sends": f.sends, "approvals": f.approvals, "conversion_pct": f.conversion_pct, "min_sends": f.min_sends}))
            .collect::<Vec<_>>()
    };
    let json = json!({
        "prefix": g.prefix,
        "country": g.country,
        "mode": g.mode,
        "guarded": g.guarded,
        "decision": g.decision,
        "explanation": g.explanation,
        "prefix_figures": rows(&g.prefix_figures),
        "country_figures": rows(&g.country_figures),
        "min_conversion_pct": g.min_conversion_pct,
        "next_evaluation": rfc3339(g.next_evaluation.as_ref()),
        "override_action": g.override_action,
        "override_until": rfc3339(g.override_until.as_ref()),
        "override_ticket_id": g.override_ticket_id,
        "override_reason": g.override_reason,
        "override_set_by": g.override_set_by,
        "audit_event_id": audit_event_id,
    });
    Output { text, json }
}

/// Writes each channel's attempt under its send, and returns them as JSON.
fn attempts_text(text: &mut String, attempts: &[pb::DeliveryAttempt]) -> Vec<serde_json::Value> {
    let mut json = Vec::new();
    for (n, a) in attempts.iter().enumerate() {
        let channel = match a.channel.as_str() {
            "alimtalk" => "알림톡 / AlimTalk",
            _ => "SMS",
        };
        let outcome = match a.outcome.as_str() {
            "accepted" => "접수 / accepted",
            "refused" => "거절 / refused",
            "failed" => "실패 / failed",
            "unconfirmed" => "응답 없음 / unconfirmed",
            _ => "-",
        };
        let at = time(a.attempted_at.as_ref()).map(clock).unwrap_or_default();
        let _ = writeln!(text, "      {}. {channel} ({}): {outcome} {at}  [{}]", n + 1, a.gateway, a.route);
        if !a.send_failure_ko.is_empty() {
            let _ = writeln!(text, "         {} / {}", a.send_failure_ko, a.send_failure_en);
        }
        if matches!(a.outcome.as_str(), "accepted" | "unconfirmed") {
            let receipt_at = time(a.receipt_at.as_ref()).map(clock).unwrap_or_default();
            let _ = match a.receipt.as_str() {
                "delivered" => writeln!(text, "         수신 결과 / receipt: 전달됨 / delivered {receipt_at}"),
                "failed" => writeln!(
                    text,
                    "         수신 결과 / receipt: 실패 / failed {receipt_at}: {} / {} ({})",
                    a.reason_ko, a.reason_en, a.receipt_code
                ),
                _ => writeln!(text, "         수신 결과 / receipt: 결과 미수신 / not reported"),
            };
        }
        json.push(json!({
            "channel": a.channel,
            "gateway": a.gateway,
            "route": a.route,
            "attempted_at": rfc3339(a.attempted_at.as_ref()),
            "outcome": a.outcome,
            "provider_id": a.provider_id,
            "receipt": if a.receipt.is_empty() { "not reported" } else { a.receipt.as_str() },
            "receipt_at": rfc3339(a.receipt_at.as_ref()),
            "receipt_code": a.receipt_code,
            "reason_ko": a.reason_ko,
            "reason_en": a.reason_en,
            "failure": a.failure,
            "send_failure_ko": a.send_failure_ko,
            "send_failure_en": a.send_failure_en,
        }));
    }
    json
}

/// Where delivery trouble is (`otpctl doctor`).
pub fn doctor(r: &pb::DiagnoseResponse) -> Output {
    let mut text = String::new();
    let at = time(r.at.as_ref()).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default();
    let _ = writeln!(text, "진단 / diagnosis at {at}");
    if r.findings_ko.is_empty() {
        let _ = writeln!(text, "  ✓ 이상 없음 / nothing wrong");
    }
    for (ko, en) in r.findings_ko.iter().zip(&r.findings_en) {
        let _ = writeln!(text, "  ▶ {ko}\n    {en}");
    }
    let serving = if r.delivery_serving { "SERVING" } else { "NOT_SERVING" };
    let _ = writeln!(text, "\n발송 상태 / otp.v1.Delivery   {serving}");
    let database = if r.database_error.is_empty() {
        format!("{} ms", r.database_round_trip_ms)
    } else {
        format!("실패 / failed: {}", r.database_error)
    };
    let _ = writeln!(text, "데이터베이스 / database       {database}");
    let _ = writeln!(text, "\n경로 / route        차단기 / breaker (since)            마지막 오류 / last error");
    for route in &r.routes {
        let since = time(route.breaker_since.as_ref()).map(clock).unwrap_or_default();
        let breaker = if route.breaker.is_empty() { "-".to_owned() } else { format!("{} ({since})", route.breaker) };
        let error = if route.last_error.is_empty() {
            "-".to_owned()
        } else {
            let at = time(route.last_error_at.as_ref()).map(clock).unwrap_or_default();
            format!("{at} {}", route.last_error)
        };
        let endpoint = if route.endpoint.is_empty() { "-" } else { route.endpoint.as_str() };
        let _ = writeln!(text, "  {:<18} {breaker:<36} {error}", route.route);
        let _ = writeln!(text, "  {:<18} {endpoint}", "");
    }
    let _ = writeln!(text, "\n발송 결과 / outcomes         5분 / 5m   15분 / 15m");
    if r.outcomes.is_empty() {
        let _ = writeln!(text, "  최근 15분 발송 없음 / no attempts in the last 15 minutes");
    }
    for o in &r.outcomes {
        let _ = writeln!(text, "  {:<14} {:<12} {:>9} {:>10}", o.route, o.outcome, o.last_5m, o.last_15m);
    }
    let _ = writeln!(text, "\n앞단 거절 (시작 후) / front-line refusals since start");
    for f in &r.refusals {
        let _ = writeln!(text, "  {:<22} {}", f.limit, f.count);
    }
    let json = json!({
        "at": rfc3339(r.at.as_ref()),
        "findings_ko": r.findings_ko,
        "findings_en": r.findings_en,
        "delivery_serving": r.delivery_serving,
        "database_round_trip_ms": r.database_round_trip_ms,
        "database_error": r.database_error,
        "routes": r.routes.iter().map(|route| json!({
            "route": route.route,
            "endpoint": route.endpoint,
            "breaker": route.breaker,
            "breaker_since": rfc3339(route.breaker_since.as_ref()),
            "breaker_failures": route.breaker_failures,
            "last_error": route.last_error,
            "last_error_at": rfc3339(route.last_error_at.as_ref()),
            "last_accepted_at": rfc3339(route.last_accepted_at.as_ref()),
        })).collect::<Vec<_>>(),
        "outcomes": r.outcomes.iter().map(|o| json!({
            "route": o.route, "outcome": o.outcome, "last_5m": o.last_5m, "last_15m": o.last_15m,
        })).collect::<Vec<_>>(),
        "refusals": r.refusals.iter().map(|f| json!({ "limit": f.limit, "count": f.count })).collect::<Vec<_>>(),
    });
    Output { text, json }
}

/// An unlock.
pub fn unlock(r: &pb::UnlockPhoneResponse) -> Output {
    let was = if r.was_locked { "예 / yes" } else { "아니오 / no" };
    let text = format!(
        "잠금 해제됨 / unlocked: {}\n잠겨 있었음 / was locked: {was}\n지운 실패 횟수 / failures cleared: {}\n감사 기록 / audit: {}\n",
        local(&r.masked_phone_number),
        r.failed_attempts_cleared,
        r.audit_event_id
    );
    let json = json!({
        "masked_phone_number": r.masked_phone_number,
        "was_locked": r.was_locked,
        "failed_attempts_cleared": r.failed_attempts_cleared,
        "audit_event_id": r.audit_event_id,
    });
    Output { text, json }
}

/// A new session (`otpctl login`): `expires_at` and `idle_until` are RFC 3339.
pub fn signed_in(session_id: &str, expires_at: &str, idle_until: Option<&str>) -> Output {
    let shown = |t: &str| DateTime::parse_from_rfc3339(t).map_or_else(|_| t.to_owned(), |t| clock(t.to_utc()));
    let text = format!(
        "로그인됨 / signed in: session {session_id}
         {idle} 이후 {minutes}분 동안 사용하지 않으면 종료 / ends after 15 min without use (next: {idle})
         늦어도 {end}에 종료 / ends at the latest at {end}
",
        idle = idle_until.map_or_else(|| "-".to_owned(), shown),
        minutes = 15,
        end = shown(expires_at),
    );
    let json = json!({ "session_id": session_id, "expires_at": expires_at, "idle_expires_at": idle_until });
    Output { text, json }
}

/// An ended session (`otpctl logout`).
pub fn signed_out() -> Output {
    Output { text: "로그아웃됨 / signed out\n".to_owned(), json: json!({ "signed_out": true }) }
}

/// An RFC 3339 time, as a session file keeps it.
pub fn time_rfc3339(t: prost_types::Timestamp) -> String {
    time(Some(&t)).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

/// The audit log's own name for an action.
fn action_name(a: pb::AuditAction) -> &'static str {
    crate::grpc::convert::action_from_pb(a.into()).ok().flatten().map_or("unspecified", |a| a.as_str())
}

/// Audit events, one line each.
pub fn audit(events: &[pb::AuditEvent]) -> Output {
    let mut text = String::new();
    let mut rows = Vec::new();
    for e in events {
        let outcome = match e.outcome() {
            pb::AuditOutcome::Granted => "granted",
            pb::AuditOutcome::Denied => "denied",
            pb::AuditOutcome::Unspecified => "-",
        };
        let contact = match e.contact() {
            pb::ContactChannel::InboundCall => "inbound_call",
            pb::ContactChannel::OutboundCallback => "outbound_callback",
            pb::ContactChannel::Unspecified => "",
        };
        let at = time(e.time.as_ref()).map(clock).unwrap_or_default();
        let mut line = format!(
            "#{:<6} {at}  {}({})  {}  {outcome}",
            e.sequence,
            e.actor_name,
            e.actor_role,
            action_name(e.action())
        );
        let masked = local(&e.masked_phone_number);
        for (label, value) in [("", masked.as_str()), ("ticket ", e.ticket_id.as_str()), ("", contact)] {
            if !value.is_empty() {
                let _ = write!(line, "  {label}{value}");
            }
        }
        if let Some(matched) = e.contact_matched {
            line.push_str(if matched { " (matched)" } else { " (NOT matched)" });
        }
        match e.evidence.as_str() {
            "call" => {
                let _ = write!(
                    line,
                    "  근거 통화 / call {} ({}, {})",
                    e.call_id,
                    e.call_direction,
                    local(&e.call_masked_number)
                );
            }
            "typed" => line.push_str("  [직접 입력 / TYPED]"),
            _ => {}
        }
        let _ = write!(line, "  — {}", e.detail);
        // Where the call came from (제8조's 접속지): empty for the service's and operators' events.
        let mut from = Vec::new();
        if !e.client_address.is_empty() {
            from.push(e.client_address.clone());
        }
        if !e.client_certificate_sha256.is_empty() {
            from.push(format!("cert {} sha256:{}", e.client_certificate_subject, e.client_certificate_sha256));
        }
        if !e.session_id.is_empty() {
            from.push(format!("session {}", e.session_id));
        }
        if !e.user_agent.is_empty() {
            from.push(format!("ua {:?}", e.user_agent));
        }
        if !from.is_empty() {
            let _ = write!(line, "  [접속 / from {}]", from.join(", "));
        }
        let _ = writeln!(text, "{line}");
        rows.push(json!({
            "sequence": e.sequence,
            "id": e.id,
            "time": rfc3339(e.time.as_ref()),
            "actor_name": e.actor_name,
            "actor_role": e.actor_role,
            "action": action_name(e.action()),
            "masked_phone_number": e.masked_phone_number,
            "ticket_id": e.ticket_id,
            "reason": e.reason,
            "contact": contact,
            "contact_matched": e.contact_matched,
            "evidence": e.evidence,
            "call_id": e.call_id,
            "call_direction": e.call_direction,
            "call_masked_number": e.call_masked_number,
            "client_address": e.client_address,
            "client_certificate_subject": e.client_certificate_subject,
            "client_certificate_sha256": e.client_certificate_sha256,
            "session_id": e.session_id,
            "user_agent": e.user_agent,
            "outcome": outcome,
            "detail": e.detail,
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        }));
    }
    if events.is_empty() {
        text.push_str("기록 없음 / no events\n");
    }
    Output { text, json: json!({ "events": rows }) }
}

/// The caller's calls on the line.
pub fn calls(r: &pb::ListMyCallsResponse) -> Output {
    let mut text = String::new();
    let mut rows = Vec::new();
    for c in &r.calls {
        let direction = match c.direction.as_str() {
            "inbound" => "인바운드(기사님 발신) / inbound",
            "outbound" => "콜백(상담사 발신) / callback",
            other => other,
        };
        let since = time(c.answered_at.as_ref()).map(clock).unwrap_or_default();
        let send = match time(c.send_recorded_at.as_ref()) {
            Some(at) => format!("전송 확인 / sent {}", clock(at)),
            None => "전송 대기 중 / waiting for the send".into(),
        };
        let _ = writeln!(text, "{}  {}  {direction}  since {since}  {send}", c.call_id, local(&c.masked_phone_number));
        rows.push(json!({
            "call_id": c.call_id,
            "direction": c.direction,
            "masked_phone_number": c.masked_phone_number,
            "answered_at": rfc3339(c.answered_at.as_ref()),
            "send_recorded_at": rfc3339(c.send_recorded_at.as_ref()),
        }));
    }
    if r.calls.is_empty() {
        text.push_str("통화 중인 전화 없음 / no calls on the line\n");
    }
    Output { text, json: json!({ "calls": rows }) }
}

/// A refused call, explained in Korean and English (JSON on stdout with `--json`, text on stderr otherwise).
pub fn error(status: &tonic::Status, as_json: bool) {
    let reason = status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default();
    let (ko, en) = explain(status);
    if as_json {
        let code = format!("{:?}", status.code());
        println!("{}", json!({ "error": { "code": code, "reason": reason, "message": en, "message_ko": ko } }));
    } else {
        eprintln!("{ko}\n{en}");
    }
}

/// A refusal in Korean and in English.
fn explain(status: &tonic::Status) -> (String, String) {
    let details = status.get_error_details();
    let reason = details.error_info().map(|i| i.reason.clone()).unwrap_or_default();
    let retry = details.retry_info().and_then(|r| r.retry_delay).map(|d| d.as_secs().div_ceil(60));
    let until = details.error_info().and_then(|i| i.metadata.get("locked_until").cloned());
    match (status.code(), reason.as_str()) {
        (_, "THIRD_PARTY_NUMBER") => (
            "발신 번호가 인증 대상 번호와 다릅니다. 제3자 번호로는 인증번호를 안내할 수 없습니다.".to_owned(),
            "The contact number is not the number being verified: the code cannot be given for a third party's number."
                .to_owned(),
        ),
        (_, "CALL_NOT_FOUND") => (
            "통화 정보를 찾을 수 없습니다. `otpctl calls`로 통화 중인 목록을 확인하세요.".to_owned(),
            "The phone system reported no such call: see `otpctl calls`.".to_owned(),
        ),
        (_, "CALL_NOT_YOURS") => (
            "상담사님이 받은 통화가 아닙니다(또는 상담사 ID가 등록되지 않았습니다).".to_owned(),
            "That call is not answered by your agent id (or you have none): ask an operator to set it.".to_owned(),
        ),
        (_, "CALL_ENDED") => (
            "통화가 종료되었습니다. 기사님과 다시 통화 연결 후 조회하세요.".to_owned(),
            "The call has ended: codes are read out only on a live call.".to_owned(),
        ),
        (_, "CALL_REQUIRED") => (
            "통화 중인 전화에서만 조회할 수 있습니다. --call 로 통화를 지정하세요 (`otpctl calls`).".to_owned(),
            "This server looks codes up only for a call: give --call (see `otpctl calls`).".to_owned(),
        ),
        (_, "NO_PENDING_VERIFICATION") => (
            "최근 발송된 인증번호가 없습니다. 기사님께 앱에서 인증번호 전송을 먼저 누르도록 안내한 뒤 다시 조회하세요."
                .to_owned(),
            "No code was sent to this number recently: ask the driver to press send in the app, then look up again."
                .to_owned(),
        ),
        (_, "PHONE_LOCKED") => {
            // The server sends RFC 3339 UTC; a team lead in Seoul reads KST.
            let until = until.unwrap_or_default();
            let until = chrono::DateTime::parse_from_rfc3339(&until).map_or(until, |t| clock(t.to_utc()));
            (
                format!(
                    "인증번호를 10회 연속 틀려 잠긴 번호입니다 (해제 시각 {until}). 관리자에게 잠금 해제를 요청하세요."
                ),
                format!("This number is locked after too many wrong codes (until {until}). Ask an admin to unlock it."),
            )
        }
        (_, "LOOKUP_QUOTA") => {
            let minutes = retry.unwrap_or(60);
            (
                format!("조회 한도를 초과했습니다. {minutes}분 후에 다시 시도하세요."),
                format!("Your lookup quota is used up; try again in {minutes} min."),
            )
        }
        (_, "SESSION_REQUIRED") => (
            "추가 인증이 필요합니다: `otpctl login`으로 로그인하세요 (SESSION_REQUIRED).".to_owned(),
            "This call needs a session: sign in with a second factor, `otpctl login` (SESSION_REQUIRED).".to_owned(),
        ),
        (_, "SESSION_EXPIRED") => (
            "로그인 시간이 끝났습니다: `otpctl login`으로 다시 로그인하세요 (SESSION_EXPIRED).".to_owned(),
            "Your session has ended: sign in again with `otpctl login` (SESSION_EXPIRED).".to_owned(),
        ),
        (_, "WRONG_SIGN_IN_CODE") => (
            "인증번호가 틀렸습니다. 다시 `otpctl login` 하세요 (WRONG_SIGN_IN_CODE).".to_owned(),
            "Wrong code: run `otpctl login` again (WRONG_SIGN_IN_CODE).".to_owned(),
        ),
        (_, "SIGN_IN_LOCKED") => {
            let until = until.unwrap_or_default();
            let until = chrono::DateTime::parse_from_rfc3339(&until).map_or(until, |t| clock(t.to_utc()));
            (
                format!(
                    "로그인 실패가 반복되어 {until}까지 로그인할 수 없습니다. 급하면 관리자에게 요청하세요 (SIGN_IN_LOCKED)."
                ),
                format!(
                    "Too many failed sign-ins: sign-in is locked until {until}; an admin can lift it (SIGN_IN_LOCKED)."
                ),
            )
        }
        (tonic::Code::Unauthenticated, _) => (
            "토큰이 없거나, 잘못되었거나, 비활성화되었습니다 (OTPCTL_TOKEN).".to_owned(),
            "Missing, unknown or disabled token (OTPCTL_TOKEN).".to_owned(),
        ),
        (tonic::Code::PermissionDenied, _) => {
            ("이 작업을 할 권한이 없습니다.".to_owned(), "Your role does not allow this.".to_owned())
        }
        (tonic::Code::InvalidArgument, _) => {
            let fields: Vec<String> = details
                .bad_request()
                .map(|b| b.field_violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect())
                .unwrap_or_default();
            (format!("입력값을 확인하세요: {}", fields.join("; ")), format!("Invalid input: {}", fields.join("; ")))
        }
        (tonic::Code::Unavailable, _) => (
            "서버를 일시적으로 사용할 수 없습니다. 잠시 후 다시 시도하세요.".to_owned(),
            "The server is temporarily unavailable; try again shortly.".to_owned(),
        ),
        _ => (format!("요청이 거부되었습니다: {}", status.message()), status.message().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_told_in_kst() {
        let mut details = tonic_types::ErrorDetails::new();
        let until = "2026-12-06T03:00:00.000Z".to_owned();
        details.set_error_info(
            "PHONE_LOCKED",
            "otp.v1",
            std::collections::HashMap::from([("locked_until".into(), until)]),
        );
        let status = tonic::Status::with_error_details(tonic::Code::FailedPrecondition, "locked", details);
        let (ko, en) = explain(&status);
        assert!(ko.contains("2026-12-06 12:00:00 KST") && ko.contains("10회 연속 틀려"), "{ko}");
        assert!(en.contains("2026-12-06 12:00:00 KST"), "{en}");
    }

    #[test]
    fn each_audit_line_says_where_the_call_came_from_and_system_events_do_not() {
        let call = pb::AuditEvent {
            sequence: 7,
            actor_name: "kim".into(),
            client_address: "203.0.113.9".into(),
            client_certificate_subject: "CN=team-lead-kim".into(),
            client_certificate_sha256: "ab".repeat(32),
            session_id: "s-1".into(),
            user_agent: "Mozilla/5.0 \"Chrome\"".into(),
            ..Default::default()
        };
        let system = pb::AuditEvent { sequence: 8, actor_name: "system".into(), ..Default::default() };
        let out = audit(&[call, system]);
        let lines: Vec<&str> = out.text.lines().collect();
        let from = format!(
            "[접속 / from 203.0.113.9, cert CN=team-lead-kim sha256:{}, session s-1, ua \"Mozilla/5.0 \\\"Chrome\\\"\"]",
            "ab".repeat(32)
        );
        assert!(lines[0].ends_with(&from), "{}", lines[0]);
        assert!(!lines[1].contains("접속"), "{}", lines[1]);
        assert_eq!(out.json["events"][0]["client_certificate_sha256"], "ab".repeat(32));
        assert_eq!(out.json["events"][0]["session_id"], "s-1");
        assert_eq!(out.json["events"][1]["client_address"], "");
    }

    /// Issue 21, section 5: a refused send says why, in the words, and its code is void, not expired.
    #[test]
    fn a_failed_send_says_why() {
        let attempt = pb::DeliveryAttempt {
            channel: "sms".into(),
            gateway: "http".into(),
            outcome: "refused".into(),
            failure: "circuit_open".into(),
            send_failure_ko: "발송 실패: 문자 발송 업체 장애".into(),
            send_failure_en: "send failed: SMS provider outage (breaker open)".into(),
            ..Default::default()
        };
        let send = pb::CodeSend {
            channel: pb::CodeChannel::Sms.into(),
            delivery: pb::DeliveryStatus::Failed.into(),
            attempts: vec![attempt],
            ..Default::default()
        };
        let r = pb::GetPhoneStatusResponse {
            masked_phone_number: "+82 10-****-5678".into(),
            sms_last_hour: 1,
            sms_hour_cap: 5,
            sms_last_day: 1,
            sms_day_cap: 10,
            pending: vec![pb::PendingVerification { sends: vec![send], ..Default::default() }],
            ..Default::default()
        };
        let out = status(&r);
        for expected in [
            "번호 / number                  010-****-5678",
            "SMS 1시간 / last hour          1/5",
            "SMS 24시간 / last day          1/10",
            "무효 (발송 실패) / void (send failed)",
            "발송 실패: 문자 발송 업체 장애 / send failed: SMS provider outage (breaker open)",
        ] {
            assert!(out.text.contains(expected), "{expected:?} in\n{}", out.text);
        }
        assert_eq!(out.json["pending"][0]["sends"][0]["attempts"][0]["failure"], "circuit_open");
    }

    #[test]
    fn numbers_are_written_as_a_call_centre_does_and_counts_beside_their_caps() {
        assert_eq!(local("+82 10-****-5678"), "010-****-5678");
        assert_eq!(local("+1 415-***-0123"), "+1 415-***-0123", "other countries keep their code");
        assert_eq!((of_cap(1, 5), of_cap(3, 0)), ("1/5".to_owned(), "3".to_owned()));
    }
}
