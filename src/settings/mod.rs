//! One configuration for every command, resolved in one place before anything is changed.
//!
//! Precedence, highest first: a flag on the command line, its `WANBATCH_*` environment
//! variable, `wanbatch.toml`, the campaign's stored settings (what an earlier `run` was given),
//! the built-in default. Every value is checked where it is read, and the error names where it
//! came from (`--rpm 0: …`, `WANBATCH_PRICE -1: …`, `wanbatch.toml: rpm: …`). Resolving reads
//! the config file and peeks at the database's stored settings (read-only; a database that does
//! not exist is not created), so a usage error leaves no trace.
//!
//! Each command turns the resolved layer into its own validated value (`RunSettings`, …), with
//! the defaults filled in; `demo` builds its `RunSettings` through the same path.

pub mod file;
mod kinds;
mod layer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;

use crate::engine::{PollMode, UnknownPolicy};
pub use kinds::Span;
pub use layer::{env_name, Layer, Origin, Origins};

pub const DEFAULT_DB: &str = "wanbatch.db";
pub const DEFAULT_OUT: &str = "outputs";
pub const DEFAULT_RPM: u32 = 50;
pub const DEFAULT_DOWNLOAD_CONCURRENCY: u32 = 4;
pub const DEFAULT_MAX_VIDEO_BYTES: u64 = 2 * 1024 * 1024 * 1024;
pub const DEFAULT_UNREACHABLE_AFTER: Duration = Duration::from_secs(120);
pub const DEFAULT_MAX_RESUBMITS: u32 = 2;
/// Segmind keeps a request's record an hour after submission (API.md).
pub const DEFAULT_RESULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The seed page's ~54 s per video.
pub const DEFAULT_EXPECTED_DURATION: Duration = Duration::from_millis(54_460);
/// A new request may appear in the request history's list this late (API.md).
pub const DEFAULT_HISTORY_LAG: Duration = Duration::from_secs(120);

/// What the manifest loader takes from the settings.
pub fn load_options(r: &Resolved) -> crate::manifest::LoadOptions {
    crate::manifest::LoadOptions {
        max_image_bytes: r
            .merged
            .max_image_bytes
            .unwrap_or(crate::manifest::local::DEFAULT_MAX_IMAGE_BYTES),
    }
}

/// The settings given on the command line (flags, or their environment variables, which clap
/// reads) of the subcommand in `matches`.
pub fn from_matches(matches: &ArgMatches) -> Result<(Layer, Origins), String> {
    let mut layer = Layer::default();
    let mut origins = Origins::new();
    for &key in Layer::KEYS {
        let Ok(Some(text)) = matches.try_get_one::<String>(key) else {
            continue;
        };
        let origin = match matches.value_source(key) {
            Some(ValueSource::EnvVariable) => Origin::Env,
            _ => Origin::Flag,
        };
        layer
            .set_text(key, text, &origin)
            .expect("every key of the layer is a setting")?;
        origins.insert(key, origin);
    }
    Ok((layer, origins))
}

/// Every source merged.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    /// The value of each setting some source gave.
    pub merged: Layer,
    pub origins: Origins,
    /// What was given this time (flags, environment, config file): what `run` stores.
    pub given: Layer,
    /// The campaign's stored settings (empty when there is no database yet).
    pub stored: Layer,
    /// The database: the one place the settings cannot come from.
    pub db: PathBuf,
}

impl Resolved {
    /// Merges the command line's layer with the config file (the one named, or
    /// `cwd/wanbatch.toml`) and the stored settings of the database they point at.
    pub fn resolve(cli: Layer, cli_origins: Origins, config: Option<&Path>, cwd: &Path) -> Result<Resolved, String> {
        let mut merged = cli;
        let mut origins = cli_origins;
        if let Some(path) = file::locate(config, cwd) {
            let from_file = file::load(&path)?;
            merged.fill(&from_file, &Origin::File(path), &mut origins);
        }
        let given = merged.clone();
        let db = merged.db.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DB));
        let stored = read_stored(&db)?;
        merged.fill(&stored, &Origin::Stored, &mut origins);
        Ok(Resolved {
            merged,
            origins,
            given,
            stored,
            db,
        })
    }

    /// Resolution for code that has its values at hand (the demo, tests): `layer` counts as
    /// given on the command line, and nothing else is read.
    pub fn given(layer: Layer) -> Resolved {
        let origins = layer
            .to_json(false)
            .into_iter()
            .map(|(k, _)| (k, Origin::Flag))
            .collect();
        Resolved {
            db: layer.db.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DB)),
            given: layer.clone(),
            merged: layer,
            origins,
            stored: Layer::default(),
        }
    }

    /// How to name `key`'s value in a message: where it came from.
    pub fn name(&self, key: &str) -> String {
        self.origins
            .get(key)
            .map_or_else(|| format!("--{}", key.replace('_', "-")), |o| o.name(key))
    }
}

