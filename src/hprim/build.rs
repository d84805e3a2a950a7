//! [`HprimBuilder`]: writes an HPRIM Santé message record by record and field by field, for the
//! mappings that deliver results to HPRIM-only EHRs (`hprim-oru`: H, P, OBR, OBX, L).
//!
//! What it does for the caller: the `H` record's delimiters (H.2) are written from the
//! builder's set (`|~^\&` by default); values are escaped on write (`\F\ \S\ \R\ \T\ \E\`, line
//! breaks as `\.br\`); text is encoded in ISO-8859-1 by default (as windows-1252, its
//! superset), and a character the charset cannot hold is an error naming the character, the
//! record and the field; records end with CR LF by default ([`LineEnd::Cr`] on request); a
//! record longer than the HPRIM line limit (220 characters including the record end, HPRIM
//! Santé 2.5 §B.1) is split into `A` continuation records, never inside an escape sequence or
//! a UTF-8 character.
//!
//! What it checks: the first record is `H`, the last is `L`, record types are 1 to 3 uppercase
//! letters or digits (not `A`: continuations are the builder's job), fields are numbered from 2
//! (field 1 is the record type; H.2 is the delimiters). It does not compute the `L` counts.

use crate::hl7::charset::{Charset, CharsetError};
use crate::hl7::delim::Delimiters;
use crate::hl7::escape::escape;
use crate::hprim::{HprimError, is_record_type};

/// The HPRIM line-length limit, record end included.
pub const MAX_LINE: usize = 220;

/// The largest field number the builder accepts (a guard against runaway mapping values).
const MAX_FIELD: usize = 999;

/// How records end in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineEnd {
    /// CR LF, what HPRIM files on Windows shares carry; the default.
    #[default]
    CrLf,
    /// CR alone, the ASTM record terminator.
    Cr,
}

impl LineEnd {
    fn bytes(self) -> &'static [u8] {
        match self {
            LineEnd::CrLf => b"\r\n",
            LineEnd::Cr => b"\r",
        }
    }
}

/// One record being written: its type and its fields (already escaped), in HPRIM numbering.
#[derive(Debug, Clone)]
pub struct RecordBuilder {
    kind: String,
    delims: Delimiters,
    /// Fields 2, 3, …: index 0 is field 2.
    fields: Vec<String>,
    /// The first misuse (field number, reason), reported by [`HprimBuilder::to_bytes`].
    error: Option<(usize, String)>,
}

impl RecordBuilder {
    fn is_header(&self) -> bool {
        self.kind == "H"
    }

    /// The slot for field `n`, or `None` (and a recorded error) for fields the caller may not
    /// set.
    fn slot(&mut self, n: usize) -> Option<&mut String> {
        let reason = match n {
            0 => Some("field numbers are 1-based"),
            n if n > MAX_FIELD => Some("field number too large (at most 999)"),
            1 => Some("field 1 is the record type, set by `record`"),
            2 if self.is_header() => Some("H.2 holds the delimiters, written by the builder"),
            _ => None,
        };
        if let Some(reason) = reason {
            if self.error.is_none() {
                self.error = Some((n, reason.into()));
            }
            return None;
        }
        if self.fields.len() < n - 1 {
            self.fields.resize(n - 1, String::new());
        }
        self.fields.get_mut(n - 2)
    }

    /// Sets field `n` (2 or more) to `text`, escaping delimiters and line breaks.
    pub fn set(&mut self, n: usize, text: &str) -> &mut Self {
        let escaped = escape(text, &self.delims).into_owned();
        if let Some(slot) = self.slot(n) {
            *slot = escaped;
        }
        self
    }

    /// Sets field `n` to components (`DUPONT~JEAN` in the reference order), each escaped.
    pub fn set_components(&mut self, n: usize, parts: &[&str]) -> &mut Self {
        let value = self.join_components(parts);
        if let Some(slot) = self.slot(n) {
            *slot = value;
        }
        self
    }

    /// Appends a repetition made of components to field `n` (OBR.5 lists several tests).
    pub fn add_repetition(&mut self, n: usize, parts: &[&str]) -> &mut Self {
        let value = self.join_components(parts);
        let rep = char::from(self.delims.repetition());
        if let Some(slot) = self.slot(n) {
            if !slot.is_empty() {
                slot.push(rep);
            }
            slot.push_str(&value);
        }
        self
    }

