//! [`Message`]: a one-pass index of the records of one HPRIM Santé message over the raw bytes;
//! [`parse_file`] for files holding several messages.
//!
//! The pass finds line ends (8 bytes at a time), skips blank lines, reads the delimiters of each
//! `H` record and the type of every record, and keeps each record as a byte range of the input.
//! Fields, repetitions and components are split lazily when asked for: HPRIM lines are short
//! (220 characters at most), so a lookup scans one line. A record continued by `A` records is
//! copied once into a side buffer with its continuations appended; every other record stays a
//! slice of the input, and [`Message::raw`] is always the exact input bytes.
//!
//! The rules (delimiters, continuations, what is refused) are in the [module docs](super).

use std::borrow::Cow;

use memchr::{memchr, memchr_iter};

use crate::hl7::charset::Charset;
use crate::hl7::delim::Delimiters;
use crate::hl7::escape::unescape;
use crate::hprim::path::HprimPath;
use crate::hprim::{HprimError, is_record_type};
use crate::text::{readable, readable_prefix};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The roles of the five delimiter bytes of the `H` record, in order.
const ROLES: [&str; 5] = [
    "field separator",
    "component separator",
    "repetition separator",
    "escape character",
    "subcomponent separator",
];

/// One logical record in the index.
#[derive(Debug, Clone, Copy)]
struct RecIdx {
    /// Start of the record's content (its type included), in the input or in `joined`.
    start: u32,
    /// End of the content (its line end excluded).
    end: u32,
    /// Whether the content lives in `joined` (the record has `A` continuations).
    joined: bool,
    /// Physical line of the record, 1-based.
    line: u32,
    /// Number of physical lines: 1 plus its `A` continuations.
    lines: u32,
    /// Length of the record type.
    kind_len: u8,
    /// The record type packed in an integer, for fast lookups by type.
    key: u32,
}

/// A record type packed in an integer (3 bytes and the length); 0 for longer types.
fn kind_key(kind: &[u8]) -> u32 {
    match *kind {
        [a] => u32::from_le_bytes([a, 0, 0, 1]),
        [a, b] => u32::from_le_bytes([a, b, 0, 2]),
        [a, b, c] => u32::from_le_bytes([a, b, c, 3]),
        _ => 0,
    }
}

/// The `n`-th (1-based) piece of `slice` split on `delim`; `None` past the last piece.
fn piece(slice: &[u8], delim: u8, n: usize) -> Option<&[u8]> {
    let start = match n {
        0 => return None,
        1 => 0,
        _ => nth_delim(slice, delim, n - 1)? + 1,
    };
    let rest = slice.get(start..)?;
    let len = rest.iter().position(|&b| b == delim).unwrap_or(rest.len());
    rest.get(..len)
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

/// The offset of the `k`-th (1-based) `delim` in `slice`, 8 bytes at a time: HPRIM values are
/// short and separators dense, where restarting a SIMD search for each one costs more.
fn nth_delim(slice: &[u8], delim: u8, k: usize) -> Option<usize> {
    let pattern = splat(delim);
    let mut remaining = k;
    let mut base = 0;
    let mut chunks = slice.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            return None;
        };
        let mut hits = zero_bytes(u64::from_le_bytes(bytes) ^ pattern);
        let count = hits.count_ones() as usize;
        if count >= remaining {
            for _ in 1..remaining {
                hits &= hits - 1;
            }
            return Some(base + (hits.trailing_zeros() / 8) as usize);
        }
        remaining -= count;
        base += 8;
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        if b == delim {
            remaining -= 1;
            if remaining == 0 {
                return Some(base + i);
            }
        }
    }
    None
}

/// The offset of the first CR or LF in `bytes`, 8 bytes at a time (records are short).
fn line_end(bytes: &[u8]) -> Option<usize> {
    let (cr, lf) = (splat(b'\r'), splat(b'\n'));
    let mut base = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            return None;
        };
        let w = u64::from_le_bytes(word);
        let hits = zero_bytes(w ^ cr) | zero_bytes(w ^ lf);
        if hits != 0 {
            return Some(base + (hits.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|i| base + i)
}

/// One parsed HPRIM message: the raw bytes plus an index of its records; nothing is copied
/// until a value is asked for as text (except records continued by `A` records).
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The whole input given to the parser (line numbers and offsets are relative to it).
    input: &'a [u8],
    /// This message's byte range in `input`.
    start: usize,
    end: usize,
    delims: Delimiters,
    charset: Charset,
    recs: Vec<RecIdx>,
    /// Contents of the records continued by `A` records, continuations appended.
    joined: Vec<u8>,
}

/// A view of one logical record (its `A` continuations appended), with field access in HPRIM
/// numbering: the record type is field 1.
#[derive(Debug, Clone, Copy)]
pub struct Record<'m> {
    content: &'m [u8],
    kind_len: usize,
    line: usize,
    lines: usize,
    delims: Delimiters,
    charset: Charset,
}

impl<'m> Record<'m> {
    /// The record type, e.g. `P` or `OBX`.
    pub fn kind(&self) -> &'m str {
        self.content
            .get(..self.kind_len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// The physical line of the record in the input, 1-based (what errors call "record").
    pub fn line(&self) -> usize {
        self.line
    }

    /// Number of physical lines the record spans: 1 plus its `A` continuations.
    pub fn line_count(&self) -> usize {
        self.lines
    }

    /// The record's content, continuations appended, without line ends.
    pub fn raw(&self) -> &'m [u8] {
        self.content
    }

