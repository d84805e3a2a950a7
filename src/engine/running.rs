//! What runs, and how a new configuration changes it.
//!
//! [`Running`] owns every task a configuration decides: one MLLP server or file poller per
//! inbound channel, one worker per destination, the census processor, the pruner, the releaser
//! of held bundles and the sweeper of unsettled pushes, and the HTTP routes.
//!
//! [`Running::apply`] takes a validated configuration in two phases. First everything that can
//! fail: TLS files, new listeners, mappings, drop folders, the HTTP routes; nothing running is
//! touched, so an error leaves the daemon exactly as it was. Then the swap: a channel or
//! destination whose settings did not change keeps its task, its connections and its queue; a
//! changed one is stopped (the message in flight finished) and started again; an added one
//! starts; a removed one finishes what it was doing and stops (a destination's pending
//! messages stay queued). Mappings are read again at every apply. The first
//! start is the same apply, from nothing.
//!
//! Some settings are read once at start (the store, logging, the HTTP listener itself): a
//! change to them is named in the [`ReloadSummary`] and takes effect at the next restart.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, info_span, warn};

use super::lease::{LeaseSettings, Role, run_leased};
use crate::config::{Config, Destination, InboundChannel, InboundKind};
use crate::delivery::{DeliveryStats, run_destination_with_tls};
use crate::filedrop::{InboxStats, run_inbox};
use crate::http::UsedLinks;
use crate::mllp::server::{ServerSettings, ServerStats, serve_tls};
use crate::store::Store;
use crate::tls::Reloader;

use super::{
    ChannelHandle, EngineError, FileInbound, InboundMllp, console, hold, processor, prune, push,
    status, unsettled, web,
};

/// A spawned task and the token that stops it.
struct Task<T = ()> {
    token: CancellationToken,
    handle: JoinHandle<T>,
}

impl<T: Send + 'static> Task<T> {
    fn spawn<F>(
        tracker: &TaskTracker,
        parent: &CancellationToken,
        span: Span,
        run: impl FnOnce(CancellationToken) -> F,
    ) -> Task<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let token = parent.child_token();
        let handle = tracker.spawn(run(token.clone()).instrument(span));
        Task { token, handle }
    }

    /// Cancels the task and waits until it has finished what it was doing.
    async fn stop(self) -> Option<T> {
        self.token.cancel();
        self.handle.await.ok()
    }
}

/// What `/status` and `/metrics` read of one inbound channel. Kept across a restart of the
/// channel, so counters do not fall back to zero because a setting changed.
#[derive(Clone)]
enum InboundStats {
    Listener {
        stats: Arc<ServerStats>,
        rejected_not_journaled: Arc<AtomicU64>,
    },
    Inbox(Arc<InboxStats>),
}

struct InboundTask {
    settings: InboundChannel,
    task: Task<Result<(), EngineError>>,
    /// An MLLP channel's bound socket: a restarted server takes a copy of the same socket, so
    /// peers are never refused during a reload.
    listener: Option<std::net::TcpListener>,
    local_addr: Option<SocketAddr>,
    stats: InboundStats,
    /// An MLLP server still accepting: `/ready` fails when one stopped.
    serving: Option<Arc<AtomicBool>>,
}

struct OutboundTask {
    settings: Destination,
    task: Task,
    /// MLLP destinations only (file destinations keep no counters yet).
    stats: Option<Arc<DeliveryStats>>,
}

/// The releaser of held bundles and the sweeper of unsettled pushes, which both map with the
/// push's [`push::Deliverer`]: restarted with a new one at every apply (mappings re-read).
struct PushTasks {
    releaser: Task,
    sweeper: Task,
}

/// What a reload changed, by name (channels and destinations; never anything about patients).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Channels and destinations that did not exist before.
    pub started: Vec<String>,
    /// Channels and destinations whose settings changed: stopped, then started again.
    pub restarted: Vec<String>,
    /// Channels and destinations no longer configured: drained and stopped.
    pub stopped: Vec<String>,
    /// Channels and destinations left running as they were (connections and queues kept).
    pub unchanged: Vec<String>,
    /// Settings read only at start whose change waits for the next restart.
    pub needs_restart: Vec<String>,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        write!(
            f,
            "started: {}; restarted: {}; stopped: {}; unchanged: {}",
            list(&self.started),
            list(&self.restarted),
            list(&self.stopped),
            list(&self.unchanged),
        )?;
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; waiting for a restart: {}",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Shared by every task and kept across applies.
struct Shared {
    store: Store,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    tls: Reloader,
    /// Every intake pokes the processor after a commit; it applies ADT/HPRIM to the census.
    processed: Arc<Notify>,
    /// The processor pokes the releaser of held bundles after each census update.
    census_changed: Arc<Notify>,
    /// Through which journal id the census is settled: launches read their own writes.
    census_progress: Arc<watch::Sender<i64>>,
    /// Signed launch links already opened: a reload must not let one be opened again.
    used_links: Arc<UsedLinks>,
    /// Launches that answered a page: a reload must not stop an open page following its
    /// prescription.
    launches: Arc<crate::http::OpenLaunches>,
    /// `[documents] max_in_flight`, set at the first use and kept across reloads.
    document_permits: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
    prune_stats: Arc<prune::PruneStats>,
    hold_stats: Arc<hold::HoldStats>,
    /// The console's session key, logged-out sessions and failed logins: a reload must not
    /// log users out nor forget failures. `None` if the random generator failed at start.
    console: Option<Arc<console::ConsoleShared>>,
    /// Destinations paused from the console, kept across restarts of their tasks.
    pauses: Arc<crate::delivery::PauseSwitches>,
    /// This node's name and lease duration (`[cluster]`, read at the first apply): on
    /// PostgreSQL, what one node does at a time runs under a lease (see `lease`).
    lease: LeaseSettings,
}

