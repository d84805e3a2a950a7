//! Issue 10, operator CLI for scripts: the `ordobridge` binary run as a script would run it,
//! on a store filled through the Store API or by the in-process engine over real sockets.
//! `journal` filters and `--json`, the census-unusable note, `census --json`, `queue --json`,
//! `status` and its exit codes against a real daemon, and a quiet exit on a closed stdout.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use ordobridge::store::{InboundRecord, RecordStatus, Store, StoreOptions};
use serde_json::{Value, json};

/// What a run of the binary gave.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `ordobridge ARGS` in the UTC time zone (dates in `--since` are local midnights).
fn run(args: &[&str]) -> Run {
    run_as(Command::new(common::ordobridge_bin()), args)
}

/// Runs `COMMAND ARGS` (the binary, or a wrapper and the binary) as [`run`] does.
fn run_as(mut command: Command, args: &[&str]) -> Run {
    let output = command
        .args(args)
        .env("TZ", "UTC")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run ordobridge");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs the binary on the blocking pool (for tests that also drive the engine).
async fn run_async(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    })
    .await
    .expect("cli task")
}

fn json_of(run: &Run) -> Value {
    assert_eq!(run.code, Some(0), "{run:?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

fn ids(document: &Value) -> Vec<i64> {
    document["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row["id"].as_i64().expect("id"))
        .collect()
}

fn record(at: &str, message_type: &str, raw: &str, status: RecordStatus) -> InboundRecord {
    InboundRecord {
        channel: "adt-in".to_owned(),
        received_at: at.parse().expect("time"),
        peer: "127.0.0.1:40000".to_owned(),
        sender: "DPI^CH".to_owned(),
        message_type: message_type.to_owned(),
        control_id: format!("C-{at}"),
        raw: raw.as_bytes().to_vec().into(),
        status,
    }
}

/// Three rows on three days: an accepted ADT^A01 for IPP 4711, a processed ORU^R01 for the
/// same IPP, a rejected ADT^A08 mentioning 4711 only as a visit number.
async fn filled_store(dir: &Path) -> std::path::PathBuf {
    let config = common::config(dir, &common::base_toml());
    let store = Store::open(&config.store.path, StoreOptions::default()).expect("store");
    let rows = vec![
        record(
            "2026-11-20T10:00:00Z",
            "ADT^A01^ADT_A01",
            "MSH|^~\\&|DPI|CH|||20261120||ADT^A01^ADT_A01|1|P|2.5\rPID|1||4711^^^CH_EXEMPLE^PI\r",
            RecordStatus::Accepted,
        ),
        record(
            "2026-11-21T10:00:00Z",
            "ORU^R01",
            "MSH|^~\\&|LAB|CH|||20261121||ORU^R01|2|P|2.5\rPID|1||4711^^^CH_EXEMPLE^PI\r",
            RecordStatus::Accepted,
        ),
        record(
            "2026-11-22T10:00:00Z",
            "ADT^A08",
            "MSH|^~\\&|DPI|CH|||20261122||ADT^A08|3|P|2.5\rPID|1||5555^^^CH_EXEMPLE^PI\rPV1|1|I|||||||||||||||||4711\r",
            RecordStatus::Rejected {
                reason: "MSH-12: version 2.9 not supported".to_owned(),
            },
        ),
    ];
    let ids: Vec<i64> = store
        .journal_many(rows)
        .await
        .expect("journal")
        .iter()
        .map(|o| o.id())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    store.mark_processed(vec![2]).await.expect("processed");
    store.close().await;
    dir.join("ob.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_json_has_a_stable_shape_and_filters_apply() {
    let dir = tempfile::tempdir().expect("dir");
    let config = filled_store(dir.path()).await;
    let config = config.to_str().expect("utf-8 path");
    let journal = |extra: &[&str]| {
        let mut args = vec!["journal", "--config", config, "--json"];
        args.extend_from_slice(extra);
        run(&args)
    };

    let all = json_of(&journal(&[]));
    assert_eq!(all["count"], 3);
    assert_eq!(ids(&all), [3, 2, 1]);
    assert_eq!(
        all["rows"][0],
        json!({
            "id": 3,
            "received_at": "2026-11-22T10:00:00Z",
            "channel": "adt-in",
            "message_type": "ADT^A08",
            "control_id": "C-2026-11-22T10:00:00Z",
            "status": "rejected",
            "reason": "MSH-12: version 2.9 not supported",
            "note": null,
            "peer": "127.0.0.1:40000",
            "sender": "DPI^CH",
        })
    );
    // No patient identifier in the listing.
    assert!(!journal(&[]).stdout.contains("4711"));

    let cases: [(&[&str], &[i64]); 10] = [
        (&["--since", "2026-11-21T00:00:00Z"], &[3, 2]),
        (&["--since", "2026-11-21T11:00:00+01:00"], &[3, 2]),
        (&["--until", "2026-11-21"], &[1]),
        (&["--since", "2026-11-21", "--until", "2026-11-22"], &[2]),
        (&["--since", "2h"], &[]),
        (&["--type", "ADT"], &[3, 1]),
        (&["--type", "ADT^A01", "--status", "accepted"], &[1]),
        (&["--status", "processed"], &[2]),
        (&["--ipp", "4711", "--show-phi"], &[2, 1]),
        (&["--ipp", "4711", "--show-phi", "--limit", "1"], &[2]),
    ];
    for (filters, expected) in cases {
        assert_eq!(ids(&json_of(&journal(filters))), expected, "{filters:?}");
    }

    // The text listing applies the same filters.
    let text = run(&["journal", "--config", config, "--type", "ORU"]);
    assert_eq!(text.code, Some(0), "{text:?}");
    assert_eq!(text.stdout.lines().count(), 2, "{}", text.stdout);
    assert!(text.stdout.contains("ORU^R01"), "{}", text.stdout);
    assert!(!text.stdout.contains("\u{1b}["), "no ANSI");

    let show = json_of(&journal(&["--show", "1"]));
    assert_eq!(show["id"], 1);
    assert_eq!(show["duplicate_count"], 0);
    assert_eq!(
        show["message"],
        "MSH|^~\\&|DPI|CH|||20261120||ADT^A01^ADT_A01|1|P|2.5\nPID|1||4711^^^CH_EXEMPLE^PI\n"
    );
}

#[rstest::rstest]
#[case::err_ipp_without_show_phi(
    &["--ipp", "4711"],
    2,
    "error: the following required arguments were not provided:\n  --show-phi"
)]
#[case::err_since_words(
    &["--since", "yesterday"],
    1,
    "ordobridge: --since: `yesterday` is not a time: expected an RFC 3339 time \
     (`2026-11-22T08:15:00+01:00`), a date (`2026-11-22`) or an age (`30m`, `2h`, `3d`, `1w`)\n"
)]
#[case::err_until_unit(
    &["--until", "3mo"],
    1,
    "ordobridge: --until: `3mo`: unknown unit `mo` (expected s, m, h, d or w)\n"
)]
#[case::err_range_backwards(
    &["--since", "2026-11-22", "--until", "2026-11-21"],
    1,
    "ordobridge: --since (2026-11-22T00:00:00Z) is not before --until (2026-11-21T00:00:00Z): \
     nothing can match; swap them?\n"
)]
#[case::err_status_unknown(
    &["--status", "held"],
    2,
    "error: invalid value 'held' for '--status <STATUS>'\n  [possible values: accepted, processed, rejected]"
)]
#[case::err_show_unknown_id(
    &["--show", "99"],
    1,
    "ordobridge: no journal entry with id 99; `ordobridge journal` lists the ids\n"
)]
fn err_journal_arguments(#[case] extra: &[&str], #[case] code: i32, #[case] stderr: &str) {
    let dir = tempfile::tempdir().expect("dir");
    common::config(dir.path(), &common::base_toml());
    let config = dir.path().join("ob.toml");
    let mut args = vec!["journal", "--config", config.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert_eq!(out.code, Some(code), "{out:?}");
    assert!(out.stderr.starts_with(stderr), "{out:?}");
    assert_eq!(out.stdout, "");
}

/// The census cannot use an A28 whose PID-3 has no IPP of `CH_EXEMPLE`: the row ends
/// `processed` with a note saying why (no patient value in it), shown by `journal`, `--show`
/// and `--json`. The A01 sample is used and `census --json` describes its patient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn census_unusable_message_is_noted_in_the_journal() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = common::start_engine(common::config(dir.path(), &common::base_toml())).await;
    let config = dir.path().join("ob.toml").display().to_string();
    let unusable = "MSH|^~\\&|DPI|CH|||20261122||ADT^A28^ADT_A05|U1|P|2.5\r\
                    EVN||20261122\rPID|1||998877^^^OTHER_CH^PI||SECRET^NAME||19750412|F\r";
    let ack = common::send_adt(engine.addr("adt-in"), unusable.as_bytes()).await;
    assert!(ack.contains("|AA|"), "{ack}");
    let ack = common::send_adt(engine.addr("adt-in"), &common::sample(common::A01_SAMPLE)).await;
    assert!(ack.contains("|AA|"), "{ack}");

    let args = vec![
        "journal".to_owned(),
        "--config".to_owned(),
        config.clone(),
        "--json".to_owned(),
    ];
    let listed = common::wait_for("both rows processed", || {
        let args = args.clone();
        async move {
            let listed = json_of(&run_async(args).await);
            let rows = listed["rows"].as_array()?;
            (rows.len() == 2 && rows.iter().all(|r| r["status"] == "processed")).then_some(listed)
        }
    })
    .await;
    let note = "not used by the census: PID-3: no `PI` identifier of authority `CH_EXEMPLE` \
                (found 20 characters, not shown here: see the journal): check `ipp_authority` \
                in the census settings or the sender's PID-3";
    assert_eq!(listed["rows"][1]["control_id"], "U1");
    assert_eq!(listed["rows"][1]["note"], note);
    assert_eq!(listed["rows"][0]["note"], Value::Null);
    let id = listed["rows"][1]["id"].as_i64().expect("id").to_string();

    let text = run_async(vec!["journal".into(), "--config".into(), config.clone()]).await;
    assert_eq!(text.code, Some(0), "{text:?}");
    assert!(
        text.stdout.contains(&format!("processed ({note})")),
        "{}",
        text.stdout
    );
    for value in ["998877", "SECRET", "19750412"] {
        assert!(!text.stdout.contains(value), "{}", text.stdout);
    }

    let show = run_async(vec![
        "journal".into(),
        "--config".into(),
        config.clone(),
        "--show".into(),
        id.clone(),
    ])
    .await;
    assert_eq!(show.code, Some(0), "{show:?}");
    assert_eq!(
        show.stderr,
        format!("journal #{id} adt-in ADT^A28^ADT_A05 U1: processed ({note})\n")
    );
    assert!(show.stdout.starts_with("MSH|"), "{show:?}");
    let show = json_of(
        &run_async(vec![
            "journal".into(),
            "--config".into(),
            config.clone(),
            "--show".into(),
            id,
            "--json".into(),
        ])
        .await,
    );
    assert_eq!(show["note"], note);

    let census = json_of(
        &run_async(vec![
            "census".into(),
            "--config".into(),
            config.clone(),
            "--ipp".into(),
            "100001".into(),
            "--json".into(),
        ])
        .await,
    );
    assert_eq!(census["ipp"], "100001");
    let keys: Vec<&str> = census
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "anomalies",
            "birth_date",
            "current_encounter",
            "encounters",
            "ins",
            "ipp",
            "legal_name",
            "merged_ipps",
            "movements",
            "reliability",
            "resolved_from",
            "sex",
            "used_name",
        ]
    );
    assert_eq!(census["movements"][0]["event"], "A01");
    assert!(census["current_encounter"]["nda"].is_string(), "{census}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_json_shape() {
    let dir = tempfile::tempdir().expect("dir");
    let config = filled_store(dir.path()).await;
    let config = config.to_str().expect("utf-8");
    let queue = |json: bool| {
        let mut args = vec!["queue", "--config", config];
        if json {
            args.push("--json");
        }
        run(&args)
    };
    assert_eq!(
        json_of(&queue(true)),
        json!({"destinations": [], "dead_letters": [], "held_bundles": [],
               "unfinished_pushes": []})
    );
    assert!(!queue(false).stdout.contains("still `accepted`"));

    // A pushed bundle journaled an hour ago and never settled (its request failed after
    // journaling), and one just arrived (still in its request): only the first is listed.
    let store =
        Store::open(&dir.path().join("data/ob.db"), StoreOptions::default()).expect("store");
    // Whole seconds: the store keeps microseconds.
    let hour_ago =
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 3600).expect("time");
    for (at, control_id) in [
        (hour_ago, "BUNDLE-OLD"),
        (jiff::Timestamp::now(), "BUNDLE-NEW"),
    ] {
        let mut push = record(
            "2026-11-20T10:00:00Z",
            "Bundle",
            "{}",
            RecordStatus::Accepted,
        );
        push.channel = "posos-push".to_owned();
        push.received_at = at;
        push.control_id = control_id.to_owned();
        push.raw = format!("{{\"id\": \"{control_id}\"}}").into_bytes().into();
        store.journal(push).await.expect("journal");
    }
    store.close().await;
    let listed = json_of(&queue(true));
    assert_eq!(
        listed["unfinished_pushes"],
        json!([{"journal_id": 4, "received_at": hour_ago.to_string(),
                "control_id": "BUNDLE-OLD", "peer": "127.0.0.1:40000"}])
    );
    let text = queue(false);
    assert!(
        text.stdout.contains(
            "1 pushed bundle(s) still `accepted` 10 min after they arrived (not held, not \
             queued): see `ordobridge journal --show ID`, then ask Posos to push again\n\
             JOURNAL ID  RECEIVED\n4           "
        ),
        "{text:?}"
    );
}

