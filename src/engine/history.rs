//! Settling with Segmind's request history instead of guessing: a submit whose answer was lost
//! is looked up (did Segmind create it?), and a result whose one-hour record expired is looked up
//! by its id (the video file is kept for days).
//!
//! A lost submit is matched by its body: the history lists the account's requests with the inputs
//! as sent, so the job's body (with its uploaded image URLs) is compared with each request made
//! around the intent's time — as JSON values, key order and number spelling aside — leaving out
//! requests some job already owns. A request may appear in the list late (`--history-lag`): "not
//! there" proves nothing until the history is complete past the submit's time.
//!
//! Every call is an API request out of the shared budget. The history's envelope is not
//! documented (see `api::history`): any error or odd answer means it cannot answer, and the
//! caller falls back to what it did without it — never to a guess that pays twice.

use serde_json::Value;

use super::shared::Shared;
use crate::api::history::{Day, HistoryQuery, HistoryRow, HistoryStatus, SortBy, SortOrder};
use crate::api::{ApiError, MODEL_SLUG};

/// Requests are looked for this long before the intent and after its answer was given up on:
/// the two clocks need not agree.
const SKEW_MS: i64 = 120_000;
/// Within this of the intent's time (our clock against Segmind's, which agree this well on any
/// machine that keeps time), a matching request is this submit's. Further out, it is more
/// likely another campaign's identical request (the same rows run again on the same key):
/// adopted only when nothing matches nearer — one clock may be off — and never counted as a
/// charge for this job's submit.
const NEAR_MS: i64 = 30_000;
/// Pages of 100 requests one lookup reads at most.
const MAX_PAGES: u32 = 20;

/// What the history says of a lost submit.
#[derive(Debug)]
pub enum Lost {
    /// It was created: the earliest matching request, and any others billed for the same body
    /// in the window.
    Found {
        adopted: HistoryRow,
        duplicates: Vec<HistoryRow>,
    },
    /// Not there, and the history is complete past its time: it was never created.
    Absent,
    /// Not there yet: the history may still lag.
    NotYet,
    /// The history could not answer (an error, an answer of an unknown shape).
    Cannot(String),
}

/// Looks for the request a lost submit of `body` (intent at `started_at`, given up on at
/// `given_up_at`) may have created, among those no job owns yet.
pub(super) async fn find_lost(s: &Shared, body: &Value, started_at: i64, given_up_at: i64, now: i64) -> Lost {
    // The dispatcher spawned the lookup on a permit: the first page uses it.
    let mut in_hand = true;
    let Some(client) = s.history.as_ref() else {
        return Lost::Cannot("no request history is configured".into());
    };
    let (from, to) = (started_at - SKEW_MS, given_up_at + SKEW_MS);
    let mut matches: Vec<HistoryRow> = Vec::new();
    let mut page = 1;
    loop {
        let q = HistoryQuery {
            page,
            per_page: 100,
            from: Some(Day::of_ms(from)),
            to: Some(Day::of_ms(to.max(now))),
            model_name: Some(MODEL_SLUG.to_string()),
            sort_by: Some(SortBy::Created),
            sort_order: Some(SortOrder::Desc),
            ..HistoryQuery::default()
        };
        if !std::mem::replace(&mut in_hand, false) {
            s.gate.acquire().await;
        }
        let answer = client.list(&q).await;
        super::tasks::note(s, &answer);
        let p = match answer {
            Ok(p) => p,
            Err(e) => return Lost::Cannot(e.to_string()),
        };
        let short = p.rows.len() < 100 || p.has_more == Some(false);
        let mut older = false;
        for row in p.rows {
            let t = row.created_at_ms;
            older |= t.is_some_and(|t| t < from);
            if t.is_some_and(|t| t < from || t > to) {
                continue;
            }
            if row.request_body.as_ref().is_some_and(|b| same_body(b, body))
                && !matches.iter().any(|m| m.request_id == row.request_id)
            {
                matches.push(row);
            }
        }
        if short || older || page >= MAX_PAGES {
            break;
        }
        page += 1;
    }
    let ids: Vec<String> = matches.iter().map(|m| m.request_id.clone()).collect();
    match s.store.known_request_ids(&ids).await {
        Ok(known) => matches.retain(|m| !known.contains(&m.request_id)),
        Err(e) => return Lost::Cannot(format!("{e:#}")),
    }
    if matches.is_empty() {
        let lag = s.cfg.history_lag.as_millis() as i64;
        return if now >= given_up_at + lag {
            Lost::Absent
        } else {
            Lost::NotYet
        };
    }
    let (adopted, duplicates) = pick(matches, started_at, given_up_at);
    Lost::Found { adopted, duplicates }
}

