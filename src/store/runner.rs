//! Several runners on one PostgreSQL campaign: each `wanbatch run` registers as a runner, holds
//! the jobs it works under a lease, and keeps its leases alive with a heartbeat.
//!
//! - **Runner.** A row in `runners` (a new id per process, its host and pid, a keyed hash of its
//!   API key, never the key). `heartbeat_at` is written every `lease / 4`; a runner whose
//!   heartbeat is older than `lease`, or that stopped, is dead.
//! - **Leases.** A job's `lease_owner` is the runner working it and `lease_epoch` counts its
//!   changes of hands. A runner takes waiting jobs a few at a time (`reserve`: `FOR UPDATE SKIP
//!   LOCKED`, so two runners never take the same job) and claims them for their submit under
//!   that lease; every transition it makes is guarded by (owner, epoch) (`Store::transition`),
//!   so a runner whose job was taken over writes nothing more for it.
//! - **Takeover.** The jobs of a dead runner that are at Segmind or being fetched are taken over
//!   by the first live runner to look (`take_over`, in one statement that moves the lease and
//!   bumps the epoch): saved request ids are polled again, a job caught in its submit window
//!   becomes `unknown` and is looked up in the request history — never a blind resubmit. Its
//!   waiting jobs are simply free to take again.
//!
//! With SQLite there is no runner: one `run` at a time (the run lock), which owns every job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use super::db;
use super::door::Transition;
use super::{now_ms, Store, SubmitWork};
use crate::state::JobState::{self, *};

/// This process as a runner.
pub struct Runner {
    pub id: String,
    /// The account's budget this runner spends (a keyed hash of its API key).
    pub key_hash: String,
    /// How long a heartbeat keeps the runner's leases.
    pub lease_ms: i64,
    /// The epoch of each job this runner holds (from its reservation or takeover).
    epochs: Mutex<HashMap<i64, i64>>,
    /// When the last heartbeat was written (0: never).
    beat_ok_at: AtomicI64,
    beating: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Runner {
    fn epoch(&self, seq: i64) -> Option<i64> {
        self.epochs.lock().unwrap_or_else(|e| e.into_inner()).get(&seq).copied()
    }

    fn hold(&self, seq: i64, epoch: i64) {
        self.epochs.lock().unwrap_or_else(|e| e.into_inner()).insert(seq, epoch);
    }

    /// Whether this runner's leases are surely still its own: its last heartbeat is recent
    /// (half a lease). A runner paused past its lease (a stopped process, a frozen machine)
    /// must not send a submit for a job another runner may have taken over meanwhile.
    pub fn lease_fresh(&self) -> bool {
        now_ms() - self.beat_ok_at.load(Ordering::Relaxed) < self.lease_ms / 2
    }

    /// At the end of a run: waiting jobs it reserved are freed, and it is marked stopped, so
    /// others take over what it leaves at once instead of after its lease.
    pub(super) async fn stop(&self, store: &Store) {
        if let Some(h) = self.beating.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
        let _ = db::query("UPDATE jobs SET lease_owner = NULL WHERE lease_owner = ? AND state = ?")
            .bind(self.id.as_str())
            .bind(Pending)
            .execute(&store.write)
            .await;
        let _ = db::query("UPDATE runners SET stopped_at = ? WHERE id = ?")
            .bind(now_ms())
            .bind(self.id.as_str())
            .execute(&store.write)
            .await;
    }
}

/// The database's clock in milliseconds (PostgreSQL): heartbeats are written and judged on it,
/// so runners on machines whose clocks differ agree on who is alive.
const DB_NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// The SQL condition "the runner `lease_owner` is alive", with one argument: the lease in ms.
fn alive() -> String {
    format!("lease_owner IN (SELECT id FROM runners WHERE stopped_at IS NULL AND heartbeat_at >= {DB_NOW_MS} - ?)")
}

impl Store {
    /// Registers this process as a runner of the campaign (PostgreSQL only; SQLite has one
    /// runner, the run lock's holder) and starts its heartbeat. `key_hash` names the account's
    /// budget (a keyed hash of the API key). Returns the store as this runner sees it.
    pub async fn register_runner(&self, key_hash: &str, lease_ms: i64) -> anyhow::Result<Store> {
        if !self.is_pg() {
            return Ok(self.clone());
        }
        let id = format!("{}-{}-{:08x}", host(), std::process::id(), rand::random::<u32>());
        let now = now_ms();
        db::query(format!(
            "INSERT INTO runners (id, host, pid, key_hash, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, {DB_NOW_MS})
             ON CONFLICT (id) DO NOTHING"
        ))
        .bind(id.as_str())
        .bind(host())
        .bind(i64::from(std::process::id()))
        .bind(key_hash)
        .bind(now)
        .execute(&self.write)
        .await?;
        let runner = Arc::new(Runner {
            id,
            key_hash: key_hash.to_owned(),
            lease_ms,
            epochs: Mutex::new(HashMap::new()),
            beat_ok_at: AtomicI64::new(now),
            beating: Mutex::new(None),
        });
        let store = Store {
            runner: Some(runner.clone()),
            ..self.clone()
        };
        // The heartbeat has a connection of its own: a busy pool must not make a live runner
        // look dead.
        let beat_pool = match &self.write {
            db::Db::Pg(p) => {
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with((*p.connect_options()).clone())
                    .await?
            }
            db::Db::Sqlite(_) => anyhow::bail!("internal: a runner on SQLite"),
        };
        let beat = {
            let runner = runner.clone();
            tokio::spawn(async move {
                let every = std::time::Duration::from_millis((runner.lease_ms / 4).max(50) as u64);
                loop {
                    tokio::time::sleep(every).await;
                    let now = now_ms();
                    let beat = sqlx::query(&format!("UPDATE runners SET heartbeat_at = {DB_NOW_MS} WHERE id = $1"))
                        .bind(runner.id.as_str())
                        .execute(&beat_pool)
                        .await;
                    match beat {
                        Ok(_) => runner.beat_ok_at.store(now, Ordering::Relaxed),
                        Err(e) => tracing::warn!(error = %e, "runner heartbeat failed"),
                    }
                }
            })
        };
        *runner.beating.lock().unwrap_or_else(|e| e.into_inner()) = Some(beat);
        Ok(store)
    }

