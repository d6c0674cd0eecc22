//! Hostile manifests: a seeded mutation fuzzer over valid CSV and JSONL files, and one test per
//! named hostile input (huge fields, a million columns, endless files, deep JSON, bad ids).
//!
//! The property, for any bytes: the loader returns (no panic, bounded time and memory), every
//! error names the file and a line, and every row it hands out is valid. `WANBATCH_FUZZ_ITERS`
//! raises the iteration count for a manual run; `WANBATCH_FUZZ_SEED` picks another seed.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

const IMG: &str = "https://img.example/a.jpg";

fn load(path: &Path) -> (Vec<Row>, Vec<ManifestError>) {
    let mut rows = Vec::new();
    let errs = read_files(&[path], |r| rows.push(r));
    (rows, errs)
}

/// Loads on another thread and fails the test if that takes longer than `secs`: a loader that
/// buffers an endless line or goes quadratic fails here instead of hanging the suite.
fn load_within(secs: u64, path: PathBuf) -> (Vec<Row>, Vec<ManifestError>) {
    let (tx, rx) = mpsc::channel();
    let shown = path.display().to_string();
    std::thread::spawn(move || {
        let _ = tx.send(load(&path));
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|e| panic!("loading {shown} did not finish within {secs} s ({e})"))
}

/// The property every load must keep, whatever the input.
fn check_outcome(path: &Path, rows: &[Row], errs: &[ManifestError], input: &str) {
    let file = path.display().to_string();
    for e in errs {
        assert_eq!(e.file, file, "{input}: error names another file: {e}");
        assert!(e.line >= 1, "{input}: error without a line: {e}");
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("{file}:{}: ", e.line)), "{input}: {shown}");
        // A clear error, not an echo of the hostile bytes.
        assert!(shown.len() < 2048, "{input}: error of {} bytes", shown.len());
    }
    for r in rows {
        assert!(r.source.starts_with(&format!("{file}:")), "{input}: {}", r.source);
        assert!(check_id(&r.id).is_ok(), "{input}: unsafe id {:?} accepted", r.id);
        let v: Value = serde_json::from_str(&r.json).expect("row JSON parses");
        assert!(v["image"].is_string() && v["prompt"].is_string(), "{input}: {}", r.json);
        assert!(v.get("id").is_none());
    }
}

fn valid_csv(rng: &mut StdRng) -> Vec<u8> {
    let mut s = String::from("id,image,prompt,num_frames,go_fast,sample_shift,seed,resolution\n");
    for i in 0..rng.gen_range(1..6) {
        s.push_str(&format!(
            "j{i},{IMG},\"a cat, number {i}\",{},true,{},{},480p\n",
            rng.gen_range(81..=100),
            rng.gen_range(1..=20),
            rng.gen::<u32>()
        ));
    }
    s.into_bytes()
}

fn valid_jsonl(rng: &mut StdRng) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..rng.gen_range(1..6) {
        s.push_str(&format!(
            "{{\"id\":\"j{i}\",\"image\":\"{IMG}\",\"prompt\":\"a \\\"cat\\\" {i}\",\"num_frames\":{},\"go_fast\":false,\"seed\":{}}}\n",
            rng.gen_range(81..=100),
            rng.gen::<u32>()
        ));
    }
    s.into_bytes()
}

/// Bytes that break parsers: quotes, separators, line ends, NUL, invalid UTF-8, a BOM, lookalikes.
const NASTY: &[&[u8]] = &[
    b"\"",
    b",",
    b"\r",
    b"\r\n",
    b"\n",
    b"\0",
    b"\xff\xfe",
    b"\xc3",
    b"\xEF\xBB\xBF",
    b"{",
    b"}",
    b"[",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"1e999",
    b"-0",
    b"99999999999999999999999999",
    b"../",
    b"/etc/passwd",
    b"CON",
    b"\xd0\xb0",     // Cyrillic a
    b"\xe2\x80\xae", // right-to-left override
];

