//! The `leasehold` command line: the flags (clap, every global flag also
//! from the environment), the exit codes, and the dispatch to one file per
//! command group: `serve.rs`; `lease.rs` (acquire, renew, release, get,
//! delete); `cluster.rs` (status, member, health); `watch.rs`; `lock.rs`,
//! `elect.rs` and `heartbeat.rs`, with `job.rs` supervising the command
//! that `lock` and `elect` run. `output.rs` prints leases and status.
//!
//! Exit codes: 0 done; 1 held by another, lost, conflict, not found or
//! another refusal; 2 invalid input (including bad flags); 3 cluster
//! unavailable (no endpoint reachable, no leader, deadline exceeded).
//! `lock` and `elect` exit with their command's code, 126/127 when it
//! cannot be run, and 130/143 when interrupted before it started.

mod certs;
mod cluster;
mod elect;
mod heartbeat;
mod job;
mod lease;
mod lock;
pub mod output;
mod serve;
mod watch;

pub use certs::CertsArgs;
pub use elect::ElectArgs;
pub use heartbeat::HeartbeatArgs;
pub use lock::LockArgs;
pub use serve::{parse_peers, ClusterStateArg, ServeArgs};

use crate::client::errors::LeaseClientError;
use crate::client::Client;
use clap::{Args, Parser, Subcommand};
use output::Format;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: refused (held, lost, conflict, not found).
pub const EXIT_REFUSED: i32 = 1;
/// Exit code: invalid input.
pub const EXIT_INVALID: i32 = 2;
/// Exit code: cluster unavailable.
pub const EXIT_UNAVAILABLE: i32 = 3;

/// Leasehold: a replicated store of Kubernetes-style leases with fencing tokens.
#[derive(Debug, Parser)]
#[command(name = "leasehold", version, about)]
pub struct Cli {
    /// Cluster endpoints, HOST:PORT, comma-separated; tried in order.
    #[arg(
        long,
        global = true,
        env = "LEASEHOLD_ENDPOINTS",
        default_value = "127.0.0.1:7070",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "table"
    )]
    pub output: Format,
    /// Deadline of each call, in seconds.
    #[arg(long, global = true, env = "LEASEHOLD_TIMEOUT", default_value_t = 10.0)]
    pub timeout: f64,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Acquire a lease (or renew it if HOLDER already holds it).
    Acquire {
        /// NAMESPACE/NAME.
        lease: String,
        /// Holder identity.
        #[arg(long)]
        holder: String,
        /// Lease duration in seconds.
        #[arg(long, default_value_t = 15)]
        duration: i32,
        /// Labels for a newly created lease, KEY=VALUE (repeatable).
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// Renew the holder's tenure.
    Renew {
        /// NAMESPACE/NAME.
        lease: String,
        /// Holder identity.
        #[arg(long)]
        holder: String,
        /// Fencing token returned by acquire.
        #[arg(long)]
        token: u64,
    },
    /// Release the holder's tenure.
    Release {
        /// NAMESPACE/NAME.
        lease: String,
        /// Holder identity.
        #[arg(long)]
        holder: String,
        /// Fencing token returned by acquire.
        #[arg(long)]
        token: u64,
    },
    /// Show one lease (NAMESPACE/NAME) or list leases.
    Get {
        /// NAMESPACE/NAME of one lease; omit to list.
        lease: Option<String>,
        /// Which leases.
        #[command(flatten)]
        scope: Scope,
        /// Read from the node answering without a linearizability check.
        #[arg(long)]
        stale: bool,
    },
    /// Delete a lease, also a held one: it cannot be created again until
    /// the deleted tenure could have lapsed.
    Delete {
        /// NAMESPACE/NAME.
        lease: String,
        /// Delete only at this resourceVersion.
        #[arg(long)]
        resource_version: Option<u64>,
        /// Delete only this incarnation (its metadata.uid).
        #[arg(long)]
        uid: Option<String>,
    },
    /// Print changes as they happen, one per line; reconnects to another
    /// endpoint from the last revision seen.
    Watch {
        /// Which leases.
        #[command(flatten)]
        scope: Scope,
        /// Start at this revision (inclusive) instead of now.
        #[arg(long = "from")]
        from: Option<u64>,
        /// Stop after this many events (default: run until interrupted).
        #[arg(long)]
        max_events: Option<u64>,
    },
    /// Show the answering node's view of the cluster.
    Status,
    /// Manage cluster membership.
    Member {
        /// What to do.
        #[command(subcommand)]
        action: MemberAction,
    },
    /// Exit 0 if the first endpoint's node serves requests (for health checks).
    Health,
    /// Run a command while holding a lease: wait for the lease, run CMD with
    /// LEASEHOLD_FENCING_TOKEN set, renew it, release it when CMD exits; stop
    /// CMD and exit 1 if the lease is lost. Exits with CMD's exit code.
    Lock(LockArgs),
    /// Run a command only while leader: campaign for the lease, start CMD on
    /// winning, stop it on losing and campaign again.
    Elect(ElectArgs),
    /// Keep a node lease (kube-node-lease/NODE) alive until interrupted.
    Heartbeat(HeartbeatArgs),
    /// Make the CAs, certificates, tokens and rules of a TLS cluster
    /// (`certs init`), or add certificates to them (`certs issue`).
    Certs(CertsArgs),
}

