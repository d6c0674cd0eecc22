//! Spending limits: `--max-cost` (dollars, from `metrics.cost` where the API reports it, else
//! `--price` per video) and `--min-credits` (from `x-remaining-credits` or
//! `metrics.remaining_credits`). Either one stops *submitting*; what is already paid for is
//! still polled, fetched and downloaded.

use std::sync::Mutex;

use crate::api::Meta;
use crate::store::Store;

#[derive(Clone, Debug, Default)]
pub struct Budget {
    pub max_cost: Option<f64>,
    pub price: Option<f64>,
    pub min_credits: Option<f64>,
}

pub struct Spend {
    budget: Budget,
    remaining: Mutex<Option<f64>>,
}

impl Spend {
    pub fn new(budget: Budget) -> Spend {
        Spend {
            budget,
            remaining: Mutex::new(None),
        }
    }

    /// Notes what an API answer said about the account.
    pub fn note(&self, meta: &Meta) {
        if let Some(c) = meta.remaining_credits {
            *self.remaining.lock().expect("spend lock") = Some(c);
        }
    }

    pub fn remaining_credits(&self) -> Option<f64> {
        *self.remaining.lock().expect("spend lock")
    }

    /// Why submitting must stop now, if it must.
    pub async fn stop_reason(&self, store: &Store) -> anyhow::Result<Option<String>> {
        if let (Some(min), Some(left)) = (self.budget.min_credits, self.remaining_credits()) {
            if left < min {
                return Ok(Some(format!("credits are below --min-credits {min} ({left} left)")));
            }
        }
        let Some(max) = self.budget.max_cost else {
            return Ok(None);
        };
        let c = store.cost_summary().await?;
        let per_video = self
            .budget
            .price
            .or_else(|| (c.reported_jobs > 0).then(|| c.reported / c.reported_jobs as f64))
            .unwrap_or(0.0);
        let committed = c.reported + c.unpriced() as f64 * per_video;
        if committed + per_video > max + 1e-9 {
            return Ok(Some(format!(
                "the spend limit --max-cost {max:.2} is reached: {committed:.2} spent or committed, \
                 the next video would cost about {per_video:.2}"
            )));
        }
        Ok(None)
    }
}
