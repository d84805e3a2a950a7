//! Output writers: the evaluator hands segments and values to an [`OutputWriter`], so the
//! same compiled mapping can later write HPRIM Santé as well as HL7v2.
//!
//! The HL7 writer goes through [`MessageBuilder`]: values are escaped on write (`|^~\&` and
//! line breaks), each value is checked against the output charset where it is set (so the
//! error names the field), and the message is encoded in that charset at the end.

use crate::hl7::{BuildError, Charset, MessageBuilder, Path};

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
}

/// Where a value goes in the current segment, as written in the mapping file (`RXO-1.2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The parsed path, always on the first occurrence of its segment; a writer places it in
    /// the current segment.
    path: Path,
}

impl Target {
    pub(crate) fn new(path: Path) -> Target {
        Target { path }
    }

    /// The path as written in the mapping (occurrence 1), e.g. `RXO-1.2`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The field number, 1-based in HL7 numbering.
    pub fn field(&self) -> usize {
        self.path.field()
    }

    /// The repetition, 1-based, when given.
    pub fn repetition(&self) -> Option<usize> {
        self.path.repetition()
    }

    /// The component, 1-based, when given.
    pub fn component(&self) -> Option<usize> {
        self.path.component()
    }

    /// The subcomponent, 1-based, when given.
    pub fn subcomponent(&self) -> Option<usize> {
        self.path.subcomponent()
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
}

/// Writes HL7v2 through [`MessageBuilder`].
#[derive(Debug)]
pub(crate) struct Hl7Writer {
    builder: MessageBuilder,
    charset: Charset,
    /// The segment being written and which occurrence of its id it is.
    current: [u8; 3],
    occurrence: usize,
    /// How many segments of each id were started, to know the occurrence of the next one.
    counts: Vec<([u8; 3], usize)>,
}

impl Hl7Writer {
    /// A writer whose MSH already holds MSH-9, MSH-12 and MSH-18 from `header`.
    pub(crate) fn new(header: &Header) -> Result<Hl7Writer, BuildError> {
        let mut builder = MessageBuilder::default();
        for (field, parts) in [(9, &header.message_type), (12, &header.version)] {
            for (i, part) in parts.iter().enumerate() {
                let path = Path::new("MSH", 1, field, None, Some(i + 1), None)?;
                builder.set_path(&path, part)?;
            }
        }
        let msh18 = header.charset.msh18();
        if !msh18.is_empty() {
            builder.set("MSH-18", msh18)?;
        }
        Ok(Hl7Writer {
            builder,
            charset: header.charset,
            current: *b"MSH",
            occurrence: 1,
            counts: vec![(*b"MSH", 1)],
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
            self.occurrence = 1;
            return Ok(());
        }
        self.builder.add_segment(id)?;
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
        self.charset.encode(text)?;
        if self.occurrence == 1 && target.path.segment_bytes() == self.current {
            self.builder.set_path(&target.path, text)?;
            return Ok(());
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
}
