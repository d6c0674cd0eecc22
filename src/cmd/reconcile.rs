//! `wanbatch reconcile`: exact money. Walks Segmind's request history over the campaign's time
//! span and records, per job, every request Segmind holds for it and what each cost: the true
//! cost, and the exact number of double charges (requests billed for a job beyond the one that
//! made its video, and beyond the takes a reviewer rejected and `retry --rejected` bought again
//! on purpose) — replacing the upper bound of "may have been billed twice".
//!
//! A request is a job's if it is one of the job's attempts (by request id), or else if its body
//! is the job's body as sent (the inputs, with its uploaded image URLs) — a submit whose answer
//! was lost. Requests of the account that are no job's (other campaigns) are counted, not kept.
//! Every page read is one API request, paced by the campaign's `--rpm`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use crate::api::history::{Day, HistoryClient, HistoryQuery, HistoryRow, HistoryStatus, SortBy, SortOrder};
use crate::api::{ApiError, MODEL_SLUG};
use crate::cmd::run::Endpoint;
use crate::engine::Gate;
use crate::exit::{Failure, Outcome};
use crate::settings::Resolved;
use crate::store::{Charge, Store};

#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub db: super::flags::DbFlag,
    /// API requests per minute for the history's pages [default: the campaign's --rpm, else 50].
    #[arg(long, env = "WANBATCH_RPM", value_name = "N")]
    pub rpm: Option<String>,
}

/// The history's date windows are at most this many days.
const WINDOW_DAYS: i64 = 31;
/// Pages read at most (100 requests each): a bound on what one reconcile costs.
const MAX_PAGES: u32 = 10_000;

pub async fn run(_args: ReconcileArgs, resolved: Resolved) -> anyhow::Result<Outcome> {
    let db = resolved.db.clone();
    let rpm = resolved.merged.rpm.unwrap_or(crate::settings::DEFAULT_RPM);
    let endpoint = Endpoint::from_env()?;
    let history = HistoryClient::new(&endpoint.hosts.history, &endpoint.key, Duration::from_secs(60))
        .map_err(|e| Failure::Usage(format!("{e:#}")))?;
    let store = Store::open_existing(&db).await?;
    if store.attempt_span().await?.is_none() {
        store.close().await;
        println!("nothing was ever submitted in this campaign: there is nothing to reconcile");
        return Ok(Outcome::AllDone);
    }
    let result = reconcile(&store, &history, rpm).await;
    store.close().await;
    let r = result?;
    println!(
        "reconciled {} job(s) against {} request(s) of Segmind's request history ({} – {}): true cost ${:.2}",
        r.jobs, r.requests, r.from, r.to, r.true_cost
    );
    if r.double_charged.is_empty() {
        println!("no double charges: every job was billed once at most");
    } else {
        let total: i64 = r.double_charged.iter().map(|(_, n)| n).sum();
        let shown: Vec<String> = r
            .double_charged
            .iter()
            .take(20)
            .map(|(id, n)| format!("{id} ({n})"))
            .collect();
        println!("{total} double charge(s): {}", shown.join(", "));
    }
    if r.foreign > 0 {
        println!(
            "{} request(s) of the account match no job of this campaign (other campaigns, or made by hand)",
            r.foreign
        );
    }
    Ok(Outcome::AllDone)
}

/// What a reconcile found.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub jobs: usize,
    pub requests: usize,
    pub true_cost: f64,
    /// Jobs billed more than once, with how many times more.
    pub double_charged: Vec<(String, i64)>,
    pub foreign: usize,
    pub from: String,
    pub to: String,
}

