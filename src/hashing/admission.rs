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
//! - **A client's newest call first once the line stops draining** (adaptive LIFO, as in Maurer, "Fail at Scale",
//!   ACM Queue 13(8), 2015). While every waiter of a class gets a place within its wait, a client's calls are served
//!   in arrival order. Once one has been refused at the end of its wait within the last wait, the line is longer
//!   than the workers clear within a wait: under a sustained storm some waiters are refused whatever the order, and
//!   a place handed to the oldest serves a call that has already spent its wait. So each client's newest call goes
//!   first instead, and a served call waits briefly instead of a whole wait. The round between clients still goes
//!   forward, so the order between clients (each waiting with one call, say) stays arrival order.
//! - **Refusals in batches, by one sweeper.** A wait ends on a grid of an eighth of the wait (never later than the
//!   wait), and one task, the sweeper, ends every wait due at a step in one pass: a waiting call holds no timer of
//!   its own, and the calls refused within one step are answered in one wake-up of the runtime instead of one each.
//!   A client that retries at once so costs the server less per refusal. A call whose caller's deadline comes
//!   before its wait's end keeps a timer of its own for that deadline (rare: a deadline shorter than the wait).
//!
//! The lock is held only to count and to queue, never across an await.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
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
    /// True: a place is handed over; false: the wait ended without one (the sweeper's answer).
    handover: oneshot::Sender<bool>,
}

/// The waiting calls of one class, by client, with the clients in round-robin order.
#[derive(Default)]
struct Waiting {
    turn: VecDeque<ClientKey>,
    by_client: HashMap<ClientKey, VecDeque<Waiter>>,
    /// When a waiter of this class last went without a place.
    refused_at: Option<tokio::time::Instant>,
}

impl Waiting {
    fn push(&mut self, client: ClientKey, waiter: Waiter) {
        let queue = self.by_client.entry(client).or_default();
        if queue.is_empty() {
            self.turn.push_back(client);
        }
        queue.push_back(waiter);
    }

    /// The next client's oldest waiter, or (`newest`) its newest; the client goes to the back of the round if it
    /// has more.
    fn pop(&mut self, newest: bool) -> Option<Waiter> {
        let client = self.turn.pop_front()?;
        let queue = self.by_client.get_mut(&client)?;
        let waiter = if newest { queue.pop_back() } else { queue.pop_front() };
        if queue.is_empty() {
            self.by_client.remove(&client);
        } else {
            self.turn.push_back(client);
        }
        waiter
    }

    /// Takes a waiter out (its wait ended, or its call went); None if it is no longer here (it was handed a place,
    /// or its wait was ended already). A client's waiters are in the order of their ids.
    fn remove(&mut self, client: ClientKey, id: u64) -> Option<Waiter> {
        let queue = self.by_client.get_mut(&client)?;
        let at = queue.binary_search_by_key(&id, |w| w.id).ok()?;
        let waiter = queue.remove(at);
        if queue.is_empty() {
            self.by_client.remove(&client);
            self.turn.retain(|c| *c != client);
        }
        waiter
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
    /// When each wait the sweeper ends is due, in order (the grid's steps only move forward). A waiter handed a
    /// place before its end stays listed until then, and is then passed over.
    ends: VecDeque<End>,
    /// Whether the sweeper runs (it stops when `ends` is empty).
    sweeping: bool,
}

/// A wait the sweeper ends.
struct End {
    at: tokio::time::Instant,
    work: Work,
    client: ClientKey,
    id: u64,
}

impl State {
    fn waiting(&mut self, work: Work) -> &mut Waiting {
        match work {
            Work::Check => &mut self.checks,
            Work::Send => &mut self.sends,
        }
    }

