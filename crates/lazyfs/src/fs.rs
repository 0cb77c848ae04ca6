//! The FUSE side: a pass-through of the mount onto the backing directory,
//! with every change routed through the [`Journal`].
//!
//! **Inodes.** Each inode the kernel knows (it looked it up and has not
//! forgotten it) is held by an `O_PATH` descriptor of the backing inode, and
//! every operation is made relative to those descriptors (`openat`,
//! `renameat2`, ... with the parent's descriptor), never through path
//! strings: renames of any directory, undone or not, cannot send an operation
//! to the wrong place, and an unlinked but open file still works. Node ids
//! are our own (the root is 1), one per backing (device, inode) for the life
//! of the mount, and they are what `stat` shows as `st_ino` (`readdir` shows
//! the same numbers).
//!
//! **Caching.** Entry and attribute TTLs are zero and every file is opened
//! with `FOPEN_DIRECT_IO` (and the kernel's writeback cache is not asked
//! for): the kernel keeps no file data and revalidates every name and size,
//! so after a rollback of the backing directory it can serve nothing stale.
//! A consequence: shared writable `mmap` of files on the mount fails
//! (`ENODEV`); private and read-only mappings work.
//!
//! **Ownership.** The daemon runs as root and creates backing files as root;
//! new files, directories and nodes are then given the caller's uid and gid
//! (or the parent's gid under a set-group-id directory), and their exact
//! mode, so the kernel's `default_permissions` checks see what a local
//! filesystem would have.
//!
//! One global lock serializes all operations (the control commands take it
//! too): the filesystem is for tests, where a clear model beats throughput.
//! Only the syncs of backing files run outside it (the model counts the data
//! as durable first, which no one can observe before the reply), on one of
//! a few FUSE threads, so that one slow sync does not stall every request.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::journal::{DirRef, Journal, Key, STASH_DIR};
use crate::sys;

/// Nothing is cached by the kernel (see the module docs).
const TTL: Duration = Duration::ZERO;

const ROOT: u64 = 1;

/// An inode the kernel knows.
#[derive(Debug)]
struct Node {
    key: Key,
    fd: Arc<OwnedFd>,
    lookups: u64,
    dir: bool,
    /// The directory it was last found in (for `..` in listings).
    parent: u64,
}

/// An open file.
#[derive(Debug)]
struct Handle {
    key: Key,
    /// The inode's `O_PATH` descriptor (to reopen it read-write).
    path: Arc<OwnedFd>,
    /// The backing file: read-only, or read-write when the caller may write.
    /// Shared, so that a sync of the backing file can run without the lock.
    file: Arc<File>,
    rdwr: bool,
    append: bool,
    /// `O_SYNC` or `O_DSYNC`: every write is durable when it returns.
    sync: bool,
}

/// An open directory: its listing, taken when read from offset 0.
#[derive(Debug, Default)]
struct DirHandle {
    entries: Vec<(OsString, u64, FileType)>,
}

/// Everything the filesystem and the controller share (behind one lock).
#[derive(Debug)]
pub(crate) struct State {
    nodes: HashMap<u64, Node>,
    /// Backing identity -> node id, kept for the life of the mount.
    ids: HashMap<Key, u64>,
    next_id: u64,
    files: HashMap<u64, Handle>,
    dirs: HashMap<u64, DirHandle>,
    next_fh: u64,
    pub(crate) journal: Journal,
}

