//! Passkeys (WebAuthn) as a sign-in's second factor, through `webauthn-rs`'s passkey API: user verification is
//! required at enrolment and at every sign-in (the API sets `userVerification: "required"` and refuses an answer
//! without the UV flag), so the passkey is itself "something you have" unlocked by "something you are or know".
//!
//! Plain types in, plain JSON out; no store access. Each ceremony is two round trips: `start_*` returns the options
//! for the browser and the ceremony's state, which the caller keeps server-side (in the shared store, as JSON, so
//! that any replica can finish what another started) and hands back to `finish_*` with the browser's answer.
//!
//! The JSON the browser sees is WebAuthn Level 3's: the options are the inner `publicKey` object with base64url
//! strings, as `PublicKeyCredential.parseCreationOptionsFromJSON` / `parseRequestOptionsFromJSON` take them, and the
//! answers are `PublicKeyCredential.toJSON()`'s output, which `webauthn-rs` reads as it is (its field names, base64url
//! values, `clientExtensionResults` as an alias of its `extensions`; members it does not know are ignored). The one
//! conversion [`browser_json`] makes: a `null` member is dropped, as if absent, so that an explicitly empty
//! `userHandle` or `authenticatorAttachment` from some browsers parses.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::setting::ConfigError;

/// How long the browser may take over one ceremony (the options' `timeout`; the caller's stored state should expire
/// with it).
pub const CEREMONY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// The relying party's settings, as given (`--passkey-rp-id`, `--passkey-origin`).
#[derive(Debug, Clone, Args)]
pub struct PasskeyArgs {
    /// The passkeys' relying party id: the host name (or a registrable suffix of it) team leads open the console
    /// at, e.g. `otp-admin.example.co.kr`. Default: `localhost`. Changing it orphans every enrolled passkey.
    #[arg(long, env = "OTPD_PASSKEY_RP_ID", global = true)]
    pub passkey_rp_id: Option<String>,
    /// The console's origin as the browser sees it, e.g. `https://otp-admin.example.co.kr`. Default: derived from
    /// the admin listener, `https://localhost:PORT` with its TLS, else `http://localhost:PORT` (a secure context
    /// for WebAuthn too).
    #[arg(long, env = "OTPD_PASSKEY_ORIGIN", global = true)]
    pub passkey_origin: Option<String>,
}

/// The relying party's validated settings; the origin's port may wait for the admin listener's bound address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeySettings {
    /// The relying party id.
    pub rp_id: String,
    /// The origin; None: derived from the admin listener's address once it is bound.
    pub origin: Option<String>,
}

impl PasskeyArgs {
    /// Checks the settings: the origin an `https://` URL (or `http://localhost…`) with no path, and the relying party
    /// id its host or a registrable suffix of it.
    pub fn validate(&self) -> Result<PasskeySettings, ConfigError> {
        let invalid = |setting: &'static str, message: String| ConfigError { setting, message };
        let rp_id = self.passkey_rp_id.as_deref().map(str::trim).unwrap_or("localhost").to_ascii_lowercase();
        if rp_id.is_empty() || rp_id.contains(['/', ':', '@']) || rp_id.parse::<std::net::IpAddr>().is_ok() {
            return Err(invalid("passkey-rp-id", "must be a host name, not an address or a URL".into()));
        }
        let origin = match self.passkey_origin.as_deref().map(str::trim) {
            None => None,
            Some(origin) => {
                let origin = origin.trim_end_matches('/');
                // Checked here, with its own setting's name, rather than as an error from webauthn-rs at start-up.
                Passkeys::new(&rp_id, origin).map_err(|m| invalid("passkey-origin", m))?;
                Some(origin.to_owned())
            }
        };
        Ok(PasskeySettings { rp_id, origin })
    }
}

