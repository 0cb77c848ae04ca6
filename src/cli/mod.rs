//! The `leasehold` command line: `serve` and the client commands.
//!
//! Exit codes: 0 done; 1 held by another, lost, conflict, not found or
//! another refusal; 2 invalid input (including bad flags); 3 cluster
//! unavailable (no endpoint reachable, no leader, deadline exceeded).

mod lock;
pub mod output;
mod watch;

pub use lock::{ElectArgs, HeartbeatArgs, LockArgs};

use crate::client::Client;
use crate::identity::IdentityConfig;
use crate::proto::v1 as pb;
use crate::raft::node::{InitialClusterState, RaftTiming};
use crate::server::{self, ServeConfig};
use crate::store::StoreOptions;
use clap::{Args, Parser, Subcommand};
use output::Format;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
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
    Serve(ServeArgs),
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
    /// Delete a lease.
    Delete {
        /// NAMESPACE/NAME.
        lease: String,
        /// Delete only at this resourceVersion.
        #[arg(long)]
        resource_version: Option<u64>,
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

/// `--initial-cluster-state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterStateArg {
    /// Bootstrap a new cluster.
    New,
    /// Join an existing cluster.
    Existing,
}

/// `leasehold serve` flags; each also from an environment variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long, env = "LEASEHOLD_ID", default_value_t = 1)]
    pub id: u64,
    /// Address to listen on for clients and peers.
    #[arg(long, env = "LEASEHOLD_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Address others reach this node at (default: the listen address).
    #[arg(long, env = "LEASEHOLD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Data directory.
    #[arg(long, env = "LEASEHOLD_DATA_DIR", default_value = "leasehold-data")]
    pub data_dir: PathBuf,
    /// Initial cluster, ID=HOST:PORT comma-separated; used on first start only.
    #[arg(long, env = "LEASEHOLD_PEERS", default_value = "")]
    pub peers: String,
    /// What an empty data directory means: `new` bootstraps the cluster of
    /// --peers (every initial member must answer first); `existing` waits to
    /// be added with `leasehold member add` (a new node) or `leasehold member
    /// replace` (a member whose data was lost). Ignored once the directory
    /// holds a cluster.
    #[arg(
        long,
        env = "LEASEHOLD_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    pub initial_cluster_state: ClusterStateArg,
    /// Same as `--initial-cluster-state existing`.
    #[arg(long, env = "LEASEHOLD_JOIN")]
    pub join: bool,
    /// Raft heartbeat interval, ms.
    #[arg(long, env = "LEASEHOLD_HEARTBEAT_MS", default_value_t = RaftTiming::default().heartbeat_ms)]
    pub heartbeat_ms: u64,
    /// Minimum election timeout, ms.
    #[arg(long, env = "LEASEHOLD_ELECTION_TIMEOUT_MIN_MS", default_value_t = RaftTiming::default().election_timeout_min_ms)]
    pub election_timeout_min_ms: u64,
    /// Maximum election timeout, ms.
    #[arg(long, env = "LEASEHOLD_ELECTION_TIMEOUT_MAX_MS", default_value_t = RaftTiming::default().election_timeout_max_ms)]
    pub election_timeout_max_ms: u64,
    /// Build a snapshot every this many applied entries; the log is then
    /// purged up to 1,000 entries behind the snapshot.
    #[arg(long, env = "LEASEHOLD_SNAPSHOT_LOGS", default_value_t = RaftTiming::default().snapshot_logs)]
    pub snapshot_logs: u64,
    /// Keep at most this many changes for watchers to resume from (0: none).
    #[arg(long, env = "LEASEHOLD_HISTORY_REVISIONS", default_value_t = 10_000)]
    pub history_revisions: u64,
    /// Drop watch history older than this many seconds (0: no age limit).
    #[arg(long, env = "LEASEHOLD_HISTORY_AGE_SECONDS", default_value_t = 3600)]
    pub history_age_seconds: u64,
    /// Hostname published in this node's identity lease (default: the system's).
    #[arg(long, env = "LEASEHOLD_HOSTNAME")]
    pub hostname: Option<String>,
    /// Do not publish an identity lease for this node.
    #[arg(long, env = "LEASEHOLD_NO_IDENTITY_LEASE")]
    pub no_identity_lease: bool,
    /// Duration of the identity lease, seconds.
    #[arg(long, env = "LEASEHOLD_IDENTITY_LEASE_SECONDS", default_value_t = 3600)]
    pub identity_lease_seconds: i32,
    /// Renew the identity lease every this many seconds.
    #[arg(long, env = "LEASEHOLD_IDENTITY_RENEW_SECONDS", default_value_t = 10.0)]
    pub identity_renew_seconds: f64,
    /// Delete identity leases this many seconds after they expired.
    #[arg(
        long,
        env = "LEASEHOLD_IDENTITY_GC_AGE_SECONDS",
        default_value_t = 3600
    )]
    pub identity_gc_age_seconds: u64,
    /// Fault injection for the chaos suite's negative control, in debug
    /// builds only (release builds do not have this flag): `Put` stores the
    /// client's renewTime and acquireTime instead of the leader's stamp,
    /// which breaks the lease timing guarantee on purpose.
    #[cfg(debug_assertions)]
    #[arg(long, hide = true)]
    pub fault_put_trusts_client_times: bool,
    /// Fault injection for the power-loss negative control, in debug builds
    /// only: the WAL acknowledges writes without `fdatasync`, so a power
    /// loss (the chaos suite's lazy filesystem) loses acknowledged writes.
    #[cfg(debug_assertions)]
    #[arg(long, hide = true)]
    pub fault_skip_wal_sync: bool,
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("--peers entry {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|i| *i > 0)
            .ok_or_else(|| format!("--peers entry {part:?}: id must be a positive integer"))?;
        let addr = addr.trim();
        if !addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            return Err(format!("--peers entry {part:?}: address must be HOST:PORT"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(format!("--peers lists id {id} twice"));
        }
    }
    Ok(out)
}

