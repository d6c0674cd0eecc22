//! Submitting a job: the intent is committed before the POST leaves; the answer decides the
//! job's next step (at Segmind, waiting again, unknown, or failed).

use std::sync::Arc;

use super::{finish, note, polling, then, waiting};
use crate::api::{ApiError, Submitted};
use crate::engine::agenda::Next;
use crate::engine::shared::{class_of, Event, Shared};
use crate::engine::upload::UploadError;
use crate::state::{AttemptOutcome, JobState};
use crate::store::{now_ms, SubmitWork, UnknownWork};

/// Submits a job: makes its body (uploading its local images if need be), claims it (the intent
/// committed before the POST leaves) unless the dispatcher already did (`claimed`, the attempt
/// number), then sends it.
pub async fn submit(s: Arc<Shared>, w: SubmitWork, claimed: Option<i64>) {
    let r = async {
        if claimed.is_none() && s.store.runner().is_some_and(|r| !r.lease_fresh()) {
            // Several runners: this runner's heartbeat is late (it was paused, or the database
            // is slow), so another may be taking its jobs over. No submit goes until it beats.
            let mut w = w.clone();
            w.due_at = now_ms() + 500;
            return Ok(Next::Submit(w));
        }
        let body = match body(&s, &w).await {
            Ok(body) => body,
            Err(trouble) => return cannot_send(&s, &w, claimed, trouble).await,
        };
        let attempt = match claimed {
            Some(attempt) => attempt,
            None => match s.store.claim_submit(w.seq).await? {
                Some(attempt) => attempt,
                // No longer waiting (cancelled beside the run).
                None => return Ok(Next::Nothing),
            },
        };
        submit_inner(&s, &w, attempt, &body).await
    }
    .await;
    finish(&s, w.seq, r).await;
}

/// The body to send: the parameters, with each local image's uploaded URL.
async fn body(s: &Shared, w: &SubmitWork) -> Result<String, UploadError> {
    match &s.uploader {
        Some(up) => up.body(s, &w.params).await,
        None if w.params.contains("\"file:") => Err(UploadError::Job(
            "the job names a local image, and no upload endpoint is configured".into(),
        )),
        None => Ok(w.params.clone()),
    }
}

/// The body could not be made: the job fails (its image changed or is refused), waits (the
/// upload could not be made now), or the run stops (an account problem, the database).
async fn cannot_send(s: &Shared, w: &SubmitWork, claimed: Option<i64>, trouble: UploadError) -> anyhow::Result<Next> {
    let now = now_ms();
    let (to, outcome, why, due) = match trouble {
        UploadError::Local(e) => return Err(e),
        UploadError::Job(why) => {
            tracing::error!(error = %why, "the job cannot be submitted as imported");
            s.tele.error(format_args!("{}: {why}", w.id));
            (JobState::Failed, AttemptOutcome::Rejected, why, now)
        }
        UploadError::Api(e) => {
            let due = match e.account_stop() {
                Some(stop) => {
                    let _ = s.events.send(Event::Account(stop));
                    now
                }
                None => {
                    tracing::warn!(error = %e, "uploading images failed; will retry");
                    let _ = s.events.send(Event::SubmitTrouble);
                    now + s.schedule.backoff(1).as_millis() as i64
                }
            };
            (
                JobState::Pending,
                AttemptOutcome::NotSent,
                format!("uploading images: {e}"),
                due,
            )
        }
    };
    let row = match claimed {
        Some(attempt) => {
            s.store
                .record_submit_ended(w.seq, attempt, to, outcome, &why, due)
                .await?
        }
        None if to == JobState::Failed => s.store.fail_pending(w.seq, &why).await?,
        // Never claimed: it waits as it was, due later.
        None => {
            return Ok(Next::Submit(SubmitWork {
                due_at: due,
                ..w.clone()
            }))
        }
    };
    if to == JobState::Pending {
        then(row, waiting)
    } else {
        Ok(Next::Nothing)
    }
}