/// Everything the configuration decides, running.
pub(super) struct Running {
    shared: Shared,
    /// The configuration in force; `None` before the first apply.
    config: Option<Config>,
    inbound: BTreeMap<String, InboundTask>,
    outbound: BTreeMap<String, OutboundTask>,
    /// The wake-up of each destination's worker, kept by name across restarts: intakes and
    /// the push enqueue, then poke it.
    wakers: BTreeMap<String, Arc<Notify>>,
    /// [`Running::wakers`] as the forwarder of other nodes' wakeups reads them (`wakeups`).
    published_wakers: watch::Sender<BTreeMap<String, Arc<Notify>>>,
    processor: Option<Task>,
    pruner: Option<Task>,
    push: Option<PushTasks>,
    /// The routes the HTTP listener serves: replaced at every apply, each request takes the
    /// latest.
    routes: watch::Sender<Router>,
    /// Where the HTTP listener listens, once it serves.
    http_addr: Option<SocketAddr>,
}

/// One inbound channel ready to start: its socket bound and its TLS files read.
enum PreparedInbound {
    Mllp {
        listener: std::net::TcpListener,
        local_addr: SocketAddr,
        tls: Option<crate::tls::ServerTls>,
    },
    File,
}

/// One destination ready to start: its TLS files read or its folder checked.
enum PreparedOutbound {
    Mllp(Option<crate::tls::ClientTls>),
    File(Arc<crate::filedrop::Outbox>),
}

/// What phase one of [`Running::apply`] made ready; dropping it changes nothing.
struct Plan {
    config: Config,
    inbound: BTreeMap<String, PreparedInbound>,
    outbound: BTreeMap<String, PreparedOutbound>,
    /// Wake-ups of destinations that are new in this configuration.
    new_wakers: BTreeMap<String, Arc<Notify>>,
    deliverer: Option<Arc<push::Deliverer>>,
    /// The HTTP routes of the new configuration (launch, simulator, health), before the
    /// status and push routes are added.
    web: Option<Router>,
    summary: ReloadSummary,
}

impl Running {
    pub(super) fn new(
        store: Store,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        tls: Reloader,
    ) -> Running {
        let pauses = Arc::new(crate::delivery::PauseSwitches::default());
        match store.paused_destinations() {
            Ok(names) => {
                for name in names {
                    tracing::warn!(destination = %name, "destination paused from the console before this start: it stays paused until an operator resumes it");
                    pauses.set(&name, true);
                }
            }
            Err(error) => {
                tracing::error!(%error, "the destinations paused from the console could not be read: every destination starts unpaused");
            }
        }
        Running {
            shared: Shared {
                // The intake log pokes it when messages reach the journal behind their ACK.
                processed: store.journal_grew(),
                store,
                tracker,
                shutdown,
                tls,
                census_changed: Arc::new(Notify::new()),
                census_progress: Arc::new(watch::Sender::new(0)),
                used_links: Arc::new(UsedLinks::default()),
                launches: Arc::default(),
                document_permits: std::sync::OnceLock::new(),
                prune_stats: Arc::default(),
                hold_stats: Arc::default(),
                console: console::ConsoleShared::new().map(Arc::new),
                pauses,
                lease: LeaseSettings {
                    node: String::new(),
                    duration: Duration::from_secs(10),
                },
            },
            config: None,
            inbound: BTreeMap::new(),
            outbound: BTreeMap::new(),
            wakers: BTreeMap::new(),
            published_wakers: watch::Sender::new(BTreeMap::new()),
            processor: None,
            pruner: None,
            push: None,
            routes: watch::Sender::new(Router::new()),
            http_addr: None,
        }
    }

    /// A router that answers each request with the routes in force at that moment: the HTTP
    /// listener serves it for the daemon's whole life.
    pub(super) fn live_router(&self) -> Router {
        let routes = self.routes.subscribe();
        Router::new().fallback_service(tower::service_fn(move |request: axum::extract::Request| {
            let current = routes.borrow().clone();
            tower::ServiceExt::oneshot(current, request)
        }))
    }

    /// Tells the HTTP routes where the listener is (the simulator and the launch build URLs
    /// from it). Call before the first [`Running::apply`].
    pub(super) fn set_http_addr(&mut self, addr: SocketAddr) {
        self.http_addr = Some(addr);
    }

    /// What runs where, for the caller of `run` (logs, tests).
    pub(super) fn handles(&self) -> Vec<ChannelHandle> {
        let mut handles: Vec<ChannelHandle> = self
            .inbound
            .iter()
            .map(|(name, running)| ChannelHandle {
                name: name.clone(),
                local_addr: running.local_addr,
                kind: match running.settings.kind {
                    InboundKind::Mllp(_) => "mllp",
                    InboundKind::File(_) => "file",
                },
            })
            .collect();
        handles.extend(self.outbound.keys().map(|name| ChannelHandle {
            name: name.clone(),
            local_addr: None,
            kind: "outbound",
        }));
        if let Some(addr) = self.http_addr {
            handles.push(ChannelHandle {
                name: "http".to_string(),
                local_addr: Some(addr),
                kind: "http",
            });
        }
        handles
    }

