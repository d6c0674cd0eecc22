//! JSON Lines: one object per line, keys as the CSV header's column names, values typed.
//!
//! A row may also be written Replicate's way, `{"input": {"image": …, "prompt": …}}`: the
//! parameters are read from the inner object; `id` may sit beside `input` or inside it, and any
//! other key beside it follows the usual rules (an export's columns are ignored, an unknown key
//! is an error). A key given twice — also once outside and once inside `input`, or in two
//! spellings of one name (`prompt`, `Prompt`) — is an error rather than one value silently lost.
//!
//! Lines are counted by `\n` (a CRLF line ends in `\r`, which JSON reads as a space); blank
//! lines count. A line longer than `MAX_ROW_BYTES` stops the file.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io::{BufRead, Read};

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::columns::{self, Column};
use super::encoding::{first_bad_byte, NotUtf8};
use super::params;
use super::{build_row, json_of, Handle, Scratch, Sink, MAX_ROW_BYTES};

/// The key that holds the parameters in a Replicate-style row.
const INPUT: &str = "input";

fn is_input(key: &str) -> bool {
    key.trim().eq_ignore_ascii_case(INPUT)
}

/// One member of a row's object.
enum Member {
    Value(Value),
    /// `input`: its members if it is an object, `None` if it is anything else.
    Input(Option<Flat>),
}

/// A JSON object's members in the order written, duplicates kept: serde_json's map would keep
/// only the last of two equal keys, silently dropping a value the user wrote.
struct Members(Vec<(String, Member)>);

/// The members of the object inside `input` (where `input` is just an unknown key).
struct Flat(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object {\"image\": …, \"prompt\": …}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut v = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let member = if is_input(&key) {
                        Member::Input(map.next_value::<Input>()?.0)
                    } else {
                        Member::Value(map.next_value()?)
                    };
                    v.push((key, member));
                }
                Ok(Members(v))
            }
        }
        d.deserialize_map(Visit)
    }
}

impl<'de> Deserialize<'de> for Flat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Flat, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Flat;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Flat, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    v.push(entry);
                }
                Ok(Flat(v))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The value of `input`: an object's members, or `None` for any other JSON value (reported as
/// an error of the row, not of the line's JSON).
struct Input(Option<Flat>);

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Input, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Input;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Input, A::Error> {
                let flat = Flat::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Input(Some(flat)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Input, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Input(None))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Input, E> {
                Ok(Input(None))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Input, E> {
                Ok(Input(None))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Input, E> {
                Ok(Input(None))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Input, E> {
                Ok(Input(None))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Input, E> {
                Ok(Input(None))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Input, E> {
                Ok(Input(None))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Reads a JSONL file (its BOM already skipped).
pub(super) fn read(mut reader: impl BufRead, errs: &mut Sink, scratch: &mut Scratch, handle: &mut Handle<'_>) {
    let mut buf = Vec::new();
    let mut line = 0u64;
    let mut not_utf8 = NotUtf8::default();
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
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let obj = match serde_json::from_slice::<Members>(&buf) {
            Ok(Members(members)) => members,
            Err(_) if first_bad_byte(&buf).is_some() => {
                let byte = first_bad_byte(&buf).unwrap_or(0);
                let message = not_utf8.message(line, byte, false);
                errs.push(line, key_of_bad_text(&buf).as_deref(), message);
                continue;
            }
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
        if let Some(cells) = cells_of(&obj, line, errs) {
            let cells = cells.iter().map(|(c, t)| (*c, t.as_ref()));
            if let Some(id) = build_row(line, cells, errs, scratch) {
                handle(line, id, json_of(scratch), errs);
            }
        }
    }
}

/// The row's (column, text) cells, the `input` object's included; `None` after pushing the
/// problems of a row that cannot be read.
fn cells_of<'a>(obj: &'a [(String, Member)], line: u64, errs: &mut Sink) -> Option<Vec<(Column, Cow<'a, str>)>> {
    // Each key with its value and what it names (looked up once: every key of every row).
    let mut entries: Vec<(&str, &Value, Option<Column>)> = Vec::with_capacity(obj.len());
    let mut ok = true;
    for (key, member) in obj {
        match member {
            Member::Value(v) => entries.push((key, v, columns::known(key))),
            Member::Input(Some(Flat(inner))) => {
                entries.extend(inner.iter().map(|(k, v)| (k.as_str(), v, columns::known(k))))
            }
            Member::Input(None) => {
                errs.push(
                    line,
                    Some(INPUT),
                    "expected a JSON object of the parameters, as in {\"input\": {\"image\": …, \"prompt\": …}}".into(),
                );
                ok = false;
            }
        }
    }
    let mut keys = HashSet::with_capacity(obj.len() + entries.len());
    let input_keys = obj.iter().filter(|(k, _)| is_input(k)).map(|(k, _)| (k.as_str(), None));
    let named = entries.iter().map(|(k, _, col)| (*k, *col));
    if let Some((dup, _)) = input_keys
        .chain(named)
        .find(|(k, col)| !keys.insert(columns::canonical(k, *col)))
    {
        errs.push(
            line,
            Some(&params::shorten(dup.trim())),
            "this key appears twice".into(),
        );
        return None;
    }
    let mut cells: Vec<(Column, Cow<str>)> = Vec::with_capacity(entries.len());
    for (key, value, col) in entries {
        let col = match col {
            Some(Column::Ignored) => continue, // an export's `history` is a list, its counters numbers: not read
            Some(c) => c,
            None => {
                errs.push(line, None, columns::column(key).expect_err("an unknown key"));
                ok = false;
                continue;
            }
        };
        let text = match value {
            Value::Null => Cow::Borrowed(""),
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Number(n) => Cow::Owned(n.to_string()),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Array(_) | Value::Object(_) => {
                errs.push(
                    line,
                    Some(&params::shorten(key.trim())),
                    "expected a single value, got a JSON list or object".into(),
                );
                ok = false;
                continue;
            }
        };
        cells.push((col, text));
    }
    ok.then_some(cells)
}

/// The key whose name or text holds the bytes that are not UTF-8, found by reading the line
/// with those bytes replaced (only for the message of a line that has them).
fn key_of_bad_text(line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(line);
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&text) else {
        return None;
    };
    let bad = |k: &String, v: &Value| k.contains('\u{fffd}') || v.as_str().is_some_and(|s| s.contains('\u{fffd}'));
    let inner = obj.iter().find(|(k, _)| is_input(k)).and_then(|(_, v)| v.as_object());
    let found = obj
        .iter()
        .find(|(k, v)| bad(k, v))
        .or_else(|| inner.and_then(|i| i.iter().find(|(k, v)| bad(k, v))));
    found.map(|(k, _)| params::shorten(k.trim()))
}