#[tracing::instrument(skip_all, fields(job = %w.id))]
async fn submit_inner(s: &Shared, w: &SubmitWork, attempt: i64, body: &str) -> anyhow::Result<Next> {
    if !s.store.still_submitting(w.seq).await? {
        // Several runners: this runner's heartbeat is late, or the job was taken over while it
        // was frozen after its claim. Its successor looks the job up; nothing is sent from here.
        tracing::warn!(job = %w.id, "not submitting: this runner no longer holds the job");
        return Ok(Next::Nothing);
    }
    let sent_at = now_ms();
    let result = s.api.submit(body).await;
    let now = now_ms();
    note(s, &result);
    match result {
        Ok((sub, meta)) => {
            s.note_meta(&meta);
            accepted(s, w, attempt, sub, now).await
        }
        Err(e) if e.maybe_arrived() => lost(s, w, attempt, e, sent_at, now).await,
        Err(ApiError::NotSent(msg)) => {
            // Provably never arrived: retry silently after a pause.
            tracing::warn!(error = %msg, "submit could not connect; will retry");
            let due = now + s.schedule.backoff(1).as_millis() as i64;
            let row = s
                .store
                .record_submit_ended(w.seq, attempt, JobState::Pending, AttemptOutcome::NotSent, &msg, due)
                .await?;
            let _ = s.events.send(Event::SubmitTrouble);
            then(row, waiting)
        }
        Err(ApiError::RateLimited { .. }) => {
            let row = s
                .store
                .record_submit_ended(
                    w.seq,
                    attempt,
                    JobState::Pending,
                    AttemptOutcome::Refused,
                    "429 rate limited",
                    now,
                )
                .await?;
            then(row, waiting)
        }
        Err(e) => refused(s, w, attempt, e, now).await,
    }
}

/// Accepted: the request id is recorded (and made durable) before anything acts on it.
async fn accepted(s: &Shared, w: &SubmitWork, attempt: i64, sub: Submitted, now: i64) -> anyhow::Result<Next> {
    // Logged (at info) before it is recorded; if recording fails for good, the error that stops
    // the run names the paid request id, so it is never silently lost.
    tracing::info!(request_id = %sub.request_id, "submit accepted");
    let class = class_of(&w.params);
    let first = s.poll_slot(s.schedule.first_poll_at(&class, now), now);
    // A paid request id must not be lost to a passing database error: try a few times.
    let mut tries = 0;
    let row = loop {
        let r = s
            .store
            .record_accepted_at(
                w.seq,
                attempt,
                &sub.request_id,
                &sub.status_url,
                &sub.response_url,
                first,
                now,
            )
            .await;
        match r {
            Ok(row) => break row,
            Err(e) if tries < 5 => {
                tries += 1;
                tracing::warn!(request_id = %sub.request_id, error = %e, "cannot record an accepted submit; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200 << tries)).await;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "request id {} of job {} was not recorded",
                    sub.request_id, w.id
                )))
            }
        }
    };
    tracing::debug!(request_id = %sub.request_id, "submitted");
    let _ = s.events.send(Event::SubmitOk);
    then(row, |row| polling(row, &class, false, 0))
}

/// The answer was lost: Segmind may or may not have created (and billed) the job. The request
/// history tells (`tasks::resolve`), not a guess.
async fn lost(s: &Shared, w: &SubmitWork, attempt: i64, e: ApiError, sent_at: i64, now: i64) -> anyhow::Result<Next> {
    tracing::warn!(error = %e, "submit answer lost: Segmind may have created the job; looking it up in the request history");
    let row = s
        .store
        .record_submit_ended(
            w.seq,
            attempt,
            JobState::Unknown,
            AttemptOutcome::Unknown,
            &e.to_string(),
            now,
        )
        .await?;
    // A 2xx we cannot follow or a redirect would recur on every submit, each maybe billed: hold
    // the job and stop instead of resubmitting.
    if let Some(stop) = e.account_stop() {
        let _ = s.events.send(Event::Account(stop));
        return Ok(Next::Nothing);
    }
    let _ = s.events.send(Event::SubmitTrouble);
    then(row, |row| {
        Ok(Next::Resolve(
            UnknownWork {
                seq: row.seq,
                id: row.id,
                params: row.params,
                attempt,
                started_at: sent_at,
                finished_at: Some(now),
                resubmits: row.resubmits,
            },
            now,
        ))
    })
}

/// Refused without a job: an account stop (the job waits), or a request that is itself wrong.
async fn refused(s: &Shared, w: &SubmitWork, attempt: i64, e: ApiError, now: i64) -> anyhow::Result<Next> {
    if let Some(stop) = e.account_stop() {
        let row = s
            .store
            .record_submit_ended(
                w.seq,
                attempt,
                JobState::Pending,
                AttemptOutcome::Refused,
                &e.to_string(),
                now,
            )
            .await?;
        let _ = s.events.send(Event::Account(stop));
        return then(row, waiting);
    }
    // 400 and other 4xx: the body itself is wrong; submitting it again cannot help.
    tracing::warn!(error = %e, "submit rejected");
    s.store
        .record_submit_ended(
            w.seq,
            attempt,
            JobState::Failed,
            AttemptOutcome::Rejected,
            &e.to_string(),
            now,
        )
        .await?;
    Ok(Next::Nothing)
}
