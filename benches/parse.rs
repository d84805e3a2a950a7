//! Parse throughput on a synthetic French PAM-style ADT^A01 corpus: parse each message and read
//! PID-3.1 (IPP) and PV1-19 (NDA), for ordobridge and the two HL7 crates we compare against.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ordobridge::hl7::{Message, Path};

const FIRST: [&str; 8] = [
    "Jean",
    "Marie",
    "Élodie",
    "François",
    "Anaïs",
    "Luc",
    "Chloé",
    "Noël",
];
const LAST: [&str; 8] = [
    "DUPONT", "MARTIN", "LEFÈVRE", "BERNARD", "PETIT", "GARÇON", "MOREAU", "DURAND",
];
const UNITS: [&str; 4] = ["CARDIO", "NEPHRO", "URG", "PNEUMO"];

/// A small deterministic generator so the corpus is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }
}

/// One message plus the values the benchmark must read back.
struct Sample {
    text: String,
    ipp: String,
    nda: String,
}

fn corpus(n: usize) -> Vec<Sample> {
    let mut rng = Lcg(42);
    (0..n)
        .map(|i| {
            let ipp = format!("{}", 100000 + rng.next() % 900000);
            let nda = format!("{}", 2024000000 + rng.next() % 999999);
            let ins = format!("{}{:012}", 1 + rng.next() % 2, rng.next() % 1_000_000_000_000);
            let first = rng.pick(&FIRST);
            let last = rng.pick(&LAST);
            let unit = rng.pick(&UNITS);
            let rpps = format!("10{:09}", rng.next() % 1_000_000_000);
            let ts = format!("202401{:02}{:02}{:02}00", 1 + i % 28, i % 24, i % 60);
            let nda_field = format!("{nda}^^^CHU-LYON&1.2.250.1.71.4.2.2&ISO^VN");
            let text = format!(
                "MSH|^~\\&|DPI-SIH|CHU-LYON|ORDOBRIDGE|POSOS|{ts}||ADT^A01^ADT_A01|MSG{i:08}|P|2.5|||AL|NE||UNICODE UTF-8|FRA|UNICODE UTF-8|||2.11^IHE_FR^1.3.6.1.4.12559.11.20.1.10^ISO\r\
EVN||{ts}|||{rpps}^SMITH^John^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS\r\
PID|1||{ipp}^^^CHU-LYON&1.2.250.1.71.4.2.2&ISO^PI~{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||{last}^{first}^{first} Paul^^^^L~{last}^{first}^^^^^D||19{:02}0{}1{}|{}|||12 rue de la République^^Lyon^^69002^FRA^H||0612345678^PRN^CP~^NET^Internet^patient{i}@example.fr|||||{nda_field}|||||||||||N||VALI\r\
PD1||||{rpps}^MEDECIN^Traitant^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS\r\
PV1|1|I|{unit}^{}^1^CHU-LYON||||{rpps}^SMITH^John^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS||||||||||||{nda_field}|||||||||||||||||||||||||{ts}\r\
ZBE|MVT{i}^CHU-LYON^1.2.250.1.71.4.2.2^ISO|{ts}||INSERT|N||{unit}^^^^^^UF^^^{unit}|\r\
ZFV|69002^CHU-LYON|{ts}|||||\r",
                rng.next() % 100,
                1 + rng.next() % 9,
                rng.next() % 10,
                if rng.next().is_multiple_of(2) { "M" } else { "F" },
                100 + rng.next() % 400,
            );
            Sample { text, ipp, nda }
        })
        .collect()
}

fn bench_parse(c: &mut Criterion) {
    let samples = corpus(1000);
    let bytes: usize = samples.iter().map(|s| s.text.len()).sum();
    eprintln!(
        "corpus: {} messages, {} bytes, {} bytes/message",
        samples.len(),
        bytes,
        bytes / samples.len()
    );

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(bytes as u64));

    let pid_3_1: Path = "PID-3.1".parse().unwrap();
    let pv1_19: Path = "PV1-19".parse().unwrap();
    let nda_fields: Vec<String> = samples
        .iter()
        .map(|s| format!("{}^^^CHU-LYON&1.2.250.1.71.4.2.2&ISO^VN", s.nda))
        .collect();

    group.bench_function("ordobridge", |b| {
        b.iter(|| {
            for (s, nda) in samples.iter().zip(&nda_fields) {
                let m = Message::parse(black_box(s.text.as_bytes())).unwrap();
                assert_eq!(m.get(&pid_3_1), Some(s.ipp.as_bytes()));
                assert_eq!(m.get(&pv1_19), Some(nda.as_bytes()));
            }
        })
    });

    group.bench_function("rust-hl7", |b| {
        b.iter(|| {
            for (s, nda) in samples.iter().zip(&nda_fields) {
                let m = rusthl7::message::Message::try_from(black_box(s.text.as_str())).unwrap();
                assert_eq!(m.query("PID.F3.R1.C1"), s.ipp);
                assert_eq!(m.query("PV1.F19"), nda);
            }
        })
    });

    group.bench_function("hl7-parser", |b| {
        b.iter(|| {
            for (s, nda) in samples.iter().zip(&nda_fields) {
                let m = hl7_parser::Message::parse(black_box(s.text.as_str())).unwrap();
                assert_eq!(m.query("PID.3.1").unwrap().raw_value(), s.ipp);
                assert_eq!(m.query("PV1.19").unwrap().raw_value(), nda);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
