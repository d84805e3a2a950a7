//! Problems found in a file an analyst wrote (the configuration, a mapping), each located by
//! file, line, column and dotted key, so every message says where to look. Pure: the callers
//! read the files; configuration and mappings share this one report.

use std::fmt;
use std::path::PathBuf;

/// One problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file it was read from.
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub line: Option<(usize, usize)>,
    /// Dotted key, e.g. `inbound.adt-in.bind` or `segment[2].fields.PID-3.1`; empty for the
    /// whole file.
    pub key: String,
    /// What is wrong and, when it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.line {
            write!(f, ":{line}:{column}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one file, one per line when displayed, so an analyst fixes them in
/// one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`; past the end, the
/// end.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_start("a = 1\nb = 2\n", 0, (1, 1))]
    #[case::ok_second_line("a = 1\nb = 2\n", 8, (2, 3))]
    #[case::ok_characters_not_bytes("é = 1\nbé = 2\n", 10, (2, 3))]
    #[case::ok_past_the_end("a", 99, (1, 2))]
    fn line_column_counts_lines_and_characters(
        #[case] text: &str,
        #[case] offset: usize,
        #[case] expected: (usize, usize),
    ) {
        assert_eq!(line_column(text, offset), expected);
    }

    #[test]
    fn ok_report_names_file_place_and_key_one_per_line() {
        let report = Diagnostics(vec![
            Diagnostic {
                file: PathBuf::from("/etc/ob.toml"),
                line: Some((3, 8)),
                key: "inbound.adt-in.bind".into(),
                message: "not an address".into(),
            },
            Diagnostic {
                file: PathBuf::from("/etc/ob.toml"),
                line: None,
                key: String::new(),
                message: "no channel".into(),
            },
        ]);
        assert_eq!(
            report.to_string(),
            "/etc/ob.toml:3:8: `inbound.adt-in.bind`: not an address\n/etc/ob.toml: no channel"
        );
    }
}
