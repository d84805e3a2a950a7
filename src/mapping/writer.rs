//! Output writers: the evaluator hands segments and values to an [`OutputWriter`], so the
//! same compiled mapping writes HL7v2 or HPRIM Santé.
//!
//! The HL7 writer goes through [`MessageBuilder`]: values are escaped on write (`|^~\&` and
//! line breaks), each value is checked against the output charset where it is set (so the
//! error names the field), and the message is encoded in that charset at the end.
//!
//! The HPRIM writer goes through [`HprimBuilder`]: it gathers the components of each record's
//! fields, escapes them, and hands each record to the builder, which writes the `H`
//! delimiters, splits long records into `A` records and encodes in the mapping's charset.

use std::fmt;
use std::sync::OnceLock;

use serde_json::Value;

use super::json::{JsonPath, JsonWriteError, JsonWriter};
use crate::hl7::escape::escape;
use crate::hl7::{BuildError, Charset, MessageBuilder, Path};
use crate::hprim::{HprimBuilder, HprimError, HprimPath};

/// Receives what a mapping produces, in order: a segment, then the values of its fields.
///
/// Values are plain text; escaping is the writer's job.
pub trait OutputWriter {
    /// What can go wrong while writing (an unencodable character, a refused segment id).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Starts a new segment (HL7) or record (HPRIM) named `id`; the mapping's first `MSH`
    /// names the header that every HL7 message already has.
    fn start_segment(&mut self, id: &str) -> Result<(), Self::Error>;

    /// Writes `text` (not escaped, not empty) at `target` in the current segment.
    fn set(&mut self, target: &Target, text: &str) -> Result<(), Self::Error>;

    /// Writes a typed value (a JSON field with `type = "number"`, `"bool"` or `"array"`);
    /// writers of text formats, which never get one (load refuses `type` there), write its
    /// JSON text.
    fn set_value(&mut self, target: &Target, value: Value) -> Result<(), Self::Error> {
        match value {
            Value::String(text) => self.set(target, &text),
            other => self.set(target, &other.to_string()),
        }
    }
}

/// Where a value goes in the current segment or record, as written in the mapping file
/// (`RXO-1.2` in HL7, `P.6.1` in HPRIM, `patient.id` or `/patient/id` in JSON); displayed as
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The parsed path, always on the first occurrence of its segment; a writer places it in
    /// the current segment.
    path: TargetPath,
}

/// The path notations a mapping may use, one per output format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetPath {
    Hl7(Path),
    Hprim(HprimPath),
    Json(JsonPath),
}

impl Target {
    pub(crate) fn new(path: Path) -> Target {
        Target {
            path: TargetPath::Hl7(path),
        }
    }

    pub(crate) fn hprim(path: HprimPath) -> Target {
        Target {
            path: TargetPath::Hprim(path),
        }
    }

    pub(crate) fn json(path: JsonPath) -> Target {
        Target {
            path: TargetPath::Json(path),
        }
    }

    /// The HL7 path (occurrence 1), e.g. `RXO-1.2`, when the mapping writes HL7.
    pub fn hl7_path(&self) -> Option<&Path> {
        match &self.path {
            TargetPath::Hl7(path) => Some(path),
            _ => None,
        }
    }

    /// The HPRIM path (occurrence 1), e.g. `P.6.1`, when the mapping writes HPRIM.
    pub fn hprim_path(&self) -> Option<&HprimPath> {
        match &self.path {
            TargetPath::Hprim(path) => Some(path),
            _ => None,
        }
    }

    /// The JSON path, e.g. `patient.id`, when the mapping writes JSON.
    pub fn json_path(&self) -> Option<&JsonPath> {
        match &self.path {
            TargetPath::Json(path) => Some(path),
            _ => None,
        }
    }

    /// The field number, 1-based (in HPRIM numbering the record type is field 1); 0 for a
    /// JSON path.
    pub fn field(&self) -> usize {
        match &self.path {
            TargetPath::Hl7(p) => p.field(),
            TargetPath::Hprim(p) => p.field(),
            TargetPath::Json(_) => 0,
        }
    }

