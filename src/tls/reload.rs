//! Configurations that are rebuilt from their files on demand (SIGHUP).
//!
//! A [`Reloadable`] keeps the current configuration behind a lock held only to clone an `Arc`:
//! a new connection takes the configuration current at its accept (or connect), an established
//! connection keeps the one it started with. A reload that fails (unreadable file, key that
//! does not match, expired certificate) keeps the old configuration and says why.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tracing::{info, warn};

use super::TlsError;
use super::files::CertificateInfo;

/// How a configuration is built from its files; called at start and at each reload.
pub type Build<C> = Box<dyn Fn() -> Result<(C, Option<CertificateInfo>), TlsError> + Send + Sync>;

/// A configuration that can be rebuilt from its files while connections use it.
pub struct Reloadable<C> {
    /// `inbound/NAME`, `outbound/NAME`, `http`: for logs, `check` and the metric label.
    usage: String,
    build: Build<C>,
    /// The configuration and its own certificate; the lock is held only to clone or swap.
    current: RwLock<(Arc<C>, Option<CertificateInfo>)>,
}

impl<C> fmt::Debug for Reloadable<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloadable")
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

impl<C: Send + Sync + 'static> Reloadable<C> {
    /// Builds the configuration once; fails when the files are not usable.
    pub fn load(usage: impl Into<String>, build: Build<C>) -> Result<Self, TlsError> {
        let (config, info) = build()?;
        Ok(Self {
            usage: usage.into(),
            build,
            current: RwLock::new((Arc::new(config), info)),
        })
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<C> {
        let guard = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&guard.0)
    }

    /// The use this configuration serves (`inbound/adt-tls`).
    pub fn usage(&self) -> &str {
        &self.usage
    }
}

/// What the [`Reloader`] needs of a holder, whatever its configuration type.
pub trait Reload: Send + Sync {
    /// `inbound/NAME`, `outbound/NAME`, `http`.
    fn usage(&self) -> &str;
    /// Re-reads the files; on error the old configuration stays.
    fn reload(&self) -> Result<(), TlsError>;
    /// The own certificate in force, if any.
    fn certificate(&self) -> Option<CertificateInfo>;
}

impl<C: Send + Sync + 'static> Reload for Reloadable<C> {
    fn usage(&self) -> &str {
        &self.usage
    }

    fn reload(&self) -> Result<(), TlsError> {
        let (config, info) = (self.build)()?;
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *guard = (Arc::new(config), info);
        Ok(())
    }

    fn certificate(&self) -> Option<CertificateInfo> {
        let guard = self.current.read().unwrap_or_else(PoisonError::into_inner);
        guard.1.clone()
    }
}

/// One certificate in force, by use: for `/status` and the expiry metric.
#[derive(Debug, Clone)]
pub struct CertificateStatus {
    pub usage: String,
    pub info: CertificateInfo,
}

/// Every reloadable TLS configuration of the daemon: the binary reloads them all on SIGHUP.
#[derive(Clone, Default)]
pub struct Reloader {
    holders: Arc<Mutex<Vec<Arc<dyn Reload>>>>,
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let usages: Vec<String> = self.all().iter().map(|h| h.usage().to_string()).collect();
        f.debug_struct("Reloader").field("usages", &usages).finish()
    }
}

impl Reloader {
    /// Adds a holder to reload.
    pub fn register(&self, holder: Arc<dyn Reload>) {
        self.holders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(holder);
    }

    /// Forgets the holders of `usage` (a channel or destination stopped or restarted by a
    /// configuration reload).
    pub fn remove(&self, usage: &str) {
        self.holders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|holder| holder.usage() != usage);
    }

    fn all(&self) -> Vec<Arc<dyn Reload>> {
        self.holders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the files of every holder; logs each outcome and returns how many failed
    /// (those keep their old configuration).
    pub fn reload_all(&self) -> usize {
        let mut failed = 0;
        for holder in self.all() {
            match holder.reload() {
                Ok(()) => {
                    let days = holder
                        .certificate()
                        .map(|c| c.days_left(super::files::now_unix()));
                    info!(usage = holder.usage(), days_left = ?days, "TLS certificates reloaded");
                }
                Err(error) => {
                    failed += 1;
                    warn!(usage = holder.usage(), %error, "TLS reload failed: the previous certificates stay in use");
                }
            }
        }
        failed
    }

    /// The own certificates in force, by use.
    pub fn certificates(&self) -> Vec<CertificateStatus> {
        self.all()
            .iter()
            .filter_map(|h| {
                h.certificate().map(|info| CertificateStatus {
                    usage: h.usage().to_string(),
                    info,
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn ok_reload_swaps_and_err_keeps_the_old_one() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&calls);
        let holder = Arc::new(
            Reloadable::load(
                "inbound/test",
                Box::new(move || {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    if n == 2 {
                        Err(TlsError::NoSystemRoots)
                    } else {
                        Ok((n, None))
                    }
                }),
            )
            .unwrap(),
        );
        let held_by_a_connection = holder.current();
        let reloader = Reloader::default();
        reloader.register(holder.clone());
        assert_eq!(reloader.reload_all(), 0);
        assert_eq!(*holder.current(), 1);
        assert_eq!(*held_by_a_connection, 0);
        assert_eq!(reloader.reload_all(), 1);
        assert_eq!(*holder.current(), 1, "a failed reload keeps the old one");
    }
}