impl State {
    pub(crate) fn new(backing: &Path, sync_backing: bool) -> io::Result<State> {
        let fd = sys::open_path(backing).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open {}: {e}", backing.display()))
        })?;
        let key = sys::key_of(&sys::fstat(fd.as_fd())?);
        let journal = Journal::new(backing, sync_backing)?;
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                key,
                fd: Arc::new(fd),
                lookups: 1,
                dir: true,
                parent: ROOT,
            },
        );
        Ok(State {
            nodes,
            ids: HashMap::from([(key, ROOT)]),
            next_id: ROOT + 1,
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 1,
            journal,
        })
    }

    fn node(&self, ino: u64) -> io::Result<&Node> {
        self.nodes.get(&ino).ok_or_else(|| sys::err(libc::ESTALE))
    }

    fn dir_ref(&self, ino: u64) -> io::Result<DirRef> {
        let node = self.node(ino)?;
        if !node.dir {
            return Err(sys::err(libc::ENOTDIR));
        }
        Ok(DirRef {
            key: node.key,
            fd: node.fd.clone(),
        })
    }

    fn handle(&self, fh: u64) -> io::Result<&Handle> {
        self.files.get(&fh).ok_or_else(|| sys::err(libc::EBADF))
    }

    fn id_for(&mut self, key: Key) -> u64 {
        let next = &mut self.next_id;
        *self.ids.entry(key).or_insert_with(|| {
            let id = *next;
            *next += 1;
            id
        })
    }

    /// Counts one kernel lookup of `dir/name` (whose stat is `st`), opening
    /// an `O_PATH` descriptor if the inode is new to the kernel.
    fn remember(
        &mut self,
        dir: &DirRef,
        parent: u64,
        name: &OsStr,
        st: &libc::stat,
    ) -> io::Result<u64> {
        let id = self.id_for(sys::key_of(st));
        if let Some(node) = self.nodes.get_mut(&id) {
            node.lookups += 1;
            node.parent = parent;
            return Ok(id);
        }
        let fd = sys::open_path_at(dir.fd.as_fd(), name)?;
        let st = sys::fstat(fd.as_fd())?;
        Ok(self.remember_fd(fd, &st, parent))
    }

    /// As `remember`, with a descriptor already open.
    fn remember_fd(&mut self, fd: OwnedFd, st: &libc::stat, parent: u64) -> u64 {
        let key = sys::key_of(st);
        let id = self.id_for(key);
        let node = self.nodes.entry(id).or_insert_with(|| Node {
            key,
            fd: Arc::new(fd),
            lookups: 0,
            dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR,
            parent,
        });
        node.lookups += 1;
        node.parent = parent;
        id
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> io::Result<FileAttr> {
        if hidden(parent, name) {
            return Err(sys::err(libc::ENOENT));
        }
        let dir = self.dir_ref(parent)?;
        let st = sys::stat_at(dir.fd.as_fd(), name)?;
        let id = self.remember(&dir, parent, name, &st)?;
        Ok(attr(id, &st))
    }

    fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
            if node.lookups == 0 {
                self.nodes.remove(&ino);
            }
        }
    }

    fn getattr(&self, ino: u64, fh: Option<u64>) -> io::Result<FileAttr> {
        let st = match fh.and_then(|fh| self.files.get(&fh)) {
            Some(h) => sys::fstat(h.file.as_fd())?,
            None => sys::fstat(self.node(ino)?.fd.as_fd())?,
        };
        let mut a = attr(ino, &st);
        if ino == ROOT {
            // The hidden stash is a subdirectory the mount does not show.
            a.nlink = a.nlink.saturating_sub(1).max(2);
        }
        Ok(a)
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<u64>,
    ) -> io::Result<FileAttr> {
        let node = self.node(ino)?;
        let (key, fd, dir) = (node.key, node.fd.clone(), node.dir);
        if let Some(size) = size {
            if dir {
                return Err(sys::err(libc::EISDIR));
            }
            let State { files, journal, .. } = self;
            match fh.and_then(|fh| files.get(&fh)) {
                Some(h) => journal.set_len(key, || open_rw(h), size)?,
                None => journal.set_len(key, || sys::reopen(fd.as_fd(), libc::O_RDWR), size)?,
            }
        }
        if let Some(mode) = mode {
            sys::chmod_fd(fd.as_fd(), mode & 0o7777)?;
        }
        if uid.is_some() || gid.is_some() {
            sys::chown_fd(fd.as_fd(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))?;
        }
        if atime.is_some() || mtime.is_some() {
            sys::utimens_fd(fd.as_fd(), time_arg(atime), time_arg(mtime))?;
        }
        self.getattr(ino, fh)
    }

    fn open(&mut self, ino: u64, flags: i32) -> io::Result<u64> {
        let node = self.node(ino)?;
        if node.dir {
            return Err(sys::err(libc::EISDIR));
        }
        let rdwr = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let file = sys::reopen(
            node.fd.as_fd(),
            if rdwr { libc::O_RDWR } else { libc::O_RDONLY },
        )?;
        let handle = Handle {
            key: node.key,
            path: node.fd.clone(),
            file: Arc::new(file),
            rdwr,
            append: flags & libc::O_APPEND != 0,
            sync: flags & libc::O_DSYNC != 0,
        };
        if rdwr && flags & libc::O_TRUNC != 0 {
            self.journal.set_len(handle.key, || open_rw(&handle), 0)?;
        }
        Ok(self.add_handle(handle))
    }

    fn add_handle(&mut self, handle: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.files.insert(fh, handle);
        fh
    }

    /// The uid and gid a new entry of `dir` gets for caller `req`.
    fn owner(dir: &DirRef, req: &Request) -> io::Result<(u32, u32, bool)> {
        let st = sys::fstat(dir.fd.as_fd())?;
        let setgid = st.st_mode & libc::S_ISGID != 0;
        let gid = if setgid { st.st_gid } else { req.gid() };
        Ok((req.uid(), gid, setgid))
    }

    /// Gives a new inode its exact mode and its owner; returns its stat.
    fn settle(fd: &OwnedFd, mode: u32, uid: u32, gid: u32) -> io::Result<libc::stat> {
        let mut st = sys::fstat(fd.as_fd())?;
        if st.st_mode & 0o7777 != mode & 0o7777 && st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            sys::chmod_fd(fd.as_fd(), mode & 0o7777)?;
        }
        if st.st_uid != uid || st.st_gid != gid {
            sys::chown_fd(fd.as_fd(), uid, gid)?;
        }
        st = sys::fstat(fd.as_fd())?;
        Ok(st)
    }

    fn create(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> io::Result<(FileAttr, u64)> {
        if hidden(parent, name) {
            return Err(sys::err(libc::EACCES));
        }
        let dir = self.dir_ref(parent)?;
        let (uid, gid, _) = Self::owner(&dir, req)?;
        let fd = sys::open_at(
            dir.fd.as_fd(),
            name,
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            mode & 0o7777,
        )?;
        self.journal.created(&dir, name);
        let file = File::from(fd);
        let st = sys::fstat(file.as_fd())?;
        if st.st_mode & 0o7777 != mode & 0o7777 {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
        }
        if st.st_uid != uid || st.st_gid != gid {
            sys::chown_fd(file.as_fd(), uid, gid)?;
        }
        let path_fd = sys::open_path_at(dir.fd.as_fd(), name)?;
        let st = sys::fstat(path_fd.as_fd())?;
        let id = self.remember_fd(path_fd, &st, parent);
        let path = self.node(id)?.fd.clone();
        let fh = self.add_handle(Handle {
            key: sys::key_of(&st),
            path,
            file: Arc::new(file),
            rdwr: true,
            append: flags & libc::O_APPEND != 0,
            sync: flags & libc::O_DSYNC != 0,
        });
        Ok((attr(id, &st), fh))
    }

    fn mkdir(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> io::Result<FileAttr> {
        if hidden(parent, name) {
            return Err(sys::err(libc::EACCES));
        }
        let dir = self.dir_ref(parent)?;
        let (uid, gid, setgid) = Self::owner(&dir, req)?;
        sys::mkdir_at(dir.fd.as_fd(), name, mode & 0o7777)?;
        self.journal.created(&dir, name);
        let mode = if setgid { mode | libc::S_ISGID } else { mode };
        self.settle_new(&dir, parent, name, mode, uid, gid)
    }

    fn mknod(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> io::Result<FileAttr> {
        if hidden(parent, name) {
            return Err(sys::err(libc::EACCES));
        }
        match mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => {}
            _ => return Err(sys::err(libc::EPERM)),
        }
        let dir = self.dir_ref(parent)?;
        let (uid, gid, _) = Self::owner(&dir, req)?;
        sys::mknod_at(dir.fd.as_fd(), name, mode)?;
        self.journal.created(&dir, name);
        self.settle_new(&dir, parent, name, mode, uid, gid)
    }

    fn settle_new(
        &mut self,
        dir: &DirRef,
        parent: u64,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<FileAttr> {
        let fd = sys::open_path_at(dir.fd.as_fd(), name)?;
        let st = Self::settle(&fd, mode, uid, gid)?;
        let id = self.remember_fd(fd, &st, parent);
        Ok(attr(id, &st))
    }

    fn unlink(&mut self, parent: u64, name: &OsStr, is_dir: bool) -> io::Result<()> {
        if hidden(parent, name) {
            return Err(sys::err(libc::ENOENT));
        }
        let dir = self.dir_ref(parent)?;
        if is_dir {
            self.journal.rmdir(&dir, name)
        } else {
            self.journal.unlink(&dir, name)
        }
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> io::Result<()> {
        let noreplace = if flags.is_empty() {
            false
        } else if flags == RenameFlags::RENAME_NOREPLACE {
            true
        } else {
            return Err(sys::err(libc::EINVAL));
        };
        if hidden(parent, name) {
            return Err(sys::err(libc::ENOENT));
        }
        if hidden(newparent, newname) {
            return Err(sys::err(libc::EACCES));
        }
        let from = self.dir_ref(parent)?;
        let to = self.dir_ref(newparent)?;
        self.journal.rename(&from, name, &to, newname, noreplace)
    }

    fn read(&self, fh: u64, off: u64, size: u32) -> io::Result<Vec<u8>> {
        let h = self.handle(fh)?;
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match h.file.read_at(&mut buf[got..], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if got == 0 => return Err(e),
                Err(_) => break,
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// Writes; returns the bytes written and, for an `O_SYNC`/`O_DSYNC`
    /// handle with backing syncs on, the file to `fdatasync` (without the
    /// lock: the model already counts the write as durable).
    fn write(&mut self, fh: u64, off: u64, data: &[u8]) -> io::Result<(usize, Option<Arc<File>>)> {
        let State { files, journal, .. } = self;
        let h = files.get(&fh).ok_or_else(|| sys::err(libc::EBADF))?;
        // O_APPEND: at the real end of the backing file, whatever size the
        // kernel believes (it may be stale after a rollback).
        let off = if h.append {
            h.file.metadata()?.len()
        } else {
            off
        };
        let n = journal.write(h.key, || open_rw(h), off, data)?;
        let mut to_sync = None;
        if h.sync {
            journal.file_synced(h.key);
            if journal.sync_backing() {
                to_sync = Some(h.file.clone());
            }
        }
        Ok((n, to_sync))
    }

    /// The file's content is durable from now on; returns the backing file
    /// to sync when backing syncs are on (the caller does it without the
    /// lock, so one slow sync does not stall every other request).
    fn fsync(&mut self, fh: u64) -> io::Result<Option<Arc<File>>> {
        let h = self.handle(fh)?;
        let (key, file) = (h.key, h.file.clone());
        self.journal.file_synced(key);
        Ok(self.journal.sync_backing().then_some(file))
    }

    fn fallocate(&mut self, fh: u64, off: u64, len: u64, mode: i32) -> io::Result<()> {
        let State { files, journal, .. } = self;
        let h = files.get(&fh).ok_or_else(|| sys::err(libc::EBADF))?;
        if !h.rdwr {
            return Err(sys::err(libc::EBADF));
        }
        journal.allocate(h.key, || open_rw(h), mode, off, len)
    }

    fn opendir(&mut self, ino: u64) -> io::Result<u64> {
        self.dir_ref(ino)?;
        let fh = self.next_fh;
        self.next_fh += 1;
        self.dirs.insert(fh, DirHandle::default());
        Ok(fh)
    }

    /// The listing of directory `ino` (with `.` and `..`).
    fn list(&mut self, ino: u64) -> io::Result<Vec<(OsString, u64, FileType)>> {
        let node = self.node(ino)?;
        let (fd, parent, dev) = (node.fd.clone(), node.parent, node.key.0);
        let mut out = vec![
            (OsString::from("."), ino, FileType::Directory),
            (OsString::from(".."), parent, FileType::Directory),
        ];
        for e in sys::read_dir(sys::open_dir(fd.as_fd())?)? {
            if hidden(ino, &e.name) {
                continue;
            }
            let kind = match dtype_kind(e.kind) {
                Some(k) => k,
                None => match sys::stat_at(fd.as_fd(), &e.name) {
                    Ok(st) => mode_kind(st.st_mode),
                    Err(_) => continue,
                },
            };
            let id = self.id_for((dev, e.ino));
            out.push((e.name, id, kind));
        }
        Ok(out)
    }

    fn readdir(&mut self, ino: u64, fh: u64, offset: u64, mut reply: ReplyDirectory) {
        // Listed at offset 0 (a rewind lists again), or at the first read
        // of a handle that seeked first.
        let unlisted = self.dirs.get(&fh).is_some_and(|d| d.entries.is_empty());
        if offset == 0 || unlisted {
            match self.list(ino) {
                Ok(entries) => match self.dirs.get_mut(&fh) {
                    Some(d) => d.entries = entries,
                    None => return reply.error(Errno::EBADF),
                },
                Err(e) => return reply.error(errno(e)),
            }
        }
        let Some(d) = self.dirs.get(&fh) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (name, id, kind)) in d.entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*id), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    /// As `fsync`, for a directory.
    fn fsyncdir(&mut self, ino: u64) -> io::Result<Option<DirRef>> {
        let dir = self.dir_ref(ino)?;
        self.journal.dir_synced(&dir)?;
        Ok(self.journal.sync_backing().then_some(dir))
    }

    fn statfs(&self) -> io::Result<libc::statvfs> {
        sys::statvfs(self.node(ROOT)?.fd.as_fd())
    }

    fn readlink(&self, ino: u64) -> io::Result<Vec<u8>> {
        sys::readlink_fd(self.node(ino)?.fd.as_fd())
    }
}

/// A read-write descriptor of a file for the journal: a clone of the
/// handle's when that is read-write, else a new one.
fn open_rw(h: &Handle) -> io::Result<File> {
    if h.rdwr {
        h.file.as_ref().try_clone()
    } else {
        sys::reopen(h.path.as_fd(), libc::O_RDWR)
    }
}

/// The stash is not part of the mount.
fn hidden(parent: u64, name: &OsStr) -> bool {
    parent == ROOT && name == STASH_DIR
}

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(sys::errno_of(&e))
}

fn time_arg(t: Option<TimeOrNow>) -> sys::TimeArg {
    t.map(|t| match t {
        TimeOrNow::SpecificTime(t) => Some(t),
        TimeOrNow::Now => None,
    })
}

fn system_time(sec: i64, nsec: i64) -> SystemTime {
    let nsec = Duration::from_nanos(nsec.clamp(0, 999_999_999) as u64);
    if sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(sec as u64) + nsec
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + nsec
    }
}

fn mode_kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn dtype_kind(d_type: u8) -> Option<FileType> {
    Some(match d_type {
        libc::DT_DIR => FileType::Directory,
        libc::DT_REG => FileType::RegularFile,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        _ => return None,
    })
}

fn attr(ino: u64, st: &libc::stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: system_time(st.st_atime, st.st_atime_nsec),
        mtime: system_time(st.st_mtime, st.st_mtime_nsec),
        ctime: system_time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: mode_kind(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// The FUSE filesystem: every request locks the shared [`State`].
#[derive(Debug)]
pub(crate) struct LazyFs {
    state: Arc<Mutex<State>>,
}

impl LazyFs {
    pub(crate) fn new(state: Arc<Mutex<State>>) -> LazyFs {
        LazyFs { state }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn reply_empty(r: io::Result<()>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_entry(r: io::Result<FileAttr>, reply: ReplyEntry) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for LazyFs {
    fn destroy(&mut self) {
        // Unmounted: as after a clean shutdown, everything is durable.
        if let Err(e) = self.lock().journal.close() {
            eprintln!("leasehold-lazyfs: cleaning up the stash at unmount: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(self.lock().lookup(parent.0, name), reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.lock().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().getattr(ino.0, fh.map(|f| f.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self
            .lock()
            .setattr(ino.0, mode, uid, gid, size, atime, mtime, fh.map(|f| f.0));
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.lock().readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(self.lock().mknod(req, parent.0, name, mode), reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(self.lock().mkdir(req, parent.0, name, mode), reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.lock().unlink(parent.0, name, false), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.lock().unlink(parent.0, name, true), reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        // Not modelled: symlink(2) documents EPERM for a filesystem
        // without symbolic links.
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self
            .lock()
            .rename(parent.0, name, newparent.0, newname, flags);
        reply_empty(r, reply);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // Not modelled: link(2) documents EPERM for a filesystem without
        // hard links.
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().open(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.lock().read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The lock is released at the end of this statement.
        let r = self.lock().write(fh.0, offset, data);
        let r = r.and_then(|(n, to_sync)| {
            if let Some(file) = to_sync {
                sys::fsync(file.as_fd(), true)?;
            }
            Ok(n)
        });
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().files.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.lock().fsync(fh.0);
        let r = r.and_then(|to_sync| match to_sync {
            Some(file) => sys::fsync(file.as_fd(), datasync),
            None => Ok(()),
        });
        reply_empty(r, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.lock().readdir(ino.0, fh.0, offset, reply);
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.lock().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.lock().fsyncdir(ino.0);
        let r = r.and_then(|to_sync| match to_sync {
            Some(dir) => sys::fsync(sys::open_dir(dir.fd.as_fd())?.as_fd(), false),
            None => Ok(()),
        });
        reply_empty(r, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.lock().statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    // Extended attributes are not modelled. ENOSYS makes the kernel stop
    // asking (it then answers EOPNOTSUPP itself), which also spares a round
    // trip per write for the security.capability check.
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions); this
        // only answers whether the inode exists.
        reply_empty(self.lock().node(ino.0).map(|_| ()), reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.lock().create(req, parent.0, name, mode, flags) {
            Ok((a, fh)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.lock().fallocate(fh.0, offset, length, mode), reply);
    }
}
