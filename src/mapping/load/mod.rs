//! Loading: the TOML text, kept with its spans, is checked and compiled into a [`Mapping`].
//!
//! Every problem is collected with its line, column and dotted key rather than stopping at
//! the first; expressions are parsed here, once, with the names in scope where they are
//! written. Checked at load: the sections and keys, segment ids (the segments of
//! [`SEGMENT_FIELDS`] and Z segments), HL7 paths (segment, occurrence, field range, overlaps,
//! the fields `[message]` owns), functions, map names, date formats, group paths and names,
//! the time zone.

use crate::diagnostics::line_column;
use std::borrow::Cow;
use std::ops::Range;
use std::path::Path as FsPath;

use jiff::tz::TimeZone;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::context::Inputs;
use super::eval::ValueMap;
use super::expr::{self, KEYWORDS, Names, Step};
use super::json::JsonPath;
use super::writer::{Header, Target};
use super::{
    Condition, FieldKind, FieldRule, GroupRule, Item, Mapping, MappingError, MappingErrors,
    OutputFormat, SegmentRule,
};
use crate::hl7::{Charset, Path};
use crate::hprim::HprimPath;

/// The segments a mapping may write and their number of fields (HL7 v2.5; ZBE from IHE PAM
/// France). Other Z segments are accepted without a limit.
const SEGMENT_FIELDS: [(&str, usize); 15] = [
    ("EVN", 7),
    ("MSH", 21),
    ("NTE", 4),
    ("OBR", 49),
    ("OBX", 25),
    ("ORC", 31),
    ("PID", 39),
    ("PV1", 52),
    ("RXE", 44),
    ("RXO", 28),
    ("RXR", 6),
    ("TQ1", 14),
    ("TQ2", 10),
    ("TXA", 23),
    ("ZBE", 9),
];

/// The HPRIM Santé records a mapping may write and their number of fields, the record type
/// being field 1 (HPRIM Santé 2.x, after ASTM E1394). `A` continuations are the builder's.
const HPRIM_RECORDS: [(&str, usize); 6] = [
    ("H", 14),
    ("P", 35),
    ("OBR", 31),
    ("OBX", 14),
    ("C", 5),
    ("L", 6),
];

/// How deep groups may nest (lines × dosages is 2).
const MAX_GROUP_DEPTH: usize = 8;

const DEFAULT_TIMEZONE: &str = "Europe/Paris";

pub(super) type Entry<'t, 'i> = (&'t Spanned<Cow<'i, str>>, &'t Spanned<DeValue<'i>>);

/// The entries of a table in file order (the map itself may be sorted by key).
pub(super) fn in_order<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut entries: Vec<Entry<'t, 'i>> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// Collects located problems while a mapping is checked.
pub(super) struct Report<'t> {
    pub(super) file: &'t FsPath,
    pub(super) text: &'t str,
    pub(super) errors: Vec<MappingError>,
}

impl Report<'_> {
    pub(super) fn push(
        &mut self,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| line_column(self.text, s.start));
        self.errors.push(MappingError {
            file: self.file.to_path_buf(),
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// The text of a string value, or a problem saying what was found.
    fn string<'v>(&mut self, value: &'v Spanned<DeValue<'_>>, key: &str) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s),
            other => {
                self.push(
                    Some(value.span()),
                    key,
                    format!("expected a text in quotes, found {}", other.type_str()),
                );
                None
            }
        }
    }
}

/// Checks and compiles mapping text.
pub(super) fn parse(text: &str, file: &FsPath) -> Result<Mapping, MappingErrors> {
    let mut report = Report {
        file,
        text,
        errors: Vec::new(),
    };
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            report.push(e.span(), "", e.message().trim().to_string());
            return Err(MappingErrors(report.errors));
        }
    };
    if let Some(fields) = old_scan_token(root.get_ref()) {
        report.push(
            Some(fields),
            "fields",
            format!(
                "this is a scan-token mapping in the old format (`[fields]` with `from`, `value` and `default`), which ordobridge no longer reads: run `ordobridge mapping upgrade {}` and replace the file with what it prints (the same request, in the mapping language)",
                file.display()
            ),
        );
        return Err(MappingErrors(report.errors));
    }
    let (mut message, mut segments, mut maps) = (None, None, None);
    for (key, value) in in_order(root.get_ref()) {
        match key.get_ref().as_ref() {
            "message" => message = Some(value),
            "segment" => segments = Some(value),
            "maps" => maps = Some(value),
            other => report.push(
                Some(key.span()),
                other,
                "unknown section: a mapping has `[message]`, `[[segment]]` and `[maps.…]`",
            ),
        }
    }
    let maps = maps.map(|v| read_maps(v, &mut report)).unwrap_or_default();
    let section = read_message(message, &mut report);
    let format = declared_format(message);
    let inputs = section.as_ref().map(|s| s.inputs).unwrap_or_default();
    let mut compiler = Compiler {
        report: &mut report,
        maps: maps.iter().map(|m| m.name.clone()).collect(),
        uses_time: false,
        msh10: false,
        format,
        inputs,
    };
    let when =
        message_when(message).and_then(|value| compiler.condition(value, "message.when", &[]));
    let mut vars = Vec::new();
    let items = match segments {
        Some(value) => compiler.items(value, "segment", &mut vars),
        None => {
            compiler.report.push(
                None,
                "segment",
                "missing `[[segment]]`: list the segments of the message in order",
            );
            Vec::new()
        }
    };
    let (uses_time, msh10) = (compiler.uses_time, compiler.msh10);
    if format == OutputFormat::Hprim {
        if segments.is_some() && !matches!(items.first(), Some(Item::Segment(s)) if s.id == "H") {
            report.push(
                segments.map(Spanned::span),
                "segment",
                "no `H` record first: start the message with an `H` record (H.2, the delimiters, is written by ordobridge)",
            );
        }
        let early_l = items
            .iter()
            .rev()
            .skip(1)
            .any(|item| matches!(item, Item::Segment(s) if s.id == "L"));
        if early_l {
            report.push(
                segments.map(Spanned::span),
                "segment",
                "an `L` record before the end: `L` ends the message, write it once, last",
            );
        }
        if segments.is_some() && !matches!(items.last(), Some(Item::Segment(s)) if s.id == "L") {
            report.push(
                segments.map(Spanned::span),
                "segment",
                "no final `L` record: end the message with an `L` record, outside any group",
            );
        }
    } else if format == OutputFormat::Hl7 && segments.is_some() && !msh10 {
        report.push(
            segments.map(Spanned::span),
            "segment",
            "no `MSH-10`: start with an `MSH` segment that sets `\"MSH-10\" = \"message.control_id\"` (receivers use it to spot duplicates)",
        );
    }
    let tz = match &section {
        Some(section) => time_zone(section, uses_time, &mut report),
        None => TimeZone::UTC,
    };
    match section {
        Some(section) if report.errors.is_empty() => Ok(Mapping {
            message_type: section.message_type,
            format: section.format,
            inputs: section.inputs,
            header: section.header,
            when,
            items,
            maps,
            tz,
        }),
        _ => Err(MappingErrors(report.errors)),
    }
}

