//! The ADT census: what an ADT message says about a patient and their encounter, read with
//! IHE PAM France 2.11 semantics into a [`CensusUpdate`] the store applies.
//!
//! Pure: no I/O, no tokio, no logging. The store ([`crate::store::Store::apply_census`]) keeps
//! the state; this module only reads one message.
//!
//! # Events
//!
//! - A28/A31: identity create/update ([`CensusUpdate::Identity`]).
//! - A05, A01, A04, A02, A03, A06, A07, A21, A22, A54: movements ([`CensusUpdate::Visit`]);
//!   with ZBE-4 = `UPDATE`, or as Z99 (ZBE-6 names the original trigger), they correct the
//!   movement named by ZBE-1.
//! - A38, A11, A12, A13, A52, A53, A55: cancels of the movement named by ZBE-1
//!   ([`CensusUpdate::Cancel`]).
//! - A40: merge, MRG-1 names the IPP that disappears ([`CensusUpdate::Merge`]).
//! - A08 (legacy senders): identity and visit update; identity only without a visit number.
//! - Anything else (other triggers, other message types): [`CensusUpdate::Ignored`].
//! - A message it cannot use (see [`CensusError`]): the processor makes it a
//!   [`CensusUpdate::Unusable`], noted on its journal row.
//!
//! # Fields
//!
//! IPP: the PID-3 repetition typed `PI` whose assigning authority (CX-4.1 namespace or CX-4.2
//! OID) is the configured one (any `PI` when none is configured). INS: only when a PID-32
//! repetition is `VALI`, from the PID-3 repetition with the INS-NIR, INS-NIA or test OID in
//! CX-4.2 (or typed `INS`/`INS-NIR` in CX-5). NDA: PV1-19, else PID-18. Unit: ZBE-7.10 (UF),
//! else PV1-3.1. Doctors: PV1-7 (attending), PV1-17 (admitting), PV1-8 (referring), first
//! repetition; RPPS when XCN-13 is `RPPS` or XCN-9 carries the ASIP-SANTE-PS OID. Movement:
//! ZBE-1.1 id, time ZBE-2, else EVN-6, else MSH-7.
//!
//! Times are kept as the civil (wall clock) date-time the sender wrote; a `+ZZZZ` offset is
//! accepted and dropped (French senders write local time). `""` (the HL7 null) reads as empty.

use std::borrow::Cow;

use jiff::civil::DateTime;

use crate::hl7::{Delimiters, Message, Segment};

/// OID of the INS-NIR (the NIR as national health identifier).
pub const INS_NIR_OID: &str = "1.2.250.1.213.1.4.8";
/// OID of the INS-NIA (identifier given while a NIR is pending).
pub const INS_NIA_OID: &str = "1.2.250.1.213.1.4.9";
/// OID of test INS (test and training platforms).
pub const INS_TEST_OID: &str = "1.2.250.1.213.1.4.10";
/// OID of the RPPS assigning authority (ASIP-SANTE-PS).
pub const RPPS_OID: &str = "1.2.250.1.71.4.2.1";

/// Site settings the reading depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CensusSettings {
    /// The facility's IPP assigning authority (namespace or OID); `None` takes the first `PI`.
    pub ipp_authority: Option<String>,
}

/// What one ADT message asks the census to do.
// Made once per message and moved (boxed) to the writer once: boxing variants would only add
// allocations and noise at every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CensusUpdate {
    /// A28/A31 (and A08 without a visit): create or update a patient's identity.
    Identity(Patient),
    /// A movement (or its correction): patient, encounter and the movement itself.
    Visit(Visit),
    /// A cancel (A11, A12, …): undo exactly one earlier movement.
    Cancel(Cancel),
    /// A40: one patient disappears into another.
    Merge(Merge),
    /// A message the census has nothing to do with; not an error.
    Ignored {
        /// Why, for the log line.
        reason: String,
    },
    /// A message the census should have used but could not (no IPP of the configured
    /// authority, a bad date, an unreadable message): nothing is applied and the journal row
    /// is marked processed with `note`.
    Unusable {
        /// Why, as stored on the journal row: never a patient value (it is shown by
        /// `ordobridge journal` without `--show-phi`).
        note: String,
    },
}

/// A patient as the message describes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patient {
    /// The facility's permanent patient identifier (PID-3, type `PI`).
    pub ipp: String,
    /// Every PID-3 repetition, kept for lookups and audits.
    pub identifiers: Vec<Identifier>,
    /// The national identifier, only when the identity is validated (PID-32 = `VALI`).
    pub ins: Option<Ins>,
    /// PID-5 repetition typed `L` (birth name), else the first untyped one.
    pub legal_name: Option<PersonName>,
    /// PID-5 repetition typed `D` (used name).
    pub used_name: Option<PersonName>,
    /// PID-7, ISO 8601 as precise as the sender gave it (`1975-04-12`, `1975-04`, `1975`).
    pub birth_date: Option<String>,
    /// PID-8 (`F`, `M`, `U`, …).
    pub sex: Option<String>,
    /// PID-32 repetitions joined by `~` (`VALI`, `PROV`, …).
    pub reliability: Option<String>,
}

/// One PID-3 repetition (CX).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identifier {
    /// CX-1.
    pub value: String,
    /// CX-4.1, the authority's namespace.
    pub namespace: String,
    /// CX-4.2, the authority's OID.
    pub oid: String,
    /// CX-5, the identifier type (`PI`, `INS`, `AN`, …).
    pub id_type: String,
}

/// Which kind of INS a value is, from its OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InsKind {
    /// INS-NIR.
    Nir,
    /// INS-NIA.
    Nia,
    /// Test OID: never a real person.
    Test,
    /// Typed `INS` in CX-5 without a known OID.
    Unspecified,
}

impl InsKind {
    /// The kind for an OID, `Unspecified` when the OID is not one of the three.
    pub fn from_oid(oid: &str) -> Self {
        match oid {
            INS_NIR_OID => Self::Nir,
            INS_NIA_OID => Self::Nia,
            INS_TEST_OID => Self::Test,
            _ => Self::Unspecified,
        }
    }

    /// A short label for views.
    pub fn label(self) -> &'static str {
        match self {
            Self::Nir => "INS-NIR",
            Self::Nia => "INS-NIA",
            Self::Test => "INS test",
            Self::Unspecified => "INS",
        }
    }
}

