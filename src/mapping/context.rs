//! The input context the FHIR push endpoint gives the mappings, built once per bundle: the
//! prescription as JSON, what the census says of the patient, and the message's control id
//! and time. The same function serves the push endpoint and `benches/mapping.rs`, so the
//! benchmark measures what the daemon does.

use serde_json::{Map, Value};

use super::view::{AsNode, Context, Node, Record};
use crate::posos::bundle::Prescription;

/// The context of one bundle, reused for each of its routes: only `message.control_id`
/// changes between routes. The prescription is read in place through its typed view
/// ([`super::view`]): nothing of it is copied or serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct PushContext<'p> {
    prescription: &'p Prescription,
    census: Value,
    message: Value,
}

impl<'p> PushContext<'p> {
    /// `{"prescription": …, "census": census, "message": {"control_id": "", "now": now}}`;
    /// `census` is moved in as given. Never fails (the `Result` is kept for callers written
    /// when the prescription was serialized here).
    pub fn new(
        prescription: &'p Prescription,
        census: Value,
        now: &str,
    ) -> Result<PushContext<'p>, serde_json::Error> {
        let mut message = Map::new();
        message.insert("control_id".into(), Value::String(String::new()));
        message.insert("now".into(), Value::String(now.to_owned()));
        Ok(PushContext {
            prescription,
            census,
            message: Value::Object(message),
        })
    }

    /// The context for one outbound message: `message.control_id` set to `control_id`.
    pub fn for_message(&mut self, control_id: &str) -> &PushContext<'p> {
        if let Some(slot) = self.message.get_mut("control_id") {
            match slot {
                Value::String(current) => {
                    current.clear();
                    current.push_str(control_id);
                }
                other => *other = Value::String(control_id.to_owned()),
            }
        }
        self
    }

    /// The context as one JSON value (what the mappings read, written out).
    pub fn to_value(&self) -> Value {
        self.root().to_value()
    }
}

impl Record for PushContext<'_> {
    fn field(&self, key: &str) -> Option<Node<'_>> {
        match key {
            "prescription" => Some(self.prescription.node()),
            "census" => Some(Node::from(&self.census)),
            "message" => Some(Node::from(&self.message)),
            _ => None,
        }
    }

    fn keys(&self) -> &'static [&'static str] {
        &["prescription", "census", "message"]
    }
}

impl Context for PushContext<'_> {
    fn root(&self) -> Node<'_> {
        Node::Record(self)
    }
}

/// What the mappings see under `census` when the census does not know the patient: what the
/// bundle says of them (`known = false`), so a message can still be built. The push endpoint
/// (hold expired, or no hold) and `ordobridge transform` without `--census` both use it.
pub fn census_from_bundle(prescription: &Prescription) -> Value {
    let patient = &prescription.patient;
    serde_json::json!({
        "known": false,
        "ipp": patient.partner_id,
        "family": patient.family,
        "given": patient.given,
        "birth_date": patient.birth_date.as_ref().map(|d| d.replace('-', "")),
        "sex": patient.sex,
    })
}

/// Which input context a mapping reads, from `[message] input`: it decides the names its
/// expressions may start with (checked at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inputs {
    /// `input = "push"` (the default): a Posos bundle, `prescription`, `census`, `message`.
    #[default]
    Push,
    /// `input = "launch"`: an EHR launch, `user`, `patient`, `launch` (see [`LaunchInput`]).
    Launch,
}

/// A name an expression may start with, and the names it has when its shape is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InputRoot {
    pub(crate) name: &'static str,
    /// The keys under it, when known: `patient.ipn` is then refused at load.
    pub(crate) keys: Option<&'static [&'static str]>,
}

const PUSH_ROOTS: [InputRoot; 4] = [
    InputRoot {
        name: "prescription",
        keys: None,
    },
    InputRoot {
        name: "census",
        keys: None,
    },
    InputRoot {
        name: "message",
        keys: None,
    },
    InputRoot {
        name: "document",
        keys: None,
    },
];

/// `user.*` in launch mappings: the clinician who clicked.
pub const LAUNCH_USER_KEYS: [&str; 3] = ["rpps", "first_name", "last_name"];
/// `patient.*` in launch mappings.
pub const LAUNCH_PATIENT_KEYS: [&str; 8] = [
    "ipp",
    "nda",
    "ins",
    "family",
    "given",
    "birth_date",
    "sex",
    "unit",
];
/// `launch.*` in launch mappings.
pub const LAUNCH_KEYS: [&str; 3] = ["id", "guide", "ucds"];

const LAUNCH_ROOTS: [InputRoot; 3] = [
    InputRoot {
        name: "user",
        keys: Some(&LAUNCH_USER_KEYS),
    },
    InputRoot {
        name: "patient",
        keys: Some(&LAUNCH_PATIENT_KEYS),
    },
    InputRoot {
        name: "launch",
        keys: Some(&LAUNCH_KEYS),
    },
];

impl Inputs {
    /// Every input kind, in the order the documentation lists them.
    pub const ALL: [Inputs; 2] = [Inputs::Push, Inputs::Launch];

    /// The value of `[message] input`.
    pub fn name(self) -> &'static str {
        match self {
            Inputs::Push => "push",
            Inputs::Launch => "launch",
        }
    }

    /// The input kind `[message] input` names.
    pub fn from_name(name: &str) -> Option<Inputs> {
        Inputs::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The names expressions may start with.
    pub(crate) fn roots(self) -> &'static [InputRoot] {
        match self {
            Inputs::Push => &PUSH_ROOTS,
            Inputs::Launch => &LAUNCH_ROOTS,
        }
    }
}

