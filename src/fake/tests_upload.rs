//! Tests of the fake storage upload over HTTP: several data URLs per call, the answer's field
//! name, refusals (media type, base64, size, key, content type), asset serving and leak
//! counting, submits naming assets the fake never issued, and Upload faults.

use std::time::Duration;

use serde_json::{json, Value};

use super::tests_api::{body, client, fast, submit, wait_done, KEY};
use super::*;

/// Standard base64 with padding.
fn b64(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn data_url(mime: &str, data: &[u8]) -> String {
    format!("data:{mime};base64,{}", b64(data))
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n fake png bytes";
const JPEG: &[u8] = b"\xff\xd8\xff\xe0 fake jpeg bytes!";

/// POSTs an upload body with the key; answers the status and JSON body.
async fn upload(s: &FakeServer, body: &Value) -> (u16, Value) {
    let url = format!("{}/upload-asset", s.api_url());
    let r = client().post(url).header("x-api-key", KEY).json(body);
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn urls_of(v: &Value, field: &str) -> Vec<String> {
    let list = v[field].as_array().unwrap_or_else(|| panic!("no {field} in {v}"));
    list.iter().map(|u| u.as_str().unwrap().to_string()).collect()
}

#[test]
fn the_test_encoder_is_standard_base64() {
    assert_eq!(b64(b"hello"), "aGVsbG8=");
    assert_eq!(b64(b"hello!"), "aGVsbG8h");
    assert_eq!(b64(&[0, 255]), "AP8=");
}

#[tokio::test]
async fn several_data_urls_become_served_assets() {
    let s = FakeServer::start(fast()).await.unwrap();
    let req = json!({"data_urls": [data_url("image/png", PNG), data_url("image/jpeg", JPEG)]});
    let (st, v) = upload(&s, &req).await;
    assert_eq!(st, 200, "{v}");
    assert!(v["message"].is_string());
    let urls = urls_of(&v, "file_urls");
    assert_eq!(urls.len(), 2);
    let prefix = format!("{}/assets/", s.cdn_url());
    assert!(urls[0].starts_with(&prefix) && urls[0].ends_with(".png"), "{}", urls[0]);
    assert!(urls[1].starts_with(&prefix) && urls[1].ends_with(".jpg"), "{}", urls[1]);
    for (url, mime, bytes) in [(&urls[0], "image/png", PNG), (&urls[1], "image/jpeg", JPEG)] {
        let r = client().get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], mime);
        assert_eq!(&r.bytes().await.unwrap()[..], bytes);
        assert_eq!(s.asset(url), Some((mime.to_string(), bytes.to_vec())));
    }
    // Not idempotent: the same bytes again are new assets.
    let (_, again) = upload(&s, &req).await;
    let again = urls_of(&again, "file_urls");
    assert!(again.iter().all(|u| !urls.contains(u)));
    let missing = format!("{}/assets/nope.png", s.cdn_url());
    assert_eq!(client().get(missing).send().await.unwrap().status(), 404);
    let st = s.stats();
    assert_eq!(
        (st.uploads, st.assets, st.asset_bytes),
        (2, 4, 2 * (PNG.len() + JPEG.len()) as u64)
    );
    assert_eq!((st.asset_downloads, st.downloads, st.cdn_requests_with_key), (3, 0, 0));
    // Every media type of the list is accepted.
    let all = ["image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"];
    let req = json!({"data_urls": all.iter().map(|m| data_url(m, PNG)).collect::<Vec<_>>()});
    let (st, v) = upload(&s, &req).await;
    assert_eq!(st, 200, "{v}");
    let exts: Vec<String> = urls_of(&v, "file_urls")
        .iter()
        .map(|u| u.rsplit('.').next().unwrap().to_string())
        .collect();
    assert_eq!(exts, ["png", "jpg", "webp", "gif", "bmp"]);
}

#[tokio::test]
async fn the_answer_field_can_be_urls() {
    let s = FakeServer::start(FakeConfig {
        upload_field: UploadField::Urls,
        ..fast()
    })
    .await
    .unwrap();
    let req = json!({"data_urls": [data_url("image/png", PNG)]});
    let (_, v) = upload(&s, &req).await;
    assert_eq!(urls_of(&v, "urls").len(), 1);
    assert!(v.get("file_urls").is_none());
    s.set_upload_field(UploadField::FileUrls);
    assert_eq!(urls_of(&upload(&s, &req).await.1, "file_urls").len(), 1);
}

#[tokio::test]
async fn refusals_name_the_item_and_store_nothing() {
    let s = FakeServer::start(FakeConfig {
        upload_max_bytes: 2000,
        ..fast()
    })
    .await
    .unwrap();
    let good = data_url("image/png", PNG);
    let cases = [
        (
            json!({"data_urls": [good, data_url("text/plain", b"hi")]}),
            "data_urls[1]: unsupported media type",
        ),
        (
            json!({"data_urls": ["data:image/png;base64,@@@@"]}),
            "data_urls[0]: invalid base64",
        ),
        (
            json!({"data_urls": ["https://example.com/cat.png"]}),
            "data_urls[0]: not a data URL",
        ),
        (json!({"data_urls": [7]}), "data_urls[0]: not a string"),
        (json!({"data_urls": []}), "data_urls must not be empty"),
        (json!({"files": [good]}), "data_urls must be a list"),
    ];
    for (req, msg) in cases {
        let (st, v) = upload(&s, &req).await;
        assert_eq!(st, 400, "{req}");
        let err = v["error"].as_str().unwrap();
        assert!(err.starts_with(msg), "{err}");
    }
    let big = json!({"data_urls": [data_url("image/png", &[7u8; 1600])]});
    let (st, v) = upload(&s, &big).await;
    assert_eq!(st, 413, "{v}");
    let url = format!("{}/upload-asset", s.api_url());
    let c = client();
    let r = c
        .post(&url)
        .header("x-api-key", KEY)
        .body(json!({"data_urls": [good]}).to_string());
    assert_eq!(r.send().await.unwrap().status(), 406);
    let r = c.post(&url).json(&json!({"data_urls": [good]})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .header("x-api-key", "wrong")
        .json(&json!({"data_urls": [good]}));
    assert_eq!(r.send().await.unwrap().status(), 401);
    let st = s.stats();
    assert_eq!((st.uploads, st.assets, st.asset_bytes), (10, 0, 0));
    assert!(s.asset("anything.png").is_none());
}

#[tokio::test]
async fn asset_requests_carrying_a_key_are_counted_as_leaks() {
    let s = FakeServer::start(fast()).await.unwrap();
    let (_, v) = upload(&s, &json!({"data_urls": [data_url("image/gif", PNG)]})).await;
    let url = &urls_of(&v, "file_urls")[0];
    let r = client().get(url).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/gif");
    client().get(url).send().await.unwrap();
    let st = s.stats();
    assert_eq!((st.cdn_requests_with_key, st.asset_downloads), (1, 2));
}

#[tokio::test]
async fn submits_naming_unissued_assets_fail_like_unreachable_images() {
    let s = FakeServer::start(fast()).await.unwrap();
    let (_, v) = upload(&s, &json!({"data_urls": [data_url("image/png", PNG)]})).await;
    let issued = urls_of(&v, "file_urls").remove(0);
    let unissued = format!("{}/assets/00000000-0000-0000-0000-000000000000.png", s.cdn_url());
    let with = |image: &str, last: Option<&str>| {
        let mut b = body("a cat");
        b["image"] = json!(image);
        if let Some(l) = last {
            b["last_image"] = json!(l);
        }
        b
    };
    let cases = [
        (with(&issued, None), None),
        (with(&issued, Some(&issued)), None),
        (with("https://example.com/cat.png", None), None),
        (with(&unissued, None), Some(&unissued)),
        (with(&issued, Some(&unissued)), Some(&unissued)),
    ];
    for (b, bad) in cases {
        let (st, v) = submit(&s, &b).await;
        assert_eq!(st, 200, "accepted like the real API");
        let (st, done) = wait_done(v["status_url"].as_str().unwrap()).await;
        match bad {
            None => assert_eq!((st, done["status"].as_str()), (200, Some("COMPLETED")), "{b}"),
            Some(url) => {
                assert_eq!((st, done["status"].as_str()), (422, Some("FAILED")), "{b}");
                assert_eq!(done["error"], format!("Failed to fetch image from URL {url}"));
            }
        }
    }
}

#[tokio::test]
async fn upload_faults_lose_answers_not_uploads() {
    let s = FakeServer::start(fast()).await.unwrap();
    let req = json!({"data_urls": [data_url("image/png", PNG)]});
    let fault = |kind| Fault {
        target: FaultTarget::Upload,
        kind,
        count: 1,
    };
    s.push_fault(fault(FaultKind::Status(500)));
    assert_eq!(upload(&s, &req).await.0, 500);
    assert_eq!(s.stats().assets, 0, "refused before processing");
    s.push_fault(fault(FaultKind::AcceptThenStatus(502)));
    assert_eq!(upload(&s, &req).await.0, 502);
    assert_eq!(s.stats().assets, 1, "the upload happened, the answer was lost");
    for (kind, stored) in [(FaultKind::AcceptThenDrop, 2), (FaultKind::Drop, 2)] {
        s.push_fault(fault(kind));
        let url = format!("{}/upload-asset", s.api_url());
        let r = client().post(url).header("x-api-key", KEY).json(&req).send().await;
        let broken = match r {
            Err(_) => true,
            Ok(r) => r.bytes().await.is_err(),
        };
        assert!(broken, "{kind:?}");
        assert_eq!(s.stats().assets, stored, "{kind:?}");
    }
    s.push_fault(Fault {
        target: FaultTarget::AnyApi,
        kind: FaultKind::Status(500),
        count: 1,
    });
    assert_eq!(upload(&s, &req).await.0, 200, "AnyApi leaves uploads alone");
    s.push_fault(fault(FaultKind::Delay(100)));
    let t = std::time::Instant::now();
    assert_eq!(upload(&s, &req).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(s.stats().uploads, 6);
}
