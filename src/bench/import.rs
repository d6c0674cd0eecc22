//! `wanbatch bench-import`: how fast, and in how much memory, the real binary imports, reports
//! and exports large manifests. Prints a table; it is a benchmark, not a test.
//!
//! For each size and format it writes a manifest of realistic rows (image URL, ~80-character
//! prompt, a few parameters) into a scratch directory, then runs `wanbatch import` as a child
//! process twice (first import, then re-import of the same file, which must add nothing),
//! measuring wall time and the child's peak RSS (`wait4`'s `ru_maxrss`). On the largest CSV
//! database it then marks 60% of the jobs done (untimed) and times `status`, `status --json`
//! and both exports.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;

use crate::exit::Outcome;
use crate::store::Store;

#[derive(clap::Args, Debug)]
pub struct BenchImportArgs {
    /// Manifest sizes, in rows.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub sizes: Vec<u64>,
    /// Manifest formats to try.
    #[arg(long, value_delimiter = ',', default_value = "csv,jsonl")]
    pub formats: Vec<String>,
    /// Scratch directory (default: a new one under the current directory, removed at the end;
    /// the 1M-row databases take about a gigabyte).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One measured child process.
struct Measure {
    secs: f64,
    peak_rss_mb: f64,
}

pub async fn run(args: BenchImportArgs) -> anyhow::Result<Outcome> {
    let owned;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            owned = tempfile::Builder::new()
                .prefix("wanbatch-bench-import-")
                .tempdir_in(".")?;
            owned.path().to_path_buf()
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("wanbatch bench-import: {cores} cores; scratch in {}", dir.display());
    println!(
        "{:>9}  {:<6} {:<10} {:>8} {:>11} {:>13}",
        "rows", "format", "pass", "seconds", "rows/s", "peak RSS MB"
    );
    let largest = args.sizes.iter().copied().max().unwrap_or(0);
    for &n in &args.sizes {
        for format in &args.formats {
            let manifest = dir.join(format!("m{n}.{format}"));
            write_manifest(&manifest, n, format)?;
            let db = dir.join(format!("b{n}-{format}.db"));
            for pass in ["first", "re-import"] {
                let m = measure(&["import", path_str(&manifest)?, "--db", path_str(&db)?], &dir)?;
                println!(
                    "{n:>9}  {format:<6} {pass:<10} {:>8.2} {:>11.0} {:>13.1}",
                    m.secs,
                    n as f64 / m.secs,
                    m.peak_rss_mb
                );
            }
            std::fs::remove_file(&manifest)?;
            if n == largest && format == &args.formats[0] {
                status_and_export(&db, n, &dir).await?;
            }
            remove_db(&db);
        }
    }
    Ok(Outcome::AllDone)
}

/// Times `status` and the exports on a database of `n` jobs, 60% of them marked done first.
async fn status_and_export(db: &Path, n: u64, dir: &Path) -> anyhow::Result<()> {
    let store = Store::open(db).await?;
    store.bench_mark_done(6, 10).await?;
    store.close().await;
    println!("\non the {n}-job database (60% marked done):");
    println!("{:<28} {:>8} {:>13}", "command", "seconds", "peak RSS MB");
    let db = path_str(db)?;
    let csv = dir.join("export.csv");
    let jsonl = dir.join("export.jsonl");
    let runs: [(&str, Vec<&str>); 4] = [
        ("status", vec!["status", "--db", db]),
        ("status --json", vec!["status", "--json", "--db", db]),
        (
            "export --format csv",
            vec!["export", "--db", db, "--output", path_str(&csv)?],
        ),
        (
            "export --format jsonl",
            vec!["export", "--format", "jsonl", "--db", db, "--output", path_str(&jsonl)?],
        ),
    ];
    for (name, argv) in runs {
        let m = measure(&argv, dir)?;
        println!("{name:<28} {:>8.2} {:>13.1}", m.secs, m.peak_rss_mb);
    }
    let _ = std::fs::remove_file(csv);
    let _ = std::fs::remove_file(jsonl);
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("the scratch path must be UTF-8")
}

fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// Runs this binary with `argv`, waiting with `wait4` to learn its peak resident set.
fn measure(argv: &[&str], dir: &Path) -> anyhow::Result<Measure> {
    let exe = std::env::current_exe()?;
    let log = dir.join("child.log");
    let started = Instant::now();
    let child = Command::new(exe)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(dir.join("child.err"))?)
        .spawn()?;
    let (code, maxrss_kb) = wait4(child.id() as libc::pid_t)?;
    let secs = started.elapsed().as_secs_f64();
    if code != 0 {
        let err = std::fs::read_to_string(dir.join("child.err")).unwrap_or_default();
        anyhow::bail!("`wanbatch {}` exited with {code}: {err}", argv.join(" "));
    }
    Ok(Measure {
        secs,
        peak_rss_mb: maxrss_kb as f64 / 1024.0,
    })
}

/// Reaps the child: (exit code, peak RSS in KiB as Linux reports it).
fn wait4(pid: libc::pid_t) -> anyhow::Result<(i32, i64)> {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; pid is our own child, not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    anyhow::ensure!(got == pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((code, usage.ru_maxrss))
}

const SUBJECTS: &[&str] = &[
    "a red fox",
    "an old lighthouse keeper",
    "a paper boat",
    "two dancers",
    "a city tram",
    "a hummingbird",
    "a snow-covered cabin",
    "a street musician",
];
const ACTIONS: &[&str] = &[
    "slowly turns toward the camera",
    "drifts through soft morning fog",
    "moves across a rain-soaked street",
    "spins under warm golden light",
    "glides past flickering neon signs",
];
const STYLES: &[&str] = &[
    "cinematic, shallow depth of field",
    "handheld documentary look",
    "dreamy pastel palette",
    "high contrast film grain",
];

/// Writes `n` realistic rows: automatic ids, an image URL, an ~80-character prompt, a few params.
fn write_manifest(path: &Path, n: u64, format: &str) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let csv = match format {
        "csv" => true,
        "jsonl" => false,
        other => anyhow::bail!("unknown format {other:?}: expected csv or jsonl"),
    };
    if csv {
        writeln!(out, "image,prompt,num_frames,resolution,seed,go_fast")?;
    }
    for i in 0..n {
        let image = format!("https://images.example.com/batch/{:02}/{i:08}.jpg", i % 97);
        let prompt = format!(
            "{} {}, {}, shot {i}",
            SUBJECTS[(i % 8) as usize],
            ACTIONS[(i / 8 % 5) as usize],
            STYLES[(i / 40 % 4) as usize]
        );
        let frames = 81 + i % 20;
        let resolution = if i % 3 == 0 { "720p" } else { "480p" };
        let go_fast = i % 2 == 0;
        if csv {
            writeln!(out, "{image},\"{prompt}\",{frames},{resolution},{i},{go_fast}")?;
        } else {
            writeln!(
                out,
                "{{\"image\":\"{image}\",\"prompt\":\"{prompt}\",\"num_frames\":{frames},\"resolution\":\"{resolution}\",\"seed\":{i},\"go_fast\":{go_fast}}}"
            )?;
        }
    }
    out.flush()?;
    Ok(())
}
