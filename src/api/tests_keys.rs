//! The key-host policy of the side clients: the key goes to the history and upload hosts and
//! nowhere else — not to the file host their answers name, not along a redirect.

use std::io::ErrorKind;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::history::{HistoryClient, HistoryQuery, HistoryStatus};
use super::tests_history::{fast, history, hosts, key, TIMEOUT};
use super::upload::{data_url, UploadClient};
use super::ApiError;
use crate::fake::{FakeConfig, FakeServer, Plant};

#[tokio::test]
async fn the_key_goes_to_history_and_upload_and_never_to_the_file_host() {
    let s = FakeServer::start(FakeConfig {
        extra_keys: vec!["other-key".into()],
        ..fast()
    })
    .await
    .unwrap();
    let h = hosts(&s);
    let up = UploadClient::new(&h.upload, &key(), TIMEOUT).unwrap();
    let asset = up.upload(&[data_url("image/png", b"png")]).await.unwrap().remove(0);
    // Someone submits with the asset; the fake's model "fetches" it (an unknown asset fails).
    let sent = json!({"image": asset, "prompt": "from an upload"});
    let id = s.plant(Plant {
        age: std::time::Duration::from_secs(30),
        ..Plant::new(sent.clone())
    });
    let hist = history(&s);
    let row = hist.by_id(&id).await.unwrap().unwrap();
    assert_eq!((row.status, row.request_body), (HistoryStatus::Completed, Some(sent)));
    let listed = hist.list(&HistoryQuery::default()).await.unwrap().rows;
    let video = listed[0].generation_url.clone().unwrap();
    for url in [&asset, &video] {
        assert!(url.starts_with(&s.cdn_url()), "{url} is on the file host");
        assert!(!url.starts_with(&s.api_url()), "{url}");
    }

    let st = s.stats();
    let side: Vec<_> = st
        .api_requests
        .iter()
        .filter(|r| r.path.starts_with("/inference-request/") || r.path == "/upload-asset")
        .collect();
    assert_eq!(side.len(), 3, "{side:?}");
    for r in side {
        assert!(r.had_key && r.key_index == Some(0), "{r:?}");
        let ua = r.user_agent.as_deref().unwrap_or("");
        assert!(ua.starts_with("wanbatch/"), "{ua}");
    }
    // Fetching the files is someone else's job: these clients never touched the file host.
    assert_eq!((st.cdn_requests_with_key, st.downloads, st.asset_downloads), (0, 0, 0));

    // Each key sees its own account's history only.
    let other = super::ApiKey::new("other-key".into()).unwrap();
    let theirs = HistoryClient::new(&h.history, &other, TIMEOUT).unwrap();
    assert_eq!(theirs.by_id(&id).await.unwrap(), None);
    assert!(theirs.list(&HistoryQuery::default()).await.unwrap().rows.is_empty());
    assert_eq!(s.stats().requests_of_key(1).count(), 2);
}

/// A one-trick HTTP server: answers every request with `status` and `Location: location`,
/// and records each request head.
async fn redirector(status: u16, location: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    // Ends with the test's runtime.
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head and any announced body, so that closing does not reset the answer.
            let head_end = loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < head_end + length {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            seen.lock().unwrap().push(head);
            let answer = format!(
                "HTTP/1.1 {status} Moved\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = sock.write_all(answer.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    (url, heads)
}

#[tokio::test]
async fn a_redirect_from_a_keyed_host_is_not_followed() {
    // The would-be thief: a listener nobody may connect to. Non-blocking, so that "no
    // connection arrived" is read from the kernel's accept queue at once, not waited for.
    let thief = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    thief.set_nonblocking(true).unwrap();
    let steal = format!("http://{}/steal", thief.local_addr().unwrap());

    for status in [301, 302, 303, 307, 308] {
        let (url, heads) = redirector(status, steal.clone()).await;
        let hist = HistoryClient::new(&format!("{url}/inference-request/request-history"), &key(), TIMEOUT).unwrap();
        let up = UploadClient::new(&format!("{url}/upload-asset"), &key(), TIMEOUT).unwrap();
        let redirected =
            |e: ApiError| matches!(e, ApiError::Redirected { status: s, location } if s == status && location == steal);
        let e = hist.list(&HistoryQuery::default()).await.unwrap_err();
        assert!(redirected(e), "{status} list");
        let e = hist.by_id("abc-123").await.unwrap_err();
        assert!(redirected(e), "{status} by id");
        let e = up.upload(&[data_url("image/png", b"png")]).await.unwrap_err();
        assert!(redirected(e), "{status} upload");

        let heads = heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 3, "{heads:?}");
        assert!(heads[0].starts_with("GET /inference-request/request-history?page=1&per_page=100 "));
        assert!(heads[1].starts_with("GET /inference-request/request-history/abc-123 "));
        assert!(heads[2].starts_with("POST /upload-asset "));
        assert!(heads
            .iter()
            .all(|h| h.to_ascii_lowercase().contains("\r\nx-api-key: fake-key\r\n")));
        match thief.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{status}: the redirect target was contacted: {other:?}"),
        }
    }
}
