//! Posos authentication, client and simulator over real loopback HTTP: the simulator and the
//! small test servers are axum apps on `127.0.0.1:0`, the key is the test-only fixture.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use ordobridge::posos::auth::{AuthError, IdentityTokens, ServiceAccountKey};
use ordobridge::posos::client::{
    GuideRequest, PososClient, PososError, PososSettings, SCAN_TOKEN_PATH, ScanTokenRequest,
};
use ordobridge::posos::simulator::{self, SimulatorSettings, SimulatorState};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const KEY_JSON: &str = include_str!("fixtures/posos-test-service-account.json");
const PUBLIC_KEY: &str = include_str!("fixtures/posos-test-public-key.pem");
const EMAIL: &str = "ordobridge-test@ordobridge-test-only.iam.gserviceaccount.example";
const CLIENT_ID: &str = "test-client-id.apps.example";

/// Serves `app` on a fresh loopback port and returns its base URL.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    base
}

/// A running simulator and a key file whose `token_uri` points at it.
struct Sim {
    state: SimulatorState,
    base: String,
    key_file: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start_sim(lifetime: Duration, push: Option<(String, String)>) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (push_url, push_token) = push.unzip();
    let settings = SimulatorSettings {
        base_url: base.clone(),
        public_key_pem: PUBLIC_KEY.to_owned(),
        client_email: Some(EMAIL.to_owned()),
        oauth_client_id: CLIENT_ID.to_owned(),
        token_lifetime: lifetime,
        push_url,
        push_token,
    };
    let token_uri = settings.token_uri();
    let state = SimulatorState::new(settings).unwrap();
    tokio::spawn(axum::serve(listener, simulator::router(state.clone())).into_future());
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_key(dir.path(), &token_uri);
    Sim {
        state,
        base,
        key_file,
        _dir: dir,
    }
}

fn write_key(dir: &Path, token_uri: &str) -> PathBuf {
    let mut key: Value = serde_json::from_str(KEY_JSON).unwrap();
    key["token_uri"] = Value::from(token_uri);
    let path = dir.join("posos-key.json");
    std::fs::write(&path, key.to_string()).unwrap();
    path
}

fn settings(base: &str, key_file: &Path, retries: u32) -> PososSettings {
    PososSettings {
        base_url: base.to_owned(),
        key_file: key_file.to_path_buf(),
        oauth_client_id: CLIENT_ID.to_owned(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        retries,
    }
}

fn client(base: &str, key_file: &Path, retries: u32) -> PososClient {
    PososClient::new(settings(base, key_file, retries))
        .unwrap()
        .with_retry_backoff(Duration::from_millis(10))
}

fn tokens(sim: &Sim, client_id: &str) -> IdentityTokens {
    let key = ServiceAccountKey::from_file(&sim.key_file).unwrap();
    IdentityTokens::new(key, client_id, reqwest::Client::new())
}

fn scan_request() -> ScanTokenRequest {
    ScanTokenRequest {
        first_name: "Jeanne".into(),
        last_name: "Martin".into(),
        rpps: "10001234567".into(),
        facility_slug: "chu-demo".into(),
        patient_id: "IPP000042".into(),
    }
}

// ---- authentication ----------------------------------------------------------------------

#[tokio::test]
async fn auth_ok_fixture_assertion_is_accepted() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let tokens = tokens(&sim, CLIENT_ID);
    let token = tokens.token().await.unwrap();
    assert_eq!(token.split('.').count(), 3);
    assert_eq!(sim.state.token_requests(), 1);
    // The token opens a session at the simulator.
    let answer = reqwest::Client::new()
        .post(format!("{}{SCAN_TOKEN_PATH}", sim.base))
        .bearer_auth(&token)
        .json(&scan_request())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
}

#[tokio::test]
async fn auth_err_wrong_target_audience_is_refused() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let err = tokens(&sim, "another-client-id").token().await.unwrap_err();
    assert!(matches!(err, AuthError::TokenRejected { status: 400, .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "the token endpoint `{}/token` refused the service account `{EMAIL}` with HTTP 400: invalid_grant: `target_audience` must be the OAuth client id `{CLIENT_ID}` (check that `key_file` and `oauth_client_id` belong to this environment and that the key was not revoked)",
            sim.base
        )
    );
}

