//! The body as a flat JSON tree that borrows its strings from the input: what the reader walks.
//!
//! `serde_json::Value` allocates a `String` for every key and every text and a `BTreeMap`
//! node for every object; parsing a bundle into it and dropping it was three quarters of the
//! read. This tree is parsed by the same `serde_json` parser (same syntax, same error
//! messages, same nesting limit) or by a fast reader that agrees with it, but keeps keys and
//! texts as slices of the body (owned only when they hold escapes) and every array item and
//! object member in one of two lists, a container naming its range: a whole body costs a few
//! allocations, not one per object and array. Objects keep their members in body order and
//! are searched from the end so that a duplicated key reads its last value, as `Value` would.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// One value in the tree; a container names the range of its items (or members) in the
/// tree's lists.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Slot<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    /// `items[start..end]`.
    Array(usize, usize),
    /// `members[start..end]`, in body order.
    Object(usize, usize),
}

/// An object member: its key and its value.
type Member<'a> = (Cow<'a, str>, Slot<'a>);

/// A parsed body: the root and the lists its containers point into.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Tree<'a> {
    items: Vec<Slot<'a>>,
    members: Vec<Member<'a>>,
    root: Slot<'a>,
}

/// The longest list kept for the next body (entries): 1024 members is 56 KiB, four times a
/// typical bundle's.
const SPARE_MAX: usize = 1024;

/// The emptied lists of the last tree dropped on this thread, for the next one: a bundle's
/// lists are larger than glibc's per-thread cache takes, and allocating then freeing them
/// (with the consolidation a large free starts) cost about a tenth of the read.
#[derive(Default)]
struct Spare {
    items: Vec<Slot<'static>>,
    members: Vec<Member<'static>>,
    item_stack: Vec<Slot<'static>>,
    member_stack: Vec<Member<'static>>,
}

thread_local! {
    static SPARE: RefCell<Spare> = RefCell::default();
}

/// The allocation of a list, emptied, for values of another lifetime (collected in place:
/// no element, the same layout). Dropped instead when longer than [`SPARE_MAX`].
fn recycle<T, U>(mut list: Vec<T>) -> Vec<U> {
    if list.capacity() > SPARE_MAX {
        return Vec::new();
    }
    list.clear();
    list.into_iter().filter_map(|_| None).collect()
}

impl Drop for Tree<'_> {
    fn drop(&mut self) {
        let items = recycle(std::mem::take(&mut self.items));
        let members = recycle(std::mem::take(&mut self.members));
        // `try_with`: nothing to keep while the thread exits.
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                spare.items = items;
                spare.members = members;
            }
        });
    }
}

/// A value of a tree, as the reader walks it (a copyable handle).
#[derive(Debug, Clone, Copy)]
pub(super) struct Json<'v> {
    tree: &'v Tree<'v>,
    /// The value itself.
    pub(super) slot: &'v Slot<'v>,
}

impl<'a> Tree<'a> {
    /// Parses a body, as `serde_json::from_str::<Value>` would (errors included).
    ///
    /// A fast reader takes the common body (no escape in a string, nesting under 100) in one
    /// pass; anything else it gives up on, and the body is read by `serde_json`, which then
    /// decides (the same tree, or its error message).
    pub(super) fn parse(text: &'a str) -> Result<Tree<'a>, serde_json::Error> {
        let mut fast = Fast::new(text);
        if let Some(root) = fast.document() {
            return Ok(fast.builder.finish(root));
        }
        let mut builder = fast.builder;
        builder.clear();
        Tree::read_serde(text, builder)
    }

    /// Parses a body with `serde_json` (the reader of bodies the fast reader gives up on).
    fn read_serde(text: &'a str, mut builder: Builder<'a>) -> Result<Tree<'a>, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let root = Seed(&mut builder).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(builder.finish(root))
    }

    /// The same tree over an already parsed `Value`, borrowing its strings.
    pub(super) fn from_value(value: &'a Value) -> Tree<'a> {
        let mut builder = Builder::new(0);
        let root = builder.from_value(value);
        builder.finish(root)
    }

    /// The body.
    pub(super) fn root(&self) -> Json<'_> {
        Json {
            tree: self,
            slot: &self.root,
        }
    }
}

