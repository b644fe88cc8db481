//! Who gets the next place in the hashing queue when it is full.
//!
//! A call that finds the queue full waits a short, bounded time (`--hash-admission-wait`, never past its caller's
//! deadline) for a place instead of being refused at once: a client that retries a refusal at once then makes a
//! bounded number of attempts per second instead of thousands, each costing a parse and a refusal. Places freed
//! while calls wait are handed over directly, never raced for:
//!
//! - **Checks first.** A check of a code already sent (VerifyCode, and a team lead's lookup for a driver on the
//!   line) finishes a journey whose SMS is paid for; a refused send costs the driver only a retry. So a waiting
//!   check always goes before a waiting send.
//! - **Fair between clients.** Within a class, waiting calls are served round-robin by client address (keyed as
//!   the front-line limits key it: IPv6 by its /64), so one connection or address retrying at once cannot take every place:
//!   each other client waiting gets a place between two of its.
//!
//! The lock is held only to count and to queue, never across an await.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

/// What a place is for, in the order places are handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Checking a code already sent (VerifyCode), or issuing one for a driver on the line (LookupCode).
    Check,
    /// Hashing a new code for a send.
    Send,
}

/// Who is asking, for fairness: the client's address (None: a caller without one, e.g. a local tool).
pub type ClientKey = Option<IpAddr>;

/// The key of a client address, as the front-line limits key it.
pub fn client_key(client: Option<IpAddr>) -> ClientKey {
    client.map(crate::limits::ip_key)
}

struct Waiter {
    id: u64,
    handover: oneshot::Sender<()>,
}

/// The waiting calls of one class, by client, with the clients in round-robin order.
#[derive(Default)]
struct Waiting {
    turn: VecDeque<ClientKey>,
    by_client: HashMap<ClientKey, VecDeque<Waiter>>,
}

impl Waiting {
    fn push(&mut self, client: ClientKey, waiter: Waiter) {
        let queue = self.by_client.entry(client).or_default();
        if queue.is_empty() {
            self.turn.push_back(client);
        }
        queue.push_back(waiter);
    }

    /// The next client's oldest waiter; the client goes to the back of the round if it has more.
    fn pop(&mut self) -> Option<Waiter> {
        let client = self.turn.pop_front()?;
        let queue = self.by_client.get_mut(&client)?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.by_client.remove(&client);
        } else {
            self.turn.push_back(client);
        }
        waiter
    }

    /// Takes a waiter out (it gave up); false if it is no longer here (it was handed a place).
    fn remove(&mut self, client: ClientKey, id: u64) -> bool {
        let Some(queue) = self.by_client.get_mut(&client) else { return false };
        let Some(at) = queue.iter().position(|w| w.id == id) else { return false };
        queue.remove(at);
        if queue.is_empty() {
            self.by_client.remove(&client);
            self.turn.retain(|c| *c != client);
        }
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_client.values().map(VecDeque::len).sum()
    }
}

#[derive(Default)]
struct State {
    taken: usize,
    next_id: u64,
    checks: Waiting,
    sends: Waiting,
}

impl State {
    fn waiting(&mut self, work: Work) -> &mut Waiting {
        match work {
            Work::Check => &mut self.checks,
            Work::Send => &mut self.sends,
        }
    }
}

/// The places of the hashing queue. Their number may change while calls hold them (the queue is sized from what
/// the workers actually finish): past a lowered limit, places given back go to the pool until the calls that hold
/// them fit; below a raised one, waiting calls get the new places at once.
pub(super) struct Places {
    limit: AtomicUsize,
    wait: Duration,
    state: Mutex<State>,
}

/// Why no place was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoPlace {
    /// None came free within the wait (or the caller's deadline).
    Full,
}

impl Places {
    /// `limit` places; a call waits at most `wait` for one.
    pub(super) fn new(limit: usize, wait: Duration) -> Self {
        Self { limit: AtomicUsize::new(limit.max(1)), wait, state: Mutex::default() }
    }

