//! Supervisor bearer tokens: 256 random bits, shown once, stored as SHA-256. A fast hash is right here: the
//! token is not a password, it cannot be guessed, so a slow hash would only slow every call down.

use base64::Engine;
use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Tokens start with this, so secret scanners and people recognise them.
pub const PREFIX: &str = "otps_";

/// A fresh token.
pub fn generate() -> SecretString {
    generate_with(PREFIX)
}

/// 256 random bits, base64url, after `prefix` (sessions and enrolment codes have their own).
pub fn generate_with(prefix: &str) -> SecretString {
    let mut bytes = [0u8; 32];
    OsRng.unwrap_err().try_fill_bytes(&mut bytes).unwrap_or_else(|e| match e {});
    SecretString::from(format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The stored form of a secret token.
pub fn hash_secret(token: &SecretString) -> String {
    hash(token.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let a = generate();
        let b = generate();
        assert!(a.expose_secret().starts_with(PREFIX));
        assert_eq!(a.expose_secret().len(), PREFIX.len() + 43);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(hash_secret(&a), hash(a.expose_secret()));
        assert_eq!(hash_secret(&a).len(), 64);
    }
}
