//! P pictures: every macroblock copies the previous picture through whole-pixel motion vectors
//! and codes no residual, so each band pans exactly, with no drift.
//!
//! A macroblock whose two 8-pixel halves want the same vector is P_Skip when the skip rule would
//! infer exactly that vector (8.4.1.1: zero when the left or top macroblock is unavailable or
//! has a zero vector, else the median prediction), P_L0_16x16 otherwise; one whose halves differ
//! (where a band wraps around the picture edge) is P_L0_L0_8x16. Vector prediction follows
//! 8.4.1.3: neighbours A (left), B (above), C (above right, else D above left) within the slice.

use super::bits::{nal_unit, BitWriter};
use super::params::slice_header;
use super::scene::{Mv, Scene};

/// Vectors decided so far in the current picture, per macroblock half (None = not yet coded).
struct MotionField {
    mbw: i32,
    mbh: i32,
    halves: Vec<[Option<Mv>; 2]>,
    /// First macroblock address of the current slice: nothing before it is available.
    slice_start: i32,
}

impl MotionField {
    /// The vector at 4x4-block coordinates, if that block is available (in the picture, in the
    /// slice, already coded). Every coded block here is inter with reference index 0.
    fn at(&self, bx: i32, by: i32) -> Option<Mv> {
        if bx < 0 || by < 0 || bx >= self.mbw * 4 || by >= self.mbh * 4 {
            return None;
        }
        let addr = (by / 4) * self.mbw + bx / 4;
        if addr < self.slice_start {
            return None;
        }
        self.halves[addr as usize][((bx % 4) / 2) as usize]
    }

    /// Predicted vector of a partition whose top-left 4x4 block is (bx, by), `w4` blocks wide,
    /// at the top of its macroblock. `directional`: 0 = left half of 8x16 (prefers A),
    /// 1 = right half (prefers C), None = 16x16.
    fn predict(&self, bx: i32, by: i32, w4: i32, directional: Option<u8>) -> Mv {
        let a = self.at(bx - 1, by);
        let b = self.at(bx, by - 1);
        let c = self.at(bx + w4, by - 1).or_else(|| self.at(bx - 1, by - 1));
        match (directional, a, c) {
            (Some(0), Some(a), _) => return a,
            (Some(1), _, Some(c)) => return c,
            _ => {}
        }
        if b.is_none() && c.is_none() {
            if let Some(a) = a {
                return a;
            }
        }
        let known = [a, b, c].iter().filter(|v| v.is_some()).count();
        if known == 1 {
            return a.or(b).or(c).unwrap_or((0, 0));
        }
        let (a, b, c) = (a.unwrap_or((0, 0)), b.unwrap_or((0, 0)), c.unwrap_or((0, 0)));
        (median(a.0, b.0, c.0), median(a.1, b.1, c.1))
    }

    /// The vector a P_Skip macroblock at (x, y) would get.
    fn skip_vector(&self, x: i32, y: i32) -> Mv {
        let (bx, by) = (x * 4, y * 4);
        match (self.at(bx - 1, by), self.at(bx, by - 1)) {
            (Some(a), Some(b)) if a != (0, 0) && b != (0, 0) => self.predict(bx, by, 4, None),
            _ => (0, 0),
        }
    }
}

fn median(a: i32, b: i32, c: i32) -> i32 {
    a.max(b).min(a.min(b).max(c))
}

/// The macroblock layer of every band's P slice, as (bits, bit length). Every P picture moves
/// the content the same way, so this is computed once and each picture only adds its header.
pub(super) struct PSlices(Vec<(Vec<u8>, usize)>);

