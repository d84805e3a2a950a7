//! The configuration: one TOML file, validated at start with errors that name the line and key.
//!
//! Loading goes in three steps, each reporting every problem it finds rather than the first:
//!
//! 1. parse the TOML into a spanned tree (syntax errors carry their line);
//! 2. expand `${VAR}` and `${VAR:-default}` in every string value from the environment (`$$`
//!    is a literal `$`), so a systemd `EnvironmentFile` or a test can set ports and folders;
//!    and `${credential:NAME}` with the content of `$CREDENTIALS_DIRECTORY/NAME` (one final
//!    line end removed), the secret systemd passes with `LoadCredential=NAME:PATH`;
//! 3. deserialize into typed sections and validate values (addresses, durations, sizes,
//!    charsets), resolving relative paths against the folder of the config file.
//!
//! Expansion happens on string values only, never on the raw text: a variable holding a quote
//! cannot change the structure of the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::hl7::Charset;

/// A validated configuration, ready for the engine.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, for messages.
    pub source: PathBuf,
    pub store: StoreConfig,
    pub log: LogConfig,
    /// Inbound channels by name, in name order.
    pub inbound: BTreeMap<String, InboundChannel>,
    /// The HTTP server (launch, simulator, health); `None` when `[http]` is absent.
    pub http: Option<HttpConfig>,
    /// How EHR buttons launch Posos sessions; needs `[http]` and `[posos]`.
    pub launch: Option<LaunchConfig>,
    /// The Posos service, or the built-in simulator.
    pub posos: Option<PososConfig>,
    /// How ADT and HPRIM messages feed the census.
    pub census: crate::census::CensusSettings,
    /// Outbound destinations by name: each has its own durable queue and worker.
    pub outbound: BTreeMap<String, Destination>,
    /// `[outbound.NAME] alert_after` by destination: `/ready` fails and `/status` says
    /// `attention` when the oldest pending message waits longer.
    pub alert_after: BTreeMap<String, Duration>,
    /// The FHIR push endpoint (`POST /fhir`); needs `[http]`.
    pub push: Option<PushConfig>,
    /// The web console under `/console/`; needs `[http]`.
    pub console: Option<crate::console::ConsoleSettings>,
    /// The FHIR Patient/Encounter search and the document operations under `/fhir`; needs
    /// `[http]`.
    pub fhir: Option<FhirConfig>,
    /// `CommunicationRequest/$send-to-ehr` and its tracking; needs `[fhir]`.
    pub documents: Option<DocumentsConfig>,
    /// `[cluster]`: this node's name, how fast another node takes over (PostgreSQL store).
    pub cluster: crate::store::settings::ClusterSettings,
}

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

/// Where pushed prescriptions go.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The bearer token Posos may send. With neither it nor `basic`, any caller is accepted,
    /// which `check` refuses unless `allow_unauthenticated` says so.
    pub token: Option<String>,
    /// Where the bearer token is kept when `token` is not written in the configuration: read
    /// at start, generated there (0600) at the first start when the file does not exist yet.
    pub token_file: Option<PathBuf>,
    /// The operator accepts unauthenticated pushes (a warning at every start).
    pub allow_unauthenticated: bool,
    /// The largest body `POST /fhir` reads; past it 413 (the first 4 KiB journaled).
    pub max_body: usize,
    /// HTTP basic credentials Posos may send instead of (or beside) the bearer token.
    pub basic: Option<BasicAuth>,
    /// How long a bundle for a patient the census does not know waits for its ADT before it
    /// is mapped with what the bundle says; zero maps at once.
    pub hold_unknown_for: Duration,
    /// Each pushed bundle is mapped by every route.
    pub routes: Vec<PushRoute>,
    /// Refuse `POST /fhir` from a client without a verified certificate (`[http.tls]
    /// client_ca`).
    pub require_client_cert: bool,
}

/// The user and password of HTTP basic authentication (`[push] basic_user`, `basic_password`).
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The user name (no `:`, RFC 7617).
    pub user: String,
    /// The password.
    pub password: String,
}

/// Never prints the password (configurations get logged and dumped).
impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// The default of `[push] hold_unknown_for`: the ADT A01/A04 normally precedes the
/// prescription by far, so a quarter of an hour covers a late or re-sent ADT without
/// delaying a prescription for long.
pub const DEFAULT_HOLD_UNKNOWN_FOR: Duration = Duration::from_secs(15 * 60);

/// The default of `[outbound.NAME] alert_after`: a message waiting longer than this for its
/// destination makes `/ready` fail.
pub const DEFAULT_ALERT_AFTER: Duration = Duration::from_secs(15 * 60);

/// The default of `[push] max_body`: a bundle carrying a prescription PDF fits.
pub const DEFAULT_PUSH_MAX_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct PushRoute {
    /// The mapping file (absolute).
    pub mapping: PathBuf,
    /// An `[outbound.NAME]` destination.
    pub destination: String,
}

/// Where outbound messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// An MLLP receiver (the EHR), ACK checked against MSH-10.
    Mllp(crate::delivery::DestinationSettings),
    /// A drop folder: `NAME.tmp`, fsync, rename, fsync the folder, then the witness.
    File(crate::delivery::FileDestinationSettings),
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    /// TLS on the HTTP listener (`[http.tls]`); the client certificate is optional there.
    pub tls: Option<crate::tls::ServerTlsSettings>,
    /// Header read timeout and connection limit of the accept loop.
    pub serve: crate::http::ServeSettings,
    /// Hardening of every route: who reaches the admin routes, which Host names are served,
    /// timeouts and security headers.
    pub guard: crate::http::HttpGuardSettings,
}

#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// The launch settings, with the scan-token mapping already loaded and checked.
    pub settings: crate::http::LaunchSettings,
    /// The mapping file, for messages.
    pub mapping_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PososConfig {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retries: u32,
    pub oauth_client_id: String,
    pub mode: PososMode,
}

#[derive(Debug, Clone)]
pub enum PososMode {
    /// The built-in simulator, served under `/simulator` on the HTTP server; the key file is
    /// a test service account whose public key the simulator checks.
    Simulator {
        key_file: PathBuf,
        public_key_file: PathBuf,
        /// Where "Import to DPI" pushes the bundle (None: the button reports an error).
        push_url: Option<String>,
        push_token: Option<String>,
    },
    /// The real service: one environment (preprod, production) chosen by `environment`.
    Remote {
        environment: String,
        base_url: String,
        key_file: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `[store] backend`: SQLite (the default, at `path`) or PostgreSQL.
    pub backend: crate::store::settings::Backend,
    /// The SQLite database file (absolute); empty on PostgreSQL.
    pub path: PathBuf,
    /// How many messages may wait for the writer before intake waits (backpressure).
    pub queue_capacity: usize,
    /// The most messages committed in one transaction.
    pub max_batch: usize,
    /// What the background pruner deletes, and how often.
    pub retention: RetentionConfig,
}

/// The journal channel of pushed bundles (`[push] retention` applies to it). Reserved: no
/// inbound channel may take this name.
pub const PUSH_CHANNEL: &str = "posos-push";

/// The journal channel of documents (`$send-to-ehr`). Reserved like [`PUSH_CHANNEL`].
pub const DOCUMENTS_CHANNEL: &str = "documents";

/// `[store] retention`, `rejected_retention`, `prune_interval`, `prune_batch`, with the
/// channels' `retention` (`[inbound.NAME]`, `[push]`) and `[census] retention`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Journal rows (and finished outbound messages, released holds) older than this go;
    /// `None`: kept forever.
    pub retention: Option<Duration>,
    /// Rejected journal rows older than this go (junk cannot fill the disk).
    pub rejected_retention: Option<Duration>,
    /// Journal channels with a retention of their own, in place of `retention` (`None`:
    /// forever); a channel's rejected rows go at the shorter of it and `rejected_retention`.
    pub channels: BTreeMap<String, Option<Duration>>,
    /// Encounters discharged longer ago than this go, then patients left without encounters
    /// and not named since; `None`: the census is kept forever.
    pub census: Option<Duration>,
    /// Time between two prunes.
    pub interval: Duration,
    /// Rows of each kind deleted per transaction.
    pub batch: usize,
    /// `[documents] tracking_retention`: document tracking rows older than this go; `None`:
    /// kept (no `[documents]`, or `forever`).
    pub document_tracking: Option<Duration>,
}

impl RetentionConfig {
    /// 90 days of journal, 30 days of rejected frames, two years of census, a prune every
    /// hour by 500 rows.
    pub const DEFAULT: RetentionConfig = RetentionConfig {
        retention: Some(Duration::from_secs(90 * 86_400)),
        rejected_retention: Some(Duration::from_secs(30 * 86_400)),
        channels: BTreeMap::new(),
        census: Some(Duration::from_secs(2 * 365 * 86_400)),
        interval: Duration::from_secs(3600),
        batch: 500,
        document_tracking: None,
    };

