//! Symbolic links planted in shared folders, through the real engine (file inbox, SQLite store
//! in the temp folder) and the real outbox: a link is never read, followed or written
//! through; links pointing at a SQLite store file and at a file outside leave them
//! byte-identical.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ordobridge::filedrop::{NameVars, Outbox, OutboxSettings};
use ordobridge::store::{JournalFilter, JournalSummary, Store, StoreOptions};

const PATIENCE: Duration = Duration::from_secs(20);

const GOOD: &str =
    "MSH|^~\\&|DPI|CH|OB|POSOS|2026||ADT^A01|GOOD1|P|2.5\rPID|1||1^^^CH_EXEMPLE^PI\r";
/// What a followed link would feed the journal: a message with its own control id.
const OUTSIDE: &str =
    "MSH|^~\\&|DPI|CH|OB|POSOS|2026||ADT^A01|OUTSIDE1|P|2.5\rPID|1||2^^^CH_EXEMPLE^PI\r";

/// A temp folder with the engine's store (`data/ob.db`), an inbox `in/` (archive and error
/// inside it), another SQLite store (`other/other.db`) and a file outside (`other/outside.hl7`).
struct Site {
    dir: tempfile::TempDir,
    engine: Option<common::InProcess>,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("in")).expect("inbox");
        std::fs::create_dir_all(dir.path().join("other")).expect("other");
        // A real SQLite database, written then closed: its bytes must never change.
        let db = rusqlite::Connection::open(dir.path().join("other/other.db")).expect("db");
        db.execute_batch(
            "CREATE TABLE journal (id INTEGER PRIMARY KEY, body TEXT);
             INSERT INTO journal (body) VALUES ('kept as is');",
        )
        .expect("fill db");
        db.close().expect("close db");
        std::fs::write(dir.path().join("other/outside.hl7"), OUTSIDE).expect("outside");
        Site { dir, engine: None }
    }

    async fn start(&mut self) {
        let text = r#"
[store]
path = "data/ob.db"
[census]
ipp_authority = "CH_EXEMPLE"
[http]
bind = "127.0.0.1:0"
[inbound.files]
protocol = "file"
folder = "in"
patterns = ["*.hl7"]
ready = "stable"
stable_for = "50ms"
poll_interval = "20ms"
"#;
        let config = common::config(self.dir.path(), text);
        self.engine = Some(common::start_engine(config).await);
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn journal(&self) -> Vec<JournalSummary> {
        Store::open(&self.path("data/ob.db"), StoreOptions::default())
            .expect("store")
            .list_journal(&JournalFilter {
                control_id: None,
                channel: None,
                limit: 0,
            })
            .expect("list")
    }

    async fn stop(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
    }
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn today() -> String {
    jiff::Zoned::now().date().strftime("%Y-%m-%d").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_links_go_to_error_unread_and_their_targets_are_untouched() {
    let mut site = Site::new();
    let other_db = site.path("other/other.db");
    let outside = site.path("other/outside.hl7");
    let (db_before, outside_before) = (bytes(&other_db), bytes(&outside));
    site.start().await;
    let store = site.path("data/ob.db");
    symlink(&store, site.path("in/live-store.hl7")).expect("link");
    symlink(&other_db, site.path("in/other-store.hl7")).expect("link");
    symlink(&outside, site.path("in/outside.hl7")).expect("link");
    symlink(site.path("other"), site.path("in/folder.hl7")).expect("link");
    std::fs::write(site.path("in/good.hl7"), GOOD).expect("drop");

    let links = [
        "live-store.hl7",
        "other-store.hl7",
        "outside.hl7",
        "folder.hl7",
    ];
    eventually("the good file archived and every link in error/", || {
        site.path(&format!("in/archive/{}/good.hl7", today()))
            .exists()
            && links
                .iter()
                .all(|l| site.path(&format!("in/error/{l}.reason")).exists())
    })
    .await;
    for link in links {
        let moved = site.path(&format!("in/error/{link}"));
        assert!(is_link(&moved), "{link} moved as a link");
        assert!(
            !is_link(&site.path(&format!("in/{link}"))),
            "{link} left the inbox"
        );
        let reason =
            std::fs::read_to_string(site.path(&format!("in/error/{link}.reason"))).expect("reason");
        assert_eq!(
            reason,
            format!(
                "`{link}` is a symbolic link: ordobridge never reads or follows a link in a shared folder, so the link itself was moved here unread (its target is untouched); have the sender write the file itself into the folder\n"
            )
        );
    }
    assert_eq!(
        std::fs::read_link(site.path("in/error/live-store.hl7")).ok(),
        Some(store)
    );
    assert!(
        bytes(&other_db) == db_before,
        "the other store is byte-identical"
    );
    assert!(
        bytes(&outside) == outside_before,
        "the outside file is byte-identical"
    );
    let rows = site.journal();
    assert_eq!(
        rows.iter()
            .map(|r| r.control_id.as_str())
            .collect::<Vec<_>>(),
        vec!["GOOD1"],
        "only the real file is journaled"
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_reason_and_archive_day_links_are_never_written_through() {
    let mut site = Site::new();
    let other_db = site.path("other/other.db");
    let db_before = bytes(&other_db);
    std::fs::create_dir_all(site.path("in/error")).expect("error folder");
    // The reason name of the next refused file points at the store.
    symlink(&other_db, site.path("in/error/bad.hl7.reason")).expect("link");
    // Today's archive folder is a link to a folder outside.
    std::fs::create_dir_all(site.path("in/archive")).expect("archive");
    std::fs::create_dir_all(site.path("other/elsewhere")).expect("elsewhere");
    symlink(
        site.path("other/elsewhere"),
        site.path(&format!("in/archive/{}", today())),
    )
    .expect("link");
    site.start().await;
    std::fs::write(site.path("in/bad.hl7"), "not HL7 at all").expect("drop");
    std::fs::write(site.path("in/good.hl7"), GOOD).expect("drop");

    eventually("the bad file in error/ under the next free name", || {
        site.path("in/error/bad.hl7.1.reason").exists() && site.path("in/error/bad.hl7.1").exists()
    })
    .await;
    assert!(bytes(&other_db) == db_before, "the store is byte-identical");
    assert!(is_link(&site.path("in/error/bad.hl7.reason")));

    // The good file is journaled but cannot be archived through the link: it stays in the
    // inbox and /status says why.
    let status = format!(
        "http://{}/status",
        site.engine.as_ref().expect("engine").addr("http")
    );
    let mut last_error = String::new();
    let deadline = Instant::now() + PATIENCE;
    while !last_error.contains("is a symbolic link") {
        assert!(
            Instant::now() < deadline,
            "no archive refusal in /status: {last_error}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let body: serde_json::Value = reqwest::get(&status)
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        last_error = body["channels"]["files"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    let day = site.path(&format!("in/archive/{}", today()));
    assert!(
        last_error.contains(&format!("`{}`", day.display())),
        "{last_error}"
    );
    assert!(site.journal().iter().any(|r| r.control_id == "GOOD1"));
    assert!(
        site.path("in/good.hl7").exists(),
        "the file stays in the inbox"
    );
    assert_eq!(
        std::fs::read_dir(site.path("other/elsewhere"))
            .expect("list")
            .count(),
        0,
        "nothing moved through the linked day folder"
    );
    site.stop().await;
}

#[test]
fn outbox_refuses_to_write_through_planted_links() {
    let site = Site::new();
    let other_db = site.path("other/other.db");
    let db_before = bytes(&other_db);
    let out = site.path("out");
    std::fs::create_dir_all(&out).expect("out");
    // Links at the final name, the tmp name of the next one and the witness of the one after.
    symlink(&other_db, out.join("C1.HPR")).expect("link");
    symlink(&other_db, out.join("C1-1.HPR.tmp")).expect("link");
    symlink(&other_db, out.join("C1-2.OK")).expect("link");
    let outbox = Outbox::new(OutboxSettings {
        folder: out.clone(),
        name_template: "{control_id}.HPR".into(),
        witness_suffix: Some(".OK".into()),
    })
    .expect("outbox");
    let vars = NameVars::now("C1", "", 1);
    let written = outbox.write(&vars, b"H|~^\\&\rL|1\r").expect("write");
    assert_eq!(written, out.join("C1-3.HPR"));
    assert_eq!(bytes(&written), b"H|~^\\&\rL|1\r");
    assert_eq!(bytes(&out.join("C1-3.OK")), b"");
    assert!(bytes(&other_db) == db_before, "the store is byte-identical");
    for link in ["C1.HPR", "C1-1.HPR.tmp", "C1-2.OK"] {
        assert_eq!(
            std::fs::read_link(out.join(link)).ok(),
            Some(other_db.clone())
        );
    }

    // The outbox folder itself a link: refused with what to do.
    let linked = site.path("linked-out");
    symlink(&out, &linked).expect("link");
    let outbox = Outbox::new(OutboxSettings {
        folder: linked.clone(),
        name_template: "{control_id}.HPR".into(),
        witness_suffix: None,
    })
    .expect("outbox");
    let err = outbox.write(&vars, b"x").expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "outbox folder `{}` is a symbolic link; ordobridge never writes through a link in a shared folder: set `folder` to the real path",
            linked.display()
        )
    );
}
