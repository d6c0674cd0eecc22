//! `wanbatch report`: one self-contained HTML page to review a campaign — a summary (jobs per
//! state, spend, resubmits, flagged videos, review decisions, an inline-SVG histogram of job
//! durations), then a card per job in manifest order: the input image (and last image) beside
//! the video (its first frame shown at load, playing on hover or click), the prompt, key
//! parameters, the video's own metadata and any flag, state and error.
//!
//! The page is a review tool: filters by state, by flag (failed, video differs from its request,
//! possibly billed twice) and by review decision; keep / reject buttons and a note on each video,
//! kept in the browser (`localStorage`, keyed by the campaign) and pre-filled from the database's
//! `review` column; "Download decisions (CSV)" saves `decisions.csv` (`id,decision,note`), which
//! `wanbatch review apply decisions.csv` records.
//!
//! - Self-contained: inline CSS, SVG and script; a Content-Security-Policy allows only that script
//!   (by its hash) and fetches nothing but the videos and the input images. Videos (and local
//!   input images) are referenced by paths relative to the page, so OUT can be moved or served.
//! - Big campaigns: the jobs are embedded once as JSON (`<script type="application/json"
//!   id="jobs-data">`) and the page's script renders cards 48 at a time, more as the reader
//!   scrolls; a filter re-renders from the array. 10,000 jobs open in well under 2 s
//!   (`wanbatch bench-report`, docs/benchmarks.md).
//! - Everything from the manifest or the API is hostile text: HTML goes through `escape`; the JSON
//!   has every `<` written `\u003c` (no `</script>` can end it early); the script builds cards with
//!   `textContent` and attributes only, never markup from data.
//! - Reads the database only (beside a running `run` too), paging through jobs by `seq`: memory
//!   stays flat however many jobs there are. The summary is aggregated in SQL and one extra pass.
//! - Written to a temporary beside the target and renamed, so a reader never sees half a page.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::clock::rfc3339;
use crate::engine::download::final_path;
use crate::exit::{Failure, Outcome};
use crate::provenance::{self, sidecar_path, Restore};
use crate::settings::Resolved;
use crate::state::JobState;
use crate::store::{now_ms, Histogram, JobRecord, Store, Totals};

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub db: super::flags::DbFlag,
    #[command(flatten)]
    pub out: super::flags::OutFlag,
    /// Write the page here (default OUT/report.html). Video paths are made relative to it.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Cards only for jobs in this state (the summary always covers every job).
    #[arg(long)]
    pub state: Option<String>,
    /// At most this many cards (the summary always covers every job).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Also write the provenance sidecar (OUT/ID.json) of each listed done job that lacks one
    /// (databases from before sidecars existed, deleted files) — only if the video on disk still
    /// has the size and SHA-256 the database recorded.
    #[arg(long)]
    pub write_sidecars: bool,
}

/// Jobs read per page.
const PAGE: i64 = 500;
/// Histogram buckets.
const BUCKETS: i64 = 20;

/// What a report run wrote (for the benchmark and tests).
#[derive(Debug, Clone)]
pub struct Written {
    pub output: PathBuf,
    pub shown: u64,
    pub total: i64,
}

