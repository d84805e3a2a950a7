//! `ordobridge backup`: a consistent copy of a live store through SQLite's online backup API
//! (pages copied in steps while the daemon keeps writing; the copy is the database as of the
//! end of the backup), checked with `PRAGMA integrity_check` before it is kept.
//!
//! With the intake log, messages acknowledged a moment ago may not be journal rows yet: its
//! segments are copied first, into `<backup>-intake/`, then the database. A restore puts both
//! back side by side; the first start copies into the journal what the segments hold beyond
//! the copy's applied mark (records already in the copied database are skipped).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("`{}` already exists: choose a new file name (a backup never overwrites)", .0.display())]
    Exists(PathBuf),
    #[error("cannot open the store `{}`: {source}", path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot write the backup `{}`: {source}", path.display())]
    Destination {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the backup `{}` failed its integrity check ({report}); it was removed: run the backup again", path.display())]
    Integrity { path: PathBuf, report: String },
    #[error("cannot copy the intake log segment `{}` into `{}`: {source}; nothing was kept: run the backup again", from.display(), to.display())]
    IntakeLog {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a finished backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Pages copied (× page size = the file size).
    pub pages: i64,
    /// Journal rows in the copy.
    pub journal_rows: i64,
    /// Intake log segments copied beside it (`<backup>-intake/`).
    pub intake_segments: usize,
}

/// Copies the store at `source` into the new file `dest` (refused if it exists), then checks
/// the copy. On any failure, nothing is left at `dest`.
pub fn backup(source: &Path, dest: &Path) -> Result<BackupReport, BackupError> {
    let intake_dest = super::intake_log::folder_of(dest);
    for taken in [dest, intake_dest.as_path()] {
        if taken.exists() || taken.symlink_metadata().is_ok() {
            return Err(BackupError::Exists(taken.to_path_buf()));
        }
    }
    let result = copy_intake_log(source, &intake_dest).and_then(|intake_segments| {
        copy_and_check(source, dest).map(|report| BackupReport {
            intake_segments,
            ..report
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
        let _ = std::fs::remove_dir_all(&intake_dest);
    }
    result
}

/// Copies the segments of the intake log of `source` into `dest` (created only if there are
/// any); how many. A segment deleted meanwhile was wholly copied into the journal, which the
/// database copy (made after) holds.
fn copy_intake_log(source: &Path, dest: &Path) -> Result<usize, BackupError> {
    let from = super::intake_log::folder_of(source);
    let error = |from: &Path, source| BackupError::IntakeLog {
        from: from.to_path_buf(),
        to: dest.to_path_buf(),
        source,
    };
    let segments = super::intake_log::segments(&from).map_err(|source| error(&from, source))?;
    let mut copied = 0;
    for (_, segment) in segments {
        if copied == 0 {
            std::fs::create_dir_all(dest).map_err(|source| error(&segment, source))?;
        }
        let name = segment.file_name().unwrap_or_default();
        match std::fs::copy(&segment, dest.join(name)) {
            Ok(_) => copied += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(error(&segment, source)),
        }
    }
    Ok(copied)
}

fn copy_and_check(source: &Path, dest: &Path) -> Result<BackupReport, BackupError> {
    let from = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(
        |source_error| BackupError::Source {
            path: source.to_path_buf(),
            source: source_error,
        },
    )?;
    let dest_error = |source| BackupError::Destination {
        path: dest.to_path_buf(),
        source,
    };
    let mut to = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )
    .map_err(dest_error)?;
    {
        let backup = rusqlite::backup::Backup::new(&from, &mut to).map_err(dest_error)?;
        // 256 pages (1 MiB) a step, a short pause between steps: the writer of the live daemon
        // is never locked out for long; a write during the backup restarts the copy of what
        // changed, so the result is consistent.
        backup
            .run_to_completion(256, Duration::from_millis(5), None)
            .map_err(dest_error)?;
    }
    let report: String = to
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(dest_error)?;
    if report != "ok" {
        return Err(BackupError::Integrity {
            path: dest.to_path_buf(),
            report,
        });
    }
    let pages = to
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .map_err(dest_error)?;
    let journal_rows = to
        .query_row("SELECT count(*) FROM journal", [], |row| row.get(0))
        .map_err(dest_error)?;
    Ok(BackupReport {
        pages,
        journal_rows,
        intake_segments: 0,
    })
}
