//! The browser the browser tests drive: headless Chromium under playwright-core, both found on
//! the machine or installed by the tests themselves under the target folder.
//!
//! - playwright-core is always installed with npm (exact version, no browser download).
//! - Chromium: `$ORDOBRIDGE_TEST_CHROMIUM` when set, else the system's (`/usr/bin/chromium`,
//!   then `chromium` or `chromium-browser` on the `PATH`) when it answers `--version`, else the
//!   npm package `@sparticuz/chromium` (a headless Chromium binary, no root, no apt), unpacked
//!   once into its own folder under the target folder (never into the shared `/tmp`).
//!
//! Each install is built in a private staging folder and renamed into place when complete, so
//! test binaries running in parallel never see a half-installed package; the loser of a race
//! uses the winner's. Node.js and npm must be on the `PATH`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The exact playwright-core the browser tests drive Chromium with.
pub const PLAYWRIGHT_CORE_VERSION: &str = "1.64.1";

/// The exact `@sparticuz/chromium` installed when the machine has no Chromium: Chromium 147,
/// which runs with playwright-core 1.64.1. The last release whose `engines` accept Node.js 20
/// (147.0.1 and later require Node.js 22.17).
pub const SPARTICUZ_CHROMIUM_VERSION: &str = "147.0.0";

/// The oldest Node.js `@sparticuz/chromium` [`SPARTICUZ_CHROMIUM_VERSION`] supports.
const SPARTICUZ_MIN_NODE: (u32, u32) = (20, 11);

/// Names a Chromium executable to use instead of looking for one.
pub const CHROMIUM_ENV: &str = "ORDOBRIDGE_TEST_CHROMIUM";

/// Debian's `chromium` package, looked for first.
const SYSTEM_CHROMIUM: &str = "/usr/bin/chromium";

/// Names looked for on the `PATH` after [`SYSTEM_CHROMIUM`].
const CHROMIUM_NAMES: [&str; 2] = ["chromium", "chromium-browser"];

/// What the browser scripts (`tests/browser/chromium.mjs`) need to start the browser.
#[derive(Debug, Clone)]
pub struct Browser {
    /// The npm folder holding `node_modules/playwright-core`.
    pub playwright_dir: PathBuf,
    /// The Chromium executable.
    pub chromium: PathBuf,
    /// The npm folder holding `node_modules/@sparticuz/chromium` when the tests installed
    /// Chromium themselves: `launch.mjs` then starts it with that package's `args`.
    pub sparticuz_dir: Option<PathBuf>,
}

impl Browser {
    /// Sets the environment `launch.mjs` reads the browser from.
    pub fn set_env(&self, command: &mut Command) {
        command
            .env("PLAYWRIGHT_CORE_DIR", &self.playwright_dir)
            .env("CHROMIUM", &self.chromium);
        match &self.sparticuz_dir {
            Some(dir) => command.env("SPARTICUZ_CHROMIUM_DIR", dir),
            None => command.env_remove("SPARTICUZ_CHROMIUM_DIR"),
        };
    }
}

/// Finds or installs playwright-core and a headless Chromium (see the module docs). Anything
/// missing (node, npm, network access to the npm registry, a Chromium that does not start)
/// fails the test saying which tool or which command.
pub fn browser() -> Browser {
    let node = tool_version("node");
    tool_version("npm");
    let playwright_dir = npm_install(
        &format!("playwright-core-{PLAYWRIGHT_CORE_VERSION}"),
        &format!("playwright-core@{PLAYWRIGHT_CORE_VERSION}"),
        |_| {},
    );
    if let Some(chromium) = system_chromium() {
        return Browser {
            playwright_dir,
            chromium,
            sparticuz_dir: None,
        };
    }
    require_node_for_sparticuz(&node);
    let sparticuz_dir = npm_install(
        &format!("sparticuz-chromium-{SPARTICUZ_CHROMIUM_VERSION}"),
        &format!("@sparticuz/chromium@{SPARTICUZ_CHROMIUM_VERSION}"),
        unpack_sparticuz,
    );
    let chromium = sparticuz_dir.join("chromium").join("chromium");
    assert!(
        chromium.is_file(),
        "the installed @sparticuz/chromium has no executable at {}; remove {} to reinstall it",
        chromium.display(),
        sparticuz_dir.display()
    );
    Browser {
        playwright_dir,
        chromium,
        sparticuz_dir: Some(sparticuz_dir),
    }
}

/// `TOOL --version`, trimmed; fails the test when the tool is missing or broken.
fn tool_version(tool: &str) -> String {
    let output = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        Ok(output) => panic!(
            "`{tool} --version` failed ({}): {}; the browser tests need Node.js and npm on the \
             PATH to install playwright-core (and Chromium when the machine has none)",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(e) => panic!(
            "`{tool}` is missing ({e}); the browser tests need Node.js and npm on the PATH to \
             install playwright-core (and Chromium when the machine has none): install Node.js \
             (Debian: `apt-get install nodejs npm`)"
        ),
    }
}

