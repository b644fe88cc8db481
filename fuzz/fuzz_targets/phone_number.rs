//! Phone-number parsing, as the edge runs it on every number field: arbitrary text under each of a few country
//! configurations. Accepted numbers must be canonical (their E.164 parses back to them) and masked correctly; a
//! strictly accepted number is also accepted leniently, as the same number.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::domain::{PhoneError, PhoneNumber};
use otpd_fuzz::{Parsed, check_phone, countries};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else { return };
    // The edge only ever sees UTF-8: prost refuses a string field that is not.
    let Ok(input) = std::str::from_utf8(text) else { return };
    let countries = countries(selector);

    let strict = PhoneNumber::parse(input, &countries);
    let lenient = PhoneNumber::parse_lenient(input, &countries);
    match &strict {
        Ok(number) => {
            check_phone(number, &countries, Parsed::Strict);
            assert_eq!(lenient.as_ref(), Ok(number), "a strictly accepted number is the same number leniently");
        }
        Err(PhoneError::Invalid(why) | PhoneError::Unsupported(why)) => assert!(!why.is_empty()),
    }
    if let Ok(number) = &lenient {
        check_phone(number, &countries, Parsed::Lenient);
    }
});
