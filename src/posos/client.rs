//! The Posos partner-connect client: ask Posos for the URL that a browser is sent to.
//!
//! Two calls, as documented publicly by Posos (posos.care, API reference, "Context call"):
//!
//! - Scan & Go: `POST {base}/api/partners/patient/scan-token` with
//!   `{first_name, last_name, rpps, facilitySlug, patientId}` → `{"token": …, "url": …}`.
//! - Guides: `POST {base}/api/partners/proxy/prepare` with
//!   `{rpps, first_name, last_name, guide, …guide parameters}`. The public reference shows the
//!   request but not the answer nor the name of the medication-list parameter; we send the list
//!   as `ucds` (omitted when empty) and read `url` (or `location`, which the other
//!   partner-connect calls answer) from the answer. Both are assumptions to confirm with Posos.
//!
//! The base URL is `https://partner-connect.{preprod|production}.posos.co`; each environment
//! has its own key file (see [`auth`](super::auth)). Neither the format of a 400 answer is
//! public: [`PososError::BadRequest`] names the parameter found in the usual shapes
//! (`parameter`/`param`/`field`/`path`, an `errors` list, or a field name in the message).
//!
//! Every call carries `Authorization: Bearer <identity token>`. Timeouts, connection errors
//! and 5xx answers (from Posos or from the token endpoint) are retried `retries` times with
//! exponential backoff; a 401/403 invalidates the token, and the call is retried once with a
//! fresh one. A retried scan-token call after a timeout may leave an unused session at Posos;
//! only the URL of the answer we read is used.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::{AuthError, IdentityTokens, ServiceAccountKey};
use super::wire::read_capped;
use crate::retry::RetryPolicy;
use crate::text::readable_line;

/// Path of the Scan & Go context call.
pub const SCAN_TOKEN_PATH: &str = "/api/partners/patient/scan-token";

/// Path of the guide context call.
pub const PREPARE_PATH: &str = "/api/partners/proxy/prepare";

/// Largest answer we read from Posos; a launch answer is a few hundred bytes.
const MAX_RESPONSE: usize = 256 * 1024;

/// First pause between retries; it doubles after each failed attempt.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(200);

/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What the engine maps one Posos environment (preprod, production) onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PososSettings {
    /// `https://partner-connect.{env}.posos.co`, without the `/api/…` path.
    pub base_url: String,
    /// The service-account JSON key of this environment.
    pub key_file: PathBuf,
    /// The OAuth client id of this environment (`target_audience` of the assertion).
    pub oauth_client_id: String,
    /// Limit for opening a connection.
    pub connect_timeout: Duration,
    /// Limit for a whole request, answer included.
    pub request_timeout: Duration,
    /// Extra attempts after a timeout, a connection error or a 5xx answer.
    pub retries: u32,
}

/// The context of a Scan & Go session, serialized exactly as Posos expects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanTokenRequest {
    /// First name of the user (the prescriber or nurse at the screen).
    pub first_name: String,
    /// Last name of the user.
    pub last_name: String,
    /// RPPS of the user, or a technical user id agreed with Posos.
    pub rpps: String,
    /// The establishment id Posos gave at the start of the integration.
    #[serde(rename = "facilitySlug")]
    pub facility_slug: String,
    /// The key that the pushed prescription comes back with (IPP, visit number, session id).
    #[serde(rename = "patientId")]
    pub patient_id: String,
}

/// The context of a guide session (`home`, `side_effects`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuideRequest {
    /// RPPS of the user, or a technical user id agreed with Posos.
    pub rpps: String,
    /// First name of the user.
    pub first_name: String,
    /// Last name of the user.
    pub last_name: String,
    /// The guide to open.
    pub guide: String,
    /// UCD codes of the medications to pre-fill; omitted from the body when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ucds: Vec<String>,
}

/// An absolute http(s) URL returned by Posos, where the browser is to be redirected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchUrl(String);

