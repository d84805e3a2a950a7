//! A built-in Posos simulator, served inside the daemon for demos and by the tests.
//!
//! It plays every part Posos plays in a launch:
//!
//! - `POST /token`: the identity-token endpoint. It verifies the partner's RS256 assertion
//!   against the configured public key (`iss`/`sub`, `aud` = `{base_url}/token`,
//!   `target_audience`, `exp`) and answers `{"id_token": …}`, signed HS256 with a random
//!   per-process secret and valid for `token_lifetime`.
//! - `POST /api/partners/patient/scan-token` and `POST /api/partners/proxy/prepare`: check the
//!   bearer (401 when bad or expired) and the body exactly (400 with
//!   `{"error", "message", "parameter"}` naming the missing or invalid field), then answer
//!   `{"token": id, "url": "{base_url}/scan/{id}"}`. Every call is recorded with its body and
//!   whether its bearer was valid, so tests can assert the exact JSON.
//! - `GET /scan/{id}`: a small Scan & Go page (plain HTML, inline JS, no external assets)
//!   showing the patient and the user, with an "Import to DPI" button.
//! - `POST /scan/{id}/import`: what the button calls. The simulator itself (not the browser,
//!   so CORS does not matter) pushes a FHIR transaction Bundle for the session's patient to the
//!   configured push endpoint with the configured bearer, and answers
//!   `{"status": "success"|"error", "prescription": …}`. The page then posts that to
//!   `window.opener` (a popup), else to `window.parent` (an iframe), and sets its hash to
//!   `#success` or `#error`. (Assumed of the real Scan & Go, whose message format is not
//!   published: `{status, prescription: {bundleId, patientId}}`, any target origin.)
//!
//! The caller binds the listener (127.0.0.1) and nests [`router`] where it wants; `base_url`
//! must be the URL the router is reached at, prefix included.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::JWT_BEARER_GRANT;
use super::client::{PREPARE_PATH, SCAN_TOKEN_PATH};
use crate::text::{escape_html, readable_line};

/// Largest request body the simulator reads.
const MAX_BODY: usize = 64 * 1024;

/// The identifier system of the partner's patient id in pushed bundles.
pub const PARTNER_PATIENT_SYSTEM: &str = "id://partner";

/// The identifier system of RPPS numbers (ASIP Santé OID).
pub const RPPS_SYSTEM: &str = "urn:oid:1.2.250.1.71.4.2.1";

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The public key that verifies partner assertions is unusable.
    #[error(
        "posos simulator: the public key is not an RSA public key in PEM form ({source}); give the public half of the service-account key the client uses"
    )]
    PublicKey {
        /// The parse error (it names no key material).
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// `base_url` is not an absolute http(s) URL.
    #[error(
        "posos simulator: `base_url` `{url}` is not an absolute http(s) URL; give the URL the simulator is reached at"
    )]
    BaseUrl {
        /// The configured value, made readable.
        url: String,
    },
    /// The HTTP client for pushes could not be built.
    #[error("posos simulator: cannot build the HTTP client for pushes: {0}")]
    Client(#[source] reqwest::Error),
}

/// How the simulator is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatorSettings {
    /// The URL the router is reached at (prefix included), e.g. `http://127.0.0.1:8089`; the
    /// token endpoint's `aud` and the returned session URLs are built on it.
    pub base_url: String,
    /// PEM public key (SPKI or PKCS#1) that verifies partner assertions.
    pub public_key_pem: String,
    /// The only service account accepted as `iss`/`sub`; `None` accepts any signed by the key.
    pub client_email: Option<String>,
    /// The OAuth client id expected as `target_audience` (and set as the id token's `aud`).
    pub oauth_client_id: String,
    /// Lifetime of the identity tokens the simulator issues (tests use seconds).
    pub token_lifetime: Duration,
    /// Where "Import to DPI" pushes the FHIR Bundle; `None` makes the import fail clearly.
    pub push_url: Option<String>,
    /// Bearer token sent with the push.
    pub push_token: Option<String>,
}

impl SimulatorSettings {
    /// The token endpoint a service-account key must name as `token_uri` for this simulator.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base_url.trim_end_matches('/'))
    }
}

