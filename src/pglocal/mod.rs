//! A private PostgreSQL server for tests and benchmarks (not used by the `wanbatch` binary itself).
//!
//! `PgServer::start` finds the server binaries (`initdb`, `pg_ctl`, `postgres`: `WANBATCH_PG_BIN`,
//! else PATH, then `/usr/lib/postgresql/<version>/bin`, newest first), runs `initdb` into a
//! temporary folder and starts the server with `pg_ctl` on a free loopback port. When `WANBATCH_TEST_PG_URL` is set, no
//! server is started: databases are made on that server instead. `for_tests` applies the skip
//! policy: no PostgreSQL and no URL → skip with a message, unless `WANBATCH_REQUIRE_PG=1`.
//!
//! Owns: the temporary folder (`data/` = the cluster, `server.log`, the unix socket) and the
//! server's processes. Invariants:
//! - the server listens on 127.0.0.1 only, with `trust` authentication for the superuser
//!   `wanbatch`: any local user can connect while it runs, which is acceptable for a test server;
//! - durability is traded for speed (`fsync`, `synchronous_commit`, `full_page_writes` off): data
//!   survives `restart` (a clean shutdown) but not a machine crash, and the folder is deleted anyway;
//! - no process outlives its owner: `stop` and `Drop` stop the server and remove the folder (also
//!   on panic), and a watchdog (`sh`, holding the read end of a pipe only this process writes)
//!   does the same when the owning process dies without dropping (SIGKILL, `process::exit`, a
//!   `static` server in a test binary);
//! - as root (CI containers), `initdb`/`pg_ctl` refuse to run, so every PostgreSQL process runs as
//!   the `postgres` system user (created by the Debian/Ubuntu package) via `setuid`/`setgid` on
//!   the spawned command, with the folder chowned to it. No `sudo`/`runuser` needed.

mod server;

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sqlx::Connection;

use server::Private;
pub use server::{find_bin_dir, process_alive};

type PgConnection = sqlx::postgres::PgConnection;

/// The superuser `initdb` creates; URLs of the private server use it (no password).
pub const SUPERUSER: &str = "wanbatch";
/// The database `start` creates and `url()` names.
pub const DATABASE: &str = "wanbatch";
/// When set, tests use this server (a URL whose user may `CREATE DATABASE`) instead of their own.
pub const URL_ENV: &str = "WANBATCH_TEST_PG_URL";
/// When `1`, a missing PostgreSQL fails the tests instead of skipping them (CI sets it).
pub const REQUIRE_ENV: &str = "WANBATCH_REQUIRE_PG";
/// When set, the only folder searched for `initdb`, `pg_ctl` and `postgres`.
pub const BIN_ENV: &str = "WANBATCH_PG_BIN";

/// A running PostgreSQL for tests: private (ours to stop and restart) or external (from the URL).
pub struct PgServer {
    inner: Inner,
}

/// Dropping a `Private` stops its server and removes its folder.
enum Inner {
    External(String),
    Private(Private),
}

