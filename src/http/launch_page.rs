//! The launch page (`GET /launch/scan?…&mode=page`): instead of redirecting the browser to
//! Scan & Go, ordobridge answers a page that opens Scan & Go in an iframe (or a popup, `[launch]
//! page_mode = "popup"`) and shows, live, what became of the prescription the clinician
//! imports: received from Posos, held until the patient is known, mapped, queued, sent, and
//! acknowledged by the EHR (`ACK AA`), or the error in words a clinician understands.
//!
//! - The page listens for Scan & Go's `postMessage` (`{status, prescription}`) from the
//!   configured Posos origin only (`[launch] posos_origin`; others are ignored), and for the
//!   `#success` / `#error` hash of the Scan & Go window when the browser lets it read it (same
//!   origin: the built-in simulator).
//! - Its status comes from `GET /launch/status/{token}` (polled): `token` is 256 random bits
//!   drawn when the launch opened the page, known only to that page. The answer holds states,
//!   times and destination names, never a patient value. The launch is remembered in memory
//!   ([`OpenLaunches`]: bounded, forgotten after [`LAUNCH_TTL`]); a restart forgets it and the
//!   page says so.
//! - Which pushed bundle is the launch's: the first bundle received after the launch whose
//!   `id://partner` identifier is the `patientId` the launch sent (and whose id is the
//!   `bundleId` of Scan & Go's message, when the page has it). [`ImportTracker`] finds it and
//!   reads its fate from the store; this module only turns those facts into the page's words.
//! - No inline script: the page's script and style sheet are embedded assets
//!   (`/launch/assets/…`); its policy allows scripts from itself, polling itself, and frames
//!   from the Posos origin only.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde_json::{Value, json};

use crate::console::Lang;

/// The page's script, embedded in the binary.
pub const PAGE_SCRIPT: &str = include_str!("assets/launch.js");
/// The page's style sheet, embedded in the binary.
pub const PAGE_STYLE: &str = include_str!("assets/launch.css");
pub const SCRIPT_PATH: &str = "/launch/assets/launch.js";
pub const STYLE_PATH: &str = "/launch/assets/launch.css";

/// How long an open launch page can follow its prescription (a bundle may be held for hours
/// until the patient's admission reaches the EHR).
pub const LAUNCH_TTL: Duration = Duration::from_secs(24 * 3600);
/// How many open launch pages are remembered (the oldest forgotten first): a launch is a few
/// dozen bytes, so this bounds the memory to well under a few MiB.
pub const KEPT_LAUNCHES: usize = 20_000;

/// How the launch page opens Scan & Go (`[launch] page_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageMode {
    /// In an iframe of the page (Posos must allow being framed by ordobridge's origin).
    #[default]
    Iframe,
    /// In a popup window the page opens (a button, if the browser blocks it).
    Popup,
}

impl PageMode {
    fn code(self) -> &'static str {
        match self {
            PageMode::Iframe => "iframe",
            PageMode::Popup => "popup",
        }
    }
}

/// The launch page's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSettings {
    pub mode: PageMode,
    /// The origin of Scan & Go (`https://app.posos.co`): the only one whose messages count
    /// and that the page may frame. `None` until the engine fills it from `[posos]`.
    pub posos_origin: Option<String>,
}

/// The origin (`scheme://host[:port]`) of an absolute http(s) URL; `None` otherwise.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url.trim()).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return None;
    }
    let origin = parsed.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// One launch that answered a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenLaunch {
    /// The `patientId` sent to Posos; the pushed bundle carries it back (`id://partner`).
    pub patient_id: String,
    /// When the launch began: its bundle arrives after.
    pub started: jiff::Timestamp,
    /// Its bundle's journal row, once found (it never changes after).
    pub journal_id: Option<i64>,
    opened: Instant,
}

/// The launches that answered a page, by their token; shared by the launch and status routes
/// and kept across configuration reloads.
#[derive(Debug, Default)]
pub struct OpenLaunches {
    /// std mutex: held to insert or copy one entry, never across an await.
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    by_token: HashMap<String, OpenLaunch>,
    order: VecDeque<String>,
}

