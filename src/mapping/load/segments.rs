//! The segments, records, JSON objects and groups of a mapping file, compiled with the names
//! in scope (the fields of each: `fields.rs`).

use super::*;

/// Compiles segments and groups, with the names in scope.
pub(super) struct Compiler<'r, 't> {
    pub(super) report: &'r mut Report<'t>,
    pub(super) maps: Vec<String>,
    pub(super) uses_time: bool,
    /// The MSH segment sets MSH-10.
    pub(super) msh10: bool,
    /// HL7 segments and paths, HPRIM records and paths, or JSON objects and paths.
    pub(super) format: OutputFormat,
    /// The names expressions may start with.
    pub(super) inputs: Inputs,
}

impl Compiler<'_, '_> {
    /// A `[[segment]]` list (`key` is its dotted name).
    pub(super) fn items(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        vars: &mut Vec<String>,
    ) -> Vec<Item> {
        let entries = match value.get_ref() {
            DeValue::Array(entries) if !entries.is_empty() => entries,
            DeValue::Array(_) => {
                self.report
                    .push(Some(value.span()), key, "expected at least one segment");
                return Vec::new();
            }
            other => {
                self.report.push(
                    Some(value.span()),
                    key,
                    format!(
                        "expected a list of segments (`[[{key}]]`, with two brackets), found {}",
                        other.type_str()
                    ),
                );
                return Vec::new();
            }
        };
        let mut items = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let entry_key = format!("{key}[{}]", i + 1);
            let first = vars.is_empty() && i == 0;
            if let Some(item) = self.entry(entry, &entry_key, vars, first) {
                items.push(item);
            }
        }
        items
    }

    pub(super) fn entry(
        &mut self,
        entry: &Spanned<DeValue<'_>>,
        key: &str,
        vars: &mut Vec<String>,
        first: bool,
    ) -> Option<Item> {
        let DeValue::Table(table) = entry.get_ref() else {
            self.report.push(
                Some(entry.span()),
                key,
                format!("expected a table, found {}", entry.get_ref().type_str()),
            );
            return None;
        };
        let mut parts = EntryParts::default();
        for (name, value) in in_order(table) {
            let slot = match name.get_ref().as_ref() {
                "id" => &mut parts.id,
                "when" => &mut parts.when,
                "fields" => &mut parts.fields,
                "for_each" => &mut parts.for_each,
                "as" => &mut parts.name,
                "segment" => &mut parts.segment,
                other => {
                    self.report.push(
                        Some(name.span()),
                        &format!("{key}.{other}"),
                        format!(
                            "unknown key `{other}`: a segment has `id`, `when` and `fields`; a group has `for_each`, `as`, `when` and `segment`"
                        ),
                    );
                    continue;
                }
            };
            *slot = Some(value);
        }
        match (parts.id, parts.for_each) {
            (Some(_), Some(for_each)) => {
                self.report.push(
                    Some(for_each.span()),
                    &format!("{key}.for_each"),
                    "an entry has `id` (a segment) or `for_each` (a group), not both",
                );
                None
            }
            (Some(id), None) => {
                for (extra, name) in [(parts.name, "as"), (parts.segment, "segment")] {
                    if let Some(extra) = extra {
                        self.report.push(
                            Some(extra.span()),
                            &format!("{key}.{name}"),
                            format!("`{name}` belongs to groups: add `for_each` or remove it"),
                        );
                    }
                }
                self.segment(id, parts.when, parts.fields, key, vars, first)
                    .map(Item::Segment)
            }
            (None, Some(for_each)) => {
                if let Some(fields) = parts.fields {
                    self.report.push(
                        Some(fields.span()),
                        &format!("{key}.fields"),
                        "`fields` belong to segments: put them in a `[[…segment]]` inside the group",
                    );
                }
                self.group(for_each, parts.name, parts.when, parts.segment, key, vars)
                    .map(Item::Group)
            }
            (None, None) => {
                self.report.push(
                    Some(entry.span()),
                    key,
                    "expected `id` (a segment such as `PID`) or `for_each` (a group repeated over a list)",
                );
                None
            }
        }
    }

    pub(super) fn segment(
        &mut self,
        id: &Spanned<DeValue<'_>>,
        when: Option<&Spanned<DeValue<'_>>>,
        fields: Option<&Spanned<DeValue<'_>>>,
        key: &str,
        vars: &[String],
        first: bool,
    ) -> Option<SegmentRule> {
        match self.format {
            OutputFormat::Hprim => return self.record(id, when, fields, key, vars, first),
            OutputFormat::Json => return self.object(id, when, fields, key, vars),
            OutputFormat::Hl7 => {}
        }
        let id_key = format!("{key}.id");
        let id_text = self.report.string(id, &id_key)?;
        let well_formed = id_text.len() == 3
            && id_text
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        let known = SEGMENT_FIELDS.iter().find(|(s, _)| *s == id_text);
        let mut valid = true;
        if !well_formed {
            self.report.push(
                Some(id.span()),
                &id_key,
                format!(
                    "invalid segment id `{}`: expected 3 uppercase letters or digits, such as `PID`",
                    crate::hl7::readable(id_text.as_bytes())
                ),
            );
            valid = false;
        } else if known.is_none() && !id_text.starts_with('Z') {
            let supported: Vec<&str> = SEGMENT_FIELDS.iter().map(|(s, _)| *s).collect();
            self.report.push(
                Some(id.span()),
                &id_key,
                format!(
                    "unsupported segment `{id_text}`: expected one of {} or a Z segment",
                    supported.join(", ")
                ),
            );
            valid = false;
        } else if id_text == "MSH" && !first {
            self.report.push(
                Some(id.span()),
                &id_key,
                "`MSH` must be the first segment, outside any group",
            );
            valid = false;
        }
        let max = known.map(|(_, n)| *n);
        let rule = self.rule(id_text, when, fields, key, vars, max);
        valid.then_some(rule)
    }

    /// An HPRIM record: a known type, `H` first, `L` outside groups.
    pub(super) fn record(
        &mut self,
        id: &Spanned<DeValue<'_>>,
        when: Option<&Spanned<DeValue<'_>>>,
        fields: Option<&Spanned<DeValue<'_>>>,
        key: &str,
        vars: &[String],
        first: bool,
    ) -> Option<SegmentRule> {
        let id_key = format!("{key}.id");
        let id_text = self.report.string(id, &id_key)?;
        let known = HPRIM_RECORDS.iter().find(|(s, _)| *s == id_text);
        let problem = if known.is_none() {
            let supported: Vec<&str> = HPRIM_RECORDS.iter().map(|(s, _)| *s).collect();
            Some(format!(
                "unsupported HPRIM record `{}`: expected one of {}",
                crate::hl7::readable(id_text.as_bytes()),
                supported.join(", ")
            ))
        } else if id_text == "H" && !first {
            Some("`H` must be the first record, outside any group".to_string())
        } else if id_text == "L" && !vars.is_empty() {
            Some("`L` ends the message: put it last, outside any group".to_string())
        } else {
            None
        };
        if let Some(problem) = &problem {
            self.report.push(Some(id.span()), &id_key, problem.as_str());
        }
        let max = known.map(|(_, n)| *n);
        let rule = self.rule(id_text, when, fields, key, vars, max);
        problem.is_none().then_some(rule)
    }

    /// A JSON segment: the object (`/` for the body) that its fields go into.
    pub(super) fn object(
        &mut self,
        id: &Spanned<DeValue<'_>>,
        when: Option<&Spanned<DeValue<'_>>>,
        fields: Option<&Spanned<DeValue<'_>>>,
        key: &str,
        vars: &[String],
    ) -> Option<SegmentRule> {
        let id_key = format!("{key}.id");
        let id_text = self.report.string(id, &id_key)?;
        let valid = match JsonPath::parse(id_text) {
            Ok(_) => true,
            Err(e) => {
                self.report.push(
                    Some(id.span()),
                    &id_key,
                    format!("{e} (a JSON segment `id` is the object its fields go into: `/` for the body)"),
                );
                false
            }
        };
        let rule = self.rule(id_text, when, fields, key, vars, None);
        valid.then_some(rule)
    }

    /// The rule of a segment, record or JSON object `id_text`: its `when` and its `fields`
    /// (at most `max` when the id is known). Callers compile it even when the id is refused,
    /// so every problem of the entry is reported at once.
    fn rule(
        &mut self,
        id_text: &str,
        when: Option<&Spanned<DeValue<'_>>>,
        fields: Option<&Spanned<DeValue<'_>>>,
        key: &str,
        vars: &[String],
        max: Option<usize>,
    ) -> SegmentRule {
        let when = when.and_then(|w| self.condition(w, &format!("{key}.when"), vars));
        let fields = match fields {
            None => Vec::new(),
            Some(value) => self.fields(value, &format!("{key}.fields"), id_text, max, vars),
        };
        SegmentRule {
            id: id_text.to_string(),
            when,
            fields,
        }
    }

    pub(super) fn condition(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        vars: &[String],
    ) -> Option<Condition> {
        let source = self.report.string(value, key)?;
        let names = Names {
            inputs: self.inputs,
            vars,
            maps: &self.maps,
        };
        match expr::parse(source, &names) {
            Ok(parsed) => {
                self.uses_time |= parsed.uses_time;
                Some(Condition {
                    expr: parsed.expr,
                    source: source.into(),
                })
            }
            Err(e) => {
                self.report.push(Some(value.span()), key, e.0);
                None
            }
        }
    }

    pub(super) fn group(
        &mut self,
        for_each: &Spanned<DeValue<'_>>,
        name: Option<&Spanned<DeValue<'_>>>,
        when: Option<&Spanned<DeValue<'_>>>,
        segments: Option<&Spanned<DeValue<'_>>>,
        key: &str,
        vars: &mut Vec<String>,
    ) -> Option<GroupRule> {
        let for_each_key = format!("{key}.for_each");
        let source = self.report.string(for_each, &for_each_key)?;
        let depth = vars.len();
        if depth >= MAX_GROUP_DEPTH {
            self.report.push(
                Some(for_each.span()),
                &for_each_key,
                format!("groups nest at most {MAX_GROUP_DEPTH} deep"),
            );
            return None;
        }
        let names = Names {
            inputs: self.inputs,
            vars,
            maps: &self.maps,
        };
        let path = match expr::parse_path(source, &names) {
            Ok(path) => path,
            Err(e) => {
                self.report.push(Some(for_each.span()), &for_each_key, e.0);
                return None;
            }
        };
        let var = match name {
            Some(value) => {
                let as_key = format!("{key}.as");
                let text = self.report.string(value, &as_key)?;
                self.check_name(text, Some(value.span()), &as_key, vars)?
            }
            None => {
                let derived = match path.steps.last() {
                    Some(Step::Key(k)) => k.strip_suffix('s').filter(|s| !s.is_empty()),
                    _ => None,
                };
                match derived {
                    Some(d) => self.check_name(d, Some(for_each.span()), &for_each_key, vars)?,
                    None => {
                        self.report.push(
                            Some(for_each.span()),
                            &for_each_key,
                            format!(
                                "cannot name the items of `{}`: add `as = \"item\"`",
                                path.text
                            ),
                        );
                        return None;
                    }
                }
            }
        };
        vars.push(var);
        let when = when.and_then(|w| self.condition(w, &format!("{key}.when"), vars));
        let items = match segments {
            Some(value) => self.items(value, &format!("{key}.segment"), vars),
            None => {
                self.report.push(
                    Some(for_each.span()),
                    key,
                    format!("a group needs its segments: add `[[{key}.segment]]` entries"),
                );
                Vec::new()
            }
        };
        vars.pop();
        Some(GroupRule {
            for_each: path,
            depth,
            when,
            items,
        })
    }
}

/// The parts of a `[[segment]]` entry, before we know if it is a segment or a group.
#[derive(Default)]
struct EntryParts<'t, 'i> {
    id: Option<&'t Spanned<DeValue<'i>>>,
    when: Option<&'t Spanned<DeValue<'i>>>,
    fields: Option<&'t Spanned<DeValue<'i>>>,
    for_each: Option<&'t Spanned<DeValue<'i>>>,
    name: Option<&'t Spanned<DeValue<'i>>>,
    segment: Option<&'t Spanned<DeValue<'i>>>,
}