impl PgServer {
    /// Starts a private server, or uses `WANBATCH_TEST_PG_URL` when it is set (after checking
    /// that it accepts connections).
    pub async fn start() -> Result<PgServer> {
        if let Some(url) = external_url() {
            let conn = PgConnection::connect(&url).await;
            conn.with_context(|| format!("{URL_ENV} is set but its server does not accept connections"))?
                .close()
                .await?;
            return Ok(PgServer {
                inner: Inner::External(url),
            });
        }
        let bin = find_bin_dir().context(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in WANBATCH_PG_BIN, PATH or \
             /usr/lib/postgresql/*/bin",
        )?;
        Ok(PgServer {
            inner: Inner::Private(Private::create(bin).await?),
        })
    }

    /// `postgres://wanbatch@127.0.0.1:PORT/wanbatch` (the private server), or the external URL.
    pub fn url(&self) -> String {
        match &self.inner {
            Inner::External(url) => url.clone(),
            Inner::Private(p) => p.url(DATABASE),
        }
    }

    /// Makes an empty database called `name` (dropping any earlier one of that name, so a test
    /// re-run on an external server starts clean) and returns its URL. `name`: lowercase ASCII
    /// letters, digits and `_`, not starting with a digit, at most 63 bytes.
    pub async fn fresh_database(&self, name: &str) -> Result<String> {
        check_db_name(name)?;
        let admin = match &self.inner {
            Inner::External(url) => url.clone(),
            Inner::Private(p) => p.url("postgres"),
        };
        let mut conn = PgConnection::connect(&admin)
            .await
            .context("connecting to create a database")?;
        // WITH (FORCE) (PostgreSQL 13+) ends sessions a killed test left behind.
        let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        sqlx::query(&drop)
            .execute(&mut conn)
            .await
            .with_context(|| format!("dropping database {name}"))?;
        let create = format!("CREATE DATABASE \"{name}\"");
        sqlx::query(&create)
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        conn.close().await?;
        with_database(&admin, name)
    }

    /// Stops the server (fast shutdown: sessions are ended) and starts it again on the same port
    /// and data. Unavailable with `WANBATCH_TEST_PG_URL`.
    pub async fn restart(&mut self) -> Result<()> {
        let p = match &mut self.inner {
            Inner::Private(p) => p,
            _ => bail!("restart is unavailable: the server is external ({URL_ENV} is set)"),
        };
        p.restart().await
    }

    /// Stops the server (fast shutdown), waits until the postmaster is gone and removes the
    /// folder, reporting any failure (`Drop` does the same silently). External: does nothing.
    pub async fn stop(self) -> Result<()> {
        match self.inner {
            Inner::Private(mut p) => tokio::task::spawn_blocking(move || p.shutdown("fast")).await?,
            Inner::External(_) => Ok(()),
        }
    }

    /// The postmaster's process id (from `postmaster.pid`), while the private server runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        match &self.inner {
            Inner::Private(p) => p.pid(),
            _ => None,
        }
    }

    /// The temporary folder holding the cluster (`data/`), `server.log` and the socket; `None`
    /// for an external server.
    pub fn dir(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Private(p) => Some(p.root()),
            _ => None,
        }
    }
}

/// A server for a test, or `None` (after printing why) when the test must be skipped: no
/// PostgreSQL binaries and no `WANBATCH_TEST_PG_URL`. Panics (fails the test) if
/// `WANBATCH_REQUIRE_PG=1` and PostgreSQL is missing, or if it is installed but cannot start.
pub async fn for_tests(test: &str) -> Option<PgServer> {
    if skip(test) {
        return None;
    }
    Some(start_or_fail(test).await)
}

/// One server shared by every test of this test binary (each takes a `fresh_database`); same
/// policy as `for_tests`. It is never dropped: the watchdog stops it when the binary exits.
pub async fn shared_for_tests(test: &str) -> Option<&'static PgServer> {
    static SHARED: tokio::sync::OnceCell<PgServer> = tokio::sync::OnceCell::const_new();
    if skip(test) {
        return None;
    }
    Some(SHARED.get_or_init(|| start_or_fail(test)).await)
}

/// PostgreSQL is there (binaries or URL) but unusable: that is a failure, never a skip.
async fn start_or_fail(test: &str) -> PgServer {
    let started = PgServer::start().await;
    started.unwrap_or_else(|e| panic!("{test}: PostgreSQL is available but the test server is not usable: {e:#}"))
}

/// The skip policy, printing the reason when it skips.
fn skip(test: &str) -> bool {
    let require = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
    let available = external_url().is_some() || find_bin_dir().is_some();
    match policy(test, available, require) {
        Policy::Run => false,
        Policy::Skip(msg) => {
            // Straight to the stderr handle: the test harness captures eprintln! of passing tests,
            // and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "{msg}");
            true
        }
        Policy::Fail(msg) => panic!("{msg}"),
    }
}

#[derive(Debug, PartialEq)]
enum Policy {
    Run,
    Skip(String),
    Fail(String),
}

/// Skip only when PostgreSQL is truly absent and not required; a server that is installed but
/// fails to start is a failure, decided later by the caller.
fn policy(test: &str, available: bool, required: bool) -> Policy {
    let msg = format!("PostgreSQL not installed: skipping {test}; install postgresql or set {URL_ENV}");
    match (available, required) {
        (true, _) => Policy::Run,
        (false, false) => Policy::Skip(msg),
        (false, true) => Policy::Fail(format!("{msg} ({REQUIRE_ENV}=1: PostgreSQL tests are mandatory here)")),
    }
}

fn external_url() -> Option<String> {
    std::env::var(URL_ENV).ok().filter(|u| !u.trim().is_empty())
}

fn check_db_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let starts_ok = name.chars().next().is_some_and(|c| !c.is_ascii_digit());
    if name.is_empty() || name.len() > 63 || !starts_ok || !name.chars().all(ok_char) {
        bail!("database name {name:?}: use 1–63 of a-z, 0-9 and _, not starting with a digit");
    }
    Ok(())
}

/// `url` with its database (the path) replaced by `db`, keeping user, host and query.
fn with_database(url: &str, db: &str) -> Result<String> {
    let (base, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let authority = base.find("://").with_context(|| format!("not a URL: {url}"))? + 3;
    let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    Ok(format!("{}/{db}{query}", &base[..path]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        let f = |u| with_database(u, "t1").unwrap();
        assert_eq!(f("postgres://u@h:5432/db"), "postgres://u@h:5432/t1");
        assert_eq!(
            f("postgres://u:p@h/db?sslmode=require"),
            "postgres://u:p@h/t1?sslmode=require"
        );
        assert_eq!(f("postgres://u@h:5432"), "postgres://u@h:5432/t1");
        assert_eq!(f("postgresql://h?x=1"), "postgresql://h/t1?x=1");
        assert!(with_database("nonsense", "t1").is_err());
    }

    #[test]
    fn database_names_that_need_no_quoting_rules() {
        for ok in ["a", "run_1", "_x", &"a".repeat(63)] {
            assert!(check_db_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "A", "a-b", "a\"b", "a b", &"a".repeat(64)] {
            assert!(check_db_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn skips_only_when_absent_and_not_required() {
        assert_eq!(policy("t", true, false), Policy::Run);
        assert_eq!(policy("t", true, true), Policy::Run);
        let Policy::Skip(msg) = policy("t", false, false) else {
            panic!("should skip")
        };
        assert!(
            msg.contains("PostgreSQL not installed: skipping t") && msg.contains(URL_ENV),
            "{msg}"
        );
        let Policy::Fail(msg) = policy("t", false, true) else {
            panic!("should fail")
        };
        assert!(msg.contains(REQUIRE_ENV), "{msg}");
    }
}
