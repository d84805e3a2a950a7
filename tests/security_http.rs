//! Issue 9, defaults that fail closed and HTTP hardening, over real sockets and processes:
//!
//! - `ordobridge check` exits 1 naming the key for each open door (push without credentials,
//!   weak or placeholder tokens, unsigned links beyond loopback, short signing secret, the
//!   simulator beyond loopback, remote Posos over plain http);
//! - the shipped sample configuration starts with no environment: its first start generates
//!   the push token (0600) and prints it once, the next start reads it, `check` accepts it;
//! - the push endpoint checks credentials before reading a body, refuses a body over
//!   `max_body` with 413 without buffering it (a 1 GiB `Content-Length` answered after a few
//!   KiB) and journals the refusal;
//! - `/status` and `/metrics` only from `admin_allow` networks or with the admin token;
//! - a `Host` name that is not served gets 421 (DNS rebinding); HTML answers carry a
//!   `Content-Security-Policy` and `nosniff`;
//! - a signed launch link opens once, and an `exp` too far ahead is refused.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::check_config as check;

const TOKEN: &str = "Zb3kQ9vN2xT7pL5mR8cW1yH4jF6dS0gA";

#[test]
fn check_refuses_every_open_door_naming_its_key() {
    let dir = tempfile::tempdir().expect("dir");
    let root = common::repo_root();
    let root = root.display();
    let launch = |bind: &str, lines: &str| {
        format!(
            "[store]\npath = \"ob.db\"\n[http]\nbind = \"{bind}\"\n[launch]\nmapping = \"{root}/mappings/scan-token.toml\"\n{lines}\n[posos]\nmode = \"simulator\"\n[posos.simulator]\nkey_file = \"{root}/samples/simulator/service-account.json\"\npublic_key_file = \"{root}/samples/simulator/public-key.pem\"\n"
        )
    };
    let cases = [
        (
            "[store]\npath = \"ob.db\"\n[push]\n".to_string(),
            "`push`: the push endpoint accepts prescriptions from anybody",
        ),
        (
            "[store]\npath = \"ob.db\"\n[push]\ntoken = \"change-me\"\n".to_string(),
            "`push.token`: the push token is a placeholder",
        ),
        (
            "[store]\npath = \"ob.db\"\n[push]\ntoken = \"a-short-token\"\n".to_string(),
            "`push.token`: the push token is too short",
        ),
        (
            launch("127.0.0.1:8717", "allow = [\"0.0.0.0/0\"]"),
            "`launch.allow`: `0.0.0.0/0` reaches beyond this machine while unsigned links are accepted",
        ),
        (
            launch("127.0.0.1:8717", "signing_secret = \"tiny\""),
            "`launch.signing_secret`: the signing secret is too short",
        ),
        (
            launch("0.0.0.0:8717", ""),
            "`posos.mode`: the built-in Posos simulator would be served on 0.0.0.0:8717",
        ),
        (
            "[store]\npath = \"ob.db\"\n[posos]\nmode = \"remote\"\noauth_client_id = \"c\"\nenvironment = \"p\"\n[posos.environments.p]\nbase_url = \"http://posos.test\"\nkey_file = \"/nonexistent/key.json\"\n".to_string(),
            "`posos.environments.p.base_url`: `http://posos.test` is not an `https://` URL",
        ),
    ];
    for (text, expected) in cases {
        let (code, output) = check(dir.path(), &text);
        assert_eq!(code, 1, "check should refuse:\n{text}\n{output}");
        assert!(
            output.contains(expected),
            "expected `{expected}` in:\n{output}"
        );
    }
    let (code, output) = check(
        dir.path(),
        &format!("[store]\npath = \"ob.db\"\n[push]\ntoken = \"{TOKEN}\"\n"),
    );
    assert_eq!(code, 0, "{output}");
}

/// The sample daemon, started by PID with the sample configuration and no environment but
/// ports and data folder; returns its stdout lines up to "all listeners ready".
struct SampleDaemon {
    child: std::process::Child,
    lines: Vec<String>,
}

