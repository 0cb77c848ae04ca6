//! The lease domain: objects, validation, selectors, commands and their
//! application. Pure: this module reads no clock, touches no disk and knows
//! nothing of Raft or gRPC.

pub mod apply;
pub mod command;
pub mod error;
pub mod event;
pub mod gc;
pub mod model;
pub mod selector;
pub mod time;
pub mod validate;

pub use command::{Applied, Command, CommandResponse, EntryResponse, LeaseDraft, Op, Proposal};
pub use error::{LeaseError, LostReason};
pub use event::{Event, EventKind, Visible};
pub use model::{Lease, LeaseKey, LeaseSpec};
pub use time::Timestamp;