    /// The cutoffs at `now` (the census's in the machine's time zone, the one ADT times are
    /// written in); `None` when nothing is ever pruned.
    pub fn plan(&self, now: jiff::Timestamp) -> Option<crate::store::RetentionPlan> {
        if self.retention.is_none()
            && self.rejected_retention.is_none()
            && self.census.is_none()
            && self.channels.values().all(Option::is_none)
            && self.document_tracking.is_none()
        {
            return None;
        }
        let mut plan =
            crate::store::RetentionPlan::keeping(now, self.retention, self.rejected_retention)
                .with_census(self.census, &jiff::tz::TimeZone::system())
                .with_document_tracking(self.document_tracking);
        for (channel, retention) in &self.channels {
            plan = plan.with_channel(channel, *retention);
        }
        Some(plan)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `ordobridge=debug`; `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

/// One inbound channel: where messages come from and how they are read.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundChannel {
    pub name: String,
    /// Character set forced on every message of this channel; `None` follows MSH-18.
    pub charset: Option<Charset>,
    /// Log message bodies and identifiers of this channel (PHI) at debug level.
    pub log_phi: bool,
    pub kind: InboundKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InboundKind {
    Mllp(MllpListenerConfig),
    File(FileInboxConfig),
}

/// What a file-drop channel expects in its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Hl7,
    Hprim,
    /// Decided per file from its first bytes (`MSH`, `FHS`, `BHS` → HL7; `H` → HPRIM).
    Auto,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileInboxConfig {
    pub format: FileFormat,
    /// Create the folder at start when missing (local folders; leave false on network mounts,
    /// where a missing folder means the mount is down).
    pub create_folder: bool,
    pub inbox: crate::filedrop::InboxSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MllpListenerConfig {
    pub bind: SocketAddr,
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    /// A frame started but not finished within this time closes the connection.
    pub read_timeout: Duration,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// TLS on this listener (`[inbound.NAME.tls]`); a client certificate is required when
    /// `client_ca` is set.
    pub tls: Option<crate::tls::ServerTlsSettings>,
    /// `allow`: source networks that may connect; `None` (key absent) lets any address in.
    pub allow: Option<crate::http::AllowList>,
    /// `max_connections_per_peer`: connections one address may hold at once.
    pub max_connections_per_peer: usize,
    /// `rejected_max_per_hour`: rejected frames journaled per hour; past it they are answered
    /// and counted, not journaled (junk cannot fill the disk).
    pub rejected_max_per_hour: usize,
}

/// The default of `[inbound.NAME] rejected_max_per_hour`: one a second on average, far above
/// what a working sender produces, far below what a flood of junk would write.
pub const DEFAULT_REJECTED_MAX_PER_HOUR: usize = 3600;

/// One problem in the configuration, located in the file (the report mappings use too).
pub use crate::diagnostics::Diagnostic as ConfigError;
/// Every problem found in a configuration file.
pub use crate::diagnostics::Diagnostics as ConfigErrors;
pub(crate) use crate::diagnostics::line_column;

impl Config {
    /// Reads, expands and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: String::new(),
                message: format!("cannot read the configuration file: {e}"),
            }])
        })?;
        Self::from_str_with_env(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses configuration text; `path` locates it (for messages and relative paths) and `env`
    /// answers `${VAR}` look-ups, so tests need not touch the process environment.
    pub fn from_str_with_env(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut report = Report {
            file: path.to_path_buf(),
            text,
            errors: Vec::new(),
        };
        let mut root = match DeTable::parse(text) {
            Ok(root) => root,
            Err(e) => {
                report.push(e.span(), "", e.message().trim().to_string());
                return Err(ConfigErrors(report.errors));
            }
        };
        expand_table(root.get_mut(), "", env, &mut report);
        if !report.errors.is_empty() {
            return Err(ConfigErrors(report.errors));
        }
        let raw = match RawConfig::deserialize(toml::de::Deserializer::from(root)) {
            Ok(raw) => raw,
            Err(e) => {
                report.push(e.span(), "", e.message().trim().to_string());
                return Err(ConfigErrors(report.errors));
            }
        };
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let config = raw.validate(path, &base, &mut report);
        if report.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(report.errors))
        }
    }
}

/// Collects located errors while the configuration is checked.
struct Report<'t> {
    file: PathBuf,
    text: &'t str,
    errors: Vec<ConfigError>,
}

impl Report<'_> {
    fn push(&mut self, span: Option<Range<usize>>, key: &str, message: String) {
        let line = span.map(|s| line_column(self.text, s.start));
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            key: key.to_string(),
            message,
        });
    }
}

fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn expand_table(
    table: &mut DeTable<'_>,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
    report: &mut Report<'_>,
) {
    for (key, value) in table.iter_mut() {
        let key = join_key(prefix, key.get_ref());
        expand_value(value, &key, env, report);
    }
}

fn expand_value(
    value: &mut Spanned<DeValue<'_>>,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
    report: &mut Report<'_>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) => {
            if s.contains('$') {
                match expand_env(s, env) {
                    Ok(expanded) => *s = expanded.into(),
                    Err(message) => report.push(Some(span), key, message),
                }
            }
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{key}[{i}]"), env, report);
            }
        }
        DeValue::Table(table) => expand_table(table, key, env, report),
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => {}
    }
}

/// Expands `${VAR}`, `${VAR:-default}` and `$$` in one string value.
fn expand_env(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                return Err(format!(
                    "unterminated `${{` in `{input}`: expected `}}` (write `$$` for a literal `$`)"
                ));
            };
            let inner = &body[..close];
            if let Some(credential) = inner.strip_prefix("credential:") {
                out.push_str(&read_credential(credential, env)?);
                rest = &body[close + 1..];
                continue;
            }
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid_name = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid_name {
                return Err(format!(
                    "invalid variable name `{name}` in `{input}`: use letters, digits and `_`"
                ));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set: set it, or write `${{{name}:-default}}`"
                    ));
                }
            }
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The content of the systemd credential `name` (`$CREDENTIALS_DIRECTORY/NAME`, set by
/// `LoadCredential=NAME:PATH`), without its final line end. The value is never put in an error.
fn read_credential(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        return Err(format!(
            "invalid credential name `{name}` in `${{credential:{name}}}`: use letters, digits, `_`, `-` and `.`"
        ));
    }
    let Some(dir) = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) else {
        return Err(format!(
            "`${{credential:{name}}}` needs the environment variable `CREDENTIALS_DIRECTORY`, which systemd sets for a unit with `LoadCredential={name}:/etc/ordobridge/credentials/{name}`: run under that unit, or set `CREDENTIALS_DIRECTORY` to the folder holding the file `{name}`"
        ));
    };
    let path = Path::new(&dir).join(name);
    let mut value = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read credential `{name}` at `{}`: {e}: check the unit's `LoadCredential={name}:…` line and that the file exists",
            path.display()
        )
    })?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Raw (deserialized, not yet validated) sections. Values that need checking keep their span.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: Option<RawStore>,
    log: Option<RawLog>,
    #[serde(default)]
    inbound: BTreeMap<String, Spanned<RawInbound>>,
    http: Option<RawHttp>,
    census: Option<RawCensus>,
    launch: Option<Spanned<RawLaunch>>,
    posos: Option<Spanned<RawPosos>>,
    #[serde(default)]
    outbound: BTreeMap<String, RawOutbound>,
    push: Option<RawPush>,
    console: Option<Spanned<RawConsole>>,
    fhir: Option<Spanned<RawFhir>>,
    documents: Option<Spanned<RawDocuments>>,
    cluster: Option<crate::store::settings::RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    #[serde(default)]
    users: BTreeMap<String, RawConsoleUser>,
    session_ttl: Option<Spanned<String>>,
    login_attempts: Option<Spanned<i64>>,
    login_window: Option<Spanned<String>>,
    language: Option<Spanned<String>>,
    #[serde(default)]
    allow_plain_http: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFhir {
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    #[serde(default)]
    allow_unauthenticated: bool,
    basic_user: Option<Spanned<String>>,
    basic_password: Option<Spanned<String>>,
    allow: Option<Spanned<Vec<String>>>,
    require_client_cert: Option<Spanned<bool>>,
    ipp_system: Option<String>,
    nda_system: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsoleUser {
    role: Spanned<String>,
    password_hash: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocuments {
    max_size: Option<Spanned<SizeValue>>,
    tracking_retention: Option<Spanned<String>>,
    application_name: Option<String>,
    max_in_flight: Option<Spanned<i64>>,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    #[serde(default)]
    allow_unauthenticated: bool,
    max_body: Option<Spanned<SizeValue>>,
    basic_user: Option<Spanned<String>>,
    basic_password: Option<Spanned<String>>,
    hold_unknown_for: Option<Spanned<String>>,
    retention: Option<Spanned<String>>,
    #[serde(default)]
    route: Vec<RawRoute>,
    require_client_cert: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    mapping: Spanned<String>,
    destination: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbound {
    protocol: Spanned<String>,
    alert_after: Option<Spanned<String>>,
    // mllp
    address: Option<Spanned<String>>,
    ack_timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    retry_initial: Option<Spanned<String>>,
    retry_max: Option<Spanned<String>>,
    max_attempts: Option<u32>,
    tls: Option<Spanned<RawClientTls>>,
    // file
    folder: Option<String>,
    name_template: Option<String>,
    witness_suffix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCensus {
    ipp_authority: Option<String>,
    retention: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    bind: Spanned<String>,
    admin_allow: Option<Spanned<Vec<String>>>,
    admin_token: Option<Spanned<String>>,
    hosts: Option<Vec<String>>,
    request_timeout: Option<Spanned<String>>,
    frame_ancestors: Option<Vec<String>>,
    header_read_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    tls: Option<Spanned<RawServerTls>>,
}

/// `[inbound.NAME.tls]` and `[http.tls]` (where `client_names` is refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    cert: String,
    key: String,
    client_ca: Option<String>,
    client_names: Option<Vec<String>>,
}

/// `[outbound.NAME.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientTls {
    ca: Option<String>,
    server_name: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLaunch {
    mapping: Spanned<String>,
    guide_mapping: Option<Spanned<String>>,
    parameters: Option<crate::http::ParameterNames>,
    allow: Option<Spanned<Vec<String>>>,
    signing_secret: Option<Spanned<String>>,
    #[serde(default)]
    require_signature: bool,
    #[serde(default)]
    allow_unsigned_links: bool,
    max_link_age: Option<Spanned<String>>,
    unknown_patient: Option<crate::http::UnknownPatient>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPosos {
    mode: Spanned<String>,
    oauth_client_id: Option<String>,
    connect_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    retries: Option<u32>,
    environment: Option<Spanned<String>>,
    simulator: Option<RawSimulator>,
    #[serde(default)]
    environments: BTreeMap<String, RawEnvironment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulator {
    key_file: String,
    public_key_file: String,
    push_url: Option<String>,
    push_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    base_url: Spanned<String>,
    key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<Spanned<String>>,
    // The backend keys, read by `store::settings` (issue 14).
    backend: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    pool_size: Option<Spanned<i64>>,
    statement_timeout: Option<Spanned<String>>,
    sslmode: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    allow_plain: Option<Spanned<bool>>,
    retention: Option<Spanned<String>>,
    rejected_retention: Option<Spanned<String>>,
    prune_interval: Option<Spanned<String>>,
    prune_batch: Option<Spanned<i64>>,
    queue_capacity: Option<Spanned<i64>>,
    max_batch: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    protocol: Spanned<String>,
    bind: Option<Spanned<String>>,
    charset: Option<Spanned<String>>,
    #[serde(default)]
    log_phi: bool,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_peer: Option<Spanned<i64>>,
    rejected_max_per_hour: Option<Spanned<i64>>,
    retention: Option<Spanned<String>>,
    allow: Option<Spanned<Vec<String>>>,
    max_frame_size: Option<Spanned<SizeValue>>,
    read_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    tls: Option<Spanned<RawServerTls>>,
    // file channels
    folder: Option<Spanned<String>>,
    patterns: Option<Vec<String>>,
    format: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
    ready: Option<Spanned<String>>,
    stable_for: Option<Spanned<String>>,
    witness_suffixes: Option<Vec<String>>,
    after_success: Option<Spanned<String>>,
    archive_folder: Option<String>,
    error_folder: Option<String>,
    max_file_size: Option<Spanned<SizeValue>>,
    #[serde(default)]
    create_folder: bool,
}

/// A size written as a number of bytes or as text with a unit (`64KiB`, `1MiB`, `2MB`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(i64),
    Text(String),
}

// The configuration's defaults are the library's: one place each.
const DEFAULT_QUEUE_CAPACITY: usize = crate::store::StoreOptions::DEFAULT.queue_capacity;
const DEFAULT_MAX_BATCH: usize = crate::store::StoreOptions::DEFAULT.max_batch;
const DEFAULT_MAX_CONNECTIONS: usize = crate::mllp::server::ServerSettings::DEFAULT.max_connections;
const DEFAULT_MAX_FRAME_BYTES: usize = crate::mllp::server::ServerSettings::DEFAULT.max_frame_bytes;
const DEFAULT_READ_TIMEOUT: Duration = crate::mllp::server::ServerSettings::DEFAULT.read_timeout;
const DEFAULT_IDLE_TIMEOUT: Duration = crate::mllp::server::ServerSettings::DEFAULT.idle_timeout;

impl RawConfig {
    fn validate(self, file: &Path, base: &Path, report: &mut Report<'_>) -> Config {
        let mut store = match self.store {
            Some(mut store) => StoreConfig {
                retention: retention(&store, report),
                backend: store_backend(&mut store, base, report),
                path: store
                    .path
                    .as_ref()
                    .map(|path| resolve_path(base, path.get_ref()))
                    .unwrap_or_default(),
                queue_capacity: positive(store.queue_capacity, "store.queue_capacity", report)
                    .unwrap_or(DEFAULT_QUEUE_CAPACITY),
                max_batch: positive(store.max_batch, "store.max_batch", report)
                    .unwrap_or(DEFAULT_MAX_BATCH),
            },
            None => {
                report.push(
                    None,
                    "store",
                    "missing section: add `[store]` with `path = \"var/ordobridge.db\"`"
                        .to_string(),
                );
                StoreConfig {
                    backend: crate::store::settings::Backend::Sqlite,
                    path: PathBuf::new(),
                    queue_capacity: DEFAULT_QUEUE_CAPACITY,
                    max_batch: DEFAULT_MAX_BATCH,
                    retention: RetentionConfig::DEFAULT,
                }
            }
        };
        let log = match self.log {
            Some(log) => LogConfig {
                level: log.level.unwrap_or_else(|| "info".to_string()),
                format: match log.format.as_ref().map(|f| f.get_ref().as_str()) {
                    None | Some("text") => LogFormat::Text,
                    Some("json") => LogFormat::Json,
                    Some(other) => {
                        let span = log.format.as_ref().map(Spanned::span);
                        report.push(
                            span,
                            "log.format",
                            format!("unknown log format `{other}`: expected `text` or `json`"),
                        );
                        LogFormat::Text
                    }
                },
            },
            None => LogConfig {
                level: "info".to_string(),
                format: LogFormat::Text,
            },
        };
        let mut inbound = BTreeMap::new();
        let mut binds: Vec<(SocketAddr, String)> = Vec::new();
        for (name, raw) in self.inbound {
            let prefix = format!("inbound.{name}");
            let mut raw = raw.into_inner();
            if name == PUSH_CHANNEL {
                report.push(
                    Some(raw.protocol.span()),
                    &prefix,
                    format!("`{PUSH_CHANNEL}` is the journal channel of pushed bundles: give this channel another name"),
                );
            }
            if name == DOCUMENTS_CHANNEL {
                report.push(
                    Some(raw.protocol.span()),
                    &prefix,
                    format!("`{DOCUMENTS_CHANNEL}` is the journal channel of documents (`$send-to-ehr`): give this channel another name"),
                );
            }
            if let Some(retention) = raw.retention.take() {
                let key = format!("{prefix}.retention");
                if let Some(age) = retention_value(&retention, &key, Kept::Journal, report) {
                    store.retention.channels.insert(name.clone(), age);
                }
            }
            if let Some(channel) = raw.validate(&name, &prefix, base, report) {
                if let InboundKind::Mllp(mllp) = &channel.kind {
                    if let Some((_, other)) = binds
                        .iter()
                        .find(|(addr, _)| *addr == mllp.bind && addr.port() != 0)
                    {
                        report.push(
                            None,
                            &format!("{prefix}.bind"),
                            format!(
                                "address {} is already used by channel `{other}`: give each listener its own port",
                                mllp.bind
                            ),
                        );
                    }
                    binds.push((mllp.bind, name.clone()));
                }
                inbound.insert(name, channel);
            }
        }
        let http = self.http.and_then(|http| validate_http(http, base, report));
        let mut alert_after = BTreeMap::new();
        let outbound: BTreeMap<String, Destination> = self
            .outbound
            .into_iter()
            .filter_map(|(name, mut raw)| {
                let alert = raw
                    .alert_after
                    .take()
                    .and_then(|v| {
                        duration_value(v, &format!("outbound.{name}.alert_after"), report)
                    })
                    .unwrap_or(DEFAULT_ALERT_AFTER);
                let destination = validate_outbound(&name, raw, base, report)?;
                alert_after.insert(name.clone(), alert);
                Some((name, destination))
            })
            .collect();
        let posos = self
            .posos
            .and_then(|posos| validate_posos(posos, http.as_ref(), base, report));
        let launch = self.launch.and_then(|launch| {
            let span = launch.span();
            if http.is_none() || posos.is_none() {
                report.push(
                    Some(span.clone()),
                    "launch",
                    "`[launch]` needs an `[http]` section (where browsers connect) and a `[posos]` section (where sessions are opened)".to_string(),
                );
            }
            validate_launch(launch.into_inner(), base, report)
        });
        let push = self.push.map(|mut push| {
            if let Some(age) = push.retention.take().and_then(|retention| {
                retention_value(&retention, "push.retention", Kept::Journal, report)
            }) {
                store
                    .retention
                    .channels
                    .insert(PUSH_CHANNEL.to_owned(), age);
            }
            validate_push(push, &outbound, http.as_ref(), base, report)
        });
        if let Some(age) = self
            .census
            .as_ref()
            .and_then(|census| census.retention.as_ref())
            .and_then(|retention| {
                retention_value(retention, "census.retention", Kept::Census, report)
            })
        {
            store.retention.census = age;
        }
        let console = self
            .console
            .map(|console| validate_console(console, http.as_ref(), report));
        let fhir = self
            .fhir
            .map(|fhir| validate_fhir(fhir, http.as_ref(), base, report));
        let documents = self.documents.map(|documents| {
            validate_documents(documents, fhir.is_some(), &outbound, base, report)
        });
        store.retention.document_tracking = documents.as_ref().and_then(|d| d.tracking_retention);
        let cluster = match crate::store::settings::cluster(self.cluster, parse_duration) {
            Ok(cluster) => cluster,
            Err(problems) => {
                for problem in problems {
                    report.push(problem.span, problem.key, problem.message);
                }
                crate::store::settings::ClusterSettings::default()
            }
        };
        Config {
            cluster,
            fhir,
            documents,
            source: file.to_path_buf(),
            store,
            log,
            inbound,
            http,
            launch,
            posos,
            push,
            console,
            outbound,
            alert_after,
            census: crate::census::CensusSettings {
                ipp_authority: self
                    .census
                    .and_then(|c| c.ipp_authority)
                    .filter(|a| !a.is_empty()),
            },
        }
    }
}

/// What a retention keeps, for its error messages.
#[derive(Debug, Clone, Copy)]
enum Kept {
    Journal,
    Census,
}

/// A retention key: a duration of at least a day (`90d`, `12w`, `2y`), or `"forever"` to keep
/// without end (`Some(None)`). `"never"` and `"0"` are refused as ambiguous (keep nothing, or
/// never delete?). `None` when the value is wrong (reported).
fn retention_value(
    value: &Spanned<String>,
    key: &str,
    kept: Kept,
    report: &mut Report<'_>,
) -> Option<Option<Duration>> {
    let text = value.get_ref().trim();
    if text == "forever" {
        return Some(None);
    }
    let problem = match parse_duration(text) {
        _ if text == "never" || text.trim_start_matches('0').is_empty() => format!(
            "`{text}` is ambiguous: write `forever` to keep rows without end, or a retention such as `90d`"
        ),
        Some(d) if d >= Duration::from_secs(86_400) => return Some(Some(d)),
        Some(_) => format!(
            "`{text}` would delete {}: keep at least `1d` (or `forever`)",
            match kept {
                Kept::Journal => "the journal of the current day",
                Kept::Census => "encounters discharged today",
            }
        ),
        None => format!(
            "invalid retention `{text}`: expected a number with a unit, such as `30d`, `12w` or `2y` (365 days), or `forever`"
        ),
    };
    report.push(Some(value.span()), key, problem);
    None
}

/// `[store] backend` and its PostgreSQL keys, checked by `store::settings` (issue 14: kept in
/// one block, the parsing lives beside the store).
fn store_backend(
    store: &mut RawStore,
    base: &Path,
    report: &mut Report<'_>,
) -> crate::store::settings::Backend {
    let raw = crate::store::settings::RawPostgres {
        backend: store.backend.take(),
        url: store.url.take(),
        password: store.password.take(),
        password_file: store.password_file.take(),
        pool_size: store.pool_size.take(),
        statement_timeout: store.statement_timeout.take(),
        sslmode: store.sslmode.take(),
        ca_file: store.ca_file.take(),
        allow_plain: store.allow_plain.take(),
    };
    let path_given = store.path.is_some();
    match crate::store::settings::backend(raw, base, path_given, parse_duration) {
        Ok(backend) => {
            if let (crate::store::settings::Backend::Postgres(_), Some(path)) =
                (&backend, &store.path)
            {
                report.push(
                    Some(path.span()),
                    "store.path",
                    "is the SQLite file: the PostgreSQL store has none, remove it".to_string(),
                );
            }
            backend
        }
        Err(problems) => {
            for problem in problems {
                report.push(problem.span, problem.key, problem.message);
            }
            crate::store::settings::Backend::Sqlite
        }
    }
}

/// What `config` needs from the store that the PostgreSQL backend does not do yet (issue 14):
/// `check` and `run` refuse it on PostgreSQL, one line per need.
pub fn unported_on_postgres(config: &Config) -> Vec<crate::store::settings::Unported> {
    use crate::store::settings::Unported;
    let mut needs = Vec::new();
    if !matches!(
        config.store.backend,
        crate::store::settings::Backend::Postgres(_)
    ) {
        return needs;
    }
    if !config.inbound.is_empty() {
        needs.push(Unported::Census);
    }
    if config.push.is_some() {
        needs.push(Unported::Holds);
    }
    if config.fhir.is_some() || config.documents.is_some() {
        needs.push(Unported::Documents);
    }
    if config.console.is_some() {
        needs.push(Unported::Console);
    }
    if config
        .store
        .retention
        .plan(jiff::Timestamp::now())
        .is_some()
    {
        needs.push(Unported::Prune);
    }
    needs
}

/// `[store]` retention keys: durations, or `"forever"` to keep rows without end.
fn retention(store: &RawStore, report: &mut Report<'_>) -> RetentionConfig {
    let mut config = RetentionConfig::DEFAULT;
    for (value, key, target) in [
        (&store.retention, "store.retention", &mut config.retention),
        (
            &store.rejected_retention,
            "store.rejected_retention",
            &mut config.rejected_retention,
        ),
    ] {
        if let Some(age) = value
            .as_ref()
            .and_then(|value| retention_value(value, key, Kept::Journal, report))
        {
            *target = age;
        }
    }
    if let Some(interval) = store
        .prune_interval
        .clone()
        .and_then(|v| duration_value(v, "store.prune_interval", report))
    {
        config.interval = interval.max(Duration::from_secs(1));
    }
    if let Some(batch) = positive(store.prune_batch.clone(), "store.prune_batch", report) {
        config.batch = batch;
    }
    config
}

fn validate_http(raw: RawHttp, base: &Path, report: &mut Report<'_>) -> Option<HttpConfig> {
    let mut guard = crate::http::HttpGuardSettings::default();
    if let Some(allow) = &raw.admin_allow {
        match crate::http::AllowList::parse(allow.get_ref()) {
            Ok(list) => guard.admin_allow = list,
            Err(e) => report.push(
                Some(allow.span()),
                "http.admin_allow",
                format!("{e}: write networks such as `127.0.0.0/8` or `10.1.0.0/16`"),
            ),
        }
    }
    if let Some(token) = raw.admin_token.filter(|t| !t.get_ref().is_empty()) {
        if let Err(problem) = secret_problem(token.get_ref()) {
            report.push(
                Some(token.span()),
                "http.admin_token",
                format!("the admin token {problem}"),
            );
        }
        guard.admin_token = Some(token.into_inner());
    }
    for host in raw.hosts.unwrap_or_default() {
        let name = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.contains([':', '/', ' ']) {
            report.push(
                None,
                "http.hosts",
                format!("`{host}` is not a host name: write names such as `ordobridge.chu.local`, without scheme or port"),
            );
        } else {
            guard.hosts.push(name);
        }
    }
    if let Some(timeout) = raw
        .request_timeout
        .and_then(|v| duration_value(v, "http.request_timeout", report))
    {
        guard.request_timeout = timeout;
    }
    guard.frame_ancestors = raw.frame_ancestors.unwrap_or_default();
    for origin in &guard.frame_ancestors {
        if origin.is_empty() || origin.contains([';', ',', ' ', '\'', '"']) {
            report.push(
                None,
                "http.frame_ancestors",
                format!(
                    "`{origin}` is not an origin: write origins such as `https://dpi.chu.local`"
                ),
            );
        }
    }
    let mut serve = crate::http::ServeSettings::default();
    if let Some(timeout) = raw
        .header_read_timeout
        .and_then(|t| duration_value(t, "http.header_read_timeout", report))
    {
        serve.header_read_timeout = timeout;
    }
    if let Some(max) = positive(raw.max_connections, "http.max_connections", report) {
        serve.max_connections = max;
    }
    let tls = raw
        .tls
        .and_then(|tls| server_tls(tls, "http.tls", false, base, report));
    match raw.bind.get_ref().parse::<SocketAddr>() {
        Ok(bind) => Some(HttpConfig {
            bind,
            guard,
            tls,
            serve,
        }),
        Err(_) => {
            report.push(
                Some(raw.bind.span()),
                "http.bind",
                format!(
                    "invalid listen address `{}`: expected IP:PORT such as `127.0.0.1:8717`",
                    raw.bind.get_ref()
                ),
            );
            None
        }
    }
}

/// `[inbound.NAME.tls]` (`mllp`: client certificate required with `client_ca`) or
/// `[http.tls]` (optional there, and no `client_names`).
fn server_tls(
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
fn client_tls(
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

/// Values that sample files and tutorials put where a secret goes: a configuration still
/// holding one was never finished.
const PLACEHOLDER_SECRETS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "placeholder",
    "example",
    "secret",
    "password",
];

/// The shortest token or shared secret accepted: 32 characters (of a random token, ≥ 190 bits).
pub const MIN_SECRET_LEN: usize = 32;

/// Why a token or shared secret is too weak to protect patient data, if it is.
fn secret_problem(secret: &str) -> Result<(), String> {
    let lower = secret.to_ascii_lowercase();
    if let Some(placeholder) = PLACEHOLDER_SECRETS.iter().find(|p| lower.contains(*p)) {
        return Err(format!(
            "is a placeholder (it contains `{placeholder}`), not a secret: generate one with `openssl rand -base64 32` and set it"
        ));
    }
    if secret.chars().count() < MIN_SECRET_LEN {
        return Err(format!(
            "is too short ({} characters; at least {MIN_SECRET_LEN}): generate one with `openssl rand -base64 32`",
            secret.chars().count()
        ));
    }
    if let Some(first) = secret.chars().next()
        && secret.chars().all(|c| c == first)
    {
        return Err("is a single repeated character, not a secret: generate one with `openssl rand -base64 32`".to_string());
    }
    Ok(())
}

/// Whether a secret file may be read by group or others (it should be `0600` or `0400`).
fn readable_by_others(path: &Path) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

fn validate_push(
    raw: RawPush,
    outbound: &BTreeMap<String, Destination>,
    http: Option<&HttpConfig>,
    base: &Path,
    report: &mut Report<'_>,
) -> PushConfig {
    let require_client_cert = raw
        .require_client_cert
        .as_ref()
        .is_some_and(|r| *r.get_ref());
    let has_client_ca = http
        .and_then(|h| h.tls.as_ref())
        .is_some_and(|t| t.client_ca.is_some());
    if require_client_cert && !has_client_ca {
        report.push(
            raw.require_client_cert.as_ref().map(Spanned::span),
            "push.require_client_cert",
            "client certificates are required but `[http.tls]` has no `client_ca`: add `[http.tls]` with `cert`, `key` and `client_ca` (the CA that signs Posos' certificate)".to_string(),
        );
    }
    let routes = validate_routes("push", raw.route, outbound, base, report);
    let hold_unknown_for = raw
        .hold_unknown_for
        .and_then(|v| duration_value(v, "push.hold_unknown_for", report))
        .unwrap_or(DEFAULT_HOLD_UNKNOWN_FOR);
    let (token, token_file, basic) = validate_credentials(
        Secrets {
            section: "push",
            token: raw.token,
            token_file: raw.token_file,
            basic_user: raw.basic_user,
            basic_password: raw.basic_password,
            allow_unauthenticated: raw.allow_unauthenticated,
            open_door: "the push endpoint accepts prescriptions from anybody",
        },
        base,
        report,
    );
    let max_body = raw
        .max_body
        .and_then(|v| size_value(v, "push.max_body", report))
        .unwrap_or(DEFAULT_PUSH_MAX_BODY);
    PushConfig {
        token,
        token_file,
        allow_unauthenticated: raw.allow_unauthenticated,
        max_body,
        basic,
        hold_unknown_for,
        routes,
        require_client_cert,
    }
}

/// `[[SECTION.route]]`: each a mapping file (loaded and checked) and an `[outbound.NAME]`.
fn validate_routes(
    section: &str,
    raw: Vec<RawRoute>,
    outbound: &BTreeMap<String, Destination>,
    base: &Path,
    report: &mut Report<'_>,
) -> Vec<PushRoute> {
    let mut routes = Vec::new();
    for (i, route) in raw.into_iter().enumerate() {
        let key = format!("{section}.route[{i}]");
        let mapping = resolve_path(base, route.mapping.get_ref());
        // Loading checks everything (paths, functions, segments) with the file's own lines.
        if let Err(e) = read_mapping(&mapping) {
            report.push(
                Some(route.mapping.span()),
                &format!("{key}.mapping"),
                e.to_string(),
            );
        }
        if !outbound.contains_key(route.destination.get_ref()) {
            let known: Vec<&str> = outbound.keys().map(String::as_str).collect();
            report.push(
                Some(route.destination.span()),
                &format!("{key}.destination"),
                format!(
                    "no `[outbound.{}]` destination (known: {})",
                    route.destination.get_ref(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        routes.push(PushRoute {
            mapping,
            destination: route.destination.into_inner(),
        });
    }
    routes
}

/// The credential keys of an authenticated HTTP section (`[push]`, `[fhir]`).
struct Secrets {
    section: &'static str,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    basic_user: Option<Spanned<String>>,
    basic_password: Option<Spanned<String>>,
    allow_unauthenticated: bool,
    /// What an unauthenticated section lets anybody do, for the refusal.
    open_door: &'static str,
}

/// Fail closed: a strong token, a token file, or basic credentials; or the operator's explicit
/// `allow_unauthenticated`. The token, the token file and the basic credentials.
fn validate_credentials(
    raw: Secrets,
    base: &Path,
    report: &mut Report<'_>,
) -> (Option<String>, Option<PathBuf>, Option<BasicAuth>) {
    let section = raw.section;
    let token = raw.token.filter(|t| !t.get_ref().is_empty());
    if let Some(token) = &token
        && let Err(problem) = secret_problem(token.get_ref())
    {
        report.push(
            Some(token.span()),
            &format!("{section}.token"),
            format!("the {section} token {problem}"),
        );
    }
    let token_file = raw
        .token_file
        .filter(|f| !f.get_ref().is_empty())
        .map(|f| (resolve_path(base, f.get_ref()), f.span()));
    if token.is_none()
        && let Some((path, span)) = &token_file
    {
        check_token_file(section, path, span.clone(), report);
    }
    let basic = basic_auth(section, raw.basic_user, raw.basic_password, report);
    if let Some(basic) = &basic
        && let Err(problem) = secret_problem(&basic.password)
        && problem.starts_with("is a placeholder")
    {
        report.push(
            None,
            &format!("{section}.basic_password"),
            format!("the basic password {problem}"),
        );
    }
    if token.is_none() && token_file.is_none() && basic.is_none() && !raw.allow_unauthenticated {
        report.push(
            None,
            section,
            format!(
                "{}: set `token_file = \"/var/lib/ordobridge/{section}-token\"` (generated at first start), `token`, or `basic_user` and `basic_password`; or, for a closed test network only, `allow_unauthenticated = true`",
                raw.open_door
            ),
        );
    }
    (
        token.map(Spanned::into_inner),
        token_file.map(|(path, _)| path),
        basic,
    )
}

/// `[fhir]`: credentials (fail closed, as `[push]`), the networks allowed, identifier systems.
fn validate_fhir(
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
    let require_client_cert = raw
        .require_client_cert
        .as_ref()
        .is_some_and(|r| *r.get_ref());
    let has_client_ca = http
        .and_then(|h| h.tls.as_ref())
        .is_some_and(|t| t.client_ca.is_some());
    if require_client_cert && !has_client_ca {
        report.push(
            raw.require_client_cert.as_ref().map(Spanned::span),
            "fhir.require_client_cert",
            "client certificates are required but `[http.tls]` has no `client_ca`: add `[http.tls]` with `cert`, `key` and `client_ca` (the CA that signs the applications' certificates)".to_string(),
        );
    }
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

/// `[documents]`: limits, tracking retention and routes; needs `[fhir]`.
fn validate_documents(
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

/// An existing token file must hold a strong token and be readable by its owner only; a
/// missing one is generated at the first start.
fn check_token_file(section: &str, path: &Path, span: Range<usize>, report: &mut Report<'_>) {
    let shown = path.display();
    let key = format!("{section}.token_file");
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.push(
            Some(span),
            &key,
            format!("cannot read `{shown}`: {e}"),
        ),
        Ok(meta) if !meta.is_file() => report.push(
            Some(span),
            &key,
            format!("`{shown}` is not a regular file (a symlink or a folder): point `token_file` at the file itself"),
        ),
        Ok(_) => {
            match readable_by_others(path) {
                Ok(Some(mode)) => report.push(
                    Some(span.clone()),
                    &key,
                    format!("`{shown}` is readable by other users (mode {mode:03o}): run `chmod 600 {shown}`"),
                ),
                Ok(None) => {}
                Err(e) => report.push(
                    Some(span.clone()),
                    &key,
                    format!("cannot read `{shown}`: {e}"),
                ),
            }
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    if let Err(problem) = secret_problem(text.trim()) {
                        report.push(
                            Some(span),
                            &key,
                            format!("the token in `{shown}` {problem}"),
                        );
                    }
                }
                Err(e) => report.push(
                    Some(span),
                    &key,
                    format!("cannot read `{shown}`: {e}"),
                ),
            }
        }
    }
}

/// `basic_user` and `basic_password`: both or neither (empty counts as unset).
fn basic_auth(
    section: &str,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    report: &mut Report<'_>,
) -> Option<BasicAuth> {
    let user = user.filter(|u| !u.get_ref().is_empty());
    let password = password.filter(|p| !p.get_ref().is_empty());
    match (user, password) {
        (None, None) => None,
        (Some(user), None) => {
            report.push(
                Some(user.span()),
                &format!("{section}.basic_password"),
                "`basic_user` is set but `basic_password` is not: set both for basic authentication, or neither".to_string(),
            );
            None
        }
        (None, Some(password)) => {
            report.push(
                Some(password.span()),
                &format!("{section}.basic_user"),
                "`basic_password` is set but `basic_user` is not: set both for basic authentication, or neither".to_string(),
            );
            None
        }
        (Some(user), Some(password)) => {
            if user.get_ref().contains(':') {
                report.push(
                    Some(user.span()),
                    &format!("{section}.basic_user"),
                    format!(
                        "basic user `{}` contains `:`, which basic authentication cannot carry: choose a user name without it",
                        user.get_ref()
                    ),
                );
                return None;
            }
            Some(BasicAuth {
                user: user.into_inner(),
                password: password.into_inner(),
            })
        }
    }
}

fn validate_outbound(
    name: &str,
    raw: RawOutbound,
    base: &Path,
    report: &mut Report<'_>,
) -> Option<Destination> {
    let prefix = format!("outbound.{name}");
    let retry = retry_policy(
        raw.retry_initial,
        raw.retry_max,
        raw.max_attempts,
        &prefix,
        report,
    );
    match raw.protocol.get_ref().as_str() {
        "mllp" => {
            let Some(address) = raw.address else {
                report.push(
                    None,
                    &format!("{prefix}.address"),
                    format!("MLLP destination `{name}` has no `address`: add `address = \"10.0.0.5:2576\"`"),
                );
                return None;
            };
            let addr = match address.get_ref().parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    report.push(
                        Some(address.span()),
                        &format!("{prefix}.address"),
                        format!(
                            "invalid address `{}`: expected IP:PORT of the EHR's MLLP listener",
                            address.get_ref()
                        ),
                    );
                    return None;
                }
            };
            let mut settings = crate::delivery::DestinationSettings::new(name, addr);
            let mut duration =
                |value: Option<Spanned<String>>, key: &str, target: &mut Duration| {
                    if let Some(d) =
                        value.and_then(|v| duration_value(v, &format!("{prefix}.{key}"), report))
                    {
                        *target = d;
                    }
                };
            duration(raw.ack_timeout, "ack_timeout", &mut settings.ack_timeout);
            duration(
                raw.connect_timeout,
                "connect_timeout",
                &mut settings.connect_timeout,
            );
            settings.retry = retry;
            if let Some(tls) = raw.tls {
                settings.tls = Some(client_tls(
                    tls,
                    &format!("{prefix}.tls"),
                    addr,
                    base,
                    report,
                )?);
            }
            Some(Destination::Mllp(settings))
        }
        "file" => {
            let Some(folder) = raw.folder else {
                report.push(
                    None,
                    &format!("{prefix}.folder"),
                    format!("file destination `{name}` has no `folder`"),
                );
                return None;
            };
            let outbox = crate::filedrop::OutboxSettings {
                folder: resolve_path(base, &folder),
                name_template: raw
                    .name_template
                    .unwrap_or_else(|| "{control_id}.hl7".to_string()),
                witness_suffix: raw.witness_suffix.filter(|w| !w.is_empty()),
            };
            if let Err(e) = crate::filedrop::Outbox::new(outbox.clone()) {
                report.push(None, &format!("{prefix}.name_template"), e.to_string());
                return None;
            }
            let mut settings = crate::delivery::FileDestinationSettings::new(name, outbox);
            settings.retry = retry;
            Some(Destination::File(settings))
        }
        other => {
            report.push(
                Some(raw.protocol.span()),
                &format!("{prefix}.protocol"),
                format!("unknown protocol `{other}`: expected `mllp` or `file`"),
            );
            None
        }
    }
}

/// `retry_initial`, `retry_max` and `max_attempts` of `[outbound.NAME]` (either protocol)
/// over the defaults.
fn retry_policy(
    initial: Option<Spanned<String>>,
    max: Option<Spanned<String>>,
    max_attempts: Option<u32>,
    prefix: &str,
    report: &mut Report<'_>,
) -> crate::delivery::RetryPolicy {
    let mut policy = crate::delivery::RetryPolicy::default();
    let mut duration = |value: Option<Spanned<String>>, key: &str, target: &mut Duration| {
        if let Some(d) = value.and_then(|v| duration_value(v, &format!("{prefix}.{key}"), report)) {
            *target = d;
        }
    };
    duration(initial, "retry_initial", &mut policy.initial);
    duration(max, "retry_max", &mut policy.max);
    if let Some(max_attempts) = max_attempts {
        policy.max_attempts = max_attempts;
    }
    policy
}

/// Reads and compiles the mapping file at `path` (the mapping module does no I/O).
pub fn read_mapping(path: &Path) -> Result<crate::mapping::Mapping, crate::mapping::MappingErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::mapping::MappingErrors(vec![crate::mapping::MappingError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read the mapping file: {e}"),
        }])
    })?;
    crate::mapping::Mapping::load(&text, path)
}

/// A launch mapping (`[launch] mapping`, `guide_mapping`): loaded, and checked fit for the
/// request it builds.
fn launch_mapping(
    file: &Path,
    value: &Spanned<String>,
    key: &str,
    request: &str,
    fields: &[&str],
    report: &mut Report<'_>,
) -> Option<crate::mapping::Mapping> {
    match read_mapping(file) {
        Ok(mapping) => {
            let problems = crate::http::launch_mapping_problems(&mapping, request, fields);
            for problem in &problems {
                report.push(
                    Some(value.span()),
                    key,
                    format!("{}: {problem}", file.display()),
                );
            }
            problems.is_empty().then_some(mapping)
        }
        Err(e) => {
            report.push(Some(value.span()), key, e.to_string());
            None
        }
    }
}

fn validate_launch(raw: RawLaunch, base: &Path, report: &mut Report<'_>) -> Option<LaunchConfig> {
    let mapping_file = resolve_path(base, raw.mapping.get_ref());
    let mapping = launch_mapping(
        &mapping_file,
        &raw.mapping,
        "launch.mapping",
        "scan-token",
        &crate::http::SCAN_TOKEN_FIELDS,
        report,
    );
    let guide_mapping = match &raw.guide_mapping {
        Some(file) => launch_mapping(
            &resolve_path(base, file.get_ref()),
            file,
            "launch.guide_mapping",
            "guide",
            &crate::http::GUIDE_FIELDS,
            report,
        ),
        None => match crate::http::shipped_guide() {
            Ok(mapping) => Some(mapping),
            Err(e) => {
                report.push(None, "launch.guide_mapping", e.to_string());
                None
            }
        },
    };
    let allow_list = match &raw.allow {
        Some(allow) => match crate::http::AllowList::parse(allow.get_ref()) {
            Ok(list) => Some(list),
            Err(e) => {
                report.push(
                    Some(allow.span()),
                    "launch.allow",
                    format!(
                        "{e}: write networks such as `127.0.0.0/8`, `10.1.0.0/16` or `::1/128`"
                    ),
                );
                None
            }
        },
        None => Some(crate::http::AllowList::loopback()),
    };
    let signing_secret = raw.signing_secret.filter(|s| !s.get_ref().is_empty());
    if let Some(secret) = &signing_secret
        && let Err(problem) = secret_problem(secret.get_ref())
    {
        report.push(
            Some(secret.span()),
            "launch.signing_secret",
            format!("the signing secret {problem}"),
        );
    }
    let signing_secret =
        signing_secret.map(|s| crate::http::SigningSecret::new(s.into_inner().into_bytes()));
    if let Some(list) = &allow_list
        && !raw.require_signature
        && !raw.allow_unsigned_links
        && let Some(network) = list.networks().iter().find(|n| !n.is_loopback())
    {
        report.push(
            raw.allow.as_ref().map(Spanned::span),
            "launch.allow",
            format!(
                "`{network}` reaches beyond this machine while unsigned links are accepted: anybody there could open any patient's Posos session by typing an IPP. Set `require_signature = true` with a `signing_secret` (the EHR signs its links), or, for an EHR that cannot sign, `allow_unsigned_links = true`"
            ),
        );
    }
    let max_link_age = raw
        .max_link_age
        .and_then(|v| duration_value(v, "launch.max_link_age", report))
        .unwrap_or(crate::http::DEFAULT_MAX_LINK_AGE);
    if raw.require_signature && signing_secret.is_none() {
        report.push(
            None,
            "launch.require_signature",
            "signed links are required but `signing_secret` is empty: set `signing_secret = \"${ORDOBRIDGE_LAUNCH_SECRET}\"`".to_string(),
        );
    }
    let mut settings = crate::http::LaunchSettings::new(mapping?, guide_mapping?);
    if let Some(parameters) = raw.parameters {
        settings.parameters = parameters;
    }
    settings.allow_list = allow_list?;
    settings.signing_secret = signing_secret;
    settings.require_signature = raw.require_signature;
    settings.allow_unsigned_links = raw.allow_unsigned_links;
    settings.max_link_age = max_link_age;
    settings.unknown_patient = raw.unknown_patient.unwrap_or_default();
    Some(LaunchConfig {
        settings,
        mapping_file,
    })
}

/// `[console]`: users with Argon2id hashes and a known role; fail closed (no users, or a
/// console beyond this machine in plain HTTP, is refused).
fn validate_console(
    raw: Spanned<RawConsole>,
    http: Option<&HttpConfig>,
    report: &mut Report<'_>,
) -> crate::console::ConsoleSettings {
    use crate::console::{ConsoleSettings, Lang, Role, User};
    let span = raw.span();
    let raw = raw.into_inner();
    let mut settings = ConsoleSettings::default();
    match http {
        None => report.push(
            Some(span.clone()),
            "console",
            "`[console]` is served on the HTTP listener: add an `[http]` section with `bind = \"127.0.0.1:8717\"`".to_string(),
        ),
        Some(http) => {
            settings.secure_cookies = http.tls.is_some();
            if !http.bind.ip().is_loopback() && http.tls.is_none() && !raw.allow_plain_http {
                report.push(
                    Some(span.clone()),
                    "console",
                    format!(
                        "the console would be served on {} in plain HTTP: passwords and session cookies would cross the network in clear. Add `[http.tls]` (or put a TLS reverse proxy on this machine and bind `[http] bind` to `127.0.0.1`), or set `allow_plain_http = true` in `[console]` for a closed test network",
                        http.bind
                    ),
                );
            }
        }
    }
    if raw.users.is_empty() {
        report.push(
            Some(span),
            "console.users",
            "the console has no users, so nobody could log in: add one with `ordobridge user add NAME --role operator` and paste the line it prints under `[console.users]`".to_string(),
        );
    }
    for (name, user) in raw.users {
        let key = format!("console.users.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        {
            report.push(
                None,
                &key,
                format!("`{name}` is not a user name: use letters, digits, `.`, `_`, `-` or `@`"),
            );
            continue;
        }
        let Some(role) = Role::parse(user.role.get_ref()) else {
            report.push(
                Some(user.role.span()),
                &format!("{key}.role"),
                format!(
                    "unknown role `{}`: expected `viewer` (dashboard and message list, no patient data) or `operator` (patient data and actions)",
                    user.role.get_ref()
                ),
            );
            continue;
        };
        if let Err(e) = crate::console::check_hash(user.password_hash.get_ref()) {
            report.push(
                Some(user.password_hash.span()),
                &format!("{key}.password_hash"),
                e.to_string(),
            );
            continue;
        }
        settings.users.insert(
            name,
            User {
                role,
                password_hash: user.password_hash.into_inner(),
            },
        );
    }
    if let Some(ttl) = raw
        .session_ttl
        .and_then(|v| duration_value(v, "console.session_ttl", report))
    {
        settings.session_ttl = ttl.max(Duration::from_secs(60));
    }
    if let Some(attempts) = positive(raw.login_attempts, "console.login_attempts", report) {
        settings.login_attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
    }
    if let Some(window) = raw
        .login_window
        .and_then(|v| duration_value(v, "console.login_window", report))
    {
        settings.login_window = window.max(Duration::from_secs(1));
    }
    if let Some(language) = raw.language {
        match Lang::parse(language.get_ref()) {
            Some(lang) => settings.language = lang,
            None => report.push(
                Some(language.span()),
                "console.language",
                format!(
                    "unknown language `{}`: expected `fr` or `en`",
                    language.get_ref()
                ),
            ),
        }
    }
    settings
}

fn validate_posos(
    raw: Spanned<RawPosos>,
    http: Option<&HttpConfig>,
    base: &Path,
    report: &mut Report<'_>,
) -> Option<PososConfig> {
    let raw = raw.into_inner();
    if raw.mode.get_ref() == "simulator"
        && let Some(http) = http
        && !http.bind.ip().is_loopback()
    {
        report.push(
            Some(raw.mode.span()),
            "posos.mode",
            format!(
                "the built-in Posos simulator would be served on {}, beyond this machine: it hands out tokens and accepts imports without real credentials. Bind `[http] bind` to `127.0.0.1`, or use `mode = \"remote\"` in production",
                http.bind
            ),
        );
    }
    let connect_timeout = raw
        .connect_timeout
        .and_then(|t| duration_value(t, "posos.connect_timeout", report))
        .unwrap_or(Duration::from_secs(5));
    let request_timeout = raw
        .request_timeout
        .and_then(|t| duration_value(t, "posos.request_timeout", report))
        .unwrap_or(Duration::from_secs(15));
    let oauth_client_id = raw.oauth_client_id.unwrap_or_default();
    let mode = match raw.mode.get_ref().as_str() {
        "simulator" => {
            let Some(sim) = raw.simulator else {
                report.push(
                    Some(raw.mode.span()),
                    "posos.simulator",
                    "simulator mode needs `[posos.simulator]` with `key_file` and `public_key_file`".to_string(),
                );
                return None;
            };
            PososMode::Simulator {
                key_file: resolve_path(base, &sim.key_file),
                public_key_file: resolve_path(base, &sim.public_key_file),
                push_url: sim.push_url.filter(|u| !u.is_empty()),
                push_token: sim.push_token.filter(|t| !t.is_empty()),
            }
        }
        "remote" => {
            let Some(environment) = raw.environment else {
                report.push(
                    Some(raw.mode.span()),
                    "posos.environment",
                    "remote mode needs `environment = \"preprod\"` (or another `[posos.environments.NAME]`)".to_string(),
                );
                return None;
            };
            let Some(env) = raw.environments.get(environment.get_ref()) else {
                let known: Vec<&str> = raw.environments.keys().map(String::as_str).collect();
                report.push(
                    Some(environment.span()),
                    "posos.environment",
                    format!(
                        "no `[posos.environments.{}]` section (known: {})",
                        environment.get_ref(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                return None;
            };
            if oauth_client_id.is_empty() {
                report.push(
                    None,
                    "posos.oauth_client_id",
                    "remote mode needs the OAuth client id Posos gave you (`oauth_client_id`)"
                        .to_string(),
                );
            }
            let env_key = format!("posos.environments.{}", environment.get_ref());
            if !env.base_url.get_ref().starts_with("https://") {
                report.push(
                    Some(env.base_url.span()),
                    &format!("{env_key}.base_url"),
                    format!(
                        "`{}` is not an `https://` URL: patient identities and tokens would cross the network in clear; use the https URL Posos gave you",
                        env.base_url.get_ref()
                    ),
                );
            }
            let key_file = resolve_path(base, &env.key_file);
            match readable_by_others(&key_file) {
                Ok(Some(mode)) => report.push(
                    None,
                    &format!("{env_key}.key_file"),
                    format!(
                        "the service-account key `{}` is readable by other users (mode {mode:03o}): run `chmod 600 {}`",
                        key_file.display(),
                        key_file.display()
                    ),
                ),
                Ok(None) => {}
                Err(e) => report.push(
                    None,
                    &format!("{env_key}.key_file"),
                    format!(
                        "cannot read the service-account key `{}`: {e} (put the JSON key Posos gave you there, mode 0600)",
                        key_file.display()
                    ),
                ),
            }
            PososMode::Remote {
                environment: environment.get_ref().clone(),
                base_url: env.base_url.get_ref().clone(),
                key_file,
            }
        }
        other => {
            report.push(
                Some(raw.mode.span()),
                "posos.mode",
                format!("unknown mode `{other}`: expected `simulator` or `remote`"),
            );
            return None;
        }
    };
    Some(PososConfig {
        connect_timeout,
        request_timeout,
        retries: raw.retries.unwrap_or(2),
        oauth_client_id: if oauth_client_id.is_empty() {
            "ordobridge-simulator".to_string()
        } else {
            oauth_client_id
        },
        mode,
    })
}

impl RawInbound {
    fn validate(
        self,
        name: &str,
        prefix: &str,
        base: &Path,
        report: &mut Report<'_>,
    ) -> Option<InboundChannel> {
        let charset = self.charset.as_ref().and_then(|c| {
            let value = c.get_ref().trim();
            if value.is_empty() || value.eq_ignore_ascii_case("auto") {
                return None;
            }
            match Charset::from_msh18(value) {
                Some(charset) => Some(charset),
                None => {
                    report.push(
                        Some(c.span()),
                        &format!("{prefix}.charset"),
                        format!(
                            "unknown charset `{value}`: expected `auto` (follow MSH-18), `ascii`, `8859/1`, `8859/15` or `UNICODE UTF-8`"
                        ),
                    );
                    None
                }
            }
        });
        match self.protocol.get_ref().as_str() {
            "mllp" => {
                let bind_key = format!("{prefix}.bind");
                let bind = match &self.bind {
                    Some(bind) => match bind.get_ref().parse::<SocketAddr>() {
                        Ok(addr) => Some(addr),
                        Err(_) => {
                            report.push(
                                Some(bind.span()),
                                &bind_key,
                                format!(
                                    "invalid listen address `{}`: expected IP:PORT such as `127.0.0.1:2575` or `0.0.0.0:2575`",
                                    bind.get_ref()
                                ),
                            );
                            None
                        }
                    },
                    None => {
                        report.push(
                            None,
                            &bind_key,
                            format!(
                                "channel `{name}` has no `bind`: add `bind = \"127.0.0.1:2575\"`"
                            ),
                        );
                        None
                    }
                };
                let max_connections = positive(
                    self.max_connections,
                    &format!("{prefix}.max_connections"),
                    report,
                )
                .unwrap_or(DEFAULT_MAX_CONNECTIONS);
                let max_frame_bytes = self
                    .max_frame_size
                    .and_then(|size| size_value(size, &format!("{prefix}.max_frame_size"), report))
                    .unwrap_or(DEFAULT_MAX_FRAME_BYTES);
                let read_timeout = self
                    .read_timeout
                    .and_then(|t| duration_value(t, &format!("{prefix}.read_timeout"), report))
                    .unwrap_or(DEFAULT_READ_TIMEOUT);
                let idle_timeout = self
                    .idle_timeout
                    .and_then(|t| duration_value(t, &format!("{prefix}.idle_timeout"), report))
                    .unwrap_or(DEFAULT_IDLE_TIMEOUT);
                let max_connections_per_peer = positive(
                    self.max_connections_per_peer,
                    &format!("{prefix}.max_connections_per_peer"),
                    report,
                )
                .unwrap_or(crate::mllp::server::DEFAULT_MAX_CONNECTIONS_PER_PEER);
                let rejected_max_per_hour = positive(
                    self.rejected_max_per_hour,
                    &format!("{prefix}.rejected_max_per_hour"),
                    report,
                )
                .unwrap_or(DEFAULT_REJECTED_MAX_PER_HOUR);
                let allow = match &self.allow {
                    None => None,
                    Some(allow) => match crate::http::AllowList::parse(allow.get_ref()) {
                        Ok(list) => Some(list),
                        Err(e) => {
                            report.push(
                                Some(allow.span()),
                                &format!("{prefix}.allow"),
                                format!(
                                    "{e}: write the senders' networks such as `10.1.0.0/16`, `10.1.2.3` or `::1/128`"
                                ),
                            );
                            None
                        }
                    },
                };
                Some(InboundChannel {
                    name: name.to_string(),
                    charset,
                    log_phi: self.log_phi,
                    kind: InboundKind::Mllp(MllpListenerConfig {
                        bind: bind?,
                        max_connections,
                        max_frame_bytes,
                        read_timeout,
                        idle_timeout,
                        tls: self.tls.and_then(|t| {
                            server_tls(t, &format!("{prefix}.tls"), true, base, report)
                        }),
                        allow,
                        max_connections_per_peer,
                        rejected_max_per_hour,
                    }),
                })
            }
            "file" => {
                let charset_channel = charset;
                let inbox = self.file_inbox(name, prefix, base, report)?;
                let format = match self.format.as_ref().map(|f| f.get_ref().as_str()) {
                    None | Some("auto") => FileFormat::Auto,
                    Some("hl7") => FileFormat::Hl7,
                    Some("hprim") => FileFormat::Hprim,
                    Some(other) => {
                        report.push(
                            self.format.as_ref().map(Spanned::span),
                            &format!("{prefix}.format"),
                            format!("unknown format `{other}`: expected `hl7`, `hprim` or `auto`"),
                        );
                        return None;
                    }
                };
                Some(InboundChannel {
                    name: name.to_string(),
                    charset: charset_channel,
                    log_phi: self.log_phi,
                    kind: InboundKind::File(FileInboxConfig {
                        format,
                        create_folder: self.create_folder,
                        inbox,
                    }),
                })
            }
            other => {
                report.push(
                    Some(self.protocol.span()),
                    &format!("{prefix}.protocol"),
                    format!("unknown protocol `{other}`: expected `mllp` or `file`"),
                );
                None
            }
        }
    }

    /// The inbox settings of a `protocol = "file"` channel.
    fn file_inbox(
        &self,
        name: &str,
        prefix: &str,
        base: &Path,
        report: &mut Report<'_>,
    ) -> Option<crate::filedrop::InboxSettings> {
        use crate::filedrop::{AfterSuccess, InboxSettings, Readiness};
        let Some(folder) = &self.folder else {
            report.push(
                None,
                &format!("{prefix}.folder"),
                format!("file channel `{name}` has no `folder`: add `folder = \"/mnt/dpi/out\"`"),
            );
            return None;
        };
        let folder = resolve_path(base, folder.get_ref());
        let poll_interval = self
            .poll_interval
            .clone()
            .and_then(|t| duration_value(t, &format!("{prefix}.poll_interval"), report))
            .unwrap_or(Duration::from_secs(1));
        let readiness = match self.ready.as_ref().map(|r| r.get_ref().as_str()) {
            None | Some("stable") => Readiness::StableFor(
                self.stable_for
                    .clone()
                    .and_then(|t| duration_value(t, &format!("{prefix}.stable_for"), report))
                    .unwrap_or(Duration::from_secs(2)),
            ),
            Some("witness") => Readiness::Witness {
                suffixes: self
                    .witness_suffixes
                    .clone()
                    .unwrap_or_else(|| vec![".OK".to_string(), ".ok".to_string()]),
            },
            Some(other) => {
                report.push(
                    self.ready.as_ref().map(Spanned::span),
                    &format!("{prefix}.ready"),
                    format!("unknown readiness `{other}`: expected `stable` (size and time unchanged for `stable_for`) or `witness` (a `.OK` file beside)"),
                );
                return None;
            }
        };
        let after_success = match self.after_success.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("archive") => AfterSuccess::Archive {
                folder: self
                    .archive_folder
                    .as_deref()
                    .map(|f| resolve_path(base, f))
                    .unwrap_or_else(|| folder.join("archive")),
            },
            Some("delete") => AfterSuccess::Delete,
            Some(other) => {
                report.push(
                    self.after_success.as_ref().map(Spanned::span),
                    &format!("{prefix}.after_success"),
                    format!("unknown value `{other}`: expected `archive` or `delete`"),
                );
                return None;
            }
        };
        let max_file_bytes = self
            .max_file_size
            .as_ref()
            .and_then(|size| {
                let span = size.span();
                let copy = match size.get_ref() {
                    SizeValue::Bytes(n) => SizeValue::Bytes(*n),
                    SizeValue::Text(t) => SizeValue::Text(t.clone()),
                };
                size_value(
                    Spanned::new(span, copy),
                    &format!("{prefix}.max_file_size"),
                    report,
                )
            })
            .unwrap_or(64 * 1024 * 1024);
        let settings = InboxSettings {
            patterns: self
                .patterns
                .clone()
                .unwrap_or_else(|| vec!["*.hl7".to_string(), "*.hpr".to_string()]),
            poll_interval,
            readiness,
            after_success,
            error_folder: self
                .error_folder
                .as_deref()
                .map(|f| resolve_path(base, f))
                .unwrap_or_else(|| folder.join("error")),
            max_file_bytes: max_file_bytes as u64,
            folder,
        };
        if let Err(e) = settings.validate() {
            report.push(None, prefix, e.to_string());
            return None;
        }
        Some(settings)
    }
}

fn resolve_path(base: &Path, value: &str) -> PathBuf {
    let path = PathBuf::from(value);
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

fn positive(value: Option<Spanned<i64>>, key: &str, report: &mut Report<'_>) -> Option<usize> {
    let value = value?;
    match usize::try_from(*value.get_ref()) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            report.push(
                Some(value.span()),
                key,
                format!("expected a positive number, found {}", value.get_ref()),
            );
            None
        }
    }
}

fn duration_value(value: Spanned<String>, key: &str, report: &mut Report<'_>) -> Option<Duration> {
    match parse_duration(value.get_ref()) {
        Some(d) => Some(d),
        None => {
            report.push(
                Some(value.span()),
                key,
                format!(
                    "invalid duration `{}`: expected a number with a unit, such as `500ms`, `30s`, `15m` or `1h`",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

fn size_value(value: Spanned<SizeValue>, key: &str, report: &mut Report<'_>) -> Option<usize> {
    let span = value.span();
    let parsed = match value.into_inner() {
        SizeValue::Bytes(n) => usize::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or(n.to_string()),
        SizeValue::Text(text) => parse_size(&text).ok_or(text),
    };
    match parsed {
        Ok(n) => Some(n),
        Err(shown) => {
            report.push(
                Some(span),
                key,
                format!(
                    "invalid size `{shown}`: expected a positive number of bytes or a size such as `64KiB`, `4MiB`, `1MB`"
                ),
            );
            None
        }
    }
}

/// Parses `500ms`, `30s`, `15m`, `2h` (one number, one unit) or a friendly `1h 30m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    for part in text.split_whitespace() {
        let split = part.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = part.split_at(split);
        let n: u64 = number.parse().ok()?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86_400)?),
            "w" => Duration::from_secs(n.checked_mul(7 * 86_400)?),
            // A year of retention: 365 days.
            "y" => Duration::from_secs(n.checked_mul(365 * 86_400)?),
            _ => return None,
        };
        total = total.checked_add(d)?;
    }
    Some(total)
}

/// Parses `4096`, `64KiB`, `4MiB`, `1MB`, `2kB`.
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number.parse().ok()?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor).filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_str_with_env(text, Path::new("/etc/ordobridge/ob.toml"), &|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn errors(text: &str) -> Vec<String> {
        match load(text, &[]) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    /// A push token strong enough for `check`.
    const TOKEN: &str = "q0Zr7PpVh2m8yS5kT1wXc9LbN4dF6gJe";

    const ROOT: &str = env!("CARGO_MANIFEST_DIR");

    /// `[http]` on `bind`, `[launch]` with `launch` lines, `[posos]` simulator.
    fn launch_text(bind: &str, launch: &str) -> String {
        format!(
            "[store]\npath = \"ob.db\"\n[http]\nbind = \"{bind}\"\n[launch]\nmapping = \"{ROOT}/mappings/scan-token.toml\"\n{launch}\n[posos]\nmode = \"simulator\"\n[posos.simulator]\nkey_file = \"{ROOT}/samples/simulator/service-account.json\"\npublic_key_file = \"{ROOT}/samples/simulator/public-key.pem\"\n"
        )
    }

    #[rstest]
    #[case::err_push_open(
        "[push]\nhold_unknown_for = \"0s\"",
        "/etc/ordobridge/ob.toml: `push`: the push endpoint accepts prescriptions from anybody: set `token_file = \"/var/lib/ordobridge/push-token\"` (generated at first start), `token`, or `basic_user` and `basic_password`; or, for a closed test network only, `allow_unauthenticated = true`"
    )]
    #[case::err_push_token_short(
        "[push]\ntoken = \"s3cret-t0ken\"",
        "/etc/ordobridge/ob.toml:2:9: `push.token`: the push token is too short (12 characters; at least 32): generate one with `openssl rand -base64 32`"
    )]
    #[case::err_push_token_placeholder(
        "[push]\ntoken = \"change-me-change-me-change-me-change-me\"",
        "/etc/ordobridge/ob.toml:2:9: `push.token`: the push token is a placeholder (it contains `change-me`), not a secret: generate one with `openssl rand -base64 32` and set it"
    )]
    #[case::err_push_token_repeated(
        "[push]\ntoken = \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
        "/etc/ordobridge/ob.toml:2:9: `push.token`: the push token is a single repeated character, not a secret: generate one with `openssl rand -base64 32`"
    )]
    #[case::err_basic_placeholder(
        "[push]\nbasic_user = \"posos\"\nbasic_password = \"changeme\"",
        "/etc/ordobridge/ob.toml: `push.basic_password`: the basic password is a placeholder (it contains `changeme`), not a secret: generate one with `openssl rand -base64 32` and set it"
    )]
    #[case::err_admin_token_short(
        "[http]\nbind = \"127.0.0.1:8717\"\nadmin_token = \"short\"",
        "/etc/ordobridge/ob.toml:3:15: `http.admin_token`: the admin token is too short (5 characters; at least 32): generate one with `openssl rand -base64 32`"
    )]
    #[case::err_host_with_port(
        "[http]\nbind = \"127.0.0.1:8717\"\nhosts = [\"ob.chu.local:8717\"]",
        "/etc/ordobridge/ob.toml: `http.hosts`: `ob.chu.local:8717` is not a host name: write names such as `ordobridge.chu.local`, without scheme or port"
    )]
    fn err_fail_closed(#[case] section: &str, #[case] expected: &str) {
        let text = format!("{section}\n[store]\npath = \"ob.db\"\n");
        assert_eq!(errors(&text), vec![expected]);
    }

    /// An Argon2id hash of `correct horse battery` (made by `ordobridge user add`).
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$dDCpZk0QtYaz5o0K1vDzEA$QUS8gFzxyt/MeJApM6aM8c0l/r0mrZt24S9iM7IV5u8";

    fn console_text(bind: &str, tls: bool, console: &str) -> String {
        let tls = if tls {
            "[http.tls]\ncert = \"/etc/ordobridge/tls/server.pem\"\nkey = \"/etc/ordobridge/tls/server.key\"\n".to_string()
        } else {
            String::new()
        };
        format!("[store]\npath = \"ob.db\"\n[http]\nbind = \"{bind}\"\n{tls}[console]\n{console}\n")
    }

    #[rstest]
    #[case::err_no_users(
        "127.0.0.1:8717",
        "",
        "/etc/ordobridge/ob.toml:5:1: `console.users`: the console has no users, so nobody could log in: add one with `ordobridge user add NAME --role operator` and paste the line it prints under `[console.users]`"
    )]
    #[case::err_plain_http_beyond_loopback(
        "0.0.0.0:8717",
        &format!("[console.users]\nalice = {{ role = \"operator\", password_hash = \"{HASH}\" }}"),
        "/etc/ordobridge/ob.toml:5:1: `console`: the console would be served on 0.0.0.0:8717 in plain HTTP: passwords and session cookies would cross the network in clear. Add `[http.tls]` (or put a TLS reverse proxy on this machine and bind `[http] bind` to `127.0.0.1`), or set `allow_plain_http = true` in `[console]` for a closed test network"
    )]
    #[case::err_role(
        "127.0.0.1:8717",
        &format!("[console.users]\nalice = {{ role = \"admin\", password_hash = \"{HASH}\" }}"),
        "/etc/ordobridge/ob.toml:7:18: `console.users.alice.role`: unknown role `admin`: expected `viewer` (dashboard and message list, no patient data) or `operator` (patient data and actions)"
    )]
    #[case::err_hash(
        "127.0.0.1:8717",
        "[console.users]\nalice = { role = \"viewer\", password_hash = \"secret-in-clear\" }",
        "/etc/ordobridge/ob.toml:7:44: `console.users.alice.password_hash`: `secret-in-cl` is not an Argon2id hash (expected `$argon2id$v=19$m=…`): make one with `ordobridge user add NAME --role viewer`"
    )]
    fn err_console_fail_closed(#[case] bind: &str, #[case] console: &str, #[case] expected: &str) {
        assert_eq!(errors(&console_text(bind, false, console)), vec![expected]);
    }

    #[test]
    fn err_console_without_http() {
        let text = format!(
            "[store]\npath = \"ob.db\"\n[console]\n[console.users]\nalice = {{ role = \"viewer\", password_hash = \"{HASH}\" }}\n"
        );
        assert_eq!(
            errors(&text),
            vec![
                "/etc/ordobridge/ob.toml:3:1: `console`: `[console]` is served on the HTTP listener: add an `[http]` section with `bind = \"127.0.0.1:8717\"`"
            ]
        );
    }

    #[rstest]
    #[case::ok_loopback("127.0.0.1:8717", false, "")]
    #[case::ok_lan_by_choice("0.0.0.0:8717", false, "allow_plain_http = true")]
    #[case::ok_lan_tls("0.0.0.0:8717", true, "language = \"en\"\nsession_ttl = \"1h\"")]
    fn ok_console(#[case] bind: &str, #[case] tls: bool, #[case] extra: &str) {
        let console = format!(
            "{extra}\n[console.users]\nalice = {{ role = \"operator\", password_hash = \"{HASH}\" }}"
        );
        let text = console_text(bind, tls, &console);
        assert_eq!(errors(&text), Vec::<String>::new());
        let config = load(&text, &[]).expect("valid");
        let console = config.console.expect("console");
        assert_eq!(console.secure_cookies, tls);
        assert_eq!(console.users["alice"].role, crate::console::Role::Operator);
    }

    #[rstest]
    #[case::ok_token_file("token_file = \"/var/lib/ordobridge/push-token\"")]
    #[case::ok_token(&format!("token = \"{TOKEN}\""))]
    #[case::ok_basic("basic_user = \"posos\"\nbasic_password = \"correct horse battery\"")]
    #[case::ok_open_by_choice("allow_unauthenticated = true")]
    fn ok_push_authentication(#[case] lines: &str) {
        let text = format!("[push]\n{lines}\n[store]\npath = \"ob.db\"\n");
        assert_eq!(errors(&text), Vec::<String>::new());
    }

    #[rstest]
    #[case::err_lan_unsigned(
        "127.0.0.1:8717",
        "allow = [\"127.0.0.0/8\", \"10.1.0.0/16\"]",
        "/etc/ordobridge/ob.toml:7:9: `launch.allow`: `10.1.0.0/16` reaches beyond this machine while unsigned links are accepted: anybody there could open any patient's Posos session by typing an IPP. Set `require_signature = true` with a `signing_secret` (the EHR signs its links), or, for an EHR that cannot sign, `allow_unsigned_links = true`"
    )]
    #[case::err_short_secret(
        "127.0.0.1:8717",
        "signing_secret = \"0123456789\"",
        "/etc/ordobridge/ob.toml:7:18: `launch.signing_secret`: the signing secret is too short (10 characters; at least 32): generate one with `openssl rand -base64 32`"
    )]
    #[case::err_simulator_beyond_loopback(
        "0.0.0.0:8717",
        "",
        "/etc/ordobridge/ob.toml:9:8: `posos.mode`: the built-in Posos simulator would be served on 0.0.0.0:8717, beyond this machine: it hands out tokens and accepts imports without real credentials. Bind `[http] bind` to `127.0.0.1`, or use `mode = \"remote\"` in production"
    )]
    fn err_launch_fail_closed(#[case] bind: &str, #[case] launch: &str, #[case] expected: &str) {
        assert_eq!(errors(&launch_text(bind, launch)), vec![expected]);
    }

    #[rstest]
    #[case::ok_loopback_unsigned("")]
    #[case::ok_lan_signed(&format!("allow = [\"10.1.0.0/16\"]\nrequire_signature = true\nsigning_secret = \"{TOKEN}\""))]
    #[case::ok_lan_unsigned_by_choice("allow = [\"10.1.0.0/16\"]\nallow_unsigned_links = true")]
    fn ok_launch_access(#[case] launch: &str) {
        assert_eq!(
            errors(&launch_text("127.0.0.1:8717", launch)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn err_read_mapping_missing_file() {
        let err = read_mapping(Path::new("/nonexistent/orm.toml")).expect_err("no such file");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/orm.toml: cannot read the mapping file: "),
            "{err}"
        );
    }

    #[test]
    fn ok_launch_guide_mapping() {
        let launch = format!("guide_mapping = \"{ROOT}/mappings/guide.toml\"");
        let config = load(&launch_text("127.0.0.1:8717", &launch), &[]).expect("config");
        let settings = config.launch.expect("launch").settings;
        assert_eq!(settings.guide_mapping.message_type(), "guide");
        assert_eq!(settings.mapping.message_type(), "scan-token");
    }

    /// A launch mapping must build the request it is for: JSON, launch inputs, no `when`,
    /// every field Posos requires (checked at start, not at the first click).
    #[rstest]
    #[case::err_hl7_mapping_for_scan_token(
        "mappings/omp-o09.toml",
        "",
        &[
            "/etc/ordobridge/ob.toml:6:11: `launch.mapping`: ROOT/mappings/omp-o09.toml: the scan-token request is JSON: set `[message] format = \"json\"`",
            "/etc/ordobridge/ob.toml:6:11: `launch.mapping`: ROOT/mappings/omp-o09.toml: a launch gives `user`, `patient` and `launch`: set `[message] input = \"launch\"`",
            "/etc/ordobridge/ob.toml:6:11: `launch.mapping`: ROOT/mappings/omp-o09.toml: a launch always sends its scan-token request: remove `[message] when`",
        ]
    )]
    #[case::err_guide_mapping_for_scan_token(
        "mappings/guide.toml",
        "",
        &[
            "/etc/ordobridge/ob.toml:6:11: `launch.mapping`: ROOT/mappings/guide.toml: `facilitySlug` is never written, and the scan-token request needs it: add it to the fields of the body (`[[segment]]` with `id = \"/\"`)",
            "/etc/ordobridge/ob.toml:6:11: `launch.mapping`: ROOT/mappings/guide.toml: `patientId` is never written, and the scan-token request needs it: add it to the fields of the body (`[[segment]]` with `id = \"/\"`)",
        ]
    )]
    #[case::err_scan_token_mapping_for_guide(
        "mappings/scan-token.toml",
        "guide_mapping = \"ROOT/mappings/scan-token.toml\"",
        &[
            "/etc/ordobridge/ob.toml:7:17: `launch.guide_mapping`: ROOT/mappings/scan-token.toml: `guide` is never written, and the guide request needs it: add it to the fields of the body (`[[segment]]` with `id = \"/\"`)",
        ]
    )]
    fn err_launch_mapping_unfit(
        #[case] mapping: &str,
        #[case] launch: &str,
        #[case] expected: &[&str],
    ) {
        let text = launch_text("127.0.0.1:8717", &launch.replace("ROOT", ROOT))
            .replace("mappings/scan-token.toml\"\n", &format!("{mapping}\"\n"));
        let expected: Vec<String> = expected.iter().map(|e| e.replace("ROOT", ROOT)).collect();
        assert_eq!(errors(&text), expected);
    }

    #[test]
    fn err_remote_posos_needs_https_and_a_private_key_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("posos.json");
        std::fs::write(&key, "{}").expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let text = format!(
            "[store]\npath = \"ob.db\"\n[posos]\nmode = \"remote\"\noauth_client_id = \"c\"\nenvironment = \"preprod\"\n[posos.environments.preprod]\nbase_url = \"http://posos.example.test\"\nkey_file = \"{}\"\n",
            key.display()
        );
        assert_eq!(
            errors(&text),
            vec![
                "/etc/ordobridge/ob.toml:8:12: `posos.environments.preprod.base_url`: `http://posos.example.test` is not an `https://` URL: patient identities and tokens would cross the network in clear; use the https URL Posos gave you".to_string(),
                format!(
                    "/etc/ordobridge/ob.toml: `posos.environments.preprod.key_file`: the service-account key `{0}` is readable by other users (mode 644): run `chmod 600 {0}`",
                    key.display()
                ),
            ]
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let fixed = text.replace("http://", "https://");
        assert_eq!(errors(&fixed), Vec::<String>::new());
    }

    #[test]
    fn err_token_file_readable_by_others_or_weak() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("push-token");
        std::fs::write(&file, "short\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let text = format!(
            "[push]\ntoken_file = \"{}\"\n[store]\npath = \"ob.db\"\n",
            file.display()
        );
        assert_eq!(
            errors(&text),
            vec![
                format!(
                    "/etc/ordobridge/ob.toml:2:14: `push.token_file`: `{0}` is readable by other users (mode 640): run `chmod 600 {0}`",
                    file.display()
                ),
                format!(
                    "/etc/ordobridge/ob.toml:2:14: `push.token_file`: the token in `{}` is too short (5 characters; at least 32): generate one with `openssl rand -base64 32`",
                    file.display()
                ),
            ]
        );
    }

    #[rstest]
    #[case::ok_defaults("", Some(90), Some(30))]
    #[case::ok_days(
        "retention = \"365d\"\nrejected_retention = \"7d\"",
        Some(365),
        Some(7)
    )]
    #[case::ok_forever("retention = \"forever\"", None, Some(30))]
    fn ok_retention(
        #[case] lines: &str,
        #[case] days: Option<u64>,
        #[case] rejected_days: Option<u64>,
    ) {
        let config = load(&format!("[store]\npath = \"ob.db\"\n{lines}\n"), &[]).unwrap();
        let retention = config.store.retention;
        assert_eq!(retention.retention.map(|d| d.as_secs() / 86_400), days);
        assert_eq!(
            retention.rejected_retention.map(|d| d.as_secs() / 86_400),
            rejected_days
        );
    }

    #[rstest]
    #[case::err_under_a_day(
        "retention = \"12h\"",
        "/etc/ordobridge/ob.toml:3:13: `store.retention`: `12h` would delete the journal of the current day: keep at least `1d` (or `forever`)"
    )]
    #[case::err_not_a_duration(
        "rejected_retention = \"a month\"",
        "/etc/ordobridge/ob.toml:3:22: `store.rejected_retention`: invalid retention `a month`: expected a number with a unit, such as `30d`, `12w` or `2y` (365 days), or `forever`"
    )]
    fn err_retention(#[case] lines: &str, #[case] expected: &str) {
        assert_eq!(
            errors(&format!("[store]\npath = \"ob.db\"\n{lines}\n")),
            vec![expected]
        );
    }

    #[test]
    fn ok_channel_push_and_census_retention() {
        let config = load(
            "[store]\npath = \"ob.db\"\n\
             [inbound.lab]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\nretention = \"7d\"\n\
             [inbound.adt]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\nretention = \"forever\"\n\
             [inbound.other]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\n\
             [push]\nallow_unauthenticated = true\nretention = \"52w\"\n\
             [census]\nretention = \"10y\"\n",
            &[],
        )
        .unwrap();
        let retention = &config.store.retention;
        let days: Vec<(&str, Option<u64>)> = retention
            .channels
            .iter()
            .map(|(name, age)| (name.as_str(), age.map(|d| d.as_secs() / 86_400)))
            .collect();
        assert_eq!(
            days,
            [("adt", None), ("lab", Some(7)), (PUSH_CHANNEL, Some(364))]
        );
        assert_eq!(retention.census, Some(Duration::from_secs(3650 * 86_400)));
        let plan = retention.plan(jiff::Timestamp::now()).unwrap();
        assert_eq!(plan.channels.len(), 3);
        assert!(plan.census.is_some());
    }

    #[test]
    fn ok_census_retention_default_and_forever() {
        let config = load("[store]\npath = \"ob.db\"\n", &[]).unwrap();
        assert_eq!(
            config.store.retention.census,
            Some(Duration::from_secs(730 * 86_400)),
            "two years"
        );
        let config = load(
            "[store]\npath = \"ob.db\"\nretention = \"forever\"\nrejected_retention = \"forever\"\n\
             [census]\nretention = \"forever\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.store.retention.census, None);
        assert_eq!(config.store.retention.plan(jiff::Timestamp::now()), None);
    }

    #[rstest]
    #[case::err_channel_never(
        "[inbound.lab]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\nretention = \"never\"",
        "/etc/ordobridge/ob.toml:6:13: `inbound.lab.retention`: `never` is ambiguous: write `forever` to keep rows without end, or a retention such as `90d`"
    )]
    #[case::err_channel_syntax(
        "[inbound.lab]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\nretention = \"7 days\"",
        "/etc/ordobridge/ob.toml:6:13: `inbound.lab.retention`: invalid retention `7 days`: expected a number with a unit, such as `30d`, `12w` or `2y` (365 days), or `forever`"
    )]
    #[case::err_census_zero(
        "[census]\nretention = \"0\"",
        "/etc/ordobridge/ob.toml:4:13: `census.retention`: `0` is ambiguous: write `forever` to keep rows without end, or a retention such as `90d`"
    )]
    #[case::err_census_under_a_day(
        "[census]\nretention = \"6h\"",
        "/etc/ordobridge/ob.toml:4:13: `census.retention`: `6h` would delete encounters discharged today: keep at least `1d` (or `forever`)"
    )]
    #[case::err_push_channel_name(
        "[inbound.posos-push]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"",
        "/etc/ordobridge/ob.toml:4:12: `inbound.posos-push`: `posos-push` is the journal channel of pushed bundles: give this channel another name"
    )]
    fn err_channel_and_census_retention(#[case] lines: &str, #[case] expected: &str) {
        assert_eq!(
            errors(&format!("[store]\npath = \"ob.db\"\n{lines}\n")),
            vec![expected]
        );
    }

    #[test]
    fn err_push_retention_names_the_key() {
        let all = errors(
            "[store]\npath = \"ob.db\"\n[push]\nallow_unauthenticated = true\nretention = \"1h\"\n",
        );
        assert!(
            all.contains(&"/etc/ordobridge/ob.toml:5:13: `push.retention`: `1h` would delete the journal of the current day: keep at least `1d` (or `forever`)".to_owned()),
            "{all:?}"
        );
    }

    const MINIMAL: &str = r#"
