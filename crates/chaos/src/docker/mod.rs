//! The docker backend: the three-node docker-compose cluster of `cluster/`,
//! started with the chaos override (`cluster/chaos.sh` does that).
//!
//! Every fault goes through the `docker` and `docker-compose` commands, run
//! with [`tokio::process::Command`]; their stderr ends up in the `Err`
//! strings, and every method checks its effect afterwards (the container
//! state, the listed iptables rules, the clock a fresh process sees):
//!
//! - kill: `docker kill` (SIGKILL); start: `docker start`, or `docker-compose
//!   up -d --no-deps nodeN` when a wipe removed the container.
//! - pause / resume: `docker pause` / `docker unpause` (the cgroup freezer:
//!   the process cannot run, its sockets stay open).
//! - wipe: the container and its named data volume are removed, so the next
//!   start creates both empty.
//! - cut / loss: iptables DROP rules inside the containers (they have
//!   `NET_ADMIN`), in a dedicated chain [`CHAIN`] that INPUT and OUTPUT jump
//!   to, so healing is a flush of that chain. Rules match peer addresses
//!   only: clients on the host reach the nodes through the bridge gateway
//!   (the published ports), which no rule matches, so the suite can still
//!   talk to an isolated node and observe what it does.
//! - delay: netem, when the kernel has it; [`DockerBackend::new`] probes
//!   that once by adding a netem qdisc in a container (many CI kernels, and
//!   this project's development machine, lack `sch_netem`).
//! - clock offset: libfaketime, preloaded by `docker-compose.chaos.yml`,
//!   reads each node's offset from a file on the host bind-mounted into the
//!   container; see [`DockerBackend::clock_offset`] for what is verified.
//!
//! With `--tls` the cluster runs `docker-compose.tls.yml` on top: the nodes
//! serve TLS with certificates a `certs` service wrote to a host directory
//! ([`tls_dir`], mounted at [`TLS_MOUNT`]), and the suite's clients present
//! the `chaos` client certificate from there ([`DockerOptions::with_tls`]).
//!
//! Docker's restart policy is set to `no` (by the override and, for a
//! cluster started without it, by [`DockerBackend::new`]): a killed or
//! crashed node must stay down until the suite starts it, or a fault would
//! end behind the scheduler's back and a crash would go unnoticed.
//!
//! This module is the backend itself: the node table, the command runner,
//! construction and the [`Backend`] implementation, which keeps the order of
//! every fault's steps in one place. The mechanics of each fault live beside
//! it: `iptables` (cut / loss), `netem` (delay), `faketime` (clock offset)
//! and `power_loss` (the lazy filesystems of the power-loss faults); `live`
//! is the ignored test against a real cluster.

mod faketime;
mod iptables;
#[cfg(test)]
mod live;
mod netem;
mod power_loss;

pub use faketime::FAKETIME_LABEL;
pub use iptables::CHAIN;
pub use power_loss::{LAZYFS_SOCKET, POWER_LOSS_COMPOSE_FILE};

use super::backend::{Backend, NodeId};
use super::faults::FaultKind;
use super::lazydisk::LazyControl;
use faketime::{check_offset, faketime_spec, is_offset_spec, write_atomically, ClockSetup};
use iptables::{cut_rules, loss_rules, parse_rules, Rule};
use leasehold_client::{ConnectArgs, ConnectOptions};
use power_loss::{lazy_disk_of, POWER_LOSS_UNSUPPORTED};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The compose override that turns TLS on (certificates, client
/// identities, authorization): `cluster/chaos.sh --tls` starts the cluster
/// with it, and a wiped node must be recreated with it too.
pub const TLS_COMPOSE_FILE: &str = "docker-compose.tls.yml";

/// Where `docker-compose.tls.yml` mounts the certificate directory in the
/// node containers: the backend tells a TLS cluster by it.
pub const TLS_MOUNT: &str = "/pki";

/// The host directory of the certificates: `$LEASEHOLD_TLS_DIR`, relative
/// to `cluster` unless absolute, default `cluster/.tls`, as
/// `docker-compose.tls.yml` resolves `${LEASEHOLD_TLS_DIR:-./.tls}`.
pub fn tls_dir(cluster: &Path) -> PathBuf {
    match std::env::var_os("LEASEHOLD_TLS_DIR").filter(|v| !v.is_empty()) {
        Some(d) => cluster.join(d),
        None => cluster.join(".tls"),
    }
}

/// The client flags of a run against the TLS cluster: what was given,
/// with the CA and the `chaos` client certificate of `dir` filled in where
/// nothing was (`--cacert` defaults to `dir/ca.crt`; `--cert`/`--key` to
/// `dir/chaos.crt`/`dir/chaos.key` unless either was given). A token, if
/// given, is kept: a certificate identifies the client first anyway.
pub fn tls_client_args(given: &ConnectArgs, dir: &Path) -> ConnectArgs {
    let mut a = given.clone();
    if a.cacert.is_none() {
        a.cacert = Some(dir.join("ca.crt"));
    }
    if a.cert.is_none() && a.key.is_none() {
        a.cert = Some(dir.join("chaos.crt"));
        a.key = Some(dir.join("chaos.key"));
    }
    a
}

/// How long a container may take to reach the state a method asked for.
const STATE_TIMEOUT: Duration = Duration::from_secs(15);

/// One node of the compose cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerNode {
    /// The Raft node id.
    pub id: NodeId,
    /// The compose service, e.g. `node1`.
    pub service: String,
    /// The container name, e.g. `leasehold-node1`.
    pub container: String,
    /// The node's address on the cluster network, e.g. `172.28.0.11`.
    pub ip: String,
    /// The port the node listens on inside its container.
    pub port: u16,
    /// The port published on the host for it.
    pub host_port: u16,
}

