//! The undo/redo journal: what is not durable yet, and how to forget it.
//!
//! Every change is applied to the backing directory at once (so reads need no
//! model at all), and this journal remembers how to take back each change that
//! has not been made durable by the rules of the crate (see the crate docs).
//! It knows nothing of FUSE: it works on descriptors and names, and its unit
//! tests run on a plain temporary directory.
//!
//! **File data.** Per inode with unsynced changes ([`FileUndo`]): the *durable
//! size* (the size at the first change since the last sync of that inode) and
//! the durable bytes of every 4 KiB page within the durable size that a change
//! has touched since (saved once, before the first write, shrink, hole punch
//! or zeroing that reaches it). Rolling back is `ftruncate(durable size)` and
//! writing the saved pages back, through a descriptor the journal holds, so it
//! works whatever names the inode has by then (renamed, unlinked). The same
//! entry keeps the *redo* list of the unsynced operations (writes with their
//! bytes, size changes, allocations), which the torn mode re-applies in part.
//! A sync of the inode drops the entry: from then on its content is durable.
//!
//! **Directory entries.** An ordered list of pending changes (create, remove,
//! rename), each with the directories that must be fsynced after it to commit
//! it: the parent, or both parents of a rename across directories. Objects that
//! leave the namespace (removed entries, rename targets that were replaced) are
//! not deleted but moved into a stash directory of the backing root, so an
//! undo can move them back with their inode (and with it, their open
//! descriptors and their own undo data). Losing rolls the pending changes back
//! newest first. When a change commits, every *earlier* pending change of one
//! of the same names commits with it (otherwise undoing the earlier one would
//! act on a name the durable later one changed; a journaling filesystem orders
//! them the same way).
//!
//! Directories are referred to by descriptor ([`DirRef`]), not by path, so a
//! change inside a directory is undone in the right place even after that
//! directory was renamed (by a durable rename).

use leasehold_rng::Rng;
use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sys;

/// The identity of an inode in the backing filesystem: (device, inode).
pub type Key = (u64, u64);

/// The granularity of saved old data.
pub const PAGE: u64 = 4096;

/// The stash directory, in the backing root (hidden from the mount).
pub const STASH_DIR: &str = ".lazyfs-stash";

/// The most unsynced bytes of one file kept for the torn mode; past it the
/// file's redo list is dropped and a torn loss keeps none of its unsynced
/// writes (still a valid torn outcome). Bounds memory for files written and
/// never synced (logs).
pub const REDO_LIMIT: u64 = 64 << 20;

/// How much was dropped, made durable, or is pending: `files` with unsynced
/// data or size changes, `bytes` written by unsynced writes (size changes
/// count in `files` only), `entries` unsynced directory entry changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    pub entries: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "files={} bytes={} entries={}",
            self.files, self.bytes, self.entries
        )
    }
}

/// A directory the journal may have to act in: its identity and a
/// descriptor (`O_PATH` is enough) that follows it through renames.
#[derive(Debug, Clone)]
pub struct DirRef {
    pub key: Key,
    pub fd: Arc<OwnedFd>,
}

/// One unsynced operation on a file's data, for the torn mode.
#[derive(Debug)]
enum Redo {
    Write { off: u64, data: Vec<u8> },
    SetLen(u64),
    Allocate { mode: i32, off: u64, len: u64 },
}

impl Redo {
    fn apply(&self, file: &File) -> io::Result<()> {
        match self {
            Redo::Write { off, data } => file.write_all_at(data, *off),
            Redo::SetLen(len) => file.set_len(*len),
            Redo::Allocate { mode, off, len } => sys::fallocate(file, *mode, *off, *len),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Redo::Write { data, .. } => data.len() as u64,
            _ => 0,
        }
    }
}

/// The undo (and redo) data of one inode with unsynced changes.
#[derive(Debug)]
struct FileUndo {
    /// Read-write descriptor of the inode, owned by the journal.
    file: File,
    durable_len: u64,
    /// Page index -> durable bytes of that page (clipped to `durable_len`).
    pages: BTreeMap<u64, Vec<u8>>,
    /// The unsynced operations, in order; `None` once past `REDO_LIMIT`.
    redo: Option<Vec<Redo>>,
    /// Bytes written by unsynced writes (for the summaries).
    bytes: u64,
}

