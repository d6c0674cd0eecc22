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
use crate::store::SubmitWork;

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

/// The job's next step if the guarded write applied (else another step owns the job now).
pub(super) fn then(applied: bool, next: impl FnOnce() -> Next) -> Next {
    if applied {
        next()
    } else {
        Next::Nothing
    }
}

/// The job back in the queue of waiting jobs, due at `due_at`.
pub(super) fn waiting(w: &SubmitWork, polls: i64, due_at: i64) -> Next {
    Next::Submit(SubmitWork {
        polls,
        due_at,
        ..w.clone()
    })
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
