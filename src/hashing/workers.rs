//! The threads that compute argon2: exactly `--hash-workers` of them, each keeping its own argon2 memory. The most
//! recently idle thread takes the next job, so that at low load one thread with a warm buffer does the work.
//! (tokio's blocking pool, used before, spread consecutive hashes over four threads and their four buffers at
//! concurrency 1; see docs/performance.md.)
//!
//! They run below the rest of the process (`--hash-nice`): argon2 takes all the CPU it is given, and at the same
//! priority it made everything else wait for a core under load: the reactor that answers refusals, health checks
//! and the database's replies (docs/performance.md, "Clients that retry at once"). By default they run under
//! Linux's `SCHED_IDLE`: a hash gets every cycle the rest of the process leaves, and gives its core up the moment
//! one of those short tasks wakes. Niced instead (10 steps, the default before), a waking task could still wait for
//! the hash's time slice to run out: refusals at 512 in flight came back about 2 ms later at p99, and calls reached
//! the service later (docs/performance.md, "Sixth window"). The price is a share: a niced hash keeps about a tenth
//! of a core the rest of the process wants wholly, an idle one almost nothing. `SCHED_IDLE` yields only to threads
//! of the same cgroup (a container or a systemd service is one), so other processes do not starve the hashes.

use std::any::Any;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, mpsc};

/// How the hashing threads are scheduled against the rest of the process (`--hash-nice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashPriority {
    /// `SCHED_IDLE` (Linux): a hash runs on a core only while no other thread of the process wants it.
    Idle,
    /// This many steps of nice (1 to 19) below the thread that starts them; 0: the same priority.
    Nice(u8),
}

impl FromStr for HashPriority {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value == "idle" {
            return Ok(Self::Idle);
        }
        match value.parse::<u8>() {
            Ok(steps) if steps <= 19 => Ok(Self::Nice(steps)),
            _ => Err(format!("`{value}` is neither `idle` nor a number of nice steps from 0 to 19")),
        }
    }
}

impl fmt::Display for HashPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Idle => f.write_str("idle"),
            Self::Nice(steps) => write!(f, "{steps}"),
        }
    }
}

/// A computation. It returns what must stay held (the queue place and the worker permit) until its thread is back
/// among the idle ones, so that a freed permit always finds an idle thread.
pub(super) type Job = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

/// The hashing threads. Dropping it lets them finish their current job and exit.
pub(super) struct Workers {
    senders: Vec<mpsc::Sender<Job>>,
    /// Idle threads by index, the most recently idle last.
    idle: Arc<Mutex<Vec<usize>>>,
}

impl Workers {
    /// Starts `n` threads named `otpd-argon2-N`, each scheduled at `priority` below the thread that starts them.
    pub(super) fn start(n: usize, priority: HashPriority) -> std::io::Result<Self> {
        let idle = Arc::new(Mutex::new((0..n).rev().collect::<Vec<_>>()));
        let mut senders = Vec::with_capacity(n);
        for index in 0..n {
            let (sender, jobs) = mpsc::channel::<Job>();
            let back = Arc::downgrade(&idle);
            std::thread::Builder::new().name(format!("otpd-argon2-{index}")).spawn(move || {
                lower_priority(priority);
                while let Ok(job) = jobs.recv() {
                    // A panicking job drops what it holds while unwinding; the thread stays.
                    let held = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    let Some(idle) = back.upgrade() else { return };
                    idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(index);
                    drop(held);
                }
            })?;
            senders.push(sender);
        }
        Ok(Self { senders, idle })
    }

    /// Hands `job` to the most recently idle thread, or gives it back when none is idle (the caller holds a
    /// permit, so that only happens if a thread has died).
    pub(super) fn run(&self, job: Job) -> Result<(), Job> {
        let index = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let Some(index) = index else { return Err(job) };
        self.senders[index].send(job).map_err(|mpsc::SendError(job)| job)
    }
}

