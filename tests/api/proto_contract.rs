//! The proto as a governed contract: the `ErrorReason` enum lists exactly the reasons the service puts in
//! `ErrorInfo`, every field that holds a code or a full phone number is marked `debug_redact`, and generated code
//! gets its own Go and Java packages. (`buf lint` and `buf breaking` run in scripts/test.)

use std::collections::BTreeSet;

use otpd::pb::otp::v1 as pb;

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Every `"UPPER_CASE"` literal outside the tests of the modules that build statuses (src/grpc): the reasons of
/// `ErrorInfo` and of `BadRequest` violations are nothing else there.
fn reasons_in_code() -> BTreeSet<String> {
    let mut reasons = BTreeSet::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/grpc");
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for literal in code.split('"').skip(1).step_by(2) {
            let upper = literal.len() >= 4
                && literal.starts_with(|c: char| c.is_ascii_uppercase())
                && literal.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if upper {
                reasons.insert(literal.to_owned());
            }
        }
    }
    reasons
}

#[test]
fn the_error_reason_enum_lists_every_reason_the_service_emits() {
    let emitted = reasons_in_code();
    assert!(
        emitted.contains("PHONE_LOCKED") && emitted.contains("INVALID_CODE"),
        "the scan finds reasons: {emitted:?}"
    );
    let missing: Vec<_> = emitted
        .iter()
        .filter(|reason| pb::ErrorReason::from_str_name(&format!("ERROR_REASON_{reason}")).is_none())
        .collect();
    assert!(missing.is_empty(), "reasons the code emits that proto/otp/v1/otp.proto's ErrorReason lacks: {missing:?}");
    let listed: Vec<String> = (1..1000)
        .filter_map(|n| pb::ErrorReason::try_from(n).ok())
        .map(|reason| reason.as_str_name().trim_start_matches("ERROR_REASON_").to_owned())
        .collect();
    let stale: Vec<_> = listed.iter().filter(|reason| !emitted.contains(*reason)).collect();
    assert!(stale.is_empty(), "ErrorReason values no code emits: {stale:?}");
}

#[test]
fn codes_and_full_phone_numbers_are_marked_debug_redact() {
    let mut checked = 0;
    for file in ["proto/otp/v1/otp.proto", "proto/otp/v1/supervisor.proto"] {
        for line in read(file).lines().map(str::trim) {
            let Some(field) = line.strip_prefix("string ").and_then(|rest| rest.split_whitespace().next()) else {
                continue;
            };
            if ["phone_number", "sim_phone_number", "contact_number", "code"].contains(&field) {
                assert!(line.ends_with("[debug_redact = true];"), "{file}: {line}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 10, "every field that holds a code or a full number");
}

#[test]
fn generated_code_has_its_own_packages_in_go_and_java() {
    for file in ["proto/otp/v1/otp.proto", "proto/otp/v1/supervisor.proto"] {
        let text = read(file);
        for option in [
            "option go_package = \"otpd.io/gen/go/otp/v1;otpv1\";",
            "option java_package = \"io.otpd.otp.v1\";",
            "option java_multiple_files = true;",
        ] {
            assert!(text.contains(option), "{file}: {option}");
        }
    }
}
