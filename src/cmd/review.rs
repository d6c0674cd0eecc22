//! `wanbatch review apply FILE`: records a reviewer's decisions — the CSV the report's "Download
//! decisions" button writes, header `id,decision,note` — in the database (`review`,
//! `review_note`, `reviewed_at`), where `export` carries them and `retry --rejected` takes the
//! rejected videos again.
//!
//! The file is read as people save it (a UTF-8 BOM, CRLF, `;`- or tab-separated from a
//! spreadsheet, header names in any case and order; other columns are refused, like a
//! manifest's). `decision` is `keep`, `reject` (any case) or empty, which clears the job's
//! decision; `note` is free text (empty: none). Each row sets the job's decision and note to
//! exactly what it says.
//!
//! All or nothing: the whole file is checked first, and every problem — an unknown id, a bad
//! decision, an id given twice with different decisions or notes, a missing column, a keep or
//! reject for a job that is not done — is reported as `file:line: field: message` (physical
//! lines, as an editor numbers them, the header being line 1), exit 2, nothing recorded. Only a
//! `done` job (it has a video) can be kept or rejected: a decision on a job still being made, or
//! failed, has no video to be about. Clearing is accepted for any job. Then every row is
//! recorded in one transaction.
//!
//! Safe beside a running `run`: a decision is not a state change, and `run` never writes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::exit::{Failure, Outcome};
use crate::manifest::{ManifestError, Records, MAX_ERRORS_LISTED};
use crate::settings::Resolved;
use crate::store::{Decision, ReviewChange, Store};

#[derive(clap::Args, Debug)]
pub struct ReviewArgs {
    #[command(subcommand)]
    pub command: ReviewCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ReviewCommand {
    /// Record a decisions file (CSV `id,decision,note`, as the report's "Download decisions"
    /// writes it): keep / reject / empty (clears) per job. Checked whole first; nothing is
    /// recorded if any row is wrong.
    Apply(ApplyArgs),
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub db: super::flags::DbFlag,
    /// The decisions file (CSV with the header id,decision,note).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

pub async fn run(args: ReviewArgs, resolved: Resolved) -> anyhow::Result<Outcome> {
    match args.command {
        ReviewCommand::Apply(a) => apply(a, resolved).await,
    }
}

/// One row of a decisions file.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionRow {
    /// The physical line it starts on.
    pub line: u64,
    pub id: String,
    /// None: clear the job's decision.
    pub decision: Option<Decision>,
    /// None when empty.
    pub note: Option<String>,
}

/// The columns of a decisions file.
const COLUMNS: [&str; 3] = ["id", "decision", "note"];

/// What `apply` did.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    keep: u64,
    reject: u64,
    cleared: u64,
    /// Rows without a decision for a job that had none: only the note changes.
    notes: u64,
    unchanged: u64,
}

async fn apply(args: ApplyArgs, resolved: Resolved) -> anyhow::Result<Outcome> {
    let db = resolved.db.clone();
    let file = &args.file;
    let (rows, mut errors) = read_decisions(file);
    if rows.is_empty() && !errors.is_empty() {
        return Err(refuse(file, errors));
    }
    let store = Store::open_existing(&db).await?;
    // The rows that read are checked against the jobs too, so one pass names every problem.
    let result = match check(&store, file, &rows).await {
        Ok(Ok(_)) if !errors.is_empty() => Err(refuse(file, errors)),
        Ok(Ok((changes, summary))) => store.record_reviews(&changes).await.map(|_| summary),
        Ok(Err(more)) => {
            errors.extend(more);
            Err(refuse(file, errors))
        }
        Err(e) => Err(e),
    };
    store.close().await;
    let s = result?;
    if rows.is_empty() {
        println!("review: no decisions in {}: nothing recorded", file.display());
        return Ok(Outcome::AllDone);
    }
    let notes = match s.notes {
        0 => String::new(),
        n => format!(", {n} note(s) without a decision"),
    };
    println!(
        "review: {} keep, {} reject, {} cleared{notes}, {} unchanged — recorded in {}",
        s.keep,
        s.reject,
        s.cleared,
        s.unchanged,
        crate::store::shown(&db)
    );
    if s.reject > 0 {
        println!(
            "review: `wanbatch retry --rejected --db {}` makes the rejected videos again (each a new, billed take; the \
             earlier one is kept as ID.rejected-N.mp4)",
            crate::store::shown(&db)
        );
    }
    Ok(Outcome::AllDone)
}

