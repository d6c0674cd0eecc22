//! Command-line front of the fake server (`wanbatch fake-server ...`): arguments
//! and a `run` that starts the server, prints where it listens and waits.

use std::future::Future;
use std::io::Write as _;
use std::time::Duration;

use super::{FakeConfig, FakeServer, RetryAfterMode};
use super::{HistoryByIdShape, HistoryEnvelope, HistoryMode, HistoryPagination, HistoryStatusField};
use super::{HistoryTimeField, HistoryTimeFormat, ResultPending, UploadField};

/// Arguments of the fake Segmind API server.
#[derive(clap::Args, Debug, Clone)]
pub struct FakeServerArgs {
    /// API port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Video (CDN) port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub cdn_port: u16,
    /// An API key the fake accepts; repeat for several accounts (each its own rate window and
    /// history).
    #[arg(long = "api-key", default_value = "fake-key")]
    pub api_keys: Vec<String>,
    /// Milliseconds a job stays QUEUED.
    #[arg(long, default_value_t = 200)]
    pub queue_ms: u64,
    /// Milliseconds a job then stays PROCESSING.
    #[arg(long, default_value_t = 800)]
    pub run_ms: u64,
    /// Scale each job's run time by num_frames / 81.
    #[arg(long)]
    pub run_by_frames: bool,
    /// ± fraction applied per job to queue+run time (0 = exact).
    #[arg(long, default_value_t = 0.0)]
    pub jitter: f64,
    /// Seconds a request record lives after submit (then 404).
    #[arg(long, default_value_t = 3600)]
    pub result_lifetime_secs: u64,
    /// Seconds a video stays on the CDN after submit (then 404); forever if absent.
    #[arg(long)]
    pub file_lifetime_secs: Option<u64>,
    /// Max API requests per key per rate window; unlimited if absent.
    #[arg(long)]
    pub rpm: Option<u32>,
    /// The sliding window the rate limit counts over, in seconds.
    #[arg(long, default_value_t = 60.0, value_parser = positive_secs)]
    pub rate_window_secs: f64,
    /// Whether 429 answers carry Retry-After.
    #[arg(long, value_enum, default_value_t = RetryAfterMode::None)]
    pub retry_after: RetryAfterMode,
    /// Whether history and upload calls count in their key's rate window.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub history_counts_against_rate: bool,
    /// Submits accepted before answering 406; unlimited if absent.
    #[arg(long)]
    pub credits: Option<u64>,
    /// Size in bytes of each generated video.
    #[arg(long, default_value_t = 64 * 1024)]
    pub video_bytes: usize,
    /// What the result endpoint answers for a pending job.
    #[arg(long, value_enum, default_value_t = ResultPending::Ok200)]
    pub result_pending: ResultPending,
    /// HTTP status of a FAILED status/result answer.
    #[arg(long, default_value_t = 422)]
    pub failed_status: u16,
    /// Milliseconds before a new request appears in the history list.
    #[arg(long, default_value_t = 0)]
    pub history_lag_ms: u64,
    /// What every history call answers.
    #[arg(long, value_enum, default_value_t = HistoryMode::Ok)]
    pub history_mode: HistoryMode,
    /// Where the rows of a history list sit.
    #[arg(long, value_enum, default_value_t = HistoryEnvelope::Data)]
    pub history_envelope: HistoryEnvelope,
    /// Which fields carry the history list's pagination.
    #[arg(long, value_enum, default_value_t = HistoryPagination::Flat)]
    pub history_pagination: HistoryPagination,
    /// Name of a history row's creation time.
    #[arg(long, value_enum, default_value_t = HistoryTimeField::ModelCreated)]
    pub history_time_field: HistoryTimeField,
    /// Name of a history row's status.
    #[arg(long, value_enum, default_value_t = HistoryStatusField::ModelStatus)]
    pub history_status_field: HistoryStatusField,
    /// How history timestamps are written.
    #[arg(long, value_enum, default_value_t = HistoryTimeFormat::Rfc3339)]
    pub history_time_format: HistoryTimeFormat,
    /// Shape of a by-id history answer.
    #[arg(long, value_enum, default_value_t = HistoryByIdShape::Bare)]
    pub history_by_id: HistoryByIdShape,
    /// Every N-th request appears twice in the history once COMPLETED (two outputs).
    #[arg(long)]
    pub duplicate_rows: Option<u32>,
    /// Name of the URL list in an upload answer.
    #[arg(long, value_enum, default_value_t = UploadField::FileUrls)]
    pub upload_field: UploadField,
    /// Largest accepted upload body in bytes (413 beyond).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub upload_max_bytes: usize,
}

/// A finite, positive number of seconds.
fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

impl FakeServerArgs {
    pub fn to_config(&self) -> FakeConfig {
        let mut keys = self.api_keys.iter().cloned();
        FakeConfig {
            api_key: keys.next().unwrap_or_else(|| "fake-key".into()),
            extra_keys: keys.collect(),
            queue: Duration::from_millis(self.queue_ms),
            run: Duration::from_millis(self.run_ms),
            run_by_frames: self.run_by_frames,
            jitter: self.jitter,
            result_lifetime: Duration::from_secs(self.result_lifetime_secs),
            file_lifetime: self.file_lifetime_secs.map(Duration::from_secs),
            rate_limit: self.rpm,
            rate_window: Duration::from_secs_f64(self.rate_window_secs),
            retry_after: self.retry_after,
            history_counts_against_rate: self.history_counts_against_rate,
            credits: self.credits,
            video_len: self.video_bytes,
            result_pending: self.result_pending,
            failed_status: self.failed_status,
            history_lag: Duration::from_millis(self.history_lag_ms),
            history_mode: self.history_mode,
            history_envelope: self.history_envelope,
            history_pagination: self.history_pagination,
            history_time_field: self.history_time_field,
            history_status_field: self.history_status_field,
            history_time_format: self.history_time_format,
            history_by_id: self.history_by_id,
            duplicate_rows: self.duplicate_rows,
            upload_field: self.upload_field,
            upload_max_bytes: self.upload_max_bytes,
            ..FakeConfig::default()
        }
    }
}

