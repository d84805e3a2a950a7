//! Posos authentication: a service-account key becomes a Google-style identity token.
//!
//! Posos sits behind an identity-aware proxy. The partner holds a service-account JSON key (one
//! per environment, preprod or production) and an OAuth client id. To call Posos it:
//!
//! 1. signs an RS256 JWT with the key: `iss` = `sub` = `client_email`, `aud` = the key's
//!    `token_uri`, `target_audience` = the OAuth client id, `iat`/`exp` = now/now+1h;
//! 2. exchanges it at `token_uri` with a form POST
//!    (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, `assertion=<jwt>`) for
//!    `{"id_token": "…"}`;
//! 3. sends `Authorization: Bearer <id_token>` on every call.
//!
//! [`IdentityTokens`] caches the identity token until [`REFRESH_MARGIN`] before its expiry (or
//! half its lifetime for short-lived tokens), lets concurrent callers share one refresh, and can
//! be invalidated when Posos answers 401/403.
//!
//! The private key never leaves [`ServiceAccountKey`]: it is parsed once, kept only as a signing
//! key, and redacted from `Debug`; no error message quotes the key file's content.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::Value;

use super::wire::read_capped;
use crate::text::readable_line;

/// The OAuth grant type of the JWT-bearer exchange (RFC 7523), sent as `grant_type`.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long before its expiry a cached identity token is replaced, so that a token is never
/// sent while it expires in flight.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Lifetime of the signed assertion (the token endpoint caps it at one hour).
const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// Largest token-endpoint answer we read; an identity token is a few kilobytes.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// Why no identity token could be had; each message names the key file or the token endpoint
/// and says what to check.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The key file could not be read.
    #[error(
        "cannot read the Posos service-account key `{}`: {source} (check the `key_file` setting and the file permissions)",
        path.display()
    )]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not JSON; only the position is reported, never the content.
    #[error(
        "the Posos service-account key `{}` is not valid JSON (line {line}, column {column}); use the .json key file Posos sent for this environment",
        path.display()
    )]
    KeyNotJson {
        /// The key file.
        path: PathBuf,
        /// Line of the syntax error (1-based).
        line: usize,
        /// Column of the syntax error (1-based).
        column: usize,
    },
    /// The key file is JSON but not an object.
    #[error(
        "the Posos service-account key `{}` is not a JSON object; use the .json key file Posos sent for this environment",
        path.display()
    )]
    KeyNotObject {
        /// The key file.
        path: PathBuf,
    },
    /// A required key of the key file is missing or unusable.
    #[error(
        "the Posos service-account key `{}`: `{field}` {problem}; use the .json key file Posos sent for this environment",
        path.display()
    )]
    KeyField {
        /// The key file.
        path: PathBuf,
        /// The JSON key (`client_email`, `private_key`, `token_uri`).
        field: &'static str,
        /// What is wrong with it.
        problem: KeyFieldProblem,
    },
    /// The assertion could not be signed (should not happen with a key that loaded).
    #[error("cannot sign the token request with the key of `{client_email}`: {source}")]
    Sign {
        /// The service account.
        client_email: String,
        /// The signing error.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// The token endpoint could not be reached.
    #[error(
        "cannot reach the token endpoint `{uri}`: {source} (check the network, the proxy and the key's `token_uri`)"
    )]
    TokenUnreachable {
        /// The token endpoint.
        uri: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The token endpoint did not answer in time.
    #[error(
        "the token endpoint `{uri}` did not answer in time; retry later or raise `request_timeout`"
    )]
    TokenTimeout {
        /// The token endpoint.
        uri: String,
    },
    /// The token endpoint refused the assertion.
    #[error(
        "the token endpoint `{uri}` refused the service account `{client_email}` with HTTP {status}: {detail} (check that `key_file` and `oauth_client_id` belong to this environment and that the key was not revoked)"
    )]
    TokenRejected {
        /// The token endpoint.
        uri: String,
        /// The service account.
        client_email: String,
        /// The HTTP status.
        status: u16,
        /// The endpoint's explanation, made readable.
        detail: String,
    },
    /// The token endpoint answered 2xx without a usable identity token.
    #[error("the token endpoint `{uri}` answered without a usable identity token: {reason}")]
    BadTokenResponse {
        /// The token endpoint.
        uri: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

impl AuthError {
    /// Whether trying again later may succeed (network trouble, timeout, 5xx from the token
    /// endpoint), as opposed to a key or configuration problem.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::TokenUnreachable { .. } | Self::TokenTimeout { .. } => true,
            Self::TokenRejected { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// What is wrong with one key of the service-account file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFieldProblem {
    /// The key is absent or `null`.
    Missing,
    /// The key is not a JSON string.
    NotString,
    /// The key is an empty string.
    Empty,
    /// `private_key` is not an RSA private key in PEM form.
    NotRsaPem,
    /// `token_uri` is not an absolute http(s) URL.
    NotHttpUrl,
}

impl fmt::Display for KeyFieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "is missing",
            Self::NotString => "is not a string",
            Self::Empty => "is empty",
            Self::NotRsaPem => "is not an RSA private key in PEM form",
            Self::NotHttpUrl => "is not an absolute http(s) URL",
        })
    }
}

