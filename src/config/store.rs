//! `[store]`: the database and the retention of what it keeps (with the channels', `[push]`'s
//! and `[census]`'s `retention`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::RawStore;
use super::units::{duration_value, parse_duration, positive};
use super::{Report, resolve_path};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `[store] backend`: SQLite (the default, at `path`) or PostgreSQL.
    pub backend: crate::store::settings::Backend,
    /// The SQLite database file (absolute); empty on PostgreSQL.
    pub path: PathBuf,
    /// How many messages may wait for the writer before intake waits (backpressure).
    pub queue_capacity: usize,
    /// The most messages committed in one transaction.
    pub max_batch: usize,
    /// `[store] intake_log`: MLLP messages made durable in an append-only log and copied into
    /// the journal behind their ACK (SQLite only).
    pub intake_log: bool,
    /// What the background pruner deletes, and how often.
    pub retention: RetentionConfig,
}

/// `[store] retention`, `rejected_retention`, `prune_interval`, `prune_batch`, with the
/// channels' `retention` (`[inbound.NAME]`, `[push]`) and `[census] retention`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Journal rows (and finished outbound messages, released holds) older than this go;
    /// `None`: kept forever.
    pub retention: Option<Duration>,
    /// Rejected journal rows older than this go (junk cannot fill the disk).
    pub rejected_retention: Option<Duration>,
    /// Journal channels with a retention of their own, in place of `retention` (`None`:
    /// forever); a channel's rejected rows go at the shorter of it and `rejected_retention`.
    pub channels: BTreeMap<String, Option<Duration>>,
    /// Encounters discharged longer ago than this go, then patients left without encounters
    /// and not named since; `None`: the census is kept forever.
    pub census: Option<Duration>,
    /// Time between two prunes.
    pub interval: Duration,
    /// Rows of each kind deleted per transaction.
    pub batch: usize,
    /// `[documents] tracking_retention`: document tracking rows older than this go; `None`:
    /// kept (no `[documents]`, or `forever`).
    pub document_tracking: Option<Duration>,
    /// Every journal channel configured (inbound channels, the push's, the documents'):
    /// a channel with a retention of its own that leaves the configuration keeps it (the
    /// store records it at each prune).
    pub configured_channels: Vec<String>,
}

impl RetentionConfig {
    /// 90 days of journal, 30 days of rejected frames, two years of census, a prune every
    /// hour by 500 rows.
    pub const DEFAULT: RetentionConfig = RetentionConfig {
        retention: Some(Duration::from_secs(90 * 86_400)),
        rejected_retention: Some(Duration::from_secs(30 * 86_400)),
        channels: BTreeMap::new(),
        census: Some(Duration::from_secs(2 * 365 * 86_400)),
        interval: Duration::from_secs(3600),
        batch: 500,
        document_tracking: None,
        configured_channels: Vec::new(),
    };

    /// The cutoffs at `now` (the census's in the machine's time zone, the one ADT times are
    /// written in); `None` when nothing is ever pruned.
    pub fn plan(&self, now: jiff::Timestamp) -> Option<crate::store::RetentionPlan> {
        if self.retention.is_none()
            && self.rejected_retention.is_none()
            && self.census.is_none()
            && self.channels.values().all(Option::is_none)
            && self.document_tracking.is_none()
        {
            return None;
        }
        let mut plan =
            crate::store::RetentionPlan::keeping(now, self.retention, self.rejected_retention)
                .with_census(self.census, &jiff::tz::TimeZone::system())
                .with_document_tracking(self.document_tracking)
                .with_configured_channels(self.configured_channels.clone());
        for (channel, retention) in &self.channels {
            plan = plan.with_channel(channel, *retention);
        }
        Some(plan)
    }
}

// The configuration's defaults are the library's, one place each, but for `intake_log`.
const DEFAULT_QUEUE_CAPACITY: usize = crate::store::StoreOptions::DEFAULT.queue_capacity;
const DEFAULT_MAX_BATCH: usize = crate::store::StoreOptions::DEFAULT.max_batch;
/// The daemon's default, on SQLite; not the library's ([`crate::store::StoreOptions`]), which
/// every command opening the store beside the daemon uses: only the daemon owns the log.
const DEFAULT_INTAKE_LOG: bool = true;

