//! Documents into the EHR: `POST /fhir/CommunicationRequest/$send-to-ehr` (FHIR `Parameters`
//! in, a tracking URL out) and `GET /fhir/CommunicationRequest/$tracking?transaction-id=…`.
//!
//! # Send
//!
//! 1. The `[fhir]` guard (network, client certificate, credentials) runs before any byte of the
//!    body is read; then the request waits for one of `[documents] max_in_flight` permits, so
//!    50 clients sending 10 MiB at once hold at most that many bodies in memory (the others
//!    wait in their sockets' buffers: TCP backpressure).
//! 2. The body is read up to the size a `max_size` document takes in Base64 (413 past it,
//!    without buffering the rest; the refusal journaled with its first 4 KiB).
//! 3. Everything is checked before anything is accepted ([`crate::http::fhir`]): the
//!    parameters, the Base64 (by chunks, never decoded whole), the size, the content type, the
//!    RPPS; then the patient and the encounter in the census. A refusal is a 4xx
//!    OperationOutcome naming the parameter (422 for a semantic error), journaled as rejected
//!    with the reason and the first 4 KiB.
//! 4. The body is journaled (committed); the same body sent again is a journal duplicate and
//!    gets the first answer (same transaction id), never a second delivery.
//! 5. Every `[[documents.route]]` maps the document (the payload is moved into the mapping
//!    context, not copied) and the messages are enqueued, the journal row marked processed and
//!    the tracking recorded, in one transaction (`Store::deliver_document`); then 200 with
//!    `tracking-url` and `transaction-id`. A mapping refusal rejects the journal row: 422.
//!
//! # Track
//!
//! One `Communication` per destination, from the queue as it is now: `preparation` (queued
//! behind older messages of its destination), `in-progress` (at the head: being sent, or
//! retried after a failure), `completed` (acknowledged; `sent` is when), `entered-in-error`
//! (dead letter: the reason in a note) or `unknown` (its queue row was pruned).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn};

use crate::config::DocumentsConfig;
use crate::http::fhir::{ErrorKind, ParameterError, SendRequest, default_title, read_send_request};
use crate::mapping::Mapping;
use crate::store::{
    CensusLookup, CensusRecord, DeliverOutcome, DocumentTracking, EntryStatus, InboundRecord,
    JournalOutcome, OutboundItem, OutboundStatus, RecordStatus,
};

use super::fhir::{FhirShared, FhirState, guard};
use super::push::{BodyError, OVERSIZE_KEPT, census_view_context, outcome, read_limited};

/// The journal channel of documents (reserved in the configuration).
pub use crate::config::DOCUMENTS_CHANNEL;

/// Room for the JSON around the Base64 payload in a `$send-to-ehr` body.
const BODY_OVERHEAD: usize = 64 * 1024;

struct Route {
    mapping: Mapping,
    destination: String,
    /// An HPRIM mapping toward a file destination: the document is written as a file beside
    /// the message (`filedrop::companion`).
    with_file: bool,
}

#[derive(Clone)]
pub(super) struct DocumentsState {
    inner: Arc<Inner>,
}

struct Inner {
    fhir: Arc<FhirShared>,
    routes: Vec<Route>,
    /// The destinations' workers, poked after an enqueue.
    wakers: BTreeMap<String, Arc<Notify>>,
    /// `[documents] max_size`: the largest decoded document.
    max_size: usize,
    /// The largest body read: `max_size` in Base64 plus the JSON around it.
    body_limit: usize,
    /// `sender-identifier` when the request gives none.
    application_name: String,
    /// `[documents] max_in_flight` requests between reading the body and answering.
    permits: Arc<Semaphore>,
}

