//! The local backend: three `leasehold serve` processes on loopback.
//!
//! It can kill (SIGKILL), stop (SIGSTOP) and restart processes, delete a
//! node's data directory, when libfaketime is installed shift a node's
//! wall clock, and when [`LocalOptions::lazyfs`] is set cut a node's power:
//! each data directory is then a mount of the lazy filesystem
//! ([`super::lazydisk`]) over `node-N/disk/`, and a power loss drops
//! whatever the node had not synced. It cannot cut links: every process
//! shares the loopback interface, so partitions, loss and delay need the
//! docker backend; asking for them here is reported as unsupported, not
//! faked.
//!
//! Starting, signalling, killing and wiping a node is
//! `leasehold_testkit::node`'s, the same code the server's integration
//! tests run their clusters with; this file adds the fault plumbing.
//!
//! Clock offsets use libfaketime with `FAKETIME_DONT_FAKE_MONOTONIC=1`: only
//! `CLOCK_REALTIME` moves, as when NTP or an operator steps a clock. The
//! spec is read from a file per node, so it can change while the node runs.

use super::backend::{Backend, NodeId};
use super::faults::FaultKind;
use leasehold_testkit::lazydisk::LazyDisk;
use leasehold_testkit::node::{free_ports, NodeProcess, NodeSpec};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
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

/// Three processes on loopback.
pub struct LocalBackend {
    opts: LocalOptions,
    /// Every node, running or not (see `leasehold_testkit::node`).
    nodes: BTreeMap<NodeId, NodeProcess>,
    /// The nodes' lazy disks (empty without [`LocalOptions::lazyfs`]).
    /// Declared after `nodes`, but [`Drop`] kills the nodes explicitly
    /// before these unmount.
    disks: BTreeMap<NodeId, LazyDisk>,
}

impl LocalBackend {
    /// Picks ports; starts nothing (see [`LocalBackend::start_all`]).
    pub fn new(opts: LocalOptions) -> Result<Self, String> {
        let n = usize::try_from(opts.nodes).map_err(|_| "too many nodes".to_string())?;
        let ports = free_ports(n)?;
        std::fs::create_dir_all(&opts.root)
            .map_err(|e| format!("cannot create {}: {e}", opts.root.display()))?;
        let ids: Vec<NodeId> = (1..=opts.nodes).collect();
        let peers = ids
            .iter()
            .zip(&ports)
            .map(|(id, port)| format!("{id}=127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = BTreeMap::new();
        for (id, port) in ids.iter().zip(&ports) {
            let root = opts.root.join(format!("node-{id}"));
            std::fs::create_dir_all(&root)
                .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
            let faketime_file = root.join("faketime");
            std::fs::write(&faketime_file, "+0\n")
                .map_err(|e| format!("cannot write faketime spec: {e}"))?;
            let mut env: Vec<(OsString, OsString)> = Vec::new();
            if let Some(ft) = &opts.faketime {
                env.push(("LD_PRELOAD".into(), ft.into()));
                env.push(("FAKETIME_TIMESTAMP_FILE".into(), faketime_file.into()));
                env.push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
                env.push(("FAKETIME_CACHE_DURATION".into(), "1".into()));
            }
            let spec = NodeSpec {
                bin: opts.bin.clone(),
                id: *id,
                port: *port,
                root,
                hostname: format!("chaos-node-{id}"),
                heartbeat_ms: opts.heartbeat_ms,
                election_timeout_ms: opts.election_timeout_ms,
                membership_args: vec!["--peers".into(), peers.clone()],
                extra_args: opts.extra_args.clone(),
                env,
            };
            nodes.insert(*id, NodeProcess::new(spec));
        }
        let mut b = LocalBackend {
            opts,
            nodes,
            disks: BTreeMap::new(),
        };
        if let Some(bin) = b.opts.lazyfs.clone() {
            if let Some(why) = super::lazydisk::unavailable() {
                return Err(format!("power-loss faults need FUSE: {why}"));
            }
            for id in b.node_ids() {
                let dir = b.node_dir(id);
                let data = b.node(id)?.data_dir();
                let disk = LazyDisk::mount(
                    &bin,
                    &dir.join("disk"),
                    &data,
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
        for n in self.nodes.values() {
            let _ = n.kill();
        }
    }

    fn node(&self, id: NodeId) -> Result<&NodeProcess, String> {
        self.nodes.get(&id).ok_or_else(|| format!("no node {id}"))
    }

    fn node_dir(&self, id: NodeId) -> PathBuf {
        self.opts.root.join(format!("node-{id}"))
    }

    fn faketime_file(&self, id: NodeId) -> PathBuf {
        self.node_dir(id).join("faketime")
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        self.shutdown();
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
        self.node(id).map(NodeProcess::addr).unwrap_or_default()
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
        // A stopped process dies from SIGKILL too.
        match self.node(id)?.kill()? {
            Some(st) => {
                tracing::info!(node = id, "killed ({st})");
                Ok(())
            }
            None => Err(format!("node {id} is not running")),
        }
    }

    async fn stop(&self, id: NodeId, timeout: Duration) -> Result<Duration, String> {
        let n = self.node(id)?;
        if !n.running() {
            return Err(format!("node {id} is not running"));
        }
        let began = std::time::Instant::now();
        n.signal("TERM")?;
        while n.running() {
            if began.elapsed() >= timeout {
                let _ = n.kill();
                return Err(format!(
                    "node {id} did not exit within {} s of SIGTERM (SIGKILLed); see {}",
                    timeout.as_secs(),
                    self.log_hint(id)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = began.elapsed();
        // `running` recorded the exit; a graceful one is not a crash.
        let status = n.exited();
        n.forget_exit();
        match status {
            Some(st) if st.success() => {
                tracing::info!(node = id, "stopped by SIGTERM in {took:?}");
                Ok(took)
            }
            Some(st) => Err(format!(
                "node {id} exited with {st} after SIGTERM; see {}",
                self.log_hint(id)
            )),
            None => Err(format!("node {id}: no exit status after SIGTERM")),
        }
    }

    async fn start(&self, id: NodeId) -> Result<(), String> {
        self.node(id)?.spawn(&[])
    }

    async fn start_empty(&self, id: NodeId) -> Result<(), String> {
        self.node(id)?
            .spawn(&["--initial-cluster-state", "existing"])
    }

    async fn pause(&self, id: NodeId) -> Result<(), String> {
        let n = self.node(id)?;
        n.signal("STOP")?;
        n.wait_stopped(true).await
    }

    async fn resume(&self, id: NodeId) -> Result<(), String> {
        let n = self.node(id)?;
        n.signal("CONT")?;
        n.wait_stopped(false).await
    }

    async fn wipe(&self, id: NodeId) -> Result<(), String> {
        let n = self.node(id)?;
        match self.disks.get(&id) {
            // The data directory is a mount point: empty it instead.
            Some(disk) if !n.running() => disk.control().wipe(),
            _ => n.wipe_data(),
        }
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
        let Ok(n) = self.node(id) else {
            return false;
        };
        let running = n.running();
        if !running {
            if let Some(status) = n.exited() {
                tracing::warn!(node = id, "exited on its own: {status}");
                n.forget_exit();
            }
        }
        running
    }
}
