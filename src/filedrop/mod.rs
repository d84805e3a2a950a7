//! Shared-folder file drops: files in (inbox) and files out (outbox).
//!
//! Many French EHRs and lab systems exchange HL7v2 and HPRIM Santé files on SMB/NFS shares.
//! inotify does not see what other machines write on such mounts, so the inbox polls.
//!
//! This module moves files and knows nothing of HL7, HPRIM, the store or mappings: the
//! caller's [`FileHandler`] decides what a file means and commits it (the engine journals it),
//! like [`crate::mllp::FrameHandler`] does for frames.
//!
//! - [`inbox`]: poll a folder, take a file once it is ready (witness file or stable size and
//!   mtime), hand it to the handler, then archive it (or delete it) on success or move it to
//!   `error/` with a `NAME.reason` beside it. In mtime then name order, one file at a time or,
//!   for a handler that commits several in one transaction, a batch at a time.
//! - [`outbox`]: write a file so that a reader polling the folder never sees it partial:
//!   `NAME.tmp`, fsync, rename to `NAME`, fsync the folder, then the optional witness file.
//! - [`companion`]: the queued payload of a file with a companion (a document beside an HPRIM
//!   message), written data file first, companion second, witness last.
//!
//! Symbolic links: anybody who can write into a share can plant a link there, pointing at the
//! store file or at anything the daemon may read or write. So ordobridge never follows one in
//! a shared folder: an inbox moves a link (the link itself) to `error/` unread, files are read
//! with `O_NOFOLLOW` and checked on the opened descriptor, every file it creates is created new
//! with `O_EXCL | O_NOFOLLOW` (temporary names included), and the folders it moves files into
//! (archive, day folders, error, outbox) must not be links. See `fsops`.
//!
//! Crash safety: nothing in memory decides whether a file was processed. A file stays in the
//! inbox until the handler has committed it and it has been moved; after a crash between the
//! commit and the move, the same file is offered again and the handler (which must be
//! idempotent) recognizes it.

pub mod companion;
mod fsops;
pub mod inbox;
pub mod outbox;

pub use inbox::{
    AfterSuccess, FileHandler, FileRejection, InboxError, InboxFile, InboxSettings, InboxStats,
    InboxStatsSnapshot, Readiness, run_inbox,
};
pub use outbox::{NameVars, Outbox, OutboxError, OutboxSettings};
