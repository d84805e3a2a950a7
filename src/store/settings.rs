//! The store's settings beyond the SQLite file: which backend (`[store] backend`), the
//! PostgreSQL connection (`url`, `password` or `password_file`, `pool_size`,
//! `statement_timeout`, `sslmode`, `ca_file`, `allow_plain`) and the node's place in a cluster
//! (`[cluster] node_name`, `failover_after`).
//!
//! The configuration hands the raw values over ([`RawPostgres`], [`RawCluster`]) and gets the
//! checked settings or located problems back, so the parsing lives beside the store and
//! `config` only assembles (see `config::RawConfig::validate`).
//!
//! Secure by default: the password never sits in the URL (refused, naming the key), and the
//! connection to PostgreSQL is TLS (rustls, server certificate verified) unless the server is
//! on this machine (loopback address or Unix socket) or the operator says `allow_plain = true`.

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

/// Connections the pool opens at most, by default.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// A statement running longer is cancelled by the server, by default.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a destination's owner may be silent before another node takes it, by default.
pub const DEFAULT_FAILOVER_AFTER: Duration = Duration::from_secs(10);

/// Reads a duration such as `30s` (the configuration's parser).
pub type DurationParser = fn(&str) -> Option<Duration>;

/// Which database holds the store.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// One SQLite file (`[store] path`): one daemon, the default.
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by one or more nodes.
    Postgres(Box<PostgresSettings>),
}

impl Backend {
    /// `sqlite` or `postgres`, as written in `[store] backend`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresTls {
    /// TLS through rustls, the server's certificate checked against `ca_file` (PEM) or the
    /// system's roots, and its name against the host (`sslmode = "verify-full"`).
    VerifyFull {
        /// CA certificates (PEM) to trust instead of the system's.
        ca_file: Option<PathBuf>,
    },
    /// No TLS (`sslmode = "disable"`): only to this machine, or with `allow_plain = true`.
    Disable,
}

/// A password read from the environment or a file: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password itself, for the connection only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first line of `path` (`password_file`, `ordobridge migrate --password-file`); the
    /// error says which file and what to do.
    pub fn from_file(path: &Path) -> Result<Password, String> {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim_end_matches(['\r', '\n']).is_empty() => {
                Ok(Password(text.trim_end_matches(['\r', '\n']).to_owned()))
            }
            Ok(_) => Err(format!(
                "`{}` is empty: write the password in it",
                path.display()
            )),
            Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
        }
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A checked `[store] backend = "postgres"`.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// The connection parameters from `url` (no password in it), before TLS and timeouts.
    pub config: tokio_postgres::Config,
    /// `postgres://user@host:port/db`: how errors and logs name the database.
    pub target: String,
    /// From `password` (`${VAR}`) or `password_file`; `None`: the server asks for none.
    pub password: Option<Password>,
    /// Connections the pool opens at most.
    pub pool_size: usize,
    /// Statements running longer are cancelled by the server.
    pub statement_timeout: Duration,
    /// TLS or plain.
    pub tls: PostgresTls,
}

impl PostgresSettings {
    /// Settings for `url` with the defaults (no password, TLS unless local): for tests and
    /// tools; the configuration goes through [`postgres`].
    pub fn from_url(url: &str) -> Result<PostgresSettings, String> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| format!("`{}` is not a PostgreSQL URL: {e}", redact(url)))?;
        if config.get_password().is_some() {
            return Err("holds a password: write it in `password = \"${VAR}\"` or `password_file`, never in the URL".to_string());
        }
        let target = target(&config);
        let tls = if is_local(&config) {
            PostgresTls::Disable
        } else {
            PostgresTls::VerifyFull { ca_file: None }
        };
        Ok(PostgresSettings {
            config,
            target,
            password: None,
            pool_size: DEFAULT_POOL_SIZE,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            tls,
        })
    }

    /// Whether every host of the URL is on this machine (loopback address, `localhost`, Unix
    /// socket): plain connections are allowed there.
    pub fn is_local(&self) -> bool {
        is_local(&self.config)
    }
}

/// `[cluster]`: this node's name and how fast another node takes over its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Shown by `/status` and the console, recorded as the owner of what this node delivers.
    pub node_name: String,
    /// A destination whose owner is silent this long is taken by another node.
    pub failover_after: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            node_name: hostname(),
            failover_after: DEFAULT_FAILOVER_AFTER,
        }
    }
}

/// The machine's name (`/proc/sys/kernel/hostname`), or `ordobridge` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "ordobridge".to_owned())
}