/// Codes the slice data of each band.
pub(super) fn p_slices(scene: &Scene) -> PSlices {
    let mut field = MotionField {
        mbw: scene.mbw as i32,
        mbh: scene.mbh as i32,
        halves: vec![[None, None]; (scene.mbw * scene.mbh) as usize],
        slice_start: 0,
    };
    let mut slices = Vec::with_capacity(scene.bands.len());
    for band in &scene.bands {
        field.slice_start = (band.first_row * scene.mbw) as i32;
        let mut w = BitWriter::new();
        let mut skip_run = 0;
        for y in band.first_row..band.end_row {
            for x in 0..scene.mbw {
                let [left, right] = scene.motion(band, x);
                let addr = (y * scene.mbw + x) as usize;
                let (xi, yi) = (x as i32, y as i32);
                if left == right && field.skip_vector(xi, yi) == left {
                    field.halves[addr] = [Some(left), Some(left)];
                    skip_run += 1;
                    continue;
                }
                w.ue(skip_run);
                skip_run = 0;
                let (bx, by) = (xi * 4, yi * 4);
                // P_L0_16x16 when both halves agree and that is cheaper; otherwise 8x16, whose
                // halves are predicted separately (a wrapping band's edge block is cheap this way).
                let p16 = field.predict(bx, by, 4, None);
                field.halves[addr][0] = Some(left);
                let p0 = field.predict(bx, by, 2, Some(0));
                let p1 = field.predict(bx + 2, by, 2, Some(1));
                field.halves[addr][1] = Some(right);
                let cost16 = 1 + mvd_bits(left, p16);
                let cost8 = 3 + mvd_bits(left, p0) + mvd_bits(right, p1);
                if left == right && cost16 <= cost8 {
                    w.ue(0); // P_L0_16x16
                    mvd(&mut w, left, p16);
                } else {
                    w.ue(2); // P_L0_L0_8x16
                    mvd(&mut w, left, p0);
                    mvd(&mut w, right, p1);
                }
                w.ue(0); // coded_block_pattern 0 (inter mapping): no residual, no qp delta
            }
        }
        if skip_run > 0 {
            w.ue(skip_run);
        }
        let bits = w.bit_len();
        slices.push((w.into_rbsp(), bits));
    }
    PSlices(slices)
}

/// NAL units (one per band) of the P picture with this frame_num.
pub(super) fn p_picture(scene: &Scene, slices: &PSlices, frame_num: u32) -> Vec<Vec<u8>> {
    let mut nals = Vec::with_capacity(scene.bands.len());
    for (band, (data, bits)) in scene.bands.iter().zip(&slices.0) {
        let mut w = BitWriter::new();
        slice_header(&mut w, band.first_row * scene.mbw, false, frame_num);
        w.append(data, *bits);
        w.trailing();
        nals.push(nal_unit(2, 1, &w.into_rbsp()));
    }
    nals
}

/// Length of se(v) codes for a vector difference.
fn mvd_bits(mv: Mv, pred: Mv) -> u32 {
    let se = |v: i32| {
        let code = if v > 0 {
            2 * v.unsigned_abs() - 1
        } else {
            2 * v.unsigned_abs()
        };
        2 * (code + 1).ilog2() + 1
    };
    se(mv.0 - pred.0) + se(mv.1 - pred.1)
}

fn mvd(w: &mut BitWriter, mv: Mv, pred: Mv) {
    w.se(mv.0 - pred.0);
    w.se(mv.1 - pred.1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(mbw: i32, mbh: i32) -> MotionField {
        MotionField {
            mbw,
            mbh,
            halves: vec![[None, None]; (mbw * mbh) as usize],
            slice_start: 0,
        }
    }

    #[test]
    fn prediction_follows_the_neighbour_rules() {
        let mut f = field(3, 2);
        // Nothing coded: zero.
        assert_eq!(f.predict(0, 0, 4, None), (0, 0));
        f.halves[0] = [Some((8, 0)), Some((8, 0))];
        // Only A available (top row): A.
        assert_eq!(f.predict(4, 0, 4, None), (8, 0));
        f.halves[1] = [Some((-4, 0)), Some((-4, 0))];
        f.halves[2] = [Some((12, 4)), Some((12, 4))];
        // Left column of row 1: A unavailable, B=(8,0), C=(-4,0): median with A as zero.
        assert_eq!(f.predict(0, 4, 4, None), (0, 0));
        // Right half of an 8x16 prefers C (here above-right MB 1).
        assert_eq!(f.predict(2, 4, 2, Some(1)), (-4, 0));
        // Rightmost MB: C outside the picture, so D (above left) stands in.
        f.halves[3] = [Some((1, 1)), Some((1, 1))];
        f.halves[4] = [Some((2, 2)), Some((2, 2))];
        assert_eq!(f.predict(8, 4, 4, None), median3((2, 2), (12, 4), (-4, 0)));
        // A slice boundary hides everything above.
        f.slice_start = 3;
        assert_eq!(f.skip_vector(1, 1), (0, 0));
    }

    fn median3(a: Mv, b: Mv, c: Mv) -> Mv {
        (median(a.0, b.0, c.0), median(a.1, b.1, c.1))
    }

    #[test]
    fn skip_is_zero_when_a_neighbour_is_still() {
        let mut f = field(2, 2);
        f.halves[0] = [Some((0, 0)), Some((0, 0))];
        f.halves[1] = [Some((8, 0)), Some((8, 0))];
        f.halves[2] = [Some((8, 0)), Some((8, 0))];
        assert_eq!(f.skip_vector(1, 1), (8, 0));
        f.halves[1] = [Some((0, 0)), Some((0, 0))];
        assert_eq!(f.skip_vector(1, 1), (0, 0));
    }
}