pub async fn run(args: ReportArgs, resolved: Resolved) -> anyhow::Result<Outcome> {
    let db = resolved.db.clone();
    let out = crate::settings::out_of(&resolved);
    let state = match &args.state {
        Some(s) => Some(s.parse::<JobState>().map_err(Failure::Usage)?),
        None => None,
    };
    let store = Store::open_existing(&db).await?;
    let total = store.totals().await?.jobs;
    if total == 0 {
        store.close().await;
        println!(
            "report: no jobs in {}: nothing to show (no page written)",
            crate::store::shown(&db)
        );
        return Ok(Outcome::AllDone);
    }
    // `--out s3://…`: the page goes up beside the videos (made in a temporary folder first).
    let bucket =
        crate::output::BucketUrl::parse(&out.to_string_lossy()).map_err(|e| Failure::Usage(format!("--out {e}")))?;
    if bucket.is_some() && args.write_sidecars {
        store.close().await;
        return Err(Failure::Usage(
            "--write-sidecars restores sidecars in a folder; a bucket's videos get theirs as they are uploaded".into(),
        )
        .into());
    }
    let staging = tempfile::tempdir()?;
    let output = match (&args.output, &bucket) {
        (Some(o), _) => o.clone(),
        (None, Some(_)) => staging.path().join("report.html"),
        (None, None) => out.join("report.html"),
    };
    let opts = WriteOptions {
        state,
        limit: args.limit,
        write_sidecars: args.write_sidecars,
        in_bucket: bucket.is_some(),
    };
    let result = write(&store, &db, &out, &output, &opts).await;
    store.close().await;
    let (written, stats) = result?;
    let shown_at = match (&args.output, &bucket) {
        (None, Some(url)) => {
            let patience = resolved
                .merged
                .unreachable_after
                .map_or(crate::settings::DEFAULT_UNREACHABLE_AFTER, |s| s.0);
            let b = crate::output::Bucket::open(url, patience)?;
            let page = std::fs::read(&output)?;
            b.put("report.html", page)
                .await
                .map_err(crate::output::StoreError::into_failure)?;
            url.url_of("report.html")
        }
        _ => written.output.display().to_string(),
    };
    println!("report: {shown_at} ({} of {} jobs)", written.shown, written.total);
    if bucket.is_some() {
        return Ok(Outcome::AllDone);
    }
    let (done_cards, videos_found) = (stats.done_cards, stats.videos_found);
    if done_cards > 0 && videos_found == 0 {
        println!(
            "report: none of the {done_cards} done jobs' videos is in {}: is that the folder the campaign wrote \
             to? (--out, or out in wanbatch.toml)",
            out.display()
        );
    } else if videos_found < done_cards {
        println!(
            "report: {} of the {done_cards} done jobs' videos are missing from {}",
            done_cards - videos_found,
            out.display()
        );
    }
    if args.write_sidecars {
        println!(
            "sidecars restored: {}; videos that differ from the database (no sidecar): {}",
            stats.restored, stats.mismatched
        );
    }
    Ok(Outcome::AllDone)
}

/// Which cards, and whether to restore sidecars on the way.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub state: Option<JobState>,
    pub limit: Option<u64>,
    pub write_sidecars: bool,
    /// The videos are in a bucket (`--out s3://…`) beside the page: linked by name, and a done
    /// job's video counts as present (it was completed there, whole, before the job was done).
    pub in_bucket: bool,
}

/// What writing the cards found.
#[derive(Debug, Default)]
pub struct WriteStats {
    pub done_cards: u64,
    pub videos_found: u64,
    pub restored: u64,
    pub mismatched: u64,
}

