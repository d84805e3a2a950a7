//! The inbox: poll a shared folder, take each file once it is ready, hand it to the caller's
//! [`FileHandler`], then archive it (or delete it) or move it to `error/` with its reason.
//!
//! # Which files are taken
//!
//! - Regular files whose name matches one of the glob patterns (`*` any run, `?` one
//!   character), compared case-insensitively. Dot files, `*.tmp` and `*.part` are ignored, and
//!   so are folders (the archive and error folders may live inside the inbox).
//! - Never a symbolic link: a link (to a file or a folder) whose name matches the patterns, or
//!   is a witness name, is not read nor followed; the link itself is moved to the error folder
//!   with a `.reason` saying so (see [`crate::filedrop`] on why, and `fsops` on how files are
//!   opened: `O_NOFOLLOW`, then the opened descriptor checked to be a regular file). A link
//!   never counts as a witness.
//! - Ready only, per [`Readiness`]:
//!   - [`Readiness::Witness`]: a witness file exists beside the data file, its name being the
//!     data file's name with a configured suffix either **replacing** its extension
//!     (`NAME.OK` for `NAME.HPR`, the HPRIM Santé habit) or **appended** to it
//!     (`NAME.HPR.OK`). Both forms are accepted; suffixes are compared case-insensitively.
//!     Files ending with a witness suffix are never taken as data.
//!   - [`Readiness::StableFor`]: the size and mtime observed at successive polls have not
//!     changed for the configured age, and the mtime is at least that old. A file present at
//!     start-up is therefore taken no sooner than one age after the first poll.
//! - In order of mtime, then name, so a file's messages keep their order. A handler that
//!   can commit several files in one transaction ([`FileHandler::batch_limit`] above 1, as
//!   the daemon's file channels do) gets up to that many ready files at once (at most 4 MiB
//!   of them), still in that order.
//!
//! # What happens to a file
//!
//! The handler commits the content (a batch's files in one transaction). `Ok` → the file (and
//! its witness) moves to `archive/YYYY-MM-DD/` (local date, never overwriting: `NAME.1`,
//! `NAME.2`, …) or is deleted, the folders fsynced once per batch after the last move;
//! `Err` → `NAME.reason` is written and fsynced in the error folder, then the file (and its
//! witness) moves beside it. The archive folder, its day folders and the error folder must be
//! real folders: a symbolic link there is refused (the file stays and the error is reported),
//! and the `.reason` is created with `O_EXCL | O_NOFOLLOW`, never through a planted link. A
//! file bigger than `max_file_bytes` goes to the error folder without being read.
//!
//! Failures to list, read or move are logged with the channel and file name (never the
//! content), counted in [`InboxStats`] with the last error text, and retried at the next poll.
//! A file that could not be moved after its commit is offered to the handler again, which is
//! why the handler must be idempotent; nothing in memory marks a file as done.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::fsops;
use crate::text::error_chain;

/// Where and how one channel takes files from a shared folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxSettings {
    /// The folder polled; other machines write into it.
    pub folder: PathBuf,
    /// Globs such as `*.hl7` or `*.HPR`, matched case-insensitively against file names.
    pub patterns: Vec<String>,
    /// Pause between two scans; network mounts give no change notifications.
    pub poll_interval: Duration,
    /// When a file counts as completely written.
    pub readiness: Readiness,
    /// What becomes of a file once the handler has committed it.
    pub after_success: AfterSuccess,
    /// Where refused files go, each with a `NAME.reason` beside it.
    pub error_folder: PathBuf,
    /// Files bigger than this go to the error folder unread, so one huge file cannot exhaust
    /// memory.
    pub max_file_bytes: u64,
}

/// How the inbox decides that a sender has finished writing a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The sender writes an empty witness file (`NAME.OK`) after the data file; the data file
    /// is taken once its witness exists. See the module docs for the accepted witness names.
    Witness {
        /// Suffixes such as `.OK`, compared case-insensitively.
        suffixes: Vec<String>,
    },
    /// The sender gives no signal: a file is taken once its size and mtime have not changed
    /// across polls for this long and its mtime is at least this old.
    StableFor(Duration),
}

/// What becomes of a committed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterSuccess {
    /// Moved to `folder/YYYY-MM-DD/` (local date), the default: nothing is deleted.
    Archive {
        /// The archive root; one sub-folder per day is created as needed.
        folder: PathBuf,
    },
    /// Deleted, for sites that archive elsewhere.
    Delete,
}

impl InboxSettings {
    /// Checks the settings so a configuration mistake is reported at start, not at the first
    /// file; [`run_inbox`] calls it too.
    pub fn validate(&self) -> Result<(), InboxError> {
        if self.patterns.is_empty() {
            return Err(InboxError::NoPatterns);
        }
        if let Some(index) = self.patterns.iter().position(String::is_empty) {
            return Err(InboxError::EmptyPattern { index });
        }
        if self.poll_interval.is_zero() {
            return Err(InboxError::ZeroPollInterval);
        }
        if self.max_file_bytes == 0 {
            return Err(InboxError::ZeroMaxFileBytes);
        }
        if let Readiness::Witness { suffixes } = &self.readiness {
            if suffixes.is_empty() {
                return Err(InboxError::NoWitnessSuffix);
            }
            if let Some(index) = suffixes.iter().position(|s| s.is_empty()) {
                return Err(InboxError::EmptyWitnessSuffix { index });
            }
        }
        if self.error_folder == self.folder {
            return Err(InboxError::SameFolder {
                what: "error",
                folder: self.folder.clone(),
            });
        }
        if let AfterSuccess::Archive { folder } = &self.after_success
            && *folder == self.folder
        {
            return Err(InboxError::SameFolder {
                what: "archive",
                folder: self.folder.clone(),
            });
        }
        Ok(())
    }
}

/// One ready file, read whole, offered to the handler.
#[derive(Debug, Clone)]
pub struct InboxFile {
    /// Where the file is now (in the inbox folder).
    pub path: PathBuf,
    /// The file name, for logs and journal metadata (lossily decoded if not UTF-8).
    pub name: String,
    /// The whole content, at most `max_file_bytes`.
    pub bytes: Bytes,
    /// The mtime observed when the file was found ready.
    pub modified: SystemTime,
}

/// Why the handler refuses a file: what and where, written to `NAME.reason` in the error
/// folder for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRejection {
    /// One or more lines; a final newline is added when written.
    pub reason: String,
    /// The failure is on our side and temporary (the store cannot commit): leave the file
    /// where it is and offer it again at the next poll, instead of moving it to `error/`.
    pub retry: bool,
}

impl FileRejection {
    /// A rejection with this reason: the file goes to `error/`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retry: false,
        }
    }

    /// A temporary failure: the file stays in the inbox and later files wait for it (order).
    pub fn retry_later(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retry: true,
        }
    }
}

