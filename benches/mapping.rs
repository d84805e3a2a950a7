//! Mapping throughput: what the FHIR push endpoint does per bundle, by stage and in total, on
//! the four-step prednisone taper sample: read the bundle, build the context with
//! `mapping::PushContext` as `src/engine/push.rs` does (the prescription read in place, the
//! census of a known patient as JSON, the message's control id and time), and apply the
//! shipped mappings.
//!
//! `cargo bench --bench mapping`; the `total/orm-o01` figure (one element = one bundle) is the
//! one the README reports.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ordobridge::mapping::{Mapping, PushContext};
use ordobridge::posos::bundle::{Prescription, read_bundle};
use serde_json::{Value, json};

const SAMPLE: &str = "samples/posos/two-drugs-prednisone-taper.json";
const NOW: &str = "2026-01-05T10:05:00+01:00";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mapping(name: &str) -> Mapping {
    ordobridge::config::read_mapping(&root().join(format!("mappings/{name}.toml"))).unwrap()
}

/// The census part of the context for a patient the census knows, with the keys
/// `census_context` in `src/engine/push.rs` writes (values as an ADT feed would give them).
fn census(prescription: &Prescription) -> Value {
    json!({
        "known": true,
        "ipp": prescription.patient.partner_id,
        "ins": "1840275123456",
        "family": "DURAND",
        "given": "Claire",
        "birth_family": "MARTIN",
        "birth_date": "19840215",
        "sex": "F",
        "nda": "2026000123",
        "unit": "CARDIO",
        "attending": {"rpps": "10001234567", "family": "LEROY", "given": "Paul"},
    })
}

/// The context push builds for one route: `PushContext`, the function push uses.
fn context<'a, 'p>(
    prescription: &'p Prescription,
    control_id: &str,
    slot: &'a mut Option<PushContext<'p>>,
) -> &'a PushContext<'p> {
    slot.insert(PushContext::new(prescription, census(prescription), NOW).unwrap())
        .for_message(control_id)
}

/// The context as push built it before `PushContext`: `to_value` of the prescription, then
/// `json!` serializing that `Value` a second time (it takes its arguments by reference).
fn context_json_literal(prescription: &Prescription, control_id: &str) -> Value {
    let prescription_json = serde_json::to_value(prescription).unwrap();
    let census_json = census(prescription);
    json!({
        "prescription": prescription_json,
        "census": census_json,
        "message": {"control_id": control_id, "now": NOW},
    })
}

/// `MAPPING_ITERS=n [MAPPING_STAGE=read|context|context_json_literal|apply|total]`: runs one
/// stage (default `total`) n times on `orm-o01` without criterion and exits, for
/// `valgrind --tool=callgrind` (instructions per bundle = the difference between two counts
/// divided by the difference of n).
fn fixed_iterations(body: &[u8], orm: &Mapping) -> bool {
    let Some(n) = std::env::var("MAPPING_ITERS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return false;
    };
    let stage = std::env::var("MAPPING_STAGE").unwrap_or_else(|_| "total".into());
    let prescription = read_bundle(body).unwrap();
    let mut slot = None;
    let ctx = context(&prescription, "OB1-1", &mut slot).clone();
    for _ in 0..n {
        match stage.as_str() {
            "read" => drop(black_box(read_bundle(black_box(body)).unwrap())),
            "context" => {
                let mut slot = None;
                black_box(context(black_box(&prescription), "OB1-1", &mut slot));
            }
            "context_json_literal" => drop(black_box(context_json_literal(
                black_box(&prescription),
                "OB1-1",
            ))),
            "apply" => drop(black_box(orm.apply(black_box(&ctx)).unwrap())),
            _ => {
                let p = read_bundle(black_box(body)).unwrap();
                let mut slot = None;
                drop(black_box(
                    orm.apply(context(&p, "OB1-1", &mut slot)).unwrap(),
                ));
            }
        }
    }
    true
}

fn bench(c: &mut Criterion) {
    let body = std::fs::read(root().join(SAMPLE)).unwrap();
    let prescription = read_bundle(&body).unwrap();
    let mut slot = None;
    let ctx = context(&prescription, "OB1-1", &mut slot).clone();
    if fixed_iterations(&body, &mapping("orm-o01")) {
        return;
    }
    let mappings: Vec<(&str, Mapping)> = ["orm-o01", "omp-o09", "oru-r01-pdf", "hprim-oru"]
        .into_iter()
        .map(|name| (name, mapping(name)))
        .collect();
    for (name, m) in &mappings {
        assert!(!m.apply(&ctx).unwrap().is_empty(), "{name}");
    }

    let mut stages = c.benchmark_group("stage");
    stages.throughput(Throughput::Elements(1));
    stages.bench_function("read_bundle", |b| {
        b.iter(|| read_bundle(black_box(&body)).unwrap())
    });
    stages.bench_function("context", |b| {
        b.iter(|| {
            let mut slot = None;
            context(black_box(&prescription), "OB1-1", &mut slot);
            slot
        })
    });
    stages.bench_function("context_json_literal", |b| {
        b.iter(|| context_json_literal(black_box(&prescription), "OB1-1"))
    });
    for (name, m) in &mappings {
        stages.bench_function(format!("apply/{name}"), |b| {
            b.iter(|| m.apply(black_box(&ctx)).unwrap())
        });
    }
    stages.finish();

    let mut total = c.benchmark_group("total");
    total.throughput(Throughput::Elements(1));
    for (name, m) in mappings
        .iter()
        .filter(|(n, _)| matches!(*n, "orm-o01" | "omp-o09"))
    {
        total.bench_function(*name, |b| {
            b.iter(|| {
                let p = read_bundle(black_box(&body)).unwrap();
                let mut slot = None;
                m.apply(context(&p, "OB1-1", &mut slot)).unwrap()
            })
        });
    }
    let orm = &mappings[0].1;
    total.bench_function("orm-o01_context_json_literal", |b| {
        b.iter(|| {
            let p = read_bundle(black_box(&body)).unwrap();
            let ctx = context_json_literal(&p, "OB1-1");
            orm.apply(&ctx).unwrap()
        })
    });
    total.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