/// One call to a context endpoint, as the simulator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The path called.
    pub path: String,
    /// The JSON body (a string holding the readable text when it was not JSON).
    pub body: Value,
    /// Whether the bearer token was valid.
    pub bearer_valid: bool,
    /// The status answered.
    pub status: u16,
}

/// The user a session was opened for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionUser {
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// RPPS or technical id.
    pub rpps: String,
}

/// What a session was opened for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKind {
    /// A Scan & Go session for one patient.
    Scan {
        /// `facilitySlug` of the request.
        facility_slug: String,
        /// `patientId` of the request; the pushed bundle carries it back.
        patient_id: String,
    },
    /// A guide session.
    Guide {
        /// The guide name.
        guide: String,
        /// UCD codes to pre-fill.
        ucds: Vec<String>,
    },
}

/// A session opened by a context call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who opened it.
    pub user: SessionUser,
    /// What for.
    pub kind: SessionKind,
}

/// One push made by the import endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRecord {
    /// The session imported.
    pub session: String,
    /// The push endpoint's status, when it answered.
    pub status: Option<u16>,
    /// Why the push failed, when it did.
    pub error: Option<String>,
}

/// Shared simulator state: settings, keys, sessions and what was seen; cheap to clone.
#[derive(Clone)]
pub struct SimulatorState {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SimulatorSettings,
    /// `base_url` without a trailing slash.
    base: String,
    /// Verifies partner assertions.
    partner_key: DecodingKey,
    /// Random per-process HS256 secret of the identity tokens.
    secret: Vec<u8>,
    /// For pushes.
    http: reqwest::Client,
    /// Bumped by [`SimulatorState::revoke_tokens`]; tokens of older generations are refused.
    generation: AtomicU64,
    /// Calls to the token endpoint, accepted or not.
    token_requests: AtomicU64,
    /// Calls to the context endpoints. std mutexes: held only to push or copy, never across an
    /// await.
    /// The last [`KEPT`] of each: the simulator runs for days in a demo or test bed, so
    /// what it remembers must not grow with every launch.
    requests: Mutex<VecDeque<RecordedRequest>>,
    sessions: Mutex<Sessions>,
    pushes: Mutex<VecDeque<PushRecord>>,
}

/// How many requests, sessions and pushes the simulator remembers (the oldest go first).
pub const KEPT: usize = 1_000;

/// Open Scan & Go sessions by id, the oldest forgotten past [`KEPT`].
#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Session>,
    order: VecDeque<String>,
}

impl Sessions {
    fn insert(&mut self, id: String, session: Session) {
        if self.by_id.insert(id.clone(), session).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }
}

/// Appends to a bounded log, forgetting the oldest entry past [`KEPT`].
fn remember<T>(log: &Mutex<VecDeque<T>>, entry: T) {
    let mut log = lock(log);
    log.push_back(entry);
    while log.len() > KEPT {
        log.pop_front();
    }
}

