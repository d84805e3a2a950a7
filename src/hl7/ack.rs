//! ACK/NACK building, in original mode (AA/AE/AR) and enhanced mode (CA/CE/CR, when MSH-15 or
//! MSH-16 is valued), with an ERR segment that says what and where.
//!
//! The ACK echoes the sender's delimiters, MSH-10 (in MSA-2), MSH-11, MSH-12 and MSH-18, swaps
//! sender and receiver (MSH-3/4 ↔ MSH-5/6) and answers `ACK^<trigger>^ACK`; its own MSH-10 and
//! MSH-7 come from the caller. Echoed fields are copied byte for byte (still escaped, in the
//! sender's charset); our own text is escaped and encoded in the sender's charset.
//!
//! Enhanced mode follows MSH-15: `AL` (or empty) always, `NE` never, `ER` only on error or
//! reject, `SU` only on success. For MSH-12 < 2.5 the error goes into ERR-1 (ELD) and MSA-3;
//! from 2.5 (or when MSH-12 is empty) into ERR-2 (ERL), ERR-3 (CWE), ERR-4 and ERR-8.
//!
//! [`AckRequest::salvage`] reads what it can from a message that did not parse, so that even a
//! NACK for garbage echoes MSH-10 when there is one.

use crate::hl7::charset::Charset;
use crate::hl7::code::{ErrLocation, ErrorCode};
use crate::hl7::delim::Delimiters;
use crate::hl7::escape::escape;
use crate::hl7::message::{Message, nth_piece};

/// What the receiver decided about the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckOutcome {
    /// Committed: AA / CA.
    Accepted,
    /// Could not be processed, may be resent: AE / CE.
    Error,
    /// Refused, do not resend as is: AR / CR.
    Rejected,
}

/// The header values of the incoming message that an ACK echoes, kept raw (escaped, in the
/// sender's charset) so they are echoed byte for byte.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckRequest {
    /// The sender's delimiters, reused for the ACK.
    pub delimiters: Delimiters,
    /// The sender's charset, used to encode our own text.
    pub charset: Charset,
    /// MSH-3.
    pub sending_application: Vec<u8>,
    /// MSH-4.
    pub sending_facility: Vec<u8>,
    /// MSH-5.
    pub receiving_application: Vec<u8>,
    /// MSH-6.
    pub receiving_facility: Vec<u8>,
    /// MSH-9 whole (`ADT^A01^ADT_A01`), for the journal and the logs.
    pub message_type: Vec<u8>,
    /// MSH-9.2, the trigger event.
    pub trigger: Vec<u8>,
    /// MSH-10, echoed in MSA-2.
    pub control_id: Vec<u8>,
    /// MSH-11.
    pub processing_id: Vec<u8>,
    /// MSH-12.
    pub version: Vec<u8>,
    /// MSH-15.
    pub accept_ack_type: Vec<u8>,
    /// MSH-16.
    pub application_ack_type: Vec<u8>,
    /// MSH-18 as written.
    pub charset_field: Vec<u8>,
}

/// The error to report in ERR (and MSA-3 before 2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// Table 0357 code.
    pub code: ErrorCode,
    /// Where, when known.
    pub location: Option<ErrLocation>,
    /// Human-readable text for the sender's interface team (ERR-8 / MSA-3).
    pub message: String,
}

impl From<&crate::hl7::message::ParseError> for AckError {
    fn from(e: &crate::hl7::message::ParseError) -> Self {
        AckError {
            code: e.code(),
            location: e.location(),
            message: e.to_string(),
        }
    }
}

impl AckRequest {
    /// Takes the echoed values from a parsed message.
    pub fn from_message(m: &Message<'_>) -> Self {
        let d = *m.delimiters();
        let msh = m.segment("MSH", 1);
        let f = |n: usize| msh.and_then(|s| s.field(n)).unwrap_or_default().to_vec();
        let msh9 = msh.and_then(|s| s.field(9)).unwrap_or_default();
        let trigger = nth_piece(msh9, d.repetition(), 1)
            .and_then(|r| nth_piece(r, d.component(), 2))
            .unwrap_or_default()
            .to_vec();
        AckRequest {
            delimiters: d,
            charset: m.charset(),
            sending_application: f(3),
            sending_facility: f(4),
            receiving_application: f(5),
            receiving_facility: f(6),
            message_type: msh9.to_vec(),
            trigger,
            control_id: f(10),
            processing_id: f(11),
            version: f(12),
            accept_ack_type: f(15),
            application_ack_type: f(16),
            charset_field: f(18),
        }
    }

