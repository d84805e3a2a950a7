//! [`MessageBuilder`]: compose or edit a message by path, escaping values on write, and
//! serialize it with CR segment ends in a chosen charset.
//!
//! Values given to [`MessageBuilder::set`] are text: delimiters in them are escaped (`\S\`...)
//! and line breaks become `\.br\`. [`MessageBuilder::set_raw`] takes an already-encoded value
//! (e.g. `DUPONT^Jean`) for callers composing structure. MSH-1 and MSH-2 come from the
//! delimiters and cannot be set. Missing segments, fields, repetitions and components are
//! created (padded with empty ones) as needed.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use crate::hl7::charset::{Charset, CharsetError};
use crate::hl7::delim::Delimiters;
use crate::hl7::escape::escape;
use crate::hl7::message::Message;
use crate::hl7::path::{Path, PathError};

/// Why a builder operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The path text is not a path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// MSH-1/MSH-2 are the delimiters, fixed at construction.
    #[error("{path} cannot be set: the delimiters are fixed when the builder is created")]
    Delimiters {
        /// The path that was asked for.
        path: String,
    },
    /// A segment id that is not 3 uppercase letters or digits.
    #[error("invalid segment id `{id}`: expected 3 uppercase letters or digits")]
    SegmentId {
        /// The id, readable.
        id: String,
    },
    /// The text cannot be encoded in the requested charset.
    #[error(transparent)]
    Charset(#[from] CharsetError),
}

/// One segment being built: its id and everything after it, still escaped (`|a|b^c` for
/// `PID|a|b^c`; for MSH, `|^~\\&|…`, MSH-2 first).
#[derive(Debug, Clone)]
struct SegBuf {
    id: [u8; 3],
    /// The text after the id: each field preceded by the field separator.
    body: String,
    /// Where the last value was written when every value so far was written after the one
    /// before (the body then ends there): the next value further on is appended without
    /// scanning. `None` once a value went elsewhere (the body is then edited by position).
    end: Option<Spot>,
}

/// Equal when the text is: where the last value went is how it was written, not what it is.
impl PartialEq for SegBuf {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.body == other.body
    }
}

impl Eq for SegBuf {}

/// A place in a segment: field (MSH-2 is field 1 of a header), repetition, component,
/// subcomponent, 1-based; 0 for "the whole" of that level.
type Spot = [usize; 4];

/// The room a segment's text is given at first, and at least whenever it grows: most segments
/// fit, and growing one byte-string by doubling from 8 cost a reallocation per few values.
const SEGMENT_ROOM: usize = 128;

impl SegBuf {
    fn new(id: [u8; 3]) -> Self {
        SegBuf {
            id,
            body: String::with_capacity(SEGMENT_ROOM),
            end: Some([0; 4]),
        }
    }

    fn is_header(&self) -> bool {
        matches!(&self.id, b"MSH" | b"FHS" | b"BHS")
    }
}

/// How many field, repetition, component and subcomponent separators to append to go from
/// the end of a value written at `from` to the start of `to`; `None` when `to` is not after
/// `from` or lies inside a part written whole (the body must then be edited in place).
fn advance(from: Spot, to: Spot) -> Option<[usize; 4]> {
    let [f0, r0, c0, s0] = from;
    let [f, r, c, s] = to;
    let pad = |n: usize| n.saturating_sub(1);
    if f > f0 {
        return Some([f - f0, pad(r), pad(c), pad(s)]);
    }
    if f < f0 || r0 == 0 || r == 0 {
        return None;
    }
    if r > r0 {
        return Some([0, r - r0, pad(c), pad(s)]);
    }
    if r < r0 || c0 == 0 || c == 0 {
        return None;
    }
    if c > c0 {
        return Some([0, 0, c - c0, pad(s)]);
    }
    if c < c0 || s0 == 0 || s == 0 || s <= s0 {
        return None;
    }
    Some([0, 0, 0, s - s0])
}

/// Builds or edits a message by path; the counterpart of [`Message`] for output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBuilder {
    delims: Delimiters,
    segments: Vec<SegBuf>,
}

