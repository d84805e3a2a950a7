//! `[fhir]`: who may search patients and encounters and send documents.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::raw::RawFhir;
use super::secrets::{BasicAuth, Secrets, validate_credentials};
use super::tls::require_client_cert;
use super::{HttpConfig, Report};

/// `[fhir]`: who may search patients and encounters and send documents.
#[derive(Debug, Clone)]
pub struct FhirConfig {
    /// The bearer token applications send (or read from `token_file` at start).
    pub token: Option<String>,
    /// Where the bearer token is kept when `token` is empty (generated at the first start).
    pub token_file: Option<PathBuf>,
    /// Basic credentials applications may send instead.
    pub basic: Option<BasicAuth>,
    /// The operator accepts unauthenticated callers (a warning at every start).
    pub allow_unauthenticated: bool,
    /// Source networks that may call `/fhir/Patient`, `/fhir/Encounter` and the document
    /// operations (default loopback).
    pub allow: crate::http::AllowList,
    /// Refuse callers whose HTTPS connection presented no verified client certificate.
    pub require_client_cert: bool,
    /// The identifier system of the IPP in Patient resources and searches.
    pub ipp_system: String,
    /// The identifier system of the NDA (visit number) in Encounter resources and searches.
    pub nda_system: String,
}

/// The default of `[fhir] ipp_system`.
pub const DEFAULT_IPP_SYSTEM: &str = "urn:ordobridge:ipp";
/// The default of `[fhir] nda_system`.
pub const DEFAULT_NDA_SYSTEM: &str = "urn:ordobridge:nda";

/// `[fhir]`: credentials (fail closed, as `[push]`), the networks allowed, identifier systems.
pub(super) fn validate_fhir(
    raw: Spanned<RawFhir>,
    http: Option<&HttpConfig>,
    base: &Path,
    report: &mut Report<'_>,
) -> FhirConfig {
    let span = raw.span();
    let raw = raw.into_inner();
    if http.is_none() {
        report.push(
            Some(span),
            "fhir",
            "`[fhir]` needs an `[http]` section (where applications connect)".to_string(),
        );
    }
    let require_client_cert = require_client_cert(
        raw.require_client_cert.as_ref(),
        "fhir",
        http,
        "the applications' certificates",
        report,
    );
    let allow = match &raw.allow {
        Some(allow) => match crate::http::AllowList::parse(allow.get_ref()) {
            Ok(list) => list,
            Err(e) => {
                report.push(
                    Some(allow.span()),
                    "fhir.allow",
                    format!(
                        "{e}: write networks such as `127.0.0.0/8`, `10.1.0.0/16` or `::1/128`"
                    ),
                );
                crate::http::AllowList::loopback()
            }
        },
        None => crate::http::AllowList::loopback(),
    };
    let (token, token_file, basic) = validate_credentials(
        Secrets {
            section: "fhir",
            token: raw.token,
            token_file: raw.token_file,
            basic_user: raw.basic_user,
            basic_password: raw.basic_password,
            allow_unauthenticated: raw.allow_unauthenticated,
            open_door: "the FHIR endpoints give patient data to and take documents from anybody",
        },
        base,
        report,
    );
    FhirConfig {
        token,
        token_file,
        basic,
        allow_unauthenticated: raw.allow_unauthenticated,
        allow,
        require_client_cert,
        ipp_system: raw
            .ipp_system
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_IPP_SYSTEM.to_string()),
        nda_system: raw
            .nda_system
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_NDA_SYSTEM.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn err_fhir_needs_http() {
        let text = "[store]\npath = \"ob.db\"\n[fhir]\nallow_unauthenticated = true\n";
        assert_eq!(
            errors(text),
            vec![
                "/etc/ordobridge/ob.toml:3:1: `fhir`: `[fhir]` needs an `[http]` section (where applications connect)"
            ]
        );
    }
}
