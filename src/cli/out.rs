//! Writing a command's output to stdout.
//!
//! `print!` panics (with a backtrace) when stdout is a pipe whose reader went away:
//! `ordobridge queue | head -1`. Every printing command writes through [`print_out`] instead,
//! which ends the process quietly, exit code 0, on a closed pipe (EPIPE): the reader took what
//! it wanted. Any other write error is an error the user can act on.

use std::io::{ErrorKind, Write as _};

/// Writes `text` to stdout and flushes it; on EPIPE exits the process with code 0 and no
/// message.
pub fn print_out(text: &str) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(format!(
            "cannot write to stdout: {e}; check where the output goes (disk full? closed?)"
        )),
    }
}

/// [`print_out`] with a line end.
pub fn println_out(line: &str) -> Result<(), String> {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    print_out(&text)
}