    /// Extracts what it can from the first line of bytes that did not parse (MSH-3..MSH-18,
    /// split on the byte after `MSH`, default `|^~\&`). Never fails; control bytes are dropped.
    pub fn salvage(raw: &[u8]) -> Self {
        let Some(start) = memchr::memmem::find(raw, b"MSH") else {
            return AckRequest::default();
        };
        let rest = raw.get(start..).unwrap_or_default();
        let line_len = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
        let line = rest.get(..line_len).unwrap_or_default();
        let delimiters = Delimiters::read(line, 0)
            .map(|(d, _)| d)
            .unwrap_or_default();
        let fields: Vec<&[u8]> = line.split(|&b| b == delimiters.field()).collect();
        let f = |n: usize| -> Vec<u8> {
            let raw = n
                .checked_sub(1)
                .and_then(|i| fields.get(i))
                .copied()
                .unwrap_or_default();
            raw.iter()
                .copied()
                .filter(|&b| b >= 0x20 && b != 0x7F)
                .collect()
        };
        let msh9 = f(9);
        let trigger = nth_piece(&msh9, delimiters.repetition(), 1)
            .and_then(|r| nth_piece(r, delimiters.component(), 2))
            .unwrap_or_default()
            .to_vec();
        let charset_field = f(18);
        let charset = nth_piece(&charset_field, delimiters.repetition(), 1)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(Charset::from_msh18)
            .unwrap_or_default();
        AckRequest {
            delimiters,
            charset,
            sending_application: f(3),
            sending_facility: f(4),
            receiving_application: f(5),
            receiving_facility: f(6),
            message_type: msh9.to_vec(),
            trigger,
            control_id: f(10),
            processing_id: f(11),
            version: f(12),
            accept_ack_type: f(15),
            application_ack_type: f(16),
            charset_field,
        }
    }

    /// Whether the sender asked for enhanced mode (MSH-15 or MSH-16 valued).
    pub fn is_enhanced(&self) -> bool {
        !self.accept_ack_type.trim_ascii().is_empty()
            || !self.application_ack_type.trim_ascii().is_empty()
    }

    /// Whether MSH-12 is a version before 2.5 (ERR-1/MSA-3 style); empty or unreadable is not.
    pub fn is_before_2_5(&self) -> bool {
        let v = nth_piece(&self.version, self.delimiters.component(), 1).unwrap_or_default();
        let v = std::str::from_utf8(v).unwrap_or_default().trim();
        let mut parts = v.split('.');
        let major = parts.next().and_then(|p| p.parse::<u32>().ok());
        let minor = parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        major.is_some_and(|m| (m, minor) < (2, 5))
    }
}

