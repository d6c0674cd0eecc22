//! Delimited text (CSV, and `;`- or tab-separated): records with the physical line each starts
//! on, the header, and the rows handed to `build_row`.
//!
//! Parsing is `csv_core`'s (quotes, doubled quotes, any mix of LF/CRLF/CR); this module drives
//! it over its own buffer so that it sees every byte and counts lines itself. The `csv` crate's
//! `Reader` cannot give a row's line: its count is of `\n` bytes consumed *before* the record
//! (so after a CRLF row, whose record ends at the `\r`, the next row is one line early; blank
//! lines it skips inside the next read are not counted for that row; a CR-only file is all
//! line 1).
//!
//! Lines: a line break is `\n`, `\r\n` or a lone `\r`, in quoted cells too, so a number is what
//! an editor shows. Line ends between records are skipped here, before the record is read, so
//! a record's line is that of its first byte.
//!
//! Separator: found from the header line alone ([`sniff_delimiter`]): of `,`, `;` and tab, the
//! one that splits it into the most known column names, so a European Excel file (`;`, since
//! `,` is its decimal mark) or a "Text (Tab delimited)" export reads without a setting. In such
//! a file (separator not `,`) a number cell written `digits,digits` (`7,5`, `81,0`) is read with
//! its comma as the decimal point; nothing else is rewritten (`1.234,5` stays an error), and in
//! a comma file a comma is never a decimal point.
//!
//! Memory: the read buffer plus one record, which may not pass `MAX_ROW_BYTES` (a hostile or
//! unclosed-quote row is one error, and the rest of that file is not read).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::BufRead;

use csv_core::ReadRecordResult;

use super::columns::{self, Column};
use super::encoding::{first_bad_byte, NotUtf8};
use super::params::{self, Kind, FIELDS};
use super::{build_row, json_of, Handle, Scratch, Sink, MAX_ROW_BYTES};

/// Records of delimited text, each with the line it starts on.
pub(crate) struct Records<R> {
    input: R,
    parser: csv_core::Reader,
    /// The current record's cells end to end, and where each ends (`csv_core`'s layout).
    cells: Vec<u8>,
    ends: Vec<usize>,
    len: usize,
    /// The line of the next byte to read, and whether the byte before it was a `\r` (whose `\n`
    /// would end the same line).
    line: u64,
    after_cr: bool,
}

/// Why a file stopped being read; the rest of it is not.
#[derive(Debug)]
pub(crate) enum Stop {
    Io(std::io::Error),
    TooLong,
}

impl Stop {
    pub(crate) fn message(&self) -> String {
        match self {
            Stop::Io(e) => format!("cannot read: {e}"),
            Stop::TooLong => format!(
                "a row is longer than {} MiB (an unclosed quote?); the rest of the file is not read",
                MAX_ROW_BYTES >> 20
            ),
        }
    }
}

impl<R: BufRead> Records<R> {
    pub(crate) fn new(input: R, delimiter: u8) -> Records<R> {
        Records {
            input,
            parser: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            cells: vec![0; 4096],
            ends: vec![0; 32],
            len: 0,
            line: 1,
            after_cr: false,
        }
    }

    /// Reads the next record: `Ok(Some(line))` with the line it starts on, `Ok(None)` at the end.
    /// An error comes with the line of the record it stopped in.
    pub(crate) fn next(&mut self) -> Result<Option<u64>, (u64, Stop)> {
        // Empty lines are no records (`csv_core` would skip them too, but inside the read of the
        // record after them, which then could not tell where it starts).
        loop {
            let buf = self.input.fill_buf().map_err(|e| (self.line, Stop::Io(e)))?;
            let blank = buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
            if blank == 0 {
                break;
            }
            self.line += line_breaks(&buf[..blank], &mut self.after_cr);
            self.input.consume(blank);
        }
        let start = self.line;
        let (mut out, mut end, mut read) = (0, 0, 0u64);
        loop {
            let buf = self.input.fill_buf().map_err(|e| (start, Stop::Io(e)))?;
            let (res, nin, nout, nend) = self
                .parser
                .read_record(buf, &mut self.cells[out..], &mut self.ends[end..]);
            self.line += line_breaks(&buf[..nin], &mut self.after_cr);
            self.input.consume(nin);
            (out, end, read) = (out + nout, end + nend, read + nin as u64);
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => self.cells.resize(self.cells.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                ReadRecordResult::Record => {
                    self.len = end;
                    return Ok(Some(start));
                }
                ReadRecordResult::End => return Ok(None),
            }
            if read > MAX_ROW_BYTES {
                return Err((start, Stop::TooLong));
            }
        }
    }

