//! Issue 10, systemd watchdog: under `WatchdogSec=` systemd passes `NOTIFY_SOCKET` and
//! `WATCHDOG_USEC`; the daemon sends `READY=1` once listening, then `WATCHDOG=1` every half
//! period while its store commits. The test plays systemd's side with a real datagram socket
//! and the real binary (stopped by PID).

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_daemon_pings_the_watchdog_while_its_store_commits() {
    let dir = tempfile::tempdir().expect("dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let config = common::write_config(dir.path(), "");
    let mut child = Command::new(common::ordobridge_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + common::PATIENCE;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let ready = seen.iter().position(|m| m.contains("READY=1"));
        let pings = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
        if ready.is_some() && pings >= 3 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|m| m.contains("READY=1")),
        "READY=1 was sent: {seen:?}"
    );
    assert!(
        seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "WATCHDOG=1 was sent every half period: {seen:?}"
    );
}