    pub(super) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Sets the number of places (at least 1).
    pub(super) fn set_limit(&self, limit: usize) {
        let limit = limit.max(1);
        let mut state = self.lock();
        self.limit.store(limit, Ordering::Relaxed);
        while state.taken < limit {
            let Some(waiter) = state.checks.pop().or_else(|| state.sends.pop()) else { break };
            if waiter.handover.send(()).is_ok() {
                state.taken += 1;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a place for `work` of `client`, waiting at most the admission wait and never past `deadline`.
    pub(super) async fn take(
        &self,
        work: Work,
        client: ClientKey,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), NoPlace> {
        let (id, handed_over) = {
            let mut state = self.lock();
            let nobody_waits = state.checks.turn.is_empty() && state.sends.turn.is_empty();
            if state.taken < self.limit() && nobody_waits {
                state.taken += 1;
                return Ok(());
            }
            if self.wait.is_zero() {
                return Err(NoPlace::Full);
            }
            state.next_id += 1;
            let id = state.next_id;
            let (handover, handed_over) = oneshot::channel();
            state.waiting(work).push(client, Waiter { id, handover });
            (id, handed_over)
        };
        // Until it resolves, a cancelled call (its client gone) must not leave its waiter behind.
        let mut guard = Leave { places: self, work, client, id, armed: true };
        let until = tokio::time::Instant::now() + self.wait;
        let until = deadline.map_or(until, |deadline| deadline.min(until));
        let outcome = tokio::time::timeout_at(until, handed_over).await;
        guard.armed = false;
        match outcome {
            Ok(Ok(())) => Ok(()),
            // Timed out (or the sender vanished, which only happens with the waiter taken out): leave the queue,
            // unless a place was handed over meanwhile, which is then ours.
            _ => {
                if self.lock().waiting(work).remove(client, id) {
                    Err(NoPlace::Full)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Gives a place back: to the next waiting call (checks first, clients in turn), or to the pool (always, while
    /// more are taken than the limit allows).
    pub(super) fn give_back(&self) {
        let mut state = self.lock();
        if state.taken > self.limit() {
            state.taken -= 1;
            return;
        }
        loop {
            let next = state.checks.pop().or_else(|| state.sends.pop());
            match next {
                // The place passes on, still taken. A waiter whose call has gone cannot take it: try the next.
                Some(waiter) => {
                    if waiter.handover.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    state.taken = state.taken.saturating_sub(1);
                    return;
                }
            }
        }
    }

    /// Places taken and calls waiting.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.taken, state.checks.len() + state.sends.len())
    }
}

/// Takes a waiter out of the queue if its call is dropped while it waits; if a place was handed to it meanwhile,
/// gives that back.
struct Leave<'a> {
    places: &'a Places,
    work: Work,
    client: ClientKey,
    id: u64,
    armed: bool,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if self.armed {
            let removed = self.places.lock().waiting(self.work).remove(self.client, self.id);
            if !removed {
                self.places.give_back();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ip(n: u8) -> ClientKey {
        Some(IpAddr::from([192, 0, 2, n]))
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_after_the_wait_and_never_past_the_deadline() {
        let places = Places::new(1, Duration::from_millis(50));
        places.take(Work::Send, ip(1), None).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(places.take(Work::Send, ip(1), None).await, Err(NoPlace::Full));
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        let started = tokio::time::Instant::now();
        assert_eq!(places.take(Work::Check, ip(2), Some(deadline)).await, Err(NoPlace::Full));
        assert_eq!(started.elapsed(), Duration::from_millis(20), "the caller's deadline comes first");
        assert_eq!(places.counts(), (1, 0), "nobody left waiting");
        let none = Places::new(1, Duration::ZERO);
        none.take(Work::Send, None, None).await.unwrap();
        assert_eq!(none.take(Work::Send, None, None).await, Err(NoPlace::Full), "no wait: refused at once");
    }

    /// Runs `take` for each of `calls` (in that order of arrival), frees one place at a time, and returns the order
    /// in which they were served.
    async fn served_order(calls: &[(Work, ClientKey)]) -> Vec<usize> {
        let places = Arc::new(Places::new(1, Duration::from_secs(60)));
        places.take(Work::Send, None, None).await.unwrap();
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, (work, client)) in calls.iter().copied().enumerate() {
            let (places, served) = (Arc::clone(&places), Arc::clone(&served));
            tasks.push(tokio::spawn(async move {
                places.take(work, client, None).await.unwrap();
                served.lock().unwrap().push(i);
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(places.counts(), (1, calls.len()));
        for _ in calls {
            places.give_back();
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        served.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn places_go_to_checks_first_then_round_robin_between_clients() {
        use Work::{Check, Send};
        // A storm of sends from one address, then a send from another, then a check.
        let calls = [(Send, ip(1)), (Send, ip(1)), (Send, ip(1)), (Send, ip(2)), (Send, ip(1)), (Check, ip(1))];
        assert_eq!(served_order(&calls).await, [5, 0, 3, 1, 2, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_limit_hands_new_places_to_waiters_and_shrinks_as_places_come_back() {
        let places = Arc::new(Places::new(2, Duration::from_secs(60)));
        places.take(Work::Send, ip(1), None).await.unwrap();
        places.take(Work::Send, ip(1), None).await.unwrap();
        let waiting: Vec<_> = (0..3)
            .map(|n| {
                let places = Arc::clone(&places);
                tokio::spawn(async move { places.take(Work::Check, ip(n), None).await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(places.counts(), (2, 3));
        places.set_limit(4);
        assert_eq!(places.counts(), (4, 1), "two waiters got the two new places at once");
        places.set_limit(1);
        places.give_back();
        places.give_back();
        assert_eq!(places.counts(), (2, 1), "over the limit, places go back to the pool, not to the waiter");
        places.give_back();
        assert_eq!(places.counts(), (1, 1));
        places.give_back();
        assert_eq!(places.counts(), (1, 0), "at the limit, a place given back is handed over");
        for task in waiting {
            assert!(task.await.unwrap().is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_dropped_while_waiting_leaves_no_trace() {
        let places = Places::new(1, Duration::from_secs(60));
        places.take(Work::Send, None, None).await.unwrap();
        let waiting = places.take(Work::Send, ip(1), None);
        assert!(tokio::time::timeout(Duration::from_millis(10), waiting).await.is_err());
        assert_eq!(places.counts(), (1, 0));
        places.give_back();
        assert_eq!(places.counts(), (0, 0), "the place went back to the pool, not to the gone call");
    }
}
