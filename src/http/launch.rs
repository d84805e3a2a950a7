//! The launch endpoints: an EHR button opens `/launch/scan` or `/launch/guide/{guide}`, and
//! ordobridge looks the context up, asks Posos for a session and redirects the browser (`302`).
//!
//! The census and the Posos client are reached through two traits, [`LaunchContext`] and
//! [`PososApi`], so this module does no storage and no outbound HTTP itself, and tests plug in
//! in-memory implementations.
//!
//! `GET /launch/scan?ipp=…|nda=…|ins=…&rpps=…[&first_name=…&last_name=…]`:
//!
//! 1. the patient is looked up by the first identifier present, in the order IPP, NDA, INS
//!    (parameter names are configurable). Identifiers the link carries win over the census
//!    (the EHR knows which visit the clinician is on); an unknown patient is refused with a
//!    page, or launched with the link's raw identifiers when `unknown_patient = "fallback"`;
//! 2. the user's names come from the link, else from [`LaunchContext::practitioner`], else from
//!    the patient's attending doctor when the RPPS matches;
//! 3. the scan-token body is built by the scan-token mapping (`mappings/scan-token.toml`, a
//!    JSON mapping of the mapping language with the launch inputs, [`LaunchInput`]) and sent
//!    with [`PososApi::scan_token`]; the browser is redirected to the URL Posos returns.
//!
//! With `mode=page`, `/launch/scan` answers the launch page instead of the redirect: Scan &
//! Go in an iframe or a popup, and the live follow-up of the prescription to the EHR's ACK
//! (see [`super::launch_page`]).
//!
//! `GET /launch/guide/{guide}?rpps=…[&first_name=…&last_name=…]&ucds=…` sends the body the
//! guide mapping builds (`mappings/guide.toml`: `{rpps, first_name, last_name, guide, ucds}`)
//! to [`PososApi::prepare_guide`]; `ucds` may be comma-separated, repeated, or both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, OriginalUri, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;
use uuid::Uuid;

use super::access::{AccessPolicy, AllowList, SigningSecret, UsedLinks, check_access};
use super::error::{CORRELATION_HEADER, ErrorPage, LaunchError};
use super::launch_page::{
    ImportTracker, OpenLaunches, PageSettings, StatusState, origin_of, page_policy, render_page,
};
use super::query::{first, parse_query};
use crate::mapping::{
    Inputs, LaunchInput, LaunchPatient, LaunchUser, Mapping, MappingErrors, OutputFormat,
};

/// `mappings/scan-token.toml` as shipped, compiled into the binary (defaults and tests).
pub const SHIPPED_SCAN_TOKEN: &str = include_str!("../../mappings/scan-token.toml");

/// `mappings/guide.toml` as shipped: the guide request when `[launch] guide_mapping` is not
/// set.
pub const SHIPPED_GUIDE: &str = include_str!("../../mappings/guide.toml");

/// The fields of the scan-token request that Posos requires.
pub const SCAN_TOKEN_FIELDS: [&str; 5] = [
    "first_name",
    "last_name",
    "rpps",
    "facilitySlug",
    "patientId",
];

/// The fields of the guide request that Posos requires.
pub const GUIDE_FIELDS: [&str; 4] = ["rpps", "first_name", "last_name", "guide"];

/// The shipped scan-token mapping.
pub fn shipped_scan_token() -> Result<Mapping, MappingErrors> {
    Mapping::load(
        SHIPPED_SCAN_TOKEN,
        std::path::Path::new("mappings/scan-token.toml"),
    )
}

/// The shipped guide mapping.
pub fn shipped_guide() -> Result<Mapping, MappingErrors> {
    Mapping::load(SHIPPED_GUIDE, std::path::Path::new("mappings/guide.toml"))
}

/// What makes `mapping` unfit to build a launch request that needs `fields` (the
/// scan-token request, [`SCAN_TOKEN_FIELDS`], or the guide request, [`GUIDE_FIELDS`]): a
/// format other than JSON, inputs other than the launch's, a `[message] when`, a required
/// field it never writes. Checked at start, so a launch never fails on it.
pub fn launch_mapping_problems(mapping: &Mapping, request: &str, fields: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    if mapping.format() != OutputFormat::Json {
        problems.push(format!(
            "the {request} request is JSON: set `[message] format = \"json\"`"
        ));
    }
    if mapping.inputs() != Inputs::Launch {
        problems.push(
            "a launch gives `user`, `patient` and `launch`: set `[message] input = \"launch\"`"
                .to_string(),
        );
    }
    if mapping.has_condition() {
        problems.push(format!(
            "a launch always sends its {request} request: remove `[message] when`"
        ));
    }
    if mapping.format() == OutputFormat::Json {
        let written = mapping.json_keys();
        for field in fields {
            if !written.iter().any(|w| w == field) {
                problems.push(format!(
                    "`{field}` is never written, and the {request} request needs it: add it to the fields of the body (`[[segment]]` with `id = \"/\"`)"
                ));
            }
        }
    }
    problems
}

/// The census as the launch sees it: patients and practitioners by identifier.
pub trait LaunchContext: Send + Sync + 'static {
    /// Looks a patient up in the census by IPP, NDA or INS.
    fn patient(
        &self,
        key: PatientKey,
    ) -> impl Future<Output = Result<Option<PatientContext>, String>> + Send;
    /// A practitioner's names by RPPS, for launches that pass only `rpps`.
    fn practitioner(
        &self,
        rpps: &str,
    ) -> impl Future<Output = Result<Option<PractitionerContext>, String>> + Send;
}

/// Which identifier a patient is looked up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatientKey {
    Ipp(String),
    Nda(String),
    Ins(String),
}

/// What the census knows of a patient and the current encounter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatientContext {
    pub ipp: String,
    pub nda: Option<String>,
    pub ins: Option<String>,
    pub family: String,
    pub given: String,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub unit: Option<String>,
    pub attending: Option<PractitionerContext>,
}