impl PasskeySettings {
    /// The relying party for the admin listener at `admin_port` (`tls`: whether it speaks TLS).
    pub fn passkeys(&self, admin_port: u16, tls: bool) -> Result<Passkeys, String> {
        match &self.origin {
            Some(origin) => Passkeys::new(&self.rp_id, origin),
            None => {
                let scheme = if tls { "https" } else { "http" };
                Passkeys::new(&self.rp_id, &format!("{scheme}://{}:{admin_port}", self.rp_id))
            }
        }
    }
}

/// An enrolled passkey, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    /// The credential id, base64url without padding (unique: one credential belongs to one person).
    pub credential_id: String,
    /// `webauthn-rs`'s `Passkey` as JSON: the public key, the signature counter, the backup state.
    pub passkey_json: String,
}

/// A passkey that answered a sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyUse {
    /// Which one (base64url).
    pub credential_id: String,
    /// Its new JSON when the answer moved its counter or backup state: store it in place of the old one.
    pub updated_passkey_json: Option<String>,
}

/// Why a passkey ceremony did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The browser's answer is not a WebAuthn credential in JSON: the caller's mistake (INVALID_ARGUMENT).
    #[error("the passkey answer is not a WebAuthn credential: {0}")]
    Malformed(String),
    /// The answer is well-formed but proves nothing: a bad signature, another origin or challenge, no user
    /// verification, an unknown credential. A failed sign-in.
    #[error("the passkey answer was refused: {0}")]
    Refused(WebauthnError),
    /// The person has no passkey to sign in with.
    #[error("no passkey is enrolled")]
    NoneEnrolled,
    /// The credential is enrolled already (for this person; the store's unique key answers for others).
    #[error("this passkey is enrolled already")]
    AlreadyEnrolled,
    /// A stored state or passkey does not parse, or `webauthn-rs` failed on its side: ours, never the caller's.
    #[error("passkey internal error: {0}")]
    Internal(String),
}

/// The relying party: checks and issues the ceremonies of one origin.
#[derive(Debug)]
pub struct Passkeys {
    webauthn: Webauthn,
    origin: String,
}

