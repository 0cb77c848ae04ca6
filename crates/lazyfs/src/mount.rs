//! Mounting and unmounting: the FUSE session on a background thread, and the
//! [`Controller`] that forgets (or keeps) what is not durable.
//!
//! fuser (without its `libfuse` feature) mounts with `mount(2)` itself when
//! the process may (root, or `CAP_SYS_ADMIN`), and only otherwise runs the
//! `fusermount3` helper; unmounting is `umount(2)` for root. So as root no
//! helper binary is needed. [`Mounted::mount`] returns once the kernel has
//! completed the FUSE handshake, when the mount is usable.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};

use crate::fs::{LazyFs, State};
use crate::journal::Summary;
use crate::sys;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Pass every sync honoured by the model on to the backing filesystem
    /// (`fsync`/`fdatasync` of the file, `fsync` of the directory; on
    /// `checkpoint`, of every pending file and touched directory). Default
    /// true; turn it off for speed when the backing directory's own crash
    /// safety does not matter (the model is the same either way).
    pub sync_backing: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { sync_backing: true }
    }
}

/// Forgets or keeps what is not durable on a mounted filesystem. Cheap to
/// clone; usable from any thread while the filesystem is mounted.
#[derive(Debug, Clone)]
pub struct Controller {
    state: Arc<Mutex<State>>,
}

impl Controller {
    /// A controller of `state` (the mount shares it with the filesystem).
    pub(crate) fn new(state: Arc<Mutex<State>>) -> Controller {
        Controller { state }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is pending (not durable yet).
    pub fn status(&self) -> Summary {
        self.lock().journal.status()
    }

    /// Forgets everything not durable, as a power cut; returns what was
    /// dropped. Best run while nothing uses the mount (the kernel caches
    /// nothing, but a process in the middle of a write would see the file
    /// change under it, as it never would after a real power cut).
    pub fn lose_unsynced(&self) -> io::Result<Summary> {
        self.lock().journal.lose(None)
    }

    /// As [`lose_unsynced`](Self::lose_unsynced), but each file with
    /// unsynced data keeps a prefix of its unsynced writes, the last one cut
    /// short (a power cut in the middle of writing back). `seed` makes the
    /// choice replayable.
    pub fn lose_unsynced_torn(&self, seed: u64) -> io::Result<Summary> {
        self.lock().journal.lose(Some(seed))
    }

    /// Makes everything pending durable; returns what that was.
    pub fn checkpoint(&self) -> io::Result<Summary> {
        self.lock().journal.checkpoint()
    }
}

/// A mounted lazy filesystem. Dropping it unmounts (lazily, if the mount
/// is busy).
#[derive(Debug)]
pub struct Mounted {
    controller: Controller,
    backing: PathBuf,
    mountpoint: PathBuf,
    unmounter: Option<SessionUnmounter>,
    thread: Option<JoinHandle<io::Result<()>>>,
    finished: Arc<AtomicBool>,
}

impl Mounted {
    /// Mounts `backing` at `mountpoint` (both existing directories, neither
    /// inside the other) with the default options.
    pub fn mount(backing: impl AsRef<Path>, mountpoint: impl AsRef<Path>) -> io::Result<Mounted> {
        Self::mount_with(backing, mountpoint, &MountOptions::default())
    }

