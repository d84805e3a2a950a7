//! `ordobridge migrate --from sqlite:PATH --to postgres:URL` (issue 14): a site's store, filled
//! by the real daemon (ADT over MLLP into the journal and the census) and by the store's own
//! writes (queue, audit), copied into a real PostgreSQL (`common::postgres`), then read back
//! through the same `Store` methods on both sides. Also: running it again copies nothing, an
//! interrupted copy finishes, new rows never reuse a copied id, and what it refuses.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::postgres::TestPostgres;
use common::{Daemon, ordobridge_bin, repo_root, write_config};
use ordobridge::mllp::client::{ClientSettings, MllpClient};
use ordobridge::store::settings::PostgresSettings;
use ordobridge::store::{AuditEntry, JournalFilter, OutboundItem, PatientKey, Store, StoreOptions};

/// `ordobridge migrate ARGS`: (success, stdout + stderr).
fn migrate(args: &[&str]) -> (bool, String) {
    let output = Command::new(ordobridge_bin())
        .arg("migrate")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A site as the daemon left it: ADT samples journaled and applied to the census, then a
/// queue with pending, delivered and dead messages and an audit trail.
fn site(dir: &Path) -> std::path::PathBuf {
    let config = write_config(dir, "");
    let mut daemon = Daemon::start(&config);
    let addr = daemon.addr("adt-in");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let samples = [
        "01-a28-create-identity.hl7",
        "02-a01-admit.hl7",
        "03-a02-transfer.hl7",
    ];
    let auth = "CH_EXEMPLE&1.2.250.1.999.1&ISO";
    // Patient 100009 first, then 100001 (the samples), then 100009 merged into 100001: the
    // older row refers to a newer one (`merged_into`), which the copy sets once both are in.
    let older = format!(
        "MSH|^~\\&|DPI_SYNTH|CH_EXEMPLE|ORDOBRIDGE|POSOS|20261110080000||ADT^A28^ADT_A05|MIGOLD|P|2.5|||||FRA|UNICODE UTF-8|||2.11^IHE_FR\r\
         EVN||20261110080000||||20261110080000\r\
         PID|1||100009^^^{auth}^PI||DUPONT^JEANNE^JEANNE^^^^L||19750412|F||||||||||||||||||||||||VALI\r\
         PV1|1|N\r"
    );
    let merge = format!(
        "MSH|^~\\&|DPI_SYNTH|CH_EXEMPLE|ORDOBRIDGE|POSOS|20261124080000||ADT^A40^ADT_A39|MIGMRG|P|2.5|||||FRA|UNICODE UTF-8|||2.11^IHE_FR\r\
         EVN||20261124080000||||20261124080000\r\
         PID|1||100001^^^{auth}^PI||DURAND^JEANNE^JEANNE^^^^L||19750412|F||||||||||||||||||||||||VALI\r\
         MRG|100009^^^{auth}^PI\r"
    );
    rt.block_on(async {
        let mut client = MllpClient::connect(addr, ClientSettings::default())
            .await
            .unwrap();
        let mut messages = vec![older];
        for (n, sample) in samples.iter().cycle().take(30).enumerate() {
            let text = std::fs::read_to_string(repo_root().join("samples/adt").join(sample))
                .unwrap()
                .replace('\n', "\r");
            // Each copy its own MSH-10 (a sample's is the 10th field of its first line).
            let mut fields: Vec<String> = text.split('|').map(str::to_owned).collect();
            fields[9] = format!("MIG{n:03}");
            messages.push(fields.join("|"));
        }
        messages.push(merge);
        for message in messages {
            let answer = client
                .send(message.as_bytes(), Duration::from_secs(10))
                .await
                .unwrap();
            assert!(
                String::from_utf8_lossy(&answer).contains("MSA|AA|"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
    });
    let store_path = dir.join("data/ordobridge.db");
    // The census settles every accepted row before the daemon is stopped.
    let started = std::time::Instant::now();
    loop {
        let store = Store::open_read_only(&store_path).unwrap();
        let rows = store
            .list_journal(&JournalFilter {
                limit: 0,
                ..JournalFilter::default()
            })
            .unwrap();
        if rows.len() == 32 && rows.iter().all(|r| r.status != "accepted") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "census did not settle: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(daemon.terminate().success());
    rt.block_on(async {
        let store = Store::open(&store_path, StoreOptions::default()).unwrap();
        let items: Vec<OutboundItem> = (0..12)
            .map(|n| OutboundItem {
                destination: if n % 2 == 0 { "ehr" } else { "lab" }.to_owned(),
                control_id: format!("OUT{n:02}"),
                payload: Bytes::from(format!("MSH|^~\\&|ORDO|POSOS|||||ORM^O01|OUT{n:02}|P|2.5")),
                source: format!("bundle-{n}"),
            })
            .collect();
        let ids = store.enqueue(items).await.unwrap();
        store
            .mark_delivered(ids[0], Bytes::from_static(b"MSA|AA|OUT00"))
            .await
            .unwrap();
        store
            .mark_dead(ids[1], "refused by the EHR (AR)")
            .await
            .unwrap();
        store
            .audit(AuditEntry {
                user: "olga".to_owned(),
                action: "replay".to_owned(),
                target: format!("outbound:{}", ids[1]),
                reason: "EHR fixed".to_owned(),
            })
            .await
            .unwrap();
        store.close().await;
    });
    store_path
}

/// What both stores must answer the same.
fn listing(store: &Store) -> String {
    let journal = store
        .list_journal(&JournalFilter {
            limit: 0,
            ..JournalFilter::default()
        })
        .unwrap();
    let queues = store.queue_overview().unwrap();
    let dead = store.dead_letters(None, 0).unwrap();
    let patient = store
        .census_patient(&PatientKey::Ipp("100001".to_owned()))
        .unwrap();
    let merged = store
        .census_patient(&PatientKey::Ipp("100009".to_owned()))
        .unwrap();
    format!("{journal:#?}\n{queues:#?}\n{dead:#?}\n{patient:#?}\n{merged:#?}")
}

#[test]
fn ok_a_site_copied_reads_the_same_again_idempotent_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = site(dir.path());
    let server = TestPostgres::start();
    let from = format!("sqlite:{}", sqlite.display());
    let to = format!("postgres:{}", server.url());

    let (ok, out) = migrate(&["--from", &from, "--to", &to]);
    assert!(ok, "{out}");
    assert!(out.contains("journal: 32 row(s), 32 copied now"), "{out}");
    assert!(out.contains("outbound: 12 row(s), 12 copied now"), "{out}");
    assert!(out.contains("counts verified equal"), "{out}");

    let settings = PostgresSettings::from_url(&server.url()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let before = listing(&Store::open_read_only(&sqlite).unwrap());
    // The merge is in the site, and so the reference to a later row (checked again below).
    let merged = Store::open_read_only(&sqlite)
        .unwrap()
        .census_patient(&PatientKey::Ipp("100009".to_owned()))
        .unwrap()
        .unwrap();
    assert_eq!(
        (merged.ipp.as_str(), merged.resolved_from.as_deref()),
        ("100001", Some("100009"))
    );
    {
        let postgres = Store::open_postgres(&settings, true).unwrap();
        assert_eq!(listing(&postgres), before);
        let audit = rt.block_on(postgres.recent_audit(10)).unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].entry.reason, "EHR fixed");
    }

    // Again: nothing to copy.
    let (ok, out) = migrate(&["--from", &from, "--to", &to]);
    assert!(ok, "{out}");
    assert!(
        !out.lines()
            .any(|l| l.contains("copied now") && !l.ends_with(" 0 copied now")),
        "{out}"
    );

    // Interrupted after the first rows of the journal: the next run copies the rest.
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .execute("DELETE FROM journal WHERE id > 10", &[])
            .await
            .unwrap();
    });
    let (ok, out) = migrate(&["--from", &from, "--to", &to]);
    assert!(ok, "{out}");
    assert!(out.contains("journal: 32 row(s), 22 copied now"), "{out}");

    // New rows after the copy get new ids.
    let postgres = Store::open_postgres(&settings, true).unwrap();
    assert_eq!(listing(&postgres), before);
    let ids = rt
        .block_on(postgres.enqueue(vec![OutboundItem {
            destination: "ehr".to_owned(),
            control_id: "NEW".to_owned(),
            payload: Bytes::from_static(b"MSH|^~\\&|ORDO|POSOS|||||ORM^O01|NEW|P|2.5"),
            source: "bundle-new".to_owned(),
        }]))
        .unwrap();
    assert!(ids[0] > 12, "a new row reused a copied id: {ids:?}");
}

#[test]
fn err_migrate_refuses_running_nodes_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestPostgres::start();
    let sqlite = dir.path().join("empty.db");
    drop(Store::open(&sqlite, StoreOptions::default()).unwrap());
    let from = format!("sqlite:{}", sqlite.display());
    let to = format!("postgres:{}", server.url());

    // A node runs on the database: copying under it is refused.
    let settings = PostgresSettings::from_url(&server.url()).unwrap();
    let node = Store::open_postgres(&settings, true).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lease = rt
        .block_on(node.claim_destination("ehr", "ob-1", Duration::from_secs(60)))
        .unwrap()
        .unwrap();
    let (ok, out) = migrate(&["--from", &from, "--to", &to]);
    assert!(!ok);
    assert!(
        out.contains(
            "node(s) ob-1 hold leases on this database: stop every node before migrating into it"
        ),
        "{out}"
    );
    rt.block_on(node.release_destination(lease)).unwrap();
    let (ok, out) = migrate(&["--from", &from, "--to", &to]);
    assert!(ok, "{out}");

    let (ok, out) = migrate(&["--from", sqlite.to_str().unwrap(), "--to", &to]);
    assert!(!ok);
    assert!(out.contains("expected `sqlite:PATH`"), "{out}");
    let (ok, out) = migrate(&[
        "--from",
        &from,
        "--to",
        "postgres:postgres://ob:secret@127.0.0.1/ob",
    ]);
    assert!(!ok);
    assert!(out.contains("holds a password"), "{out}");
    assert!(
        !out.contains("secret"),
        "the password is never printed: {out}"
    );
    let (ok, out) = migrate(&["--from", "sqlite:/nonexistent/ob.db", "--to", &to]);
    assert!(!ok);
    assert!(out.contains("is not a file"), "{out}");
}