/// A practitioner's RPPS and names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PractitionerContext {
    pub rpps: String,
    pub family: String,
    pub given: String,
}

/// The two Posos calls a launch makes; the Posos client implements it.
pub trait PososApi: Send + Sync + 'static {
    /// `POST /api/partners/patient/scan-token`; returns the URL to open.
    fn scan_token(
        &self,
        body: serde_json::Value,
    ) -> impl Future<Output = Result<String, LaunchFailure>> + Send;
    /// `POST /api/partners/proxy/prepare`; returns the URL to open.
    fn prepare_guide(
        &self,
        body: serde_json::Value,
    ) -> impl Future<Output = Result<String, LaunchFailure>> + Send;
}

/// How a Posos call failed; each kind gets its own page and status. The `Display` text goes to
/// the logs, so it leaves out [`LaunchFailure::BadRequest`]'s detail (it may quote PHI).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchFailure {
    /// No connection (DNS, refused, TLS).
    #[error("posos is unreachable: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("posos did not answer in time: {0}")]
    Timeout(String),
    /// Posos answered 400; `parameter` names the refused field when Posos says it.
    #[error("posos refused the request (400){}", parameter.as_ref().map(|p| format!(": parameter `{p}`")).unwrap_or_default())]
    BadRequest {
        parameter: Option<String>,
        detail: String,
    },
    /// Posos answered 401 or 403: ordobridge's service identity is refused.
    #[error("posos refused ordobridge's credentials: {0}")]
    Unauthorized(String),
    /// Anything else (5xx, unreadable answer).
    #[error("posos failed: {0}")]
    Other(String),
}

/// The query parameter names the EHR's launch links use (deserializable for the config file;
/// a missing name keeps its default).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParameterNames {
    pub ipp: String,
    pub nda: String,
    pub ins: String,
    /// The user's RPPS (or technical id).
    pub rpps: String,
    pub first_name: String,
    pub last_name: String,
    /// The UCD codes of a guide launch.
    pub ucds: String,
}

impl Default for ParameterNames {
    fn default() -> ParameterNames {
        ParameterNames {
            ipp: "ipp".into(),
            nda: "nda".into(),
            ins: "ins".into(),
            rpps: "rpps".into(),
            first_name: "first_name".into(),
            last_name: "last_name".into(),
            ucds: "ucds".into(),
        }
    }
}

/// What to do when the census does not know the patient of a launch (`"refuse"` or
/// `"fallback"` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPatient {
    /// Show the "unknown patient" page.
    #[default]
    Refuse,
    /// Launch with the raw identifiers of the link (no names, no encounter).
    Fallback,
}

/// How launches are checked and built; read once at start.
#[derive(Debug, Clone)]
pub struct LaunchSettings {
    pub parameters: ParameterNames,
    /// Source networks whose browsers may launch (default: loopback only).
    pub allow_list: AllowList,
    /// The HMAC secret of signed links; a signed link without a secret is refused.
    pub signing_secret: Option<SigningSecret>,
    /// Refuse unsigned links (on top of the allow-list).
    pub require_signature: bool,
    /// The operator accepts unsigned links from networks beyond this machine (an EHR that
    /// cannot sign): only warned about at start.
    pub allow_unsigned_links: bool,
    /// How far in the future a signed link's `exp` may be.
    pub max_link_age: std::time::Duration,
    pub unknown_patient: UnknownPatient,
    /// Builds the scan-token request (`[launch] mapping`).
    pub mapping: Mapping,
    /// Builds the guide request (`[launch] guide_mapping`, else the shipped one).
    pub guide_mapping: Mapping,
    /// The launch page (`mode=page`): iframe or popup, and the Posos origin.
    pub page: PageSettings,
}

/// The default of `[launch] max_link_age`: an EHR signs a link when the clinician clicks, so
/// minutes are plenty, and a link that leaks (browser history, a proxy log) soon dies.
pub const DEFAULT_MAX_LINK_AGE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

impl LaunchSettings {
    /// Defaults (loopback only, unsigned links allowed, unknown patients refused) around the
    /// scan-token and guide mappings.
    pub fn new(mapping: Mapping, guide_mapping: Mapping) -> LaunchSettings {
        LaunchSettings {
            parameters: ParameterNames::default(),
            allow_list: AllowList::default(),
            signing_secret: None,
            require_signature: false,
            allow_unsigned_links: false,
            max_link_age: DEFAULT_MAX_LINK_AGE,
            unknown_patient: UnknownPatient::Refuse,
            mapping,
            guide_mapping,
            page: PageSettings::default(),
        }
    }
}

/// The shared state of the launch routes: the census, the Posos client and the settings.
pub struct LaunchState<C, P> {
    context: Arc<C>,
    posos: Arc<P>,
    settings: Arc<LaunchSettings>,
    /// Signed links already opened (each opens one launch).
    used_links: Arc<UsedLinks>,
    /// Launches that answered a page (`mode=page`), by the token their page polls with.
    launches: Arc<OpenLaunches>,
    /// Where the launch page's status comes from; `None`: `mode=page` is refused.
    tracker: Option<Arc<dyn ImportTracker>>,
}

impl<C, P> Clone for LaunchState<C, P> {
    fn clone(&self) -> Self {
        LaunchState {
            context: Arc::clone(&self.context),
            posos: Arc::clone(&self.posos),
            settings: Arc::clone(&self.settings),
            used_links: Arc::clone(&self.used_links),
            launches: Arc::clone(&self.launches),
            tracker: self.tracker.clone(),
        }
    }
}

