//! The wiring: one place a reader can follow from top to bottom.
//!
//! [`run`] takes a validated [`Config`]: it loads the TLS certificates and keys (a bad file
//! stops the start; each configuration is registered with the [`Reloader`] that SIGHUP
//! drives), opens the store, binds (or takes already-bound) listeners, spawns one MLLP server
//! per MLLP channel and one poller per file channel, serves HTTP (health, launch, the Posos
//! simulator), and waits for the shutdown signal. Then every loop finishes the message in
//! flight and its answer, and the store closes after the last commit.
//!
//! - `intake`: reading a payload into journal records, the same for every channel kind;
//! - `mllp_in`: the frame handler of an MLLP channel (parse, commit, ACK);
//! - `file_in`: the file handler of a file-drop channel (parse, commit, then archive);
//! - `processor`: applies accepted ADT/HPRIM to the census, behind the ACK;
//! - `push`: the FHIR push endpoint (journal, map, enqueue; or hold for an unknown patient);
//! - `hold`: releases held bundles when the census learns their patient, or at the deadline;
//! - `fhir`: `/fhir/Patient` and `/fhir/Encounter` from the census, behind the `[fhir]` guard;
//! - `documents`: `$send-to-ehr` (check, journal, map, enqueue) and `$tracking`;
//! - `outbox`: the worker of a file destination;
//! - `web`: the HTTP router: launch endpoints over the census and the Posos client, and the
//!   built-in simulator.

mod documents;
mod fhir;
mod file_in;
mod hold;
mod intake;
mod mllp_in;
mod outbox;
mod processor;
mod prune;
mod push;
pub mod push_token;
mod status;
mod unsettled;
mod watchdog;
mod web;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{Config, Destination, InboundKind};
use crate::delivery::{DeliveryStats, run_destination_with_tls};
use crate::filedrop::{InboxStats, run_inbox};
use crate::mllp::server::{ServerSettings, ServerStats, serve_tls};
use crate::store::{Store, StoreError, StoreOptions};
use crate::tls::Reloader;

pub use documents::DOCUMENTS_CHANNEL;
pub use file_in::FileInbound;
pub use mllp_in::InboundMllp;
pub use push::PUSH_CHANNEL;
pub use push_token::{GeneratedToken, resolve_fhir_token, resolve_push_token};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot open the store `{path}`: {source}")]
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

/// The TLS configurations of the listeners and destinations, loaded (files checked) and
/// registered for reload.
#[derive(Default)]
struct TlsConfigs {
    inbound: BTreeMap<String, crate::tls::ServerTls>,
    outbound: BTreeMap<String, crate::tls::ClientTls>,
    http: Option<crate::tls::ServerTls>,
}

