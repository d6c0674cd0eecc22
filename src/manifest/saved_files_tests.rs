//! Manifests as people really save them (Excel, pandas, LibreOffice, Replicate exports): line
//! ends, BOMs, header spellings, separators, encodings, number spellings, nested JSONL, local
//! paths. Each test writes the bytes such a tool writes and asserts rows, lines and messages.

use super::*;

const IMG: &str = "https://img.example/a.jpg";

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load(path: &Path) -> (Vec<Row>, Vec<ManifestError>) {
    let mut rows = Vec::new();
    let errs = read_files(&[path], |r| rows.push(r));
    (rows, errs)
}

/// `(id, line of source)` of each row.
fn placed(rows: &[Row]) -> Vec<(String, u64)> {
    rows.iter()
        .map(|r| {
            let line = r.source.rsplit(':').next().unwrap().parse().unwrap();
            (r.id.clone(), line)
        })
        .collect()
}

/// Each error as shown, with the directory taken off the file name.
fn shown(dir: &tempfile::TempDir, errs: &[ManifestError]) -> Vec<String> {
    let prefix = format!("{}/", dir.path().display());
    errs.iter().map(|e| e.to_string().replace(&prefix, "")).collect()
}

/// A manifest with blank lines, quoted multi-line prompts and errors on lines 3 and 8, in LF.
/// Rows: a (line 2), c (5–7), e (12); errors: line 3 (seed), line 8 (seed, a two-line row).
fn lines_doc() -> String {
    format!(
        "id,image,prompt,seed\n\
         a,{IMG},ok,1\n\
         b,{IMG},bad seed,x\n\
         \n\
         c,{IMG},\"multi\n\
         line\n\
         prompt\",2\n\
         d,{IMG},\"two\n\
         lines\",y\n\
         \n\
         \n\
         e,{IMG},last,3\n"
    )
}

#[test]
fn rows_and_errors_carry_physical_lines_whatever_the_line_ends() {
    let dir = tempfile::tempdir().unwrap();
    let lf = lines_doc();
    // Excel: CRLF between rows, LF inside a quoted cell; Python's csv module: CRLF everywhere.
    let mut excel = String::new();
    let mut quoted = false;
    for c in lf.chars() {
        quoted ^= c == '"';
        match c {
            '\n' if !quoted => excel.push_str("\r\n"),
            c => excel.push(c),
        }
    }
    let variants = [
        ("lf.csv", lf.clone()),
        ("crlf.csv", lf.replace('\n', "\r\n")),
        ("excel.csv", format!("\u{feff}{excel}")),
        ("bom_crlf.csv", format!("\u{feff}{}", lf.replace('\n', "\r\n"))),
        ("cr.csv", lf.replace('\n', "\r")),
        ("no_final_newline.csv", lf.trim_end().replace('\n', "\r\n")),
    ];
    for (name, text) in variants {
        let path = write(&dir, name, text.as_bytes());
        let (rows, errs) = load(&path);
        assert_eq!(
            shown(&dir, &errs),
            vec![
                format!("{name}:3: seed: expected a whole number ≥ 0, got \"x\""),
                format!("{name}:8: seed: expected a whole number ≥ 0, got \"y\""),
            ],
            "{name}"
        );
        let want = [("a", 2), ("c", 5), ("e", 12)].map(|(i, l)| (i.to_string(), l));
        assert_eq!(placed(&rows), want, "{name}");
        assert!(rows[0].source.ends_with(&format!("{name}:2")), "{}", rows[0].source);
        let prompt = rows[1].params.get("prompt").unwrap().as_str().unwrap().to_string();
        assert!(
            prompt.starts_with("multi") && prompt.ends_with("prompt"),
            "{name}: {prompt:?}"
        );
    }
}

