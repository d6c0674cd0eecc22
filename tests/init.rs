//! `wanbatch init DIR` through the real binary, in temporary folders: the manifest's rows (read
//! back with the `csv` crate), the messages on stdout and stderr, the exit codes, and that
//! nothing is written whenever the command refuses.

use std::path::Path;
use std::process::{Command, Output};

use wanbatch::manifest::check_id;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
const JPEG: &[u8] = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0";
const GIF: &[u8] = b"GIF89a\x01\0\x01\0";
const WEBP: &[u8] = b"RIFF\x24\0\0\0WEBPVP8 ";

/// `wanbatch init ARGS` run in `cwd`.
fn init(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wanbatch"))
        .arg("init")
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "off")
        .env_remove("WANBATCH_CONFIG")
        .output()
        .expect("run wanbatch")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr).lines().map(str::to_string).collect()
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The manifest's header and rows.
fn rows(csv_file: &Path) -> (Vec<String>, Vec<[String; 3]>) {
    let mut r = csv::Reader::from_path(csv_file).unwrap();
    let header = r.headers().unwrap().iter().map(str::to_string).collect();
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            assert_eq!(rec.len(), 3);
            [0, 1, 2].map(|i| rec[i].to_string())
        })
        .collect();
    (header, rows)
}

fn row(id: &str, image: &str, prompt: &str) -> [String; 3] {
    [id.into(), image.into(), prompt.into()]
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn sep(p: &str) -> String {
    p.replace('/', std::path::MAIN_SEPARATOR_STR)
}

#[test]
fn a_folder_with_a_prompt_per_image_becomes_rows_in_natural_order_with_paths_from_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    put(&photos, "img10.png", PNG);
    put(&photos, "img10.txt", b"a rocket, slowly rising");
    put(&photos, "img2.jpg", JPEG);
    put(&photos, "img2.jpg.txt", b"from the IMAGE.ext.txt convention");
    put(&photos, "Img1.webp", WEBP);
    put(&photos, "Img1.txt", b"\xEF\xBB\xBF  a BOM and spaces, dropped \n\n");
    put(&photos, "cat, \"the\" one.gif", GIF);
    put(
        &photos,
        "cat, \"the\" one.txt",
        "a cat says \"hi\",\nthen naps; 猫".as_bytes(),
    );
    put(&photos, "notes.md", b"not an image, ignored");
    put(&photos, ".hidden.png", b"hidden files are not even looked at");

    let out = init(tmp.path(), &["photos"]);

    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    assert_eq!(
        stdout(&out),
        "jobs.csv: 4 rows (4 prompts from .txt files)\nnext: wanbatch run jobs.csv --dry-run\n"
    );
    assert!(stderr_lines(&out).is_empty(), "{:?}", stderr_lines(&out));
    let (header, got) = rows(&tmp.path().join("jobs.csv"));
    assert_eq!(header, ["id", "image", "prompt"]);
    assert_eq!(
        got,
        [
            row(
                "cat-the-one",
                &sep("photos/cat, \"the\" one.gif"),
                "a cat says \"hi\",\nthen naps; 猫"
            ),
            row("Img1", &sep("photos/Img1.webp"), "a BOM and spaces, dropped"),
            row("img2", &sep("photos/img2.jpg"), "from the IMAGE.ext.txt convention"),
            row("img10", &sep("photos/img10.png"), "a rocket, slowly rising"),
        ]
    );
    assert_eq!(
        names(tmp.path()),
        ["jobs.csv", "photos"],
        "no temporary file left behind"
    );
}

#[test]
fn images_without_a_prompt_are_each_listed_and_nothing_is_written_unless_prompt_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    put(&photos, "a.png", PNG);
    put(&photos, "a.txt", b"its own prompt");
    put(&photos, "b.png", PNG);
    put(&photos, "c.jpg", JPEG);
    put(&photos, "d.png", PNG);
    put(&photos, "d.txt", b" \n ");

    let refused = init(tmp.path(), &["photos"]);

    assert_eq!(refused.status.code(), Some(2));
    let p = |s: &str| sep(&format!("photos/{s}"));
    assert_eq!(
        stderr_lines(&refused),
        [
            format!(
                "{}: no prompt (no b.txt beside it); give --prompt TEXT or add the .txt",
                p("b.png")
            ),
            format!(
                "{}: no prompt (no c.txt beside it); give --prompt TEXT or add the .txt",
                p("c.jpg")
            ),
            format!(
                "{}: no prompt (d.txt is empty); give --prompt TEXT or add the .txt",
                p("d.png")
            ),
            "wanbatch: 3 of 4 images have no prompt (listed above): nothing written".to_string(),
        ]
    );
    assert!(stdout(&refused).is_empty());
    assert_eq!(names(tmp.path()), ["photos"], "nothing written");

    let out = init(tmp.path(), &["photos", "--prompt", "  a slow pan  "]);

    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    assert_eq!(
        stdout(&out),
        "jobs.csv: 4 rows (1 prompt from .txt files, 3 from --prompt)\nnext: wanbatch run jobs.csv --dry-run\n"
    );
    let (_, got) = rows(&tmp.path().join("jobs.csv"));
    assert_eq!(
        got,
        [
            row("a", &p("a.png"), "its own prompt"),
            row("b", &p("b.png"), "a slow pan"),
            row("c", &p("c.jpg"), "a slow pan"),
            row("d", &p("d.png"), "a slow pan"),
        ]
    );
}

