//! The FHIR routes beside the push, for applications that send documents into the EHR: find
//! the patient and the encounter in the census (FHIR R4 JSON), then `$send-to-ehr` and
//! `$tracking` (`engine::documents`).
//!
//! - `GET /fhir/Patient?identifier=SYSTEM|VALUE`: the IPP (`[fhir] ipp_system`), an INS (its
//!   OID as `urn:oid:…`; only a validated INS matches), or an NDA (`[fhir] nda_system`); a value
//!   without system tries the IPP, then the INS. `GET /fhir/Patient/{id}`.
//! - `GET /fhir/Encounter?patient={id}` (every encounter of the patient) or
//!   `?identifier=SYSTEM|NDA`; `GET /fhir/Encounter/{id}`.
//!
//! Searches answer a `searchset` Bundle with `total`. Ids are the census row ids: stable, and
//! not the IPP. Patient: identifiers (IPP, validated INS), names (birth name `official`, used
//! name `usual`), gender, birth date. Encounter: NDA, status, class, period, the unit as service
//! provider, the attending doctor with the RPPS.
//!
//! # Access
//!
//! Every `/fhir/…` route here goes through [`guard`]: the peer must be in `[fhir] allow`
//! (default loopback; 403), with `require_client_cert` a verified TLS client certificate
//! (403), then the credentials of `[fhir]` (bearer or basic, as for the push:
//! [`crate::http::credentials`]; 401 with the challenges). No byte of a body is read before.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tracing::warn;

use crate::census::{EncounterStatus, InsKind};
use crate::config::FhirConfig;
use crate::http::credentials::Credentials;
use crate::http::fhir::{parse_id, reference_id, search_token};
use crate::store::{CensusLookup, CensusRecord, EncounterView, PatientKey, Store};
use crate::tls::PeerCertificate;

use super::push::outcome;

/// What the `/fhir` routes share.
pub(super) struct FhirShared {
    pub(super) credentials: Credentials,
    pub(super) allow: crate::http::AllowList,
    pub(super) require_client_cert: bool,
    pub(super) store: Store,
    pub(super) ipp_system: String,
    pub(super) nda_system: String,
    /// `https` when the HTTP server speaks TLS: absolute URLs in answers.
    pub(super) scheme: &'static str,
}

#[derive(Clone)]
pub(super) struct FhirState {
    pub(super) shared: Arc<FhirShared>,
}

impl FhirState {
    pub(super) fn new(config: &FhirConfig, store: Store, https: bool) -> FhirState {
        FhirState {
            shared: Arc::new(FhirShared {
                credentials: Credentials {
                    token: config.token.clone(),
                    basic: config
                        .basic
                        .as_ref()
                        .map(|b| format!("{}:{}", b.user, b.password)),
                    name: "FHIR",
                },
                allow: config.allow.clone(),
                require_client_cert: config.require_client_cert,
                store,
                ipp_system: config.ipp_system.clone(),
                nda_system: config.nda_system.clone(),
                scheme: if https { "https" } else { "http" },
            }),
        }
    }
}

/// The census search routes, behind [`guard`].
pub(super) fn router(state: FhirState) -> Router {
    Router::new()
        .route("/fhir/Patient", get(search_patients))
        .route("/fhir/Patient/{id}", get(read_patient))
        .route("/fhir/Encounter", get(search_encounters))
        .route("/fhir/Encounter/{id}", get(read_encounter))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Middleware: network, client certificate, credentials (see the module docs).
pub(super) async fn guard(
    State(state): State<FhirState>,
    request: Request,
    next: Next,
) -> Response {
    let shared = &state.shared;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if !peer.is_some_and(|p| shared.allow.allows(p.ip())) {
        warn!(peer = ?peer, path = request.uri().path(), "FHIR request refused: address not in `[fhir] allow`");
        return outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this address may not use the FHIR routes: connect from a network the ordobridge operator allowed",
            None,
        );
    }
    if shared.require_client_cert && request.extensions().get::<PeerCertificate>().is_none() {
        warn!(peer = ?peer, "FHIR request refused: no verified TLS client certificate");
        return outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a TLS client certificate is required: connect over HTTPS presenting a certificate signed by the CA this endpoint trusts",
            None,
        );
    }
    if !shared.credentials.allows(request.headers()) {
        warn!(peer = ?peer, path = request.uri().path(), "FHIR request refused: missing or wrong credentials");
        let mut response = outcome(
            StatusCode::UNAUTHORIZED,
            "login",
            &shared.credentials.diagnostics(),
            None,
        );
        for challenge in shared.credentials.challenges() {
            response.headers_mut().append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        return response;
    }
    next.run(request).await
}

impl FhirShared {
    /// `http://host:port` as the client called it (the Host check has run before).
    pub(super) fn base_url(&self, headers: &HeaderMap) -> String {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        format!("{}://{host}", self.scheme)
    }

