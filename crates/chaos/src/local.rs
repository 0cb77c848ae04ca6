//! The local backend: three `leasehold serve` processes on loopback.
//!
//! It can kill (SIGKILL), stop (SIGSTOP) and restart processes, delete a
//! node's data directory, when libfaketime is installed shift a node's
//! wall clock, and when [`LocalOptions::lazyfs`] is set cut a node's power:
//! each data directory is then a mount of the lazy filesystem
//! ([`super::lazydisk`]) over `node-N/disk/`, and a power loss drops
//! whatever the node had not synced. It cannot cut links: every process shares the loopback
//! interface, so partitions, loss and delay need the docker backend; asking
//! for them here is reported as unsupported, not faked.
//!
//! Clock offsets use libfaketime with `FAKETIME_DONT_FAKE_MONOTONIC=1`: only
//! `CLOCK_REALTIME` moves, as when NTP or an operator steps a clock. The
//! spec is read from a file per node, so it can change while the node runs.

use super::backend::{Backend, NodeId};
use super::faults::FaultKind;
use leasehold_testkit::lazydisk::LazyDisk;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

/// Where Debian installs libfaketime.
pub const FAKETIME_PATHS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];

/// libfaketime, if installed.
pub fn find_faketime() -> Option<PathBuf> {
    FAKETIME_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

pub use leasehold_testkit::isolate_node_command;

/// How to run the local nodes.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The `leasehold` binary.
    pub bin: PathBuf,
    /// Directory for the nodes' data and logs (`node-N/`).
    pub root: PathBuf,
    /// Number of nodes.
    pub nodes: u64,
    /// Raft heartbeat, ms.
    pub heartbeat_ms: u64,
    /// Election timeout range, ms.
    pub election_timeout_ms: (u64, u64),
    /// libfaketime to preload, for clock offsets.
    pub faketime: Option<PathBuf>,
    /// More arguments for every `leasehold serve` (e.g. the negative
    /// control's `--fault-put-trusts-client-times`).
    pub extra_args: Vec<String>,
    /// The `leasehold-lazyfs` binary: when set, every node's data directory
    /// is a lazy-filesystem mount and power-loss faults are supported.
    pub lazyfs: Option<PathBuf>,
}

struct Proc {
    port: u16,
    child: Option<Child>,
}

/// Three processes on loopback.
pub struct LocalBackend {
    opts: LocalOptions,
    procs: Mutex<BTreeMap<NodeId, Proc>>,
    /// The nodes' lazy disks (empty without [`LocalOptions::lazyfs`]).
    /// Declared after `procs`, but [`Drop`] kills the nodes explicitly
    /// before these unmount.
    disks: BTreeMap<NodeId, LazyDisk>,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

impl LocalBackend {
    /// Picks ports; starts nothing (see [`LocalBackend::start_all`]).
    pub fn new(opts: LocalOptions) -> Result<Self, String> {
        let mut procs = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for id in 1..=opts.nodes {
            let mut port = free_port()?;
            while !seen.insert(port) {
                port = free_port()?;
            }
            procs.insert(id, Proc { port, child: None });
        }
        std::fs::create_dir_all(&opts.root)
            .map_err(|e| format!("cannot create {}: {e}", opts.root.display()))?;
        let mut b = LocalBackend {
            opts,
            procs: Mutex::new(procs),
            disks: BTreeMap::new(),
        };
        for id in 1..=b.opts.nodes {
            std::fs::create_dir_all(b.node_dir(id))
                .map_err(|e| format!("cannot create {}: {e}", b.node_dir(id).display()))?;
            std::fs::write(b.faketime_file(id), "+0\n")
                .map_err(|e| format!("cannot write faketime spec: {e}"))?;
        }
        if let Some(bin) = b.opts.lazyfs.clone() {
            if let Some(why) = super::lazydisk::unavailable() {
                return Err(format!("power-loss faults need FUSE: {why}"));
            }
            for id in 1..=b.opts.nodes {
                let dir = b.node_dir(id);
                let disk = LazyDisk::mount(
                    &bin,
                    &dir.join("disk"),
                    &b.data_dir(id),
                    &dir.join("lazyfs.sock"),
                    &dir.join("lazyfs.log"),
                )?;
                b.disks.insert(id, disk);
            }
        }
        Ok(b)
    }

