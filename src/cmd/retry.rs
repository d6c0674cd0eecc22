//! `wanbatch retry`: put chosen jobs back to `pending`, so the next `run` submits them again.
//! Every such resubmit is counted by its cause. A job at Segmind (running) cannot be withdrawn:
//! the API has no cancel. A cancelled job comes back by id (it was never submitted, so nothing
//! is counted).
//!
//! `--rejected` takes again the done jobs a reviewer rejected (`wanbatch review apply`):
//! `done → pending`, counted in `resubmits_rejected` (and in the money figures, at the price of
//! a video). The earlier take is never lost: before the job moves, its video `OUT/ID.mp4` is
//! renamed `OUT/ID.rejected-N.mp4` (N: the rejected take's number, 1 for the first video) and its
//! sidecar `OUT/ID.json` becomes `OUT/ID.rejected-N.json` with a `review` object saying it was
//! rejected and why. No file is ever overwritten (a name in use moves N on). The decision and
//! its note are cleared in the database — they were about the earlier take, and stay in its
//! sidecar — so the new take is reviewed afresh. Files first, then the database: a stop in
//! between leaves the job done and rejected, and running `retry --rejected` again finishes it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

use crate::clock::rfc3339;
use crate::cmd::run::RunLock;
use crate::exit::{Failure, Outcome};
use crate::settings::Resolved;
use crate::store::{Rejected, RetryWhich, Store};

#[derive(clap::Args, Debug)]
pub struct RetryArgs {
    #[command(flatten)]
    pub db: super::flags::DbFlag,
    /// Jobs held because their submit answer was lost (`--on-unknown hold`). They may already
    /// exist (and be billed) at Segmind: they are flagged as possibly billed twice.
    #[arg(long)]
    pub unknown: bool,
    /// Jobs that ended failed.
    #[arg(long)]
    pub failed: bool,
    /// Failed jobs whose video was made (and paid for) but never fetched: COMPLETED at Segmind,
    /// then the download gave up (the result expired or its host kept failing). Counted as
    /// expired resubmits. (Results that expire while polling are resubmitted by `run` itself.)
    #[arg(long)]
    pub expired: bool,
    /// Done jobs whose video a reviewer rejected (`wanbatch review apply`): made again, counted
    /// as rejected resubmits (billed). The earlier video is kept as OUT/ID.rejected-N.mp4, its
    /// sidecar as OUT/ID.rejected-N.json.
    #[arg(long)]
    pub rejected: bool,
    /// These job ids (comma-separated), if they are failed, unknown or cancelled.
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<String>,
}

pub async fn run(args: RetryArgs, resolved: Resolved) -> anyhow::Result<Outcome> {
    let db = resolved.db.clone();
    if !args.unknown && !args.failed && !args.expired && !args.rejected && args.ids.is_empty() {
        return Err(Failure::Usage(
            "say which jobs: --unknown, --failed, --expired, --rejected and/or --ids ID,ID".into(),
        )
        .into());
    }
    // The earlier take must never be lost: setting it aside is done in a folder; in a bucket
    // (`--out s3://…`) it is not built yet, so nothing is changed.
    let out = crate::settings::out_of(&resolved);
    if args.rejected && crate::output::looks_like_url(&out.to_string_lossy()) {
        return Err(Failure::Usage(format!(
            "--rejected sets each rejected take aside (ID.rejected-N.mp4) before it is made again, which \
             is not supported yet for a bucket ({}): nothing was changed",
            out.display()
        ))
        .into());
    }
    let store = Store::open_existing(&db).await?;
    let _lock = RunLock::acquire(&db)?;
    let mut total = 0;
    if args.unknown {
        total += store.retry(RetryWhich::Unknown).await?;
    }
    if args.expired {
        total += store.retry(RetryWhich::Expired).await?;
    }
    if args.failed {
        total += store.retry(RetryWhich::Failed).await?;
    }
    if args.rejected {
        total += retake_rejected(&store, &out).await?;
    }
    for id in &args.ids {
        let n = store.retry(RetryWhich::Id(id)).await?;
        if n == 0 {
            eprintln!("{id}: not retried (no such job, or it is not failed, unknown or cancelled)");
        }
        total += n;
    }
    store.close().await;
    if total == 0 {
        println!("nothing to retry in {}: no job matched", crate::store::shown(&db));
        return Ok(Outcome::AllDone);
    }
    println!(
        "{total} job(s) will be submitted again on the next `wanbatch run --db {}`",
        crate::store::shown(&db)
    );
    Ok(Outcome::AllDone)
}

