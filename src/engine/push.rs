//! The FHIR push endpoint: Posos pushes a validated prescription as to a FHIR server
//! (`POST /fhir` with a transaction Bundle, or `POST /fhir/Bundle`), bare or wrapped as
//! `{"fhirBundle": …}`.
//!
//! An unusable body is journaled as rejected and answered 400 with a FHIR OperationOutcome
//! naming the JSON path of the problem. A usable bundle is read into the normalized
//! prescription and completed with what the census knows of the patient (its `id://partner`
//! identifier is the `patientId` the launch passed: the IPP by default), read in the same
//! transaction. It is journaled, mapped through every configured route and its messages
//! enqueued on their destinations' durable queues in ONE commit ([`Store::journal_push`]),
//! before the 200 answer: the destinations' workers can send at once; or, its patient unknown,
//! journaled and held in one commit (below). Each outbound message gets a control id (MSH-10)
//! derived from the journal id (`OB{id}-{route}`), known inside that transaction, stable
//! across retries. A bundle no route can map is journaled `rejected` with the reason in the
//! same commit and answered 422. When the census cannot be read, the bundle is journaled
//! unmapped and settled as the sweeper does (503 if the census still cannot be read: Posos
//! pushes it again, or the sweeper maps it later).
//!
//! # Unknown patients
//!
//! When the census does not know the patient and `[push] hold_unknown_for` is not zero, the
//! bundle is held (its hold committed in `push_holds` with its journal row, in the same
//! transaction) and answered 200 at once: it is safely stored,
//! Posos must not push it again. The transaction-response entry then says
//! `"status": "202 Accepted"` with an informational OperationOutcome naming the hold. The
//! releaser (`engine::hold`) maps it when the ADT arrives, or at the end of the hold with what
//! the bundle says. The bundle is first mapped once with what it says, so a bundle that cannot
//! be mapped at all is refused (422) now rather than failing later behind a 200. A bundle
//! without an `id://partner` identifier is never held (nothing could resolve it).
//!
//! # Authentication
//!
//! `[push] token` (bearer) and `basic_user`/`basic_password` (basic): a request passes when it
//! satisfies one configured scheme (constant-time comparisons); otherwise 401 with one
//! `WWW-Authenticate` challenge per configured scheme and an OperationOutcome
//! ([`crate::http::credentials`], shared with the `/fhir` search and document routes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::config::PushConfig;
use crate::http::credentials::Credentials;
use crate::mapping::{Mapping, PushContext};
use crate::posos::bundle::{Prescription, read_bundle};
use crate::store::{
    DeliverOutcome, EntryStatus, InboundRecord, JournalOutcome, Mapped, OutboundItem, PatientKey,
    PatientView, PushMapper, PushOutcome, RecordStatus, ReleaseReason, Store,
};
use crate::tls::PeerCertificate;

/// The journal channel of pushed bundles (named in the configuration, where `[push]
/// retention` applies to it).
pub use crate::config::PUSH_CHANNEL;

/// One compiled route: a mapping and the destination of its messages.
struct Route {
    mapping: Mapping,
    destination: String,
}

/// Maps pushed bundles and settles them in the store: the one place that turns a bundle into
/// queued messages, for the push endpoint and the releaser of held bundles alike.
pub(super) struct Deliverer {
    routes: Vec<Route>,
    store: Store,
    /// The destinations' workers, poked after an enqueue.
    wakers: BTreeMap<String, Arc<Notify>>,
    /// `[push] hold_unknown_for`; zero: never hold, map at once with what the bundle says.
    hold_for: Duration,
    /// Poked after a hold is committed, so the releaser looks again (the ADT may have been
    /// applied between the census look-up and the hold).
    hold_wake: Arc<Notify>,
}

