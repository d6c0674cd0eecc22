//! Manifests as Excel, pandas and other tools save them, through the real binary: `import`
//! prints each error as `file:line: field: message` with the line an editor shows (CRLF, a BOM
//! and quoted multi-line cells included), exits 2 and imports nothing; a valid file of that kind
//! imports, and `export` shows each job's `source` at the right line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn wanbatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wanbatch"))
        .args(args)
        .env("RUST_LOG", "off")
        .env_remove("WANBATCH_DB")
        .output()
        .expect("run wanbatch")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

const IMG: &str = "https://img.example/a.jpg";

/// Lines as Excel's "CSV UTF-8" writes them: a BOM, CRLF between rows, LF inside a quoted cell.
fn excel_csv(lines: &[&str]) -> Vec<u8> {
    format!("\u{feff}{}\r\n", lines.join("\r\n")).into_bytes()
}

/// The stderr lines that name `file`.
fn errors_about(out: &Output, file: &Path) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with(s(file)))
        .map(|l| l[s(file).len()..].to_string())
        .collect()
}

#[test]
fn an_excel_csv_with_errors_names_the_lines_an_editor_shows_and_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        "id,image,prompt,num_frames".to_string(),              // 1
        format!("a,{IMG},a cat,81"),                           // 2
        format!("b,{IMG},too many frames,120"),                // 3
        format!("c,{IMG},\"a prompt\nover two\nlines\",81.0"), // 4–6
        "d,ftp://x.example/y.png,p,81".to_string(),            // 7
        format!("e,{IMG},ok,90"),                              // 8
    ];
    let m = write(
        dir.path(),
        "m.csv",
        &excel_csv(&rows.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    let db = dir.path().join("w.db");

    let out = wanbatch(&["import", s(&m), "--db", s(&db)]);

    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        errors_about(&out, &m),
        [
            ":3: num_frames: expected a whole number from 81 to 100, got \"120\"",
            ":7: image: expected an http(s) URL, got \"ftp://x.example/y.png\"",
        ],
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("2 error(s) in") && text(&out).contains("nothing was imported"),
        "{}",
        text(&out)
    );
    assert!(!db.exists(), "a failed import leaves no database behind");
}

#[test]
fn a_valid_crlf_csv_imports_and_exports_each_jobs_source_line() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        "id,Image,Prompt,Num_Frames".to_string(), // 1: header in a spreadsheet's capitals
        format!("a,{IMG},first,81"),              // 2
        String::new(),                            // 3: blank
        format!("b,{IMG},\"two\nlines\",81.0"),   // 4–5
        format!("c,{IMG},third,90"),              // 6
    ];
    let m = write(
        dir.path(),
        "ok.csv",
        &excel_csv(&lines.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    let jsonl = write(
        dir.path(),
        "ok.jsonl",
        format!(
            "{{\"id\":\"j1\",\"image\":\"{IMG}\",\"prompt\":\"p\"}}\r\n\r\n{{\"input\":{{\"id\":\"j2\",\"image\":\"{IMG}\",\"prompt\":\"q\",\"num_frames\":81.0}}}}\r\n"
        )
        .as_bytes(),
    );
    let db = dir.path().join("w.db");

    let out = wanbatch(&["import", s(&m), s(&jsonl), "--db", s(&db)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("imported 5 new jobs"), "{}", text(&out));

    let out = wanbatch(&["export", "--db", s(&db)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut export = csv::Reader::from_reader(out.stdout.as_slice());
    let header = export.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let got: Vec<(String, String, String)> = export
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[col("id")].to_string(),
                r[col("source")].to_string(),
                r[col("num_frames")].to_string(),
            )
        })
        .collect();
    let at = |file: &Path, line: u64| format!("{}:{line}", s(file));
    assert_eq!(
        got,
        [
            ("a".into(), at(&m, 2), "81".into()),
            ("b".into(), at(&m, 4), "81".into()),
            ("c".into(), at(&m, 6), "90".into()),
            ("j1".into(), at(&jsonl, 1), String::new()),
            ("j2".into(), at(&jsonl, 3), "81".into()),
        ]
    );
}

#[test]
fn files_that_are_not_utf8_csv_get_one_clear_error_each() {
    let dir = tempfile::tempdir().unwrap();
    let xlsx = write(dir.path(), "shots.xlsx", b"PK\x03\x04 not really a zip");
    let utf16: Vec<u8> = b"\xFF\xFE"
        .iter()
        .copied()
        .chain(
            format!("image\tprompt\r\n{IMG}\ta cat\r\n")
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    let unicode = write(dir.path(), "unicode.txt", &utf16);
    let mut latin1 = format!("image;prompt;fps\r\n{IMG};ok;16\r\n{IMG};caf").into_bytes();
    latin1.extend(b"\xE9;16\r\n");
    let latin1 = write(dir.path(), "latin1.csv", &latin1);
    let local = write(dir.path(), "local.csv", b"image,prompt\nphotos/cat.png,a cat\n");
    let db = dir.path().join("w.db");

    let out = wanbatch(&["import", s(&xlsx), s(&unicode), s(&latin1), s(&local), "--db", s(&db)]);

    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        errors_about(&out, &xlsx),
        [": this is a spreadsheet file: export it as CSV (File → Save As → CSV UTF-8)"]
    );
    assert_eq!(
        errors_about(&out, &unicode),
        [
            ":1: the file is UTF-16LE text, not UTF-8 (Excel's \"Unicode Text\" and Notepad's \"Unicode\" save \
          this); save the file as \"CSV UTF-8\" in Excel, or re-encode it with iconv -f utf-16 -t utf-8"
        ]
    );
    // A `;` file: its header is read with `;` (so `fps` is the one unknown column).
    assert_eq!(
        errors_about(&out, &latin1),
        [
            ":1: unknown column \"fps\" (did you mean \"frames_per_second\"?); the columns are id and the API's \
             parameter names"
        ]
    );
    assert_eq!(
        errors_about(&out, &local),
        [format!(
            ":2: image: no such file: {}/photos/cat.png (relative paths start at the manifest's folder)",
            local.parent().unwrap().display()
        )]
    );
    assert!(!db.exists());

    // With the header fixed, the Windows-1252 cell is the error, on its line.
    let mut latin1_fixed = format!("image;prompt;frames_per_second\r\n{IMG};ok;16\r\n{IMG};caf").into_bytes();
    latin1_fixed.extend(b"\xE9;16\r\n");
    let fixed = write(dir.path(), "latin1.csv", &latin1_fixed);
    let out = wanbatch(&["import", s(&fixed), "--db", s(&db)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        errors_about(&out, &fixed),
        [
            ":3: prompt: is not UTF-8 text (byte 0xE9 — the file looks like Windows-1252/Latin-1); save the file \
          as \"CSV UTF-8\" in Excel, or re-encode it with iconv -f cp1252 -t utf-8"
        ]
    );
}
