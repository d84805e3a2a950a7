//! JSON output (`[message] format = "json"`): paths into a JSON body and the writer that
//! builds it, for requests such as the Posos scan-token and guide requests.
//!
//! A path is either a JSON Pointer (RFC 6901: `/patient/id`, `~1` for `/` and `~0` for `~`
//! in a key) or a dotted path (`patient.id`); `/` alone is the body itself. Keys are object
//! keys: intermediate objects are created as needed. A segment `id` may end with a new list
//! item, `/items/-` or `items[]`, to append one object to a list per segment written (one per
//! item of a group). Not accepted: list indexes (`/items/0`), empty keys, control
//! characters.
//!
//! The writer is pure: it builds a [`serde_json::Value`]; a place written twice is an error
//! rather than a silent overwrite.

use std::fmt;

use serde_json::{Map, Value};

/// A place in a JSON body, parsed from a segment `id` or a `fields` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    /// Object keys from the body (or the segment's object) down.
    keys: Vec<Box<str>>,
    /// Ends with `/-` or `[]`: a new item appended to the list at `keys`.
    append: bool,
    /// As written, for messages.
    text: Box<str>,
}

/// Why a JSON path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonPathError {
    /// Nothing written.
    #[error("empty path: write `/` for the body itself, or a key such as `patientId`")]
    Empty,
    /// `a..b`, `/a//b`, a trailing `.`.
    #[error("`{path}` has an empty key")]
    EmptyKey {
        /// The path, readable.
        path: String,
    },
    /// `~` not followed by `0` or `1` in a pointer.
    #[error("`{path}`: in a JSON pointer `~` is written `~0` and `/` is written `~1`")]
    BadEscape {
        /// The path, readable.
        path: String,
    },
    /// A control character in a key.
    #[error("`{path}` has a control character in a key")]
    Control {
        /// The path, readable.
        path: String,
    },
    /// `[` or `]` elsewhere than a final `[]`, or `-` elsewhere than the end of a pointer.
    #[error(
        "`{path}`: a new list item (`[]` after a dotted path, `/-` after a pointer) may only end a segment `id`; list indexes are not accepted"
    )]
    MisplacedItem {
        /// The path, readable.
        path: String,
    },
}

impl JsonPath {
    /// Parses a pointer (`/a/b`, `/a/-`) or a dotted path (`a.b`, `a[]`).
    pub(crate) fn parse(text: &str) -> Result<JsonPath, JsonPathError> {
        let readable = || crate::hl7::readable(text.as_bytes());
        if text.is_empty() {
            return Err(JsonPathError::Empty);
        }
        if text.chars().any(char::is_control) {
            return Err(JsonPathError::Control { path: readable() });
        }
        let (mut keys, mut append) = (Vec::new(), false);
        if let Some(pointer) = text.strip_prefix('/') {
            if pointer.is_empty() {
                return Ok(JsonPath {
                    keys,
                    append,
                    text: text.into(),
                });
            }
            let tokens: Vec<&str> = pointer.split('/').collect();
            for (i, token) in tokens.iter().enumerate() {
                if token.is_empty() {
                    return Err(JsonPathError::EmptyKey { path: readable() });
                }
                if *token == "-" {
                    if i + 1 != tokens.len() || i == 0 {
                        return Err(JsonPathError::MisplacedItem { path: readable() });
                    }
                    append = true;
                    continue;
                }
                keys.push(
                    unescape(token).ok_or_else(|| JsonPathError::BadEscape { path: readable() })?,
                );
            }
        } else {
            let tokens: Vec<&str> = text.split('.').collect();
            for (i, token) in tokens.iter().enumerate() {
                let last = i + 1 == tokens.len();
                let key = match token.strip_suffix("[]") {
                    Some(key) if last => {
                        append = true;
                        key
                    }
                    _ => token,
                };
                if key.contains(['[', ']']) {
                    return Err(JsonPathError::MisplacedItem { path: readable() });
                }
                if key.is_empty() {
                    return Err(JsonPathError::EmptyKey { path: readable() });
                }
                keys.push(key.into());
            }
        }
        Ok(JsonPath {
            keys,
            append,
            text: text.into(),
        })
    }

    /// The body itself (`/`).
    pub fn is_root(&self) -> bool {
        self.keys.is_empty() && !self.append
    }

    /// Ends with a new list item (`/-`, `[]`).
    pub fn appends(&self) -> bool {
        self.append
    }