#[tokio::test]
async fn auth_err_tampered_signature_is_refused() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let key = ServiceAccountKey::from_file(&sim.key_file).unwrap();
    let now = jiff::Timestamp::now().as_second();
    let good = key.sign_assertion(CLIENT_ID, now).unwrap();
    let (signed, signature) = good.rsplit_once('.').unwrap();
    let forged = key.sign_assertion("other", now).unwrap();
    let (_, other_signature) = forged.rsplit_once('.').unwrap();
    assert_ne!(signature, other_signature);
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/token", sim.base))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &format!("{signed}.{other_signature}")),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    );
}

#[tokio::test]
async fn auth_ok_short_lifetime_refreshes_before_expiry() {
    let sim = start_sim(Duration::from_secs(4), None).await;
    let tokens = tokens(&sim, CLIENT_ID);
    let first = tokens.token().await.unwrap();
    assert_eq!(
        tokens.token().await.unwrap(),
        first,
        "served from the cache"
    );
    assert_eq!(sim.state.token_requests(), 1);
    // A 4 s token is cached for half its lifetime.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let second = tokens.token().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(sim.state.token_requests(), 2);
    assert_eq!(tokens.refreshes(), 2);
}

#[tokio::test]
async fn auth_err_expired_token_gets_401() {
    let sim = start_sim(Duration::from_secs(1), None).await;
    let token = tokens(&sim, CLIENT_ID).token().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let answer = reqwest::Client::new()
        .post(format!("{}{SCAN_TOKEN_PATH}", sim.base))
        .bearer_auth(&token)
        .json(&scan_request())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let seen = sim.state.requests();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].bearer_valid);
}

#[tokio::test]
async fn auth_ok_one_refresh_for_many_concurrent_callers() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let tokens = Arc::new(tokens(&sim, CLIENT_ID));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let tokens = Arc::clone(&tokens);
        tasks.push(tokio::spawn(async move { tokens.token().await.unwrap() }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.unwrap());
    }
    all.dedup();
    assert_eq!(all.len(), 1, "every caller got the same token");
    assert_eq!(sim.state.token_requests(), 1);
}

#[tokio::test]
async fn auth_err_missing_key_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.json");
    let err = PososClient::new(settings("http://127.0.0.1:9", &missing, 0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot authenticate to Posos: cannot read the Posos service-account key `{}`: No such file or directory (os error 2) (check the `key_file` setting and the file permissions)",
            missing.display()
        )
    );
}

#[tokio::test]
async fn auth_err_bad_private_key_shows_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let mut key: Value = serde_json::from_str(KEY_JSON).unwrap();
    let pem = key["private_key"].as_str().unwrap().to_owned();
    // Damage the key body, keep its armour: it must be refused without being quoted.
    let damaged = pem.replacen("MII", "XXX", 1);
    key["private_key"] = Value::from(damaged.clone());
    let path = dir.path().join("damaged.json");
    std::fs::write(&path, key.to_string()).unwrap();
    let err = PososClient::new(settings("http://127.0.0.1:9", &path, 0)).unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        format!(
            "cannot authenticate to Posos: the Posos service-account key `{}`: `private_key` is not an RSA private key in PEM form; use the .json key file Posos sent for this environment",
            path.display()
        )
    );
    let body_line = damaged.lines().nth(1).unwrap();
    assert!(!text.contains(body_line));
    assert!(!format!("{err:?}").contains(body_line));
}

// ---- client against the simulator --------------------------------------------------------

#[tokio::test]
async fn client_ok_scan_token_returns_url_and_sends_exact_body() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let client = client(&sim.base, &sim.key_file, 0);
    let url = client.scan_token(&scan_request()).await.unwrap();
    assert!(
        url.as_str().starts_with(&format!("{}/scan/", sim.base)),
        "{url}"
    );
    let seen = sim.state.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, SCAN_TOKEN_PATH);
    assert!(seen[0].bearer_valid);
    assert_eq!(seen[0].status, 200);
    assert_eq!(
        seen[0].body,
        json!({"first_name": "Jeanne", "last_name": "Martin", "rpps": "10001234567",
               "facilitySlug": "chu-demo", "patientId": "IPP000042"})
    );
}