/// A loaded service-account key: who we are and the key that proves it. `Debug` redacts the key.
pub struct ServiceAccountKey {
    /// Where the key was read from, for error messages.
    path: PathBuf,
    /// `client_email`: the JWT's `iss` and `sub`.
    client_email: String,
    /// `token_uri`: where assertions are exchanged, and their `aud`.
    token_uri: String,
    /// `private_key_id`, sent as the JWT `kid` when present.
    key_id: Option<String>,
    /// The parsed `private_key`; the PEM text is not kept.
    signing_key: EncodingKey,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("path", &self.path)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("key_id", &self.key_id)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// The claims of the assertion we sign.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    target_audience: &'a str,
    iat: i64,
    exp: i64,
}

impl ServiceAccountKey {
    /// Reads and validates a service-account JSON key file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::ReadKey {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(path, &text)
    }

    /// Parses a service-account JSON key; `path` only names it in errors.
    pub fn from_json(path: impl AsRef<Path>, json: &str) -> Result<Self, AuthError> {
        let path = path.as_ref().to_path_buf();
        // Parse to a `Value` first: serde's typed errors may quote string values, and the key
        // file holds a secret; syntax errors only carry a position.
        let value: Value = serde_json::from_str(json).map_err(|e| AuthError::KeyNotJson {
            path: path.clone(),
            line: e.line(),
            column: e.column(),
        })?;
        let Some(object) = value.as_object() else {
            return Err(AuthError::KeyNotObject { path });
        };
        let field = |name: &'static str| -> Result<&str, AuthError> {
            let problem = match object.get(name) {
                None | Some(Value::Null) => KeyFieldProblem::Missing,
                Some(Value::String(s)) if s.trim().is_empty() => KeyFieldProblem::Empty,
                Some(Value::String(s)) => return Ok(s.as_str()),
                Some(_) => KeyFieldProblem::NotString,
            };
            Err(AuthError::KeyField {
                path: path.clone(),
                field: name,
                problem,
            })
        };
        let client_email = field("client_email")?.trim().to_owned();
        let token_uri = field("token_uri")?.trim().to_owned();
        let pem = field("private_key")?;
        let is_http = reqwest::Url::parse(&token_uri)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        if !is_http {
            return Err(AuthError::KeyField {
                path,
                field: "token_uri",
                problem: KeyFieldProblem::NotHttpUrl,
            });
        }
        let signing_key =
            EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| AuthError::KeyField {
                path: path.clone(),
                field: "private_key",
                problem: KeyFieldProblem::NotRsaPem,
            })?;
        let key_id = object
            .get("private_key_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Ok(Self {
            path,
            client_email,
            token_uri,
            key_id,
            signing_key,
        })
    }

    /// The service account's e-mail (`iss`/`sub` of the assertion).
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The token endpoint of this key.
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The file the key was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Signs the RS256 assertion asking for an identity token for `target_audience`, issued at
    /// `now` (Unix seconds) and valid one hour.
    pub fn sign_assertion(&self, target_audience: &str, now: i64) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid.clone_from(&self.key_id);
        let claims = AssertionClaims {
            iss: &self.client_email,
            sub: &self.client_email,
            aud: &self.token_uri,
            target_audience,
            iat: now,
            exp: now.saturating_add(ASSERTION_LIFETIME_SECS),
        };
        jsonwebtoken::encode(&header, &claims, &self.signing_key).map_err(|source| {
            AuthError::Sign {
                client_email: self.client_email.clone(),
                source,
            }
        })
    }
}

