//! Journal records for the store tests (both backends): one shape, distinct control ids.

use bytes::Bytes;
use ordobridge::store::{InboundRecord, RecordStatus};

/// An accepted ADT^A01 of channel `adt-in` from `DPI^CHU`, received at a fixed time.
pub fn record(control_id: &str, raw: &[u8]) -> InboundRecord {
    InboundRecord {
        channel: "adt-in".to_owned(),
        // 2025-06-15T15:06:40Z.
        received_at: jiff::Timestamp::from_second(1_750_000_000)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        peer: "10.1.2.3:40000".to_owned(),
        sender: "DPI^CHU".to_owned(),
        message_type: "ADT^A01".to_owned(),
        control_id: control_id.to_owned(),
        raw: Bytes::copy_from_slice(raw),
        status: RecordStatus::Accepted,
    }
}

/// [`record`], rejected for `reason`.
pub fn rejected(control_id: &str, raw: &[u8], reason: &str) -> InboundRecord {
    InboundRecord {
        status: RecordStatus::Rejected {
            reason: reason.to_owned(),
        },
        ..record(control_id, raw)
    }
}