    /// How many cells the current record has.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The current record's `i`th cell.
    pub(crate) fn cell(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.cells[start..self.ends[i]]
    }

    /// The current record's cells as text, if all are UTF-8 (one check for the whole record).
    fn texts(&self) -> Option<impl Iterator<Item = &str> + Clone + '_> {
        let ends = &self.ends[..self.len];
        let all = std::str::from_utf8(&self.cells[..ends.last().copied().unwrap_or(0)]).ok()?;
        // Valid as a whole but split inside a character (`\xC3,\xA9`): not valid cell by cell.
        if !ends.iter().all(|&e| all.is_char_boundary(e)) {
            return None;
        }
        Some((0..self.len).map(move |i| &all[if i == 0 { 0 } else { ends[i - 1] }..ends[i]]))
    }
}

/// How many lines `bytes` ends (`\n`, `\r\n`, lone `\r`), given whether the byte before them
/// was a `\r`; updates that. Counts rather than walks byte by byte, which the compiler vectorises.
fn line_breaks(bytes: &[u8], after_cr: &mut bool) -> u64 {
    let Some(&last) = bytes.last() else {
        return 0;
    };
    let lf = bytes.iter().filter(|&&b| b == b'\n').count();
    let cr = bytes.iter().filter(|&&b| b == b'\r').count();
    let mut crlf = usize::from(*after_cr && bytes[0] == b'\n');
    if cr > 0 {
        crlf += bytes.windows(2).filter(|w| w[0] == b'\r' && w[1] == b'\n').count();
    }
    *after_cr = last == b'\r';
    (lf + cr - crlf) as u64
}

/// The delimiter the header line uses: of `preferred`, `,`, `;` and tab, the one that splits it
/// into the most known column names (ties to the earlier); with no known name at all, the one
/// found most often outside quotes if `preferred` is not there. `head` is the file's first read.
pub(super) fn sniff_delimiter(head: &[u8], preferred: u8) -> u8 {
    let head = &head[head.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count()..];
    let mut quoted = false;
    let line_end = head
        .iter()
        .position(|&b| {
            quoted ^= b == b'"';
            !quoted && matches!(b, b'\r' | b'\n')
        })
        .unwrap_or(head.len());
    let line = &head[..line_end];
    let candidates = [preferred, b',', b';', b'\t'];
    let known = |d: u8| {
        split_outside_quotes(line, d)
            .filter(|name| {
                let name = name.trim_ascii();
                let name = name.strip_prefix(b"\"").unwrap_or(name);
                let name = name.strip_suffix(b"\"").unwrap_or(name);
                std::str::from_utf8(name).is_ok_and(|n| columns::known(n).is_some())
            })
            .count()
    };
    let (most_known, best) = candidates
        .iter()
        .map(|&d| (known(d), d))
        .fold((0, preferred), |best, c| if c.0 > best.0 { c } else { best });
    if most_known > 0 {
        return best;
    }
    let count = |d: u8| split_outside_quotes(line, d).count() - 1;
    if count(preferred) > 0 {
        return preferred;
    }
    candidates
        .iter()
        .map(|&d| (count(d), d))
        .fold((0, preferred), |best, c| if c.0 > best.0 { c } else { best })
        .1
}

/// The parts of `line` between `delimiter`s that are not inside quotes.
fn split_outside_quotes(line: &[u8], delimiter: u8) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    line.split(move |&b| {
        quoted ^= b == b'"';
        !quoted && b == delimiter
    })
}

