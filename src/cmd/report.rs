//! `wanbatch report`: one self-contained HTML page about a campaign — a summary (jobs per state,
//! spend, resubmits, an inline-SVG histogram of job durations), then a card per job in manifest
//! order with its video, prompt, key parameters, state and error.
//!
//! - Self-contained: inline CSS and SVG, no script, nothing fetched but the videos, which are
//!   referenced by paths relative to the page (so OUT can be moved or served as a whole).
//! - Everything from the manifest or the API is user text: all of it goes through `escape`.
//! - Reads the database only (beside a running `run` too), paging through jobs by `seq`: memory
//!   stays flat however many jobs there are. The summary is aggregated in SQL.
//! - Written to a temporary beside the target and renamed, so a reader never sees half a page.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

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
        println!("report: no jobs in {}: nothing to show (no page written)", db.display());
        return Ok(Outcome::AllDone);
    }
    let output = args.output.clone().unwrap_or_else(|| out.join("report.html"));
    let dir = match output.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let page_dir = absolute(&dir)?;
    let out_abs = absolute(&out)?;

    let summary = Summary {
        counts: store.counts().await?,
        totals: store.totals().await?,
        histogram: store.duration_histogram(BUCKETS).await?,
        generated_at: now_ms(),
        filter: args.state.clone(),
        limit: args.limit,
    };
    let mut tmp =
        tempfile::NamedTempFile::new_in(&dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut w = std::io::BufWriter::new(tmp.as_file_mut());
    w.write_all(page_head(&summary).as_bytes())?;

    let (mut after, mut shown, mut restored, mut mismatched) = (0i64, 0u64, 0u64, 0u64);
    let (mut done_cards, mut videos_found) = (0u64, 0u64);
    let limit = args.limit.unwrap_or(u64::MAX);
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
            if done && args.write_sidecars {
                match provenance::restore_missing(&store, &out, job).await? {
                    Restore::Written => restored += 1,
                    Restore::VideoMismatch => mismatched += 1,
                    Restore::Present | Restore::NotDone => {}
                }
            }
            if done {
                done_cards += 1;
                videos_found += u64::from(video.is_file());
            }
            let files = done.then(|| {
                let sidecar = sidecar_path(&out_abs, &job.id);
                CardFiles {
                    video: link(&video),
                    video_exists: video.is_file(),
                    sidecar: sidecar.is_file().then(|| link(&sidecar)),
                }
            });
            w.write_all(card(job, files.as_ref()).as_bytes())?;
            shown += 1;
        }
    }
    w.write_all(page_tail(shown, summary.totals.jobs).as_bytes())?;
    w.flush()?;
    drop(w);
    tmp.as_file().sync_all()?;
    tmp.persist(&output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    store.close().await;
    println!("report: {} ({shown} of {} jobs)", output.display(), summary.totals.jobs);
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
        println!("sidecars restored: {restored}; videos that differ from the database (no sidecar): {mismatched}");
    }
    Ok(Outcome::AllDone)
}

