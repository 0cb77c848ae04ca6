//! The node's Prometheus metrics: one process-wide registry, the
//! instruments the write path, the store and the services record into, and
//! the gauges `ops::metrics` sets from the node right before each scrape.
//!
//! Here, just above `types`, so that `store` (fsync, snapshots), `raft`
//! (batches) and `api` (watches) can record without knowing who reads.
//! Recording is an atomic add; nothing here allocates per event.
//!
//! Names follow Prometheus conventions: `leasehold_` prefix, base units
//! (seconds, bytes), `_total` for counters. Every series is listed in
//! README "Metrics and health" and used by docs/alerts/leasehold.rules.yml.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::sync::LazyLock;

/// Every metric of this process.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// gRPC calls by full method and status code (counted when the
    /// response starts: a stream counts at its start).
    pub grpc_requests: IntCounterVec,
    /// gRPC unary latency by method, to the response headers.
    pub grpc_duration: HistogramVec,
    /// HTTP (Kubernetes API, ops routes) requests by route and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency by route, to the response headers.
    pub http_duration: HistogramVec,
    /// `fdatasync` of the write-ahead log.
    pub wal_fsync: Histogram,
    /// Client operations per proposed log entry (the proposer's batches).
    pub proposal_ops: Histogram,
    /// Snapshots built or installed.
    pub snapshots: IntCounterVec,
    /// How long building a snapshot file took.
    pub snapshot_duration: Histogram,
    /// The newest snapshot file's size.
    pub snapshot_bytes: IntGauge,
    /// Times this node saw a new leader.
    pub leader_changes: IntCounter,
    /// Watch events sent to watchers (progress notifications excluded).
    pub watch_events: IntCounter,
    /// Watches ended by the server, by reason.
    pub watch_cutoffs: IntCounterVec,
    /// Tenures the leader's sweep recorded as lapsed (`Expired` events
    /// applied here).
    pub lease_expirations: IntCounter,
    /// How long after a tenure lapsed its expiry was recorded: the entry's
    /// time minus `lapses_at` (the last renewal or the epoch start, plus
    /// the duration). Not `expireTime`: a new leader extends every tenure
    /// to a full duration from its epoch, which would count every failover
    /// as a delay.
    pub expiry_delay: Histogram,
    /// Raft, state and process gauges, set at scrape time.
    pub gauges: Gauges,
    /// Replication lag in entries per follower (leader only).
    pub replication_lag: IntGaugeVec,
    /// Leases per namespace and state (held, free), set at scrape time.
    pub namespace_leases: IntGaugeVec,
    /// Leadership hand-overs on shutdown by result
    /// ([`LEADER_TRANSFER_RESULTS`]; `raft::handoff`).
    pub leader_transfers: IntCounterVec,
}

/// The `result` values of `leasehold_leader_transfers_total`: `ok`, or
/// why the leader stopped without handing over.
pub const LEADER_TRANSFER_RESULTS: [&str; 5] =
    ["ok", "no_target", "not_caught_up", "refused", "timeout"];