#[test]
fn names_that_collide_even_ignoring_case_get_unique_ids_the_loader_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    for name in [
        "A B.png", "a b.webp", "A-B.gif", "a-b.jpg", "a_b.png", "con.png", "猫.png", "犬.png",
    ] {
        let bytes = match name.rsplit('.').next().unwrap() {
            "png" => PNG,
            "webp" => WEBP,
            "gif" => GIF,
            _ => JPEG,
        };
        put(&photos, name, bytes);
    }

    let out = init(tmp.path(), &["photos", "--prompt", "p"]);

    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    let (_, got) = rows(&tmp.path().join("jobs.csv"));
    let pairs: Vec<(&str, &str)> = got.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    let expected = [
        ("A-B", "A B.png"),
        ("a-b-2", "a b.webp"),
        ("A-B-3", "A-B.gif"),
        ("a-b-4", "a-b.jpg"),
        ("a_b", "a_b.png"),
        ("img-con", "con.png"),
        ("img", "犬.png"),
        ("img-2", "猫.png"),
    ]
    .map(|(id, name)| (id, sep(&format!("photos/{name}"))));
    assert_eq!(
        pairs,
        expected.iter().map(|(i, n)| (*i, n.as_str())).collect::<Vec<_>>()
    );
    let mut lower = std::collections::HashSet::new();
    for [id, ..] in &got {
        assert!(check_id(id).is_ok(), "{id:?}: {:?}", check_id(id));
        assert!(lower.insert(id.to_ascii_lowercase()), "{id} twice ignoring case");
    }
}

#[test]
fn files_that_only_look_like_images_are_skipped_with_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    put(&photos, "real.png", PNG);
    put(&photos, "x.png", b"hello world, I am text");
    put(&photos, "blank.gif", b"");
    put(&photos, "scan.TIFF", b"II*\0");
    put(&photos, "misnamed.JPG", PNG);

    let out = init(tmp.path(), &["photos", "--prompt", "p"]);

    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    let p = |s: &str| sep(&format!("photos/{s}"));
    assert_eq!(
        stderr_lines(&out),
        [
            format!("{}: note: its bytes are a PNG image, not JPEG; kept", p("misnamed.JPG")),
            format!("{}: skipped: it is empty", p("blank.gif")),
            format!(
                "{}: skipped: a .tiff image, which the API does not take: convert it to PNG or JPEG",
                p("scan.TIFF")
            ),
            format!(
                "{}: skipped: its bytes are not a PNG image (they start with \"hello world,\")",
                p("x.png")
            ),
        ]
    );
    assert_eq!(
        stdout(&out),
        "jobs.csv: 2 rows (2 prompts from --prompt); skipped 3 files (listed above)\n\
         next: wanbatch run jobs.csv --dry-run\n"
    );
    let (_, got) = rows(&tmp.path().join("jobs.csv"));
    assert_eq!(
        got,
        [
            row("misnamed", &p("misnamed.JPG"), "p"),
            row("real", &p("real.png"), "p")
        ]
    );
}

#[test]
fn an_existing_manifest_is_replaced_only_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    put(&tmp.path().join("photos"), "a.png", PNG);
    put(tmp.path(), "jobs.csv", b"keep me");

    let refused = init(tmp.path(), &["photos", "--prompt", "p"]);

    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        stderr_lines(&refused),
        ["wanbatch: jobs.csv already exists: give --force to replace it, or --output FILE"]
    );
    assert_eq!(std::fs::read(tmp.path().join("jobs.csv")).unwrap(), b"keep me");

    let out = init(tmp.path(), &["photos", "--prompt", "p", "--force"]);

    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    assert_eq!(
        rows(&tmp.path().join("jobs.csv")).1,
        [row("a", &sep("photos/a.png"), "p")]
    );
    assert_eq!(names(tmp.path()), ["jobs.csv", "photos"]);
}

