//! python-hl7 as an independent peer. As a sender: its `mllp_send` sends every synthetic PAM FR
//! sample in `samples/adt/` to the daemon and must get AA for each, after which `ordobridge
//! journal` lists them as accepted. As the README's demo EHR (`tests/peers/python_hl7_server.py`):
//! it decodes each message by MSH-18 and answers the shipped mapping's Latin-1 ORM^O01 with AA.

mod common;

use std::process::Command;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use common::{Daemon, ordobridge, python_peers, repo_root, write_config};

#[test]
fn python_hl7_mllp_send_gets_aa_for_every_sample_and_journal_lists_them() {
    let python = python_peers();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "");
    let daemon = Daemon::start(&config);
    let addr = daemon.addr("adt-in");

    let mut samples: Vec<_> = std::fs::read_dir(repo_root().join("samples/adt"))
        .expect("samples/adt")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hl7"))
        .collect();
    samples.sort();
    assert!(
        samples.len() >= 6,
        "expected the PAM FR samples, found {samples:?}"
    );

    let mut control_ids = Vec::new();
    for sample in &samples {
        let text = std::fs::read(sample).expect("read sample");
        let first_line = text.split(|b| *b == b'\n').next().unwrap_or_default();
        let control_id = String::from_utf8_lossy(first_line)
            .split('|')
            .nth(9)
            .unwrap_or_default()
            .to_string();
        // `python -m hl7.client` is python-hl7's `mllp_send` entry point.
        let output = Command::new(&python)
            .args(["-m", "hl7.client", "--loose", "--file"])
            .arg(sample)
            .args(["--port", &addr.port().to_string(), "127.0.0.1"])
            .output()
            .expect("run mllp_send");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "mllp_send failed on {}: {}\n{}",
            sample.display(),
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        let expected = format!("MSA|AA|{control_id}");
        assert!(
            stdout.contains(&expected),
            "{}: expected `{expected}` in the answer, got:\n{stdout}\ndaemon log:\n{}",
            sample.display(),
            daemon.log_text()
        );
        control_ids.push(control_id);
    }

    // The journal lists a message a moment after its ACK (the intake log copies it behind):
    // list until every one is there, or the patience runs out and the check below says which.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let listing = loop {
        let listing = ordobridge(&["journal", "--config", config.to_str().expect("utf-8 path")]);
        let complete = control_ids.iter().all(|id| listing.contains(id.as_str()));
        if complete || std::time::Instant::now() > deadline {
            break listing;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for control_id in &control_ids {
        let line = listing
            .lines()
            .find(|l| l.contains(control_id.as_str()))
            .unwrap_or_else(|| panic!("`{control_id}` missing from the journal:\n{listing}"));
        assert!(
            line.contains("accepted") || line.contains("processed"),
            "not accepted: {line}"
        );
    }
    drop(daemon);
}

/// Latin-1 bytes of `text` (every character must be below U+0100).
fn latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("a Latin-1 character"))
        .collect()
}

/// Latin-9 (ISO 8859-15) bytes of `text`.
fn latin9(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::ISO_8859_15.encode(text);
    assert!(!unmappable, "not Latin-9: {text}");
    bytes.into_owned()
}

