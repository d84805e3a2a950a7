//! TLS listeners: settings, the rustls server configuration, the client-name check.
//!
//! TLS 1.2 is the minimum. With a `client_ca`, a client certificate signed by it is asked for:
//! required on MLLP listeners (mutual TLS), optional on the HTTP listener (where `[push]
//! require_client_cert` makes it mandatory for `POST /fhir`). With `client_names`, the leaf
//! certificate must carry one of the names as subject CN or SAN DNS name; the check runs inside
//! the handshake, so a refused client gets a TLS alert and the log says which name it had.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use super::TlsError;
use super::files::{CertificateInfo, load_ca_bundle, load_certified_key, names_of, now_unix};
use super::reload::Reloadable;

/// The TLS settings of one listener (`[inbound.NAME.tls]`, `[http.tls]`), paths absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsSettings {
    /// PEM certificate chain, own certificate first.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM bundle of the CAs that sign client certificates; `None`: no client certificate asked.
    pub client_ca: Option<PathBuf>,
    /// Allowed client names (subject CN or SAN DNS); empty: any certificate of `client_ca`.
    pub client_names: Vec<String>,
    /// With `client_ca`: refuse clients without a certificate (MLLP) or let them in without
    /// one (HTTP, where the route decides).
    pub client_cert_required: bool,
    /// ALPN protocols offered (`h2`, `http/1.1` on HTTP; none on MLLP).
    pub alpn: Vec<Vec<u8>>,
}

/// A listener's reloadable TLS configuration.
pub type ServerTls = Arc<Reloadable<ServerConfig>>;

/// The verified client certificate of a connection, handed to request handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// Subject CN and SAN DNS names of the leaf.
    pub names: Vec<String>,
}

impl PeerCertificate {
    /// The verified leaf of a finished handshake, if the client sent one.
    pub fn from_connection(connection: &rustls::ServerConnection) -> Option<Self> {
        let leaf = connection.peer_certificates()?.first()?;
        Some(Self {
            names: names_of(leaf),
        })
    }
}

impl ServerTlsSettings {
    /// Builds the rustls configuration from the files, checking them.
    pub fn build(&self, now: i64) -> Result<(ServerConfig, CertificateInfo), TlsError> {
        let provider = super::provider();
        let (certified, info) = load_certified_key(&self.cert, &self.key, now)?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config {
                reason: e.to_string(),
            })?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(load_ca_bundle(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = if self.client_cert_required {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier.build().map_err(|e| TlsError::CaBundle {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
                if self.client_names.is_empty() {
                    builder.with_client_cert_verifier(verifier)
                } else {
                    builder.with_client_cert_verifier(Arc::new(NameCheck {
                        inner: verifier,
                        allowed: self.client_names.clone(),
                    }))
                }
            }
        };
        // One certificate for every SNI name (and for clients that send none).
        let resolver = SingleCert(Arc::new(certified));
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = self.alpn.clone();
        Ok((config, info))
    }

    /// A reloadable configuration for `usage` (`inbound/adt-tls`, `http`).
    pub fn reloadable(&self, usage: &str) -> Result<ServerTls, TlsError> {
        let settings = self.clone();
        let holder = Reloadable::load(
            usage,
            Box::new(move || {
                let (config, info) = settings.build(now_unix())?;
                Ok((config, Some(info)))
            }),
        )?;
        Ok(Arc::new(holder))
    }
}

/// Serves the same certificate whatever the client asks for.
#[derive(Debug)]
struct SingleCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for SingleCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Verifies the client certificate with the CA, then checks its names against the list.
#[derive(Debug)]
struct NameCheck {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

/// Why a client certificate with valid signatures is still refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "client name not allowed: the certificate is for {presented}, `client_names` allows {allowed}"
)]
struct NameNotAllowed {
    presented: String,
    allowed: String,
}

impl ClientCertVerifier for NameCheck {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = names_of(end_entity);
        if names
            .iter()
            .any(|n| self.allowed.iter().any(|a| a.eq_ignore_ascii_case(n)))
        {
            return Ok(verified);
        }
        let quote = |list: &[String]| {
            if list.is_empty() {
                "no name".to_string()
            } else {
                list.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(NameNotAllowed {
                presented: quote(&names),
                allowed: quote(&self.allowed),
            }))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
