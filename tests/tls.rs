//! TLS on every link, with real handshakes on 127.0.0.1 and certificates made at test time
//! (rcgen): MLLP in (a Rust client, Python's `ssl`, `openssl s_client`, `ordobridge send`),
//! mutual TLS accepted and refused (no certificate, wrong CA, wrong name, expired), plain MLLP
//! spoken to a TLS port, MLLP out to a TLS receiver, HTTPS with `require_client_cert`,
//! reload (in-process and SIGHUP), and `check` on bad files.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{Daemon, PATIENCE, Received, wait_for};
use ordobridge::mllp::client::{ClientSettings, MllpClient};
use ordobridge::tls::ClientTlsSettings;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

const DAY: i64 = 86_400;

/// A certificate file and its key file.
type CertAndKey = (PathBuf, PathBuf);

/// A test certificate authority writing its files into a folder.
struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM), `NAME.pem`.
    ca: PathBuf,
}

fn time_of(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).expect("time")
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        let ca = dir.join(format!("{name}.pem"));
        std::fs::write(&ca, cert.pem()).expect("write ca");
        Pki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    /// A certificate for `names` (the first is also the CN), valid from `from` to `to` days
    /// around now, written as `STEM.crt` and `STEM.key`.
    fn leaf(&self, stem: &str, names: &[&str], from: i64, to: i64) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(stem));
        params.not_before = time_of(now() + from * DAY);
        params.not_after = time_of(now() + to * DAY);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let (cert_path, key_path) = (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    /// A valid certificate (one day back, a year ahead).
    fn valid(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.leaf(stem, names, -1, 365)
    }
}

/// The files of one test site: a site CA, the listener's certificate, a client certificate
/// for `dpi.example`, and a foreign CA with a client certificate of its own.
struct Site {
    _dir: tempfile::TempDir,
    path: PathBuf,
    ca: Pki,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    foreign: Pki,
}

fn site() -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let ca = Pki::new(&path, "site-ca");
    let server = ca.valid("server", &["localhost", "127.0.0.1"]);
    let client = ca.valid("dpi", &["dpi.example"]);
    let foreign = Pki::new(&path, "foreign-ca");
    Site {
        _dir: dir,
        path,
        ca,
        server,
        client,
        foreign,
    }
}

/// `[inbound.adt-tls]`: mutual TLS, only `dpi.example` allowed.
fn tls_inbound(site: &Site) -> String {
    format!(
        r#"
[inbound.adt-tls]
protocol = "mllp"
bind = "127.0.0.1:0"
read_timeout = "5s"
[inbound.adt-tls.tls]
cert = "{}"
key = "{}"
client_ca = "{}"
client_names = ["dpi.example"]
"#,
        site.server.0.display(),
        site.server.1.display(),
        site.ca.ca.display()
    )
}

/// Client settings toward the site's listener, with `client` as certificate (or none).
fn client_settings(site: &Site, client: Option<&(PathBuf, PathBuf)>) -> ClientSettings {
    tls_client("test", &site.ca.ca, "localhost", client)
}

/// Client settings trusting `ca`, expecting `server_name`, presenting `client` (or none).
fn tls_client(
    usage: &str,
    ca: &Path,
    server_name: &str,
    client: Option<&CertAndKey>,
) -> ClientSettings {
    let tls = ClientTlsSettings {
        ca: Some(ca.to_path_buf()),
        server_name: server_name.to_string(),
        cert_and_key: client.cloned(),
    }
    .client(usage)
    .expect("client tls");
    ClientSettings {
        tls: Some(tls),
        ..ClientSettings::default()
    }
}