/// `[store] intake_log`, on by default on SQLite; refused on PostgreSQL, where every node must
/// see a message in the shared database before it is acknowledged (a log on one node's disk
/// would hide it).
fn intake_log(store: &RawStore, report: &mut Report<'_>) -> bool {
    let postgres = store
        .backend
        .as_ref()
        .is_some_and(|backend| backend.get_ref() == "postgres");
    let Some(setting) = &store.intake_log else {
        return DEFAULT_INTAKE_LOG && !postgres;
    };
    let on = *setting.get_ref();
    if on && postgres {
        report.push(
            Some(setting.span()),
            "store.intake_log",
            "the intake log is for the SQLite store: on PostgreSQL a message must be in the shared database before its ACK, so that every node sees it; remove `intake_log` or set it to false".to_string(),
        );
        return false;
    }
    on
}

/// `[store]`: the database, the writer's queue and batch, the retention keys; the section is
/// required.
pub(super) fn validate_store(
    raw: Option<RawStore>,
    base: &Path,
    report: &mut Report<'_>,
) -> StoreConfig {
    match raw {
        Some(mut store) => StoreConfig {
            retention: retention(&store, report),
            // Before `store_backend` takes the backend key.
            intake_log: intake_log(&store, report),
            backend: store_backend(&mut store, base, report),
            path: store
                .path
                .as_ref()
                .map(|path| resolve_path(base, path.get_ref()))
                .unwrap_or_default(),
            queue_capacity: positive(store.queue_capacity, "store.queue_capacity", report)
                .unwrap_or(DEFAULT_QUEUE_CAPACITY),
            max_batch: positive(store.max_batch, "store.max_batch", report)
                .unwrap_or(DEFAULT_MAX_BATCH),
        },
        None => {
            report.push(
                None,
                "store",
                "missing section: add `[store]` with `path = \"var/ordobridge.db\"`".to_string(),
            );
            StoreConfig {
                backend: crate::store::settings::Backend::Sqlite,
                path: PathBuf::new(),
                queue_capacity: DEFAULT_QUEUE_CAPACITY,
                max_batch: DEFAULT_MAX_BATCH,
                intake_log: DEFAULT_INTAKE_LOG,
                retention: RetentionConfig::DEFAULT,
            }
        }
    }
}

/// `[store] backend` and its PostgreSQL keys, checked by `store::settings` (issue 14: kept in
/// one block, the parsing lives beside the store).
fn store_backend(
    store: &mut RawStore,
    base: &Path,
    report: &mut Report<'_>,
) -> crate::store::settings::Backend {
    let raw = crate::store::settings::RawPostgres {
        backend: store.backend.take(),
        url: store.url.take(),
        password: store.password.take(),
        password_file: store.password_file.take(),
        pool_size: store.pool_size.take(),
        statement_timeout: store.statement_timeout.take(),
        sslmode: store.sslmode.take(),
        ca_file: store.ca_file.take(),
        allow_plain: store.allow_plain.take(),
    };
    let path_given = store.path.is_some();
    match crate::store::settings::backend(raw, base, path_given, parse_duration) {
        Ok(backend) => {
            if let (crate::store::settings::Backend::Postgres(_), Some(path)) =
                (&backend, &store.path)
            {
                report.push(
                    Some(path.span()),
                    "store.path",
                    "is the SQLite file: the PostgreSQL store has none, remove it".to_string(),
                );
            }
            backend
        }
        Err(problems) => {
            for problem in problems {
                report.push(problem.span, problem.key, problem.message);
            }
            crate::store::settings::Backend::Sqlite
        }
    }
}

/// What a retention keeps, for its error messages.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kept {
    Journal,
    Census,
}

/// A retention key: a duration of at least a day (`90d`, `12w`, `2y`), or `"forever"` to keep
/// without end (`Some(None)`). `"never"` and `"0"` are refused as ambiguous (keep nothing, or
/// never delete?). `None` when the value is wrong (reported).
pub(super) fn retention_value(
    value: &Spanned<String>,
    key: &str,
    kept: Kept,
    report: &mut Report<'_>,
) -> Option<Option<Duration>> {
    let text = value.get_ref().trim();
    if text == "forever" {
        return Some(None);
    }
    let problem = match parse_duration(text) {
        _ if text == "never" || text.trim_start_matches('0').is_empty() => format!(
            "`{text}` is ambiguous: write `forever` to keep rows without end, or a retention such as `90d`"
        ),
        Some(d) if d >= Duration::from_secs(86_400) => return Some(Some(d)),
        Some(_) => format!(
            "`{text}` would delete {}: keep at least `1d` (or `forever`)",
            match kept {
                Kept::Journal => "the journal of the current day",
                Kept::Census => "encounters discharged today",
            }
        ),
        None => format!(
            "invalid retention `{text}`: expected a number with a unit, such as `30d`, `12w` or `2y` (365 days), or `forever`"
        ),
    };
    report.push(Some(value.span()), key, problem);
    None
}