/// `ordobridge queue | head -1` and friends: the reader is gone before anything is written;
/// the command ends quietly with 0, no panic, no backtrace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdout_ends_quietly() {
    let dir = tempfile::tempdir().expect("dir");
    let config = filled_store(dir.path()).await;
    let config = config.to_str().expect("utf-8");
    let commands: [&[&str]; 5] = [
        &["queue", "--config", config],
        &["queue", "--config", config, "--json"],
        &["journal", "--config", config],
        &["journal", "--config", config, "--show", "1"],
        &["check", "--config", config],
    ];
    for args in commands {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let output = Command::new(common::ordobridge_bin())
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run ordobridge");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

const TOKEN: &str = "cl1Adm1nT0ken-9c8b7a6f5e4d3c2b1a0f9e8d";
const PUSH_TOKEN: &str = "cl1PushT0ken-9c8b7a6f5e4d3c2b1a0f9e8d";

/// `ordobridge status` against the in-process daemon: 0 while `ok`; a wrong token is refused
/// (2); 1 once a destination keeps failing (an EHR that never answers); 2 once the daemon is
/// gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exit_codes_follow_the_daemon() {
    // The EHR's port is bound but nobody answers: every delivery attempt times out.
    let ehr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ehr_addr = ehr.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("dir");
    let text = common::base_toml()
        .replace("[http]\n", &format!("[http]\nadmin_token = \"{TOKEN}\"\n"))
        + &common::push_to_ehr_toml(
            ehr_addr,
            &format!("token = \"{PUSH_TOKEN}\"\nhold_unknown_for = \"0s\""),
        )
        .replace(
            "retry_initial = \"20ms\"",
            "retry_initial = \"20ms\"\nretry_max = \"100ms\"\nack_timeout = \"200ms\"",
        );
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    let http = engine.addr("http");
    let url = format!("http://{http}");
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let token_file = token_file.display().to_string();
    let status = |extra: &[&str]| {
        let mut args = vec!["status".to_owned(), "--url".to_owned(), url.clone()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        run_async(args)
    };

    let ok = status(&[]).await;
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(
        ok.stdout.starts_with(&format!("{url}/status: ok\n")),
        "{}",
        ok.stdout
    );
    assert!(ok.stdout.contains("  adt-in "), "{}", ok.stdout);
    assert!(ok.stdout.ends_with("attention: none\n"), "{}", ok.stdout);
    let raw = json_of(&status(&["--json", "--token-file", &token_file]).await);
    assert_eq!(raw["status"], "ok");
    assert!(raw["destinations"]["ehr-orders"].is_object(), "{raw}");

    let refused = status(&["--token", "wrong-token"]).await;
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert_eq!(
        refused.stderr,
        format!(
            "ordobridge: {url}/status refused to show its status (HTTP 403: wrong admin token); \
             run this on the daemon's machine (loopback) or pass `[http] admin_token` with \
             --token or --token-file\n"
        )
    );

    let pushed = reqwest::Client::new()
        .post(format!("{url}/fhir"))
        .bearer_auth(PUSH_TOKEN)
        .body(common::sample(
            "samples/posos/two-drugs-prednisone-taper.json",
        ))
        .send()
        .await
        .expect("push");
    assert_eq!(pushed.status(), 200);
    let attention = common::wait_for("`status` to exit 1", || async {
        let out = status(&["--token-file", &token_file]).await;
        (out.code == Some(1)).then_some(out)
    })
    .await;
    assert!(
        attention
            .stdout
            .starts_with(&format!("{url}/status: attention\n")),
        "{}",
        attention.stdout
    );
    assert!(
        attention.stdout.contains("\nattention (")
            && attention.stdout.contains("destination `ehr-orders`"),
        "{}",
        attention.stdout
    );
    assert!(
        attention
            .stdout
            .contains("  ehr-orders       1 pending, 0 dead"),
        "{}",
        attention.stdout
    );

    engine.stop().await;
    drop(ehr);
    let gone = status(&[]).await;
    assert_eq!(gone.code, Some(2), "{gone:?}");
    assert!(
        gone.stderr.starts_with(&format!(
            "ordobridge: cannot reach the daemon at {url}/status: "
        )),
        "{gone:?}"
    );
    assert!(
        gone.stderr
            .ends_with("; is it running, and is `--url` its `[http] bind` address?\n"),
        "{gone:?}"
    );
}

/// `send` exits 0 when every answer is AA, 2 as soon as one is not (here AE from a real MLLP
/// peer), 1 when it cannot send at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_exit_codes() {
    let file = common::repo_root().join(common::A01_SAMPLE);
    let file = file.display().to_string();
    let (accepting, _) = common::ehr_peer().await;
    let out = run_async(vec![
        "send".into(),
        "--to".into(),
        accepting.to_string(),
        file.clone(),
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(": AA"), "{out:?}");

    let (refusing, _) =
        common::ehr_peer_answering(|id| format!("MSA|AE|{id}|unknown patient")).await;
    let out = run_async(vec![
        "send".into(),
        "--to".into(),
        refusing.to_string(),
        file.clone(),
    ])
    .await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stdout.contains(": AE unknown patient"), "{out:?}");

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let out = run_async(vec!["send".into(), "--to".into(), closed.to_string(), file]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.starts_with("ordobridge: "), "{out:?}");
}

