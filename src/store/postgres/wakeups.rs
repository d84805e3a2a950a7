//! Wakeups across nodes: work one node commits for a task another node runs (a destination's
//! delivery, the census processor, the hold releaser) wakes that task at once instead of at
//! its next poll.
//!
//! # Sending
//!
//! After a transaction that enqueued outbound messages, journaled accepted rows, applied
//! census updates or made a hold due has committed, [`Inner::wake`] sends
//! `pg_notify('ordobridge', '<kind>:<name>')` (see [`Wakeup`]) in a statement of its own, on
//! another pooled connection, in the background: the caller (an ACK, a push's answer) never
//! waits for it.
//!
//! Why not in the writing transaction itself, as `NOTIFY` is usually sent: PostgreSQL
//! serializes the commits of the transactions that notified (a database-wide lock held from
//! before the commit until after its WAL flush, so that the notification queue follows commit
//! order), which would give up the group commit of concurrent journal inserts. The statement
//! here commits asynchronously (`synchronous_commit` off for it alone): nothing durable rides
//! on it, and a notification lost with a crash is covered by the poll, as is one lost with the
//! listening connection.
//!
//! Bounded: one notification of each payload in flight per node; one asked for meanwhile is
//! sent once more when it ends (so the last commit is always followed by a notification).
//!
//! # Listening
//!
//! [`Postgres::wakeups`] starts, at its first call, one listening connection outside the pool
//! (`LISTEN ordobridge`), reconnecting after a loss with a growing pause (250 ms up to 10 s).
//! Each notification is broadcast to the subscribers; after each (re)connection, a
//! [`Wakeup::All`] stands for what may have been missed while not listening. A node hears its
//! own notifications too: a spurious wake costs one empty look at the queue.

use std::collections::HashMap;
use std::future::poll_fn;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, Client, Connection};
use tokio_util::sync::CancellationToken;

use super::{Inner, Postgres};

/// The channel every node listens on (`ordobridge`, as in [`NOTIFY_SQL`]).
const LISTEN_SQL: &str = "LISTEN ordobridge";

/// The notification, committed on its own without waiting for its WAL flush.
const NOTIFY_SQL: &str =
    "SELECT set_config('synchronous_commit', 'off', true), pg_notify('ordobridge', $1)";

/// Wakeups a slow subscriber may lag behind before it is told to look at everything.
const CAPACITY: usize = 256;

/// The first pause before reconnecting, doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// What a notification wakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    /// Messages were enqueued for this destination (`outbound:<destination>`).
    Destination(String),
    /// Accepted rows were journaled: the census processor has work (`journal:accepted`).
    Processor,
    /// The census changed or a hold was made due: the hold releaser has work
    /// (`census:changed`, `hold:due`).
    Releaser,
    /// An operator paused or resumed this destination from a console (`pause:<destination>`):
    /// the node delivering it reads the pauses again.
    Pause(String),
    /// Anything may have been missed (the listening connection was (re)established, or a
    /// subscriber lagged): wake every task.
    All,
}

impl Wakeup {
    /// The notification's payload.
    pub(super) fn payload(&self) -> String {
        match self {
            Wakeup::Destination(name) => format!("outbound:{name}"),
            Wakeup::Processor => "journal:accepted".to_owned(),
            Wakeup::Releaser => "census:changed".to_owned(),
            Wakeup::Pause(name) => format!("pause:{name}"),
            Wakeup::All => "all:".to_owned(),
        }
    }

    /// Reads a payload; `None` for one this build does not know (a newer node's).
    pub(super) fn parse(payload: &str) -> Option<Wakeup> {
        let (kind, name) = payload.split_once(':')?;
        match kind {
            "outbound" if !name.is_empty() => Some(Wakeup::Destination(name.to_owned())),
            "journal" => Some(Wakeup::Processor),
            "census" | "hold" => Some(Wakeup::Releaser),
            "pause" if !name.is_empty() => Some(Wakeup::Pause(name.to_owned())),
            "all" => Some(Wakeup::All),
            _ => None,
        }
    }
}

/// The notifications this node is sending: for each payload, whether another was asked for
/// while it was in flight.
#[derive(Debug, Default)]
pub(super) struct Notifier {
    in_flight: Arc<Mutex<HashMap<String, bool>>>,
}