impl FileUndo {
    fn new(file: File) -> io::Result<FileUndo> {
        let durable_len = file.metadata()?.len();
        Ok(FileUndo {
            file,
            durable_len,
            pages: BTreeMap::new(),
            redo: Some(Vec::new()),
            bytes: 0,
        })
    }

    /// Saves the durable bytes of every page in `[start, end)` (clipped to
    /// the durable size) not saved yet. Pages not saved are still intact:
    /// every change saves the pages it reaches before making it.
    fn save(&mut self, start: u64, end: u64) -> io::Result<()> {
        let end = end.min(self.durable_len);
        if start >= end {
            return Ok(());
        }
        for page in start / PAGE..=(end - 1) / PAGE {
            if self.pages.contains_key(&page) {
                continue;
            }
            let at = page * PAGE;
            let len = PAGE.min(self.durable_len - at) as usize;
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                match self.file.read_at(&mut buf[got..], at + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            // A short read means the bytes are not there (zeros after the
            // rollback's truncate to the durable size).
            buf.truncate(got);
            self.pages.insert(page, buf);
        }
        Ok(())
    }

    fn push(&mut self, op: Redo) {
        self.bytes += op.bytes();
        if self.bytes > REDO_LIMIT {
            self.redo = None;
        }
        if let Some(redo) = &mut self.redo {
            redo.push(op);
        }
    }

    /// Puts the durable content back; then, in torn mode, re-applies a
    /// prefix of the unsynced operations whose last one is cut short.
    /// Returns the unsynced bytes kept.
    fn rollback(&self, rng: Option<&mut Rng>) -> io::Result<u64> {
        self.file.set_len(self.durable_len)?;
        for (page, buf) in &self.pages {
            self.file.write_all_at(buf, page * PAGE)?;
        }
        let (Some(rng), Some(redo)) = (rng, &self.redo) else {
            return Ok(0);
        };
        if redo.is_empty() {
            return Ok(0);
        }
        let cut = rng.below(redo.len() as u64) as usize;
        let mut kept = 0;
        for op in &redo[..cut] {
            op.apply(&self.file)?;
            kept += op.bytes();
        }
        // The last one is cut: a write keeps a strict prefix of its bytes,
        // a size change or an allocation does not happen.
        if let Redo::Write { off, data } = &redo[cut] {
            let n = rng.below(data.len() as u64) as usize;
            self.file.write_all_at(&data[..n], *off)?;
            kept += n as u64;
        }
        Ok(kept)
    }
}

/// A pending directory entry change.
#[derive(Debug)]
enum Change {
    /// `name` was created in `dir` (file, directory or node).
    Created { dir: DirRef, name: OsString },
    /// `name` was removed from `dir`; the object waits in the stash.
    Removed {
        dir: DirRef,
        name: OsString,
        stashed: OsString,
    },
    /// `from/from_name` was renamed to `to/to_name`; what `to_name` named
    /// before, if anything, waits in the stash.
    Renamed {
        from: DirRef,
        from_name: OsString,
        to: DirRef,
        to_name: OsString,
        replaced: Option<OsString>,
    },
}

impl Change {
    /// The (directory, name) pairs the change acted on.
    fn names(&self) -> Vec<(Key, &OsStr)> {
        match self {
            Change::Created { dir, name } | Change::Removed { dir, name, .. } => {
                vec![(dir.key, name.as_os_str())]
            }
            Change::Renamed {
                from,
                from_name,
                to,
                to_name,
                ..
            } => vec![
                (from.key, from_name.as_os_str()),
                (to.key, to_name.as_os_str()),
            ],
        }
    }

    /// The directories the change acted in.
    fn dirs(&self) -> Vec<&DirRef> {
        match self {
            Change::Created { dir, .. } | Change::Removed { dir, .. } => vec![dir],
            Change::Renamed { from, to, .. } => vec![from, to],
        }
    }