#[rstest::rstest]
#[case::ok_valid("[store]\npath = \"data/ob.db\"\n", 0)]
#[case::err_unknown_key("[store]\npath = \"data/ob.db\"\nnot_a_key = 1\n", 1)]
fn check_exit_codes(#[case] text: &str, #[case] code: i32) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("ob.toml");
    std::fs::write(&path, text).expect("write");
    let out = run(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.code, Some(code), "{out:?}");
}

/// Issue 12: the listings (`journal`, `census`, `queue`) open the store read-only. A store
/// file that is read-only on disk, in a folder nobody may write, is listed (by an
/// unprivileged user when the tests run as root, whom permissions would not stop), and the
/// folder holds the same files, byte for byte, afterwards: no `-wal`, no `-shm`, no migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_read_a_store_that_is_read_only_on_disk() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let config = filled_store(dir.path()).await;
    let data = dir.path().join("data");
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    // Every file under `data`, the intake log's folder (`ob.db-intake/`) included.
    let snapshot = || {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut folders = vec![data.clone()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).expect("list") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    folders.push(path);
                    continue;
                }
                let name = path.strip_prefix(&data).expect("under data");
                let name = name.to_string_lossy().into_owned();
                files.push((name, std::fs::read(&path).expect("read")));
            }
        }
        files.sort();
        files
    };
    for file in std::fs::read_dir(&data).expect("list data") {
        let path = file.expect("entry").path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).expect("list") {
                mode(&inner.expect("entry").path(), 0o444);
            }
            mode(&path, 0o555);
        } else {
            mode(&path, 0o444);
        }
    }
    mode(&data, 0o555);
    mode(dir.path(), 0o755);
    mode(&config, 0o644);
    let before = snapshot();
    let config = config.to_str().expect("utf-8");
    let journal = run_unprivileged(&["journal", "--config", config, "--json"]);
    assert_eq!(ids(&json_of(&journal)), [3, 2, 1]);
    let queue = run_unprivileged(&["queue", "--config", config, "--json"]);
    assert_eq!(json_of(&queue)["destinations"], json!([]));
    let census = run_unprivileged(&["census", "--config", config, "--ipp", "4711"]);
    assert_eq!(census.code, Some(1), "{census:?}");
    assert!(
        census
            .stderr
            .starts_with("ordobridge: the census knows no patient"),
        "{census:?}"
    );
    assert_eq!(snapshot(), before, "a listing changed the store folder");
    // Let the temp dir guard remove it.
    mode(&data, 0o755);
}

