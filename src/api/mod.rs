//! The gRPC surface: the client services, the internal Raft service, proto
//! conversions and the one error map.

pub mod authn;
pub mod authz;
pub mod backup;
pub mod cluster;
pub mod convert;
pub mod leases;
pub mod limits;
pub mod raft_service;
pub mod status;
pub mod stopping;
pub mod watch;
