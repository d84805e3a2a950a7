//! How the message browser shows an HL7 v2 message: the raw text with its delimiters marked,
//! and a tree of segments and fields named from a small dictionary (the common v2.5 segments
//! and the French ZBE, ZFP, ZFV, ZFM of IHE PAM FR). Pure: bytes in, values out.

use crate::hl7::Message;

/// One line of the raw view: text runs and delimiters, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// A field, component, repetition, escape or subcomponent separator.
    Delimiter(char),
}

/// The raw message, one segment a line, delimiters apart (`|^~\&`, or the message's own).
/// Bytes that are not UTF-8 are read as Windows-1252 (a superset of ISO-8859-1).
pub fn raw_lines(raw: &[u8]) -> Vec<Vec<Piece>> {
    let text = match std::str::from_utf8(raw) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => encoding_rs::WINDOWS_1252.decode_without_bom_handling(raw).0,
    };
    let delimiters: Vec<char> = match Message::parse(raw) {
        Ok(message) => {
            let d = message.delimiters();
            [
                d.field(),
                d.component(),
                d.repetition(),
                d.escape(),
                d.subcomponent(),
            ]
            .iter()
            .map(|b| char::from(*b))
            .collect()
        }
        Err(_) => vec!['|', '^', '~', '\\', '&'],
    };
    text.split(['\r', '\n'])
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut pieces = Vec::new();
            let mut run = String::new();
            for c in line.chars() {
                if delimiters.contains(&c) {
                    if !run.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut run)));
                    }
                    pieces.push(Piece::Delimiter(c));
                } else if c.is_control() {
                    run.push_str(&format!("\\x{:02X}", u32::from(c)));
                } else {
                    run.push(c);
                }
            }
            if !run.is_empty() {
                pieces.push(Piece::Text(run));
            }
            pieces
        })
        .collect()
}

/// A segment of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentNode {
    /// `PID`.
    pub id: String,
    /// `Patient Identification`, or empty for a segment the dictionary does not know.
    pub name: &'static str,
    /// The non-empty fields, in order.
    pub fields: Vec<FieldNode>,
}

/// A non-empty field of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNode {
    /// `PID-5`.
    pub label: String,
    /// `Patient Name`, or empty when unknown.
    pub name: &'static str,
    /// The field as written (escaped), decoded in the message's charset.
    pub value: String,
}

/// The tree of an HL7 v2 message; `None` when it does not parse as one.
pub fn tree(raw: &[u8]) -> Option<Vec<SegmentNode>> {
    let message = Message::parse(raw).ok()?;
    let charset = message.charset();
    let nodes = message
        .segments()
        .map(|segment| {
            let id = segment.id().to_string();
            let (name, names) = describe(&id);
            let fields = field_nodes(&id, '-', 1..=segment.field_count(), names, charset, |n| {
                segment.field(n)
            });
            SegmentNode { id, name, fields }
        })
        .collect();
    Some(nodes)
}

/// The non-empty fields `numbers` of one segment or record, labelled `ID{separator}N` and
/// named from `names` (the name of the first field of `numbers` first), decoded in `charset`.
fn field_nodes<'m>(
    id: &str,
    separator: char,
    numbers: std::ops::RangeInclusive<usize>,
    names: &[&'static str],
    charset: crate::hl7::Charset,
    field: impl Fn(usize) -> Option<&'m [u8]>,
) -> Vec<FieldNode> {
    let first = *numbers.start();
    numbers
        .filter_map(|n| {
            let value = field(n).filter(|value| !value.is_empty())?;
            Some(FieldNode {
                label: format!("{id}{separator}{n}"),
                name: n
                    .checked_sub(first)
                    .and_then(|i| names.get(i))
                    .copied()
                    .unwrap_or(""),
                value: charset.decode(value).into_owned(),
            })
        })
        .collect()
}

/// The tree of an HPRIM Santé message: its records (`H`, `P`, `OBR`, `OBX`, `C`, `L`, with
/// their `A` continuations joined) and their non-empty fields in HPRIM numbering (`P.6`, the
/// record type being field 1); `None` when it does not parse as one.
pub fn hprim_tree(raw: &[u8]) -> Option<Vec<SegmentNode>> {
    let message = crate::hprim::Message::parse(raw, None).ok()?;
    message.header()?;
    let charset = message.charset();
    let nodes = message
        .records()
        .map(|record| {
            let id = record.kind().to_string();
            let (name, names) = describe_hprim(&id);
            let fields = field_nodes(&id, '.', 2..=record.field_count(), names, charset, |n| {
                record.field(n)
            });
            SegmentNode { id, name, fields }
        })
        .collect();
    Some(nodes)
}

