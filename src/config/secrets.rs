//! Tokens, shared secrets and basic credentials: fail closed (placeholders, short or repeated
//! secrets, files readable by others are refused).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{Report, resolve_path};

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
pub(super) fn secret_problem(secret: &str) -> Result<(), String> {
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
pub(super) fn readable_by_others(path: &Path) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

/// The credential keys of an authenticated HTTP section (`[push]`, `[fhir]`).
pub(super) struct Secrets {
    pub(super) section: &'static str,
    pub(super) token: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) basic_user: Option<Spanned<String>>,
    pub(super) basic_password: Option<Spanned<String>>,
    pub(super) allow_unauthenticated: bool,
    /// What an unauthenticated section lets anybody do, for the refusal.
    pub(super) open_door: &'static str,
}

/// Fail closed: a strong token, a token file, or basic credentials; or the operator's explicit
/// `allow_unauthenticated`. The token, the token file and the basic credentials.
pub(super) fn validate_credentials(
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

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use rstest::rstest;

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

    #[test]
    fn err_token_file_readable_by_others_or_weak() {
        let dir = tempfile::tempdir().expect("dir");
        let file = file_with_mode(dir.path(), "push-token", "short\n", 0o640);
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
}