impl std::fmt::Debug for SimulatorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorState")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimulatorState {
    /// Checks the settings and draws the token secret.
    pub fn new(settings: SimulatorSettings) -> Result<Self, SimulatorError> {
        let base = settings.base_url.trim_end_matches('/').to_owned();
        let base_ok = reqwest::Url::parse(&base)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        if !base_ok {
            return Err(SimulatorError::BaseUrl {
                url: readable_line(settings.base_url.as_bytes(), 120),
            });
        }
        let partner_key = DecodingKey::from_rsa_pem(settings.public_key_pem.as_bytes())
            .map_err(|source| SimulatorError::PublicKey { source })?;
        let secret: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
            .iter()
            .flat_map(|u| *u.as_bytes())
            .collect();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(SimulatorError::Client)?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                base,
                partner_key,
                secret,
                http,
                generation: AtomicU64::new(0),
                token_requests: AtomicU64::new(0),
                requests: Mutex::new(VecDeque::new()),
                sessions: Mutex::new(Sessions::default()),
                pushes: Mutex::new(VecDeque::new()),
            }),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &SimulatorSettings {
        &self.inner.settings
    }

    /// How many times the token endpoint was called.
    pub fn token_requests(&self) -> u64 {
        self.inner.token_requests.load(Ordering::Relaxed)
    }

    /// The calls to the context endpoints, in order (the last [`KEPT`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).iter().cloned().collect()
    }

    /// The pushes made by the import endpoint, in order (the last [`KEPT`]).
    pub fn pushes(&self) -> Vec<PushRecord> {
        lock(&self.inner.pushes).iter().cloned().collect()
    }

    /// The session with this id (one of the last [`KEPT`] opened).
    pub fn session(&self, id: &str) -> Option<Session> {
        lock(&self.inner.sessions).by_id.get(id).cloned()
    }

    /// Makes every identity token issued so far invalid (as a revoked key would), so that the
    /// next call gets a 401.
    pub fn revoke_tokens(&self) {
        self.inner.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Issues an identity token as the token endpoint would, for `subject`.
    pub fn issue_token(&self, subject: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = jiff::Timestamp::now().as_second();
        let lifetime = i64::try_from(self.inner.settings.token_lifetime.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        let claims = IdClaims {
            iss: self.inner.base.clone(),
            aud: self.inner.settings.oauth_client_id.clone(),
            sub: subject.to_owned(),
            email: subject.to_owned(),
            iat: now,
            exp: now.saturating_add(lifetime),
            jti: uuid::Uuid::new_v4().to_string(),
            generation: self.inner.generation.load(Ordering::Relaxed),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.inner.secret),
        )
    }

    /// Whether `headers` carry a valid, unexpired, unrevoked bearer token of ours.
    fn bearer_valid(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&[&self.inner.settings.oauth_client_id]);
        validation.set_issuer(&[&self.inner.base]);
        jsonwebtoken::decode::<IdClaims>(
            token.trim(),
            &DecodingKey::from_secret(&self.inner.secret),
            &validation,
        )
        .is_ok_and(|data| data.claims.generation == self.inner.generation.load(Ordering::Relaxed))
    }

    fn record(&self, path: &str, body: &[u8], bearer_valid: bool, status: StatusCode) {
        let body = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(readable_line(body, 400)));
        remember(
            &self.inner.requests,
            RecordedRequest {
                path: path.to_owned(),
                body,
                bearer_valid,
                status: status.as_u16(),
            },
        );
    }

    fn open_session(&self, session: Session) -> Value {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let url = format!("{}/scan/{id}", self.inner.base);
        lock(&self.inner.sessions).insert(id.clone(), session);
        json!({ "token": id, "url": url })
    }
}

/// Claims of the identity tokens the simulator issues.
#[derive(Debug, Serialize, Deserialize)]
struct IdClaims {
    iss: String,
    aud: String,
    sub: String,
    email: String,
    iat: i64,
    exp: i64,
    jti: String,
    /// The revocation generation the token belongs to.
    #[serde(rename = "gen")]
    generation: u64,
}

/// Claims we require in a partner assertion.
#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    #[serde(default)]
    target_audience: Option<String>,
    #[allow(dead_code)] // required to be present; its value is not checked
    iat: i64,
}

/// The simulator's routes; mount them where `base_url` points.
pub fn router(state: SimulatorState) -> Router {
    Router::new()
        .route("/token", post(token))
        .route(SCAN_TOKEN_PATH, post(scan_token))
        .route(PREPARE_PATH, post(prepare))
        .route("/scan/{id}", get(scan_page))
        .route("/scan/{id}/import", post(import))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The token endpoint's form.
#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    assertion: Option<String>,
}

/// An OAuth error answer, in the token endpoint's format.
fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    let body = json!({ "error": error, "error_description": description.into() });
    (status, axum::Json(body)).into_response()
}