/// One random change to `doc`.
fn mutate(rng: &mut StdRng, doc: &mut Vec<u8>, jsonl: bool) {
    let at = |rng: &mut StdRng, doc: &Vec<u8>| rng.gen_range(0..=doc.len());
    match rng.gen_range(0..12) {
        0 if !doc.is_empty() => {
            let i = rng.gen_range(0..doc.len());
            doc[i] ^= 1 << rng.gen_range(0..8);
        }
        1 => {
            let i = at(rng, doc);
            doc.truncate(i);
        }
        2 => {
            let i = at(rng, doc);
            let nasty = NASTY[rng.gen_range(0..NASTY.len())];
            doc.splice(i..i, nasty.iter().copied());
        }
        3 if !doc.is_empty() => {
            let i = rng.gen_range(0..doc.len());
            let j = rng.gen_range(i..=doc.len().min(i + 40));
            doc.drain(i..j);
        }
        4 => {
            // Line ends rewritten: CRLF or CR only.
            let to: &[u8] = if rng.gen() { b"\r\n" } else { b"\r" };
            let mut out = Vec::with_capacity(doc.len() * 2);
            for &b in doc.iter() {
                if b == b'\n' {
                    out.extend_from_slice(to);
                } else {
                    out.push(b);
                }
            }
            *doc = out;
        }
        5 => {
            let mut out = b"\xEF\xBB\xBF".to_vec();
            out.append(doc);
            *doc = out;
        }
        6 => {
            // A longish run of one byte (long cells, long lines).
            let i = at(rng, doc);
            let b = [b'a', b'"', b',', b' ', b'0', b'['][rng.gen_range(0..6)];
            let n = rng.gen_range(1..100_000);
            doc.splice(i..i, std::iter::repeat_n(b, n));
        }
        7 if !doc.is_empty() => {
            // A line repeated (duplicate ids, duplicate rows).
            let text = doc.clone();
            let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
            let pick = lines[rng.gen_range(0..lines.len())];
            doc.extend_from_slice(b"\n");
            doc.extend_from_slice(pick);
            doc.extend_from_slice(b"\n");
        }
        8 if jsonl => {
            let dup = b"{\"prompt\":\"x\",\"prompt\":\"y\",\"image\":\"https://a.b/c\"}\n";
            doc.extend_from_slice(dup);
        }
        8 => {
            // Many columns.
            let i = at(rng, doc);
            let n = rng.gen_range(1..5_000);
            doc.splice(i..i, std::iter::repeat_n(b',', n));
        }
        9 => {
            let depth = rng.gen_range(1..2_000);
            let mut deep = vec![b'['; depth];
            deep.extend(std::iter::repeat_n(b']', depth));
            let i = at(rng, doc);
            doc.splice(i..i, deep);
        }
        10 => {
            let i = at(rng, doc);
            let n = rng.gen_range(1..64);
            let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            doc.splice(i..i, junk);
        }
        _ => {
            let nasty = NASTY[rng.gen_range(0..NASTY.len())];
            doc.extend_from_slice(nasty);
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn mutated_manifests_never_panic_and_every_error_has_a_place() {
    let iters = env_u64("WANBATCH_FUZZ_ITERS", 400);
    let seed = env_u64("WANBATCH_FUZZ_SEED", 0x5eed_fa11);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = std::time::Instant::now();
    let (mut with_rows, mut with_errors) = (0, 0);
    for i in 0..iters {
        let jsonl = rng.gen_bool(0.5);
        let mut doc = if jsonl {
            valid_jsonl(&mut rng)
        } else {
            valid_csv(&mut rng)
        };
        for _ in 0..rng.gen_range(1..=4) {
            mutate(&mut rng, &mut doc, jsonl);
        }
        let path = dir.path().join(if jsonl { "m.jsonl" } else { "m.csv" });
        std::fs::write(&path, &doc).unwrap();
        let input = format!("seed {seed:#x} iteration {i}");
        let outcome = std::panic::catch_unwind(|| load(&path));
        let (rows, errs) = match outcome {
            Ok(o) => o,
            Err(_) => {
                let keep = std::env::temp_dir().join(format!("wanbatch-fuzz-{seed:x}-{i}"));
                let _ = std::fs::write(&keep, &doc);
                panic!("{input}: the loader panicked; input saved to {}", keep.display());
            }
        };
        check_outcome(&path, &rows, &errs, &input);
        with_rows += usize::from(!rows.is_empty());
        with_errors += usize::from(!errs.is_empty());
    }
    // The mutations must exercise both outcomes, or the fuzzer tests nothing.
    if iters >= 100 {
        assert!(
            with_rows > 0 && with_errors > 0,
            "rows {with_rows}, errors {with_errors}"
        );
    }
    eprintln!(
        "{iters} mutated manifests in {:.2?}: {with_rows} gave rows, {with_errors} gave errors",
        started.elapsed()
    );
}

fn write(dir: &tempfile::TempDir, name: &str, text: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn only_error(errs: &[ManifestError]) -> String {
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs[0].to_string()
}

#[test]
fn a_bom_and_crlf_or_cr_line_ends_still_load() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("crlf.csv", format!("\u{feff}id,image,prompt\r\na,{IMG},\"x\r\ny\"\r\nb,{IMG},z\r\n")),
        ("cr.csv", format!("id,image,prompt\ra,{IMG},\"x\r\ny\"\rb,{IMG},z\r")),
        (
            "crlf.jsonl",
            format!(
                "\u{feff}{{\"id\":\"a\",\"image\":\"{IMG}\",\"prompt\":\"x\\r\\ny\"}}\r\n{{\"id\":\"b\",\"image\":\"{IMG}\",\"prompt\":\"z\"}}\r\n"
            ),
        ),
    ] {
        let path = write(&dir, name, text.as_bytes());
        let (rows, errs) = load(&path);
        assert!(errs.is_empty(), "{name}: {errs:#?}");
        let got: Vec<(&str, String)> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.params.to_json()))
            .collect();
        assert_eq!(got.len(), 2, "{name}: {got:?}");
        assert_eq!((got[0].0, got[1].0), ("a", "b"), "{name}");
        assert!(got[0].1.contains(r#""prompt":"x\r\ny""#), "{name}: {}", got[0].1);
    }
}

#[test]
fn a_10_mb_field_is_refused_by_size_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let big = "p".repeat(10 << 20);
    let csv = write(
        &dir,
        "big.csv",
        format!("id,image,prompt\na,{IMG},ok\nb,{IMG},{big}\n").as_bytes(),
    );
    let (rows, errs) = load_within(20, csv.clone());
    let shown = only_error(&errs);
    assert!(shown.starts_with(&format!("{}:3: ", csv.display())), "{shown}");
    assert!(shown.contains("longer than 4 MiB"), "{shown}");
    assert_eq!(rows.len(), 1, "the row before it still loads");

    let jsonl = write(
        &dir,
        "big.jsonl",
        format!("{{\"image\":\"{IMG}\",\"prompt\":\"ok\"}}\n{{\"image\":\"{IMG}\",\"prompt\":\"{big}\"}}\n").as_bytes(),
    );
    let (_, errs) = load_within(20, jsonl.clone());
    let shown = only_error(&errs);
    assert!(shown.starts_with(&format!("{}:2: ", jsonl.display())), "{shown}");
    assert!(shown.contains("longer than 4 MiB"), "{shown}");

    // Under the row cap, a cell over the 64 KiB cell cap is an ordinary field error.
    let mid = "q".repeat(100 << 10);
    let csv = write(&dir, "mid.csv", format!("id,image,prompt\na,{IMG},{mid}\n").as_bytes());
    let (_, errs) = load(&csv);
    let shown = only_error(&errs);
    assert!(shown.contains(":2: prompt: is 102400 bytes long"), "{shown}");
}

#[test]
fn an_unclosed_quote_stops_at_the_row_cap() {
    let dir = tempfile::tempdir().unwrap();
    // Short lines inside one quoted field: no single line is long, the record is.
    let lines = "more text\n".repeat(600_000);
    let path = write(
        &dir,
        "q.csv",
        format!("id,image,prompt\na,{IMG},\"never closed\n{lines}").as_bytes(),
    );
    let (rows, errs) = load_within(20, path.clone());
    let shown = only_error(&errs);
    assert!(shown.starts_with(&format!("{}:2: ", path.display())), "{shown}");
    assert!(shown.contains("unclosed quote"), "{shown}");
    assert!(rows.is_empty());
}

#[test]
fn a_million_columns_are_an_error_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    // A header of a million distinct unknown names (under the row cap: ~3.9 MB).
    let mut header = String::from("image,prompt");
    for i in 0..1_000_000 {
        header.push_str(&format!(",{}", i % 1000));
    }
    let path = write(&dir, "wide.csv", format!("{header}\n").as_bytes());
    let (_, errs) = load_within(20, path.clone());
    assert_eq!(errs.len(), MAX_ERRORS_LISTED + 1, "listed, then counted");
    assert!(errs.iter().all(|e| e.line == 1), "{:?}", &errs[..3]);
    assert!(
        errs.last().unwrap().message.contains("more errors"),
        "{}",
        errs.last().unwrap()
    );

    // A million empty cells in a row.
    let row = ",".repeat(1_000_000);
    let path = write(
        &dir,
        "widerow.csv",
        format!("image,prompt\n{IMG},a\n{row}\n").as_bytes(),
    );
    let (rows, errs) = load_within(20, path);
    assert_eq!(rows.len(), 1);
    assert!(only_error(&errs).contains(":3: has 1000001 fields but the header has 2 columns"));
}

