//! File-system steps shared by the inbox and the outbox: durable moves that never overwrite.
//!
//! Only ordobridge is expected to write into the archive, error and outbox folders it owns;
//! "never overwrite" is a check before the rename, not an atomic no-replace rename (that needs
//! `renameat2`, which SMB and NFS mounts do not all offer).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use tracing::debug;

/// How many suffixed names are tried before giving up on finding a free one.
pub(crate) const MAX_NAME_TRIES: u32 = 10_000;

/// Flushes a folder's entries (a rename or a new file) to disk.
///
/// Best effort: some network file systems refuse `fsync` on a folder; they also make renames
/// durable on the server before answering, so the failure is logged and ignored.
pub(crate) fn sync_dir(dir: &Path) {
    let result = File::open(dir).and_then(|folder| folder.sync_all());
    if let Err(error) = result {
        debug!(folder = %dir.display(), %error, "cannot fsync folder");
    }
}

/// Whether nothing (file, folder or link) exists at `path`; other errors than "not found"
/// (permission denied on the folder) are returned, so a name is never taken on a guess.
pub(crate) fn is_free(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(false),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(error),
    }
}

/// `NAME` for `n == 0`, `NAME.n` otherwise: the suffix style of the archive and error folders,
/// which keeps the original name (extension included) readable at the start.
pub(crate) fn appended(name: &OsStr, n: u32) -> OsString {
    let mut out = name.to_os_string();
    if n > 0 {
        out.push(format!(".{n}"));
    }
    out
}

/// The first free path `dir/NAME`, `dir/NAME.1`, `dir/NAME.2`, …
pub(crate) fn free_appended(dir: &Path, name: &OsStr) -> io::Result<PathBuf> {
    for n in 0..MAX_NAME_TRIES {
        let candidate = dir.join(appended(name, n));
        if is_free(&candidate)? {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free name after {MAX_NAME_TRIES} tries"),
    ))
}

/// Moves `src` to `dst` (which the caller checked is free) and makes the move durable.
///
/// A rename when both are on the same file system; across file systems (`EXDEV`) a copy to a
/// hidden `.NAME.part` beside `dst`, fsync, rename to `dst`, then removal of `src`. A crash in
/// the middle leaves `src` in place, so the file is offered again rather than lost.
pub(crate) fn move_file(src: &Path, dst: &Path) -> io::Result<()> {
    match fs::rename(src, dst) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::CrossesDevices => copy_then_remove(src, dst)?,
        Err(error) => return Err(error),
    }
    if let Some(parent) = dst.parent() {
        sync_dir(parent);
    }
    if let Some(parent) = src.parent() {
        sync_dir(parent);
    }
    Ok(())
}

fn copy_then_remove(src: &Path, dst: &Path) -> io::Result<()> {
    let dir = dst.parent().unwrap_or(Path::new("."));
    let mut part_name = OsString::from(".");
    part_name.push(dst.file_name().unwrap_or(OsStr::new("file")));
    part_name.push(".part");
    let part = dir.join(part_name);
    let copied = fs::copy(src, &part)
        .and_then(|_| File::open(&part))
        .and_then(|file| file.sync_all())
        .and_then(|()| fs::rename(&part, dst));
    if let Err(error) = copied {
        let _ = fs::remove_file(&part);
        return Err(error);
    }
    sync_dir(dir);
    fs::remove_file(src)
}

/// Writes `bytes` to `path` (created or truncated) and fsyncs it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::first("A.HPR", 0, "A.HPR")]
    #[case::second("A.HPR", 1, "A.HPR.1")]
    #[case::no_extension("A", 12, "A.12")]
    fn ok_appended(#[case] name: &str, #[case] n: u32, #[case] expected: &str) {
        assert_eq!(appended(OsStr::new(name), n), OsString::from(expected));
    }

    #[test]
    fn ok_free_appended_skips_taken_names() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            free_appended(dir.path(), OsStr::new("a.hl7")).unwrap(),
            dir.path().join("a.hl7")
        );
        fs::write(dir.path().join("a.hl7"), b"x").unwrap();
        fs::create_dir(dir.path().join("a.hl7.1")).unwrap();
        assert_eq!(
            free_appended(dir.path(), OsStr::new("a.hl7")).unwrap(),
            dir.path().join("a.hl7.2")
        );
    }

    #[test]
    fn ok_move_file_across_folders() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.hl7");
        fs::create_dir(dir.path().join("out")).unwrap();
        let dst = dir.path().join("out").join("in.hl7");
        fs::write(&src, b"MSH|").unwrap();
        move_file(&src, &dst).unwrap();
        assert!(!src.exists());
        assert_eq!(fs::read(&dst).unwrap(), b"MSH|");
    }

    #[test]
    fn ok_copy_then_remove_leaves_no_part_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.hl7");
        fs::create_dir(dir.path().join("out")).unwrap();
        let dst = dir.path().join("out").join("in.hl7");
        fs::write(&src, b"MSH|").unwrap();
        copy_then_remove(&src, &dst).unwrap();
        assert!(!src.exists());
        assert_eq!(fs::read(&dst).unwrap(), b"MSH|");
        let names: Vec<_> = fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("in.hl7")]);
    }

    #[test]
    fn err_move_file_missing_source() {
        let dir = tempfile::tempdir().unwrap();
        let err = move_file(&dir.path().join("nope"), &dir.path().join("dst")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
