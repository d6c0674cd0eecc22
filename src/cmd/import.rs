//! `wanbatch import`: validate manifests and load them as pending jobs; `--dry-run` writes nothing.
//!
//! Streaming: a reader thread parses the manifests and hands rows in batches to the staging
//! database (one batch in memory at a time, parsing and SQLite running side by side on two
//! cores). Only when every row is read, every error counted and no id is used twice does the
//! jobs database see the rows, in one transaction. Errors are printed in file and line order,
//! the first [`ERRORS_SHOWN`] of them, then a count of the rest.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::exit::{Failure, Outcome};
use crate::manifest::{self, LocalImage, ManifestError};
use crate::settings::Resolved;
use crate::store::{Batch, Conflicts, GiveUp, ImportSummary, Staging, Store};

/// Errors (or conflicts) printed before the rest are only counted.
pub const ERRORS_SHOWN: usize = 100;

/// Rows per batch between the reader thread and the staging database.
const BATCH: usize = 1024;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Manifest files: .csv, or .jsonl / .ndjson (one JSON object per line).
    #[arg(required = true)]
    pub manifests: Vec<PathBuf>,
    #[command(flatten)]
    pub db: super::flags::DbFlag,
    /// Validate and report only, with an estimate of requests, time and cost; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub estimate: super::flags::EstimateFlags,
    #[command(flatten)]
    pub images: super::flags::ImageFlags,
}

pub async fn run(args: ImportArgs, resolved: Resolved) -> anyhow::Result<Outcome> {
    let db = resolved.db.clone();
    let opts = crate::settings::load_options(&resolved);
    if !args.dry_run && !crate::store::is_url(&db) {
        // The fast way first (SQLite): straight into the database, for an import with no problem.
        let existed = crate::store::db_exists(&db);
        let store = Store::open(&db).await?;
        let direct = import_direct(&store, &args.manifests, &opts).await;
        let direct = match direct {
            Ok(Some((summary, images))) => store.record_local_files(&images).await.map(|()| Some(summary)),
            other => other.map(|_| None),
        };
        store.close().await;
        if let Ok(Some(summary)) = direct {
            print_summary(&summary, &db);
            return Ok(Outcome::AllDone);
        }
        if !existed {
            // Nothing was written to it: leave no database behind, as the staged import does.
            remove_db(&db);
        }
        direct?;
    }
    let (staging, images) = stage_manifests(&args.manifests, &db, &opts).await?;
    if args.dry_run {
        let summary = if crate::store::db_exists(&db) {
            let store = Store::open(&db).await?;
            let check = store.check_staged(&staging, ERRORS_SHOWN).await;
            store.close().await;
            let check = check?;
            report_conflicts(&check.conflicts)?;
            check.summary
        } else {
            ImportSummary {
                inserted: staging.len(),
                unchanged: 0,
            }
        };
        println!(
            "dry run: {} rows valid; {} would be new jobs, {} already in {} (nothing written)",
            staging.len(),
            summary.inserted,
            summary.unchanged,
            crate::store::shown(&db)
        );
        let rows = read_manifests(&args.manifests)?;
        super::estimate::print(&db, &rows, &images, &super::estimate::Opts::for_import(&resolved)).await?;
        return Ok(Outcome::AllDone);
    }
    let store = Store::open(&db).await?;
    let summary = import_staged(&store, &staging, &db).await;
    let recorded = store.record_local_files(&images).await;
    store.close().await;
    summary?;
    recorded?;
    Ok(Outcome::AllDone)
}

/// Reads every manifest row into memory, for the dry-run estimate (which needs each new row's
/// duration class). Only after `stage_manifests` has validated the same files; imports stream.
pub fn read_manifests(paths: &[PathBuf]) -> anyhow::Result<Vec<manifest::Row>> {
    let mut rows = Vec::new();
    let errors = manifest::read_files(paths, |r| rows.push(r));
    if let Some(e) = errors.first() {
        return Err(Failure::Manifest(format!("{e}")).into());
    }
    Ok(rows)
}

/// Imports the manifests straight into the database (see `store::DirectImport`) if nothing at
/// all is wrong with them. `Ok(None)`: something is (or may be); nothing was written, and the
/// staged import is to find and report it.
async fn import_direct(
    store: &Store,
    paths: &[PathBuf],
    opts: &manifest::LoadOptions,
) -> anyhow::Result<Option<(ImportSummary, Vec<LocalImage>)>> {
    let started = std::time::Instant::now();
    let mut import = store.begin_direct_import().await?;
    let (mut rx, reader) = start_reader(paths, true, opts);
    let mut gave_up = None;
    while let Some(batch) = rx.recv().await {
        match import.add(&batch).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                gave_up = Some(why);
                break;
            }
            Err(e) => {
                drop(rx);
                let _ = reader.await;
                return Err(e); // dropping `import` closes its connection: rolled back
            }
        }
    }
    drop(rx); // after giving up, the reader's sends stop
    let errors = reader.await?;
    if errors.total > 0 {
        gave_up = gave_up.or(Some(GiveUp::ManifestErrors));
    }
    if let Some(why) = gave_up {
        import.rollback().await?;
        tracing::info!(?why, elapsed = ?started.elapsed(), "direct import rolled back; importing through staging");
        return Ok(None);
    }
    tracing::info!(elapsed = ?started.elapsed(), "manifests read and inserted");
    let summary = import.commit().await?;
    tracing::info!(elapsed = ?started.elapsed(), "import committed");
    Ok(Some((summary, errors.images)))
}

