//! The optional config file, `wanbatch.toml`: values for any setting (see `layer`), under the
//! setting's name (`rpm = 5`, `out = "videos"`, `on_unknown = "hold"`).
//!
//! Found at `--config PATH` (or `WANBATCH_CONFIG`), else `./wanbatch.toml` if it exists.
//! Relative paths in the file are relative to the file's folder, so a project's config means the
//! same from anywhere. An unknown key is an error naming the file and the key (a typo must not
//! silently leave a limit unset). The API key is never read from the file: it would end up in
//! backups and repositories; a key-like entry is refused with a pointer to `SEGMIND_API_KEY`.

use std::path::{Path, PathBuf};

use super::layer::{Layer, Origin};

/// The file looked for in the current folder when `--config` is not given.
pub const DEFAULT_FILE: &str = "wanbatch.toml";

/// The config file to read: the one named, or `cwd/wanbatch.toml` if it exists.
pub fn locate(named: Option<&Path>, cwd: &Path) -> Option<PathBuf> {
    match named {
        Some(p) => Some(p.to_path_buf()),
        None => Some(cwd.join(DEFAULT_FILE)).filter(|p| p.is_file()),
    }
}

/// An object-store URL (`s3://…`): not a path to make absolute.
fn is_bucket(p: &Path) -> bool {
    p.to_str().is_some_and(crate::output::looks_like_url)
}

/// Reads and checks a config file. Errors name the file (and the key).
pub fn load(path: &Path) -> Result<Layer, String> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read the config file: {e}"))?;
    let mut layer = parse(&text, path)?;
    let base = path
        .parent()
        .filter(|b| !b.as_os_str().is_empty() && *b != Path::new("."));
    for p in [&mut layer.db, &mut layer.out].into_iter().flatten() {
        if let (Some(base), true) = (base, p.is_relative() && !crate::store::is_url(p) && !is_bucket(p)) {
            *p = base.join(&*p);
        }
    }
    Ok(layer)
}

/// Parses the text of the config file at `path` (named in errors).
pub fn parse(text: &str, path: &Path) -> Result<Layer, String> {
    let name = path.display();
    let table: toml::Table =
        toml::from_str(text).map_err(|e| format!("{name}: not valid TOML: {}", e.message().trim()))?;
    let origin = Origin::File(path.to_path_buf());
    let mut layer = Layer::default();
    for (key, value) in &table {
        let k = key.to_ascii_lowercase();
        if ["key", "token", "secret", "password"].iter().any(|w| k.contains(w)) {
            return Err(format!(
                "{name}: {key}: an API key is never read from a file (it would end up in backups and \
                 repositories); set SEGMIND_API_KEY in the environment and remove this entry"
            ));
        }
        match layer.set_toml(key, value, &origin) {
            Some(r) => r?,
            None => {
                return Err(format!(
                    "{name}: unknown key {key:?}; the keys are {}",
                    Layer::KEYS.join(", ")
                ))
            }
        }
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::UnknownPolicy;

    fn p(text: &str) -> Result<Layer, String> {
        parse(text, Path::new("w.toml"))
    }

    #[test]
    fn a_full_file_parses() {
        let c = p(
            "db = \"jobs.db\"\nout = \"videos\"\nrpm = 5\nconcurrency = 3\nprice = 0.3\nmax_cost = 20\n\
             min_credits = 1.5\non_unknown = \"hold\"\nunreachable_after = \"5m\"\n",
        )
        .unwrap();
        assert_eq!(c.rpm, Some(5));
        assert_eq!(c.max_cost, Some(20.0), "an integer is a number");
        assert_eq!(c.on_unknown, Some(UnknownPolicy::Hold));
        assert_eq!(c.db, Some(PathBuf::from("jobs.db")));
        assert_eq!(c.unreachable_after.unwrap().0.as_secs(), 300);
    }

    #[test]
    fn unknown_keys_api_keys_and_bad_values_are_refused_by_name() {
        let e = p("rpm = 5\nrmp_limit = 3\n").unwrap_err();
        assert!(e.starts_with("w.toml: unknown key \"rmp_limit\""), "{e}");
        let e = p("api_key = \"sk-123-secret\"\n").unwrap_err();
        assert!(
            e.starts_with("w.toml: api_key: an API key is never read from a file"),
            "{e}"
        );
        assert!(!e.contains("sk-123"), "the value must not be echoed: {e}");
        assert!(p("SEGMIND_API_KEY = \"x\"\n")
            .unwrap_err()
            .contains("SEGMIND_API_KEY in the environment"));
        assert!(p("rpm = 0\n").unwrap_err().starts_with("w.toml: rpm: expected"));
        assert!(p("price = -1\n").unwrap_err().starts_with("w.toml: price:"));
        let e = p("rpm = \"fast\"\n").unwrap_err();
        assert!(e.ends_with(", got \"fast\""), "{e}");
        let e = p("on_unknown = \"maybe\"\n").unwrap_err();
        assert!(e.contains("maybe") && e.contains("resubmit or hold"), "{e}");
        assert!(p("rpm = [\n").unwrap_err().starts_with("w.toml: not valid TOML"));
    }

    #[test]
    fn paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("conf/w.toml");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, "db = \"c.db\"\nout = \"/abs/videos\"\n").unwrap();
        let l = load(&f).unwrap();
        assert_eq!(l.db, Some(dir.path().join("conf/c.db")));
        assert_eq!(l.out, Some(PathBuf::from("/abs/videos")));
        assert!(load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .contains("cannot read"));
    }
}