async fn token(
    State(state): State<SimulatorState>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    state.inner.token_requests.fetch_add(1, Ordering::Relaxed);
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                rejection.body_text(),
            );
        }
    };
    if form.grant_type.as_deref() != Some(JWT_BEARER_GRANT) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("`grant_type` must be `{JWT_BEARER_GRANT}`"),
        );
    }
    let Some(assertion) = form.assertion.filter(|a| !a.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "`assertion` is missing",
        );
    };
    match verify_assertion(&state, &assertion) {
        Ok(subject) => match state.issue_token(&subject) {
            Ok(id_token) => axum::Json(json!({ "id_token": id_token })).into_response(),
            Err(e) => oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                format!("cannot sign the identity token: {e}"),
            ),
        },
        Err(description) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description),
    }
}

/// Checks a partner assertion; returns its subject, or why it is refused.
fn verify_assertion(state: &SimulatorState, assertion: &str) -> Result<String, String> {
    let settings = &state.inner.settings;
    let token_uri = settings.token_uri();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.set_audience(&[&token_uri]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    if let Some(email) = &settings.client_email {
        validation.set_issuer(&[email]);
        validation.sub = Some(email.clone());
    }
    let data =
        jsonwebtoken::decode::<AssertionClaims>(assertion, &state.inner.partner_key, &validation)
            .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => "Invalid JWT Signature.".to_owned(),
            ErrorKind::ExpiredSignature => "the assertion has expired".to_owned(),
            ErrorKind::InvalidAudience => format!("`aud` must be `{token_uri}`"),
            ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => format!(
                "`iss` and `sub` must be the service account `{}`",
                settings.client_email.as_deref().unwrap_or_default()
            ),
            ErrorKind::InvalidAlgorithm => "the assertion must be signed RS256".to_owned(),
            ErrorKind::MissingRequiredClaim(claim) => {
                format!("the assertion has no `{claim}` claim")
            }
            _ => format!("the assertion is not a valid JWT: {e}"),
        })?;
    let claims = data.claims;
    if claims.iss != claims.sub {
        return Err("`iss` and `sub` must both be the service account".to_owned());
    }
    if claims.target_audience.as_deref() != Some(settings.oauth_client_id.as_str()) {
        return Err(format!(
            "`target_audience` must be the OAuth client id `{}`",
            settings.oauth_client_id
        ));
    }
    Ok(claims.sub)
}

/// A refused context call: status and `{"error", "message", "parameter"}`.
struct Refusal {
    status: StatusCode,
    message: String,
    parameter: Option<&'static str>,
}

impl Refusal {
    fn bad(parameter: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            parameter,
        }
    }

    fn into_response(self) -> Response {
        let error = if self.status == StatusCode::UNAUTHORIZED {
            "unauthorized"
        } else {
            "bad_request"
        };
        let mut body = json!({ "error": error, "message": self.message });
        if let (Some(p), Some(map)) = (self.parameter, body.as_object_mut()) {
            map.insert("parameter".to_owned(), Value::from(p));
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// The fields of one context call: required strings and optional string lists.
struct BodySpec {
    strings: &'static [&'static str],
    lists: &'static [&'static str],
}

const SCAN_SPEC: BodySpec = BodySpec {
    strings: &[
        "first_name",
        "last_name",
        "rpps",
        "facilitySlug",
        "patientId",
    ],
    lists: &[],
};

const PREPARE_SPEC: BodySpec = BodySpec {
    strings: &["rpps", "first_name", "last_name", "guide"],
    lists: &["ucds"],
};

/// Checks a body against `spec` exactly: every string present and non-blank, lists made of
/// non-blank strings, nothing else.
fn check_body(body: &[u8], spec: &BodySpec) -> Result<serde_json::Map<String, Value>, Refusal> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::bad(None, format!("the body is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Refusal::bad(None, "the body must be a JSON object"));
    };
    for &field in spec.strings {
        match map.get(field) {
            None | Some(Value::Null) => {
                return Err(Refusal::bad(Some(field), format!("`{field}` is missing")));
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(Refusal::bad(Some(field), format!("`{field}` is empty")));
            }
            Some(Value::String(_)) => {}
            Some(_) => {
                return Err(Refusal::bad(
                    Some(field),
                    format!("`{field}` must be a string"),
                ));
            }
        }
    }
    for &field in spec.lists {
        let ok = match map.get(field) {
            None => true,
            Some(Value::Array(items)) => items
                .iter()
                .all(|i| i.as_str().is_some_and(|s| !s.trim().is_empty())),
            Some(_) => false,
        };
        if !ok {
            return Err(Refusal::bad(
                Some(field),
                format!("`{field}` must be a list of non-empty strings"),
            ));
        }
    }
    if let Some(unknown) = map
        .keys()
        .find(|k| !spec.strings.contains(&k.as_str()) && !spec.lists.contains(&k.as_str()))
    {
        return Err(Refusal::bad(
            None,
            format!(
                "`{}` is not an accepted field",
                readable_line(unknown.as_bytes(), 60)
            ),
        ));
    }
    Ok(map)
}