/// What became of a bundle [`Deliverer::settle`] took.
#[derive(Debug)]
pub(super) enum Settled {
    /// Mapped and queued: this many messages; `known`: the census knew the patient.
    Queued { messages: usize, known: bool },
    /// An earlier push of the same bundle queued it already.
    AlreadyDone,
    /// Held until its patient is known or `release_at`; `newly`: not held before.
    Held {
        release_at: jiff::Timestamp,
        newly: bool,
    },
    /// No route could map it: final. The journal row is rejected with `reason`, unless
    /// storing the rejection failed (`recorded` false: the row is still `accepted`).
    Refused { reason: String, recorded: bool },
}

/// Why a bundle could not be mapped and queued.
#[derive(Debug)]
pub(super) enum Failure {
    /// A mapping refused the bundle: retrying the same bundle will not help.
    Mapping(String),
    /// The store could not read or commit: transient.
    Store(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mapping(text) | Self::Store(text) => f.write_str(text),
        }
    }
}

impl Deliverer {
    /// Loads every route's mapping.
    pub(super) fn new(
        config: &PushConfig,
        store: Store,
        wakers: BTreeMap<String, Arc<Notify>>,
        hold_wake: Arc<Notify>,
    ) -> Result<Deliverer, String> {
        let mut routes = Vec::new();
        for route in &config.routes {
            let mapping = crate::config::read_mapping(&route.mapping).map_err(|e| e.to_string())?;
            routes.push(Route {
                mapping,
                destination: route.destination.clone(),
            });
        }
        Ok(Deliverer {
            routes,
            store,
            wakers,
            hold_for: config.hold_unknown_for,
            hold_wake,
        })
    }

    /// Settles journal row `journal_id` as the push endpoint does, for it and for the sweeper
    /// of unsettled pushes: held when the census does not know the patient (holds on, and the
    /// bundle names its `id://partner`), else mapped and queued. A mapping refusal is final:
    /// the row becomes `rejected` with the reason, so none stays `accepted` behind an error.
    /// `Err` only for store trouble (transient: the row stays `accepted`).
    pub(super) async fn settle(
        &self,
        journal_id: i64,
        prescription: &Prescription,
    ) -> Result<Settled, Failure> {
        let census = self.census(prescription).await?;
        let result = match self.held_for(census.as_ref(), prescription) {
            Some(partner_id) => self.hold(journal_id, prescription, partner_id).await,
            None => match self
                .deliver(journal_id, prescription, census.as_ref(), None)
                .await
            {
                Ok(DeliverOutcome::Queued { ids }) => Ok(Settled::Queued {
                    messages: ids.len(),
                    known: census.is_some(),
                }),
                Ok(DeliverOutcome::AlreadyDone) => Ok(Settled::AlreadyDone),
                Err(failure) => Err(failure),
            },
        };
        match result {
            Err(Failure::Mapping(text)) => Ok(self.refuse(journal_id, &text).await),
            other => other,
        }
    }

    /// The partner id to hold the bundle under: the census does not know the patient
    /// (`census` `None`), holds are on and the bundle names its `id://partner`.
    fn held_for(
        &self,
        census: Option<&PatientView>,
        prescription: &Prescription,
    ) -> Option<String> {
        census
            .is_none()
            .then(|| prescription.patient.partner_id.clone())
            .flatten()
            .filter(|_| !self.hold_for.is_zero())
    }

    /// The mapper of [`Store::journal_push`], given the census view of the bundle's patient
    /// (its `id://partner` identifier) read in the push's transaction (just before it on
    /// PostgreSQL): held when it is to be ([`Deliverer::held_for`]; refused now if it could
    /// never be mapped, rather than later behind a 200), else its messages (see
    /// [`Deliverer::messages`]), or the journal reason of a refusal ([`refusal_reason`]).
    fn mapper(self: &Arc<Self>, prescription: Arc<Prescription>) -> PushMapper {
        let deliverer = Arc::clone(self);
        let patient = prescription.patient.partner_id.clone().map(PatientKey::Ipp);
        PushMapper::new(patient, move |journal_id, census| {
            if let Some(partner_id) = deliverer.held_for(census, &prescription) {
                return match deliverer.messages(journal_id, &prescription, None) {
                    Ok(_) => Mapped::Hold {
                        partner_id,
                        release_at: release_time(jiff::Timestamp::now(), deliverer.hold_for),
                    },
                    Err(failure) => Mapped::Refuse(refusal_reason(&failure.to_string())),
                };
            }
            match deliverer.messages(journal_id, &prescription, census) {
                Ok(items) => Mapped::Queue(items),
                Err(failure) => Mapped::Refuse(refusal_reason(&failure.to_string())),
            }
        })
    }

