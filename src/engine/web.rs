//! The HTTP side: `/health`, the launch endpoints (over the census and the Posos client) and,
//! in simulator mode, the built-in Posos simulator under `/simulator`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::config::{Config, PososConfig, PososMode};
use crate::http::{
    LaunchContext, LaunchFailure, LaunchState, PatientContext, PatientKey, PososApi,
    PractitionerContext,
};
use crate::posos::{
    GuideRequest, PososClient, PososError, PososSettings, ScanTokenRequest, ServiceAccountKey,
    SimulatorSettings, SimulatorState,
};
use crate::store::Store;
use crate::store::{PatientKey as CensusKey, PatientView};

use super::EngineError;

/// Where the simulator is mounted on the daemon's HTTP server.
const SIMULATOR_PREFIX: &str = "/simulator";

/// How long a launch for a patient the census does not know waits for the census to apply
/// what was journaled before the launch (an ADT acknowledged a moment ago).
const READ_YOUR_WRITES: std::time::Duration = std::time::Duration::from_secs(2);

/// Builds the HTTP routes of `config` for the daemon listening on `local_addr`: launch,
/// simulator, health.
pub(super) fn router(
    config: &Config,
    local_addr: SocketAddr,
    store: Store,
    census_progress: tokio::sync::watch::Receiver<i64>,
    used_links: Arc<crate::http::UsedLinks>,
    launches: Arc<crate::http::OpenLaunches>,
) -> Result<Router, EngineError> {
    let base_url = format!("http://{local_addr}");
    let mut router = Router::new();
    let mut simulator_key: Option<ServiceAccountKey> = None;
    if let Some(posos) = &config.posos
        && let PososMode::Simulator {
            key_file,
            public_key_file,
            push_url,
            push_token,
        } = &posos.mode
    {
        let public_key_pem = std::fs::read_to_string(public_key_file).map_err(|e| {
            EngineError::Web(format!(
                "cannot read the simulator's public key `{}`: {e} (set `posos.simulator.public_key_file`)",
                public_key_file.display()
            ))
        })?;
        let settings = SimulatorSettings {
            base_url: format!("{base_url}{SIMULATOR_PREFIX}"),
            public_key_pem,
            client_email: None,
            oauth_client_id: posos.oauth_client_id.clone(),
            token_lifetime: std::time::Duration::from_secs(3600),
            push_url: push_url.clone(),
            // Pushing to this daemon's own endpoint: its token, unless another is configured.
            push_token: push_token
                .clone()
                .or_else(|| config.push.as_ref().and_then(|p| p.token.clone())),
        };
        let token_uri = settings.token_uri();
        let state = SimulatorState::new(settings)
            .map_err(|e| EngineError::Web(format!("cannot start the Posos simulator: {e}")))?;
        router = router.nest(SIMULATOR_PREFIX, crate::posos::router(state));
        simulator_key = Some(simulator_service_account(key_file, &token_uri)?);
    }
    match (&config.launch, &config.posos) {
        (Some(launch), Some(posos)) => {
            let client = posos_client(posos, &base_url, simulator_key)?;
            let mut settings = launch.settings.clone();
            if settings.page.posos_origin.is_none() {
                settings.page.posos_origin = posos_origin(posos, &base_url);
            }
            let tracker = Arc::new(StoreTracker {
                store: store.clone(),
            });
            let state = LaunchState::new(
                Arc::new(CensusContext {
                    store,
                    census_progress,
                }),
                Arc::new(PososBridge { client }),
                settings,
            )
            .with_used_links(used_links)
            .with_page(launches, tracker);
            router = router.merge(crate::http::router(state));
        }
        _ => {
            router = router.route(
                "/health",
                get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
            );
        }
    }
    Ok(router)
}