    /// Mounts `backing` at `mountpoint` with `options`.
    pub fn mount_with(
        backing: impl AsRef<Path>,
        mountpoint: impl AsRef<Path>,
        options: &MountOptions,
    ) -> io::Result<Mounted> {
        let backing = canonical_dir(backing.as_ref(), "backing directory")?;
        let mountpoint = canonical_dir(mountpoint.as_ref(), "mountpoint")?;
        if backing.starts_with(&mountpoint) || mountpoint.starts_with(&backing) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the backing directory {} and the mountpoint {} must not contain each other",
                    backing.display(),
                    mountpoint.display()
                ),
            ));
        }
        if is_mount_point(&mountpoint) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "mountpoint {} is busy: something is mounted there already \
                     (a stale lazyfs? `leasehold-lazyfs unmount {}`)",
                    mountpoint.display(),
                    mountpoint.display()
                ),
            ));
        }
        if !Path::new("/dev/fuse").exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "/dev/fuse is missing (load the fuse module; in a container, \
                 pass --device /dev/fuse and --cap-add SYS_ADMIN)",
            ));
        }
        sys::raise_nofile_limit();
        let state = Arc::new(Mutex::new(State::new(&backing, options.sync_backing)?));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("leasehold-lazyfs".into()),
            MountOption::DefaultPermissions,
            MountOption::RW,
        ];
        // allow_other: processes of any uid (e.g. in containers) may use it.
        config.acl = SessionACL::All;
        // A few threads, so that requests go on while one syncs a backing
        // file (everything else is serialized by the state lock anyway).
        config.n_threads = Some(4);
        let mut session = match Session::new(LazyFs::new(state.clone()), &mountpoint, &config) {
            Ok(session) => session,
            Err(e) => {
                let _ = state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .journal
                    .close();
                let hint = match e.raw_os_error() {
                    Some(libc::EACCES) | Some(libc::EPERM) => {
                        " (mounting needs root, or CAP_SYS_ADMIN and access to /dev/fuse)"
                    }
                    _ => "",
                };
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot mount {} at {}: {e}{hint}",
                        backing.display(),
                        mountpoint.display()
                    ),
                ));
            }
        };
        let unmounter = session.unmount_callable();
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let thread = thread::Builder::new()
            .name("lazyfs-fuse".into())
            .spawn(move || {
                let r = session.run();
                done.store(true, Ordering::SeqCst);
                r
            })?;
        Ok(Mounted {
            controller: Controller::new(state),
            backing,
            mountpoint,
            unmounter: Some(unmounter),
            thread: Some(thread),
            finished,
        })
    }

    /// A handle on the journal, for other threads (e.g. the control socket).
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    /// The canonical backing directory.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// The canonical mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the FUSE session has ended (e.g. unmounted from outside).
    pub fn session_ended(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// See [`Controller::status`].
    pub fn status(&self) -> Summary {
        self.controller.status()
    }

    /// See [`Controller::lose_unsynced`].
    pub fn lose_unsynced(&self) -> io::Result<Summary> {
        self.controller.lose_unsynced()
    }

    /// See [`Controller::lose_unsynced_torn`].
    pub fn lose_unsynced_torn(&self, seed: u64) -> io::Result<Summary> {
        self.controller.lose_unsynced_torn(seed)
    }

    /// See [`Controller::checkpoint`].
    pub fn checkpoint(&self) -> io::Result<Summary> {
        self.controller.checkpoint()
    }

    /// Unmounts now (lazily if busy), reporting errors `Drop` would ignore.
    pub fn unmount(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        let Some(mut unmounter) = self.unmounter.take() else {
            return Ok(());
        };
        match unmounter.unmount() {
            Ok(()) => {
                // The kernel ends the session at once; don't hang forever
                // if it does not.
                if let Some(thread) = self.thread.take() {
                    let start = Instant::now();
                    while !thread.is_finished() && start.elapsed() < Duration::from_secs(5) {
                        thread::sleep(Duration::from_millis(5));
                    }
                    if thread.is_finished() {
                        let _ = thread.join();
                    }
                }
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // Busy (open files, a cwd inside): detach it; the session
                // ends when the last user lets go.
                match sys::umount(&self.mountpoint, libc::MNT_DETACH) {
                    Err(e) if e.raw_os_error() != Some(libc::EINVAL) => Err(e),
                    _ => Ok(()),
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!(
                "leasehold-lazyfs: cannot unmount {}: {e}",
                self.mountpoint.display()
            );
        }
    }
}

fn canonical_dir(path: &Path, what: &str) -> io::Result<PathBuf> {
    let canon = fs::canonicalize(path).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::ENOTCONN) {
            format!(
                " (a dead FUSE mount: run `leasehold-lazyfs unmount {}`)",
                path.display()
            )
        } else {
            String::new()
        };
        io::Error::new(e.kind(), format!("{what} {}: {e}{hint}", path.display()))
    })?;
    if !canon.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {} is not a directory", path.display()),
        ));
    }
    Ok(canon)
}

/// Whether `path` (canonical) is a mount point, per `/proc/self/mountinfo`.
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mp| Path::new(&unescape_mountinfo(mp)) == path)
}

/// Undoes the octal escapes of `/proc/self/mountinfo` (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts whatever is mounted at `mountpoint` (e.g. the dead mount
/// a killed server left: "Transport endpoint is not connected"). Returns
/// whether something was mounted there. Tries `umount2(MNT_DETACH)`, then
/// `fusermount3 -u -z` / `fusermount -u -z` when not permitted.
pub fn unmount_stale(mountpoint: &Path) -> io::Result<bool> {
    match sys::umount(mountpoint, libc::MNT_DETACH) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            for helper in ["fusermount3", "fusermount"] {
                if let Ok(out) = Command::new(helper)
                    .args(["-u", "-z", "--"])
                    .arg(mountpoint)
                    .output()
                {
                    if out.status.success() {
                        return Ok(true);
                    }
                    return Err(io::Error::other(format!(
                        "{helper} -u -z {}: {}",
                        mountpoint.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
            }
            Err(io::Error::new(
                e.kind(),
                format!("cannot unmount {}: {e}", mountpoint.display()),
            ))
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot unmount {}: {e}", mountpoint.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\"), r"/end\");
    }
}
