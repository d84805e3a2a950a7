//! The scan-token mapping: which launch value feeds each field of the Posos scan-token request
//! (`POST /api/partners/patient/scan-token`), read from `mappings/scan-token.toml`.
//!
//! The file is meant to be read and edited by an interface analyst:
//!
//! ```toml
//! [fields]
//! first_name   = { from = "user.first_name" }
//! facilitySlug = { value = "ch-exemple" }
//! patientId    = { from = ["patient.ipp", "patient.nda"], default = "inconnu" }
//! ```
//!
//! - `from`: one source, or a list tried in order (the first non-blank value wins);
//! - `value`: a literal, sent as it is;
//! - `default`: a literal used when every `from` source is blank.
//!
//! Values are literals only: `${VAR}` is not expanded here (the daemon's configuration file is
//! the place for environment variables) and is refused so nobody expects it. The fields
//! `first_name`, `last_name`, `rpps`, `facilitySlug` and `patientId` are required; other
//! fields are sent as well, for Posos API additions. The file is loaded and validated once at
//! start into a [`ScanTokenMapping`]; every problem is reported with its file, line and key.
//! Applying the mapping ([`ScanTokenMapping::apply`]) is a pure function.

use crate::config::line_column;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::launch::{PatientContext, PractitionerContext};
use super::query::escape_text;

/// The fields the scan-token request must carry.
pub const REQUIRED_FIELDS: [&str; 5] = [
    "first_name",
    "last_name",
    "rpps",
    "facilitySlug",
    "patientId",
];

/// The mapping shipped with ordobridge, for defaults and tests.
const SHIPPED: &str = include_str!("../../mappings/scan-token.toml");

/// A launch value a mapping field can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    UserFirstName,
    UserLastName,
    UserRpps,
    PatientIpp,
    PatientNda,
    PatientIns,
    PatientFamily,
    PatientGiven,
    PatientBirthDate,
    PatientSex,
    PatientUnit,
    /// A fresh id per launch (also the correlation id of the logs and error pages).
    LaunchId,
}

impl Source {
    /// Every source, in the order the documentation lists them.
    pub const ALL: [Source; 12] = [
        Source::UserFirstName,
        Source::UserLastName,
        Source::UserRpps,
        Source::PatientIpp,
        Source::PatientNda,
        Source::PatientIns,
        Source::PatientFamily,
        Source::PatientGiven,
        Source::PatientBirthDate,
        Source::PatientSex,
        Source::PatientUnit,
        Source::LaunchId,
    ];

    /// The name written in mapping files, e.g. `patient.ipp`.
    pub fn name(self) -> &'static str {
        match self {
            Source::UserFirstName => "user.first_name",
            Source::UserLastName => "user.last_name",
            Source::UserRpps => "user.rpps",
            Source::PatientIpp => "patient.ipp",
            Source::PatientNda => "patient.nda",
            Source::PatientIns => "patient.ins",
            Source::PatientFamily => "patient.family",
            Source::PatientGiven => "patient.given",
            Source::PatientBirthDate => "patient.birth_date",
            Source::PatientSex => "patient.sex",
            Source::PatientUnit => "patient.unit",
            Source::LaunchId => "launch.id",
        }
    }

    /// The source a mapping file names, if it exists.
    pub fn from_name(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where one field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRule {
    /// The first non-blank source, else `default`.
    From {
        sources: Vec<Source>,
        default: Option<String>,
    },
    /// A literal.
    Value(String),
}

/// One field of the scan-token request and its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMapping {
    /// The JSON key sent to Posos, e.g. `facilitySlug`.
    pub field: String,
    pub rule: FieldRule,
}

/// A validated scan-token mapping, ready to apply to every launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanTokenMapping {
    fields: Vec<FieldMapping>,
}

/// Everything known about one launch, as the mapping sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchValues {
    /// The user who launches; blank names mean unknown.
    pub user: PractitionerContext,
    /// The patient; blank identifiers mean unknown (a fallback launch may know only one).
    pub patient: PatientContext,
    /// The fresh id of this launch.
    pub launch_id: String,
}

