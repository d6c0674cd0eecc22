//! Sample tables against the file: every sample's byte range, from `stco`/`co64` (chunk
//! offsets), `stsc` (samples per chunk) and `stsz` (sample sizes), must lie inside an `mdat`
//! payload within the file, and `stts` must describe as many samples as `stsz`.
//!
//! All arithmetic is checked. The walk is O(chunks + listed sizes): chunks of constant-size
//! samples are placed in O(1), so its time is bounded by the moov's size whatever the counts say.

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
            let offset = stco.offsets[(chunk - 1) as usize];
            let n = u64::from(entry.samples_per_chunk).min(count - sample);
            let placed = match stsz.sample_size {
                0 => place_listed(offset, &stsz.sample_sizes, sample, n, mdats, file_len),
                size => place_constant(offset, u64::from(size), n, mdats, file_len),
            };
            match placed {
                Ok(()) => sample += n,
                Err((k, Fault::PastEnd)) => return Err(past_end(sample + k)),
                Err((k, Fault::OutsideMdat)) => {
                    return Err(Mp4Error::SampleOutsideMdat {
                        track: number,
                        index: sample + k + 1,
                        count,
                    });
                }
            }
            if sample == count {
                return Ok(());
            }
        }
    }
    if sample < count {
        return Err(table(format!("the chunks hold only {sample} of {count} samples")));
    }
    Ok(())
}

/// Why a sample does not fit.
enum Fault {
    PastEnd,
    OutsideMdat,
}

/// Places `n` samples with listed sizes (from index `first`) back to back at `offset`; on
/// failure, the position within the chunk of the first sample that does not fit.
fn place_listed(
    mut offset: u64,
    sizes: &[u32],
    first: u64,
    n: u64,
    mdats: &[(u64, Option<u64>)],
    file_len: u64,
) -> Result<(), (u64, Fault)> {
    for k in 0..n {
        let size = sizes.get((first + k) as usize).map_or(0, |s| u64::from(*s));
        let end = offset.checked_add(size).ok_or((k, Fault::PastEnd))?;
        if end > file_len {
            return Err((k, Fault::PastEnd));
        }
        if !inside_mdat(offset, end, mdats, file_len) {
            return Err((k, Fault::OutsideMdat));
        }
        offset = end;
    }
    Ok(())
}

/// Places `n` samples of one size at `offset` in O(1): a forged table can announce billions of
/// samples per chunk, so they are never walked one by one.
fn place_constant(
    offset: u64,
    size: u64,
    n: u64,
    mdats: &[(u64, Option<u64>)],
    file_len: u64,
) -> Result<(), (u64, Fault)> {
    let end = n.checked_mul(size).and_then(|len| offset.checked_add(len));
    if end.is_some_and(|end| end <= file_len && inside_mdat(offset, end, mdats, file_len)) {
        return Ok(());
    }
    // How many whole samples fit before the file ends, and before the enclosing mdat ends.
    let in_file = file_len.saturating_sub(offset) / size;
    let in_mdat = mdat_end(offset, mdats, file_len).map_or(0, |e| e.saturating_sub(offset) / size);
    Err(if in_file <= in_mdat {
        (in_file, Fault::PastEnd)
    } else {
        (in_mdat, Fault::OutsideMdat)
    })
}

/// End of the mdat payload that contains `start`, if any (mdats are in file order).
fn mdat_end(start: u64, mdats: &[(u64, Option<u64>)], file_len: u64) -> Option<u64> {
    let after = mdats.partition_point(|(payload_start, _)| *payload_start <= start);
    let (_, end) = mdats.get(after.checked_sub(1)?)?;
    let end = end.unwrap_or(file_len);
    (start <= end).then_some(end)
}

/// Whether `[start, end)` lies within one mdat payload (mdats are in file order).
fn inside_mdat(start: u64, end: u64, mdats: &[(u64, Option<u64>)], file_len: u64) -> bool {
    mdat_end(start, mdats, file_len).is_some_and(|mdat_end| end <= mdat_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_must_sit_inside_one_mdat() {
        let mdats = [(40, Some(100)), (108, None)];
        assert!(inside_mdat(40, 100, &mdats, 500));
        assert!(!inside_mdat(39, 41, &mdats, 500));
        assert!(!inside_mdat(90, 110, &mdats, 500)); // straddles two boxes
        assert!(inside_mdat(108, 500, &mdats, 500)); // size-0 mdat runs to the end
        assert!(!inside_mdat(0, 8, &mdats, 500));
    }

    #[test]
    fn constant_sizes_find_the_first_bad_sample_without_walking() {
        let mdats = [(40, Some(100)), (108, None)];
        assert!(place_constant(40, 6, 10, &mdats, 500).is_ok());
        // Billions of 1-byte samples: sample 60 is the first past the mdat's end at 100.
        assert!(matches!(
            place_constant(40, 1, u64::from(u32::MAX), &mdats, 500),
            Err((60, Fault::OutsideMdat))
        ));
        assert!(matches!(
            place_constant(108, 7, u64::MAX, &mdats, 500),
            Err((56, Fault::PastEnd))
        ));
        assert!(matches!(
            place_constant(600, 7, 1, &mdats, 500),
            Err((0, Fault::PastEnd))
        ));
        assert!(matches!(
            place_constant(20, 7, 1, &mdats, 500),
            Err((0, Fault::OutsideMdat))
        ));
    }
}
