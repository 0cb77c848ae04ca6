//! The `leasehold` command line: the flags (clap, every global flag also
//! from the environment), the exit codes, and the dispatch to one file per
//! command group: `serve.rs`; `lease.rs` (acquire, renew, release, get,
//! delete); `cluster.rs` (status, member, health); `snapshot.rs` (backup
//! save, status and restore); `watch.rs`; `lock.rs`,
//! `elect.rs` and `heartbeat.rs`, with `job.rs` supervising the command
//! that `lock` and `elect` run. `output.rs` prints leases and status.
//!
//! The client commands share the TLS and token flags of
//! [`ConnectArgs`] (`--cacert`, `--cert`, `--key`, `--token`,
//! `--token-file`, `--tls-server-name`, each also from the environment).
//! `renew` and `release` keep `--token` for the fencing token they always
//! took; there the bearer token is `--bearer-token`, or the global flag
//! given before the command name, or `LEASEHOLD_TOKEN`.
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
pub mod serve;
mod snapshot;
mod watch;

pub use certs::CertsArgs;
pub use elect::ElectArgs;
pub use heartbeat::HeartbeatArgs;
pub use lock::LockArgs;
pub use serve::{parse_peers, ClusterStateArg, ServeArgs};
pub use snapshot::{RestoreArgs, SnapshotAction};

use crate::client::errors::LeaseClientError;
use crate::client::{Client, ConnectArgs, ConnectOptions};
use clap::{Args, Parser, Subcommand};
use output::Format;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// What `--version` prints: the build and the data format it reads and
/// writes (`store::FORMAT_VERSION`), since builds of different format
/// versions do not mix in one cluster (README, "Upgrades").
pub fn version_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| {
        format!(
            "{} (format version {})",
            env!("CARGO_PKG_VERSION"),
            crate::store::FORMAT_VERSION
        )
    })
}

/// Leasehold: a replicated store of Kubernetes-style leases with fencing tokens.
#[derive(Debug, Parser)]
#[command(name = "leasehold", version = version_line(), about)]
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
    /// TLS and bearer token of the client commands.
    #[command(flatten)]
    pub connect: ConnectArgs,
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
        #[arg(id = "fencing_token", long = "token", value_name = "TOKEN")]
        token: u64,
        /// The bearer token here (`--token` is the fencing token).
        #[command(flatten)]
        bearer: BearerToken,
    },
    /// Release the holder's tenure.
    Release {
        /// NAMESPACE/NAME.
        lease: String,
        /// Holder identity.
        #[arg(long)]
        holder: String,
        /// Fencing token returned by acquire.
        #[arg(id = "fencing_token", long = "token", value_name = "TOKEN")]
        token: u64,
        /// The bearer token here (`--token` is the fencing token).
        #[command(flatten)]
        bearer: BearerToken,
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
    /// Back up a cluster (`save`), check a backup (`status`), or seed a
    /// new cluster's data directories from one (`restore`, offline).
    Snapshot {
        /// What to do.
        #[command(subcommand)]
        action: SnapshotAction,
    },
}