impl DocumentsState {
    /// Loads every route's mapping.
    pub(super) fn new(
        config: &DocumentsConfig,
        fhir: &FhirState,
        wakers: BTreeMap<String, Arc<Notify>>,
        file_destinations: &[String],
        permits: Arc<Semaphore>,
    ) -> Result<DocumentsState, String> {
        let mut routes = Vec::new();
        for route in &config.routes {
            let mapping = crate::config::read_mapping(&route.mapping).map_err(|e| e.to_string())?;
            let with_file = mapping.format() == crate::mapping::OutputFormat::Hprim
                && file_destinations.contains(&route.destination);
            routes.push(Route {
                mapping,
                destination: route.destination.clone(),
                with_file,
            });
        }
        Ok(DocumentsState {
            inner: Arc::new(Inner {
                fhir: fhir.shared.clone(),
                routes,
                wakers,
                max_size: config.max_size,
                body_limit: config
                    .max_size
                    .div_ceil(3)
                    .saturating_mul(4)
                    .saturating_add(BODY_OVERHEAD),
                application_name: config.application_name.clone(),
                permits,
            }),
        })
    }
}

/// Every route of `[fhir]` (the census search) and `[documents]` (`$send-to-ehr`,
/// `$tracking`), behind the `[fhir]` guard; `wakers` are the destinations' workers.
pub(super) fn routes(
    config: &crate::config::Config,
    store: crate::store::Store,
    wakers: BTreeMap<String, Arc<Notify>>,
    permits: &std::sync::OnceLock<Arc<Semaphore>>,
) -> Result<Option<Router>, String> {
    let Some(fhir_config) = &config.fhir else {
        return Ok(None);
    };
    let https = config.http.as_ref().is_some_and(|h| h.tls.is_some());
    let fhir_state = FhirState::new(fhir_config, store, https);
    let mut router = super::fhir::router(fhir_state.clone());
    if let Some(documents) = &config.documents {
        let files: Vec<String> = config
            .outbound
            .iter()
            .filter(|(_, d)| matches!(d, crate::config::Destination::File(_)))
            .map(|(name, _)| name.clone())
            .collect();
        // One semaphore for the daemon's life: a reload must not let a second set of bodies in
        // beside the requests still holding permits of the first.
        let permits = permits
            .get_or_init(|| Arc::new(Semaphore::new(documents.max_in_flight.max(1))))
            .clone();
        let state = DocumentsState::new(documents, &fhir_state, wakers, &files, permits)
            .map_err(|e| format!("the document endpoint: {e}"))?;
        router = router.merge(self::router(state, fhir_state));
    }
    Ok(Some(router))
}

