//! Manifest loading: CSV or JSONL rows → validated job rows with stable ids.
//!
//! Reading streams (one row in memory at a time) and reports *every* error of a file, each
//! naming the file, the line and the field, with what was expected. The caller imports nothing
//! from a set of files that has any error.
//!
//! Ids: an explicit `id` must be unique and safe as a file name. A row without `id` gets
//! `r<12 hex of sha256(params)>`, with `-2`, `-3`… for the second, third identical row (counted
//! across the files of one import, in the order given), so re-running a manifest (or one with rows appended) maps every row to the job it
//! made before, while two identical rows stay two jobs.

pub mod params;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use params::{Field, Params, FIELDS};

/// One validated manifest row.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: String,
    pub params: Params,
    /// The canonical JSON of `params` and its sha256 (hex).
    pub json: String,
    pub hash: String,
    /// `file:line`.
    pub source: String,
}

/// A problem with one manifest line.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestError {
    pub file: String,
    pub line: u64,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}:{}: {}: {}", self.file, self.line, field, self.message),
            None => write!(f, "{}:{}: {}", self.file, self.line, self.message),
        }
    }
}

/// How many errors of one file are listed before the rest are only counted.
pub const MAX_ERRORS_LISTED: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".csv") {
            Some(Format::Csv)
        } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
            Some(Format::Jsonl)
        } else {
            None
        }
    }
}

/// Reads every row of every file, handing valid rows to `on_row` in file order. Returns all
/// errors (already capped per file); rows are only meaningful if the list comes back empty.
pub fn read_files(paths: &[impl AsRef<Path>], mut on_row: impl FnMut(Row)) -> Vec<ManifestError> {
    let mut errors = Vec::new();
    // id -> where first seen, across all files of one import.
    let mut seen: HashMap<String, String> = HashMap::new();
    // Identical rows are counted across all files of one import, in order, so two identical
    // rows are two jobs even when they sit in different files.
    let mut occurrences: HashMap<[u8; 16], u32> = HashMap::new();
    for path in paths {
        let path = path.as_ref();
        let mut file_errors = Errors::new(path.display().to_string());
        let mut handle = |line: u64, explicit_id: Option<String>, params: Params, errs: &mut Errors| {
            let json = params.to_json();
            let digest = Sha256::digest(json.as_bytes());
            let hash = hex::encode(digest);
            let id = match explicit_id {
                Some(id) => id,
                None => {
                    let key: [u8; 16] = digest[..16].try_into().expect("16 bytes");
                    let n = occurrences.entry(key).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        format!("r{}", &hash[..12])
                    } else {
                        format!("r{}-{}", &hash[..12], n)
                    }
                }
            };
            let source = format!("{}:{}", errs.file, line);
            if let Some(first) = seen.get(&id) {
                errs.push(line, Some("id"), format!("{id:?} is used twice: here and at {first}"));
                return;
            }
            seen.insert(id.clone(), source.clone());
            on_row(Row {
                id,
                params,
                json,
                hash,
                source,
            });
        };
        match (Format::of(path), File::open(path)) {
            (None, _) => file_errors.push(
                0,
                None,
                "unknown manifest type: the name must end in .csv, .jsonl or .ndjson".into(),
            ),
            (_, Err(e)) => file_errors.push(0, None, format!("cannot open: {e}")),
            (Some(Format::Csv), Ok(file)) => read_csv(file, &mut file_errors, &mut handle),
            (Some(Format::Jsonl), Ok(file)) => read_jsonl(file, &mut file_errors, &mut handle),
        }
        errors.extend(file_errors.finish());
    }
    errors
}

/// Error collector for one file: keeps the first `MAX_ERRORS_LISTED`, counts the rest.
struct Errors {
    file: String,
    list: Vec<ManifestError>,
    more: u64,
}

impl Errors {
    fn new(file: String) -> Errors {
        Errors {
            file,
            list: Vec::new(),
            more: 0,
        }
    }

