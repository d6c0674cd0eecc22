//! The `moov` box: a bounds pre-walk of our own, then Mozilla's `mp4parse` for the real parse.
//!
//! The pre-walk checks that every entry count mp4parse reserves memory from while reading a
//! moov (the sample tables, `stsd`, `elst`, `pssh` key ids) fits inside its box before mp4parse
//! sees it, so a forged count cannot ask for gigabytes; and it picks up what mp4parse does not expose: each track's handler, its
//! sample entry's four-character code and coded size (also for codecs mp4parse does not know,
//! such as `hvc1`), and the `stsz` sample count when all samples share one size.

use super::{Mp4Error, VideoInfo};

/// What the pre-walk learns about one `trak`, in file order.
#[derive(Default)]
pub(super) struct TrakFacts {
    pub handler: Option<[u8; 4]>,
    /// Sample entry code, width and height of the first `stsd` entry.
    pub entry: Option<([u8; 4], u16, u16)>,
    pub stsz_count: Option<u32>,
}

/// One track: mp4parse's view plus the pre-walk's facts.
pub(super) struct Track {
    pub parsed: mp4parse::Track,
    pub facts: TrakFacts,
}

fn malformed(what: &str) -> Mp4Error {
    Mp4Error::Malformed(what.to_string())
}

/// Child boxes of a box payload: (type, payload). Sizes must fit inside `data`.
fn children(data: &[u8]) -> impl Iterator<Item = Result<([u8; 4], &[u8]), Mp4Error>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= data.len() {
            return None;
        }
        let rest = &data[pos..];
        if rest.len() < 8 {
            pos = data.len();
            return Some(Err(malformed("a box header is cut short")));
        }
        let kind: [u8; 4] = [rest[4], rest[5], rest[6], rest[7]];
        let (size, header) = match u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) {
            0 => (rest.len() as u64, 8),
            1 if rest.len() >= 16 => (u64::from_be_bytes(rest[8..16].try_into().unwrap_or([0; 8])), 16),
            1 => (0, 16),
            n => (u64::from(n), 8),
        };
        if size < header as u64 || size > rest.len() as u64 {
            pos = data.len();
            return Some(Err(Mp4Error::Malformed(format!(
                "the {} box's size does not fit inside its parent",
                String::from_utf8_lossy(&kind)
            ))));
        }
        pos += size as usize;
        Some(Ok((kind, &rest[header..size as usize])))
    })
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Checks a full box table: `count` at `count_at`, then `count` entries of `entry` bytes.
fn table_fits(kind: &[u8; 4], data: &[u8], count_at: usize, entry: u64) -> Result<u32, Mp4Error> {
    let bad = || {
        Mp4Error::Malformed(format!(
            "the {} table is longer than its box",
            String::from_utf8_lossy(kind)
        ))
    };
    let count = be32(data, count_at).ok_or_else(bad)?;
    let need = u64::from(count) * entry + count_at as u64 + 4;
    if need > data.len() as u64 {
        return Err(bad());
    }
    Ok(count)
}

