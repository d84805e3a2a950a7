//! Evaluation of compiled expressions over the input context.
//!
//! Values borrow from the context and the mapping; only functions that make new text
//! (`upper`, `~`, `datetime` …) allocate. A value is *empty* when it is missing, `null`, or
//! text of only spaces; empty values are not written, fail `required`, are replaced by
//! `default`, and are false in conditions.

use std::borrow::Cow;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::fmt::strtime::BrokenDownTime;
use jiff::tz::TimeZone;
use serde_json::Value;

use super::expr::{Expr, Func, PathExpr, Root, Step};
use super::view::Node;

/// A `[maps.name]` table: code in, code out, with an optional `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValueMap {
    pub(crate) name: String,
    /// Sorted by key, for binary search.
    pub(crate) entries: Vec<(String, String)>,
    /// For values not in the table, and for empty values.
    pub(crate) default: Option<String>,
}

impl ValueMap {
    fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .and_then(|i| self.entries.get(i))
            .map(|(_, v)| v.as_str())
    }
}

/// What every evaluation of one message shares.
pub(crate) struct Env<'a> {
    /// The context's root object.
    pub(crate) context: Node<'a>,
    pub(crate) maps: &'a [ValueMap],
    pub(crate) tz: &'a TimeZone,
}

/// The item a group is on, linked to the enclosing groups' items (kept on the stack).
pub(crate) struct Scope<'s, 'a> {
    pub(crate) item: Node<'a>,
    /// 1-based position in the list.
    pub(crate) index: usize,
    /// Nesting depth of the group, 0 for the outermost.
    pub(crate) depth: usize,
    /// The group's `for_each` path, for error locations.
    pub(crate) over: &'a str,
    pub(crate) parent: Option<&'s Scope<'s, 'a>>,
}

impl<'a> Scope<'_, 'a> {
    fn at(&self, depth: usize) -> Option<&Scope<'_, 'a>> {
        let mut scope = Some(self);
        while let Some(s) = scope {
            if s.depth == depth {
                return Some(s);
            }
            scope = s.parent;
        }
        None
    }
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Missing,
    Json(Node<'a>),
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    /// Every item of a list walked by `[]`, then the remaining steps for each.
    Spread(Node<'a>, &'a [Step]),
}

/// Why evaluation failed; the caller adds where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fail {
    /// A list or an object where text is needed (`found` says which).
    NotText(&'static str),
    /// A value that a map has no entry for, and the map has no `default`.
    Unmapped { map: usize, value: String },
    /// Text that `datetime` or `date` cannot read.
    NotADate,
}

/// Evaluates `expr` on the context and the groups' current items.
pub(crate) fn eval<'a>(
    expr: &'a Expr,
    env: &Env<'a>,
    scope: Option<&Scope<'_, 'a>>,
) -> Result<Val<'a>, Fail> {
    match expr {
        Expr::Path(path) => Ok(resolve(path, env, scope)),
        Expr::Text(text) => Ok(Val::Str(Cow::Borrowed(text))),
        Expr::Int(n) => Ok(Val::Int(*n)),
        Expr::Concat(parts) => {
            let mut out = String::with_capacity(32);
            for part in parts {
                if let Some(text) = text(eval(part, env, scope)?)? {
                    out.push_str(&text);
                }
            }
            Ok(Val::Str(Cow::Owned(out)))
        }
        Expr::Pipe(input, func) => {
            let value = eval(input, env, scope)?;
            call(value, func, env, scope)
        }
        Expr::Compare { left, right, equal } => {
            let left = text(eval(left, env, scope)?)?;
            let right = text(eval(right, env, scope)?)?;
            let same = left.as_deref().unwrap_or("") == right.as_deref().unwrap_or("");
            Ok(Val::Bool(same == *equal))
        }
        Expr::Not(inner) => Ok(Val::Bool(!truthy(&eval(inner, env, scope)?))),
        Expr::And(a, b) => Ok(Val::Bool(
            truthy(&eval(a, env, scope)?) && truthy(&eval(b, env, scope)?),
        )),
        Expr::Or(a, b) => Ok(Val::Bool(
            truthy(&eval(a, env, scope)?) || truthy(&eval(b, env, scope)?),
        )),
    }
}

