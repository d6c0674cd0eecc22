//! Dry-run estimates (`run --dry-run`, `import --dry-run`): how many jobs there are to do, the
//! API requests and wall-clock time they should take at `--rpm`, and their cost at `--price`.
//! Reads the database (if there is one) and writes nothing; submits nothing.
//!
//! The figures:
//! - **jobs to do**: manifest rows not yet in the database, plus the database's unfinished jobs.
//!   To submit: new, `pending`, `submitting` (an interrupted submit) and — under the default
//!   `--on-unknown resubmit` — `unknown`; `running` jobs only need polling, `downloading` ones no
//!   API request at all.
//! - **requests per video**: what this database's finished videos cost (submit attempts and
//!   polls, over its `done` jobs) once there are at least [`MIN_LEARNED`] of them; before that the
//!   engine's prior, 2.3 (a submit and ~1.3 well-timed polls).
//! - **wall-clock**: the requests at `--rpm`, plus one video's duration for the last one to
//!   finish (so never less than a video takes); with a fixed `--concurrency` no less than the
//!   waves of that many videos take either. Durations are the learned ones per parameter class
//!   (the `durations` table the poll schedule keeps), else the prior (~54 s).
//! - **cost**: videos to submit × `--price`, when given (jobs already at Segmind are paid).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::cmd::run::RunArgs;
use crate::exit::Outcome;
use crate::manifest::{LocalImage, Params, Row};
use crate::settings::{Resolved, RunSettings};
use crate::store::Store;

/// The engine's prior cost of a video in API requests (see `engine::SUBMIT_COST`).
pub const PRIOR_REQUESTS_PER_VIDEO: f64 = 2.3;
/// The prior duration of a video, before any is learned (the seed page's ~54 s).
pub const PRIOR_DURATION_MS: f64 = 54_460.0;
/// Finished videos needed before their measured cost replaces the prior.
pub const MIN_LEARNED: i64 = 5;

#[derive(Debug, Clone)]
pub struct Opts {
    pub rpm: u32,
    pub price: Option<f64>,
    pub concurrency: Option<u32>,
    /// `unknown` jobs will be submitted again (`--on-unknown resubmit`).
    pub resubmit_unknown: bool,
    pub prior_duration_ms: f64,
}

impl Opts {
    pub fn for_import(r: &Resolved) -> Opts {
        Opts {
            rpm: r.merged.rpm.unwrap_or(crate::settings::DEFAULT_RPM),
            price: r.merged.price,
            concurrency: None,
            resubmit_unknown: true,
            prior_duration_ms: PRIOR_DURATION_MS,
        }
    }
}

/// What the estimate is computed from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Work {
    pub new_jobs: u64,
    /// Unfinished jobs in the database, by what they still need.
    pub resubmits: u64,
    pub running: u64,
    pub downloading: u64,
    /// Requests per finished video measured in this database, and over how many videos.
    pub learned_requests: Option<(f64, i64)>,
    /// Expected duration (ms) of each video to submit or at Segmind, and whether it was learned.
    pub durations_ms: Vec<f64>,
    pub learned_durations: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub jobs: u64,
    pub submits: u64,
    pub requests_per_video: f64,
    pub requests: u64,
    pub wall_secs: f64,
    pub cost: Option<f64>,
}

/// The arithmetic, kept apart from the database so it can be checked by hand.
pub fn estimate(w: &Work, o: &Opts) -> Estimate {
    let submits = w.new_jobs + w.resubmits;
    let r = w.learned_requests.map_or(PRIOR_REQUESTS_PER_VIDEO, |(r, _)| r);
    let requests = (submits as f64 * r + w.running as f64 * (r - 1.0)).ceil() as u64;
    let longest = w.durations_ms.iter().copied().fold(0.0, f64::max) / 1000.0;
    let mean = if w.durations_ms.is_empty() {
        0.0
    } else {
        w.durations_ms.iter().sum::<f64>() / w.durations_ms.len() as f64 / 1000.0
    };
    let by_rate = requests as f64 * 60.0 / f64::from(o.rpm) + longest;
    let by_concurrency = o
        .concurrency
        .map_or(0.0, |c| (submits as f64 / f64::from(c)).ceil() * mean);
    Estimate {
        jobs: submits + w.running + w.downloading,
        submits,
        requests_per_video: r,
        requests,
        wall_secs: by_rate.max(by_concurrency),
        cost: o.price.map(|p| p * submits as f64),
    }
}