    /// This process as a runner, if it is one.
    pub fn runner(&self) -> Option<&Runner> {
        self.runner.as_deref()
    }

    /// The owner to filter the engine's reads by: this runner's id, or None (SQLite: every job).
    pub(super) fn owner(&self) -> Option<&str> {
        self.runner.as_ref().map(|r| r.id.as_str())
    }

    /// `t`, under this runner's lease on its job when it holds one.
    pub(super) fn under_lease<'a>(&'a self, t: Transition<'a>) -> Transition<'a> {
        match &self.runner {
            Some(r) => match r.epoch(t.seq) {
                Some(epoch) => t.leased(&r.id, epoch),
                None => t,
            },
            None => t,
        }
    }

    /// Takes up to `limit` waiting jobs after `seq`, in manifest order, for this runner: jobs no
    /// live runner holds (`FOR UPDATE SKIP LOCKED`: two runners never take the same job). The
    /// jobs stay `pending` (a reservation, not a claim): each is claimed under this lease when
    /// its submit goes.
    pub(super) async fn reserve_pending(&self, seq: i64, limit: i64) -> anyhow::Result<Vec<SubmitWork>> {
        let Some(r) = &self.runner else {
            anyhow::bail!("internal: a reservation without a runner");
        };
        let sql = format!(
            "UPDATE jobs SET lease_epoch = CASE WHEN lease_owner = ? THEN lease_epoch ELSE lease_epoch + 1 END,
                             lease_owner = ?
             WHERE seq IN (SELECT seq FROM jobs WHERE state = ? AND seq > ?
                             AND (lease_owner IS NULL OR lease_owner = ? OR NOT {})
                           ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED)
             RETURNING seq, id, params, polls, due_at, resubmits_expired + resubmits_unknown AS resubmits, lease_epoch",
            alive()
        );
        let rows: Vec<Reserved> = db::query_as(sql)
            .bind(r.id.as_str())
            .bind(r.id.as_str())
            .bind(Pending)
            .bind(seq)
            .bind(r.id.as_str())
            .bind(r.lease_ms)
            .bind(limit)
            .fetch_all(&self.write)
            .await?;
        let mut out: Vec<SubmitWork> = rows
            .into_iter()
            .map(|x| {
                r.hold(x.work.seq, x.lease_epoch);
                x.work
            })
            .collect();
        out.sort_by_key(|w| w.seq);
        Ok(out)
    }