/// Prints every error (the first `MAX_ERRORS_LISTED`) and gives the exit-2 failure.
fn refuse(file: &Path, mut errors: Vec<ManifestError>) -> anyhow::Error {
    errors.sort_by_key(|e| e.line);
    for e in errors.iter().take(MAX_ERRORS_LISTED) {
        eprintln!("{e}");
    }
    if errors.len() > MAX_ERRORS_LISTED {
        eprintln!("… and {} more errors", errors.len() - MAX_ERRORS_LISTED);
    }
    Failure::Manifest(format!(
        "{} error(s) in {}; no decision was recorded",
        errors.len(),
        file.display()
    ))
    .into()
}

/// Checks every row against the database: the jobs exist, and a keep or reject is for a done
/// job. Returns the changes to record (rows that differ from what is recorded) and the summary,
/// or every error.
async fn check(
    store: &Store,
    file: &Path,
    rows: &[DecisionRow],
) -> anyhow::Result<Result<(Vec<ReviewChange>, Summary), Vec<ManifestError>>> {
    let name = file.display().to_string();
    let err = |line: u64, field: &str, message: String| ManifestError {
        file: name.clone(),
        line,
        field: Some(field.to_string()),
        message,
    };
    let (mut changes, mut errors, mut summary) = (Vec::new(), Vec::new(), Summary::default());
    for r in rows {
        let Some(job) = store.review_of(&r.id).await? else {
            errors.push(err(r.line, "id", format!("no job {:?} in this database", r.id)));
            continue;
        };
        if let (Some(d), false) = (r.decision, job.state == "done") {
            errors.push(err(
                r.line,
                "decision",
                format!(
                    "job {:?} is {}: only a done job (it has a video) can be marked {}; leave the decision empty",
                    r.id,
                    job.state,
                    d.as_str()
                ),
            ));
            continue;
        }
        let wanted = (r.decision.map(Decision::as_str), r.note.as_deref());
        if wanted == (job.review.as_deref(), job.review_note.as_deref()) {
            summary.unchanged += 1;
            continue;
        }
        match r.decision {
            Some(Decision::Keep) => summary.keep += 1,
            Some(Decision::Reject) => summary.reject += 1,
            None if job.review.is_some() => summary.cleared += 1,
            None => summary.notes += 1,
        }
        changes.push(ReviewChange {
            seq: job.seq,
            decision: r.decision,
            note: r.note.clone(),
        });
    }
    Ok(if errors.is_empty() {
        Ok((changes, summary))
    } else {
        Err(errors)
    })
}