impl SampleDaemon {
    fn start(data: &Path) -> SampleDaemon {
        let mut child = Command::new(common::ordobridge_bin())
            .args(["run", "--config"])
            .arg(common::repo_root().join("samples/ordobridge.toml"))
            .env_remove("RUST_LOG")
            .env_remove("ORDOBRIDGE_PUSH_TOKEN")
            .env("ORDOBRIDGE_DATA_DIR", data)
            .env("ORDOBRIDGE_MLLP_PORT", "0")
            .env("ORDOBRIDGE_HTTP_PORT", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the sample daemon");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.contains("all listeners ready");
                    lines.push(line);
                    if ready {
                        break;
                    }
                }
                Err(_) => panic!(
                    "the sample daemon did not become ready in 60 s:\n{}",
                    lines.join("\n")
                ),
            }
        }
        SampleDaemon { child, lines }
    }
}

impl Drop for SampleDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sample_configuration_generates_the_push_token_at_first_start_and_prints_it_once() {
    use std::os::unix::fs::PermissionsExt as _;
    let data = tempfile::tempdir().expect("dir");
    let first = SampleDaemon::start(data.path());
    let file = data.path().join("push-token");
    let token = std::fs::read_to_string(&file).expect("token file");
    let token = token.trim();
    assert_eq!(token.len(), 43, "32 random bytes, URL-safe Base64");
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let printed: Vec<&String> = first.lines.iter().filter(|l| l.contains(token)).collect();
    assert_eq!(
        printed.len(),
        1,
        "the token is printed exactly once:\n{}",
        first.lines.join("\n")
    );
    assert!(
        printed[0].contains("Authorization: Bearer"),
        "{}",
        printed[0]
    );
    drop(first);

    let second = SampleDaemon::start(data.path());
    assert!(
        second.lines.iter().all(|l| !l.contains(token)),
        "the second start does not print the token:\n{}",
        second.lines.join("\n")
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("token file").trim(),
        token
    );
    drop(second);

