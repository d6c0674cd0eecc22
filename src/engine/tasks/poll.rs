//! Polling a job at Segmind: still running, completed (its output URL recorded before anything
//! fetches it), failed, expired, or a transient error to retry.
//!
//! A 404 means "expired" only when it can: for a request younger than the record's lifetime
//! (less a margin) it is an anomaly — logged, the job polled through the status endpoint from
//! then on, and never a reason to pay again. An expired job is bought again only up to
//! `--max-resubmits` times; past that it fails, naming the cause and the count.

use std::sync::Arc;

use super::{fetching, finish, note, polling, then, waiting};
use crate::api::{ApiError, Output, Poll};
use crate::engine::agenda::Next;
use crate::engine::history::{find_expired, Expired};
use crate::engine::route::Endpoint;
use crate::engine::schedule::Answer;
use crate::engine::shared::{Event, Shared};
use crate::state::JobState;
use crate::store::{now_ms, Completed, JobRow, PollWork};

/// Polls a job; `early`: on a permit the budget had no planned use for.
pub async fn poll(s: Arc<Shared>, w: PollWork, early: bool) {
    let r = poll_inner(&s, &w, early).await;
    finish(&s, w.seq, r).await;
}

#[tracing::instrument(skip_all, fields(job = %w.id, request_id = %w.request_id))]
async fn poll_inner(s: &Shared, w: &PollWork, early: bool) -> anyhow::Result<Next> {
    let endpoint = s.route.endpoint(w.via_status);
    let (rid, status_url, response_url) = (&w.request_id, w.status_url.as_deref(), w.response_url.as_deref());
    let mut result = match endpoint {
        Endpoint::Status => s.api.status(rid, status_url).await,
        Endpoint::Result | Endpoint::Probe => s.api.result(rid, response_url).await,
    };
    note(s, &result);
    let mut asked = endpoint;
    // Status said COMPLETED: fetch the result (one more request, inside the budget).
    if let Ok((Poll::Completed(None), _)) = result {
        if endpoint == Endpoint::Status {
            s.gate.acquire().await;
            result = s.api.result(rid, response_url).await;
            note(s, &result);
            asked = Endpoint::Result;
        }
    }
    if endpoint == Endpoint::Probe && !matches!(result, Ok((Poll::Pending(_), _)) | Err(ApiError::NotFound(_))) {
        s.route.probe_inconclusive();
    }
    if let Ok((_, meta)) = &result {
        s.note_meta(meta);
    }
    let now = now_ms();
    match result {
        Ok((Poll::Pending(state), _)) => pending(s, w, endpoint, &state, early, now).await,
        Ok((Poll::Completed(Some(out)), _)) => completed(s, w, out, endpoint, now).await,
        Ok((Poll::Completed(None), _)) => {
            // COMPLETED but no usable output URL even from the result endpoint: the job was paid
            // for, and waiting would only let the record expire and trigger a resubmit.
            let msg = "Segmind reported COMPLETED but gave no output URL";
            tracing::error!("{msg}");
            s.schedule.forget(&w.class, w.seq);
            s.store.record_failed(w.seq, &w.request_id, msg).await?;
            Ok(Next::Nothing)
        }
        Ok((Poll::Failed(msg), _)) => {
            tracing::info!(error = %msg, "job failed at Segmind");
            s.tele.error(format_args!("{}: failed at Segmind: {msg}", w.id));
            s.schedule.forget(&w.class, w.seq);
            s.store.record_failed(w.seq, &w.request_id, &msg).await?;
            Ok(Next::Nothing)
        }
        Err(ApiError::NotFound(msg)) => not_found(s, w, asked, &msg, now).await,
        Err(ApiError::RateLimited { .. }) => {
            let row = s
                .store
                .record_retry_later(w.seq, JobState::Running, &w.request_id, now, false)
                .await?;
            then(row, repoll(w))
        }
        Err(e @ ApiError::Rejected { .. }) => {
            // A 4xx that is not FAILED: the request for this job is wrong; asking again the
            // same way cannot help. Failed with the reason (`retry --ids` resubmits on request).
            let why = format!("polling the job failed: {e}");
            tracing::warn!("{why}");
            s.schedule.forget(&w.class, w.seq);
            s.store.record_failed(w.seq, &w.request_id, &why).await?;
            Ok(Next::Nothing)
        }
        Err(e) => trouble(s, w, asked, e, now).await,
    }
}

