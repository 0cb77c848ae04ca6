//! The gauges of a scrape, read from the node right before the registry is
//! encoded: Raft's metrics, the state machine's published view, the watch
//! bound and `/proc/self`. Counters and histograms are recorded where
//! their events happen (see `telemetry`).

use crate::api::leases::LeasesService;
use crate::raft::node::Node;
use crate::telemetry::metrics;
use openraft::ServerState;
use std::collections::BTreeMap;

/// Namespaces reported one by one in `leasehold_namespace_leases`; the
/// rest are summed under `namespace="_other"`, so a cluster with many
/// namespaces cannot blow up the scrape.
pub const MAX_NAMESPACES: usize = 100;

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Leases of one namespace by state.
#[derive(Default)]
struct Counts {
    /// A holder whose tenure has not lapsed.
    held: u64,
    /// A holder whose lapse the leader recorded (`expired`).
    expired: u64,
    /// No holder.
    free: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.held + self.expired + self.free
    }

    fn add(&mut self, o: &Counts) {
        self.held += o.held;
        self.expired += o.expired;
        self.free += o.free;
    }

    fn set(&self, namespace: &str) {
        let ns = &metrics().namespace_leases;
        for (state, v) in [
            ("held", self.held),
            ("expired", self.expired),
            ("free", self.free),
        ] {
            ns.with_label_values(&[namespace, state]).set(gauge(v));
        }
    }
}

/// Sets every scrape-time gauge. `ready` is `/readyz`'s verdict.
pub async fn gauges(node: &Node, leases: &LeasesService, ready: bool) {
    let g = &metrics().gauges;
    let m = node.raft.metrics().borrow().clone();
    let commit = node.committed_index().await;
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let last_log = m.last_log_index.unwrap_or(0);
    g.raft_term.set(gauge(m.current_term));
    g.raft_leader_id.set(gauge(m.current_leader.unwrap_or(0)));
    g.raft_has_leader.set(i64::from(m.current_leader.is_some()));
    g.raft_is_leader
        .set(i64::from(m.state == ServerState::Leader));
    g.raft_commit_index.set(gauge(commit));
    g.raft_applied_index.set(gauge(applied));
    g.raft_last_log_index.set(gauge(last_log));
    g.raft_snapshot_index
        .set(gauge(m.snapshot.map(|l| l.index).unwrap_or(0)));
    g.raft_apply_lag_entries
        .set(gauge(commit.saturating_sub(applied)));
    // Per follower, on the leader only: a follower that left or a node
    // that lost leadership must not keep its last value.
    let lag = &metrics().replication_lag;
    lag.reset();
    if let Some(rep) = &m.replication {
        for (id, matched) in rep.iter() {
            if *id == node.id {
                continue;
            }
            let at = matched.map(|l| l.index).unwrap_or(0);
            lag.with_label_values(&[&id.to_string()])
                .set(gauge(last_log.saturating_sub(at)));
        }
    }

    let view = node.sm.view();
    g.revision.set(gauge(view.revision()));
    g.leases.set(gauge(view.lease_count() as u64));
    g.tombstones.set(gauge(view.tombstone_count() as u64));
    g.dedup_records.set(gauge(node.sm.dedup_records() as u64));
    let (compacted, events) = view.history_bounds();
    g.history_events.set(gauge(events as u64));
    g.history_compacted_revision.set(gauge(compacted));
    g.watchers.set(gauge(leases.open_watches() as u64));
    g.ready.set(i64::from(ready));

    // Held, expired and free leases per namespace: one pass over the view,
    // on a blocking thread (it is O(leases)).
    let counts = tokio::task::spawn_blocking(move || {
        let mut per: BTreeMap<String, Counts> = BTreeMap::new();
        for l in view.leases() {
            let c = per.entry(l.key.namespace.clone()).or_default();
            match (l.holder().is_some(), l.expired) {
                (true, false) => c.held += 1,
                (true, true) => c.expired += 1,
                (false, _) => c.free += 1,
            }
        }
        per
    })
    .await
    .unwrap_or_default();
    let mut by_size: Vec<_> = counts.into_iter().collect();
    by_size.sort_by_key(|(ns, c)| (std::cmp::Reverse(c.total()), ns.clone()));
    let ns = &metrics().namespace_leases;
    ns.reset();
    let (mut held_total, mut other) = (0u64, Counts::default());
    for (i, (name, c)) in by_size.iter().enumerate() {
        held_total += c.held;
        if i < MAX_NAMESPACES {
            c.set(name);
        } else {
            other.add(c);
        }
    }
    if by_size.len() > MAX_NAMESPACES {
        other.set("_other");
    }
    g.leases_held.set(gauge(held_total));

    let p = super::process::resident_bytes().unwrap_or(0);
    g.process_resident_memory_bytes.set(gauge(p));
    g.process_open_fds
        .set(gauge(super::process::open_fds().unwrap_or(0)));
    g.process_max_fds
        .set(gauge(super::process::max_fds().unwrap_or(0)));
}