impl Passkeys {
    /// The relying party `rp_id` for pages at `origin` (`https://host[:port]`, or `http://localhost[:port]`).
    pub fn new(rp_id: &str, origin: &str) -> Result<Passkeys, String> {
        let url = Url::parse(origin).map_err(|e| format!("`{origin}` is not a URL: {e}"))?;
        let host = url.host_str().unwrap_or_default();
        let secure = url.scheme() == "https" || (url.scheme() == "http" && host == "localhost");
        if !secure {
            return Err(format!("`{origin}` is not a secure context: use https:// (http:// only for localhost)"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(format!("`{origin}` must be an origin: scheme, host and port only"));
        }
        if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
            return Err(format!("the relying party id `{rp_id}` is neither `{host}` nor a suffix of it"));
        }
        let webauthn = WebauthnBuilder::new(rp_id, &url)
            .and_then(|b| b.rp_name("otpd").timeout(CEREMONY_TIMEOUT).build())
            .map_err(|e| format!("relying party `{rp_id}` at `{origin}`: {e}"))?;
        Ok(Passkeys { webauthn, origin: url.origin().ascii_serialization() })
    }

    /// The origin whose answers are accepted.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Starts enrolling a passkey for `user_id` (the person's stable id; `user_name` is what the authenticator
    /// shows): the creation options as JSON for the browser, and the state to keep. `existing` passkeys are excluded,
    /// so an authenticator does not enrol twice.
    pub fn start_registration(
        &self,
        user_id: Uuid,
        user_name: &str,
        existing: &[StoredPasskey],
    ) -> Result<(String, String), PasskeyError> {
        let exclude = parse_all(existing)?.iter().map(|p| p.cred_id().clone()).collect::<Vec<_>>();
        let exclude = (!exclude.is_empty()).then_some(exclude);
        let (options, state): (CreationChallengeResponse, PasskeyRegistration) = self
            .webauthn
            .start_passkey_registration(user_id, user_name, user_name, exclude)
            .map_err(|e| PasskeyError::Internal(e.to_string()))?;
        Ok((to_json(&options.public_key)?, to_json(&state)?))
    }

    /// Finishes an enrolment with the browser's `credential.toJSON()`: the passkey to store.
    pub fn finish_registration(&self, state_json: &str, credential_json: &str) -> Result<StoredPasskey, PasskeyError> {
        let state: PasskeyRegistration = from_stored(state_json)?;
        let credential: RegisterPublicKeyCredential = from_browser(credential_json)?;
        let passkey = self.webauthn.finish_passkey_registration(&credential, &state).map_err(|e| match e {
            WebauthnError::CredentialExcludedFromRequest => PasskeyError::AlreadyEnrolled,
            other => refusal(other),
        })?;
        Ok(StoredPasskey { credential_id: URL_SAFE_NO_PAD.encode(passkey.cred_id()), passkey_json: to_json(&passkey)? })
    }

    /// Starts a sign-in with any of `passkeys` (the person's): the request options as JSON, and the state to keep.
    pub fn start_authentication(&self, passkeys: &[StoredPasskey]) -> Result<(String, String), PasskeyError> {
        let passkeys = parse_all(passkeys)?;
        if passkeys.is_empty() {
            return Err(PasskeyError::NoneEnrolled);
        }
        let (options, state): (RequestChallengeResponse, PasskeyAuthentication) =
            self.webauthn.start_passkey_authentication(&passkeys).map_err(|e| PasskeyError::Internal(e.to_string()))?;
        Ok((to_json(&options.public_key)?, to_json(&state)?))
    }

    /// Finishes a sign-in with the browser's `credential.toJSON()`, against the same person's `passkeys`: which one
    /// answered, and its new JSON to store when its counter moved. Refused unless the signature verifies under one
    /// of the passkeys offered at the start, for this origin and challenge, with user verification.
    pub fn finish_authentication(
        &self,
        state_json: &str,
        credential_json: &str,
        passkeys: &[StoredPasskey],
    ) -> Result<PasskeyUse, PasskeyError> {
        let state: PasskeyAuthentication = from_stored(state_json)?;
        let credential: PublicKeyCredential = from_browser(credential_json)?;
        let result = self.webauthn.finish_passkey_authentication(&credential, &state).map_err(refusal)?;
        // The passkey policy already refuses an answer without UV; this states the rule where it is relied on.
        if !result.user_verified() {
            return Err(PasskeyError::Refused(WebauthnError::UserNotVerified));
        }
        for stored in passkeys {
            let mut passkey: Passkey = from_stored(&stored.passkey_json)?;
            if passkey.cred_id() != result.cred_id() {
                continue;
            }
            let updated = match passkey.update_credential(&result) {
                Some(true) => Some(to_json(&passkey)?),
                _ => None,
            };
            return Ok(PasskeyUse { credential_id: stored.credential_id.clone(), updated_passkey_json: updated });
        }
        // webauthn-rs only accepts a credential it offered, and it offered exactly these.
        Err(PasskeyError::Refused(WebauthnError::CredentialNotFound))
    }
}

/// A ceremony `webauthn-rs` did not complete: an answer it could not even parse is malformed, any other is refused.
fn refusal(error: WebauthnError) -> PasskeyError {
    match error {
        WebauthnError::ParseBase64Failure(_)
        | WebauthnError::ParseJSONFailure(_)
        | WebauthnError::ParseNOMFailure
        | WebauthnError::ParseInsufficientBytesAvailable => PasskeyError::Malformed(error.to_string()),
        refused => PasskeyError::Refused(refused),
    }
}

fn parse_all(stored: &[StoredPasskey]) -> Result<Vec<Passkey>, PasskeyError> {
    stored.iter().map(|s| from_stored(&s.passkey_json)).collect()
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, PasskeyError> {
    serde_json::to_string(value).map_err(|e| PasskeyError::Internal(format!("serialising: {e}")))
}

fn from_stored<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, PasskeyError> {
    serde_json::from_str(json).map_err(|e| PasskeyError::Internal(format!("a stored passkey or state: {e}")))
}

/// Reads a browser's `PublicKeyCredential.toJSON()` (see the module's note on the one conversion).
fn from_browser<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, PasskeyError> {
    serde_json::from_value(browser_json(json)?).map_err(|e| PasskeyError::Malformed(e.to_string()))
}

/// The browser's JSON with every `null` member removed, at any depth.
fn browser_json(json: &str) -> Result<serde_json::Value, PasskeyError> {
    fn drop_nulls(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(drop_nulls);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
            _ => {}
        }
    }
    let mut value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| PasskeyError::Malformed(e.to_string()))?;
    if !value.is_object() {
        return Err(PasskeyError::Malformed("not a JSON object".into()));
    }
    drop_nulls(&mut value);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use webauthn_authenticator_rs::WebauthnAuthenticator;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;

