//! [`Message`]: a zero-copy index over the raw bytes of one HL7v2 message, built in one pass.
//!
//! `parse` scans the bytes once (8 at a time) for the field separator, CR and LF, and records
//! segment starts and field boundaries as `u32` offsets in two flat vectors. Repetitions,
//! components and subcomponents are found lazily inside the field slice when a [`Path`] asks.
//!
//! Accepted: a leading UTF-8 BOM, CR, LF or CRLF segment ends, blank (or whitespace-only)
//! lines, a missing final CR, any valid delimiter set. Refused: anything not starting with
//! `MSH`, bad delimiters (see [`crate::hl7::delim`]), segment ids that are not 3 uppercase
//! letters or digits, an unknown MSH-18 without a caller override, more than 4 GiB.

use std::borrow::Cow;

use memchr::memchr_iter;

use crate::hl7::charset::Charset;
use crate::hl7::code::{ErrLocation, ErrorCode};
use crate::hl7::delim::Delimiters;
use crate::hl7::escape::unescape;
use crate::hl7::path::{Path, PathError};
use crate::text::readable_prefix;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why bytes are not an HL7v2 message we can index; says what and where, and maps to a table
/// 0357 code and an ERR location for the NACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// No bytes (or only a BOM).
    #[error("empty message")]
    Empty,
    /// Offsets are `u32`; nobody sends 4 GiB of HL7.
    #[error("message too large ({len} bytes): at most 4294967295 bytes")]
    TooLarge {
        /// Size of the input.
        len: usize,
    },
    /// The first segment is not MSH.
    #[error("message does not start with `MSH` (found `{found}`)")]
    NotMsh {
        /// The first bytes, readable.
        found: String,
    },
    /// The header segment ends before its delimiters.
    #[error("{segment} segment too short ({len} bytes): expected at least `MSH|^~\\&`")]
    TooShort {
        /// `MSH` (or `FHS`/`BHS` in batches).
        segment: String,
        /// Its length.
        len: usize,
    },
    /// MSH-1 or MSH-2 holds a byte that cannot be a delimiter.
    #[error("{field} at byte {offset}: {reason}")]
    Delimiter {
        /// `MSH-1` or `MSH-2`.
        field: String,
        /// Offset of the offending byte in the input.
        offset: usize,
        /// What is wrong, naming the character.
        reason: String,
    },
    /// A segment id that is not 3 uppercase letters or digits.
    #[error(
        "segment {number} (`{id}`) at byte {offset}: invalid segment id, expected 3 uppercase letters or digits"
    )]
    SegmentId {
        /// Position of the segment in the message, 1-based.
        number: usize,
        /// The id as found, readable.
        id: String,
        /// Offset of the segment in the input.
        offset: usize,
    },
    /// MSH-18 names a charset we cannot decode.
    #[error("unsupported charset `{value}` in MSH-18")]
    Charset {
        /// The MSH-18 value, readable.
        value: String,
    },
}

impl ParseError {
    /// The same sentence without the bytes quoted from the message (the start of a message
    /// that is not MSH may be a PID segment): what goes to logs at info level and above.
    pub fn without_values(&self) -> String {
        match self {
            ParseError::NotMsh { .. } => "message does not start with `MSH`".to_string(),
            other => other.to_string(),
        }
    }

    /// Where the error is, for ERR-2/ERR-1.
    pub fn location(&self) -> Option<ErrLocation> {
        let at = |segment: &str, field: usize| ErrLocation {
            segment: segment.into(),
            sequence: 1,
            field,
            component: 0,
        };
        match self {
            ParseError::Empty | ParseError::NotMsh { .. } => Some(at("MSH", 0)),
            ParseError::TooLarge { .. } => None,
            ParseError::TooShort { segment, .. } => Some(at(segment, 1)),
            ParseError::Delimiter { field, .. } => {
                let (seg, num) = field.split_once('-').unwrap_or(("MSH", "2"));
                Some(at(seg, num.parse().unwrap_or(2)))
            }
            ParseError::SegmentId { id, number, .. } => Some(ErrLocation {
                segment: id.clone(),
                sequence: *number,
                field: 0,
                component: 0,
            }),
            ParseError::Charset { .. } => Some(at("MSH", 18)),
        }
    }

