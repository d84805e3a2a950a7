//! `[documents]`: documents sent into the EHR (`$send-to-ehr`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::push::validate_routes;
use super::raw::RawDocuments;
use super::units::{duration_value, positive, size_value};
use super::{Destination, PushRoute, Report};

/// `[documents]`: documents sent into the EHR.
#[derive(Debug, Clone)]
pub struct DocumentsConfig {
    /// The largest document (decoded payload) accepted; the body read is bounded accordingly.
    pub max_size: usize,
    /// How long the tracking of a document is kept (`None`: forever).
    pub tracking_retention: Option<Duration>,
    /// `sender-identifier` when the request gives none.
    pub application_name: String,
    /// Documents read, validated and mapped at once; more requests wait (bounded memory).
    pub max_in_flight: usize,
    /// Each document is mapped by every route.
    pub routes: Vec<PushRoute>,
}

/// The default of `[documents] max_size`.
pub const DEFAULT_DOCUMENT_MAX_SIZE: usize = 20 * 1024 * 1024;
/// The default of `[documents] tracking_retention`.
pub const DEFAULT_TRACKING_RETENTION: Duration = Duration::from_secs(60 * 86_400);
/// The default of `[documents] max_in_flight`.
pub const DEFAULT_DOCUMENTS_IN_FLIGHT: usize = 4;