/// Still QUEUED or PROCESSING (or a state we do not know, taken as running).
async fn pending(
    s: &Shared,
    w: &PollWork,
    endpoint: Endpoint,
    state: &str,
    early: bool,
    now: i64,
) -> anyhow::Result<Next> {
    let answer = match state {
        "QUEUED" => Answer::Queued,
        "PROCESSING" => Answer::Processing,
        other => {
            tracing::warn!(status = %other, "unknown status from the API; treating it as still running");
            Answer::Processing
        }
    };
    if endpoint != Endpoint::Status {
        s.route.answered_pending(&s.store, state).await;
    }
    s.schedule.observe(&w.class, w.seq, w.submitted_at, now, answer).await;
    let next = s.poll_slot(s.schedule.next_poll_at(&w.class, w.submitted_at, now, now), now);
    let row = s.store.record_pending(w.seq, &w.request_id, next).await?;
    then(row, |row| {
        polling(row, &w.class, w.via_status, w.extra_polls + i64::from(early))
    })
}

/// COMPLETED with its output: recorded before anything fetches it.
async fn completed(s: &Shared, w: &PollWork, out: Output, endpoint: Endpoint, now: i64) -> anyhow::Result<Next> {
    // The requests this video cost as planned: the submits, the planned polls, and the one that
    // saw it done (two when the status endpoint said so first).
    let seen_by = if endpoint == Endpoint::Status { 2 } else { 1 };
    s.observe_cost(w.attempts + w.polls - w.extra_polls + seen_by);
    s.schedule
        .observe(&w.class, w.seq, w.submitted_at, now, Answer::Done)
        .await;
    let done = Completed {
        output_url: &out.url,
        output_size: out.file_size.map(|n| n as i64),
        cost: out.cost,
    };
    let row = s.store.record_completed(w.seq, &w.request_id, done).await?;
    tracing::debug!("completed");
    then(row, |row| fetching(row, 0))
}

/// A 404: expired if the request is old enough, else an anomaly that costs nothing.
async fn not_found(s: &Shared, w: &PollWork, asked: Endpoint, msg: &str, now: i64) -> anyhow::Result<Next> {
    let age = now - w.submitted_at;
    if age >= s.expiry_age_ms() {
        return expired(s, w, msg, age).await;
    }
    let age_s = age as f64 / 1000.0;
    if asked != Endpoint::Status {
        // The result endpoint does not serve this request yet: not a lost result. The job is
        // polled through the status endpoint from now on.
        tracing::warn!(
            age_secs = age_s,
            "the result endpoint answered 404 for a request too young to have expired; polling its status instead"
        );
        s.route
            .contradicted(
                &s.store,
                &format!("the result endpoint answered 404 for a request {age_s:.1} s old"),
            )
            .await;
        let row = s
            .store
            .record_retry_later(w.seq, JobState::Running, &w.request_id, now, true)
            .await?;
        return then(row, |row| polling(row, &w.class, true, w.extra_polls + 1));
    }
    // The status endpoint itself: a glitch. Asked again later, never bought again for it.
    tracing::warn!(age_secs = age_s, error = %msg, "404 for a request too young to have expired; asking again later");
    let due = now + s.schedule.backoff(w.errors_in_row).as_millis() as i64;
    let row = s
        .store
        .record_retry_later(w.seq, JobState::Running, &w.request_id, due, true)
        .await?;
    then(row, repoll(w))
}