    /// The table 0357 code for the NACK.
    pub fn code(&self) -> ErrorCode {
        match self {
            ParseError::Empty | ParseError::NotMsh { .. } | ParseError::SegmentId { .. } => {
                ErrorCode::SegmentSequence
            }
            ParseError::TooShort { .. } => ErrorCode::RequiredFieldMissing,
            ParseError::Delimiter { .. } => ErrorCode::DataType,
            ParseError::Charset { .. } => ErrorCode::TableValueNotFound,
            ParseError::TooLarge { .. } => ErrorCode::ApplicationInternal,
        }
    }
}

/// One segment in the index: where it starts and where its field boundaries are.
#[derive(Debug, Clone, Copy)]
struct SegIdx {
    /// Offset of the segment id in the raw bytes.
    start: u32,
    /// Index in `bounds` of the first field separator (or of the end, for a bare segment).
    first: u32,
    /// Number of entries in `bounds`: field separators plus the end offset.
    len: u32,
}

/// A parsed HL7v2 message: the raw bytes plus an index of segments and fields; nothing is
/// copied until a value is asked for as text.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    raw: &'a [u8],
    delims: Delimiters,
    charset: Charset,
    segs: Vec<SegIdx>,
    /// Offsets of every field separator of every segment, each segment closed by its end.
    bounds: Vec<u32>,
}

/// The decoded MSH fields the engine needs for routing, journaling and ACKs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// MSH-3.
    pub sending_application: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-5.
    pub receiving_application: String,
    /// MSH-6.
    pub receiving_facility: String,
    /// MSH-9 whole, e.g. `ADT^A01^ADT_A01`.
    pub message_type: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-11.
    pub processing_id: String,
    /// MSH-12.
    pub version: String,
    /// MSH-15.
    pub accept_ack_type: String,
    /// MSH-16.
    pub application_ack_type: String,
    /// MSH-18.
    pub charset: String,
}

/// A view of one segment, for iteration and field access in HL7 numbering.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'m> {
    raw: &'m [u8],
    bounds: &'m [u32],
    start: usize,
    number: usize,
}

impl<'m> Segment<'m> {
    /// The segment id, e.g. `PID`.
    pub fn id(&self) -> &'m str {
        self.raw
            .get(self.start..self.start + 3)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// The raw bytes of the segment, without its terminator.
    pub fn raw(&self) -> &'m [u8] {
        let end = self.bounds.last().map_or(self.start, |&e| e as usize);
        self.raw.get(self.start..end).unwrap_or_default()
    }

    /// Offset of the segment in the message bytes.
    pub fn offset(&self) -> usize {
        self.start
    }

    /// Position of the segment in the message, 1-based.
    pub fn number(&self) -> usize {
        self.number
    }

    fn is_header(&self) -> bool {
        matches!(self.id(), "MSH" | "FHS" | "BHS")
    }

    /// Number of fields, in HL7 numbering (for MSH, MSH-1 counts).
    pub fn field_count(&self) -> usize {
        let n = self.bounds.len().saturating_sub(1);
        if self.is_header() { n + 1 } else { n }
    }

    /// The raw (escaped) bytes of field `n`, 1-based, HL7 numbering: MSH-1 is the field
    /// separator itself, MSH-2 the encoding characters.
    pub fn field(&self, n: usize) -> Option<&'m [u8]> {
        field_in(self.raw, self.bounds, self.start, n)
    }
}

/// Field `n` (HL7 numbering) of the segment starting at `start` whose bounds are `bounds`.
fn field_in<'r>(raw: &'r [u8], bounds: &[u32], start: usize, n: usize) -> Option<&'r [u8]> {
    let id = raw.get(start..start + 3)?;
    let generic = if matches!(id, b"MSH" | b"FHS" | b"BHS") {
        if n == 1 {
            return raw.get(start + 3..start + 4);
        }
        n.checked_sub(1)?
    } else {
        n
    };
    let from = *bounds.get(generic.checked_sub(1)?)? as usize + 1;
    let to = *bounds.get(generic)? as usize;
    raw.get(from..to)
}

/// The `n`-th (1-based) piece of `slice` split on `delim`; `None` past the last piece.
pub(crate) fn nth_piece(slice: &[u8], delim: u8, n: usize) -> Option<&[u8]> {
    let mut start = 0;
    let mut k = 1;
    for p in memchr_iter(delim, slice) {
        if k == n {
            return slice.get(start..p);
        }
        start = p + 1;
        k += 1;
    }
    if k == n { slice.get(start..) } else { None }
}

/// `b` in every byte of a word.
fn splat(b: u8) -> u64 {
    u64::from_le_bytes([b; 8])
}

/// The high bit of each byte of the result is set exactly where that byte of `v` is zero (no
/// carries between bytes, so no false positives).
fn zero_bytes(v: u64) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    !(((v & LOW7).wrapping_add(LOW7)) | v | LOW7)
}