    /// Wakes the workers of every route's destination (after an enqueue committed).
    fn wake_destinations(&self) {
        for route in &self.routes {
            if let Some(waker) = self.wakers.get(&route.destination) {
                waker.notify_one();
            }
        }
    }

    /// Holds a bundle whose patient the census does not know (see the module docs).
    async fn hold(
        &self,
        journal_id: i64,
        prescription: &Prescription,
        partner_id: String,
    ) -> Result<Settled, Failure> {
        // Refuse now what could never be mapped, rather than later behind a 200.
        self.messages(journal_id, prescription, None)?;
        let release_at = release_time(jiff::Timestamp::now(), self.hold_for);
        let newly = self
            .store
            .hold(journal_id, partner_id, release_at)
            .await
            .map_err(|e| Failure::Store(e.to_string()))?;
        self.hold_wake.notify_one();
        Ok(Settled::Held { release_at, newly })
    }

    /// Rejects the journal row of a bundle no route could map.
    async fn refuse(&self, journal_id: i64, text: &str) -> Settled {
        let reason = refusal_reason(text);
        let recorded = match self.store.reject_accepted(journal_id, reason).await {
            Ok(_) => true,
            Err(e) => {
                warn!(journal_id, error = %e, "bundle refused by its mapping; the rejection was not stored");
                false
            }
        };
        Settled::Refused {
            reason: text.to_string(),
            recorded,
        }
    }

    /// The census view of the bundle's patient (by its `id://partner` identifier), if any.
    pub(super) async fn census(
        &self,
        prescription: &Prescription,
    ) -> Result<Option<PatientView>, Failure> {
        match &prescription.patient.partner_id {
            Some(id) => self
                .store
                .census_patient_async(PatientKey::Ipp(id.clone()))
                .await
                .map_err(|e| Failure::Store(e.to_string())),
            None => Ok(None),
        }
    }

    /// The messages of a bundle, one per route; `census` `None` maps with what the bundle
    /// says of the patient (`census.known = false`).
    pub(super) fn messages(
        &self,
        journal_id: i64,
        prescription: &Prescription,
        census: Option<&PatientView>,
    ) -> Result<Vec<OutboundItem>, Failure> {
        let now = jiff::Zoned::now()
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string();
        let mut context =
            PushContext::new(prescription, census_context(census, prescription), &now)
                .map_err(|e| Failure::Mapping(e.to_string()))?;
        let mut items = Vec::with_capacity(self.routes.len());
        for (index, route) in self.routes.iter().enumerate() {
            let control_id = format!("OB{journal_id}-{}", index + 1);
            let context = context.for_message(&control_id);
            let failed = |e: crate::mapping::ApplyError| {
                Failure::Mapping(format!(
                    "mapping for destination `{}` failed: {e}",
                    route.destination
                ))
            };
            // `[message] when` false: this route sends nothing for this bundle (an order
            // message for a bundle without lines, say); the others still do.
            if !route.mapping.applies(context).map_err(failed)? {
                info!(
                    journal_id,
                    destination = %route.destination,
                    "no message for this destination: the mapping's `[message] when` is false"
                );
                continue;
            }
            let bytes = route.mapping.apply(context).map_err(failed)?;
            items.push(OutboundItem {
                destination: route.destination.clone(),
                control_id,
                payload: bytes.into(),
                source: format!("journal:{journal_id}"),
            });
        }
        Ok(items)
    }

