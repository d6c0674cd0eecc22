//! Tests of the private PostgreSQL harness (`wanbatch::pglocal`) against a real server: start and
//! query, one database per test, restart keeps data, and no process or folder outlives its owner
//! (stop, drop on panic, and the owning process killed with SIGKILL). Skipped with a message when
//! PostgreSQL is not installed, unless `WANBATCH_REQUIRE_PG=1`.

use std::fs::Permissions;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use wanbatch::pglocal::{self, process_alive, PgServer};

/// Waits (bounded) until the process is gone and the folder removed.
fn assert_gone(pid: u32, dir: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while (process_alive(pid) || dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!process_alive(pid), "{what}: postmaster {pid} still running");
    assert!(!dir.exists(), "{what}: {} still exists", dir.display());
}

async fn scalar(url: &str, sql: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    v
}

#[tokio::test]
async fn starts_and_answers_queries_on_loopback() {
    let t0 = Instant::now();
    let Some(pg) = pglocal::for_tests("starts_and_answers_queries_on_loopback").await else {
        return;
    };
    eprintln!("server ready in {:?}", t0.elapsed());

    let url = pg.url();
    assert!(url.starts_with("postgres://"), "{url}");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let (one, version): (i32, i32) = sqlx::query_as("SELECT 1 + 0, current_setting('server_version_num')::int")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    assert!(version >= 130000, "server_version_num {version}");
    if pg.dir().is_some() {
        assert!(
            url.starts_with(&format!("postgres://{}@127.0.0.1:", pglocal::SUPERUSER)),
            "{url}"
        );
        let (listen, conns, encoding): (String, String, String) = sqlx::query_as(
            "SELECT current_setting('listen_addresses'), current_setting('max_connections'), \
             current_setting('server_encoding')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            (listen.as_str(), conns.as_str(), encoding.as_str()),
            ("127.0.0.1", "200", "UTF8")
        );
    }
    conn.close().await.unwrap();
}

#[tokio::test]
async fn each_fresh_database_is_its_own_and_starts_empty() {
    let Some(pg) = pglocal::shared_for_tests("each_fresh_database_is_its_own_and_starts_empty").await else {
        return;
    };
    let t0 = Instant::now();
    let a = pg.fresh_database("pglocal_iso_a").await.unwrap();
    eprintln!("fresh database in {:?}", t0.elapsed());
    let b = pg.fresh_database("pglocal_iso_b").await.unwrap();
    assert_ne!(a, b);

    let mut conn = PgConnection::connect(&a).await.unwrap();
    sqlx::query("CREATE TABLE jobs (id int)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO jobs VALUES (1), (2)")
        .execute(&mut conn)
        .await
        .unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(name, "pglocal_iso_a");

    let has_jobs_table = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'jobs'";
    assert_eq!(scalar(&b, has_jobs_table).await, 0, "b sees a's table");
    assert_eq!(scalar(&a, "SELECT count(*) FROM jobs").await, 2);

    // A second fresh_database of a name replaces it, even with a session still open on it.
    let again = pg.fresh_database("pglocal_iso_a").await.unwrap();
    assert_eq!(again, a);
    assert_eq!(scalar(&a, has_jobs_table).await, 0, "re-made database is not empty");
    assert!(
        sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
        "old session survived the drop"
    );

    assert!(pg.fresh_database("Bad-Name").await.is_err());
}

#[tokio::test]
async fn restart_keeps_data_and_port() {
    let Some(mut pg) = pglocal::for_tests("restart_keeps_data_and_port").await else {
        return;
    };
    if pg.dir().is_none() {
        let err = pg.restart().await.unwrap_err();
        assert!(format!("{err:#}").contains("restart is unavailable"), "{err:#}");
        return;
    }
    let url = pg.fresh_database("pglocal_restart").await.unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n")
        .execute(&mut conn)
        .await
        .unwrap();
    let before = pg.postmaster_pid().unwrap();

    let t0 = Instant::now();
    pg.restart().await.unwrap();
    eprintln!("restart in {:?}", t0.elapsed());

    let after = pg.postmaster_pid().unwrap();
    assert_ne!(before, after, "the postmaster was not restarted");
    assert!(!process_alive(before), "old postmaster {before} still running");
    assert!(
        sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
        "a session survived the restart"
    );
    // The URL taken before the restart still works: same port, same data.
    assert_eq!(scalar(&url, "SELECT sum(n)::bigint FROM t").await, 500_500);
    assert_eq!(
        pg.url(),
        url.replace("/pglocal_restart", "/wanbatch"),
        "the port changed"
    );
}

