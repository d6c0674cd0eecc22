//! Whether the API host answers at all. Every API call reports whether an answer (any HTTP
//! status) came back; a silence — only connection failures and lost answers — that lasts
//! `unreachable_after` ends the run (exit 4) with a message naming the host and what to check,
//! rather than retrying for ever while the user waits. Every job stays resumable: a submit that
//! could not connect never left, and saved request ids are polled again by the next run.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Reach {
    silence: Mutex<Option<Silence>>,
}

/// Calls without an answer since the last answer.
struct Silence {
    since: Instant,
    calls: u32,
    last: String,
}

impl Reach {
    /// An answer came back from the API host (whatever its status).
    pub fn answered(&self) {
        *self.lock() = None;
    }

    /// A call got no answer (it could not connect, or the answer was lost).
    pub fn unanswered(&self, why: impl std::fmt::Display) {
        let mut s = self.lock();
        let s = s.get_or_insert_with(|| Silence {
            since: Instant::now(),
            calls: 0,
            last: String::new(),
        });
        s.calls += 1;
        s.last = why.to_string();
    }

    /// If the API host has been silent for `limit` — and more than one call went unanswered in
    /// that time, so that one lost answer followed by a quiet spell is not taken for an outage —
    /// how long, and the last failure.
    pub fn silent_for(&self, limit: Duration) -> Option<(Duration, String)> {
        let s = self.lock();
        let s = s.as_ref().filter(|s| s.calls >= 2)?;
        let d = s.since.elapsed();
        (d >= limit).then(|| (d, s.last.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Silence>> {
        self.silence.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The stop message for a silent API host.
pub fn message(base_url: &str, silent: Duration, last: &str) -> String {
    format!(
        "no answer from the API at {base_url} for {:.0} s (last error: {last}). Check the network \
         connection, any proxy or firewall, and SEGMIND_BASE_URL if you set it (the default is \
         https://api.segmind.com); \
         --unreachable-after sets how long to wait",
        silent.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unbroken_silence_counts() {
        let r = Reach::default();
        assert!(r.silent_for(Duration::ZERO).is_none(), "no call yet: not silent");
        r.unanswered("connection refused");
        assert!(
            r.silent_for(Duration::ZERO).is_none(),
            "one lost answer is not an outage"
        );
        r.unanswered("timed out");
        assert!(r.silent_for(Duration::from_secs(60)).is_none(), "not for long enough");
        let (_, last) = r.silent_for(Duration::ZERO).unwrap();
        assert_eq!(last, "timed out");
        r.answered();
        assert!(r.silent_for(Duration::ZERO).is_none(), "an answer ends the silence");
    }
}
