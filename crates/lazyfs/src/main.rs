//! `leasehold-lazyfs`: the command line of the lazy filesystem.
//!
//! - `mount --backing B --mountpoint M --control SOCK [--no-backing-sync]`
//!   mounts in the foreground, prints `ready` once the mount is usable and
//!   the control socket listens, and unmounts and exits 0 on SIGTERM, SIGINT
//!   or SIGHUP.
//! - `ctl --control SOCK COMMAND...` sends one command and prints the reply
//!   (exit 1 on `err`).
//! - `unmount M` lazily unmounts what a killed server left at `M`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use leasehold_lazyfs::{control, unmount_stale, ControlServer, MountOptions, Mounted};

#[derive(Parser)]
#[command(
    name = "leasehold-lazyfs",
    version,
    about = "A FUSE filesystem that forgets every change not fsynced, on command (power-loss faults)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount BACKING at MOUNTPOINT in the foreground until SIGTERM/SIGINT.
    Mount {
        /// The directory that holds the data (created if missing).
        #[arg(long)]
        backing: PathBuf,
        /// Where to mount (created if missing).
        #[arg(long)]
        mountpoint: PathBuf,
        /// The Unix socket of the control commands.
        #[arg(long)]
        control: PathBuf,
        /// Do not pass syncs on to the backing filesystem (faster; the model
        /// is unchanged, only the backing directory's own crash safety is).
        #[arg(long)]
        no_backing_sync: bool,
    },
    /// Send one command (ping, status, lose-unsynced [torn SEED], checkpoint).
    Ctl {
        /// The Unix socket of the control commands.
        #[arg(long)]
        control: PathBuf,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Lazily unmount whatever is mounted at MOUNTPOINT (a stale mount).
    Unmount { mountpoint: PathBuf },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Mount {
            backing,
            mountpoint,
            control,
            no_backing_sync,
        } => mount(&backing, &mountpoint, &control, !no_backing_sync),
        Cmd::Ctl {
            control: sock,
            command,
        } => match control(&sock, &command.join(" ")) {
            Ok(reply) => {
                println!("{reply}");
                if reply.starts_with("ok") {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => fail(&e),
        },
        Cmd::Unmount { mountpoint } => match unmount_stale(&mountpoint) {
            Ok(true) => {
                println!("unmounted {}", mountpoint.display());
                ExitCode::SUCCESS
            }
            Ok(false) => {
                println!("nothing mounted at {}", mountpoint.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("leasehold-lazyfs: {e}");
    ExitCode::FAILURE
}

/// Creates `dir` if missing; a dead FUSE mount gets a hint.
fn ensure_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err("not a directory".into()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(format!(
            "{e} (a dead FUSE mount: run `leasehold-lazyfs unmount {}`)",
            dir.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create it: {e}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The signals that end `mount`.
fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the set; sigaddset only writes to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

fn mount(backing: &Path, mountpoint: &Path, sock: &Path, sync_backing: bool) -> ExitCode {
    // Block the signals in every thread (they inherit the mask), so that
    // only the sigwait thread below receives them.
    let set = signal_set();
    // SAFETY: a valid, initialized signal set; no old mask is asked for.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };

    for (dir, what) in [(backing, "backing directory"), (mountpoint, "mountpoint")] {
        if let Err(e) = ensure_dir(dir) {
            return fail(&format!("{what} {}: {e}", dir.display()));
        }
    }
    let mounted = match Mounted::mount_with(backing, mountpoint, &MountOptions { sync_backing }) {
        Ok(m) => m,
        Err(e) => return fail(&e),
    };
    let server = match ControlServer::serve(mounted.controller(), sock) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: a valid set of blocked signals and a writable int.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            let _ = tx.send(sig);
        }
    });

    let mut out = std::io::stdout();
    if writeln!(out, "ready").and_then(|()| out.flush()).is_err() {
        return fail(&"cannot write to stdout");
    }

    let ended_outside = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(_) => break false,
            Err(mpsc::RecvTimeoutError::Timeout) if mounted.session_ended() => break true,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
        }
    };
    drop(server);
    let where_ = mounted.mountpoint().display().to_string();
    let result = mounted.unmount();
    if ended_outside {
        return fail(&format!(
            "the mount at {where_} went away (unmounted from outside?)"
        ));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("cannot unmount {where_}: {e}")),
    }
}
