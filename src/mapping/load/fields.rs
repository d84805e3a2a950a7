//! The fields of a segment, record or JSON object: their targets (HL7 paths, HPRIM paths,
//! JSON paths), overlaps, and the expression or table that gives each its value.

use super::*;

impl Compiler<'_, '_> {
    pub(super) fn fields(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        segment: &str,
        max: Option<usize>,
        vars: &[String],
    ) -> Vec<FieldRule> {
        let DeValue::Table(table) = value.get_ref() else {
            let example = match self.format {
                OutputFormat::Json => {
                    "JSON paths and expressions, such as `{ patientId = \"patient.ipp\" }`"
                }
                _ => "HL7 paths and expressions, such as `{ \"PID-3.1\" = \"census.ipp\" }`",
            };
            self.report.push(
                Some(value.span()),
                key,
                format!(
                    "expected a table of {example}, found {}",
                    value.get_ref().type_str()
                ),
            );
            return Vec::new();
        };
        let mut rules: Vec<FieldRule> = Vec::new();
        for (name, spec) in in_order(table) {
            let name_text = name.get_ref().as_ref();
            let field_key = format!("{key}.{name_text}");
            let path = match self.format {
                OutputFormat::Hl7 => self.target(name, &field_key, segment, max, &rules),
                OutputFormat::Hprim => self.hprim_target(name, &field_key, segment, max, &rules),
                OutputFormat::Json => self.json_target(name, &field_key, &rules),
            };
            let Some((source, required, kind, span)) = self.field_spec(spec, &field_key) else {
                continue;
            };
            let names = Names {
                inputs: self.inputs,
                vars,
                maps: &self.maps,
            };
            let parsed = match expr::parse(source, &names) {
                Ok(parsed) => parsed,
                Err(e) => {
                    self.report.push(Some(span), &field_key, e.0);
                    continue;
                }
            };
            self.uses_time |= parsed.uses_time;
            if let Some(path) = path {
                rules.push(FieldRule {
                    target: path,
                    expr: parsed.expr,
                    source: source.into(),
                    required,
                    kind,
                });
            }
        }
        rules
    }

    /// The HL7 path of a `fields` key, checked against the segment.
    pub(super) fn target(
        &mut self,
        name: &Spanned<Cow<'_, str>>,
        key: &str,
        segment: &str,
        max: Option<usize>,
        earlier: &[FieldRule],
    ) -> Option<Target> {
        let text = name.get_ref().as_ref();
        let span = Some(name.span());
        let path: Path = match text.parse() {
            Ok(path) => path,
            Err(e) => {
                self.report.push(span, key, e.to_string());
                return None;
            }
        };
        let problem = if path.segment_id() != segment {
            Some(format!(
                "`{text}` is in segment `{}`, but this is segment `{segment}`",
                path.segment_id()
            ))
        } else if path.occurrence() != 1 {
            Some(format!(
                "`{text}` names a segment occurrence: the order of segments in the file decides it, remove `[{}]`",
                path.occurrence()
            ))
        } else if let Some(max) = max.filter(|m| path.field() > *m) {
            Some(format!(
                "`{text}` is out of range: `{segment}` has {max} fields"
            ))
        } else if segment == "MSH" && path.field() <= 2 {
            Some(format!(
                "`{text}` is the delimiters (`|^~\\&`), written by ordobridge"
            ))
        } else if let Some(owner) = match (segment, path.field()) {
            ("MSH", 9) => Some("type"),
            ("MSH", 12) => Some("version"),
            ("MSH", 18) => Some("charset"),
            _ => None,
        } {
            Some(format!(
                "`{text}` is written from `[message].{owner}`: remove it here"
            ))
        } else {
            overlap(text, &Target::new(path), earlier, "segment")
        };
        if segment == "MSH" && path.segment_id() == "MSH" && path.field() == 10 {
            self.msh10 = true;
        }
        match problem {
            Some(message) => {
                self.report.push(span, key, message);
                None
            }
            None => Some(Target::new(path)),
        }
    }

