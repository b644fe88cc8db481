//! Team leads' sign-in: the second factors, the person's registered e-mail address, the kinds of token, and the
//! session and lockout settings (issue 17; docs/sign-in.md).

use std::fmt;
use std::str::FromStr;

use chrono::TimeDelta;

/// A second factor at sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecondFactor {
    /// A WebAuthn passkey, user verification required.
    Passkey,
    /// A code otpd sends to the person's registered phone.
    PhoneCode,
    /// An emergency code by e-mail.
    EmailCode,
}

impl SecondFactor {
    /// Every factor, in the order a sign-in page offers them.
    pub const ALL: [SecondFactor; 3] = [SecondFactor::Passkey, SecondFactor::PhoneCode, SecondFactor::EmailCode];

    /// The name stored in the database and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            SecondFactor::Passkey => "passkey",
            SecondFactor::PhoneCode => "phone_code",
            SecondFactor::EmailCode => "email_code",
        }
    }

    /// The inverse of [`SecondFactor::as_str`].
    pub fn from_db(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TokenKind {
    /// One person's: under `--require-second-factor` it only opens a sign-in.
    #[default]
    Person,
    /// A script's (auditor role only): usable without a session, never for a lookup.
    Service,
}

impl TokenKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Person => "person",
            TokenKind::Service => "service",
        }
    }

    /// The inverse of [`TokenKind::as_str`].
    pub fn from_db(s: &str) -> Option<Self> {
        [TokenKind::Person, TokenKind::Service].into_iter().find(|k| k.as_str() == s)
    }
}

/// An e-mail address: parsed by `lettre` (RFC 5321's mailbox syntax), at most 254 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl FromStr for EmailAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > 254 {
            return Err("an e-mail address is at most 254 bytes".into());
        }
        let address: lettre::Address = s.parse().map_err(|e| format!("`{s}` is not an e-mail address: {e}"))?;
        Ok(Self(address.to_string()))
    }
}

impl EmailAddress {
    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Shown masked: the first letter of the local part, then `***@` and the domain (`k***@example.com`).
    pub fn masked(&self) -> String {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or((&self.0, ""));
        let first: String = local.chars().take(1).collect();
        format!("{first}***@{domain}")
    }
}

impl fmt::Display for EmailAddress {
    /// Masked, so an address never reaches a log line in full by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// How sign-in behaves (`--session-idle`, `--session-max`, `--sign-in-lock-after`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInPolicy {
    /// A session ends after this long without a call (default 15 min).
    pub session_idle: TimeDelta,
    /// A session ends this long after sign-in whatever happens (default 10 h, one shift).
    pub session_max: TimeDelta,
    /// Failed sign-ins within `lock_for` that lock a person or an address (default 5).
    pub lock_after: u32,
    /// How long such a lock lasts, and the window its failures are counted in (default 30 min).
    pub lock_for: TimeDelta,
    /// Whether a person's bare token is refused for lookups, status and unlocks (on in prod mode).
    pub require_second_factor: bool,
    /// How long a sign-in code or passkey challenge stays valid (5 min).
    pub challenge_ttl: TimeDelta,
    /// Wrong answers one sign-in code takes before it is spent (3).
    pub code_attempts: u32,
    /// Between two codes to the same person by the same factor (60 s).
    pub code_cooldown: TimeDelta,
    /// Codes to one person by one factor per hour (5).
    pub codes_per_hour: u32,
}

impl Default for SignInPolicy {
    fn default() -> Self {
        Self {
            session_idle: TimeDelta::minutes(15),
            session_max: TimeDelta::hours(10),
            lock_after: 5,
            lock_for: TimeDelta::minutes(30),
            require_second_factor: false,
            challenge_ttl: TimeDelta::minutes(5),
            code_attempts: 3,
            code_cooldown: TimeDelta::seconds(60),
            codes_per_hour: 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_mask() {
        let a: EmailAddress = " kim.minji@example.com ".parse().unwrap();
        assert_eq!(a.as_str(), "kim.minji@example.com");
        assert_eq!(a.masked(), "k***@example.com");
        assert_eq!(a.to_string(), "k***@example.com", "Display never shows the whole address");
        assert!("not an address".parse::<EmailAddress>().is_err());
        assert!("a@".parse::<EmailAddress>().is_err());
        assert!(format!("{}@example.com", "x".repeat(250)).parse::<EmailAddress>().is_err());
    }

    #[test]
    fn names_round_trip() {
        for f in SecondFactor::ALL {
            assert_eq!(SecondFactor::from_db(f.as_str()), Some(f));
        }
        assert_eq!(TokenKind::from_db("service"), Some(TokenKind::Service));
        assert_eq!(TokenKind::from_db("robot"), None);
    }
}