/// A cached identity token and when to replace it.
struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// Identity tokens for one environment, cached and shared: the one thing every Posos call needs.
pub struct IdentityTokens {
    /// The service account that signs the assertions.
    key: ServiceAccountKey,
    /// The OAuth client id, sent as `target_audience`.
    audience: String,
    /// Shared HTTP client (its timeouts apply to the token exchange too).
    http: reqwest::Client,
    /// The current token. A std lock: it is held only to copy or replace a string, never across
    /// an await.
    cache: RwLock<Option<CachedToken>>,
    /// Held for a whole refresh so that concurrent callers wait for one exchange instead of each
    /// starting their own.
    refresh: tokio::sync::Mutex<()>,
    /// Token exchanges performed, for metrics and tests.
    refreshes: AtomicU64,
}

impl fmt::Debug for IdentityTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityTokens")
            .field("key", &self.key)
            .field("audience", &self.audience)
            .field("refreshes", &self.refreshes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl IdentityTokens {
    /// Identity tokens for `key`, asked for `oauth_client_id`, exchanged through `http`.
    pub fn new(
        key: ServiceAccountKey,
        oauth_client_id: impl Into<String>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            key,
            audience: oauth_client_id.into(),
            http,
            cache: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            refreshes: AtomicU64::new(0),
        }
    }

    /// The service account in use.
    pub fn key(&self) -> &ServiceAccountKey {
        &self.key
    }

    /// How many token exchanges this instance has made.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// A valid identity token: the cached one, or a fresh one when it is near its expiry.
    /// Concurrent callers share a single exchange.
    pub async fn token(&self) -> Result<String, AuthError> {
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        // Only one exchange at a time; whoever waited here re-checks the cache first, because
        // the holder before them has most likely just filled it.
        let _guard = self.refresh.lock().await;
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let fresh = self.exchange().await?;
        let token = fresh.token.clone();
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
        Ok(token)
    }

    /// Forgets the cached token, whatever it is; the next [`token`](Self::token) exchanges.
    pub fn invalidate(&self) {
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Forgets the cached token only if it is still `rejected`: when many calls get a 401 with
    /// the same token, the first one's refresh is not thrown away by the others.
    pub fn reject(&self, rejected: &str) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.as_ref().is_some_and(|c| c.token == rejected) {
            *cache = None;
        }
    }

    fn cached(&self) -> Option<String> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    async fn exchange(&self) -> Result<CachedToken, AuthError> {
        let uri = self.key.token_uri();
        let assertion = self
            .key
            .sign_assertion(&self.audience, jiff::Timestamp::now().as_second())?;
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                AuthError::TokenTimeout {
                    uri: uri.to_owned(),
                }
            } else {
                AuthError::TokenUnreachable {
                    uri: uri.to_owned(),
                    source,
                }
            }
        };
        let response = self
            .http
            .post(uri)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let (body, cut) = read_capped(response, MAX_TOKEN_RESPONSE)
            .await
            .map_err(transport)?;
        if !status.is_success() {
            return Err(AuthError::TokenRejected {
                uri: uri.to_owned(),
                client_email: self.key.client_email().to_owned(),
                status: status.as_u16(),
                detail: token_error_detail(&body),
            });
        }
        let bad = |reason: String| AuthError::BadTokenResponse {
            uri: uri.to_owned(),
            reason,
        };
        if cut {
            return Err(bad(format!(
                "the answer is larger than {MAX_TOKEN_RESPONSE} bytes"
            )));
        }
        let answer = parse_token_answer(&body).map_err(bad)?;
        let now = jiff::Timestamp::now().as_second();
        let lifetime = Duration::from_secs(u64::try_from(answer.expires_at - now).unwrap_or(0));
        Ok(CachedToken {
            token: answer.id_token,
            refresh_at: Instant::now() + cache_duration(lifetime),
        })
    }
}

