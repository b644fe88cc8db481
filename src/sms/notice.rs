//! The notice a driver gets after every granted lookup (`--lookup-notice-template`): a team lead read a code out
//! for their number, and whom to call if they did not ask. It never holds a code (the template has no `{code}`
//! and is fixed at start-up), so it cannot be used to sign in, and a lookup the driver did not ask for does not
//! go unnoticed.

use super::template::{SMS_BYTES, euc_kr_len};

/// The default text (`{brand}` and `{support}` filled in at start-up).
pub const DEFAULT_NOTICE: &str =
    "[{brand}] 고객센터에서 인증번호를 안내했습니다. 요청하지 않으셨다면 {support}로 연락해 주세요.";

/// A checked notice, rendered once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupNotice {
    text: String,
}

impl LookupNotice {
    /// Checks `template` with `brand` and `support` (the number a driver calls): only `{brand}` and `{support}`
    /// are known, never `{code}`; EUC-KR; one SMS (90 bytes). An empty brand drops the `[{brand}] ` prefix.
    pub fn new(template: &str, brand: &str, support: &str) -> Result<Self, String> {
        let template = template.replace("\\n", "\n");
        if template.contains("{code}") {
            return Err("a notice never carries a code: remove {code}".into());
        }
        let rest = template.replace("{brand}", "").replace("{support}", "");
        if rest.contains(['{', '}']) {
            return Err("only the placeholders {brand} and {support} are known".into());
        }
        let template = if brand.is_empty() { template.replace("[{brand}] ", "") } else { template };
        let text = template.replace("{brand}", brand).replace("{support}", support);
        if text.trim().is_empty() {
            return Err("the notice is empty".into());
        }
        if let Some(bad) = text.chars().find(|c| euc_kr_len(c.encode_utf8(&mut [0; 4])).is_none()) {
            return Err(format!("{bad:?} cannot be encoded in EUC-KR, so the SMS would fail"));
        }
        let bytes = euc_kr_len(&text).unwrap_or(usize::MAX);
        if bytes > SMS_BYTES {
            return Err(format!("renders to {bytes} bytes in EUC-KR; one SMS holds {SMS_BYTES}: shorten it"));
        }
        Ok(Self { text })
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its length in EUC-KR bytes.
    pub fn bytes(&self) -> usize {
        euc_kr_len(&self.text).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_notice_fits_one_sms_and_holds_no_code() {
        let notice = LookupNotice::new(DEFAULT_NOTICE, "", "1800-3400").unwrap();
        assert_eq!(
            notice.text(),
            "고객센터에서 인증번호를 안내했습니다. 요청하지 않으셨다면 1800-3400로 연락해 주세요."
        );
        assert_eq!(notice.bytes(), 84);
        let branded = LookupNotice::new(DEFAULT_NOTICE, "T", "1800-3400").unwrap();
        assert_eq!((branded.text().starts_with("[T] 고객센터"), branded.bytes()), (true, 88));
        // A four-letter brand takes the default past one SMS: refused at start-up, with the count.
        let long = LookupNotice::new(DEFAULT_NOTICE, "카카오T", "1800-3400").unwrap_err();
        assert!(long.contains("94 bytes"), "{long}");
        assert!(LookupNotice::new("{code} 안내", "", "1").unwrap_err().contains("{code}"));
        assert!(LookupNotice::new("{x}", "", "1").is_err());
        assert!(LookupNotice::new(&"가".repeat(46), "", "1").unwrap_err().contains("92 bytes"));
        assert!(LookupNotice::new("😀", "", "1").is_err());
    }
}
