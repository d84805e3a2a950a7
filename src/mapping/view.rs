//! What expressions read: a JSON-shaped view over the input context, either a
//! `serde_json::Value` or typed data (the [`Prescription`] of a push) read in place.
//!
//! The typed view answers every key the prescription's JSON has (see
//! [`crate::posos::bundle`]): the same names, the same `null`s, the same lists, so a mapping
//! reads `prescription.lines[1].medication.form.text` the same on either, and a path to a key
//! that does not exist is missing on both. `to_value` writes the view back as JSON; the tests
//! check that it equals serde's output for every sample bundle, which is what keeps the two
//! from drifting when the model grows.

use std::fmt;

use serde_json::{Map, Number, Value};

use crate::posos::bundle::{
    Code, CodeKind, Coding, Document, Dosage, Dose, Duration, Identifier, Line, Medication, Name,
    Observation, Patient, Period, Prescriber, Prescription, Timing,
};

/// One value of the context, JSON-shaped.
#[derive(Clone, Copy)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Number(&'a Number),
    /// A whole number of a typed record.
    Int(i64),
    Str(&'a str),
    /// A JSON array.
    Array(&'a [Value]),
    /// A JSON object.
    Object(&'a Map<String, Value>),
    /// A typed record, read as an object.
    Record(&'a dyn Record),
    /// A typed list, read as an array.
    List(&'a dyn List),
}

/// A typed record read as a JSON object: every key of its JSON form.
pub trait Record {
    /// The member `key`; `None` when the record has no such key (a missing key, as in JSON).
    fn field(&self, key: &str) -> Option<Node<'_>>;
    /// The keys, in the order its JSON form writes them (for [`Node::to_value`]).
    fn keys(&self) -> &'static [&'static str];
}

/// A typed list read as a JSON array.
pub trait List {
    fn len(&self) -> usize;
    fn item(&self, index: usize) -> Option<Node<'_>>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value that can be read as a [`Node`].
pub trait AsNode {
    fn node(&self) -> Node<'_>;
}

impl fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

impl PartialEq for Node<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

impl<'a> From<&'a Value> for Node<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Node::Null,
            Value::Bool(flag) => Node::Bool(*flag),
            Value::Number(number) => Node::Number(number),
            Value::String(text) => Node::Str(text),
            Value::Array(items) => Node::Array(items),
            Value::Object(map) => Node::Object(map),
        }
    }
}

impl<'a> Node<'a> {
    /// The member `key` of an object; `None` for a missing key or another value.
    pub fn get(self, key: &str) -> Option<Node<'a>> {
        match self {
            Node::Object(map) => map.get(key).map(Node::from),
            Node::Record(record) => record.field(key),
            _ => None,
        }
    }

    /// Item `index` (0-based) of a list; `None` out of range or for another value.
    pub fn index(self, index: usize) -> Option<Node<'a>> {
        match self {
            Node::Array(items) => items.get(index).map(Node::from),
            Node::List(list) => list.item(index),
            _ => None,
        }
    }

    /// The number of items of a list; `None` for another value.
    pub fn list_len(self) -> Option<usize> {
        match self {
            Node::Array(items) => Some(items.len()),
            Node::List(list) => Some(list.len()),
            _ => None,
        }
    }

    /// The items of a list; `None` for another value.
    pub fn items(self) -> Option<impl Iterator<Item = Node<'a>>> {
        let len = self.list_len()?;
        Some((0..len).filter_map(move |i| self.index(i)))
    }

    pub fn is_null(self) -> bool {
        matches!(self, Node::Null)
    }

    pub fn is_list(self) -> bool {
        matches!(self, Node::Array(_) | Node::List(_))
    }

    pub fn is_object(self) -> bool {
        matches!(self, Node::Object(_) | Node::Record(_))
    }

    /// The value as JSON (for JSON output, tests and debugging).
    pub fn to_value(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(flag) => Value::Bool(flag),
            Node::Number(number) => Value::Number(number.clone()),
            Node::Int(number) => Value::from(number),
            Node::Str(text) => Value::String(text.to_owned()),
            Node::Array(items) => Value::Array(items.to_vec()),
            Node::Object(map) => Value::Object(map.clone()),
            Node::Record(record) => Value::Object(
                record
                    .keys()
                    .iter()
                    .filter_map(|key| Some(((*key).to_owned(), record.field(key)?.to_value())))
                    .collect(),
            ),
            Node::List(list) => Value::Array(
                (0..list.len())
                    .filter_map(|i| list.item(i))
                    .map(Node::to_value)
                    .collect(),
            ),
        }
    }
}

/// What a mapping is applied to: a JSON value, or a context holding typed data.
pub trait Context {
    /// The context's root object.
    fn root(&self) -> Node<'_>;
}

