//! A load tool: drives an MLLP receiver with N connections, each sending one message, waiting
//! for its answer, then the next, and reports throughput and latency percentiles.
//!
//! The corpus is sent as given (nothing is rewritten, control IDs included). Latencies are
//! kept as microseconds in one `Vec<u32>` per connection, merged and sorted at the end: exact
//! percentiles, 4 bytes a message (fine up to about 10 million messages).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::MllpError;
use super::client::{ClientSettings, MllpClient};

/// Outcome of one load run, printed as one readable block by its `Display`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Connections used.
    pub connections: usize,
    /// Messages sent (an attempt counts even if it failed).
    pub sent: u64,
    /// Answers carrying `MSA|AA` or `MSA|CA`.
    pub acked_ok: u64,
    /// Sends that got no answer (timeout, closed connection, I/O error).
    pub errors: u64,
    /// Wall time from the first send to the last answer.
    pub elapsed: Duration,
    /// Messages sent per second of `elapsed`.
    pub msgs_per_sec: f64,
    /// Median time from send to answer, over answered messages.
    pub p50: Duration,
    /// 99th percentile time from send to answer.
    pub p99: Duration,
    /// Slowest answer.
    pub max: Duration,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answered_not_ok = self.sent.saturating_sub(self.acked_ok + self.errors);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(
            f,
            "mllp load: {} messages over {} connections in {:.3} s",
            self.sent,
            self.connections,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "  acked ok     {}", self.acked_ok)?;
        writeln!(f, "  answered nok {answered_not_ok}")?;
        writeln!(f, "  errors       {}", self.errors)?;
        writeln!(f, "  throughput   {:.1} msg/s", self.msgs_per_sec)?;
        write!(
            f,
            "  latency      p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// What one connection did.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    acked_ok: u64,
    errors: u64,
    /// Microseconds from send to answer, one per answered message.
    latencies_us: Vec<u32>,
}

/// Gives the message to send for each index `0..total_messages` (e.g. a template with a unique
/// MSH-10, so a receiver that de-duplicates stores every message).
pub type MessageSource = Arc<dyn Fn(usize) -> Bytes + Send + Sync>;

/// A source cycling through a fixed corpus, sent as given; refuses an empty corpus.
pub fn cycle(corpus: Vec<Bytes>) -> Result<MessageSource, MllpError> {
    if corpus.is_empty() {
        return Err(MllpError::InvalidLoad {
            reason: "corpus is empty",
        });
    }
    let corpus: Arc<[Bytes]> = corpus.into();
    Ok(Arc::new(move |index| {
        corpus
            .get(index % corpus.len())
            .cloned()
            .unwrap_or_default()
    }))
}

/// Runs `total_messages` exchanges against `target` over `connections` connections, taking
/// each message from `source`; fails only if the arguments are unusable or a first connection
/// fails.
pub async fn run_load(
    target: SocketAddr,
    source: MessageSource,
    connections: usize,
    total_messages: usize,
    ack_timeout: Duration,
) -> Result<LoadReport, MllpError> {
    run_load_with(
        target,
        ClientSettings::default(),
        source,
        connections,
        total_messages,
        ack_timeout,
    )
    .await
}

/// [`run_load`] with client settings (TLS, limits) for every connection.
pub async fn run_load_with(
    target: SocketAddr,
    settings: ClientSettings,
    source: MessageSource,
    connections: usize,
    total_messages: usize,
    ack_timeout: Duration,
) -> Result<LoadReport, MllpError> {
    if connections == 0 {
        return Err(MllpError::InvalidLoad {
            reason: "connections must be at least 1",
        });
    }
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(MllpClient::connect(target, settings.clone()).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for client in clients {
        let job = Job {
            target,
            settings: settings.clone(),
            source: Arc::clone(&source),
            next: Arc::clone(&next),
            total: total_messages,
            ack_timeout,
        };
        workers.spawn(job.run(client));
    }
    let mut total = Tally::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(tally) => {
                total.sent += tally.sent;
                total.acked_ok += tally.acked_ok;
                total.errors += tally.errors;
                total.latencies_us.extend(tally.latencies_us);
            }
            Err(error) => warn!(%error, "load connection task failed"),
        }
    }
    let elapsed = started.elapsed();
    Ok(report(connections, total, elapsed))
}