/// Client settings presenting `client` as it is, even expired (the daemon's own client
/// refuses to load an expired certificate: a peer may not be so careful).
fn careless_client(site: &Site, client: Option<&(PathBuf, PathBuf)>) -> ClientSettings {
    use ordobridge::tls::files::{load_ca_bundle, load_chain, load_key};
    let Some((cert, key)) = client.cloned() else {
        return client_settings(site, None);
    };
    let ca = site.ca.ca.clone();
    let config = ordobridge::tls::Reloadable::load(
        "careless",
        Box::new(move || {
            let config = rustls::ClientConfig::builder_with_provider(ordobridge::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(load_ca_bundle(&ca)?)
                .with_client_auth_cert(load_chain(&cert)?, load_key(&key)?)
                .expect("client certificate");
            Ok((config, None))
        }),
    )
    .expect("client tls");
    ClientSettings {
        tls: Some(ordobridge::tls::ClientTls {
            config: Arc::new(config),
            server_name: "localhost".try_into().expect("name"),
        }),
        ..ClientSettings::default()
    }
}

fn a01() -> Vec<u8> {
    ordobridge::tools::normalize_segment_ends(&common::sample(common::A01_SAMPLE))
}

/// Sends the A01 and returns the answer, or the first error (connect or exchange) as text.
async fn try_send(addr: SocketAddr, settings: ClientSettings) -> Result<String, String> {
    let mut client = MllpClient::connect(addr, settings)
        .await
        .map_err(|e| ordobridge::text::error_chain(&e))?;
    let answer = client
        .send(&a01(), PATIENCE)
        .await
        .map_err(|e| ordobridge::text::error_chain(&e))?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Waits until the daemon logged a line holding every one of `parts`, and returns it.
async fn logged(daemon: &Daemon, parts: &[&str]) -> String {
    wait_for(&format!("a log line with {parts:?}"), || {
        let line = daemon
            .log_text()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_string);
        async move { line }
    })
    .await
}

#[tokio::test]
async fn ok_mutual_tls_beside_a_plain_listener_and_err_each_refusal_named() {
    let site = site();
    let config = common::write_config(&site.path, &tls_inbound(&site));
    let daemon = Daemon::start(&config);
    let tls_addr = daemon.addr("adt-tls");

    // Mutual TLS with an allowed name: accepted, journaled, acknowledged.
    let answer = try_send(tls_addr, client_settings(&site, Some(&site.client)))
        .await
        .expect("mutual TLS accepted");
    assert!(answer.contains("MSA|AA|"), "{answer}");
    // The plain listener runs beside it.
    let plain = common::send_adt(daemon.addr("adt-in"), &a01()).await;
    assert!(plain.contains("MSA|AA|"), "{plain}");

    // Each refusal: the client cannot exchange, the log names the channel and the reason.
    let wrong_name = site.ca.valid("intruder", &["intruder.example"]);
    let expired = site.ca.leaf("expired", &["dpi.example"], -30, -1);
    let foreign = site.foreign.valid("foreign", &["dpi.example"]);
    let cases: [(&str, Option<&CertAndKey>, &str); 4] = [
        (
            "no certificate",
            None,
            "no client certificate: this port requires one signed by its `client_ca`",
        ),
        (
            "wrong CA",
            Some(&foreign),
            "unknown CA: the certificate is not signed by a trusted CA",
        ),
        (
            "wrong name",
            Some(&wrong_name),
            "client name not allowed: the certificate is for `intruder.example`, `client_names` allows `dpi.example`",
        ),
        (
            "expired",
            Some(&expired),
            "expired: the certificate is past its validity",
        ),
    ];
    for (what, client, reason) in cases {
        let refused = try_send(tls_addr, careless_client(&site, client)).await;
        assert!(refused.is_err(), "{what}: {refused:?}");
        let line = logged(&daemon, &["TLS handshake failed", reason]).await;
        assert!(
            line.contains("adt-tls"),
            "{what}: the channel is named: {line}"
        );
        assert!(
            line.contains("127.0.0.1:"),
            "{what}: the peer is named: {line}"
        );
    }

    // Plain MLLP to the TLS port: closed with a clear reason, and the listener goes on.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut plain = tokio::net::TcpStream::connect(tls_addr).await.expect("tcp");
        let mut frame = vec![0x0B];
        frame.extend_from_slice(&a01());
        frame.extend_from_slice(b"\x1C\r");
        plain.write_all(&frame).await.expect("write");
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(PATIENCE, plain.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "closed without an answer: {read:?}"
        );
        logged(
            &daemon,
            &[
                "adt-tls",
                "plain MLLP spoken to a TLS port",
                "TLS connection refused",
            ],
        )
        .await;
    }
    let again = try_send(tls_addr, client_settings(&site, Some(&site.client)))
        .await
        .expect("the listener still serves TLS clients");
    assert!(again.contains("MSA|AA|"), "{again}");
}

