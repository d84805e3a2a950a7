//! `[outbound.NAME]`: destinations (MLLP or drop folder) and their retry policy.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::raw::RawOutbound;
use super::tls::client_tls;
use super::units::duration_value;
use super::{Report, resolve_path};

/// The default of `[outbound.NAME] alert_after`: a message waiting longer than this for its
/// destination makes `/ready` fail.
pub const DEFAULT_ALERT_AFTER: Duration = Duration::from_secs(15 * 60);

/// Where outbound messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// An MLLP receiver (the EHR), ACK checked against MSH-10.
    Mllp(crate::delivery::DestinationSettings),
    /// A drop folder: `NAME.tmp`, fsync, rename, fsync the folder, then the witness.
    File(crate::delivery::FileDestinationSettings),
}

pub(super) fn validate_outbound(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use std::path::PathBuf;

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
}
