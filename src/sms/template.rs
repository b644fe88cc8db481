//! The SMS text: Korean, the code exactly once, a do-not-share warning, and optionally the Android SMS Retriever
//! hash as the last line.

use chrono::TimeDelta;
use secrecy::SecretString;

use crate::domain::{AppHash, OtpCode};

/// Renders the message body for `code`, valid for `ttl`.
pub fn render_body(code: &OtpCode, ttl: TimeDelta, app_hash: Option<&AppHash>) -> SecretString {
    let minutes = (ttl.num_seconds() + 59) / 60;
    let mut body = format!(
        "[인증번호] {code}\n{minutes}분 안에 입력해 주세요. 타인에게 절대 알려주지 마세요.",
        code = code.expose()
    );
    if let Some(hash) = app_hash {
        body.push('\n');
        body.push_str(hash.as_str());
    }
    SecretString::from(body)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::domain::CodeLength;

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
}