/// The origin of the Scan & Go pages when `[launch] posos_origin` is not set: the simulator's
/// (this daemon's own), or that of the environment's `base_url`.
fn posos_origin(posos: &PososConfig, local_base: &str) -> Option<String> {
    match &posos.mode {
        PososMode::Simulator { .. } => crate::http::launch_page::origin_of(local_base),
        PososMode::Remote { base_url, .. } => crate::http::launch_page::origin_of(base_url),
    }
}

/// How many push rows since a launch that name its patient are read to find its bundle.
const FOLLOW_CANDIDATES: usize = 20;

/// The launch page's view of the store: a launch's pushed bundle and its fate.
struct StoreTracker {
    store: Store,
}

impl crate::http::ImportTracker for StoreTracker {
    fn find<'a>(
        &'a self,
        patient_id: &'a str,
        since: jiff::Timestamp,
        bundle: Option<&'a str>,
    ) -> crate::http::launch_page::TrackerFuture<'a, Option<i64>> {
        Box::pin(async move {
            if patient_id.is_empty() {
                return Ok(None);
            }
            let candidates = self
                .store
                .journal_naming(
                    crate::config::PUSH_CHANNEL,
                    since,
                    patient_id.as_bytes().to_vec(),
                    bundle.map(|b| b.as_bytes().to_vec()),
                    FOLLOW_CANDIDATES,
                )
                .await
                .map_err(|e| e.to_string())?;
            // The bytes contain the id somewhere: confirm it is the bundle's patient.
            Ok(candidates.into_iter().find_map(|(id, raw)| {
                crate::posos::bundle::read_bundle(&raw)
                    .ok()
                    .filter(|p| p.patient.partner_id.as_deref() == Some(patient_id))
                    .map(|_| id)
            }))
        })
    }

    fn facts(
        &self,
        journal_id: i64,
    ) -> crate::http::launch_page::TrackerFuture<'_, Option<crate::http::launch_page::ImportFacts>>
    {
        Box::pin(async move {
            let fate = self
                .store
                .push_fate(journal_id)
                .await
                .map_err(|e| e.to_string())?;
            Ok(fate.map(|fate| import_facts(journal_id, fate)))
        })
    }
}

/// The store's words turned into the launch page's.
fn import_facts(
    journal_id: i64,
    fate: crate::store::PushFate,
) -> crate::http::launch_page::ImportFacts {
    use crate::http::launch_page::{HoldFact, ImportFacts, MessageFact, MessageState, RowState};
    use crate::store::{EntryStatus, OutboundStatus};
    ImportFacts {
        journal_id,
        received_at: fate.received_at,
        row: match fate.status {
            EntryStatus::Accepted => RowState::Accepted,
            EntryStatus::Rejected => RowState::Rejected,
            EntryStatus::Processed => RowState::Processed,
        },
        hold: fate
            .hold
            .map(|(held_at, release_at, released_at)| HoldFact {
                held_at,
                release_at,
                released_at,
            }),
        messages: fate
            .messages
            .into_iter()
            .map(|m| MessageFact {
                state: match m.status {
                    OutboundStatus::Pending => MessageState::Queued,
                    OutboundStatus::Delivered => MessageState::Delivered,
                    OutboundStatus::Dead => MessageState::Dead,
                },
                ack_code: m
                    .ack
                    .as_deref()
                    .and_then(msa_code)
                    .or_else(|| m.last_error.as_deref().and_then(refusal_code)),
                destination: m.destination,
                enqueued_at: m.enqueued_at,
                attempts: m.attempts,
                delivered_at: m.delivered_at,
            })
            .collect(),
    }
}

/// MSA-1 of an acknowledgement.
fn msa_code(ack: &[u8]) -> Option<String> {
    let message = crate::hl7::Message::parse(ack).ok()?;
    let path: crate::hl7::Path = "MSA-1".parse().ok()?;
    let code = message.text(&path)?.trim().to_string();
    (!code.is_empty()).then_some(code)
}

