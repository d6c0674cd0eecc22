//! `wanbatch retry`: put chosen jobs back to `pending`, so the next `run` submits them again.
//! Every such resubmit is counted by its cause. A job at Segmind (running) cannot be withdrawn:
//! the API has no cancel. A cancelled job comes back by id (it was never submitted, so nothing
//! is counted).

use crate::cmd::run::RunLock;
use crate::exit::{Failure, Outcome};
use crate::settings::Resolved;
use crate::store::{RetryWhich, Store};

#[derive(clap::Args, Debug)]
pub struct RetryArgs {
    #[command(flatten)]
    pub db: super::flags::DbFlag,
    /// Jobs held because their submit answer was lost (`--on-unknown hold`). They may already
    /// exist (and be billed) at Segmind: they are flagged as possibly billed twice.
    #[arg(long)]
    pub unknown: bool,
    /// Jobs that ended failed.
    #[arg(long)]
    pub failed: bool,
    /// Failed jobs whose video was made (and paid for) but never fetched: COMPLETED at Segmind,
    /// then the download gave up (the result expired or its host kept failing). Counted as
    /// expired resubmits. (Results that expire while polling are resubmitted by `run` itself.)
    #[arg(long)]
    pub expired: bool,
    /// These job ids (comma-separated), if they are failed, unknown or cancelled.
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<String>,
}

pub async fn run(args: RetryArgs, resolved: Resolved) -> anyhow::Result<Outcome> {
    let db = resolved.db.clone();
    if !args.unknown && !args.failed && !args.expired && args.ids.is_empty() {
        return Err(Failure::Usage("say which jobs: --unknown, --failed, --expired and/or --ids ID,ID".into()).into());
    }
    let store = Store::open_existing(&db).await?;
    let _lock = RunLock::acquire(&db)?;
    let mut total = 0;
    if args.unknown {
        total += store.retry(RetryWhich::Unknown).await?;
    }
    if args.expired {
        total += store.retry(RetryWhich::Expired).await?;
    }
    if args.failed {
        total += store.retry(RetryWhich::Failed).await?;
    }
    for id in &args.ids {
        let n = store.retry(RetryWhich::Id(id)).await?;
        if n == 0 {
            eprintln!("{id}: not retried (no such job, or it is not failed, unknown or cancelled)");
        }
        total += n;
    }
    store.close().await;
    if total == 0 {
        println!("nothing to retry in {}: no job matched", db.display());
        return Ok(Outcome::AllDone);
    }
    println!(
        "{total} job(s) will be submitted again on the next `wanbatch run --db {}`",
        db.display()
    );
    Ok(Outcome::AllDone)
}