    /// What goes from the stash when the change is durable.
    fn stashed(&self) -> Option<&OsStr> {
        match self {
            Change::Removed { stashed, .. } => Some(stashed),
            Change::Renamed {
                replaced: Some(r), ..
            } => Some(r),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Pending {
    change: Change,
    /// The directories to fsync to commit it, and whether each has been.
    needs: Vec<(Key, bool)>,
}

/// The stash: a directory of the backing root where objects that left the
/// namespace wait, as long as a pending change may bring them back.
#[derive(Debug)]
struct Stash {
    fd: OwnedFd,
    path: PathBuf,
    next: Cell<u64>,
}

impl Stash {
    /// Creates the stash in `root` (or empties a stale one: whatever a
    /// previous mount left there was not durable).
    fn open(root: &Path) -> io::Result<Stash> {
        let path = root.join(STASH_DIR);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", path.display()),
                ))
            }
        }
        let fd = sys::open_path(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
        })?;
        let stash = Stash {
            fd,
            path,
            next: Cell::new(0),
        };
        stash.clear()?;
        Ok(stash)
    }

    fn fresh(&self) -> OsString {
        self.next.set(self.next.get() + 1);
        OsString::from(format!("n{}", self.next.get()))
    }

    /// Deletes one stashed object (a file or a whole tree).
    fn discard(&self, name: &OsStr) -> io::Result<()> {
        let path = self.path.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn clear(&self) -> io::Result<()> {
        for entry in sys::read_dir(sys::open_dir(self.fd.as_fd())?)? {
            self.discard(&entry.name)?;
        }
        Ok(())
    }
}

/// What is not durable yet (see the module docs).
#[derive(Debug)]
pub struct Journal {
    files: BTreeMap<Key, FileUndo>,
    pending: Vec<Pending>,
    stash: Stash,
    /// Whether syncs are passed on to the backing filesystem.
    sync_backing: bool,
    /// After `close`: nothing is pending and the stash is gone.
    closed: bool,
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

impl Journal {
    /// A journal for the backing directory `root` (which gets the stash).
    /// With `sync_backing`, `checkpoint` also syncs the backing filesystem
    /// (the syncs of single files and directories are the caller's).
    pub fn new(root: &Path, sync_backing: bool) -> io::Result<Journal> {
        Ok(Journal {
            files: BTreeMap::new(),
            pending: Vec::new(),
            stash: Stash::open(root)?,
            sync_backing,
            closed: false,
        })
    }

    /// Whether syncs are passed on to the backing filesystem.
    pub fn sync_backing(&self) -> bool {
        self.sync_backing
    }

    fn file(
        &mut self,
        key: Key,
        open: impl FnOnce() -> io::Result<File>,
    ) -> io::Result<&mut FileUndo> {
        use std::collections::btree_map::Entry;
        match self.files.entry(key) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(v) => Ok(v.insert(FileUndo::new(open()?)?)),
        }
    }