impl OpenLaunches {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a launch and returns its fresh token; `None` if the system's random
    /// generator failed.
    pub fn open(&self, patient_id: String, started: jiff::Timestamp) -> Option<String> {
        let token = crate::console::session::random_token::<32>()?;
        let mut registry = self.lock();
        registry.by_token.insert(
            token.clone(),
            OpenLaunch {
                patient_id,
                started,
                journal_id: None,
                opened: Instant::now(),
            },
        );
        registry.order.push_back(token.clone());
        while registry.order.len() > KEPT_LAUNCHES
            || registry
                .order
                .front()
                .and_then(|t| registry.by_token.get(t))
                .is_some_and(|l| l.opened.elapsed() > LAUNCH_TTL)
        {
            if let Some(oldest) = registry.order.pop_front() {
                registry.by_token.remove(&oldest);
            }
        }
        Some(token)
    }

    /// The launch of `token`, unless unknown or older than [`LAUNCH_TTL`].
    pub fn get(&self, token: &str) -> Option<OpenLaunch> {
        self.lock()
            .by_token
            .get(token)
            .filter(|l| l.opened.elapsed() <= LAUNCH_TTL)
            .cloned()
    }

    /// Records that the launch of `token` pushed journal row `journal_id`.
    pub fn found(&self, token: &str, journal_id: i64) {
        if let Some(launch) = self.lock().by_token.get_mut(token) {
            launch.journal_id = Some(journal_id);
        }
    }

    /// How many launches are remembered.
    pub fn len(&self) -> usize {
        self.lock().by_token.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What became of the journal row of a pushed bundle (the store's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    /// Committed, not settled yet (or held).
    Accepted,
    /// Refused: unreadable, or no route could map it.
    Rejected,
    /// Mapped: its messages are queued.
    Processed,
}

/// A hold of the bundle until its patient is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldFact {
    pub held_at: jiff::Timestamp,
    pub release_at: jiff::Timestamp,
    pub released_at: Option<jiff::Timestamp>,
}

/// Where an outbound message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Waiting for delivery (maybe retrying).
    Queued,
    /// Acknowledged by the receiver (or written, for a file destination).
    Delivered,
    /// Refused for good or given up: waits for an operator.
    Dead,
}

/// One outbound message made from the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFact {
    pub destination: String,
    pub enqueued_at: jiff::Timestamp,
    pub state: MessageState,
    /// Attempts that reached the receiver (or may have).
    pub attempts: u32,
    pub delivered_at: Option<jiff::Timestamp>,
    /// MSA-1 of the receiver's last answer (`AA`, `CA`; `AE`, `AR` for a refusal), when known.
    pub ack_code: Option<String>,
}

/// What the store says of a launch's bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportFacts {
    pub journal_id: i64,
    pub received_at: jiff::Timestamp,
    pub row: RowState,
    pub hold: Option<HoldFact>,
    pub messages: Vec<MessageFact>,
}

/// A boxed future of the [`ImportTracker`] (the trait is used as `dyn`).
pub type TrackerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// The store as the launch page sees it; the engine implements it.
pub trait ImportTracker: Send + Sync + 'static {
    /// The journal row of the first bundle received at or after `since` for `patient_id`
    /// (and whose id is `bundle`, when given).
    fn find<'a>(
        &'a self,
        patient_id: &'a str,
        since: jiff::Timestamp,
        bundle: Option<&'a str>,
    ) -> TrackerFuture<'a, Option<i64>>;
    /// What became of journal row `journal_id`; `None` once pruned.
    fn facts(&self, journal_id: i64) -> TrackerFuture<'_, Option<ImportFacts>>;
}

/// The overall state of an import, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportState {
    /// No bundle yet.
    Waiting,
    /// Received, being settled.
    Received,
    /// Held until the patient is known.
    Held,
    /// Mapped and queued for the EHR.
    Queued,
    /// Sent at least once, no acknowledgement yet.
    Sent,
    /// Acknowledged by every destination.
    Acked,
    /// Mapped, but no destination takes it.
    Nothing,
    /// Refused somewhere: a person must look.
    Error,
}

