//! The private server's processes: finding the binaries, `initdb`, `pg_ctl start`/`stop`, the
//! watchdog, and running them as an unprivileged user when we are root. Blocking parts are
//! plain `std::process`, so that `Drop` can use them; async callers go through tokio.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::Connection;

use super::{PgConnection, BIN_ENV, DATABASE, SUPERUSER};

/// Enough for several runners × their pool, plus the tests' own connections.
const MAX_CONNECTIONS: u32 = 200;
/// `pg_ctl start -w` gives up after this many seconds.
const START_TIMEOUT_S: u32 = 30;
/// Bound on waiting for connections to be accepted, and for a stopped postmaster to be gone.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Another process may take the free port between our probe and the server's bind.
const PORT_ATTEMPTS: usize = 5;

pub(super) struct Private {
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

enum StartFailure {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

/// The first folder holding `initdb`, `pg_ctl` and `postgres`: `WANBATCH_PG_BIN` alone when set,
/// else PATH, then `/usr/lib/postgresql/*/bin` (Debian/Ubuntu keep them off PATH), newest first.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| is_executable(&d.join(b)))
    };
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        return Some(PathBuf::from(dir)).filter(|d| has_all(d));
    }
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

impl Private {
    pub(super) async fn create(bin: PathBuf) -> Result<Private> {
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

    pub(super) fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Fast shutdown (sessions are ended), then a start on the same port and data.
    pub(super) async fn restart(&mut self) -> Result<()> {
        let ctl = self.ctl.clone();
        tokio::task::spawn_blocking(move || ctl.stop_blocking("fast")).await??;
        match self.ctl.start_server(self.port).await {
            Ok(()) => self.wait_ready().await,
            Err(StartFailure::PortTaken(e)) => Err(e.context(format!("port {} was taken while stopped", self.port))),
            Err(StartFailure::Other(e)) => Err(e),
        }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.ctl.pid()
    }

    pub(super) fn root(&self) -> &Path {
        &self.ctl.root
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

    /// Stops the server, waits until the postmaster is gone, removes the folder (blocking; a
    /// second call does nothing).
    pub(super) fn shutdown(&mut self, mode: &str) -> Result<()> {
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

impl Drop for Private {
    /// Also on panic, and on an error half-way through `create`. Does nothing after `shutdown`.
    fn drop(&mut self) {
        // Immediate: the data is about to be deleted, a checkpoint would be wasted time.
        if let Err(e) = self.shutdown("immediate") {
            eprintln!("pglocal: stopping the test PostgreSQL: {e:#}");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