fn split_lease(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("lease {s:?} must be NAMESPACE/NAME")),
    }
}

fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>, String> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--label {l:?} must be KEY=VALUE"))
        })
        .collect()
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Watch {
            scope,
            from,
            max_events,
        } => {
            let client = match Client::new(cli.endpoints.clone()) {
                Ok(c) => c,
                Err(s) => return report(&s),
            };
            let req = pb::WatchRequest {
                namespace: scope.namespace(),
                name: String::new(),
                label_selector: scope.selector.clone(),
                start_revision: from.unwrap_or(0),
                progress_notify: true,
                progress_interval_ms: 2_000,
            };
            watch::run(&client, req, cli.output, max_events).await
        }
        Command::Lock(args) => lock::lock(&cli.endpoints, cli.timeout, args).await,
        Command::Elect(args) => lock::elect(&cli.endpoints, cli.timeout, args).await,
        Command::Heartbeat(args) => lock::heartbeat(&cli.endpoints, cli.timeout, args).await,
        ref cmd => {
            let client = match Client::new(cli.endpoints.clone()) {
                Ok(c) => c.with_timeout(Duration::from_secs_f64(cli.timeout.max(0.001))),
                Err(s) => return report(&s),
            };
            match client_command(&client, cmd, cli.output).await {
                Ok(text) => {
                    print!("{text}");
                    EXIT_OK
                }
                Err(CliError::Usage(m)) => {
                    eprintln!("error: {m}");
                    EXIT_INVALID
                }
                Err(CliError::Status(s)) => report(&s),
            }
        }
    }
}