/// The name of HPRIM record `kind` and of its fields (index 0 is field 2: field 1 is the
/// record type). Only the fields ordobridge reads are named.
fn describe_hprim(kind: &str) -> (&'static str, &'static [&'static str]) {
    match kind {
        "H" => (
            "Header",
            &["Delimiters", "Message Id", "Password", "Sender"],
        ),
        "P" => (
            "Patient",
            &[
                "Sequence",
                "Patient Id (requester, IPP)",
                "Patient Id (laboratory)",
                "Third Id (stay, NDA)",
                "Name (family^given)",
                "Birth Name",
                "Birth Date",
                "Sex",
            ],
        ),
        "OBR" => ("Request", &[]),
        "OBX" => ("Result", &[]),
        "C" => ("Comment", &[]),
        "L" => ("End", &[]),
        _ => ("", &[]),
    }
}

/// The name of segment `id` and of its fields (index 0 is field 1).
pub fn describe(id: &str) -> (&'static str, &'static [&'static str]) {
    DICTIONARY
        .iter()
        .find(|(segment, _, _)| *segment == id)
        .map_or(("", &[]), |(_, name, fields)| (*name, *fields))
}

/// Segment id, name, field names (HL7 v2.5; IHE PAM FR 2.10 for the Z segments).
const DICTIONARY: &[(&str, &str, &[&str])] = &[
    (
        "MSH",
        "Message Header",
        &[
            "Field Separator",
            "Encoding Characters",
            "Sending Application",
            "Sending Facility",
            "Receiving Application",
            "Receiving Facility",
            "Date/Time of Message",
            "Security",
            "Message Type",
            "Message Control ID",
            "Processing ID",
            "Version ID",
            "Sequence Number",
            "Continuation Pointer",
            "Accept Acknowledgment Type",
            "Application Acknowledgment Type",
            "Country Code",
            "Character Set",
            "Principal Language of Message",
        ],
    ),
    (
        "EVN",
        "Event Type",
        &[
            "Event Type Code",
            "Recorded Date/Time",
            "Date/Time Planned Event",
            "Event Reason Code",
            "Operator ID",
            "Event Occurred",
            "Event Facility",
        ],
    ),
    (
        "PID",
        "Patient Identification",
        &[
            "Set ID",
            "Patient ID",
            "Patient Identifier List",
            "Alternate Patient ID",
            "Patient Name",
            "Mother's Maiden Name",
            "Date/Time of Birth",
            "Administrative Sex",
            "Patient Alias",
            "Race",
            "Patient Address",
            "County Code",
            "Phone Number - Home",
            "Phone Number - Business",
            "Primary Language",
            "Marital Status",
            "Religion",
            "Patient Account Number",
            "SSN Number",
            "Driver's License Number",
            "Mother's Identifier",
            "Ethnic Group",
            "Birth Place",
            "Multiple Birth Indicator",
            "Birth Order",
            "Citizenship",
            "Veterans Military Status",
            "Nationality",
            "Patient Death Date and Time",
            "Patient Death Indicator",
            "Identity Unknown Indicator",
            "Identity Reliability Code",
        ],
    ),
    (
        "PD1",
        "Patient Additional Demographic",
        &[
            "Living Dependency",
            "Living Arrangement",
            "Patient Primary Facility",
            "Patient Primary Care Provider",
            "Student Indicator",
            "Handicap",
            "Living Will Code",
            "Organ Donor Code",
            "Separate Bill",
            "Duplicate Patient",
            "Publicity Code",
            "Protection Indicator",
        ],
    ),
    (
        "NK1",
        "Next of Kin",
        &[
            "Set ID",
            "Name",
            "Relationship",
            "Address",
            "Phone Number",
            "Business Phone Number",
            "Contact Role",
        ],
    ),
    (
        "PV1",
        "Patient Visit",
        &[
            "Set ID",
            "Patient Class",
            "Assigned Patient Location",
            "Admission Type",
            "Preadmit Number",
            "Prior Patient Location",
            "Attending Doctor",
            "Referring Doctor",
            "Consulting Doctor",
            "Hospital Service",
            "Temporary Location",
            "Preadmit Test Indicator",
            "Re-admission Indicator",
            "Admit Source",
            "Ambulatory Status",
            "VIP Indicator",
            "Admitting Doctor",
            "Patient Type",
            "Visit Number",
            "Financial Class",
            "Charge Price Indicator",
            "Courtesy Code",
            "Credit Rating",
            "Contract Code",
            "Contract Effective Date",
            "Contract Amount",
            "Contract Period",
            "Interest Code",
            "Transfer to Bad Debt Code",
            "Transfer to Bad Debt Date",
            "Bad Debt Agency Code",
            "Bad Debt Transfer Amount",
            "Bad Debt Recovery Amount",
            "Delete Account Indicator",
            "Delete Account Date",
            "Discharge Disposition",
            "Discharged to Location",
            "Diet Type",
            "Servicing Facility",
            "Bed Status",
            "Account Status",
            "Pending Location",
            "Prior Temporary Location",
            "Admit Date/Time",
            "Discharge Date/Time",
        ],
    ),
    (
        "PV2",
        "Patient Visit - Additional Information",
        &[
            "Prior Pending Location",
            "Accommodation Code",
            "Admit Reason",
            "Transfer Reason",
        ],
    ),
    (
        "ORC",
        "Common Order",
        &[
            "Order Control",
            "Placer Order Number",
            "Filler Order Number",
            "Placer Group Number",
            "Order Status",
            "Response Flag",
            "Quantity/Timing",
            "Parent",
            "Date/Time of Transaction",
            "Entered By",
            "Verified By",
            "Ordering Provider",
            "Enterer's Location",
            "Call Back Phone Number",
            "Order Effective Date/Time",
            "Order Control Code Reason",
            "Entering Organization",
        ],
    ),
    (
        "RXO",
        "Pharmacy/Treatment Order",
        &[
            "Requested Give Code",
            "Requested Give Amount - Minimum",
            "Requested Give Amount - Maximum",
            "Requested Give Units",
            "Requested Dosage Form",
            "Provider's Pharmacy/Treatment Instructions",
            "Provider's Administration Instructions",
        ],
    ),
    (
        "RXE",
        "Pharmacy/Treatment Encoded Order",
        &[
            "Quantity/Timing",
            "Give Code",
            "Give Amount - Minimum",
            "Give Amount - Maximum",
            "Give Units",
            "Give Dosage Form",
            "Provider's Administration Instructions",
        ],
    ),
    (
        "RXR",
        "Pharmacy/Treatment Route",
        &[
            "Route",
            "Administration Site",
            "Administration Device",
            "Administration Method",
        ],
    ),
    (
        "TQ1",
        "Timing/Quantity",
        &[
            "Set ID",
            "Quantity",
            "Repeat Pattern",
            "Explicit Time",
            "Relative Time and Units",
            "Service Duration",
            "Start date/time",
            "End date/time",
            "Priority",
            "Condition text",
            "Text instruction",
        ],
    ),
    (
        "OBR",
        "Observation Request",
        &[
            "Set ID",
            "Placer Order Number",
            "Filler Order Number",
            "Universal Service Identifier",
            "Priority",
            "Requested Date/Time",
            "Observation Date/Time",
            "Observation End Date/Time",
        ],
    ),
    (
        "OBX",
        "Observation/Result",
        &[
            "Set ID",
            "Value Type",
            "Observation Identifier",
            "Observation Sub-ID",
            "Observation Value",
            "Units",
            "References Range",
            "Abnormal Flags",
            "Probability",
            "Nature of Abnormal Test",
            "Observation Result Status",
            "Effective Date of Reference Range",
            "User Defined Access Checks",
            "Date/Time of the Observation",
        ],
    ),
    (
        "NTE",
        "Notes and Comments",
        &["Set ID", "Source of Comment", "Comment", "Comment Type"],
    ),
    (
        "AL1",
        "Patient Allergy Information",
        &[
            "Set ID",
            "Allergen Type Code",
            "Allergen Code",
            "Allergy Severity Code",
            "Allergy Reaction Code",
            "Identification Date",
        ],
    ),
    (
        "DG1",
        "Diagnosis",
        &[
            "Set ID",
            "Diagnosis Coding Method",
            "Diagnosis Code",
            "Diagnosis Description",
            "Diagnosis Date/Time",
            "Diagnosis Type",
        ],
    ),
    (
        "MRG",
        "Merge Patient Information",
        &[
            "Prior Patient Identifier List",
            "Prior Alternate Patient ID",
            "Prior Patient Account Number",
            "Prior Patient ID",
            "Prior Visit Number",
            "Prior Alternate Visit ID",
            "Prior Patient Name",
        ],
    ),
    (
        "MSA",
        "Message Acknowledgment",
        &["Acknowledgment Code", "Message Control ID", "Text Message"],
    ),
    (
        "ERR",
        "Error",
        &[
            "Error Code and Location",
            "Error Location",
            "HL7 Error Code",
            "Severity",
            "Application Error Code",
            "Application Error Parameter",
            "Diagnostic Information",
            "User Message",
        ],
    ),
    (
        "ZBE",
        "Movement (PAM FR)",
        &[
            "Movement ID",
            "Start of Movement Date/Time",
            "End of Movement Date/Time",
            "Action on the Movement",
            "Historical Movement Indicator",
            "Original Trigger Event Code",
            "Responsible Ward (Medical)",
            "Responsible Ward (Nursing)",
            "Nature of this Movement",
        ],
    ),
    (
        "ZFP",
        "Professional Situation (PAM FR)",
        &["Professional Activity", "Socio-Professional Category"],
    ),
    (
        "ZFV",
        "Additional Visit Information (PAM FR)",
        &[
            "Establishment of Origin",
            "Transport Mode of Discharge",
            "Type of Preadmission",
            "Start Date of Placement",
            "End Date of Placement",
            "Address of Origin or Destination",
            "NDA of Origin Establishment",
            "Archive Number",
            "Discharge Type",
            "Reimbursement Code",
        ],
    ),
    (
        "ZFM",
        "PMSI Movement (PAM FR)",
        &[
            "Mode of Entry",
            "Mode of Discharge",
            "Mode of Provenance",
            "Mode of Destination",
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &[u8] = b"MSH|^~\\&|DPI|CH|OB|POSOS|20260105||ADT^A01^ADT_A01|SYN1|P|2.5\rPID|1||100001^^^CH_EXEMPLE^PI||DUPONT^Jean\rZBE|MV1|20260105\r";

    #[test]
    fn ok_tree_names_segments_and_fields() {
        let tree = tree(ADT).expect("parses");
        let ids: Vec<&str> = tree.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["MSH", "PID", "ZBE"]);
        let pid = &tree[1];
        assert_eq!(pid.name, "Patient Identification");
        let labels: Vec<(&str, &str)> = pid
            .fields
            .iter()
            .map(|f| (f.label.as_str(), f.name))
            .collect();
        assert_eq!(
            labels,
            [
                ("PID-1", "Set ID"),
                ("PID-3", "Patient Identifier List"),
                ("PID-5", "Patient Name")
            ]
        );
        assert_eq!(pid.fields[2].value, "DUPONT^Jean");
        assert_eq!(tree[2].name, "Movement (PAM FR)");
        assert_eq!(tree[2].fields[0].name, "Movement ID");
        let msh10 = tree[0]
            .fields
            .iter()
            .find(|f| f.label == "MSH-10")
            .expect("MSH-10");
        assert_eq!(
            (msh10.name, msh10.value.as_str()),
            ("Message Control ID", "SYN1")
        );
    }

    #[test]
    fn err_tree_of_something_else() {
        assert_eq!(tree(b"H|~^\\&|||"), None);
    }

    #[test]
    fn ok_raw_lines_mark_delimiters() {
        let lines = raw_lines(b"PID|1||A^B\rX\x01\n");
        assert_eq!(
            lines,
            vec![
                vec![
                    Piece::Text("PID".into()),
                    Piece::Delimiter('|'),
                    Piece::Text("1".into()),
                    Piece::Delimiter('|'),
                    Piece::Delimiter('|'),
                    Piece::Text("A".into()),
                    Piece::Delimiter('^'),
                    Piece::Text("B".into()),
                ],
                vec![Piece::Text("X\\x01".into())],
            ]
        );
    }

    #[test]
    fn ok_hprim_tree_records_and_fields() {
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/samples/hprim/RES0001.HPR"
        ))
        .unwrap();
        let tree = hprim_tree(&raw).unwrap();
        let ids: Vec<&str> = tree.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.first(), Some(&"H"));
        assert_eq!(ids.last(), Some(&"L"));
        let patient = tree.iter().find(|s| s.id == "P").unwrap();
        assert_eq!(patient.name, "Patient");
        let ipp = patient.fields.iter().find(|f| f.label == "P.3").unwrap();
        assert_eq!(ipp.name, "Patient Id (requester, IPP)");
        assert!(!ipp.value.is_empty());
        assert!(hprim_tree(b"MSH|^~\\&|A|B\r").is_none(), "HL7 is not HPRIM");
        assert!(
            tree.iter()
                .all(|s| s.fields.iter().all(|f| !f.value.is_empty()))
        );
    }
}
