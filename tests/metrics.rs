//! Issue 10, metrics: `/metrics` is valid OpenMetrics as a real parser reads it (the Python
//! `prometheus_client` OpenMetrics parser, in the tests' venv), and carries the latency
//! histograms (ACK per channel, store commit, delivery per destination, launch) beside the
//! counters and gauges, after real traffic: ADT over MLLP, a launch, a push delivered to an EHR.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

const TOKEN: &str = "m3trics-T0ken-1f2e3d4c5b6a79880a1b2c3d";
const BUNDLE: &str = "samples/posos/two-drugs-prednisone-taper.json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_openmetrics_and_carry_the_latency_histograms() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("dir");
    let text = common::base_toml()
        + &common::simulator_toml("")
        + &common::push_to_ehr_toml(
            peer,
            &format!("token = \"{TOKEN}\"\nhold_unknown_for = \"0s\""),
        );
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    let http = engine.addr("http");
    let ack = common::send_adt(engine.addr("adt-in"), &common::sample(common::A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA|"), "{ack}");
    common::launch_until_redirect(http, common::LAUNCH_QUERY).await;
    let pushed = reqwest::Client::new()
        .post(format!("http://{http}/fhir"))
        .bearer_auth(TOKEN)
        .body(common::sample(BUNDLE))
        .send()
        .await
        .expect("push");
    assert_eq!(pushed.status(), 200);
    common::first_received(&received).await;

    // Delivery is recorded as the EHR answers: wait until the histogram has it.
    let exposition = common::wait_for("the delivery histogram", || async move {
        let body = common::metrics_text(http).await?;
        body.contains("ordobridge_delivery_latency_seconds_count{destination=\"ehr-orders\"} 1")
            .then_some(body)
    })
    .await;
    engine.stop().await;

    let mut parser = Command::new(common::python_peers())
        .arg(common::repo_root().join("tests/peers/check_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the parser");
    parser
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write");
    let output = parser.wait_with_output().expect("parser");
    let families = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{exposition}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "ordobridge_ack_latency_seconds histogram",
        "ordobridge_store_commit_seconds histogram",
        "ordobridge_delivery_latency_seconds histogram",
        "ordobridge_launch_seconds histogram",
        "ordobridge_posos_request_seconds histogram",
        "ordobridge_mllp_frames counter",
        "ordobridge_queue_pending gauge",
        "ordobridge_store_file_bytes gauge",
        "ordobridge_node_info gauge",
        "ordobridge_census_lag_messages gauge",
    ] {
        assert!(
            families.lines().any(|l| l.starts_with(expected)),
            "`{expected}` in:\n{families}"
        );
    }
    assert!(
        exposition.contains("ordobridge_ack_latency_seconds_count{channel=\"adt-in\"}"),
        "{exposition}"
    );
    assert!(
        exposition.contains("ordobridge_node_info{node=\""),
        "the node's name is on /metrics: {exposition}"
    );
    assert!(
        exposition.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF"
    );
}

/// Connections and ADT per connection of the flood below.
const FLOOD_CONNECTIONS: usize = 8;
const FLOOD_PER_CONNECTION: usize = 50;

/// The gauge `ordobridge_census_lag_messages` of `/metrics`, if it is there.
async fn census_lag(http: std::net::SocketAddr) -> Option<u64> {
    let body = common::metrics_text(http).await?;
    body.lines()
        .find_map(|line| line.strip_prefix("ordobridge_census_lag_messages "))
        .and_then(|value| value.trim().parse().ok())
}

/// Issue 15: while ADT flood in, census updates ride in the journal inserts' transactions and
/// the census may lag (`ordobridge_census_lag_messages`); once the flood stops it catches up:
/// the gauge falls back to 0 and every patient of the flood is in the census.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn census_lag_gauge_falls_to_zero_after_a_flood() {
    use ordobridge::mllp::client::{ClientSettings, MllpClient};

    let dir = tempfile::tempdir().expect("dir");
    let engine = common::start_engine(common::config(dir.path(), &common::base_toml())).await;
    let http = engine.addr("http");
    assert_eq!(census_lag(http).await, Some(0), "nothing journaled yet");

    let sample = String::from_utf8(common::sample(common::A01_SAMPLE)).expect("utf-8");
    let adt = engine.addr("adt-in");
    let mut senders = Vec::new();
    for connection in 0..FLOOD_CONNECTIONS {
        let sample = sample.clone();
        senders.push(tokio::spawn(async move {
            let mut client = MllpClient::connect(adt, ClientSettings::default())
                .await
                .expect("connect");
            for n in 0..FLOOD_PER_CONNECTION {
                // A patient, a stay and a control id of its own for every message.
                let id = 200_000 + connection * FLOOD_PER_CONNECTION + n;
                let message = sample
                    .replace("SYN0002", &format!("FLOOD{id}"))
                    .replace("100001^", &format!("{id}^"))
                    .replace("900001^", &format!("9{id}^"))
                    .replace("MVT0001^", &format!("MVT{id}^"));
                let ack = client
                    .send(message.as_bytes(), common::PATIENCE)
                    .await
                    .expect("ack");
                let ack = String::from_utf8_lossy(&ack);
                assert!(ack.contains("MSA|AA|"), "{ack}");
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender");
    }

    common::wait_for("the census lag back to 0", || async move {
        (census_lag(http).await == Some(0)).then_some(())
    })
    .await;
    engine.stop().await;
    let db = rusqlite::Connection::open(dir.path().join("data/ob.db")).expect("open");
    let patients: i64 = db
        .query_row(
            "SELECT count(*) FROM census_patients WHERE ipp >= '200000'",
            [],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(
        usize::try_from(patients).expect("count"),
        FLOOD_CONNECTIONS * FLOOD_PER_CONNECTION
    );
}

/// Census anomalies are counted on `/metrics` by inbound channel and kind (the log has one
/// line per kind per chunk, not one per message): the same admission sent again under new
/// control ids is a movement seen twice. The counter is process-wide; no other test of this
/// file sends a movement twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn census_anomalies_are_counted_by_channel_and_kind() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = common::start_engine(common::config(dir.path(), &common::base_toml())).await;
    let http = engine.addr("http");
    let sample = String::from_utf8(common::sample(common::A01_SAMPLE)).expect("utf-8");
    for control_id in ["SYN0002", "RESENT1", "RESENT2"] {
        let message = sample.replace("SYN0002", control_id);
        let ack = common::send_adt(engine.addr("adt-in"), message.as_bytes()).await;
        assert!(ack.contains("MSA|AA|"), "{ack}");
    }
    common::wait_for("the two resent admissions counted", || async move {
        let body = common::metrics_text(http).await?;
        body.contains(
            "ordobridge_census_anomalies_total{channel=\"adt-in\",kind=\"duplicate_movement\"} 2",
        )
        .then_some(())
    })
    .await;
    engine.stop().await;
}

/// With `[store] intake_log` (the default), `ordobridge_intake_log_backlog_messages` counts
/// messages ACKed and not yet copied into the journal; it falls to 0 once they are, and the
/// census applies them behind (the gauge is absent with `intake_log = false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_log_backlog_gauge_falls_to_zero_once_copied() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = common::start_engine(common::config(dir.path(), &common::base_toml())).await;
    let http = engine.addr("http");
    let ack = common::send_adt(engine.addr("adt-in"), &common::sample(common::A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA|"), "{ack}");
    common::wait_for(
        "the backlog copied and the census caught up",
        || async move {
            let body = common::metrics_text(http).await?;
            (body.contains("\nordobridge_intake_log_backlog_messages 0\n")
                && body.contains("\nordobridge_census_lag_messages 0\n")
                && census_lag(http).await == Some(0))
            .then_some(())
        },
    )
    .await;
    engine.stop().await;

    // Without the log, no gauge.
    let dir = tempfile::tempdir().expect("dir");
    let text = common::base_toml().replacen(
        "path = \"data/ob.db\"\n",
        "path = \"data/ob.db\"\nintake_log = false\n",
        1,
    );
    assert!(text.contains("intake_log = false"), "{text}");
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    let body = common::metrics_text(engine.addr("http"))
        .await
        .expect("metrics");
    assert!(
        !body.contains("ordobridge_intake_log_backlog_messages"),
        "{body}"
    );
    engine.stop().await;
}
