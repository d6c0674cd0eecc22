//! The upload client against the fake server: several files in one call and the URLs the fake
//! then serves, both answer field names, refused media types and bodies, failures that may
//! have stored the files anyway (the call is not idempotent), and the rate limit.

use crate::fake::{FakeConfig, FakeServer, Fault, FaultKind, FaultTarget, UploadField};

use super::tests_history::{fast, hosts, key, TIMEOUT};
use super::upload::{data_url, UploadClient};
use super::{ApiError, ApiKey};

fn uploader(s: &FakeServer) -> UploadClient {
    UploadClient::new(&hosts(s).upload, &key(), TIMEOUT).unwrap()
}

/// Two small "images" of different types (the fake checks the media type, not the pixels).
fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("image/png", b"\x89PNG\r\n\x1a\nnot really".to_vec()),
        ("image/jpeg", (0u8..=255).collect()),
    ]
}

#[tokio::test]
async fn several_files_come_back_as_urls_the_cdn_serves_under_either_field_name() {
    let s = FakeServer::start(fast()).await.unwrap();
    let up = uploader(&s);
    let sent: Vec<String> = files().iter().map(|(t, b)| data_url(t, b)).collect();
    for field in [UploadField::FileUrls, UploadField::Urls] {
        s.set_upload_field(field);
        let urls = up.upload(&sent).await.unwrap();
        assert_eq!(urls.len(), 2, "{field:?}");
        for (url, (mime, bytes)) in urls.iter().zip(files()) {
            assert!(url.starts_with(&format!("{}/assets/", s.cdn_url())), "{url}");
            assert_eq!(s.asset(url), Some((mime.to_string(), bytes)), "{field:?} {url}");
        }
    }
    let st = s.stats();
    assert_eq!((st.uploads, st.assets), (2, 4), "each call stores anew");
}

#[tokio::test]
async fn nothing_to_upload_sends_nothing() {
    let s = FakeServer::start(fast()).await.unwrap();
    assert_eq!(uploader(&s).upload(&[]).await.unwrap(), Vec::<String>::new());
    assert_eq!(s.stats().uploads, 0);
}

#[tokio::test]
async fn refused_uploads_are_rejected_and_store_nothing() {
    let s = FakeServer::start(FakeConfig {
        upload_max_bytes: 4096,
        ..fast()
    })
    .await
    .unwrap();
    let up = uploader(&s);
    let good = data_url("image/png", b"png");
    let text = data_url("text/plain", b"hello");
    match up.upload(&[good.clone(), text]).await {
        Err(ApiError::Rejected { status: 400, message }) => {
            assert!(
                message.contains("data_urls[1]") && message.contains("unsupported media type"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    let big = data_url("image/png", &[7u8; 8192]);
    let e = up.upload(&[big]).await.unwrap_err();
    assert!(matches!(e, ApiError::Rejected { status: 413, .. }), "{e:?}");
    assert_eq!(s.stats().assets, 0);

    let stranger = UploadClient::new(&hosts(&s).upload, &ApiKey::new("wrong".into()).unwrap(), TIMEOUT).unwrap();
    let e = stranger.upload(&[good]).await.unwrap_err();
    assert!(matches!(e, ApiError::Unauthorized(_)), "{e:?}");
}

#[tokio::test]
async fn a_lost_answer_may_have_stored_the_files() {
    let s = FakeServer::start(fast()).await.unwrap();
    let up = uploader(&s);
    let one = vec![data_url("image/png", b"png")];
    s.push_fault(Fault {
        target: FaultTarget::Upload,
        kind: FaultKind::AcceptThenDrop,
        count: 1,
    });
    let e = up.upload(&one).await.unwrap_err();
    assert!(e.maybe_arrived(), "{e:?}");
    assert_eq!(s.stats().assets, 1, "stored although the answer was lost");
    s.push_fault(Fault {
        target: FaultTarget::Upload,
        kind: FaultKind::Status(502),
        count: 1,
    });
    let e = up.upload(&one).await.unwrap_err();
    assert!(
        matches!(e, ApiError::Server { status: 502, .. }) && e.maybe_arrived(),
        "{e:?}"
    );
    // A retry uploads again: a new asset, a new URL.
    let urls = up.upload(&one).await.unwrap();
    assert_eq!(s.stats().assets, 2);
    assert!(s.asset(&urls[0]).is_some());
}

#[tokio::test]
async fn uploads_count_against_the_rate_limit() {
    let s = FakeServer::start(FakeConfig {
        rate_limit: Some(1),
        ..fast()
    })
    .await
    .unwrap();
    let up = uploader(&s);
    let one = vec![data_url("image/png", b"png")];
    up.upload(&one).await.unwrap();
    let e = up.upload(&one).await.unwrap_err();
    assert!(matches!(e, ApiError::RateLimited { until: Some(_) }), "{e:?}");
    assert_eq!(s.stats().assets, 1);
}