    /// The repetition, 1-based, when given.
    pub fn repetition(&self) -> Option<usize> {
        match &self.path {
            TargetPath::Hl7(p) => p.repetition(),
            TargetPath::Hprim(p) => p.repetition(),
            TargetPath::Json(_) => None,
        }
    }

    /// The component, 1-based, when given.
    pub fn component(&self) -> Option<usize> {
        match &self.path {
            TargetPath::Hl7(p) => p.component(),
            TargetPath::Hprim(p) => p.component(),
            TargetPath::Json(_) => None,
        }
    }

    /// The subcomponent, 1-based, when given.
    pub fn subcomponent(&self) -> Option<usize> {
        match &self.path {
            TargetPath::Hl7(p) => p.subcomponent(),
            TargetPath::Hprim(p) => p.subcomponent(),
            TargetPath::Json(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            TargetPath::Hl7(p) => p.fmt(f),
            TargetPath::Hprim(p) => p.fmt(f),
            TargetPath::Json(p) => p.fmt(f),
        }
    }
}

/// The JSON writer: segments name objects of the body, fields set keys in them.
impl OutputWriter for JsonWriter {
    type Error = JsonWriteError;

    fn start_segment(&mut self, id: &str) -> Result<(), JsonWriteError> {
        self.start(&JsonPath::parse(id)?)
    }

    fn set(&mut self, target: &Target, text: &str) -> Result<(), JsonWriteError> {
        self.set_value(target, Value::String(text.to_owned()))
    }

    fn set_value(&mut self, target: &Target, value: Value) -> Result<(), JsonWriteError> {
        match target.json_path() {
            Some(path) => self.put(path, value),
            None => Err(JsonWriteError::NotJson {
                target: target.to_string(),
            }),
        }
    }
}

/// What `[message]` puts in MSH, fixed for every message of a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// MSH-9 components (`ORM`, `O01`, `ORM_O01`).
    pub(crate) message_type: Vec<String>,
    /// MSH-12 components (`2.5`).
    pub(crate) version: Vec<String>,
    /// The output encoding, also written in MSH-18.
    pub(crate) charset: Charset,
    /// The MSH every message starts from, built on first use and cloned for each message.
    pub(crate) start: OnceLock<Result<MessageBuilder, BuildError>>,
}