    /// Applies `config` (see the module docs): on an error nothing has changed.
    ///
    /// `bound` holds listeners bound before the first apply (tests bind port 0); a channel
    /// without one binds its address here.
    pub(super) async fn apply(
        &mut self,
        mut config: Config,
        bound: &mut BTreeMap<String, tokio::net::TcpListener>,
    ) -> Result<ReloadSummary, EngineError> {
        if let Some(generated) = super::resolve_push_token(&mut config).map_err(EngineError::Web)? {
            warn!(
                file = %generated.path.display(),
                "generated the push endpoint's bearer token in this file (mode 0600): give its content to Posos"
            );
        }
        if let Some(generated) = super::resolve_fhir_token(&mut config).map_err(EngineError::Web)? {
            warn!(
                file = %generated.path.display(),
                "generated the FHIR routes' bearer token in this file (mode 0600): give its content to the applications that send documents"
            );
        }
        super::warn_about_open_doors(&config);
        let plan = self.prepare(config, bound).await?;
        Ok(self.commit(plan).await)
    }

    /// Phase one: everything that can fail, nothing changed. Certificates first, so a bad file
    /// fails before any socket is bound; then the destinations, the listeners, the push and
    /// the HTTP routes.
    async fn prepare(
        &self,
        config: Config,
        bound: &mut BTreeMap<String, tokio::net::TcpListener>,
    ) -> Result<Plan, EngineError> {
        let mut summary = ReloadSummary::default();
        if let Some(old) = &self.config {
            summary.needs_restart = restart_only_changes(old, &config);
        }
        if self.http_addr.is_some() && config.http.is_none() {
            return Err(EngineError::Web(
                "`[http]` was removed, but the HTTP listener is opened at start: restart the daemon to close it".to_string(),
            ));
        }
        let mut inbound_tls = self.prepare_inbound_tls(&config)?;
        let outbound = self.prepare_outbound(&config)?;
        let inbound = self
            .prepare_inbound(&config, bound, &mut inbound_tls)
            .await?;
        let new_wakers: BTreeMap<String, Arc<Notify>> = config
            .outbound
            .keys()
            .filter(|name| !self.wakers.contains_key(*name))
            .map(|name| (name.clone(), Arc::new(Notify::new())))
            .collect();
        let deliverer = self.prepare_push(&config, &new_wakers)?;
        let web = self.prepare_routes(&config, &new_wakers)?;
        Ok(Plan {
            config,
            inbound,
            outbound,
            new_wakers,
            deliverer,
            web,
            summary,
        })
    }

    /// The TLS of each new or changed MLLP listener, its certificate and key read.
    fn prepare_inbound_tls(
        &self,
        config: &Config,
    ) -> Result<BTreeMap<String, crate::tls::ServerTls>, EngineError> {
        let mut inbound_tls = BTreeMap::new();
        for (name, channel) in &config.inbound {
            if self
                .inbound
                .get(name)
                .is_some_and(|r| r.settings == *channel)
            {
                continue;
            }
            if let InboundKind::Mllp(mllp) = &channel.kind
                && let Some(settings) = &mllp.tls
            {
                let usage = format!("inbound/{name}");
                let holder = settings
                    .reloadable(&usage)
                    .map_err(|source| EngineError::Tls { usage, source })?;
                inbound_tls.insert(name.clone(), holder);
            }
        }
        Ok(inbound_tls)
    }

    /// Each new or changed destination: its TLS files read, or its drop folder checked.
    fn prepare_outbound(
        &self,
        config: &Config,
    ) -> Result<BTreeMap<String, PreparedOutbound>, EngineError> {
        let mut outbound = BTreeMap::new();
        for (name, destination) in &config.outbound {
            if self
                .outbound
                .get(name)
                .is_some_and(|r| r.settings == *destination)
            {
                continue;
            }
            let prepared = match destination {
                Destination::Mllp(mllp) => match &mllp.tls {
                    Some(settings) => {
                        let usage = format!("outbound/{name}");
                        let client = settings
                            .client(&usage)
                            .map_err(|source| EngineError::Tls { usage, source })?;
                        PreparedOutbound::Mllp(Some(client))
                    }
                    None => PreparedOutbound::Mllp(None),
                },
                Destination::File(settings) => PreparedOutbound::File(Arc::new(
                    crate::filedrop::Outbox::new(settings.outbox.clone()).map_err(|e| {
                        EngineError::Destination {
                            name: name.clone(),
                            reason: e.to_string(),
                        }
                    })?,
                )),
            };
            outbound.insert(name.clone(), prepared);
        }
        Ok(outbound)
    }

