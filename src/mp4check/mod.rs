//! Streaming MP4 completeness check: is this download a whole, playable-looking video?
//!
//! [`Mp4Check`] is fed the file in order, in chunks of any size, as it arrives (from disk, the
//! network, or on its way to object storage), and [`Mp4Check::finish`] says whether the file is
//! complete: its top-level boxes tile it exactly, it has a `moov` with a video track, and every
//! sample of every track lies inside an `mdat` within the file. It then reports the video's
//! size, frame count, duration and codec.
//!
//! Owns: the top-level box walk (here), the `moov` parse (`moov`, through Mozilla's `mp4parse`)
//! and the sample-table arithmetic (`samples`). Invariants: memory stays bounded whatever the
//! input (top-level headers are not kept, only `mdat` ranges, at most [`MAX_MDATS`], and the
//! `moov` payload, at most [`MOOV_CAP`] bytes); hostile input yields an error, never a panic,
//! an overflow or an unbounded allocation.

mod moov;
mod samples;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hostile;

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest `moov` payload accepted (real ones are kilobytes to a few megabytes).
pub const MOOV_CAP: u64 = 64 << 20;
/// Most `mdat` boxes accepted (real files have one, rarely a few).
pub const MAX_MDATS: usize = 4096;

/// Box types an MP4 (or QuickTime) file can start with; anything else is another format
/// (an HTML error page, a PNG, random bytes) even if its first bytes happen to look like a box.
const FIRST_BOXES: [&[u8; 4]; 9] = [
    b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid",
];

/// What a complete video file says about its first video track.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// Samples of the video track (one per frame).
    pub frames: u64,
    /// `frames / duration_secs`.
    pub fps: f64,
    /// From the track's `mdhd` (or its `stts` when `mdhd` gives none).
    pub duration_secs: f64,
    /// The sample entry's four-character code, e.g. `avc1`, `hvc1`, `av01`.
    pub codec: String,
}

/// Why a file is not a complete video. Messages are meant for users.
#[derive(Debug, thiserror::Error)]
pub enum Mp4Error {
    #[error("the file is empty")]
    Empty,
    #[error("not an MP4: no valid box at byte {at} (the file is damaged or another format)")]
    NotMp4 { at: u64 },
    #[error("the {kind} box at byte {at} announces an impossible size of {size} bytes")]
    BadBoxSize { kind: String, at: u64, size: u64 },
    #[error("cut in the middle of a box header at byte {at}: the file is incomplete")]
    CutInHeader { at: u64 },
    #[error("cut in the middle: the {kind} box announces {announced} bytes but only {arrived} arrived")]
    Truncated { kind: String, announced: u64, arrived: u64 },
    #[error("no moov box: the file is incomplete or not an MP4")]
    NoMoov,
    #[error("two moov boxes: the file is damaged")]
    TwoMoov,
    #[error("the moov box is {size} bytes, more than the {cap}-byte limit")]
    MoovTooLarge { size: u64, cap: u64 },
    #[error("more than {max} mdat boxes")]
    TooManyMdats { max: usize },
    #[error("fragmented MP4 (moof boxes) is not supported")]
    Fragmented,
    #[error("the moov box is malformed: {0}")]
    Malformed(String),
    #[error("no video track in the moov box")]
    NoVideoTrack,
    #[error("the video track has no frames")]
    NoFrames,
    #[error("track {track}: the sample tables are inconsistent: {detail}")]
    SampleTable { track: usize, detail: String },
    #[error("track {track}: sample {index} of {count} lies past the end of the file")]
    SamplePastEnd { track: usize, index: u64, count: u64 },
    #[error("track {track}: sample {index} of {count} lies outside every mdat box")]
    SampleOutsideMdat { track: usize, index: u64, count: u64 },
    #[error("the video track's duration is unusable: {0}")]
    BadDuration(String),
    #[error("could not read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The box whose body is being consumed.
struct Current {
    kind: [u8; 4],
    start: u64,
    /// None: the box runs to the end of the file (size 0).
    end: Option<u64>,
    /// Its payload is the moov, kept for parsing.
    keep: bool,
}

/// Streaming checker; see the module doc.
pub struct Mp4Check {
    /// Bytes consumed so far.
    pos: u64,
    /// Header bytes of the next box gathered so far (8, or 16 with a 64-bit size).
    header: [u8; 16],
    header_len: usize,
    current: Option<Current>,
    /// Payload ranges of the mdat boxes (end None: to the end of the file), in file order.
    mdats: Vec<(u64, Option<u64>)>,
    moov: Option<Vec<u8>>,
    error: Option<Mp4Error>,
}

impl Default for Mp4Check {
    fn default() -> Self {
        Self::new()
    }
}

impl Mp4Check {
    pub fn new() -> Self {
        Mp4Check {
            pos: 0,
            header: [0; 16],
            header_len: 0,
            current: None,
            mdats: Vec::new(),
            moov: None,
            error: None,
        }
    }

    /// Feeds the next bytes of the file. After the first error the rest is ignored.
    pub fn update(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && self.error.is_none() {
            let taken = if self.current.is_some() {
                self.consume_body(chunk)
            } else {
                self.consume_header(chunk)
            };
            chunk = &chunk[taken..];
        }
    }