    /// Maps the bundle and settles it in ONE store transaction: messages enqueued, journal row
    /// processed and, with `release`, its hold released; then wakes the destinations.
    pub(super) async fn deliver(
        &self,
        journal_id: i64,
        prescription: &Prescription,
        census: Option<&PatientView>,
        release: Option<ReleaseReason>,
    ) -> Result<DeliverOutcome, Failure> {
        let items = self.messages(journal_id, prescription, census)?;
        let outcome = self
            .store
            .deliver_bundle(journal_id, items, release)
            .await
            .map_err(|e| Failure::Store(e.to_string()))?;
        if matches!(outcome, DeliverOutcome::Queued { .. }) {
            self.wake_destinations();
        }
        Ok(outcome)
    }
}

/// The journal reason of a bundle no route could map (`text`: the mapping's error).
fn refusal_reason(text: &str) -> String {
    format!("channel `{PUSH_CHANNEL}`: no route could map the bundle: {text}")
}

/// The mapping's error in a reason made by [`refusal_reason`] (for the 422 answer).
fn refusal_text(reason: &str) -> &str {
    reason
        .strip_prefix(refusal_reason("").as_str())
        .unwrap_or(reason)
}

#[derive(Clone)]
pub(super) struct PushState {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Credentials,
    /// Refuse callers whose TLS connection carries no verified client certificate.
    require_client_cert: bool,
    /// `[push] max_body`: the most bytes of a body read.
    max_body: usize,
    deliverer: Arc<Deliverer>,
    store: Store,
}

impl PushState {
    pub(super) fn new(config: &PushConfig, store: Store, deliverer: Arc<Deliverer>) -> PushState {
        PushState {
            inner: Arc::new(Inner {
                auth: Credentials {
                    token: config.token.clone(),
                    basic: config
                        .basic
                        .as_ref()
                        .map(|b| format!("{}:{}", b.user, b.password)),
                    name: "push",
                },
                require_client_cert: config.require_client_cert,
                max_body: config.max_body,
                deliverer,
                store,
            }),
        }
    }
}

pub(super) fn router(state: PushState) -> Router {
    Router::new()
        .route("/fhir", post(push))
        .route("/fhir/Bundle", post(push))
        // `[push] max_body` is enforced by `read_limited`, which journals the refusal.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// A FHIR OperationOutcome answer.
pub(super) fn outcome(
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

/// How much of an oversized body is kept in the journal, for whoever investigates.
pub(super) const OVERSIZE_KEPT: usize = 4096;

/// Why a push body was not read whole.
#[derive(Debug)]
pub(super) enum BodyError {
    /// Past the limit: reading stopped there; the first [`OVERSIZE_KEPT`] bytes.
    TooLarge { head: Bytes },
    /// The connection failed or the body was malformed on the wire.
    Broken(axum::Error),
}

/// Reads a body of at most `limit` bytes, frame by frame: a larger one is never buffered
/// (a `Content-Length` over the limit is refused before reading past the first frame).
pub(super) async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt as _;
    let declared = http_body::Body::size_hint(&body).exact();
    let mut body = body;
    // A declared length within the limit is allocated once (no doubling while reading: a
    // 20 MiB document would otherwise hold up to twice its size).
    let mut collected = bytes::BytesMut::with_capacity(
        declared
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= limit)
            .unwrap_or(0),
    );
    let too_large = |collected: &bytes::BytesMut| BodyError::TooLarge {
        head: Bytes::copy_from_slice(&collected[..collected.len().min(OVERSIZE_KEPT)]),
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Broken)?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > limit {
                let room = OVERSIZE_KEPT.saturating_sub(collected.len());
                collected.extend_from_slice(&data[..data.len().min(room)]);
                return Err(too_large(&collected));
            }
            collected.extend_from_slice(&data);
        }
        if declared.is_some_and(|n| n > limit as u64) && collected.len() >= OVERSIZE_KEPT {
            return Err(too_large(&collected));
        }
    }
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(&collected));
    }
    Ok(collected.freeze())
}