    /// Each new or changed inbound channel: an MLLP listener bound (or given by the caller,
    /// or the running one's socket copied when the address is the same) with the TLS of
    /// [`Running::prepare_inbound_tls`]; a file channel's folder created when asked.
    async fn prepare_inbound(
        &self,
        config: &Config,
        bound: &mut BTreeMap<String, tokio::net::TcpListener>,
        inbound_tls: &mut BTreeMap<String, crate::tls::ServerTls>,
    ) -> Result<BTreeMap<String, PreparedInbound>, EngineError> {
        let mut inbound = BTreeMap::new();
        for (name, channel) in &config.inbound {
            let running = self.inbound.get(name);
            if running.is_some_and(|r| r.settings == *channel) {
                continue;
            }
            let prepared = match &channel.kind {
                InboundKind::Mllp(mllp) => {
                    let listener = match (running, bound.remove(name)) {
                        (_, Some(given)) => {
                            given.into_std().map_err(|source| EngineError::Bind {
                                channel: name.clone(),
                                addr: mllp.bind,
                                source,
                            })?
                        }
                        // The same address: the new server takes a copy of the socket.
                        (Some(running), None) if matches!(&running.settings.kind, InboundKind::Mllp(old) if old.bind == mllp.bind) => {
                            match &running.listener {
                                Some(socket) => {
                                    socket.try_clone().map_err(|source| EngineError::Bind {
                                        channel: name.clone(),
                                        addr: mllp.bind,
                                        source,
                                    })?
                                }
                                None => bind(name, mllp.bind).await?,
                            }
                        }
                        _ => bind(name, mllp.bind).await?,
                    };
                    let local_addr = listener.local_addr().map_err(|source| EngineError::Bind {
                        channel: name.clone(),
                        addr: mllp.bind,
                        source,
                    })?;
                    PreparedInbound::Mllp {
                        listener,
                        local_addr,
                        tls: inbound_tls.remove(name),
                    }
                }
                InboundKind::File(file) => {
                    if file.create_folder
                        && let Err(e) = std::fs::create_dir_all(&file.inbox.folder)
                    {
                        warn!(channel = %name, folder = %file.inbox.folder.display(), error = %e, "cannot create the inbox folder");
                    }
                    PreparedInbound::File
                }
            };
            inbound.insert(name.clone(), prepared);
        }
        Ok(inbound)
    }

    /// The wake-up of every destination of `config`: the running ones' kept, the new ones'
    /// from `new_wakers`.
    fn wakers_of(
        &self,
        config: &Config,
        new_wakers: &BTreeMap<String, Arc<Notify>>,
    ) -> BTreeMap<String, Arc<Notify>> {
        self.wakers
            .iter()
            .filter(|(name, _)| config.outbound.contains_key(*name))
            .map(|(name, waker)| (name.clone(), waker.clone()))
            .chain(new_wakers.clone())
            .collect()
    }

    /// `[push]`: the deliverer that maps pushed bundles (its mappings read) and enqueues them.
    fn prepare_push(
        &self,
        config: &Config,
        new_wakers: &BTreeMap<String, Arc<Notify>>,
    ) -> Result<Option<Arc<push::Deliverer>>, EngineError> {
        let Some(push) = &config.push else {
            return Ok(None);
        };
        Ok(Some(Arc::new(
            push::Deliverer::new(
                push,
                self.shared.store.clone(),
                self.wakers_of(config, new_wakers),
                self.shared.census_changed.clone(),
            )
            .map_err(|e| EngineError::Web(format!("the push endpoint: {e}")))?,
        )))
    }

    /// The HTTP routes of `config` (launch, simulator, health, and the census search and
    /// `$send-to-ehr` behind `[fhir]`), before the status and push routes are added; `None`
    /// without an HTTP listener.
    fn prepare_routes(
        &self,
        config: &Config,
        new_wakers: &BTreeMap<String, Arc<Notify>>,
    ) -> Result<Option<Router>, EngineError> {
        // Documents into the EHR: the census search and `$send-to-ehr`, behind `[fhir]`.
        let documents = super::documents::routes(
            config,
            self.shared.store.clone(),
            self.wakers_of(config, new_wakers),
            &self.shared.document_permits,
        )
        .map_err(EngineError::Web)?;
        let web = match self.http_addr {
            Some(addr) => Some(
                web::router(
                    config,
                    addr,
                    self.shared.store.clone(),
                    self.shared.census_progress.subscribe(),
                    self.shared.used_links.clone(),
                    self.shared.launches.clone(),
                )?
                .merge(documents.unwrap_or_default()),
            ),
            None => None,
        };
        Ok(web)
    }

