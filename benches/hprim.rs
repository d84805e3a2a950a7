//! HPRIM Santé parse throughput on a synthetic laboratory-result corpus (~2 KB messages, 20 results each in
//! ISO-8859-1, CR LF, some `A` continuations): parse each message, read P.3 (IPP) and the
//! decoded value (OBX.6) of every `OBX` record.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ordobridge::hl7::Charset;
use ordobridge::hprim::{HprimBuilder, HprimPath, Message};

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
/// Code, label, unit, range.
const TESTS: [(&str, &str, &str, &str); 12] = [
    ("GLY", "Glycémie à jeun", "mmol/l", "3.9-5.8"),
    ("CREA", "Créatininémie", "µmol/l", "45-90"),
    ("UREE", "Urée sanguine", "mmol/l", "2.5-7.5"),
    ("NA", "Sodium", "mmol/l", "136-145"),
    ("K", "Potassium", "mmol/l", "3.5-5.1"),
    ("CL", "Chlorures", "mmol/l", "98-107"),
    ("HB", "Hémoglobine", "g/dl", "12.0-16.0"),
    ("HT", "Hématocrite", "%", "35-48"),
    ("GB", "Leucocytes", "G/l", "4.0-10.0"),
    ("PLQ", "Plaquettes", "G/l", "150-400"),
    ("CRP", "Protéine C réactive", "mg/l", "0-5"),
    ("TSH", "Thyréostimuline", "mUI/l", "0.27-4.20"),
];

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
    bytes: Vec<u8>,
    ipp: String,
    values: Vec<String>,
}

fn corpus(n: usize) -> Vec<Sample> {
    let mut rng = Lcg(7);
    (0..n)
        .map(|i| {
            let ipp = format!("{}", 100000 + rng.next() % 900000);
            let ts = format!("202401{:02}{:02}{:02}", 1 + i % 28, i % 24, i % 60);
            let mut b = HprimBuilder::new();
            b.record("H")
                .set(3, &format!("RES{i:05}.HPR"))
                .set_components(5, &["LAB01", "Laboratoire de Biologie Médicale"])
                .set(7, "ORU")
                .set_components(10, &["CHU", "Centre Hospitalier Universitaire"])
                .set(12, "P")
                .set_components(13, &["H2.2", "C"])
                .set(14, &ts);
            b.record("P")
                .set(2, "1")
                .set(3, &ipp)
                .set(4, &format!("L{}", rng.next() % 1_000_000))
                .set(5, &format!("{}", 2024000000 + rng.next() % 999999))
                .set_components(6, &[rng.pick(&LAST), rng.pick(&FIRST)])
                .set(
                    8,
                    &format!(
                        "19{:02}0{}1{}",
                        rng.next() % 100,
                        1 + rng.next() % 9,
                        rng.next() % 10
                    ),
                )
                .set(
                    9,
                    if rng.next().is_multiple_of(2) {
                        "M"
                    } else {
                        "F"
                    },
                )
                .set_components(11, &["12 rue de la République", "", "Lyon", "", "69002"]);
            let obr = b
                .record("OBR")
                .set(2, "1")
                .set_components(3, &[&format!("ECH{i}"), ""]);
            for (code, label, _, _) in TESTS.iter().take(6) {
                obr.add_repetition(5, &[code, label, "L"]);
            }
            obr.set(8, &ts)
                .set(12, "N")
                .set(15, &ts)
                .set_components(
                    17,
                    &[
                        "PRES",
                        "DR MARTIN Jean",
                        "L",
                        "CHU",
                        "Centre Hospitalier Universitaire",
                        "L",
                    ],
                )
                .set(18, "0478000000")
                .set(26, "F");
            let mut values = Vec::new();
            for (k, (code, label, unit, range)) in TESTS.iter().cycle().take(20).enumerate() {
                let value = format!("{}.{}", 1 + rng.next() % 200, rng.next() % 10);
                b.record("OBX")
                    .set(2, &(k + 1).to_string())
                    .set(3, "NM")
                    .set_components(4, &[code, label, "L"])
                    .set(6, &value)
                    .set(7, unit)
                    .set(8, range)
                    .set(9, "N")
                    .set(12, "F")
                    .set(15, &ts);
                values.push(value);
                if k % 4 == 3 {
                    b.record("C")
                        .set(2, "1")
                        .set(3, "L")
                        .set(4, "Résultat contrôlé, prélèvement reçu à 8h30");
                }
            }
            b.record("L").set(2, "1").set(4, "1");
            Sample {
                bytes: b.to_bytes().unwrap(),
                ipp,
                values,
            }
        })
        .collect()
}

fn bench_parse(c: &mut Criterion) {
    let samples = corpus(1000);
    let bytes: usize = samples.iter().map(|s| s.bytes.len()).sum();
    eprintln!(
        "corpus: {} messages, {} bytes, {} bytes/message",
        samples.len(),
        bytes,
        bytes / samples.len()
    );

    let mut group = c.benchmark_group("hprim");
    group.throughput(Throughput::Bytes(bytes as u64));
    let p3: HprimPath = "P.3".parse().unwrap();

    group.bench_function("parse+P.3+OBX.6", |b| {
        b.iter(|| {
            for s in &samples {
                let m = Message::parse(black_box(&s.bytes), Some(Charset::Latin1)).unwrap();
                assert_eq!(m.get(&p3), Some(s.ipp.as_bytes()));
                let mut n = 0;
                for r in m.records_of("OBX") {
                    let v = r.text(6).unwrap();
                    assert_eq!(v, s.values[n].as_str());
                    n += 1;
                }
                assert_eq!(n, s.values.len());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