/// Follows a path from its root; missing keys and out-of-range indexes give `Missing`.
pub(crate) fn resolve<'a>(
    path: &'a PathExpr,
    env: &Env<'a>,
    scope: Option<&Scope<'_, 'a>>,
) -> Val<'a> {
    let start = match &path.root {
        Root::Context(key) => env.context.get(key),
        Root::Item(depth) => scope.and_then(|s| s.at(*depth)).map(|s| s.item),
        Root::Index(depth) => {
            return match scope.and_then(|s| s.at(*depth)) {
                Some(s) => Val::Int(i64::try_from(s.index).unwrap_or(i64::MAX)),
                None => Val::Missing,
            };
        }
    };
    match start {
        Some(value) => walk(value, &path.steps),
        None => Val::Missing,
    }
}

fn walk<'a>(mut value: Node<'a>, steps: &'a [Step]) -> Val<'a> {
    for (i, step) in steps.iter().enumerate() {
        let next = match step {
            Step::Key(key) => value.get(key),
            Step::Index(n) => value.index(*n),
            Step::Each => {
                return match value {
                    Node::Null => Val::Missing,
                    _ => Val::Spread(value, steps.get(i + 1..).unwrap_or_default()),
                };
            }
        };
        match next {
            Some(v) => value = v,
            None => return Val::Missing,
        }
    }
    Val::Json(value)
}

/// Calls `f` on every value a spread reaches (a non-list counts as a list of one); stops
/// when `f` returns false.
fn each_leaf<'a>(
    value: Node<'a>,
    rest: &'a [Step],
    f: &mut dyn FnMut(Node<'a>) -> Result<bool, Fail>,
) -> Result<bool, Fail> {
    let count = value.list_len().unwrap_or(1);
    for i in 0..count {
        let item = if value.is_list() {
            match value.index(i) {
                Some(item) => item,
                None => continue,
            }
        } else {
            value
        };
        let go_on = match walk(item, rest) {
            Val::Json(Node::Null) => true,
            Val::Json(leaf) => f(leaf)?,
            Val::Spread(inner, rest) => each_leaf(inner, rest, f)?,
            _ => true,
        };
        if !go_on {
            return Ok(false);
        }
    }
    Ok(true)
}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// Whether a condition holds: present and not empty, `false` or `0`.
pub(crate) fn truthy(value: &Val<'_>) -> bool {
    match value {
        Val::Missing => false,
        Val::Json(json) => match *json {
            Node::Null => false,
            Node::Bool(b) => b,
            Node::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Node::Int(n) => n != 0,
            Node::Str(s) => !is_blank(s),
            Node::Array(items) => !items.is_empty(),
            Node::List(items) => !items.is_empty(),
            Node::Object(fields) => !fields.is_empty(),
            // A typed record always has its keys.
            Node::Record(_) => true,
        },
        Val::Str(s) => !is_blank(s),
        Val::Int(n) => *n != 0,
        Val::Bool(b) => *b,
        Val::Spread(value, rest) => {
            let mut any = false;
            let _ = each_leaf(*value, rest, &mut |leaf| {
                any = truthy(&Val::Json(leaf));
                Ok(!any)
            });
            any
        }
    }
}