/// What the inbox does with each ready file; implemented by the wiring (journal).
pub trait FileHandler: Send + Sync + 'static {
    /// Commits the file's content (the engine journals it). Ok → the file is archived/deleted;
    /// Err(reason) → moved to error/ with NAME.reason. Must be idempotent: after a crash between
    /// commit and move, the same file is offered again (the engine dedupes by content hash).
    fn handle(&self, file: InboxFile) -> impl Future<Output = Result<(), FileRejection>> + Send;

    /// How many ready files the inbox may hand over at once to [`FileHandler::handle_batch`];
    /// 1 (the default): one file at a time through [`FileHandler::handle`].
    fn batch_limit(&self) -> usize {
        1
    }

    /// Commits several ready files, in order, and answers for each, in the same order (what
    /// [`FileHandler::handle`] answers for one). A handler that commits them together (one
    /// transaction) lets the inbox archive them together too (one folder fsync per batch).
    /// Called only when [`FileHandler::batch_limit`] is more than 1; the default handles the
    /// files one by one.
    fn handle_batch(
        &self,
        files: Vec<InboxFile>,
    ) -> impl Future<Output = Vec<Result<(), FileRejection>>> + Send {
        async move {
            let mut answers = Vec::with_capacity(files.len());
            for file in files {
                answers.push(self.handle(file).await);
            }
            answers
        }
    }
}

/// At most this many bytes of files are read for one batch (a single bigger file is still
/// taken alone), so batching never holds more than this in memory beyond one file.
const BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// Counters of one inbox, shared with whoever reports metrics; relaxed atomics.
#[derive(Debug, Default)]
pub struct InboxStats {
    /// Scans of the folder started.
    pub scans: AtomicU64,
    /// Files read and offered to the handler.
    pub files_taken: AtomicU64,
    /// Files moved to the archive after their commit.
    pub files_archived: AtomicU64,
    /// Files deleted after their commit.
    pub files_deleted: AtomicU64,
    /// Files moved to the error folder (by the handler, for their size, or a handler panic).
    pub files_rejected: AtomicU64,
    /// Scans that failed (folder missing, unreadable, …); retried at the next poll.
    pub scan_errors: AtomicU64,
    /// Files that could not be read, archived, deleted or moved to the error folder; they
    /// stay in the inbox and are retried at the next poll.
    pub file_errors: AtomicU64,
    /// The text of the last scan or file error, with its causes.
    pub last_error: Mutex<Option<String>>,
}

/// A plain copy of [`InboxStats`] at one instant, for reports and tests; the fields mean what
/// the same fields of [`InboxStats`] mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxStatsSnapshot {
    pub scans: u64,
    pub files_taken: u64,
    pub files_archived: u64,
    pub files_deleted: u64,
    pub files_rejected: u64,
    pub scan_errors: u64,
    pub file_errors: u64,
    pub last_error: Option<String>,
}

impl InboxStats {
    /// Reads every counter (each one atomically, not all together).
    pub fn snapshot(&self) -> InboxStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        InboxStatsSnapshot {
            scans: get(&self.scans),
            files_taken: get(&self.files_taken),
            files_archived: get(&self.files_archived),
            files_deleted: get(&self.files_deleted),
            files_rejected: get(&self.files_rejected),
            scan_errors: get(&self.scan_errors),
            file_errors: get(&self.file_errors),
            last_error: self.last_error(),
        }
    }

    /// The text of the last error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, counter: &AtomicU64, error: &InboxError) {
        bump(counter);
        // Held only to swap a string.
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error_chain(error));
    }
}

