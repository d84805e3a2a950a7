//! `[push]`: the FHIR push endpoint, and the `[[SECTION.route]]` lists (push and documents).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawPush, RawRoute};
use super::secrets::{BasicAuth, Secrets, validate_credentials};
use super::tls::require_client_cert;
use super::units::{duration_value, size_value};
use super::{Destination, HttpConfig, Report, read_mapping, resolve_path};

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

/// The default of `[push] hold_unknown_for`: the ADT A01/A04 normally precedes the
/// prescription by far, so a quarter of an hour covers a late or re-sent ADT without
/// delaying a prescription for long.
pub const DEFAULT_HOLD_UNKNOWN_FOR: Duration = Duration::from_secs(15 * 60);

/// The default of `[push] max_body`: a bundle carrying a prescription PDF fits.
pub const DEFAULT_PUSH_MAX_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct PushRoute {
    /// The mapping file (absolute).
    pub mapping: PathBuf,
    /// An `[outbound.NAME]` destination.
    pub destination: String,
}

pub(super) fn validate_push(
    raw: RawPush,
    outbound: &BTreeMap<String, Destination>,
    http: Option<&HttpConfig>,
    base: &Path,
    report: &mut Report<'_>,
) -> PushConfig {
    let require_client_cert = require_client_cert(
        raw.require_client_cert.as_ref(),
        "push",
        http,
        "Posos' certificate",
        report,
    );
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
pub(super) fn validate_routes(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use rstest::rstest;

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
}