/// `[documents]`: limits, tracking retention and routes; needs `[fhir]`.
pub(super) fn validate_documents(
    raw: Spanned<RawDocuments>,
    has_fhir: bool,
    outbound: &BTreeMap<String, Destination>,
    base: &Path,
    report: &mut Report<'_>,
) -> DocumentsConfig {
    let span = raw.span();
    let raw = raw.into_inner();
    if !has_fhir {
        report.push(
            Some(span.clone()),
            "documents",
            "`[documents]` needs a `[fhir]` section (its credentials and networks protect `$send-to-ehr`)".to_string(),
        );
    }
    let max_size = raw
        .max_size
        .and_then(|v| size_value(v, "documents.max_size", report))
        .unwrap_or(DEFAULT_DOCUMENT_MAX_SIZE);
    let tracking_retention = match raw.tracking_retention {
        Some(value) if value.get_ref() == "forever" => None,
        Some(value) => Some(
            duration_value(value, "documents.tracking_retention", report)
                .unwrap_or(DEFAULT_TRACKING_RETENTION),
        ),
        None => Some(DEFAULT_TRACKING_RETENTION),
    };
    let max_in_flight = positive(raw.max_in_flight, "documents.max_in_flight", report)
        .unwrap_or(DEFAULT_DOCUMENTS_IN_FLIGHT);
    if raw.route.is_empty() {
        report.push(
            Some(span),
            "documents.route",
            "no route: add `[[documents.route]]` with `mapping = \"mappings/oru-r01-document.toml\"` and the `destination` (an `[outbound.NAME]`)".to_string(),
        );
    }
    let routes = validate_routes("documents", raw.route, outbound, base, report);
    DocumentsConfig {
        max_size,
        tracking_retention,
        application_name: raw
            .application_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "ordobridge".to_string()),
        max_in_flight,
        routes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_IPP_SYSTEM;
    use crate::config::test_support::*;
    use rstest::rstest;

    /// `[http]`, one destination and the sections under test.
    fn documents_text(sections: &str) -> String {
        format!(
            "[store]\npath = \"ob.db\"\n[http]\nbind = \"127.0.0.1:8717\"\n[outbound.ehr]\nprotocol = \"mllp\"\naddress = \"127.0.0.1:2576\"\n{sections}"
        )
    }

    fn route(mapping: &str, destination: &str) -> String {
        format!(
            "[[documents.route]]\nmapping = \"{ROOT}/mappings/{mapping}\"\ndestination = \"{destination}\"\n"
        )
    }

    #[test]
    fn ok_documents_defaults() {
        let text = documents_text(&format!(
            "[fhir]\ntoken = \"{TOKEN}\"\n[documents]\n{}",
            route("oru-r01-document.toml", "ehr")
        ));
        let config = load(&text, &[]).unwrap();
        let fhir = config.fhir.unwrap();
        assert_eq!(fhir.token.as_deref(), Some(TOKEN));
        assert_eq!(fhir.ipp_system, DEFAULT_IPP_SYSTEM);
        assert!(fhir.allow.allows("127.0.0.1".parse().unwrap()));
        assert!(!fhir.allow.allows("10.0.0.1".parse().unwrap()));
        let documents = config.documents.unwrap();
        assert_eq!(documents.max_size, DEFAULT_DOCUMENT_MAX_SIZE);
        assert_eq!(
            documents.tracking_retention,
            Some(DEFAULT_TRACKING_RETENTION)
        );
        assert_eq!(documents.max_in_flight, DEFAULT_DOCUMENTS_IN_FLIGHT);
        assert_eq!(documents.routes.len(), 1);
        assert_eq!(
            config.store.retention.document_tracking,
            Some(DEFAULT_TRACKING_RETENTION)
        );
    }

    #[rstest]
    #[case::err_fhir_open(
        "[fhir]\n",
        "/etc/ordobridge/ob.toml: `fhir`: the FHIR endpoints give patient data to and take documents from anybody: set `token_file = \"/var/lib/ordobridge/fhir-token\"` (generated at first start), `token`, or `basic_user` and `basic_password`; or, for a closed test network only, `allow_unauthenticated = true`"
    )]
    #[case::err_fhir_token_weak(
        "[fhir]\ntoken = \"short\"\n",
        "/etc/ordobridge/ob.toml:9:9: `fhir.token`: the fhir token is too short (5 characters; at least 32): generate one with `openssl rand -base64 32`"
    )]
    #[case::err_fhir_allow(
        "[fhir]\nallow_unauthenticated = true\nallow = [\"10.0.0.0/33\"]\n",
        "/etc/ordobridge/ob.toml:10:9: `fhir.allow`: invalid network `10.0.0.0/33`: the prefix length must be at most 32: write networks such as `127.0.0.0/8`, `10.1.0.0/16` or `::1/128`"
    )]
    #[case::err_documents_without_fhir(
        "[documents]\n[[documents.route]]\nmapping = \"ROOT/mappings/mdm-t02.toml\"\ndestination = \"ehr\"\n",
        "/etc/ordobridge/ob.toml:8:1: `documents`: `[documents]` needs a `[fhir]` section (its credentials and networks protect `$send-to-ehr`)"
    )]
    #[case::err_documents_without_route(
        "[fhir]\nallow_unauthenticated = true\n[documents]\nmax_size = \"1MiB\"\n",
        "/etc/ordobridge/ob.toml:10:1: `documents.route`: no route: add `[[documents.route]]` with `mapping = \"mappings/oru-r01-document.toml\"` and the `destination` (an `[outbound.NAME]`)"
    )]
    #[case::err_documents_route_destination(
        "[fhir]\nallow_unauthenticated = true\n[documents]\n[[documents.route]]\nmapping = \"ROOT/mappings/mdm-t02.toml\"\ndestination = \"nowhere\"\n",
        "/etc/ordobridge/ob.toml:13:15: `documents.route[0].destination`: no `[outbound.nowhere]` destination (known: ehr)"
    )]
    #[case::err_tracking_retention(
        "[fhir]\nallow_unauthenticated = true\n[documents]\ntracking_retention = \"long\"\n[[documents.route]]\nmapping = \"ROOT/mappings/mdm-t02.toml\"\ndestination = \"ehr\"\n",
        "/etc/ordobridge/ob.toml:11:22: `documents.tracking_retention`: invalid duration `long`: expected a number with a unit, such as `500ms`, `30s`, `15m` or `1h`"
    )]
    fn err_fhir_and_documents(#[case] sections: &str, #[case] expected: &str) {
        let text = documents_text(&sections.replace("ROOT", ROOT));
        assert_eq!(errors(&text), vec![expected]);
    }
}
