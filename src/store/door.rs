//! The state machine's only door: every change of a job's state goes through [`Store::transition`]
//! (one job) or [`Store::transition_all`] (every job matching a filter).
//!
//! A transition names the states it moves from and the state it moves to, and the door:
//! - refuses a move the state machine does not allow ([`JobState::can_move_to`]; a change that
//!   keeps the state is always allowed) before anything is written;
//! - binds the states (no state is spelled in SQL) and guards the change by them — and, for one
//!   job at Segmind, by its request or its attempt — so a stale worker changes nothing;
//! - writes what the move records on the attempt row, typed ([`AttemptOutcome`]), and any
//!   bookkeeping beside it, in the same transaction and only if the move applied;
//! - returns the row it wrote, so the engine takes its next step from the database's truth
//!   instead of rebuilding it.
//!
//! The SQL of each shape of transition is built once and kept (a handful of shapes).

use std::collections::HashMap;
use std::sync::Mutex;

use super::db;
use super::sql::{Arg, Args, ToArg};
use super::{now_ms, JobRow, Store, WORK_COLUMNS};
use crate::state::{AttemptOutcome, JobState};

/// What else guards a one-job transition, beside its state.
#[derive(Clone, Debug)]
pub enum Guard<'a> {
    /// The state alone.
    State,
    /// The job's current attempt is this one (a job being submitted).
    Attempt(i64),
    /// The job acts on this request (a job at Segmind).
    Request(&'a str),
}

/// Which attempt row a transition records on.
#[derive(Clone, Debug)]
pub enum AttemptKey<'a> {
    N(i64),
    Request(&'a str),
}

/// What a transition records on an attempt row.
#[derive(Clone, Debug)]
pub struct AttemptNote<'a> {
    pub key: AttemptKey<'a>,
    pub outcome: AttemptOutcome,
    /// Its detail (None: left as it is).
    pub detail: Option<String>,
    /// The request id the attempt got (when it is learnt by this move).
    pub request_id: Option<String>,
}

/// One transition of one job.
pub struct Transition<'a> {
    pub seq: i64,
    pub from: &'a [JobState],
    pub to: JobState,
    pub guard: Guard<'a>,
    /// The other columns it sets: SQL assignments with `?`s (or empty), and their arguments.
    pub set: &'static str,
    pub args: Args,
    pub attempt: Option<AttemptNote<'a>>,
    /// Bookkeeping written only if the move applied: SQL statements with `?`s, and their
    /// arguments.
    pub then: &'static str,
    pub then_args: Args,
    /// Several runners (planned): the lease the writer holds on the job, as (owner, epoch). A
    /// runner whose lease was taken over (the epoch moved on) writes nothing. None: unleased, as
    /// a single runner works.
    pub lease: Option<(&'a str, i64)>,
}

impl<'a> Transition<'a> {
    /// A transition of job `seq` from `from` to `to`, guarded by `guard`, setting nothing else.
    pub fn new(seq: i64, from: &'a [JobState], to: JobState, guard: Guard<'a>) -> Transition<'a> {
        Transition {
            seq,
            from,
            to,
            guard,
            set: "",
            args: Vec::new(),
            attempt: None,
            then: "",
            then_args: Vec::new(),
            lease: None,
        }
    }

    /// Only while `owner` holds the job's lease at `epoch`.
    pub fn leased(mut self, owner: &'a str, epoch: i64) -> Self {
        self.lease = Some((owner, epoch));
        self
    }

    pub fn set(mut self, set: &'static str, args: Args) -> Self {
        self.set = set;
        self.args = args;
        self
    }

    pub fn attempt(mut self, key: AttemptKey<'a>, outcome: AttemptOutcome, detail: Option<String>) -> Self {
        self.attempt = Some(AttemptNote {
            key,
            outcome,
            detail,
            request_id: None,
        });
        self
    }

    /// The attempt learns its request id too.
    pub fn attempt_request(mut self, request_id: &str) -> Self {
        if let Some(a) = self.attempt.as_mut() {
            a.request_id = Some(request_id.to_owned());
        }
        self
    }

    pub fn then(mut self, then: &'static str, args: Args) -> Self {
        self.then = then;
        self.then_args = args;
        self
    }
}

/// The checks every transition passes before any SQL runs.
fn allowed(from: &[JobState], to: JobState) -> anyhow::Result<()> {
    anyhow::ensure!(!from.is_empty(), "internal: a transition from no state");
    for f in from {
        anyhow::ensure!(
            *f == to || f.can_move_to(to),
            "internal: the state machine has no move {f} → {to}"
        );
    }
    Ok(())
}

/// `?, ?, ?` for `n` values.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Built SQL, kept for the life of the process (one per shape: a few dozen at most).
fn intern(sql: String) -> &'static str {
    static KEPT: Mutex<Option<HashMap<String, &'static str>>> = Mutex::new(None);
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let map = kept.get_or_insert_with(HashMap::new);
    if let Some(s) = map.get(&sql) {
        return s;
    }
    let leaked: &'static str = Box::leak(sql.clone().into_boxed_str());
    map.insert(sql, leaked);
    leaked
}