/// Builds the ACK for `req`; `None` when the enhanced-mode rules say no accept acknowledgment
/// is to be sent. `control_id` (our MSH-10) and `timestamp` (our MSH-7, HL7 DTM) come from the
/// caller so that retries and tests are deterministic.
pub fn build_ack(
    req: &AckRequest,
    outcome: AckOutcome,
    error: Option<&AckError>,
    control_id: &str,
    timestamp: &str,
) -> Option<Vec<u8>> {
    let enhanced = req.is_enhanced();
    if enhanced {
        let mode = req.accept_ack_type.trim_ascii().to_ascii_uppercase();
        let send = match mode.as_slice() {
            b"NE" => false,
            b"ER" => outcome != AckOutcome::Accepted,
            b"SU" => outcome == AckOutcome::Accepted,
            _ => true,
        };
        if !send {
            return None;
        }
    }
    let code = match (enhanced, outcome) {
        (false, AckOutcome::Accepted) => "AA",
        (false, AckOutcome::Error) => "AE",
        (false, AckOutcome::Rejected) => "AR",
        (true, AckOutcome::Accepted) => "CA",
        (true, AckOutcome::Error) => "CE",
        (true, AckOutcome::Rejected) => "CR",
    };
    let d = req.delimiters;
    let mut w = Writer {
        out: Vec::with_capacity(256),
        d,
        charset: req.charset,
    };
    // MSH
    w.raw(b"MSH");
    w.fs();
    w.text_raw(&d.encoding_chars());
    for echoed in [
        &req.receiving_application,
        &req.receiving_facility,
        &req.sending_application,
        &req.sending_facility,
    ] {
        w.fs();
        w.raw(echoed);
    }
    w.fs();
    w.text(timestamp);
    w.fs(); // MSH-8
    w.fs();
    w.raw(b"ACK");
    if !req.trigger.is_empty() {
        w.cs();
        w.raw(&req.trigger);
        w.cs();
        w.raw(b"ACK");
    }
    w.fs();
    w.text(control_id);
    w.fs();
    w.raw(&req.processing_id);
    w.fs();
    w.raw(&req.version);
    if !req.charset_field.is_empty() {
        for _ in 13..=18 {
            w.fs();
        }
        w.raw(&req.charset_field);
    }
    w.raw(b"\r");
    // MSA
    let old = req.is_before_2_5();
    w.raw(b"MSA");
    w.fs();
    w.raw(code.as_bytes());
    w.fs();
    w.raw(&req.control_id);
    if let (true, Some(e)) = (old, error) {
        w.fs();
        w.text(&e.message);
    }
    w.raw(b"\r");
    // ERR
    if let Some(e) = error {
        w.raw(b"ERR");
        w.fs();
        if old {
            // ERR-1 (ELD): segment ^ sequence ^ field ^ code & text & HL70357
            if let Some(loc) = &e.location {
                w.text(&loc.segment);
                w.cs();
                w.number(loc.sequence);
                w.cs();
                w.number(loc.field);
            } else {
                w.cs();
                w.cs();
            }
            w.cs();
            w.text(&e.code.code().to_string());
            w.ss();
            w.text(e.code.text());
            w.ss();
            w.raw(b"HL70357");
        } else {
            // ERR-2 (ERL), ERR-3 (CWE), ERR-4 severity, ERR-8 user message.
            w.fs();
            if let Some(loc) = &e.location {
                w.text(&loc.segment);
                w.cs();
                w.number(loc.sequence);
                if loc.field > 0 {
                    w.cs();
                    w.number(loc.field);
                    if loc.component > 0 {
                        w.cs();
                        w.cs();
                        w.number(loc.component);
                    }
                }
            }
            w.fs();
            w.text(&e.code.code().to_string());
            w.cs();
            w.text(e.code.text());
            w.cs();
            w.raw(b"HL70357");
            w.fs();
            w.raw(b"E");
            for _ in 5..=8 {
                w.fs();
            }
            w.text(&e.message);
        }
        w.raw(b"\r");
    }
    Some(w.out)
}

/// Output buffer that knows the delimiters and charset.
struct Writer {
    out: Vec<u8>,
    d: Delimiters,
    charset: Charset,
}

