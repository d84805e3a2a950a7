//! The processor: takes accepted journal rows in journal order and applies them to the
//! census, marking each row processed in the same transaction.
//!
//! It runs behind the ACK, never in front of it: a message is acknowledged once journaled,
//! and the census catches up a moment later. A crash between the two leaves the row
//! `accepted`, and the processor picks it up again at start (applying is idempotent per
//! journal row). HL7 ADT messages go through [`crate::census::interpret`]; HPRIM Santé
//! messages feed the census with the identity of their first `P` record.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use crate::census::{self, CensusSettings, CensusUpdate, Patient, PersonName};
use crate::store::{AnomalyKind, PendingCensus, Store, Unprocessed};

/// How many rows one read takes.
const BATCH: usize = 512;
/// How many census updates go to the writer together (one settle, one log pass).
const CHUNK: usize = 32;
/// Chunks sent and not yet answered: 1,024 rows, twice what the writer puts in one
/// transaction, so it has the next ones waiting while this task parses more. The writer
/// decides how many go into a transaction (docs/performance.md; `store::writer::Share`): 8
/// beside a flood's journal inserts, 32 at a time in one transaction of four beside a lone
/// connection's, up to 512 while nothing else is queued, so ACKs still come first.
const WINDOW: usize = 2 * BATCH / CHUNK;
/// A safety net if a wake-up is missed.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// A chunk sent to the writer: its rows (for the logs) and the pending answers.
struct InFlight {
    rows: Vec<Unprocessed>,
    pending: PendingCensus,
}

/// Runs until `shutdown`; `wake` is poked after each journal commit; `census_changed` is
/// poked after each chunk of applied census updates (the releaser of held bundles waits on
/// it).
///
/// Rows are read in journal order and applied in that order. A row whose update fails stays
/// `accepted`: once the chunks in flight are answered, reading starts again from it after a
/// pause (rows after it that were applied meanwhile are `processed` and not read again; the
/// census replays a late movement in time order when it finally lands).
///
/// `phi_channels` are the inbound channels with `log_phi`: a census error quoting message
/// values (PID-3, a birth date) is logged in full at debug for them, at trace for the others;
/// the info line never holds the values.
///
/// `progress` says through which journal id everything is settled (applied, or failed and
/// retried later): a launch for a patient it cannot find waits until the census has caught up
/// with what was journaled before it asked (read your own writes).
pub(super) async fn run_processor(
    store: Store,
    settings: CensusSettings,
    phi_channels: Arc<HashSet<String>>,
    wake: Arc<Notify>,
    census_changed: Arc<Notify>,
    progress: Arc<tokio::sync::watch::Sender<i64>>,
    shutdown: CancellationToken,
) {
    // Highest journal id read so far; rows are read after it.
    let mut after = 0i64;
    let mut ready: VecDeque<Unprocessed> = VecDeque::new();
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if ready.is_empty() && in_flight.len() < WINDOW {
            // Pushed bundles and documents are their endpoints' to process (map, queue, then
            // mark): the census neither marks them nor reads their bodies (up to 20 MiB each).
            match store
                .accepted_after(
                    after,
                    BATCH,
                    [
                        super::push::PUSH_CHANNEL,
                        super::documents::DOCUMENTS_CHANNEL,
                    ],
                )
                .await
            {
                Ok(rows) => {
                    if let Some(last) = rows.last() {
                        after = last.id;
                    }
                    ready.extend(rows);
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the journal; the census will catch up later");
                }
            }
        }
        if !ready.is_empty() && in_flight.len() < WINDOW {
            let take = ready.len().min(CHUNK);
            let rows: Vec<Unprocessed> = ready.drain(..take).collect();
            let work = rows
                .iter()
                .map(|row| (row.id, update_for(row, &settings, &phi_channels)))
                .collect();
            let pending = store.submit_census(work).await;
            in_flight.push_back(InFlight { rows, pending });
            continue;
        }
        let Some(oldest) = in_flight.pop_front() else {
            // Nothing read, nothing in flight: everything up to `after` is settled. Wait for
            // new journal rows.
            progress.send_if_modified(|through| {
                let moved = *through < after;
                *through = (*through).max(after);
                moved
            });
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        };
        let last = oldest.rows.last().map_or(0, |row| row.id);
        let Some(failed) = settle(oldest, &census_changed).await else {
            // Chunks are settled oldest first: everything through `last` is done.
            progress.send_if_modified(|through| {
                let moved = *through < last;
                *through = (*through).max(last);
                moved
            });
            continue;
        };
        // Let the chunks already sent finish, then read again from the failed row.
        for chunk in in_flight.drain(..) {
            settle(chunk, &census_changed).await;
        }
        ready.clear();
        after = failed - 1;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
}

