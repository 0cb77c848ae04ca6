//! A node's disk that can lose power: its data directory is a mount of the
//! lazy filesystem (`leasehold-lazyfs`, in `crates/lazyfs`), which passes
//! everything through to a backing directory but can forget, on command,
//! every write that was not synced.
//!
//! Why a separate process and not a library call: the filesystem is test
//! tooling and lives in its own package, so neither the server nor this
//! crate links FUSE code; the chaos suite only starts the binary and talks
//! to its control socket (one command per line, one `ok ...` or `err ...`
//! line back).
//!
//! Why not `kill -9` alone: a killed process's writes are already in the
//! kernel's page cache, which survives the process, so a kill cannot show
//! whether a store syncs what it acknowledges. A power cut empties that
//! cache; `lose-unsynced` is that cut, file by file and directory entry by
//! directory entry.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary's name (built by `cargo build -p leasehold-lazyfs`, and by
/// the README's `cargo test`, which tests every workspace member).
pub const LAZYFS_BIN: &str = "leasehold-lazyfs";

/// How long a mount may take to become usable.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a control command may take (the filesystem answers well under a
/// second for our sizes; this only bounds a hung one).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(20);

/// `leasehold-lazyfs` next to `bin` (the directory cargo builds every
/// workspace binary into), if it exists.
pub fn find_beside(bin: &Path) -> Option<PathBuf> {
    let p = bin.parent()?.join(LAZYFS_BIN);
    p.exists().then_some(p)
}

/// Why a lazy filesystem cannot be mounted on this machine, if it cannot.
pub fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist (the kernel's FUSE module is not loaded, or the container was started without the device)".into());
    }
    None
}

/// The control socket of a lazy filesystem (mounted by us, or by
/// `cluster/chaos.sh` for the docker nodes).
#[derive(Debug, Clone)]
pub struct LazyControl {
    /// The mount point, for messages.
    pub mountpoint: PathBuf,
    /// The socket.
    pub socket: PathBuf,
}

impl LazyControl {
    /// Sends one control command; `Ok(details)` for `ok details`.
    pub fn command(&self, command: &str) -> Result<String, String> {
        let fail = |e: std::io::Error| {
            format!(
                "lazy filesystem at {} ({}): {command}: {e}",
                self.mountpoint.display(),
                self.socket.display()
            )
        };
        let mut s = UnixStream::connect(&self.socket).map_err(fail)?;
        s.set_read_timeout(Some(CONTROL_TIMEOUT)).map_err(fail)?;
        s.write_all(format!("{command}\n").as_bytes())
            .map_err(fail)?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).map_err(fail)?;
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("ok") {
            Ok(rest.trim().to_string())
        } else {
            Err(format!(
                "lazy filesystem at {}: {command}: {line}",
                self.mountpoint.display()
            ))
        }
    }

    /// Drops every unsynced write (see `Backend::lose_unsynced`).
    pub fn lose_unsynced(&self, torn: Option<u64>) -> Result<String, String> {
        match torn {
            Some(seed) => self.command(&format!("lose-unsynced torn {seed}")),
            None => self.command("lose-unsynced"),
        }
    }

    /// Makes everything written so far durable.
    pub fn checkpoint(&self) -> Result<String, String> {
        self.command("checkpoint")
    }

    /// Empties the mounted directory and makes that durable: a wiped disk
    /// stays wiped after a later power loss. The node using it must be
    /// stopped.
    pub fn wipe(&self) -> Result<(), String> {
        let dir = &self.mountpoint;
        let list = |dir: &Path| {
            std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))
        };
        for entry in list(dir)? {
            let path = entry
                .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
                .path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| format!("cannot delete {}: {e}", path.display()))?;
        }
        self.checkpoint()?;
        let left = list(dir)?.count();
        if left > 0 {
            return Err(format!("{} still holds {left} entries", dir.display()));
        }
        Ok(())
    }
}

/// A lazy filesystem mounted by a `leasehold-lazyfs` process we started,
/// unmounted when dropped.
pub struct LazyDisk {
    bin: PathBuf,
    control: LazyControl,
    child: Option<Child>,
}

impl LazyDisk {
    /// Mounts `backing` at `mountpoint` (both created if missing) with the
    /// control socket at `control`; returns once the mount is usable.
    pub fn mount(
        bin: &Path,
        backing: &Path,
        mountpoint: &Path,
        control: &Path,
        log: &Path,
    ) -> Result<LazyDisk, String> {
        for d in [backing, mountpoint] {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        // Absolute, so that the mount table can be checked on unmount.
        let mountpoint = &std::fs::canonicalize(mountpoint)
            .map_err(|e| format!("cannot resolve {}: {e}", mountpoint.display()))?;
        let _ = std::fs::remove_file(control);
        let log_file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let mut child = Command::new(bin)
            .arg("mount")
            .arg("--backing")
            .arg(backing)
            .arg("--mountpoint")
            .arg(mountpoint)
            .arg("--control")
            .arg(control)
            // The model is the same; only the backing directory's own crash
            // safety (irrelevant to a test) is given up, for 3 to 5 times
            // the sync rate.
            .arg("--no-backing-sync")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let Some(out) = stdout else {
                let _ = tx.send(None);
                return;
            };
            let mut lines = BufReader::new(out).lines();
            let first = lines.next().and_then(|l| l.ok());
            let _ = tx.send(first);
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let mut disk = LazyDisk {
            bin: bin.to_path_buf(),
            control: LazyControl {
                mountpoint: mountpoint.to_path_buf(),
                socket: control.to_path_buf(),
            },
            child: Some(child),
        };
        match rx.recv_timeout(MOUNT_TIMEOUT) {
            Ok(Some(line)) if line.trim() == "ready" => {}
            other => {
                let why = match other {
                    Ok(Some(line)) => format!("it printed {line:?} instead of \"ready\""),
                    Ok(None) => "it exited before it was ready".to_string(),
                    Err(_) => format!("not ready within {} s", MOUNT_TIMEOUT.as_secs()),
                };
                disk.unmount();
                return Err(format!(
                    "cannot mount the lazy filesystem at {}: {why} (its log: {})",
                    mountpoint.display(),
                    log.display()
                ));
            }
        }
        disk.control.command("ping")?;
        Ok(disk)
    }

    /// Its control socket.
    pub fn control(&self) -> &LazyControl {
        &self.control
    }

    /// Stops the filesystem process (SIGTERM: it unmounts and exits) and,
    /// if that does not work, detaches the mount.
    fn unmount(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let mut exited = false;
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        let still_mounted = std::fs::read_to_string("/proc/self/mounts")
            .map(|m| {
                let p = self.control.mountpoint.to_string_lossy().to_string();
                m.lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(p.as_str()))
            })
            .unwrap_or(false);
        if !exited || still_mounted {
            let _ = Command::new(&self.bin)
                .arg("unmount")
                .arg(&self.control.mountpoint)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for LazyDisk {
    fn drop(&mut self) {
        self.unmount();
    }
}
