//! The request-history client (API.md "Request history"): the account's requests as Segmind
//! recorded them — what was sent, whether it ran, what it cost, where the video is.
//!
//! - `GET {HISTORY}?page&per_page&from_date&to_date&model_name&status&sort_by&sort_order` lists
//!   one page; `GET {HISTORY}/{request_id}` finds one request at any age (404 = unknown).
//! - The key goes to the history host only (see `hosts`): redirects are not followed, and the
//!   `generation_url` a row names is for someone else to fetch, without the key.
//! - The answer's shape is unconfirmed, so it is read tolerantly (`history/rows.rs`): an answer the
//!   client cannot place is `ApiError::Protocol` ("unknown shape"), never a guess.
//!
//! **For the caller:** the history is an aid, not a dependency. Every error of this client —
//! 401/403 included, which on the v2 API stop the run, and unknown shapes — means "the history
//! cannot answer": fall back to what the run would do without it, and do not feed these errors
//! to `ApiError::account_stop`. 429 is `ApiError::RateLimited` with the reset hint, as for the
//! API, and every call counts against the same rate budget. A new request shows in the list
//! only after some lag (by id at once), so absence from the list proves nothing until then.

use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Url;

use super::hosts::{endpoint, keyed_client, read_answer};
use super::{safe_request_id, ApiError, ApiKey};

mod rows;
#[cfg(test)]
mod tests_rows;

pub use rows::{dedup, HistoryPage, HistoryRow, HistoryStatus};

/// Largest history answer read. Rows carry the request body, which may hold a base64 image:
/// a page of 100 such rows is megabytes, unlike the v2 API's few hundred bytes.
const MAX_HISTORY_BODY: usize = 32 << 20;
/// The documented `per_page` bounds.
pub const MAX_PER_PAGE: u32 = 100;

/// A UTC calendar day, the unit of `from_date`/`to_date` (`YYYY-MM-DD`). The service limits a
/// window to 31 days and defaults to the last 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

const MS_PER_DAY: i64 = 86_400_000;

impl Day {
    /// The UTC day of an instant in ms since the Unix epoch.
    pub fn of_ms(ms: i64) -> Day {
        Day(ms.div_euclid(MS_PER_DAY))
    }

    /// Today (UTC).
    pub fn today() -> Day {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Day::of_ms(now.map_or(0, |d| d.as_millis() as i64))
    }

    /// `YYYY-MM-DD`, a real calendar day (2026-02-30 is refused).
    pub fn parse(s: &str) -> Option<Day> {
        let s = s.trim();
        if s.len() != 10 || !s.is_ascii() {
            return None;
        }
        let t = crate::clock::parse_rfc3339(&format!("{s}T00:00:00Z"))?;
        let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
        let day = Day::of_ms(ms);
        // The parser accepts day 31 of any month; a real date prints back as itself.
        (day.to_string() == s).then_some(day)
    }

    /// This day moved by `days` (negative: earlier).
    pub fn plus(self, days: i64) -> Day {
        Day(self.0 + days)
    }

    /// Days from `earlier` to this day.
    pub fn days_since(self, earlier: Day) -> i64 {
        self.0 - earlier.0
    }

    /// Midnight UTC starting this day, in ms since the Unix epoch.
    pub fn start_ms(self) -> i64 {
        self.0 * MS_PER_DAY
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::clock::rfc3339(self.start_ms())[..10])
    }
}

/// The `status` filter the service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Completed,
    Failed,
    Pending,
}

/// The `sort_by` values the service accepts (it defaults to `model_created`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// `model_created`.
    Created,
    /// `model_name`.
    ModelName,
    /// `credits_deduction`.
    Credits,
}

/// `sort_order` (the service defaults to `desc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Asc,
    Desc,
}

/// One list request. `None` leaves a parameter out (the service's default applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// 1-based; 0 is sent as 1.
    pub page: u32,
    /// Clamped to 1..=100 when sent.
    pub per_page: u32,
    pub from: Option<Day>,
    pub to: Option<Day>,
    /// A substring of the model name (the service matches substrings).
    pub model_name: Option<String>,
    pub status: Option<StatusFilter>,
    pub sort_by: Option<SortBy>,
    pub sort_order: Option<SortOrder>,
}

impl Default for HistoryQuery {
    /// Page 1 of 100 rows (the most per call: each call costs a rate-budget slot), the
    /// service's defaults otherwise.
    fn default() -> Self {
        HistoryQuery {
            page: 1,
            per_page: MAX_PER_PAGE,
            from: None,
            to: None,
            model_name: None,
            status: None,
            sort_by: None,
            sort_order: None,
        }
    }
}

