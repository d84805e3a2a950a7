//! Which process owns a store's intake log: the one holding an exclusive lock (`flock`) on
//! `<folder>/lock`. Only the owner recovers the log or appends to it.
//!
//! Without it, a command that opens the store for writing beside the running daemon
//! (`ordobridge replay`, `ordobridge prune`) ran recovery on the daemon's live segments: it
//! copied their records into the journal and deleted the files the daemon was still
//! appending to, so that what the daemon acknowledged next lived in deleted files only.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::store::StoreError;

/// How long a process that needs the log (the daemon, a migration) waits for another to let
/// it go: a command holds it only while it copies what a crash left behind.
const WAIT_FOR_OWNER: Duration = if cfg!(test) {
    Duration::from_secs(1)
} else {
    Duration::from_secs(10)
};
/// How often it tries meanwhile.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// The lock of an intake log, held for as long as this value lives.
#[derive(Debug)]
pub(in crate::store) struct Owner {
    _file: File,
}

/// Takes the ownership of the intake log of the store at `path` (creating its folder and
/// lock file if needed). With `required` (the daemon with the log enabled, a migration), a log
/// another process owns is waited for ([`WAIT_FOR_OWNER`]), then an error. Without (a command
/// beside the daemon), it is `Ok(None)` at once: leave it alone.
pub(in crate::store) fn own(path: &Path, required: bool) -> Result<Option<Owner>, StoreError> {
    let folder = super::folder_of(path);
    let file = folder.join("lock");
    let io_error = super::io_error_of(path);
    std::fs::create_dir_all(&folder)
        .map_err(|source| io_error(&folder, "create the folder", source))?;
    // Read-only is enough for `flock`: a lock file created by another user (a command run as
    // root) stays usable by the daemon's.
    let lock = match File::open(&file) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&file),
        opened => opened,
    }
    .map_err(|source| io_error(&file, "open the lock file", source))?;
    let deadline = Instant::now() + WAIT_FOR_OWNER;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(Some(Owner { _file: lock })),
            Err(TryLockError::WouldBlock) if !required => {
                tracing::debug!(store = %path.display(), "intake log owned by another process (the daemon): left alone");
                return Ok(None);
            }
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(RETRY_EVERY);
            }
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::IntakeLogInUse {
                    path: path.to_path_buf(),
                    file,
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(io_error(&file, "lock the lock file", source));
            }
        }
    }
}
