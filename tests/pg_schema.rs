//! The PostgreSQL schema (`migrations/postgres`) against the SQLite one (`migrations/sqlite`), on
//! a real PostgreSQL (the private server of `wanbatch::pglocal`): the same tables, the same
//! columns with matching types, nullability and defaults, the same named indexes, the state
//! machine's `CHECK`, and migrations that apply once. Skipped with a message when PostgreSQL is
//! not installed, unless `WANBATCH_REQUIRE_PG=1`.

use std::collections::BTreeMap;

use sqlx::postgres::PgPoolOptions;
use sqlx::Row;
use wanbatch::pglocal;
use wanbatch::store::{migrate, Store};

/// (table, column) → (type, not null, has a default).
type Columns = BTreeMap<(String, String), (String, bool, bool)>;

/// SQLite's declared types in PostgreSQL's names.
fn pg_type(sqlite: &str) -> String {
    match sqlite.to_ascii_uppercase().as_str() {
        "INTEGER" => "bigint",
        "REAL" => "double precision",
        "TEXT" => "text",
        other => panic!("a SQLite column of type {other} has no PostgreSQL twin here"),
    }
    .to_string()
}

fn sqlite_schema(path: &std::path::Path) -> (Columns, Vec<String>) {
    let db = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut columns = Columns::new();
    for t in &tables {
        let mut q = db.prepare(&format!("PRAGMA table_info(\"{t}\")")).unwrap();
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .unwrap();
        for row in rows {
            let (name, ty, notnull, default, pk) = row.unwrap();
            // A one-column primary key is not null in PostgreSQL whatever it says in SQLite.
            columns.insert((t.clone(), name), (pg_type(&ty), notnull || pk > 0, default.is_some()));
        }
    }
    let mut indexes: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    indexes.sort();
    (columns, indexes)
}

#[tokio::test]
async fn the_postgres_schema_is_the_sqlite_schema_in_postgres_types() {
    let Some(pg) = pglocal::shared_for_tests("the_postgres_schema_is_the_sqlite_schema_in_postgres_types").await else {
        return;
    };
    let url = pg.fresh_database("schema").await.unwrap();
    let pool = PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
    migrate::postgres(&pool).await.unwrap();
    // Applied once: a second run finds nothing to do and changes nothing.
    migrate::postgres(&pool).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
        .count();
    assert_eq!(applied, files as i64, "every PostgreSQL migration applied, once");

    let mut pg_columns = Columns::new();
    for r in sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, column_default::text
         FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    {
        let default: Option<String> = r.get(4);
        pg_columns.insert(
            (r.get(0), r.get(1)),
            (r.get(2), r.get::<String, _>(3) == "NO", default.is_some()),
        );
    }
    let mut pg_indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'
         AND indexname NOT LIKE '%\\_pkey' AND indexname NOT LIKE '%\\_key'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pg_indexes.sort();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    Store::open(&path).await.unwrap().close().await;
    let (sqlite_columns, sqlite_indexes) = sqlite_schema(&path);

    // Column by column, so that a difference is named.
    for (key, want) in &sqlite_columns {
        assert_eq!(pg_columns.get(key), Some(want), "{key:?} in PostgreSQL");
    }
    for key in pg_columns.keys() {
        assert!(sqlite_columns.contains_key(key), "{key:?} is only in PostgreSQL");
    }
    assert!(
        sqlite_columns.len() > 100,
        "{} columns: did the SQLite schema load?",
        sqlite_columns.len()
    );
    assert_eq!(pg_indexes, sqlite_indexes);

    // The state machine's CHECK holds there too.
    let insert = "INSERT INTO jobs (seq, id, params, params_hash, source, state, created_at, updated_at)
                  VALUES ($1, $2, '{}', 'h', 'm.csv:2', $3, 0, 0)";
    sqlx::query(insert)
        .bind(1i64)
        .bind("ok")
        .bind("pending")
        .execute(&pool)
        .await
        .unwrap();
    let bad = sqlx::query(insert)
        .bind(2i64)
        .bind("bad")
        .bind("finished")
        .execute(&pool)
        .await;
    assert!(
        matches!(&bad, Err(sqlx::Error::Database(e)) if e.message().contains("check constraint")),
        "{bad:?}"
    );
    pool.close().await;
}