    const ORIGIN: &str = "http://localhost:8443";

    fn rp() -> Passkeys {
        Passkeys::new("localhost", ORIGIN).unwrap()
    }

    /// A software authenticator that performs user verification (as Chromium's virtual one with
    /// `isUserVerified: true`).
    fn authenticator() -> WebauthnAuthenticator<SoftPasskey> {
        WebauthnAuthenticator::new(SoftPasskey::new(true))
    }

    /// What `PublicKeyCredential.toJSON()` gives for `credential` (serialised by webauthn-rs-proto): the unsigned
    /// extension outputs under `clientExtensionResults`, and the members a browser adds that webauthn-rs does not
    /// model, some of them null.
    fn to_json_like_a_browser<T: serde::Serialize>(credential: &T) -> String {
        let mut value = serde_json::to_value(credential).unwrap();
        let object = value.as_object_mut().unwrap();
        let extensions = object.remove("extensions").unwrap_or(json!({}));
        object.insert("clientExtensionResults".into(), extensions);
        object.insert("authenticatorAttachment".into(), json!("platform"));
        let response = object["response"].as_object_mut().unwrap();
        if response.contains_key("attestationObject") {
            response.insert("publicKeyAlgorithm".into(), json!(-7));
            response.insert("transports".into(), json!(["internal", "hybrid", "smart-card"]));
        } else if response.get("userHandle").is_none_or(Value::is_null) {
            response.insert("userHandle".into(), Value::Null);
        }
        value.to_string()
    }

    /// Enrols a passkey for one person with `key`, as the console does.
    fn enrol(rp: &Passkeys, key: &mut WebauthnAuthenticator<SoftPasskey>, user: Uuid) -> StoredPasskey {
        let (options, state) = rp.start_registration(user, "kim", &[]).unwrap();
        let options: Value = serde_json::from_str(&options).unwrap();
        let ccr: CreationChallengeResponse = serde_json::from_value(json!({ "publicKey": options })).unwrap();
        let credential = key.do_registration(Url::parse(ORIGIN).unwrap(), ccr).unwrap();
        rp.finish_registration(&state, &to_json_like_a_browser(&credential)).unwrap()
    }

    /// Starts a sign-in and has `key` answer it from `origin`, its options first changed by `change`.
    fn answer(
        rp: &Passkeys,
        key: &mut WebauthnAuthenticator<SoftPasskey>,
        passkeys: &[StoredPasskey],
        origin: &str,
        change: impl FnOnce(&mut Value),
    ) -> (String, String) {
        let (options, state) = rp.start_authentication(passkeys).unwrap();
        let mut options: Value = serde_json::from_str(&options).unwrap();
        change(&mut options);
        let rcr: RequestChallengeResponse = serde_json::from_value(json!({ "publicKey": options })).unwrap();
        let assertion = key.do_authentication(Url::parse(origin).unwrap(), rcr).unwrap();
        (state, to_json_like_a_browser(&assertion))
    }