/// Writes the page for the campaign in `store` (database `db`, videos in `out`) to `output`.
pub async fn write(
    store: &Store,
    db: &Path,
    out: &Path,
    output: &Path,
    opts: &WriteOptions,
) -> anyhow::Result<(Written, WriteStats)> {
    let state = opts.state;
    let dir = match output.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let page_dir = absolute(&dir)?;
    let out_abs = absolute(out)?;

    let summary = Summary {
        counts: store.counts().await?,
        totals: store.totals().await?,
        histogram: store.duration_histogram(BUCKETS).await?,
        flags: flag_counts(store).await?,
        generated_at: now_ms(),
        filter: state.map(|s| s.as_str().to_string()),
        limit: opts.limit,
        campaign: campaign_key(&absolute(db)?),
    };
    let mut tmp =
        tempfile::NamedTempFile::new_in(&dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
    w.write_all(page_head(&summary).as_bytes())?;
    w.write_all(b"<script type=\"application/json\" id=\"jobs-data\">[")?;

    let mut stats = WriteStats::default();
    let (mut after, mut shown) = (0i64, 0u64);
    let limit = opts.limit.unwrap_or(u64::MAX);
    'pages: loop {
        let page = store.jobs_after(after, state, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for job in &page {
            if shown >= limit {
                break 'pages;
            }
            let video = final_path(&out_abs, &job.id);
            let link = |p: &Path| href(&relative(&page_dir, p));
            let done = job.state == JobState::Done.as_str();
            if done && opts.write_sidecars {
                match provenance::restore_missing(store, out, job).await? {
                    Restore::Written => stats.restored += 1,
                    Restore::VideoMismatch => stats.mismatched += 1,
                    Restore::Present | Restore::NotDone => {}
                }
            }
            let files = done.then(|| {
                if opts.in_bucket {
                    let named = |ext: &str| href(Path::new(&format!("{}.{ext}", job.id)));
                    return CardFiles {
                        video: named("mp4"),
                        video_exists: true,
                        sidecar: Some(named("json")),
                    };
                }
                let sidecar = sidecar_path(&out_abs, &job.id);
                CardFiles {
                    video: link(&video),
                    video_exists: video.is_file(),
                    sidecar: sidecar.is_file().then(|| link(&sidecar)),
                }
            });
            if let Some(f) = &files {
                stats.done_cards += 1;
                stats.videos_found += u64::from(f.video_exists);
            }
            if shown > 0 {
                w.write_all(b",\n")?;
            }
            w.write_all(card_json(job, files.as_ref(), &page_dir).as_bytes())?;
            shown += 1;
        }
    }
    w.write_all(b"]</script>\n")?;
    w.write_all(page_tail(shown, summary.totals.jobs).as_bytes())?;
    w.flush()?;
    drop(w);
    tmp.as_file().sync_all()?;
    tmp.persist(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    let written = Written {
        output: output.to_path_buf(),
        shown,
        total: summary.totals.jobs,
    };
    Ok((written, stats))
}

/// Flags and review decisions over every job (one pass by pages: no SQL of our own here).
async fn flag_counts(store: &Store) -> anyhow::Result<FlagCounts> {
    let mut f = FlagCounts::default();
    let mut after = 0i64;
    loop {
        let page = store.jobs_after(after, None, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for j in &page {
            f.mismatched += i64::from(j.video_mismatch.is_some());
            match j.review.as_deref() {
                Some("keep") => f.keep += 1,
                Some("reject") => f.reject += 1,
                _ => {}
            }
        }
    }
    Ok(f)
}

/// The key under which the page keeps its decisions in the browser: a hash of the database's
/// absolute path (pages of different campaigns opened from disk share one origin).
pub fn campaign_key(db: &Path) -> String {
    let digest = Sha256::digest(db.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..8])
}

/// Campaign-wide counts of flags and decisions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlagCounts {
    /// Videos that differ from their request (`video_mismatch` set).
    pub mismatched: i64,
    pub keep: i64,
    pub reject: i64,
}

/// What the summary shows.
pub struct Summary {
    pub counts: Vec<(JobState, i64)>,
    pub totals: Totals,
    pub histogram: Option<Histogram>,
    pub flags: FlagCounts,
    pub generated_at: i64,
    pub filter: Option<String>,
    pub limit: Option<u64>,
    /// See `campaign_key`.
    pub campaign: String,
}

/// Links of a done job's files, relative to the page.
pub struct CardFiles {
    pub video: String,
    pub video_exists: bool,
    pub sidecar: Option<String>,
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A relative path as a URL path: segments joined by `/`, every byte outside the unreserved
/// set percent-encoded (spaces, `#`, `?`, `%` in folder names must not break the link).
pub fn href(rel: &Path) -> String {
    let mut o = String::new();
    for (i, c) in rel.components().enumerate() {
        if i > 0 {
            o.push('/');
        }
        let seg = c.as_os_str().to_string_lossy();
        for b in seg.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                o.push(b as char);
            } else {
                let _ = write!(o, "%{b:02X}");
            }
        }
    }
    o
}

/// `path` made absolute against the current folder, `.` and `..` resolved lexically.
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let mut o = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                o.pop();
            }
            c => o.push(c),
        }
    }
    Ok(o)
}

/// The path from folder `from` to `to` (both absolute and normalised).
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let (a, b): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut o = PathBuf::new();
    for _ in common..a.len() {
        o.push("..");
    }
    for c in &b[common..] {
        o.push(c);
    }
    o
}

/// The page's styles.
const CSS: &str = include_str!("report/page.css");
/// The page's script: renders the cards from `#jobs-data`, filters, records decisions.
pub const SCRIPT: &str = include_str!("report/page.js");