/// Which of the matching requests the lost submit created, and which others it paid for.
/// Near the intent's time (within [`NEAR_MS`]): the earliest is adopted, the rest are billed
/// duplicates of this submit. Nothing near: the one nearest in time is adopted (a clock may be
/// off) and nothing is counted as a duplicate — the others are another campaign's.
fn pick(mut matches: Vec<HistoryRow>, started_at: i64, given_up_at: i64) -> (HistoryRow, Vec<HistoryRow>) {
    let near = |m: &HistoryRow| {
        m.created_at_ms
            .is_some_and(|t| t >= started_at - NEAR_MS && t <= given_up_at + NEAR_MS)
    };
    if matches.iter().any(near) {
        matches.retain(near);
        matches.sort_by_key(|m| (m.created_at_ms.unwrap_or(i64::MAX), m.request_id.clone()));
        let adopted = matches.remove(0);
        return (adopted, matches);
    }
    let distance = |m: &HistoryRow| {
        m.created_at_ms.map_or(i64::MAX, |t| {
            if t < started_at {
                started_at - t
            } else {
                t.saturating_sub(given_up_at).max(0)
            }
        })
    };
    matches.sort_by_key(|m| (distance(m), m.request_id.clone()));
    (matches.remove(0), Vec::new())
}

/// What the history says of a request whose v2 record expired.
#[derive(Debug)]
pub enum Expired {
    /// It completed: its video is here (and cost so much).
    Video { url: String, credits: Option<f64> },
    /// It failed, with this message.
    Failed(String),
    /// The history does not have it, or has no video for it: it must be bought again.
    Gone,
    /// The history could not answer.
    Cannot(String),
}

/// Looks an expired request up by its id (taking a permit for it).
pub(super) async fn find_expired(s: &Shared, request_id: &str) -> Expired {
    let Some(client) = s.history.as_ref() else {
        return Expired::Cannot("no request history is configured".into());
    };
    s.gate.acquire().await;
    let answer = client.by_id(request_id).await;
    super::tasks::note(s, &answer);
    match answer {
        Ok(Some(row)) => match (&row.status, row.generation_url) {
            (HistoryStatus::Completed, Some(url)) => Expired::Video {
                url,
                credits: row.credits,
            },
            (HistoryStatus::Failed, _) => {
                Expired::Failed(row.error.unwrap_or_else(|| "FAILED (the request history says)".into()))
            }
            _ => Expired::Gone,
        },
        Ok(None) => Expired::Gone,
        Err(e @ ApiError::RateLimited { .. }) => Expired::Cannot(e.to_string()),
        Err(e) => Expired::Cannot(e.to_string()),
    }
}

/// Whether two request bodies are the same JSON: objects compared by key, numbers by value
/// (`81` is `81.0`), everything else exactly.
pub fn same_body(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_body(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_body(v, w)),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_are_the_same_json_whatever_the_key_order_and_number_spelling() {
        let a = json!({"image": "https://i/x.png", "prompt": "p", "num_frames": 81, "sample_shift": 12});
        let b: Value = serde_json::from_str(
            r#"{"sample_shift": 12.0, "num_frames": 81.0, "prompt": "p", "image": "https://i/x.png"}"#,
        )
        .unwrap();
        assert!(same_body(&a, &b));
        assert!(!same_body(
            &a,
            &json!({"image": "https://i/x.png", "prompt": "p", "num_frames": 82, "sample_shift": 12})
        ));
        assert!(!same_body(
            &a,
            &json!({"image": "https://i/x.png", "prompt": "p", "num_frames": 81})
        ));
        assert!(!same_body(&json!({"go_fast": true}), &json!({"go_fast": "true"})));
    }

    fn row(id: &str, t: i64) -> HistoryRow {
        HistoryRow {
            request_id: id.into(),
            model_name: None,
            status: HistoryStatus::Completed,
            credits: Some(0.05),
            request_body: None,
            generation_url: None,
            created_at_ms: Some(t),
            latency_ms: None,
            error: None,
        }
    }

    #[test]
    fn an_identical_request_from_an_earlier_campaign_is_neither_adopted_nor_a_duplicate() {
        // The intent at 100 s, given up at 130 s: another campaign's request 34 s before, this
        // submit's own at 101 s, and a second one of ours (a repeat) at 120 s.
        let (adopted, dups) = pick(
            vec![row("old", 66_000), row("ours", 101_000), row("again", 120_000)],
            100_000,
            130_000,
        );
        assert_eq!(adopted.request_id, "ours");
        let dups: Vec<_> = dups.iter().map(|d| d.request_id.as_str()).collect();
        assert_eq!(dups, ["again"]);
    }

    #[test]
    fn with_nothing_near_the_nearest_is_adopted_and_no_charge_is_counted() {
        // A clock off by a minute: the only match is 70 s early.
        let (adopted, dups) = pick(vec![row("far", 30_000), row("skewed", 50_000)], 120_000, 125_000);
        assert_eq!(adopted.request_id, "skewed");
        assert!(dups.is_empty());
    }
}
