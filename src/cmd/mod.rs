//! The command line: the `Command` enum beside the commands it dispatches to (one module per
//! subcommand, each with an `Args` struct and a `run` returning its outcome), and `main`, which
//! parses, sets up logging, runs the command and hands its end to `exit`.

pub mod cancel;
pub mod demo;
pub mod estimate;
pub mod export;
pub mod flags;
pub mod import;
pub mod init;
pub mod reconcile;
pub mod report;
pub mod retry;
pub mod review;
pub mod run;
pub mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::exit::{self, Failure, Outcome};
use crate::logging::{self, LogFormat};
use crate::settings::{self, Resolved};

#[derive(Parser, Debug)]
#[command(
    name = "wanbatch",
    version,
    args_override_self = true,
    about = "Batch runner for Segmind's Wan 2.2 image-to-video API: manifest in, verified MP4s out, nothing lost or paid twice.",
    after_help = "Environment: SEGMIND_API_KEY (required by `run`; never taken on the command line), \
                  SEGMIND_BASE_URL (default https://api.segmind.com), SEGMIND_HISTORY_URL and SEGMIND_UPLOAD_URL \
                  (the request history and the storage upload; defaults follow SEGMIND_BASE_URL), RUST_LOG (log filter, e.g. wanbatch=debug).\n\
                  Settings: a flag beats its environment variable (WANBATCH_RPM, … shown as [env: …] in each \
                  command's --help), which beats ./wanbatch.toml (or --config PATH; any setting by its name, e.g. \
                  rpm = 5 — never the API key), which beats what the campaign was last run with (stored in its \
                  database), which beats the built-in default.\n\
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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a manifest from a folder of images: one row per image, its prompt from IMAGE.txt beside it or --prompt.
    Init(init::InitArgs),
    /// Import manifests (if given) and work every unfinished job until each is done or failed.
    Run(run::RunArgs),
    /// Validate manifests and load them into the database without submitting anything.
    Import(import::ImportArgs),
    /// Put chosen jobs back to be submitted again (a new, counted attempt).
    Retry(retry::RetryArgs),
    /// Withdraw jobs not yet submitted (the API has no cancel: submitted jobs finish and are billed).
    Cancel(cancel::CancelArgs),
    /// Show how many jobs are in each state.
    Status(status::StatusArgs),
    /// Write one row per job (CSV or JSONL).
    Export(export::ExportArgs),
    /// Write one self-contained HTML page: a summary, then a card per job with its video.
    Report(report::ReportArgs),
    /// Reviewers' decisions: `review apply FILE` records the keep / reject CSV the report downloads.
    Review(review::ReviewArgs),
    /// Walk Segmind's request history over the campaign and record every request billed for
    /// each job: the true cost and the exact double charges.
    Reconcile(reconcile::ReconcileArgs),
    /// Run jobs.example.csv against an in-process fake Segmind: no key, no network, a few seconds.
    Demo(demo::DemoArgs),
    /// Run the built-in fake Segmind (API + video host) until stopped, for rehearsals.
    FakeServer(crate::fake::cli::FakeServerArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Benchmark the request economy against an SDK-style poller (docs/benchmarks.md).
    #[command(hide = true)]
    Bench(crate::bench::economy::BenchArgs),
    /// Benchmark the engine's own speed and its memory against the queue's size (docs/benchmarks.md).
    #[command(hide = true)]
    BenchEngine(crate::bench::engine::BenchEngineArgs),
    /// Benchmark import, status and export on large generated manifests (docs/benchmarks.md).
    #[command(hide = true)]
    BenchImport(crate::bench::import::BenchImportArgs),
    /// Benchmark the review page of a big campaign in headless Chromium (docs/benchmarks.md).
    #[command(hide = true)]
    BenchReport(crate::bench::report::BenchReportArgs),
    /// Benchmark several runners on one PostgreSQL campaign: one key or three (docs/benchmarks.md).
    #[command(hide = true)]
    BenchRunners(crate::bench::runners::BenchRunnersArgs),
    /// Benchmark videos streamed to a local S3 server (moto): throughput and peak RSS (docs/benchmarks.md).
    #[command(hide = true)]
    BenchS3(crate::bench::s3::BenchS3Args),
}

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell. E.g. `wanbatch completions bash > ~/.local/share/bash-completion/completions/wanbatch`,
    /// `wanbatch completions zsh > ~/.zfunc/_wanbatch`, `wanbatch completions fish > ~/.config/fish/completions/wanbatch.fish`.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The binary's entry point: parse, resolve the settings, set up, run, and turn the end into an
