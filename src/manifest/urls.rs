//! URL cells: what the API accepts (a public http(s) URL), and how to tell a local file named
//! where an image belongs ([`looks_like_local_path`]): such a cell in `image` or `last_image`
//! is a local image (`local.rs`), checked at import and uploaded before the job's first submit.

use super::params::{shorten, Field};

/// Checks a URL cell (already trimmed) of `field`; the error says what was expected.
pub(super) fn check(_field: &Field, cell: &str) -> Result<(), String> {
    check_url(cell).map_err(|why| format!("{why}, got {:?}", shorten(cell)))
}

fn check_url(s: &str) -> Result<(), &'static str> {
    let url = reqwest::Url::parse(s).map_err(|_| "expected an http(s) URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("expected an http(s) URL");
    }
    if url.host_str().is_none_or(|h| h.is_empty()) {
        return Err("expected an http(s) URL with a host");
    }
    if s.chars().any(char::is_whitespace) {
        return Err("expected a URL without spaces");
    }
    Ok(())
}

/// Image file endings, for a bare file name (`cat.png`) that has no slash to show it is a path.
const IMAGE_ENDINGS: &[&str] = &[
    ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif",
];

/// Whether a cell that is not an http(s) URL names a file on this computer: `file:` URLs,
/// absolute paths (`/home/u/cat.jpg`, `C:\pics\a.png`, `\\server\share\a.png`, `~/a.png`),
/// relative paths (`photos/cat.png`, `./a.png`) and bare image file names (`cat.png`).
/// Not a path: another scheme (`ftp://`, `data:`), a host without its scheme
/// (`www.example.com/a.png`, `//cdn.example.com/a.png`), plain words.
pub fn looks_like_local_path(s: &str) -> bool {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() >= 5 && b[..5].eq_ignore_ascii_case(b"file:") {
        return true;
    }
    if s.contains("://") {
        return false;
    }
    // A Windows drive (`C:\`, `C:/`); checked before other schemes, as a URL parser reads `C:` as one.
    if b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && matches!(b[2], b'\\' | b'/') {
        return true;
    }
    if let Some(rest) = s.strip_prefix("//") {
        // Protocol-relative `//host/…` when the first part looks like a host name.
        return !rest.split('/').next().unwrap_or("").contains('.');
    }
    if ["/", "\\", "./", "../", ".\\", "..\\", "~/", "~\\"]
        .iter()
        .any(|p| s.starts_with(p))
    {
        return true;
    }
    // `data:…`, `mailto:…`: a scheme before any slash.
    if let Some(colon) = s.find(':') {
        if !s[..colon].contains(['/', '\\']) {
            return false;
        }
    }
    if s.contains('\\') {
        return true;
    }
    let ends_like_an_image = IMAGE_ENDINGS
        .iter()
        .any(|e| s.len() >= e.len() && s.as_bytes()[s.len() - e.len()..].eq_ignore_ascii_case(e.as_bytes()));
    match s.split_once('/') {
        // `photos/cat.png`, but not `www.example.com/cat.png`, a URL missing its scheme.
        Some((first, _)) => !first.contains('.') && !first.is_empty(),
        None => ends_like_an_image && !s.contains(char::is_whitespace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::params::field;

    #[test]
    fn local_paths_are_told_apart_from_urls_and_junk() {
        for path in [
            "photos/cat.png",
            "/home/u/cat.jpg",
            "C:\\pics\\a.png",
            "c:/pics/a.png",
            "file:///x.png",
            "FILE:/x.png",
            "./a.png",
            "../up/a.webp",
            "~/Pictures/a.JPG",
            "\\\\server\\share\\a.png",
            "cat.png",
            "IMG_0001.HEIC",
            "photos\\cat.png",
            "photos/cat",
        ] {
            assert!(looks_like_local_path(path), "{path}");
        }
        for other in [
            "https://a.example/x.png",
            "ftp://x/y.png",
            "www.example.com/a.png",
            "//cdn.example.com/a.png",
            "data:image/png;base64,AAAA",
            "not a url",
            "javascript:alert(1)",
            "a cat.png and more",
            "",
        ] {
            assert!(!looks_like_local_path(other), "{other}");
        }
    }

    #[test]
    fn bad_urls_say_what_was_expected() {
        // (A local path in `image` never gets here: the loader checks it as a file, `local.rs`.)
        let image = field("image").unwrap();
        assert_eq!(
            check(image, "ftp://x/y.png").unwrap_err(),
            "expected an http(s) URL, got \"ftp://x/y.png\""
        );
        // A LoRA is not an image: a path there is just not a URL.
        assert_eq!(
            check(field("high_noise_lora").unwrap(), "loras/a.safetensors").unwrap_err(),
            "expected an http(s) URL, got \"loras/a.safetensors\""
        );
        assert!(check(image, "https://a.example/x.png").is_ok());
    }
}