/// The `[fields]` of a scan-token mapping in the format ordobridge read before the mapping
/// language served launches too (a file with `[fields]` and neither `[message]` nor
/// `[[segment]]`).
fn old_scan_token(root: &DeTable<'_>) -> Option<Range<usize>> {
    let has = |name: &str| root.iter().any(|(k, _)| k.get_ref() == name);
    if has("message") || has("segment") {
        return None;
    }
    root.iter()
        .find(|(k, _)| k.get_ref() == "fields")
        .map(|(k, _)| k.span())
}

/// `[message] when`, the condition for writing a message at all.
fn message_when<'v, 'i>(
    message: Option<&'v Spanned<DeValue<'i>>>,
) -> Option<&'v Spanned<DeValue<'i>>> {
    let DeValue::Table(table) = message?.get_ref() else {
        return None;
    };
    table
        .iter()
        .find(|(key, _)| key.get_ref() == "when")
        .map(|(_, value)| value)
}

/// `[message]`, checked.
struct MessageSection {
    message_type: String,
    format: OutputFormat,
    inputs: Inputs,
    header: Header,
    timezone: Option<(String, Range<usize>)>,
}

fn read_message(
    value: Option<&Spanned<DeValue<'_>>>,
    report: &mut Report<'_>,
) -> Option<MessageSection> {
    let Some(value) = value else {
        report.push(
            None,
            "message",
            "missing `[message]`: it gives the message `type`, `version` and `charset`",
        );
        return None;
    };
    let DeValue::Table(table) = value.get_ref() else {
        report.push(
            Some(value.span()),
            "message",
            format!("expected a table, found {}", value.get_ref().type_str()),
        );
        return None;
    };
    let (mut message_type, mut version, mut charset, mut timezone) = (None, None, None, None);
    let mut inputs = Inputs::default();
    let mut valid = true;
    // The format decides how `type` and `version` are read: find it first.
    let format = declared_format(Some(value));
    let hprim = format == OutputFormat::Hprim;
    let json = format == OutputFormat::Json;
    for (key, value) in in_order(table) {
        let name = key.get_ref().as_ref();
        let full = format!("message.{name}");
        let span = Some(value.span());
        match name {
            "type" if json => match report.string(value, &full) {
                Some(t) => {
                    let ok = (1..=40).contains(&t.len())
                        && t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                    if ok {
                        message_type = Some((t.to_string(), Vec::new()));
                    } else {
                        report.push(
                            span,
                            &full,
                            format!(
                                "invalid JSON message type `{}`: expected a label of up to 40 letters, digits, `-`, `_` or `.` such as `scan-token`",
                                crate::hl7::readable(t.as_bytes())
                            ),
                        );
                    }
                }
                None => valid = false,
            },
            "version" if json => report.push(
                span,
                &full,
                "a JSON mapping has no version: remove `version`",
            ),
            "charset" if json => report.push(
                span,
                &full,
                "JSON is written in UTF-8: remove `charset`",
            ),
            "input" => match report.string(value, &full) {
                Some(name) => match Inputs::from_name(name) {
                    Some(found) => inputs = found,
                    None => {
                        let known: Vec<String> =
                            Inputs::ALL.iter().map(|i| format!("`{}`", i.name())).collect();
                        report.push(
                            span,
                            &full,
                            format!(
                                "unknown input `{}`: expected {}",
                                crate::hl7::readable(name.as_bytes()),
                                known.join(" or ")
                            ),
                        );
                    }
                },
                None => valid = false,
            },
            "type" if hprim => match report.string(value, &full) {
                Some(t) => {
                    let ok = (1..=10).contains(&t.len())
                        && t.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                    if ok {
                        message_type = Some((t.to_string(), vec![t.to_string()]));
                    } else {
                        report.push(
                            span,
                            &full,
                            format!(
                                "invalid HPRIM message type `{}`: expected up to 10 uppercase letters or digits such as `ORU`",
                                crate::hl7::readable(t.as_bytes())
                            ),
                        );
                    }
                }
                None => valid = false,
            },
            "version" if hprim => report.push(
                span,
                &full,
                "HPRIM carries its version in `H.13` (e.g. `\"H.13\" = \"'H2.2~C'\"`): remove `version`",
            ),
            "type" => match report.string(value, &full) {
                Some(t) => {
                    let parts: Vec<String> = t.split('^').map(str::to_string).collect();
                    let ok = (2..=3).contains(&parts.len())
                        && parts.iter().all(|p| {
                            !p.is_empty()
                                && p.bytes().all(|b| {
                                    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
                                })
                        });
                    if ok {
                        message_type = Some((t.to_string(), parts));
                    } else {
                        report.push(
                            span,
                            &full,
                            format!(
                                "invalid message type `{}`: expected code^event^structure such as `ORM^O01^ORM_O01`",
                                crate::hl7::readable(t.as_bytes())
                            ),
                        );
                    }
                }
                None => valid = false,
            },
            "version" => match report.string(value, &full) {
                Some(v) if !v.trim().is_empty() => {
                    version = Some(v.split('^').map(str::to_string).collect::<Vec<_>>());
                }
                Some(_) => report.push(span, &full, "empty version: write `version = \"2.5\"`"),
                None => valid = false,
            },
            "charset" => match report.string(value, &full) {
                Some(c) => match Charset::from_msh18(c) {
                    Some(cs) if !c.trim().is_empty() => charset = Some(cs),
                    _ => report.push(
                        span,
                        &full,
                        format!(
                            "unknown charset `{}`: expected `8859/1`, `8859/15` or `UNICODE UTF-8`",
                            crate::hl7::readable(c.as_bytes())
                        ),
                    ),
                },
                None => valid = false,
            },
            "timezone" => match report.string(value, &full) {
                Some(tz) => timezone = Some((tz.to_string(), value.span())),
                None => valid = false,
            },
            "format" => match report.string(value, &full) {
                Some("hl7" | "hprim" | "json") => {}
                Some(other) => report.push(
                    span,
                    &full,
                    format!(
                        "unknown format `{}`: expected `hl7`, `hprim` or `json`",
                        crate::hl7::readable(other.as_bytes())
                    ),
                ),
                None => valid = false,
            },
            // Compiled with the segments' expressions (it may use the maps).
            "when" => {}
            other => report.push(
                Some(key.span()),
                &full,
                format!(
                    "unknown key `{other}`: `[message]` has `type`, `version`, `charset`, `timezone`, `format`, `input` and `when`"
                ),
            ),
        }
    }
    if hprim {
        // HPRIM Santé is ISO-8859-1 unless the mapping says otherwise; H.13 holds the version.
        charset = charset.or(Some(Charset::Latin1));
        version = Some(Vec::new());
    }
    if json {
        // A label only (`ordobridge transform` shows it); JSON is UTF-8 and has no version.
        message_type = message_type.or_else(|| Some(("json".to_string(), Vec::new())));
        charset = Some(Charset::Utf8);
        version = Some(Vec::new());
    }
    let type_example = if hprim {
        "type = \"ORU\""
    } else {
        "type = \"ORM^O01^ORM_O01\""
    };
    for (missing, name, example) in [
        (message_type.is_none(), "type", type_example),
        (version.is_none(), "version", "version = \"2.5\""),
        (charset.is_none(), "charset", "charset = \"8859/1\""),
    ] {
        let present = table.iter().any(|(k, _)| k.get_ref() == name);
        if missing && !present {
            report.push(
                Some(value.span()),
                &format!("message.{name}"),
                format!("missing `{name}`: write `{example}`"),
            );
        }
    }
    let ((text, parts), version, charset) = (message_type?, version?, charset?);
    valid.then_some(MessageSection {
        message_type: text,
        format,
        inputs,
        header: Header {
            message_type: parts,
            version,
            charset,
            start: std::sync::OnceLock::new(),
        },
        timezone,
    })
}