/// Everything that can go wrong in an inbox: settings refused at start, and I/O failures that
/// are logged, counted and retried at the next poll.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// No pattern: the inbox would take nothing.
    #[error("inbox settings: no file pattern given")]
    NoPatterns,
    /// A pattern is the empty string, which matches no file name.
    #[error("inbox settings: pattern {index} is empty")]
    EmptyPattern {
        /// Its position in the list, from 0.
        index: usize,
    },
    /// A zero poll interval would spin on the folder.
    #[error("inbox settings: poll_interval must be more than zero")]
    ZeroPollInterval,
    /// A zero size limit would refuse every file.
    #[error("inbox settings: max_file_bytes must be more than zero")]
    ZeroMaxFileBytes,
    /// Witness readiness without a suffix would take nothing.
    #[error("inbox settings: witness readiness needs at least one suffix")]
    NoWitnessSuffix,
    /// An empty witness suffix would make every data file its own witness.
    #[error("inbox settings: witness suffix {index} is empty")]
    EmptyWitnessSuffix {
        /// Its position in the list, from 0.
        index: usize,
    },
    /// The archive or error folder is the inbox itself: files would be taken again and again.
    #[error("inbox settings: the {what} folder `{}` is the inbox folder itself", folder.display())]
    SameFolder {
        /// `archive` or `error`.
        what: &'static str,
        /// The folder.
        folder: PathBuf,
    },
    /// The inbox folder cannot be listed (missing, permission denied, mount gone).
    #[error("cannot list inbox folder `{}`", folder.display())]
    List {
        /// The inbox folder.
        folder: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A ready file cannot be read.
    #[error("cannot read `{}`", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A committed file (or its witness) cannot be moved to the archive; it will be offered
    /// again.
    #[error("cannot archive `{}` into `{}`", file.display(), to.display())]
    Archive {
        /// The file.
        file: PathBuf,
        /// The archive folder of the day.
        to: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A committed file (or its witness) cannot be deleted; it will be offered again.
    #[error("cannot delete `{}`", file.display())]
    Delete {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A refused file (or its reason, or its witness) cannot be moved to the error folder; it
    /// will be offered again.
    #[error("cannot move refused `{}` into `{}`", file.display(), to.display())]
    Reject {
        /// The file.
        file: PathBuf,
        /// The error folder.
        to: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A blocking file-system task was cancelled or panicked.
    #[error("file-system task failed on `{}`", path.display())]
    Task {
        /// The folder or file the task worked on.
        path: PathBuf,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Polls `settings.folder` until `shutdown` is cancelled, handing each ready file to `handler`
/// one at a time; the file in flight is finished (handled and moved) before it returns.
///
/// Never fails after start: folder and file errors are logged, counted in `stats` and retried
/// at the next poll. Invalid settings are logged and recorded as the last error, and the inbox
/// does not start (call [`InboxSettings::validate`] at configuration time to catch them).
pub async fn run_inbox<H: FileHandler>(
    channel: &str,
    settings: InboxSettings,
    handler: Arc<H>,
    stats: Arc<InboxStats>,
    shutdown: CancellationToken,
) {
    if let Err(invalid) = settings.validate() {
        error!(channel, error = %invalid, "inbox not started");
        *stats
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(invalid.to_string());
        return;
    }
    let folder = settings.folder.clone();
    info!(channel, folder = %folder.display(), "inbox started");
    let mut inbox = Inbox {
        channel: channel.to_owned(),
        rules: Arc::new(Rules::new(&settings)),
        settings: Arc::new(settings),
        handler,
        stats,
        observed: HashMap::new(),
        failing_scan: None,
    };
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        inbox.poll(&shutdown).await;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(inbox.settings.poll_interval) => {}
        }
    }
    info!(channel, folder = %folder.display(), "inbox stopped");
}

/// The state of one running inbox.
struct Inbox<H> {
    channel: String,
    settings: Arc<InboxSettings>,
    rules: Arc<Rules>,
    handler: Arc<H>,
    stats: Arc<InboxStats>,
    /// Last (size, mtime) seen per file and since when, for [`Readiness::StableFor`]. Only
    /// delays files: losing it in a crash makes a file wait one more age, never skips it.
    observed: HashMap<OsString, Observation>,
    /// The error of the failing scans, while they fail; logged once, not at every poll.
    failing_scan: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observation {
    size: u64,
    modified: SystemTime,
    since: Instant,
}

/// A regular file or a symbolic link seen in a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: OsString,
    size: u64,
    modified: SystemTime,
    /// A symbolic link (its own size and mtime): never read, moved to the error folder.
    link: bool,
}

/// A file found ready in a scan, with its witness if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ready {
    entry: Entry,
    witness: Option<OsString>,
}

/// The name rules, lowercased once.
#[derive(Debug)]
struct Rules {
    patterns: Vec<Vec<char>>,
    /// Lowercased witness suffixes; empty in stability mode.
    witness_suffixes: Vec<String>,
    /// Names of the archive and error folders when they live in the inbox: left alone even
    /// when they are links (the move into them reports that).
    own_folders: Vec<OsString>,
}

impl Rules {
    fn new(settings: &InboxSettings) -> Self {
        let witness_suffixes = match &settings.readiness {
            Readiness::Witness { suffixes } => suffixes.iter().map(|s| s.to_lowercase()).collect(),
            Readiness::StableFor(_) => Vec::new(),
        };
        let archive = match &settings.after_success {
            AfterSuccess::Archive { folder } => Some(folder.as_path()),
            AfterSuccess::Delete => None,
        };
        let own_folders = [Some(settings.error_folder.as_path()), archive]
            .into_iter()
            .flatten()
            .filter(|folder| folder.parent() == Some(settings.folder.as_path()))
            .filter_map(|folder| folder.file_name().map(OsStr::to_os_string))
            .collect();
        Self {
            patterns: settings
                .patterns
                .iter()
                .map(|p| p.to_lowercase().chars().collect())
                .collect(),
            witness_suffixes,
            own_folders,
        }
    }

    /// Dot files and files still being written by a sender (`*.tmp`, `*.part`).
    fn is_ignored(lower: &str) -> bool {
        lower.starts_with('.') || lower.ends_with(".tmp") || lower.ends_with(".part")
    }

    fn is_witness(&self, lower: &str) -> bool {
        self.witness_suffixes.iter().any(|s| lower.ends_with(s))
    }

    /// Whether a (lowercased) name is a data file to take.
    fn is_data(&self, lower: &str) -> bool {
        if Self::is_ignored(lower) || self.is_witness(lower) {
            return false;
        }
        let name: Vec<char> = lower.chars().collect();
        self.patterns.iter().any(|p| glob_match(p, &name))
    }

    /// Lowercased witness names that would mark `lower` ready: the suffix replacing the
    /// extension, then appended to the name.
    fn witness_names(&self, lower: &str) -> Vec<String> {
        let stem = match lower.rfind('.') {
            Some(dot) if dot > 0 => lower.get(..dot),
            _ => None,
        };
        let mut names = Vec::with_capacity(self.witness_suffixes.len() * 2);
        for suffix in &self.witness_suffixes {
            if let Some(stem) = stem {
                names.push(format!("{stem}{suffix}"));
            }
            names.push(format!("{lower}{suffix}"));
        }
        names
    }
}

/// Matches a glob (`*`, `?`, literal characters) against a whole name, both lowercased.
fn glob_match(pattern: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was and which name position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || Some(&c) == name.get(n) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

fn lossy(name: &OsStr) -> String {
    name.to_string_lossy().into_owned()
}

/// Lists the regular files and the symbolic links of `folder`, never following a link
/// (`DirEntry::file_type` and `DirEntry::metadata` do not), skipping entries that vanish or
/// cannot be inspected.
fn scan(folder: &Path) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for item in fs::read_dir(folder)? {
        let Ok(item) = item else { continue };
        let name = item.file_name();
        let meta = match item.metadata() {
            Ok(meta) => meta,
            Err(error) => {
                debug!(file = %lossy(&name), %error, "cannot inspect inbox entry, skipped");
                continue;
            }
        };
        let link = meta.file_type().is_symlink();
        if !meta.is_file() && !link {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        entries.push(Entry {
            name,
            size: meta.len(),
            modified,
            link,
        });
    }
    Ok(entries)
}

/// Splits the symbolic links off a scan: returns the links to move to the error folder (those
/// whose name is a data or witness name, except the inbox's own archive and error folders)
/// and leaves the regular files in `entries`.
fn take_links(rules: &Rules, entries: &mut Vec<Entry>) -> Vec<OsString> {
    let mut links = Vec::new();
    entries.retain(|entry| {
        if !entry.link {
            return true;
        }
        let lower = lossy(&entry.name).to_lowercase();
        let own = rules.own_folders.contains(&entry.name);
        if !own && (rules.is_data(&lower) || rules.is_witness(&lower)) {
            links.push(entry.name.clone());
        }
        false
    });
    links.sort();
    links
}

/// The `.reason` of a symbolic link moved to the error folder.
fn link_reason(name: &str) -> String {
    format!(
        "`{name}` is a symbolic link: ordobridge never reads or follows a link in a shared folder, so the link itself was moved here unread (its target is untouched); have the sender write the file itself into the folder"
    )
}

/// Picks the ready data files of a scan, in mtime then name order, and updates the stability
/// observations (forgetting files that are gone).
fn select_ready(
    rules: &Rules,
    readiness: &Readiness,
    entries: Vec<Entry>,
    observed: &mut HashMap<OsString, Observation>,
    now: SystemTime,
    now_mono: Instant,
) -> Vec<Ready> {
    // Lowercased name → real name, to find witnesses whatever their case.
    let by_lower: HashMap<String, OsString> = match readiness {
        Readiness::Witness { .. } => entries
            .iter()
            .map(|e| (lossy(&e.name).to_lowercase(), e.name.clone()))
            .collect(),
        Readiness::StableFor(_) => HashMap::new(),
    };
    let mut ready = Vec::new();
    let mut seen = HashMap::with_capacity(entries.len());
    for entry in entries {
        let lower = lossy(&entry.name).to_lowercase();
        if !rules.is_data(&lower) {
            continue;
        }
        match readiness {
            Readiness::Witness { .. } => {
                let witness = rules
                    .witness_names(&lower)
                    .iter()
                    .find_map(|w| by_lower.get(w).cloned());
                if witness.is_some() {
                    ready.push(Ready { entry, witness });
                }
            }
            Readiness::StableFor(age) => {
                let now_seen = Observation {
                    size: entry.size,
                    modified: entry.modified,
                    since: now_mono,
                };
                let previous = observed.get(&entry.name).copied();
                let kept = match previous {
                    Some(p) if p.size == now_seen.size && p.modified == now_seen.modified => p,
                    _ => now_seen,
                };
                seen.insert(entry.name.clone(), kept);
                let stable_long_enough = previous.is_some_and(|p| p == kept)
                    && now_mono.saturating_duration_since(kept.since) >= *age;
                // A future mtime (clock skew) is not old enough: the file waits.
                let old_enough = now
                    .duration_since(entry.modified)
                    .is_ok_and(|elapsed| elapsed >= *age);
                if stable_long_enough && old_enough {
                    ready.push(Ready {
                        entry,
                        witness: None,
                    });
                }
            }
        }
    }
    if matches!(readiness, Readiness::StableFor(_)) {
        *observed = seen;
    }
    ready.sort_by(|a, b| (a.entry.modified, &a.entry.name).cmp(&(b.entry.modified, &b.entry.name)));
    ready
}

/// What became of one file.
enum Outcome {
    Committed,
    Refused(String),
    /// Left in place for the next poll.
    RetryLater(String),
}

impl<H: FileHandler> Inbox<H> {
    async fn poll(&mut self, shutdown: &CancellationToken) {
        bump(&self.stats.scans);
        let folder = self.settings.folder.clone();
        let listed = {
            let folder = folder.clone();
            tokio::task::spawn_blocking(move || scan(&folder)).await
        };
        let mut entries = match listed {
            Ok(Ok(entries)) => entries,
            Ok(Err(source)) => {
                self.scan_failed(InboxError::List { folder, source });
                return;
            }
            Err(source) => {
                self.scan_failed(InboxError::Task {
                    path: folder,
                    source,
                });
                return;
            }
        };
        if self.failing_scan.take().is_some() {
            info!(channel = %self.channel, folder = %self.settings.folder.display(), "inbox folder readable again");
        }
        for link in take_links(&self.rules, &mut entries) {
            if shutdown.is_cancelled() {
                return;
            }
            self.refuse_link(link).await;
        }
        let ready = select_ready(
            &self.rules,
            &self.settings.readiness,
            entries,
            &mut self.observed,
            SystemTime::now(),
            Instant::now(),
        );
        // A witness shared by several data files (`A.hl7` and `A.HPR` with `A.OK`) moves
        // with the last of them.
        let mut witness_users: HashMap<OsString, usize> = HashMap::new();
        for file in &ready {
            if let Some(w) = &file.witness {
                *witness_users.entry(w.clone()).or_default() += 1;
            }
        }
        let mut files = Vec::with_capacity(ready.len());
        for file in ready {
            let mut witness = None;
            if let Some(w) = &file.witness {
                let users = witness_users.entry(w.clone()).or_default();
                *users = users.saturating_sub(1);
                if *users == 0 {
                    witness = Some(w.clone());
                }
            }
            files.push((file.entry, witness));
        }
        let limit = self.handler.batch_limit().max(1);
        let mut files = files.into_iter().peekable();
        while files.peek().is_some() {
            if shutdown.is_cancelled() {
                break;
            }
            let go_on = if limit == 1 {
                match files.next() {
                    Some((entry, witness)) => self.take(entry, witness).await,
                    None => break,
                }
            } else {
                let mut batch = Vec::new();
                let mut bytes = 0u64;
                while batch.len() < limit
                    && let Some((entry, _)) = files.peek()
                {
                    if !batch.is_empty() && bytes.saturating_add(entry.size) > BATCH_BYTES {
                        break;
                    }
                    bytes = bytes.saturating_add(entry.size);
                    batch.extend(files.next());
                }
                self.take_batch(batch).await
            };
            if !go_on {
                // The file stays; later files wait for it so the order is kept.
                break;
            }
        }
    }

    /// Reads several files, hands them to the handler together, then archives (or deletes)
    /// the committed ones with one fsync per folder; refused ones go to the error folder one
    /// by one. Returns false when the handler asked to retry a file later: that file and the
    /// ones after it stay in the inbox.
    async fn take_batch(&self, files: Vec<(Entry, Option<OsString>)>) -> bool {
        let max = self.settings.max_file_bytes;
        let paths: Vec<(PathBuf, bool)> = files
            .iter()
            .map(|(entry, _)| (self.settings.folder.join(&entry.name), entry.size > max))
            .collect();
        let read = {
            let paths = paths.clone();
            tokio::task::spawn_blocking(move || {
                paths
                    .into_iter()
                    .map(|(path, too_big)| (!too_big).then(|| read_limited(&path, max)))
                    .collect::<Vec<_>>()
            })
            .await
        };
        let read = match read {
            Ok(read) => read,
            Err(source) => {
                let path = self.settings.folder.clone();
                let name = lossy(path.as_os_str());
                self.file_failed(&name, &InboxError::Task { path, source });
                return true;
            }
        };
        // Per file: the outcome when known without the handler, else its place in `offered`.
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(files.len());
        let mut offered = Vec::new();
        let mut kept = Vec::with_capacity(files.len());
        for (((entry, witness), (path, _)), read) in files.into_iter().zip(paths).zip(read) {
            let name = lossy(&entry.name);
            let outcome = match read {
                None => Some(Outcome::Refused(format!(
                    "file `{name}` is {} bytes, more than the limit of {max} bytes; not read",
                    entry.size
                ))),
                Some(Ok(Some(bytes))) => {
                    bump(&self.stats.files_taken);
                    debug!(channel = %self.channel, file = %name, len = bytes.len(), "file taken");
                    offered.push(InboxFile {
                        path,
                        name: name.clone(),
                        bytes,
                        modified: entry.modified,
                    });
                    None
                }
                Some(Ok(None)) => Some(Outcome::Refused(format!(
                    "file `{name}` grew past the limit of {max} bytes while being read"
                ))),
                Some(Err(source)) if source.kind() == io::ErrorKind::NotFound => {
                    debug!(channel = %self.channel, file = %name, "file vanished before it was read");
                    continue;
                }
                Some(Err(source)) => {
                    self.file_failed(&name, &InboxError::Read { file: path, source });
                    continue;
                }
            };
            outcomes.push(outcome);
            kept.push((entry, witness));
        }
        let mut answers = self.offer_batch(offered).await.into_iter();
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|known| {
                known.unwrap_or_else(|| {
                    answers.next().unwrap_or_else(|| {
                        Outcome::RetryLater("the file handler gave no answer".to_owned())
                    })
                })
            })
            .collect();

        let mut committed = Vec::new();
        let mut go_on = true;
        for ((entry, witness), outcome) in kept.into_iter().zip(outcomes) {
            let name = lossy(&entry.name);
            match outcome {
                Outcome::Committed => committed.push((entry.name, witness)),
                Outcome::RetryLater(reason) => {
                    bump(&self.stats.file_errors);
                    warn!(channel = %self.channel, file = %name, error = %reason, "file left in the inbox, retrying at next poll");
                    go_on = false;
                    break;
                }
                Outcome::Refused(reason) => {
                    // Refusals are rare: each goes to the error folder on its own, after the
                    // committed files before it are settled.
                    self.settle_committed(std::mem::take(&mut committed)).await;
                    self.refuse(&entry.name, witness, reason).await;
                }
            }
        }
        self.settle_committed(committed).await;
        go_on
    }

    /// Hands files to the handler's `handle_batch` in its own task; if that task fails
    /// (panics), the files are offered again one by one, so only the file that makes the
    /// handler fail is refused.
    async fn offer_batch(&self, files: Vec<InboxFile>) -> Vec<Outcome> {
        if files.is_empty() {
            return Vec::new();
        }
        let handler = Arc::clone(&self.handler);
        let retry = files.clone();
        match tokio::spawn(async move { handler.handle_batch(files).await }).await {
            Ok(answers) => answers
                .into_iter()
                .map(|answer| match answer {
                    Ok(()) => Outcome::Committed,
                    Err(rejection) if rejection.retry => Outcome::RetryLater(rejection.reason),
                    Err(rejection) => Outcome::Refused(rejection.reason),
                })
                .collect(),
            Err(join) => {
                warn!(channel = %self.channel, files = retry.len(), error = %join, "file handler failed on a batch; offering its files one by one");
                let mut outcomes = Vec::with_capacity(retry.len());
                for file in retry {
                    let outcome = self.handle_one(file).await;
                    let stop = matches!(outcome, Outcome::RetryLater(_));
                    outcomes.push(outcome);
                    if stop {
                        break;
                    }
                }
                outcomes
            }
        }
    }

    /// Archives (or deletes) committed files together: each moved, then one fsync of each
    /// folder touched.
    async fn settle_committed(&self, files: Vec<(OsString, Option<OsString>)>) {
        if files.is_empty() {
            return;
        }
        let settings = Arc::clone(&self.settings);
        let names: Vec<String> = files.iter().map(|(name, _)| lossy(name)).collect();
        let settle = move || match &settings.after_success {
            AfterSuccess::Archive { folder } => {
                (true, archive_many(&settings.folder, folder, &files))
            }
            AfterSuccess::Delete => (false, delete_many(&settings.folder, &files)),
        };
        match tokio::task::spawn_blocking(settle).await {
            Ok((archived, results)) => {
                for (name, result) in names.iter().zip(results) {
                    match result {
                        Ok(()) if archived => {
                            bump(&self.stats.files_archived);
                            debug!(channel = %self.channel, file = %name, "file archived");
                        }
                        Ok(()) => {
                            bump(&self.stats.files_deleted);
                            debug!(channel = %self.channel, file = %name, "file deleted");
                        }
                        Err(error) => self.file_failed(name, &error),
                    }
                }
            }
            Err(source) => {
                let path = self.settings.folder.clone();
                self.file_failed(&names.join(", "), &InboxError::Task { path, source });
            }
        }
    }

    /// Moves a refused file (and its witness) to the error folder with its reason.
    async fn refuse(&self, file_name: &OsStr, witness: Option<OsString>, reason: String) {
        let name = lossy(file_name);
        let settings = Arc::clone(&self.settings);
        let path = settings.folder.join(file_name);
        let file_name = file_name.to_os_string();
        let reject = move || {
            reject(
                &settings.folder,
                &settings.error_folder,
                &file_name,
                witness.as_deref(),
                &reason,
            )
        };
        match tokio::task::spawn_blocking(reject).await {
            Ok(Ok(())) => {
                bump(&self.stats.files_rejected);
                warn!(channel = %self.channel, file = %name, "file refused, moved to the error folder with its reason");
            }
            Ok(Err(error)) => self.file_failed(&name, &error),
            Err(source) => self.file_failed(&name, &InboxError::Task { path, source }),
        }
    }

    /// Reads, hands over and moves one file; every failure is logged and counted here.
    /// Returns false when the handler asked to retry the file later.
    async fn take(&self, entry: Entry, witness: Option<OsString>) -> bool {
        let name = lossy(&entry.name);
        let path = self.settings.folder.join(&entry.name);
        let max = self.settings.max_file_bytes;
        let outcome = if entry.size > max {
            Outcome::Refused(format!(
                "file `{name}` is {} bytes, more than the limit of {max} bytes; not read",
                entry.size
            ))
        } else {
            let read = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_limited(&path, max)).await
            };
            match read {
                Ok(Ok(Some(bytes))) => self.offer(&path, &name, bytes, entry.modified).await,
                Ok(Ok(None)) => Outcome::Refused(format!(
                    "file `{name}` grew past the limit of {max} bytes while being read"
                )),
                Ok(Err(source)) if source.kind() == io::ErrorKind::NotFound => {
                    debug!(channel = %self.channel, file = %name, "file vanished before it was read");
                    return true;
                }
                Ok(Err(source)) => {
                    let error = InboxError::Read { file: path, source };
                    self.file_failed(&name, &error);
                    return true;
                }
                Err(source) => {
                    let error = InboxError::Task { path, source };
                    self.file_failed(&name, &error);
                    return true;
                }
            }
        };
        if let Outcome::RetryLater(reason) = &outcome {
            bump(&self.stats.file_errors);
            warn!(channel = %self.channel, file = %name, error = %reason, "file left in the inbox, retrying at next poll");
            return false;
        }
        match outcome {
            Outcome::Committed => self.settle_committed(vec![(entry.name, witness)]).await,
            Outcome::RetryLater(_) => return false,
            Outcome::Refused(reason) => self.refuse(&entry.name, witness, reason).await,
        }
        true
    }

    /// Moves a symbolic link (the link itself) to the error folder with its reason.
    async fn refuse_link(&self, link: OsString) {
        let name = lossy(&link);
        let settings = Arc::clone(&self.settings);
        let reason = link_reason(&name);
        let path = settings.folder.join(&link);
        let moved = tokio::task::spawn_blocking(move || {
            reject(
                &settings.folder,
                &settings.error_folder,
                &link,
                None,
                &reason,
            )
        })
        .await;
        match moved {
            Ok(Ok(())) => {
                bump(&self.stats.files_rejected);
                warn!(channel = %self.channel, file = %name, "symbolic link in the inbox not followed, moved to the error folder with its reason");
            }
            Ok(Err(error)) => self.file_failed(&name, &error),
            Err(source) => self.file_failed(&name, &InboxError::Task { path, source }),
        }
    }

    /// Hands the file to the handler in its own task, so a panicking handler refuses the file
    /// instead of killing the inbox.
    async fn offer(&self, path: &Path, name: &str, bytes: Bytes, modified: SystemTime) -> Outcome {
        bump(&self.stats.files_taken);
        debug!(channel = %self.channel, file = %name, len = bytes.len(), "file taken");
        let file = InboxFile {
            path: path.to_path_buf(),
            name: name.to_owned(),
            bytes,
            modified,
        };
        self.handle_one(file).await
    }

    /// Hands one file to the handler in its own task (see [`Inbox::offer`]).
    async fn handle_one(&self, file: InboxFile) -> Outcome {
        let name = file.name.clone();
        let handler = Arc::clone(&self.handler);
        match tokio::spawn(async move { handler.handle(file).await }).await {
            Ok(Ok(())) => Outcome::Committed,
            Ok(Err(rejection)) if rejection.retry => Outcome::RetryLater(rejection.reason),
            Ok(Err(rejection)) => Outcome::Refused(rejection.reason),
            Err(join) => {
                error!(channel = %self.channel, file = %name, error = %join, "file handler failed");
                Outcome::Refused(format!(
                    "internal error: the file handler failed on `{name}`"
                ))
            }
        }
    }

    /// Counts every failed scan, but warns only when the failure starts or changes, so a mount
    /// that is gone for hours does not flood the log at every poll.
    fn scan_failed(&mut self, error: InboxError) {
        self.stats.record(&self.stats.scan_errors, &error);
        let text = error_chain(&error);
        if self.failing_scan.as_deref() == Some(text.as_str()) {
            debug!(channel = %self.channel, error = %text, "inbox scan still failing");
        } else {
            warn!(channel = %self.channel, error = %text, "inbox scan failed, retrying at each poll");
            self.failing_scan = Some(text);
        }
    }

    fn file_failed(&self, name: &str, error: &InboxError) {
        self.stats.record(&self.stats.file_errors, error);
        warn!(channel = %self.channel, file = %name, error = %error_chain(error), "file left in the inbox, retrying at next poll");
    }
}

