//! A minimal EHR on a loopback MLLP port, over TCP or TLS: it hands each frame to the test,
//! then answers it with an ACK. The tests reach it through `common` (`ehr_peer` and friends);
//! the push benchmark includes this file with `#[path]`.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use ordobridge::hl7::Message;
use ordobridge::mllp::{Inbound, MllpCodec};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// What the peer answers: the MSA segment (and any segment after it) for a control id, e.g.
/// `MSA|AA|{id}` or `MSA|AE|{id}|some text`.
pub type Answer = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// What the peer tells the test of each frame, before answering it: its MSH-10 (empty when
/// it does not parse) and its bytes.
pub type Seen = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

/// The answer of an EHR that accepts everything.
pub fn accept_all() -> Answer {
    Arc::new(|control_id| format!("MSA|AA|{control_id}"))
}

/// Serves MLLP on `listener` (through `tls` when given: a failed handshake drops that
/// connection) until the runtime ends: each frame is handed to `seen`, then answered with
/// `MSH|…|ACK^O01^ACK|A{id}|P|2.5` and the segments of `answer`.
pub fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    answer: Answer,
    seen: Seen,
) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tls, answer, seen) = (tls.clone(), answer.clone(), seen.clone());
            tokio::spawn(async move {
                match tls {
                    None => session(stream, &answer, &seen).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            session(stream, &answer, &seen).await;
                        }
                    }
                }
            });
        }
    });
}

/// One connection: frames in, ACKs out, until the sender closes or a write fails.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(stream: S, answer: &Answer, seen: &Seen) {
    let mut framed = Framed::new(stream, MllpCodec::new(1 << 20));
    while let Some(Ok(Inbound::Frame(payload))) = framed.next().await {
        let control_id = Message::parse(&payload)
            .map(|m| m.header().control_id.to_string())
            .unwrap_or_default();
        seen(&control_id, &payload);
        let ack = format!(
            "MSH|^~\\&|DPI|CH|OB|POSOS|20260105||ACK^O01^ACK|A{control_id}|P|2.5\r{}\r",
            answer(&control_id)
        );
        if framed.send(ack.as_bytes()).await.is_err() {
            return;
        }
    }
}
