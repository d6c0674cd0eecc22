//! The one gate every API request passes. Two layers:
//!
//! 1. A `governor` limiter at the configured rate with burst 1: a hard cap, smooth pacing, never
//!    more than `rpm` requests in any window — a window 1 % longer than the account's (at least
//!    20 ms), so that arrival jitter cannot put `rpm + 1` requests into one of the server's. (From 2,000 requests a second, which only a
//!    benchmark asks for, the burst is a millisecond's worth, so a window may hold that many
//!    more, and waits use the runtime's timer, whose tick is a millisecond: governor's precise
//!    timer is a thread of its own, two thread wake-ups per wait, and at that rate nearly every
//!    request waited a few microseconds.)
//! 2. An adaptive pace below that cap (AIMD). A 429 pauses *every* caller until the server's
//!    reset hint, and cuts the pace to below what the server evidently allows (90 % of what we
//!    sent in the last window, and at least a 30 % cut); each success then adds a little back, so
//!    the pace creeps up to the limit again slowly and 429s stay rare.
//!
//! 3. With several runners on one key (PostgreSQL), a budget shared through the database
//!    (`Shared`): every request also takes a slot of the key's shared timeline
//!    (`Store::take_slots`: slots `window / rpm` apart, handed out by moving one row forward, so
//!    the runners together never exceed `rpm` in any window); a slot missed by more than a small
//!    tolerance is dropped rather than used late. A 429's reset hint moves the shared timeline
//!    forward for every runner.
//!
//! Downloads from the video host do not pass here: they are not API requests.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// Added to the pace (requests per window) after each success: about 3 % growth per window.
const INCREASE: f64 = 0.03;
/// A 429 cuts the pace to at most this share of what it was.
const DECREASE: f64 = 0.7;
/// ... and to at most this share of what we sent in the last window.
const BELOW_OBSERVED: f64 = 0.9;

pub struct Gate {
    limiter: DefaultDirectRateLimiter,
    /// The budget shared with other runners on the same key, if any.
    shared: Option<Shared>,
    /// The burst covers a millisecond: the runtime's timer is precise enough.
    coarse: bool,
    cap: f64,
    window: Duration,
    /// Used when a 429 carries no reset hint.
    default_pause: Duration,
    state: Mutex<State>,
}

struct State {
    paused_until: Option<Instant>,
    /// Current pace, requests per window (≤ cap).
    pace: f64,
    next_slot: Instant,
    /// A 429 arriving before this does not cut again (one cut per burst of refusals).
    cut_guard: Option<Instant>,
    /// Send times within the last window.
    sent: VecDeque<Instant>,
    rate_limited: u64,
}

/// The budget shared with the other runners on one key (see the module's notes).
struct Shared {
    store: crate::store::Store,
    key_hash: String,
    interval_us: i64,
    per_take: i64,
    tolerance: Duration,
    /// Slots taken from the database and not used yet, in time order.
    slots: tokio::sync::Mutex<VecDeque<Instant>>,
    /// Why the shared budget could not be reached for a minute: the run stops (no request goes
    /// without a slot).
    failed: Mutex<Option<String>>,
}

