//! Patients read from `P` records, so that a site that sends only HPRIM still feeds the census
//! and can launch Posos for its patients.
//!
//! Positions used (HPRIM numbering, the record type is field 1):
//!
//! | field  | meaning                                               | confirmed |
//! |--------|-------------------------------------------------------|-----------|
//! | P.3.1  | patient identifier given by the requester (IPP)       | yes       |
//! | P.4.1  | patient identifier given by the laboratory (executor) | yes       |
//! | P.5.1  | third identifier, read as the stay/visit number (NDA) | **no**    |
//! | P.6.1  | family name (usual)                                   | yes       |
//! | P.6.2  | given name                                            | yes       |
//! | P.7    | birth name (maiden name)                              | yes       |
//! | P.8    | birth date, `YYYYMMDD`, kept as given                 | yes       |
//! | P.9    | sex (`M`, `F`, `U`), kept as given                    | yes       |
//!
//! Where they come from: the ASTM E1394 patient record HPRIM Santé is built on (practice-assigned
//! id, laboratory-assigned id, third id, name, mother's maiden name, birth date, sex in fields 3
//! to 9), the test fixture of the open-source `aiderpmsi/libHprim` parser (`P|1|398|B1042100871
//! ||GAULLE~MARECHAL|PIT|19370325|F|…`, labelled P.3 … P.9) and an HPRIM reader's fixture
//! (`P|0001|99999999||ABC1234567890|SMITH^ALEX^^^MR|SMITH|19850517|F`). We could not confirm in
//! a public source that P.5 carries the NDA (stay number) in HPRIM Santé 2.x: it is read as the
//! NDA when not empty, and callers should treat it as a hint until a site's files confirm it.

use crate::hprim::message::Message;

/// The patient traits of one `P` record, decoded, for the census.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HprimPatient {
    /// Physical line of the `P` record, 1-based (to point back at the file).
    pub line: usize,
    /// P.3.1, the requester's patient identifier (IPP); empty when absent.
    pub ipp: String,
    /// P.4.1, the laboratory's identifier for the patient, when present.
    pub lab_id: Option<String>,
    /// P.5.1, read as the stay number (NDA), when present (position unconfirmed, see module).
    pub nda: Option<String>,
    /// P.6.1, family name (usual name).
    pub family: String,
    /// P.6.2, given name.
    pub given: String,
    /// P.7.1, birth name, when present.
    pub birth_name: Option<String>,
    /// P.8, birth date as given (`YYYYMMDD` in conforming files).
    pub birth_date: String,
    /// P.9, sex as given (`M`, `F`, `U`).
    pub sex: String,
}

/// Reads every `P` record of `message`, in order. Never fails: absent fields are empty.
pub fn patients(message: &Message<'_>) -> Vec<HprimPatient> {
    message
        .records()
        .filter(|r| r.kind() == "P")
        .map(|r| {
            let text = |n: usize, c: Option<usize>| -> String {
                let raw = match c {
                    Some(c) => r.component(n, c),
                    None => r.value(n, Some(1), None, None),
                };
                raw.map(|b| r.decode(b).trim().to_string())
                    .unwrap_or_default()
            };
            let some = |s: String| (!s.is_empty()).then_some(s);
            HprimPatient {
                line: r.line(),
                ipp: text(3, Some(1)),
                lab_id: some(text(4, Some(1))),
                nda: some(text(5, Some(1))),
                family: text(6, Some(1)),
                given: text(6, Some(2)),
                birth_name: some(text(7, Some(1))),
                birth_date: text(8, None),
                sex: text(9, None),
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::hl7::Charset;
    use rstest::rstest;

    fn one(raw: &[u8]) -> HprimPatient {
        let m = Message::parse(raw, None).unwrap();
        let mut ps = patients(&m);
        assert_eq!(ps.len(), 1);
        ps.remove(0)
    }

    #[rstest]
    #[case::ok_reference_order(
        b"H|~^\\&\rP|1|398|B1042100871||GAULLE~MARECHAL|PIT|19370325|F\rL|1||1\r"
    )]
    #[case::ok_hl7_order(
        b"H|^~\\&\rP|1|398|B1042100871||GAULLE^MARECHAL^^^MR|PIT|19370325|F\rL|1||1\r"
    )]
    fn ok_patient(#[case] raw: &[u8]) {
        assert_eq!(
            one(raw),
            HprimPatient {
                line: 2,
                ipp: "398".into(),
                lab_id: Some("B1042100871".into()),
                nda: None,
                family: "GAULLE".into(),
                given: "MARECHAL".into(),
                birth_name: Some("PIT".into()),
                birth_date: "19370325".into(),
                sex: "F".into(),
            }
        );
    }

    #[test]
    fn ok_accents_nda_continuation() {
        let p = one(b"H|~^\\&\r\nP|1|IPP9~~CHU|LAB1|NDA42|L\xc9GER~Ana\xefs~Marie||1985\r\nA|0312|F\r\nL|1\r\n");
        assert_eq!(p.ipp, "IPP9");
        assert_eq!(p.nda.as_deref(), Some("NDA42"));
        assert_eq!((p.family.as_str(), p.given.as_str()), ("LÉGER", "Anaïs"));
        assert_eq!((p.birth_date.as_str(), p.sex.as_str()), ("19850312", "F"));
        assert_eq!(p.birth_name, None);
    }

    #[test]
    fn ok_several_and_absent() {
        let raw = "H|~^\\&\rP|1\rOBX|1\rP|2|B\\S\\C|||Zoé\rL|1||2\r";
        let m = Message::parse(raw.as_bytes(), Some(Charset::Utf8)).unwrap();
        let ps = patients(&m);
        assert_eq!(ps.len(), 2);
        assert_eq!(
            ps[0],
            HprimPatient {
                line: 2,
                ..Default::default()
            }
        );
        assert_eq!((ps[1].ipp.as_str(), ps[1].family.as_str()), ("B~C", "Zoé"));
        assert_eq!(ps[1].line, 4);
    }
}
