//! Property test against hostile bytes: a seeded PRNG drives a few thousand cases (random
//! bytes, truncations, byte flips, box-size and table-count corruptions of valid files, fed in
//! random chunks). The check must never panic, must answer the same whatever the chunking, and
//! any file it accepts must have sample tables that really fit in the file (checked by a naive
//! re-expansion through mp4parse over the whole file).

use super::*;
use crate::fake::video::{render, VideoSpec};

/// splitmix64: a tiny deterministic PRNG, so a failure replays from its case number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const BOX_TYPES: [&[u8; 4]; 22] = [
    b"ftyp", b"moov", b"mvhd", b"trak", b"tkhd", b"mdia", b"mdhd", b"hdlr", b"minf", b"vmhd", b"dinf", b"dref",
    b"stbl", b"stsd", b"avc1", b"avcC", b"stts", b"stss", b"stsc", b"stsz", b"stco", b"mdat",
];
const TABLES: [&[u8; 4]; 5] = [b"stts", b"stss", b"stsc", b"stsz", b"stco"];

/// Start offsets of boxes of these types in a valid file (by scanning; the mdat payload is
/// excluded since the generated files keep it last).
fn box_starts(file: &[u8], kinds: &[&[u8; 4]]) -> Vec<usize> {
    let limit = file.windows(4).rposition(|w| w == b"mdat").unwrap_or(file.len());
    (4..=limit)
        .filter(|&i| kinds.iter().any(|k| &file[i..i + 4] == *k))
        .map(|i| i - 4)
        .collect()
}

fn feed(bytes: &[u8], rng: &mut Rng) -> (Result<VideoInfo, Mp4Error>, Result<VideoInfo, Mp4Error>) {
    let mut whole = Mp4Check::new();
    whole.update(bytes);
    let mut chunked = Mp4Check::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = if rng.below(8) == 0 {
            1 + rng.below(4096)
        } else {
            1 + rng.below(40)
        };
        let (a, b) = rest.split_at(n.min(rest.len()));
        chunked.update(a);
        rest = b;
    }
    (whole.finish(), chunked.finish())
}

/// The moov box of an accepted file, re-headed with a plain 32-bit size (mp4parse cannot skip
/// a size-0 top-level box, so it is given only the moov).
fn moov_of(bytes: &[u8]) -> Vec<u8> {
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let size = match u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) {
            0 => (bytes.len() - at) as u64,
            1 => u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap()),
            n => u64::from(n),
        } as usize;
        let header = if u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) == 1 {
            16
        } else {
            8
        };
        if &bytes[at + 4..at + 8] == b"moov" {
            let payload = &bytes[at + header..at + size];
            return [&(payload.len() as u32 + 8).to_be_bytes()[..], b"moov", payload].concat();
        }
        at += size;
    }
    panic!("accepted file without moov");
}

/// Naive re-expansion of every track's samples over the whole file, through mp4parse alone.
fn assert_samples_fit(bytes: &[u8], info: &VideoInfo) {
    let context = mp4parse::read_mp4(&mut std::io::Cursor::new(moov_of(bytes))).expect("accepted moov parses");
    assert!(
        info.frames >= 1 && info.duration_secs > 0.0 && info.fps.is_finite() && info.fps > 0.0,
        "{info:?}"
    );
    for track in context.tracks.iter() {
        let (Some(stsz), Some(stsc), Some(stco)) = (&track.stsz, &track.stsc, &track.stco) else {
            continue;
        };
        let mut sample = 0usize;
        for (c, offset) in stco.offsets.iter().enumerate() {
            let Some(entry) = stsc.samples.iter().filter(|e| e.first_chunk as usize <= c + 1).last() else {
                continue;
            };
            let mut at = *offset;
            for _ in 0..entry.samples_per_chunk {
                let Some(size) = stsz
                    .sample_sizes
                    .get(sample)
                    .copied()
                    .or((stsz.sample_size > 0).then_some(stsz.sample_size))
                else {
                    break;
                };
                at += u64::from(size);
                assert!(
                    at <= bytes.len() as u64,
                    "accepted file has sample {sample} past its end"
                );
                sample += 1;
                if stsz.sample_size == 0 && sample == stsz.sample_sizes.len() {
                    break;
                }
            }
        }
    }
}

#[test]
fn hostile_bytes_never_panic_and_accepted_files_are_consistent() {
    let bases = [
        render(&VideoSpec {
            width: 64,
            height: 48,
            frames: 6,
            fps: 8,
            seed: 3,
            min_len: 0,
        }),
        render(&VideoSpec {
            width: 320,
            height: 240,
            frames: 4,
            fps: 24,
            seed: 4,
            min_len: 7000,
        }),
    ];
    let mut rng = Rng(0x00c0_ffee);
    let (mut accepted, mut cases) = (0, 0);
    for case in 0..3000 {
        let base = &bases[case % bases.len()];
        let mut bytes = base.clone();
        match rng.below(7) {
            0 => {
                bytes = (0..rng.below(600)).map(|_| rng.next() as u8).collect();
                if rng.below(2) == 0 {
                    bytes.splice(0..0, base[..32].iter().copied());
                }
            }
            1 => bytes.truncate(rng.below(base.len() + 1)),
            2 | 3 => {
                // Flips, mostly inside the moov where they matter most.
                let moov_end = box_starts(base, &[b"mdat"]).last().copied().unwrap_or(base.len());
                for _ in 0..1 + rng.below(8) {
                    let at = if rng.below(4) == 0 {
                        rng.below(bytes.len())
                    } else {
                        rng.below(moov_end)
                    };
                    bytes[at] = rng.next() as u8;
                }
            }
            4 => {
                let starts = box_starts(base, &BOX_TYPES);
                let at = starts[rng.below(starts.len())];
                let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
                let choices = [
                    0,
                    1,
                    7,
                    8,
                    size.wrapping_sub(1),
                    size.wrapping_add(1),
                    rng.next() as u32,
                    u32::MAX,
                ];
                bytes[at..at + 4].copy_from_slice(&choices[rng.below(choices.len())].to_be_bytes());
            }
            5 => {
                let starts = box_starts(base, &TABLES);
                let at = starts[rng.below(starts.len())] + 12 + 4 * rng.below(2);
                let choices = [0, 1, 2, rng.next() as u32, u32::MAX, 0x4000_0000];
                bytes[at..at + 4].copy_from_slice(&choices[rng.below(choices.len())].to_be_bytes());
            }
            _ => {
                let starts = box_starts(base, &BOX_TYPES);
                let at = starts[rng.below(starts.len())];
                bytes[at + 3] ^= 1 << rng.below(8);
                bytes.truncate(bytes.len() - rng.below(bytes.len() / 2));
            }
        }
        let (whole, chunked) = feed(&bytes, &mut rng);
        assert_eq!(
            format!("{whole:?}"),
            format!("{chunked:?}"),
            "case {case}: chunking changed the answer"
        );
        if let Ok(info) = &whole {
            assert_samples_fit(&bytes, info);
            accepted += 1;
        }
        cases += 1;
    }
    // Some corruptions (a flipped reserved byte, a padding change) leave a valid file; most don't.
    assert!(accepted > 0 && accepted < cases / 2, "{accepted} of {cases} accepted");
}
