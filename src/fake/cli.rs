//! Command-line front of the fake server (`wanbatch fake-server ...`): arguments
//! and a `run` that starts the server, prints where it listens and waits.

use std::future::Future;
use std::io::Write as _;
use std::time::Duration;

use super::{FakeConfig, FakeServer, RetryAfterMode};

/// Arguments of the fake Segmind API server.
#[derive(clap::Args, Debug, Clone)]
pub struct FakeServerArgs {
    /// API port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Video (CDN) port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub cdn_port: u16,
    /// The one API key the fake accepts.
    #[arg(long, default_value = "fake-key")]
    pub api_key: String,
    /// Milliseconds a job stays QUEUED.
    #[arg(long, default_value_t = 200)]
    pub queue_ms: u64,
    /// Milliseconds a job then stays PROCESSING.
    #[arg(long, default_value_t = 800)]
    pub run_ms: u64,
    /// ± fraction applied per job to queue+run time (0 = exact).
    #[arg(long, default_value_t = 0.0)]
    pub jitter: f64,
    /// Seconds a request record lives after submit (then 404).
    #[arg(long, default_value_t = 3600)]
    pub result_lifetime_secs: u64,
    /// Max API requests per minute (all endpoints); unlimited if absent.
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Submits accepted before answering 406; unlimited if absent.
    #[arg(long)]
    pub credits: Option<u64>,
    /// Size in bytes of each generated video.
    #[arg(long, default_value_t = 64 * 1024)]
    pub video_bytes: usize,
    /// Whether 429 answers carry Retry-After.
    #[arg(long, value_enum, default_value_t = RetryAfterMode::None)]
    pub retry_after: RetryAfterMode,
}

impl FakeServerArgs {
    pub fn to_config(&self) -> FakeConfig {
        FakeConfig {
            api_key: self.api_key.clone(),
            queue: Duration::from_millis(self.queue_ms),
            run: Duration::from_millis(self.run_ms),
            jitter: self.jitter,
            result_lifetime: Duration::from_secs(self.result_lifetime_secs),
            rate_limit: self.rpm,
            rate_window: Duration::from_secs(60),
            retry_after: self.retry_after,
            credits: self.credits,
            video_len: self.video_bytes,
            ..FakeConfig::default()
        }
    }
}

/// Starts the fake, prints its URLs and key, runs until `shutdown` completes.
pub async fn run(args: FakeServerArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let server = FakeServer::start_on(args.to_config(), args.port, args.cdn_port).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "fake Segmind API listening on {} (videos on {}); key: {}",
            server.api_url(),
            server.cdn_url(),
            args.api_key
        )?;
        writeln!(
            out,
            "export SEGMIND_BASE_URL={} SEGMIND_API_KEY={}",
            server.api_url(),
            args.api_key
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
        assert_eq!(cfg.video_len, 65536);
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