impl<C: LaunchContext, P: PososApi> LaunchState<C, P> {
    /// Bundles the census and Posos client (shared with the rest of the daemon) with settings.
    pub fn new(context: Arc<C>, posos: Arc<P>, settings: LaunchSettings) -> Self {
        if settings.require_signature && settings.signing_secret.is_none() {
            tracing::warn!(
                "launch links must be signed but no signing secret is set: every launch will be refused"
            );
        }
        LaunchState {
            context,
            posos,
            settings: Arc::new(settings),
            used_links: Arc::new(UsedLinks::default()),
            launches: Arc::new(OpenLaunches::default()),
            tracker: None,
        }
    }

    /// Shares `used` as the record of signed links already opened: kept across configuration
    /// reloads, so a reload never lets a one-time link open a second launch.
    pub fn with_used_links(mut self, used: Arc<UsedLinks>) -> Self {
        self.used_links = used;
        self
    }

    /// Shares `launches` as the launches that answered a page (kept across reloads, so an
    /// open page keeps following its prescription), and follows their imports with `tracker`.
    pub fn with_page(
        mut self,
        launches: Arc<OpenLaunches>,
        tracker: Arc<dyn ImportTracker>,
    ) -> Self {
        self.launches = launches;
        self.tracker = Some(tracker);
        self
    }

    /// What the status route of the launch page needs.
    pub(crate) fn status_state(&self) -> StatusState {
        StatusState {
            launches: Arc::clone(&self.launches),
            tracker: self.tracker.clone(),
            allow_list: self.settings.allow_list.clone(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &LaunchSettings {
        &self.settings
    }
}

/// The id of one launch: in the logs, on the error page, in the `x-correlation-id` header, and
/// available to the mapping as `launch.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelationId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<CorrelationId>()
            .copied()
            .unwrap_or_else(|| CorrelationId(Uuid::new_v4())))
    }
}

/// Time spent waiting for Posos during one launch, so that the time ordobridge itself adds
/// (access check, census lookup, request build, redirect) can be told apart: the guard reports
/// both in a `Server-Timing` header (visible in the browser's developer tools) and in the log.
#[derive(Debug, Default)]
pub struct PososClock {
    micros: AtomicU64,
}

impl PososClock {
    /// Runs a Posos call and adds its duration to the clock.
    async fn time<T>(&self, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = call.await;
        let spent = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(spent, Ordering::Relaxed);
        result
    }

    /// The time spent in Posos calls so far.
    pub fn posos(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

/// The launch's [`PososClock`], put in the request by the guard (a fresh one when absent, so
/// the handlers work without the guard in tests).
#[derive(Debug, Clone, Default)]
pub struct LaunchClock(pub Arc<PososClock>);

impl<S: Send + Sync> FromRequestParts<S> for LaunchClock {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<LaunchClock>()
            .cloned()
            .unwrap_or_default())
    }
}

/// `Server-Timing` value: `ordobridge;dur=…, posos;dur=…` in milliseconds.
fn server_timing(total: Duration, posos: Duration) -> Option<HeaderValue> {
    let own = total.saturating_sub(posos);
    HeaderValue::from_str(&format!(
        "ordobridge;dur={:.3};desc=\"added by ordobridge\", posos;dur={:.3}",
        own.as_secs_f64() * 1000.0,
        posos.as_secs_f64() * 1000.0
    ))
    .ok()
}

/// Middleware before every launch route: gives the request its correlation id and span, then
/// applies the allow-list and the signature check; times the launch (see [`PososClock`]).
pub(crate) async fn guard<C: LaunchContext, P: PososApi>(
    State(state): State<LaunchState<C, P>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = Uuid::new_v4();
    let clock = LaunchClock::default();
    request.extensions_mut().insert(CorrelationId(id));
    request.extensions_mut().insert(clock.clone());
    let path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().path(), |uri| uri.0.path())
        .to_string();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let span = tracing::info_span!("launch", correlation_id = %id, path = %path);
    async move {
        let pairs = parse_query(request.uri().query().unwrap_or(""));
        let settings = state.settings();
        let now = jiff::Timestamp::now().as_second();
        let policy = AccessPolicy {
            allow_list: &settings.allow_list,
            secret: settings.signing_secret.as_ref(),
            require_signature: settings.require_signature,
            max_link_age: i64::try_from(settings.max_link_age.as_secs()).unwrap_or(i64::MAX),
            used: Some(&state.used_links),
        };
        let checked = check_access(&policy, peer, &path, &pairs, now);
        let mut response = match checked {
            Ok(()) => {
                tracing::debug!(peer = ?peer, "launch admitted");
                next.run(request).await
            }
            Err(reason) => ErrorPage {
                correlation_id: id,
                error: LaunchError::Forbidden(reason),
            }
            .into_response(),
        };
        let total = started.elapsed();
        crate::metrics::observe_launch(total);
        let posos = clock.0.posos();
        tracing::info!(
            status = response.status().as_u16(),
            ordobridge_ms = total.saturating_sub(posos).as_secs_f64() * 1000.0,
            posos_ms = posos.as_secs_f64() * 1000.0,
            "launch answered"
        );
        if let Some(value) = server_timing(total, posos) {
            response.headers_mut().insert("server-timing", value);
        }
        response
    }
    .instrument(span)
    .await
}

/// `GET /launch/scan`: a redirect to Scan & Go, or with `mode=page` the launch page.
pub(crate) async fn scan<C: LaunchContext, P: PososApi>(
    State(state): State<LaunchState<C, P>>,
    id: CorrelationId,
    LaunchClock(clock): LaunchClock,
    headers: axum::http::HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let started = jiff::Timestamp::now();
    let pairs = parse_query(query.as_deref().unwrap_or(""));
    let launched = launch_scan(&state, id, &clock, &pairs).await;
    if first(&pairs, PAGE_PARAMETER) != Some("page") {
        return answer(id, launched.map(|(url, _)| url));
    }
    let lang = crate::console::Lang::negotiate(
        first(&pairs, "lang"),
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
        crate::console::Lang::Fr,
    );
    match launched.and_then(|(url, patient_id)| page(&state, id, started, url, patient_id, lang)) {
        Ok(response) => response,
        Err(error) => ErrorPage {
            correlation_id: id.0,
            error,
        }
        .into_response(),
    }
}