/// The INS of a validated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ins {
    /// The 15-character identifier (CX-1).
    pub value: String,
    /// CX-4.2 (empty when only CX-5 said `INS`).
    pub oid: String,
    /// NIR, NIA or test.
    pub kind: InsKind,
}

/// A person's name (XPN); only what the launch and the views show.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PersonName {
    /// XPN-1.1.
    pub family: String,
    /// XPN-2.
    pub given: String,
}

/// A doctor named in PV1 (XCN), with the RPPS when the sender gave one.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Practitioner {
    /// XCN-1, whatever the identifier is (RPPS, ADELI, local code).
    pub id: String,
    /// XCN-2.1.
    pub family: String,
    /// XCN-3.
    pub given: String,
    /// XCN-6 (`DR`, `PR`, …).
    pub prefix: String,
    /// XCN-1 when XCN-13 is `RPPS` or XCN-9 carries the RPPS OID: what Posos needs.
    pub rpps: Option<String>,
}

/// The visit events (movements) the census follows, by what they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A05.
    PreAdmit,
    /// A01.
    Admit,
    /// A04.
    Register,
    /// A02.
    Transfer,
    /// A03.
    Discharge,
    /// A06: outpatient becomes inpatient.
    ToInpatient,
    /// A07: inpatient becomes outpatient.
    ToOutpatient,
    /// A21.
    LeaveOut,
    /// A22.
    LeaveReturn,
    /// A54.
    DoctorChange,
    /// A08: visit data update, no movement.
    VisitUpdate,
}

/// Every event, for lookups by trigger.
const EVENTS: [Event; 11] = [
    Event::PreAdmit,
    Event::Admit,
    Event::Register,
    Event::Transfer,
    Event::Discharge,
    Event::ToInpatient,
    Event::ToOutpatient,
    Event::LeaveOut,
    Event::LeaveReturn,
    Event::DoctorChange,
    Event::VisitUpdate,
];

impl Event {
    /// The trigger event code (`A01`, …), as stored.
    pub fn trigger(self) -> &'static str {
        match self {
            Self::PreAdmit => "A05",
            Self::Admit => "A01",
            Self::Register => "A04",
            Self::Transfer => "A02",
            Self::Discharge => "A03",
            Self::ToInpatient => "A06",
            Self::ToOutpatient => "A07",
            Self::LeaveOut => "A21",
            Self::LeaveReturn => "A22",
            Self::DoctorChange => "A54",
            Self::VisitUpdate => "A08",
        }
    }

    /// The event for a trigger code; `None` when the census does not follow it.
    pub fn from_trigger(trigger: &str) -> Option<Self> {
        EVENTS.into_iter().find(|e| e.trigger() == trigger)
    }

    /// What it means, for views.
    pub fn label(self) -> &'static str {
        match self {
            Self::PreAdmit => "pre-admission",
            Self::Admit => "admission",
            Self::Register => "outpatient visit",
            Self::Transfer => "transfer",
            Self::Discharge => "discharge",
            Self::ToInpatient => "to inpatient",
            Self::ToOutpatient => "to outpatient",
            Self::LeaveOut => "leave of absence",
            Self::LeaveReturn => "return from leave",
            Self::DoctorChange => "attending change",
            Self::VisitUpdate => "visit update",
        }
    }
}

/// The state of an encounter, as the census derives it from its active movements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncounterStatus {
    /// Only non-status movements seen (A08, A54, a transfer without its admission).
    Unknown,
    /// After A05.
    PreAdmitted,
    /// After A01/A04 (or A22).
    Admitted,
    /// After A21.
    OnLeave,
    /// After A03.
    Discharged,
    /// Every movement was cancelled.
    Cancelled,
}

impl EncounterStatus {
    /// The text stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::PreAdmitted => "preadmitted",
            Self::Admitted => "admitted",
            Self::OnLeave => "on_leave",
            Self::Discharged => "discharged",
            Self::Cancelled => "cancelled",
        }
    }

    /// Reads the stored text; unknown text reads as `Unknown`.
    pub fn from_text(text: &str) -> Self {
        match text {
            "preadmitted" => Self::PreAdmitted,
            "admitted" => Self::Admitted,
            "on_leave" => Self::OnLeave,
            "discharged" => Self::Discharged,
            "cancelled" => Self::Cancelled,
            _ => Self::Unknown,
        }
    }
}

/// What PV1/ZBE say about the encounter; `None` means "not said", never "cleared".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncounterFacts {
    /// PV1-2 (`I`, `O`, `E`, `R`, …).
    pub class: Option<String>,
    /// ZBE-7.10 (UF), else PV1-3.1.
    pub unit: Option<String>,
    /// PV1-7.
    pub attending: Option<Practitioner>,
    /// PV1-17.
    pub admitting: Option<Practitioner>,
    /// PV1-8.
    pub referring: Option<Practitioner>,
    /// PV1-44.
    pub admit_at: Option<DateTime>,
    /// PV1-45.
    pub discharge_at: Option<DateTime>,
}

/// A movement (or its correction) for one encounter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    /// What the movement does.
    pub event: Event,
    /// True for Z99 or ZBE-4 = `UPDATE`: correct the movement `movement_id`, not a new one.
    pub correction: bool,
    /// The patient (PID).
    pub patient: Patient,
    /// PV1-19, else PID-18.
    pub nda: String,
    /// ZBE-1.1; `None` for legacy senders without ZBE (the store names it after the journal
    /// row).
    pub movement_id: Option<String>,
    /// ZBE-2, else EVN-6, else MSH-7.
    pub at: DateTime,
    /// PV1/ZBE facts.
    pub facts: EncounterFacts,
}

/// A cancel: undo one earlier movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel {
    /// The cancel trigger (`A11`, `A12`, …).
    pub trigger: String,
    /// The events it may cancel (A11: A01 or A04, narrowed by ZBE-6).
    pub cancels: Vec<Event>,
    /// The patient (PID).
    pub patient: Patient,
    /// PV1-19, else PID-18, when given.
    pub nda: Option<String>,
    /// ZBE-1.1: the cancelled movement; `None` from legacy senders (the store then cancels
    /// the latest active movement of that kind in the encounter).
    pub movement_id: Option<String>,
    /// ZBE-2, else EVN-6, else MSH-7.
    pub at: DateTime,
}

/// A40: `merged_ipp` disappears into `survivor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The patient that stays (PID).
    pub survivor: Patient,
    /// MRG-1: the IPP that disappears (it resolves to the survivor afterwards).
    pub merged_ipp: String,
}

