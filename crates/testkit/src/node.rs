//! One `leasehold serve` process on loopback: the piece the server's
//! integration tests (`Cluster` in `tests/it/common.rs`) and the chaos suite's local
//! backend (`leasehold_chaos::local`) share to start, signal, kill, reap and
//! wipe a node.
//!
//! Layout of a node's directory (`root`, usually `<tmp>/node-<id>`):
//! `data/` is the data directory, `node.log` collects the output of every
//! process the node ever ran (appended, so a failing test can print what the
//! node said before its last restart).
//!
//! Errors are returned as text naming the node and what failed; the test
//! harness turns them into panics, the chaos suite into fault results.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// What a node process is started with, apart from per-start extras.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The `leasehold` binary.
    pub bin: PathBuf,
    /// Node id (`--id`).
    pub id: u64,
    /// Port on 127.0.0.1 (`--listen`).
    pub port: u16,
    /// The node's directory: `data/` and `node.log` live in it.
    pub root: PathBuf,
    /// `--hostname`: every node runs on this one host, so each gets its own
    /// server identity.
    pub hostname: String,
    /// Raft heartbeat, ms.
    pub heartbeat_ms: u64,
    /// Election timeout range, ms.
    pub election_timeout_ms: (u64, u64),
    /// How the node finds its cluster: `--peers ...`, `--join`, or
    /// `--initial-cluster-state existing` for a node put back after its data
    /// was lost.
    pub membership_args: Vec<String>,
    /// More `serve` flags.
    pub extra_args: Vec<String>,
    /// More environment (libfaketime's preload, for example).
    pub env: Vec<(OsString, OsString)>,
}

/// A node and its process, if one runs. Safe to share between tasks: the
/// child sits behind a mutex that is never held across an await.
#[derive(Debug)]
pub struct NodeProcess {
    spec: NodeSpec,
    child: Mutex<Option<Child>>,
    /// How the last process ended when it exited without being killed here
    /// (a crash, or a refusal to start).
    exited: Mutex<Option<ExitStatus>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NodeProcess {
    /// A node that is not running yet.
    pub fn new(spec: NodeSpec) -> Self {
        NodeProcess {
            spec,
            child: Mutex::new(None),
            exited: Mutex::new(None),
        }
    }

    /// What the node is started with.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Changes how the next start finds its cluster (see
    /// [`NodeSpec::membership_args`]).
    pub fn set_membership_args(&mut self, args: Vec<String>) {
        self.spec.membership_args = args;
    }

    /// Node id.
    pub fn id(&self) -> u64 {
        self.spec.id
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.spec.port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.spec.root.join("data")
    }

    /// The node's log (every process's output, appended).
    pub fn log_path(&self) -> PathBuf {
        self.spec.root.join("node.log")
    }

    /// Starts a process with the spec's flags plus `extra`. Fails if one is
    /// running already or it cannot be started; does not wait for it to
    /// serve.
    pub fn spawn(&self, extra: &[&str]) -> Result<(), String> {
        let id = self.spec.id;
        if self.running() {
            return Err(format!("node {id} is already running"));
        }
        std::fs::create_dir_all(&self.spec.root)
            .map_err(|e| format!("cannot create {}: {e}", self.spec.root.display()))?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open the log of node {id}: {e}"))?;
        let s = &self.spec;
        let mut cmd = Command::new(&s.bin);
        cmd.arg("serve")
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(self.addr())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--hostname")
            .arg(&s.hostname)
            .arg("--heartbeat-ms")
            .arg(s.heartbeat_ms.to_string())
            .arg("--election-timeout-min-ms")
            .arg(s.election_timeout_ms.0.to_string())
            .arg("--election-timeout-max-ms")
            .arg(s.election_timeout_ms.1.to_string())
            .args(&s.membership_args)
            .args(&s.extra_args)
            .args(extra);
        crate::isolate_node_command(&mut cmd, log)?;
        cmd.envs(s.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", s.bin.display()))?;
        *lock(&self.exited) = None;
        *lock(&self.child) = Some(child);
        Ok(())
    }

    /// Whether a process runs (a stopped one counts); records how it ended
    /// if it exited on its own.
    pub fn running(&self) -> bool {
        let mut child = lock(&self.child);
        let Some(c) = child.as_mut() else {
            return false;
        };
        match c.try_wait() {
            Ok(Some(status)) => {
                *lock(&self.exited) = Some(status);
                *child = None;
                false
            }
            Ok(None) | Err(_) => true,
        }
    }

    /// How the last process ended, if it exited on its own.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.running();
        *lock(&self.exited)
    }

    /// Forgets how the last process ended (a refusal to start that a test
    /// expected is not a crash).
    pub fn forget_exit(&self) {
        *lock(&self.exited) = None;
    }

    /// The running process's pid.
    pub fn pid(&self) -> Result<u32, String> {
        lock(&self.child)
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| format!("node {} is not running", self.spec.id))
    }