fn utf8(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// An ORM^O01 with `msh18` and one NTE carrying `note`, control ID `control`.
fn orm(control: &str, msh18: &str, note: &str) -> String {
    format!(
        "MSH|^~\\&|ORDOBRIDGE|POSOS|DPI|CH_EXEMPLE|20260105110000||ORM^O01^ORM_O01|{control}|P|2.5||||||{msh18}\r\
         PID|1||100001^^^CH_EXEMPLE^PI\rNTE|1|P|{note}\r"
    )
}

/// Sends one frame on a fresh connection and returns the ACK's MSA segment.
async fn msa(peer: std::net::SocketAddr, frame: &[u8]) -> String {
    let ack = common::send_adt(peer, frame).await;
    ack.split('\r')
        .find(|s| s.starts_with("MSA|"))
        .unwrap_or_else(|| panic!("no MSA in the ACK: {ack:?}"))
        .to_owned()
}

/// The README's demo EHR (`tests/peers/python_hl7_server.py`) decodes each message by its
/// MSH-18: the ORM^O01 the shipped `orm-o01` mapping writes (8859/1, `comprimé`) gets AA, as do
/// Latin-9, UTF-8 and empty-MSH-18 messages; an unknown charset or bytes its MSH-18 does not
/// allow get AR with the reason; a frame that is not HL7 ends only its own connection. The
/// peer serves on after each.
#[tokio::test]
async fn python_hl7_server_decodes_by_msh18_and_keeps_serving() {
    let mut peer = tokio::task::spawn_blocking(|| {
        common::peer::PythonPeer::start("python_hl7_server.py", &["0"])
    })
    .await
    .expect("start the peer");

    // The message the daemon delivers to the demo EHR, on the wire as its MSH-18 says: Latin-1.
    let root = repo_root();
    let mapping = root.join("mappings/orm-o01.toml");
    let bundle = root.join("samples/posos/two-drugs-prednisone-taper.json");
    let shown = ordobridge(&[
        "transform",
        "--mapping",
        mapping.to_str().expect("utf-8 path"),
        "--bundle",
        bundle.to_str().expect("utf-8 path"),
        "--control-id",
        "DEMO-ORM-1",
        "--now",
        "2026-01-05T10:00:00Z",
    ]);
    let shipped = shown.trim_end().replace('\n', "\r") + "\r";
    assert!(
        shipped.starts_with("MSH|")
            && shipped.contains("|8859/1\r")
            && shipped.contains("comprimé"),
        "the shipped orm-o01 should write 8859/1 with accents:\n{shown}"
    );
    assert_eq!(msa(peer.addr, &latin1(&shipped)).await, "MSA|AA|DEMO-ORM-1");

    let utf8_as_latin1 = latin1(&orm("UTF8-BAD", "UNICODE UTF-8", "comprimé"));
    let offset = utf8_as_latin1
        .iter()
        .position(|b| *b == 0xE9)
        .expect("the é");
    let cases: [(&str, Vec<u8>, String); 8] = [
        (
            "8859/1",
            latin1(&orm("L1", "8859/1", "comprimé sécable")),
            "MSA|AA|L1".into(),
        ),
        (
            "8859/15",
            latin9(&orm("L9", "8859/15", "5 € la boîte")),
            "MSA|AA|L9".into(),
        ),
        (
            "utf-8",
            utf8(&orm("U8", "UNICODE UTF-8", "comprimé")),
            "MSA|AA|U8".into(),
        ),
        (
            "repeated",
            latin1(&orm("REP", "8859/1~UNICODE UTF-8", "é")),
            "MSA|AA|REP".into(),
        ),
        (
            "empty ascii",
            utf8(&orm("E1", "", "comprime")),
            "MSA|AA|E1".into(),
        ),
        (
            "empty latin-1",
            latin1(&orm("E2", "", "comprimé")),
            "MSA|AA|E2".into(),
        ),
        (
            "unknown",
            latin1(&orm("EB", "EBCDIC", "x")),
            "MSA|AR|EB|unsupported MSH-18 `EBCDIC`: expected `ASCII`, `8859/1`, `8859/15`, \
             `UNICODE UTF-8` or empty"
                .into(),
        ),
        (
            "utf-8 lie",
            utf8_as_latin1,
            format!(
                "MSA|AR|UTF8-BAD|MSH-18 is `UNICODE UTF-8` but byte 0xE9 at offset {offset} is \
                 not utf-8"
            ),
        ),
    ];
    for (name, frame, expected) in cases {
        assert_eq!(msa(peer.addr, &frame).await, expected, "case `{name}`");
    }

    // Not HL7 at all: the peer closes that connection (EOF, no answer)…
    let mut stream = tokio::net::TcpStream::connect(peer.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"\x0bnot an HL7 message\x1c\r")
        .await
        .expect("write");
    let mut rest = Vec::new();
    tokio::time::timeout(common::PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("the peer closes the connection")
        .expect("read");
    assert_eq!(rest, b"", "no answer to a frame that is not HL7");

    // …and still serves the next one.
    assert_eq!(msa(peer.addr, &latin1(&shipped)).await, "MSA|AA|DEMO-ORM-1");
    assert!(peer.running(), "the peer process is still running");
}