    #[test]
    fn the_options_are_what_the_browsers_json_parsers_take_and_require_user_verification() {
        let user = Uuid::new_v4();
        let (options, state) = rp().start_registration(user, "kim", &[]).unwrap();
        let options: Value = serde_json::from_str(&options).unwrap();
        assert!(options.get("publicKey").is_none(), "the inner object, for parseCreationOptionsFromJSON");
        assert_eq!(options["rp"]["id"], "localhost");
        assert_eq!(options["user"]["name"], "kim");
        assert_eq!(URL_SAFE_NO_PAD.decode(options["user"]["id"].as_str().unwrap()).unwrap(), user.as_bytes());
        assert!(URL_SAFE_NO_PAD.decode(options["challenge"].as_str().unwrap()).unwrap().len() >= 16);
        assert_eq!(options["authenticatorSelection"]["userVerification"], "required");
        assert_eq!(options["attestation"], "none");
        assert!(options["pubKeyCredParams"].as_array().unwrap().iter().any(|p| p["alg"] == -7));
        assert_eq!(options["timeout"], 180_000);
        // The state is JSON a replica that did not start the ceremony can read.
        serde_json::from_str::<PasskeyRegistration>(&state).unwrap();

        let mut key = authenticator();
        let stored = enrol(&rp(), &mut key, user);
        let (options, _) = rp().start_authentication(std::slice::from_ref(&stored)).unwrap();
        let options: Value = serde_json::from_str(&options).unwrap();
        assert_eq!(options["userVerification"], "required");
        assert_eq!(options["rpId"], "localhost");
        assert_eq!(options["allowCredentials"][0]["id"], stored.credential_id.as_str());
        assert_eq!(options["allowCredentials"][0]["type"], "public-key");
    }

    #[test]
    fn a_passkey_enrols_and_signs_in_and_its_counter_is_kept() {
        let rp = rp();
        let mut key = authenticator();
        let user = Uuid::new_v4();
        let stored = enrol(&rp, &mut key, user);
        assert!(!stored.credential_id.is_empty() && !stored.credential_id.contains(['=', '+', '/']));

        // Another authenticator of the same person joins; the first is excluded from its enrolment's options.
        let (options, _) = rp.start_registration(user, "kim", std::slice::from_ref(&stored)).unwrap();
        let options: Value = serde_json::from_str(&options).unwrap();
        assert_eq!(options["excludeCredentials"][0]["id"], stored.credential_id.as_str());
        let mut other = authenticator();
        let second = enrol(&rp, &mut other, user);
        let both = [stored.clone(), second.clone()];

        let (state, assertion) = answer(&rp, &mut key, &both, ORIGIN, |_| {});
        let used = rp.finish_authentication(&state, &assertion, &both).unwrap();
        assert_eq!(used.credential_id, stored.credential_id);
        // The software authenticator counts its signatures: the counter moved, so the passkey is to be stored anew.
        let updated = used.updated_passkey_json.expect("the counter moved");
        let updated = StoredPasskey { credential_id: stored.credential_id.clone(), passkey_json: updated };

        // A second sign-in with the stored counter, by the other authenticator, then the first again.
        let both = [updated, second.clone()];
        let (state, assertion) = answer(&rp, &mut other, &both, ORIGIN, |_| {});
        assert_eq!(rp.finish_authentication(&state, &assertion, &both).unwrap().credential_id, second.credential_id);
        let (state, assertion) = answer(&rp, &mut key, &both, ORIGIN, |_| {});
        assert_eq!(rp.finish_authentication(&state, &assertion, &both).unwrap().credential_id, stored.credential_id);
    }

