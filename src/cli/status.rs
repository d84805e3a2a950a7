//! `ordobridge status`: reads the running daemon's `GET /status` and says, in a few lines
//! and an exit code, whether it needs attention.
//!
//! Exit codes (for monitoring scripts): 0 when the daemon says `ok`, 1 when it says
//! `attention`, 2 when its status cannot be read (not reachable, refused, not JSON, an
//! unknown status). `/status` is an admin route: readable from `[http] admin_allow` networks
//! (loopback by default) or with `[http] admin_token` as a bearer token.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::text::error_chain;

/// How long the whole request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the status could not be read; every variant exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The URL given is not one.
    #[error("`{url}` is not an http(s) URL: {reason} (expected e.g. http://127.0.0.1:8717)")]
    BadUrl {
        /// As given, escaped.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--token-file` cannot be read.
    #[error("cannot read the admin token file `{path}`: {source} (it holds `[http] admin_token`)")]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No answer: refused, timed out, unreachable.
    #[error(
        "cannot reach the daemon at {url}: {reason}; is it running, and is `--url` its `[http] \
         bind` address?"
    )]
    Unreachable {
        /// Where.
        url: String,
        /// The client's error, with its causes.
        reason: String,
    },
    /// The admin guard said no.
    #[error(
        "{url} refused to show its status (HTTP 403: {body}); run this on the daemon's machine \
         (loopback) or pass `[http] admin_token` with --token or --token-file"
    )]
    Refused {
        /// Where.
        url: String,
        /// The daemon's explanation, trimmed.
        body: String,
    },
    /// Any other answer than 200 with a JSON object holding a `status`.
    #[error("{url} did not answer a daemon status: {what}; is `--url` an ordobridge daemon?")]
    NotAStatus {
        /// Where.
        url: String,
        /// What came back.
        what: String,
    },
}

/// The `/status` address for `url`: a base URL gets `/status` appended; one that already
/// ends in `/status` is used as given.
pub fn status_url(url: &str) -> Result<reqwest::Url, StatusError> {
    let bad = |reason: String| StatusError::BadUrl {
        url: super::escape_controls(url),
        reason,
    };
    let trimmed = url.trim().trim_end_matches('/');
    if !trimmed.contains("://") {
        return Err(bad("no `http://` in front".to_owned()));
    }
    let full = if trimmed.ends_with("/status") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/status")
    };
    let parsed = reqwest::Url::parse(&full).map_err(|e| bad(e.to_string()))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(bad(format!("scheme `{other}`"))),
    }
}

/// Reads the token from `--token` or the first line of `--token-file`.
pub fn read_token(
    token: Option<String>,
    token_file: Option<&std::path::Path>,
) -> Result<Option<String>, StatusError> {
    if let Some(token) = token {
        return Ok(Some(token.trim().to_owned()));
    }
    let Some(path) = token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| StatusError::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Some(text.trim().to_owned()))
}

/// Fetches `/status` and returns its JSON body.
pub async fn fetch(url: &reqwest::Url, token: Option<&str>) -> Result<Value, StatusError> {
    let shown = url.to_string();
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("ordobridge-status/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StatusError::Unreachable {
            url: shown.clone(),
            reason: error_chain(&e),
        })?;
    let mut request = client.get(url.clone());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| StatusError::Unreachable {
        url: shown.clone(),
        reason: error_chain(&e),
    })?;
    let code = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| StatusError::Unreachable {
            url: shown.clone(),
            reason: error_chain(&e),
        })?;
    let excerpt = || crate::text::readable_prefix(body.trim().as_bytes(), 200);
    if code == reqwest::StatusCode::FORBIDDEN {
        return Err(StatusError::Refused {
            url: shown,
            body: excerpt(),
        });
    }
    if code != reqwest::StatusCode::OK {
        return Err(StatusError::NotAStatus {
            url: shown,
            what: format!("HTTP {code}: {}", excerpt()),
        });
    }
    let value: Value = serde_json::from_str(&body).map_err(|e| StatusError::NotAStatus {
        url: shown.clone(),
        what: format!("not JSON ({e})"),
    })?;
    if value.get("status").and_then(Value::as_str).is_none() {
        return Err(StatusError::NotAStatus {
            url: shown,
            what: "a JSON value without a `status` string".to_owned(),
        });
    }
    Ok(value)
}