/// Why a message cannot feed the census; says where and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CensusError {
    /// A segment the event needs is missing.
    #[error("{message_type}: no {segment} segment: the census needs it; fix the sender's message")]
    MissingSegment {
        /// MSH-9 as found.
        message_type: String,
        /// The segment id.
        segment: &'static str,
    },
    /// No PID-3 repetition is the facility's IPP.
    #[error(
        "PID-3: no `PI` identifier {authority} (found `{found}`): check `ipp_authority` in the \
         census settings or the sender's PID-3"
    )]
    NoIpp {
        /// `of authority `X`` or `at all`.
        authority: String,
        /// PID-3 as found, readable and truncated.
        found: String,
    },
    /// A visit event without a visit number.
    #[error(
        "PV1-19: no visit number (NDA), and no PID-18 either: the census cannot follow this \
         {trigger} without one; fix the sender's PV1-19"
    )]
    NoNda {
        /// The trigger event.
        trigger: String,
    },
    /// A date or date-time field that is not one.
    #[error(
        "{field}: `{value}` is not an HL7 date/time (expected YYYY[MM[DD[HH[MM[SS[.S]]]]]][+ZZZZ])"
    )]
    BadTime {
        /// Segment-field, e.g. `PV1-44`.
        field: String,
        /// The value, readable.
        value: String,
    },
    /// No movement time at all.
    #[error(
        "MSH-7: no message time, and no ZBE-2 or EVN-6 either: the census orders movements by time"
    )]
    NoTime,
    /// Z99 whose ZBE-6 does not name a movement trigger.
    #[error(
        "ZBE-6: `{value}` is not a movement trigger: a Z99 update needs the original trigger \
         (A01, A02, A03, A04, A05, A06, A07, A21, A22, A54)"
    )]
    BadOriginalTrigger {
        /// ZBE-6 as found, readable.
        value: String,
    },
    /// A40 without the merged IPP.
    #[error("MRG-1: no identifier: an A40 merge needs the IPP that disappears")]
    NoMergedIpp,
}

impl CensusError {
    /// The same sentence without the values found in the message (PID-3 identifiers, dates
    /// such as a birth date): what goes to logs at info level. The full text (`Display`) is
    /// kept in the journal and logged at debug for a channel with `log_phi`, else at trace.
    pub fn without_values(&self) -> String {
        match self {
            CensusError::NoIpp { authority, found } => format!(
                "PID-3: no `PI` identifier {authority} (found {} characters, not shown here: see \
                 the journal): check `ipp_authority` in the census settings or the sender's PID-3",
                found.chars().count()
            ),
            CensusError::BadTime { field, .. } => format!(
                "{field}: the value (not shown here: see the journal) is not an HL7 date/time \
                 (expected YYYY[MM[DD[HH[MM[SS[.S]]]]]][+ZZZZ])"
            ),
            other => other.to_string(),
        }
    }
}

/// What a trigger asks for.
enum Action {
    Identity,
    Visit(Event),
    Update,
    Cancel(&'static [Event]),
    Merge,
    /// A08: visit update when a visit number is given, identity otherwise.
    Legacy,
}

fn action(trigger: &str) -> Option<Action> {
    use Event::*;
    Some(match trigger {
        "A28" | "A31" => Action::Identity,
        "A08" => Action::Legacy,
        "A40" => Action::Merge,
        "Z99" => Action::Update,
        "A38" => Action::Cancel(&[PreAdmit]),
        "A11" => Action::Cancel(&[Admit, Register]),
        "A12" => Action::Cancel(&[Transfer]),
        "A13" => Action::Cancel(&[Discharge]),
        "A52" => Action::Cancel(&[LeaveOut]),
        "A53" => Action::Cancel(&[LeaveReturn]),
        "A55" => Action::Cancel(&[DoctorChange]),
        other => match Event::from_trigger(other) {
            Some(VisitUpdate) | None => return None,
            Some(event) => Action::Visit(event),
        },
    })
}

/// Reads one ADT message into the update the census store applies (see the module docs).
pub fn interpret(
    message: &Message<'_>,
    settings: &CensusSettings,
) -> Result<CensusUpdate, CensusError> {
    let r = Reader::new(message);
    let msh9 = r.raw("MSH", 9);
    let message_type = r.text(msh9).into_owned();
    let kind = r.text(r.component(msh9, 1));
    if kind != "ADT" {
        return Ok(CensusUpdate::Ignored {
            reason: format!(
                "`{}` is not an ADT message",
                crate::text::readable_prefix(message_type.as_bytes(), 32)
            ),
        });
    }
    let mut trigger = r.text(r.component(msh9, 2)).into_owned();
    if trigger.is_empty() {
        trigger = r.text(r.component(r.raw("EVN", 1), 1)).into_owned();
    }
    let Some(action) = action(&trigger) else {
        return Ok(CensusUpdate::Ignored {
            reason: format!(
                "ADT trigger `{}` is not a census event",
                crate::text::readable_prefix(trigger.as_bytes(), 16)
            ),
        });
    };
    let patient = r.patient(settings, &message_type)?;
    let zbe_action = r.text(r.component(r.raw("ZBE", 4), 1));
    match action {
        Action::Identity => Ok(CensusUpdate::Identity(patient)),
        Action::Legacy => match r.nda() {
            None => Ok(CensusUpdate::Identity(patient)),
            Some(nda) => r.visit(Event::VisitUpdate, false, patient, nda),
        },
        Action::Visit(event) => {
            let nda = r.nda().ok_or_else(|| CensusError::NoNda {
                trigger: trigger.clone(),
            })?;
            r.visit(event, zbe_action == "UPDATE", patient, nda)
        }
        Action::Update => {
            let raw = r.component(r.raw("ZBE", 6), 1);
            let original = r.text(raw);
            let event = Event::from_trigger(&original)
                .filter(|e| *e != Event::VisitUpdate)
                .ok_or_else(|| CensusError::BadOriginalTrigger {
                    value: crate::text::readable_prefix(original.as_bytes(), 16),
                })?;
            let nda = r.nda().ok_or_else(|| CensusError::NoNda {
                trigger: trigger.clone(),
            })?;
            r.visit(event, true, patient, nda)
        }
        Action::Cancel(cancels) => {
            let original = r.text(r.component(r.raw("ZBE", 6), 1));
            let narrowed: Vec<Event> = match Event::from_trigger(&original) {
                Some(e) if cancels.contains(&e) => vec![e],
                _ => cancels.to_vec(),
            };
            Ok(CensusUpdate::Cancel(Cancel {
                trigger,
                cancels: narrowed,
                patient,
                nda: r.nda(),
                movement_id: r.movement_id(),
                at: r.movement_time()?,
            }))
        }
        Action::Merge => {
            if r.segment("MRG").is_none() {
                return Err(CensusError::MissingSegment {
                    message_type,
                    segment: "MRG",
                });
            }
            let merged_ipp = r
                .ipp_in(r.raw("MRG", 1), settings)
                .or_else(|| r.first_id(r.raw("MRG", 1)))
                .ok_or(CensusError::NoMergedIpp)?;
            Ok(CensusUpdate::Merge(Merge {
                survivor: patient,
                merged_ipp,
            }))
        }
    }
}

/// Field access over one message: raw pieces split with the message's delimiters, decoded
/// (unescaped, charset) only when kept.
struct Reader<'m> {
    message: &'m Message<'m>,
    d: Delimiters,
}

