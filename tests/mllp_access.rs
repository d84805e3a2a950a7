//! `[inbound.NAME] allow` and `max_connections_per_peer` through the real engine: a refused
//! peer is closed unread and counted in `/status` and `/metrics`.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_peer_is_closed_and_counted_in_status_and_metrics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = r#"
[store]
path = "data/ob.db"
[inbound.adt-in]
protocol = "mllp"
bind = "127.0.0.1:0"
allow = ["10.0.0.0/8"]
max_connections_per_peer = 4
[census]
ipp_authority = "CH_EXEMPLE"
[http]
bind = "127.0.0.1:0"
"#;
    let engine = common::start_engine(common::config(dir.path(), text)).await;
    let mut conn = tokio::net::TcpStream::connect(engine.addr("adt-in"))
        .await
        .expect("connect");
    let message =
        b"\x0BMSH|^~\\&|DPI|CH|OB|POSOS|2026||ADT^A01|R1|P|2.5\rPID|1||1^^^CH_EXEMPLE^PI\r\x1C\x0D";
    let _ = conn.write_all(message).await;
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(PATIENCE, conn.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "no answer, the connection is closed: {read:?}"
    );

    let http = engine.addr("http");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status: serde_json::Value = reqwest::get(format!("http://{http}/status"))
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        if status["channels"]["adt-in"]["refused_peers"] == 1 {
            assert_eq!(status["channels"]["adt-in"]["frames"], 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refusal not in /status: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = common::metrics_text(http).await.expect("metrics");
    assert!(
        metrics.contains("ordobridge_mllp_refused_peers_total{channel=\"adt-in\"} 1"),
        "{metrics}"
    );
    engine.stop().await;
}
