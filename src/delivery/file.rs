//! The file transport: the worker of a file destination writes each pending message of its
//! queue into the drop folder, in enqueue order, and marks it delivered only once the file
//! (and its witness) is durably in place ([`Outbox::write`]).
//!
//! A write that fails (folder gone or not mounted, disk full, permissions) is retried with
//! the destination's [`RetryPolicy`] (`retry_initial`, `retry_max`, with jitter) and the
//! message waits at the head of its queue meanwhile; after `max_attempts` failed writes
//! (`0`: never) it becomes a dead letter (`gave up after N attempts: cannot write …`) and the
//! next message is tried. Once the folder is fixed, delivery goes on in order, and
//! `ordobridge replay` puts the dead letters back.
//!
//! File names may hold the patient's IPP (`{ipp}`): in logs at debug level and above the
//! IPP is redacted from names and errors; the full text is the queue's `last_error` and is
//! logged at trace.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, trace, warn};

use super::{DeliveryError, until_wall_clock, waited};
use crate::filedrop::{NameVars, Outbox, OutboxSettings};
use crate::retry::RetryPolicy;
use crate::store::{OutboundMessage, Store, StoreError};
use crate::text::error_chain;

/// Where and how one file destination receives its messages.
#[derive(Debug, Clone, PartialEq)]
pub struct FileDestinationSettings {
    /// Destination name, as in the queue rows and the logs.
    pub name: String,
    /// The drop folder, the file name template and the witness.
    pub outbox: OutboxSettings,
    /// Backoff after a failed write and the dead-letter limit.
    pub retry: RetryPolicy,
    /// Safety net: how often an idle worker looks at the queue without being notified, and
    /// the longest it sleeps in one go while the head of the queue is in backoff.
    pub poll_interval: Duration,
}

impl FileDestinationSettings {
    /// Settings with the defaults: [`RetryPolicy::default`], a 1 s poll.
    pub fn new(name: impl Into<String>, outbox: OutboxSettings) -> Self {
        Self {
            name: name.into(),
            outbox,
            retry: RetryPolicy::default(),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Delivers the queue of one file destination into `outbox` until `shutdown` is cancelled
/// (see the module docs). Run exactly one per destination: order rests on it.
///
/// Store failures are logged and retried after the poll interval; the worker stops early
/// only when the store is closed.
pub async fn run_file_destination(
    store: Store,
    settings: FileDestinationSettings,
    outbox: Arc<Outbox>,
    notify: Arc<Notify>,
    mut pause: super::PauseReceiver,
    shutdown: CancellationToken,
) {
    let worker = FileWorker {
        store,
        settings,
        outbox,
    };
    loop {
        // Paused by an operator (see [`super::PauseSwitches`]): no new file until resumed.
        if pause.is_paused() {
            if !pause.wait_resumed(&shutdown).await {
                return;
            }
            continue;
        }
        let next = match worker.store.next_pending_async(&worker.settings.name).await {
            Ok(next) => next,
            Err(e) => {
                if worker.store_failed(&e) {
                    return;
                }
                None
            }
        };
        let Some(message) = next else {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = notify.notified() => {}
                () = tokio::time::sleep(worker.settings.poll_interval) => {}
            }
            continue;
        };
        // Respect the backoff of an earlier failure; woken at the poll interval at the
        // latest, to notice a replay or a clock change.
        let wait = until_wall_clock(message.next_attempt_at);
        if !wait.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait.min(worker.settings.poll_interval)) => {}
            }
            continue;
        }
        // Not interrupted by shutdown: the write and its store update finish first.
        let result = worker.attempt(message).await;
        if let Err(e) = result {
            if worker.store_failed(&e) {
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(worker.settings.poll_interval) => {}
            }
        }
    }
}

/// What one file destination's attempts need.
struct FileWorker {
    store: Store,
    settings: FileDestinationSettings,
    outbox: Arc<Outbox>,
}

