//! Latency histograms for `/metrics` (prometheus-client), observed where the time is spent:
//!
//! - `ordobridge_ack_latency_seconds{channel}`: an MLLP frame read → its ACK ready (parse,
//!   journal commit, ACK build);
//! - `ordobridge_store_commit_seconds`: one writer transaction (group commit, fsync included);
//! - `ordobridge_delivery_latency_seconds{destination}`: a message enqueued → acknowledged by
//!   the EHR (or written to its drop folder);
//! - `ordobridge_posos_request_seconds{endpoint,outcome}`: one call to Posos (or the
//!   simulator), by endpoint (`token`, `scan-token`, `prepare`) and outcome (`ok`, `error`);
//! - `ordobridge_launch_seconds`: a launch request answered (Posos included);
//! - `ordobridge_census_anomalies_total{channel,kind}`: census anomalies kept and flagged (a
//!   movement seen twice, an encounter never admitted, …), by the message's inbound channel
//!   and the kind `ordobridge census` shows. The log has one line per kind per chunk of
//!   updates (a replayed day of ADT flags every message); the journal ids are at debug.
//!
//! They are process-wide, like the default registry of other Prometheus clients: one process
//! is one daemon, and every subsystem observes without threading a handle through its API.
//! Counters and gauges that the subsystems already keep (atomics) are read at scrape time by
//! `engine::status`, not duplicated here.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A channel (inbound) label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

/// A destination (outbound) label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    pub destination: String,
}

/// A Posos call: which endpoint, and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PososLabel {
    pub endpoint: String,
    pub outcome: String,
}

/// A census anomaly: its message's inbound channel and its kind (`AnomalyKind::as_str`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnomalyLabel {
    pub channel: String,
    pub kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets from 100 µs to ~52 s (doubling): an ACK after an fsync (ms), a delivery after
/// retries (seconds).
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// The histograms (see the module docs).
pub struct Latencies {
    pub ack: HistogramFamily<ChannelLabel>,
    pub commit: Histogram,
    pub delivery: HistogramFamily<DestinationLabel>,
    pub posos: HistogramFamily<PososLabel>,
    pub launch: Histogram,
}

static LATENCIES: LazyLock<Latencies> = LazyLock::new(|| Latencies {
    ack: Family::new_with_constructor(latency_buckets),
    commit: latency_buckets(),
    delivery: Family::new_with_constructor(latency_buckets),
    posos: Family::new_with_constructor(latency_buckets),
    launch: latency_buckets(),
});

/// Census anomalies kept and flagged, by channel and kind.
static CENSUS_ANOMALIES: LazyLock<Family<AnomalyLabel, Counter>> = LazyLock::new(Family::default);

/// Counts `count` census anomalies of `kind` on `channel`.
pub fn count_census_anomalies(channel: &str, kind: &str, count: u64) {
    CENSUS_ANOMALIES
        .get_or_create(&AnomalyLabel {
            channel: channel.to_owned(),
            kind: kind.to_owned(),
        })
        .inc_by(count);
}

/// The process's histograms.
pub fn latencies() -> &'static Latencies {
    &LATENCIES
}

/// The ACK histogram of `channel`, for its handler to keep: observing through it costs no
/// label lookup per frame (clones share the counts).
pub fn ack_histogram(channel: &str) -> Histogram {
    LATENCIES
        .ack
        .get_or_create(&ChannelLabel {
            channel: channel.to_string(),
        })
        .clone()
}

/// Records one store transaction.
pub fn observe_commit(took: Duration) {
    LATENCIES.commit.observe(took.as_secs_f64());
}

/// Records one delivered message of `destination`, `took` after it was enqueued.
pub fn observe_delivery(destination: &str, took: Duration) {
    LATENCIES
        .delivery
        .get_or_create(&DestinationLabel {
            destination: destination.to_string(),
        })
        .observe(took.as_secs_f64());
}

/// Records one call to Posos.
pub fn observe_posos(endpoint: &str, ok: bool, took: Duration) {
    LATENCIES
        .posos
        .get_or_create(&PososLabel {
            endpoint: endpoint.to_string(),
            outcome: if ok { "ok" } else { "error" }.to_string(),
        })
        .observe(took.as_secs_f64());
}

/// Records one answered launch.
pub fn observe_launch(took: Duration) {
    LATENCIES.launch.observe(took.as_secs_f64());
}

/// Registers the histograms and the anomaly counter in `registry` (clones share the same
/// counts).
pub fn register(registry: &mut Registry) {
    let l = latencies();
    registry.register(
        "ordobridge_ack_latency_seconds",
        "MLLP frame read to its ACK ready (parse, journal commit, ACK), by inbound channel",
        l.ack.clone(),
    );
    registry.register(
        "ordobridge_store_commit_seconds",
        "one store transaction (group commit, fsync included)",
        l.commit.clone(),
    );
    registry.register(
        "ordobridge_delivery_latency_seconds",
        "outbound message enqueued to acknowledged by its destination",
        l.delivery.clone(),
    );
    registry.register(
        "ordobridge_posos_request_seconds",
        "one call to Posos, by endpoint and outcome",
        l.posos.clone(),
    );
    registry.register(
        "ordobridge_launch_seconds",
        "a launch request answered, Posos included",
        l.launch.clone(),
    );
    registry.register(
        "ordobridge_census_anomalies",
        "census anomalies kept and flagged (see `ordobridge census`), by inbound channel and kind",
        CENSUS_ANOMALIES.clone(),
    );
}