fn walk_trak(trak: &[u8]) -> Result<TrakFacts, Mp4Error> {
    let mut facts = TrakFacts::default();
    for mdia in children(trak) {
        let (kind, mdia) = mdia?;
        if &kind == b"edts" {
            for elst in children(mdia) {
                match elst? {
                    (k, data) if &k == b"elst" => {
                        let entry = if data.first() == Some(&1) { 20 } else { 12 };
                        table_fits(&k, data, 4, entry)?;
                    }
                    _ => {}
                }
            }
        }
        if &kind != b"mdia" {
            continue;
        }
        for child in children(mdia) {
            match child? {
                (k, hdlr) if &k == b"hdlr" => facts.handler = hdlr.get(8..12).and_then(|h| h.try_into().ok()),
                (k, minf) if &k == b"minf" => {
                    for stbl in children(minf) {
                        let (k, stbl) = stbl?;
                        if &k == b"stbl" {
                            walk_stbl(stbl, &mut facts)?;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(facts)
}

fn walk_stbl(stbl: &[u8], facts: &mut TrakFacts) -> Result<(), Mp4Error> {
    for table in children(stbl) {
        let (kind, data) = table?;
        match &kind {
            b"stts" | b"ctts" => drop(table_fits(&kind, data, 4, 8)?),
            b"stss" | b"stco" => drop(table_fits(&kind, data, 4, 4)?),
            b"stsc" => drop(table_fits(&kind, data, 4, 12)?),
            b"co64" => drop(table_fits(&kind, data, 4, 8)?),
            b"stsz" => {
                let constant = be32(data, 4).ok_or_else(|| malformed("the stsz box is cut short"))?;
                let entry = if constant == 0 { 4 } else { 0 };
                facts.stsz_count = Some(table_fits(&kind, data, 8, entry)?);
            }
            b"stsd" => {
                table_fits(&kind, data, 4, 8)?; // every entry is a box of at least 8 bytes
                if let Some(first) = children(&data[8..]).next() {
                    let (code, entry) = first?;
                    let dim = |at| entry.get(at..at + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                    facts.entry = Some((code, dim(24), dim(26)));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses a moov payload into its tracks.
pub(super) fn parse(payload: &[u8]) -> Result<Vec<Track>, Mp4Error> {
    let mut facts = Vec::new();
    for child in children(payload) {
        let (kind, data) = child?;
        match &kind {
            b"trak" => facts.push(walk_trak(data)?),
            b"mvex" => return Err(Mp4Error::Fragmented),
            b"pssh" if data.first().is_some_and(|v| *v > 0) => drop(table_fits(&kind, data, 20, 16)?),
            _ => {}
        }
    }
    let header = [&(payload.len() as u32 + 8).to_be_bytes()[..], b"moov"].concat();
    let mut reader = std::io::Read::chain(&header[..], payload);
    let context = mp4parse::read_mp4(&mut reader).map_err(|e| Mp4Error::Malformed(format!("{e:?}")))?;
    if context.tracks.len() != facts.len() {
        return Err(malformed("its tracks could not all be read"));
    }
    let parsed: Vec<mp4parse::Track> = context.tracks.into_iter().collect();
    Ok(parsed
        .into_iter()
        .zip(facts)
        .map(|(parsed, facts)| Track { parsed, facts })
        .collect())
}

/// Samples in a track, from `stsz`.
pub(super) fn sample_count(track: &Track) -> u64 {
    match &track.parsed.stsz {
        Some(stsz) if stsz.sample_size == 0 => stsz.sample_sizes.len() as u64,
        Some(_) => u64::from(track.facts.stsz_count.unwrap_or(0)),
        None => 0,
    }
}

/// Total duration in `stts` ticks, if it does not overflow.
pub(super) fn stts_ticks(track: &Track) -> Option<u64> {
    let stts = track.parsed.stts.as_ref()?;
    stts.samples.iter().try_fold(0u64, |sum, s| {
        sum.checked_add(u64::from(s.sample_count).checked_mul(u64::from(s.sample_delta))?)
    })
}

/// The first video track's size, frames, timing and codec.
pub(super) fn video_info(tracks: &[Track]) -> Result<VideoInfo, Mp4Error> {
    let track = tracks
        .iter()
        .find(|t| t.facts.handler == Some(*b"vide") || t.parsed.track_type == mp4parse::TrackType::Video)
        .ok_or(Mp4Error::NoVideoTrack)?;
    let frames = sample_count(track);
    if frames == 0 {
        return Err(Mp4Error::NoFrames);
    }
    let (code, entry_w, entry_h) = track.facts.entry.unwrap_or((*b"????", 0, 0));
    let (mut width, mut height) = track
        .parsed
        .tkhd
        .as_ref()
        .map_or((0, 0), |t| (t.width >> 16, t.height >> 16));
    if width == 0 || height == 0 {
        (width, height) = (u32::from(entry_w), u32::from(entry_h));
    }
    let timescale = track.parsed.timescale.map_or(0, |t| t.0);
    if timescale == 0 {
        return Err(Mp4Error::BadDuration("the track has no timescale".into()));
    }
    let ticks = match track.parsed.duration.map(|d| d.0) {
        Some(d) if d > 0 && d != u64::from(u32::MAX) && d != u64::MAX => d,
        _ => stts_ticks(track).unwrap_or(0),
    };
    if ticks == 0 {
        return Err(Mp4Error::BadDuration("zero length".into()));
    }
    let duration_secs = ticks as f64 / timescale as f64;
    Ok(VideoInfo {
        width,
        height,
        frames,
        fps: frames as f64 / duration_secs,
        duration_secs,
        codec: String::from_utf8_lossy(&code).into_owned(),
    })
}