    async fn record(&self, lookup: CensusLookup) -> Result<Option<CensusRecord>, Response> {
        self.store.census_record(lookup).await.map_err(|e| {
            warn!(error = %e, "FHIR census read failed");
            outcome(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "the census could not be read; try again",
                None,
            )
        })
    }
}

/// Only these search parameters are understood; others are refused rather than ignored (an
/// ignored filter would answer every patient): the refusal, if any.
fn check_parameters(
    query: &BTreeMap<String, String>,
    allowed: &[&str],
    resource: &str,
) -> Option<Response> {
    query
        .keys()
        .find(|k| !allowed.contains(&k.as_str()))
        .map(|unknown| {
            outcome(
                StatusCode::BAD_REQUEST,
                "not-supported",
                &format!(
                    "unknown search parameter `{unknown}` for {resource}: use {}",
                    allowed
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
                Some(unknown),
            )
        })
}

fn fhir_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

fn not_found(resource: &str, id: &str) -> Response {
    outcome(
        StatusCode::NOT_FOUND,
        "not-found",
        &format!(
            "no {resource} with id `{}`: ids come from `GET /fhir/{resource}?…`",
            id.escape_debug()
        ),
        None,
    )
}

/// A searchset Bundle of `resources` (absolute `fullUrl`s), with an optional warning.
fn searchset(base: &str, self_url: &str, resources: Vec<Value>, warning: Option<String>) -> Value {
    let total = resources.len();
    let mut entries: Vec<Value> = resources
        .into_iter()
        .map(|resource| {
            let full_url = format!(
                "{base}/fhir/{}/{}",
                resource["resourceType"].as_str().unwrap_or_default(),
                resource["id"].as_str().unwrap_or_default()
            );
            json!({"fullUrl": full_url, "resource": resource, "search": {"mode": "match"}})
        })
        .collect();
    if let Some(text) = warning {
        entries.push(json!({
            "resource": {"resourceType": "OperationOutcome", "issue": [
                {"severity": "warning", "code": "not-found", "diagnostics": text}]},
            "search": {"mode": "outcome"},
        }));
    }
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": self_url}],
        "entry": entries,
    })
}

/// The INS OIDs (NIR, NIA, test) as FHIR systems.
const INS_SYSTEM_PREFIX: &str = "urn:oid:1.2.250.1.213.1.4.";

async fn search_patients(
    State(state): State<FhirState>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let shared = &state.shared;
    if let Some(response) = check_parameters(&query, &["identifier"], "Patient") {
        return response;
    }
    let Some(token) = query.get("identifier") else {
        return outcome(
            StatusCode::BAD_REQUEST,
            "required",
            &format!(
                "search patients by `identifier`: `{}|IPP`, `urn:oid:1.2.250.1.213.1.4.8|INS` or `{}|NDA`",
                shared.ipp_system, shared.nda_system
            ),
            Some("identifier"),
        );
    };
    let base = shared.base_url(&headers);
    let self_url = format!("{base}/fhir/Patient?identifier={}", encode(token));
    let (system, value) = search_token(token);
    let keys: Vec<PatientKey> = match system {
        Some(s) if s == shared.ipp_system => vec![PatientKey::Ipp(value.to_string())],
        Some(s) if s == shared.nda_system => vec![PatientKey::Nda(value.to_string())],
        Some(s) if s.starts_with(INS_SYSTEM_PREFIX) => vec![PatientKey::Ins(value.to_string())],
        Some(other) => {
            let warning = format!(
                "unknown identifier system `{}`: use `{}` (IPP), `{}` (NDA) or `urn:oid:1.2.250.1.213.1.4.8` (INS)",
                other.escape_debug(),
                shared.ipp_system,
                shared.nda_system
            );
            return fhir_json(
                StatusCode::OK,
                &searchset(&base, &self_url, Vec::new(), Some(warning)),
            );
        }
        None => vec![
            PatientKey::Ipp(value.to_string()),
            PatientKey::Ins(value.to_string()),
        ],
    };
    let mut found = None;
    for key in keys {
        let ins = matches!(key, PatientKey::Ins(_));
        match shared.record(CensusLookup::Key(key)).await {
            Err(response) => return response,
            // Only a validated INS identifies a patient.
            Ok(Some(record))
                if !ins || record.view.ins.as_ref().is_some_and(|i| i.value == value) =>
            {
                found = Some(record);
                break;
            }
            Ok(_) => {}
        }
    }
    let resources = found
        .map(|record| vec![patient_resource(&record, &shared.ipp_system)])
        .unwrap_or_default();
    fhir_json(
        StatusCode::OK,
        &searchset(&base, &self_url, resources, None),
    )
}

