//! The control socket: a Unix stream socket with a line protocol, so a chaos
//! harness in another process can cut the power.
//!
//! One command per line, one reply line per command; a connection may stay
//! open for more commands. Commands and replies:
//!
//! | command | reply |
//! | --- | --- |
//! | `ping` | `ok` |
//! | `status` | `ok files=N bytes=N entries=N` (pending) |
//! | `lose-unsynced` | `ok files=N bytes=N entries=N` (dropped) |
//! | `lose-unsynced torn SEED` | the same, torn (see [`Controller::lose_unsynced_torn`]) |
//! | `checkpoint` | `ok files=N bytes=N entries=N` (made durable) |
//! | anything else | `err unknown command "..." (known: ...)` |
//!
//! A command that fails replies `err <command>: <reason>`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::mount::Controller;

const KNOWN: &str = "ping, status, lose-unsynced, lose-unsynced torn SEED, checkpoint";

/// The reply line (without newline) to one command line.
pub fn execute(controller: &Controller, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let result = match words.as_slice() {
        ["ping"] => return "ok".to_string(),
        ["status"] => Ok(controller.status()),
        ["lose-unsynced"] => controller.lose_unsynced(),
        ["lose-unsynced", "torn", seed] => match seed.parse::<u64>() {
            Ok(seed) => controller.lose_unsynced_torn(seed),
            Err(e) => return format!("err bad seed {seed:?}: {e}"),
        },
        ["checkpoint"] => controller.checkpoint(),
        _ => return format!("err unknown command {:?} (known: {KNOWN})", line.trim()),
    };
    match result {
        Ok(summary) => format!("ok {summary}"),
        Err(e) => format!("err {}: {e}", words.first().copied().unwrap_or_default()),
    }
}

/// A control socket being served; dropping it stops serving and removes
/// the socket file.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Serves `controller` on a Unix socket at `path`. A stale socket file
    /// (nobody listening) is replaced; a live one is an error.
    pub fn serve(controller: Controller, path: &Path) -> io::Result<ControlServer> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "control socket {} is in use by another server",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot remove stale {}: {e}", path.display()),
                )
            })?;
        }
        let listener = UnixListener::bind(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on control socket {}: {e}", path.display()),
            )
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::Builder::new()
            .name("lazyfs-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let controller = controller.clone();
                    // One thread per connection: a client may keep its
                    // connection open without blocking the others.
                    let _ = thread::Builder::new()
                        .name("lazyfs-control-conn".into())
                        .spawn(move || serve_connection(&controller, conn));
                }
            })?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_connection(controller: &Controller, conn: UnixStream) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let reply = execute(controller, &line);
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// Sends one command to the control socket at `sock` and returns the reply
/// line (without its newline), e.g. `ok files=0 bytes=0 entries=0`.
pub fn control(sock: &Path, command: &str) -> io::Result<String> {
    let conn = UnixStream::connect(sock).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot connect to control socket {}: {e}", sock.display()),
        )
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = conn.try_clone()?;
    writeln!(out, "{}", command.trim())?;
    out.flush()?;
    let mut reply = String::new();
    BufReader::new(conn).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("control socket {} closed without a reply", sock.display()),
        ));
    }
    Ok(reply.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::State;
    use std::sync::Mutex;

    #[test]
    fn commands_and_replies() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = State::new(tmp.path(), false).expect("state");
        let controller = Controller::new(Arc::new(Mutex::new(state)));
        assert_eq!(execute(&controller, "ping"), "ok");
        assert_eq!(
            execute(&controller, "  status \r"),
            "ok files=0 bytes=0 entries=0"
        );
        assert_eq!(
            execute(&controller, "lose-unsynced"),
            "ok files=0 bytes=0 entries=0"
        );
        assert_eq!(
            execute(&controller, "lose-unsynced torn 18446744073709551615"),
            "ok files=0 bytes=0 entries=0"
        );
        assert_eq!(
            execute(&controller, "checkpoint"),
            "ok files=0 bytes=0 entries=0"
        );
        assert!(execute(&controller, "lose-unsynced torn x").starts_with("err bad seed \"x\""));
        assert_eq!(
            execute(&controller, "lose-unsynced torn"),
            format!("err unknown command \"lose-unsynced torn\" (known: {KNOWN})")
        );
        assert_eq!(
            execute(&controller, "reboot"),
            format!("err unknown command \"reboot\" (known: {KNOWN})")
        );
    }

    #[test]
    fn the_socket_serves_several_commands_per_connection() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let backing = tmp.path().join("b");
        std::fs::create_dir(&backing).expect("mkdir");
        let state = State::new(&backing, false).expect("state");
        let controller = Controller::new(Arc::new(Mutex::new(state)));
        let sock = tmp.path().join("s.sock");
        let server = ControlServer::serve(controller.clone(), &sock).expect("serve");
        assert!(
            ControlServer::serve(controller.clone(), &sock).is_err(),
            "in use"
        );
        assert_eq!(control(&sock, "ping").expect("ping"), "ok");
        let conn = UnixStream::connect(&sock).expect("connect");
        let mut out = conn.try_clone().expect("clone");
        out.write_all(b"ping\nstatus\n").expect("send");
        let mut lines = BufReader::new(conn).lines();
        assert_eq!(lines.next().expect("reply").expect("read"), "ok");
        assert_eq!(
            lines.next().expect("reply").expect("read"),
            "ok files=0 bytes=0 entries=0"
        );
        drop(server);
        assert!(!sock.exists());
        // A stale socket file is replaced.
        let stale = UnixListener::bind(&sock).expect("bind");
        drop(stale);
        let _server = ControlServer::serve(controller, &sock).expect("serve over a stale file");
        assert_eq!(control(&sock, "ping").expect("ping"), "ok");
    }
}
