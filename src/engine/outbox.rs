//! The worker of a file destination: writes each pending message of its queue into the drop
//! folder, in enqueue order, and marks it delivered only once the file (and its witness) is
//! durably in place. A write failure (folder gone, disk full, permissions) is retried with
//! backoff, forever: the problem is the folder, not the message, so nothing is dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use crate::delivery::RetryPolicy;
use crate::filedrop::{NameVars, Outbox};
use crate::store::Store;

/// A safety net if a wake-up is missed.
const IDLE_POLL: Duration = Duration::from_secs(1);

pub(super) async fn run_file_destination(
    store: Store,
    name: String,
    outbox: Arc<Outbox>,
    notify: Arc<Notify>,
    mut pause: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let retry = RetryPolicy::default();
    loop {
        // Paused by an operator: no new file until resumed.
        if *pause.borrow() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = pause.changed() => {
                    if changed.is_err() {
                        let (_, never) = tokio::sync::watch::channel(false);
                        pause = never;
                    }
                }
            }
            continue;
        }
        let next = match store.next_pending_async(&name).await {
            Ok(next) => next,
            Err(e) => {
                warn!(destination = %name, error = %e, "cannot read the outbound queue; retrying");
                None
            }
        };
        let Some(message) = next else {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = notify.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        };
        // Respect the backoff of an earlier failure.
        let wait = message
            .next_attempt_at
            .duration_since(jiff::Timestamp::now())
            .try_into()
            .unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
        let vars = NameVars::now(
            message.control_id.clone(),
            patient_id(&message.payload),
            u64::try_from(message.id).unwrap_or_default(),
        );
        let payload = message.payload.clone();
        let writer = Arc::clone(&outbox);
        let name_vars = vars.clone();
        let written = tokio::task::spawn_blocking(move || writer.write(&vars, &payload)).await;
        let result = match written {
            Ok(Ok(path)) => {
                // `{ipp}` in the file name is a patient identifier: kept out of debug.
                debug!(destination = %name, id = message.id, file = %outbox.redact(&path.display().to_string(), &name_vars), "file written");
                crate::metrics::observe_delivery(
                    &name,
                    crate::delivery::waited(message.enqueued_at),
                );
                store
                    .mark_delivered(message.id, Bytes::from(path.display().to_string()))
                    .await
                    .map(|_| ())
            }
            Ok(Err(e)) => {
                let delay = retry.base_delay(message.attempts.saturating_add(1));
                let text = crate::delivery::error_chain(&e);
                warn!(destination = %name, id = message.id, error = %outbox.redact(&text, &name_vars), retry_in = ?delay, "cannot write the file; will retry");
                trace!(destination = %name, id = message.id, error = %text, "file write failure in full");
                let at = jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::try_from(delay).unwrap_or_default())
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                store.mark_retry(message.id, &text, at).await.map(|_| ())
            }
            Err(e) => {
                warn!(destination = %name, id = message.id, error = %e, "file writer task failed; will retry");
                Ok(())
            }
        };
        if let Err(e) = result {
            warn!(destination = %name, error = %e, "cannot record the outcome in the queue; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
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