#[test]
fn a_crlf_file_reports_a_bad_first_row_on_line_2_not_on_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "m.csv",
        format!("image,prompt\r\nnot a url,p\r\n{IMG},q\r\n").as_bytes(),
    );
    let (rows, errs) = load(&path);
    assert_eq!(
        shown(&dir, &errs),
        ["m.csv:2: image: expected an http(s) URL, got \"not a url\""]
    );
    assert_eq!(placed(&rows)[0].1, 3);
}

#[test]
fn jsonl_lines_count_blank_and_crlf_lines() {
    let dir = tempfile::tempdir().unwrap();
    let ok = format!("{{\"image\":\"{IMG}\",\"prompt\":\"p\"}}");
    let text = format!(
        "\u{feff}{ok}\r\n\r\n{{\"image\":\"{IMG}\",\"prompt\":\"p\",\"seed\":\"x\"}}\r\n\r\n\r\n{{\"id\":\"e\",\"image\":\"{IMG}\",\"prompt\":\"z\"}}\r\n"
    );
    let (rows, errs) = load(&write(&dir, "m.jsonl", text.as_bytes()));
    assert_eq!(
        shown(&dir, &errs),
        ["m.jsonl:3: seed: expected a whole number ≥ 0, got \"x\""]
    );
    assert_eq!(placed(&rows).iter().map(|p| p.1).collect::<Vec<_>>(), [1, 6]);
}

#[test]
fn headers_match_in_any_case_with_spaces_and_duplicates_are_found_after_that() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("Id, Image , PROMPT ,Frames_Per_Second,Num_Frames\nx,{IMG},a cat,16,81\n");
    let (rows, errs) = load(&write(&dir, "h.csv", text.as_bytes()));
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(rows[0].id, "x");
    assert_eq!(
        rows[0].json,
        format!(r#"{{"image":"{IMG}","prompt":"a cat","num_frames":81,"frames_per_second":16}}"#)
    );
    let text = format!("image,prompt,Image\n{IMG},p,{IMG}\n");
    let (_, errs) = load(&write(&dir, "d.csv", text.as_bytes()));
    assert_eq!(
        shown(&dir, &errs),
        ["d.csv:1: Image: this column appears twice (as \"image\" and \"Image\")"]
    );
    let text = format!("{{\"image\":\"{IMG}\",\"prompt\":\"a\",\"Prompt\":\"b\"}}\n");
    let (_, errs) = load(&write(&dir, "d.jsonl", text.as_bytes()));
    assert_eq!(shown(&dir, &errs), ["d.jsonl:1: Prompt: this key appears twice"]);
}