    /// Sets field `n` to `raw`, written as is: the caller has escaped it.
    pub fn set_raw(&mut self, n: usize, raw: &str) -> &mut Self {
        if let Some(slot) = self.slot(n) {
            *slot = raw.to_string();
        }
        self
    }

    fn join_components(&self, parts: &[&str]) -> String {
        let comp = char::from(self.delims.component());
        let mut value = String::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                value.push(comp);
            }
            value.push_str(&escape(part, &self.delims));
        }
        value
    }
}

/// Writes one HPRIM message; see the module docs for what it escapes, encodes and checks.
#[derive(Debug, Clone)]
pub struct HprimBuilder {
    delims: Delimiters,
    charset: Charset,
    line_end: LineEnd,
    records: Vec<RecordBuilder>,
}

impl Default for HprimBuilder {
    fn default() -> Self {
        HprimBuilder::new()
    }
}

impl HprimBuilder {
    /// A builder with the reference delimiters `|~^\&`, ISO-8859-1 and CR LF record ends.
    pub fn new() -> Self {
        let delims = Delimiters::from_chars("|~^\\&").unwrap_or_default();
        HprimBuilder {
            delims,
            charset: Charset::Latin1,
            line_end: LineEnd::CrLf,
            records: Vec::new(),
        }
    }

    /// A builder with another delimiter set, given as H.1 then H.2 (e.g. `|^~\&` for
    /// receivers that expect HL7 habits), read by position like the parser reads it.
    pub fn with_delimiters(chars: &str) -> Result<Self, HprimError> {
        let mut line = String::with_capacity(chars.len() + 2);
        line.push('H');
        line.push_str(chars);
        let delims = crate::hprim::message::read_delimiters(line.as_bytes(), 1)?;
        if line.len() != 6 {
            return Err(HprimError::Delimiters {
                record: 1,
                reason: format!(
                    "expected a field separator and 4 encoding characters, found `{}`",
                    crate::text::readable_prefix(chars.as_bytes(), 16)
                ),
            });
        }
        Ok(HprimBuilder {
            delims,
            ..HprimBuilder::new()
        })
    }

    /// Writes text in `charset` instead of ISO-8859-1.
    pub fn charset(mut self, charset: Charset) -> Self {
        self.charset = charset;
        self
    }

    /// Ends records with `line_end` instead of CR LF.
    pub fn line_end(mut self, line_end: LineEnd) -> Self {
        self.line_end = line_end;
        self
    }

