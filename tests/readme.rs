//! The README against the real binary: every `--flag` it mentions exists in `--help` (of the
//! command it is given to, where a line says which), its command list holds exactly the visible
//! commands (the hidden benchmarks are documented in docs/benchmarks.md instead, flags checked
//! there too), its exit codes are the binary's, and its two set-up commands are there verbatim,
//! `.ci/run` running the test command it names.
//!
//! Flags of other tools (`cargo run --release`, …) are told apart by an explicit list of their
//! phrases, so a new foreign flag has to be added there on purpose rather than slip through.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const README: &str = include_str!("../README.md");
const BENCHMARKS: &str = include_str!("../docs/benchmarks.md");
const CI_RUN: &str = include_str!("../.ci/run");

/// Other tools' command lines that the README shows; their flags are not wanbatch's.
const OTHER_TOOLS: &[&str] = &[
    "cargo install --path",
    "cargo build --release",
    "cargo run --release",
    "cargo test --locked",
];

/// The two set-up commands of a fresh machine: the demo, then the whole test suite.
const SETUP: [&str; 2] = ["cargo run --release -- demo", ".ci/run"];

/// The command `.ci/run` runs, which the README names as the test suite.
const TEST_COMMAND: &str = "cargo test --locked";

/// The benchmark commands: hidden from `--help`, documented in docs/benchmarks.md.
const HIDDEN: &[&str] = &[
    "bench",
    "bench-engine",
    "bench-import",
    "bench-report",
    "bench-runners",
    "bench-s3",
];

/// `wanbatch ARGS --help`, which must succeed.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wanbatch"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run wanbatch");
    assert!(out.status.success(), "wanbatch {args:?} --help failed: {out:?}");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The `--flag` tokens of a text: `--` after a start or a non-word character, then a letter,