/// The journal record of a pushed body received now from `peer`.
fn push_record(
    peer: SocketAddr,
    control_id: String,
    raw: Bytes,
    status: RecordStatus,
) -> InboundRecord {
    InboundRecord {
        channel: PUSH_CHANNEL.to_string(),
        received_at: jiff::Timestamp::now(),
        peer: peer.to_string(),
        sender: "posos".to_string(),
        message_type: "FHIR Bundle".to_string(),
        control_id,
        raw,
        status,
    }
}

/// 413 for a body over `[push] max_body`, after journaling the refusal with its first 4 KiB.
async fn refuse_oversize(state: &PushState, peer: SocketAddr, head: Bytes) -> Response {
    let limit = state.inner.max_body;
    let reason = format!(
        "channel `{PUSH_CHANNEL}`: the body is larger than the {limit} bytes allowed (`max_body`); only its first {} bytes are kept",
        head.len()
    );
    let record = push_record(peer, String::new(), head, RecordStatus::Rejected { reason });
    match state.inner.store.journal(record).await {
        Ok(journaled) => warn!(
            peer = %peer,
            journal_id = journaled.id(),
            limit,
            "push refused: body too large"
        ),
        Err(e) => {
            warn!(peer = %peer, error = %e, limit, "push refused: body too large (refusal not journaled)")
        }
    }
    outcome(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-costly",
        &format!(
            "the bundle is larger than the {limit} bytes this endpoint accepts: send a smaller bundle (the limit is set by the ordobridge operator)"
        ),
        None,
    )
}

fn store_failure(text: &str) -> Response {
    outcome(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        &format!("not queued: {text}; push it again"),
        None,
    )
}

async fn push(
    State(state): State<PushState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    let inner = &state.inner;
    if inner.require_client_cert && request.extensions().get::<PeerCertificate>().is_none() {
        warn!(peer = %peer, "push refused: no verified TLS client certificate");
        return outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a TLS client certificate is required: connect over HTTPS presenting a certificate signed by the CA this endpoint trusts",
            None,
        );
    }
    let (parts, body) = request.into_parts();
    // Credentials first: a caller without them gets 401 before one byte of its body is read.
    if !inner.auth.allows(&parts.headers) {
        warn!(peer = %peer, "push refused: missing or wrong credentials");
        let mut response = outcome(
            StatusCode::UNAUTHORIZED,
            "login",
            &inner.auth.diagnostics(),
            None,
        );
        for challenge in inner.auth.challenges() {
            response.headers_mut().append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        return response;
    }
    let body = match read_limited(body, inner.max_body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge { head }) => {
            return refuse_oversize(&state, peer, head).await;
        }
        Err(BodyError::Broken(e)) => {
            warn!(peer = %peer, error = %e, "push body could not be read");
            return outcome(
                StatusCode::BAD_REQUEST,
                "incomplete",
                "the request body could not be read to its end; push it again",
                None,
            );
        }
    };
    let prescription = match read_bundle(&body) {
        Ok(prescription) => Arc::new(prescription),
        Err(e) => {
            let reason = format!("channel `{PUSH_CHANNEL}`: {e}");
            let record = push_record(peer, String::new(), body, RecordStatus::Rejected { reason });
            return match inner.store.journal(record).await {
                Ok(journaled) => {
                    info!(journal_id = journaled.id(), "unusable bundle refused");
                    outcome(StatusCode::BAD_REQUEST, "invalid", &e.to_string(), e.path())
                }
                Err(e) => not_stored(&e),
            };
        }
    };
    let control_id = prescription.id.clone().unwrap_or_default();
    let record = push_record(peer, control_id, body, RecordStatus::Accepted);
    let deliverer = &inner.deliverer;
    // Journaled, then mapped and queued or held, in one commit before the answer.
    let mapper = deliverer.mapper(Arc::clone(&prescription));
    let journaled = match inner.store.journal_push(record, mapper).await {
        Ok(PushOutcome::Queued { id, ids, known }) => {
            deliverer.wake_destinations();
            info!(
                journal_id = id,
                messages = ids.len(),
                known,
                "prescription mapped and queued"
            );
            return transaction_response(id);
        }
        Ok(PushOutcome::Refused { id, reason }) => {
            info!(
                journal_id = id,
                "bundle refused by its mapping; journal row rejected"
            );
            return failure_response(&Failure::Mapping(refusal_text(&reason).to_owned()));
        }
        Ok(PushOutcome::Held { id, release_at }) => {
            deliverer.hold_wake.notify_one();
            info!(
                journal_id = id,
                newly = true,
                release_at = %release_at,
                "patient not in the census yet; bundle held until its ADT arrives"
            );
            return held_response(id, release_at);
        }
        // The census could not be read: settled as the sweeper does.
        Ok(PushOutcome::Unsettled { id, error }) => {
            warn!(journal_id = id, %error, "push: the census could not be read; the bundle is journaled unmapped and settled now or by the sweeper");
            JournalOutcome::Stored { id }
        }
        Ok(PushOutcome::Duplicate { id, status }) => JournalOutcome::Duplicate { id, status },
        Err(e) => return not_stored(&e),
    };
    settle_journaled(&state, journaled, &prescription).await
}