/// A frame for the real peers: the A01 between the MLLP start and end blocks.
fn framed_a01(dir: &Path) -> PathBuf {
    let mut frame = vec![0x0B];
    frame.extend_from_slice(&a01());
    frame.extend_from_slice(b"\x1C\r");
    let path = dir.join("a01.mllp");
    std::fs::write(&path, frame).expect("write frame");
    path
}

const PYTHON_SSL_PEER: &str = r#"
import socket, ssl, sys
host, port, cafile, cert, key, frame = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(cert, key)
with socket.create_connection((host, int(port)), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(open(frame, "rb").read())
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
        print(tls.version(), answer.decode("latin-1").replace("\r", "\n"))
"#;

#[tokio::test]
async fn ok_python_ssl_and_openssl_s_client_and_ordobridge_send_over_mutual_tls() {
    let site = site();
    let config = common::write_config(&site.path, &tls_inbound(&site));
    let daemon = Daemon::start(&config);
    let addr = daemon.addr("adt-tls");
    let frame = framed_a01(&site.path);

    // Python's ssl module (stdlib), mutual TLS.
    let python = common::Script::spawn(
        Command::new("python3")
            .arg("-c")
            .arg(PYTHON_SSL_PEER)
            .arg("127.0.0.1")
            .arg(addr.port().to_string())
            .arg(&site.ca.ca)
            .arg(&site.client.0)
            .arg(&site.client.1)
            .arg(&frame),
        None,
    )
    .wait(PATIENCE);
    assert!(
        python.stdout.contains("MSA|AA|"),
        "python ssl peer: {python:?}"
    );

    // openssl s_client, mutual TLS, checking our certificate against the site CA.
    let openssl = Path::new("/usr/bin/openssl");
    if openssl.exists() {
        let answer = s_client(openssl, addr, &site, Some(&site.client), &frame);
        assert!(answer.contains("MSA|AA|"), "openssl s_client: {answer}");
        // Without a client certificate the listener refuses and says why.
        let _ = s_client(openssl, addr, &site, None, &frame);
        logged(&daemon, &["TLS handshake failed", "no client certificate"]).await;
    } else {
        eprintln!("skipped the openssl s_client peer: /usr/bin/openssl is absent");
    }

    // ordobridge send with --tls-* flags.
    let output = ordobridge_send(addr, Some("localhost"), &site.ca.ca, Some(&site.client));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "send: {stdout} {output:?}");
    assert!(stdout.contains("#1: AA"), "{stdout}");
    // Without --tls-server-name the host of --to is checked: 127.0.0.1 is in the certificate.
    let output = ordobridge_send(addr, None, &site.ca.ca, Some(&site.client));
    assert!(output.status.success(), "send by IP: {output:?}");
    // No client certificate: refused, and the sender is told why.
    let output = ordobridge_send(addr, None, &site.ca.ca, None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "#1: TLS handshake with {addr} failed: the peer requires a client certificate (alert: certificate required): give one signed by a CA it trusts"
        )),
        "{stderr}"
    );
    // A wrong server name: the error names the peer, the name and the reason.
    let output = ordobridge_send(addr, Some("ehr.example"), &site.ca.ca, None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "TLS handshake with {addr} failed: server name `ehr.example`: name mismatch"
        )),
        "{stderr}"
    );
}

/// Runs `ordobridge send` with the A01 sample to `addr` over TLS: `--tls-server-name` when
/// given, the CA, and `client` as `--tls-cert` and `--tls-key` when given.
fn ordobridge_send(
    addr: SocketAddr,
    server_name: Option<&str>,
    ca: &Path,
    client: Option<&CertAndKey>,
) -> std::process::Output {
    let mut command = Command::new(common::ordobridge_bin());
    command.args(["send", "--to", &addr.to_string()]);
    if let Some(name) = server_name {
        command.args(["--tls-server-name", name]);
    }
    command.arg("--tls-ca").arg(ca);
    if let Some((cert, key)) = client {
        command
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key);
    }
    command
        .arg(common::repo_root().join(common::A01_SAMPLE))
        .output()
        .expect("run ordobridge send")
}

