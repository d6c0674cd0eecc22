//! The one place where the end of a command becomes an exit code (and a one-line message).
//!
//! Exit codes: 0 every job done; 1 some jobs failed, every other one done; 2 usage or manifest
//! error (nothing submitted, nothing changed); 3 stopped by an account problem (bad key, no
//! credits, a spend limit), unfinished jobs resumable; 4 stopped by a local problem (disk full,
//! unwritable output, database locked by another run, API unreachable, jobs held for a
//! decision), resumable; 130 interrupted, resumable.
//!
//! A leaf: it depends on nothing else in the crate, so every layer can name an outcome.

use std::process::ExitCode;

/// How a command ended, as an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    AllDone = 0,
    SomeFailed = 1,
    Usage = 2,
    Account = 3,
    Local = 4,
    Interrupted = 130,
}

impl Outcome {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Why the engine returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// Nothing left to do: every job is terminal (or held as unknown).
    Finished,
    /// 401/403 (or a wrong model/base URL): nothing more can be done with this key.
    Refused(String),
    /// 406: out of credits; what was paid for is collected, the rest waits.
    NoCredits(String),
    /// `--max-cost` or `--min-credits` reached; what was paid for is collected, the rest waits.
    Budget(String),
    /// Disk full, unwritable output folder, database trouble.
    Local(String),
    /// Ctrl-C / SIGTERM.
    Interrupted,
}

/// What a run leaves behind, as far as its exit code is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Left {
    /// Jobs that ended failed.
    pub failed: i64,
    /// Jobs neither terminal nor held (pending, at Segmind, downloading).
    pub waiting: i64,
    /// Jobs held as `unknown` (their submit answer was lost; `--on-unknown hold`).
    pub held: i64,
}

impl Stop {
    /// The exit code of a run that ended so.
    pub fn outcome(&self, left: Left) -> Outcome {
        match self {
            Stop::Refused(_) | Stop::NoCredits(_) | Stop::Budget(_) => Outcome::Account,
            Stop::Local(_) => Outcome::Local,
            Stop::Interrupted => Outcome::Interrupted,
            Stop::Finished if left.held > 0 || left.waiting > 0 => Outcome::Local,
            Stop::Finished if left.failed > 0 => Outcome::SomeFailed,
            Stop::Finished => Outcome::AllDone,
        }
    }
}

/// A failure that decides the exit code. Any other error is a local problem (exit 4).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A flag, variable, config value or request that cannot be used: nothing was changed.
    #[error("{0}")]
    Usage(String),
    /// Manifest errors, already printed one per line: nothing was imported or submitted.
    #[error("{0}")]
    Manifest(String),
    /// Credentials refused before anything was paid for (an output bucket that may not be
    /// written): exit 3, nothing changed.
    #[error("{0}")]
    Account(String),
}

/// The exit code of an error that ended a command.
pub fn code_of(e: &anyhow::Error) -> Outcome {
    match e.downcast_ref::<Failure>() {
        Some(Failure::Usage(_)) | Some(Failure::Manifest(_)) => Outcome::Usage,
        Some(Failure::Account(_)) => Outcome::Account,
        None => Outcome::Local,
    }
}

/// Ends the process at once (a second Ctrl-C): every fact is already in the database.
pub fn interrupted_now() -> ! {
    std::process::exit(i32::from(Outcome::Interrupted.code()))
}

/// Prints clap's own message (usage errors, but also `--help` and `--version`) and gives its code.
pub fn parse_failed(e: clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(if e.use_stderr() { Outcome::Usage.code() } else { 0 })
}

/// Prints the error of a failed command (one line, its causes joined) and gives its exit code.
pub fn finish(result: anyhow::Result<Outcome>) -> ExitCode {
    match result {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(e) => {
            eprintln!("wanbatch: {e:#}");
            ExitCode::from(code_of(&e).code())
        }
    }
}