/// How an error resolving the settings begins when the campaign's PostgreSQL database cannot be
/// reached: not a bad setting (exit 2) but a local problem (exit 4), everything left as it was.
pub const UNREACHABLE_DB: &str = "cannot reach the campaign's database ";

/// The stored settings of the database at `db`, read without creating or changing it.
fn read_stored(db: &Path) -> Result<Layer, String> {
    let mut layer = Layer::default();
    if !crate::store::is_url(db) && !db.exists() {
        return Ok(layer);
    }
    let pairs = crate::store::peek_settings(db).map_err(|e| {
        if crate::store::is_url(db) {
            format!("{UNREACHABLE_DB}{}: {e:#}", crate::store::shown(db))
        } else {
            format!(
                "cannot read the campaign's settings in {}: {e:#}",
                crate::store::shown(db)
            )
        }
    })?;
    for (key, json) in pairs {
        if let Ok(v) = serde_json::from_str(&json) {
            layer.set_json(&key, &v);
        }
    }
    Ok(layer)
}

/// Everything `run` works with, validated, defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSettings {
    pub db: PathBuf,
    /// The videos' folder; for an object-store output, the URL's text.
    pub out: PathBuf,
    /// `Some` when `--out` names a bucket (`s3://bucket/prefix`, `gs://…`, `az://…`).
    pub bucket: Option<crate::output::BucketUrl>,
    pub rpm: u32,
    /// `None`: automatic (Little's law on the budget and the learned duration).
    pub concurrency: Option<u32>,
    pub price: Option<f64>,
    pub max_cost: Option<f64>,
    pub min_credits: Option<f64>,
    pub on_unknown: UnknownPolicy,
    pub download_concurrency: u32,
    pub max_video_bytes: u64,
    pub unreachable_after: Duration,
    pub poll: PollMode,
    pub max_resubmits: u32,
    pub result_lifetime: Duration,
    pub expected_duration: Duration,
    pub max_image_bytes: u64,
    pub history_lag: Duration,
    /// What to store in the campaign's database (the values given this time).
    pub to_store: Layer,
}

impl RunSettings {
    pub fn from(r: &Resolved) -> Result<RunSettings, String> {
        let m = &r.merged;
        if m.max_cost.is_some() && m.price.is_none() {
            return Err(format!(
                "{} needs a price per video to count the spend before the API reports it: give --price \
                 (or WANBATCH_PRICE, or price in wanbatch.toml), e.g. --price 0.09",
                r.name("max_cost")
            ));
        }
        let out = m.out.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_OUT));
        // `s3://bucket/prefix` (also gs://, az://): videos go to object storage.
        let bucket =
            crate::output::BucketUrl::parse(&out.to_string_lossy()).map_err(|e| format!("{} {e}", r.name("out")))?;
        if bucket.is_none() && out.exists() && !out.is_dir() {
            return Err(format!(
                "{} {}: expected a folder for the videos, but it is a file",
                r.name("out"),
                out.display()
            ));
        }
        let mut to_store = r.given.clone();
        // Remembered as an absolute path: a later command may run from another folder.
        if let Some(o) = to_store.out.as_mut().filter(|_| bucket.is_none()) {
            if let Ok(abs) = std::path::absolute(&*o) {
                *o = abs;
            }
        }
        Ok(RunSettings {
            db: r.db.clone(),
            out,
            bucket,
            rpm: m.rpm.unwrap_or(DEFAULT_RPM),
            concurrency: m.concurrency,
            price: m.price,
            max_cost: m.max_cost,
            min_credits: m.min_credits,
            on_unknown: m.on_unknown.unwrap_or(UnknownPolicy::Resubmit),
            download_concurrency: m.download_concurrency.unwrap_or(DEFAULT_DOWNLOAD_CONCURRENCY),
            max_video_bytes: m.max_video_bytes.unwrap_or(DEFAULT_MAX_VIDEO_BYTES),
            unreachable_after: m.unreachable_after.map_or(DEFAULT_UNREACHABLE_AFTER, |s| s.0),
            poll: m.poll.unwrap_or_default(),
            max_resubmits: m.max_resubmits.unwrap_or(DEFAULT_MAX_RESUBMITS),
            result_lifetime: m.result_lifetime.map_or(DEFAULT_RESULT_LIFETIME, |s| s.0),
            expected_duration: m.expected_duration.map_or(DEFAULT_EXPECTED_DURATION, |s| s.0),
            max_image_bytes: m
                .max_image_bytes
                .unwrap_or(crate::manifest::local::DEFAULT_MAX_IMAGE_BYTES),
            history_lag: m.history_lag.map_or(DEFAULT_HISTORY_LAG, |s| s.0),
            to_store,
        })
    }
}

/// The videos' folder for commands that read a campaign (`report`): the flag, environment,
/// file, or the folder the campaign was run with, else the default.
pub fn out_of(r: &Resolved) -> PathBuf {
    r.merged.out.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_OUT))
}

#[cfg(test)]
mod tests;