/// 503 for a push the journal could not commit.
fn not_stored(e: &crate::store::StoreError) -> Response {
    warn!(error = %e, "push not stored");
    outcome(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        "not stored: the journal could not commit the bundle; push it again",
        None,
    )
}

/// Settles a usable bundle once journaled (two commits: held, mapped and queued, or already
/// done by an earlier push of the same bundle).
async fn settle_journaled(
    state: &PushState,
    journaled: JournalOutcome,
    prescription: &Prescription,
) -> Response {
    let inner = &state.inner;
    let journal_id = match journaled {
        // The same bundle pushed again after it was mapped and queued (Posos did not see our
        // answer): answer as the first time, do not queue it twice.
        JournalOutcome::Duplicate {
            id,
            status: EntryStatus::Processed,
        } => {
            info!(
                journal_id = id,
                "bundle pushed again; already queued, not queued twice"
            );
            return transaction_response(id);
        }
        journaled => journaled.id(),
    };
    // Pushed again while held (the journal deduplicates by content hash): answer as the
    // first time, do not hold it twice.
    if matches!(journaled, JournalOutcome::Duplicate { .. }) {
        match inner.store.held_bundle(journal_id).await {
            Ok(Some(hold)) => {
                info!(
                    journal_id,
                    "bundle pushed again; already held, not held twice"
                );
                return held_response(journal_id, hold.release_at);
            }
            Ok(None) => {}
            Err(e) => return store_failure(&e.to_string()),
        }
    }
    match inner.deliverer.settle(journal_id, prescription).await {
        Ok(Settled::Queued { messages, known }) => {
            info!(
                journal_id,
                messages, known, "prescription mapped and queued"
            );
            transaction_response(journal_id)
        }
        Ok(Settled::AlreadyDone) => {
            info!(
                journal_id,
                "bundle pushed again; queued by the first push, not queued twice"
            );
            transaction_response(journal_id)
        }
        Ok(Settled::Held { release_at, newly }) => {
            info!(
                journal_id,
                newly,
                release_at = %release_at,
                "patient not in the census yet; bundle held until its ADT arrives"
            );
            held_response(journal_id, release_at)
        }
        Ok(Settled::Refused { reason, recorded }) => {
            if recorded {
                info!(
                    journal_id,
                    "bundle refused by its mapping; journal row rejected"
                );
            }
            failure_response(&Failure::Mapping(reason))
        }
        Err(failure) => {
            warn!(journal_id, error = %failure, "push not settled");
            failure_response(&failure)
        }
    }
}