/// Waits for a chunk's answers and logs them; the first journal id that failed, if any.
///
/// Anomalies are logged once per channel and kind for the whole chunk, with how many and the
/// journal ids they span (each row's at debug), and counted on `/metrics`: a replayed day of
/// ADT flags nearly every message, and a warning per message would bury the log.
async fn settle(chunk: InFlight, census_changed: &Notify) -> Option<i64> {
    let mut first_failed = None;
    let mut anomalies = AnomalyRuns::default();
    for (row, outcome) in chunk.rows.iter().zip(chunk.pending.outcomes().await) {
        match outcome {
            Ok(outcome) => {
                for anomaly in &outcome.anomalies {
                    debug!(journal_id = row.id, channel = %row.channel, anomaly = anomaly.kind.as_str(), "census anomaly kept and flagged");
                    anomalies.add(&row.channel, anomaly.kind, row.id);
                }
                debug!(journal_id = row.id, status = ?outcome.status, "census updated");
            }
            Err(e) => {
                warn!(journal_id = row.id, error = %e, "cannot apply the message to the census; will retry");
                first_failed.get_or_insert(row.id);
            }
        }
    }
    for run in &anomalies.runs {
        crate::metrics::count_census_anomalies(run.channel, run.kind.as_str(), run.count);
        warn!(
            channel = %run.channel,
            anomaly = run.kind.as_str(),
            count = run.count,
            first_journal_id = run.first,
            last_journal_id = run.last,
            "census anomalies kept and flagged: see `ordobridge census`"
        );
    }
    census_changed.notify_one();
    first_failed
}

/// A chunk's census anomalies, one entry per channel and kind, in the order first seen.
#[derive(Debug, Default)]
struct AnomalyRuns<'a> {
    runs: Vec<AnomalyRun<'a>>,
}

/// The anomalies of one channel and kind in a chunk: how many, and the journal ids they span.
#[derive(Debug, PartialEq, Eq)]
struct AnomalyRun<'a> {
    channel: &'a str,
    kind: AnomalyKind,
    count: u64,
    first: i64,
    last: i64,
}

impl<'a> AnomalyRuns<'a> {
    /// Counts one anomaly of journal row `id` (rows come in journal order).
    fn add(&mut self, channel: &'a str, kind: AnomalyKind, id: i64) {
        match self
            .runs
            .iter_mut()
            .find(|run| run.channel == channel && run.kind == kind)
        {
            Some(run) => {
                run.count += 1;
                run.last = id;
            }
            None => self.runs.push(AnomalyRun {
                channel,
                kind,
                count: 1,
                first: id,
                last: id,
            }),
        }
    }
}

/// What one journal row means for the census.
fn update_for(
    row: &Unprocessed,
    settings: &CensusSettings,
    phi_channels: &HashSet<String>,
) -> CensusUpdate {
    let raw = row.raw.as_slice();
    let start = raw.trim_ascii_start();
    if start.first() == Some(&b'H') && !start.starts_with(b"HL7") {
        return hprim_update(raw);
    }
    match crate::hl7::Message::parse(raw) {
        Ok(message) => match census::interpret(&message, settings) {
            Ok(update) => update,
            Err(e) => {
                info!(journal_id = row.id, channel = %row.channel, error = %e.without_values(), "message not usable by the census");
                if phi_channels.contains(&row.channel) {
                    debug!(journal_id = row.id, channel = %row.channel, error = %e, "message not usable by the census (with values)");
                } else {
                    trace!(journal_id = row.id, channel = %row.channel, error = %e, "message not usable by the census (with values)");
                }
                CensusUpdate::Unusable {
                    note: format!("not used by the census: {}", e.without_values()),
                }
            }
        },
        // The parse error may quote the message: the note only says where to look.
        Err(e) => {
            info!(journal_id = row.id, channel = %row.channel, "message not readable by the census: see `ordobridge journal --show`");
            trace!(journal_id = row.id, channel = %row.channel, error = %e, "message not readable by the census (with values)");
            CensusUpdate::Unusable {
                note: NOT_READABLE.to_owned(),
            }
        }
    }
}

/// The note of a row the census could not parse (its bytes are in the journal).
const NOT_READABLE: &str =
    "not used by the census: not readable as HL7 v2 (see `ordobridge journal --show ID`)";

