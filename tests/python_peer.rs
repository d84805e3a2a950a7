//! The daemon against a real, independent MLLP sender: python-hl7's `mllp_send` sends every
//! synthetic PAM FR sample in `samples/adt/` and must get AA for each, after which
//! `ordobridge journal` lists them as accepted.

mod common;

use std::process::Command;

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

    let listing = ordobridge(&["journal", "--config", config.to_str().expect("utf-8 path")]);
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