/// The PostgreSQL keys of `[store]`, as the configuration read them (`${VAR}` expanded).
#[derive(Debug, Default)]
pub struct RawPostgres {
    pub backend: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub pool_size: Option<Spanned<i64>>,
    pub statement_timeout: Option<Spanned<String>>,
    pub sslmode: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub allow_plain: Option<Spanned<bool>>,
}

/// `[cluster]` as the configuration read it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub node_name: Option<Spanned<String>>,
    pub failover_after: Option<Spanned<String>>,
}

/// A problem found in the settings: where (byte span in the file), which key, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub span: Option<Range<usize>>,
    pub key: &'static str,
    pub message: String,
}

impl Problem {
    fn at<T>(value: &Spanned<T>, key: &'static str, message: String) -> Problem {
        Problem {
            span: Some(value.span()),
            key,
            message,
        }
    }
}

/// Reads `[store] backend` and, for `postgres`, the connection keys; relative files resolve
/// against `base` (the configuration's folder). `path_given` says whether `[store] path` was
/// written: it is required for SQLite and meaningless for PostgreSQL.
///
/// Durations are read with `parse_duration` (the configuration's: `500ms`, `30s`, `2m`), so the
/// store does not import the configuration.
pub fn backend(
    raw: RawPostgres,
    base: &Path,
    path_given: bool,
    parse_duration: DurationParser,
) -> Result<Backend, Vec<Problem>> {
    let name = raw
        .backend
        .as_ref()
        .map_or("sqlite", |b| b.get_ref().as_str());
    let postgres_keys = [
        ("store.url", raw.url.as_ref().map(Spanned::span)),
        ("store.password", raw.password.as_ref().map(Spanned::span)),
        (
            "store.password_file",
            raw.password_file.as_ref().map(Spanned::span),
        ),
        ("store.pool_size", raw.pool_size.as_ref().map(Spanned::span)),
        (
            "store.statement_timeout",
            raw.statement_timeout.as_ref().map(Spanned::span),
        ),
        ("store.sslmode", raw.sslmode.as_ref().map(Spanned::span)),
        ("store.ca_file", raw.ca_file.as_ref().map(Spanned::span)),
        (
            "store.allow_plain",
            raw.allow_plain.as_ref().map(Spanned::span),
        ),
    ];
    match name {
        "sqlite" => {
            let mut problems: Vec<Problem> = postgres_keys
                .into_iter()
                .filter_map(|(key, span)| {
                    Some(Problem {
                        span: Some(span?),
                        key,
                        message:
                            "is a PostgreSQL setting: add `backend = \"postgres\"`, or remove it"
                                .to_string(),
                    })
                })
                .collect();
            if !path_given {
                problems.push(Problem {
                    span: None,
                    key: "store.path",
                    message: "missing: the SQLite store needs `path = \"var/ordobridge.db\"` (or set `backend = \"postgres\"` with a `url`)".to_string(),
                });
            }
            if problems.is_empty() {
                Ok(Backend::Sqlite)
            } else {
                Err(problems)
            }
        }
        "postgres" => postgres(raw, base, parse_duration).map(|s| Backend::Postgres(Box::new(s))),
        other => Err(vec![Problem {
            span: raw.backend.as_ref().map(Spanned::span),
            key: "store.backend",
            message: format!("unknown backend `{other}`: expected `sqlite` or `postgres`"),
        }]),
    }
}