/// Where the cluster is and how to reach it. [`Default`] matches
/// `cluster/docker-compose.yml` with `cluster/docker-compose.chaos.yml`.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// The compose project name (`cluster/.env` pins it to `leasehold`).
    pub project: String,
    /// The compose files, in order: needed to recreate a wiped node with
    /// the same settings as the others.
    pub compose_files: Vec<PathBuf>,
    /// The nodes.
    pub nodes: Vec<DockerNode>,
    /// The host address the published ports are bound to.
    pub host: String,
    /// The host directory holding one directory per service (`node1/`, ...)
    /// with that node's libfaketime spec file. `None`: whatever directory is
    /// mounted at the spec file's directory in the containers (the override
    /// takes it from `LEASEHOLD_CHAOS_DIR`, default `cluster/.chaos`). When
    /// given, the mounts must match it.
    pub faketime_dir: Option<PathBuf>,
    /// The longest any single docker command may take.
    pub command_timeout: Duration,
    /// Whether the cluster runs with [`TLS_COMPOSE_FILE`]: checked against
    /// the containers, so that a run does not talk plaintext to TLS nodes
    /// (or the reverse) and fail on every call.
    pub tls: bool,
    /// How the suite's clients reach the nodes (TLS, token).
    pub connect: ConnectOptions,
}

impl DockerOptions {
    /// The `cluster` directory the compose files are in.
    pub fn cluster_dir(&self) -> PathBuf {
        self.compose_files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The options of the TLS cluster: [`TLS_COMPOSE_FILE`] added to the
    /// compose files, and the clients connecting as `given` says with the
    /// defaults of [`tls_client_args`] from [`tls_dir`]. Fails if a
    /// certificate file cannot be read or does not fit.
    pub fn with_tls(mut self, given: &ConnectArgs) -> Result<Self, String> {
        let cluster = self.cluster_dir();
        let file = cluster.join(TLS_COMPOSE_FILE);
        if !self.compose_files.contains(&file) {
            self.compose_files.push(file);
        }
        let args = tls_client_args(given, &tls_dir(&cluster));
        self.connect = args.options().map_err(|e| {
            format!("{e} (the TLS cluster's certificates are written by `cluster/chaos.sh --tls`)")
        })?;
        self.tls = true;
        Ok(self)
    }
}

impl Default for DockerOptions {
    /// The compose files are found through the source tree this binary was
    /// built from (`CARGO_MANIFEST_DIR`): the suite runs from a checkout.
    fn default() -> Self {
        let cluster = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster");
        let nodes = (1..=3u16)
            .map(|i| DockerNode {
                id: NodeId::from(i),
                service: format!("node{i}"),
                container: format!("leasehold-node{i}"),
                ip: format!("172.28.0.{}", 10 + i),
                port: 7070,
                host_port: 7070 + i,
            })
            .collect();
        DockerOptions {
            project: "leasehold".into(),
            compose_files: vec![
                cluster.join("docker-compose.yml"),
                cluster.join("docker-compose.chaos.yml"),
            ],
            nodes,
            host: "127.0.0.1".into(),
            faketime_dir: None,
            command_timeout: Duration::from_secs(60),
            tls: false,
            connect: ConnectOptions::default(),
        }
    }
}

/// What the backend learnt about one node when it was constructed.
#[derive(Debug, Clone)]
struct NodeInfo {
    node: DockerNode,
    /// The named volume mounted at the data directory.
    volume: String,
    /// The lazy filesystem bound at the data directory instead, when the
    /// cluster was started for power-loss faults.
    disk: Option<LazyControl>,
    /// The interface carrying the node's address (for tc).
    iface: String,
}

/// The docker-compose cluster, as a [`Backend`].
pub struct DockerBackend {
    opts: DockerOptions,
    nodes: BTreeMap<NodeId, NodeInfo>,
    /// `docker-compose` or `docker compose`, if either exists.
    compose: Result<Vec<String>, String>,
    /// Environment for docker-compose, so that a recreated container gets
    /// the same spec directory, preload and log level as the others.
    compose_env: Vec<(String, String)>,
    clock: Result<ClockSetup, String>,
    iptables: Result<(), String>,
    netem: Result<(), String>,
    /// Nodes that were paused when the network was healed: their chain is
    /// flushed when they resume.
    pending_heal: Mutex<BTreeSet<NodeId>>,
}

/// A finished command.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
    what: String,
    code: Option<i32>,
}

impl Output {
    fn into_result(self) -> Result<String, String> {
        if self.ok {
            Ok(self.stdout)
        } else {
            Err(self.failure())
        }
    }

    fn failure(&self) -> String {
        let code = self
            .code
            .map_or_else(|| "a signal".to_string(), |c| c.to_string());
        format!(
            "`{}` exited with {code}: {}",
            self.what,
            last_chars(&self.stderr, 2000)
        )
    }
}

/// The last `n` characters of `s`, trimmed (stderr can be long).
fn last_chars(s: &str, n: usize) -> String {
    let s = s.trim();
    let count = s.chars().count();
    if count <= n {
        s.to_string()
    } else {
        let tail: String = s.chars().skip(count - n).collect();
        format!("...{tail}")
    }
}

