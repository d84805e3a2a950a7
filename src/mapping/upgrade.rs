//! `ordobridge mapping upgrade`: a scan-token mapping in the old format (`[fields]` with
//! `from`, `value` and `default`) rewritten in the mapping language, text to text.
//!
//! Each old field becomes one line of the body's `[segment.fields]`:
//!
//! - `{ from = "user.rpps" }` → `{ value = "user.rpps", required = true }` (the old format
//!   refused a launch whose sources were all blank; `required` does the same);
//! - `{ from = ["patient.nda", "patient.ipp"], default = "x" }` →
//!   `"patient.nda | default(patient.ipp) | default('x')"` (the first non-blank wins);
//! - `{ value = "ch-exemple" }` → `"'ch-exemple'"` (a fixed text, in quotes).
//!
//! One difference is flagged in a comment: an empty `default = ""` sent an empty text, and
//! the mapping language leaves empty values out. The result is checked by loading it before
//! it is returned.

use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::context::Inputs;
use super::load::{Report, in_order};
use super::{Mapping, MappingErrors};

/// Rewrites old-format scan-token mapping `text` (read from `file`, named in messages) as a
/// JSON mapping with launch inputs, comments included.
pub fn upgrade_scan_token(text: &str, file: &Path) -> Result<String, MappingErrors> {
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
    let fields = root.get_ref().iter().find(|(k, _)| k.get_ref() == "fields");
    let table = match fields.map(|(_, v)| v) {
        Some(value) => match value.get_ref() {
            DeValue::Table(table) => table,
            other => {
                report.push(
                    Some(value.span()),
                    "fields",
                    format!("expected a table, found {}", other.type_str()),
                );
                return Err(MappingErrors(report.errors));
            }
        },
        None => {
            let message = if root.get_ref().iter().any(|(k, _)| k.get_ref() == "message") {
                "nothing to upgrade: this file is in the mapping language already"
            } else {
                "not an old scan-token mapping: it has no `[fields]`"
            };
            report.push(None, "", message);
            return Err(MappingErrors(report.errors));
        }
    };
    let mut lines = Vec::new();
    for (name, spec) in in_order(table) {
        let key = format!("fields.{}", name.get_ref());
        if let Some(line) = field_line(name.get_ref(), spec, &key, &mut report) {
            lines.push(line);
        }
    }
    if !report.errors.is_empty() {
        return Err(MappingErrors(report.errors));
    }
    let mut out = String::from(HEADER);
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    // What we print must load: a mistake here is ours, reported like the analyst's.
    Mapping::load(&out, file)?;
    Ok(out)
}

const HEADER: &str = "\
# Scan-token request: where each field sent to Posos comes from (POST
# /api/partners/patient/scan-token). Upgraded from the old `[fields]` format by
# `ordobridge mapping upgrade`; the README, \"JSON output and launch mappings\", lists
# the inputs (user.*, patient.*, launch.*) and the expressions.

[message]
format = \"json\"
input = \"launch\"
type = \"scan-token\"

[[segment]]
id = \"/\"                         # the request body

[segment.fields]
";

