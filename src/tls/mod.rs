//! TLS for every link: certificates, server and client configurations, reload on SIGHUP.
//!
//! One module owns certificate handling, so every listener and client reads files, checks
//! keys and reports problems the same way:
//!
//! - [`files`]: read a PEM certificate chain, a PEM private key (PKCS#8, RSA or SEC1) and a
//!   PEM CA bundle; check that a key matches its certificate and that a certificate is not
//!   expired (what `ordobridge check` prints);
//! - [`server`]: the settings of a TLS listener (`[inbound.NAME.tls]`, `[http.tls]`) and the
//!   rustls server configuration built from them (TLS 1.2 minimum, optional client CA, optional
//!   allowed client names);
//! - [`client`]: the settings of a TLS client (`[outbound.NAME.tls]`, `ordobridge send
//!   --tls-ca …`) and its rustls client configuration (a CA bundle or the system roots);
//! - [`reload`]: a holder that swaps a configuration when its files change (SIGHUP) and keeps
//!   the old one when the new files are bad; established connections keep theirs.
//!
//! The whole binary uses one crypto provider, aws-lc-rs (the one reqwest's `rustls` feature
//! already pulls in); configurations name it explicitly, and [`install_crypto_provider`] makes
//! it the process default for code that asks rustls for the default.
//!
//! Not done here, on purpose: OCSP, revocation lists, encrypted private keys (decrypt them
//! with `openssl pkey` and protect the file instead).

pub mod client;
pub mod files;
pub mod reload;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use tokio::io::{AsyncRead, AsyncWrite};

pub use client::{ClientTls, ClientTlsSettings};
pub use files::{CertificateInfo, FileCheck, check_files};
pub use reload::{CertificateStatus, Reloadable, Reloader};
pub use server::{PeerCertificate, ServerTls, ServerTlsSettings};

/// A byte stream a protocol handler can read and write whatever its transport: a plain TCP
/// socket or a TLS stream over one.
pub trait IoStream: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> IoStream for T {}

/// A boxed [`IoStream`], so one connection type serves plain and TLS peers.
pub type BoxedStream = Box<dyn IoStream>;

/// The crypto provider of the whole binary.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes aws-lc-rs the process-wide default provider; called once at start, harmless when
/// it was already installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A TLS problem a user can hit: each names the file (or the setting) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read `{path}`: {source} (check the path and that ordobridge may read it)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}`: {reason} (expected PEM text)")]
    Pem { path: PathBuf, reason: String },
    #[error(
        "`{path}` holds no certificate: give the certificate chain in PEM (`-----BEGIN CERTIFICATE-----`), the server's own certificate first"
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "`{path}` holds no private key: give an unencrypted PEM key (`BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`)"
    )]
    NoKey { path: PathBuf },
    #[error("`{path}`: the private key cannot be used: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("`{path}`: the certificate cannot be read: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error(
        "the key `{key}` does not match the certificate `{cert}`: give the key the certificate was issued for"
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "`{path}`: the certificate `{subject}` expired on {not_after}: renew it and reload (SIGHUP)"
    )]
    Expired {
        path: PathBuf,
        subject: String,
        not_after: String,
    },
    #[error("`{path}` holds no usable CA certificate: {reason}")]
    CaBundle { path: PathBuf, reason: String },
    #[error("no system root certificate could be loaded: set `ca` to the PEM bundle of the CA")]
    NoSystemRoots,
    #[error(
        "invalid TLS server name `{name}`: set `server_name` to the DNS name or IP address in the receiver's certificate"
    )]
    ServerName { name: String },
    #[error("cannot build the TLS configuration: {reason}")]
    Config { reason: String },
}

/// What a failed handshake means, in words an interface engineer can act on.
///
/// `io` is what tokio-rustls returned; the rustls error inside it (when there is one) is
/// translated: unknown CA, expired, name mismatch, missing client certificate, or an alert
/// sent by the other side.
pub fn handshake_reason(error: &std::io::Error) -> String {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => rustls_reason(tls),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the peer closed the connection during the handshake (it may not trust our certificate, or it does not speak TLS)".to_string()
        }
        None => error.to_string(),
    }
}

