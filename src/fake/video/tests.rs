//! Tests of the generator: the spec mapping, determinism, sizes, padding, what the boxes say,
//! and that the crate's MP4 verifier accepts every variant with the right metadata.

use super::*;
use crate::mp4check::{Mp4Check, VideoInfo};
use serde_json::json;

fn verify(bytes: &[u8]) -> VideoInfo {
    let mut check = Mp4Check::new();
    check.update(bytes);
    check.finish().expect("generated video must pass the MP4 check")
}

fn spec(width: u32, height: u32, frames: u32, fps: u32) -> VideoSpec {
    VideoSpec {
        width,
        height,
        frames,
        fps,
        seed: 7,
        min_len: 0,
    }
}

/// The payload of the first box of type `kind` found anywhere in the file (test files only).
fn find_box<'a>(file: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
    let at = file.windows(4).position(|w| w == kind).expect("box present");
    let size = u32::from_be_bytes(file[at - 4..at].try_into().unwrap()) as usize;
    &file[at + 4..at - 4 + size]
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn spec_for_maps_resolution_and_aspect_like_the_model() {
    let cases = [
        ("480p", "16:9", 832, 480),
        ("480p", "9:16", 480, 832),
        ("720p", "16:9", 1280, 720),
        ("720p", "9:16", 720, 1280),
    ];
    for (res, aspect, w, h) in cases {
        let body = json!({"resolution": res, "aspect_ratio": aspect, "num_frames": 100, "frames_per_second": 24});
        let s = spec_for(&body, "id", 5);
        assert_eq!(
            (s.width, s.height, s.frames, s.fps, s.min_len),
            (w, h, 100, 24, 5),
            "{res} {aspect}"
        );
    }
    let d = spec_for(&json!({"prompt": "x"}), "id", 0);
    assert_eq!((d.width, d.height, d.frames, d.fps), (832, 480, 81, 16));
    // Unusable values fall back to the defaults rather than rendering something absurd.
    let bad = spec_for(
        &json!({"num_frames": "81", "frames_per_second": 0, "resolution": 720}),
        "id",
        0,
    );
    assert_eq!((bad.width, bad.frames, bad.fps), (832, 81, 16));
    assert_eq!(
        spec_for(&json!({}), "a", 0).seed,
        spec_for(&json!({"x": 1}), "a", 0).seed
    );
    assert_ne!(spec_for(&json!({}), "a", 0).seed, spec_for(&json!({}), "b", 0).seed);
}

#[test]
fn rendering_is_deterministic_and_differs_per_seed() {
    let s = spec(320, 176, 12, 16);
    let a = render(&s);
    assert_eq!(a, render(&s));
    let b = render(&VideoSpec { seed: 8, ..s.clone() });
    assert_ne!(a, b);
    assert_eq!(verify(&a), verify(&b));
}

#[test]
fn model_sizes_play_with_the_right_metadata_and_stay_small() {
    for (w, h) in [(832, 480), (480, 832), (1280, 720), (720, 1280)] {
        for (frames, fps) in [(81, 16), (100, 5), (81, 24)] {
            let bytes = render(&VideoSpec {
                seed: u64::from(w * frames + fps),
                ..spec(w, h, frames, fps)
            });
            let info = verify(&bytes);
            assert_eq!((info.width, info.height, info.frames), (w, h, u64::from(frames)));
            assert_eq!(info.codec, "avc1");
            assert!((info.fps - f64::from(fps)).abs() < 1e-9, "{info:?}");
            assert!((info.duration_secs - f64::from(frames) / f64::from(fps)).abs() < 1e-9);
            assert!(bytes.len() < 80_000, "{w}x{h} {frames} frames: {} bytes", bytes.len());
        }
    }
}

