//! A queued file with a companion (a document written beside an HPRIM message): one outbound
//! payload carries both, so they are committed, retried and delivered as one.
//!
//! The envelope starts with a NUL byte, which no HL7 or HPRIM message does, so a plain payload
//! is never mistaken for it: `\0OBCOMPANION1\0`, the companion's extension (ASCII
//! alphanumerics, at most 8), `\0`, the message length as 8 bytes big-endian, the message,
//! then the companion's bytes.

const MAGIC: &[u8] = b"\0OBCOMPANION1\0";

/// The envelope of `message` with `companion` (its file extension `extension`, e.g. `pdf`).
pub fn encode(message: &[u8], extension: &str, companion: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(MAGIC.len() + extension.len() + 9 + message.len() + companion.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(extension.as_bytes());
    out.push(0);
    out.extend_from_slice(&(message.len() as u64).to_be_bytes());
    out.extend_from_slice(message);
    out.extend_from_slice(companion);
    out
}

/// Whether `payload` is an envelope (a message with its companion file), which only a file
/// destination can deliver.
pub fn is_envelope(payload: &[u8]) -> bool {
    payload.starts_with(MAGIC)
}

/// A companion file: its extension and its bytes.
pub type Companion<'a> = (&'a str, &'a [u8]);

/// A payload read back: the message, and the companion when the payload is an envelope.
/// `None` for a damaged envelope.
pub fn decode(payload: &[u8]) -> Option<(&[u8], Option<Companion<'_>>)> {
    let Some(rest) = payload.strip_prefix(MAGIC) else {
        return Some((payload, None));
    };
    let end = rest.iter().position(|b| *b == 0)?;
    let extension = std::str::from_utf8(rest.get(..end)?).ok()?;
    if extension.is_empty()
        || extension.len() > 8
        || !extension.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let rest = rest.get(end + 1..)?;
    let length = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let length = usize::try_from(length).ok()?;
    let rest = rest.get(8..)?;
    let message = rest.get(..length)?;
    let companion = rest.get(length..)?;
    Some((message, Some((extension, companion))))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ok_round_trip_and_plain_payloads() {
        let envelope = encode(b"H|~^\\&|\r\nL|1\r\n", "pdf", b"%PDF-1.4 \0 bytes");
        assert_eq!(
            decode(&envelope),
            Some((
                &b"H|~^\\&|\r\nL|1\r\n"[..],
                Some(("pdf", &b"%PDF-1.4 \0 bytes"[..]))
            ))
        );
        assert_eq!(decode(b"MSH|^~\\&|"), Some((&b"MSH|^~\\&|"[..], None)));
    }

    #[test]
    fn ok_is_envelope() {
        assert!(is_envelope(&encode(b"H|", "pdf", b"x")));
        assert!(!is_envelope(b"MSH|^~\\&|A"));
        assert!(!is_envelope(b""));
    }

    #[test]
    fn err_damaged_envelopes() {
        let envelope = encode(b"H|", "pdf", b"x");
        assert_eq!(decode(&envelope[..envelope.len() - 2]), None);
        assert_eq!(decode(&encode(b"H|", "p/f", b"x")), None);
        assert_eq!(decode(&encode(b"H|", "", b"x")), None);
    }
}
