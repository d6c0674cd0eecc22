//! `wanbatch init DIR`: a folder of images becomes a manifest (`id,image,prompt`), one row per
//! image, each prompt read from the `.txt` file beside its image or else given by `--prompt`.
//!
//! What counts as an image: a regular file (or a link to one) not starting with `.`, whose
//! extension is png, jpg, jpeg, webp, gif or bmp in any case, and whose first bytes are one of
//! those formats. A file with such an extension but other bytes, or an unreadable or empty one,
//! or another image format the API does not take (tiff, heic, avif), is listed as skipped with
//! its reason; any other file is ignored. Subfolders are read only with `--recursive` (hidden
//! ones and linked ones never).
//!
//! Invariants:
//! - Nothing is written unless every image has a prompt and every prompt file could be read:
//!   otherwise each problem is listed and the command ends with exit 2. An existing output file
//!   is replaced only with `--force`; the manifest appears whole or not at all (a temporary file
//!   beside it, synced, then renamed).
//! - Rows are in natural order of the path below DIR (digit runs by value, letters ignoring
//!   ASCII case, byte order to break ties), so `img2` comes before `img10`.
//! - Ids pass [`check_id`](crate::manifest::check_id) and are unique even ignoring case; they depend only on the set of
//!   names in the folder, never on its listing order.
//! - `image` is the path relative to the output file's folder when the image lies inside that
//!   folder (the manifest then moves with its folder), else absolute; paths are resolved
//!   lexically and keep the OS's separators.

mod naming;
mod scan;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::report::absolute;
use crate::exit::{Failure, Outcome};
pub use naming::sanitise_id;
use naming::{by_parts, natural, unique_ids};
use scan::{read_prompt, Prompt, Scan};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Prompts: for cat.png, the text of cat.txt beside it (UTF-8, trimmed), or of cat.png.txt \
                  if cat.txt is missing or empty; else --prompt. Ids come from the file names, made safe \
                  as file names (other characters become '-'), with -2, -3… where two would be the same \
                  (ignoring case). Rows are in natural order (img2 before img10)."
)]
pub struct InitArgs {
    /// The folder of images (png, jpg, jpeg, webp, gif, bmp).
    #[arg(value_hint = clap::ValueHint::DirPath)]
    pub dir: PathBuf,
    /// The prompt of every image that has no .txt beside it (a .txt always wins). Without it, an
    /// image with no prompt stops the command and nothing is written.
    #[arg(long)]
    pub prompt: Option<String>,
    /// The manifest to write (replaced only with --force). Its image paths are relative to its
    /// folder for images inside that folder, else absolute.
    #[arg(long, short = 'o', default_value = "jobs.csv", value_hint = clap::ValueHint::FilePath)]
    pub output: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Also take the images in subfolders (not hidden or linked ones); their ids start with the
    /// subfolder's path (`day1/cat.png` → `day1-cat`).
    #[arg(long, short = 'r')]
    pub recursive: bool,
}

/// Longest list of skipped files or images without a prompt shown in full.
const LIST_MAX: usize = 20;