/// Removes a database file and its journals.
fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// Starts the reader thread: it parses the manifests and sends valid rows in batches; it returns
/// the errors. With `stop_at_error`, no batch is sent after the first error.
fn start_reader(
    paths: &[PathBuf],
    stop_at_error: bool,
    opts: &manifest::LoadOptions,
) -> (tokio::sync::mpsc::Receiver<Batch>, tokio::task::JoinHandle<ErrorList>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Batch>(2);
    let owned = paths.to_vec();
    let opts = *opts;
    let reader = tokio::task::spawn_blocking(move || {
        let mut errors = ErrorList::default();
        let mut batch = Batch::with_capacity(BATCH);
        let mut open = true;
        let failed = std::cell::Cell::new(false);
        let mut images = Vec::new();
        manifest::scan_files_with(
            &owned,
            &opts,
            |row| {
                if !open {
                    return;
                }
                batch.push(row);
                if batch.len() == BATCH {
                    open = !(stop_at_error && failed.get())
                        && tx
                            .blocking_send(std::mem::replace(&mut batch, Batch::with_capacity(BATCH)))
                            .is_ok();
                }
            },
            |file, e| {
                failed.set(true);
                errors.push(file, e)
            },
            |img| images.push(img),
        );
        errors.images = images;
        if !batch.is_empty() && open && !(stop_at_error && failed.get()) {
            let _ = tx.blocking_send(batch);
        }
        errors
    });
    (rx, reader)
}

/// Reads, validates and stages every manifest; prints the errors and fails if there is any.
/// Touches nothing but a private staging file beside `db`.
pub async fn stage_manifests(
    paths: &[PathBuf],
    db: &Path,
    opts: &manifest::LoadOptions,
) -> anyhow::Result<(Staging, Vec<LocalImage>)> {
    let near = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut staging = Staging::create(near).await?;
    let (mut rx, reader) = start_reader(paths, false, opts);
    let started = std::time::Instant::now();
    let mut staged = Ok(());
    while let Some(batch) = rx.recv().await {
        staged = staging.add(&batch).await;
        if staged.is_err() {
            break;
        }
    }
    drop(rx); // a failed staging stops the reader's sends
    let mut errors = reader.await?;
    staged?;
    tracing::info!(rows = staging.len(), elapsed = ?started.elapsed(), "manifests read and staged");
    let (dups, dup_total) = staging.finish(ERRORS_SHOWN).await?;
    tracing::info!(elapsed = ?started.elapsed(), "staged rows indexed and checked for ids used twice");
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    errors.total += dup_total - dups.len() as u64;
    for e in dups {
        let file = names.iter().position(|n| *n == e.file).unwrap_or(0);
        errors.push(file, e);
    }
    if errors.total == 0 {
        return Ok((staging, std::mem::take(&mut errors.images)));
    }
    let message = format!(
        "{} error(s) in {}; nothing was imported or submitted",
        errors.total,
        errors
            .files
            .iter()
            .map(|&i| names[i].as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    errors.print();
    Err(Failure::Manifest(message).into())
}

/// The errors of one import: the first [`ERRORS_SHOWN`] by place, and how many in all.
#[derive(Default)]
struct ErrorList {
    /// The local image files the manifests named (checked and good), once each.
    images: Vec<LocalImage>,
    listed: Vec<(usize, ManifestError)>,
    total: u64,
    files: BTreeSet<usize>,
}

impl ErrorList {
    fn push(&mut self, file: usize, e: ManifestError) {
        self.total += 1;
        self.files.insert(file);
        self.listed.push((file, e));
        // Errors arrive nearly in order (ids used twice come after the rest): keep the first by place.
        if self.listed.len() >= 2 * ERRORS_SHOWN {
            self.trim();
        }
    }

    fn trim(&mut self) {
        self.listed.sort_by_key(|(file, e)| (*file, e.line));
        self.listed.truncate(ERRORS_SHOWN);
    }

    fn print(mut self) {
        self.trim();
        for (_, e) in &self.listed {
            eprintln!("{e}");
        }
        let more = self.total - self.listed.len() as u64;
        if more > 0 {
            eprintln!("… and {more} more errors");
        }
    }
}

pub fn report_conflicts(conflicts: &Conflicts) -> anyhow::Result<()> {
    if conflicts.total == 0 {
        return Ok(());
    }
    for c in &conflicts.listed {
        eprintln!("{c}");
    }
    let more = conflicts.total - conflicts.listed.len() as u64;
    if more > 0 {
        eprintln!("… and {more} more ids with different parameters");
    }
    Err(Failure::Manifest(format!(
        "{} id(s) already exist with different parameters; nothing was imported or submitted",
        conflicts.total
    ))
    .into())
}

/// Imports staged rows, printing a one-line summary.
pub async fn import_staged(store: &Store, staging: &Staging, db: &Path) -> anyhow::Result<ImportSummary> {
    match store.import_staged(staging, ERRORS_SHOWN).await? {
        Ok(summary) => {
            print_summary(&summary, db);
            Ok(summary)
        }
        Err(conflicts) => {
            report_conflicts(&conflicts)?;
            unreachable!("conflicts are reported as an error")
        }
    }
}

fn print_summary(summary: &ImportSummary, db: &Path) {
    println!(
        "imported {} new jobs ({} already present) into {}",
        summary.inserted,
        summary.unchanged,
        crate::store::shown(db)
    );
}