/// The Content-Security-Policy: our one script (by hash), inline styles, and media from files
/// or the web; nothing else is fetched, no form, no frame.
fn csp() -> String {
    let hash = base64(&Sha256::digest(SCRIPT.as_bytes()));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; img-src * file: data:; \
         media-src * file: blob:; base-uri 'none'; form-action 'none'"
    )
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                o.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// The page up to the job data: head, styles, the summary, the toolbar.
pub fn page_head(s: &Summary) -> String {
    let t = &s.totals;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>wanbatch report</title><style>{CSS}</style></head><body data-campaign=\"{}\">\n\
         <h1>wanbatch report</h1><p class=\"muted\">generated {} by wanbatch {}</p>\n",
        escape(&csp()),
        escape(&s.campaign),
        rfc3339(s.generated_at),
        env!("CARGO_PKG_VERSION")
    );
    let by_state: Vec<String> = s
        .counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(st, n)| format!("{n} {st}"))
        .collect();
    let resubmits = t.resubmits_unknown + t.resubmits_expired + t.resubmits_failed;
    let spend = if t.priced_jobs > 0 {
        format!("${:.2} spent (reported for {} jobs)", t.spent, t.priced_jobs)
    } else {
        "no cost reported".to_string()
    };
    let _ = write!(
        o,
        "<section id=\"summary\" data-jobs=\"{}\"><h2>Summary</h2>\n<p id=\"headline\"><b>{} jobs</b>: {} · {} · \
         {} submit attempts · {} resubmits · {}</p>\n",
        t.jobs,
        t.jobs,
        escape(&by_state.join(", ")),
        escape(&spend),
        t.attempts,
        resubmits,
        human_bytes(t.bytes),
    );
    o.push_str("<table class=\"counts\"><tr><th>state</th><th>jobs</th></tr>");
    for (st, n) in &s.counts {
        let _ = write!(o, "<tr class=\"s-{st}\"><td>{st}</td><td class=\"n\">{n}</td></tr>");
    }
    let f = &s.flags;
    let _ = write!(
        o,
        "</table>\n<p>Resubmits: {} after a lost submit answer, {} after an expired result or vanished video, \
         {} by <code>retry</code> after a failure. Possibly billed twice: {} jobs.</p>\n\
         <p id=\"flags\">Videos that differ from their request: <b id=\"n-mismatched\">{}</b>. \
         Reviewed: <b id=\"n-keep\">{}</b> keep, <b id=\"n-reject\">{}</b> reject (recorded in the database).</p>\n",
        t.resubmits_unknown,
        t.resubmits_expired,
        t.resubmits_failed,
        t.maybe_billed_twice,
        f.mismatched,
        f.keep,
        f.reject
    );
    match &s.histogram {
        Some(h) => o.push_str(&histogram_svg(h)),
        None => o.push_str("<p class=\"muted\">No job has finished yet: no durations to show.</p>\n"),
    }
    o.push_str("</section>\n<h2>Jobs</h2>\n");
    let mut scope = Vec::new();
    if let Some(f) = &s.filter {
        scope.push(format!("only jobs in state {}", escape(f)));
    }
    if let Some(l) = s.limit {
        scope.push(format!("at most {l} cards"));
    }
    if !scope.is_empty() {
        let _ = writeln!(o, "<p class=\"muted\">This page holds {}.</p>", scope.join(", "));
    }
    o.push_str(
        "<noscript><p class=\"error\">The job cards, filters and review need JavaScript, which is off: \
         the summary above is complete, and <code>wanbatch export</code> lists every job.</p></noscript>\n\
         <div id=\"toolbar\" hidden>\
         <label>state <select id=\"f-state\"><option value=\"\">all</option></select></label> \
         <label>flag <select id=\"f-flag\"><option value=\"\">any</option>\
         <option value=\"failed\">failed</option><option value=\"mismatched\">video differs from request</option>\
         <option value=\"billed_twice\">possibly billed twice</option></select></label> \
         <label>review <select id=\"f-review\"><option value=\"\">any</option>\
         <option value=\"undecided\">undecided</option><option value=\"keep\">keep</option>\
         <option value=\"reject\">reject</option></select></label> \
         <span id=\"matching\" class=\"muted\"></span>\
         <span class=\"spacer\"></span><span id=\"decided\" class=\"muted\"></span> \
         <button type=\"button\" id=\"download\">Download decisions (CSV)</button></div>\n\
         <main id=\"jobs\"></main>\n<div id=\"more\"><button type=\"button\" id=\"more-button\" hidden>Show more</button></div>\n",
    );
    o
}

