//! The pure HL7v2 core: zero-copy parsing, escapes, charsets (MSH-18), path access, building,
//! batches and acknowledgments. No I/O, no logging, no panics on any input.
//!
//! # Layout
//!
//! - [`delim`]: the delimiter set read from MSH-1/MSH-2, with precise refusals.
//! - [`message`]: [`Message`], a one-pass index of segment and field offsets over the raw bytes;
//!   repetitions, components and subcomponents are found lazily when a [`Path`] asks for them.
//! - [`path`]: the analysts' notation (`PID-3[2].1`, `OBX[2]-5`), parsed once, reused.
//! - [`escape`]: `\F\ \S\ \T\ \R\ \E\ \P\ \Xhh\ \.br\` decoded on read, applied on write.
//! - [`charset`]: MSH-18 values to encoders/decoders (`8859/1`, `8859/15`, `UNICODE UTF-8`).
//! - [`build`]: [`MessageBuilder`], set values by path and serialize with CR segment ends.
//! - [`batch`]: split FHS/BHS/BTS/FTS payloads (and bare MSH runs) into messages.
//! - [`ack`]: original and enhanced mode ACK/NACK with an ERR segment, even for messages that
//!   did not parse.
//!
//! Accepted from sloppy senders: LF or CRLF segment ends, blank lines, a missing final CR, a
//! leading UTF-8 BOM, accents in "ASCII" messages, unknown or unterminated escapes (kept as
//! written). Refused with an error naming what and where: anything not starting with `MSH`,
//! duplicate/alphanumeric/non-ASCII delimiters, malformed segment ids, unknown MSH-18 values.

pub mod ack;
pub mod batch;
pub mod build;
pub mod charset;
pub mod code;
pub mod delim;
pub mod escape;
pub mod message;
pub mod path;

pub use ack::{AckError, AckOutcome, AckRequest, build_ack};
pub use batch::{Batch, BatchError, BatchGroup, split};
pub use build::{BuildError, MessageBuilder};
pub use charset::{Charset, CharsetError};
pub use code::{ErrLocation, ErrorCode};
pub use delim::Delimiters;
pub use message::{Header, Message, ParseError, Segment};
pub use path::{Path, PathError};

/// The readable rendering of untrusted bytes in error texts lives in [`crate::text`]; named
/// here too for the mapping code that still reaches it through `hl7` (issue 12 moves it).
pub(crate) use crate::text::{readable, readable_prefix};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn exercise(raw: &[u8]) {
            let ids = ["MSH", "PID", "PV1", "OBX", "ZBE", "EVN"];
            if let Ok(m) = Message::parse(raw) {
                let _ = m.header();
                for s in m.segments() {
                    for n in 0..=s.field_count() + 1 {
                        let _ = s.field(n);
                    }
                }
                for id in ids {
                    for occ in 1..=2 {
                        for field in 1..=20 {
                            for (rep, comp, sub) in [
                                (None, None, None),
                                (Some(2), Some(1), None),
                                (None, Some(2), Some(2)),
                            ] {
                                if let Ok(p) = Path::new(id, occ, field, rep, comp, sub) {
                                    let _ = m.get(&p);
                                    let _ = m.text(&p);
                                }
                            }
                        }
                    }
                }
                let b = MessageBuilder::from_message(&m);
                let _ = b.to_bytes();
                let r = AckRequest::from_message(&m);
                let _ = build_ack(&r, AckOutcome::Accepted, None, "1", "2");
            }
            let _ = split(raw);
            let r = AckRequest::salvage(raw);
            let err = AckError {
                code: ErrorCode::DataType,
                location: None,
                message: String::from_utf8_lossy(raw).into_owned(),
            };
            let ack = build_ack(&r, AckOutcome::Error, Some(&err), "1", "2");
            if let Some(ack) = ack {
                prop_assert_parses(&ack);
            }
        }

        fn prop_assert_parses(ack: &[u8]) {
            // A NACK for any input must itself be a parseable message.
            assert!(Message::parse(ack).is_ok(), "{}", readable(ack));
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn never_panics_on_bytes(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
                exercise(&raw);
            }

            #[test]
            fn never_panics_after_valid_msh(
                tail in proptest::collection::vec(
                    prop_oneof![
                        Just(b'|'), Just(b'^'), Just(b'~'), Just(b'\\'), Just(b'&'),
                        Just(b'\r'), Just(b'\n'), Just(b'A'), Just(b'1'), any::<u8>()
                    ],
                    0..512,
                )
            ) {
                let mut raw = b"MSH|^~\\&|".to_vec();
                raw.extend_from_slice(&tail);
                exercise(&raw);
            }

            #[test]
            fn never_panics_on_segments(
                segs in proptest::collection::vec(
                    ("(PID|PV1|OBX|ZBE|BHS|BTS|FHS|FTS|MSH)", "[|^~\\\\&A-Z0-9 .]{0,40}"),
                    0..12,
                ),
                sep in prop_oneof![Just("\r"), Just("\n"), Just("\r\n")],
            ) {
                let mut raw = String::from("MSH|^~\\&|A|B|||||ADT^A01|1|P|2.5");
                for (id, body) in segs {
                    raw.push_str(sep);
                    raw.push_str(&id);
                    raw.push_str(&body);
                }
                exercise(raw.as_bytes());
            }

            #[test]
            fn never_panics_on_path_text(s in "\\PC{0,24}") {
                let _ = s.parse::<Path>();
            }

            #[test]
            fn escape_round_trips(s in "\\PC{0,64}") {
                let d = Delimiters::default();
                let escaped = escape::escape(&s, &d);
                let back = escape::unescape(escaped.as_bytes(), &d);
                let expected = s.replace("\r\n", "\n").replace('\r', "\n");
                prop_assert_eq!(String::from_utf8_lossy(&back), expected);
            }
        }
    }
}
