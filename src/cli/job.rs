//! Child-process supervision for `leasehold lock` and `leasehold elect`:
//! CMD runs in its own process group, so that stopping it also stops
//! whatever it started (a `sh -c` wrapper's children, say). It is stopped
//! with SIGTERM (or the signal that asked `leasehold` to stop) and, after a
//! grace period, SIGKILL, sent with the system's `kill` command (no libc
//! binding needed). Because CMD is not in the terminal's foreground process
//! group, ctrl-c reaches it through `leasehold`, which forwards SIGINT and
//! SIGTERM to the group ([`Signals`]); for the same reason CMD cannot read
//! from the terminal. Exit codes are a shell's: CMD's own, 128 + the
//! signal that ended it, 127 when CMD is not found, 126 when it cannot run.
//!
//! Nothing here knows about leases: the commands decide when CMD starts
//! and when it must stop.

use super::EXIT_REFUSED;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Which signal asked `leasehold` to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Interrupt,
    Terminate,
}

impl Stop {
    pub fn exit_code(self) -> i32 {
        match self {
            Stop::Interrupt => 130,
            Stop::Terminate => 143,
        }
    }

    pub fn signal(self) -> &'static str {
        match self {
            Stop::Interrupt => "INT",
            Stop::Terminate => "TERM",
        }
    }
}

/// SIGINT (ctrl-c) and SIGTERM, as a stream: a second signal escalates.
pub struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    pub async fn recv(&mut self) -> Stop {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        if s.recv().await.is_none() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.int) => Stop::Interrupt,
                _ = next(&mut self.term) => Stop::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Stop::Interrupt
        }
    }
}

/// CMD, running in its own process group.
pub struct Job {
    pub child: tokio::process::Child,
    pid: Option<u32>,
    /// When SIGKILL is due (set once CMD was asked to stop).
    pub kill_at: Option<Instant>,
    pub killed: bool,
}

impl Job {
    fn spawn(command: &[String], env: &[(&str, String)]) -> Result<Job, String> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| "no command given after --".to_string())?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        #[cfg(unix)]
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {program:?}: {e}"))?;
        Ok(Job {
            pid: child.id(),
            child,
            kill_at: None,
            killed: false,
        })
    }

    /// Sends `sig` to CMD's process group.
    async fn signal(&mut self, sig: &str) {
        #[cfg(unix)]
        if let Some(pid) = self.pid {
            // `kill -SIG -- -PGID` signals the whole group CMD leads.
            let sent = tokio::process::Command::new("kill")
                .arg(format!("-{sig}"))
                .arg("--")
                .arg(format!("-{pid}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if sent || sig != "KILL" {
                return;
            }
        }
        if sig == "KILL" {
            // No `kill` command (or not Unix): SIGKILL at least CMD itself.
            let _ = self.child.start_kill();
        }
    }

    /// Asks CMD to stop with `sig`; SIGKILL follows `grace` later unless an
    /// earlier SIGKILL is already due.
    pub async fn stop(&mut self, sig: &str, grace: Duration) {
        self.signal(sig).await;
        let at = Instant::now() + grace;
        self.kill_at = Some(self.kill_at.map_or(at, |k| k.min(at)));
    }

    pub async fn kill(&mut self) {
        self.killed = true;
        self.signal("KILL").await;
    }

    /// Resolves when SIGKILL is due (never if CMD was not asked to stop).
    pub async fn kill_due(kill_at: Option<Instant>, killed: bool) {
        match kill_at {
            Some(at) if !killed => tokio::time::sleep_until(at.into()).await,
            _ => std::future::pending().await,
        }
    }
}

/// The exit code a shell would report for CMD.
pub fn exit_code_of(status: ExitStatus) -> i32 {
    if let Some(c) = status.code() {
        return c;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return 128 + sig;
        }
    }
    EXIT_REFUSED
}

fn spawn_failure_code(msg: &str) -> i32 {
    // As shells do: 127 command not found, 126 found but not runnable.
    if msg.contains("No such file") || msg.contains("not found") {
        127
    } else {
        126
    }
}

/// Starts CMD for a tenure, with the fencing token in
/// `LEASEHOLD_FENCING_TOKEN` (CMD should pass it with every write to the
/// protected resource), the holder in `LEASEHOLD_HOLDER` and
/// `NAMESPACE/NAME` in `LEASEHOLD_LEASE`. On failure, says why and returns
/// the exit code a shell would.
pub fn start(command: &[String], token: u64, holder: &str, lease: &str) -> Result<Job, i32> {
    let env = [
        ("LEASEHOLD_FENCING_TOKEN", token.to_string()),
        ("LEASEHOLD_HOLDER", holder.to_string()),
        ("LEASEHOLD_LEASE", lease.to_string()),
    ];
    Job::spawn(command, &env).map_err(|m| {
        eprintln!("error: {m}");
        spawn_failure_code(&m)
    })
}

/// The exit code of a wait on CMD that may have failed or, with no CMD,
/// not happened: CMD's code, or 1.
pub trait FlattenCode {
    fn flatten_code(self) -> i32;
}

impl FlattenCode for Option<std::io::Result<ExitStatus>> {
    fn flatten_code(self) -> i32 {
        match self {
            Some(Ok(s)) => exit_code_of(s),
            _ => EXIT_REFUSED,
        }
    }
}

/// Waits for a job that was asked to stop, sending SIGKILL when due.
pub async fn wait_stopped(job: &mut Job) -> i32 {
    loop {
        tokio::select! {
            s = job.child.wait() => return Some(s).flatten_code(),
            _ = Job::kill_due(job.kill_at, job.killed) => job.kill().await,
        }
    }
}