    /// Phase two: stop what changed or went, start what changed or came, swap the routes.
    async fn commit(&mut self, plan: Plan) -> ReloadSummary {
        let Plan {
            config,
            inbound,
            outbound,
            new_wakers,
            deliverer,
            web,
            mut summary,
        } = plan;
        let first = self.config.is_none();
        if first {
            self.shared.lease = LeaseSettings {
                node: config.cluster.node_name.clone(),
                duration: config.cluster.failover_after,
            };
            self.forward_wakeups();
        }

        // Removed or changed inbound channels: an MLLP server stops accepting at once and
        // drains its connections in the background; a file poller finishes its file first,
        // so two pollers never take from one folder.
        let mut kept_stats = BTreeMap::new();
        for name in leaving(&self.inbound, &config.inbound, &inbound) {
            let Some(running) = self.inbound.remove(&name) else {
                continue;
            };
            if !config.inbound.contains_key(&name) {
                summary.stopped.push(format!("inbound/{name}"));
            }
            self.shared.tls.remove(&format!("inbound/{name}"));
            kept_stats.insert(name.clone(), running.stats.clone());
            drop(running.listener);
            running.task.token.cancel();
            if matches!(running.settings.kind, InboundKind::File(_)) {
                let _ = running.task.handle.await;
            } else {
                self.shared.tracker.spawn(async move {
                    if let Ok(Err(e)) = running.task.handle.await {
                        warn!(channel = %name, error = %e, "a stopped listener ended on an error");
                    }
                });
            }
        }

        // Removed or changed destinations: the worker finishes its message before the new one
        // starts, so the queue keeps one sender and its order.
        let mut kept_delivery_stats = BTreeMap::new();
        for name in leaving(&self.outbound, &config.outbound, &outbound) {
            let Some(running) = self.outbound.remove(&name) else {
                continue;
            };
            if !config.outbound.contains_key(&name) {
                summary.stopped.push(format!("outbound/{name}"));
                self.wakers.remove(&name);
            }
            self.shared.tls.remove(&format!("outbound/{name}"));
            if let Some(stats) = running.stats {
                kept_delivery_stats.insert(name.clone(), stats);
            }
            running.task.stop().await;
        }
        self.wakers.extend(new_wakers);
        self.published_wakers.send_replace(self.wakers.clone());

        for (name, prepared) in inbound {
            let Some(channel) = config.inbound.get(&name) else {
                continue;
            };
            if !first {
                if kept_stats.contains_key(&name) {
                    summary.restarted.push(format!("inbound/{name}"));
                } else {
                    summary.started.push(format!("inbound/{name}"));
                }
            }
            let running = self.start_inbound(channel, prepared, kept_stats.remove(&name));
            self.inbound.insert(name, running);
        }
        for (name, prepared) in outbound {
            let Some(destination) = config.outbound.get(&name) else {
                continue;
            };
            if !first {
                if self
                    .config
                    .as_ref()
                    .is_some_and(|c| c.outbound.contains_key(&name))
                {
                    summary.restarted.push(format!("outbound/{name}"));
                } else {
                    summary.started.push(format!("outbound/{name}"));
                }
            }
            let running = self.start_outbound(
                &name,
                destination,
                prepared,
                kept_delivery_stats.remove(&name),
            );
            self.outbound.insert(name, running);
        }
        if !first {
            summary.unchanged = self
                .inbound
                .keys()
                .map(|name| format!("inbound/{name}"))
                .chain(self.outbound.keys().map(|name| format!("outbound/{name}")))
                .filter(|name| !summary.started.contains(name) && !summary.restarted.contains(name))
                .collect();
        }

        self.restart_processor(&config).await;
        self.restart_pruner(&config).await;
        if let Some(push) = self.push.take() {
            push.releaser.stop().await;
            push.sweeper.stop().await;
        }
        if let Some(deliverer) = &deliverer {
            self.push = Some(self.start_push(deliverer));
        }
        if let Some(web) = web {
            let router = self.http_routes(&config, web, deliverer);
            let _previous = self.routes.send_replace(router);
        }
        self.config = Some(config);
        summary
    }

    fn start_inbound(
        &self,
        channel: &InboundChannel,
        prepared: PreparedInbound,
        stats: Option<InboundStats>,
    ) -> InboundTask {
        let shared = &self.shared;
        let name = channel.name.clone();
        let span = info_span!("channel", channel = %name);
        match (&channel.kind, prepared) {
            (
                InboundKind::Mllp(mllp),
                PreparedInbound::Mllp {
                    listener,
                    local_addr,
                    tls,
                },
            ) => {
                let settings = ServerSettings {
                    max_connections: mllp.max_connections,
                    max_frame_bytes: mllp.max_frame_bytes,
                    read_timeout: mllp.read_timeout,
                    idle_timeout: mllp.idle_timeout,
                    allow: mllp.allow.clone(),
                    max_connections_per_peer: mllp.max_connections_per_peer,
                };
                if let Some(holder) = &tls {
                    shared.tls.register(holder.clone());
                }
                let handler = Arc::new(InboundMllp::new(
                    channel,
                    shared.store.clone(),
                    shared.processed.clone(),
                ));
                let stats = match stats {
                    Some(InboundStats::Listener { stats, .. }) => stats,
                    _ => Arc::default(),
                };
                let rejected_not_journaled = handler.rejected_not_journaled();
                let serving = Arc::new(AtomicBool::new(true));
                // The server owns a copy of the socket; ours stays for a restart.
                let copy = listener.try_clone();
                let task = {
                    let stats = stats.clone();
                    let serving = serving.clone();
                    let channel_name = name.clone();
                    let bind = mllp.bind;
                    Task::spawn(
                        &shared.tracker,
                        &shared.shutdown,
                        span,
                        move |token| async move {
                            let listener = copy
                                .and_then(tokio::net::TcpListener::from_std)
                                .map_err(|source| EngineError::Bind {
                                    channel: channel_name.clone(),
                                    addr: bind,
                                    source,
                                });
                            let result = match listener {
                                Ok(listener) => {
                                    serve_tls(listener, settings, tls, handler, stats, token)
                                        .await
                                        .map_err(|source| EngineError::Serve {
                                            channel: channel_name,
                                            source,
                                        })
                                }
                                Err(e) => Err(e),
                            };
                            serving.store(false, Ordering::Relaxed);
                            result
                        },
                    )
                };
                InboundTask {
                    settings: channel.clone(),
                    task,
                    listener: Some(listener),
                    local_addr: Some(local_addr),
                    stats: InboundStats::Listener {
                        stats,
                        rejected_not_journaled,
                    },
                    serving: Some(serving),
                }
            }
            (InboundKind::File(file), _) => {
                let handler = Arc::new(FileInbound::new(
                    channel,
                    file.format,
                    shared.store.clone(),
                    shared.processed.clone(),
                ));
                let stats = match stats {
                    Some(InboundStats::Inbox(stats)) => stats,
                    _ => Arc::default(),
                };
                let settings = file.inbox.clone();
                let task = {
                    let stats = stats.clone();
                    let channel_name = name.clone();
                    let (store, lease) = (shared.store.clone(), shared.lease.clone());
                    Task::spawn(
                        &shared.tracker,
                        &shared.shutdown,
                        span,
                        move |token| async move {
                            let role = Role::Inbox(channel_name.clone());
                            run_leased(store, role, lease, token, |stop| {
                                let (settings, handler) = (settings.clone(), handler.clone());
                                let (stats, channel_name) = (stats.clone(), channel_name.clone());
                                async move {
                                    run_inbox(&channel_name, settings, handler, stats, stop).await;
                                }
                            })
                            .await;
                            Ok(())
                        },
                    )
                };
                InboundTask {
                    settings: channel.clone(),
                    task,
                    listener: None,
                    local_addr: None,
                    stats: InboundStats::Inbox(stats),
                    serving: None,
                }
            }
            (InboundKind::Mllp(_), PreparedInbound::File) => {
                unreachable!("an MLLP channel is always prepared with its socket")
            }
        }
    }