/// Runs `openssl s_client` with the frame on its stdin and returns what it printed once the
/// answer came (or the connection ended); the process is killed by its PID.
fn s_client(
    openssl: &Path,
    addr: SocketAddr,
    site: &Site,
    client: Option<&(PathBuf, PathBuf)>,
    frame: &Path,
) -> String {
    use std::io::{Read, Write};
    let mut command = Command::new(openssl);
    command
        .args(["s_client", "-connect", &addr.to_string(), "-quiet"])
        .args(["-verify_return_error", "-verify_hostname", "localhost"])
        .arg("-CAfile")
        .arg(&site.ca.ca);
    if let Some((cert, key)) = client {
        command.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start openssl s_client");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&std::fs::read(frame).expect("frame"))
        .expect("write frame");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.ends_with(b"\x1C\r") {
                break;
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&got).replace('\r', "\n"));
    });
    let answer = rx.recv_timeout(PATIENCE).unwrap_or_default();
    drop(stdin);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    answer
}

/// A TLS MLLP receiver that requires a client certificate of `client_ca`, answers AA and
/// keeps what it received.
async fn tls_ehr_peer(cert: &Path, key: &Path, client_ca: &Path) -> (SocketAddr, Received) {
    let settings = ordobridge::tls::ServerTlsSettings {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        client_ca: Some(client_ca.to_path_buf()),
        client_names: vec![],
        client_cert_required: true,
        alpn: vec![],
    };
    let config = Arc::new(settings.build(now()).expect("peer tls").0);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received: Received = Arc::default();
    let sink = received.clone();
    common::mllp_peer::serve(
        listener,
        Some(acceptor),
        common::mllp_peer::accept_all(),
        Arc::new(move |_, payload| sink.lock().expect("lock").push(payload.to_vec())),
    );
    (addr, received)
}

const PUSH_TOKEN: &str = "a-push-token-of-more-than-32-characters";

