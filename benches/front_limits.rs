//! What a front-line limit costs, next to what it saves: one argon2id hash at the default cost (the work a
//! rejected SendCode or VerifyCode no longer does). Run: `cargo bench --bench front_limits`.
//!
//! Each case is timed in 21 samples of many iterations; the report gives the median per operation and its ratio
//! to the argon2 baseline measured in the same run (the machine is noisy; ratios travel better than times).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use otpd::clock::SystemClock;
use otpd::domain::{AllowedCountries, PhoneNumber};
use otpd::limits::{FrontLimits, Limit, LimitSettings};

const SAMPLES: usize = 21;

/// Median nanoseconds per call of `op` over `SAMPLES` samples of `iterations` calls.
fn median_ns(iterations: u32, mut op: impl FnMut(u32)) -> f64 {
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|s| {
            let start = Instant::now();
            for i in 0..iterations {
                op(s as u32 * iterations + i);
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[SAMPLES / 2]
}

fn limits() -> FrontLimits {
    let limit = |rate: &str, burst| Limit { rate: Some(rate.parse().unwrap()), burst };
    let settings = LimitSettings {
        send_per_ip: limit("60/h", 10),
        verify_per_ip: limit("360/h", 30),
        sms_per_prefix: limit("100/h", 20),
        prefix_digits: 7,
        global_sms: limit("20/s", 50),
    };
    FrontLimits::new(&settings, Arc::new(SystemClock))
}

fn main() {
    let argon2 = Argon2::new_with_secret(
        b"benchmark-pepper-0123456789",
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19_456, 2, 1, None).unwrap(),
    )
    .unwrap();
    let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
    let hash = median_ns(5, |_| {
        black_box(argon2.hash_password(black_box(b"123456"), &salt).unwrap());
    });

    let flood = limits();
    let one_ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let same_ip = median_ns(200_000, |_| {
        let _ = black_box(flood.check_send_client(black_box(one_ip)));
    });

    let spread = limits();
    let new_ips = median_ns(50_000, |i| {
        let _ = black_box(spread.check_verify(black_box(Some(IpAddr::V4(Ipv4Addr::from(i))))));
    });

    let prefix = limits();
    let phone = PhoneNumber::parse("010-1234-5678", &AllowedCountries::default()).unwrap();
    let destination = median_ns(200_000, |_| {
        let _ = black_box(prefix.check_send_destination(black_box(&phone)));
    });

    println!("{:<46} {:>14} {:>12}", "case", "median/op", "÷ argon2id");
    for (name, ns) in [
        ("argon2id hash, m=19456 t=2 p=1 (baseline)", hash),
        ("limit: one IP over its limit (flood)", same_ip),
        ("limit: a new IP each call (100k+ keys)", new_ips),
        ("limit: destination prefix + global SMS rate", destination),
    ] {
        println!("{name:<46} {:>11.0} ns {:>12.6}", ns, ns / hash);
    }
}
