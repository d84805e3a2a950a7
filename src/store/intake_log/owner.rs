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

use crate::store::StoreError;

/// The lock of an intake log, held for as long as this value lives.
#[derive(Debug)]
pub(in crate::store) struct Owner {
    /// `None`: the log has no folder (it never ran), so there is nothing to own.
    _file: Option<File>,
}

/// Takes the ownership of the intake log of the store at `path`. With `create` (the log is
/// enabled), its folder is created, and a log owned by another process is an error. Without,
/// a log owned by another process is `Ok(None)`: leave it alone.
pub(in crate::store) fn own(path: &Path, create: bool) -> Result<Option<Owner>, StoreError> {
    let folder = super::folder_of(path);
    let file = folder.join("lock");
    let io_error = |file: &Path, action, source| StoreError::IntakeLog {
        path: path.to_path_buf(),
        file: file.to_path_buf(),
        action,
        source,
    };
    if create {
        std::fs::create_dir_all(&folder)
            .map_err(|source| io_error(&folder, "create the folder", source))?;
    }
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&file);
    let lock = match opened {
        Ok(lock) => lock,
        Err(error) if !create && error.kind() == io::ErrorKind::NotFound => {
            return Ok(Some(Owner { _file: None }));
        }
        Err(source) => return Err(io_error(&file, "open the lock file", source)),
    };
    match lock.try_lock() {
        Ok(()) => Ok(Some(Owner { _file: Some(lock) })),
        Err(TryLockError::WouldBlock) if create => Err(StoreError::IntakeLogInUse {
            path: path.to_path_buf(),
            file,
        }),
        Err(TryLockError::WouldBlock) => {
            tracing::debug!(store = %path.display(), "intake log owned by another process (the daemon): left alone");
            Ok(None)
        }
        Err(TryLockError::Error(source)) => Err(io_error(&file, "lock the lock file", source)),
    }
}