    let output = Command::new(common::ordobridge_bin())
        .args(["check", "--config"])
        .arg(common::repo_root().join("samples/ordobridge.toml"))
        .env("ORDOBRIDGE_DATA_DIR", data.path())
        .env_remove("ORDOBRIDGE_PUSH_TOKEN")
        .output()
        .expect("check");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The engine with the push endpoint (`push_extra` lines), launch and simulator, and
/// `http_extra` lines in `[http]`.
async fn engine(
    dir: &Path,
    http_extra: &str,
    push_extra: &str,
    launch_extra: &str,
) -> common::InProcess {
    let (peer, _received) = common::ehr_peer().await;
    let text = common::base_toml()
        + http_extra
        + "\n"
        // `launch_extra` lines go into `[launch]`, which ends where `[posos]` starts.
        + &common::simulator_toml("").replacen("[posos]", &format!("{launch_extra}\n[posos]"), 1)
        + &common::push_to_ehr_toml(peer, push_extra);
    common::start_engine(common::config(dir, &text)).await
}

/// Sends `head` then `body_prefix` on a raw connection and returns the whole answer the server
/// gives (it closes or answers while the rest of the declared body never comes).
fn raw_exchange(addr: SocketAddr, head: &str, body_prefix: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(common::PATIENCE))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("write head");
    // The server may answer and close before it takes all of this: ignore write errors.
    let _ = stream.write_all(body_prefix);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the headers and the OperationOutcome are in, or the server closes.
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&answer).contains("\"OperationOutcome\"") {
                    break;
                }
            }
            Err(e) => panic!(
                "no answer ({e}); got so far:\n{}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_checks_credentials_first_and_refuses_an_oversize_body_unbuffered() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = engine(
        dir.path(),
        "",
        &format!("token = \"{TOKEN}\"\nmax_body = \"64KiB\""),
        "",
    )
    .await;
    let http = engine.addr("http");
    let huge = |auth: &str| {
        format!(
            "POST /fhir HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n{auth}Content-Length: 1073741824\r\n\r\n"
        )
    };
    let prefix = vec![b'{'; 8192];

    // No credentials: 401 before one byte of the body is read.
    let answer = tokio::task::spawn_blocking(move || raw_exchange(http, &huge(""), &[]))
        .await
        .expect("join");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    // Credentials, 1 GiB declared, 8 KiB sent: 413 at once, the rest never needed.
    let with_auth = huge(&format!("Authorization: Bearer {TOKEN}\r\n"));
    let answer = tokio::task::spawn_blocking(move || raw_exchange(http, &with_auth, &prefix))
        .await
        .expect("join");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("the bundle is larger than the 65536 bytes this endpoint accepts"),
        "{answer}"
    );

    // A body sent whole but over the limit (no Content-Length: chunked) is refused the same way.
    let body = vec![b' '; 100 * 1024];
    let response = reqwest::Client::new()
        .post(format!("http://{http}/fhir"))
        .bearer_auth(TOKEN)
        .body(reqwest::Body::from(body))
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 413);
    engine.stop().await;

    // Both refusals are journaled, with the first 4 KiB at most.
    let config = dir.path().join("ob.toml");
    let journal = common::ordobridge(&["journal", "--config", &config.display().to_string()]);
    let refusals = journal
        .lines()
        .filter(|l| l.contains("larger than the 65536 bytes allowed"))
        .count();
    assert_eq!(refusals, 2, "{journal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_an_allowed_network_or_the_admin_token() {
    let dir = tempfile::tempdir().expect("dir");
    let admin = "Qm9v3xT7pL5mR8cW1yH4jF6dS0gAZb3k";
    let engine = engine(
        dir.path(),
        &format!("admin_allow = []\nadmin_token = \"{admin}\""),
        &format!("token = \"{TOKEN}\""),
        "",
    )
    .await;
    let http = engine.addr("http");
    let client = reqwest::Client::new();
    for path in ["/status", "/metrics"] {
        let url = format!("http://{http}{path}");
        let refused = client.get(&url).send().await.expect("get");
        assert_eq!(refused.status(), 403, "{path} without token");
        let wrong = client
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .expect("get");
        assert_eq!(wrong.status(), 403, "{path} with a wrong token");
        let ok = client
            .get(&url)
            .bearer_auth(admin)
            .send()
            .await
            .expect("get");
        assert_eq!(ok.status(), 200, "{path} with the admin token");
    }
    let health = client
        .get(format!("http://{http}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200, "liveness stays open");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_names_are_refused_and_html_carries_its_policy() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = engine(
        dir.path(),
        "hosts = [\"ordobridge.chu.test\"]\nframe_ancestors = [\"https://dpi.chu.test\"]",
        &format!("token = \"{TOKEN}\""),
        "",
    )
    .await;
    let http = engine.addr("http");
    let client = common::no_redirect_client();
    let launch = format!("http://{http}/launch/scan?ipp=UNKNOWN1&rpps=10003456789");
    let rebinding = client
        .get(&launch)
        .header("host", "attacker.example:8717")
        .send()
        .await
        .expect("get");
    assert_eq!(rebinding.status(), 421);
    let named = client
        .get(&launch)
        .header("host", "ordobridge.chu.test")
        .send()
        .await
        .expect("get");
    assert_ne!(named.status(), 421, "a configured name is served");

    // The unknown patient's error page: HTML with its policy and nosniff.
    let page = client.get(&launch).send().await.expect("get");
    assert_eq!(page.status(), 404);
    let headers = page.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let policy = headers["content-security-policy"].to_str().expect("ascii");
    assert!(policy.starts_with("default-src 'none';"), "{policy}");
    assert!(
        policy.ends_with("frame-ancestors https://dpi.chu.test"),
        "{policy}"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_link_opens_once_and_a_far_expiry_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let secret = "l1nk-S1gn1ng-Key-9f8e7d6c5b4a3210";
    let engine = engine(
        dir.path(),
        "",
        &format!("token = \"{TOKEN}\""),
        &format!(
            "require_signature = true\nsigning_secret = \"{secret}\"\nunknown_patient = \"fallback\"\nmax_link_age = \"2m\""
        ),
    )
    .await;
    let http = engine.addr("http");
    let client = common::no_redirect_client();
    let now = jiff::Timestamp::now().as_second();
    let params = [
        ("ipp", "100001"),
        ("rpps", "10003456789"),
        ("first_name", "Pierre"),
        ("last_name", "Leblanc"),
    ];
    let link =
        ordobridge::http::sign_launch_url(secret.as_bytes(), "/launch/scan", &params, now + 60);
    let first = client
        .get(format!("http://{http}{link}"))
        .send()
        .await
        .expect("launch");
    assert_eq!(first.status(), 302, "{:?}", first.text().await);
    let again = client
        .get(format!("http://{http}{link}"))
        .send()
        .await
        .expect("launch");
    assert_eq!(again.status(), 403);
    let page = again.text().await.expect("page");
    assert!(page.contains("already used"), "{page}");

    let far = ordobridge::http::sign_launch_url(
        secret.as_bytes(),
        "/launch/scan",
        &params,
        now + 24 * 3600,
    );
    let refused = client
        .get(format!("http://{http}{far}"))
        .send()
        .await
        .expect("launch");
    assert_eq!(refused.status(), 403);
    engine.stop().await;
}
