//! HL7 escape sequences, decoded when a value is read and applied when a value is written, so
//! that a `|` or `^` in a patient's name never breaks the structure.
//!
//! Decoded: `\F\ \S\ \T\ \R\ \E\` (the delimiters), `\P\` (truncation character, when the
//! message declares one), `\Xhh…\` (raw bytes, decoded later in the message charset), `\.br\`
//! (line break, `\n`). Kept as written: `\H\ \N\` (highlighting), unknown sequences and an
//! unterminated escape (sloppy senders), so no text is ever dropped. Written: the delimiters,
//! and line breaks (`\n`, `\r`, `\r\n`) as `\.br\`.
//!
//! Escapes are shown here with `\`; the message's own escape character is used in practice.

use std::borrow::Cow;

use memchr::memchr;

use crate::hl7::delim::Delimiters;

/// Decodes the escape sequences of a raw value; borrows when there is nothing to decode.
pub fn unescape<'a>(raw: &'a [u8], d: &Delimiters) -> Cow<'a, [u8]> {
    let esc = d.escape();
    let Some(first) = memchr(esc, raw) else {
        return Cow::Borrowed(raw);
    };
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(raw.get(..first).unwrap_or_default());
    let mut i = first;
    while let Some(rest) = raw.get(i..).filter(|r| !r.is_empty()) {
        let Some(open) = memchr(esc, rest) else {
            out.extend_from_slice(rest);
            break;
        };
        out.extend_from_slice(rest.get(..open).unwrap_or_default());
        let after = rest.get(open + 1..).unwrap_or_default();
        let Some(close) = memchr(esc, after) else {
            // Unterminated: keep literally.
            out.extend_from_slice(rest.get(open..).unwrap_or_default());
            break;
        };
        let seq = after.get(..close).unwrap_or_default();
        if decode_sequence(seq, d, &mut out) {
            i += open + 1 + close + 1;
        } else {
            // Unknown: keep the escape and the sequence, rescan from the closing escape so that
            // it may open the next sequence.
            out.push(esc);
            out.extend_from_slice(seq);
            i += open + 1 + close;
        }
    }
    Cow::Owned(out)
}

/// Appends the decoding of one known sequence; false when the sequence is unknown.
fn decode_sequence(seq: &[u8], d: &Delimiters, out: &mut Vec<u8>) -> bool {
    match seq {
        b"F" => out.push(d.field()),
        b"S" => out.push(d.component()),
        b"T" => out.push(d.subcomponent()),
        b"R" => out.push(d.repetition()),
        b"E" => out.push(d.escape()),
        b"P" if d.truncation().is_some() => {
            if let Some(t) = d.truncation() {
                out.push(t);
            }
        }
        b".br" => out.push(b'\n'),
        [b'X', hex @ ..] if !hex.is_empty() && hex.len() % 2 == 0 => {
            let start = out.len();
            for pair in hex.chunks_exact(2) {
                match pair {
                    [h, l] => match (hex_val(*h), hex_val(*l)) {
                        (Some(h), Some(l)) => out.push(h << 4 | l),
                        _ => {
                            out.truncate(start);
                            return false;
                        }
                    },
                    _ => return false,
                }
            }
        }
        _ => return false,
    }
    true
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Escapes a value for writing: delimiters become `\F\ \S\ \R\ \E\ \T\ \P\`, line breaks
/// become `\.br\`. Borrows when nothing needs escaping.
pub fn escape<'t>(text: &'t str, d: &Delimiters) -> Cow<'t, str> {
    if !text
        .bytes()
        .any(|b| d.is_delimiter(b) || b == b'\r' || b == b'\n')
    {
        return Cow::Borrowed(text);
    }
    let esc = char::from(d.escape());
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let code = match u8::try_from(c) {
            Ok(b) if b == d.field() => "F",
            Ok(b) if b == d.component() => "S",
            Ok(b) if b == d.repetition() => "R",
            Ok(b) if b == d.escape() => "E",
            Ok(b) if b == d.subcomponent() => "T",
            Ok(b) if Some(b) == d.truncation() => "P",
            Ok(b'\r') => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                ".br"
            }
            Ok(b'\n') => ".br",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push(esc);
        out.push_str(code);
        out.push(esc);
    }
    Cow::Owned(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn std_d() -> Delimiters {
        Delimiters::default()
    }

    #[rstest]
    #[case::ok_plain("Dupont", "Dupont")]
    #[case::ok_field("a\\F\\b", "a|b")]
    #[case::ok_component("a\\S\\b", "a^b")]
    #[case::ok_sub("a\\T\\b", "a&b")]
    #[case::ok_rep("a\\R\\b", "a~b")]
    #[case::ok_escape("a\\E\\b", "a\\b")]
    #[case::ok_hex("\\X41\\", "A")]
    #[case::ok_hex_multi("\\X4142c3a9\\", "ABé")]
    #[case::ok_br("line1\\.br\\line2", "line1\nline2")]
    #[case::ok_highlight_kept("\\H\\bold\\N\\", "\\H\\bold\\N\\")]
    #[case::ok_unknown_kept("\\Zabc\\x", "\\Zabc\\x")]
    #[case::ok_unterminated_kept("abc\\F", "abc\\F")]
    #[case::ok_unknown_then_known("\\H\\\\F\\", "\\H\\|")]
    #[case::ok_bad_hex_kept("\\XZZ\\", "\\XZZ\\")]
    #[case::ok_odd_hex_kept("\\X4\\", "\\X4\\")]
    #[case::ok_empty_kept("\\\\", "\\\\")]
    #[case::ok_truncation_without_declaration("\\P\\", "\\P\\")]
    fn ok_unescape(#[case] raw: &str, #[case] expected: &str) {
        let out = unescape(raw.as_bytes(), &std_d());
        assert_eq!(String::from_utf8_lossy(&out), expected);
    }

    #[test]
    fn ok_unescape_alternate() {
        let d = Delimiters::from_chars("$%*!@#").unwrap();
        assert_eq!(unescape(b"a!F!b!S!c!P!!X41!", &d).as_ref(), b"a$b%c#A");
        assert_eq!(escape("a$b%c#A!", &d), "a!F!b!S!c!P!A!E!");
    }

    #[rstest]
    #[case::ok_plain("Dupont", "Dupont")]
    #[case::ok_delims("a|b^c~d\\e&f", "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f")]
    #[case::ok_lf("l1\nl2", "l1\\.br\\l2")]
    #[case::ok_crlf("l1\r\nl2", "l1\\.br\\l2")]
    #[case::ok_cr("l1\rl2", "l1\\.br\\l2")]
    #[case::ok_accents("Hélène", "Hélène")]
    fn ok_escape(#[case] text: &str, #[case] expected: &str) {
        let escaped = escape(text, &std_d());
        assert_eq!(escaped, expected);
        let back = unescape(escaped.as_bytes(), &std_d());
        assert_eq!(
            String::from_utf8_lossy(&back),
            text.replace("\r\n", "\n").replace('\r', "\n")
        );
    }
}
