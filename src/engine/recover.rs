//! Start-up recovery, under the run lock and before the dispatcher starts: picks up exactly
//! where the last run ended, from what the database says.
//!
//! - A job left in `submitting` died inside the submit window: nobody knows whether Segmind
//!   created it, so it becomes `unknown`, to be looked up in the request history by the run
//!   (`tasks::resolve`).
//! - An upload of a local image under way was perhaps made: it will be made again, counted.
//! - Every saved request id is due for a poll now: its record may have advanced or expired
//!   while nothing watched it.
//! - Partial downloads are removed, except the one a `downloading` job is still fetching for its
//!   current request (it is resumed).

use std::collections::HashSet;
use std::path::Path;

use super::download;
use crate::state::JobState;
use crate::store::Store;

/// What recovery found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Jobs that were inside the submit window when the last run stopped.
    pub interrupted: u64,
    /// Uploads that were under way (they will be made again).
    pub uploads_repeated: u64,
    /// Saved request ids due for a poll now.
    pub repolled: u64,
}

/// Recovers what an earlier run left behind in `store` and the videos' folder `out`.
pub async fn recover(store: &Store, out: &Path) -> anyhow::Result<Recovered> {
    let (interrupted, uploads_repeated, repolled) = if store.runner().is_some() {
        // Several runners (PostgreSQL): only what dead runners left is this runner's to recover
        // — their jobs are taken over (the same recovery, job by job); the live runners' jobs
        // and uploads are theirs.
        let taken = store.take_over().await?;
        let count = |f: &dyn Fn(&crate::store::Taken) -> bool| taken.iter().filter(|t| f(t)).count() as u64;
        (
            count(&|t| t.before == JobState::Submitting),
            0,
            count(&|t| matches!(t.state, JobState::Running | JobState::Downloading)),
        )
    } else {
        (
            store.recover_interrupted_submits().await?,
            store.recover_upload_intents().await?,
            store.poll_all_now().await?,
        )
    };
    let keep: HashSet<(String, String)> = store
        .jobs(Some(JobState::Downloading))
        .await?
        .into_iter()
        .filter_map(|j| j.request_id.map(|r| (j.id, r)))
        .collect();
    download::clean_stray_parts(out, |id, rid| keep.contains(&(id.to_string(), rid.to_string())))
        .await
        .ok();
    Ok(Recovered {
        interrupted,
        uploads_repeated,
        repolled,
    })
}
