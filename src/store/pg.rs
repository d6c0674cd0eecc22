//! The state machine's door on PostgreSQL: the same transitions as [`Store::transition`]
//! (`door::plan` builds them for both backends), run in one PostgreSQL transaction — the
//! guarded move first, what it records after it only if it applied.
//!
//! The PostgreSQL side of the store's writes (docs/design.md, "Several runners"); `tests/door_conformance.rs`
//! drives the same transitions through both backends and compares what they wrote. SQL is shared
//! text with `?` placeholders, numbered here (`$1`, `$2`, …); NULL arguments keep their type
//! (PostgreSQL types every parameter).
//!
//! [`Store::transition`]: super::Store::transition

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Column, PgConnection, PgPool, Postgres, Row as _, TypeInfo};

use super::door::{plan, Transition};
use super::sql::{Arg, Args, Kind, Row, Value};
use super::JobRow;

/// Moves one job, as [`super::Store::transition`] does on SQLite: returns the row written, or
/// None if the guard did not hold (and then nothing is written).
pub async fn transition(pool: &PgPool, t: Transition<'_>) -> anyhow::Result<Option<JobRow>> {
    let (seq, to, lease) = (t.seq, t.to, t.lease.map(|(o, e)| (o.to_owned(), e)));
    let parts = plan(t)?;
    let mut tries = 0;
    let row = super::db::ride_through(|| {
        tries += 1;
        transition_once(pool, &parts)
    })
    .await?;
    let row = match row {
        // Tried again after PostgreSQL went away: the first try may have been applied, its
        // answer lost. Then the job is where the move put it, under the same lease: applied.
        None if tries > 1 => applied(pool, seq, to, lease).await?,
        row => row,
    };
    row.as_ref().map(|r| JobRow::from_values(r)).transpose()
}

/// The row of job `seq` if it is in state `to` (under `lease`, if given).
async fn applied(
    pool: &PgPool,
    seq: i64,
    to: crate::state::JobState,
    lease: Option<(String, i64)>,
) -> anyhow::Result<Option<Row>> {
    let mut sql = format!("SELECT {} FROM jobs WHERE seq = $1 AND state = $2", super::WORK_COLUMNS);
    if lease.is_some() {
        sql.push_str(" AND lease_owner = $3 AND lease_epoch = $4");
    }
    let mut q = sqlx::query(&sql).bind(seq).bind(to.as_str());
    if let Some((owner, epoch)) = lease {
        q = q.bind(owner).bind(epoch);
    }
    let row = q.fetch_optional(pool).await?;
    row.as_ref().map(values).transpose()
}

async fn transition_once(pool: &PgPool, parts: &[(String, Args)]) -> Result<Option<Row>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = transition_in(&mut tx, parts).await?;
    if row.is_some() {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(row)
}

/// One transition inside the caller's transaction: the guarded move, then the rest only if it
/// applied. Returns the row written.
async fn transition_in(conn: &mut PgConnection, parts: &[(String, Args)]) -> Result<Option<Row>, sqlx::Error> {
    let Some(((sql, args), rest)) = parts.split_first() else {
        return Err(sqlx::Error::Protocol("internal: a transition without its move".into()));
    };
    let Some(row) = bind(&numbered(sql), args.clone()).fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    for (sql, args) in rest {
        let split = statements(sql, args.clone()).map_err(|e| sqlx::Error::Protocol(format!("{e:#}")))?;
        for (sql, args) in split {
            bind(&numbered(&sql), args).execute(&mut *conn).await?;
        }
    }
    values(&row)
        .map(Some)
        .map_err(|e| sqlx::Error::Protocol(format!("{e:#}")))
}

/// Bookkeeping statements (`Store::exec`) in one transaction; returns their rows.
pub async fn exec(pool: &PgPool, sql: &str, args: Args) -> anyhow::Result<Vec<Row>> {
    let parts = statements(sql, args)?;
    super::db::ride_through(|| async {
        let mut tx = pool.begin().await?;
        let mut rows = Vec::new();
        for (sql, args) in &parts {
            for row in bind(&super::db::dialect(sql), args.clone()).fetch_all(&mut *tx).await? {
                rows.push(values(&row).map_err(|e| sqlx::Error::Protocol(format!("{e:#}")))?);
            }
        }
        tx.commit().await?;
        Ok(rows)
    })
    .await
}

/// `sql` with its `?`s numbered `$1`, `$2`, … (a `?` inside a quoted literal stays).
pub fn numbered(sql: &str) -> String {
    let mut o = String::with_capacity(sql.len() + 8);
    let (mut n, mut quoted) = (0, false);
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                o.push(c);
            }
            '?' if !quoted => {
                n += 1;
                o.push('$');
                o.push_str(&n.to_string());
            }
            c => o.push(c),
        }
    }
    o
}

/// Bookkeeping may hold several statements (`a; b`): split as the SQLite writer splits them
/// (`batch::statements`), each with its share of the arguments, by its count of `?`s.
fn statements(sql: &str, args: Args) -> anyhow::Result<Vec<(String, Args)>> {
    let mut args = args.into_iter();
    let mut out = Vec::new();
    for part in super::batch::statements(sql) {
        let n = marks(part);
        let taken: Args = args.by_ref().take(n).collect();
        anyhow::ensure!(
            taken.len() == n,
            "internal: fewer arguments than placeholders in {part}"
        );
        out.push((part.to_string(), taken));
    }
    anyhow::ensure!(args.next().is_none(), "internal: more arguments than placeholders");
    Ok(out)
}

/// How many `?`s `sql` has outside quoted literals.
fn marks(sql: &str) -> usize {
    let mut quoted = false;
    sql.chars()
        .filter(|c| {
            if *c == '\'' {
                quoted = !quoted;
            }
            *c == '?' && !quoted
        })
        .count()
}

pub(super) fn bind(sql: &str, args: Args) -> Query<'_, Postgres, PgArguments> {
    super::db::bind_args!(sqlx::query(sql), args)
}

/// A PostgreSQL row as plain values, by each column's type.
fn values(row: &PgRow) -> anyhow::Result<Row> {
    row.columns()
        .iter()
        .map(|c| {
            let i = c.ordinal();
            Ok(match c.type_info().name() {
                "INT8" | "INT4" | "INT2" => row.try_get::<Option<i64>, _>(i)?.map_or(Value::Null, Value::Integer),
                "FLOAT8" | "FLOAT4" | "NUMERIC" => row.try_get::<Option<f64>, _>(i)?.map_or(Value::Null, Value::Real),
                _ => row.try_get::<Option<String>, _>(i)?.map_or(Value::Null, Value::Text),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            numbered("UPDATE t SET a = ?, b = 'what?' WHERE c = ? AND d IN (?, ?)"),
            "UPDATE t SET a = $1, b = 'what?' WHERE c = $2 AND d IN ($3, $4)"
        );
    }

    #[test]
    fn several_statements_share_out_their_arguments() {
        let parts = statements(
            "INSERT INTO a VALUES (?, ?); UPDATE b SET x = 'a;b?' WHERE y = ?;\n",
            vec![Arg::Int(1), Arg::Int(2), Arg::Text("z".into())],
        )
        .unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, vec![Arg::Int(1), Arg::Int(2)]);
        assert_eq!(parts[1].0.trim(), "UPDATE b SET x = 'a;b?' WHERE y = ?");
        assert_eq!(parts[1].1, vec![Arg::Text("z".into())]);
        assert!(statements("SELECT ?", vec![]).is_err());
    }
}
