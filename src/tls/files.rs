//! Certificate and key files: read them, say what is in them, check them.
//!
//! Accepted: PEM certificate chains (own certificate first, then intermediates), PEM private
//! keys in PKCS#8 (`BEGIN PRIVATE KEY`), RSA (`BEGIN RSA PRIVATE KEY`) and SEC1 (`BEGIN EC
//! PRIVATE KEY`) form, PEM CA bundles. Not accepted: DER files, encrypted keys, PKCS#12.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// What a certificate says about itself, for `check`, `/status` and the expiry metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The file it was read from.
    pub path: PathBuf,
    /// The subject, as `CN=…, O=…`.
    pub subject: String,
    /// Subject common names and SAN DNS names.
    pub names: Vec<String>,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertificateInfo {
    /// Whole days from `now` (Unix seconds) to the end of validity; negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// The end of validity as an RFC 3339 UTC time.
    pub fn not_after_text(&self) -> String {
        jiff::Timestamp::from_second(self.not_after)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|_| self.not_after.to_string())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PEM certificate chain; the first certificate is the leaf.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// Reads a PEM private key (PKCS#8, RSA or SEC1): the first key in the file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        other => TlsError::Pem {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

/// Reads a PEM CA bundle into a root store; every certificate in it must be usable.
pub fn load_ca_bundle(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = load_chain(path).map_err(|e| match e {
        TlsError::NoCertificate { path } => TlsError::CaBundle {
            path,
            reason: "no `BEGIN CERTIFICATE` block in it".to_string(),
        },
        other => other,
    })?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::CaBundle {
            path: path.to_path_buf(),
            reason: format!("certificate #{}: {e}", i + 1),
        })?;
    }
    Ok(roots)
}

/// Reads the names and validity of a DER certificate.
pub fn certificate_info(path: &Path, der: &[u8]) -> Result<CertificateInfo, TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(CertificateInfo {
        path: path.to_path_buf(),
        subject: cert.subject().to_string(),
        names: certificate_names(&cert),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The subject common names, then the SAN DNS names, of a parsed certificate.
fn certificate_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name
                && !names.iter().any(|n| n == dns)
            {
                names.push((*dns).to_string());
            }
        }
    }
    names
}

/// The names of a DER certificate (subject CN and SAN DNS names); empty when unreadable.
pub fn names_of(der: &[u8]) -> Vec<String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => certificate_names(&cert),
        Err(_) => Vec::new(),
    }
}

/// A certificate and its key, read and checked together: the key matches the certificate and
/// the certificate is not expired.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    now: i64,
) -> Result<(CertifiedKey, CertificateInfo), TlsError> {
    let chain = load_chain(cert_path)?;
    let key = load_key(key_path)?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
        path: cert_path.to_path_buf(),
    })?;
    let info = certificate_info(cert_path, leaf)?;
    if info.not_after < now {
        return Err(TlsError::Expired {
            path: cert_path.to_path_buf(),
            subject: info.subject.clone(),
            not_after: info.not_after_text(),
        });
    }
    let signing_key = super::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        // The provider cannot tell the public key of this key type: rustls checks the key
        // in every handshake's signature anyway.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: cert_path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    }
    Ok((certified, info))
}

/// What `ordobridge check` reports for one certificate: its use, its info, or the problem.
#[derive(Debug)]
pub struct FileCheck {
    /// `inbound/adt-tls`, `outbound/ehr`, `http`.
    pub usage: String,
    pub result: Result<Option<CertificateInfo>, TlsError>,
}

/// Below this many days left, `check` says to renew.
pub const RENEW_SOON_DAYS: i64 = 30;

impl std::fmt::Display for FileCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.result {
            Ok(Some(info)) => {
                let days = info.days_left(now_unix());
                write!(
                    f,
                    "tls {}: `{}` ({}) valid until {}: {days} days left",
                    self.usage,
                    info.path.display(),
                    info.subject,
                    info.not_after_text(),
                )?;
                if days < RENEW_SOON_DAYS {
                    write!(f, " (renew it soon, then reload with SIGHUP)")?;
                }
                Ok(())
            }
            Ok(None) => write!(f, "tls {}: ok (no own certificate)", self.usage),
            Err(error) => write!(f, "tls {}: error: {error}", self.usage),
        }
    }
}

