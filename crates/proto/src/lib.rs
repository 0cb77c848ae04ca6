//! `leasehold-proto`: Leasehold's wire contract, the part a client and a
//! server must agree on and nothing else.
//!
//! # Layout
//! - [`v1`]: the generated messages and gRPC stubs of the public API,
//!   package `leasehold.v1` (`proto/leasehold/v1/leasehold.proto`), and
//!   [`FILE_DESCRIPTOR_SET`] for server reflection.
//! - [`wire`]: the error details every status carries (the `ErrorInfo`
//!   domain, the reasons and what a client reads back), and the encoding
//!   of a status inside a stream.
//! - [`CLOCK_RATE_BOUND_PPM`]: the clock-rate bound the lease rules assume,
//!   which a client needs to judge its own lease validity.
//!
//! Depends on prost and tonic only: the Rust client builds on this crate
//! without the server's storage or consensus. The peer transport between
//! nodes is not a public contract and stays in the server.

pub mod wire;

/// The client API, package `leasehold.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("leasehold.v1");
}

/// The encoded `FileDescriptorSet` of `leasehold.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/leasehold_v1_descriptor.bin"));

/// Bound on the rate error between any two clocks involved (leaders and
/// clients), in parts per million: 10,000 ppm = 1 %. Quartz clocks and NTP
/// slewing stay below 0.1 %; the margin is deliberately generous. A lease of
/// duration `d` is handed to another holder only after `d·(1 + ρ)` has passed
/// on the leader's clock, and a client that keeps its own validity deadline
/// shortens it by the same bound. Part of the contract: a server and its
/// clients must use the same value.
pub const CLOCK_RATE_BOUND_PPM: i64 = 10_000;
