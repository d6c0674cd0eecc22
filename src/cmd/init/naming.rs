//! How `init` names and orders images: ids made from file names (safe as `OUT/<id>.mp4`,
//! passing the loader's [`check_id`], unique even ignoring case) and the natural order of names.
//!
//! Invariant: ids depend only on the set of names, never on the order a folder lists them in.

use std::cmp::Ordering;
use std::collections::HashSet;

use crate::manifest::check_id;

/// Id used when a file name has no letter or digit to keep.
const FALLBACK_ID: &str = "img";
/// The loader's longest id.
const ID_MAX: usize = 100;

/// Natural order of two names: digit runs by value, other characters ignoring ASCII case; if
/// those are equal, byte order (so the order is total).
pub(super) fn natural(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (n, m) = (run(x), run(y));
                let strip = |s: &[u8]| {
                    let zeros = s.iter().take_while(|c| **c == b'0').count();
                    s[zeros..].to_vec()
                };
                let (p, q) = (strip(&x[..n]), strip(&y[..m]));
                let by_value = p.len().cmp(&q.len()).then_with(|| p.cmp(&q));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                (x, y) = (&x[n..], &y[m..]);
            }
            (Some(c), Some(d)) => {
                let o = c.to_ascii_lowercase().cmp(&d.to_ascii_lowercase());
                if o != Ordering::Equal {
                    return o;
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

/// Natural order of two paths, level by level.
pub(super) fn by_parts(a: &[String], b: &[String]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(p, q)| natural(p, q))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}

/// A file name (without extension) made into an id that passes [`check_id`]: letters, digits,
/// `_` and `.` kept, anything else one `-`; leading characters other than letters and digits
/// dropped, trailing `-` and `.` too; at most 100 characters; `img` if nothing is left; a
/// reserved device name (`con`, `nul`, `com1`…) prefixed with `img-`.
pub fn sanitise_id(stem: &str) -> String {
    let mut s = String::with_capacity(stem.len());
    for c in stem.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            c
        } else {
            '-'
        };
        if !(c == '-' && s.ends_with('-')) {
            s.push(c);
        }
    }
    let s = fit(s.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()), ID_MAX);
    let id = match s {
        "" => FALLBACK_ID.to_string(),
        s if check_id(s).is_err() => fit(&format!("{FALLBACK_ID}-{s}"), ID_MAX).to_string(),
        s => s.to_string(),
    };
    debug_assert!(check_id(&id).is_ok(), "{id:?}");
    id
}

/// `s` (ASCII) cut to `max` characters, without a trailing `-` or `.`.
fn fit(s: &str, max: usize) -> &str {
    s[..s.len().min(max)].trim_end_matches(['-', '.'])
}

/// Makes the ids unique ignoring case, keeping each list's order: the first image of a given
/// id keeps it, the next ones get `-2`, `-3`… skipping any id another image has as its own.
pub(super) fn unique_ids(bases: Vec<String>) -> Vec<String> {
    let mut taken: HashSet<String> = bases.iter().map(|b| b.to_ascii_lowercase()).collect();
    let mut given = HashSet::new();
    bases
        .into_iter()
        .map(|base| {
            if given.insert(base.to_ascii_lowercase()) {
                return base;
            }
            (2u32..)
                .map(|n| {
                    let suffix = format!("-{n}");
                    format!("{}{suffix}", fit(&base, ID_MAX - suffix.len()))
                })
                .find(|id| taken.insert(id.to_ascii_lowercase()))
                .expect("some suffix is free")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitise_keeps_safe_names_and_replaces_the_rest() {
        assert_eq!(sanitise_id("cat_01.v2"), "cat_01.v2");
        assert_eq!(sanitise_id("A B  c"), "A-B-c");
        assert_eq!(sanitise_id("a--b//c"), "a-b-c");
        assert_eq!(sanitise_id("  café au lait!"), "caf-au-lait");
        assert_eq!(sanitise_id("_.-x."), "x");
        assert_eq!(sanitise_id("day1/cat"), "day1-cat");
        assert_eq!(sanitise_id("猫"), "img");
        assert_eq!(sanitise_id("..."), "img");
        assert_eq!(sanitise_id("con"), "img-con");
        assert_eq!(sanitise_id("LPT1.old"), "img-LPT1.old");
        assert_eq!(sanitise_id("console"), "console");
    }

    #[test]
    fn sanitise_cuts_long_names_to_a_valid_id() {
        let long = format!("{}.{}", "a".repeat(99), "b".repeat(50));
        let id = sanitise_id(&long);
        assert_eq!(id, "a".repeat(99), "cut at 100 then the trailing '.' dropped");
        let con = sanitise_id(&format!("con.{}", "x".repeat(120)));
        assert_eq!(con.len(), 100);
        assert!(con.starts_with("img-con."));
    }

    #[test]
    fn every_sanitised_id_passes_the_loader_check() {
        let names = [
            "",
            " ",
            "-",
            "a",
            "1",
            "a.",
            "a b.",
            "..a",
            "€€€",
            "nul",
            "aux.x",
            "Ω-1",
            "x\u{0}y",
        ];
        for n in names
            .iter()
            .map(|s| s.to_string())
            .chain([("é".repeat(80) + "z").to_string()])
        {
            let id = sanitise_id(&n);
            assert!(check_id(&id).is_ok(), "{n:?} → {id:?}");
        }
    }

    #[test]
    fn unique_ids_number_repeats_ignoring_case_and_never_take_a_real_name() {
        let ids = unique_ids(["A-B", "a-b", "a-b-2", "A-b", "x"].map(String::from).to_vec());
        assert_eq!(ids, ["A-B", "a-b-3", "a-b-2", "A-b-4", "x"]);
        let long = "z".repeat(100);
        let ids = unique_ids(vec![long.clone(), long.clone()]);
        assert_eq!(ids[1], format!("{}-2", "z".repeat(98)));
        assert!(ids.iter().all(|i| check_id(i).is_ok()));
    }

    #[test]
    fn natural_order_counts_numbers_by_value_and_ignores_case() {
        let mut v = ["img10", "img2", "Img1", "img02", "b", "A", "img2a", "img"];
        v.sort_by(|a, b| natural(a, b));
        assert_eq!(v, ["A", "b", "img", "Img1", "img02", "img2", "img2a", "img10"]);
        assert_eq!(natural("a", "A"), Ordering::Greater, "ties broken by bytes");
        assert_eq!(by_parts(&["a".into(), "z".into()], &["a10".into()]), Ordering::Less);
    }
}
