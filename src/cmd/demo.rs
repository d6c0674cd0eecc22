//! `wanbatch demo`: the whole product in ten seconds, with no key and no network. Starts the
//! fake Segmind in-process with short durations and runs `jobs.example.csv` through the real
//! `run` path into a folder of its own, then writes the HTML report (`report`'s own entry, as
//! `wanbatch report` would) beside the videos and says where it is.
//!
//! Nothing of the user's is ever touched: the demo writes only into a folder it creates, or one
//! that is empty, or one that holds nothing but an earlier demo's files (recognised by the marker
//! file it writes first). Any other folder is refused, naming it and a file the demo did not
//! write; only the demo's own files are replaced by a new run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::ApiKey;
use crate::cmd::run::{self, Display, Endpoint, Tuning};
use crate::exit::{Failure, Outcome};
use crate::fake::{FakeConfig, FakeServer};
use crate::settings::{Layer, Resolved, RunSettings};

/// The example manifest, built in so the demo works from any folder.
const EXAMPLE: &str = include_str!("../../jobs.example.csv");

/// The file that says a folder is the demo's.
pub const MARKER: &str = ".wanbatch-demo";
const MANIFEST: &str = "jobs.example.csv";
const DB: &str = "demo.db";
const VIDEOS: &str = "videos";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Folder for the demo's database and videos: a new folder, an empty one, or an earlier
    /// demo's (whose files are replaced). Any other folder is refused.
    #[arg(long, default_value = "demo-output")]
    pub dir: PathBuf,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<Outcome> {
    let dir = &args.dir;
    let out = dir.join(VIDEOS);
    let db = dir.join(DB);
    // Settings first, through the same resolver as `run`: nothing is written before they hold.
    let settings = RunSettings::from(&Resolved::given(Layer {
        db: Some(db.clone()),
        out: Some(out.clone()),
        rpm: Some(600),
        expected_duration: Some(crate::settings::Span(Duration::from_millis(1500))),
        ..Layer::default()
    }))
    .map_err(Failure::Usage)?;
    prepare(dir)?;
    let key = "demo-key";
    let fake = FakeServer::start(FakeConfig {
        api_key: key.into(),
        queue: Duration::from_millis(400),
        run: Duration::from_millis(1600),
        jitter: 0.2,
        ..FakeConfig::default()
    })
    .await?;
    let manifest = dir.join(MANIFEST);
    let example = std::fs::read_to_string(MANIFEST).unwrap_or_else(|_| EXAMPLE.to_string());
    std::fs::write(&manifest, example)?;
    println!(
        "demo: fake Segmind at {} (videos served from {})",
        fake.api_url(),
        fake.cdn_url()
    );
    let tuning = Tuning {
        min_poll_gap_ms: 100,
        backoff_ms: 200,
        grace_secs: 2.0,
        request_timeout_secs: 10.0,
        ..Tuning::default()
    };
    let display = Display {
        quiet: false,
        progress_interval: 1.0,
    };
    let started = std::time::Instant::now();
    let endpoint = Endpoint {
        hosts: crate::api::hosts::resolve(Some(&fake.api_url()), None, None).map_err(Failure::Usage)?,
        key: ApiKey::new(key.into()).expect("demo key"),
    };
    let outcome = run::run_with(settings, &[manifest], &tuning, display, endpoint).await?;
    let stats = fake.stats();
    fake.shutdown().await;
    println!(
        "demo: {} submits, {} API requests in all, {:.1}s; videos in {}/ (database {})",
        stats.submits.len(),
        stats.api_requests.len(),
        started.elapsed().as_secs_f64(),
        out.display(),
        crate::store::shown(&db)
    );
    write_report(&db, &out).await?;
    println!(
        "demo: open {} in a browser to review the videos (keep / reject, then `wanbatch review apply`)",
        out.join("report.html").display()
    );
    Ok(outcome)
}

/// Writes `OUT/report.html` through the report command's own entry, with its defaults (the
/// arguments are parsed from nothing, so the demo follows whatever flags the report grows).
async fn write_report(db: &Path, out: &Path) -> anyhow::Result<()> {
    use clap::{Args, FromArgMatches};
    let cli = crate::cmd::report::ReportArgs::augment_args(clap::Command::new("report"));
    let matches = cli.try_get_matches_from(["report"])?;
    let args = crate::cmd::report::ReportArgs::from_arg_matches(&matches)?;
    let resolved = Resolved::given(Layer {
        db: Some(db.to_path_buf()),
        out: Some(out.to_path_buf()),
        ..Layer::default()
    });
    crate::cmd::report::run(args, resolved).await?;
    Ok(())
}

