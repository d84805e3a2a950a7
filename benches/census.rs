//! Census throughput: how fast the daemon's census processor (the code `ordobridge run` starts)
//! applies ADT messages already committed in the journal: parse, interpret (PAM FR), apply to
//! the census in SQLite and mark each journal row processed.
//!
//!     cargo bench --bench census [-- PATIENTS]
//!
//! Every synthetic patient goes through A01 (admission), A02, A02 (transfers) and A03
//! (discharge) with ZBE movement ids, RPPS doctors and a validated INS: 4 ADT per patient,
//! 5,000 patients (20,000 ADT) by default. The journal is filled first; the clock runs from
//! the processor's start to the moment no accepted row is left. Also printed: the CPU time
//! of the store's writer thread and of the whole process over that span.

use std::time::{Duration, Instant};

use ordobridge::census::CensusSettings;
use ordobridge::store::{InboundRecord, PatientKey, RecordStatus, Store, StoreOptions};
use tokio_util::sync::CancellationToken;

const AUTH: &str = "CH_EXEMPLE&1.2.250.1.999.1&ISO";
const RPPS: &str = "ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS";
const FAMILY: &[&str] = &["MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD"];
const GIVEN: &[&str] = &["CLAIRE", "LOUIS", "JEANNE", "PAUL", "ANNE", "HUGO", "MARIE"];

/// Movement `step` (0 = A01, 1 and 2 = A02, 3 = A03) of synthetic patient `p`.
fn adt(p: usize, step: usize) -> Vec<u8> {
    let trigger = ["A01", "A02", "A02", "A03"][step];
    let ipp = 500_000 + p;
    let nda = 900_000 + p;
    let ins = 275_046_912_300_000u64 + p as u64;
    let family = FAMILY[p % FAMILY.len()];
    let given = GIVEN[p % GIVEN.len()];
    let at = format!("202611{:02}08{:02}00", 10 + step, p % 60);
    let unit = format!("U{}{:02}", step, p % 20);
    let doctor = format!("100034567{:02}^LEBLANC^PIERRE^^^DR^^^{RPPS}", p % 100);
    let discharge = if step == 3 { at.as_str() } else { "" };
    let admit = format!("2026111008{:02}00", p % 60);
    let sex = if p.is_multiple_of(2) { "F" } else { "M" };
    format!(
        "MSH|^~\\&|DPI_SYNTH|CH_EXEMPLE|ORDOBRIDGE|POSOS|{at}||ADT^{trigger}^ADT_A01|B{p:06}-{step}|P|2.5|||||FRA|UNICODE UTF-8|||2.11^IHE_FR\r\
EVN||{at}||||{at}\r\
PID|1||{ipp}^^^{AUTH}^PI~{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS||{family}^{given}^^^^^L~{family}^{given}^^^^^D||19{:02}0{}1{}|{sex}|||||||||||{nda}^^^{AUTH}^AN||||||||||||||VALI\r\
PV1|1|I|{unit}^101^1^CH_EXEMPLE||||{doctor}|||MED|||||||||{nda}^^^{AUTH}^VN|||||||||||||||||||||||||{admit}|{discharge}\r\
ZBE|MVT{p:06}-{step}^CH_EXEMPLE|{at}||INSERT|N||^^^^^^UF^^^{unit}\r",
        40 + p % 50,
        1 + p % 9,
        p % 10,
    )
    .into_bytes()
}

/// CPU seconds (user + system) of this process's threads, or only those named `thread`.
fn cpu_seconds(thread: Option<&str>) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        if let Some(name) = thread {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After `(comm)`: utime and stime are the 12th and 13th fields.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for n in [11, 12] {
            ticks += fields
                .get(n)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    // USER_HZ is 100 on every Linux we ship for.
    ticks as f64 / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; the first number given is the patient count.
    let patients = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(patients))
}

async fn run(patients: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("census.db"), StoreOptions::default())?;
    // Movement i of every patient before movement i + 1 of any, as a busy feed interleaves.
    let mut records = Vec::with_capacity(patients * 4);
    for step in 0..4 {
        for p in 0..patients {
            records.push(InboundRecord {
                channel: "adt".to_owned(),
                received_at: jiff::Timestamp::now(),
                peer: "127.0.0.1:5000".to_owned(),
                sender: "DPI_SYNTH".to_owned(),
                message_type: "ADT".to_owned(),
                control_id: format!("B{p:06}-{step}"),
                raw: adt(p, step).into(),
                status: RecordStatus::Accepted,
            });
        }
    }
    let count = records.len();
    let mut last_id = 0;
    let mut chunk = Vec::with_capacity(500);
    for (i, record) in records.into_iter().enumerate() {
        chunk.push(record);
        if chunk.len() == 500 || i + 1 == count {
            let outcomes = store.journal_many(std::mem::take(&mut chunk)).await?;
            last_id = outcomes.last().map_or(last_id, |o| o.id());
        }
    }

    let shutdown = CancellationToken::new();
    let commits_before = store.stats().commits;
    let writer_before = cpu_seconds(Some("store-writer"));
    let process_before = cpu_seconds(None);
    let started = Instant::now();
    let processor = tokio::spawn(ordobridge::engine::run_census_processor(
        store.clone(),
        CensusSettings {
            ipp_authority: Some("CH_EXEMPLE".to_owned()),
        },
        shutdown.clone(),
    ));
    // Rows are applied in journal order: the last one processed means all are.
    loop {
        let entry = store.journal_entry_async(last_id).await?;
        if entry.is_some_and(|e| e.summary.status == "processed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let writer = cpu_seconds(Some("store-writer")) - writer_before;
    let process = cpu_seconds(None) - process_before;
    let commits = store.stats().commits - commits_before;
    shutdown.cancel();
    processor.await?;

    // The census must hold what the feed said, or the figure means nothing.
    let last = store
        .census_patient(&PatientKey::Ipp(format!("{}", 500_000 + patients - 1)))?
        .ok_or("the last patient is not in the census")?;
    let discharged = last
        .current
        .as_ref()
        .is_some_and(|e| e.discharge_at.is_some());
    if last.movements.len() != 4 || !discharged || !last.anomalies.is_empty() {
        return Err(format!("the last patient is not as the feed says: {last:?}").into());
    }
    let rate = count as f64 / elapsed.as_secs_f64();
    println!(
        "census processor: {count} ADT ({patients} patients × A01, A02, A02, A03) in {elapsed:.2?}: \
         {rate:.0} ADT/s wall; CPU: writer thread {writer:.2} s ({:.0} ADT per writer CPU second), \
         whole process {process:.2} s; {commits} commits",
        count as f64 / writer
    );
    store.close().await;
    Ok(())
}
