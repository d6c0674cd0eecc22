//! Loader tests: real files in a temp dir, asserting ids, values and every error's place.

use super::*;
use std::io::Write;

fn write(dir: &tempfile::TempDir, name: &str, text: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::File::create(&path).unwrap().write_all(text).unwrap();
    path
}

fn load(paths: &[std::path::PathBuf]) -> (Vec<Row>, Vec<ManifestError>) {
    let mut rows = Vec::new();
    let errs = read_files(paths, |r| rows.push(r));
    (rows, errs)
}

const IMG: &str = "https://img.example/a.jpg";

#[test]
fn csv_rows_become_typed_params_with_stable_ids() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "id,image,prompt,num_frames,go_fast,sample_shift,seed\n\
         a1,{IMG},a cat,81,false,7.5,\n\
         ,{IMG},a dog,,,,42\n"
    );
    let (rows, errs) = load(&[write(&dir, "m.csv", text.as_bytes())]);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].id, "a1");
    assert_eq!(
        rows[0].json,
        format!(r#"{{"image":"{IMG}","prompt":"a cat","num_frames":81,"sample_shift":7.5,"go_fast":false}}"#)
    );
    assert!(rows[1].id.starts_with('r') && rows[1].id.len() == 13, "{}", rows[1].id);
    assert_eq!(
        rows[1].json,
        format!(r#"{{"image":"{IMG}","prompt":"a dog","seed":42}}"#)
    );
    assert!(rows[1].source.ends_with("m.csv:3"));
}

#[test]
fn identical_rows_are_two_jobs_and_appending_keeps_ids() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("image,prompt\n{IMG},same\n{IMG},same\n");
    let (rows, errs) = load(&[write(&dir, "a.csv", base.as_bytes())]);
    assert!(errs.is_empty());
    assert_ne!(rows[0].id, rows[1].id);
    assert_eq!(rows[1].id, format!("{}-2", rows[0].id));
    let appended = format!("{base}{IMG},other\n");
    let (rows2, _) = load(&[write(&dir, "b.csv", appended.as_bytes())]);
    assert_eq!(rows2[0].id, rows[0].id);
    assert_eq!(rows2[1].id, rows[1].id);
    assert_eq!(rows2.len(), 3);
}

#[test]
fn every_error_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "image,prompt,num_frames,resolution\n\
         {IMG},ok,81,480p\n\
         ftp://x/y.png,bad url,81,480p\n\
         {IMG},,120,1080p\n"
    );
    let path = write(&dir, "bad.csv", text.as_bytes());
    let (_, errs) = load(&[path]);
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 4, "{shown:#?}");
    assert!(
        shown[0].contains("bad.csv:3: image: expected an http(s) URL"),
        "{}",
        shown[0]
    );
    assert!(shown[1].contains("bad.csv:4: prompt: is required"), "{}", shown[1]);
    assert!(
        shown[2].contains("bad.csv:4: num_frames: expected a whole number from 81 to 100, got \"120\""),
        "{}",
        shown[2]
    );
    assert!(
        shown[3].contains("bad.csv:4: resolution: expected one of 480p, 720p"),
        "{}",
        shown[3]
    );
}

#[test]
fn unknown_column_is_an_error_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("image,prompt,num_frame\n{IMG},p,81\n");
    let (rows, errs) = load(&[write(&dir, "t.csv", text.as_bytes())]);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, 1);
    assert!(
        errs[0]
            .message
            .contains("unknown column \"num_frame\" (did you mean \"num_frames\"?)"),
        "{}",
        errs[0]
    );
    assert!(rows.is_empty());
}

#[test]
fn duplicate_ids_name_both_lines_and_unsafe_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("id,image,prompt\nx,{IMG},a\ny,{IMG},b\nx,{IMG},c\n../etc,{IMG},d\nNUL,{IMG},e\n");
    let (_, errs) = load(&[write(&dir, "d.csv", text.as_bytes())]);
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 3, "{shown:#?}");
    assert!(
        shown[0].contains("d.csv:4: id: \"x\" is used twice: here and at") && shown[0].contains("d.csv:2"),
        "{}",
        shown[0]
    );
    assert!(shown[1].contains("d.csv:5: id:"), "{}", shown[1]);
    assert!(
        shown[2].contains("d.csv:6: id:") && shown[2].contains("reserved"),
        "{}",
        shown[2]
    );
}

