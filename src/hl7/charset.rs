//! Character sets named by MSH-18, so that accents survive from French senders to our strings
//! and back.
//!
//! Accepted MSH-18 values (case-insensitive, first repetition): empty or `ASCII` (decoded as
//! UTF-8 when valid, else Latin-1: "ASCII" senders do send accents), `8859/1` (decoded as
//! windows-1252, the superset encoding_rs gives for Latin-1), `8859/15`, `UNICODE UTF-8`,
//! `UTF-8`, `UNICODE`. Anything else is refused by the parser unless the caller overrides it.

use std::borrow::Cow;

use encoding_rs::{EncoderResult, Encoding, ISO_8859_15, UTF_8, WINDOWS_1252};

/// The character set of a message: how its bytes become text and text becomes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Charset {
    /// MSH-18 empty: ASCII in theory; decoded tolerantly (UTF-8 when valid, else Latin-1).
    #[default]
    Ascii,
    /// `8859/1`, decoded and encoded as windows-1252.
    Latin1,
    /// `8859/15` (has `€`).
    Latin9,
    /// `UNICODE UTF-8`.
    Utf8,
}

/// Why text could not be encoded in the requested charset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharsetError {
    /// The character has no representation in the target charset.
    #[error("character `{ch}` (U+{code:04X}) at char {index} cannot be encoded in {charset}", code = *.ch as u32)]
    Unmappable {
        /// The offending character.
        ch: char,
        /// Its index in the text, in characters.
        index: usize,
        /// The target charset's MSH-18 name.
        charset: &'static str,
    },
}

impl Charset {
    /// Maps an MSH-18 value to a charset; `None` for values we do not support.
    pub fn from_msh18(value: &str) -> Option<Charset> {
        let v = value.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("ASCII") {
            Some(Charset::Ascii)
        } else if v.eq_ignore_ascii_case("8859/1") {
            Some(Charset::Latin1)
        } else if v.eq_ignore_ascii_case("8859/15") {
            Some(Charset::Latin9)
        } else if v.eq_ignore_ascii_case("UNICODE UTF-8")
            || v.eq_ignore_ascii_case("UTF-8")
            || v.eq_ignore_ascii_case("UNICODE")
        {
            Some(Charset::Utf8)
        } else {
            None
        }
    }

    /// The canonical MSH-18 value to write for this charset.
    pub fn msh18(self) -> &'static str {
        match self {
            Charset::Ascii => "",
            Charset::Latin1 => "8859/1",
            Charset::Latin9 => "8859/15",
            Charset::Utf8 => "UNICODE UTF-8",
        }
    }

    fn encoding(self) -> &'static Encoding {
        match self {
            Charset::Ascii | Charset::Utf8 => UTF_8,
            Charset::Latin1 => WINDOWS_1252,
            Charset::Latin9 => ISO_8859_15,
        }
    }

    /// Decodes bytes to text, borrowing when the bytes are already valid UTF-8 in a UTF-8
    /// compatible charset. Never fails: invalid UTF-8 becomes U+FFFD, and "ASCII" falls back to
    /// Latin-1.
    pub fn decode(self, bytes: &[u8]) -> Cow<'_, str> {
        match self {
            Charset::Ascii => match std::str::from_utf8(bytes) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => WINDOWS_1252.decode_without_bom_handling(bytes).0,
            },
            other => other.encoding().decode_without_bom_handling(bytes).0,
        }
    }

    /// Whether `text` can be encoded in this charset (the error [`Charset::encode`] gives),
    /// without building the encoded text.
    pub fn check(self, text: &str) -> Result<(), CharsetError> {
        let enc = self.encoding();
        if enc == UTF_8 || text.is_ascii() {
            return Ok(());
        }
        let mut encoder = enc.new_encoder();
        let mut buf = [0u8; 256];
        let mut rest = text;
        loop {
            let (result, read, _) =
                encoder.encode_from_utf8_without_replacement(rest, &mut buf, true);
            match result {
                EncoderResult::InputEmpty => return Ok(()),
                EncoderResult::OutputFull => rest = rest.get(read..).unwrap_or_default(),
                // The error as `encode` words it (which character, where).
                EncoderResult::Unmappable(_) => return self.encode(text).map(|_| ()),
            }
        }
    }

    /// Encodes text in this charset. `Ascii` writes UTF-8 (tolerant, as for reading).
    pub fn encode(self, text: &str) -> Result<Cow<'_, [u8]>, CharsetError> {
        let enc = self.encoding();
        if enc == UTF_8 || text.is_ascii() {
            return Ok(Cow::Borrowed(text.as_bytes()));
        }
        let (bytes, _, had_errors) = enc.encode(text);
        if !had_errors {
            return Ok(bytes);
        }
        let mut buf = [0u8; 4];
        for (index, ch) in text.chars().enumerate() {
            let (_, _, bad) = enc.encode(ch.encode_utf8(&mut buf));
            if bad {
                return Err(CharsetError::Unmappable {
                    ch,
                    index,
                    charset: self.msh18(),
                });
            }
        }
        Ok(bytes)
    }
}

