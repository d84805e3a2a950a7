//! Declarative mapping files: one TOML file per output message, written and read by interface
//! analysts, compiled once at start into a [`Mapping`] and applied to every bundle as a pure
//! function of an input context (a `serde_json::Value`).
//!
//! # The file
//!
//! ```toml
//! [message]
//! type = "ORM^O01^ORM_O01"      # written in MSH-9
//! version = "2.5"               # MSH-12
//! charset = "8859/1"            # output encoding, written in MSH-18 (8859/1, 8859/15, UNICODE UTF-8)
//! timezone = "Europe/Paris"     # for `datetime` and `date` (this is the default)
//!
//! [[segment]]
//! id = "MSH"
//! fields = { "MSH-3" = "'ORDOBRIDGE'", "MSH-7" = "message.now | datetime('%Y%m%d%H%M%S')",
//!            "MSH-10" = "message.control_id" }
//!
//! [[segment]]
//! id = "PID"
//! fields = { "PID-3.1" = "census.ipp", "PID-3.5" = "'PI'",
//!            "PID-5.1" = { value = "census.family | upper", required = true },
//!            "PID-8" = "census.sex | map('sex')" }
//!
//! [[segment]]                       # a group: its segments repeat for each prescription line
//! for_each = "prescription.lines"   # binds `line` and `line_index` (1, 2, …)
//!
//!   [[segment.segment]]
//!   id = "ORC"
//!   fields = { "ORC-1" = "'NW'", "ORC-2" = "prescription.id ~ '-' ~ line_index" }
//!
//!   [[segment.segment]]             # a nested group, for each dosage step of the line
//!   for_each = "line.dosages"       # binds `dosage` and `dosage_index`
//!
//!     [[segment.segment.segment]]
//!     id = "NTE"
//!     when = "dosage.text"          # written only when the condition holds
//!     fields = { "NTE-1" = "dosage_index", "NTE-3" = "dosage.text" }
//!
//! [maps.sex]
//! F = "F"
//! M = "M"
//! default = "U"                     # for other values and for empty ones
//! ```
//!
//! - Segments and groups are one ordered list (`[[segment]]`, nested as `[[segment.segment]]`),
//!   so the order in the file is the order in the message. An entry with `id` is a segment;
//!   an entry with `for_each` is a group, repeated for each item of that list (`as = "name"`
//!   names the item; by default the list's name without its final `s`). A group may have a
//!   `when` too, checked for each item.
//! - `fields` keys are HL7 paths in the segment (`PID-3[2].1`); values are expressions, or
//!   `{ value = "…", required = true }` to refuse a message whose value is empty. Empty values
//!   are not written. Escaping (`|^~\&`, line breaks) is done by the HL7 builder.
//! - MSH-1, MSH-2 are the delimiters; MSH-9, MSH-12, MSH-18 come from `[message]`; MSH-10 must
//!   be set (`message.control_id`: receivers use it to spot duplicates).
//! - Maps translate codes; a value not in a map without `default` fails the message.
//! - `format = "hprim"` in `[message]` writes HPRIM Santé instead (see
//!   `mappings/hprim-oru.toml`): `type` is a label such as `ORU`, there is no `version` (write
//!   it in `H.13`), `charset` defaults to `8859/1`. Entries are records (`H`, `P`, `OBR`,
//!   `OBX`, `C`, `L`), `H` first and `L` last outside any group; keys are HPRIM paths where
//!   the record type is field 1 (`P.6.1`, `OBX.6`), and `H.2` (the delimiters `~^\&`) is
//!   written by ordobridge. The [`crate::hprim::HprimBuilder`] escapes values, splits long
//!   records into `A` records and ends records with CR LF. `L.4` (the count of `P` records)
//!   is not computed: readers check it, so set it.
//! - `format = "json"` writes a JSON body (the Posos launch requests, see
//!   `mappings/scan-token.toml`): an entry's `id` is the object its fields go into (`/` the
//!   body, `patient` or `/patient` a nested object, `items[]` or `/items/-` a new object
//!   appended to a list), keys are dotted paths or JSON pointers ([`JsonPath`]), and a field
//!   may say `type = "number"`, `"bool"` or `"array"` (default `"string"`). `type` is an
//!   optional label; there is no `version` or `charset` (JSON is UTF-8).
//! - `input` in `[message]` says which context the expressions read: `push` (the default:
//!   `prescription`, `census`, `message`, see [`PushContext`]) or `launch` (`user`,
//!   `patient`, `launch`, see [`LaunchInput`]; their keys are checked at load).
//!
//! # Expressions
//!
//! Paths into the context (`prescription.lines`, `census.ipp`, `message.now`, `document.title`
//! for the documents of `$send-to-ehr` (see `engine::documents`), group items such
//! as `line.medication.code`, `line.dosages[1].text` with 1-based indexes, `…lines[].id` for
//! every item), texts in quotes, numbers, `~` to concatenate, `==`/`!=`, `and`/`or`/`not`,
//! and pipes to functions: `default(x)`, `map('name')`, `upper`, `lower`, `trim`,
//! `truncate(n)`, `join(', ')`, `datetime('%Y%m%d%H%M')`, `date('%Y%m%d')`,
//! `replace('a', 'b')`, `first`, `count`. `datetime` and `date` read RFC 3339 timestamps, ISO
//! dates and date-times and HL7 `YYYYMMDD[HHMM[SS]]`, and convert instants to the mapping's
//! time zone (Europe/Paris) with its summer time.
//!
//! # Errors
//!
//! Loading reports every problem as `file:line:col: `key`: message`. Applying fails on the
//! first problem, naming the field, the group items (`prescription.lines[2]`) and the
//! expression; input values appear in messages only for unmapped codes (no patient data).
//!
//! # Layout
//!
//! - `load`: TOML (spanned) to a checked [`Mapping`]; segment field-count table.
//! - `expr`: the expression language, parsed into a tree at load.
//! - `eval`: evaluation over the context; values borrow from it.
//! - `context`: the input contexts: [`PushContext`], built by the push endpoint once per
//!   bundle, and [`LaunchInput`], built for each launch; [`Inputs`] names them.
//! - `writer`: [`OutputWriter`], the HL7 writer over [`crate::hl7::MessageBuilder`] and the
//!   HPRIM writer over [`crate::hprim::HprimBuilder`].
//! - `json`: [`JsonPath`] and the JSON writer (pure: it builds a `serde_json::Value`).
//! - `upgrade`: [`upgrade_scan_token`], the old scan-token format rewritten in this language.
//!
//! Nothing here reads files: the caller passes the text and the file name for messages
//! (`crate::config::read_mapping` reads and loads).

