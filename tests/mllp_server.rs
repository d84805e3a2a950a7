//! The MLLP server over real loopback sockets on port 0, with an echo-style frame handler.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use ordobridge::mllp::{
    ClientSettings, FrameHandler, Inbound, MllpClient, MllpCodec, ServerSettings, ServerStats,
    cycle, run_load, serve,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything that should happen "now": a hang fails the test instead of
/// blocking it.
const PATIENCE: Duration = Duration::from_secs(10);

async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .expect("timed out waiting")
}

/// Answers `ACK:<payload>`; `none` gets no answer, `two` gets two; refused items get a NACK
/// naming what happened.
struct Echo;

impl FrameHandler for Echo {
    async fn handle(&self, _peer: SocketAddr, item: Inbound) -> Vec<Bytes> {
        match item {
            Inbound::Frame(p) if p.as_ref() == b"none" => vec![],
            Inbound::Frame(p) if p.as_ref() == b"two" => {
                vec![
                    Bytes::from_static(b"ACK:two#1"),
                    Bytes::from_static(b"ACK:two#2"),
                ]
            }
            Inbound::Frame(p) => vec![[b"ACK:".as_slice(), &p].concat().into()],
            Inbound::Oversized { head, len } => {
                let head = String::from_utf8_lossy(&head[..head.len().min(8)]).into_owned();
                vec![format!("NACK:oversized:{len}:{head}").into()]
            }
            Inbound::Interrupted { head } => {
                vec![[b"NACK:interrupted:".as_slice(), &head].concat().into()]
            }
        }
    }
}

struct Running {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    shutdown: CancellationToken,
    task: JoinHandle<io::Result<()>>,
}

async fn start<H: FrameHandler>(settings: ServerSettings, handler: Arc<H>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ServerStats::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        settings,
        handler,
        Arc::clone(&stats),
        shutdown.clone(),
    ));
    Running {
        addr,
        stats,
        shutdown,
        task,
    }
}

fn settings() -> ServerSettings {
    ServerSettings {
        max_connections: 16,
        max_frame_bytes: 64 * 1024,
        read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..ServerSettings::default()
    }
}

async fn raw(addr: SocketAddr) -> Framed<TcpStream, MllpCodec> {
    Framed::new(
        TcpStream::connect(addr).await.unwrap(),
        MllpCodec::default(),
    )
}

async fn write(conn: &mut Framed<TcpStream, MllpCodec>, bytes: &[u8]) {
    conn.get_mut().write_all(bytes).await.unwrap();
}

async fn answer(conn: &mut Framed<TcpStream, MllpCodec>) -> String {
    match within(conn.next()).await {
        Some(Ok(Inbound::Frame(p))) => String::from_utf8(p.to_vec()).unwrap(),
        other => panic!("expected an answer frame, got {other:?}"),
    }
}

