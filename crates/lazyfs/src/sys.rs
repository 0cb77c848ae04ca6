//! Thin, safe wrappers over the Linux system calls the filesystem needs and
//! `std` does not offer: the `*at` family relative to `O_PATH` descriptors,
//! `renameat2`, `fallocate`, `umount2` and friends.
//!
//! Every inode the filesystem knows is held by an `O_PATH` descriptor, and
//! every operation on the backing directory is made relative to one, never
//! through a path string: so renames of parent directories (ours or undone
//! ones) can never make an operation act on the wrong file. This module is
//! the only place with `unsafe`; each call only passes descriptors we own
//! and buffers we allocated.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

/// An error of the last system call.
fn last() -> io::Error {
    io::Error::last_os_error()
}

/// `-1` means failure, as for most system calls.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(last())
    } else {
        Ok(())
    }
}

/// A C string of a name from the kernel or a caller.
pub fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `openat(dir, name, flags, mode)` (always with `O_CLOEXEC`).
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let name = cstr(name)?;
    // SAFETY: a valid descriptor and a NUL-terminated name; the returned
    // descriptor is new and owned by nobody else.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(last());
    }
    // SAFETY: `fd` was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `O_PATH` descriptor of `dir/name` itself (a symlink is not followed).
pub fn open_path_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    open_at(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
}

/// An `O_PATH` descriptor of a directory given by path.
pub fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(path)?;
    Ok(file.into())
}

/// Opens the inode behind an `O_PATH` descriptor for I/O, through
/// `/proc/self/fd` (the documented way to upgrade an `O_PATH` descriptor).
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<File> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let acc = flags & libc::O_ACCMODE;
    OpenOptions::new()
        .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
        .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
        .custom_flags(flags & !libc::O_ACCMODE & !libc::O_CREAT)
        .open(path)
}

/// A directory's own descriptor, readable (for `fsync` and listing).
pub fn open_dir(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    open_at(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
    let name = cstr(name)?;
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, `st` is writable.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `fstat(fd)` (works on `O_PATH` descriptors).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: as in `stat_at`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, writable `st`.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// The identity of an inode: (device, inode number).
pub fn key_of(st: &libc::stat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: valid descriptor and NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })
}

/// `mknodat(dir, name, mode, 0)` (regular files, FIFOs and sockets only).
pub fn mknod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: valid descriptor and NUL-terminated name.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) })
}

/// `renameat2(from, from_name, to, to_name, flags)`.
pub fn rename_at(
    from: BorrowedFd<'_>,
    from_name: &OsStr,
    to: BorrowedFd<'_>,
    to_name: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let from_name = cstr(from_name)?;
    let to_name = cstr(to_name)?;
    // SAFETY: valid descriptors and NUL-terminated names.
    check(unsafe {
        libc::renameat2(
            from.as_raw_fd(),
            from_name.as_ptr(),
            to.as_raw_fd(),
            to_name.as_ptr(),
            flags as libc::c_uint,
        )
    })
}

/// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH)`: chown the inode itself.
/// `u32::MAX` (-1) leaves the id unchanged.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and a static empty C string.
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// The `/proc/self/fd` path of a descriptor, for the calls that cannot take
/// an `O_PATH` descriptor directly (`chmod`, `utimensat`).
fn proc_path(fd: BorrowedFd<'_>) -> CString {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    // A formatted number never holds a NUL.
    CString::new(path).unwrap_or_default()
}

/// `chmod` of the inode behind a descriptor.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let path = proc_path(fd);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::chmod(path.as_ptr(), mode as libc::mode_t) })
}

/// A time for `utimens_fd`: `None` leaves it, `Some(None)` is "now".
pub type TimeArg = Option<Option<SystemTime>>;

fn timespec(t: TimeArg) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(None) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(Some(t)) => {
            let (sec, nsec) = match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    // Before 1970: negative seconds, positive nanoseconds.
                    let d = e.duration();
                    let mut sec = -(d.as_secs() as i64);
                    let mut nsec = d.subsec_nanos() as i64;
                    if nsec > 0 {
                        sec -= 1;
                        nsec = 1_000_000_000 - nsec;
                    }
                    (sec, nsec)
                }
            };
            libc::timespec {
                tv_sec: sec as libc::time_t,
                tv_nsec: nsec as _,
            }
        }
    }
}

/// `utimensat` of the inode behind a descriptor.
pub fn utimens_fd(fd: BorrowedFd<'_>, atime: TimeArg, mtime: TimeArg) -> io::Result<()> {
    let path = proc_path(fd);
    let times = [timespec(atime), timespec(mtime)];
    // SAFETY: NUL-terminated path and a two-element array as required.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) })
}

/// `readlinkat(fd, "")`: the target of the symlink an `O_PATH` fd holds.
pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: valid descriptor, static empty name, `buf` is writable for
    // its whole length.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(last());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// `fallocate(fd, mode, offset, len)`.
pub fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: valid descriptor; the kernel checks the ranges.
    check(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
}

/// `fsync` or `fdatasync`.
pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
}

/// `fstatvfs(fd)`.
pub fn statvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, writable struct.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    pub ino: u64,
    /// `d_type` (`DT_UNKNOWN` when the filesystem does not say).
    pub kind: u8,
}

/// Every entry of a directory but `.` and `..`; consumes the descriptor
/// (which must be readable: see `open_dir`).
pub fn read_dir(dir: OwnedFd) -> io::Result<Vec<DirEntry>> {
    use std::os::fd::IntoRawFd;
    let raw = dir.into_raw_fd();
    // SAFETY: `raw` is a readable directory descriptor we own; on success
    // the DIR stream owns it from now on (closed by closedir).
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let err = last();
        // SAFETY: fdopendir failed, so we still own `raw`.
        unsafe { libc::close(raw) };
        return Err(err);
    }
    let mut out = Vec::new();
    let result = loop {
        // readdir reports errors only through errno.
        // SAFETY: errno is thread-local.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is a live DIR stream.
        let ent = unsafe { libc::readdir64(stream) };
        if ent.is_null() {
            // SAFETY: errno is thread-local.
            let errno = unsafe { *libc::__errno_location() };
            break if errno == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(errno))
            };
        }
        // SAFETY: a non-null entry is valid until the next readdir call,
        // and d_name is NUL-terminated.
        let (name, ino, kind) = unsafe {
            let ent = &*ent;
            let name = CStr::from_ptr(ent.d_name.as_ptr()).to_bytes().to_vec();
            (name, ent.d_ino, ent.d_type)
        };
        if name == b"." || name == b".." {
            continue;
        }
        out.push(DirEntry {
            name: OsString::from_vec(name),
            ino,
            kind,
        });
    };
    // SAFETY: `stream` is live and closed exactly once.
    unsafe { libc::closedir(stream) };
    result.map(|()| out)
}

/// `umount2(path, flags)` (`libc::MNT_DETACH` for a lazy unmount).
pub fn umount(path: &Path, flags: i32) -> io::Result<()> {
    let path = cstr(path.as_os_str())?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::umount2(path.as_ptr(), flags) })
}

/// Raises the soft limit of open files to the hard limit: the filesystem
/// holds one descriptor per inode the kernel remembers.
pub fn raise_nofile_limit() {
    // SAFETY: an all-zero rlimit is valid; get/setrlimit only read/write it.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The errno of an `io::Error`, `EIO` when it has none.
pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// An `io::Error` of an errno.
pub fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}