/// Lowers the calling thread's priority. On Linux the scheduling policy and the nice value belong to each thread:
/// `sched_setscheduler(0, …)` and `setpriority(PRIO_PROCESS, 0, …)` set the calling thread's alone. Lowering either
/// needs no privilege; where it fails the thread keeps the process's priority and says so.
fn lower_priority(priority: HashPriority) {
    #[cfg(target_os = "linux")]
    let lowered = match priority {
        HashPriority::Nice(0) => return,
        HashPriority::Nice(steps) => {
            use rustix::process::{getpriority_process, setpriority_process};
            getpriority_process(None)
                .and_then(|now| setpriority_process(None, now.saturating_add(i32::from(steps)).min(19)))
                .map_err(std::io::Error::from)
        }
        HashPriority::Idle => {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `param` is a valid `sched_param` that outlives the call, which only reads it; pid 0 is the
            // calling thread.
            let failed = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) } != 0;
            if failed { Err(std::io::Error::last_os_error()) } else { Ok(()) }
        }
    };
    #[cfg(target_os = "linux")]
    if let Err(error) = lowered {
        tracing::warn!(%error, %priority, "could not lower the hashing thread's priority");
    }
    #[cfg(not(target_os = "linux"))]
    if priority != HashPriority::Nice(0) {
        tracing::warn!(%priority, "the hashing threads run at the process's priority on this system");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(f: impl FnOnce() + Send + 'static) -> Job {
        Box::new(move || {
            f();
            Box::new(())
        })
    }

    fn thread_of(workers: &Workers) -> String {
        let (tx, rx) = mpsc::channel();
        let sent = workers.run(job(move || tx.send(std::thread::current().name().unwrap().to_owned()).unwrap()));
        assert!(sent.is_ok());
        let name = rx.recv().unwrap();
        // Wait until the thread is idle again before the next job.
        while workers.idle.lock().unwrap().len() < workers.senders.len() {
            std::thread::yield_now();
        }
        name
    }

    #[test]
    fn one_job_at_a_time_stays_on_one_warm_thread() {
        let workers = Workers::start(4, HashPriority::Nice(0)).unwrap();
        let first = thread_of(&workers);
        for _ in 0..20 {
            assert_eq!(thread_of(&workers), first);
        }
    }

    #[test]
    fn a_panicking_job_keeps_its_thread() {
        let workers = Workers::start(1, HashPriority::Nice(0)).unwrap();
        assert!(workers.run(job(|| panic!("a bug in a job"))).is_ok());
        while workers.idle.lock().unwrap().is_empty() {
            std::thread::yield_now();
        }
        assert_eq!(thread_of(&workers), "otpd-argon2-0");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_threads_run_niced_below_the_starting_thread() {
        let own = rustix::process::getpriority_process(None).unwrap();
        let workers = Workers::start(1, HashPriority::Nice(5)).unwrap();
        let (tx, rx) = mpsc::channel();
        let sent = workers.run(job(move || tx.send(rustix::process::getpriority_process(None).unwrap()).unwrap()));
        assert!(sent.is_ok());
        assert_eq!(rx.recv().unwrap(), (own + 5).min(19));
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), own, "the starting thread is unchanged");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn idle_threads_run_under_sched_idle_and_the_starting_thread_does_not() {
        // SAFETY (both calls): pid 0 is the calling thread; nothing is passed by pointer.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let own = policy();
        let workers = Workers::start(1, HashPriority::Idle).unwrap();
        let (tx, rx) = mpsc::channel();
        assert!(workers.run(job(move || tx.send(policy()).unwrap())).is_ok());
        assert_eq!(rx.recv().unwrap(), libc::SCHED_IDLE);
        assert_eq!(policy(), own, "the starting thread is unchanged");
    }

    #[test]
    fn the_priority_is_idle_or_nice_steps() {
        assert_eq!("idle".parse(), Ok(HashPriority::Idle));
        assert_eq!("0".parse(), Ok(HashPriority::Nice(0)));
        assert_eq!("19".parse(), Ok(HashPriority::Nice(19)));
        for wrong in ["20", "-1", "Idle", ""] {
            assert!(wrong.parse::<HashPriority>().is_err(), "{wrong}");
        }
        for value in ["idle", "10"] {
            assert_eq!(value.parse::<HashPriority>().unwrap().to_string(), value);
        }
    }
}
