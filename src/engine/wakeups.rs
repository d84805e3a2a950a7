//! Wakeups from the other nodes on one PostgreSQL (`Store::wakeups`): a message another node
//! enqueued for a destination this node delivers, an ADT it journaled for the census
//! processor this node runs, a census change or a hold made due for this node's hold releaser
//! wake the task now instead of at its next poll. The tasks' own polls stay: a wakeup lost (a
//! crash, the listening connection down) only delays the work to them. On SQLite there is
//! nothing to forward: every task is woken in memory by whoever committed.
//!
//! A pause or resume from any node's console reaches the node delivering the destination the
//! same way: it reads the paused destinations from the store again and turns its switches.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::store::Wakeup;

/// The local wake-ups a [`Wakeup`] pokes.
pub(super) struct Targets {
    /// Each destination's, as the running configuration has them (replaced at each apply).
    pub(super) destinations: watch::Receiver<BTreeMap<String, Arc<Notify>>>,
    /// The census processor's.
    pub(super) processor: Arc<Notify>,
    /// The hold releaser's.
    pub(super) releaser: Arc<Notify>,
    /// The destinations' pause switches, set from the store's paused destinations.
    pub(super) pauses: Arc<crate::delivery::PauseSwitches>,
    pub(super) store: crate::store::Store,
}

impl Targets {
    fn wake(&self, wakeup: &Wakeup) {
        match wakeup {
            Wakeup::Destination(name) => {
                // A destination this node's configuration does not have: nothing to wake.
                if let Some(waker) = self.destinations.borrow().get(name) {
                    waker.notify_one();
                }
            }
            Wakeup::Processor => self.processor.notify_one(),
            Wakeup::Releaser => self.releaser.notify_one(),
            Wakeup::Pause(name) => self.read_pauses(vec![name.clone()]),
            Wakeup::All => {
                for waker in self.destinations.borrow().values() {
                    waker.notify_one();
                }
                self.processor.notify_one();
                self.releaser.notify_one();
                self.read_pauses(self.destinations.borrow().keys().cloned().collect());
            }
        }
    }

    /// Sets the switches of `names` from the destinations paused in the store (read on the
    /// blocking pool; a failed read leaves the switches as they are, logged).
    fn read_pauses(&self, names: Vec<String>) {
        let (store, pauses) = (self.store.clone(), self.pauses.clone());
        tokio::spawn(async move {
            let paused = match tokio::task::spawn_blocking(move || store.paused_destinations())
                .await
            {
                Ok(Ok(paused)) => paused,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "a pause from another node could not be read: the destinations keep their switches");
                    return;
                }
                Err(_) => return,
            };
            for name in names {
                let now = paused.contains(&name);
                if pauses.set(&name, now) {
                    tracing::warn!(destination = %name, paused = now, "destination paused or resumed from another node's console");
                }
            }
        });
    }
}

/// Forwards `wakeups` to `targets` until `stop`.
pub(super) async fn forward(
    mut wakeups: broadcast::Receiver<Wakeup>,
    targets: Targets,
    stop: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = wakeups.recv() => received,
        };
        match received {
            Ok(wakeup) => targets.wake(&wakeup),
            // Some were dropped behind a burst: whatever they were, wake everything.
            Err(broadcast::error::RecvError::Lagged(_)) => targets.wake(&Wakeup::All),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn woken(notify: &Notify) -> bool {
        tokio::time::timeout(Duration::from_secs(1), notify.notified())
            .await
            .is_ok()
    }

    fn store(dir: &tempfile::TempDir) -> crate::store::Store {
        crate::store::Store::open(
            &dir.path().join("s.db"),
            crate::store::StoreOptions::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn ok_each_wakeup_pokes_its_task() {
        let dir = tempfile::tempdir().unwrap();
        let ehr = Arc::new(Notify::new());
        let (_keep, destinations) =
            watch::channel(BTreeMap::from([("ehr".to_owned(), ehr.clone())]));
        let (processor, releaser) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (sender, receiver) = broadcast::channel(4);
        let stop = CancellationToken::new();
        let task = tokio::spawn(forward(
            receiver,
            Targets {
                destinations,
                processor: processor.clone(),
                releaser: releaser.clone(),
                pauses: Arc::default(),
                store: store(&dir),
            },
            stop.clone(),
        ));
        sender.send(Wakeup::Destination("unknown".into())).unwrap();
        sender.send(Wakeup::Destination("ehr".into())).unwrap();
        assert!(woken(&ehr).await);
        sender.send(Wakeup::Processor).unwrap();
        assert!(woken(&processor).await);
        sender.send(Wakeup::Releaser).unwrap();
        assert!(woken(&releaser).await);
        sender.send(Wakeup::All).unwrap();
        assert!(woken(&ehr).await && woken(&processor).await && woken(&releaser).await);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn ok_lagged_wakes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let ehr = Arc::new(Notify::new());
        let (_keep, destinations) =
            watch::channel(BTreeMap::from([("ehr".to_owned(), ehr.clone())]));
        let (processor, releaser) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (sender, receiver) = broadcast::channel(1);
        // Two sent into a channel of one before the forwarder reads: it lags.
        sender.send(Wakeup::Processor).unwrap();
        sender.send(Wakeup::Processor).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(forward(
            receiver,
            Targets {
                destinations,
                processor: processor.clone(),
                releaser: releaser.clone(),
                pauses: Arc::default(),
                store: store(&dir),
            },
            stop.clone(),
        ));
        assert!(woken(&ehr).await && woken(&releaser).await);
        drop(sender);
        task.await.unwrap();
    }

    /// A pause committed by another node's console turns this node's switch, and a resume
    /// turns it back (here the store is SQLite; on PostgreSQL the wakeup comes by `NOTIFY`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ok_pause_from_another_node_turns_the_switch() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let pauses = Arc::new(crate::delivery::PauseSwitches::default());
        let (_keep, destinations) = watch::channel(BTreeMap::from([(
            "ehr".to_owned(),
            Arc::new(Notify::new()),
        )]));
        let (sender, receiver) = broadcast::channel(4);
        let stop = CancellationToken::new();
        let task = tokio::spawn(forward(
            receiver,
            Targets {
                destinations,
                processor: Arc::default(),
                releaser: Arc::default(),
                pauses: pauses.clone(),
                store: store.clone(),
            },
            stop.clone(),
        ));
        let entry = |action: &str| crate::store::AuditEntry {
            user: "olga".into(),
            action: action.into(),
            target: "destination:ehr".into(),
            reason: "EHR maintenance".into(),
        };
        let switched = |wanted: bool| {
            let pauses = pauses.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while pauses.is_paused("ehr") != wanted {
                    assert!(std::time::Instant::now() < deadline, "switch not turned");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        store
            .switch_destination("ehr".into(), true, entry("pause"))
            .await
            .unwrap();
        sender.send(Wakeup::Pause("ehr".into())).unwrap();
        switched(true).await;
        store
            .switch_destination("ehr".into(), false, entry("resume"))
            .await
            .unwrap();
        sender.send(Wakeup::All).unwrap();
        switched(false).await;
        stop.cancel();
        task.await.unwrap();
    }
}
