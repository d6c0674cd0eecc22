//! Tests of the MP4 check: it accepts every generated video with the right metadata, in any
//! layout and chunking, and rejects incomplete or foreign files with a readable reason.

use super::*;
use crate::fake::video::{render, VideoSpec};

fn check_bytes(bytes: &[u8]) -> Result<VideoInfo, Mp4Error> {
    let mut c = Mp4Check::new();
    c.update(bytes);
    c.finish()
}

fn video(width: u32, height: u32, frames: u32, fps: u32) -> Vec<u8> {
    render(&VideoSpec {
        width,
        height,
        frames,
        fps,
        seed: 42,
        min_len: 0,
    })
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Offset of the first occurrence of a box type's four bytes (test files only).
fn find(file: &[u8], kind: &[u8; 4]) -> usize {
    file.windows(4).position(|w| w == kind).expect("box present")
}

/// Top-level boxes of a well-formed file: (start, size).
fn top_level(file: &[u8]) -> Vec<(usize, usize)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < file.len() {
        let size = be32(file, at) as usize;
        out.push((at, size));
        at += size;
    }
    out
}

#[test]
fn accepts_every_generated_variant_with_its_metadata() {
    for (w, h) in [(832, 480), (480, 832), (1280, 720), (720, 1280)] {
        for (frames, fps) in [(81, 16), (100, 24), (81, 5)] {
            for min_len in [0, 300_000] {
                let bytes = render(&VideoSpec {
                    width: w,
                    height: h,
                    frames,
                    fps,
                    seed: 1,
                    min_len,
                });
                let info = check_bytes(&bytes).unwrap();
                assert_eq!((info.width, info.height, info.frames), (w, h, u64::from(frames)));
                assert!((info.fps - f64::from(fps)).abs() < 1e-9);
                assert!((info.duration_secs - f64::from(frames) / f64::from(fps)).abs() < 1e-9);
                assert_eq!(info.codec, "avc1");
            }
        }
    }
}

#[test]
fn any_chunking_gives_the_same_answer() {
    let bytes = video(320, 240, 20, 16);
    let whole = check_bytes(&bytes).unwrap();
    for step in [1, 3, 7, 8, 9, 16, 17, 4096] {
        let mut c = Mp4Check::new();
        for chunk in bytes.chunks(step) {
            c.update(chunk);
        }
        assert_eq!(c.finish().unwrap(), whole, "chunks of {step}");
    }
}

#[test]
fn rejects_the_old_placeholder_of_the_same_length() {
    let real = video(832, 480, 81, 16);
    let fake = crate::fake::video_bytes("job-1", real.len());
    let err = check_bytes(&fake).unwrap_err();
    assert!(matches!(err, Mp4Error::NoMoov), "{err}");
    assert_eq!(err.to_string(), "no moov box: the file is incomplete or not an MP4");
}

