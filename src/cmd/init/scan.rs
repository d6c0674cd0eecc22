//! How `init` reads DIR: which files are images (extension and first bytes), which are skipped
//! and why, and the prompt each image's `.txt` gives.
//!
//! Hidden files and folders (a name starting with `.`) are never looked at; a link to a file
//! counts as the file, a link to a folder is never followed (no loops). Files are listed in the
//! file system's order: the caller sorts.

use std::io::Read;
use std::path::{Path, PathBuf};

/// An image file found in DIR.
pub(super) struct Image {
    /// Its path below DIR, one name per level (all UTF-8).
    pub(super) parts: Vec<String>,
    /// The same, as a path.
    pub(super) rel: PathBuf,
}

impl Image {
    /// What its id is made from: the path below DIR without the extension.
    pub(super) fn id_source(&self) -> String {
        let (last, dirs) = self.parts.split_last().expect("an image has a name");
        let stem = Path::new(last).file_stem().and_then(|s| s.to_str()).unwrap_or(last);
        dirs.iter()
            .map(String::as_str)
            .chain([stem])
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// What reading DIR found.
#[derive(Default)]
pub(super) struct Scan {
    pub(super) images: Vec<Image>,
    /// `path: skipped: reason`.
    pub(super) skipped: Vec<String>,
    /// `path: note: …` about images kept.
    pub(super) notes: Vec<String>,
}

impl Scan {
    /// Reads one folder (`parts`: its path below DIR); an unreadable subfolder is skipped.
    pub(super) fn folder(&mut self, dir: &Path, parts: &[String], recursive: bool) -> std::io::Result<()> {
        let here: PathBuf = parts.iter().collect();
        let path = dir.join(&here);
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let name = entry.file_name();
            let shown = path.join(&name);
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let ext = Path::new(&name)
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            let Ok(meta) = entry.file_type() else { continue };
            if meta.is_dir() {
                if recursive {
                    if let Some(name) = name.to_str() {
                        let mut sub = parts.to_vec();
                        sub.push(name.to_string());
                        if let Err(e) = self.folder(dir, &sub, true) {
                            self.skip(&shown, format!("cannot read this folder: {e}"));
                        }
                    }
                }
                continue;
            }
            let supported = format_of_ext(&ext);
            if supported.is_none() {
                if matches!(ext.as_str(), "tif" | "tiff" | "heic" | "heif" | "avif") {
                    self.skip(
                        &shown,
                        format!("a .{ext} image, which the API does not take: convert it to PNG or JPEG"),
                    );
                }
                continue;
            }
            // A link to a file counts as the file; a link to a folder is never followed.
            let is_file = std::fs::metadata(&shown).map(|m| m.is_file());
            match is_file {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    self.skip(&shown, format!("cannot read it: {e}"));
                    continue;
                }
            }
            let Some(name) = name.to_str() else {
                self.skip(&shown, "its name is not UTF-8, so it cannot go in a CSV".into());
                continue;
            };
            match first_bytes(&shown) {
                Err(e) => self.skip(&shown, format!("cannot read it: {e}")),
                Ok(head) if head.is_empty() => self.skip(&shown, "it is empty".into()),
                Ok(head) => match (format_of_bytes(&head), supported) {
                    (Some(is), Some(named)) => {
                        if is != named {
                            let note = format!(
                                "{}: note: its bytes are a {is} image, not {named}; kept",
                                shown.display()
                            );
                            self.notes.push(note);
                        }
                        let mut parts = parts.to_vec();
                        parts.push(name.to_string());
                        self.images.push(Image {
                            rel: here.join(name),
                            parts,
                        });
                    }
                    (None, Some(named)) => self.skip(
                        &shown,
                        format!(
                            "its bytes are not a {named} image (they start with {})",
                            describe(&head)
                        ),
                    ),
                    (_, None) => unreachable!("only supported extensions get here"),
                },
            }
        }
        Ok(())
    }

