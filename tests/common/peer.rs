//! A Python peer script from `tests/peers/` running in the peers venv
//! ([`super::python_peers`]), listening on a loopback port it prints as `PORT <n>`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// A peer process, killed by its PID when dropped.
pub struct PythonPeer {
    child: Child,
    /// Where it listens (127.0.0.1 and the port it printed).
    pub addr: SocketAddr,
}

impl PythonPeer {
    /// Starts `python tests/peers/SCRIPT ARGS…` and waits (up to [`super::PATIENCE`]) for its
    /// `PORT <n>` line; its stderr goes to the test's.
    pub fn start(script: &str, args: &[&str]) -> PythonPeer {
        let python = super::python_peers();
        let path = super::repo_root().join("tests/peers").join(script);
        let mut child = Command::new(&python)
            .arg(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{} {}`: {e}",
                    python.display(),
                    path.display()
                )
            });
        let stdout = child.stdout.take().expect("peer stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads stdout for the whole life of the process, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("PORT ")
                    && let Ok(port) = port.trim().parse::<u16>()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let mut peer = PythonPeer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        match rx.recv_timeout(super::PATIENCE) {
            Ok(port) => peer.addr.set_port(port),
            Err(_) => panic!(
                "tests/peers/{script} printed no `PORT <n>` line within {:?} (exit status: {:?})",
                super::PATIENCE,
                peer.child.try_wait()
            ),
        }
        peer
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
