//! The SMS text: a template (`--sms-template`) with `{code}` exactly once, `{minutes}` and `{brand}`, then
//! optionally the Android SMS Retriever hash line and, last, the origin-bound line `@domain #code` (the format
//! iOS and the Web OTP API read). Checked once at start-up, rendered with the longest code, so that every message
//! fits what was promised: one SMS of 90 bytes in EUC-KR unless LMS is allowed.

use chrono::TimeDelta;
use secrecy::SecretString;

use crate::domain::{AppHash, OtpCode};

/// The default text: the code, how long it works, and a do-not-share warning (77 bytes with an 8-digit code).
pub const DEFAULT_TEMPLATE: &str = "[인증번호] {code}\n{minutes}분 안에 입력해 주세요. 타인에게 절대 알려주지 마세요.";
/// The most an SMS holds, in EUC-KR bytes (45 Hangul).
pub const SMS_BYTES: usize = 90;
/// The most an LMS holds, in EUC-KR bytes.
pub const LMS_BYTES: usize = 2000;
/// Words NHN Cloud requires in the body of an authentication SMS, English ones in any case (SMS API v3.0 Guide,
/// 인증용 SMS(긴급) > 인증용 SMS 발송: "auth, password, verify, にんしょう, 認証, 비밀번호, 인증"; without one NHN answers
/// `-8000`). AlimTalk's own list (API v2.3, 인증 메시지) has `verif` instead of `verify`; its text is the approved
/// template's, not ours, so only the SMS API's list is checked here.
const AUTH_WORDS: [&str; 7] = ["auth", "password", "verify", "にんしょう", "認証", "비밀번호", "인증"];

/// The first character of `text` outside EUC-KR 완성형 (KS X 1001: ASCII, or two bytes each in 0xA1–0xFE), which
/// Solapi refuses (메시지 상태 코드 1029: "EUC-KR(완성형 한글) 범위 안에 있는 문자만"). `encoding_rs`'s EUC-KR is the
/// WHATWG one, i.e. CP949, which also encodes the 8,822 extra Hangul syllables (똠, 꿍, …) outside that range.
pub fn outside_ks_x_1001(text: &str) -> Option<char> {
    text.chars().find(|c| {
        let mut buffer = [0; 4];
        let (bytes, _, unencodable) = encoding_rs::EUC_KR.encode(c.encode_utf8(&mut buffer));
        unencodable
            || match bytes.as_ref() {
                [b] => !b.is_ascii(),
                [lead, trail] => !((0xA1..=0xFE).contains(lead) && (0xA1..=0xFE).contains(trail)),
                _ => true,
            }
    })
}

/// The length of `text` in EUC-KR, or None when EUC-KR cannot encode it (most emoji), which makes a send fail.
pub fn euc_kr_len(text: &str) -> Option<usize> {
    let (bytes, _, unencodable) = encoding_rs::EUC_KR.encode(text);
    (!unencodable).then_some(bytes.len())
}

/// A checked message template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsTemplate {
    text: String,
    brand: String,
    origin_domain: Option<String>,
}

/// What a template must fit, known at start-up.
#[derive(Debug, Clone, Copy)]
pub struct TemplateLimits {
    /// Digits of the longest code.
    pub code_digits: u8,
    /// How long a code works.
    pub ttl: TimeDelta,
    /// Whether sends may carry an app-hash line (any `--app-hashes` given).
    pub app_hash_line: bool,
    /// Whether a longer text may go out as LMS.
    pub allow_lms: bool,
    /// Whether the provider requires an authentication word (`nhn-sms`).
    pub needs_auth_word: bool,
    /// Whether the provider takes only EUC-KR 완성형 (KS X 1001), narrower than CP949 (`solapi`).
    pub ks_x_1001_only: bool,
}

impl Default for SmsTemplate {
    fn default() -> Self {
        Self { text: DEFAULT_TEMPLATE.to_owned(), brand: String::new(), origin_domain: None }
    }
}