/// Fails the test when `node --version` (`v20.20.2`) is older than [`SPARTICUZ_MIN_NODE`].
fn require_node_for_sparticuz(version: &str) {
    let mut parts = version
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    let parsed = (parts.next().flatten(), parts.next().flatten());
    let (min_major, min_minor) = SPARTICUZ_MIN_NODE;
    let recent = match parsed {
        (Some(major), Some(minor)) => (major, minor) >= (min_major, min_minor),
        _ => panic!("cannot read the Node.js version from `node --version`: `{version}`"),
    };
    assert!(
        recent,
        "no system Chromium, and Node.js {version} is too old for @sparticuz/chromium \
         {SPARTICUZ_CHROMIUM_VERSION} (needs {min_major}.{min_minor} or later): install a newer \
         Node.js, or a Chromium (Debian: `apt-get install chromium`), or set {CHROMIUM_ENV} to a \
         Chromium executable"
    );
}

/// The Chromium of the machine: [`CHROMIUM_ENV`] (which must work), else the first of
/// [`SYSTEM_CHROMIUM`] and [`CHROMIUM_NAMES`] on the `PATH` that answers `--version` (a
/// candidate that does not, such as a snap wrapper without snapd, is skipped with a note).
fn system_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CHROMIUM_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if let Err(why) = chromium_version(&path) {
            panic!("{CHROMIUM_ENV}={}: {why}", path.display());
        }
        return Some(path);
    }
    let on_path = CHROMIUM_NAMES.iter().filter_map(|name| find_on_path(name));
    for candidate in std::iter::once(PathBuf::from(SYSTEM_CHROMIUM)).chain(on_path) {
        if !candidate.is_file() {
            continue;
        }
        match chromium_version(&candidate) {
            Ok(_) => return Some(candidate),
            Err(why) => eprintln!("browser tests: skipping {}: {why}", candidate.display()),
        }
    }
    None
}

/// `CHROMIUM --version`, or why it does not answer.
fn chromium_version(chromium: &Path) -> Result<String, String> {
    let output = Command::new(chromium)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{} --version`: {e}", chromium.display()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "`{} --version` failed ({}): {}",
            chromium.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The first executable file `name` in a folder of the `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A staging folder removed when dropped, unless it was renamed into place.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The npm folder `TARGET_TMP/NAME` holding `package` (`name@version`), installed on first
/// use; `finish` runs in the staging folder after `npm install` (to unpack a binary, say).
pub fn npm_install(name: &str, package: &str, finish: impl FnOnce(&Path)) -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let root = tmp.join(name);
    let ready = root.join(".ready");
    if ready.exists() {
        return root;
    }
    // Per process and per call: tests of one binary run on parallel threads.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = Staging(tmp.join(format!("{name}-staging-{}-{call}", std::process::id())));
    let _ = std::fs::remove_dir_all(&staging.0);
    std::fs::create_dir_all(&staging.0).unwrap_or_else(|e| {
        panic!(
            "cannot create the staging folder {} to install {package}: {e}",
            staging.0.display()
        )
    });
    let manifest = staging.0.join("package.json");
    std::fs::write(
        &manifest,
        b"{\"name\":\"ordobridge-browser-tests\",\"private\":true}\n",
    )
    .unwrap_or_else(|e| panic!("cannot write {}: {e}", manifest.display()));
    run(
        &format!("installing {package} from the npm registry (`npm config get registry`)"),
        Command::new("npm")
            .current_dir(&staging.0)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--save-exact",
                "--loglevel=error",
                package,
            ]),
    );
    finish(&staging.0);
    let staged_ready = staging.0.join(".ready");
    std::fs::write(&staged_ready, b"ok")
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", staged_ready.display()));
    // A failed rename means another test binary got there first: use its folder (the staging
    // folder goes with its guard).
    let _ = std::fs::rename(&staging.0, &root);
    assert!(
        ready.exists(),
        "{package} could not be installed in {} (renaming {} failed)",
        root.display(),
        staging.0.display()
    );
    root
}

/// Unpacks `@sparticuz/chromium` with its own `executablePath()` into `STAGING/chromium/`
/// (its `os.tmpdir()`, set through `TMPDIR`: never the shared `/tmp`), then checks that the
/// binary starts.
fn unpack_sparticuz(staging: &Path) {
    let unpacked = staging.join("chromium");
    std::fs::create_dir_all(&unpacked)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", unpacked.display()));
    let printed = run(
        &format!(
            "unpacking @sparticuz/chromium {SPARTICUZ_CHROMIUM_VERSION} with executablePath()"
        ),
        Command::new("node")
            .current_dir(staging)
            .env("TMPDIR", &unpacked)
            .args([
                "--input-type=module",
                "--eval",
                "import chromium from '@sparticuz/chromium';\n\
                 process.stdout.write(await chromium.executablePath());",
            ]),
    );
    let executable = unpacked.join("chromium");
    assert!(
        Path::new(printed.trim()) == executable && executable.is_file(),
        "@sparticuz/chromium unpacked its binary to `{}`, expected {}",
        printed.trim(),
        executable.display()
    );
    if let Err(why) = chromium_version(&executable) {
        panic!(
            "the Chromium of @sparticuz/chromium {SPARTICUZ_CHROMIUM_VERSION} does not start: \
             {why}; `ldd {}` lists the shared libraries it is missing",
            executable.display()
        );
    }
}

/// Runs `command` for `what` and returns its stdout; fails the test with the command, its exit
/// status and its output otherwise.
pub fn run(what: &str, command: &mut Command) -> String {
    let program = command.get_program().to_owned();
    let shown = std::iter::once(program.as_os_str())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run `{shown}`: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what}: `{shown}` failed ({}) in {}:\n{stdout}\n{}",
        output.status,
        command
            .get_current_dir()
            .map_or_else(|| ".".into(), Path::to_string_lossy),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
