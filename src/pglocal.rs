//! A private PostgreSQL server for tests and benchmarks (not used by the `wanbatch` binary itself).
//!
//! `PgServer::start` finds the server binaries (`initdb`, `pg_ctl`, `postgres`: PATH first, then
//! `/usr/lib/postgresql/<version>/bin`, newest first), runs `initdb` into a temporary folder and
//! starts the server with `pg_ctl` on a free loopback port. When `WANBATCH_TEST_PG_URL` is set, no
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

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::Connection;

/// The superuser `initdb` creates; URLs of the private server use it (no password).
pub const SUPERUSER: &str = "wanbatch";
/// The database `start` creates and `url()` names.
pub const DATABASE: &str = "wanbatch";
/// When set, tests use this server (a URL whose user may `CREATE DATABASE`) instead of their own.
pub const URL_ENV: &str = "WANBATCH_TEST_PG_URL";
/// When `1`, a missing PostgreSQL fails the tests instead of skipping them (CI sets it).
pub const REQUIRE_ENV: &str = "WANBATCH_REQUIRE_PG";

/// Enough for several runners × their pool, plus the tests' own connections.
const MAX_CONNECTIONS: u32 = 200;
/// `pg_ctl start -w` gives up after this many seconds.
const START_TIMEOUT_S: u32 = 30;
/// Bound on waiting for connections to be accepted, and for a stopped postmaster to be gone.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Another process may take the free port between our probe and the server's bind.
const PORT_ATTEMPTS: usize = 5;

/// A running PostgreSQL for tests: private (ours to stop and restart) or external (from the URL).
pub struct PgServer {
    inner: Inner,
}

enum Inner {
    External(String),
    Private(Private),
    /// After `stop`: nothing left to do on drop.
    Stopped,
}

struct Private {
    ctl: Ctl,
    port: u16,
    /// Removed on drop; `None` once removed by `shutdown`.
    dir: Option<tempfile::TempDir>,
    /// Its stdin is the pipe whose closing (our death) tells it to clean up.
    watchdog: Option<std::process::Child>,
}

