//! Property tests of the domain's pure rules, over generated inputs: a number's spellings, its mask, and the send
//! policy's caps and cooldown.

use chrono::{DateTime, TimeDelta, Utc};
use otpd::domain::{AllowedCountries, PhoneNumber, Policy, SendHistory, SentSms};
use proptest::prelude::*;

/// The eight subscriber digits of a Korean mobile number `010-XXXX-XXXX` whose first digit libphonenumber's
/// mobile pattern accepts after `10` (not 5: `105…` is a range of its own).
fn subscriber() -> impl Strategy<Value = String> {
    ("[2346789]", "[0-9]{7}").prop_map(|(first, rest)| format!("{first}{rest}"))
}

proptest! {
    // A failing case is printed with its minimal input; nothing is written into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_accepted_spelling_of_a_number_is_the_same_e164(digits in subscriber()) {
        let allowed = AllowedCountries::default();
        let (a, b) = digits.split_at(4);
        let spellings = [
            format!("010-{a}-{b}"),
            format!("010{a}{b}"),
            format!("+82 10 {a} {b}"),
            format!("+82-10-{a}-{b}"),
            format!("+821{0}{a}{b}", 0),
            format!("(010) {a}-{b}"),
            format!("  010.{a}.{b}  "),
        ];
        let expected = format!("+8210{digits}");
        for spelling in &spellings {
            let parsed = PhoneNumber::parse(spelling, &allowed);
            prop_assert!(parsed.is_ok(), "{spelling:?}: {parsed:?}");
            let e164 = parsed.unwrap().e164().to_owned();
            prop_assert_eq!(&e164, &expected, "{:?}", spelling);
        }
    }

    #[test]
    fn a_mask_never_shows_more_than_the_first_two_and_last_four_national_digits(digits in subscriber()) {
        let number = PhoneNumber::parse(&format!("010{digits}"), &AllowedCountries::default()).unwrap();
        let masked = number.masked();
        // Display and Debug show the mask too, so logs cannot show more.
        prop_assert_eq!(masked.to_owned(), number.to_string());
        prop_assert_eq!(format!("{number:?}"), format!("PhoneNumber({masked})"));
        let national = masked.strip_prefix("+82").unwrap();
        let shown: String = national.chars().filter(char::is_ascii_digit).collect();
        prop_assert_eq!(shown, format!("10{}", &digits[4..]));
        prop_assert_eq!(national.chars().filter(|c| *c == '*').count(), 4);
    }

    /// Sends attempted at arbitrary gaps, some failing at the provider: whatever the policy allows is recorded,
    /// whatever it refuses is not, and the record never breaks the caps or the cooldown.
    #[test]
    fn the_send_policy_never_lets_the_caps_or_the_cooldown_be_broken(
        // Gaps from bursts (seconds) to quiet spells (an hour or so), so that the cooldown, both caps and their
        // windows rolling over are all reached.
        attempts in prop::collection::vec((prop_oneof![0i64..90, 0i64..5_000], any::<bool>()), 1..80),
    ) {
        let policy = Policy::default();
        let start = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let (mut history, mut now) = (SendHistory::default(), start);
        for (gap, fails) in attempts {
            now += TimeDelta::seconds(gap);
            let before = history.sent.len();
            match policy.check_send(&history, now) {
                Ok(allowance) => {
                    history.sent.push(SentSms { at: now, failed: fails });
                    let used = |window| history.sent.iter().filter(|s| s.at > now - window).count() as u32;
                    prop_assert!(used(TimeDelta::hours(1)) <= policy.max_sends_per_hour);
                    prop_assert!(used(TimeDelta::days(1)) <= policy.max_sends_per_day);
                    let remaining = (policy.max_sends_per_hour - used(TimeDelta::hours(1)))
                        .min(policy.max_sends_per_day - used(TimeDelta::days(1)));
                    prop_assert_eq!(allowance.sends_remaining, remaining);
                    prop_assert!(allowance.resend_available_at >= now + policy.resend_cooldown);
                }
                Err(_) => prop_assert_eq!(history.sent.len(), before, "a refused send is never recorded"),
            }
            let delivered: Vec<_> = history.sent.iter().filter(|s| !s.failed).map(|s| s.at).collect();
            for pair in delivered.windows(2) {
                prop_assert!(pair[1] - pair[0] >= policy.resend_cooldown, "sends closer than the cooldown");
            }
        }
    }
}
