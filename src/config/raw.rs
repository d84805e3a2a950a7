//! Raw (deserialized, not yet validated) sections. Values that need checking keep their span.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) store: Option<RawStore>,
    pub(super) log: Option<RawLog>,
    #[serde(default)]
    pub(super) inbound: BTreeMap<String, Spanned<RawInbound>>,
    pub(super) http: Option<RawHttp>,
    pub(super) census: Option<RawCensus>,
    pub(super) launch: Option<Spanned<RawLaunch>>,
    pub(super) posos: Option<Spanned<RawPosos>>,
    #[serde(default)]
    pub(super) outbound: BTreeMap<String, RawOutbound>,
    pub(super) push: Option<RawPush>,
    pub(super) console: Option<Spanned<RawConsole>>,
    pub(super) fhir: Option<Spanned<RawFhir>>,
    pub(super) documents: Option<Spanned<RawDocuments>>,
    pub(super) cluster: Option<crate::store::settings::RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    #[serde(default)]
    pub(super) users: BTreeMap<String, RawConsoleUser>,
    pub(super) session_ttl: Option<Spanned<String>>,
    pub(super) login_attempts: Option<Spanned<i64>>,
    pub(super) login_window: Option<Spanned<String>>,
    pub(super) language: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_plain_http: bool,
    /// Single sign-on: the header a trusted reverse proxy names the user in.
    pub(super) sso_header: Option<Spanned<String>>,
    /// The reverse proxies' networks: the only peers whose `sso_header` is believed.
    pub(super) trusted_proxies: Option<Spanned<Vec<String>>>,
    /// Roles of the names the proxy sends (`NAME = "viewer" | "operator"`).
    #[serde(default)]
    pub(super) sso_users: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFhir {
    pub(super) token: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_unauthenticated: bool,
    pub(super) basic_user: Option<Spanned<String>>,
    pub(super) basic_password: Option<Spanned<String>>,
    pub(super) allow: Option<Spanned<Vec<String>>>,
    pub(super) require_client_cert: Option<Spanned<bool>>,
    pub(super) ipp_system: Option<String>,
    pub(super) nda_system: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsoleUser {
    pub(super) role: Spanned<String>,
    pub(super) password_hash: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDocuments {
    pub(super) max_size: Option<Spanned<SizeValue>>,
    pub(super) tracking_retention: Option<Spanned<String>>,
    pub(super) application_name: Option<String>,
    pub(super) max_in_flight: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) route: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPush {
    pub(super) token: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_unauthenticated: bool,
    pub(super) max_body: Option<Spanned<SizeValue>>,
    pub(super) basic_user: Option<Spanned<String>>,
    pub(super) basic_password: Option<Spanned<String>>,
    pub(super) hold_unknown_for: Option<Spanned<String>>,
    pub(super) retention: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) route: Vec<RawRoute>,
    pub(super) require_client_cert: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) mapping: Spanned<String>,
    pub(super) destination: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbound {
    pub(super) protocol: Spanned<String>,
    pub(super) alert_after: Option<Spanned<String>>,
    // mllp
    pub(super) address: Option<Spanned<String>>,
    pub(super) ack_timeout: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) retry_initial: Option<Spanned<String>>,
    pub(super) retry_max: Option<Spanned<String>>,
    pub(super) max_attempts: Option<u32>,
    pub(super) tls: Option<Spanned<RawClientTls>>,
    // file
    pub(super) folder: Option<String>,
    pub(super) name_template: Option<String>,
    pub(super) witness_suffix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCensus {
    pub(super) ipp_authority: Option<String>,
    pub(super) retention: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) bind: Spanned<String>,
    pub(super) admin_allow: Option<Spanned<Vec<String>>>,
    pub(super) admin_token: Option<Spanned<String>>,
    pub(super) hosts: Option<Vec<String>>,
    pub(super) request_timeout: Option<Spanned<String>>,
    pub(super) frame_ancestors: Option<Vec<String>>,
    pub(super) header_read_timeout: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) tls: Option<Spanned<RawServerTls>>,
}

