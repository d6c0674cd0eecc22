//! `wanbatch bench`: the request-economy benchmark (see `crate::bench`). Prints a table.

use std::time::Duration;

use crate::bench::{self, Scenario};
use crate::cli::Outcome;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Videos in the workload.
    #[arg(long, default_value_t = 200)]
    pub videos: usize,
    /// The account's API requests per minute (the fake enforces it; both schedulers get it).
    #[arg(long, default_value_t = 50)]
    pub rpm: u32,
    /// Mean video duration in real seconds (the seed page's ~54 s).
    #[arg(long, default_value_t = 54.0)]
    pub duration_secs: f64,
    /// ± spread of durations, as a fraction.
    #[arg(long, default_value_t = 0.1)]
    pub jitter: f64,
    /// Time compression: 20 runs a real minute in three seconds. Much more and timer
    /// granularity (~1 ms) starts to eat a visible share of each scaled permit interval.
    #[arg(long, default_value_t = 20.0)]
    pub scale: f64,
    /// The baseline's poll interval in real seconds (the SDK's `interval=2.0`).
    #[arg(long, default_value_t = 2.0)]
    pub baseline_interval_secs: f64,
    /// Baseline jobs in parallel: 2 is the fewest whose 2-second polls fill a 50 rpm budget.
    #[arg(long, default_value_t = 2)]
    pub baseline_concurrency: usize,
    /// Also print the API requests made in each minute.
    #[arg(long)]
    pub verbose: bool,
    /// Run only wanbatch's scheduler.
    #[arg(long)]
    pub skip_baseline: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    let sc = Scenario {
        videos: args.videos,
        rpm: args.rpm,
        duration: Duration::from_secs_f64(args.duration_secs),
        jitter: args.jitter,
        scale: args.scale,
        baseline_interval: Duration::from_secs_f64(args.baseline_interval_secs),
        baseline_concurrency: args.baseline_concurrency.max(1),
        verbose: args.verbose,
    };
    eprintln!("running wanbatch's scheduler…");
    let ours = bench::run_wanbatch(&sc).await?;
    let base = if args.skip_baseline {
        None
    } else {
        eprintln!("running the SDK-style baseline…");
        Some(bench::run_baseline(&sc).await?)
    };
    println!("{}", bench::table(&sc, &ours, base.as_ref()));
    if args.verbose {
        for f in std::iter::once(&ours).chain(base.as_ref()) {
            println!("{} requests per minute: {:?}", f.name, f.per_minute);
        }
    }
    Ok(Outcome::AllDone)
}
