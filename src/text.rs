//! Text for people made from what we do not control: untrusted bytes shown readably inside
//! error messages and logs, text escaped for HTML pages, and errors printed with their causes.
//!
//! Pure (no I/O, no logging): the parsers (`hl7`, `hprim`, `mapping`, `posos::bundle`) use it
//! for their error texts, the workers for their log lines, the HTTP pages and the simulator
//! for their HTML.

use std::fmt::Write as _;

/// Renders untrusted bytes readably for error messages: printable ASCII as is, valid UTF-8
/// characters as is, everything else as `\xNN` (`\r`, `\n`, `\t` by name), so a stray `\x0B`
/// is visible in a log line.
pub fn readable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_readable_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out
}

/// [`readable`], cut after `max` bytes (then `…`).
pub fn readable_prefix(bytes: &[u8], max: usize) -> String {
    match bytes.get(..max) {
        Some(head) if bytes.len() > max => format!("{}…", readable(head)),
        _ => readable(bytes),
    }
}

/// Untrusted bytes (a peer's answer, a JSON value) as one readable line of at most
/// `max_chars` characters: invalid UTF-8 is replaced (`\u{FFFD}`), surrounding white space
/// trimmed, control characters escaped as in [`readable`], and a cut is marked with `…`.
pub fn readable_line(bytes: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (count, c) in text.trim().chars().enumerate() {
        if count >= max_chars {
            out.push('…');
            break;
        }
        push_readable_char(&mut out, c);
    }
    out
}

fn push_readable_char(out: &mut String, c: char) {
    if !c.is_control() {
        out.push(c);
        return;
    }
    let _ = match c {
        '\r' => out.write_str("\\r"),
        '\n' => out.write_str("\\n"),
        '\t' => out.write_str("\\t"),
        c if u32::from(c) < 0x100 => write!(out, "\\x{:02X}", u32::from(c)),
        c => write!(out, "\\u{{{:X}}}", u32::from(c)),
    };
}

/// Escapes text for an HTML element or a double-quoted attribute; control characters other
/// than a line feed are shown as `\xNN` rather than passed to the browser.
pub fn escape_html(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {
                let _ = write!(out, "\\x{:02X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// An error and its causes joined with `": "` (jiff's habit), as logged and as stored in the
/// queue's `last_error`: many library errors (reqwest, io wrapped in ours) say the useful
/// part only in their source.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let _ = write!(text, ": {error}");
        cause = error.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_ascii(b"PID", "PID")]
    #[case::ok_control(b"\x0BMSH\r", "\\x0BMSH\\r")]
    #[case::ok_utf8("é".as_bytes(), "é")]
    #[case::ok_invalid(b"\xE9t\xE9", "\\xE9t\\xE9")]
    fn ok_readable(#[case] input: &[u8], #[case] expected: &str) {
        assert_eq!(readable(input), expected);
    }

    #[test]
    fn ok_readable_prefix() {
        assert_eq!(readable_prefix(b"ABCDEF", 3), "ABC…");
        assert_eq!(readable_prefix(b"ABC", 3), "ABC");
    }

    #[rstest]
    #[case::ok_plain(b"bad rpps", 50, "bad rpps")]
    #[case::ok_control(b"a\x0Bb\r\n", 50, "a\\x0Bb")]
    #[case::ok_cut(b"abcdef", 3, "abc\u{2026}")]
    #[case::ok_invalid_utf8(b"a\xFFb", 50, "a\u{FFFD}b")]
    #[case::ok_multibyte_cut("\u{e9}t\u{e9}".as_bytes(), 2, "\u{e9}t\u{2026}")]
    #[case::ok_inner_line_end(b"a\r\nb", 50, "a\\r\\nb")]
    fn readable_line_cases(#[case] input: &[u8], #[case] max: usize, #[case] expected: &str) {
        assert_eq!(readable_line(input, max), expected);
    }

    #[rstest]
    #[case::ok_plain("Patient inconnu", "Patient inconnu")]
    #[case::ok_markup(
        "<script>alert('x')</script> & \"q\"",
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
    )]
    #[case::ok_controls("a\nb\x0Bc", "a\nb\\x0Bc")]
    fn escape_html_cases(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(escape_html(input), expected);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn ok_error_chain_joins_causes() {
        let error = Outer(Middle(std::io::Error::other("inner")));
        assert_eq!(error_chain(&error), "outer: middle: inner");
        assert_eq!(error_chain(&std::io::Error::other("alone")), "alone");
    }
}
