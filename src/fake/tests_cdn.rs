//! Tests of the fake CDN listener: downloads, Range, credential counting, file lifetime
//! and download faults, driven over HTTP with reqwest.

use std::time::Duration;

use serde_json::Value;

use super::tests_api::{body, client, fast, get, submit, wait_done};
use super::*;

/// Starts a fake with `cfg`, runs one job to completion and answers its id and video URL.
async fn completed(cfg: FakeConfig) -> (FakeServer, String, String) {
    let s = FakeServer::start(cfg).await.unwrap();
    let (_, v) = submit(&s, &body("a cat")).await;
    let id = v["request_id"].as_str().unwrap().to_string();
    let (st, _) = wait_done(v["status_url"].as_str().unwrap()).await;
    assert_eq!(st, 200);
    let url = format!("{}/videos/{id}.mp4", s.cdn_url());
    (s, id, url)
}

#[tokio::test]
async fn download_full_and_ranges() {
    let (s, id, url) = completed(fast()).await;
    let c = client();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    // A real video of what the body asked for (padded to at least the configured 4096 bytes).
    let want = video_for(&body("a cat"), &id, 4096);
    let len = want.len();
    assert!(len >= 4096);
    assert_eq!(r.headers()["content-length"], len.to_string().as_str());
    let full = r.bytes().await.unwrap();
    assert_eq!(&full[..], &want[..]);
    let info = crate::mp4check::Mp4Check::new();
    let mut info = info;
    info.update(&full);
    let info = info.finish().expect("a whole video");
    assert_eq!((info.width, info.height, info.frames), (832, 480, 81));

    let r = c.get(&url).header("range", "bytes=100-").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100-{}/{len}", len - 1).as_str()
    );
    assert_eq!(&r.bytes().await.unwrap()[..], &full[100..]);
    let r = c.get(&url).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], format!("bytes 10-19/{len}").as_str());
    assert_eq!(&r.bytes().await.unwrap()[..], &full[10..20]);
    let r = c
        .get(&url)
        .header("range", format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);

    let missing = format!("{}/videos/nope.mp4", s.cdn_url());
    assert_eq!(c.get(missing).send().await.unwrap().status(), 404);
    let stats = s.stats();
    assert_eq!(stats.downloads, 5);
    assert_eq!(stats.cdn_requests_with_key, 0);
    // Downloads are not API requests.
    assert!(stats.api_requests.iter().all(|r| r.path.starts_with("/v2/")));
}

#[tokio::test]
async fn range_ignored_without_support() {
    let (_s, id, url) = completed(FakeConfig {
        range_support: false,
        ..fast()
    })
    .await;
    let r = client().get(&url).header("range", "bytes=100-").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("accept-ranges"));
    assert_eq!(
        r.bytes().await.unwrap().len(),
        video_for(&body("a cat"), &id, 4096).len()
    );
}

#[tokio::test]
async fn video_not_served_before_completion() {
    let s = FakeServer::start(FakeConfig {
        queue: Duration::from_secs(10),
        ..fast()
    })
    .await
    .unwrap();
    let (_, v) = submit(&s, &body("a cat")).await;
    let id = v["request_id"].as_str().unwrap();
    let url = format!("{}/videos/{id}.mp4", s.cdn_url());
    assert_eq!(client().get(url).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn videos_outlive_records_until_their_file_lifetime() {
    let (s, id, url) = completed(FakeConfig {
        result_lifetime: Duration::from_millis(150),
        file_lifetime: Some(Duration::from_millis(800)),
        ..fast()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let status = format!("{}/v2/requests/{id}/status", s.api_url());
    assert_eq!(get(&status).await.0, 404, "the record expired");
    assert_eq!(
        client().get(&url).send().await.unwrap().status(),
        200,
        "the file did not"
    );
    tokio::time::sleep(Duration::from_millis(650)).await;
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 404, "the file is gone");
    s.set_file_lifetime(None);
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn cdn_counts_requests_with_credentials() {
    let (s, _id, url) = completed(fast()).await;
    let c = client();
    let r = c.get(&url).header("x-api-key", "fake-key").send().await;
    assert_eq!(r.unwrap().status(), 200);
    let r = c.get(&url).bearer_auth("fake-key").send().await.unwrap();
    assert_eq!(r.status(), 200);
    c.get(&url).send().await.unwrap();
    let stats = s.stats();
    assert_eq!(stats.cdn_requests_with_key, 2);
    assert_eq!(stats.downloads, 3);
}

#[tokio::test]
async fn truncate_and_drop_break_the_download() {
    let (s, id, url) = completed(fast()).await;
    let len = video_for(&body("a cat"), &id, 4096).len();
    for kind in [FaultKind::Truncate(1000), FaultKind::Drop] {
        s.push_fault(Fault {
            target: FaultTarget::Download,
            kind,
            count: 1,
        });
        let r = client().get(&url).send().await;
        let broken = match r {
            Err(_) => true,
            Ok(mut r) => {
                assert_eq!(r.headers()["content-length"], len.to_string().as_str());
                let (mut got, mut err) = (0usize, false);
                loop {
                    match r.chunk().await {
                        Ok(Some(c)) => got += c.len(),
                        Ok(None) => break,
                        Err(_) => {
                            err = true;
                            break;
                        }
                    }
                }
                assert!(got <= 1000, "{got}");
                err
            }
        };
        assert!(broken, "{kind:?} must give a client error");
    }
    // Range after a truncated transfer still works, and faults are consumed.
    let r = client().get(&url).header("range", "bytes=1000-").send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), len - 1000);
    s.push_fault(Fault {
        target: FaultTarget::Download,
        kind: FaultKind::Status(503),
        count: 1,
    });
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());
}

#[tokio::test]
async fn shutdown_and_drop_stop_listeners() {
    let s = FakeServer::start(fast()).await.unwrap();
    let (api, cdn) = (s.api_url(), s.cdn_url());
    s.shutdown().await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    assert!(c.get(format!("{api}/v2/requests/x")).send().await.is_err());
    assert!(c.get(format!("{cdn}/videos/x.mp4")).send().await.is_err());
    let s = FakeServer::start(fast()).await.unwrap();
    let api = s.api_url();
    drop(s);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(c.get(format!("{api}/v2/requests/x")).send().await.is_err());
}
