//! [`MessageBuilder`]: compose or edit a message by path, escaping values on write, and
//! serialize it with CR segment ends in a chosen charset.
//!
//! Values given to [`MessageBuilder::set`] are text: delimiters in them are escaped (`\S\`...)
//! and line breaks become `\.br\`. [`MessageBuilder::set_raw`] takes an already-encoded value
//! (e.g. `DUPONT^Jean`) for callers composing structure. MSH-1 and MSH-2 come from the
//! delimiters and cannot be set. Missing segments, fields, repetitions and components are
//! created (padded with empty ones) as needed.

use std::fmt;

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

/// One segment being built: id and its fields, still escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SegBuf {
    id: [u8; 3],
    /// Fields after the id; for MSH the first one is MSH-2 (encoding characters).
    fields: Vec<String>,
}

impl SegBuf {
    fn is_header(&self) -> bool {
        matches!(&self.id, b"MSH" | b"FHS" | b"BHS")
    }
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
                fields: vec![delims.encoding_chars()],
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
                let fields = raw
                    .get(4..)
                    .filter(|_| raw.len() > 3)
                    .map(|rest| {
                        rest.split(|&b| b == fs)
                            .map(|f| msg.charset().decode(f).into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                Some(SegBuf { id, fields })
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
                id: crate::hl7::readable(id.as_bytes()),
            })?;
        self.segments.push(SegBuf {
            id,
            fields: Vec::new(),
        });
        Ok(self)
    }

    /// Sets the text at `path` (e.g. `PID-5.1`), escaping delimiters and line breaks.
    pub fn set(&mut self, path: &str, value: &str) -> Result<&mut Self, BuildError> {
        let path: Path = path.parse()?;
        self.set_path(&path, value)
    }

    /// Sets the text at a parsed path, escaping delimiters and line breaks.
    pub fn set_path(&mut self, path: &Path, value: &str) -> Result<&mut Self, BuildError> {
        let escaped = escape(value, &self.delims).into_owned();
        self.put(path, escaped)
    }

    /// Sets an already-encoded value (delimiters kept as structure, no escaping).
    pub fn set_raw(&mut self, path: &str, raw: &str) -> Result<&mut Self, BuildError> {
        let path: Path = path.parse()?;
        self.put(&path, raw.to_string())
    }

    fn put(&mut self, path: &Path, value: String) -> Result<&mut Self, BuildError> {
        let id = path.segment_bytes();
        let header = matches!(&id, b"MSH" | b"FHS" | b"BHS");
        if header && path.field() <= 2 {
            return Err(BuildError::Delimiters {
                path: path.to_string(),
            });
        }
        let index = self.segment_index_or_create(id, path.occurrence());
        let d = self.delims;
        let Some(seg) = self.segments.get_mut(index) else {
            return Ok(self);
        };
        let generic = if seg.is_header() {
            path.field().saturating_sub(1)
        } else {
            path.field()
        };
        if seg.fields.len() < generic {
            seg.fields.resize(generic, String::new());
        }
        let Some(field) = seg.fields.get_mut(generic.saturating_sub(1)) else {
            return Ok(self);
        };
        let rep = path.repetition().or(path.component().map(|_| 1));
        *field = match rep {
            None => value,
            Some(r) => with_piece(field, d.repetition(), r, |rep_text| {
                match path.component() {
                    None => value,
                    Some(c) => with_piece(rep_text, d.component(), c, |comp| {
                        match path.subcomponent() {
                            None => value,
                            Some(s) => with_piece(comp, d.subcomponent(), s, |_| value),
                        }
                    }),
                }
            }),
        };
        Ok(self)
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
            self.segments.push(SegBuf {
                id,
                fields: Vec::new(),
            });
        }
        self.segments.len() - 1
    }

    /// Serializes as UTF-8 text with CR segment ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// Serializes and encodes in `charset` (set MSH-18 accordingly, e.g. `8859/1`).
    pub fn encode(&self, charset: Charset) -> Result<Vec<u8>, BuildError> {
        let text = self.to_string();
        Ok(charset.encode(&text)?.into_owned())
    }
}

impl fmt::Display for MessageBuilder {
    /// The message text, segments ended by CR.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fs = char::from(self.delims.field());
        for seg in &self.segments {
            for b in seg.id {
                write!(f, "{}", char::from(b))?;
            }
            for field in &seg.fields {
                write!(f, "{fs}{field}")?;
            }
            f.write_str("\r")?;
        }
        Ok(())
    }
}

/// Replaces the `n`-th (1-based) piece of `s` split on `delim` with `f(old piece)`, padding
/// with empty pieces when `s` has fewer.
fn with_piece(s: &str, delim: u8, n: usize, f: impl FnOnce(&str) -> String) -> String {
    let delim = char::from(delim);
    let mut parts: Vec<String> = s.split(delim).map(str::to_string).collect();
    if parts.len() < n {
        parts.resize(n, String::new());
    }
    if let Some(slot) = parts.get_mut(n.saturating_sub(1)) {
        *slot = f(slot);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(delim);
        }
        out.push_str(p);
    }
    out
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