impl LaunchUrl {
    /// Checks that `url` is an absolute http(s) URL: we redirect browsers to it.
    pub fn parse(url: &str) -> Option<Self> {
        let parsed = reqwest::Url::parse(url).ok()?;
        (matches!(parsed.scheme(), "http" | "https") && parsed.has_host())
            .then(|| Self(url.to_owned()))
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for LaunchUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why Posos did not give a launch URL; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PososError {
    /// No identity token (key file, token endpoint).
    #[error("cannot authenticate to Posos: {0}")]
    Auth(#[from] AuthError),
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client for Posos: {0}")]
    Client(#[source] reqwest::Error),
    /// No connection could be made or it broke, after every retry.
    #[error(
        "cannot reach Posos at `{url}` after {attempts} attempt(s): {source} (check the network, the proxy and `base_url`)"
    )]
    Unreachable {
        /// The URL called.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: reqwest::Error,
    },
    /// Posos did not answer within the request timeout, after every retry.
    #[error(
        "no answer from Posos at `{url}` within {timeout:?} after {attempts} attempt(s); retry later or raise `request_timeout`"
    )]
    Timeout {
        /// The URL called.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The request timeout in force.
        timeout: Duration,
    },
    /// Posos refused the request's content (HTTP 400/422).
    #[error(
        "the request to `{url}` was refused by Posos{}: {detail} (fix this value in the EHR context or the launch mapping)",
        parameter.as_deref().map(|p| format!(" because of parameter `{p}`")).unwrap_or_default()
    )]
    BadRequest {
        /// The URL called.
        url: String,
        /// The parameter Posos complained about, when its answer names one.
        parameter: Option<String>,
        /// Posos's explanation, made readable.
        detail: String,
    },
    /// Posos refused the identity token, and a fresh one too.
    #[error(
        "our identity token was refused by Posos at `{url}` with HTTP {status}, even a fresh one (check that `key_file` and `oauth_client_id` belong to this environment and that Posos enabled the service account)"
    )]
    Unauthorized {
        /// The URL called.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// Any other status, or a 5xx that outlived the retries.
    #[error(
        "unexpected HTTP {status} from Posos at `{url}` after {attempts} attempt(s): {detail} (retry later; if it persists, report it to Posos with the time of the call)"
    )]
    UnexpectedStatus {
        /// The URL called.
        url: String,
        /// The last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The answer, made readable.
        detail: String,
    },
    /// A 2xx answer without a usable URL.
    #[error(
        "no usable launch URL in the answer of Posos at `{url}`: {reason} (report it to Posos with the time of the call)"
    )]
    BadResponse {
        /// The URL called.
        url: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

/// A client for one Posos environment; cheap to clone, share it.
#[derive(Debug, Clone)]
pub struct PososClient {
    inner: Arc<Inner>,
    /// First pause between retries.
    backoff: Duration,
}

#[derive(Debug)]
struct Inner {
    /// `base_url` without a trailing slash.
    base: String,
    settings: PososSettings,
    http: reqwest::Client,
    tokens: IdentityTokens,
}

/// What one attempt came to.
enum Attempt {
    Done(Vec<u8>),
    /// Worth another attempt (transport error or 5xx), with the error to return if none is left.
    Transient(PososError),
    Denied(u16),
    Fatal(PososError),
}

impl PososClient {
    /// A client for the environment described by `settings`; reads and checks the key file.
    pub fn new(settings: PososSettings) -> Result<Self, PososError> {
        let key = ServiceAccountKey::from_file(&settings.key_file)?;
        Self::with_key(settings, key)
    }

    /// A client with an already loaded key (the built-in simulator points the key's
    /// `token_uri` at itself); `settings.key_file` is then only used in messages.
    pub fn with_key(settings: PososSettings, key: ServiceAccountKey) -> Result<Self, PososError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(concat!("ordobridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(PososError::Client)?;
        let tokens = IdentityTokens::new(key, settings.oauth_client_id.clone(), http.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                base: settings.base_url.trim_end_matches('/').to_owned(),
                settings,
                http,
                tokens,
            }),
            backoff: DEFAULT_BACKOFF,
        })
    }

    /// The same client with another first retry pause (tests use a few milliseconds).
    #[must_use]
    pub fn with_retry_backoff(self, backoff: Duration) -> Self {
        Self { backoff, ..self }
    }

    /// The identity tokens of this environment (shared by every call of this client).
    pub fn tokens(&self) -> &IdentityTokens {
        &self.inner.tokens
    }

    /// The settings this client was built from.
    pub fn settings(&self) -> &PososSettings {
        &self.inner.settings
    }

    /// Asks for a Scan & Go session and returns the URL to open.
    pub async fn scan_token(&self, req: &ScanTokenRequest) -> Result<LaunchUrl, PososError> {
        self.launch(SCAN_TOKEN_PATH, req).await
    }

    /// Asks for a guide session and returns the URL to open.
    pub async fn prepare_guide(&self, req: &GuideRequest) -> Result<LaunchUrl, PososError> {
        self.launch(PREPARE_PATH, req).await
    }

    async fn launch<T: Serialize>(&self, path: &str, body: &T) -> Result<LaunchUrl, PososError> {
        let url = format!("{}{path}", self.inner.base);
        let started = std::time::Instant::now();
        let answer = self.post(&url, body).await;
        let endpoint = path.rsplit('/').next().unwrap_or(path);
        crate::metrics::observe_posos(endpoint, answer.is_ok(), started.elapsed());
        let answer = answer?;
        launch_url(&answer).map_err(|reason| PososError::BadResponse { url, reason })
    }

    /// POSTs `body` with retries; returns the body of a 2xx answer.
    async fn post<T: Serialize>(&self, url: &str, body: &T) -> Result<Vec<u8>, PososError> {
        let retries = self.inner.settings.retries;
        let mut attempts = 0u32;
        let mut refreshed = false;
        loop {
            attempts += 1;
            let token = match self.inner.tokens.token().await {
                Ok(token) => token,
                Err(err) if err.is_transient() && attempts <= retries => {
                    let pause = backoff(self.backoff, attempts);
                    tracing::warn!(url, attempts, ?pause, error = %err, "no identity token, retrying");
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            match self.attempt(url, &token, body, attempts).await {
                Attempt::Done(answer) => return Ok(answer),
                Attempt::Fatal(err) => return Err(err),
                Attempt::Denied(status) => {
                    if refreshed {
                        return Err(PososError::Unauthorized {
                            url: url.to_owned(),
                            status,
                        });
                    }
                    // One retry with a fresh token; it does not use up the retry budget.
                    refreshed = true;
                    attempts = attempts.saturating_sub(1);
                    self.inner.tokens.reject(&token);
                    tracing::info!(url, status, "posos refused the identity token, refreshing");
                }
                Attempt::Transient(err) => {
                    if attempts > retries {
                        return Err(err);
                    }
                    let pause = backoff(self.backoff, attempts);
                    tracing::warn!(url, attempts, ?pause, error = %err, "posos call failed, retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn attempt<T: Serialize>(
        &self,
        url: &str,
        token: &str,
        body: &T,
        attempts: u32,
    ) -> Attempt {
        let transport = |source: reqwest::Error| {
            let err = if source.is_timeout() {
                PososError::Timeout {
                    url: url.to_owned(),
                    attempts,
                    timeout: self.inner.settings.request_timeout,
                }
            } else {
                PososError::Unreachable {
                    url: url.to_owned(),
                    attempts,
                    source,
                }
            };
            Attempt::Transient(err)
        };
        let sent = self
            .inner
            .http
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_builder() => {
                return Attempt::Fatal(PososError::Unreachable {
                    url: url.to_owned(),
                    attempts,
                    source: e,
                });
            }
            Err(e) => return transport(e),
        };
        let status = response.status();
        let (answer, cut) = match read_capped(response, MAX_RESPONSE).await {
            Ok(read) => read,
            Err(e) => return transport(e),
        };
        match status.as_u16() {
            200..=299 if cut => Attempt::Fatal(PososError::BadResponse {
                url: url.to_owned(),
                reason: format!("the answer is larger than {MAX_RESPONSE} bytes"),
            }),
            200..=299 => Attempt::Done(answer),
            400 | 422 => {
                let (parameter, detail) = bad_request_detail(&answer);
                Attempt::Fatal(PososError::BadRequest {
                    url: url.to_owned(),
                    parameter,
                    detail,
                })
            }
            code @ (401 | 403) => Attempt::Denied(code),
            code => {
                let err = PososError::UnexpectedStatus {
                    url: url.to_owned(),
                    status: code,
                    attempts,
                    detail: body_detail(&answer),
                };
                if status.is_server_error() {
                    Attempt::Transient(err)
                } else {
                    Attempt::Fatal(err)
                }
            }
        }
    }
}

/// The pause before attempt `attempts + 1`: `first`, doubled each time, capped (the shared
/// [`RetryPolicy`] without jitter: one caller waits, nobody retries in lockstep with it).
fn backoff(first: Duration, attempts: u32) -> Duration {
    RetryPolicy {
        initial: first,
        max: MAX_BACKOFF,
        multiplier: 2.0,
        max_attempts: 0,
    }
    .base_delay(attempts)
}

/// Reads `url` (or `location`) from a 2xx answer.
fn launch_url(body: &[u8]) -> Result<LaunchUrl, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the answer is not JSON ({e}): `{}`",
            readable_line(body, 120)
        )
    })?;
    let Some(url) = ["url", "location"]
        .iter()
        .find_map(|k| value.get(*k).and_then(Value::as_str))
    else {
        return Err(format!(
            "the answer has no `url` string: `{}`",
            readable_line(body, 120)
        ));
    };
    LaunchUrl::parse(url).ok_or_else(|| {
        format!(
            "`url` is not an absolute http(s) URL: `{}`",
            readable_line(url.as_bytes(), 120)
        )
    })
}

