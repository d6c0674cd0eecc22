//! `wanbatch status`: counts per state, resubmits by cause and possible double charges.
//! Reads only, so it works beside a running `run`.

use std::path::PathBuf;

use serde_json::json;

use crate::cli::Outcome;
use crate::store::Store;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The database file.
    #[arg(long, default_value = "wanbatch.db", env = "WANBATCH_DB")]
    pub db: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<Outcome> {
    let store = Store::open_existing(&args.db).await?;
    let counts = store.counts().await?;
    let jobs = store.jobs(None).await?;
    store.close().await;
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let sum = |f: fn(&crate::store::JobRecord) -> i64| jobs.iter().map(f).sum::<i64>();
    let attempts = sum(|j| j.attempts);
    let (unknown, expired, failed) = (
        sum(|j| j.resubmits_unknown),
        sum(|j| j.resubmits_expired),
        sum(|j| j.resubmits_failed),
    );
    let twice: Vec<&str> = jobs
        .iter()
        .filter(|j| j.maybe_billed_twice != 0)
        .map(|j| j.id.as_str())
        .collect();
    let spent: f64 = jobs.iter().filter_map(|j| j.cost).sum();
    if args.json {
        let by_state: serde_json::Map<String, serde_json::Value> =
            counts.iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
        let out = json!({
            "total": total,
            "states": by_state,
            "attempts": attempts,
            "resubmits": {"unknown": unknown, "expired": expired, "failed": failed},
            "maybe_billed_twice": twice,
            "cost": spent,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{total} jobs in {}", args.db.display());
        for (state, n) in &counts {
            println!("  {:<12} {n}", state.as_str());
        }
        println!("submit attempts: {attempts}");
        println!(
            "resubmits: {} (lost answer {unknown}, expired {expired}, after failure {failed})",
            unknown + expired + failed
        );
        if !twice.is_empty() {
            println!("may have been billed twice ({}): {}", twice.len(), twice.join(", "));
        }
        if spent > 0.0 {
            println!("reported cost: ${spent:.2}");
        }
    }
    Ok(Outcome::AllDone)
}