[store]
path = "${DATA:-var}/ob.db"

[inbound.adt-in]
protocol = "mllp"
bind = "127.0.0.1:${PORT:-2575}"
"#;

    #[test]
    fn ok_defaults_and_relative_path() {
        let config = load(MINIMAL, &[]).unwrap();
        assert_eq!(
            config.store.path,
            PathBuf::from("/etc/ordobridge/var/ob.db")
        );
        let channel = &config.inbound["adt-in"];
        let InboundKind::Mllp(mllp) = &channel.kind else {
            panic!("expected an MLLP channel");
        };
        assert_eq!(mllp.bind, "127.0.0.1:2575".parse().unwrap());
        assert_eq!(mllp.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
        assert_eq!(channel.charset, None);
        // The configuration's defaults are the library's.
        let library = crate::mllp::server::ServerSettings::default();
        assert_eq!(
            (
                mllp.max_connections,
                mllp.max_frame_bytes,
                mllp.read_timeout,
                mllp.idle_timeout
            ),
            (
                library.max_connections,
                library.max_frame_bytes,
                library.read_timeout,
                library.idle_timeout
            )
        );
        let store = crate::store::StoreOptions::default();
        assert_eq!(
            (config.store.queue_capacity, config.store.max_batch),
            (store.queue_capacity, store.max_batch)
        );
    }

    #[test]
    fn ok_file_destination_takes_the_retry_keys() {
        let text = format!(
            "{MINIMAL}[outbound.drop]\nprotocol = \"file\"\nfolder = \"out\"\n\
             retry_initial = \"2s\"\nretry_max = \"1m\"\nmax_attempts = 0\n\
             [outbound.plain]\nprotocol = \"file\"\nfolder = \"out2\"\n"
        );
        let config = load(&text, &[]).unwrap();
        let Destination::File(drop) = &config.outbound["drop"] else {
            panic!("expected a file destination");
        };
        assert_eq!(drop.outbox.folder, PathBuf::from("/etc/ordobridge/out"));
        assert_eq!(
            (drop.retry.initial, drop.retry.max, drop.retry.max_attempts),
            (Duration::from_secs(2), Duration::from_secs(60), 0)
        );
        let Destination::File(plain) = &config.outbound["plain"] else {
            panic!("expected a file destination");
        };
        assert_eq!(plain.retry, crate::delivery::RetryPolicy::default());
    }

    #[test]
    fn ok_tls_keys_resolve_paths_and_default_the_server_name() {
        let text = format!(
            "{MINIMAL}[inbound.adt-in.tls]\ncert = \"tls/ob.crt\"\nkey = \"/k/ob.key\"\nclient_ca = \"ca.pem\"\nclient_names = [\"dpi.example\"]\n\
             [outbound.ehr]\nprotocol = \"mllp\"\naddress = \"10.0.0.5:2576\"\n[outbound.ehr.tls]\nca = \"ca.pem\"\n\
             [http]\nbind = \"127.0.0.1:8717\"\nheader_read_timeout = \"3s\"\n[http.tls]\ncert = \"h.crt\"\nkey = \"h.key\"\nclient_ca = \"ca.pem\"\n\
             [push]\nrequire_client_cert = true\nallow_unauthenticated = true\n"
        );
        let config = load(&text, &[]).unwrap();
        let InboundKind::Mllp(mllp) = &config.inbound["adt-in"].kind else {
            panic!("expected an MLLP channel");
        };
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

    #[test]
    fn ok_environment_wins_over_default() {
        let config = load(MINIMAL, &[("DATA", "/srv/ob"), ("PORT", "0")]).unwrap();
        assert_eq!(config.store.path, PathBuf::from("/srv/ob/ob.db"));
        let InboundKind::Mllp(mllp) = &config.inbound["adt-in"].kind else {
            panic!("expected an MLLP channel");
        };
        assert_eq!(mllp.bind.port(), 0);
    }

    #[rstest]
    #[case::plain("a${X}b", "a1b")]
    #[case::default_unused("${X:-9}", "1")]
    #[case::default_used("${Y:-9}", "9")]
    #[case::empty_default("${Y:-}", "")]
    #[case::dollar_escape("$$HOME", "$HOME")]
    #[case::lone_dollar("5$", "5$")]
    fn ok_expand(#[case] input: &str, #[case] expected: &str) {
        let env = |name: &str| (name == "X").then(|| "1".to_string());
        assert_eq!(expand_env(input, &env).unwrap(), expected);
    }

    #[rstest]
    #[case::unset(
        "${NOPE}",
        "environment variable `NOPE` is not set: set it, or write `${NOPE:-default}`"
    )]
    #[case::unterminated(
        "${NOPE",
        "unterminated `${` in `${NOPE`: expected `}` (write `$$` for a literal `$`)"
    )]
    #[case::bad_name(
        "${1X}",
        "invalid variable name `1X` in `${1X}`: use letters, digits and `_`"
    )]
    fn err_expand(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(expand_env(input, &|_| None).unwrap_err(), expected);
    }

    #[test]
    fn err_every_problem_is_reported_with_line_and_key() {
        let text = r#"[store]
path = "ob.db"

[inbound.a]
protocol = "mllp"
bind = "localhost"
max_frame_size = "12 parsecs"
read_timeout = "soon"
charset = "EBCDIC"
"#;
        assert_eq!(
            errors(text),
            vec![
                "/etc/ordobridge/ob.toml:9:11: `inbound.a.charset`: unknown charset `EBCDIC`: expected `auto` (follow MSH-18), `ascii`, `8859/1`, `8859/15` or `UNICODE UTF-8`",
                "/etc/ordobridge/ob.toml:6:8: `inbound.a.bind`: invalid listen address `localhost`: expected IP:PORT such as `127.0.0.1:2575` or `0.0.0.0:2575`",
                "/etc/ordobridge/ob.toml:7:18: `inbound.a.max_frame_size`: invalid size `12 parsecs`: expected a positive number of bytes or a size such as `64KiB`, `4MiB`, `1MB`",
                "/etc/ordobridge/ob.toml:8:16: `inbound.a.read_timeout`: invalid duration `soon`: expected a number with a unit, such as `500ms`, `30s`, `15m` or `1h`",
            ]
        );
    }

    #[rstest]
    #[case::ok_default("", DEFAULT_HOLD_UNKNOWN_FOR)]
    #[case::ok_seconds("hold_unknown_for = \"90s\"\n", Duration::from_secs(90))]
    #[case::ok_minutes("hold_unknown_for = \"30m\"\n", Duration::from_secs(1800))]
    #[case::ok_hours("hold_unknown_for = \"2h\"\n", Duration::from_secs(7200))]
    #[case::ok_no_hold("hold_unknown_for = \"0s\"\n", Duration::ZERO)]
    fn ok_push_hold(#[case] line: &str, #[case] expected: Duration) {
        let text = format!("{MINIMAL}\n[push]\n{line}allow_unauthenticated = true\n");
        let push = load(&text, &[]).unwrap().push.unwrap();
        assert_eq!(push.hold_unknown_for, expected);
        assert_eq!(push.basic, None);
    }

    #[test]
    fn ok_push_basic_and_bearer() {
        let text = format!(
            "{MINIMAL}\n[push]\ntoken = \"{TOKEN}\"\nbasic_user = \"posos\"\nbasic_password = \"${{PW}}\"\n"
        );
        let push = load(&text, &[("PW", "s3cret")]).unwrap().push.unwrap();
        assert_eq!(push.token.as_deref(), Some(TOKEN));
        let basic = push.basic.unwrap();
        assert_eq!(
            (basic.user.as_str(), basic.password.as_str()),
            ("posos", "s3cret")
        );
        assert_eq!(
            format!("{basic:?}"),
            r#"BasicAuth { user: "posos", password: "***" }"#
        );
    }

    #[rstest]
    #[case::err_duration(
        "hold_unknown_for = \"soon\"",
        "/etc/ordobridge/ob.toml:2:20: `push.hold_unknown_for`: invalid duration `soon`: expected a number with a unit, such as `500ms`, `30s`, `15m` or `1h`"
    )]
    #[case::err_user_alone(
        "basic_user = \"posos\"",
        "/etc/ordobridge/ob.toml:2:14: `push.basic_password`: `basic_user` is set but `basic_password` is not: set both for basic authentication, or neither"
    )]
    #[case::err_password_alone(
        "basic_password = \"x\"",
        "/etc/ordobridge/ob.toml:2:18: `push.basic_user`: `basic_password` is set but `basic_user` is not: set both for basic authentication, or neither"
    )]
    #[case::err_colon_in_user(
        "basic_user = \"a:b\"\nbasic_password = \"x\"",
        "/etc/ordobridge/ob.toml:2:14: `push.basic_user`: basic user `a:b` contains `:`, which basic authentication cannot carry: choose a user name without it"
    )]
    fn err_push_keys(#[case] lines: &str, #[case] expected: &str) {
        let text = format!("[push]\n{lines}\ntoken = \"{TOKEN}\"\n[store]\npath = \"ob.db\"\n");
        assert_eq!(errors(&text), vec![expected]);
    }

    #[test]
    fn ok_credential_is_read_from_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("push-token"),
            "s3cret-token-of-32-characters-xx\n",
        )
        .unwrap();
        let creds = dir.path().to_string_lossy().into_owned();
        let text = "[store]\npath = \"ob.db\"\n[push]\ntoken = \"${credential:push-token}\"\n";
        let config = load(text, &[("CREDENTIALS_DIRECTORY", &creds)]).unwrap();
        assert_eq!(
            config.push.unwrap().token.as_deref(),
            Some("s3cret-token-of-32-characters-xx")
        );
    }

    #[rstest]
    #[case::no_directory(
        None,
        "${credential:push-token}",
        "/etc/ordobridge/ob.toml:4:9: `push.token`: `${credential:push-token}` needs the environment variable `CREDENTIALS_DIRECTORY`, which systemd sets for a unit with `LoadCredential=push-token:/etc/ordobridge/credentials/push-token`: run under that unit, or set `CREDENTIALS_DIRECTORY` to the folder holding the file `push-token`"
    )]
    #[case::missing_file(
        Some("/nonexistent-creds"),
        "${credential:push-token}",
        "/etc/ordobridge/ob.toml:4:9: `push.token`: cannot read credential `push-token` at `/nonexistent-creds/push-token`: No such file or directory (os error 2): check the unit's `LoadCredential=push-token:…` line and that the file exists"
    )]
    #[case::bad_name(
        Some("/creds"),
        "${credential:../etc/shadow}",
        "/etc/ordobridge/ob.toml:4:9: `push.token`: invalid credential name `../etc/shadow` in `${credential:../etc/shadow}`: use letters, digits, `_`, `-` and `.`"
    )]
    fn err_credential(#[case] dir: Option<&str>, #[case] value: &str, #[case] expected: &str) {
        let text = format!("[store]\npath = \"ob.db\"\n[push]\ntoken = \"{value}\"\n");
        let vars: Vec<(&str, &str)> = dir
            .map(|d| ("CREDENTIALS_DIRECTORY", d))
            .into_iter()
            .collect();
        let got = match load(&text, &vars) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(got, vec![expected]);
    }

    #[test]
    fn ok_mllp_access_defaults_and_values() {
        let config = load(MINIMAL, &[]).unwrap();
        let InboundKind::Mllp(mllp) = &config.inbound["adt-in"].kind else {
            panic!("expected an MLLP channel");
        };
        assert_eq!(mllp.allow, None, "any address by default");
        assert_eq!(mllp.max_connections_per_peer, 32);
        let text =
            format!("{MINIMAL}allow = [\"10.1.0.0/16\", \"::1\"]\nmax_connections_per_peer = 4\n");
        let config = load(&text, &[]).unwrap();
        let InboundKind::Mllp(mllp) = &config.inbound["adt-in"].kind else {
            panic!("expected an MLLP channel");
        };
        let allow = mllp.allow.as_ref().unwrap();
        assert!(allow.allows("10.1.2.3".parse().unwrap()));
        assert!(!allow.allows("127.0.0.1".parse().unwrap()));
        assert_eq!(mllp.max_connections_per_peer, 4);
    }

    #[rstest]
    #[case::bad_network(
        "allow = [\"10.1.0.1/16\"]",
        "/etc/ordobridge/ob.toml:8:9: `inbound.adt-in.allow`: invalid network `10.1.0.1/16`: host bits are set: did you mean `10.1.0.0/16`?: write the senders' networks such as `10.1.0.0/16`, `10.1.2.3` or `::1/128`"
    )]
    #[case::zero_per_peer(
        "max_connections_per_peer = 0",
        "/etc/ordobridge/ob.toml:8:28: `inbound.adt-in.max_connections_per_peer`: expected a positive number, found 0"
    )]
    fn err_mllp_access_keys(#[case] line: &str, #[case] expected: &str) {
        assert_eq!(errors(&format!("{MINIMAL}{line}\n")), vec![expected]);
    }

    #[test]
    fn err_unset_variable_names_line_and_key() {
        let text = "[store]\npath = \"${ORDO_TEST_UNSET_DIR}/x.db\"\n";
        assert_eq!(
            errors(text),
            vec![
                "/etc/ordobridge/ob.toml:2:8: `store.path`: environment variable `ORDO_TEST_UNSET_DIR` is not set: set it, or write `${ORDO_TEST_UNSET_DIR:-default}`"
            ]
        );
    }

    #[test]
    fn err_syntax_and_unknown_keys_have_lines() {
        let syntax = errors("[store\npath = 1\n");
        assert_eq!(syntax.len(), 1);
        assert!(
            syntax[0].starts_with("/etc/ordobridge/ob.toml:1:"),
            "{syntax:?}"
        );
        let unknown = errors("[store]\npath = \"x\"\npaht = \"y\"\n");
        assert_eq!(unknown.len(), 1);
        assert!(
            unknown[0].starts_with("/etc/ordobridge/ob.toml:3:1: "),
            "{unknown:?}"
        );
        assert!(unknown[0].contains("unknown field `paht`"), "{unknown:?}");
    }

    #[test]
    fn err_missing_store_and_duplicate_ports() {
        let text = r#"
[inbound.a]
protocol = "mllp"
bind = "127.0.0.1:2575"
[inbound.b]
protocol = "mllp"
bind = "127.0.0.1:2575"
"#;
        assert_eq!(
            errors(text),
            vec![
                "/etc/ordobridge/ob.toml: `store`: missing section: add `[store]` with `path = \"var/ordobridge.db\"`",
                "/etc/ordobridge/ob.toml: `inbound.b.bind`: address 127.0.0.1:2575 is already used by channel `a`: give each listener its own port",
            ]
        );
    }

    #[test]
    fn ok_the_shipped_sample_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/ordobridge.toml");
        let text = std::fs::read_to_string(&path).expect("sample config");
        let config =
            Config::from_str_with_env(&text, &path, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.inbound.len(), 3);
        assert!(config.http.is_some() && config.launch.is_some() && config.posos.is_some());
        let InboundKind::File(hprim) = &config.inbound["hprim-files"].kind else {
            panic!("expected a file channel");
        };
        assert_eq!(hprim.format, FileFormat::Hprim);
        assert!(matches!(
            hprim.inbox.readiness,
            crate::filedrop::Readiness::Witness { .. }
        ));
        assert_eq!(config.census.ipp_authority.as_deref(), Some("CH_EXEMPLE"));
    }

    #[test]
    fn err_file_channel_and_posos_problems_are_located() {
        let text = r#"[store]
path = "ob.db"
[inbound.f]
protocol = "file"
folder = "in"
ready = "sometimes"
[posos]
mode = "remote"
environment = "prod"
"#;
        assert_eq!(
            errors(text),
            vec![
                "/etc/ordobridge/ob.toml:6:9: `inbound.f.ready`: unknown readiness `sometimes`: expected `stable` (size and time unchanged for `stable_for`) or `witness` (a `.OK` file beside)",
                "/etc/ordobridge/ob.toml:9:15: `posos.environment`: no `[posos.environments.prod]` section (known: none)",
            ]
        );
    }

    #[rstest]
    #[case("500ms", Duration::from_millis(500))]
    #[case("30s", Duration::from_secs(30))]
    #[case("15m", Duration::from_secs(900))]
    #[case("1h 30m", Duration::from_secs(5400))]
    #[case("2w", Duration::from_secs(14 * 86_400))]
    #[case("2y", Duration::from_secs(730 * 86_400))]
    fn ok_durations(#[case] text: &str, #[case] expected: Duration) {
        assert_eq!(parse_duration(text), Some(expected));
    }

    #[rstest]
    #[case("4096", Some(4096))]
    #[case("64KiB", Some(65536))]
    #[case("4MiB", Some(4 << 20))]
    #[case("1MB", Some(1_000_000))]
    #[case("0", None)]
    #[case("MiB", None)]
    fn sizes(#[case] text: &str, #[case] expected: Option<usize>) {
        assert_eq!(parse_size(text), expected);
    }

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

    #[test]
    fn err_reserved_channel_names() {
        let text = "[store]\npath = \"ob.db\"\n[inbound.documents]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\n";
        assert_eq!(
            errors(text),
            vec![
                "/etc/ordobridge/ob.toml:4:12: `inbound.documents`: `documents` is the journal channel of documents (`$send-to-ehr`): give this channel another name"
            ]
        );
    }
}