    /// Takes over the jobs of dead runners that are at Segmind, caught in their submit window,
    /// or being fetched: the lease moves to this runner with a new epoch (the dead runner, if
    /// it was only paused, can write none of them again). Jobs caught in the submit window
    /// become `unknown` (to be looked up in the request history); saved request ids are due
    /// for a poll now. Rows locked by a transaction still open (a runner frozen mid-write) are
    /// skipped, not waited for: PostgreSQL ends such a transaction after
    /// `IDLE_IN_TRANSACTION` (see `Store::open_pg`), and the next sweep takes them. Returns the
    /// jobs taken, by state.
    pub async fn take_over(&self) -> anyhow::Result<Vec<Taken>> {
        let Some(r) = &self.runner else {
            return Ok(Vec::new());
        };
        // Only a dead runner on the same API key: its requests are its account's, polled and
        // looked up in its request history with its key. Jobs of a key no live runner has wait
        // for one that has it.
        let sql = format!(
            "UPDATE jobs SET lease_owner = ?, lease_epoch = lease_epoch + 1,
                             due_at = CASE WHEN state IN (?, ?) THEN 0 ELSE due_at END
             WHERE seq IN (SELECT seq FROM jobs
                           WHERE state IN (?, ?, ?, ?)
                             AND (lease_owner IS NULL
                                  OR (lease_owner <> ? AND NOT {}
                                      AND lease_owner IN (SELECT id FROM runners WHERE key_hash = ?)))
                           FOR UPDATE SKIP LOCKED)
             RETURNING seq, state, lease_epoch, attempts",
            alive()
        );
        let mut taken: Vec<(i64, String, i64, i64)> = db::query_as(sql)
            .bind(r.id.as_str())
            .bind(Running)
            .bind(Downloading)
            .bind(Submitting)
            .bind(Running)
            .bind(Downloading)
            .bind(Unknown)
            .bind(r.id.as_str())
            .bind(r.lease_ms)
            .bind(r.key_hash.as_str())
            .fetch_all(&self.write)
            .await?;
        // The statement is tried again if PostgreSQL went away meanwhile: if its first try was
        // applied, the jobs are this runner's already but not known to it. Found here.
        let known: std::collections::HashSet<i64> = r
            .epochs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        let own: Vec<(i64, String, i64, i64)> = db::query_as(
            "SELECT seq, state, lease_epoch, attempts FROM jobs WHERE lease_owner = ? AND state IN (?, ?, ?, ?)",
        )
        .bind(r.id.as_str())
        .bind(Submitting)
        .bind(Running)
        .bind(Downloading)
        .bind(Unknown)
        .fetch_all(&self.read)
        .await?;
        let fresh: std::collections::HashSet<i64> = taken.iter().map(|t| t.0).collect();
        taken.extend(
            own.into_iter()
                .filter(|(seq, ..)| !known.contains(seq) && !fresh.contains(seq)),
        );
        let mut out = Vec::with_capacity(taken.len());
        for (seq, state, epoch, attempts) in taken {
            r.hold(seq, epoch);
            let before: JobState = state.parse().map_err(anyhow::Error::msg)?;
            let mut state = before;
            if state == Submitting {
                // Caught in its submit window: Segmind may or may not have the job. The attempt
                // ends now (the lookup's window is measured from here), as at a restart.
                let t = Transition::new(seq, &[Submitting], Unknown, super::Guard::Attempt(attempts)).attempt(
                    super::AttemptKey::N(attempts),
                    crate::state::AttemptOutcome::Unknown,
                    Some("its runner stopped answering inside the submit window".into()),
                );
                if self.transition(t).await?.is_some() {
                    state = Unknown;
                }
            }
            out.push(Taken { seq, before, state });
        }
        if !out.is_empty() {
            tracing::info!(
                jobs = out.len(),
                "took over the jobs of a runner that stopped answering"
            );
        }
        Ok(out)
    }

