//! The web console's routes (`/console/…` on the `[http]` listener): login and logout, the
//! dashboard and its server-sent events, the message browser, the audit trail and the
//! operators' actions. The pure parts (sessions, pages, views) are in [`crate::console`];
//! this file reads the store and what `/status` computes, and writes the audit trail.
//!
//! Access: every page but the login needs a valid session cookie of a configured user (its
//! role is the configuration's, read at each request); every POST needs the session's CSRF
//! token; actions, raw messages and IPP/NDA searches need the `operator` role. A raw message is
//! shown only once its view is committed to the audit table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::console::i18n::LANG_COOKIE;
use crate::console::limiter::LoginLimiter;
use crate::console::pages::{self, Frame, Nav};
use crate::console::session::{self, LOGIN_COOKIE, Revoked, SESSION_COOKIE, Session, SessionKey};
use crate::console::{ConsoleSettings, Lang, Role, hl7view};
use crate::store::{AuditEntry, EntryStatus, JournalFilter, JournalSearch, OutboundItem, Store};

use super::status::{self, Observed};

/// Rows on a page of the message browser.
const PAGE: usize = 50;
/// A full-text search scans at most the newest rows this many (unless a time range is given).
const TEXT_WINDOW: i64 = 200_000;
/// How long the message list waits for the intake log to copy what was acknowledged before
/// the request (it is hurried meanwhile; usually well under 100 ms), so that an operator finds
/// the message just sent.
const LIST_WAITS_FOR_INTAKE: Duration = Duration::from_secs(1);
/// How often the dashboard's events send a new snapshot.
const EVENT_INTERVAL: Duration = Duration::from_secs(1);
/// How long the login form's nonce cookie lives.
const LOGIN_FORM_TTL: u64 = 1800;

/// What the console keeps across configuration reloads: the key that signs sessions, the
/// sessions logged out, the failed logins.
#[derive(Debug)]
pub(super) struct ConsoleShared {
    key: SessionKey,
    revoked: Revoked,
    limiter: LoginLimiter,
}

impl ConsoleShared {
    /// A fresh random key; `None` if the system's random generator failed.
    pub(super) fn new() -> Option<ConsoleShared> {
        Some(ConsoleShared {
            key: SessionKey::generate()?,
            revoked: Revoked::default(),
            limiter: LoginLimiter::default(),
        })
    }
}

/// What the console's handlers share (rebuilt at every configuration apply).
#[derive(Clone)]
pub(super) struct ConsoleState(Arc<ConsoleParts>);

/// What the console is built from.
pub(super) struct ConsoleParts {
    pub(super) settings: ConsoleSettings,
    pub(super) shared: Arc<ConsoleShared>,
    pub(super) store: Store,
    /// What `/status` reads (the dashboard shows the same).
    pub(super) observed: Arc<Observed>,
    /// The configured destinations and their workers' wake-ups, for resends and replays.
    pub(super) wakers: BTreeMap<String, Arc<Notify>>,
    /// The destinations' pause switches.
    pub(super) pauses: Arc<crate::delivery::PauseSwitches>,
    /// Wakes the releaser of held bundles (a bundle released now).
    pub(super) releaser: Arc<Notify>,
    /// The push routes (mapping file, destination), for the mapping try-out.
    pub(super) routes: Vec<crate::config::PushRoute>,
    /// The daemon's shutdown: ends the event streams so the HTTP listener drains.
    pub(super) shutdown: CancellationToken,
}

impl ConsoleState {
    pub(super) fn new(parts: ConsoleParts) -> ConsoleState {
        ConsoleState(Arc::new(parts))
    }
}

/// The console's routes.
pub(super) fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(dashboard))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/events", get(events))
        .route("/console/messages", get(messages))
        .route("/console/messages/{id}", get(message))
        .route("/console/messages/{id}/resend", post(resend_journal))
        .route("/console/outbound/{id}/resend", post(resend_outbound))
        .route("/console/dead/replay", post(replay))
        .route("/console/holds/{id}/release", post(release_hold))
        .route(
            "/console/destinations/{name}/pause",
            post(pause_destination),
        )
        .route(
            "/console/destinations/{name}/resume",
            post(resume_destination),
        )
        .route("/console/audit", get(audit))
        .route("/console/try", get(try_page).post(try_mapping))
        .route(pages::SCRIPT_PATH, get(script))
        .route(pages::STYLE_PATH, get(style))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            sso_guard,
        ))
        .with_state(state)
}

/// Middleware of every console route: the single-sign-on header counts only from a trusted
/// proxy. From any other peer it is removed before the handlers see it, and logged at warn
/// (the peer and the header's name, never its value).
async fn sso_guard(
    State(state): State<ConsoleState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(sso) = &state.0.settings.sso
        && request.headers().contains_key(sso.header.as_str())
    {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if !peer.is_some_and(|ip| sso.trusted_proxies.allows(ip)) {
            tracing::warn!(
                peer = ?peer,
                header = %sso.header,
                path = request.uri().path(),
                "console: single-sign-on header from an address not in `[console] trusted_proxies`; ignored"
            );
            request.headers_mut().remove(sso.header.as_str());
        }
    }
    next.run(request).await
}

fn now_unix() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0)
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| session::cookie_value(h, name))
}