/// The code a delivery error names (`receiver answered AR to …`), as the delivery worker
/// writes it.
fn refusal_code(error: &str) -> Option<String> {
    let rest = error.split("answered ").nth(1)?;
    let code: String = rest.chars().take_while(char::is_ascii_uppercase).collect();
    matches!(code.as_str(), "AA" | "AE" | "AR" | "CA" | "CE" | "CR").then_some(code)
}

/// Wraps the whole router in what every route shares (see [`crate::http::guard`]): the Host
/// check, the request timeout (408) and the security headers.
pub(super) fn harden(router: Router, guard: Arc<crate::http::HttpGuardSettings>) -> Router {
    use axum::middleware::from_fn_with_state;
    router
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            guard.request_timeout,
        ))
        .layer(from_fn_with_state(
            guard.clone(),
            crate::http::guard::check_host,
        ))
        .layer(from_fn_with_state(
            guard,
            crate::http::guard::security_headers,
        ))
}

/// The simulator's test service account, with its `token_uri` pointed at the simulator.
fn simulator_service_account(
    key_file: &std::path::Path,
    token_uri: &str,
) -> Result<ServiceAccountKey, EngineError> {
    let text = std::fs::read_to_string(key_file).map_err(|e| {
        EngineError::Web(format!(
            "cannot read the simulator's service-account key `{}`: {e} (set `posos.simulator.key_file`)",
            key_file.display()
        ))
    })?;
    let mut json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        EngineError::Web(format!(
            "the simulator's service-account key `{}` is not JSON: {e}",
            key_file.display()
        ))
    })?;
    if let Some(object) = json.as_object_mut() {
        object.insert("token_uri".to_string(), token_uri.into());
    }
    ServiceAccountKey::from_json(key_file, &json.to_string())
        .map_err(|e| EngineError::Web(e.to_string()))
}

fn posos_client(
    posos: &PososConfig,
    local_base: &str,
    simulator_key: Option<ServiceAccountKey>,
) -> Result<PososClient, EngineError> {
    let (base_url, key_file) = match &posos.mode {
        PososMode::Simulator { key_file, .. } => {
            (format!("{local_base}{SIMULATOR_PREFIX}"), key_file.clone())
        }
        PososMode::Remote {
            base_url, key_file, ..
        } => (base_url.clone(), key_file.clone()),
    };
    let settings = PososSettings {
        base_url,
        key_file,
        oauth_client_id: posos.oauth_client_id.clone(),
        connect_timeout: posos.connect_timeout,
        request_timeout: posos.request_timeout,
        retries: posos.retries,
    };
    let client = match simulator_key {
        Some(key) => PososClient::with_key(settings, key),
        None => PososClient::new(settings),
    };
    client.map_err(|e| EngineError::Web(e.to_string()))
}

/// The launch's view of the census.
struct CensusContext {
    store: Store,
    /// Through which journal id the census processor has settled everything.
    census_progress: tokio::sync::watch::Receiver<i64>,
}

impl CensusContext {
    async fn lookup(&self, key: CensusKey) -> Result<Option<PatientView>, String> {
        self.store
            .census_patient_async(key)
            .await
            .map_err(|e| e.to_string())
    }
}

