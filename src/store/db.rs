//! One way to run a statement on either backend: SQLite (the embedded default) or PostgreSQL
//! (several runners on one campaign).
//!
//! The store's SQL is shared text written with SQLite's `?` and `?N` placeholders; on PostgreSQL
//! it is translated on the way (`dialect`: `$n` placeholders, no `INDEXED BY` hints). What
//! cannot be shared text is written portably at its site (`CASE WHEN … THEN 1 ELSE 0 END` for a
//! count of rows matching a condition, `CAST(SUM(…) AS BIGINT)` since PostgreSQL sums integers
//! as `numeric`) or, rarely, chosen per backend (`Store::is_pg`).
//!
//! Arguments are collected as typed values (`sql::Arg`), so a NULL keeps its type on PostgreSQL,
//! and rows decode through sqlx's `FromRow` for whichever backend answered.

use std::borrow::Cow;
use std::marker::PhantomData;

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};

use super::sql::{Arg, Args, Kind, ToArg};

/// A pool on one backend.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

impl Db {
    pub async fn begin(&self) -> anyhow::Result<Tx> {
        Ok(match self {
            Db::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Db::Pg(p) => Tx::Pg(p.begin().await?),
        })
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Pg(p) => p.close().await,
        }
    }
}

/// A transaction on one backend (rolled back if dropped uncommitted).
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Pg(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    pub async fn commit(self) -> anyhow::Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Pg(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// Where a statement runs: a pool or an open transaction.
pub enum Conn<'a> {
    SqlitePool(&'a SqlitePool),
    PgPool(&'a PgPool),
    Sqlite(&'a mut SqliteConnection),
    Pg(&'a mut PgConnection),
}

impl<'a> From<&'a Db> for Conn<'a> {
    fn from(db: &'a Db) -> Conn<'a> {
        match db {
            Db::Sqlite(p) => Conn::SqlitePool(p),
            Db::Pg(p) => Conn::PgPool(p),
        }
    }
}

impl<'a> From<&'a mut Tx> for Conn<'a> {
    fn from(tx: &'a mut Tx) -> Conn<'a> {
        match tx {
            Tx::Sqlite(t) => Conn::Sqlite(t),
            Tx::Pg(t) => Conn::Pg(t),
        }
    }
}

/// A statement and its arguments, not yet run.
pub struct Query<'s, T> {
    sql: Cow<'s, str>,
    args: Args,
    row: PhantomData<T>,
}

/// A statement whose rows are not read (or read as `T` with `fetch_*`).
pub fn query<'s>(sql: impl Into<Cow<'s, str>>) -> Query<'s, ()> {
    query_as(sql)
}

/// A statement whose rows are read as `T`.
pub fn query_as<'s, T>(sql: impl Into<Cow<'s, str>>) -> Query<'s, T> {
    Query {
        sql: sql.into(),
        args: Vec::new(),
        row: PhantomData,
    }
}

/// A statement whose rows are one value each, of type `T`.
pub fn query_scalar<'s, T>(sql: impl Into<Cow<'s, str>>) -> Query<'s, (T,)> {
    query_as(sql)
}

/// A row type both backends decode.
pub trait Both: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}
impl<T> Both for T where T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}

macro_rules! on_both {
    ($self:ident, $conn:expr, $t:ty, $method:ident) => {{
        let Query { sql, args, .. } = $self;
        match $conn.into() {
            Conn::SqlitePool(p) => lite::<$t>(&sql, args).$method(p).await?,
            Conn::Sqlite(c) => lite::<$t>(&sql, args).$method(&mut *c).await?,
            Conn::PgPool(p) => {
                let sql = dialect(&sql);
                ride_through(|| pg::<$t>(&sql, args.clone()).$method(p)).await?
            }
            Conn::Pg(c) => {
                let sql = dialect(&sql);
                pg::<$t>(&sql, args).$method(&mut *c).await?
            }
        }
    }};
}

impl<'s, T> Query<'s, T> {
    pub fn bind(mut self, v: impl ToArg) -> Self {
        self.args.push(v.arg());
        self
    }

    /// Runs the statement; returns how many rows it changed.
    pub async fn execute<'c>(self, conn: impl Into<Conn<'c>>) -> anyhow::Result<u64> {
        let Query { sql, args, .. } = self;
        Ok(match conn.into() {
            Conn::SqlitePool(p) => lite_exec(&sql, args).execute(p).await?.rows_affected(),
            Conn::Sqlite(c) => lite_exec(&sql, args).execute(&mut *c).await?.rows_affected(),
            Conn::PgPool(p) => {
                let sql = dialect(&sql);
                ride_through(|| pg_exec(&sql, args.clone()).execute(p))
                    .await?
                    .rows_affected()
            }
            Conn::Pg(c) => pg_exec(&dialect(&sql), args).execute(&mut *c).await?.rows_affected(),
        })
    }
}

impl<'s, T: Both> Query<'s, T> {
    pub async fn fetch_all<'c>(self, conn: impl Into<Conn<'c>>) -> anyhow::Result<Vec<T>> {
        Ok(on_both!(self, conn, T, fetch_all))
    }

    pub async fn fetch_one<'c>(self, conn: impl Into<Conn<'c>>) -> anyhow::Result<T> {
        Ok(on_both!(self, conn, T, fetch_one))
    }

    pub async fn fetch_optional<'c>(self, conn: impl Into<Conn<'c>>) -> anyhow::Result<Option<T>> {
        Ok(on_both!(self, conn, T, fetch_optional))
    }
}

