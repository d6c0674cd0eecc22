//! The three kinds of work the dispatcher spawns: submit, poll, download. Each records what it
//! learnt in the store before reporting back, so nothing it learnt is lost if the run stops.

use std::sync::Arc;

use super::agenda::Next;
use super::download::{self, DownloadError};
use super::{Event, Shared, UnknownPolicy};
use crate::api::{ApiError, Poll};
use crate::manifest::Params;
use crate::state::JobState;
use crate::store::{now_ms, Completed, DownloadWork, PollWork, SubmitWork};

/// Reports the task's end whatever happens, with the job's next step (what the task recorded),
/// and turns store errors into a run stop.
async fn finish(s: &Shared, seq: i64, result: anyhow::Result<Next>) {
    let next = match result {
        Ok(next) => next,
        Err(e) => {
            tracing::error!(job_seq = seq, error = %format!("{e:#}"), "database error");
            let _ = s.events.send(Event::Local(format!("database error: {e:#}")));
            Next::Nothing
        }
    };
    let _ = s.events.send(Event::Finished(seq, next));
}

/// The job's next step if the guarded write applied (else another step owns the job now).
fn then(applied: bool, next: impl FnOnce() -> Next) -> Next {
    if applied {
        next()
    } else {
        Next::Nothing
    }
}

/// The job back in the queue of waiting jobs, due at `due_at`.
fn waiting(w: &SubmitWork, polls: i64, due_at: i64) -> Next {
    Next::Submit(SubmitWork {
        polls,
        due_at,
        ..w.clone()
    })
}

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
            // Logged (at info) before it is recorded; if recording fails for good, the error that
            // stops the run names the paid request id, so it is never silently lost.
            tracing::info!(request_id = %sub.request_id, "submit accepted");
            let class = Params::from_json(&w.params)
                .map(|p| p.duration_class())
                .unwrap_or_default();
            let first = s.poll_slot(s.schedule.first_poll_at(&class, now).await, now);
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
                })
            }))
        }
        Err(e) if e.maybe_arrived() => {
            tracing::warn!(error = %e, "submit answer lost: Segmind may have created the job");
            let applied = s
                .store
                .record_submit_ended(w.seq, attempt, JobState::Unknown, "unknown", &e.to_string(), now)
                .await?;
            // A 2xx we cannot follow or a redirect would recur on every submit, each maybe
            // billed: hold the job and stop instead of resubmitting.
            match e.account_stop() {
                Some(stop) => {
                    let _ = s.events.send(Event::Account(stop));
                    Ok(Next::Nothing)
                }
                None => {
                    let mut next = Next::Nothing;
                    if applied && s.cfg.on_unknown == UnknownPolicy::Resubmit {
                        let back = s.store.resubmit_unknown_job(w.seq).await?;
                        next = then(back, || waiting(w, w.polls, now));
                    }
                    let _ = s.events.send(Event::SubmitTrouble);
                    Ok(next)
                }
            }
        }
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
        Err(e) => {
            if let Some(stop) = e.account_stop() {
                let applied = s
                    .store
                    .record_submit_ended(w.seq, attempt, JobState::Pending, "refused", &e.to_string(), now)
                    .await?;
                let _ = s.events.send(Event::Account(stop));
                Ok(then(applied, || waiting(w, w.polls, now)))
            } else {
                // 400 and other 4xx: the body itself is wrong; submitting it again cannot help.
                tracing::warn!(error = %e, "submit rejected");
                s.store
                    .record_submit_ended(w.seq, attempt, JobState::Failed, "rejected", &e.to_string(), now)
                    .await?;
                Ok(Next::Nothing)
            }
        }
    }
}

/// Tells the gate how an API call went: a 429 pauses everyone and slows the pace, anything else
/// lets the pace creep back up.
fn note<T>(s: &Shared, result: &Result<T, ApiError>) {
    s.tele.request();
    match result {
        Err(ApiError::RateLimited { until }) => s.gate.on_rate_limited(*until),
        Err(ApiError::NotSent(_)) => {}
        _ => s.gate.on_success(),
    }
    match result {
        Err(e @ (ApiError::NotSent(_) | ApiError::Lost(_))) => s.reach.unanswered(e),
        _ => s.reach.answered(),
    }
    if let Err(e) = result {
        s.tele.error(e);
    }
}

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

pub async fn download(s: Arc<Shared>, w: DownloadWork) {
    let r = download_inner(&s, &w).await;
    finish(&s, w.seq, r).await;
}