/// Gathers the work from the manifest rows and the database (if it exists; never created).
pub async fn gather(db: &Path, rows: &[Row], o: &Opts) -> anyhow::Result<Work> {
    let mut w = Work::default();
    let mut classes: Vec<String> = Vec::new();
    let class_of = |params: &str| {
        Params::from_json(params)
            .map(|p| p.duration_class())
            .unwrap_or_default()
    };
    let mut learned: HashMap<String, Option<f64>> = HashMap::new();
    if crate::store::db_exists(db) {
        let store = Store::open(db).await?;
        let jobs = store.jobs(None).await?;
        let known: HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        for row in rows.iter().filter(|r| !known.contains(r.id.as_str())) {
            w.new_jobs += 1;
            classes.push(row.params.duration_class());
        }
        let (mut done, mut spent) = (0i64, 0i64);
        for j in &jobs {
            match j.state.as_str() {
                "pending" | "submitting" => w.resubmits += 1,
                "unknown" if o.resubmit_unknown => w.resubmits += 1,
                "running" => w.running += 1,
                "downloading" => {
                    w.downloading += 1;
                    continue;
                }
                "done" => {
                    done += 1;
                    spent += j.attempts + j.polls;
                    continue;
                }
                _ => continue,
            }
            classes.push(class_of(&j.params));
        }
        if done >= MIN_LEARNED {
            w.learned_requests = Some(((spent as f64 / done as f64).clamp(2.0, 10.0), done));
        }
        // As the schedule's `expected_ms`: the mean of the class's learnt model.
        let models: HashMap<String, f64> = store
            .timing_models()
            .await?
            .into_iter()
            .filter(|(_, _, _, jobs)| *jobs > 0)
            .map(|(class, mu, sigma, _)| (class, (mu + sigma * sigma / 2.0).exp()))
            .collect();
        for c in &classes {
            learned.entry(c.clone()).or_insert_with(|| models.get(c).copied());
        }
        store.close().await;
    } else {
        w.new_jobs = rows.len() as u64;
        classes = rows.iter().map(|r| r.params.duration_class()).collect();
    }
    w.learned_durations = learned.values().any(Option::is_some);
    w.durations_ms = classes
        .iter()
        .map(|c| learned.get(c).copied().flatten().unwrap_or(o.prior_duration_ms))
        .collect();
    Ok(w)
}

/// Prints the estimate for these rows (and the local images they name) and database.
pub async fn print(db: &Path, rows: &[Row], images: &[LocalImage], o: &Opts) -> anyhow::Result<Estimate> {
    let w = gather(db, rows, o).await?;
    let e = estimate(&w, o);
    for line in render(&w, &e, o) {
        println!("{line}");
    }
    if !images.is_empty() {
        let mut shas: Vec<String> = images.iter().map(|i| i.sha256.clone()).collect();
        shas.sort();
        shas.dedup();
        let missing = if crate::store::db_exists(db) {
            let store = Store::open(db).await?;
            let n = store.missing_assets(&shas).await;
            store.close().await;
            n?
        } else {
            shas.len()
        };
        let per_call = crate::engine::upload::PER_CALL;
        let fewest = missing.div_ceil(per_call);
        let calls = if fewest == missing {
            format!("{missing} upload request(s)")
        } else {
            format!("{fewest} to {missing} upload requests (up to {per_call} files a call when jobs need them at once)")
        };
        println!(
            "  uploads: {missing} local image(s) to upload ({} file(s), {} distinct, {} already uploaded): \
             {calls}, out of the same --rpm budget",
            images.len(),
            shas.len(),
            shas.len() - missing,
        );
    }
    Ok(e)
}

pub fn render(w: &Work, e: &Estimate, o: &Opts) -> Vec<String> {
    let mut out = vec![format!(
        "estimate: {} job(s) to do ({} new, {} unfinished in the database): {} to submit, {} at Segmind, {} downloading",
        e.jobs,
        w.new_jobs,
        e.jobs - w.new_jobs,
        e.submits,
        w.running,
        w.downloading
    )];
    let basis = match w.learned_requests {
        Some((_, n)) => format!("measured over {n} finished videos in this database"),
        None => "the prior; nothing measured in this database yet".into(),
    };
    out.push(format!(
        "  API requests: {} ({:.2} per video: 1 submit + {:.2} polls; {basis})",
        e.requests,
        e.requests_per_video,
        e.requests_per_video - 1.0
    ));
    let durations = if w.learned_durations {
        "learned video durations"
    } else {
        "the prior video duration of ~54 s"
    };
    out.push(format!(
        "  wall-clock: about {} at {} rpm (the requests at that rate, plus the last video's own time; {durations})",
        human(e.wall_secs),
        o.rpm
    ));
    out.push(match (e.cost, o.price) {
        (Some(c), Some(p)) => format!("  cost: ${c:.2} ({} video(s) to submit at ${p} each)", e.submits),
        _ => "  cost: give --price USD (dollars per video) to estimate it".into(),
    });
    out
}

