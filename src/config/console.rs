//! `[console]`: users, sessions and language of the web console.

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
}