#[test]
fn whole_numbers_written_as_81_0_are_the_same_row_as_81() {
    let dir = tempfile::tempdir().unwrap();
    let a = load(&write(
        &dir,
        "a.csv",
        format!("image,prompt,num_frames,seed\n{IMG},p,81,7\n").as_bytes(),
    ))
    .0;
    let b = load(&write(
        &dir,
        "b.csv",
        format!("image,prompt,num_frames,seed\n{IMG},p,81.0,7.00\n").as_bytes(),
    ))
    .0;
    let c = load(&write(
        &dir,
        "c.jsonl",
        format!("{{\"image\":\"{IMG}\",\"prompt\":\"p\",\"num_frames\":81.0,\"seed\":7.0}}\n").as_bytes(),
    ))
    .0;
    assert_eq!(
        a[0].json,
        format!(r#"{{"image":"{IMG}","prompt":"p","num_frames":81,"seed":7}}"#)
    );
    for other in [&b[0], &c[0]] {
        assert_eq!(
            (&other.id, &other.hash, &other.json),
            (&a[0].id, &a[0].hash, &a[0].json)
        );
    }
    let (_, errs) = load(&write(
        &dir,
        "d.csv",
        format!("image,prompt,num_frames\n{IMG},p,81.5\n").as_bytes(),
    ));
    assert_eq!(
        shown(&dir, &errs),
        ["d.csv:2: num_frames: expected a whole number from 81 to 100, got \"81.5\", which is not a whole number"]
    );
}

#[test]
fn semicolon_and_tab_separated_files_are_recognised_by_their_header() {
    let dir = tempfile::tempdir().unwrap();
    // European Excel: `;` between cells, decimal commas, CRLF, a BOM; a prompt with a comma.
    let text = format!(
        "\u{feff}id;image;prompt;sample_shift;num_frames\r\na;{IMG};\"a cat; then a dog\";7,5;81,0\r\nb;{IMG};one, two;12;90\r\n"
    );
    let (rows, errs) = load(&write(&dir, "eu.csv", text.as_bytes()));
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        rows[0].json,
        format!(r#"{{"image":"{IMG}","prompt":"a cat; then a dog","num_frames":81,"sample_shift":7.5}}"#)
    );
    assert_eq!(rows[1].params.get("prompt").unwrap(), "one, two");
    // Decimal commas only in `;`/tab files, only in number columns, only `digits,digits`.
    let text = format!("image;prompt;sample_shift\n{IMG};p;1.234,5\n");
    let (_, errs) = load(&write(&dir, "thousands.csv", text.as_bytes()));
    assert_eq!(
        shown(&dir, &errs),
        ["thousands.csv:2: sample_shift: expected a number from 1 to 20, got \"1.234,5\""]
    );
    let text = format!("image,prompt,sample_shift\n{IMG},p,\"7,5\"\n");
    let (_, errs) = load(&write(&dir, "comma.csv", text.as_bytes()));
    assert_eq!(errs.len(), 1, "{errs:?}");

    // Tabs: `.tsv`, Excel's "Text (Tab delimited)" `.txt`, and a `.csv` that holds tabs.
    let tabbed = format!("image\tprompt\tseed\r\n{IMG}\ta, b; c\t5\r\n");
    for name in ["t.tsv", "t.txt", "t.csv"] {
        let (rows, errs) = load(&write(&dir, name, tabbed.as_bytes()));
        assert!(errs.is_empty(), "{name}: {errs:?}");
        assert_eq!(rows[0].params.get("prompt").unwrap(), "a, b; c", "{name}");
    }
    // A `.txt` of JSON lines is read as JSONL.
    let (rows, errs) = load(&write(
        &dir,
        "j.txt",
        format!("{{\"image\":\"{IMG}\",\"prompt\":\"p\"}}\n").as_bytes(),
    ));
    assert!(errs.is_empty() && rows.len() == 1, "{errs:?}");
    // A comma header with a `;` inside a prompt's cell stays a comma file.
    let (rows, errs) = load(&write(&dir, "c.csv", format!("image,prompt\n{IMG},a;b\n").as_bytes()));
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(rows[0].params.get("prompt").unwrap(), "a;b");
}

#[test]
fn other_services_column_names_get_a_suggestion_on_line_1() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("image_url,prompt,fps,end_image\n{IMG},p,16,{IMG}\n");
    let (rows, errs) = load(&write(&dir, "m.csv", text.as_bytes()));
    assert!(rows.is_empty());
    let tail = "; the columns are id and the API's parameter names";
    assert_eq!(
        shown(&dir, &errs),
        [
            format!("m.csv:1: unknown column \"image_url\" (did you mean \"image\"?){tail}"),
            format!("m.csv:1: unknown column \"fps\" (did you mean \"frames_per_second\"?){tail}"),
            format!("m.csv:1: unknown column \"end_image\" (did you mean \"last_image\"?){tail}"),
        ]
    );
    let text = format!("{{\"input_image\":\"{IMG}\",\"prompt\":\"p\",\"negative\":\"blur\"}}\n");
    let (_, errs) = load(&write(&dir, "m.jsonl", text.as_bytes()));
    let errs = shown(&dir, &errs);
    assert!(
        errs[0].starts_with("m.jsonl:1: unknown column \"input_image\" (did you mean \"image\"?)"),
        "{errs:?}"
    );
    assert!(
        errs[1].contains("\"negative\" (did you mean \"negative_prompt\"?)"),
        "{errs:?}"
    );
}

