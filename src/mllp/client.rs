//! A small MLLP client: send one frame, wait for one answer. Used by the load tool and, later,
//! by outbound delivery (which adds retries and backoff on top).
//!
//! After a timeout or an I/O failure the client is broken: a late answer to the
//! failed message could otherwise be taken for the answer to the next one. The caller connects
//! again.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::MllpError;
use super::codec::{DEFAULT_MAX_FRAME_BYTES, Inbound, MllpCodec};

/// Limits of one client connection.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// TLS towards the receiver; `None` speaks plain TCP.
    pub tls: Option<crate::tls::ClientTls>,
    /// How long opening the TCP connection may take.
    pub connect_timeout: Duration,
    /// Answers longer than this are refused with [`MllpError::OversizedResponse`].
    pub max_frame_bytes: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            tls: None,
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// Whether the connection can still carry a request/answer exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing in flight; the next answer read belongs to the next message sent.
    Ready,
    /// An earlier exchange failed midway; answers can no longer be matched to messages.
    Broken,
}

/// One MLLP connection to a receiver.
#[derive(Debug)]
pub struct MllpClient {
    framed: Framed<crate::tls::BoxedStream, MllpCodec>,
    peer: SocketAddr,
    state: State,
}

impl MllpClient {
    /// Opens a connection to `addr` (and runs the TLS handshake when the settings ask for
    /// TLS), all within the connect timeout.
    pub async fn connect(addr: SocketAddr, settings: ClientSettings) -> Result<Self, MllpError> {
        let timeout = settings.connect_timeout;
        let open = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|source| MllpError::Connect { addr, source })?;
            // Request/answer traffic: do not let Nagle hold a frame back.
            stream.set_nodelay(true)?;
            let stream: crate::tls::BoxedStream = match &settings.tls {
                None => Box::new(stream),
                Some(tls) => match tls.connect(stream).await {
                    Ok(stream) => Box::new(stream),
                    Err(error) => {
                        let detail = format!(
                            "server name `{}`: {}",
                            tls.server_name.to_str(),
                            crate::tls::handshake_reason(&error)
                        );
                        return Err(MllpError::Tls {
                            addr,
                            detail: detail.into(),
                        });
                    }
                },
            };
            Ok(stream)
        };
        let stream = match tokio::time::timeout(timeout, open).await {
            Err(_elapsed) => return Err(MllpError::ConnectTimeout { addr, timeout }),
            Ok(result) => result?,
        };
        Ok(Self {
            framed: Framed::new(stream, MllpCodec::new(settings.max_frame_bytes)),
            peer: addr,
            state: State::Ready,
        })
    }

    /// The address this client is connected to.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends `payload` as one frame and returns the payload of the first answer frame, all
    /// within `ack_timeout`. Any failure but a refused payload breaks the connection.
    pub async fn send(
        &mut self,
        payload: &[u8],
        ack_timeout: Duration,
    ) -> Result<Bytes, MllpError> {
        if self.state == State::Broken {
            return Err(MllpError::Broken);
        }
        let result = match tokio::time::timeout(ack_timeout, self.exchange(payload)).await {
            Err(_elapsed) => Err(MllpError::AckTimeout {
                timeout: ack_timeout,
            }),
            Ok(result) => result,
        };
        match &result {
            Ok(_) | Err(MllpError::ReservedByte { .. }) => {}
            Err(_) => self.state = State::Broken,
        }
        result.map_err(|error| self.tls_error(error))
    }

    /// With TLS 1.3 the server checks the client certificate after the client's handshake
    /// is over: its refusal arrives as an alert on the first exchange. Says so in words.
    fn tls_error(&self, error: MllpError) -> MllpError {
        let MllpError::Io(io) = &error else {
            return error;
        };
        let Some(tls) = io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return error;
        };
        MllpError::Tls {
            addr: self.peer,
            detail: crate::tls::rustls_reason(tls).into(),
        }
    }

    async fn exchange(&mut self, payload: &[u8]) -> Result<Bytes, MllpError> {
        self.framed.send(payload).await?;
        match self.framed.next().await {
            None => Err(MllpError::ClosedBeforeAnswer),
            Some(Err(error)) => Err(error),
            Some(Ok(Inbound::Frame(answer))) => Ok(answer),
            Some(Ok(Inbound::Oversized { len, .. })) => Err(MllpError::OversizedResponse {
                len,
                max: self.framed.codec().max_frame_bytes(),
            }),
            Some(Ok(Inbound::Interrupted { .. })) => Err(MllpError::InterruptedResponse),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-connection peer that reads one frame and then writes `answer` raw.
    async fn raw_peer(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let mut got = Vec::new();
            while !got.ends_with(b"\x1C\x0D") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&buf[..n]);
            }
            socket.write_all(answer).await.unwrap();
            // Keep the socket open until the client goes away.
            let _ = socket.read(&mut buf).await;
        });
        addr
    }

    async fn client(addr: SocketAddr, max: usize) -> MllpClient {
        let settings = ClientSettings {
            max_frame_bytes: max,
            ..ClientSettings::default()
        };
        MllpClient::connect(addr, settings).await.unwrap()
    }

    #[tokio::test]
    async fn ok_send_returns_answer_and_tolerates_missing_cr() {
        let addr = raw_peer(b"\x0BMSA|AA|1\x1C").await;
        let mut c = client(addr, 1024).await;
        let answer = c.send(b"MSH|1", Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer.as_ref(), b"MSA|AA|1");
    }

    #[tokio::test]
    async fn err_ack_timeout_breaks_client() {
        let addr = raw_peer(b"").await;
        let mut c = client(addr, 1024).await;
        let err = c
            .send(b"MSH|1", Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no response frame within the ack timeout of 50ms"
        );
        let err = c.send(b"MSH|2", Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "client connection is broken by an earlier failure; reconnect"
        );
    }

    #[tokio::test]
    async fn err_oversized_answer() {
        let addr = raw_peer(b"\x0B0123456789\x1C\x0D").await;
        let mut c = client(addr, 4).await;
        let err = c.send(b"MSH|1", Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "response frame of 10 bytes exceeds the maximum of 4 bytes"
        );
    }

    #[tokio::test]
    async fn err_closed_before_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            drop(socket);
        });
        let mut c = client(addr, 1024).await;
        let err = c.send(b"MSH|1", Duration::from_secs(5)).await.unwrap_err();
        // Either the write or the read sees the close, depending on timing.
        assert!(
            matches!(err, MllpError::ClosedBeforeAnswer | MllpError::Io(_)),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn err_reserved_byte_keeps_client_usable() {
        let addr = raw_peer(b"\x0BMSA|AA\x1C\x0D").await;
        let mut c = client(addr, 1024).await;
        let err = c
            .send(b"MSH|\x1C", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "payload holds reserved MLLP byte `\\x1C` at byte offset 4"
        );
        let answer = c.send(b"MSH|1", Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer.as_ref(), b"MSA|AA");
    }

    #[tokio::test]
    async fn err_connect_refused() {
        // Bind then drop, so the port is very likely closed.
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let err = MllpClient::connect(addr, ClientSettings::default())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), format!("cannot connect to {addr}"));
    }
}
