//! Golden tests: every sample Posos bundle in `samples/posos/` through every shipped HL7
//! mapping gives exactly the file in `tests/golden/<mapping>/<sample>.hl7`, and every produced
//! message is accepted by two independent parsers (python-hl7 and hl7apy).
//!
//! After an intended change, regenerate with `UPDATE_GOLDEN=1 cargo test --test golden` and
//! review the diff like code.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{python_peers, repo_root};

/// Mappings whose output is HL7v2 (checked by the Python parsers too).
const HL7_MAPPINGS: &[&str] = &["orm-o01", "omp-o09", "oru-r01-pdf"];
const NOW: &str = "2026-01-05T10:05:00+01:00";

fn samples() -> Vec<PathBuf> {
    let mut samples: Vec<PathBuf> = std::fs::read_dir(repo_root().join("samples/posos"))
        .expect("samples/posos")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 4, "{samples:?}");
    samples
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn every_sample_bundle_gives_its_golden_message_and_python_parsers_accept_it() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut produced = Vec::new();
    let mut mismatches = Vec::new();
    for mapping in HL7_MAPPINGS {
        let mapping_file = repo_root().join(format!("mappings/{mapping}.toml"));
        for sample in samples() {
            let control_id = format!("GOLDEN-{}", stem(&sample));
            let out = ordobridge::tools::transform(&mapping_file, &sample, None, &control_id, NOW)
                .unwrap_or_else(|e| panic!("{e}"));
            let golden = repo_root().join(format!("tests/golden/{mapping}/{}.hl7", stem(&sample)));
            // `[message] when` false: no message, so no golden file either.
            let Some(out) = out else {
                if update {
                    let _ = std::fs::remove_file(&golden);
                }
                assert!(
                    !golden.exists(),
                    "{}: the mapping now writes no message for this bundle (run with UPDATE_GOLDEN=1)",
                    golden.display()
                );
                continue;
            };
            if update {
                std::fs::create_dir_all(golden.parent().expect("folder")).expect("mkdir");
                std::fs::write(&golden, &out).expect("write golden");
            }
            let expected = std::fs::read(&golden)
                .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", golden.display()));
            if expected != out {
                mismatches.push(format!(
                    "{}:\n--- expected\n{}\n--- got\n{}",
                    golden.display(),
                    String::from_utf8_lossy(&expected).replace('\r', "\n"),
                    String::from_utf8_lossy(&out).replace('\r', "\n")
                ));
            }
            produced.push(golden);
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));

    let output = Command::new(python_peers())
        .arg(repo_root().join("tests/peers/parse_check.py"))
        .args(&produced)
        .output()
        .expect("run the Python parsers");
    assert!(
        output.status.success(),
        "an independent parser refused a produced message:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