fn is_segment_id(id: &[u8]) -> bool {
    id.len() == 3
        && id
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl<'a> Message<'a> {
    /// Parses and indexes `raw`, taking the charset from MSH-18 (or a leading BOM).
    pub fn parse(raw: &'a [u8]) -> Result<Message<'a>, ParseError> {
        Message::parse_with(raw, None)
    }

    /// Parses and indexes `raw`; a charset override (channel setting) wins over MSH-18.
    pub fn parse_with(
        raw: &'a [u8],
        charset_override: Option<Charset>,
    ) -> Result<Message<'a>, ParseError> {
        if u32::try_from(raw.len()).is_err() {
            return Err(ParseError::TooLarge { len: raw.len() });
        }
        let has_bom = raw.starts_with(BOM);
        let body_start = if has_bom { BOM.len() } else { 0 };
        let body = raw.get(body_start..).unwrap_or_default();
        if body.is_empty() {
            return Err(ParseError::Empty);
        }
        if !body.starts_with(b"MSH") {
            return Err(ParseError::NotMsh {
                found: readable_prefix(body, 8),
            });
        }
        let (delims, _) = Delimiters::read(body, body_start)?;
        let mut msg = Message {
            raw,
            delims,
            charset: Charset::Ascii,
            segs: Vec::with_capacity(16),
            bounds: Vec::with_capacity(raw.len() / 8 + 16),
        };
        msg.index(body_start)?;
        msg.charset = match charset_override {
            Some(cs) => cs,
            None if has_bom => Charset::Utf8,
            None => {
                let msh18 = msg.header_field(18).unwrap_or_default();
                let first = nth_piece(msh18, delims.repetition(), 1).unwrap_or_default();
                std::str::from_utf8(first)
                    .ok()
                    .and_then(Charset::from_msh18)
                    .ok_or_else(|| ParseError::Charset {
                        value: readable_prefix(first, 32),
                    })?
            }
        };
        Ok(msg)
    }

    /// The single pass: field separators and segment terminators, in order. Processes 8 bytes
    /// at a time (SWAR): HL7 is dense in separators (one every ~7 bytes), where restarting a
    /// SIMD search per hit costs more than testing words.
    fn index(&mut self, body_start: usize) -> Result<(), ParseError> {
        let raw = self.raw;
        let fs = self.delims.field();
        let body = raw.get(body_start..).unwrap_or_default();
        let (fs_w, cr_w, lf_w) = (splat(fs), splat(b'\r'), splat(b'\n'));
        let mut seg_start = body_start;
        let mut base = body_start;
        let mut chunks = body.chunks_exact(8);
        for chunk in &mut chunks {
            let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
                continue;
            };
            let w = u64::from_le_bytes(bytes);
            let fields = zero_bytes(w ^ fs_w);
            let mut hits = fields | zero_bytes(w ^ cr_w) | zero_bytes(w ^ lf_w);
            while hits != 0 {
                let bit = hits.trailing_zeros();
                let pos = base + (bit / 8) as usize;
                if fields & (1u64 << bit) != 0 {
                    self.bounds.push(pos as u32);
                } else {
                    self.close_segment(seg_start, pos)?;
                    seg_start = pos + 1;
                }
                hits &= hits - 1;
            }
            base += 8;
        }
        for (i, &b) in chunks.remainder().iter().enumerate() {
            let pos = base + i;
            if b == fs {
                self.bounds.push(pos as u32);
            } else if b == b'\r' || b == b'\n' {
                self.close_segment(seg_start, pos)?;
                seg_start = pos + 1;
            }
        }
        if seg_start < raw.len() {
            self.close_segment(seg_start, raw.len())?;
        }
        Ok(())
    }

    fn close_segment(&mut self, start: usize, end: usize) -> Result<(), ParseError> {
        let first = self.segs.last().map_or(0, |s| (s.first + s.len) as usize);
        if end == start {
            return Ok(()); // blank line, or the LF of a CRLF
        }
        self.bounds.push(end as u32);
        let id_end = self.bounds.get(first).map_or(end, |&b| b as usize);
        let id = self.raw.get(start..id_end).unwrap_or_default();
        if !is_segment_id(id) {
            let seg = self.raw.get(start..end).unwrap_or_default();
            if self.bounds.len() - first == 1
                && seg.iter().all(|b| b.is_ascii_whitespace() || *b == 0)
            {
                self.bounds.truncate(first);
                return Ok(());
            }
            return Err(ParseError::SegmentId {
                number: self.segs.len() + 1,
                id: readable_prefix(id, 8),
                offset: start,
            });
        }
        self.segs.push(SegIdx {
            start: start as u32,
            first: first as u32,
            len: (self.bounds.len() - first) as u32,
        });
        Ok(())
    }

    /// The raw bytes, exactly as given (an unmodified message serializes byte-identically).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The delimiters read from MSH-1/MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delims
    }

    /// The charset used to decode text: override, else BOM, else MSH-18.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segs.len()
    }

    fn view(&self, index: usize) -> Option<Segment<'_>> {
        let s = self.segs.get(index)?;
        let first = s.first as usize;
        let bounds = self.bounds.get(first..first + s.len as usize)?;
        Some(Segment {
            raw: self.raw,
            bounds,
            start: s.start as usize,
            number: index + 1,
        })
    }

    /// All segments in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_>> {
        (0..self.segs.len()).filter_map(|i| self.view(i))
    }

    fn find(&self, id: [u8; 3], occurrence: usize) -> Option<usize> {
        let mut seen = 0;
        for (i, s) in self.segs.iter().enumerate() {
            let start = s.start as usize;
            if self.raw.get(start..start + 3) == Some(&id[..]) {
                seen += 1;
                if seen == occurrence {
                    return Some(i);
                }
            }
        }
        None
    }

    /// The `occurrence`-th (1-based) segment with this id.
    pub fn segment(&self, id: &str, occurrence: usize) -> Option<Segment<'_>> {
        let id: [u8; 3] = id.as_bytes().try_into().ok()?;
        self.view(self.find(id, occurrence)?)
    }

    /// Raw field `n` of the first MSH (HL7 numbering).
    fn header_field(&self, n: usize) -> Option<&'a [u8]> {
        self.field_of(0, n)
    }

    /// Raw field `n` (HL7 numbering) of segment `index`, with the message lifetime.
    fn field_of(&self, index: usize, n: usize) -> Option<&'a [u8]> {
        let s = self.segs.get(index)?;
        let first = s.first as usize;
        let bounds = self.bounds.get(first..first + s.len as usize)?;
        field_in(self.raw, bounds, s.start as usize, n)
    }

    /// The raw (still escaped) bytes at `path`: the fastest access. `None` when the segment,
    /// field, repetition, component or subcomponent is not present; `Some(b"")` when present
    /// but empty. MSH-1 and MSH-2 are the delimiters themselves.
    pub fn get(&self, path: &Path) -> Option<&'a [u8]> {
        let index = self.find(path.segment_bytes(), path.occurrence())?;
        let field = self.field_of(index, path.field())?;
        if is_delimiter_field(path) {
            let deeper = [path.repetition(), path.component(), path.subcomponent()];
            return deeper.iter().flatten().all(|&n| n == 1).then_some(field);
        }
        let d = &self.delims;
        let mut value = match (path.repetition(), path.component()) {
            (Some(r), _) => nth_piece(field, d.repetition(), r)?,
            (None, Some(_)) => nth_piece(field, d.repetition(), 1)?,
            (None, None) => field,
        };
        if let Some(c) = path.component() {
            value = nth_piece(value, d.component(), c)?;
            if let Some(s) = path.subcomponent() {
                value = nth_piece(value, d.subcomponent(), s)?;
            }
        }
        Some(value)
    }

    /// The value at `path`, unescaped and decoded in the message charset; borrows when
    /// possible. MSH-1 and MSH-2 are returned as written (never unescaped).
    pub fn text(&self, path: &Path) -> Option<Cow<'a, str>> {
        let raw = self.get(path)?;
        if is_delimiter_field(path) {
            return Some(self.charset.decode(raw));
        }
        Some(self.decode(raw))
    }

    /// Unescapes and decodes a raw value of this message.
    pub fn decode(&self, raw: &'a [u8]) -> Cow<'a, str> {
        match unescape(raw, &self.delims) {
            Cow::Borrowed(b) => self.charset.decode(b),
            Cow::Owned(v) => Cow::Owned(self.charset.decode(&v).into_owned()),
        }
    }

    /// Parses `path` and returns its text: convenient, but parse the path once when querying
    /// many messages.
    pub fn query(&self, path: &str) -> Result<Option<String>, PathError> {
        let path: Path = path.parse()?;
        Ok(self.text(&path).map(Cow::into_owned))
    }

    /// MSH-`n` decoded (unescaped, in the message's charset), empty when absent: one field of
    /// [`Message::header`] without decoding the others, borrowed when nothing needed decoding.
    pub fn header_text(&self, n: usize) -> Cow<'a, str> {
        self.header_field(n)
            .map(|raw| self.decode(raw))
            .unwrap_or_default()
    }

    /// The MSH fields the engine routes, journals and acknowledges on, decoded.
    pub fn header(&self) -> Header {
        let f = |n: usize| self.header_text(n).into_owned();
        Header {
            sending_application: f(3),
            sending_facility: f(4),
            receiving_application: f(5),
            receiving_facility: f(6),
            message_type: f(9),
            control_id: f(10),
            processing_id: f(11),
            version: f(12),
            accept_ack_type: f(15),
            application_ack_type: f(16),
            charset: f(18),
        }
    }
}