    /// The JSON path of a `fields` key: a key of the segment's object, not a list item.
    pub(super) fn json_target(
        &mut self,
        name: &Spanned<Cow<'_, str>>,
        key: &str,
        earlier: &[FieldRule],
    ) -> Option<Target> {
        let text = name.get_ref().as_ref();
        let span = Some(name.span());
        let problem = match JsonPath::parse(text) {
            Err(e) => Err(e.to_string()),
            Ok(path) if path.is_root() => Err(format!(
                "`{text}` is the segment's object itself: name a key in it, such as `patientId`"
            )),
            Ok(path) if path.appends() => Err(format!(
                "`{text}` adds a list item: only a segment `id` may (`id = \"{text}\"`), its fields then fill the item"
            )),
            Ok(path) => match earlier
                .iter()
                .find(|rule| rule.target.json_path().is_some_and(|p| p.overlaps(&path)))
            {
                Some(rule) => Err(format!(
                    "`{text}` overlaps `{}` in the same segment: set each place once",
                    rule.target
                )),
                None => Ok(path),
            },
        };
        match problem {
            Ok(path) => Some(Target::json(path)),
            Err(message) => {
                self.report.push(span, key, message);
                None
            }
        }
    }

    /// The HPRIM path of a `fields` key, checked against the record.
    pub(super) fn hprim_target(
        &mut self,
        name: &Spanned<Cow<'_, str>>,
        key: &str,
        record: &str,
        max: Option<usize>,
        earlier: &[FieldRule],
    ) -> Option<Target> {
        let text = name.get_ref().as_ref();
        let span = Some(name.span());
        let path: HprimPath = match text.parse() {
            Ok(path) => path,
            Err(e) => {
                self.report.push(span, key, e.to_string());
                return None;
            }
        };
        let problem = if path.kind() != record {
            Some(format!(
                "`{text}` is in record `{}`, but this is record `{record}`",
                path.kind()
            ))
        } else if path.occurrence() != 1 {
            Some(format!(
                "`{text}` names a record occurrence: the order of records in the file decides it, remove `[{}]`",
                path.occurrence()
            ))
        } else if let Some(max) = max.filter(|m| path.field() > *m) {
            Some(format!(
                "`{text}` is out of range: `{record}` has {max} fields"
            ))
        } else if path.field() == 1 {
            Some(format!(
                "`{text}` is the record type, written by ordobridge"
            ))
        } else if record == "H" && path.field() == 2 {
            Some(format!(
                "`{text}` is the delimiters (`~^\\&`), written by ordobridge"
            ))
        } else {
            overlap(text, &Target::hprim(path), earlier, "record")
        };
        match problem {
            Some(message) => {
                self.report.push(span, key, message);
                None
            }
            None => Some(Target::hprim(path)),
        }
    }

