//! A hostile video host against the real downloader: URLs that are not http(s), redirect loops
//! and redirects to other schemes, bodies over the size limit, endless and trickling bodies,
//! Content-Length lies. Every case ends in bounded time with a classified error, nothing
//! written outside OUT, no oversized file left behind, and never an API key sent.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::files_in;
use common::raw::{head, http, RawServer, Reply};
use wanbatch::engine::download::{self, DownloadError, Limits};

const RID: &str = "req-1";

fn video(len: usize) -> Vec<u8> {
    let mut v = b"\0\0\0\x20ftypisom".to_vec();
    v.resize(len, 7);
    v
}

async fn get(url: &str, out: &Path, expected: Option<u64>, limits: Limits) -> Result<download::Fetched, DownloadError> {
    let http = download::client(5).unwrap();
    let f = download::fetch_with(&http, url, out, "clip", RID, expected, limits);
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the download must end")
}

/// A real, playable MP4 as the fake's CDN serves it (832x480, 81 frames at 16 fps).
fn real_video() -> Vec<u8> {
    wanbatch::fake::video_for(&serde_json::json!({}), RID, 0)
}

#[tokio::test]
async fn a_plain_video_downloads_without_any_key() {
    let bytes = real_video();
    let len = bytes.len() as u64;
    let server = RawServer::start(move |_| Reply::Raw(http(200, &[], &bytes))).await;
    let dir = tempfile::tempdir().unwrap();
    let f = get(
        &format!("{}/v.mp4", server.url),
        dir.path(),
        Some(len),
        Limits::new(1 << 20),
    )
    .await
    .unwrap();
    assert_eq!((f.bytes, f.path.clone()), (len, dir.path().join("clip.mp4")));
    let v = &f.video;
    assert_eq!((v.width, v.height, v.frames), (832, 480, 81));
    let heads = server.heads.lock().unwrap();
    assert!(
        heads.iter().all(|h| !h.to_ascii_lowercase().contains("x-api-key")),
        "{heads:?}"
    );
}

/// The API's `video.file_size` is unconfirmed: a whole video (by its own boxes, and as long as
/// its host announced) is kept even when that figure disagrees — trusted strictly, a wrong figure
/// would refuse every video for ever. A placeholder of the reported size is still refused.
#[tokio::test]
async fn a_whole_video_is_kept_whatever_file_size_the_api_reported() {
    let bytes = real_video();
    let len = bytes.len() as u64;
    let served = bytes.clone();
    let server = RawServer::start(move |_| Reply::Raw(http(200, &[], &served))).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/v.mp4", server.url);
    for reported in [16 * 1024, len + 1, len - 1] {
        let f = get(&url, dir.path(), Some(reported), Limits::new(1 << 20))
            .await
            .unwrap();
        assert_eq!((f.bytes, f.video.frames), (len, 81));
        assert_eq!(std::fs::read(&f.path).unwrap(), bytes);
    }
    let server = RawServer::start(|_| Reply::Raw(http(200, &[], &video(3000)))).await;
    let r = get(
        &format!("{}/p.mp4", server.url),
        dir.path(),
        Some(4000),
        Limits::new(1 << 20),
    )
    .await;
    assert!(
        matches!(&r, Err(DownloadError::Invalid(m)) if m.contains("file_size of 4000")),
        "{r:?}"
    );
}

#[tokio::test]
async fn output_urls_that_are_not_http_are_refused_without_a_connection() {
    let server = RawServer::start(|_| Reply::Raw(http(200, &[], &video(100)))).await;
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for url in [
        "file:///etc/passwd".to_string(),
        format!("ftp://127.0.0.1:{port}/v.mp4"),
        format!("gopher://127.0.0.1:{port}/v.mp4"),
        "data:video/mp4;base64,AAAAIGZ0eXBpc29t".to_string(),
        "javascript:alert(1)".to_string(),
        "../../etc/passwd".to_string(),
        String::new(),
    ] {
        let r = get(&url, &out, None, Limits::new(1 << 20)).await;
        assert!(matches!(r, Err(DownloadError::Invalid(_))), "{url}: {r:?}");
    }
    assert_eq!(server.connections(), 0);
    assert!(!out.exists(), "nothing created for a refused URL");
}