/// Reads a whole file, refusing (`None`) one that turns out bigger than `max`; never through
/// a symbolic link, and only a regular file (checked on the opened descriptor).
fn read_limited(path: &Path, max: u64) -> io::Result<Option<Bytes>> {
    let file = fsops::open_regular(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max {
        return Ok(None);
    }
    Ok(Some(Bytes::from(bytes)))
}

/// Today's local date as `YYYY-MM-DD`, the archive sub-folder.
fn today() -> String {
    jiff::Zoned::now().date().strftime("%Y-%m-%d").to_string()
}

/// Moves committed files, each followed by its witness, into `archive_root/YYYY-MM-DD/`,
/// then fsyncs the day folder and the inbox once for all of them: the moves of a batch are
/// durable together. A crash before the fsyncs can only bring files back into the inbox,
/// where they are offered again (the handler is idempotent), never lose one. One answer per
/// file, in order.
fn archive_many(
    inbox: &Path,
    archive_root: &Path,
    files: &[(OsString, Option<OsString>)],
) -> Vec<Result<(), InboxError>> {
    let day = archive_root.join(today());
    let fail = |file: &Path, source| InboxError::Archive {
        file: file.to_path_buf(),
        to: day.clone(),
        source,
    };
    let folders = fsops::real_dir(archive_root).and_then(|()| fsops::real_dir(&day));
    let mut moved_any = false;
    let answers = files
        .iter()
        .map(|(name, witness)| {
            let src = inbox.join(name);
            if let Err(e) = &folders {
                return Err(fail(&src, io::Error::new(e.kind(), e.to_string())));
            }
            let dst = fsops::free_appended(&day, name).map_err(|e| fail(&src, e))?;
            fsops::move_unsynced(&src, &dst).map_err(|e| fail(&src, e))?;
            moved_any = true;
            if let Some(witness) = witness {
                let src = inbox.join(witness);
                let dst = fsops::free_appended(&day, witness).map_err(|e| fail(&src, e))?;
                match fsops::move_unsynced(&src, &dst) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(fail(&src, e)),
                    _ => {}
                }
            }
            Ok(())
        })
        .collect();
    if moved_any {
        fsops::sync_dir(&day);
        fsops::sync_dir(inbox);
    }
    answers
}