/// After the job data: the count line and the script.
pub fn page_tail(shown: u64, total: i64) -> String {
    format!(
        "<p class=\"muted\" id=\"shown\" data-shown=\"{shown}\">This page holds {shown} of {total} jobs.</p>\n\
         <script>{SCRIPT}</script>\n</body></html>\n"
    )
}

/// An inline SVG bar chart of job durations (seconds).
pub fn histogram_svg(h: &Histogram) -> String {
    let (w, ht, left, bottom, top) = (640.0, 180.0, 36.0, 22.0, 8.0);
    let n = h.counts.len().max(1) as f64;
    let peak = h.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bar_w = (w - left) / n;
    let total: i64 = h.counts.iter().sum();
    // As many decimals as the bucket width needs: "41 s" for real jobs, "0.412 s" for the fake.
    let decimals = (3 - (h.width_ms.max(1) as f64).log10().floor() as i64).clamp(0, 3) as usize;
    let secs = |ms: i64| format!("{:.decimals$}", ms as f64 / 1000.0);
    let mut o = String::new();
    let _ = write!(
        o,
        "<figure id=\"durations\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" \
         viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"Histogram of {total} job durations\">\
         <line x1=\"{left}\" y1=\"{y0}\" x2=\"{w}\" y2=\"{y0}\" stroke=\"#a8a29e\"/>\
         <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{peak}</text><text x=\"{lx}\" y=\"{y0}\" text-anchor=\"end\">0</text>",
        y0 = ht - bottom,
        lx = left - 4.0,
        ty = top + 10.0,
    );
    for (i, &c) in h.counts.iter().enumerate() {
        let bh = (ht - bottom - top) * c as f64 / peak;
        let x = left + i as f64 * bar_w;
        let lo = h.min_ms + i as i64 * h.width_ms;
        let _ = write!(
            o,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#0d9488\">\
             <title>{}–{} s: {c} jobs</title></rect>",
            x + 1.0,
            ht - bottom - bh,
            (bar_w - 2.0).max(1.0),
            secs(lo),
            secs(lo + h.width_ms),
        );
    }
    for (i, anchor) in [(0, "start"), (h.counts.len() / 2, "middle"), (h.counts.len(), "end")] {
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{} s</text>",
            left + i as f64 * bar_w,
            ht - 6.0,
            secs(h.min_ms + i as i64 * h.width_ms)
        );
    }
    let _ = writeln!(
        o,
        "</svg><figcaption>Job durations (accepted → completed at Segmind), {total} jobs: min {} s, mean {} s, \
         max {} s.</figcaption></figure>",
        secs(h.min_ms),
        secs(h.mean_ms.round() as i64),
        secs(h.max_ms)
    );
    o
}

/// The parameters worth a glance on a card, in this order (the images are shown as pictures).
const KEY_PARAMS: &[&str] = &[
    "resolution",
    "aspect_ratio",
    "num_frames",
    "frames_per_second",
    "go_fast",
    "seed",
    "sample_shift",
];

