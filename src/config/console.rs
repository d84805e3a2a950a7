//! `[console]`: users, sessions and language of the web console.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::raw::RawConsole;
use super::units::{duration_value, positive};
use super::{HttpConfig, Report};

/// `[console]`: users with Argon2id hashes and a known role; fail closed (no users, or a
/// console beyond this machine in plain HTTP, is refused).
pub(super) fn validate_console(
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
    // Users named for single sign-on count as users even when its setup is refused below:
    // that refusal says what to fix.
    let sso_named = !raw.sso_users.is_empty();
    let sso = validate_sso(
        raw.sso_header,
        raw.trusted_proxies,
        raw.sso_users,
        &span,
        report,
    );
    if raw.users.is_empty() && !sso_named {
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
    settings.sso = sso;
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

/// `[console] sso_header`, `trusted_proxies`, `sso_users`: fail closed: a header without
/// trusted proxies (anybody could name any user) or proxies without a header is refused.
fn validate_sso(
    header: Option<Spanned<String>>,
    proxies: Option<Spanned<Vec<String>>>,
    users: BTreeMap<String, Spanned<String>>,
    span: &std::ops::Range<usize>,
    report: &mut Report<'_>,
) -> Option<crate::console::SsoSettings> {
    use crate::console::{Role, SsoSettings};
    let proxies = proxies.filter(|p| !p.get_ref().is_empty());
    let (header, proxies) = match (header, proxies) {
        (None, None) => {
            if !users.is_empty() {
                report.push(
                    Some(span.clone()),
                    "console.sso_users",
                    "`sso_users` are named by a reverse proxy's header: set `sso_header = \"X-Remote-User\"` and `trusted_proxies = [\"127.0.0.1/32\"]` (the proxy's address), or remove `sso_users`".to_string(),
                );
            }
            return None;
        }
        (Some(header), None) => {
            report.push(
                Some(header.span()),
                "console.sso_header",
                "a single-sign-on header is believed only from trusted reverse proxies, and none is listed: anybody could name any user. Set `trusted_proxies = [\"127.0.0.1/32\"]` (the address the proxy connects from)".to_string(),
            );
            return None;
        }
        (None, Some(proxies)) => {
            report.push(
                Some(proxies.span()),
                "console.trusted_proxies",
                "trusted proxies without `sso_header` sign nobody in: set `sso_header = \"X-Remote-User\"` (the header your proxy sets), or remove `trusted_proxies`".to_string(),
            );
            return None;
        }
        (Some(header), Some(proxies)) => (header, proxies),
    };
    let name = header.get_ref().trim().to_ascii_lowercase();
    if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        report.push(
            Some(header.span()),
            "console.sso_header",
            format!(
                "`{}` is not an HTTP header name: write one such as `X-Remote-User`",
                header.get_ref()
            ),
        );
        return None;
    }
    let trusted_proxies = match crate::http::AllowList::parse(proxies.get_ref()) {
        Ok(list) => list,
        Err(e) => {
            report.push(
                Some(proxies.span()),
                "console.trusted_proxies",
                format!("{e}: write the proxy's network, such as `127.0.0.1/32` or `10.1.2.3/32`"),
            );
            return None;
        }
    };
    let mut roles = BTreeMap::new();
    for (user, role) in users {
        match Role::parse(role.get_ref()) {
            Some(parsed) => {
                roles.insert(user, parsed);
            }
            None => report.push(
                Some(role.span()),
                &format!("console.sso_users.{user}"),
                format!(
                    "unknown role `{}`: expected `viewer` or `operator`",
                    role.get_ref()
                ),
            ),
        }
    }
    Some(SsoSettings {
        header: name,
        trusted_proxies,
        users: roles,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use rstest::rstest;

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
    #[case::err_sso_header_without_proxies(
        "127.0.0.1:8717",
        "sso_header = \"X-Remote-User\"\n[console.sso_users]\nsam = \"operator\"",
        "/etc/ordobridge/ob.toml:6:14: `console.sso_header`: a single-sign-on header is believed only from trusted reverse proxies, and none is listed: anybody could name any user. Set `trusted_proxies = [\"127.0.0.1/32\"]` (the address the proxy connects from)"
    )]
    #[case::err_sso_proxies_without_header(
        "127.0.0.1:8717",
        "trusted_proxies = [\"127.0.0.1/32\"]\n[console.sso_users]\nsam = \"operator\"",
        "/etc/ordobridge/ob.toml:6:19: `console.trusted_proxies`: trusted proxies without `sso_header` sign nobody in: set `sso_header = \"X-Remote-User\"` (the header your proxy sets), or remove `trusted_proxies`"
    )]
    #[case::err_sso_role(
        "127.0.0.1:8717",
        "sso_header = \"X-Remote-User\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n[console.sso_users]\nsam = \"admin\"\nvera = \"viewer\"",
        "/etc/ordobridge/ob.toml:9:7: `console.sso_users.sam`: unknown role `admin`: expected `viewer` or `operator`"
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

    #[test]
    fn ok_console_sso_only() {
        let text = console_text(
            "127.0.0.1:8717",
            false,
            "sso_header = \"X-Remote-User\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n[console.sso_users]\nsam = \"operator\"",
        );
        assert_eq!(errors(&text), Vec::<String>::new());
        let console = load(&text, &[]).expect("valid").console.expect("console");
        let sso = console.sso.as_ref().expect("sso");
        assert_eq!(sso.header, "x-remote-user");
        assert_eq!(
            console.sso_role("sam"),
            Some(crate::console::Role::Operator)
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
}
