//! Leasehold: a Raft-replicated store of Kubernetes-style Lease objects with
//! fencing tokens.
//!
//! # Layout
//! - [`lease`]: the pure domain. Lease objects, validation, label selectors,
//!   commands and `apply`. Reads no clock, touches no disk or network.
//! - [`state`]: the replicated state in memory (leases, clock, watch
//!   history, request-id records, sweep indexes) and the per-entry applier
//!   over `lease::apply`. Pure.
//! - [`types`]: openraft's type configuration (below `store`, which needs
//!   it, and `raft`, which runs it).
//! - [`auth`]: TLS on the node's port (our own accept loop), identities
//!   from certificates and bearer tokens, authorization rules, reloads,
//!   and the PKI behind `leasehold certs`.
//! - [`store`]: the write-ahead log, snapshot files, and the thin openraft
//!   adapters over `state`.
//! - [`raft`]: the gRPC peer transport, and the [`raft::node::Node`] that
//!   stamps time into proposals.
//! - [`api`]: tonic services (Leases, Cluster, the internal Raft service),
//!   proto conversions, and the one map from errors to gRPC statuses.
//! - [`kube`]: the Kubernetes `coordination.k8s.io/v1` Lease API over
//!   HTTP/1.1 on the same port (discovery, GET, LIST, Tables), thin
//!   handlers over the gRPC `Leases` service called in process.
//! - [`telemetry`]: the Prometheus registry and instruments.
//! - [`ops`]: `/metrics`, `/healthz` and `/readyz`.
//! - [`identity`]: each node publishes a server identity lease.
//! - [`server`]: `leasehold serve`: configuration, listener, shutdown.
//! - [`cli`]: the `leasehold` command line (argument parsing, output formats).
//! - [`client`]: the Rust client (the `leasehold-client` crate, which
//!   depends on `leasehold-proto` only), used by the CLI, identity leases
//!   and forwarding.
//! - [`proto`]: generated code: the client API re-exported from the
//!   `leasehold-proto` crate (the wire contract), and the peer transport.
//!
//! Layers, lowest first (a module names only its own layer and those
//! below; `tests/it/layers.rs` checks it): `proto` < `client` < `lease` <
//! `state` < `types` < `telemetry` < `auth` < `store` < `raft` < `api` < `kube` < `ops` < `identity` <
//! `server` < `cli`. The crates `leasehold-proto` and `leasehold-client`
//! (re-exported as `client`) are below them all. The load generator is the
//! `leasehold-bench` crate, a client that does not link this one.
//!
//! See ARCHITECTURE.md for the invariants.

pub mod api;
pub mod auth;
pub mod cli;
pub mod ops;
pub mod telemetry;
/// The Rust client, the `leasehold-client` crate (it knows the wire contract
/// only), under its old path.
pub use leasehold_client as client;
pub mod identity;
pub mod kube;
pub mod lease;
pub mod proto;
pub mod raft;
pub mod server;
pub mod state;
pub mod store;
pub mod types;
