//! Manifest loading: CSV or JSONL rows → validated job rows with stable ids.
//!
//! Reading streams (one row in memory at a time) and reports *every* error of a file, each
//! naming the file, the line and the field, with what was expected. The caller imports nothing
//! from a set of files that has any error.
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

pub mod params;

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}:{}: {}: {}", self.file, self.line, field, self.message),
            None => write!(f, "{}:{}: {}", self.file, self.line, self.message),
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
    scan_with(paths, &mut |_: &RowRef| None, &mut on_row, &mut on_error)
}

fn scan_with(
    paths: &[impl AsRef<Path>],
    check: &mut dyn FnMut(&RowRef) -> Option<String>,
    on_row: &mut dyn FnMut(&RowRef),
    on_error: &mut dyn FnMut(usize, ManifestError),
) {
    // Identical rows are counted across all files of one import, in order, so two identical
    // rows are two jobs even when they sit in different files.
    let mut occurrences = Occurrences::default();
    // Reused for every row: the id and `file:line` of the row being handed over.
    let mut id_buf = String::new();
    let mut source_buf = String::new();
    let mut scratch = Scratch::default();
    for (index, path) in paths.iter().enumerate() {
        let path = path.as_ref();
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
        match (Format::of(path), File::open(path)) {
            (None, _) => file_errors.push(
                0,
                None,
                "unknown manifest type: the name must end in .csv, .jsonl or .ndjson".into(),
            ),
            (_, Err(e)) => file_errors.push(0, None, format!("cannot open: {e}")),
            (Some(Format::Csv), Ok(file)) => read_csv(file, &mut file_errors, &mut scratch, &mut handle),
            (Some(Format::Jsonl), Ok(file)) => read_jsonl(file, &mut file_errors, &mut scratch, &mut handle),
        }
    }
}

/// How many times each id stem (the 48 bits of the hash an automatic id shows) was seen so far.
///
/// Keyed by the stem rather than the whole hash, so two different rows whose hashes share those
/// 48 bits (likely once in a few hundred million-row imports) get `rX` and `rX-2` instead of one
/// id twice. Most stems are seen once: those cost one `u64` in a set; only repeats get a counter.
#[derive(Default)]
struct Occurrences {
    once: std::collections::HashSet<u64, BuildStem>,
    more: HashMap<u64, u32, BuildStem>,
}

impl Occurrences {
    /// Counts one more row with this hash; returns its occurrence number (1 for the first).
    fn next(&mut self, digest: &[u8]) -> u32 {
        let mut stem = [0u8; 8];
        stem[..6].copy_from_slice(&digest[..6]);
        let stem = u64::from_le_bytes(stem);
        if self.once.insert(stem) {
            return 1;
        }
        let n = self.more.entry(stem).or_insert(1);
        *n += 1;
        *n
    }
}

/// The stems are already uniformly random bits: hash them by taking them as they are.
#[derive(Default, Clone, Copy)]
struct BuildStem;

impl std::hash::BuildHasher for BuildStem {
    type Hasher = StemHasher;
    fn build_hasher(&self) -> StemHasher {
        StemHasher(0)
    }
}

struct StemHasher(u64);

impl std::hash::Hasher for StemHasher {
    fn finish(&self) -> u64 {
        // Spread the 48 random bits over the whole word (hashbrown reads the top 7 bits too).
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Where one file's errors go while it is read; counts them so a row knows it had one.
struct Sink<'s> {
    file: String,
    count: u64,
    sink: &'s mut dyn FnMut(ManifestError),
}

impl Sink<'_> {
    fn push(&mut self, line: u64, field: Option<&str>, message: String) {
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
    /// The parameter `FIELDS[i]`.
    Param(usize),
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
    FIELDS
        .iter()
        .position(|f| f.name == name)
        .map(Column::Param)
        .ok_or_else(|| {
            let hint = closest(name)
                .map(|c| format!(" (did you mean {c:?}?)"))
                .unwrap_or_default();
            format!(
                "unknown column {:?}{hint}; the columns are id and the API's parameter names",
                params::shorten(name)
            )
        })
}

/// The known column nearest to a misspelt one, if it is close.
fn closest(name: &str) -> Option<&'static str> {
    let names = std::iter::once(params::ID_COLUMN).chain(FIELDS.iter().map(|f| f.name));
    let len = name.chars().count();
    names
        // The distance is at least the difference in length: skip the quadratic work for those.
        .filter(|c| c.len().abs_diff(len) <= 2)
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

/// Buffers reused for every row: each cell's JSON value, then the row's canonical JSON.
#[derive(Default)]
struct Scratch {
    values: Vec<u8>,
    json: Vec<u8>,
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
            Column::Param(idx) => {
                let fld = &FIELDS[idx];
                given[idx] = true;
                let start = scratch.values.len();
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

type Handle<'h> = dyn FnMut(u64, Option<&str>, &str, &mut Sink) + 'h;

/// A reader that refuses to go more than `MAX_ROW_BYTES` past the start of the row being read,
/// so a hostile row (a 10 MB field, a million columns, an unclosed quote) costs bounded memory.
struct RowCapped<R> {
    inner: R,
    read: u64,
    /// Byte offset where reading must stop; the CSV loop moves it before each record.
    limit: Rc<Cell<u64>>,
}

/// The error `RowCapped` returns; recognised to word the manifest error.
#[derive(Debug)]
struct RowTooLong;

impl fmt::Display for RowTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a row is longer than {} MiB", MAX_ROW_BYTES >> 20)
    }
}

impl std::error::Error for RowTooLong {}

impl<R: Read> Read for RowCapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = self.limit.get().saturating_sub(self.read);
        if room == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, RowTooLong));
        }
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        Ok(n)
    }
}