/// Checks the files of one TLS use: the certificate and key (readable, matching, not expired)
/// and the CA bundle (readable, at least one certificate). `Ok(None)` when there is no own
/// certificate (a client with only a CA).
pub fn check_files(
    cert_and_key: Option<(&Path, &Path)>,
    ca: Option<&Path>,
    now: i64,
) -> Result<Option<CertificateInfo>, TlsError> {
    if let Some(ca) = ca {
        load_ca_bundle(ca)?;
    }
    match cert_and_key {
        Some((cert, key)) => load_certified_key(cert, key, now).map(|(_, info)| Some(info)),
        None => Ok(None),
    }
}

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    /// A self-signed certificate for `name`, valid from `from` to `to` (Unix seconds), written
    /// as `NAME.crt` and `NAME.key` in `dir`.
    pub(crate) fn self_signed(dir: &Path, name: &str, from: i64, to: i64) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.not_before = time_of(from);
        params.not_after = time_of(to);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn time_of(unix: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    const DAY: i64 = 86_400;

    #[test]
    fn ok_certificate_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        let (cert, key) = self_signed(dir.path(), "ehr.example", now - DAY, now + 30 * DAY);
        let info = check_files(Some((&cert, &key)), Some(&cert), now)
            .unwrap()
            .unwrap();
        assert_eq!(info.names, vec!["ehr.example"]);
        assert_eq!(info.subject, "CN=ehr.example");
        assert_eq!(info.days_left(now), 30);
    }

    #[test]
    fn err_key_of_another_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        let (cert, _) = self_signed(dir.path(), "a", now - DAY, now + DAY);
        let (_, other_key) = self_signed(dir.path(), "b", now - DAY, now + DAY);
        let err = check_files(Some((&cert, &other_key)), None, now).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the key `{}` does not match the certificate `{}`: give the key the certificate was issued for",
                other_key.display(),
                cert.display()
            )
        );
    }

    #[test]
    fn err_expired_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000;
        let (cert, key) = self_signed(dir.path(), "old", now - 10 * DAY, now - DAY);
        let err = check_files(Some((&cert, &key)), None, now).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "`{}`: the certificate `CN=old` expired on 2027-01-14T08:00:00Z: renew it and reload (SIGHUP)",
                cert.display()
            )
        );
    }

    #[test]
    fn err_missing_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let err = load_chain(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot read `{}`: ", missing.display())),
            "{err}"
        );
        assert!(err.ends_with("(check the path and that ordobridge may read it)"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        assert_eq!(
            load_key(&empty).unwrap_err().to_string(),
            format!(
                "`{}` holds no private key: give an unencrypted PEM key (`BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`)",
                empty.display()
            )
        );
        assert_eq!(
            load_ca_bundle(&empty).unwrap_err().to_string(),
            format!(
                "`{}` holds no usable CA certificate: no `BEGIN CERTIFICATE` block in it",
                empty.display()
            )
        );
    }

    #[test]
    fn ok_check_line_says_to_renew_soon() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        let (cert, key) = self_signed(dir.path(), "soon", now - DAY, now + 10 * DAY + 60);
        let check = FileCheck {
            usage: "http".to_string(),
            result: check_files(Some((&cert, &key)), None, now),
        };
        let line = check.to_string();
        assert!(
            line.ends_with(": 10 days left (renew it soon, then reload with SIGHUP)"),
            "{line}"
        );
        assert!(line.starts_with(&format!(
            "tls http: `{}` (CN=soon) valid until ",
            cert.display()
        )));
    }

    #[test]
    fn ok_days_left_rounds_down() {
        let info = CertificateInfo {
            path: PathBuf::new(),
            subject: String::new(),
            names: vec![],
            not_after: 10 * DAY + 5,
        };
        assert_eq!(info.days_left(0), 10);
        assert_eq!(info.days_left(11 * DAY), -1);
    }
}
