//! Job ids: the check an explicit id must pass (it becomes a file name), and the counter that
//! numbers identical rows (`rX`, `rX-2`, …) for automatic ids.

use std::collections::{HashMap, HashSet};

/// Checks an explicit id: it becomes a file name (`OUT/ID.mp4`), so it must not be able to
/// name anything outside OUT or anything the platform reserves.
pub fn check_id(id: &str) -> Result<(), String> {
    const RESERVED: &[&str] = &[
        "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8", "com9", "lpt1",
        "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
    ];
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if id.is_empty() || id.len() > 100 || !ok_chars {
        return Err(format!(
            "{:?} is not a usable id: expected 1 to 100 letters, digits, '-', '_' or '.'",
            id.chars().take(100).collect::<String>()
        ));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) || id.ends_with('.') {
        return Err(format!(
            "{id:?} is not a usable id: it must start with a letter or digit and not end with '.'"
        ));
    }
    let stem = id.split('.').next().unwrap_or(id).to_ascii_lowercase();
    if RESERVED.contains(&stem.as_str()) {
        return Err(format!("{id:?} is a reserved file name on some systems"));
    }
    Ok(())
}

/// How many times each id stem (the 48 bits of the hash an automatic id shows) was seen so far.
///
/// Keyed by the stem rather than the whole hash, so two different rows whose hashes share those
/// 48 bits (likely once in a few hundred million-row imports) get `rX` and `rX-2` instead of one
/// id twice. Most stems are seen once: those cost one `u64` in a set; only repeats get a counter.
#[derive(Default)]
pub(super) struct Occurrences {
    once: HashSet<u64, BuildStem>,
    more: HashMap<u64, u32, BuildStem>,
}

impl Occurrences {
    /// Counts one more row with this hash; returns its occurrence number (1 for the first).
    pub(super) fn next(&mut self, digest: &[u8]) -> u32 {
        let mut stem = [0u8; 8];
        stem[..6].copy_from_slice(&digest[..6]);
        let stem = u64::from_le_bytes(stem);
        if self.once.insert(stem) {
            return 1;
        }
        let n = self.more.entry(stem).or_insert(1);
        *n += 1;
        *n
    }
}

/// The stems are already uniformly random bits: hash them by taking them as they are.
#[derive(Default, Clone, Copy)]
struct BuildStem;

impl std::hash::BuildHasher for BuildStem {
    type Hasher = StemHasher;
    fn build_hasher(&self) -> StemHasher {
        StemHasher(0)
    }
}

struct StemHasher(u64);

impl std::hash::Hasher for StemHasher {
    fn finish(&self) -> u64 {
        // Spread the 48 random bits over the whole word (hashbrown reads the top 7 bits too).
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