impl DockerBackend {
    /// Starts node `id` (see [`Backend::start`]), with `env` added to
    /// compose's environment when the container must be recreated.
    async fn start_with(&self, id: NodeId, env: &[(&str, &str)]) -> Result<(), String> {
        let info = self.info(id)?.clone();
        let name = info.node.container.as_str();
        match self.state(id).await? {
            Some((true, _)) => {}
            Some((false, _)) => {
                self.docker(&["start", name]).await?;
            }
            None => {
                let compose = self.compose.as_ref().map_err(Clone::clone)?;
                let (program, prefix) = compose
                    .split_first()
                    .ok_or_else(|| "no compose command".to_string())?;
                let args = compose_up_args(
                    prefix,
                    &self.opts.project,
                    &self.opts.compose_files,
                    &info.node.service,
                );
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let mut compose_env = self.compose_env.clone();
                compose_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                self.run(program, &args, &compose_env)
                    .await?
                    .into_result()?;
            }
        }
        let mut up = self
            .wait_state(id, "running", |s| matches!(s, Some((true, _))))
            .await;
        if up.is_ok() {
            // A process that cannot start (a bad LD_PRELOAD or clock spec,
            // a data directory it refuses) exits within moments.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if !matches!(self.state(id).await?, Some((true, _))) {
                up = Err(format!("{name} stopped right after it started"));
            }
        }
        if let Err(e) = up {
            let logs = self
                .run("docker", &["logs", "--tail", "20", name], &[])
                .await
                .map(|o| last_chars(&format!("{}{}", o.stdout, o.stderr), 2000))
                .unwrap_or_default();
            return Err(format!("{e}; last log lines:\n{logs}"));
        }
        // A new network namespace: no rules, no qdisc.
        self.pending().remove(&id);
        Ok(())
    }

    /// Checks that the cluster's containers exist and learns what it can do:
    /// each container's data volume and interface; whether clock offsets
    /// work (the image has the [`FAKETIME_LABEL`] label and the containers
    /// were started with the override); whether iptables works in the
    /// containers (by creating [`CHAIN`] and its jumps); whether the kernel
    /// has netem (by adding a netem qdisc in one container and removing it).
    /// Sets any restart policy other than `no` to `no`, and leaves it so.
    pub async fn new(opts: DockerOptions) -> Result<Self, String> {
        if opts.nodes.is_empty() {
            return Err("no nodes configured".into());
        }
        let ids: BTreeSet<NodeId> = opts.nodes.iter().map(|n| n.id).collect();
        if ids.len() != opts.nodes.len() {
            return Err("node ids are not unique".into());
        }
        for f in &opts.compose_files {
            if !f.is_file() {
                return Err(format!("compose file {} does not exist", f.display()));
            }
        }
        let mut b = DockerBackend {
            nodes: BTreeMap::new(),
            compose: Err(String::new()),
            compose_env: Vec::new(),
            clock: Err(String::new()),
            iptables: Err(String::new()),
            netem: Err(String::new()),
            pending_heal: Mutex::new(BTreeSet::new()),
            opts,
        };
        b.compose = b.find_compose().await;

        let mut inspected = BTreeMap::new();
        for node in b.opts.nodes.clone() {
            let c = b.inspect(&node.container).await?.ok_or_else(|| {
                format!(
                    "container {} does not exist: bring the cluster up first (cluster/chaos.sh does)",
                    node.container
                )
            })?;
            let project = str_at(&c, &["Config", "Labels", "com.docker.compose.project"]);
            if project != b.opts.project {
                return Err(format!(
                    "container {} belongs to compose project {project:?}, not {:?}",
                    node.container, b.opts.project
                ));
            }
            let policy = str_at(&c, &["HostConfig", "RestartPolicy", "Name"]);
            if !policy.is_empty() && policy != "no" {
                b.docker(&["update", "--restart=no", &node.container])
                    .await
                    .map_err(|e| format!("cannot disable the restart policy {policy:?}: {e}"))?;
            }
            match (b.opts.tls, mount_to(&c, TLS_MOUNT).is_some()) {
                (true, false) => {
                    return Err(format!(
                        "container {} has no {TLS_MOUNT} mount: the cluster was started \
                         without TLS; start it with `cluster/chaos.sh --tls`, or run \
                         without --tls",
                        node.container
                    ))
                }
                (false, true) => {
                    return Err(format!(
                        "container {} mounts {TLS_MOUNT}: the cluster runs with TLS; \
                         pass --tls",
                        node.container
                    ))
                }
                _ => {}
            }
            let data = mount_to(&c, "/data");
            let volume = data
                .and_then(|m| m.get("Name").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| format!("{}_{}-data", b.opts.project, node.service));
            let disk = data.and_then(lazy_disk_of);
            b.nodes.insert(
                node.id,
                NodeInfo {
                    node: node.clone(),
                    volume,
                    disk,
                    iface: String::new(),
                },
            );
            inspected.insert(node.id, c);
        }

        // A cluster on lazy filesystems must be recreated the same way (a
        // wiped node comes back through compose).
        if b.nodes.values().any(|n| n.disk.is_some()) {
            let dir = b
                .opts
                .compose_files
                .first()
                .and_then(|f| f.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let file = dir.join(POWER_LOSS_COMPOSE_FILE);
            if !b.opts.compose_files.contains(&file) {
                b.opts.compose_files.push(file);
            }
        }
        b.clock = b.clock_setup(&inspected).await;
        b.compose_env = compose_env(&inspected, b.clock.as_ref().ok());

        // Network probes on the nodes that can run commands now.
        let mut live = Vec::new();
        for (id, c) in &inspected {
            if bool_at(c, &["State", "Running"]) && !bool_at(c, &["State", "Paused"]) {
                live.push(*id);
            }
        }
        if live.is_empty() {
            let why = "no node was running and unpaused when the backend started, so nothing could be probed";
            b.iptables = Err(why.into());
            b.netem = Err(why.into());
            return Ok(b);
        }
        b.iptables = Ok(());
        for id in &live {
            if let Err(e) = b.ensure_chain(*id).await {
                b.iptables = Err(format!("iptables does not work in the containers: {e}"));
                break;
            }
        }
        let mut ifaces = Ok(());
        for id in &live {
            match b.iface_of(*id).await {
                Ok(iface) => {
                    if let Some(n) = b.nodes.get_mut(id) {
                        n.iface = iface;
                    }
                }
                Err(e) => {
                    ifaces = Err(e);
                    break;
                }
            }
        }
        b.netem = match ifaces {
            Ok(()) => b.probe_netem(live[0]).await,
            Err(e) => Err(format!("cannot find the interface to delay: {e}")),
        };
        Ok(b)
    }

    /// The container name of node `id`.
    fn container(&self, id: NodeId) -> Result<&str, String> {
        self.info(id).map(|n| n.node.container.as_str())
    }

    fn info(&self, id: NodeId) -> Result<&NodeInfo, String> {
        self.nodes
            .get(&id)
            .ok_or_else(|| format!("there is no node {id}"))
    }

    /// Runs a command to completion (or [`DockerOptions::command_timeout`]).
    async fn run(
        &self,
        program: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Result<Output, String> {
        let what = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = match tokio::time::timeout(self.opts.command_timeout, cmd.output()).await {
            Err(_) => {
                return Err(format!(
                    "`{what}` did not finish within {:?}",
                    self.opts.command_timeout
                ))
            }
            Ok(Err(e)) => return Err(format!("cannot run `{what}`: {e}")),
            Ok(Ok(o)) => o,
        };
        Ok(Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            what,
            code: out.status.code(),
        })
    }

    /// `docker ARGS`; its stdout, or why it failed.
    async fn docker(&self, args: &[&str]) -> Result<String, String> {
        self.run("docker", args, &[]).await?.into_result()
    }

    /// `docker exec CONTAINER ARGS` for node `id`.
    async fn exec(&self, id: NodeId, args: &[&str]) -> Result<Output, String> {
        self.exec_env(id, &[], args).await
    }

    /// `docker exec -e K=V... CONTAINER ARGS` for node `id`.
    async fn exec_env(&self, id: NodeId, env: &[&str], args: &[&str]) -> Result<Output, String> {
        let container = self.container(id)?;
        let mut full = vec!["exec"];
        for kv in env {
            full.extend(["-e", kv]);
        }
        full.push(container);
        full.extend_from_slice(args);
        self.run("docker", &full, &[]).await
    }

    async fn find_compose(&self) -> Result<Vec<String>, String> {
        let v1 = self.run("docker-compose", &["version"], &[]).await;
        if matches!(&v1, Ok(o) if o.ok) {
            return Ok(vec!["docker-compose".into()]);
        }
        let plugin = self.run("docker", &["compose", "version"], &[]).await;
        if matches!(&plugin, Ok(o) if o.ok) {
            return Ok(vec!["docker".into(), "compose".into()]);
        }
        Err("neither docker-compose nor `docker compose` works, so a wiped node cannot be recreated".into())
    }

    /// `docker inspect` of a container as JSON; `None` if there is none.
    async fn inspect(&self, container: &str) -> Result<Option<Value>, String> {
        let out = self
            .run("docker", &["container", "inspect", container], &[])
            .await?;
        if !out.ok {
            if out.stderr.contains("No such") {
                return Ok(None);
            }
            return Err(out.failure());
        }
        let v: Value = serde_json::from_str(&out.stdout)
            .map_err(|e| format!("cannot parse `docker inspect {container}`: {e}"))?;
        Ok(v.as_array().and_then(|a| a.first()).cloned())
    }

    /// Running and paused flags of node `id` (`None`: no container).
    async fn state(&self, id: NodeId) -> Result<Option<(bool, bool)>, String> {
        let c = self.inspect(self.container(id)?).await?;
        Ok(c.map(|c| {
            (
                bool_at(&c, &["State", "Running"]),
                bool_at(&c, &["State", "Paused"]),
            )
        }))
    }

    /// Polls until node `id`'s state satisfies `want`, or [`STATE_TIMEOUT`].
    async fn wait_state(
        &self,
        id: NodeId,
        what: &str,
        want: impl Fn(Option<(bool, bool)>) -> bool,
    ) -> Result<(), String> {
        let until = Instant::now() + STATE_TIMEOUT;
        loop {
            let s = self.state(id).await?;
            if want(s) {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "{} is not {what} after {STATE_TIMEOUT:?} (running, paused: {s:?})",
                    self.container(id)?
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes every network fault from node `id` (which must be running and
    /// unpaused) and checks that the chain is empty and no netem is left.
    async fn heal_node(&self, id: NodeId) -> Result<(), String> {
        if self.iptables.is_ok() {
            let out = self.exec(id, &["iptables", "-w", "-F", CHAIN]).await?;
            if !out.ok && !out.stderr.contains("No chain") {
                return Err(out.failure());
            }
            let listed = self
                .exec(id, &["iptables", "-w", "-S"])
                .await?
                .into_result()?;
            let left = parse_rules(&listed, CHAIN).rules;
            if !left.is_empty() {
                return Err(format!("node {id}: {CHAIN} still holds rules:\n{listed}"));
            }
        }
        if self.netem.is_ok() {
            let iface = self.iface(id).await?;
            // Fails when there is no root qdisc to delete, which is fine.
            let _ = self
                .exec(id, &["tc", "qdisc", "del", "dev", &iface, "root"])
                .await?;
            let shown = self
                .exec(id, &["tc", "qdisc", "show", "dev", &iface])
                .await?
                .into_result()?;
            if shown.contains("netem") {
                return Err(format!("node {id}: netem is still on {iface}: {shown}"));
            }
        }
        self.pending().remove(&id);
        Ok(())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeSet<NodeId>> {
        // A panic while holding this lock cannot leave the set inconsistent
        // (single inserts and removes), so a poisoned lock is still usable.
        self.pending_heal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn peer_ips(&self, id: NodeId) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.node.id != id)
            .map(|n| n.node.ip.clone())
            .collect()
    }

    /// Fails unless node `id` is running and not paused (so that `docker
    /// exec` works).
    async fn require_live(&self, id: NodeId) -> Result<(), String> {
        match self.state(id).await? {
            Some((true, false)) => Ok(()),
            Some((true, true)) => Err(format!("node {id} is paused")),
            _ => Err(format!("node {id} is not running")),
        }
    }
}

#[tonic::async_trait]
impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    fn client_endpoint(&self, id: NodeId) -> String {
        match self.nodes.get(&id) {
            Some(n) => format!("{}:{}", self.opts.host, n.node.host_port),
            None => format!("{}:0", self.opts.host),
        }
    }

    fn peer_address(&self, id: NodeId) -> String {
        match self.nodes.get(&id) {
            Some(n) => format!("{}:{}", n.node.ip, n.node.port),
            None => String::new(),
        }
    }

    fn supports(&self, kind: FaultKind) -> Result<(), String> {
        match kind {
            FaultKind::ClockOffset => self.clock.as_ref().map(|_| ()).map_err(Clone::clone),
            FaultKind::PeerDelay => self.netem.clone(),
            FaultKind::IsolateLeader
            | FaultKind::IsolateFollower
            | FaultKind::CutLink
            | FaultKind::PeerLoss => self.iptables.clone(),
            FaultKind::WipeNode | FaultKind::MemberCycle => {
                self.compose.as_ref().map(|_| ()).map_err(Clone::clone)
            }
            FaultKind::KillLeader
            | FaultKind::KillFollower
            | FaultKind::KillTwo
            | FaultKind::KillAll
            | FaultKind::PauseLeader
            | FaultKind::PauseClient
            | FaultKind::GracefulRestart => Ok(()),
            FaultKind::PowerLossFollower | FaultKind::PowerLossLeader | FaultKind::PowerLossAll => {
                if self.nodes.values().all(|n| n.disk.is_some()) {
                    Ok(())
                } else {
                    Err(POWER_LOSS_UNSUPPORTED.into())
                }
            }
        }
    }

    /// `docker kill` (SIGKILL, also of a paused container); verified by
    /// `State.Running` turning false. A node that is not running is an
    /// error: the fault would not have happened.
    async fn kill(&self, id: NodeId) -> Result<(), String> {
        let name = self.container(id)?;
        match self.state(id).await? {
            Some((true, _)) => {}
            Some((false, _)) => return Err(format!("node {id} ({name}) is not running")),
            None => return Err(format!("node {id} has no container ({name})")),
        }
        self.docker(&["kill", "--signal", "KILL", name]).await?;
        self.wait_state(id, "stopped", |s| !matches!(s, Some((true, _))))
            .await?;
        // Its network namespace, with any rules in it, is gone.
        self.pending().remove(&id);
        Ok(())
    }

    /// `docker stop --time T` (SIGTERM, SIGKILL after `T` seconds); verified
    /// by `State.Running` turning false and `State.ExitCode` being 0: a node
    /// SIGKILLed at the deadline exits 137, which is reported as a failure.
    async fn stop(&self, id: NodeId, timeout: Duration) -> Result<Duration, String> {
        let name = self.container(id)?;
        match self.state(id).await? {
            Some((true, false)) => {}
            Some((true, true)) => return Err(format!("node {id} ({name}) is paused")),
            Some((false, _)) => return Err(format!("node {id} ({name}) is not running")),
            None => return Err(format!("node {id} has no container ({name})")),
        }
        let secs = timeout.as_secs().max(1).to_string();
        let began = Instant::now();
        self.docker(&["stop", "--time", &secs, name]).await?;
        let took = began.elapsed();
        self.wait_state(id, "stopped", |s| !matches!(s, Some((true, _))))
            .await?;
        // Its network namespace, with any rules in it, is gone.
        self.pending().remove(&id);
        let code = self
            .inspect(name)
            .await?
            .and_then(|c| c.pointer("/State/ExitCode").and_then(Value::as_i64));
        match code {
            Some(0) => Ok(took),
            Some(137) => Err(format!(
                "node {id} ({name}) did not exit within {secs} s of SIGTERM (SIGKILLed by docker)"
            )),
            Some(c) => Err(format!(
                "node {id} ({name}) exited with code {c} after SIGTERM"
            )),
            None => Err(format!(
                "node {id} ({name}): no exit code after docker stop"
            )),
        }
    }

    /// `docker start`, or `docker-compose up -d --no-deps SERVICE` when a
    /// wipe removed the container (recreating its volume too); verified by
    /// `State.Running`, still true 300 ms later. A container that does not
    /// get there (a crash on start) fails with the end of its log.
    async fn start(&self, id: NodeId) -> Result<(), String> {
        self.start_with(id, &[]).await
    }

    /// After a wipe the container is recreated by compose with
    /// `LEASEHOLD_INITIAL_CLUSTER_STATE=existing` (the compose file passes
    /// that variable through to the node).
    async fn start_empty(&self, id: NodeId) -> Result<(), String> {
        self.start_with(id, &[("LEASEHOLD_INITIAL_CLUSTER_STATE", "existing")])
            .await
    }

    /// `docker pause`; verified by `State.Paused`.
    async fn pause(&self, id: NodeId) -> Result<(), String> {
        self.require_live(id).await?;
        self.docker(&["pause", self.container(id)?]).await?;
        self.wait_state(id, "paused", |s| s == Some((true, true)))
            .await
    }
    /// `docker unpause`, then the network heal the node missed while paused;
    /// verified by `State.Paused` turning false. Resuming a running node
    /// that is not paused does nothing and succeeds.
    async fn resume(&self, id: NodeId) -> Result<(), String> {
        match self.state(id).await? {
            Some((true, true)) => {
                self.docker(&["unpause", self.container(id)?]).await?;
                self.wait_state(id, "unpaused", |s| s == Some((true, false)))
                    .await?;
            }
            Some((true, false)) => {}
            _ => return Err(format!("node {id} is not running")),
        }
        let pending = self.pending().contains(&id);
        if pending {
            self.heal_node(id).await?;
        }
        Ok(())
    }

    /// Removes the (stopped) container and its named data volume; verified
    /// by both being gone. The next [`Backend::start`] recreates them empty.
    /// On a lazy filesystem the container goes and the mounted directory is
    /// emptied (and that made durable) instead of a volume removed.
    async fn wipe(&self, id: NodeId) -> Result<(), String> {
        let info = self.info(id)?.clone();
        let name = info.node.container.as_str();
        match self.state(id).await? {
            Some((true, _)) => {
                return Err(format!("node {id} is running: kill it before wiping it"))
            }
            Some((false, _)) => {
                self.docker(&["rm", name]).await?;
            }
            None => {}
        }
        if let Some(disk) = info.disk.clone() {
            // The data is the host's lazy filesystem, bound in: empty it
            // (durably) instead of removing a volume.
            tokio::task::spawn_blocking(move || disk.wipe())
                .await
                .map_err(|e| format!("wiping node {id}: {e}"))??;
            if self.inspect(name).await?.is_some() {
                return Err(format!("container {name} still exists after docker rm"));
            }
            return Ok(());
        }
        let out = self
            .run("docker", &["volume", "rm", &info.volume], &[])
            .await?;
        if !out.ok
            && !out.stderr.contains("no such volume")
            && !out.stderr.contains("No such volume")
        {
            return Err(out.failure());
        }
        if self.inspect(name).await?.is_some() {
            return Err(format!("container {name} still exists after docker rm"));
        }
        let v = self
            .run("docker", &["volume", "inspect", &info.volume], &[])
            .await?;
        if v.ok {
            return Err(format!(
                "volume {} still exists after docker volume rm",
                info.volume
            ));
        }
        Ok(())
    }

    /// DROP rules for the other end's address, in both directions, inside
    /// each end that is running and unpaused (the rules of one end already
    /// cut the link both ways; an end that is down gets none, and a restart
    /// empties its own chain, so the other end's rules are what holds the
    /// cut then). Fails if neither end could take them.
    async fn cut(&self, a: NodeId, b: NodeId) -> Result<(), String> {
        self.iptables.clone()?;
        if a == b {
            return Err(format!("cannot cut node {a} from itself"));
        }
        let ip_a = self.info(a)?.node.ip.clone();
        let ip_b = self.info(b)?.node.ip.clone();
        let mut done = Vec::new();
        let mut skipped = Vec::new();
        for (me, peer_ip) in [(a, &ip_b), (b, &ip_a)] {
            match self.require_live(me).await {
                Ok(()) => {
                    self.add_rules(me, &cut_rules(peer_ip)).await?;
                    done.push(me);
                }
                Err(why) => skipped.push(why),
            }
        }
        if done.is_empty() {
            return Err(format!("cannot cut {a}-{b}: {}", skipped.join("; ")));
        }
        Ok(())
    }

    /// Random-drop rules (`-m statistic --mode random`) for packets from and
    /// to every other node, inside node `id` only (each packet is dropped
    /// with probability `fraction` once).
    async fn loss(&self, id: NodeId, fraction: f64) -> Result<(), String> {
        self.iptables.clone()?;
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(format!("loss fraction {fraction} is not in (0, 1]"));
        }
        self.require_live(id).await?;
        let rules: Vec<Rule> = self
            .peer_ips(id)
            .iter()
            .flat_map(|ip| loss_rules(ip, fraction))
            .collect();
        self.add_rules(id, &rules).await
    }

    /// netem on node `id`'s egress to its peers and on each running peer's
    /// egress to it, when [`Backend::supports`] says the kernel allows it.
    async fn delay(&self, id: NodeId, by: Duration) -> Result<(), String> {
        self.netem.clone()?;
        self.require_live(id).await?;
        let iface = self.iface(id).await?;
        self.apply_delay(id, &iface, &self.peer_ips(id), by).await?;
        let my_ip = self.info(id)?.node.ip.clone();
        for peer in self.node_ids().into_iter().filter(|p| *p != id) {
            if self.require_live(peer).await.is_ok() {
                let iface = self.iface(peer).await?;
                self.apply_delay(peer, &iface, std::slice::from_ref(&my_ip), by)
                    .await?;
            }
        }
        Ok(())
    }

    /// Flushes [`CHAIN`] and removes any netem qdisc on every running,
    /// unpaused node, checking each is clean afterwards. A paused node is
    /// healed when it resumes (`docker exec` cannot run in it); a stopped
    /// one needs nothing, as a restart gives it a new network namespace.
    async fn heal_network(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for id in self.node_ids() {
            match self.state(id).await {
                Ok(Some((true, false))) => {
                    if let Err(e) = self.heal_node(id).await {
                        errors.push(e);
                    }
                }
                Ok(Some((true, true))) => {
                    self.pending().insert(id);
                }
                Ok(_) => {
                    self.pending().remove(&id);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Replaces node `id`'s spec file on the host atomically (libfaketime
    /// exits the process on a spec it cannot parse, so it must never see a
    /// half-written file) and reads it back. Then, if the node is running and
    /// not paused, checks the offset inside the container: a fresh process
    /// there (the client, started with `docker exec`, with the container's
    /// LD_PRELOAD and spec file) must log a wall-clock time that is the
    /// host's plus the offset, within a second. Finally waits
    /// `FAKETIME_CACHE_DURATION`, after which the running server has re-read
    /// the file at its next wall-clock read.
    ///
    /// Not verified directly: the running server's own view. Its log lines
    /// carry faked timestamps once it re-reads the file (seen by hand with
    /// `docker logs --timestamps`), but it need not log anything. Note that
    /// the server reads the wall clock for its lease stamps once, at start
    /// (then follows the monotonic clock), so an offset reaches its stamps
    /// only after a restart.
    /// Through the control socket of the node's lazy filesystem on the
    /// host; the container must be stopped (killed).
    async fn lose_unsynced(&self, id: NodeId, torn: Option<u64>) -> Result<String, String> {
        let disk = self
            .info(id)?
            .disk
            .clone()
            .ok_or_else(|| POWER_LOSS_UNSUPPORTED.to_string())?;
        if matches!(self.state(id).await?, Some((true, _))) {
            return Err(format!("node {id} must be killed before it loses power"));
        }
        tokio::task::spawn_blocking(move || disk.lose_unsynced(torn))
            .await
            .map_err(|e| format!("lose-unsynced of node {id}: {e}"))?
    }

    async fn clock_offset(&self, id: NodeId, offset_secs: i64) -> Result<(), String> {
        let setup = self.clock.as_ref().map_err(Clone::clone)?;
        let path = setup
            .spec_files
            .get(&id)
            .ok_or_else(|| format!("there is no node {id}"))?;
        let spec = faketime_spec(offset_secs);
        let previous = tokio::fs::read_to_string(path).await.ok();
        write_atomically(path, &spec).await?;
        let back = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("cannot read back {}: {e}", path.display()))?;
        if back != spec {
            return Err(format!("{} holds {back:?}, not {spec:?}", path.display()));
        }
        if self.require_live(id).await.is_err() {
            // Nothing runs there to ask; it starts with the new spec.
            return Ok(());
        }
        let checked = match self.wall_clock_in(id).await {
            Ok((before, seen, after)) => {
                check_offset(before, seen, after, offset_secs, Duration::from_secs(1))
                    .map_err(|e| format!("node {id}: {e}"))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            // Leave no unverified offset behind.
            if let Some(p) = previous.filter(|p| p.trim().is_empty() || is_offset_spec(p)) {
                let _ = write_atomically(path, &p).await;
            }
            return Err(e);
        }
        tokio::time::sleep(setup.cache + Duration::from_millis(200)).await;
        Ok(())
    }

    fn log_hint(&self, id: NodeId) -> String {
        match self.nodes.get(&id) {
            Some(n) => format!(
                "docker logs {} (a wiped node's earlier log went with its container)",
                n.node.container
            ),
            None => format!("no node {id}"),
        }
    }

    async fn running(&self, id: NodeId) -> bool {
        matches!(self.state(id).await, Ok(Some((true, _))))
    }
}

// ---- pure helpers -------------------------------------------------------

/// The value at `path` in a JSON object, as a string ("" if absent).
fn str_at(v: &Value, path: &[&str]) -> String {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The value at `path` in a JSON object, as a bool (false if absent).
fn bool_at(v: &Value, path: &[&str]) -> bool {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The mount of an inspected container whose destination is `dest`.
fn mount_to<'a>(c: &'a Value, dest: &str) -> Option<&'a Value> {
    c.get("Mounts")?
        .as_array()?
        .iter()
        .find(|m| m.get("Destination").and_then(Value::as_str) == Some(dest))
}

/// An inspected container's environment.
fn env_of(c: &Value) -> BTreeMap<String, String> {
    c.get("Config")
        .and_then(|c| c.get("Env"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// What docker-compose needs in its environment to recreate a node as the
/// others were created: the override's variables as the running containers
/// show them.
fn compose_env(
    inspected: &BTreeMap<NodeId, Value>,
    clock: Option<&ClockSetup>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(first) = inspected.values().next() else {
        return out;
    };
    let env = env_of(first);
    if let Some(p) = env.get("LD_PRELOAD") {
        out.push(("LEASEHOLD_FAKETIME_PRELOAD".to_string(), p.clone()));
    }
    if let Some(l) = env.get("RUST_LOG") {
        out.push(("RUST_LOG".to_string(), l.clone()));
    }
    // The TLS override mounts ${LEASEHOLD_TLS_DIR:-./.tls}: a recreated
    // node must get the same certificates as the others.
    if let Some(dir) = mount_to(first, TLS_MOUNT).and_then(|m| m.get("Source")?.as_str()) {
        out.push(("LEASEHOLD_TLS_DIR".to_string(), dir.to_string()));
    }
    // The override mounts $LEASEHOLD_CHAOS_DIR/<service>: the parent of the
    // spec directories, when they share one.
    if let Some(clock) = clock {
        let parents: BTreeSet<PathBuf> = clock
            .spec_files
            .values()
            .filter_map(|f| f.parent()?.parent().map(Path::to_path_buf))
            .collect();
        if let (1, Some(p)) = (parents.len(), parents.iter().next()) {
            out.push(("LEASEHOLD_CHAOS_DIR".to_string(), p.display().to_string()));
        }
    }
    out
}

/// The arguments after the compose program (`docker-compose`, or `docker`
/// with `prefix` = `["compose"]`) that create and start one service.
fn compose_up_args(
    prefix: &[String],
    project: &str,
    files: &[PathBuf],
    service: &str,
) -> Vec<String> {
    let mut args: Vec<String> = prefix.to_vec();
    args.extend(["-p".to_string(), project.to_string()]);
    for f in files {
        args.extend(["-f".to_string(), f.display().to_string()]);
    }
    args.extend(["up", "-d", "--no-deps", service].map(String::from));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_compose_file() {
        let o = DockerOptions::default();
        assert_eq!(o.project, "leasehold");
        assert_eq!(o.nodes.len(), 3);
        assert_eq!(o.nodes[1].container, "leasehold-node2");
        assert_eq!(o.nodes[1].service, "node2");
        assert_eq!(o.nodes[1].ip, "172.28.0.12");
        assert_eq!(o.nodes[1].host_port, 7072);
        assert!(
            o.compose_files.iter().all(|f| f.is_file()),
            "{:?}",
            o.compose_files
        );
        let compose = std::fs::read_to_string(&o.compose_files[0]).unwrap();
        for n in &o.nodes {
            assert!(compose.contains(&format!("container_name: {}", n.container)));
            assert!(compose.contains(&format!("ipv4_address: {}", n.ip)));
            assert!(compose.contains(&format!("127.0.0.1:{}:{}", n.host_port, n.port)));
        }
    }

    #[test]
    fn tls_adds_the_override_and_the_chaos_client_certificate() {
        let dir = Path::new("/c/.tls");
        let a = tls_client_args(&ConnectArgs::default(), dir);
        assert_eq!(a.cacert.as_deref(), Some(dir.join("ca.crt").as_path()));
        assert_eq!(a.cert.as_deref(), Some(dir.join("chaos.crt").as_path()));
        assert_eq!(a.key.as_deref(), Some(dir.join("chaos.key").as_path()));
        // What was given wins; a given certificate is not paired with the
        // default key.
        let given = ConnectArgs {
            cacert: Some("/my/ca.crt".into()),
            cert: Some("/my/me.crt".into()),
            token: Some("t".into()),
            ..ConnectArgs::default()
        };
        let a = tls_client_args(&given, dir);
        assert_eq!(a.cacert.as_deref(), Some(Path::new("/my/ca.crt")));
        assert_eq!(a.cert.as_deref(), Some(Path::new("/my/me.crt")));
        assert_eq!(a.key, None);
        assert_eq!(a.token.as_deref(), Some("t"));

        let o = DockerOptions::default();
        let cluster = o.cluster_dir();
        assert!(cluster.join("docker-compose.yml").is_file());
        // Without the certificates, a clear error naming the file.
        let missing = ConnectArgs {
            cacert: Some("/nonexistent/ca.crt".into()),
            ..ConnectArgs::default()
        };
        let e = o.with_tls(&missing).unwrap_err();
        assert!(e.contains("--cacert /nonexistent/ca.crt"), "{e}");
        assert!(e.contains("chaos.sh --tls"), "{e}");
    }

    #[test]
    fn a_recreated_node_mounts_the_same_certificates() {
        let c: Value = serde_json::json!({
            "Config": {"Env": []},
            "Mounts": [{"Type": "bind", "Source": "/w/cluster/.tls", "Destination": "/pki"}]
        });
        let env = compose_env(&BTreeMap::from([(1, c)]), None);
        assert!(env.contains(&("LEASEHOLD_TLS_DIR".into(), "/w/cluster/.tls".into())));
    }

    #[test]
    fn compose_up_recreates_one_service_with_every_file() {
        let files = [PathBuf::from("/c/a.yml"), PathBuf::from("/c/b.yml")];
        assert_eq!(
            compose_up_args(&[], "leasehold", &files, "node2").join(" "),
            "-p leasehold -f /c/a.yml -f /c/b.yml up -d --no-deps node2"
        );
        assert_eq!(
            compose_up_args(&["compose".into()], "p", &files[..1], "node1").join(" "),
            "compose -p p -f /c/a.yml up -d --no-deps node1"
        );
    }

    #[test]
    fn environment_and_mounts_come_from_docker_inspect() {
        let c: Value = serde_json::json!({
            "Config": {"Env": ["A=1", "LD_PRELOAD=/usr/lib/faketime/libfaketime.so.1", "EMPTY="]},
            "Mounts": [
                {"Type": "volume", "Name": "leasehold_node1-data", "Destination": "/data"},
                {"Type": "bind", "Source": "/w/cluster/.chaos/node1", "Destination": "/faketime"}
            ],
            "State": {"Running": true, "Paused": false}
        });
        let env = env_of(&c);
        assert_eq!(env["LD_PRELOAD"], "/usr/lib/faketime/libfaketime.so.1");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(
            str_at(mount_to(&c, "/data").unwrap(), &["Name"]),
            "leasehold_node1-data"
        );
        assert!(mount_to(&c, "/nope").is_none());
        assert!(bool_at(&c, &["State", "Running"]));
        assert!(!bool_at(&c, &["State", "Paused"]));
        assert!(!bool_at(&c, &["State", "Missing"]));

        let clock = ClockSetup {
            spec_files: (1..=2)
                .map(|i| (i, PathBuf::from(format!("/w/cluster/.chaos/node{i}/spec"))))
                .collect(),
            cache: Duration::from_secs(1),
        };
        let inspected = BTreeMap::from([(1, c)]);
        let env = compose_env(&inspected, Some(&clock));
        assert!(env.contains(&("LEASEHOLD_CHAOS_DIR".into(), "/w/cluster/.chaos".into())));
        assert!(env.contains(&(
            "LEASEHOLD_FAKETIME_PRELOAD".into(),
            "/usr/lib/faketime/libfaketime.so.1".into()
        )));
    }
}
