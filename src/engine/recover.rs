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
    let interrupted = store.recover_interrupted_submits().await?;
    let uploads_repeated = store.recover_upload_intents().await?;
    let repolled = store.poll_all_now().await?;
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