/// Which leases a `get` or `watch` covers.
#[derive(Debug, Clone, Args)]
pub struct Scope {
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long, default_value = "")]
    pub selector: String,
}

impl Scope {
    /// The namespace to send: empty for every namespace.
    pub fn namespace(&self) -> String {
        if self.all_namespaces {
            String::new()
        } else {
            self.namespace.clone()
        }
    }
}

/// Membership commands.
#[derive(Debug, Subcommand)]
pub enum MemberAction {
    /// Add a node: it joins as a learner, catches up, then becomes a voter.
    Add {
        /// Node id.
        id: u64,
        /// The node's HOST:PORT.
        address: String,
    },
    /// Remove a node.
    Remove {
        /// Node id.
        id: u64,
    },
    /// Put back a member whose data directory was lost or replaced: start
    /// it empty with `--initial-cluster-state existing`, then run this. The
    /// old incarnation leaves the voters, the new one joins as a learner,
    /// catches up, and becomes a voter.
    Replace {
        /// Node id.
        id: u64,
        /// The replacement's HOST:PORT (default: the member's recorded address).
        #[arg(long)]
        address: Option<String>,
    },
    /// List members.
    List,
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let Cli {
        endpoints,
        output: format,
        timeout,
        command,
    } = cli;
    match command {
        Command::Serve(args) => serve::serve(*args).await,
        Command::Watch {
            scope,
            from,
            max_events,
        } => watch::command(endpoints, &scope, from, max_events, format).await,
        Command::Lock(args) => lock::lock(&endpoints, timeout, args).await,
        Command::Elect(args) => elect::elect(&endpoints, timeout, args).await,
        Command::Heartbeat(args) => heartbeat::heartbeat(&endpoints, timeout, args).await,
        Command::Certs(args) => certs::run(args),
        command => {
            let client = match connect(&endpoints, timeout) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match one_call(&client, command, format).await {
                Ok(text) => {
                    print!("{text}");
                    EXIT_OK
                }
                Err(CliError::Usage(m)) => invalid(m),
                Err(CliError::Status(s)) => report(&s),
            }
        }
    }
}

/// The commands that make one call (a list: one paged read) and print its
/// answer.
async fn one_call(client: &Client, command: Command, format: Format) -> Result<String, CliError> {
    match command {
        Command::Acquire {
            lease,
            holder,
            duration,
            labels,
        } => lease::acquire(client, &lease, holder, duration, &labels, format).await,
        Command::Renew {
            lease,
            holder,
            token,
        } => lease::renew(client, &lease, holder, token, format).await,
        Command::Release {
            lease,
            holder,
            token,
        } => lease::release(client, &lease, holder, token, format).await,
        Command::Get {
            lease: Some(lease),
            stale,
            ..
        } => lease::get(client, &lease, stale, format).await,
        Command::Get {
            lease: None,
            scope,
            stale,
        } => lease::list(client, &scope, stale, format).await,
        Command::Delete {
            lease,
            resource_version,
            uid,
        } => lease::delete(client, &lease, resource_version, uid, format).await,
        Command::Status => cluster::status(client, format).await,
        Command::Member { action } => cluster::member(client, action, format).await,
        Command::Health => cluster::health(client, format).await,
        Command::Serve(_)
        | Command::Watch { .. }
        | Command::Lock(_)
        | Command::Elect(_)
        | Command::Heartbeat(_)
        | Command::Certs(_) => unreachable!("handled by run"),
    }
}

