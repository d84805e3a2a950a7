//! `[inbound.NAME.tls]`, `[http.tls]` and `[outbound.NAME.tls]`.

use std::net::SocketAddr;
use std::path::Path;

use toml::Spanned;

use super::raw::{RawClientTls, RawServerTls};
use super::{HttpConfig, Report, resolve_path};

/// `[inbound.NAME.tls]` (`mllp`: client certificate required with `client_ca`) or
/// `[http.tls]` (optional there, and no `client_names`).
pub(super) fn server_tls(
    raw: Spanned<RawServerTls>,
    key: &str,
    mllp: bool,
    base: &Path,
    report: &mut Report<'_>,
) -> Option<crate::tls::ServerTlsSettings> {
    let span = raw.span();
    let raw = raw.into_inner();
    let client_names: Vec<String> = raw
        .client_names
        .unwrap_or_default()
        .into_iter()
        .filter(|n| !n.trim().is_empty())
        .collect();
    if !client_names.is_empty() && !mllp {
        report.push(
            Some(span),
            &format!("{key}.client_names"),
            "`client_names` is for MLLP listeners: on HTTP, `client_ca` decides who may present a certificate".to_string(),
        );
        return None;
    }
    let client_ca = raw
        .client_ca
        .filter(|c| !c.is_empty())
        .map(|c| resolve_path(base, &c));
    if !client_names.is_empty() && client_ca.is_none() {
        report.push(
            Some(span),
            &format!("{key}.client_names"),
            "`client_names` needs `client_ca` (the CA that signs the client certificates): add `client_ca = \"site-ca.pem\"`".to_string(),
        );
        return None;
    }
    Some(crate::tls::ServerTlsSettings {
        cert: resolve_path(base, &raw.cert),
        key: resolve_path(base, &raw.key),
        client_ca,
        client_names,
        client_cert_required: mllp,
        alpn: if mllp {
            Vec::new()
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        },
    })
}

/// `[outbound.NAME.tls]`: `server_name` defaults to the host of `address`.
pub(super) fn client_tls(
    raw: Spanned<RawClientTls>,
    key: &str,
    address: SocketAddr,
    base: &Path,
    report: &mut Report<'_>,
) -> Option<crate::tls::ClientTlsSettings> {
    let span = raw.span();
    let raw = raw.into_inner();
    let cert_and_key = match (
        raw.cert.filter(|c| !c.is_empty()),
        raw.key.filter(|k| !k.is_empty()),
    ) {
        (None, None) => None,
        (Some(cert), Some(k)) => Some((resolve_path(base, &cert), resolve_path(base, &k))),
        (Some(_), None) | (None, Some(_)) => {
            report.push(
                Some(span),
                &format!("{key}.cert"),
                "a client certificate needs both `cert` and `key` (or neither)".to_string(),
            );
            return None;
        }
    };
    let settings = crate::tls::ClientTlsSettings {
        ca: raw
            .ca
            .filter(|c| !c.is_empty())
            .map(|c| resolve_path(base, &c)),
        server_name: raw
            .server_name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| address.ip().to_string()),
        cert_and_key,
    };
    if let Err(e) = settings.server_name() {
        report.push(Some(span), &format!("{key}.server_name"), e.to_string());
        return None;
    }
    Some(settings)
}

/// `[SECTION] require_client_cert`: refusing callers without a verified certificate needs
/// `[http.tls] client_ca`; `signed` says whose certificates that CA signs, for the message.
pub(super) fn require_client_cert(
    value: Option<&Spanned<bool>>,
    section: &str,
    http: Option<&HttpConfig>,
    signed: &str,
    report: &mut Report<'_>,
) -> bool {
    let required = value.is_some_and(|r| *r.get_ref());
    let has_client_ca = http
        .and_then(|h| h.tls.as_ref())
        .is_some_and(|t| t.client_ca.is_some());
    if required && !has_client_ca {
        report.push(
            value.map(Spanned::span),
            &format!("{section}.require_client_cert"),
            format!("client certificates are required but `[http.tls]` has no `client_ca`: add `[http.tls]` with `cert`, `key` and `client_ca` (the CA that signs {signed})"),
        );
    }
    required
}

