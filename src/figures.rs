//! The figures every display of a campaign shows — the live progress, the run's summary and
//! `status` — each defined once, so that they agree.
//!
//! Money: **spent** is what Segmind has billed as far as we know it: the costs it reported
//! (`metrics.cost`), plus videos made whose cost it did not report and results bought a second
//! time (expired, or rejected by a reviewer and made again), each at `--price` (else at the mean
//! reported cost). **At Segmind** is what the jobs
//! being made will cost when they complete (a FAILED job is not billed). Lost-answer submits
//! that may have created a job are an upper bound, said apart, until `reconcile` knows.

use crate::store::CostSummary;

/// What has been spent and committed, with the price that fills what Segmind did not report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Money {
    pub cost: CostSummary,
    /// `--price` (dollars per video), if the campaign has one.
    pub price: Option<f64>,
}

impl Money {
    /// Dollars per video for what was not reported: `--price`, else the mean reported cost.
    pub fn per_video(&self) -> Option<f64> {
        self.price
            .or_else(|| (self.cost.reported_jobs > 0).then(|| self.cost.reported / self.cost.reported_jobs as f64))
    }

    /// Dollars billed, as far as known; `None` when nothing is known about the price at all.
    pub fn spent(&self) -> Option<f64> {
        let unpriced = self.cost.unpriced_videos + self.cost.expired_attempts + self.cost.rejected_attempts;
        match self.per_video() {
            Some(p) => Some(self.cost.reported + unpriced as f64 * p),
            None if unpriced == 0 => Some(0.0),
            None => None,
        }
    }

    /// Dollars the jobs at Segmind will cost when they complete.
    pub fn at_segmind(&self) -> Option<f64> {
        self.per_video().map(|p| self.cost.at_segmind as f64 * p)
    }

    /// One line for the live display: `$0.35 spent · ~$0.25 at Segmind`.
    pub fn short(&self) -> String {
        let mut s = match self.spent() {
            Some(d) => format!("${d:.2} spent"),
            None => "spend unknown (no --price)".to_string(),
        };
        if let (Some(d), true) = (self.at_segmind(), self.cost.at_segmind > 0) {
            s.push_str(&format!(" · ~${d:.2} at Segmind"));
        }
        s
    }

    /// The whole account, for the run's summary and `status`.
    pub fn long(&self) -> String {
        let c = &self.cost;
        let price = match (self.price, self.per_video()) {
            (Some(p), _) => format!("at --price ${p}"),
            (None, Some(p)) => format!("at the mean reported ${p:.4}"),
            (None, None) => String::new(),
        };
        let mut parts = vec![format!(
            "${:.2} reported by Segmind for {} video(s)",
            c.reported, c.reported_jobs
        )];
        if c.unpriced_videos > 0 {
            parts.push(format!(
                "{} video(s) without a reported cost {price}",
                c.unpriced_videos
            ));
        }
        if c.expired_attempts > 0 {
            parts.push(format!(
                "{} result(s) bought again after they expired {price}",
                c.expired_attempts
            ));
        }
        if c.rejected_attempts > 0 {
            parts.push(format!("{} rejected take(s) made again {price}", c.rejected_attempts));
        }
        let mut s = match self.spent() {
            Some(d) => format!("spent: ${d:.2} ({})", parts.join(" + ")),
            None => format!("spent: unknown ({}; give --price to count the rest)", parts.join(" + ")),
        };
        if c.at_segmind > 0 {
            match self.at_segmind() {
                Some(d) => s.push_str(&format!(
                    "; {} job(s) at Segmind, ~${d:.2} when they complete",
                    c.at_segmind
                )),
                None => s.push_str(&format!("; {} job(s) at Segmind", c.at_segmind)),
            }
        }
        if c.maybe_attempts > 0 {
            let upto = self
                .per_video()
                .map(|p| format!(" (up to ${:.2})", c.maybe_attempts as f64 * p))
                .unwrap_or_default();
            s.push_str(&format!(
                "; {} lost-answer submit(s) may also have been billed{upto}: `wanbatch reconcile` tells",
                c.maybe_attempts
            ));
        }
        s
    }
}

/// "once" / "twice" / "3 times": a count of repeats for people.
pub fn times(n: i64) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

/// "52 min" / "1 h 05 min" / "40 s": a span for people.
pub fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost() -> CostSummary {
        CostSummary {
            reported: 0.10,
            reported_jobs: 2,
            unpriced_videos: 1,
            at_segmind: 5,
            expired_attempts: 0,
            rejected_attempts: 0,
            maybe_attempts: 0,
        }
    }

    #[test]
    fn spent_and_at_segmind_are_told_apart() {
        let m = Money {
            cost: cost(),
            price: Some(0.05),
        };
        assert!((m.spent().unwrap() - 0.15).abs() < 1e-9);
        assert!((m.at_segmind().unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(m.short(), "$0.15 spent · ~$0.25 at Segmind");
        assert_eq!(
            m.long(),
            "spent: $0.15 ($0.10 reported by Segmind for 2 video(s) + 1 video(s) without a reported cost at \
             --price $0.05); 5 job(s) at Segmind, ~$0.25 when they complete"
        );
    }

    #[test]
    fn without_a_price_the_mean_reported_cost_fills_in_and_nothing_known_is_said_so() {
        let m = Money {
            cost: cost(),
            price: None,
        };
        assert!((m.spent().unwrap() - 0.15).abs() < 1e-9, "mean reported cost 0.05");
        let unknown = Money {
            cost: CostSummary {
                reported: 0.0,
                reported_jobs: 0,
                ..cost()
            },
            price: None,
        };
        assert_eq!(unknown.spent(), None);
        assert_eq!(unknown.short(), "spend unknown (no --price)");
        assert_eq!(Money::default().short(), "$0.00 spent");
    }

    #[test]
    fn rejected_takes_are_billed_videos_at_the_price() {
        let m = Money {
            cost: CostSummary {
                rejected_attempts: 2,
                at_segmind: 0,
                ..cost()
            },
            price: Some(0.05),
        };
        assert!(
            (m.spent().unwrap() - 0.25).abs() < 1e-9,
            "0.10 + 1 unpriced + 2 rejected"
        );
        assert!(
            m.long().contains("2 rejected take(s) made again at --price $0.05"),
            "{}",
            m.long()
        );
    }

    #[test]
    fn spans() {
        assert_eq!(span(40), "40 s");
        assert_eq!(span(52 * 60 + 10), "52 min");
        assert_eq!(span(3900), "1 h 05 min");
    }
}
