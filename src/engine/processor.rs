//! The processor: takes accepted journal rows in journal order and applies them to the
//! census, marking each row processed in the same transaction.
//!
//! It runs behind the ACK, never in front of it: a message is acknowledged once journaled,
//! and the census catches up a moment later. A crash between the two leaves the row
//! `accepted`, and the processor picks it up again at start (applying is idempotent per
//! journal row). HL7 ADT messages go through [`crate::census::interpret`]; HPRIM Santé
//! messages feed the census with the identity of their first `P` record.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::census::{self, CensusSettings, CensusUpdate, Patient, PersonName};
use crate::store::{Store, Unprocessed};

/// How many rows one round reads.
const BATCH: usize = 256;
/// A safety net if a wake-up is missed.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// Runs until `shutdown`; `wake` is poked after each journal commit; `census_changed` is
/// poked after each applied census update (the releaser of held bundles waits on it).
pub(super) async fn run_processor(
    store: Store,
    settings: CensusSettings,
    wake: Arc<Notify>,
    census_changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut after = 0i64;
    loop {
        let rows = match store.accepted_after(after, BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "cannot read the journal; the census will catch up later");
                Vec::new()
            }
        };
        if rows.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        }
        for row in rows {
            if shutdown.is_cancelled() {
                return;
            }
            let id = row.id;
            // Pushed bundles are the push endpoint's to process (map, queue, then mark); the
            // census must not mark them processed before they are queued.
            if row.channel == super::push::PUSH_CHANNEL {
                after = id;
                continue;
            }
            let update = update_for(&row, &settings);
            match store.apply_census(id, update).await {
                Ok(outcome) => {
                    for anomaly in &outcome.anomalies {
                        warn!(journal_id = id, channel = %row.channel, anomaly = ?anomaly.kind, "census anomaly kept and flagged: see `ordobridge census`");
                    }
                    debug!(journal_id = id, status = ?outcome.status, "census updated");
                    census_changed.notify_one();
                    after = id;
                }
                Err(e) => {
                    // Not marked processed: retried at the next round, in order.
                    warn!(journal_id = id, error = %e, "cannot apply the message to the census; will retry");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(IDLE_POLL) => {}
                    }
                    break;
                }
            }
        }
    }
}

/// What one journal row means for the census.
fn update_for(row: &Unprocessed, settings: &CensusSettings) -> CensusUpdate {
    let raw = row.raw.as_slice();
    let start = raw.trim_ascii_start();
    if start.first() == Some(&b'H') && !start.starts_with(b"HL7") {
        return hprim_update(raw);
    }
    match crate::hl7::Message::parse(raw) {
        Ok(message) => match census::interpret(&message, settings) {
            Ok(update) => update,
            Err(e) => {
                info!(journal_id = row.id, channel = %row.channel, error = %e, "message not usable by the census");
                CensusUpdate::Ignored {
                    reason: format!("not usable by the census: {e}"),
                }
            }
        },
        Err(e) => CensusUpdate::Ignored {
            reason: format!("not readable: {e}"),
        },
    }
}

/// The identity of the first `P` record of an HPRIM message.
fn hprim_update(raw: &[u8]) -> CensusUpdate {
    let message = match crate::hprim::Message::parse(raw, None) {
        Ok(message) => message,
        Err(e) => {
            return CensusUpdate::Ignored {
                reason: format!("HPRIM message not readable: {e}"),
            };
        }
    };
    let patients = crate::hprim::patients(&message);
    let Some(first) = patients.into_iter().find(|p| !p.ipp.is_empty()) else {
        return CensusUpdate::Ignored {
            reason: "HPRIM message without a P record carrying an IPP (P.3)".to_string(),
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

    #[test]
    fn iso_dates() {
        assert_eq!(iso_date("19750412").as_deref(), Some("1975-04-12"));
        assert_eq!(iso_date("197504121030").as_deref(), Some("1975-04-12"));
        assert_eq!(iso_date("").as_deref(), None);
    }
}