/// Waits until the server closes the connection (EOF or reset).
async fn closed(conn: &mut Framed<TcpStream, MllpCodec>) {
    let mut buf = [0u8; 64];
    loop {
        match within(conn.get_mut().read(&mut buf)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn ok_answers_in_order_on_one_connection() {
    let server = start(settings(), Arc::new(Echo)).await;
    let mut conn = raw(server.addr).await;
    // Pipelined, with garbage before, a missing trailer, no-answer and two-answer frames.
    write(
        &mut conn,
        b"\0\0\r\n\x0Bone\x1C\x0D\x0Bnone\x1C\x0D\x0Btwo\x1C\x0D\x0Bthree\x1C\x0Bfour\x1C\x0D",
    )
    .await;
    for expected in ["ACK:one", "ACK:two#1", "ACK:two#2", "ACK:three", "ACK:four"] {
        assert_eq!(answer(&mut conn).await, expected);
    }
    let stats = server.stats.snapshot();
    assert_eq!(stats.frames, 5);
    assert_eq!(stats.skipped_bytes, 4);
    assert_eq!(stats.missing_trailers, 1);
    assert_eq!(stats.connections_open, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_many_concurrent_connections() {
    let server = start(settings(), Arc::new(Echo)).await;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..12 {
        let addr = server.addr;
        clients.spawn(async move {
            let mut client = MllpClient::connect(addr, ClientSettings::default())
                .await
                .unwrap();
            for m in 0..20 {
                let payload = format!("MSH|{c}-{m}");
                let got = client.send(payload.as_bytes(), PATIENCE).await.unwrap();
                assert_eq!(got.as_ref(), format!("ACK:{payload}").as_bytes());
            }
        });
    }
    while let Some(done) = within(clients.join_next()).await {
        done.unwrap();
    }
    let stats = server.stats.snapshot();
    assert_eq!(stats.frames, 240);
    assert_eq!(stats.connections_total, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_load_tool_against_server() {
    let server = start(settings(), Arc::new(Echo)).await;
    let corpus = vec![
        Bytes::from_static(b"MSH|^~\\&|A\rMSA|AA|1"),
        Bytes::from_static(b"MSH|^~\\&|A\rMSA|AE|2"),
    ];
    let report = within(run_load(
        server.addr,
        cycle(corpus).unwrap(),
        4,
        200,
        PATIENCE,
    ))
    .await
    .unwrap();
    assert_eq!(report.sent, 200);
    assert_eq!(report.acked_ok, 100);
    assert_eq!(report.errors, 0);
    assert!(report.max >= report.p99 && report.p99 >= report.p50);
    assert!(
        report
            .to_string()
            .starts_with("mllp load: 200 messages over 4 connections")
    );
}

#[tokio::test]
async fn ok_max_connections_makes_the_next_peer_wait() {
    let server = start(
        ServerSettings {
            max_connections: 1,
            ..settings()
        },
        Arc::new(Echo),
    )
    .await;
    let mut first = raw(server.addr).await;
    write(&mut first, b"\x0Ba\x1C\x0D").await;
    assert_eq!(answer(&mut first).await, "ACK:a");

    // The kernel completes the handshake, but the server does not accept while full.
    let mut second = raw(server.addr).await;
    write(&mut second, b"\x0Bb\x1C\x0D").await;
    let early = tokio::time::timeout(Duration::from_millis(300), second.next()).await;
    assert!(
        early.is_err(),
        "second connection served while the first is open"
    );

    drop(first);
    assert_eq!(answer(&mut second).await, "ACK:b");
    let stats = server.stats.snapshot();
    assert_eq!(stats.connections_total, 2);
    assert!(stats.limit_waits >= 1);
}

#[tokio::test]
async fn ok_idle_timeout_closes_quietly() {
    let idle = Duration::from_millis(200);
    let server = start(
        ServerSettings {
            idle_timeout: idle,
            read_timeout: Duration::from_secs(60),
            ..settings()
        },
        Arc::new(Echo),
    )
    .await;
    let mut conn = raw(server.addr).await;
    write(&mut conn, b"\x0Bhello\x1C\x0D").await;
    assert_eq!(answer(&mut conn).await, "ACK:hello");
    let silent_since = Instant::now();
    closed(&mut conn).await;
    let waited = silent_since.elapsed();
    assert!(
        waited >= idle && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(server.stats.snapshot().timeouts, 1);
}

#[tokio::test]
async fn ok_mid_frame_timeout_closes_even_a_trickling_peer() {
    let read_timeout = Duration::from_millis(300);
    let server = start(
        ServerSettings {
            idle_timeout: Duration::from_secs(60),
            read_timeout,
            ..settings()
        },
        Arc::new(Echo),
    )
    .await;
    let (mut reader, mut writer) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let started = Instant::now();
    writer.write_all(b"\x0BMSH|").await.unwrap();
    // One byte every 50 ms: each read is quick, the frame never ends.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 64];
    match within(reader.read(&mut buf)).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("unexpected answer bytes {:?}", &buf[..n]),
    }
    let waited = started.elapsed();
    assert!(
        waited >= read_timeout && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(server.stats.snapshot().timeouts, 1);
    trickle.abort();
}

#[tokio::test]
async fn ok_oversized_frame_is_answered_and_connection_stays_usable() {
    let server = start(
        ServerSettings {
            max_frame_bytes: 64,
            ..settings()
        },
        Arc::new(Echo),
    )
    .await;
    let mut conn = raw(server.addr).await;
    let mut big = vec![0x0B];
    big.extend_from_slice(b"MSH|^~\\&|");
    big.resize(1 + 100_000, b'x');
    big.extend_from_slice(b"\x1C\x0D\x0Bsmall\x1C\x0D");
    write(&mut conn, &big).await;
    assert_eq!(answer(&mut conn).await, "NACK:oversized:100000:MSH|^~\\&");
    assert_eq!(answer(&mut conn).await, "ACK:small");
    assert_eq!(server.stats.snapshot().oversized, 1);
}

#[tokio::test]
async fn ok_interrupted_frame_is_answered() {
    let server = start(settings(), Arc::new(Echo)).await;
    let mut conn = raw(server.addr).await;
    write(&mut conn, b"\x0BMSH|part\x0BMSH|full\x1C\x0D").await;
    assert_eq!(answer(&mut conn).await, "NACK:interrupted:MSH|part");
    assert_eq!(answer(&mut conn).await, "ACK:MSH|full");
    assert_eq!(server.stats.snapshot().interrupted, 1);
}

#[tokio::test]
async fn ok_truncated_frame_at_eof_is_counted() {
    let server = start(settings(), Arc::new(Echo)).await;
    let mut conn = raw(server.addr).await;
    write(&mut conn, b"\x0BMSH|half").await;
    conn.get_mut().shutdown().await.unwrap();
    closed(&mut conn).await;
    assert_eq!(server.stats.snapshot().truncated, 1);
}

/// Holds every frame until the test releases it, and says when one has arrived.
struct Gate {
    entered: Notify,
    release: Notify,
}

impl FrameHandler for Gate {
    async fn handle(&self, peer: SocketAddr, item: Inbound) -> Vec<Bytes> {
        self.entered.notify_one();
        self.release.notified().await;
        Echo.handle(peer, item).await
    }
}

#[tokio::test]
async fn ok_shutdown_finishes_the_frame_in_flight() {
    let gate = Arc::new(Gate {
        entered: Notify::new(),
        release: Notify::new(),
    });
    let server = start(settings(), Arc::clone(&gate)).await;
    let mut busy = raw(server.addr).await;
    let mut idle = raw(server.addr).await;
    write(&mut busy, b"\x0Bin-flight\x1C\x0D").await;
    within(gate.entered.notified()).await;

    server.shutdown.cancel();
    // The idle connection closes at once; the busy one waits for its answer.
    closed(&mut idle).await;
    assert!(!server.task.is_finished());
    gate.release.notify_one();

    assert_eq!(answer(&mut busy).await, "ACK:in-flight");
    closed(&mut busy).await;
    within(server.task).await.unwrap().unwrap();
    assert_eq!(server.stats.snapshot().connections_open, 0);
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "listener still open"
    );
}

#[tokio::test]
async fn err_invalid_settings_are_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = serve(
        listener,
        ServerSettings {
            max_connections: 0,
            ..settings()
        },
        Arc::new(Echo),
        Arc::new(ServerStats::default()),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "mllp server: max_connections must be at least 1"
    );
}

#[tokio::test]
async fn err_peer_outside_the_allow_list_is_closed_unread() {
    let server = start(
        ServerSettings {
            allow: Some(ordobridge::http::AllowList::parse(&["10.0.0.0/8", "::1/128"]).unwrap()),
            ..settings()
        },
        Arc::new(Echo),
    )
    .await;
    let mut conn = raw(server.addr).await;
    // Whatever it sends is never answered: the server closes the connection.
    let _ = conn.get_mut().write_all(b"\x0Bhello\x1C\x0D").await;
    closed(&mut conn).await;
    let deadline = Instant::now() + PATIENCE;
    while server.stats.snapshot().refused_peers < 1 {
        assert!(Instant::now() < deadline, "refusal not counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = server.stats.snapshot();
    assert_eq!(stats.refused_peers, 1);
    assert_eq!(stats.frames, 0, "nothing was read");
    assert_eq!(stats.connections_total, 0);

    // A list holding 127.0.0.0/8 lets the same peer in.
    let server = start(
        ServerSettings {
            allow: Some(ordobridge::http::AllowList::parse(&["127.0.0.0/8"]).unwrap()),
            ..settings()
        },
        Arc::new(Echo),
    )
    .await;
    let mut conn = raw(server.addr).await;
    write(&mut conn, b"\x0Bhello\x1C\x0D").await;
    assert_eq!(answer(&mut conn).await, "ACK:hello");
    assert_eq!(server.stats.snapshot().refused_peers, 0);
}

#[tokio::test]
async fn err_connection_past_the_per_peer_cap_is_closed_while_the_first_work() {
    let server = start(
        ServerSettings {
            max_connections_per_peer: 2,
            ..settings()
        },
        Arc::new(Echo),
    )
    .await;
    let mut first = raw(server.addr).await;
    let mut second = raw(server.addr).await;
    write(&mut first, b"\x0Bone\x1C\x0D").await;
    assert_eq!(answer(&mut first).await, "ACK:one");
    write(&mut second, b"\x0Bsecond\x1C\x0D").await;
    assert_eq!(answer(&mut second).await, "ACK:second");

    let mut third = raw(server.addr).await;
    closed(&mut third).await;
    assert_eq!(server.stats.snapshot().refused_peers, 1);
    // The first two still work.
    write(&mut first, b"\x0Bagain\x1C\x0D").await;
    assert_eq!(answer(&mut first).await, "ACK:again");
    write(&mut second, b"\x0Bsecond-again\x1C\x0D").await;
    assert_eq!(answer(&mut second).await, "ACK:second-again");

    // Once one closes, the peer may connect again.
    drop(first);
    let deadline = Instant::now() + PATIENCE;
    while server.stats.snapshot().connections_open > 1 {
        assert!(Instant::now() < deadline, "first connection not released");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut fourth = raw(server.addr).await;
    write(&mut fourth, b"\x0Bfour\x1C\x0D").await;
    assert_eq!(answer(&mut fourth).await, "ACK:four");
    assert_eq!(server.stats.snapshot().refused_peers, 1);
}

#[tokio::test]
async fn err_zero_connections_per_peer_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = serve(
        listener,
        ServerSettings {
            max_connections_per_peer: 0,
            ..settings()
        },
        Arc::new(Echo),
        Arc::new(ServerStats::default()),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "mllp server: max_connections_per_peer must be at least 1"
    );
}