impl Shared {
    /// The next slot (waiting for the database if none is in hand).
    async fn take(&self) -> Instant {
        let mut slots = self.slots.lock().await;
        let mut failing_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            while slots.front().is_some_and(|t| *t + self.tolerance < now) {
                slots.pop_front();
            }
            if let Some(t) = slots.pop_front() {
                return t;
            }
            match self
                .store
                .take_slots(&self.key_hash, self.per_take, self.interval_us)
                .await
            {
                Ok(offsets) => {
                    let at = Instant::now();
                    slots.extend(offsets.into_iter().map(|us| {
                        if us >= 0 {
                            at + Duration::from_micros(us as u64)
                        } else {
                            at
                        }
                    }));
                }
                Err(e) => {
                    // The database is the budget: without it, no request goes. After a minute
                    // the run stops (the dispatcher sees `failure`), every job resumable.
                    tracing::warn!(error = %e, "cannot take a request slot from the shared budget");
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_secs(60) {
                        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                        failed.get_or_insert_with(|| {
                            format!("the shared request budget in the database cannot be reached: {e:#}")
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Whether a slot in hand is due now (never waits, takes nothing).
    fn due(&self, now: Instant) -> bool {
        let Ok(slots) = self.slots.try_lock() else {
            return false;
        };
        slots
            .iter()
            .find(|t| **t + self.tolerance >= now)
            .is_some_and(|t| *t <= now)
    }

    /// A slot due now, if one is in hand (never waits).
    fn try_take(&self, now: Instant) -> bool {
        let Ok(mut slots) = self.slots.try_lock() else {
            return false;
        };
        while slots.front().is_some_and(|t| *t + self.tolerance < now) {
            slots.pop_front();
        }
        if slots.front().is_some_and(|t| *t <= now) {
            slots.pop_front();
            return true;
        }
        false
    }
}

/// A snapshot for progress displays and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateStats {
    pub pace: f64,
    pub cap: f64,
    pub rate_limited: u64,
    pub sent_last_window: usize,
}

impl Gate {
    /// `rate` requests per `window` (per minute in normal use).
    pub fn new(rate: u32, window: Duration, default_pause: Duration) -> Gate {
        let rate = rate.max(1);
        // The server counts arrivals, not our sends: a request that leaves its permit a little
        // late (a busy runtime, the network) arrives bunched with the next ones. Permits are
        // spaced over the window plus a margin — 1 %, at least 20 ms, at most a second — so that
        // no window of the server's ever holds more than `rate` of them.
        let window = window
            + (window / 100)
                .clamp(Duration::from_millis(20), Duration::from_secs(1))
                .min(window);
        let period = (window / rate).max(Duration::from_nanos(1));
        let per_ms = (Duration::from_millis(1).as_nanos() / period.as_nanos()) as u32;
        let quota = Quota::with_period(period)
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(per_ms).unwrap_or(NonZeroU32::MIN));
        Gate {
            limiter: RateLimiter::direct(quota),
            shared: None,
            coarse: per_ms > 1,
            cap: f64::from(rate),
            window,
            default_pause,
            state: Mutex::new(State {
                paused_until: None,
                pace: f64::from(rate),
                next_slot: Instant::now(),
                cut_guard: None,
                sent: VecDeque::new(),
                rate_limited: 0,
            }),
        }
    }

    /// Shares the budget with every runner on the key `key_hash`, through `store`.
    pub fn shared_with(mut self, store: crate::store::Store, key_hash: String) -> Gate {
        let interval = self.window.div_f64(self.cap);
        // A tenth of a second's worth of slots per round trip to the database, at least one.
        let per_take = (Duration::from_millis(100).as_secs_f64() / interval.as_secs_f64())
            .ceil()
            .clamp(1.0, 32.0) as i64;
        // Slots missed by more than this are dropped: within the window's margin (see `new`), so
        // a late request cannot push a window of the server's over the limit.
        let tolerance = (self.window.saturating_sub(self.window.mul_f64(100.0 / 101.0)) / 2)
            .max(Duration::from_millis(5))
            .min(interval / 2);
        self.shared = Some(Shared {
            store,
            key_hash,
            interval_us: interval.as_micros().max(1) as i64,
            per_take,
            tolerance,
            slots: tokio::sync::Mutex::new(VecDeque::new()),
            failed: Mutex::new(None),
        });
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a request may be sent: after any 429 pause, inside the cap and the pace.
    pub async fn acquire(&self) {
        self.wait_pause().await;
        // No jitter: the dispatcher is the only waiter (no herd to spread), and with burst 1
        // any lateness is budget lost for good.
        if self.coarse {
            while let Err(later) = self.limiter.check() {
                tokio::time::sleep(later.wait_time_from(self.limiter.clock().now())).await;
            }
        } else {
            self.limiter.until_ready().await;
        }
        let slot = {
            let mut st = self.lock();
            let now = Instant::now();
            if st.pace < self.cap {
                let interval = self.window.div_f64(st.pace.max(0.01));
                let slot = st.next_slot.max(now);
                st.next_slot = slot + interval;
                Some(slot)
            } else {
                st.next_slot = now;
                None
            }
        };
        if let Some(slot) = slot {
            tokio::time::sleep_until(slot).await;
        }
        if let Some(shared) = &self.shared {
            loop {
                let slot = shared.take().await;
                tokio::time::sleep_until(slot).await;
                // A 429 may have arrived while we waited: honour it too.
                self.wait_pause().await;
                if Instant::now() <= slot + shared.tolerance {
                    break;
                }
                // Woken too late (a busy machine, a 429's pause): sent now, this request could
                // crowd a window of the server's; a later slot keeps every window in the limit.
            }
        }
        // A 429 may have arrived while we waited: honour it too.
        self.wait_pause().await;
        let mut st = self.lock();
        let now = Instant::now();
        st.sent.push_back(now);
        while st.sent.front().is_some_and(|t| now.duration_since(*t) > self.window) {
            st.sent.pop_front();
        }
    }

    /// Takes a permit only if one is free this instant (no pause, inside the cap and the pace):
    /// lets the dispatcher send several requests at once when the budget allows it.
    pub fn try_acquire(&self) -> bool {
        let now = Instant::now();
        {
            let st = self.lock();
            if st.paused_until.is_some_and(|t| t > now) || (st.pace < self.cap && st.next_slot > now) {
                return false;
            }
        }
        // A shared slot must be due before the local permit is taken (a permit taken for
        // nothing would be lost to this runner).
        if self.shared.as_ref().is_some_and(|s| !s.due(now)) {
            return false;
        }
        if self.limiter.check().is_err() {
            return false;
        }
        if self.shared.as_ref().is_some_and(|s| !s.try_take(now)) {
            return false;
        }
        let mut st = self.lock();
        if st.pace < self.cap {
            st.next_slot = now + self.window.div_f64(st.pace.max(0.01));
        } else {
            st.next_slot = now;
        }
        st.sent.push_back(now);
        while st.sent.front().is_some_and(|t| now.duration_since(*t) > self.window) {
            st.sent.pop_front();
        }
        true
    }

    async fn wait_pause(&self) {
        loop {
            let until = self.lock().paused_until;
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// A request was answered without a 429: creep back toward the cap.
    pub fn on_success(&self) {
        let mut st = self.lock();
        st.pace = (st.pace + INCREASE).min(self.cap);
    }

    /// A 429: every caller waits until `until` (or a default pause without a hint), and the pace
    /// drops below what the server evidently allows — once per burst of refusals.
    pub fn on_rate_limited(&self, until: Option<SystemTime>) {
        let wait = until
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or(self.default_pause)
            .min(Duration::from_secs(3600));
        let now = Instant::now();
        let end = now + wait;
        if let Some(shared) = &self.shared {
            let (store, key) = (shared.store.clone(), shared.key_hash.clone());
            let wait_ms = wait.as_millis() as i64;
            tokio::spawn(async move {
                if let Err(e) = store.hold_budget(&key, wait_ms).await {
                    tracing::warn!(error = %e, "could not share a rate-limit pause with the other runners");
                }
            });
        }
        let mut st = self.lock();
        st.rate_limited += 1;
        if st.paused_until.is_none_or(|cur| cur < end) {
            st.paused_until = Some(end);
        }
        if st.cut_guard.is_some_and(|g| now < g) {
            return;
        }
        let sent = st
            .sent
            .iter()
            .filter(|t| now.duration_since(**t) <= self.window)
            .count() as f64;
        let observed = (sent * BELOW_OBSERVED).max(1.0);
        st.pace = (st.pace * DECREASE).min(observed).max(0.5);
        let interval = self.window.div_f64(st.pace);
        st.cut_guard = Some(end + interval * 2);
        st.next_slot = end;
        tracing::info!(pace = st.pace, "rate limited: slowing down");
    }

    /// Why requests cannot go on, if the shared budget (several runners) stayed unreachable.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .as_ref()
            .and_then(|s| s.failed.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Resolves once `failure` says something (never without a shared budget).
    pub async fn failed(&self) {
        loop {
            if self.failure().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// When the current pause ends, if one is in force.
    pub fn paused_until(&self) -> Option<Instant> {
        self.lock().paused_until.filter(|t| *t > Instant::now())
    }

    pub fn stats(&self) -> GateStats {
        let st = self.lock();
        let now = Instant::now();
        GateStats {
            pace: st.pace,
            cap: self.cap,
            rate_limited: st.rate_limited,
            // Send times are in order: the old ones are a prefix.
            sent_last_window: st.sent.len() - st.sent.partition_point(|t| now.duration_since(*t) > self.window),
        }
    }

    /// The current pace, requests per window (the hot path's part of `stats`).
    pub fn pace(&self) -> f64 {
        self.lock().pace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn permits_are_paced_without_burst() {
        let gate = Gate::new(100, Duration::from_secs(1), 50 * MS); // one per 10 ms
        let start = Instant::now();
        for _ in 0..11 {
            gate.acquire().await;
        }
        let took = start.elapsed();
        assert!(took >= 95 * MS, "11 permits at 100/s took {took:?}");
    }

    #[tokio::test]
    async fn above_two_thousand_a_second_the_cap_holds_with_a_millisecond_of_burst() {
        let gate = Gate::new(10_000, Duration::from_secs(1), 50 * MS); // 10 per ms
        assert!(gate.coarse);
        let start = Instant::now();
        for _ in 0..1000 {
            gate.acquire().await;
        }
        let took = start.elapsed();
        // 1,000 permits: the burst of 10, then one per 0.1 ms. Never faster than the cap; and
        // not much slower (the waits are whole milliseconds, the burst absorbs that).
        assert!(took >= 98 * MS, "1,000 permits at 10,000/s took {took:?}");
        assert!(took < 400 * MS, "1,000 permits at 10,000/s took {took:?}");
        assert!(
            !Gate::new(60_000, Duration::from_secs(60), MS).coarse,
            "1 per ms: burst 1"
        );
    }

    #[tokio::test]
    async fn try_acquire_takes_only_a_free_permit_and_counts_it() {
        let gate = Gate::new(10, Duration::from_secs(1), 50 * MS); // one per 100 ms
        assert!(gate.try_acquire(), "the first permit is free");
        assert!(!gate.try_acquire(), "no burst: the next is 100 ms away");
        tokio::time::sleep(110 * MS).await;
        assert!(gate.try_acquire());
        assert_eq!(gate.stats().sent_last_window, 2);
        // A 429 pause closes the gate to try_acquire too.
        tokio::time::sleep(110 * MS).await;
        gate.on_rate_limited(Some(SystemTime::now() + 200 * MS));
        assert!(!gate.try_acquire(), "paused");
    }

    #[tokio::test]
    async fn a_429_pauses_every_caller_until_the_hint() {
        let gate = std::sync::Arc::new(Gate::new(1000, Duration::from_secs(1), 120 * MS));
        gate.acquire().await;
        gate.on_rate_limited(Some(SystemTime::now() + 150 * MS));
        let start = Instant::now();
        let a = tokio::spawn({
            let g = gate.clone();
            async move { g.acquire().await }
        });
        gate.acquire().await;
        a.await.unwrap();
        assert!(start.elapsed() >= 140 * MS, "{:?}", start.elapsed());
        assert!(gate.paused_until().is_none());
        assert_eq!(gate.stats().rate_limited, 1);
    }

    #[tokio::test]
    async fn the_pace_drops_below_the_observed_limit_once_per_burst_and_creeps_back() {
        let gate = Gate::new(1000, Duration::from_secs(1), 10 * MS);
        for _ in 0..20 {
            gate.acquire().await; // 20 sent in the window: the server allowed about that many
        }
        gate.on_rate_limited(None);
        gate.on_rate_limited(None); // same burst: no second cut
        let pace = gate.stats().pace;
        assert!((17.0..=18.1).contains(&pace), "pace {pace}");
        for _ in 0..100 {
            gate.on_success();
        }
        let after = gate.stats().pace;
        assert!(
            (after - pace - 3.0).abs() < 0.01,
            "additive increase: {pace} -> {after}"
        );
        // The paced rate is really slower: 5 permits at ~20/s take ~200 ms.
        tokio::time::sleep(20 * MS).await;
        let start = Instant::now();
        for _ in 0..5 {
            gate.acquire().await;
        }
        assert!(start.elapsed() >= 150 * MS, "{:?}", start.elapsed());
    }
}