/// [`run`] as user `nobody` when the tests run as root (through `setpriv`), else as is.
fn run_unprivileged(args: &[&str]) -> Run {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::NamedTempFile::new().expect("probe file");
    let root = probe.as_file().metadata().expect("metadata").uid() == 0;
    if !root {
        return run(args);
    }
    let mut setpriv = Command::new("setpriv");
    setpriv
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(common::ordobridge_bin());
    run_as(setpriv, args)
}

/// The schema version this build writes (a fresh store's `user_version`).
fn current_schema_version() -> i64 {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("fresh.db");
    drop(Store::open(&path, StoreOptions::default()).expect("store"));
    let db = rusqlite::Connection::open(&path).expect("open");
    db.pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version")
}

/// Issue 12: a listing never migrates. A store of a newer schema, or of an older one, is
/// refused with a precise error, and its `user_version` is left as it was.
#[rstest::rstest]
#[case::err_newer(
    99,
    "has schema version 99, this build knows versions 0 to {v}; was it written by a newer ordobridge?\n"
)]
#[case::err_older(
    3,
    "has schema version 3, this build reads version {v}: start the daemon of this version once (`ordobridge run`), which migrates it; listings never change the store\n"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_listings_never_migrate(#[case] version: i64, #[case] said: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let config = filled_store(dir.path()).await;
    let db_path = dir.path().join("data/ob.db");
    let db = rusqlite::Connection::open(&db_path).expect("open");
    db.pragma_update(None, "user_version", version)
        .expect("set user_version");
    drop(db);
    let supported = current_schema_version();
    let config = config.to_str().expect("utf-8");
    for command in ["journal", "queue"] {
        let out = run(&[command, "--config", config]);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert_eq!(
            out.stderr,
            format!(
                "ordobridge: cannot read the store: store `{}` {}",
                db_path.display(),
                said.replace("{v}", &supported.to_string())
            )
        );
        assert_eq!(out.stdout, "");
    }
    let db = rusqlite::Connection::open(&db_path).expect("open");
    let after: i64 = db
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version");
    assert_eq!(after, version, "a listing migrated the store");
}