/// How the listening connection connects: the pool's settings, the pool's TLS.
#[derive(Clone)]
pub(super) struct ListenSettings {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl std::fmt::Debug for ListenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenSettings")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// What the listening side shares: the broadcast, started at the first subscriber; the end.
#[derive(Debug, Default)]
pub(super) struct Listening {
    sender: std::sync::OnceLock<broadcast::Sender<Wakeup>>,
    pub(super) closed: CancellationToken,
}

impl Inner {
    /// After a commit: tells every node (this one too) what it may wake (see the module docs).
    /// Never fails: a notification not sent is covered by the poll.
    pub(super) fn wake(&self, wakeups: impl IntoIterator<Item = Wakeup>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for wakeup in wakeups {
            let payload = wakeup.payload();
            {
                let mut in_flight = self
                    .notifier
                    .in_flight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(again) = in_flight.get_mut(&payload) {
                    *again = true;
                    continue;
                }
                in_flight.insert(payload.clone(), false);
            }
            let (pool, in_flight) = (self.pool.clone(), Arc::clone(&self.notifier.in_flight));
            runtime.spawn(notify(pool, in_flight, payload));
        }
    }
}

/// Sends `payload` until no other was asked for while it was in flight.
async fn notify(
    pool: deadpool_postgres::Pool,
    in_flight: Arc<Mutex<HashMap<String, bool>>>,
    payload: String,
) {
    loop {
        let sent = match pool.get().await {
            Ok(connection) => connection
                .execute(NOTIFY_SQL, &[&payload])
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = sent {
            tracing::debug!(%error, "a wakeup for the other nodes was not sent: they find the work at their next poll");
        }
        let mut in_flight = in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match in_flight.get_mut(&payload) {
            Some(again) if *again => *again = false,
            _ => {
                in_flight.remove(&payload);
                return;
            }
        }
    }
}

impl Postgres {
    /// [`Store::wakeups`](crate::store::Store::wakeups): a new subscriber; the listening
    /// connection starts with the first.
    pub(in crate::store) fn wakeups(&self) -> broadcast::Receiver<Wakeup> {
        let inner = &self.inner;
        inner
            .listening
            .sender
            .get_or_init(|| {
                let (sender, _) = broadcast::channel(CAPACITY);
                self.handle.spawn(listen(
                    inner.listen.clone(),
                    inner.path.clone(),
                    sender.clone(),
                    inner.listening.closed.clone(),
                ));
                sender
            })
            .subscribe()
    }
}

/// Listens until the store closes, reconnecting after each loss.
async fn listen(
    settings: ListenSettings,
    path: PathBuf,
    sender: broadcast::Sender<Wakeup>,
    closed: CancellationToken,
) {
    let mut pause = FIRST_PAUSE;
    loop {
        let (listened, reason) = tokio::select! {
            () = closed.cancelled() => return,
            outcome = listen_once(&settings, &sender) => outcome,
        };
        if listened {
            pause = FIRST_PAUSE;
        }
        tracing::warn!(
            store = %path.display(),
            error = %reason,
            retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            "the connection listening for other nodes' wakeups was lost: reconnecting; meanwhile, work taken by another node waits for this node's poll"
        );
        tokio::select! {
            () = closed.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// One listening connection: whether `LISTEN` took, and why the connection ended.
async fn listen_once(
    settings: &ListenSettings,
    sender: &broadcast::Sender<Wakeup>,
) -> (bool, String) {
    match &settings.tls {
        None => match settings.config.connect(tokio_postgres::NoTls).await {
            Ok((client, connection)) => listen_on(client, connection, sender).await,
            Err(error) => (false, error.to_string()),
        },
        Some(tls) => match settings.config.connect(tls.clone()).await {
            Ok((client, connection)) => listen_on(client, connection, sender).await,
            Err(error) => (false, error.to_string()),
        },
    }
}

async fn listen_on<S, T>(
    client: Client,
    connection: Connection<S, T>,
    sender: &broadcast::Sender<Wakeup>,
) -> (bool, String)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut driver = pin!(forward(connection, sender.clone()));
    tokio::select! {
        reason = &mut driver => return (false, reason),
        listened = client.batch_execute(LISTEN_SQL) => {
            if let Err(error) = listened {
                return (false, error.to_string());
            }
        }
    }
    // What was committed while nobody listened.
    let _ = sender.send(Wakeup::All);
    let reason = driver.await;
    drop(client);
    (true, reason)
}

/// Drives `connection`, broadcasting its notifications; why it ended.
async fn forward<S, T>(
    mut connection: Connection<S, T>,
    sender: broadcast::Sender<Wakeup>,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                if let Some(wakeup) = Wakeup::parse(notification.payload()) {
                    // No subscriber left: nothing to wake.
                    let _ = sender.send(wakeup);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return error.to_string(),
            None => return "the server closed the connection".to_owned(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::destination(Wakeup::Destination("ehr-orders".into()), "outbound:ehr-orders")]
    #[case::destination_with_colon(Wakeup::Destination("a:b".into()), "outbound:a:b")]
    #[case::processor(Wakeup::Processor, "journal:accepted")]
    #[case::releaser(Wakeup::Releaser, "census:changed")]
    #[case::pause(Wakeup::Pause("ehr".into()), "pause:ehr")]
    #[case::all(Wakeup::All, "all:")]
    fn ok_payload_round_trips(#[case] wakeup: Wakeup, #[case] payload: &str) {
        assert_eq!(wakeup.payload(), payload);
        assert_eq!(Wakeup::parse(payload), Some(wakeup));
    }

    #[test]
    fn ok_hold_due_wakes_the_releaser() {
        assert_eq!(Wakeup::parse("hold:due"), Some(Wakeup::Releaser));
    }

    #[rstest]
    #[case::no_colon("outbound")]
    #[case::empty_destination("outbound:")]
    #[case::unknown_kind("lease:ehr")]
    #[case::empty("")]
    fn err_unknown_payload_is_ignored(#[case] payload: &str) {
        assert_eq!(Wakeup::parse(payload), None);
    }
}
