//! The pure HPRIM Santé 2.x core: parse, path access, patients for the census, and a builder.
//! No I/O, no logging, no panics on any input.
//!
//! HPRIM Santé is the French laboratory-result format built on ASTM E1238/E1394: records `H`
//! (header), `P` (patient), `OBR` (request), `OBX` (result), `C` (comment), `A` (continuation),
//! `L` (end), plus `AP`/`AC`/`FAC`/`REG`/`ACT`/`ERR` in some message types. Any other record
//! type (1 to 3 uppercase letters or digits) is kept as it is, not refused.
//!
//! # Layout
//!
//! - [`message`]: [`Message`] and [`Record`], a one-pass index of the records of one message
//!   over the raw bytes; fields, repetitions and components are found lazily on access.
//!   [`parse_file`] splits a file holding several messages (`H` … `L`, `H` … `L`).
//! - [`path`]: [`HprimPath`], the notation `P.3`, `P.6.2`, `OBX[2].6`, `OBR.5[2].1`, parsed once.
//! - [`patient`]: [`patients`] reads `P` records into [`HprimPatient`] for the census.
//! - [`build`]: [`HprimBuilder`], record by record, escaping on write, `A` continuation past
//!   the line-length limit, ISO-8859-1 by default.
//!
//! # Delimiters: the positional rule
//!
//! Delimiters are read from the `H` record of every message, by position, with the same rule as
//! HL7 MSH-1/MSH-2: the byte right after `H` is the field separator; the next four bytes are, in
//! this order, the **component** separator (HPRIM "sous-champ"), the **repetition** separator
//! ("répétiteur"), the **escape** character and the **subcomponent** separator
//! ("sous-sous-champ"). So:
//!
//! - `H|~^\&` (the HPRIM reference order): `~` separates components, `^` repetitions;
//!   a name is written `DUPONT~JEAN`, the version `H2.2~C`.
//! - `H|^~\&` (writers that borrowed HL7 habits): `^` separates components, `~` repetitions;
//!   the name is `DUPONT^JEAN`, the version `H2.2^C`.
//!
//! The rule is positional and nothing else: no character is recognized by its shape, so
//! `H|\^&~` (seen in the wild) also works. Sources: HPRIM Santé 2.5 §7.2 as quoted in public
//! implementation notes ("1st field, 2nd sous-champ, 3rd répétiteur, 4th escape, 5th
//! sous-sous-champ"), the `HPRIMSDelimiters` class and test fixture of the open-source
//! `aiderpmsi/libHprim` parser (`H|~^\&` with `GAULLE~MARECHAL` as P.6 components and `TGO1~…^
//! TGP1~…` as OBR.5 repetitions), and an `H|^~\&` fixture with `SMITH^ALEX` as P.6 components.
//! Beware: in the reference order `~` is **not** the repetition separator, unlike HL7.
//!
//! Exactly four encoding characters are required (HPRIM has no truncation character); they must
//! be distinct ASCII punctuation, different from the field separator.
//!
//! # Records, lines and continuations
//!
//! Records end with CR, LF or CRLF; a missing final end, blank lines (only spaces or control
//! bytes) and a leading UTF-8 BOM are tolerated. An `A` record continues the previous record:
//! the bytes after `A|` are appended to the previous record's content as they are, so they
//! extend its last field and may add fields (HPRIM limits a line to 220 characters including its
//! end, HPRIM Santé 2.5 §B.1). Several `A` records in a row all continue the same record.
//! Errors name the physical line (1-based, counted in the input given to the parser, blank lines
//! included) of the record, as ``record 3 (`OBX`): field 4: …``.
//!
//! Field numbering follows HPRIM: the record type is field 1 (`P.1` is `P`), so the patient's
//! identifier is `P.3`; `H.2` is the four encoding characters (`~^\&`), never unescaped.
//!
//! Escape sequences are those of HL7 with the message's own delimiters: `\F\ \S\ \R\ \T\ \E\`
//! (field, component, repetition, subcomponent, escape), `\Xhh\`, `\.br\` (line break).
//!
//! Text is decoded in ISO-8859-1 (as windows-1252, its superset) unless the caller gives a
//! charset; a leading UTF-8 BOM without a caller charset means UTF-8.
//!
//! Refused, with the record and field named: input without an `H` record, a record before the
//! `H`, bad delimiters, a record type that is not 1 to 3 uppercase letters or digits, a message
//! without its `L` record (a truncated file), a record after the `L`, an `L` whose count of `P`
//! records (L.4, when numeric) does not match, more than one message given to
//! [`Message::parse`], more than 4 GiB.