    /// Number of fields, the record type included.
    pub fn field_count(&self) -> usize {
        memchr_iter(self.delims.field(), self.content).count() + 1
    }

    /// The raw (escaped) bytes of field `n`, 1-based; `None` past the last field or for 0.
    pub fn field(&self, n: usize) -> Option<&'m [u8]> {
        if n == 0 {
            return None;
        }
        piece(self.content, self.delims.field(), n)
    }

    /// The repetitions of field `n`, raw, in order (one item for a field without repetitions,
    /// none for an absent field). H.2 is never split.
    pub fn repetitions(&self, n: usize) -> Vec<&'m [u8]> {
        match self.field(n) {
            None => Vec::new(),
            Some(f) if self.is_delimiter_field(n) => vec![f],
            Some(f) => f.split(|&b| b == self.delims.repetition()).collect(),
        }
    }

    /// Component `c` of the first repetition of field `n`, raw; both 1-based.
    pub fn component(&self, n: usize, c: usize) -> Option<&'m [u8]> {
        self.value(n, None, Some(c), None)
    }

    /// The raw bytes of field `n`, repetition, component and subcomponent (all 1-based).
    /// Without repetition and component: the whole field; with a component only: the first
    /// repetition. `H.2` (the encoding characters) is never split.
    pub fn value(
        &self,
        n: usize,
        repetition: Option<usize>,
        component: Option<usize>,
        subcomponent: Option<usize>,
    ) -> Option<&'m [u8]> {
        let field = self.field(n)?;
        if self.is_delimiter_field(n) {
            let deeper = [repetition, component, subcomponent];
            return deeper.iter().flatten().all(|&k| k == 1).then_some(field);
        }
        let d = &self.delims;
        let mut value = match (repetition, component) {
            (Some(r), _) => piece(field, d.repetition(), r)?,
            (None, Some(_)) => piece(field, d.repetition(), 1)?,
            (None, None) => field,
        };
        if let Some(c) = component {
            value = piece(value, d.component(), c)?;
            if let Some(s) = subcomponent {
                value = piece(value, d.subcomponent(), s)?;
            }
        }
        Some(value)
    }

    /// Field `n` unescaped and decoded in the message charset; borrows when possible.
    pub fn text(&self, n: usize) -> Option<Cow<'m, str>> {
        let raw = self.field(n)?;
        Some(self.decode_field(n, raw))
    }

    /// Component `c` of field `n` (first repetition), unescaped and decoded.
    pub fn component_text(&self, n: usize, c: usize) -> Option<Cow<'m, str>> {
        let raw = self.component(n, c)?;
        Some(self.decode(raw))
    }

    fn is_delimiter_field(&self, n: usize) -> bool {
        n == 2 && self.kind_len == 1 && self.content.first() == Some(&b'H')
    }

    fn decode_field(&self, n: usize, raw: &'m [u8]) -> Cow<'m, str> {
        if self.is_delimiter_field(n) {
            self.charset.decode(raw)
        } else {
            self.decode(raw)
        }
    }

    /// Unescapes and decodes a raw value of this record.
    pub fn decode(&self, raw: &'m [u8]) -> Cow<'m, str> {
        if raw.is_ascii() && !raw.contains(&self.delims.escape()) {
            // The common case: nothing to unescape, and ASCII is the same in every charset.
            if let Ok(text) = std::str::from_utf8(raw) {
                return Cow::Borrowed(text);
            }
        }
        match unescape(raw, &self.delims) {
            Cow::Borrowed(b) => self.charset.decode(b),
            Cow::Owned(v) => Cow::Owned(self.charset.decode(&v).into_owned()),
        }
    }
}

impl<'a> Message<'a> {
    /// Parses exactly one message (`H` … `L`); a second `H` is refused (use [`parse_file`]).
    /// `charset` wins when given; otherwise ISO-8859-1, or UTF-8 after a UTF-8 BOM.
    pub fn parse(raw: &'a [u8], charset: Option<Charset>) -> Result<Message<'a>, HprimError> {
        let mut one = None;
        parse_all(raw, charset, true, |m| one = Some(m))?;
        let mut msg = one.ok_or(HprimError::Empty)?;
        msg.start = 0;
        msg.end = raw.len();
        Ok(msg)
    }

    /// The raw bytes of this message, exactly as given: an unmodified message serializes
    /// byte-identically. From [`parse_file`], messages' raw bytes concatenated give the file.
    pub fn raw(&self) -> &'a [u8] {
        self.input.get(self.start..self.end).unwrap_or_default()
    }

    /// The delimiters read from this message's `H` record.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delims
    }

    /// The charset used to decode text.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// Number of logical records (`A` continuations are part of their record).
    pub fn record_count(&self) -> usize {
        self.recs.len()
    }

    fn view(&self, idx: &RecIdx) -> Record<'_> {
        let range = idx.start as usize..idx.end as usize;
        let content = if idx.joined {
            self.joined.get(range)
        } else {
            self.input.get(range)
        };
        Record {
            content: content.unwrap_or_default(),
            kind_len: usize::from(idx.kind_len),
            line: idx.line as usize,
            lines: idx.lines as usize,
            delims: self.delims,
            charset: self.charset,
        }
    }

    /// All logical records in order, the `H` record first.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        self.recs.iter().map(|r| self.view(r))
    }

    /// The records of type `kind`, in order (e.g. every `OBX`).
    pub fn records_of(&self, kind: &str) -> impl Iterator<Item = Record<'_>> {
        let key = kind_key(kind.as_bytes());
        self.recs
            .iter()
            .filter(move |r| key != 0 && r.key == key)
            .map(|r| self.view(r))
    }

    /// The `occurrence`-th (1-based) record of type `kind`.
    pub fn record(&self, kind: &str, occurrence: usize) -> Option<Record<'_>> {
        self.find(kind.as_bytes(), occurrence)
    }

    fn find(&self, kind: &[u8], occurrence: usize) -> Option<Record<'_>> {
        let key = kind_key(kind);
        if key == 0 || occurrence == 0 {
            return None;
        }
        self.recs
            .iter()
            .filter(|r| r.key == key)
            .nth(occurrence - 1)
            .map(|r| self.view(r))
    }

    /// The `H` record.
    pub fn header(&self) -> Option<Record<'_>> {
        self.recs.first().map(|r| self.view(r))
    }

    /// The HPRIM version from H.13 (first component), e.g. `H2.2`; `None` when empty.
    pub fn version(&self) -> Option<Cow<'_, str>> {
        self.header_component(13, 1)
    }

    /// The version's type from H.13 (second component), e.g. `C` in `H2.2~C`.
    pub fn version_type(&self) -> Option<Cow<'_, str>> {
        self.header_component(13, 2)
    }

    /// The message type from H.7, e.g. `ORU`, `ADM`, `ORM`.
    pub fn message_type(&self) -> Option<Cow<'_, str>> {
        self.header_component(7, 1)
    }

    fn header_component(&self, n: usize, c: usize) -> Option<Cow<'_, str>> {
        self.header()?
            .component_text(n, c)
            .filter(|t| !t.trim().is_empty())
    }

    /// The raw (still escaped) bytes at `path`. `None` when the record, field, repetition,
    /// component or subcomponent is absent; `Some(b"")` when present but empty.
    pub fn get(&self, path: &HprimPath) -> Option<&[u8]> {
        let rec = self.find(path.kind().as_bytes(), path.occurrence())?;
        rec.value(
            path.field(),
            path.repetition(),
            path.component(),
            path.subcomponent(),
        )
    }

    /// The value at `path`, unescaped and decoded in the message charset.
    pub fn text(&self, path: &HprimPath) -> Option<Cow<'_, str>> {
        let rec = self.find(path.kind().as_bytes(), path.occurrence())?;
        let raw = rec.value(
            path.field(),
            path.repetition(),
            path.component(),
            path.subcomponent(),
        )?;
        Some(rec.decode_field(path.field(), raw))
    }

    /// Parses `path` and returns its text: convenient, but parse the path once when querying
    /// many messages.
    pub fn query(&self, path: &str) -> Result<Option<String>, HprimError> {
        let path: HprimPath = path.parse()?;
        Ok(self.text(&path).map(Cow::into_owned))
    }
}