impl Default for MessageBuilder {
    fn default() -> Self {
        MessageBuilder::new(Delimiters::default())
    }
}

impl MessageBuilder {
    /// Starts a message with an MSH segment holding only MSH-1/MSH-2 for `delims`.
    pub fn new(delims: Delimiters) -> Self {
        MessageBuilder {
            delims,
            segments: vec![SegBuf {
                id: *b"MSH",
                body: format!("{}{}", char::from(delims.field()), delims.encoding_chars()),
                end: Some([1, 0, 0, 0]),
            }],
        }
    }

    /// Starts from a parsed message (fields kept escaped as received, decoded in its charset),
    /// to edit a few values and re-serialize.
    pub fn from_message(msg: &Message<'_>) -> Self {
        let fs = msg.delimiters().field();
        let segments = msg
            .segments()
            .filter_map(|s| {
                let raw = s.raw();
                let id: [u8; 3] = raw.get(..3)?.try_into().ok()?;
                let mut body = String::new();
                if let Some(rest) = raw.get(4..).filter(|_| raw.len() > 3) {
                    // Field by field: an "ASCII" message falls back to Latin-1 per field.
                    for field in rest.split(|&b| b == fs) {
                        body.push(char::from(fs));
                        body.push_str(&msg.charset().decode(field));
                    }
                }
                Some(SegBuf {
                    id,
                    body,
                    end: None,
                })
            })
            .collect();
        MessageBuilder {
            delims: *msg.delimiters(),
            segments,
        }
    }

