//! How faults reach the nodes: the [`Backend`] trait and what every backend
//! must guarantee.
//!
//! A backend runs the three nodes and can hurt them. Two exist: `local`
//! (processes on loopback: kill, stop and restart of processes, wipes,
//! clock offsets through libfaketime when it is installed, and power loss
//! when the data directories are mounts of the lazy filesystem,
//! `crates/lazyfs`) and `docker`
//! (the docker-compose cluster: additionally partitions, packet loss and
//! delay inside the containers).
//!
//! Every method returns only once the fault is in place and verified (the
//! process is gone, the container is paused, the iptables rule is listed),
//! or an error saying why not; the scheduler records either. A method a
//! backend cannot do returns `Err` from [`Backend::supports`] first, with the
//! reason, and the scheduler records the fault as skipped instead of
//! pretending it happened.

use super::faults::FaultKind;
use std::time::Duration;

/// A node's id (the Raft node id, 1-based).
pub type NodeId = u64;

/// A way to run and hurt a three-node cluster.
#[tonic::async_trait]
pub trait Backend: Send + Sync {
    /// `local` or `docker`.
    fn name(&self) -> &'static str;

    /// The node ids, ascending.
    fn node_ids(&self) -> Vec<NodeId>;

    /// The address a client on this machine uses for node `id`.
    fn client_endpoint(&self, id: NodeId) -> String;

    /// The address node `id` advertises to its peers (what `member add`
    /// takes).
    fn peer_address(&self, id: NodeId) -> String;

    /// `Ok` if this backend can inject `kind`, otherwise why not.
    fn supports(&self, kind: FaultKind) -> Result<(), String>;

    /// SIGKILLs node `id` and waits until it is gone.
    async fn kill(&self, id: NodeId) -> Result<(), String>;

    /// Stops node `id` the way an operator or an orchestrator does: SIGTERM,
    /// then waits up to `timeout` for the process to exit. Returns how long
    /// the exit took. An exit with a non-zero status, or no exit within
    /// `timeout` (the node is then SIGKILLed), is an error: a graceful stop
    /// that hangs or crashes is a bug the fault exists to find.
    async fn stop(&self, id: NodeId, timeout: Duration) -> Result<Duration, String>;

    /// Starts node `id` again with its data directory as it is (which may
    /// be empty after [`Backend::wipe`]); returns once the process runs (not
    /// necessarily serving yet).
    async fn start(&self, id: NodeId) -> Result<(), String>;

    /// Starts node `id` after [`Backend::wipe`], as an operator puts back a
    /// node whose data was lost: empty, with `--initial-cluster-state
    /// existing`, so that it waits to be replaced (`member replace`) rather
    /// than refuse to start.
    async fn start_empty(&self, id: NodeId) -> Result<(), String>;

    /// Freezes node `id` (SIGSTOP, `docker pause`).
    async fn pause(&self, id: NodeId) -> Result<(), String>;

    /// Thaws node `id`.
    async fn resume(&self, id: NodeId) -> Result<(), String>;

    /// Deletes node `id`'s data. The node must be killed first.
    async fn wipe(&self, id: NodeId) -> Result<(), String>;

    /// Power loss of node `id`'s disk: drops every write to its data
    /// directory that was not synced (file data and sizes not `fsync`ed or
    /// `fdatasync`ed, directory entries whose directory was not `fsync`ed),
    /// as a power cut empties the page cache. With `torn = Some(seed)` a
    /// prefix of each file's unsynced writes survives, the last of them cut
    /// short (a write torn by the cut). The node must be killed first.
    /// Returns what was dropped, for the fault's record.
    async fn lose_unsynced(&self, id: NodeId, torn: Option<u64>) -> Result<String, String>;

    /// Drops every packet between `a` and `b` (both directions), leaving
    /// their links to clients and to other nodes alone.
    async fn cut(&self, a: NodeId, b: NodeId) -> Result<(), String>;

    /// Drops the given fraction (0..1) of packets on node `id`'s peer links.
    async fn loss(&self, id: NodeId, fraction: f64) -> Result<(), String>;

    /// Delays every packet on node `id`'s peer links.
    async fn delay(&self, id: NodeId, by: Duration) -> Result<(), String>;

    /// Removes every network fault (cuts, loss, delay) from every node.
    async fn heal_network(&self) -> Result<(), String>;

    /// Shifts node `id`'s wall clock (CLOCK_REALTIME only; the monotonic
    /// clock cannot jump) by `offset` seconds, positive or negative. Zero
    /// restores it.
    async fn clock_offset(&self, id: NodeId, offset_secs: i64) -> Result<(), String>;

    /// Where node `id`'s log is, for the failure report.
    fn log_hint(&self, id: NodeId) -> String;

    /// Whether node `id`'s process is running (not killed, not crashed).
    /// Paused counts as running.
    async fn running(&self, id: NodeId) -> bool;
}