impl ImportState {
    pub fn code(self) -> &'static str {
        match self {
            ImportState::Waiting => "waiting",
            ImportState::Received => "received",
            ImportState::Held => "held",
            ImportState::Queued => "queued",
            ImportState::Sent => "sent",
            ImportState::Acked => "acked",
            ImportState::Nothing => "nothing",
            ImportState::Error => "error",
        }
    }

    /// Whether the page may stop asking.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ImportState::Acked | ImportState::Nothing | ImportState::Error
        )
    }
}

fn time(at: jiff::Timestamp) -> String {
    format!("{at:.0}")
}

/// The clinician's words for a message's fate.
fn message_label(lang: Lang, message: &MessageFact) -> String {
    let code = message.ack_code.as_deref().unwrap_or("");
    match message.state {
        MessageState::Delivered if code.is_empty() => lang
            .pick("Remise au DPI", "Delivered to the EHR")
            .to_string(),
        MessageState::Delivered => match lang {
            Lang::Fr => format!("Reçue par le DPI (ACK {code})"),
            Lang::En => format!("Received by the EHR (ACK {code})"),
        },
        MessageState::Dead if code == "AR" || code == "CR" => match lang {
            Lang::Fr => format!(
                "Refusée par le DPI (ACK {code}) : prévenez l'équipe informatique, rien n'a été intégré"
            ),
            Lang::En => {
                format!("Refused by the EHR (ACK {code}): tell the IT team, nothing was integrated")
            }
        },
        MessageState::Dead => match lang {
            Lang::Fr => format!(
                "Non remise au DPI après {} tentative(s) : prévenez l'équipe informatique",
                message.attempts
            ),
            Lang::En => format!(
                "Not delivered to the EHR after {} attempt(s): tell the IT team",
                message.attempts
            ),
        },
        MessageState::Queued if message.attempts == 0 => lang
            .pick("En file d'attente pour le DPI", "Queued for the EHR")
            .to_string(),
        MessageState::Queued => match lang {
            Lang::Fr => format!(
                "Envoyée au DPI, en attente de son accusé de réception (tentative {})",
                message.attempts
            ),
            Lang::En => format!(
                "Sent to the EHR, waiting for its acknowledgement (attempt {})",
                message.attempts
            ),
        },
    }
}

/// The state of an import from what the store says.
pub fn import_state(facts: Option<&ImportFacts>) -> ImportState {
    let Some(facts) = facts else {
        return ImportState::Waiting;
    };
    match facts.row {
        RowState::Rejected => ImportState::Error,
        RowState::Accepted => match &facts.hold {
            Some(hold) if hold.released_at.is_none() => ImportState::Held,
            _ => ImportState::Received,
        },
        RowState::Processed => {
            let messages = &facts.messages;
            if messages.is_empty() {
                ImportState::Nothing
            } else if messages.iter().any(|m| m.state == MessageState::Dead) {
                ImportState::Error
            } else if messages.iter().all(|m| m.state == MessageState::Delivered) {
                ImportState::Acked
            } else if messages.iter().any(|m| m.attempts > 0) {
                ImportState::Sent
            } else {
                ImportState::Queued
            }
        }
    }
}

