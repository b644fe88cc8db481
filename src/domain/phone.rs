//! Phone numbers, parsed once at the edge into E.164 with the `phonenumber` crate (Google's libphonenumber
//! metadata), so that `010-1234-5678`, `01012345678` and `+82 10 1234 5678` are one number.

use std::fmt;
use std::str::FromStr;

use phonenumber::metadata::DATABASE;
use phonenumber::{Mode, Type};

/// The longest input we try to parse; anything longer is not a phone number.
const MAX_INPUT_LEN: usize = 32;

/// A mobile number of an allowed country, in E.164 (`+821012345678`).
///
/// `Display` and `Debug` show it masked (`+82 10-****-5678`): the full number is only reachable through
/// [`PhoneNumber::e164`], which the SMS gateway and the store use.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    e164: String,
    masked: String,
    national: String,
    calling_code: u16,
}

/// Why a string is not a number we can send a code to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Not a phone number at all (empty, letters, wrong length, unknown numbering plan).
    #[error("not a valid phone number: {0}")]
    Invalid(&'static str),
    /// A real number, but SMS codes are not sent there (landline, or a country that is not allowed).
    #[error("unsupported destination: {0}")]
    Unsupported(&'static str),
}

/// The ISO 3166 regions whose mobile numbers may receive codes (default: `KR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedCountries {
    regions: Vec<String>,
    calling_codes: Vec<u16>,
}

impl AllowedCountries {
    /// The region whose national format (`010-…`) is assumed for numbers without `+`.
    pub fn default_region(&self) -> &str {
        &self.regions[0]
    }

    /// The configured regions, in order.
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// The calling code of an allowed country that `digits` (E.164 digits, no `+`) starts with.
    pub fn calling_code_of(&self, digits: &str) -> Option<u16> {
        self.calling_codes.iter().copied().find(|code| digits.starts_with(&code.to_string()))
    }

    fn default_region_id(&self) -> Option<phonenumber::country::Id> {
        phonenumber::country::Id::from_str(self.default_region()).ok()
    }
}

impl Default for AllowedCountries {
    fn default() -> Self {
        Self::from_str("KR").unwrap_or_else(|_| unreachable!("KR is in the phonenumber database"))
    }
}

impl FromStr for AllowedCountries {
    type Err = String;

    /// A comma-separated list of ISO 3166-1 alpha-2 codes, e.g. `KR` or `KR,JP`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut regions = Vec::new();
        let mut calling_codes = Vec::new();
        for region in s.split(',').map(|r| r.trim().to_ascii_uppercase()).filter(|r| !r.is_empty()) {
            let meta = DATABASE
                .by_id(region.as_str())
                .ok_or_else(|| format!("unknown country code `{region}` (use ISO 3166-1 alpha-2, e.g. KR)"))?;
            calling_codes.push(meta.country_code());
            regions.push(region);
        }
        if regions.is_empty() {
            return Err("at least one country is required".into());
        }
        Ok(Self { regions, calling_codes })
    }
}

impl PhoneNumber {
    /// Parses a mobile number of one of the `allowed` countries; national formats are read in the first one.
    pub fn parse(input: &str, allowed: &AllowedCountries) -> Result<Self, PhoneError> {
        let number = parse_any(input, allowed)?;
        if !allowed.calling_codes.contains(&number.code().value()) {
            return Err(PhoneError::Unsupported("codes are not sent to this country"));
        }
        if !number.is_valid_with(&DATABASE) {
            return Err(PhoneError::Invalid("no such number in the country's numbering plan"));
        }
        let region_allowed =
            number.country().id().is_some_and(|id| allowed.regions.iter().any(|r| r.as_str() == id.as_ref()));
        if !region_allowed {
            return Err(PhoneError::Unsupported("codes are not sent to this country"));
        }
        match number.number_type(&DATABASE) {
            Type::Mobile | Type::FixedLineOrMobile => Ok(Self::from_parsed(&number)),
            _ => Err(PhoneError::Unsupported("not a mobile number: SMS cannot reach it")),
        }
    }

    /// Parses any syntactically valid number (for comparing with a number a device or phone system reports).
    pub fn parse_lenient(input: &str, allowed: &AllowedCountries) -> Result<Self, PhoneError> {
        let number = parse_any(input, allowed).map(|n| Self::from_parsed(&n))?;
        // libphonenumber keeps leading zeros that no numbering plan has (`0000145677` in KR gives `+8200145677`)
        // but reads that E.164 back without them (`+82145677`): such a number has no one form to compare by, and
        // is no number anyone can dial. Found by the `phone_number` fuzz target.
        match parse_any(&number.e164, allowed) {
            Ok(again) if again.format().mode(Mode::E164).to_string() == number.e164 => Ok(number),
            _ => Err(PhoneError::Invalid("not a phone number")),
        }
    }