impl HistoryQuery {
    /// The query string's pairs, in a stable order.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("page", self.page.max(1).to_string()),
            ("per_page", self.per_page.clamp(1, MAX_PER_PAGE).to_string()),
        ];
        if let Some(d) = self.from {
            p.push(("from_date", d.to_string()));
        }
        if let Some(d) = self.to {
            p.push(("to_date", d.to_string()));
        }
        if let Some(m) = self.model_name.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
            p.push(("model_name", m.to_string()));
        }
        if let Some(s) = self.status {
            let s = match s {
                StatusFilter::Completed => "COMPLETED",
                StatusFilter::Failed => "FAILED",
                StatusFilter::Pending => "PENDING",
            };
            p.push(("status", s.to_string()));
        }
        if let Some(s) = self.sort_by {
            let s = match s {
                SortBy::Created => "model_created",
                SortBy::ModelName => "model_name",
                SortBy::Credits => "credits_deduction",
            };
            p.push(("sort_by", s.to_string()));
        }
        if let Some(o) = self.sort_order {
            let o = match o {
                SortOrder::Asc => "asc",
                SortOrder::Desc => "desc",
            };
            p.push(("sort_order", o.to_string()));
        }
        p
    }
}

/// The request-history client. Cheap to clone; holds the key (never shown by `Debug`).
#[derive(Clone)]
pub struct HistoryClient {
    http: reqwest::Client,
    url: Url,
    key: HeaderValue,
}

impl std::fmt::Debug for HistoryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryClient")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl HistoryClient {
    /// `url` is the list endpoint (`Hosts::history`); `timeout` bounds each call.
    pub fn new(url: &str, key: &ApiKey, timeout: Duration) -> anyhow::Result<HistoryClient> {
        let url = endpoint("the request-history URL", url)?;
        let (http, key) = keyed_client(key, timeout)?;
        Ok(HistoryClient { http, url, key })
    }

    /// The list endpoint (no key in it), for messages.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// One page of the list. Rows come as the service sends them (duplicates included: see
    /// [`dedup`]); rows without a usable `request_id` are counted in `HistoryPage::skipped`.
    pub async fn list(&self, q: &HistoryQuery) -> Result<HistoryPage, ApiError> {
        let mut url = self.url.clone();
        url.query_pairs_mut().extend_pairs(q.pairs());
        let body = self.get(url).await?;
        rows::parse_page(&body, q)
    }

    /// One request by id, at any age: `Ok(None)` when the service does not know it (404, or
    /// an empty answer). Of several rows (one per output) the first with this id is returned.
    pub async fn by_id(&self, request_id: &str) -> Result<Option<HistoryRow>, ApiError> {
        if !safe_request_id(request_id) {
            return Err(ApiError::Protocol(format!("unusable request id {request_id:?}")));
        }
        let mut url = self.url.clone();
        url.path_segments_mut()
            .map_err(|_| ApiError::Protocol(format!("history URL {} cannot take a path", self.url)))?
            .pop_if_empty()
            .push(request_id);
        let resp = self.send(url).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = read_answer(resp, MAX_HISTORY_BODY).await?;
        rows::parse_by_id(&body, request_id)
    }

    async fn send(&self, url: Url) -> Result<reqwest::Response, ApiError> {
        self.http
            .get(url)
            .header("x-api-key", self.key.clone())
            .send()
            .await
            .map_err(super::send_error)
    }

    async fn get(&self, url: Url) -> Result<serde_json::Value, ApiError> {
        read_answer(self.send(url).await?, MAX_HISTORY_BODY).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_parse_print_and_move() {
        let d = Day::parse("2026-03-10").unwrap();
        assert_eq!(d.to_string(), "2026-03-10");
        assert_eq!(d.plus(-10).to_string(), "2026-02-28");
        assert_eq!(Day::parse("2024-02-28").unwrap().plus(1).to_string(), "2024-02-29");
        assert_eq!(d.days_since(d.plus(-31)), 31);
        assert_eq!(Day::of_ms(d.start_ms() + 86_399_999), d);
        assert_eq!(Day::of_ms(d.start_ms() - 1), d.plus(-1));
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-3-10",
            "10/03/2026",
            "",
            "2026-03-10T00:00:00Z",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn queries_send_only_what_is_set_within_the_documented_bounds() {
        let pairs = |q: &HistoryQuery| {
            q.pairs()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        };
        assert_eq!(pairs(&HistoryQuery::default()), "page=1&per_page=100");
        let q = HistoryQuery {
            page: 0,
            per_page: 500,
            ..HistoryQuery::default()
        };
        assert_eq!(pairs(&q), "page=1&per_page=100");
        let q = HistoryQuery {
            page: 3,
            per_page: 0,
            from: Day::parse("2026-03-01"),
            to: Day::parse("2026-03-10"),
            model_name: Some(" wan-2.2 ".into()),
            status: Some(StatusFilter::Pending),
            sort_by: Some(SortBy::Credits),
            sort_order: Some(SortOrder::Asc),
        };
        assert_eq!(
            pairs(&q),
            "page=3&per_page=1&from_date=2026-03-01&to_date=2026-03-10&model_name=wan-2.2&status=PENDING\
             &sort_by=credits_deduction&sort_order=asc"
        );
        let blank = HistoryQuery {
            model_name: Some("  ".into()),
            ..HistoryQuery::default()
        };
        assert_eq!(pairs(&blank), "page=1&per_page=100");
    }
}
