//! The outbox: write a file into a shared folder so that a reader polling the folder never
//! sees it partial under its final name.
//!
//! Steps: write `NAME.tmp`, fsync it, rename it to `NAME`, fsync the folder, then (if
//! configured) create the empty witness file and fsync it and the folder. A write is done only
//! after the rename (and the witness). An existing file is never overwritten: `X.hl7` becomes
//! `X-1.hl7`, `X-2.hl7`, … (a name is free when neither it nor its witness exists).
//!
//! The witness name replaces the data file's extension with the suffix (`NAME.OK` beside
//! `NAME.HPR`, the HPRIM Santé habit); a name without extension gets the suffix appended.
//!
//! File names come from a template with the variables `{control_id}`, `{date}` (`YYYYMMDD`),
//! `{time}` (`HHMMSS`), `{seq}` and `{ipp}`. Variable values are sanitized: `/`, `\`, control
//! characters and the characters Windows shares refuse (`:*?"<>|`) become `_`, a `.` right
//! after a `.` becomes `_` (no `..`), each value is cut to 64 characters, and a name that would
//! start with `.` (a hidden file that readers skip) gets a `_` in front. The bytes are written
//! as given: the charset is the caller's business.
//!
//! Writes through one [`Outbox`] are serialized by a lock so that two writers never pick the
//! same name; the folder is assumed to be written by one ordobridge only.
//!
//! Symbolic links: the outbox folder must be a real folder (a link there is refused), a name is
//! free only when the data file, its `.tmp` and its witness are all free (a link counts as
//! taken), and the `.tmp` and the witness are created with `O_EXCL | O_NOFOLLOW`, so a link
//! planted at any of these names never makes ordobridge write or truncate another file; the
//! final rename replaces, at worst, a link planted in the meantime, never its target.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::fsops;

/// Longest value kept for one template variable, in characters.
const MAX_VAR_CHARS: usize = 64;
/// Longest file name produced, in bytes, leaving room for `-NNNN` and `.tmp` under the usual
/// 255-byte limit.
const MAX_NAME_BYTES: usize = 200;

/// Where and how one destination receives files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxSettings {
    /// The folder the EHR polls.
    pub folder: PathBuf,
    /// File name template, e.g. `{control_id}.hl7`; see the module docs for the variables.
    pub name_template: String,
    /// Suffix of an empty witness file written after the data file (`.OK`), for readers that
    /// wait for one.
    pub witness_suffix: Option<String>,
}

/// The values a file name template may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameVars {
    /// The message control ID (MSH-10), stable across retries.
    pub control_id: String,
    /// The patient's IPP, empty when unknown.
    pub ipp: String,
    /// A sequence number chosen by the caller (queue position).
    pub seq: u64,
    /// The local date and time used for `{date}` and `{time}`.
    pub at: jiff::civil::DateTime,
}

impl NameVars {
    /// Variables stamped with the current local date and time.
    pub fn now(control_id: impl Into<String>, ipp: impl Into<String>, seq: u64) -> Self {
        Self {
            control_id: control_id.into(),
            ipp: ipp.into(),
            seq,
            at: jiff::Zoned::now().datetime(),
        }
    }
}