    /// The delimiters used for escaping and serialization.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delims
    }

    /// Makes room for `additional` more segments.
    pub(crate) fn reserve_segments(&mut self, additional: usize) {
        self.segments.reserve(additional);
    }

    /// Number of segments so far.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends an empty segment (`NTE`, `ZBE`...).
    pub fn add_segment(&mut self, id: &str) -> Result<&mut Self, BuildError> {
        let id: [u8; 3] = id
            .as_bytes()
            .try_into()
            .ok()
            .filter(|b: &[u8; 3]| {
                b.iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            })
            .ok_or_else(|| BuildError::SegmentId {
                id: crate::text::readable(id.as_bytes()),
            })?;
        self.segments.push(SegBuf::new(id));
        Ok(self)
    }

    /// Sets the text at `path` (e.g. `PID-5.1`), escaping delimiters and line breaks.
    pub fn set(&mut self, path: &str, value: &str) -> Result<&mut Self, BuildError> {
        let path: Path = path.parse()?;
        self.set_path(&path, value)
    }

    /// Sets the text at a parsed path, escaping delimiters and line breaks.
    pub fn set_path(&mut self, path: &Path, value: &str) -> Result<&mut Self, BuildError> {
        let index = self.target_segment(path)?;
        let escaped = escape(value, &self.delims);
        self.put_in(index, path, &escaped);
        Ok(self)
    }

    /// Sets the text at `path`'s field, repetition, component and subcomponent in the segment
    /// at `index` (0-based, message order), whatever segment and occurrence the path names:
    /// a mapping writer fills the segment it just added without looking it up again.
    pub(crate) fn set_in(
        &mut self,
        index: usize,
        path: &Path,
        value: &str,
    ) -> Result<(), BuildError> {
        if self
            .segments
            .get(index)
            .is_some_and(|s| s.is_header() && path.field() <= 2)
        {
            return Err(BuildError::Delimiters {
                path: path.to_string(),
            });
        }
        let escaped = escape(value, &self.delims);
        self.put_in(index, path, &escaped);
        Ok(())
    }

    /// Sets an already-encoded value (delimiters kept as structure, no escaping).
    pub fn set_raw(&mut self, path: &str, raw: &str) -> Result<&mut Self, BuildError> {
        let path: Path = path.parse()?;
        let index = self.target_segment(&path)?;
        self.put_in(index, &path, raw);
        Ok(self)
    }

    /// The index of the segment `path` names, created (with the ones before it) when missing;
    /// refuses MSH-1/MSH-2.
    fn target_segment(&mut self, path: &Path) -> Result<usize, BuildError> {
        let id = path.segment_bytes();
        let header = matches!(&id, b"MSH" | b"FHS" | b"BHS");
        if header && path.field() <= 2 {
            return Err(BuildError::Delimiters {
                path: path.to_string(),
            });
        }
        Ok(self.segment_index_or_create(id, path.occurrence()))
    }

    /// Writes the encoded `value` at the field, repetition, component and subcomponent of
    /// `path` in segment `index`, padding with empty pieces as needed: appended when it comes
    /// after the last value written (a mapping writes fields in order), else in place.
    fn put_in(&mut self, index: usize, path: &Path, value: &str) {
        let d = self.delims;
        let Some(seg) = self.segments.get_mut(index) else {
            return;
        };
        let field = if seg.is_header() {
            path.field().saturating_sub(1)
        } else {
            path.field()
        };
        let repetition = path.repetition().or(path.component().map(|_| 1));
        let spot = [
            field,
            repetition.unwrap_or(0),
            path.component().unwrap_or(0),
            path.subcomponent().unwrap_or(0),
        ];
        if let Some(counts) = seg.end.and_then(|end| advance(end, spot)) {
            let needed = counts.iter().sum::<usize>() + value.len();
            if seg.body.capacity() - seg.body.len() < needed {
                seg.body.reserve(needed.max(SEGMENT_ROOM));
            }
            let delims = [d.field(), d.repetition(), d.component(), d.subcomponent()];
            for (delim, count) in delims.into_iter().zip(counts) {
                // Pushed one by one: most counts are 0 or 1, where `extend` costs more.
                let delim = char::from(delim);
                for _ in 0..count {
                    seg.body.push(delim);
                }
            }
            seg.body.push_str(value);
            seg.end = Some(spot);
            return;
        }
        seg.end = None;
        let body = &mut seg.body;
        // The body starts with a field separator: field n is its piece n + 1.
        let mut range = piece(body, 0..body.len(), d.field(), field + 1);
        if let Some(rep) = repetition {
            range = piece(body, range, d.repetition(), rep);
            if let Some(c) = path.component() {
                range = piece(body, range, d.component(), c);
                if let Some(s) = path.subcomponent() {
                    range = piece(body, range, d.subcomponent(), s);
                }
            }
        }
        body.replace_range(range, value);
    }

    fn segment_index_or_create(&mut self, id: [u8; 3], occurrence: usize) -> usize {
        let mut seen = 0;
        for (i, s) in self.segments.iter().enumerate() {
            if s.id == id {
                seen += 1;
                if seen == occurrence {
                    return i;
                }
            }
        }
        for _ in seen..occurrence {
            self.segments.push(SegBuf::new(id));
        }
        self.segments.len() - 1
    }

    /// Serializes as UTF-8 text with CR segment ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.text().into_bytes()
    }

    /// Serializes and encodes in `charset` (set MSH-18 accordingly, e.g. `8859/1`).
    pub fn encode(&self, charset: Charset) -> Result<Vec<u8>, BuildError> {
        let text = self.text();
        let converted = match charset.encode(&text)? {
            Cow::Owned(bytes) => Some(bytes),
            Cow::Borrowed(_) => None,
        };
        Ok(converted.unwrap_or_else(|| text.into_bytes()))
    }

    /// The message text, segments ended by CR, built in one allocation.
    fn text(&self) -> String {
        let len = self.segments.iter().map(|s| 4 + s.body.len()).sum();
        let mut out = String::with_capacity(len);
        for seg in &self.segments {
            out.extend(seg.id.iter().copied().map(char::from));
            out.push_str(&seg.body);
            out.push('\r');
        }
        out
    }
}

