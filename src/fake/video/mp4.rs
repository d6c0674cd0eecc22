//! ISO BMFF (MP4) muxing of one H.264 track: `ftyp`, then `moov` (faststart: players can start
//! before the media arrives), then one `mdat` holding every frame as one chunk, then an
//! optional `free` box that pads the file to a requested length.
//!
//! Invariants: the `stco` offset points at the first byte of the mdat payload; samples are the
//! frames' NAL units, each prefixed by its 4-byte length (avcC lengthSizeMinusOne = 3); only the
//! first sample is a sync sample (`stss`).

/// Movie (mvhd/tkhd) timescale, in ticks per second.
const MOVIE_TIMESCALE: u32 = 1000;
/// Media ticks per frame: the mdhd timescale is `fps * TICKS_PER_FRAME`, so durations are exact.
const TICKS_PER_FRAME: u32 = 1000;

pub(super) struct Track<'a> {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub sps: &'a [u8],
    pub pps: &'a [u8],
    /// Each frame as its length-prefixed NAL units.
    pub samples: &'a [Vec<u8>],
}

/// The whole file, at least `min_len` bytes long.
pub(super) fn mux(t: &Track<'_>, min_len: usize) -> Vec<u8> {
    let ftyp = boxed(
        b"ftyp",
        &[b"isom".as_slice(), &0x200u32.to_be_bytes(), b"isomiso2avc1mp41"].concat(),
    );
    let media: usize = t.samples.iter().map(Vec::len).sum();
    // The moov's length does not depend on the chunk offset's value, so build it twice.
    let mdat_header = if media + 8 > u32::MAX as usize { 16 } else { 8 };
    let probe = moov(t, 0);
    let chunk_offset = (ftyp.len() + probe.len() + mdat_header) as u64;
    let moov = moov(t, chunk_offset);
    debug_assert_eq!(moov.len(), probe.len());
    let mut out = Vec::with_capacity(min_len.max(chunk_offset as usize + media + 8));
    out.extend_from_slice(&ftyp);
    out.extend_from_slice(&moov);
    box_header(&mut out, b"mdat", (mdat_header + media) as u64);
    for s in t.samples {
        out.extend_from_slice(s);
    }
    if out.len() < min_len {
        // A free box needs at least its 8-byte header, so the file may end a few bytes longer.
        let pad = (min_len - out.len()).max(8);
        let header = if pad > u32::MAX as usize { 16 } else { 8 };
        box_header(&mut out, b"free", pad.max(header) as u64);
        out.resize(out.len() + pad.max(header) - header, 0);
    }
    out
}

/// Writes a box header announcing `size` bytes in total, with a 64-bit size when needed.
fn box_header(out: &mut Vec<u8>, kind: &[u8; 4], size: u64) {
    if size > u64::from(u32::MAX) {
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(&size.to_be_bytes());
    } else {
        out.extend_from_slice(&(size as u32).to_be_bytes());
        out.extend_from_slice(kind);
    }
}

fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    box_header(&mut out, kind, payload.len() as u64 + 8);
    out.extend_from_slice(payload);
    out
}

/// A full box: version 0 and 24-bit flags before the payload.
fn full(kind: &[u8; 4], flags: u32, payload: &[u8]) -> Vec<u8> {
    boxed(kind, &[&(flags & 0xff_ffff).to_be_bytes()[..], payload].concat())
}

