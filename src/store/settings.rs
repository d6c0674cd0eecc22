//! The campaign's stored settings (`settings` table, migration 0005): key → JSON value.
//!
//! `peek_settings` reads them without going through `Store::open`, which creates the database
//! and applies migrations: settings are resolved before anything may be changed.

use std::path::Path;

use super::db;
use super::{now_ms, Store};

/// The stored settings of the database at `path`, read-only (an older database without the
/// table has none). Never creates or changes the file.
pub fn peek_settings(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    if super::is_url(path) {
        return peek_pg(path.to_str().unwrap_or_default());
    }
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'settings')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare("SELECT key, value FROM settings ORDER BY key")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `peek_settings` on PostgreSQL (a campaign not yet created there has none). Settings are
/// resolved before the command's runtime work starts, synchronously: on a thread of its own with
/// its own small runtime, so it works inside or outside one.
fn peek_pg(url: &str) -> anyhow::Result<Vec<(String, String)>> {
    use std::str::FromStr;
    let opts = sqlx::postgres::PgConnectOptions::from_str(url)?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            use sqlx::Connection;
            // A server restarting comes back within seconds: try for a while before giving up.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let mut conn = loop {
                match sqlx::PgConnection::connect_with(&opts).await {
                    Ok(conn) => break conn,
                    Err(e) if std::time::Instant::now() >= deadline => return Err(e.into()),
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
                }
            };
            let has: Option<String> = sqlx::query_scalar("SELECT CAST(to_regclass('settings') AS TEXT)")
                .fetch_one(&mut conn)
                .await?;
            let rows = if has.is_some() {
                sqlx::query_as("SELECT key, value FROM settings ORDER BY key")
                    .fetch_all(&mut conn)
                    .await?
            } else {
                Vec::new()
            };
            let _ = conn.close().await;
            Ok(rows)
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("internal: the settings reader panicked"))?
}

impl Store {
    /// Stores these settings (key, JSON), replacing earlier values of the same keys.
    pub async fn save_settings(&self, pairs: &[(&str, serde_json::Value)]) -> anyhow::Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        for (key, value) in pairs {
            db::query(
                "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(*key)
            .bind(value.to_string())
            .bind(now)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The stored settings, (key, JSON), by key.
    pub async fn settings(&self) -> anyhow::Result<Vec<(String, String)>> {
        db::query_as("SELECT key, value FROM settings ORDER BY key")
            .fetch_all(&self.read)
            .await
    }
}
