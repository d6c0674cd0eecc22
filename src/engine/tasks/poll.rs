//! Polling a job at Segmind: still running, completed (its output URL recorded before anything
//! fetches it), failed, expired, or a transient error to retry.

use std::sync::Arc;

use super::{finish, note, then};
use crate::api::{ApiError, Poll};
use crate::engine::agenda::Next;
use crate::engine::shared::{Event, Shared};
use crate::manifest::Params;
use crate::state::JobState;
use crate::store::{now_ms, Completed, DownloadWork, PollWork, SubmitWork};

pub async fn poll(s: Arc<Shared>, w: PollWork) {
    let r = poll_inner(&s, &w).await;
    finish(&s, w.seq, r).await;
}

#[tracing::instrument(skip_all, fields(job = %w.id, request_id = %w.request_id))]
async fn poll_inner(s: &Shared, w: &PollWork) -> anyhow::Result<Next> {
    let class = Params::from_json(&w.params)
        .map(|p| p.duration_class())
        .unwrap_or_default();
    let (rid, status_url, response_url) = (&w.request_id, w.status_url.as_deref(), w.response_url.as_deref());
    let mut result = if s.cfg.poll_status_endpoint {
        s.api.status(rid, status_url).await
    } else {
        s.api.result(rid, response_url).await
    };
    note(s, &result);
    // Status said COMPLETED: fetch the result (one more request, inside the budget).
    if let Ok((Poll::Completed(None), _)) = result {
        s.gate.acquire().await;
        result = s.api.result(rid, response_url).await;
        note(s, &result);
    }
    if let Ok((_, meta)) = &result {
        s.note_meta(meta);
    }
    let nth = w.attempt_polls + 1;
    let scheduled = w.due_at - w.submitted_at;
    let now = now_ms();
    let store = &s.store;
    match result {
        Ok((Poll::Pending(state), _)) => {
            if !matches!(state.as_str(), "QUEUED" | "PROCESSING") {
                tracing::warn!(status = %state, "unknown status from the API; treating it as still running");
            }
            s.schedule.observe(&class, nth, false, scheduled).await;
            let next = s.poll_slot(s.schedule.next_poll_at(&class, w.submitted_at, nth, now).await, now);
            let applied = store.record_pending(w.seq, &w.request_id, next).await?;
            Ok(then(applied, || {
                Next::Poll(PollWork {
                    due_at: next,
                    attempt_polls: w.attempt_polls + 1,
                    polls: w.polls + 1,
                    errors_in_row: 0,
                    last_pending_at: Some(now),
                    ..w.clone()
                })
            }))
        }
        Ok((Poll::Completed(Some(out)), _)) => {
            s.observe_cost(w.attempts + w.polls + 1 + i64::from(s.cfg.poll_status_endpoint));
            s.schedule.observe(&class, nth, true, scheduled).await;
            let done = Completed {
                output_url: &out.url,
                output_size: out.file_size.map(|n| n as i64),
                cost: out.cost,
            };
            let applied = store.record_completed(w.seq, &w.request_id, done).await?;
            tracing::debug!("completed");
            Ok(then(applied, || {
                Next::Download(
                    DownloadWork {
                        seq: w.seq,
                        id: w.id.clone(),
                        request_id: w.request_id.clone(),
                        output_url: out.url.clone(),
                        output_size: out.file_size.map(|n| n as i64),
                        errors_in_row: 0,
                        completed_at: Some(now),
                    },
                    0,
                )
            }))
        }
        Ok((Poll::Completed(None), _)) => {
            // COMPLETED but no usable output URL even from the result endpoint: the job was paid
            // for, and waiting would only let the record expire and trigger a resubmit.
            let msg = "Segmind reported COMPLETED but gave no output URL";
            tracing::error!("{msg}");
            store.record_failed(w.seq, &w.request_id, msg).await?;
            Ok(Next::Nothing)
        }
        Ok((Poll::Failed(msg), _)) => {
            s.observe_cost(w.attempts + w.polls + 1);
            s.schedule.observe(&class, nth, true, scheduled).await;
            tracing::info!(error = %msg, "job failed at Segmind");
            s.tele.error(format_args!("{}: failed at Segmind: {msg}", w.id));
            store.record_failed(w.seq, &w.request_id, &msg).await?;
            Ok(Next::Nothing)
        }
        Err(ApiError::Expired(msg)) => {
            tracing::warn!(error = %msg, "result expired before it was fetched; the job will be submitted again");
            let why = format!("result expired before it was fetched ({msg})");
            let applied = store
                .record_expired(w.seq, JobState::Running, &w.request_id, &why)
                .await?;
            Ok(then(applied, || resubmit(w, w.polls + 1)))
        }
        Err(ApiError::RateLimited { .. }) => {
            let applied = store
                .record_retry_later(w.seq, JobState::Running, &w.request_id, now, false)
                .await?;
            Ok(then(applied, || repoll(w, now, false)))
        }
        Err(e) => {
            if let Some(stop) = e.account_stop() {
                let _ = s.events.send(Event::Account(stop));
                // A 406 lets polling go on: do not repoll this job with every permit.
                let due = now + s.schedule.backoff(w.errors_in_row).as_millis() as i64;
                let applied = store
                    .record_retry_later(w.seq, JobState::Running, &w.request_id, due, false)
                    .await?;
                Ok(then(applied, || repoll(w, due, false)))
            } else {
                // Transient (5xx, timeout, reset, malformed answer): a GET is always safe to
                // repeat, so back off and try again; after the hour the API answers 404.
                tracing::warn!(error = %e, "poll failed; will retry");
                let due = now + s.schedule.backoff(w.errors_in_row).as_millis() as i64;
                let applied = store
                    .record_retry_later(w.seq, JobState::Running, &w.request_id, due, true)
                    .await?;
                Ok(then(applied, || repoll(w, due, true)))
            }
        }
    }
}

/// A job at Segmind to poll again at `due` after an error (as `record_retry_later` wrote it).
fn repoll(w: &PollWork, due: i64, counted: bool) -> Next {
    Next::Poll(PollWork {
        due_at: due,
        errors_in_row: w.errors_in_row + 1,
        polls: w.polls + i64::from(counted),
        ..w.clone()
    })
}

/// A job whose result expired, waiting to be submitted again at once.
fn resubmit(w: &PollWork, polls: i64) -> Next {
    Next::Submit(SubmitWork {
        seq: w.seq,
        id: w.id.clone(),
        params: w.params.clone(),
        polls,
        due_at: 0,
    })
}
