//! The chaos suite: a workload of lease clients, Kubernetes-style clients,
//! deleters, watchers and a fenced register, faults injected into a
//! three-node cluster while it runs, a recorded history, and a checker that
//! judges every run.
//!
//! # Layout (split as etcd's robustness tests are: model / traffic / faults /
//! validate)
//! - [`history`]: the recorded operations, request-id reuses and the one
//!   monotonic clock.
//! - [`workload`] (lease-API workers, deleters, the shared write path),
//!   [`kube`] (client-go-style workers: compare-and-swap `Put` with skewed
//!   clocks), [`watcher`] (watchers that resume across faults) and
//!   [`register`] (the fenced register): the traffic.
//! - [`backend`]: the trait through which faults reach the nodes;
//!   [`local`] (processes on loopback) and [`docker`] (the compose cluster)
//!   implement it; [`lazydisk`] gives local nodes disks that can lose
//!   power. [`faults`]: the fault kinds and their records;
//!   [`nemesis`]: the scheduler.
//! - [`check`]: the checker: per-lease linearizability and the other
//!   properties.
//! - [`run`]: one run from start to report.
//!
//! ARCHITECTURE.md ("Chaos suite") says what each property means and why it
//! is checked the way it is.

pub mod backend;
pub mod check;
pub mod docker;
pub mod faults;
pub mod history;
pub mod kube;
pub mod local;

pub use leasehold_testkit::lazydisk;
pub mod nemesis;
pub mod register;
pub mod run;
pub mod watcher;
pub mod workload;
