//! The optional config file, `wanbatch.toml`: defaults for the flags one sets for every command.
//!
//! Found at `--config PATH` (or `WANBATCH_CONFIG`), else `./wanbatch.toml` if it exists. Keys:
//! `db`, `out`, `rpm`, `concurrency`, `price`, `max_cost`, `min_credits`, `on_unknown`.
//! Precedence, highest first: a flag on the command line, its environment variable
//! (`WANBATCH_DB`, `WANBATCH_RPM`, …; clap's `env`), the file, the built-in default. So the file
//! only fills in a value whose source clap reports as the default (or absent).
//!
//! Relative paths in the file are relative to the file's folder, so a project's config means the
//! same from anywhere. An unknown key is an error naming the file and the key (a typo must not
//! silently leave a limit unset). The API key is never read from the file: it would end up in
//! backups and repositories; a key-like entry is refused with a pointer to `SEGMIND_API_KEY`.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ValueEnum;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::cmd::{Cli, Command};
use crate::engine::UnknownPolicy;

/// The file looked for in the current folder when `--config` is not given.
pub const DEFAULT_FILE: &str = "wanbatch.toml";

const KEYS: &[&str] = &[
    "db",
    "out",
    "rpm",
    "concurrency",
    "price",
    "max_cost",
    "min_credits",
    "on_unknown",
];

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Config {
    pub db: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub rpm: Option<u32>,
    pub concurrency: Option<u32>,
    pub price: Option<f64>,
    pub max_cost: Option<f64>,
    pub min_credits: Option<f64>,
    pub on_unknown: Option<UnknownPolicy>,
}

/// Reads and checks a config file. Errors name the file (and the key).
pub fn load(path: &Path) -> Result<Config, String> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read the config file: {e}"))?;
    let mut config = parse(&text).map_err(|e| format!("{name}: {e}"))?;
    let base = path
        .parent()
        .filter(|b| !b.as_os_str().is_empty() && *b != Path::new("."));
    for p in [&mut config.db, &mut config.out].into_iter().flatten() {
        if let (Some(base), true) = (base, p.is_relative()) {
            *p = base.join(&*p);
        }
    }
    Ok(config)
}

/// Parses the text of a config file.
pub fn parse(text: &str) -> Result<Config, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| format!("not valid TOML: {}", e.message()))?;
    for key in table.keys() {
        let k = key.to_ascii_lowercase();
        if ["key", "token", "secret", "password"].iter().any(|w| k.contains(w)) {
            return Err(format!(
                "{key}: an API key is never read from a file (it would end up in backups and repositories); \
                 set SEGMIND_API_KEY in the environment and remove this entry"
            ));
        }
        if !KEYS.contains(&key.as_str()) {
            return Err(format!("unknown key {key:?}; the keys are {}", KEYS.join(", ")));
        }
    }
    let money = "a number ≥ 0 (dollars)";
    let config = Config {
        db: get(&table, "db", "a path")?,
        out: get(&table, "out", "a path")?,
        rpm: get(&table, "rpm", "an integer from 1 to 1000000")?,
        concurrency: get(&table, "concurrency", "an integer ≥ 1")?,
        price: get(&table, "price", money)?,
        max_cost: get(&table, "max_cost", money)?,
        min_credits: get(&table, "min_credits", "a number ≥ 0")?,
        on_unknown: match get::<String>(&table, "on_unknown", "\"resubmit\" or \"hold\"")? {
            None => None,
            Some(s) => Some(
                UnknownPolicy::from_str(&s, false)
                    .map_err(|_| format!("on_unknown: expected \"resubmit\" or \"hold\", got {s:?}"))?,
            ),
        },
    };
    if config.rpm.is_some_and(|r| !(1..=1_000_000).contains(&r)) {
        return Err("rpm: expected an integer from 1 to 1000000".into());
    }
    if config.concurrency == Some(0) {
        return Err("concurrency: expected an integer ≥ 1".into());
    }
    for (k, v) in [
        ("price", config.price),
        ("max_cost", config.max_cost),
        ("min_credits", config.min_credits),
    ] {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(format!("{k}: expected a number ≥ 0"));
        }
    }
    Ok(config)
}

/// One key's value as a `T`, or an error naming the key and what it takes.
fn get<T: serde::de::DeserializeOwned>(table: &toml::Table, key: &str, what: &str) -> Result<Option<T>, String> {
    match table.get(key) {
        None => Ok(None),
        Some(v) => v
            .clone()
            .try_into::<T>()
            .map(Some)
            .map_err(|_| format!("{key}: expected {what}, got a TOML {}", v.type_str())),
    }
}

/// Parses the command line, then fills what it left at the default from the config file.
pub fn parse_args() -> Result<Result<Cli, String>, clap::Error> {
    let matches = Cli::command().try_get_matches()?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(apply(cli, &matches, Path::new(".")))
}