/// Reads a decisions file: the rows that read (an id given twice the same way counts once), and
/// every problem found in it (with a problem in the header, no rows).
pub fn read_decisions(path: &Path) -> (Vec<DecisionRow>, Vec<ManifestError>) {
    let name = path.display().to_string();
    let err = |line: u64, field: Option<&str>, message: String| ManifestError {
        file: name.clone(),
        line,
        field: field.map(str::to_string),
        message,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return (Vec::new(), vec![err(1, None, format!("cannot read: {e}"))]),
    };
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut records = Records::new(text, delimiter(text));
    let mut errors = Vec::new();
    // The header: which cell holds which column.
    let header_line = match records.next() {
        Ok(Some(line)) => line,
        Ok(None) => {
            let empty = "the file is empty: a decisions file starts with the header id,decision,note";
            return (Vec::new(), vec![err(1, None, empty.into())]);
        }
        Err((line, stop)) => return (Vec::new(), vec![err(line, None, stop.message())]),
    };
    let mut at: [Option<usize>; 3] = [None; 3];
    for i in 0..records.len() {
        let cell = String::from_utf8_lossy(records.cell(i));
        let cell = cell.trim();
        if cell.is_empty() {
            continue;
        }
        match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(cell)) {
            Some(k) if at[k].is_some() => {
                errors.push(err(header_line, Some(COLUMNS[k]), "the column is given twice".into()))
            }
            Some(k) => at[k] = Some(i),
            None => errors.push(err(
                header_line,
                Some(cell),
                "unknown column; a decisions file has the columns id, decision, note".into(),
            )),
        }
    }
    for (k, c) in COLUMNS.iter().enumerate() {
        if at[k].is_none() {
            errors.push(err(
                header_line,
                Some(c),
                format!(
                    "missing column (the header must name id, decision and note; it is {:?})",
                    header(&records)
                ),
            ));
        }
    }
    if !errors.is_empty() {
        return (Vec::new(), errors);
    }
    let width = records.len();
    let [Some(id_at), Some(decision_at), Some(note_at)] = at else {
        unreachable!("every column was found")
    };
    let mut rows: Vec<DecisionRow> = Vec::new();
    let mut first: HashMap<String, usize> = HashMap::new();
    loop {
        let line = match records.next() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err((line, stop)) => {
                errors.push(err(line, None, stop.message()));
                break;
            }
        };
        let cell = |i: usize| -> Result<&str, ManifestError> {
            std::str::from_utf8(records.cell(i)).map_err(|_| {
                err(
                    line,
                    Some(COLUMNS[at.iter().position(|a| *a == Some(i)).unwrap_or(0)]),
                    "is not UTF-8 text (save the file as CSV UTF-8)".into(),
                )
            })
        };
        // A row of empty cells (spreadsheets leave them) is no row.
        if (0..records.len()).all(|i| records.cell(i).iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        if records.len() != width {
            let missing = COLUMNS
                .iter()
                .zip(at)
                .find(|(_, a)| a.is_some_and(|a| a >= records.len()))
                .map(|(c, _)| *c);
            match missing {
                Some(c) => errors.push(err(
                    line,
                    Some(c),
                    format!("missing: the row has {} cell(s), the header {width}", records.len()),
                )),
                None => errors.push(err(
                    line,
                    None,
                    format!("the row has {} cells, the header {width}", records.len()),
                )),
            }
            continue;
        }
        let (id, decision, note) = match (cell(id_at), cell(decision_at), cell(note_at)) {
            (Ok(i), Ok(d), Ok(n)) => (i.trim(), d, n),
            (i, d, n) => {
                errors.extend([i.err(), d.err(), n.err()].into_iter().flatten());
                continue;
            }
        };
        if id.is_empty() {
            errors.push(err(line, Some("id"), "is empty".into()));
            continue;
        }
        let decision = match decision.trim() {
            "" => None,
            d => match Decision::parse(d) {
                Some(d) => Some(d),
                None => {
                    errors.push(err(
                        line,
                        Some("decision"),
                        format!("{:?} is not keep, reject or empty (empty clears the decision)", d),
                    ));
                    continue;
                }
            },
        };
        let note = (!note.trim().is_empty()).then(|| note.to_string());
        let row = DecisionRow {
            line,
            id: id.to_string(),
            decision,
            note,
        };
        match first.get(id) {
            None => {
                first.insert(row.id.clone(), rows.len());
                rows.push(row);
            }
            Some(&k) => {
                let earlier = &rows[k];
                let shown = |d: Option<Decision>| d.map_or("empty", Decision::as_str);
                if earlier.decision != row.decision {
                    errors.push(err(
                        line,
                        Some("decision"),
                        format!(
                            "{id:?} is also on line {} with a different decision ({} there, {} here)",
                            earlier.line,
                            shown(earlier.decision),
                            shown(row.decision)
                        ),
                    ));
                } else if earlier.note != row.note {
                    errors.push(err(
                        line,
                        Some("note"),
                        format!("{id:?} is also on line {} with a different note", earlier.line),
                    ));
                }
            }
        }
    }
    (rows, errors)
}