/// An HTML answer with the console's policy, never cached.
fn html(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, pages::to_string(markup)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(pages::POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

fn add_cookie(response: &mut Response, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Why a request of a logged-in page was refused.
enum Refusal {
    /// No valid session: log in (pages redirect, POSTs and events answer 401).
    NotLoggedIn,
}

/// The request's language and whether it was chosen now (then kept in a cookie).
#[derive(Debug, Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
}

impl ConsoleState {
    fn settings(&self) -> &ConsoleSettings {
        &self.0.settings
    }

    fn cookie_attributes(&self, max_age: u64) -> String {
        let secure = if self.0.settings.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        format!("; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }

    fn lang(&self, headers: &HeaderMap, chosen: Option<&str>) -> Lang {
        let chosen = chosen
            .filter(|c| Lang::parse(c).is_some())
            .or_else(|| cookie(headers, LANG_COOKIE));
        Lang::negotiate(
            chosen,
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok()),
            self.0.settings.language,
        )
    }

    /// Keeps a language chosen with `?lang=` in a cookie.
    fn keep_lang(&self, response: &mut Response, chosen: Option<&str>) {
        if let Some(lang) = chosen.and_then(Lang::parse) {
            add_cookie(
                response,
                format!(
                    "{LANG_COOKIE}={}{}",
                    lang.code(),
                    self.cookie_attributes(365 * 86_400)
                ),
            );
        }
    }

    /// The session of the request, with the role the configuration gives its user now: the
    /// single-sign-on header when present (only a trusted proxy's reaches here, see
    /// [`sso_guard`]), else the session cookie.
    fn session(&self, headers: &HeaderMap) -> Result<Session, Refusal> {
        if let Some(sso) = &self.0.settings.sso
            && let Some(value) = headers.get(sso.header.as_str())
        {
            let name = value.to_str().map(str::trim).unwrap_or_default();
            let Some(role) = self.0.settings.sso_role(name).filter(|_| !name.is_empty()) else {
                tracing::warn!(
                    header = %sso.header,
                    "console: the proxy named a user that is in neither `[console.sso_users]` nor `[console.users]`; refused"
                );
                return Err(Refusal::NotLoggedIn);
            };
            // The id names the CSRF tokens of this user's forms: stable for the daemon's life
            // (the key is random at each start), like the proxy's own session.
            return Ok(Session {
                id: format!("sso:{name}"),
                user: name.to_string(),
                role,
                expires: u64::MAX,
            });
        }
        let value = cookie(headers, SESSION_COOKIE).ok_or(Refusal::NotLoggedIn)?;
        let mut session = self
            .0
            .shared
            .key
            .open(value, now_unix())
            .map_err(|_| Refusal::NotLoggedIn)?;
        if self.0.shared.revoked.contains(&session.id) {
            return Err(Refusal::NotLoggedIn);
        }
        let user = self
            .0
            .settings
            .users
            .get(&session.user)
            .ok_or(Refusal::NotLoggedIn)?;
        session.role = user.role;
        Ok(session)
    }

    fn frame(&self, session: &Session, lang: Lang, nav: Nav, here: &str) -> Frame {
        Frame {
            lang,
            user: session.user.clone(),
            role: session.role,
            csrf: self.0.shared.key.csrf_token(&session.id),
            nav,
            here: here.to_string(),
        }
    }

    /// Whether a form's CSRF token is the session's.
    fn csrf_ok(&self, session: &Session, presented: &str) -> bool {
        session::same_token(presented, &self.0.shared.key.csrf_token(&session.id))
    }

    /// The page's session and frame, or the answer for a visitor without one.
    fn page(
        &self,
        headers: &HeaderMap,
        chosen: Option<&str>,
        nav: Nav,
        here: &str,
    ) -> Result<(Session, Frame), Box<Response>> {
        let lang = self.lang(headers, chosen);
        match self.session(headers) {
            Ok(session) => {
                let frame = self.frame(&session, lang, nav, here);
                Ok((session, frame))
            }
            Err(Refusal::NotLoggedIn) => Err(Box::new(see_other("/console/login"))),
        }
    }

    /// A POST's session, with its CSRF token checked and, for `operator_only`, its role.
    fn action(
        &self,
        headers: &HeaderMap,
        csrf: &str,
        operator_only: bool,
        path: &str,
    ) -> Result<(Session, Frame), Box<Response>> {
        let lang = self.lang(headers, None);
        let Ok(session) = self.session(headers) else {
            return Err(Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    "not logged in, or the session expired: log in at /console/login\n",
                )
                    .into_response(),
            ));
        };
        let frame = self.frame(&session, lang, Nav::Messages, path);
        if !self.csrf_ok(&session, csrf) {
            tracing::warn!(user = %session.user, path, "console form refused: wrong or missing CSRF token");
            return Err(Box::new(html(
                StatusCode::FORBIDDEN,
                pages::problem(
                    &frame,
                    lang.pick("Formulaire refusé", "Form refused"),
                    lang.pick(
                        "Le jeton de sécurité du formulaire manque ou est faux : rechargez la page et recommencez.",
                        "The form's security token is missing or wrong: reload the page and try again.",
                    ),
                ),
            )));
        }
        if operator_only && !session.role.is_operator() {
            tracing::warn!(user = %session.user, path, "console action refused: the user is not an operator");
            return Err(Box::new(forbidden(&frame)));
        }
        Ok((session, frame))
    }

    /// [`ConsoleState::action`] for an operator's action, which must also give its reason (it
    /// goes into the audit trail).
    fn operator_action(
        &self,
        headers: &HeaderMap,
        form: &ActionForm,
        path: &str,
    ) -> Result<(Session, Frame), Box<Response>> {
        let (session, frame) = self.action(headers, &form.csrf, true, path)?;
        if form.reason.trim().is_empty() {
            return Err(Box::new(reason_missing(&frame)));
        }
        Ok((session, frame))
    }

    async fn audit(&self, session: &Session, action: &str, target: String, reason: &str) -> bool {
        let entry = AuditEntry {
            user: session.user.clone(),
            action: action.to_string(),
            target,
            reason: reason.trim().to_string(),
        };
        match self.0.store.audit(entry).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, action, "console: the audit row could not be written; the action is refused");
                false
            }
        }
    }

    fn wake(&self, destination: &str) {
        if let Some(notify) = self.0.wakers.get(destination) {
            notify.notify_one();
        }
    }
}

fn forbidden(frame: &Frame) -> Response {
    let lang = frame.lang;
    html(
        StatusCode::FORBIDDEN,
        pages::problem(
            frame,
            lang.pick("Accès refusé", "Access refused"),
            lang.pick(
                "Cette action est réservée aux opérateurs.",
                "This action is for operators only.",
            ),
        ),
    )
}

fn store_failure(frame: &Frame, error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "console: the store could not be read");
    let lang = frame.lang;
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::problem(
            frame,
            lang.pick("Base indisponible", "Store unavailable"),
            lang.pick(
                "La base n'a pas pu être lue ; le détail est dans le journal du démon. Réessayez.",
                "The store could not be read; the daemon's log has the detail. Try again.",
            ),
        ),
    )
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        pages::SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        pages::STYLE,
    )
        .into_response()
}