pub fn run(args: InitArgs) -> anyhow::Result<Outcome> {
    let flag_prompt = match args.prompt.as_deref().map(str::trim) {
        Some("") => return Err(Failure::Usage("--prompt is empty".into()).into()),
        p => p.map(str::to_string),
    };
    let dir = &args.dir;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(usage(format!("{} is not a folder", dir.display()))),
        Err(e) => return Err(usage(format!("cannot read the folder {}: {e}", dir.display()))),
    }
    check_output(&args.output, args.force)?;

    let mut scan = Scan::default();
    scan.folder(dir, &[], args.recursive)
        .with_context(|| format!("cannot read the folder {}", dir.display()))?;
    let Scan {
        mut images,
        mut skipped,
        mut notes,
    } = scan;
    // The listing order is the file system's: show everything in the rows' order instead.
    notes.sort_by(|a, b| natural(a, b));
    skipped.sort_by(|a, b| natural(a, b));
    list(&notes, "notes");
    list(&skipped, "skipped files");
    if images.is_empty() {
        let why = if skipped.is_empty() {
            format!("no images in {} (png, jpg, jpeg, webp, gif or bmp)", dir.display())
        } else {
            format!(
                "no usable images in {} ({} skipped, listed above)",
                dir.display(),
                skipped.len()
            )
        };
        return Err(usage(format!("{why}: nothing written")));
    }
    images.sort_by(|a, b| by_parts(&a.parts, &b.parts));

    let ids = unique_ids(images.iter().map(|i| sanitise_id(&i.id_source())).collect());
    let out_dir = absolute(&parent_of(&args.output))?;
    let dir_abs = absolute(dir)?;
    let (mut rows, mut missing, mut unreadable) = (Vec::new(), Vec::new(), Vec::new());
    let (mut from_txt, mut from_flag) = (0usize, 0usize);
    for (image, id) in images.iter().zip(ids) {
        let path = dir.join(&image.rel);
        let shown = path.display();
        let prompt = match read_prompt(&path) {
            Err(e) => {
                unreadable.push(e);
                continue;
            }
            Ok(Prompt::Found(text)) => {
                from_txt += 1;
                text
            }
            Ok(Prompt::None { why }) => match &flag_prompt {
                Some(p) => {
                    from_flag += 1;
                    p.clone()
                }
                None => {
                    missing.push(format!(
                        "{shown}: no prompt ({why}); give --prompt TEXT or add the .txt"
                    ));
                    continue;
                }
            },
        };
        // Inside the manifest's folder: relative, so the two move together.
        let abs = dir_abs.join(&image.rel);
        let cell = abs.strip_prefix(&out_dir).unwrap_or(&abs);
        let Some(cell) = cell.to_str() else {
            return Err(usage(format!(
                "{} is not a UTF-8 path: it cannot go in a CSV",
                abs.display()
            )));
        };
        rows.push([id, cell.to_string(), prompt]);
    }
    list(&unreadable, "unreadable prompt files");
    list(&missing, "images without a prompt");
    if !unreadable.is_empty() || !missing.is_empty() {
        let mut why = Vec::new();
        if !missing.is_empty() {
            let have = if missing.len() == 1 { "has" } else { "have" };
            why.push(format!(
                "{} of {} {have} no prompt",
                missing.len(),
                count(images.len(), "image")
            ));
        }
        if !unreadable.is_empty() {
            why.push(format!("{} cannot be used", count(unreadable.len(), "prompt file")));
        }
        return Err(usage(format!("{} (listed above): nothing written", why.join(", "))));
    }

    write_atomically(&args.output, &rows, args.force)?;

    let out = args.output.display();
    let txt = |n| format!("{} from .txt files", count(n, "prompt"));
    let sources = match (from_txt, from_flag) {
        (t, 0) => txt(t),
        (0, f) => format!("{} from --prompt", count(f, "prompt")),
        (t, f) => format!("{}, {f} from --prompt", txt(t)),
    };
    let skipped = match skipped.len() {
        0 => String::new(),
        n => format!("; skipped {} (listed above)", count(n, "file")),
    };
    println!("{out}: {} ({sources}){skipped}", count(rows.len(), "row"));
    println!("next: wanbatch run {} --dry-run", shell_word(&out.to_string()));
    Ok(Outcome::AllDone)
}

/// `1 row`, `2 rows`.
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn usage(msg: String) -> anyhow::Error {
    Failure::Usage(msg).into()
}

fn parent_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Refuses before any work an output that exists (without `--force`) or is a folder.
fn check_output(output: &Path, force: bool) -> anyhow::Result<()> {
    match std::fs::metadata(output) {
        Ok(m) if m.is_dir() => Err(usage(format!("{} is a folder: give --output FILE", output.display()))),
        Ok(_) if !force => Err(usage(format!(
            "{} already exists: give --force to replace it, or --output FILE",
            output.display()
        ))),
        _ => Ok(()),
    }
}

/// Writes the manifest beside its final place, syncs it, then renames it there (without
/// `--force`, only if nothing appeared there meanwhile).
fn write_atomically(output: &Path, rows: &[[String; 3]], force: bool) -> anyhow::Result<()> {
    let dir = parent_of(output);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".wanbatch-init-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let mut w = csv::Writer::from_writer(std::io::BufWriter::new(tmp.as_file_mut()));
        w.write_record(["id", "image", "prompt"])?;
        for row in rows {
            w.write_record(row)?;
        }
        w.into_inner().map_err(|e| e.into_error())?.flush()?;
    }
    tmp.as_file().sync_all()?;
    let written = if force {
        tmp.persist(output)
    } else {
        tmp.persist_noclobber(output)
    };
    written.map_err(|e| match e.error.kind() {
        std::io::ErrorKind::AlreadyExists => usage(format!(
            "{} already exists: give --force to replace it, or --output FILE",
            output.display()
        )),
        _ => anyhow::Error::new(e.error).context(format!("cannot write {}", output.display())),
    })?;
    Ok(())
}

/// Prints a list on stderr, the first [`LIST_MAX`] lines in full.
fn list(lines: &[String], what: &str) {
    for line in lines.iter().take(LIST_MAX) {
        eprintln!("{line}");
    }
    if lines.len() > LIST_MAX {
        eprintln!("… and {} more {what}", lines.len() - LIST_MAX);
    }
}

/// A path as one shell word (quoted when it holds anything a shell would split or expand).
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./\\:+@%,=".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\\\""))
    }
}
