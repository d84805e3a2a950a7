//! The HTTP accept loop: TLS (optional), a header read timeout, a connection limit, the peer
//! address and the verified client certificate handed to the router, graceful shutdown.
//!
//! Built on hyper-util rather than `axum::serve`, which has none of these knobs. Each
//! connection takes a permit before `accept` (the next client waits in the kernel backlog),
//! runs its TLS handshake within the header read timeout in its own task, then is served with
//! HTTP/1.1 or HTTP/2. Every request carries `ConnectInfo<SocketAddr>` (the launch allow-list
//! reads it) and, when the client presented a certificate that `client_ca` verified, a
//! [`crate::tls::PeerCertificate`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::tls::{PeerCertificate, ServerTls};

/// The knobs of the HTTP accept loop (`[http] header_read_timeout`, `max_connections`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSettings {
    /// A client must finish its TLS handshake and send the request headers within this time.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the kernel backlog.
    pub max_connections: usize,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
        }
    }
}

/// How long open connections may take to finish after shutdown before they are dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause of the accept loop after repeated accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(64);

/// Serves `router` on an already-bound listener until `shutdown`, then lets open connections
/// finish (at most `DRAIN_TIMEOUT`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut backoff = Duration::from_millis(100);
    info!(addr = ?listener.local_addr().ok(), tls = tls.is_some(), max_connections = settings.max_connections, "HTTP listener started");
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    backoff = Duration::from_millis(100);
                    pair
                }
                Err(error) => {
                    warn!(%error, backoff_ms = backoff.as_millis(), "HTTP accept failed, backing off");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            },
        };
        let router = router.clone();
        let tls = tls.clone();
        let settings = settings.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, router, &settings, tls, watcher).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(timeout = ?DRAIN_TIMEOUT, "HTTP connections still open after the drain timeout; dropping them");
    }
    info!("HTTP listener stopped");
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    settings: &ServeSettings,
    tls: Option<ServerTls>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    match tls {
        None => {
            let service = with_peer(router, peer, None);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                debug!(%peer, %error, "HTTP connection ended with an error");
            }
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let stream = match tokio::time::timeout(
                settings.header_read_timeout,
                acceptor.accept(stream),
            )
            .await
            {
                Err(_elapsed) => {
                    warn!(%peer, timeout = ?settings.header_read_timeout, "HTTP TLS handshake not finished in time, connection closed");
                    return;
                }
                Ok(Err(error)) => {
                    warn!(%peer, reason = %crate::tls::handshake_reason(&error), "HTTP TLS handshake failed");
                    return;
                }
                Ok(Ok(stream)) => stream,
            };
            let certificate = PeerCertificate::from_connection(stream.get_ref().1);
            let service = with_peer(router, peer, certificate);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                debug!(%peer, %error, "HTTPS connection ended with an error");
            }
        }
    }
}

/// The router as a hyper service whose requests carry the peer address and certificate.
fn with_peer(
    router: Router,
    peer: SocketAddr,
    certificate: Option<PeerCertificate>,
) -> hyper_util::service::TowerToHyperService<
    impl tower::Service<
        hyper::Request<Incoming>,
        Response = axum::response::Response,
        Error = Infallible,
        Future = impl Send,
    > + Clone,
> {
    let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(certificate) = &certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        router.clone().oneshot(request)
    });
    hyper_util::service::TowerToHyperService::new(service)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves a router answering the peer address on `/peer`; returns the address, the
    /// shutdown token and the server task.
    async fn start(
        settings: ServeSettings,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let router = Router::new().route(
            "/peer",
            get(
                |ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 certificate: Option<axum::Extension<PeerCertificate>>| async move {
                    format!("{peer} {}", certificate.is_some())
                },
            ),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn(serve(listener, router, settings, None, token.clone()));
        (addr, token, task)
    }

    /// Reads until the server closes; the bytes it sent.
    async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let read = stream.read_to_end(&mut out);
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("closed by the server in time")
            .ok();
        out
    }

    #[tokio::test]
    async fn ok_requests_carry_the_peer_address() {
        let (addr, token, task) = start(ServeSettings::default()).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = String::from_utf8(read_to_close(&mut stream).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&format!("{local} false")), "{answer}");
        token.cancel();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("graceful shutdown in time")
            .unwrap();
    }

    #[tokio::test]
    async fn err_slow_headers_are_cut_at_the_header_read_timeout() {
        let settings = ServeSettings {
            header_read_timeout: Duration::from_millis(200),
            ..ServeSettings::default()
        };
        let (addr, token, _task) = start(settings).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // Half a request line, then nothing: the server must not wait for ever.
        stream.write_all(b"GET /peer HTTP/1.1\r\nHo").await.unwrap();
        let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
        token.cancel();
    }
}
