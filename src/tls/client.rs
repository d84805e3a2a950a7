//! TLS clients: outbound MLLP destinations and `ordobridge send`.
//!
//! The server certificate is checked against `ca` (a PEM bundle) or, without it, the system
//! roots, and against `server_name` (by default the host of the destination's address). With
//! `cert` and `key`, the client presents a certificate (mutual TLS).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::TlsError;
use super::files::{CertificateInfo, load_ca_bundle, load_certified_key, now_unix};
use super::reload::Reloadable;

/// The TLS settings of one client (`[outbound.NAME.tls]`), paths absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsSettings {
    /// PEM bundle of the CAs trusted for the server certificate; `None`: the system roots.
    pub ca: Option<PathBuf>,
    /// The name the server certificate must carry (DNS name or IP address).
    pub server_name: String,
    /// Client certificate and key, for mutual TLS.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

/// A client's TLS configuration (reloadable) and the name it checks.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<Reloadable<ClientConfig>>,
    pub server_name: ServerName<'static>,
}

impl ClientTlsSettings {
    /// Builds the rustls configuration from the files, checking them.
    pub fn build(&self, now: i64) -> Result<(ClientConfig, Option<CertificateInfo>), TlsError> {
        let roots = match &self.ca {
            Some(ca) => load_ca_bundle(ca)?,
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(super::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config {
                reason: e.to_string(),
            })?
            .with_root_certificates(roots);
        match &self.cert_and_key {
            None => Ok((builder.with_no_client_auth(), None)),
            Some((cert, key)) => {
                let (certified, info) = load_certified_key(cert, key, now)?;
                let config =
                    builder.with_client_cert_resolver(Arc::new(ClientCert(Arc::new(certified))));
                Ok((config, Some(info)))
            }
        }
    }

    /// The server name to check; fails on a name that is neither a DNS name nor an IP address.
    pub fn server_name(&self) -> Result<ServerName<'static>, TlsError> {
        ServerName::try_from(self.server_name.clone()).map_err(|_| TlsError::ServerName {
            name: self.server_name.clone(),
        })
    }

    /// A reloadable client for `usage` (`outbound/ehr`).
    pub fn client(&self, usage: &str) -> Result<ClientTls, TlsError> {
        let server_name = self.server_name()?;
        let settings = self.clone();
        let config = Reloadable::load(usage, Box::new(move || settings.build(now_unix())))?;
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
        })
    }
}

impl ClientTls {
    /// Runs the handshake over a connected socket with the configuration in force.
    pub async fn connect(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        TlsConnector::from(self.config.current())
            .connect(self.server_name.clone(), stream)
            .await
    }
}

/// Presents the same certificate to every server that asks for one.
#[derive(Debug)]
struct ClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The roots of the operating system (`/etc/ssl/certs` on Debian).
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::NoSystemRoots);
    }
    Ok(roots)
}