/// One job as the page's script reads it (absent fields are left out).
#[derive(Serialize, Default, Debug)]
pub struct CardData {
    pub id: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative: Option<String>,
    /// Key parameters as (name, text) pairs.
    pub params: Vec<(String, String)>,
    #[serde(skip_serializing_if = "is_zero")]
    pub loras: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Picture>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_image: Option<Picture>,
    /// The video's path relative to the page (done jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub video_missing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// "error" for a failed job, "last trouble" otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_label: Option<&'static str>,
    /// The short facts line: attempts, request id, time at Segmind, cost, size, source.
    pub facts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub billed_twice: bool,
    /// The video's own metadata as a line ("832×480 · 81 frames · 16 fps · 5.06 s · avc1").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// An input image: `src` to show it (a web URL, or a local file's path relative to the page),
/// `text` as given in the manifest.
#[derive(Serialize, Debug, PartialEq)]
pub struct Picture {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    pub text: String,
}

/// An image parameter as the page can show it: http(s) URLs as they are, `file://` URLs of local
/// images as paths relative to the page; anything else only as text.
pub fn picture(value: &str, page_dir: &Path) -> Picture {
    let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    let src = if lower.starts_with("https://") || lower.starts_with("http://") {
        Some(value.to_string())
    } else {
        crate::manifest::local::file_of(value).map(|p| href(&relative(page_dir, &p)))
    };
    Picture {
        src,
        text: value.to_string(),
    }
}

/// One job's data for the page, as JSON safe inside a `<script>` element.
pub fn card_json(j: &JobRecord, files: Option<&CardFiles>, page_dir: &Path) -> String {
    let json = serde_json::to_string(&card_data(j, files, page_dir)).unwrap_or_else(|_| "null".into());
    script_safe(&json)
}

/// JSON with every `<` written `\u003c`: no `</script>` or `<!--` can appear in it.
pub fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
}

pub fn card_data(j: &JobRecord, files: Option<&CardFiles>, page_dir: &Path) -> CardData {
    let params: serde_json::Map<String, Value> = match serde_json::from_str(&j.params) {
        Ok(Value::Object(m)) => m,
        _ => Default::default(),
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut c = CardData {
        id: j.id.clone(),
        state: j.state.clone(),
        prompt: params.get("prompt").map(text),
        negative: params.get("negative_prompt").map(text).filter(|p| !p.is_empty()),
        params: KEY_PARAMS
            .iter()
            .filter_map(|k| params.get(*k).map(|v| (k.to_string(), text(v))))
            .collect(),
        loras: params
            .keys()
            .filter(|k| k.ends_with("lora") || k.contains("lora_"))
            .count(),
        image: params.get("image").map(|v| picture(&text(v), page_dir)),
        last_image: params
            .get("last_image")
            .map(text)
            .filter(|v| !v.is_empty())
            .map(|v| picture(&v, page_dir)),
        billed_twice: j.maybe_billed_twice != 0,
        mismatch: j.video_mismatch.clone(),
        review: j.review.clone().filter(|r| r == "keep" || r == "reject"),
        note: j.review_note.clone().filter(|n| !n.is_empty()),
        request_id: j.request_id.clone(),
        duration: j.video_duration,
        ..CardData::default()
    };
    if let Some(f) = files {
        c.video = Some(f.video.clone());
        c.video_missing = !f.video_exists;
        c.sidecar = f.sidecar.clone();
    }
    if let Some(e) = j.error.as_deref().filter(|e| !e.is_empty()) {
        c.error = Some(e.to_string());
        c.error_label = Some(if j.state == JobState::Failed.as_str() {
            "error"
        } else {
            "last trouble"
        });
    }
    let mut meta = Vec::new();
    if let (Some(w), Some(h)) = (j.video_width, j.video_height) {
        meta.push(format!("{w}×{h}"));
    }
    if let Some(n) = j.video_frames {
        meta.push(format!("{n} frames"));
    }
    if let Some(f) = j.video_fps {
        meta.push(format!("{} fps", trim_float(f, 2)));
    }
    if let Some(d) = j.video_duration {
        meta.push(format!("{} s", trim_float(d, 2)));
    }
    if let Some(codec) = &j.video_codec {
        meta.push(codec.clone());
    }
    c.meta = (!meta.is_empty()).then(|| meta.join(" · "));
    let f = &mut c.facts;
    f.push(format!("attempts {}", j.attempts));
    if let (Some(s), Some(done)) = (j.submitted_at, j.completed_at) {
        f.push(format!("{:.1} s at Segmind", (done - s) as f64 / 1000.0));
    }
    if let Some(cost) = j.cost {
        f.push(format!("${cost:.3}"));
    }
    if let Some(b) = j.bytes {
        f.push(human_bytes(b));
    }
    f.push(format!("from {}", j.source));
    c
}

/// `x` with at most `decimals` decimals and no trailing zeros ("16", "23.98").
fn trim_float(x: f64, decimals: usize) -> String {
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn human_bytes(b: i64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests;
