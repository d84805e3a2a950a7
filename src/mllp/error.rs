//! The one error type of the `mllp` module: framing, socket and timeout failures.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything that can go wrong while moving MLLP frames; the server logs these with the peer,
/// the client and the load tool return them.
#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    /// The peer closed the connection after a start block but before the end block; the sender
    /// got no answer for that frame and is expected to resend it.
    #[error("connection closed mid-frame after {received} payload bytes")]
    TruncatedFrame {
        /// Payload bytes received after the start block.
        received: usize,
    },
    /// A payload to send holds a byte that MLLP reserves for framing, so it cannot be framed.
    #[error("payload holds reserved MLLP byte `{}` at byte offset {offset}", EscapedByte(*byte))]
    ReservedByte {
        /// The reserved byte (`0x0B` or `0x1C`).
        byte: u8,
        /// Its offset in the payload.
        offset: usize,
    },
    /// No byte arrived for the idle timeout while no frame was in progress.
    #[error("connection idle for {timeout:?}, no frame in progress")]
    IdleTimeout {
        /// The idle timeout in force.
        timeout: Duration,
    },
    /// A frame was started but not finished within the read timeout.
    #[error("frame started but not finished within {timeout:?}")]
    FrameTimeout {
        /// The read timeout in force.
        timeout: Duration,
    },
    /// The peer did not take our answer within the write timeout.
    #[error("peer did not take the answer within {timeout:?}")]
    WriteTimeout {
        /// The write timeout in force.
        timeout: Duration,
    },
    /// The client could not open a connection.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address we tried.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake with the receiver failed.
    #[error("TLS handshake with {addr} failed: {detail}")]
    Tls {
        /// The address we connected to.
        addr: SocketAddr,
        /// The server name checked and what went wrong, in words (unknown CA, expired, name
        /// mismatch, …); one string to keep the error small.
        detail: Box<str>,
    },
    /// The client could not open a connection within its connect timeout.
    #[error("cannot connect to {addr} within {timeout:?}")]
    ConnectTimeout {
        /// The address we tried.
        addr: SocketAddr,
        /// The connect timeout in force.
        timeout: Duration,
    },
    /// No response frame arrived within the ACK timeout; the connection is no longer usable
    /// because a late answer would be taken for the answer to the next message.
    #[error("no response frame within the ack timeout of {timeout:?}")]
    AckTimeout {
        /// The ACK timeout in force.
        timeout: Duration,
    },
    /// The peer closed the connection instead of answering.
    #[error("peer closed the connection before answering")]
    ClosedBeforeAnswer,
    /// The response frame was larger than the client's maximum frame size.
    #[error("response frame of {len} bytes exceeds the maximum of {max} bytes")]
    OversizedResponse {
        /// Payload length of the response.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The response frame was cut by a new start block.
    #[error("response frame interrupted by a start block `\\x0B`")]
    InterruptedResponse,
    /// A previous send failed (timeout or I/O), so the client refuses to guess which answer
    /// belongs to which message; connect again.
    #[error("client connection is broken by an earlier failure; reconnect")]
    Broken,
    /// The load tool was called with arguments that cannot produce a run.
    #[error("invalid load run: {reason}")]
    InvalidLoad {
        /// What is wrong.
        reason: &'static str,
    },
    /// A socket read or write failed.
    #[error("i/o error")]
    Io(#[from] io::Error),
}

/// Prints one untrusted byte readably: printable ASCII as itself, anything else as `\xNN`.
pub(crate) struct EscapedByte(pub(crate) u8);

impl fmt::Display for EscapedByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b.is_ascii_graphic() || b == b' ' {
            write!(f, "{}", char::from(b))
        } else {
            write!(f, "\\x{b:02X}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::truncated(MllpError::TruncatedFrame { received: 12 }, "connection closed mid-frame after 12 payload bytes")]
    #[case::reserved(MllpError::ReservedByte { byte: 0x1C, offset: 7 }, "payload holds reserved MLLP byte `\\x1C` at byte offset 7")]
    #[case::idle(MllpError::IdleTimeout { timeout: Duration::from_secs(30) }, "connection idle for 30s, no frame in progress")]
    #[case::frame(MllpError::FrameTimeout { timeout: Duration::from_millis(1500) }, "frame started but not finished within 1.5s")]
    #[case::ack(MllpError::AckTimeout { timeout: Duration::from_secs(10) }, "no response frame within the ack timeout of 10s")]
    #[case::closed(
        MllpError::ClosedBeforeAnswer,
        "peer closed the connection before answering"
    )]
    #[case::oversized(MllpError::OversizedResponse { len: 20, max: 10 }, "response frame of 20 bytes exceeds the maximum of 10 bytes")]
    #[case::interrupted(
        MllpError::InterruptedResponse,
        "response frame interrupted by a start block `\\x0B`"
    )]
    #[case::load(MllpError::InvalidLoad { reason: "corpus is empty" }, "invalid load run: corpus is empty")]
    fn err_messages_are_pinned(#[case] err: MllpError, #[case] text: &str) {
        assert_eq!(err.to_string(), text);
    }

    #[rstest]
    #[case::start_block(0x0B, "\\x0B")]
    #[case::nul(0x00, "\\x00")]
    #[case::letter(b'A', "A")]
    #[case::space(b' ', " ")]
    #[case::high(0xE9, "\\xE9")]
    fn ok_escaped_byte(#[case] byte: u8, #[case] text: &str) {
        assert_eq!(EscapedByte(byte).to_string(), text);
    }
}
