//! The body as a JSON tree that borrows its strings from the input: what the reader walks.
//!
//! `serde_json::Value` allocates a `String` for every key and every text and a `BTreeMap`
//! node for every object; parsing a bundle into it and dropping it was three quarters of the
//! read. This tree is parsed by the same `serde_json` parser (same syntax, same error
//! messages, same nesting limit) but keeps keys and texts as slices of the body (owned only
//! when they hold escapes) and objects as lists of members, searched from the end so that a
//! duplicated key reads its last value, as `Value` would.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// A JSON value borrowing from the body it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Members in body order; a duplicated key's last value wins (see [`Json::get`]).
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses a body, as `serde_json::from_str::<Value>` would (errors included).
    ///
    /// A fast reader takes the common body (no escape in a string, nesting under 100) in one
    /// pass with exact allocations; anything else it gives up on, and the body is read by
    /// `serde_json`, which then decides (the same tree, or its error message).
    pub(super) fn parse(text: &'a str) -> Result<Json<'a>, serde_json::Error> {
        match Fast::new(text).document() {
            Some(tree) => Ok(tree),
            None => serde_json::from_str(text),
        }
    }

    /// The same tree over an already parsed `Value`, borrowing its strings.
    pub(super) fn from_value(value: &'a Value) -> Json<'a> {
        match value {
            Value::Null => Json::Null,
            Value::Bool(flag) => Json::Bool(*flag),
            Value::Number(number) => Json::Number(number.clone()),
            Value::String(text) => Json::String(Cow::Borrowed(text)),
            Value::Array(items) => Json::Array(items.iter().map(Json::from_value).collect()),
            Value::Object(map) => Json::Object(
                map.iter()
                    .map(|(key, value)| (Cow::Borrowed(key.as_str()), Json::from_value(value)))
                    .collect(),
            ),
        }
    }

    /// The member `key` of an object (the last one when the key is repeated); `None` for
    /// another value.
    pub(super) fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members
                .iter()
                .rev()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// The text of a string.
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }

    /// The items of an array.
    pub(super) fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub(super) fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub(super) fn is_string(&self) -> bool {
        matches!(self, Json::String(_))
    }

    pub(super) fn is_number(&self) -> bool {
        matches!(self, Json::Number(_))
    }

    pub(super) fn is_array(&self) -> bool {
        matches!(self, Json::Array(_))
    }

    pub(super) fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }
}

/// Deeper than this, the fast reader gives up (`serde_json` refuses more than 128).
const FAST_MAX_DEPTH: usize = 100;

/// The fast reader: accepts a subset of JSON and answers `None` for anything else (an escape,
/// a control character in a string, deep nesting, any syntax error), so that it never
/// accepts what `serde_json` refuses nor reads anything differently. Numbers are read by
/// `serde_json` itself. Items and members are gathered on two shared stacks and moved into
/// containers of the exact size.
struct Fast<'a> {
    text: &'a str,
    pos: usize,
    items: Vec<Json<'a>>,
    members: Vec<(Cow<'a, str>, Json<'a>)>,
}

impl<'a> Fast<'a> {
    fn new(text: &'a str) -> Self {
        Fast {
            text,
            pos: 0,
            // Under glibc's per-thread cache limit (1 KiB): larger blocks take the slow path
            // of malloc, and often a consolidation of the freed small blocks.
            items: Vec::with_capacity(16),
            members: Vec::with_capacity(16),
        }
    }