/// Deletes committed files and their witnesses, then fsyncs the inbox once; one answer per
/// file, in order.
fn delete_many(
    inbox: &Path,
    files: &[(OsString, Option<OsString>)],
) -> Vec<Result<(), InboxError>> {
    let answers = files
        .iter()
        .map(|(name, witness)| {
            for file in std::iter::once(name).chain(witness) {
                let path = inbox.join(file);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(InboxError::Delete {
                            file: path,
                            source: e,
                        });
                    }
                    _ => {}
                }
            }
            Ok(())
        })
        .collect();
    fsops::sync_dir(inbox);
    answers
}

/// Writes `NAME.reason` in the error folder (fsynced), then moves the file and its witness
/// beside it.
fn reject(
    inbox: &Path,
    error_folder: &Path,
    name: &OsStr,
    witness: Option<&OsStr>,
    reason: &str,
) -> Result<(), InboxError> {
    let src = inbox.join(name);
    let fail = |file: &Path, source| InboxError::Reject {
        file: file.to_path_buf(),
        to: error_folder.to_path_buf(),
        source,
    };
    fsops::real_dir(error_folder).map_err(|e| fail(&src, e))?;
    let (dst, reason_path) = free_with_reason(error_folder, name).map_err(|e| fail(&src, e))?;
    let mut text = reason.to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    fsops::write_new_synced(&reason_path, text.as_bytes()).map_err(|e| fail(&src, e))?;
    fsops::move_file(&src, &dst).map_err(|e| fail(&src, e))?;
    if let Some(witness) = witness {
        let src = inbox.join(witness);
        let dst = fsops::free_appended(error_folder, witness).map_err(|e| fail(&src, e))?;
        match fsops::move_file(&src, &dst) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(fail(&src, e)),
            _ => {}
        }
    }
    Ok(())
}