/// The identity of the first `P` record of an HPRIM message.
fn hprim_update(raw: &[u8]) -> CensusUpdate {
    let message = match crate::hprim::Message::parse(raw, None) {
        Ok(message) => message,
        Err(_) => {
            return CensusUpdate::Unusable {
                note: "not used by the census: not readable as HPRIM Santé (see `ordobridge \
                       journal --show ID`)"
                    .to_owned(),
            };
        }
    };
    let patients = crate::hprim::patients(&message);
    let Some(first) = patients.into_iter().find(|p| !p.ipp.is_empty()) else {
        return CensusUpdate::Unusable {
            note: "not used by the census: no P record carries an IPP (P.3); fix the sender's \
                   P records"
                .to_owned(),
        };
    };
    let name = PersonName {
        family: first.family.clone(),
        given: first.given.clone(),
    };
    CensusUpdate::Identity(Patient {
        ipp: first.ipp,
        legal_name: Some(match first.birth_name {
            Some(birth) if !birth.is_empty() => PersonName {
                family: birth,
                given: first.given,
            },
            _ => name.clone(),
        }),
        used_name: Some(name),
        birth_date: iso_date(&first.birth_date),
        sex: Some(first.sex).filter(|s| !s.is_empty()),
        ..Patient::default()
    })
}