impl LaunchValues {
    /// The value of `source`, or `None` when it is unknown or blank.
    pub fn get(&self, source: Source) -> Option<&str> {
        let value = match source {
            Source::UserFirstName => Some(self.user.given.as_str()),
            Source::UserLastName => Some(self.user.family.as_str()),
            Source::UserRpps => Some(self.user.rpps.as_str()),
            Source::PatientIpp => Some(self.patient.ipp.as_str()),
            Source::PatientNda => self.patient.nda.as_deref(),
            Source::PatientIns => self.patient.ins.as_deref(),
            Source::PatientFamily => Some(self.patient.family.as_str()),
            Source::PatientGiven => Some(self.patient.given.as_str()),
            Source::PatientBirthDate => self.patient.birth_date.as_deref(),
            Source::PatientSex => self.patient.sex.as_deref(),
            Source::PatientUnit => self.patient.unit.as_deref(),
            Source::LaunchId => Some(self.launch_id.as_str()),
        };
        value.map(str::trim).filter(|v| !v.is_empty())
    }
}

/// One problem in a mapping file, located in the file: the same shape and text as a
/// configuration problem (`file:line:col: `key`: message`).
pub type MappingProblem = crate::config::ConfigError;

/// Every problem found in one mapping file, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingProblems(pub Vec<MappingProblem>);

impl fmt::Display for MappingProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Why a mapping could not be loaded or applied.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The file could not be read.
    #[error("{}: cannot read the mapping file: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid mapping; every problem is listed.
    #[error("{0}")]
    Invalid(MappingProblems),
    /// At launch: a field whose sources are all blank and that has no `default`.
    #[error("scan-token field `{field}` has no value: {} and there is no `default`", blank_sources(.sources))]
    NoValue { field: String, sources: Vec<Source> },
}

fn blank_sources(sources: &[Source]) -> String {
    let names: Vec<String> = sources.iter().map(|s| format!("`{s}`")).collect();
    match names.len() {
        1 => format!("{} is blank", names.join("")),
        _ => format!("{} are blank", names.join(", ")),
    }
}

impl ScanTokenMapping {
    /// Reads and validates the mapping file at `path`.
    pub fn load(path: &Path) -> Result<ScanTokenMapping, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        ScanTokenMapping::parse(&text, path)
    }

    /// The mapping shipped in `mappings/scan-token.toml`, compiled into the binary.
    pub fn shipped() -> Result<ScanTokenMapping, MappingError> {
        ScanTokenMapping::parse(SHIPPED, Path::new("mappings/scan-token.toml"))
    }

    /// Validates mapping text; `file` names it in messages.
    pub fn parse(text: &str, file: &Path) -> Result<ScanTokenMapping, MappingError> {
        let mut report = Report {
            file,
            text,
            problems: Vec::new(),
        };
        let root = match DeTable::parse(text) {
            Ok(root) => root,
            Err(e) => {
                report.push(e.span(), "", e.message().trim().to_string());
                return Err(report.into_error());
            }
        };
        let mut fields_value = None;
        for (key, value) in root.get_ref().iter() {
            if key.get_ref() == "fields" {
                fields_value = Some(value);
            } else {
                report.push(
                    Some(key.span()),
                    key.get_ref(),
                    "unknown section: a scan-token mapping has only `[fields]`".to_string(),
                );
            }
        }
        let mut fields = Vec::new();
        match fields_value.map(|v| (v.span(), v.get_ref())) {
            None => report.push(
                None,
                "fields",
                "missing `[fields]`: it says where each scan-token field comes from".to_string(),
            ),
            Some((_, DeValue::Table(table))) => {
                for (name, spec) in table.iter() {
                    let key = format!("fields.{}", name.get_ref());
                    if let Some(rule) = field_rule(spec, &key, &mut report) {
                        fields.push(FieldMapping {
                            field: name.get_ref().to_string(),
                            rule,
                        });
                    }
                }
                for required in REQUIRED_FIELDS {
                    if !table.iter().any(|(name, _)| name.get_ref() == required) {
                        report.push(
                            fields_value.map(Spanned::span),
                            &format!("fields.{required}"),
                            "missing required field: the scan-token request needs it".to_string(),
                        );
                    }
                }
            }
            Some((span, other)) => report.push(
                Some(span),
                "fields",
                format!("expected a table, found {}", other.type_str()),
            ),
        }
        if report.problems.is_empty() {
            Ok(ScanTokenMapping { fields })
        } else {
            Err(report.into_error())
        }
    }

    /// The fields, in file order (key order for inline tables).
    pub fn fields(&self) -> &[FieldMapping] {
        &self.fields
    }

    /// Builds the scan-token request body for one launch.
    pub fn apply(&self, values: &LaunchValues) -> Result<Map<String, Value>, MappingError> {
        let mut body = Map::new();
        for field in &self.fields {
            let value = match &field.rule {
                FieldRule::Value(literal) => literal.clone(),
                FieldRule::From { sources, default } => {
                    match sources.iter().find_map(|s| values.get(*s)) {
                        Some(value) => value.to_string(),
                        None => default.clone().ok_or_else(|| MappingError::NoValue {
                            field: field.field.clone(),
                            sources: sources.clone(),
                        })?,
                    }
                }
            };
            body.insert(field.field.clone(), Value::String(value));
        }
        Ok(body)
    }
}