/// Everything that can go wrong in an outbox: a template refused at start, or a write that
/// failed (nothing was left under the final name).
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The template is empty.
    #[error("outbox name template is empty")]
    EmptyTemplate,
    /// The template names a variable that does not exist.
    #[error(
        "outbox name template: unknown variable `{name}` at byte offset {offset}; expected one of control_id, date, time, seq, ipp"
    )]
    UnknownVariable {
        /// The name between the braces (printed readably).
        name: String,
        /// Offset of its `{` in the template.
        offset: usize,
    },
    /// A `{` is not closed.
    #[error("outbox name template: `{{` at byte offset {offset} is not closed")]
    UnclosedBrace {
        /// Offset of the `{`.
        offset: usize,
    },
    /// A `}` closes nothing.
    #[error("outbox name template: unmatched `}}` at byte offset {offset}")]
    UnmatchedBrace {
        /// Offset of the `}`.
        offset: usize,
    },
    /// The template holds a character that cannot be in a file name (a path separator or a
    /// control character).
    #[error(
        "outbox name template: character `{ch}` at byte offset {offset} is not allowed in a file name"
    )]
    ForbiddenChar {
        /// The character, printed readably (`\x0A`).
        ch: String,
        /// Its offset in the template.
        offset: usize,
    },
    /// The witness suffix is empty or holds a forbidden character.
    #[error("outbox witness suffix `{suffix}` is not a valid file name suffix")]
    BadWitnessSuffix {
        /// The suffix, printed readably.
        suffix: String,
    },
    /// The rendered name is too long for common file systems.
    #[error("outbox file name of {len} bytes exceeds the maximum of {max} bytes")]
    NameTooLong {
        /// Length of the rendered name.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Every suffixed name up to the limit is taken.
    #[error("no free file name for `{name}` in `{}` after {tries} tries", folder.display())]
    NoFreeName {
        /// The rendered name.
        name: String,
        /// The outbox folder.
        folder: PathBuf,
        /// How many names were tried.
        tries: u32,
    },
    /// The outbox folder is a symbolic link: ordobridge does not write through links.
    #[error(
        "outbox folder `{}` is a symbolic link; ordobridge never writes through a link in a shared folder: set `folder` to the real path",
        folder.display()
    )]
    FolderIsLink {
        /// The configured folder.
        folder: PathBuf,
    },
    /// A file-system step failed.
    #[error("cannot {op} `{}`", path.display())]
    Io {
        /// What was being done (`write`, `rename`, `create witness`, `check`).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// One template variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    ControlId,
    Date,
    Time,
    Seq,
    Ipp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

/// Prints a string readably: control characters as `\xNN`.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02X}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

fn is_forbidden_in_template(c: char) -> bool {
    c == '/' || c == '\\' || c.is_control()
}

fn parse_template(template: &str) -> Result<Vec<Part>, OutboxError> {
    if template.is_empty() {
        return Err(OutboxError::EmptyTemplate);
    }
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = template.char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            '{' => {
                let rest = template.get(offset + 1..).unwrap_or("");
                let Some(end) = rest.find('}') else {
                    return Err(OutboxError::UnclosedBrace { offset });
                };
                let name = rest.get(..end).unwrap_or("");
                let var = match name {
                    "control_id" => Var::ControlId,
                    "date" => Var::Date,
                    "time" => Var::Time,
                    "seq" => Var::Seq,
                    "ipp" => Var::Ipp,
                    other => {
                        return Err(OutboxError::UnknownVariable {
                            name: escaped(other),
                            offset,
                        });
                    }
                };
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Var(var));
                // Skip the name and the closing brace (all ASCII once recognized).
                for _ in 0..=name.len() {
                    chars.next();
                }
            }
            '}' => return Err(OutboxError::UnmatchedBrace { offset }),
            c if is_forbidden_in_template(c) => {
                return Err(OutboxError::ForbiddenChar {
                    ch: escaped(&c.to_string()),
                    offset,
                });
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

/// Makes a variable value safe inside a file name (see the module docs).
fn sanitize(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_VAR_CHARS));
    let mut previous = None;
    for c in value.chars().take(MAX_VAR_CHARS) {
        let safe = match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            '.' if previous == Some('.') => '_',
            c => c,
        };
        out.push(safe);
        previous = Some(safe);
    }
    out
}

/// `X.hl7` → `X-n.hl7`; `X` → `X-n`; `n == 0` leaves the name alone.
fn before_extension(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.rfind('.') {
        Some(dot) if dot > 0 => {
            let (stem, ext) = name.split_at(dot);
            format!("{stem}-{n}{ext}")
        }
        _ => format!("{name}-{n}"),
    }
}

/// The witness name for a data file name: the suffix replaces the extension.
fn witness_name(name: &str, suffix: &str) -> String {
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{}{suffix}", name.get(..dot).unwrap_or(name)),
        _ => format!("{name}{suffix}"),
    }
}