fn is_delimiter_field(path: &Path) -> bool {
    path.field() <= 2 && matches!(&path.segment_bytes(), b"MSH" | b"FHS" | b"BHS")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    const ADT: &str = "MSH|^~\\&|SIH|CHU|ORDO|POSOS|20240101120000||ADT^A01^ADT_A01|MSG001|P|2.5|||AL|NE||8859/1\r\
EVN|A01|20240101120000\r\
PID|1||123456^^^CHU&1.2.250.1.1&ISO^PI~2850175123456^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||DUPONT^Jean^^^^^L~MARTIN^Jean^^^^^D||19850101|M\r\
PV1|1|I|CARDIO^101^1||||123^WELBY^Marcus||||||||||||V789^^^CHU^VN\r\
ZBE|MVT1^CHU|20240101120000||INSERT|N\r\
OBX|1|TX|CODE1||first\r\
OBX|2|TX|CODE2||second a\\S\\b\r";

    fn msg() -> Message<'static> {
        Message::parse(ADT.as_bytes()).unwrap()
    }

    #[rstest]
    #[case::ok_field(
        "PID-3",
        Some(
            "123456^^^CHU&1.2.250.1.1&ISO^PI~2850175123456^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
        )
    )]
    #[case::ok_component("PID-3.1", Some("123456"))]
    #[case::ok_repetition("PID-3[2].1", Some("2850175123456"))]
    #[case::ok_repetition_whole(
        "PID-3[2]",
        Some("2850175123456^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS")
    )]
    #[case::ok_subcomponent("PID-3[2].4.2", Some("1.2.250.1.213.1.4.8"))]
    #[case::ok_name("PID-5.1.1", Some("DUPONT"))]
    #[case::ok_second_obx("OBX[2]-5", Some("second a^b"))]
    #[case::ok_first_obx("OBX-5", Some("first"))]
    #[case::ok_dots("PID.3.1", Some("123456"))]
    #[case::ok_msh1("MSH-1", Some("|"))]
    #[case::ok_msh2("MSH-2", Some("^~\\&"))]
    #[case::ok_msh9("MSH-9", Some("ADT^A01^ADT_A01"))]
    #[case::ok_msh9_2("MSH-9.2", Some("A01"))]
    #[case::ok_msh10("MSH-10", Some("MSG001"))]
    #[case::ok_pv1_19("PV1-19", Some("V789^^^CHU^VN"))]
    #[case::ok_pv1_19_1("PV1-19.1", Some("V789"))]
    #[case::ok_empty_present("PID-2", Some(""))]
    #[case::ok_zbe("ZBE-4", Some("INSERT"))]
    #[case::ok_missing_field("PID-40", None)]
    #[case::ok_missing_segment("NK1-1", None)]
    #[case::ok_missing_occurrence("OBX[3]-5", None)]
    #[case::ok_missing_repetition("PID-3[3]", None)]
    #[case::ok_missing_component("PID-3.9", None)]
    #[case::ok_missing_subcomponent("PID-5.1.2", None)]
    #[case::ok_msh1_component("MSH-1.2", None)]
    fn ok_path_access(#[case] path: &str, #[case] expected: Option<&str>) {
        assert_eq!(msg().query(path).unwrap().as_deref(), expected);
    }

    #[test]
    fn err_query_bad_path() {
        assert_eq!(
            msg().query("PID-x").unwrap_err().to_string(),
            "invalid path `PID-x`: expected a field number after `-`"
        );
    }

    #[test]
    fn ok_path_reused_across_messages() {
        let path: Path = "PID-3.1".parse().unwrap();
        let other = ADT.replace("123456^", "999^");
        let a = msg();
        let b = Message::parse(other.as_bytes()).unwrap();
        assert_eq!(a.get(&path), Some(&b"123456"[..]));
        assert_eq!(b.get(&path), Some(&b"999"[..]));
    }

    #[test]
    fn ok_header() {
        let h = msg().header();
        assert_eq!(h.sending_application, "SIH");
        assert_eq!(h.sending_facility, "CHU");
        assert_eq!(h.receiving_application, "ORDO");
        assert_eq!(h.receiving_facility, "POSOS");
        assert_eq!(h.message_type, "ADT^A01^ADT_A01");
        assert_eq!(h.control_id, "MSG001");
        assert_eq!(h.processing_id, "P");
        assert_eq!(h.version, "2.5");
        assert_eq!(h.accept_ack_type, "AL");
        assert_eq!(h.application_ack_type, "NE");
        assert_eq!(h.charset, "8859/1");
    }

    #[test]
    fn ok_segments() {
        let m = msg();
        let ids: Vec<&str> = m.segments().map(|s| s.id()).collect();
        assert_eq!(ids, ["MSH", "EVN", "PID", "PV1", "ZBE", "OBX", "OBX"]);
        let msh = m.segment("MSH", 1).unwrap();
        assert_eq!(msh.field(1), Some(&b"|"[..]));
        assert_eq!(msh.field(2), Some(&b"^~\\&"[..]));
        assert_eq!(msh.field(3), Some(&b"SIH"[..]));
        assert_eq!(msh.field_count(), 18);
        let obx2 = m.segment("OBX", 2).unwrap();
        assert_eq!(obx2.number(), 7);
        assert_eq!(obx2.raw(), b"OBX|2|TX|CODE2||second a\\S\\b");
        assert_eq!(obx2.field_count(), 5);
        assert!(m.segment("OBX", 3).is_none());
        assert!(m.segment("TOOLONG", 1).is_none());
    }

    #[rstest]
    #[case::ok_standard("MSH|^~\\&|A\rPID|1|x^y\r", "PID-2.2", "y")]
    #[case::ok_truncation("MSH|^~\\&#|A\rPID|1|x^y\r", "PID-2.2", "y")]
    #[case::ok_alternate("MSH$%*!@$A\rPID$1$x%y*z%w!F!\r", "PID-2[2].2", "w$")]
    #[case::ok_alternate_msh2("MSH$%*!@$A\r", "MSH-2", "%*!@")]
    #[case::ok_alternate_msh1("MSH$%*!@$A\r", "MSH-1", "$")]
    #[case::ok_hash_field("MSH#^~\\&#A\rPID#1#v\r", "PID-2", "v")]
    fn ok_delimiter_sets(#[case] raw: &str, #[case] path: &str, #[case] expected: &str) {
        let m = Message::parse(raw.as_bytes()).unwrap();
        assert_eq!(m.query(path).unwrap().as_deref(), Some(expected));
    }

    #[rstest]
    #[case::err_duplicate(
        "MSH|^^\\&|A\r",
        "MSH-2 at byte 5: `^` is used twice (component separator and repetition separator)"
    )]
    #[case::err_alnum(
        "MSH|^~\\A|A\r",
        "MSH-2 at byte 7: `A` is a letter or digit, not a delimiter"
    )]
    #[case::err_lookalike(
        "MSH|^˜\\&|A\r",
        "MSH-2 at byte 5: `˜` (U+02DC) is not an ASCII character (a lookalike of `~`?)"
    )]
    #[case::err_too_short(
        "MSH",
        "MSH segment too short (3 bytes): expected at least `MSH|^~\\&`"
    )]
    #[case::err_too_short_msh2(
        "MSH|^~\r",
        "MSH-2 at byte 4: expected 4 or 5 encoding characters, found 2 (`^~`) before `\\r` at byte 6"
    )]
    #[case::err_empty("", "empty message")]
    #[case::err_bom_only("\u{FEFF}", "empty message")]
    #[case::err_not_msh("PID|1\r", "message does not start with `MSH` (found `PID|1\\r`)")]
    #[case::err_mllp_junk(
        "\x0bMSH|^~\\&\r",
        "message does not start with `MSH` (found `\\x0BMSH|^~\\…`)"
    )]
    #[case::err_segment_id(
        "MSH|^~\\&|A\rPID|1\rpv1|2\r",
        "segment 3 (`pv1`) at byte 17: invalid segment id, expected 3 uppercase letters or digits"
    )]
    #[case::err_segment_id_long(
        "MSH|^~\\&|A\rPIDX|1\r",
        "segment 2 (`PIDX`) at byte 11: invalid segment id, expected 3 uppercase letters or digits"
    )]
    #[case::err_charset(
        "MSH|^~\\&||||||||||||||||XYZ\r",
        "unsupported charset `XYZ` in MSH-18"
    )]
    fn err_parse(#[case] raw: &str, #[case] expected: &str) {
        assert_eq!(
            Message::parse(raw.as_bytes()).unwrap_err().to_string(),
            expected
        );
    }

    #[rstest]
    #[case::err_not_msh("PID|1||123456^^^CH^PI\r", "message does not start with `MSH`")]
    #[case::err_charset_kept(
        "MSH|^~\\&||||||||||||||||XYZ\r",
        "unsupported charset `XYZ` in MSH-18"
    )]
    fn err_without_values(#[case] raw: &str, #[case] expected: &str) {
        let error = Message::parse(raw.as_bytes()).unwrap_err();
        assert_eq!(error.without_values(), expected);
    }

    #[test]
    fn err_locations_and_codes() {
        let e = Message::parse(b"MSH|^~\\&|A\rPID|1\rpv1|2\r").unwrap_err();
        assert_eq!(e.code(), ErrorCode::SegmentSequence);
        assert_eq!(e.location().unwrap().to_string(), "pv1[3]");
        let e = Message::parse(b"MSH|^^\\&|A\r").unwrap_err();
        assert_eq!(e.code(), ErrorCode::DataType);
        assert_eq!(e.location().unwrap().to_string(), "MSH-2");
        let e = Message::parse(b"MSH|^~\\&||||||||||||||||XYZ\r").unwrap_err();
        assert_eq!(e.code(), ErrorCode::TableValueNotFound);
        assert_eq!(e.location().unwrap().to_string(), "MSH-18");
    }

    #[rstest]
    #[case::ok_cr("MSH|^~\\&|A\rPID|1|X\rPV1|1|I\r")]
    #[case::ok_lf("MSH|^~\\&|A\nPID|1|X\nPV1|1|I\n")]
    #[case::ok_crlf("MSH|^~\\&|A\r\nPID|1|X\r\nPV1|1|I\r\n")]
    #[case::ok_mixed("MSH|^~\\&|A\r\nPID|1|X\nPV1|1|I\r")]
    #[case::ok_missing_final("MSH|^~\\&|A\rPID|1|X\rPV1|1|I")]
    #[case::ok_trailing_empty_line("MSH|^~\\&|A\rPID|1|X\rPV1|1|I\r\n\r\n")]
    #[case::ok_trailing_spaces("MSH|^~\\&|A\rPID|1|X\rPV1|1|I\r  \r\0")]
    #[case::ok_blank_lines("MSH|^~\\&|A\r\rPID|1|X\n\nPV1|1|I")]
    #[case::ok_bom("\u{FEFF}MSH|^~\\&|A\rPID|1|X\rPV1|1|I\r")]
    fn ok_segment_ends(#[case] raw: &str) {
        let m = Message::parse(raw.as_bytes()).unwrap();
        let ids: Vec<&str> = m.segments().map(|s| s.id()).collect();
        assert_eq!(ids, ["MSH", "PID", "PV1"]);
        assert_eq!(m.query("PID-2").unwrap().as_deref(), Some("X"));
        assert_eq!(m.query("PV1-2").unwrap().as_deref(), Some("I"));
        assert_eq!(m.query("MSH-3").unwrap().as_deref(), Some("A"));
        assert_eq!(m.raw(), raw.as_bytes());
    }

    #[rstest]
    #[case::ok_latin1_e(
        b"MSH|^~\\&||||||||||||||||8859/1\rPID|1||||Ren\xE9e\r",
        None,
        Charset::Latin1,
        "Renée"
    )]
    #[case::ok_latin1_i(
        b"MSH|^~\\&||||||||||||||||8859/1\rPID|1||||Ana\xEFs\r",
        None,
        Charset::Latin1,
        "Anaïs"
    )]
    #[case::ok_latin9_euro(
        b"MSH|^~\\&||||||||||||||||8859/15\rPID|1||||5\xA4\r",
        None,
        Charset::Latin9,
        "5€"
    )]
    #[case::ok_utf8("MSH|^~\\&||||||||||||||||UNICODE UTF-8\rPID|1||||Anaïs 5€ é\r".as_bytes(), None, Charset::Utf8, "Anaïs 5€ é")]
    #[case::ok_ascii_with_accents(
        b"MSH|^~\\&|\rPID|1||||Ren\xE9e\r",
        None,
        Charset::Ascii,
        "Renée"
    )]
    #[case::ok_ascii_with_utf8("MSH|^~\\&|\rPID|1||||Renée\r".as_bytes(), None, Charset::Ascii, "Renée")]
    #[case::ok_bom_utf8("\u{FEFF}MSH|^~\\&||||||||||||||||8859/1\rPID|1||||Renée\r".as_bytes(), None, Charset::Utf8, "Renée")]
    #[case::ok_override_wins(
        b"MSH|^~\\&||||||||||||||||UNICODE UTF-8\rPID|1||||Ren\xE9e\r",
        Some(Charset::Latin1),
        Charset::Latin1,
        "Renée"
    )]
    #[case::ok_override_unknown(
        b"MSH|^~\\&||||||||||||||||XYZ\rPID|1||||Ren\xE9e\r",
        Some(Charset::Latin1),
        Charset::Latin1,
        "Renée"
    )]
    #[case::ok_hex_in_charset(
        b"MSH|^~\\&||||||||||||||||8859/1\rPID|1||||Ren\\XE9\\e\r",
        None,
        Charset::Latin1,
        "Renée"
    )]
    #[case::ok_msh18_repeated(
        b"MSH|^~\\&||||||||||||||||8859/1~UNICODE UTF-8\rPID|1||||Ren\xE9e\r",
        None,
        Charset::Latin1,
        "Renée"
    )]
    fn ok_charsets(
        #[case] raw: &[u8],
        #[case] over: Option<Charset>,
        #[case] charset: Charset,
        #[case] expected: &str,
    ) {
        let m = Message::parse_with(raw, over).unwrap();
        assert_eq!(m.charset(), charset);
        assert_eq!(m.query("PID-5").unwrap().as_deref(), Some(expected));
    }

    #[test]
    fn ok_escapes_read() {
        let m = Message::parse(b"MSH|^~\\&|A\rNTE|1||a\\F\\b\\.br\\c\\X41\\\\H\\d\\N\\\\Q\\\r")
            .unwrap();
        assert_eq!(
            m.query("NTE-3").unwrap().as_deref(),
            Some("a|b\ncA\\H\\d\\N\\\\Q\\")
        );
    }

    #[test]
    fn ok_text_borrows_when_plain() {
        let m = msg();
        let p: Path = "PID-5.1".parse().unwrap();
        assert!(matches!(m.text(&p), Some(Cow::Borrowed("DUPONT"))));
    }

    #[test]
    fn ok_round_trip_byte_identical() {
        let m = msg();
        assert_eq!(m.raw(), ADT.as_bytes());
        let rebuilt: Vec<u8> = m
            .segments()
            .flat_map(|s| s.raw().iter().copied().chain(std::iter::once(b'\r')))
            .collect();
        assert_eq!(rebuilt, ADT.as_bytes());
    }

    #[test]
    fn ok_zero_bytes_exact() {
        for pos in 0..8 {
            for other in 0..=255u8 {
                let mut bytes = [other; 8];
                bytes[pos] = 0;
                let got = zero_bytes(u64::from_le_bytes(bytes));
                let expected = (0..8)
                    .filter(|&i| bytes[i] == 0)
                    .fold(0u64, |m, i| m | 0x80 << (8 * i));
                assert_eq!(got, expected, "pos {pos} other {other}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn ok_index_matches_naive_split(
            tail in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'|'), proptest::strategy::Just(b'\r'),
                    proptest::strategy::Just(b'\n'), proptest::strategy::Just(b'^'),
                    proptest::strategy::Just(b'A'), proptest::strategy::Just(b'1'),
                ],
                0..200,
            )
        ) {
            let mut raw = b"MSH|^~\\&|X\rPID".to_vec();
            raw.extend_from_slice(&tail);
            if let Ok(m) = Message::parse(&raw) {
                let naive: Vec<&[u8]> = raw
                    .split(|&b| b == b'\r' || b == b'\n')
                    .filter(|l| !l.is_empty())
                    .collect();
                let ours: Vec<&[u8]> = m.segments().map(|s| s.raw()).collect();
                proptest::prop_assert_eq!(&ours, &naive);
                for s in m.segments().skip(1) {
                    let fields: Vec<&[u8]> = s.raw().split(|&b| b == b'|').skip(1).collect();
                    let got: Vec<&[u8]> = (1..=s.field_count()).filter_map(|n| s.field(n)).collect();
                    proptest::prop_assert_eq!(got, fields);
                }
            }
        }
    }
}
