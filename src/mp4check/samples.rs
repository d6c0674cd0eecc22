//! Sample tables against the file: every sample's byte range, from `stco`/`co64` (chunk
//! offsets), `stsc` (samples per chunk) and `stsz` (sample sizes), must lie inside an `mdat`
//! payload within the file, and `stts` must describe as many samples as `stsz`.
//!
//! All arithmetic is checked; the walk is O(chunks + samples), and samples are only walked
//! while they stay inside the file, so its time is bounded by the moov and file sizes.

use super::moov::{sample_count, Track};
use super::Mp4Error;

/// Checks one track (numbered from 1 in messages) against `mdats` (payload ranges, end None =
/// to the end of the file) and the file's length.
pub(super) fn check(number: usize, track: &Track, mdats: &[(u64, Option<u64>)], file_len: u64) -> Result<(), Mp4Error> {
    let table = |detail: String| Mp4Error::SampleTable { track: number, detail };
    let p = &track.parsed;
    let (Some(stsz), Some(stsc), Some(stco)) = (&p.stsz, &p.stsc, &p.stco) else {
        return Err(table("a stsz, stsc or stco/co64 box is missing".into()));
    };
    let count = sample_count(track);
    let described: Option<u64> = p.stts.as_ref().and_then(|stts| {
        stts.samples
            .iter()
            .try_fold(0u64, |sum, s| sum.checked_add(u64::from(s.sample_count)))
    });
    if described != Some(count) {
        let described = described.map_or("no".to_string(), |n| n.to_string());
        return Err(table(format!(
            "stts describes {described} samples but stsz has {count}"
        )));
    }
    if count == 0 {
        return Ok(());
    }
    let size_of = |i: u64| -> u64 {
        match stsz.sample_size {
            0 => stsz.sample_sizes.get(i as usize).map_or(0, |s| u64::from(*s)),
            constant => u64::from(constant),
        }
    };
    let chunks = stco.offsets.len() as u64;
    let entries = &stsc.samples;
    let past_end = |index: u64| Mp4Error::SamplePastEnd {
        track: number,
        index: index + 1,
        count,
    };
    let mut sample = 0u64;
    for (i, entry) in entries.iter().enumerate() {
        if sample == count {
            return Ok(()); // entries past the last sample are harmless
        }
        let first = u64::from(entry.first_chunk);
        let last = entries
            .get(i + 1)
            .map_or(chunks, |next| u64::from(next.first_chunk).saturating_sub(1).min(chunks));
        let in_order = match i {
            0 => first == 1,
            _ => first > u64::from(entries[i - 1].first_chunk),
        };
        if !in_order || first > chunks || last < first {
            return Err(table(format!("stsc entry {} names chunk {first} of {chunks}", i + 1)));
        }
        for chunk in first..=last {
            let mut offset = stco.offsets[(chunk - 1) as usize];
            for _ in 0..entry.samples_per_chunk {
                if sample == count {
                    return Ok(());
                }
                let end = offset.checked_add(size_of(sample)).ok_or_else(|| past_end(sample))?;
                if end > file_len {
                    return Err(past_end(sample));
                }
                if !inside_mdat(offset, end, mdats, file_len) {
                    return Err(Mp4Error::SampleOutsideMdat {
                        track: number,
                        index: sample + 1,
                        count,
                    });
                }
                offset = end;
                sample += 1;
            }
        }
    }
    if sample < count {
        return Err(table(format!("the chunks hold only {sample} of {count} samples")));
    }
    Ok(())
}

/// Whether `[start, end)` lies within one mdat payload (mdats are in file order).
fn inside_mdat(start: u64, end: u64, mdats: &[(u64, Option<u64>)], file_len: u64) -> bool {
    let after = mdats.partition_point(|(payload_start, _)| *payload_start <= start);
    after > 0 && {
        let (_, mdat_end) = mdats[after - 1];
        end <= mdat_end.unwrap_or(file_len)
    }
}

#[cfg(test)]
mod tests {
    use super::inside_mdat;

    #[test]
    fn ranges_must_sit_inside_one_mdat() {
        let mdats = [(40, Some(100)), (108, None)];
        assert!(inside_mdat(40, 100, &mdats, 500));
        assert!(!inside_mdat(39, 41, &mdats, 500));
        assert!(!inside_mdat(90, 110, &mdats, 500)); // straddles two boxes
        assert!(inside_mdat(108, 500, &mdats, 500)); // size-0 mdat runs to the end
        assert!(!inside_mdat(0, 8, &mdats, 500));
    }
}
