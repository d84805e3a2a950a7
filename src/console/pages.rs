//! The console's HTML, server-rendered with maud (every value escaped), in French or
//! English. Handlers fill the plain view structs below; nothing here reads the store.
//!
//! Accessibility: every form control has a `<label>`, actions are real buttons and links in
//! document order (usable with the keyboard), the language is set on `<html>`.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::hl7view::{Piece, SegmentNode};
use super::i18n::Lang;
use super::settings::Role;

/// The script, embedded in the binary, served at [`SCRIPT_PATH`].
pub const SCRIPT: &str = include_str!("assets/console.js");
/// The style sheet, embedded in the binary, served at [`STYLE_PATH`].
pub const STYLE: &str = include_str!("assets/console.css");
pub const SCRIPT_PATH: &str = "/console/assets/console.js";
pub const STYLE_PATH: &str = "/console/assets/console.css";

/// The console's content security policy: only its own script and style sheet, forms post
/// only to itself, server-sent events from itself, never framed.
pub const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Which part of the console a page belongs to (the navigation marks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    Messages,
    TryOut,
    Audit,
}

/// What every page of a logged-in user shows around its body.
#[derive(Debug, Clone)]
pub struct Frame {
    pub lang: Lang,
    pub user: String,
    pub role: Role,
    /// The CSRF token of the session, for the logout form and every other form.
    pub csrf: String,
    pub nav: Nav,
    /// The path of this page with its query, for the language switch.
    pub here: String,
}

fn role_name(lang: Lang, role: Role) -> &'static str {
    match role {
        Role::Viewer => lang.pick("lecteur", "viewer"),
        Role::Operator => lang.pick("opérateur", "operator"),
    }
}

/// `here` with `lang=CODE` added to its query.
fn with_lang(here: &str, lang: Lang) -> String {
    let separator = if here.contains('?') { '&' } else { '?' };
    format!("{here}{separator}lang={}", lang.code())
}

fn head(lang: Lang, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " — ordobridge" }
            link rel="stylesheet" href=(STYLE_PATH);
            script src=(SCRIPT_PATH) defer {}
            meta name="language" content=(lang.code());
        }
    }
}

/// A page of a logged-in user.
pub fn layout(frame: &Frame, title: &str, body: Markup) -> Markup {
    let lang = frame.lang;
    let current = |nav: Nav| if frame.nav == nav { Some("page") } else { None };
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(lang, title))
            body {
                header {
                    span.brand { "ordobridge" }
                    nav aria-label=(lang.pick("Navigation principale", "Main navigation")) {
                        a href="/console/" aria-current=[current(Nav::Dashboard)] { (lang.pick("Tableau de bord", "Dashboard")) }
                        a href="/console/messages" aria-current=[current(Nav::Messages)] { (lang.pick("Messages", "Messages")) }
                        @if frame.role.is_operator() {
                            a href="/console/try" aria-current=[current(Nav::TryOut)] { (lang.pick("Essai de mapping", "Mapping try-out")) }
                            a href="/console/audit" aria-current=[current(Nav::Audit)] { (lang.pick("Journal d'audit", "Audit trail")) }
                        }
                    }
                    div.who {
                        a href=(with_lang(&frame.here, lang.other())) hreflang=(lang.other().code()) lang=(lang.other().code()) {
                            (lang.pick("English", "Français"))
                        }
                        span #user { (frame.user) " (" (role_name(lang, frame.role)) ")" }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(frame.csrf);
                            button.link type="submit" #logout { (lang.pick("Se déconnecter", "Log out")) }
                        }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

/// The login page. `error` is shown above the form; `csrf` goes with the nonce cookie.
pub fn login(
    lang: Lang,
    csrf: &str,
    user: &str,
    error: Option<&str>,
    notice: Option<&str>,
) -> Markup {
    let title = lang.pick("Connexion à la console", "Console login");
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(lang, title))
            body {
                main.login {
                    h1 { (title) }
                    @if let Some(error) = error { p.error role="alert" #error { (error) } }
                    @if let Some(notice) = notice { p.notice role="status" #notice { (notice) } }
                    form method="post" action="/console/login" {
                        input type="hidden" name="csrf" value=(csrf);
                        div {
                            label for="username" { (lang.pick("Utilisateur", "User name")) }
                            input #username type="text" name="username" value=(user) autocomplete="username" required autofocus;
                        }
                        div {
                            label for="password" { (lang.pick("Mot de passe", "Password")) }
                            input #password type="password" name="password" autocomplete="current-password" required;
                        }
                        button type="submit" #login { (lang.pick("Se connecter", "Log in")) }
                    }
                    p { a href=(format!("/console/login?lang={}", lang.other().code())) lang=(lang.other().code()) { (lang.pick("English", "Français")) } }
                }
            }
        }
    }
}

/// A page that says what went wrong (403, 404, 400) in the frame of a logged-in user.
pub fn problem(frame: &Frame, title: &str, text: &str) -> Markup {
    layout(
        frame,
        title,
        html! { p.error role="alert" #error { (text) } },
    )
}

/// One inbound channel on the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelRow {
    pub name: String,
    pub kind: String,
    /// Listening, open connections, last error …, in words.
    pub state: String,
    /// Frames or files taken in.
    pub received: u64,
    /// When its last message was journaled (`-` when none is in the journal).
    pub last_message: String,
    pub problem: bool,
}

/// One destination on the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationRow {
    pub name: String,
    /// Paused by an operator.
    pub paused: bool,
    /// Its worker waits on the pause: nothing new leaves until it is resumed.
    pub parked: bool,
    pub pending: u64,
    pub dead: u64,
    /// Seconds the oldest pending message has waited.
    pub oldest_seconds: Option<u64>,
    pub delivered: Option<u64>,
    /// The head message's last error.
    pub head_error: Option<String>,
}