    /// Whether this runner still holds job `seq` in its submit window, checked in the database
    /// just before its submit leaves (true on SQLite: one runner). A runner frozen after its
    /// claim and taken over meanwhile must not send a submit its successor may send too.
    pub async fn still_submitting(&self, seq: i64) -> anyhow::Result<bool> {
        let Some(r) = &self.runner else {
            return Ok(true);
        };
        let Some(epoch) = r.epoch(seq) else {
            return Ok(false);
        };
        let held: Option<i64> = db::query_scalar(
            "SELECT seq FROM jobs WHERE seq = ? AND state = ? AND lease_owner = ? AND lease_epoch = ?",
        )
        .bind(seq)
        .bind(Submitting)
        .bind(r.id.as_str())
        .bind(epoch)
        .fetch_maybe(&self.read)
        .await?;
        Ok(held.is_some() && r.lease_fresh())
    }
}

/// A keyed hash naming an API key's budget in the database (never the key itself).
pub fn key_hash(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new_with_prefix(b"wanbatch budget\0")
        .chain_update(key.as_bytes())
        .finalize();
    hex::encode(&digest[..12])
}

impl Store {
    /// Takes `n` request slots `interval_us` apart from the budget `key_hash` shares with every
    /// runner on that key (PostgreSQL): the budget's next free slot moves forward by `n`
    /// intervals, never behind the database's clock, in one statement — so slots handed to all
    /// runners together are never closer than `interval_us`. Returns the slots as offsets from
    /// now, in microseconds (the database's clock, so runners on machines whose clocks differ
    /// still share one timeline).
    pub async fn take_slots(&self, key_hash: &str, n: i64, interval_us: i64) -> anyhow::Result<Vec<i64>> {
        const NOW_US: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)";
        let sql = format!(
            "INSERT INTO budgets (key_hash, next_slot_us, updated_at) VALUES (?, {NOW_US} + ?, ?)
             ON CONFLICT (key_hash) DO UPDATE
                 SET next_slot_us = GREATEST(budgets.next_slot_us, {NOW_US}) + ?, updated_at = excluded.updated_at
             RETURNING next_slot_us, {NOW_US}"
        );
        let span = n * interval_us;
        let (end, now): (i64, i64) = db::query_as(sql)
            .bind(key_hash)
            .bind(span)
            .bind(now_ms())
            .bind(span)
            .fetch_one(&self.write)
            .await?;
        Ok((0..n).map(|k| end - span + k * interval_us - now).collect())
    }

    /// A 429's reset hint, for every runner on the key: no slot is handed out for `wait_ms` from
    /// now (the database's clock, the budget's timeline).
    pub async fn hold_budget(&self, key_hash: &str, wait_ms: i64) -> anyhow::Result<()> {
        const NOW_US: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)";
        db::query(format!(
            "UPDATE budgets SET next_slot_us = GREATEST(next_slot_us, {NOW_US} + ?) WHERE key_hash = ?"
        ))
        .bind(wait_ms.saturating_mul(1000))
        .bind(key_hash)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}

/// A job taken over from a dead runner: its state then, and now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub seq: i64,
    pub before: JobState,
    pub state: JobState,
}

/// A runner of the campaign as `status` shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct RunnerSeen {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub stopped_at: Option<i64>,
    /// Jobs it holds at Segmind or downloading.
    pub jobs: i64,
}

impl Store {
    /// The runners that worked the campaign in the last day (none on SQLite), the latest first.
    pub async fn runners_seen(&self) -> anyhow::Result<Vec<RunnerSeen>> {
        db::query_as(
            "SELECT r.id, r.host, r.pid, r.started_at, r.heartbeat_at, r.stopped_at,
                    (SELECT COUNT(*) FROM jobs j WHERE j.lease_owner = r.id AND j.state IN (?, ?, ?)) AS jobs
             FROM runners r WHERE r.heartbeat_at >= ? ORDER BY r.heartbeat_at DESC, r.id",
        )
        .bind(Submitting)
        .bind(Running)
        .bind(Downloading)
        .bind(now_ms() - 24 * 3600 * 1000)
        .fetch_all(&self.read)
        .await
    }
}

#[derive(sqlx::FromRow)]
struct Reserved {
    #[sqlx(flatten)]
    work: SubmitWork,
    lease_epoch: i64,
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}
