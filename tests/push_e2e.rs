//! Issue 4 end to end over real sockets: ADT in over MLLP, launch, the simulator's "Import to
//! DPI" pushes the bundle to the daemon's FHIR endpoint, which journals it, maps it through
//! the shipped ORM^O01 mapping with the census, and delivers it from the durable queue to an
//! MLLP peer (the EHR) that answers AA. Also: a bad body gets a 400 OperationOutcome naming the
//! JSON path and is journaled as rejected; a wrong token gets 401; a bundle with only a PDF
//! is processed without sending an empty order.

mod common;

use common::{A01_SAMPLE, LAUNCH_QUERY};
use ordobridge::hl7::Message;
use ordobridge::store::{JournalFilter, Store, StoreOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adt_launch_import_push_and_the_orm_reaches_the_ehr() {
    let (peer, received) = common::ehr_peer().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (listeners, mllp_addr, http_addr) = common::bind_listeners().await;
    let simulator = format!(
        "push_url = \"http://{http_addr}/fhir\"\npush_token = \"s3cret-5b8e1d0c4a7f2e9b3d6c1a8f0e4b7d2c\""
    );
    // The sample bundle's patient is not in the census: map it at once (holds: push_hold.rs).
    let push = "token = \"s3cret-5b8e1d0c4a7f2e9b3d6c1a8f0e4b7d2c\"\nhold_unknown_for = \"0s\"";
    let text = common::base_toml()
        + &common::simulator_toml(&simulator)
        + &common::push_to_ehr_toml(peer, push);
    let engine = common::InProcess::start(common::config(dir.path(), &text), listeners).await;

    // ADT in.
    let ack = common::send_adt(mllp_addr, &common::sample(A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA|SYN0002"));

    // Launch (once the census has it), then "Import to DPI" as the page's button does.
    let web = common::no_redirect_client();
    let location = common::launch_until_redirect(http_addr, LAUNCH_QUERY).await;
    let import = web
        .post(format!("{location}/import"))
        .send()
        .await
        .expect("import");
    assert!(
        import.status().is_success(),
        "import: {:?}",
        import.text().await
    );

    // The ORM reaches the EHR, built from the census (names, NDA) and the bundle.
    let orm = common::first_received(&received).await;
    let orm = Message::parse(&orm).expect("the ORM parses");
    assert_eq!(orm.header().message_type, "ORM^O01^ORM_O01");
    assert_eq!(
        orm.query("PID-3.1").expect("path").as_deref(),
        Some("100001")
    );
    assert_eq!(
        orm.query("PID-5.1").expect("path").as_deref(),
        Some("MARTIN")
    );
    assert_eq!(
        orm.query("PV1-19").expect("path").as_deref(),
        Some("900001")
    );
    assert!(orm.segment("RXO", 1).is_some());

    // A bad body: 400, OperationOutcome with the JSON path; journaled as rejected.
    let bad = web
        .post(format!("http://{http_addr}/fhir"))
        .bearer_auth("s3cret-5b8e1d0c4a7f2e9b3d6c1a8f0e4b7d2c")
        .body(r#"{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"MedicationRequest","dosageInstruction":[{"timing":{"repeat":{"frequency":"deux"}}}]}}]}"#)
        .send()
        .await
        .expect("push");
    assert_eq!(bad.status(), 400);
    let outcome: serde_json::Value = bad.json().await.expect("json");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let expression = outcome["issue"][0]["expression"][0]
        .as_str()
        .unwrap_or_default();
    assert!(expression.starts_with("entry[0].resource"), "{outcome}");
    // A wrong token: 401.
    let unauthorized = web
        .post(format!("http://{http_addr}/fhir"))
        .bearer_auth("wrong")
        .body("{}")
        .send()
        .await
        .expect("push");
    assert_eq!(unauthorized.status(), 401);

    // The same bundle pushed twice (Posos did not see the first answer): queued once.
    let bundle = common::sample("samples/posos/two-drugs-prednisone-taper.json");
    for _ in 0..2 {
        let again = web
            .post(format!("http://{http_addr}/fhir/Bundle"))
            .bearer_auth("s3cret-5b8e1d0c4a7f2e9b3d6c1a8f0e4b7d2c")
            .body(bundle.clone())
            .send()
            .await
            .expect("push");
        assert_eq!(again.status(), 200, "{:?}", again.text().await);
    }

    // A bundle with only a PDF: accepted and processed, but the ORM mapping's `[message]
    // when` ("prescription.lines") is false, so no empty order goes to the EHR.
    let pdf_only = web
        .post(format!("http://{http_addr}/fhir"))
        .bearer_auth("s3cret-5b8e1d0c4a7f2e9b3d6c1a8f0e4b7d2c")
        .body(common::sample("samples/posos/with-pdf.json"))
        .send()
        .await
        .expect("push");
    assert_eq!(pdf_only.status(), 200, "{:?}", pdf_only.text().await);

    engine.stop().await;
    let db = rusqlite::Connection::open(dir.path().join("data/ob.db")).expect("db");
    let queued: i64 = db
        .query_row("SELECT count(*) FROM outbound", [], |row| row.get(0))
        .expect("count");
    assert_eq!(
        queued, 2,
        "the import and the sample bundle, each queued once; nothing for the PDF alone"
    );
    let store = Store::open(&dir.path().join("data/ob.db"), StoreOptions::default()).expect("s");
    let pushes = store
        .list_journal(&JournalFilter {
            control_id: None,
            channel: Some("posos-push".to_string()),
            limit: 0,
        })
        .expect("journal");
    let statuses: Vec<&str> = pushes.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(
        statuses,
        vec!["processed", "processed", "rejected", "processed"],
        "{pushes:?}"
    );
}