/// The output format `[message]` asks for, read before anything else in the file because it
/// decides how segments and paths are checked (HL7 when absent or invalid).
fn declared_format(message: Option<&Spanned<DeValue<'_>>>) -> OutputFormat {
    let format = match message.map(Spanned::get_ref) {
        Some(DeValue::Table(table)) => table.get("format").map(Spanned::get_ref),
        _ => None,
    };
    match format {
        Some(DeValue::String(f)) if f == "hprim" => OutputFormat::Hprim,
        Some(DeValue::String(f)) if f == "json" => OutputFormat::Json,
        _ => OutputFormat::Hl7,
    }
}

fn time_zone(section: &MessageSection, uses_time: bool, report: &mut Report<'_>) -> TimeZone {
    match &section.timezone {
        Some((name, span)) => match TimeZone::get(name) {
            Ok(tz) => tz,
            Err(e) => {
                report.push(
                    Some(span.clone()),
                    "message.timezone",
                    format!(
                        "unknown time zone `{}`: {e}",
                        crate::hl7::readable(name.as_bytes())
                    ),
                );
                TimeZone::UTC
            }
        },
        None if uses_time => match TimeZone::get(DEFAULT_TIMEZONE) {
            Ok(tz) => tz,
            Err(e) => {
                report.push(
                    None,
                    "message.timezone",
                    format!(
                        "time zone `{DEFAULT_TIMEZONE}` is needed by `datetime`/`date` but cannot be loaded (install tzdata): {e}"
                    ),
                );
                TimeZone::UTC
            }
        },
        None => TimeZone::UTC,
    }
}

