//! Local images: an `image` or `last_image` cell that names a file on this computer — a path
//! relative to the manifest's folder, an absolute path, `~/…`, or a `file://` URL.
//!
//! At import each file is checked once (however many rows name it): it exists, is a regular
//! file, is an image by its first bytes (PNG, JPEG, WebP, GIF, BMP), is within the size cap, and
//! its SHA-256 is taken. The row's parameter becomes the file's canonical `file://` URL (so a job
//! knows its file wherever the command runs from); the engine uploads the file to Segmind before
//! the job's first submit, once per content, and sends the uploaded URL instead.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::params::shorten;

/// Images over this many bytes are refused unless `--max-image-bytes` says otherwise.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 20 * 1024 * 1024;

/// One local image file, as checked at import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalImage {
    /// The canonical absolute path.
    pub path: PathBuf,
    /// Its `file://` URL: the parameter's value in the job.
    pub url: String,
    pub sha256: String,
    pub bytes: u64,
    /// `image/png`, `image/jpeg`, … (from the first bytes).
    pub media_type: &'static str,
}

/// What the loader knows of local files while it reads manifests.
#[derive(Default)]
pub(super) struct Files {
    /// The folder of the manifest being read: relative paths start there.
    pub base: PathBuf,
    pub max_bytes: u64,
    /// Every path named so far (as resolved), and what checking it found.
    checked: HashMap<PathBuf, Result<LocalImage, String>>,
    /// Files checked since the last `take_new`, in order.
    new: Vec<LocalImage>,
}

impl Files {
    pub fn new(max_bytes: u64) -> Files {
        Files {
            max_bytes,
            ..Files::default()
        }
    }

    /// Checks the file a cell names; returns its `file://` URL, or the error for the cell.
    pub fn check(&mut self, cell: &str) -> Result<&str, String> {
        let named = resolve(&self.base, cell)?;
        // One entry per file, however it is named.
        let path = std::fs::canonicalize(&named).unwrap_or(named);
        if !self.checked.contains_key(&path) {
            let relative = Path::new(cell.trim()).is_relative()
                && !cell.trim_start().starts_with('~')
                && !cell
                    .trim_start()
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case("file:"));
            let result = inspect(&path, self.max_bytes, relative);
            if let Ok(img) = &result {
                self.new.push(img.clone());
            }
            self.checked.insert(path.clone(), result);
        }
        match &self.checked[&path] {
            Ok(img) => Ok(&img.url),
            Err(e) => Err(e.clone()),
        }
    }

    /// The files checked (and found good) since the last call.
    pub fn take_new(&mut self) -> Vec<LocalImage> {
        std::mem::take(&mut self.new)
    }
}

/// The absolute path a cell names (relative ones from `base`).
fn resolve(base: &Path, cell: &str) -> Result<PathBuf, String> {
    let cell = cell.trim();
    let path = if cell.len() >= 5 && cell[..5].eq_ignore_ascii_case("file:") {
        reqwest::Url::parse(cell)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| format!("{:?} is not a usable file:// URL", shorten(cell)))?
    } else if let Some(rest) = cell.strip_prefix("~/").or_else(|| cell.strip_prefix("~\\")) {
        let home = std::env::var_os("HOME").ok_or("names a path under ~ but HOME is not set")?;
        PathBuf::from(home).join(rest)
    } else {
        let p = PathBuf::from(cell);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    Ok(path)
}

/// "2.5 MiB" / "300 KiB" / "100 bytes".
fn size(n: u64) -> String {
    match n {
        0..=9_999 => format!("{n} bytes"),
        10_000..=1_048_575 => format!("{} KiB", n / 1024),
        _ => format!("{:.1} MiB", n as f64 / 1048576.0),
    }
}

/// Checks one file: exists, regular, an image by its first bytes, within `max_bytes`; hashes it.
fn inspect(path: &Path, max_bytes: u64, relative: bool) -> Result<LocalImage, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if relative => {
            format!("no such file: {shown} (relative paths start at the manifest's folder)")
        }
        std::io::ErrorKind::NotFound => format!("no such file: {shown}"),
        _ => format!("cannot read {shown}: {e}"),
    })?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a file"));
    }
    if meta.len() > max_bytes {
        return Err(format!(
            "{shown} is {}; images over {} are refused (--max-image-bytes)",
            size(meta.len()),
            size(max_bytes)
        ));
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut file = std::fs::File::open(&canonical).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(16);
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("cannot read {shown}: {e}"))?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend(buf[..n].iter().take(16 - head.len()));
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let media_type = image_type(&head).ok_or_else(|| {
        format!(
            "{shown} is not a PNG, JPEG, WebP, GIF or BMP image (it starts with {})",
            head.iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    })?;
    let url = reqwest::Url::from_file_path(&canonical)
        .map_err(|_| format!("{shown}: cannot make a file:// URL of it"))?
        .to_string();
    Ok(LocalImage {
        path: canonical,
        url,
        sha256: hex::encode(hasher.finalize()),
        bytes,
        media_type,
    })
}

/// The image type its first bytes say, as a media type.
pub fn image_type(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if head.starts_with(b"BM") && head.len() >= 6 {
        Some("image/bmp")
    } else {
        None
    }
}

/// The local file a parameter value names, if it is a `file://` URL.
pub fn file_of(value: &str) -> Option<PathBuf> {
    value
        .starts_with("file:")
        .then(|| reqwest::Url::parse(value).ok()?.to_file_path().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01";

    #[test]
    fn files_are_checked_once_and_named_by_their_canonical_url() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("img")).unwrap();
        std::fs::write(dir.path().join("img/cat.png"), PNG).unwrap();
        let mut f = Files::new(DEFAULT_MAX_IMAGE_BYTES);
        f.base = dir.path().to_path_buf();
        let url = f.check("img/cat.png").unwrap().to_string();
        assert!(url.starts_with("file:///") && url.ends_with("/img/cat.png"), "{url}");
        assert_eq!(
            f.check("./img/../img/cat.png").unwrap(),
            url,
            "the same file, the same URL"
        );
        assert_eq!(f.check(&url).unwrap(), url, "a file:// URL works too");
        let new = f.take_new();
        assert_eq!(new.len(), 1, "hashed once");
        assert_eq!(new[0].media_type, "image/png");
        assert_eq!(new[0].bytes, PNG.len() as u64);
        assert!(f.take_new().is_empty());
    }

    #[test]
    fn what_is_wrong_with_a_file_is_said() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.png"), b"hello, not an image").unwrap();
        std::fs::write(dir.path().join("big.png"), [PNG, &[0u8; 100]].concat()).unwrap();
        let mut f = Files::new(50);
        f.base = dir.path().to_path_buf();
        assert!(f.check("missing.png").unwrap_err().starts_with("no such file:"));
        assert!(f
            .check("notes.png")
            .unwrap_err()
            .contains("is not a PNG, JPEG, WebP, GIF or BMP image (it starts with 68 65 6c"));
        assert!(f.check("big.png").unwrap_err().contains("images over"));
        assert!(f.check(".").unwrap_err().contains("is not a file"));
        assert!(f.take_new().is_empty());
    }

    #[test]
    fn image_types_by_their_first_bytes() {
        assert_eq!(image_type(PNG), Some("image/png"));
        assert_eq!(image_type(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(image_type(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(image_type(b"GIF89a.."), Some("image/gif"));
        assert_eq!(image_type(b"BM\0\0\0\0"), Some("image/bmp"));
        assert_eq!(image_type(b"%PDF-1.4"), None);
    }
}