impl Context for Value {
    fn root(&self) -> Node<'_> {
        Node::from(self)
    }
}

impl AsNode for String {
    fn node(&self) -> Node<'_> {
        Node::Str(self)
    }
}

impl AsNode for Number {
    fn node(&self) -> Node<'_> {
        Node::Number(self)
    }
}

impl AsNode for bool {
    fn node(&self) -> Node<'_> {
        Node::Bool(*self)
    }
}

impl AsNode for Value {
    fn node(&self) -> Node<'_> {
        Node::from(self)
    }
}

/// Whole numbers (`frequency`, `sequence`), read as the JSON numbers serde writes.
impl AsNode for u32 {
    fn node(&self) -> Node<'_> {
        Node::Int(i64::from(*self))
    }
}

impl AsNode for i64 {
    fn node(&self) -> Node<'_> {
        Node::Int(*self)
    }
}

impl AsNode for CodeKind {
    fn node(&self) -> Node<'_> {
        Node::Str(match self {
            CodeKind::Cip => "cip",
            CodeKind::Ucd => "ucd",
            CodeKind::Cis => "cis",
            CodeKind::Atc => "atc",
        })
    }
}

impl<T: AsNode> AsNode for Option<T> {
    fn node(&self) -> Node<'_> {
        match self {
            Some(value) => value.node(),
            None => Node::Null,
        }
    }
}

impl<T: AsNode> List for Vec<T> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn item(&self, index: usize) -> Option<Node<'_>> {
        self.get(index).map(AsNode::node)
    }
}

impl<T: AsNode> AsNode for Vec<T> {
    fn node(&self) -> Node<'_> {
        Node::List(self)
    }
}

/// A typed record: the keys of its JSON form, each read from a field.
macro_rules! record {
    ($ty:ty { $($key:literal => $field:ident),* $(,)? }) => {
        impl Record for $ty {
            fn field(&self, key: &str) -> Option<Node<'_>> {
                match key {
                    $($key => Some(self.$field.node()),)*
                    _ => None,
                }
            }
            fn keys(&self) -> &'static [&'static str] {
                &[$($key),*]
            }
        }
        impl AsNode for $ty {
            fn node(&self) -> Node<'_> {
                Node::Record(self)
            }
        }
    };
}

