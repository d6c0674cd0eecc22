//! Looking a lost submit up in the request history, instead of guessing:
//! - found (one or more requests of the same body around its time, owned by no other job): the
//!   earliest is adopted — the job goes on from it, polled like any other, no new submit — and the
//!   others are recorded as billed duplicates;
//! - not found, and the history complete past its time: it was never created; it is submitted
//!   again, and nothing is paid twice (counted as proven not created);
//! - not found yet: looked up again once the history's lag has passed;
//! - the history cannot answer: counted as not provable, and `--on-unknown` decides, as before
//!   the history existed (submit again, flagged as possibly billed twice; or hold).

use std::sync::Arc;

use serde_json::Value;

use super::{finish, polling, then, waiting};
use crate::engine::agenda::Next;
use crate::engine::history::{find_lost, Lost};
use crate::engine::shared::{class_of, Shared};
use crate::engine::UnknownPolicy;
use crate::store::{now_ms, Charge, UnknownWork};

/// Looks up one lost submit.
pub async fn resolve(s: Arc<Shared>, w: UnknownWork) {
    let r = resolve_inner(&s, &w).await;
    finish(&s, w.seq, r).await;
}

#[tracing::instrument(skip_all, fields(job = %w.id))]
async fn resolve_inner(s: &Shared, w: &UnknownWork) -> anyhow::Result<Next> {
    let now = now_ms();
    // The body as it was sent: with the uploaded URLs of its local images (uploaded before it
    // went, so no new upload happens here).
    let body = match &s.uploader {
        Some(up) => up.body(s, &w.params).await.ok(),
        None => Some(w.params.clone()),
    };
    let body: Option<Value> = body.and_then(|b| serde_json::from_str(&b).ok());
    let given_up_at = w.finished_at.unwrap_or(w.started_at);
    let found = match &body {
        Some(body) => find_lost(s, body, w.started_at, given_up_at, now).await,
        None => Lost::Cannot("its body could not be rebuilt".into()),
    };
    match found {
        Lost::Found { adopted, duplicates } => adopt(s, w, adopted, duplicates).await,
        Lost::Absent => {
            tracing::info!("the lost submit is not in the request history: it was never created; submitting again");
            let row = s.store.proven_absent(w.seq).await?;
            then(row, waiting)
        }
        Lost::NotYet => {
            // Not there yet: once the history is complete past its time.
            let due = (given_up_at + s.cfg.history_lag.as_millis() as i64 + 1000).max(now + 1000);
            crate::progress::notice(&format!(
                "job {}: its lost submit is not in Segmind's request history yet; looking again in {}s \
                 (the history may lag by up to --history-lag {}s; nothing is submitted again before)",
                w.id,
                (due - now + 999) / 1000,
                s.cfg.history_lag.as_secs()
            ));
            Ok(Next::Resolve(w.clone(), due))
        }
        Lost::Cannot(why) => unprovable(s, w, &why).await,
    }
}

/// The lost submit was created: the job goes on from its request.
async fn adopt(
    s: &Shared,
    w: &UnknownWork,
    adopted: crate::api::history::HistoryRow,
    duplicates: Vec<crate::api::history::HistoryRow>,
) -> anyhow::Result<Next> {
    let charge = |row: &crate::api::history::HistoryRow, how: &'static str| Charge {
        request_id: row.request_id.clone(),
        job_seq: w.seq,
        status: Some(format!("{:?}", row.status).to_ascii_uppercase()),
        credits: row.credits,
        created_at: row.created_at_ms,
        generation_url: row.generation_url.clone(),
        how,
    };
    let rid = adopted.request_id.clone();
    let submitted_at = adopted.created_at_ms.unwrap_or(w.started_at);
    let (status_url, response_url) = s.api.urls_of(&rid);
    let dups: Vec<Charge> = duplicates.iter().map(|d| charge(d, "duplicate")).collect();
    tracing::info!(
        request_id = %rid,
        duplicates = dups.len(),
        "the lost submit is in the request history: adopting its request (no new submit)"
    );
    let row = s
        .store
        .adopt_request(
            w.seq,
            w.attempt,
            &charge(&adopted, "adopted"),
            &status_url,
            &response_url,
            submitted_at,
            &dups,
        )
        .await?;
    then(row, |row| polling(row, &class_of(&w.params), false, 0))
}

/// The history cannot tell: `--on-unknown` decides, as before it existed.
async fn unprovable(s: &Shared, w: &UnknownWork, why: &str) -> anyhow::Result<Next> {
    tracing::warn!(error = %why, "the request history cannot tell whether the lost submit was created");
    s.store.unprovable(w.seq).await?;
    if s.cfg.on_unknown != UnknownPolicy::Resubmit {
        return Ok(Next::Nothing);
    }
    let max = i64::from(s.cfg.max_resubmits);
    if w.resubmits >= max {
        let why = format!(
            "its submit answer was lost {}; not submitted again (--max-resubmits {max}): Segmind may have \
             made it (and billed it): `wanbatch reconcile` tells",
            crate::figures::times(w.resubmits + 1)
        );
        s.store.fail_unknown(w.seq, &why).await?;
        return Ok(Next::Nothing);
    }
    let row = s.store.resubmit_unknown_job(w.seq).await?;
    then(row, waiting)
}
