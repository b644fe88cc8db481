//! Calls as the call centre's phone system reports them (docs/cti.md), and the evidence a lookup rests on: the
//! number a code is read out for is the number of a call the phone system says the team lead is on, not one they
//! typed.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};

use super::phone::{AllowedCountries, PhoneNumber};

/// The phone system's id of a call: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallId(String);

impl CallId {
    /// Parses a call id.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("a call id is required");
        }
        if s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(s.to_owned()))
        } else {
            Err("a call id is 1 to 128 printable characters, without spaces")
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The phone system's id of an agent (a team lead's seat): 1 to 64 letters, digits or `-_.@:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentId(String);

impl FromStr for AgentId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':');
        if !s.is_empty() && s.len() <= 64 && s.chars().all(ok) {
            Ok(Self(s.to_owned()))
        } else {
            Err("an agent id is 1 to 64 letters, digits or -_.@:".into())
        }
    }
}

impl AgentId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallDirection {
    /// The driver called the call centre: the number is the caller's, as the network presented it.
    Inbound,
    /// The team lead called the driver back: the number is the one dialled.
    Outbound,
}

impl CallDirection {
    /// The name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Inbound => "inbound",
            CallDirection::Outbound => "outbound",
        }
    }

    /// The inverse of [`CallDirection::as_str`].
    pub fn from_db(s: &str) -> Option<Self> {
        [CallDirection::Inbound, CallDirection::Outbound].into_iter().find(|d| d.as_str() == s)
    }
}

/// What happened to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallEventKind {
    /// An agent answered (a second `answered` with another agent is a transfer).
    Answered,
    /// The call ended.
    Ended,
}

/// How far in the future an event's `at` may be (clock skew between the phone system and otpd).
pub const CALL_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(1);

/// One signed event from the phone system, valid in every field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// The call.
    pub call_id: CallId,
    /// Answered or ended.
    pub kind: CallEventKind,
    /// Inbound or outbound.
    pub direction: CallDirection,
    /// The driver's number.
    pub number: PhoneNumber,
    /// The agent on the call.
    pub agent: AgentId,
    /// When it happened, by the phone system's clock.
    pub at: DateTime<Utc>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    call_id: String,
    event: String,
    direction: String,
    number: String,
    agent: String,
    at: DateTime<Utc>,
}

impl CallEvent {
    /// Parses an event body (JSON, docs/cti.md); `now` bounds `at` (at most [`CALL_CLOCK_SKEW`] ahead).
    pub fn parse(body: &[u8], countries: &AllowedCountries, now: DateTime<Utc>) -> Result<Self, String> {
        let body: Body = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let call_id = CallId::parse(&body.call_id).map_err(|e| format!("call_id: {e}"))?;
        let kind = match body.event.as_str() {
            "answered" => CallEventKind::Answered,
            "ended" => CallEventKind::Ended,
            other => return Err(format!("event `{other}` is not answered or ended")),
        };
        let direction = CallDirection::from_db(&body.direction)
            .ok_or_else(|| format!("direction `{}` is not inbound or outbound", body.direction))?;
        let number = PhoneNumber::parse_lenient(&body.number, countries).map_err(|e| format!("number: {e}"))?;
        let agent = body.agent.parse::<AgentId>().map_err(|e| format!("agent: {e}"))?;
        if body.at > now + CALL_CLOCK_SKEW {
            return Err("at: more than a minute in the future".into());
        }
        Ok(Self { call_id, kind, direction, number, agent, at: body.at })
    }
}

/// A call as the store holds it: the state its latest events say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The call.
    pub call_id: CallId,
    /// Inbound or outbound.
    pub direction: CallDirection,
    /// The driver's number.
    pub number: PhoneNumber,
    /// The agent it belongs to (the latest `answered`).
    pub agent: AgentId,
    /// When that agent answered; None while only its end is known.
    pub answered_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
}

/// What a lookup may rest on (`--lookup-evidence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum EvidencePolicy {
    /// Only a call the phone system reported (the default in prod mode).
    Call,
    /// A call, or a number the team lead typed (audited as typed; the default in dev mode).
    CallOrTyped,
    /// Only typed numbers (the phone system is not connected).
    Typed,
}

