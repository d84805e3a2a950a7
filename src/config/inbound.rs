//! `[inbound.NAME]`: channels, MLLP listeners or file drops.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::hl7::Charset;

use super::raw::{RawInbound, SizeValue};
use super::tls::server_tls;
use super::units::{duration_value, positive, size_value};
use super::{Report, resolve_path};

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

// The configuration's defaults are the library's: one place each.
const DEFAULT_MAX_CONNECTIONS: usize = crate::mllp::server::ServerSettings::DEFAULT.max_connections;
pub(super) const DEFAULT_MAX_FRAME_BYTES: usize =
    crate::mllp::server::ServerSettings::DEFAULT.max_frame_bytes;
const DEFAULT_READ_TIMEOUT: Duration = crate::mllp::server::ServerSettings::DEFAULT.read_timeout;
const DEFAULT_IDLE_TIMEOUT: Duration = crate::mllp::server::ServerSettings::DEFAULT.idle_timeout;

impl RawInbound {
    pub(super) fn validate(
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

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use rstest::rstest;

    #[test]
    fn ok_mllp_access_defaults_and_values() {
        let config = load(MINIMAL, &[]).unwrap();
        let mllp = mllp_channel(&config, "adt-in");
        assert_eq!(mllp.allow, None, "any address by default");
        assert_eq!(mllp.max_connections_per_peer, 32);
        let text =
            format!("{MINIMAL}allow = [\"10.1.0.0/16\", \"::1\"]\nmax_connections_per_peer = 4\n");
        let config = load(&text, &[]).unwrap();
        let mllp = mllp_channel(&config, "adt-in");
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
}
