//! Bit-level writing for H.264: fixed-width fields, Exp-Golomb codes, RBSP trailing bits,
//! and the NAL unit wrapper that inserts emulation-prevention bytes.
//!
//! Invariant: a [`BitWriter`] holds an RBSP; only [`nal_unit`] turns it into a NAL unit payload,
//! so no other code needs to think about start-code emulation.

/// MSB-first bit sink for one RBSP (raw byte sequence payload).
#[derive(Default)]
pub(super) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits already used in the last byte (0 = byte aligned).
    used: u8,
}

impl BitWriter {
    pub(super) fn new() -> Self {
        Self::default()
    }

    pub(super) fn bit(&mut self, b: bool) {
        self.u(1, u32::from(b));
    }

    /// `u(n)`: the low `n` bits of `v`, most significant first (n <= 32).
    pub(super) fn u(&mut self, n: u32, v: u32) {
        let mut left = n;
        while left > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - u32::from(self.used);
            let take = free.min(left);
            let bits = (u64::from(v) >> (left - take)) & ((1 << take) - 1);
            let last = self.bytes.len() - 1;
            self.bytes[last] |= (bits << (free - take)) as u8;
            self.used = ((u32::from(self.used) + take) % 8) as u8;
            left -= take;
        }
    }

    /// Appends the first `bits` bits of another writer's output.
    pub(super) fn append(&mut self, data: &[u8], bits: usize) {
        for (i, &b) in data.iter().enumerate().take(bits.div_ceil(8)) {
            let n = (bits - i * 8).min(8) as u32;
            self.u(n, u32::from(b) >> (8 - n));
        }
    }

    /// `ue(v)`: unsigned Exp-Golomb: len-1 zeros, then v+1 in len bits.
    pub(super) fn ue(&mut self, v: u32) {
        let x = u64::from(v) + 1;
        let len = 64 - x.leading_zeros();
        self.u(len - 1, 0);
        if len > 32 {
            self.u(len - 32, (x >> 32) as u32);
        }
        self.u(len.min(32), x as u32);
    }

    /// `se(v)`: signed Exp-Golomb (positive values map to odd code numbers).
    pub(super) fn se(&mut self, v: i32) {
        let code = if v > 0 {
            2 * v.unsigned_abs() - 1
        } else {
            2 * v.unsigned_abs()
        };
        self.ue(code);
    }

    pub(super) fn byte_aligned(&self) -> bool {
        self.used == 0
    }

    /// Whole bytes; only valid when byte aligned.
    pub(super) fn bytes(&mut self, data: &[u8]) {
        debug_assert!(self.byte_aligned());
        self.bytes.extend_from_slice(data);
    }

    /// `rbsp_trailing_bits()`: a stop bit, then zeros to the byte boundary.
    pub(super) fn trailing(&mut self) {
        self.bit(true);
        while !self.byte_aligned() {
            self.bit(false);
        }
    }

    pub(super) fn bit_len(&self) -> usize {
        if self.used == 0 {
            self.bytes.len() * 8
        } else {
            (self.bytes.len() - 1) * 8 + usize::from(self.used)
        }
    }

    pub(super) fn into_rbsp(self) -> Vec<u8> {
        self.bytes
    }
}

/// A NAL unit (header byte + escaped RBSP), without start code or length prefix.
pub(super) fn nal_unit(ref_idc: u8, nal_type: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 1);
    out.push((ref_idc & 3) << 5 | (nal_type & 31));
    let mut zeros = 0;
    for &b in rbsp {
        // 0x000000..0x000003 must never appear inside a NAL unit.
        if zeros == 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits_of(w: BitWriter) -> String {
        let n = w.bit_len();
        let bytes = w.into_rbsp();
        (0..n)
            .map(|i| {
                if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
                    '1'
                } else {
                    '0'
                }
            })
            .collect()
    }

    #[test]
    fn exp_golomb_codes_match_the_spec_table() {
        let mut w = BitWriter::new();
        for v in [0, 1, 2, 3, 7] {
            w.ue(v);
        }
        assert_eq!(bits_of(w), "1".to_string() + "010" + "011" + "00100" + "0001000");
        let mut w = BitWriter::new();
        for v in [0, 1, -1, 2, -2] {
            w.se(v);
        }
        assert_eq!(bits_of(w), "1".to_string() + "010" + "011" + "00100" + "00101");
    }

    #[test]
    fn wide_fields_and_appends_keep_bit_order() {
        let mut w = BitWriter::new();
        w.u(3, 0b101);
        w.u(32, 0xdead_beef);
        w.ue(u32::MAX);
        let mut other = BitWriter::new();
        other.u(5, 0b10011);
        other.u(12, 0xabc);
        let mut joined = BitWriter::new();
        joined.bit(true);
        joined.append(&other.bytes, other.bit_len());
        let expected =
            "101".to_string() + &format!("{:032b}", 0xdead_beefu32) + &"0".repeat(32) + "1" + &"0".repeat(32);
        assert_eq!(bits_of(w), expected);
        assert_eq!(bits_of(joined), "1".to_string() + "10011" + &format!("{:012b}", 0xabc));
    }

    #[test]
    fn emulation_prevention_escapes_start_code_prefixes() {
        let nal = nal_unit(3, 5, &[0, 0, 1, 0, 0, 0, 0, 0, 4, 0, 0]);
        assert_eq!(nal, vec![0x65, 0, 0, 3, 1, 0, 0, 3, 0, 0, 3, 0, 4, 0, 0]);
    }
}