    /// Takes body bytes of the current box; returns how many.
    fn consume_body(&mut self, chunk: &[u8]) -> usize {
        let Some(cur) = &self.current else { return 0 };
        let take = match cur.end {
            Some(end) => usize::try_from(end - self.pos).map_or(chunk.len(), |left| left.min(chunk.len())),
            None => chunk.len(),
        };
        if cur.keep {
            let moov = self.moov.get_or_insert_with(Vec::new);
            if moov.len() as u64 + take as u64 > MOOV_CAP {
                let size = (moov.len() + take) as u64;
                self.error = Some(Mp4Error::MoovTooLarge { size, cap: MOOV_CAP });
                return take;
            }
            moov.extend_from_slice(&chunk[..take]);
        }
        self.pos += take as u64;
        if cur.end == Some(self.pos) {
            self.current = None;
        }
        take
    }

    /// Gathers header bytes; once complete, opens the box. Returns how many bytes it took.
    fn consume_header(&mut self, chunk: &[u8]) -> usize {
        let need = if self.header_len >= 8 && self.size32() == 1 {
            16
        } else {
            8
        };
        let take = (need - self.header_len).min(chunk.len());
        self.header[self.header_len..self.header_len + take].copy_from_slice(&chunk[..take]);
        self.header_len += take;
        self.pos += take as u64;
        if self.header_len == 8 && self.size32() == 1 {
            return take; // a 64-bit size follows
        }
        if self.header_len == need {
            if let Err(e) = self.open_box() {
                self.error = Some(e);
            }
            self.header_len = 0;
        }
        take
    }

    fn size32(&self) -> u32 {
        u32::from_be_bytes([self.header[0], self.header[1], self.header[2], self.header[3]])
    }

    fn open_box(&mut self) -> Result<(), Mp4Error> {
        let start = self.pos - self.header_len as u64;
        let kind = [self.header[4], self.header[5], self.header[6], self.header[7]];
        let plausible = match start {
            0 => FIRST_BOXES.contains(&&kind),
            _ => kind.iter().all(|c| (0x20..=0x7e).contains(c)),
        };
        if !plausible {
            return Err(Mp4Error::NotMp4 { at: start });
        }
        let size = match self.size32() {
            0 => None,
            1 => Some(u64::from_be_bytes(self.header[8..16].try_into().unwrap_or([0; 8]))),
            n => Some(u64::from(n)),
        };
        let end = match size {
            None => None,
            Some(size) if size < self.header_len as u64 => {
                return Err(Mp4Error::BadBoxSize {
                    kind: fourcc(&kind),
                    at: start,
                    size,
                });
            }
            Some(size) => Some(start.checked_add(size).ok_or(Mp4Error::BadBoxSize {
                kind: fourcc(&kind),
                at: start,
                size,
            })?),
        };
        let keep = &kind == b"moov";
        match &kind {
            b"moov" if self.moov.is_some() => return Err(Mp4Error::TwoMoov),
            b"moov" => {
                let payload = end.map(|e| e - self.pos);
                if let Some(size) = payload.filter(|p| *p > MOOV_CAP) {
                    return Err(Mp4Error::MoovTooLarge { size, cap: MOOV_CAP });
                }
                // Reserve a little: the announced size is not trusted until the bytes arrive.
                self.moov = Some(Vec::with_capacity(payload.unwrap_or(0).min(1 << 20) as usize));
            }
            b"mdat" if self.mdats.len() >= MAX_MDATS => return Err(Mp4Error::TooManyMdats { max: MAX_MDATS }),
            b"mdat" => self.mdats.push((self.pos, end)),
            b"moof" => return Err(Mp4Error::Fragmented),
            _ => {}
        }
        self.current = (end != Some(self.pos)).then_some(Current { kind, start, end, keep });
        Ok(())
    }

    /// Call after the last byte: is the file a complete video, and what does it hold?
    pub fn finish(self) -> Result<VideoInfo, Mp4Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.pos == 0 {
            return Err(Mp4Error::Empty);
        }
        if self.header_len > 0 {
            return Err(Mp4Error::CutInHeader {
                at: self.pos - self.header_len as u64,
            });
        }
        if let Some(Current {
            kind,
            start,
            end: Some(end),
            ..
        }) = &self.current
        {
            return Err(Mp4Error::Truncated {
                kind: fourcc(kind),
                announced: end - start,
                arrived: self.pos - start,
            });
        }
        let moov = self.moov.ok_or(Mp4Error::NoMoov)?;
        let tracks = moov::parse(&moov)?;
        let file_len = self.pos;
        for (n, track) in tracks.iter().enumerate() {
            samples::check(n + 1, track, &self.mdats, file_len)?;
        }
        moov::video_info(&tracks)
    }
}

/// Streams a file through [`Mp4Check`].
pub fn check_file(path: &Path) -> Result<VideoInfo, Mp4Error> {
    let io = |source| Mp4Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut check = Mp4Check::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => check.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        }
    }
    check.finish()
}

fn fourcc(kind: &[u8; 4]) -> String {
    String::from_utf8_lossy(kind).into_owned()
}
