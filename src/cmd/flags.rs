//! The flags of the settings (see `settings`), shared by the commands that take them. Each is
//! read as text and checked by the settings resolver, which knows whether it came from the flag
//! or from its environment variable and says so in its message; none has a clap default, so
//! an absent flag leaves the value to the config file, the campaign's stored settings, or the
//! built-in default (given in each help text).

/// `--db`, for every command that works on a campaign.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DbFlag {
    /// The database: a file (the truth about every job; keep it with the outputs), or a PostgreSQL URL (postgres://…) for a campaign several runners share [default: wanbatch.db].
    #[arg(long, env = "WANBATCH_DB", value_name = "FILE|URL")]
    pub db: Option<String>,
}

/// `--out`, for the commands that write or read the videos.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutFlag {
    /// Folder for the videos: OUT/<id>.mp4 and OUT/<id>.json [default: the campaign's, else outputs].
    #[arg(long, env = "WANBATCH_OUT", value_name = "DIR")]
    pub out: Option<String>,
}

/// The settings of `run` a campaign remembers: given once, a bare `wanbatch run` resumes with
/// them; given again, the new value is used and remembered.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunFlags {
    #[command(flatten)]
    pub out: OutFlag,
    /// API requests per minute, all calls together (submit, status, result): your plan's limit
    /// (Segmind Free: 5, Pro: 50), shared by every runner on the key [default: 50].
    #[arg(long, env = "WANBATCH_RPM", value_name = "N", allow_negative_numbers = true)]
    pub rpm: Option<String>,
    /// Jobs in flight at Segmind at once. Default: automatic, by Little's law — the budget
    /// sustains rpm / 2.3 videos a minute (a submit and ~1.3 well-timed polls each), each at
    /// Segmind for the learned duration (~54 s at first), plus 25 % headroom: about 25 at 50 rpm.
    #[arg(long, env = "WANBATCH_CONCURRENCY", value_name = "N", allow_negative_numbers = true)]
    pub concurrency: Option<String>,
    /// What to do with a submit whose answer was lost (it may or may not have created a job):
    /// `resubmit` (counted, flagged as possibly billed twice) or `hold` it for `retry` [default: resubmit].
    #[arg(long, env = "WANBATCH_ON_UNKNOWN", value_name = "resubmit|hold")]
    pub on_unknown: Option<String>,
    /// Stop submitting before the spend (API-reported `metrics.cost`, else --price per video)
    /// would pass this many dollars; paid work is still collected. Needs --price.
    #[arg(long, env = "WANBATCH_MAX_COST", value_name = "USD", allow_negative_numbers = true)]
    pub max_cost: Option<String>,
    /// Dollars per video, for --max-cost and estimates where the API reports no cost.
    #[arg(long, env = "WANBATCH_PRICE", value_name = "USD", allow_negative_numbers = true)]
    pub price: Option<String>,
    /// Stop submitting when the account's remaining credits (as the API reports them) fall below this.
    #[arg(long, env = "WANBATCH_MIN_CREDITS", value_name = "N", allow_negative_numbers = true)]
    pub min_credits: Option<String>,
    /// Parallel video downloads (from the video host; they use no API requests) [default: 4].
    #[arg(long, env = "WANBATCH_DOWNLOAD_CONCURRENCY", value_name = "N")]
    pub download_concurrency: Option<String>,
    /// Refuse videos larger than this many bytes [default: 2147483648].
    #[arg(long, env = "WANBATCH_MAX_VIDEO_BYTES", value_name = "BYTES")]
    pub max_video_bytes: Option<String>,
    /// Stop the run (exit 4, every job resumable) when the API host has given no answer at all
    /// for this long: 90s, 2m, 1h [default: 2m].
    #[arg(long, env = "WANBATCH_UNREACHABLE_AFTER", value_name = "DURATION")]
    pub unreachable_after: Option<String>,
    /// Which endpoint polls ask: `status` is the documented flow (status until COMPLETED, then
    /// the result); `result` polls the result endpoint directly (a request less per video);
    /// `auto` uses the documented flow unless the result endpoint has been seen answering a
    /// pending request with 200 on this account [default: auto].
    #[arg(long, env = "WANBATCH_POLL", value_name = "auto|status|result")]
    pub poll: Option<String>,
    /// Paid resubmits of one job (after its result expired, or its submit answer was lost)
    /// before it ends failed, naming the cause [default: 2].
    #[arg(long, env = "WANBATCH_MAX_RESUBMITS", value_name = "N")]
    pub max_resubmits: Option<String>,
    /// How long Segmind keeps a request's record after submission: a 404 for a younger request
    /// is never taken for an expiry. Set it for rehearsals against a fake that expires sooner
    /// [default: 1h].
    #[arg(long, env = "WANBATCH_RESULT_LIFETIME", value_name = "DURATION")]
    pub result_lifetime: Option<String>,
    /// How long a video is expected to take before any is observed (the first poll times;
    /// learnt per parameter class afterwards) [default: 54.46s].
    #[arg(long, env = "WANBATCH_EXPECTED_DURATION", value_name = "DURATION")]
    pub expected_duration: Option<String>,
    /// How long a new request may take to appear in Segmind's request history: a lost submit
    /// found nowhere in it is resubmitted only once the history is complete past this
    /// [default: 2m].
    #[arg(long, env = "WANBATCH_HISTORY_LAG", value_name = "DURATION")]
    pub history_lag: Option<String>,
    #[command(flatten)]
    pub images: ImageFlags,
}

/// `--max-image-bytes`, for the commands that read manifests.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ImageFlags {
    /// Refuse local images larger than this many bytes [default: 20971520 (20 MiB)].
    #[arg(long, env = "WANBATCH_MAX_IMAGE_BYTES", value_name = "BYTES")]
    pub max_image_bytes: Option<String>,
}

/// `--rpm` and `--price` for a dry run's estimate (`import --dry-run`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EstimateFlags {
    /// With --dry-run: API requests per minute to estimate the wall-clock time at [default: 50].
    #[arg(long, env = "WANBATCH_RPM", value_name = "N", allow_negative_numbers = true)]
    pub rpm: Option<String>,
    /// With --dry-run: dollars per video, to estimate the cost.
    #[arg(long, env = "WANBATCH_PRICE", value_name = "USD", allow_negative_numbers = true)]
    pub price: Option<String>,
}
