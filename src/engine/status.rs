//! What an operator or a monitoring system sees of a running daemon: `GET /status` (JSON, per
//! channel and destination, with the last error of each inbox: an unreadable share, a full
//! disk) and `GET /metrics` (Prometheus text exposition of the same counters, plus the store's
//! and the queues' depths, and the pushed bundles held for an unknown patient: how many, the
//! oldest hold's age, how many were released and why). Neither says anything about patients.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::hold::HoldStats;
use super::prune::PruneStats;
use crate::delivery::DeliveryStats;
use crate::filedrop::InboxStats;
use crate::mllp::server::ServerStats;
use crate::store::Store;

/// The counters the engine keeps, by channel or destination name.
#[derive(Clone, Default)]
pub(super) struct Observed {
    pub listeners: Vec<(String, Arc<ServerStats>)>,
    pub inboxes: Vec<(String, Arc<InboxStats>)>,
    pub destinations: Vec<(String, Arc<DeliveryStats>)>,
    pub store: Option<Store>,
    /// Released held bundles by reason; `None` without `[push]`.
    pub holds: Option<Arc<HoldStats>>,
    /// The TLS configurations in force: their certificates' expiry.
    pub tls: crate::tls::Reloader,
    /// What the background pruner deleted.
    pub prune: Option<Arc<PruneStats>>,
    /// Rejected frames answered but not journaled (over `rejected_max_per_hour`), by channel.
    pub rejected_not_journaled: Vec<(String, Arc<std::sync::atomic::AtomicU64>)>,
    /// Whether each MLLP listener still serves (false once its accept loop ended).
    pub serving: Vec<(String, Arc<std::sync::atomic::AtomicBool>)>,
    /// `[outbound.NAME] alert_after` by destination.
    pub alert_after: std::collections::BTreeMap<String, std::time::Duration>,
    /// This node's name (`[cluster] node_name`): which node of a cluster answers.
    pub node: String,
    /// Through which journal id the census processor has settled everything.
    pub census_progress: Option<tokio::sync::watch::Receiver<i64>>,
}

/// Failed attempts of a destination's head message from which `/status` says `attention`.
const ATTENTION_ATTEMPTS: u32 = 3;

/// How long `/ready` waits for the store to commit an empty transaction.
const READY_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Destinations whose oldest pending message waited longer than their `alert_after` (default
/// [`crate::config::DEFAULT_ALERT_AFTER`]): one sentence each, naming the destination only.
fn late_destinations(
    heads: &[crate::store::QueueHead],
    alert_after: &std::collections::BTreeMap<String, std::time::Duration>,
    now: jiff::Timestamp,
) -> Vec<String> {
    heads
        .iter()
        .filter_map(|head| {
            let limit = alert_after
                .get(&head.destination)
                .copied()
                .unwrap_or(crate::config::DEFAULT_ALERT_AFTER);
            let waited = now.duration_since(head.enqueued_at).as_secs().max(0);
            (u64::try_from(waited).unwrap_or(0) > limit.as_secs()).then(|| {
                format!(
                    "destination `{}`: its oldest message has waited {waited} s (alert_after {} s)",
                    head.destination,
                    limit.as_secs()
                )
            })
        })
        .collect()
}

/// `GET /ready`: 200 when every MLLP listener still serves, the store commits and no
/// destination is late (see
/// [`late_destinations`]); 503 with the problems otherwise. For load balancers and
/// monitoring: it names channels and destinations only, never a peer or an error text.
pub(super) fn ready_router(observed: Arc<Observed>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .with_state(observed)
}

async fn ready(State(observed): State<Arc<Observed>>) -> Response {
    let mut problems: Vec<String> = observed
        .serving
        .iter()
        .filter(|(_, serving)| !serving.load(std::sync::atomic::Ordering::Relaxed))
        .map(|(name, _)| format!("channel `{name}`: its listener stopped"))
        .collect();
    if let Some(store) = &observed.store {
        match tokio::time::timeout(READY_STORE_TIMEOUT, store.probe_commit()).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => problems.push("store: a transaction could not commit".to_string()),
            Err(_) => problems.push(format!(
                "store: no commit within {} s",
                READY_STORE_TIMEOUT.as_secs()
            )),
        }
        if store.intake_refusal().is_some() {
            problems.push(
                "store: the intake log refuses MLLP messages (answered AE): copying it into the journal fails; the daemon's log says why"
                    .to_string(),
            );
        }
        match store.queue_heads_async().await {
            Ok(heads) => problems.extend(late_destinations(
                &heads,
                &observed.alert_after,
                jiff::Timestamp::now(),
            )),
            Err(_) => problems.push("store: the queues cannot be read".to_string()),
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not ready", "problems": problems})),
        )
            .into_response()
    }
}

