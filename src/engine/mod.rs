//! The wiring: one place a reader can follow from top to bottom.
//!
//! [`run`] takes a validated [`Config`]: it checks the TLS certificates and keys (a bad file
//! stops the start), opens the store, binds the HTTP listener, and hands the configuration to
//! `running`, which binds (or takes already-bound) MLLP listeners, spawns one MLLP server per
//! MLLP channel, one poller per file channel, one worker per destination, and builds the HTTP
//! routes (health, launch, push, status, the Posos simulator). Then it waits for the shutdown
//! signal, applying each configuration reload it receives ([`run_reloadable`]). At shutdown
//! every loop finishes the message in flight and its answer, and the store closes after the
//! last commit.
//!
//! - `running`: what runs, and how a new configuration (SIGHUP) changes it;
//! - `reload`: the handle that asks for a reload, and its counters;
//! - `intake`: reading a payload into journal records, the same for every channel kind;
//! - `mllp_in`: the frame handler of an MLLP channel (parse, commit, ACK);
//! - `file_in`: the file handler of a file-drop channel (parse, commit, then archive);
//! - `processor`: applies accepted ADT/HPRIM to the census, behind the ACK;
//! - `push`: the FHIR push endpoint (journal, map, enqueue; or hold for an unknown patient);
//! - `hold`: releases held bundles when the census learns their patient, or at the deadline;
//! - `fhir`: `/fhir/Patient` and `/fhir/Encounter` from the census, behind the `[fhir]` guard;
//! - `documents`: `$send-to-ehr` (check, journal, map, enqueue) and `$tracking`;
//! - `web`: the HTTP router: launch endpoints over the census and the Posos client, and the
//!   built-in simulator;
//! - `console`: the web console's routes (`/console/`): login, dashboard and its events,
//!   message browser, audited views and actions, mapping try-out.

mod console;
mod documents;
mod fhir;
mod file_in;
mod hold;
mod intake;
pub mod lease;
mod mllp_in;
mod processor;
mod prune;
mod push;
pub mod push_token;
pub mod reload;
mod running;
mod status;
mod unsettled;
mod wakeups;
mod watchdog;
mod web;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{Config, Destination, InboundKind};
use crate::store::{Store, StoreError, StoreOptions};
use crate::tls::Reloader;

pub use documents::DOCUMENTS_CHANNEL;
pub use file_in::FileInbound;
pub use mllp_in::InboundMllp;
pub use push::PUSH_CHANNEL;
pub use push_token::{GeneratedToken, resolve_fhir_token, resolve_push_token};
pub use reload::{ReloadError, ReloadHandle, ReloadRequests, ReloadSummary, reload_channel};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    // The whole chain: an intake log error names its file here and the OS's reason below.
    #[error("cannot open the store `{path}`: {}", crate::text::error_chain(source.as_ref()))]
    Store {
        path: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error(
        "channel `{channel}`: cannot listen on {addr}: {source} (is another process using the port?)"
    )]
    Bind {
        channel: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("channel `{channel}`: the listener stopped: {source}")]
    Serve {
        channel: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{usage}: TLS: {source}")]
    Tls {
        /// `inbound/NAME`, `outbound/NAME` or `http`.
        usage: String,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("cannot start the HTTP side: {0}")]
    Web(String),
    #[error("destination `{name}`: {reason}")]
    Destination { name: String, reason: String },
}

/// Listeners bound before [`run`]: tests bind `127.0.0.1:0` and read the ports.
#[derive(Debug, Default)]
pub struct BoundListeners {
    /// MLLP listeners by channel name.
    pub mllp: BTreeMap<String, TcpListener>,
    /// The HTTP listener, when `[http]` is configured.
    pub http: Option<TcpListener>,
}

/// What is running, as seen from outside (tests, logs, future metrics).
#[derive(Debug, Clone)]
pub struct ChannelHandle {
    pub name: String,
    /// Where it listens; `None` for a file channel.
    pub local_addr: Option<SocketAddr>,
    pub kind: &'static str,
}

