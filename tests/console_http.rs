//! Issue 13, the web console over real HTTP against the real engine (in process, port 0):
//!
//! - pages need a session: `/console/` sends a visitor to the login page; the login form sets
//!   a nonce cookie and a CSRF token, a login without them is refused (403);
//! - a wrong password is answered 401, and after `login_attempts` failures every attempt (even
//!   the right password) gets 429 with `Retry-After`;
//! - the session cookie is `HttpOnly; SameSite=Strict`, pages carry a policy that allows only
//!   the console's own script;
//! - an operator searches the journal, opens a message (raw, tree, ACK; the view is audited)
//!   and resends it to a destination: the EHR peer receives it and the lineage shows the ACK;
//! - a viewer sees no raw message, no resend button, and its POST is refused (403), as is an
//!   operator's POST without the CSRF token;
//! - after logout the cookie opens nothing; `ordobridge check` refuses a console with no
//!   users; the Host check still guards the console.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use reqwest::StatusCode;

const OPERATOR_PASSWORD: &str = "operator password 42";
const VIEWER_PASSWORD: &str = "viewer password 42";

/// The configuration: `adt-in`, HTTP, an MLLP destination `ehr` to `peer`, the console with
/// an operator `olga` and a viewer `victor`, three failed logins tolerated.
fn config(dir: &std::path::Path, peer: SocketAddr) -> ordobridge::config::Config {
    let text = format!(
        r#"{base}
[outbound.ehr]
protocol = "mllp"
address = "{peer}"
retry_initial = "20ms"
{console}"#,
        base = common::base_toml(),
        console = console_toml("login_attempts = 3\n"),
    );
    common::config(dir, &text)
}

/// `[console]` in English with `extra` lines, an operator `olga` and a viewer `victor`.
fn console_toml(extra: &str) -> String {
    let operator = ordobridge::console::hash_password(OPERATOR_PASSWORD).expect("hash");
    let viewer = ordobridge::console::hash_password(VIEWER_PASSWORD).expect("hash");
    format!(
        r#"[console]
language = "en"
{extra}[console.users]
olga = {{ role = "operator", password_hash = "{operator}" }}
victor = {{ role = "viewer", password_hash = "{viewer}" }}
"#
    )
}

/// A browser-like client: keeps cookies by hand (no redirects followed).
#[derive(Clone)]
struct Browser {
    client: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new(http: SocketAddr) -> Browser {
        Browser {
            client: common::no_redirect_client(),
            base: format!("http://{http}"),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().expect("ascii cookie");
            let pair = text.split(';').next().expect("pair");
            let (name, value) = pair.split_once('=').expect("name=value");
            if value.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
    }

    async fn get(&mut self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let request = self.client.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }

    /// Posts an operator action (`path`) with the form's CSRF token and the reason given.
    async fn act(
        &mut self,
        path: &str,
        csrf: &str,
        reason: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        self.post(path, &[("csrf", csrf), ("reason", reason)]).await
    }

    /// Sends `request` with the cookies kept, keeps those it sets, and returns the answer.
    async fn send(
        &mut self,
        request: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let response = request
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("request");
        self.keep(&response);
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.text().await.expect("body"))
    }

    /// Opens the login page and posts `user`/`password` with its token.
    async fn login(
        &mut self,
        user: &str,
        password: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let (status, _, page) = self.get("/console/login").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let csrf = csrf_of(&page);
        self.post(
            "/console/login",
            &[("csrf", &csrf), ("username", user), ("password", password)],
        )
        .await
    }
}

/// The value of the first `name="csrf"` hidden input of a page.
fn csrf_of(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    page[at..].split('"').next().expect("value").to_string()
}