/// The `n`-th (1-based) piece of `raw` split on `delim`, empty when absent.
fn piece(raw: &[u8], delim: u8, n: usize) -> &[u8] {
    raw.split(|&b| b == delim)
        .nth(n.saturating_sub(1))
        .unwrap_or_default()
}

impl<'m> Reader<'m> {
    fn new(message: &'m Message<'_>) -> Self {
        Reader {
            message,
            d: *message.delimiters(),
        }
    }

    fn segment(&self, id: &str) -> Option<Segment<'m>> {
        self.message.segment(id, 1)
    }

    /// Field `n` of the first `id` segment, raw; empty when absent.
    fn raw(&self, id: &str, n: usize) -> &'m [u8] {
        self.segment(id)
            .and_then(|s| s.field(n))
            .unwrap_or_default()
    }

    fn component<'r>(&self, raw: &'r [u8], n: usize) -> &'r [u8] {
        piece(raw, self.d.component(), n)
    }

    fn sub<'r>(&self, raw: &'r [u8], n: usize) -> &'r [u8] {
        piece(raw, self.d.subcomponent(), n)
    }

    fn repetitions<'r>(&self, raw: &'r [u8]) -> impl Iterator<Item = &'r [u8]> + use<'r> {
        let rep = self.d.repetition();
        raw.split(move |&b| b == rep).filter(|r| !r.is_empty())
    }

    /// Decoded text; the HL7 null `""` reads as empty.
    fn text(&self, raw: &'m [u8]) -> Cow<'m, str> {
        if raw == b"\"\"" {
            return Cow::Borrowed("");
        }
        self.message.decode(raw)
    }

    fn opt(&self, raw: &'m [u8]) -> Option<String> {
        let text = self.text(raw);
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }

    fn identifier(&self, cx: &'m [u8]) -> Identifier {
        let hd = self.component(cx, 4);
        Identifier {
            value: self.text(self.component(cx, 1)).trim().to_owned(),
            namespace: self.text(self.sub(hd, 1)).into_owned(),
            oid: self.text(self.sub(hd, 2)).into_owned(),
            id_type: self.text(self.component(cx, 5)).into_owned(),
        }
    }

    /// The `PI` identifier of the configured authority in a CX list (PID-3, MRG-1).
    fn ipp_in(&self, raw: &'m [u8], settings: &CensusSettings) -> Option<String> {
        self.repetitions(raw)
            .map(|cx| self.identifier(cx))
            .find(|id| is_ipp(id, settings))
            .map(|id| id.value)
    }

    fn first_id(&self, raw: &'m [u8]) -> Option<String> {
        self.repetitions(raw)
            .map(|cx| self.identifier(cx).value)
            .find(|v| !v.is_empty())
    }

    fn patient(
        &self,
        settings: &CensusSettings,
        message_type: &str,
    ) -> Result<Patient, CensusError> {
        let Some(pid) = self.segment("PID") else {
            return Err(CensusError::MissingSegment {
                message_type: message_type.to_owned(),
                segment: "PID",
            });
        };
        let field = |n: usize| pid.field(n).unwrap_or_default();
        let identifiers: Vec<Identifier> = self
            .repetitions(field(3))
            .map(|cx| self.identifier(cx))
            .filter(|id| !id.value.is_empty())
            .collect();
        let Some(ipp) = identifiers
            .iter()
            .find(|id| is_ipp(id, settings))
            .map(|id| id.value.clone())
        else {
            return Err(CensusError::NoIpp {
                authority: match &settings.ipp_authority {
                    Some(a) => format!("of authority `{a}`"),
                    None => "at all".to_owned(),
                },
                found: crate::text::readable_prefix(field(3), 80),
            });
        };
        let reliability: Vec<String> = self
            .repetitions(field(32))
            .filter_map(|rep| self.opt(self.component(rep, 1)))
            .collect();
        let validated = reliability.iter().any(|r| r == "VALI");
        let ins = validated
            .then(|| {
                identifiers.iter().find(|id| {
                    InsKind::from_oid(&id.oid) != InsKind::Unspecified
                        || matches!(id.id_type.as_str(), "INS" | "INS-NIR")
                })
            })
            .flatten()
            .map(|id| Ins {
                value: id.value.clone(),
                oid: id.oid.clone(),
                kind: InsKind::from_oid(&id.oid),
            });
        let mut legal_name = None;
        let mut untyped = None;
        let mut used_name = None;
        for xpn in self.repetitions(field(5)) {
            let name = PersonName {
                family: self
                    .text(self.sub(self.component(xpn, 1), 1))
                    .trim()
                    .to_owned(),
                given: self.text(self.component(xpn, 2)).trim().to_owned(),
            };
            match &*self.text(self.component(xpn, 7)) {
                "L" if legal_name.is_none() => legal_name = Some(name),
                "D" if used_name.is_none() => used_name = Some(name),
                "" if untyped.is_none() => untyped = Some(name),
                _ => {}
            }
        }
        let birth = self.component(field(7), 1);
        Ok(Patient {
            ipp,
            ins,
            legal_name: legal_name.or(untyped),
            used_name,
            birth_date: birth_date(birth, &self.text(birth))?,
            sex: self.opt(self.component(field(8), 1)),
            reliability: (!reliability.is_empty()).then(|| reliability.join("~")),
            identifiers,
        })
    }

    /// PV1-19, else PID-18.
    fn nda(&self) -> Option<String> {
        self.opt(self.component(self.raw("PV1", 19), 1))
            .or_else(|| self.opt(self.component(self.raw("PID", 18), 1)))
    }

    fn movement_id(&self) -> Option<String> {
        self.opt(self.component(self.raw("ZBE", 1), 1))
    }

    /// ZBE-2, else EVN-6, else MSH-7.
    fn movement_time(&self) -> Result<DateTime, CensusError> {
        for (seg, n, name) in [
            ("ZBE", 2, "ZBE-2"),
            ("EVN", 6, "EVN-6"),
            ("MSH", 7, "MSH-7"),
        ] {
            let raw = self.component(self.raw(seg, n), 1);
            if let Some(at) = self.time(raw, name)? {
                return Ok(at);
            }
        }
        Err(CensusError::NoTime)
    }

    fn time(&self, raw: &'m [u8], field: &str) -> Result<Option<DateTime>, CensusError> {
        let text = self.text(raw);
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        parse_time(text)
            .map(Some)
            .ok_or_else(|| CensusError::BadTime {
                field: field.to_owned(),
                value: crate::text::readable_prefix(raw, 32),
            })
    }

    fn practitioner(&self, n: usize) -> Option<Practitioner> {
        let xcn = self.repetitions(self.raw("PV1", n)).next()?;
        let id = self.text(self.component(xcn, 1)).trim().to_owned();
        let family = self
            .text(self.sub(self.component(xcn, 2), 1))
            .trim()
            .to_owned();
        if id.is_empty() && family.is_empty() {
            return None;
        }
        let authority = self.component(xcn, 9);
        let is_rpps = &*self.text(self.component(xcn, 13)) == "RPPS"
            || &*self.text(self.sub(authority, 2)) == RPPS_OID;
        Some(Practitioner {
            rpps: (is_rpps && !id.is_empty()).then(|| id.clone()),
            id,
            family,
            given: self.text(self.component(xcn, 3)).trim().to_owned(),
            prefix: self.text(self.component(xcn, 6)).trim().to_owned(),
        })
    }

    fn visit(
        &self,
        event: Event,
        correction: bool,
        patient: Patient,
        nda: String,
    ) -> Result<CensusUpdate, CensusError> {
        let pv1 = |n| self.raw("PV1", n);
        let facts = EncounterFacts {
            class: self.opt(self.component(pv1(2), 1)),
            unit: self
                .opt(self.component(self.raw("ZBE", 7), 10))
                .or_else(|| self.opt(self.component(pv1(3), 1))),
            attending: self.practitioner(7),
            admitting: self.practitioner(17),
            referring: self.practitioner(8),
            admit_at: self.time(self.component(pv1(44), 1), "PV1-44")?,
            discharge_at: self.time(self.component(pv1(45), 1), "PV1-45")?,
        };
        Ok(CensusUpdate::Visit(Visit {
            event,
            correction,
            patient,
            nda,
            movement_id: self.movement_id(),
            at: self.movement_time()?,
            facts,
        }))
    }
}

