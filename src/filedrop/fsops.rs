//! File-system steps shared by the inbox and the outbox: durable moves that never overwrite,
//! and opening or creating files without ever following a symbolic link.
//!
//! Only ordobridge is expected to write into the archive, error and outbox folders it owns;
//! "never overwrite" is a check before the rename, not an atomic no-replace rename (that needs
//! `renameat2`, which SMB and NFS mounts do not all offer).
//!
//! # Symbolic links
//!
//! Anybody who can write into a shared folder can plant a link there, to the store file or to
//! anything the daemon may write. So every file ordobridge creates is created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` ([`create_new`]: a link or file already at the name makes
//! the creation fail, nothing is truncated), every file it reads is opened with `O_NOFOLLOW`
//! and checked to be a regular file on the opened descriptor ([`open_regular`]), and every
//! folder it moves files into must be a real folder, not a link ([`real_dir`]). A rename onto
//! a name where a link appeared in the meantime replaces the link itself, never its target.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
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
    move_unsynced(src, dst)?;
    if let Some(parent) = dst.parent() {
        sync_dir(parent);
    }
    if let Some(parent) = src.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// [`move_file`] without its final folder fsyncs, for a batch of moves whose caller fsyncs
/// each folder once after the last one. A move across file systems still fsyncs its copy.
pub(crate) fn move_unsynced(src: &Path, dst: &Path) -> io::Result<()> {
    match fs::rename(src, dst) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::CrossesDevices => copy_then_remove(src, dst),
        Err(error) => Err(error),
    }
}

fn copy_then_remove(src: &Path, dst: &Path) -> io::Result<()> {
    let dir = dst.parent().unwrap_or(Path::new("."));
    let mut part_name = OsString::from(".");
    part_name.push(dst.file_name().unwrap_or(OsStr::new("file")));
    part_name.push(".part");
    let part = dir.join(part_name);
    // A `.part` left by a crash (or anything planted there) is removed, never written through:
    // unlinking a link removes the link, not its target.
    match fs::remove_file(&part) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let copied = copy_no_follow(src, &part).and_then(|()| fs::rename(&part, dst));
    if let Err(error) = copied {
        let _ = fs::remove_file(&part);
        return Err(error);
    }
    sync_dir(dir);
    fs::remove_file(src)
}

/// Copies `src` to the new name `to`: a link is copied as a link (same target, never read
/// through), a regular file byte for byte and fsynced.
fn copy_no_follow(src: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(src)?.file_type().is_symlink() {
        return std::os::unix::fs::symlink(fs::read_link(src)?, to);
    }
    let mut from = open_regular(src)?;
    let mut file = create_new(to)?;
    io::copy(&mut from, &mut file)?;
    file.sync_all()
}

/// Opens a file for reading without following a link (`O_NOFOLLOW`; `O_NONBLOCK` so that a
/// FIFO swapped in cannot hang the open) and checks, on the opened descriptor, that it is a
/// regular file: what is read is what was checked, whatever happens to the name meanwhile.
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| link_refused(path, error))?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// Creates a new file for writing, refusing any existing name (`O_EXCL`), a link included
/// (`O_NOFOLLOW`): nothing is ever truncated or written through a planted link.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|error| {
            if error.kind() == io::ErrorKind::AlreadyExists {
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "`{}` appeared while ordobridge was about to create it (another writer, or a planted file or link); it was left alone: find out who writes into this folder",
                        path.display()
                    ),
                )
            } else {
                error
            }
        })
}

/// Writes `bytes` to the new file `path` (see [`create_new`]) and fsyncs it.
pub(crate) fn write_new_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = create_new(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes sure `dir` is a real folder, creating it (and its parents) when missing: a
/// symbolic link there (to a folder or not) is refused, so files are never moved through it.
pub(crate) fn real_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => fs::create_dir_all(dir)?,
        Err(error) => return Err(error),
        Ok(_) => {}
    }
    check_not_link(dir)
}

/// Refuses a folder that is a symbolic link or not a folder at all; a missing one passes (the
/// write that follows says it is missing).
pub(crate) fn check_not_link(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::other(format!(
            "`{}` is a symbolic link; ordobridge never writes through a link in a shared folder: replace it with a real folder, or configure the real path",
            dir.display()
        ))),
        Ok(meta) if !meta.is_dir() => Err(io::Error::other(format!(
            "`{}` is not a folder",
            dir.display()
        ))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
        Ok(_) => Ok(()),
    }
}