#[tokio::test]
async fn redirect_loops_stop_at_the_bound_and_other_schemes_are_refused() {
    let server = RawServer::start(|h| {
        let to = if h.contains("/to-file") {
            "file:///etc/passwd"
        } else if h.contains("/to-ftp") {
            "ftp://127.0.0.1/v"
        } else {
            "/loop"
        };
        Reply::Raw(http(302, &[("location", to)], b""))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let r = get(&format!("{}/loop", server.url), dir.path(), None, Limits::new(1 << 20)).await;
    assert!(
        matches!(&r, Err(DownloadError::Remote(m)) if m.contains("redirect")),
        "{r:?}"
    );
    assert_eq!(server.hits(), 6, "the first request and 5 redirects");
    for path in ["/to-file", "/to-ftp"] {
        let before = server.hits();
        let r = get(&format!("{}{path}", server.url), dir.path(), None, Limits::new(1 << 20)).await;
        assert!(matches!(&r, Err(DownloadError::Remote(_))), "{path}: {r:?}");
        assert_eq!(server.hits(), before + 1, "{path}: not followed");
    }
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
}

#[tokio::test]
async fn a_video_over_the_limit_is_refused_and_nothing_stays() {
    let cap = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    // Announced too large: refused before a byte is written.
    let server = RawServer::start(|_| {
        let mut h = head(200, &[("content-length", "10485760")]);
        h.extend_from_slice(&video(4096));
        Reply::Raw(h)
    })
    .await;
    let r = get(&format!("{}/big", server.url), dir.path(), None, Limits::new(cap)).await;
    assert!(
        matches!(&r, Err(DownloadError::Invalid(m)) if m.contains("10485760")),
        "{r:?}"
    );
    assert!(files_in(dir.path()).is_empty());
    // Not announced, and endless: stopped at the limit, the partial removed.
    let server = RawServer::start(|_| Reply::Endless {
        head: head(200, &[("transfer-encoding", "chunked")]),
        chunk: video(1 << 16),
    })
    .await;
    let started = Instant::now();
    let r = get(&format!("{}/endless", server.url), dir.path(), None, Limits::new(cap)).await;
    assert!(
        matches!(&r, Err(DownloadError::Invalid(m)) if m.contains("limit")),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        server.streamed() < 64 << 20,
        "the client hung up: {}",
        server.streamed()
    );
}

#[tokio::test]
async fn a_trickling_host_is_broken_off_and_the_partial_kept_for_resuming() {
    let server = RawServer::start(|_| Reply::Trickle {
        head: head(200, &[("content-length", "1000000")]),
        every: Duration::from_millis(20),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_bytes: 1 << 20,
        slow_window: Duration::from_millis(400),
        slow_min_bytes: 1024,
    };
    let started = Instant::now();
    let r = get(&format!("{}/slow", server.url), dir.path(), None, limits).await;
    let took = started.elapsed();
    assert!(
        matches!(&r, Err(DownloadError::Remote(m)) if m.contains("too slow")),
        "{r:?}"
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let part = download::part_path(dir.path(), "clip", RID);
    let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0 && kept < 1024, "{kept} bytes kept in {}", part.display());
}

#[tokio::test]
async fn content_length_lies_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    // Promises more than it sends, then closes: a broken transfer (kept for resuming), no video.
    let server = RawServer::start(|_| {
        let mut h = head(200, &[("content-length", "100000")]);
        h.extend_from_slice(&video(1000));
        Reply::Raw(h)
    })
    .await;
    let r = get(&format!("{}/short", server.url), dir.path(), None, Limits::new(1 << 20)).await;
    assert!(
        matches!(&r, Err(DownloadError::Remote(m)) if m.contains("broke")),
        "{r:?}"
    );
    assert!(!download::final_path(dir.path(), "clip").exists());
    download::remove_part(dir.path(), "clip", RID).await;
    // Announces less than it sends: only the announced bytes are read, and the API's file_size
    // shows the video is cut short.
    let server = RawServer::start(|_| {
        let mut h = head(200, &[("content-length", "500")]);
        h.extend_from_slice(&video(1000));
        Reply::Raw(h)
    })
    .await;
    let r = get(
        &format!("{}/long", server.url),
        dir.path(),
        Some(1000),
        Limits::new(1 << 20),
    )
    .await;
    assert!(
        matches!(&r, Err(DownloadError::Invalid(m)) if m.contains("file_size")),
        "{r:?}"
    );
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
}

/// Files of the right size that are not videos: an MP4 whose `moov` box is missing, and one cut
/// in the middle of its samples (the length the host announces matches what it sends). Both are
/// refused as invalid, and neither is left where a video would be.
#[tokio::test]
async fn well_sized_files_that_are_not_playable_videos_are_refused() {
    let good = real_video();
    // Rename the moov box: same size, every byte present, no movie header to play it by.
    let mut no_moov = good.clone();
    let at = no_moov
        .windows(4)
        .position(|w| w == b"moov")
        .expect("the video has a moov box");
    no_moov[at..at + 4].copy_from_slice(b"free");
    // Cut mid-samples: the mdat is where the frames are; keep the first half of the file only.
    let cut = good[..good.len() / 2].to_vec();
    // Cut mid-samples with the mdat's own size rewritten to match: every box is whole, the
    // sample tables point past the end of the data.
    let mut consistent = cut.clone();
    let mdat = consistent.windows(4).rposition(|w| w == b"mdat").expect("an mdat box") - 4;
    let size = (consistent.len() - mdat) as u32;
    consistent[mdat..mdat + 4].copy_from_slice(&size.to_be_bytes());
    for (name, bytes, why) in [
        ("no-moov", no_moov, "moov"),
        ("cut", cut, ""),
        ("cut-whole-boxes", consistent, "sample"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let len = bytes.len() as u64;
        let server = RawServer::start(move |_| Reply::Raw(http(200, &[], &bytes))).await;
        let r = get(
            &format!("{}/{name}.mp4", server.url),
            dir.path(),
            Some(len),
            Limits::new(1 << 20),
        )
        .await;
        assert!(
            matches!(&r, Err(DownloadError::Invalid(m)) if m.contains(why)),
            "{name}: {r:?}"
        );
        assert!(!download::final_path(dir.path(), "clip").exists(), "{name}");
    }
}
