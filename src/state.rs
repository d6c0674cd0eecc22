//! The job state machine: every state a job can be in and every allowed move between them.
//!
//! ```text
//!              import
//!                │
//!                ▼
//!   ┌────────▶ pending ──claim: attempt n written──▶ submitting ──200 + request_id──▶ running
//!   │            ▲  ▲                                 │     │  │                       │ │ │
//!   │            │  └─ never reached the server, ─────┘     │  │ 400: rejected         │ │ │
//!   │            │     401/403/406/429 (not billed)         │  └──────▶ failed ◀───────┘ │ │ 422 FAILED
//!   │            │                                          │ answer lost (timeout,      │ │
//!   │            │   policy `resubmit` (counted,            │ reset, 5xx) or crash       │ │
//!   │            └── maybe billed twice) ◀── unknown ◀──────┘                            │ │
//!   │                   (found in the request history: unknown ──adopted──▶ running)     │ │
//!   │                              (policy `hold`: stays until `retry`; past             │ │
//!   │                               --max-resubmits: failed)                             │ │
//!   └── 404: record expired before its result was fetched (counted) ◀──────────────────┘ │
//!                                                            COMPLETED + output URL      │
//!                                         done ◀── verified file renamed ── downloading ◀┘
//!                          (a video that cannot be fetched for good: downloading → failed)
//!
//!   pending ──`wanbatch cancel`──▶ cancelled ──`retry --ids`──▶ pending
//!   done (a reviewer rejected its video) ──`retry --rejected`: another take, counted──▶ pending
//!   pending ──its local image changed since import, or was refused by the storage──▶ failed
//! ```
//!
//! Invariants:
//! - `done`, `failed` and `cancelled` are terminal; only an explicit user `retry` moves a job out
//!   of them (out of `done`, only `retry --rejected`, for a video a reviewer rejected).
//! - Only a `pending` job can be cancelled: it has no attempt at Segmind in flight. A job that
//!   was (or may have been) submitted cannot be withdrawn — the API has no cancel — so it is
//!   worked to its end and billed.
//! - A job in `submitting` has an open attempt row written *before* its POST left; finding one
//!   at start-up means the process died inside the submit window, so it becomes `unknown`.
//! - `running` and `downloading` always carry the request_id/URLs they act on, committed before
//!   anything acted on them.
//! - Every transition in `store` goes through one door (`store::door`): checked against
//!   [`JobState::can_move_to`], one SQL statement guarded by the expected current state (bound,
//!   never spelled in SQL), so a stale worker can never overwrite newer truth.

use std::fmt;
use std::str::FromStr;

/// Where a job stands. Stored in `jobs.state` as the lowercase name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Waiting to be submitted (new, or to be submitted again).
    Pending,
    /// A submit intent is recorded and the POST may be on the wire.
    Submitting,
    /// A submit whose answer was lost: Segmind may or may not have created (and billed) a job.
    Unknown,
    /// Accepted by Segmind; request_id saved; polled until it ends.
    Running,
    /// COMPLETED; the output URL is saved and the video is being fetched.
    Downloading,
    /// The video is verified on disk at `OUT/ID.mp4`.
    Done,
    /// Ended without a video; `error` says why.
    Failed,
    /// Withdrawn by the user before it was submitted (`wanbatch cancel`). Finished, not failed: a
    /// run whose other jobs are all done exits 0.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Pending,
        JobState::Submitting,
        JobState::Unknown,
        JobState::Running,
        JobState::Downloading,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Submitting => "submitting",
            JobState::Unknown => "unknown",
            JobState::Running => "running",
            JobState::Downloading => "downloading",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }

    /// The moves the engine and the commands may make. Every transition in `store` goes through
    /// one door that refuses any other (a change that keeps the state is always allowed), and
    /// the unit test below pins the diagram above.
    pub fn can_move_to(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Pending, Submitting)
                | (Submitting, Running)
                | (Submitting, Pending)
                | (Submitting, Unknown)
                | (Submitting, Failed)
                | (Unknown, Pending)
                | (Unknown, Failed)
                | (Unknown, Running)
                | (Running, Running)
                | (Running, Downloading)
                | (Running, Failed)
                | (Running, Pending)
                | (Downloading, Done)
                | (Downloading, Pending)
                | (Downloading, Failed)
                | (Failed, Pending)
                | (Pending, Cancelled)
                | (Pending, Failed)
                | (Cancelled, Pending)
                // A video a reviewer rejected (`wanbatch review apply`) is taken again on request
                // (`retry --rejected`): the earlier file is kept aside, the new take is counted.
                | (Done, Pending)
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// How one submit attempt ended, as its row in `attempts` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// Segmind accepted it: the attempt has a request id (the answer, or the request history).
    Accepted,
    /// It never reached the server (connection refused, DNS, a local upload failed): not billed.
    NotSent,
    /// Refused without a job (401/403/406/429): not billed; the job waits.
    Refused,
    /// The answer was lost: Segmind may have created (and billed) it.
    Unknown,
    /// The request itself is wrong (400 and other 4xx, 422 not FAILED): the job fails.
    Rejected,
    /// Its request completed (the video was made).
    Completed,
    /// Its request failed at Segmind (FAILED).
    Failed,
    /// Its record expired before the result was fetched.
    Expired,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 8] = [
        AttemptOutcome::Accepted,
        AttemptOutcome::NotSent,
        AttemptOutcome::Refused,
        AttemptOutcome::Unknown,
        AttemptOutcome::Rejected,
        AttemptOutcome::Completed,
        AttemptOutcome::Failed,
        AttemptOutcome::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Accepted => "accepted",
            AttemptOutcome::NotSent => "not_sent",
            AttemptOutcome::Refused => "refused",
            AttemptOutcome::Unknown => "unknown",
            AttemptOutcome::Rejected => "rejected",
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Expired => "expired",
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    #[test]
    fn names_round_trip() {
        for st in JobState::ALL {
            assert_eq!(st.as_str().parse::<JobState>().unwrap(), st);
        }
        assert!("queued".parse::<JobState>().is_err());
    }

    #[test]
    fn terminal_states_only_leave_by_retry() {
        for to in JobState::ALL {
            // `retry --rejected` is the one way out of done.
            assert_eq!(
                Done.can_move_to(to),
                to == Pending,
                "done must be final but for a retake, not -> {to}"
            );
        }
        assert!(Failed.can_move_to(Pending));
        assert!(!Failed.can_move_to(Running));
        assert!(Cancelled.is_terminal());
        assert!(Cancelled.can_move_to(Pending));
    }

    #[test]
    fn only_a_pending_job_can_be_cancelled() {
        for from in JobState::ALL {
            assert_eq!(from.can_move_to(Cancelled), from == Pending, "{from}");
        }
    }

    #[test]
    fn a_job_is_only_submitted_from_pending() {
        for from in JobState::ALL {
            assert_eq!(from.can_move_to(Submitting), from == Pending, "{from}");
        }
    }
}
