//! `wanbatch cancel`: withdraw jobs that have not been submitted (`pending` → `cancelled`).
//!
//! The v2 API has no cancel, so a job that was (or may have been) submitted cannot be withdrawn:
//! it finishes at Segmind and is billed, and a `run` still collects its video. Safe beside a
//! running `run` (no run lock): each cancel is one statement guarded by `state = 'pending'`, and
//! the dispatcher claims a job with the same guard, so exactly one of them wins.

use crate::exit::{Failure, Outcome};
use crate::settings::Resolved;
use crate::state::JobState;
use crate::store::Store;

#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    #[command(flatten)]
    pub db: super::flags::DbFlag,
    /// These job ids (comma-separated), if they are still pending.
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<String>,
    /// Every pending job.
    #[arg(long)]
    pub all_pending: bool,
}

pub async fn run(args: CancelArgs, resolved: Resolved) -> anyhow::Result<Outcome> {
    let db = resolved.db.clone();
    if !args.all_pending && args.ids.is_empty() {
        return Err(Failure::Usage("say which jobs: --ids ID,ID or --all-pending".into()).into());
    }
    let store = Store::open_existing(&db).await?;
    let mut total = 0;
    let mut missing = 0;
    for id in &args.ids {
        if store.cancel(Some(id)).await? == 1 {
            total += 1;
            continue;
        }
        match store.state_of(id).await?.as_deref() {
            None => {
                eprintln!("{id}: no such job");
                missing += 1;
            }
            Some("cancelled") => eprintln!("{id}: already cancelled"),
            Some(s @ ("done" | "failed")) => eprintln!("{id}: not cancelled: it has ended ({s})"),
            Some(s) => eprintln!("{id}: not cancelled: it is {s}. {}", IN_FLIGHT),
        }
    }
    if args.all_pending {
        total += store.cancel(None).await?;
    }
    let in_flight: i64 = store
        .counts()
        .await?
        .into_iter()
        .filter(|(s, _)| {
            matches!(
                s,
                JobState::Submitting | JobState::Unknown | JobState::Running | JobState::Downloading
            )
        })
        .map(|(_, n)| n)
        .sum();
    store.close().await;
    println!(
        "{total} job(s) cancelled in {}; `wanbatch retry --ids ID` takes one back",
        crate::store::shown(&db)
    );
    if args.all_pending && in_flight > 0 {
        println!("{in_flight} job(s) already submitted (or possibly submitted) were left: {IN_FLIGHT}");
    }
    if missing > 0 {
        return Err(Failure::Usage(format!(
            "{missing} of the ids given name no job in {}",
            crate::store::shown(&db)
        ))
        .into());
    }
    Ok(Outcome::AllDone)
}

const IN_FLIGHT: &str = "The Segmind API has no cancel: a submitted job runs to its end and is billed, \
                         and `wanbatch run` still fetches its video";
