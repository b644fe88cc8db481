//! Code parsing, as VerifyCode runs it on what the driver typed, for each configurable length; and the app-hash
//! check SendCode runs. An accepted code is exactly the trimmed input, all ASCII digits, of the length; a refusal
//! says which rule was broken; the code never shows in `Debug`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::domain::{AllowedAppHashes, AppHash, CodeFormatError, CodeLength, OtpCode};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else { return };
    let Ok(input) = std::str::from_utf8(text) else { return };
    let digits = CodeLength::MIN + selector % (CodeLength::MAX - CodeLength::MIN + 1);
    let length = CodeLength::new(digits).unwrap_or_else(|e| panic!("{digits} digits is a valid length: {e}"));

    let trimmed = input.trim();
    match OtpCode::parse(input, length) {
        Ok(code) => {
            assert_eq!(code.expose(), trimmed);
            assert_eq!(code.expose().len(), length.get());
            assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
            assert!(!format!("{code:?}").contains(code.expose()), "Debug never shows the code");
        }
        Err(CodeFormatError::Empty) => assert!(trimmed.is_empty()),
        Err(CodeFormatError::NotDigits) => assert!(!trimmed.bytes().all(|b| b.is_ascii_digit())),
        Err(CodeFormatError::WrongLength(n)) => {
            assert_eq!(n, length.get());
            assert!(trimmed.bytes().all(|b| b.is_ascii_digit()) && trimmed.len() != n);
        }
    }

    // The same bytes as an app hash, against a server that allows one hash.
    let allowed = AllowedAppHashes::parse("FA+9qCX9VSu").unwrap_or_else(|e| panic!("a valid hash: {e}"));
    let parsed = AppHash::parse(input);
    if let Ok(hash) = &parsed {
        assert_eq!(hash.as_str(), trimmed);
        assert_eq!(hash.as_str().len(), 11);
    }
    match allowed.check(input) {
        Ok(hash) => assert_eq!(hash.as_str(), "FA+9qCX9VSu"),
        Err(why) => assert!(!why.is_empty()),
    }
});
