//! `wanbatch import`: validate manifests and load them as pending jobs; `--dry-run` writes nothing.

use std::path::{Path, PathBuf};

use crate::cli::{Failure, Outcome};
use crate::manifest::{self, Row};
use crate::store::{ImportSummary, Store};

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Manifest files: .csv, or .jsonl / .ndjson (one JSON object per line).
    #[arg(required = true)]
    pub manifests: Vec<PathBuf>,
    /// The database file.
    #[arg(long, default_value = "wanbatch.db", env = "WANBATCH_DB")]
    pub db: PathBuf,
    /// Validate and report only, with an estimate of requests, time and cost; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub estimate: super::estimate::EstimateArgs,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<Outcome> {
    let rows = read_manifests(&args.manifests)?;
    if args.dry_run {
        let summary = if args.db.exists() {
            let store = Store::open(&args.db).await?;
            let (summary, conflicts) = store.check_import(&rows).await?;
            store.close().await;
            report_conflicts(&conflicts)?;
            summary
        } else {
            ImportSummary {
                inserted: rows.len() as u64,
                unchanged: 0,
            }
        };
        println!(
            "dry run: {} rows valid; {} would be new jobs, {} already in {} (nothing written)",
            rows.len(),
            summary.inserted,
            summary.unchanged,
            args.db.display()
        );
        super::estimate::print(&args.db, &rows, &super::estimate::Opts::for_import(&args.estimate)).await?;
        return Ok(Outcome::AllDone);
    }
    let store = Store::open(&args.db).await?;
    let summary = import_rows(&store, &rows, &args.db).await;
    store.close().await;
    summary?;
    Ok(Outcome::AllDone)
}

/// Reads and validates every manifest; prints every error and fails if there is any.
pub fn read_manifests(paths: &[PathBuf]) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let errors = manifest::read_files(paths, |row| rows.push(row));
    if errors.is_empty() {
        return Ok(rows);
    }
    for e in &errors {
        eprintln!("{e}");
    }
    let files: std::collections::BTreeSet<&str> = errors.iter().map(|e| e.file.as_str()).collect();
    Err(Failure::Manifest(format!(
        "{} error(s) in {}; nothing was imported or submitted",
        errors.len(),
        files.into_iter().collect::<Vec<_>>().join(", ")
    ))
    .into())
}

fn report_conflicts(conflicts: &[crate::store::ImportConflict]) -> anyhow::Result<()> {
    if conflicts.is_empty() {
        return Ok(());
    }
    for c in conflicts {
        eprintln!("{c}");
    }
    Err(Failure::Manifest(format!(
        "{} id(s) already exist with different parameters; nothing was imported or submitted",
        conflicts.len()
    ))
    .into())
}

/// Imports validated rows, printing a one-line summary.
pub async fn import_rows(store: &Store, rows: &[Row], db: &Path) -> anyhow::Result<ImportSummary> {
    match store.import(rows).await? {
        Ok(summary) => {
            println!(
                "imported {} new jobs ({} already present) into {}",
                summary.inserted,
                summary.unchanged,
                db.display()
            );
            Ok(summary)
        }
        Err(conflicts) => {
            report_conflicts(&conflicts)?;
            unreachable!("conflicts are reported as an error")
        }
    }
}