enum CliError {
    Usage(String),
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

fn one_lease(
    lease: Option<pb::Lease>,
    format: Format,
    summary: impl FnOnce(&pb::Lease) -> String,
) -> String {
    let lease = lease.unwrap_or_default();
    match format {
        Format::Table => summary(&lease),
        f => output::render(&output::lease_json(&lease), f),
    }
}

fn holder_line(verb: &str, l: &pb::Lease) -> String {
    let meta = l.metadata.clone().unwrap_or_default();
    let spec = l.spec.clone().unwrap_or_default();
    let status = l.status.clone().unwrap_or_default();
    format!(
        "{verb} {}/{} holder={} token={} expires={}\n",
        meta.namespace, meta.name, spec.holder_identity, status.fencing_token, status.expire_time
    )
}

async fn client_command(
    client: &Client,
    cmd: &Command,
    format: Format,
) -> Result<String, CliError> {
    let now = chrono::Utc::now();
    Ok(match cmd {
        Command::Serve(_)
        | Command::Watch { .. }
        | Command::Lock(_)
        | Command::Elect(_)
        | Command::Heartbeat(_) => unreachable!("handled by run"),
        Command::Acquire {
            lease,
            holder,
            duration,
            labels,
        } => {
            let (namespace, name) = split_lease(lease)?;
            let r = client
                .acquire(pb::AcquireRequest {
                    namespace,
                    name,
                    holder: holder.clone(),
                    lease_duration_seconds: *duration,
                    labels: parse_labels(labels)?,
                    request_id: String::new(),
                })
                .await?;
            let verb = if r.newly_acquired {
                "acquired"
            } else {
                "renewed"
            };
            one_lease(r.lease, format, |l| holder_line(verb, l))
        }
        Command::Renew {
            lease,
            holder,
            token,
        } => {
            let (namespace, name) = split_lease(lease)?;
            let r = client
                .renew(pb::RenewRequest {
                    namespace,
                    name,
                    holder: holder.clone(),
                    fencing_token: *token,
                    request_id: String::new(),
                })
                .await?;
            one_lease(r.lease, format, |l| holder_line("renewed", l))
        }
        Command::Release {
            lease,
            holder,
            token,
        } => {
            let (namespace, name) = split_lease(lease)?;
            let r = client
                .release(pb::ReleaseRequest {
                    namespace,
                    name,
                    holder: holder.clone(),
                    fencing_token: *token,
                    request_id: String::new(),
                })
                .await?;
            one_lease(r.lease, format, |l| {
                let m = l.metadata.clone().unwrap_or_default();
                format!("released {}/{}\n", m.namespace, m.name)
            })
        }
        Command::Get {
            lease: Some(lease),
            stale,
            ..
        } => {
            let (namespace, name) = split_lease(lease)?;
            let r = client
                .get(pb::GetRequest {
                    namespace,
                    name,
                    stale: *stale,
                })
                .await?;
            let l = r.lease.unwrap_or_default();
            match format {
                Format::Table => output::lease_table(std::slice::from_ref(&l), false, now),
                f => output::render(&output::lease_json(&l), f),
            }
        }
        Command::Get {
            lease: None,
            scope,
            stale,
        } => {
            let ns = scope.namespace();
            let (all_namespaces, selector) = (&scope.all_namespaces, &scope.selector);
            let mut items = Vec::new();
            let mut token = String::new();
            let mut revision = 0;
            // Page through everything; 500 per call keeps messages small.
            loop {
                let r = client
                    .list(pb::ListRequest {
                        namespace: ns.clone(),
                        label_selector: selector.clone(),
                        limit: 500,
                        continue_token: token,
                        stale: *stale,
                    })
                    .await?;
                if revision == 0 {
                    revision = r.revision;
                }
                items.extend(r.items);
                token = r.continue_token;
                if token.is_empty() {
                    break;
                }
            }
            match format {
                Format::Table if items.is_empty() => {
                    if *all_namespaces {
                        "No resources found\n".to_string()
                    } else {
                        format!("No resources found in {ns} namespace.\n")
                    }
                }
                Format::Table => output::lease_table(&items, *all_namespaces, now),
                f => output::render(&output::list_json(&items, revision, ""), f),
            }
        }
        Command::Delete {
            lease,
            resource_version,
        } => {
            let (namespace, name) = split_lease(lease)?;
            let r = client
                .delete(pb::DeleteRequest {
                    namespace,
                    name,
                    resource_version: *resource_version,
                    request_id: String::new(),
                })
                .await?;
            one_lease(r.lease, format, |l| {
                let m = l.metadata.clone().unwrap_or_default();
                format!("deleted {}/{}\n", m.namespace, m.name)
            })
        }
        Command::Status => {
            let s = client.status().await?;
            match format {
                Format::Table => {
                    let mut out = format!(
                        "node {} ({}), leader {} at {}, term {}, commit {}, applied {}, revision {}\n",
                        s.node_id,
                        s.state.to_lowercase(),
                        s.leader_id,
                        if s.leader_address.is_empty() { "-" } else { &s.leader_address },
                        s.term,
                        s.commit_index,
                        s.applied_index,
                        s.revision
                    );
                    out.push_str(&members_table(&s.members, s.leader_id));
                    out
                }
                f => output::render(&output::status_json(&s), f),
            }
        }
        Command::Member { action } => {
            let (members, leader) = match action {
                MemberAction::Add { id, address } => (
                    client
                        .add_member(pb::AddMemberRequest {
                            id: *id,
                            address: address.clone(),
                        })
                        .await?
                        .members,
                    0,
                ),
                MemberAction::Remove { id } => (
                    client
                        .remove_member(pb::RemoveMemberRequest { id: *id })
                        .await?
                        .members,
                    0,
                ),
                MemberAction::Replace { id, address } => (
                    client
                        .replace_member(pb::ReplaceMemberRequest {
                            id: *id,
                            address: address.clone().unwrap_or_default(),
                        })
                        .await?
                        .members,
                    0,
                ),
                MemberAction::List => {
                    let s = client.status().await?;
                    (s.members, s.leader_id)
                }
            };
            match format {
                Format::Table => members_table(&members, leader),
                f => output::render(&output::members_json(&members), f),
            }
        }
        Command::Health => {
            let s = client.status().await?;
            if s.state == "SHUTDOWN" || s.leader_id == 0 {
                return Err(tonic::Status::unavailable(format!(
                    "node {} has no leader",
                    s.node_id
                ))
                .into());
            }
            match format {
                Format::Table => format!(
                    "ok: node {} ({}), leader {}\n",
                    s.node_id,
                    s.state.to_lowercase(),
                    s.leader_id
                ),
                f => output::render(&output::status_json(&s), f),
            }
        }
    })
}

fn members_table(members: &[pb::Member], leader: u64) -> String {
    let mut rows = vec![vec!["ID".to_string(), "ADDRESS".into(), "ROLE".into()]];
    for m in members {
        let role = if m.id == leader && leader != 0 {
            "voter (leader)".to_string()
        } else {
            output::role(m).to_string()
        };
        rows.push(vec![m.id.to_string(), m.address.clone(), role]);
    }
    output::table(&rows)
}

fn secs_to_micros(s: u64) -> i64 {
    i64::try_from(s)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000)
}