#[test]
fn a_windows_1252_file_is_named_as_such_on_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("image,prompt\r\n{IMG},plain\r\n{IMG},caf").into_bytes();
    text.extend(b"\xE9 au lait\r\n");
    text.extend(format!("{IMG},").as_bytes());
    text.extend(b"\x93quoted\x94\r\n");
    let (rows, errs) = load(&write(&dir, "m.csv", &text));
    assert_eq!(rows.len(), 1);
    assert_eq!(
        shown(&dir, &errs),
        [
            "m.csv:3: prompt: is not UTF-8 text (byte 0xE9 — the file looks like Windows-1252/Latin-1); save the \
             file as \"CSV UTF-8\" in Excel, or re-encode it with iconv -f cp1252 -t utf-8",
            "m.csv:4: prompt: is not UTF-8 text (byte 0x93; see line 3)",
        ]
    );
    let mut jsonl =
        format!("{{\"image\":\"{IMG}\",\"prompt\":\"ok\"}}\n{{\"image\":\"{IMG}\",\"prompt\":\"caf").into_bytes();
    jsonl.extend(b"\xE9\"}\n");
    let (_, errs) = load(&write(&dir, "m.jsonl", &jsonl));
    assert_eq!(
        shown(&dir, &errs),
        [
            "m.jsonl:2: prompt: is not UTF-8 text (byte 0xE9 — the file looks like Windows-1252/Latin-1); save the \
          file as UTF-8, or re-encode it with iconv -f cp1252 -t utf-8"
        ]
    );
}

#[test]
fn a_utf16_file_is_one_error_on_line_1() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("image\tprompt\r\n{IMG}\tp\r\n{IMG}\tq\r\n");
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut bom_le = b"\xFF\xFE".to_vec();
    bom_le.extend(&le);
    let mut bom_be = b"\xFE\xFF".to_vec();
    bom_be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
    for (name, bytes, order) in [
        ("unicode.txt", &bom_le, "UTF-16LE"),
        ("nobom.csv", &le, "UTF-16LE"),
        ("be.csv", &bom_be, "UTF-16BE"),
        ("le.jsonl", &bom_le, "UTF-16LE"),
    ] {
        let (rows, errs) = load(&write(&dir, name, bytes));
        assert!(rows.is_empty());
        let errs = shown(&dir, &errs);
        assert_eq!(errs.len(), 1, "{name}: {errs:?}");
        assert!(
            errs[0].starts_with(&format!("{name}:1: the file is {order} text, not UTF-8")),
            "{errs:?}"
        );
        assert!(
            errs[0].ends_with("or re-encode it with iconv -f utf-16 -t utf-8"),
            "{errs:?}"
        );
    }
}

#[test]
fn spreadsheets_and_other_files_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["m.xlsx", "m.XLS", "m.ods", "m.numbers"] {
        let (_, errs) = load(&write(&dir, name, b"PK\x03\x04"));
        assert_eq!(
            shown(&dir, &errs),
            [format!(
                "{name}: this is a spreadsheet file: export it as CSV (File → Save As → CSV UTF-8)"
            )]
        );
    }
    let (_, errs) = load(&write(&dir, "m.json", b"[]"));
    assert!(shown(&dir, &errs)[0].contains("name it .jsonl"), "{errs:?}");
}