record!(Prescription {
    "id" => id, "authored_at" => authored_at, "patient" => patient,
    "prescriber" => prescriber, "lines" => lines, "observations" => observations,
    "document" => document,
});
record!(Patient {
    "partner_id" => partner_id, "family" => family, "given" => given,
    "birth_date" => birth_date, "gender" => gender, "sex" => sex, "names" => names,
    "identifiers" => identifiers,
});
record!(Prescriber {
    "rpps" => rpps, "family" => family, "given" => given, "names" => names,
    "identifiers" => identifiers,
});
record!(Name {
    "use" => use_, "family" => family, "given" => given, "prefix" => prefix, "text" => text,
});
record!(Identifier { "system" => system, "value" => value, "type" => type_ });
record!(Code { "code" => code, "system" => system, "display" => display, "text" => text });
record!(Line {
    "id" => id, "status" => status, "authored_at" => authored_at,
    "medication" => medication, "dosages" => dosages,
    "substitution_allowed" => substitution_allowed, "note" => note,
});
record!(Medication {
    "code" => code, "system" => system, "kind" => kind, "display" => display,
    "text" => text, "cip13" => cip13, "ucd" => ucd, "cis" => cis, "form" => form,
    "codings" => codings,
});
record!(Coding { "system" => system, "code" => code, "display" => display, "kind" => kind });
record!(Dosage {
    "sequence" => sequence, "text" => text, "patient_instruction" => patient_instruction,
    "timing" => timing, "dose" => dose, "route" => route, "as_needed" => as_needed,
    "as_needed_reason" => as_needed_reason,
});
record!(Timing {
    "frequency" => frequency, "frequency_max" => frequency_max, "period" => period,
    "period_max" => period_max, "period_unit" => period_unit, "when" => when,
    "time_of_day" => time_of_day, "day_of_week" => day_of_week, "count" => count,
    "count_max" => count_max, "duration" => duration, "duration_unit" => duration_unit,
    "bounds_duration" => bounds_duration, "bounds_period" => bounds_period, "code" => code,
});
record!(Duration { "value" => value, "unit" => unit, "code" => code });
record!(Period { "start" => start, "end" => end });
record!(Dose { "value" => value, "low" => low, "high" => high, "unit" => unit, "code" => code });
record!(Observation {
    "id" => id, "code" => code, "value" => value, "value_text" => value_text,
    "unit" => unit, "unit_code" => unit_code, "effective" => effective,
});
record!(Document {
    "id" => id, "content_type" => content_type, "data_base64" => data_base64, "url" => url,
    "title" => title, "description" => description, "created" => created,
});

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::posos::bundle::read_bundle;

    /// The typed view is the JSON serde writes, key for key, for every sample: a mapping
    /// reads the same paths on either.
    #[test]
    fn ok_typed_view_is_the_serialized_json() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/posos");
        let mut seen = 0;
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let prescription = read_bundle(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(
                prescription.node().to_value(),
                serde_json::to_value(&prescription).unwrap(),
                "{}",
                path.display()
            );
            seen += 1;
        }
        assert!(seen >= 5, "samples read: {seen}");
    }

    /// Every field filled, so every record and every kind of value is compared.
    #[test]
    fn ok_typed_view_of_a_full_prescription() {
        let code = Code {
            code: Some("c".into()),
            system: Some("s".into()),
            display: Some("d".into()),
            text: Some("t".into()),
        };
        let name = Name {
            use_: Some("official".into()),
            family: Some("F".into()),
            given: vec!["A".into(), "B".into()],
            prefix: vec!["Dr".into()],
            text: Some("Dr A B F".into()),
        };
        let identifier = Identifier {
            system: Some("id://partner".into()),
            value: "1".into(),
            type_: Some("PI".into()),
        };
        let prescription = Prescription {
            id: Some("rx".into()),
            authored_at: Some("2026-01-05".into()),
            patient: Patient {
                partner_id: Some("1".into()),
                family: Some("F".into()),
                given: Some("A B".into()),
                birth_date: Some("1950-03-02".into()),
                gender: Some("female".into()),
                sex: Some("F".into()),
                names: vec![name.clone()],
                identifiers: vec![identifier.clone()],
            },
            prescriber: Prescriber {
                rpps: Some("10001234567".into()),
                family: Some("D".into()),
                given: Some("P".into()),
                names: vec![name],
                identifiers: vec![identifier],
            },
            lines: vec![Line {
                id: Some("l".into()),
                status: Some("active".into()),
                authored_at: Some("2026".into()),
                medication: Medication {
                    code: Some("3400930000011".into()),
                    system: Some("urn".into()),
                    kind: Some(CodeKind::Cip),
                    display: Some("P".into()),
                    text: Some("P".into()),
                    cip13: Some("3400930000011".into()),
                    ucd: Some("u".into()),
                    cis: Some("c".into()),
                    form: Some(code.clone()),
                    codings: vec![Coding {
                        system: None,
                        code: "x".into(),
                        display: Some("d".into()),
                        kind: Some(CodeKind::Atc),
                    }],
                },
                dosages: vec![Dosage {
                    sequence: Some(-2),
                    text: Some("t".into()),
                    patient_instruction: Some("p".into()),
                    timing: Some(Timing {
                        frequency: Some(3),
                        frequency_max: Some(4),
                        period: Some(Number::from_f64(0.5).unwrap()),
                        period_max: Some(Number::from(2)),
                        period_unit: Some("d".into()),
                        when: vec!["MORN".into()],
                        time_of_day: vec!["08:00:00".into()],
                        day_of_week: vec!["mon".into()],
                        count: Some(10),
                        count_max: Some(12),
                        duration: Some(Number::from(1)),
                        duration_unit: Some("h".into()),
                        bounds_duration: Some(Duration {
                            value: Some(Number::from(5)),
                            unit: Some("jours".into()),
                            code: Some("d".into()),
                        }),
                        bounds_period: Some(Period {
                            start: Some("a".into()),
                            end: None,
                        }),
                        code: Some(code.clone()),
                    }),
                    dose: Some(Dose {
                        value: None,
                        low: Some(Number::from(1)),
                        high: Some(Number::from(2)),
                        unit: Some("cp".into()),
                        code: None,
                    }),
                    route: Some(code.clone()),
                    as_needed: true,
                    as_needed_reason: Some("pain".into()),
                }],
                substitution_allowed: Some(false),
                note: Some("n".into()),
            }],
            observations: vec![Observation {
                id: Some("o".into()),
                code,
                value: Some(Number::from_f64(62.5).unwrap()),
                value_text: Some("v".into()),
                unit: Some("kg".into()),
                unit_code: Some("kg".into()),
                effective: Some("2026".into()),
            }],
            document: Some(Document {
                id: Some("d".into()),
                content_type: Some("application/pdf".into()),
                data_base64: Some("QQ==".into()),
                url: Some("u".into()),
                title: Some("t".into()),
                description: Some("d".into()),
                created: Some("c".into()),
            }),
        };
        assert_eq!(
            prescription.node().to_value(),
            serde_json::to_value(&prescription).unwrap()
        );
    }
}