/// `19750412` → `1975-04-12`; anything else as given (or nothing when empty).
fn iso_date(text: &str) -> Option<String> {
    let t = text.trim();
    if t.len() >= 8 && t.bytes().take(8).all(|b| b.is_ascii_digit()) {
        Some(format!("{}-{}-{}", &t[0..4], &t[4..6], &t[6..8]))
    } else if t.is_empty() {
        None
    } else {
        Some(t.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_runs_group_a_chunk_by_channel_and_kind() {
        let mut runs = AnomalyRuns::default();
        runs.add("adt-in", AnomalyKind::DuplicateMovement, 10);
        runs.add("adt-in", AnomalyKind::UnknownEncounter, 11);
        runs.add("adt-in", AnomalyKind::DuplicateMovement, 12);
        runs.add("adt-2", AnomalyKind::DuplicateMovement, 13);
        runs.add("adt-in", AnomalyKind::DuplicateMovement, 14);
        let run = |channel, kind, count, first, last| AnomalyRun {
            channel,
            kind,
            count,
            first,
            last,
        };
        assert_eq!(
            runs.runs,
            [
                run("adt-in", AnomalyKind::DuplicateMovement, 3, 10, 14),
                run("adt-in", AnomalyKind::UnknownEncounter, 1, 11, 11),
                run("adt-2", AnomalyKind::DuplicateMovement, 1, 13, 13),
            ]
        );
    }

    #[test]
    fn hprim_p_record_feeds_the_census_identity() {
        let raw = b"H|~^\\&|LAB001||LABO^Labo Synth|||ORU|||||P|H2.2~C|20261122\rP|1|100001|L77||DURAND~JEANNE||19750412|F\rL|1\r";
        match hprim_update(raw) {
            CensusUpdate::Identity(p) => {
                assert_eq!(p.ipp, "100001");
                assert_eq!(p.birth_date.as_deref(), Some("1975-04-12"));
                assert_eq!(p.sex.as_deref(), Some("F"));
            }
            other => panic!("expected an identity, got {other:?}"),
        }
    }

    fn adt_record(raw: Vec<u8>) -> crate::store::InboundRecord {
        crate::store::InboundRecord {
            channel: "adt".to_owned(),
            received_at: jiff::Timestamp::now(),
            peer: "127.0.0.1:5000".to_owned(),
            sender: "DPI_SYNTH".to_owned(),
            message_type: "ADT".to_owned(),
            control_id: String::new(),
            raw: raw.into(),
            status: crate::store::RecordStatus::Accepted,
        }
    }

    async fn status(store: &Store, id: i64) -> String {
        store
            .journal_entry_async(id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .status
    }

    /// Polls until `check` holds, for at most 20 s.
    async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !check().await {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Many rows, in chunks in flight together; one of them fails in SQL: every other row is
    /// applied, the failing one stays `accepted` and is applied once the cause is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ok_failed_row_is_retried_while_the_others_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let store = Store::open(&path, crate::store::StoreOptions::default()).unwrap();
        let messages = crate::tools::synthetic_adt(300);
        let records = messages.into_iter().map(adt_record).collect();
        let ids: Vec<i64> = store
            .journal_many(records)
            .await
            .unwrap()
            .iter()
            .map(|o| o.id())
            .collect();
        // synthetic_adt gives message i the IPP 100000 + i: refuse the 150th.
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON census_patients WHEN NEW.ipp = '100150'
             BEGIN SELECT RAISE(ABORT, 'refused by test'); END;",
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let processor = tokio::spawn(run_processor(
            store.clone(),
            CensusSettings::default(),
            Arc::default(),
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
            Arc::new(tokio::sync::watch::Sender::new(0)),
            shutdown.clone(),
        ));
        let last = *ids.last().unwrap();
        eventually("the last row processed", async || {
            status(&store, last).await == "processed"
        })
        .await;
        for (i, id) in ids.iter().enumerate() {
            let expected = if i == 150 { "accepted" } else { "processed" };
            assert_eq!(status(&store, *id).await, expected, "row {i}");
        }
        db.execute_batch("DROP TRIGGER refuse").unwrap();
        eventually(
            "the failed row applied after its cause is gone",
            async || status(&store, ids[150]).await == "processed",
        )
        .await;
        shutdown.cancel();
        processor.await.unwrap();
    }

    /// A message the census cannot use ends `processed` with a note saying why, and the note
    /// holds no value of the message; a usable one and an ignored one get no note.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ok_unusable_message_is_noted_on_its_journal_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("p.db"),
            crate::store::StoreOptions::default(),
        )
        .unwrap();
        let messages: [&[u8]; 4] = [
            b"MSH|^~\\&|DPI|CH|||20261122||ADT^A28|1|P|2.5\rPID|1||557788^^^OTHER^PI||DOE^JANE\r",
            b"MSH|^~\\&|DPI|CH|||20261122||ADT^A01|2|P|2.5\rPID|1||100001^^^CH^PI\rPV1|1|I|||||||||||||||||V1|||||||||||||||||||||||||1975X412\r",
            b"MSH|^~\\&|DPI|CH|||20261122||ADT^A28|3|P|2.5\rPID|1||100002^^^CH^PI||DOE^JOHN\r",
            b"MSH|^~\\&|DPI|CH|||20261122||ORM^O01|4|P|2.5\rPID|1||100002^^^CH^PI\r",
        ];
        let records = messages.iter().map(|m| adt_record(m.to_vec())).collect();
        let ids: Vec<i64> = store
            .journal_many(records)
            .await
            .unwrap()
            .iter()
            .map(|o| o.id())
            .collect();
        let shutdown = CancellationToken::new();
        let processor = tokio::spawn(run_processor(
            store.clone(),
            CensusSettings {
                ipp_authority: Some("CH".to_owned()),
            },
            Arc::default(),
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
            Arc::new(tokio::sync::watch::Sender::new(0)),
            shutdown.clone(),
        ));
        for id in &ids {
            eventually("every row processed", async || {
                status(&store, *id).await == "processed"
            })
            .await;
        }
        shutdown.cancel();
        processor.await.unwrap();
        let mut notes = Vec::new();
        for id in &ids {
            let entry = store.journal_entry_async(*id).await.unwrap().unwrap();
            notes.push(entry.summary.note);
        }
        assert_eq!(
            notes,
            [
                Some(
                    "not used by the census: PID-3: no `PI` identifier of authority `CH` (found \
                     17 characters, not shown here: see the journal): check `ipp_authority` in \
                     the census settings or the sender's PID-3"
                        .to_owned()
                ),
                Some(
                    "not used by the census: PV1-44: the value (not shown here: see the journal) \
                     is not an HL7 date/time (expected YYYY[MM[DD[HH[MM[SS[.S]]]]]][+ZZZZ])"
                        .to_owned()
                ),
                None,
                None,
            ]
        );
        for note in notes.iter().flatten() {
            for value in ["557788", "1975X412", "DOE", "JANE"] {
                assert!(!note.contains(value), "{note}");
            }
        }
    }

    #[rstest::rstest]
    #[case::err_hprim_unreadable(
        b"H|garbage",
        "not used by the census: not readable as HPRIM Santé (see `ordobridge journal --show ID`)"
    )]
    #[case::err_hprim_no_ipp(
        b"H|~^\\&|LAB001||LABO^Labo Synth|||ORU|||||P|H2.2~C|20261122\rP|1||L77||DURAND~JEANNE||19750412|F\rL|1\r",
        "not used by the census: no P record carries an IPP (P.3); fix the sender's P records"
    )]
    #[case::err_hl7_unreadable(
        b"MSX|not hl7",
        "not used by the census: not readable as HL7 v2 (see `ordobridge journal --show ID`)"
    )]
    fn err_unusable_notes(#[case] raw: &[u8], #[case] note: &str) {
        let row = Unprocessed {
            id: 1,
            channel: "in".to_owned(),
            raw: raw.to_vec(),
        };
        assert_eq!(
            update_for(&row, &CensusSettings::default(), &HashSet::new()),
            CensusUpdate::Unusable {
                note: note.to_owned()
            }
        );
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso_date("19750412").as_deref(), Some("1975-04-12"));
        assert_eq!(iso_date("197504121030").as_deref(), Some("1975-04-12"));
        assert_eq!(iso_date("").as_deref(), None);
    }
}