impl SmsTemplate {
    /// Checks `text` (with `brand` and the optional origin domain) against `limits`; the error says why, with the
    /// byte count when it is too long.
    pub fn new(text: &str, brand: &str, origin_domain: Option<&str>, limits: TemplateLimits) -> Result<Self, String> {
        // A flag or an environment variable rarely carries a real line break: `\n` stands for one.
        let text = &text.replace("\\n", "\n");
        if text.matches("{code}").count() != 1 {
            return Err("must contain {code} exactly once".into());
        }
        let rest = text.replace("{code}", "").replace("{minutes}", "").replace("{brand}", "");
        if rest.contains(['{', '}']) {
            return Err("only the placeholders {code}, {minutes} and {brand} are known".into());
        }
        let template = Self { text: text.to_owned(), brand: brand.to_owned(), origin_domain: None };
        let template = match origin_domain {
            Some(domain) => Self { origin_domain: Some(parse_domain(domain)?), ..template },
            None => template,
        };
        // The longest message: the longest code, and an app-hash line when sends may ask for one.
        let longest_code = "0".repeat(usize::from(limits.code_digits));
        let longest_hash = limits.app_hash_line.then_some("A".repeat(11));
        let rendered = template.render_text(&longest_code, limits.ttl, longest_hash.as_deref());
        if let Some(bad) = rendered.chars().find(|c| euc_kr_len(c.encode_utf8(&mut [0; 4])).is_none()) {
            return Err(format!("{bad:?} cannot be encoded in EUC-KR, so the SMS would fail"));
        }
        if limits.ks_x_1001_only
            && let Some(bad) = outside_ks_x_1001(&rendered)
        {
            return Err(format!(
                "{bad:?} (from the template or --brand) is outside EUC-KR 완성형 (KS X 1001), which solapi refuses \
                 (status 1029)"
            ));
        }
        let bytes = euc_kr_len(&rendered).unwrap_or(usize::MAX);
        let lines = "with the app-hash and origin lines it carries";
        if bytes > SMS_BYTES && !limits.allow_lms {
            return Err(format!(
                "renders to {bytes} bytes in EUC-KR ({lines}); one SMS holds {SMS_BYTES}: shorten it or set \
                 --allow-lms"
            ));
        }
        if bytes > LMS_BYTES {
            return Err(format!("renders to {bytes} bytes in EUC-KR ({lines}); an LMS holds {LMS_BYTES}"));
        }
        if limits.needs_auth_word {
            let lower = rendered.to_lowercase();
            if !AUTH_WORDS.iter().any(|word| lower.contains(word)) {
                return Err(format!(
                    "nhn-sms refuses an authentication SMS without one of the words {} (English in any case; \
                     `verification` is not `verify`)",
                    AUTH_WORDS.join(", ")
                ));
            }
        }
        Ok(template)
    }

    /// The message for `code`, valid for `ttl`, with the app-hash line if asked for.
    pub fn render(&self, code: &OtpCode, ttl: TimeDelta, app_hash: Option<&AppHash>) -> SecretString {
        SecretString::from(self.render_text(code.expose(), ttl, app_hash.map(AppHash::as_str)))
    }

    fn render_text(&self, code: &str, ttl: TimeDelta, app_hash: Option<&str>) -> String {
        let minutes = (ttl.num_seconds() + 59) / 60;
        let mut body = self
            .text
            .replace("{brand}", &self.brand)
            .replace("{minutes}", &minutes.to_string())
            .replace("{code}", code);
        if let Some(hash) = app_hash {
            body.push('\n');
            body.push_str(hash);
        }
        if let Some(domain) = &self.origin_domain {
            body.push_str(&format!("\n@{domain} #{code}"));
        }
        body
    }
}

/// A host name for the origin-bound line: lower-case letters, digits, hyphens and dots, with a dot.
fn parse_domain(domain: &str) -> Result<String, String> {
    let domain = domain.trim().to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.len() <= 253 && domain.contains('.') && domain.split('.').all(label_ok) {
        Ok(domain)
    } else {
        Err(format!("`{domain}` is not a host name such as otp.example.com"))
    }
}