/// A store that does not exist yet (the daemon never started) lists as empty, and is not
/// created by the listing.
#[test]
fn ok_listing_a_store_not_created_yet_creates_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    common::config(dir.path(), &common::base_toml());
    let config = dir.path().join("ob.toml");
    let out = run(&["queue", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .starts_with("no outbound messages pending or dead\nno dead letters\n"),
        "{out:?}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "the listing created the store"
    );
}

/// Issue 12, one mapping language: an old-format scan-token mapping fails `check` with a
/// message naming `ordobridge mapping upgrade FILE`; what that command prints passes `check`
/// and, through `transform --launch`, builds the same request as the shipped mapping.
#[test]
fn old_scan_token_mapping_is_named_upgraded_and_checked() {
    let dir = tempfile::tempdir().expect("dir");
    let root = common::repo_root();
    let mapping = dir.path().join("scan-token.toml");
    // The shipped file as it was before the mapping language built the launch requests.
    let old = "[fields]\n\
        first_name   = { from = \"user.first_name\" }\n\
        last_name    = { from = \"user.last_name\" }\n\
        rpps         = { from = \"user.rpps\" }\n\
        facilitySlug = { value = \"ch-exemple\" }\n\
        patientId    = { from = \"patient.ipp\" }\n";
    std::fs::write(&mapping, old).expect("write");
    let config = dir.path().join("ob.toml");
    let text = format!(
        "[store]\npath = \"ob.db\"\n[http]\nbind = \"127.0.0.1:0\"\n{}",
        common::simulator_toml("").replace(
            &format!("{}/mappings/scan-token.toml", root.display()),
            &mapping.display().to_string()
        )
    );
    std::fs::write(&config, text).expect("write");
    let config = config.to_str().expect("utf-8");
    let mapping_arg = mapping.to_str().expect("utf-8");

    let checked = run(&["check", "--config", config]);
    assert_eq!(checked.code, Some(1), "{checked:?}");
    assert!(
        checked.stderr.contains(&format!(
            "`launch.mapping`: {mapping_arg}:1:2: `fields`: this is a scan-token mapping in the old format"
        )),
        "{checked:?}"
    );
    assert!(
        checked
            .stderr
            .contains(&format!("run `ordobridge mapping upgrade {mapping_arg}`")),
        "{checked:?}"
    );

    let upgraded = run(&["mapping", "upgrade", mapping_arg]);
    assert_eq!(upgraded.code, Some(0), "{upgraded:?}");
    std::fs::write(&mapping, &upgraded.stdout).expect("write");
    let checked = run(&["check", "--config", config]);
    assert_eq!(checked.code, Some(0), "{checked:?}");

    let sample = root.join("samples/launch/scan.json");
    let sample = sample.to_str().expect("utf-8");
    let shipped = root.join("mappings/scan-token.toml");
    let from_upgrade = run(&["transform", "--mapping", mapping_arg, "--launch", sample]);
    let from_shipped = run(&[
        "transform",
        "--mapping",
        shipped.to_str().expect("utf-8"),
        "--launch",
        sample,
    ]);
    assert_eq!(
        json_of(&from_upgrade),
        json!({"first_name": "Paul", "last_name": "DURAND", "rpps": "10000000001",
               "facilitySlug": "ch-exemple", "patientId": "800123"})
    );
    assert_eq!(from_upgrade.stdout, from_shipped.stdout);
}