#[test]
fn jsonl_takes_typed_values_and_reports_lines() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{{\"id\":\"j1\",\"image\":\"{IMG}\",\"prompt\":\"p\",\"num_frames\":90,\"go_fast\":true,\"seed\":null}}\n\
         \n\
         {{\"image\":\"{IMG}\",\"prompt\":\"p\",\"num_frames\":\"abc\"}}\n\
         [1,2]\n\
         {{\"image\":\"{IMG}\",\"prompt\":\"p\",\"colour\":1}}\n"
    );
    let (rows, errs) = load(&[write(&dir, "m.jsonl", text.as_bytes())]);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].json,
        format!(r#"{{"image":"{IMG}","prompt":"p","num_frames":90,"go_fast":true}}"#)
    );
    let lines: Vec<u64> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 4, 5], "{errs:?}");
}

#[test]
fn hostile_bytes_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let bom = format!("\u{feff}image,prompt\r\n{IMG},\"quoted, with comma\"\r\n");
    let (rows, errs) = load(&[write(&dir, "bom.csv", bom.as_bytes())]);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(rows[0].params.get("prompt").unwrap(), "quoted, with comma");
    let (_, errs) = load(&[write(&dir, "bin.csv", b"image,prompt\n\xff\xfe,\x00\n")]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("UTF-8"));
    let (_, errs) = load(&[write(&dir, "x.pdf", b"whatever")]);
    assert!(errs[0].message.contains(".csv, .jsonl or .ndjson"));
}

#[test]
fn identical_rows_in_two_files_are_two_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("image,prompt\n{IMG},same\n");
    let a = write(&dir, "a.csv", text.as_bytes());
    let b = write(&dir, "b.csv", text.as_bytes());
    let (rows, errs) = load(&[a, b]);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].id, format!("{}-2", rows[0].id));
}

#[test]
fn an_exports_own_columns_are_ignored_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let csv = format!(
        "id,state,request_id,attempts,error,maybe_billed_twice,source,image,prompt,num_frames,go_fast\n\
         j1,failed,rq-1,2,\"Inference failed\",false,m.csv:2,{IMG},a cat,81,true\n"
    );
    let jsonl = format!(
        "{{\"id\":\"j2\",\"state\":\"failed\",\"attempts\":1,\"bytes\":null,\"maybe_billed_twice\":true,\
         \"history\":[{{\"n\":1,\"outcome\":\"failed\"}}],\"image\":\"{IMG}\",\"prompt\":\"a dog\",\"seed\":7}}\n"
    );
    let (rows, errs) = load(&[
        write(&dir, "f.csv", csv.as_bytes()),
        write(&dir, "f.jsonl", jsonl.as_bytes()),
    ]);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!((rows[0].id.as_str(), rows[1].id.as_str()), ("j1", "j2"));
    assert_eq!(
        rows[0].json,
        format!(r#"{{"image":"{IMG}","prompt":"a cat","num_frames":81,"go_fast":true}}"#)
    );
    assert_eq!(
        rows[1].json,
        format!(r#"{{"image":"{IMG}","prompt":"a dog","seed":7}}"#)
    );
    // Near misses of those names are still errors.
    let bad = format!("id,stat,image,prompt\nj1,failed,{IMG},x\n");
    let (_, errs) = load(&[write(&dir, "bad.csv", bad.as_bytes())]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("unknown column \"stat\""), "{}", errs[0]);
    let bad = format!("{{\"id\":\"j3\",\"histories\":[],\"image\":\"{IMG}\",\"prompt\":\"x\"}}\n");
    let (_, errs) = load(&[write(&dir, "bad.jsonl", bad.as_bytes())]);
    assert!(errs[0].message.contains("unknown column \"histories\""), "{errs:?}");
}

#[test]
fn every_column_an_export_writes_is_known_to_the_loader() {
    for c in crate::cmd::export::columns().chain(["history"]) {
        assert!(
            c == "id" || EXPORT_COLUMNS.contains(&c),
            "{c} would be refused when fed back"
        );
    }
}