    fn push(&mut self, line: u64, field: Option<&str>, message: String) {
        if self.list.len() < MAX_ERRORS_LISTED {
            self.list.push(ManifestError {
                file: self.file.clone(),
                line,
                field: field.map(str::to_string),
                message,
            });
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<ManifestError> {
        if self.more > 0 {
            let line = self.list.last().map_or(0, |e| e.line);
            self.list.push(ManifestError {
                file: self.file.clone(),
                line,
                field: None,
                message: format!("… and {} more errors in this file", self.more),
            });
        }
        self.list
    }
}

/// The columns `wanbatch export` writes besides `id` and the parameters (JSONL adds `history`).
/// A manifest may carry them, so that an export (say of the failed jobs) can be fed back in as
/// a manifest: they are accepted and ignored — only these exact names; any other unknown column
/// is still an error. `id` is kept, so every row maps to the job it came from.
pub const EXPORT_COLUMNS: &[&str] = &[
    "state",
    "request_id",
    "attempts",
    "output",
    "bytes",
    "sha256",
    "error",
    "cost",
    "submitted_at",
    "completed_at",
    "downloaded_at",
    "resubmits_unknown",
    "resubmits_expired",
    "resubmits_failed",
    "maybe_billed_twice",
    "source",
    "history",
];

/// What a column of the manifest holds.
#[derive(Clone, Copy)]
enum Column {
    Id,
    Param(&'static Field),
    /// One of an export's own columns: read back, ignored.
    Ignored,
}

fn column(name: &str) -> Result<Column, String> {
    if name == params::ID_COLUMN {
        return Ok(Column::Id);
    }
    if EXPORT_COLUMNS.contains(&name) {
        return Ok(Column::Ignored);
    }
    params::field(name).map(Column::Param).ok_or_else(|| {
        let hint = closest(name)
            .map(|c| format!(" (did you mean {c:?}?)"))
            .unwrap_or_default();
        format!("unknown column {name:?}{hint}; the columns are id and the API's parameter names")
    })
}

/// The known column nearest to a misspelt one, if it is close.
fn closest(name: &str) -> Option<&'static str> {
    let names = std::iter::once(params::ID_COLUMN).chain(FIELDS.iter().map(|f| f.name));
    names
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Checks an explicit id: it becomes a file name (`OUT/ID.mp4`), so it must not be able to
/// name anything outside OUT or anything the platform reserves.
pub fn check_id(id: &str) -> Result<(), String> {
    const RESERVED: &[&str] = &[
        "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8", "com9", "lpt1",
        "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
    ];
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if id.is_empty() || id.len() > 100 || !ok_chars {
        return Err(format!(
            "{:?} is not a usable id: expected 1 to 100 letters, digits, '-', '_' or '.'",
            id.chars().take(100).collect::<String>()
        ));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) || id.ends_with('.') {
        return Err(format!(
            "{id:?} is not a usable id: it must start with a letter or digit and not end with '.'"
        ));
    }
    let stem = id.split('.').next().unwrap_or(id).to_ascii_lowercase();
    if RESERVED.contains(&stem.as_str()) {
        return Err(format!("{id:?} is a reserved file name on some systems"));
    }
    Ok(())
}

/// Builds a row from (column, cell) pairs; pushes every problem found.
fn build_row<'a>(
    line: u64,
    cells: impl Iterator<Item = (Column, &'a str)>,
    errs: &mut Errors,
) -> Option<(Option<String>, Params)> {
    let before = errs.list.len() as u64 + errs.more;
    let mut id = None;
    let mut values = Vec::new();
    let mut given = [false; 32];
    for (col, cell) in cells {
        match col {
            Column::Id => {
                let cell = cell.trim();
                if !cell.is_empty() {
                    match check_id(cell) {
                        Ok(()) => id = Some(cell.to_string()),
                        Err(e) => errs.push(line, Some("id"), e),
                    }
                }
            }
            Column::Ignored => {}
            Column::Param(fld) => {
                let idx = FIELDS.iter().position(|g| g.name == fld.name).expect("known field");
                given[idx] = true;
                match params::parse_cell(fld, cell) {
                    Ok(Some(v)) => values.push((fld, v)),
                    Ok(None) => {}
                    Err(e) => errs.push(line, Some(fld.name), e),
                }
            }
        }
    }
    for (idx, fld) in FIELDS.iter().enumerate() {
        if fld.required && !given[idx] {
            errs.push(
                line,
                Some(fld.name),
                format!("is required; expected {}", fld.kind.expected()),
            );
        }
    }
    let after = errs.list.len() as u64 + errs.more;
    (after == before).then(|| (id, Params::from_values(values)))
}

type Handle<'h> = dyn FnMut(u64, Option<String>, Params, &mut Errors) + 'h;

fn read_csv(file: File, errs: &mut Errors, handle: &mut Handle<'_>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 16, file));
    let headers = match reader.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => return errs.push(1, None, format!("cannot read the header: {e}")),
    };
    if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
        return errs.push(
            1,
            None,
            "the file is empty: expected a header row of column names".into(),
        );
    }
    let mut columns = Vec::with_capacity(headers.len());
    let mut header_ok = true;
    for (i, raw) in headers.iter().enumerate() {
        let name = String::from_utf8_lossy(raw);
        let name = name.trim_start_matches('\u{feff}').trim();
        if headers
            .iter()
            .take(i)
            .any(|h| String::from_utf8_lossy(h).trim_start_matches('\u{feff}').trim() == name)
        {
            errs.push(1, Some(name), "this column appears twice".into());
            header_ok = false;
            continue;
        }
        match column(name) {
            Ok(c) => columns.push(c),
            Err(e) => {
                errs.push(1, None, e);
                header_ok = false;
            }
        }
    }
    if !header_ok {
        return;
    }
    for fld in FIELDS.iter().filter(|f| f.required) {
        if !columns
            .iter()
            .any(|c| matches!(c, Column::Param(p) if p.name == fld.name))
        {
            errs.push(1, None, format!("missing the required column {:?}", fld.name));
            header_ok = false;
        }
    }
    if !header_ok {
        return;
    }
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let at = e.position().map_or(line, |p| p.line());
                errs.push(at, None, format!("unreadable CSV: {e}"));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        if record.len() == 1 && record[0].iter().all(u8::is_ascii_whitespace) && columns.len() > 1 {
            continue; // a blank line
        }
        if record.len() != columns.len() {
            errs.push(
                line,
                None,
                format!(
                    "has {} fields but the header has {} columns",
                    record.len(),
                    columns.len()
                ),
            );
            continue;
        }
        let mut texts = Vec::with_capacity(record.len());
        let mut utf8_ok = true;
        for (i, cell) in record.iter().enumerate() {
            match std::str::from_utf8(cell) {
                Ok(t) => texts.push(t),
                Err(_) if matches!(columns[i], Column::Ignored) => texts.push(""),
                Err(_) => {
                    let name = match columns[i] {
                        Column::Id => "id",
                        Column::Param(f) => f.name,
                        Column::Ignored => unreachable!("handled above"),
                    };
                    errs.push(line, Some(name), "is not valid UTF-8 text".into());
                    utf8_ok = false;
                }
            }
        }
        if !utf8_ok {
            continue;
        }
        if let Some((id, params)) = build_row(line, columns.iter().copied().zip(texts), errs) {
            handle(line, id, params, errs);
        }
    }
}

