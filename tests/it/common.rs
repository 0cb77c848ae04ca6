//! Test harness: real `leasehold serve` processes on 127.0.0.1.
//!
//! Each process is a `leasehold_testkit::node::NodeProcess`, the same code
//! the chaos suite's local backend runs its nodes with; this file adds the
//! test-facing cluster: bounded waits that panic with what they saw, port
//! retries, clients and request helpers.
//!
//! A [`Cluster`] owns its node processes and one temporary directory. Each
//! node gets `<tmp>/node-<id>/data` as its data directory and appends its
//! output to `<tmp>/node-<id>/node.log` (kept across restarts and wipes), so
//! a failing test can print what every node said. Dropping the cluster kills
//! (SIGKILL) and reaps every process it started; when the drop happens during
//! a panic, the tail of every node's log is printed first.
//!
//! Every wait here is bounded by a [`Deadline`] and fails with a message
//! naming what it waited for and the last thing it saw.

#![allow(dead_code)]

use leasehold::client::Client;
use leasehold::proto::v1 as pb;
use leasehold::proto::v1::cluster_client::ClusterClient;
use leasehold_testkit::node::{NodeProcess, NodeSpec};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::Code;

/// The `leasehold` binary built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_leasehold");

/// Raft heartbeat used by test clusters, ms.
pub const HEARTBEAT_MS: u64 = 50;
/// Election timeout range used by test clusters, ms.
pub const ELECTION_MIN_MS: u64 = 300;
/// Election timeout range used by test clusters, ms.
pub const ELECTION_MAX_MS: u64 = 600;

/// Per-call deadline of the clients the harness hands out.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a node may take to answer its first Status call.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many times `Cluster::start` picks new ports after losing a bind race.
const START_ATTEMPTS: usize = 5;

/// A bounded wait: `check` sleeps a little and returns while time is left,
/// and panics with a description of the wait and the last observation once
/// it has run out.
pub struct Deadline {
    what: String,
    start: Instant,
    until: Instant,
}

impl Deadline {
    /// A deadline `timeout` from now for waiting on `what`.
    pub fn new(what: impl Into<String>, timeout: Duration) -> Self {
        let start = Instant::now();
        Deadline {
            what: what.into(),
            start,
            until: start + timeout,
        }
    }

