//! `leasehold-lazyfs`: a FUSE filesystem that forgets, on command, everything
//! not made durable, as a power cut forgets a page cache. It is the
//! power-loss fault of Leasehold's chaos suite, in the spirit of LazyFS
//! (Ramos et al., VLDB 2024), written for this project.
//!
//! Mounting backing directory `B` at mountpoint `M`, every operation on `M`
//! acts on `B` at once (a pass-through), while an in-memory journal records
//! how to take back what is not durable yet. "Lose unsynced" rolls those
//! changes back, leaving `B` as a power cut at that instant would have left
//! a strict filesystem; the chaos harness then restarts the server on it.
//!
//! # Why undo, not a cache
//!
//! LazyFS keeps unsynced data in its own page cache and writes it through on
//! fsync. We do the reverse: apply everything to `B` at once and keep an
//! *undo* journal of what is not durable (`src/journal.rs` has the
//! model). Reads, listings and sizes then need no model at all (they are
//! `B`'s), the journal only grows with unsynced changes, and the pieces that
//! must be right (what to save, what to restore) are small enough to be unit
//! tested without FUSE.
//!
//! # Durability rules (what survives `lose-unsynced`)
//!
//! At least as strict as LazyFS, and as strict as POSIX allows:
//!
//! - **File data and size** (writes, truncation or extension through
//!   `truncate`/`ftruncate`/`O_TRUNC`, `fallocate`) are durable only once the
//!   file is `fsync`ed or `fdatasync`ed, through any open handle of that
//!   inode. `close` makes nothing durable. `sync(2)` and `syncfs(2)` are not
//!   seen by a FUSE filesystem and so not honoured: use `checkpoint`.
//! - **Directory entries** (create, `mknod`, `mkdir`, `unlink`, `rmdir`,
//!   `rename`) are durable only once the parent directory is fsynced after
//!   the change. A rename across directories needs *both* directories
//!   fsynced after it, otherwise it is undone as a whole. So a file created
//!   and fsynced whose directory never was vanishes, data and all; a file
//!   whose entry is durable but whose data never was is there, empty (its
//!   size at creation). When a change becomes durable, earlier pending
//!   changes of one of the same names become durable with it (as the ordered
//!   journal of a real filesystem would have it).
//! - A file opened with `O_SYNC` or `O_DSYNC`: each write is durable when it
//!   returns (it syncs the whole file, as an `fdatasync` after it would).
//! - The undo is of the content only: mode, owner and times pass through and
//!   are not modelled (they survive whatever happens).
//! - A clean unmount makes everything durable, as a clean shutdown would.
//!
//! The torn mode ([`Mounted::lose_unsynced_torn`]) rolls a file back and then
//! re-applies a random prefix of its unsynced operations, the last write cut
//! short at a random byte: the file holds its durable content plus a prefix
//! of the unsynced byte stream, never garbage. Directory changes are undone
//! as in the plain mode.
//!
//! # Not modelled
//!
//! Symbolic and hard links cannot be created (`EPERM`); existing symlinks
//! can be read. Extended attributes are not supported. `RENAME_EXCHANGE`
//! and `RENAME_WHITEOUT` fail with `EINVAL`. `fallocate` modes that shift
//! data (collapse, insert) fail with `EOPNOTSUPP`. Shared writable `mmap`
//! fails (`ENODEV`: files are opened in direct-I/O mode so the kernel caches
//! nothing). Locks (`flock`, POSIX locks) are left to the kernel and work
//! as on any local filesystem. Changes made to `B` behind the mount's back
//! are not seen by the model.
//!
//! # Use
//!
//! In process: [`Mounted::mount`], then [`Mounted::lose_unsynced`] and
//! friends (or a [`Controller`] from another thread); dropping the
//! [`Mounted`] unmounts. From another process: serve a [`ControlServer`]
//! and send it commands with [`control`] (the `leasehold-lazyfs` binary does
//! both; see the README).

mod control;
mod fs;
mod journal;
mod mount;
mod sys;

pub use control::{control, execute, ControlServer};
pub use journal::{Summary, STASH_DIR};
pub use mount::{unmount_stale, Controller, MountOptions, Mounted};
