//! `wanbatch bench-engine`: the engine's own overhead, and its memory against the queue's size.
//!
//! - **Jobs per second**: the real binary runs N jobs end to end (submit, poll, result, download
//!   of a 1 KiB video) against an in-process fake with zero durations and no rate limit, so the
//!   engine, its database writes and the process boundary are all that is measured.
//! - **RSS against queue size**: the binary works a queue of N waiting jobs at a modest rate for a
//!   few seconds, then is interrupted; its peak RSS (from `wait4`) must not grow with N.
//!
//! Both run `wanbatch` as a child process (this executable), so figures are the product's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::exit::Outcome;
use crate::fake::{FakeConfig, FakeServer};

#[derive(clap::Args, Debug)]
pub struct BenchEngineArgs {
    /// Job counts for the jobs-per-second runs.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub jobs: Vec<usize>,
    /// Queue sizes for the memory runs.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    pub queues: Vec<usize>,
    /// Seconds each memory run works its queue before it is interrupted.
    #[arg(long, default_value_t = 8.0)]
    pub memory_secs: f64,
    /// Jobs in flight for the speed runs (default: the engine's automatic cap).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Parallel downloads for the speed runs (as `run`).
    #[arg(long, default_value_t = 4)]
    pub download_concurrency: u32,
    /// Where the runs' databases and videos go (default: the system's temporary folder). The
    /// filesystem matters: every job creates two files and commits durably.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub(super) const KEY: &str = "bench-engine-key";

/// What a finished child used.
pub(super) struct Usage {
    pub(super) code: i32,
    pub(super) rss_mb: u64,
    /// User and system CPU time.
    pub(super) cpu: Duration,
}

/// Peak RSS, CPU time and exit code of a finished child.
pub(super) fn wait_rusage(child: &std::process::Child) -> anyhow::Result<Usage> {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child, which nobody else reaps.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    anyhow::ensure!(r == pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    Ok(Usage {
        code,
        rss_mb: ru.ru_maxrss as u64 / 1024,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
    })
}

/// The filesystem type of `dir`, by name where known.
fn filesystem(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return "?".into();
    };
    // SAFETY: statfs fills plain data for a valid NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "?".into();
    }
    #[allow(clippy::unnecessary_cast)]
    match st.f_type as i64 {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        t => format!("type {t:#x}"),
    }
}

/// A new folder for one run under `base` (kept until the benchmark ends: removing thousands
/// of files between runs would slow the next run's file creation on some filesystems).
pub(super) fn run_dir(base: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    let b = tempfile::Builder::new().prefix("wanbatch-bench-").to_owned();
    Ok(match base {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            b.tempdir_in(d)?
        }
        None => b.tempdir()?,
    })
}

fn write_manifest(path: &Path, n: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "id,image,prompt,seed")?;
    for i in 0..n {
        writeln!(
            w,
            "j{i:07},https://img.example/{i}.jpg,a quiet harbour at dawn with gulls and small boats scene {i},{i}"
        )?;
    }
    w.flush()?;
    Ok(())
}

pub(super) fn wanbatch(fake: &FakeServer) -> anyhow::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env("SEGMIND_API_KEY", KEY)
        .env("SEGMIND_BASE_URL", fake.api_url())
        .env("RUST_LOG", "wanbatch=error")
        .stdout(std::process::Stdio::null());
    Ok(cmd)
}

/// Imports `n` generated rows into `db`.
pub(super) fn import(fake: &FakeServer, dir: &Path, db: &Path, n: usize) -> anyhow::Result<Duration> {
    let manifest = dir.join(format!("jobs-{n}.csv"));
    write_manifest(&manifest, n)?;
    let started = Instant::now();
    let status = wanbatch(fake)?
        .arg("import")
        .arg(&manifest)
        .arg("--db")
        .arg(db)
        .status()?;
    anyhow::ensure!(status.success(), "import of {n} rows failed: {status}");
    std::fs::remove_file(&manifest)?;
    Ok(started.elapsed())
}

struct Speed {
    jobs: usize,
    secs: f64,
    rss_mb: u64,
    cpu: Duration,
    requests: usize,
}

/// A zero-latency fake serving `video_len`-byte videos, `n` jobs imported into `dir/bench.db`,
/// and a `wanbatch run` of them at full speed (no rate limit, no wait between polls); the caller
/// says where the videos go.
pub(super) async fn flat_out_run(dir: &Path, n: usize, video_len: usize) -> anyhow::Result<(FakeServer, Command)> {
    let fake = FakeServer::start(FakeConfig {
        api_key: KEY.into(),
        queue: Duration::ZERO,
        run: Duration::ZERO,
        video_len,
        credits: None,
        ..FakeConfig::default()
    })
    .await?;
    let db = dir.join("bench.db");
    import(&fake, dir, &db, n)?;
    let mut cmd = wanbatch(&fake)?;
    cmd.args([
        "run",
        "--quiet",
        "--rpm",
        "1000000",
        "--expected-duration",
        "0.005s",
        "--min-poll-gap-ms",
        "0",
    ])
    .arg("--db")
    .arg(&db);
    Ok((fake, cmd))
}

