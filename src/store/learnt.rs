//! What the runs learnt and keep: duration models per class, facts seen of the account's API.

use crate::sql_args;

use super::db;
use super::{now_ms, Store};

impl Store {
    /// Every learnt duration model: (class, mu, sigma, jobs). A class learnt only by an older
    /// version (its 75 % point in `durations`) gets a model with that 75 % point.
    pub async fn timing_models(&self) -> anyhow::Result<Vec<(String, f64, f64, i64)>> {
        let mut models: Vec<(String, f64, f64, i64)> =
            db::query_as("SELECT class, mu, sigma, jobs FROM timing_models ORDER BY class")
                .fetch_all(&self.read)
                .await?;
        let legacy: Vec<(String, f64, i64)> = db::query_as(
            "SELECT class, first_poll_ms, samples FROM durations
             WHERE first_poll_ms > 0 AND class NOT IN (SELECT class FROM timing_models)",
        )
        .fetch_all(&self.read)
        .await?;
        const SIGMA: f64 = 0.1;
        for (class, first_poll_ms, samples) in legacy {
            // ln q75 = mu + 0.674 sigma.
            models.push((class, first_poll_ms.ln() - 0.674 * SIGMA, SIGMA, samples));
        }
        Ok(models)
    }

    pub async fn save_timing_model(&self, class: &str, mu: f64, sigma: f64, jobs: i64) -> anyhow::Result<()> {
        self.exec(
            "INSERT INTO timing_models (class, mu, sigma, jobs, updated_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT(class) DO UPDATE SET mu = excluded.mu, sigma = excluded.sigma, jobs = excluded.jobs,
                     updated_at = excluded.updated_at",
            sql_args![class.to_owned(), mu, sigma, jobs, now_ms()],
        )
        .await?;
        Ok(())
    }

    /// A fact seen of the account's API (see migration 0006), and its detail.
    pub async fn set_fact(&self, key: &str, value: &str, detail: &str) -> anyhow::Result<()> {
        self.exec(
            "INSERT INTO facts (key, value, detail, seen_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, detail = excluded.detail,
                     seen_at = excluded.seen_at",
            sql_args![key.to_owned(), value.to_owned(), detail.to_owned(), now_ms()],
        )
        .await?;
        Ok(())
    }

    /// A fact: (value, detail, seen_at).
    pub async fn fact(&self, key: &str) -> anyhow::Result<Option<(String, String, i64)>> {
        db::query_as("SELECT value, detail, seen_at FROM facts WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.read)
            .await
    }
}
