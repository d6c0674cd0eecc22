//! A hostile API server against the real `ApiClient` (and, once, the real binary): huge or
//! malformed JSON, missing fields, wrong types, request ids that are not ids, redirects, bodies
//! that never end. Each call must come back, in bounded time and memory, with an error whose kind
//! tells the engine the right thing to do — above all, a submit whose answer is garbage is a job
//! that may exist: never silently submitted again.

mod common;

use std::time::{Duration, Instant};

use common::raw::{head, http, json, RawServer, Reply};
use common::*;
use wanbatch::api::{AccountStop, ApiClient, ApiError, ApiKey, Poll};

const SECRET: &str = "hostile-key-7c41";
const TIMEOUT: Duration = Duration::from_secs(2);

fn client(url: &str) -> ApiClient {
    ApiClient::new(url, &ApiKey::new(SECRET.into()).unwrap(), TIMEOUT).unwrap()
}

/// The call must come back well within the request timeout plus slack.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: the call did not return"))
}

fn assert_unfollowable(what: &str, r: Result<impl std::fmt::Debug, ApiError>) {
    match r {
        Err(e @ ApiError::Unfollowable(_)) => {
            assert!(e.maybe_arrived(), "{what}: a 2xx submit answer means the job may exist");
            assert!(
                matches!(e.account_stop(), Some(AccountStop::Refused(_))),
                "{what}: must stop the run"
            );
            assert!(e.to_string().len() < 600, "{what}: {e}");
        }
        other => panic!("{what}: expected Unfollowable, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_submit_answers_hold_the_job_and_stop() {
    let long = "a".repeat(10_000);
    let bodies: Vec<(&str, String)> = vec![
        ("html", "<html>hello</html>".into()),
        ("empty", String::new()),
        ("truncated JSON", "{\"request_id\": \"abc".into()),
        ("a list", "[1,2,3]".into()),
        ("null", "null".into()),
        ("no request_id", "{\"status\":\"QUEUED\"}".into()),
        ("request_id a number", "{\"request_id\": 12345}".into()),
        ("request_id null", "{\"request_id\": null}".into()),
        ("request_id an object", "{\"request_id\": {\"a\":1}}".into()),
        ("request_id empty", "{\"request_id\": \"\"}".into()),
        ("request_id with /", "{\"request_id\": \"a/b\"}".into()),
        ("request_id ..", "{\"request_id\": \"..\"}".into()),
        ("request_id ../x", "{\"request_id\": \"../x\"}".into()),
        ("request_id %2F", "{\"request_id\": \"a%2Fb\"}".into()),
        ("request_id ?", "{\"request_id\": \"a?b=c\"}".into()),
        ("request_id #", "{\"request_id\": \"a#b\"}".into()),
        ("request_id space", "{\"request_id\": \"a b\"}".into()),
        ("request_id NUL", "{\"request_id\": \"a\\u0000b\"}".into()),
        ("request_id unicode", "{\"request_id\": \"ab\u{0441}d\"}".into()),
        ("request_id 10k", format!("{{\"request_id\": \"{long}\"}}")),
        ("deep JSON", format!("{}{}", "[".repeat(50_000), "]".repeat(50_000))),
    ];
    for (what, body) in bodies {
        let server = RawServer::start(move |_| json(200, &body)).await;
        let r = bounded(what, client(&server.url).submit("{}")).await;
        assert_unfollowable(what, r);
        assert_eq!(server.hits(), 1, "{what}: exactly one request");
    }
}

#[tokio::test]
async fn a_path_safe_request_id_is_followed_on_the_api_host_only() {
    // Not a UUID, but safe in a path: accepted (Segmind documents no format).
    let evil = RawServer::start(|_| json(200, "{}")).await;
    let body = format!(
        "{{\"request_id\":\"abc_123-X\",\"status_url\":\"{0}/steal\",\"response_url\":\"{0}/steal\"}}",
        evil.url
    );
    let server = RawServer::start(move |_| json(200, &body)).await;
    let api = client(&server.url);
    let (sub, _) = bounded("submit", api.submit("{}")).await.unwrap();
    assert_eq!(sub.request_id, "abc_123-X");
    assert_eq!(sub.status_url, format!("{}/v2/requests/abc_123-X/status", server.url));
    assert_eq!(sub.response_url, format!("{}/v2/requests/abc_123-X", server.url));
    // A saved URL on another host is not used either: the key never goes there.
    let _ = bounded("status", api.status("abc_123-X", Some(&format!("{}/steal", evil.url)))).await;
    assert_eq!(evil.connections(), 0, "nothing may reach another host");
    // An unsafe saved id is refused before any request.
    let before = server.hits();
    let r = bounded("status", api.status("../../etc", None)).await;
    assert!(matches!(r, Err(ApiError::Protocol(_))), "{r:?}");
    assert_eq!(server.hits(), before);
}

#[tokio::test]
async fn answers_over_the_size_cap_are_cut_off() {
    let big = format!("{{\"request_id\":\"{}\"}}", "a".repeat(2 << 20));
    for chunked in [false, true] {
        let body = big.clone();
        let server = RawServer::start(move |_| {
            if chunked {
                Reply::Endless {
                    head: head(200, &[("transfer-encoding", "chunked")]),
                    chunk: body.as_bytes()[..1 << 16].to_vec(),
                }
            } else {
                Reply::Raw(http(200, &[], body.as_bytes()))
            }
        })
        .await;
        let api = client(&server.url);
        let what = if chunked {
            "endless chunked"
        } else {
            "2 MiB with a length"
        };
        let started = Instant::now();
        let r = bounded(what, api.submit("{}")).await;
        assert!(
            matches!(&r, Err(ApiError::Unfollowable(m)) if m.contains("larger") || m.contains("too large")),
            "{what}: {r:?}"
        );
        assert!(
            started.elapsed() < TIMEOUT,
            "{what}: cut off by size, not by the timeout"
        );
        let r = bounded(what, api.result("abc", None)).await;
        assert!(
            matches!(&r, Err(e @ ApiError::Protocol(_)) if e.account_stop().is_none()),
            "{what}: a poll is retried: {r:?}"
        );
        if chunked {
            // The client hung up; the server did not get to stream a lot.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let sent = server.streamed();
            assert!(sent < 64 << 20, "{sent} bytes streamed");
        }
    }
}

#[tokio::test]
async fn a_body_that_trickles_for_ever_ends_at_the_timeout_as_lost() {
    let server = RawServer::start(|_| Reply::Trickle {
        head: head(200, &[("content-length", "1000000")]),
        every: Duration::from_millis(50),
    })
    .await;
    let api = client(&server.url);
    for poll in [false, true] {
        let started = Instant::now();
        let err = if poll {
            bounded("trickling poll", api.result("abc", None)).await.unwrap_err()
        } else {
            bounded("trickling submit", api.submit("{}")).await.unwrap_err()
        };
        let took = started.elapsed();
        assert!(matches!(err, ApiError::Lost(_)), "{err:?}");
        // Lost: a submit may have arrived, so it goes to unknown and the --on-unknown policy.
        assert!(err.maybe_arrived() && err.account_stop().is_none());
        assert!(
            took >= TIMEOUT - Duration::from_millis(100) && took < TIMEOUT * 3,
            "{took:?}"
        );
    }
}

#[tokio::test]
async fn malformed_poll_answers_are_retried_not_trusted() {
    let cases: Vec<(&str, u16, &str)> = vec![
        ("not JSON", 200, "<html>"),
        ("no status", 200, "{\"request_id\":\"abc\"}"),
        ("status a number", 200, "{\"status\": 5}"),
        ("status a list", 200, "{\"status\": [\"COMPLETED\"]}"),
        ("a string", 200, "\"COMPLETED\""),
        ("deep", 200, "{\"status\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"),
    ];
    for (what, status, body) in cases {
        let server = RawServer::start(move |_| json(status, body)).await;
        let r = bounded(what, client(&server.url).result("abc", None)).await;
        match r {
            Err(e @ ApiError::Protocol(_)) => assert!(e.account_stop().is_none(), "{what}"),
            other => panic!("{what}: expected Protocol, got {other:?}"),
        }
    }
    // FAILED is read from the body whatever the HTTP code; a 422 whose body is not FAILED is a
    // client error for the job (the engine fails it with the message), not a retry.
    for code in [200, 422, 500, 503] {
        let server = RawServer::start(move |_| json(code, "{\"status\":\"FAILED\",\"error\":\"NSFW\"}")).await;
        let r = bounded("FAILED", client(&server.url).result("abc", None)).await;
        assert_eq!(r.unwrap().0, Poll::Failed("NSFW".into()), "HTTP {code}");
    }
    for body in ["oops", "{\"error\":\"bad id\"}"] {
        let server = RawServer::start(move |_| json(422, body)).await;
        let r = bounded("422", client(&server.url).status("abc", None)).await;
        assert!(
            matches!(r, Err(ApiError::Rejected { status: 422, .. })),
            "{body}: {r:?}"
        );
    }
    // Odd but usable shapes: an unknown state is still running; COMPLETED without a usable
    // output is reported as such (the engine fails the paid job with that message).
    for (body, want) in [
        ("{\"status\":\"WEIRD\"}", Poll::Pending("WEIRD".into())),
        ("{\"status\":\"COMPLETED\",\"output\":12}", Poll::Completed(None)),
        (
            "{\"status\":\"COMPLETED\",\"output\":{\"url\":7}}",
            Poll::Completed(None),
        ),
        (
            // An error that is not text is kept as its JSON: the message is the user's only clue.
            "{\"status\":\"FAILED\",\"error\":{\"nested\":true}}",
            Poll::Failed("{\"nested\":true}".into()),
        ),
    ] {
        let server = RawServer::start(move |_| json(200, body)).await;
        let (poll, _) = bounded(body, client(&server.url).result("abc", None)).await.unwrap();
        assert_eq!(poll, want, "{body}");
    }
}

#[tokio::test]
async fn hostile_headers_are_ignored_or_classified() {
    // A credits header that is not a finite number is ignored, not believed.
    for v in ["NaN", "inf", "-inf", "1e999", "lots"] {
        let server =
            RawServer::start(move |_| Reply::Raw(http(200, &[("x-remaining-credits", v)], b"{\"status\":\"QUEUED\"}")))
                .await;
        let (_, meta) = bounded(v, client(&server.url).result("abc", None)).await.unwrap();
        assert_eq!(meta.remaining_credits, None, "{v}");
    }
    // A 429 whose reset hints are absurd: parsed without panic (the gate caps any pause at 1 h).
    for (reset, retry) in [
        ("99999999999999999999", "-5"),
        ("18446744073709551615", "1e308"),
        ("9999-99-99T99:99:99Z", "NaN"),
        ("2024-01-01T00:00:00+", "Wed, 99 Foo 2024"),
    ] {
        let server = RawServer::start(move |_| {
            Reply::Raw(http(
                429,
                &[("x-rate-limit-reset-at-utc", reset), ("retry-after", retry)],
                b"{}",
            ))
        })
        .await;
        let r = bounded(reset, client(&server.url).submit("{}")).await;
        assert!(matches!(r, Err(ApiError::RateLimited { .. })), "{reset}: {r:?}");
    }
    // A response head larger than the client accepts: no answer came, the submit may have landed.
    let huge = "h".repeat(1 << 20);
    let server = RawServer::start(move |_| Reply::Raw(http(200, &[("x-junk", &huge)], b"{}"))).await;
    let r = bounded("huge head", client(&server.url).submit("{}")).await;
    assert!(matches!(&r, Err(e @ ApiError::Lost(_)) if e.maybe_arrived()), "{r:?}");
}

#[tokio::test]
async fn redirects_are_not_followed_and_stop_the_run() {
    let elsewhere = RawServer::start(|_| json(200, "{\"request_id\":\"stolen\"}")).await;
    let target = elsewhere.url.clone();
    let server = RawServer::start(move |h| {
        // A loop to itself for polls, a hop to another host for submits.
        let to = if h.starts_with("POST") {
            format!("{target}/v2/x")
        } else {
            "/v2/requests/abc".into()
        };
        Reply::Raw(http(302, &[("location", &to)], b""))
    })
    .await;
    let api = client(&server.url);
    let r = bounded("submit", api.submit("{}")).await;
    match &r {
        Err(e @ ApiError::Redirected { status: 302, location }) => {
            assert!(location.starts_with(&elsewhere.url), "{location}");
            assert!(e.maybe_arrived(), "a redirected POST may have created a job");
            assert!(e.account_stop().is_some());
            assert!(e.to_string().contains("SEGMIND_BASE_URL"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let r = bounded("poll", api.result("abc", None)).await;
    assert!(matches!(r, Err(ApiError::Redirected { .. })), "{r:?}");
    assert_eq!(server.hits(), 2, "one request per call: nothing followed");
    assert_eq!(elsewhere.connections(), 0, "the key never went to the other host");
    assert!(server.heads.lock().unwrap().iter().all(|h| h.contains(SECRET)));
}

/// The engine side: a base URL that answers every submit with a 200 we cannot follow must not
/// turn into a stream of paid submits. One submit, the job held as unknown, exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_against_a_garbage_api_submits_once_and_stops() {
    let env = Env::new(fast_fake()).await;
    let server = RawServer::start(|_| json(200, "<html>this is not Segmind</html>")).await;
    let m = env.write("jobs.csv", &manifest(3));
    let mut cmd = env.run_cmd(&[&m], &["--concurrency", "1"]);
    cmd.env("SEGMIND_BASE_URL", &server.url);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SEGMIND_BASE_URL"),
        "{}",
        text(&out)
    );
    let posts = server
        .heads
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "{}", text(&out));
    let jobs = env.export().await;
    let states: Vec<&str> = jobs.iter().map(|j| j["state"].as_str().unwrap()).collect();
    assert_eq!(states.iter().filter(|s| **s == "unknown").count(), 1, "{states:?}");
    assert_eq!(states.iter().filter(|s| **s == "pending").count(), 2, "{states:?}");
    assert!(jobs.iter().all(|j| j["resubmits_unknown"] == 0), "{jobs:#?}");
}

#[test]
fn the_key_is_redacted_from_every_debug_form() {
    let key = ApiKey::new(format!("  {SECRET}\n")).unwrap();
    let api = ApiClient::new("http://127.0.0.1:9", &key, TIMEOUT).unwrap();
    for shown in [
        format!("{key:?}"),
        format!("{key:#?}"),
        format!("{api:?}"),
        format!("{api:#?}"),
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
    assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    // A key that cannot be a header value is refused, not sent mangled.
    assert!(ApiKey::new("bad\nkey".into()).is_none());
    assert!(ApiKey::new("   ".into()).is_none());
}
