//! Query strings of launch links: a lenient decoder and the canonical encoder that signatures use.
//!
//! Accepted when decoding: `application/x-www-form-urlencoded` (`+` is a space, `%XX` a byte),
//! repeated names (kept in order), empty values, names without `=`. Deliberately lenient: a `%`
//! not followed by two hex digits is kept as it is and bytes that are not UTF-8 become U+FFFD,
//! because an EHR's link builder is sloppy and a launch should not fail on a stray `%`. The
//! signature check works on the decoded pairs, so leniency cannot make two different links share
//! a signature.

/// Splits a raw query (`a=1&b=2`, without `?`) into decoded `(name, value)` pairs, in order.
pub(crate) fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((name, value)) => (decode_component(name), decode_component(value)),
            None => (decode_component(part), String::new()),
        })
        .collect()
}

/// The first non-blank value of `name`, trimmed.
pub(crate) fn first<'q>(pairs: &'q [(String, String)], name: &str) -> Option<&'q str> {
    pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.trim())
        .find(|v| !v.is_empty())
}

/// Decodes one component: `+` is a space, `%XX` a byte; anything else is kept.
fn decode_component(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex_value);
                let low = bytes.get(i + 2).copied().and_then(hex_value);
                if let (Some(high), Some(low)) = (high, low) {
                    out.push(high << 4 | low);
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes everything but the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`),
/// with upper-case hex: one spelling per value, so signer and verifier agree byte for byte.
pub(crate) fn encode_component(input: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(input.len());
    for &b in input.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
    out
}

/// The canonical query that a signature covers: every pair except `sig`, sorted by name then
/// value, each side encoded with [`encode_component`], joined with `&`.
pub(crate) fn canonical_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut kept: Vec<(&str, &str)> = pairs.into_iter().filter(|(n, _)| *n != "sig").collect();
    kept.sort_unstable();
    let mut out = String::new();
    for (i, (name, value)) in kept.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&encode_component(name));
        out.push('=');
        out.push_str(&encode_component(value));
    }
    out
}

/// Untrusted text made readable for a message: control characters as `\x0B` (or `\u{85}`),
/// backslashes doubled, everything else kept.
pub(crate) fn escape_text(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02X}", u32::from(c))),
            c if c.is_control() => out.push_str(&format!("\\u{{{:X}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[rstest]
    #[case::ok_simple("ipp=123&rpps=10000000001", &[("ipp", "123"), ("rpps", "10000000001")])]
    #[case::ok_plus_and_percent("last_name=DE+LA+TOUR&first_name=J%C3%A9r%C3%B4me", &[("last_name", "DE LA TOUR"), ("first_name", "Jérôme")])]
    #[case::ok_repeated("ucds=1&ucds=2", &[("ucds", "1"), ("ucds", "2")])]
    #[case::ok_no_value("flag&x=", &[("flag", ""), ("x", "")])]
    #[case::ok_empty_parts("&&a=1&", &[("a", "1")])]
    #[case::ok_stray_percent("a=100%&b=%zz&c=%4", &[("a", "100%"), ("b", "%zz"), ("c", "%4")])]
    #[case::ok_not_utf8("a=%FF", &[("a", "\u{FFFD}")])]
    #[case::ok_equals_in_value("sig=ab==", &[("sig", "ab==")])]
    #[case::ok_empty("", &[])]
    fn parse(#[case] raw: &str, #[case] expected: &[(&str, &str)]) {
        assert_eq!(parse_query(raw), owned(expected));
    }

    #[rstest]
    #[case::ok_unreserved("aZ09-._~", "aZ09-._~")]
    #[case::ok_space_and_accent("é a", "%C3%A9%20a")]
    #[case::ok_reserved("a&b=c+d/e", "a%26b%3Dc%2Bd%2Fe")]
    fn encode(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(encode_component(input), expected);
    }

    #[test]
    fn ok_canonical_sorts_and_drops_sig() {
        let pairs = owned(&[("rpps", "1"), ("sig", "x"), ("exp", "9"), ("ipp", "a b")]);
        let canonical = canonical_query(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        assert_eq!(canonical, "exp=9&ipp=a%20b&rpps=1");
    }

    #[rstest]
    #[case::ok_plain("abc", "abc")]
    #[case::ok_vertical_tab("1\u{0B}", "1\\x0B")]
    #[case::ok_nul_and_cr("a\0\r", "a\\x00\\x0D")]
    #[case::ok_c1("x\u{85}", "x\\u{85}")]
    #[case::ok_backslash("a\\b", "a\\\\b")]
    fn escape(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(escape_text(input), expected);
    }

    #[test]
    fn ok_first_skips_blank_values() {
        let pairs = owned(&[("ipp", " "), ("ipp", " 42 "), ("ipp", "43")]);
        assert_eq!(first(&pairs, "ipp"), Some("42"));
        assert_eq!(first(&pairs, "nda"), None);
    }
}