/// The PostgreSQL settings of `[store]` (see the module docs).
pub fn postgres(
    raw: RawPostgres,
    base: &Path,
    parse_duration: DurationParser,
) -> Result<PostgresSettings, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(url) = raw.url.as_ref() else {
        return Err(vec![Problem {
            span: raw.backend.as_ref().map(Spanned::span),
            key: "store.url",
            message: "missing: `backend = \"postgres\"` needs `url = \"postgres://user@host:5432/database\"`".to_string(),
        }]);
    };
    let mut settings = match PostgresSettings::from_url(url.get_ref()) {
        Ok(settings) => settings,
        Err(message) => return Err(vec![Problem::at(url, "store.url", message)]),
    };
    if let Some(pool_size) = &raw.pool_size {
        match usize::try_from(*pool_size.get_ref()) {
            Ok(n) if (1..=1000).contains(&n) => settings.pool_size = n,
            _ => problems.push(Problem::at(
                pool_size,
                "store.pool_size",
                format!(
                    "expected a number from 1 to 1000, found {}",
                    pool_size.get_ref()
                ),
            )),
        }
    }
    if let Some(timeout) = &raw.statement_timeout {
        match parse_duration(timeout.get_ref()) {
            Some(d) if d >= Duration::from_millis(1) => settings.statement_timeout = d,
            _ => problems.push(Problem::at(
                timeout,
                "store.statement_timeout",
                format!(
                    "invalid duration `{}`: expected a number with a unit, such as `500ms`, `30s` or `2m`",
                    timeout.get_ref()
                ),
            )),
        }
    }
    match (&raw.password, &raw.password_file) {
        (Some(password), Some(_)) => problems.push(Problem::at(
            password,
            "store.password",
            "and `password_file` are both set: keep one".to_string(),
        )),
        (Some(password), None) if password.get_ref().is_empty() => problems.push(Problem::at(
            password,
            "store.password",
            "is empty: set it from the environment (`password = \"${ORDOBRIDGE_PG_PASSWORD}\"`) or use `password_file`".to_string(),
        )),
        (Some(password), None) => settings.password = Some(Password(password.get_ref().clone())),
        (None, Some(file)) => match Password::from_file(&resolve(base, file.get_ref())) {
            Ok(password) => settings.password = Some(password),
            Err(reason) => problems.push(Problem::at(file, "store.password_file", reason)),
        },
        (None, None) => {}
    }
    let allow_plain = raw.allow_plain.as_ref().is_some_and(|a| *a.get_ref());
    match raw.sslmode.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None => {}
        Some((_, "verify-full")) => settings.tls = PostgresTls::VerifyFull { ca_file: None },
        Some((mode, "disable")) => {
            if settings.is_local() || allow_plain {
                settings.tls = PostgresTls::Disable;
            } else {
                problems.push(Problem::at(
                    mode,
                    "store.sslmode",
                    format!(
                        "`disable` would send patient data in clear to `{}`, which is not on this machine: keep TLS (`verify-full`), or set `allow_plain = true` if the network is protected otherwise",
                        settings.target
                    ),
                ));
            }
        }
        Some((mode, other)) => problems.push(Problem::at(
            mode,
            "store.sslmode",
            format!("unknown mode `{other}`: expected `verify-full` or `disable`"),
        )),
    }
    if allow_plain && raw.sslmode.is_none() {
        settings.tls = PostgresTls::Disable;
    }
    if let Some(ca_file) = &raw.ca_file {
        let path = resolve(base, ca_file.get_ref());
        match &mut settings.tls {
            PostgresTls::VerifyFull { ca_file: slot } if path.is_file() => *slot = Some(path),
            PostgresTls::VerifyFull { .. } => problems.push(Problem::at(
                ca_file,
                "store.ca_file",
                format!("`{}` is not a file", path.display()),
            )),
            PostgresTls::Disable => problems.push(Problem::at(
                ca_file,
                "store.ca_file",
                "is set but the connection is plain (`sslmode = \"disable\"`, or a local server): set `sslmode = \"verify-full\"` to use it".to_string(),
            )),
        }
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems)
    }
}

/// `[cluster]` checked; absent: this machine's name, failover after 10 s.
pub fn cluster(
    raw: Option<RawCluster>,
    parse_duration: DurationParser,
) -> Result<ClusterSettings, Vec<Problem>> {
    let mut settings = ClusterSettings::default();
    let Some(raw) = raw else {
        return Ok(settings);
    };
    let mut problems = Vec::new();
    if let Some(name) = &raw.node_name {
        let text = name.get_ref().trim();
        if text.is_empty() || text.len() > 64 || text.chars().any(|c| c.is_control()) {
            problems.push(Problem::at(
                name,
                "cluster.node_name",
                "expected 1 to 64 printable characters, such as `ob-node-1`".to_string(),
            ));
        } else {
            text.clone_into(&mut settings.node_name);
        }
    }
    if let Some(after) = &raw.failover_after {
        match parse_duration(after.get_ref()) {
            Some(d) if d >= Duration::from_secs(1) => settings.failover_after = d,
            _ => problems.push(Problem::at(
                after,
                "cluster.failover_after",
                format!(
                    "invalid duration `{}`: expected at least `1s`, such as `10s` or `1m`",
                    after.get_ref()
                ),
            )),
        }
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems)
    }
}