/// The statements of one transition, each with its arguments (`?`s in order): first the guarded
/// move of the job (`RETURNING` the row), then what is written only if it applied (the attempt
/// row, the bookkeeping). Every backend runs the same plan: SQLite as one guarded batch,
/// PostgreSQL in one transaction (`store::pg`).
pub(crate) fn plan(t: Transition<'_>) -> anyhow::Result<Vec<(String, Args)>> {
    allowed(t.from, t.to)?;
    let now = now_ms();
    let mut parts = Vec::with_capacity(3);
    {
        let mut sql = String::from("UPDATE jobs SET state = ?, updated_at = ?");
        let mut args: Args = vec![t.to.arg(), Arg::Int(now)];
        if !t.set.is_empty() {
            sql.push_str(", ");
            sql.push_str(t.set);
            args.extend(t.args);
        }
        sql.push_str(&format!(" WHERE seq = ? AND state IN ({})", marks(t.from.len())));
        args.push(Arg::Int(t.seq));
        args.extend(t.from.iter().map(|s| s.arg()));
        match t.guard {
            Guard::State => {}
            Guard::Attempt(n) => {
                sql.push_str(" AND attempts = ?");
                args.push(Arg::Int(n));
            }
            Guard::Request(rid) => {
                sql.push_str(" AND request_id = ?");
                args.push(rid.arg());
            }
        }
        if let Some((owner, epoch)) = t.lease {
            sql.push_str(" AND lease_owner = ? AND lease_epoch = ?");
            args.extend([owner.arg(), Arg::Int(epoch)]);
        }
        sql.push_str(&format!(" RETURNING {WORK_COLUMNS}"));
        parts.push((sql, args));
    }
    if let Some(a) = t.attempt {
        let mut sql = String::from("UPDATE attempts SET outcome = ?, finished_at = ?");
        let mut args: Args = vec![a.outcome.arg(), Arg::Int(now)];
        if let Some(detail) = a.detail {
            sql.push_str(", detail = ?");
            args.push(detail.arg());
        }
        if let Some(rid) = a.request_id {
            sql.push_str(", request_id = ?");
            args.push(rid.arg());
        }
        sql.push_str(" WHERE job_seq = ?");
        args.push(Arg::Int(t.seq));
        match a.key {
            AttemptKey::N(n) => {
                sql.push_str(" AND n = ?");
                args.push(Arg::Int(n));
            }
            AttemptKey::Request(rid) => {
                sql.push_str(" AND request_id = ?");
                args.push(rid.arg());
            }
        }
        parts.push((sql, args));
    }
    if !t.then.is_empty() {
        parts.push((t.then.to_string(), t.then_args));
    }
    Ok(parts)
}

impl Store {
    /// Moves one job, if it is in a `from` state and passes the guard; returns the row written,
    /// or None if the guard did not hold (another step owns the job now).
    pub async fn transition(&self, t: Transition<'_>) -> anyhow::Result<Option<JobRow>> {
        let t = self.under_lease(t);
        let Some(batch) = &self.batch else {
            let Some(pool) = self.pg() else {
                anyhow::bail!("internal: a store without a writer");
            };
            return super::pg::transition(pool, t).await;
        };
        let parts = plan(t)?;
        // One batch: the writer runs the statements after the first only if it returned a row.
        let mut sql = String::new();
        let mut args: Args = Vec::new();
        for (i, (s, a)) in parts.into_iter().enumerate() {
            if i > 0 {
                sql.push_str(";\n");
            }
            sql.push_str(&s);
            args.extend(a);
        }
        let rows = batch.exec_guarded(intern(sql), args).await?;
        rows.first().map(JobRow::from_values).transpose()
    }

    /// A write that is not a move (bookkeeping: uploads, charges, learned timing, facts): one
    /// or more statements committed together — on SQLite through the group-commit writer, on
    /// PostgreSQL in one transaction. Returns the rows they returned.
    pub(super) async fn exec(&self, sql: &'static str, args: Args) -> anyhow::Result<Vec<super::sql::Row>> {
        match (&self.batch, self.pg()) {
            (Some(batch), _) => batch.exec(sql, args).await,
            (None, Some(pool)) => super::pg::exec(pool, sql, args).await,
            (None, None) => anyhow::bail!("internal: a store without a writer"),
        }
    }

    /// Moves every job in a `from` state that matches `filter` (SQL with `?`s, or empty for
    /// all), setting `set` too (SQL assignments with `?`s, or empty); returns how many moved. For
    /// commands and start-up recovery, never while a run works the same jobs.
    pub async fn transition_all(
        &self,
        from: &[JobState],
        to: JobState,
        set: (&str, Args),
        filter: (&str, Args),
    ) -> anyhow::Result<u64> {
        allowed(from, to)?;
        let (set, set_args) = set;
        let (filter, filter_args) = filter;
        let sql = format!(
            "UPDATE jobs SET state = ?, updated_at = ?{}{set} WHERE state IN ({}){}{filter}",
            if set.is_empty() { "" } else { ", " },
            marks(from.len()),
            if filter.is_empty() { "" } else { " AND " },
        );
        let mut args: Args = vec![to.arg(), Arg::Int(now_ms())];
        args.extend(set_args);
        args.extend(from.iter().map(|s| s.arg()));
        args.extend(filter_args);
        let mut q = db::query(sql);
        for a in args {
            q = q.bind(a);
        }
        q.execute(&self.write).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_the_state_machine_does_not_have_is_refused() {
        assert!(allowed(&[JobState::Done], JobState::Running).is_err());
        assert!(
            allowed(&[JobState::Done], JobState::Pending).is_ok(),
            "a rejected video's retake"
        );
        assert!(allowed(&[JobState::Pending, JobState::Running], JobState::Cancelled).is_err());
        assert!(
            allowed(&[JobState::Unknown], JobState::Unknown).is_ok(),
            "a change within a state"
        );
        assert!(allowed(&[JobState::Failed, JobState::Cancelled], JobState::Pending).is_ok());
        assert!(allowed(&[], JobState::Pending).is_err());
    }
}