#[test]
fn endless_files_end_with_an_error() {
    // /dev/zero under a manifest name: an endless line of NULs. Memory stays bounded by the row
    // cap, and the load ends.
    let dir = tempfile::tempdir().unwrap();
    for name in ["zero.csv", "zero.jsonl"] {
        let path = dir.path().join(name);
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let (rows, errs) = load_within(30, path.clone());
        let shown = only_error(&errs);
        assert!(shown.starts_with(&format!("{}:1: ", path.display())), "{shown}");
        assert!(shown.contains("longer than 4 MiB"), "{shown}");
        assert!(rows.is_empty());
    }
}

#[test]
fn deep_json_numbers_out_of_range_and_duplicate_keys_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let text = format!(
        "{deep}\n\
         {{\"image\":\"{IMG}\",\"prompt\":{deep}}}\n\
         {{\"image\":\"{IMG}\",\"prompt\":\"a\",\"seed\":1e999}}\n\
         {{\"image\":\"{IMG}\",\"prompt\":\"a\",\"seed\":99999999999999999999999}}\n\
         {{\"image\":\"{IMG}\",\"prompt\":\"a\",\"num_frames\":81.5}}\n\
         {{\"image\":\"{IMG}\",\"prompt\":\"a\",\"prompt\":\"b\"}}\n\
         \"just a string\"\n\
         {{\"image\":\"{IMG}\",\"prompt\":\"fine\"}}\n"
    );
    let path = write(&dir, "h.jsonl", text.as_bytes());
    let (rows, errs) = load_within(20, path.clone());
    check_outcome(&path, &rows, &errs, "hostile jsonl");
    let lines: Vec<u64> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![1, 2, 3, 4, 5, 6, 7], "{errs:#?}");
    assert!(errs[0].message.contains("expected a JSON object"), "{}", errs[0]);
    assert!(errs[1].message.contains("recursion limit"), "{}", errs[1]);
    assert!(errs[2].message.contains("out of range"), "{}", errs[2]);
    assert_eq!(errs[3].field.as_deref(), Some("seed"), "{}", errs[3]);
    assert_eq!(errs[4].field.as_deref(), Some("num_frames"), "{}", errs[4]);
    assert_eq!(
        errs[5].to_string(),
        format!("{}:6: prompt: this key appears twice", path.display())
    );
    assert!(errs[6].message.contains("expected a JSON object"), "{}", errs[6]);
    assert_eq!(rows.len(), 1);
}