fn text(map: &serde_json::Map<String, Value>, field: &str) -> String {
    map.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Shared flow of both context calls: bearer, exact body, session, record.
fn context_call(
    state: &SimulatorState,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    spec: &BodySpec,
    kind: fn(&serde_json::Map<String, Value>) -> SessionKind,
) -> Response {
    let bearer_valid = state.bearer_valid(headers);
    let outcome = if bearer_valid {
        check_body(body, spec)
    } else {
        Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            message: "the bearer token is missing, invalid or expired".to_owned(),
            parameter: None,
        })
    };
    let response = match outcome {
        Ok(map) => {
            let session = Session {
                user: SessionUser {
                    first_name: text(&map, "first_name"),
                    last_name: text(&map, "last_name"),
                    rpps: text(&map, "rpps"),
                },
                kind: kind(&map),
            };
            axum::Json(state.open_session(session)).into_response()
        }
        Err(refusal) => refusal.into_response(),
    };
    state.record(path, body, bearer_valid, response.status());
    response
}

async fn scan_token(
    State(state): State<SimulatorState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    context_call(
        &state,
        SCAN_TOKEN_PATH,
        &headers,
        &body,
        &SCAN_SPEC,
        |map| SessionKind::Scan {
            facility_slug: text(map, "facilitySlug"),
            patient_id: text(map, "patientId"),
        },
    )
}

async fn prepare(State(state): State<SimulatorState>, headers: HeaderMap, body: Bytes) -> Response {
    context_call(
        &state,
        PREPARE_PATH,
        &headers,
        &body,
        &PREPARE_SPEC,
        |map| SessionKind::Guide {
            guide: text(map, "guide"),
            ucds: map
                .get("ucds")
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        },
    )
}

/// The page's script: it reads nothing from the page but its own URL, so no session data is
/// ever interpolated into JavaScript.
const PAGE_SCRIPT: &str = r#"
const button = document.getElementById('import');
const result = document.getElementById('result');
button?.addEventListener('click', async () => {
  button.disabled = true;
  let status = 'error';
  let prescription = null;
  try {
    const answer = await fetch(location.pathname.replace(/\/+$/, '') + '/import', { method: 'POST' });
    const body = await answer.json();
    status = body.status === 'success' ? 'success' : 'error';
    prescription = body.prescription ?? null;
    result.textContent = body.message ?? status;
  } catch (e) {
    result.textContent = 'import failed: ' + e;
  }
  // As Scan & Go: to the window that opened it (popup), else to the page that frames it.
  const host = window.opener ?? (window.parent !== window ? window.parent : null);
  host?.postMessage({ status, prescription }, '*');
  location.hash = status === 'success' ? '#success' : '#error';
  button.disabled = false;
});
"#;

/// The Scan & Go page's `Content-Security-Policy`: its one inline script (by hash), its own
/// styles, `fetch` to its own origin, nothing else.
fn page_policy() -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(PAGE_SCRIPT));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    )
}

