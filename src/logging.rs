//! Logging set-up: a `tracing` subscriber filtered by `RUST_LOG`, writing text or JSON to stderr
//! (above the progress bar, never through it) or to `--log-file`.
//!
//! Nothing secret is ever logged: the API key is a sensitive header value and `ApiKey`'s
//! `Debug` is redacted; `tests/key_leak.rs` runs a whole campaign at trace level to prove it.

use std::path::Path;

/// The format of log lines.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the subscriber. A log file is read afterwards, so it gets the run's story (info);
/// stderr only warnings, unless `RUST_LOG` says otherwise.
pub fn init(format: LogFormat, log_file: Option<&Path>) -> std::io::Result<()> {
    use tracing_subscriber::EnvFilter;
    let default = if log_file.is_some() {
        "wanbatch=info"
    } else {
        "wanbatch=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only on a terminal: logs redirected to a file or a pipe stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match (format, log_file) {
        // On stderr, log lines go above the progress bar, not through it.
        (LogFormat::Text, None) => builder.with_writer(crate::progress::LogWriter).try_init(),
        (LogFormat::Json, None) => builder.with_writer(crate::progress::LogWriter).json().try_init(),
        (format, Some(path)) => {
            let mut open = std::fs::OpenOptions::new();
            open.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600); // it holds prompts and request ids
            let file = std::sync::Mutex::new(open.open(path)?);
            let builder = builder.with_ansi(false).with_writer(file);
            match format {
                LogFormat::Text => builder.try_init(),
                LogFormat::Json => builder.json().try_init(),
            }
        }
    };
    Ok(())
}