/// The status answer: the state, a headline, the steps with their times, one line per
/// message. States, times and destination names only: never a patient value.
pub fn status_view(facts: Option<&ImportFacts>, lang: Lang) -> Value {
    let state = import_state(facts);
    let mut steps = Vec::new();
    let mut step = |code: &str, label: &str, at: Option<jiff::Timestamp>| {
        steps.push(json!({"step": code, "label": label, "at": at.map(time)}));
    };
    let mut messages = Vec::new();
    if let Some(facts) = facts {
        step(
            "pushed",
            lang.pick(
                "Prescription reçue de Posos",
                "Prescription received from Posos",
            ),
            Some(facts.received_at),
        );
        if let Some(hold) = &facts.hold {
            step(
                "held",
                lang.pick(
                    "En attente du patient dans le DPI",
                    "Waiting for the patient in the EHR",
                ),
                Some(hold.held_at),
            );
        }
        if let Some(first) = facts.messages.iter().map(|m| m.enqueued_at).min() {
            step(
                "mapped",
                lang.pick("Convertie en message HL7", "Mapped to an HL7 message"),
                Some(first),
            );
            step(
                "queued",
                lang.pick("Mise en file pour le DPI", "Queued for the EHR"),
                Some(first),
            );
        }
        if facts.messages.iter().any(|m| m.attempts > 0) {
            let sent = facts.messages.iter().filter_map(|m| m.delivered_at).min();
            step("sent", lang.pick("Envoyée au DPI", "Sent to the EHR"), sent);
        }
        if state == ImportState::Acked {
            let last = facts.messages.iter().filter_map(|m| m.delivered_at).max();
            let codes: Vec<&str> = facts
                .messages
                .iter()
                .filter_map(|m| m.ack_code.as_deref())
                .collect();
            let label = match (codes.first(), lang) {
                (Some(code), Lang::Fr) => format!("ACK {code} du DPI"),
                (Some(code), Lang::En) => format!("ACK {code} from the EHR"),
                (None, _) => lang.pick("Remise au DPI", "Delivered to the EHR").into(),
            };
            step("acked", &label, last);
        }
        for message in &facts.messages {
            messages.push(json!({
                "destination": message.destination,
                "label": message_label(lang, message),
                "at": message.delivered_at.map(time),
            }));
        }
    }
    let headline = match (state, facts) {
        (ImportState::Waiting, _) | (_, None) => lang
            .pick(
                "En attente de l'import depuis Scan & Go",
                "Waiting for the import from Scan & Go",
            )
            .to_string(),
        (ImportState::Received, Some(_)) => lang
            .pick(
                "Prescription reçue, conversion en cours",
                "Prescription received, being converted",
            )
            .to_string(),
        (ImportState::Held, Some(facts)) => {
            let until = facts
                .hold
                .as_ref()
                .map(|h| time(h.release_at))
                .unwrap_or_default();
            match lang {
                Lang::Fr => format!(
                    "En attente de l'admission du patient dans le DPI : la prescription part dès qu'elle arrive (au plus tard {until})"
                ),
                Lang::En => format!(
                    "Waiting for the patient's admission in the EHR: the prescription goes as soon as it arrives (at the latest {until})"
                ),
            }
        }
        (ImportState::Queued, Some(_)) => lang
            .pick("En file d'attente pour le DPI", "Queued for the EHR")
            .to_string(),
        (ImportState::Sent, Some(_)) => lang
            .pick(
                "Envoyée au DPI, en attente de son accusé de réception",
                "Sent to the EHR, waiting for its acknowledgement",
            )
            .to_string(),
        (ImportState::Acked, Some(facts)) => match facts.messages.first() {
            Some(first) => message_label(lang, first),
            None => String::new(),
        },
        (ImportState::Nothing, Some(_)) => lang
            .pick(
                "Reçue, mais aucun message n'est prévu vers le DPI pour cette prescription : prévenez l'équipe informatique si c'est inattendu",
                "Received, but no message to the EHR is configured for this prescription: tell the IT team if this is unexpected",
            )
            .to_string(),
        (ImportState::Error, Some(facts)) => match facts
            .messages
            .iter()
            .find(|m| m.state == MessageState::Dead)
        {
            Some(dead) => message_label(lang, dead),
            None => match lang {
                Lang::Fr => format!(
                    "La prescription n'a pas pu être lue ou convertie pour le DPI ; rien n'a été envoyé. Prévenez l'équipe informatique (référence : import {})",
                    facts.journal_id
                ),
                Lang::En => format!(
                    "The prescription could not be read or converted for the EHR; nothing was sent. Tell the IT team (reference: import {})",
                    facts.journal_id
                ),
            },
        },
    };
    json!({
        "state": state.code(),
        "final": state.is_final(),
        "headline": headline,
        "steps": steps,
        "messages": messages,
    })
}