/// `1 h 02 min`, `3 min 05 s`, `42 s`.
pub fn human(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600 + 30) / 60),
    }
}

/// `run --dry-run`: validate, check against the database, estimate; nothing written or sent.
pub async fn dry_run_of_run(args: &RunArgs, settings: &RunSettings) -> anyhow::Result<Outcome> {
    let db = &settings.db;
    let staging = if args.manifests.is_empty() {
        None
    } else {
        let opts = crate::manifest::LoadOptions {
            max_image_bytes: settings.max_image_bytes,
        };
        Some(super::import::stage_manifests(&args.manifests, db, &opts).await?)
    };
    let staged = staging.as_ref().map_or(0, |s| s.0.len());
    let (new, unchanged) = match (&staging, crate::store::db_exists(db)) {
        (Some((staging, _)), true) => {
            let store = Store::open(db).await?;
            let check = store.check_staged(staging, super::import::ERRORS_SHOWN).await;
            store.close().await;
            let check = check?;
            super::import::report_conflicts(&check.conflicts)?;
            (check.summary.inserted, check.summary.unchanged)
        }
        _ => (staged, 0),
    };
    let images = staging.map(|(_, images)| images).unwrap_or_default();
    let rows = if args.manifests.is_empty() {
        Vec::new()
    } else {
        super::import::read_manifests(&args.manifests)?
    };
    println!(
        "dry run: {} rows valid; {new} would be new jobs, {unchanged} already in {} (nothing written, nothing submitted)",
        rows.len(),
        crate::store::shown(db)
    );
    let opts = Opts {
        rpm: settings.rpm,
        price: settings.price,
        concurrency: settings.concurrency,
        resubmit_unknown: settings.on_unknown == crate::engine::UnknownPolicy::Resubmit,
        prior_duration_ms: settings.expected_duration.as_secs_f64() * 1000.0,
    };
    print(db, &rows, &images, &opts).await?;
    Ok(Outcome::AllDone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(rpm: u32) -> Opts {
        Opts {
            rpm,
            price: None,
            concurrency: None,
            resubmit_unknown: true,
            prior_duration_ms: PRIOR_DURATION_MS,
        }
    }

    #[test]
    fn prior_figures_for_new_jobs() {
        let w = Work {
            new_jobs: 100,
            durations_ms: vec![PRIOR_DURATION_MS; 100],
            ..Work::default()
        };
        let e = estimate(
            &w,
            &Opts {
                price: Some(0.25),
                ..opts(50)
            },
        );
        assert_eq!((e.jobs, e.submits, e.requests), (100, 100, 230));
        // 230 requests at 50 rpm = 276 s, plus the last video's 54.46 s.
        assert!((e.wall_secs - 330.46).abs() < 1e-9, "{}", e.wall_secs);
        assert_eq!(e.cost, Some(25.0));
        assert_eq!(human(e.wall_secs), "5 min 30 s");
    }

    #[test]
    fn learned_cost_running_jobs_and_a_fixed_concurrency() {
        let w = Work {
            new_jobs: 10,
            resubmits: 2,
            running: 4,
            downloading: 1,
            learned_requests: Some((3.0, 20)),
            durations_ms: vec![30_000.0; 16],
            learned_durations: true,
        };
        let e = estimate(&w, &opts(600));
        // 12 submits × 3 + 4 running × 2 polls = 44 requests; 4.4 s at 600 rpm + 30 s.
        assert_eq!((e.jobs, e.submits, e.requests), (17, 12, 44));
        assert!((e.wall_secs - 34.4).abs() < 1e-9, "{}", e.wall_secs);
        assert_eq!(e.cost, None);
        // Two at a time: 6 waves of 30 s, longer than the rate allows.
        let e = estimate(
            &w,
            &Opts {
                concurrency: Some(2),
                ..opts(600)
            },
        );
        assert!((e.wall_secs - 180.0).abs() < 1e-9, "{}", e.wall_secs);
    }

    #[test]
    fn nothing_to_do_takes_no_time() {
        let e = estimate(&Work::default(), &opts(50));
        assert_eq!((e.jobs, e.requests, e.wall_secs), (0, 0, 0.0));
        assert_eq!(human(3725.0), "1 h 02 min");
    }
}
