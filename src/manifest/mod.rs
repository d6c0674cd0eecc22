//! Manifest loading: CSV or JSONL rows → validated job rows with stable ids.
//!
//! Reading streams (one row in memory at a time) and reports *every* error of a file, each
//! naming the file, the line and the field, with what was expected. The caller imports nothing
//! from a set of files that has any error.
//!
//! Files are read as people save them: LF, CRLF or CR line ends, a UTF-8 BOM, headers in any
//! case, `;`- or tab-separated CSV from European or "Text" exports, whole numbers written as
//! `81.0`, Replicate-style `{"input": {…}}` JSONL rows. What cannot be read (another encoding,
//! a spreadsheet, a local image path) gets an error saying what to do instead.
//!
//! Lines are physical lines, as an editor numbers them: the header is line 1, blank lines and
//! the lines inside a quoted multi-line cell count, and a row's line is the one it starts on.
//! Error messages and each row's `source` (`file:line`) use the same numbers.
//!
//! Ids: an explicit `id` must be unique and safe as a file name. A row without `id` gets
//! `r<12 hex of sha256(params)>`, with `-2`, `-3`… for the second, third identical row (counted
//! across the files of one import, in the order given), so re-running a manifest (or one with
//! rows appended) maps every row to the job it made before, while two identical rows stay two
//! jobs. ("Identical" is counted by those 12 hex digits, so two different rows that happen to
//! share them also get `-2` rather than one id twice.)
//!
//! Memory: [`scan_files`] (the import path) holds one row at a time plus about 20 bytes per
//! distinct row for that counter; [`read_files`] also keeps every id, for small inputs.

mod columns;
mod csv_file;
mod encoding;
mod ids;
mod jsonl;
pub mod local;
pub mod params;
mod urls;

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use columns::Column;
pub use columns::EXPORT_COLUMNS;
/// The CSV record reader with physical line numbers, for other files people edit (`review apply`).
pub(crate) use csv_file::Records;
pub use ids::check_id;
pub use local::LocalImage;
pub use params::{Field, Params, FIELDS};
pub use urls::looks_like_local_path;

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

/// One valid row as the streaming reader hands it over: borrowed from the reader's buffers, valid
/// until the next row (so a million rows cost no allocation each).
#[derive(Clone, Copy, Debug)]
pub struct RowRef<'a> {
    pub id: &'a str,
    /// The canonical JSON of the row's parameters and its sha256 (hex).
    pub json: &'a str,
    pub hash: &'a str,
    /// `file:line`.
    pub source: &'a str,
}

impl Row {
    pub fn as_ref(&self) -> RowRef<'_> {
        RowRef {
            id: &self.id,
            json: &self.json,
            hash: &self.hash,
            source: &self.source,
        }
    }
}

impl RowRef<'_> {
    pub fn to_row(&self) -> Row {
        Row {
            id: self.id.to_string(),
            params: Params::from_json(self.json).expect("the canonical JSON parses"),
            json: self.json.to_string(),
            hash: self.hash.to_string(),
            source: self.source.to_string(),
        }
    }
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
    /// `file:line: field: message`; line 0 stands for the whole file (it cannot be opened, or is
    /// not a manifest at all) and is left out: `file: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        match &self.field {
            Some(field) => write!(f, ": {}: {}", field, self.message),
            None => write!(f, ": {}", self.message),
        }
    }
}

/// How many errors of one file are listed before the rest are only counted.
pub const MAX_ERRORS_LISTED: usize = 200;

