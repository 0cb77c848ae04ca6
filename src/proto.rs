//! Generated protobuf and gRPC code.
//!
//! `v1` is the client API, compiled by `leasehold-proto` (the wire contract
//! clients build on) and re-exported here; `internal` is the peer
//! transport, which is not a public contract.

pub use leasehold_proto::{v1, FILE_DESCRIPTOR_SET};

/// The peer transport, package `leasehold.internal.v1`.
#[allow(clippy::all, missing_docs)]
pub mod internal {
    tonic::include_proto!("leasehold.internal.v1");
}

/// The encoded `FileDescriptorSet` of the peer transport, for server
/// reflection.
pub const INTERNAL_FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/leasehold_internal_descriptor.bin"
));
