//! The delimiter set of a message, read from MSH-1 (field separator) and MSH-2 (encoding
//! characters), so that any valid set works (`|^~\&`, `|^~\&#`, `$%*!@`...) and a bad one is
//! refused with the byte, its offset and the reason.
//!
//! Accepted: printable ASCII punctuation, all distinct, 4 encoding characters or 5 with a
//! truncation character (v2.7+). Refused: letters and digits, space and control bytes (CR/LF
//! would end the segment), non-ASCII characters (lookalikes such as `˜` U+02DC), duplicates, a
//! `|` as truncation character, fewer than 4 or more than 5 encoding characters.

use crate::hl7::message::ParseError;

/// The delimiters of one message; every lazy lookup and every escape uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    field: u8,
    component: u8,
    repetition: u8,
    escape: u8,
    subcomponent: u8,
    truncation: Option<u8>,
}

impl Default for Delimiters {
    /// The standard set `|^~\&`, used by the builder and as the salvage fallback.
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: b'\\',
            subcomponent: b'&',
            truncation: None,
        }
    }
}

const ROLES: [&str; 6] = [
    "field separator",
    "component separator",
    "repetition separator",
    "escape character",
    "subcomponent separator",
    "truncation character",
];

const LOOKALIKES: [(char, char); 9] = [
    ('˜', '~'),
    ('∼', '~'),
    ('～', '~'),
    ('ˆ', '^'),
    ('＾', '^'),
    ('＼', '\\'),
    ('＆', '&'),
    ('｜', '|'),
    ('¦', '|'),
];

impl Delimiters {
    /// The field separator (MSH-1).
    pub fn field(&self) -> u8 {
        self.field
    }
    /// The component separator (MSH-2, 1st character).
    pub fn component(&self) -> u8 {
        self.component
    }
    /// The repetition separator (MSH-2, 2nd character).
    pub fn repetition(&self) -> u8 {
        self.repetition
    }
    /// The escape character (MSH-2, 3rd character).
    pub fn escape(&self) -> u8 {
        self.escape
    }
    /// The subcomponent separator (MSH-2, 4th character).
    pub fn subcomponent(&self) -> u8 {
        self.subcomponent
    }
    /// The truncation character (MSH-2, 5th character, v2.7+), if any.
    pub fn truncation(&self) -> Option<u8> {
        self.truncation
    }

    /// The MSH-2 value to write for this set (`^~\&` or `^~\&#`).
    pub fn encoding_chars(&self) -> String {
        let mut s = String::with_capacity(5);
        for b in [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ] {
            s.push(char::from(b));
        }
        if let Some(t) = self.truncation {
            s.push(char::from(t));
        }
        s
    }

    /// Builds a set from MSH-1 followed by MSH-2, e.g. `|^~\&` or `$%*!@`, with the same checks
    /// as parsing; for builders that want a non-standard set.
    pub fn from_chars(chars: &str) -> Result<Self, ParseError> {
        let mut header = Vec::with_capacity(chars.len() + 3);
        header.extend_from_slice(b"MSH");
        header.extend_from_slice(chars.as_bytes());
        let (delims, end) = Delimiters::read(&header, 0)?;
        if end != header.len() {
            return Err(ParseError::Delimiter {
                field: "MSH-2".into(),
                offset: end,
                reason: format!(
                    "unexpected `{}` after the encoding characters",
                    crate::text::readable_prefix(header.get(end..).unwrap_or_default(), 8)
                ),
            });
        }
        Ok(delims)
    }