/// Parses a file holding one or more messages (`H` … `L`, `H` … `L`). `charset` wins when
/// given; otherwise ISO-8859-1, or UTF-8 after a UTF-8 BOM. Line numbers in errors and in
/// [`Record::line`] count from the start of the file.
pub fn parse_file(raw: &[u8], charset: Option<Charset>) -> Result<Vec<Message<'_>>, HprimError> {
    let mut out = Vec::new();
    parse_all(raw, charset, false, |m| out.push(m))?;
    Ok(out)
}

/// A message being read.
struct Open {
    /// Start of the message's bytes in the input.
    start: usize,
    /// Physical line of its `H` record.
    h_line: usize,
    delims: Delimiters,
    recs: Vec<RecIdx>,
    joined: Vec<u8>,
    /// Number of `P` records.
    patients: u64,
    /// Index in `recs` of the `L` record, once read.
    end_record: Option<usize>,
}

/// Whether a line is an `H` record: `H` then a non-alphanumeric byte (or nothing, so that a
/// bare `H` gets the precise delimiter error).
fn is_h_line(line: &[u8]) -> bool {
    line.first() == Some(&b'H') && line.get(1).is_none_or(|b| !b.is_ascii_alphanumeric())
}

/// The record type: the bytes before the field separator, when it comes within 4 bytes.
fn kind_of(line: &[u8], fs: u8) -> Option<&[u8]> {
    match line.iter().take(4).position(|&b| b == fs) {
        Some(p) => line.get(..p),
        None if line.len() <= 3 => Some(line),
        None => None,
    }
}

/// The record type for an error message, before delimiters are known.
fn shown_kind(line: &[u8]) -> String {
    let n = line
        .iter()
        .take(8)
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    if n == 0 {
        readable_prefix(line, 8)
    } else {
        readable(line.get(..n).unwrap_or_default())
    }
}