#[tokio::test]
async fn ok_https_push_with_client_certificate_delivered_over_mllp_tls() {
    let site = site();
    let ehr_server = site.ca.valid("ehr", &["ehr.example"]);
    let (ehr, received) = tls_ehr_peer(&ehr_server.0, &ehr_server.1, &site.ca.ca).await;
    let posos = site.ca.valid("posos", &["posos.example"]);
    let text = format!(
        r#"{base}[http.tls]
cert = "server.crt"
key = "server.key"
client_ca = "site-ca.pem"
{push}[outbound.ehr-orders.tls]
ca = "site-ca.pem"
server_name = "ehr.example"
cert = "dpi.crt"
key = "dpi.key"
"#,
        base = common::base_toml(),
        push = common::push_to_ehr_toml(
            ehr,
            &format!(
                "token = \"{PUSH_TOKEN}\"\nrequire_client_cert = true\nhold_unknown_for = \"0s\""
            ),
        ),
    );
    let engine = common::start_engine(common::config(&site.path, &text)).await;
    let http = engine.addr("http");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&site.ca.ca).expect("ca")).expect("ca");
    let bundle = common::sample("samples/posos/two-drugs-prednisone-taper.json");
    let url = format!("https://localhost:{}/fhir", http.port());

    // HTTPS without a client certificate: health answers, the push is refused.
    let anonymous = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .resolve("localhost", http)
        .build()
        .expect("client");
    let health = anonymous
        .get(format!("https://localhost:{}/health", http.port()))
        .send()
        .await
        .expect("health over TLS");
    assert_eq!(health.status(), 200);
    let refused = anonymous
        .post(&url)
        .bearer_auth(PUSH_TOKEN)
        .body(bundle.clone())
        .send()
        .await
        .expect("push");
    assert_eq!(refused.status(), 403);
    let outcome: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(
        outcome["issue"][0]["diagnostics"],
        "a TLS client certificate is required: connect over HTTPS presenting a certificate signed by the CA this endpoint trusts"
    );
    // Plain HTTP to the HTTPS port gets nothing.
    assert!(
        reqwest::get(format!("http://{http}/health")).await.is_err(),
        "plain HTTP is not served on the TLS port"
    );

    // With Posos' certificate: accepted, mapped, delivered to the EHR over mutual TLS.
    let mut identity = std::fs::read(&posos.0).expect("cert");
    identity.extend(std::fs::read(&posos.1).expect("key"));
    let posos_client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
        .resolve("localhost", http)
        .build()
        .expect("client");
    let pushed = posos_client
        .post(&url)
        .bearer_auth(PUSH_TOKEN)
        .body(bundle)
        .send()
        .await
        .expect("push");
    assert_eq!(pushed.status(), 200, "{:?}", pushed.text().await);
    let orm = common::first_received(&received).await;
    assert!(String::from_utf8_lossy(&orm).contains("ORM^O01"));

    // The certificates in force are reported with their expiry.
    let metrics = anonymous
        .get(format!("https://localhost:{}/metrics", http.port()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for usage in ["http", "outbound/ehr-orders"] {
        assert!(
            metrics.contains(&format!(
                "ordobridge_tls_certificate_expiry_seconds{{use=\"{usage}\"}} "
            )),
            "{metrics}"
        );
    }
    engine.stop().await;
}

#[tokio::test]
async fn err_mllp_out_to_a_receiver_whose_certificate_does_not_match() {
    let site = site();
    let ehr_server = site.ca.valid("ehr", &["ehr.example"]);
    let (ehr, _received) = tls_ehr_peer(&ehr_server.0, &ehr_server.1, &site.ca.ca).await;
    // The client trusts the site CA but expects another name.
    let settings = tls_client(
        "outbound/test",
        &site.ca.ca,
        "other.example",
        Some(&site.client),
    );
    let err = try_send(ehr, settings).await.unwrap_err();
    assert_eq!(
        err,
        format!(
            "TLS handshake with {ehr} failed: server name `other.example`: name mismatch: expected `other.example`, the certificate is for DnsName(\"ehr.example\")"
        )
    );
    // A client trusting another CA: unknown CA.
    let settings = tls_client("outbound/test", &site.foreign.ca, "ehr.example", None);
    let err = try_send(ehr, settings).await.unwrap_err();
    assert_eq!(
        err,
        format!(
            "TLS handshake with {ehr} failed: server name `ehr.example`: unknown CA: the certificate is not signed by a trusted CA"
        )
    );
}

/// The leaf certificate a fresh TLS connection to `addr` is served.
async fn served_certificate(addr: SocketAddr, site: &Site) -> Vec<u8> {
    let settings = ClientTlsSettings {
        ca: Some(site.ca.ca.clone()),
        server_name: "localhost".to_string(),
        cert_and_key: Some(site.client.clone()),
    };
    let tls = settings.client("probe").expect("tls");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let stream = tls.connect(stream).await.expect("handshake");
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a certificate")
}

fn der_of(pem_file: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(pem_file)
        .expect("pem")
        .to_vec()
}

#[tokio::test]
async fn ok_reload_swaps_the_certificate_for_new_connections_only() {
    let site = site();
    let text = format!(
        "[store]\npath = \"data/ob.db\"\n[inbound.adt-in]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\n{}",
        tls_inbound(&site)
    );
    let config = common::config(&site.path, &text);
    let reloader = ordobridge::tls::Reloader::default();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let engine = tokio::spawn(ordobridge::engine::run_with_reloader(
        config,
        Default::default(),
        shutdown.clone(),
        reloader.clone(),
        move |handles| {
            let _ = ready_tx.send(handles.to_vec());
        },
    ));
    let handles = tokio::time::timeout(PATIENCE, ready_rx)
        .await
        .expect("ready in time")
        .expect("ready");
    let addr = handles
        .iter()
        .find(|h| h.name == "adt-tls")
        .and_then(|h| h.local_addr)
        .expect("adt-tls address");
    let old = der_of(&site.server.0);
    assert_eq!(served_certificate(addr, &site).await, old);
    let mut established = MllpClient::connect(addr, client_settings(&site, Some(&site.client)))
        .await
        .expect("connect");

    // Renewed files: reloaded; new connections get the new certificate.
    site.ca.valid("server", &["localhost", "127.0.0.1"]);
    let new = der_of(&site.server.0);
    assert_ne!(new, old);
    assert_eq!(reloader.reload_all(), 0);
    assert_eq!(served_certificate(addr, &site).await, new);
    // The connection opened before the reload keeps working.
    let answer = established.send(&a01(), PATIENCE).await.expect("ack");
    assert!(String::from_utf8_lossy(&answer).contains("MSA|AA|"));

    // A broken file: the reload fails and the certificate in force stays.
    std::fs::write(&site.server.1, "not a key\n").expect("write");
    assert_eq!(reloader.reload_all(), 1);
    assert_eq!(served_certificate(addr, &site).await, new);

    shutdown.cancel();
    tokio::time::timeout(PATIENCE, engine)
        .await
        .expect("stopped in time")
        .expect("task")
        .expect("engine result");
}

#[tokio::test]
async fn ok_sighup_reloads_the_daemon_certificates() {
    let site = site();
    let config = common::write_config(&site.path, &tls_inbound(&site));
    let daemon = Daemon::start(&config);
    let addr = daemon.addr("adt-tls");
    let old = served_certificate(addr, &site).await;
    site.ca.valid("server", &["localhost", "127.0.0.1"]);
    let status = Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    logged(&daemon, &["TLS certificates reloaded", "inbound/adt-tls"]).await;
    let new = served_certificate(addr, &site).await;
    assert_ne!(new, old);
    assert_eq!(new, der_of(&site.server.0));
}

/// Runs `ordobridge check` on `text` written in `dir`; returns (success, what it printed).
fn check(dir: &Path, text: &str) -> (bool, String) {
    let (code, out) = common::check_config(dir, text);
    (code == 0, out)
}

#[test]
fn ok_check_prints_days_left_and_err_on_expired_or_mismatched_files() {
    let site = site();
    let base = "[store]\npath = \"data/ob.db\"\n";
    let (ok, out) = check(&site.path, &format!("{base}{}", tls_inbound(&site)));
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "tls inbound/adt-tls: `{}` (CN=localhost) valid until ",
            site.server.0.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(": 364 days left") || out.contains(": 365 days left"),
        "{out}"
    );

    let expired = site.ca.leaf("old", &["localhost"], -30, -1);
    let text = format!(
        "{base}[inbound.x]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\n[inbound.x.tls]\ncert = \"old.crt\"\nkey = \"old.key\"\n"
    );
    let (ok, out) = check(&site.path, &text);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "tls inbound/x: error: `{}`: the certificate `CN=localhost` expired on ",
            expired.0.display()
        )),
        "{out}"
    );
    assert!(out.contains("renew it and reload (SIGHUP)"), "{out}");
    assert!(
        out.contains("ordobridge: 1 TLS problem(s): fix the files above, then check again"),
        "{out}"
    );

    let text = format!(
        "{base}[inbound.x]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\n[inbound.x.tls]\ncert = \"server.crt\"\nkey = \"dpi.key\"\n"
    );
    let (ok, out) = check(&site.path, &text);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "tls inbound/x: error: the key `{}` does not match the certificate `{}`: give the key the certificate was issued for",
            site.client.1.display(),
            site.server.0.display()
        )),
        "{out}"
    );

    // require_client_cert without a client CA is refused by name.
    let text =
        format!("{base}[http]\nbind = \"127.0.0.1:0\"\n[push]\nrequire_client_cert = true\n");
    let (ok, out) = check(&site.path, &text);
    assert!(!ok, "{out}");
    assert!(
        out.contains("`push.require_client_cert`: client certificates are required but `[http.tls]` has no `client_ca`"),
        "{out}"
    );
}