/// How many times, and for how long after COMPLETED, a video host must answer 404/410 before we
/// believe the video is gone.
const GONE_TRIES: i64 = 5;
const GONE_AFTER_MS: i64 = 10 * 60 * 1000;
/// Consecutive download failures (of other kinds) before the job is failed with the reason.
const GIVE_UP_TRIES: i64 = 30;

#[tracing::instrument(skip_all, fields(job = %w.id))]
async fn download_inner(s: &Shared, w: &DownloadWork) -> anyhow::Result<Next> {
    let expected = w.output_size.and_then(|n| u64::try_from(n).ok());
    let result = download::fetch(
        &s.dl,
        &w.output_url,
        &s.cfg.out_dir,
        &w.id,
        &w.request_id,
        expected,
        s.cfg.max_video_bytes,
    )
    .await;
    let now = now_ms();
    match result {
        Ok(f) => {
            // The sidecar goes in before the job is recorded done, so every done job has one;
            // if it cannot be written, stop like any local write problem (the job stays
            // downloading, and the next run fetches and writes again).
            let sidecar = match crate::provenance::write_for_download(&s.store, &s.cfg.out_dir, w, &f).await {
                Ok(written) => written,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot write the provenance sidecar");
                    let _ = s.events.send(Event::Local(format!("{e:#}")));
                    return Ok(Next::Nothing);
                }
            };
            // Both files durable (with whatever else finished meanwhile) before the job is done.
            let files: Vec<_> = std::iter::once(f.path.clone()).chain(sidecar).collect();
            if let Err(e) = s.syncer.sync(&s.cfg.out_dir, &files).await {
                let msg = format!("cannot make videos durable in {}: {e}", s.cfg.out_dir.display());
                tracing::error!("{msg}");
                let _ = s.events.send(Event::Local(msg));
                return Ok(Next::Nothing);
            }
            let path = f.path.to_string_lossy();
            s.store
                .record_downloaded(w.seq, &w.request_id, &path, f.bytes as i64, &f.sha256)
                .await?;
            tracing::debug!(bytes = f.bytes, "downloaded");
            Ok(Next::Nothing)
        }
        Err(e @ DownloadError::Local { .. }) => {
            // Our disk, not the job: stop the run, keep the job waiting for its download.
            tracing::error!(error = %e, "cannot write videos");
            s.tele.error(format_args!("cannot write videos: {e}"));
            let _ = s.events.send(Event::Local(e.to_string()));
            Ok(Next::Nothing)
        }
        Err(DownloadError::Gone(code))
            if w.errors_in_row + 1 >= GONE_TRIES && now - w.completed_at.unwrap_or(now) >= GONE_AFTER_MS =>
        {
            // Only a video missing for a long while counts as gone: the file is kept 7 days, and
            // a host that briefly answers 404 must not cost a second payment.
            let why = format!("the video is gone from its host (HTTP {code})");
            download::remove_part(&s.cfg.out_dir, &w.id, &w.request_id).await;
            let applied = s
                .store
                .record_expired(w.seq, JobState::Downloading, &w.request_id, &why)
                .await?;
            if !applied {
                return Ok(Next::Nothing);
            }
            // The job's parameters and poll count are not part of a download's work: read them.
            Ok(match s.store.pending_after(w.seq - 1, 1).await?.pop() {
                Some(job) if job.seq == w.seq => Next::Submit(job),
                _ => Next::Nothing,
            })
        }
        Err(e) if w.errors_in_row + 1 >= GIVE_UP_TRIES && !matches!(e, DownloadError::Gone(_)) => {
            // A permanent problem (an unusable URL, a file over the limit, a host that keeps
            // refusing): fail the job with the reason rather than retry for ever. It was paid
            // for, so it is not resubmitted; `wanbatch retry --ids` does that on request.
            let why = format!("download failed {GIVE_UP_TRIES} times, last: {e}");
            download::remove_part(&s.cfg.out_dir, &w.id, &w.request_id).await;
            s.store.record_download_failed(w.seq, &w.request_id, &why).await?;
            Ok(Next::Nothing)
        }
        Err(e) => {
            tracing::warn!(error = %e, "download failed; will retry");
            s.tele.error(format_args!("download: {e}"));
            let due = now + s.schedule.backoff(w.errors_in_row).as_millis() as i64;
            let applied = s
                .store
                .record_retry_later(w.seq, JobState::Downloading, &w.request_id, due, false)
                .await?;
            Ok(then(applied, || {
                Next::Download(
                    DownloadWork {
                        errors_in_row: w.errors_in_row + 1,
                        ..w.clone()
                    },
                    due,
                )
            }))
        }
    }
}