impl FileWorker {
    /// Writes `message` and records the outcome (delivered, retry, dead letter).
    async fn attempt(&self, message: OutboundMessage) -> Result<(), StoreError> {
        let name = &self.settings.name;
        let payload = message.payload.clone();
        // A document beside an HPRIM message travels as one payload (`filedrop::companion`).
        let ipp = crate::filedrop::companion::decode(&payload)
            .map(|(data, _)| patient_id(data))
            .unwrap_or_default();
        let vars = NameVars::now(
            message.control_id.clone(),
            ipp,
            u64::try_from(message.id).unwrap_or_default(),
        );
        let writer = Arc::clone(&self.outbox);
        let name_vars = vars.clone();
        let written =
            tokio::task::spawn_blocking(move || {
                match crate::filedrop::companion::decode(&payload) {
                    Some((data, companion)) => writer.write_with_companion(&vars, data, companion),
                    None => Err(crate::filedrop::OutboxError::Io {
                        op: "read the queued payload",
                        path: std::path::PathBuf::new(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "a damaged companion envelope",
                        ),
                    }),
                }
            })
            .await;
        match written {
            Ok(Ok(path)) => {
                // `{ipp}` in the file name is a patient identifier: kept out of debug.
                debug!(destination = %name, id = message.id, file = %self.outbox.redact(&path.display().to_string(), &name_vars), "file written");
                crate::metrics::observe_delivery(name, waited(message.enqueued_at));
                self.store
                    .mark_delivered(message.id, Bytes::from(path.display().to_string()))
                    .await
                    .map(|_| ())
            }
            Ok(Err(source)) => {
                let error = DeliveryError::File {
                    control_id: message.control_id.clone(),
                    folder: self.settings.outbox.folder.clone(),
                    source,
                };
                self.failed(&message, error, &name_vars).await
            }
            Err(e) => {
                // The write did not run to its end (runtime shutting down): not an attempt.
                warn!(destination = %name, id = message.id, error = %e, "file writer task failed; will retry");
                Ok(())
            }
        }
    }

    /// A failed write: retry later, or give up once the limit is reached.
    async fn failed(
        &self,
        message: &OutboundMessage,
        error: DeliveryError,
        vars: &NameVars,
    ) -> Result<(), StoreError> {
        let name = &self.settings.name;
        let attempts = message.attempts.saturating_add(1);
        if self.settings.retry.gives_up(attempts) {
            let error = DeliveryError::GaveUp {
                attempts,
                last: Box::new(error),
            };
            let reason = error_chain(&error);
            error!(destination = %name, id = message.id, control_id = %message.control_id, reason = %self.outbox.redact(&reason, vars), "message dead-lettered; the next one proceeds");
            trace!(destination = %name, id = message.id, reason = %reason, "dead letter reason in full");
            return self.store.mark_dead(message.id, &reason).await.map(|_| ());
        }
        let delay = self.settings.retry.jittered(attempts, message.id);
        let text = error_chain(&error);
        warn!(destination = %name, id = message.id, attempt = attempts, error = %self.outbox.redact(&text, vars), retry_in = ?delay, "cannot write the file; will retry");
        trace!(destination = %name, id = message.id, error = %text, "file write failure in full");
        let at = jiff::Timestamp::now()
            .saturating_add(delay)
            .unwrap_or(jiff::Timestamp::MAX);
        self.store
            .mark_retry(message.id, &text, at)
            .await
            .map(|_| ())
    }

    /// Logs a store failure; `true` when the store is closed and the worker must stop.
    fn store_failed(&self, error: &StoreError) -> bool {
        let name = &self.settings.name;
        if matches!(error, StoreError::Closed { .. }) {
            error!(destination = %name, error = %error_chain(error), "store closed; delivery stops");
            return true;
        }
        warn!(destination = %name, error = %error_chain(error), "cannot use the outbound queue; retrying");
        false
    }
}

/// The patient identifier for `{ipp}` in file names: PID-3.1 of an HL7 message, P.3 of an
/// HPRIM one; empty when neither reads.
fn patient_id(payload: &[u8]) -> String {
    if let Ok(message) = crate::hl7::Message::parse(payload)
        && let Ok(Some(ipp)) = message.query("PID-3.1")
    {
        return ipp;
    }
    if let Ok(message) = crate::hprim::Message::parse(payload, None) {
        return crate::hprim::patients(&message)
            .into_iter()
            .next()
            .map(|p| p.ipp)
            .unwrap_or_default();
    }
    String::new()
}