/// Reads the delimiters of an `H` record by position (see the module docs).
pub(crate) fn read_delimiters(line: &[u8], record: usize) -> Result<Delimiters, HprimError> {
    let err = |reason: String| HprimError::Delimiters { record, reason };
    let check = |b: u8, role: usize| -> Result<(), HprimError> {
        if b.is_ascii_punctuation() {
            Ok(())
        } else {
            Err(err(format!(
                "`{}` cannot be the {}: expected ASCII punctuation",
                readable(&[b]),
                ROLES.get(role).unwrap_or(&"delimiter")
            )))
        }
    };
    let Some(&fs) = line.get(1) else {
        return Err(err(
            "expected a field separator after `H`, found the end of the record".into(),
        ));
    };
    check(fs, 0)?;
    let rest = line.get(2..).unwrap_or_default();
    let n = rest.iter().position(|&b| b == fs).unwrap_or(rest.len());
    let enc = rest.get(..n).unwrap_or_default();
    for (i, &b) in enc.iter().take(4).enumerate() {
        check(b, i + 1)?;
    }
    if enc.len() != 4 {
        return Err(err(format!(
            "expected 4 encoding characters (component, repetition, escape, subcomponent) after the field separator, found {} (`{}`)",
            enc.len(),
            readable_prefix(enc, 16)
        )));
    }
    let mut chars = [fs, 0, 0, 0, 0];
    for (i, &b) in enc.iter().enumerate() {
        if let Some(prev) = chars.iter().take(i + 1).position(|&c| c == b) {
            return Err(err(format!(
                "`{}` is used twice ({} and {})",
                char::from(b),
                ROLES.get(prev).unwrap_or(&"delimiter"),
                ROLES.get(i + 1).unwrap_or(&"delimiter"),
            )));
        }
        if let Some(slot) = chars.get_mut(i + 1) {
            *slot = b;
        }
    }
    let text: String = chars.iter().map(|&b| char::from(b)).collect();
    Delimiters::from_chars(&text).map_err(|e| err(e.to_string()))
}

impl Open {
    fn new(start: usize, h_line: usize, delims: Delimiters) -> Open {
        Open {
            start,
            h_line,
            delims,
            recs: Vec::with_capacity(32),
            joined: Vec::new(),
            patients: 0,
            end_record: None,
        }
    }

    fn push(&mut self, start: usize, end: usize, line: usize, kind: &[u8]) {
        let kind_len = kind.len();
        self.recs.push(RecIdx {
            key: kind_key(kind),
            start: start as u32,
            end: end as u32,
            joined: false,
            line: line as u32,
            lines: 1,
            kind_len: kind_len as u8,
        });
    }

    /// Appends an `A` line's content (after `A` and its separator) to the last record.
    fn continue_last(&mut self, input: &[u8], extra: &[u8]) {
        let joined = &mut self.joined;
        let Some(last) = self.recs.last_mut() else {
            return;
        };
        if !last.joined || last.end as usize != joined.len() {
            let range = last.start as usize..last.end as usize;
            let content = if last.joined {
                joined.get(range).map(<[u8]>::to_vec).unwrap_or_default()
            } else {
                input.get(range).map(<[u8]>::to_vec).unwrap_or_default()
            };
            last.start = joined.len() as u32;
            joined.extend_from_slice(&content);
            last.joined = true;
        }
        joined.extend_from_slice(extra);
        last.end = joined.len() as u32;
        last.lines += 1;
    }

    fn last_location(&self, input: &[u8]) -> (usize, String) {
        let Some(last) = self.recs.last() else {
            return (self.h_line, "H".into());
        };
        let range = last.start as usize..last.start as usize + usize::from(last.kind_len);
        let kind = if last.joined {
            self.joined.get(range)
        } else {
            input.get(range)
        };
        (last.line as usize, readable(kind.unwrap_or_default()))
    }

    /// Closes the message at byte `end`, checking the `L` record's count of `P` records.
    fn finish<'a>(
        self,
        input: &'a [u8],
        end: usize,
        charset: Charset,
    ) -> Result<Message<'a>, HprimError> {
        let Some(l_index) = self.end_record else {
            let (record, kind) = self.last_location(input);
            return Err(HprimError::MissingEnd {
                record,
                kind,
                start: self.h_line,
            });
        };
        let msg = Message {
            input,
            start: self.start,
            end,
            delims: self.delims,
            charset,
            recs: self.recs,
            joined: self.joined,
        };
        if let Some(idx) = msg.recs.get(l_index) {
            let l = msg.view(idx);
            let count = l.field(4).unwrap_or_default().trim_ascii();
            if !count.is_empty() && count.iter().all(u8::is_ascii_digit) {
                let declared = std::str::from_utf8(count)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok());
                if let Some(declared) = declared
                    && declared != self.patients
                {
                    return Err(HprimError::CountMismatch {
                        record: l.line(),
                        declared,
                        found: self.patients,
                    });
                }
            }
        }
        Ok(msg)
    }
}

