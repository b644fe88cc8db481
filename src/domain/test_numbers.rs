//! Staging test numbers: numbers whose code is fixed and whose SMS never reaches the gateway, so QA and app
//! store reviewers can log in without a phone. Production mode refuses them.

use std::collections::HashMap;

use super::{AllowedCountries, CodeLength, OtpCode, PhoneNumber};

/// Fixed codes by E.164 number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestNumbers(HashMap<String, String>);

impl TestNumbers {
    /// Parses `NUMBER=CODE,NUMBER=CODE`; each number must be a number codes can be sent to.
    pub fn parse(spec: &str, countries: &AllowedCountries, length: CodeLength) -> Result<Self, String> {
        let mut map = HashMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (number, code) = entry.split_once('=').ok_or_else(|| format!("`{entry}`: write NUMBER=CODE"))?;
            let phone = PhoneNumber::parse(number, countries).map_err(|e| format!("`{number}`: {e}"))?;
            OtpCode::parse(code, length).map_err(|e| format!("`{number}`: {e}"))?;
            map.insert(phone.e164().to_owned(), code.trim().to_owned());
        }
        Ok(Self(map))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fixed code of `phone`, if it is a test number.
    pub fn code_for(&self, phone: &PhoneNumber, length: CodeLength) -> Option<OtpCode> {
        self.0.get(phone.e164()).and_then(|code| OtpCode::parse(code, length).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up_in_any_format() {
        let kr = AllowedCountries::default();
        let t =
            TestNumbers::parse("010-0000-0001=123456, +82 10 0000 0002=654321", &kr, CodeLength::default()).unwrap();
        let phone = PhoneNumber::parse("+821000000001", &kr).unwrap();
        assert_eq!(t.code_for(&phone, CodeLength::default()).unwrap().expose(), "123456");
        assert!(t.code_for(&PhoneNumber::parse("010-1234-5678", &kr).unwrap(), CodeLength::default()).is_none());
        assert!(TestNumbers::parse("010-0000-0001", &kr, CodeLength::default()).is_err());
        assert!(TestNumbers::parse("010-0000-0001=12", &kr, CodeLength::default()).is_err());
        assert!(TestNumbers::parse("02-312-3456=123456", &kr, CodeLength::default()).is_err());
    }
}