    fn document(mut self) -> Option<Json<'a>> {
        let value = self.value(0)?;
        self.skip_space();
        (self.pos == self.text.len()).then_some(value)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `byte` after optional spaces.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Json<'a>> {
        self.skip_space();
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(|text| Json::String(Cow::Borrowed(text))),
            b't' => self.literal("true", Json::Bool(true)),
            b'f' => self.literal("false", Json::Bool(false)),
            b'n' => self.literal("null", Json::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str, value: Json<'a>) -> Option<Json<'a>> {
        let rest = self.text.get(self.pos..)?;
        if !rest.starts_with(word) {
            return None;
        }
        self.pos += word.len();
        Some(value)
    }

    fn number(&mut self) -> Option<Json<'a>> {
        let start = self.pos;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.pos += 1;
        }
        let token = self.text.get(start..self.pos)?;
        // A plain whole number (no sign, no leading zero, at most 19 digits: it fits a u64)
        // is what `serde_json` reads as a `u64`; anything else is read by `serde_json`.
        let plain = (1..=19).contains(&token.len())
            && token.bytes().all(|b| b.is_ascii_digit())
            && (token == "0" || !token.starts_with('0'));
        if plain && let Ok(whole) = token.parse::<u64>() {
            return Some(Json::Number(Number::from(whole)));
        }
        serde_json::from_str::<Number>(token).ok().map(Json::Number)
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.pos += 1;
        let start = self.pos;
        let rest = self.text.as_bytes().get(start..)?;
        let end = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest.get(end) != Some(&b'"') {
            return None;
        }
        self.pos = start + end + 1;
        self.text.get(start..start + end)
    }

    fn array(&mut self, depth: usize) -> Option<Json<'a>> {
        if depth > FAST_MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let start = self.items.len();
        if !self.eat(b']') {
            loop {
                let item = self.value(depth)?;
                self.items.push(item);
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b']') {
                    break;
                }
                return None;
            }
        }
        Some(Json::Array(self.items.drain(start..).collect()))
    }

    fn object(&mut self, depth: usize) -> Option<Json<'a>> {
        if depth > FAST_MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let start = self.members.len();
        if !self.eat(b'}') {
            loop {
                self.skip_space();
                if self.peek() != Some(b'"') {
                    return None;
                }
                let key = self.string()?;
                if !self.eat(b':') {
                    return None;
                }
                let value = self.value(depth)?;
                self.members.push((Cow::Borrowed(key), value));
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b'}') {
                    break;
                }
                return None;
            }
        }
        Some(Json::Object(self.members.drain(start..).collect()))
    }
}

