//! Importing validated manifest rows as `pending` jobs, in batched transactions.
//!
//! A row whose id already exists with the same parameters is skipped (re-running a manifest
//! creates nothing); the same id with different parameters is a conflict, and an import with
//! any conflict writes nothing at all.

use super::{now_ms, Store};
use crate::manifest::Row;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ImportSummary {
    pub inserted: u64,
    pub unchanged: u64,
}

/// An id that exists in the database with other parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportConflict {
    pub id: String,
    pub source: String,
    pub existing_source: String,
}

impl std::fmt::Display for ImportConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: id: {:?} already exists in the database with different parameters (imported from {}); \
             give this row another id, or use another --db",
            self.source, self.id, self.existing_source
        )
    }
}

impl Store {
    /// Checks every row against the database without writing: which are new, which unchanged,
    /// which conflict.
    pub async fn check_import(&self, rows: &[Row]) -> anyhow::Result<(ImportSummary, Vec<ImportConflict>)> {
        let mut summary = ImportSummary::default();
        let mut conflicts = Vec::new();
        let mut conn = self.read.acquire().await?;
        for row in rows {
            let existing: Option<(String, String)> =
                sqlx::query_as("SELECT params_hash, source FROM jobs WHERE id = ?")
                    .bind(&row.id)
                    .fetch_optional(&mut *conn)
                    .await?;
            match existing {
                None => summary.inserted += 1,
                Some((hash, _)) if hash == row.hash => summary.unchanged += 1,
                Some((_, source)) => conflicts.push(ImportConflict {
                    id: row.id.clone(),
                    source: row.source.clone(),
                    existing_source: source,
                }),
            }
        }
        Ok((summary, conflicts))
    }

    /// Inserts the rows. Returns the conflicts instead (and writes nothing) if any id exists with
    /// other parameters.
    pub async fn import(&self, rows: &[Row]) -> anyhow::Result<Result<ImportSummary, Vec<ImportConflict>>> {
        const BATCH: usize = 5_000;
        let mut summary = ImportSummary::default();
        let mut conflicts = Vec::new();
        let now = now_ms();
        // One transaction for the whole import keeps "nothing or everything" simple; batches only
        // bound how long each statement group runs between yields.
        let mut tx = self.write.begin().await?;
        for chunk in rows.chunks(BATCH) {
            for row in chunk {
                let done = sqlx::query(
                    "INSERT INTO jobs (id, params, params_hash, source, state, created_at, updated_at)
                     VALUES (?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT(id) DO NOTHING",
                )
                .bind(&row.id)
                .bind(&row.json)
                .bind(&row.hash)
                .bind(&row.source)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    summary.inserted += 1;
                    continue;
                }
                let (hash, source): (String, String) =
                    sqlx::query_as("SELECT params_hash, source FROM jobs WHERE id = ?")
                        .bind(&row.id)
                        .fetch_one(&mut *tx)
                        .await?;
                if hash == row.hash {
                    summary.unchanged += 1;
                } else {
                    conflicts.push(ImportConflict {
                        id: row.id.clone(),
                        source: row.source.clone(),
                        existing_source: source,
                    });
                }
            }
        }
        if conflicts.is_empty() {
            tx.commit().await?;
            Ok(Ok(summary))
        } else {
            tx.rollback().await?;
            Ok(Err(conflicts))
        }
    }
}