async fn speed(dir: &tempfile::TempDir, n: usize, concurrency: Option<u32>, downloads: u32) -> anyhow::Result<Speed> {
    let (fake, mut cmd) = flat_out_run(dir.path(), n, 1024).await?;
    cmd.arg("--out").arg(dir.path().join("out"));
    cmd.arg("--download-concurrency").arg(downloads.to_string());
    if let Some(c) = concurrency {
        cmd.arg("--concurrency").arg(c.to_string());
    }
    let started = Instant::now();
    let child = cmd.spawn()?;
    let usage = tokio::task::spawn_blocking(move || wait_rusage(&child)).await??;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(usage.code == 0, "run of {n} jobs exited {}", usage.code);
    let requests = fake.stats().api_requests.len();
    fake.shutdown().await;
    Ok(Speed {
        jobs: n,
        secs,
        rss_mb: usage.rss_mb,
        cpu: usage.cpu,
        requests,
    })
}

struct Memory {
    queue: usize,
    rss_mb: u64,
    import_secs: f64,
    worked: usize,
}

async fn memory(dir: &tempfile::TempDir, n: usize, secs: f64) -> anyhow::Result<Memory> {
    let fake = FakeServer::start(FakeConfig {
        api_key: KEY.into(),
        queue: Duration::from_millis(200),
        run: Duration::from_millis(800),
        video_len: 1024,
        credits: None,
        ..FakeConfig::default()
    })
    .await?;
    let db: PathBuf = dir.path().join("bench.db");
    let import_secs = import(&fake, dir.path(), &db, n)?.as_secs_f64();
    let mut cmd = wanbatch(&fake)?;
    cmd.args(["run", "--quiet", "--rpm", "600", "--expected-duration", "1s"])
        .arg("--db")
        .arg(&db)
        .arg("--out")
        .arg(dir.path().join("out"))
        .stderr(std::process::Stdio::null());
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let usage = tokio::task::spawn_blocking(move || wait_rusage(&child)).await??;
    anyhow::ensure!(usage.code == 130, "interrupted run exited {}", usage.code);
    let rss_mb = usage.rss_mb;
    let worked = fake.stats().submits.len();
    fake.shutdown().await;
    Ok(Memory {
        queue: n,
        rss_mb,
        import_secs,
        worked,
    })
}

pub async fn run(args: BenchEngineArgs) -> anyhow::Result<Outcome> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("engine benchmark: {cores} cores; the fake runs in this process, wanbatch in a child");
    let mut dirs = Vec::new();
    let probe = run_dir(args.dir.as_deref())?;
    let base = probe.path().parent().unwrap_or(probe.path()).to_path_buf();
    println!(
        "files and databases under {} ({})",
        base.display(),
        filesystem(probe.path())
    );
    dirs.push(probe);
    println!();
    println!("jobs end to end (submit, poll, result, 1 KiB download), zero-latency fake, no rate limit");
    println!(
        "{:>8} {:>9} {:>9} {:>14} {:>9} {:>14}",
        "jobs", "seconds", "jobs/s", "requests/job", "peak RSS", "wanbatch CPU"
    );
    for &n in &args.jobs {
        dirs.push(run_dir(args.dir.as_deref())?);
        let dir = dirs.last().expect("just pushed");
        let s = speed(dir, n, args.concurrency, args.download_concurrency).await?;
        println!(
            "{:>8} {:>9.2} {:>9.0} {:>14.2} {:>6} MB {:>7.2} ms/job",
            s.jobs,
            s.secs,
            s.jobs as f64 / s.secs,
            s.requests as f64 / s.jobs as f64,
            s.rss_mb,
            s.cpu.as_secs_f64() * 1000.0 / s.jobs as f64
        );
    }
    println!();
    println!(
        "peak RSS of `run` working a queue at 600 rpm for {:.0} s, then interrupted",
        args.memory_secs
    );
    println!(
        "{:>9} {:>10} {:>12} {:>9}",
        "queue", "peak RSS", "submitted", "import s"
    );
    for &n in &args.queues {
        dirs.push(run_dir(args.dir.as_deref())?);
        let m = memory(dirs.last().expect("just pushed"), n, args.memory_secs).await?;
        println!(
            "{:>9} {:>7} MB {:>12} {:>9.1}",
            m.queue, m.rss_mb, m.worked, m.import_secs
        );
    }
    // The run folders go, and the removal is made durable at once: ext4 without a journal does
    // not reuse an inode freed in the last minute (six while its inode table block is unwritten),
    // and skipping thousands of them slows file creation, so a benchmark run again soon after
    // measures that instead of the engine.
    drop(dirs);
    if cfg!(target_os = "linux") {
        let _ = crate::engine::durable::syncfs(&base);
    }
    println!();
    println!("(run folders removed; on some filesystems creating files is slower for a minute after");
    println!(" many were removed: wait a minute before running this again)");
    Ok(Outcome::AllDone)
}
