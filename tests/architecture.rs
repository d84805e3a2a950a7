//! Issue 12, dependencies that point one way: a check over the source of `src/` (its `use`
//! lines and the qualified paths in its code, tests at the bottom of a file left out) that
//!
//! - the pure modules `hl7`, `hprim`, `mapping`, `posos::bundle` and `census` use no `tokio`,
//!   no `std::fs`, no `tracing` and no `crate::config` (bytes or values in, values or errors
//!   out: no I/O, no logging, no settings);
//! - no subsystem imports `crate::config`: `hl7`, `hprim`, `mapping`, `census`, `diagnostics`,
//!   `text`, `mllp`, `filedrop`, `store`, `delivery`, `retry`, `http`, `posos`, `tls`,
//!   `metrics`, `console` (the configuration assembles the subsystems' settings, nobody below
//!   it imports it);
//! - nothing but the top (`engine`, `cli`, `tools`, `main.rs`) imports `crate::engine` (the
//!   wiring uses the modules, never the other way).
//!
//! What still breaks a rule is listed in [`ALLOWED`] with the issue that removes it; an entry
//! that is no longer needed fails the test too, so the list only shrinks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Module prefixes (under `src/`) that must be pure.
const PURE: [&str; 6] = [
    "hl7",
    "hprim",
    "mapping",
    "posos/bundle",
    "census.rs",
    "diagnostics.rs",
];

/// What a pure module must not use.
const IMPURE: [&str; 4] = ["tokio", "std::fs", "tracing", "crate::config"];

/// Module prefixes that must not import the configuration.
const BELOW_CONFIG: [&str; 16] = [
    "hl7",
    "hprim",
    "mapping",
    "census.rs",
    "diagnostics.rs",
    "text.rs",
    "mllp",
    "filedrop",
    "store",
    "delivery",
    "retry.rs",
    "http",
    "posos",
    "tls",
    "metrics.rs",
    "console",
];

/// Module prefixes that may import the engine (the wiring and the commands on top of it).
const TOP: [&str; 5] = ["engine", "cli", "tools.rs", "main.rs", "lib.rs"];

/// Breaks of the rules that are known and scheduled: (file under `src/`, forbidden path, why).
const ALLOWED: [(&str, &str, &str); 0] = [];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, as paths relative to `src/` with `/` separators, sorted.
fn rust_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let entries = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(src()).expect("under src");
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

/// The module path of a file under `src/`: `mapping/load.rs` → `["mapping", "load"]`,
/// `hl7/mod.rs` → `["hl7"]`, `lib.rs` → `[]`.
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without its tests (everything from the first `#[cfg(test)]` on: the
/// `mod tests` at the bottom) and without comments.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let line = line.split(" // ").next().unwrap_or_default();
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Expands one `use` tree (`std::{fs, io::Read}`) into the paths it names.
fn expand_use(tree: &str) -> Vec<String> {
    // One space between words (`X as Y`), none around punctuation.
    let mut tree = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    for (spaced, tight) in [
        (" ::", "::"),
        (":: ", "::"),
        ("{ ", "{"),
        (" }", "}"),
        (", ", ","),
        (" ,", ","),
    ] {
        tree = tree.replace(spaced, tight);
    }
    let Some(open) = tree.find('{') else {
        let path = tree.split(' ').next().unwrap_or_default();
        return vec![path.trim_end_matches("::*").to_owned()];
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = tree[open + 1..]
        .strip_suffix('}')
        .unwrap_or(&tree[open + 1..]);
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .flat_map(expand_use)
        .map(|path| match path.as_str() {
            "self" => prefix.to_owned(),
            _ => format!("{prefix}::{path}"),
        })
        .collect()
}

/// Resolves `self::`, `super::` and `crate::` against the module `module`; other paths
/// (external crates, `std`) are kept as written.
fn resolve(path: &str, module: &[String]) -> String {
    let mut segments: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> = Vec::new();
    match segments.first().copied() {
        Some("crate") => {
            segments.remove(0);
        }
        Some("self") => {
            base = module.to_vec();
            segments.remove(0);
        }
        Some("super") => {
            base = module.to_vec();
            while segments.first() == Some(&"super") {
                segments.remove(0);
                base.pop();
            }
        }
        _ => return path.to_owned(),
    }
    let mut all = vec!["crate".to_owned()];
    all.extend(base);
    all.extend(segments.iter().map(|s| (*s).to_owned()));
    all.join("::")
}

/// Every path the code names: the `use` declarations, expanded, and the qualified paths
/// (`tokio::spawn`, `std::fs::read`, `super::config::X`) written in the code, resolved
/// against the file's module.
fn paths_used(code: &str, module: &[String]) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    // `use` declarations, possibly over several lines.
    let mut rest = code;
    while let Some(at) = find_use(rest) {
        let after = &rest[at..];
        let end = after.find(';').unwrap_or(after.len());
        let tree = after[..end]
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub ");
        let tree = tree.trim_start_matches("use").trim();
        for path in expand_use(tree) {
            paths.insert(resolve(&path, module));
        }
        rest = &after[end..];
    }
    // Qualified paths anywhere in the code.
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = ident(bytes[i])
            && (i == 0 || (!ident(bytes[i - 1]) && bytes[i - 1] != b':'))
            && !bytes[i].is_ascii_digit();
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        loop {
            while j < bytes.len() && ident(bytes[j]) {
                j += 1;
            }
            if bytes.get(j..j + 2) == Some(b"::") && bytes.get(j + 2).is_some_and(|b| ident(*b)) {
                j += 2;
            } else {
                break;
            }
        }
        let path = &code[i..j];
        if path.contains("::") {
            paths.insert(resolve(path, module));
        }
        i = j.max(i + 1);
    }
    paths
}

