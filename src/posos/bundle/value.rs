//! JSON access for the reader: a location chain kept on the stack and rendered only when an
//! error needs it, and typed reads that accept the sloppy forms seen in the wild (numbers in
//! strings, a single object where FHIR wants an array, both spellings of a key).

use std::borrow::Cow;

use serde_json::Number;

use super::json::{Json, Slot};

use super::BundleError;
use crate::text::readable_line;

/// Where a resource sits in the body; the root of every location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Origin {
    /// The bundle is wrapped as `{"fhirBundle": …}`.
    pub(super) wrapped: bool,
    /// `entry[n].resource`, when the location is inside an entry.
    pub(super) entry: Option<usize>,
    /// `contained[n]` inside that entry's resource.
    pub(super) contained: Option<usize>,
}

/// One step of a location.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The start: the body, the wrapped bundle, an entry or a contained resource.
    Origin(Origin),
    /// An object key.
    Key(&'static str),
    /// An array index.
    Index(usize),
    /// A single value read as a one-element array: no step of its own.
    Same,
}

/// A JSON location as a chain of borrowed steps: building one costs nothing, rendering it
/// (only for errors) walks the chain.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loc<'l> {
    /// The enclosing location.
    parent: Option<&'l Loc<'l>>,
    /// The last step.
    step: Step,
}

impl Loc<'_> {
    /// The location as `entry[3].resource.dosageInstruction[0].timing`; `$` for the body.
    pub(super) fn render(&self) -> String {
        let mut steps = Vec::with_capacity(12);
        let mut cursor = Some(self);
        while let Some(loc) = cursor {
            steps.push(loc.step);
            cursor = loc.parent;
        }
        let mut out = String::new();
        let key = |out: &mut String, name: &str| {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(name);
        };
        for step in steps.iter().rev() {
            match *step {
                Step::Origin(origin) => {
                    if origin.wrapped {
                        key(&mut out, "fhirBundle");
                    }
                    if let Some(entry) = origin.entry {
                        key(&mut out, "entry");
                        out.push_str(&format!("[{entry}]"));
                        key(&mut out, "resource");
                    }
                    if let Some(contained) = origin.contained {
                        key(&mut out, "contained");
                        out.push_str(&format!("[{contained}]"));
                    }
                }
                Step::Key(name) => key(&mut out, name),
                Step::Index(index) => out.push_str(&format!("[{index}]")),
                Step::Same => {}
            }
        }
        if out.is_empty() {
            out.push('$');
        }
        out
    }
}

/// A JSON value and where it is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Node<'v, 'l> {
    /// The value.
    pub(super) value: Json<'v>,
    /// Its location.
    loc: Loc<'l>,
}

impl<'v> Node<'v, 'static> {
    /// A value at the start of a location.
    pub(super) fn root(value: Json<'v>, origin: Origin) -> Self {
        Node {
            value,
            loc: Loc {
                parent: None,
                step: Step::Origin(origin),
            },
        }
    }
}

impl<'v, 'l> Node<'v, 'l> {
    /// The location, rendered.
    pub(super) fn path(&self) -> String {
        self.loc.render()
    }