/// The single pass over lines, giving each message to `sink`; `single` refuses a second one.
fn parse_all<'a>(
    raw: &'a [u8],
    charset: Option<Charset>,
    single: bool,
    mut sink: impl FnMut(Message<'a>),
) -> Result<(), HprimError> {
    if u32::try_from(raw.len()).is_err() {
        return Err(HprimError::TooLarge { len: raw.len() });
    }
    let has_bom = raw.starts_with(BOM);
    let charset = charset.unwrap_or(if has_bom {
        Charset::Utf8
    } else {
        Charset::Latin1
    });
    let mut pos = if has_bom { BOM.len() } else { 0 };
    let mut line_no = 0usize;
    let mut open: Option<Open> = None;
    while pos < raw.len() {
        let rest = raw.get(pos..).unwrap_or_default();
        let (len, next) = match line_end(rest) {
            Some(i) => {
                let crlf = rest.get(i) == Some(&b'\r') && rest.get(i + 1) == Some(&b'\n');
                (i, pos + i + if crlf { 2 } else { 1 })
            }
            None => (rest.len(), raw.len()),
        };
        line_no += 1;
        let line_start = pos;
        let line = rest.get(..len).unwrap_or_default();
        pos = next;
        if line.iter().all(|&b| b <= b' ') {
            continue; // blank line, or the control bytes some senders leave after a record end
        }
        let Some(o) = open.as_mut() else {
            if !is_h_line(line) {
                return Err(HprimError::NotHeader {
                    record: line_no,
                    kind: shown_kind(line),
                });
            }
            let delims = read_delimiters(line, line_no)?;
            let mut first = Open::new(0, line_no, delims);
            first.push(line_start, line_start + len, line_no, b"H");
            open = Some(first);
            continue;
        };
        if is_h_line(line) {
            if o.end_record.is_none() {
                return Err(HprimError::MissingEnd {
                    record: line_no,
                    kind: "H".into(),
                    start: o.h_line,
                });
            }
            if single {
                return Err(HprimError::SeveralMessages { record: line_no });
            }
            let delims = read_delimiters(line, line_no)?;
            let mut next_msg = Open::new(line_start, line_no, delims);
            next_msg.push(line_start, line_start + len, line_no, b"H");
            if let Some(done) = open.replace(next_msg) {
                sink(done.finish(raw, line_start, charset)?);
            }
            continue;
        }
        let fs = o.delims.field();
        let Some(kind) = kind_of(line, fs) else {
            let shown = line.get(..memchr(fs, line).unwrap_or(line.len()));
            return Err(HprimError::RecordType {
                record: line_no,
                kind: readable_prefix(shown.unwrap_or_default(), 8),
            });
        };
        if kind == b"A" {
            o.continue_last(raw, line.get(2..).unwrap_or_default());
            continue;
        }
        if o.end_record.is_some() {
            return Err(HprimError::AfterEnd {
                record: line_no,
                kind: readable_prefix(kind, 8),
            });
        }
        if !is_record_type(kind) {
            return Err(HprimError::RecordType {
                record: line_no,
                kind: readable_prefix(kind, 8),
            });
        }
        match kind {
            b"P" => o.patients += 1,
            b"L" => o.end_record = Some(o.recs.len()),
            _ => {}
        }
        o.push(line_start, line_start + len, line_no, kind);
    }
    match open {
        None => Err(HprimError::Empty),
        Some(o) => {
            sink(o.finish(raw, raw.len(), charset)?);
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// A structured result in the reference order `H|~^\&`, CRLF, ISO-8859-1 accents, an `OBR`
    /// continued by one `A` record, numeric `OBX` with units and ranges, a comment, a PDF file.
    const ORU: &[u8] = b"H|~^\\&|RES0001.HPR||LAB01~Laboratoire Central||ORU|||CHU~Centre Hospitalier||P|H2.2~C|202401151030\r\n\
P|1|IPP123456|LAB998|NDA7788|L\xc9GER~Ana\xefs~Marie|BRUN|19850312|F||12 rue de la Gare~~Lyon~~69002\r\n\
OBR|1|ECH01~|~DEM55|GLY~Glyc\xe9mie~L^CREA~Cr\xe9atinine~L|R||202401150800||||N|||202401150815||PRES~DR MARTIN~L~CHU~Centre Hosp\r\n\
A|italier~L|0478000000||||||||F\r\n\
OBX|1|NM|GLY~Glyc\xe9mie~L||5.4|mmol/l|3.9-5.8|N|||F|||202401151000\r\n\
C|1|L|Dosage \xe0 jeun, \xe9chantillon re\xe7u \xe0 8h\r\n\
OBX|2|NM|CREA~Cr\xe9atinine~L||88|\xb5mol/l|45-90|N|||F|||202401151000\r\n\
OBX|3|FIC|PDF~Compte rendu~L||LAB01~CR0001.PDF~PDF\r\n\
L|1||1|8\r\n";

    #[test]
    fn ok_structured_result() {
        let m = Message::parse(ORU, None).unwrap();
        assert_eq!(m.raw(), ORU);
        assert_eq!(m.charset(), Charset::Latin1);
        assert_eq!(m.version().as_deref(), Some("H2.2"));
        assert_eq!(m.version_type().as_deref(), Some("C"));
        assert_eq!(m.message_type().as_deref(), Some("ORU"));
        let kinds: Vec<&str> = m.records().map(|r| r.kind()).collect();
        assert_eq!(kinds, ["H", "P", "OBR", "OBX", "C", "OBX", "OBX", "L"]);
        let lines: Vec<usize> = m.records().map(|r| r.line()).collect();
        assert_eq!(lines, [1, 2, 3, 5, 6, 7, 8, 9]);
        let q = |p: &str| m.query(p).unwrap();
        assert_eq!(q("P.3").as_deref(), Some("IPP123456"));
        assert_eq!(q("P.6.1").as_deref(), Some("LÉGER"));
        assert_eq!(q("P.6.2").as_deref(), Some("Anaïs"));
        assert_eq!(q("P.11.3").as_deref(), Some("Lyon"));
        assert_eq!(q("OBR.5[2].2").as_deref(), Some("Créatinine"));
        assert_eq!(q("OBR.17.5").as_deref(), Some("Centre Hospitalier"));
        assert_eq!(q("OBR.18").as_deref(), Some("0478000000"));
        assert_eq!(q("OBR.26").as_deref(), Some("F"));
        assert_eq!(q("OBX.6").as_deref(), Some("5.4"));
        assert_eq!(q("OBX.7").as_deref(), Some("mmol/l"));
        assert_eq!(q("OBX.8").as_deref(), Some("3.9-5.8"));
        assert_eq!(q("OBX[2].4.2").as_deref(), Some("Créatinine"));
        assert_eq!(q("OBX[2].7").as_deref(), Some("µmol/l"));
        assert_eq!(
            q("C.4").as_deref(),
            Some("Dosage à jeun, échantillon reçu à 8h")
        );
        assert_eq!(q("OBX[3].3").as_deref(), Some("FIC"));
        assert_eq!(q("OBX[3].6.2").as_deref(), Some("CR0001.PDF"));
        assert_eq!(q("OBX[3].6.3").as_deref(), Some("PDF"));
        assert_eq!(q("H.2").as_deref(), Some("~^\\&"));
        assert_eq!(q("OBX[4].6"), None);
        assert_eq!(q("OBX.40"), None);
        let obr = m.record("OBR", 1).unwrap();
        assert_eq!(obr.line_count(), 2);
        assert_eq!(obr.field_count(), 26);
        let tests: Vec<&[u8]> = obr.repetitions(5);
        assert_eq!(tests, [&b"GLY~Glyc\xe9mie~L"[..], b"CREA~Cr\xe9atinine~L"]);
        assert_eq!(obr.component_text(5, 2).as_deref(), Some("Glycémie"));
        assert_eq!(m.header().unwrap().repetitions(2), [b"~^\\&"]);
        assert!(obr.repetitions(40).is_empty());
        assert_eq!(m.records_of("OBX").count(), 3);
        assert_eq!(m.records_of("OBX").nth(2).unwrap().line(), 8);
        assert_eq!(m.records_of("OBXX").count(), 0);
        assert!(m.record("OBX", 0).is_none());
    }

    #[rstest]
    #[case::ok_first(b"a|b|c", 1, Some(&b"a"[..]))]
    #[case::ok_middle(b"a|b|c", 2, Some(&b"b"[..]))]
    #[case::ok_last(b"a|b|c", 3, Some(&b"c"[..]))]
    #[case::ok_empty_piece(b"a||c", 2, Some(&b""[..]))]
    #[case::ok_empty_slice(b"", 1, Some(&b""[..]))]
    #[case::err_past_end(b"a|b", 3, None)]
    #[case::err_zero(b"a|b", 0, None)]
    fn ok_piece(#[case] slice: &[u8], #[case] n: usize, #[case] expected: Option<&[u8]>) {
        assert_eq!(piece(slice, b'|', n), expected);
    }

    #[test]
    fn ok_swar_helpers_match_scalar() {
        let text: &[u8] =
            b"OBX|1|NM|GLY~Glyc\xe9mie~L||5.4|mmol/l|3.9-5.8|N|||F|||202401151000|\r\nA|b\nx";
        for n in 0..25 {
            let scalar = text
                .split(|&b| b == b'|')
                .nth(n.max(1) - 1)
                .filter(|_| n > 0);
            assert_eq!(piece(text, b'|', n), scalar, "piece {n}");
        }
        for start in 0..text.len() {
            let rest = &text[start..];
            let scalar = rest.iter().position(|&b| b == b'\r' || b == b'\n');
            assert_eq!(line_end(rest), scalar, "line end from {start}");
        }
    }

    #[rstest]
    #[case::ok_reference_order(
        b"H|~^\\&|||LAB||ORU|||||P|H2.2~C\rP|1|42||N1|DUPONT~JEAN^DURAND~JEAN\rL|1||1\r",
        "DUPONT",
        "JEAN",
        Some("DURAND"),
        "H2.2"
    )]
    #[case::ok_hl7_order(
        b"H|^~\\&|||LAB||ORU|||||P|H2.2^C\rP|1|42||N1|DUPONT^JEAN~DURAND^JEAN\rL|1||1\r",
        "DUPONT",
        "JEAN",
        Some("DURAND"),
        "H2.2"
    )]
    #[case::ok_other_order(
        b"H|\\^&~|||LAB||ORU|||||P|H2.0\\C\rP|1|42||N1|DUPONT\\JEAN^DURAND\\JEAN\rL|1\r",
        "DUPONT",
        "JEAN",
        Some("DURAND"),
        "H2.0"
    )]
    fn ok_delimiter_orders(
        #[case] raw: &[u8],
        #[case] family: &str,
        #[case] given: &str,
        #[case] second_rep: Option<&str>,
        #[case] version: &str,
    ) {
        let m = Message::parse(raw, None).unwrap();
        assert_eq!(m.query("P.6.1").unwrap().as_deref(), Some(family));
        assert_eq!(m.query("P.6.2").unwrap().as_deref(), Some(given));
        assert_eq!(m.query("P.6[2].1").unwrap().as_deref(), second_rep);
        assert_eq!(m.version().as_deref(), Some(version));
    }

    #[test]
    fn ok_reference_order_roles() {
        let m = Message::parse(b"H|~^\\&\rL|1\r", None).unwrap();
        let d = m.delimiters();
        assert_eq!(
            (
                d.field(),
                d.component(),
                d.repetition(),
                d.escape(),
                d.subcomponent()
            ),
            (b'|', b'~', b'^', b'\\', b'&')
        );
    }

    #[rstest]
    #[case::ok_one(
        b"H|~^\\&\rOBX|1|TX|CR~Compte rendu~L||d\xe9but du te\rA|xte|suite\rL|1\r",
        "début du texte",
        Some("suite"),
        2
    )]
    #[case::ok_several(
        b"H|~^\\&\nOBX|1|TX|CR||un\nA| deux\nA| trois|\nA|quatre\nL|1\n",
        "un deux trois",
        Some("quatre"),
        4
    )]
    #[case::ok_empty_continuation(
        b"H|~^\\&\r\nOBX|1|TX|CR||un\r\nA\r\nA|\r\nL|1\r\n",
        "un",
        None,
        3
    )]
    #[case::ok_continuation_of_l(b"H|~^\\&\rOBX|1|TX|CR||un\rL|1|\rA||0\r", "un", None, 1)]
    fn ok_continuations(
        #[case] raw: &[u8],
        #[case] value: &str,
        #[case] next: Option<&str>,
        #[case] lines: usize,
    ) {
        let m = Message::parse(raw, None).unwrap();
        assert_eq!(m.raw(), raw);
        assert_eq!(m.query("OBX.6").unwrap().as_deref(), Some(value));
        assert_eq!(m.query("OBX.7").unwrap().as_deref(), next);
        let obx = m.record("OBX", 1).unwrap();
        assert_eq!((obx.line(), obx.line_count()), (2, lines));
        assert!(m.records().all(|r| r.kind() != "A"));
    }

    #[rstest]
    #[case::ok_cr(b"H|~^\\&\rP|1|A\rL|1\r")]
    #[case::ok_lf(b"H|~^\\&\nP|1|A\nL|1\n")]
    #[case::ok_crlf(b"H|~^\\&\r\nP|1|A\r\nL|1\r\n")]
    #[case::ok_no_final_end(b"H|~^\\&\r\nP|1|A\r\nL|1")]
    #[case::ok_trailing_blank_lines(b"H|~^\\&\r\nP|1|A\r\nL|1\r\n\r\n  \r\n\x1a")]
    #[case::ok_leading_blank_lines(b"\r\n\r\nH|~^\\&\r\nP|1|A\r\nL|1\r\n")]
    #[case::ok_bom(b"\xef\xbb\xbfH|~^\\&\r\nP|1|A\r\nL|1\r\n")]
    #[case::ok_mixed(b"H|~^\\&\nP|1|A\r\nL|1\r")]
    fn ok_line_ends(#[case] raw: &[u8]) {
        let m = Message::parse(raw, None).unwrap();
        assert_eq!(m.raw(), raw);
        assert_eq!(m.record_count(), 3);
        assert_eq!(m.query("P.3").unwrap().as_deref(), Some("A"));
    }

    #[rstest]
    #[case::ok_default_latin1(None, b"P|1|H\xe9l\xe8ne \xe0 \xe7a \xefle" as &[u8], "Hélène à ça ïle")]
    #[case::ok_caller_utf8(Some(Charset::Utf8), "P|1|Hélène à ça ïle".as_bytes(), "Hélène à ça ïle")]
    #[case::ok_escapes(None, b"P|1|a\\S\\b\\R\\c\\F\\d\\E\\e\\.br\\f", "a~b^c|d\\e\nf")]
    fn ok_text(#[case] cs: Option<Charset>, #[case] p: &[u8], #[case] expected: &str) {
        let mut raw = b"H|~^\\&\r".to_vec();
        raw.extend_from_slice(p);
        raw.extend_from_slice(b"\rL|1\r");
        let m = Message::parse(&raw, cs).unwrap();
        assert_eq!(m.query("P.3").unwrap().as_deref(), Some(expected));
    }

    #[test]
    fn ok_bom_means_utf8() {
        let raw = "\u{feff}H|~^\\&\rP|1|Zoé\rL|1\r".as_bytes();
        let m = Message::parse(raw, None).unwrap();
        assert_eq!(m.charset(), Charset::Utf8);
        assert_eq!(m.query("P.3").unwrap().as_deref(), Some("Zoé"));
        let m = Message::parse(raw, Some(Charset::Latin1)).unwrap();
        assert_eq!(m.charset(), Charset::Latin1);
    }

    #[test]
    fn ok_several_messages() {
        let file: &[u8] = b"H|~^\\&|A.HPR\r\nP|1|111\r\nOBX|1|NM|X||1\r\nL|1||1\r\n\r\nH|^~\\&|B.HPR\r\nP|1|222\r\nP|2|333\r\nOBX|1|NM|X||2^3\r\nL|1||2\r\nH|~^\\&|C.HPR\nL|1\n";
        let ms = parse_file(file, None).unwrap();
        assert_eq!(ms.len(), 3);
        let joined: Vec<u8> = ms.iter().flat_map(|m| m.raw().to_vec()).collect();
        assert_eq!(joined, file);
        assert_eq!(ms[0].query("P.3").unwrap().as_deref(), Some("111"));
        assert_eq!(ms[1].query("P[2].3").unwrap().as_deref(), Some("333"));
        assert_eq!(ms[1].query("OBX.6.2").unwrap().as_deref(), Some("3"));
        assert_eq!(ms[1].delimiters().component(), b'^');
        assert_eq!(ms[1].header().unwrap().line(), 6);
        assert_eq!(ms[2].record_count(), 2);
        assert_eq!(ms[2].query("H.3").unwrap().as_deref(), Some("C.HPR"));
    }

    #[test]
    fn ok_unknown_records_kept() {
        let raw = b"H|~^\\&|||LAB||ADM\rP|1|9\rAP|1|X\rAC|1|Y\rZZ9|a\rL|1||1\r";
        let m = Message::parse(raw, None).unwrap();
        let kinds: Vec<&str> = m.records().map(|r| r.kind()).collect();
        assert_eq!(kinds, ["H", "P", "AP", "AC", "ZZ9", "L"]);
        assert_eq!(m.query("ZZ9.2").unwrap().as_deref(), Some("a"));
        assert_eq!(m.query("AC.3").unwrap().as_deref(), Some("Y"));
    }

    #[rstest]
    #[case::err_empty(b"", "empty input: no `H` record")]
    #[case::err_blank(b"\r\n \r\n", "empty input: no `H` record")]
    #[case::err_missing_h(b"P|1|2\rL|1\r", "record 1 (`P`): expected an `H` record first")]
    #[case::err_record_before_h(
        b"\r\nOBX|1|NM\r\nH|~^\\&\r\nL|1\r\n",
        "record 2 (`OBX`): expected an `H` record first"
    )]
    #[case::err_msh(b"MSH|^~\\&|A\r", "record 1 (`MSH`): expected an `H` record first")]
    #[case::err_bare_h(
        b"H\rL|1\r",
        "record 1 (`H`): field 2: expected a field separator after `H`, found the end of the record"
    )]
    #[case::err_short_delims(
        b"H|~^\\|X\rL|1\r",
        "record 1 (`H`): field 2: expected 4 encoding characters (component, repetition, escape, subcomponent) after the field separator, found 3 (`~^\\`)"
    )]
    #[case::err_long_delims(
        b"H|~^\\&#|X\rL|1\r",
        "record 1 (`H`): field 2: expected 4 encoding characters (component, repetition, escape, subcomponent) after the field separator, found 5 (`~^\\&#`)"
    )]
    #[case::err_duplicate_delims(
        b"H|~~\\&|X\rL|1\r",
        "record 1 (`H`): field 2: `~` is used twice (component separator and repetition separator)"
    )]
    #[case::err_field_sep_reused(
        b"H|~^|&\rL|1\r",
        "record 1 (`H`): field 2: expected 4 encoding characters (component, repetition, escape, subcomponent) after the field separator, found 2 (`~^`)"
    )]
    #[case::err_space_delim(
        b"H| ^\\&\rL|1\r",
        "record 1 (`H`): field 2: ` ` cannot be the component separator: expected ASCII punctuation"
    )]
    #[case::err_non_ascii_delim(
        b"H|\xcb\x9c^\\&\rL|1\r",
        "record 1 (`H`): field 2: `\\xCB` cannot be the component separator: expected ASCII punctuation"
    )]
    #[case::err_bad_record_type(
        b"H|~^\\&\rP|1\robx|1\rL|1||1\r",
        "record 3 (`obx`): invalid record type, expected 1 to 3 uppercase letters or digits"
    )]
    #[case::err_long_record_type(
        b"H|~^\\&\rPATIENT|1\rL|1\r",
        "record 2 (`PATIENT`): invalid record type, expected 1 to 3 uppercase letters or digits"
    )]
    #[case::err_missing_l(
        b"H|~^\\&\r\nP|1|2\r\nOBX|1|NM|X||1\r\n",
        "record 3 (`OBX`): the message started at record 1 has no `L` record"
    )]
    #[case::err_missing_l_continued(
        b"H|~^\\&\r\nOBX|1|NM|X||1\r\nA|2\r\n\r\n",
        "record 2 (`OBX`): the message started at record 1 has no `L` record"
    )]
    #[case::err_new_h_before_l(
        b"H|~^\\&\rP|1|2\rH|~^\\&\rL|1\r",
        "record 3 (`H`): the message started at record 1 has no `L` record"
    )]
    #[case::err_after_l(
        b"H|~^\\&\rP|1|2\rL|1||1\rOBX|1|NM\r",
        "record 4 (`OBX`): record after the `L` record that ended the message"
    )]
    #[case::err_count_mismatch(
        b"H|~^\\&\rP|1|2\rOBX|1\rL|1||2|3\r",
        "record 4 (`L`): field 4: declares 2 `P` records, found 1"
    )]
    #[case::err_several(
        b"H|~^\\&\rL|1\rH|~^\\&\rL|1\r",
        "record 3 (`H`): a second message starts here; read files with `parse_file`"
    )]
    fn err_parse(#[case] raw: &[u8], #[case] expected: &str) {
        assert_eq!(Message::parse(raw, None).unwrap_err().to_string(), expected);
    }

    #[rstest]
    #[case::err_second_message_bad(
        b"H|~^\\&\rL|1\r\nH|~~\\&\rL|1\r",
        "record 3 (`H`): field 2: `~` is used twice (component separator and repetition separator)"
    )]
    #[case::err_second_message_count(
        b"H|~^\\&\rL|1\rH|~^\\&\rP|1\rP|2\rL|1||3\r",
        "record 6 (`L`): field 4: declares 3 `P` records, found 2"
    )]
    #[case::err_second_message_truncated(
        b"H|~^\\&\rL|1\rH|~^\\&\rP|1",
        "record 4 (`P`): the message started at record 3 has no `L` record"
    )]
    fn err_parse_file(#[case] raw: &[u8], #[case] expected: &str) {
        assert_eq!(parse_file(raw, None).unwrap_err().to_string(), expected);
    }

    #[test]
    fn ok_count_ignored_when_not_numeric() {
        assert!(Message::parse(b"H|~^\\&\rP|1\rL|1||x|3\r", None).is_ok());
        assert!(Message::parse(b"H|~^\\&\rP|1\rL|1|| 1 |3\r", None).is_ok());
    }
}