pub mod build;
pub mod message;
pub mod path;
pub mod patient;

pub use build::{HprimBuilder, LineEnd, RecordBuilder};
pub use message::{Message, Record, parse_file};
pub use path::HprimPath;
pub use patient::{HprimPatient, patients};

/// Why HPRIM bytes could not be read or written; every variant names the record (1-based
/// physical line, or position in the builder), its type and the field when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HprimError {
    /// No record at all (empty input, or only blank lines).
    #[error("empty input: no `H` record")]
    Empty,
    /// Offsets are `u32`; nobody sends 4 GiB of HPRIM.
    #[error("input too large ({len} bytes): at most 4294967295 bytes")]
    TooLarge {
        /// Size of the input.
        len: usize,
    },
    /// A record comes before the `H` record that must open the message.
    #[error("record {record} (`{kind}`): expected an `H` record first")]
    NotHeader {
        /// Physical line, 1-based.
        record: usize,
        /// The record type as found, readable.
        kind: String,
    },
    /// The `H` record's delimiters (H.1 separator and H.2 encoding characters) are unusable.
    #[error("record {record} (`H`): field 2: {reason}")]
    Delimiters {
        /// Physical line, 1-based.
        record: usize,
        /// What is wrong, naming the character.
        reason: String,
    },
    /// A record type that is not 1 to 3 uppercase letters or digits.
    #[error(
        "record {record} (`{kind}`): invalid record type, expected 1 to 3 uppercase letters or digits"
    )]
    RecordType {
        /// Physical line (or builder position), 1-based.
        record: usize,
        /// The record type as found, readable.
        kind: String,
    },
    /// A record follows the `L` record that ended the message, and is not a new `H`.
    #[error("record {record} (`{kind}`): record after the `L` record that ended the message")]
    AfterEnd {
        /// Physical line, 1-based.
        record: usize,
        /// The record type, readable.
        kind: String,
    },
    /// The message is not closed by an `L` record (truncated file, or a new `H` too early).
    #[error("record {record} (`{kind}`): the message started at record {start} has no `L` record")]
    MissingEnd {
        /// Physical line of the last record read, or of the `H` that came too early.
        record: usize,
        /// Its type.
        kind: String,
        /// Physical line of the message's `H` record.
        start: usize,
    },
    /// [`Message::parse`] was given a file holding more than one message.
    #[error("record {record} (`H`): a second message starts here; read files with `parse_file`")]
    SeveralMessages {
        /// Physical line of the second `H`.
        record: usize,
    },
    /// The `L` record's count of `P` records (L.4) does not match the message.
    #[error("record {record} (`L`): field 4: declares {declared} `P` records, found {found}")]
    CountMismatch {
        /// Physical line of the `L` record.
        record: usize,
        /// The count written in L.4.
        declared: u64,
        /// The number of `P` records in the message.
        found: u64,
    },
    /// A path string is not a valid HPRIM path.
    #[error("invalid path `{path}`: {reason}")]
    Path {
        /// The path as given, readable.
        path: String,
        /// What was expected.
        reason: String,
    },
    /// The builder was asked for something it cannot write.
    #[error("record {record} (`{kind}`): field {field}: {reason}")]
    Build {
        /// Position of the record in the builder, 1-based.
        record: usize,
        /// Its type.
        kind: String,
        /// The field number (HPRIM numbering).
        field: usize,
        /// What is wrong.
        reason: String,
    },
    /// A character has no representation in the charset the builder writes.
    #[error(
        "record {record} (`{kind}`): field {field}: character `{ch}` (U+{code:04X}) cannot be encoded in {charset}",
        code = *.ch as u32
    )]
    Unmappable {
        /// Position of the record in the builder, 1-based.
        record: usize,
        /// Its type.
        kind: String,
        /// The field number (HPRIM numbering).
        field: usize,
        /// The offending character.
        ch: char,
        /// The charset's name (`8859/1`, …).
        charset: &'static str,
    },
}