    fn start_outbound(
        &self,
        name: &str,
        destination: &Destination,
        prepared: PreparedOutbound,
        stats: Option<Arc<DeliveryStats>>,
    ) -> OutboundTask {
        let shared = &self.shared;
        let span = info_span!("destination", destination = %name);
        let notify = self.wakers.get(name).cloned().unwrap_or_default();
        let store = shared.store.clone();
        match (destination, prepared) {
            (Destination::Mllp(settings), PreparedOutbound::Mllp(tls)) => {
                if let Some(client) = &tls {
                    shared.tls.register(client.config.clone());
                }
                let stats = stats.unwrap_or_default();
                let settings = settings.clone();
                let (pauses, lease) = (shared.pauses.clone(), shared.lease.clone());
                let role = Role::Destination(name.to_owned());
                let task = {
                    let stats = stats.clone();
                    Task::spawn(&shared.tracker, &shared.shutdown, span, move |token| {
                        run_leased(store.clone(), role, lease, token, move |stop| {
                            let pause = pauses.receiver(&settings.name);
                            run_destination_with_tls(
                                store.clone(),
                                settings.clone(),
                                tls.clone(),
                                notify.clone(),
                                stats.clone(),
                                pause,
                                stop,
                            )
                        })
                    })
                };
                OutboundTask {
                    settings: destination.clone(),
                    task,
                    stats: Some(stats),
                }
            }
            (Destination::File(settings), PreparedOutbound::File(outbox)) => {
                let settings = settings.clone();
                let (pauses, lease) = (shared.pauses.clone(), shared.lease.clone());
                let role = Role::Destination(name.to_owned());
                let name = name.to_owned();
                OutboundTask {
                    settings: destination.clone(),
                    task: Task::spawn(&shared.tracker, &shared.shutdown, span, move |token| {
                        run_leased(store.clone(), role, lease, token, move |stop| {
                            crate::delivery::run_file_destination(
                                store.clone(),
                                settings.clone(),
                                outbox.clone(),
                                notify.clone(),
                                pauses.receiver(&name),
                                stop,
                            )
                        })
                    }),
                    stats: None,
                }
            }
            _ => unreachable!("a destination is prepared for its own kind"),
        }
    }

    /// The census processor, restarted when the census settings or the channels allowed to
    /// log PHI changed (it resumes where the store says it stopped).
    async fn restart_processor(&mut self, config: &Config) {
        let phi = phi_channels(config);
        let unchanged = self
            .config
            .as_ref()
            .is_some_and(|old| old.census == config.census && phi_channels(old) == phi);
        if unchanged && self.processor.is_some() {
            return;
        }
        if let Some(task) = self.processor.take() {
            task.stop().await;
        }
        let shared = &self.shared;
        let (store, settings) = (shared.store.clone(), config.census.clone());
        let lease = shared.lease.clone();
        let (processed, changed, progress) = (
            shared.processed.clone(),
            shared.census_changed.clone(),
            shared.census_progress.clone(),
        );
        self.processor = Some(Task::spawn(
            &shared.tracker,
            &shared.shutdown,
            info_span!("processor"),
            move |token| {
                let phi = Arc::new(phi);
                run_leased(store.clone(), Role::Census, lease, token, move |stop| {
                    processor::run_processor(
                        store.clone(),
                        settings.clone(),
                        phi.clone(),
                        processed.clone(),
                        changed.clone(),
                        progress.clone(),
                        stop,
                    )
                })
            },
        ));
    }

    /// On PostgreSQL, the forwarder of other nodes' wakeups to this node's tasks, for the
    /// daemon's whole life (`wakeups`); nothing on SQLite.
    fn forward_wakeups(&self) {
        let Some(wakeups) = self.shared.store.wakeups() else {
            return;
        };
        let targets = super::wakeups::Targets {
            destinations: self.published_wakers.subscribe(),
            processor: self.shared.processed.clone(),
            releaser: self.shared.census_changed.clone(),
            pauses: self.shared.pauses.clone(),
            store: self.shared.store.clone(),
        };
        // Detached: it ends with the daemon's shutdown.
        drop(Task::spawn(
            &self.shared.tracker,
            &self.shared.shutdown,
            info_span!("wakeups"),
            move |token| super::wakeups::forward(wakeups, targets, token),
        ));
    }