/// Longest row (a CSV record, which may span lines inside quotes, or a JSONL line) that is read.
/// A row holds at most 23 cells of at most 64 KiB; anything longer is hostile or broken (an
/// unclosed quote) and stops that file with an error instead of being buffered.
pub const MAX_ROW_BYTES: u64 = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.csv`: comma-separated, or `;`/tab when the header line says so.
    Csv,
    /// `.tsv`: tab-separated, or what the header line says.
    Tsv,
    /// `.txt`: JSONL if it starts with `{`, else delimited text (tab unless the header says
    /// otherwise: Excel's "Text (Tab delimited)" saves `.txt`).
    Text,
    /// `.jsonl`, `.ndjson`: one JSON object per line.
    Jsonl,
}

impl Format {
    pub fn of(path: &Path) -> Option<Format> {
        match extension(path).as_str() {
            "csv" => Some(Format::Csv),
            "tsv" | "tab" => Some(Format::Tsv),
            "txt" => Some(Format::Text),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }

    /// Why a file that is no manifest is not read, and what to do instead.
    fn refusal(path: &Path) -> String {
        match extension(path).as_str() {
            "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" | "numbers" => {
                "this is a spreadsheet file: export it as CSV (File → Save As → CSV UTF-8)".into()
            }
            "json" => "a .json file is not read: manifests are JSON Lines, one object per line; if this file \
                       is that, name it .jsonl"
                .into(),
            _ => "unknown manifest type: the name must end in .csv, .jsonl or .ndjson (or .tsv or .txt for \
                  tab-separated text)"
                .into(),
        }
    }
}

/// The file name's ending, in lower case, without the dot.
fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Reads every row of every file, handing valid rows to `on_row` in file order. Returns all
/// errors (already capped per file); rows are only meaningful if the list comes back empty.
///
/// Keeps every id in memory to find ids used twice: for small inputs (tests, benches). Imports
/// use [`scan_files`], which leaves that check to the store's staging table.
pub fn read_files(paths: &[impl AsRef<Path>], mut on_row: impl FnMut(Row)) -> Vec<ManifestError> {
    // lower-cased id -> (id, where first seen), across all files of one import. Compared
    // ignoring case: `A` and `a` are one file (OUT/a.mp4) on macOS and Windows.
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    let mut listed: Vec<Errors> = paths
        .iter()
        .map(|p| Errors::new(p.as_ref().display().to_string()))
        .collect();
    scan_with(
        paths,
        &LoadOptions::default(),
        &mut |row: &RowRef| {
            let key = row.id.to_ascii_lowercase();
            match seen.get(&key) {
                Some((first_id, first)) if *first_id == row.id => {
                    Some(format!("{:?} is used twice: here and at {first}", row.id))
                }
                Some((first_id, first)) => Some(format!(
                    "{:?} is {first_id:?} of {first} but for case, and they would share one file",
                    row.id
                )),
                None => {
                    seen.insert(key, (row.id.to_string(), row.source.to_string()));
                    None
                }
            }
        },
        &mut |row: &RowRef| on_row(row.to_row()),
        &mut |file: usize, e: ManifestError| listed[file].push(e),
        &mut |_| {},
    );
    listed.into_iter().flat_map(Errors::finish).collect()
}

/// Reads every row of every file in one streaming pass, handing valid rows (borrowed, see
/// [`RowRef`]) to `on_row` and every
/// error (uncapped, in file and line order) to `on_error` with the index of its file in `paths`.
///
/// Does not check that explicit ids are unique (that needs every id at hand; the import's
/// staging table does it on disk). Memory stays bounded by the identical-row counter: about
/// 20 bytes per distinct row.
pub fn scan_files(
    paths: &[impl AsRef<Path>],
    mut on_row: impl FnMut(&RowRef),
    mut on_error: impl FnMut(usize, ManifestError),
) {
    let opts = LoadOptions::default();
    scan_with(
        paths,
        &opts,
        &mut |_: &RowRef| None,
        &mut on_row,
        &mut on_error,
        &mut |_| {},
    )
}

/// What a manifest may hold beyond its own text.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Largest local image accepted.
    pub max_image_bytes: u64,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            max_image_bytes: local::DEFAULT_MAX_IMAGE_BYTES,
        }
    }
}

/// `scan_files`, with options, handing each local image file (once, when first checked and
/// found good) to `on_image`.
pub fn scan_files_with(
    paths: &[impl AsRef<Path>],
    opts: &LoadOptions,
    mut on_row: impl FnMut(&RowRef),
    mut on_error: impl FnMut(usize, ManifestError),
    mut on_image: impl FnMut(LocalImage),
) {
    scan_with(
        paths,
        opts,
        &mut |_: &RowRef| None,
        &mut on_row,
        &mut on_error,
        &mut on_image,
    )
}

fn scan_with(
    paths: &[impl AsRef<Path>],
    opts: &LoadOptions,
    check: &mut dyn FnMut(&RowRef) -> Option<String>,
    on_row: &mut dyn FnMut(&RowRef),
    on_error: &mut dyn FnMut(usize, ManifestError),
    on_image: &mut dyn FnMut(LocalImage),
) {
    // Identical rows are counted across all files of one import, in order, so two identical
    // rows are two jobs even when they sit in different files.
    let mut occurrences = ids::Occurrences::default();
    // Reused for every row: the id and `file:line` of the row being handed over.
    let mut id_buf = String::new();
    let mut source_buf = String::new();
    let mut scratch = Scratch {
        local: local::Files::new(opts.max_image_bytes),
        ..Scratch::default()
    };
    for (index, path) in paths.iter().enumerate() {
        let path = path.as_ref();
        // Local images are named relative to their manifest's folder.
        scratch.local.base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let mut sink = |e: ManifestError| on_error(index, e);
        let mut file_errors = Sink {
            file: path.display().to_string(),
            count: 0,
            sink: &mut sink,
        };
        let mut handle = |line: u64, explicit_id: Option<&str>, json: &str, errs: &mut Sink| {
            let digest = Sha256::digest(json.as_bytes());
            let mut hex_buf = [0u8; 64];
            hex::encode_to_slice(digest, &mut hex_buf).expect("64 hex digits");
            let hash = std::str::from_utf8(&hex_buf).expect("hex is ASCII");
            id_buf.clear();
            match explicit_id {
                Some(id) => id_buf.push_str(id),
                None => {
                    id_buf.push('r');
                    id_buf.push_str(&hash[..12]);
                    match occurrences.next(&digest) {
                        1 => {}
                        n => write!(id_buf, "-{n}").expect("writing to a String"),
                    }
                }
            }
            source_buf.clear();
            write!(source_buf, "{}:{}", errs.file, line).expect("writing to a String");
            let row = RowRef {
                id: &id_buf,
                json,
                hash,
                source: &source_buf,
            };
            match check(&row) {
                Some(problem) => errs.push(line, Some("id"), problem),
                None => on_row(&row),
            }
        };
        read_file(path, &mut file_errors, &mut scratch, &mut handle);
        for img in scratch.local.take_new() {
            on_image(img);
        }
    }
}

/// Reads one file of any format; its errors go to `errs`, its valid rows to `handle`.
fn read_file(path: &Path, errs: &mut Sink, scratch: &mut Scratch, handle: &mut Handle<'_>) {
    let Some(format) = Format::of(path) else {
        return errs.push(0, None, Format::refusal(path));
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return errs.push(0, None, format!("cannot open: {e}")),
    };
    let mut input = BufReader::with_capacity(READ_BUFFER, file);
    // The first read (up to READ_BUFFER bytes) is enough to tell the encoding, the kind of
    // `.txt` and the CSV delimiter; nothing more is looked ahead at.
    let head = match input.fill_buf() {
        Ok(h) => h,
        Err(e) => return errs.push(1, None, format!("cannot read: {e}")),
    };
    let csv = format != Format::Jsonl;
    match encoding::sniff(head, encoding::save_as(csv)) {
        encoding::Start::Utf16(why) => return errs.push(1, None, why),
        encoding::Start::Utf8 { bom } => input.consume(bom),
    }
    let head = input.fill_buf().unwrap_or_default();
    let first = head.iter().find(|b| !b.is_ascii_whitespace());
    match format {
        Format::Csv => csv_file::read(input, b',', errs, scratch, handle),
        Format::Tsv => csv_file::read(input, b'\t', errs, scratch, handle),
        Format::Text if first == Some(&b'{') => jsonl::read(input, errs, scratch, handle),
        Format::Text => csv_file::read(input, b'\t', errs, scratch, handle),
        Format::Jsonl => jsonl::read(input, errs, scratch, handle),
    }
}

/// Bytes read from a manifest at a time.
const READ_BUFFER: usize = 1 << 16;

/// Where valid rows go: `(line, explicit id, canonical JSON, errors)`.
type Handle<'h> = dyn FnMut(u64, Option<&str>, &str, &mut Sink) + 'h;

/// Where one file's errors go while it is read; counts them so a row knows it had one.
pub(super) struct Sink<'s> {
    file: String,
    count: u64,
    sink: &'s mut dyn FnMut(ManifestError),
}

impl Sink<'_> {
    pub(super) fn push(&mut self, line: u64, field: Option<&str>, message: String) {
        self.count += 1;
        (self.sink)(ManifestError {
            file: self.file.clone(),
            line,
            field: field.map(str::to_string),
            message,
        });
    }
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

    fn push(&mut self, e: ManifestError) {
        if self.list.len() < MAX_ERRORS_LISTED {
            self.list.push(e);
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

/// Buffers reused for every row: each cell's JSON value, then the row's canonical JSON.
#[derive(Default)]
pub(super) struct Scratch {
    values: Vec<u8>,
    json: Vec<u8>,
    /// Local image files named so far, checked once each.
    local: local::Files,
}

/// Builds a row from (column, cell) pairs; pushes every problem found. For a valid row, leaves
/// its canonical JSON (the fields in `FIELDS` order, as `Params::to_json` writes them) in
/// `scratch.json` and returns its explicit id, if it has one.
fn build_row<'a>(
    line: u64,
    cells: impl Iterator<Item = (Column, &'a str)>,
    errs: &mut Sink,
    scratch: &mut Scratch,
) -> Option<Option<&'a str>> {
    let before = errs.count;
    let mut id = None;
    let mut given = [false; 32];
    // Where each field's JSON value is in `scratch.values`.
    let mut ranges = [(0usize, 0usize); 32];
    scratch.values.clear();
    for (col, cell) in cells {
        match col {
            Column::Id => {
                let cell = cell.trim();
                if !cell.is_empty() {
                    match check_id(cell) {
                        Ok(()) => id = Some(cell),
                        Err(e) => errs.push(line, Some("id"), e),
                    }
                }
            }
            Column::Ignored => {}
            Column::Unnamed(n) => {
                if !cell.trim().is_empty() {
                    let value = params::shorten(cell.trim());
                    errs.push(
                        line,
                        None,
                        format!("column {n} has no name in the header but holds {value:?}"),
                    );
                }
            }
            Column::Param(idx) => {
                let fld = &FIELDS[idx];
                given[idx] = true;
                let start = scratch.values.len();
                if matches!(fld.name, "image" | "last_image") && urls::looks_like_local_path(cell) {
                    match scratch.local.check(cell) {
                        Ok(url) => {
                            params::write_str(&mut scratch.values, url);
                            ranges[idx] = (start, scratch.values.len());
                        }
                        Err(e) => errs.push(line, Some(fld.name), e),
                    }
                    continue;
                }
                match params::write_cell(fld, cell, &mut scratch.values) {
                    Ok(_) => ranges[idx] = (start, scratch.values.len()),
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
    if errs.count != before {
        return None;
    }
    let json = &mut scratch.json;
    json.clear();
    json.push(b'{');
    for (fld, &(start, end)) in FIELDS.iter().zip(&ranges) {
        if start == end {
            continue; // not given
        }
        if json.len() > 1 {
            json.push(b',');
        }
        // Field names are plain ASCII: as a JSON string they are only quoted.
        json.push(b'"');
        json.extend_from_slice(fld.name.as_bytes());
        json.extend_from_slice(b"\":");
        json.extend_from_slice(&scratch.values[start..end]);
    }
    json.push(b'}');
    Some(id)
}

/// The canonical JSON `build_row` left in `scratch`.
fn json_of(scratch: &Scratch) -> &str {
    std::str::from_utf8(&scratch.json).expect("JSON written from str values is UTF-8")
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod saved_files_tests;
#[cfg(test)]
mod tests;
