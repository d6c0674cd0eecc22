//! Poll slots: a calendar of the permit intervals that polls have reserved.
//!
//! The gate hands out one permit per `slot` (window / pace). If polls were simply due at their
//! ideal times, the randomness of durations would make several come due in one slot and queue
//! behind each other: at a busy budget the queue, not the schedule, would set the delay. So each
//! poll reserves a slot of its own: the one at its ideal time if free, else the nearest free one
//! up to `early` before it (polling a little early only lowers the odds of finding the job done a
//! little), else the nearest free one after. Submits take whatever slots are left. The calendar
//! is only planning, not truth: it lives in memory and a restart starts it afresh.

use std::collections::BTreeSet;
use std::sync::Mutex;

#[derive(Default)]
pub struct PollSlots {
    taken: Mutex<BTreeSet<i64>>,
}

impl PollSlots {
    /// Reserves a slot for a poll ideally at `ideal` (ms), not before `earliest`, preferring up
    /// to `early` ms before the ideal over any time after it. Returns the slot's time.
    pub fn reserve(&self, ideal: i64, earliest: i64, early: i64, slot_ms: f64) -> i64 {
        let slot_ms = slot_ms.max(1.0);
        let index = |t: i64| (t as f64 / slot_ms).floor() as i64;
        let k0 = index(ideal.max(earliest));
        let lowest = index(earliest).max(index(ideal - early)).min(k0);
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        // Forget slots well in the past.
        let stale = index(earliest) - 1000;
        while taken.first().is_some_and(|k| *k < stale) {
            taken.pop_first();
        }
        let free = (lowest..=k0)
            .rev()
            .find(|k| !taken.contains(k))
            .unwrap_or_else(|| (k0 + 1..).find(|k| !taken.contains(k)).expect("a free slot"));
        taken.insert(free);
        ((free as f64 * slot_ms).ceil() as i64).max(earliest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_spread_over_free_slots_earlier_first() {
        let slots = PollSlots::default();
        // Five polls all ideally at 10_000 ms, slots of 100 ms, up to 300 ms early allowed.
        let got: Vec<i64> = (0..5).map(|_| slots.reserve(10_000, 0, 300, 100.0)).collect();
        assert_eq!(got, vec![10_000, 9_900, 9_800, 9_700, 10_100]);
    }

    #[test]
    fn never_before_the_earliest_time() {
        let slots = PollSlots::default();
        assert_eq!(slots.reserve(1_000, 1_000, 500, 100.0), 1_000);
        assert_eq!(slots.reserve(1_000, 1_000, 500, 100.0), 1_100);
    }
}