#[tokio::test]
async fn client_ok_guide_returns_url_and_sends_exact_body() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let client = client(&sim.base, &sim.key_file, 0);
    let request = GuideRequest {
        rpps: "10001234567".into(),
        first_name: "Jeanne".into(),
        last_name: "Martin".into(),
        guide: "side_effects".into(),
        ucds: vec!["9000001".into(), "9000002".into()],
    };
    let url = client.prepare_guide(&request).await.unwrap();
    assert!(url.as_str().starts_with(&format!("{}/scan/", sim.base)));
    let seen = sim.state.requests();
    assert_eq!(seen[0].path, "/api/partners/proxy/prepare");
    assert!(seen[0].bearer_valid);
    assert_eq!(
        seen[0].body,
        json!({"rpps": "10001234567", "first_name": "Jeanne", "last_name": "Martin",
               "guide": "side_effects", "ucds": ["9000001", "9000002"]})
    );
}

#[tokio::test]
async fn client_err_bad_request_names_the_parameter() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let client = client(&sim.base, &sim.key_file, 3);
    let mut request = scan_request();
    request.facility_slug = " ".into();
    let err = client.scan_token(&request).await.unwrap_err();
    assert!(
        matches!(&err, PososError::BadRequest { parameter: Some(p), .. } if p == "facilitySlug")
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the request to `{}{SCAN_TOKEN_PATH}` was refused by Posos because of parameter `facilitySlug`: `facilitySlug` is empty (fix this value in the EHR context or the launch mapping)",
            sim.base
        )
    );
    assert_eq!(sim.state.requests().len(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn client_ok_401_refreshes_once_then_succeeds() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let client = client(&sim.base, &sim.key_file, 0);
    client.scan_token(&scan_request()).await.unwrap();
    sim.state.revoke_tokens();
    client.scan_token(&scan_request()).await.unwrap();
    assert_eq!(sim.state.token_requests(), 2);
    let seen: Vec<(bool, u16)> = sim
        .state
        .requests()
        .iter()
        .map(|r| (r.bearer_valid, r.status))
        .collect();
    assert_eq!(seen, [(true, 200), (false, 401), (true, 200)]);
}

/// A context endpoint that answers `status` `failures` times, then a launch URL.
async fn flaky_server(
    status: StatusCode,
    failures: u32,
    delay: Duration,
) -> (String, Arc<AtomicU32>) {
    let hits = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&hits);
    let app = Router::new().route(
        SCAN_TOKEN_PATH,
        post(move || {
            let counter = Arc::clone(&counter);
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                if n < failures {
                    (status, "upstream unavailable").into_response()
                } else {
                    (StatusCode::OK, r#"{"url":"https://scan.example.test/s/1"}"#).into_response()
                }
            }
        }),
    );
    (serve(app).await, hits)
}

#[tokio::test]
async fn client_err_unauthorized_after_one_refresh() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let (base, hits) = flaky_server(StatusCode::FORBIDDEN, u32::MAX, Duration::ZERO).await;
    let err = client(&base, &sim.key_file, 3)
        .scan_token(&scan_request())
        .await
        .unwrap_err();
    assert!(matches!(err, PososError::Unauthorized { status: 403, .. }));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(sim.state.token_requests(), 2);
    assert_eq!(
        err.to_string(),
        format!(
            "our identity token was refused by Posos at `{base}{SCAN_TOKEN_PATH}` with HTTP 403, even a fresh one (check that `key_file` and `oauth_client_id` belong to this environment and that Posos enabled the service account)"
        )
    );
}

#[tokio::test]
async fn client_ok_retries_5xx() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let (base, hits) = flaky_server(StatusCode::SERVICE_UNAVAILABLE, 2, Duration::ZERO).await;
    let url = client(&base, &sim.key_file, 2)
        .scan_token(&scan_request())
        .await
        .unwrap();
    assert_eq!(url.as_str(), "https://scan.example.test/s/1");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(
        sim.state.token_requests(),
        1,
        "5xx does not refresh the token"
    );
}

#[tokio::test]
async fn client_ok_retries_when_the_token_endpoint_fails() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let token_app = Router::new().route(
        "/token",
        post(move || {
            let counter = Arc::clone(&counter);
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response()
                } else {
                    (
                        StatusCode::OK,
                        r#"{"id_token":"opaque-token","expires_in":3600}"#,
                    )
                        .into_response()
                }
            }
        }),
    );
    let token_base = serve(token_app).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_key(dir.path(), &format!("{token_base}/token"));
    let (base, hits) = flaky_server(StatusCode::OK, 0, Duration::ZERO).await;
    let url = client(&base, &key_file, 1)
        .scan_token(&scan_request())
        .await
        .unwrap();
    assert_eq!(url.as_str(), "https://scan.example.test/s/1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn client_err_5xx_outlives_retries() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let (base, hits) = flaky_server(StatusCode::BAD_GATEWAY, 5, Duration::ZERO).await;
    let err = client(&base, &sim.key_file, 1)
        .scan_token(&scan_request())
        .await
        .unwrap_err();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        err.to_string(),
        format!(
            "unexpected HTTP 502 from Posos at `{base}{SCAN_TOKEN_PATH}` after 2 attempt(s): `upstream unavailable` (retry later; if it persists, report it to Posos with the time of the call)"
        )
    );
}