/// How long a token that is valid for `lifetime` is served from the cache: until
/// [`REFRESH_MARGIN`] before its expiry, or half its lifetime when it is shorter than twice the
/// margin (short-lived tokens in tests and simulators).
pub fn cache_duration(lifetime: Duration) -> Duration {
    lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2))
}

/// The useful part of a token-endpoint answer.
#[derive(Debug, PartialEq, Eq)]
struct TokenAnswer {
    id_token: String,
    /// Expiry in Unix seconds.
    expires_at: i64,
}

/// Reads `{"id_token": …}`; the expiry comes from the token's own `exp` claim (decoded without
/// verification: the token is ours to send, not to trust), else from `expires_in`.
fn parse_token_answer(body: &[u8]) -> Result<TokenAnswer, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the answer is not JSON ({e}): `{}`",
            readable_line(body, 120)
        )
    })?;
    let Some(id_token) = value.get("id_token").and_then(Value::as_str) else {
        return Err("the answer has no `id_token` string".to_owned());
    };
    if id_token.is_empty() || !id_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("`id_token` is empty or holds characters a bearer token cannot".to_owned());
    }
    let exp = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(id_token)
        .ok()
        .and_then(|claims| claims.get("exp").and_then(Value::as_i64));
    let expires_at = match exp {
        Some(exp) => exp,
        None => match value.get("expires_in").and_then(Value::as_i64) {
            Some(secs) => jiff::Timestamp::now().as_second().saturating_add(secs),
            None => {
                return Err(
                    "`id_token` has no readable `exp` claim and the answer no `expires_in`"
                        .to_owned(),
                );
            }
        },
    };
    Ok(TokenAnswer {
        id_token: id_token.to_owned(),
        expires_at,
    })
}