impl Charset {
    /// Encodes text, replacing characters the charset cannot represent with `?`; for ACKs and
    /// other output that must never fail.
    pub fn encode_lossy(self, text: &str) -> Cow<'_, [u8]> {
        match self.encode(text) {
            Ok(bytes) => bytes,
            Err(_) => {
                let enc = self.encoding();
                let mut out = Vec::with_capacity(text.len());
                let mut buf = [0u8; 4];
                for ch in text.chars() {
                    let (bytes, _, bad) = enc.encode(ch.encode_utf8(&mut buf));
                    if bad {
                        out.push(b'?');
                    } else {
                        out.extend_from_slice(&bytes);
                    }
                }
                Cow::Owned(out)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_empty("", Some(Charset::Ascii))]
    #[case::ok_ascii("ASCII", Some(Charset::Ascii))]
    #[case::ok_latin1("8859/1", Some(Charset::Latin1))]
    #[case::ok_latin9("8859/15", Some(Charset::Latin9))]
    #[case::ok_utf8("UNICODE UTF-8", Some(Charset::Utf8))]
    #[case::ok_utf8_short("utf-8", Some(Charset::Utf8))]
    #[case::ok_unicode("UNICODE", Some(Charset::Utf8))]
    #[case::err_unknown("XYZ", None)]
    fn ok_from_msh18(#[case] value: &str, #[case] expected: Option<Charset>) {
        assert_eq!(Charset::from_msh18(value), expected);
    }

    #[rstest]
    #[case::ok_latin1_e(Charset::Latin1, b"\xE9", "é")]
    #[case::ok_latin1_i(Charset::Latin1, b"Ana\xEFs", "Anaïs")]
    #[case::ok_latin1_euro_cp1252(Charset::Latin1, b"\x80", "€")]
    #[case::ok_latin9_euro(Charset::Latin9, b"\xA4", "€")]
    #[case::ok_utf8(Charset::Utf8, "é€ï".as_bytes(), "é€ï")]
    #[case::ok_ascii_utf8(Charset::Ascii, "é".as_bytes(), "é")]
    #[case::ok_ascii_latin1(Charset::Ascii, b"H\xE9l\xE8ne", "Hélène")]
    fn ok_decode(#[case] cs: Charset, #[case] bytes: &[u8], #[case] expected: &str) {
        assert_eq!(cs.decode(bytes), expected);
        if cs != Charset::Ascii {
            assert_eq!(cs.encode(expected).unwrap().as_ref(), bytes);
        }
    }

    #[rstest]
    #[case::ok_ascii(Charset::Latin1, "plain")]
    #[case::ok_latin1(Charset::Latin1, "comprimé € Œ")]
    #[case::ok_long(Charset::Latin9, &"é€".repeat(300))]
    #[case::ok_utf8(Charset::Utf8, "中")]
    #[case::err_latin1(Charset::Latin1, "ok 中")]
    #[case::err_latin9_far(Charset::Latin9, &format!("{}Œ½", "é".repeat(300)))]
    fn check_agrees_with_encode(#[case] cs: Charset, #[case] text: &str) {
        assert_eq!(cs.check(text), cs.encode(text).map(|_| ()));
    }

    #[test]
    fn ok_encode_lossy() {
        assert_eq!(Charset::Latin1.encode_lossy("é中").as_ref(), b"\xE9?");
        assert_eq!(Charset::Utf8.encode_lossy("é中").as_ref(), "é中".as_bytes());
    }

    #[test]
    fn err_encode_unmappable() {
        let err = Charset::Latin1.encode("ok 中").unwrap_err();
        assert_eq!(
            err.to_string(),
            "character `中` (U+4E2D) at char 3 cannot be encoded in 8859/1"
        );
    }
}