    /// Whether the time is up.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.until
    }

    /// Sleeps before the next poll; panics if the deadline has passed.
    pub async fn check(&self, last: impl Debug) {
        if self.expired() {
            panic!(
                "timed out after {:?} waiting for {}; last observation: {:?}",
                self.start.elapsed(),
                self.what,
                last
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Options of a test cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--snapshot-logs` for every node (the binary's default when `None`).
    pub snapshot_logs: Option<u64>,
    /// More `serve` flags for every node.
    pub extra_args: Vec<String>,
    /// More `serve` flags for one node (after `extra_args`).
    pub node_args: BTreeMap<u64, Vec<String>>,
    /// How the harness itself connects (its Status calls and `client()`):
    /// TLS with a certificate the nodes accept, for TLS clusters.
    pub connect: leasehold::client::ConnectOptions,
}

/// The spec of node `id` of a test cluster (see `leasehold_testkit::node`).
fn spec(
    id: u64,
    port: u16,
    root: PathBuf,
    membership_args: Vec<String>,
    opts: &Options,
) -> NodeSpec {
    let mut extra_args = Vec::new();
    if let Some(n) = opts.snapshot_logs {
        extra_args.push("--snapshot-logs".to_string());
        extra_args.push(n.to_string());
    }
    extra_args.extend(opts.extra_args.iter().cloned());
    extra_args.extend(opts.node_args.get(&id).into_iter().flatten().cloned());
    NodeSpec {
        bin: PathBuf::from(BIN),
        id,
        port,
        root,
        hostname: format!("node-{id}"),
        heartbeat_ms: HEARTBEAT_MS,
        election_timeout_ms: (ELECTION_MIN_MS, ELECTION_MAX_MS),
        membership_args,
        extra_args,
        env: Vec::new(),
    }
}

/// Starts node `n`'s process; panics (naming the node) if it cannot.
fn spawn(n: &NodeProcess) {
    n.spawn(&[])
        .unwrap_or_else(|e| panic!("node {}: {e}", n.id()));
}

/// Ports that were free a moment ago (see `leasehold_testkit::node::free_ports`).
pub fn free_ports(n: usize) -> Vec<u16> {
    leasehold_testkit::node::free_ports(n).expect("free ports on 127.0.0.1")
}

/// A client of `endpoints` with the harness' call deadline.
pub fn client(endpoints: Vec<String>) -> Client {
    Client::new(endpoints)
        .expect("valid endpoints")
        .with_timeout(CALL_TIMEOUT)
}

/// A cluster of `leasehold serve` processes.
pub struct Cluster {
    nodes: BTreeMap<u64, NodeProcess>,
    opts: Options,
    tmp: TempDir,
}

enum StartFailure {
    /// A node could not bind its port: pick other ports and try again.
    PortTaken,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) that bootstrap one cluster with `--peers`.
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(n, Options::default()).await
    }

    /// Starts `n` nodes with `opts`.
    pub async fn start_with(n: u64, opts: Options) -> Cluster {
        for attempt in 1..=START_ATTEMPTS {
            let tmp = tempfile::Builder::new()
                .prefix("leasehold-it-")
                .tempdir()
                .expect("create temp dir");
            let ports = free_ports(n as usize);
            let peers = (1..=n)
                .zip(&ports)
                .map(|(id, port)| format!("{id}=127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(",");
            let nodes = (1..=n)
                .zip(&ports)
                .map(|(id, port)| {
                    let root = tmp.path().join(format!("node-{id}"));
                    let args = vec!["--peers".into(), peers.clone()];
                    (id, NodeProcess::new(spec(id, *port, root, args, &opts)))
                })
                .collect();
            let mut cluster = Cluster {
                nodes,
                opts: opts.clone(),
                tmp,
            };
            let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
            for n in cluster.nodes.values() {
                spawn(n);
            }
            let mut failed = false;
            for id in &ids {
                if let Err(StartFailure::PortTaken) = cluster.wait_serving(*id).await {
                    failed = true;
                    break;
                }
            }
            if !failed {
                return cluster;
            }
            eprintln!("cluster start attempt {attempt}: a port was taken; retrying with new ports");
            // Dropping kills every process; the new attempt gets a new
            // directory, so no node keeps a membership with the lost port.
            drop(cluster);
        }
        panic!("could not start a {n}-node cluster in {START_ATTEMPTS} attempts (ports kept being taken)");
    }

    /// The last `lines` lines node `id` logged.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        self.node(id).log_tail(lines)
    }

    /// Sends `signal` (`HUP`, `STOP`...) to node `id`'s process.
    pub fn signal(&self, id: u64, signal: &str) {
        self.node(id)
            .signal(signal)
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
    }

    fn node(&self, id: u64) -> &NodeProcess {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// Waits until node `id` answers Status. A node that exits because its
    /// port is taken is reported as `PortTaken`; any other exit panics.
    async fn wait_serving(&mut self, id: u64) -> Result<(), StartFailure> {
        let d = Deadline::new(format!("node {id} to answer Status"), START_TIMEOUT);
        loop {
            if let Some(status) = self.node(id).exited() {
                let tail = self.node(id).log_tail(40);
                if tail.contains("cannot listen") || tail.contains("in use") {
                    return Err(StartFailure::PortTaken);
                }
                self.dump_logs();
                panic!("node {id} exited during start with {status}:\n{tail}");
            }
            let last = match self.status(id).await {
                Ok(_) => return Ok(()),
                Err(e) => format!("{:?}: {}", e.code(), e.message()),
            };
            d.check(&last).await;
        }
    }

    /// Ids of every node (running or not).
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Ids of the running nodes.
    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.running())
            .map(NodeProcess::id)
            .collect()
    }

    /// `127.0.0.1:PORT` of node `id`.
    pub fn endpoint(&self, id: u64) -> String {
        self.node(id).addr()
    }

    /// Every node's endpoint, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(NodeProcess::addr).collect()
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.node(id).data_dir()
    }

    /// The temporary directory holding every node's files.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// A client of the given nodes (tried in this order).
    pub fn client_for(&self, ids: &[u64]) -> Client {
        client(ids.iter().map(|id| self.endpoint(*id)).collect())
    }

    /// A client of every node.
    pub fn client(&self) -> Client {
        if self.opts.connect.tls.is_some() {
            return Client::with_options(self.endpoints(), self.opts.connect.clone())
                .expect("valid client options")
                .with_timeout(CALL_TIMEOUT);
        }
        client(self.endpoints())
    }

    /// Node `id`'s own Status: one attempt on that node only (no failover,
    /// no retries), bounded by a short deadline.
    pub async fn status(&self, id: u64) -> Result<pb::StatusResponse, tonic::Status> {
        let endpoint = self
            .opts
            .connect
            .endpoint(&self.endpoint(id))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("node {id}: cannot connect: {e}")))?;
        let mut req = tonic::Request::new(pb::StatusRequest {});
        self.opts.connect.authorization()?.apply(&mut req);
        ClusterClient::new(channel)
            .status(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Waits until every running node reports the same leader, that leader is
    /// running and reports itself LEADER; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let d = Deadline::new(
            format!(
                "the running nodes {:?} to agree on a leader",
                self.live_ids()
            ),
            timeout,
        );
        loop {
            let mut seen = BTreeMap::new();
            for id in self.live_ids() {
                seen.insert(id, self.status(id).await);
            }
            if let Some(leader) = agreed_leader(&seen) {
                return leader;
            }
            let views: BTreeMap<u64, String> = seen
                .iter()
                .map(|(id, s)| {
                    let v = match s {
                        Ok(s) => {
                            format!("leader={} state={} term={}", s.leader_id, s.state, s.term)
                        }
                        Err(e) => format!("error {:?}: {}", e.code(), e.message()),
                    };
                    (*id, v)
                })
                .collect();
            d.check(&views).await;
        }
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> pb::StatusResponse {
        let d = Deadline::new(format!("node {id} to apply index {index}"), timeout);
        loop {
            let last = match self.status(id).await {
                Ok(s) if s.applied_index >= index => return s,
                Ok(s) => format!("applied_index={}", s.applied_index),
                Err(e) => format!("error {:?}: {}", e.code(), e.message()),
            };
            d.check(&last).await;
        }
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Err(e) = self.node(id).kill() {
            panic!("{e}");
        }
    }

    /// SIGKILLs every node.
    pub fn kill_all(&mut self) {
        for n in self.nodes.values() {
            if let Err(e) = n.kill() {
                panic!("{e}");
            }
        }
    }

    /// Starts node `id` again with the same id, port, flags and data
    /// directory, and waits until it answers Status.
    pub async fn restart(&mut self, id: u64) {
        spawn(self.node(id));
        if let Err(StartFailure::PortTaken) = self.wait_serving(id).await {
            self.dump_logs();
            panic!(
                "node {id} cannot bind its old port {} on restart (taken by another process)",
                self.node(id).port()
            );
        }
    }

    /// Starts node `id` again like [`Cluster::restart`], with `extra`
    /// flags for this start only.
    pub async fn restart_with(&mut self, id: u64, extra: &[&str]) {
        self.node(id)
            .spawn(extra)
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
        if let Err(StartFailure::PortTaken) = self.wait_serving(id).await {
            self.dump_logs();
            panic!("node {id} cannot bind its old port on restart");
        }
    }

    /// Sends node `id` SIGTERM (a requested stop, as systemd or the
    /// kubelet does) and waits up to `timeout` for it to exit; returns its
    /// exit status. Not a crash for [`Cluster::assert_no_crashes`].
    pub async fn terminate(&mut self, id: u64, timeout: Duration) -> ExitStatus {
        self.signal(id, "TERM");
        self.wait_exit(id, timeout).await
    }

    /// Waits up to `timeout` for node `id` to exit (after a signal the test
    /// sent); returns its exit status. Not a crash for
    /// [`Cluster::assert_no_crashes`].
    pub async fn wait_exit(&mut self, id: u64, timeout: Duration) -> ExitStatus {
        let d = Deadline::new(format!("node {id} to exit"), timeout);
        loop {
            if let Some(status) = self.node(id).exited() {
                self.node(id).forget_exit();
                return status;
            }
            d.check("still running").await;
        }
    }

    /// Deletes node `id`'s data directory. The node must not be running.
    pub fn wipe(&mut self, id: u64) {
        if let Err(e) = self.node(id).wipe_data() {
            panic!("{e}");
        }
    }

    /// Starts node `id` again after its data directory was wiped, as an
    /// operator must: empty, with `--initial-cluster-state existing`, so that
    /// it waits to be put back with `member replace` (see [`Cluster::replace`]).
    /// Waits until it answers Status.
    pub async fn restart_wiped(&mut self, id: u64) {
        self.node_mut(id)
            .set_membership_args(vec!["--initial-cluster-state".into(), "existing".into()]);
        self.restart(id).await;
    }

    /// `leasehold member replace id` through the client: puts node `id`'s new
    /// data directory back in the cluster and waits until it is a voter.
    pub async fn replace(&self, id: u64) -> Result<pb::ReplaceMemberResponse, tonic::Status> {
        let live: Vec<u64> = self.live_ids().into_iter().filter(|n| *n != id).collect();
        self.client_for(&live)
            .replace_member(pb::ReplaceMemberRequest {
                id,
                address: String::new(),
            })
            .await
    }

    /// Starts node `id` with its current flags and waits (up to `timeout`)
    /// for it to exit on its own; returns its exit status and the tail of
    /// its log. For nodes that must refuse to start.
    pub async fn start_expecting_exit(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> (ExitStatus, String) {
        spawn(self.node(id));
        let d = Deadline::new(format!("node {id} to exit by itself"), timeout);
        loop {
            if let Some(status) = self.node(id).exited() {
                // Not a crash the other tests should report.
                self.node(id).forget_exit();
                return (status, self.node(id).log_tail(60));
            }
            d.check("still running").await;
        }
    }

    /// Starts a new node `id` with `--join` (no peers) on a free port, waits
    /// until it answers Status, and returns its address.
    pub async fn spawn_joiner(&mut self, id: u64) -> String {
        assert!(!self.nodes.contains_key(&id), "node {id} exists already");
        for _ in 0..START_ATTEMPTS {
            let port = free_ports(1)[0];
            let root = self.tmp.path().join(format!("node-{id}"));
            if root.exists() {
                let _ = std::fs::remove_dir_all(&root);
            }
            let n = NodeProcess::new(spec(id, port, root, vec!["--join".into()], &self.opts));
            spawn(&n);
            self.nodes.insert(id, n);
            match self.wait_serving(id).await {
                Ok(()) => return self.endpoint(id),
                // Dropping the node kills its process.
                Err(StartFailure::PortTaken) => drop(self.nodes.remove(&id)),
            }
        }
        panic!("could not start joining node {id}: ports kept being taken");
    }

    /// Nodes whose process exited without being killed by the harness, with
    /// their exit status.
    pub fn crashed(&self) -> BTreeMap<u64, ExitStatus> {
        self.nodes
            .values()
            .filter_map(|n| n.exited().map(|st| (n.id(), st)))
            .collect()
    }

    /// Panics (after printing the logs) if any node exited on its own.
    pub fn assert_no_crashes(&self) {
        let crashed = self.crashed();
        assert!(
            crashed.is_empty(),
            "nodes exited without being killed by the test: {crashed:?} (logs above)"
        );
    }

    /// Prints the tail of every node's log to stderr.
    pub fn dump_logs(&self) {
        for n in self.nodes.values() {
            eprintln!(
                "===== node {} ({}, {}) log: {} =====\n{}",
                n.id(),
                n.addr(),
                match (n.running(), n.exited()) {
                    (true, _) => "running".to_string(),
                    (false, Some(st)) => format!("EXITED ON ITS OWN with {st}"),
                    (false, None) => "stopped".to_string(),
                },
                n.log_path().display(),
                n.log_tail(150)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for n in self.nodes.values() {
            let _ = n.kill();
        }
        // For debugging: LEASEHOLD_IT_KEEP=1 keeps every node's directory.
        if std::env::var_os("LEASEHOLD_IT_KEEP").is_some() {
            let path =
                std::mem::replace(&mut self.tmp, tempfile::tempdir().expect("create temp dir"))
                    .keep();
            eprintln!("kept cluster files in {}", path.display());
        }
    }
}

/// The one leader every node in `seen` names, if they all answered, agree,
/// and the leader itself is among them in state LEADER.
fn agreed_leader(seen: &BTreeMap<u64, Result<pb::StatusResponse, tonic::Status>>) -> Option<u64> {
    let mut leader = None;
    for s in seen.values() {
        let s = s.as_ref().ok()?;
        if s.leader_id == 0 || leader.is_some_and(|l| l != s.leader_id) {
            return None;
        }
        leader = Some(s.leader_id);
    }
    let leader = leader?;
    let own = seen.get(&leader)?.as_ref().ok()?;
    (own.state == "LEADER").then_some(leader)
}

/// The status of a failed call; panics (naming `what`) if it succeeded.
pub fn expect_err<T: Debug>(what: &str, r: Result<T, tonic::Status>) -> tonic::Status {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(s) => s,
    }
}

/// Asserts `s` has `code` and a Leasehold ErrorInfo with `reason`; returns
/// the ErrorInfo metadata.
pub fn assert_status(
    what: &str,
    s: &tonic::Status,
    code: Code,
    reason: &str,
) -> BTreeMap<String, String> {
    assert_eq!(
        s.code(),
        code,
        "{what}: wrong code (message: {:?})",
        s.message()
    );
    let (got_reason, meta) = leasehold::api::status::error_info(s)
        .unwrap_or_else(|| panic!("{what}: no leasehold ErrorInfo in {s:?}"));
    assert_eq!(got_reason, reason, "{what}: wrong ErrorInfo reason ({s:?})");
    meta.into_iter().collect()
}

/// The lease in a response, which must be present.
pub fn lease_of(l: Option<pb::Lease>) -> pb::Lease {
    l.expect("response carries a lease")
}

/// (resourceVersion, holderIdentity, fencingToken) of a lease.
pub fn rv_holder_token(l: &pb::Lease) -> (u64, String, u64) {
    (
        l.metadata.as_ref().expect("metadata").resource_version,
        l.spec.as_ref().expect("spec").holder_identity.clone(),
        l.status.as_ref().expect("status").fencing_token,
    )
}

/// What one CLI run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `leasehold --endpoints <endpoints> <args...>`, bounded by a deadline.
pub async fn cli(endpoints: &str, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--endpoints").arg(endpoints).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LEASEHOLD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG").kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("leasehold {args:?} did not finish within 30 s"))
        .expect("run leasehold");
    Run {
        code: out
            .status
            .code()
            .expect("exit code (not killed by a signal)"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn acquire_req(ns: &str, name: &str, holder: &str, seconds: i32) -> pb::AcquireRequest {
    pb::AcquireRequest {
        namespace: ns.into(),
        name: name.into(),
        holder: holder.into(),
        lease_duration_seconds: seconds,
        labels: HashMap::new(),
        request_id: String::new(),
    }
}

pub fn renew_req(ns: &str, name: &str, holder: &str, token: u64) -> pb::RenewRequest {
    pb::RenewRequest {
        namespace: ns.into(),
        name: name.into(),
        holder: holder.into(),
        fencing_token: token,
        request_id: String::new(),
    }
}

pub fn release_req(ns: &str, name: &str, holder: &str, token: u64) -> pb::ReleaseRequest {
    pb::ReleaseRequest {
        namespace: ns.into(),
        name: name.into(),
        holder: holder.into(),
        fencing_token: token,
        request_id: String::new(),
    }
}

/// The value of `series` (name and labels, exactly as printed) in a
/// Prometheus text scrape.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A `Put` of `spec` with `meta` (see [`meta`]), without a request id.
pub fn put_req(meta: Option<pb::ObjectMeta>, spec: pb::LeaseSpec) -> pb::PutRequest {
    pb::PutRequest {
        lease: Some(pb::Lease {
            metadata: meta,
            spec: Some(spec),
            status: None,
        }),
        request_id: String::new(),
    }
}

/// Metadata naming `ns/name` at resourceVersion `rv` (0: create).
pub fn meta(ns: &str, name: &str, rv: u64) -> Option<pb::ObjectMeta> {
    Some(pb::ObjectMeta {
        namespace: ns.into(),
        name: name.into(),
        resource_version: rv,
        ..Default::default()
    })
}
