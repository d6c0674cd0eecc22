//! `wanbatch bench-s3`: videos streamed to object storage — throughput, and peak RSS against the
//! video's size.
//!
//! The real binary runs N jobs end to end against the in-process fake (zero durations, no rate
//! limit) with `--out s3://bench/videos` on a private moto server (`motolocal`, on loopback), so
//! what is measured is the streaming path: the fake's video host → checks → multipart upload.
//! Each configuration runs once to a bucket and, for reference, once to a local folder. The
//! memory claim is that peak RSS is flat in the video's size: an upload buffers one part
//! (`output::stream::PART_BYTES`, 5 MiB) at a time, so RSS is bounded by parts × downloads in
//! flight, not by the video. Every run is checked: every video in the bucket at its full size,
//! no upload left incomplete.

use std::time::{Duration, Instant};

use super::engine::{run_dir, Usage};
use crate::exit::Outcome;
use crate::motolocal::MotoServer;

#[derive(clap::Args, Debug)]
pub struct BenchS3Args {
    /// Videos in the main run.
    #[arg(long, default_value_t = 1000)]
    pub videos: usize,
    /// Size of each video in the main run, in MiB.
    #[arg(long, default_value_t = 2)]
    pub mb: usize,
    /// The comparison runs ("VIDEOSxMiB", comma-separated): bigger videos, same RSS expected.
    #[arg(long, value_delimiter = ',', default_value = "100x32,10x128")]
    pub compare: Vec<String>,
    /// Parallel downloads (uploads), as `run`.
    #[arg(long, default_value_t = 4)]
    pub download_concurrency: u32,
    /// Skip the reference runs to a local folder.
    #[arg(long)]
    pub no_folder: bool,
    /// Where the runs' databases (and the folder runs' videos) go (default: the system's
    /// temporary folder).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

const BUCKET: &str = "bench";

struct Figures {
    secs: f64,
    rss_mb: u64,
    cpu: Duration,
}

/// One run of `videos` videos of `mib` MiB, to the bucket (`moto`) or to a folder.
async fn one(
    args: &BenchS3Args,
    videos: usize,
    mib: usize,
    moto: Option<&MotoServer>,
    prefix: &str,
) -> anyhow::Result<Figures> {
    let dir = run_dir(args.dir.as_deref())?;
    let (fake, mut cmd) = super::engine::flat_out_run(dir.path(), videos, mib * 1024 * 1024).await?;
    cmd.arg("--download-concurrency")
        .arg(args.download_concurrency.to_string())
        .arg("--max-video-bytes")
        .arg(((mib as u64 + 1) << 20).to_string());
    match moto {
        Some(m) => {
            cmd.arg("--out").arg(format!("s3://{BUCKET}/{prefix}"));
            for (k, v) in m.env() {
                cmd.env(k, v);
            }
        }
        None => {
            cmd.arg("--out").arg(dir.path().join("out"));
        }
    }
    let started = Instant::now();
    let child = cmd.spawn()?;
    let usage = tokio::task::spawn_blocking(move || wait_peak(&child)).await??;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(usage.code == 0, "run of {videos} videos exited {}", usage.code);
    let served = fake.stats().submits.len();
    fake.shutdown().await;
    anyhow::ensure!(served == videos, "{served} submits for {videos} videos");
    if let Some(m) = moto {
        let objects = m.objects(BUCKET).await?;
        let mp4: Vec<_> = objects
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{prefix}/")) && k.ends_with(".mp4"))
            .collect();
        anyhow::ensure!(
            mp4.len() == videos,
            "{} videos in the bucket, {videos} expected",
            mp4.len()
        );
        let short = mp4.iter().filter(|(_, n)| *n < (mib as u64) << 20).count();
        anyhow::ensure!(short == 0, "{short} videos in the bucket are short");
        let open = m.incomplete_uploads(BUCKET).await?;
        anyhow::ensure!(open.is_empty(), "{} uploads left incomplete", open.len());
    }
    Ok(Figures {
        secs,
        rss_mb: usage.rss_mb,
        cpu: usage.cpu,
    })
}

/// Waits for `child` and returns its exit code, CPU time and peak RSS — the peak read from its
/// own `VmHWM` (polled every 10 ms), not from `wait4`: Linux carries the parent's high-water
/// mark into a forked child's `ru_maxrss` across `exec`, and this process holds the fake's
/// rendered videos (hundreds of MB for big ones), which would swamp the child's figure.
fn wait_peak(child: &std::process::Child) -> anyhow::Result<Usage> {
    let pid = child.id() as libc::pid_t;
    let status_file = format!("/proc/{pid}/status");
    let mut peak_kb = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak_kb = peak_kb.max(hwm.unwrap_or(0));
        }
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it for our own child, which nobody else reaps.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        anyhow::ensure!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            };
            let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
            return Ok(Usage {
                code,
                rss_mb: peak_kb / 1024,
                cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn row(to: &str, videos: usize, mib: usize, f: &Figures) {
    let mb = (videos * mib) as f64 * 1.048_576;
    println!(
        "{:<8} {:>7} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>7} MB {:>9.2} ms/video",
        to,
        videos,
        mib,
        f.secs,
        videos as f64 / f.secs,
        mb / f.secs,
        f.rss_mb,
        f.cpu.as_secs_f64() * 1000.0 / videos as f64
    );
}

fn parse_compare(s: &str) -> anyhow::Result<(usize, usize)> {
    let (v, m) = s
        .split_once('x')
        .ok_or_else(|| anyhow::anyhow!("--compare {s}: expected VIDEOSxMiB, e.g. 100x32"))?;
    Ok((v.trim().parse()?, m.trim().parse()?))
}

pub async fn run(args: BenchS3Args) -> anyhow::Result<Outcome> {
    let mut configs = vec![(args.videos, args.mb)];
    for c in &args.compare {
        configs.push(parse_compare(c)?);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "object-storage benchmark: {cores} cores; the fake (API and video host) runs in this process, wanbatch \
         in a child, moto (S3) in another, all on loopback; {} downloads in flight; part size {} MiB",
        args.download_concurrency,
        crate::output::stream::PART_BYTES >> 20
    );
    println!(
        "{:<8} {:>7} {:>8} {:>9} {:>9} {:>9} {:>10} {:>17}",
        "to", "videos", "MiB each", "seconds", "videos/s", "MB/s", "peak RSS", "wanbatch CPU"
    );
    for (i, &(videos, mib)) in configs.iter().enumerate() {
        // A fresh server per configuration: moto keeps objects in memory.
        let moto = MotoServer::start().await?;
        moto.create_bucket(BUCKET).await?;
        let f = one(&args, videos, mib, Some(&moto), &format!("run{i}")).await?;
        row("s3", videos, mib, &f);
        drop(moto);
        if !args.no_folder {
            let f = one(&args, videos, mib, None, "").await?;
            row("folder", videos, mib, &f);
        }
    }
    println!();
    println!("peak RSS is the wanbatch child's own (VmHWM); MB/s counts video bytes (10^6) over the whole run,");
    println!("submits, polls and database commits included; every bucket run was checked: every video");
    println!("whole, no upload left incomplete");
    Ok(Outcome::AllDone)
}
