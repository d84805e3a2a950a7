//! Helpers for integration tests that start real processes: the daemon binary and Python peers.
//!
//! Every process started here is killed by its PID when its guard drops, even when the test
//! fails; temp folders are removed by their `TempDir` guards.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod browser;
pub mod mllp_peer;
pub mod peer;
pub mod postgres;
pub mod records;

/// The `ordobridge` binary cargo built for these tests.
pub fn ordobridge_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ordobridge"))
}

/// The repository root (for `samples/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes a test configuration with one MLLP listener on `127.0.0.1:0` and JSON logs.
pub fn write_config(dir: &Path, extra_inbound: &str) -> PathBuf {
    let path = dir.join("ordobridge.toml");
    let text = format!(
        r#"[store]
path = "data/ordobridge.db"

[log]
level = "info,ordobridge=debug"
format = "json"

[inbound.adt-in]
protocol = "mllp"
bind = "127.0.0.1:0"
read_timeout = "5s"
idle_timeout = "60s"
{extra_inbound}
"#
    );
    std::fs::write(&path, text).expect("write test config");
    path
}

/// A running daemon process, killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    /// Where each channel listens, as the daemon logged it.
    pub channels: Vec<(String, SocketAddr)>,
    /// Every log line so far, for failure messages.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `ordobridge run --config CONFIG` and waits until it logs that it listens.
    pub fn start(config: &Path) -> Daemon {
        let mut child = Command::new(ordobridge_bin())
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the ordobridge binary");
        let stdout = child.stdout.take().expect("daemon stdout");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        // Drain stdout for the whole life of the process, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut ready = Vec::new();
            let mut announced = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !announced && let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                    let fields = &json["fields"];
                    if fields["message"] == "listening"
                        && let (Some(name), Some(addr)) =
                            (fields["channel"].as_str(), fields["addr"].as_str())
                        && let Ok(addr) = addr.parse()
                    {
                        ready.push((name.to_string(), addr));
                    }
                    if fields["message"] == "all listeners ready" {
                        announced = true;
                        let _ = tx.send(std::mem::take(&mut ready));
                    }
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut daemon = Daemon {
            child,
            channels: Vec::new(),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(channels) => daemon.channels = channels,
            Err(_) => panic!(
                "the daemon did not become ready within 60 s; its log:\n{}",
                daemon.log_text()
            ),
        }
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of channel `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.channels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("channel `{name}` not announced: {:?}", self.channels))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// SIGKILL, as a power cut would: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for the daemon")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the peers venv holds, pinned: python-hl7 and hl7apy (HL7 peers), prometheus_client
/// (its OpenMetrics parser checks `/metrics`).
const PEER_PACKAGES: [&str; 3] = ["hl7==0.4.5", "hl7apy==1.3.5", "prometheus_client==0.26.0"];

/// The Python interpreter of a venv under the target folder holding the test peers
/// ([`PEER_PACKAGES`]). Created on first use; a failure to create it fails the test.
pub fn python_peers() -> PathBuf {
    // Once per test binary: its tests run in parallel threads of one process, whose staging
    // folders below would have the same name.
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(build_python_peers).clone()
}

fn build_python_peers() -> PathBuf {
    // The folder name changes with the package list, so an older venv is never reused.
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("peers-venv-2");
    let python = root.join("bin").join("python");
    let ready = root.join(".ready");
    if ready.exists() {
        return python;
    }
    // Build in a private folder, then rename: test binaries running in parallel never see a
    // half-built venv, and the loser of the race simply uses the winner's.
    let staging = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("peers-venv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    run_ok(Command::new("python3").args(["-m", "venv"]).arg(&staging));
    run_ok(
        Command::new(staging.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PEER_PACKAGES),
    );
    std::fs::write(staging.join(".ready"), b"ok").expect("mark venv ready");
    if std::fs::rename(&staging, &root).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        ready.exists(),
        "the Python peers venv {} could not be created",
        root.display()
    );
    python
}

fn run_ok(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `ordobridge ARGS` to completion and returns its stdout.
pub fn ordobridge(args: &[&str]) -> String {
    let output = Command::new(ordobridge_bin())
        .args(args)
        .output()
        .expect("run ordobridge");
    assert!(
        output.status.success(),
        "ordobridge {args:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a [`Script`] printed and how it ended.
#[derive(Debug)]
pub struct ScriptOutput {
    /// The exit status; `None` when it was killed at the deadline.
    pub status: Option<std::process::ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// A helper process (a Node script driving Chromium, say) killed by its PID when dropped,
/// with every process whose command line names `marker` (the browser it started, found by its
/// private `--user-data-dir`), so that a failing test leaves nothing running.
pub struct Script {
    child: Child,
    marker: Option<String>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Script {
    /// Starts `command` with piped stdout and stderr (drained by threads, so it never blocks).
    pub fn spawn(command: &mut Command, marker: Option<String>) -> Script {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                use std::io::Read as _;
                let mut text = String::new();
                if let Some(mut pipe) = pipe {
                    let mut bytes = Vec::new();
                    let _ = pipe.read_to_end(&mut bytes);
                    text = String::from_utf8_lossy(&bytes).into_owned();
                }
                let _ = tx.send(text);
            });
            rx
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        Script {
            child,
            marker,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit (killing it and its browser at the
    /// deadline) and returns what it printed.
    pub fn wait(mut self, timeout: Duration) -> ScriptOutput {
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => break None,
            }
        };
        self.kill();
        let grace = Duration::from_secs(5);
        ScriptOutput {
            status,
            stdout: self.stdout.recv_timeout(grace).unwrap_or_default(),
            stderr: self.stderr.recv_timeout(grace).unwrap_or_default(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(marker) = &self.marker {
            kill_processes_naming(marker);
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILLs, by PID, every process of ours whose command line contains `marker` (a unique temp
/// path): the browser a killed script left behind.
pub fn kill_processes_naming(marker: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The real engine running in-process on listeners the test bound (port 0), so a test can
/// talk to it over real sockets and stop it cleanly.
pub struct InProcess {
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ordobridge::engine::EngineError>>,
    /// What the engine announced when ready (names, kinds, addresses).
    pub handles: Vec<ordobridge::engine::ChannelHandle>,
    /// Applies a new configuration, as SIGHUP does.
    pub reload: ordobridge::engine::ReloadHandle,
}

impl InProcess {
    /// Starts `engine::run` and waits until everything is accepting.
    pub async fn start(
        config: ordobridge::config::Config,
        listeners: ordobridge::engine::BoundListeners,
    ) -> InProcess {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (reload, requests) =
            ordobridge::engine::reload_channel(ordobridge::tls::Reloader::default());
        let task = tokio::spawn(ordobridge::engine::run_reloadable(
            config,
            listeners,
            shutdown.clone(),
            requests,
            move |handles| {
                let _ = ready_tx.send(handles.to_vec());
            },
        ));
        let handles = tokio::time::timeout(Duration::from_secs(20), ready_rx)
            .await
            .expect("engine ready in time")
            .expect("engine ready");
        InProcess {
            shutdown,
            task,
            handles,
            reload,
        }
    }

    /// The address the engine announced for `name` (`http` for the HTTP server).
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.handles
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.local_addr)
            .unwrap_or_else(|| panic!("no address announced for `{name}`: {:?}", self.handles))
    }

    /// Cancels, lets the in-flight work finish, and checks the engine ended without error.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("engine stops in time")
            .expect("engine task")
            .expect("engine result");
    }
}

/// How long an end-to-end step may take before the test fails (an ACK, a census update, a
/// delivery).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The A01 sample whose patient (IPP 100001, Pierre Leblanc's patient) the launch tests open.
pub const A01_SAMPLE: &str = "samples/adt/02-a01-admit.hl7";

/// The launch query for the patient of [`A01_SAMPLE`] and the user Pierre Leblanc.
pub const LAUNCH_QUERY: &str = "ipp=100001&rpps=10003456789&first_name=Pierre&last_name=Leblanc";

/// Reads a file of the repository (`samples/…`), failing the test when it is missing.
pub fn sample(path: &str) -> Vec<u8> {
    let full = repo_root().join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// The messages an [`ehr_peer`] received, in order.
pub type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// A minimal EHR on a loopback MLLP port: answers AA to every message and keeps them, so a
/// test can check what the daemon delivered.
pub async fn ehr_peer() -> (SocketAddr, Received) {
    ehr_peer_answering(|control_id| format!("MSA|AA|{control_id}")).await
}

/// An [`ehr_peer`] whose answer to each message is an ACK with the MSA segment (and any
/// segment after it) that `msa` gives for the message's control id, e.g.
/// `MSA|AE|{id}|some text`.
pub async fn ehr_peer_answering(
    msa: impl Fn(&str) -> String + Send + Sync + 'static,
) -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind peer");
    let addr = listener.local_addr().expect("addr");
    (addr, peer_on(listener, msa))
}

/// [`ehr_peer`] on a listener the test bound earlier (and left unanswered until now: a
/// destination that was down comes back).
pub fn ehr_peer_on(listener: tokio::net::TcpListener) -> Received {
    peer_on(listener, |control_id| format!("MSA|AA|{control_id}"))
}

fn peer_on(
    listener: tokio::net::TcpListener,
    msa: impl Fn(&str) -> String + Send + Sync + 'static,
) -> Received {
    let received: Received = Arc::default();
    let sink = received.clone();
    mllp_peer::serve(
        listener,
        None,
        Arc::new(msa),
        Arc::new(move |_, payload| sink.lock().expect("lock").push(payload.to_vec())),
    );
    received
}

/// The daemon's `/metrics` text at `http`, or `None` while it does not answer.
pub async fn metrics_text(http: SocketAddr) -> Option<String> {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Polls `check` until it gives a value, or fails after [`PATIENCE`] naming `what`: waits on
/// the asserted state instead of sleeping.
pub async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every message the daemon acknowledged through its intake log (`[store]
/// intake_log`, on by default) is in the journal table of the store `db`: an ACK precedes the
/// journal row by up to 100 ms. Read the journal after this, never right after an ACK.
pub async fn intake_copied(db: &std::path::Path) {
    wait_for("the intake log copied into the journal", || async {
        let store = ordobridge::store::Store::open_read_only(db).ok()?;
        (store.intake_unapplied().ok()? == 0).then_some(())
    })
    .await;
}

/// Every journal insert into the store `db` fails, as on a full disk, while this lives (a
/// trigger, through a connection of its own), until [`JournalInsertsFail::end`].
pub struct JournalInsertsFail(rusqlite::Connection);

impl JournalInsertsFail {
    pub fn start(db: &std::path::Path) -> JournalInsertsFail {
        let connection = rusqlite::Connection::open(db).expect("open db");
        connection
            .execute_batch(
                "CREATE TRIGGER fail BEFORE INSERT ON journal BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END;",
            )
            .expect("trigger");
        JournalInsertsFail(connection)
    }

    /// Journal inserts succeed again.
    pub fn end(self) {
        self.0
            .execute_batch("DROP TRIGGER fail;")
            .expect("drop trigger");
    }
}

/// Waits until the [`ehr_peer`] received a message and returns the first one.
pub async fn first_received(received: &Received) -> Vec<u8> {
    wait_for("a message at the EHR", || {
        let first = received.lock().expect("lock").first().cloned();
        async move { first }
    })
    .await
}

/// The configuration every end-to-end test starts from: the store at `data/ob.db`, MLLP ADT
/// in as `adt-in`, the census (`CH_EXEMPLE` IPPs) and the HTTP server, both on port 0.
pub fn base_toml() -> String {
    r#"
[store]
path = "data/ob.db"
[inbound.adt-in]
protocol = "mllp"
bind = "127.0.0.1:0"
[census]
ipp_authority = "CH_EXEMPLE"
[http]
bind = "127.0.0.1:0"
"#
    .to_string()
}

/// `[launch]` with the shipped scan-token mapping and `[posos]` in simulator mode with the
/// repository's sample keys; `simulator_extra` lines go into `[posos.simulator]` (the
/// simulator's `push_url` and `push_token`, say).
pub fn simulator_toml(simulator_extra: &str) -> String {
    format!(
        r#"[launch]
mapping = "{root}/mappings/scan-token.toml"
[posos]
mode = "simulator"
oauth_client_id = "ordobridge-simulator"
[posos.simulator]
key_file = "{root}/samples/simulator/service-account.json"
public_key_file = "{root}/samples/simulator/public-key.pem"
{simulator_extra}
"#,
        root = repo_root().display()
    )
}

/// One MLLP destination `ehr-orders` toward `peer` (retrying after 20 ms) and the push
/// endpoint routing bundles through the shipped ORM^O01 mapping to it; `push_extra` lines go
/// into `[push]` (token, hold).
pub fn push_to_ehr_toml(peer: SocketAddr, push_extra: &str) -> String {
    format!(
        r#"[outbound.ehr-orders]
protocol = "mllp"
address = "{peer}"
retry_initial = "20ms"
[push]
{push_extra}
[[push.route]]
mapping = "{root}/mappings/orm-o01.toml"
destination = "ehr-orders"
"#,
        root = repo_root().display()
    )
}

/// An A01 (control id `HOLD0001`) for the patient of `samples/posos/two-drugs-prednisone-taper.json`
/// (IPP000042) under another name than the bundle gives (LEGRAND), visit 900042.
pub fn adt_for_bundle_patient() -> Vec<u8> {
    [
        "MSH|^~\\&|DPI_SYNTH|CH_EXEMPLE|ORDOBRIDGE|POSOS|20261122081500||ADT^A01^ADT_A01|HOLD0001|P|2.5|||||FRA|UNICODE UTF-8|||2.11^IHE_FR",
        "EVN||20261122081500||||20261122081500",
        "PID|1||IPP000042^^^CH_EXEMPLE&1.2.250.1.999.1&ISO^PI||LEGRAND^CLAIRE^^^^^L||19500302|F|||||||||||900042^^^CH_EXEMPLE&1.2.250.1.999.1&ISO^AN",
        "PV1|1|I|CARDIO^101^1^CH_EXEMPLE||||10003456789^LEBLANC^PIERRE^^^DR^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS|||MED|||||||||900042^^^CH_EXEMPLE&1.2.250.1.999.1&ISO^VN|||||||||||||||||||||||||20261122081500|",
        "ZBE|MVT0042^CH_EXEMPLE|20261122081500||INSERT|N||^^^^^^UF^^^4010",
        "",
    ]
    .join("\r")
    .into_bytes()
}

/// Writes `text` as `DIR/ob.toml` (for the CLI's `--config`) and parses it as the daemon
/// would, with no environment; an invalid text fails the test with the error and the text.
pub fn config(dir: &Path, text: &str) -> ordobridge::config::Config {
    let path = dir.join("ob.toml");
    std::fs::write(&path, text).expect("write config");
    ordobridge::config::Config::from_str_with_env(text, &path, &|_| None)
        .unwrap_or_else(|e| panic!("invalid test config: {e}\n{text}"))
}

/// Runs `ordobridge check` on `text` written as `DIR/check.toml`; returns the exit code (-1
/// when killed) and what it printed, stderr then stdout.
pub fn check_config(dir: &Path, text: &str) -> (i32, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, text).expect("write config");
    let output = Command::new(ordobridge_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout),
    )
}