impl Header {
    /// The builder holding MSH-9, MSH-12 and MSH-18, built once per mapping.
    fn start(&self) -> Result<&MessageBuilder, BuildError> {
        self.start
            .get_or_init(|| {
                let mut builder = MessageBuilder::default();
                for (field, parts) in [(9, &self.message_type), (12, &self.version)] {
                    for (i, part) in parts.iter().enumerate() {
                        let path = Path::new("MSH", 1, field, None, Some(i + 1), None)?;
                        builder.set_path(&path, part)?;
                    }
                }
                let msh18 = self.charset.msh18();
                if !msh18.is_empty() {
                    builder.set("MSH-18", msh18)?;
                }
                Ok(builder)
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Writes HL7v2 through [`MessageBuilder`].
#[derive(Debug)]
pub(crate) struct Hl7Writer {
    builder: MessageBuilder,
    charset: Charset,
    /// The segment being written, its index in the message and which occurrence of its id
    /// it is.
    current: [u8; 3],
    index: usize,
    occurrence: usize,
    /// How many segments of each id were started, to know the occurrence of the next one.
    counts: Vec<([u8; 3], usize)>,
}

impl Hl7Writer {
    /// A writer whose MSH already holds MSH-9, MSH-12 and MSH-18 from `header`.
    pub(crate) fn new(header: &Header) -> Result<Hl7Writer, BuildError> {
        let mut builder = header.start()?.clone();
        builder.reserve_segments(16);
        let mut counts = Vec::with_capacity(8);
        counts.push((*b"MSH", 1));
        Ok(Hl7Writer {
            builder,
            charset: header.charset,
            current: *b"MSH",
            index: 0,
            occurrence: 1,
            counts,
        })
    }

    /// The message, encoded in the mapping's charset.
    pub(crate) fn finish(self) -> Result<Vec<u8>, BuildError> {
        self.builder.encode(self.charset)
    }
}

impl OutputWriter for Hl7Writer {
    type Error = BuildError;

    fn start_segment(&mut self, id: &str) -> Result<(), BuildError> {
        if id == "MSH" && self.builder.segment_count() == 1 {
            // The header exists from the start; the mapping's MSH fills it.
            self.current = *b"MSH";
            self.index = 0;
            self.occurrence = 1;
            return Ok(());
        }
        self.builder.add_segment(id)?;
        self.index = self.builder.segment_count() - 1;
        let bytes: [u8; 3] = id.as_bytes().try_into().unwrap_or(*b"???");
        let occurrence = match self.counts.iter_mut().find(|(seen, _)| *seen == bytes) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.counts.push((bytes, 1));
                1
            }
        };
        self.current = bytes;
        self.occurrence = occurrence;
        Ok(())
    }

    fn set(&mut self, target: &Target, text: &str) -> Result<(), BuildError> {
        if !text.is_ascii() {
            // ASCII is in every output charset; check the rest here, so the error names
            // the field.
            self.charset.check(text)?;
        }
        if let Some(path) = target.hl7_path()
            && (self.occurrence == 1 || !matches!(&self.current, b"MSH" | b"FHS" | b"BHS"))
        {
            // Into the segment just started (or the MSH every message has), whatever
            // segment the path names.
            return self.builder.set_in(self.index, path, text);
        }
        let id = std::str::from_utf8(&self.current).unwrap_or("???");
        let path = Path::new(
            id,
            self.occurrence,
            target.field(),
            target.repetition(),
            target.component(),
            target.subcomponent(),
        )?;
        self.builder.set_path(&path, text)?;
        Ok(())
    }
}

/// The largest repetition, component or subcomponent the HPRIM writer fills (a guard against
/// runaway paths: the builder would otherwise pad thousands of empty parts).
const MAX_PART: usize = 100;

/// One field of the record being written: repetitions of components of subcomponents, not
/// escaped yet.
type Parts = Vec<Vec<Vec<String>>>;

/// Writes HPRIM Santé through [`HprimBuilder`]; records are handed to the builder whole, when
/// the next one starts or at the end.
#[derive(Debug)]
pub(crate) struct HprimWriter {
    builder: HprimBuilder,
    charset: Charset,
    /// The record being written (empty before the first) and its position, 1-based.
    kind: String,
    record: usize,
    /// Its fields, by HPRIM field number.
    fields: Vec<(usize, Parts)>,
}

impl HprimWriter {
    /// A writer with the reference delimiters `|~^\&`, CR LF record ends and `charset`.
    pub(crate) fn new(charset: Charset) -> HprimWriter {
        HprimWriter {
            builder: HprimBuilder::new().charset(charset),
            charset,
            kind: String::new(),
            record: 0,
            fields: Vec::new(),
        }
    }

    /// Hands the record being written to the builder.
    fn flush(&mut self) {
        if self.kind.is_empty() {
            return;
        }
        let delims = *self.builder.delimiters();
        let (rep, comp, sub) = (
            char::from(delims.repetition()),
            char::from(delims.component()),
            char::from(delims.subcomponent()),
        );
        let record = self.builder.record(&self.kind);
        for (n, parts) in self.fields.drain(..) {
            let mut raw = String::new();
            for (r, components) in parts.iter().enumerate() {
                if r > 0 {
                    raw.push(rep);
                }
                for (c, subs) in components.iter().enumerate() {
                    if c > 0 {
                        raw.push(comp);
                    }
                    for (s, text) in subs.iter().enumerate() {
                        if s > 0 {
                            raw.push(sub);
                        }
                        raw.push_str(&escape(text, &delims));
                    }
                }
            }
            record.set_raw(n, &raw);
        }
        self.kind.clear();
    }

    /// The message: every record escaped, encoded and split into `A` records where too long.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, HprimError> {
        self.flush();
        self.builder.to_bytes()
    }

    fn refuse(&self, target: &Target, reason: &str) -> HprimError {
        HprimError::Build {
            record: self.record,
            kind: self.kind.clone(),
            field: target.field(),
            reason: format!("`{target}`: {reason}"),
        }
    }
}

impl OutputWriter for HprimWriter {
    type Error = HprimError;

