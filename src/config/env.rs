//! `${VAR}`, `${VAR:-default}` and `$$` in string values, and `${credential:NAME}` read from
//! `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`).

use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Report;

fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

pub(super) fn expand_table(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use rstest::rstest;
    use std::path::PathBuf;

    #[test]
    fn ok_environment_wins_over_default() {
        let config = load(MINIMAL, &[("DATA", "/srv/ob"), ("PORT", "0")]).unwrap();
        assert_eq!(config.store.path, PathBuf::from("/srv/ob/ob.db"));
        let mllp = mllp_channel(&config, "adt-in");
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
    fn err_unset_variable_names_line_and_key() {
        let text = "[store]\npath = \"${ORDO_TEST_UNSET_DIR}/x.db\"\n";
        assert_eq!(
            errors(text),
            vec![
                "/etc/ordobridge/ob.toml:2:8: `store.path`: environment variable `ORDO_TEST_UNSET_DIR` is not set: set it, or write `${ORDO_TEST_UNSET_DIR:-default}`"
            ]
        );
    }
}