/// The launch page: Scan & Go (`scan_url`) in an iframe or a popup, and the status area the
/// script fills from `status_url`. Every value is escaped by maud; none is a patient's.
pub fn render_page(
    lang: Lang,
    mode: PageMode,
    scan_url: &str,
    posos_origin: &str,
    status_url: &str,
    correlation_id: &str,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Posos Scan & Go — ordobridge" }
                link rel="stylesheet" href=(STYLE_PATH);
                script src=(SCRIPT_PATH) defer {}
            }
            body {
                main id="launch"
                    data-mode=(mode.code())
                    data-scan=(scan_url)
                    data-origin=(posos_origin)
                    data-status=(status_url)
                    data-lang=(lang.code())
                    data-msg-imported=(lang.pick("Scan & Go : import terminé", "Scan & Go: import done"))
                    data-msg-import-error=(lang.pick("Scan & Go signale un échec de l'import : réessayez depuis Scan & Go", "Scan & Go reports that the import failed: try again from Scan & Go"))
                    data-msg-unknown=(lang.pick("Ce lancement n'est plus suivi (le service a redémarré ou le lien a expiré) : relancez depuis le DPI pour suivre une nouvelle prescription", "This launch is no longer followed (the service restarted or the link expired): launch again from the EHR to follow a new prescription"))
                    data-msg-unreachable=(lang.pick("Suivi momentanément indisponible, nouvel essai…", "Follow-up unavailable for a moment, trying again…"))
                    data-msg-late=(lang.pick("Scan & Go a terminé mais ordobridge n'a encore rien reçu : si cela dure, prévenez l'équipe informatique", "Scan & Go is done but ordobridge has received nothing yet: if this lasts, tell the IT team"))
                {
                    section id="follow" aria-labelledby="follow-title" {
                        h1 id="follow-title" { (lang.pick("Suivi de la prescription", "Prescription follow-up")) }
                        p id="headline" role="status" aria-live="polite" {
                            (lang.pick("En attente de l'import depuis Scan & Go", "Waiting for the import from Scan & Go"))
                        }
                        p id="scan-status" {}
                        ol id="steps" {}
                        ul id="messages" {}
                        p class="reference" {
                            (lang.pick("Référence du lancement : ", "Launch reference: ")) code { (correlation_id) }
                        }
                    }
                    @match mode {
                        PageMode::Iframe => {
                            iframe id="scan" src=(scan_url) title="Posos Scan & Go" allow="camera; clipboard-write" {}
                        }
                        PageMode::Popup => {
                            p {
                                button id="open" type="button" {
                                    (lang.pick("Ouvrir Scan & Go", "Open Scan & Go"))
                                }
                            }
                        }
                    }
                    noscript {
                        p {
                            (lang.pick("Le suivi demande JavaScript. ", "The follow-up needs JavaScript. "))
                            a href=(scan_url) { (lang.pick("Ouvrir Scan & Go", "Open Scan & Go")) }
                        }
                    }
                }
            }
        }
    }
}

/// The page's policy: its own script and style sheet, polling itself, frames from the Posos
/// origin only (none in popup mode). `frame-ancestors` is added by the guard
/// (`[http] frame_ancestors`).
pub fn page_policy(mode: PageMode, posos_origin: &str) -> String {
    let frames = match mode {
        PageMode::Iframe => posos_origin,
        PageMode::Popup => "'none'",
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-src {frames}; base-uri 'none'; form-action 'none'"
    )
}

/// `GET /launch/assets/launch.js`.
pub(crate) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE_SCRIPT,
    )
        .into_response()
}

/// `GET /launch/assets/launch.css`.
pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE_STYLE,
    )
        .into_response()
}

/// The query of the status route.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct StatusQuery {
    lang: Option<String>,
    /// The `bundleId` of Scan & Go's message, when the page has it.
    bundle: Option<String>,
}