/// Renders the default template for `code`, valid for `ttl`.
pub fn render_body(code: &OtpCode, ttl: TimeDelta, app_hash: Option<&AppHash>) -> SecretString {
    SmsTemplate::default().render(code, ttl, app_hash)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::domain::CodeLength;

    fn limits() -> TemplateLimits {
        TemplateLimits {
            code_digits: 8,
            ttl: TimeDelta::minutes(10),
            app_hash_line: true,
            allow_lms: false,
            needs_auth_word: true,
            ks_x_1001_only: false,
        }
    }

    #[test]
    fn body_has_the_code_once_and_a_warning() {
        let code = OtpCode::parse("042917", CodeLength::default()).unwrap();
        let body = render_body(&code, TimeDelta::minutes(3), None);
        let body = body.expose_secret();
        assert_eq!(body.matches("042917").count(), 1);
        assert!(body.contains("타인에게 절대 알려주지 마세요"));
        assert!(body.contains("3분"));
    }

    #[test]
    fn app_hash_is_the_last_line() {
        let code = OtpCode::parse("042917", CodeLength::default()).unwrap();
        let hash = AppHash::parse("FA+9qCX9VSu").unwrap();
        let body = render_body(&code, TimeDelta::minutes(3), Some(&hash));
        assert_eq!(body.expose_secret().lines().last(), Some("FA+9qCX9VSu"));
    }

    #[test]
    fn the_default_fits_one_sms_with_the_longest_code_and_an_app_hash() {
        SmsTemplate::new(DEFAULT_TEMPLATE, "", None, limits()).unwrap();
    }

    #[test]
    fn the_origin_line_comes_last_after_the_app_hash_with_the_same_code() {
        let template = SmsTemplate::new("{brand} 인증 {code}", "카카오T", Some("Otp.Example.com"), limits()).unwrap();
        let code = OtpCode::parse("042917", CodeLength::default()).unwrap();
        let hash = AppHash::parse("FA+9qCX9VSu").unwrap();
        let body = template.render(&code, TimeDelta::minutes(3), Some(&hash));
        let lines: Vec<&str> = body.expose_secret().lines().collect();
        assert_eq!(lines, ["카카오T 인증 042917", "FA+9qCX9VSu", "@otp.example.com #042917"]);
    }

    #[test]
    fn templates_are_checked_for_the_code_the_encoding_the_size_and_the_word() {
        let no_hash = TemplateLimits { app_hash_line: false, needs_auth_word: false, ..limits() };
        // 40 Hangul (80 bytes), a space, the 8-digit code and a full stop: 90 bytes.
        let ninety = format!("{} {{code}}.", "인".repeat(40));
        SmsTemplate::new(&ninety, "", None, no_hash).unwrap();
        let ninety_one = format!("{} {{code}}..", "인".repeat(40));
        let err = SmsTemplate::new(&ninety_one, "", None, no_hash).unwrap_err();
        assert!(err.contains("91 bytes"), "{err}");
        SmsTemplate::new(&ninety_one, "", None, TemplateLimits { allow_lms: true, ..no_hash }).unwrap();
        assert!(SmsTemplate::new("인증 {code} 😀", "", None, no_hash).unwrap_err().contains("EUC-KR"));
        assert!(SmsTemplate::new("인증 {code} {code}", "", None, no_hash).is_err());
        assert!(SmsTemplate::new("인증번호", "", None, no_hash).is_err());
        assert!(SmsTemplate::new("인증 {code} {name}", "", None, no_hash).is_err());
        assert!(SmsTemplate::new("코드 {code}", "", None, limits()).unwrap_err().contains("nhn-sms"));
        // NHN's SMS list has `verify`, not `verif` (that is AlimTalk's).
        assert!(SmsTemplate::new("Your verification code {code}", "", None, limits()).is_err());
        assert!(SmsTemplate::new("Code to verify: {code}", "", None, limits()).is_ok());
        assert!(SmsTemplate::new("にんしょう {code}", "", None, limits()).is_ok());
        assert!(SmsTemplate::new("AUTH {code}", "", None, limits()).is_ok());
        let solapi = TemplateLimits { ks_x_1001_only: true, needs_auth_word: false, ..limits() };
        assert!(SmsTemplate::new("[{brand}] 인증 {code}", "똠양꿍", None, solapi).unwrap_err().contains("1029"));
        SmsTemplate::new("[{brand}] 인증 {code}", "똠양꿍", None, TemplateLimits { ks_x_1001_only: false, ..solapi })
            .unwrap();
        SmsTemplate::new("[{brand}] 인증 {code}", "카카오T", None, solapi).unwrap();
        assert_eq!(outside_ks_x_1001("가나다 abc ①"), None);
        assert_eq!(outside_ks_x_1001("똠"), Some('똠'));
        assert!(SmsTemplate::new("인증 {code}", "", Some("not a domain"), limits()).is_err());
        let two_lines = SmsTemplate::new("인증번호\\n{code}", "", None, limits()).unwrap();
        let code = OtpCode::parse("042917", CodeLength::default()).unwrap();
        assert_eq!(two_lines.render(&code, TimeDelta::minutes(3), None).expose_secret(), "인증번호\n042917");
    }
}
