//! 100,000 distinct client IPs: the limiters' heap use, measured with a counting allocator (a global allocator
//! applies to a whole binary, so this test has its own). Run with `--nocapture` to see the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use chrono::{TimeDelta, Utc};
use otpd::clock::ManualClock;
use otpd::limits::{FrontLimits, Limit, LimitSettings};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only the byte count is recorded.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The bound the README publishes: at most 128 bytes per live key, and after a cleanup with every key idle, no
/// more than 64 KiB left over.
const BYTES_PER_KEY: isize = 128;
const RESIDUE: isize = 64 * 1024;

#[test]
fn hundred_thousand_client_ips_stay_within_the_stated_bound() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let off = Limit { rate: None, burst: 1 };
    let settings = LimitSettings {
        send_per_ip: Limit { rate: Some("60/h".parse().unwrap()), burst: 10 },
        verify_per_ip: off,
        sms_per_prefix: off,
        prefix_digits: 7,
        global_sms: off,
    };
    let limits = FrontLimits::new(&settings, clock.clone());
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..100_000u32 {
        limits.check_send_client(Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))).unwrap();
    }
    let full = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(limits.tracked_keys(), 100_000);

    // One request per key; 60/h with burst 10 is full again 10 minutes later.
    clock.advance(TimeDelta::minutes(11));
    limits.cleanup();
    let after = LIVE.load(Ordering::Relaxed) - before;
    println!("100000 keys: {full} bytes ({} per key); after cleanup: {after} bytes", full / 100_000);
    assert_eq!(limits.tracked_keys(), 0);
    assert!(full <= 100_000 * BYTES_PER_KEY, "{full} bytes for 100000 keys");
    assert!(after <= RESIDUE, "{after} bytes left after cleanup");
}