/// `$send-to-ehr` and `$tracking`, behind the `[fhir]` guard.
pub(super) fn router(state: DocumentsState, fhir: FhirState) -> Router {
    Router::new()
        .route("/fhir/CommunicationRequest/$send-to-ehr", post(send))
        .route("/fhir/CommunicationRequest/$tracking", get(track))
        .route_layer(axum::middleware::from_fn_with_state(fhir, guard))
        // The body limit is enforced by `read_limited` (413 with an OperationOutcome).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// The journal record of a `$send-to-ehr` body received now from `peer`.
fn document_record(
    peer: SocketAddr,
    control_id: String,
    raw: Bytes,
    status: RecordStatus,
) -> InboundRecord {
    InboundRecord {
        channel: DOCUMENTS_CHANNEL.to_string(),
        received_at: jiff::Timestamp::now(),
        peer: peer.to_string(),
        sender: "fhir".to_string(),
        message_type: "FHIR Parameters".to_string(),
        control_id,
        raw,
        status,
    }
}

/// Journals a refused request (its first 4 KiB and the reason), then answers it.
async fn refuse(inner: &Inner, peer: SocketAddr, body: &[u8], error: &ParameterError) -> Response {
    let head = Bytes::copy_from_slice(&body[..body.len().min(OVERSIZE_KEPT)]);
    let reason = format!("channel `{DOCUMENTS_CHANNEL}`: {error}");
    let record = document_record(peer, String::new(), head, RecordStatus::Rejected { reason });
    match inner.fhir.store.journal(record).await {
        Ok(journaled) => info!(
            peer = %peer,
            journal_id = journaled.id(),
            parameter = error.parameter,
            "document refused"
        ),
        Err(e) => {
            warn!(peer = %peer, error = %e, parameter = error.parameter, "document refused (refusal not journaled)");
        }
    }
    let (status, code) = match error.kind {
        ErrorKind::Structure => (StatusCode::BAD_REQUEST, "structure"),
        ErrorKind::Semantic => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too-costly"),
    };
    outcome(status, code, &error.to_string(), Some(error.parameter))
}

fn semantic(parameter: &'static str, message: String) -> ParameterError {
    ParameterError {
        parameter,
        message,
        kind: ErrorKind::Semantic,
    }
}

fn unavailable(text: &str) -> Response {
    outcome(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        &format!("not accepted: {text}; send it again"),
        None,
    )
}

async fn send(
    State(state): State<DocumentsState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let inner = &state.inner;
    // Bounded memory: at most `max_in_flight` bodies are read and held at once.
    let Ok(_permit) = inner.permits.clone().acquire_owned().await else {
        return unavailable("the daemon is stopping");
    };
    let body = match read_limited(body, inner.body_limit).await {
        Ok(body) => body,
        Err(BodyError::TooLarge { head }) => {
            let error = ParameterError {
                parameter: "payload",
                message: format!(
                    "the request is larger than a document of {} bytes allows: send a smaller document (the limit is set by the ordobridge operator)",
                    inner.max_size
                ),
                kind: ErrorKind::TooLarge,
            };
            return refuse(inner, peer, &head, &error).await;
        }
        Err(BodyError::Broken(e)) => {
            warn!(peer = %peer, error = %e, "document body could not be read");
            return outcome(
                StatusCode::BAD_REQUEST,
                "incomplete",
                "the request body could not be read to its end; send it again",
                None,
            );
        }
    };
    let request = match read_send_request(&body, inner.max_size) {
        Ok(request) => request,
        Err(error) => return refuse(inner, peer, &body, &error).await,
    };
    let record = match resolve(inner, &request).await {
        Ok(record) => record,
        Err(Resolve::Refused(error)) => return refuse(inner, peer, &body, &error).await,
        Err(Resolve::Store(response)) => return response,
    };
    let base = inner.fhir.base_url(&headers);
    // Committed before anything else; the same body again is a duplicate of this row.
    let journaled = inner
        .fhir
        .store
        .journal(document_record(
            peer,
            format!("Patient/{}", request.subject),
            body,
            RecordStatus::Accepted,
        ))
        .await;
    let journal_id = match journaled {
        Ok(JournalOutcome::Duplicate {
            id,
            status: EntryStatus::Processed,
        }) => {
            return answer_done(inner, id, &base, Earlier::Processed).await;
        }
        Ok(journaled) => journaled.id(),
        Err(e) => {
            warn!(error = %e, "document not stored");
            return unavailable("the journal could not commit the document");
        }
    };
    let transaction_id = uuid::Uuid::new_v4().to_string();
    let size = request.size;
    let items = match messages(inner, journal_id, &transaction_id, request, record) {
        Ok(items) => items,
        Err(text) => {
            let reason =
                format!("channel `{DOCUMENTS_CHANNEL}`: no route could map the document: {text}");
            if let Err(e) = inner.fhir.store.reject_accepted(journal_id, reason).await {
                warn!(journal_id, error = %e, "document refused by its mapping; the rejection was not stored");
            }
            info!(journal_id, "document refused by its mapping");
            return outcome(StatusCode::UNPROCESSABLE_ENTITY, "processing", &text, None);
        }
    };
    let destinations: Vec<String> = items.iter().map(|i| i.destination.clone()).collect();
    match inner
        .fhir
        .store
        .deliver_document(journal_id, items, transaction_id.clone())
        .await
    {
        Ok(DeliverOutcome::Queued { ids }) => {
            for destination in &destinations {
                if let Some(waker) = inner.wakers.get(destination) {
                    waker.notify_one();
                }
            }
            info!(
                journal_id,
                transaction_id = %transaction_id,
                size,
                messages = ids.len(),
                "document accepted and queued"
            );
            accepted(&base, &transaction_id)
        }
        // Sent twice at once: the other request delivered it.
        Ok(DeliverOutcome::AlreadyDone) => {
            answer_done(inner, journal_id, &base, Earlier::Concurrent).await
        }
        Err(e) => {
            warn!(journal_id, error = %e, "document not queued");
            unavailable("the queue could not commit the document")
        }
    }
}

/// Why the patient or encounter could not be used.
enum Resolve {
    Refused(ParameterError),
    Store(Response),
}

/// The census record of the subject, with `current` = the context encounter when given (it
/// must be one of the patient's), else the patient's current encounter.
async fn resolve(inner: &Inner, request: &SendRequest) -> Result<CensusRecord, Resolve> {
    let read = |lookup| async {
        inner.fhir.store.census_record(lookup).await.map_err(|e| {
            warn!(error = %e, "document: census read failed");
            Resolve::Store(unavailable("the census could not be read"))
        })
    };
    let Some(patient) = read(CensusLookup::Patient(request.subject)).await? else {
        return Err(Resolve::Refused(semantic(
            "subject",
            format!(
                "no `Patient/{}` in the census: find the patient with `GET /fhir/Patient?identifier=…`",
                request.subject
            ),
        )));
    };
    let Some(context) = request.context else {
        return Ok(patient);
    };
    match read(CensusLookup::Encounter(context)).await? {
        Some(record) if record.patient_id == patient.patient_id => Ok(record),
        Some(_) => Err(Resolve::Refused(semantic(
            "context",
            format!(
                "`Encounter/{context}` is not an encounter of `Patient/{}`: find its encounters with `GET /fhir/Encounter?patient={}`",
                request.subject, request.subject
            ),
        ))),
        None => Err(Resolve::Refused(semantic(
            "context",
            format!(
                "no `Encounter/{context}` in the census: find the patient's encounters with `GET /fhir/Encounter?patient={}`",
                request.subject
            ),
        ))),
    }
}

/// The messages of a document, one per route whose `[message] when` holds. The payload is
/// moved into the context once; each route's message is written from it.
fn messages(
    inner: &Inner,
    journal_id: i64,
    transaction_id: &str,
    mut request: SendRequest,
    record: CensusRecord,
) -> Result<Vec<OutboundItem>, String> {
    let now = jiff::Zoned::now()
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let payload = std::mem::take(&mut request.payload_base64);
    let mut context = document_context(
        &request,
        &record,
        transaction_id,
        &inner.application_name,
        &now,
    );
    if let Some(Value::Object(document)) = context.get_mut("document") {
        document.insert("payload_base64".into(), Value::String(payload));
    }
    let mut items = Vec::with_capacity(inner.routes.len());
    // Decoded once, for the routes that write it as a file (checked Base64: cannot fail).
    let mut decoded: Option<Vec<u8>> = None;
    for (index, route) in inner.routes.iter().enumerate() {
        let control_id = format!("DOC{journal_id}-{}", index + 1);
        if let Some(Value::Object(message)) = context.get_mut("message") {
            message.insert("control_id".into(), Value::String(control_id.clone()));
        }
        let failed = |e: crate::mapping::ApplyError| {
            format!(
                "mapping for destination `{}` failed: {e}",
                route.destination
            )
        };
        if !route.mapping.applies(&context).map_err(failed)? {
            info!(journal_id, destination = %route.destination, "no message for this destination: the mapping's `[message] when` is false");
            continue;
        }
        let mut bytes = route.mapping.apply(&context).map_err(failed)?;
        if route.with_file {
            if decoded.is_none() {
                use base64::Engine as _;
                let text = context["document"]["payload_base64"]
                    .as_str()
                    .unwrap_or_default();
                decoded = Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|e| format!("the payload could not be decoded: {e}"))?,
                );
            }
            bytes = crate::filedrop::companion::encode(
                &bytes,
                context["document"]["extension"].as_str().unwrap_or("bin"),
                decoded.as_deref().unwrap_or_default(),
            );
        }
        items.push(OutboundItem {
            destination: route.destination.clone(),
            control_id,
            payload: bytes.into(),
            source: format!("journal:{journal_id}"),
        });
    }
    if items.is_empty() {
        let destinations: Vec<&str> = inner
            .routes
            .iter()
            .map(|r| r.destination.as_str())
            .collect();
        return Err(format!(
            "no route takes this document: the `[message] when` of every `[[documents.route]]` mapping is false for it (destinations: {}); send a document type a route accepts, or add a route",
            destinations.join(", ")
        ));
    }
    Ok(items)
}