// ---- login and logout ----

#[derive(Debug, Deserialize, Default)]
struct LoginPageQuery {
    lang: Option<String>,
    out: Option<String>,
}

/// The login form, with a fresh nonce cookie and its CSRF token.
fn login_form(
    state: &ConsoleState,
    status: StatusCode,
    lang: Lang,
    user: &str,
    error: Option<&str>,
    notice: Option<&str>,
) -> Response {
    let Some(nonce) = session::random_token::<16>() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the system's random generator failed: try again\n",
        )
            .into_response();
    };
    let token = state.0.shared.key.login_token(&nonce);
    let mut response = html(status, pages::login(lang, &token, user, error, notice));
    add_cookie(
        &mut response,
        format!(
            "{LOGIN_COOKIE}={nonce}{}",
            state.cookie_attributes(LOGIN_FORM_TTL)
        ),
    );
    response
}

async fn login_page(
    State(state): State<ConsoleState>,
    Query(query): Query<LoginPageQuery>,
    headers: HeaderMap,
) -> Response {
    if state.session(&headers).is_ok() {
        return see_other("/console/");
    }
    let lang = state.lang(&headers, query.lang.as_deref());
    let notice = query
        .out
        .is_some()
        .then(|| lang.pick("Vous êtes déconnecté.", "You are logged out."));
    let mut response = login_form(&state, StatusCode::OK, lang, "", None, notice);
    state.keep_lang(&mut response, query.lang.as_deref());
    response
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn login(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = state.lang(&headers, None);
    let user = form.username.trim().to_string();
    let nonce_ok = cookie(&headers, LOGIN_COOKIE).is_some_and(|nonce| {
        session::same_token(&form.csrf, &state.0.shared.key.login_token(nonce))
    });
    if !nonce_ok {
        tracing::warn!("console login refused: wrong or missing CSRF token");
        return login_form(
            &state,
            StatusCode::FORBIDDEN,
            lang,
            &user,
            Some(lang.pick(
                "Le formulaire a expiré ou ne vient pas de cette console : recommencez.",
                "The form expired or does not come from this console: try again.",
            )),
            None,
        );
    }
    let settings = state.settings();
    let peer_ip = peer.ip().to_string();
    let keys = vec![format!("ip:{peer_ip}"), format!("user:{user}")];
    let limiter = &state.0.shared.limiter;
    if let Err(wait) = limiter.check(
        &keys,
        settings.login_attempts,
        settings.login_window,
        Instant::now(),
    ) {
        tracing::warn!(peer = %peer_ip, user = %user, "console login refused: too many failed attempts");
        let text = match lang {
            Lang::Fr => format!(
                "Trop d'échecs de connexion : réessayez dans {} s.",
                wait.as_secs().max(1)
            ),
            Lang::En => format!(
                "Too many failed logins: try again in {} s.",
                wait.as_secs().max(1)
            ),
        };
        let mut response = login_form(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            lang,
            &user,
            Some(&text),
            None,
        );
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let known = settings.users.get(&user).cloned();
    // An unknown name is checked against a dummy hash: it takes as long as a wrong password.
    let hash = known.as_ref().map_or_else(
        || crate::console::password::DUMMY_HASH.to_string(),
        |u| u.password_hash.clone(),
    );
    let password = form.password;
    let matches =
        tokio::task::spawn_blocking(move || crate::console::verify_password(&password, &hash))
            .await
            .unwrap_or(false);
    let (Some(known), true) = (known, matches) else {
        limiter.fail(&keys, settings.login_window, Instant::now());
        tracing::warn!(peer = %peer_ip, user = %user, "console login failed: wrong user name or password");
        return login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            lang,
            &user,
            Some(lang.pick(
                "Utilisateur ou mot de passe incorrect.",
                "Wrong user name or password.",
            )),
            None,
        );
    };
    limiter.succeed(&keys);
    let Some(id) = session::random_token::<18>() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the system's random generator failed: try again\n",
        )
            .into_response();
    };
    let ttl = settings.session_ttl.as_secs();
    let session = Session {
        id,
        user: user.clone(),
        role: known.role,
        expires: now_unix() + ttl,
    };
    tracing::info!(user = %user, role = known.role.as_str(), peer = %peer_ip, "console login");
    let mut response = see_other("/console/");
    add_cookie(
        &mut response,
        format!(
            "{SESSION_COOKIE}={}{}",
            state.0.shared.key.seal(&session),
            state.cookie_attributes(ttl)
        ),
    );
    add_cookie(
        &mut response,
        format!("{LOGIN_COOKIE}={}", state.cookie_attributes(0)),
    );
    response
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let (session, _) = match state.action(&headers, &form.csrf, false, "/console/logout") {
        Ok(found) => found,
        Err(response) => return *response,
    };
    state.0.shared.revoked.revoke(&session, now_unix());
    tracing::info!(user = %session.user, "console logout");
    let mut response = see_other("/console/login?out=1");
    add_cookie(
        &mut response,
        format!("{SESSION_COOKIE}={}", state.cookie_attributes(0)),
    );
    response
}

