//! The shipped unit `systemd/ordobridge.service`, checked by systemd itself:
//! `systemd-analyze verify` finds no problem (unknown keys, bad values, missing binary) and
//! `systemd-analyze security --offline=yes` rates its exposure 2.0 or less.
//!
//! The unit is copied into a temp folder with its `/usr/local/bin/ordobridge` paths pointed
//! at the binary built for this test, so `verify` can check that `ExecStart=` is executable.
//! Skipped, with the reason printed, only where `systemd-analyze` is not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Exposure above this fails the test (systemd rates 0.0 best … 10.0 worst).
const MAX_EXPOSURE: f64 = 2.0;

fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The shipped unit in `dir`, its binary paths pointed at the test's build.
fn unit_copy(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/ordobridge.service");
    let text = std::fs::read_to_string(&shipped).expect("read the shipped unit");
    assert!(
        text.contains("/usr/local/bin/ordobridge "),
        "the unit runs /usr/local/bin/ordobridge"
    );
    let text = text.replace(
        "/usr/local/bin/ordobridge",
        env!("CARGO_BIN_EXE_ordobridge"),
    );
    let copy = dir.join("ordobridge.service");
    std::fs::write(&copy, text).expect("write the unit copy");
    copy
}

fn run(analyze: &Path, args: &[&str], dir: &Path) -> Output {
    Command::new(analyze)
        .args(args)
        .current_dir(dir)
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_COLORS", "0")
        .output()
        .expect("run systemd-analyze")
}

#[test]
fn the_unit_verifies_cleanly() {
    let Some(analyze) = systemd_analyze() else {
        println!("skipped: systemd-analyze is not installed (Debian package `systemd`)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = unit_copy(dir.path());
    let out = run(
        &analyze,
        &["verify", unit.to_str().expect("utf-8 path")],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Warnings about the unit (unknown keys, unparsable values) leave the exit status 0:
    // any line naming our file is a failure.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ordobridge.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

/// The overall exposure from `systemd-analyze security` output.
fn exposure(stdout: &str) -> Option<f64> {
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let (_, rest) = line.split_once("ordobridge.service:")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn the_unit_exposure_is_at_most_two() {
    let Some(analyze) = systemd_analyze() else {
        println!("skipped: systemd-analyze is not installed (Debian package `systemd`)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = unit_copy(dir.path());
    let out = run(
        &analyze,
        &[
            "security",
            "--offline=yes",
            "--no-pager",
            unit.to_str().expect("utf-8 path"),
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let score = exposure(&stdout).unwrap_or_else(|| {
        panic!(
            "no exposure level in the output ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{stdout}"
    );
}

#[test]
fn ok_exposure_is_parsed() {
    assert_eq!(
        exposure("\n→ Overall exposure level for ordobridge.service: 1.2 OK 🙂\n"),
        Some(1.2)
    );
    assert_eq!(exposure("nothing here"), None);
}