/// [`handshake_reason`] for a rustls error.
pub fn rustls_reason(error: &rustls::Error) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
    match error {
        Error::NoCertificatesPresented => {
            "no client certificate: this port requires one signed by its `client_ca`".to_string()
        }
        Error::InvalidCertificate(cert) => match cert {
            Cert::UnknownIssuer => {
                "unknown CA: the certificate is not signed by a trusted CA".to_string()
            }
            Cert::Expired | Cert::ExpiredContext { .. } => {
                "expired: the certificate is past its validity".to_string()
            }
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
                "not yet valid: the certificate's validity starts later (check the clocks)"
                    .to_string()
            }
            Cert::NotValidForName => {
                "name mismatch: the certificate is not valid for the expected name".to_string()
            }
            Cert::NotValidForNameContext {
                expected,
                presented,
            } => format!(
                "name mismatch: expected `{}`, the certificate is for {}",
                expected.to_str(),
                if presented.is_empty() {
                    "no name".to_string()
                } else {
                    presented.join(", ")
                }
            ),
            Cert::Other(other) => other.to_string(),
            other => format!("bad certificate: {other:?}"),
        },
        Error::AlertReceived(alert) => match alert {
            Alert::UnknownCA => {
                "the peer does not trust our certificate (alert: unknown CA)".to_string()
            }
            Alert::CertificateExpired => {
                "the peer says a certificate is expired (alert: certificate expired)".to_string()
            }
            Alert::CertificateRequired => {
                "the peer requires a client certificate (alert: certificate required): give one signed by a CA it trusts".to_string()
            }
            Alert::BadCertificate | Alert::AccessDenied => format!(
                "the peer refused our certificate (alert: {})",
                alert_name(*alert)
            ),
            Alert::ProtocolVersion => {
                "no common TLS version (alert: protocol version; TLS 1.2 is the minimum)"
                    .to_string()
            }
            other => format!("the peer ended the handshake (alert: {})", alert_name(*other)),
        },
        Error::InvalidMessage(_) => "not a TLS client: the bytes received are no TLS record".to_string(),
        Error::PeerIncompatible(why) => format!("the peer's TLS is incompatible: {why:?}"),
        other => other.to_string(),
    }
}

fn alert_name(alert: rustls::AlertDescription) -> String {
    // `UnknownCA` → `unknown CA`, `BadCertificate` → `bad certificate`.
    let debug = format!("{alert:?}");
    let mut words: Vec<String> = Vec::new();
    let mut prev_lower = false;
    for c in debug.chars() {
        if words.is_empty() || (c.is_ascii_uppercase() && prev_lower) {
            words.push(String::new());
        }
        prev_lower = c.is_ascii_lowercase();
        if let Some(word) = words.last_mut() {
            word.push(c);
        }
    }
    words
        .iter()
        .map(|w| {
            if w.chars().all(|c| c.is_ascii_uppercase()) {
                w.clone()
            } else {
                w.to_ascii_lowercase()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::no_cert(
        rustls::Error::NoCertificatesPresented,
        "no client certificate: this port requires one signed by its `client_ca`"
    )]
    #[case::unknown_ca(
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        "unknown CA: the certificate is not signed by a trusted CA"
    )]
    #[case::expired(
        rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        "expired: the certificate is past its validity"
    )]
    #[case::name(
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        "name mismatch: the certificate is not valid for the expected name"
    )]
    #[case::alert(
        rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
        "the peer refused our certificate (alert: bad certificate)"
    )]
    #[case::alert_ca(
        rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        "the peer does not trust our certificate (alert: unknown CA)"
    )]
    fn ok_reasons_in_words(#[case] error: rustls::Error, #[case] text: &str) {
        assert_eq!(rustls_reason(&error), text);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
        assert_eq!(handshake_reason(&io), text);
    }

    #[test]
    fn ok_eof_reason() {
        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof");
        assert!(handshake_reason(&io).starts_with("the peer closed the connection"));
    }
}
