//! One module per subcommand. Each has an `Args` struct and a `run` returning the outcome.

pub mod bench;
pub mod bench_import;
pub mod cancel;
pub mod demo;
pub mod estimate;
pub mod export;
pub mod import;
pub mod report;
pub mod retry;
pub mod run;
pub mod status;