/// What the mappings see: `document.*` (the request's metadata; `payload_base64` is added by
/// the caller), `census.*` (the patient and the encounter of the document) and `message.*`.
pub(super) fn document_context(
    request: &SendRequest,
    record: &CensusRecord,
    transaction_id: &str,
    application_name: &str,
    now: &str,
) -> Value {
    let view = &record.view;
    let name = view.used_name.as_ref().or(view.legal_name.as_ref());
    let birth = view
        .birth_date
        .as_deref()
        .map(|d| d.replace('-', ""))
        .unwrap_or_default();
    let title = request.title.clone().unwrap_or_else(|| {
        default_title(
            &name.map(|n| n.family.to_uppercase()).unwrap_or_default(),
            &name.map(|n| n.given.to_uppercase()).unwrap_or_default(),
            birth.get(..8).unwrap_or(&birth),
            &request.document_type,
            // The first group of the transaction id: enough to tell two documents apart.
            transaction_id.split('-').next().unwrap_or(transaction_id),
        )
    });
    let encounter_id = view
        .current
        .as_ref()
        .and_then(|e| record.encounter_id(&e.nda));
    let mut document = Map::new();
    document.insert("transaction_id".into(), json!(transaction_id));
    document.insert("title".into(), json!(title));
    document.insert(
        "type".into(),
        json!({"code": request.document_type, "display": request.document_type_display, "system": "LN"}),
    );
    document.insert("content_type".into(), json!(request.content_type.mime));
    document.insert("hl7_type".into(), json!(request.content_type.hl7_type));
    document.insert(
        "hl7_subtype".into(),
        json!(request.content_type.hl7_subtype),
    );
    document.insert("extension".into(), json!(request.content_type.extension));
    document.insert("size".into(), json!(request.size));
    document.insert(
        "sender".into(),
        match &request.sender_rpps {
            Some(rpps) => json!({"rpps": rpps, "id": rpps, "type": "RPPS"}),
            None => json!({"id": application_name}),
        },
    );
    document.insert("received_at".into(), json!(now));
    document.insert("patient_id".into(), json!(record.patient_id.to_string()));
    document.insert(
        "encounter_id".into(),
        json!(encounter_id.map(|id| id.to_string())),
    );
    json!({
        "document": Value::Object(document),
        "census": census_view_context(view),
        "message": {"control_id": "", "now": now},
    })
}

