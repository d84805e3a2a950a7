//! Paths in HPRIM numbering (`P.3`, `P.6.2`, `OBX[2].6`, `OBR.5[2].1`, also `P-3`), parsed
//! once and reused on many messages; the same grammar as the HL7 paths of
//! [`crate::hl7::Path`], with HPRIM record types.
//!
//! Grammar: `TYPE[occurrence]` then `.` or `-`, then `field[repetition]`, then optionally
//! `.component` and `.subcomponent`. The record type is 1 to 3 letters or digits (upper-cased);
//! all numbers are 1-based and the record type is field 1 (`P.3` is the third field of `P`,
//! counting `P` itself, as HPRIM numbers them). Brackets are optional (default: first
//! occurrence; whole field across repetitions when neither repetition nor component is given,
//! first repetition otherwise). Not accepted: a bare record type, zero, signs, spaces, anything
//! after the subcomponent.

use crate::hl7::path::Cursor;
use std::fmt;
use std::str::FromStr;

use crate::hprim::HprimError;
use crate::text::readable;

/// A parsed location in an HPRIM message; cheap to copy, reusable across messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HprimPath {
    kind: [u8; 3],
    kind_len: u8,
    occurrence: usize,
    field: usize,
    repetition: Option<usize>,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

impl HprimPath {
    /// The record type, e.g. `OBX`.
    pub fn kind(&self) -> &str {
        self.kind
            .get(..usize::from(self.kind_len))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
    /// Which occurrence of the record type, 1-based.
    pub fn occurrence(&self) -> usize {
        self.occurrence
    }
    /// The field number, 1-based, the record type being field 1.
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
}

impl FromStr for HprimPath {
    type Err = HprimError;

    fn from_str(s: &str) -> Result<HprimPath, HprimError> {
        parse(s.as_bytes()).map_err(|reason| HprimError::Path {
            path: readable(s.as_bytes()),
            reason,
        })
    }
}

fn parse(bytes: &[u8]) -> Result<HprimPath, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let mut kind = [0u8; 3];
    let mut kind_len = 0u8;
    while let Some(b) = c.peek().filter(u8::is_ascii_alphanumeric) {
        let Some(slot) = kind.get_mut(usize::from(kind_len)) else {
            return Err("a record type has at most 3 letters or digits".into());
        };
        *slot = b.to_ascii_uppercase();
        kind_len += 1;
        c.pos += 1;
    }
    if kind_len == 0 {
        return Err("expected a record type (1 to 3 letters or digits)".into());
    }
    let occurrence = c.bracket("record occurrence")?.unwrap_or(1);
    let sep = match c.peek() {
        Some(b @ (b'-' | b'.')) => {
            c.pos += 1;
            char::from(b)
        }
        _ => return Err("expected `.` or `-` and a field number after the record type".into()),
    };
    let field = c.number("a field number", &sep.to_string())?;
    let (repetition, component, subcomponent) = c.field_tail()?;
    Ok(HprimPath {
        kind,
        kind_len,
        occurrence,
        field,
        repetition,
        component,
        subcomponent,
    })
}

impl fmt::Display for HprimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::hl7::path::write_address(
            f,
            (self.kind(), self.occurrence),
            '.',
            self.field,
            (self.repetition, self.component, self.subcomponent),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_field("P.3", "P", 1, 3, None, None, None)]
    #[case::ok_component("P.5.1", "P", 1, 5, None, Some(1), None)]
    #[case::ok_occurrence("OBX[2].5", "OBX", 2, 5, None, None, None)]
    #[case::ok_repetition("OBR.5[2].1", "OBR", 1, 5, Some(2), Some(1), None)]
    #[case::ok_subcomponent("OBX.6.2.1", "OBX", 1, 6, None, Some(2), Some(1))]
    #[case::ok_dash("P-3", "P", 1, 3, None, None, None)]
    #[case::ok_lowercase("obx[3].6", "OBX", 3, 6, None, None, None)]
    #[case::ok_two_letters("AP.2", "AP", 1, 2, None, None, None)]
    fn ok_parse(
        #[case] text: &str,
        #[case] kind: &str,
        #[case] occ: usize,
        #[case] field: usize,
        #[case] rep: Option<usize>,
        #[case] comp: Option<usize>,
        #[case] sub: Option<usize>,
    ) {
        let p: HprimPath = text.parse().unwrap();
        assert_eq!(
            (
                p.kind(),
                p.occurrence(),
                p.field(),
                p.repetition(),
                p.component(),
                p.subcomponent()
            ),
            (kind, occ, field, rep, comp, sub)
        );
        let again: HprimPath = p.to_string().parse().unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn ok_display() {
        let p: HprimPath = "obx[2]-6[3].1".parse().unwrap();
        assert_eq!(p.to_string(), "OBX[2].6[3].1");
    }

    #[rstest]
    #[case::err_empty(
        "",
        "invalid path ``: expected a record type (1 to 3 letters or digits)"
    )]
    #[case::err_bare(
        "OBX",
        "invalid path `OBX`: expected `.` or `-` and a field number after the record type"
    )]
    #[case::err_long_type(
        "OBXX.1",
        "invalid path `OBXX.1`: a record type has at most 3 letters or digits"
    )]
    #[case::err_no_field("P.x", "invalid path `P.x`: expected a field number after `.`")]
    #[case::err_zero(
        "P.0",
        "invalid path `P.0`: a field number must be at least 1 (numbers are 1-based)"
    )]
    #[case::err_bracket(
        "OBX[.6",
        "invalid path `OBX[.6`: expected record occurrence after `[`"
    )]
    #[case::err_unclosed(
        "P.6[2.1",
        "invalid path `P.6[2.1`: expected `]` after the repetition number"
    )]
    #[case::err_component("P.6.", "invalid path `P.6.`: expected a component number after `.`")]
    #[case::err_trailing(
        "P.6.1.1.1",
        "invalid path `P.6.1.1.1`: unexpected `.1` at character 8"
    )]
    #[case::err_too_large(
        "P.99999999999999999999",
        "invalid path `P.99999999999999999999`: a field number `99999999999999999999` is too large"
    )]
    #[case::err_control(
        "P.3\x0b",
        "invalid path `P.3\\x0B`: unexpected `\\x0B` at character 4"
    )]
    fn err_parse(#[case] text: &str, #[case] expected: &str) {
        assert_eq!(text.parse::<HprimPath>().unwrap_err().to_string(), expected);
    }
}