    /// The object keys, outermost first.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &**k)
    }

    /// Whether the two places are one inside the other (or the same).
    pub(crate) fn overlaps(&self, other: &JsonPath) -> bool {
        self.keys.iter().zip(&other.keys).all(|(a, b)| a == b)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `~1` → `/`, `~0` → `~`; `None` for another `~`.
fn unescape(token: &str) -> Option<Box<str>> {
    if !token.contains('~') {
        return Some(token.into());
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            },
            other => out.push(other),
        }
    }
    Some(out.into())
}

/// Why the JSON writer refused a segment or a value: two places of the mapping collide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonWriteError {
    /// A key on the way holds a value where an object is needed.
    #[error("`{at}` already holds a value, not an object: another field writes it")]
    NotAnObject {
        /// The place, as a JSON pointer.
        at: String,
    },
    /// A key that should hold a list (for `[]`) holds something else.
    #[error("`{at}` already holds a value, not a list: another field writes it")]
    NotAList {
        /// The place, as a JSON pointer.
        at: String,
    },
    /// The place was written already.
    #[error("`{at}` is written twice: set each place once")]
    Twice {
        /// The place, as a JSON pointer.
        at: String,
    },
    /// A segment id that is not a JSON path (checked at load: not expected).
    #[error(transparent)]
    Path(#[from] JsonPathError),
    /// An HL7 or HPRIM path handed to the JSON writer (checked at load: not expected).
    #[error("`{target}` is not a JSON path")]
    NotJson {
        /// The path as written.
        target: String,
    },
}

/// One step from the body to the current segment's object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(Box<str>),
    Index(usize),
}

/// Builds a JSON body: segments name the object their fields go into.
#[derive(Debug)]
pub(crate) struct JsonWriter {
    body: Value,
    /// Where the current segment's object is.
    current: Vec<Step>,
}

impl Default for JsonWriter {
    fn default() -> JsonWriter {
        JsonWriter {
            body: Value::Object(Map::new()),
            current: Vec::new(),
        }
    }
}