    /// The delimiters the builder writes.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delims
    }

    /// Starts a record of type `kind` (`H`, `P`, `OBR`, `OBX`, `C`, `L`, …) and returns it for
    /// setting fields. For `H`, H.2 (the delimiters) is filled in.
    pub fn record(&mut self, kind: &str) -> &mut RecordBuilder {
        let mut fields = Vec::new();
        if kind == "H" {
            let mut enc = self.delims.encoding_chars();
            // H.2 is the four encoding characters; the field separator separates it.
            enc.truncate(4);
            fields.push(enc);
        }
        self.records.push_mut(RecordBuilder {
            kind: kind.to_string(),
            delims: self.delims,
            fields,
            error: None,
        })
    }

    /// Serializes the message: escaped, encoded, split into `A` records where too long.
    pub fn to_bytes(&self) -> Result<Vec<u8>, HprimError> {
        self.check()?;
        let end = self.line_end.bytes();
        let max = MAX_LINE - end.len();
        let fs = self.delims.field();
        let mut out = Vec::with_capacity(self.records.len() * 64);
        let mut line = Vec::with_capacity(MAX_LINE);
        for (i, rec) in self.records.iter().enumerate() {
            line.clear();
            line.extend_from_slice(rec.kind.as_bytes());
            for (k, field) in rec.fields.iter().enumerate() {
                line.push(fs);
                let bytes = self.charset.encode(field).map_err(|e| match e {
                    CharsetError::Unmappable { ch, charset, .. } => HprimError::Unmappable {
                        record: i + 1,
                        kind: rec.kind.clone(),
                        field: k + 2,
                        ch,
                        charset,
                    },
                })?;
                line.extend_from_slice(&bytes);
            }
            // H.2 holds the escape character itself: count escapes after it.
            let skip = if rec.kind == "H" { 6 } else { 0 };
            self.write_split(&mut out, &line, skip, max, end);
        }
        Ok(out)
    }

    fn check(&self) -> Result<(), HprimError> {
        for (i, rec) in self.records.iter().enumerate() {
            if !is_record_type(rec.kind.as_bytes()) {
                return Err(HprimError::RecordType {
                    record: i + 1,
                    kind: crate::text::readable_prefix(rec.kind.as_bytes(), 8),
                });
            }
            let misuse = match &rec.error {
                Some(e) => Some(e.clone()),
                None if rec.kind == "A" => Some((
                    1,
                    "`A` continuation records are written by the builder".into(),
                )),
                None if i == 0 && rec.kind != "H" => {
                    Some((1, "the first record of a message must be `H`".into()))
                }
                None if i > 0 && rec.kind == "H" => {
                    Some((1, "a message has one `H` record, the first".into()))
                }
                None => None,
            };
            if let Some((field, reason)) = misuse {
                return Err(HprimError::Build {
                    record: i + 1,
                    kind: rec.kind.clone(),
                    field,
                    reason,
                });
            }
        }
        match self.records.last() {
            None => Err(HprimError::Empty),
            Some(last) if last.kind != "L" => Err(HprimError::MissingEnd {
                record: self.records.len(),
                kind: last.kind.clone(),
                start: 1,
            }),
            Some(_) => Ok(()),
        }
    }

    /// Writes one record's bytes, in `A` continuation lines of at most `max` bytes each.
    fn write_split(&self, out: &mut Vec<u8>, line: &[u8], skip: usize, max: usize, end: &[u8]) {
        let mut start = 0;
        let mut first = true;
        while start < line.len() || first {
            let room = if first { max } else { max - 2 };
            let cut = self.cut(line, skip, start, room);
            if !first {
                out.push(b'A');
                out.push(self.delims.field());
            }
            out.extend_from_slice(line.get(start..cut).unwrap_or_default());
            out.extend_from_slice(end);
            start = cut;
            first = false;
        }
    }

    /// Where to end a line that starts at `start` with `room` bytes: not inside an escape
    /// sequence, not inside a UTF-8 character (when writing UTF-8).
    fn cut(&self, line: &[u8], skip: usize, start: usize, room: usize) -> usize {
        let hard = (start + room).min(line.len());
        if hard == line.len() {
            return hard;
        }
        let esc = self.delims.escape();
        let mut cut = hard;
        let before = line.get(skip..cut).unwrap_or_default();
        if before.iter().filter(|&&b| b == esc).count() % 2 == 1 {
            // Inside a sequence: end before its opening escape character.
            if let Some(open) = before.iter().rposition(|&b| b == esc) {
                cut = skip + open;
            }
        }
        if matches!(self.charset, Charset::Utf8 | Charset::Ascii) {
            while cut > start && line.get(cut).is_some_and(|&b| b & 0xC0 == 0x80) {
                cut -= 1;
            }
        }
        if cut <= start { hard } else { cut }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::hprim::{Message, patients};
    use rstest::rstest;

    fn oru(b: &mut HprimBuilder) {
        b.record("H")
            .set(3, "RES0001.HPR")
            .set_components(5, &["LAB01", "Laboratoire Central"])
            .set(7, "ORU")
            .set_components(10, &["CHU", "Centre Hospitalier"])
            .set(12, "P")
            .set_components(13, &["H2.2", "C"])
            .set(14, "202401151030");
        b.record("P")
            .set(2, "1")
            .set(3, "IPP123")
            .set_components(6, &["LÉGER", "Anaïs"])
            .set(8, "19850312")
            .set(9, "F");
        b.record("OBR")
            .set(2, "1")
            .add_repetition(5, &["GLY", "Glycémie", "L"])
            .add_repetition(5, &["CREA", "Créatinine", "L"]);
        b.record("OBX")
            .set(2, "1")
            .set(3, "NM")
            .set_components(4, &["GLY", "Glycémie", "L"])
            .set(6, "5.4")
            .set(7, "mmol/l")
            .set(8, "3.9-5.8");
        b.record("OBX")
            .set(2, "2")
            .set(3, "FIC")
            .set_components(6, &["LAB01", "CR0001.PDF", "PDF"]);
        b.record("C").set(2, "1").set(4, "a|b~c^d\\e&f\nligne 2");
        b.record("L").set(2, "1").set(4, "1").set(5, "8");
    }

    #[test]
    fn ok_build_exact_bytes() {
        let mut b = HprimBuilder::new();
        oru(&mut b);
        let bytes = b.to_bytes().unwrap();
        let expected: &[u8] = b"H|~^\\&|RES0001.HPR||LAB01~Laboratoire Central||ORU|||CHU~Centre Hospitalier||P|H2.2~C|202401151030\r\n\
P|1|IPP123|||L\xc9GER~Ana\xefs||19850312|F\r\n\
OBR|1|||GLY~Glyc\xe9mie~L^CREA~Cr\xe9atinine~L\r\n\
OBX|1|NM|GLY~Glyc\xe9mie~L||5.4|mmol/l|3.9-5.8\r\n\
OBX|2|FIC|||LAB01~CR0001.PDF~PDF\r\n\
C|1||a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f\\.br\\ligne 2\r\n\
L|1||1|8\r\n";
        assert_eq!(bytes, expected, "{}", String::from_utf8_lossy(&bytes));
    }

    #[rstest]
    #[case::ok_reference(HprimBuilder::new(), b'~')]
    #[case::ok_hl7_order(HprimBuilder::with_delimiters("|^~\\&").unwrap(), b'^')]
    #[case::ok_cr(HprimBuilder::new().line_end(LineEnd::Cr), b'~')]
    #[case::ok_utf8(HprimBuilder::new().charset(Charset::Utf8), b'~')]
    fn ok_round_trip(#[case] mut b: HprimBuilder, #[case] component: u8) {
        oru(&mut b);
        let bytes = b.to_bytes().unwrap();
        let m = Message::parse(&bytes, Some(b.charset)).unwrap();
        assert_eq!(m.raw(), &bytes[..]);
        assert_eq!(m.delimiters().component(), component);
        let q = |p: &str| m.query(p).unwrap().unwrap();
        assert_eq!(q("H.2"), b.delimiters().encoding_chars());
        assert_eq!(q("H.5.2"), "Laboratoire Central");
        assert_eq!(m.version().as_deref(), Some("H2.2"));
        assert_eq!(q("OBR.5[2].2"), "Créatinine");
        assert_eq!(q("OBX.6"), "5.4");
        assert_eq!(q("OBX[2].6.2"), "CR0001.PDF");
        assert_eq!(q("C.4"), "a|b~c^d\\e&f\nligne 2");
        let p = &patients(&m)[0];
        assert_eq!((p.family.as_str(), p.given.as_str()), ("LÉGER", "Anaïs"));
        let lf = bytes.iter().filter(|&&b| b == b'\n').count();
        assert_eq!(lf, if b.line_end == LineEnd::Cr { 0 } else { 7 });
    }

    #[rstest]
    #[case::ok_crlf(LineEnd::CrLf, Charset::Latin1, "é")]
    #[case::ok_cr(LineEnd::Cr, Charset::Latin1, "é")]
    #[case::ok_utf8(LineEnd::CrLf, Charset::Utf8, "é")]
    #[case::ok_escapes(LineEnd::CrLf, Charset::Latin1, "|")]
    fn ok_split_into_a_records(#[case] end: LineEnd, #[case] cs: Charset, #[case] unit: &str) {
        let long: String = (0..700)
            .map(|i| {
                if i % 7 == 0 {
                    unit.to_string()
                } else {
                    char::from(b'a' + (i % 26) as u8).to_string()
                }
            })
            .collect();
        let mut b = HprimBuilder::new().line_end(end).charset(cs);
        b.record("H");
        b.record("OBX")
            .set(2, "1")
            .set(3, "TX")
            .set(6, &long)
            .set(7, "après");
        b.record("L").set(2, "1");
        let bytes = b.to_bytes().unwrap();
        let end_len = end.bytes().len();
        let lines: Vec<&[u8]> = bytes
            .split(|&b| b == b'\r')
            .map(|l| l.strip_prefix(b"\n").unwrap_or(l))
            .filter(|l| !l.is_empty())
            .collect();
        assert!(lines.len() > 5, "{}", lines.len());
        for line in &lines {
            assert!(line.len() + end_len <= MAX_LINE, "{} bytes", line.len());
        }
        let m = Message::parse(&bytes, Some(cs)).unwrap();
        assert_eq!(m.query("OBX.6").unwrap().as_deref(), Some(long.as_str()));
        assert_eq!(m.query("OBX.7").unwrap().as_deref(), Some("après"));
        let obx = m.record("OBX", 1).unwrap();
        assert!(obx.line_count() >= 4);
        assert_eq!(m.record("L", 1).unwrap().line(), 2 + obx.line_count());
    }

    #[test]
    fn ok_short_record_not_split() {
        let mut b = HprimBuilder::new();
        b.record("H");
        b.record("C")
            .set(2, "1")
            .set(4, &"x".repeat(MAX_LINE - 2 - 6));
        b.record("L");
        let bytes = b.to_bytes().unwrap();
        assert!(!bytes.windows(3).any(|w| w == b"\nA|"));
    }

    #[rstest]
    #[case::err_unmappable(
        |b: &mut HprimBuilder| { b.record("H"); b.record("P").set(6, "Zhang 张"); b.record("L"); },
        "record 2 (`P`): field 6: character `张` (U+5F20) cannot be encoded in 8859/1"
    )]
    #[case::err_no_h(
        |b: &mut HprimBuilder| { b.record("P"); b.record("L"); },
        "record 1 (`P`): field 1: the first record of a message must be `H`"
    )]
    #[case::err_no_l(
        |b: &mut HprimBuilder| { b.record("H"); b.record("P"); },
        "record 2 (`P`): the message started at record 1 has no `L` record"
    )]
    #[case::err_empty(|_: &mut HprimBuilder| {}, "empty input: no `H` record")]
    #[case::err_bad_type(
        |b: &mut HprimBuilder| { b.record("H"); b.record("obx"); b.record("L"); },
        "record 2 (`obx`): invalid record type, expected 1 to 3 uppercase letters or digits"
    )]
    #[case::err_a(
        |b: &mut HprimBuilder| { b.record("H"); b.record("A"); b.record("L"); },
        "record 2 (`A`): field 1: `A` continuation records are written by the builder"
    )]
    #[case::err_field_one(
        |b: &mut HprimBuilder| { b.record("H"); b.record("P").set(1, "X"); b.record("L"); },
        "record 2 (`P`): field 1: field 1 is the record type, set by `record`"
    )]
    #[case::err_huge_field(
        |b: &mut HprimBuilder| { b.record("H"); b.record("P").set(usize::MAX, "X"); b.record("L"); },
        "record 2 (`P`): field 18446744073709551615: field number too large (at most 999)"
    )]
    #[case::err_h2(
        |b: &mut HprimBuilder| { b.record("H").set(2, "^~\\&"); b.record("L"); },
        "record 1 (`H`): field 2: H.2 holds the delimiters, written by the builder"
    )]
    #[case::err_second_h(
        |b: &mut HprimBuilder| { b.record("H"); b.record("H"); b.record("L"); },
        "record 2 (`H`): field 1: a message has one `H` record, the first"
    )]
    fn err_build(#[case] fill: fn(&mut HprimBuilder), #[case] expected: &str) {
        let mut b = HprimBuilder::new();
        fill(&mut b);
        assert_eq!(b.to_bytes().unwrap_err().to_string(), expected);
    }

    #[rstest]
    #[case::err_short(
        "|~^",
        "record 1 (`H`): field 2: expected 4 encoding characters (component, repetition, escape, subcomponent) after the field separator, found 2 (`~^`)"
    )]
    #[case::err_long(
        "|~^\\&|x",
        "record 1 (`H`): field 2: expected a field separator and 4 encoding characters, found `|~^\\&|x`"
    )]
    #[case::err_letter(
        "|~^\\a",
        "record 1 (`H`): field 2: `a` cannot be the subcomponent separator: expected ASCII punctuation"
    )]
    fn err_delimiters(#[case] chars: &str, #[case] expected: &str) {
        assert_eq!(
            HprimBuilder::with_delimiters(chars)
                .unwrap_err()
                .to_string(),
            expected
        );
    }
}
