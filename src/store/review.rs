//! Reviewers' decisions on videos (`wanbatch review apply`) and the retake of rejected ones
//! (`wanbatch retry --rejected`).
//!
//! A decision is not a state change: recording one is a plain `UPDATE` of `review`,
//! `review_note` and `reviewed_at`, guarded by the state the command checked (a keep or reject
//! is only for a `done` job, which has a video), all rows in one transaction so a file is
//! recorded whole or not at all. A retake *is* a state change (`done → pending`): it goes
//! through the door (`transition_all`), counted in `resubmits_rejected`.

use sqlx::FromRow;

use super::db;

use super::sql::Args;
use super::{now_ms, Store};
use crate::sql_args;
use crate::state::JobState;

/// A reviewer's verdict on a video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Keep,
    Reject,
}

impl Decision {
    /// As stored in `jobs.review` (and written in a decisions file).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Keep => "keep",
            Decision::Reject => "reject",
        }
    }

    /// `keep` or `reject`, in any case, surrounding spaces ignored.
    pub fn parse(text: &str) -> Option<Decision> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("keep") {
            Some(Decision::Keep)
        } else if t.eq_ignore_ascii_case("reject") {
            Some(Decision::Reject)
        } else {
            None
        }
    }
}

/// What the database holds about one job's review.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct ReviewOf {
    pub seq: i64,
    pub state: String,
    pub review: Option<String>,
    pub review_note: Option<String>,
}

/// One job's review as it is to be recorded: `decision` None clears it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewChange {
    pub seq: i64,
    pub decision: Option<Decision>,
    pub note: Option<String>,
}

/// The flags `status` counts: videos that differ from their request, and reviewers' verdicts.
#[derive(Debug, Clone, Default, PartialEq, FromRow, serde::Serialize)]
pub struct FlagTally {
    /// Done jobs whose video differs from its request (`video_mismatch`).
    pub mismatched: i64,
    pub keep: i64,
    pub reject: i64,
}

/// A done job a reviewer rejected, about to be taken again.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Rejected {
    pub seq: i64,
    pub id: String,
    /// Where wanbatch wrote its video.
    pub output_path: Option<String>,
    /// Rejected takes so far: this video is take `resubmits_rejected + 1`.
    pub resubmits_rejected: i64,
    pub review_note: Option<String>,
    pub reviewed_at: Option<i64>,
}

impl Store {
    /// The state and recorded review of the job `id`, if it exists.
    pub async fn review_of(&self, id: &str) -> anyhow::Result<Option<ReviewOf>> {
        db::query_as("SELECT seq, state, review, review_note FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await
    }

    /// Records every change in one transaction; a keep or reject only on a job that is still
    /// `done`. If any job no longer fits (it changed meanwhile), nothing is recorded and the error
    /// names it. Returns how many rows were written.
    pub async fn record_reviews(&self, changes: &[ReviewChange]) -> anyhow::Result<u64> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        for c in changes {
            let done = db::query(
                "UPDATE jobs SET review = ?1, review_note = ?2, reviewed_at = CASE WHEN ?1 IS NULL THEN NULL ELSE ?3 END
                 WHERE seq = ?4 AND (?1 IS NULL OR state = ?5)",
            )
            .bind(c.decision.map(Decision::as_str))
            .bind(c.note.as_deref())
            .bind(now)
            .bind(c.seq)
            .bind(JobState::Done.as_str())
            .execute(&mut tx)
            .await?;
            if done != 1 {
                // Dropping the transaction rolls it back: nothing of the file is recorded.
                anyhow::bail!(
                    "job #{} changed while the decisions were recorded; nothing was recorded",
                    c.seq
                );
            }
        }
        tx.commit().await?;
        Ok(changes.len() as u64)
    }

    /// Mismatched videos and reviewers' verdicts, counted over the `jobs_flags` partial index
    /// (only the few flagged jobs are read).
    pub async fn flag_tally(&self) -> anyhow::Result<FlagTally> {
        db::query_as(
            "SELECT COALESCE(SUM(CASE WHEN video_mismatch IS NOT NULL THEN 1 ELSE 0 END), 0) AS mismatched,
                    COALESCE(SUM(CASE WHEN review = 'keep' THEN 1 ELSE 0 END), 0) AS keep,
                    COALESCE(SUM(CASE WHEN review = 'reject' THEN 1 ELSE 0 END), 0) AS reject
             FROM jobs INDEXED BY jobs_flags WHERE video_mismatch IS NOT NULL OR review IS NOT NULL",
        )
        .fetch_one(&self.read)
        .await
    }

    /// Done jobs a reviewer rejected, in manifest order.
    pub async fn rejected_done(&self) -> anyhow::Result<Vec<Rejected>> {
        db::query_as(
            "SELECT seq, id, output_path, resubmits_rejected, review_note, reviewed_at
             FROM jobs INDEXED BY jobs_flags
             WHERE (video_mismatch IS NOT NULL OR review IS NOT NULL) AND review = 'reject' AND state = ?
             ORDER BY seq",
        )
        .bind(JobState::Done.as_str())
        .fetch_all(&self.read)
        .await
    }

    /// Rejected takes made again (`resubmits_rejected`) of each of these jobs that has any: bought
    /// on purpose, so `reconcile` does not count them as double charges.
    pub async fn rejected_takes_of(&self, seqs: &[i64]) -> anyhow::Result<std::collections::HashMap<i64, i64>> {
        let mut takes = std::collections::HashMap::new();
        for seq in seqs {
            let n: Option<i64> = db::query_scalar("SELECT resubmits_rejected FROM jobs WHERE seq = ?")
                .bind(seq)
                .fetch_maybe(&self.read)
                .await?;
            if let Some(n) = n.filter(|n| *n > 0) {
                takes.insert(*seq, n);
            }
        }
        Ok(takes)
    }

    /// done → pending for one rejected job (still done, still rejected): another take, counted
    /// in `resubmits_rejected`. The decision and note are cleared (they were about the earlier
    /// take), and so is what described its video — the file is no longer at `output_path` and
    /// its reported cost is counted as a rejected take (see `CostSummary::rejected_attempts`).
    /// Returns whether it moved.
    pub async fn retake_rejected(&self, seq: i64) -> anyhow::Result<bool> {
        let set: (&str, Args) = (
            "resubmits_rejected = resubmits_rejected + 1, review = NULL, review_note = NULL, reviewed_at = NULL,
             due_at = 0, error = NULL, errors_in_row = 0, output_path = NULL, bytes = NULL, sha256 = NULL,
             downloaded_at = NULL, completed_at = NULL, cost = NULL, video_width = NULL, video_height = NULL,
             video_frames = NULL, video_fps = NULL, video_duration = NULL, video_codec = NULL,
             video_mismatch = NULL",
            sql_args![],
        );
        let filter: (&str, Args) = ("seq = ? AND review = ?", sql_args![seq, Decision::Reject.as_str()]);
        Ok(self
            .transition_all(&[JobState::Done], JobState::Pending, set, filter)
            .await?
            == 1)
    }
}
