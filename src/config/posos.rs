//! `[posos]`: the Posos service (an environment of the real one) or the built-in simulator.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::RawPosos;
use super::secrets::readable_by_others;
use super::units::duration_value;
use super::{HttpConfig, Report, resolve_path};

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

pub(super) fn validate_posos(
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

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn err_remote_posos_needs_https_and_a_private_key_file() {
        let dir = tempfile::tempdir().expect("dir");
        let key = file_with_mode(dir.path(), "posos.json", "{}", 0o644);
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
        file_with_mode(dir.path(), "posos.json", "{}", 0o600);
        let fixed = text.replace("http://", "https://");
        assert_eq!(errors(&fixed), Vec::<String>::new());
    }
}