impl<'s, V: Send + Unpin> Query<'s, (V,)>
where
    (V,): Both,
{
    /// The first column of every row.
    pub async fn fetch_column<'c>(self, conn: impl Into<Conn<'c>>) -> anyhow::Result<Vec<V>> {
        Ok(self.fetch_all(conn).await?.into_iter().map(|(v,)| v).collect())
    }

    /// The first column of the one row.
    pub async fn fetch_value<'c>(self, conn: impl Into<Conn<'c>>) -> anyhow::Result<V> {
        Ok(self.fetch_one(conn).await?.0)
    }

    /// The first column of the row, if there is one.
    pub async fn fetch_maybe<'c>(self, conn: impl Into<Conn<'c>>) -> anyhow::Result<Option<V>> {
        Ok(self.fetch_optional(conn).await?.map(|(v,)| v))
    }
}

type LiteAs<'q, T> = sqlx::query::QueryAs<'q, Sqlite, T, sqlx::sqlite::SqliteArguments<'q>>;
type PgAs<'q, T> = sqlx::query::QueryAs<'q, Postgres, T, sqlx::postgres::PgArguments>;

/// `q` with `args` bound in order; a NULL bound with its type (PostgreSQL types every
/// parameter; SQLite ignores the type).
macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Int(i) => q.bind(i),
                Arg::Real(r) => q.bind(r),
                Arg::Text(t) => q.bind(t),
                Arg::Null(Kind::Int) => q.bind(None::<i64>),
                Arg::Null(Kind::Real) => q.bind(None::<f64>),
                Arg::Null(Kind::Text) => q.bind(None::<String>),
            };
        }
        q
    }};
}
pub(super) use bind_args;

fn lite<'q, T: for<'r> FromRow<'r, SqliteRow>>(sql: &'q str, args: Args) -> LiteAs<'q, T> {
    bind_args!(sqlx::query_as::<Sqlite, T>(sql), args)
}

fn pg<'q, T: for<'r> FromRow<'r, PgRow>>(sql: &'q str, args: Args) -> PgAs<'q, T> {
    bind_args!(sqlx::query_as::<Postgres, T>(sql), args)
}

fn lite_exec(sql: &str, args: Args) -> sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    bind_args!(sqlx::query::<Sqlite>(sql), args)
}

fn pg_exec(sql: &str, args: Args) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
    super::pg::bind(sql, args)
}

/// How long a statement on a PostgreSQL pool waits out a lost server (a restart, a failover)
/// before its error stands.
const RIDE_THROUGH: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a PostgreSQL error means the server went away or is not ready yet (a connection
/// lost, refused or cut, a server starting or shutting down, a session it ended), not that the
/// statement is wrong. Nothing of the failed transaction was committed, or it was and the
/// door's guard makes its repeat a no-op.
pub fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        // 08: connection exceptions; 57P: the server shutting down or starting; 25P03: a
        // transaction ended by the server for idling (a runner that was frozen mid-write).
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "25P03"),
        _ => false,
    }
}

/// Runs `attempt` again while PostgreSQL is away (see `transient`), for up to `RIDE_THROUGH`,
/// backing off to a try every 2 s. A statement cut off mid-flight may have been applied: every
/// write the engine retries is guarded by the state it expects (the door), so applying it twice
/// changes nothing the second time.
pub async fn ride_through<T, F, Fut>(mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let deadline = std::time::Instant::now() + RIDE_THROUGH;
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && std::time::Instant::now() + wait < deadline => {
                tracing::warn!(error = %e, "PostgreSQL is away: trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Shared SQL as PostgreSQL takes it: `?` numbered `$1`, `$2`, …, `?N` as `$N` (outside quoted
/// literals), SQLite's `INDEXED BY name` hints dropped.
pub fn dialect(sql: &str) -> String {
    let mut o = String::with_capacity(sql.len() + 8);
    let (mut n, mut quoted) = (0, false);
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                o.push(c);
            }
            '?' if !quoted => {
                o.push('$');
                if chars.peek().is_some_and(|(_, d)| d.is_ascii_digit()) {
                    while let Some((_, d)) = chars.next_if(|(_, d)| d.is_ascii_digit()) {
                        o.push(d);
                    }
                } else {
                    n += 1;
                    o.push_str(&n.to_string());
                }
            }
            'I' if !quoted && sql[i..].starts_with("INDEXED BY ") => {
                // Skip the hint and its index name.
                let rest = &sql[i + "INDEXED BY ".len()..];
                let name = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let skip = "INDEXED BY ".len() + name;
                for _ in 1..sql[i..i + skip].chars().count() {
                    chars.next();
                }
            }
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::dialect;

    #[test]
    fn shared_sql_is_translated_for_postgres() {
        assert_eq!(
            dialect("UPDATE t SET a = ?, b = 'what?' WHERE c = ? AND d IN (?, ?)"),
            "UPDATE t SET a = $1, b = 'what?' WHERE c = $2 AND d IN ($3, $4)"
        );
        assert_eq!(
            dialect("SELECT * FROM jobs INDEXED BY jobs_state_seq WHERE seq > ?1 AND (?2 IS NULL OR s = ?2) LIMIT ?3"),
            "SELECT * FROM jobs  WHERE seq > $1 AND ($2 IS NULL OR s = $2) LIMIT $3"
        );
        assert_eq!(dialect("SELECT 'INDEXED BY x'"), "SELECT 'INDEXED BY x'");
    }
}