mod context;
mod eval;
mod expr;
mod json;
mod load;
mod upgrade;
mod view;
mod writer;

use std::fmt;
use std::path::Path;

use jiff::tz::TimeZone;
use serde_json::Value;

use crate::hl7::BuildError;
use crate::hprim::HprimError;
use eval::{Env, Fail, Scope, Val as Eval, ValueMap};
use expr::{Expr, PathExpr};
use json::JsonWriter;
use writer::{Header, Hl7Writer, HprimWriter};

pub use context::{
    Inputs, LAUNCH_KEYS, LAUNCH_PATIENT_KEYS, LAUNCH_USER_KEYS, LaunchInput, LaunchPatient,
    LaunchUser, PushContext, census_from_bundle,
};
pub use json::{JsonPath, JsonPathError, JsonWriteError};
pub use upgrade::upgrade_scan_token;
pub use view::{AsNode, Context, List, Node, Record};
pub use writer::{OutputWriter, Target};

/// A compiled mapping file, immutable and shareable between threads; apply it to every
/// bundle.
#[derive(Debug, Clone)]
pub struct Mapping {
    message_type: String,
    format: OutputFormat,
    /// `[message] input`: the context the expressions read.
    inputs: Inputs,
    header: Header,
    /// `[message] when`: no message at all for a context where it is false.
    when: Option<Condition>,
    items: Vec<Item>,
    maps: Vec<ValueMap>,
    tz: TimeZone,
}

/// What a mapping writes, from `[message] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// HL7v2 (`format = "hl7"`, the default): segments, `PID-5.1` paths, MSH from `[message]`.
    #[default]
    Hl7,
    /// HPRIM Santé (`format = "hprim"`): records, `P.6.1` paths, for `*.HPR` drop folders.
    Hprim,
    /// JSON (`format = "json"`): a request body, `patient.id` or `/patient/id` paths, typed
    /// values.
    Json,
}

/// A segment or a group, in file order.
#[derive(Debug, Clone)]
enum Item {
    Segment(SegmentRule),
    Group(GroupRule),
}

#[derive(Debug, Clone)]
struct SegmentRule {
    id: String,
    when: Option<Condition>,
    fields: Vec<FieldRule>,
}

#[derive(Debug, Clone)]
struct Condition {
    expr: Expr,
    source: Box<str>,
}

#[derive(Debug, Clone)]
struct FieldRule {
    target: Target,
    expr: Expr,
    /// The expression as written, for errors.
    source: Box<str>,
    required: bool,
    /// What the value is written as (JSON only; text elsewhere).
    kind: FieldKind,
}

/// `type` of a JSON field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum FieldKind {
    /// `"string"` (the default): the text.
    #[default]
    Text,
    /// `"number"`: a JSON number, or text that reads as one.
    Number,
    /// `"bool"`: `true`/`false`, from a JSON boolean, a comparison or the text
    /// `true`/`false`.
    Bool,
    /// `"array"`: a list; its empty items are left out, and it is written even when empty.
    List,
}