/// What the summary shows.
pub struct Summary {
    pub counts: Vec<(JobState, i64)>,
    pub totals: Totals,
    pub histogram: Option<Histogram>,
    pub generated_at: i64,
    pub filter: Option<String>,
    pub limit: Option<u64>,
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

const CSS: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:0;padding:24px;background:#f5f5f4;color:#1c1917}
h1{margin:0 0 4px;font-size:22px}h2{font-size:17px;margin:24px 0 8px}
.muted{color:#78716c}
#summary{background:#fff;border-radius:8px;padding:16px 20px;box-shadow:0 1px 2px #0002}
#headline{font-size:16px;margin:4px 0 12px}
table.counts{border-collapse:collapse;margin-bottom:12px}
table.counts td,table.counts th{padding:2px 14px 2px 0;text-align:left}
table.counts td.n{text-align:right;font-variant-numeric:tabular-nums}
#jobs{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:14px}
article.job{background:#fff;border-radius:8px;overflow:hidden;box-shadow:0 1px 2px #0002;border-top:4px solid #a8a29e}
article.job video,article.job .novideo{display:block;width:100%;aspect-ratio:16/9;background:#292524}
article.job .novideo{color:#d6d3d1;display:flex;align-items:center;justify-content:center}
article.job .body{padding:10px 12px}
article.job h3{margin:0 0 6px;font-size:14px;display:flex;gap:8px;align-items:center}
.state{font-size:11px;padding:1px 6px;border-radius:9px;background:#e7e5e4}
.s-done{border-top-color:#16a34a}.s-done .state{background:#dcfce7}
.s-failed{border-top-color:#dc2626}.s-failed .state{background:#fee2e2}
.s-unknown{border-top-color:#d97706}.s-unknown .state{background:#fef3c7}
.prompt{margin:0 0 6px;white-space:pre-wrap;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:auto 1fr;gap:0 10px;margin:0 0 6px;font-size:12px}
dt{color:#78716c}dd{margin:0;overflow-wrap:anywhere}
.error{color:#b91c1c;margin:0 0 6px;overflow-wrap:anywhere}
.ids{font-size:11px;color:#78716c;margin:0;overflow-wrap:anywhere}
svg text{font:11px system-ui,sans-serif;fill:#57534e}
";

/// The page up to the first card: head, styles and the summary.
pub fn page_head(s: &Summary) -> String {
    let t = &s.totals;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>wanbatch report</title><style>{CSS}</style></head><body>\n\
         <h1>wanbatch report</h1><p class=\"muted\">generated {} by wanbatch {}</p>\n",
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
    let _ = write!(
        o,
        "</table>\n<p>Resubmits: {} after a lost submit answer, {} after an expired result or vanished video, \
         {} by <code>retry</code> after a failure. Possibly billed twice: {} jobs.</p>\n",
        t.resubmits_unknown, t.resubmits_expired, t.resubmits_failed, t.maybe_billed_twice
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
        let _ = writeln!(o, "<p class=\"muted\">Showing {}.</p>", scope.join(", "));
    }
    o.push_str("<main id=\"jobs\">\n");
    o
}

pub fn page_tail(shown: u64, total: i64) -> String {
    format!("</main>\n<p class=\"muted\" id=\"shown\">{shown} of {total} jobs shown.</p>\n</body></html>\n")
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

/// The parameters worth a glance on a card, in this order.
const KEY_PARAMS: &[&str] = &[
    "resolution",
    "aspect_ratio",
    "num_frames",
    "frames_per_second",
    "go_fast",
    "seed",
    "sample_shift",
    "image",
    "last_image",
];

/// One job's card.
pub fn card(j: &JobRecord, files: Option<&CardFiles>) -> String {
    let params: serde_json::Map<String, Value> = match serde_json::from_str(&j.params) {
        Ok(Value::Object(m)) => m,
        _ => Default::default(),
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut o = String::new();
    let st = escape(&j.state);
    let _ = write!(
        o,
        "<article class=\"job s-{st}\" id=\"job-{}\" data-state=\"{st}\">",
        escape(&j.id)
    );
    match files {
        Some(f) => {
            let _ = write!(
                o,
                "<video controls preload=\"metadata\" src=\"{}\"></video>",
                escape(&f.video)
            );
        }
        None => {
            let _ = write!(o, "<div class=\"novideo\">{st}</div>");
        }
    }
    let _ = write!(
        o,
        "<div class=\"body\"><h3><code>{}</code><span class=\"state\">{st}</span></h3>",
        escape(&j.id)
    );
    if let Some(p) = params.get("prompt") {
        let _ = write!(o, "<p class=\"prompt\">{}</p>", escape(&text(p)));
    }
    o.push_str("<dl>");
    if let Some(p) = params.get("negative_prompt").filter(|p| !text(p).is_empty()) {
        let _ = write!(o, "<dt>negative</dt><dd>{}</dd>", escape(&text(p)));
    }
    for k in KEY_PARAMS {
        if let Some(v) = params.get(*k) {
            let _ = write!(o, "<dt>{k}</dt><dd>{}</dd>", escape(&text(v)));
        }
    }
    let loras = params
        .keys()
        .filter(|k| k.ends_with("lora") || k.contains("lora_"))
        .count();
    if loras > 0 {
        let _ = write!(o, "<dt>LoRA settings</dt><dd>{loras}</dd>");
    }
    o.push_str("</dl>");
    if let Some(e) = j.error.as_deref().filter(|e| !e.is_empty()) {
        let label = if j.state == JobState::Failed.as_str() {
            "error"
        } else {
            "last trouble"
        };
        let _ = write!(o, "<p class=\"error\"><b>{label}:</b> {}</p>", escape(e));
    }
    if let Some(f) = files.filter(|f| !f.video_exists) {
        let _ = write!(o, "<p class=\"error\">video missing: {}</p>", escape(&f.video));
    }
    let mut facts = vec![format!("attempts {}", j.attempts)];
    if let Some(r) = &j.request_id {
        facts.push(format!("request <code>{}</code>", escape(r)));
    }
    if let (Some(s), Some(c)) = (j.submitted_at, j.completed_at) {
        facts.push(format!("{:.1} s at Segmind", (c - s) as f64 / 1000.0));
    }
    if let Some(c) = j.cost {
        facts.push(format!("${c:.3}"));
    }
    if let Some(b) = j.bytes {
        facts.push(human_bytes(b));
    }
    if j.maybe_billed_twice != 0 {
        facts.push("possibly billed twice".into());
    }
    facts.push(format!("from {}", escape(&j.source)));
    if let Some(s) = files.and_then(|f| f.sidecar.as_deref()) {
        facts.push(format!("<a href=\"{}\">provenance</a>", escape(s)));
    }
    let _ = writeln!(o, "<p class=\"ids\">{}</p></div></article>", facts.join(" · "));
    o
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