fn read_maps(value: &Spanned<DeValue<'_>>, report: &mut Report<'_>) -> Vec<ValueMap> {
    let DeValue::Table(table) = value.get_ref() else {
        report.push(
            Some(value.span()),
            "maps",
            format!(
                "expected tables such as `[maps.sex]`, found {}",
                value.get_ref().type_str()
            ),
        );
        return Vec::new();
    };
    let mut maps = Vec::new();
    for (name, entries) in in_order(table) {
        let key = format!("maps.{}", name.get_ref());
        let DeValue::Table(entries) = entries.get_ref() else {
            report.push(
                Some(entries.span()),
                &key,
                format!(
                    "expected a table of codes such as `F = \"F\"`, found {}",
                    entries.get_ref().type_str()
                ),
            );
            continue;
        };
        let mut map = ValueMap {
            name: name.get_ref().to_string(),
            entries: Vec::new(),
            default: None,
        };
        for (code, mapped) in in_order(entries) {
            let code_key = format!("{key}.{}", code.get_ref());
            let Some(mapped) = report.string(mapped, &code_key) else {
                continue;
            };
            if code.get_ref() == "default" {
                map.default = Some(mapped.to_string());
            } else {
                map.entries
                    .push((code.get_ref().to_string(), mapped.to_string()));
            }
        }
        map.entries.sort();
        maps.push(map);
    }
    maps
}

mod fields;
mod segments;