/// Reads one `name = { from = …, value = …, default = … }` entry.
fn field_rule(
    spec: &Spanned<DeValue<'_>>,
    key: &str,
    report: &mut Report<'_>,
) -> Option<FieldRule> {
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
    let mut sources = None;
    let mut value = None;
    let mut default = None;
    let mut valid = true;
    for (name, item) in table.iter() {
        let item_key = format!("{key}.{}", name.get_ref());
        match name.get_ref().as_ref() {
            "from" => sources = Some((item.span(), read_sources(item, &item_key, report))),
            "value" => value = Some((item.span(), literal(item, &item_key, report))),
            "default" => default = Some((item.span(), literal(item, &item_key, report))),
            other => {
                valid = false;
                report.push(
                    Some(name.span()),
                    &item_key,
                    format!("unknown key `{other}`: expected `from`, `value` or `default`"),
                );
            }
        }
    }
    match (sources, value, default) {
        (Some(_), Some((span, _)), _) => {
            report.push(
                Some(span),
                &format!("{key}.value"),
                "`from` and `value` exclude each other: keep one".to_string(),
            );
            None
        }
        (None, None, _) if valid => {
            report.push(
                Some(spec.span()),
                key,
                "expected `from` (a source such as `patient.ipp`) or `value` (a literal)"
                    .to_string(),
            );
            None
        }
        (None, Some(_), Some((span, _))) => {
            report.push(
                Some(span),
                &format!("{key}.default"),
                "`default` applies to `from` only: a `value` is always there".to_string(),
            );
            None
        }
        (None, Some((_, Some(literal))), None) if valid => Some(FieldRule::Value(literal)),
        (Some((_, Some(sources))), None, default) if valid => match default {
            None => Some(FieldRule::From {
                sources,
                default: None,
            }),
            Some((_, Some(default))) => Some(FieldRule::From {
                sources,
                default: Some(default),
            }),
            Some((_, None)) => None,
        },
        _ => None,
    }
}