/// Writes files into one destination folder; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Outbox {
    settings: OutboxSettings,
    template: Vec<Part>,
    /// Serializes writes: choosing a free name and renaming onto it must not interleave.
    lock: Mutex<()>,
}

impl Outbox {
    /// Checks the template and witness suffix, so a configuration mistake is reported at start.
    pub fn new(settings: OutboxSettings) -> Result<Self, OutboxError> {
        let template = parse_template(&settings.name_template)?;
        if let Some(suffix) = &settings.witness_suffix
            && (suffix.is_empty() || suffix.chars().any(is_forbidden_in_template))
        {
            return Err(OutboxError::BadWitnessSuffix {
                suffix: escaped(suffix),
            });
        }
        Ok(Self {
            settings,
            template,
            lock: Mutex::new(()),
        })
    }

    /// The settings this outbox was built with.
    pub fn settings(&self) -> &OutboxSettings {
        &self.settings
    }

    /// `text` (an error or a path) with the patient identifier that `{ipp}` put in the file
    /// name replaced by `{ipp}`, for logs at info level and above; unchanged when the template
    /// has no `{ipp}` or the identifier is empty.
    pub fn redact(&self, text: &str, vars: &NameVars) -> String {
        let ipp = sanitize(&vars.ipp);
        let uses_ipp = self.template.contains(&Part::Var(Var::Ipp));
        if !uses_ipp || ipp.is_empty() || ipp == "_" {
            return text.to_owned();
        }
        text.replace(&ipp, "{ipp}")
    }

    /// The file name the template gives for these variables, before collision suffixes.
    pub fn render(&self, vars: &NameVars) -> Result<String, OutboxError> {
        let mut name = String::new();
        for part in &self.template {
            match part {
                Part::Literal(text) => name.push_str(text),
                Part::Var(Var::ControlId) => name.push_str(&sanitize(&vars.control_id)),
                Part::Var(Var::Ipp) => name.push_str(&sanitize(&vars.ipp)),
                Part::Var(Var::Seq) => {
                    let _ = write!(name, "{}", vars.seq);
                }
                Part::Var(Var::Date) => {
                    let at = vars.at;
                    let date = format!("{:04}{:02}{:02}", at.year(), at.month(), at.day());
                    name.push_str(&sanitize(&date));
                }
                Part::Var(Var::Time) => {
                    let at = vars.at;
                    let _ = write!(name, "{:02}{:02}{:02}", at.hour(), at.minute(), at.second());
                }
            }
        }
        if name.is_empty() || name.starts_with('.') {
            name.insert(0, '_');
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(OutboxError::NameTooLong {
                len: name.len(),
                max: MAX_NAME_BYTES,
            });
        }
        Ok(name)
    }

    /// Writes `bytes` under the name the template gives (suffixed if taken) and returns the
    /// final path; the file is complete and durable (and its witness written) when this
    /// returns. Blocking: the engine calls it in `spawn_blocking`.
    pub fn write(&self, vars: &NameVars, bytes: &[u8]) -> Result<PathBuf, OutboxError> {
        self.write_with_companion(vars, bytes, None)
    }