/// The bearer token of `renew` and `release`, whose `--token` has always
/// been the fencing token. clap gives a subcommand's own argument of the
/// same id precedence over a global one and does not copy the global one
/// into it, so this argument, with the id of [`ConnectArgs::token`], keeps
/// the global `--token` out of these two commands (two arguments named
/// `--token` in one command would be a clap error). Its value goes up to
/// the global one like any global's, so `--bearer-token` sets the token
/// that [`ConnectArgs`] reads, and `LEASEHOLD_TOKEN` or a `--token` before
/// the command name still work.
#[derive(Debug, Clone, Default, Args)]
pub struct BearerToken {
    /// Bearer token sent with the request (needs --cacert); elsewhere the
    /// global --token.
    #[arg(
        id = "token",
        long = "bearer-token",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    bearer_token: Option<String>,
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
        connect: connect_args,
        command,
    } = cli;
    match command {
        Command::Serve(args) => return serve::serve(*args).await,
        // Makes files only: no endpoint, no TLS options.
        Command::Certs(args) => return certs::run(args),
        // Read and write files only.
        Command::Snapshot {
            action: action @ (SnapshotAction::Status { .. } | SnapshotAction::Restore(_)),
        } => return snapshot::offline(action, format),
        _ => {}
    }
    // Read and check the TLS files and the token before any command
    // starts: a lock or elect must not wait for a lease it cannot use.
    let opts = match connect_args.options() {
        Ok(o) => o,
        Err(m) => return invalid(m),
    };
    TLS_IN_USE.store(opts.tls.is_some(), Ordering::Relaxed);
    let target = Target {
        endpoints,
        timeout,
        opts,
    };
    match command {
        Command::Serve(_)
        | Command::Certs(_)
        | Command::Snapshot {
            action: SnapshotAction::Status { .. } | SnapshotAction::Restore(_),
        } => unreachable!("handled above"),
        Command::Snapshot {
            action: SnapshotAction::Save { file },
        } => snapshot::save(&target, &file, format).await,
        Command::Watch {
            scope,
            from,
            max_events,
        } => watch::command(&target, &scope, from, max_events, format).await,
        Command::Lock(args) => lock::lock(&target, args).await,
        Command::Elect(args) => elect::elect(&target, args).await,
        Command::Heartbeat(args) => heartbeat::heartbeat(&target, args).await,
        command => {
            let client = match connect(&target) {
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
            ..
        } => lease::renew(client, &lease, holder, token, format).await,
        Command::Release {
            lease,
            holder,
            token,
            ..
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
        | Command::Certs(_)
        | Command::Snapshot { .. } => unreachable!("handled by run"),
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

/// Whether this process's client commands use TLS (set once by [`run`]):
/// the hints of [`connection_hint`] depend on it, and the error paths that
/// print them are many and far from the flags.
static TLS_IN_USE: AtomicBool = AtomicBool::new(false);

/// The hint for a connection refused at TLS set-up.
pub const TLS_REFUSED_HINT: &str = "the server refused the connection or its certificate: \
     is --cacert the CA that signed the server's certificate, and --cert issued by a CA it trusts?";

/// What to tell a user whose call failed with `code` and `message` while
/// connecting, if the cause is likely the TLS set-up: with TLS, a
/// cancelled call or a transport error about TLS, certificates or the
/// handshake (see `is_tls_refusal` in the client); without TLS, a
/// connection the server broke off at once, as a TLS server does with a
/// plaintext client.
fn connection_hint(code: Code, message: &str, tls: bool) -> Option<&'static str> {
    let status = tonic::Status::new(code, message);
    if tls {
        return crate::client::is_tls_refusal(&status).then_some(TLS_REFUSED_HINT);
    }
    let m = message.to_ascii_lowercase();
    // A TLS server answers a plaintext HTTP/2 preface with a TLS alert,
    // which h2 reads as a frame of an invalid size.
    (matches!(code, Code::Unknown | Code::Unavailable | Code::Internal)
        && (m.contains("connection error")
            || m.contains("broken pipe")
            || m.contains("frame with invalid size")))
    .then_some("if the cluster uses TLS, pass --cacert (the CA that signed its certificates)")
}

/// `message` with the hint for its failure, if any; the original message
/// stays, it names the endpoint and the TLS error.
fn with_hint(code: Code, message: &str) -> String {
    match connection_hint(code, message, TLS_IN_USE.load(Ordering::Relaxed)) {
        Some(hint) => format!("{hint} ({message})"),
        None => message.to_string(),
    }
}

/// Prints a status to stderr and returns its exit code.
fn report(s: &tonic::Status) -> i32 {
    eprintln!(
        "error: {}",
        with_hint(s.code(), &crate::client::status_text(s))
    );
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
    match e {
        LeaseClientError::Unavailable(m) => {
            eprintln!(
                "error: cluster unavailable: {}",
                with_hint(Code::Unavailable, m)
            )
        }
        // The client reports a cancelled call as an unknown outcome.
        LeaseClientError::OutcomeUnknown(m) if m.contains("operation was canceled") => {
            eprintln!("error: outcome unknown: {}", with_hint(Code::Cancelled, m))
        }
        LeaseClientError::Other(s) => eprintln!(
            "error: {}: {}",
            s.code(),
            with_hint(s.code(), &crate::client::status_text(s))
        ),
        e => eprintln!("error: {e}"),
    }
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

/// What every client command connects to, and how: the global flags.
pub struct Target {
    /// `--endpoints`.
    pub endpoints: Vec<String>,
    /// `--timeout`, seconds.
    pub timeout: f64,
    /// TLS and token, from [`ConnectArgs`].
    pub opts: ConnectOptions,
}

/// A client of `target`'s endpoints, with its TLS and token, whose calls
/// each have its timeout (at least a millisecond; NaN counts as that, and
/// huge values as 30 years).
fn connect(target: &Target) -> Result<Arc<Client>, i32> {
    let timeout = target.timeout;
    let secs = if timeout.is_nan() {
        0.001
    } else {
        timeout.clamp(0.001, 1e9)
    };
    match Client::with_options(target.endpoints.clone(), target.opts.clone()) {
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
    fn connect_flags_are_global_and_renew_keeps_its_fencing_token() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "leasehold",
            "get",
            "ns/a",
            "--cacert",
            "/ca.crt",
            "--token",
            "s3cret",
        ])
        .unwrap();
        assert_eq!(cli.connect.cacert.as_deref(), Some("/ca.crt".as_ref()));
        assert_eq!(cli.connect.token.as_deref(), Some("s3cret"));
        assert!(!format!("{cli:?}").contains("s3cret"));
        let cli = Cli::try_parse_from([
            "leasehold",
            "--token",
            "s3cret",
            "renew",
            "ns/a",
            "--holder",
            "h",
            "--token",
            "7",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Renew { token: 7, .. }));
        assert_eq!(cli.connect.token.as_deref(), Some("s3cret"));
        let cli = Cli::try_parse_from([
            "leasehold",
            "release",
            "ns/a",
            "--holder",
            "h",
            "--token",
            "7",
            "--bearer-token",
            "s3cret",
            "--cacert",
            "/ca.crt",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Release { token: 7, .. }));
        assert_eq!(cli.connect.token.as_deref(), Some("s3cret"));
        let cli = Cli::try_parse_from([
            "leasehold",
            "renew",
            "ns/a",
            "--holder",
            "h",
            "--token",
            "7",
        ])
        .unwrap();
        assert_eq!(cli.connect.token, None);
    }

    #[test]
    fn refusals_at_tls_set_up_get_the_hint() {
        let tls = |code, m: &str| connection_hint(code, m, true);
        assert_eq!(
            tls(Code::Cancelled, "operation was canceled"),
            Some(TLS_REFUSED_HINT)
        );
        assert_eq!(
            tls(
                Code::Unavailable,
                "127.0.0.1:7071: invalid peer certificate: UnknownIssuer"
            ),
            Some(TLS_REFUSED_HINT)
        );
        assert_eq!(
            tls(
                Code::Unknown,
                "connection error: received fatal alert: CertificateRequired"
            ),
            Some(TLS_REFUSED_HINT)
        );
        assert_eq!(
            tls(Code::Unavailable, "127.0.0.1:7071: tls handshake eof"),
            Some(TLS_REFUSED_HINT)
        );
        assert_eq!(
            tls(
                Code::Unavailable,
                "127.0.0.1:1: tcp connect error: Connection refused"
            ),
            None
        );
        assert_eq!(tls(Code::PermissionDenied, "certificate"), None);
        assert!(TLS_REFUSED_HINT.contains("--cacert") && TLS_REFUSED_HINT.contains("--cert"));
        // Without TLS: a TLS server breaking off a plaintext client.
        let plain = connection_hint(
            Code::Unknown,
            "connection error: stream closed because of a broken pipe",
            false,
        );
        assert!(plain.is_some_and(|h| h.contains("--cacert")));
        assert_eq!(connection_hint(Code::Cancelled, "x", false), None);
        // The hint keeps the original message.
        TLS_IN_USE.store(true, Ordering::Relaxed);
        let m = with_hint(Code::Cancelled, "operation was canceled");
        TLS_IN_USE.store(false, Ordering::Relaxed);
        assert!(m.starts_with(TLS_REFUSED_HINT) && m.ends_with("(operation was canceled)"));
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
