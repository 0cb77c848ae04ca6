//! Raft wiring: the peer network and the
//! node that ties storage, network and the lease API together.

pub mod handoff;
pub mod network;
pub mod node;
pub mod proposer;
pub mod sweeper;