/// `ELOOP` from an `O_NOFOLLOW` open means the name is a link: say so and what to do.
fn link_refused(path: &Path, error: io::Error) -> io::Error {
    if error.raw_os_error() == Some(libc::ELOOP) {
        io::Error::other(format!(
            "`{}` is a symbolic link; ordobridge never reads through a link in a shared folder",
            path.display()
        ))
    } else {
        error
    }
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
    fn ok_copy_then_remove_moves_a_link_as_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secret.db");
        fs::write(&target, b"store").unwrap();
        let src = dir.path().join("in.hl7");
        std::os::unix::fs::symlink(&target, &src).unwrap();
        fs::create_dir(dir.path().join("out")).unwrap();
        let dst = dir.path().join("out").join("in.hl7");
        copy_then_remove(&src, &dst).unwrap();
        assert_eq!(fs::read_link(&dst).unwrap(), target);
        assert!(fs::symlink_metadata(&src).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"store");
    }

    #[test]
    fn ok_copy_then_remove_replaces_a_planted_part_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secret.db");
        fs::write(&target, b"store").unwrap();
        let src = dir.path().join("in.hl7");
        fs::write(&src, b"MSH|").unwrap();
        fs::create_dir(dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("out").join(".in.hl7.part")).unwrap();
        let dst = dir.path().join("out").join("in.hl7");
        copy_then_remove(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"MSH|");
        assert_eq!(fs::read(&target).unwrap(), b"store");
    }

    #[test]
    fn err_create_new_refuses_a_link_and_leaves_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secret.db");
        fs::write(&target, b"store").unwrap();
        let link = dir.path().join("a.tmp");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_new_synced(&link, b"overwritten").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            err.to_string(),
            format!(
                "`{}` appeared while ordobridge was about to create it (another writer, or a planted file or link); it was left alone: find out who writes into this folder",
                link.display()
            )
        );
        assert_eq!(fs::read(&target).unwrap(), b"store");
        // A dangling link too: O_EXCL never creates the target.
        let dangling = dir.path().join("b.tmp");
        std::os::unix::fs::symlink(dir.path().join("created"), &dangling).unwrap();
        assert!(write_new_synced(&dangling, b"x").is_err());
        assert!(!dir.path().join("created").exists());
    }

    #[test]
    fn ok_open_regular_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.hl7");
        fs::write(&path, b"MSH|").unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut open_regular(&path).unwrap(), &mut text).unwrap();
        assert_eq!(text, "MSH|");
    }

    #[rstest]
    #[case::link_to_file(true)]
    #[case::link_to_folder(false)]
    fn err_open_regular_refuses_a_link(#[case] to_file: bool) {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        if to_file {
            fs::write(&target, b"store").unwrap();
        } else {
            fs::create_dir(&target).unwrap();
        }
        let link = dir.path().join("a.hl7");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(
            open_regular(&link).unwrap_err().to_string(),
            format!(
                "`{}` is a symbolic link; ordobridge never reads through a link in a shared folder",
                link.display()
            )
        );
    }

    #[test]
    fn err_open_regular_refuses_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            open_regular(dir.path()).unwrap_err().to_string(),
            format!("`{}` is not a regular file", dir.path().display())
        );
    }

    #[test]
    fn ok_real_dir_creates_a_missing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("archive").join("2026-12-01");
        real_dir(&day).unwrap();
        assert!(day.is_dir());
        real_dir(&day).unwrap();
    }

    #[test]
    fn err_real_dir_refuses_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let day = dir.path().join("2026-12-01");
        std::os::unix::fs::symlink(&elsewhere, &day).unwrap();
        assert_eq!(
            real_dir(&day).unwrap_err().to_string(),
            format!(
                "`{}` is a symbolic link; ordobridge never writes through a link in a shared folder: replace it with a real folder, or configure the real path",
                day.display()
            )
        );
    }

    #[test]
    fn err_move_file_missing_source() {
        let dir = tempfile::tempdir().unwrap();
        let err = move_file(&dir.path().join("nope"), &dir.path().join("dst")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