/// The fields we send; a 400 message that names one of them names the parameter.
const REQUEST_FIELDS: [&str; 7] = [
    "first_name",
    "last_name",
    "rpps",
    "facilitySlug",
    "patientId",
    "guide",
    "ucds",
];

/// The parameter named by a 400 answer, and its explanation. Accepts `{"parameter"|"param"|
/// "field"|"path": …}`, `{"errors": [{"param"|"path"|"field": …, "msg"|"message": …}]}`, and
/// messages (string or list) that mention one of the fields we send.
fn bad_request_detail(body: &[u8]) -> (Option<String>, String) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (None, body_detail(body));
    };
    const NAME_KEYS: [&str; 5] = ["parameter", "param", "field", "path", "property"];
    const TEXT_KEYS: [&str; 4] = ["message", "msg", "error_description", "error"];
    let name_in = |v: &Value| {
        NAME_KEYS
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let text_in = |v: &Value| -> Option<String> {
        TEXT_KEYS.iter().find_map(|k| match v.get(*k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) => {
                let texts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                (!texts.is_empty()).then(|| texts.join("; "))
            }
            _ => None,
        })
    };
    let first_error = value
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|errors| errors.first());
    let parameter = name_in(&value).or_else(|| first_error.and_then(name_in));
    let text = text_in(&value).or_else(|| first_error.and_then(text_in));
    let parameter = parameter.or_else(|| {
        let text = text.as_deref()?;
        REQUEST_FIELDS
            .iter()
            .find(|f| text.contains(**f))
            .map(|f| (*f).to_owned())
    });
    let detail = match text {
        Some(text) => readable_line(text.as_bytes(), 200),
        None => body_detail(body),
    };
    (parameter.map(|p| readable_line(p.as_bytes(), 60)), detail)
}

