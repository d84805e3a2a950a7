//! HL7 table 0357 error codes and error locations, shared by parse errors and the ACK builder
//! so that a NACK can say what and where in the sender's own vocabulary.

use std::fmt;

/// An HL7 table 0357 "message error condition code", written into ERR-3 (or ERR-1 before 2.5)
/// so the sender's interface team can act on a NACK without reading our logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100: segment sequence error (wrong or unexpected segment, message not starting with MSH).
    SegmentSequence,
    /// 101: a required field is missing.
    RequiredFieldMissing,
    /// 102: data type error (malformed value, bad delimiters).
    DataType,
    /// 103: table value not found (e.g. an unknown MSH-18 charset).
    TableValueNotFound,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 201: unsupported event code.
    UnsupportedEventCode,
    /// 202: unsupported processing id.
    UnsupportedProcessingId,
    /// 203: unsupported version id.
    UnsupportedVersionId,
    /// 207: application internal error.
    ApplicationInternal,
}

impl ErrorCode {
    /// The numeric table 0357 value.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::SegmentSequence => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataType => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::ApplicationInternal => 207,
        }
    }

    /// The table 0357 description, written as the CWE/CE text component.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequence => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataType => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::ApplicationInternal => "Application internal error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.text())
    }
}

/// Where an error is, in ERR-2 (ERL) / ERR-1 (ELD) terms, so a NACK points at the culprit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrLocation {
    /// Segment id, e.g. `PID`.
    pub segment: String,
    /// Occurrence of that segment id in the message, 1-based (ERL-2 "segment sequence").
    pub sequence: usize,
    /// Field number, 1-based; 0 when the error concerns the whole segment.
    pub field: usize,
    /// Component number, 1-based; 0 when the error concerns the whole field.
    pub component: usize,
}

impl fmt::Display for ErrLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.segment)?;
        if self.sequence > 1 {
            write!(f, "[{}]", self.sequence)?;
        }
        if self.field > 0 {
            write!(f, "-{}", self.field)?;
            if self.component > 0 {
                write!(f, ".{}", self.component)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_100(ErrorCode::SegmentSequence, 100)]
    #[case::ok_101(ErrorCode::RequiredFieldMissing, 101)]
    #[case::ok_102(ErrorCode::DataType, 102)]
    #[case::ok_103(ErrorCode::TableValueNotFound, 103)]
    #[case::ok_200(ErrorCode::UnsupportedMessageType, 200)]
    #[case::ok_201(ErrorCode::UnsupportedEventCode, 201)]
    #[case::ok_202(ErrorCode::UnsupportedProcessingId, 202)]
    #[case::ok_203(ErrorCode::UnsupportedVersionId, 203)]
    #[case::ok_207(ErrorCode::ApplicationInternal, 207)]
    fn ok_codes(#[case] code: ErrorCode, #[case] n: u16) {
        assert_eq!(code.code(), n);
    }

    #[rstest]
    #[case::ok_field("PID", 1, 3, 0, "PID-3")]
    #[case::ok_component("PID", 1, 5, 1, "PID-5.1")]
    #[case::ok_sequence("OBX", 2, 5, 0, "OBX[2]-5")]
    #[case::ok_segment("ZBE", 1, 0, 0, "ZBE")]
    fn ok_location_display(
        #[case] segment: &str,
        #[case] sequence: usize,
        #[case] field: usize,
        #[case] component: usize,
        #[case] expected: &str,
    ) {
        let loc = ErrLocation {
            segment: segment.into(),
            sequence,
            field,
            component,
        };
        assert_eq!(loc.to_string(), expected);
    }
}