/// One old field as a line of `[segment.fields]`.
fn field_line(
    name: &str,
    spec: &Spanned<DeValue<'_>>,
    key: &str,
    report: &mut Report<'_>,
) -> Option<String> {
    let DeValue::Table(table) = spec.get_ref() else {
        report.push(
            Some(spec.span()),
            key,
            format!(
                "expected a table such as `{{ from = \"patient.ipp\" }}` or `{{ value = \"ch-exemple\" }}`, found {}",
                spec.get_ref().type_str()
            ),
        );
        return None;
    };
    let (mut from, mut value, mut default) = (None, None, None);
    for (item_name, item) in in_order(table) {
        let item_key = format!("{key}.{}", item_name.get_ref());
        match item_name.get_ref().as_ref() {
            "from" => from = Some(sources(item, &item_key, report)?),
            "value" => value = Some(literal(item, &item_key, report)?),
            "default" => default = Some(literal(item, &item_key, report)?),
            other => {
                report.push(
                    Some(item_name.span()),
                    &item_key,
                    format!("unknown key `{other}`: expected `from`, `value` or `default`"),
                );
                return None;
            }
        }
    }
    let target = json_key(name);
    let expression = match (from, value) {
        (Some(_), Some(_)) | (None, None) => {
            report.push(
                Some(spec.span()),
                key,
                "expected `from` (a source such as `patient.ipp`) or `value` (a literal), not both",
            );
            return None;
        }
        (None, Some(literal)) => {
            return Some(format!("{target} = {}", toml_string(&quote(&literal))));
        }
        (Some(sources), None) => {
            let mut chain = String::new();
            for (i, source) in sources.iter().enumerate() {
                if i > 0 {
                    chain.push_str(" | default(");
                    chain.push_str(source);
                    chain.push(')');
                } else {
                    chain.push_str(source);
                }
            }
            chain
        }
    };
    Some(match default {
        None => format!(
            "{target} = {{ value = {}, required = true }}",
            toml_string(&expression)
        ),
        Some(d) if d.is_empty() => format!(
            "{target} = {}    # was `default = \"\"`: an empty value is now left out of the request",
            toml_string(&expression)
        ),
        Some(d) => format!(
            "{target} = {}",
            toml_string(&format!("{expression} | default({})", quote(&d)))
        ),
    })
}

