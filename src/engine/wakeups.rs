//! Wakeups from the other nodes on one PostgreSQL (`Store::wakeups`): a message another node
//! enqueued for a destination this node delivers, an ADT it journaled for the census
//! processor this node runs, a census change or a hold made due for this node's hold releaser
//! wake the task now instead of at its next poll. The tasks' own polls stay: a wakeup lost (a
//! crash, the listening connection down) only delays the work to them. On SQLite there is
//! nothing to forward: every task is woken in memory by whoever committed.

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
            Wakeup::All => {
                for waker in self.destinations.borrow().values() {
                    waker.notify_one();
                }
                self.processor.notify_one();
                self.releaser.notify_one();
            }
        }
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

    #[tokio::test]
    async fn ok_each_wakeup_pokes_its_task() {
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
            },
            stop.clone(),
        ));
        assert!(woken(&ehr).await && woken(&releaser).await);
        drop(sender);
        task.await.unwrap();
    }
}
