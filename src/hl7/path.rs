//! Paths in the notation interface analysts use (`PID-3`, `PID-3.1`, `PID-3[2].1`, `PID-5.1.1`,
//! `OBX[2]-5`, also `PID.3.1`), parsed once and reused on many messages.
//!
//! Grammar: `SEG[occurrence]` then `-` or `.`, then `field[repetition]`, then optionally
//! `.component` and `.subcomponent`. All numbers are 1-based; brackets are optional (default:
//! first occurrence; whole field across repetitions when neither repetition nor component is
//! given, first repetition otherwise). Segment ids are 3 letters or digits, upper-cased.
//! Not accepted: a bare segment id, zero, signs, spaces, anything after the subcomponent.

use std::fmt;
use std::str::FromStr;

/// A parsed location in a message; cheap to copy, reusable across messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    segment: [u8; 3],
    occurrence: usize,
    field: usize,
    repetition: Option<usize>,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

/// Why a path string is not a valid path; names the path and what was expected where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path `{path}`: {reason}")]
pub struct PathError {
    /// The path as given (non-printable characters escaped).
    pub path: String,
    /// What was expected.
    pub reason: String,
}

impl Path {
    /// The segment id, e.g. `PID`.
    pub fn segment_id(&self) -> &str {
        std::str::from_utf8(&self.segment).unwrap_or("???")
    }
    /// The segment id as bytes.
    pub fn segment_bytes(&self) -> [u8; 3] {
        self.segment
    }
    /// Which occurrence of the segment, 1-based.
    pub fn occurrence(&self) -> usize {
        self.occurrence
    }
    /// The field number, 1-based, in HL7 numbering (MSH-1 is the field separator).
    pub fn field(&self) -> usize {
        self.field
    }
    /// The repetition, 1-based, when given.
    pub fn repetition(&self) -> Option<usize> {
        self.repetition
    }
    /// The component, 1-based, when given.
    pub fn component(&self) -> Option<usize> {
        self.component
    }
    /// The subcomponent, 1-based, when given.
    pub fn subcomponent(&self) -> Option<usize> {
        self.subcomponent
    }

    /// Builds a path from parts (for code that computes locations).
    pub fn new(
        segment: &str,
        occurrence: usize,
        field: usize,
        repetition: Option<usize>,
        component: Option<usize>,
        subcomponent: Option<usize>,
    ) -> Result<Path, PathError> {
        let text = segment.to_string();
        let mut path: Path = format!("{text}-1").parse()?;
        let err = |reason: &str| PathError {
            path: text.clone(),
            reason: reason.into(),
        };
        let nums = [
            Some(occurrence),
            Some(field),
            repetition,
            component,
            subcomponent,
        ];
        if nums.iter().flatten().any(|&n| n == 0) {
            return Err(err("numbers are 1-based, found 0"));
        }
        if subcomponent.is_some() && component.is_none() {
            return Err(err("a subcomponent needs a component"));
        }
        path.occurrence = occurrence;
        path.field = field;
        path.repetition = repetition;
        path.component = component;
        path.subcomponent = subcomponent;
        Ok(path)
    }
}

/// Repetition, component and subcomponent after a field number, each when given.
pub(crate) type FieldTail = (Option<usize>, Option<usize>, Option<usize>);

/// A byte cursor over path text; every read is checked. Shared by the HL7 and HPRIM path
/// parsers, which speak the same grammar.
pub(crate) struct Cursor<'s> {
    pub(crate) bytes: &'s [u8],
    pub(crate) pos: usize,
}

impl Cursor<'_> {
    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Reads a 1-based decimal number; `what` names it in errors.
    pub(crate) fn number(&mut self, what: &str, after: &str) -> Result<usize, String> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = self.bytes.get(start..self.pos).unwrap_or_default();
        if digits.is_empty() {
            return Err(format!("expected {what} after `{after}`"));
        }
        let text = std::str::from_utf8(digits).unwrap_or_default();
        match text.parse::<usize>() {
            Ok(0) => Err(format!("{what} must be at least 1 (numbers are 1-based)")),
            Ok(n) if n <= 1_000_000 => Ok(n),
            _ => Err(format!("{what} `{text}` is too large")),
        }
    }

    /// Reads what may follow a field number, to the end of the text: an optional `[rep]`,
    /// then `.component` and `.subcomponent`; anything left over is an error.
    pub(crate) fn field_tail(&mut self) -> Result<FieldTail, String> {
        let repetition = self.bracket("repetition number")?;
        let mut component = None;
        let mut subcomponent = None;
        if self.eat(b'.') {
            component = Some(self.number("a component number", ".")?);
            if self.eat(b'.') {
                subcomponent = Some(self.number("a subcomponent number", ".")?);
            }
        }
        if let Some(rest) = self.bytes.get(self.pos..).filter(|r| !r.is_empty()) {
            return Err(format!(
                "unexpected `{}` at character {}",
                crate::text::readable_prefix(rest, 8),
                self.pos + 1
            ));
        }
        Ok((repetition, component, subcomponent))
    }

    /// Reads an optional `[n]`.
    pub(crate) fn bracket(&mut self, what: &str) -> Result<Option<usize>, String> {
        if !self.eat(b'[') {
            return Ok(None);
        }
        let n = self.number(what, "[")?;
        if !self.eat(b']') {
            return Err(format!("expected `]` after the {what}"));
        }
        Ok(Some(n))
    }
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Path, PathError> {
        parse(s.as_bytes()).map_err(|reason| PathError {
            path: crate::text::readable(s.as_bytes()),
            reason,
        })
    }
}