/// Reads a delimited file (its BOM already skipped): the header, then every row.
pub(super) fn read(
    mut input: impl BufRead,
    preferred: u8,
    errs: &mut Sink,
    scratch: &mut Scratch,
    handle: &mut Handle<'_>,
) {
    let delimiter = sniff_delimiter(input.fill_buf().unwrap_or_default(), preferred);
    let mut records = Records::new(input, delimiter);
    let mut not_utf8 = NotUtf8::default();
    let header_line = match records.next() {
        Ok(Some(line)) => line,
        Ok(None) => {
            return errs.push(
                1,
                None,
                "the file is empty: expected a header row of column names".into(),
            )
        }
        Err((line, stop)) => return errs.push(line, None, format!("cannot read the header: {}", stop.message())),
    };
    let Some(columns) = header(&records, header_line, &mut not_utf8, errs) else {
        return;
    };
    // With `;` or tab between cells, a comma in a number is its decimal point (European Excel).
    let numeric: Vec<bool> = columns
        .iter()
        .map(|c| matches!(c, Column::Param(i) if matches!(FIELDS[*i].kind, Kind::Int { .. } | Kind::Number { .. })))
        .collect();
    let decimal_comma = delimiter != b',';
    loop {
        let line = match records.next() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err((line, stop)) => return errs.push(line, None, stop.message()),
        };
        let n = records.len();
        if (n == 1 || n == columns.len()) && (0..n).all(|i| records.cell(i).iter().all(u8::is_ascii_whitespace)) {
            continue; // a blank line, or a spreadsheet's row of empty cells
        }
        if n != columns.len() {
            let had = format!("has {n} fields but the header has {} columns", columns.len());
            errs.push(line, None, had);
            continue;
        }
        let Some(texts) = records.texts() else {
            report_non_utf8(&records, &columns, line, &mut not_utf8, errs);
            continue;
        };
        let cols = columns.iter().copied();
        if decimal_comma && texts.clone().zip(&numeric).any(|(t, num)| *num && t.contains(',')) {
            // Rare (a number with a decimal comma): owned copies of the cells, for this row only.
            let owned: Vec<Cow<str>> = texts
                .zip(&numeric)
                .map(|(t, num)| if *num { decimal_point(t) } else { Cow::Borrowed(t) })
                .collect();
            if let Some(id) = build_row(line, cols.zip(owned.iter().map(AsRef::as_ref)), errs, scratch) {
                handle(line, id, json_of(scratch), errs);
            }
        } else if let Some(id) = build_row(line, cols.zip(texts), errs, scratch) {
            handle(line, id, json_of(scratch), errs);
        }
    }
}

/// `1,5` → `1.5`: a number written with a decimal comma (digits, one comma, digits); any other
/// text is left as it is, to be refused with the usual message.
fn decimal_point(cell: &str) -> Cow<'_, str> {
    let t = cell.trim();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match t.split_once(',') {
        Some((int, frac)) if digits(int.trim_start_matches(['+', '-'])) && digits(frac) => {
            Cow::Owned(format!("{int}.{frac}"))
        }
        _ => Cow::Borrowed(cell),
    }
}