    /// [`Outbox::write`] with a companion file (a document beside an HPRIM message): written
    /// after the data file, under the same base name with the extension `companion.0`
    /// (`X.HPR`, then `X.pdf`), durably, before the witness. A name is free only when the
    /// companion's is too.
    pub fn write_with_companion(
        &self,
        vars: &NameVars,
        bytes: &[u8],
        companion: Option<(&str, &[u8])>,
    ) -> Result<PathBuf, OutboxError> {
        let base = self.render(vars)?;
        let folder = &self.settings.folder;
        // Held for the whole write so that a name found free stays ours until the rename.
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if fs::symlink_metadata(folder).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Err(OutboxError::FolderIsLink {
                folder: folder.clone(),
            });
        }
        let extension = companion.map(|(extension, _)| extension);
        let (path, tmp, witness) = self.free_name(&base, extension)?;
        if let Err(source) = write_tmp(&tmp, bytes) {
            return Err(OutboxError::Io {
                op: "write",
                path: tmp,
                source,
            });
        }
        if let Err(source) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(OutboxError::Io {
                op: "rename",
                path: tmp,
                source,
            });
        }
        fsops::sync_dir(folder);
        if let Some((extension, content)) = companion {
            let companion_path = path.with_extension(extension);
            let companion_tmp = tmp_of(&companion_path);
            if let Err(source) = write_tmp(&companion_tmp, content) {
                return Err(OutboxError::Io {
                    op: "write",
                    path: companion_tmp,
                    source,
                });
            }
            if let Err(source) = fs::rename(&companion_tmp, &companion_path) {
                let _ = fs::remove_file(&companion_tmp);
                return Err(OutboxError::Io {
                    op: "rename",
                    path: companion_tmp,
                    source,
                });
            }
            fsops::sync_dir(folder);
        }
        if let Some(witness) = witness {
            create_witness(&witness).map_err(|source| OutboxError::Io {
                op: "create witness",
                path: witness.clone(),
                source,
            })?;
            fsops::sync_dir(folder);
        }
        Ok(path)
    }

    /// The first suffixed name whose data file, temporary file and witness are all free:
    /// (data, tmp, witness) paths.
    fn free_name(
        &self,
        base: &str,
        companion: Option<&str>,
    ) -> Result<(PathBuf, PathBuf, Option<PathBuf>), OutboxError> {
        let folder = &self.settings.folder;
        for n in 0..fsops::MAX_NAME_TRIES {
            let name = before_extension(base, n);
            let path = folder.join(&name);
            let tmp = folder.join(format!("{name}.tmp"));
            let witness = self
                .settings
                .witness_suffix
                .as_deref()
                .map(|suffix| folder.join(witness_name(&name, suffix)));
            let free = |p: &Path| {
                fsops::is_free(p).map_err(|source| OutboxError::Io {
                    op: "check",
                    path: p.to_path_buf(),
                    source,
                })
            };
            let companion = companion.map(|extension| path.with_extension(extension));
            if free(&path)?
                && free(&tmp)?
                && witness.as_deref().map(free).transpose()?.unwrap_or(true)
                && companion.as_deref().map(free).transpose()?.unwrap_or(true)
                && companion
                    .as_deref()
                    .map(|c| free(&tmp_of(c)))
                    .transpose()?
                    .unwrap_or(true)
            {
                return Ok((path, tmp, witness));
            }
        }
        Err(OutboxError::NoFreeName {
            name: base.to_owned(),
            folder: folder.clone(),
            tries: fsops::MAX_NAME_TRIES,
        })
    }
}