#[test]
fn boxes_carry_frame_count_timescale_and_faststart_order() {
    let bytes = render(&spec(832, 480, 81, 16));
    let top: Vec<&[u8]> = {
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < bytes.len() {
            kinds.push(&bytes[at + 4..at + 8]);
            at += be32(&bytes, at) as usize;
        }
        kinds
    };
    assert_eq!(top, [b"ftyp", b"moov", b"mdat"]);
    let mdhd = find_box(&bytes, b"mdhd");
    assert_eq!((be32(mdhd, 12), be32(mdhd, 16)), (16_000, 81_000));
    let stts = find_box(&bytes, b"stts");
    assert_eq!((be32(stts, 4), be32(stts, 8), be32(stts, 12)), (1, 81, 1000));
    assert_eq!(be32(find_box(&bytes, b"stsz"), 8), 81);
    let stss = find_box(&bytes, b"stss");
    assert_eq!(
        (be32(stss, 4), be32(stss, 8)),
        (1, 1),
        "only the first frame is a key frame"
    );
    let mvhd = find_box(&bytes, b"mvhd");
    assert_eq!((be32(mvhd, 12), be32(mvhd, 16)), (1000, 5062));
    // avcC carries Constrained Baseline (profile 66, constraint_set1) and 4-byte lengths.
    let avcc = find_box(&bytes, b"avcC");
    assert_eq!((avcc[1], avcc[2] & 0x40, avcc[4] & 3), (66, 0x40, 3));
}

#[test]
fn padding_reaches_min_len_and_keeps_the_video_intact() {
    let base = spec(832, 480, 81, 16);
    let plain = render(&base);
    let plain_info = verify(&plain);
    for min_len in [2_000_000, plain.len() + 1, plain.len() + 8, plain.len() + 9] {
        let padded = render(&VideoSpec {
            min_len,
            ..base.clone()
        });
        assert!(
            padded.len() >= min_len && padded.len() <= min_len.max(plain.len() + 8),
            "{min_len}"
        );
        assert_eq!(&padded[..plain.len()], &plain[..], "padding only appends a free box");
        assert_eq!(&padded[plain.len() + 4..plain.len() + 8], b"free");
        assert_eq!(verify(&padded), plain_info);
    }
    assert_eq!(
        render(&VideoSpec {
            min_len: plain.len(),
            ..base.clone()
        }),
        plain
    );
    assert_eq!(render(&VideoSpec { min_len: 10, ..base }), plain);
}

#[test]
fn odd_sizes_are_cropped_and_out_of_range_values_normalised() {
    let info = verify(&render(&spec(100, 50, 3, 10)));
    assert_eq!((info.width, info.height, info.frames), (100, 50, 3));
    let info = verify(&render(&spec(101, 0, 0, 0)));
    assert_eq!((info.width, info.height, info.frames, info.fps), (102, 16, 1, 1.0));
}

#[test]
fn later_frames_carry_motion_not_just_skips() {
    let bytes = render(&spec(832, 480, 3, 16));
    let stsz = find_box(&bytes, b"stsz");
    let (idr, p1) = (be32(stsz, 12), be32(stsz, 16));
    assert!(idr > 5_000, "the first picture holds the PCM blocks: {idr}");
    // Every band's first row and every wrapping edge block is coded: far more than an all-skip
    // picture (a few bytes per slice).
    assert!(p1 > 60 && p1 < 1_000, "{p1}");
}

/// Writes every variant to `$WANBATCH_VIDEO_OUT` for checking with ffprobe/ffmpeg by hand:
/// `WANBATCH_VIDEO_OUT=/tmp/v cargo test --lib fake::video::tests::write_samples -- --ignored`
#[test]
#[ignore]
fn write_samples() {
    let Ok(dir) = std::env::var("WANBATCH_VIDEO_OUT") else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    for (res, aspect) in [("480p", "16:9"), ("480p", "9:16"), ("720p", "16:9"), ("720p", "9:16")] {
        for (frames, fps) in [(81, 16), (100, 5), (81, 24)] {
            for min_len in [0, 2_000_000] {
                let body = json!({"resolution": res, "aspect_ratio": aspect,
                    "num_frames": frames, "frames_per_second": fps});
                let spec = spec_for(&body, &format!("req-{res}-{aspect}-{frames}-{fps}"), min_len);
                let name = format!(
                    "{dir}/{res}_{}_{frames}f_{fps}fps_{min_len}.mp4",
                    aspect.replace(':', "x")
                );
                std::fs::write(name, render(&spec)).unwrap();
            }
        }
    }
    std::fs::write(format!("{dir}/odd_100x50.mp4"), render(&spec(100, 50, 30, 10))).unwrap();
}