    #[test]
    fn an_answer_is_good_for_its_own_challenge_only() {
        let rp = rp();
        let mut key = authenticator();
        let stored = [enrol(&rp, &mut key, Uuid::new_v4())];
        let (_, assertion) = answer(&rp, &mut key, &stored, ORIGIN, |_| {});
        let (_, state) = rp.start_authentication(&stored).unwrap();
        let refused = rp.finish_authentication(&state, &assertion, &stored).unwrap_err();
        assert!(matches!(refused, PasskeyError::Refused(WebauthnError::MismatchedChallenge)), "{refused:?}");
    }

    #[test]
    fn a_tampered_assertion_is_refused() {
        let rp = rp();
        let mut key = authenticator();
        let stored = [enrol(&rp, &mut key, Uuid::new_v4())];
        for field in ["signature", "authenticatorData"] {
            let (state, assertion) = answer(&rp, &mut key, &stored, ORIGIN, |_| {});
            let mut assertion: Value = serde_json::from_str(&assertion).unwrap();
            let mut bytes = URL_SAFE_NO_PAD.decode(assertion["response"][field].as_str().unwrap()).unwrap();
            // The signature's last byte; the authenticator data's signature counter (its last byte).
            *bytes.last_mut().unwrap() ^= 0x01;
            assertion["response"][field] = json!(URL_SAFE_NO_PAD.encode(&bytes));
            let refused = rp.finish_authentication(&state, &assertion.to_string(), &stored).unwrap_err();
            assert!(matches!(refused, PasskeyError::Refused(_)), "{field}: {refused:?}");
        }
    }

    #[test]
    fn an_assertion_made_for_another_origin_is_refused() {
        let rp = rp();
        let mut key = authenticator();
        let stored = [enrol(&rp, &mut key, Uuid::new_v4())];
        for origin in ["http://localhost:9999", "https://evil.localhost"] {
            let (state, assertion) = answer(&rp, &mut key, &stored, origin, |_| {});
            let refused = rp.finish_authentication(&state, &assertion, &stored).unwrap_err();
            assert!(matches!(refused, PasskeyError::Refused(WebauthnError::InvalidRPOrigin)), "{origin}: {refused:?}");
        }
    }

    #[test]
    fn an_assertion_without_user_verification_is_refused() {
        let rp = rp();
        let mut key = authenticator();
        let stored = [enrol(&rp, &mut key, Uuid::new_v4())];
        // A client that asks the authenticator for presence only: a genuine signature, the UV flag clear.
        let (state, assertion) =
            answer(&rp, &mut key, &stored, ORIGIN, |options| options["userVerification"] = json!("discouraged"));
        let flags = {
            let assertion: Value = serde_json::from_str(&assertion).unwrap();
            URL_SAFE_NO_PAD.decode(assertion["response"]["authenticatorData"].as_str().unwrap()).unwrap()[32]
        };
        assert_eq!(flags & 0b101, 0b001, "user present, not verified");
        let refused = rp.finish_authentication(&state, &assertion, &stored).unwrap_err();
        assert!(matches!(refused, PasskeyError::Refused(WebauthnError::UserNotVerified)), "{refused:?}");
    }

    #[test]
    fn another_persons_passkey_and_garbage_are_refused_and_nothing_enrolled_is_said() {
        let rp = rp();
        let (mut kim, mut lee) = (authenticator(), authenticator());
        let kims = [enrol(&rp, &mut kim, Uuid::new_v4())];
        let lees = [enrol(&rp, &mut lee, Uuid::new_v4())];
        // Lee's authenticator is asked for Kim's passkeys: it has none of them.
        let (options, _) = rp.start_authentication(&kims).unwrap();
        let rcr: RequestChallengeResponse =
            serde_json::from_value(json!({ "publicKey": serde_json::from_str::<Value>(&options).unwrap() })).unwrap();
        assert!(lee.do_authentication(Url::parse(ORIGIN).unwrap(), rcr).is_err());
        // Lee's own answer, offered against Kim's sign-in.
        let (_, lees_answer) = answer(&rp, &mut lee, &lees, ORIGIN, |_| {});
        let (_, kims_state) = rp.start_authentication(&kims).unwrap();
        let refused = rp.finish_authentication(&kims_state, &lees_answer, &kims).unwrap_err();
        assert!(matches!(refused, PasskeyError::Refused(_)), "{refused:?}");

        for garbage in ["", "[]", "{}", "{\"id\":1}", "not json"] {
            let refused = rp.finish_authentication(&kims_state, garbage, &kims).unwrap_err();
            assert!(matches!(refused, PasskeyError::Malformed(_)), "{garbage}: {refused:?}");
        }
        assert!(matches!(rp.start_authentication(&[]), Err(PasskeyError::NoneEnrolled)));
        let corrupt = [StoredPasskey { credential_id: "x".into(), passkey_json: "{".into() }];
        assert!(matches!(rp.start_authentication(&corrupt), Err(PasskeyError::Internal(_))));
    }