fn render_page(id: &str, session: &Session) -> String {
    let user = &session.user;
    let mut rows = String::new();
    let mut row = |label: &str, value: &str| {
        let _ = write!(
            rows,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape_html(label),
            escape_html(value)
        );
    };
    row(
        "User",
        &format!(
            "{} {} (RPPS {})",
            user.first_name, user.last_name, user.rpps
        ),
    );
    let action = match &session.kind {
        SessionKind::Scan {
            facility_slug,
            patient_id,
        } => {
            row("Patient", patient_id);
            row("Facility", facility_slug);
            "<button id=\"import\" type=\"button\">Import to DPI</button>"
        }
        SessionKind::Guide { guide, ucds } => {
            row("Guide", guide);
            row("UCD", &ucds.join(", "));
            ""
        }
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Posos simulator: Scan &amp; Go</title>\
         <style>body{{font-family:sans-serif;margin:2em}}th{{text-align:left;padding-right:1em}}</style>\
         </head><body><h1>Scan &amp; Go (simulator)</h1>\
         <p>Session <code>{}</code></p><table>{rows}</table><p>{action}</p>\
         <p id=\"result\" role=\"status\"></p><script>{PAGE_SCRIPT}</script></body></html>\n",
        escape_html(id)
    )
}

async fn scan_page(State(state): State<SimulatorState>, Path(id): Path<String>) -> Response {
    match state.session(&id) {
        Some(session) => (
            [(axum::http::header::CONTENT_SECURITY_POLICY, page_policy())],
            Html(render_page(&id, &session)),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html>\n<html><body><p>unknown Scan &amp; Go session <code>{}</code></p></body></html>\n",
                escape_html(&id)
            )),
        )
            .into_response(),
    }
}

/// The import endpoint's answer.
fn import_answer(status: StatusCode, message: String, prescription: Value) -> Response {
    let outcome = if status.is_success() {
        "success"
    } else {
        "error"
    };
    let body = json!({ "status": outcome, "message": message, "prescription": prescription });
    (status, axum::Json(body)).into_response()
}

async fn import(State(state): State<SimulatorState>, Path(id): Path<String>) -> Response {
    let Some(session) = state.session(&id) else {
        return import_answer(
            StatusCode::NOT_FOUND,
            format!("unknown session `{}`", readable_line(id.as_bytes(), 60)),
            Value::Null,
        );
    };
    let SessionKind::Scan { patient_id, .. } = &session.kind else {
        return import_answer(
            StatusCode::CONFLICT,
            "only Scan & Go sessions import prescriptions".to_owned(),
            Value::Null,
        );
    };
    let settings = &state.inner.settings;
    let Some(push_url) = settings.push_url.as_deref() else {
        return import_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "no push endpoint is configured for the simulator".to_owned(),
            Value::Null,
        );
    };
    let bundle = prescription_bundle(&session, &jiff::Timestamp::now().to_string());
    let prescription = json!({
        "bundleId": bundle.get("id").cloned().unwrap_or(Value::Null),
        "patientId": patient_id,
    });
    let mut request = state
        .inner
        .http
        .post(push_url)
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .json(&bundle);
    if let Some(token) = &settings.push_token {
        request = request.bearer_auth(token);
    }
    let (status, error) = match request.send().await {
        Ok(response) => {
            let status = response.status();
            let error = (!status.is_success())
                .then(|| format!("the push endpoint answered HTTP {}", status.as_u16()));
            (Some(status.as_u16()), error)
        }
        Err(e) => (None, Some(format!("cannot push to `{push_url}`: {e}"))),
    };
    remember(
        &state.inner.pushes,
        PushRecord {
            session: id,
            status,
            error: error.clone(),
        },
    );
    match error {
        None => import_answer(
            StatusCode::OK,
            "prescription imported".to_owned(),
            prescription,
        ),
        Some(message) => import_answer(StatusCode::BAD_GATEWAY, message, prescription),
    }
}