    /// The pruner, restarted when the retention settings changed.
    async fn restart_pruner(&mut self, config: &Config) {
        let unchanged = self
            .config
            .as_ref()
            .is_some_and(|old| old.store.retention == config.store.retention);
        if unchanged && self.pruner.is_some() {
            return;
        }
        if let Some(task) = self.pruner.take() {
            task.stop().await;
        }
        let shared = &self.shared;
        let (store, retention, stats) = (
            shared.store.clone(),
            config.store.retention.clone(),
            shared.prune_stats.clone(),
        );
        let lease = shared.lease.clone();
        self.pruner = Some(Task::spawn(
            &shared.tracker,
            &shared.shutdown,
            info_span!("pruner"),
            move |token| {
                run_leased(store.clone(), Role::Prune, lease, token, move |stop| {
                    prune::run_pruner(store.clone(), retention.clone(), stats.clone(), stop)
                })
            },
        ));
    }

    /// The releaser of held bundles and the sweeper of unsettled pushes, with `deliverer`. The
    /// releaser runs whatever the hold setting: bundles held by an earlier run still get out.
    fn start_push(&self, deliverer: &Arc<push::Deliverer>) -> PushTasks {
        let shared = &self.shared;
        let releaser = {
            let (store, deliverer) = (shared.store.clone(), deliverer.clone());
            let (stats, wake) = (shared.hold_stats.clone(), shared.census_changed.clone());
            let lease = shared.lease.clone();
            Task::spawn(
                &shared.tracker,
                &shared.shutdown,
                info_span!("releaser"),
                move |token| {
                    run_leased(store.clone(), Role::Holds, lease, token, move |stop| {
                        hold::run_releaser(
                            store.clone(),
                            deliverer.clone(),
                            stats.clone(),
                            wake.clone(),
                            stop,
                        )
                    })
                },
            )
        };
        let sweeper = {
            let (store, deliverer) = (shared.store.clone(), deliverer.clone());
            let lease = shared.lease.clone();
            Task::spawn(
                &shared.tracker,
                &shared.shutdown,
                info_span!("unsettled pushes"),
                move |token| {
                    run_leased(
                        store.clone(),
                        Role::UnsettledPushes,
                        lease,
                        token,
                        move |stop| unsettled::run_sweeper(store.clone(), deliverer.clone(), stop),
                    )
                },
            )
        };
        PushTasks { releaser, sweeper }
    }

    /// What `/status`, `/metrics` and `/ready` read, from what runs now.
    fn observed(&self, config: &Config) -> status::Observed {
        let mut observed = status::Observed {
            store: Some(self.shared.store.clone()),
            tls: self.shared.tls.clone(),
            prune: Some(self.shared.prune_stats.clone()),
            holds: config.push.as_ref().map(|_| self.shared.hold_stats.clone()),
            alert_after: config.alert_after.clone(),
            node: config.cluster.node_name.clone(),
            census_progress: Some(self.shared.census_progress.subscribe()),
            ..status::Observed::default()
        };
        for (name, running) in &self.inbound {
            match &running.stats {
                InboundStats::Listener {
                    stats,
                    rejected_not_journaled,
                } => {
                    observed.listeners.push((name.clone(), stats.clone()));
                    observed
                        .rejected_not_journaled
                        .push((name.clone(), rejected_not_journaled.clone()));
                }
                InboundStats::Inbox(stats) => observed.inboxes.push((name.clone(), stats.clone())),
            }
            if let Some(serving) = &running.serving {
                observed.serving.push((name.clone(), serving.clone()));
            }
        }
        for (name, running) in &self.outbound {
            if let Some(stats) = &running.stats {
                observed.destinations.push((name.clone(), stats.clone()));
            }
        }
        observed
    }

    /// Every HTTP route of `config`: `web` (launch, simulator, health), the status routes and
    /// the push endpoint, with the hardening every route shares.
    fn http_routes(
        &self,
        config: &Config,
        web: Router,
        deliverer: Option<Arc<push::Deliverer>>,
    ) -> Router {
        let guard = Arc::new(
            config
                .http
                .as_ref()
                .map(|http| http.guard.clone())
                .unwrap_or_default(),
        );
        let observed = Arc::new(self.observed(config));
        let mut router = web
            .merge(status::router(observed.clone(), guard.clone()))
            .merge(status::ready_router(observed.clone()));
        if let Some(settings) = &config.console {
            match &self.shared.console {
                Some(shared) => {
                    router = router.merge(console::router(console::ConsoleState::new(
                        console::ConsoleParts {
                            settings: settings.clone(),
                            shared: shared.clone(),
                            store: self.shared.store.clone(),
                            observed,
                            wakers: self.wakers.clone(),
                            pauses: self.shared.pauses.clone(),
                            releaser: self.shared.census_changed.clone(),
                            routes: config
                                .push
                                .as_ref()
                                .map(|push| push.routes.clone())
                                .unwrap_or_default(),
                            shutdown: self.shared.shutdown.clone(),
                        },
                    )));
                }
                None => tracing::error!(
                    "the web console is off: the system's random generator failed at start (restart the daemon)"
                ),
            }
        }
        if let (Some(push), Some(deliverer)) = (&config.push, deliverer) {
            router = router.merge(push::router(push::PushState::new(
                push,
                self.shared.store.clone(),
                deliverer,
            )));
        }
        web::harden(router, guard)
    }