/// The settings an operator chose to leave open: said at every start, so they are never
/// forgotten.
fn warn_about_open_doors(config: &Config) {
    if let Some(push) = &config.push
        && push.allow_unauthenticated
        && push.token.is_none()
        && push.basic.is_none()
    {
        warn!(
            "the push endpoint accepts prescriptions from anybody who can reach it (`allow_unauthenticated = true`): configure a token before going live"
        );
    }
    if let Some(fhir) = &config.fhir
        && fhir.allow_unauthenticated
        && fhir.token.is_none()
        && fhir.basic.is_none()
    {
        warn!(
            "the FHIR routes give patient data to and take documents from anybody in `[fhir] allow` (`allow_unauthenticated = true`): configure a token before going live"
        );
    }
    if let Some(launch) = &config.launch
        && launch.settings.allow_unsigned_links
        && !launch.settings.require_signature
    {
        let open: Vec<String> = launch
            .settings
            .allow_list
            .networks()
            .iter()
            .filter(|n| !n.is_loopback())
            .map(ToString::to_string)
            .collect();
        if !open.is_empty() {
            warn!(
                networks = %open.join(", "),
                "unsigned launch links are accepted from these networks (`allow_unsigned_links = true`): anybody there can open any patient's Posos session"
            );
        }
    }
}

/// Binds every listener of the configuration that is not already in `bound`.
pub async fn bind_listeners(
    config: &Config,
    mut bound: BoundListeners,
) -> Result<BoundListeners, EngineError> {
    for (name, channel) in &config.inbound {
        let InboundKind::Mllp(mllp) = &channel.kind else {
            continue;
        };
        if bound.mllp.contains_key(name) {
            continue;
        }
        let listener = TcpListener::bind(mllp.bind)
            .await
            .map_err(|source| EngineError::Bind {
                channel: name.clone(),
                addr: mllp.bind,
                source,
            })?;
        bound.mllp.insert(name.clone(), listener);
    }
    if let (Some(http), None) = (&config.http, &bound.http) {
        let listener = TcpListener::bind(http.bind)
            .await
            .map_err(|source| EngineError::Bind {
                channel: "http".to_string(),
                addr: http.bind,
                source,
            })?;
        bound.http = Some(listener);
    }
    Ok(bound)
}

/// The census processor alone, exactly as [`run`] starts it: applies accepted journal rows to
/// the census until `shutdown`. For benchmarks and tools that fill a store and measure how
/// fast the census catches up.
pub async fn run_census_processor(
    store: Store,
    settings: crate::census::CensusSettings,
    shutdown: CancellationToken,
) {
    processor::run_processor(
        store,
        settings,
        Arc::default(),
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
        Arc::new(tokio::sync::watch::Sender::new(0)),
        shutdown,
    )
    .await;
}

/// Runs the daemon until `shutdown` is cancelled, then drains and returns.
///
/// `on_ready` is called once everything is accepting, with what runs where (the binary logs it
/// and tells systemd; tests use it to learn the ports).
pub async fn run(
    config: Config,
    listeners: BoundListeners,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&[ChannelHandle]),
) -> Result<(), EngineError> {
    run_with_reloader(config, listeners, shutdown, Reloader::default(), on_ready).await
}

/// [`run`], registering every TLS configuration (listeners, destinations, HTTP) with
/// `reloader`: tests call [`Reloader::reload_all`] directly.
pub async fn run_with_reloader(
    config: Config,
    listeners: BoundListeners,
    shutdown: CancellationToken,
    reloader: Reloader,
    on_ready: impl FnOnce(&[ChannelHandle]),
) -> Result<(), EngineError> {
    let (_nobody_reloads, requests) = reload_channel(reloader);
    run_reloadable(config, listeners, shutdown, requests, on_ready).await
}