/// 200 for a document already delivered (the same body sent again): its first answer.
/// How the earlier copy of a document sent again was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Earlier {
    /// Its journal row is processed: it was queued, maybe long ago.
    Processed,
    /// Another request queued it a moment ago.
    Concurrent,
}

async fn answer_done(inner: &Inner, journal_id: i64, base: &str, earlier: Earlier) -> Response {
    match inner.fhir.store.document_by_journal(journal_id).await {
        Ok(Some(tracking)) => {
            info!(journal_id, transaction_id = %tracking.transaction_id, "document sent again; already queued, not queued twice");
            accepted(base, &tracking.transaction_id)
        }
        // Processed long ago: its tracking went with `tracking_retention`.
        Ok(None) if earlier == Earlier::Processed => outcome(
            StatusCode::CONFLICT,
            "duplicate",
            &format!(
                "this document was already delivered (journal row {journal_id}); its tracking is older than `[documents] tracking_retention` and no longer kept: nothing was sent again"
            ),
            None,
        ),
        Ok(None) => unavailable("the document is being accepted by an earlier request"),
        Err(e) => {
            warn!(journal_id, error = %e, "document tracking not readable");
            unavailable("the tracking could not be read")
        }
    }
}

fn tracking_url(base: &str, transaction_id: &str) -> String {
    format!("{base}/fhir/CommunicationRequest/$tracking?transaction-id={transaction_id}")
}

/// The 200 answer: `Parameters` with `tracking-url` and `transaction-id`.
fn accepted(base: &str, transaction_id: &str) -> Response {
    let url = tracking_url(base, transaction_id);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/fhir+json".to_string()),
            (header::LOCATION, url.clone()),
        ],
        json!({
            "resourceType": "Parameters",
            "parameter": [
                {"name": "tracking-url", "valueUrl": url},
                {"name": "transaction-id", "valueString": transaction_id},
            ],
        })
        .to_string(),
    )
        .into_response()
}

