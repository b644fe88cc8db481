//! What a verification is for.

use std::fmt;

/// A code only approves the purpose it was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Logging in to the driver app.
    Login,
    /// Signing up.
    Signup,
    /// Re-authenticating, e.g. the chatbot's "인증" command.
    Reauth,
    /// Verifying a new number when the driver changes it.
    ChangePhone,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 4] = [Purpose::Login, Purpose::Signup, Purpose::Reauth, Purpose::ChangePhone];

    /// The name stored in the database and written in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Login => "login",
            Purpose::Signup => "signup",
            Purpose::Reauth => "reauth",
            Purpose::ChangePhone => "change_phone",
        }
    }

    /// The inverse of [`Purpose::as_str`].
    pub fn from_db(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