/// Binds `adt-in` and the HTTP server on loopback port 0, for a test whose configuration
/// needs the HTTP address (the simulator pushing back to the daemon); returns the listeners
/// and the MLLP and HTTP addresses.
pub async fn bind_listeners() -> (ordobridge::engine::BoundListeners, SocketAddr, SocketAddr) {
    let mllp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind mllp");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind http");
    let (mllp_addr, http_addr) = (
        mllp.local_addr().expect("addr"),
        http.local_addr().expect("addr"),
    );
    let mut listeners = ordobridge::engine::BoundListeners::default();
    listeners.mllp.insert("adt-in".to_string(), mllp);
    listeners.http = Some(http);
    (listeners, mllp_addr, http_addr)
}

/// Starts the engine on freshly bound listeners ([`bind_listeners`]); the addresses are
/// `engine.addr("adt-in")` and `engine.addr("http")`.
pub async fn start_engine(config: ordobridge::config::Config) -> InProcess {
    let (listeners, _, _) = bind_listeners().await;
    InProcess::start(config, listeners).await
}

/// Sends `message` over MLLP to `addr` and returns the ACK as text.
pub async fn send_adt(addr: SocketAddr, message: &[u8]) -> String {
    use ordobridge::mllp::client::{ClientSettings, MllpClient};
    let mut client = MllpClient::connect(addr, ClientSettings::default())
        .await
        .expect("connect");
    let ack = client.send(message, PATIENCE).await.expect("ack");
    String::from_utf8_lossy(&ack).into_owned()
}

/// An HTTP client that does not follow redirects, to see the launch's 302.
pub fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// `GET http://HTTP/launch/scan?QUERY` until it answers 302 and returns its `Location`: the
/// census is fed just behind the ACK, so the launch answers 404 until the patient is known.
/// Any other answer, or a 404 after [`PATIENCE`], fails the test.
pub async fn launch_until_redirect(http: SocketAddr, query: &str) -> String {
    let client = no_redirect_client();
    let launch = format!("http://{http}/launch/scan?{query}");
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let response = client.get(&launch).send().await.expect("launch");
        let status = response.status();
        if status == 404 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(
            status,
            302,
            "the launch answered {:?}",
            response.text().await
        );
        return response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .expect("location")
            .to_string();
    }
}
