//! What an operator or a monitoring system sees of a running daemon: `GET /status` (JSON, per
//! channel and destination, with the last error of each inbox: an unreadable share, a full
//! disk) and `GET /metrics` (Prometheus text exposition of the same counters, plus the store's
//! and the queues' depths, and the pushed bundles held for an unknown patient: how many, the
//! oldest hold's age, how many were released and why). Neither says anything about patients.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::hold::HoldStats;
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
}

pub(super) fn router(observed: Observed) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(observed))
}

async fn status(State(observed): State<Arc<Observed>>) -> Response {
    let mut channels = serde_json::Map::new();
    for (name, stats) in &observed.listeners {
        let s = stats.snapshot();
        channels.insert(
            name.clone(),
            json!({"kind": "mllp", "connections_open": s.connections_open, "frames": s.frames,
                   "oversized": s.oversized, "interrupted": s.interrupted, "timeouts": s.timeouts,
                   "io_errors": s.io_errors, "tls_plain_refused": s.tls_plain_refused,
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
    let queues: Value = match &observed.store {
        Some(store) => match store.queue_overview_async().await {
            Ok(depths) => depths
                .iter()
                .map(|d| {
                    (
                        d.destination.clone(),
                        json!({"pending": d.pending, "dead": d.dead}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into(),
            Err(e) => json!({"error": e.to_string()}),
        },
        None => json!({}),
    };
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
        // "attention": some inbox reported an error (see its last_error); the daemon runs on.
        "status": if failing { "attention" } else { "ok" },
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
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Whole seconds since `at` (0 for a time in the future: a clock step back).
fn age_seconds(at: jiff::Timestamp) -> u64 {
    let age = jiff::Timestamp::now().duration_since(at);
    u64::try_from(age.as_secs()).unwrap_or(0)
}

/// One counter or gauge family in the Prometheus text format.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (label, value) in samples {
        if label.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{label}}} {value}");
        }
    }
}

fn label(key: &str, value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("{key}=\"{escaped}\"")
}

async fn metrics(State(observed): State<Arc<Observed>>) -> Response {
    let mut out = String::new();
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
                &[(String::new(), overview.held)],
            );
            family(
                &mut out,
                "ordobridge_push_oldest_held_seconds",
                "gauge",
                "age of the oldest held bundle (0 when none)",
                &[(
                    String::new(),
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
            &[(String::new(), s.commits)],
        );
        family(
            &mut out,
            "ordobridge_store_failed_batches_total",
            "counter",
            "store transactions rolled back",
            &[(String::new(), s.failed_batches)],
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
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