/// Puts every rejected done job back to `pending`, each once its earlier take is set aside.
/// Returns how many moved.
async fn retake_rejected(store: &Store, out: &Path) -> anyhow::Result<u64> {
    let mut moved = 0;
    for r in store.rejected_done().await? {
        let kept = set_aside(&r, out)?;
        if !store.retake_rejected(r.seq).await? {
            continue;
        }
        moved += 1;
        match kept {
            Some(path) => println!("{}: rejected take kept as {}", r.id, path.display()),
            None => println!("{}: rejected (its video was not found to keep aside)", r.id),
        }
    }
    Ok(moved)
}

/// Where a job's video is: where the run recorded writing it, else `OUT/ID.mp4`.
fn video_of(r: &Rejected, out: &Path) -> PathBuf {
    let recorded = r.output_path.as_deref().map(PathBuf::from);
    match recorded {
        Some(p) if p.is_file() => p,
        _ => crate::engine::download::final_path(out, &r.id),
    }
}

/// Renames the rejected take's video and sidecar to `ID.rejected-N.*` beside them (the sidecar
/// gains a `review` object). Returns the video's new path, if there was a video.
fn set_aside(r: &Rejected, out: &Path) -> anyhow::Result<Option<PathBuf>> {
    let video = video_of(r, out);
    let dir = video.parent().map(Path::to_path_buf).unwrap_or_default();
    let sidecar = crate::provenance::sidecar_path(&dir, &r.id);
    let (has_video, has_sidecar) = (video.is_file(), sidecar.is_file());
    if !has_video && !has_sidecar {
        return Ok(None);
    }
    // The rejected take's number; moved on past any name in use, so nothing is overwritten.
    let mut take = r.resubmits_rejected + 1;
    let named = |take: i64, ext: &str| dir.join(format!("{}.rejected-{take}.{ext}", r.id));
    while (has_video && named(take, "mp4").exists()) || (has_sidecar && named(take, "json").exists()) {
        take += 1;
    }
    if has_sidecar {
        let to = named(take, "json");
        let text = std::fs::read(&sidecar).with_context(|| format!("cannot read {}", sidecar.display()))?;
        match serde_json::from_slice::<Value>(&text) {
            Ok(Value::Object(mut map)) => {
                map.insert(
                    "review".into(),
                    json!({
                        "decision": "reject",
                        "note": r.review_note,
                        "reviewed_at": r.reviewed_at.map(rfc3339),
                        "take": take,
                        "file": format!("{}.rejected-{take}.mp4", r.id),
                    }),
                );
                let mut body = serde_json::to_vec_pretty(&Value::Object(map))?;
                body.push(b'\n');
                write_new(&to, &body)?;
                std::fs::remove_file(&sidecar).with_context(|| format!("cannot remove {}", sidecar.display()))?;
            }
            // Not the JSON wanbatch wrote (edited by hand?): kept as it is, under the new name.
            _ => std::fs::rename(&sidecar, &to)
                .with_context(|| format!("cannot rename {} to {}", sidecar.display(), to.display()))?,
        }
    }
    if !has_video {
        return Ok(None);
    }
    let to = named(take, "mp4");
    std::fs::rename(&video, &to).with_context(|| format!("cannot rename {} to {}", video.display(), to.display()))?;
    Ok(Some(to))
}

/// Writes a new file durably (never over an existing one).
fn write_new(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(body)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