/// `steps` as a JSON pointer, for messages.
fn pointer(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        out.push('/');
        match step {
            Step::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => out.push_str(&i.to_string()),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn at_mut<'v>(mut node: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    for step in steps {
        node = match step {
            Step::Key(k) => node.as_object_mut()?.get_mut(&**k)?,
            Step::Index(i) => node.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(node)
}

impl JsonWriter {
    /// Makes the object `path` names the current one (appending it to its list for `[]`).
    pub(crate) fn start(&mut self, path: &JsonPath) -> Result<(), JsonWriteError> {
        let mut steps = Vec::with_capacity(path.keys.len() + 1);
        let mut node = &mut self.body;
        let count = path.keys.len();
        for (i, key) in path.keys.iter().enumerate() {
            let list = path.append && i + 1 == count;
            let Value::Object(map) = node else {
                return Err(JsonWriteError::NotAnObject {
                    at: pointer(&steps),
                });
            };
            steps.push(Step::Key(key.clone()));
            node = map.entry(key.to_string()).or_insert_with(|| {
                if list {
                    Value::Array(Vec::new())
                } else {
                    Value::Object(Map::new())
                }
            });
        }
        if path.append {
            let Value::Array(items) = node else {
                return Err(JsonWriteError::NotAList {
                    at: pointer(&steps),
                });
            };
            items.push(Value::Object(Map::new()));
            steps.push(Step::Index(items.len() - 1));
        } else if !node.is_object() {
            return Err(JsonWriteError::NotAnObject {
                at: pointer(&steps),
            });
        }
        self.current = steps;
        Ok(())
    }

    /// Writes `value` at `path` inside the current segment's object.
    pub(crate) fn put(&mut self, path: &JsonPath, value: Value) -> Result<(), JsonWriteError> {
        let mut steps = self.current.clone();
        let Some(mut node) = at_mut(&mut self.body, &self.current) else {
            return Err(JsonWriteError::NotAnObject {
                at: pointer(&steps),
            });
        };
        let count = path.keys.len();
        for (i, key) in path.keys.iter().enumerate() {
            let Value::Object(map) = node else {
                return Err(JsonWriteError::NotAnObject {
                    at: pointer(&steps),
                });
            };
            steps.push(Step::Key(key.clone()));
            if i + 1 == count {
                if map.contains_key(&**key) {
                    return Err(JsonWriteError::Twice {
                        at: pointer(&steps),
                    });
                }
                map.insert(key.to_string(), value);
                return Ok(());
            }
            node = map
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        Err(JsonWriteError::Twice {
            at: pointer(&steps),
        })
    }

    /// The finished body.
    pub(crate) fn finish(self) -> Value {
        self.body
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    #[rstest]
    #[case::ok_root("/", &[], false)]
    #[case::ok_key("patientId", &["patientId"], false)]
    #[case::ok_dotted("patient.id", &["patient", "id"], false)]
    #[case::ok_pointer("/patient/id", &["patient", "id"], false)]
    #[case::ok_pointer_escapes("/a~1b/c~0d", &["a/b", "c~d"], false)]
    #[case::ok_pointer_dot_is_a_key("/unit.code", &["unit.code"], false)]
    #[case::ok_append_dotted("items[]", &["items"], true)]
    #[case::ok_append_pointer("/order/items/-", &["order", "items"], true)]
    fn ok_parse(#[case] text: &str, #[case] keys: &[&str], #[case] append: bool) {
        let path = JsonPath::parse(text).unwrap();
        assert_eq!(path.keys().collect::<Vec<_>>(), keys);
        assert_eq!(path.appends(), append);
        assert_eq!(path.to_string(), text);
    }

    #[rstest]
    #[case::err_empty(
        "",
        "empty path: write `/` for the body itself, or a key such as `patientId`"
    )]
    #[case::err_empty_dotted_key("a..b", "`a..b` has an empty key")]
    #[case::err_empty_pointer_key("/a//b", "`/a//b` has an empty key")]
    #[case::err_trailing_dot("a.", "`a.` has an empty key")]
    #[case::err_bad_escape(
        "/a~2",
        "`/a~2`: in a JSON pointer `~` is written `~0` and `/` is written `~1`"
    )]
    #[case::err_control("a\u{b}", "`a\\x0B` has a control character in a key")]
    #[case::err_index(
        "items[1].code",
        "`items[1].code`: a new list item (`[]` after a dotted path, `/-` after a pointer) may only end a segment `id`; list indexes are not accepted"
    )]
    #[case::err_inner_append(
        "items[].code",
        "`items[].code`: a new list item (`[]` after a dotted path, `/-` after a pointer) may only end a segment `id`; list indexes are not accepted"
    )]
    #[case::err_pointer_inner_append(
        "/items/-/code",
        "`/items/-/code`: a new list item (`[]` after a dotted path, `/-` after a pointer) may only end a segment `id`; list indexes are not accepted"
    )]
    #[case::err_bare_append("[]", "`[]` has an empty key")]
    fn err_parse(#[case] text: &str, #[case] expected: &str) {
        assert_eq!(JsonPath::parse(text).unwrap_err().to_string(), expected);
    }

    fn path(text: &str) -> JsonPath {
        JsonPath::parse(text).unwrap()
    }

    #[test]
    fn ok_writer_builds_nested_objects_and_lists() {
        let mut writer = JsonWriter::default();
        writer.start(&path("/")).unwrap();
        writer.put(&path("rpps"), json!("1")).unwrap();
        writer.put(&path("patient.id"), json!("IPP1")).unwrap();
        writer.put(&path("/patient/age"), json!(42)).unwrap();
        for code in ["A", "B"] {
            writer.start(&path("items[]")).unwrap();
            writer.put(&path("code"), json!(code)).unwrap();
        }
        writer.start(&path("/meta")).unwrap();
        writer.put(&path("ok"), json!(true)).unwrap();
        assert_eq!(
            writer.finish(),
            json!({
                "rpps": "1",
                "patient": {"id": "IPP1", "age": 42},
                "items": [{"code": "A"}, {"code": "B"}],
                "meta": {"ok": true},
            })
        );
    }

    #[test]
    fn err_writer_collisions() {
        let mut writer = JsonWriter::default();
        writer.start(&path("/")).unwrap();
        writer.put(&path("a"), json!("x")).unwrap();
        assert_eq!(
            writer.put(&path("a"), json!("y")).unwrap_err().to_string(),
            "`/a` is written twice: set each place once"
        );
        assert_eq!(
            writer
                .put(&path("a.b"), json!("y"))
                .unwrap_err()
                .to_string(),
            "`/a` already holds a value, not an object: another field writes it"
        );
        assert_eq!(
            writer.start(&path("a[]")).unwrap_err().to_string(),
            "`/a` already holds a value, not a list: another field writes it"
        );
        assert_eq!(
            writer.start(&path("/a")).unwrap_err().to_string(),
            "`/a` already holds a value, not an object: another field writes it"
        );
    }
}