impl FieldKind {
    const NAMES: [(&'static str, FieldKind); 4] = [
        ("string", FieldKind::Text),
        ("number", FieldKind::Number),
        ("bool", FieldKind::Bool),
        ("array", FieldKind::List),
    ];
}

#[derive(Debug, Clone)]
struct GroupRule {
    for_each: PathExpr,
    /// Nesting depth, 0 for a top-level group.
    depth: usize,
    when: Option<Condition>,
    items: Vec<Item>,
}

/// One problem in a mapping file, located in the file (the report configuration uses too).
pub use crate::diagnostics::Diagnostic as MappingError;
/// Every problem found in a mapping file, one per line when displayed, so an analyst fixes
/// them in one pass.
pub use crate::diagnostics::Diagnostics as MappingErrors;

/// Where applying a mapping failed: what was being written, inside which group items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The field (`` `RXO-1.2` ``), or the condition or list being read
    /// (`` `when` of segment `NTE` ``, `` `for_each` of group `line.dosages` ``).
    pub place: String,
    /// Enclosing groups, outermost first: the list's path and the 1-based item.
    pub groups: Vec<(String, usize)>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.place)?;
        for (i, (list, index)) in self.groups.iter().enumerate() {
            f.write_str(if i == 0 { " in " } else { ", " })?;
            write!(f, "{list}[{index}]")?;
        }
        Ok(())
    }
}

