//! Size limits of the client API, in one place so that the server, a node
//! forwarding to the leader, and the Rust client agree.
//!
//! The chain that keeps every accepted lease usable: a lease is at most
//! `lease::validate::MAX_LEASE_BYTES` (512 KiB); a response carries at most
//! two leases (a Put reply, a watch event) or one List page, which stops
//! adding items past [`LIST_PAGE_BYTES`]; every message fits in
//! [`MAX_MESSAGE_BYTES`], which the server, the forwarding client and the
//! Rust client all use for both directions.

/// Largest gRPC message of the client API, either direction (part of the
/// wire contract, so defined in `leasehold-proto`).
pub use leasehold_proto::wire::MAX_MESSAGE_BYTES;

/// A List page stops adding leases once its items reach this many encoded
/// bytes (it always holds at least one item when any matched), leaving room
/// for one more maximal lease below [`MAX_MESSAGE_BYTES`].
pub const LIST_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// List page size when the request gives none.
pub const DEFAULT_PAGE: usize = 1_000;

/// Largest page a List returns, whatever the request asks for.
pub const MAX_PAGE: usize = 10_000;

/// Concurrent watches one node serves by default (`--max-watches`), gRPC
/// and Kubernetes together: each is a task and a buffer of up to 256
/// events, so the bound keeps a client that opens watches in a loop from
/// exhausting the node. One more is refused RESOURCE_EXHAUSTED (HTTP: 429
/// with `Retry-After`).
pub const DEFAULT_MAX_WATCHES: usize = 10_000;

/// How long a client may leave its watch buffer full before it is cut off
/// (here, not in `watch`, so that `status` can name it without importing
/// the watch service).
pub const SLOW_WATCHER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Leases one List page examines at most. A selector matching few leases
/// returns a short (possibly empty) page with a continue token instead of
/// scanning the whole store in one request; Kubernetes clients follow
/// continue tokens whatever the page holds.
pub const MAX_SCANNED_PER_PAGE: usize = 100_000;

/// A `Leases` client with the API's message limits (used by forwarding and
/// by the Rust client).
pub use leasehold_proto::wire::leases_client;

// The limits nest: one maximal lease plus protobuf overhead after a full
// page, or two maximal leases in one reply, fit in a message; a full page
// never needs more scanning than the scan budget.
const _: () = assert!(
    LIST_PAGE_BYTES + 2 * crate::lease::validate::MAX_LEASE_BYTES + 64 * 1024 <= MAX_MESSAGE_BYTES
);
const _: () = assert!(MAX_PAGE <= MAX_SCANNED_PER_PAGE);