/// What one EHR launch knows, as launch mappings (`[message] input = "launch"`) read it:
///
/// - `user.rpps`, `user.first_name`, `user.last_name`: the clinician who clicked (names from
///   the link, else the census);
/// - `patient.ipp`, `patient.nda`, `patient.ins` (qualified INS only), `patient.family`,
///   `patient.given`, `patient.birth_date`, `patient.sex`, `patient.unit`: the patient of a
///   scan launch (none for a guide launch);
/// - `launch.id` (a fresh id per launch, also on error pages and in the logs),
///   `launch.guide` (the guide of a guide launch) and `launch.ucds` (its UCD codes, a list).
///
/// Values are trimmed; a blank one is absent (`null`), so `default()` moves on to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchInput {
    pub user: LaunchUser,
    pub patient: LaunchPatient,
    /// `launch.id`.
    pub id: String,
    /// `launch.guide`.
    pub guide: Option<String>,
    /// `launch.ucds`.
    pub ucds: Vec<String>,
}

/// `user.*` of a launch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchUser {
    pub rpps: String,
    pub first_name: String,
    pub last_name: String,
}

/// `patient.*` of a launch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchPatient {
    pub ipp: Option<String>,
    pub nda: Option<String>,
    pub ins: Option<String>,
    pub family: Option<String>,
    pub given: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub unit: Option<String>,
}

/// Trimmed text, `null` when blank.
fn launch_text(value: Option<&str>) -> Value {
    match value.map(str::trim) {
        Some(t) if !t.is_empty() => Value::String(t.to_owned()),
        _ => Value::Null,
    }
}

fn launch_object(pairs: &[(&str, Option<&str>)]) -> Value {
    let mut map = Map::new();
    for (key, value) in pairs {
        map.insert((*key).to_owned(), launch_text(*value));
    }
    Value::Object(map)
}

impl LaunchInput {
    /// The context the mapping reads: `{"user": {…}, "patient": {…}, "launch": {…}}`.
    pub fn to_value(&self) -> Value {
        let (u, p) = (&self.user, &self.patient);
        let user = [
            ("rpps", Some(u.rpps.as_str())),
            ("first_name", Some(u.first_name.as_str())),
            ("last_name", Some(u.last_name.as_str())),
        ];
        let patient = [
            ("ipp", p.ipp.as_deref()),
            ("nda", p.nda.as_deref()),
            ("ins", p.ins.as_deref()),
            ("family", p.family.as_deref()),
            ("given", p.given.as_deref()),
            ("birth_date", p.birth_date.as_deref()),
            ("sex", p.sex.as_deref()),
            ("unit", p.unit.as_deref()),
        ];
        let ucds = self
            .ucds
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .map(|u| Value::String(u.to_owned()))
            .collect();
        let mut launch = Map::new();
        launch.insert("id".into(), launch_text(Some(&self.id)));
        launch.insert("guide".into(), launch_text(self.guide.as_deref()));
        launch.insert("ucds".into(), Value::Array(ucds));
        let mut context = Map::new();
        context.insert("user".into(), launch_object(&user));
        context.insert("patient".into(), launch_object(&patient));
        context.insert("launch".into(), Value::Object(launch));
        Value::Object(context)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::posos::bundle::read_bundle;

    fn sample() -> Prescription {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/samples/posos/two-drugs-prednisone-taper.json"
        );
        read_bundle(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn ok_launch_input_trims_and_nulls_blanks() {
        let input = LaunchInput {
            user: LaunchUser {
                rpps: " 10000000001 ".into(),
                first_name: "Paul".into(),
                last_name: "  ".into(),
            },
            patient: LaunchPatient {
                ipp: Some("IPP1".into()),
                unit: Some("".into()),
                ..LaunchPatient::default()
            },
            id: "l-1".into(),
            guide: Some("g".into()),
            ucds: vec![" 1 ".into(), "".into(), "2".into()],
        };
        assert_eq!(
            input.to_value(),
            json!({
                "user": {"rpps": "10000000001", "first_name": "Paul", "last_name": null},
                "patient": {"ipp": "IPP1", "nda": null, "ins": null, "family": null,
                            "given": null, "birth_date": null, "sex": null, "unit": null},
                "launch": {"id": "l-1", "guide": "g", "ucds": ["1", "2"]},
            })
        );
    }

    /// The keys the loader accepts are the keys the context has.
    #[test]
    fn ok_launch_keys_match_the_context() {
        let value = LaunchInput::default().to_value();
        for root in Inputs::Launch.roots() {
            let object = value[root.name].as_object().unwrap();
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            let mut expected: Vec<&str> = root.keys.unwrap().to_vec();
            expected.sort_unstable();
            assert_eq!(keys, expected, "{}", root.name);
        }
    }

    #[test]
    fn ok_same_as_the_json_literal() {
        let prescription = sample();
        let census = json!({"known": false, "ipp": "123"});
        let mut context =
            PushContext::new(&prescription, census.clone(), "2026-01-05T10:05:00+01:00").unwrap();
        for control_id in ["OB7-1", "OB7-2"] {
            let expected = json!({
                "prescription": serde_json::to_value(&prescription).unwrap(),
                "census": census,
                "message": {"control_id": control_id, "now": "2026-01-05T10:05:00+01:00"},
            });
            assert_eq!(context.for_message(control_id).to_value(), expected);
        }
    }
}