/// [`run`], applying each configuration sent through the other end of `requests` (the
/// binary's SIGHUP handler, tests): see the module `running` for what a reload changes.
pub async fn run_reloadable(
    config: Config,
    mut listeners: BoundListeners,
    shutdown: CancellationToken,
    requests: ReloadRequests,
    on_ready: impl FnOnce(&[ChannelHandle]),
) -> Result<(), EngineError> {
    let ReloadRequests {
        receiver: mut reloads,
        tls: reloader,
    } = requests;
    crate::tls::install_crypto_provider();
    // Certificates first: a bad file stops the start before anything is opened or bound.
    let http_tls = match config.http.as_ref().and_then(|h| h.tls.as_ref()) {
        Some(settings) => {
            let usage = "http".to_string();
            let holder = settings
                .reloadable(&usage)
                .map_err(|source| EngineError::Tls { usage, source })?;
            reloader.register(holder.clone());
            Some(holder)
        }
        None => None,
    };
    check_tls_files(&config)?;
    let store = Store::open_backend(
        &config.store.backend,
        &config.store.path,
        StoreOptions {
            queue_capacity: config.store.queue_capacity,
            max_batch: config.store.max_batch,
            intake_log: config.store.intake_log,
        },
    )
    .map_err(|source| EngineError::Store {
        path: config.store.path.display().to_string(),
        source: Box::new(source),
    })?;
    info!(path = %store.path().display(), backend = store.backend_name(), "store open");

    let tracker = TaskTracker::new();
    if let Some(period) = sd_notify::watchdog_enabled() {
        tracker.spawn(
            watchdog::run_watchdog(store.clone(), period, shutdown.child_token())
                .instrument(info_span!("watchdog")),
        );
    }
    let mut running = running::Running::new(
        store.clone(),
        tracker.clone(),
        shutdown.child_token(),
        reloader,
    );
    let http_listener = match (&config.http, listeners.http.take()) {
        (_, Some(listener)) => Some(listener),
        (Some(http), None) => {
            Some(
                TcpListener::bind(http.bind)
                    .await
                    .map_err(|source| EngineError::Bind {
                        channel: "http".to_string(),
                        addr: http.bind,
                        source,
                    })?,
            )
        }
        (None, None) => None,
    };
    if let Some(listener) = &http_listener {
        running.set_http_addr(
            listener
                .local_addr()
                .map_err(|e| EngineError::Web(format!("cannot read the HTTP address: {e}")))?,
        );
    }
    let serve_settings = config
        .http
        .as_ref()
        .map(|http| http.serve.clone())
        .unwrap_or_default();
    let configured: Vec<String> = config.inbound.keys().cloned().collect();
    for name in listeners.mllp.keys() {
        if !configured.contains(name) {
            warn!(channel = %name, "a listener was given for a channel that is not configured; ignored");
        }
    }
    if let Err(e) = running.apply(config, &mut listeners.mllp).await {
        running.stop().await.ok();
        store.close().await;
        return Err(e);
    }
    if let Some(listener) = http_listener {
        tracker.spawn(
            crate::http::serve::serve(
                listener,
                running.live_router(),
                serve_settings,
                http_tls,
                shutdown.child_token(),
            )
            .instrument(info_span!("http")),
        );
    }
    on_ready(&running.handles());

    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(request) = reloads.recv() => {
                let outcome = running.apply(*request.config, &mut BTreeMap::new()).await;
                let _ = request.done.send(outcome);
            }
        }
    }
    info!("shutting down: finishing messages in flight");
    let result = running.stop().await;
    store.close().await;
    info!("stopped");
    result
}

/// Reads every certificate and key of the configuration's listeners and destinations, so a
/// bad file stops the start before the store is opened.
fn check_tls_files(config: &Config) -> Result<(), EngineError> {
    for (name, channel) in &config.inbound {
        if let InboundKind::Mllp(mllp) = &channel.kind
            && let Some(settings) = &mllp.tls
        {
            let usage = format!("inbound/{name}");
            settings
                .reloadable(&usage)
                .map_err(|source| EngineError::Tls { usage, source })?;
        }
    }
    for (name, destination) in &config.outbound {
        if let Destination::Mllp(mllp) = destination
            && let Some(settings) = &mllp.tls
        {
            let usage = format!("outbound/{name}");
            settings
                .client(&usage)
                .map_err(|source| EngineError::Tls { usage, source })?;
        }
    }
    Ok(())
}
