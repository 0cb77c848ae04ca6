//! The server package's integration tests, as one test binary: a module
//! per concern, one shared process harness ([`common`]). One binary links
//! the server and the harness once instead of once per file (13 before),
//! which is most of a clean `cargo test`'s time on a small machine.
//!
//! Run one concern with `cargo test -p leasehold --test it <module>::`
//! (for example `cargo test -p leasehold --test it lock::`).
//!
//! Layout:
//! - `common`: the process harness (`Cluster`, deadlines, CLI runner,
//!   request helpers) over `leasehold_testkit::node`;
//! - `server`: the in-process server (`serve_on`), health, reflection,
//!   shutdown (also with an idle HTTP/1.1 connection open), restart into a
//!   new term;
//! - `cluster`: three-node clusters: failover, membership, wiped disks;
//! - `state_machine`, `storage_suite`: the state machine and openraft's
//!   storage test suite on our log store;
//! - `durability`, `power_loss`: fdatasync before acknowledgement (strace),
//!   power cuts on the lazy filesystem;
//! - `watch`, `elector`, `lock`, `identity`, `cli`: the client-facing
//!   features through real processes;
//! - `client_errors`: the status contract between server and client;
//! - `kube`: the Kubernetes Lease API over HTTP/1.1, and kubectl;
//! - `security`: TLS, peer authentication, identities, authorization
//!   rules and reloads, with certificates made in the test;
//! - `ops`: `/metrics`, `/healthz`, `/readyz` and the alert rules;
//! - `probes`: `--metrics-listen`, the plaintext listener for probes;
//! - `manifests`: deploy/kubernetes (structure; kustomize and
//!   kubernetes-validate when installed) and the systemd unit;
//! - `ui`: the `/ui` live view, over HTTP and in headless Chromium;
//! - `backup`: `snapshot save` under load, restore after every node was
//!   wiped, the revision floor, and what restore refuses;
//! - `handoff`: leadership hand-over on SIGTERM, rolling restarts, the
//!   format version on the wire;
//! - `layers`: the module layer order of `src/`.

mod common;

mod backup;
mod cli;
mod client_errors;
mod cluster;
mod durability;
mod elector;
mod handoff;
mod identity;
mod kube;
mod layers;
mod lock;
mod manifests;
mod ops;
mod power_loss;
mod probes;
mod security;
mod server;
mod state_machine;
mod storage_suite;
mod ui;
mod watch;
