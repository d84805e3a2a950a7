//! The push endpoint's bearer token when it lives in a file (`[push] token_file`): read at
//! start, or generated there at the first start, so the sample configuration runs with no
//! secret to invent and nothing weaker than a random 256-bit token.
//!
//! The file is created with `create_new` (a planted file or symlink at its name makes the start
//! fail instead of being followed) and mode `0600`, written, fsync'd, and its folder fsync'd;
//! only then is the token used. The token itself never reaches the logs: the binary prints it
//! once on standard output at the start that generated it.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::config::Config;

/// A token this start wrote to its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedToken {
    /// The file it is kept in.
    pub path: PathBuf,
    /// The token, to hand to Posos.
    pub token: String,
}

/// Fills `[push] token` from `[push] token_file` when the configuration names no token:
/// reads the file, or generates it when it does not exist. `Ok(Some(_))` when this call
/// generated the token. An explicit `token` wins and the file is not touched.
pub fn resolve_push_token(config: &mut Config) -> Result<Option<GeneratedToken>, String> {
    match config.push.as_mut() {
        Some(push) => resolve(&mut push.token, push.token_file.as_deref(), "push"),
        None => Ok(None),
    }
}

/// [`resolve_push_token`] for `[fhir] token` and `token_file` (the applications' token for the
/// `/fhir` search and document routes).
pub fn resolve_fhir_token(config: &mut Config) -> Result<Option<GeneratedToken>, String> {
    match config.fhir.as_mut() {
        Some(fhir) => resolve(&mut fhir.token, fhir.token_file.as_deref(), "fhir"),
        None => Ok(None),
    }
}

/// Fills `token` from `token_file` (read, or generated when missing) unless it is set.
fn resolve(
    token: &mut Option<String>,
    token_file: Option<&Path>,
    section: &str,
) -> Result<Option<GeneratedToken>, String> {
    if token.is_some() {
        return Ok(None);
    }
    let Some(path) = token_file.map(Path::to_path_buf) else {
        return Ok(None);
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            *token = Some(text.trim().to_string());
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let generated = generate_token()?;
            write_new_token_file(&path, &generated)?;
            *token = Some(generated.clone());
            Ok(Some(GeneratedToken {
                path,
                token: generated,
            }))
        }
        Err(e) => Err(format!(
            "cannot read the {section} token file `{}`: {e} (check `[{section}] token_file` and the file's owner)",
            path.display()
        )),
    }
}

/// 32 random bytes from the operating system, URL-safe Base64 without padding (43 characters).
fn generate_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| format!("cannot draw random bytes for the push token: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn write_new_token_file(path: &Path, token: &str) -> Result<(), String> {
    let shown = path.display();
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder).map_err(|e| {
        format!(
            "cannot create the folder of the push token file `{shown}`: {e} (create it, writable by ordobridge)"
        )
    })?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create the push token file `{shown}`: {e}"))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write the push token file `{shown}`: {e}"))?;
    if let Ok(dir) = std::fs::File::open(folder) {
        // Best effort: the file is complete either way; this makes its name durable.
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn config(dir: &Path, push: &str) -> Config {
        let text = format!("[store]\npath = \"ob.db\"\n[push]\n{push}\n");
        Config::from_str_with_env(&text, &dir.join("ob.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn ok_generated_once_then_read() {
        let dir = tempfile::tempdir().expect("dir");
        let mut first = config(dir.path(), "token_file = \"var/push-token\"");
        let generated = resolve_push_token(&mut first)
            .expect("resolve")
            .expect("generated");
        assert_eq!(generated.path, dir.path().join("var/push-token"));
        assert_eq!(generated.token.len(), 43);
        let mode = std::fs::metadata(&generated.path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            first.push.as_ref().and_then(|p| p.token.clone()),
            Some(generated.token.clone())
        );
        // The next start reads the same token and generates nothing; `check` accepts the file.
        let mut second = config(dir.path(), "token_file = \"var/push-token\"");
        assert_eq!(resolve_push_token(&mut second).expect("resolve"), None);
        assert_eq!(
            second.push.as_ref().and_then(|p| p.token.clone()),
            Some(generated.token)
        );
    }

    #[test]
    fn ok_configured_token_wins_over_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let mut config = config(
            dir.path(),
            "token = \"0123456789abcdefghijklmnopqrstuvwxyz\"\ntoken_file = \"var/push-token\"",
        );
        assert_eq!(resolve_push_token(&mut config).expect("resolve"), None);
        assert!(!dir.path().join("var/push-token").exists());
    }

    #[test]
    fn err_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().expect("dir");
        // Loaded (and checked) before the link is planted: `check` itself refuses a link there.
        let mut config = config(dir.path(), "token_file = \"push-token\"");
        // A dangling link: reading it finds nothing, so the start goes on to create the file.
        let victim = dir.path().join("victim");
        std::os::unix::fs::symlink(&victim, dir.path().join("push-token")).expect("symlink");
        let err = resolve_push_token(&mut config).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "cannot create the push token file `{}`: ",
                dir.path().join("push-token").display()
            )),
            "{err}"
        );
        assert!(!victim.exists(), "nothing was written through the link");
    }
}