/// Bytes of the store file and of its write-ahead log (0 for a missing file).
fn store_sizes(store: &Store) -> (u64, u64) {
    let size = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());
    let mut wal = store.path().as_os_str().to_owned();
    wal.push("-wal");
    (size(store.path()), size(std::path::Path::new(&wal)))
}

/// `/status` and `/metrics`, readable from `[http] admin_allow` networks or with the admin
/// token only (they name channels, peers and error texts).
pub(super) fn router(
    observed: Arc<Observed>,
    guard: Arc<crate::http::HttpGuardSettings>,
) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            guard,
            crate::http::guard::check_admin,
        ))
        .with_state(observed)
}

async fn status(State(observed): State<Arc<Observed>>) -> Response {
    (StatusCode::OK, axum::Json(snapshot(&observed).await)).into_response()
}

/// What `/status` answers (and the console's dashboard shows): per channel and destination,
/// the queues, the held bundles, the store's size, what needs attention.
pub(super) async fn snapshot(observed: &Observed) -> Value {
    let mut channels = serde_json::Map::new();
    for (name, stats) in &observed.listeners {
        let s = stats.snapshot();
        channels.insert(
            name.clone(),
            json!({"kind": "mllp", "connections_open": s.connections_open, "frames": s.frames,
                   "oversized": s.oversized, "interrupted": s.interrupted, "timeouts": s.timeouts,
                   "io_errors": s.io_errors, "refused_peers": s.refused_peers,
                   "tls_plain_refused": s.tls_plain_refused,
                   "tls_handshake_failures": s.tls_handshake_failures}),
        );
    }
    let mut failing = false;
    for (name, stats) in &observed.inboxes {
        let s = stats.snapshot();
        failing |= s.last_error.is_some();
        channels.insert(
            name.clone(),
            json!({"kind": "file", "scans": s.scans, "files_archived": s.files_archived,
                   "files_rejected": s.files_rejected, "scan_errors": s.scan_errors,
                   "file_errors": s.file_errors, "last_error": s.last_error}),
        );
    }
    let mut destinations = serde_json::Map::new();
    for (name, stats) in &observed.destinations {
        let s = stats.snapshot();
        destinations.insert(
            name.clone(),
            json!({"sent": s.sent, "delivered": s.delivered, "retried": s.retried, "dead": s.dead,
                   "connect_failures": s.connect_failures, "wrong_acks": s.wrong_acks}),
        );
    }
    let mut attention: Vec<String> = Vec::new();
    if let Some(store) = &observed.store
        && let Ok(heads) = store.queue_heads_async().await
    {
        attention.extend(late_destinations(
            &heads,
            &observed.alert_after,
            jiff::Timestamp::now(),
        ));
        for head in &heads {
            if head.attempts >= ATTENTION_ATTEMPTS {
                attention.push(format!(
                    "destination `{}`: the message at the head of the queue failed {} time(s): {}",
                    head.destination, head.attempts, head.last_error
                ));
            }
            if let Some(entry) = destinations.get_mut(&head.destination) {
                entry["head"] = json!({
                    "attempts": head.attempts,
                    "last_error": head.last_error,
                    "waiting_seconds": age_seconds(head.enqueued_at),
                });
            }
        }
    }
    let queues: Value = match &observed.store {
        Some(store) => match store.queue_overview_async().await {
            Ok(depths) => depths
                .iter()
                .map(|d| {
                    (
                        d.destination.clone(),
                        json!({"pending": d.pending, "dead": d.dead,
                               "oldest_pending_seconds": d.oldest_pending_at.map(age_seconds)}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into(),
            Err(e) => json!({"error": e.to_string()}),
        },
        None => json!({}),
    };
    let failing = failing || !attention.is_empty();
    let now = crate::tls::files::now_unix();
    let certificates: serde_json::Map<_, _> = observed
        .tls
        .certificates()
        .into_iter()
        .map(|c| {
            (
                c.usage,
                json!({"subject": c.info.subject, "not_after": c.info.not_after_text(),
                       "days_left": c.info.days_left(now)}),
            )
        })
        .collect();
    let mut body = json!({
        // "attention": an inbox reported an error (see its last_error), or a destination keeps
        // failing or is late (see `attention`); the daemon runs on.
        "status": if failing { "attention" } else { "ok" },
        "attention": attention,
        "channels": channels,
        "destinations": destinations,
        "queues": queues,
    });
    if !certificates.is_empty() {
        body["tls_certificates"] = certificates.into();
    }
    if let (Some(holds), Some(store)) = (&observed.holds, &observed.store) {
        let released: serde_json::Map<_, _> = holds
            .snapshot()
            .iter()
            .map(|(reason, n)| (reason.as_str().to_string(), json!(n)))
            .collect();
        body["push"] = match store.hold_overview_async().await {
            Ok(overview) => json!({
                "held": overview.held,
                "oldest_held_seconds": overview.oldest_held_at.map(age_seconds),
                "released": released,
            }),
            Err(e) => json!({"error": e.to_string(), "released": released}),
        };
    }
    body["node"] = json!(observed.node);
    if let Some(store) = &observed.store {
        body["store"] = if store.backend_name() == "sqlite" {
            let (bytes, wal_bytes) = store_sizes(store);
            json!({"backend": "sqlite", "bytes": bytes, "wal_bytes": wal_bytes})
        } else {
            // Which node delivers each destination (a lease each; see `store::ownership`).
            let owners = match store.destination_owners().await {
                Ok(owners) => owners
                    .iter()
                    .map(|o| {
                        json!({"destination": o.destination, "node": o.node, "live": o.live,
                               "expires_at": o.expires_at.to_string()})
                    })
                    .collect(),
                Err(e) => vec![json!({"error": e.to_string()})],
            };
            json!({"backend": store.backend_name(), "owners": owners})
        };
    }
    body
}

/// Whole seconds since `at` (0 for a time in the future: a clock step back).
fn age_seconds(at: jiff::Timestamp) -> u64 {
    let age = jiff::Timestamp::now().duration_since(at);
    u64::try_from(age.as_secs()).unwrap_or(0)
}

/// The label set of one sample.
type Labels = Vec<(String, String)>;

/// The counters and gauges the engine keeps (atomics and store queries), read at scrape time
/// and encoded by prometheus-client beside the latency histograms of [`crate::metrics`].
#[derive(Debug, Default)]
struct Collected {
    families: Vec<CollectedFamily>,
}

#[derive(Debug)]
struct CollectedFamily {
    /// Without the `_total` of counters (the encoder adds it).
    name: String,
    help: String,
    counter: bool,
    samples: Vec<(Labels, u64)>,
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let kind = if family.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut metric = encoder.encode_descriptor(&family.name, &family.help, None, kind)?;
            // One sample without labels: `name value`, not `name{} value`.
            if let [(labels, value)] = family.samples.as_slice()
                && labels.is_empty()
            {
                if family.counter {
                    ConstCounter::new(*value).encode(metric)?;
                } else {
                    ConstGauge::new(*value).encode(metric)?;
                }
                continue;
            }
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                if family.counter {
                    ConstCounter::new(*value).encode(sample)?;
                } else {
                    ConstGauge::new(*value).encode(sample)?;
                }
            }
        }
        Ok(())
    }
}

/// One counter (`kind = "counter"`, name ending in `_total`) or gauge family.
fn family(out: &mut Collected, name: &str, kind: &str, help: &str, samples: &[(Labels, u64)]) {
    let counter = kind == "counter";
    let name = if counter {
        name.strip_suffix("_total").unwrap_or(name)
    } else {
        name
    };
    out.families.push(CollectedFamily {
        name: name.to_string(),
        help: help.to_string(),
        counter,
        samples: samples.to_vec(),
    });
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

async fn metrics(State(observed): State<Arc<Observed>>) -> Response {
    let mut out = Collected::default();
    let listeners: Vec<_> = observed
        .listeners
        .iter()
        .map(|(n, s)| (label("channel", n), s.snapshot()))
        .collect();
    family(
        &mut out,
        "ordobridge_mllp_frames_total",
        "counter",
        "MLLP frames received",
        &listeners
            .iter()
            .map(|(l, s)| (l.clone(), s.frames))
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "ordobridge_mllp_connections_open",
        "gauge",
        "open MLLP connections",
        &listeners
            .iter()
            .map(|(l, s)| (l.clone(), s.connections_open))
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "ordobridge_mllp_refused_frames_total",
        "counter",
        "oversized or interrupted frames",
        &listeners
            .iter()
            .map(|(l, s)| (l.clone(), s.oversized + s.interrupted))
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "ordobridge_mllp_refused_peers_total",
        "counter",
        "MLLP connections closed at accept: address not allowed or too many from one address",
        &listeners
            .iter()
            .map(|(l, s)| (l.clone(), s.refused_peers))
            .collect::<Vec<_>>(),
    );
    let inboxes: Vec<_> = observed
        .inboxes
        .iter()
        .map(|(n, s)| (label("channel", n), s.snapshot()))
        .collect();
    family(
        &mut out,
        "ordobridge_inbox_files_archived_total",
        "counter",
        "files committed and archived",
        &inboxes
            .iter()
            .map(|(l, s)| (l.clone(), s.files_archived + s.files_deleted))
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "ordobridge_inbox_files_rejected_total",
        "counter",
        "files moved to error/",
        &inboxes
            .iter()
            .map(|(l, s)| (l.clone(), s.files_rejected))
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "ordobridge_inbox_scan_errors_total",
        "counter",
        "failed folder scans (unreadable share, permissions)",
        &inboxes
            .iter()
            .map(|(l, s)| (l.clone(), s.scan_errors))
            .collect::<Vec<_>>(),
    );
    let destinations: Vec<_> = observed
        .destinations
        .iter()
        .map(|(n, s)| (label("destination", n), s.snapshot()))
        .collect();
    family(
        &mut out,
        "ordobridge_delivered_total",
        "counter",
        "messages acknowledged AA/CA",
        &destinations
            .iter()
            .map(|(l, s)| (l.clone(), s.delivered))
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "ordobridge_delivery_retries_total",
        "counter",
        "failed attempts scheduled again",
        &destinations
            .iter()
            .map(|(l, s)| (l.clone(), s.retried))
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "ordobridge_dead_letters_total",
        "counter",
        "messages turned into dead letters",
        &destinations
            .iter()
            .map(|(l, s)| (l.clone(), s.dead))
            .collect::<Vec<_>>(),
    );
    if let (Some(holds), Some(store)) = (&observed.holds, &observed.store) {
        if let Ok(overview) = store.hold_overview_async().await {
            family(
                &mut out,
                "ordobridge_push_held",
                "gauge",
                "pushed bundles held until their patient is known",
                &[(Labels::new(), overview.held)],
            );
            family(
                &mut out,
                "ordobridge_push_oldest_held_seconds",
                "gauge",
                "age of the oldest held bundle (0 when none)",
                &[(
                    Labels::new(),
                    overview.oldest_held_at.map_or(0, age_seconds),
                )],
            );
        }
        family(
            &mut out,
            "ordobridge_push_released_total",
            "counter",
            "held bundles released, by reason",
            &holds
                .snapshot()
                .iter()
                .map(|(reason, n)| (label("reason", reason.as_str()), *n))
                .collect::<Vec<_>>(),
        );
    }
    let certificates = observed.tls.certificates();
    if !certificates.is_empty() {
        family(
            &mut out,
            "ordobridge_tls_certificate_expiry_seconds",
            "gauge",
            "end of validity of each certificate in force (Unix time)",
            &certificates
                .iter()
                .map(|c| {
                    (
                        label("use", &c.usage),
                        u64::try_from(c.info.not_after).unwrap_or(0),
                    )
                })
                .collect::<Vec<_>>(),
        );
        family(
            &mut out,
            "ordobridge_mllp_tls_refused_total",
            "counter",
            "TLS listeners: plain MLLP connections and failed handshakes",
            &listeners
                .iter()
                .map(|(l, s)| (l.clone(), s.tls_plain_refused + s.tls_handshake_failures))
                .collect::<Vec<_>>(),
        );
    }
    if let Some(store) = &observed.store {
        let s = store.stats();
        family(
            &mut out,
            "ordobridge_store_commits_total",
            "counter",
            "store transactions committed",
            &[(Labels::new(), s.commits)],
        );
        family(
            &mut out,
            "ordobridge_store_failed_batches_total",
            "counter",
            "store transactions rolled back",
            &[(Labels::new(), s.failed_batches)],
        );
        if let Ok(depths) = store.queue_overview_async().await {
            family(
                &mut out,
                "ordobridge_queue_pending",
                "gauge",
                "outbound messages waiting",
                &depths
                    .iter()
                    .map(|d| (label("destination", &d.destination), d.pending))
                    .collect::<Vec<_>>(),
            );
            family(
                &mut out,
                "ordobridge_queue_dead",
                "gauge",
                "dead letters",
                &depths
                    .iter()
                    .map(|d| (label("destination", &d.destination), d.dead))
                    .collect::<Vec<_>>(),
            );
        }
    }
    family(
        &mut out,
        "ordobridge_rejected_not_journaled_total",
        "counter",
        "rejected frames answered but not journaled (past rejected_max_per_hour)",
        &observed
            .rejected_not_journaled
            .iter()
            .map(|(n, c)| {
                (
                    label("channel", n),
                    c.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect::<Vec<_>>(),
    );
    if let Some(store) = &observed.store {
        family(
            &mut out,
            "ordobridge_node_info",
            "gauge",
            "this node: its name (`[cluster] node_name`) and its store's backend",
            &[(
                vec![
                    ("node".to_string(), observed.node.clone()),
                    ("backend".to_string(), store.backend_name().to_string()),
                ],
                1,
            )],
        );
        // Which node does what, on PostgreSQL (one lease per destination and per role; see
        // `engine::lease`); nothing on SQLite, where this node does everything.
        if let Ok(owners) = store.destination_owners().await {
            family(
                &mut out,
                "ordobridge_lease_live",
                "gauge",
                "1 while `node` holds the lease of `role` (a destination, or @census, @holds, @inbox:NAME …)",
                &owners
                    .iter()
                    .map(|o| {
                        (
                            vec![
                                ("role".to_string(), o.destination.clone()),
                                ("node".to_string(), o.node.clone()),
                            ],
                            u64::from(o.live),
                        )
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let (file, wal) = store_sizes(store);
        family(
            &mut out,
            "ordobridge_store_file_bytes",
            "gauge",
            "size of the store file",
            &[(Labels::new(), file)],
        );
        family(
            &mut out,
            "ordobridge_store_wal_bytes",
            "gauge",
            "size of the store's write-ahead log",
            &[(Labels::new(), wal)],
        );
        // Read before the census lag below, which adds it: a copy between the two reads then
        // counts its messages twice for a moment, never zero times.
        let logged = store.intake_backlog();
        if let Some(backlog) = logged {
            family(
                &mut out,
                "ordobridge_intake_log_backlog_messages",
                "gauge",
                "MLLP messages acknowledged (durable in the intake log) and not yet copied into the journal table: it grows during a flood and is copied after",
                &[(Labels::new(), backlog.messages)],
            );
        }
        // Counted on SQLite, where this node runs the census (not on PostgreSQL).
        if let Some(progress) = &observed.census_progress {
            let through = *progress.borrow();
            let skip = [
                super::push::PUSH_CHANNEL,
                super::documents::DOCUMENTS_CHANNEL,
            ];
            if let Ok(Some(lag)) = store.census_backlog(through, skip).await {
                family(
                    &mut out,
                    "ordobridge_census_lag_messages",
                    "gauge",
                    "messages acknowledged that the census has still to apply (accepted journal rows, and the accepted messages still in the intake log): it lags during a flood and catches up after",
                    &[(
                        Labels::new(),
                        lag + logged.map_or(0, |backlog| backlog.accepted),
                    )],
                );
            }
        }
    }
    if let Some(prune) = &observed.prune {
        use std::sync::atomic::Ordering::Relaxed;
        family(
            &mut out,
            "ordobridge_pruned_rows_total",
            "counter",
            "rows deleted past their retention, by kind",
            &[
                (label("kind", "journal"), prune.journal.load(Relaxed)),
                (label("kind", "outbound"), prune.outbound.load(Relaxed)),
                (label("kind", "holds"), prune.holds.load(Relaxed)),
                (
                    label("kind", "census_encounters"),
                    prune.census_encounters.load(Relaxed),
                ),
                (
                    label("kind", "census_patients"),
                    prune.census_patients.load(Relaxed),
                ),
            ],
        );
        family(
            &mut out,
            "ordobridge_prune_failures_total",
            "counter",
            "prunes that failed (retried at the next interval)",
            &[(Labels::new(), prune.failures.load(Relaxed))],
        );
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(out));
    crate::metrics::register(&mut registry);
    super::reload::register(&mut registry);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ready_answer(observed: Observed) -> (StatusCode, Value) {
        let response = ready(State(Arc::new(observed))).await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, serde_json::from_slice(&body).expect("json"))
    }

    #[tokio::test]
    async fn ok_ready_while_every_listener_serves() {
        let observed = Observed {
            serving: vec![(
                "adt-in".to_string(),
                Arc::new(std::sync::atomic::AtomicBool::new(true)),
            )],
            ..Observed::default()
        };
        assert_eq!(
            ready_answer(observed).await,
            (StatusCode::OK, json!({"status": "ready"}))
        );
    }

    #[tokio::test]
    async fn err_not_ready_when_a_listener_stopped() {
        let observed = Observed {
            serving: vec![(
                "adt-in".to_string(),
                Arc::new(std::sync::atomic::AtomicBool::new(false)),
            )],
            ..Observed::default()
        };
        assert_eq!(
            ready_answer(observed).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "not ready", "problems": ["channel `adt-in`: its listener stopped"]})
            )
        );
    }
}
