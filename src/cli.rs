//! Command-line arguments, logging set-up, and the one place errors become exit codes.
//!
//! Exit codes: 0 every job done; 1 some jobs failed, every other one done; 2 usage or manifest
//! error (nothing submitted); 3 stopped by an account problem (bad key, no credits), unfinished
//! jobs resumable; 4 stopped by a local problem (disk full, unwritable output, database locked
//! by another run, jobs held for a decision), resumable; 130 interrupted, resumable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd;

#[derive(Parser, Debug)]
#[command(
    name = "wanbatch",
    version,
    args_override_self = true,
    about = "Batch runner for Segmind's Wan 2.2 image-to-video API: manifest in, verified MP4s out, nothing lost or paid twice.",
    after_help = "Environment: SEGMIND_API_KEY (required by `run`; never taken on the command line), \
                  SEGMIND_BASE_URL (default https://api.segmind.com), RUST_LOG (log filter, e.g. wanbatch=debug).\n\
                  Exit codes: 0 all done · 1 some failed · 2 usage/manifest error · 3 account problem (resumable) · \
                  4 local problem (resumable) · 130 interrupted (resumable)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Import manifests (if given) and work every unfinished job until each is done or failed.
    Run(cmd::run::RunArgs),
    /// Validate manifests and load them into the database without submitting anything.
    Import(cmd::import::ImportArgs),
    /// Put chosen jobs back to be submitted again (a new, counted attempt).
    Retry(cmd::retry::RetryArgs),
    /// Show how many jobs are in each state.
    Status(cmd::status::StatusArgs),
    /// Write one row per job (CSV or JSONL).
    Export(cmd::export::ExportArgs),
    /// Run the built-in fake Segmind (API + video host) until stopped, for rehearsals.
    FakeServer(crate::fake::cli::FakeServerArgs),
    /// Benchmark the request economy against an SDK-style poller (in-process fakes, time-compressed).
    Bench(cmd::bench::BenchArgs),
    /// Benchmark import, status and export on large generated manifests (10k to 1M rows).
    BenchImport(cmd::bench_import::BenchImportArgs),
    /// Run jobs.example.csv against an in-process fake Segmind: no key, no network, a few seconds.
    Demo(cmd::demo::DemoArgs),
}

/// A failure that decides the exit code. Everything else is an internal error (exit 4).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Usage(String),
    /// Manifest errors were already printed, one per line.
    #[error("{0}")]
    Manifest(String),
}

/// The run's ending, as an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    AllDone = 0,
    SomeFailed = 1,
    Usage = 2,
    Account = 3,
    Local = 4,
    Interrupted = 130,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { Outcome::Usage as u8 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.log_format);
    ignore_file_size_signal();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wanbatch: cannot start: {e}");
            return ExitCode::from(Outcome::Local as u8);
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    // Do not wait for stray blocking tasks (e.g. a stdin read) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(outcome) => ExitCode::from(outcome as u8),
        Err(e) => {
            let code = match e.downcast_ref::<Failure>() {
                Some(Failure::Usage(_)) | Some(Failure::Manifest(_)) => Outcome::Usage,
                None => Outcome::Local,
            };
            eprintln!("wanbatch: {e:#}");
            ExitCode::from(code as u8)
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Run(args) => cmd::run::run(args).await,
        Command::Import(args) => cmd::import::run(args).await,
        Command::Retry(args) => cmd::retry::run(args).await,
        Command::Status(args) => cmd::status::run(args).await,
        Command::Export(args) => cmd::export::run(args).await,
        Command::FakeServer(args) => {
            crate::fake::cli::run(args, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(Outcome::AllDone)
        }
        Command::Demo(args) => cmd::demo::run(args).await,
        Command::Bench(args) => cmd::bench::run(args).await,
        Command::BenchImport(args) => cmd::bench_import::run(args).await,
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("wanbatch=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A file-size limit (`ulimit -f`) must surface as an ordinary write error (EFBIG) that the
/// downloader reports and survives, not as SIGXFSZ killing the process mid-write.
fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Default database path.
pub fn default_db() -> PathBuf {
    PathBuf::from("wanbatch.db")
}