#[tokio::test]
async fn stop_ends_the_postmaster_and_removes_the_folder() {
    let Some(pg) = pglocal::for_tests("stop_ends_the_postmaster_and_removes_the_folder").await else {
        return;
    };
    let Some(dir) = pg.dir().map(Path::to_path_buf) else {
        return;
    };
    let pid = pg.postmaster_pid().unwrap();
    assert!(process_alive(pid) && dir.join("data").is_dir());
    let url = pg.url();

    let t0 = Instant::now();
    pg.stop().await.unwrap();
    eprintln!("stop in {:?}", t0.elapsed());

    // stop() itself waits: no grace period here.
    assert!(!process_alive(pid), "postmaster {pid} still running after stop");
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(PgConnection::connect(&url).await.is_err());
}

#[tokio::test]
async fn a_panicking_owner_still_stops_the_server() {
    let Some(pg) = pglocal::for_tests("a_panicking_owner_still_stops_the_server").await else {
        return;
    };
    let Some(dir) = pg.dir().map(Path::to_path_buf) else {
        return;
    };
    let pid = pg.postmaster_pid().unwrap();

    let task = tokio::spawn(async move {
        let _owned = pg;
        panic!("test failure while holding the server");
    });
    assert!(task.await.unwrap_err().is_panic());

    assert!(!process_alive(pid), "postmaster {pid} still running after the panic");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

/// Runs one test of this binary in a child process with `env`; returns (passed, its output).
fn run_child_test(test: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    cmd.env_remove(pglocal::URL_ENV)
        .env_remove(pglocal::REQUIRE_ENV)
        .envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The policy end to end, whatever is installed here: absent → skip (or fail when required),
/// present but broken → fail.
#[test]
fn missing_postgres_skips_unless_required_and_broken_postgres_fails() {
    let test = "starts_and_answers_queries_on_loopback";
    let absent = [(pglocal::BIN_ENV, "/nonexistent/pglocal-bin")];
    let (passed, out) = run_child_test(test, &absent);
    assert!(passed, "absent PostgreSQL should skip:\n{out}");
    assert!(
        out.contains(&format!("PostgreSQL not installed: skipping {test}")),
        "{out}"
    );

    let required = [absent[0], (pglocal::REQUIRE_ENV, "1")];
    let (passed, out) = run_child_test(test, &required);
    assert!(!passed, "WANBATCH_REQUIRE_PG=1 should fail:\n{out}");
    assert!(out.contains("PostgreSQL tests are mandatory here"), "{out}");

    // Binaries that exist but cannot run a server: a failure, never a skip.
    let broken = tempfile::tempdir().unwrap();
    for name in ["initdb", "pg_ctl", "postgres"] {
        std::fs::write(broken.path().join(name), "#!/bin/sh\necho broken >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(broken.path().join(name), Permissions::from_mode(0o755)).unwrap();
    }
    // Readable by the `postgres` user too, which runs them when the tests run as root.
    std::fs::set_permissions(broken.path(), Permissions::from_mode(0o755)).unwrap();
    let (passed, out) = run_child_test(test, &[(pglocal::BIN_ENV, broken.path().to_str().unwrap())]);
    assert!(!passed, "a broken PostgreSQL should fail:\n{out}");
    assert!(
        out.contains("the test server is not usable") && out.contains("initdb failed"),
        "{out}"
    );
}

/// The owning process is killed with SIGKILL (no Drop runs): the watchdog must clean up.
#[tokio::test]
async fn a_killed_owner_leaves_no_server_behind() {
    if pglocal::for_tests("a_killed_owner_leaves_no_server_behind")
        .await
        .is_none()
    {
        return;
    }
    if std::env::var(pglocal::URL_ENV).is_ok() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "owner_process_for_kill_test",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PGLOCAL_OWNER_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The harness prints "test NAME ... " before the test's own output, on the same line.
    let line = lines.find_map(|l| Some(l.ok()?.split_once("PGLOCAL ")?.1.to_owned()));
    let Some(line) = line else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the owner process did not report its server");
    };
    let (pid, dir) = line.split_once(' ').unwrap();
    let (pid, dir): (u32, PathBuf) = (pid.parse().unwrap(), dir.into());
    assert!(process_alive(pid), "the owner's server is not running");

    child.kill().unwrap();
    child.wait().unwrap();

    assert_gone(pid, &dir, "after SIGKILL of the owner");
}

/// Run only as the child of `a_killed_owner_leaves_no_server_behind`: starts a server, reports
/// it, and waits to be killed (bounded, so a lost parent cannot leave it running forever).
#[tokio::test]
#[ignore = "child process of a_killed_owner_leaves_no_server_behind"]
async fn owner_process_for_kill_test() {
    if std::env::var("PGLOCAL_OWNER_CHILD").is_err() {
        return;
    }
    let pg = PgServer::start().await.unwrap();
    println!(
        "PGLOCAL {} {}",
        pg.postmaster_pid().unwrap(),
        pg.dir().unwrap().display()
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    panic!("not killed within 60 s");
}