/// `NAME.tmp` for `NAME`.
fn tmp_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes the new temporary file; on failure removes what this call created (only when it
/// created something: a name taken by someone else is left alone).
fn write_tmp(tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let written = fsops::write_new_synced(tmp, bytes);
    if let Err(error) = &written
        && error.kind() != io::ErrorKind::AlreadyExists
    {
        let _ = fs::remove_file(tmp);
    }
    written
}

/// Creates an empty witness file (refusing to replace one or to follow a link) and fsyncs it.
fn create_witness(path: &Path) -> io::Result<()> {
    fsops::create_new(path)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use rstest::rstest;

    fn vars() -> NameVars {
        NameVars {
            control_id: "MSG0001".into(),
            ipp: "123456".into(),
            seq: 42,
            at: jiff::civil::date(2026, 3, 7).at(9, 5, 1, 0),
        }
    }

    fn outbox(folder: &Path, template: &str, witness: Option<&str>) -> Outbox {
        Outbox::new(OutboxSettings {
            folder: folder.to_path_buf(),
            name_template: template.into(),
            witness_suffix: witness.map(str::to_owned),
        })
        .unwrap()
    }

    #[rstest]
    #[case::control_id("{control_id}.hl7", vars(), "MSG0001.hl7")]
    #[case::all(
        "ORU_{ipp}_{date}{time}_{seq}.HPR",
        vars(),
        "ORU_123456_20260307090501_42.HPR"
    )]
    #[case::slash("{control_id}.hl7", NameVars { control_id: "../../etc/passwd".into(), ..vars() }, "_.__.__etc_passwd.hl7")]
    #[case::backslash("x{ipp}.hl7", NameVars { ipp: "a\\b:c".into(), ..vars() }, "xa_b_c.hl7")]
    #[case::control_chars("{control_id}.hl7", NameVars { control_id: "A\rB\x0BC".into(), ..vars() }, "A_B_C.hl7")]
    #[case::dot_dot("{control_id}", NameVars { control_id: "..".into(), ..vars() }, "_._")]
    #[case::empty_value("{ipp}", NameVars { ipp: String::new(), ..vars() }, "_")]
    #[case::leading_dot("{ipp}.hl7", NameVars { ipp: String::new(), ..vars() }, "_.hl7")]
    #[case::long_value("{control_id}", NameVars { control_id: "x".repeat(100), ..vars() }, &"x".repeat(64))]
    #[case::unicode("{ipp}.hl7", NameVars { ipp: "Élo".into(), ..vars() }, "Élo.hl7")]
    fn ok_render(#[case] template: &str, #[case] vars: NameVars, #[case] expected: &str) {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            outbox(dir.path(), template, None).render(&vars).unwrap(),
            expected
        );
    }

    #[rstest]
    #[case::empty("", "outbox name template is empty")]
    #[case::unknown(
        "{control_id}_{patient}.hl7",
        "outbox name template: unknown variable `patient` at byte offset 13; expected one of control_id, date, time, seq, ipp"
    )]
    #[case::unknown_control(
        "{a\nb}",
        "outbox name template: unknown variable `a\\x0Ab` at byte offset 0; expected one of control_id, date, time, seq, ipp"
    )]
    #[case::unclosed("x{seq", "outbox name template: `{` at byte offset 1 is not closed")]
    #[case::unmatched("x}.hl7", "outbox name template: unmatched `}` at byte offset 1")]
    #[case::slash(
        "out/{seq}.hl7",
        "outbox name template: character `/` at byte offset 3 is not allowed in a file name"
    )]
    #[case::control(
        "{seq}\t.hl7",
        "outbox name template: character `\\x09` at byte offset 5 is not allowed in a file name"
    )]
    fn err_template(#[case] template: &str, #[case] text: &str) {
        let err = Outbox::new(OutboxSettings {
            folder: PathBuf::from("/out"),
            name_template: template.into(),
            witness_suffix: None,
        })
        .unwrap_err();
        assert_eq!(err.to_string(), text);
    }

    #[rstest]
    #[case::empty("", "outbox witness suffix `` is not a valid file name suffix")]
    #[case::slash("/OK", "outbox witness suffix `/OK` is not a valid file name suffix")]
    fn err_witness_suffix(#[case] suffix: &str, #[case] text: &str) {
        let err = Outbox::new(OutboxSettings {
            folder: PathBuf::from("/out"),
            name_template: "{seq}.hl7".into(),
            witness_suffix: Some(suffix.into()),
        })
        .unwrap_err();
        assert_eq!(err.to_string(), text);
    }

    #[test]
    fn err_name_too_long() {
        let dir = tempfile::tempdir().unwrap();
        let out = outbox(dir.path(), &format!("{}{{seq}}", "n".repeat(200)), None);
        assert_eq!(
            out.render(&vars()).unwrap_err().to_string(),
            "outbox file name of 202 bytes exceeds the maximum of 200 bytes"
        );
    }

    #[rstest]
    #[case::first("X.hl7", 0, "X.hl7")]
    #[case::ext("X.hl7", 2, "X-2.hl7")]
    #[case::no_ext("X", 1, "X-1")]
    #[case::leading_dot_only(".x", 1, ".x-1")]
    #[case::two_dots("a.b.hl7", 3, "a.b-3.hl7")]
    fn ok_before_extension(#[case] name: &str, #[case] n: u32, #[case] expected: &str) {
        assert_eq!(before_extension(name, n), expected);
    }

    #[rstest]
    #[case::replaces("R.HPR", ".OK", "R.OK")]
    #[case::no_ext("R", ".OK", "R.OK")]
    #[case::suffixed("R-1.HPR", ".ok", "R-1.ok")]
    fn ok_witness_name(#[case] name: &str, #[case] suffix: &str, #[case] expected: &str) {
        assert_eq!(witness_name(name, suffix), expected);
    }

    #[test]
    fn ok_write_suffixes_collisions_and_writes_witness() {
        let dir = tempfile::tempdir().unwrap();
        let out = outbox(dir.path(), "{control_id}.HPR", Some(".OK"));
        let first = out.write(&vars(), b"one").unwrap();
        let second = out.write(&vars(), b"two").unwrap();
        // A witness left alone makes its name taken too.
        fs::write(dir.path().join("MSG0001-2.OK"), b"").unwrap();
        let third = out.write(&vars(), b"three").unwrap();
        assert_eq!(first, dir.path().join("MSG0001.HPR"));
        assert_eq!(second, dir.path().join("MSG0001-1.HPR"));
        assert_eq!(third, dir.path().join("MSG0001-3.HPR"));
        assert_eq!(fs::read(&second).unwrap(), b"two");
        for witness in ["MSG0001.OK", "MSG0001-1.OK", "MSG0001-3.OK"] {
            assert_eq!(fs::read(dir.path().join(witness)).unwrap(), b"");
        }
        let tmp_left = fs::read_dir(dir.path())
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
        assert!(!tmp_left);
    }

    #[rstest]
    #[case::at_tmp("MSG0001.HPR.tmp", "MSG0001-1.HPR")]
    #[case::at_final("MSG0001.HPR", "MSG0001-1.HPR")]
    #[case::at_witness("MSG0001.OK", "MSG0001-1.HPR")]
    fn ok_write_skips_a_planted_link(#[case] planted: &str, #[case] written: &str) {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let store = outside.path().join("ordobridge.db");
        fs::write(&store, b"store bytes").unwrap();
        std::os::unix::fs::symlink(&store, dir.path().join(planted)).unwrap();
        let out = outbox(dir.path(), "{control_id}.HPR", Some(".OK"));
        let path = out.write(&vars(), b"H|").unwrap();
        assert_eq!(path, dir.path().join(written));
        assert_eq!(fs::read(&path).unwrap(), b"H|");
        assert_eq!(fs::read(&store).unwrap(), b"store bytes");
        assert_eq!(fs::read_link(dir.path().join(planted)).unwrap(), store);
    }

    #[test]
    fn err_write_into_a_linked_folder() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = dir.path().join("out");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = outbox(&link, "{seq}.hl7", None)
            .write(&vars(), b"x")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "outbox folder `{}` is a symbolic link; ordobridge never writes through a link in a shared folder: set `folder` to the real path",
                link.display()
            )
        );
        assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
    }

    #[test]
    fn err_write_tmp_taken_between_check_and_create_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("ordobridge.db");
        fs::write(&store, b"store bytes").unwrap();
        let tmp = dir.path().join("x.tmp");
        std::os::unix::fs::symlink(&store, &tmp).unwrap();
        let err = write_tmp(&tmp, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_link(&tmp).unwrap(), store);
        assert_eq!(fs::read(&store).unwrap(), b"store bytes");
    }

    #[test]
    fn ok_redact_hides_the_ipp_of_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let out = outbox(dir.path(), "ORU_{ipp}_{seq}.HPR", None);
        let text = "cannot write `/out/ORU_123456_42.HPR.tmp`: disk full";
        assert_eq!(
            out.redact(text, &vars()),
            "cannot write `/out/ORU_{ipp}_42.HPR.tmp`: disk full"
        );
        let without = outbox(dir.path(), "{control_id}.hl7", None);
        assert_eq!(without.redact("a 123456 b", &vars()), "a 123456 b");
    }

    #[test]
    fn err_write_into_missing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("gone");
        let out = outbox(&folder, "{seq}.hl7", None);
        let err = out.write(&vars(), b"x").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot write `{}`", folder.join("42.hl7.tmp").display())
        );
    }
}