/// `now + hold`, saturating at the latest time jiff knows (a hold of centuries is "never").
fn release_time(now: jiff::Timestamp, hold: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(hold)
        .ok()
        .and_then(|hold| now.checked_add(hold).ok())
        .unwrap_or(jiff::Timestamp::MAX)
}

fn failure_response(failure: &Failure) -> Response {
    match failure {
        Failure::Mapping(text) => {
            outcome(StatusCode::UNPROCESSABLE_ENTITY, "processing", text, None)
        }
        Failure::Store(text) => store_failure(text),
    }
}

/// The FHIR transaction-response for an accepted bundle; `Location` names its journal row.
fn transaction_response(journal_id: i64) -> Response {
    let location = format!("Bundle/{journal_id}");
    bundle_response(
        &location,
        json!({"status": "201 Created", "location": location}),
    )
}

/// The answer for a held bundle: 200 (stored, do not push again), the entry `202 Accepted`
/// with an informational outcome naming the hold (no patient data).
fn held_response(journal_id: i64, release_at: jiff::Timestamp) -> Response {
    let location = format!("Bundle/{journal_id}");
    let diagnostics = format!(
        "held: the patient is not in the census yet; the prescription is mapped when its ADT \
         arrives, or at {release_at:.0} with what the bundle says"
    );
    bundle_response(
        &location,
        json!({
            "status": "202 Accepted",
            "location": location,
            "outcome": {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "information", "code": "informational",
                           "diagnostics": diagnostics}],
            },
        }),
    )
}

fn bundle_response(location: &str, entry_response: Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/fhir+json".to_string()),
            (header::LOCATION, location.to_string()),
        ],
        json!({
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [{"response": entry_response}],
        })
        .to_string(),
    )
        .into_response()
}

/// What the mappings see under `census`: the census patient when known, else what the bundle
/// says of the patient (so a message can still be built).
fn census_context(view: Option<&PatientView>, prescription: &Prescription) -> Value {
    match view {
        Some(view) => census_view_context(view),
        None => crate::mapping::census_from_bundle(prescription),
    }
}

/// What the mappings see under `census` for a patient the census knows (`current`: the
/// encounter of the message). The document endpoint uses it too.
pub(super) fn census_view_context(view: &PatientView) -> Value {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_minutes(Duration::from_secs(900), "2026-11-22T08:15:00Z")]
    #[case::ok_zero(Duration::ZERO, "2026-11-22T08:00:00Z")]
    #[case::ok_saturates(Duration::from_secs(u64::MAX), "9999-12-30T22:00:00.999999999Z")]
    fn ok_release_time(#[case] hold: Duration, #[case] expected: &str) {
        let now: jiff::Timestamp = "2026-11-22T08:00:00Z".parse().unwrap();
        assert_eq!(release_time(now, hold).to_string(), expected);
    }

    /// The 422 answer quotes the mapping's error without the journal reason's prefix; a
    /// reason made elsewhere (a mapper that panicked) is quoted whole.
    #[rstest]
    #[case::ok_mapping_error(
        "mapping for destination `ehr` failed: PID-3.1 is required",
        "channel `posos-push`: no route could map the bundle: mapping for destination `ehr` failed: PID-3.1 is required"
    )]
    #[case::ok_empty("", "channel `posos-push`: no route could map the bundle: ")]
    fn ok_refusal_reason_and_text(#[case] text: &str, #[case] reason: &str) {
        assert_eq!(refusal_reason(text), reason);
        assert_eq!(refusal_text(reason), text);
    }

    #[test]
    fn err_refusal_text_of_another_reason_is_whole() {
        let reason = "the mapping stopped on an internal error (a bug of ordobridge: see its log and report it)";
        assert_eq!(refusal_text(reason), reason);
    }
}
