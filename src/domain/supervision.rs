//! Who may look codes up, and the facts a lookup must state.

use std::fmt;
use std::str::FromStr;

/// A supervisor's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A team lead: looks codes up and reads phone status.
    Supervisor,
    /// Reads the audit log.
    Auditor,
    /// Everything, including unlocking numbers.
    Admin,
}

impl Role {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "supervisor" => Ok(Role::Supervisor),
            "auditor" => Ok(Role::Auditor),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("`{s}` is not a role: use supervisor, auditor or admin")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A supervisor's unique name: 1 to 64 letters (any script), digits, `.`, `_`, `-` or `@`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SupervisorName(String);

impl FromStr for SupervisorName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let ok = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
        if s.eq_ignore_ascii_case(crate::domain::audit::SYSTEM_ACTOR) {
            return Err("`system` is reserved for the service's own audit events".into());
        }
        if (1..=64).contains(&s.chars().count()) && s.chars().all(ok) {
            Ok(Self(s.to_owned()))
        } else {
            Err("a name is 1 to 64 letters, digits, '.', '_', '-' or '@'".into())
        }
    }
}

impl SupervisorName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SupervisorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The authenticated caller of the supervisor service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The supervisor's name.
    pub name: String,
    /// Their role.
    pub role: Role,
    /// Their seat in the phone system, when they have one: the calls a lookup may rest on are this agent's.
    pub agent_id: Option<super::AgentId>,
    /// A person's token or a script's.
    pub kind: super::TokenKind,
    /// The session the call came with; None: a bare token.
    pub session: Option<uuid::Uuid>,
    /// Where this call came from: set once per call by the supervisor service's authentication layer, and
    /// recorded in every audit event the call appends (empty for an actor read from the store).
    pub access: super::audit::AccessContext,
}

/// A disabled supervisor's token, let through to the handler only so that the refusal can record the number
/// and ticket the request named: it is never an [`Actor`], so no flow can mistake it for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledActor {
    /// Who the token belonged to.
    pub actor: Actor,
    /// When they were disabled.
    pub disabled_at: chrono::DateTime<chrono::Utc>,
    /// Their calls refused since the last audited one (one event per person per minute).
    pub held_back: u32,
}

impl Actor {
    /// Whether the actor holds one of `roles` (admin holds them all).
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.role == Role::Admin || roles.contains(&self.role)
    }
}

/// A call-centre ticket id: 1 to 64 letters, digits or `-_.#:/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketId(String);

impl TicketId {
    /// Parses a ticket id.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a ticket id is required");
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '#' | ':' | '/');
        if s.len() <= 64 && s.chars().all(ok) {
            Ok(Self(s.to_owned()))
        } else {
            Err("a ticket id is at most 64 letters, digits or -_.#:/")
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How the team lead is in contact with the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactChannel {
    /// The driver called in from the contact number.
    InboundCall,
    /// The team lead called the contact number back.
    OutboundCallback,
}

impl ContactChannel {
    /// The name stored in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactChannel::InboundCall => "inbound_call",
            ContactChannel::OutboundCallback => "outbound_callback",
        }
    }

    /// The inverse of [`ContactChannel::as_str`].
    pub fn from_db(s: &str) -> Option<Self> {
        [ContactChannel::InboundCall, ContactChannel::OutboundCallback].into_iter().find(|c| c.as_str() == s)
    }
}

/// A free-text reason an admin gives: 1 to 500 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    /// Parses a reason.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let s = s.trim();
        if s.is_empty() {
            Err("a reason is required")
        } else if s.chars().count() > 500 || s.chars().any(char::is_control) {
            Err("a reason is at most 500 characters, without control characters")
        } else {
            Ok(Self(s.to_owned()))
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse() {
        assert_eq!("admin".parse::<Role>().unwrap(), Role::Admin);
        assert!("root".parse::<Role>().is_err());
        assert!("kim.minji".parse::<SupervisorName>().is_ok());
        assert!("김민지".parse::<SupervisorName>().is_ok());
        assert!("a b".parse::<SupervisorName>().is_err());
        assert!("System".parse::<SupervisorName>().is_err());
        assert!("cli:root".parse::<SupervisorName>().is_err(), "operators' audit names cannot be taken");
        assert!(TicketId::parse("CS-2026-000123").is_ok());
        assert!(TicketId::parse(" ").is_err());
        assert!(TicketId::parse("x;drop").is_err());
        assert!(Reason::parse("driver verified by callback").is_ok());
        assert!(Reason::parse("").is_err());
    }

    #[test]
    fn admin_holds_every_role() {
        let access = crate::domain::audit::AccessContext::default();
        let (kind, session) = (crate::domain::TokenKind::Person, None);
        let admin =
            Actor { name: "a".into(), role: Role::Admin, agent_id: None, kind, session, access: access.clone() };
        let auditor = Actor { name: "b".into(), role: Role::Auditor, agent_id: None, kind, session, access };
        assert!(admin.has_any(&[Role::Supervisor]));
        assert!(!auditor.has_any(&[Role::Supervisor]));
        assert!(auditor.has_any(&[Role::Auditor]));
    }
}