fn parse(bytes: &[u8]) -> Result<Path, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let mut segment = [0u8; 3];
    for slot in &mut segment {
        match c.peek() {
            Some(b) if b.is_ascii_alphanumeric() => {
                *slot = b.to_ascii_uppercase();
                c.pos += 1;
            }
            _ => return Err("expected a 3-character segment id (letters or digits)".into()),
        }
    }
    let occurrence = c.bracket("segment occurrence")?.unwrap_or(1);
    let sep = match c.peek() {
        Some(b @ (b'-' | b'.')) => {
            c.pos += 1;
            char::from(b)
        }
        _ => return Err("expected `-` or `.` and a field number after the segment id".into()),
    };
    let field = c.number("a field number", &sep.to_string())?;
    let (repetition, component, subcomponent) = c.field_tail()?;
    Ok(Path {
        segment,
        occurrence,
        field,
        repetition,
        component,
        subcomponent,
    })
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_address(
            f,
            (self.segment_id(), self.occurrence),
            '-',
            self.field,
            (self.repetition, self.component, self.subcomponent),
        )
    }
}

/// Writes a path in the grammar both parsers read: `ID[occurrence]` (the occurrence only
/// when not 1), `separator` and the field, then `[repetition]`, `.component`,
/// `.subcomponent` when given. Shared by the HL7 (`PID-3.1`) and HPRIM (`P.3.1`) paths.
pub(crate) fn write_address(
    f: &mut fmt::Formatter<'_>,
    (id, occurrence): (&str, usize),
    separator: char,
    field: usize,
    (repetition, component, subcomponent): FieldTail,
) -> fmt::Result {
    f.write_str(id)?;
    if occurrence != 1 {
        write!(f, "[{occurrence}]")?;
    }
    write!(f, "{separator}{field}")?;
    if let Some(r) = repetition {
        write!(f, "[{r}]")?;
    }
    if let Some(c) = component {
        write!(f, ".{c}")?;
    }
    if let Some(s) = subcomponent {
        write!(f, ".{s}")?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_field("PID-3", "PID", 1, 3, None, None, None)]
    #[case::ok_component("PID-3.1", "PID", 1, 3, None, Some(1), None)]
    #[case::ok_repetition("PID-3[2].1", "PID", 1, 3, Some(2), Some(1), None)]
    #[case::ok_subcomponent("PID-5.1.1", "PID", 1, 5, None, Some(1), Some(1))]
    #[case::ok_occurrence("OBX[2]-5", "OBX", 2, 5, None, None, None)]
    #[case::ok_dots("PID.3.1", "PID", 1, 3, None, Some(1), None)]
    #[case::ok_lowercase("pv1-19", "PV1", 1, 19, None, None, None)]
    #[case::ok_z_segment("ZBE-1", "ZBE", 1, 1, None, None, None)]
    fn ok_parse(
        #[case] text: &str,
        #[case] seg: &str,
        #[case] occ: usize,
        #[case] field: usize,
        #[case] rep: Option<usize>,
        #[case] comp: Option<usize>,
        #[case] sub: Option<usize>,
    ) {
        let p: Path = text.parse().unwrap();
        assert_eq!(
            (
                p.segment_id(),
                p.occurrence(),
                p.field(),
                p.repetition(),
                p.component(),
                p.subcomponent()
            ),
            (seg, occ, field, rep, comp, sub)
        );
        let again: Path = p.to_string().parse().unwrap();
        assert_eq!(again, p);
    }

    #[rstest]
    #[case::err_no_field_number("PID-x", "invalid path `PID-x`: expected a field number after `-`")]
    #[case::err_no_field_number_dot(
        "PID.",
        "invalid path `PID.`: expected a field number after `.`"
    )]
    #[case::err_bare_segment(
        "PID",
        "invalid path `PID`: expected `-` or `.` and a field number after the segment id"
    )]
    #[case::err_short_segment(
        "PI-3",
        "invalid path `PI-3`: expected a 3-character segment id (letters or digits)"
    )]
    #[case::err_empty(
        "",
        "invalid path ``: expected a 3-character segment id (letters or digits)"
    )]
    #[case::err_zero(
        "PID-0",
        "invalid path `PID-0`: a field number must be at least 1 (numbers are 1-based)"
    )]
    #[case::err_bracket(
        "OBX[-5",
        "invalid path `OBX[-5`: expected segment occurrence after `[`"
    )]
    #[case::err_unclosed(
        "PID-3[2.1",
        "invalid path `PID-3[2.1`: expected `]` after the repetition number"
    )]
    #[case::err_component(
        "PID-3.",
        "invalid path `PID-3.`: expected a component number after `.`"
    )]
    #[case::err_subcomponent(
        "PID-3.1.",
        "invalid path `PID-3.1.`: expected a subcomponent number after `.`"
    )]
    #[case::err_trailing(
        "PID-3.1.1.1",
        "invalid path `PID-3.1.1.1`: unexpected `.1` at character 10"
    )]
    #[case::err_too_large(
        "PID-99999999999999999999",
        "invalid path `PID-99999999999999999999`: a field number `99999999999999999999` is too large"
    )]
    #[case::err_control(
        "PID-3\x0b",
        "invalid path `PID-3\\x0B`: unexpected `\\x0B` at character 6"
    )]
    fn err_parse(#[case] text: &str, #[case] expected: &str) {
        assert_eq!(text.parse::<Path>().unwrap_err().to_string(), expected);
    }
}