fn be32(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// Unity transformation matrix of mvhd and tkhd.
const MATRIX: [u32; 9] = [0x1_0000, 0, 0, 0, 0x1_0000, 0, 0, 0, 0x4000_0000];

fn moov(t: &Track<'_>, chunk_offset: u64) -> Vec<u8> {
    let frames = t.samples.len() as u32;
    let movie_duration = (u64::from(frames) * u64::from(MOVIE_TIMESCALE) / u64::from(t.fps)) as u32;
    let mut mvhd = be32(&[0, 0, MOVIE_TIMESCALE, movie_duration, 0x1_0000]);
    mvhd.extend_from_slice(&[0x01, 0x00, 0, 0]); // volume 1.0, reserved
    mvhd.extend_from_slice(&[0; 8]);
    mvhd.extend(be32(&MATRIX));
    mvhd.extend_from_slice(&[0; 24]); // pre_defined
    mvhd.extend(be32(&[2])); // next_track_ID
    let mvhd = full(b"mvhd", 0, &mvhd);

    let mut tkhd = be32(&[0, 0, 1, 0, movie_duration, 0, 0]);
    tkhd.extend_from_slice(&[0; 8]); // layer, alternate_group, volume, reserved
    tkhd.extend(be32(&MATRIX));
    tkhd.extend(be32(&[t.width << 16, t.height << 16]));
    let tkhd = full(b"tkhd", 3, &tkhd); // enabled, in movie

    let timescale = t.fps * TICKS_PER_FRAME;
    let mut mdhd = be32(&[0, 0, timescale, frames * TICKS_PER_FRAME]);
    mdhd.extend_from_slice(&[0x55, 0xc4, 0, 0]); // language "und", pre_defined
    let mdhd = full(b"mdhd", 0, &mdhd);
    let hdlr = full(
        b"hdlr",
        0,
        &[&be32(&[0])[..], b"vide", &[0; 12], b"VideoHandler\0"].concat(),
    );

    let vmhd = full(b"vmhd", 1, &[0; 8]);
    let dref = full(b"dref", 0, &[&be32(&[1])[..], &full(b"url ", 1, &[])].concat());
    let dinf = boxed(b"dinf", &dref);
    let stbl = boxed(b"stbl", &[stsd(t), tables(t, chunk_offset)].concat());
    let minf = boxed(b"minf", &[vmhd, dinf, stbl].concat());
    let mdia = boxed(b"mdia", &[mdhd, hdlr, minf].concat());
    let trak = boxed(b"trak", &[tkhd, mdia].concat());
    boxed(b"moov", &[mvhd, trak].concat())
}

fn stsd(t: &Track<'_>) -> Vec<u8> {
    let mut avcc = vec![1, t.sps[1], t.sps[2], t.sps[3], 0xff, 0xe1];
    avcc.extend_from_slice(&(t.sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(t.sps);
    avcc.push(1);
    avcc.extend_from_slice(&(t.pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(t.pps);
    let mut entry = vec![0; 6];
    entry.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
    entry.extend_from_slice(&[0; 16]);
    entry.extend_from_slice(&(t.width as u16).to_be_bytes());
    entry.extend_from_slice(&(t.height as u16).to_be_bytes());
    entry.extend(be32(&[0x48_0000, 0x48_0000, 0])); // 72 dpi, reserved
    entry.extend_from_slice(&1u16.to_be_bytes()); // frame_count
    let mut name = [0u8; 32];
    name[0] = 8;
    name[1..9].copy_from_slice(b"wanbatch");
    entry.extend_from_slice(&name);
    entry.extend_from_slice(&[0x00, 0x18, 0xff, 0xff]); // depth 24, pre_defined -1
    entry.extend(boxed(b"avcC", &avcc));
    full(b"stsd", 0, &[&be32(&[1])[..], &boxed(b"avc1", &entry)].concat())
}

/// stts, stss, stsc, stsz and stco (co64 past 4 GiB) for one chunk holding every frame.
fn tables(t: &Track<'_>, chunk_offset: u64) -> Vec<u8> {
    let frames = t.samples.len() as u32;
    let stts = full(b"stts", 0, &be32(&[1, frames, TICKS_PER_FRAME]));
    let stss = full(b"stss", 0, &be32(&[1, 1]));
    let stsc = full(b"stsc", 0, &be32(&[1, 1, frames, 1]));
    let mut sizes = vec![0, frames];
    sizes.extend(t.samples.iter().map(|s| s.len() as u32));
    let stsz = full(b"stsz", 0, &be32(&sizes));
    let stco = match u32::try_from(chunk_offset) {
        Ok(off) => full(b"stco", 0, &be32(&[1, off])),
        Err(_) => full(b"co64", 0, &[&be32(&[1])[..], &chunk_offset.to_be_bytes()].concat()),
    };
    [stts, stss, stsc, stsz, stco].concat()
}