/// A `from` value: one source name or a non-empty list of them.
fn read_sources(
    item: &Spanned<DeValue<'_>>,
    key: &str,
    report: &mut Report<'_>,
) -> Option<Vec<Source>> {
    let names: Vec<&Spanned<DeValue<'_>>> = match item.get_ref() {
        DeValue::String(_) => vec![item],
        DeValue::Array(items) if items.is_empty() => {
            report.push(
                Some(item.span()),
                key,
                "expected at least one source".to_string(),
            );
            return None;
        }
        DeValue::Array(items) => items.iter().collect(),
        other => {
            report.push(
                Some(item.span()),
                key,
                format!(
                    "expected a source name or a list of them, found {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    let mut sources = Vec::with_capacity(names.len());
    let mut valid = true;
    for name in names {
        let Some(text) = name.get_ref().as_str() else {
            report.push(
                Some(name.span()),
                key,
                format!(
                    "expected a source name, found {}",
                    name.get_ref().type_str()
                ),
            );
            valid = false;
            continue;
        };
        match Source::from_name(text.trim()) {
            Some(source) => sources.push(source),
            None => {
                let known: Vec<String> = Source::ALL.iter().map(|s| format!("`{s}`")).collect();
                report.push(
                    Some(name.span()),
                    key,
                    format!(
                        "unknown source `{}`: expected one of {}",
                        escape_text(text),
                        known.join(", ")
                    ),
                );
                valid = false;
            }
        }
    }
    valid.then_some(sources)
}

/// A literal string value, with `${…}` refused.
fn literal(item: &Spanned<DeValue<'_>>, key: &str, report: &mut Report<'_>) -> Option<String> {
    match item.get_ref() {
        DeValue::String(text) if text.contains("${") => {
            report.push(
                Some(item.span()),
                key,
                format!(
                    "`${{…}}` is not expanded in mapping files: write the literal value (found `{}`)",
                    escape_text(text)
                ),
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

/// Collects located problems while a mapping file is checked.
struct Report<'t> {
    file: &'t Path,
    text: &'t str,
    problems: Vec<MappingProblem>,
}

impl Report<'_> {
    fn push(&mut self, span: Option<Range<usize>>, key: &str, message: String) {
        let line = span.map(|s| line_column(self.text, s.start));
        self.problems.push(MappingProblem {
            file: self.file.to_path_buf(),
            line,
            key: key.to_string(),
            message,
        });
    }

    fn into_error(self) -> MappingError {
        MappingError::Invalid(MappingProblems(self.problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn patient() -> PatientContext {
        PatientContext {
            ipp: "IPP42".into(),
            nda: Some("NDA7".into()),
            ins: None,
            family: "MARTIN".into(),
            given: "Claire".into(),
            birth_date: Some("1970-02-03".into()),
            sex: Some("F".into()),
            unit: Some("CARDIO".into()),
            attending: None,
        }
    }

    fn values() -> LaunchValues {
        LaunchValues {
            user: PractitionerContext {
                rpps: "10000000001".into(),
                family: "DURAND".into(),
                given: "Paul".into(),
            },
            patient: patient(),
            launch_id: "launch-1".into(),
        }
    }

    fn parse(text: &str) -> Result<ScanTokenMapping, MappingError> {
        ScanTokenMapping::parse(text, Path::new("mappings/scan-token.toml"))
    }

    const BASE: &str = "[fields]\n\
        first_name = { from = \"user.first_name\" }\n\
        last_name = { from = \"user.last_name\" }\n\
        rpps = { from = \"user.rpps\" }\n\
        facilitySlug = { value = \"ch-exemple\" }\n";

    #[test]
    fn ok_shipped_mapping() {
        let mapping = ScanTokenMapping::shipped().unwrap();
        let body = mapping.apply(&values()).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({
                "first_name": "Paul",
                "last_name": "DURAND",
                "rpps": "10000000001",
                "facilitySlug": "ch-exemple",
                "patientId": "IPP42",
            })
        );
    }

    #[rstest]
    #[case::ok_single_source("patientId = { from = \"patient.ipp\" }", "IPP42")]
    #[case::ok_list_first_wins("patientId = { from = [\"patient.nda\", \"patient.ipp\"] }", "NDA7")]
    #[case::ok_list_skips_blank(
        "patientId = { from = [\"patient.ins\", \"patient.ipp\"] }",
        "IPP42"
    )]
    #[case::ok_default(
        "patientId = { from = \"patient.ins\", default = \"sans-ins\" }",
        "sans-ins"
    )]
    #[case::ok_empty_default("patientId = { from = \"patient.ins\", default = \"\" }", "")]
    #[case::ok_literal("patientId = { value = \"fixe\" }", "fixe")]
    #[case::ok_launch_id("patientId = { from = \"launch.id\" }", "launch-1")]
    #[case::ok_patient_names("patientId = { from = \"patient.family\" }", "MARTIN")]
    fn ok_apply(#[case] line: &str, #[case] expected: &str) {
        let mapping = parse(&format!("{BASE}{line}\n")).unwrap();
        let body = mapping.apply(&values()).unwrap();
        assert_eq!(body.get("patientId"), Some(&json!(expected)));
        assert_eq!(body.get("facilitySlug"), Some(&json!("ch-exemple")));
    }

    #[test]
    fn ok_extra_field_is_sent() {
        let mapping = parse(&format!(
            "{BASE}patientId = {{ from = \"patient.ipp\" }}\nunit = {{ from = \"patient.unit\" }}\n"
        ))
        .unwrap();
        let body = mapping.apply(&values()).unwrap();
        assert_eq!(body.get("unit"), Some(&json!("CARDIO")));
        assert_eq!(mapping.fields().len(), 6);
    }

    #[rstest]
    #[case::err_one_blank(
        "patientId = { from = \"patient.ins\" }",
        "scan-token field `patientId` has no value: `patient.ins` is blank and there is no `default`"
    )]
    #[case::err_all_blank(
        "patientId = { from = [\"patient.ins\", \"patient.sex\"] }",
        "scan-token field `patientId` has no value: `patient.ins`, `patient.sex` are blank and there is no `default`"
    )]
    fn err_apply(#[case] line: &str, #[case] message: &str) {
        let mapping = parse(&format!("{BASE}{line}\n")).unwrap();
        let mut values = values();
        values.patient.sex = Some("  ".into());
        let err = mapping.apply(&values).unwrap_err();
        assert_eq!(err.to_string(), message);
    }

    const KNOWN: &str = "`user.first_name`, `user.last_name`, `user.rpps`, `patient.ipp`, \
        `patient.nda`, `patient.ins`, `patient.family`, `patient.given`, `patient.birth_date`, \
        `patient.sex`, `patient.unit`, `launch.id`";

    #[rstest]
    #[case::err_unknown_source(
        "patientId = { from = \"patient.ip\" }",
        format!("mappings/scan-token.toml:6:22: `fields.patientId.from`: unknown source `patient.ip`: expected one of {KNOWN}")
    )]
    #[case::err_unknown_source_in_list(
        "patientId = { from = [\"patient.ipp\", \"visit.nda\"] }",
        format!("mappings/scan-token.toml:6:38: `fields.patientId.from`: unknown source `visit.nda`: expected one of {KNOWN}")
    )]
    #[case::err_env_var(
        "patientId = { value = \"${SLUG}\" }",
        "mappings/scan-token.toml:6:23: `fields.patientId.value`: `${…}` is not expanded in mapping files: write the literal value (found `${SLUG}`)".to_string()
    )]
    #[case::err_env_var_default(
        "patientId = { from = \"patient.ipp\", default = \"${X:-y}\" }",
        "mappings/scan-token.toml:6:47: `fields.patientId.default`: `${…}` is not expanded in mapping files: write the literal value (found `${X:-y}`)".to_string()
    )]
    #[case::err_both(
        "patientId = { from = \"patient.ipp\", value = \"x\" }",
        "mappings/scan-token.toml:6:45: `fields.patientId.value`: `from` and `value` exclude each other: keep one".to_string()
    )]
    #[case::err_neither(
        "patientId = { default = \"x\" }",
        "mappings/scan-token.toml:6:13: `fields.patientId`: expected `from` (a source such as `patient.ipp`) or `value` (a literal)".to_string()
    )]
    #[case::err_default_with_value(
        "patientId = { value = \"x\", default = \"y\" }",
        "mappings/scan-token.toml:6:38: `fields.patientId.default`: `default` applies to `from` only: a `value` is always there".to_string()
    )]
    #[case::err_unknown_key(
        "patientId = { form = \"patient.ipp\" }",
        "mappings/scan-token.toml:6:15: `fields.patientId.form`: unknown key `form`: expected `from`, `value` or `default`".to_string()
    )]
    #[case::err_not_a_table(
        "patientId = \"patient.ipp\"",
        "mappings/scan-token.toml:6:13: `fields.patientId`: expected a table such as `{ from = \"patient.ipp\" }` or `{ value = \"ch-exemple\" }`, found string".to_string()
    )]
    #[case::err_literal_not_string(
        "patientId = { value = 42 }",
        "mappings/scan-token.toml:6:23: `fields.patientId.value`: expected a string, found integer".to_string()
    )]
    #[case::err_empty_list(
        "patientId = { from = [] }",
        "mappings/scan-token.toml:6:22: `fields.patientId.from`: expected at least one source".to_string()
    )]
    #[case::err_source_not_string(
        "patientId = { from = [1] }",
        "mappings/scan-token.toml:6:23: `fields.patientId.from`: expected a source name, found integer".to_string()
    )]
    fn err_load(#[case] line: &str, #[case] message: String) {
        let err = parse(&format!("{BASE}{line}\n")).unwrap_err();
        assert_eq!(err.to_string(), message);
    }

    #[test]
    fn err_missing_required_fields() {
        let err = parse("[fields]\nrpps = { from = \"user.rpps\" }\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "mappings/scan-token.toml:1:1: `fields.first_name`: missing required field: the scan-token request needs it\n\
             mappings/scan-token.toml:1:1: `fields.last_name`: missing required field: the scan-token request needs it\n\
             mappings/scan-token.toml:1:1: `fields.facilitySlug`: missing required field: the scan-token request needs it\n\
             mappings/scan-token.toml:1:1: `fields.patientId`: missing required field: the scan-token request needs it"
        );
    }

    #[rstest]
    #[case::err_no_fields(
        "",
        "mappings/scan-token.toml: `fields`: missing `[fields]`: it says where each scan-token field comes from"
    )]
    #[case::err_unknown_section(
        "[field]\n",
        "mappings/scan-token.toml:1:2: `field`: unknown section: a scan-token mapping has only `[fields]`\n\
         mappings/scan-token.toml: `fields`: missing `[fields]`: it says where each scan-token field comes from"
    )]
    #[case::err_fields_not_table(
        "fields = 3\n",
        "mappings/scan-token.toml:1:10: `fields`: expected a table, found integer"
    )]
    fn err_load_structure(#[case] text: &str, #[case] message: &str) {
        let err = parse(text).unwrap_err();
        assert_eq!(err.to_string(), message);
    }

    #[test]
    fn err_syntax_has_line() {
        let err = parse("[fields]\nrpps = { from = \"user.rpps\" \n").unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("mappings/scan-token.toml:2:"),
            "{message}"
        );
    }

    #[test]
    fn err_load_missing_file() {
        let err = ScanTokenMapping::load(Path::new("/nonexistent/scan-token.toml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/scan-token.toml: cannot read the mapping file: "),
            "{err}"
        );
    }

    #[test]
    fn ok_load_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scan-token.toml");
        std::fs::write(
            &path,
            format!("{BASE}patientId = {{ from = \"patient.nda\" }}\n"),
        )
        .unwrap();
        let mapping = ScanTokenMapping::load(&path).unwrap();
        assert_eq!(
            mapping.apply(&values()).unwrap().get("patientId"),
            Some(&json!("NDA7"))
        );
    }

    #[test]
    fn ok_every_source_has_a_unique_name() {
        for source in Source::ALL {
            assert_eq!(Source::from_name(source.name()), Some(source));
        }
    }
}