/// A `from`: one source or a list, each a launch input such as `patient.ipp`.
fn sources(item: &Spanned<DeValue<'_>>, key: &str, report: &mut Report<'_>) -> Option<Vec<String>> {
    let names: Vec<&Spanned<DeValue<'_>>> = match item.get_ref() {
        DeValue::String(_) => vec![item],
        DeValue::Array(items) if !items.is_empty() => items.iter().collect(),
        other => {
            report.push(
                Some(item.span()),
                key,
                format!(
                    "expected a source name or a non-empty list of them, found {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    let roots = Inputs::Launch.roots();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let text = name.get_ref().as_str().map(str::trim).unwrap_or_default();
        let known = text.split_once('.').is_some_and(|(root, rest)| {
            roots
                .iter()
                .any(|r| r.name == root && r.keys.is_some_and(|keys| keys.contains(&rest)))
        });
        if !known {
            report.push(
                Some(name.span()),
                key,
                format!(
                    "unknown source `{}`: expected a launch input such as `patient.ipp`",
                    crate::hl7::readable(text.as_bytes())
                ),
            );
            return None;
        }
        out.push(text.to_string());
    }
    Some(out)
}

/// A literal text, `${…}` refused as the old format did.
fn literal(item: &Spanned<DeValue<'_>>, key: &str, report: &mut Report<'_>) -> Option<String> {
    match item.get_ref() {
        DeValue::String(text) if text.contains("${") => {
            report.push(
                Some(item.span()),
                key,
                "`${…}` is not expanded in mapping files: write the literal value",
            );
            None
        }
        DeValue::String(text) => Some(text.to_string()),
        other => {
            report.push(
                Some(item.span()),
                key,
                format!("expected a string, found {}", other.type_str()),
            );
            None
        }
    }
}

/// A fixed text as an expression: in single quotes, a quote doubled.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The old field name as a key of `[segment.fields]`: bare when it can be, else a quoted
/// JSON pointer so that dots and slashes stay part of the one key.
fn json_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && name != "-";
    if bare {
        name.to_string()
    } else {
        toml_string(&format!("/{}", name.replace('~', "~0").replace('/', "~1")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    const OLD: &str = "[fields]\n\
        first_name = { from = \"user.first_name\" }\n\
        last_name = { from = \"user.last_name\" }\n\
        rpps = { from = \"user.rpps\" }\n\
        facilitySlug = { value = \"ch-exemple\" }\n";

    fn upgrade(tail: &str) -> Result<String, String> {
        upgrade_scan_token(&format!("{OLD}{tail}\n"), Path::new("scan-token.toml"))
            .map_err(|e| e.to_string())
    }

    fn context() -> serde_json::Value {
        json!({
            "user": {"rpps": "10000000001", "first_name": "Paul", "last_name": "DURAND"},
            "patient": {"ipp": "IPP42", "nda": "NDA7", "ins": null, "unit": "CARDIO"},
            "launch": {"id": "launch-1", "guide": null, "ucds": []},
        })
    }

    #[rstest]
    #[case::ok_single("patientId = { from = \"patient.ipp\" }", "patientId = { value = \"patient.ipp\", required = true }", json!("IPP42"))]
    #[case::ok_list("patientId = { from = [\"patient.nda\", \"patient.ipp\"] }", "patientId = { value = \"patient.nda | default(patient.ipp)\", required = true }", json!("NDA7"))]
    #[case::ok_list_skips_blank("patientId = { from = [\"patient.ins\", \"patient.ipp\"] }", "patientId = { value = \"patient.ins | default(patient.ipp)\", required = true }", json!("IPP42"))]
    #[case::ok_default("patientId = { from = \"patient.ins\", default = \"sans-ins\" }", "patientId = \"patient.ins | default('sans-ins')\"", json!("sans-ins"))]
    #[case::ok_literal_with_quote("patientId = { value = \"l'unité\" }", "patientId = \"'l''unité'\"", json!("l'unité"))]
    #[case::ok_launch_id("patientId = { from = \"launch.id\" }", "patientId = { value = \"launch.id\", required = true }", json!("launch-1"))]
    fn ok_upgrade(#[case] tail: &str, #[case] line: &str, #[case] sent: serde_json::Value) {
        let text = upgrade(tail).unwrap();
        assert!(text.contains(&format!("\n{line}\n")), "{text}");
        let mapping = Mapping::load(&text, Path::new("new.toml")).unwrap();
        let body = mapping.apply_json(&context()).unwrap();
        assert_eq!(body["patientId"], sent);
        assert_eq!(body["facilitySlug"], "ch-exemple");
        assert_eq!(body["first_name"], "Paul");
    }

    #[test]
    fn ok_key_with_a_dot_stays_one_key() {
        let text = upgrade(
            "patientId = { from = \"patient.ipp\" }\n\"unit.code\" = { from = \"patient.unit\" }",
        )
        .unwrap();
        assert!(
            text.contains("\n\"/unit.code\" = { value = \"patient.unit\", required = true }\n"),
            "{text}"
        );
        let body = Mapping::load(&text, Path::new("new.toml"))
            .unwrap()
            .apply_json(&context())
            .unwrap();
        assert_eq!(body["unit.code"], "CARDIO");
    }

    #[test]
    fn ok_empty_default_is_flagged() {
        let text = upgrade("patientId = { from = \"patient.ins\", default = \"\" }").unwrap();
        assert!(
            text.contains("patientId = \"patient.ins\"    # was `default = \"\"`: an empty value is now left out of the request"),
            "{text}"
        );
    }

    #[rstest]
    #[case::err_unknown_source(
        "patientId = { from = \"patient.ip\" }",
        "scan-token.toml:6:22: `fields.patientId.from`: unknown source `patient.ip`: expected a launch input such as `patient.ipp`"
    )]
    #[case::err_both(
        "patientId = { from = \"patient.ipp\", value = \"x\" }",
        "scan-token.toml:6:13: `fields.patientId`: expected `from` (a source such as `patient.ipp`) or `value` (a literal), not both"
    )]
    #[case::err_env(
        "patientId = { value = \"${SLUG}\" }",
        "scan-token.toml:6:23: `fields.patientId.value`: `${…}` is not expanded in mapping files: write the literal value"
    )]
    #[case::err_unknown_key(
        "patientId = { form = \"patient.ipp\" }",
        "scan-token.toml:6:15: `fields.patientId.form`: unknown key `form`: expected `from`, `value` or `default`"
    )]
    fn err_upgrade(#[case] tail: &str, #[case] expected: &str) {
        assert_eq!(upgrade(tail).unwrap_err(), expected);
    }

    #[rstest]
    #[case::err_new_format(
        "[message]\nformat = \"json\"\n",
        "scan-token.toml: nothing to upgrade: this file is in the mapping language already"
    )]
    #[case::err_no_fields(
        "[other]\n",
        "scan-token.toml: not an old scan-token mapping: it has no `[fields]`"
    )]
    fn err_not_old(#[case] text: &str, #[case] expected: &str) {
        let err = upgrade_scan_token(text, Path::new("scan-token.toml")).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
}
