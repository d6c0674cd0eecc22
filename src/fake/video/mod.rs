//! Playable placeholder videos for the fake server: a small H.264 encoder and MP4 muxer, in
//! pure Rust, that render a short clip of seed-derived colored bands panning sideways.
//!
//! Owns: [`VideoSpec`] (what to render), [`spec_for`] (the size the real model would deliver
//! for a request body) and [`render`] (the file's bytes). The stream is Constrained Baseline
//! H.264 in a faststart MP4 (`moov` before `mdat`), decodable by FFmpeg and browsers.
//! Invariants: the same spec always gives the same bytes; the output has exactly
//! `frames` frames at `fps`, is at least `min_len` bytes long, and stays small otherwise
//! (an I_PCM-seeded first picture of ~10-20 KB, then a few hundred bytes per frame).
//!
//! How the pictures are coded (see `scene`, `intra`, `inter`): the first picture uses I_PCM
//! macroblocks for a few "barcode" blocks and intra prediction without residual for the rest;
//! every later picture moves each band with whole-pixel motion vectors and no residual, so the
//! encoder never needs to reconstruct pictures and nothing drifts.

mod bits;
mod inter;
mod intra;
mod mp4;
mod params;
mod scene;

#[cfg(test)]
mod tests;

use serde_json::Value;

/// What to render. Out-of-range values are normalised by [`render`]: width and height are
/// rounded up to even numbers in 16..=2048 (wider pictures would need motion vectors beyond
/// H.264's ±2048-pixel range to wrap around), frames to 1..=10_000, fps to 1..=240.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoSpec {
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub fps: u32,
    /// Drives the content: colors, bar patterns, band layout, speeds and directions.
    pub seed: u64,
    /// Pad the file (with a trailing `free` box) to at least this many bytes.
    pub min_len: usize,
}

impl VideoSpec {
    fn normalised(&self) -> VideoSpec {
        let even = |v: u32| (v.clamp(16, 2048) + 1) & !1;
        VideoSpec {
            width: even(self.width),
            height: even(self.height),
            frames: self.frames.clamp(1, 10_000),
            fps: self.fps.clamp(1, 240),
            ..self.clone()
        }
    }
}

/// A prompt holding this gets a video that differs from its request (16 frames more).
pub const MISMATCH_TRIGGER: &str = "[mismatch]";

/// The spec matching what Wan 2.2 delivers for this request body: `resolution` 480p → 832×480,
/// 720p → 1280×720 (swapped for `aspect_ratio` 9:16), `num_frames` frames at
/// `frames_per_second`, with the model's defaults (480p, 16:9, 81, 16) for absent or unusable
/// values. The seed is the FNV-1a hash of the request id, so each job looks different and the
/// same job always renders the same bytes.
pub fn spec_for(params: &Value, request_id: &str, min_len: usize) -> VideoSpec {
    let (w, h) = match params.get("resolution").and_then(Value::as_str) {
        Some("720p") => (1280, 720),
        _ => (832, 480),
    };
    let (width, height) = match params.get("aspect_ratio").and_then(Value::as_str) {
        Some("9:16") => (h, w),
        _ => (w, h),
    };
    let int = |key: &str, default: u32, max: u32| {
        params
            .get(key)
            .and_then(Value::as_u64)
            .filter(|v| (1..=u64::from(max)).contains(v))
            .map_or(default, |v| v as u32)
    };
    // The prompt trigger `[mismatch]`: a video with 16 frames more than asked for, as a service
    // may deliver (for rehearsing the report's "differs from its request" flag).
    let extra = params
        .get("prompt")
        .and_then(Value::as_str)
        .is_some_and(|p| p.contains(MISMATCH_TRIGGER));
    VideoSpec {
        width,
        height,
        frames: int("num_frames", 81, 10_000) + if extra { 16 } else { 0 },
        fps: int("frames_per_second", 16, 240),
        seed: super::state::fnv1a(request_id),
        min_len,
    }
}

/// Renders the MP4 file for `spec`.
pub fn render(spec: &VideoSpec) -> Vec<u8> {
    let spec = spec.normalised();
    let geometry = params::Geometry::new(spec.width, spec.height);
    let scene = scene::Scene::new(geometry.mbw, geometry.mbh, spec.seed);
    let p_slices = inter::p_slices(&scene);
    let mut samples = Vec::with_capacity(spec.frames as usize);
    for n in 0..spec.frames {
        let nals = if n == 0 {
            intra::idr_picture(&scene)
        } else {
            inter::p_picture(&scene, &p_slices, n)
        };
        let mut sample = Vec::with_capacity(nals.iter().map(|n| n.len() + 4).sum());
        for nal in nals {
            sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            sample.extend_from_slice(&nal);
        }
        samples.push(sample);
    }
    let sps = params::sps(geometry, spec.fps);
    let pps = params::pps();
    let track = mp4::Track {
        width: spec.width,
        height: spec.height,
        fps: spec.fps,
        sps: &sps,
        pps: &pps,
        samples: &samples,
    };
    mp4::mux(&track, spec.min_len)
}
