//! The three kinds of work the dispatcher spawns: submit, poll, download (`fetch`). Each records
//! what it learnt in the store before reporting back, so nothing it learnt is lost if the run
//! stops. What they share: how a task reports its end, and how an API call is noted.

pub mod fetch;
pub mod poll;
pub mod resolve;
pub mod submit;

use super::agenda::Next;
use super::shared::{Event, Shared};
use crate::api::ApiError;
use crate::store::JobRow;

/// Reports the task's end whatever happens, with the job's next step (what the task recorded),
/// and turns store errors into a run stop.
pub(super) async fn finish(s: &Shared, seq: i64, result: anyhow::Result<Next>) {
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

/// The job's next step, made from the row its transition wrote; None (the guard did not hold)
/// means another step owns the job now.
pub(super) fn then(row: Option<JobRow>, next: impl FnOnce(JobRow) -> anyhow::Result<Next>) -> anyhow::Result<Next> {
    match row {
        Some(row) => next(row),
        None => Ok(Next::Nothing),
    }
}

/// The job back among the waiting ones, as the row says (its polls, its due time).
pub(super) fn waiting(row: JobRow) -> anyhow::Result<Next> {
    Ok(Next::Submit(row.submit_work()))
}

/// The job at Segmind, polled as the row says; what the engine alone keeps of it (its class,
/// its route, its extra polls) carried over from `was`.
pub(super) fn polling(row: JobRow, class: &str, via_status: bool, extra_polls: i64) -> anyhow::Result<Next> {
    let mut w = row.poll_work()?;
    w.class = class.to_owned();
    w.via_status = via_status;
    w.extra_polls = extra_polls;
    Ok(Next::Poll(w))
}

/// The job's video, to fetch as the row says, at `due` (0: now).
pub(super) fn fetching(row: JobRow, due: i64) -> anyhow::Result<Next> {
    Ok(Next::Download(row.download_work()?, due))
}

/// Tells the gate how an API call went: a 429 pauses everyone and slows the pace, anything else
/// lets the pace creep back up.
pub(super) fn note<T>(s: &Shared, result: &Result<T, ApiError>) {
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