/// What the status route needs, cheap to clone.
#[derive(Clone)]
pub struct StatusState {
    pub launches: Arc<OpenLaunches>,
    pub tracker: Option<Arc<dyn ImportTracker>>,
    pub allow_list: super::AllowList,
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /launch/status/{token}`: the import's status as JSON (see [`status_view`]); 404 for a
/// token no page was given (or forgotten), 403 from outside the launch allow-list, 503 when
/// the store cannot be read.
pub(crate) async fn status(
    axum::extract::State(state): axum::extract::State<StatusState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Query(query): Query<StatusQuery>,
) -> Response {
    let lang = Lang::negotiate(
        query.lang.as_deref(),
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
        Lang::Fr,
    );
    let peer = peer.map(|axum::Extension(ConnectInfo(p))| p);
    if !peer.is_some_and(|p| state.allow_list.allows(p.ip())) {
        tracing::warn!(peer = ?peer, "launch status refused: the peer is not in the launch allow-list");
        return json_answer(
            StatusCode::FORBIDDEN,
            json!({"error": "this address may not follow launches: it is not in `[launch] allow`"}),
        );
    }
    let (Some(launch), Some(tracker)) = (state.launches.get(&token), state.tracker.as_ref()) else {
        return json_answer(
            StatusCode::NOT_FOUND,
            json!({"error": "unknown launch: it was never opened here, or it is forgotten (restart, or older than a day)"}),
        );
    };
    let bundle = query.bundle.as_deref().filter(|b| !b.trim().is_empty());
    let journal_id = match launch.journal_id {
        Some(id) => Some(id),
        None => match tracker
            .find(&launch.patient_id, launch.started, bundle)
            .await
        {
            Ok(Some(id)) => {
                state.launches.found(&token, id);
                Some(id)
            }
            Ok(None) => None,
            Err(error) => return unavailable(&error),
        },
    };
    let facts = match journal_id {
        Some(id) => match tracker.facts(id).await {
            Ok(facts) => facts,
            Err(error) => return unavailable(&error),
        },
        None => None,
    };
    json_answer(StatusCode::OK, status_view(facts.as_ref(), lang))
}

fn unavailable(error: &str) -> Response {
    tracing::warn!(%error, "launch status: the store could not be read");
    json_answer(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "the store could not be read; the page asks again"}),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn message(state: MessageState, attempts: u32, ack: Option<&str>) -> MessageFact {
        MessageFact {
            destination: "ehr-orders".into(),
            enqueued_at: at("2026-12-01T10:00:01Z"),
            state,
            attempts,
            delivered_at: (state == MessageState::Delivered).then(|| at("2026-12-01T10:00:02Z")),
            ack_code: ack.map(str::to_string),
        }
    }

    fn facts(row: RowState, hold: bool, messages: Vec<MessageFact>) -> ImportFacts {
        ImportFacts {
            journal_id: 42,
            received_at: at("2026-12-01T10:00:00Z"),
            row,
            hold: hold.then(|| HoldFact {
                held_at: at("2026-12-01T10:00:00Z"),
                release_at: at("2026-12-01T11:00:00Z"),
                released_at: None,
            }),
            messages,
        }
    }

    #[rstest]
    #[case::ok_waiting(None, "waiting", "Waiting for the import from Scan & Go")]
    #[case::ok_received(Some(facts(RowState::Accepted, false, vec![])), "received", "Prescription received, being converted")]
    #[case::ok_held(Some(facts(RowState::Accepted, true, vec![])), "held", "Waiting for the patient's admission in the EHR: the prescription goes as soon as it arrives (at the latest 2026-12-01T11:00:00Z)")]
    #[case::ok_queued(Some(facts(RowState::Processed, false, vec![message(MessageState::Queued, 0, None)])), "queued", "Queued for the EHR")]
    #[case::ok_sent(Some(facts(RowState::Processed, false, vec![message(MessageState::Queued, 2, None)])), "sent", "Sent to the EHR, waiting for its acknowledgement")]
    #[case::ok_acked(Some(facts(RowState::Processed, false, vec![message(MessageState::Delivered, 1, Some("AA"))])), "acked", "Received by the EHR (ACK AA)")]
    #[case::ok_nothing(Some(facts(RowState::Processed, false, vec![])), "nothing", "Received, but no message to the EHR is configured for this prescription: tell the IT team if this is unexpected")]
    #[case::err_rejected(Some(facts(RowState::Rejected, false, vec![])), "error", "The prescription could not be read or converted for the EHR; nothing was sent. Tell the IT team (reference: import 42)")]
    #[case::err_refused(Some(facts(RowState::Processed, false, vec![message(MessageState::Dead, 1, Some("AR"))])), "error", "Refused by the EHR (ACK AR): tell the IT team, nothing was integrated")]
    #[case::err_given_up(Some(facts(RowState::Processed, false, vec![message(MessageState::Dead, 5, None)])), "error", "Not delivered to the EHR after 5 attempt(s): tell the IT team")]
    fn ok_status_view(
        #[case] facts: Option<ImportFacts>,
        #[case] state: &str,
        #[case] headline: &str,
    ) {
        let view = status_view(facts.as_ref(), Lang::En);
        assert_eq!(view["state"], state);
        assert_eq!(view["headline"], headline);
        assert_eq!(
            view["final"],
            matches!(state, "acked" | "nothing" | "error")
        );
    }

    #[test]
    fn ok_status_view_steps_in_french() {
        let facts = facts(
            RowState::Processed,
            true,
            vec![message(MessageState::Delivered, 1, Some("AA"))],
        );
        let view = status_view(Some(&facts), Lang::Fr);
        let steps: Vec<(&str, &str)> = view["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["step"].as_str().unwrap(), s["label"].as_str().unwrap()))
            .collect();
        assert_eq!(
            steps,
            [
                ("pushed", "Prescription reçue de Posos"),
                ("held", "En attente du patient dans le DPI"),
                ("mapped", "Convertie en message HL7"),
                ("queued", "Mise en file pour le DPI"),
                ("sent", "Envoyée au DPI"),
                ("acked", "ACK AA du DPI"),
            ]
        );
        assert_eq!(view["headline"], "Reçue par le DPI (ACK AA)");
        assert_eq!(view["messages"][0]["destination"], "ehr-orders");
    }

    #[rstest]
    #[case::ok_https("https://app.posos.co/scan/abc?x=1", Some("https://app.posos.co"))]
    #[case::ok_port(
        "http://127.0.0.1:8717/simulator/scan/1",
        Some("http://127.0.0.1:8717")
    )]
    #[case::err_relative("/scan/abc", None)]
    #[case::err_scheme("javascript:alert(1)", None)]
    fn ok_origin_of(#[case] url: &str, #[case] expected: Option<&str>) {
        assert_eq!(origin_of(url).as_deref(), expected);
    }

    #[test]
    fn ok_open_launches_tokens_are_distinct_and_found() {
        let launches = OpenLaunches::default();
        let now = at("2026-12-01T10:00:00Z");
        let a = launches.open("IPP1".into(), now).unwrap();
        let b = launches.open("IPP1".into(), now).unwrap();
        assert_ne!(a, b);
        assert!(a.len() >= 43, "256 bits in base64: {a}");
        launches.found(&a, 7);
        assert_eq!(launches.get(&a).unwrap().journal_id, Some(7));
        assert_eq!(launches.get(&b).unwrap().journal_id, None);
        assert!(launches.get("nope").is_none());
    }

    #[test]
    fn ok_open_launches_are_bounded() {
        let launches = OpenLaunches::default();
        let now = at("2026-12-01T10:00:00Z");
        let first = launches.open("P".into(), now).unwrap();
        for _ in 0..KEPT_LAUNCHES {
            launches.open("P".into(), now).unwrap();
        }
        assert_eq!(launches.len(), KEPT_LAUNCHES);
        assert!(launches.get(&first).is_none(), "the oldest is forgotten");
    }

    #[rstest]
    #[case::ok_iframe(PageMode::Iframe, "frame-src https://app.posos.co;")]
    #[case::ok_popup(PageMode::Popup, "frame-src 'none';")]
    fn ok_page_policy(#[case] mode: PageMode, #[case] frames: &str) {
        let policy = page_policy(mode, "https://app.posos.co");
        assert!(policy.contains(frames), "{policy}");
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
    }

    #[test]
    fn ok_page_has_no_inline_script_and_escapes() {
        let page = render_page(
            Lang::En,
            PageMode::Iframe,
            "https://app.posos.co/scan/a\"b",
            "https://app.posos.co",
            "/launch/status/T",
            "c0ffee",
        )
        .into_string();
        assert!(page.contains(r#"<script src="/launch/assets/launch.js" defer></script>"#));
        assert_eq!(page.matches("<script").count(), 1, "{page}");
        assert!(
            page.contains("src=\"https://app.posos.co/scan/a&quot;b\""),
            "{page}"
        );
        assert!(page.contains("data-origin=\"https://app.posos.co\""));
    }
}
