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
pub use when::{WhenError, parse_when};