/// Makes `dir` ready for a demo: creates it, or takes an empty one, or clears an earlier demo's
/// files from it. Refuses (exit 2) a folder holding anything the demo did not write.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    let refuse = |why: String| -> anyhow::Error {
        Failure::Usage(format!(
            "demo: refusing to write into {}: {why}. The demo writes only into a new or empty folder, or \
             an earlier demo's; choose one with --dir",
            dir.display()
        ))
        .into()
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            return mark(dir);
        }
        Err(e) => return Err(refuse(format!("cannot read it ({e})"))),
        Ok(m) if !m.is_dir() => return Err(refuse("it is a file".into())),
        Ok(_) => {}
    }
    let names = entries(dir)?;
    if names.is_empty() {
        return mark(dir);
    }
    if !dir.join(MARKER).is_file() {
        return Err(refuse(format!(
            "it holds files the demo did not write (e.g. {})",
            names[0].display()
        )));
    }
    if let Some(foreign) = foreign_file(dir)? {
        return Err(refuse(format!(
            "it holds {}, which the demo did not write",
            foreign.display()
        )));
    }
    // Only an earlier demo's files are here: clear them (files it wrote, by name).
    let videos = dir.join(VIDEOS);
    if videos.is_dir() {
        for entry in entries(&videos)? {
            std::fs::remove_file(videos.join(entry))?;
        }
        std::fs::remove_dir(&videos)?;
    }
    for name in entries(dir)? {
        if name.as_os_str() != MARKER {
            std::fs::remove_file(dir.join(name))?;
        }
    }
    Ok(())
}

fn mark(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(
        dir.join(MARKER),
        "This folder was written by `wanbatch demo`; running the demo again replaces its files.\n",
    )?;
    Ok(())
}

/// The names in a folder, sorted.
fn entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        names.push(PathBuf::from(entry?.file_name()));
    }
    names.sort();
    Ok(names)
}

/// A path in an earlier demo's folder that the demo did not write, if there is one.
fn foreign_file(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let db_files = [
        DB.to_string(),
        format!("{DB}-wal"),
        format!("{DB}-shm"),
        format!("{DB}-journal"),
        format!("{DB}.lock"),
    ];
    for name in entries(dir)? {
        let text = name.to_string_lossy();
        let path = dir.join(&name);
        let ours = match text.as_ref() {
            MARKER | MANIFEST => path.is_file(),
            VIDEOS => path.is_dir(),
            t => db_files.iter().any(|d| d == t) && path.is_file(),
        };
        if !ours {
            return Ok(Some(path));
        }
    }
    let videos = dir.join(VIDEOS);
    if videos.is_dir() {
        for name in entries(&videos)? {
            let t = name.to_string_lossy();
            let path = videos.join(&name);
            // Videos, sidecars, the report, and their temporaries (`.ID.mp4.REQ.part`,
            // `.ID.json.part`, the report's `.tmpXXXXXX`).
            let ours = path.is_file()
                && (t.ends_with(".mp4")
                    || t.ends_with(".json")
                    || t == "report.html"
                    || (t.starts_with('.') && t.ends_with(".part"))
                    || t.starts_with(".tmp"));
            if !ours {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_an_empty_and_an_earlier_demo_folder_are_taken() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("new");
        prepare(&new).unwrap();
        assert!(new.join(MARKER).is_file());
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        prepare(&empty).unwrap();
        // An earlier demo: its files go, the marker stays.
        std::fs::write(new.join(DB), b"db").unwrap();
        std::fs::write(new.join(MANIFEST), b"csv").unwrap();
        std::fs::create_dir(new.join(VIDEOS)).unwrap();
        std::fs::write(new.join(VIDEOS).join("a.mp4"), b"v").unwrap();
        std::fs::write(new.join(VIDEOS).join("a.json"), b"{}").unwrap();
        prepare(&new).unwrap();
        assert_eq!(entries(&new).unwrap(), [PathBuf::from(MARKER)]);
    }

    #[test]
    fn a_folder_with_anything_else_is_refused_and_left_as_it_was() {
        let root = tempfile::tempdir().unwrap();
        let precious = root.path().join("precious");
        std::fs::create_dir(&precious).unwrap();
        std::fs::write(precious.join("thesis.txt"), b"years of work").unwrap();
        let e = prepare(&precious).unwrap_err().to_string();
        assert!(e.contains("refusing to write into") && e.contains("thesis.txt"), "{e}");
        assert_eq!(std::fs::read(precious.join("thesis.txt")).unwrap(), b"years of work");
        // A demo folder with a foreign file slipped in: refused too, nothing removed.
        let demo = root.path().join("demo");
        prepare(&demo).unwrap();
        std::fs::write(demo.join(DB), b"db").unwrap();
        std::fs::create_dir(demo.join(VIDEOS)).unwrap();
        std::fs::write(demo.join(VIDEOS).join("notes.txt"), b"mine").unwrap();
        let e = prepare(&demo).unwrap_err().to_string();
        assert!(e.contains("notes.txt"), "{e}");
        assert!(demo.join(DB).is_file() && demo.join(VIDEOS).join("notes.txt").is_file());
        // A file where the folder should be.
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(prepare(&file).unwrap_err().to_string().contains("it is a file"));
    }
}