    /// An enrolment answer is good for its own ceremony only: replayed into another (the same person's next
    /// enrolment, which excludes the passkey it made), it is refused, and nothing is enrolled twice.
    #[test]
    fn an_enrolment_answer_is_good_for_its_own_ceremony_only() {
        let rp = rp();
        let mut key = authenticator();
        let user = Uuid::new_v4();
        let (options, state) = rp.start_registration(user, "kim", &[]).unwrap();
        let ccr: CreationChallengeResponse =
            serde_json::from_value(json!({ "publicKey": serde_json::from_str::<Value>(&options).unwrap() })).unwrap();
        let credential = to_json_like_a_browser(&key.do_registration(Url::parse(ORIGIN).unwrap(), ccr).unwrap());
        let stored = rp.finish_registration(&state, &credential).unwrap();
        let (_, next) = rp.start_registration(user, "kim", std::slice::from_ref(&stored)).unwrap();
        let refused = rp.finish_registration(&next, &credential).unwrap_err();
        assert!(matches!(refused, PasskeyError::Refused(WebauthnError::MismatchedChallenge)), "{refused:?}");
        // An enrolment made at another origin.
        let (options, state) = rp.start_registration(user, "kim", &[]).unwrap();
        let ccr: CreationChallengeResponse =
            serde_json::from_value(json!({ "publicKey": serde_json::from_str::<Value>(&options).unwrap() })).unwrap();
        let elsewhere = key.do_registration(Url::parse("https://evil.localhost").unwrap(), ccr).unwrap();
        let refused = rp.finish_registration(&state, &to_json_like_a_browser(&elsewhere)).unwrap_err();
        assert!(matches!(refused, PasskeyError::Refused(WebauthnError::InvalidRPOrigin)), "{refused:?}");
    }

    #[test]
    fn the_relying_party_settings_are_checked() {
        let args = |rp: Option<&str>, origin: Option<&str>| PasskeyArgs {
            passkey_rp_id: rp.map(str::to_owned),
            passkey_origin: origin.map(str::to_owned),
        };
        let dev = args(None, None).validate().unwrap();
        assert_eq!(dev, PasskeySettings { rp_id: "localhost".into(), origin: None });
        assert!(dev.passkeys(50052, false).is_ok());
        let given = args(Some("example.co.kr"), Some("https://otp-admin.example.co.kr/")).validate().unwrap();
        assert_eq!(given.origin.as_deref(), Some("https://otp-admin.example.co.kr"));
        for (rp, origin) in [
            (None, Some("http://otp-admin.example.co.kr")),
            (Some("example.co.kr"), Some("https://example.com")),
            (Some("example.co.kr"), Some("https://otp-admin.example.co.kr/console/")),
            (None, Some("localhost:8443")),
        ] {
            assert_eq!(args(rp, origin).validate().unwrap_err().setting, "passkey-origin", "{rp:?} {origin:?}");
        }
        for rp in ["127.0.0.1", "https://example.co.kr", ""] {
            assert_eq!(args(Some(rp), None).validate().unwrap_err().setting, "passkey-rp-id", "{rp}");
        }
    }
}