    /// Stops everything, each task finishing what it was doing; returns the first listener
    /// error.
    pub(super) async fn stop(mut self) -> Result<(), EngineError> {
        self.shared.shutdown.cancel();
        let mut result = Ok(());
        for (name, running) in std::mem::take(&mut self.inbound) {
            match running.task.handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(channel = %name, error = %e, "listener failed");
                    result = Err(e);
                }
                Err(e) => tracing::error!(channel = %name, error = %e, "listener task panicked"),
            }
        }
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        result
    }
}

/// The names running now that must stop: gone from the new configuration, or prepared to
/// start again with new settings.
fn leaving<R, C, P>(
    running: &BTreeMap<String, R>,
    configured: &BTreeMap<String, C>,
    prepared: &BTreeMap<String, P>,
) -> Vec<String> {
    running
        .keys()
        .filter(|name| !configured.contains_key(*name) || prepared.contains_key(*name))
        .cloned()
        .collect()
}

/// Binds `addr` for channel `name`.
async fn bind(name: &str, addr: SocketAddr) -> Result<std::net::TcpListener, EngineError> {
    let error = |source| EngineError::Bind {
        channel: name.to_string(),
        addr,
        source,
    };
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(error)?
        .into_std()
        .map_err(error)
}

/// The channels whose bodies and identifiers may be logged at debug level.
fn phi_channels(config: &Config) -> HashSet<String> {
    config
        .inbound
        .iter()
        .filter(|(_, channel)| channel.log_phi)
        .map(|(name, _)| name.clone())
        .collect()
}

/// The settings read once at start that differ between `old` and `new`, by key.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differs = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_string());
        }
    };
    differs("store.path", old.store.path != new.store.path);
    let database = |config: &Config| match &config.store.backend {
        crate::store::settings::Backend::Sqlite => None,
        crate::store::settings::Backend::Postgres(pg) => Some(pg.target.clone()),
    };
    differs("store.backend", database(old) != database(new));
    differs("cluster", old.cluster != new.cluster);
    differs(
        "store.queue_capacity",
        old.store.queue_capacity != new.store.queue_capacity,
    );
    differs(
        "store.max_batch",
        old.store.max_batch != new.store.max_batch,
    );
    differs(
        "log",
        old.log.level != new.log.level || old.log.format != new.log.format,
    );
    let http = |config: &Config| {
        config
            .http
            .as_ref()
            .map(|http| (http.bind, http.tls.clone(), http.serve.clone()))
    };
    differs("http", http(old) != http(new));
    let in_flight = |config: &Config| config.documents.as_ref().map(|d| d.max_in_flight);
    differs(
        "documents.max_in_flight",
        in_flight(old).is_some() && in_flight(old) != in_flight(new),
    );
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn config(text: &str) -> Config {
        Config::from_str_with_env(text, std::path::Path::new("/etc/ob.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const BASE: &str = "[store]\npath = \"/var/lib/ob/ob.db\"\n[http]\nbind = \"127.0.0.1:8717\"\n";

    #[rstest]
    #[case::ok_nothing(BASE, &[])]
    #[case::ok_store_path(
        "[store]\npath = \"/var/lib/ob/other.db\"\n[http]\nbind = \"127.0.0.1:8717\"\n",
        &["store.path"]
    )]
    #[case::ok_http_bind(
        "[store]\npath = \"/var/lib/ob/ob.db\"\n[http]\nbind = \"127.0.0.1:8718\"\n",
        &["http"]
    )]
    #[case::ok_log_and_batch(
        "[store]\npath = \"/var/lib/ob/ob.db\"\nmax_batch = 7\n[log]\nlevel = \"debug\"\n[http]\nbind = \"127.0.0.1:8717\"\n",
        &["store.max_batch", "log"]
    )]
    fn restart_only_changes_name_the_keys(#[case] new: &str, #[case] keys: &[&str]) {
        assert_eq!(restart_only_changes(&config(BASE), &config(new)), keys);
    }

    #[test]
    fn ok_summary_says_what_changed_by_name() {
        let summary = ReloadSummary {
            started: vec!["inbound/b".into()],
            restarted: vec!["outbound/ehr".into()],
            stopped: vec![],
            unchanged: vec!["inbound/a".into(), "outbound/lab".into()],
            needs_restart: vec!["store.path".into()],
        };
        assert_eq!(
            summary.to_string(),
            "started: inbound/b; restarted: outbound/ehr; stopped: none; unchanged: inbound/a, outbound/lab; waiting for a restart: store.path"
        );
    }

    #[rstest]
    #[case::gone(&["a", "b"], &["a"], &[], &["b"])]
    #[case::changed(&["a", "b"], &["a", "b"], &["a"], &["a"])]
    #[case::added_is_not_leaving(&["a"], &["a", "c"], &["c"], &[])]
    fn leaving_is_gone_or_changed(
        #[case] running: &[&str],
        #[case] configured: &[&str],
        #[case] prepared: &[&str],
        #[case] expected: &[&str],
    ) {
        let map = |names: &[&str]| -> BTreeMap<String, ()> {
            names.iter().map(|n| (n.to_string(), ())).collect()
        };
        assert_eq!(
            leaving(&map(running), &map(configured), &map(prepared)),
            expected
        );
    }
}
