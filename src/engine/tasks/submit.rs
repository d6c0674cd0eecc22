//! Submitting a job: the intent is committed before the POST leaves; the answer decides the
//! job's next step (at Segmind, waiting again, unknown, or failed).

use std::sync::Arc;

use super::{finish, note, then, waiting};
use crate::api::{ApiError, Submitted};
use crate::engine::agenda::Next;
use crate::engine::shared::{class_of, Event, Shared};
use crate::engine::UnknownPolicy;
use crate::state::JobState;
use crate::store::{now_ms, PollWork, SubmitWork};

/// Submits a job: claims it first (the intent committed before the POST leaves) unless the
/// dispatcher already did (`claimed`, the attempt number).
pub async fn submit(s: Arc<Shared>, w: SubmitWork, claimed: Option<i64>) {
    let r = async {
        let attempt = match claimed {
            Some(attempt) => attempt,
            None => match s.store.claim_submit(w.seq).await? {
                Some(attempt) => attempt,
                // No longer waiting (cancelled beside the run).
                None => return Ok(Next::Nothing),
            },
        };
        submit_inner(&s, &w, attempt).await
    }
    .await;
    finish(&s, w.seq, r).await;
}

#[tracing::instrument(skip_all, fields(job = %w.id))]
async fn submit_inner(s: &Shared, w: &SubmitWork, attempt: i64) -> anyhow::Result<Next> {
    let result = s.api.submit(&w.params).await;
    let now = now_ms();
    note(s, &result);
    match result {
        Ok((sub, meta)) => {
            s.note_meta(&meta);
            accepted(s, w, attempt, sub, now).await
        }
        Err(e) if e.maybe_arrived() => lost(s, w, attempt, e, now).await,
        Err(ApiError::NotSent(msg)) => {
            // Provably never arrived: retry silently after a pause.
            tracing::warn!(error = %msg, "submit could not connect; will retry");
            let due = now + s.schedule.backoff(1).as_millis() as i64;
            let applied = s
                .store
                .record_submit_ended(w.seq, attempt, JobState::Pending, "not_sent", &msg, due)
                .await?;
            let _ = s.events.send(Event::SubmitTrouble);
            Ok(then(applied, || waiting(w, w.polls, due)))
        }
        Err(ApiError::RateLimited { .. }) => {
            let applied = s
                .store
                .record_submit_ended(w.seq, attempt, JobState::Pending, "refused", "429 rate limited", now)
                .await?;
            Ok(then(applied, || waiting(w, w.polls, now)))
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
    let applied = loop {
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
            Ok(applied) => break applied,
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
    Ok(then(applied, || {
        Next::Poll(PollWork {
            seq: w.seq,
            id: w.id.clone(),
            params: w.params.clone(),
            request_id: sub.request_id.clone(),
            status_url: Some(sub.status_url.clone()),
            response_url: Some(sub.response_url.clone()),
            submitted_at: now,
            last_pending_at: None,
            attempt_polls: 0,
            errors_in_row: 0,
            attempts: attempt,
            polls: w.polls,
            due_at: first,
            resubmits: w.resubmits,
            class,
            via_status: false,
            extra_polls: 0,
        })
    }))
}

/// The answer was lost: Segmind may or may not have created (and billed) the job.
async fn lost(s: &Shared, w: &SubmitWork, attempt: i64, e: ApiError, now: i64) -> anyhow::Result<Next> {
    tracing::warn!(error = %e, "submit answer lost: Segmind may have created the job");
    let applied = s
        .store
        .record_submit_ended(w.seq, attempt, JobState::Unknown, "unknown", &e.to_string(), now)
        .await?;
    // A 2xx we cannot follow or a redirect would recur on every submit, each maybe billed: hold
    // the job and stop instead of resubmitting.
    if let Some(stop) = e.account_stop() {
        let _ = s.events.send(Event::Account(stop));
        return Ok(Next::Nothing);
    }
    let _ = s.events.send(Event::SubmitTrouble);
    if !applied || s.cfg.on_unknown != UnknownPolicy::Resubmit {
        return Ok(Next::Nothing);
    }
    let max = i64::from(s.cfg.max_resubmits);
    if w.resubmits >= max {
        let why = format!(
            "its submit answer was lost {} times ({e}); not submitted again (--max-resubmits {max}): \
             Segmind may have made it",
            w.resubmits + 1
        );
        tracing::error!("{why}");
        s.store.fail_unknown(w.seq, &why).await?;
        return Ok(Next::Nothing);
    }
    let back = s.store.resubmit_unknown_job(w.seq).await?;
    Ok(then(back, || {
        Next::Submit(SubmitWork {
            due_at: now,
            resubmits: w.resubmits + 1,
            ..w.clone()
        })
    }))
}

/// Refused without a job: an account stop (the job waits), or a request that is itself wrong.
async fn refused(s: &Shared, w: &SubmitWork, attempt: i64, e: ApiError, now: i64) -> anyhow::Result<Next> {
    if let Some(stop) = e.account_stop() {
        let applied = s
            .store
            .record_submit_ended(w.seq, attempt, JobState::Pending, "refused", &e.to_string(), now)
            .await?;
        let _ = s.events.send(Event::Account(stop));
        return Ok(then(applied, || waiting(w, w.polls, now)));
    }
    // 400 and other 4xx: the body itself is wrong; submitting it again cannot help.
    tracing::warn!(error = %e, "submit rejected");
    s.store
        .record_submit_ended(w.seq, attempt, JobState::Failed, "rejected", &e.to_string(), now)
        .await?;
    Ok(Next::Nothing)
}
