//! `leasehold-testkit`: what the server's integration tests and the chaos
//! suite's local backend share to run `leasehold serve` processes: a node
//! process that can be started, signalled, killed and wiped ([`node`]), the
//! isolated node command under it, and a data directory on the lazy
//! filesystem that can lose power ([`lazydisk`]).
//!
//! Its own crate so that both depend on it and neither on the other: an
//! edit to the chaos suite rebuilds no server test, and the server's tests
//! do not compile the chaos suite.

pub mod lazydisk;
pub mod node;

use std::fs::File;
use std::process::{Command, Stdio};

/// Prepares a `leasehold serve` command for a test node: nothing from the
/// caller's environment may change its flags (every `LEASEHOLD_*` variable
/// is removed), it logs at `info` without colours, and its output goes to
/// `log`. Shared by the chaos suite's local backend and the server's process
/// harness (`tests/it/common.rs`).
pub fn isolate_node_command(cmd: &mut Command, log: File) -> Result<(), String> {
    let log_err = log
        .try_clone()
        .map_err(|e| format!("clone log handle: {e}"))?;
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LEASEHOLD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    Ok(())
}