impl EvidencePolicy {
    /// The name on the command line and in WhoAmI.
    pub fn as_str(self) -> &'static str {
        match self {
            EvidencePolicy::Call => "call",
            EvidencePolicy::CallOrTyped => "call-or-typed",
            EvidencePolicy::Typed => "typed",
        }
    }

    /// Whether a lookup may rest on a call.
    pub fn allows_call(self) -> bool {
        self != EvidencePolicy::Typed
    }

    /// Whether a lookup may rest on a typed number.
    pub fn allows_typed(self) -> bool {
        self != EvidencePolicy::Call
    }
}

/// What a lookup's number rested on, as the audit log seals it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// A call the phone system reported.
    Call {
        /// The call.
        call_id: String,
        /// Inbound or outbound.
        direction: CallDirection,
        /// The call's number, masked.
        number_masked: String,
    },
    /// Numbers the team lead typed.
    Typed,
}

impl Evidence {
    /// `call` or `typed`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::Call { .. } => "call",
            Evidence::Typed => "typed",
        }
    }

    /// One line for a person: `call C-1 (inbound, +82 10-****-5678)` or `typed`.
    pub fn describe(&self) -> String {
        match self {
            Evidence::Call { call_id, direction, number_masked } => {
                format!("call {call_id} ({}, {number_masked})", direction.as_str())
            }
            Evidence::Typed => "typed".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kr() -> AllowedCountries {
        "KR".parse().unwrap()
    }

    #[test]
    fn events_parse_strictly() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T03:00:00Z").unwrap().to_utc();
        let ok = br#"{"call_id":"C-1","event":"answered","direction":"inbound","number":"010-1234-5678","agent":"7001","at":"2026-12-06T03:00:00Z"}"#;
        let e = CallEvent::parse(ok, &kr(), now).unwrap();
        assert_eq!((e.kind, e.direction, e.agent.as_str()), (CallEventKind::Answered, CallDirection::Inbound, "7001"));
        assert_eq!(e.number.e164(), "+821012345678");
        for bad in [
            br#"{"call_id":"","event":"answered","direction":"inbound","number":"010-1234-5678","agent":"7001","at":"2026-12-06T03:00:00Z"}"#.as_slice(),
            br#"{"call_id":"C 1","event":"answered","direction":"inbound","number":"010-1234-5678","agent":"7001","at":"2026-12-06T03:00:00Z"}"#,
            br#"{"call_id":"C-1","event":"held","direction":"inbound","number":"010-1234-5678","agent":"7001","at":"2026-12-06T03:00:00Z"}"#,
            br#"{"call_id":"C-1","event":"answered","direction":"sideways","number":"010-1234-5678","agent":"7001","at":"2026-12-06T03:00:00Z"}"#,
            br#"{"call_id":"C-1","event":"answered","direction":"inbound","number":"not a number","agent":"7001","at":"2026-12-06T03:00:00Z"}"#,
            br#"{"call_id":"C-1","event":"answered","direction":"inbound","number":"010-1234-5678","agent":"","at":"2026-12-06T03:00:00Z"}"#,
            br#"{"call_id":"C-1","event":"answered","direction":"inbound","number":"010-1234-5678","agent":"7001","at":"2026-12-06T03:01:01Z"}"#,
            br#"{"call_id":"C-1","event":"answered","direction":"inbound","number":"010-1234-5678","agent":"7001","at":"2026-12-06T03:00:00Z","x":1}"#,
        ] {
            assert!(CallEvent::parse(bad, &kr(), now).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ids_parse() {
        assert!(CallId::parse(&"x".repeat(128)).is_ok());
        assert!(CallId::parse(&"x".repeat(129)).is_err());
        assert!("7001".parse::<AgentId>().is_ok());
        assert!("70 01".parse::<AgentId>().is_err());
    }
}