/// exit code. Nothing is changed before the command line, the environment and the config file
/// have all been checked.
pub fn main() -> ExitCode {
    let (cli, resolved) = match parse(std::env::args_os(), Path::new(".")) {
        Ok(parsed) => parsed,
        Err(Parsed::Clap(e)) => return exit::parse_failed(e),
        Err(Parsed::Usage(msg)) if msg.starts_with(crate::settings::UNREACHABLE_DB) => {
            return exit::finish(Err(anyhow::anyhow!(msg)))
        }
        Err(Parsed::Usage(msg)) => return exit::finish(Err(Failure::Usage(msg).into())),
    };
    if let Err(e) = logging::init(cli.log_format, cli.log_file.as_deref()) {
        return exit::finish(Err(anyhow::Error::new(e).context("cannot open the log file")));
    }
    ignore_file_size_signal();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return exit::finish(Err(anyhow::Error::new(e).context("cannot start"))),
    };
    let result = runtime.block_on(dispatch(cli.command, resolved));
    // Do not wait for stray blocking tasks (e.g. a stdin read) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    exit::finish(result)
}

/// Why the command line could not be used.
#[derive(Debug)]
pub enum Parsed {
    /// clap's own answer (a usage error, or `--help` / `--version`).
    Clap(clap::Error),
    /// A setting's value that cannot be used (named by where it came from).
    Usage(String),
}

/// Parses the command line and resolves the settings of the commands that take them (config
/// file relative to `cwd`).
pub fn parse<I, T>(args: I, cwd: &Path) -> Result<(Cli, Resolved), Parsed>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args).map_err(Parsed::Clap)?;
    let cli = Cli::from_arg_matches(&matches).map_err(Parsed::Clap)?;
    let takes_settings = !matches!(
        cli.command,
        Command::FakeServer(_)
            | Command::Init(_)
            | Command::Demo(_)
            | Command::Completions(_)
            | Command::Bench(_)
            | Command::BenchEngine(_)
            | Command::BenchImport(_)
            | Command::BenchReport(_)
            | Command::BenchRunners(_)
            | Command::BenchS3(_)
    );
    // A command's flags are on its innermost subcommand (`review apply --db …`).
    let mut innermost = matches.subcommand();
    while let Some((_, sub)) = innermost.and_then(|(_, m)| m.subcommand()) {
        innermost = Some(("", sub));
    }
    let resolved = match innermost {
        Some((_, sub)) if takes_settings => {
            let (layer, origins) = settings::from_matches(sub).map_err(Parsed::Usage)?;
            Resolved::resolve(layer, origins, cli.config.as_deref(), cwd).map_err(Parsed::Usage)?
        }
        _ => Resolved::default(),
    };
    Ok((cli, resolved))
}

async fn dispatch(command: Command, resolved: Resolved) -> anyhow::Result<Outcome> {
    match command {
        Command::Init(args) => init::run(args),
        Command::Run(args) => run::run(args, resolved).await,
        Command::Import(args) => import::run(args, resolved).await,
        Command::Retry(args) => retry::run(args, resolved).await,
        Command::Cancel(args) => cancel::run(args, resolved).await,
        Command::Status(args) => status::run(args, resolved).await,
        Command::Export(args) => export::run(args, resolved).await,
        Command::Report(args) => report::run(args, resolved).await,
        Command::Review(args) => review::run(args, resolved).await,
        Command::Reconcile(args) => reconcile::run(args, resolved).await,
        Command::FakeServer(args) => {
            crate::fake::cli::run(args, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(Outcome::AllDone)
        }
        Command::Demo(args) => demo::run(args).await,
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "wanbatch", &mut std::io::stdout());
            Ok(Outcome::AllDone)
        }
        Command::Bench(args) => crate::bench::economy::run(args).await,
        Command::BenchEngine(args) => crate::bench::engine::run(args).await,
        Command::BenchImport(args) => crate::bench::import::run(args).await,
        Command::BenchRunners(args) => crate::bench::runners::run(args).await,
        Command::BenchReport(args) => crate::bench::report::run(args).await,
        Command::BenchS3(args) => crate::bench::s3::run(args).await,
    }
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