    fn from_parsed(number: &phonenumber::PhoneNumber) -> Self {
        let e164 = number.format().mode(Mode::E164).to_string();
        let international = number.format().mode(Mode::International).to_string();
        // Korean providers take domestic recipients as the digits dialled at home (`01012345678`).
        let national: String =
            number.format().mode(Mode::National).to_string().chars().filter(char::is_ascii_digit).collect();
        let calling_code = number.code().value();
        Self { masked: mask(&international, calling_code), e164, national, calling_code }
    }

    /// The number in E.164, for the SMS gateway and the store. Never log it: log `self` (masked).
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// The national digits as dialled in the number's own country, e.g. `01012345678`. Never log it.
    pub fn national_digits(&self) -> &str {
        &self.national
    }

    /// The country calling code, e.g. 82.
    pub fn calling_code(&self) -> u16 {
        self.calling_code
    }

    /// The masked form, e.g. `+82 10-****-5678`.
    pub fn masked(&self) -> &str {
        &self.masked
    }
}

fn parse_any(input: &str, allowed: &AllowedCountries) -> Result<phonenumber::PhoneNumber, PhoneError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(PhoneError::Invalid("phone number is required"));
    }
    if input.len() > MAX_INPUT_LEN {
        return Err(PhoneError::Invalid("too long for a phone number"));
    }
    if !input.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')' | '.')) {
        return Err(PhoneError::Invalid("only digits, spaces, '+', '-', '.', '(' and ')' are allowed"));
    }
    let number = phonenumber::parse(allowed.default_region_id(), input)
        .map_err(|_| PhoneError::Invalid("not a phone number"))?;
    if number.extension().is_some() {
        return Err(PhoneError::Invalid("extensions are not allowed"));
    }
    Ok(number)
}

/// Keeps the calling code, the first two and the last four national digits: `+82 10-****-5678`.
fn mask(international: &str, calling_code: u16) -> String {
    let prefix = format!("+{calling_code}");
    let national = international.strip_prefix(&prefix).unwrap_or(international);
    let digits = national.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    let masked: String = national
        .chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen <= 2 || seen > digits.saturating_sub(4) { c } else { '*' }
        })
        .collect();
    format!("{prefix}{masked}")
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked)
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kr() -> AllowedCountries {
        AllowedCountries::default()
    }

    #[test]
    fn korean_mobile_formats_are_one_number() {
        for input in ["010-1234-5678", "01012345678", "+82 10 1234 5678", "+821012345678", " 010 1234 5678 "] {
            let n = PhoneNumber::parse(input, &kr()).unwrap();
            assert_eq!(n.e164(), "+821012345678", "{input}");
            assert_eq!(n.masked(), "+82 10-****-5678", "{input}");
            assert_eq!((n.national_digits(), n.calling_code()), ("01012345678", 82), "{input}");
        }
    }

    #[test]
    fn display_and_debug_are_masked() {
        let n = PhoneNumber::parse("010-1234-5678", &kr()).unwrap();
        assert_eq!(n.to_string(), "+82 10-****-5678");
        assert!(!format!("{n:?}").contains("1234"));
    }

    #[test]
    fn rejects_what_is_not_a_korean_mobile() {
        let cases = [
            ("", PhoneError::Invalid("phone number is required")),
            ("abc", PhoneError::Invalid("only digits, spaces, '+', '-', '.', '(' and ')' are allowed")),
            ("010-1234", PhoneError::Invalid("no such number in the country's numbering plan")),
            ("02-312-3456", PhoneError::Unsupported("not a mobile number: SMS cannot reach it")),
            ("+1 202 555 0100", PhoneError::Unsupported("codes are not sent to this country")),
        ];
        for (input, want) in cases {
            assert_eq!(PhoneNumber::parse(input, &kr()).unwrap_err(), want, "{input:?}");
        }
        assert!(PhoneNumber::parse(&"1".repeat(40), &kr()).is_err());
    }

    #[test]
    fn a_leniently_parsed_number_is_its_own_e164() {
        for input in ["0000145677", "00001 (4.5677", "+820000145677"] {
            let parsed = PhoneNumber::parse_lenient(input, &kr());
            assert_eq!(parsed, Err(PhoneError::Invalid("not a phone number")), "{input:?}");
        }
        for input in ["+82 2 312 3456", "+39 06 1234 5678", "+82 145677", "010-1234-5678"] {
            let n = PhoneNumber::parse_lenient(input, &kr()).unwrap();
            assert_eq!(PhoneNumber::parse_lenient(n.e164(), &kr()).unwrap(), n, "{input:?}");
        }
    }

    #[test]
    fn allowed_countries_parse() {
        let a: AllowedCountries = "kr, jp".parse().unwrap();
        assert_eq!(a.regions(), ["KR", "JP"]);
        assert!("XX".parse::<AllowedCountries>().is_err());
        assert!("".parse::<AllowedCountries>().is_err());
    }
}