// In release builds the fault switch does not exist, so the update below
// sets nothing there.
#[allow(clippy::needless_update)]
fn store_options(args: &ServeArgs) -> StoreOptions {
    #[allow(unused_mut)]
    let mut store = StoreOptions {
        history_max_events: args.history_revisions,
        history_max_age_micros: secs_to_micros(args.history_age_seconds),
        identity_gc_age_micros: secs_to_micros(args.identity_gc_age_seconds),
        ..Default::default()
    };
    #[cfg(debug_assertions)]
    {
        store.fault_put_trusts_client_times = args.fault_put_trusts_client_times;
        store.fault_skip_wal_sync = args.fault_skip_wal_sync;
    }
    store
}

async fn serve(args: ServeArgs) -> i32 {
    let store = store_options(&args);
    let peers = match parse_peers(&args.peers) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let cfg = ServeConfig {
        id: args.id,
        listen: args.listen,
        advertise: args.advertise,
        data_dir: args.data_dir,
        peers,
        initial_state: if args.join || args.initial_cluster_state == ClusterStateArg::Existing {
            InitialClusterState::Existing
        } else {
            InitialClusterState::New
        },
        timing: RaftTiming {
            heartbeat_ms: args.heartbeat_ms,
            election_timeout_min_ms: args.election_timeout_min_ms,
            election_timeout_max_ms: args.election_timeout_max_ms,
            snapshot_logs: args.snapshot_logs,
        },
        store,
        identity: (!args.no_identity_lease).then(|| IdentityConfig {
            hostname: args
                .hostname
                .clone()
                .map(|h| h.to_lowercase())
                .unwrap_or_else(crate::identity::system_hostname),
            lease_seconds: args.identity_lease_seconds,
            renew_every: Duration::from_secs_f64(args.identity_renew_seconds.max(0.1)),
        }),
    };
    if args.identity_lease_seconds <= 0 {
        eprintln!("error: --identity-lease-seconds must be positive");
        return EXIT_INVALID;
    }
    match server::serve(cfg, shutdown_signal()).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e:#}");
            tracing::error!("{e:#}");
            1
        }
    }
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject() {
        let p = parse_peers("1=127.0.0.1:7001, 2=127.0.0.1:7002").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[&2], "127.0.0.1:7002");
        assert!(parse_peers("").unwrap().is_empty());
        assert!(parse_peers("1=a:1,1=b:2").unwrap_err().contains("twice"));
        assert!(parse_peers("0=a:1").unwrap_err().contains("positive"));
        assert!(parse_peers("1=nohost").unwrap_err().contains("HOST:PORT"));
        assert!(parse_peers("x").unwrap_err().contains("ID=HOST:PORT"));
    }

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