    /// SIGKILLs the process (a stopped one too) and reaps it; returns its
    /// exit status, or `None` if none was running. Blocks while reaping,
    /// which takes as long as the kernel needs to tear the process down.
    pub fn kill(&self) -> Result<Option<ExitStatus>, String> {
        let Some(mut child) = lock(&self.child).take() else {
            return Ok(None);
        };
        let id = self.spec.id;
        let pid = child.id();
        child
            .kill()
            .map_err(|e| format!("SIGKILL node {id} (pid {pid}): {e}"))?;
        let status = child
            .wait()
            .map_err(|e| format!("reaping node {id} (pid {pid}): {e}"))?;
        Ok(Some(status))
    }

    /// Sends `sig` (a name `kill(1)` knows: STOP, CONT, TERM...).
    pub fn signal(&self, sig: &str) -> Result<(), String> {
        let pid = self.pid()?;
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| format!("kill -{sig} {pid}: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("kill -{sig} {pid} failed: {st}"))
        }
    }

    /// Waits (up to a second) until the process is stopped (SIGSTOP) or,
    /// with `false`, running again.
    pub async fn wait_stopped(&self, stopped: bool) -> Result<(), String> {
        let pid = self.pid()?;
        for _ in 0..200 {
            let is = matches!(proc_state(pid), Some('T') | Some('t'));
            if is == stopped {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(format!(
            "node {} (pid {pid}) did not become {}",
            self.spec.id,
            if stopped { "stopped" } else { "running" }
        ))
    }

    /// Deletes the data directory. The node must not be running.
    pub fn wipe_data(&self) -> Result<(), String> {
        if self.running() {
            return Err(format!(
                "node {} must be killed before its data is wiped",
                self.spec.id
            ));
        }
        remove_dir(&self.data_dir())
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        all[from..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // Never leave a node running after its owner is gone.
        let _ = self.kill();
    }
}

fn remove_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| format!("cannot delete {}: {e}", dir.display()))?;
    }
    if dir.exists() {
        return Err(format!("{} still exists", dir.display()));
    }
    Ok(())
}

/// The process state letter from /proc (R, S, T, Z...).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Format: pid (comm) S ...; comm may contain spaces and parentheses.
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// A binary of another workspace package (`leasehold`, `leasehold-lazyfs`)
/// seen from an integration test: `cargo test` builds every default member
/// into `target/<profile>/`, and tests run from `target/<profile>/deps/`.
/// A package that must not link the server (the chaos suite, the bench)
/// cannot get it through `CARGO_BIN_EXE_*`, so it looks there. Panics with
/// what to build when it is missing.
pub fn workspace_binary(name: &str) -> PathBuf {
    let me = std::env::current_exe().unwrap_or_else(|e| panic!("the test's own path: {e}"));
    let bin = me
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .unwrap_or_else(|| panic!("no target directory above {}", me.display()));
    assert!(
        bin.exists(),
        "{} does not exist: run the README's `cargo test` (every workspace member), or \
         `cargo build -p {name}` first",
        bin.display()
    );
    bin
}

/// `n` distinct ports that were free a moment ago (bound on 127.0.0.1:0,
/// then released). Another process may take one before the node binds it;
/// callers retry with new ports.
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| format!("local_addr: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(root: &Path, bin: &str) -> NodeSpec {
        NodeSpec {
            bin: PathBuf::from(bin),
            id: 7,
            port: 1,
            root: root.to_path_buf(),
            hostname: "node-7".into(),
            heartbeat_ms: 50,
            election_timeout_ms: (300, 600),
            membership_args: vec![],
            extra_args: vec![],
            env: vec![],
        }
    }

    #[test]
    fn free_ports_are_distinct() {
        let p = free_ports(8).expect("ports");
        let set: std::collections::BTreeSet<u16> = p.iter().copied().collect();
        assert_eq!(set.len(), 8, "{p:?}");
    }

    #[test]
    fn a_missing_binary_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = NodeProcess::new(spec(dir.path(), "/nonexistent/leasehold"));
        let e = n.spawn(&[]).expect_err("spawn of a missing binary");
        assert!(e.contains("/nonexistent/leasehold"), "{e}");
        assert!(!n.running());
        assert_eq!(n.kill(), Ok(None));
    }

    /// `sh` stands in for the server: `sh serve --id ...` fails at once
    /// (no script named `serve`), which is an exit on its own.
    #[test]
    fn an_exit_on_its_own_is_recorded_and_the_log_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = NodeProcess::new(spec(dir.path(), "/bin/sh"));
        n.spawn(&[]).expect("spawn sh");
        let mut waited = 0;
        while n.running() && waited < 200 {
            std::thread::sleep(Duration::from_millis(10));
            waited += 1;
        }
        let st = n.exited().expect("sh exited by itself");
        assert!(!st.success(), "sh serve ... cannot succeed: {st}");
        assert!(n.log_tail(5).contains("serve"), "{}", n.log_tail(5));
        n.forget_exit();
        assert_eq!(n.exited(), None);
        // Wiping needs no running process and removes the data directory.
        std::fs::create_dir_all(n.data_dir()).expect("mkdir data");
        n.wipe_data().expect("wipe");
        assert!(!n.data_dir().exists());
    }
}
