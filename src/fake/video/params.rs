//! Parameter sets and slice headers: the fixed stream configuration every picture relies on.
//!
//! Choices (all Constrained Baseline, CAVLC): one SPS and one PPS, 16-bit frame_num with picture
//! order from decoding order (POC type 2, no reordering), one reference frame, deblocking
//! switched off in every slice (content is copied exactly from frame to frame, so nothing may
//! blur), and VUI timing plus `max_num_reorder_frames = 0` so decoders output each frame at once.

use super::bits::{nal_unit, BitWriter};

/// log2 of MaxFrameNum; frame_num is written with this many bits.
const LOG2_MAX_FRAME_NUM: u32 = 16;

/// Coded picture geometry.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    /// Displayed size (even numbers).
    pub width: u32,
    pub height: u32,
    /// Coded size in macroblocks (16x16 luma).
    pub mbw: u32,
    pub mbh: u32,
}

impl Geometry {
    pub(super) fn new(width: u32, height: u32) -> Geometry {
        Geometry {
            width,
            height,
            mbw: width.div_ceil(16),
            mbh: height.div_ceil(16),
        }
    }
}

/// Smallest level whose frame size and macroblock rate fit (Table A-1), as level_idc.
pub(super) fn level_idc(g: Geometry, fps: u32) -> u8 {
    // (level_idc, MaxMBPS, MaxFS)
    const LEVELS: [(u8, u64, u64); 15] = [
        (10, 1_485, 99),
        (11, 3_000, 396),
        (12, 6_000, 396),
        (13, 11_880, 396),
        (20, 11_880, 396),
        (21, 19_800, 792),
        (22, 20_250, 1_620),
        (30, 40_500, 1_620),
        (31, 108_000, 3_600),
        (32, 216_000, 5_120),
        (40, 245_760, 8_192),
        (42, 522_240, 8_704),
        (50, 589_824, 22_080),
        (51, 983_040, 36_864),
        (52, 2_073_600, 36_864),
    ];
    let fs = u64::from(g.mbw) * u64::from(g.mbh);
    let mbps = fs * u64::from(fps);
    let max_side = u64::from(g.mbw.max(g.mbh));
    LEVELS
        .iter()
        .find(|(_, max_mbps, max_fs)| fs <= *max_fs && mbps <= *max_mbps && max_side * max_side <= 8 * max_fs)
        .map_or(52, |l| l.0)
}

/// Sequence parameter set NAL unit.
pub(super) fn sps(g: Geometry, fps: u32) -> Vec<u8> {
    let mut w = BitWriter::new();
    w.u(8, 66); // profile_idc: Baseline
    w.u(8, 0b1100_0000); // constraint_set0 + constraint_set1: Constrained Baseline
    w.u(8, u32::from(level_idc(g, fps)));
    w.ue(0); // seq_parameter_set_id
    w.ue(LOG2_MAX_FRAME_NUM - 4);
    w.ue(2); // pic_order_cnt_type
    w.ue(1); // max_num_ref_frames
    w.bit(false); // gaps_in_frame_num_value_allowed_flag
    w.ue(g.mbw - 1);
    w.ue(g.mbh - 1);
    w.bit(true); // frame_mbs_only_flag
    w.bit(true); // direct_8x8_inference_flag
    let (crop_x, crop_y) = ((g.mbw * 16 - g.width) / 2, (g.mbh * 16 - g.height) / 2);
    w.bit(crop_x > 0 || crop_y > 0);
    if crop_x > 0 || crop_y > 0 {
        w.ue(0);
        w.ue(crop_x);
        w.ue(0);
        w.ue(crop_y);
    }
    w.bit(true); // vui_parameters_present_flag
    vui(&mut w, fps);
    w.trailing();
    nal_unit(3, 7, &w.into_rbsp())
}

fn vui(w: &mut BitWriter, fps: u32) {
    w.bit(false); // aspect_ratio_info_present_flag (square pixels by default)
    w.bit(false); // overscan_info_present_flag
    w.bit(false); // video_signal_type_present_flag
    w.bit(false); // chroma_loc_info_present_flag
    w.bit(true); // timing_info_present_flag
    w.u(32, 1); // num_units_in_tick
    w.u(32, 2 * fps); // time_scale: two ticks per frame
    w.bit(true); // fixed_frame_rate_flag
    w.bit(false); // nal_hrd_parameters_present_flag
    w.bit(false); // vcl_hrd_parameters_present_flag
    w.bit(false); // pic_struct_present_flag
    w.bit(true); // bitstream_restriction_flag
    w.bit(true); // motion_vectors_over_pic_boundaries_flag
    w.ue(0); // max_bytes_per_pic_denom
    w.ue(0); // max_bits_per_mb_denom
    w.ue(16); // log2_max_mv_length_horizontal
    w.ue(16); // log2_max_mv_length_vertical
    w.ue(0); // max_num_reorder_frames
    w.ue(1); // max_dec_frame_buffering
}

/// Picture parameter set NAL unit.
pub(super) fn pps() -> Vec<u8> {
    let mut w = BitWriter::new();
    w.ue(0); // pic_parameter_set_id
    w.ue(0); // seq_parameter_set_id
    w.bit(false); // entropy_coding_mode_flag: CAVLC
    w.bit(false); // bottom_field_pic_order_in_frame_present_flag
    w.ue(0); // num_slice_groups_minus1
    w.ue(0); // num_ref_idx_l0_default_active_minus1
    w.ue(0); // num_ref_idx_l1_default_active_minus1
    w.bit(false); // weighted_pred_flag
    w.u(2, 0); // weighted_bipred_idc
    w.se(0); // pic_init_qp_minus26
    w.se(0); // pic_init_qs_minus26
    w.se(0); // chroma_qp_index_offset
    w.bit(true); // deblocking_filter_control_present_flag
    w.bit(false); // constrained_intra_pred_flag
    w.bit(false); // redundant_pic_cnt_present_flag
    w.trailing();
    nal_unit(3, 8, &w.into_rbsp())
}

/// Slice header of an IDR (all I slices) or P picture, starting a slice at `first_mb`.
pub(super) fn slice_header(w: &mut BitWriter, first_mb: u32, idr: bool, frame_num: u32) {
    w.ue(first_mb);
    w.ue(if idr { 7 } else { 5 }); // slice_type: every slice of the picture is I / P
    w.ue(0); // pic_parameter_set_id
    w.u(LOG2_MAX_FRAME_NUM, frame_num % (1 << LOG2_MAX_FRAME_NUM));
    if idr {
        w.ue(0); // idr_pic_id
    } else {
        w.bit(false); // num_ref_idx_active_override_flag
        w.bit(false); // ref_pic_list_modification_flag_l0
    }
    // dec_ref_pic_marking(): every picture is a reference (nal_ref_idc != 0).
    if idr {
        w.bit(false); // no_output_of_prior_pics_flag
        w.bit(false); // long_term_reference_flag
    } else {
        w.bit(false); // adaptive_ref_pic_marking_mode_flag: sliding window
    }
    w.se(0); // slice_qp_delta
    w.ue(1); // disable_deblocking_filter_idc: off
}