/// The message for a CSV error: a capped row is worded for the user, the rest as the parser says.
fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Io(io) if io.get_ref().is_some_and(|i| i.is::<RowTooLong>()) => format!(
            "a row is longer than {} MiB (an unclosed quote?); the rest of the file is not read",
            MAX_ROW_BYTES >> 20
        ),
        _ => format!("unreadable CSV: {e}"),
    }
}

/// The CSV parser's own buffer: how far it may read ahead of the record it is parsing.
const CSV_BUFFER: u64 = 1 << 16;

fn read_csv(file: File, errs: &mut Sink, scratch: &mut Scratch, handle: &mut Handle<'_>) {
    let limit = Rc::new(Cell::new(MAX_ROW_BYTES + CSV_BUFFER));
    let capped = RowCapped {
        inner: file,
        read: 0,
        limit: limit.clone(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(CSV_BUFFER as usize)
        .from_reader(capped);
    let headers = match reader.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            let why = csv_problem(&e);
            return errs.push(1, None, format!("cannot read the header: {why}"));
        }
    };
    if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
        return errs.push(
            1,
            None,
            "the file is empty: expected a header row of column names".into(),
        );
    }
    let mut columns = Vec::with_capacity(headers.len().min(FIELDS.len() + 1));
    let mut names = std::collections::HashSet::new();
    let mut header_ok = true;
    for raw in headers.iter() {
        let name = String::from_utf8_lossy(raw);
        let name = name.trim_start_matches('\u{feff}').trim();
        if !names.insert(name.to_string()) {
            errs.push(1, Some(&params::shorten(name)), "this column appears twice".into());
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
            .any(|c| matches!(c, Column::Param(p) if FIELDS[*p].name == fld.name))
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
        limit.set(reader.position().byte() + MAX_ROW_BYTES + CSV_BUFFER);
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let at = e.position().map_or(line, |p| p.line());
                errs.push(at, None, csv_problem(&e));
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
        let mut utf8_ok = true;
        for (i, cell) in record.iter().enumerate() {
            if std::str::from_utf8(cell).is_err() {
                let name = match columns[i] {
                    Column::Ignored => continue, // read as empty: not used
                    Column::Id => "id",
                    Column::Param(f) => FIELDS[f].name,
                };
                errs.push(line, Some(name), "is not valid UTF-8 text".into());
                utf8_ok = false;
            }
        }
        if !utf8_ok {
            continue;
        }
        let texts = record.iter().map(|cell| std::str::from_utf8(cell).unwrap_or(""));
        if let Some(id) = build_row(line, columns.iter().copied().zip(texts), errs, scratch) {
            handle(line, id, json_of(scratch), errs);
        }
    }
}

/// A JSON object's members in the order written, duplicates kept: serde_json's map would keep
/// only the last of two equal keys, silently dropping a value the user wrote.
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object {\"image\": …, \"prompt\": …}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    v.push(entry);
                }
                Ok(Members(v))
            }
        }
        d.deserialize_map(Visit)
    }
}

fn read_jsonl(file: File, errs: &mut Sink, scratch: &mut Scratch, handle: &mut Handle<'_>) {
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        line += 1;
        let n = match (&mut reader).take(MAX_ROW_BYTES + 1).read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return errs.push(line, None, format!("cannot read: {e}")),
        };
        if n as u64 > MAX_ROW_BYTES && buf.last() != Some(&b'\n') {
            // Like CSV: a line this long is not a row, and skipping it could mean reading an
            // endless stream; the file is reported and left.
            return errs.push(
                line,
                None,
                format!(
                    "line is longer than {} MiB; the rest of the file is not read",
                    MAX_ROW_BYTES >> 20
                ),
            );
        }
        let mut text: &[u8] = &buf;
        if line == 1 && text.starts_with(b"\xEF\xBB\xBF") {
            text = &text[3..];
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let obj = match serde_json::from_slice::<Members>(text) {
            Ok(Members(members)) => members,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
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
        let mut keys = std::collections::HashSet::new();
        if let Some((dup, _)) = obj.iter().find(|(k, _)| !keys.insert(k.as_str())) {
            errs.push(line, Some(&params::shorten(dup)), "this key appears twice".into());
            continue;
        }
        let mut cells: Vec<(Column, Cow<str>)> = Vec::with_capacity(obj.len());
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
                Value::Null => Cow::Borrowed(""),
                Value::String(s) => Cow::Borrowed(s.as_str()),
                Value::Number(n) => Cow::Owned(n.to_string()),
                Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
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
        if let Some(id) = build_row(line, cells.iter().map(|(c, t)| (*c, t.as_ref())), errs, scratch) {
            handle(line, id, json_of(scratch), errs);
        }
    }
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
