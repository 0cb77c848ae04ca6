//! Generated protobuf and gRPC code.
//!
//! `v1` is the client API; `internal` is the peer transport, which is not a
//! public contract.

#![allow(clippy::all, missing_docs)]

/// The client API, package `leasehold.v1`.
pub mod v1 {
    tonic::include_proto!("leasehold.v1");
}

/// The peer transport, package `leasehold.internal.v1`.
pub mod internal {
    tonic::include_proto!("leasehold.internal.v1");
}

/// The encoded `FileDescriptorSet` of every proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/leasehold_descriptor.bin"));
