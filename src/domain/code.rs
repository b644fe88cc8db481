//! One-time codes and the Android SMS Retriever app hash.

use std::fmt;

use rand::rngs::OsRng;
use rand::{Rng, TryRngCore};
use secrecy::{ExposeSecret, SecretString};

/// How many digits a code has: 6 to 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLength(u8);

impl CodeLength {
    /// The shortest code NIST SP 800-63B allows for an out-of-band authenticator.
    pub const MIN: u8 = 6;
    /// The longest code a driver is asked to type.
    pub const MAX: u8 = 8;

    /// A length within [`CodeLength::MIN`]..=[`CodeLength::MAX`].
    pub fn new(digits: u8) -> Result<Self, String> {
        if (Self::MIN..=Self::MAX).contains(&digits) {
            Ok(Self(digits))
        } else {
            Err(format!("must be between {} and {} digits, got {digits}", Self::MIN, Self::MAX))
        }
    }

    /// The number of digits.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

impl Default for CodeLength {
    fn default() -> Self {
        Self(6)
    }
}

/// A one-time code: exactly [`CodeLength`] ASCII digits. Its `Debug` is redacted and it is zeroised on drop;
/// the digits are reachable only through `expose_secret`, for hashing and for the SMS body.
pub struct OtpCode(SecretString);

/// Why a typed code cannot be a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeFormatError {
    /// Nothing was typed.
    #[error("code is required")]
    Empty,
    /// Something other than ASCII digits.
    #[error("code must contain only digits")]
    NotDigits,
    /// Too few or too many digits.
    #[error("code must have exactly {0} digits")]
    WrongLength(usize),
}

impl OtpCode {
    /// A fresh, uniformly random code from the operating system's CSPRNG. `random_range` samples without
    /// modulo bias.
    pub fn generate(length: CodeLength) -> Self {
        let upper = 10u32.pow(u32::from(length.0));
        // The OS RNG failing is unrecoverable for a service whose job is unguessable codes: panicking (and so
        // failing the request) is the only safe answer.
        let n = OsRng.unwrap_err().random_range(0..upper);
        Self(SecretString::from(format!("{n:0width$}", width = length.get())))
    }

    /// Parses what the driver typed: exactly `length` ASCII digits (surrounding white space ignored).
    pub fn parse(input: &str, length: CodeLength) -> Result<Self, CodeFormatError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(CodeFormatError::Empty);
        }
        if !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeFormatError::NotDigits);
        }
        if input.len() != length.get() {
            return Err(CodeFormatError::WrongLength(length.get()));
        }
        Ok(Self(SecretString::from(input.to_owned())))
    }

    /// The digits. Only for hashing and the SMS body.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode(<redacted>)")
    }
}

/// The 11-character hash that lets Android's SMS Retriever API hand the SMS to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppHash(String);

impl AppHash {
    /// Parses an 11-character base64 app hash.
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let input = input.trim();
        let base64 = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
        if input.len() == 11 && input.bytes().all(base64) {
            Ok(Self(input.to_owned()))
        } else {
            Err("app hash must be the 11-character base64 SMS Retriever hash")
        }
    }

    /// The hash as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The app hashes a SendCode may ask for (`--app-hashes`): the hashes of this company's own apps. A client must
/// never choose the hash freely, or a zero-permission app on the victim's phone could request a code with its own
/// hash and have Play Services hand it the SMS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedAppHashes(Vec<AppHash>);

impl AllowedAppHashes {
    /// Parses comma-separated 11-character hashes; empty: none allowed.
    pub fn parse(spec: &str) -> Result<Self, String> {
        spec.split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| AppHash::parse(h).map_err(|e| format!("`{h}`: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether no app hash may be asked for.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The requested hash, if it is one of ours.
    pub fn check(&self, input: &str) -> Result<AppHash, &'static str> {
        let hash = AppHash::parse(input)?;
        if self.0.contains(&hash) {
            Ok(hash)
        } else if self.0.is_empty() {
            Err("app hashes are not enabled on this server (--app-hashes)")
        } else {
            Err("not the app hash of an allowed app (--app-hashes)")
        }
    }
}

impl std::str::FromStr for AllowedAppHashes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_the_length_and_only_digits() {
        for digits in 6..=8 {
            let len = CodeLength::new(digits).unwrap();
            for _ in 0..200 {
                let code = OtpCode::generate(len);
                assert_eq!(code.expose().len(), len.get());
                assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }

    #[test]
    fn generated_codes_cover_every_digit_in_every_position() {
        // 2,000 codes: the chance that a fair generator misses one digit in one position is about 6 * 10 * 0.9^200.
        let mut seen = [[false; 10]; 6];
        for _ in 0..2_000 {
            let code = OtpCode::generate(CodeLength::default());
            for (pos, b) in code.expose().bytes().enumerate() {
                seen[pos][usize::from(b - b'0')] = true;
            }
        }
        assert!(seen.iter().flatten().all(|s| *s), "{seen:?}");
    }

    #[test]
    fn parse_accepts_exact_digits_only() {
        let six = CodeLength::default();
        assert_eq!(OtpCode::parse(" 012345 ", six).unwrap().expose(), "012345");
        assert_eq!(OtpCode::parse("", six).unwrap_err(), CodeFormatError::Empty);
        assert_eq!(OtpCode::parse("12a456", six).unwrap_err(), CodeFormatError::NotDigits);
        assert_eq!(OtpCode::parse("١٢٣٤٥٦", six).unwrap_err(), CodeFormatError::NotDigits);
        assert_eq!(OtpCode::parse("12345", six).unwrap_err(), CodeFormatError::WrongLength(6));
        assert_eq!(OtpCode::parse("1234567", six).unwrap_err(), CodeFormatError::WrongLength(6));
    }

    #[test]
    fn debug_is_redacted() {
        let code = OtpCode::parse("123456", CodeLength::default()).unwrap();
        assert!(!format!("{code:?}").contains("123456"));
    }

    #[test]
    fn code_length_bounds() {
        assert!(CodeLength::new(5).is_err());
        assert!(CodeLength::new(9).is_err());
        assert_eq!(CodeLength::new(8).unwrap().get(), 8);
    }

    #[test]
    fn app_hash() {
        assert!(AppHash::parse("FA+9qCX9VSu").is_ok());
        assert!(AppHash::parse("short").is_err());
        assert!(AppHash::parse("FA+9qCX9VS!").is_err());
    }

    #[test]
    fn only_allowed_app_hashes_pass() {
        let none = AllowedAppHashes::default();
        assert!(none.check("FA+9qCX9VSu").is_err(), "none allowed by default");
        let ours = AllowedAppHashes::parse(" FA+9qCX9VSu , abcdefghijk ").unwrap();
        assert_eq!(ours.check("FA+9qCX9VSu").unwrap().as_str(), "FA+9qCX9VSu");
        assert!(ours.check("abcdefghijk").is_ok());
        assert!(ours.check("ZZZZZZZZZZZ").is_err(), "another app's hash");
        assert!(ours.check("short").is_err());
        assert!(AllowedAppHashes::parse("FA+9qCX9VSu,bad").is_err());
    }
}