/// The text of a value, `None` when missing; lists and objects are not text.
pub(crate) fn text(value: Val<'_>) -> Result<Option<Cow<'_, str>>, Fail> {
    Ok(match value {
        Val::Missing => None,
        Val::Json(json) => match json {
            Node::Null => None,
            Node::Str(s) => Some(Cow::Borrowed(s)),
            Node::Number(n) => Some(Cow::Owned(n.to_string())),
            Node::Int(n) => Some(Cow::Owned(n.to_string())),
            Node::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
            Node::Array(_) | Node::List(_) => return Err(Fail::NotText("a list")),
            Node::Object(_) | Node::Record(_) => return Err(Fail::NotText("an object")),
        },
        Val::Str(s) => Some(s),
        Val::Int(n) => Some(Cow::Owned(n.to_string())),
        Val::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
        Val::Spread(..) => return Err(Fail::NotText("a list")),
    })
}

/// The text of a value, `None` when empty.
pub(crate) fn non_blank(value: Val<'_>) -> Result<Option<Cow<'_, str>>, Fail> {
    Ok(text(value)?.filter(|t| !is_blank(t)))
}

/// The items of a list for a JSON `array` field: texts, numbers and booleans as they are,
/// empty ones left out; missing gives an empty list and one value a list of one.
pub(crate) fn list(value: Val<'_>) -> Result<Vec<Value>, Fail> {
    fn item(leaf: Node<'_>, out: &mut Vec<Value>) -> Result<(), Fail> {
        match leaf {
            Node::Null => {}
            Node::Str(s) if is_blank(s) => {}
            Node::Str(_) | Node::Number(_) | Node::Int(_) | Node::Bool(_) => {
                out.push(leaf.to_value());
            }
            Node::Array(_) | Node::List(_) => return Err(Fail::NotText("a list")),
            Node::Object(_) | Node::Record(_) => return Err(Fail::NotText("an object")),
        }
        Ok(())
    }
    let mut out = Vec::new();
    match value {
        Val::Missing => {}
        Val::Json(list) if list.is_list() => {
            for leaf in list.items().into_iter().flatten() {
                item(leaf, &mut out)?;
            }
        }
        Val::Json(leaf) => item(leaf, &mut out)?,
        Val::Spread(value, rest) => {
            each_leaf(value, rest, &mut |leaf| item(leaf, &mut out).map(|()| true))?;
        }
        Val::Int(n) => out.push(Value::from(n)),
        Val::Bool(b) => out.push(Value::Bool(b)),
        Val::Str(s) if is_blank(&s) => {}
        Val::Str(s) => out.push(Value::String(s.into_owned())),
    }
    Ok(out)
}

/// The value of a JSON `number` field: `None` when empty, `Some(null)` when the value is
/// not a number.
pub(crate) fn number(value: Val<'_>) -> Result<Option<Value>, Fail> {
    Ok(match value {
        Val::Json(Node::Number(n)) => Some(Value::Number(n.clone())),
        Val::Json(Node::Int(n)) | Val::Int(n) => Some(Value::from(n)),
        Val::Json(Node::Bool(_)) | Val::Bool(_) => Some(Value::Null),
        other => non_blank(other)?.map(|text| {
            let text = text.trim();
            match text.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number),
            }
        }),
    })
}

/// The value of a JSON `bool` field: `None` when empty, `Some(null)` when the value is not
/// `true` or `false`.
pub(crate) fn boolean(value: Val<'_>) -> Result<Option<Value>, Fail> {
    Ok(match value {
        Val::Json(Node::Bool(b)) | Val::Bool(b) => Some(Value::Bool(b)),
        Val::Json(Node::Number(_) | Node::Int(_)) | Val::Int(_) => Some(Value::Null),
        other => non_blank(other)?.map(|text| match text.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::Null,
        }),
    })
}

fn map_text<'a>(
    value: Val<'a>,
    f: impl FnOnce(Cow<'a, str>) -> Result<Cow<'a, str>, Fail>,
) -> Result<Val<'a>, Fail> {
    match text(value)? {
        Some(t) => Ok(Val::Str(f(t)?)),
        None => Ok(Val::Missing),
    }
}