use segments::Compiler;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::Mapping;
    use rstest::rstest;
    use std::path::Path;

    const HEAD: &str = "[message]\n\
        type = \"ORM^O01^ORM_O01\"\n\
        version = \"2.5\"\n\
        charset = \"8859/1\"\n\
        [[segment]]\n\
        id = \"MSH\"\n\
        fields = { \"MSH-10\" = \"message.control_id\" }\n";

    fn load(text: &str) -> Result<Mapping, String> {
        Mapping::load(text, Path::new("mappings/orm.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn ok_minimal() {
        let m = load(HEAD).unwrap();
        assert_eq!(m.message_type(), "ORM^O01^ORM_O01");
    }

    #[rstest]
    #[case::ok_plain_table(
        "[[segment]]\nid = \"PID\"\n[segment.fields]\n\"PID-3.1\" = \"census.ipp\"\n"
    )]
    #[case::ok_required(
        "[[segment]]\nid = \"PID\"\nfields = { \"PID-3.1\" = { value = \"census.ipp\", required = true } }\n"
    )]
    #[case::ok_z_segment("[[segment]]\nid = \"ZXY\"\nfields = { \"ZXY-99\" = \"'x'\" }\n")]
    #[case::ok_disjoint_components(
        "[[segment]]\nid = \"PID\"\nfields = { \"PID-3.1\" = \"'a'\", \"PID-3.4\" = \"'b'\", \"PID-3[2].1\" = \"'c'\" }\n"
    )]
    #[case::ok_group_as(
        "[[segment]]\nfor_each = \"prescription.lines\"\nas = \"rx\"\n[[segment.segment]]\nid = \"ORC\"\nfields = { \"ORC-2\" = \"rx.id ~ rx_index\" }\n"
    )]
    #[case::ok_maps(
        "[[segment]]\nid = \"PID\"\nfields = { \"PID-8\" = \"census.sex | map('sex')\" }\n[maps.sex]\nF = \"F\"\ndefault = \"U\"\n"
    )]
    #[case::ok_timezone_and_format(
        "[[segment]]\nid = \"EVN\"\nfields = { \"EVN-2\" = \"message.now | datetime('%Y%m%d%H%M')\" }\n"
    )]
    fn ok_load(#[case] tail: &str) {
        load(&format!("{HEAD}{tail}")).unwrap();
    }

    // HEAD has 7 lines; the tail starts on line 8.
    #[rstest]
    #[case::err_unknown_function(
        "[[segment]]\nid = \"PID\"\nfields = { \"PID-8\" = \"census.sex | mapp('sex')\" }\n",
        "mappings/orm.toml:10:22: `segment[2].fields.PID-8`: unknown function `mapp` at character 14: expected one of `count`, `date`, `datetime`, `default`, `first`, `join`, `lower`, `map`, `replace`, `trim`, `truncate`, `upper`"
    )]
    #[case::err_unknown_map(
        "[[segment]]\nid = \"PID\"\nfields = { \"PID-8\" = \"census.sex | map('sex')\" }\n",
        "mappings/orm.toml:10:22: `segment[2].fields.PID-8`: unknown map `sex` at character 18: the file defines no `[maps.…]` tables"
    )]
    #[case::err_bad_path(
        "[[segment]]\nid = \"PID\"\nfields = { \"PID-x\" = \"census.ipp\" }\n",
        "mappings/orm.toml:10:12: `segment[2].fields.PID-x`: invalid path `PID-x`: expected a field number after `-`"
    )]
    #[case::err_wrong_segment(
        "[[segment]]\nid = \"PV1\"\nfields = { \"PID-3\" = \"census.ipp\" }\n",
        "mappings/orm.toml:10:12: `segment[2].fields.PID-3`: `PID-3` is in segment `PID`, but this is segment `PV1`"
    )]
    #[case::err_out_of_range(
        "[[segment]]\nid = \"NTE\"\nfields = { \"NTE-5\" = \"'x'\" }\n",
        "mappings/orm.toml:10:12: `segment[2].fields.NTE-5`: `NTE-5` is out of range: `NTE` has 4 fields"
    )]
    #[case::err_occurrence(
        "[[segment]]\nid = \"NTE\"\nfields = { \"NTE[2]-3\" = \"'x'\" }\n",
        "mappings/orm.toml:10:12: `segment[2].fields.NTE[2]-3`: `NTE[2]-3` names a segment occurrence: the order of segments in the file decides it, remove `[2]`"
    )]
    #[case::err_overlap(
        "[[segment]]\nid = \"PID\"\nfields = { \"PID-3\" = \"'a'\", \"PID-3.1\" = \"'b'\" }\n",
        "mappings/orm.toml:10:29: `segment[2].fields.PID-3.1`: `PID-3.1` overlaps `PID-3` in the same segment: set each place once"
    )]
    #[case::err_overlap_first_repetition(
        "[[segment]]\nid = \"PID\"\nfields = { \"PID-3.1\" = \"'a'\", \"PID-3[1].1\" = \"'b'\" }\n",
        "mappings/orm.toml:10:31: `segment[2].fields.PID-3[1].1`: `PID-3[1].1` overlaps `PID-3.1` in the same segment: set each place once"
    )]
    #[case::err_unsupported_segment(
        "[[segment]]\nid = \"PV2\"\n",
        "mappings/orm.toml:9:6: `segment[2].id`: unsupported segment `PV2`: expected one of EVN, MSH, NTE, OBR, OBX, ORC, PID, PV1, RXE, RXO, RXR, TQ1, TQ2, TXA, ZBE or a Z segment"
    )]
    #[case::err_lowercase_segment(
        "[[segment]]\nid = \"pid\"\n",
        "mappings/orm.toml:9:6: `segment[2].id`: invalid segment id `pid`: expected 3 uppercase letters or digits, such as `PID`"
    )]
    #[case::err_msh_again(
        "[[segment]]\nid = \"MSH\"\n",
        "mappings/orm.toml:9:6: `segment[2].id`: `MSH` must be the first segment, outside any group"
    )]
    #[case::err_for_each_not_a_path(
        "[[segment]]\nfor_each = \"prescription.lines | first\"\n[[segment.segment]]\nid = \"ORC\"\n",
        "mappings/orm.toml:9:12: `segment[2].for_each`: `prescription.lines | first` is not a path: `for_each` takes the path of a list, such as `prescription.lines`"
    )]
    #[case::err_for_each_unknown_root(
        "[[segment]]\nfor_each = \"bundle.lines\"\n[[segment.segment]]\nid = \"ORC\"\n",
        "mappings/orm.toml:9:12: `segment[2].for_each`: unknown name `bundle` at character 1: expected `prescription`, `census`, `message`, `document`"
    )]
    #[case::err_item_outside_group(
        "[[segment]]\nid = \"ORC\"\nfields = { \"ORC-2\" = \"line.id\" }\n",
        "mappings/orm.toml:10:22: `segment[2].fields.ORC-2`: unknown name `line` at character 1: expected `prescription`, `census`, `message`, `document`"
    )]
    #[case::err_group_without_segments(
        "[[segment]]\nfor_each = \"prescription.lines\"\n",
        "mappings/orm.toml:9:12: `segment[2]`: a group needs its segments: add `[[segment[2].segment]]` entries"
    )]
    #[case::err_cannot_name_items(
        "[[segment]]\nfor_each = \"prescription.data\"\n[[segment.segment]]\nid = \"ORC\"\n",
        "mappings/orm.toml:9:12: `segment[2].for_each`: cannot name the items of `prescription.data`: add `as = \"item\"`"
    )]
    #[case::err_shadowing(
        "[[segment]]\nfor_each = \"prescription.lines\"\n[[segment.segment]]\nfor_each = \"line.lines\"\n[[segment.segment.segment]]\nid = \"NTE\"\n",
        "mappings/orm.toml:11:12: `segment[2].segment[1].for_each`: item name `line` is already used by an enclosing group: choose another with `as`"
    )]
    #[case::err_id_and_for_each(
        "[[segment]]\nid = \"ORC\"\nfor_each = \"prescription.lines\"\n",
        "mappings/orm.toml:10:12: `segment[2].for_each`: an entry has `id` (a segment) or `for_each` (a group), not both"
    )]
    #[case::err_neither(
        "[[segment]]\nwhen = \"census.ipp\"\n",
        "mappings/orm.toml:8:1: `segment[2]`: expected `id` (a segment such as `PID`) or `for_each` (a group repeated over a list)"
    )]
    #[case::err_unknown_key(
        "[[segment]]\nid = \"PID\"\nfeilds = {}\n",
        "mappings/orm.toml:10:1: `segment[2].feilds`: unknown key `feilds`: a segment has `id`, `when` and `fields`; a group has `for_each`, `as`, `when` and `segment`"
    )]
    #[case::err_unquoted_dotted_path(
        "[[segment]]\nid = \"PID\"\n[segment.fields]\nPID-3.1 = \"census.ipp\"\n",
        "mappings/orm.toml:11:1: `segment[2].fields.PID-3`: HL7 paths that contain dots must be quoted, e.g. `\"PID-3.1\" = \"census.ipp\"`"
    )]
    #[case::err_required_not_bool(
        "[[segment]]\nid = \"PID\"\nfields = { \"PID-3\" = { value = \"census.ipp\", required = \"yes\" } }\n",
        "mappings/orm.toml:10:57: `segment[2].fields.PID-3.required`: expected `true` or `false`, found string"
    )]
    #[case::err_value_not_string(
        "[[segment]]\nid = \"PID\"\nfields = { \"PID-3\" = 42 }\n",
        "mappings/orm.toml:10:22: `segment[2].fields.PID-3`: expected an expression in quotes such as `\"census.ipp\"` (fixed text: `\"'PI'\"`), found integer"
    )]
    #[case::err_when(
        "[[segment]]\nid = \"NTE\"\nwhen = \"census.sex = 'F'\"\n",
        "mappings/orm.toml:10:8: `segment[2].when`: unexpected `=` at character 12: compare with `==`"
    )]
    #[case::err_map_value_not_text(
        "[maps.sex]\nF = 2\n",
        "mappings/orm.toml:9:5: `maps.sex.F`: expected a text in quotes, found integer"
    )]
    #[case::err_unknown_section(
        "[mapping]\n",
        "mappings/orm.toml:8:2: `mapping`: unknown section: a mapping has `[message]`, `[[segment]]` and `[maps.…]`"
    )]
    fn err_load(#[case] tail: &str, #[case] expected: &str) {
        assert_eq!(load(&format!("{HEAD}{tail}")).unwrap_err(), expected);
    }

    const HPRIM_HEAD: &str = "[message]\n\
        format = \"hprim\"\n\
        type = \"ORU\"\n\
        [[segment]]\n\
        id = \"H\"\n\
        fields = { \"H.3\" = \"message.control_id\" }\n";

    const HPRIM_END: &str = "[[segment]]\nid = \"L\"\nfields = { \"L.4\" = \"'1'\" }\n";

    #[rstest]
    #[case::ok_records(
        "[[segment]]\nid = \"P\"\nfields = { \"P.6.1\" = \"census.family\", \"P.6.2\" = \"census.given\", \"P-3\" = \"census.ipp\" }\n"
    )]
    #[case::ok_group("[[segment]]\nfor_each = \"prescription.lines\"\n[[segment.segment]]\nid = \"OBX\"\nfields = { \"OBX.2\" = \"line_index\", \"OBR.5[2].1\" = \"'x'\" }\n".replace("OBR.5[2].1", "OBX.4[2].1").leak())]
    fn ok_load_hprim(#[case] middle: &str) {
        let m = load(&format!("{HPRIM_HEAD}{middle}{HPRIM_END}")).unwrap();
        assert_eq!(m.message_type(), "ORU");
        assert_eq!(m.format(), super::super::OutputFormat::Hprim);
    }

    #[rstest]
    #[case::err_unknown_record(
        "[[segment]]\nid = \"PID\"\n",
        "mappings/orm.toml:8:6: `segment[2].id`: unsupported HPRIM record `PID`: expected one of H, P, OBR, OBX, C, L"
    )]
    #[case::err_hl7_path(
        "[[segment]]\nid = \"P\"\nfields = { \"PID-3\" = \"census.ipp\" }\n",
        "mappings/orm.toml:9:12: `segment[2].fields.PID-3`: `PID-3` is in record `PID`, but this is record `P`"
    )]
    #[case::err_record_type_field(
        "[[segment]]\nid = \"P\"\nfields = { \"P.1\" = \"'X'\" }\n",
        "mappings/orm.toml:9:12: `segment[2].fields.P.1`: `P.1` is the record type, written by ordobridge"
    )]
    #[case::err_out_of_range(
        "[[segment]]\nid = \"C\"\nfields = { \"C.6\" = \"'X'\" }\n",
        "mappings/orm.toml:9:12: `segment[2].fields.C.6`: `C.6` is out of range: `C` has 5 fields"
    )]
    #[case::err_occurrence(
        "[[segment]]\nid = \"P\"\nfields = { \"P[2].3\" = \"'X'\" }\n",
        "mappings/orm.toml:9:12: `segment[2].fields.P[2].3`: `P[2].3` names a record occurrence: the order of records in the file decides it, remove `[2]`"
    )]
    #[case::err_overlap(
        "[[segment]]\nid = \"P\"\nfields = { \"P.6\" = \"'X'\", \"P.6.1\" = \"'Y'\" }\n",
        "mappings/orm.toml:9:27: `segment[2].fields.P.6.1`: `P.6.1` overlaps `P.6` in the same record: set each place once"
    )]
    #[case::err_second_h(
        "[[segment]]\nid = \"H\"\n",
        "mappings/orm.toml:8:6: `segment[2].id`: `H` must be the first record, outside any group"
    )]
    #[case::err_l_in_group(
        "[[segment]]\nfor_each = \"prescription.lines\"\n[[segment.segment]]\nid = \"L\"\n",
        "mappings/orm.toml:10:6: `segment[2].segment[1].id`: `L` ends the message: put it last, outside any group"
    )]
    fn err_load_hprim(#[case] middle: &str, #[case] expected: &str) {
        assert_eq!(
            load(&format!("{HPRIM_HEAD}{middle}{HPRIM_END}")).unwrap_err(),
            expected
        );
    }

    #[rstest]
    #[case::err_h2(
        "[message]\nformat = \"hprim\"\ntype = \"ORU\"\n[[segment]]\nid = \"H\"\nfields = { \"H.2\" = \"'^~'\" }\n[[segment]]\nid = \"L\"\n",
        "mappings/orm.toml:6:12: `segment[1].fields.H.2`: `H.2` is the delimiters (`~^\\&`), written by ordobridge"
    )]
    #[case::err_no_h_no_l(
        "[message]\nformat = \"hprim\"\ntype = \"ORU\"\n[[segment]]\nid = \"P\"\n",
        "mappings/orm.toml:4:1: `segment`: no `H` record first: start the message with an `H` record (H.2, the delimiters, is written by ordobridge)\n\
         mappings/orm.toml:4:1: `segment`: no final `L` record: end the message with an `L` record, outside any group"
    )]
    #[case::err_message(
        "[message]\ntype = \"ORU^R01\"\nversion = \"2.5\"\nformat = \"hprim\"\n[[segment]]\nid = \"H\"\n[[segment]]\nid = \"L\"\n",
        "mappings/orm.toml:2:8: `message.type`: invalid HPRIM message type `ORU^R01`: expected up to 10 uppercase letters or digits such as `ORU`\n\
         mappings/orm.toml:3:11: `message.version`: HPRIM carries its version in `H.13` (e.g. `\"H.13\" = \"'H2.2~C'\"`): remove `version`"
    )]
    #[case::err_l_twice(
        "[message]\nformat = \"hprim\"\ntype = \"ORU\"\n[[segment]]\nid = \"H\"\n[[segment]]\nid = \"L\"\n[[segment]]\nid = \"L\"\n",
        "mappings/orm.toml:4:1: `segment`: an `L` record before the end: `L` ends the message, write it once, last"
    )]
    #[case::err_missing_type(
        "[message]\nformat = \"hprim\"\n[[segment]]\nid = \"H\"\n[[segment]]\nid = \"L\"\n",
        "mappings/orm.toml:1:1: `message.type`: missing `type`: write `type = \"ORU\"`"
    )]
    fn err_load_hprim_whole(#[case] text: &str, #[case] expected: &str) {
        assert_eq!(load(text).unwrap_err(), expected);
    }

    #[rstest]
    #[case::err_msh9(
        "\"MSH-9\" = \"'ADT'\"",
        "mappings/orm.toml:7:45: `segment[1].fields.MSH-9`: `MSH-9` is written from `[message].type`: remove it here"
    )]
    #[case::err_msh2(
        "\"MSH-2\" = \"'x'\"",
        "mappings/orm.toml:7:45: `segment[1].fields.MSH-2`: `MSH-2` is the delimiters (`|^~\\&`), written by ordobridge"
    )]
    #[case::err_msh18(
        "\"MSH-18\" = \"'x'\"",
        "mappings/orm.toml:7:45: `segment[1].fields.MSH-18`: `MSH-18` is written from `[message].charset`: remove it here"
    )]
    fn err_msh_fields(#[case] extra: &str, #[case] expected: &str) {
        let text = HEAD.replace(
            "\"MSH-10\" = \"message.control_id\" }",
            &format!("\"MSH-10\" = \"message.control_id\", {extra} }}"),
        );
        assert_eq!(load(&text).unwrap_err(), expected);
    }

    #[rstest]
    #[case::err_no_message(
        "[[segment]]\nid = \"MSH\"\nfields = { \"MSH-10\" = \"message.control_id\" }\n",
        "mappings/orm.toml: `message`: missing `[message]`: it gives the message `type`, `version` and `charset`"
    )]
    #[case::err_message_fields(
        "[message]\ntype = \"ORM\"\ncharset = \"latin1\"\nformat = \"xml\"\ncolour = 1\n[[segment]]\nid = \"MSH\"\nfields = { \"MSH-10\" = \"message.control_id\" }\n",
        "mappings/orm.toml:2:8: `message.type`: invalid message type `ORM`: expected code^event^structure such as `ORM^O01^ORM_O01`\n\
         mappings/orm.toml:3:11: `message.charset`: unknown charset `latin1`: expected `8859/1`, `8859/15` or `UNICODE UTF-8`\n\
         mappings/orm.toml:4:10: `message.format`: unknown format `xml`: expected `hl7`, `hprim` or `json`\n\
         mappings/orm.toml:5:1: `message.colour`: unknown key `colour`: `[message]` has `type`, `version`, `charset`, `timezone`, `format`, `input` and `when`\n\
         mappings/orm.toml:1:1: `message.version`: missing `version`: write `version = \"2.5\"`"
    )]
    #[case::err_no_msh10(
        "[message]\ntype = \"ORM^O01\"\nversion = \"2.5\"\ncharset = \"8859/1\"\n[[segment]]\nid = \"PID\"\n",
        "mappings/orm.toml:5:1: `segment`: no `MSH-10`: start with an `MSH` segment that sets `\"MSH-10\" = \"message.control_id\"` (receivers use it to spot duplicates)"
    )]
    #[case::err_timezone(
        "[message]\ntype = \"ORM^O01\"\nversion = \"2.5\"\ncharset = \"8859/1\"\ntimezone = \"Europe/Pariss\"\n[[segment]]\nid = \"MSH\"\nfields = { \"MSH-10\" = \"message.control_id\" }\n",
        "PREFIX:mappings/orm.toml:5:12: `message.timezone`: unknown time zone `Europe/Pariss`: "
    )]
    #[case::err_syntax("[message\n", "PREFIX:mappings/orm.toml:1:")]
    #[case::err_single_bracket_segment(
        "[message]\ntype = \"ORM^O01\"\nversion = \"2.5\"\ncharset = \"8859/1\"\n[segment]\nid = \"MSH\"\n",
        "mappings/orm.toml:5:1: `segment`: expected a list of segments (`[[segment]]`, with two brackets), found table\n\
         mappings/orm.toml:5:1: `segment`: no `MSH-10`: start with an `MSH` segment that sets `\"MSH-10\" = \"message.control_id\"` (receivers use it to spot duplicates)"
    )]
    fn err_load_whole(#[case] text: &str, #[case] expected: &str) {
        let got = load(text).unwrap_err();
        match expected.strip_prefix("PREFIX:") {
            Some(prefix) => assert!(got.starts_with(prefix), "{got}"),
            None => assert_eq!(got, expected),
        }
    }

    #[test]
    fn err_every_problem_is_reported() {
        let tail = "[[segment]]\nid = \"PID\"\nfields = { \"PID-40\" = \"census.ipp\", \"PID-8\" = \"census.sex | map('x')\" }\n\
                    [[segment]]\nid = \"PV2\"\n";
        let got = load(&format!("{HEAD}{tail}")).unwrap_err();
        assert_eq!(got.lines().count(), 3, "{got}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn never_panics_on_text(s in "\\PC{0,200}") {
                let _ = load(&s);
            }

            #[test]
            fn never_panics_on_mutated_mapping(
                cut in 0usize..400,
                insert in "[\\[\\]{}=\",.a-zA-Z0-9|'~ -]{0,12}",
            ) {
                let text = format!(
                    "{HEAD}[[segment]]\nfor_each = \"prescription.lines\"\n[[segment.segment]]\nid = \"NTE\"\nwhen = \"line.text\"\nfields = {{ \"NTE-3\" = \"line.text | upper\" }}\n"
                );
                let at = text
                    .char_indices()
                    .map(|(i, _)| i)
                    .nth(cut % text.chars().count())
                    .unwrap_or(0);
                let mutated = format!("{}{insert}{}", &text[..at], &text[at..]);
                let _ = load(&mutated);
            }
        }
    }

    const JSON_HEAD: &str =
        "[message]\nformat = \"json\"\ninput = \"launch\"\n[[segment]]\nid = \"/\"\n";

    #[rstest]
    #[case::err_type_in_hl7(
        "HL7",
        "mappings/orm.toml:10:46: `segment[2].fields.PID-3.type`: `type` belongs to JSON fields (`[message] format = \"json\"`): HL7 and HPRIM values are text"
    )]
    #[case::err_unknown_type(
        "fields = { a = { value = \"user.rpps\", type = \"int\" } }",
        "mappings/orm.toml:6:46: `segment[1].fields.a.type`: unknown type `int`: expected `string`, `number`, `bool` or `array`"
    )]
    #[case::err_field_appends(
        "fields = { \"a[]\" = \"user.rpps\" }",
        "mappings/orm.toml:6:12: `segment[1].fields.a[]`: `a[]` adds a list item: only a segment `id` may (`id = \"a[]\"`), its fields then fill the item"
    )]
    #[case::err_field_is_root(
        "fields = { \"/\" = \"user.rpps\" }",
        "mappings/orm.toml:6:12: `segment[1].fields./`: `/` is the segment's object itself: name a key in it, such as `patientId`"
    )]
    #[case::err_overlap(
        "fields = { patient = \"user.rpps\", \"patient.id\" = \"patient.ipp\" }",
        "mappings/orm.toml:6:35: `segment[1].fields.patient.id`: `patient.id` overlaps `patient` in the same segment: set each place once"
    )]
    #[case::err_unquoted_dotted_key(
        "[segment.fields]\npatient.id = \"patient.ipp\"",
        "mappings/orm.toml:7:1: `segment[1].fields.patient`: JSON paths that contain dots must be quoted, e.g. `\"patient.id\" = \"patient.ipp\"`"
    )]
    #[case::err_unknown_launch_key(
        "fields = { a = \"patient.ipn\" }",
        "mappings/orm.toml:6:16: `segment[1].fields.a`: unknown name `patient.ipn` at character 1: expected `patient.ipp`, `patient.nda`, `patient.ins`, `patient.family`, `patient.given`, `patient.birth_date`, `patient.sex`, `patient.unit`"
    )]
    #[case::err_push_root_in_launch(
        "fields = { a = \"census.ipp\" }",
        "mappings/orm.toml:6:16: `segment[1].fields.a`: unknown name `census` at character 1: expected `user`, `patient`, `launch` (`census` is an input of push mappings: set `[message] input = \"push\"`)"
    )]
    #[case::err_bad_segment_id(
        "[[segment]]\nid = \"a..b\"",
        "mappings/orm.toml:7:6: `segment[2].id`: `a..b` has an empty key (a JSON segment `id` is the object its fields go into: `/` for the body)"
    )]
    #[case::err_fields_not_a_table(
        "fields = 3",
        "mappings/orm.toml:6:10: `segment[1].fields`: expected a table of JSON paths and expressions, such as `{ patientId = \"patient.ipp\" }`, found integer"
    )]
    fn err_load_json(#[case] tail: &str, #[case] expected: &str) {
        let text = if tail == "HL7" {
            format!(
                "{HEAD}[[segment]]\nid = \"PID\"\nfields = {{ \"PID-3\" = {{ value = \"census.ipp\", type = \"number\" }} }}\n"
            )
        } else {
            format!("{JSON_HEAD}{tail}\n")
        };
        assert_eq!(load(&text).unwrap_err(), expected);
    }

    #[rstest]
    #[case::err_message_keys(
        "[message]\nformat = \"json\"\nversion = \"2.5\"\ncharset = \"8859/1\"\ninput = \"bundle\"\ntype = \"a b\"\n[[segment]]\nid = \"/\"\n",
        "mappings/orm.toml:3:11: `message.version`: a JSON mapping has no version: remove `version`\n\
         mappings/orm.toml:4:11: `message.charset`: JSON is written in UTF-8: remove `charset`\n\
         mappings/orm.toml:5:9: `message.input`: unknown input `bundle`: expected `push` or `launch`\n\
         mappings/orm.toml:6:8: `message.type`: invalid JSON message type `a b`: expected a label of up to 40 letters, digits, `-`, `_` or `.` such as `scan-token`"
    )]
    #[case::err_launch_root_in_push(
        "[message]\nformat = \"json\"\n[[segment]]\nid = \"/\"\nfields = { a = \"user.rpps\" }\n",
        "mappings/orm.toml:5:16: `segment[1].fields.a`: unknown name `user` at character 1: expected `prescription`, `census`, `message`, `document` (`user` is an input of launch mappings: set `[message] input = \"launch\"`)"
    )]
    #[case::err_old_scan_token(
        "# old\n[fields]\nrpps = { from = \"user.rpps\" }\n",
        "mappings/orm.toml:2:2: `fields`: this is a scan-token mapping in the old format (`[fields]` with `from`, `value` and `default`), which ordobridge no longer reads: run `ordobridge mapping upgrade mappings/orm.toml` and replace the file with what it prints (the same request, in the mapping language)"
    )]
    fn err_load_json_whole(#[case] text: &str, #[case] expected: &str) {
        assert_eq!(load(text).unwrap_err(), expected);
    }
}
