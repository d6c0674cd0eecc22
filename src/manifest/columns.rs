//! Column names: which column (CSV header cell or JSONL key) means what, and the suggestion
//! for a name that means nothing.
//!
//! Names match ignoring ASCII case and surrounding spaces (`Image`, ` PROMPT `), so a header
//! tidied by hand or by a spreadsheet still reads; two names equal after that are one column
//! twice. Names other services use (`image_url`, `fps`, …) are not accepted, only suggested: a
//! column that silently meant something else would send the wrong parameter.

use super::params::{self, FIELDS};

/// The columns `wanbatch export` writes besides `id` and the parameters (JSONL adds `history`).
/// A manifest may carry them, so that an export (say of the failed jobs) can be fed back in as
/// a manifest: they are accepted and ignored — only these exact names; any other unknown column
/// is still an error. `id` is kept, so every row maps to the job it came from.
pub const EXPORT_COLUMNS: &[&str] = &[
    "state",
    "request_id",
    "attempts",
    "output",
    "bytes",
    "sha256",
    "error",
    "cost",
    "submitted_at",
    "completed_at",
    "downloaded_at",
    "resubmits_unknown",
    "resubmits_expired",
    "resubmits_failed",
    "maybe_billed_twice",
    "unknown_adopted",
    "unknown_absent",
    "unknown_unprovable",
    "history_recovered",
    "billed_duplicates",
    "true_cost",
    "double_charges",
    "resubmits_rejected",
    "video_width",
    "video_height",
    "video_frames",
    "video_fps",
    "video_duration",
    "video_codec",
    "video_mismatch",
    "review",
    "review_note",
    "image_sha256",
    "image_upload",
    "last_image_sha256",
    "last_image_upload",
    "source",
    "history",
];

/// What a column of the manifest holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Column {
    Id,
    /// The parameter `FIELDS[i]`.
    Param(usize),
    /// One of an export's own columns: read back, ignored.
    Ignored,
    /// A CSV header cell left empty (spreadsheets write these for columns once used): its cells
    /// must be empty too. Holds the column's number, from 1.
    Unnamed(usize),
}

/// What the column `name` holds, or the error for an unknown name. Allocates nothing for a
/// known name (JSONL calls this for every key of every row).
pub(super) fn column(name: &str) -> Result<Column, String> {
    known(name).ok_or_else(|| {
        let name = name.trim();
        let hint = suggestion(name)
            .map(|c| format!(" (did you mean {c:?}?)"))
            .unwrap_or_default();
        format!(
            "unknown column {:?}{hint}; the columns are id and the API's parameter names",
            params::shorten(name)
        )
    })
}

/// What the column `name` holds, if the name is known.
pub(super) fn known(name: &str) -> Option<Column> {
    let name = name.trim();
    if name.eq_ignore_ascii_case(params::ID_COLUMN) {
        return Some(Column::Id);
    }
    if let Some(i) = FIELDS.iter().position(|f| f.name.eq_ignore_ascii_case(name)) {
        return Some(Column::Param(i));
    }
    EXPORT_COLUMNS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(name))
        .then_some(Column::Ignored)
}

/// The name `name` stands for, for finding one column written twice: a known column's own
/// name, or the name as written (trimmed) in lower case. `col` is `known(name)`.
pub(super) fn canonical(name: &str, col: Option<Column>) -> std::borrow::Cow<'static, str> {
    match col {
        Some(Column::Id) => params::ID_COLUMN.into(),
        Some(Column::Param(i)) => FIELDS[i].name.into(),
        _ => name.trim().to_lowercase().into(),
    }
}

/// Names other image-to-video services and tools use for our parameters.
const ELSEWHERE: &[(&str, &str)] = &[
    ("image_url", "image"),
    ("image_uri", "image"),
    ("input_image", "image"),
    ("start_image", "image"),
    ("init_image", "image"),
    ("first_frame", "image"),
    ("start_frame", "image"),
    ("end_image", "last_image"),
    ("last_frame", "last_image"),
    ("end_frame", "last_image"),
    ("fps", "frames_per_second"),
    ("frame_rate", "frames_per_second"),
    ("framerate", "frames_per_second"),
    ("negative", "negative_prompt"),
    ("neg_prompt", "negative_prompt"),
];

/// The known column meant by an unknown name: another service's name for it, or the nearest
/// by spelling. Compared in lower case with spaces and dashes as underscores (`Image URL`).
fn suggestion(name: &str) -> Option<&'static str> {
    let name: String = name
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    if let Some((_, ours)) = ELSEWHERE.iter().find(|(theirs, _)| *theirs == name) {
        return Some(ours);
    }
    closest(&name)
}

/// The known column nearest to a misspelt one, if it is close.
fn closest(name: &str) -> Option<&'static str> {
    let names = std::iter::once(params::ID_COLUMN).chain(FIELDS.iter().map(|f| f.name));
    let len = name.chars().count();
    names
        // The distance is at least the difference in length: skip the quadratic work for those.
        .filter(|c| c.len().abs_diff(len) <= 2)
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(name: &str) -> String {
        column(name).unwrap_err()
    }

    #[test]
    fn names_match_ignoring_case_and_surrounding_spaces() {
        let param = |n: &str| FIELDS.iter().position(|f| f.name == n).map(Column::Param).unwrap();
        assert_eq!(column("Image"), Ok(param("image")));
        assert_eq!(column(" PROMPT "), Ok(param("prompt")));
        assert_eq!(column("Frames_Per_Second"), Ok(param("frames_per_second")));
        assert_eq!(column("\u{a0}ID\t"), Ok(Column::Id));
        assert_eq!(column("Request_ID"), Ok(Column::Ignored));
        assert_eq!(canonical(" Image", known(" Image")), "image");
        assert_eq!(
            canonical("Frames_Per_Second ", known("Frames_Per_Second ")),
            "frames_per_second"
        );
        assert_eq!(canonical(" Colour", None), "colour");
        // Case and spaces only: other spellings are not the name.
        assert!(column("frames per second").is_err());
    }

    #[test]
    fn other_services_names_are_suggested_not_accepted() {
        for (theirs, ours) in [
            ("image_url", "image"),
            ("input_image", "image"),
            ("start_image", "image"),
            ("init_image", "image"),
            ("Image URL", "image"),
            ("end_image", "last_image"),
            ("fps", "frames_per_second"),
            ("FPS", "frames_per_second"),
            ("negative", "negative_prompt"),
            ("Frames Per Second", "frames_per_second"),
        ] {
            let e = hint(theirs);
            assert!(e.contains(&format!("(did you mean {ours:?}?)")), "{theirs}: {e}");
        }
        assert_eq!(
            hint("image_url"),
            "unknown column \"image_url\" (did you mean \"image\"?); the columns are id and the API's parameter names"
        );
        // The spelling suggestion is still there, and nothing is suggested for a far name.
        assert!(hint("num_frame").contains("(did you mean \"num_frames\"?)"));
        assert!(hint("promtp").contains("(did you mean \"prompt\"?)"));
        assert!(!hint("colour").contains("did you mean"), "{}", hint("colour"));
    }
}
