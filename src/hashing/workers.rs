//! The threads that compute argon2: exactly `--hash-workers` of them, each keeping its own argon2 memory. The most
//! recently idle thread takes the next job, so that at low load one thread with a warm buffer does the work.
//! (tokio's blocking pool, used before, spread consecutive hashes over four threads and their four buffers at
//! concurrency 1; see docs/performance.md.)
//!
//! They run at a lower CPU priority than the rest of the process (`--hash-nice`, 10 by default): argon2 takes all
//! the CPU it is given, and at the same priority it made everything else wait for a core under load: the reactor
//! that answers refusals, health checks and the database's replies. Niced, those short tasks go ahead of the hashes
//! for a core, and the hashes still get every cycle nothing else wants (docs/performance.md, "Clients that retry at
//! once"; `--hash-nice 19` measured the same as 10 there).

use std::any::Any;
use std::sync::{Arc, Mutex, mpsc};

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
    /// Starts `n` threads named `otpd-argon2-N`, each `nice` steps below the priority of the thread that starts them.
    pub(super) fn start(n: usize, nice: u8) -> std::io::Result<Self> {
        let idle = Arc::new(Mutex::new((0..n).rev().collect::<Vec<_>>()));
        let mut senders = Vec::with_capacity(n);
        for index in 0..n {
            let (sender, jobs) = mpsc::channel::<Job>();
            let back = Arc::downgrade(&idle);
            std::thread::Builder::new().name(format!("otpd-argon2-{index}")).spawn(move || {
                lower_priority(nice);
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

/// Lowers the calling thread's priority by `nice` steps (at most to 19). On Linux the nice value belongs to each
/// thread, and `setpriority(PRIO_PROCESS, 0, …)` sets the calling thread's alone. Raising it needs no privilege;
/// where it fails the thread keeps the process's priority and says so.
fn lower_priority(nice: u8) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let lowered = getpriority_process(None)
            .and_then(|now| setpriority_process(None, now.saturating_add(i32::from(nice)).min(19)));
        if let Err(error) = lowered {
            tracing::warn!(%error, nice, "could not lower the hashing thread's priority");
        }
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
        let workers = Workers::start(4, 0).unwrap();
        let first = thread_of(&workers);
        for _ in 0..20 {
            assert_eq!(thread_of(&workers), first);
        }
    }

    #[test]
    fn a_panicking_job_keeps_its_thread() {
        let workers = Workers::start(1, 0).unwrap();
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
        let workers = Workers::start(1, 5).unwrap();
        let (tx, rx) = mpsc::channel();
        let sent = workers.run(job(move || tx.send(rustix::process::getpriority_process(None).unwrap()).unwrap()));
        assert!(sent.is_ok());
        assert_eq!(rx.recv().unwrap(), (own + 5).min(19));
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), own, "the starting thread is unchanged");
    }
}
