//! The pieces of a call, one by one (criterion): code generation, phone parsing, one hash and one check at the
//! default argon2 cost, a keyed limiter check among 100,000 keys, the SMS template; and argon2's own allocating
//! hash beside otpd's, which reuses its memory, at 32 MiB. Run: `cargo bench --bench otp` (a filter narrows it,
//! e.g. `cargo bench --bench otp -- argon2`).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, Version};
use chrono::TimeDelta;
use clap::Parser;
use criterion::{Criterion, criterion_group, criterion_main};
use otpd::clock::SystemClock;
use otpd::domain::{AllowedCountries, CodeLength, OtpCode, PhoneNumber};
use otpd::hashing::{Argon2Params, CodeHasher, Pepper, QueueLimit, Work};
use otpd::limits::FrontLimits;
use otpd::sms::render_body;

const PEPPER: &[u8] = b"benchmark-pepper-0123456789";

fn hasher(memory_kib: u32) -> CodeHasher {
    let params = Argon2Params { memory_kib, ..Argon2Params::default() };
    CodeHasher::new(Pepper::new(PEPPER.to_vec()).unwrap(), params, 1, 0, QueueLimit::Fixed(64)).unwrap()
}

fn small(c: &mut Criterion) {
    let countries = AllowedCountries::default();
    c.bench_function("code generation", |b| b.iter(|| black_box(OtpCode::generate(CodeLength::default()))));
    c.bench_function("phone parsing", |b| {
        b.iter(|| black_box(PhoneNumber::parse(black_box("010-1234-5678"), &countries).unwrap()))
    });
    let code = OtpCode::parse("482913", CodeLength::default()).unwrap();
    c.bench_function("sms template", |b| b.iter(|| black_box(render_body(&code, TimeDelta::minutes(3), None))));

    // The published defaults, as `otpd` with no settings has them.
    let config = otpd::config::Cli::try_parse_from(["otpd"]).unwrap().settings.validate().unwrap();
    let limits = FrontLimits::new(&config.limits, Arc::new(SystemClock));
    let ip = |n: u32| Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)));
    for n in 0..100_000 {
        let _ = limits.check_verify(ip(n));
    }
    let mut n = 0;
    c.bench_function("verify limiter check, 100k keys", |b| {
        b.iter(|| {
            n = (n + 7919) % 100_000;
            black_box(limits.check_verify(ip(n)))
        })
    });
}

fn argon2(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let code = OtpCode::parse("482913", CodeLength::default()).unwrap();
    let wrong = OtpCode::parse("482914", CodeLength::default()).unwrap();
    let mut group = c.benchmark_group("argon2");
    group.sample_size(20);

    let default = hasher(Argon2Params::default().memory_kib);
    group.bench_function("hash, default cost (19 MiB, t=2)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                default.hash(default.admit(Work::Send, None, None).await.unwrap(), &code, None).await.unwrap()
            })
        })
    });
    let stored = runtime
        .block_on(async { default.hash(default.admit(Work::Send, None, None).await.unwrap(), &code, None).await })
        .unwrap();
    group.bench_function("check a wrong code, default cost", |b| {
        b.iter(|| {
            runtime.block_on(async {
                default
                    .find_match(default.admit(Work::Send, None, None).await.unwrap(), &wrong, vec![stored.clone()])
                    .await
                    .unwrap()
            })
        })
    });

    // At 32 MiB: argon2's own hash allocates and zeroes its memory every time; otpd's keeps it per thread.
    let params = Params::new(32_768, 2, 1, None).unwrap();
    let fresh = Argon2::new_with_secret(PEPPER, Algorithm::Argon2id, Version::V0x13, params).unwrap();
    group.bench_function("hash 32 MiB, fresh memory each time (argon2)", |b| {
        let mut out = [0u8; 32];
        b.iter(|| fresh.hash_password_into(b"482913", b"a salt of 16 byt", &mut out).unwrap())
    });
    group.bench_function("hash 32 MiB, reused memory (argon2)", |b| {
        let mut out = [0u8; 32];
        let mut memory = vec![argon2::Block::default(); 32_768];
        b.iter(|| fresh.hash_password_into_with_memory(b"482913", b"a salt of 16 byt", &mut out, &mut memory).unwrap())
    });
    let reusing = hasher(32_768);
    group.bench_function("hash 32 MiB, reused memory (otpd)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                reusing.hash(reusing.admit(Work::Send, None, None).await.unwrap(), &code, None).await.unwrap()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, small, argon2);
criterion_main!(benches);