/// What the dashboard shows (from what `/status` computes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dashboard {
    pub ok: bool,
    pub attention: Vec<String>,
    pub channels: Vec<ChannelRow>,
    pub destinations: Vec<DestinationRow>,
    /// Pushed bundles held for an unknown patient (`None` without `[push]`).
    pub held: Option<u64>,
    pub oldest_held_seconds: Option<u64>,
    pub store_bytes: u64,
    pub wal_bytes: u64,
    /// Journal rows so far (the highest id).
    pub journaled: i64,
    /// The time of this snapshot, RFC 3339.
    pub at: String,
    /// This node's name (`[cluster] node_name`) and its store's backend.
    pub node: String,
    pub backend: String,
    /// On PostgreSQL, which node does what (one lease per destination and per role).
    pub leases: Vec<LeaseRow>,
}

/// One lease: a destination or a role (`@census`, `@inbox:NAME` …), its holder, whether it
/// still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub role: String,
    pub node: String,
    pub live: bool,
}

fn bytes_text(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// The live part of the dashboard (sent again by the server-sent events).
pub fn dashboard_fragment(lang: Lang, view: &Dashboard) -> Markup {
    html! {
        div.cards {
            div.card {
                div { (lang.pick("État", "Status")) }
                div.n #state .ok[view.ok] .bad[!view.ok] { (if view.ok { "OK" } else { lang.pick("Attention", "Attention") }) }
            }
            div.card { div { (lang.pick("Messages journalisés", "Messages journaled")) } div.n #journaled { (view.journaled) } }
            @if let Some(held) = view.held {
                div.card {
                    div { (lang.pick("Lots en attente du patient", "Bundles held for their patient")) }
                    div.n #held { (held) }
                    @if let Some(age) = view.oldest_held_seconds { div.muted { (lang.pick("le plus ancien : ", "oldest: ")) (age) " s" } }
                }
            }
            @if view.backend == "postgres" {
                div.card { div { (lang.pick("Base", "Store")) } div.n #store-size { "PostgreSQL" } }
            } @else {
                div.card { div { (lang.pick("Base", "Store")) } div.n #store-size { (bytes_text(view.store_bytes)) } div.muted { "WAL " (bytes_text(view.wal_bytes)) } }
            }
            div.card { div { (lang.pick("Nœud", "Node")) } div.n #node { (view.node) } }
        }
        @if !view.attention.is_empty() {
            ul.bad #attention { @for line in &view.attention { li { (line) } } }
        }
        h2 { (lang.pick("Canaux entrants", "Inbound channels")) }
        table #channels {
            thead { tr { th scope="col" { (lang.pick("Canal", "Channel")) } th scope="col" { (lang.pick("Type", "Kind")) } th scope="col" { (lang.pick("État", "State")) } th scope="col" { (lang.pick("Reçus", "Received")) } th scope="col" { (lang.pick("Dernier message", "Last message")) } } }
            tbody {
                @for row in &view.channels {
                    tr data-channel=(row.name) {
                        th scope="row" { (row.name) } td { (row.kind) } td .bad[row.problem] { (row.state) } td.received { (row.received) } td.last { (row.last_message) }
                    }
                }
            }
        }
        h2 { (lang.pick("Destinations", "Destinations")) }
        table #destinations {
            thead { tr {
                th scope="col" { (lang.pick("Destination", "Destination")) }
                th scope="col" { (lang.pick("En file", "Queued")) }
                th scope="col" { (lang.pick("Attente la plus longue", "Oldest wait")) }
                th scope="col" { (lang.pick("Remis", "Delivered")) }
                th scope="col" { (lang.pick("En échec (lettres mortes)", "Dead letters")) }
                th scope="col" { (lang.pick("Dernière erreur", "Last error")) }
            } }
            tbody {
                @for row in &view.destinations {
                    tr data-destination=(row.name) data-paused=(row.paused) data-parked=(row.parked) {
                        th scope="row" { (row.name) @if row.paused { " " span.bad.paused { (lang.pick("(en pause)", "(paused)")) } } }
                        td.pending { (row.pending) }
                        td { @if let Some(s) = row.oldest_seconds { (s) " s" } @else { "—" } }
                        td.delivered { @if let Some(n) = row.delivered { (n) } @else { "—" } }
                        td.dead .bad[row.dead > 0] { (row.dead) }
                        td { (row.head_error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        @if !view.leases.is_empty() {
            h2 { (lang.pick("Qui fait quoi (baux des nœuds)", "Who does what (the nodes' leases)")) }
            table #leases {
                thead { tr {
                    th scope="col" { (lang.pick("Travail", "Work")) }
                    th scope="col" { (lang.pick("Nœud", "Node")) }
                    th scope="col" { (lang.pick("Bail", "Lease")) }
                } }
                tbody {
                    @for row in &view.leases {
                        tr data-role=(row.role) {
                            th scope="row" { (row.role) }
                            td.node { (row.node) }
                            td .bad[!row.live] { (if row.live { lang.pick("actif", "live") } else { lang.pick("expiré", "expired") }) }
                        }
                    }
                }
            }
        }
        p.muted { (lang.pick("Mis à jour ", "Updated ")) time #updated { (view.at) } }
    }
}

/// The dashboard page: the live fragment inside an element the script refreshes.
pub fn dashboard(
    frame: &Frame,
    view: &Dashboard,
    dead_letters: &[DeadRow],
    held: &[HeldRow],
) -> Markup {
    let lang = frame.lang;
    layout(
        frame,
        lang.pick("Tableau de bord", "Dashboard"),
        html! {
            div #live data-events="/console/events" aria-live="polite" { (dashboard_fragment(lang, view)) }
            @if frame.role.is_operator() && !view.destinations.is_empty() {
                h2 { (lang.pick("Suspendre ou reprendre une destination", "Pause or resume a destination")) }
                div.actions {
                    @for row in &view.destinations {
                        @if row.paused {
                            (action_form(frame, &format!("/console/destinations/{}/resume", row.name), &format!("resume-{}", row.name), &match lang { Lang::Fr => format!("Reprendre {}", row.name), Lang::En => format!("Resume {}", row.name) }, &[], None))
                        } @else {
                            (action_form(frame, &format!("/console/destinations/{}/pause", row.name), &format!("pause-{}", row.name), &match lang { Lang::Fr => format!("Suspendre {}", row.name), Lang::En => format!("Pause {}", row.name) }, &[], None))
                        }
                    }
                }
            }
            @if !dead_letters.is_empty() {
                h2 { (lang.pick("Lettres mortes", "Dead letters")) }
                table #dead-letters {
                    thead { tr { th scope="col" { "#" } th scope="col" { "Destination" } th scope="col" { "MSH-10" } th scope="col" { (lang.pick("Raison", "Reason")) } } }
                    tbody { @for row in dead_letters { tr { td { (row.id) } td { (row.destination) } td { (row.control_id) } td { (row.reason) } } } }
                }
                @if frame.role.is_operator() {
                    (action_form(frame, "/console/dead/replay", "replay", lang.pick("Renvoyer toutes les lettres mortes", "Replay every dead letter"), &[], None))
                }
            }
            @if !held.is_empty() {
                h2 { (lang.pick("Lots en attente de leur patient", "Bundles held for their patient")) }
                table #held-bundles {
                    thead { tr {
                        th scope="col" { (lang.pick("Message", "Message")) }
                        th scope="col" { (lang.pick("En attente depuis", "Held since")) }
                        th scope="col" { (lang.pick("Libéré au plus tard", "Released at the latest")) }
                        @if frame.role.is_operator() { th scope="col" { (lang.pick("Action", "Action")) } }
                    } }
                    tbody {
                        @for row in held {
                            tr {
                                td { a href=(format!("/console/messages/{}", row.journal_id)) { (row.journal_id) } }
                                td { (row.held_at) } td { (row.release_at) }
                                @if frame.role.is_operator() {
                                    td { (action_form(frame, &format!("/console/holds/{}/release", row.journal_id), &format!("release-{}", row.journal_id), lang.pick("Libérer maintenant", "Release now"), &[], None)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// One bundle held for an unknown patient (no patient value shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRow {
    pub journal_id: i64,
    pub held_at: String,
    pub release_at: String,
}

/// One dead letter on the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRow {
    pub id: i64,
    pub destination: String,
    pub control_id: String,
    pub reason: String,
}

/// An operator's action: a POST form with the CSRF token, a reason (audited) and a button.
/// `choices` (value, label) adds a destination picker.
fn action_form(
    frame: &Frame,
    action: &str,
    id: &str,
    button: &str,
    choices: &[String],
    hidden: Option<(&str, &str)>,
) -> Markup {
    let lang = frame.lang;
    let reason_id = format!("{id}-reason");
    let select_id = format!("{id}-destination");
    html! {
        form method="post" action=(action) #(format!("{id}-form")) data-confirm=(lang.pick("Confirmer ?", "Confirm?")) {
            input type="hidden" name="csrf" value=(frame.csrf);
            @if let Some((name, value)) = hidden { input type="hidden" name=(name) value=(value); }
            @if !choices.is_empty() {
                div {
                    label for=(select_id) { (lang.pick("Vers", "To")) }
                    select #(select_id) name="destination" { @for name in choices { option value=(name) { (name) } } }
                }
            }
            div {
                label for=(reason_id) { (lang.pick("Motif (audité)", "Reason (audited)")) }
                input #(reason_id) type="text" name="reason" required maxlength="200";
            }
            button type="submit" #(id) { (button) }
        }
    }
}

/// The search form's values, as the user typed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchForm {
    pub since: String,
    pub until: String,
    pub channel: String,
    pub message_type: String,
    pub control_id: String,
    pub status: String,
    pub ipp: String,
    pub nda: String,
    pub text: String,
}

/// One row of the message list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub id: i64,
    pub received_at: String,
    pub channel: String,
    pub message_type: String,
    pub control_id: String,
    pub status: String,
}

/// The message browser.
pub fn messages(
    frame: &Frame,
    form: &SearchForm,
    rows: &[MessageRow],
    next_page: Option<&str>,
    error: Option<&str>,
    note: Option<&str>,
) -> Markup {
    let lang = frame.lang;
    let field = |id: &str, label: &str, value: &str, kind: &str| {
        html! { div { label for=(id) { (label) } input #(id) type=(kind) name=(id) value=(value); } }
    };
    layout(
        frame,
        lang.pick("Messages", "Messages"),
        html! {
            form.search method="get" action="/console/messages" role="search" {
                (field("since", lang.pick("Reçu depuis (2026-11-22, 2h, RFC 3339)", "Received since (2026-11-22, 2h, RFC 3339)"), &form.since, "text"))
                (field("until", lang.pick("Reçu avant", "Received before"), &form.until, "text"))
                (field("channel", lang.pick("Canal", "Channel"), &form.channel, "text"))
                (field("type", "MSH-9", &form.message_type, "text"))
                (field("control_id", "MSH-10", &form.control_id, "text"))
                div {
                    label for="status" { (lang.pick("Statut", "Status")) }
                    select #status name="status" {
                        @for (value, label) in [("", lang.pick("tous", "any")), ("accepted", "accepted"), ("processed", "processed"), ("rejected", "rejected")] {
                            option value=(value) selected[form.status == value] { (label) }
                        }
                    }
                }
                @if frame.role.is_operator() {
                    (field("ipp", "IPP", &form.ipp, "text"))
                    (field("nda", "NDA", &form.nda, "text"))
                    (field("text", lang.pick("Texte dans le message", "Text in the message"), &form.text, "text"))
                }
                div { button type="submit" #search { (lang.pick("Rechercher", "Search")) } }
            }
            @if let Some(error) = error { p.error role="alert" #error { (error) } }
            @if let Some(note) = note { p.muted { (note) } }
            table #results {
                thead { tr {
                    th scope="col" { "#" }
                    th scope="col" { (lang.pick("Reçu", "Received")) }
                    th scope="col" { (lang.pick("Canal", "Channel")) }
                    th scope="col" { "MSH-9" }
                    th scope="col" { "MSH-10" }
                    th scope="col" { (lang.pick("Statut", "Status")) }
                } }
                tbody {
                    @for row in rows {
                        tr {
                            td { a href=(format!("/console/messages/{}", row.id)) { (row.id) } }
                            td { (row.received_at) } td { (row.channel) } td { (row.message_type) }
                            td.control-id { (row.control_id) } td { (row.status) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p #empty { (lang.pick("Aucun message.", "No message.")) } }
            @if let Some(next) = next_page { p { a #next href=(next) rel="next" { (lang.pick("Page suivante", "Next page")) } } }
        },
    )
}

/// One delivery of a message on its page (the lineage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageView {
    pub id: i64,
    pub destination: String,
    pub enqueued_at: String,
    pub control_id: String,
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    /// The receiver's ACK (operators only: it may repeat identifiers).
    pub ack: Option<String>,
}

/// Everything the message page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    pub row: MessageRow,
    pub peer: String,
    pub sender: String,
    pub reason: Option<String>,
    pub note: Option<String>,
    /// Operators only: the raw lines, the tree (HL7 v2) or pretty JSON (a bundle).
    pub raw: Option<Vec<Vec<Piece>>>,
    pub tree: Option<Vec<SegmentNode>>,
    pub json: Option<String>,
    /// The ACK we answered, rebuilt from the journal status.
    pub ack: Option<String>,
    pub lineage: Vec<LineageView>,
    /// Destinations a resend may go to.
    pub destinations: Vec<String>,
    /// A notice after an action.
    pub notice: Option<String>,
}

fn raw_block(lines: &[Vec<Piece>]) -> Markup {
    html! {
        pre.raw #raw {
            @for line in lines {
                @for piece in line {
                    @match piece {
                        Piece::Text(text) => (text),
                        Piece::Delimiter(c) => span.d { (c) },
                    }
                }
                "\n"
            }
        }
    }
}

/// A message: its listing fields, raw and tree (operators), the ACK, and the lineage.
pub fn message(frame: &Frame, view: &MessageView) -> Markup {
    let lang = frame.lang;
    let row = &view.row;
    let title = format!(
        "{} {} — {}",
        lang.pick("Message", "Message"),
        row.id,
        row.message_type
    );
    layout(
        frame,
        &title,
        html! {
            @if let Some(notice) = &view.notice { p.notice role="status" #notice { (notice) } }
            table #summary {
                tbody {
                    tr { th scope="row" { (lang.pick("Reçu", "Received")) } td { (row.received_at) } }
                    tr { th scope="row" { (lang.pick("Canal", "Channel")) } td { (row.channel) } }
                    tr { th scope="row" { "MSH-10" } td #control-id { (row.control_id) } }
                    tr { th scope="row" { (lang.pick("Statut", "Status")) } td #status { (row.status) } }
                    tr { th scope="row" { (lang.pick("Émetteur", "Sender")) } td { (view.sender) " — " (view.peer) } }
                    @if let Some(reason) = &view.reason { tr { th scope="row" { (lang.pick("Motif du rejet", "Rejection reason")) } td.bad { (reason) } } }
                    @if let Some(note) = &view.note { tr { th scope="row" { (lang.pick("Note", "Note")) } td { (note) } } }
                }
            }
            @if frame.role.is_operator() {
                @if let Some(ack) = &view.ack { h2 { (lang.pick("ACK envoyé", "ACK we sent")) } pre.raw #ack { (ack) } }
                @if let Some(lines) = &view.raw { h2 { (lang.pick("Message brut", "Raw message")) } (raw_block(lines)) }
                @if let Some(json) = &view.json { h2 { (lang.pick("Lot (JSON)", "Bundle (JSON)")) } pre.raw #json { (json) } }
                @if let Some(tree) = &view.tree {
                    h2 { (lang.pick("Arbre", "Tree")) }
                    div #tree {
                        @for segment in tree {
                            details.segment open {
                                summary { strong { (segment.id) } " " span.muted { (segment.name) } }
                                table {
                                    tbody {
                                        @for field in &segment.fields {
                                            tr { th scope="row" { (field.label) } td.muted { (field.name) } td { (field.value) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            } @else {
                p.muted #phi-hidden { (lang.pick("Le contenu du message (données patient) est réservé aux opérateurs.", "The message's content (patient data) is for operators only.")) }
            }
            h2 { (lang.pick("Lignée", "Lineage")) }
            @if view.lineage.is_empty() {
                p.muted #no-lineage { (lang.pick("Aucun message sortant produit.", "No outbound message produced.")) }
            } @else {
                table #lineage {
                    thead { tr {
                        th scope="col" { "#" } th scope="col" { "Destination" } th scope="col" { "MSH-10" }
                        th scope="col" { (lang.pick("En file depuis", "Queued at")) } th scope="col" { (lang.pick("Statut", "Status")) }
                        th scope="col" { (lang.pick("Tentatives", "Attempts")) } th scope="col" { (lang.pick("Dernière erreur", "Last error")) }
                        th scope="col" { (lang.pick("ACK du DPI", "EHR's ACK")) }
                        @if frame.role.is_operator() { th scope="col" { (lang.pick("Action", "Action")) } }
                    } }
                    tbody {
                        @for out in &view.lineage {
                            tr.lineage-row data-status=(out.status) {
                                td { (out.id) } td { (out.destination) } td { (out.control_id) } td { (out.enqueued_at) }
                                td.status { (out.status) @if let Some(at) = &out.delivered_at { " " span.muted { (at) } } }
                                td { (out.attempts) } td { (out.last_error.as_deref().unwrap_or("")) }
                                td { @if let Some(ack) = &out.ack { code.ack { (ack) } } }
                                @if frame.role.is_operator() {
                                    td { (action_form(frame, &format!("/console/outbound/{}/resend", out.id), &format!("resend-out-{}", out.id), lang.pick("Renvoyer ce message", "Send this again"), &[], None)) }
                                }
                            }
                        }
                    }
                }
            }
            @if frame.role.is_operator() && !view.destinations.is_empty() {
                h2 { (lang.pick("Actions", "Actions")) }
                div.actions {
                    (action_form(frame, &format!("/console/messages/{}/resend", row.id), "resend", lang.pick("Renvoyer", "Resend"), &view.destinations, None))
                }
            }
        },
    )
}

/// What the mapping try-out was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TryForm {
    /// Index in the push routes.
    pub route: usize,
    pub journal: String,
    pub bundle: String,
}

/// What the mapping try-out produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TryResult {
    /// The message, one segment a line; `None` when the mapping's `when` is false.
    pub produced: Option<Vec<String>>,
    pub error: Option<String>,
    /// Line by line against the message sent for this bundle on the route's destination
    /// (produced, sent, equal); empty when nothing was sent.
    pub diff: Vec<(String, String, bool)>,
    /// The outbound row compared with.
    pub sent_id: Option<i64>,
}

/// The mapping try-out: a push route's mapping on a journaled or pasted bundle, the message
/// it produces (the code of `ordobridge transform`) and its difference from what was sent.
pub fn try_out(
    frame: &Frame,
    routes: &[String],
    form: &TryForm,
    result: Option<&TryResult>,
) -> Markup {
    let lang = frame.lang;
    layout(
        frame,
        lang.pick("Essai de mapping", "Mapping try-out"),
        html! {
            @if routes.is_empty() {
                p #no-routes { (lang.pick("Aucune route `[[push.route]]` n'est configurée.", "No `[[push.route]]` is configured.")) }
            } @else {
                form method="post" action="/console/try" {
                    input type="hidden" name="csrf" value=(frame.csrf);
                    div {
                        label for="route" { (lang.pick("Mapping (route)", "Mapping (route)")) }
                        select #route name="route" {
                            @for (i, label) in routes.iter().enumerate() { option value=(i) selected[form.route == i] { (label) } }
                        }
                    }
                    div {
                        label for="journal" { (lang.pick("N° du lot dans le journal", "Journal id of a bundle")) }
                        input #journal type="text" name="journal" inputmode="numeric" value=(form.journal);
                    }
                    div {
                        label for="bundle" { (lang.pick("ou collez un lot (JSON)", "or paste a bundle (JSON)")) }
                        textarea #bundle name="bundle" rows="6" { (form.bundle) }
                    }
                    button type="submit" #try { (lang.pick("Essayer", "Try")) }
                }
            }
            @if let Some(result) = result {
                @if let Some(error) = &result.error { p.error role="alert" #error { (error) } }
                @match &result.produced {
                    Some(lines) => {
                        h2 { (lang.pick("Message produit", "Message produced")) }
                        pre.raw #produced { @for line in lines { (line) "\n" } }
                    }
                    None => @if result.error.is_none() { p #no-message { (lang.pick("Aucun message : la condition `[message] when` du mapping est fausse pour ce lot.", "No message: the mapping's `[message] when` is false for this bundle.")) } }
                }
                @if let Some(id) = result.sent_id {
                    h2 { (lang.pick("Différence avec le message envoyé", "Difference from the message sent")) " (#" (id) ")" }
                    table #diff {
                        thead { tr { th scope="col" { (lang.pick("Produit", "Produced")) } th scope="col" { (lang.pick("Envoyé", "Sent")) } } }
                        tbody {
                            @for (produced, sent, same) in &result.diff {
                                tr .muted[*same] .bad[!*same] data-same=(same) { td { code { (produced) } } td { code { (sent) } } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub at: String,
    pub user: String,
    pub action: String,
    pub target: String,
    pub reason: String,
}

/// The newest audit rows.
pub fn audit(frame: &Frame, rows: &[AuditRow]) -> Markup {
    let lang = frame.lang;
    layout(
        frame,
        lang.pick("Journal d'audit", "Audit trail"),
        html! {
            table #audit {
                thead { tr {
                    th scope="col" { (lang.pick("Quand", "When")) } th scope="col" { (lang.pick("Qui", "Who")) }
                    th scope="col" { (lang.pick("Quoi", "What")) } th scope="col" { (lang.pick("Sur", "On")) }
                    th scope="col" { (lang.pick("Pourquoi", "Why")) }
                } }
                tbody { @for row in rows { tr { td { (row.at) } td { (row.user) } td { (row.action) } td { (row.target) } td { (row.reason) } } } }
            }
        },
    )
}

/// Markup as a string, for the server-sent events.
pub fn to_string(markup: Markup) -> String {
    let PreEscaped(text) = markup;
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(role: Role) -> Frame {
        Frame {
            lang: Lang::En,
            user: "alice".into(),
            role,
            csrf: "tok".into(),
            nav: Nav::Messages,
            here: "/console/messages".into(),
        }
    }

    #[test]
    fn ok_values_are_escaped() {
        let rows = [MessageRow {
            id: 1,
            received_at: "t".into(),
            channel: "<script>".into(),
            message_type: "ADT^A01".into(),
            control_id: "\"x\"".into(),
            status: "accepted".into(),
        }];
        let page = to_string(messages(
            &frame(Role::Viewer),
            &SearchForm::default(),
            &rows,
            None,
            None,
            None,
        ));
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(!page.contains("<script>"), "no inline script at all");
        assert!(page.contains(r#"<script src="/console/assets/console.js" defer>"#));
    }

    #[test]
    fn ok_viewer_gets_no_phi_fields_and_no_action() {
        let viewer = to_string(messages(
            &frame(Role::Viewer),
            &SearchForm::default(),
            &[],
            None,
            None,
            None,
        ));
        assert!(!viewer.contains(r#"name="ipp""#));
        let operator = to_string(messages(
            &frame(Role::Operator),
            &SearchForm::default(),
            &[],
            None,
            None,
            None,
        ));
        assert!(operator.contains(r#"name="ipp""#));
        assert!(
            operator.contains(r#"<label for="ipp">IPP</label>"#),
            "labelled"
        );
    }

    #[test]
    fn ok_french_and_english() {
        let mut f = frame(Role::Viewer);
        let en = to_string(layout(&f, "T", html! {}));
        f.lang = Lang::Fr;
        let fr = to_string(layout(&f, "T", html! {}));
        assert!(en.contains(r#"<html lang="en">"#) && en.contains("Log out"));
        assert!(fr.contains(r#"<html lang="fr">"#) && fr.contains("Se déconnecter"));
        assert!(fr.contains("/console/messages?lang=en"), "switch link");
    }
}