fn must<T>(r: prometheus::Result<T>) -> T {
    // Names and label sets below are constants: an error is a bug found by
    // the first test that touches the registry, never input-dependent.
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

/// Exponential buckets from `start`, doubling, `n` of them.
fn doubling(start: f64, n: usize) -> Vec<f64> {
    must(prometheus::exponential_buckets(start, 2.0, n))
}

impl Metrics {
    fn new() -> Metrics {
        let registry = must(Registry::new_custom(Some("leasehold".into()), None));
        let reg = |c: Box<dyn prometheus::core::Collector>| must(registry.register(c));
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            reg(Box::new(c.clone()));
            c
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = must(HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets),
                labels,
            ));
            reg(Box::new(h.clone()));
            h
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = must(Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(buckets),
            ));
            reg(Box::new(h.clone()));
            h
        };
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            reg(Box::new(c.clone()));
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = must(IntGaugeVec::new(Opts::new(name, help), labels));
            reg(Box::new(g.clone()));
            g
        };
        let snapshot_bytes = must(IntGauge::new(
            "snapshot_size_bytes",
            "Size of the newest snapshot file this node wrote or installed",
        ));
        reg(Box::new(snapshot_bytes.clone()));
        Metrics {
            grpc_requests: counter_vec(
                "grpc_requests_total",
                "gRPC calls by method and status code",
                &["method", "code"],
            ),
            grpc_duration: histogram_vec(
                "grpc_request_duration_seconds",
                "gRPC unary call latency to the response headers",
                &["method"],
                doubling(0.0005, 16),
            ),
            http_requests: counter_vec(
                "http_requests_total",
                "HTTP requests (Kubernetes API, ops routes) by route and status",
                &["route", "code"],
            ),
            http_duration: histogram_vec(
                "http_request_duration_seconds",
                "HTTP request latency to the response headers",
                &["route"],
                doubling(0.0005, 16),
            ),
            wal_fsync: histogram(
                "wal_fsync_duration_seconds",
                "fdatasync of the write-ahead log",
                doubling(0.00005, 16),
            ),
            proposal_ops: histogram(
                "proposal_ops",
                "Client operations carried by one proposed log entry",
                doubling(1.0, 10),
            ),
            snapshots: counter_vec(
                "snapshots_total",
                "Snapshots built here or installed from the leader",
                &["kind"],
            ),
            snapshot_duration: histogram(
                "snapshot_build_duration_seconds",
                "Time to write a snapshot file",
                doubling(0.001, 16),
            ),
            snapshot_bytes,
            leader_changes: counter(
                "raft_leader_changes_total",
                "Times this node saw a new leader",
            ),
            watch_events: counter(
                "watch_events_sent_total",
                "Watch events sent to watchers (progress notifications excluded)",
            ),
            watch_cutoffs: counter_vec(
                "watch_cutoffs_total",
                "Watches the server ended: too slow, or their start was compacted",
                &["reason"],
            ),
            lease_expirations: counter(
                "lease_expirations_total",
                "Tenures recorded as lapsed (Expired events applied)",
            ),
            expiry_delay: histogram(
                "lease_expiry_delay_seconds",
                "Time from a tenure lapsing to its expiry being recorded",
                doubling(0.01, 14),
            ),
            gauges: Gauges::new(&|name, help| {
                let g = must(IntGauge::new(name, help));
                reg(Box::new(g.clone()));
                g
            }),
            replication_lag: gauge_vec(
                "raft_replication_lag_entries",
                "Entries a follower lacks, on the leader",
                &["follower"],
            ),
            namespace_leases: gauge_vec(
                "namespace_leases",
                "Leases per namespace: held (a live tenure), expired (holder set, tenure lapsed) or free",
                &["namespace", "state"],
            ),
            leader_transfers: counter_vec(
                "leader_transfers_total",
                "Leadership hand-overs this node attempted on shutdown, by result",
                &["result"],
            ),
            registry,
        }
        .with_known_labels()
    }

    /// Label sets known in advance start at zero, so that they are in
    /// every scrape (an alert on `increase(...)` needs the series before
    /// its first event).
    fn with_known_labels(self) -> Metrics {
        for reason in ["lagged", "buffer_full", "compacted"] {
            self.watch_cutoffs.with_label_values(&[reason]);
        }
        for kind in ["built", "installed"] {
            self.snapshots.with_label_values(&[kind]);
        }
        for result in LEADER_TRANSFER_RESULTS {
            self.leader_transfers.with_label_values(&[result]);
        }
        self
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Declares the scrape-time gauges: one field and one series each.
macro_rules! gauges {
    ($($field:ident = $name:literal, $help:literal;)*) => {
        /// Gauges set from the node right before each scrape.
        pub struct Gauges {
            $(#[doc = $help] pub $field: IntGauge,)*
        }

        impl Gauges {
            fn new(make: &dyn Fn(&str, &str) -> IntGauge) -> Gauges {
                Gauges { $($field: make($name, $help),)* }
            }
        }
    };
}

gauges! {
    raft_term = "raft_term", "The Raft term this node is in";
    raft_leader_id = "raft_leader_id", "The leader's node id (0: none known)";
    raft_has_leader = "raft_has_leader", "1 if this node knows a leader";
    raft_is_leader = "raft_is_leader", "1 on the leader";
    raft_commit_index = "raft_commit_index", "Highest log index known committed";
    raft_applied_index = "raft_applied_index", "Highest log index applied to the state machine";
    raft_last_log_index = "raft_last_log_index", "Highest log index stored";
    raft_snapshot_index = "raft_snapshot_index", "Log index of the newest snapshot";
    raft_apply_lag_entries = "raft_apply_lag_entries", "Committed entries not applied yet";
    revision = "revision", "The cluster revision (fencing tokens are revisions)";
    leases = "leases", "Leases stored";
    leases_held = "leases_held", "Leases with a live tenure";
    tombstones = "tombstones", "Tombstones of held leases deleted early";
    dedup_records = "dedup_records", "Request ids remembered for idempotent retries";
    history_events = "watch_history_events", "Changes kept for watchers to resume from";
    history_compacted_revision = "watch_history_compacted_revision", "Watches from at or below this revision get COMPACTED";
    watchers = "watchers", "Watches served by this node now";
    ready = "ready", "1 while /readyz answers 200";
    process_resident_memory_bytes = "process_resident_memory_bytes", "Resident memory of this process";
    process_open_fds = "process_open_fds", "Open file descriptors of this process";
    process_max_fds = "process_max_fds", "The process's limit of open file descriptors";
}