/// 0 for `ok`, 1 for `attention`, 2 for anything else.
pub fn exit_code(status: &Value) -> ExitCode {
    match status.get("status").and_then(Value::as_str) {
        Some("ok") => ExitCode::SUCCESS,
        Some("attention") => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

/// The few lines a person reads: overall status, channels, destinations with their queue
/// and head, then what needs attention. Untrusted text (error messages) is escaped.
pub fn summary(url: &str, status: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => super::escape_controls(s),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let count = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{url}: {}",
        text(status.get("status").unwrap_or(&Value::Null))
    );
    let empty = serde_json::Map::new();
    let object = |key: &str| status.get(key).and_then(Value::as_object).unwrap_or(&empty);

    let channels = object("channels");
    let _ = writeln!(out, "channels ({})", channels.len());
    for (name, c) in channels {
        let kind = c.get("kind").and_then(Value::as_str).unwrap_or("?");
        let detail = match kind {
            "mllp" => format!(
                "{} connection(s) open, {} frame(s), {} refused peer(s)",
                count(c, "connections_open"),
                count(c, "frames"),
                count(c, "refused_peers")
            ),
            "file" => {
                let mut d = format!(
                    "{} file(s) archived, {} rejected",
                    count(c, "files_archived"),
                    count(c, "files_rejected")
                );
                if let Some(error) = c.get("last_error").filter(|e| !e.is_null()) {
                    let _ = write!(d, ", last error: {}", text(error));
                }
                d
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<16} {:<5} {detail}",
            super::escape_controls(name),
            kind
        );
    }

    let destinations = object("destinations");
    let queues = object("queues");
    let _ = writeln!(out, "destinations ({})", destinations.len());
    for (name, d) in destinations {
        let queue = queues.get(name).unwrap_or(&Value::Null);
        let mut line = format!(
            "  {:<16} {} pending, {} dead, {} delivered",
            super::escape_controls(name),
            count(queue, "pending"),
            count(queue, "dead"),
            count(d, "delivered")
        );
        if let Some(head) = d.get("head") {
            let _ = write!(
                line,
                "; head: {} attempt(s), waiting {}s",
                count(head, "attempts"),
                count(head, "waiting_seconds")
            );
            if let Some(error) = head.get("last_error").filter(|e| !e.is_null()) {
                let _ = write!(line, ", last error: {}", text(error));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }

    if let Some(push) = status.get("push") {
        let _ = writeln!(
            out,
            "push: {} bundle(s) held (oldest {}s)",
            count(push, "held"),
            count(push, "oldest_held_seconds")
        );
    }

    let attention = status
        .get("attention")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if attention.is_empty() {
        out.push_str("attention: none\n");
    } else {
        let _ = writeln!(out, "attention ({})", attention.len());
        for item in attention {
            let _ = writeln!(out, "  {}", text(item));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    #[rstest]
    #[case::ok_base("http://127.0.0.1:8717", "http://127.0.0.1:8717/status")]
    #[case::ok_base_slash("http://127.0.0.1:8717/", "http://127.0.0.1:8717/status")]
    #[case::ok_full("https://bridge.local/status", "https://bridge.local/status")]
    #[case::ok_prefix("http://h:1/ordo", "http://h:1/ordo/status")]
    fn ok_status_url(#[case] url: &str, #[case] expected: &str) {
        assert_eq!(status_url(url).unwrap().as_str(), expected);
    }

    #[rstest]
    #[case::err_no_scheme(
        "127.0.0.1:8717",
        "`127.0.0.1:8717` is not an http(s) URL: no `http://` in front (expected e.g. http://127.0.0.1:8717)"
    )]
    #[case::err_ftp(
        "ftp://h/",
        "`ftp://h/` is not an http(s) URL: scheme `ftp` (expected e.g. http://127.0.0.1:8717)"
    )]
    #[case::err_garbage(
        "http://[::1",
        "`http://[::1` is not an http(s) URL: invalid IPv6 address (expected e.g. http://127.0.0.1:8717)"
    )]
    fn err_status_url(#[case] url: &str, #[case] expected: &str) {
        assert_eq!(status_url(url).unwrap_err().to_string(), expected);
    }

    #[rstest]
    #[case::ok_ok("ok", ExitCode::SUCCESS)]
    #[case::ok_attention("attention", ExitCode::from(1))]
    #[case::err_unknown("starting", ExitCode::from(2))]
    fn exit_codes(#[case] status: &str, #[case] code: ExitCode) {
        assert_eq!(exit_code(&json!({ "status": status })), code);
    }

    #[test]
    fn ok_summary_names_channels_destinations_and_attention() {
        let status = json!({
            "status": "attention",
            "attention": ["destination `ehr`: the message at the head of the queue failed 5 time(s): connection refused"],
            "channels": {
                "adt-in": {"kind": "mllp", "connections_open": 1, "frames": 42, "refused_peers": 0},
                "lab": {"kind": "file", "files_archived": 3, "files_rejected": 1, "last_error": "folder\u{1b} gone"}
            },
            "destinations": {
                "ehr": {"sent": 9, "delivered": 7, "head": {"attempts": 5, "last_error": "connection refused", "waiting_seconds": 95}}
            },
            "queues": {"ehr": {"pending": 2, "dead": 1}},
            "push": {"held": 1, "oldest_held_seconds": 30, "released": {}}
        });
        assert_eq!(
            summary("http://127.0.0.1:8717", &status),
            "http://127.0.0.1:8717: attention\n\
             channels (2)\n  \
               adt-in           mllp  1 connection(s) open, 42 frame(s), 0 refused peer(s)\n  \
               lab              file  3 file(s) archived, 1 rejected, last error: folder\\u{1b} gone\n\
             destinations (1)\n  \
               ehr              2 pending, 1 dead, 7 delivered; head: 5 attempt(s), waiting 95s, last error: connection refused\n\
             push: 1 bundle(s) held (oldest 30s)\n\
             attention (1)\n  \
               destination `ehr`: the message at the head of the queue failed 5 time(s): connection refused\n"
        );
    }

    #[test]
    fn ok_summary_of_a_quiet_daemon() {
        let status = json!({"status": "ok", "attention": [], "channels": {}, "destinations": {}, "queues": {}});
        assert_eq!(
            summary("u", &status),
            "u: ok\nchannels (0)\ndestinations (0)\nattention: none\n"
        );
    }
}