    /// Who gets a freed place: checks before sends; in a class, in arrival order, or newest first while one of its
    /// waiters has been refused within the last `wait`.
    fn next(&mut self, wait: Duration) -> Option<Waiter> {
        let now = tokio::time::Instant::now();
        let waiting = if self.checks.turn.is_empty() { &mut self.sends } else { &mut self.checks };
        let newest = waiting.refused_at.is_some_and(|at| now.saturating_duration_since(at) < wait);
        waiting.pop(newest)
    }
}

/// The places of the hashing queue. Their number may change while calls hold them (the queue is sized from what
/// the workers actually finish): past a lowered limit, places given back go to the pool until the calls that hold
/// them fit; below a raised one, waiting calls get the new places at once.
pub(super) struct Places {
    limit: AtomicUsize,
    wait: Duration,
    /// The grid waits end on (an eighth of the wait), counted from `epoch`.
    step: Duration,
    epoch: tokio::time::Instant,
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
        let step = wait / 8;
        Self {
            limit: AtomicUsize::new(limit.max(1)),
            wait,
            step,
            epoch: tokio::time::Instant::now(),
            state: Mutex::default(),
        }
    }

    /// When a wait that starts `now` ends: the last step of the grid within the wait, so that refusals due within
    /// one step are answered together.
    fn wait_ends(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        let end = now + self.wait;
        let since_epoch = end.saturating_duration_since(self.epoch);
        let step = self.step.as_nanos().max(1);
        // Less than a step, and a step is less than the wait: never before `now`.
        let past_grid = Duration::from_nanos(u64::try_from(since_epoch.as_nanos() % step).unwrap_or(0));
        end - past_grid
    }

