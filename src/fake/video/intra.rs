//! The IDR picture: one I slice per band, each macroblock either I_PCM (raw samples) or
//! Intra 16x16 with no residual.
//!
//! Intra 16x16 always codes its luma DC block, so even an empty one needs a coeff_token with
//! TotalCoeff = 0, whose code depends on nC, the average coefficient count of the left and top
//! neighbours in the same slice (I_PCM counts as 16, an Intra 16x16 without AC as 0; 9.2.1).

use super::bits::{nal_unit, BitWriter};
use super::params::slice_header;
use super::scene::{IntraMb, Scene};

/// mb_type of I_PCM in an I slice.
const MB_TYPE_I_PCM: u32 = 25;

/// NAL units (one per band) of the IDR picture.
pub(super) fn idr_picture(scene: &Scene) -> Vec<Vec<u8>> {
    let mbw = scene.mbw as usize;
    let mut nals = Vec::with_capacity(scene.bands.len());
    for band in &scene.bands {
        let mut w = BitWriter::new();
        slice_header(&mut w, band.first_row * scene.mbw, true, 0);
        // Coefficient count of each macroblock (16 = I_PCM) in the previous and current row.
        let mut above: Vec<u32> = Vec::new();
        for y in band.first_row..band.end_row {
            let mut row = vec![0u32; mbw];
            for x in 0..scene.mbw {
                let xi = x as usize;
                match scene.intra_mb(band, x, y) {
                    IntraMb::Pcm(samples) => {
                        w.ue(MB_TYPE_I_PCM);
                        while !w.byte_aligned() {
                            w.bit(false); // pcm_alignment_zero_bit
                        }
                        w.bytes(samples);
                        row[xi] = 16;
                    }
                    IntraMb::Predicted { luma, chroma } => {
                        w.ue(1 + luma); // I_16x16_<luma>_0_0: no coded chroma or AC
                        w.ue(chroma);
                        w.se(0); // mb_qp_delta
                        let left = (xi > 0).then(|| row[xi - 1]);
                        let top = above.get(xi).copied();
                        empty_coeff_token(&mut w, n_c(left, top));
                    }
                }
            }
            above = row;
        }
        w.trailing();
        nals.push(nal_unit(3, 5, &w.into_rbsp()));
    }
    nals
}

/// nC from the available neighbours' coefficient counts (9.2.1).
fn n_c(left: Option<u32>, top: Option<u32>) -> u32 {
    match (left, top) {
        (Some(a), Some(b)) => (a + b + 1) >> 1,
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => 0,
    }
}

/// coeff_token for TotalCoeff = 0, TrailingOnes = 0 in the table nC selects (Table 9-5).
fn empty_coeff_token(w: &mut BitWriter, n_c: u32) {
    match n_c {
        0..=1 => w.u(1, 0b1),
        2..=3 => w.u(2, 0b11),
        4..=7 => w.u(4, 0b1111),
        _ => w.u(6, 0b00_0011),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nc_averages_available_neighbours_rounding_up() {
        assert_eq!(n_c(Some(16), Some(0)), 8);
        assert_eq!(n_c(Some(16), Some(16)), 16);
        assert_eq!(n_c(None, Some(16)), 16);
        assert_eq!(n_c(Some(0), None), 0);
        assert_eq!(n_c(None, None), 0);
    }
}
