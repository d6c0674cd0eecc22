//! Text encodings as manifests really arrive: a UTF-8 BOM (Excel's "CSV UTF-8"), UTF-16 (Excel's
//! "Unicode Text", Notepad's "Unicode"), and Windows-1252/Latin-1 (Excel's plain "CSV" on
//! Windows and older Macs).
//!
//! Only UTF-8 is read. The start of a file is looked at once: a UTF-8 BOM is skipped, UTF-16 is
//! one error for the whole file (read as UTF-8 it would give an error per row, each naming
//! garbage). A cell that is not UTF-8 is an error on its own line that names the byte, the likely
//! encoding and how to save the file as UTF-8; later ones in the same file point back to it.

/// The UTF-8 byte order mark.
pub(super) const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What the first bytes of a file say about its encoding.
#[derive(Debug, PartialEq)]
pub(super) enum Start {
    /// UTF-8 (or plain ASCII): skip this many bytes of BOM.
    Utf8 { bom: usize },
    /// UTF-16: the file is not read; the message says why and what to do.
    Utf16(String),
}

/// Looks at the first bytes of a file (whatever the first read gave, usually 64 KiB).
///
/// UTF-16 is recognised by its BOM, or, without one, by NULs in every other byte over the first
/// 512 bytes: ASCII text in UTF-16 has a NUL beside every letter, while a file of nothing but
/// NULs (or binary junk) is left to the parser and its own errors.
pub(super) fn sniff(head: &[u8], save_as: &str) -> Start {
    if head.starts_with(UTF8_BOM) {
        return Start::Utf8 { bom: UTF8_BOM.len() };
    }
    let order = if head.starts_with(b"\xFF\xFE") {
        Some("UTF-16LE")
    } else if head.starts_with(b"\xFE\xFF") {
        Some("UTF-16BE")
    } else {
        let head = &head[..head.len().min(512) & !1];
        let pairs = head.len() / 2;
        let nul_at = |parity: usize| head.iter().skip(parity).step_by(2).filter(|b| **b == 0).count();
        let (even, odd) = (nul_at(0), nul_at(1));
        // Mostly NULs on one side, hardly any on the other.
        if pairs >= 8 && odd * 10 >= pairs * 8 && even * 10 <= pairs {
            Some("UTF-16LE")
        } else if pairs >= 8 && even * 10 >= pairs * 8 && odd * 10 <= pairs {
            Some("UTF-16BE")
        } else {
            None
        }
    };
    match order {
        Some(order) => Start::Utf16(format!(
            "the file is {order} text, not UTF-8 (Excel's \"Unicode Text\" and Notepad's \"Unicode\" \
             save this); {save_as}, or re-encode it with iconv -f utf-16 -t utf-8"
        )),
        None => Start::Utf8 { bom: 0 },
    }
}

/// How to save a file as UTF-8, for a file of this kind.
pub(super) fn save_as(csv: bool) -> &'static str {
    if csv {
        "save the file as \"CSV UTF-8\" in Excel"
    } else {
        "save the file as UTF-8"
    }
}

/// Remembers the first non-UTF-8 text of one file, so that only its error carries the advice.
#[derive(Default)]
pub(super) struct NotUtf8 {
    first_line: Option<u64>,
}

impl NotUtf8 {
    /// The message for text at `line` whose first bad byte is `byte`.
    pub(super) fn message(&mut self, line: u64, byte: u8, csv: bool) -> String {
        if let Some(first) = self.first_line {
            return format!("is not UTF-8 text (byte 0x{byte:02X}; see line {first})");
        }
        self.first_line = Some(line);
        // Bytes 0x80–0xFF are letters and signs in both; 0x80–0x9F (curly quotes, €, –) only in
        // Windows-1252, which is what Windows Excel writes anyway.
        format!(
            "is not UTF-8 text (byte 0x{byte:02X} — the file looks like Windows-1252/Latin-1); {}, \
             or re-encode it with iconv -f cp1252 -t utf-8",
            save_as(csv)
        )
    }
}

/// The first byte of `bytes` that is not valid UTF-8, if any.
pub(super) fn first_bad_byte(bytes: &[u8]) -> Option<u8> {
    match std::str::from_utf8(bytes) {
        Ok(_) => None,
        Err(e) => bytes.get(e.valid_up_to()).copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16le(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    #[test]
    fn utf16_is_found_by_bom_or_by_its_nuls_and_zeros_are_not() {
        assert_eq!(sniff(b"\xEF\xBB\xBFimage,prompt\n", ""), Start::Utf8 { bom: 3 });
        assert_eq!(sniff(b"image,prompt\n", ""), Start::Utf8 { bom: 0 });
        assert_eq!(sniff(b"", ""), Start::Utf8 { bom: 0 });
        let le = utf16le("image,prompt\r\nhttps://a.example/x.png,a cat\r\n");
        let no_bom = sniff(&le, "save it");
        assert!(
            matches!(&no_bom, Start::Utf16(m) if m.contains("UTF-16LE") && m.contains("save it")),
            "{no_bom:?}"
        );
        let mut with_bom = b"\xFF\xFE".to_vec();
        with_bom.extend(&le);
        assert!(matches!(sniff(&with_bom, ""), Start::Utf16(m) if m.contains("UTF-16LE")));
        let be: Vec<u8> = "image,prompt\n".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert!(matches!(sniff(&be, ""), Start::Utf16(m) if m.contains("UTF-16BE")));
        assert!(matches!(sniff(b"\xFE\xFFanything", ""), Start::Utf16(_)));
        // All NULs (a /dev/zero) is not text of any kind: left to the parser.
        assert_eq!(sniff(&[0u8; 4096], ""), Start::Utf8 { bom: 0 });
    }

    #[test]
    fn the_first_non_utf8_text_gets_the_advice_and_later_ones_point_to_it() {
        let mut seen = NotUtf8::default();
        let first = seen.message(3, 0xE9, true);
        assert_eq!(
            first,
            "is not UTF-8 text (byte 0xE9 — the file looks like Windows-1252/Latin-1); save the file as \
             \"CSV UTF-8\" in Excel, or re-encode it with iconv -f cp1252 -t utf-8"
        );
        assert_eq!(seen.message(7, 0x93, true), "is not UTF-8 text (byte 0x93; see line 3)");
        assert_eq!(first_bad_byte("caf\u{e9}".as_bytes()), None);
        assert_eq!(first_bad_byte(b"caf\xE9 au lait"), Some(0xE9));
    }
}
