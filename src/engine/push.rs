//! The FHIR push endpoint: Posos pushes a validated prescription as to a FHIR server
//! (`POST /fhir` with a transaction Bundle, or `POST /fhir/Bundle`), bare or wrapped as
//! `{"fhirBundle": …}`.
//!
//! The body is journaled (committed) before anything else; an unusable body is journaled as
//! rejected and answered 400 with a FHIR OperationOutcome naming the JSON path of the problem.
//! A usable bundle is read into the normalized prescription, completed with what the census
//! knows of the patient (its `id://partner` identifier is the `patientId` the launch passed:
//! the IPP by default), mapped through every configured route, and the resulting messages are
//! enqueued on their destinations' durable queues (committed) before the 200 answer. Each
//! outbound message gets a control id (MSH-10) derived from the journal id, stable across
//! retries.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::config::PushConfig;
use crate::mapping::Mapping;
use crate::posos::bundle::{Prescription, read_bundle};
use crate::store::{
    EntryStatus, InboundRecord, JournalOutcome, OutboundItem, PatientKey, PatientView,
    RecordStatus, Store,
};

/// The journal channel of pushed bundles.
pub(super) const PUSH_CHANNEL: &str = "posos-push";

/// One compiled route: a mapping and the destination of its messages.
struct Route {
    mapping: Mapping,
    destination: String,
}

#[derive(Clone)]
pub(super) struct PushState {
    inner: Arc<Inner>,
}

struct Inner {
    token: Option<String>,
    routes: Vec<Route>,
    store: Store,
    wakers: BTreeMap<String, Arc<Notify>>,
}

impl PushState {
    pub(super) fn new(
        config: &PushConfig,
        store: Store,
        wakers: BTreeMap<String, Arc<Notify>>,
    ) -> Result<PushState, String> {
        let mut routes = Vec::new();
        for route in &config.routes {
            let mapping = Mapping::load(&route.mapping).map_err(|e| e.to_string())?;
            routes.push(Route {
                mapping,
                destination: route.destination.clone(),
            });
        }
        Ok(PushState {
            inner: Arc::new(Inner {
                token: config.token.clone(),
                routes,
                store,
                wakers,
            }),
        })
    }
}

pub(super) fn router(state: PushState) -> Router {
    Router::new()
        .route("/fhir", post(push))
        .route("/fhir/Bundle", post(push))
        .with_state(state)
}

/// A FHIR OperationOutcome answer.
fn outcome(
    status: StatusCode,
    code: &str,
    diagnostics: &str,
    expression: Option<&str>,
) -> Response {
    let mut issue = json!({"severity": "error", "code": code, "diagnostics": diagnostics});
    if let Some(path) = expression {
        issue["expression"] = json!([path]);
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        json!({"resourceType": "OperationOutcome", "issue": [issue]}).to_string(),
    )
        .into_response()
}

/// Constant-time comparison of the bearer token.
fn authorized(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn push(
    State(state): State<PushState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let inner = &state.inner;
    if !authorized(&headers, inner.token.as_deref()) {
        warn!(peer = %peer, "push refused: missing or wrong bearer token");
        return outcome(
            StatusCode::UNAUTHORIZED,
            "login",
            "missing or wrong bearer token: configure Posos with the token of `[push] token`",
            None,
        );
    }
    let read = read_bundle(&body);
    let (status, control_id) = match &read {
        Ok(prescription) => (
            RecordStatus::Accepted,
            prescription.id.clone().unwrap_or_default(),
        ),
        Err(e) => (
            RecordStatus::Rejected {
                reason: format!("channel `{PUSH_CHANNEL}`: {e}"),
            },
            String::new(),
        ),
    };
    let record = InboundRecord {
        channel: PUSH_CHANNEL.to_string(),
        received_at: jiff::Timestamp::now(),
        peer: peer.to_string(),
        sender: "posos".to_string(),
        message_type: "FHIR Bundle".to_string(),
        control_id,
        raw: body.clone(),
        status,
    };
    let journal_id = match inner.store.journal(record).await {
        // The same bundle pushed again after it was mapped and queued (Posos did not see our
        // answer): answer as the first time, do not queue it twice.
        Ok(JournalOutcome::Duplicate {
            id,
            status: EntryStatus::Processed,
        }) => {
            info!(
                journal_id = id,
                "bundle pushed again; already queued, not queued twice"
            );
            return transaction_response(id);
        }
        Ok(outcome) => outcome.id(),
        Err(e) => {
            warn!(error = %e, "push not stored");
            return outcome(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "not stored: the journal could not commit the bundle; push it again",
                None,
            );
        }
    };
    let prescription = match read {
        Ok(prescription) => prescription,
        Err(e) => {
            info!(journal_id, "unusable bundle refused");
            return outcome(StatusCode::BAD_REQUEST, "invalid", &e.to_string(), e.path());
        }
    };
    match deliver(inner, journal_id, &prescription).await {
        Ok(count) => {
            info!(
                journal_id,
                messages = count,
                "prescription mapped and queued"
            );
            let location = format!("Bundle/{journal_id}");
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/fhir+json".to_string()),
                    (header::LOCATION, location.clone()),
                ],
                json!({
                    "resourceType": "Bundle",
                    "type": "transaction-response",
                    "entry": [{"response": {"status": "201 Created", "location": location}}],
                })
                .to_string(),
            )
                .into_response()
        }
        Err(Failure::Mapping(text)) => {
            outcome(StatusCode::UNPROCESSABLE_ENTITY, "processing", &text, None)
        }
        Err(Failure::Store(text)) => outcome(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            &format!("not queued: {text}; push it again"),
            None,
        ),
    }
}