/// Starts the fake, prints its URLs and key, runs until `shutdown` completes.
pub async fn run(args: FakeServerArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let cfg = args.to_config();
    let cfg_keys: Vec<&str> = std::iter::once(&cfg.api_key)
        .chain(&cfg.extra_keys)
        .map(String::as_str)
        .collect();
    let server = FakeServer::start_on(cfg.clone(), args.port, args.cdn_port).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "fake Segmind API listening on {} (videos on {}); key: {}",
            server.api_url(),
            server.cdn_url(),
            cfg_keys.join(", ")
        )?;
        writeln!(
            out,
            "export SEGMIND_BASE_URL={} SEGMIND_API_KEY={}",
            server.api_url(),
            cfg_keys[0]
        )?;
        out.flush()?;
    }
    shutdown.await;
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FakeServerArgs,
    }

    #[test]
    fn parses_flags() {
        let cli = Cli::parse_from([
            "x",
            "--rpm",
            "5",
            "--retry-after",
            "http-date",
            "--queue-ms",
            "10",
            "--credits",
            "3",
        ]);
        let cfg = cli.args.to_config();
        assert_eq!(cfg.rate_limit, Some(5));
        assert_eq!(cfg.retry_after, RetryAfterMode::HttpDate);
        assert_eq!(cfg.queue, Duration::from_millis(10));
        assert_eq!(cfg.credits, Some(3));
        assert_eq!(cfg.api_key, "fake-key");
        assert!(cfg.extra_keys.is_empty());
        assert_eq!(cfg.video_len, 65536);
        assert_eq!(cfg.rate_window, Duration::from_secs(60));
        assert!(cfg.history_counts_against_rate);
        assert_eq!(cfg.result_pending, ResultPending::Ok200);
        assert_eq!(cfg.failed_status, 422);
        assert_eq!(cfg.history_lag, Duration::ZERO);
        assert_eq!(cfg.history_envelope, HistoryEnvelope::Data);
        assert_eq!(cfg.upload_field, UploadField::FileUrls);
        assert_eq!(cfg.upload_max_bytes, 64 << 20);
        assert_eq!(cfg.file_lifetime, None);
    }

    #[test]
    fn parses_new_flags() {
        let cli = Cli::parse_from([
            "x",
            "--api-key",
            "k1",
            "--api-key",
            "k2",
            "--rate-window-secs",
            "0.5",
            "--history-counts-against-rate",
            "false",
            "--result-pending",
            "404",
            "--failed-status",
            "200",
            "--history-lag-ms",
            "1500",
            "--history-mode",
            "garbage",
            "--history-envelope",
            "list",
            "--history-pagination",
            "nested",
            "--history-time-field",
            "created_at",
            "--history-status-field",
            "status",
            "--history-time-format",
            "epoch-ms",
            "--history-by-id",
            "data",
            "--duplicate-rows",
            "3",
            "--upload-field",
            "urls",
            "--upload-max-bytes",
            "1000",
            "--file-lifetime-secs",
            "7",
            "--run-by-frames",
        ]);
        let cfg = cli.args.to_config();
        assert_eq!(
            (cfg.api_key.as_str(), cfg.extra_keys.clone()),
            ("k1", vec!["k2".to_string()])
        );
        assert_eq!(cfg.rate_window, Duration::from_millis(500));
        assert!(!cfg.history_counts_against_rate);
        assert_eq!(cfg.result_pending, ResultPending::NotFound404);
        assert_eq!(cfg.failed_status, 200);
        assert_eq!(cfg.history_lag, Duration::from_millis(1500));
        assert_eq!(cfg.history_mode, HistoryMode::Garbage);
        assert_eq!(cfg.history_envelope, HistoryEnvelope::List);
        assert_eq!(cfg.history_pagination, HistoryPagination::Nested);
        assert_eq!(cfg.history_time_field, HistoryTimeField::CreatedAt);
        assert_eq!(cfg.history_status_field, HistoryStatusField::Status);
        assert_eq!(cfg.history_time_format, HistoryTimeFormat::EpochMs);
        assert_eq!(cfg.history_by_id, HistoryByIdShape::Data);
        assert_eq!(cfg.duplicate_rows, Some(3));
        assert_eq!(cfg.upload_field, UploadField::Urls);
        assert_eq!(cfg.upload_max_bytes, 1000);
        assert_eq!(cfg.file_lifetime, Some(Duration::from_secs(7)));
        assert!(cfg.run_by_frames);
        for bad in [&["x", "--rate-window-secs", "0"][..], &["x", "--result-pending", "500"]] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn run_stops_on_shutdown() {
        let cli = Cli::parse_from(["x"]);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(cli.args, async {
            let _ = rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("run did not stop")
            .unwrap()
            .unwrap();
    }
}