    /// The member `key`; `None` when absent or `null` (missing optional data).
    pub(super) fn get<'s>(&'s self, key: &'static str) -> Option<Node<'v, 's>> {
        match self.value.get(key) {
            None => None,
            Some(value) if value.is_null() => None,
            Some(value) => Some(Node {
                value,
                loc: Loc {
                    parent: Some(&self.loc),
                    step: Step::Key(key),
                },
            }),
        }
    }

    /// The first present member among `keys` (the standard spelling first, then the ones seen
    /// in the wild, e.g. `identifier` then `identify`).
    pub(super) fn get_any<'s>(&'s self, keys: &[&'static str]) -> Option<Node<'v, 's>> {
        keys.iter().find_map(|key| self.get(key))
    }

    /// The elements of an array; a single non-array value counts as a one-element array.
    pub(super) fn items<'s>(&'s self) -> impl Iterator<Item = Node<'v, 's>> + 's {
        let value = self.value;
        let (slice, single) = match value.slot {
            Slot::Array(..) => (value.as_array().unwrap_or_default(), false),
            Slot::Null => (&[][..], false),
            other => (std::slice::from_ref(other), true),
        };
        slice
            .iter()
            .enumerate()
            .filter(|(_, slot)| !matches!(slot, Slot::Null))
            .map(move |(index, slot)| Node {
                value: value.with(slot),
                loc: Loc {
                    parent: Some(&self.loc),
                    step: if single {
                        Step::Same
                    } else {
                        Step::Index(index)
                    },
                },
            })
    }

    /// The array index of an element that [`items`](Self::items) answered (`None` for a
    /// single value read as a one-element array).
    pub(super) fn position(&self) -> Option<usize> {
        match self.loc.step {
            Step::Index(index) => Some(index),
            _ => None,
        }
    }

    /// An error saying what was expected here and what was found.
    pub(super) fn invalid(&self, expected: &'static str) -> BundleError {
        BundleError::Invalid {
            path: self.path(),
            expected,
            found: describe(self.value),
        }
    }

    /// The value as text: strings (trimmed) and numbers; `None` for an empty string.
    pub(super) fn text(&self) -> Result<Option<Cow<'v, str>>, BundleError> {
        match self.value.slot {
            Slot::String(text) => {
                let trimmed = trim(text);
                Ok((!trimmed.is_empty()).then_some(Cow::Borrowed(trimmed)))
            }
            Slot::Number(number) => Ok(Some(Cow::Owned(number.to_string()))),
            _ => Err(self.invalid("a string")),
        }
    }

    /// The value as a number: a JSON number or a numeric string (`"2"`, `"0,5"`).
    pub(super) fn number(&self) -> Result<Number, BundleError> {
        match self.value.slot {
            Slot::Number(number) => Ok(number.clone()),
            Slot::String(text) => parse_number(text).ok_or_else(|| self.invalid("a number")),
            _ => Err(self.invalid("a number")),
        }
    }

    /// The value as a whole number (`frequency`, `count`): `3`, `3.0` or `"3"`.
    pub(super) fn whole(&self) -> Result<u32, BundleError> {
        let number = self.number()?;
        if let Some(whole) = number.as_u64() {
            return u32::try_from(whole).map_err(|_| self.invalid("a whole number"));
        }
        match number.as_f64() {
            Some(float) if float.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&float) => {
                // Exact: the value is whole and in range.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(float as u32)
            }
            _ => Err(self.invalid("a whole number")),
        }
    }

    /// The value as a signed integer (`sequence`).
    pub(super) fn integer(&self) -> Result<i64, BundleError> {
        let number = self.number()?;
        if let Some(integer) = number.as_i64() {
            return Ok(integer);
        }
        match number.as_f64() {
            Some(float) if float.fract() == 0.0 && float.abs() < 9.0e15 => {
                // Exact: the value is whole and well inside the i64 range.
                #[allow(clippy::cast_possible_truncation)]
                Ok(float as i64)
            }
            _ => Err(self.invalid("an integer")),
        }
    }

    /// The value as a boolean: `true`/`false`, or those words in a string.
    pub(super) fn boolean(&self) -> Result<bool, BundleError> {
        match self.value.slot {
            Slot::Bool(flag) => Ok(*flag),
            Slot::String(text) if text.trim().eq_ignore_ascii_case("true") => Ok(true),
            Slot::String(text) if text.trim().eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(self.invalid("true or false")),
        }
    }

    /// Fails unless the value is an object.
    pub(super) fn object(&self) -> Result<(), BundleError> {
        if self.value.is_object() {
            Ok(())
        } else {
            Err(self.invalid("an object"))
        }
    }
}

/// `text.trim()`, without decoding a character when both ends are visible ASCII (almost
/// every value): no such byte starts or ends a whitespace character.
fn trim(text: &str) -> &str {
    let visible = |byte: Option<&u8>| byte.is_some_and(|b| (0x21..0x7f).contains(b));
    if visible(text.as_bytes().first()) && visible(text.as_bytes().last()) {
        text
    } else {
        text.trim()
    }
}

/// The text of an optional member, owned.
pub(super) fn string(node: Option<Node<'_, '_>>) -> Result<Option<String>, BundleError> {
    match node {
        None => Ok(None),
        Some(node) => Ok(node.text()?.map(Cow::into_owned)),
    }
}

/// The texts of an optional member holding a string or an array of strings.
pub(super) fn strings(node: Option<Node<'_, '_>>) -> Result<Vec<String>, BundleError> {
    let mut out = Vec::new();
    if let Some(node) = node {
        for item in node.items() {
            if let Some(text) = item.text()? {
                out.push(text.into_owned());
            }
        }
    }
    Ok(out)
}

/// A number read from text: trimmed, a lone decimal comma accepted (`0,5`), finite only.
pub(super) fn parse_number(text: &str) -> Option<Number> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let text: Cow<'_, str> = if text.contains(',') && !text.contains('.') {
        Cow::Owned(text.replacen(',', ".", 1))
    } else {
        Cow::Borrowed(text)
    };
    if let Ok(integer) = text.parse::<i64>() {
        return Some(Number::from(integer));
    }
    if let Ok(integer) = text.parse::<u64>() {
        return Some(Number::from(integer));
    }
    let float = text.parse::<f64>().ok()?;
    // `parse` accepts `inf`, `NaN` and `1e5`; only plain finite decimals are numbers here.
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+'));
    if plain && float.is_finite() {
        Number::from_f64(float)
    } else {
        None
    }
}