#[rstest::rstest]
#[case::err_launch_mapping_on_a_bundle(
    &["--mapping", "mappings/scan-token.toml", "--bundle", "samples/posos/two-drugs-prednisone-taper.json"],
    "reads a launch (`[message] input = \"launch\"`), not a bundle: give `--launch FILE`"
)]
#[case::err_push_mapping_on_a_launch(
    &["--mapping", "mappings/orm-o01.toml", "--launch", "samples/launch/scan.json"],
    "reads a push (`[message] input = \"push\"`), not a launch: give `--bundle FILE`"
)]
#[case::err_required_field_empty(
    &["--mapping", "mappings/guide.toml", "--launch", "samples/launch/scan.json"],
    "`guide`: required value is missing: `launch.guide` is empty"
)]
fn err_transform_inputs(#[case] args: &[&str], #[case] stderr: &str) {
    let root = common::repo_root();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.starts_with("mappings/") || a.starts_with("samples/") {
                root.join(a).display().to_string()
            } else {
                (*a).to_string()
            }
        })
        .collect();
    let mut all = vec!["transform"];
    all.extend(args.iter().map(String::as_str));
    let out = run(&all);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(stderr), "{out:?}");
}

#[test]
fn ok_transform_guide_launch() {
    let root = common::repo_root();
    let out = run(&[
        "transform",
        "--mapping",
        root.join("mappings/guide.toml").to_str().expect("utf-8"),
        "--launch",
        root.join("samples/launch/guide.json")
            .to_str()
            .expect("utf-8"),
    ]);
    assert_eq!(
        json_of(&out),
        json!({"rpps": "10000000001", "first_name": "Paul", "last_name": "DURAND",
               "guide": "insuffisance-renale", "ucds": ["3400893826706", "3400892088310"]})
    );
}