#[test]
fn replicate_style_input_objects_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        // 1: id outside, an export column beside input.
        format!("{{\"id\":\"r1\",\"state\":\"failed\",\"input\":{{\"image\":\"{IMG}\",\"prompt\":\"p\",\"num_frames\":81.0}}}}"),
        // 2: id inside.
        format!("{{\"input\":{{\"id\":\"r2\",\"image\":\"{IMG}\",\"prompt\":\"q\"}}}}"),
        // 3: an unknown key beside input.
        format!("{{\"version\":\"abc\",\"input\":{{\"image\":\"{IMG}\",\"prompt\":\"p\"}}}}"),
        // 4: a key both outside and inside.
        format!("{{\"prompt\":\"x\",\"input\":{{\"image\":\"{IMG}\",\"prompt\":\"p\"}}}}"),
        // 5: input not an object.
        "{\"input\":\"a cat\"}".to_string(),
        // 6: two ids.
        format!("{{\"id\":\"a\",\"input\":{{\"id\":\"b\",\"image\":\"{IMG}\",\"prompt\":\"p\"}}}}"),
        // 7: an error inside is reported with its field.
        format!("{{\"input\":{{\"image\":\"{IMG}\",\"prompt\":\"p\",\"seed\":-1}}}}"),
    ];
    let (rows, errs) = load(&write(&dir, "r.jsonl", lines.join("\n").as_bytes()));
    assert_eq!(placed(&rows), [("r1".to_string(), 1), ("r2".to_string(), 2)]);
    assert_eq!(
        rows[0].json,
        format!(r#"{{"image":"{IMG}","prompt":"p","num_frames":81}}"#)
    );
    let errs = shown(&dir, &errs);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0].starts_with("r.jsonl:3: unknown column \"version\""),
        "{errs:#?}"
    );
    assert_eq!(errs[1], "r.jsonl:4: prompt: this key appears twice");
    assert_eq!(
        errs[2],
        "r.jsonl:5: input: expected a JSON object of the parameters, as in {\"input\": {\"image\": …, \"prompt\": …}}"
    );
    assert_eq!(errs[3], "r.jsonl:6: id: this key appears twice");
    assert_eq!(errs[4], "r.jsonl:7: seed: expected a whole number ≥ 0, got \"-1\"");
}

#[test]
fn local_image_paths_are_files_checked_at_import() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("photos")).unwrap();
    std::fs::write(dir.path().join("photos/cat.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    std::fs::write(dir.path().join("photos/notes.png"), b"just text").unwrap();
    let text = format!(
        "image,prompt,last_image\nphotos/cat.png,p,\n/no/such/cat.jpg,p,\nphotos/notes.png,p,\n{IMG},p,file:///no/x.png\n{IMG},p,photos/dog.png\n"
    );
    let (rows, errs) = load(&write(&dir, "l.csv", text.as_bytes()));
    assert_eq!(rows.len(), 1, "{errs:?}");
    let cat = std::fs::canonicalize(dir.path().join("photos/cat.png")).unwrap();
    assert_eq!(
        rows[0].params.get("image").and_then(|v| v.as_str()),
        Some(reqwest::Url::from_file_path(&cat).unwrap().as_str()),
        "a local image is named by its canonical file:// URL"
    );
    let shown = shown(&dir, &errs);
    assert_eq!(shown.len(), 4, "{shown:?}");
    assert_eq!(shown[0], "l.csv:3: image: no such file: /no/such/cat.jpg");
    assert!(
        shown[1].starts_with("l.csv:4: image: photos/notes.png is not a PNG, JPEG, WebP, GIF or BMP image"),
        "{shown:?}"
    );
    assert_eq!(shown[2], "l.csv:5: last_image: no such file: /no/x.png");
    // Only a relative path is told where relative paths start.
    assert!(
        shown[3].starts_with("l.csv:6: last_image: no such file: ")
            && shown[3].ends_with("photos/dog.png (relative paths start at the manifest's folder)"),
        "{shown:?}"
    );
}

#[test]
fn a_spreadsheets_empty_columns_and_rows_are_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    // LibreOffice and Excel write the used range: trailing nameless columns, rows of empty cells.
    let text = format!("image,prompt,,\r\n{IMG},p,,\r\n,,,\r\n{IMG},q,, \r\n{IMG},r,,stray\r\n");
    let (rows, errs) = load(&write(&dir, "e.csv", text.as_bytes()));
    assert_eq!(placed(&rows).iter().map(|p| p.1).collect::<Vec<_>>(), [2, 4]);
    assert_eq!(
        shown(&dir, &errs),
        ["e.csv:5: column 4 has no name in the header but holds \"stray\""]
    );
}