fn is_ipp(id: &Identifier, settings: &CensusSettings) -> bool {
    id.id_type == "PI"
        && settings
            .ipp_authority
            .as_deref()
            .is_none_or(|a| id.namespace == a || id.oid == a)
}

/// PID-7 as ISO 8601 at the precision given; a time part is dropped.
fn birth_date(raw: &[u8], text: &str) -> Result<Option<String>, CensusError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || CensusError::BadTime {
        field: "PID-7".to_owned(),
        value: crate::text::readable_prefix(raw, 32),
    };
    let at = parse_time(text).ok_or_else(bad)?;
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    Ok(Some(match digits {
        4 => format!("{:04}", at.year()),
        6 => format!("{:04}-{:02}", at.year(), at.month()),
        _ => at.date().to_string(),
    }))
}

/// An HL7 DTM: `YYYY[MM[DD[HH[MM[SS[.S+]]]]]]` then an optional `+ZZZZ`/`-ZZZZ` (dropped).
fn parse_time(text: &str) -> Option<DateTime> {
    let (body, offset) = match text.find(['+', '-']) {
        Some(i) => (text.get(..i)?, text.get(i + 1..)?),
        None => (text, ""),
    };
    if !offset.is_empty() && (offset.len() != 4 || !offset.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let (digits, fraction) = match body.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (body, None),
    };
    if !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14)
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let num = |from: usize, to: usize, default: i16| -> Option<i16> {
        match digits.get(from..to) {
            Some(s) => s.parse().ok(),
            None => Some(default),
        }
    };
    let nanos = match fraction {
        None => 0,
        Some(f) if digits.len() == 14 && (1..=9).contains(&f.len()) => {
            if !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let padded = format!("{f:0<9}");
            padded.parse::<i32>().ok()?
        }
        Some(_) => return None,
    };
    DateTime::new(
        num(0, 4, 0)?,
        i8::try_from(num(4, 6, 1)?).ok()?,
        i8::try_from(num(6, 8, 1)?).ok()?,
        i8::try_from(num(8, 10, 0)?).ok()?,
        i8::try_from(num(10, 12, 0)?).ok()?,
        i8::try_from(num(12, 14, 0)?).ok()?,
        nanos,
    )
    .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    const AUTH: &str = "CH&1.2.250.1.999.1&ISO";
    const RPPS_XCN: &str =
        "10003456789^LEBLANC^PIERRE^^^DR^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS";

    fn settings() -> CensusSettings {
        CensusSettings {
            ipp_authority: Some("CH".to_owned()),
        }
    }

    /// An ADT message: `trigger`, PID-3, PID-32, then PV1 and ZBE lines (may be empty).
    fn adt(trigger: &str, pid3: &str, pid32: &str, pv1: &str, zbe: &str) -> String {
        let mut m = format!(
            "MSH|^~\\&|DPI|CH|OB|CH|20261122080000||ADT^{trigger}^ADT_A01|1|P|2.5|||||FRA|UNICODE UTF-8\r\
             EVN||20261122080000||||20261122080500\r\
             PID|1||{pid3}||DURAND^JEANNE^JEANNE^^^^L~MARTIN^JEANNE^^^^^D||19750412|F||||||||||7001^^^{AUTH}^AN||||||||||||||{pid32}\r"
        );
        if !pv1.is_empty() {
            m.push_str(pv1);
            m.push('\r');
        }
        if !zbe.is_empty() {
            m.push_str(zbe);
            m.push('\r');
        }
        m
    }

    fn pv1(
        class: &str,
        unit: &str,
        doctor: &str,
        nda: &str,
        admit: &str,
        discharge: &str,
    ) -> String {
        let mut f = vec![String::new(); 46];
        f[1] = "1".into();
        f[2] = class.into();
        f[3] = format!("{unit}^101^1^CH");
        f[7] = doctor.into();
        f[19] = if nda.is_empty() {
            String::new()
        } else {
            format!("{nda}^^^{AUTH}^VN")
        };
        f[44] = admit.into();
        f[45] = discharge.into();
        format!(
            "PV1{}",
            f[1..].iter().fold(String::new(), |acc, x| acc + "|" + x)
        )
    }

    fn ipp() -> String {
        format!(
            "100001^^^{AUTH}^PI~275046912345678^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
        )
    }

    fn read(raw: &str) -> Result<CensusUpdate, CensusError> {
        interpret(&Message::parse(raw.as_bytes()).unwrap(), &settings())
    }

    fn dt(s: &str) -> DateTime {
        s.parse().unwrap()
    }

    #[rstest]
    #[case::ok_a01("A01", Event::Admit)]
    #[case::ok_a04("A04", Event::Register)]
    #[case::ok_a05("A05", Event::PreAdmit)]
    #[case::ok_a02("A02", Event::Transfer)]
    #[case::ok_a03("A03", Event::Discharge)]
    #[case::ok_a06("A06", Event::ToInpatient)]
    #[case::ok_a07("A07", Event::ToOutpatient)]
    #[case::ok_a21("A21", Event::LeaveOut)]
    #[case::ok_a22("A22", Event::LeaveReturn)]
    #[case::ok_a54("A54", Event::DoctorChange)]
    #[case::ok_a08("A08", Event::VisitUpdate)]
    fn ok_visit_events(#[case] trigger: &str, #[case] event: Event) {
        let raw = adt(
            trigger,
            &ipp(),
            "VALI",
            &pv1("I", "CARDIO", RPPS_XCN, "900001", "20261122081500", ""),
            "ZBE|MVT1^CH|20261122081600||INSERT|N||^^^^^^UF^^^4010",
        );
        let CensusUpdate::Visit(v) = read(&raw).unwrap() else {
            panic!("not a visit")
        };
        assert_eq!(v.event, event);
        assert!(!v.correction);
        assert_eq!(v.nda, "900001");
        assert_eq!(v.movement_id.as_deref(), Some("MVT1"));
        assert_eq!(v.at, dt("2026-11-22T08:16:00"));
        assert_eq!(v.patient.ipp, "100001");
        assert_eq!(v.facts.class.as_deref(), Some("I"));
        assert_eq!(v.facts.unit.as_deref(), Some("4010"));
        assert_eq!(v.facts.admit_at, Some(dt("2026-11-22T08:15:00")));
        assert_eq!(v.facts.discharge_at, None);
        let doctor = v.facts.attending.unwrap();
        assert_eq!(doctor.rpps.as_deref(), Some("10003456789"));
        assert_eq!(
            (doctor.family.as_str(), doctor.given.as_str()),
            ("LEBLANC", "PIERRE")
        );
        assert_eq!(event.trigger(), trigger);
        assert_eq!(Event::from_trigger(trigger), Some(event));
    }

    #[rstest]
    #[case::ok_a28("A28")]
    #[case::ok_a31("A31")]
    fn ok_identity_events(#[case] trigger: &str) {
        let raw = adt(trigger, &ipp(), "VALI", "PV1|1|N", "");
        let CensusUpdate::Identity(p) = read(&raw).unwrap() else {
            panic!("not an identity")
        };
        assert_eq!(p.ipp, "100001");
        assert_eq!(
            p.legal_name,
            Some(PersonName {
                family: "DURAND".into(),
                given: "JEANNE".into()
            })
        );
        assert_eq!(p.used_name.unwrap().family, "MARTIN");
        assert_eq!(p.birth_date.as_deref(), Some("1975-04-12"));
        assert_eq!(p.sex.as_deref(), Some("F"));
        assert_eq!(p.reliability.as_deref(), Some("VALI"));
        assert_eq!(p.identifiers.len(), 2);
    }

    #[test]
    fn ok_a08_without_visit_is_identity() {
        let raw = adt("A08", &format!("100001^^^{AUTH}^PI"), "", "", "")
            .replace(&format!("7001^^^{AUTH}^AN"), "");
        assert!(matches!(read(&raw).unwrap(), CensusUpdate::Identity(_)));
    }

    #[test]
    fn ok_nda_falls_back_to_pid18_and_unit_to_pv1() {
        let raw = adt(
            "A01",
            &ipp(),
            "",
            &pv1("I", "CARDIO", "", "", "", ""),
            "ZBE|M2|20261122090000||INSERT|N",
        );
        let CensusUpdate::Visit(v) = read(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(v.nda, "7001");
        assert_eq!(v.facts.unit.as_deref(), Some("CARDIO"));
        assert_eq!(v.facts.attending, None);
    }

    #[test]
    fn ok_movement_time_falls_back_to_evn6_then_msh7() {
        let raw = adt("A01", &ipp(), "", &pv1("I", "C", "", "9", "", ""), "");
        let CensusUpdate::Visit(v) = read(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(v.at, dt("2026-11-22T08:05:00"));
        assert_eq!(v.movement_id, None);
        let raw = raw.replace("||||20261122080500", "||||");
        let CensusUpdate::Visit(v) = read(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(v.at, dt("2026-11-22T08:00:00"));
    }

    #[rstest]
    #[case::ok_a38("A38", "", &[Event::PreAdmit])]
    #[case::ok_a11_any("A11", "", &[Event::Admit, Event::Register])]
    #[case::ok_a11_a04("A11", "A04", &[Event::Register])]
    #[case::ok_a11_a01("A11", "A01", &[Event::Admit])]
    #[case::ok_a12("A12", "A02", &[Event::Transfer])]
    #[case::ok_a13("A13", "A03", &[Event::Discharge])]
    #[case::ok_a52("A52", "A21", &[Event::LeaveOut])]
    #[case::ok_a53("A53", "A22", &[Event::LeaveReturn])]
    #[case::ok_a55("A55", "A54", &[Event::DoctorChange])]
    fn ok_cancels(#[case] trigger: &str, #[case] original: &str, #[case] cancels: &[Event]) {
        let zbe = format!("ZBE|MVT7^CH|20261122100000||CANCEL|N|{original}");
        let raw = adt(
            trigger,
            &ipp(),
            "",
            &pv1("I", "C", "", "900001", "", ""),
            &zbe,
        );
        let CensusUpdate::Cancel(c) = read(&raw).unwrap() else {
            panic!("not a cancel")
        };
        assert_eq!(c.trigger, trigger);
        assert_eq!(c.cancels, cancels);
        assert_eq!(c.movement_id.as_deref(), Some("MVT7"));
        assert_eq!(c.nda.as_deref(), Some("900001"));
        assert_eq!(c.at, dt("2026-11-22T10:00:00"));
    }

    #[rstest]
    #[case::ok_z99("Z99", "UPDATE|N|A02", Event::Transfer)]
    #[case::ok_zbe4_update("A02", "UPDATE|N|", Event::Transfer)]
    fn ok_corrections(#[case] trigger: &str, #[case] zbe: &str, #[case] event: Event) {
        let zbe = format!("ZBE|MVT2^CH|20261122100000||{zbe}");
        let raw = adt(
            trigger,
            &ipp(),
            "",
            &pv1("I", "PNEUMO", "", "900001", "", ""),
            &zbe,
        );
        let CensusUpdate::Visit(v) = read(&raw).unwrap() else {
            panic!("not a visit")
        };
        assert_eq!((v.event, v.correction), (event, true));
        assert_eq!(v.movement_id.as_deref(), Some("MVT2"));
    }

    #[test]
    fn ok_merge() {
        let mut raw = adt("A40", &ipp(), "", "", "");
        raw.push_str(&format!("MRG|100009^^^OTHER^PI~100007^^^{AUTH}^PI\r"));
        assert_eq!(
            read(&raw).unwrap(),
            CensusUpdate::Merge(Merge {
                survivor: match read(&adt("A31", &ipp(), "", "", "")).unwrap() {
                    CensusUpdate::Identity(p) => p,
                    _ => panic!(),
                },
                merged_ipp: "100007".into(),
            })
        );
    }

    #[rstest]
    #[case::ok_nir_vali("1.2.250.1.213.1.4.8", "INS", "VALI", Some(InsKind::Nir))]
    #[case::ok_nia_vali("1.2.250.1.213.1.4.9", "INS", "VALI", Some(InsKind::Nia))]
    #[case::ok_test_vali("1.2.250.1.213.1.4.10", "INS", "VALI", Some(InsKind::Test))]
    #[case::ok_cx5_only("", "INS-NIR", "VALI", Some(InsKind::Unspecified))]
    #[case::ok_vali_repeated("1.2.250.1.213.1.4.8", "INS", "HOMON~VALI", Some(InsKind::Nir))]
    #[case::ok_prov("1.2.250.1.213.1.4.8", "INS", "PROV", None)]
    #[case::ok_no_status("1.2.250.1.213.1.4.8", "INS", "", None)]
    #[case::ok_other_oid("1.2.250.1.999.9", "NH", "VALI", None)]
    fn ok_ins_rules(
        #[case] oid: &str,
        #[case] id_type: &str,
        #[case] pid32: &str,
        #[case] expected: Option<InsKind>,
    ) {
        let pid3 = format!("100001^^^{AUTH}^PI~275046912345678^^^X&{oid}&ISO^{id_type}");
        let CensusUpdate::Identity(p) = read(&adt("A28", &pid3, pid32, "", "")).unwrap() else {
            panic!()
        };
        assert_eq!(p.ins.as_ref().map(|i| i.kind), expected);
        if let Some(ins) = p.ins {
            assert_eq!(ins.value, "275046912345678");
            assert_eq!(ins.oid, oid);
        }
    }

    #[rstest]
    #[case::ok_rpps_type_and_oid(RPPS_XCN, Some("10003456789"))]
    #[case::ok_rpps_type_only("10003456789^LEBLANC^PIERRE^^^DR^^^^^^^RPPS", Some("10003456789"))]
    #[case::ok_rpps_oid_only(
        "10003456789^LEBLANC^PIERRE^^^DR^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO",
        Some("10003456789")
    )]
    #[case::ok_adeli("751234567^LEBLANC^PIERRE^^^DR^^^^^^^ADELI", None)]
    #[case::ok_local("D42^LEBLANC^PIERRE", None)]
    #[case::ok_repeated("10003456789^A^B^^^^^^^^^^RPPS~999^C^D", Some("10003456789"))]
    fn ok_rpps(#[case] xcn: &str, #[case] rpps: Option<&str>) {
        let raw = adt(
            "A54",
            &ipp(),
            "",
            &pv1("I", "C", xcn, "9", "", ""),
            "ZBE|M|20261122100000||INSERT|N",
        );
        let CensusUpdate::Visit(v) = read(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(v.facts.attending.unwrap().rpps.as_deref(), rpps);
    }

    #[rstest]
    #[case::ok_first_pi_without_setting(None, "100002^^^OTHER^PI~100001^^^CH^PI", "100002")]
    #[case::ok_namespace(Some("CH"), "100002^^^OTHER^PI~100001^^^CH^PI", "100001")]
    #[case::ok_oid(Some("1.2.250.1.999.1"), &format!("100002^^^OTHER^PI~100001^^^{AUTH}^PI"), "100001")]
    fn ok_ipp_authority(
        #[case] authority: Option<&str>,
        #[case] pid3: &str,
        #[case] expected: &str,
    ) {
        let settings = CensusSettings {
            ipp_authority: authority.map(str::to_owned),
        };
        let raw = adt("A28", pid3, "", "", "");
        let m = Message::parse(raw.as_bytes()).unwrap();
        let CensusUpdate::Identity(p) = interpret(&m, &settings).unwrap() else {
            panic!()
        };
        assert_eq!(p.ipp, expected);
    }

    #[rstest]
    #[case::ok_other_type(
        "MSH|^~\\&|A|B|||20260101||ORM^O01|1|P|2.5\r",
        "`ORM^O01` is not an ADT message"
    )]
    #[case::ok_other_trigger(
        "MSH|^~\\&|A|B|||20260101||ADT^A60|1|P|2.5\r",
        "ADT trigger `A60` is not a census event"
    )]
    fn ok_ignored(#[case] raw: &str, #[case] reason: &str) {
        assert_eq!(
            read(raw).unwrap(),
            CensusUpdate::Ignored {
                reason: reason.to_owned()
            }
        );
    }

    #[rstest]
    #[case::err_no_pid(
        "MSH|^~\\&|A|B|||20260101||ADT^A01|1|P|2.5\rPV1|1|I\r",
        "ADT^A01: no PID segment: the census needs it; fix the sender's message"
    )]
    #[case::err_no_ipp(
        &adt("A01", "123^^^OTHER^PI", "", "", ""),
        "PID-3: no `PI` identifier of authority `CH` (found `123^^^OTHER^PI`): check `ipp_authority` in the census settings or the sender's PID-3"
    )]
    #[case::err_no_nda(
        &adt("A02", &ipp(), "", "PV1|1|I", "").replace(&format!("7001^^^{AUTH}^AN"), ""),
        "PV1-19: no visit number (NDA), and no PID-18 either: the census cannot follow this A02 without one; fix the sender's PV1-19"
    )]
    #[case::err_bad_admit(
        &adt("A01", &ipp(), "", &pv1("I", "C", "", "9", "2026-11-22", ""), ""),
        "PV1-44: `2026-11-22` is not an HL7 date/time (expected YYYY[MM[DD[HH[MM[SS[.S]]]]]][+ZZZZ])"
    )]
    #[case::err_bad_birth(
        &adt("A28", &ipp(), "", "", "").replace("19750412", "1975041\x0B"),
        "PID-7: `1975041\\x0B` is not an HL7 date/time (expected YYYY[MM[DD[HH[MM[SS[.S]]]]]][+ZZZZ])"
    )]
    #[case::err_bad_zbe2(
        &adt("A01", &ipp(), "", &pv1("I", "C", "", "9", "", ""), "ZBE|M|20261322||INSERT"),
        "ZBE-2: `20261322` is not an HL7 date/time (expected YYYY[MM[DD[HH[MM[SS[.S]]]]]][+ZZZZ])"
    )]
    #[case::err_no_time(
        "MSH|^~\\&|A|B|||||ADT^A01|1|P|2.5\rPID|1||1^^^CH^PI\rPV1|1|I|||||||||||||||||9\r",
        "MSH-7: no message time, and no ZBE-2 or EVN-6 either: the census orders movements by time"
    )]
    #[case::err_z99_trigger(
        &adt("Z99", &ipp(), "", &pv1("I", "C", "", "9", "", ""), "ZBE|M|20261122||UPDATE|N|A08"),
        "ZBE-6: `A08` is not a movement trigger: a Z99 update needs the original trigger (A01, A02, A03, A04, A05, A06, A07, A21, A22, A54)"
    )]
    #[case::err_no_mrg(
        &adt("A40", &ipp(), "", "", ""),
        "ADT^A40^ADT_A01: no MRG segment: the census needs it; fix the sender's message"
    )]
    #[case::err_empty_mrg(
        &(adt("A40", &ipp(), "", "", "") + "MRG|\r"),
        "MRG-1: no identifier: an A40 merge needs the IPP that disappears"
    )]
    fn err_interpret(#[case] raw: &str, #[case] expected: &str) {
        assert_eq!(read(raw).unwrap_err().to_string(), expected);
    }

    #[rstest]
    #[case::err_no_ipp(
        &adt("A01", "123^^^OTHER^PI", "", "", ""),
        "PID-3: no `PI` identifier of authority `CH` (found 14 characters, not shown here: see the journal): check `ipp_authority` in the census settings or the sender's PID-3"
    )]
    #[case::err_bad_birth(
        &adt("A28", &ipp(), "", "", "").replace("19750412", "1975X412"),
        "PID-7: the value (not shown here: see the journal) is not an HL7 date/time (expected YYYY[MM[DD[HH[MM[SS[.S]]]]]][+ZZZZ])"
    )]
    #[case::err_z99_trigger_kept(
        &adt("Z99", &ipp(), "", &pv1("I", "C", "", "9", "", ""), "ZBE|M|20261122||UPDATE|N|A08"),
        "ZBE-6: `A08` is not a movement trigger: a Z99 update needs the original trigger (A01, A02, A03, A04, A05, A06, A07, A21, A22, A54)"
    )]
    fn err_without_values_hides_identifiers_and_dates(#[case] raw: &str, #[case] expected: &str) {
        let error = read(raw).unwrap_err();
        assert_eq!(error.without_values(), expected);
        for value in ["123", "1975X412"] {
            assert!(!error.without_values().contains(value));
        }
    }

    #[rstest]
    #[case::ok_year("1975", Some("1975-01-01T00:00:00"))]
    #[case::ok_month("197504", Some("1975-04-01T00:00:00"))]
    #[case::ok_minutes("202611220815", Some("2026-11-22T08:15:00"))]
    #[case::ok_offset("20261122081500+0100", Some("2026-11-22T08:15:00"))]
    #[case::ok_fraction("20261122081500.25", Some("2026-11-22T08:15:00.25"))]
    #[case::err_odd("2026112", None)]
    #[case::err_offset("20261122+1", None)]
    #[case::err_month("20261301", None)]
    #[case::err_fraction_short("202611.5", None)]
    #[case::err_letters("2026AB", None)]
    fn parse_times(#[case] text: &str, #[case] expected: Option<&str>) {
        assert_eq!(parse_time(text), expected.map(dt));
    }

    #[test]
    fn ok_partial_birth_dates() {
        assert_eq!(
            birth_date(b"1975", "1975").unwrap().as_deref(),
            Some("1975")
        );
        assert_eq!(
            birth_date(b"197504", "197504").unwrap().as_deref(),
            Some("1975-04")
        );
        assert_eq!(birth_date(b"\"\"", "").unwrap(), None);
    }

    #[test]
    fn ok_latin1_sample_names() {
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/samples/adt/07-a31-update-latin1.hl7"
        ))
        .unwrap();
        let m = Message::parse(&raw).unwrap();
        let settings = CensusSettings {
            ipp_authority: Some("CH_EXEMPLE".into()),
        };
        let CensusUpdate::Identity(p) = interpret(&m, &settings).unwrap() else {
            panic!()
        };
        assert_eq!(p.legal_name.unwrap().family, "GÉRARD");
        assert_eq!(p.ins.unwrap().kind, InsKind::Test);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(tail in "[|^~&A-Z0-9\r.+-]{0,200}") {
            let raw = format!("MSH|^~\\&|A|B|||20260101||ADT^A01|1|P|2.5\rPID|1||1^^^CH^PI{tail}");
            if let Ok(m) = Message::parse(raw.as_bytes()) {
                let _ = interpret(&m, &settings());
                let _ = interpret(&m, &CensusSettings::default());
            }
        }
    }
}
