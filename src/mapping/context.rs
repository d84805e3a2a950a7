//! The input context the FHIR push endpoint gives the mappings, built once per bundle: the
//! prescription as JSON, what the census says of the patient, and the message's control id
//! and time. The same function serves the push endpoint and `benches/mapping.rs`, so the
//! benchmark measures what the daemon does.

use serde_json::{Map, Value};

use crate::posos::bundle::Prescription;

/// The context of one bundle, reused for each of its routes: only `message.control_id`
/// changes between routes, so the prescription is serialized once and never copied.
#[derive(Debug, Clone, PartialEq)]
pub struct PushContext {
    value: Value,
}

impl PushContext {
    /// `{"prescription": …, "census": census, "message": {"control_id": "", "now": now}}`;
    /// `census` is moved in as given. Fails only if the prescription cannot be written as
    /// JSON (it always can: every field is a string, number, bool, list or record).
    pub fn new(
        prescription: &Prescription,
        census: Value,
        now: &str,
    ) -> Result<PushContext, serde_json::Error> {
        let mut message = Map::new();
        message.insert("control_id".into(), Value::String(String::new()));
        message.insert("now".into(), Value::String(now.to_owned()));
        let mut context = Map::new();
        context.insert("prescription".into(), serde_json::to_value(prescription)?);
        context.insert("census".into(), census);
        context.insert("message".into(), Value::Object(message));
        Ok(PushContext {
            value: Value::Object(context),
        })
    }

    /// The context for one outbound message: `message.control_id` set to `control_id`.
    pub fn for_message(&mut self, control_id: &str) -> &Value {
        if let Some(Value::Object(message)) = self.value.get_mut("message")
            && let Some(slot) = message.get_mut("control_id")
        {
            match slot {
                Value::String(current) => {
                    current.clear();
                    current.push_str(control_id);
                }
                other => *other = Value::String(control_id.to_owned()),
            }
        }
        &self.value
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
            assert_eq!(*context.for_message(control_id), expected);
        }
    }
}