#[test]
fn a_folder_without_images_or_not_a_folder_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    put(&tmp.path().join("texts"), "a.txt", b"a prompt with no image");
    put(&tmp.path().join("fakes"), "x.jpeg", b"<html>");
    put(tmp.path(), "file.png", PNG);
    let cases = [
        (
            "empty",
            "wanbatch: no images in empty (png, jpg, jpeg, webp, gif or bmp): nothing written".to_string(),
        ),
        (
            "texts",
            "wanbatch: no images in texts (png, jpg, jpeg, webp, gif or bmp): nothing written".to_string(),
        ),
        (
            "fakes",
            "wanbatch: no usable images in fakes (1 skipped, listed above): nothing written".to_string(),
        ),
        ("file.png", "wanbatch: file.png is not a folder".to_string()),
    ];
    for (dir, message) in cases {
        let out = init(tmp.path(), &[dir, "--prompt", "p"]);

        assert_eq!(out.status.code(), Some(2), "{dir}");
        assert_eq!(stderr_lines(&out).last(), Some(&message), "{dir}");
        assert!(stdout(&out).is_empty());
    }
    let missing = init(tmp.path(), &["nowhere", "--prompt", "p"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr_lines(&missing)[0].starts_with("wanbatch: cannot read the folder nowhere: "));
    assert_eq!(
        names(tmp.path()),
        ["empty", "fakes", "file.png", "texts"],
        "nothing written"
    );
}

#[test]
fn a_prompt_file_that_is_not_utf8_stops_the_command_even_with_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    put(&photos, "a.png", PNG);
    put(&photos, "a.txt", b"caf\xE9 au lait"); // Latin-1
    put(&photos, "b.png", PNG);

    let out = init(tmp.path(), &["photos", "--prompt", "p"]);

    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr_lines(&out),
        [
            format!("{}: not UTF-8 text (save it as UTF-8)", sep("photos/a.txt")),
            "wanbatch: 1 prompt file cannot be used (listed above): nothing written".to_string(),
        ]
    );
    assert_eq!(names(tmp.path()), ["photos"]);
}

#[test]
fn image_paths_are_relative_inside_the_manifests_folder_and_absolute_outside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    put(&photos, "a.png", PNG);
    put(&photos, "a.txt", b"p");

    let inside = init(tmp.path(), &["photos", "--output", &sep("photos/jobs.csv")]);
    let outside = init(tmp.path(), &["photos", "-o", &sep("out/new folder/jobs.csv")]);

    assert_eq!(inside.status.code(), Some(0), "{:?}", stderr_lines(&inside));
    assert_eq!(rows(&photos.join("jobs.csv")).1, [row("a", "a.png", "p")]);
    assert_eq!(outside.status.code(), Some(0), "{:?}", stderr_lines(&outside));
    let abs = tmp.path().canonicalize().unwrap().join("photos").join("a.png");
    let written = tmp.path().join("out/new folder/jobs.csv");
    assert_eq!(rows(&written).1, [row("a", abs.to_str().unwrap(), "p")]);
    assert!(
        stdout(&outside).ends_with(&format!(
            "next: wanbatch run \"{}\" --dry-run\n",
            sep("out/new folder/jobs.csv")
        )),
        "{}",
        stdout(&outside)
    );
}

#[test]
fn recursive_takes_subfolders_in_natural_order_with_their_path_in_the_id() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    for day in ["day1", "day10", "day2"] {
        put(&photos, &format!("{day}/cat.png"), PNG);
        put(&photos, &format!("{day}/cat.txt"), day.as_bytes());
    }
    put(&photos, "top.png", PNG);
    put(&photos, "top.txt", b"top");
    put(&photos, ".git/x.png", PNG);

    let flat = init(tmp.path(), &["photos", "-o", "flat.csv"]);
    let deep = init(tmp.path(), &["photos", "--recursive", "-o", "deep.csv"]);

    assert_eq!(flat.status.code(), Some(0), "{:?}", stderr_lines(&flat));
    assert_eq!(
        rows(&tmp.path().join("flat.csv")).1,
        [row("top", &sep("photos/top.png"), "top")]
    );
    assert_eq!(deep.status.code(), Some(0), "{:?}", stderr_lines(&deep));
    assert_eq!(
        rows(&tmp.path().join("deep.csv")).1,
        [
            row("day1-cat", &sep("photos/day1/cat.png"), "day1"),
            row("day2-cat", &sep("photos/day2/cat.png"), "day2"),
            row("day10-cat", &sep("photos/day10/cat.png"), "day10"),
            row("top", &sep("photos/top.png"), "top"),
        ]
    );
}

#[test]
fn with_both_prompt_files_the_plain_txt_wins_and_a_difference_is_noted() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    put(&photos, "cat.png", PNG);
    put(&photos, "cat.txt", b"from cat.txt");
    put(&photos, "cat.png.txt", b"from cat.png.txt");
    put(&photos, "dog.png", PNG);
    put(&photos, "dog.txt", b"");
    put(&photos, "dog.png.txt", b"from dog.png.txt, cat.txt being empty");

    let out = init(tmp.path(), &["photos"]);

    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    assert_eq!(
        stderr_lines(&out),
        [format!(
            "{}: note: using cat.txt (cat.png.txt beside it differs and is ignored)",
            sep("photos/cat.png")
        )]
    );
    assert_eq!(
        rows(&tmp.path().join("jobs.csv")).1,
        [
            row("cat", &sep("photos/cat.png"), "from cat.txt"),
            row("dog", &sep("photos/dog.png"), "from dog.png.txt, cat.txt being empty"),
        ]
    );
}