impl<'v> Json<'v> {
    /// The same tree's value `slot`.
    pub(super) fn with(self, slot: &'v Slot<'v>) -> Json<'v> {
        Json {
            tree: self.tree,
            slot,
        }
    }

    /// The member `key` of an object (the last one when the key is repeated); `None` for
    /// another value.
    pub(super) fn get(self, key: &str) -> Option<Json<'v>> {
        match *self.slot {
            Slot::Object(start, end) => self
                .tree
                .members
                .get(start..end)?
                .iter()
                .rev()
                .find(|(name, _)| name == key)
                .map(|(_, slot)| self.with(slot)),
            _ => None,
        }
    }

    /// The text of a string.
    pub(super) fn as_str(self) -> Option<&'v str> {
        match self.slot {
            Slot::String(text) => Some(text),
            _ => None,
        }
    }

    /// The items of an array.
    pub(super) fn as_array(self) -> Option<&'v [Slot<'v>]> {
        match *self.slot {
            Slot::Array(start, end) => self.tree.items.get(start..end),
            _ => None,
        }
    }

    /// The members of an object, in body order.
    #[cfg(test)]
    pub(super) fn as_object(self) -> Option<&'v [(Cow<'v, str>, Slot<'v>)]> {
        match *self.slot {
            Slot::Object(start, end) => self.tree.members.get(start..end),
            _ => None,
        }
    }

    pub(super) fn is_null(self) -> bool {
        matches!(self.slot, Slot::Null)
    }

    pub(super) fn is_string(self) -> bool {
        matches!(self.slot, Slot::String(_))
    }

    pub(super) fn is_number(self) -> bool {
        matches!(self.slot, Slot::Number(_))
    }

    pub(super) fn is_array(self) -> bool {
        matches!(self.slot, Slot::Array(..))
    }

    pub(super) fn is_object(self) -> bool {
        matches!(self.slot, Slot::Object(..))
    }
}

/// Builds a tree: items and members of the containers being read wait on two stacks, and a
/// closed container's move to the lists as one block.
#[derive(Debug)]
struct Builder<'a> {
    items: Vec<Slot<'a>>,
    members: Vec<(Cow<'a, str>, Slot<'a>)>,
    item_stack: Vec<Slot<'a>>,
    member_stack: Vec<(Cow<'a, str>, Slot<'a>)>,
}

impl<'a> Builder<'a> {
    /// For a body of `len` bytes: the spare lists of this thread, sized for a typical bundle
    /// (one item or member per ~24 bytes) within bounds (a 10 MiB document is one string).
    fn new(len: usize) -> Self {
        let spare = SPARE
            .try_with(|spare| spare.try_borrow_mut().map(|mut s| std::mem::take(&mut *s)))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut builder = Builder {
            items: spare.items,
            members: spare.members,
            item_stack: spare.item_stack,
            member_stack: spare.member_stack,
        };
        let guess = (len / 24).clamp(16, 512);
        builder.items.reserve(guess / 2);
        builder.members.reserve(guess);
        builder.item_stack.reserve(16);
        builder.member_stack.reserve(16);
        builder
    }

    fn clear(&mut self) {
        self.items.clear();
        self.members.clear();
        self.item_stack.clear();
        self.member_stack.clear();
    }

    /// Closes the array whose items start at `start` on the item stack.
    fn close_array(&mut self, start: usize) -> Slot<'a> {
        let begin = self.items.len();
        self.items.extend(self.item_stack.drain(start..));
        Slot::Array(begin, self.items.len())
    }

    /// Closes the object whose members start at `start` on the member stack.
    fn close_object(&mut self, start: usize) -> Slot<'a> {
        let begin = self.members.len();
        self.members.extend(self.member_stack.drain(start..));
        Slot::Object(begin, self.members.len())
    }

    /// The tree; the (empty) stacks are kept for the next body.
    fn finish(self, root: Slot<'a>) -> Tree<'a> {
        let item_stack = recycle(self.item_stack);
        let member_stack = recycle(self.member_stack);
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                spare.item_stack = item_stack;
                spare.member_stack = member_stack;
            }
        });
        Tree {
            items: self.items,
            members: self.members,
            root,
        }
    }

    #[allow(clippy::wrong_self_convention)]
    fn from_value(&mut self, value: &'a Value) -> Slot<'a> {
        match value {
            Value::Null => Slot::Null,
            Value::Bool(flag) => Slot::Bool(*flag),
            Value::Number(number) => Slot::Number(number.clone()),
            Value::String(text) => Slot::String(Cow::Borrowed(text)),
            Value::Array(values) => {
                let start = self.item_stack.len();
                for value in values {
                    let slot = self.from_value(value);
                    self.item_stack.push(slot);
                }
                self.close_array(start)
            }
            Value::Object(map) => {
                let start = self.member_stack.len();
                for (key, value) in map {
                    let slot = self.from_value(value);
                    self.member_stack.push((Cow::Borrowed(key.as_str()), slot));
                }
                self.close_object(start)
            }
        }
    }
}