/// Reads the header record into columns; `None` (after pushing every problem) if it is unusable.
fn header<R: BufRead>(records: &Records<R>, line: u64, not_utf8: &mut NotUtf8, errs: &mut Sink) -> Option<Vec<Column>> {
    let n = records.len();
    if n == 0 || (n == 1 && records.cell(0).trim_ascii().is_empty()) {
        errs.push(
            line,
            None,
            "the file is empty: expected a header row of column names".into(),
        );
        return None;
    }
    let mut columns = Vec::with_capacity(n.min(FIELDS.len() + 1));
    // Canonical name → the name as first written.
    let mut names: HashMap<Cow<str>, String> = HashMap::new();
    let mut ok = true;
    for i in 0..n {
        let raw = records.cell(i);
        let Ok(name) = std::str::from_utf8(raw) else {
            let byte = first_bad_byte(raw).unwrap_or(0);
            errs.push(line, None, not_utf8.message(line, byte, true));
            return None;
        };
        if name.trim().is_empty() {
            columns.push(Column::Unnamed(i + 1));
            continue;
        }
        let written = name.trim();
        let canonical = columns::canonical(name, columns::known(name));
        if let Some(first) = names.get(&canonical) {
            let also = if first == written {
                String::new()
            } else {
                format!(" (as {first:?} and {:?})", params::shorten(written))
            };
            errs.push(
                line,
                Some(&params::shorten(written)),
                format!("this column appears twice{also}"),
            );
            ok = false;
            continue;
        }
        names.insert(canonical, params::shorten(written));
        match columns::column(name) {
            Ok(c) => columns.push(c),
            Err(e) => {
                errs.push(line, None, e);
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    for (i, fld) in FIELDS.iter().enumerate().filter(|(_, f)| f.required) {
        if !columns.contains(&Column::Param(i)) {
            errs.push(line, None, format!("missing the required column {:?}", fld.name));
            ok = false;
        }
    }
    ok.then_some(columns)
}

/// Pushes an error for each cell of the record that is not UTF-8 (cells of ignored columns are
/// not read, so not checked).
fn report_non_utf8<R: BufRead>(
    records: &Records<R>,
    columns: &[Column],
    line: u64,
    not_utf8: &mut NotUtf8,
    errs: &mut Sink,
) {
    for (i, col) in columns.iter().enumerate() {
        let Some(byte) = first_bad_byte(records.cell(i)) else {
            continue;
        };
        let field = match col {
            Column::Ignored => continue,
            Column::Id => Some(params::ID_COLUMN),
            Column::Param(f) => Some(FIELDS[*f].name),
            Column::Unnamed(_) => None,
        };
        errs.push(line, field, not_utf8.message(line, byte, true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of `doc` with its line, read `cap` bytes at a time.
    fn records(doc: &[u8], cap: usize) -> Vec<(u64, Vec<String>)> {
        let mut records = Records::new(std::io::BufReader::with_capacity(cap, doc), b',');
        let mut out = Vec::new();
        while let Some(line) = records.next().unwrap() {
            let cells = (0..records.len())
                .map(|i| String::from_utf8(records.cell(i).to_vec()).unwrap())
                .collect();
            out.push((line, cells));
        }
        out
    }

    #[test]
    fn lines_are_counted_alike_however_the_reads_split_the_bytes() {
        // CRLF, a CRLF inside quotes, a blank CRLF line, a lone CR, LF, a blank LF line, no end.
        let doc = b"h1,h2\r\na,\"x\r\ny\"\r\n\r\nb,c\rd,e\n\nf,g";
        let cells = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
        let want = vec![
            (1, cells("h1", "h2")),
            (2, cells("a", "x\r\ny")),
            (5, cells("b", "c")),
            (6, cells("d", "e")),
            (8, cells("f", "g")),
        ];
        // 1 and 2 split every `\r\n` at a read boundary somewhere.
        for cap in [1, 2, 3, 5, 1 << 16] {
            assert_eq!(records(doc, cap), want, "reads of {cap} bytes");
        }
    }

    #[test]
    fn a_row_past_the_cap_stops_the_file_at_its_own_line() {
        let mut doc = b"image,prompt\n\n\"".to_vec();
        doc.extend(std::iter::repeat_n(b'a', (MAX_ROW_BYTES + 10) as usize));
        let mut records = Records::new(std::io::BufReader::new(doc.as_slice()), b',');
        assert_eq!(records.next().unwrap(), Some(1));
        assert!(matches!(records.next(), Err((3, Stop::TooLong))));
    }

    #[test]
    fn the_separator_is_the_one_that_gives_known_names() {
        assert_eq!(sniff_delimiter(b"image,prompt\r\nx;y,z", b','), b',');
        assert_eq!(sniff_delimiter(b"\xEF\xBB\xBFid;image;prompt\r\n", b','), b';');
        assert_eq!(sniff_delimiter(b"\r\n\"image\";\"prompt\";\"a,b\"\n", b','), b';');
        assert_eq!(sniff_delimiter(b"image\tprompt\n", b','), b'\t');
        assert_eq!(sniff_delimiter(b"image,prompt\n", b'\t'), b',');
        // A comma inside a quoted name does not count.
        assert_eq!(sniff_delimiter(b"\"image,prompt\";x;prompt", b','), b';');
        // No known name: the preferred one if present, else the most frequent.
        assert_eq!(sniff_delimiter(b"a;b;c,d", b','), b',');
        assert_eq!(sniff_delimiter(b"a;b;c", b','), b';');
        assert_eq!(sniff_delimiter(b"", b'\t'), b'\t');
    }

    #[test]
    fn only_digits_comma_digits_is_a_decimal_comma() {
        assert_eq!(decimal_point(" 7,5 "), "7.5");
        assert_eq!(decimal_point("81,0"), "81.0");
        for other in ["1.234,5", "7,", ",5", "a,b", "7,5,1", "7.5"] {
            assert_eq!(decimal_point(other), other);
        }
    }
}