/// `[store]` retention keys: durations, or `"forever"` to keep rows without end.
pub(super) fn retention(store: &RawStore, report: &mut Report<'_>) -> RetentionConfig {
    let mut config = RetentionConfig::DEFAULT;
    for (value, key, target) in [
        (&store.retention, "store.retention", &mut config.retention),
        (
            &store.rejected_retention,
            "store.rejected_retention",
            &mut config.rejected_retention,
        ),
    ] {
        if let Some(age) = value
            .as_ref()
            .and_then(|value| retention_value(value, key, Kept::Journal, report))
        {
            *target = age;
        }
    }
    if let Some(interval) = store
        .prune_interval
        .clone()
        .and_then(|v| duration_value(v, "store.prune_interval", report))
    {
        config.interval = interval.max(Duration::from_secs(1));
    }
    if let Some(batch) = positive(store.prune_batch.clone(), "store.prune_batch", report) {
        config.batch = batch;
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PUSH_CHANNEL;
    use crate::config::test_support::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_defaults("", Some(90), Some(30))]
    #[case::ok_days(
        "retention = \"365d\"\nrejected_retention = \"7d\"",
        Some(365),
        Some(7)
    )]
    #[case::ok_forever("retention = \"forever\"", None, Some(30))]
    fn ok_retention(
        #[case] lines: &str,
        #[case] days: Option<u64>,
        #[case] rejected_days: Option<u64>,
    ) {
        let config = load(&format!("[store]\npath = \"ob.db\"\n{lines}\n"), &[]).unwrap();
        let retention = config.store.retention;
        assert_eq!(retention.retention.map(|d| d.as_secs() / 86_400), days);
        assert_eq!(
            retention.rejected_retention.map(|d| d.as_secs() / 86_400),
            rejected_days
        );
    }

    #[rstest]
    #[case::err_under_a_day(
        "retention = \"12h\"",
        "/etc/ordobridge/ob.toml:3:13: `store.retention`: `12h` would delete the journal of the current day: keep at least `1d` (or `forever`)"
    )]
    #[case::err_not_a_duration(
        "rejected_retention = \"a month\"",
        "/etc/ordobridge/ob.toml:3:22: `store.rejected_retention`: invalid retention `a month`: expected a number with a unit, such as `30d`, `12w` or `2y` (365 days), or `forever`"
    )]
    fn err_retention(#[case] lines: &str, #[case] expected: &str) {
        assert_eq!(
            errors(&format!("[store]\npath = \"ob.db\"\n{lines}\n")),
            vec![expected]
        );
    }

    #[rstest]
    #[case::ok_default_on_sqlite("path = \"ob.db\"", true)]
    #[case::ok_on("path = \"ob.db\"\nintake_log = true", true)]
    #[case::ok_off("path = \"ob.db\"\nintake_log = false", false)]
    #[case::ok_default_off_on_postgresql(
        "backend = \"postgres\"\nurl = \"postgres://ob@db.example/ob\"\nallow_plain = true",
        false
    )]
    #[case::ok_off_on_postgresql(
        "backend = \"postgres\"\nurl = \"postgres://ob@db.example/ob\"\nallow_plain = true\nintake_log = false",
        false
    )]
    fn ok_intake_log(#[case] lines: &str, #[case] expected: bool) {
        let config = load(&format!("[store]\n{lines}\n"), &[]).unwrap();
        assert_eq!(config.store.intake_log, expected);
    }

    #[test]
    fn err_intake_log_on_postgresql() {
        let text = "[store]\nbackend = \"postgres\"\nurl = \"postgres://ob@db.example/ob\"\nallow_plain = true\nintake_log = true\n";
        assert_eq!(
            errors(text),
            vec![
                "/etc/ordobridge/ob.toml:5:14: `store.intake_log`: the intake log is for the SQLite store: on PostgreSQL a message must be in the shared database before its ACK, so that every node sees it; remove `intake_log` or set it to false"
            ]
        );
    }

    #[test]
    fn ok_channel_push_and_census_retention() {
        let config = load(
            "[store]\npath = \"ob.db\"\n\
             [inbound.lab]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\nretention = \"7d\"\n\
             [inbound.adt]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\nretention = \"forever\"\n\
             [inbound.other]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\n\
             [push]\nallow_unauthenticated = true\nretention = \"52w\"\n\
             [census]\nretention = \"10y\"\n",
            &[],
        )
        .unwrap();
        let retention = &config.store.retention;
        let days: Vec<(&str, Option<u64>)> = retention
            .channels
            .iter()
            .map(|(name, age)| (name.as_str(), age.map(|d| d.as_secs() / 86_400)))
            .collect();
        assert_eq!(
            days,
            [("adt", None), ("lab", Some(7)), (PUSH_CHANNEL, Some(364))]
        );
        assert_eq!(retention.census, Some(Duration::from_secs(3650 * 86_400)));
        // Every journal channel, with or without a retention of its own: one that leaves
        // the configuration keeps the retention the store recorded for it.
        assert_eq!(
            retention.configured_channels,
            ["adt", "lab", "other", PUSH_CHANNEL]
        );
        let plan = retention.plan(jiff::Timestamp::now()).unwrap();
        assert_eq!(plan.channels.len(), 3);
        assert!(plan.census.is_some());
    }

    #[test]
    fn ok_census_retention_default_and_forever() {
        let config = load("[store]\npath = \"ob.db\"\n", &[]).unwrap();
        assert_eq!(
            config.store.retention.census,
            Some(Duration::from_secs(730 * 86_400)),
            "two years"
        );
        let config = load(
            "[store]\npath = \"ob.db\"\nretention = \"forever\"\nrejected_retention = \"forever\"\n\
             [census]\nretention = \"forever\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.store.retention.census, None);
        assert_eq!(config.store.retention.plan(jiff::Timestamp::now()), None);
    }

    #[rstest]
    #[case::err_channel_never(
        "[inbound.lab]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\nretention = \"never\"",
        "/etc/ordobridge/ob.toml:6:13: `inbound.lab.retention`: `never` is ambiguous: write `forever` to keep rows without end, or a retention such as `90d`"
    )]
    #[case::err_channel_syntax(
        "[inbound.lab]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"\nretention = \"7 days\"",
        "/etc/ordobridge/ob.toml:6:13: `inbound.lab.retention`: invalid retention `7 days`: expected a number with a unit, such as `30d`, `12w` or `2y` (365 days), or `forever`"
    )]
    #[case::err_census_zero(
        "[census]\nretention = \"0\"",
        "/etc/ordobridge/ob.toml:4:13: `census.retention`: `0` is ambiguous: write `forever` to keep rows without end, or a retention such as `90d`"
    )]
    #[case::err_census_under_a_day(
        "[census]\nretention = \"6h\"",
        "/etc/ordobridge/ob.toml:4:13: `census.retention`: `6h` would delete encounters discharged today: keep at least `1d` (or `forever`)"
    )]
    #[case::err_push_channel_name(
        "[inbound.posos-push]\nprotocol = \"mllp\"\nbind = \"127.0.0.1:0\"",
        "/etc/ordobridge/ob.toml:4:12: `inbound.posos-push`: `posos-push` is the journal channel of pushed bundles: give this channel another name"
    )]
    fn err_channel_and_census_retention(#[case] lines: &str, #[case] expected: &str) {
        assert_eq!(
            errors(&format!("[store]\npath = \"ob.db\"\n{lines}\n")),
            vec![expected]
        );
    }

    #[test]
    fn err_push_retention_names_the_key() {
        let all = errors(
            "[store]\npath = \"ob.db\"\n[push]\nallow_unauthenticated = true\nretention = \"1h\"\n",
        );
        assert!(
            all.contains(&"/etc/ordobridge/ob.toml:5:13: `push.retention`: `1h` would delete the journal of the current day: keep at least `1d` (or `forever`)".to_owned()),
            "{all:?}"
        );
    }
}