/// Everything needed to run the server's programs; cloned into blocking tasks.
#[derive(Clone)]
struct Ctl {
    bin: PathBuf,
    root: PathBuf,
    /// (uid, gid) of the unprivileged user the programs run as when we are root.
    run_as: Option<(u32, u32)>,
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
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in PATH or /usr/lib/postgresql/*/bin",
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
            Inner::Stopped => unreachable!("a stopped PgServer is consumed"),
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
            Inner::Stopped => unreachable!("a stopped PgServer is consumed"),
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
        let ctl = p.ctl.clone();
        tokio::task::spawn_blocking(move || ctl.stop_blocking("fast")).await??;
        match p.ctl.start_server(p.port).await {
            Ok(()) => p.wait_ready().await,
            Err(StartFailure::PortTaken(e)) => Err(e.context(format!("port {} was taken while stopped", p.port))),
            Err(StartFailure::Other(e)) => Err(e),
        }
    }

    /// Stops the server (fast shutdown), waits until the postmaster is gone and removes the
    /// folder, reporting any failure (`Drop` does the same silently). External: does nothing.
    pub async fn stop(mut self) -> Result<()> {
        match std::mem::replace(&mut self.inner, Inner::Stopped) {
            Inner::Private(mut p) => tokio::task::spawn_blocking(move || p.shutdown("fast")).await?,
            _ => Ok(()),
        }
    }

    /// The postmaster's process id (from `postmaster.pid`), while the private server runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        match &self.inner {
            Inner::Private(p) => p.ctl.pid(),
            _ => None,
        }
    }

    /// The temporary folder holding the cluster (`data/`), `server.log` and the socket; `None`
    /// for an external server.
    pub fn dir(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Private(p) => Some(&p.ctl.root),
            _ => None,
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Inner::Private(p) = &mut self.inner {
            // Immediate: the data is about to be deleted, a checkpoint would be wasted time.
            if let Err(e) = p.shutdown("immediate") {
                eprintln!("pglocal: stopping the test PostgreSQL: {e:#}");
            }
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
            eprintln!("{msg}");
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

/// The first folder holding `initdb`, `pg_ctl` and `postgres`: PATH, then
/// `/usr/lib/postgresql/*/bin` (Debian/Ubuntu keep them off PATH), newest major version first.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| is_executable(&d.join(b)))
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(d) = std::env::split_paths(&path).find(|d| has_all(d)) {
        return Some(d);
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.split('.').map(|n| n.parse().ok()).collect::<Option<Vec<u32>>>()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, d)| d).find(|d| has_all(d))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `pid` is a live process. A zombie counts as gone: it no longer holds the port or the
/// data, and a container's PID 1 may be slow to reap a daemon's exit.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) if Path::new("/proc/self/stat").exists() => false,
        Err(_) => unsafe { libc::kill(pid as libc::pid_t, 0) == 0 },
    }
}

type PgConnection = sqlx::postgres::PgConnection;

enum StartFailure {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl Private {
    async fn create(bin: PathBuf) -> Result<Private> {
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("wanbatch-pg-")
            .tempdir()
            .context("creating the temp folder")?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).context("chown of the temp folder")?;
        }
        let ctl = Ctl {
            bin,
            root: dir.path().to_path_buf(),
            run_as,
        };
        ctl.initdb().await?;
        let watchdog = Some(ctl.spawn_watchdog()?);
        let mut private = Private {
            ctl,
            port: 0,
            dir: Some(dir),
            watchdog,
        };
        for attempt in 1.. {
            private.port = free_port()?;
            match private.ctl.start_server(private.port).await {
                Ok(()) => break,
                Err(StartFailure::PortTaken(_)) if attempt < PORT_ATTEMPTS => continue,
                Err(StartFailure::PortTaken(e) | StartFailure::Other(e)) => return Err(e),
            }
        }
        private.wait_ready().await?;
        let mut conn = PgConnection::connect(&private.url("postgres")).await?;
        sqlx::query(&format!("CREATE DATABASE \"{DATABASE}\""))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(private)
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// `pg_ctl -w` already waited for "ready"; this proves it over TCP, as clients will connect.
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match PgConnection::connect(&self.url("postgres")).await {
                Ok(conn) => return Ok(conn.close().await?),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).context(format!("PostgreSQL on port {} did not accept connections", self.port))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Stops the server, waits until the postmaster is gone, removes the folder (blocking).
    fn shutdown(&mut self, mode: &str) -> Result<()> {
        // The watchdog goes first, so that it cannot race us for the same folder.
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let stopped = self.ctl.stop_blocking(mode);
        let removed = match self.dir.take() {
            Some(dir) => dir.close().context("removing the temp folder"),
            None => Ok(()),
        };
        stopped.and(removed)
    }
}

impl Ctl {
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// A PostgreSQL program, run as the unprivileged user if we are root, in the folder (the
    /// user may not be able to read our working directory), without PG* variables that would
    /// override what we pass.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root).stdin(Stdio::null());
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE", "PGOPTIONS"] {
            cmd.env_remove(var);
        }
        if let Some((uid, gid)) = self.run_as {
            // std also clears the supplementary groups when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    async fn initdb(&self) -> Result<()> {
        let mut cmd = self.command(&self.bin.join("initdb"));
        cmd.arg("-D")
            .arg(self.data())
            .args(["-U", SUPERUSER, "--auth=trust", "--no-sync"]);
        // The C locale exists everywhere (containers often lack others) and sorts fastest.
        cmd.args(["--encoding=UTF8", "--locale=C"]);
        let out = tokio::process::Command::from(cmd)
            .output()
            .await
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let settings = format!(
            "\n# pglocal: a disposable test server\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nmax_connections = {MAX_CONNECTIONS}\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            self.root.display()
        );
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).context("reading postgresql.conf")?;
        text.push_str(&settings);
        // Rewriting in place keeps the file's owner (the unprivileged user).
        std::fs::write(&conf, text).context("writing postgresql.conf")
    }

    async fn start_server(&self, port: u16) -> Result<(), StartFailure> {
        let log_start = std::fs::metadata(self.log()).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.command(&self.bin.join("pg_ctl"));
        cmd.arg("start").arg("-D").arg(self.data()).arg("-l").arg(self.log());
        cmd.args([
            "-w",
            "-s",
            "-t",
            &START_TIMEOUT_S.to_string(),
            "-o",
            &format!("-p {port}"),
        ]);
        let out = tokio::process::Command::from(cmd).output().await;
        let out = out.context("running pg_ctl start").map_err(StartFailure::Other)?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read(self.log()).unwrap_or_default();
        let log = String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or_default()).into_owned();
        let e = anyhow::anyhow!(
            "pg_ctl start failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            log.trim()
        );
        Err(if log.contains("could not bind") {
            StartFailure::PortTaken(e)
        } else {
            StartFailure::Other(e)
        })
    }

    /// `pg_ctl stop -w` returns when `postmaster.pid` is gone, a moment before the process
    /// exits: wait for the process too, so that "stopped" means no process left.
    fn stop_blocking(&self, mode: &str) -> Result<()> {
        let Some(pid) = self.pid() else { return Ok(()) };
        let mut cmd = self.command(&self.bin.join("pg_ctl"));
        cmd.arg("stop")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-s"]);
        let out = cmd.output().context("running pg_ctl stop")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while process_alive(pid) {
            if Instant::now() >= deadline {
                bail!(
                    "postmaster {pid} still running after pg_ctl stop: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// `sh` blocked reading a pipe whose write end only this process holds (std opens pipes
    /// close-on-exec, so no child inherits it): when this process ends however it ends, the read
    /// returns and the watchdog stops the server and removes the folder. Its own process group
    /// keeps a terminal's Ctrl-C from killing it before it has done so.
    fn spawn_watchdog(&self) -> Result<std::process::Child> {
        let mut cmd = self.command(Path::new("/bin/sh"));
        cmd.arg("-c")
            .arg(r#"read -r _; "$0" stop -D "$1" -m immediate -w -s >/dev/null 2>&1; rm -rf "$2""#)
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data())
            .arg(&self.root);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        cmd.spawn().context("starting the watchdog")
    }
}

/// uid and gid of the `postgres` system user (the Debian/Ubuntu package creates it).
fn unprivileged_user() -> Result<(u32, u32)> {
    let name = CString::new("postgres").expect("no NUL");
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // getpwnam_r: getpwnam's static buffer is not safe with tests running on several threads.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        bail!(
            "running as root, and initdb refuses root: a `postgres` system user is needed to run \
             PostgreSQL (the postgresql package creates it), or run the tests as a normal user"
        );
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

fn free_port() -> Result<u16> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(probe.local_addr()?.port())
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

    #[cfg(target_os = "linux")]
    #[test]
    fn a_zombie_or_missing_process_is_not_alive() {
        assert!(process_alive(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie until wait().
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!process_alive(pid), "zombie counted as alive");
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }
}