/// The query parameter that asks for the launch page (`mode=page`) instead of a redirect.
pub const PAGE_PARAMETER: &str = "mode";

/// The launch page around the Scan & Go URL `url` (see [`super::launch_page`]).
fn page<C: LaunchContext, P: PososApi>(
    state: &LaunchState<C, P>,
    id: CorrelationId,
    started: jiff::Timestamp,
    url: String,
    patient_id: Option<String>,
    lang: crate::console::Lang,
) -> Result<Response, LaunchError> {
    let settings = &state.settings.page;
    let (Some(origin), Some(_)) = (settings.posos_origin.as_deref(), state.tracker.as_ref()) else {
        return Err(LaunchError::PageUnavailable(
            "the launch page is not set up here (no Posos origin or no store): use the link without `mode=page`".into(),
        ));
    };
    redirect_target(url.clone())?;
    if origin_of(&url).as_deref() != Some(origin) {
        return Err(LaunchError::PageUnavailable(format!(
            "Posos returned a page outside its configured origin `{origin}`: set `[launch] posos_origin` to the origin of the Scan & Go pages"
        )));
    }
    let patient_id = patient_id.unwrap_or_default();
    let token = state.launches.open(patient_id, started).ok_or_else(|| {
        LaunchError::PageUnavailable("the system's random generator failed".into())
    })?;
    let status_url = format!("/launch/status/{token}");
    let markup = render_page(
        lang,
        settings.mode,
        &url,
        origin,
        &status_url,
        &id.0.to_string(),
    );
    let mut response = (StatusCode::OK, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(policy) = HeaderValue::from_str(&page_policy(settings.mode, origin)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&id.0.to_string()) {
        headers.insert(CORRELATION_HEADER, value);
    }
    Ok(response)
}

/// `GET /launch/guide/{guide}`.
pub(crate) async fn guide<C: LaunchContext, P: PososApi>(
    State(state): State<LaunchState<C, P>>,
    id: CorrelationId,
    LaunchClock(clock): LaunchClock,
    Path(guide): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = parse_query(query.as_deref().unwrap_or(""));
    answer(id, launch_guide(&state, id, &guide, &clock, &pairs).await)
}

fn answer(id: CorrelationId, outcome: Result<String, LaunchError>) -> Response {
    match outcome.and_then(redirect_target) {
        Ok(url) => {
            tracing::debug!(correlation_id = %id.0, "launch redirected to posos");
            let mut response = StatusCode::FOUND.into_response();
            let headers = response.headers_mut();
            headers.insert(header::LOCATION, url);
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            if let Ok(value) = HeaderValue::from_str(&id.0.to_string()) {
                headers.insert(CORRELATION_HEADER, value);
            }
            response
        }
        Err(error) => ErrorPage {
            correlation_id: id.0,
            error,
        }
        .into_response(),
    }
}

/// Accepts only an absolute http(s) URL that fits in a header as the redirect target.
fn redirect_target(url: String) -> Result<HeaderValue, LaunchError> {
    let lower = url.trim().to_ascii_lowercase();
    let absolute = lower.starts_with("https://") || lower.starts_with("http://");
    match HeaderValue::from_str(url.trim()) {
        Ok(value) if absolute => Ok(value),
        _ => Err(LaunchError::BadRedirect { url }),
    }
}

async fn launch_scan<C: LaunchContext, P: PososApi>(
    state: &LaunchState<C, P>,
    id: CorrelationId,
    clock: &PososClock,
    pairs: &[(String, String)],
) -> Result<(String, Option<String>), LaunchError> {
    let settings = state.settings();
    let names = &settings.parameters;
    let rpps = first(pairs, &names.rpps)
        .ok_or_else(|| LaunchError::MissingParameter(names.rpps.clone()))?;
    let ipp = first(pairs, &names.ipp);
    let nda = first(pairs, &names.nda);
    let ins = first(pairs, &names.ins);
    let (key, parameter, value) = match (ipp, nda, ins) {
        (Some(v), _, _) => (PatientKey::Ipp(v.into()), &names.ipp, v),
        (None, Some(v), _) => (PatientKey::Nda(v.into()), &names.nda, v),
        (None, None, Some(v)) => (PatientKey::Ins(v.into()), &names.ins, v),
        (None, None, None) => {
            return Err(LaunchError::NoPatientKey(vec![
                names.ipp.clone(),
                names.nda.clone(),
                names.ins.clone(),
            ]));
        }
    };
    tracing::trace!(key = ?key, "patient lookup");
    let found = state
        .context
        .patient(key)
        .await
        .map_err(LaunchError::Context)?;
    let mut patient = match (found, settings.unknown_patient) {
        (Some(patient), _) => patient,
        (None, UnknownPatient::Refuse) => {
            return Err(LaunchError::UnknownPatient {
                parameter: parameter.clone(),
                value: value.to_string(),
            });
        }
        (None, UnknownPatient::Fallback) => {
            tracing::info!(
                "patient not in the census: fallback launch with the link's identifiers"
            );
            PatientContext::default()
        }
    };
    if let Some(ipp) = ipp {
        patient.ipp = ipp.to_string();
    }
    if let Some(nda) = nda {
        patient.nda = Some(nda.to_string());
    }
    if let Some(ins) = ins {
        patient.ins = Some(ins.to_string());
    }
    let user = user_context(state, pairs, rpps, patient.attending.as_ref()).await?;
    let input = LaunchInput {
        user: launch_user(user),
        patient: LaunchPatient {
            ipp: Some(patient.ipp),
            nda: patient.nda,
            ins: patient.ins,
            family: Some(patient.family),
            given: Some(patient.given),
            birth_date: patient.birth_date,
            sex: patient.sex,
            unit: patient.unit,
        },
        id: id.0.to_string(),
        guide: None,
        ucds: Vec::new(),
    };
    let body = settings
        .mapping
        .apply_json(&input.to_value())
        .map_err(|error| LaunchError::Mapping {
            request: "scan-token",
            error,
        })?;
    tracing::debug!("scan-token request built");
    let patient_id = body
        .get("patientId")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    let url = clock.time(state.posos.scan_token(body)).await?;
    Ok((url, patient_id))
}

fn launch_user(user: PractitionerContext) -> LaunchUser {
    LaunchUser {
        rpps: user.rpps,
        first_name: user.given,
        last_name: user.family,
    }
}

async fn launch_guide<C: LaunchContext, P: PososApi>(
    state: &LaunchState<C, P>,
    id: CorrelationId,
    guide: &str,
    clock: &PososClock,
    pairs: &[(String, String)],
) -> Result<String, LaunchError> {
    let names = &state.settings().parameters;
    let rpps = first(pairs, &names.rpps)
        .ok_or_else(|| LaunchError::MissingParameter(names.rpps.clone()))?;
    let user = user_context(state, pairs, rpps, None).await?;
    if user.given.trim().is_empty() || user.family.trim().is_empty() {
        return Err(LaunchError::UnknownPractitioner {
            rpps: rpps.to_string(),
        });
    }
    let ucds: Vec<String> = pairs
        .iter()
        .filter(|(n, _)| *n == names.ucds)
        .flat_map(|(_, v)| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    let input = LaunchInput {
        user: launch_user(user),
        patient: LaunchPatient::default(),
        id: id.0.to_string(),
        guide: Some(guide.to_string()),
        ucds,
    };
    let body = state
        .settings()
        .guide_mapping
        .apply_json(&input.to_value())
        .map_err(|error| LaunchError::Mapping {
            request: "guide",
            error,
        })?;
    Ok(clock.time(state.posos.prepare_guide(body)).await?)
}

/// The launching user: names from the link, else the census by RPPS, else the attending doctor
/// when the RPPS matches. Names may stay blank; the caller decides whether that is fatal.
async fn user_context<C: LaunchContext, P: PososApi>(
    state: &LaunchState<C, P>,
    pairs: &[(String, String)],
    rpps: &str,
    attending: Option<&PractitionerContext>,
) -> Result<PractitionerContext, LaunchError> {
    let names = &state.settings().parameters;
    let mut user = PractitionerContext {
        rpps: rpps.to_string(),
        given: first(pairs, &names.first_name).unwrap_or("").to_string(),
        family: first(pairs, &names.last_name).unwrap_or("").to_string(),
    };
    if !user.given.is_empty() && !user.family.is_empty() {
        return Ok(user);
    }
    let known = match state
        .context
        .practitioner(rpps)
        .await
        .map_err(LaunchError::Context)?
    {
        Some(known) => Some(known),
        None => attending.filter(|a| a.rpps.trim() == rpps).cloned(),
    };
    if let Some(known) = known {
        if user.given.is_empty() {
            user.given = known.given;
        }
        if user.family.is_empty() {
            user.family = known.family;
        }
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::router;
    use axum::body::Body;
    use rstest::rstest;
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tower::ServiceExt as _;

    #[derive(Default)]
    struct Census {
        patients: HashMap<PatientKey, PatientContext>,
        practitioners: HashMap<String, PractitionerContext>,
        fail: bool,
    }

    impl LaunchContext for Census {
        async fn patient(&self, key: PatientKey) -> Result<Option<PatientContext>, String> {
            if self.fail {
                return Err("database is locked".into());
            }
            Ok(self.patients.get(&key).cloned())
        }
        async fn practitioner(&self, rpps: &str) -> Result<Option<PractitionerContext>, String> {
            Ok(self.practitioners.get(rpps).cloned())
        }
    }

    struct Posos {
        answer: Result<String, LaunchFailure>,
        bodies: Mutex<Vec<Value>>,
        delay: Duration,
    }

    impl PososApi for Posos {
        async fn scan_token(&self, body: Value) -> Result<String, LaunchFailure> {
            if let Ok(mut bodies) = self.bodies.lock() {
                bodies.push(body);
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            self.answer.clone()
        }
        async fn prepare_guide(&self, body: Value) -> Result<String, LaunchFailure> {
            self.scan_token(body).await
        }
    }

    fn census() -> Census {
        let patient = PatientContext {
            ipp: "IPP1".into(),
            nda: Some("NDA1".into()),
            family: "MARTIN".into(),
            given: "Claire".into(),
            attending: Some(PractitionerContext {
                rpps: "20000000002".into(),
                family: "LEROY".into(),
                given: "Anne".into(),
            }),
            ..PatientContext::default()
        };
        let mut census = Census::default();
        census
            .patients
            .insert(PatientKey::Ipp("IPP1".into()), patient.clone());
        census
            .patients
            .insert(PatientKey::Nda("NDA1".into()), patient.clone());
        census.practitioners.insert(
            "10000000001".into(),
            PractitionerContext {
                rpps: "10000000001".into(),
                family: "DURAND".into(),
                given: "Paul".into(),
            },
        );
        census
    }

    fn state(
        census: Census,
        answer: Result<String, LaunchFailure>,
        tune: impl FnOnce(&mut LaunchSettings),
    ) -> (LaunchState<Census, Posos>, Arc<Posos>) {
        let posos = Arc::new(Posos {
            answer,
            bodies: Mutex::new(Vec::new()),
            delay: Duration::ZERO,
        });
        let mut settings =
            LaunchSettings::new(shipped_scan_token().unwrap(), shipped_guide().unwrap());
        tune(&mut settings);
        (
            LaunchState::new(Arc::new(census), Arc::clone(&posos), settings),
            posos,
        )
    }

    async fn get(
        state: LaunchState<Census, Posos>,
        uri: &str,
        peer: &str,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
        let response = router(state).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    const OK_URL: &str = "https://app.posos.test/scan/abc";

    /// `Server-Timing: ordobridge;dur=A;desc="…", posos;dur=B` → (A, B) in ms.
    fn timing(headers: &axum::http::HeaderMap) -> (f64, f64) {
        let value = headers.get("server-timing").unwrap().to_str().unwrap();
        let dur = |name: &str| -> f64 {
            let part = value
                .split(',')
                .map(str::trim)
                .find(|p| p.starts_with(&format!("{name};")))
                .unwrap();
            let dur = part
                .split(';')
                .find_map(|a| a.strip_prefix("dur="))
                .unwrap();
            dur.parse().unwrap()
        };
        (dur("ordobridge"), dur("posos"))
    }

    /// The time Posos takes is told apart from the time ordobridge adds, on redirects and on
    /// error pages alike.
    #[tokio::test]
    async fn ok_server_timing_separates_posos_time() {
        let posos = Arc::new(Posos {
            answer: Ok(OK_URL.into()),
            bodies: Mutex::new(Vec::new()),
            delay: Duration::from_millis(30),
        });
        let settings = LaunchSettings::new(shipped_scan_token().unwrap(), shipped_guide().unwrap());
        let state = LaunchState::new(Arc::new(census()), Arc::clone(&posos), settings);
        let (status, headers, _) = get(
            state.clone(),
            "/launch/scan?ipp=IPP1&rpps=10000000001",
            "127.0.0.1:5000",
        )
        .await;
        assert_eq!(status, StatusCode::FOUND);
        let (own, in_posos) = timing(&headers);
        assert!(in_posos >= 30.0, "posos {in_posos} ms");
        assert!(own >= 0.0);

        let (status, headers, _) =
            get(state, "/launch/scan?ipp=NOBODY&rpps=3", "127.0.0.1:5000").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, in_posos) = timing(&headers);
        assert_eq!(in_posos, 0.0, "no Posos call for an unknown patient");
    }

    #[rstest]
    #[case::ok_by_ipp_with_names("/launch/scan?ipp=IPP1&rpps=3&first_name=Jean&last_name=NOEL", json!({"first_name": "Jean", "last_name": "NOEL", "rpps": "3", "facilitySlug": "ch-exemple", "patientId": "IPP1"}))]
    #[case::ok_by_nda_names_from_census("/launch/scan?nda=NDA1&rpps=10000000001", json!({"first_name": "Paul", "last_name": "DURAND", "rpps": "10000000001", "facilitySlug": "ch-exemple", "patientId": "IPP1"}))]
    #[case::ok_names_from_attending("/launch/scan?ipp=IPP1&rpps=20000000002", json!({"first_name": "Anne", "last_name": "LEROY", "rpps": "20000000002", "facilitySlug": "ch-exemple", "patientId": "IPP1"}))]
    #[case::ok_one_name_from_link("/launch/scan?ipp=IPP1&rpps=10000000001&last_name=DURAND-X", json!({"first_name": "Paul", "last_name": "DURAND-X", "rpps": "10000000001", "facilitySlug": "ch-exemple", "patientId": "IPP1"}))]
    #[tokio::test]
    async fn ok_scan(#[case] uri: &str, #[case] expected: Value) {
        let (state, posos) = state(census(), Ok(OK_URL.into()), |_| {});
        let (status, headers, _) = get(state, uri, "127.0.0.1:40000").await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(headers.get(header::LOCATION).unwrap(), OK_URL);
        assert!(headers.get(CORRELATION_HEADER).is_some());
        assert_eq!(*posos.bodies.lock().unwrap(), vec![expected]);
    }

    #[tokio::test]
    async fn ok_custom_parameter_names() {
        let (state, posos) = state(census(), Ok(OK_URL.into()), |s| {
            s.parameters.ipp = "patient_id".into();
            s.parameters.rpps = "user".into();
        });
        let (status, _, _) = get(
            state,
            "/launch/scan?patient_id=IPP1&user=10000000001",
            "[::1]:40000",
        )
        .await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(posos.bodies.lock().unwrap().len(), 1);
    }

    #[rstest]
    #[case::err_no_rpps("/launch/scan?ipp=IPP1", 400, "paramètre « rpps »")]
    #[case::err_no_patient("/launch/scan?rpps=1", 400, "paramètre « ipp », « nda », « ins »")]
    #[case::err_unknown_patient(
        "/launch/scan?ipp=NOPE&rpps=10000000001",
        404,
        "Le patient (ipp NOPE)"
    )]
    #[case::err_unknown_user_names(
        "/launch/scan?ipp=IPP1&rpps=99",
        422,
        "scan-token field `first_name` has no value"
    )]
    #[tokio::test]
    async fn err_scan(#[case] uri: &str, #[case] status: u16, #[case] snippet: &str) {
        let (state, posos) = state(census(), Ok(OK_URL.into()), |_| {});
        let (got, headers, body) = get(state, uri, "127.0.0.1:40000").await;
        assert_eq!(got.as_u16(), status, "{body}");
        assert!(body.contains(snippet), "{body}");
        let id = headers.get(CORRELATION_HEADER).unwrap().to_str().unwrap();
        assert!(body.contains(id));
        assert!(posos.bodies.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn ok_unknown_patient_fallback() {
        let (state, posos) = state(census(), Ok(OK_URL.into()), |s| {
            s.unknown_patient = UnknownPatient::Fallback;
        });
        let (status, _, _) = get(
            state,
            "/launch/scan?ipp=NEW9&nda=V9&rpps=10000000001",
            "127.0.0.1:40000",
        )
        .await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(
            posos.bodies.lock().unwrap().first().unwrap()["patientId"],
            "NEW9"
        );
    }

    #[tokio::test]
    async fn err_census_failure_is_503() {
        let census = Census {
            fail: true,
            ..census()
        };
        let (state, _) = state(census, Ok(OK_URL.into()), |_| {});
        let (status, _, body) = get(state, "/launch/scan?ipp=IPP1&rpps=1", "127.0.0.1:40000").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("Contexte patient indisponible"));
        assert!(!body.contains("database is locked"));
    }

    #[rstest]
    #[case::err_lan("10.1.2.3:5000")]
    #[case::err_public_v6("[2001:db8::1]:5000")]
    #[case::err_mapped_lan("[::ffff:192.168.1.4]:5000")]
    #[tokio::test]
    async fn err_non_allowed_peer(#[case] peer: &str) {
        let (state, posos) = state(census(), Ok(OK_URL.into()), |_| {});
        let (status, _, body) = get(state, "/launch/scan?ipp=IPP1&rpps=10000000001", peer).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("Lancement refusé"));
        assert!(body.contains("is not in the launch allow-list"));
        assert!(posos.bodies.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn ok_allowed_lan_peer() {
        let (state, _) = state(census(), Ok(OK_URL.into()), |s| {
            s.allow_list = AllowList::parse(&["10.0.0.0/8"]).unwrap();
        });
        let (status, _, _) = get(
            state,
            "/launch/scan?ipp=IPP1&rpps=10000000001",
            "10.1.2.3:5000",
        )
        .await;
        assert_eq!(status, StatusCode::FOUND);
    }

    #[tokio::test]
    async fn err_no_connect_info_is_forbidden() {
        let (state, _) = state(census(), Ok(OK_URL.into()), |_| {});
        let request = Request::builder()
            .uri("/launch/scan?ipp=IPP1&rpps=10000000001")
            .body(Body::empty())
            .unwrap();
        let response = router(state).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }

    #[rstest]
    #[case::err_unreachable(LaunchFailure::Unreachable("refused".into()), 502, "Posos est injoignable")]
    #[case::err_timeout(LaunchFailure::Timeout("10s".into()), 504, "Posos ne répond pas")]
    #[case::err_bad_request(LaunchFailure::BadRequest { parameter: Some("patientId".into()), detail: "too long".into() }, 400, "la donnée « patientId »")]
    #[case::err_unauthorized(LaunchFailure::Unauthorized("401".into()), 502, "Accès à Posos refusé")]
    #[case::err_other(LaunchFailure::Other("500".into()), 502, "Erreur du service Posos")]
    #[tokio::test]
    async fn err_posos_failures(
        #[case] failure: LaunchFailure,
        #[case] status: u16,
        #[case] snippet: &str,
    ) {
        let (state, _) = state(census(), Err(failure), |_| {});
        let (got, _, body) = get(
            state,
            "/launch/scan?ipp=IPP1&rpps=10000000001",
            "127.0.0.1:1",
        )
        .await;
        assert_eq!(got.as_u16(), status);
        assert!(body.contains(snippet), "{body}");
    }

    #[rstest]
    #[case::err_scheme("javascript:alert(1)")]
    #[case::err_relative("/elsewhere")]
    #[case::err_newline("https://x.test/\r\nSet-Cookie: a=b")]
    #[tokio::test]
    async fn err_unusable_redirect(#[case] url: &str) {
        let (state, _) = state(census(), Ok(url.into()), |_| {});
        let (status, headers, _) = get(
            state,
            "/launch/scan?ipp=IPP1&rpps=10000000001",
            "127.0.0.1:1",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(headers.get(header::LOCATION).is_none());
    }

    #[rstest]
    #[case::ok_repeated("ucds=1&ucds=2", json!(["1", "2"]))]
    #[case::ok_commas("ucds=1,2,%203", json!(["1", "2", "3"]))]
    #[case::ok_mixed("ucds=1,2&ucds=3&ucds=", json!(["1", "2", "3"]))]
    #[case::ok_none("", json!([]))]
    #[tokio::test]
    async fn ok_guide(#[case] ucds: &str, #[case] expected: Value) {
        let (state, posos) = state(census(), Ok(OK_URL.into()), |_| {});
        let uri = format!("/launch/guide/anticoagulants?rpps=10000000001&{ucds}");
        let (status, headers, _) = get(state, &uri, "127.0.0.1:1").await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(headers.get(header::LOCATION).unwrap(), OK_URL);
        assert_eq!(
            *posos.bodies.lock().unwrap(),
            vec![json!({
                "rpps": "10000000001",
                "first_name": "Paul",
                "last_name": "DURAND",
                "guide": "anticoagulants",
                "ucds": expected,
            })]
        );
    }

    #[tokio::test]
    async fn err_guide_unknown_practitioner() {
        let (state, posos) = state(census(), Ok(OK_URL.into()), |_| {});
        let (status, _, body) = get(state, "/launch/guide/g?rpps=55&ucds=1", "127.0.0.1:1").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body.contains("Praticien inconnu"), "{body}");
        assert!(posos.bodies.lock().unwrap().is_empty());
    }

    #[rstest]
    #[case::ok_refuse("\"refuse\"", UnknownPatient::Refuse)]
    #[case::ok_fallback("\"fallback\"", UnknownPatient::Fallback)]
    fn ok_unknown_patient_setting(#[case] text: &str, #[case] expected: UnknownPatient) {
        assert_eq!(
            serde_json::from_str::<UnknownPatient>(text).unwrap(),
            expected
        );
    }

    #[test]
    fn ok_parameter_names_partial() {
        let names: ParameterNames =
            serde_json::from_value(json!({"ipp": "IPP", "rpps": "idPs"})).unwrap();
        assert_eq!(names.ipp, "IPP");
        assert_eq!(names.rpps, "idPs");
        assert_eq!(names.nda, "nda");
    }

    #[test]
    fn err_parameter_names_unknown_key() {
        let err = serde_json::from_value::<ParameterNames>(json!({"ipn": "x"})).unwrap_err();
        assert!(err.to_string().starts_with("unknown field `ipn`"), "{err}");
    }

    #[tokio::test]
    async fn ok_health_ignores_allow_list() {
        let (state, _) = state(census(), Ok(OK_URL.into()), |_| {});
        let (status, _, body) = get(state, "/health", "203.0.113.5:1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"status": "ok"})
        );
    }

    // ---- the launch page (`mode=page`) ----

    use crate::http::launch_page::{
        ImportFacts, ImportTracker, MessageFact, MessageState, RowState, TrackerFuture,
    };

    /// A tracker that knows one bundle, for patient `IPP1`, delivered with AA.
    struct Tracker;

    impl ImportTracker for Tracker {
        fn find<'a>(
            &'a self,
            patient_id: &'a str,
            _since: jiff::Timestamp,
            _bundle: Option<&'a str>,
        ) -> TrackerFuture<'a, Option<i64>> {
            Box::pin(async move { Ok((patient_id == "IPP1").then_some(5)) })
        }
        fn facts(&self, journal_id: i64) -> TrackerFuture<'_, Option<ImportFacts>> {
            let at: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
            Box::pin(async move {
                Ok(Some(ImportFacts {
                    journal_id,
                    received_at: at,
                    row: RowState::Processed,
                    hold: None,
                    messages: vec![MessageFact {
                        destination: "ehr-orders".into(),
                        enqueued_at: at,
                        state: MessageState::Delivered,
                        attempts: 1,
                        delivered_at: Some(at),
                        ack_code: Some("AA".into()),
                    }],
                }))
            })
        }
    }

    fn page_state(origin: &str) -> LaunchState<Census, Posos> {
        let (state, _) = state(census(), Ok(OK_URL.into()), |s| {
            s.page.posos_origin = Some(origin.into());
        });
        state.with_page(Arc::new(OpenLaunches::default()), Arc::new(Tracker))
    }

    /// The status URL the page polls (from its `data-status`).
    fn status_url(page: &str) -> String {
        let start = page.find("data-status=\"").unwrap() + "data-status=\"".len();
        let end = start + page[start..].find('"').unwrap();
        page[start..end].to_string()
    }

    #[tokio::test]
    async fn ok_page_frames_posos_and_follows_to_ack() {
        let state = page_state("https://app.posos.test");
        let (status, headers, page) = get(
            state.clone(),
            "/launch/scan?ipp=IPP1&rpps=10000000001&mode=page&lang=en",
            "127.0.0.1:1",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let policy = headers
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            policy.contains("frame-src https://app.posos.test;"),
            "{policy}"
        );
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(
            page.contains(&format!("<iframe id=\"scan\" src=\"{OK_URL}\"")),
            "{page}"
        );
        assert!(page.contains("data-origin=\"https://app.posos.test\""));
        // The page carries no patient value: the census's names are not on it.
        assert!(
            !page.contains("MARTIN") && !page.contains("Claire"),
            "{page}"
        );

        let url = status_url(&page);
        assert!(url.starts_with("/launch/status/"), "{url}");
        let (status, headers, body) = get(state, &format!("{url}?lang=en"), "127.0.0.1:1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
        let view: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(view["state"], "acked");
        assert_eq!(view["headline"], "Received by the EHR (ACK AA)");
        for phi in ["IPP1", "MARTIN", "Claire", "DURAND", "10000000001"] {
            assert!(!body.contains(phi), "the status names `{phi}`: {body}");
        }
    }

    /// Only the configured Posos origin: a Scan & Go URL elsewhere is refused, not framed.
    #[tokio::test]
    async fn err_page_url_outside_posos_origin() {
        let state = page_state("https://other.posos.test");
        let (status, headers, page) = get(
            state,
            "/launch/scan?ipp=IPP1&rpps=10000000001&mode=page",
            "127.0.0.1:1",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!page.contains("<iframe"), "{page}");
        assert!(page.contains("Page de suivi indisponible"), "{page}");
        assert!(
            page.contains("Posos returned a page outside its configured origin `https://other.posos.test`: set `[launch] posos_origin`"),
            "{page}"
        );
        assert!(headers.get(header::LOCATION).is_none());
    }

    #[tokio::test]
    async fn err_page_without_tracker() {
        let (state, _) = state(census(), Ok(OK_URL.into()), |s| {
            s.page.posos_origin = Some("https://app.posos.test".into());
        });
        let (status, _, page) = get(
            state,
            "/launch/scan?ipp=IPP1&rpps=10000000001&mode=page",
            "127.0.0.1:1",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            page.contains("the launch page is not set up here"),
            "{page}"
        );
    }

    #[rstest]
    #[case::err_unknown_token("/launch/status/not-a-token", "127.0.0.1:1", 404, "unknown launch")]
    #[case::err_outside_allow_list(
        "/launch/status/not-a-token",
        "10.1.2.3:1",
        403,
        "`[launch] allow`"
    )]
    #[tokio::test]
    async fn err_status(
        #[case] uri: &str,
        #[case] peer: &str,
        #[case] status: u16,
        #[case] snippet: &str,
    ) {
        let (got, _, body) = get(page_state("https://app.posos.test"), uri, peer).await;
        assert_eq!(got.as_u16(), status, "{body}");
        assert!(body.contains(snippet), "{body}");
    }

    #[tokio::test]
    async fn ok_page_popup_mode() {
        let (state, _) = state(census(), Ok(OK_URL.into()), |s| {
            s.page.posos_origin = Some("https://app.posos.test".into());
            s.page.mode = crate::http::PageMode::Popup;
        });
        let state = state.with_page(Arc::new(OpenLaunches::default()), Arc::new(Tracker));
        let (status, headers, page) = get(
            state,
            "/launch/scan?ipp=IPP1&rpps=10000000001&mode=page",
            "127.0.0.1:1",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(!page.contains("<iframe"), "{page}");
        assert!(page.contains("Ouvrir Scan &amp; Go"), "{page}");
        let policy = headers.get(header::CONTENT_SECURITY_POLICY).unwrap();
        assert!(policy.to_str().unwrap().contains("frame-src 'none';"));
    }
}