/// Why a one-call command failed.
enum CliError {
    /// Bad input, found before any call.
    Usage(String),
    /// The call's status.
    Status(tonic::Status),
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Status(s)
    }
}

impl From<String> for CliError {
    fn from(s: String) -> Self {
        CliError::Usage(s)
    }
}

/// Prints a status to stderr and returns its exit code.
fn report(s: &tonic::Status) -> i32 {
    eprintln!("error: {}", s.message());
    exit_code(s.code())
}

/// The exit code for a gRPC status code.
pub fn exit_code(code: Code) -> i32 {
    match code {
        Code::Ok => EXIT_OK,
        Code::InvalidArgument | Code::OutOfRange => EXIT_INVALID,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            EXIT_UNAVAILABLE
        }
        _ => EXIT_REFUSED,
    }
}

/// Prints a typed client error and returns its exit code: 2 invalid, 3
/// unavailable, 1 any other refusal.
fn fail(e: &LeaseClientError) -> i32 {
    eprintln!("error: {e}");
    match e {
        LeaseClientError::Invalid { .. } => EXIT_INVALID,
        LeaseClientError::Unavailable(_) | LeaseClientError::OutcomeUnknown(_) => EXIT_UNAVAILABLE,
        LeaseClientError::Other(s) => exit_code(s.code()),
        _ => EXIT_REFUSED,
    }
}

/// Reports invalid input and returns its exit code.
fn invalid(message: impl std::fmt::Display) -> i32 {
    eprintln!("error: {message}");
    EXIT_INVALID
}

/// A client of `endpoints` whose calls each have `timeout` seconds (at
/// least a millisecond; NaN counts as that, and huge values as 30 years).
fn connect(endpoints: &[String], timeout: f64) -> Result<Arc<Client>, i32> {
    let secs = if timeout.is_nan() {
        0.001
    } else {
        timeout.clamp(0.001, 1e9)
    };
    match Client::new(endpoints.to_vec()) {
        Ok(c) => Ok(Arc::new(c.with_timeout(Duration::from_secs_f64(secs)))),
        Err(s) => Err(report(&s)),
    }
}

/// `NAMESPACE/NAME` as its two parts.
fn split_lease(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("lease {s:?} must be NAMESPACE/NAME")),
    }
}

/// A `--FLAG` of seconds as a `Duration`.
fn seconds(flag: &str, s: f64) -> Result<Duration, String> {
    if (0.0..1e9).contains(&s) {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!(
            "--{flag} {s} must be a non-negative number of seconds"
        ))
    }
}

/// `--duration` as a `Duration`; it must be a positive number of seconds.
fn lease_duration(seconds: i32) -> Result<Duration, String> {
    if seconds <= 0 {
        return Err(format!(
            "--duration {seconds} must be a positive number of seconds"
        ));
    }
    Ok(Duration::from_secs(seconds.unsigned_abs().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_argument_must_be_namespace_slash_name() {
        assert_eq!(split_lease("ns/a").unwrap(), ("ns".into(), "a".into()));
        assert!(split_lease("a").is_err());
        assert!(split_lease("/a").is_err());
        assert!(split_lease("ns/").is_err());
        assert!(split_lease("a/b/c").is_err());
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        assert_eq!(exit_code(Code::FailedPrecondition), EXIT_REFUSED);
        assert_eq!(exit_code(Code::Aborted), EXIT_REFUSED);
        assert_eq!(exit_code(Code::NotFound), EXIT_REFUSED);
        assert_eq!(exit_code(Code::InvalidArgument), EXIT_INVALID);
        assert_eq!(exit_code(Code::Unavailable), EXIT_UNAVAILABLE);
        assert_eq!(exit_code(Code::DeadlineExceeded), EXIT_UNAVAILABLE);
    }
}