/// Builds the report from the merged tally.
fn report(connections: usize, mut tally: Tally, elapsed: Duration) -> LoadReport {
    tally.latencies_us.sort_unstable();
    let secs = elapsed.as_secs_f64();
    LoadReport {
        connections,
        sent: tally.sent,
        acked_ok: tally.acked_ok,
        errors: tally.errors,
        elapsed,
        msgs_per_sec: if secs > 0.0 {
            tally.sent as f64 / secs
        } else {
            0.0
        },
        p50: percentile(&tally.latencies_us, 50),
        p99: percentile(&tally.latencies_us, 99),
        max: tally
            .latencies_us
            .last()
            .map_or(Duration::ZERO, |us| Duration::from_micros(u64::from(*us))),
    }
}

/// Nearest-rank percentile of sorted microsecond samples; zero when there are none.
fn percentile(sorted_us: &[u32], pct: usize) -> Duration {
    let rank = (sorted_us.len() * pct).div_ceil(100).max(1);
    sorted_us
        .get(rank - 1)
        .map_or(Duration::ZERO, |us| Duration::from_micros(u64::from(*us)))
}

/// Whether an answer is a positive acknowledgment.
fn is_positive_ack(answer: &[u8]) -> bool {
    memchr::memmem::find(answer, b"MSA|AA").is_some()
        || memchr::memmem::find(answer, b"MSA|CA").is_some()
}

/// One connection's share of the run: the messages are claimed from a shared counter, so fast
/// connections do more.
struct Job {
    target: SocketAddr,
    /// How each reconnection is made (TLS included).
    settings: ClientSettings,
    source: MessageSource,
    next: Arc<AtomicUsize>,
    total: usize,
    ack_timeout: Duration,
}

impl Job {
    async fn run(self, mut client: MllpClient) -> Tally {
        let mut tally = Tally::default();
        loop {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            if index >= self.total {
                return tally;
            }
            let message = (self.source)(index);
            tally.sent += 1;
            let started = Instant::now();
            match client.send(&message, self.ack_timeout).await {
                Ok(answer) => {
                    let us = started.elapsed().as_micros();
                    tally
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                    if is_positive_ack(&answer) {
                        tally.acked_ok += 1;
                    }
                }
                Err(error) => {
                    tally.errors += 1;
                    debug!(%error, index, "load message failed, reconnecting");
                    match MllpClient::connect(self.target, self.settings.clone()).await {
                        Ok(fresh) => client = fresh,
                        Err(error) => {
                            warn!(%error, "load connection lost and cannot reconnect");
                            return tally;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::empty(&[], 50, 0)]
    #[case::one(&[7], 99, 7)]
    #[case::p50_of_four(&[1, 2, 3, 4], 50, 2)]
    #[case::p99_of_hundred(&(1..=100).collect::<Vec<u32>>(), 99, 99)]
    #[case::p100(&[1, 2, 3], 100, 3)]
    fn ok_percentile(#[case] sorted: &[u32], #[case] pct: usize, #[case] us: u64) {
        assert_eq!(percentile(sorted, pct), Duration::from_micros(us));
    }

    #[rstest]
    #[case::aa(b"MSH|...\rMSA|AA|1", true)]
    #[case::ca(b"MSH|...\rMSA|CA|1", true)]
    #[case::ae(b"MSH|...\rMSA|AE|1", false)]
    #[case::nothing(b"", false)]
    fn ok_positive_ack(#[case] answer: &[u8], #[case] positive: bool) {
        assert_eq!(is_positive_ack(answer), positive);
    }

    #[test]
    fn ok_report_display() {
        let tally = Tally {
            sent: 4,
            acked_ok: 2,
            errors: 1,
            latencies_us: vec![3000, 1000, 2000],
        };
        let report = report(2, tally, Duration::from_secs(2));
        assert_eq!(
            report.to_string(),
            "mllp load: 4 messages over 2 connections in 2.000 s\n  acked ok     2\n  answered nok 1\n  errors       1\n  throughput   2.0 msg/s\n  latency      p50 2.000 ms, p99 3.000 ms, max 3.000 ms"
        );
    }

    #[rstest]
    #[case::empty_corpus(vec![], 1, "invalid load run: corpus is empty")]
    #[case::no_connections(vec![Bytes::from_static(b"x")], 0, "invalid load run: connections must be at least 1")]
    #[tokio::test]
    async fn err_invalid_load(
        #[case] corpus: Vec<Bytes>,
        #[case] connections: usize,
        #[case] text: &str,
    ) {
        let target = SocketAddr::from(([127, 0, 0, 1], 9));
        let err = match cycle(corpus) {
            Ok(source) => run_load(target, source, connections, 1, Duration::from_secs(1))
                .await
                .unwrap_err(),
            Err(err) => err,
        };
        assert_eq!(err.to_string(), text);
    }
}