fn location(headers: &reqwest::header::HeaderMap) -> &str {
    headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_auth_csrf_roles_resend_and_logout() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("dir");
    let engine = common::start_engine(config(dir.path(), peer)).await;
    let http = engine.addr("http");

    // A visitor is sent to the login page; the login page sets the nonce cookie.
    let mut visitor = Browser::new(http);
    let (status, headers, _) = visitor.get("/console/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/console/login");
    let (status, headers, page) = visitor.get("/console/login").await;
    assert_eq!(status, StatusCode::OK);
    let policy = headers["content-security-policy"].to_str().expect("policy");
    assert!(
        policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    assert!(
        page.contains(r#"<label for="password">Password</label>"#),
        "{page}"
    );
    let login_cookie = headers["set-cookie"].to_str().expect("cookie");
    assert!(
        login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"),
        "{login_cookie}"
    );

    // Without the form's token (a cross-site post), the login is refused.
    let (status, _, page) = visitor
        .post(
            "/console/login",
            &[("username", "olga"), ("password", OPERATOR_PASSWORD)],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(
        page.contains("The form expired or does not come from this console"),
        "{page}"
    );

    // Wrong passwords, then the limit: even the right password waits.
    let mut attacker = Browser::new(http);
    for _ in 0..3 {
        let (status, _, page) = attacker.login("olga", "wrong password!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(page.contains("Wrong user name or password."), "{page}");
    }
    let (status, headers, page) = attacker.login("olga", OPERATOR_PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{page}");
    assert!(headers.contains_key("retry-after"));
    assert!(
        page.contains("Too many failed logins: try again in"),
        "{page}"
    );

    // Every client here is on loopback, so the per-address count now locks them all out:
    // the rest runs on a fresh daemon (its limiter starts empty).
    engine.stop().await;

    let dir = tempfile::tempdir().expect("dir");
    let engine = common::start_engine(config(dir.path(), peer)).await;
    let http = engine.addr("http");

    let mut operator = Browser::new(http);
    let (status, headers, _) = operator.login("olga", OPERATOR_PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/console/");
    let session_cookie = headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ob_session="))
        .expect("session cookie")
        .to_string();
    assert!(
        session_cookie.contains("HttpOnly")
            && session_cookie.contains("SameSite=Strict")
            && !session_cookie.contains("Secure"),
        "{session_cookie}"
    );
    let (status, _, page) = operator.get("/console/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"data-channel="adt-in""#), "{page}");
    assert!(page.contains(r#"data-destination="ehr""#), "{page}");

    // A message arrives; the operator finds it by MSH-9 and opens it.
    let ack = common::send_adt(engine.addr("adt-in"), &common::sample(common::A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA|SYN0002"), "{ack}");
    let (status, _, page) = operator.get("/console/messages?type=ADT%5EA01").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("SYN0002"), "{page}");
    let (status, _, page) = operator.get("/console/messages/1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"<pre class="raw" id="raw">"#), "{page}");
    assert!(
        page.contains("Patient Identification"),
        "the tree names PID: {page}"
    );
    assert!(page.contains("MSA|AA|SYN0002"), "the ACK we sent: {page}");
    assert!(page.contains(r#"id="resend""#), "{page}");
    let csrf = csrf_of(&page);

    // Without the token, the resend is refused; with it, the message goes to the EHR.
    let (status, _, _) = operator
        .post(
            "/console/messages/1/resend",
            &[("destination", "ehr"), ("reason", "test")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(received.lock().expect("lock").is_empty());
    let (status, headers, page) = operator
        .post(
            "/console/messages/1/resend",
            &[
                ("csrf", &csrf),
                ("destination", "ehr"),
                ("reason", "EHR lost it"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    assert_eq!(location(&headers), "/console/messages/1?done=resend");
    let delivered = common::first_received(&received).await;
    assert_eq!(delivered, common::sample(common::A01_SAMPLE));
    let page = common::wait_for("the lineage to show the delivery", || {
        let mut operator = operator.clone();
        async move {
            let (_, _, page) = operator.get("/console/messages/1").await;
            page.contains(r#"data-status="delivered""#).then_some(page)
        }
    })
    .await;
    assert!(page.contains("MSA|AA|SYN0002"), "the EHR's ACK: {page}");

    // The outbound message itself, sent again from its lineage row (same bytes).
    assert!(page.contains(r#"id="resend-out-1""#), "{page}");
    let (status, headers, _) = operator
        .act("/console/outbound/1/resend", &csrf, "EHR asked again")
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/console/messages/1?done=resend");
    common::wait_for("the second delivery", || {
        let count = received.lock().expect("lock").len();
        async move { (count == 2).then_some(()) }
    })
    .await;
    assert_eq!(
        received.lock().expect("lock")[1],
        common::sample(common::A01_SAMPLE)
    );

    // The views and the resend are in the audit trail.
    let (status, _, page) = operator.get("/console/audit").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("journal:1 to ehr") && page.contains("EHR lost it"),
        "{page}"
    );
    assert!(page.contains("<td>view</td>"), "{page}");

    // A viewer: no raw message, no resend button, and its POST is refused.
    let mut viewer = Browser::new(http);
    let (status, _, _) = viewer.login("victor", VIEWER_PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, page) = viewer.get("/console/messages/1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !page.contains(r#"id="raw""#) && !page.contains("DURAND"),
        "{page}"
    );
    assert!(!page.contains(r#"id="resend""#), "{page}");
    assert!(page.contains("for operators only"), "{page}");
    let viewer_csrf = csrf_of(&page);
    let (status, _, page) = viewer
        .post(
            "/console/messages/1/resend",
            &[
                ("csrf", &viewer_csrf),
                ("destination", "ehr"),
                ("reason", "x"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(
        page.contains("This action is for operators only."),
        "{page}"
    );
    let (status, _, _) = viewer.get("/console/audit").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(received.lock().expect("lock").len(), 2, "nothing more sent");

    // The Host check guards the console too.
    let response = reqwest::Client::new()
        .get(format!("http://{http}/console/login"))
        .header("host", "attacker.example")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);

    // Logout: the old cookie opens nothing any more.
    let stolen = operator.cookies.clone();
    let (status, headers, _) = operator.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/console/login?out=1");
    let mut replayed = Browser::new(http);
    replayed.cookies = stolen;
    let (status, headers, _) = replayed.get("/console/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/console/login");

    engine.stop().await;
}

#[test]
fn check_refuses_a_console_without_users() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, text) = common::check_config(
        dir.path(),
        "[store]\npath = \"ob.db\"\n[http]\nbind = \"127.0.0.1:8717\"\n[console]\n",
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("`console.users`: the console has no users, so nobody could log in"),
        "{text}"
    );
}

#[test]
fn user_add_prints_a_line_check_accepts() {
    let mut child = std::process::Command::new(common::ordobridge_bin())
        .args(["user", "add", "olga", "--role", "operator"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run user add");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"correct horse battery\n").expect("write");
    }
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "{output:?}");
    let line = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        line.starts_with("olga = { role = \"operator\", password_hash = \"$argon2id$v=19$"),
        "{line}"
    );
    let dir = tempfile::tempdir().expect("dir");
    let (code, text) = common::check_config(
        dir.path(),
        &format!(
            "[store]\npath = \"ob.db\"\n[http]\nbind = \"127.0.0.1:8717\"\n[console.users]\n{line}"
        ),
    );
    assert_eq!(code, 0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_releases_a_held_bundle_now_and_a_viewer_cannot() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("dir");
    let text = format!(
        "{base}{push}\n{console}",
        base = common::base_toml(),
        push = common::push_to_ehr_toml(
            peer,
            "allow_unauthenticated = true\nhold_unknown_for = \"1h\""
        ),
        console = console_toml(""),
    );
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    let http = engine.addr("http");

    // A bundle for a patient the census does not know: held for an hour.
    let response = reqwest::Client::new()
        .post(format!("http://{http}/fhir"))
        .body(common::sample(
            "samples/posos/two-drugs-prednisone-taper.json",
        ))
        .send()
        .await
        .expect("push");
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );

    let mut viewer = Browser::new(http);
    viewer.login("victor", VIEWER_PASSWORD).await;
    let (_, _, page) = viewer.get("/console/").await;
    assert!(page.contains(r#"id="held-bundles""#), "{page}");
    assert!(
        !page.contains(r#"id="release-1""#),
        "no button for a viewer: {page}"
    );
    let csrf = csrf_of(&page);
    let (status, _, _) = viewer.act("/console/holds/1/release", &csrf, "x").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let mut operator = Browser::new(http);
    operator.login("olga", OPERATOR_PASSWORD).await;
    let (_, _, page) = operator.get("/console/").await;
    assert!(page.contains(r#"id="release-1""#), "{page}");
    let csrf = csrf_of(&page);
    let (status, _, page) = operator.act("/console/holds/1/release", &csrf, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        page.contains("Give a reason: it is recorded in the audit trail."),
        "{page}"
    );
    assert!(received.lock().expect("lock").is_empty(), "still held");
    let (status, _, page) = operator
        .act(
            "/console/holds/1/release",
            &csrf,
            "patient admitted by phone",
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let delivered = common::first_received(&received).await;
    assert!(
        delivered.starts_with(b"MSH|"),
        "the mapped order reached the EHR"
    );
    let (_, _, page) = operator.get("/console/audit").await;
    assert!(
        page.contains("hold of journal:1") && page.contains("patient admitted by phone"),
        "{page}"
    );

    // The mapping try-out on that bundle: the same message as sent, but for its time.
    let (status, _, page) = operator.get("/console/try").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("orm-o01.toml → ehr-orders"), "{page}");
    common::wait_for("the delivery to be recorded", || {
        let mut operator = operator.clone();
        async move {
            let (_, _, page) = operator.get("/console/messages/1").await;
            page.contains(r#"data-status="delivered""#).then_some(())
        }
    })
    .await;
    let (status, _, page) = operator
        .post(
            "/console/try",
            &[("csrf", &csrf), ("route", "0"), ("journal", "1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(r#"id="produced""#) && page.contains("ORC|"),
        "{page}"
    );
    assert!(
        page.contains(r#"id="diff""#),
        "compared with what was sent: {page}"
    );
    let differing = page.matches(r#"data-same="false""#).count();
    assert!(differing <= 1, "only MSH (its time) may differ: {page}");
    let (status, _, _) = viewer.get("/console/try").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_pauses_and_resumes_a_destination() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("dir");
    let engine = common::start_engine(config(dir.path(), peer)).await;
    let http = engine.addr("http");
    let ack = common::send_adt(engine.addr("adt-in"), &common::sample(common::A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA"), "{ack}");

    let mut operator = Browser::new(http);
    operator.login("olga", OPERATOR_PASSWORD).await;
    let (_, _, page) = operator.get("/console/").await;
    assert!(page.contains(r#"id="pause-ehr""#), "{page}");
    let csrf = csrf_of(&page);
    let (status, _, _) = operator
        .act("/console/destinations/ehr/pause", &csrf, "EHR maintenance")
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // The worker parks on the pause: from then on it leaves the wait only on a resume, so
    // what is queued after cannot be sent (no window to wait out).
    let page = wait_parked(&mut operator).await;
    assert!(
        page.contains(r#"data-paused="true""#) && page.contains(r#"id="resume-ehr""#),
        "{page}"
    );
    // The ADT's channel shows when its last message came.
    let row = page
        .split(r#"<tr data-channel="adt-in">"#)
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("the adt-in row");
    assert!(
        row.contains(r#"<td class="last">"#) && !row.contains(r#"<td class="last">-</td>"#),
        "{row}"
    );

    // Queued while paused: the queue holds it.
    let (status, _, _) = operator
        .post(
            "/console/messages/1/resend",
            &[
                ("csrf", &csrf),
                ("destination", "ehr"),
                ("reason", "after maintenance"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let page = wait_parked(&mut operator).await;
    assert!(page.contains(r#"<td class="pending">1</td>"#), "{page}");
    assert!(
        received.lock().expect("lock").is_empty(),
        "nothing sent while paused"
    );

    // A restart keeps the pause (it is in the store) and the message queued.
    engine.stop().await;
    let engine = common::start_engine(config(dir.path(), peer)).await;
    let mut operator = Browser::new(engine.addr("http"));
    operator.login("olga", OPERATOR_PASSWORD).await;
    let page = wait_parked(&mut operator).await;
    assert!(
        page.contains(r#"data-paused="true""#) && page.contains(r#"<td class="pending">1</td>"#),
        "{page}"
    );
    assert!(
        received.lock().expect("lock").is_empty(),
        "nothing sent after the restart"
    );

    // Resumed: it goes.
    let csrf = csrf_of(&page);
    let (status, _, _) = operator
        .act("/console/destinations/ehr/resume", &csrf, "EHR back")
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let delivered = common::first_received(&received).await;
    assert_eq!(delivered, common::sample(common::A01_SAMPLE));
    let (_, _, page) = operator.get("/console/audit").await;
    assert!(
        page.contains("<td>pause</td>")
            && page.contains("<td>resume</td>")
            && page.contains("destination:ehr"),
        "{page}"
    );
    engine.stop().await;

    // Resumed for good: a restart does not pause it again.
    let engine = common::start_engine(config(dir.path(), peer)).await;
    let mut operator = Browser::new(engine.addr("http"));
    operator.login("olga", OPERATOR_PASSWORD).await;
    let (_, _, page) = operator.get("/console/").await;
    assert!(page.contains(r#"data-paused="false""#), "{page}");
    engine.stop().await;
}

/// The dashboard once the worker of `ehr` is parked on its pause.
async fn wait_parked(browser: &mut Browser) -> String {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let (_, _, page) = browser.get("/console/").await;
        if page.contains(r#"data-destination="ehr" data-paused="true" data-parked="true""#) {
            return page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker of `ehr` never parked on its pause: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The configuration of [`config`] with single sign-on: the proxy's header `X-Remote-User`,
/// believed from `trusted` only; `sam` is an SSO operator, `olga` keeps her local role.
fn sso_config(
    dir: &std::path::Path,
    peer: SocketAddr,
    trusted: &str,
) -> ordobridge::config::Config {
    let operator = ordobridge::console::hash_password(OPERATOR_PASSWORD).expect("hash");
    let text = format!(
        r#"{base}
[outbound.ehr]
protocol = "mllp"
address = "{peer}"
retry_initial = "20ms"
[console]
language = "en"
sso_header = "X-Remote-User"
trusted_proxies = ["{trusted}"]
[console.sso_users]
sam = "operator"
vera = "viewer"
[console.users]
olga = {{ role = "operator", password_hash = "{operator}" }}
"#,
        base = common::base_toml()
    );
    common::config(dir, &text)
}

/// GET or POST `path` as the reverse proxy would, naming `user` in `X-Remote-User`.
async fn as_proxy(
    http: SocketAddr,
    user: &str,
    path: &str,
    form: Option<&[(&str, &str)]>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let client = common::no_redirect_client();
    let url = format!("http://{http}{path}");
    let request = match form {
        Some(form) => client.post(url).form(form),
        None => client.get(url),
    };
    let response = request
        .header("X-Remote-User", user)
        .send()
        .await
        .expect("request");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.expect("body"))
}

/// Single sign-on over real HTTP: from a trusted proxy (loopback here) the header signs the
/// user in with the role `sso_users` (or `users`) gives, forms carry a CSRF token and the
/// audit names the user; an unknown name, and the header from an untrusted address, open
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_header_from_a_trusted_proxy_only() {
    let (peer, _received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("dir");
    let engine = common::start_engine(sso_config(dir.path(), peer, "127.0.0.1/32")).await;
    let http = engine.addr("http");

    let (status, _, page) = as_proxy(http, "sam", "/console/", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("sam"), "{page}");
    assert!(page.contains(r#"id="pause-ehr""#), "an operator: {page}");
    let csrf = csrf_of(&page);
    // An action needs the CSRF token, as with a local login.
    let (status, _, _) = as_proxy(
        http,
        "sam",
        "/console/destinations/ehr/pause",
        Some(&[("csrf", "forged"), ("reason", "maintenance")]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = as_proxy(
        http,
        "sam",
        "/console/destinations/ehr/pause",
        Some(&[("csrf", &csrf), ("reason", "maintenance")]),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, audit) = as_proxy(http, "sam", "/console/audit", None).await;
    assert!(
        audit.contains("<td>sam</td>") && audit.contains("<td>pause</td>"),
        "{audit}"
    );

    // A viewer by the proxy's word: no action.
    let (status, _, page) = as_proxy(http, "vera", "/console/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains(r#"id="pause-ehr""#), "{page}");
    // A local user named by the proxy keeps her role; an unknown name opens nothing.
    let (status, _, _) = as_proxy(http, "olga", "/console/audit", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, _) = as_proxy(http, "mallory", "/console/", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/console/login");
    engine.stop().await;

    // The proxy is elsewhere: the same header from loopback is ignored.
    let dir = tempfile::tempdir().expect("dir");
    let engine = common::start_engine(sso_config(dir.path(), peer, "10.9.9.9/32")).await;
    let (status, headers, _) = as_proxy(engine.addr("http"), "sam", "/console/", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/console/login");
    // Local logins still work beside SSO.
    let mut local = Browser::new(engine.addr("http"));
    local.login("olga", OPERATOR_PASSWORD).await;
    let (status, _, _) = local.get("/console/").await;
    assert_eq!(status, StatusCode::OK);
    engine.stop().await;
}

/// The console on PostgreSQL (issue 14): the daemon on the test server with `[console]`, an
/// MLLP destination and no inbound channel (the census is not on PostgreSQL yet); journal
/// rows written beforehand as another node would. An operator logs in, sees the dashboard,
/// searches (type, channel, rejected, IPP, text, paging), opens a row (its view audited), and
/// pauses the destination: a restart keeps the pause, a resume lets the queued message go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_on_postgres_searches_and_pauses() {
    use ordobridge::store::Store;
    use ordobridge::store::settings::PostgresSettings;

    let server = common::postgres::TestPostgres::start();
    let settings = PostgresSettings::from_url(&server.url()).expect("url");
    let rows = [
        ("adt-in", "ADT^A01", "PG0001", "PID|1||4711^^^CH^PI", false),
        ("adt-in", "ADT^A08", "PG0002", "PID|1||1234^^^CH^PI", false),
        (
            "lab-in",
            "ORU^R01",
            "PG0003",
            "PID|1||4711^^^CH^PI\rOBX|1|TX|||Potassium",
            false,
        ),
        ("lab-in", "ORU^R01", "PG0004", "PID|1||99^^^CH^PI", true),
    ];
    let mut ids = Vec::new();
    {
        let store = Store::open_postgres(&settings, true).expect("open");
        for (n, (channel, message_type, control_id, body, refused)) in rows.iter().enumerate() {
            let raw = format!(
                "MSH|^~\\&|LAB|CHU|||20260101||{message_type}|{control_id}|P|2.5\r{body}\r"
            );
            let mut record = common::records::record(control_id, raw.as_bytes());
            if *refused {
                record = common::records::rejected(control_id, raw.as_bytes(), "PID-3: unknown");
            }
            record.channel = (*channel).to_owned();
            record.message_type = (*message_type).to_owned();
            record.received_at =
                jiff::Timestamp::from_second(1_750_000_000 + 60 * i64::try_from(n).expect("n"))
                    .expect("time");
            ids.push(store.journal(record).await.expect("journal").id());
        }
        // Processed, so the census processor leaves them alone.
        store.mark_processed(ids.clone()).await.expect("processed");
        store.close().await;
    }

    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("dir");
    let text = format!(
        r#"[store]
backend = "postgres"
url = "{url}"
[cluster]
node_name = "ob-console"
[http]
bind = "127.0.0.1:0"
[outbound.ehr]
protocol = "mllp"
address = "{peer}"
retry_initial = "20ms"
{console}"#,
        url = server.url(),
        console = console_toml(""),
    );
    let start = || async {
        let config = common::config(dir.path(), &text);
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind http");
        let listeners = ordobridge::engine::BoundListeners {
            http: Some(http),
            ..ordobridge::engine::BoundListeners::default()
        };
        common::InProcess::start(config, listeners).await
    };
    let engine = start().await;
    let mut operator = Browser::new(engine.addr("http"));
    let (status, _, _) = operator.login("olga", OPERATOR_PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, page) = operator.get("/console/").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"data-destination="ehr""#), "{page}");
    // The node's name, and who does what: this node holds the destination's lease.
    assert!(page.contains("ob-console"), "{page}");
    let mut waiting = 0;
    loop {
        let (_, _, page) = operator.get("/console/").await;
        if page.contains(
            r#"<tr data-role="ehr"><th scope="row">ehr</th><td class="node">ob-console</td>"#,
        ) {
            break;
        }
        waiting += 1;
        assert!(
            waiting < 500,
            "no lease row for `ehr` on the dashboard: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Searches: each filter finds its rows, newest first.
    let found = |page: &str| -> Vec<&str> {
        ["PG0004", "PG0003", "PG0002", "PG0001"]
            .into_iter()
            .filter(|id| page.contains(id))
            .collect()
    };
    for (query, expected) in [
        ("type=ORU", vec!["PG0004", "PG0003"]),
        ("type=ADT%5EA08", vec!["PG0002"]),
        ("channel=adt-in", vec!["PG0002", "PG0001"]),
        ("status=rejected", vec!["PG0004"]),
        ("ipp=4711", vec!["PG0003", "PG0001"]),
        ("text=Potassium", vec!["PG0003"]),
        ("since=2025-06-15T15:08:00Z", vec!["PG0004", "PG0003"]),
    ] {
        let (status, _, page) = operator.get(&format!("/console/messages?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        assert_eq!(found(&page), expected, "{query}");
    }
    // An IPP search is on record.
    let (_, _, page) = operator.get("/console/audit").await;
    assert!(page.contains("journal by IPP"), "{page}");

    // A row opened: raw message, tree, lineage (none yet).
    let (status, _, page) = operator.get(&format!("/console/messages/{}", ids[2])).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Potassium"), "{page}");

    // Pause `ehr`, queue a message for it: nothing leaves.
    let (_, _, page) = operator.get("/console/").await;
    let csrf = csrf_of(&page);
    let (status, _, page) = operator
        .act("/console/destinations/ehr/pause", &csrf, "EHR maintenance")
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    wait_parked(&mut operator).await;
    let (status, _, _) = operator
        .post(
            &format!("/console/messages/{}/resend", ids[0]),
            &[
                ("csrf", &csrf),
                ("destination", "ehr"),
                ("reason", "after maintenance"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let page = wait_parked(&mut operator).await;
    assert!(page.contains(r#"<td class="pending">1</td>"#), "{page}");

    // A restart keeps the pause (it is in PostgreSQL) and the message queued.
    engine.stop().await;
    let engine = start().await;
    let mut operator = Browser::new(engine.addr("http"));
    operator.login("olga", OPERATOR_PASSWORD).await;
    let page = wait_parked(&mut operator).await;
    assert!(page.contains(r#"<td class="pending">1</td>"#), "{page}");
    assert!(
        received.lock().expect("lock").is_empty(),
        "nothing sent while paused"
    );
    let csrf = csrf_of(&page);
    let (status, _, _) = operator
        .act("/console/destinations/ehr/resume", &csrf, "EHR back")
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let delivered = common::first_received(&received).await;
    assert!(
        String::from_utf8_lossy(&delivered).contains("PG0001"),
        "the resent message"
    );
    let (_, _, page) = operator.get("/console/audit").await;
    assert!(
        page.contains("<td>pause</td>") && page.contains("<td>resume</td>"),
        "{page}"
    );
    engine.stop().await;
    let store = Store::open_postgres(&settings, false).expect("reopen");
    assert!(store.paused_destinations().expect("paused").is_empty());
}