    /// Reads MSH-1/MSH-2 (or FHS/BHS) from `seg`, which starts with the 3-byte segment id;
    /// `base` is the offset of `seg` in the message, for error messages. Returns the set and the
    /// offset in `seg` just past MSH-2.
    pub(crate) fn read(seg: &[u8], base: usize) -> Result<(Self, usize), ParseError> {
        // The names in errors are only built for an error: a valid header allocates nothing.
        let id = || crate::text::readable(seg.get(..3).unwrap_or(seg));
        let Some(&field) = seg.get(3) else {
            return Err(ParseError::TooShort {
                segment: id(),
                len: seg.len(),
            });
        };
        check_byte(seg, 3, base, || format!("{}-1", id()))?;
        let mut chars = [field, 0, 0, 0, 0, 0];
        let rest = seg.get(4..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&b| b == field || b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        let msh2_name = || format!("{}-2", id());
        for (i, &b) in rest.iter().take(end).enumerate() {
            let offset = 4 + i;
            if i >= 5 {
                return Err(ParseError::Delimiter {
                    field: msh2_name(),
                    offset: base + 4,
                    reason: format!(
                        "expected 4 or 5 encoding characters, found {end} (`{}`)",
                        crate::text::readable_prefix(rest.get(..end).unwrap_or_default(), 16)
                    ),
                });
            }
            check_byte(seg, offset, base, msh2_name)?;
            if i == 4 && b == b'|' {
                return Err(ParseError::Delimiter {
                    field: msh2_name(),
                    offset: base + offset,
                    reason: "`|` cannot be the truncation character".into(),
                });
            }
            if let Some(prev) = chars.iter().take(i + 1).position(|&c| c == b) {
                return Err(ParseError::Delimiter {
                    field: msh2_name(),
                    offset: base + offset,
                    reason: format!(
                        "`{}` is used twice ({} and {})",
                        char::from(b),
                        ROLES.get(prev).unwrap_or(&"delimiter"),
                        ROLES.get(i + 1).unwrap_or(&"delimiter"),
                    ),
                });
            }
            if let Some(slot) = chars.get_mut(i + 1) {
                *slot = b;
            }
        }
        if end < 4 {
            let found = crate::text::readable(rest.get(..end).unwrap_or_default());
            let reason = match rest.get(end) {
                Some(&b) => format!(
                    "expected 4 or 5 encoding characters, found {end} (`{found}`) before `{}` at byte {}",
                    crate::text::readable(&[b]),
                    base + 4 + end
                ),
                None => format!("expected 4 or 5 encoding characters, found {end} (`{found}`)"),
            };
            return Err(ParseError::Delimiter {
                field: msh2_name(),
                offset: base + 4,
                reason,
            });
        }
        let [
            field,
            component,
            repetition,
            escape,
            subcomponent,
            truncation,
        ] = chars;
        let delims = Delimiters {
            field,
            component,
            repetition,
            escape,
            subcomponent,
            truncation: (end == 5).then_some(truncation),
        };
        Ok((delims, 4 + end))
    }

    /// Whether `b` is one of the delimiters (used by the escaper).
    pub(crate) fn is_delimiter(&self, b: u8) -> bool {
        b == self.field
            || b == self.component
            || b == self.repetition
            || b == self.escape
            || b == self.subcomponent
            || Some(b) == self.truncation
    }
}

/// Refuses a byte that cannot be a delimiter, naming it (`field` builds the field's name, only
/// for an error) and its offset.
fn check_byte(
    seg: &[u8],
    offset: usize,
    base: usize,
    field: impl FnOnce() -> String,
) -> Result<(), ParseError> {
    let Some(&b) = seg.get(offset) else {
        return Ok(());
    };
    let reason = if b >= 0x80 {
        match char_at(seg, offset) {
            Some(c) => {
                let hint = LOOKALIKES
                    .iter()
                    .find(|(l, _)| *l == c)
                    .map(|(_, a)| format!(" (a lookalike of `{a}`?)"))
                    .unwrap_or_default();
                format!("`{c}` (U+{:04X}) is not an ASCII character{hint}", c as u32)
            }
            None => format!("`\\x{b:02X}` is not an ASCII character"),
        }
    } else if b == b'\r' || b == b'\n' {
        format!(
            "`{}` is a segment terminator, not a delimiter",
            crate::text::readable(&[b])
        )
    } else if b.is_ascii_alphanumeric() {
        format!("`{}` is a letter or digit, not a delimiter", char::from(b))
    } else if !b.is_ascii_graphic() {
        format!(
            "`{}` is not a printable delimiter",
            crate::text::readable(&[b])
        )
    } else {
        return Ok(());
    };
    Err(ParseError::Delimiter {
        field: field(),
        offset: base + offset,
        reason,
    })
}

/// Decodes the UTF-8 character starting at `offset`, if any.
fn char_at(bytes: &[u8], offset: usize) -> Option<char> {
    let rest = bytes.get(offset..)?;
    (1..=4.min(rest.len()))
        .find_map(|n| std::str::from_utf8(rest.get(..n)?).ok())
        .and_then(|s| s.chars().next())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_standard("|^~\\&", b'|', b'^', b'~', b'\\', b'&', None)]
    #[case::ok_truncation("|^~\\&#", b'|', b'^', b'~', b'\\', b'&', Some(b'#'))]
    #[case::ok_alternate("$%*!@", b'$', b'%', b'*', b'!', b'@', None)]
    #[case::ok_alternate_truncation("#^~\\&!", b'#', b'^', b'~', b'\\', b'&', Some(b'!'))]
    #[case::ok_hprim_order("|~^\\&", b'|', b'~', b'^', b'\\', b'&', None)]
    fn ok_from_chars(
        #[case] chars: &str,
        #[case] field: u8,
        #[case] component: u8,
        #[case] repetition: u8,
        #[case] escape: u8,
        #[case] subcomponent: u8,
        #[case] truncation: Option<u8>,
    ) {
        let d = Delimiters::from_chars(chars).unwrap();
        assert_eq!(
            (
                d.field(),
                d.component(),
                d.repetition(),
                d.escape(),
                d.subcomponent(),
                d.truncation()
            ),
            (
                field,
                component,
                repetition,
                escape,
                subcomponent,
                truncation
            )
        );
        assert_eq!(
            format!("{}{}", char::from(field), d.encoding_chars()),
            chars
        );
    }