/// The FHIR transaction-response for an accepted bundle; `Location` names its journal row.
fn transaction_response(journal_id: i64) -> Response {
    let location = format!("Bundle/{journal_id}");
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/fhir+json".to_string()),
            (header::LOCATION, location.clone()),
        ],
        json!({
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [{"response": {"status": "201 Created", "location": location}}],
        })
        .to_string(),
    )
        .into_response()
}

enum Failure {
    Mapping(String),
    Store(String),
}

/// Maps the prescription through every route and enqueues the messages (one commit).
async fn deliver(
    inner: &Inner,
    journal_id: i64,
    prescription: &Prescription,
) -> Result<usize, Failure> {
    let census = match &prescription.patient.partner_id {
        Some(id) => inner
            .store
            .census_patient_async(PatientKey::Ipp(id.clone()))
            .await
            .map_err(|e| Failure::Store(e.to_string()))?,
        None => None,
    };
    let prescription_json =
        serde_json::to_value(prescription).map_err(|e| Failure::Mapping(e.to_string()))?;
    let census_json = census_context(census.as_ref(), prescription);
    let now = jiff::Zoned::now()
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let mut items = Vec::new();
    for (index, route) in inner.routes.iter().enumerate() {
        let control_id = format!("OB{journal_id}-{}", index + 1);
        let context = json!({
            "prescription": prescription_json,
            "census": census_json,
            "message": {"control_id": control_id, "now": now},
        });
        let bytes = route.mapping.apply(&context).map_err(|e| {
            Failure::Mapping(format!(
                "mapping for destination `{}` failed: {e}",
                route.destination
            ))
        })?;
        items.push(OutboundItem {
            destination: route.destination.clone(),
            control_id,
            payload: bytes.into(),
            source: format!("journal:{journal_id}"),
        });
    }
    let count = items.len();
    inner
        .store
        .enqueue(items)
        .await
        .map_err(|e| Failure::Store(e.to_string()))?;
    inner
        .store
        .mark_processed(vec![journal_id])
        .await
        .map_err(|e| Failure::Store(e.to_string()))?;
    for route in &inner.routes {
        if let Some(waker) = inner.wakers.get(&route.destination) {
            waker.notify_one();
        }
    }
    Ok(count)
}

/// What the mappings see under `census`: the census patient when known, else what the bundle
/// says of the patient (so a message can still be built).
fn census_context(view: Option<&PatientView>, prescription: &Prescription) -> Value {
    match view {
        Some(view) => {
            let name = view
                .used_name
                .as_ref()
                .or(view.legal_name.as_ref())
                .cloned()
                .unwrap_or_default();
            let current = view.current.as_ref();
            json!({
                "known": true,
                "ipp": view.ipp,
                "ins": view.ins.as_ref().map(|i| i.value.clone()),
                "family": name.family,
                "given": name.given,
                "birth_family": view.legal_name.as_ref().map(|n| n.family.clone()),
                "birth_date": view.birth_date.as_ref().map(|d| d.replace('-', "")),
                "sex": view.sex,
                "nda": current.map(|e| e.nda.clone()),
                "unit": current.and_then(|e| e.unit.clone()),
                "attending": current.and_then(|e| e.attending.as_ref()).map(|p| json!({
                    "rpps": p.rpps, "family": p.family, "given": p.given,
                })),
            })
        }
        None => json!({
            "known": false,
            "ipp": prescription.patient.partner_id,
            "family": prescription.patient.family,
            "given": prescription.patient.given,
            "birth_date": prescription.patient.birth_date.as_ref().map(|d| d.replace('-', "")),
            "sex": prescription.patient.sex,
        }),
    }
}