/// A text or key, borrowed from the body when it has no escape.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, flag: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(flag))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(number.into()))
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(number.into()))
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Json<'de>, E> {
        // As `Value` does: a float JSON cannot write is null.
        Ok(Number::from_f64(number).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(text)))
    }

    fn visit_none<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json<'de>, D::Error> {
        Deserialize::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            let value: Json<'de> = map.next_value()?;
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// The same tree as `Value` gives, for bodies of every shape.
    #[rstest]
    #[case::ok_scalars(r#"[null, true, false, 0, -3, 18446744073709551615, 0.5, 1e3, "a"]"#)]
    #[case::ok_escapes(r#"{"k\u00e9y": "a\"b\\c\nd", "plain": "x"}"#)]
    #[case::ok_nested(r#"{"a": {"b": [{"c": []}, {}]}, "d": null}"#)]
    #[case::ok_duplicate_keys(r#"{"a": 1, "b": 2, "a": 3}"#)]
    fn ok_same_as_value(#[case] body: &str) {
        let value: Value = serde_json::from_str(body).unwrap();
        let parsed = Json::parse(body).unwrap();
        assert_eq!(to_value(&parsed), value);
        assert_eq!(Json::from_value(&value), {
            let mut tree = parsed.clone();
            dedupe(&mut tree);
            tree
        });
    }

    /// The fast reader gives the tree `serde_json` gives, or gives up.
    #[rstest]
    #[case::ok_object(
        r#" {"a": [1, -2, 0.5, 1e3, -0, 18446744073709551616], "b": {"c": null}} "#,
        true
    )]
    #[case::ok_literals("[true, false, null, []]", true)]
    #[case::ok_whole_numbers(
        "[0, 7, 1234567890123456789, 9999999999999999999, 10000000000000000000]",
        true
    )]
    #[case::err_leading_zeros("[00]", false)]
    #[case::ok_utf8(r#"{"é": "comprimé ≥ 1"}"#, true)]
    #[case::ok_duplicate_keys(r#"{"a": 1, "a": 2}"#, true)]
    #[case::ok_escape_given_up(r#"{"a": "x\/y"}"#, false)]
    #[case::ok_control_given_up("[\"a\tb\"]", false)]
    #[case::err_trailing_comma("[1,]", false)]
    #[case::err_leading_zero("[01]", false)]
    #[case::err_bad_number("[1-2]", false)]
    #[case::err_trailing_text("{} x", false)]
    #[case::err_truncated(r#"{"a": tru"#, false)]
    #[case::err_missing_colon(r#"{"a" 1}"#, false)]
    #[case::err_key_not_string("{1: 2}", false)]
    #[case::err_empty("", false)]
    #[case::err_literal_glued("[truex]", false)]
    fn fast_reader(#[case] body: &str, #[case] fast: bool) {
        let read = Fast::new(body).document();
        assert_eq!(read.is_some(), fast, "{body}");
        if let Some(tree) = read {
            let slow: Json<'_> = serde_json::from_str(body).unwrap();
            assert_eq!(tree, slow);
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever the body, the fast reader never accepts what `serde_json` refuses, and
        /// what it accepts is the tree `serde_json` reads (sloppy input included: the
        /// alphabet is JSON's punctuation, literals' letters, digits, escapes and spaces).
        #[test]
        fn fast_reader_agrees_with_serde_json(
            body in proptest::collection::vec(
                prop_oneof![
                    Just("{"), Just("}"),
                    Just("["), Just("]"),
                    Just(","), Just(":"),
                    Just("\""), Just("\\"),
                    Just(" "), Just("\n"),
                    Just("true"), Just("nul"),
                    Just("l"), Just("-"),
                    Just("0"), Just("12"),
                    Just("."), Just("e"),
                    Just("a"), Just("é"),
                    Just("\u{1}"),
                ],
                0..40,
            ).prop_map(|parts: Vec<&'static str>| parts.concat())
        ) {
            if let Some(tree) = Fast::new(&body).document() {
                let slow: Json<'_> = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("fast reader accepted {body:?}, serde_json: {e}"));
                prop_assert_eq!(tree, slow);
            }
        }

        /// Well-formed bodies of every shape: the fast reader reads most of them, always
        /// as `serde_json` does.
        #[test]
        fn fast_reader_reads_valid_json_as_serde_json(value in json_value()) {
            let body = serde_json::to_string(&value).unwrap();
            // Compared with what `serde_json` reads back (without its `float_roundtrip`
            // feature a float may come back one ulp off what was written, both ways alike).
            let expected: Value = serde_json::from_str(&body).unwrap();
            if let Some(tree) = Fast::new(&body).document() {
                prop_assert_eq!(to_value(&tree), expected);
            }
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-zé\\\"\n ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn ok_fast_reader_nesting_limit() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(Fast::new(&deep).document().is_some());
        let deeper = format!("{}{}", "[".repeat(101), "]".repeat(101));
        assert!(Fast::new(&deeper).document().is_none());
        assert!(Json::parse(&deeper).is_ok());
    }

    #[test]
    fn ok_borrows_plain_strings() {
        let parsed = Json::parse(r#"{"key": "plain", "esc": "a\tb"}"#).unwrap();
        let Json::Object(members) = &parsed else {
            panic!("not an object")
        };
        assert!(matches!(members[0].0, Cow::Borrowed("key")));
        assert!(matches!(members[0].1, Json::String(Cow::Borrowed("plain"))));
        assert!(matches!(members[1].1, Json::String(Cow::Owned(_))));
        assert_eq!(parsed.get("esc").and_then(Json::as_str), Some("a\tb"));
    }

    /// The same errors as `Value`.
    #[rstest]
    #[case::err_eof("{")]
    #[case::err_trailing("{} x")]
    #[case::err_bad_escape(r#""\q""#)]
    #[case::err_deep(&"[".repeat(200))]
    fn err_same_as_value(#[case] body: &str) {
        let expected = serde_json::from_str::<Value>(body).unwrap_err().to_string();
        assert_eq!(Json::parse(body).unwrap_err().to_string(), expected);
    }

    fn to_value(json: &Json<'_>) -> Value {
        match json {
            Json::Null => Value::Null,
            Json::Bool(flag) => Value::Bool(*flag),
            Json::Number(number) => Value::Number(number.clone()),
            Json::String(text) => Value::String(text.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(to_value).collect()),
            Json::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(key, value)| (key.to_string(), to_value(value)))
                    .collect(),
            ),
        }
    }

    /// What `Value` keeps of an object: the last value of each key, keys sorted.
    fn dedupe(json: &mut Json<'_>) {
        match json {
            Json::Array(items) => items.iter_mut().for_each(dedupe),
            Json::Object(members) => {
                let mut kept: Vec<(Cow<'_, str>, Json<'_>)> = Vec::new();
                for (key, mut value) in members.drain(..) {
                    dedupe(&mut value);
                    kept.retain(|(k, _)| *k != key);
                    kept.push((key, value));
                }
                kept.sort_by(|a, b| a.0.cmp(&b.0));
                *members = kept;
            }
            _ => {}
        }
    }
}