fn call<'a>(
    value: Val<'a>,
    func: &'a Func,
    env: &Env<'a>,
    scope: Option<&Scope<'_, 'a>>,
) -> Result<Val<'a>, Fail> {
    match func {
        Func::Default(fallback) => {
            if present(&value) {
                Ok(value)
            } else {
                eval(fallback, env, scope)
            }
        }
        Func::Map(index) => {
            let Some(map) = env.maps.get(*index) else {
                return Ok(Val::Missing);
            };
            let default = || match &map.default {
                Some(d) => Val::Str(Cow::Borrowed(d.as_str())),
                None => Val::Missing,
            };
            match non_blank(value)? {
                None => Ok(default()),
                Some(key) => match map.get(&key) {
                    Some(mapped) => Ok(Val::Str(Cow::Borrowed(mapped))),
                    None if map.default.is_some() => Ok(default()),
                    None => Err(Fail::Unmapped {
                        map: *index,
                        value: key.into_owned(),
                    }),
                },
            }
        }
        Func::Upper => map_text(value, |t| Ok(Cow::Owned(t.to_uppercase()))),
        Func::Lower => map_text(value, |t| Ok(Cow::Owned(t.to_lowercase()))),
        Func::Trim => map_text(value, |t| {
            Ok(match t {
                Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
                Cow::Owned(s) => Cow::Owned(s.trim().to_string()),
            })
        }),
        Func::Truncate(n) => map_text(value, |t| {
            let Some((cut, _)) = t.char_indices().nth(*n) else {
                return Ok(t);
            };
            Ok(match t {
                Cow::Borrowed(s) => Cow::Borrowed(s.get(..cut).unwrap_or(s)),
                Cow::Owned(mut s) => {
                    s.truncate(cut);
                    Cow::Owned(s)
                }
            })
        }),
        Func::Replace(from, to) => map_text(value, |t| {
            Ok(if t.contains(&**from) {
                Cow::Owned(t.replace(&**from, to))
            } else {
                t
            })
        }),
        Func::Join(sep) => {
            let mut out = String::new();
            let mut push = |leaf: Node<'a>| -> Result<bool, Fail> {
                if let Some(t) = non_blank(Val::Json(leaf))? {
                    if !out.is_empty() {
                        out.push_str(sep);
                    }
                    out.push_str(&t);
                }
                Ok(true)
            };
            match value {
                Val::Json(list) if list.is_list() => {
                    each_leaf(list, &[], &mut push)?;
                }
                Val::Spread(list, rest) => {
                    each_leaf(list, rest, &mut push)?;
                }
                other => return Ok(other),
            }
            Ok(Val::Str(Cow::Owned(out)))
        }
        Func::First => match value {
            Val::Json(list) if list.is_list() => Ok(list.index(0).map_or(Val::Missing, Val::Json)),
            Val::Spread(list, rest) => {
                let mut first = Val::Missing;
                each_leaf(list, rest, &mut |leaf| {
                    first = Val::Json(leaf);
                    Ok(false)
                })?;
                Ok(first)
            }
            other => Ok(other),
        },
        Func::Count => {
            let n = match value {
                Val::Missing | Val::Json(Node::Null) => 0,
                Val::Json(list) if list.is_list() => list.list_len().unwrap_or(0),
                Val::Spread(list, rest) => {
                    let mut n = 0usize;
                    each_leaf(list, rest, &mut |_| {
                        n += 1;
                        Ok(true)
                    })?;
                    n
                }
                _ => 1,
            };
            Ok(Val::Int(i64::try_from(n).unwrap_or(i64::MAX)))
        }
        Func::DateTime(format) => match non_blank(value)? {
            None => Ok(Val::Missing),
            Some(t) => {
                let zoned = match parse_moment(&t).ok_or(Fail::NotADate)? {
                    Moment::Instant(ts) => ts.to_zoned(env.tz.clone()),
                    Moment::Civil(dt) => dt.to_zoned(env.tz.clone()).map_err(|_| Fail::NotADate)?,
                    Moment::Day(d) => d.to_zoned(env.tz.clone()).map_err(|_| Fail::NotADate)?,
                };
                let mut out = String::new();
                BrokenDownTime::from(&zoned)
                    .format(&**format, &mut out)
                    .map_err(|_| Fail::NotADate)?;
                Ok(Val::Str(Cow::Owned(out)))
            }
        },
        Func::Date(format) => match non_blank(value)? {
            None => Ok(Val::Missing),
            Some(t) => {
                let date = match parse_moment(&t).ok_or(Fail::NotADate)? {
                    Moment::Instant(ts) => ts.to_zoned(env.tz.clone()).date(),
                    Moment::Civil(dt) => dt.date(),
                    Moment::Day(d) => d,
                };
                let mut out = String::new();
                BrokenDownTime::from(date)
                    .format(&**format, &mut out)
                    .map_err(|_| Fail::NotADate)?;
                Ok(Val::Str(Cow::Owned(out)))
            }
        },
    }
}

/// For `default`: is there a non-empty value? (`0` and `false` are values; lists count when
/// not empty.)
fn present(value: &Val<'_>) -> bool {
    match value {
        Val::Json(Node::Bool(_) | Node::Number(_) | Node::Int(_)) | Val::Int(_) | Val::Bool(_) => {
            true
        }
        other => truthy(other),
    }
}

