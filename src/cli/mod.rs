//! Pieces of the operator commands that are not the commands' wiring (that is `main.rs`):
//!
//! - `when`: the `--since`/`--until` times of `ordobridge journal` (pure parser).
//! - `json`: the `--json` documents of `journal`, `census` and `queue`.
//! - `status`: `ordobridge status`, reading a running daemon's `/status`.
//! - `out`: stdout writes that end quietly when the reader has gone (`| head -1`).

pub mod json;
pub mod out;
pub mod status;
pub mod when;

pub use out::{print_out, println_out};

/// The journal channel of pushed bundles.
pub use crate::engine::PUSH_CHANNEL;

/// A pushed bundle still `accepted` (and not held) this long after it arrived did not finish:
/// `ordobridge queue` lists it for an operator. A push normally settles within its request.
pub const UNFINISHED_PUSH_AFTER: std::time::Duration = std::time::Duration::from_secs(600);
pub use when::{WhenError, parse_when};

/// Untrusted text for a terminal: control characters escaped (`\u{1b}`, `\r`), everything
/// else (quotes, accents) as it is.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_controls_keeps_quotes_and_accents() {
        assert_eq!(
            super::escape_controls("l'hôpital \"x\"\u{1b}[31m\r\n"),
            "l'hôpital \"x\"\\u{1b}[31m\\r\\n"
        );
    }
}