impl LaunchContext for CensusContext {
    async fn patient(&self, key: PatientKey) -> Result<Option<PatientContext>, String> {
        let key = match key {
            PatientKey::Ipp(v) => CensusKey::Ipp(v),
            PatientKey::Nda(v) => CensusKey::Nda(v),
            PatientKey::Ins(v) => CensusKey::Ins(v),
        };
        if let Some(view) = self.lookup(key.clone()).await? {
            return Ok(Some(patient_context(view)));
        }
        // Not known yet: maybe its ADT was acknowledged a moment ago and the census applies
        // it right behind the ACK. Wait (bounded) until everything journaled before this
        // launch is settled, then look again. With the intake log, the journal itself is
        // a moment behind the ACK: first wait for it.
        let started = tokio::time::Instant::now();
        if !self.store.intake_copied(READ_YOUR_WRITES).await {
            tracing::debug!("the intake log was not copied in time for this launch");
        }
        let journaled = self
            .store
            .last_journal_id_async()
            .await
            .map_err(|e| e.to_string())?;
        let mut progress = self.census_progress.clone();
        let behind = *progress.borrow() < journaled;
        if behind {
            // `wait_for` gives a read guard: keep only whether it came, not the guard.
            let caught_up = tokio::time::timeout_at(
                started + READ_YOUR_WRITES,
                progress.wait_for(|t| *t >= journaled),
            )
            .await
            .is_ok_and(|changed| changed.is_ok());
            if !caught_up {
                tracing::debug!(
                    journaled,
                    "the census did not catch up in time for this launch"
                );
            }
        }
        // Look again even when the census was not behind: it may have caught up between the
        // first look and the reading of its progress.
        Ok(self.lookup(key).await?.map(patient_context))
    }

    async fn practitioner(&self, rpps: &str) -> Result<Option<PractitionerContext>, String> {
        let store = self.store.clone();
        let rpps_owned = rpps.to_string();
        let found = tokio::task::spawn_blocking(move || store.census_practitioner(&rpps_owned))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(found.map(|p| PractitionerContext {
            rpps: p.rpps.unwrap_or_else(|| rpps.to_string()),
            family: p.family,
            given: p.given,
        }))
    }
}

/// The census view as the launch needs it: used name first (what the clinician sees in the
/// EHR), else the legal name.
fn patient_context(view: PatientView) -> PatientContext {
    let name = view.used_name.or(view.legal_name).unwrap_or_default();
    let current = view.current;
    PatientContext {
        ipp: view.ipp,
        nda: current.as_ref().map(|e| e.nda.clone()),
        ins: view.ins.map(|i| i.value),
        family: name.family,
        given: name.given,
        birth_date: view.birth_date,
        sex: view.sex,
        unit: current.as_ref().and_then(|e| e.unit.clone()),
        attending: current.and_then(|e| e.attending).and_then(|p| {
            p.rpps.map(|rpps| PractitionerContext {
                rpps,
                family: p.family,
                given: p.given,
            })
        }),
    }
}

/// The launch's view of the Posos client.
struct PososBridge {
    client: PososClient,
}

impl PososApi for PososBridge {
    async fn scan_token(&self, body: serde_json::Value) -> Result<String, LaunchFailure> {
        let request: ScanTokenRequest = serde_json::from_value(body).map_err(|e| {
            LaunchFailure::Other(format!(
                "the scan-token mapping built an unusable request: {e}"
            ))
        })?;
        self.client
            .scan_token(&request)
            .await
            .map(|url| url.into_string())
            .map_err(launch_failure)
    }

    async fn prepare_guide(&self, body: serde_json::Value) -> Result<String, LaunchFailure> {
        let request: GuideRequest = serde_json::from_value(body)
            .map_err(|e| LaunchFailure::Other(format!("the guide request is unusable: {e}")))?;
        self.client
            .prepare_guide(&request)
            .await
            .map(|url| url.into_string())
            .map_err(launch_failure)
    }
}

fn launch_failure(error: PososError) -> LaunchFailure {
    let text = error.to_string();
    match error {
        PososError::Unreachable { .. } => LaunchFailure::Unreachable(text),
        PososError::Timeout { .. } => LaunchFailure::Timeout(text),
        PososError::BadRequest {
            parameter, detail, ..
        } => LaunchFailure::BadRequest { parameter, detail },
        PososError::Unauthorized { .. } => LaunchFailure::Unauthorized(text),
        PososError::Auth(_)
        | PososError::Client(_)
        | PososError::UnexpectedStatus { .. }
        | PososError::BadResponse { .. } => LaunchFailure::Other(text),
    }
}