pub async fn reconcile(store: &Store, history: &HistoryClient, rpm: u32) -> anyhow::Result<Reconciled> {
    let Some((first, last)) = store.attempt_span().await? else {
        anyhow::bail!("nothing was ever submitted in this campaign: there is nothing to reconcile");
    };
    // Who owns what: request ids of attempts, and bodies as sent.
    let owners = store.attempt_owners().await?;
    let mut by_body: HashMap<String, Vec<i64>> = HashMap::new();
    for (seq, params) in store.submitted_params().await? {
        let body = sent_body(store, &params).await?;
        by_body.entry(canonical(&body)).or_default().push(seq);
    }
    let gate = Gate::new(rpm, Duration::from_secs(60), Duration::from_secs(5));
    let (from, to) = (Day::of_ms(first).plus(-1), Day::of_ms(last).plus(1));
    let mut seen: HashSet<String> = HashSet::new();
    let mut charges: Vec<Charge> = Vec::new();
    let mut foreign = 0;
    let mut day = from;
    let mut pages = 0;
    while day <= to {
        let end = day.plus(WINDOW_DAYS - 1).min(to);
        let mut page = 1;
        loop {
            let q = HistoryQuery {
                page,
                per_page: 100,
                from: Some(day),
                to: Some(end),
                model_name: Some(MODEL_SLUG.to_string()),
                sort_by: Some(SortBy::Created),
                sort_order: Some(SortOrder::Asc),
                ..HistoryQuery::default()
            };
            gate.acquire().await;
            let p = match history.list(&q).await {
                Ok(p) => p,
                Err(ApiError::RateLimited { until }) => {
                    gate.on_rate_limited(until);
                    continue;
                }
                Err(e) => anyhow::bail!("the request history cannot answer: {e}"),
            };
            gate.on_success();
            pages += 1;
            let short = p.rows.len() < 100 || p.has_more == Some(false);
            for row in p.rows {
                if !seen.insert(row.request_id.clone()) {
                    continue; // a request with several outputs is listed once per output
                }
                match owner(&row, &owners, &by_body) {
                    Some((seq, how)) => charges.push(charge(&row, seq, how)),
                    None => foreign += 1,
                }
            }
            if short || pages >= MAX_PAGES {
                break;
            }
            page += 1;
        }
        day = end.plus(1);
    }
    store.record_charges(&charges).await?;
    // Per job: the true cost, and the billed requests beyond the one that made its video.
    let mut per_job: HashMap<i64, (f64, i64)> = HashMap::new();
    for c in &charges {
        let e = per_job.entry(c.job_seq).or_default();
        e.0 += c.credits.unwrap_or(0.0);
        if c.status.as_deref() == Some("COMPLETED") && c.credits.unwrap_or(0.0) > 0.0 {
            e.1 += 1;
        }
    }
    let mut double_charged = Vec::new();
    let mut true_cost = 0.0;
    let ids = store.ids_of(&per_job.keys().copied().collect::<Vec<_>>()).await?;
    // A rejected video made again (`retry --rejected`) was bought on purpose: not a double charge.
    let retakes = store
        .rejected_takes_of(&per_job.keys().copied().collect::<Vec<_>>())
        .await?;
    let mut seqs: Vec<&i64> = per_job.keys().collect();
    seqs.sort();
    for seq in seqs {
        let (cost, billed) = per_job[seq];
        let twice = (billed - 1 - retakes.get(seq).copied().unwrap_or(0)).max(0);
        store.set_reconciled(*seq, cost, twice).await?;
        true_cost += cost;
        if twice > 0 {
            double_charged.push((ids.get(seq).cloned().unwrap_or_default(), twice));
        }
    }
    Ok(Reconciled {
        jobs: per_job.len(),
        requests: charges.len(),
        true_cost,
        double_charged,
        foreign,
        from: from.to_string(),
        to: to.to_string(),
    })
}

/// Whose a request is: the job of the attempt with its id, else the first job whose body it is.
fn owner(
    row: &HistoryRow,
    owners: &HashMap<String, i64>,
    by_body: &HashMap<String, Vec<i64>>,
) -> Option<(i64, &'static str)> {
    if let Some(seq) = owners.get(&row.request_id) {
        return Some((*seq, "attempt"));
    }
    let body = row.request_body.as_ref()?;
    by_body
        .get(&canonical(body))
        .and_then(|seqs| seqs.first())
        .map(|seq| (*seq, "found"))
}

fn charge(row: &HistoryRow, seq: i64, how: &'static str) -> Charge {
    Charge {
        request_id: row.request_id.clone(),
        job_seq: seq,
        status: Some(
            match &row.status {
                HistoryStatus::Completed => "COMPLETED",
                HistoryStatus::Failed => "FAILED",
                HistoryStatus::Pending => "PENDING",
                HistoryStatus::Other(_) => "OTHER",
            }
            .to_string(),
        ),
        credits: row.credits,
        created_at: row.created_at_ms,
        generation_url: row.generation_url.clone(),
        how,
    }
}

/// A job's body as it was sent: its local images replaced by their uploaded URLs.
async fn sent_body(store: &Store, params: &str) -> anyhow::Result<Value> {
    let mut body: Value = serde_json::from_str(params)?;
    for field in ["image", "last_image"] {
        let Some(path) = body
            .get(field)
            .and_then(Value::as_str)
            .and_then(crate::manifest::local::file_of)
        else {
            continue;
        };
        if let Some(file) = store.local_file(&path.to_string_lossy()).await? {
            if let Some(url) = store.asset(&file.sha256).await? {
                body[field] = Value::String(url);
            }
        }
    }
    Ok(body)
}

/// A JSON value written one way: keys sorted, numbers as numbers (`81.0` is `81`).
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys.iter().map(|k| format!("{k:?}:{}", canonical(&m[*k]))).collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            Some(f) => format!("{f}"),
            None => n.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_bodies_ignore_key_order_and_number_spelling() {
        let a = json!({"prompt": "p", "num_frames": 81, "sample_shift": 7.5});
        let b: Value = serde_json::from_str(r#"{"sample_shift": 7.5, "num_frames": 81.0, "prompt": "p"}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_ne!(
            canonical(&a),
            canonical(&json!({"prompt": "p", "num_frames": 82, "sample_shift": 7.5}))
        );
    }
}