// ---- dashboard ----

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// The dashboard's view of what `/status` computes.
async fn dashboard_view(state: &ConsoleState, lang: Lang) -> pages::Dashboard {
    let snapshot = status::snapshot(&state.0.observed).await;
    let journaled = state.0.store.last_journal_id_async().await.unwrap_or(0);
    let empty = serde_json::Map::new();
    let channels = snapshot["channels"].as_object().unwrap_or(&empty);
    let last = state
        .0
        .store
        .last_received(channels.keys().cloned().collect())
        .await
        .unwrap_or_default();
    let channels = channels
        .iter()
        .map(|(name, c)| {
            let kind = c["kind"].as_str().unwrap_or("").to_string();
            let (state_text, received, problem) = if kind == "file" {
                let error = c["last_error"].as_str().map(str::to_string);
                (
                    error.clone().unwrap_or_else(|| match lang {
                        Lang::Fr => format!("surveillé, {} passages", number(&c["scans"])),
                        Lang::En => format!("polling, {} scans", number(&c["scans"])),
                    }),
                    number(&c["files_archived"]),
                    error.is_some(),
                )
            } else {
                (
                    match lang {
                        Lang::Fr => format!(
                            "à l'écoute, {} connexion(s)",
                            number(&c["connections_open"])
                        ),
                        Lang::En => format!("listening, {} open", number(&c["connections_open"])),
                    },
                    number(&c["frames"]),
                    false,
                )
            };
            pages::ChannelRow {
                name: name.clone(),
                kind,
                state: state_text,
                received,
                last_message: last
                    .get(name)
                    .map_or_else(|| "-".to_string(), |at| time_text(*at)),
                problem,
            }
        })
        .collect();
    let mut names: Vec<String> = state.0.wakers.keys().cloned().collect();
    if let Some(queues) = snapshot["queues"].as_object() {
        for name in queues.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let destinations = names
        .into_iter()
        .map(|name| {
            let queue = &snapshot["queues"][&name];
            let stats = &snapshot["destinations"][&name];
            pages::DestinationRow {
                paused: state.0.pauses.is_paused(&name),
                parked: state.0.pauses.is_parked(&name),
                pending: number(&queue["pending"]),
                dead: number(&queue["dead"]),
                oldest_seconds: queue["oldest_pending_seconds"].as_u64(),
                delivered: stats["delivered"].as_u64(),
                head_error: stats["head"]["last_error"]
                    .as_str()
                    .filter(|e| !e.is_empty())
                    .map(str::to_string),
                name,
            }
        })
        .collect();
    pages::Dashboard {
        ok: snapshot["status"] == "ok",
        attention: snapshot["attention"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        channels,
        destinations,
        held: snapshot["push"]["held"].as_u64(),
        oldest_held_seconds: snapshot["push"]["oldest_held_seconds"].as_u64(),
        store_bytes: number(&snapshot["store"]["bytes"]),
        wal_bytes: number(&snapshot["store"]["wal_bytes"]),
        journaled,
        at: jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map_or_else(|_| String::new(), |t| t.to_string()),
        node: snapshot["node"].as_str().unwrap_or_default().to_string(),
        backend: snapshot["store"]["backend"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        leases: snapshot["store"]["owners"]
            .as_array()
            .map(|owners| {
                owners
                    .iter()
                    .filter_map(|o| {
                        Some(pages::LeaseRow {
                            role: o["destination"].as_str()?.to_string(),
                            node: o["node"].as_str()?.to_string(),
                            live: o["live"].as_bool().unwrap_or(false),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

async fn dashboard(
    State(state): State<ConsoleState>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let (_, frame) = match state.page(&headers, query.lang.as_deref(), Nav::Dashboard, "/console/")
    {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let view = dashboard_view(&state, frame.lang).await;
    let dead = match state.0.store.dead_letters_async(None, PAGE).await {
        Ok(dead) => dead,
        Err(error) => return store_failure(&frame, error),
    };
    let dead: Vec<pages::DeadRow> = dead
        .into_iter()
        .map(|d| pages::DeadRow {
            id: d.id,
            destination: d.destination,
            control_id: d.control_id,
            reason: d.reason,
        })
        .collect();
    let held = match state.0.store.held_bundles_async(PAGE).await {
        Ok(held) => held,
        Err(error) => return store_failure(&frame, error),
    };
    // The partner id (an IPP) stays out: the journal row says whose it is, to operators.
    let held: Vec<pages::HeldRow> = held
        .into_iter()
        .map(|h| pages::HeldRow {
            journal_id: h.journal_id,
            held_at: time_text(h.held_at),
            release_at: time_text(h.release_at),
        })
        .collect();
    let mut response = html(
        StatusCode::OK,
        pages::dashboard(&frame, &view, &dead, &held),
    );
    state.keep_lang(&mut response, query.lang.as_deref());
    response
}

/// `GET /console/events`: the dashboard's live part every second, as `dashboard` events,
/// until the session expires, the client goes or the daemon stops.
async fn events(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    let Ok(session) = state.session(&headers) else {
        return (StatusCode::UNAUTHORIZED, "not logged in\n").into_response();
    };
    let lang = state.lang(&headers, None);
    let shutdown = state.0.shutdown.clone();
    let stream = futures::stream::unfold(
        (state, session, true),
        move |(state, session, first)| async move {
            if !first {
                tokio::select! {
                    () = state.0.shutdown.cancelled() => return None,
                    () = tokio::time::sleep(EVENT_INTERVAL) => {}
                }
            }
            if now_unix() >= session.expires || state.0.shared.revoked.contains(&session.id) {
                return None;
            }
            let view = dashboard_view(&state, lang).await;
            let fragment = pages::to_string(pages::dashboard_fragment(lang, &view));
            let event = Event::default().event("dashboard").data(fragment);
            Some((
                Ok::<_, std::convert::Infallible>(event),
                (state, session, false),
            ))
        },
    );
    let stream = futures::StreamExt::take_until(stream, shutdown.cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

// ---- message browser ----

#[derive(Debug, Deserialize, Default)]
struct SearchQuery {
    lang: Option<String>,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    channel: String,
    #[serde(default, rename = "type")]
    message_type: String,
    #[serde(default)]
    control_id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    ipp: String,
    #[serde(default)]
    nda: String,
    #[serde(default)]
    text: String,
    /// Paging cursor: `MICROS:ID` of the last row of the previous page.
    #[serde(default)]
    after: String,
}

fn some(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn when(text: &str, field: &str, lang: Lang) -> Result<Option<jiff::Timestamp>, String> {
    let Some(text) = some(text) else {
        return Ok(None);
    };
    crate::cli::when::parse_when(&text, jiff::Timestamp::now(), &jiff::tz::TimeZone::system())
        .map(Some)
        .map_err(|e| match lang {
            Lang::Fr => format!("« {field} » : {e}"),
            Lang::En => format!("`{field}`: {e}"),
        })
}

/// Percent-encodes a query value (everything but unreserved characters).
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn time_text(at: jiff::Timestamp) -> String {
    at.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

async fn messages(
    State(state): State<ConsoleState>,
    Query(query): Query<SearchQuery>,
    headers: HeaderMap,
) -> Response {
    let (session, frame) = match state.page(
        &headers,
        query.lang.as_deref(),
        Nav::Messages,
        "/console/messages",
    ) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let lang = frame.lang;
    let operator = session.role.is_operator();
    let form = pages::SearchForm {
        since: query.since.clone(),
        until: query.until.clone(),
        channel: query.channel.clone(),
        message_type: query.message_type.clone(),
        control_id: query.control_id.clone(),
        status: query.status.clone(),
        ipp: if operator {
            query.ipp.clone()
        } else {
            String::new()
        },
        nda: if operator {
            query.nda.clone()
        } else {
            String::new()
        },
        text: if operator {
            query.text.clone()
        } else {
            String::new()
        },
    };
    let problem = |text: String| {
        html(
            StatusCode::BAD_REQUEST,
            pages::messages(&frame, &form, &[], None, Some(&text), None),
        )
    };
    let since = match when(&query.since, "since", lang) {
        Ok(t) => t,
        Err(e) => return problem(e),
    };
    let until = match when(&query.until, "until", lang) {
        Ok(t) => t,
        Err(e) => return problem(e),
    };
    let status = match some(&query.status) {
        None => None,
        Some(s) => match EntryStatus::from_bytes(s.as_bytes()) {
            Some(status) => Some(status),
            None => return problem(format!("status `{s}`: accepted, processed or rejected")),
        },
    };
    let after = match some(&query.after) {
        None => None,
        Some(cursor) => {
            let parsed = cursor.split_once(':').and_then(|(micros, id)| {
                Some((
                    jiff::Timestamp::from_microsecond(micros.parse().ok()?).ok()?,
                    id.parse::<i64>().ok()?,
                ))
            });
            match parsed {
                Some(after) => Some(after),
                None => return problem(format!("page cursor `{cursor}` is not `MICROS:ID`")),
            }
        }
    };
    let mut search = JournalSearch {
        filter: JournalFilter {
            control_id: some(&query.control_id),
            channel: some(&query.channel),
            limit: PAGE + 1,
        },
        since,
        until,
        message_type: some(&query.message_type),
        status,
        after,
        ..JournalSearch::default()
    };
    let mut note = None;
    if operator {
        search.ipp = some(&query.ipp);
        search.nda = some(&query.nda);
        search.text = some(&query.text);
        // The text, IPP and NDA filters read the raw bytes of every candidate row: without a
        // start time they look at the newest rows only.
        let scans = search.text.is_some() || search.ipp.is_some() || search.nda.is_some();
        if scans && since.is_none() {
            let last = state.0.store.last_journal_id_async().await.unwrap_or(0);
            if last > TEXT_WINDOW {
                search.min_id = Some(last - TEXT_WINDOW);
                note = Some(match lang {
                    Lang::Fr => format!(
                        "Recherche de texte limitée aux {TEXT_WINDOW} derniers messages : donnez une date de début pour remonter plus loin."
                    ),
                    Lang::En => format!(
                        "Text search limited to the newest {TEXT_WINDOW} messages: give a start time to look further back."
                    ),
                });
            }
        }
        if search.ipp.is_some() || search.nda.is_some() {
            let what = if search.ipp.is_some() { "IPP" } else { "NDA" };
            if !state
                .audit(&session, "search", format!("journal by {what}"), "")
                .await
            {
                return store_failure(&frame, "audit");
            }
        }
    } else if some(&query.ipp).is_some()
        || some(&query.nda).is_some()
        || some(&query.text).is_some()
    {
        note = Some(lang.pick(
            "La recherche par IPP, NDA ou texte est réservée aux opérateurs : ces critères ont été ignorés.",
            "Searching by IPP, NDA or text is for operators only: those criteria were ignored.",
        ).to_string());
    }
    if !state.0.store.intake_copied(LIST_WAITS_FOR_INTAKE).await {
        let lag = lang.pick(
            "Des messages acquittés à l'instant ne sont pas encore listés (journal d'entrée en cours de copie) : rechargez la page.",
            "Messages acknowledged a moment ago are not listed yet (the intake log is being copied): reload the page.",
        );
        note = Some(match note {
            Some(earlier) => format!("{earlier} {lag}"),
            None => lag.to_string(),
        });
    }
    let store = state.0.store.clone();
    let found = tokio::task::spawn_blocking(move || store.search_journal(&search)).await;
    let mut rows = match found {
        Ok(Ok(rows)) => rows,
        Ok(Err(error)) => return store_failure(&frame, error),
        Err(error) => return store_failure(&frame, error),
    };
    let next = if rows.len() > PAGE {
        rows.truncate(PAGE);
        rows.last().map(|last| {
            let mut params: Vec<(&str, String)> = vec![
                ("since", query.since.clone()),
                ("until", query.until.clone()),
                ("channel", query.channel.clone()),
                ("type", query.message_type.clone()),
                ("control_id", query.control_id.clone()),
                ("status", query.status.clone()),
            ];
            if operator {
                params.push(("ipp", query.ipp.clone()));
                params.push(("nda", query.nda.clone()));
                params.push(("text", query.text.clone()));
            }
            params.push((
                "after",
                format!("{}:{}", last.received_at.as_microsecond(), last.id),
            ));
            let query: Vec<String> = params
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}={}", query_escape(&v)))
                .collect();
            format!("/console/messages?{}", query.join("&"))
        })
    } else {
        None
    };
    let rows: Vec<pages::MessageRow> = rows
        .into_iter()
        .map(|r| pages::MessageRow {
            id: r.id,
            received_at: time_text(r.received_at),
            channel: r.channel,
            message_type: r.message_type,
            control_id: r.control_id,
            status: r.status,
        })
        .collect();
    let mut response = html(
        StatusCode::OK,
        pages::messages(&frame, &form, &rows, next.as_deref(), None, note.as_deref()),
    );
    state.keep_lang(&mut response, query.lang.as_deref());
    response
}

#[derive(Debug, Deserialize, Default)]
struct MessageQuery {
    lang: Option<String>,
    /// Why the operator opens the raw message (audited).
    why: Option<String>,
    /// What was just done (a notice).
    done: Option<String>,
}

/// The ACK we answered, rebuilt from the journal: AA for a kept row, AE with the reason for a
/// rejected one (our control id and time are not kept, so they are left empty).
fn rebuilt_ack(raw: &[u8], status: &str, reason: Option<&str>) -> Option<String> {
    use crate::hl7::{AckError, AckOutcome, AckRequest, ErrorCode, Message, build_ack};
    let request = match Message::parse(raw) {
        Ok(message) => AckRequest::from_message(&message),
        Err(_) => AckRequest::salvage(raw),
    };
    if request.control_id.is_empty() && status != "rejected" {
        return None;
    }
    let (outcome, error) = if status == "rejected" {
        (
            AckOutcome::Error,
            Some(AckError {
                code: ErrorCode::ApplicationInternal,
                location: None,
                message: reason.unwrap_or("").to_string(),
            }),
        )
    } else {
        (AckOutcome::Accepted, None)
    };
    let ack = build_ack(&request, outcome, error.as_ref(), "", "")?;
    Some(String::from_utf8_lossy(&ack).replace('\r', "\n"))
}

async fn message(
    State(state): State<ConsoleState>,
    Path(id): Path<i64>,
    Query(query): Query<MessageQuery>,
    headers: HeaderMap,
) -> Response {
    let here = format!("/console/messages/{id}");
    let (session, frame) = match state.page(&headers, query.lang.as_deref(), Nav::Messages, &here) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let lang = frame.lang;
    let entry = match state.0.store.journal_entry_async(id).await {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            return html(
                StatusCode::NOT_FOUND,
                pages::problem(
                    &frame,
                    lang.pick("Message introuvable", "Message not found"),
                    &match lang {
                        Lang::Fr => format!(
                            "Le journal n'a pas de message {id} (il a pu être purgé par la rétention)."
                        ),
                        Lang::En => format!(
                            "The journal has no message {id} (retention may have pruned it)."
                        ),
                    },
                ),
            );
        }
        Err(error) => return store_failure(&frame, error),
    };
    let operator = session.role.is_operator();
    if operator {
        // The view is on record before the content is shown.
        let why = query.why.as_deref().unwrap_or("message browser");
        if !state
            .audit(&session, "view", format!("journal:{id}"), why)
            .await
        {
            return store_failure(&frame, "audit");
        }
    }
    let lineage = match state.0.store.lineage(id).await {
        Ok(rows) => rows,
        Err(error) => return store_failure(&frame, error),
    };
    let summary = entry.summary;
    let raw = entry.raw;
    let is_json = raw.first().is_some_and(|b| *b == b'{' || *b == b'[');
    let json = (operator && is_json)
        .then(|| serde_json::from_slice::<Value>(&raw).ok())
        .flatten()
        .and_then(|v| serde_json::to_string_pretty(&v).ok());
    let view = pages::MessageView {
        peer: summary.peer.clone(),
        sender: summary.sender.clone(),
        reason: summary.reason.clone(),
        note: summary.note.clone(),
        raw: (operator && json.is_none()).then(|| hl7view::raw_lines(&raw)),
        tree: if operator && !is_json {
            hl7view::tree(&raw).or_else(|| hl7view::hprim_tree(&raw))
        } else {
            None
        },
        json,
        ack: if operator && !is_json {
            rebuilt_ack(&raw, &summary.status, summary.reason.as_deref())
        } else {
            None
        },
        lineage: lineage
            .into_iter()
            .map(|row| pages::LineageView {
                id: row.id,
                destination: row.destination,
                enqueued_at: time_text(row.enqueued_at),
                control_id: row.control_id,
                status: row.status.as_str().to_string(),
                attempts: row.attempts,
                last_error: row.last_error,
                delivered_at: row.delivered_at.map(time_text),
                ack: if operator {
                    row.ack
                        .map(|a| String::from_utf8_lossy(&a).replace('\r', " ⏎ "))
                } else {
                    None
                },
            })
            .collect(),
        destinations: if operator {
            state.0.wakers.keys().cloned().collect()
        } else {
            Vec::new()
        },
        notice: query.done.as_deref().map(|done| match done {
            "resend" => lang
                .pick("Message remis en file.", "Message queued again.")
                .to_string(),
            other => other
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect(),
        }),
        row: pages::MessageRow {
            id: summary.id,
            received_at: time_text(summary.received_at),
            channel: summary.channel,
            message_type: summary.message_type,
            control_id: summary.control_id,
            status: summary.status,
        },
    };
    let mut response = html(StatusCode::OK, pages::message(&frame, &view));
    state.keep_lang(&mut response, query.lang.as_deref());
    response
}

// ---- actions ----

#[derive(Debug, Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    destination: String,
    #[serde(default)]
    reason: String,
}

fn bad_action(frame: &Frame, text: &str) -> Response {
    let lang = frame.lang;
    html(
        StatusCode::BAD_REQUEST,
        pages::problem(frame, lang.pick("Action refusée", "Action refused"), text),
    )
}

fn reason_missing(frame: &Frame) -> Response {
    bad_action(
        frame,
        frame.lang.pick(
            "Donnez un motif : il est enregistré dans le journal d'audit.",
            "Give a reason: it is recorded in the audit trail.",
        ),
    )
}

/// `POST /console/messages/{id}/resend`: the journaled bytes, as received, queued to a
/// destination (its lineage shows the delivery).
async fn resend_journal(
    State(state): State<ConsoleState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let path = format!("/console/messages/{id}/resend");
    let (session, frame) = match state.operator_action(&headers, &form, &path) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let lang = frame.lang;
    let destination = form.destination.trim().to_string();
    if !state.0.wakers.contains_key(&destination) {
        return bad_action(
            &frame,
            &match lang {
                Lang::Fr => format!(
                    "Destination « {destination} » inconnue : choisissez une destination de `[outbound]`."
                ),
                Lang::En => {
                    format!("Unknown destination `{destination}`: pick one of `[outbound]`.")
                }
            },
        );
    }
    let entry = match state.0.store.journal_entry_async(id).await {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            return bad_action(
                &frame,
                lang.pick("Message introuvable.", "Message not found."),
            );
        }
        Err(error) => return store_failure(&frame, error),
    };
    if !state
        .audit(
            &session,
            "resend",
            format!("journal:{id} to {destination}"),
            &form.reason,
        )
        .await
    {
        return store_failure(&frame, "audit");
    }
    let item = OutboundItem {
        destination: destination.clone(),
        control_id: entry.summary.control_id,
        payload: bytes::Bytes::from(entry.raw),
        source: format!("journal:{id}"),
    };
    if let Err(error) = state.0.store.enqueue(vec![item]).await {
        return store_failure(&frame, error);
    }
    state.wake(&destination);
    tracing::info!(user = %session.user, journal_id = id, destination = %destination, "console: message queued again");
    see_other(&format!("/console/messages/{id}?done=resend"))
}

/// `POST /console/outbound/{id}/resend`: an outbound message's bytes queued again to its
/// destination (same control id: the receiver can tell it is a repeat).
async fn resend_outbound(
    State(state): State<ConsoleState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let path = format!("/console/outbound/{id}/resend");
    let (session, frame) = match state.operator_action(&headers, &form, &path) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let lang = frame.lang;
    let store = state.0.store.clone();
    let found = tokio::task::spawn_blocking(move || store.outbound_message(id)).await;
    let message = match found {
        Ok(Ok(Some((message, _)))) => message,
        Ok(Ok(None)) => {
            return bad_action(
                &frame,
                lang.pick(
                    "Message sortant introuvable.",
                    "Outbound message not found.",
                ),
            );
        }
        Ok(Err(error)) => return store_failure(&frame, error),
        Err(error) => return store_failure(&frame, error),
    };
    if !state
        .audit(
            &session,
            "resend",
            format!("outbound:{id} to {}", message.destination),
            &form.reason,
        )
        .await
    {
        return store_failure(&frame, "audit");
    }
    let destination = message.destination.clone();
    let back = message.source.strip_prefix("journal:").map_or_else(
        || "/console/".to_string(),
        |j| format!("/console/messages/{j}?done=resend"),
    );
    let item = OutboundItem {
        destination: message.destination,
        control_id: message.control_id,
        payload: message.payload,
        source: message.source,
    };
    if let Err(error) = state.0.store.enqueue(vec![item]).await {
        return store_failure(&frame, error);
    }
    state.wake(&destination);
    see_other(&back)
}

/// `POST /console/dead/replay`: every dead letter pending again (as `ordobridge replay`).
async fn replay(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let (session, frame) = match state.operator_action(&headers, &form, "/console/dead/replay") {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let dead = match state.0.store.dead_letters_async(None, 0).await {
        Ok(dead) => dead,
        Err(error) => return store_failure(&frame, error),
    };
    let destinations: std::collections::BTreeSet<String> =
        dead.iter().map(|d| d.destination.clone()).collect();
    let ids: Vec<i64> = dead.iter().map(|d| d.id).collect();
    if !state
        .audit(
            &session,
            "replay",
            format!("{} dead letter(s)", ids.len()),
            &form.reason,
        )
        .await
    {
        return store_failure(&frame, "audit");
    }
    if let Err(error) = state.0.store.replay(ids).await {
        return store_failure(&frame, error);
    }
    for destination in &destinations {
        state.wake(destination);
    }
    see_other("/console/")
}

async fn pause_destination(
    State(state): State<ConsoleState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    switch_destination(state, name, headers, form, true).await
}

async fn resume_destination(
    State(state): State<ConsoleState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    switch_destination(state, name, headers, form, false).await
}

/// Pauses or resumes a destination: its worker starts no new message while paused (the one
/// in flight finishes). The pause is committed with its audit row: a restart keeps it.
async fn switch_destination(
    state: ConsoleState,
    name: String,
    headers: HeaderMap,
    form: ActionForm,
    paused: bool,
) -> Response {
    let verb = if paused { "pause" } else { "resume" };
    let path = format!("/console/destinations/{name}/{verb}");
    let (session, frame) = match state.operator_action(&headers, &form, &path) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    if !state.0.wakers.contains_key(&name) {
        return bad_action(
            &frame,
            &match frame.lang {
                Lang::Fr => format!("Destination « {name} » inconnue."),
                Lang::En => format!("Unknown destination `{name}`."),
            },
        );
    }
    let entry = AuditEntry {
        user: session.user.clone(),
        action: verb.to_string(),
        target: format!("destination:{name}"),
        reason: form.reason.trim().to_string(),
    };
    if let Err(error) = state
        .0
        .store
        .switch_destination(name.clone(), paused, entry)
        .await
    {
        return store_failure(&frame, error);
    }
    state.0.pauses.set(&name, paused);
    state.wake(&name);
    tracing::info!(user = %session.user, destination = %name, paused, "console: destination switched");
    see_other("/console/")
}

/// `POST /console/holds/{id}/release`: a bundle held for an unknown patient is mapped now
/// with what is known (the releaser's next round), its release audited in the same commit.
async fn release_hold(
    State(state): State<ConsoleState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let path = format!("/console/holds/{id}/release");
    let (session, frame) = match state.operator_action(&headers, &form, &path) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let entry = AuditEntry {
        user: session.user.clone(),
        action: "release".to_string(),
        target: format!("hold of journal:{id}"),
        reason: form.reason.trim().to_string(),
    };
    match state.0.store.release_hold_now(id, entry).await {
        Ok(true) => {
            state.0.releaser.notify_one();
            tracing::info!(user = %session.user, journal_id = id, "console: held bundle released now");
            see_other("/console/")
        }
        Ok(false) => bad_action(
            &frame,
            frame.lang.pick(
                "Ce lot n'est plus en attente (déjà libéré).",
                "This bundle is no longer held (already released).",
            ),
        ),
        Err(error) => store_failure(&frame, error),
    }
}

async fn audit(
    State(state): State<ConsoleState>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let (session, frame) = match state.page(
        &headers,
        query.lang.as_deref(),
        Nav::Audit,
        "/console/audit",
    ) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    if session.role != Role::Operator {
        return forbidden(&frame);
    }
    let rows = match state.0.store.recent_audit(200).await {
        Ok(rows) => rows,
        Err(error) => return store_failure(&frame, error),
    };
    let rows: Vec<pages::AuditRow> = rows
        .into_iter()
        .map(|r| pages::AuditRow {
            at: time_text(r.at),
            user: r.entry.user,
            action: r.entry.action,
            target: r.entry.target,
            reason: r.entry.reason,
        })
        .collect();
    let mut response = html(StatusCode::OK, pages::audit(&frame, &rows));
    state.keep_lang(&mut response, query.lang.as_deref());
    response
}

// ---- mapping try-out ----

fn route_labels(state: &ConsoleState) -> Vec<String> {
    state
        .0
        .routes
        .iter()
        .map(|r| {
            let file = r.mapping.file_name().map_or_else(
                || r.mapping.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            );
            format!("{file} → {}", r.destination)
        })
        .collect()
}

async fn try_page(
    State(state): State<ConsoleState>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let (session, frame) =
        match state.page(&headers, query.lang.as_deref(), Nav::TryOut, "/console/try") {
            Ok(found) => found,
            Err(response) => return *response,
        };
    if !session.role.is_operator() {
        return forbidden(&frame);
    }
    let mut response = html(
        StatusCode::OK,
        pages::try_out(
            &frame,
            &route_labels(&state),
            &pages::TryForm::default(),
            None,
        ),
    );
    state.keep_lang(&mut response, query.lang.as_deref());
    response
}

#[derive(Debug, Deserialize)]
struct TryFormInput {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    route: usize,
    #[serde(default)]
    journal: String,
    #[serde(default)]
    bundle: String,
}

/// Lines of a message for display: segments apart, control bytes escaped.
fn message_lines(bytes: &[u8]) -> Vec<String> {
    crate::tools::printable_message(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `POST /console/try`: a push route's mapping on a journaled or pasted bundle (the code of
/// `ordobridge transform`), compared line by line with what was sent for that bundle.
async fn try_mapping(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(input): Form<TryFormInput>,
) -> Response {
    let (session, mut frame) = match state.action(&headers, &input.csrf, true, "/console/try") {
        Ok(found) => found,
        Err(response) => return *response,
    };
    frame.nav = Nav::TryOut;
    let lang = frame.lang;
    let labels = route_labels(&state);
    let form = pages::TryForm {
        route: input.route,
        journal: input.journal.trim().to_string(),
        bundle: input.bundle.clone(),
    };
    let answer = |result: pages::TryResult| {
        html(
            StatusCode::OK,
            pages::try_out(&frame, &labels, &form, Some(&result)),
        )
    };
    let failed = |text: String| {
        answer(pages::TryResult {
            error: Some(text),
            ..pages::TryResult::default()
        })
    };
    let Some(route) = state.0.routes.get(input.route).cloned() else {
        return failed(
            lang.pick("Choisissez une route.", "Pick a route.")
                .to_string(),
        );
    };
    let journal_id = match some(&input.journal).map(|j| j.parse::<i64>()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return failed(match lang {
                Lang::Fr => format!(
                    "« {} » n'est pas un numéro de journal.",
                    input.journal.trim()
                ),
                Lang::En => format!("`{}` is not a journal id.", input.journal.trim()),
            });
        }
    };
    let (body, name) = match journal_id {
        Some(id) => match state.0.store.journal_entry_async(id).await {
            Ok(Some(entry)) => {
                if !state
                    .audit(
                        &session,
                        "try mapping",
                        format!("journal:{id}"),
                        "mapping try-out",
                    )
                    .await
                {
                    return store_failure(&frame, "audit");
                }
                (entry.raw, format!("journal:{id}"))
            }
            Ok(None) => {
                return failed(match lang {
                    Lang::Fr => format!("Le journal n'a pas de message {id}."),
                    Lang::En => format!("The journal has no message {id}."),
                });
            }
            Err(error) => return store_failure(&frame, error),
        },
        None if !input.bundle.trim().is_empty() => (
            input.bundle.clone().into_bytes(),
            "pasted bundle".to_string(),
        ),
        None => {
            return failed(
                lang.pick(
                    "Donnez un numéro de journal ou collez un lot.",
                    "Give a journal id or paste a bundle.",
                )
                .to_string(),
            );
        }
    };
    // What was sent for this bundle on the route's destination: compared with, and its
    // control id reused so that MSH-10 does not differ for nothing.
    let mut sent = None;
    if let Some(id) = journal_id
        && let Ok(rows) = state.0.store.lineage(id).await
        && let Some(row) = rows
            .into_iter()
            .rev()
            .find(|r| r.destination == route.destination)
    {
        let store = state.0.store.clone();
        if let Ok(Ok(Some((message, _)))) =
            tokio::task::spawn_blocking(move || store.outbound_message(row.id)).await
        {
            sent = Some(message);
        }
    }
    let control_id = sent
        .as_ref()
        .map_or_else(|| "TRY-1".to_string(), |m| m.control_id.clone());
    let now = jiff::Timestamp::now().to_string();
    let mapping = route.mapping.clone();
    let produced = tokio::task::spawn_blocking(move || {
        crate::tools::transform_bytes(&mapping, &body, &name, None, &control_id, &now)
    })
    .await;
    let produced = match produced {
        Ok(Ok(produced)) => produced,
        Ok(Err(error)) => return failed(error),
        Err(error) => return failed(error.to_string()),
    };
    let produced_lines = produced.as_deref().map(message_lines);
    let mut result = pages::TryResult {
        produced: produced_lines.clone(),
        ..pages::TryResult::default()
    };
    if let Some(message) = sent {
        let sent_lines = message_lines(&message.payload);
        let produced_lines = produced_lines.unwrap_or_default();
        let count = produced_lines.len().max(sent_lines.len());
        result.diff = (0..count)
            .map(|i| {
                let a = produced_lines.get(i).cloned().unwrap_or_default();
                let b = sent_lines.get(i).cloned().unwrap_or_default();
                let same = a == b;
                (a, b, same)
            })
            .collect();
        result.sent_id = Some(message.id);
    }
    answer(result)
}