/// With the intake log (the default), `journal` says on stderr how many acknowledged messages
/// are still in the log, not listed: here the journal refuses inserts (a trigger, as a full
/// disk would), so the ACKed ADT stays in the log until the trigger goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_says_what_the_intake_log_holds_not_listed_yet() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = common::start_engine(common::config(dir.path(), &common::base_toml())).await;
    let config = dir.path().join("ob.toml").display().to_string();
    let failing = common::JournalInsertsFail::start(&dir.path().join("data/ob.db"));
    let ack = common::send_adt(engine.addr("adt-in"), &common::sample(common::A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA|"), "durable in the log: {ack}");
    let args = vec!["journal".to_owned(), "--config".to_owned(), config];
    let listed = run_async(args.clone()).await;
    assert_eq!(listed.code, Some(0), "{listed:?}");
    assert!(!listed.stdout.contains("SYN0002"), "{listed:?}");
    assert_eq!(
        listed.stderr,
        "note: 1 acknowledged message(s) are in the intake log, not in the journal yet, so not listed: the running daemon copies them within a second (during a flood, within seconds; a stopped one at its next start); list again to see them\n"
    );
    failing.end();
    common::wait_for("the ADT listed", || {
        let args = args.clone();
        async move {
            let listed = run_async(args).await;
            listed.stdout.contains("SYN0002").then_some(())
        }
    })
    .await;
    // Copied (its row and the log's mark move in one transaction): no note any more.
    let listed = run_async(args).await;
    assert!(listed.stdout.contains("SYN0002"), "{listed:?}");
    assert_eq!(listed.stderr, "", "{listed:?}");
    engine.stop().await;
}
