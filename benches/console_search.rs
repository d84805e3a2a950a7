//! The console's message browser over a large journal: how long one page (51 rows, as
//! `/console/messages` asks) takes for each kind of search, on 1,000,000 journal rows.
//!
//!     cargo bench --bench console_search [-- ROWS]
//!
//! The journal is written once with SQLite directly (synthetic HL7: 70 % `adt-in`, 20 %
//! `lab-in`, 9 % `orders-in`, 1 % `files-in`; ADT^A01/A08/A03, ORU^R01, ORM^O01; 30 days) into
//! `target/bench-data/console-ROWS.db` and reused by later runs. Each search then runs through
//! `Store::search_journal` (what the console calls) 20 times: median and worst are printed.

use std::time::{Duration, Instant};

use ordobridge::store::{EntryStatus, JournalFilter, JournalSearch, Store, StoreOptions};

const PAGE: usize = 51;
const RUNS: usize = 20;
const DAY_MICROS: i64 = 86_400_000_000;
/// 2026-11-01T00:00:00Z.
const START_MICROS: i64 = 1_793_491_200_000_000;

fn channel(n: u64) -> &'static str {
    match n % 100 {
        0..70 => "adt-in",
        70..90 => "lab-in",
        90..99 => "orders-in",
        _ => "files-in",
    }
}

fn message_type(n: u64) -> &'static str {
    match channel(n) {
        "adt-in" => ["ADT^A01^ADT_A01", "ADT^A08^ADT_A01", "ADT^A03^ADT_A03"][(n % 3) as usize],
        "lab-in" => "ORU^R01^ORU_R01",
        _ => "ORM^O01^ORM_O01",
    }
}

fn raw(n: u64, message_type: &str) -> String {
    format!(
        "MSH|^~\\&|DPI|CH|OB|POSOS|20261101||{message_type}|C{n:08}|P|2.5\rPID|1||{ipp}^^^CH^PI||NOM{f}^PRENOM{g}||19{y:02}0101|F\rPV1|1|I|U{u}||||||||||||||||{nda}^^^CH^VN\r",
        ipp = 100_000 + n % 250_000,
        nda = 900_000 + n % 400_000,
        f = n % 997,
        g = n % 89,
        y = 30 + n % 60,
        u = n % 40,
    )
}

/// Creates the store (migrated by `Store::open`) and fills its journal with `rows` rows.
fn fill(path: &std::path::Path, rows: u64) {
    let store = Store::open(path, StoreOptions::default()).expect("open the store");
    drop(store);
    let mut connection = rusqlite::Connection::open(path).expect("open");
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .expect("pragmas");
    let transaction = connection.transaction().expect("transaction");
    {
        let mut insert = transaction
            .prepare(
                "INSERT INTO journal (channel, received_at, peer, sender, message_type, control_id,
                    content_hash, raw, status, reason, duplicate_count, last_seen_at, kept)
                 VALUES (?1, ?2, '10.0.0.1:40000', 'DPI^CH', ?3, ?4, ?5, ?6, ?7, NULL, 0, ?2, ?8)",
            )
            .expect("prepare");
        let span = 30 * DAY_MICROS;
        for n in 0..rows {
            let at = START_MICROS
                + i64::try_from(n).unwrap_or(0) * (span / i64::try_from(rows).unwrap_or(1));
            let kind = message_type(n);
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&n.to_le_bytes());
            let status = if n % 50 == 0 { "rejected" } else { "processed" };
            insert
                .execute(rusqlite::params![
                    channel(n),
                    at,
                    kind,
                    format!("C{n:08}"),
                    &hash[..],
                    raw(n, kind).as_bytes(),
                    status,
                    status != "rejected",
                ])
                .expect("insert");
        }
    }
    transaction.commit().expect("commit");
}

fn at(day: i64, hour: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(START_MICROS + day * DAY_MICROS + hour * 3_600_000_000)
        .expect("time")
}

fn main() {
    let rows: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench-data folder");
    let path = dir.join(format!("console-{rows}.db"));
    let ready = dir.join(format!("console-{rows}.ready"));
    if !ready.exists() {
        let _ = std::fs::remove_file(&path);
        let started = Instant::now();
        fill(&path, rows);
        std::fs::write(&ready, b"").expect("ready marker");
        eprintln!(
            "filled {rows} journal rows in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let store = Store::open(&path, StoreOptions::default()).expect("open the store");
    let last = i64::try_from(rows).unwrap_or(i64::MAX);
    let page = |filter: JournalFilter| JournalFilter {
        limit: PAGE,
        ..filter
    };
    let searches: Vec<(&str, JournalSearch)> = vec![
        (
            "newest page, no filter",
            JournalSearch {
                filter: page(JournalFilter::default()),
                ..Default::default()
            },
        ),
        (
            "channel lab-in (20 %)",
            JournalSearch {
                filter: page(JournalFilter {
                    channel: Some("lab-in".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "channel files-in (1 %)",
            JournalSearch {
                filter: page(JournalFilter {
                    channel: Some("files-in".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "MSH-10 exact",
            JournalSearch {
                filter: page(JournalFilter {
                    control_id: Some("C00500000".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "MSH-9 ORU",
            JournalSearch {
                filter: page(JournalFilter::default()),
                message_type: Some("ORU".into()),
                ..Default::default()
            },
        ),
        (
            "status rejected (2 %)",
            JournalSearch {
                filter: page(JournalFilter::default()),
                status: Some(EntryStatus::Rejected),
                ..Default::default()
            },
        ),
        (
            "one hour, channel adt-in",
            JournalSearch {
                filter: page(JournalFilter {
                    channel: Some("adt-in".into()),
                    ..Default::default()
                }),
                since: Some(at(10, 8)),
                until: Some(at(10, 9)),
                ..Default::default()
            },
        ),
        (
            "page 2 (cursor)",
            JournalSearch {
                filter: page(JournalFilter::default()),
                after: Some((at(20, 0), last / 2)),
                ..Default::default()
            },
        ),
        (
            "IPP, newest 200,000 rows",
            JournalSearch {
                filter: page(JournalFilter::default()),
                ipp: Some("100042".into()),
                min_id: Some(last - 200_000),
                ..Default::default()
            },
        ),
        (
            "IPP, one day",
            JournalSearch {
                filter: page(JournalFilter::default()),
                ipp: Some("100042".into()),
                since: Some(at(10, 0)),
                until: Some(at(11, 0)),
                ..Default::default()
            },
        ),
        (
            "IPP, whole journal",
            JournalSearch {
                filter: page(JournalFilter::default()),
                ipp: Some("100042".into()),
                ..Default::default()
            },
        ),
        (
            "text, newest 200,000 rows",
            JournalSearch {
                filter: page(JournalFilter::default()),
                text: Some("NOM996^PRENOM88".into()),
                min_id: Some(last - 200_000),
                ..Default::default()
            },
        ),
        (
            "MSH-9 absent (by its index)",
            JournalSearch {
                filter: page(JournalFilter::default()),
                message_type: Some("SIU".into()),
                ..Default::default()
            },
        ),
    ];
    println!("{rows} journal rows, {RUNS} runs each, one page of {PAGE} rows");
    println!(
        "{:<30} {:>8} {:>10} {:>10}",
        "search", "rows", "median ms", "worst ms"
    );
    for (name, search) in searches {
        let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
        let mut found = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            found = store.search_journal(&search).expect("search").len();
            times.push(started.elapsed());
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:<30} {found:>8} {:>10.1} {:>10.1}",
            ms(times[RUNS / 2]),
            ms(times[RUNS - 1])
        );
    }
}