/// Why a mapping could not produce a message for one input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A field marked `required = true` has no value.
    #[error("{at}: required value is missing: `{expr}` is empty")]
    Required {
        /// Where.
        at: Location,
        /// The field's expression.
        expr: String,
    },
    /// A list or an object where text is needed.
    #[error(
        "{at}: `{expr}` gives {found}, expected text: use a field of it, or `join`, `first` or `count`"
    )]
    NotText {
        /// Where.
        at: Location,
        /// The expression.
        expr: String,
        /// `a list` or `an object`.
        found: &'static str,
    },
    /// A code that a map has no entry for, and the map has no `default`.
    #[error("{at}: value `{value}` is not in map `{map}`, which has no `default`")]
    Unmapped {
        /// Where.
        at: Location,
        /// The map's name.
        map: String,
        /// The code, readable.
        value: String,
    },
    /// `datetime` or `date` on text that is not a date (the text is not shown: it may be PHI).
    #[error(
        "{at}: `{expr}` is not a date: expected an RFC 3339 timestamp, `YYYY-MM-DD` or HL7 `YYYYMMDD[HHMM[SS]]`"
    )]
    NotADate {
        /// Where.
        at: Location,
        /// The expression.
        expr: String,
    },
    /// A group's `for_each` value is not a list.
    #[error("{at}: `{expr}` gives {found}, expected a list")]
    NotAList {
        /// Where.
        at: Location,
        /// The `for_each` path.
        expr: String,
        /// What it gave.
        found: &'static str,
    },
    /// The writer refused a segment or a value (e.g. a character the charset lacks).
    #[error("{at}: {source}")]
    Write {
        /// Where.
        at: Location,
        /// The writer's reason.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A JSON field of `type = "number"` whose value is not a number (the value is not shown:
    /// it may be PHI).
    #[error("{at}: `{expr}` is not a number")]
    NotANumber {
        /// Where.
        at: Location,
        /// The expression.
        expr: String,
    },
    /// A JSON field of `type = "bool"` whose value is not `true` or `false`.
    #[error("{at}: `{expr}` is not `true` or `false`")]
    NotABool {
        /// Where.
        at: Location,
        /// The expression.
        expr: String,
    },
    /// The finished message could not be encoded.
    #[error("cannot encode the message: {0}")]
    Encode(#[source] BuildError),
    /// The finished HPRIM message could not be built (a misplaced record, a missing `L`).
    #[error("cannot build the HPRIM message: {0}")]
    EncodeHprim(#[source] HprimError),
}

impl Mapping {
    /// Checks and compiles mapping text; `file` names it in messages (`file:line:col`). The
    /// caller reads the file: this module does no I/O.
    pub fn load(text: &str, file: &Path) -> Result<Mapping, MappingErrors> {
        load::parse(text, file)
    }

    /// Whether the mapping has a `[message] when`.
    pub fn has_condition(&self) -> bool {
        self.when.is_some()
    }

    /// The context this mapping's expressions read (`[message] input`).
    pub fn inputs(&self) -> Inputs {
        self.inputs
    }

    /// The keys of the body that a JSON mapping may write (a field of the body, or the first
    /// key of a segment's object), in file order; empty for HL7 and HPRIM. A launch checks
    /// with it, at start, that the request it sends will have its required fields.
    pub fn json_keys(&self) -> Vec<String> {
        fn walk(items: &[Item], out: &mut Vec<String>) {
            for item in items {
                match item {
                    Item::Segment(segment) => {
                        let Ok(path) = JsonPath::parse(&segment.id) else {
                            continue;
                        };
                        let first: Vec<String> = match path.keys().next() {
                            Some(key) => vec![key.to_owned()],
                            None => segment
                                .fields
                                .iter()
                                .filter_map(|f| f.target.json_path())
                                .filter_map(|p| p.keys().next().map(str::to_owned))
                                .collect(),
                        };
                        for key in first {
                            if !out.contains(&key) {
                                out.push(key);
                            }
                        }
                    }
                    Item::Group(group) => walk(&group.items, out),
                }
            }
        }
        let mut out = Vec::new();
        if self.format == OutputFormat::Json {
            walk(&self.items, &mut out);
        }
        out
    }

    /// The message type as written in `[message]`, e.g. `ORM^O01^ORM_O01`.
    pub fn message_type(&self) -> &str {
        &self.message_type
    }

    /// Whether the mapping writes HL7v2 or HPRIM Santé (drop folders name files after it).
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Whether this mapping writes a message for `context` (`[message] when`; always when the
    /// mapping has no such condition). A prescription without lines, for instance, makes no
    /// order message: an `OMP^O09` without an order is not a valid message.
    pub fn applies<C: Context + ?Sized>(&self, context: &C) -> Result<bool, ApplyError> {
        let Some(when) = &self.when else {
            return Ok(true);
        };
        let env = Env {
            context: context.root(),
            maps: &self.maps,
            tz: &self.tz,
        };
        let value = eval::eval(&when.expr, &env, None)
            .map_err(|f| self.fail(f, "`[message] when`".to_string(), &when.source, None))?;
        Ok(eval::truthy(&value))
    }

    /// Builds the message (HL7v2 or HPRIM Santé) for one input context, encoded in the
    /// mapping's charset. It does not look at `[message] when`: ask [`Mapping::applies`] first.
    pub fn apply<C: Context + ?Sized>(&self, context: &C) -> Result<Vec<u8>, ApplyError> {
        match self.format {
            OutputFormat::Hl7 => {
                let mut writer = Hl7Writer::new(&self.header).map_err(ApplyError::Encode)?;
                self.write_to(context, &mut writer)?;
                writer.finish().map_err(ApplyError::Encode)
            }
            OutputFormat::Hprim => {
                let mut writer = HprimWriter::new(self.header.charset);
                self.write_to(context, &mut writer)?;
                writer.finish().map_err(ApplyError::EncodeHprim)
            }
            OutputFormat::Json => {
                let body = self.apply_json(context)?;
                Ok(body.to_string().into_bytes())
            }
        }
    }

    /// Builds the JSON body of a JSON mapping for one input context. Like
    /// [`Mapping::apply`], it does not look at `[message] when`.
    pub fn apply_json<C: Context + ?Sized>(&self, context: &C) -> Result<Value, ApplyError> {
        let mut writer = JsonWriter::default();
        self.write_to(context, &mut writer)?;
        Ok(writer.finish())
    }

    /// Evaluates the mapping for one input context into any writer; its paths are in the
    /// mapping's notation (HL7 or HPRIM).
    pub fn write_to<C: Context + ?Sized, W: OutputWriter + ?Sized>(
        &self,
        context: &C,
        writer: &mut W,
    ) -> Result<(), ApplyError> {
        let env = Env {
            context: context.root(),
            maps: &self.maps,
            tz: &self.tz,
        };
        self.run(&self.items, &env, None, writer)
    }

    fn run<'a, W: OutputWriter + ?Sized>(
        &'a self,
        items: &'a [Item],
        env: &Env<'a>,
        scope: Option<&Scope<'_, 'a>>,
        writer: &mut W,
    ) -> Result<(), ApplyError> {
        for item in items {
            match item {
                Item::Segment(segment) => self.segment(segment, env, scope, writer)?,
                Item::Group(group) => {
                    let list = eval::resolve(&group.for_each, env, scope);
                    let items = match list {
                        Eval::Missing | Eval::Json(Node::Null) => continue,
                        Eval::Json(items) if items.is_list() => items,
                        other => {
                            let found = match other {
                                Eval::Json(object) if object.is_object() => "an object",
                                _ => "text",
                            };
                            return Err(ApplyError::NotAList {
                                at: location(
                                    format!("`for_each` of group `{}`", group.for_each.text),
                                    scope,
                                ),
                                expr: group.for_each.text.to_string(),
                                found,
                            });
                        }
                    };
                    for (i, item) in items.items().into_iter().flatten().enumerate() {
                        let inner = Scope {
                            item,
                            index: i + 1,
                            depth: group.depth,
                            over: &group.for_each.text,
                            parent: scope,
                        };
                        if let Some(when) = &group.when {
                            let place = || format!("`when` of group `{}`", group.for_each.text);
                            let value = eval::eval(&when.expr, env, Some(&inner))
                                .map_err(|f| self.fail(f, place(), &when.source, Some(&inner)))?;
                            if !eval::truthy(&value) {
                                continue;
                            }
                        }
                        self.run(&group.items, env, Some(&inner), writer)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn segment<'a, W: OutputWriter + ?Sized>(
        &'a self,
        segment: &'a SegmentRule,
        env: &Env<'a>,
        scope: Option<&Scope<'_, 'a>>,
        writer: &mut W,
    ) -> Result<(), ApplyError> {
        if let Some(when) = &segment.when {
            let place = || format!("`when` of segment `{}`", segment.id);
            let value = eval::eval(&when.expr, env, scope)
                .map_err(|f| self.fail(f, place(), &when.source, scope))?;
            if !eval::truthy(&value) {
                return Ok(());
            }
        }
        writer
            .start_segment(&segment.id)
            .map_err(|e| ApplyError::Write {
                at: location(format!("segment `{}`", segment.id), scope),
                source: Box::new(e),
            })?;
        for field in &segment.fields {
            let place = || format!("`{}`", field.target);
            if field.kind != FieldKind::Text {
                self.typed_field(field, env, scope, writer)?;
                continue;
            }
            let value = eval::eval(&field.expr, env, scope)
                .and_then(eval::non_blank)
                .map_err(|f| self.fail(f, place(), &field.source, scope))?;
            match value {
                Some(text) => writer
                    .set(&field.target, &text)
                    .map_err(|e| ApplyError::Write {
                        at: location(place(), scope),
                        source: Box::new(e),
                    })?,
                None if field.required => {
                    return Err(ApplyError::Required {
                        at: location(place(), scope),
                        expr: field.source.to_string(),
                    });
                }
                None => {}
            }
        }
        Ok(())
    }

    /// A JSON field of `type` number, bool or array.
    fn typed_field<'a, W: OutputWriter + ?Sized>(
        &'a self,
        field: &'a FieldRule,
        env: &Env<'a>,
        scope: Option<&Scope<'_, 'a>>,
        writer: &mut W,
    ) -> Result<(), ApplyError> {
        let at = || location(format!("`{}`", field.target), scope);
        let expr = || field.source.to_string();
        let value = eval::eval(&field.expr, env, scope)
            .and_then(|value| match field.kind {
                FieldKind::List => eval::list(value).map(|items| {
                    (!items.is_empty() || !field.required).then_some(Value::Array(items))
                }),
                FieldKind::Number => eval::number(value),
                FieldKind::Bool => eval::boolean(value),
                FieldKind::Text => {
                    eval::non_blank(value).map(|t| t.map(|t| Value::String(t.into_owned())))
                }
            })
            .map_err(|f| self.fail(f, format!("`{}`", field.target), &field.source, scope))?;
        match value {
            // `number` and `boolean` give `null` for a value of the wrong kind.
            Some(Value::Null) if field.kind == FieldKind::Number => Err(ApplyError::NotANumber {
                at: at(),
                expr: expr(),
            }),
            Some(Value::Null) => Err(ApplyError::NotABool {
                at: at(),
                expr: expr(),
            }),
            Some(value) => writer
                .set_value(&field.target, value)
                .map_err(|e| ApplyError::Write {
                    at: at(),
                    source: Box::new(e),
                }),
            None if field.required => Err(ApplyError::Required {
                at: at(),
                expr: expr(),
            }),
            None => Ok(()),
        }
    }

    fn fail(
        &self,
        fail: Fail,
        place: String,
        source: &str,
        scope: Option<&Scope<'_, '_>>,
    ) -> ApplyError {
        let at = location(place, scope);
        let expr = source.to_string();
        match fail {
            Fail::NotText(found) => ApplyError::NotText { at, expr, found },
            Fail::NotADate => ApplyError::NotADate { at, expr },
            Fail::Unmapped { map, value } => ApplyError::Unmapped {
                at,
                map: self
                    .maps
                    .get(map)
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                value: crate::hl7::readable_prefix(value.as_bytes(), 64),
            },
        }
    }
}

/// The location of `place` inside the groups of `scope`, outermost first.
fn location(place: String, scope: Option<&Scope<'_, '_>>) -> Location {
    let mut groups = Vec::new();
    let mut current = scope;
    while let Some(s) = current {
        groups.push((s.over.to_string(), s.index));
        current = s.parent;
    }
    groups.reverse();
    Location { place, groups }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    const NESTED: &str = r#"
[message]
type = "OMP^O09^OMP_O09"
version = "2.5"
charset = "UNICODE UTF-8"

[[segment]]
id = "MSH"
fields = { "MSH-10" = "message.control_id" }

[[segment]]
for_each = "prescription.lines"
when = "line.status != 'cancelled'"

  [[segment.segment]]
  id = "RXO"
  fields = { "RXO-1.1" = { value = "line.code", required = true }, "RXO-1.3" = "line.system | map('system')" }

  [[segment.segment]]
  for_each = "line.dosages"
  as = "step"

    [[segment.segment.segment]]
    id = "NTE"
    when = "step.text"
    fields = { "NTE-1" = "line_index ~ '.' ~ step_index", "NTE-3" = "step.text" }

[maps.system]
"urn:oid:1.2.250.1.213.2.3.1" = "CIP"
"#;

    fn nested() -> Mapping {
        Mapping::load(NESTED, Path::new("omp.toml")).unwrap()
    }

    fn apply_text(mapping: &Mapping, context: &Value) -> Result<String, String> {
        mapping
            .apply(context)
            .map(|bytes| String::from_utf8(bytes).unwrap())
            .map_err(|e| e.to_string())
    }

    const CIP: &str = "urn:oid:1.2.250.1.213.2.3.1";

    /// `[message] when`: a mapping may decline a context as a whole (an order message for a
    /// bundle with no lines); an unknown name in it is a load error like anywhere else.
    #[rstest]
    #[case::ok_lines(json!({"prescription": {"lines": [{"code": "1"}]}}), true)]
    #[case::ok_no_lines(json!({"prescription": {"lines": []}}), false)]
    #[case::ok_missing(json!({"prescription": {}}), false)]
    fn ok_message_when(#[case] context: Value, #[case] applies: bool) {
        let text = NESTED.replace(
            "charset = \"UNICODE UTF-8\"",
            "charset = \"UNICODE UTF-8\"\nwhen = \"prescription.lines\"",
        );
        let mapping = Mapping::load(&text, Path::new("omp.toml")).unwrap();
        assert_eq!(mapping.applies(&context).unwrap(), applies);
        assert!(nested().applies(&context).unwrap(), "no `when`: always");
    }

    #[test]
    fn err_message_when_unknown_name() {
        let text = NESTED.replace(
            "charset = \"UNICODE UTF-8\"",
            "charset = \"UNICODE UTF-8\"\nwhen = \"lines\"",
        );
        let err = Mapping::load(&text, Path::new("omp.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "omp.toml:6:8: `message.when`: unknown name `lines` at character 1: expected `prescription`, `census`, `message`, `document`"
        );
    }

    #[test]
    fn ok_nested_groups_conditions_and_indexes() {
        let context = json!({
            "message": {"control_id": "C1"},
            "prescription": {"lines": [
                {"code": "A", "system": CIP, "dosages": [{"text": "a1"}, {"text": ""}, {"text": "a3"}]},
                {"code": "X", "status": "cancelled", "dosages": [{"text": "x1"}]},
                {"code": "B", "dosages": [{"text": "b1|b^2"}]},
                {"code": "C"}
            ]}
        });
        assert_eq!(
            apply_text(&nested(), &context).unwrap(),
            "MSH|^~\\&|||||||OMP^O09^OMP_O09|C1||2.5||||||UNICODE UTF-8\r\
             RXO|A^^CIP\rNTE|1.1||a1\rNTE|1.3||a3\r\
             RXO|B\rNTE|3.1||b1\\F\\b\\S\\2\r\
             RXO|C\r"
        );
    }

    #[test]
    fn ok_missing_list_writes_no_group() {
        let context = json!({"message": {"control_id": "C1"}, "prescription": {}});
        assert_eq!(
            apply_text(&nested(), &context).unwrap(),
            "MSH|^~\\&|||||||OMP^O09^OMP_O09|C1||2.5||||||UNICODE UTF-8\r"
        );
    }

    #[rstest]
    #[case::err_required(
        json!({"prescription": {"lines": [{"code": "A"}, {"code": " "}]}}),
        "`RXO-1.1` in prescription.lines[2]: required value is missing: `line.code` is empty"
    )]
    #[case::err_unmapped(
        json!({"prescription": {"lines": [{"code": "A", "system": "http://snomed.info/sct"}]}}),
        "`RXO-1.3` in prescription.lines[1]: value `http://snomed.info/sct` is not in map `system`, which has no `default`"
    )]
    #[case::err_not_a_list(
        json!({"prescription": {"lines": {"code": "A"}}}),
        "`for_each` of group `prescription.lines`: `prescription.lines` gives an object, expected a list"
    )]
    #[case::err_nested_not_a_list(
        json!({"prescription": {"lines": [{"code": "A", "dosages": "1 cp"}]}}),
        "`for_each` of group `line.dosages` in prescription.lines[1]: `line.dosages` gives text, expected a list"
    )]
    #[case::err_not_text(
        json!({"prescription": {"lines": [{"code": "A", "dosages": [{"text": ["a"]}]}]}}),
        "`NTE-3` in prescription.lines[1], line.dosages[1]: `step.text` gives a list, expected text: use a field of it, or `join`, `first` or `count`"
    )]
    #[case::err_group_when(
        json!({"prescription": {"lines": [{"code": "A", "status": {"x": 1}}]}}),
        "`when` of group `prescription.lines` in prescription.lines[1]: `line.status != 'cancelled'` gives an object, expected text: use a field of it, or `join`, `first` or `count`"
    )]
    fn err_apply(#[case] context: Value, #[case] expected: &str) {
        assert_eq!(apply_text(&nested(), &context).unwrap_err(), expected);
    }

    #[test]
    fn err_charset_names_the_field() {
        let text = NESTED.replace("UNICODE UTF-8", "8859/1");
        let mapping = Mapping::load(&text, Path::new("omp.toml")).unwrap();
        let context = json!({"prescription": {"lines": [
            {"code": "A", "dosages": [{"text": "ok"}, {"text": "≥ 2"}]}
        ]}});
        assert_eq!(
            apply_text(&mapping, &context).unwrap_err(),
            "`NTE-3` in prescription.lines[1], line.dosages[2]: character `≥` (U+2265) at char 0 cannot be encoded in 8859/1"
        );
    }

    #[test]
    fn err_not_a_date_hides_the_value() {
        let text = NESTED.replace(
            "\"NTE-3\" = \"step.text\"",
            "\"NTE-3\" = \"step.text | date('%Y%m%d')\"",
        );
        let mapping = Mapping::load(&text, Path::new("omp.toml")).unwrap();
        let context = json!({"prescription": {"lines": [
            {"code": "A", "dosages": [{"text": "Dupont 12/05"}]}
        ]}});
        assert_eq!(
            apply_text(&mapping, &context).unwrap_err(),
            "`NTE-3` in prescription.lines[1], line.dosages[1]: `step.text | date('%Y%m%d')` is not a date: expected an RFC 3339 timestamp, `YYYY-MM-DD` or HL7 `YYYYMMDD[HHMM[SS]]`"
        );
    }

    /// Records what the evaluator hands to a writer, as an HPRIM writer would receive it.
    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl OutputWriter for Recorder {
        type Error = std::fmt::Error;

        fn start_segment(&mut self, id: &str) -> Result<(), Self::Error> {
            self.0.push(id.to_string());
            Ok(())
        }

        fn set(&mut self, target: &Target, text: &str) -> Result<(), Self::Error> {
            if text == "refuse" {
                return Err(std::fmt::Error);
            }
            self.0.push(format!("{target}={text}"));
            Ok(())
        }
    }

    #[test]
    fn ok_write_to_any_writer() {
        let context = json!({"message": {"control_id": "C1"}, "prescription": {"lines": [
            {"code": "A", "dosages": [{"text": "a|1"}]}
        ]}});
        let mut recorder = Recorder::default();
        nested().write_to(&context, &mut recorder).unwrap();
        assert_eq!(
            recorder.0,
            [
                "MSH",
                "MSH-10=C1",
                "RXO",
                "RXO-1.1=A",
                "NTE",
                "NTE-1=1.1",
                "NTE-3=a|1"
            ]
        );
        let context = json!({"prescription": {"lines": [{"code": "refuse"}]}});
        let err = nested()
            .write_to(&context, &mut Recorder::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`RXO-1.1` in prescription.lines[1]: an error occurred when formatting an argument"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                "[a-zA-Z0-9 |^~&\\\\é≥-]{0,8}".prop_map(Value::String),
                Just(json!(CIP)),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::btree_map(
                        prop_oneof![
                            Just("lines".to_string()),
                            Just("code".to_string()),
                            Just("system".to_string()),
                            Just("status".to_string()),
                            Just("dosages".to_string()),
                            Just("text".to_string()),
                        ],
                        inner,
                        0..4
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn apply_never_panics(lines in json(), control in json()) {
                let context = json!({
                    "message": {"control_id": control},
                    "prescription": {"lines": lines},
                });
                let _ = nested().apply(&context);
                let latin1 = NESTED.replace("UNICODE UTF-8", "8859/1");
                let mapping = Mapping::load(&latin1, Path::new("omp.toml")).unwrap();
                let _ = mapping.apply(&context);
            }
        }
    }

    const JSON: &str = r#"
[message]
format = "json"
input = "launch"
type = "example"

[[segment]]
id = "/"
[segment.fields]
rpps = { value = "user.rpps", required = true }
"patient.id" = "patient.nda | default(patient.ipp)"
"/count" = { value = "launch.ucds | count", type = "number" }
known = { value = "patient.ipp == 'IPP1'", type = "bool" }
ucds = { value = "launch.ucds", type = "array" }
slug = "'ch-exemple'"
unit = "patient.unit"

[[segment]]
for_each = "launch.ucds"
  [[segment.segment]]
  id = "/items/-"
  fields = { code = "ucd", position = { value = "ucd_index", type = "number" } }
"#;

    fn launch(ipp: &str, ucds: &[&str]) -> Value {
        LaunchInput {
            user: LaunchUser {
                rpps: "10000000001".into(),
                first_name: "Paul".into(),
                last_name: "DURAND".into(),
            },
            patient: LaunchPatient {
                ipp: Some(ipp.into()),
                ..LaunchPatient::default()
            },
            id: "l-1".into(),
            guide: None,
            ucds: ucds.iter().map(|u| (*u).to_string()).collect(),
        }
        .to_value()
    }

    #[rstest]
    #[case::ok_items(
        launch("IPP1", &["A", "B"]),
        json!({"rpps": "10000000001", "patient": {"id": "IPP1"}, "count": 2, "known": true,
               "ucds": ["A", "B"], "slug": "ch-exemple",
               "items": [{"code": "A", "position": 1}, {"code": "B", "position": 2}]})
    )]
    #[case::ok_empty_list_is_written(
        launch("IPP2", &[]),
        json!({"rpps": "10000000001", "patient": {"id": "IPP2"}, "count": 0, "known": false,
               "ucds": [], "slug": "ch-exemple"})
    )]
    fn ok_json(#[case] context: Value, #[case] expected: Value) {
        let mapping = Mapping::load(JSON, Path::new("example.toml")).unwrap();
        assert_eq!(mapping.format(), OutputFormat::Json);
        assert_eq!(mapping.inputs(), Inputs::Launch);
        assert_eq!(mapping.message_type(), "example");
        assert_eq!(
            mapping.json_keys(),
            [
                "rpps", "patient", "count", "known", "ucds", "slug", "unit", "items"
            ]
        );
        let body = mapping.apply_json(&context).unwrap();
        assert_eq!(body, expected);
        assert_eq!(
            mapping.apply(&context).unwrap(),
            body.to_string().into_bytes()
        );
    }

    #[rstest]
    #[case::err_required(
        "rpps = { value = \"user.rpps\", required = true }",
        "`rpps`: required value is missing: `user.rpps` is empty"
    )]
    #[case::err_not_a_number(
        "\"/count\" = { value = \"patient.ipp\", type = \"number\" }",
        "`/count`: `patient.ipp` is not a number"
    )]
    #[case::err_not_a_bool(
        "known = { value = \"patient.ipp\", type = \"bool\" }",
        "`known`: `patient.ipp` is not `true` or `false`"
    )]
    #[case::err_list_of_objects(
        "ucds = { value = \"patient\", type = \"array\" }",
        "`ucds`: `patient` gives an object, expected text: use a field of it, or `join`, `first` or `count`"
    )]
    #[case::err_required_list(
        "ucds = { value = \"launch.ucds\", type = \"array\", required = true }",
        "`ucds`: required value is missing: `launch.ucds` is empty"
    )]
    #[case::err_written_twice(
        "slug = \"'a'\"\n[[segment]]\nid = \"/\"\nfields = { slug = \"'b'\" }",
        "`slug`: `/slug` is written twice: set each place once"
    )]
    fn err_json(#[case] fields: &str, #[case] expected: &str) {
        let text = format!(
            "[message]\nformat = \"json\"\ninput = \"launch\"\n[[segment]]\nid = \"/\"\n[segment.fields]\n{fields}\n"
        );
        let mapping = Mapping::load(&text, Path::new("example.toml")).unwrap();
        let mut context = launch("IPP1", &[]);
        context["user"]["rpps"] = Value::Null;
        assert_eq!(
            mapping.apply_json(&context).unwrap_err().to_string(),
            expected
        );
    }

    #[test]
    fn ok_number_and_bool_from_text() {
        let text = "[message]\nformat = \"json\"\n[[segment]]\nid = \"/\"\n\
            fields = { n = { value = \"census.n\", type = \"number\" }, f = { value = \"census.f\", type = \"number\" }, \
            b = { value = \"census.b\", type = \"bool\" }, e = { value = \"census.e\", type = \"number\" } }\n";
        let mapping = Mapping::load(text, Path::new("push.toml")).unwrap();
        assert_eq!(mapping.inputs(), Inputs::Push);
        let body = mapping
            .apply_json(&json!({"census": {"n": " 42 ", "f": "1.5", "b": "false", "e": " "}}))
            .unwrap();
        assert_eq!(body, json!({"n": 42, "f": 1.5, "b": false}));
    }

    #[test]
    fn ok_mapping_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Mapping>();
        check::<ApplyError>();
        check::<MappingErrors>();
    }

    #[test]
    fn ok_location_display() {
        let at = Location {
            place: "`NTE-3`".into(),
            groups: vec![("prescription.lines".into(), 2), ("line.dosages".into(), 3)],
        };
        assert_eq!(
            at.to_string(),
            "`NTE-3` in prescription.lines[2], line.dosages[3]"
        );
    }
}