#[tokio::test]
async fn client_err_timeout_is_retried_then_reported() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let (base, hits) = flaky_server(StatusCode::OK, 0, Duration::from_secs(3)).await;
    let mut slow = settings(&base, &sim.key_file, 1);
    slow.request_timeout = Duration::from_millis(300);
    let err = PososClient::new(slow)
        .unwrap()
        .with_retry_backoff(Duration::from_millis(10))
        .scan_token(&scan_request())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PososError::Timeout { attempts: 2, .. }),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        err.to_string(),
        format!(
            "no answer from Posos at `{base}{SCAN_TOKEN_PATH}` within 300ms after 2 attempt(s); retry later or raise `request_timeout`"
        )
    );
}

#[tokio::test]
async fn client_err_unreachable() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = client(&base, &sim.key_file, 1)
        .scan_token(&scan_request())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PososError::Unreachable { attempts: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with(&format!(
        "cannot reach Posos at `{base}{SCAN_TOKEN_PATH}` after 2 attempt(s): "
    )));
}

// ---- Scan & Go page and import -----------------------------------------------------------

/// What the test receiver of the FHIR push saw.
type Received = Arc<Mutex<Vec<(Option<String>, Value)>>>;

async fn push_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = Arc::clone(&received);
    let app = Router::new().route(
        "/fhir/Bundle",
        post(move |headers: HeaderMap, body: String| {
            let sink = Arc::clone(&sink);
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                sink.lock()
                    .unwrap()
                    .push((auth, serde_json::from_str(&body).unwrap()));
                StatusCode::ACCEPTED
            }
        }),
    );
    let base = serve(app).await;
    (format!("{base}/fhir/Bundle"), received)
}

#[tokio::test]
async fn simulator_page_renders_and_import_pushes_the_bundle() {
    let (push_url, received) = push_receiver().await;
    let sim = start_sim(
        Duration::from_secs(3600),
        Some((push_url, "push-secret".to_owned())),
    )
    .await;
    let url = client(&sim.base, &sim.key_file, 0)
        .scan_token(&scan_request())
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let page = http.get(url.as_str()).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Jeanne Martin (RPPS 10001234567)"), "{html}");
    assert!(html.contains("IPP000042"));
    assert!(html.contains("Import to DPI"));
    // To the window that opened it (popup), else the page that frames it (launch page).
    assert!(html.contains(
        "const host = window.opener ?? (window.parent !== window ? window.parent : null);"
    ));
    assert!(html.contains("host?.postMessage({ status, prescription }, '*')"));
    assert!(html.contains("#success"));

    let answer = http.post(format!("{url}/import")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["prescription"]["patientId"], "IPP000042");

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (auth, bundle) = &received[0];
    assert_eq!(auth.as_deref(), Some("Bearer push-secret"));
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "transaction");
    assert_eq!(bundle["id"], answer["prescription"]["bundleId"]);
    let patient = &bundle["entry"][0]["resource"];
    assert_eq!(patient["resourceType"], "Patient");
    assert_eq!(
        patient["identifier"][0],
        json!({"system": "id://partner", "value": "IPP000042"})
    );
    let requests = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "MedicationRequest")
        .count();
    assert_eq!(requests, 2);
    let pushes = sim.state.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].status, Some(202));
}

#[tokio::test]
async fn simulator_import_without_receiver_reports_error() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_url = format!("http://{}/fhir", closed.local_addr().unwrap());
    drop(closed);
    let sim = start_sim(Duration::from_secs(3600), Some((push_url, "t".to_owned()))).await;
    let url = client(&sim.base, &sim.key_file, 0)
        .scan_token(&scan_request())
        .await
        .unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{url}/import"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["status"], "error");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot push to `http://127.0.0.1:")
    );
}

#[tokio::test]
async fn simulator_unknown_session_is_404() {
    let sim = start_sim(Duration::from_secs(3600), None).await;
    let answer = reqwest::get(format!("{}/scan/nope<script>", sim.base))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let html = answer.text().await.unwrap();
    assert!(!html.contains("<script>"));
}