    fn start_segment(&mut self, id: &str) -> Result<(), HprimError> {
        self.flush();
        self.kind = id.to_string();
        self.record += 1;
        Ok(())
    }

    fn set(&mut self, target: &Target, text: &str) -> Result<(), HprimError> {
        if self.kind.is_empty() {
            return Err(self.refuse(target, "no record started"));
        }
        self.charset.encode(text).map_err(|e| match e {
            crate::hl7::CharsetError::Unmappable { ch, charset, .. } => HprimError::Unmappable {
                record: self.record,
                kind: self.kind.clone(),
                field: target.field(),
                ch,
                charset,
            },
        })?;
        let (r, c, s) = (
            target.repetition().unwrap_or(1),
            target.component().unwrap_or(1),
            target.subcomponent().unwrap_or(1),
        );
        if [r, c, s].iter().any(|&k| k == 0 || k > MAX_PART) {
            return Err(self.refuse(
                target,
                "repetitions, components and subcomponents are numbered 1 to 100",
            ));
        }
        let n = target.field();
        let index = match self.fields.iter().position(|(f, _)| *f == n) {
            Some(i) => i,
            None => {
                self.fields.push((n, Vec::new()));
                self.fields.len() - 1
            }
        };
        let Some((_, parts)) = self.fields.get_mut(index) else {
            return Err(self.refuse(target, "field lost"));
        };
        if parts.len() < r {
            parts.resize(r, Vec::new());
        }
        let Some(components) = parts.get_mut(r - 1) else {
            return Err(self.refuse(target, "repetition lost"));
        };
        if components.len() < c {
            components.resize(c, Vec::new());
        }
        let Some(subs) = components.get_mut(c - 1) else {
            return Err(self.refuse(target, "component lost"));
        };
        if subs.len() < s {
            subs.resize(s, String::new());
        }
        if let Some(slot) = subs.get_mut(s - 1) {
            *slot = text.to_string();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn header(charset: Charset) -> Header {
        Header {
            message_type: vec!["ORM".into(), "O01".into(), "ORM_O01".into()],
            version: vec!["2.5".into()],
            charset,
            start: OnceLock::new(),
        }
    }

    fn target(path: &str) -> Target {
        Target::new(path.parse().unwrap())
    }

    #[test]
    fn ok_segments_and_occurrences() {
        let mut w = Hl7Writer::new(&header(Charset::Utf8)).unwrap();
        w.start_segment("MSH").unwrap();
        w.set(&target("MSH-10"), "C1").unwrap();
        for (n, text) in ["un", "deux"].iter().enumerate() {
            w.start_segment("ORC").unwrap();
            w.set(&target("ORC-1"), "NW").unwrap();
            w.start_segment("NTE").unwrap();
            w.set(&target("NTE-1"), &(n + 1).to_string()).unwrap();
            w.set(&target("NTE-3"), text).unwrap();
        }
        let out = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(
            out,
            "MSH|^~\\&|||||||ORM^O01^ORM_O01|C1||2.5||||||UNICODE UTF-8\r\
             ORC|NW\rNTE|1||un\rORC|NW\rNTE|2||deux\r"
        );
    }

    #[rstest]
    #[case::ok_field_separator("a|b", "a\\F\\b")]
    #[case::ok_all_delimiters("|^~\\&", "\\F\\\\S\\\\R\\\\E\\\\T\\")]
    #[case::ok_line_break("l1\nl2", "l1\\.br\\l2")]
    fn ok_escaping(#[case] value: &str, #[case] written: &str) {
        let mut w = Hl7Writer::new(&header(Charset::Utf8)).unwrap();
        w.start_segment("NTE").unwrap();
        w.set(&target("NTE-3"), value).unwrap();
        let out = String::from_utf8(w.finish().unwrap()).unwrap();
        assert!(out.ends_with(&format!("\rNTE|||{written}\r")), "{out}");
        let parsed = crate::hl7::Message::parse(out.as_bytes()).unwrap();
        assert_eq!(parsed.query("NTE-3").unwrap().as_deref(), Some(value));
    }

    #[test]
    fn ok_latin1_output() {
        let mut w = Hl7Writer::new(&header(Charset::Latin1)).unwrap();
        w.start_segment("PID").unwrap();
        w.set(&target("PID-5.1"), "LEFÈVRE").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(
            out,
            b"MSH|^~\\&|||||||ORM^O01^ORM_O01|||2.5||||||8859/1\rPID|||||LEF\xC8VRE\r"
        );
    }

    #[test]
    fn err_unencodable_value_is_refused_where_set() {
        let mut w = Hl7Writer::new(&header(Charset::Latin1)).unwrap();
        w.start_segment("NTE").unwrap();
        assert_eq!(
            w.set(&target("NTE-3"), "dose 中").unwrap_err().to_string(),
            "character `中` (U+4E2D) at char 5 cannot be encoded in 8859/1"
        );
    }

    fn hprim_target(path: &str) -> Target {
        Target::hprim(path.parse().unwrap())
    }

    #[test]
    fn ok_hprim_records_components_and_escaping() {
        let mut w = HprimWriter::new(Charset::Latin1);
        w.start_segment("H").unwrap();
        w.set(&hprim_target("H.3"), "MSG1").unwrap();
        w.start_segment("P").unwrap();
        w.set(&hprim_target("P.6.2"), "Anaïs").unwrap();
        w.set(&hprim_target("P.6.1"), "LÉGER").unwrap();
        w.set(&hprim_target("P.3"), "a|b~c").unwrap();
        w.set(&hprim_target("P.4[2].1.2"), "x").unwrap();
        w.start_segment("L").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(
            out,
            b"H|~^\\&|MSG1\r\nP||a\\F\\b\\S\\c|^&x||L\xc9GER~Ana\xefs\r\nL\r\n"
        );
        let m = crate::hprim::Message::parse(&out, None).unwrap();
        assert_eq!(m.query("P.3").unwrap().as_deref(), Some("a|b~c"));
        assert_eq!(m.query("P.6.2").unwrap().as_deref(), Some("Anaïs"));
    }

    #[rstest]
    #[case::err_unencodable(
        "P.6.1",
        "Zhang 张",
        "record 2 (`P`): field 6: character `张` (U+5F20) cannot be encoded in 8859/1"
    )]
    #[case::err_runaway_component(
        "P.6.101",
        "x",
        "record 2 (`P`): field 6: `P.6.101`: repetitions, components and subcomponents are numbered 1 to 100"
    )]
    fn err_hprim_set(#[case] path: &str, #[case] text: &str, #[case] expected: &str) {
        let mut w = HprimWriter::new(Charset::Latin1);
        w.start_segment("H").unwrap();
        w.start_segment("P").unwrap();
        assert_eq!(
            w.set(&hprim_target(path), text).unwrap_err().to_string(),
            expected
        );
    }

    #[test]
    fn err_hprim_without_l() {
        let mut w = HprimWriter::new(Charset::Latin1);
        w.start_segment("H").unwrap();
        w.start_segment("P").unwrap();
        assert_eq!(
            w.finish().unwrap_err().to_string(),
            "record 2 (`P`): the message started at record 1 has no `L` record"
        );
    }
}
