//! The one gate every API request passes: a smooth `governor` limiter at `--rpm` (burst 1, so
//! never more than rpm in any 60 s window) plus a shared pause that a 429 sets for everyone.
//!
//! Downloads from the video host do not pass here: they are not API requests.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use tokio::time::Instant;

pub struct Gate {
    limiter: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<Instant>>,
    /// Used when a 429 carries no reset hint.
    default_pause: Duration,
}

impl Gate {
    pub fn new(rpm: u32, default_pause: Duration) -> Gate {
        let rpm = NonZeroU32::new(rpm.max(1)).expect("non-zero");
        let quota = Quota::per_minute(rpm).allow_burst(NonZeroU32::MIN);
        Gate {
            limiter: RateLimiter::direct(quota),
            paused_until: Mutex::new(None),
            default_pause,
        }
    }

    /// Waits until a request may be sent: after any 429 pause, and inside the rate.
    pub async fn acquire(&self) {
        self.wait_pause().await;
        self.limiter
            .until_ready_with_jitter(Jitter::up_to(Duration::from_millis(5)))
            .await;
        // A 429 may have arrived while we waited for the permit: honour it too.
        self.wait_pause().await;
    }

    async fn wait_pause(&self) {
        loop {
            let until = *self.paused_until.lock().expect("gate lock");
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// Every worker waits until `until` (or the default pause when the server gave no hint).
    pub fn pause(&self, until: Option<SystemTime>) {
        let wait = until
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or(self.default_pause)
            .min(Duration::from_secs(3600));
        let t = Instant::now() + wait;
        let mut guard = self.paused_until.lock().expect("gate lock");
        if guard.is_none_or(|cur| cur < t) {
            *guard = Some(t);
        }
    }

    /// When the current pause ends, if one is in force.
    pub fn paused_until(&self) -> Option<Instant> {
        (*self.paused_until.lock().expect("gate lock")).filter(|t| *t > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_are_paced_without_burst() {
        let gate = Gate::new(6000, Duration::from_millis(50)); // one per 10 ms
        let start = Instant::now();
        for _ in 0..11 {
            gate.acquire().await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(95), "11 permits at 100/s took {took:?}");
    }

    #[tokio::test]
    async fn a_pause_holds_every_caller() {
        let gate = Gate::new(60_000, Duration::from_millis(120));
        gate.acquire().await;
        gate.pause(None);
        let start = Instant::now();
        gate.acquire().await;
        assert!(start.elapsed() >= Duration::from_millis(110));
        assert!(gate.paused_until().is_none());
    }
}
