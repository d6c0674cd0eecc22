//! Which endpoint a poll asks: the documented flow (the status endpoint until COMPLETED, then
//! the result once), or the result endpoint directly — one request less per video, but only
//! where it has been seen to answer a pending request with 200 and QUEUED/PROCESSING. What the
//! real result endpoint answers for a pending request is not documented: if it is 404, polling
//! it would read every young job as expired.
//!
//! `--poll auto` (the default) starts with the documented flow and proves the other way with
//! one probe at a time: a poll of the result endpoint. 200 with QUEUED/PROCESSING is the proof,
//! recorded in the database with when it was seen (a fact about the account, kept across runs);
//! a 404 for a young request or an answer of an unexpected shape is a contradiction, recorded
//! too, and the documented flow is used for good. A job whose result endpoint answered 404 while
//! young is polled through the status endpoint from then on, whatever the mode; it is never
//! resubmitted on that answer (see `tasks::poll`).

use std::sync::Mutex;

use crate::store::Store;

/// How to poll (`--poll`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PollMode {
    /// The documented flow, unless the result endpoint is proven to answer pending requests.
    #[default]
    Auto,
    /// Always the documented flow: status until COMPLETED, then the result.
    Status,
    /// Always the result endpoint (a job whose result endpoint answers 404 while young still
    /// falls back to the status endpoint).
    Result,
}

/// The endpoint one poll asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Status,
    Result,
    /// The result endpoint, asked to learn whether it answers pending requests.
    Probe,
}

/// What is known of the result endpoint.
#[derive(Clone, Debug, PartialEq)]
enum Known {
    Unknown,
    /// A probe is in flight.
    Probing,
    /// It answers pending requests with 200: poll it directly.
    Answers,
    /// It did not (or answered oddly): the documented flow for good.
    Refuses,
}

/// The fact's key and values in the store.
pub const FACT: &str = "result_endpoint";
pub const ANSWERS: &str = "pending_ok";
pub const REFUSES: &str = "pending_404";

pub struct Route {
    mode: PollMode,
    known: Mutex<Known>,
}

impl Route {
    /// The route for `mode`, from what the store knows of the result endpoint.
    pub async fn load(mode: PollMode, store: &Store) -> Route {
        let known = match store.fact(FACT).await {
            Ok(Some((v, _, _))) if v == ANSWERS => Known::Answers,
            Ok(Some((v, _, _))) if v == REFUSES => Known::Refuses,
            _ => Known::Unknown,
        };
        Route {
            mode,
            known: Mutex::new(known),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint for the next poll of a job (`via_status`: its result endpoint answered 404
    /// while it was young).
    pub fn endpoint(&self, via_status: bool) -> Endpoint {
        if via_status {
            return Endpoint::Status;
        }
        match self.mode {
            PollMode::Status => Endpoint::Status,
            PollMode::Result => Endpoint::Result,
            PollMode::Auto => {
                let mut k = self.lock();
                match *k {
                    Known::Answers => Endpoint::Result,
                    Known::Refuses | Known::Probing => Endpoint::Status,
                    Known::Unknown => {
                        *k = Known::Probing;
                        Endpoint::Probe
                    }
                }
            }
        }
    }

    /// Whether polls go to the result endpoint now (for `status` and the summary).
    pub fn direct(&self) -> bool {
        self.mode == PollMode::Result || (self.mode == PollMode::Auto && *self.lock() == Known::Answers)
    }

    /// The result endpoint answered a pending request with 200 and QUEUED/PROCESSING: proven.
    pub async fn answered_pending(&self, store: &Store, state: &str) {
        let newly = {
            let mut k = self.lock();
            let newly = matches!(*k, Known::Unknown | Known::Probing);
            if newly {
                *k = Known::Answers;
            }
            newly
        };
        if newly && self.mode == PollMode::Auto {
            tracing::info!(
                status = state,
                "the result endpoint answers pending requests: polling it directly (one request less per video)"
            );
            remember(
                store,
                ANSWERS,
                &format!("answered 200 with {state} for a pending request"),
            )
            .await;
        }
    }

    /// The result endpoint contradicted the proof (a 404 for a young request, an answer of an
    /// unexpected shape): the documented flow from now on, for good.
    pub async fn contradicted(&self, store: &Store, why: &str) {
        let newly = {
            let mut k = self.lock();
            let newly = *k != Known::Refuses;
            *k = Known::Refuses;
            newly
        };
        if newly && self.mode == PollMode::Auto {
            tracing::warn!(
                why,
                "the result endpoint cannot be polled while a job runs: back to the documented flow \
                 (status until COMPLETED, then the result) for good"
            );
            remember(store, REFUSES, why).await;
        }
    }

    /// A probe taught nothing (the job was already done, or the call failed): another may go.
    pub fn probe_inconclusive(&self) {
        let mut k = self.lock();
        if *k == Known::Probing {
            *k = Known::Unknown;
        }
    }
}

async fn remember(store: &Store, value: &str, detail: &str) {
    if let Err(e) = store.set_fact(FACT, value, detail).await {
        tracing::warn!(error = %e, "could not record what the result endpoint answered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn auto_probes_once_then_follows_the_proof_across_runs() {
        let (_d, store) = store().await;
        let r = Route::load(PollMode::Auto, &store).await;
        assert_eq!(r.endpoint(false), Endpoint::Probe);
        assert_eq!(r.endpoint(false), Endpoint::Status, "one probe at a time");
        r.probe_inconclusive();
        assert_eq!(r.endpoint(false), Endpoint::Probe);
        r.answered_pending(&store, "PROCESSING").await;
        assert_eq!(r.endpoint(false), Endpoint::Result);
        assert_eq!(
            r.endpoint(true),
            Endpoint::Status,
            "a job that got a young 404 stays on status"
        );
        let again = Route::load(PollMode::Auto, &store).await;
        assert!(again.direct(), "the proof is kept in the database");
        again.contradicted(&store, "404 for a request 3 s old").await;
        assert_eq!(again.endpoint(false), Endpoint::Status);
        let (v, detail, _) = store.fact(FACT).await.unwrap().unwrap();
        assert_eq!((v.as_str(), detail.as_str()), (REFUSES, "404 for a request 3 s old"));
        assert!(!Route::load(PollMode::Auto, &store).await.direct(), "for good");
        // Forced modes ignore what is known.
        assert_eq!(
            Route::load(PollMode::Result, &store).await.endpoint(false),
            Endpoint::Result
        );
        assert_eq!(
            Route::load(PollMode::Status, &store).await.endpoint(false),
            Endpoint::Status
        );
    }
}
