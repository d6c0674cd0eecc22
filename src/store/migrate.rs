//! Applying the migrations: PostgreSQL's (`migrations/postgres`) with sqlx's migrator; SQLite's
//! (`migrations/sqlite`) as sqlx's migrator does, and also
//! those that must run outside a transaction (`-- no-transaction` on their first line: a table
//! made anew, with foreign keys off around its own transaction), which sqlx's SQLite migrator
//! would wrap in one anyway.
//!
//! Each migration is applied once, in version order, and recorded in `_sqlx_migrations` with
//! its checksum, so databases migrated by sqlx before and by this after agree. A migration whose
//! text changed since it was applied, or a database migrated by a newer wanbatch, is refused.

use std::collections::HashMap;

use sqlx::migrate::Migrate;
use sqlx::{Executor, SqlitePool};

pub(super) async fn run(pool: &SqlitePool) -> anyhow::Result<()> {
    let migrator = sqlx::migrate!("./migrations/sqlite");
    let mut conn = pool.acquire().await?;
    conn.ensure_migrations_table().await?;
    if let Some(v) = conn.dirty_version().await? {
        anyhow::bail!("migration {v} of the database was left half-applied");
    }
    let applied: HashMap<i64, Vec<u8>> = conn
        .list_applied_migrations()
        .await?
        .into_iter()
        .map(|m| (m.version, m.checksum.into_owned()))
        .collect();
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    if let Some(v) = applied.keys().find(|v| !known.contains(v)) {
        anyhow::bail!("the database was made by a newer wanbatch (its migration {v} is unknown to this one)");
    }
    for m in migrator.iter().filter(|m| !m.migration_type.is_down_migration()) {
        if let Some(sum) = applied.get(&m.version) {
            anyhow::ensure!(
                sum.as_slice() == &*m.checksum,
                "migration {} changed since it was applied to this database",
                m.version
            );
            continue;
        }
        if m.no_tx {
            let started = std::time::Instant::now();
            (&mut *conn)
                .execute(&*m.sql)
                .await
                .map_err(|e| anyhow::anyhow!("while executing migration {}: {e}", m.version))?;
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES (?1, ?2, TRUE, ?3, ?4)",
            )
            .bind(m.version)
            .bind(&*m.description)
            .bind(&*m.checksum)
            .bind(started.elapsed().as_nanos() as i64)
            .execute(&mut *conn)
            .await?;
        } else {
            conn.apply(m).await?;
        }
    }
    Ok(())
}

/// Applies the PostgreSQL migrations (`migrations/postgres`) with sqlx's migrator: PostgreSQL
/// runs DDL inside transactions, so none needs the SQLite path's care. The schema is the SQLite
/// one in PostgreSQL's types (`tests/pg_schema.rs` compares them); the PostgreSQL store that will
/// use it is planned (docs/design.md, "Several runners").
pub async fn postgres(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations/postgres")
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("PostgreSQL migrations: {e}"))
}
