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
//!
//! # Layout
//!
//! - `mod.rs`: [`Config`], the entry points ([`Config::load`], [`Config::from_str_with_env`],
//!   [`read_mapping`]), the report of located problems, and the assembly of the sections
//!   (`RawConfig::validate`: which section needs which, the reserved channel names).
//! - `env.rs`: `${VAR}`, `${VAR:-default}`, `$$` and `${credential:NAME}` in string values.
//! - `units.rs`: positive numbers, durations, sizes.
//! - `raw.rs`: the sections as deserialized, before validation (spans kept).
//! - `secrets.rs`: tokens, token files, basic credentials, fail closed.
//! - `tls.rs`: the `tls` tables of listeners and destinations.
//! - one file per section, its settings type (where no subsystem owns it), its validation and
//!   its tests: `store.rs` (with the retention keys), `inbound.rs`, `outbound.rs`, `http.rs`,
//!   `launch.rs`, `posos.rs`, `push.rs` (and the `route` lists), `console.rs`, `fhir.rs`,
//!   `documents.rs`.
//! - `test_support.rs`: what the tests share (loading text with given variables).

mod console;
mod documents;
mod env;
mod fhir;
mod http;
mod inbound;
mod launch;
mod outbound;
mod posos;
mod push;
mod raw;
mod secrets;
mod store;
#[cfg(test)]
mod test_support;
mod tls;
mod units;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

pub use documents::{
    DEFAULT_DOCUMENT_MAX_SIZE, DEFAULT_DOCUMENTS_IN_FLIGHT, DEFAULT_TRACKING_RETENTION,
    DocumentsConfig,
};
pub use fhir::{DEFAULT_IPP_SYSTEM, DEFAULT_NDA_SYSTEM, FhirConfig};
pub use http::HttpConfig;
pub use inbound::{
    DEFAULT_REJECTED_MAX_PER_HOUR, FileFormat, FileInboxConfig, InboundChannel, InboundKind,
    MllpListenerConfig,
};
pub use launch::LaunchConfig;
pub use outbound::{DEFAULT_ALERT_AFTER, Destination};
pub use posos::{PososConfig, PososMode};
pub use push::{DEFAULT_HOLD_UNKNOWN_FOR, DEFAULT_PUSH_MAX_BODY, PushConfig, PushRoute};
pub use secrets::{BasicAuth, MIN_SECRET_LEN};
pub use store::{RetentionConfig, StoreConfig};
pub use units::{parse_duration, parse_size};

use console::validate_console;
use documents::validate_documents;
use env::expand_table;
use fhir::validate_fhir;
use http::validate_http;
use launch::validate_launch;
use outbound::validate_outbound;
use posos::validate_posos;
use push::validate_push;
use raw::RawConfig;
use store::{Kept, retention_value};
use units::duration_value;

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

/// The journal channel of pushed bundles (`[push] retention` applies to it). Reserved: no
/// inbound channel may take this name.
pub const PUSH_CHANNEL: &str = "posos-push";

/// The journal channel of documents (`$send-to-ehr`). Reserved like [`PUSH_CHANNEL`].
pub const DOCUMENTS_CHANNEL: &str = "documents";

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

impl RawConfig {
    fn validate(self, file: &Path, base: &Path, report: &mut Report<'_>) -> Config {
        let mut store = store::validate_store(self.store, base, report);
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
        store.retention.configured_channels = inbound
            .keys()
            .cloned()
            .chain(push.is_some().then(|| PUSH_CHANNEL.to_owned()))
            .chain(documents.is_some().then(|| DOCUMENTS_CHANNEL.to_owned()))
            .collect();
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

fn resolve_path(base: &Path, value: &str) -> PathBuf {
    let path = PathBuf::from(value);
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::inbound::DEFAULT_MAX_FRAME_BYTES;
    use super::*;
    use crate::config::test_support::*;

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
    fn ok_defaults_and_relative_path() {
        let config = load(MINIMAL, &[]).unwrap();
        assert_eq!(
            config.store.path,
            PathBuf::from("/etc/ordobridge/var/ob.db")
        );
        let channel = &config.inbound["adt-in"];
        let mllp = mllp_channel(&config, "adt-in");
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
