//! End to end push → ACKed delivery: the engine in-process (real SQLite file in a temp dir,
//! HTTP push endpoint, the shipped ORM^O01 mapping, one MLLP destination), a local MLLP peer
//! that answers AA to every message, and C concurrent HTTP clients pushing N distinct bundles
//! (the four-step prednisone sample with its bundle and RequestGroup ids varied, so the journal
//! does not take them for duplicates). Measured from the first push to the peer's ACK of the
//! last distinct message (with `--pushes-only`, to the last push's HTTP 200).
//!
//! `cargo bench --bench push_e2e -- [N] [C …] [--pushes-only]` (defaults: 5000, then C = 16 and
//! C = 1). `--pushes-only` measures the pushes alone, up to the last push's HTTP 200: the
//! destination is a port nothing listens on, so its worker sends nothing and only retries its
//! connection now and then (what delivering the previous bundle costs the next push is the
//! difference).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordobridge::config::Config;
use ordobridge::engine::BoundListeners;
use tokio::net::TcpListener;
use tokio::sync::Notify;

#[path = "../tests/common/mllp_peer.rs"]
mod mllp_peer;

/// What the peer has seen: distinct control ids, frames (resends included), and a bell rung
/// on every new one.
#[derive(Default)]
struct Seen {
    ids: Mutex<HashSet<String>>,
    frames: AtomicUsize,
    bell: Notify,
}

/// The EHR: answers AA to every message after noting its MSH-10.
async fn peer(seen: Arc<Seen>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    mllp_peer::serve(
        listener,
        None,
        mllp_peer::accept_all(),
        Arc::new(move |control_id, _| {
            seen.frames.fetch_add(1, Ordering::Relaxed);
            seen.ids.lock().unwrap().insert(control_id.to_owned());
            seen.bell.notify_one();
        }),
    );
    addr
}

/// The destination of `--pushes-only`: TCP port 1 (`tcpmux`), which nothing listens on here and
/// which no socket takes as its own ephemeral port, so every connection attempt is refused.
const NOWHERE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

/// One run: a fresh engine and store, N bundles from C clients; returns bundles/s (pushed, or
/// pushed and ACKed) and the frames the peer saw.
async fn run(n: usize, clients: usize, pushes_only: bool) -> (f64, usize) {
    let seen = Arc::new(Seen::default());
    let peer = if pushes_only {
        NOWHERE
    } else {
        peer(seen.clone()).await
    };
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let text = format!(
        r#"
[store]
path = "data/ob.db"
[http]
bind = "127.0.0.1:0"
[outbound.ehr-orders]
protocol = "mllp"
address = "{peer}"
[push]
token = "s3cret-5b8e1d0c4a7f2e9b3d6c1a8f0e4b7d2c"
# The sample's patient is not in the census: map at once, do not hold (the default holds).
hold_unknown_for = "0s"
[[push.route]]
mapping = "{root}/mappings/orm-o01.toml"
destination = "ehr-orders"
"#,
        root = root.display()
    );
    let config = Config::from_str_with_env(&text, &dir.path().join("ob.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let listeners = BoundListeners {
        http: Some(http),
        ..BoundListeners::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let engine = tokio::spawn(ordobridge::engine::run(
        config,
        listeners,
        shutdown.clone(),
        move |_| {
            let _ = ready_tx.send(());
        },
    ));
    ready_rx.await.expect("engine ready");

    let sample =
        std::fs::read_to_string(root.join("samples/posos/two-drugs-prednisone-taper.json"))
            .unwrap();
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..n)
            .map(|i| {
                sample
                    .replace("\"rg-0001\"", &format!("\"rg-{i:06}\""))
                    .replace("\"b-0001\"", &format!("\"b-{i:06}\""))
            })
            .collect(),
    );
    let web = reqwest::Client::new();
    let url = format!("http://{http_addr}/fhir");
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (web, url, bodies, next) = (web.clone(), url.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let response = web
                    .post(&url)
                    .bearer_auth("s3cret-5b8e1d0c4a7f2e9b3d6c1a8f0e4b7d2c")
                    .header("content-type", "application/fhir+json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("push");
                assert_eq!(response.status(), 200, "push {i}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let pushed = start.elapsed();
    if pushes_only {
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), engine).await;
        return (n as f64 / pushed.as_secs_f64(), 0);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let bell = seen.bell.notified();
        if seen.ids.lock().unwrap().len() >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every message was ACKed in time: {} of {n} distinct control ids after {} frames",
            seen.ids.lock().unwrap().len(),
            seen.frames.load(Ordering::Relaxed)
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), bell).await;
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), engine).await;
    eprintln!(
        "  pushes answered after {:.2} s, last ACK after {:.2} s",
        pushed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    (
        n as f64 / elapsed.as_secs_f64(),
        seen.frames.load(Ordering::Relaxed),
    )
}

fn main() {
    let pushes_only = std::env::args().any(|a| a == "--pushes-only");
    // cargo adds `--bench`; any other flag is a typo that would silently measure the wrong thing.
    if let Some(unknown) = std::env::args()
        .skip(1)
        .find(|a| a.starts_with("--") && a != "--pushes-only" && a != "--bench")
    {
        panic!("unknown option `{unknown}`: the options are N, C … and `--pushes-only`");
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(5000);
    let concurrency: Vec<usize> = match args.get(1..) {
        Some(rest) if !rest.is_empty() => rest.to_vec(),
        _ => vec![16, 1],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for c in concurrency {
        let (rate, frames) = runtime.block_on(run(n, c, pushes_only));
        if pushes_only {
            println!("push_e2e N={n} C={c}: {rate:.0} bundles/s pushed (nothing delivered)");
        } else {
            println!(
                "push_e2e N={n} C={c}: {rate:.0} bundles/s pushed and ACKed ({frames} frames)"
            );
        }
    }
}