/// Fills from the config file (found relative to `cwd`) every setting `matches` left at its
/// default.
pub fn apply(mut cli: Cli, matches: &ArgMatches, cwd: &Path) -> Result<Cli, String> {
    let path = match &cli.config {
        Some(p) => p.clone(),
        None => {
            let p = cwd.join(DEFAULT_FILE);
            if !p.exists() {
                return Ok(cli);
            }
            p
        }
    };
    let Some((_, m)) = matches.subcommand() else {
        return Ok(cli);
    };
    let uses_config = matches!(
        cli.command,
        Command::Run(_)
            | Command::Import(_)
            | Command::Retry(_)
            | Command::Status(_)
            | Command::Export(_)
            | Command::Cancel(_)
    );
    if !uses_config {
        return Ok(cli);
    }
    let c = load(&path)?;
    let unset = |id: &str| matches!(m.value_source(id), None | Some(ValueSource::DefaultValue));
    fn fill<T: Clone>(slot: &mut T, from: &Option<T>, unset: bool) {
        if let (true, Some(v)) = (unset, from) {
            *slot = v.clone();
        }
    }
    fn fill_opt<T: Clone>(slot: &mut Option<T>, from: &Option<T>, unset: bool) {
        if unset && from.is_some() {
            *slot = from.clone();
        }
    }
    match &mut cli.command {
        Command::Run(a) => {
            fill(&mut a.db, &c.db, unset("db"));
            fill(&mut a.out, &c.out, unset("out"));
            fill(&mut a.rpm, &c.rpm, unset("rpm"));
            fill(&mut a.on_unknown, &c.on_unknown, unset("on_unknown"));
            fill_opt(&mut a.concurrency, &c.concurrency, unset("concurrency"));
            fill_opt(&mut a.price, &c.price, unset("price"));
            fill_opt(&mut a.max_cost, &c.max_cost, unset("max_cost"));
            fill_opt(&mut a.min_credits, &c.min_credits, unset("min_credits"));
        }
        Command::Import(a) => {
            fill(&mut a.db, &c.db, unset("db"));
            fill(&mut a.estimate.rpm, &c.rpm, unset("rpm"));
            fill_opt(&mut a.estimate.price, &c.price, unset("price"));
        }
        Command::Retry(a) => fill(&mut a.db, &c.db, unset("db")),
        Command::Status(a) => fill(&mut a.db, &c.db, unset("db")),
        Command::Export(a) => fill(&mut a.db, &c.db, unset("db")),
        Command::Cancel(a) => fill(&mut a.db, &c.db, unset("db")),
        _ => {}
    }
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let c = parse(
            "db = \"jobs.db\"\nout = \"videos\"\nrpm = 5\nconcurrency = 3\nprice = 0.3\nmax_cost = 20\n\
             min_credits = 1.5\non_unknown = \"hold\"\n",
        )
        .unwrap();
        assert_eq!(c.rpm, Some(5));
        assert_eq!(c.max_cost, Some(20.0));
        assert_eq!(c.on_unknown, Some(UnknownPolicy::Hold));
        assert_eq!(c.db, Some(PathBuf::from("jobs.db")));
    }

    #[test]
    fn unknown_keys_api_keys_and_bad_values_are_refused_by_name() {
        let e = parse("rpm = 5\nrmp_limit = 3\n").unwrap_err();
        assert!(e.starts_with("unknown key \"rmp_limit\""), "{e}");
        let e = parse("api_key = \"sk-123-secret\"\n").unwrap_err();
        assert!(e.starts_with("api_key: an API key is never read from a file"), "{e}");
        assert!(!e.contains("sk-123"), "the value must not be echoed: {e}");
        assert!(parse("SEGMIND_API_KEY = \"x\"\n")
            .unwrap_err()
            .contains("SEGMIND_API_KEY in the environment"));
        assert!(parse("rpm = 0\n").unwrap_err().starts_with("rpm:"));
        assert!(parse("price = -1\n").unwrap_err().starts_with("price:"));
        let e = parse("rpm = \"fast\"\n").unwrap_err();
        assert_eq!(e, "rpm: expected an integer from 1 to 1000000, got a TOML string");
        assert_eq!(
            parse("max_cost = 20\n").unwrap().max_cost,
            Some(20.0),
            "an integer is a number"
        );
        let e = parse("on_unknown = \"maybe\"\n").unwrap_err();
        assert!(e.contains("maybe"), "{e}");
        assert!(parse("rpm = [\n").unwrap_err().starts_with("not valid TOML"));
    }

    fn cli(args: &[&str], cwd: &Path) -> Result<Cli, String> {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        apply(cli, &matches, cwd)
    }

    #[test]
    fn the_file_fills_only_what_the_command_line_left_at_the_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DEFAULT_FILE),
            "db = \"cfg.db\"\nrpm = 7\nprice = 0.5\nmax_cost = 3\non_unknown = \"hold\"\n",
        )
        .unwrap();
        let Command::Run(a) = cli(&["wanbatch", "run", "--rpm", "9"], dir.path()).unwrap().command else {
            panic!("run")
        };
        assert_eq!(a.rpm, 9, "a flag beats the file");
        assert_eq!(a.db, dir.path().join("cfg.db"), "relative to the file's folder");
        assert_eq!((a.price, a.max_cost), (Some(0.5), Some(3.0)));
        assert_eq!(a.on_unknown, UnknownPolicy::Hold);
        assert_eq!(a.out, PathBuf::from("outputs"), "not in the file: the default");
        // Another file by --config; a missing one is an error, naming it.
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "rpm = 11\n").unwrap();
        let Command::Import(a) = cli(
            &["wanbatch", "--config", other.to_str().unwrap(), "import", "m.csv"],
            dir.path(),
        )
        .unwrap()
        .command
        else {
            panic!("import")
        };
        assert_eq!((a.estimate.rpm, a.db), (11, PathBuf::from("wanbatch.db")));
        let e = cli(&["wanbatch", "--config", "/nonexistent/w.toml", "status"], dir.path()).unwrap_err();
        assert!(e.starts_with("/nonexistent/w.toml: cannot read"), "{e}");
        // No file at all: defaults.
        let empty = tempfile::tempdir().unwrap();
        let Command::Status(a) = cli(&["wanbatch", "status"], empty.path()).unwrap().command else {
            panic!("status")
        };
        assert_eq!(a.db, PathBuf::from("wanbatch.db"));
    }
}