/// Offset of the next `use` declaration (at the start of a line, maybe `pub`).
fn find_use(code: &str) -> Option<usize> {
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        for head in ["use ", "pub use ", "pub(crate) use ", "pub(super) use "] {
            if trimmed.starts_with(head) {
                return Some(offset + indent);
            }
        }
        offset += line.len();
    }
    None
}

/// Whether `path` is `forbidden` or inside it (`tokio` also covers `tokio_util`).
fn names(path: &str, forbidden: &str) -> bool {
    if forbidden == "tokio" {
        let first = path.split("::").next().unwrap_or_default();
        return first == "tokio" || first.starts_with("tokio_");
    }
    path == forbidden || path.starts_with(&format!("{forbidden}::"))
}

/// (file, forbidden, example path) for every break of a rule under `src/`.
fn violations() -> BTreeSet<(String, String, String)> {
    let mut found = BTreeSet::new();
    for file in rust_files(&src()) {
        let pure = PURE.iter().any(|p| under(&file, p));
        let below_config = BELOW_CONFIG.iter().any(|p| under(&file, p));
        let top = TOP.iter().any(|p| under(&file, p));
        let mut rules: Vec<&str> = Vec::new();
        if pure {
            rules.extend(IMPURE);
        }
        if below_config && !rules.contains(&"crate::config") {
            rules.push("crate::config");
        }
        if !top {
            rules.push("crate::engine");
        }
        if rules.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(src().join(&file)).expect("read source");
        let used = paths_used(&code_of(&text), &module_of(&file));
        for forbidden in rules {
            if let Some(path) = used.iter().find(|p| names(p, forbidden)) {
                found.insert((file.clone(), forbidden.to_owned(), path.clone()));
            }
        }
    }
    found
}

/// Whether `file` (relative to `src/`) is the module `prefix` or inside it.
fn under(file: &str, prefix: &str) -> bool {
    file == prefix || file.starts_with(&format!("{prefix}/"))
}

#[test]
fn pure_modules_use_no_io_logging_or_configuration() {
    let allowed: BTreeSet<(&str, &str)> = ALLOWED.iter().map(|(f, p, _)| (*f, *p)).collect();
    let found = violations();
    let unexpected: Vec<String> = found
        .iter()
        .filter(|(file, forbidden, _)| !allowed.contains(&(file.as_str(), forbidden.as_str())))
        .map(|(file, forbidden, path)| {
            format!("src/{file} uses `{path}` (no `{forbidden}` allowed there)")
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "dependencies pointing the wrong way (see the module docs of tests/architecture.rs; \
         pass values in instead, or log and read files in the caller):\n{}",
        unexpected.join("\n")
    );
    let stale: Vec<String> = allowed
        .iter()
        .filter(|(file, forbidden)| !found.iter().any(|(f, p, _)| f == file && p == forbidden))
        .map(|(file, forbidden)| format!("src/{file} no longer uses `{forbidden}`"))
        .collect();
    assert!(
        stale.is_empty(),
        "fixed, well done: remove these entries from ALLOWED in tests/architecture.rs:\n{}",
        stale.join("\n")
    );
}

#[test]
fn ok_use_trees_expand() {
    assert_eq!(
        expand_use("std::{fs, io::{self, Read}}"),
        ["std::fs", "std::io", "std::io::Read"]
    );
    assert_eq!(expand_use("tracing::warn"), ["tracing::warn"]);
    assert_eq!(expand_use("super::config::X as Y"), ["super::config::X"]);
}

#[test]
fn ok_relative_paths_resolve_against_the_module() {
    let module = module_of("http/mapping.rs");
    assert_eq!(module, ["http", "mapping"]);
    assert_eq!(
        resolve("super::super::config::ConfigError", &module),
        "crate::config::ConfigError"
    );
    assert_eq!(resolve("self::x", &module), "crate::http::mapping::x");
    assert_eq!(resolve("std::fs::read", &module), "std::fs::read");
    assert_eq!(module_of("hl7/mod.rs"), ["hl7"]);
}

#[test]
fn ok_code_paths_are_found_and_tests_left_out() {
    let code = code_of(
        "use std::{fs, io};\n\
         // tracing::info!(\"a comment\")\n\
         fn f() { tokio::spawn(async {}); let _ = super::config::X; }\n\
         #[cfg(test)]\n\
         mod tests { use tracing::warn; }\n",
    );
    let used = paths_used(&code, &module_of("hl7/path.rs"));
    assert!(used.contains("std::fs"), "{used:?}");
    assert!(used.contains("tokio::spawn"), "{used:?}");
    assert!(used.contains("crate::hl7::config::X"), "{used:?}");
    assert!(!used.iter().any(|p| p.starts_with("tracing")), "{used:?}");
}

#[test]
fn err_a_forbidden_path_is_named() {
    assert!(names("tokio_util::codec", "tokio"));
    assert!(names("std::fs::read", "std::fs"));
    assert!(names("crate::config", "crate::config"));
    assert!(!names("crate::configure", "crate::config"));
    assert!(!names("std::fsx", "std::fs"));
}