    #[rstest]
    #[case::err_duplicate(
        "|^^\\&",
        "MSH-2 at byte 5: `^` is used twice (component separator and repetition separator)"
    )]
    #[case::err_duplicate_field(
        "|^|\\&",
        "MSH-2 at byte 4: expected 4 or 5 encoding characters, found 1 (`^`) before `|` at byte 5"
    )]
    #[case::err_alnum("|^~A&", "MSH-2 at byte 6: `A` is a letter or digit, not a delimiter")]
    #[case::err_alnum_field("A^~\\&", "MSH-1 at byte 3: `A` is a letter or digit, not a delimiter")]
    #[case::err_lookalike(
        "|^˜\\&",
        "MSH-2 at byte 5: `˜` (U+02DC) is not an ASCII character (a lookalike of `~`?)"
    )]
    #[case::err_cr(
        "|^~\r&",
        "MSH-2 at byte 4: expected 4 or 5 encoding characters, found 2 (`^~`) before `\\r` at byte 6"
    )]
    #[case::err_cr_field(
        "\r^~\\&",
        "MSH-1 at byte 3: `\\r` is a segment terminator, not a delimiter"
    )]
    #[case::err_space("|^~ &", "MSH-2 at byte 6: ` ` is not a printable delimiter")]
    #[case::err_short(
        "|^~",
        "MSH-2 at byte 4: expected 4 or 5 encoding characters, found 2 (`^~`)"
    )]
    #[case::err_long(
        "|^~\\&#!",
        "MSH-2 at byte 4: expected 4 or 5 encoding characters, found 6 (`^~\\&#!`)"
    )]
    #[case::err_pipe_truncation(
        "#^~\\&|",
        "MSH-2 at byte 8: `|` cannot be the truncation character"
    )]
    #[case::err_empty("", "MSH segment too short (3 bytes): expected at least `MSH|^~\\&`")]
    fn err_from_chars(#[case] chars: &str, #[case] expected: &str) {
        assert_eq!(
            Delimiters::from_chars(chars).unwrap_err().to_string(),
            expected
        );
    }
}
