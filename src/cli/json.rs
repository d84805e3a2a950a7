//! The `--json` documents of `ordobridge journal`, `census` and `queue`: one JSON value per
//! run, for scripts.
//!
//! Field names are stable (tests pin them); times are RFC 3339 in UTC; absent values are
//! `null`, never missing keys. The PHI rules of the text output hold: the IPP of a held bundle
//! appears only with `--show-phi` (the key is then present, otherwise absent).

use serde_json::{Value, json};

use crate::census::{PersonName, Practitioner};
use crate::store::{
    DeadLetter, DestinationDepth, HeldBundle, JournalEntry, JournalSummary, PatientView,
};

/// One journal row without its bytes.
pub fn journal_row(row: &JournalSummary) -> Value {
    json!({
        "id": row.id,
        "received_at": row.received_at.to_string(),
        "channel": row.channel,
        "message_type": row.message_type,
        "control_id": row.control_id,
        "status": row.status,
        "reason": row.reason,
        "note": row.note,
        "peer": row.peer,
        "sender": row.sender,
    })
}

/// `ordobridge journal --json`: the rows listed, newest first.
pub fn journal_list(rows: &[JournalSummary]) -> Value {
    json!({
        "count": rows.len(),
        "rows": rows.iter().map(journal_row).collect::<Vec<_>>(),
    })
}

/// `ordobridge journal --show ID --json`: the row and its message as text (segments on
/// lines, decoded in its charset, as the text output prints it).
pub fn journal_entry(entry: &JournalEntry) -> Value {
    let mut value = journal_row(&entry.summary);
    value["duplicate_count"] = json!(entry.duplicate_count);
    value["last_seen_at"] = json!(entry.last_seen_at.to_string());
    value["message"] = json!(crate::tools::printable_message(&entry.raw));
    value
}

/// `ordobridge census --json`: what the census knows of one patient.
pub fn census(view: &PatientView) -> Value {
    let name = |n: &Option<PersonName>| {
        n.as_ref()
            .map(|n| json!({"family": n.family, "given": n.given}))
    };
    let doctor = |p: &Option<Practitioner>| {
        p.as_ref().map(|p| {
            json!({"id": p.id, "family": p.family, "given": p.given, "prefix": p.prefix,
                   "rpps": p.rpps})
        })
    };
    let encounter = |e: &crate::store::EncounterView| {
        json!({
            "nda": e.nda,
            "status": e.status.as_str(),
            "class": e.class,
            "unit": e.unit,
            "attending": doctor(&e.attending),
            "admitting": doctor(&e.admitting),
            "referring": doctor(&e.referring),
            "admit_at": e.admit_at,
            "discharge_at": e.discharge_at,
        })
    };
    json!({
        "ipp": view.ipp,
        "resolved_from": view.resolved_from,
        "merged_ipps": view.merged_ipps,
        "legal_name": name(&view.legal_name),
        "used_name": name(&view.used_name),
        "birth_date": view.birth_date,
        "sex": view.sex,
        "reliability": view.reliability,
        "ins": view.ins.as_ref().map(|i| json!({"value": i.value, "kind": i.kind.label(), "oid": i.oid})),
        "current_encounter": view.current.as_ref().map(encounter),
        "encounters": view.encounters.iter().map(encounter).collect::<Vec<_>>(),
        "movements": view.movements.iter().map(|m| json!({
            "movement_id": m.movement_id,
            "nda": m.nda,
            "event": m.event,
            "cancelled": m.cancelled,
            "at": m.at,
            "unit": m.unit,
            "journal_id": m.journal_id,
            "updated_by": m.updated_by,
            "cancelled_by": m.cancelled_by,
        })).collect::<Vec<_>>(),
        "anomalies": view.anomalies.iter().map(|a| json!({
            "journal_id": a.journal_id,
            "kind": a.kind,
            "text": a.text,
        })).collect::<Vec<_>>(),
    })
}

/// What `ordobridge queue` shows.
#[derive(Debug, Clone, Copy)]
pub struct QueueView<'a> {
    /// Depth per destination.
    pub depths: &'a [DestinationDepth],
    /// Dead letters.
    pub dead: &'a [DeadLetter],
    /// Pushed bundles held until their patient is known.
    pub held: &'a [HeldBundle],
    /// Pushed bundles still `accepted` long after they arrived (see
    /// [`super::UNFINISHED_PUSH_AFTER`]).
    pub unfinished: &'a [JournalSummary],
}