    /// Ends the waits due by `now` (the sweeper's pass): each waiter still waiting is told it has no place. Returns
    /// when the next wait ends, or None (and the sweeper stops) when none is left.
    fn end_waits(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let mut state = self.lock();
        while let Some(end) = state.ends.front() {
            if end.at > now {
                return Some(end.at);
            }
            let End { work, client, id, .. } = state.ends.pop_front()?;
            let waiting = state.waiting(work);
            if let Some(waiter) = waiting.remove(client, id) {
                waiting.refused_at = Some(now);
                let _ = waiter.handover.send(false);
            }
        }
        state.sweeping = false;
        None
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
            let Some(waiter) = state.next(self.wait) else { break };
            if waiter.handover.send(true).is_ok() {
                state.taken += 1;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a place for `work` of `client`, waiting at most the admission wait and never past `deadline`.
    pub(super) async fn take(
        self: &Arc<Self>,
        work: Work,
        client: ClientKey,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), NoPlace> {
        let (id, handed_over, own_deadline) = {
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
            let now = tokio::time::Instant::now();
            let end = self.wait_ends(now);
            let own_deadline = deadline.filter(|deadline| *deadline < end);
            if own_deadline.is_none() {
                state.ends.push_back(End { at: end, work, client, id });
                if !state.sweeping {
                    state.sweeping = true;
                    tokio::spawn(sweep(Arc::downgrade(self)));
                }
            }
            (id, handed_over, own_deadline)
        };
        // Until it resolves, a cancelled call (its client gone) must not leave its waiter behind, nor a place handed
        // over to it.
        let mut waiting = Wait { places: self, work, client, id, handed_over: Some(handed_over) };
        let answer = match own_deadline {
            None => waiting.answer().await,
            // Boxed: a timer is large, and every call that waits would carry one in its future.
            Some(deadline) => match Box::pin(tokio::time::timeout_at(deadline, waiting.answer())).await {
                Ok(answer) => answer,
                // The caller's deadline: a short deadline says nothing of how the line drains.
                Err(_) => waiting.leave(),
            },
        };
        if answer { Ok(()) } else { Err(NoPlace::Full) }
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
            match state.next(self.wait) {
                // The place passes on, still taken. A waiter whose call has gone cannot take it: try the next.
                Some(waiter) => {
                    if waiter.handover.send(true).is_ok() {
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

/// The sweeper: ends the waits as they come due, one pass per step of the grid, while any is left.
async fn sweep(places: Weak<Places>) {
    let mut running = Sweeping { places, done: false };
    loop {
        let next = match running.places.upgrade() {
            Some(places) => places.end_waits(tokio::time::Instant::now()),
            None => None,
        };
        let Some(next) = next else {
            running.done = true;
            return;
        };
        tokio::time::sleep_until(next).await;
    }
}

/// Dropped with the sweeper's task before it finished (its runtime shut down while the places live on), lets the
/// next waiter start another: else no wait would ever be ended again.
struct Sweeping {
    places: Weak<Places>,
    done: bool,
}

impl Drop for Sweeping {
    fn drop(&mut self) {
        if let Some(places) = self.places.upgrade().filter(|_| !self.done) {
            places.lock().sweeping = false;
        }
    }
}

/// A call waiting for a place. Dropped before its answer (the call cancelled, its client gone), it takes its waiter
/// out of the queue, or gives back a place handed over meanwhile.
struct Wait<'a> {
    places: &'a Places,
    work: Work,
    client: ClientKey,
    id: u64,
    /// Taken once the answer is read.
    handed_over: Option<oneshot::Receiver<bool>>,
}

impl Wait<'_> {
    /// Whether a place was handed over (or the wait ended without one).
    async fn answer(&mut self) -> bool {
        let Some(handed_over) = self.handed_over.as_mut() else { return false };
        // The sender gone unsent only with the waiter taken out of the queue unanswered: no place.
        let answer = handed_over.await.unwrap_or(false);
        self.handed_over = None;
        answer
    }

    /// Leaves the queue before an answer came; true if a place was handed over meanwhile (it is then the call's).
    fn leave(&mut self) -> bool {
        let Some(mut handed_over) = self.handed_over.take() else { return false };
        let mut state = self.places.lock();
        if state.waiting(self.work).remove(self.client, self.id).is_some() {
            return false;
        }
        // Taken out under the lock, which is held while it is answered: the answer is here.
        handed_over.try_recv().unwrap_or(false)
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.leave() {
            self.places.give_back();
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
        let places = Arc::new(Places::new(1, Duration::from_millis(50)));
        places.take(Work::Send, ip(1), None).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(places.take(Work::Send, ip(1), None).await, Err(NoPlace::Full));
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        let started = tokio::time::Instant::now();
        assert_eq!(places.take(Work::Check, ip(2), Some(deadline)).await, Err(NoPlace::Full));
        assert_eq!(started.elapsed(), Duration::from_millis(20), "the caller's deadline comes first");
        assert_eq!(places.counts(), (1, 0), "nobody left waiting");
        let none = Arc::new(Places::new(1, Duration::ZERO));
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

    /// Starts a call that waits for a place of `places` (a Send of client `n`), returning when it got or lost it.
    fn waiting(places: &Arc<Places>, n: u8) -> tokio::task::JoinHandle<(Result<(), NoPlace>, tokio::time::Instant)> {
        let places = Arc::clone(places);
        tokio::spawn(async move { (places.take(Work::Send, ip(n), None).await, tokio::time::Instant::now()) })
    }

    #[tokio::test(start_paused = true)]
    async fn waits_end_on_a_grid_so_refusals_due_within_a_step_go_out_together() {
        let start = tokio::time::Instant::now();
        let places = Arc::new(Places::new(1, Duration::from_millis(80)));
        places.take(Work::Send, None, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let first = waiting(&places, 1);
        tokio::time::sleep(Duration::from_millis(6)).await;
        let second = waiting(&places, 2);
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        assert_eq!((first.0, second.0), (Err(NoPlace::Full), Err(NoPlace::Full)));
        assert_eq!(first.1, second.1, "answered in one go");
        assert_eq!(first.1 - start, Duration::from_millis(80), "the last step of the grid within both waits");
        assert!(second.1 - start - Duration::from_millis(7) > Duration::from_millis(70), "at most a step short");
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_line_stops_draining_the_newest_waiter_goes_first() {
        // A wait of 100 ms ends on a grid of 12.5 ms from the start.
        let places = Arc::new(Places::new(1, Duration::from_millis(100)));
        places.take(Work::Send, None, None).await.unwrap();
        let served =
            |handles: &[&tokio::task::JoinHandle<_>]| handles.iter().map(|h| h.is_finished()).collect::<Vec<_>>();
        let give_back = || async {
            places.give_back();
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        };
        let at = |ms| tokio::time::sleep_until(places.epoch + Duration::from_millis(ms));
        let one = waiting(&places, 1);
        at(20).await;
        let two = waiting(&places, 1);
        at(30).await;
        give_back().await;
        assert_eq!(served(&[&one, &two]), [true, false], "nobody refused yet: arrival order");
        at(40).await;
        let three = waiting(&places, 1);
        // `two` is refused at 112.5 ms, the line has stopped draining.
        at(115).await;
        assert!(two.is_finished());
        let four = waiting(&places, 1);
        let other = waiting(&places, 2);
        at(120).await;
        give_back().await;
        assert_eq!(served(&[&three, &four, &other]), [false, true, false], "one refused within the wait: newest first");
        give_back().await;
        assert_eq!(served(&[&three, &other]), [false, true], "the round between clients still goes forward");
        assert_eq!(two.await.unwrap().0, Err(NoPlace::Full));
        assert_eq!(three.await.unwrap().0, Err(NoPlace::Full), "the oldest is refused at the end of its wait");
        for served in [one, four, other] {
            assert_eq!(served.await.unwrap().0, Ok(()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_whose_own_deadline_ran_out_does_not_turn_the_line_around() {
        let places = Arc::new(Places::new(1, Duration::from_millis(100)));
        places.take(Work::Send, None, None).await.unwrap();
        let one = waiting(&places, 1);
        let hurried = {
            let places = Arc::clone(&places);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(10);
            tokio::spawn(async move { places.take(Work::Send, ip(1), Some(deadline)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(hurried.await.unwrap(), Err(NoPlace::Full));
        let three = waiting(&places, 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        places.give_back();
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!((one.is_finished(), three.is_finished()), (true, false), "still arrival order");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_dropped_while_waiting_leaves_no_trace() {
        let places = Arc::new(Places::new(1, Duration::from_secs(60)));
        places.take(Work::Send, None, None).await.unwrap();
        let waiting = places.take(Work::Send, ip(1), None);
        assert!(tokio::time::timeout(Duration::from_millis(10), waiting).await.is_err());
        assert_eq!(places.counts(), (1, 0));
        places.give_back();
        assert_eq!(places.counts(), (0, 0), "the place went back to the pool, not to the gone call");
    }

    #[test]
    fn a_sweeper_gone_with_its_runtime_is_started_again() {
        let runtime =
            || tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let places = runtime().block_on(async {
            let places = Arc::new(Places::new(1, Duration::from_millis(50)));
            places.take(Work::Send, None, None).await.unwrap();
            let mut waiting = Box::pin(places.take(Work::Send, ip(1), None));
            assert!(tokio::time::timeout(Duration::from_millis(1), &mut waiting).await.is_err(), "it waits");
            drop(waiting);
            places
        });
        // That runtime, and its sweeper with it, are gone; the call went too.
        assert_eq!(places.counts(), (1, 0));
        runtime().block_on(async {
            let started = tokio::time::Instant::now();
            let refused = tokio::time::timeout(Duration::from_secs(1), places.take(Work::Send, ip(2), None)).await;
            assert_eq!(refused, Ok(Err(NoPlace::Full)), "a new sweeper ends the wait");
            assert!(started.elapsed() <= Duration::from_millis(50));
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_place_handed_to_a_call_that_then_goes_comes_back() {
        let places = Arc::new(Places::new(1, Duration::from_millis(50)));
        places.take(Work::Send, None, None).await.unwrap();
        let mut waiting = Box::pin(places.take(Work::Send, ip(1), None));
        assert!(tokio::time::timeout(Duration::from_millis(1), &mut waiting).await.is_err(), "it waits");
        places.give_back();
        assert_eq!(places.counts(), (1, 0), "handed over, not yet seen by the call");
        drop(waiting);
        assert_eq!(places.counts(), (0, 0), "the call went: its place went back to the pool");
        // The sweeper stopped with nobody left to refuse, and starts again for the next wait.
        places.take(Work::Send, None, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = tokio::time::Instant::now();
        assert_eq!(places.take(Work::Send, ip(1), None).await, Err(NoPlace::Full));
        assert!(started.elapsed() <= Duration::from_millis(50) && started.elapsed() > Duration::from_millis(43));
        assert_eq!(places.counts(), (1, 0));
    }
}