fn resolve(base: &Path, value: &str) -> PathBuf {
    let path = PathBuf::from(value);
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

/// `postgres://user@host:port/db` of a parsed URL (no password: it is refused there).
fn target(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = config.get_ports().first().map_or(5432, |port| *port);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// Whether every host is loopback or a Unix socket (none given: libpq's default socket).
fn is_local(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

/// A URL as it may be shown: anything between `:` and `@` of the authority is masked.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// `3s`, `500ms`: enough of the configuration's parser for these tests.
    fn seconds(text: &str) -> Option<Duration> {
        if let Some(ms) = text.strip_suffix("ms") {
            return ms.parse().ok().map(Duration::from_millis);
        }
        text.strip_suffix('s')?
            .parse()
            .ok()
            .map(Duration::from_secs)
    }

    fn spanned<T>(value: T) -> Option<Spanned<T>> {
        Some(Spanned::new(0..1, value))
    }

    fn raw(url: &str) -> RawPostgres {
        RawPostgres {
            backend: spanned("postgres".to_owned()),
            url: spanned(url.to_owned()),
            ..RawPostgres::default()
        }
    }

    fn messages(result: Result<Backend, Vec<Problem>>) -> Vec<String> {
        result
            .unwrap_err()
            .into_iter()
            .map(|p| format!("`{}`: {}", p.key, p.message))
            .collect()
    }

    #[rstest]
    #[case::ok_loopback_plain(
        "postgres://ob@127.0.0.1:5433/ob",
        "postgres://ob@127.0.0.1:5433/ob",
        true
    )]
    #[case::ok_localhost_plain(
        "postgres://ob@localhost/ob",
        "postgres://ob@localhost:5432/ob",
        true
    )]
    #[case::ok_ipv6_loopback("postgres://ob@[::1]:5432/ob", "postgres://ob@::1:5432/ob", true)]
    #[case::ok_socket_plain(
        "host=/run/postgresql user=ob dbname=ob",
        "postgres://ob@/run/postgresql:5432/ob",
        true
    )]
    #[case::ok_remote_tls(
        "postgres://ob@db1.example.test:5432/ob",
        "postgres://ob@db1.example.test:5432/ob",
        false
    )]
    fn ok_url_target_and_default_tls(#[case] url: &str, #[case] shown: &str, #[case] local: bool) {
        let Backend::Postgres(settings) =
            backend(raw(url), Path::new("/etc"), false, seconds).unwrap()
        else {
            panic!("postgres expected");
        };
        assert_eq!(settings.target, shown);
        assert_eq!(settings.is_local(), local);
        let expected = if local {
            PostgresTls::Disable
        } else {
            PostgresTls::VerifyFull { ca_file: None }
        };
        assert_eq!(settings.tls, expected);
        assert_eq!(settings.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(settings.statement_timeout, DEFAULT_STATEMENT_TIMEOUT);
    }

    #[test]
    fn err_password_in_url_is_refused_without_showing_it() {
        let problems = messages(backend(
            raw("postgres://ob:hunter2@db1.example.test/ob"),
            Path::new("/etc"),
            false,
            seconds,
        ));
        assert_eq!(
            problems,
            [
                "`store.url`: holds a password: write it in `password = \"${VAR}\"` or `password_file`, never in the URL"
            ]
        );
    }

    #[test]
    fn ok_redact_masks_the_password() {
        assert_eq!(
            redact("postgres://ob:hunter2@db1/ob"),
            "postgres://ob:***@db1/ob"
        );
        assert_eq!(redact("postgres://ob@db1/ob"), "postgres://ob@db1/ob");
    }

    #[test]
    fn err_plain_to_a_remote_host_fails_closed() {
        let mut settings = raw("postgres://ob@db1.example.test/ob");
        settings.sslmode = spanned("disable".to_owned());
        assert_eq!(
            messages(backend(settings, Path::new("/etc"), false, seconds)),
            [
                "`store.sslmode`: `disable` would send patient data in clear to `postgres://ob@db1.example.test:5432/ob`, which is not on this machine: keep TLS (`verify-full`), or set `allow_plain = true` if the network is protected otherwise"
            ]
        );
        let mut allowed = raw("postgres://ob@db1.example.test/ob");
        allowed.sslmode = spanned("disable".to_owned());
        allowed.allow_plain = spanned(true);
        let Backend::Postgres(settings) =
            backend(allowed, Path::new("/etc"), false, seconds).unwrap()
        else {
            panic!("postgres expected");
        };
        assert_eq!(settings.tls, PostgresTls::Disable);
    }

    #[rstest]
    #[case::err_unknown_backend(
        RawPostgres { backend: spanned("mysql".to_owned()), ..RawPostgres::default() },
        "`store.backend`: unknown backend `mysql`: expected `sqlite` or `postgres`"
    )]
    #[case::err_missing_url(
        RawPostgres { backend: spanned("postgres".to_owned()), ..RawPostgres::default() },
        "`store.url`: missing: `backend = \"postgres\"` needs `url = \"postgres://user@host:5432/database\"`"
    )]
    #[case::err_postgres_key_on_sqlite(
        RawPostgres { pool_size: spanned(4), ..RawPostgres::default() },
        "`store.pool_size`: is a PostgreSQL setting: add `backend = \"postgres\"`, or remove it"
    )]
    #[case::err_pool_size(
        RawPostgres { pool_size: spanned(0), ..raw("postgres://ob@127.0.0.1/ob") },
        "`store.pool_size`: expected a number from 1 to 1000, found 0"
    )]
    #[case::err_statement_timeout(
        RawPostgres { statement_timeout: spanned("soon".to_owned()), ..raw("postgres://ob@127.0.0.1/ob") },
        "`store.statement_timeout`: invalid duration `soon`: expected a number with a unit, such as `500ms`, `30s` or `2m`"
    )]
    #[case::err_both_passwords(
        RawPostgres { password: spanned("x".to_owned()), password_file: spanned("pw".to_owned()), ..raw("postgres://ob@127.0.0.1/ob") },
        "`store.password`: and `password_file` are both set: keep one"
    )]
    #[case::err_sslmode(
        RawPostgres { sslmode: spanned("prefer".to_owned()), ..raw("postgres://ob@127.0.0.1/ob") },
        "`store.sslmode`: unknown mode `prefer`: expected `verify-full` or `disable`"
    )]
    #[case::err_missing_password_file(
        RawPostgres { password_file: spanned("none/pw".to_owned()), ..raw("postgres://ob@127.0.0.1/ob") },
        "`store.password_file`: cannot read `/nonexistent-ob/none/pw`: No such file or directory (os error 2)"
    )]
    fn err_backend_settings(#[case] settings: RawPostgres, #[case] expected: &str) {
        assert_eq!(
            messages(backend(
                settings,
                Path::new("/nonexistent-ob"),
                true,
                seconds
            )),
            [expected]
        );
    }

    #[test]
    fn ok_password_file_and_debug_hides_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret-value\n").unwrap();
        let mut settings = raw("postgres://ob@127.0.0.1/ob");
        settings.password_file = spanned("pw".to_owned());
        let Backend::Postgres(settings) = backend(settings, dir.path(), false, seconds).unwrap()
        else {
            panic!("postgres expected");
        };
        assert_eq!(
            settings.password.as_ref().map(Password::expose),
            Some("s3cret-value")
        );
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn ok_sqlite_is_the_default() {
        assert!(matches!(
            backend(RawPostgres::default(), Path::new("/etc"), true, seconds),
            Ok(Backend::Sqlite)
        ));
        assert_eq!(
            messages(backend(
                RawPostgres::default(),
                Path::new("/etc"),
                false,
                seconds
            )),
            [
                "`store.path`: missing: the SQLite store needs `path = \"var/ordobridge.db\"` (or set `backend = \"postgres\"` with a `url`)"
            ]
        );
    }

    #[rstest]
    #[case::ok_defaults(None, None, 10)]
    #[case::ok_given(Some("ob-2"), Some("3s"), 3)]
    fn ok_cluster(#[case] name: Option<&str>, #[case] after: Option<&str>, #[case] secs: u64) {
        let raw = RawCluster {
            node_name: name.and_then(|n| spanned(n.to_owned())),
            failover_after: after.and_then(|a| spanned(a.to_owned())),
        };
        let settings = cluster(Some(raw), seconds).unwrap();
        assert_eq!(settings.failover_after, Duration::from_secs(secs));
        assert_eq!(
            settings.node_name,
            name.map_or_else(hostname, str::to_owned)
        );
    }

    #[rstest]
    #[case::err_empty_name(
        Some(" "),
        None,
        "`cluster.node_name`: expected 1 to 64 printable characters, such as `ob-node-1`"
    )]
    #[case::err_short_failover(
        None,
        Some("500ms"),
        "`cluster.failover_after`: invalid duration `500ms`: expected at least `1s`, such as `10s` or `1m`"
    )]
    fn err_cluster(
        #[case] name: Option<&str>,
        #[case] after: Option<&str>,
        #[case] expected: &str,
    ) {
        let raw = RawCluster {
            node_name: name.and_then(|n| spanned(n.to_owned())),
            failover_after: after.and_then(|a| spanned(a.to_owned())),
        };
        let problems: Vec<String> = cluster(Some(raw), seconds)
            .unwrap_err()
            .into_iter()
            .map(|p| format!("`{}`: {}", p.key, p.message))
            .collect();
        assert_eq!(problems, [expected]);
    }
}