/// A response body as a short readable detail.
fn body_detail(body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        "empty answer".to_owned()
    } else {
        format!("`{}`", readable_line(body, 200))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_simulator(
        br#"{"error":"bad_request","message":"`rpps` is missing","parameter":"rpps"}"#,
        Some("rpps"),
        "`rpps` is missing"
    )]
    #[case::ok_express(
        br#"{"errors":[{"msg":"Invalid value","param":"patientId","location":"body"}]}"#,
        Some("patientId"),
        "Invalid value"
    )]
    #[case::ok_nest(
        br#"{"statusCode":400,"message":["facilitySlug must be a string"],"error":"Bad Request"}"#,
        Some("facilitySlug"),
        "facilitySlug must be a string"
    )]
    #[case::ok_unnamed(br#"{"message":"something is off"}"#, None, "something is off")]
    #[case::ok_text(b"Bad Request\n", None, "`Bad Request`")]
    #[case::ok_empty(b"", None, "empty answer")]
    fn bad_request_details(
        #[case] body: &[u8],
        #[case] parameter: Option<&str>,
        #[case] detail: &str,
    ) {
        let (p, d) = bad_request_detail(body);
        assert_eq!(p.as_deref(), parameter);
        assert_eq!(d, detail);
    }

    #[rstest]
    #[case::ok_url(
        br#"{"token":"t","url":"https://scan-complete.preprod.posos.co?token=t"}"#,
        Ok("https://scan-complete.preprod.posos.co?token=t")
    )]
    #[case::ok_location(
        br#"{"location":"https://partner-connect.preprod.posos.co/x"}"#,
        Ok("https://partner-connect.preprod.posos.co/x")
    )]
    #[case::err_no_url(
        br#"{"token":"t"}"#,
        Err("the answer has no `url` string: `{\"token\":\"t\"}`")
    )]
    #[case::err_scheme(
        br#"{"url":"javascript:alert(1)"}"#,
        Err("`url` is not an absolute http(s) URL: `javascript:alert(1)`")
    )]
    #[case::err_not_json(
        b"<html>",
        Err("the answer is not JSON (expected value at line 1 column 1): `<html>`")
    )]
    fn launch_urls(#[case] body: &[u8], #[case] expected: Result<&str, &str>) {
        let got = launch_url(body);
        assert_eq!(
            got.as_ref().map(LaunchUrl::as_str).map_err(String::as_str),
            expected
        );
    }

    #[rstest]
    #[case::ok_first(1, 100)]
    #[case::ok_second(2, 200)]
    #[case::ok_third(3, 400)]
    #[case::ok_capped(40, 10_000)]
    fn backoffs(#[case] attempts: u32, #[case] millis: u64) {
        assert_eq!(
            backoff(Duration::from_millis(100), attempts),
            Duration::from_millis(millis)
        );
    }

    #[test]
    fn ok_request_bodies_are_exact() {
        let scan = ScanTokenRequest {
            first_name: "John".into(),
            last_name: "Carter".into(),
            rpps: "abcde1234".into(),
            facility_slug: "hospital-demo".into(),
            patient_id: "123456".into(),
        };
        assert_eq!(
            serde_json::to_value(&scan).unwrap(),
            serde_json::json!({"first_name": "John", "last_name": "Carter", "rpps": "abcde1234",
                "facilitySlug": "hospital-demo", "patientId": "123456"})
        );
        let guide = GuideRequest {
            rpps: "abcde1234".into(),
            first_name: "John".into(),
            last_name: "Doe".into(),
            guide: "home".into(),
            ucds: vec![],
        };
        assert_eq!(
            serde_json::to_value(&guide).unwrap(),
            serde_json::json!({"rpps": "abcde1234", "first_name": "John", "last_name": "Doe", "guide": "home"})
        );
    }

    #[test]
    fn err_bad_request_text_is_pinned() {
        let err = PososError::BadRequest {
            url: "http://127.0.0.1:1/api/partners/patient/scan-token".into(),
            parameter: Some("rpps".into()),
            detail: "`rpps` is missing".into(),
        };
        assert_eq!(
            err.to_string(),
            "the request to `http://127.0.0.1:1/api/partners/patient/scan-token` was refused by Posos because of parameter `rpps`: `rpps` is missing (fix this value in the EHR context or the launch mapping)"
        );
    }
}
