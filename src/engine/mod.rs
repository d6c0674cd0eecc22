//! The engine: works every unfinished job in the database until each is terminal, or until the
//! run must stop (account problem, local problem, Ctrl-C).
//!
//! One dispatcher loop decides what runs next, so the rate budget goes where it matters most:
//! 1. downloads of finished videos (not API requests: they take no permit);
//! 2. polls of jobs at Segmind that are due, oldest submit first (their record expires an hour
//!    after submission);
//! 3. new submits, while fewer than `concurrency` jobs are at Segmind, and paced at the share of
//!    the budget a video needs (`SUBMIT_COST` requests: the submit and its polls). Pacing spreads
//!    submits evenly, so their polls come due evenly; submitting in bursts would make whole
//!    batches complete together, queue their polls behind each other (late = slow to see) and
//!    then leave the budget idle while the next batch runs.
//!
//! For an API action the dispatcher (`dispatch`) first takes a permit from the shared `Gate`,
//! then picks the most urgent action *at that moment* and spawns it as a task (`tasks`). Tasks
//! record their result in the store (every fact committed before the next step acts on it) and
//! report back on a channel (`shared::Event`). On cancel the loop stops taking work, gives
//! in-flight calls `grace` to record their answers, then abandons the rest — safe, because the
//! database already holds every fact needed to resume (`recover` picks it up at the next start).

mod agenda;
mod dispatch;
pub mod download;
pub mod durable;
pub mod gate;
mod history;
pub mod model;
mod reach;
pub mod recover;
pub mod route;
pub mod schedule;
mod shared;
pub mod slots;
pub mod spend;
mod tasks;
pub mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::store::Store;
pub use gate::Gate;
pub use route::PollMode;
pub use schedule::{Schedule, Timing};
pub use spend::{Budget, Spend};

/// What to do with a submit whose answer was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UnknownPolicy {
    /// Submit again (counted; the job is flagged as possibly billed twice).
    Resubmit,
    /// Keep the job aside until `wanbatch retry --unknown`.
    Hold,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// API requests per `rate_window` (per minute in normal use).
    pub rpm: u32,
    pub rate_window: Duration,
    pub budget: Budget,
    /// Jobs at Segmind at once; `None` = derived from the rate and the learned duration.
    pub concurrency: Option<usize>,
    pub download_concurrency: usize,
    pub out_dir: PathBuf,
    /// Where videos go instead of `out_dir` when `--out` names a bucket (`output::stream`).
    pub bucket: Option<Arc<crate::output::Bucket>>,
    pub timing: Timing,
    pub on_unknown: UnknownPolicy,
    /// How long in-flight calls may finish after Ctrl-C.
    pub grace: Duration,
    pub max_video_bytes: u64,
    /// Which endpoint polls ask (`--poll`).
    pub poll: PollMode,
    /// Paid resubmits of one job (after an expired result, a lost submit answer) before it
    /// ends failed instead (`--max-resubmits`).
    pub max_resubmits: u32,
    /// The run stops when the API host has given no answer at all for this long.
    pub unreachable_after: Duration,
    /// How long a new request may take to appear in the request history's list.
    pub history_lag: Duration,
    /// Counters for the progress display.
    pub telemetry: Arc<crate::progress::Telemetry>,
}

pub use crate::exit::Stop;

/// The clients of Segmind's services the engine talks to.
pub struct Clients {
    pub api: ApiClient,
    /// The request history (lost submits looked up, expired results recovered); without it the
    /// engine does what it did before the history existed.
    pub history: Option<crate::api::history::HistoryClient>,
    /// The storage upload (local images); without it a job with a local image fails.
    pub upload: Option<crate::api::upload::UploadClient>,
}

impl Clients {
    /// Only the v2 API.
    pub fn api(api: ApiClient) -> Clients {
        Clients {
            api,
            history: None,
            upload: None,
        }
    }
}

/// Works every unfinished job in `store` until each is terminal or the run must stop.
pub async fn run(store: Store, clients: Clients, cfg: EngineConfig, cancel: CancellationToken) -> anyhow::Result<Stop> {
    let api = clients.api;
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(shared::Shared {
        dl: download::client(5)?,
        gate: {
            let gate = Gate::new(cfg.rpm, cfg.rate_window, cfg.rate_window / 12);
            match store.runner() {
                Some(r) => gate.shared_with(store.clone(), r.key_hash.clone()),
                None => gate,
            }
        },
        spend: Spend::new(cfg.budget.clone()),
        reach: reach::Reach::default(),
        route: route::Route::load(cfg.poll, &store).await,
        history: clients.history,
        uploader: clients.upload.map(upload::Uploader::new),
        cost: std::sync::Mutex::new(shared::SUBMIT_COST),
        schedule: {
            let schedule = Schedule::new(store.clone(), cfg.timing.clone());
            schedule.load().await;
            schedule
        },
        slots: slots::PollSlots::default(),
        syncer: durable::Syncer::default(),
        tele: cfg.telemetry.clone(),
        store,
        api,
        cfg,
        events: tx,
    });
    Ok(dispatch::Dispatcher::new(shared, rx, cancel).run().await)
}