#[test]
fn ids_that_could_escape_out_or_name_a_device_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let long = "a".repeat(101);
    let hostile: Vec<(&str, String)> = vec![
        ("parent path", "../x".into()),
        ("parent", "..".into()),
        ("dot", ".".into()),
        ("absolute", "/abs".into()),
        ("nested", "a/b".into()),
        ("backslash", "a\\b".into()),
        ("NUL", "a\0b".into()),
        ("device", "CON".into()),
        ("device with extension", "nul.txt".into()),
        ("device, other case", "Lpt1".into()),
        ("too long", long.clone()),
        ("Cyrillic lookalike", "\u{0430}bc".into()),
        ("fullwidth lookalike", "\u{ff41}bc".into()),
        ("leading dot", ".hidden".into()),
        ("leading dash", "-rf".into()),
        ("trailing dot", "name.".into()),
        ("inner space", "a b".into()),
        ("colon (Windows stream)", "a:b".into()),
    ];
    // JSONL carries any string, NUL and quotes included.
    let mut jsonl = String::new();
    for (_, id) in &hostile {
        jsonl.push_str(&serde_json::json!({"id": id, "image": IMG, "prompt": "p"}).to_string());
        jsonl.push('\n');
    }
    let path = write(&dir, "ids.jsonl", jsonl.as_bytes());
    let (rows, errs) = load(&path);
    assert!(rows.is_empty(), "{:?}", rows.iter().map(|r| &r.id).collect::<Vec<_>>());
    assert_eq!(errs.len(), hostile.len(), "{errs:#?}");
    for (i, ((what, _), e)) in hostile.iter().zip(&errs).enumerate() {
        assert_eq!(e.line, i as u64 + 1, "{what}: {e}");
        assert_eq!(e.field.as_deref(), Some("id"), "{what}: {e}");
        assert!(e
            .to_string()
            .starts_with(&format!("{}:{}: id: ", path.display(), i + 1)));
    }
    // The same through CSV (quoted, so commas and line ends cannot help).
    let mut csv = String::from("id,image,prompt\n");
    for (_, id) in &hostile {
        csv.push_str(&format!("\"{}\",{IMG},p\n", id.replace('"', "\"\"")));
    }
    let path = write(&dir, "ids.csv", csv.as_bytes());
    let (rows, errs) = load(&path);
    assert!(rows.is_empty());
    assert_eq!(
        errs.iter().map(|e| e.line).collect::<Vec<_>>(),
        (2..2 + hostile.len() as u64).collect::<Vec<_>>()
    );

    // Surrounding spaces are trimmed like any cell: " ok " is the safe id "ok".
    let path = write(
        &dir,
        "trim.csv",
        format!("id,image,prompt\n\" ok \",{IMG},p\n").as_bytes(),
    );
    let (rows, errs) = load(&path);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(rows[0].id, "ok");
}

#[test]
fn ids_differing_only_in_case_would_share_a_file_and_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "c.csv",
        format!("id,image,prompt\nClip,{IMG},a\nclip,{IMG},b\n").as_bytes(),
    );
    let (rows, errs) = load(&path);
    assert_eq!(rows.len(), 1);
    let shown = only_error(&errs);
    assert!(shown.starts_with(&format!("{}:3: id: ", path.display())), "{shown}");
    assert!(shown.contains("but for case") && shown.contains("c.csv:2"), "{shown}");
}