async fn read_patient(State(state): State<FhirState>, Path(id): Path<String>) -> Response {
    let shared = &state.shared;
    let Some(number) = parse_id(&id) else {
        return not_found("Patient", &id);
    };
    match shared.record(CensusLookup::Patient(number)).await {
        Err(response) => response,
        Ok(None) => not_found("Patient", &id),
        Ok(Some(record)) => fhir_json(
            StatusCode::OK,
            &patient_resource(&record, &shared.ipp_system),
        ),
    }
}

async fn search_encounters(
    State(state): State<FhirState>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let shared = &state.shared;
    if let Some(response) = check_parameters(&query, &["patient", "identifier"], "Encounter") {
        return response;
    }
    let base = shared.base_url(&headers);
    let (lookup, self_url, only) = match (query.get("patient"), query.get("identifier")) {
        (Some(patient), None) => {
            let id = parse_id(patient).or_else(|| reference_id(patient, "Patient"));
            let self_url = format!("{base}/fhir/Encounter?patient={}", encode(patient));
            match id {
                Some(id) => (CensusLookup::Patient(id), self_url, None),
                None => {
                    return fhir_json(
                        StatusCode::OK,
                        &searchset(&base, &self_url, Vec::new(), None),
                    );
                }
            }
        }
        (None, Some(token)) => {
            let self_url = format!("{base}/fhir/Encounter?identifier={}", encode(token));
            let (system, value) = search_token(token);
            if system.is_some_and(|s| s != shared.nda_system) {
                let warning = format!(
                    "unknown identifier system `{}`: encounters are found by `{}|NDA`",
                    system.unwrap_or_default().escape_debug(),
                    shared.nda_system
                );
                return fhir_json(
                    StatusCode::OK,
                    &searchset(&base, &self_url, Vec::new(), Some(warning)),
                );
            }
            (
                CensusLookup::Key(PatientKey::Nda(value.to_string())),
                self_url,
                Some(value.to_string()),
            )
        }
        _ => {
            return outcome(
                StatusCode::BAD_REQUEST,
                "required",
                &format!(
                    "search encounters by `patient` (a Patient id) or by `identifier` (`{}|NDA`), one of them",
                    shared.nda_system
                ),
                Some("patient"),
            );
        }
    };
    let record = match shared.record(lookup).await {
        Err(response) => return response,
        Ok(record) => record,
    };
    let resources = record
        .map(|record| {
            record
                .view
                .encounters
                .iter()
                .filter(|e| only.as_ref().is_none_or(|nda| *nda == e.nda))
                .filter_map(|e| encounter_resource(&record, e, &shared.nda_system))
                .collect()
        })
        .unwrap_or_default();
    fhir_json(
        StatusCode::OK,
        &searchset(&base, &self_url, resources, None),
    )
}

async fn read_encounter(State(state): State<FhirState>, Path(id): Path<String>) -> Response {
    let shared = &state.shared;
    let Some(number) = parse_id(&id) else {
        return not_found("Encounter", &id);
    };
    let record = match shared.record(CensusLookup::Encounter(number)).await {
        Err(response) => return response,
        Ok(record) => record,
    };
    let resource = record.as_ref().and_then(|record| {
        let current = record.view.current.as_ref()?;
        encounter_resource(record, current, &shared.nda_system)
    });
    match resource {
        Some(resource) => fhir_json(StatusCode::OK, &resource),
        None => not_found("Encounter", &id),
    }
}

/// Percent-encodes a query value for the `self` link.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The Patient resource of a census record.
pub(super) fn patient_resource(record: &CensusRecord, ipp_system: &str) -> Value {
    let view = &record.view;
    let mut identifiers = vec![json!({
        "use": "usual",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}]},
        "system": ipp_system,
        "value": view.ipp,
    })];
    if let Some(ins) = &view.ins {
        let oid = if ins.oid.is_empty() {
            "1.2.250.1.213.1.4.8"
        } else {
            ins.oid.as_str()
        };
        let code = match ins.kind {
            InsKind::Nia => "INS-NIA",
            InsKind::Test => "INS-C",
            InsKind::Nir | InsKind::Unspecified => "INS-NIR",
        };
        identifiers.push(json!({
            "use": "official",
            "type": {"coding": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "code": code}]},
            "system": format!("urn:oid:{oid}"),
            "value": ins.value,
        }));
    }
    let mut names = Vec::new();
    for (name, usage) in [(&view.legal_name, "official"), (&view.used_name, "usual")] {
        if let Some(name) = name {
            let mut value = json!({"use": usage, "family": name.family});
            if !name.given.is_empty() {
                value["given"] = json!(
                    name.given
                        .split(' ')
                        .filter(|g| !g.is_empty())
                        .collect::<Vec<_>>()
                );
            }
            names.push(value);
        }
    }
    let mut resource = json!({
        "resourceType": "Patient",
        "id": record.patient_id.to_string(),
        "identifier": identifiers,
        "name": names,
        "gender": gender(view.sex.as_deref()),
    });
    if let Some(date) = view.birth_date.as_deref().and_then(fhir_date) {
        resource["birthDate"] = json!(date);
    }
    resource
}

