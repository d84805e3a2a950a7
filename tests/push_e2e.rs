//! Issue 4 end to end over real sockets: ADT in over MLLP, launch, the simulator's "Import to
//! DPI" pushes the bundle to the daemon's FHIR endpoint, which journals it, maps it through
//! the shipped ORM^O01 mapping with the census, and delivers it from the durable queue to an
//! MLLP peer (the EHR) that answers AA. Also: a bad body gets a 400 OperationOutcome naming the
//! JSON path and is journaled as rejected; a wrong token gets 401.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use ordobridge::config::Config;
use ordobridge::engine::BoundListeners;
use ordobridge::hl7::Message;
use ordobridge::mllp::client::{ClientSettings, MllpClient};
use ordobridge::mllp::{Inbound, MllpCodec};
use ordobridge::store::{JournalFilter, Store, StoreOptions};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

const PATIENCE: Duration = Duration::from_secs(20);

/// A minimal EHR: answers AA to every message and keeps them.
async fn ehr_peer() -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
    let addr = listener.local_addr().expect("addr");
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, MllpCodec::new(1 << 20));
                while let Some(Ok(Inbound::Frame(payload))) = framed.next().await {
                    let control_id = Message::parse(&payload)
                        .map(|m| m.header().control_id)
                        .unwrap_or_default();
                    sink.lock().expect("lock").push(payload.to_vec());
                    let ack = format!(
                        "MSH|^~\\&|DPI|CH|OB|POSOS|20260105||ACK^O01^ACK|A{control_id}|P|2.5\rMSA|AA|{control_id}\r"
                    );
                    if framed.send(ack.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adt_launch_import_push_and_the_orm_reaches_the_ehr() {
    let (peer, received) = ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mllp = TcpListener::bind("127.0.0.1:0").await.expect("bind mllp");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let (mllp_addr, http_addr) = (mllp.local_addr().expect("a"), http.local_addr().expect("a"));
    let text = format!(
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
[launch]
mapping = "{root}/mappings/scan-token.toml"
[posos]
mode = "simulator"
[posos.simulator]
key_file = "{root}/samples/simulator/service-account.json"
public_key_file = "{root}/samples/simulator/public-key.pem"
push_url = "http://{http_addr}/fhir"
push_token = "s3cret"
[outbound.ehr-orders]
protocol = "mllp"
address = "{peer}"
retry_initial = "20ms"
[push]
token = "s3cret"
# The sample bundle's patient is not in the census: map it at once (holds: push_hold.rs).
hold_unknown_for = "0s"
[[push.route]]
mapping = "{root}/mappings/orm-o01.toml"
destination = "ehr-orders"
"#,
        root = root.display()
    );
    let config = Config::from_str_with_env(&text, &dir.path().join("ob.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut listeners = BoundListeners::default();
    listeners.mllp.insert("adt-in".to_string(), mllp);
    listeners.http = Some(http);
    let engine = common::InProcess::start(config, listeners).await;

    // ADT in.
    let adt = std::fs::read(root.join("samples/adt/02-a01-admit.hl7")).expect("sample");
    let mut client = MllpClient::connect(mllp_addr, ClientSettings::default())
        .await
        .expect("c");
    let ack = client.send(&adt, PATIENCE).await.expect("ack");
    assert!(String::from_utf8_lossy(&ack).contains("MSA|AA|SYN0002"));

    // Launch (once the census has it), then "Import to DPI" as the page's button does.
    let web = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let launch = format!(
        "http://{http_addr}/launch/scan?ipp=100001&rpps=10003456789&first_name=Pierre&last_name=Leblanc"
    );
    let deadline = Instant::now() + PATIENCE;
    let location = loop {
        let response = web.get(&launch).send().await.expect("launch");
        if response.status() == 302 {
            break response.headers()["location"]
                .to_str()
                .expect("location")
                .to_string();
        }
        assert!(Instant::now() < deadline, "launch: {}", response.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let import = web
        .post(format!("{location}/import"))
        .send()
        .await
        .expect("import");
    assert!(
        import.status().is_success(),
        "import: {:?}",
        import.text().await
    );

    // The ORM reaches the EHR, built from the census (names, NDA) and the bundle.
    let deadline = Instant::now() + PATIENCE;
    let orm = loop {
        if let Some(first) = received.lock().expect("lock").first().cloned() {
            break first;
        }
        assert!(Instant::now() < deadline, "no ORM delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let orm = Message::parse(&orm).expect("the ORM parses");
    assert_eq!(orm.header().message_type, "ORM^O01^ORM_O01");
    assert_eq!(
        orm.query("PID-3.1").expect("path").as_deref(),
        Some("100001")
    );
    assert_eq!(
        orm.query("PID-5.1").expect("path").as_deref(),
        Some("MARTIN")
    );
    assert_eq!(
        orm.query("PV1-19").expect("path").as_deref(),
        Some("900001")
    );
    assert!(orm.segment("RXO", 1).is_some());

    // A bad body: 400, OperationOutcome with the JSON path; journaled as rejected.
    let bad = web
        .post(format!("http://{http_addr}/fhir"))
        .bearer_auth("s3cret")
        .body(r#"{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"MedicationRequest","dosageInstruction":[{"timing":{"repeat":{"frequency":"deux"}}}]}}]}"#)
        .send()
        .await
        .expect("push");
    assert_eq!(bad.status(), 400);
    let outcome: serde_json::Value = bad.json().await.expect("json");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let expression = outcome["issue"][0]["expression"][0]
        .as_str()
        .unwrap_or_default();
    assert!(expression.starts_with("entry[0].resource"), "{outcome}");
    // A wrong token: 401.
    let unauthorized = web
        .post(format!("http://{http_addr}/fhir"))
        .bearer_auth("wrong")
        .body("{}")
        .send()
        .await
        .expect("push");
    assert_eq!(unauthorized.status(), 401);

    // The same bundle pushed twice (Posos did not see the first answer): queued once.
    let bundle = std::fs::read(root.join("samples/posos/two-drugs-prednisone-taper.json"))
        .expect("sample bundle");
    for _ in 0..2 {
        let again = web
            .post(format!("http://{http_addr}/fhir/Bundle"))
            .bearer_auth("s3cret")
            .body(bundle.clone())
            .send()
            .await
            .expect("push");
        assert_eq!(again.status(), 200, "{:?}", again.text().await);
    }

    engine.stop().await;
    let db = rusqlite::Connection::open(dir.path().join("data/ob.db")).expect("db");
    let queued: i64 = db
        .query_row("SELECT count(*) FROM outbound", [], |row| row.get(0))
        .expect("count");
    assert_eq!(
        queued, 2,
        "the import and the sample bundle, each queued once"
    );
    let store = Store::open(&dir.path().join("data/ob.db"), StoreOptions::default()).expect("s");
    let pushes = store
        .list_journal(&JournalFilter {
            control_id: None,
            channel: Some("posos-push".to_string()),
            limit: 0,
        })
        .expect("journal");
    let statuses: Vec<&str> = pushes.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(
        statuses,
        vec!["processed", "rejected", "processed"],
        "{pushes:?}"
    );
}