#[test]
fn rejects_a_video_cut_in_the_middle_of_its_samples() {
    let bytes = video(832, 480, 81, 16);
    let (mdat_at, mdat_size) = *top_level(&bytes).last().unwrap();
    let cut = mdat_at + mdat_size / 2;
    let err = check_bytes(&bytes[..cut]).unwrap_err();
    match &err {
        Mp4Error::Truncated {
            kind,
            announced,
            arrived,
        } => {
            assert_eq!(
                (kind.as_str(), *announced, *arrived),
                ("mdat", mdat_size as u64, (cut - mdat_at) as u64)
            );
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string().starts_with("cut in the middle: the mdat box announces"),
        "{err}"
    );
}

#[test]
fn rejects_an_mdat_one_byte_short() {
    let bytes = video(480, 832, 81, 16);
    let err = check_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(
        matches!(err, Mp4Error::Truncated { ref kind, announced, arrived } if kind == "mdat" && arrived + 1 == announced),
        "{err}"
    );
}

#[test]
fn an_mdat_running_to_the_end_is_checked_sample_by_sample() {
    let mut bytes = video(832, 480, 81, 16);
    let (mdat_at, _) = *top_level(&bytes).last().unwrap();
    bytes[mdat_at..mdat_at + 4].copy_from_slice(&0u32.to_be_bytes()); // size 0: to end of file
    assert_eq!(check_bytes(&bytes).unwrap().frames, 81);
    // Cut so that the last 41 samples are gone (each P frame is at least a few bytes).
    let stsz = find(&bytes, b"stsz") + 4;
    let tail: usize = (40..81).map(|i| be32(&bytes, stsz + 12 + 4 * i) as usize).sum();
    let err = check_bytes(&bytes[..bytes.len() - tail]).unwrap_err();
    assert!(
        matches!(
            err,
            Mp4Error::SamplePastEnd {
                index: 41,
                count: 81,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "track 1: sample 41 of 81 lies past the end of the file"
    );
}

#[test]
fn rejects_empty_and_foreign_files() {
    assert!(matches!(check_bytes(&[]), Err(Mp4Error::Empty)));
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x02\0\0\0\x90\x91h6";
    let err = check_bytes(png).unwrap_err();
    assert!(matches!(err, Mp4Error::NotMp4 { at: 0 }), "{err}");
    assert!(matches!(check_bytes(b"ftyp"), Err(Mp4Error::CutInHeader { at: 0 })));
    let text = b"<html><body>503 Service Unavailable</body></html>";
    assert!(matches!(check_bytes(text), Err(Mp4Error::NotMp4 { at: 0 })));
}

#[test]
fn moov_after_mdat_is_accepted() {
    let bytes = video(640, 360, 30, 24);
    let boxes = top_level(&bytes);
    let [(_, ftyp), (moov_at, moov_size), (mdat_at, mdat_size)] = boxes[..] else {
        panic!("{boxes:?}")
    };
    let mut moov = bytes[moov_at..moov_at + moov_size].to_vec();
    let stco = find(&moov, b"stco") + 4;
    let offset = be32(&moov, stco + 8) - moov_size as u32;
    moov[stco + 8..stco + 12].copy_from_slice(&offset.to_be_bytes());
    let moved = [&bytes[..ftyp], &bytes[mdat_at..mdat_at + mdat_size], &moov].concat();
    assert_eq!(check_bytes(&moved).unwrap(), check_bytes(&bytes).unwrap());
    // A file cut before its trailing moov has no moov at all.
    let err = check_bytes(&moved[..ftyp + mdat_size]).unwrap_err();
    assert!(matches!(err, Mp4Error::NoMoov), "{err}");
}

#[test]
fn a_64_bit_mdat_size_is_understood() {
    let bytes = video(320, 240, 10, 10);
    let (mdat_at, mdat_size) = *top_level(&bytes).last().unwrap();
    let mut moov_fixed = bytes[..mdat_at].to_vec();
    let stco = find(&moov_fixed, b"stco") + 4;
    let offset = be32(&moov_fixed, stco + 8) + 8;
    moov_fixed[stco + 8..stco + 12].copy_from_slice(&offset.to_be_bytes());
    let mut large = moov_fixed;
    large.extend_from_slice(&1u32.to_be_bytes());
    large.extend_from_slice(b"mdat");
    large.extend_from_slice(&(mdat_size as u64 + 8).to_be_bytes());
    large.extend_from_slice(&bytes[mdat_at + 8..]);
    assert_eq!(check_bytes(&large).unwrap(), check_bytes(&bytes).unwrap());
}

#[test]
fn sample_tables_are_checked_against_the_file() {
    let bytes = video(320, 240, 10, 10);
    // A chunk offset pointing into the moov: inside the file, outside every mdat.
    let mut bad = bytes.clone();
    let stco = find(&bad, b"stco") + 4;
    bad[stco + 8..stco + 12].copy_from_slice(&40u32.to_be_bytes());
    let err = check_bytes(&bad).unwrap_err();
    assert!(
        matches!(
            err,
            Mp4Error::SampleOutsideMdat {
                index: 1,
                count: 10,
                ..
            }
        ),
        "{err}"
    );
    // stts describing fewer samples than stsz has.
    let mut bad = bytes.clone();
    let stts = find(&bad, b"stts") + 4;
    bad[stts + 8..stts + 12].copy_from_slice(&9u32.to_be_bytes());
    let err = check_bytes(&bad).unwrap_err();
    assert!(
        err.to_string().contains("stts describes 9 samples but stsz has 10"),
        "{err}"
    );
    // A sample size running past the file's end.
    let mut bad = bytes.clone();
    let stsz = find(&bad, b"stsz") + 4;
    bad[stsz + 12 + 4 * 9..stsz + 16 + 4 * 9].copy_from_slice(&u32::MAX.to_be_bytes());
    let err = check_bytes(&bad).unwrap_err();
    assert!(matches!(err, Mp4Error::SamplePastEnd { index: 10, .. }), "{err}");
    // A table whose count claims more entries than its box holds never reaches mp4parse.
    let mut bad = bytes;
    bad[stsz + 8..stsz + 12].copy_from_slice(&0x4000_0000u32.to_be_bytes());
    let err = check_bytes(&bad).unwrap_err();
    assert!(matches!(err, Mp4Error::Malformed(_)), "{err}");
}

#[test]
fn forged_sample_counts_are_answered_at_once() {
    // Four billion 1-byte samples in one chunk: stsz (constant size), stts and stsc agree.
    let mut bytes = video(320, 240, 10, 10);
    let stsz = find(&bytes, b"stsz") + 4;
    bytes[stsz + 4..stsz + 12].copy_from_slice(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
    let stts = find(&bytes, b"stts") + 4;
    bytes[stts + 8..stts + 12].copy_from_slice(&u32::MAX.to_be_bytes());
    let stsc = find(&bytes, b"stsc") + 4;
    bytes[stsc + 12..stsc + 16].copy_from_slice(&u32::MAX.to_be_bytes());
    let started = std::time::Instant::now();
    let err = check_bytes(&bytes).unwrap_err();
    // The mdat holds exactly as many bytes as fit; the next sample is the first past the end.
    let mdat_payload = top_level(&bytes)[2].1 as u64 - 8;
    assert!(
        matches!(err, Mp4Error::SamplePastEnd { index, count: 0xffff_ffff, .. } if index == mdat_payload + 1),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn structural_limits_are_enforced_as_bytes_arrive() {
    let mut c = Mp4Check::new();
    c.update(&[&(MOOV_CAP as u32 + 9).to_be_bytes()[..], b"moov"].concat());
    assert!(matches!(c.finish(), Err(Mp4Error::MoovTooLarge { .. })));
    let moof = [&[0, 0, 0, 8][..], b"ftyp", &16u32.to_be_bytes(), b"moof", &[0; 8]].concat();
    assert!(matches!(check_bytes(&moof), Err(Mp4Error::Fragmented)));
    let tiny = [&4u32.to_be_bytes()[..], b"free"].concat();
    assert!(matches!(check_bytes(&tiny), Err(Mp4Error::BadBoxSize { size: 4, .. })));
    let huge = [&1u32.to_be_bytes()[..], b"mdat", &u64::MAX.to_be_bytes()].concat();
    let err = check_bytes(&[&[0, 0, 0, 8][..], b"free", &huge].concat()).unwrap_err();
    assert!(matches!(err, Mp4Error::BadBoxSize { at: 8, .. }), "{err}");
}

#[test]
fn the_codec_is_the_sample_entry_code_even_when_mp4parse_does_not_know_it() {
    let mut bytes = video(320, 240, 10, 10);
    let at = find(&bytes, b"stsd") + find(&bytes[find(&bytes, b"stsd")..], b"avc1");
    bytes[at..at + 4].copy_from_slice(b"hvc1");
    let at = find(&bytes, b"avcC");
    bytes[at..at + 4].copy_from_slice(b"hvcC");
    let info = check_bytes(&bytes).unwrap();
    assert_eq!((info.codec.as_str(), info.width, info.frames), ("hvc1", 320, 10));
}

#[test]
fn a_file_without_a_video_track_is_refused() {
    let mut bytes = video(320, 240, 10, 10);
    let at = find(&bytes, b"vide");
    bytes[at..at + 4].copy_from_slice(b"soun");
    let err = check_bytes(&bytes).unwrap_err();
    assert!(matches!(err, Mp4Error::NoVideoTrack | Mp4Error::Malformed(_)), "{err}");
}

#[test]
fn check_file_streams_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.mp4");
    std::fs::write(&path, video(832, 480, 81, 16)).unwrap();
    let info = check_file(&path).unwrap();
    assert_eq!((info.width, info.height, info.frames), (832, 480, 81));
    let err = check_file(&dir.path().join("missing.mp4")).unwrap_err();
    assert!(
        matches!(err, Mp4Error::Io { .. }) && err.to_string().contains("missing.mp4"),
        "{err}"
    );
}
