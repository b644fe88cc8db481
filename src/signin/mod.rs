//! Team leads' sign-in: the second factors and sessions (issue 17).

pub mod passkey;