impl Writer {
    fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
    fn text_raw(&mut self, s: &str) {
        self.out.extend_from_slice(&self.charset.encode_lossy(s));
    }
    /// Our own text: escaped, then encoded in the sender's charset.
    fn text(&mut self, s: &str) {
        let escaped = escape(s, &self.d);
        self.out
            .extend_from_slice(&self.charset.encode_lossy(&escaped));
    }
    fn number(&mut self, n: usize) {
        if n > 0 {
            self.out.extend_from_slice(n.to_string().as_bytes());
        }
    }
    fn fs(&mut self) {
        self.out.push(self.d.field());
    }
    fn cs(&mut self) {
        self.out.push(self.d.component());
    }
    fn ss(&mut self) {
        self.out.push(self.d.subcomponent());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn req(version: &str, msh15: &str, msh16: &str) -> AckRequest {
        let raw = format!(
            "MSH|^~\\&|SIH|CHU|ORDO|POSOS|20240101||ADT^A01^ADT_A01|MSG42|P|{version}|||{msh15}|{msh16}||8859/1\rPID|1\r"
        );
        AckRequest::from_message(&Message::parse(raw.as_bytes()).unwrap())
    }

    fn ack(r: &AckRequest, outcome: AckOutcome, error: Option<&AckError>) -> Option<String> {
        build_ack(r, outcome, error, "ACK1", "20240102030405")
            .map(|b| String::from_utf8(b).unwrap())
    }

    fn msa1(r: &AckRequest, outcome: AckOutcome) -> Option<String> {
        let a = ack(r, outcome, None)?;
        let m = Message::parse(a.as_bytes()).unwrap();
        m.query("MSA-1").unwrap()
    }

    #[rstest]
    #[case::ok_original_aa("", "", AckOutcome::Accepted, Some("AA"))]
    #[case::ok_original_ae("", "", AckOutcome::Error, Some("AE"))]
    #[case::ok_original_ar("", "", AckOutcome::Rejected, Some("AR"))]
    #[case::ok_al_ca("AL", "NE", AckOutcome::Accepted, Some("CA"))]
    #[case::ok_al_ce("AL", "NE", AckOutcome::Error, Some("CE"))]
    #[case::ok_al_cr("AL", "NE", AckOutcome::Rejected, Some("CR"))]
    #[case::ok_ne_ca("NE", "AL", AckOutcome::Accepted, None)]
    #[case::ok_ne_ce("NE", "AL", AckOutcome::Error, None)]
    #[case::ok_ne_cr("NE", "AL", AckOutcome::Rejected, None)]
    #[case::ok_er_ca("ER", "", AckOutcome::Accepted, None)]
    #[case::ok_er_ce("ER", "", AckOutcome::Error, Some("CE"))]
    #[case::ok_er_cr("ER", "", AckOutcome::Rejected, Some("CR"))]
    #[case::ok_su_ca("SU", "", AckOutcome::Accepted, Some("CA"))]
    #[case::ok_su_ce("SU", "", AckOutcome::Error, None)]
    #[case::ok_su_cr("SU", "", AckOutcome::Rejected, None)]
    #[case::ok_empty15_enhanced("", "AL", AckOutcome::Accepted, Some("CA"))]
    #[case::ok_lowercase("su", "", AckOutcome::Accepted, Some("CA"))]
    fn ok_ack_modes(
        #[case] msh15: &str,
        #[case] msh16: &str,
        #[case] outcome: AckOutcome,
        #[case] expected: Option<&str>,
    ) {
        assert_eq!(
            msa1(&req("2.5", msh15, msh16), outcome).as_deref(),
            expected
        );
    }

    #[test]
    fn ok_ack_echoes_and_swaps() {
        let a = ack(&req("2.5", "", ""), AckOutcome::Accepted, None).unwrap();
        assert_eq!(
            a,
            "MSH|^~\\&|ORDO|POSOS|SIH|CHU|20240102030405||ACK^A01^ACK|ACK1|P|2.5||||||8859/1\r\
             MSA|AA|MSG42\r"
        );
    }

    #[test]
    fn ok_err_v25() {
        let e = AckError {
            code: ErrorCode::RequiredFieldMissing,
            location: Some(ErrLocation {
                segment: "PID".into(),
                sequence: 1,
                field: 5,
                component: 1,
            }),
            message: "PID-5.1 is empty | Nom absent".into(),
        };
        let a = ack(&req("2.5", "", ""), AckOutcome::Error, Some(&e)).unwrap();
        assert_eq!(
            a,
            "MSH|^~\\&|ORDO|POSOS|SIH|CHU|20240102030405||ACK^A01^ACK|ACK1|P|2.5||||||8859/1\r\
             MSA|AE|MSG42\r\
             ERR||PID^1^5^^1|101^Required field missing^HL70357|E||||PID-5.1 is empty \\F\\ Nom absent\r"
        );
        let m = Message::parse(a.as_bytes()).unwrap();
        assert_eq!(
            m.query("ERR-8").unwrap().as_deref(),
            Some("PID-5.1 is empty | Nom absent")
        );
        assert_eq!(m.query("ERR-3.1").unwrap().as_deref(), Some("101"));
    }

    #[test]
    fn ok_err_v23() {
        let e = AckError {
            code: ErrorCode::DataType,
            location: Some(ErrLocation {
                segment: "PV1".into(),
                sequence: 1,
                field: 19,
                component: 0,
            }),
            message: "bad visit number".into(),
        };
        let a = ack(&req("2.3.1", "", ""), AckOutcome::Error, Some(&e)).unwrap();
        assert_eq!(
            a,
            "MSH|^~\\&|ORDO|POSOS|SIH|CHU|20240102030405||ACK^A01^ACK|ACK1|P|2.3.1||||||8859/1\r\
             MSA|AE|MSG42|bad visit number\r\
             ERR|PV1^1^19^102&Data type error&HL70357\r"
        );
    }

    #[test]
    fn ok_err_text_encoded_in_sender_charset() {
        let e = AckError {
            code: ErrorCode::ApplicationInternal,
            location: None,
            message: "Référence".into(),
        };
        let a = build_ack(&req("2.5", "", ""), AckOutcome::Error, Some(&e), "1", "2").unwrap();
        assert!(
            a.ends_with(b"ERR|||207^Application internal error^HL70357|E||||R\xE9f\xE9rence\r")
        );
    }

    #[rstest]
    #[case::ok_before("2.3", true)]
    #[case::ok_before_sub("2.4.1", true)]
    #[case::ok_2_5("2.5", false)]
    #[case::ok_2_5_1("2.5.1", false)]
    #[case::ok_2_7("2.7", false)]
    #[case::ok_empty("", false)]
    #[case::ok_junk("x", false)]
    fn ok_version_rule(#[case] v: &str, #[case] before: bool) {
        assert_eq!(req(v, "", "").is_before_2_5(), before);
    }

    #[test]
    fn ok_from_parse_error() {
        let raw = b"MSH|^~\\&|SIH|CHU|ORDO|POSOS|20240101||ADT^A01|MSG7|P|2.5\rpid|1\r";
        let err = Message::parse(raw).unwrap_err();
        let r = AckRequest::salvage(raw);
        let a = build_ack(
            &r,
            AckOutcome::Rejected,
            Some(&AckError::from(&err)),
            "A",
            "T",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(a).unwrap(),
            "MSH|^~\\&|ORDO|POSOS|SIH|CHU|T||ACK^A01^ACK|A|P|2.5\r\
             MSA|AR|MSG7\r\
             ERR||pid^2|100^Segment sequence error^HL70357|E||||segment 2 (`pid`) at byte 57: invalid segment id, expected 3 uppercase letters or digits\r"
        );
    }

    #[rstest]
    #[case::ok_valid(b"MSH|^~\\&|SIH|CHU|||||ADT^A01|C1|P|2.5\r", "C1", "A01", "SIH")]
    #[case::ok_bad_msh2(b"MSH|^~X&|SIH|CHU|||||ADT^A01|C2|P|2.5\r", "C2", "A01", "SIH")]
    #[case::ok_lookalike("MSH|^˜\\&|SIH||||||ADT^A04|C3\n".as_bytes(), "C3", "A04", "SIH")]
    #[case::ok_mllp_junk(b"\x0b\x00MSH|^~\\&|S\x0bIH||||||ADT^A01|C4", "C4", "A01", "SIH")]
    #[case::ok_alternate(b"MSH#^~\\&#SIH######ADT^A08#C5", "C5", "A08", "SIH")]
    #[case::ok_garbage(b"\xFF\xFEgarbage", "", "", "")]
    #[case::ok_empty(b"", "", "", "")]
    #[case::ok_short(b"MSH", "", "", "")]
    fn ok_salvage(
        #[case] raw: &[u8],
        #[case] control: &str,
        #[case] trigger: &str,
        #[case] app: &str,
    ) {
        let r = AckRequest::salvage(raw);
        assert_eq!(r.control_id, control.as_bytes());
        assert_eq!(r.trigger, trigger.as_bytes());
        assert_eq!(r.sending_application, app.as_bytes());
        let a = build_ack(&r, AckOutcome::Rejected, None, "X", "T").unwrap();
        assert!(Message::parse(&a).is_ok());
    }
}