/// Longest JSONL line read; longer lines are reported, not loaded.
const MAX_JSONL_LINE: u64 = 1 << 20;

fn read_jsonl(file: File, errs: &mut Errors, handle: &mut Handle<'_>) {
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        line += 1;
        let n = match (&mut reader).take(MAX_JSONL_LINE + 1).read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return errs.push(line, None, format!("cannot read: {e}")),
        };
        if n as u64 > MAX_JSONL_LINE && buf.last() != Some(&b'\n') {
            errs.push(line, None, format!("line is longer than {MAX_JSONL_LINE} bytes"));
            // Skip the rest of this line.
            loop {
                buf.clear();
                match (&mut reader).take(MAX_JSONL_LINE).read_until(b'\n', &mut buf) {
                    Ok(0) => return,
                    Ok(_) if buf.last() == Some(&b'\n') => break,
                    Ok(_) => continue,
                    Err(_) => return,
                }
            }
            continue;
        }
        let mut text: &[u8] = &buf;
        if line == 1 && text.starts_with(b"\xEF\xBB\xBF") {
            text = &text[3..];
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let obj = match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                errs.push(
                    line,
                    None,
                    "expected a JSON object {\"image\": …, \"prompt\": …}".into(),
                );
                continue;
            }
            Err(e) => {
                errs.push(line, None, format!("invalid JSON: {e}"));
                continue;
            }
        };
        let mut cells: Vec<(Column, String)> = Vec::with_capacity(obj.len());
        let mut ok = true;
        for (key, value) in &obj {
            let col = match column(key) {
                Ok(c) => c,
                Err(e) => {
                    errs.push(line, None, e);
                    ok = false;
                    continue;
                }
            };
            if matches!(col, Column::Ignored) {
                continue; // an export's `history` is a list, its counters numbers: not read
            }
            let text = match value {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    errs.push(
                        line,
                        Some(key),
                        "expected a single value, got a JSON list or object".into(),
                    );
                    ok = false;
                    continue;
                }
            };
            cells.push((col, text));
        }
        if !ok {
            continue;
        }
        if let Some((id, params)) = build_row(line, cells.iter().map(|(c, t)| (*c, t.as_str())), errs) {
            handle(line, id, params, errs);
        }
    }
}

#[cfg(test)]
mod tests;