/// The Encounter resource of one encounter of a census record; `None` when the record does not
/// list its id (it changed between the two reads).
pub(super) fn encounter_resource(
    record: &CensusRecord,
    encounter: &EncounterView,
    nda_system: &str,
) -> Option<Value> {
    let id = record.encounter_id(&encounter.nda)?;
    let status = match encounter.status {
        EncounterStatus::PreAdmitted => "planned",
        EncounterStatus::Admitted => "in-progress",
        EncounterStatus::OnLeave => "onleave",
        EncounterStatus::Discharged => "finished",
        EncounterStatus::Cancelled => "cancelled",
        EncounterStatus::Unknown => "unknown",
    };
    let class = match encounter.class.as_deref() {
        Some("I") => {
            json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP", "display": "inpatient encounter"})
        }
        Some("O") => {
            json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"})
        }
        Some("E") => {
            json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER", "display": "emergency"})
        }
        Some(other) if !other.is_empty() => {
            json!({"system": "http://terminology.hl7.org/CodeSystem/v2-0004", "code": other})
        }
        _ => {
            json!({"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"})
        }
    };
    let mut resource = json!({
        "resourceType": "Encounter",
        "id": id.to_string(),
        "identifier": [{"system": nda_system, "value": encounter.nda}],
        "status": status,
        "class": class,
        "subject": {"reference": format!("Patient/{}", record.patient_id)},
    });
    let mut period = serde_json::Map::new();
    if let Some(start) = encounter.admit_at.as_deref().and_then(fhir_datetime) {
        period.insert("start".into(), json!(start));
    }
    if let Some(end) = encounter.discharge_at.as_deref().and_then(fhir_datetime) {
        period.insert("end".into(), json!(end));
    }
    if !period.is_empty() {
        resource["period"] = Value::Object(period);
    }
    if let Some(unit) = &encounter.unit {
        resource["serviceProvider"] = json!({"identifier": {"value": unit}, "display": unit});
    }
    if let Some(doctor) = &encounter.attending {
        let mut individual =
            json!({"display": format!("{} {}", doctor.given, doctor.family).trim().to_string()});
        if let Some(rpps) = &doctor.rpps {
            individual["identifier"] =
                json!({"system": "urn:oid:1.2.250.1.71.4.2.1", "value": rpps});
        }
        resource["participant"] = json!([{
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND"}]}],
            "individual": individual,
        }]);
    }
    Some(resource)
}

/// PID-8 to FHIR `gender`.
fn gender(sex: Option<&str>) -> &'static str {
    match sex {
        Some("M") => "male",
        Some("F") => "female",
        Some("A" | "O") => "other",
        _ => "unknown",
    }
}

/// `YYYY-MM-DD` from the census' ISO 8601 text (a date, or a date-time).
fn fhir_date(text: &str) -> Option<String> {
    let date = text.get(..10).unwrap_or(text);
    date.parse::<jiff::civil::Date>()
        .ok()
        .map(|d| d.to_string())
}

/// A census civil date-time (Europe/Paris, as the EHR sent it) as a FHIR `dateTime` with its
/// offset; a date alone stays a date.
fn fhir_datetime(text: &str) -> Option<String> {
    if text.len() == 10 {
        return fhir_date(text);
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    let zone =
        jiff::tz::TimeZone::get("Europe/Paris").unwrap_or_else(|_| jiff::tz::TimeZone::system());
    let zoned = civil.to_zoned(zone).ok()?;
    Some(zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_winter("2026-01-05T10:05:00", Some("2026-01-05T10:05:00+01:00"))]
    #[case::ok_summer("2026-07-05T10:05", Some("2026-07-05T10:05:00+02:00"))]
    #[case::ok_date("2026-07-05", Some("2026-07-05"))]
    #[case::err_garbage("yesterday", None)]
    fn ok_fhir_datetime(#[case] text: &str, #[case] expected: Option<&str>) {
        assert_eq!(fhir_datetime(text).as_deref(), expected);
    }

    #[rstest]
    #[case::ok_plain("urn:oid:1.2|100001", "urn:oid:1.2%7C100001")]
    #[case::ok_space("a b", "a%20b")]
    fn ok_encode(#[case] text: &str, #[case] expected: &str) {
        assert_eq!(encode(text), expected);
    }

    #[test]
    fn ok_gender() {
        assert_eq!(gender(Some("F")), "female");
        assert_eq!(gender(Some("U")), "unknown");
        assert_eq!(gender(None), "unknown");
    }
}
