//! Small helpers shared by the Posos client, its authentication and the simulator: bounded body
//! reads and untrusted text made readable inside error messages.

use std::fmt::Write as _;

/// Reads a response body, keeping at most `max` bytes so that a misbehaving peer cannot grow
/// the heap; the flag says whether the body was cut.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max.saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(chunk.get(..room).unwrap_or_default());
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// Untrusted bytes as one readable line of at most `max_chars` characters: invalid UTF-8 is
/// replaced, control characters are shown as `\x0B`, and a cut is marked with `…`.
pub(crate) fn readable(bytes: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (count, c) in text.trim().chars().enumerate() {
        if count >= max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            let _ = write!(out, "\\x{:02X}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::readable;
    use rstest::rstest;

    #[rstest]
    #[case::ok_plain(b"bad rpps", 50, "bad rpps")]
    #[case::ok_control(b"a\x0Bb\r\n", 50, "a\\x0Bb")]
    #[case::ok_cut(b"abcdef", 3, "abc\u{2026}")]
    #[case::ok_invalid_utf8(b"a\xFFb", 50, "a\u{FFFD}b")]
    #[case::ok_multibyte_cut("\u{e9}t\u{e9}".as_bytes(), 2, "\u{e9}t\u{2026}")]
    fn readable_cases(#[case] input: &[u8], #[case] max: usize, #[case] expected: &str) {
        assert_eq!(readable(input, max), expected);
    }
}