/// then letters, digits and dashes. (`--` alone, as in `cargo run -- demo`, is no flag.)
fn flags(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i + 2 < b.len() {
        let starts = b[i] == b'-' && b[i + 1] == b'-' && b[i + 2].is_ascii_lowercase() && (i == 0 || !word(b[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i + 2;
        while j < b.len() && (b[j].is_ascii_lowercase() || b[j].is_ascii_digit() || b[j] == b'-') {
            j += 1;
        }
        found.insert(text[i..j].trim_end_matches('-').to_string());
        i = j;
    }
    found
}

/// The README with other tools' command lines taken out.
fn readme_without_other_tools() -> String {
    OTHER_TOOLS
        .iter()
        .fold(README.to_string(), |s, phrase| s.replace(phrase, ""))
}

/// The visible subcommands, from the main help's "Commands:" list (without `help`).
fn visible_commands(main_help: &str) -> Vec<String> {
    main_help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Where a command line ends within a line of text.
fn segment_end(s: &str) -> usize {
    ["&&", " | ", ";", "#", ">", "`"]
        .iter()
        .filter_map(|t| s.find(t))
        .min()
        .unwrap_or(s.len())
}

/// Each `wanbatch COMMAND …` in a code block line or an inline code span of `text`, as
/// (command, the rest of its command line), for the commands in `known`.
fn invocations(text: &str, known: &BTreeMap<String, BTreeSet<String>>) -> Vec<(String, String)> {
    let mut pieces: Vec<String> = Vec::new();
    // Inline code spans may run over a line break: they are read per paragraph, as the odd
    // pieces between backticks.
    let mut paragraph = String::new();
    let flush = |paragraph: &mut String, pieces: &mut Vec<String>| {
        pieces.extend(paragraph.split('`').skip(1).step_by(2).map(str::to_string));
        paragraph.clear();
    };
    let mut in_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            flush(&mut paragraph, &mut pieces);
            in_block = !in_block;
        } else if in_block {
            pieces.push(line.to_string());
        } else if line.trim().is_empty() {
            flush(&mut paragraph, &mut pieces);
        } else {
            paragraph.push(' ');
            paragraph.push_str(line);
        }
    }
    flush(&mut paragraph, &mut pieces);
    let mut found = Vec::new();
    for piece in &pieces {
        let mut rest = piece.as_str();
        while let Some(at) = rest.find("wanbatch ") {
            let after = &rest[at + "wanbatch ".len()..];
            let command = after.split_whitespace().next().unwrap_or("");
            if known.contains_key(command) {
                let args = &after[command.len()..];
                found.push((command.to_string(), args[..segment_end(args)].to_string()));
            }
            rest = after;
        }
    }
    found
}

#[test]
fn every_flag_the_readme_mentions_is_in_the_help_of_its_command() {
    let main = help(&[]);
    let commands = visible_commands(&main);
    assert!(
        commands.len() >= 8 && commands.iter().any(|c| c == "run"),
        "{commands:?} from {main}"
    );
    let helps: BTreeMap<String, BTreeSet<String>> = commands.iter().map(|c| (c.clone(), flags(&help(&[c])))).collect();
    let every: BTreeSet<String> = helps.values().flatten().cloned().chain(flags(&main)).collect();

    let text = readme_without_other_tools();
    let mentioned = flags(&text);
    for sure in ["--rpm", "--db", "--unreachable-after", "--dry-run", "--ids"] {
        assert!(mentioned.contains(sure), "the extraction missed {sure}: {mentioned:?}");
    }
    let missing: Vec<&String> = mentioned.difference(&every).collect();
    assert!(
        missing.is_empty(),
        "README.md mentions flags that no visible command's --help has: {missing:?} \
         (another tool's flag? add its phrase to OTHER_TOOLS)"
    );

    // A flag written after `wanbatch COMMAND` must be that command's.
    let calls = invocations(&text, &helps);
    assert!(calls.len() >= 20, "too few command lines found: {calls:?}");
    let wrong: Vec<String> = calls
        .iter()
        .flat_map(|(command, args)| {
            flags(args)
                .into_iter()
                .filter(|f| !helps[command].contains(f))
                .map(move |f| format!("wanbatch {command} … {f}"))
        })
        .collect();
    assert!(wrong.is_empty(), "flags given to a command that lacks them: {wrong:?}");
}

#[test]
fn the_command_list_is_the_visible_commands_and_the_benchmarks_are_in_their_own_page() {
    let main = help(&[]);
    let commands = visible_commands(&main);
    let documented: Vec<String> = README
        .lines()
        .filter_map(|l| l.strip_prefix("### `wanbatch "))
        .filter_map(|l| l.split([' ', '`']).next())
        .map(str::to_string)
        .collect();
    for c in &documented {
        assert!(
            commands.contains(c),
            "README.md documents `wanbatch {c}`, which --help does not list"
        );
    }
    for c in &commands {
        assert!(documented.contains(c), "README.md has no section for `wanbatch {c}`");
    }
    for hidden in HIDDEN {
        assert!(
            !commands.iter().any(|c| c == hidden),
            "{hidden} is listed in --help:\n{main}"
        );
        for mention in [
            format!("wanbatch {hidden}`"),
            format!("wanbatch {hidden} "),
            format!("-- {hidden}"),
        ] {
            assert!(
                !README.contains(&mention),
                "README.md documents the benchmark {mention:?}"
            );
        }
        // docs/benchmarks.md has its section, whose table of flags is the command's.
        let heading = format!("## `wanbatch {hidden}`");
        let section = BENCHMARKS
            .split("\n## ")
            .find(|s| s.starts_with(&heading[3..]))
            .unwrap_or_else(|| panic!("docs/benchmarks.md has no {heading:?} section"));
        let first_cells: String = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `--"))
            .map(|l| format!("--{}\n", l.split('|').next().unwrap_or("")))
            .collect();
        assert!(
            !first_cells.is_empty(),
            "docs/benchmarks.md: {hidden} has no table of flags"
        );
        let own = flags(&help(&[hidden]));
        let missing: Vec<String> = flags(&first_cells).difference(&own).cloned().collect();
        assert!(missing.is_empty(), "docs/benchmarks.md: {hidden} has no {missing:?}");
    }
}

#[test]
fn the_two_setup_commands_are_there_and_ci_runs_the_test_command() {
    let blocks: Vec<Vec<&str>> = README
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|b| b.lines().skip(1).map(str::trim).filter(|l| !l.is_empty()).collect())
        .collect();
    assert!(
        blocks.iter().any(|b| b.as_slice() == SETUP),
        "README.md has no code block of exactly {SETUP:?}"
    );
    // Named before anything else: the set-up comes right after the install.
    let setup_at = README.find(SETUP[0]).unwrap();
    let real_use_at = README.find("## Real use").expect("a Real use section");
    assert!(setup_at < real_use_at, "the set-up commands come before real use");

    assert!(
        README.contains(&format!("`{TEST_COMMAND}`")),
        "README.md names the test command"
    );
    let last = CI_RUN
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap();
    assert_eq!(last, TEST_COMMAND, ".ci/run ends by running the README's test command");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run"))
            .unwrap()
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, ".ci/run is executable");
    }
}

#[test]
fn the_exit_codes_are_the_binarys() {
    let table: Vec<u8> = README
        .split("## Exit codes")
        .nth(1)
        .expect("an Exit codes section")
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    use wanbatch::exit::Outcome::*;
    let codes: Vec<u8> = [AllDone, SomeFailed, Usage, Account, Local, Interrupted]
        .iter()
        .map(|o| o.code())
        .collect();
    assert_eq!(table, codes);
    let main = help(&[]);
    for code in codes {
        assert!(main.contains(&format!("{code} ")), "--help's exit codes lack {code}");
    }
}