impl fmt::Display for MessageBuilder {
    /// The message text, segments ended by CR.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// The byte range of the `n`-th (1-based) piece of `s[within]` split on the ASCII `delim`;
/// when `s[within]` has fewer pieces, empty ones are appended at the end of `within` first.
/// Ranges always fall on ASCII delimiters or the ends of `within`, so on char boundaries.
fn piece(s: &mut String, within: Range<usize>, delim: u8, n: usize) -> Range<usize> {
    let mut start = within.start;
    let mut seen = 1;
    while seen < n {
        let rest = s.as_bytes().get(start..within.end).unwrap_or_default();
        match memchr::memchr(delim, rest) {
            Some(i) => {
                start += i + 1;
                seen += 1;
            }
            None => {
                let pad = n - seen;
                let padding: String = std::iter::repeat_n(char::from(delim), pad).collect();
                s.insert_str(within.end, &padding);
                let end = within.end + pad;
                return end..end;
            }
        }
    }
    let rest = s.as_bytes().get(start..within.end).unwrap_or_default();
    let end = memchr::memchr(delim, rest).map_or(within.end, |i| start + i);
    start..end
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn ok_build_adt() {
        let mut b = MessageBuilder::default();
        b.set("MSH-3", "ORDOBRIDGE").unwrap();
        b.set_raw("MSH-9", "ADT^A01^ADT_A01").unwrap();
        b.set("MSH-10", "42").unwrap();
        b.set("MSH-12", "2.5").unwrap();
        b.set("PID-5.1", "Dupont").unwrap();
        b.set("PID-5.2", "Jean").unwrap();
        b.set("PID-3[2].1", "INS1").unwrap();
        b.set("PID-3[2].4.2", "1.2.250.1.213.1.4.8").unwrap();
        b.set("OBX[2]-5", "second").unwrap();
        assert_eq!(
            b.to_string(),
            "MSH|^~\\&|ORDOBRIDGE||||||ADT^A01^ADT_A01|42||2.5\r\
             PID|||~INS1^^^&1.2.250.1.213.1.4.8||Dupont^Jean\r\
             OBX\r\
             OBX|||||second\r"
        );
        let out = b.to_bytes();
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.query("MSH-9.2").unwrap().as_deref(), Some("A01"));
        assert_eq!(
            m.query("PID-3[2].4.2").unwrap().as_deref(),
            Some("1.2.250.1.213.1.4.8")
        );
    }