/// The first name `NAME`, `NAME.1`, … in `dir` that is free together with its `.reason`.
fn free_with_reason(dir: &Path, name: &OsStr) -> io::Result<(PathBuf, PathBuf)> {
    for n in 0..fsops::MAX_NAME_TRIES {
        let candidate = fsops::appended(name, n);
        let mut reason = candidate.clone();
        reason.push(".reason");
        let (dst, reason) = (dir.join(candidate), dir.join(reason));
        if fsops::is_free(&dst)? && fsops::is_free(&reason)? {
            return Ok((dst, reason));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free name after {} tries", fsops::MAX_NAME_TRIES),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use rstest::rstest;

    fn settings(readiness: Readiness) -> InboxSettings {
        InboxSettings {
            folder: PathBuf::from("/in"),
            patterns: vec!["*.hl7".into(), "*.HPR".into()],
            poll_interval: Duration::from_millis(20),
            readiness,
            after_success: AfterSuccess::Archive {
                folder: PathBuf::from("/in/archive"),
            },
            error_folder: PathBuf::from("/in/error"),
            max_file_bytes: 1024,
        }
    }

    fn witness() -> Readiness {
        Readiness::Witness {
            suffixes: vec![".OK".into()],
        }
    }

    fn glob(pattern: &str, name: &str) -> bool {
        let p: Vec<char> = pattern.to_lowercase().chars().collect();
        let n: Vec<char> = name.to_lowercase().chars().collect();
        glob_match(&p, &n)
    }

    #[rstest]
    #[case::star_ext("*.hl7", "ADT_001.hl7")]
    #[case::case_insensitive("*.HPR", "result.hpr")]
    #[case::question("A?.txt", "AB.txt")]
    #[case::star_middle("lab*_*.hpr", "lab2024_01.HPR")]
    #[case::star_only("*", "anything")]
    #[case::star_empty("a*b", "ab")]
    #[case::backtrack("*a*b", "xaxab")]
    #[case::accents("*.hl7", "Élodie.HL7")]
    fn ok_glob_matches(#[case] pattern: &str, #[case] name: &str) {
        assert!(glob(pattern, name));
    }

    #[rstest]
    #[case::other_ext("*.hl7", "a.hl7.bak")]
    #[case::question_needs_one("a?", "a")]
    #[case::literal("a.hl7", "b.hl7")]
    #[case::empty_name("*.hl7", "")]
    #[case::prefix("x*", "ax")]
    fn err_glob_does_not_match(#[case] pattern: &str, #[case] name: &str) {
        assert!(!glob(pattern, name));
    }

    #[rstest]
    #[case::data("a.hl7", true)]
    #[case::upper("A.HL7", true)]
    #[case::dot_file(".a.hl7", false)]
    #[case::tmp("a.hl7.tmp", false)]
    #[case::part("a.hl7.PART", false)]
    #[case::witness("a.hl7.ok", false)]
    #[case::no_match("a.txt", false)]
    fn ok_is_data(#[case] name: &str, #[case] expected: bool) {
        let rules = Rules::new(&settings(witness()));
        assert_eq!(rules.is_data(&name.to_lowercase()), expected);
    }

    #[rstest]
    #[case::with_ext("r.hpr", &["r.ok", "r.hpr.ok"])]
    #[case::no_ext("r", &["r.ok"][..])]
    #[case::dot_start_only("x.y.hpr", &["x.y.ok", "x.y.hpr.ok"])]
    fn ok_witness_names(#[case] name: &str, #[case] expected: &[&str]) {
        let rules = Rules::new(&settings(witness()));
        let mut got = rules.witness_names(name);
        got.dedup();
        assert_eq!(got, expected);
    }

    fn entry(name: &str, size: u64, secs_ago: u64, now: SystemTime) -> Entry {
        Entry {
            name: name.into(),
            size,
            modified: now - Duration::from_secs(secs_ago),
            link: false,
        }
    }

    #[test]
    fn ok_witness_selects_files_with_witness_in_order() {
        let rules = Rules::new(&settings(witness()));
        let now = SystemTime::now();
        let entries = vec![
            entry("b.hl7", 1, 5, now),
            entry("b.ok", 0, 1, now),
            entry("a.HPR", 1, 5, now),
            entry("A.OK", 0, 1, now),
            entry("c.hl7", 1, 9, now),
            entry("c.hl7.Ok", 0, 1, now),
            entry("d.hl7", 1, 99, now),
        ];
        let mut observed = HashMap::new();
        let ready = select_ready(
            &rules,
            &witness(),
            entries,
            &mut observed,
            now,
            Instant::now(),
        );
        let got: Vec<_> = ready
            .iter()
            .map(|r| {
                (
                    lossy(&r.entry.name),
                    r.witness.as_deref().map(lossy).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("c.hl7".to_owned(), "c.hl7.Ok".to_owned()),
                ("a.HPR".to_owned(), "A.OK".to_owned()),
                ("b.hl7".to_owned(), "b.ok".to_owned()),
            ]
        );
    }

    #[test]
    fn ok_stability_needs_two_unchanged_observations_and_age() {
        let age = Duration::from_secs(2);
        let readiness = Readiness::StableFor(age);
        let rules = Rules::new(&settings(readiness.clone()));
        let now = SystemTime::now();
        let t0 = Instant::now();
        let mut observed = HashMap::new();
        let scan_at = |observed: &mut HashMap<_, _>, size, mono: Instant| {
            select_ready(
                &rules,
                &readiness,
                vec![entry("a.hl7", size, 10, now), entry("young.hl7", 1, 1, now)],
                observed,
                now,
                mono,
            )
            .len()
        };
        assert_eq!(scan_at(&mut observed, 10, t0), 0, "first sight");
        assert_eq!(
            scan_at(&mut observed, 10, t0 + age / 2),
            0,
            "not long enough"
        );
        assert_eq!(scan_at(&mut observed, 11, t0 + age), 0, "grew");
        assert_eq!(
            scan_at(&mut observed, 11, t0 + age * 2),
            1,
            "stable for age"
        );
        assert_eq!(
            scan_at(&mut observed, 11, t0 + age * 9),
            1,
            "young stays young"
        );
    }

    #[test]
    fn ok_stability_forgets_files_that_are_gone() {
        let readiness = Readiness::StableFor(Duration::from_secs(1));
        let rules = Rules::new(&settings(readiness.clone()));
        let now = SystemTime::now();
        let mut observed = HashMap::new();
        select_ready(
            &rules,
            &readiness,
            vec![entry("a.hl7", 1, 10, now), entry("a.txt", 1, 10, now)],
            &mut observed,
            now,
            Instant::now(),
        );
        assert_eq!(observed.len(), 1);
        select_ready(
            &rules,
            &readiness,
            vec![],
            &mut observed,
            now,
            Instant::now(),
        );
        assert!(observed.is_empty());
    }

    #[rstest]
    #[case::no_patterns(InboxSettings { patterns: vec![], ..settings(witness()) }, "inbox settings: no file pattern given")]
    #[case::empty_pattern(InboxSettings { patterns: vec!["*.hl7".into(), String::new()], ..settings(witness()) }, "inbox settings: pattern 1 is empty")]
    #[case::zero_poll(InboxSettings { poll_interval: Duration::ZERO, ..settings(witness()) }, "inbox settings: poll_interval must be more than zero")]
    #[case::zero_max(InboxSettings { max_file_bytes: 0, ..settings(witness()) }, "inbox settings: max_file_bytes must be more than zero")]
    #[case::no_suffix(settings(Readiness::Witness { suffixes: vec![] }), "inbox settings: witness readiness needs at least one suffix")]
    #[case::empty_suffix(settings(Readiness::Witness { suffixes: vec![".OK".into(), String::new()] }), "inbox settings: witness suffix 1 is empty")]
    #[case::error_is_inbox(InboxSettings { error_folder: "/in".into(), ..settings(witness()) }, "inbox settings: the error folder `/in` is the inbox folder itself")]
    #[case::archive_is_inbox(InboxSettings { after_success: AfterSuccess::Archive { folder: "/in".into() }, ..settings(witness()) }, "inbox settings: the archive folder `/in` is the inbox folder itself")]
    fn err_invalid_settings(#[case] settings: InboxSettings, #[case] text: &str) {
        assert_eq!(settings.validate().unwrap_err().to_string(), text);
    }

    #[rstest]
    #[case::witness(settings(witness()))]
    #[case::stable(settings(Readiness::StableFor(Duration::from_secs(5))))]
    #[case::delete(InboxSettings { after_success: AfterSuccess::Delete, ..settings(witness()) })]
    fn ok_valid_settings(#[case] settings: InboxSettings) {
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn err_io_messages_are_pinned() {
        let error = InboxError::List {
            folder: "/mnt/dpi/in".into(),
            source: io::Error::new(io::ErrorKind::PermissionDenied, "permission denied"),
        };
        assert_eq!(
            error_chain(&error),
            "cannot list inbox folder `/mnt/dpi/in`: permission denied"
        );
        let error = InboxError::Reject {
            file: "/in/a.hl7".into(),
            to: "/in/error".into(),
            source: io::Error::new(io::ErrorKind::StorageFull, "no space left on device"),
        };
        assert_eq!(
            error_chain(&error),
            "cannot move refused `/in/a.hl7` into `/in/error`: no space left on device"
        );
    }

    #[test]
    fn ok_read_limited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.hl7");
        fs::write(&path, b"0123456789").unwrap();
        assert_eq!(
            read_limited(&path, 10).unwrap().unwrap().as_ref(),
            b"0123456789"
        );
        assert!(read_limited(&path, 9).unwrap().is_none());
    }

    #[test]
    fn ok_reject_writes_reason_then_moves_file_and_witness() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path();
        let errors = inbox.join("error");
        fs::write(inbox.join("r.HPR"), b"H|").unwrap();
        fs::write(inbox.join("r.OK"), b"").unwrap();
        fs::create_dir(&errors).unwrap();
        fs::write(errors.join("r.HPR"), b"older").unwrap();
        reject(
            inbox,
            &errors,
            OsStr::new("r.HPR"),
            Some(OsStr::new("r.OK")),
            "H record: missing delimiters",
        )
        .unwrap();
        assert_eq!(fs::read(errors.join("r.HPR.1")).unwrap(), b"H|");
        assert_eq!(
            fs::read_to_string(errors.join("r.HPR.1.reason")).unwrap(),
            "H record: missing delimiters\n"
        );
        assert!(errors.join("r.OK").exists());
        assert!(!inbox.join("r.HPR").exists());
        assert!(!inbox.join("r.OK").exists());
    }

    #[test]
    fn ok_take_links_keeps_files_and_picks_data_and_witness_links() {
        let rules = Rules::new(&InboxSettings {
            folder: PathBuf::from("/in"),
            ..settings(witness())
        });
        let now = SystemTime::now();
        let link = |name: &str| Entry {
            link: true,
            ..entry(name, 0, 1, now)
        };
        let mut entries = vec![
            entry("a.hl7", 1, 5, now),
            link("b.hl7"),
            link("B.OK"),
            link("notes.txt"),
            link("error"),
            link("archive"),
        ];
        let links = take_links(&rules, &mut entries);
        assert_eq!(links, vec![OsString::from("B.OK"), OsString::from("b.hl7")]);
        assert_eq!(entries, vec![entry("a.hl7", 1, 5, now)]);
    }

    #[test]
    fn ok_scan_reports_links_without_following_them() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("big"), vec![b'x'; 100]).unwrap();
        fs::write(dir.path().join("a.hl7"), b"MSH|").unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), dir.path().join("b.hl7")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("c.hl7")).unwrap();
        fs::create_dir(dir.path().join("d.hl7")).unwrap();
        let mut got: Vec<_> = scan(dir.path())
            .unwrap()
            .into_iter()
            .map(|e| (lossy(&e.name), e.link, e.size == 100))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("a.hl7".to_owned(), false, false),
                ("b.hl7".to_owned(), true, false),
                ("c.hl7".to_owned(), true, false),
            ]
        );
    }

    #[test]
    fn err_read_limited_refuses_a_link() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("secret.db"), b"store").unwrap();
        let link = dir.path().join("a.hl7");
        std::os::unix::fs::symlink(dir.path().join("secret.db"), &link).unwrap();
        assert_eq!(
            read_limited(&link, 1024).unwrap_err().to_string(),
            format!(
                "`{}` is a symbolic link; ordobridge never reads through a link in a shared folder",
                link.display()
            )
        );
    }

    #[test]
    fn ok_reject_moves_a_link_and_skips_a_planted_reason_name() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path();
        let errors = inbox.join("error");
        fs::create_dir(&errors).unwrap();
        fs::write(inbox.join("secret.db"), b"store").unwrap();
        std::os::unix::fs::symlink(inbox.join("secret.db"), inbox.join("a.hl7")).unwrap();
        // A link planted at the reason name of the first free name.
        std::os::unix::fs::symlink(inbox.join("secret.db"), errors.join("a.hl7.reason")).unwrap();
        reject(
            inbox,
            &errors,
            OsStr::new("a.hl7"),
            None,
            &link_reason("a.hl7"),
        )
        .unwrap();
        assert_eq!(fs::read(inbox.join("secret.db")).unwrap(), b"store");
        assert_eq!(
            fs::read_link(errors.join("a.hl7.1")).unwrap(),
            inbox.join("secret.db")
        );
        assert_eq!(
            fs::read_to_string(errors.join("a.hl7.1.reason")).unwrap(),
            "`a.hl7` is a symbolic link: ordobridge never reads or follows a link in a shared folder, so the link itself was moved here unread (its target is untouched); have the sender write the file itself into the folder\n"
        );
    }

    #[rstest]
    #[case::error_folder_is_link(true)]
    #[case::archive_day_is_link(false)]
    fn err_moves_refuse_a_linked_folder(#[case] error_folder: bool) {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("in");
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&inbox).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        fs::write(inbox.join("a.hl7"), b"MSH|").unwrap();
        let (result, linked) = if error_folder {
            let errors = inbox.join("error");
            std::os::unix::fs::symlink(&elsewhere, &errors).unwrap();
            let result = reject(&inbox, &errors, OsStr::new("a.hl7"), None, "bad");
            (result, errors)
        } else {
            let root = inbox.join("archive");
            fs::create_dir(&root).unwrap();
            let day = root.join(today());
            std::os::unix::fs::symlink(&elsewhere, &day).unwrap();
            let mut results = archive_many(&inbox, &root, &[("a.hl7".into(), None)]);
            (results.remove(0), day)
        };
        let text = error_chain(&result.unwrap_err());
        assert!(
            text.ends_with(&format!(
                "`{}` is a symbolic link; ordobridge never writes through a link in a shared folder: replace it with a real folder, or configure the real path",
                linked.display()
            )),
            "{text}"
        );
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert!(inbox.join("a.hl7").exists());
    }

    #[test]
    fn ok_delete_removes_file_and_witness() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.hl7"), b"x").unwrap();
        fs::write(dir.path().join("a.ok"), b"").unwrap();
        let mut results = delete_many(dir.path(), &[("a.hl7".into(), Some("a.ok".into()))]);
        results.remove(0).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn ok_today_is_a_date() {
        let day = today();
        assert_eq!(day.len(), 10);
        assert_eq!(day.get(4..5), Some("-"));
        assert_eq!(day.get(7..8), Some("-"));
    }
}
