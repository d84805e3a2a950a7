//! Issue 10, reload: a new configuration applied to a running engine (what SIGHUP does).
//!
//! What it protects: a broken mapping or configuration changes nothing (the old mapping keeps
//! mapping, the reload says why); a fixed mapping is applied without dropping an open MLLP
//! connection; an unchanged channel keeps its connection and an unchanged destination its
//! queue; a changed destination is restarted on the same queue (order kept); an added channel
//! starts and a removed one stops; and the binary does the same on a real SIGHUP, counting
//! the refused reloads in `/metrics`.

mod common;

use std::path::Path;
use std::time::Duration;

use ordobridge::engine::ReloadError;
use ordobridge::hl7::Message;
use ordobridge::mllp::client::{ClientSettings, MllpClient};

const TOKEN: &str = "s3cret-5b8e1d0c4a7f2e9b3d6c1a8f0e4b7d2c";

/// The configuration of these tests: [`common::base_toml`] (`adt-in`, the census, the HTTP
/// server) and the push routed through the mapping `mapping` to the EHR at `peer`; `extra`
/// appended.
fn config_text(peer: std::net::SocketAddr, mapping: &Path, extra: &str) -> String {
    common::base_toml()
        + &format!(
            r#"
[outbound.ehr-orders]
protocol = "mllp"
address = "{peer}"
retry_initial = "20ms"
[push]
token = "{TOKEN}"
hold_unknown_for = "0s"
[[push.route]]
mapping = "{mapping}"
destination = "ehr-orders"
{extra}
"#,
            mapping = mapping.display()
        )
}

