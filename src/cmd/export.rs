//! `wanbatch export`: one row per job in manifest order, CSV or JSONL, streamed to a file or
//! stdout. Holds no secret: the API key is never in the database.
//!
//! Streams: jobs (and, for JSONL, their attempt history) are read a page at a time from one
//! read snapshot and written as they come, so a million jobs export in the memory of one page.

use std::io::Write;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::clock::rfc3339;
use crate::exit::{Failure, Outcome};
use crate::manifest::FIELDS;
use crate::settings::Resolved;
use crate::state::JobState;
use crate::store::{JobRecord, Store};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub db: super::flags::DbFlag,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ExportFormat,
    /// Write here instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Only jobs in this state.
    #[arg(long)]
    pub state: Option<String>,
}

/// Columns before the parameters: `id`, then the export's own columns as the manifest loader
/// knows them (`manifest::EXPORT_COLUMNS`, where they are accepted and ignored, so an export can
/// be fed back in); `history` is JSONL only.
pub fn columns() -> impl Iterator<Item = &'static str> {
    std::iter::once("id").chain(
        crate::manifest::EXPORT_COLUMNS
            .iter()
            .copied()
            .filter(|c| *c != "history"),
    )
}

pub async fn run(args: ExportArgs, resolved: Resolved) -> anyhow::Result<Outcome> {
    let db = resolved.db.clone();
    let state = match &args.state {
        Some(s) => Some(s.parse::<JobState>().map_err(Failure::Usage)?),
        None => None,
    };
    let store = Store::open_existing(&db).await?;
    let written = write(&store, state, &args).await;
    store.close().await;
    if written? == 0 {
        match &args.state {
            Some(s) => eprintln!(
                "export: no jobs are {s} in {}: nothing exported",
                crate::store::shown(&db)
            ),
            None => eprintln!("export: no jobs in {}: nothing exported", crate::store::shown(&db)),
        }
    }
    Ok(Outcome::AllDone)
}

/// Jobs fetched and written a page at a time.
const PAGE: i64 = 1000;

/// Writes the rows; returns how many.
async fn write(store: &Store, state: Option<JobState>, args: &ExportArgs) -> anyhow::Result<u64> {
    let mut rows = 0u64;
    let mut images = crate::provenance::LocalImages::default();
    let jsonl = matches!(args.format, ExportFormat::Jsonl);
    let mut pages = store.job_pages(state, jsonl).await?;
    let out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::fs::File::create(p)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    if jsonl {
        loop {
            let page = pages.next(PAGE).await?;
            if page.is_empty() {
                break;
            }
            for (j, attempts) in &page {
                let mut v = record_json(j);
                images.add(store, j, &mut v).await?;
                v["history"] = attempts
                    .iter()
                    .map(|a| {
                        json!({
                            "n": a.n,
                            "started_at": rfc3339(a.started_at),
                            "request_id": a.request_id,
                            "outcome": a.outcome,
                            "detail": a.detail,
                        })
                    })
                    .collect();
                serde_json::to_writer(&mut out, &v)?;
                out.write_all(b"\n")?;
                rows += 1;
            }
        }
    } else {
        let mut w = csv::Writer::from_writer(&mut out);
        let header: Vec<&str> = columns().chain(FIELDS.iter().map(|f| f.name)).collect();
        w.write_record(&header)?;
        loop {
            let page = pages.next(PAGE).await?;
            if page.is_empty() {
                break;
            }
            for (j, _) in &page {
                let mut v = record_json(j);
                images.add(store, j, &mut v).await?;
                w.write_record(header.iter().map(|c| cell(v.get(*c))))?;
                rows += 1;
            }
        }
        w.flush()?;
    }
    out.flush()?;
    Ok(rows)
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A job as one flat JSON object: its record, then its parameters.
pub fn record_json(j: &JobRecord) -> Value {
    let mut v = json!({
        "id": j.id,
        "state": j.state,
        "request_id": j.request_id,
        "attempts": j.attempts,
        "output": j.output_path,
        "bytes": j.bytes,
        "sha256": j.sha256,
        "error": j.error,
        "cost": j.cost,
        "submitted_at": j.submitted_at.map(rfc3339),
        "completed_at": j.completed_at.map(rfc3339),
        "downloaded_at": j.downloaded_at.map(rfc3339),
        "resubmits_unknown": j.resubmits_unknown,
        "resubmits_expired": j.resubmits_expired,
        "resubmits_failed": j.resubmits_failed,
        "maybe_billed_twice": j.maybe_billed_twice != 0,
        "unknown_adopted": j.unknown_adopted,
        "unknown_absent": j.unknown_absent,
        "unknown_unprovable": j.unknown_unprovable,
        "history_recovered": j.history_recovered,
        "billed_duplicates": j.billed_duplicates,
        "true_cost": j.true_cost,
        "double_charges": j.double_charges,
        "resubmits_rejected": j.resubmits_rejected,
        "video_width": j.video_width,
        "video_height": j.video_height,
        "video_frames": j.video_frames,
        "video_fps": j.video_fps,
        "video_duration": j.video_duration,
        "video_codec": j.video_codec,
        "video_mismatch": j.video_mismatch,
        "review": j.review,
        "review_note": j.review_note,
        "source": j.source,
    });
    if let (Value::Object(map), Ok(Value::Object(params))) = (&mut v, serde_json::from_str::<Value>(&j.params)) {
        for (k, val) in params {
            map.insert(k, val);
        }
    }
    v
}