/// A found value as a message shows it: strings quoted and made readable, objects and arrays
/// named, a resource by its type.
pub(super) fn describe(value: Json<'_>) -> String {
    match value.slot {
        Slot::Null => "null".to_owned(),
        Slot::Bool(flag) => flag.to_string(),
        Slot::Number(number) => number.to_string(),
        Slot::String(text) => format!("\"{}\"", readable_line(text.as_bytes(), 40)),
        Slot::Array(..) => "an array".to_owned(),
        Slot::Object(..) => match value.get("resourceType").and_then(Json::as_str) {
            Some(kind) => format!("a {}", readable_line(kind.as_bytes(), 40)),
            None => "an object".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::json::Tree;
    use super::*;
    use rstest::rstest;
    use serde_json::{Value, json};

    #[rstest]
    #[case::ok_integer("3", Some("3"))]
    #[case::ok_negative("-2", Some("-2"))]
    #[case::ok_decimal("0.5", Some("0.5"))]
    #[case::ok_comma(" 0,5 ", Some("0.5"))]
    #[case::err_word("deux", None)]
    #[case::err_inf("inf", None)]
    #[case::err_nan("NaN", None)]
    #[case::err_exponent("1e5", None)]
    #[case::err_empty(" ", None)]
    #[case::err_two_commas("1,2,3", None)]
    fn numbers(#[case] text: &str, #[case] expected: Option<&str>) {
        assert_eq!(
            parse_number(text).map(|n| n.to_string()).as_deref(),
            expected
        );
    }

    /// The shortcut trims as `str::trim` does, Unicode spaces included.
    #[rstest]
    #[case::ok_plain("IPP42", "IPP42")]
    #[case::ok_spaces(" IPP42\t\n", "IPP42")]
    #[case::ok_inner_space("a b", "a b")]
    #[case::ok_nbsp("\u{a0}comprimé\u{a0}", "comprimé")]
    #[case::ok_ideographic_space("x\u{3000}", "x")]
    #[case::ok_accented_ends("é à", "é à")]
    #[case::ok_empty("", "")]
    #[case::ok_only_space("  ", "")]
    fn trims(#[case] text: &str, #[case] expected: &str) {
        assert_eq!(trim(text), expected);
        assert_eq!(trim(text), text.trim());
    }

    #[rstest]
    #[case::ok_root(Origin::default(), "$")]
    #[case::ok_wrapped(Origin { wrapped: true, entry: None, contained: None }, "fhirBundle")]
    #[case::ok_entry(Origin { wrapped: false, entry: Some(3), contained: None }, "entry[3].resource")]
    #[case::ok_contained(Origin { wrapped: true, entry: Some(1), contained: Some(0) }, "fhirBundle.entry[1].resource.contained[0]")]
    fn origins(#[case] origin: Origin, #[case] expected: &str) {
        let value = Value::Null;
        let tree = Tree::from_value(&value);
        assert_eq!(Node::root(tree.root(), origin).path(), expected);
    }

    #[test]
    fn ok_nested_path_and_single_item() {
        let value = json!({ "a": [{ "b": 1 }], "c": { "d": 2 } });
        let value = Tree::from_value(&value);
        let root = Node::root(value.root(), Origin::default());
        let a = root.get("a").into_iter().flat_map(|a| {
            a.items()
                .filter_map(|item| item.get("b").map(|b| b.path()))
                .collect::<Vec<_>>()
        });
        assert_eq!(a.collect::<Vec<_>>(), ["a[0].b"]);
        let c = root.get("c");
        let single: Vec<String> = c
            .iter()
            .flat_map(|c| {
                c.items()
                    .filter_map(|i| i.get("d").map(|d| d.path()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(single, ["c.d"]);
    }

    #[rstest]
    #[case::err_word(json!("deux"), "x: expected a number, found \"deux\"")]
    #[case::err_fraction(json!(1.5), "x: expected a whole number, found 1.5")]
    #[case::err_negative(json!(-1), "x: expected a whole number, found -1")]
    #[case::err_object(json!({}), "x: expected a number, found an object")]
    #[case::err_control(json!("a\u{b}b"), "x: expected a number, found \"a\\x0Bb\"")]
    #[case::ok_float(json!(3.0), "3")]
    #[case::ok_text(json!(" 3 "), "3")]
    fn whole_cases(#[case] value: Value, #[case] expected: &str) {
        let body = json!({ "x": value });
        let body = Tree::from_value(&body);
        let root = Node::root(body.root(), Origin::default());
        let message = match root.get("x").map(|x| x.whole()) {
            Some(Ok(n)) => n.to_string(),
            Some(Err(e)) => e.to_string(),
            None => "absent".to_owned(),
        };
        assert_eq!(message, expected);
    }
}