/// The shipped ORM^O01 mapping with MSH-3 (the sending application) set to `sender`.
fn orm_mapping(dir: &Path, sender: &str) -> std::path::PathBuf {
    let shipped = String::from_utf8(common::sample("mappings/orm-o01.toml")).expect("utf-8");
    assert!(shipped.contains(r#""MSH-3" = "'ORDOBRIDGE'""#));
    let text = shipped.replace(
        r#""MSH-3" = "'ORDOBRIDGE'""#,
        &format!(r#""MSH-3" = "'{sender}'""#),
    );
    let path = dir.join("orm.toml");
    std::fs::write(&path, text).expect("write mapping");
    path
}

/// Pushes the sample bundle with id `id` (the push ignores a bundle it already has).
async fn push_bundle(http: std::net::SocketAddr, id: &str) {
    let mut bundle: serde_json::Value = serde_json::from_slice(&common::sample(
        "samples/posos/two-drugs-prednisone-taper.json",
    ))
    .expect("json");
    bundle["id"] = serde_json::Value::String(id.to_string());
    let bundle = serde_json::to_vec(&bundle).expect("json");
    let response = reqwest::Client::new()
        .post(format!("http://{http}/fhir"))
        .bearer_auth(TOKEN)
        .body(bundle)
        .send()
        .await
        .expect("push");
    assert!(
        response.status().is_success(),
        "push: {}",
        response.text().await.unwrap_or_default()
    );
}

/// Waits for the `n`-th message (1-based) at the EHR and returns its MSH-3.
async fn nth_sender(received: &common::Received, n: usize) -> String {
    let message = common::wait_for(&format!("message {n} at the EHR"), || {
        let message = received.lock().expect("lock").get(n - 1).cloned();
        async move { message }
    })
    .await;
    let message = Message::parse(&message).expect("the ORM parses");
    message
        .query("MSH-3")
        .expect("path")
        .unwrap_or_default()
        .to_string()
}

async fn ack_on(client: &mut MllpClient, control_id: &str) -> String {
    let adt = String::from_utf8(common::sample(common::A01_SAMPLE))
        .expect("utf-8")
        .replace("SYN0002", control_id);
    let ack = client
        .send(adt.as_bytes(), common::PATIENCE)
        .await
        .expect("an ACK on the connection opened before the reload");
    String::from_utf8_lossy(&ack).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_mapping_keeps_the_old_one_and_a_fixed_one_applies_without_dropping_connections() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mapping = orm_mapping(dir.path(), "BEFORE");
    let text = config_text(peer, &mapping, "");
    let config_file = dir.path().join("ob.toml");
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    let (mllp, http) = (engine.addr("adt-in"), engine.addr("http"));
    let mut connection = MllpClient::connect(mllp, ClientSettings::default())
        .await
        .expect("connect");
    assert!(
        ack_on(&mut connection, "RLD0001")
            .await
            .contains("MSA|AA|RLD0001")
    );
    push_bundle(http, "reload-1").await;
    assert_eq!(nth_sender(&received, 1).await, "BEFORE");

    // A broken mapping: refused with the file and the place; nothing changes.
    std::fs::write(
        &mapping,
        "[message]\ntype = \"ORM^O01\"\n[[segment]\nid = \"MSH\"\n",
    )
    .expect("break the mapping");
    let refused = engine.reload.reload_file(&config_file).await;
    let Err(ReloadError::Config(errors)) = refused else {
        panic!("a broken mapping must be refused, got {refused:?}");
    };
    let message = errors.to_string();
    assert!(message.contains("orm.toml"), "{message}");
    assert!(message.contains("push.route"), "{message}");
    // The old mapping still maps; the connection still answers.
    push_bundle(http, "reload-2").await;
    assert_eq!(nth_sender(&received, 2).await, "BEFORE");
    assert!(
        ack_on(&mut connection, "RLD0002")
            .await
            .contains("MSA|AA|RLD0002")
    );

    // Fixed: applied; the channel and the destination did not change, so they keep running.
    orm_mapping(dir.path(), "AFTER");
    let summary = engine
        .reload
        .reload_file(&config_file)
        .await
        .expect("a valid configuration applies");
    assert_eq!(
        summary.unchanged,
        vec![
            "inbound/adt-in".to_string(),
            "outbound/ehr-orders".to_string()
        ],
        "{summary}"
    );
    assert!(
        summary.restarted.is_empty() && summary.started.is_empty(),
        "{summary}"
    );
    push_bundle(http, "reload-3").await;
    assert_eq!(nth_sender(&received, 3).await, "AFTER");
    assert!(
        ack_on(&mut connection, "RLD0003")
            .await
            .contains("MSA|AA|RLD0003")
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_destinations_start_restart_and_stop_with_the_configuration() {
    let (first_peer, first_received) = common::ehr_peer().await;
    let (second_peer, second_received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mapping = orm_mapping(dir.path(), "ORDOBRIDGE");
    let engine = common::start_engine(common::config(
        dir.path(),
        &config_text(first_peer, &mapping, ""),
    ))
    .await;
    let (mllp, http) = (engine.addr("adt-in"), engine.addr("http"));
    push_bundle(http, "reload-4").await;
    nth_sender(&first_received, 1).await;

    // The destination moves to another EHR and a second channel is added on a port we chose.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let second_addr = spare.local_addr().expect("addr");
    drop(spare);
    let second_channel =
        format!("[inbound.adt-second]\nprotocol = \"mllp\"\nbind = \"{second_addr}\"\n");
    let moved = config_text(second_peer, &mapping, &second_channel);
    let summary = engine
        .reload
        .reload_config(common::config(dir.path(), &moved))
        .await
        .expect("applies");
    assert_eq!(
        summary.started,
        vec!["inbound/adt-second".to_string()],
        "{summary}"
    );
    assert_eq!(
        summary.restarted,
        vec!["outbound/ehr-orders".to_string()],
        "{summary}"
    );
    assert_eq!(
        summary.unchanged,
        vec!["inbound/adt-in".to_string()],
        "{summary}"
    );
    let ack = common::send_adt(second_addr, &common::sample(common::A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA|"), "{ack}");
    push_bundle(http, "reload-5").await;
    nth_sender(&second_received, 1).await;
    assert_eq!(first_received.lock().expect("lock").len(), 1);

    // Removed again: the new channel stops listening; the first one still answers.
    let summary = engine
        .reload
        .reload_config(common::config(
            dir.path(),
            &config_text(second_peer, &mapping, ""),
        ))
        .await
        .expect("applies");
    assert_eq!(
        summary.stopped,
        vec!["inbound/adt-second".to_string()],
        "{summary}"
    );
    common::wait_for("the removed channel to stop listening", || async move {
        tokio::net::TcpStream::connect(second_addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let ack = common::send_adt(mllp, &common::sample(common::A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA|"), "{ack}");

    // A channel whose address is taken: refused, and the running ones stay.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = format!(
        "[inbound.adt-busy]\nprotocol = \"mllp\"\nbind = \"{}\"\n",
        taken.local_addr().expect("addr")
    );
    let refused = engine
        .reload
        .reload_config(common::config(
            dir.path(),
            &config_text(second_peer, &mapping, &busy),
        ))
        .await;
    let Err(ReloadError::Apply(error)) = refused else {
        panic!("a busy address must be refused, got {refused:?}");
    };
    assert!(
        error
            .to_string()
            .contains("channel `adt-busy`: cannot listen on"),
        "{error}"
    );
    let ack = common::send_adt(mllp, &common::sample(common::A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA|"), "{ack}");
    engine.stop().await;
}

/// The binary: SIGHUP with a broken file is refused (logged, counted in `/metrics`), with a
/// valid one applied (logged with what changed).
#[test]
fn sighup_reloads_the_configuration_file_and_counts_refusals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let http_addr = http.local_addr().expect("addr");
    drop(http);
    let base = format!("[http]\nbind = \"{http_addr}\"\n");
    let config = common::write_config(dir.path(), &base);
    let mut daemon = common::Daemon::start(&config);
    let hup = |daemon: &common::Daemon| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &daemon.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    let wait_log = |daemon: &common::Daemon, what: &str, count: usize| {
        let deadline = std::time::Instant::now() + common::PATIENCE;
        loop {
            let log = daemon.log_text();
            if log.matches(what).count() >= count {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no `{what}` in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        text.replace("read_timeout = \"5s\"", "read_timeout = \"five\""),
    )
    .expect("break");
    hup(&daemon);
    let log = wait_log(&daemon, "configuration reload refused", 1);
    assert!(log.contains("inbound.adt-in.read_timeout"), "{log}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let metrics = runtime.block_on(async {
        reqwest::get(format!("http://{http_addr}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    });
    assert!(
        metrics.contains("ordobridge_config_reload_failures_total 1"),
        "{metrics}"
    );

    std::fs::write(
        &config,
        text.replace("read_timeout = \"5s\"", "read_timeout = \"7s\""),
    )
    .expect("fix");
    hup(&daemon);
    let log = wait_log(&daemon, "configuration reloaded", 1);
    assert!(log.contains("restarted: inbound/adt-in"), "{log}");
    // Still answering on the same port after its restart.
    let ack = runtime.block_on(common::send_adt(
        daemon.addr("adt-in"),
        &common::sample(common::A01_SAMPLE),
    ));
    assert!(ack.contains("MSA|AA|"), "{ack}");
    assert!(daemon.terminate().success());
}