/// A moment read from input text.
#[derive(Debug, Clone, PartialEq)]
enum Moment {
    /// An RFC 3339 timestamp (with `Z` or an offset): converted to the mapping's time zone.
    Instant(Timestamp),
    /// A date and time without offset: taken as local time in the mapping's time zone.
    Civil(DateTime),
    /// A date.
    Day(Date),
}

/// Reads an RFC 3339 timestamp, an ISO date or date-time, or an HL7 `YYYYMMDD[HHMM[SS]]`.
fn parse_moment(text: &str) -> Option<Moment> {
    let text = text.trim();
    let bytes = text.as_bytes();
    if bytes.iter().all(u8::is_ascii_digit) {
        let format = match bytes.len() {
            8 => "%Y%m%d",
            12 => "%Y%m%d%H%M",
            14 => "%Y%m%d%H%M%S",
            _ => return None,
        };
        let parsed = jiff::fmt::strtime::parse(format, text).ok()?;
        return if bytes.len() == 8 {
            parsed.to_date().ok().map(Moment::Day)
        } else {
            parsed.to_datetime().ok().map(Moment::Civil)
        };
    }
    if bytes.len() == 10 {
        return text.parse::<Date>().ok().map(Moment::Day);
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Some(Moment::Instant(ts));
    }
    text.parse::<DateTime>().ok().map(Moment::Civil)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::context::Inputs;
    use super::super::expr::{Names, parse};
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn context() -> Value {
        json!({
            "prescription": {
                "id": "RX1",
                "authored_at": "2024-03-31T00:30:00Z",
                "lines": [
                    {"medication": {"code": "A1", "display": "Prednisone 20 mg"},
                     "dosages": [{"text": "1 cp matin"}, {"text": " "}, {"text": "1 cp soir"}]},
                    {"medication": {"code": "B2", "display": null}, "dosages": []}
                ],
                "tags": ["x", "", null, "y"]
            },
            "census": {"ipp": "IPP1", "nda": "", "sex": "F", "unknown_sex": "X",
                       "family": "Lefèvre", "given": "éloïse", "birth_date": "1970-02-03",
                       "weight": 0, "flag": true},
            "message": {"control_id": "C42", "now": "2024-10-27T01:30:00Z"}
        })
    }

    fn maps() -> Vec<ValueMap> {
        vec![
            ValueMap {
                name: "sex".into(),
                entries: vec![("F".into(), "F".into()), ("M".into(), "M".into())],
                default: Some("U".into()),
            },
            ValueMap {
                name: "strict".into(),
                entries: vec![("F".into(), "2".into()), ("M".into(), "1".into())],
                default: None,
            },
        ]
    }

    /// Evaluates `src` inside a group on the first line (`line`, `line_index` = 1).
    fn run(src: &str) -> Result<Option<String>, Fail> {
        let vars = ["line".to_string()];
        let map_names: Vec<String> = maps().into_iter().map(|m| m.name).collect();
        let names = Names {
            inputs: Inputs::Push,
            vars: &vars,
            maps: &map_names,
        };
        let expr = parse(src, &names).unwrap().expr;
        let ctx = context();
        let maps = maps();
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let env = Env {
            context: Node::from(&ctx),
            maps: &maps,
            tz: &tz,
        };
        let line = Node::from(ctx.pointer("/prescription/lines/0").unwrap());
        let scope = Scope {
            item: line,
            index: 1,
            depth: 0,
            over: "prescription.lines",
            parent: None,
        };
        let value = eval(&expr, &env, Some(&scope))?;
        Ok(text(value)?.map(Cow::into_owned))
    }

    #[rstest]
    #[case::ok_path("census.ipp", Some("IPP1"))]
    #[case::ok_missing("census.nothing", None)]
    #[case::ok_item("line.medication.code", Some("A1"))]
    #[case::ok_index("line.dosages[3].text", Some("1 cp soir"))]
    #[case::ok_index_out_of_range("line.dosages[9].text", None)]
    #[case::ok_concat("prescription.id ~ '-' ~ line_index", Some("RX1-1"))]
    #[case::ok_concat_missing("census.nothing ~ 'x'", Some("x"))]
    #[case::ok_upper("census.family | upper", Some("LEFÈVRE"))]
    #[case::ok_lower("census.family | lower", Some("lefèvre"))]
    #[case::ok_trim("'  a b  ' | trim", Some("a b"))]
    #[case::ok_truncate_chars("census.family | truncate(4)", Some("Lefè"))]
    #[case::ok_truncate_short("census.ipp | truncate(199)", Some("IPP1"))]
    #[case::ok_truncate_owned("census.family | upper | truncate(3)", Some("LEF"))]
    #[case::ok_replace(
        "line.medication.display | replace(' ', '_')",
        Some("Prednisone_20_mg")
    )]
    #[case::ok_default_blank("census.nda | default(census.ipp)", Some("IPP1"))]
    #[case::ok_default_missing("census.nothing | default('inconnu')", Some("inconnu"))]
    #[case::ok_default_kept("census.ipp | default('x')", Some("IPP1"))]
    #[case::ok_default_zero_kept("census.weight | default('x')", Some("0"))]
    #[case::ok_map("census.sex | map('sex')", Some("F"))]
    #[case::ok_map_default("census.unknown_sex | map('sex')", Some("U"))]
    #[case::ok_map_default_on_missing("census.nothing | map('sex')", Some("U"))]
    #[case::ok_map_strict_missing("census.nothing | map('strict')", None)]
    #[case::ok_join_array("prescription.tags | join('/')", Some("x/y"))]
    #[case::ok_join_spread("prescription.lines[].medication.code | join(', ')", Some("A1, B2"))]
    #[case::ok_join_nested_spread(
        "prescription.lines[].dosages[].text | join(' / ')",
        Some("1 cp matin / 1 cp soir")
    )]
    #[case::ok_join_scalar("census.ipp | join(',')", Some("IPP1"))]
    #[case::ok_first_spread("prescription.lines[].medication.code | first", Some("A1"))]
    #[case::ok_first_array("prescription.tags | first", Some("x"))]
    #[case::ok_count_array("line.dosages | count", Some("3"))]
    #[case::ok_count_spread("prescription.lines[].dosages[] | count", Some("3"))]
    #[case::ok_count_missing("census.nothing | count", Some("0"))]
    #[case::ok_number("census.weight", Some("0"))]
    #[case::ok_bool("census.flag", Some("true"))]
    #[case::ok_compare("census.sex == 'F'", Some("true"))]
    #[case::ok_compare_number("line_index == 1", Some("true"))]
    #[case::ok_compare_missing_empty("census.nothing == ''", Some("true"))]
    #[case::ok_not_equal("census.sex != 'F'", Some("false"))]
    #[case::ok_and_or(
        "census.nda or census.ipp == 'IPP1' and not census.nothing",
        Some("true")
    )]
    fn ok_eval(#[case] src: &str, #[case] expected: Option<&str>) {
        assert_eq!(run(src).unwrap().as_deref(), expected);
    }

    #[rstest]
    #[case::err_object("line.medication", Fail::NotText("an object"))]
    #[case::err_list("line.dosages", Fail::NotText("a list"))]
    #[case::err_list_in_concat("'x' ~ line.dosages", Fail::NotText("a list"))]
    #[case::err_join_objects("line.dosages | join(',')", Fail::NotText("an object"))]
    #[case::err_unmapped(
        "census.unknown_sex | map('strict')",
        Fail::Unmapped { map: 1, value: "X".into() }
    )]
    #[case::err_not_a_date("census.ipp | datetime('%Y')", Fail::NotADate)]
    #[case::err_bad_month("'2024-13-01' | date('%Y')", Fail::NotADate)]
    fn err_eval(#[case] src: &str, #[case] expected: Fail) {
        assert_eq!(run(src).unwrap_err(), expected);
    }

    #[rstest]
    #[case::ok_missing("census.nothing", false)]
    #[case::ok_blank("census.nda", false)]
    #[case::ok_blank_spaces("line.dosages[2].text", false)]
    #[case::ok_text("census.ipp", true)]
    #[case::ok_zero("census.weight", false)]
    #[case::ok_true("census.flag", true)]
    #[case::ok_empty_list("prescription.lines[2].dosages", false)]
    #[case::ok_list("line.dosages", true)]
    #[case::ok_object("line.medication", true)]
    #[case::ok_null("prescription.lines[2].medication.display", false)]
    #[case::ok_count_zero("prescription.lines[2].dosages | count", false)]
    #[case::ok_compare("census.sex == 'M'", false)]
    #[case::ok_not("not census.nda", true)]
    fn ok_conditions(#[case] src: &str, #[case] expected: bool) {
        let vars = ["line".to_string()];
        let names = Names {
            inputs: Inputs::Push,
            vars: &vars,
            maps: &[],
        };
        let expr = parse(src, &names).unwrap().expr;
        let ctx = context();
        let tz = TimeZone::UTC;
        let env = Env {
            context: Node::from(&ctx),
            maps: &[],
            tz: &tz,
        };
        let scope = Scope {
            item: Node::from(ctx.pointer("/prescription/lines/0").unwrap()),
            index: 1,
            depth: 0,
            over: "prescription.lines",
            parent: None,
        };
        assert_eq!(truthy(&eval(&expr, &env, Some(&scope)).unwrap()), expected);
    }

    /// Europe/Paris: summer time from 2024-03-31 01:00 UTC (02:00 → 03:00 local), winter
    /// time from 2024-10-27 01:00 UTC (03:00 → 02:00 local).
    #[rstest]
    #[case::ok_winter("2024-01-15T10:00:00Z", "%Y%m%d%H%M%S%z", "20240115110000+0100")]
    #[case::ok_before_spring_gap("2024-03-31T00:59:59Z", "%Y%m%d%H%M%S%z", "20240331015959+0100")]
    #[case::ok_after_spring_gap("2024-03-31T01:00:00Z", "%Y%m%d%H%M%S%z", "20240331030000+0200")]
    #[case::ok_summer_offset_input("2024-07-14T12:00:00+02:00", "%Y%m%d%H%M", "202407141200")]
    #[case::ok_autumn_first_0230("2024-10-27T00:30:00Z", "%Y%m%d%H%M%z", "202410270230+0200")]
    #[case::ok_autumn_second_0230("2024-10-27T01:30:00Z", "%Y%m%d%H%M%z", "202410270230+0100")]
    #[case::ok_civil_in_gap("2024-03-31T02:30:00", "%Y%m%d%H%M%z", "202403310330+0200")]
    #[case::ok_civil_local("2024-07-14T08:15:00", "%Y%m%d%H%M", "202407140815")]
    #[case::ok_date_midnight("2024-07-14", "%Y%m%d%H%M", "202407140000")]
    #[case::ok_hl7_date("19700203", "%Y%m%d", "19700203")]
    #[case::ok_hl7_datetime("202407140815", "%Y%m%d%H%M%S", "20240714081500")]
    #[case::ok_fractional("2024-07-14T06:15:30.250Z", "%Y%m%d%H%M%S", "20240714081530")]
    fn ok_datetime_paris(#[case] input: &str, #[case] format: &str, #[case] expected: &str) {
        let src = format!("'{input}' | datetime('{format}')");
        assert_eq!(run(&src).unwrap().as_deref(), Some(expected));
    }

    #[rstest]
    #[case::ok_date("1970-02-03", "19700203")]
    #[case::ok_late_utc_is_next_day_in_paris("2024-03-31T22:30:00Z", "20240401")]
    #[case::ok_civil("2024-03-31T23:30:00", "20240331")]
    #[case::ok_hl7("19700203", "19700203")]
    fn ok_date_paris(#[case] input: &str, #[case] expected: &str) {
        let src = format!("'{input}' | date('%Y%m%d')");
        assert_eq!(run(&src).unwrap().as_deref(), Some(expected));
    }

    #[test]
    fn ok_datetime_of_context_and_empty() {
        assert_eq!(
            run("message.now | datetime('%Y%m%d%H%M')")
                .unwrap()
                .as_deref(),
            Some("202410270230")
        );
        assert_eq!(run("census.nda | datetime('%Y')").unwrap(), None);
        assert_eq!(run("census.nothing | date('%Y')").unwrap(), None);
    }
}
