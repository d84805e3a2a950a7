//! Issue 3 end to end over real sockets: an ADT A01 over MLLP feeds the census, then the EHR
//! button's `GET /launch/scan?ipp=…&rpps=…` answers 302 to the built-in Posos simulator, whose
//! Scan & Go page names the patient and the user: the daemon authenticated with a real signed
//! assertion, got an identity token and sent the scan-token request the simulator accepted.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use ordobridge::config::Config;
use ordobridge::engine::BoundListeners;
use ordobridge::mllp::client::{ClientSettings, MllpClient};
use tokio::net::TcpListener;

const PATIENCE: Duration = Duration::from_secs(20);

fn config(dir: &Path) -> Config {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
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
oauth_client_id = "ordobridge-simulator"
[posos.simulator]
key_file = "{root}/samples/simulator/service-account.json"
public_key_file = "{root}/samples/simulator/public-key.pem"
"#,
        root = root.display()
    );
    Config::from_str_with_env(&text, &dir.join("ob.toml"), &|_| None).expect("valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adt_then_launch_redirects_to_a_simulator_page_naming_the_patient() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let mllp = TcpListener::bind("127.0.0.1:0").await.expect("bind mllp");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let (mllp_addr, http_addr) = (
        mllp.local_addr().expect("addr"),
        http.local_addr().expect("addr"),
    );
    let mut listeners = BoundListeners::default();
    listeners.mllp.insert("adt-in".to_string(), mllp);
    listeners.http = Some(http);
    let engine = common::InProcess::start(config, listeners).await;

    let adt =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/adt/02-a01-admit.hl7"))
            .expect("sample");
    let mut client = MllpClient::connect(mllp_addr, ClientSettings::default())
        .await
        .expect("connect");
    let ack = client.send(&adt, PATIENCE).await.expect("ack");
    assert!(String::from_utf8_lossy(&ack).contains("MSA|AA|SYN0002"));

    let http_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let launch = format!(
        "http://{http_addr}/launch/scan?ipp=100001&rpps=10003456789&first_name=Pierre&last_name=Leblanc"
    );
    // The census is fed just behind the ACK: poll until the patient is known.
    let deadline = Instant::now() + PATIENCE;
    let response = loop {
        let response = http_client.get(&launch).send().await.expect("launch");
        if response.status() != 404 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(response.status(), 302, "{:?}", response.text().await);
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("location")
        .to_string();
    assert!(
        location.starts_with(&format!("http://{http_addr}/simulator/scan/")),
        "{location}"
    );
    let page = http_client
        .get(&location)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("100001"),
        "the page names the patient (patientId = IPP): {page}"
    );
    assert!(
        page.contains("Leblanc") || page.contains("LEBLANC"),
        "and the user: {page}"
    );
    assert!(page.contains("10003456789"), "and the user's RPPS: {page}");

    // An unknown patient gets a clear page, not a launch.
    let unknown = http_client
        .get(format!(
            "http://{http_addr}/launch/scan?ipp=999999&rpps=10003456789&first_name=A&last_name=B"
        ))
        .send()
        .await
        .expect("launch");
    assert_eq!(unknown.status(), 404);
    assert!(unknown.headers().contains_key("x-correlation-id"));

    engine.stop().await;
}