/// `[inbound.NAME.tls]` and `[http.tls]` (where `client_names` is refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerTls {
    pub(super) cert: String,
    pub(super) key: String,
    pub(super) client_ca: Option<String>,
    pub(super) client_names: Option<Vec<String>>,
}

/// `[outbound.NAME.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientTls {
    pub(super) ca: Option<String>,
    pub(super) server_name: Option<String>,
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLaunch {
    pub(super) mapping: Spanned<String>,
    pub(super) guide_mapping: Option<Spanned<String>>,
    pub(super) parameters: Option<crate::http::ParameterNames>,
    pub(super) allow: Option<Spanned<Vec<String>>>,
    pub(super) signing_secret: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) require_signature: bool,
    #[serde(default)]
    pub(super) allow_unsigned_links: bool,
    pub(super) max_link_age: Option<Spanned<String>>,
    pub(super) unknown_patient: Option<crate::http::UnknownPatient>,
    /// The launch page (`mode=page`): `iframe` (default) or `popup`.
    pub(super) page_mode: Option<crate::http::PageMode>,
    /// The origin of the Scan & Go pages (default: that of the Posos `base_url`).
    pub(super) posos_origin: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPosos {
    pub(super) mode: Spanned<String>,
    pub(super) oauth_client_id: Option<String>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) request_timeout: Option<Spanned<String>>,
    pub(super) retries: Option<u32>,
    pub(super) environment: Option<Spanned<String>>,
    pub(super) simulator: Option<RawSimulator>,
    #[serde(default)]
    pub(super) environments: BTreeMap<String, RawEnvironment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSimulator {
    pub(super) key_file: String,
    pub(super) public_key_file: String,
    pub(super) push_url: Option<String>,
    pub(super) push_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvironment {
    pub(super) base_url: Spanned<String>,
    pub(super) key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<Spanned<String>>,
    // The backend keys, read by `store::settings` (issue 14).
    pub(super) backend: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) pool_size: Option<Spanned<i64>>,
    pub(super) statement_timeout: Option<Spanned<String>>,
    pub(super) sslmode: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) allow_plain: Option<Spanned<bool>>,
    pub(super) retention: Option<Spanned<String>>,
    pub(super) rejected_retention: Option<Spanned<String>>,
    pub(super) prune_interval: Option<Spanned<String>>,
    pub(super) prune_batch: Option<Spanned<i64>>,
    pub(super) queue_capacity: Option<Spanned<i64>>,
    pub(super) max_batch: Option<Spanned<i64>>,
    pub(super) intake_log: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
    pub(super) format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbound {
    pub(super) protocol: Spanned<String>,
    pub(super) bind: Option<Spanned<String>>,
    pub(super) charset: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) log_phi: bool,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) max_connections_per_peer: Option<Spanned<i64>>,
    pub(super) rejected_max_per_hour: Option<Spanned<i64>>,
    pub(super) retention: Option<Spanned<String>>,
    pub(super) allow: Option<Spanned<Vec<String>>>,
    pub(super) max_frame_size: Option<Spanned<SizeValue>>,
    pub(super) read_timeout: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<RawServerTls>>,
    // file channels
    pub(super) folder: Option<Spanned<String>>,
    pub(super) patterns: Option<Vec<String>>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) poll_interval: Option<Spanned<String>>,
    pub(super) ready: Option<Spanned<String>>,
    pub(super) stable_for: Option<Spanned<String>>,
    pub(super) witness_suffixes: Option<Vec<String>>,
    pub(super) after_success: Option<Spanned<String>>,
    pub(super) archive_folder: Option<String>,
    pub(super) error_folder: Option<String>,
    pub(super) max_file_size: Option<Spanned<SizeValue>>,
    #[serde(default)]
    pub(super) create_folder: bool,
}

/// A size written as a number of bytes or as text with a unit (`64KiB`, `1MiB`, `2MB`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum SizeValue {
    Bytes(i64),
    Text(String),
}