    fn skip(&mut self, path: &Path, why: String) {
        self.skipped.push(format!("{}: skipped: {why}", path.display()));
    }
}

fn first_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(12);
    std::fs::File::open(path)?.take(12).read_to_end(&mut head)?;
    Ok(head)
}

/// The start of a file, as text when it reads as text, else as hex.
fn describe(head: &[u8]) -> String {
    match std::str::from_utf8(head) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') => format!("{s:?}"),
        _ => head.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" "),
    }
}

/// The formats the API takes, by the names users know them by.
fn format_of_ext(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "png" => "PNG",
        "jpg" | "jpeg" => "JPEG",
        "webp" => "WebP",
        "gif" => "GIF",
        "bmp" => "BMP",
        _ => return None,
    })
}

/// The format the first bytes of a file announce.
fn format_of_bytes(h: &[u8]) -> Option<&'static str> {
    Some(match h {
        [0x89, b'P', b'N', b'G', ..] => "PNG",
        [0xFF, 0xD8, 0xFF, ..] => "JPEG",
        [b'G', b'I', b'F', b'8', ..] => "GIF",
        [b'B', b'M', ..] => "BMP",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "WebP",
        _ => return None,
    })
}

/// What the files beside an image say its prompt is.
pub(super) enum Prompt {
    Found(String),
    /// No prompt file with text; `why` says which files were looked for.
    None {
        why: String,
    },
}

/// Reads the prompt of `image`: `cat.txt` beside `cat.png`, else `cat.png.txt`, the first that
/// holds text (UTF-8, a BOM dropped, trimmed). The error names a file that exists but cannot
/// be used: it is never passed over for `--prompt`.
pub(super) fn read_prompt(image: &Path) -> Result<Prompt, String> {
    let mut with_txt = image.as_os_str().to_owned();
    with_txt.push(".txt");
    let candidates = [image.with_extension("txt"), PathBuf::from(with_txt)];
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    let mut empty = Vec::new();
    for txt in candidates {
        let bytes = match std::fs::read(&txt) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: cannot read it: {e}", txt.display())),
        };
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        let text =
            std::str::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text (save it as UTF-8)", txt.display()))?;
        match text.trim() {
            "" => empty.push(txt),
            t => found.push((txt, t.to_string())),
        }
    }
    let file_name = |p: &Path| p.file_name().unwrap_or_default().to_string_lossy().into_owned();
    match found.as_slice() {
        [] => Ok(Prompt::None {
            why: match empty.first() {
                Some(e) => format!("{} is empty", file_name(e)),
                None => format!("no {} beside it", file_name(&image.with_extension("txt"))),
            },
        }),
        [(_, text)] => Ok(Prompt::Found(text.clone())),
        [(used, text), (ignored, other), ..] => {
            if text != other {
                eprintln!(
                    "{}: note: using {} ({} beside it differs and is ignored)",
                    image.display(),
                    file_name(used),
                    file_name(ignored)
                );
            }
            Ok(Prompt::Found(text.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_name_their_format() {
        assert_eq!(format_of_bytes(b"\x89PNG\r\n\x1a\n"), Some("PNG"));
        assert_eq!(format_of_bytes(b"\xFF\xD8\xFF\xE0"), Some("JPEG"));
        assert_eq!(format_of_bytes(b"GIF89a"), Some("GIF"));
        assert_eq!(format_of_bytes(b"BM\0\0"), Some("BMP"));
        assert_eq!(format_of_bytes(b"RIFF\x10\0\0\0WEBPVP8 "), Some("WebP"));
        assert_eq!(format_of_bytes(b"RIFF\x10\0\0\0WAVE"), None);
        assert_eq!(format_of_bytes(b"hello"), None);
        assert_eq!(describe(b"hello"), "\"hello\"");
        assert_eq!(describe(b"\0\x01"), "00 01");
    }
}
