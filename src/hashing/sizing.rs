//! The default number of hashing workers, from the container the process runs in: the cgroup v2 CPU quota
//! (`cpu.max`), bounded by the cgroup memory limit (`memory.max`), else the CPUs the process may run on.
//!
//! Without this a pod with no CPU limit starts one worker per core of its node, each keeping its argon2 memory:
//! 64 workers, over 1.2 GB, on a 64-core node. The memory formula (docs/operations.md):
//! resident ≈ [`BASE_BYTES`] + workers × (argon2 memory + [`WORKER_OVERHEAD_BYTES`]).

use std::path::Path;

/// What the process holds besides the workers: code, runtime, pools, buffers and room for connections
/// (measured about 27 MB with one worker's memory taken off; doubled for headroom).
pub const BASE_BYTES: u64 = 64 * 1024 * 1024;
/// What a worker holds besides its argon2 memory: its thread stack and allocator arenas (measured under 1 MiB).
pub const WORKER_OVERHEAD_BYTES: u64 = 1024 * 1024;

/// The chosen worker count and why, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizing {
    /// Workers to start (at least 1).
    pub workers: usize,
    /// How the count was chosen.
    pub reason: String,
}

/// Bytes one worker adds to the process: its argon2 memory plus overhead.
pub fn bytes_per_worker(argon2_memory_kib: u32) -> u64 {
    u64::from(argon2_memory_kib) * 1024 + WORKER_OVERHEAD_BYTES
}

/// The CPUs a `cpu.max` line ("QUOTA PERIOD", or "max PERIOD" for no limit) grants, rounded down, at least 1;
/// None when there is no limit or the line is not understood.
pub fn cpus_from_cpu_max(cpu_max: &str) -> Option<usize> {
    let mut fields = cpu_max.split_whitespace();
    let quota = fields.next()?;
    let period: u64 = fields.next().map_or(Some(100_000), |p| p.parse().ok())?;
    if quota == "max" || period == 0 {
        return None;
    }
    let quota: u64 = quota.parse().ok()?;
    usize::try_from(quota / period).ok().map(|cpus| cpus.max(1))
}

/// The limit in a `memory.max` file ("max" for none).
pub fn bytes_from_memory_max(memory_max: &str) -> Option<u64> {
    let value = memory_max.trim();
    if value == "max" { None } else { value.parse().ok() }
}

/// The worker count from the cgroup files' contents (None where a file is absent), the CPUs the process may run
/// on, and one worker's bytes.
pub fn choose(cpu_max: Option<&str>, memory_max: Option<&str>, visible_cpus: usize, per_worker: u64) -> Sizing {
    let visible_cpus = visible_cpus.max(1);
    let (cpus, mut reason) = match cpu_max.and_then(cpus_from_cpu_max) {
        Some(quota) if quota < visible_cpus => {
            (quota, format!("cgroup CPU quota {} allows {quota} CPU(s)", cpu_max.unwrap_or_default().trim()))
        }
        _ => (visible_cpus, format!("{visible_cpus} CPU(s) available, no lower cgroup CPU quota")),
    };
    let mut workers = cpus;
    if let Some(limit) = memory_max.and_then(bytes_from_memory_max) {
        let fit = limit.saturating_sub(BASE_BYTES) / per_worker.max(1);
        let fit = usize::try_from(fit).unwrap_or(usize::MAX).max(1);
        if fit < workers {
            workers = fit;
            reason = format!(
                "{reason}; bounded by the cgroup memory limit {limit} bytes: ({limit} - {BASE_BYTES}) / {per_worker} \
                 bytes per worker = {fit}"
            );
        } else {
            reason = format!("{reason}; the cgroup memory limit {limit} bytes fits them");
        }
    }
    Sizing { workers, reason }
}

/// The cgroup v2 directory of this process: `/sys/fs/cgroup` plus the path in `/proc/self/cgroup` (inside a
/// container's cgroup namespace that path is `/`).
fn cgroup_dir() -> std::path::PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    let own = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("0::").map(|path| path.trim().trim_start_matches('/').to_owned()))
    });
    match own {
        Some(path) if !path.is_empty() && root.join(&path).join("cpu.max").exists() => root.join(path),
        _ => root.to_path_buf(),
    }
}

/// The worker count for this process, from its cgroup's files.
pub fn from_container(argon2_memory_kib: u32) -> Sizing {
    let dir = cgroup_dir();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let visible = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    choose(read("cpu.max").as_deref(), read("memory.max").as_deref(), visible, bytes_per_worker(argon2_memory_kib))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_WORKER: u64 = 20 * 1024 * 1024;

    #[test]
    fn the_cpu_quota_is_rounded_down_and_at_least_one() {
        assert_eq!(cpus_from_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(cpus_from_cpu_max("150000 100000"), Some(1));
        assert_eq!(cpus_from_cpu_max("50000 100000"), Some(1));
        assert_eq!(cpus_from_cpu_max("max 100000"), None);
        assert_eq!(cpus_from_cpu_max("garbage"), None);
        assert_eq!(cpus_from_cpu_max(""), None);
        assert_eq!(cpus_from_cpu_max("100000 0"), None);
    }

    #[test]
    fn memory_max_is_bytes_or_no_limit() {
        assert_eq!(bytes_from_memory_max("536870912\n"), Some(536_870_912));
        assert_eq!(bytes_from_memory_max("max\n"), None);
        assert_eq!(bytes_from_memory_max("lots"), None);
    }

    #[test]
    fn a_pod_without_limits_uses_every_visible_cpu() {
        let sizing = choose(Some("max 100000"), Some("max"), 64, PER_WORKER);
        assert_eq!(sizing.workers, 64);
        let sizing = choose(None, None, 8, PER_WORKER);
        assert_eq!(sizing.workers, 8);
        assert!(sizing.reason.contains("8 CPU(s) available"), "{}", sizing.reason);
    }

    #[test]
    fn the_cpu_quota_wins_over_the_node_cores() {
        let sizing = choose(Some("400000 100000"), Some("max"), 64, PER_WORKER);
        assert_eq!(sizing.workers, 4);
        assert!(sizing.reason.contains("cgroup CPU quota 400000 100000"), "{}", sizing.reason);
        // A quota above the CPUs the process may run on does not add workers.
        assert_eq!(choose(Some("1600000 100000"), None, 4, PER_WORKER).workers, 4);
    }

    #[test]
    fn the_memory_limit_bounds_the_workers() {
        // 256 MiB: (256 - 64) / 20 = 9 workers, not 64.
        let sizing = choose(Some("max 100000"), Some("268435456"), 64, PER_WORKER);
        assert_eq!(sizing.workers, 9);
        assert!(sizing.reason.contains("bounded by the cgroup memory limit 268435456"), "{}", sizing.reason);
        // A limit that fits the quota's workers leaves them.
        assert_eq!(choose(Some("200000 100000"), Some("1073741824"), 64, PER_WORKER).workers, 2);
        // A limit below the base still starts one worker.
        assert_eq!(choose(None, Some("33554432"), 8, PER_WORKER).workers, 1);
    }

    #[test]
    fn a_worker_is_its_argon2_memory_plus_overhead() {
        assert_eq!(bytes_per_worker(19_456), 19_456 * 1024 + WORKER_OVERHEAD_BYTES);
    }
}
