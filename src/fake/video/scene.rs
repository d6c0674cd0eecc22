//! What a generated video shows, derived from the seed: the picture is cut into horizontal
//! bands (one slice each); each band is a row of colored segments that opens with a 16-pixel
//! "barcode" and pans sideways, wrapping around, at its own speed and direction.
//!
//! The scene only decides content and motion; `intra` and `inter` turn it into H.264 syntax.
//! Invariants: every band has at least one macroblock row, every band's first segment starts at
//! column 0, speeds are non-zero multiples of 8 pixels (so a wrapping macroblock splits into two
//! 8x16 halves, each with one whole-pixel vector inside the picture).

use super::super::state::splitmix64;

/// Samples of one I_PCM macroblock: 256 luma, then 64 Cb, then 64 Cr (raster order).
pub(super) type PcmSamples = [u8; 384];

/// A horizontal band of macroblock rows `[first_row, end_row)`, coded as one slice.
pub(super) struct Band {
    pub first_row: u32,
    pub end_row: u32,
    /// Pixels per frame the content moves to the right (negative: to the left).
    pub speed: i32,
    /// Segments by starting macroblock column (ascending, the first at 0).
    pub segments: Vec<(u32, PcmSamples)>,
}

pub(super) struct Scene {
    /// Picture width and height in macroblocks.
    pub mbw: u32,
    pub mbh: u32,
    pub bands: Vec<Band>,
}

/// How a macroblock of the first (IDR) picture is coded.
pub(super) enum IntraMb<'a> {
    Pcm(&'a PcmSamples),
    /// Intra 16x16 without residual: `luma` is Intra16x16PredMode (0 vertical, 1 horizontal),
    /// `chroma` is intra_chroma_pred_mode (1 horizontal, 2 vertical).
    Predicted {
        luma: u32,
        chroma: u32,
    },
}

/// Pixels per frame a band may move: multiples of 8, so an edge block splits into whole 8x16
/// halves. Only 24 and 32 make the wrap cheap: then two of the median's neighbours (8.4.1.3)
/// or the 8x16 directional neighbour already carry the wrap vector from the row above, so only
/// a band's first row pays ~25 bits for it (8 or 16 would cost that on every row).
const SPEEDS: [i32; 4] = [-32, -24, 24, 32];

/// A motion vector in quarter luma samples.
pub(super) type Mv = (i32, i32);

impl Scene {
    pub(super) fn new(mbw: u32, mbh: u32, seed: u64) -> Scene {
        let mut rng = seed ^ 0x5eed_0ff1_de00;
        let mut next = move || splitmix64(&mut rng);
        let wanted = 2 + (next() % 2) as u32;
        let count = wanted.min(mbh).max(1);
        // Distinct cut rows in 1..mbh, so every band keeps at least one row.
        let mut cuts: Vec<u32> = Vec::new();
        while (cuts.len() as u32) < count - 1 {
            let c = 1 + (next() % u64::from(mbh - 1)) as u32;
            if !cuts.contains(&c) {
                cuts.push(c);
            }
        }
        cuts.sort_unstable();
        let mut bands = Vec::new();
        let mut first_row = 0;
        for end_row in cuts.into_iter().chain([mbh]) {
            let speed = SPEEDS[(next() % SPEEDS.len() as u64) as usize];
            let mut segments = Vec::new();
            let mut x = 0;
            while x < mbw {
                segments.push((x, segment_pcm(next(), next())));
                x += 3 + (next() % 7) as u32;
            }
            bands.push(Band {
                first_row,
                end_row,
                speed,
                segments,
            });
            first_row = end_row;
        }
        Scene { mbw, mbh, bands }
    }

    /// The IDR picture: a barcode macroblock opens each segment on the band's top row, the rest
    /// of that row extends it to the right (horizontal prediction), and every row below copies
    /// the row above (vertical prediction). Only the neighbours these modes read are in the band.
    pub(super) fn intra_mb<'a>(&self, band: &'a Band, x: u32, y: u32) -> IntraMb<'a> {
        if y > band.first_row {
            return IntraMb::Predicted { luma: 0, chroma: 2 };
        }
        match band.segments.iter().find(|(start, _)| *start == x) {
            Some((_, pcm)) => IntraMb::Pcm(pcm),
            None => IntraMb::Predicted { luma: 1, chroma: 1 },
        }
    }

    /// Vectors of the left and right 8-pixel halves of macroblock column `x` in `band`: each
    /// half copies the previous picture shifted by the band's speed, wrapping around the width.
    pub(super) fn motion(&self, band: &Band, x: u32) -> [Mv; 2] {
        let width = (self.mbw * 16) as i32;
        let half = |h: i32| {
            let px = x as i32 * 16 + 8 * h;
            let src = (px - band.speed).rem_euclid(width);
            ((src - px) * 4, 0)
        };
        [half(0), half(1)]
    }
}

/// A barcode macroblock: a seed-derived color, vertical bars of 1, 2 or 4 pixels in luma and a
/// slight top-to-bottom gradient. Samples stay in 16..=235/240 (video range, never 0).
fn segment_pcm(a: u64, b: u64) -> PcmSamples {
    let y = 50 + (a % 150) as i32;
    let cb = 40 + ((a >> 8) % 177) as i32;
    let cr = 40 + ((a >> 16) % 177) as i32;
    let bar = 1 << ((b % 3) as u32);
    let depth = 20 + ((b >> 4) % 35) as i32;
    let slope = ((b >> 12) % 7) as i32 - 3;
    let mut s = [0u8; 384];
    for r in 0..16 {
        for c in 0..16 {
            let stripe = if (c / bar) % 2 == 0 { depth } else { -depth };
            s[r * 16 + c] = (y + stripe + slope * (r as i32 - 8)).clamp(16, 235) as u8;
        }
    }
    s[256..320].fill(cb.clamp(16, 240) as u8);
    s[320..384].fill(cr.clamp(16, 240) as u8);
    s
}