/// The record expired before the result was fetched. The request history may still have its
/// video (files are kept for days): then it is downloaded, nothing bought again. Otherwise the
/// video must be bought again — at most `--max-resubmits` times.
async fn expired(s: &Shared, w: &PollWork, msg: &str, age: i64) -> anyhow::Result<Next> {
    s.schedule.on_expired(&w.class, w.seq, age);
    let now = now_ms();
    match find_expired(s, &w.request_id).await {
        Expired::Video { url, credits } => {
            tracing::info!("the result's record expired, but the request history has its video: fetching it (nothing bought again)");
            let row = s
                .store
                .recovered_from_history(w.seq, &w.request_id, &url, credits)
                .await?;
            return then(row, |row| fetching(row, 0));
        }
        Expired::Failed(why) => {
            tracing::info!(error = %why, "the expired request failed, the request history says");
            s.store.record_failed(w.seq, &w.request_id, &why).await?;
            return Ok(Next::Nothing);
        }
        Expired::Cannot(why) if w.errors_in_row < HISTORY_TRIES => {
            // Not a reason to pay again yet: ask again a little later.
            tracing::warn!(error = %why, "the request history cannot answer for an expired result; asking again later");
            let due = now + s.schedule.backoff(w.errors_in_row + 2).as_millis() as i64;
            let row = s
                .store
                .record_retry_later(w.seq, JobState::Running, &w.request_id, due, true)
                .await?;
            return then(row, repoll(w));
        }
        Expired::Cannot(_) | Expired::Gone => {}
    }
    let max = i64::from(s.cfg.max_resubmits);
    if w.resubmits >= max {
        let why = format!(
            "the result expired before it was fetched ({msg}); it was bought {}, and --max-resubmits {max} \
             allows no more",
            crate::figures::times(w.resubmits + 1)
        );
        tracing::error!("{why}");
        s.tele.error(format_args!("{}: {why}", w.id));
        s.store.record_failed(w.seq, &w.request_id, &why).await?;
        return Ok(Next::Nothing);
    }
    tracing::warn!(error = %msg, "result expired before it was fetched; the job will be submitted again");
    let why = format!("result expired before it was fetched ({msg})");
    let row = s
        .store
        .record_expired(w.seq, JobState::Running, &w.request_id, &why)
        .await?;
    then(row, waiting)
}

/// Anything else: an account stop, or trouble to wait out (a GET is always safe to repeat).
async fn trouble(s: &Shared, w: &PollWork, asked: Endpoint, e: ApiError, now: i64) -> anyhow::Result<Next> {
    if let Some(stop) = e.account_stop() {
        let _ = s.events.send(Event::Account(stop));
        // A 406 lets polling go on: do not repoll this job with every permit.
        let due = now + s.schedule.backoff(w.errors_in_row).as_millis() as i64;
        let row = s
            .store
            .record_retry_later(w.seq, JobState::Running, &w.request_id, due, false)
            .await?;
        return then(row, repoll(w));
    }
    if matches!(e, ApiError::Protocol(_)) && asked != Endpoint::Status {
        // An answer of a shape nobody documented: the direct way is not to be trusted.
        s.route
            .contradicted(&s.store, &format!("the result endpoint gave an unexpected answer: {e}"))
            .await;
    }
    tracing::warn!(error = %e, "poll failed; will retry");
    let due = now + s.schedule.backoff(w.errors_in_row).as_millis() as i64;
    let row = s
        .store
        .record_retry_later(w.seq, JobState::Running, &w.request_id, due, true)
        .await?;
    then(row, repoll(w))
}

/// How many times the history is asked about an expired result before it is bought again.
const HISTORY_TRIES: i64 = 3;

/// The job at Segmind, polled again as its row says (after an error, or when due), keeping what
/// the engine alone knows of it.
fn repoll(w: &PollWork) -> impl FnOnce(JobRow) -> anyhow::Result<Next> + '_ {
    move |row| polling(row, &w.class, w.via_status, w.extra_polls)
}
