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
                  Config: ./wanbatch.toml (or --config PATH) may set db, out, rpm, concurrency, price, max_cost, \
                  min_credits, on_unknown — never the API key. A flag beats its environment variable (WANBATCH_DB, \
                  WANBATCH_RPM, … shown as [env: …] in each command's --help), which beats the file, which beats \
                  the built-in default.\n\
                  Exit codes: 0 all done · 1 some failed · 2 usage/manifest error · 3 account problem (resumable) · \
                  4 local problem (resumable) · 130 interrupted (resumable)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format (on stderr, or in the --log-file).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Write the logs to this file (appended, no colours, owner-only) instead of stderr; the
    /// default level there is info (RUST_LOG still filters). Messages meant for you stay on the terminal.
    #[arg(long, global = true, env = "WANBATCH_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// The config file (default: ./wanbatch.toml if it exists).
    #[arg(long, global = true, env = "WANBATCH_CONFIG")]
    pub config: Option<PathBuf>,
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
    /// Withdraw jobs not yet submitted (the API has no cancel: submitted jobs finish and are billed).
    Cancel(cmd::cancel::CancelArgs),
    /// Show how many jobs are in each state.
    Status(cmd::status::StatusArgs),
    /// Write one row per job (CSV or JSONL).
    Export(cmd::export::ExportArgs),
    /// Write one self-contained HTML page: a summary, then a card per job with its video.
    Report(cmd::report::ReportArgs),
    /// Run the built-in fake Segmind (API + video host) until stopped, for rehearsals.
    FakeServer(crate::fake::cli::FakeServerArgs),
    /// Benchmark the request economy against an SDK-style poller (in-process fakes, time-compressed).
    Bench(cmd::bench::BenchArgs),
    /// Benchmark the engine's own speed (jobs/s against a zero-latency fake) and its memory
    /// against the queue's size.
    BenchEngine(crate::bench_engine::BenchEngineArgs),
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
    let cli = match crate::config::parse_args() {
        Ok(Ok(cli)) => cli,
        Ok(Err(msg)) => {
            eprintln!("wanbatch: {msg}");
            return ExitCode::from(Outcome::Usage as u8);
        }
        Err(e) => {
            let code = if e.use_stderr() { Outcome::Usage as u8 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Err(e) = init_tracing(cli.log_format, cli.log_file.as_deref()) {
        eprintln!("wanbatch: cannot open the log file: {e}");
        return ExitCode::from(Outcome::Local as u8);
    }
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
        Command::Cancel(args) => cmd::cancel::run(args).await,
        Command::Status(args) => cmd::status::run(args).await,
        Command::Export(args) => cmd::export::run(args).await,
        Command::Report(args) => cmd::report::run(args).await,
        Command::FakeServer(args) => {
            crate::fake::cli::run(args, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(Outcome::AllDone)
        }
        Command::Demo(args) => cmd::demo::run(args).await,
        Command::Bench(args) => cmd::bench::run(args).await,
        Command::BenchEngine(args) => crate::bench_engine::run(args).await,
        Command::BenchImport(args) => cmd::bench_import::run(args).await,
    }
}

fn init_tracing(format: LogFormat, log_file: Option<&std::path::Path>) -> std::io::Result<()> {
    use tracing_subscriber::EnvFilter;
    // A log file is read afterwards, so it gets the run's story (info); stderr only warnings.
    let default = if log_file.is_some() {
        "wanbatch=info"
    } else {
        "wanbatch=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only on a terminal: logs redirected to a file or a pipe stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match (format, log_file) {
        // On stderr, log lines go above the progress bar, not through it.
        (LogFormat::Text, None) => builder.with_writer(crate::progress::LogWriter).try_init(),
        (LogFormat::Json, None) => builder.with_writer(crate::progress::LogWriter).json().try_init(),
        (format, Some(path)) => {
            let mut open = std::fs::OpenOptions::new();
            open.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600); // it holds prompts and request ids
            let file = std::sync::Mutex::new(open.open(path)?);
            let builder = builder.with_ansi(false).with_writer(file);
            match format {
                LogFormat::Text => builder.try_init(),
                LogFormat::Json => builder.json().try_init(),
            }
        }
    };
    Ok(())
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