    /// A field's value: an expression, or `{ value = "…", required = true }` (and, in JSON,
    /// `type = "number"`).
    pub(super) fn field_spec<'v>(
        &mut self,
        spec: &'v Spanned<DeValue<'_>>,
        key: &str,
    ) -> Option<(&'v str, bool, FieldKind, Range<usize>)> {
        let json = self.format == OutputFormat::Json;
        match spec.get_ref() {
            DeValue::String(source) => Some((source, false, FieldKind::Text, spec.span())),
            DeValue::Table(table) => {
                let dotted = !table.iter().any(|(k, _)| {
                    matches!(k.get_ref().as_ref(), "value" | "required")
                        || (json && k.get_ref() == "type")
                });
                if dotted {
                    self.report.push(
                        Some(spec.span()),
                        key,
                        if json {
                            "JSON paths that contain dots must be quoted, e.g. `\"patient.id\" = \"patient.ipp\"`"
                        } else {
                            "HL7 paths that contain dots must be quoted, e.g. `\"PID-3.1\" = \"census.ipp\"`"
                        },
                    );
                    return None;
                }
                let mut value = None;
                let mut required = false;
                let mut kind = FieldKind::Text;
                let mut valid = true;
                for (name, item) in in_order(table) {
                    let item_key = format!("{key}.{}", name.get_ref());
                    match name.get_ref().as_ref() {
                        "value" => {
                            value = self
                                .report
                                .string(item, &item_key)
                                .map(|s| (s, item.span()));
                        }
                        "required" => match item.get_ref() {
                            DeValue::Boolean(b) => required = *b,
                            other => {
                                self.report.push(
                                    Some(item.span()),
                                    &item_key,
                                    format!(
                                        "expected `true` or `false`, found {}",
                                        other.type_str()
                                    ),
                                );
                                valid = false;
                            }
                        },
                        "type" if json => match self.report.string(item, &item_key) {
                            Some(name) => match FieldKind::NAMES.iter().find(|(n, _)| *n == name) {
                                Some((_, found)) => kind = *found,
                                None => {
                                    self.report.push(
                                            Some(item.span()),
                                            &item_key,
                                            format!(
                                                "unknown type `{}`: expected `string`, `number`, `bool` or `array`",
                                                crate::hl7::readable(name.as_bytes())
                                            ),
                                        );
                                    valid = false;
                                }
                            },
                            None => valid = false,
                        },
                        other => {
                            self.report.push(
                                Some(name.span()),
                                &item_key,
                                if json {
                                    format!(
                                        "unknown key `{other}`: a field has `value`, `required` and `type`"
                                    )
                                } else if other == "type" {
                                    "`type` belongs to JSON fields (`[message] format = \"json\"`): HL7 and HPRIM values are text".to_string()
                                } else {
                                    format!(
                                        "unknown key `{other}`: a field has `value` and `required`"
                                    )
                                },
                            );
                            valid = false;
                        }
                    }
                }
                match value {
                    Some((source, span)) if valid => Some((source, required, kind, span)),
                    Some(_) => None,
                    None => {
                        if !table.iter().any(|(k, _)| k.get_ref() == "value") {
                            self.report.push(
                                Some(spec.span()),
                                key,
                                "missing `value`: write `{ value = \"census.ipp\", required = true }`",
                            );
                        }
                        None
                    }
                }
            }
            other => {
                self.report.push(
                    Some(spec.span()),
                    key,
                    format!(
                        "expected an expression in quotes such as `\"census.ipp\"` (fixed text: `\"'PI'\"`), found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// A group variable name: a new identifier that hides nothing.
    pub(super) fn check_name(
        &mut self,
        name: &str,
        span: Option<Range<usize>>,
        key: &str,
        vars: &[String],
    ) -> Option<String> {
        let valid = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let message = if !valid {
            format!(
                "invalid item name `{}`: use lowercase letters, digits and `_`",
                crate::hl7::readable(name.as_bytes())
            )
        } else if self.inputs.roots().iter().any(|r| r.name == name) || KEYWORDS.contains(&name) {
            format!("item name `{name}` is reserved: choose another with `as`")
        } else if vars.iter().any(|v| v == name) {
            format!(
                "item name `{name}` is already used by an enclosing group: choose another with `as`"
            )
        } else {
            return Some(name.to_string());
        };
        self.report.push(span, key, message);
        None
    }
}

/// Whether two paths in one segment write (part of) the same place.
/// The problem when `target` (written `text`) overlaps a field set earlier in the same
/// `unit` (segment or record).
fn overlap(text: &str, target: &Target, earlier: &[FieldRule], unit: &str) -> Option<String> {
    earlier
        .iter()
        .find(|rule| overlaps(&rule.target, target))
        .map(|rule| {
            format!(
                "`{text}` overlaps `{}` in the same {unit}: set each place once",
                rule.target
            )
        })
}

fn overlaps(a: &Target, b: &Target) -> bool {
    if a.field() != b.field() {
        return false;
    }
    let rep = |p: &Target| p.repetition().or(p.component().map(|_| 1));
    let same_or_whole = |x: Option<usize>, y: Option<usize>| match (x, y) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    let (ra, rb) = (rep(a), rep(b));
    if ra.is_none() || rb.is_none() {
        return true;
    }
    if ra != rb {
        return false;
    }
    match (a.component(), b.component()) {
        (Some(x), Some(y)) if x == y => same_or_whole(a.subcomponent(), b.subcomponent()),
        (Some(_), Some(_)) => false,
        _ => true,
    }
}