#[cfg(test)]
mod tests {
    use crate::config::Destination;
    use crate::config::test_support::*;
    use rstest::rstest;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn ok_tls_keys_resolve_paths_and_default_the_server_name() {
        let text = format!(
            "{MINIMAL}[inbound.adt-in.tls]\ncert = \"tls/ob.crt\"\nkey = \"/k/ob.key\"\nclient_ca = \"ca.pem\"\nclient_names = [\"dpi.example\"]\n\
             [outbound.ehr]\nprotocol = \"mllp\"\naddress = \"10.0.0.5:2576\"\n[outbound.ehr.tls]\nca = \"ca.pem\"\n\
             [http]\nbind = \"127.0.0.1:8717\"\nheader_read_timeout = \"3s\"\n[http.tls]\ncert = \"h.crt\"\nkey = \"h.key\"\nclient_ca = \"ca.pem\"\n\
             [push]\nrequire_client_cert = true\nallow_unauthenticated = true\n"
        );
        let config = load(&text, &[]).unwrap();
        let mllp = mllp_channel(&config, "adt-in");
        let tls = mllp.tls.as_ref().unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/ordobridge/tls/ob.crt"));
        assert_eq!(tls.key, PathBuf::from("/k/ob.key"));
        assert!(tls.client_cert_required);
        assert_eq!(tls.client_names, vec!["dpi.example"]);
        let Destination::Mllp(ehr) = &config.outbound["ehr"] else {
            panic!("expected an MLLP destination");
        };
        let client = ehr.tls.as_ref().unwrap();
        assert_eq!(client.server_name, "10.0.0.5");
        assert_eq!(client.cert_and_key, None);
        let http = config.http.as_ref().unwrap();
        assert!(!http.tls.as_ref().unwrap().client_cert_required);
        assert_eq!(http.serve.header_read_timeout, Duration::from_secs(3));
        assert_eq!(http.serve.max_connections, 512);
        assert!(config.push.unwrap().require_client_cert);
    }

    #[rstest]
    #[case::names_without_ca(
        "[inbound.adt-in.tls]\ncert = \"c\"\nkey = \"k\"\nclient_names = [\"a\"]\n",
        "/etc/ordobridge/ob.toml:8:1: `inbound.adt-in.tls.client_names`: `client_names` needs `client_ca` (the CA that signs the client certificates): add `client_ca = \"site-ca.pem\"`"
    )]
    #[case::names_on_http(
        "[http]\nbind = \"127.0.0.1:1\"\n[http.tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\nclient_names = [\"a\"]\n",
        "/etc/ordobridge/ob.toml:10:1: `http.tls.client_names`: `client_names` is for MLLP listeners: on HTTP, `client_ca` decides who may present a certificate"
    )]
    #[case::cert_without_key(
        "[outbound.e]\nprotocol = \"mllp\"\naddress = \"10.0.0.5:1\"\n[outbound.e.tls]\ncert = \"c\"\n",
        "/etc/ordobridge/ob.toml:11:1: `outbound.e.tls.cert`: a client certificate needs both `cert` and `key` (or neither)"
    )]
    #[case::bad_server_name(
        "[outbound.e]\nprotocol = \"mllp\"\naddress = \"10.0.0.5:1\"\n[outbound.e.tls]\nserver_name = \"not a name!\"\n",
        "/etc/ordobridge/ob.toml:11:1: `outbound.e.tls.server_name`: invalid TLS server name `not a name!`: set `server_name` to the DNS name or IP address in the receiver's certificate"
    )]
    #[case::client_cert_without_ca(
        "[http]\nbind = \"127.0.0.1:1\"\n[push]\nrequire_client_cert = true\nallow_unauthenticated = true\n",
        "/etc/ordobridge/ob.toml:11:23: `push.require_client_cert`: client certificates are required but `[http.tls]` has no `client_ca`: add `[http.tls]` with `cert`, `key` and `client_ca` (the CA that signs Posos' certificate)"
    )]
    fn err_tls_keys(#[case] extra: &str, #[case] expected: &str) {
        assert_eq!(errors(&format!("{MINIMAL}{extra}")), vec![expected]);
    }
}
