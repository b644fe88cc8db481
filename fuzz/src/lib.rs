//! The invariants the fuzz targets check of what otpd's edge produces: a valid number's E.164 parses back to the
//! same number, its mask shows only the first two and last four national digits, and a refused request is an
//! `INVALID_ARGUMENT` naming only fields of the request, with the details clients read.
//!
//! Targets panic (on purpose) when an invariant breaks: that is how libFuzzer learns of a finding.

use otpd::domain::{AllowedCountries, PhoneNumber};
use otpd::service::{FieldViolation, ServiceError};
use tonic_types::StatusExt;

/// Country lists a server may be configured with; the targets pick one per input, so numbering plans other than
/// Korea's (and a default region other than `KR`) are exercised too.
const COUNTRY_SETS: [&str; 4] = ["KR", "KR,JP", "JP,KR,US", "KR,CN,VN,GB"];

/// The allowed countries of configuration `selector` (any byte picks one).
pub fn countries(selector: u8) -> AllowedCountries {
    let spec = COUNTRY_SETS[usize::from(selector) % COUNTRY_SETS.len()];
    spec.parse().unwrap_or_else(|e| panic!("`{spec}` is a valid country list: {e}"))
}

/// How a number was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// `PhoneNumber::parse`: a mobile number of an allowed country.
    Strict,
    /// `PhoneNumber::parse_lenient`: any syntactically valid number.
    Lenient,
}

/// Checks a number the edge accepted: its E.164 form, that it parses back to itself, and its mask.
pub fn check_phone(number: &PhoneNumber, countries: &AllowedCountries, how: Parsed) {
    let e164 = number.e164();
    let digits = e164.strip_prefix('+').unwrap_or_else(|| panic!("E.164 starts with '+': {e164:?}"));
    assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()), "E.164 is '+' and digits: {e164:?}");

    let again = PhoneNumber::parse_lenient(e164, countries);
    assert_eq!(again.as_ref(), Ok(number), "the E.164 of a number parses back to the same number");
    if how == Parsed::Strict {
        let again = PhoneNumber::parse(e164, countries);
        assert_eq!(again.as_ref(), Ok(number), "the E.164 of an accepted number is accepted as the same number");
    }

    let masked = number.masked();
    assert_eq!(number.to_string(), masked, "Display shows the mask");
    assert_eq!(format!("{number:?}"), format!("PhoneNumber({masked})"), "Debug shows the mask");
    check_mask(e164, masked);
}

/// The mask is `+<calling code>` and the national number with every digit but the first two and the last four
/// replaced by `*`.
fn check_mask(e164: &str, masked: &str) {
    let rest = masked.strip_prefix('+').unwrap_or_else(|| panic!("a mask starts with '+': {masked:?}"));
    let code: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!((1..=3).contains(&code.len()), "a mask starts with the calling code: {masked:?}");
    let national = e164[1..].strip_prefix(code.as_str()).unwrap_or_else(|| panic!("{masked:?} has the calling code"));
    let shown: Vec<char> = rest[code.len()..].chars().filter(|c| c.is_ascii_digit() || *c == '*').collect();
    assert_eq!(shown.len(), national.len(), "the mask has a place for every national digit: {masked:?}");
    for (i, (shown, digit)) in shown.iter().zip(national.chars()).enumerate() {
        let visible = i < 2 || i + 4 >= national.len();
        let want = if visible { digit } else { '*' };
        assert_eq!(*shown, want, "national digit {i} of {} in {masked:?}", national.len());
    }
}

/// Checks a refused request: at least one violation, each naming one of `fields` once with a known reason, and
/// the status clients get: `INVALID_ARGUMENT` with `ErrorInfo` (domain `otp.v1`, the first reason) and a
/// `BadRequest` listing every violation.
pub fn check_refusal(violations: &[FieldViolation], fields: &[&str]) {
    assert!(!violations.is_empty(), "a refused request names at least one field");
    for (i, v) in violations.iter().enumerate() {
        assert!(fields.contains(&v.field), "{:?} is a field of the request", v.field);
        assert!(violations[..i].iter().all(|w| w.field != v.field), "{:?} is named once", v.field);
        assert!(v.reason.starts_with("INVALID_") || v.reason == "UNSUPPORTED_DESTINATION", "{:?}", v.reason);
        assert!(!v.description.is_empty(), "{:?} says what is wrong", v.field);
    }
    let status = tonic::Status::from(ServiceError::InvalidArgument(violations.to_vec()));
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().unwrap_or_else(|| panic!("ErrorInfo is attached: {status:?}"));
    assert_eq!(info.domain, otpd::grpc::ERROR_DOMAIN);
    assert_eq!(info.reason, violations[0].reason);
    let bad = details.bad_request().unwrap_or_else(|| panic!("BadRequest is attached: {status:?}"));
    let named: Vec<&str> = bad.field_violations.iter().map(|f| f.field.as_str()).collect();
    let want: Vec<&str> = violations.iter().map(|v| v.field).collect();
    assert_eq!(named, want, "BadRequest lists every bad field");
}

/// Checks a refusal the flows return as a [`ServiceError`]: it must be `InvalidArgument` (see [`check_refusal`]).
pub fn check_invalid_argument(error: ServiceError, fields: &[&str]) -> Vec<FieldViolation> {
    match error {
        ServiceError::InvalidArgument(violations) => {
            check_refusal(&violations, fields);
            violations
        }
        other => panic!("a malformed request is INVALID_ARGUMENT, not {other:?}"),
    }
}

/// Whether `field` is among the violations.
pub fn names(violations: &[FieldViolation], field: &str) -> bool {
    violations.iter().any(|v| v.field == field)
}