    #[rstest]
    #[case::ok_delims("a|b^c~d\\e&f", "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f")]
    #[case::ok_line_break("l1\nl2", "l1\\.br\\l2")]
    #[case::ok_accents("Hélène", "Hélène")]
    fn ok_builder_escaping(#[case] value: &str, #[case] written: &str) {
        let mut b = MessageBuilder::default();
        b.set("NTE-3", value).unwrap();
        assert_eq!(b.to_string(), format!("MSH|^~\\&\rNTE|||{written}\r"));
        let out = b.to_bytes();
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.query("NTE-3").unwrap().as_deref(), Some(value));
    }

    #[rstest]
    #[case::ok_pad_components("PID-5.3", "C", "PID|||||A^B\r", "PID|||||A^B^C\r")]
    #[case::ok_replace_component("PID-5.1", "Z", "PID|||||A^B\r", "PID|||||Z^B\r")]
    #[case::ok_second_repetition("PID-3[2].1", "Y", "PID|||X^^^H~W\r", "PID|||X^^^H~Y\r")]
    #[case::ok_pad_repetitions("PID-3[3]", "Y", "PID|||X^^^H\r", "PID|||X^^^H~~Y\r")]
    #[case::ok_subcomponent_inside(
        "PID-3.4.2",
        "1.2",
        "PID|||X^^^H&OLD&ISO^PI\r",
        "PID|||X^^^H&1.2&ISO^PI\r"
    )]
    #[case::ok_whole_field("PID-3", "N", "PID|||X^^^H~W\r", "PID|||N\r")]
    #[case::ok_new_field("PID-8", "F", "PID|||X\r", "PID|||X|||||F\r")]
    fn ok_set_edits_in_place(
        #[case] path: &str,
        #[case] value: &str,
        #[case] before: &str,
        #[case] after: &str,
    ) {
        let raw = format!("MSH|^~\\&|A\r{before}");
        let mut b = MessageBuilder::from_message(&Message::parse(raw.as_bytes()).unwrap());
        b.set(path, value).unwrap();
        assert_eq!(b.to_string(), format!("MSH|^~\\&|A\r{after}"));
    }

    #[test]
    fn ok_set_in_fills_the_given_segment() {
        let mut b = MessageBuilder::default();
        b.add_segment("NTE").unwrap();
        b.add_segment("NTE").unwrap();
        let path: Path = "NTE-3".parse().unwrap();
        b.set_in(2, &path, "second|").unwrap();
        b.set_in(0, &"MSH-10".parse().unwrap(), "C1").unwrap();
        assert_eq!(
            b.to_string(),
            "MSH|^~\\&||||||||C1\rNTE\rNTE|||second\\F\\\r"
        );
    }

    #[test]
    fn err_set_in_refuses_the_delimiters() {
        let mut b = MessageBuilder::default();
        let path: Path = "MSH-2".parse().unwrap();
        assert_eq!(
            b.set_in(0, &path, "x").unwrap_err().to_string(),
            "MSH-2 cannot be set: the delimiters are fixed when the builder is created"
        );
    }

    #[test]
    fn ok_round_trip_from_message() {
        let raw = "MSH|^~\\&|A|B|||||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||X^^^Y~Z||N\\S\\M^P\rZBE|1\r";
        let m = Message::parse(raw.as_bytes()).unwrap();
        let b = MessageBuilder::from_message(&m);
        assert_eq!(b.to_bytes(), raw.as_bytes());
        let mut b = b;
        b.set("PID-5.2", "Renée").unwrap();
        assert_eq!(b.to_string(), raw.replace("N\\S\\M^P", "N\\S\\M^Renée"));
    }

    #[test]
    fn ok_equal_whatever_the_writing_order() {
        let mut appended = MessageBuilder::default();
        appended.set("PID-3", "X").unwrap();
        appended.set("PID-5.2", "Y").unwrap();
        let mut edited = MessageBuilder::default();
        edited.set("PID-5.2", "Y").unwrap();
        edited.set("PID-3", "X").unwrap();
        assert_eq!(appended, edited);
        let out = appended.to_bytes();
        let parsed = MessageBuilder::from_message(&Message::parse(&out).unwrap());
        assert_eq!(parsed, appended);
    }

    #[test]
    fn ok_encode_latin1() {
        let mut b = MessageBuilder::default();
        b.set("MSH-18", "8859/1").unwrap();
        b.set("PID-5", "Renée").unwrap();
        let out = b.encode(Charset::Latin1).unwrap();
        assert_eq!(out, b"MSH|^~\\&||||||||||||||||8859/1\rPID|||||Ren\xE9e\r");
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.query("PID-5").unwrap().as_deref(), Some("Renée"));
    }

    #[test]
    fn ok_alternate_delimiters() {
        let mut b = MessageBuilder::new(Delimiters::from_chars("$%*!@").unwrap());
        b.set("PID-5.2", "a$b").unwrap();
        assert_eq!(b.to_string(), "MSH$%*!@\rPID$$$$$%a!F!b\r");
    }

    #[rstest]
    #[case::err_msh1(
        "MSH-1",
        "MSH-1 cannot be set: the delimiters are fixed when the builder is created"
    )]
    #[case::err_msh2(
        "MSH-2.1",
        "MSH-2.1 cannot be set: the delimiters are fixed when the builder is created"
    )]
    #[case::err_path("PID-x", "invalid path `PID-x`: expected a field number after `-`")]
    fn err_set(#[case] path: &str, #[case] expected: &str) {
        let mut b = MessageBuilder::default();
        assert_eq!(b.set(path, "x").unwrap_err().to_string(), expected);
    }

    /// The builder as it was (one `String` per field, each value put in place), against
    /// which the appending one is checked.
    struct Reference {
        delims: Delimiters,
        segments: Vec<([u8; 3], Vec<String>)>,
    }

    impl Reference {
        fn put_in(&mut self, index: usize, path: &Path, value: &str) {
            let d = self.delims;
            let Some((id, fields)) = self.segments.get_mut(index) else {
                return;
            };
            let generic = if matches!(&*id, b"MSH" | b"FHS" | b"BHS") {
                path.field().saturating_sub(1)
            } else {
                path.field()
            };
            if fields.len() < generic {
                fields.resize(generic, String::new());
            }
            let Some(field) = fields.get_mut(generic.saturating_sub(1)) else {
                return;
            };
            let Some(rep) = path.repetition().or(path.component().map(|_| 1)) else {
                field.clear();
                field.push_str(value);
                return;
            };
            let mut range = piece(field, 0..field.len(), d.repetition(), rep);
            if let Some(c) = path.component() {
                range = piece(field, range, d.component(), c);
                if let Some(s) = path.subcomponent() {
                    range = piece(field, range, d.subcomponent(), s);
                }
            }
            field.replace_range(range, value);
        }

        fn text(&self) -> String {
            let mut out = String::new();
            for (id, fields) in &self.segments {
                out.extend(id.iter().copied().map(char::from));
                for field in fields {
                    out.push('|');
                    out.push_str(field);
                }
                out.push('\r');
            }
            out
        }
    }

    /// A step of a random build: a new segment, or a value at a place in the last one.
    #[derive(Debug, Clone)]
    enum Op {
        Segment(&'static str),
        Set(usize, Option<usize>, Option<usize>, Option<usize>, String),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let place = (1..7usize, 0..4usize, 0..4usize, 0..3usize);
        prop_oneof![
            1 => prop_oneof![Just("PID"), Just("NTE"), Just("MSH")].prop_map(Op::Segment),
            6 => (place, "[a-z|^~&\\\\]{0,3}").prop_map(|((f, r, c, s), text)| {
                let some = |n: usize| (n > 0).then_some(n);
                let component = some(c);
                Op::Set(f, some(r), component, component.and(some(s)), text)
            }),
        ]
    }

    proptest::proptest! {
        /// Values written in any order, on any part, in any segment: the same message as
        /// the field-by-field builder it replaced.
        #[test]
        fn ok_same_message_as_field_by_field(ops in proptest::collection::vec(op(), 0..40)) {
            let mut builder = MessageBuilder::default();
            let d = *builder.delimiters();
            let mut reference = Reference {
                delims: d,
                segments: vec![(*b"MSH", vec![d.encoding_chars()])],
            };
            for op in ops {
                match op {
                    Op::Segment(id) => {
                        builder.add_segment(id).unwrap();
                        let id: [u8; 3] = id.as_bytes().try_into().unwrap();
                        reference.segments.push((id, Vec::new()));
                    }
                    Op::Set(field, repetition, component, subcomponent, text) => {
                        let index = builder.segment_count() - 1;
                        let path =
                            Path::new("ZZZ", 1, field, repetition, component, subcomponent)
                                .unwrap();
                        match builder.set_in(index, &path, &text) {
                            Ok(()) => reference.put_in(index, &path, &escape(&text, &d)),
                            Err(e) => proptest::prop_assert_eq!(
                                e.to_string(),
                                format!("{path} cannot be set: the delimiters are fixed when the builder is created")
                            ),
                        }
                    }
                }
                proptest::prop_assert_eq!(builder.to_string(), reference.text());
            }
        }
    }

    #[test]
    fn err_add_segment_and_encode() {
        let mut b = MessageBuilder::default();
        assert_eq!(
            b.add_segment("nte").unwrap_err().to_string(),
            "invalid segment id `nte`: expected 3 uppercase letters or digits"
        );
        b.add_segment("NTE").unwrap();
        b.set("NTE-3", "中").unwrap();
        assert_eq!(
            b.encode(Charset::Latin1).unwrap_err().to_string(),
            "character `中` (U+4E2D) at char 15 cannot be encoded in 8859/1"
        );
    }
}