    /// Starts every node.
    pub async fn start_all(&self) -> Result<(), String> {
        for id in self.node_ids() {
            self.start(id).await?;
        }
        Ok(())
    }

    /// SIGKILLs every node (end of run).
    pub fn shutdown(&self) {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        for p in procs.values_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn node_dir(&self, id: NodeId) -> PathBuf {
        self.opts.root.join(format!("node-{id}"))
    }

    fn data_dir(&self, id: NodeId) -> PathBuf {
        self.node_dir(id).join("data")
    }

    fn faketime_file(&self, id: NodeId) -> PathBuf {
        self.node_dir(id).join("faketime")
    }

    fn port(&self, id: NodeId) -> u16 {
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|p| p.port)
            .unwrap_or(0)
    }

    fn pid(&self, id: NodeId) -> Result<u32, String> {
        let procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        procs
            .get(&id)
            .and_then(|p| p.child.as_ref())
            .map(|c| c.id())
            .ok_or_else(|| format!("node {id} is not running"))
    }

    fn peers(&self) -> String {
        self.node_ids()
            .iter()
            .map(|id| format!("{id}=127.0.0.1:{}", self.port(*id)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn signal(&self, id: NodeId, sig: &str) -> Result<(), String> {
        let pid = self.pid(id)?;
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

    /// The process state letter from /proc (R, S, T...).
    fn proc_state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Format: pid (comm) S ...; comm may contain spaces.
        let after = stat.rsplit_once(')')?.1;
        after.trim_start().chars().next()
    }

    async fn wait_state(&self, id: NodeId, want_stopped: bool) -> Result<(), String> {
        let pid = self.pid(id)?;
        for _ in 0..200 {
            let stopped = matches!(Self::proc_state(pid), Some('T') | Some('t'));
            if stopped == want_stopped {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(format!(
            "node {id} (pid {pid}) did not become {}",
            if want_stopped { "stopped" } else { "running" }
        ))
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl LocalBackend {
    /// Starts node `id` with its usual flags plus `extra`.
    async fn spawn(&self, id: NodeId, extra: &[&str]) -> Result<(), String> {
        if self.running(id).await {
            return Err(format!("node {id} is already running"));
        }
        let dir = self.node_dir(id);
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .map_err(|e| format!("open log of node {id}: {e}"))?;
        let mut cmd = Command::new(&self.opts.bin);
        cmd.arg("serve")
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(self.client_endpoint(id))
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--peers")
            .arg(self.peers())
            .arg("--hostname")
            .arg(format!("chaos-node-{id}"))
            .arg("--heartbeat-ms")
            .arg(self.opts.heartbeat_ms.to_string())
            .arg("--election-timeout-min-ms")
            .arg(self.opts.election_timeout_ms.0.to_string())
            .arg("--election-timeout-max-ms")
            .arg(self.opts.election_timeout_ms.1.to_string())
            .args(&self.opts.extra_args)
            .args(extra);
        isolate_node_command(&mut cmd, log)?;
        if let Some(ft) = &self.opts.faketime {
            cmd.env("LD_PRELOAD", ft)
                .env("FAKETIME_TIMESTAMP_FILE", self.faketime_file(id))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.opts.bin.display()))?;
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        match procs.get_mut(&id) {
            Some(p) => {
                p.child = Some(child);
                Ok(())
            }
            None => Err(format!("no node {id}")),
        }
    }

    /// Deletes node `id`'s data directory (it must not run).
    async fn wipe_dir(&self, id: NodeId) -> Result<(), String> {
        if self.running(id).await {
            return Err(format!("node {id} must be killed before its data is wiped"));
        }
        let dir = self.data_dir(id);
        if let Some(disk) = self.disks.get(&id) {
            // The directory is a mount point: empty it instead.
            return disk.control().wipe();
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("cannot delete {}: {e}", dir.display()))?;
        }
        if dir.exists() {
            return Err(format!("{} still exists", dir.display()));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn node_ids(&self) -> Vec<NodeId> {
        (1..=self.opts.nodes).collect()
    }

    fn client_endpoint(&self, id: NodeId) -> String {
        format!("127.0.0.1:{}", self.port(id))
    }

    fn peer_address(&self, id: NodeId) -> String {
        self.client_endpoint(id)
    }

    fn supports(&self, kind: FaultKind) -> Result<(), String> {
        match kind {
            FaultKind::IsolateLeader
            | FaultKind::IsolateFollower
            | FaultKind::CutLink
            | FaultKind::PeerLoss
            | FaultKind::PeerDelay => Err(
                "local processes share the loopback interface; network faults need the docker backend"
                    .into(),
            ),
            FaultKind::ClockOffset if self.opts.faketime.is_none() => Err(format!(
                "libfaketime is not installed (looked for {})",
                FAKETIME_PATHS.join(", ")
            )),
            FaultKind::PowerLossFollower | FaultKind::PowerLossLeader | FaultKind::PowerLossAll
                if self.disks.is_empty() =>
            {
                Err("the data directories are not on the lazy filesystem (build it with \
                     `cargo build --release -p leasehold-lazyfs`, or pass --lazyfs)"
                    .into())
            }
            _ => Ok(()),
        }
    }

    async fn kill(&self, id: NodeId) -> Result<(), String> {
        let child = {
            let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
            procs.get_mut(&id).and_then(|p| p.child.take())
        };
        let Some(mut child) = child else {
            return Err(format!("node {id} is not running"));
        };
        let pid = child.id();
        // A stopped process dies from SIGKILL too.
        child
            .kill()
            .map_err(|e| format!("SIGKILL node {id} (pid {pid}): {e}"))?;
        let st = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(|e| format!("reaping node {id}: {e}"))?
            .map_err(|e| format!("reaping node {id}: {e}"))?;
        if Path::new(&format!("/proc/{pid}")).exists() && Self::proc_state(pid) != Some('Z') {
            return Err(format!("node {id} (pid {pid}) still exists after SIGKILL"));
        }
        tracing::info!(node = id, pid, "killed ({st})");
        Ok(())
    }

    async fn start(&self, id: NodeId) -> Result<(), String> {
        self.spawn(id, &[]).await
    }

    async fn start_empty(&self, id: NodeId) -> Result<(), String> {
        self.spawn(id, &["--initial-cluster-state", "existing"])
            .await
    }

    async fn pause(&self, id: NodeId) -> Result<(), String> {
        self.signal(id, "STOP")?;
        self.wait_state(id, true).await
    }

    async fn resume(&self, id: NodeId) -> Result<(), String> {
        self.signal(id, "CONT")?;
        self.wait_state(id, false).await
    }

    async fn wipe(&self, id: NodeId) -> Result<(), String> {
        self.wipe_dir(id).await
    }

    async fn lose_unsynced(&self, id: NodeId, torn: Option<u64>) -> Result<String, String> {
        let Some(disk) = self.disks.get(&id) else {
            return Err("the data directories are not on the lazy filesystem".into());
        };
        if self.running(id).await {
            return Err(format!("node {id} must be killed before it loses power"));
        }
        disk.control().lose_unsynced(torn)
    }

    async fn cut(&self, _a: NodeId, _b: NodeId) -> Result<(), String> {
        Err("unsupported by the local backend".into())
    }

    async fn loss(&self, _id: NodeId, _fraction: f64) -> Result<(), String> {
        Err("unsupported by the local backend".into())
    }

    async fn delay(&self, _id: NodeId, _by: Duration) -> Result<(), String> {
        Err("unsupported by the local backend".into())
    }

    async fn heal_network(&self) -> Result<(), String> {
        Ok(())
    }

    async fn clock_offset(&self, id: NodeId, offset_secs: i64) -> Result<(), String> {
        if self.opts.faketime.is_none() {
            return Err("libfaketime is not installed".into());
        }
        let spec = format!("{offset_secs:+}\n");
        let path = self.faketime_file(id);
        std::fs::write(&path, &spec)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        match std::fs::read_to_string(&path) {
            Ok(s) if s == spec => Ok(()),
            Ok(s) => Err(format!("{} holds {s:?}, not {spec:?}", path.display())),
            Err(e) => Err(format!("cannot read back {}: {e}", path.display())),
        }
    }

    fn log_hint(&self, id: NodeId) -> String {
        self.node_dir(id).join("node.log").display().to_string()
    }

    async fn running(&self, id: NodeId) -> bool {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = procs.get_mut(&id) else {
            return false;
        };
        match p.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                tracing::warn!(node = id, "exited on its own: {status}");
                p.child = None;
                false
            }
            Some(Err(_)) => true,
            None => false,
        }
    }
}
