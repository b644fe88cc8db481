//! The generic receipt for the `http:` protocol (docs/sms-gateway.md): `{"message_id": "…", "status":
//! "delivered" | "failed", "reason": "blocked" | "no_such_number" | …, "at": RFC 3339}`, signed
//! `X-Otpd-Signature: sha256=hex(HMAC-SHA256(key, "{X-Otpd-Timestamp}.{body}"))`.

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::domain::{GENERIC_REASONS, Receipt};

/// How far a receipt's timestamp may be from our clock: bounds how long a captured receipt can be replayed.
const TOLERANCE: TimeDelta = TimeDelta::minutes(5);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    message_id: String,
    status: String,
    reason: Option<String>,
    at: DateTime<Utc>,
}

/// The `(timestamp, signature)` pairs taken within the last [`TOLERANCE`] (older ones fail `authentic` anyway),
/// so that a captured receipt replayed to this replica is not applied again. Across replicas, the store's
/// newest-receipt-wins rule makes a replay change nothing either; this set lets the answer say so at once.
#[derive(Default)]
pub(super) struct SeenSignatures {
    seen: std::sync::Mutex<std::collections::HashMap<[u8; 32], DateTime<Utc>>>,
}

/// The most pairs remembered: past it, expired ones are dropped first, then the oldest (the store still refuses
/// what a forgotten pair would replay).
const MAX_REMEMBERED: usize = 100_000;

impl SeenSignatures {
    /// Remembers the pair; false when it was seen before.
    pub(super) fn first_time(&self, timestamp: &str, signature: &str, now: DateTime<Utc>) -> bool {
        use sha2::Digest;
        let key: [u8; 32] =
            Sha256::new().chain_update(timestamp).chain_update(".").chain_update(signature).finalize().into();
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains_key(&key) {
            return false;
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, at| now - *at <= TOLERANCE);
            while seen.len() >= MAX_REMEMBERED {
                let Some(oldest) = seen.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k) else { break };
                seen.remove(&oldest);
            }
        }
        seen.insert(key, now);
        true
    }
}

/// Whether `signature` is ours over `timestamp` and `body`, and the timestamp (Unix seconds) is recent.
pub(super) fn authentic(key: &SecretString, timestamp: &str, signature: &str, body: &[u8], now: DateTime<Utc>) -> bool {
    let Some(at) = timestamp.parse::<i64>().ok().and_then(|s| DateTime::from_timestamp(s, 0)) else {
        return false;
    };
    if (now - at).abs() > TOLERANCE {
        return false;
    }
    let Some(given) = signature.strip_prefix("sha256=").and_then(|hex| hex::decode(hex).ok()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()) else {
        unreachable!("HMAC accepts keys of any length");
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // Constant time.
    mac.verify_slice(&given).is_ok()
}

/// The receipt a body carries, with its message id.
pub(super) fn parse(body: &[u8]) -> Result<(String, Receipt), String> {
    let body: Body = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if body.message_id.is_empty() {
        return Err("empty message_id".into());
    }
    let delivered = match body.status.as_str() {
        "delivered" => true,
        "failed" => false,
        other => return Err(format!("status `{other}` is not delivered or failed")),
    };
    let code = match (delivered, body.reason) {
        (true, _) => None,
        (false, Some(reason)) if GENERIC_REASONS.contains(&reason.as_str()) => Some(reason),
        (false, Some(reason)) => return Err(format!("reason `{reason}` is not one of {}", GENERIC_REASONS.join(", "))),
        (false, None) => Some("other".to_owned()),
    };
    Ok((body.message_id, Receipt { delivered, at: body.at, code }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_taken_once() {
        let seen = SeenSignatures::default();
        let now = Utc::now();
        assert!(seen.first_time("1700000000", "sha256=ab", now));
        assert!(!seen.first_time("1700000000", "sha256=ab", now), "replayed");
        assert!(seen.first_time("1700000001", "sha256=ab", now), "another timestamp");
        assert!(seen.first_time("1700000000", "sha256=ac", now), "another signature");
    }
}