/// A realistic Posos result for `session`: a FHIR R4 transaction Bundle with the Patient
/// (partner identifier = `patientId`), the Practitioner (RPPS), a RequestGroup, a Medication
/// and two MedicationRequests carrying dosage as text and as Timing/doseAndRate.
pub fn prescription_bundle(session: &Session, now: &str) -> Value {
    let patient_id = match &session.kind {
        SessionKind::Scan { patient_id, .. } => patient_id.as_str(),
        SessionKind::Guide { .. } => "",
    };
    let user = &session.user;
    let urn = || format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let (patient, practitioner, medication, group, first, second) =
        (urn(), urn(), urn(), urn(), urn(), urn());
    let entry = |full_url: &str, resource: Value| {
        let kind = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        json!({ "fullUrl": full_url, "resource": resource,
                "request": { "method": "POST", "url": kind } })
    };
    let dosage = |text: &str, frequency: u32, days: u32, dose: u32, unit: &str| {
        json!([{
            "sequence": 1,
            "text": text,
            "timing": { "repeat": {
                "boundsDuration": { "value": days, "unit": "jours", "system": "http://unitsofmeasure.org", "code": "d" },
                "frequency": frequency, "period": 1, "periodUnit": "d" } },
            "route": { "coding": [{ "system": "http://standardterms.edqm.eu", "code": "20053000", "display": "Oral use" }] },
            "doseAndRate": [{ "doseQuantity": { "value": dose, "unit": unit } }]
        }])
    };
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "transaction",
        "timestamp": now,
        "entry": [
            entry(&patient, json!({
                "resourceType": "Patient",
                "identifier": [{ "system": PARTNER_PATIENT_SYSTEM, "value": patient_id }]
            })),
            entry(&practitioner, json!({
                "resourceType": "Practitioner",
                "identifier": [{ "system": RPPS_SYSTEM, "value": user.rpps }],
                "name": [{ "family": user.last_name, "given": [user.first_name] }]
            })),
            entry(&medication, json!({
                "resourceType": "Medication",
                "code": {
                    "coding": [{ "system": "http://www.whocc.no/atc", "code": "N02BE01", "display": "paracetamol" }],
                    "text": "PARACETAMOL 1 g, comprimé"
                },
                "form": { "text": "comprimé" }
            })),
            entry(&group, json!({
                "resourceType": "RequestGroup",
                "status": "active",
                "intent": "order",
                "subject": { "reference": patient },
                "author": { "reference": practitioner },
                "authoredOn": now,
                "action": [
                    { "resource": { "reference": first } },
                    { "resource": { "reference": second } }
                ]
            })),
            entry(&first, json!({
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "medicationReference": { "reference": medication },
                "subject": { "reference": patient },
                "requester": { "reference": practitioner },
                "authoredOn": now,
                "dosageInstruction": dosage("1 comprimé 3 fois par jour pendant 5 jours", 3, 5, 1, "comprimé")
            })),
            entry(&second, json!({
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [{ "system": "http://www.whocc.no/atc", "code": "A02BC01", "display": "omeprazole" }],
                    "text": "OMEPRAZOLE 20 mg, gélule"
                },
                "subject": { "reference": patient },
                "requester": { "reference": practitioner },
                "authoredOn": now,
                "dosageInstruction": dosage("1 gélule le matin pendant 14 jours", 1, 14, 1, "gélule")
            }))
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// The simulator forgets the oldest sessions, requests and pushes past [`KEPT`]: a demo
    /// daemon launched all day keeps a bounded memory.
    #[test]
    fn ok_memory_is_bounded() {
        let session = |n: usize| Session {
            user: SessionUser {
                first_name: "A".into(),
                last_name: "B".into(),
                rpps: n.to_string(),
            },
            kind: SessionKind::Guide {
                guide: "home".into(),
                ucds: Vec::new(),
            },
        };
        let mut sessions = Sessions::default();
        for n in 0..KEPT + 5 {
            sessions.insert(format!("s{n}"), session(n));
        }
        assert_eq!(sessions.by_id.len(), KEPT);
        assert_eq!(sessions.order.len(), KEPT);
        assert!(
            !sessions.by_id.contains_key("s4"),
            "the oldest are forgotten"
        );
        assert!(sessions.by_id.contains_key("s5"));
        assert!(sessions.by_id.contains_key(&format!("s{}", KEPT + 4)));

        let log = Mutex::new(VecDeque::new());
        for n in 0..KEPT + 3 {
            remember(&log, n);
        }
        let log = lock(&log);
        assert_eq!(log.len(), KEPT);
        assert_eq!(log.front(), Some(&3));
        assert_eq!(log.back(), Some(&(KEPT + 2)));
    }

    #[rstest]
    #[case::ok_scan(br#"{"first_name":"A","last_name":"B","rpps":"1","facilitySlug":"f","patientId":"p"}"#, &SCAN_SPEC, None)]
    #[case::err_missing(br#"{"first_name":"A","last_name":"B","facilitySlug":"f","patientId":"p"}"#, &SCAN_SPEC, Some((Some("rpps"), "`rpps` is missing")))]
    #[case::err_empty(br#"{"first_name":"A","last_name":"B","rpps":" ","facilitySlug":"f","patientId":"p"}"#, &SCAN_SPEC, Some((Some("rpps"), "`rpps` is empty")))]
    #[case::err_number(br#"{"first_name":"A","last_name":"B","rpps":"1","facilitySlug":"f","patientId":12}"#, &SCAN_SPEC, Some((Some("patientId"), "`patientId` must be a string")))]
    #[case::err_snake_case(br#"{"first_name":"A","last_name":"B","rpps":"1","facility_slug":"f","patientId":"p"}"#, &SCAN_SPEC, Some((Some("facilitySlug"), "`facilitySlug` is missing")))]
    #[case::err_extra(br#"{"first_name":"A","last_name":"B","rpps":"1","facilitySlug":"f","patientId":"p","x":1}"#, &SCAN_SPEC, Some((None, "`x` is not an accepted field")))]
    #[case::err_not_object(b"[]", &SCAN_SPEC, Some((None, "the body must be a JSON object")))]
    #[case::ok_guide(br#"{"rpps":"1","first_name":"A","last_name":"B","guide":"side_effects","ucds":["9000001"]}"#, &PREPARE_SPEC, None)]
    #[case::err_ucds(br#"{"rpps":"1","first_name":"A","last_name":"B","guide":"home","ucds":[1]}"#, &PREPARE_SPEC, Some((Some("ucds"), "`ucds` must be a list of non-empty strings")))]
    fn bodies(
        #[case] body: &[u8],
        #[case] spec: &BodySpec,
        #[case] expected: Option<(Option<&str>, &str)>,
    ) {
        let got = check_body(body, spec)
            .err()
            .map(|r| (r.parameter, r.message));
        assert_eq!(got.as_ref().map(|(p, m)| (*p, m.as_str())), expected);
    }

    #[test]
    fn ok_page_escapes_and_shows_context() {
        let session = Session {
            user: SessionUser {
                first_name: "Jean".into(),
                last_name: "<b>Dupont</b>".into(),
                rpps: "10001234567".into(),
            },
            kind: SessionKind::Scan {
                facility_slug: "chu-demo".into(),
                patient_id: "IPP\"42".into(),
            },
        };
        let page = render_page("abc", &session);
        assert!(page.contains("Jean &lt;b&gt;Dupont&lt;/b&gt; (RPPS 10001234567)"));
        assert!(page.contains("IPP&quot;42"));
        assert!(page.contains("Import to DPI"));
        assert!(!page.contains("<b>"));
        assert!(!page.contains("src=\"http"));
    }

    #[test]
    fn ok_bundle_shape() {
        let session = Session {
            user: SessionUser {
                first_name: "Jean".into(),
                last_name: "Dupont".into(),
                rpps: "10001234567".into(),
            },
            kind: SessionKind::Scan {
                facility_slug: "chu-demo".into(),
                patient_id: "IPP42".into(),
            },
        };
        let bundle = prescription_bundle(&session, "2026-01-01T00:00:00Z");
        assert_eq!(bundle["type"], "transaction");
        let kinds: Vec<&str> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Patient",
                "Practitioner",
                "Medication",
                "RequestGroup",
                "MedicationRequest",
                "MedicationRequest"
            ]
        );
        assert_eq!(
            bundle["entry"][0]["resource"]["identifier"][0]["value"],
            "IPP42"
        );
        assert_eq!(
            bundle["entry"][1]["resource"]["identifier"][0]["value"],
            "10001234567"
        );
        assert_eq!(
            bundle["entry"][4]["resource"]["dosageInstruction"][0]["timing"]["repeat"]["frequency"],
            3
        );
    }
}