impl TlsConfigs {
    fn load(config: &Config, reloader: &Reloader) -> Result<Self, EngineError> {
        let mut out = TlsConfigs::default();
        let server = |settings: &crate::tls::ServerTlsSettings, usage: String| {
            let holder = settings
                .reloadable(&usage)
                .map_err(|source| EngineError::Tls { usage, source })?;
            reloader.register(holder.clone());
            Ok::<_, EngineError>(holder)
        };
        for (name, channel) in &config.inbound {
            if let InboundKind::Mllp(mllp) = &channel.kind
                && let Some(settings) = &mllp.tls
            {
                let holder = server(settings, format!("inbound/{name}"))?;
                out.inbound.insert(name.clone(), holder);
            }
        }
        for (name, destination) in &config.outbound {
            if let Destination::Mllp(mllp) = destination
                && let Some(settings) = &mllp.tls
            {
                let usage = format!("outbound/{name}");
                let client = settings
                    .client(&usage)
                    .map_err(|source| EngineError::Tls { usage, source })?;
                reloader.register(client.config.clone());
                out.outbound.insert(name.clone(), client);
            }
        }
        if let Some(settings) = config.http.as_ref().and_then(|h| h.tls.as_ref()) {
            out.http = Some(server(settings, "http".to_string())?);
        }
        Ok(out)
    }
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
/// `reloader`: the binary calls [`Reloader::reload_all`] on SIGHUP, tests call it directly.
pub async fn run_with_reloader(
    mut config: Config,
    listeners: BoundListeners,
    shutdown: CancellationToken,
    reloader: Reloader,
    on_ready: impl FnOnce(&[ChannelHandle]),
) -> Result<(), EngineError> {
    if let Some(generated) = resolve_push_token(&mut config).map_err(EngineError::Web)? {
        warn!(
            file = %generated.path.display(),
            "generated the push endpoint's bearer token in this file (mode 0600): give its content to Posos"
        );
    }
    if let Some(generated) = resolve_fhir_token(&mut config).map_err(EngineError::Web)? {
        warn!(
            file = %generated.path.display(),
            "generated the FHIR routes' bearer token in this file (mode 0600): give its content to the applications that send documents"
        );
    }
    warn_about_open_doors(&config);
    crate::tls::install_crypto_provider();
    // Certificates first: a bad file stops the start before anything is opened or bound.
    let mut tls = TlsConfigs::load(&config, &reloader)?;
    let store = Store::open(
        &config.store.path,
        StoreOptions {
            queue_capacity: config.store.queue_capacity,
            max_batch: config.store.max_batch,
        },
    )
    .map_err(|source| EngineError::Store {
        path: config.store.path.display().to_string(),
        source: Box::new(source),
    })?;
    info!(path = %config.store.path.display(), "store open");

    let mut listeners = bind_listeners(&config, listeners).await?;
    let tracker = TaskTracker::new();
    let mut observed = status::Observed {
        store: Some(store.clone()),
        tls: reloader.clone(),
        ..status::Observed::default()
    };
    // Every intake pokes the processor after a commit; it applies ADT/HPRIM to the census.
    let processed = Arc::new(tokio::sync::Notify::new());
    // The processor pokes the releaser of held bundles after each census update.
    let census_changed = Arc::new(tokio::sync::Notify::new());
    // Through which journal id the census is settled: launches read their own writes.
    let census_progress = Arc::new(tokio::sync::watch::Sender::new(0i64));
    tracker.spawn(
        processor::run_processor(
            store.clone(),
            config.census.clone(),
            Arc::new(
                config
                    .inbound
                    .iter()
                    .filter(|(_, channel)| channel.log_phi)
                    .map(|(name, _)| name.clone())
                    .collect(),
            ),
            processed.clone(),
            census_changed.clone(),
            census_progress.clone(),
            shutdown.child_token(),
        )
        .instrument(info_span!("processor")),
    );
    observed.alert_after = config.alert_after.clone();
    if let Some(period) = sd_notify::watchdog_enabled() {
        tracker.spawn(
            watchdog::run_watchdog(store.clone(), period, shutdown.child_token())
                .instrument(info_span!("watchdog")),
        );
    }
    let prune_stats = Arc::new(prune::PruneStats::default());
    observed.prune = Some(prune_stats.clone());
    tracker.spawn(
        prune::run_pruner(
            store.clone(),
            config.store.retention.clone(),
            prune_stats,
            shutdown.child_token(),
        )
        .instrument(info_span!("pruner")),
    );
    let mut handles = Vec::new();
    let mut servers = Vec::new();

    for (name, channel) in &config.inbound {
        let span = info_span!("channel", channel = %name);
        match &channel.kind {
            InboundKind::Mllp(mllp) => {
                let Some(listener) = listeners.mllp.remove(name) else {
                    continue;
                };
                let local_addr = listener.local_addr().map_err(|source| EngineError::Bind {
                    channel: name.clone(),
                    addr: mllp.bind,
                    source,
                })?;
                let settings = ServerSettings {
                    max_connections: mllp.max_connections,
                    max_frame_bytes: mllp.max_frame_bytes,
                    read_timeout: mllp.read_timeout,
                    idle_timeout: mllp.idle_timeout,
                    allow: mllp.allow.clone(),
                    max_connections_per_peer: mllp.max_connections_per_peer,
                };
                let tls = tls.inbound.remove(name);
                let handler = Arc::new(InboundMllp::new(channel, store.clone(), processed.clone()));
                observed
                    .rejected_not_journaled
                    .push((name.clone(), handler.rejected_not_journaled()));
                let stats = Arc::new(ServerStats::default());
                observed.listeners.push((name.clone(), stats.clone()));
                let token = shutdown.child_token();
                let channel_name = name.clone();
                // Whether the listener still serves: `/ready` fails when one stopped.
                let serving = Arc::new(std::sync::atomic::AtomicBool::new(true));
                observed.serving.push((name.clone(), serving.clone()));
                servers.push(
                    tracker.spawn(
                        async move {
                            let result =
                                serve_tls(listener, settings, tls, handler, stats, token).await;
                            serving.store(false, std::sync::atomic::Ordering::Relaxed);
                            result.map_err(|source| EngineError::Serve {
                                channel: channel_name,
                                source,
                            })
                        }
                        .instrument(span),
                    ),
                );
                handles.push(ChannelHandle {
                    name: name.clone(),
                    local_addr: Some(local_addr),
                    kind: "mllp",
                });
            }
            InboundKind::File(file) => {
                if file.create_folder
                    && let Err(e) = std::fs::create_dir_all(&file.inbox.folder)
                {
                    warn!(channel = %name, folder = %file.inbox.folder.display(), error = %e, "cannot create the inbox folder");
                }
                let handler = Arc::new(FileInbound::new(
                    channel,
                    file.format,
                    store.clone(),
                    processed.clone(),
                ));
                let stats = Arc::new(InboxStats::default());
                observed.inboxes.push((name.clone(), stats.clone()));
                let token = shutdown.child_token();
                let settings = file.inbox.clone();
                let channel_name = name.clone();
                tracker.spawn(
                    async move {
                        run_inbox(&channel_name, settings, handler, stats, token).await;
                    }
                    .instrument(span),
                );
                handles.push(ChannelHandle {
                    name: name.clone(),
                    local_addr: None,
                    kind: "file",
                });
            }
        }
    }
    // One worker per outbound destination, each on its own durable queue: a failing
    // destination blocks only itself.
    let mut wakers: BTreeMap<String, Arc<tokio::sync::Notify>> = BTreeMap::new();
    for (name, destination) in &config.outbound {
        let notify = Arc::new(tokio::sync::Notify::new());
        wakers.insert(name.clone(), notify.clone());
        let token = shutdown.child_token();
        let span = info_span!("destination", destination = %name);
        match destination {
            Destination::Mllp(settings) => {
                let stats = Arc::new(DeliveryStats::default());
                observed.destinations.push((name.clone(), stats.clone()));
                let tls = tls.outbound.remove(name);
                tracker.spawn(
                    run_destination_with_tls(
                        store.clone(),
                        settings.clone(),
                        tls,
                        notify,
                        stats,
                        token,
                    )
                    .instrument(span),
                );
            }
            Destination::File(settings) => {
                let outbox = crate::filedrop::Outbox::new(settings.clone()).map_err(|e| {
                    EngineError::Destination {
                        name: name.clone(),
                        reason: e.to_string(),
                    }
                })?;
                tracker.spawn(
                    outbox::run_file_destination(
                        store.clone(),
                        name.clone(),
                        Arc::new(outbox),
                        notify,
                        token,
                    )
                    .instrument(span),
                );
            }
        }
        handles.push(ChannelHandle {
            name: name.clone(),
            local_addr: None,
            kind: "outbound",
        });
    }
    // Pushed bundles: one deliverer (mappings) shared by the endpoint and the releaser. The
    // releaser runs whatever the hold setting: bundles held by an earlier run still get out.
    let mut push_state = None;
    if let Some(push) = &config.push {
        let deliverer = Arc::new(
            push::Deliverer::new(push, store.clone(), wakers.clone(), census_changed.clone())
                .map_err(|e| EngineError::Web(format!("the push endpoint: {e}")))?,
        );
        let stats = Arc::new(hold::HoldStats::default());
        observed.holds = Some(stats.clone());
        tracker.spawn(
            hold::run_releaser(
                store.clone(),
                deliverer.clone(),
                stats,
                census_changed.clone(),
                shutdown.child_token(),
            )
            .instrument(info_span!("releaser")),
        );
        tracker.spawn(
            unsettled::run_sweeper(store.clone(), deliverer.clone(), shutdown.child_token())
                .instrument(info_span!("unsettled pushes")),
        );
        push_state = Some(push::PushState::new(push, store.clone(), deliverer));
    }
    for name in listeners.mllp.keys() {
        warn!(channel = %name, "a listener was given for a channel that is not configured; ignored");
    }

    if let Some(listener) = listeners.http.take() {
        let local_addr = listener
            .local_addr()
            .map_err(|e| EngineError::Web(format!("cannot read the HTTP address: {e}")))?;
        let guard = Arc::new(
            config
                .http
                .as_ref()
                .map(|http| http.guard.clone())
                .unwrap_or_default(),
        );
        let observed = Arc::new(observed);
        let mut router = web::router(
            &config,
            local_addr,
            store.clone(),
            census_progress.subscribe(),
        )?
        .merge(status::router(observed.clone(), guard.clone()))
        .merge(status::ready_router(observed));
        if let Some(state) = push_state {
            router = router.merge(push::router(state));
        }
        // Documents into the EHR: the census search and `$send-to-ehr`, behind `[fhir]`.
        if let Some(fhir_config) = &config.fhir {
            let https = config.http.as_ref().is_some_and(|h| h.tls.is_some());
            let fhir_state = fhir::FhirState::new(fhir_config, store.clone(), https);
            router = router.merge(fhir::router(fhir_state.clone()));
            if let Some(documents) = &config.documents {
                let files: Vec<String> = config
                    .outbound
                    .iter()
                    .filter(|(_, d)| matches!(d, Destination::File(_)))
                    .map(|(name, _)| name.clone())
                    .collect();
                let state =
                    documents::DocumentsState::new(documents, &fhir_state, wakers.clone(), &files)
                        .map_err(|e| EngineError::Web(format!("the document endpoint: {e}")))?;
                router = router.merge(documents::router(state, fhir_state));
            }
        }
        let router = web::harden(router, guard);
        let token = shutdown.child_token();
        let serve_settings = config
            .http
            .as_ref()
            .map(|http| http.serve.clone())
            .unwrap_or_default();
        tracker.spawn(
            crate::http::serve::serve(listener, router, serve_settings, tls.http.take(), token)
                .instrument(info_span!("http")),
        );
        handles.push(ChannelHandle {
            name: "http".to_string(),
            local_addr: Some(local_addr),
            kind: "http",
        });
    }
    tracker.close();
    on_ready(&handles);

    shutdown.cancelled().await;
    info!("shutting down: finishing messages in flight");
    let mut result = Ok(());
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "listener failed");
                result = Err(e);
            }
            Err(e) => error!(error = %e, "listener task panicked"),
        }
    }
    tracker.wait().await;
    store.close().await;
    info!("stopped");
    result
}