    /// Writes `data` at `off` into inode `key` (opened read-write by `open`
    /// if the journal has no descriptor of it yet), remembering how to undo
    /// it. Returns the bytes written (short only on an error after some).
    pub fn write(
        &mut self,
        key: Key,
        open: impl FnOnce() -> io::Result<File>,
        off: u64,
        data: &[u8],
    ) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let end = off
            .checked_add(data.len() as u64)
            .ok_or_else(|| sys::err(libc::EFBIG))?;
        let f = self.file(key, open)?;
        f.save(off, end)?;
        let mut done = 0;
        let mut error = None;
        while done < data.len() {
            match f.file.write_at(&data[done..], off + done as u64) {
                Ok(0) => {
                    error = Some(sys::err(libc::EIO));
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if done > 0 {
            f.push(Redo::Write {
                off,
                data: data[..done].to_vec(),
            });
        }
        match error {
            Some(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// Sets the size of inode `key` (truncate or extend), undoably.
    pub fn set_len(
        &mut self,
        key: Key,
        open: impl FnOnce() -> io::Result<File>,
        len: u64,
    ) -> io::Result<()> {
        let f = self.file(key, open)?;
        f.save(len, u64::MAX)?;
        f.file.set_len(len)?;
        f.push(Redo::SetLen(len));
        Ok(())
    }

    /// `fallocate` on inode `key`, undoably. Modes: 0 and `KEEP_SIZE`
    /// (allocation, extending the size unless `KEEP_SIZE`), `PUNCH_HOLE |
    /// KEEP_SIZE`, `ZERO_RANGE` (with or without `KEEP_SIZE`); others (which
    /// shift data) fail with `EOPNOTSUPP`.
    pub fn allocate(
        &mut self,
        key: Key,
        open: impl FnOnce() -> io::Result<File>,
        mode: i32,
        off: u64,
        len: u64,
    ) -> io::Result<()> {
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        let destroys = match mode {
            0 | KEEP => false,
            m if m == PUNCH | KEEP || m == ZERO || m == ZERO | KEEP => true,
            _ => return Err(sys::err(libc::EOPNOTSUPP)),
        };
        let end = off.checked_add(len).ok_or_else(|| sys::err(libc::EFBIG))?;
        let f = self.file(key, open)?;
        if destroys {
            f.save(off, end)?;
        }
        sys::fallocate(&f.file, mode, off, len)?;
        f.push(Redo::Allocate { mode, off, len });
        Ok(())
    }

    /// Inode `key` was fsynced (or fdatasynced): its content is durable.
    /// (Passing the sync on to the backing file is the caller's business.)
    pub fn file_synced(&mut self, key: Key) {
        self.files.remove(&key);
    }

    /// `name` was just created in `dir` (by the caller).
    pub fn created(&mut self, dir: &DirRef, name: &OsStr) {
        self.pending.push(Pending {
            change: Change::Created {
                dir: dir.clone(),
                name: name.to_owned(),
            },
            needs: vec![(dir.key, false)],
        });
    }

    /// Removes the non-directory `dir/name` (`unlink`), undoably.
    pub fn unlink(&mut self, dir: &DirRef, name: &OsStr) -> io::Result<()> {
        let st = sys::stat_at(dir.fd.as_fd(), name)?;
        if is_dir(&st) {
            return Err(sys::err(libc::EISDIR));
        }
        self.remove(dir, name)
    }

    /// Removes the empty directory `dir/name` (`rmdir`), undoably.
    pub fn rmdir(&mut self, dir: &DirRef, name: &OsStr) -> io::Result<()> {
        let st = sys::stat_at(dir.fd.as_fd(), name)?;
        if !is_dir(&st) {
            return Err(sys::err(libc::ENOTDIR));
        }
        if !dir_is_empty(dir, name)? {
            return Err(sys::err(libc::ENOTEMPTY));
        }
        self.remove(dir, name)
    }

    fn remove(&mut self, dir: &DirRef, name: &OsStr) -> io::Result<()> {
        let stashed = self.stash.fresh();
        sys::rename_at(
            dir.fd.as_fd(),
            name,
            self.stash.fd.as_fd(),
            &stashed,
            libc::RENAME_NOREPLACE,
        )?;
        self.pending.push(Pending {
            change: Change::Removed {
                dir: dir.clone(),
                name: name.to_owned(),
                stashed,
            },
            needs: vec![(dir.key, false)],
        });
        Ok(())
    }

    /// `rename(from/from_name, to/to_name)`, undoably; with `noreplace` an
    /// existing target fails with `EEXIST` (`RENAME_NOREPLACE`).
    pub fn rename(
        &mut self,
        from: &DirRef,
        from_name: &OsStr,
        to: &DirRef,
        to_name: &OsStr,
        noreplace: bool,
    ) -> io::Result<()> {
        let src = sys::stat_at(from.fd.as_fd(), from_name)?;
        let replaced = match sys::stat_at(to.fd.as_fd(), to_name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                sys::rename_at(
                    from.fd.as_fd(),
                    from_name,
                    to.fd.as_fd(),
                    to_name,
                    libc::RENAME_NOREPLACE,
                )?;
                None
            }
            Err(e) => return Err(e),
            Ok(_) if noreplace => return Err(sys::err(libc::EEXIST)),
            // Two names of one inode: rename does nothing (POSIX).
            Ok(dst) if sys::key_of(&dst) == sys::key_of(&src) => return Ok(()),
            Ok(dst) => {
                match (is_dir(&src), is_dir(&dst)) {
                    (true, false) => return Err(sys::err(libc::ENOTDIR)),
                    (false, true) => return Err(sys::err(libc::EISDIR)),
                    (true, true) if !dir_is_empty(to, to_name)? => {
                        return Err(sys::err(libc::ENOTEMPTY))
                    }
                    _ => {}
                }
                // The target waits in the stash; the rename itself then
                // replaces nothing (and restores the target if it fails,
                // e.g. EINVAL for a directory moved into itself).
                let stashed = self.stash.fresh();
                sys::rename_at(
                    to.fd.as_fd(),
                    to_name,
                    self.stash.fd.as_fd(),
                    &stashed,
                    libc::RENAME_NOREPLACE,
                )?;
                if let Err(e) = sys::rename_at(
                    from.fd.as_fd(),
                    from_name,
                    to.fd.as_fd(),
                    to_name,
                    libc::RENAME_NOREPLACE,
                ) {
                    let _ = sys::rename_at(
                        self.stash.fd.as_fd(),
                        &stashed,
                        to.fd.as_fd(),
                        to_name,
                        libc::RENAME_NOREPLACE,
                    );
                    return Err(e);
                }
                Some(stashed)
            }
        };
        let mut needs = vec![(from.key, false)];
        if to.key != from.key {
            needs.push((to.key, false));
        }
        self.pending.push(Pending {
            change: Change::Renamed {
                from: from.clone(),
                from_name: from_name.to_owned(),
                to: to.clone(),
                to_name: to_name.to_owned(),
                replaced,
            },
            needs,
        });
        Ok(())
    }

    /// Directory `dir` was fsynced: commits every pending change that has
    /// now had all its directories fsynced after it (and, with it, every
    /// earlier pending change of one of the same names). (Passing the sync
    /// on to the backing directory is the caller's business.)
    pub fn dir_synced(&mut self, dir: &DirRef) -> io::Result<()> {
        let mut complete = vec![false; self.pending.len()];
        for (i, p) in self.pending.iter_mut().enumerate() {
            let mut all = true;
            for need in &mut p.needs {
                if need.0 == dir.key {
                    need.1 = true;
                }
                all &= need.1;
            }
            complete[i] = all && p.needs.iter().any(|n| n.0 == dir.key);
        }
        if !complete.contains(&true) {
            return Ok(());
        }
        // Newest first: a committing change drags the earlier changes of
        // its names along (transitively).
        let mut commit = vec![false; self.pending.len()];
        let mut names: HashSet<(Key, OsString)> = HashSet::new();
        for i in (0..self.pending.len()).rev() {
            let change = &self.pending[i].change;
            let overlaps = change
                .names()
                .iter()
                .any(|(k, n)| names.contains(&(*k, (*n).to_owned())));
            if complete[i] || overlaps {
                commit[i] = true;
                names.extend(change.names().into_iter().map(|(k, n)| (k, n.to_owned())));
            }
        }
        let mut kept = Vec::with_capacity(self.pending.len());
        let mut first_err = None;
        let mut discarded = false;
        for (p, commit) in std::mem::take(&mut self.pending).into_iter().zip(commit) {
            if !commit {
                kept.push(p);
            } else if let Some(stashed) = p.change.stashed() {
                discarded = true;
                if let Err(e) = self.stash.discard(stashed) {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.pending = kept;
        if discarded {
            // An inode whose last name went is gone for good: its unsynced
            // data needs no undo.
            self.files
                .retain(|_, f| f.file.metadata().map(|m| m.nlink() > 0).unwrap_or(true));
        }
        first_err.map_or(Ok(()), Err)
    }

    /// What is pending.
    pub fn status(&self) -> Summary {
        Summary {
            files: self.files.len() as u64,
            bytes: self.files.values().map(|f| f.bytes).sum(),
            entries: self.pending.len() as u64,
        }
    }

    /// The end of the mount, as a clean shutdown: everything pending is
    /// made durable and the stash directory is removed. Later calls find
    /// nothing to do.
    pub fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = self.checkpoint();
        self.closed = true;
        result?;
        std::fs::remove_dir(&self.stash.path)
    }

    /// Makes everything pending durable; returns what that was.
    pub fn checkpoint(&mut self) -> io::Result<Summary> {
        let summary = self.status();
        if self.closed {
            return Ok(summary);
        }
        let mut first_err = None;
        for f in std::mem::take(&mut self.files).into_values() {
            if self.sync_backing {
                if let Err(e) = sys::fsync(f.file.as_fd(), false) {
                    first_err.get_or_insert(e);
                }
            }
        }
        // The directories the changes touched are fsynced (not the whole
        // backing filesystem: syncfs could take seconds on a busy disk).
        let mut dirs: BTreeMap<Key, DirRef> = BTreeMap::new();
        for p in std::mem::take(&mut self.pending) {
            if let Some(stashed) = p.change.stashed() {
                if let Err(e) = self.stash.discard(stashed) {
                    first_err.get_or_insert(e);
                }
            }
            for dir in p.change.dirs() {
                dirs.entry(dir.key).or_insert_with(|| dir.clone());
            }
        }
        if self.sync_backing {
            for dir in dirs.values() {
                match sys::open_dir(dir.fd.as_fd()).and_then(|d| sys::fsync(d.as_fd(), false)) {
                    // Removed since (a durable rmdir): nothing to sync.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                    Ok(()) => {}
                }
            }
        }
        match first_err {
            None => Ok(summary),
            Some(e) => Err(e),
        }
    }

    /// Forgets everything that is not durable, as a power cut would; in
    /// torn mode (`Some(seed)`) each file with unsynced data keeps a random
    /// prefix of its unsynced operations, the last one cut short. Returns
    /// what was dropped. Every undo step is tried; the first failure (which
    /// would mean the model and the backing directory disagree) is returned
    /// after all of them.
    pub fn lose(&mut self, torn_seed: Option<u64>) -> io::Result<Summary> {
        if self.closed {
            return Ok(Summary::default());
        }
        let mut first_err = None;
        let entries = self.pending.len() as u64;
        for p in std::mem::take(&mut self.pending).into_iter().rev() {
            if let Err(e) = self.undo(p.change) {
                first_err.get_or_insert(e);
            }
        }
        let mut rng = torn_seed.map(Rng::new);
        let mut summary = Summary {
            files: 0,
            bytes: 0,
            entries,
        };
        for f in std::mem::take(&mut self.files).into_values() {
            summary.files += 1;
            match f.rollback(rng.as_mut()) {
                Ok(kept) => summary.bytes += f.bytes - kept,
                Err(e) => {
                    summary.bytes += f.bytes;
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Err(e) = self.stash.clear() {
            first_err.get_or_insert(e);
        }
        match first_err {
            None => Ok(summary),
            Some(e) => Err(io::Error::new(
                e.kind(),
                format!("an undo step failed (the rest were done): {e}"),
            )),
        }
    }

    fn undo(&mut self, change: Change) -> io::Result<()> {
        let stash = self.stash.fd.as_fd();
        match change {
            Change::Created { dir, name } => {
                // Into the stash, which is emptied at the end of `lose`.
                let trash = self.stash.fresh();
                sys::rename_at(dir.fd.as_fd(), &name, stash, &trash, libc::RENAME_NOREPLACE)
            }
            Change::Removed { dir, name, stashed } => sys::rename_at(
                stash,
                &stashed,
                dir.fd.as_fd(),
                &name,
                libc::RENAME_NOREPLACE,
            ),
            Change::Renamed {
                from,
                from_name,
                to,
                to_name,
                replaced,
            } => {
                sys::rename_at(
                    to.fd.as_fd(),
                    &to_name,
                    from.fd.as_fd(),
                    &from_name,
                    libc::RENAME_NOREPLACE,
                )?;
                match replaced {
                    Some(r) => {
                        sys::rename_at(stash, &r, to.fd.as_fd(), &to_name, libc::RENAME_NOREPLACE)
                    }
                    None => Ok(()),
                }
            }
        }
    }
}

fn dir_is_empty(dir: &DirRef, name: &OsStr) -> io::Result<bool> {
    let fd = sys::open_at(
        dir.fd.as_fd(),
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    Ok(sys::read_dir(fd)?.is_empty())
}

#[cfg(test)]
mod tests;