/// The explanation of a refused exchange: OAuth's `error: error_description` when present,
/// else the body made readable.
fn token_error_detail(body: &[u8]) -> String {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    let text = |key: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(|s| readable_line(s.as_bytes(), 200))
    };
    match (text("error"), text("error_description")) {
        (Some(error), Some(description)) => format!("{error}: {description}"),
        (Some(error), None) => error,
        (None, Some(description)) => description,
        (None, None) if body.is_empty() => "empty answer".to_owned(),
        (None, None) => format!("`{}`", readable_line(body, 200)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const KEY_JSON: &str = include_str!("../../tests/fixtures/posos-test-service-account.json");

    fn replace_field(field: &str, value: Value) -> String {
        let mut json: Value = serde_json::from_str(KEY_JSON).unwrap();
        match value {
            Value::Null => {
                json.as_object_mut().unwrap().remove(field);
            }
            v => {
                json[field] = v;
            }
        }
        json.to_string()
    }

    #[test]
    fn ok_fixture_key_loads_and_debug_redacts() {
        let key = ServiceAccountKey::from_json("sa.json", KEY_JSON).unwrap();
        assert_eq!(
            key.client_email(),
            "ordobridge-test@ordobridge-test-only.iam.gserviceaccount.example"
        );
        let debug = format!("{key:?}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        assert!(!debug.contains("MII"), "{debug}");
    }

    #[rstest]
    #[case::err_missing_email(
        "client_email",
        Value::Null,
        "the Posos service-account key `sa.json`: `client_email` is missing; use the .json key file Posos sent for this environment"
    )]
    #[case::err_empty_email(
        "client_email",
        Value::from("  "),
        "the Posos service-account key `sa.json`: `client_email` is empty; use the .json key file Posos sent for this environment"
    )]
    #[case::err_token_uri_number(
        "token_uri",
        Value::from(5),
        "the Posos service-account key `sa.json`: `token_uri` is not a string; use the .json key file Posos sent for this environment"
    )]
    #[case::err_token_uri_not_url(
        "token_uri",
        Value::from("oauth2.example/token"),
        "the Posos service-account key `sa.json`: `token_uri` is not an absolute http(s) URL; use the .json key file Posos sent for this environment"
    )]
    #[case::err_private_key_garbage(
        "private_key",
        Value::from("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXRleHQ=\n-----END PRIVATE KEY-----\n"),
        "the Posos service-account key `sa.json`: `private_key` is not an RSA private key in PEM form; use the .json key file Posos sent for this environment"
    )]
    #[case::err_private_key_missing(
        "private_key",
        Value::Null,
        "the Posos service-account key `sa.json`: `private_key` is missing; use the .json key file Posos sent for this environment"
    )]
    fn key_field_errors(#[case] field: &str, #[case] value: Value, #[case] expected: &str) {
        let json = replace_field(field, value);
        let err = ServiceAccountKey::from_json("sa.json", &json).unwrap_err();
        let text = err.to_string();
        assert_eq!(text, expected);
        assert!(!text.contains("c2VjcmV0"));
    }

    #[rstest]
    #[case::err_not_json(
        "{\"private_key\": \"-----BEGIN secret",
        "the Posos service-account key `sa.json` is not valid JSON (line 1, column 34); use the .json key file Posos sent for this environment"
    )]
    #[case::err_not_object(
        "[\"secret\"]",
        "the Posos service-account key `sa.json` is not a JSON object; use the .json key file Posos sent for this environment"
    )]
    fn key_shape_errors(#[case] json: &str, #[case] expected: &str) {
        let err = ServiceAccountKey::from_json("sa.json", json).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }

    #[test]
    fn ok_assertion_claims() {
        let key = ServiceAccountKey::from_json("sa.json", KEY_JSON).unwrap();
        let jwt = key.sign_assertion("client-id.apps", 1_700_000_000).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(
            header.kid.as_deref(),
            Some("0000000000000000000000000000000000000000")
        );
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&jwt).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": key.client_email(),
                "sub": key.client_email(),
                "aud": "http://127.0.0.1:9/token",
                "target_audience": "client-id.apps",
                "iat": 1_700_000_000,
                "exp": 1_700_003_600,
            })
        );
    }

    #[rstest]
    #[case::ok_hour(3600, 3300)]
    #[case::ok_ten_minutes(600, 300)]
    #[case::ok_short(4, 2)]
    #[case::ok_zero(0, 0)]
    fn cache_durations(#[case] lifetime: u64, #[case] cached: u64) {
        assert_eq!(
            cache_duration(Duration::from_secs(lifetime)),
            Duration::from_secs(cached)
        );
    }

    fn unsigned_jwt(claims: &Value) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.c2ln",
            b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64.encode(claims.to_string())
        )
    }

    #[test]
    fn ok_expiry_from_exp_claim() {
        let token = unsigned_jwt(&serde_json::json!({"exp": 2_000_000_000}));
        let body = serde_json::json!({"id_token": token}).to_string();
        let answer = parse_token_answer(body.as_bytes()).unwrap();
        assert_eq!(answer.expires_at, 2_000_000_000);
    }

    #[test]
    fn ok_expiry_from_expires_in() {
        let body = r#"{"id_token": "opaque-token", "expires_in": 100}"#;
        let answer = parse_token_answer(body.as_bytes()).unwrap();
        let now = jiff::Timestamp::now().as_second();
        assert!((now + 95..=now + 105).contains(&answer.expires_at));
    }

    #[rstest]
    #[case::err_not_json(
        b"<html>",
        "the answer is not JSON (expected value at line 1 column 1): `<html>`"
    )]
    #[case::err_no_token(b"{\"access_token\": \"x\"}", "the answer has no `id_token` string")]
    #[case::err_bad_chars(
        b"{\"id_token\": \"a b\"}",
        "`id_token` is empty or holds characters a bearer token cannot"
    )]
    #[case::err_no_expiry(
        b"{\"id_token\": \"opaque\"}",
        "`id_token` has no readable `exp` claim and the answer no `expires_in`"
    )]
    fn token_answer_errors(#[case] body: &[u8], #[case] expected: &str) {
        assert_eq!(parse_token_answer(body).unwrap_err(), expected);
    }

    #[rstest]
    #[case::ok_oauth(
        b"{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT Signature.\"}",
        "invalid_grant: Invalid JWT Signature."
    )]
    #[case::ok_text(b"nope\n", "`nope`")]
    #[case::ok_empty(b"", "empty answer")]
    fn token_error_details(#[case] body: &[u8], #[case] expected: &str) {
        assert_eq!(token_error_detail(body), expected);
    }
}