/// Deeper than this, the fast reader gives up (`serde_json` refuses more than 128).
const FAST_MAX_DEPTH: usize = 100;

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_ne_bytes([1; 8]);
/// The high bit of every byte of a word.
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The offset of the first `"`, `\` or control character in `bytes`, eight bytes at a time.
///
/// In each word, `(w - ONES) & !w & HIGHS` flags the zero bytes of `w` and
/// `(w - 0x20 * ONES) & !w & HIGHS` the bytes under `0x20`; a borrow can only flag a byte
/// above one truly flagged, so the lowest flag (the first byte, words read little-endian) is
/// exact.
fn string_stop(bytes: &[u8]) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGHS;
        if found != 0 {
            // At most 63 / 8.
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|found| offset + found)
}

/// The fast reader: accepts a subset of JSON and answers `None` for anything else (an escape,
/// a control character in a string, deep nesting, any syntax error), so that it never
/// accepts what `serde_json` refuses nor reads anything differently. Numbers other than
/// plain whole ones are read by `serde_json` itself.
struct Fast<'a> {
    text: &'a str,
    pos: usize,
    builder: Builder<'a>,
}

impl<'a> Fast<'a> {
    fn new(text: &'a str) -> Self {
        Fast {
            text,
            pos: 0,
            builder: Builder::new(text.len()),
        }
    }

    fn document(&mut self) -> Option<Slot<'a>> {
        let value = self.value(0)?;
        self.skip_space();
        (self.pos == self.text.len()).then_some(value)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        let bytes = self.text.as_bytes();
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(self.pos) {
            self.pos += 1;
            // Indentation: eight spaces at a time.
            while bytes.get(self.pos..self.pos + 8) == Some(b"        ") {
                self.pos += 8;
            }
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

    fn value(&mut self, depth: usize) -> Option<Slot<'a>> {
        self.skip_space();
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(|text| Slot::String(Cow::Borrowed(text))),
            b't' => self.literal("true", Slot::Bool(true)),
            b'f' => self.literal("false", Slot::Bool(false)),
            b'n' => self.literal("null", Slot::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str, value: Slot<'a>) -> Option<Slot<'a>> {
        let rest = self.text.get(self.pos..)?;
        if !rest.starts_with(word) {
            return None;
        }
        self.pos += word.len();
        Some(value)
    }

    fn number(&mut self) -> Option<Slot<'a>> {
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
            return Some(Slot::Number(Number::from(whole)));
        }
        serde_json::from_str::<Number>(token).ok().map(Slot::Number)
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.pos += 1;
        let start = self.pos;
        let rest = self.text.as_bytes().get(start..)?;
        let end = string_stop(rest)?;
        if rest.get(end) != Some(&b'"') {
            return None;
        }
        self.pos = start + end + 1;
        self.text.get(start..start + end)
    }

    fn array(&mut self, depth: usize) -> Option<Slot<'a>> {
        if depth > FAST_MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let start = self.builder.item_stack.len();
        if !self.eat(b']') {
            loop {
                let item = self.value(depth)?;
                self.builder.item_stack.push(item);
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b']') {
                    break;
                }
                return None;
            }
        }
        Some(self.builder.close_array(start))
    }

    fn object(&mut self, depth: usize) -> Option<Slot<'a>> {
        if depth > FAST_MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let start = self.builder.member_stack.len();
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
                self.builder.member_stack.push((Cow::Borrowed(key), value));
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b'}') {
                    break;
                }
                return None;
            }
        }
        Some(self.builder.close_object(start))
    }
}

/// A text or key, borrowed from the body when it has no escape.
struct Text<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
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

/// Reads one value with `serde_json` into the builder.
struct Seed<'b, 'de>(&'b mut Builder<'de>);

impl<'de> DeserializeSeed<'de> for Seed<'_, 'de> {
    type Value = Slot<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Slot<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, 'de> {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, flag: bool) -> Result<Slot<'de>, E> {
        Ok(Slot::Bool(flag))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Slot<'de>, E> {
        Ok(Slot::Number(number.into()))
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Slot<'de>, E> {
        Ok(Slot::Number(number.into()))
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Slot<'de>, E> {
        // As `Value` does: a float JSON cannot write is null.
        Ok(Number::from_f64(number).map_or(Slot::Null, Slot::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Slot<'de>, E> {
        Ok(Slot::String(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Slot<'de>, E> {
        Ok(Slot::String(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Slot<'de>, E> {
        Ok(Slot::String(Cow::Owned(text)))
    }

    fn visit_none<E: de::Error>(self) -> Result<Slot<'de>, E> {
        Ok(Slot::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Slot<'de>, E> {
        Ok(Slot::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Slot<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Slot<'de>, A::Error> {
        let start = self.0.item_stack.len();
        while let Some(item) = seq.next_element_seed(Seed(&mut *self.0))? {
            self.0.item_stack.push(item);
        }
        Ok(self.0.close_array(start))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot<'de>, A::Error> {
        let start = self.0.member_stack.len();
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            let value = map.next_value_seed(Seed(&mut *self.0))?;
            self.0.member_stack.push((key, value));
        }
        Ok(self.0.close_object(start))
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
        let parsed = Tree::parse(body).unwrap();
        assert_eq!(to_value(parsed.root()), value);
        assert_eq!(nested(Tree::from_value(&value).root()), {
            let mut tree = nested(parsed.root());
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
        let read = fast_tree(body);
        assert_eq!(read.is_some(), fast, "{body}");
        if let Some(tree) = read {
            assert_eq!(tree, slow_tree(body).unwrap());
        }
    }

    /// A dropped tree's lists serve the next body on the thread (no new allocation), and a
    /// list longer than the bound is not kept.
    #[test]
    fn ok_lists_kept_for_the_next_body() {
        let body = r#"{"a": [1, 2, {"b": "c"}], "d": {"e": [true]}}"#;
        let first = Tree::parse(body).unwrap();
        let (items, members) = (first.items.as_ptr(), first.members.as_ptr());
        drop(first);
        let second = Tree::parse(body).unwrap();
        assert_eq!(
            (second.items.as_ptr(), second.members.as_ptr()),
            (items, members)
        );
        assert_eq!(
            to_value(second.root()),
            serde_json::from_str::<Value>(body).unwrap()
        );
        let kept: Vec<Slot<'static>> = recycle(Vec::<Slot<'_>>::with_capacity(SPARE_MAX));
        assert_eq!(kept.capacity(), SPARE_MAX);
        let dropped: Vec<Slot<'static>> = recycle(Vec::<Slot<'_>>::with_capacity(SPARE_MAX + 1));
        assert_eq!(dropped.capacity(), 0);
    }

    /// The first quote, backslash or control character, wherever it falls in the words.
    #[rstest]
    #[case::ok_quote_first("\"abc", Some(0))]
    #[case::ok_short("ab\"", Some(2))]
    #[case::ok_word_end("abcdefg\"", Some(7))]
    #[case::ok_second_word("abcdefghij\\k", Some(10))]
    #[case::ok_tail("abcdefghijklmnopqr\"", Some(18))]
    #[case::ok_control("abcd\u{1f}efgh\"", Some(4))]
    #[case::ok_control_after_quote("ab\"\u{0}", Some(2))]
    #[case::ok_utf8_not_control("éèà€ comprimé\"", Some(19))]
    #[case::ok_space_not_control("        \"", Some(8))]
    #[case::ok_high_byte_below_quote("\u{7f}\u{7f}\"", Some(2))]
    #[case::err_none("abcdefghijklmnop", None)]
    #[case::err_empty("", None)]
    fn string_stops(#[case] text: &str, #[case] expected: Option<usize>) {
        assert_eq!(string_stop(text.as_bytes()), expected);
        let slow = text
            .bytes()
            .position(|b| b == b'"' || b == b'\\' || b < 0x20);
        assert_eq!(string_stop(text.as_bytes()), slow);
    }

    use proptest::prelude::*;

    proptest! {
        /// Any bytes: the word-at-a-time scan stops where the byte-at-a-time one does.
        #[test]
        fn string_stop_agrees_with_bytewise(bytes in proptest::collection::vec(
            prop_oneof![1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20, 30 => 0x20u8..=0xff],
            0..64,
        )) {
            let slow = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(string_stop(&bytes), slow);
        }

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
            if let Some(tree) = fast_tree(&body) {
                let slow = slow_tree(&body)
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
            if let Some(tree) = fast_tree(&body) {
                prop_assert_eq!(to_value(tree.root()), expected);
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
        assert!(fast_tree(&deep).is_some());
        let deeper = format!("{}{}", "[".repeat(101), "]".repeat(101));
        assert!(fast_tree(&deeper).is_none());
        assert!(Tree::parse(&deeper).is_ok());
    }

    #[test]
    fn ok_borrows_plain_strings() {
        let parsed = Tree::parse(r#"{"key": "plain", "esc": "a\tb"}"#).unwrap();
        let members = parsed.root().as_object().unwrap();
        assert!(matches!(members[0].0, Cow::Borrowed("key")));
        assert!(matches!(members[0].1, Slot::String(Cow::Borrowed("plain"))));
        assert!(matches!(members[1].1, Slot::String(Cow::Owned(_))));
        assert_eq!(
            parsed.root().get("esc").and_then(Json::as_str),
            Some("a\tb")
        );
    }

    /// The same errors as `Value`.
    #[rstest]
    #[case::err_eof("{")]
    #[case::err_trailing("{} x")]
    #[case::err_bad_escape(r#""\q""#)]
    #[case::err_deep(&"[".repeat(200))]
    fn err_same_as_value(#[case] body: &str) {
        let expected = serde_json::from_str::<Value>(body).unwrap_err().to_string();
        assert_eq!(Tree::parse(body).unwrap_err().to_string(), expected);
    }

    /// What the fast reader reads, or `None` when it gives up.
    fn fast_tree(body: &str) -> Option<Tree<'_>> {
        let mut fast = Fast::new(body);
        let root = fast.document()?;
        Some(fast.builder.finish(root))
    }

    /// What `serde_json` reads.
    fn slow_tree(body: &str) -> Result<Tree<'_>, serde_json::Error> {
        Tree::read_serde(body, Builder::new(0))
    }

    fn to_value(json: Json<'_>) -> Value {
        match json.slot {
            Slot::Null => Value::Null,
            Slot::Bool(flag) => Value::Bool(*flag),
            Slot::Number(number) => Value::Number(number.clone()),
            Slot::String(text) => Value::String(text.to_string()),
            Slot::Array(..) => Value::Array(
                json.as_array()
                    .unwrap()
                    .iter()
                    .map(|slot| to_value(json.with(slot)))
                    .collect(),
            ),
            Slot::Object(..) => Value::Object(
                json.as_object()
                    .unwrap()
                    .iter()
                    .map(|(key, slot)| (key.to_string(), to_value(json.with(slot))))
                    .collect(),
            ),
        }
    }

    /// A tree as nested values, members in body order.
    #[derive(Debug, PartialEq)]
    enum Nested {
        Scalar(Value),
        Array(Vec<Nested>),
        Object(Vec<(String, Nested)>),
    }

    fn nested(json: Json<'_>) -> Nested {
        match json.slot {
            Slot::Array(..) => Nested::Array(
                json.as_array()
                    .unwrap()
                    .iter()
                    .map(|slot| nested(json.with(slot)))
                    .collect(),
            ),
            Slot::Object(..) => Nested::Object(
                json.as_object()
                    .unwrap()
                    .iter()
                    .map(|(key, slot)| (key.to_string(), nested(json.with(slot))))
                    .collect(),
            ),
            _ => Nested::Scalar(to_value(json)),
        }
    }

    /// What `Value` keeps of an object: the last value of each key, keys sorted.
    fn dedupe(json: &mut Nested) {
        match json {
            Nested::Array(items) => items.iter_mut().for_each(dedupe),
            Nested::Object(members) => {
                let mut kept: Vec<(String, Nested)> = Vec::new();
                for (key, mut value) in members.drain(..) {
                    dedupe(&mut value);
                    kept.retain(|(k, _)| *k != key);
                    kept.push((key, value));
                }
                kept.sort_by(|a, b| a.0.cmp(&b.0));
                *members = kept;
            }
            Nested::Scalar(_) => {}
        }
    }
}