/// Whether `kind` is a valid record type: 1 to 3 uppercase ASCII letters or digits.
pub(crate) fn is_record_type(kind: &[u8]) -> bool {
    (1..=3).contains(&kind.len())
        && kind
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_h(b"H", true)]
    #[case::ok_obx(b"OBX", true)]
    #[case::ok_ap(b"AP", true)]
    #[case::ok_digit(b"Z1", true)]
    #[case::err_empty(b"", false)]
    #[case::err_long(b"OBXX", false)]
    #[case::err_lower(b"obx", false)]
    #[case::err_punct(b"P~", false)]
    fn ok_record_type(#[case] kind: &[u8], #[case] expected: bool) {
        assert_eq!(is_record_type(kind), expected);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn exercise(raw: &[u8]) {
            let paths = [
                "H.2",
                "H.13.1",
                "P.3",
                "P.6.2",
                "P.6[2].1",
                "OBX.6",
                "OBX[2].6",
                "OBR.5[3].2.1",
                "L.4",
                "ZZ.1",
            ];
            let paths: Vec<HprimPath> = paths.iter().map(|p| p.parse().unwrap()).collect();
            let check = |m: &Message<'_>| {
                let _ = m.version();
                let _ = m.version_type();
                let _ = m.message_type();
                for r in m.records() {
                    for n in 0..=r.field_count() + 1 {
                        let _ = r.field(n);
                        let _ = r.text(n);
                        let _ = r.component(n, 2);
                    }
                }
                for p in &paths {
                    let _ = m.get(p);
                    let _ = m.text(p);
                }
                let _ = patients(m);
            };
            if let Ok(m) = Message::parse(raw, None) {
                assert_eq!(m.raw(), raw);
                check(&m);
            }
            if let Ok(ms) = parse_file(raw, Some(crate::hl7::Charset::Utf8)) {
                let joined: Vec<u8> = ms.iter().flat_map(|m| m.raw().to_vec()).collect();
                assert_eq!(joined, raw);
                for m in &ms {
                    check(m);
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn never_panics_on_bytes(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
                exercise(&raw);
            }

            #[test]
            fn never_panics_after_valid_h(
                tail in proptest::collection::vec(
                    prop_oneof![
                        Just(b'|'), Just(b'^'), Just(b'~'), Just(b'\\'), Just(b'&'),
                        Just(b'\r'), Just(b'\n'), Just(b'A'), Just(b'L'), Just(b'P'),
                        Just(b'H'), Just(b'1'), any::<u8>()
                    ],
                    0..512,
                )
            ) {
                let mut raw = b"H|^~\\&|".to_vec();
                raw.extend_from_slice(&tail);
                exercise(&raw);
            }

            #[test]
            fn never_panics_on_records(
                recs in proptest::collection::vec(
                    ("(H|P|OBR|OBX|C|A|L|AP|ZZ)", "[|^~\\\\&A-Z0-9 .]{0,40}"),
                    0..12,
                ),
                sep in prop_oneof![Just("\r"), Just("\n"), Just("\r\n")],
            ) {
                let mut raw = String::from("H|~^\\&|F.HPR||LAB~X||ORU|||DEST||P|H2.2~C|20240101");
                for (kind, body) in recs {
                    raw.push_str(sep);
                    raw.push_str(&kind);
                    raw.push('|');
                    raw.push_str(&body);
                }
                exercise(raw.as_bytes());
            }

            #[test]
            fn never_panics_on_path_text(s in "\\PC{0,24}") {
                let _ = s.parse::<HprimPath>();
            }
        }
    }
}