async fn track(
    State(state): State<DocumentsState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(transaction_id) = query.get("transaction-id").filter(|t| !t.is_empty()) else {
        return outcome(
            StatusCode::BAD_REQUEST,
            "required",
            "missing `transaction-id`: use the `tracking-url` that `$send-to-ehr` answered",
            Some("transaction-id"),
        );
    };
    match state
        .inner
        .fhir
        .store
        .document_tracking(transaction_id.clone())
        .await
    {
        Ok(Some(tracking)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            tracking_bundle(&tracking).to_string(),
        )
            .into_response(),
        Ok(None) => outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            &format!(
                "no document with transaction id `{}`: it was never accepted, or its tracking is older than the retention",
                transaction_id.escape_debug()
            ),
            Some("transaction-id"),
        ),
        Err(e) => {
            warn!(error = %e, "document tracking not readable");
            outcome(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "the tracking could not be read; try again",
                None,
            )
        }
    }
}

/// The `Communication.status` of one message (see the module docs) and its note.
fn communication_status(message: &crate::store::TrackedMessage) -> (&'static str, Option<String>) {
    let Some(state) = &message.state else {
        return ("unknown", None);
    };
    match state.status {
        OutboundStatus::Delivered => ("completed", None),
        OutboundStatus::Dead => (
            "entered-in-error",
            Some(
                state
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "dead letter".to_string()),
            ),
        ),
        OutboundStatus::Pending if state.attempts == 0 && state.waiting_behind => {
            ("preparation", None)
        }
        OutboundStatus::Pending => ("in-progress", state.last_error.clone()),
    }
}

/// A `collection` Bundle with one `Communication` per destination.
fn tracking_bundle(tracking: &DocumentTracking) -> Value {
    let entries: Vec<Value> = tracking
        .messages
        .iter()
        .map(|message| {
            let (status, note) = communication_status(message);
            let mut communication = json!({
                "resourceType": "Communication",
                "id": format!("{}-{}", tracking.transaction_id, message.outbound_id),
                "identifier": [{"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", tracking.transaction_id)}],
                "status": status,
                "recipient": [{"display": message.destination}],
                "extension": [{"url": "urn:ordobridge:accepted-at", "valueDateTime": format!("{:.0}", tracking.accepted_at)}],
            });
            if let Some(sent) = message.state.as_ref().and_then(|s| s.delivered_at) {
                communication["sent"] = json!(format!("{sent:.0}"));
            }
            if let Some(text) = note {
                communication["note"] = json!([{"text": text}]);
            }
            json!({"resource": communication})
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "total": entries.len(),
        "entry": entries,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{MessageState, TrackedMessage};
    use rstest::rstest;

    fn message(status: Option<(OutboundStatus, u32, bool)>) -> TrackedMessage {
        TrackedMessage {
            destination: "ehr".into(),
            outbound_id: 1,
            state: status.map(|(status, attempts, waiting_behind)| MessageState {
                status,
                attempts,
                waiting_behind,
                delivered_at: None,
                dead_at: None,
                last_error: Some("AR: unknown patient".into()),
            }),
        }
    }

    #[rstest]
    #[case::ok_waiting(Some((OutboundStatus::Pending, 0, true)), "preparation", None)]
    #[case::ok_head(Some((OutboundStatus::Pending, 0, false)), "in-progress", Some("AR: unknown patient"))]
    #[case::ok_retried(Some((OutboundStatus::Pending, 2, true)), "in-progress", Some("AR: unknown patient"))]
    #[case::ok_delivered(Some((OutboundStatus::Delivered, 1, false)), "completed", None)]
    #[case::ok_dead(Some((OutboundStatus::Dead, 1, false)), "entered-in-error", Some("AR: unknown patient"))]
    #[case::ok_pruned(None, "unknown", None)]
    fn ok_communication_status(
        #[case] state: Option<(OutboundStatus, u32, bool)>,
        #[case] status: &str,
        #[case] note: Option<&str>,
    ) {
        let (got, got_note) = communication_status(&message(state));
        assert_eq!((got, got_note.as_deref()), (status, note));
    }
}