/// The current record's cells joined by commas, for a message (cut short).
fn header<R: std::io::BufRead>(records: &Records<R>) -> String {
    let cells: Vec<String> = (0..records.len())
        .map(|i| String::from_utf8_lossy(records.cell(i)).into_owned())
        .collect();
    crate::manifest::params::shorten(&cells.join(","))
}

/// The separator of the header line: of `,`, `;` and tab, the one that splits it into the most
/// column names (a spreadsheet in a European locale writes `;`); a comma when none does better.
fn delimiter(text: &[u8]) -> u8 {
    let end = text
        .iter()
        .position(|b| matches!(b, b'\r' | b'\n'))
        .unwrap_or(text.len());
    let line = String::from_utf8_lossy(&text[..end]);
    let known = |d: char| {
        line.split(d)
            .filter(|c| {
                COLUMNS
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(c.trim().trim_matches('"')))
            })
            .count()
    };
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|&d| (known(d as char), d == b','))
        .unwrap_or(b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8]) -> Result<Vec<DecisionRow>, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, text).unwrap();
        match read_decisions(&p) {
            (rows, es) if es.is_empty() => Ok(rows),
            (_, es) => Err(es
                .into_iter()
                .map(|e| e.to_string().replace(&p.display().to_string(), "d.csv"))
                .collect()),
        }
    }

    #[test]
    fn a_file_as_the_report_writes_it_reads_with_its_lines() {
        let rows =
            read(b"\xEF\xBB\xBFid,decision,note\r\na,keep,\r\n\r\nb,Reject,\"too dark,\r\nredo\"\r\nc,,\r\n").unwrap();
        assert_eq!(
            rows,
            [
                DecisionRow {
                    line: 2,
                    id: "a".into(),
                    decision: Some(Decision::Keep),
                    note: None
                },
                DecisionRow {
                    line: 4,
                    id: "b".into(),
                    decision: Some(Decision::Reject),
                    note: Some("too dark,\r\nredo".into())
                },
                DecisionRow {
                    line: 6,
                    id: "c".into(),
                    decision: None,
                    note: None
                },
            ]
        );
        // Columns in another order, `;`-separated, the same id twice alike.
        let rows = read(b"Note;ID;Decision\nfine;a;keep\nfine;a;KEEP\n").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].note.as_deref(), Some("fine"));
    }

    #[test]
    fn every_problem_is_named_by_line_and_field() {
        let e = read(b"id,decision\na,keep\n").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("d.csv:1: note: missing column"), "{e:?}");
        let e = read(b"id,decision,note,score\n").unwrap_err();
        assert!(e[0].starts_with("d.csv:1: score: unknown column"), "{e:?}");
        let e = read(b"").unwrap_err();
        assert!(e[0].starts_with("d.csv:1: the file is empty"), "{e:?}");
        let e =
            read(b"id,decision,note\na,maybe,\n\nb,keep\n,keep,\nc,keep,x\nc,reject,x\nd,keep,x\nd,keep,y\ne,\xFF,\n")
                .unwrap_err();
        assert_eq!(
            e,
            [
                "d.csv:2: decision: \"maybe\" is not keep, reject or empty (empty clears the decision)",
                "d.csv:4: note: missing: the row has 2 cell(s), the header 3",
                "d.csv:5: id: is empty",
                "d.csv:7: decision: \"c\" is also on line 6 with a different decision (keep there, reject here)",
                "d.csv:9: note: \"d\" is also on line 8 with a different note",
                "d.csv:10: decision: is not UTF-8 text (save the file as CSV UTF-8)",
            ]
        );
    }
}
