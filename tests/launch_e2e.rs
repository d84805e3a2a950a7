//! Issue 3 end to end over real sockets: an ADT A01 over MLLP feeds the census, then the EHR
//! button's `GET /launch/scan?ipp=…&rpps=…` answers 302 to the built-in Posos simulator, whose
//! Scan & Go page names the patient and the user: the daemon authenticated with a real signed
//! assertion, got an identity token and sent the scan-token request the simulator accepted.

mod common;

use common::{A01_SAMPLE, LAUNCH_QUERY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adt_then_launch_redirects_to_a_simulator_page_naming_the_patient() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = common::base_toml() + &common::simulator_toml("");
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    let http_addr = engine.addr("http");

    let ack = common::send_adt(engine.addr("adt-in"), &common::sample(A01_SAMPLE)).await;
    assert!(ack.contains("MSA|AA|SYN0002"));

    // The census is fed just behind the ACK: poll until the patient is known.
    let location = common::launch_until_redirect(http_addr, LAUNCH_QUERY).await;
    assert!(
        location.starts_with(&format!("http://{http_addr}/simulator/scan/")),
        "{location}"
    );
    let http_client = common::no_redirect_client();
    let page = http_client
        .get(&location)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("100001"),
        "the page names the patient (patientId = IPP): {page}"
    );
    assert!(
        page.contains("Leblanc") || page.contains("LEBLANC"),
        "and the user: {page}"
    );
    assert!(page.contains("10003456789"), "and the user's RPPS: {page}");

    // An unknown patient gets a clear page, not a launch.
    let unknown = http_client
        .get(format!(
            "http://{http_addr}/launch/scan?ipp=999999&rpps=10003456789&first_name=A&last_name=B"
        ))
        .send()
        .await
        .expect("launch");
    assert_eq!(unknown.status(), 404);
    assert!(unknown.headers().contains_key("x-correlation-id"));

    engine.stop().await;
}

/// Issue 10, read your own writes: the EHR sends the ADT, gets its ACK, and the clinician
/// clicks at once. The census applies the ADT a moment behind the ACK; the launch waits for it
/// (bounded) instead of answering "unknown patient". Each of 20 patients is launched exactly
/// once, right after its ACK, with no retry.
#[rstest::rstest]
#[case::journal_committed_before_the_ack("intake_log = false\n")]
// The ACK waits for the intake log only: the journal row follows it, then the census.
#[case::through_the_intake_log("intake_log = true\n")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_right_after_the_adt_ack_finds_the_patient(#[case] store_lines: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = common::base_toml().replacen(
        "path = \"data/ob.db\"\n",
        &format!("path = \"data/ob.db\"\n{store_lines}"),
        1,
    ) + &common::simulator_toml("");
    assert!(text.contains(store_lines), "{text}");
    let engine = common::start_engine(common::config(dir.path(), &text)).await;
    let http_addr = engine.addr("http");
    let client = common::no_redirect_client();
    let a01 = String::from_utf8(common::sample(A01_SAMPLE)).expect("utf-8");
    for i in 0..20 {
        let ipp = format!("77{i:04}");
        let message = a01
            .replace("100001^^^CH_EXEMPLE", &format!("{ipp}^^^CH_EXEMPLE"))
            .replace("SYN0002", &format!("RYW{i:04}"))
            // Each patient its own stay (NDA), INS and movement, as in life.
            .replace("900001^^^CH_EXEMPLE", &format!("97{i:04}^^^CH_EXEMPLE"))
            .replace("275046912345678", &format!("2750469123{i:05}"))
            .replace("MVT0001^", &format!("MVT9{i:03}^"));
        assert!(message.contains(&ipp), "the sample's IPP was replaced");
        let ack = common::send_adt(engine.addr("adt-in"), message.as_bytes()).await;
        assert!(ack.contains("MSA|AA|"), "{ack}");
        let launch = client
            .get(format!(
                "http://{http_addr}/launch/scan?ipp={ipp}&rpps=10003456789&first_name=Pierre&last_name=Leblanc"
            ))
            .send()
            .await
            .expect("launch");
        assert_eq!(
            launch.status(),
            302,
            "patient {ipp}, launched once right after its ACK: {:?}",
            launch.text().await
        );
    }
    engine.stop().await;
}