/// `ordobridge queue --json`: depth per destination, dead letters, held bundles, unfinished
/// pushes.
pub fn queue(view: QueueView<'_>, show_phi: bool) -> Value {
    let QueueView {
        depths,
        dead,
        held,
        unfinished,
    } = view;
    json!({
        "unfinished_pushes": unfinished.iter().map(|row| json!({
            "journal_id": row.id,
            "received_at": row.received_at.to_string(),
            "control_id": row.control_id,
            "peer": row.peer,
        })).collect::<Vec<_>>(),
        "destinations": depths.iter().map(|d| json!({
            "destination": d.destination,
            "pending": d.pending,
            "dead": d.dead,
            "oldest_pending_at": d.oldest_pending_at.map(|t| t.to_string()),
        })).collect::<Vec<_>>(),
        "dead_letters": dead.iter().map(|l| json!({
            "id": l.id,
            "destination": l.destination,
            "enqueued_at": l.enqueued_at.to_string(),
            "control_id": l.control_id,
            "source": l.source,
            "attempts": l.attempts,
            "reason": l.reason,
            "dead_at": l.dead_at.map(|t| t.to_string()),
        })).collect::<Vec<_>>(),
        "held_bundles": held.iter().map(|h| {
            let mut value = json!({
                "journal_id": h.journal_id,
                "held_at": h.held_at.to_string(),
                "release_at": h.release_at.to_string(),
            });
            if show_phi {
                value["ipp"] = json!(h.partner_id);
            }
            value
        }).collect::<Vec<_>>(),
    })
}

/// The document as printed: pretty, one trailing line end.
pub fn to_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_owned());
    text.push('\n');
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn row() -> JournalSummary {
        JournalSummary {
            id: 7,
            received_at: at("2026-11-22T08:15:00.5Z"),
            channel: "adt-in".to_owned(),
            message_type: "ADT^A01^ADT_A01".to_owned(),
            control_id: "MSG1".to_owned(),
            status: "processed".to_owned(),
            reason: None,
            note: Some("not used by the census: PID-3: …".to_owned()),
            peer: "127.0.0.1:5000".to_owned(),
            sender: "DPI^CHU".to_owned(),
        }
    }

    #[test]
    fn ok_journal_list_shape() {
        assert_eq!(
            journal_list(&[row()]),
            json!({"count": 1, "rows": [{
                "id": 7, "received_at": "2026-11-22T08:15:00.5Z", "channel": "adt-in",
                "message_type": "ADT^A01^ADT_A01", "control_id": "MSG1", "status": "processed",
                "reason": null, "note": "not used by the census: PID-3: …",
                "peer": "127.0.0.1:5000", "sender": "DPI^CHU"
            }]})
        );
    }

    #[test]
    fn ok_journal_entry_adds_the_message() {
        let entry = JournalEntry {
            summary: row(),
            raw: b"MSH|^~\\&|A\rPID|1\r".to_vec(),
            content_hash: [0; 32],
            duplicate_count: 2,
            last_seen_at: at("2026-11-22T08:16:00Z"),
        };
        let value = journal_entry(&entry);
        assert_eq!(value["message"], "MSH|^~\\&|A\nPID|1\n");
        assert_eq!(value["duplicate_count"], 2);
        assert_eq!(value["last_seen_at"], "2026-11-22T08:16:00Z");
        assert_eq!(value["note"], "not used by the census: PID-3: …");
    }

    #[test]
    fn ok_queue_hides_the_ipp_unless_asked() {
        let held = [HeldBundle {
            journal_id: 3,
            partner_id: "IPP42".to_owned(),
            held_at: at("2026-11-22T08:15:00Z"),
            release_at: at("2026-11-22T08:30:00Z"),
        }];
        let depth = [DestinationDepth {
            destination: "ehr".to_owned(),
            pending: 2,
            dead: 1,
            oldest_pending_at: None,
        }];
        let view = QueueView {
            depths: &depth,
            dead: &[],
            held: &held,
            unfinished: &[row()],
        };
        let hidden = queue(view, false);
        assert_eq!(
            hidden,
            json!({
                "destinations": [{"destination": "ehr", "pending": 2, "dead": 1,
                                  "oldest_pending_at": null}],
                "dead_letters": [],
                "held_bundles": [{"journal_id": 3, "held_at": "2026-11-22T08:15:00Z",
                                  "release_at": "2026-11-22T08:30:00Z"}],
                "unfinished_pushes": [{"journal_id": 7, "received_at": "2026-11-22T08:15:00.5Z",
                                       "control_id": "MSG1", "peer": "127.0.0.1:5000"}],
            })
        );
        assert!(!to_text(&hidden).contains("IPP42"));
        assert_eq!(queue(view, true)["held_bundles"][0]["ipp"], "IPP42");
    }
}
