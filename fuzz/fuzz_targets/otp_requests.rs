//! The public service's request decoding: arbitrary bytes as the body of a SendCode or VerifyCode message (what
//! tonic's prost codec decodes), then the handler's own parsing into a command. A decoded message re-encodes to
//! itself; an accepted command holds exactly what the request said, in valid values; a refused one is
//! `INVALID_ARGUMENT` naming the request's own bad fields, and only those.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::domain::{AllowedAppHashes, CodeLength, OtpCode, PhoneNumber};
use otpd::grpc::convert::optional_purpose;
use otpd::grpc::edge::OtpRequests;
use otpd::pb::otp::v1 as pb;
use otpd_fuzz::{Parsed, check_invalid_argument, check_phone, countries, names};
use prost::Message;

const ALLOWED_HASH: &str = "FA+9qCX9VSu";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let digits = CodeLength::MIN + (selector >> 1) % 3;
    let requests = OtpRequests {
        countries: countries(selector >> 3),
        code_length: CodeLength::new(digits).unwrap_or_else(|e| panic!("{digits} digits: {e}")),
        app_hashes: AllowedAppHashes::parse(ALLOWED_HASH).unwrap_or_else(|e| panic!("a valid hash: {e}")),
    };
    if selector & 1 == 0 { send(&requests, body) } else { verify(&requests, body) }
});

/// Decodes `body` as `M`; a message that decodes re-encodes to one that decodes to it again.
fn decode<M: Message + Default + PartialEq>(body: &[u8]) -> Option<M> {
    let message = M::decode(body).ok()?;
    let again = M::decode(message.encode_to_vec().as_slice());
    assert!(again.as_ref() == Ok(&message), "a decoded message survives re-encoding");
    Some(message)
}

fn send(requests: &OtpRequests, body: &[u8]) {
    let Some(req) = decode::<pb::SendCodeRequest>(body) else { return };
    let countries = &requests.countries;
    let phone_ok = PhoneNumber::parse(&req.phone_number, countries).is_ok();
    let purpose_ok = matches!(optional_purpose(req.purpose), Ok(Some(_)));
    let sim_ok =
        req.sim_phone_number.trim().is_empty() || PhoneNumber::parse_lenient(&req.sim_phone_number, countries).is_ok();
    let hash_ok = req.app_hash.is_empty() || requests.app_hashes.check(&req.app_hash).is_ok();
    match requests.parse_send(req.clone()) {
        Ok(cmd) => {
            assert!(phone_ok && purpose_ok && sim_ok && hash_ok, "only a valid request is accepted: {req:?}");
            check_phone(&cmd.phone, countries, Parsed::Strict);
            assert_eq!(Ok(&cmd.phone), PhoneNumber::parse(&req.phone_number, countries).as_ref());
            assert_eq!(Ok(Some(cmd.purpose)), optional_purpose(req.purpose));
            match &cmd.sim_phone {
                None => assert!(req.sim_phone_number.trim().is_empty()),
                Some(sim) => check_phone(sim, countries, Parsed::Lenient),
            }
            match &cmd.app_hash {
                None => assert!(req.app_hash.is_empty()),
                Some(hash) => assert_eq!(hash.as_str(), ALLOWED_HASH),
            }
            assert!(cmd.deadline.is_none(), "the deadline comes from the metadata, never the body");
        }
        Err(error) => {
            let fields = ["phone_number", "purpose", "sim_phone_number", "app_hash"];
            let violations = check_invalid_argument(error, &fields);
            assert_eq!(names(&violations, "phone_number"), !phone_ok, "{violations:?}");
            assert_eq!(names(&violations, "purpose"), !purpose_ok, "{violations:?}");
            assert_eq!(names(&violations, "sim_phone_number"), !sim_ok, "{violations:?}");
            assert_eq!(names(&violations, "app_hash"), !hash_ok, "{violations:?}");
        }
    }
}

fn verify(requests: &OtpRequests, body: &[u8]) {
    let Some(req) = decode::<pb::VerifyCodeRequest>(body) else { return };
    let countries = &requests.countries;
    let phone_ok = PhoneNumber::parse(&req.phone_number, countries).is_ok();
    let purpose_ok = matches!(optional_purpose(req.purpose), Ok(Some(_)));
    let code_ok = OtpCode::parse(&req.code, requests.code_length).is_ok();
    match requests.parse_verify(req.clone()) {
        Ok(cmd) => {
            assert!(phone_ok && purpose_ok && code_ok, "only a valid request is accepted: {req:?}");
            check_phone(&cmd.phone, countries, Parsed::Strict);
            assert_eq!(Ok(&cmd.phone), PhoneNumber::parse(&req.phone_number, countries).as_ref());
            assert_eq!(Ok(Some(cmd.purpose)), optional_purpose(req.purpose));
            assert_eq!(cmd.code.expose(), req.code.trim());
            assert_eq!(cmd.code.expose().len(), requests.code_length.get());
            assert!(cmd.deadline.is_none(), "the deadline comes from the metadata, never the body");
        }
        Err(error) => {
            let violations = check_invalid_argument(error, &["phone_number", "purpose", "code"]);
            assert_eq!(names(&violations, "phone_number"), !phone_ok, "{violations:?}");
            assert_eq!(names(&violations, "purpose"), !purpose_ok, "{violations:?}");
            assert_eq!(names(&violations, "code"), !code_ok, "{violations:?}");
            // A mistyped code is not a secret, but a refusal still never repeats what was typed.
            let status = tonic::Status::from(otpd::service::ServiceError::InvalidArgument(violations));
            let typed = req.code.trim();
            if typed.len() >= 4 && typed.bytes().all(|b| b.is_ascii_digit()) && purpose_ok {
                assert!(!status.message().contains(typed), "{status:?}");
            }
        }
    }
}
