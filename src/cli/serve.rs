//! `leasehold serve`: its flags (each also from an environment variable)
//! and how they become the server's configuration.

use super::{EXIT_INVALID, EXIT_OK};
use crate::auth::tls::TlsFiles;
use crate::auth::AuthConfig;
use crate::identity::IdentityConfig;
use crate::raft::node::{InitialClusterState, RaftTiming};
use crate::server::{self, ServeConfig};
use crate::store::StoreOptions;
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Take the id from the hostname's trailing `-N` instead of --id: N + 1,
    /// so that StatefulSet pod `leasehold-0` is node 1 (the image has no
    /// shell to compute it). Reads --hostname if given, else the system's;
    /// only the first DNS label counts.
    #[arg(long, env = "LEASEHOLD_ID_FROM_HOSTNAME", conflicts_with = "id")]
    pub id_from_hostname: bool,
    /// Address to listen on for clients and peers: gRPC, and the Kubernetes
    /// Lease API over HTTP/1.1 (a kubeconfig's `server: http://ADDRESS`).
    #[arg(long, env = "LEASEHOLD_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Address others reach this node at (default: the listen address).
    /// `{id}` is replaced by the node id.
    #[arg(long, env = "LEASEHOLD_ADVERTISE")]
    pub advertise: Option<String>,
    /// A second, plaintext HTTP listener serving only `/metrics`, `/healthz`
    /// and `/readyz` (for Prometheus and kubelet probes, which cannot pass
    /// --client-cert-auth). Read-only and unauthenticated: keep it on a
    /// private interface.
    #[arg(long, env = "LEASEHOLD_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
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
    /// Serve at most this many watches at once (gRPC and Kubernetes
    /// together); one more is refused RESOURCE_EXHAUSTED (HTTP 429).
    #[arg(long, env = "LEASEHOLD_MAX_WATCHES", default_value_t = crate::api::limits::DEFAULT_MAX_WATCHES)]
    pub max_watches: usize,
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
    /// TLS: this node's certificate chain (PEM), served on --listen to
    /// clients and peers. With it the port speaks TLS only (HTTP/2 and
    /// HTTP/1.1 by ALPN) and --peer-trusted-ca-file is required. `{id}` is
    /// replaced by the node id (`/pki/node-{id}.crt`), as in the three
    /// other certificate and key paths.
    #[arg(long, env = "LEASEHOLD_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The private key of --cert-file (PEM; `{id}`: the node id).
    #[arg(long, env = "LEASEHOLD_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// CA bundle that signs client certificates: a certificate from it
    /// authenticates its CN as the user and each O as a group. Must not
    /// share a CA with --peer-trusted-ca-file.
    #[arg(long, env = "LEASEHOLD_TRUSTED_CA_FILE", requires = "cert_file")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse connections without a client (or peer) certificate at the
    /// TLS handshake (tokens alone are then not enough).
    #[arg(long, env = "LEASEHOLD_CLIENT_CERT_AUTH", requires = "cert_file")]
    pub client_cert_auth: bool,
    /// The certificate this node presents to peers (default: --cert-file).
    /// It needs the clientAuth extended key usage. `{id}`: the node id.
    #[arg(long, env = "LEASEHOLD_PEER_CERT_FILE", requires = "peer_key_file")]
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of --peer-cert-file (default: --key-file; `{id}`:
    /// the node id).
    #[arg(long, env = "LEASEHOLD_PEER_KEY_FILE", requires = "peer_cert_file")]
    pub peer_key_file: Option<PathBuf>,
    /// CA bundle that signs the members' certificates: only a certificate
    /// from it may call the peer Raft service or forward an identity.
    #[arg(long, env = "LEASEHOLD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Bearer tokens, kube-apiserver's format: token,user,uid,"group1,group2"
    /// per line. Needs TLS.
    #[arg(long, env = "LEASEHOLD_TOKEN_AUTH_FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// Authorization rules (YAML; see README "Securing a cluster"). With
    /// it every call is denied unless a rule allows it; without it every
    /// client may do anything. Needs TLS.
    #[arg(long, env = "LEASEHOLD_AUTHORIZATION_FILE")]
    pub authorization_file: Option<PathBuf>,
    /// Seconds between checks of the TLS, token and rules files for
    /// changes (SIGHUP checks at once).
    #[arg(
        long,
        env = "LEASEHOLD_RELOAD_INTERVAL_SECONDS",
        default_value_t = 10.0
    )]
    pub reload_interval_seconds: f64,
    /// On SIGTERM or ctrl-c, a leader first hands leadership to a caught-up
    /// follower (at most 3 s), so that clients wait for no election.
    /// `false` (or `0`) stops at once; the others then elect a leader
    /// after an election timeout.
    #[arg(
        long,
        env = "LEASEHOLD_TRANSFER_ON_SHUTDOWN",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub transfer_on_shutdown: bool,
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
    /// Fault injection for the upgrade test, in debug builds only: stamp
    /// and require this format version on peer messages instead of the
    /// build's own, playing a build of another format version (the data
    /// directory is still read as the build's own).
    #[cfg(debug_assertions)]
    #[arg(long, hide = true)]
    pub fault_format_version: Option<u32>,
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

/// The placeholder that `{id}`-expanding flags replace with the node id.
const ID_PLACEHOLDER: &str = "{id}";

/// Longest hostname looked at (a DNS name is at most 253 bytes).
const MAX_HOSTNAME: usize = 253;

/// The node id of a StatefulSet pod: the ordinal after the last `-` of the
/// hostname's first DNS label, plus one (ids are positive, ordinals start
/// at 0), so `leasehold-0` (or `leasehold-0.leasehold-peer.ns.svc`) is 1.
pub fn id_from_hostname(hostname: &str) -> Result<u64, String> {
    if hostname.len() > MAX_HOSTNAME {
        return Err(format!(
            "--id-from-hostname: the hostname is {} bytes long, more than {MAX_HOSTNAME}",
            hostname.len()
        ));
    }
    let label = hostname.split('.').next().unwrap_or_default();
    let ordinal = label
        .rsplit_once('-')
        .filter(|(name, n)| {
            !name.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        })
        .map(|(_, n)| n)
        .ok_or_else(|| {
            format!(
                "--id-from-hostname: hostname {hostname:?} does not end in -N (a StatefulSet \
                 pod ordinal such as leasehold-0, which is node 1); set --id instead"
            )
        })?;
    ordinal
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| {
            format!("--id-from-hostname: ordinal {ordinal} of hostname {hostname:?} is too large")
        })
}

/// `value` with every `{id}` replaced by `id`.
pub fn expand_id(value: &str, id: u64) -> String {
    value.replace(ID_PLACEHOLDER, &id.to_string())
}

/// A path with every `{id}` replaced. A path that is not UTF-8 is kept as
/// it is (a `{id}` in it stays, and the file is then not found under that
/// name, which the TLS loader reports).
fn expand_id_path(path: &mut Option<PathBuf>, id: u64) {
    if let Some(p) = path.as_mut() {
        if let Some(s) = p.to_str().filter(|s| s.contains(ID_PLACEHOLDER)) {
            *p = PathBuf::from(expand_id(s, id));
        }
    }
}

/// The node id (from --id or the hostname), with `{id}` expanded in
/// --advertise and the four certificate and key paths: one StatefulSet
/// template or one systemd unit then serves every node.
pub fn resolve_id(args: &mut ServeArgs) -> Result<u64, String> {
    let id = if args.id_from_hostname {
        let hostname = args
            .hostname
            .clone()
            .unwrap_or_else(crate::identity::system_hostname);
        id_from_hostname(&hostname)?
    } else {
        args.id
    };
    if let Some(a) = args.advertise.as_mut() {
        *a = expand_id(a, id);
    }
    for p in [
        &mut args.cert_file,
        &mut args.key_file,
        &mut args.peer_cert_file,
        &mut args.peer_key_file,
    ] {
        expand_id_path(p, id);
    }
    Ok(id)
}

/// The format version this node speaks to peers.
fn format_version(args: &ServeArgs) -> u32 {
    #[cfg(debug_assertions)]
    if let Some(v) = args.fault_format_version {
        return v;
    }
    let _ = args;
    crate::store::FORMAT_VERSION
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

/// The security flags as the server's configuration.
pub fn auth_config(args: &ServeArgs) -> Result<AuthConfig, String> {
    let tls = match (&args.cert_file, &args.key_file) {
        (Some(cert), Some(key)) => {
            let Some(peer_ca) = args.peer_trusted_ca_file.clone() else {
                return Err(
                    "--cert-file needs --peer-trusted-ca-file: the CA of the members' \
                            certificates, the only ones allowed to call the peer Raft service"
                        .into(),
                );
            };
            Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.trusted_ca_file.clone(),
                client_cert_auth: args.client_cert_auth,
                peer_cert: args.peer_cert_file.clone().unwrap_or_else(|| cert.clone()),
                peer_key: args.peer_key_file.clone().unwrap_or_else(|| key.clone()),
                peer_ca,
            })
        }
        _ => {
            if args.peer_trusted_ca_file.is_some() || args.peer_cert_file.is_some() {
                return Err(
                    "--peer-trusted-ca-file and --peer-cert-file need --cert-file and --key-file"
                        .into(),
                );
            }
            None
        }
    };
    Ok(AuthConfig {
        tls,
        token_file: args.token_auth_file.clone(),
        rules_file: args.authorization_file.clone(),
    })
}

/// `leasehold serve`: runs a node until SIGTERM or ctrl-c.
pub async fn serve(mut args: ServeArgs) -> i32 {
    let id = match resolve_id(&mut args) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let store = store_options(&args);
    let auth = match auth_config(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let reload_interval =
        match super::seconds("reload-interval-seconds", args.reload_interval_seconds) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                eprintln!("error: --reload-interval-seconds must be a positive number of seconds");
                return EXIT_INVALID;
            }
        };
    let peers = match parse_peers(&args.peers) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let format_version = format_version(&args);
    let cfg = ServeConfig {
        id,
        listen: args.listen,
        advertise: args.advertise,
        metrics_listen: args.metrics_listen,
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
        max_watches: args.max_watches,
        auth,
        reload_interval,
        transfer_on_shutdown: args.transfer_on_shutdown,
        format_version,
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
    fn id_from_a_statefulset_hostname() {
        assert_eq!(id_from_hostname("leasehold-0"), Ok(1));
        assert_eq!(id_from_hostname("leasehold-2"), Ok(3));
        assert_eq!(id_from_hostname("my-lease-store-41"), Ok(42));
        // Only the first label counts (a pod with setHostnameAsFQDN).
        assert_eq!(
            id_from_hostname("leasehold-1.leasehold-peer.default.svc.cluster.local"),
            Ok(2)
        );
        for bad in [
            "leasehold",
            "leasehold-",
            "-3",
            "leasehold-x",
            "leasehold-+1",
            "leasehold-1a",
            "node.leasehold-1",
            "",
        ] {
            let e = id_from_hostname(bad).unwrap_err();
            assert!(
                e.contains("--id-from-hostname") && e.contains("does not end in -N"),
                "{bad:?}: {e}"
            );
            assert!(e.contains(&format!("{bad:?}")), "names the hostname: {e}");
        }
        // u64::MAX is a valid ordinal but has no id after it.
        let e = id_from_hostname("leasehold-18446744073709551615").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = id_from_hostname(&format!("a-{}", "9".repeat(30))).unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = id_from_hostname(&format!("{}-1", "a".repeat(300))).unwrap_err();
        assert!(e.contains("more than 253"), "{e}");
    }

    /// `leasehold serve ARGS...` as parsed by the real command line.
    fn serve_args(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        use clap::Parser;
        let argv = ["leasehold", "serve"].iter().chain(args);
        match crate::cli::Cli::try_parse_from(argv)?.command {
            crate::cli::Command::Serve(a) => Ok(*a),
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn id_is_expanded_in_advertise_and_certificate_paths() {
        let mut a = serve_args(&[
            "--id-from-hostname",
            "--hostname",
            "leasehold-2",
            "--advertise",
            "leasehold-{id}.peer:7070",
            "--cert-file",
            "/pki/node-{id}.crt",
            "--key-file",
            "/pki/node-{id}.key",
            "--peer-cert-file",
            "/pki/peer-{id}-{id}.crt",
            "--peer-key-file",
            "/pki/peer.key",
            "--peer-trusted-ca-file",
            "/pki/{id}/ca.crt",
        ])
        .expect("parses");
        assert_eq!(resolve_id(&mut a), Ok(3));
        assert_eq!(a.advertise.as_deref(), Some("leasehold-3.peer:7070"));
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        assert_eq!(path(&a.cert_file).as_deref(), Some("/pki/node-3.crt"));
        assert_eq!(path(&a.key_file).as_deref(), Some("/pki/node-3.key"));
        assert_eq!(
            path(&a.peer_cert_file).as_deref(),
            Some("/pki/peer-3-3.crt")
        );
        assert_eq!(path(&a.peer_key_file).as_deref(), Some("/pki/peer.key"));
        // CA bundles are shared by every node: never expanded.
        assert_eq!(
            path(&a.peer_trusted_ca_file).as_deref(),
            Some("/pki/{id}/ca.crt")
        );
        let tls = auth_config(&a).expect("auth config").tls.expect("tls");
        assert_eq!(tls.cert, PathBuf::from("/pki/node-3.crt"));
        assert_eq!(tls.peer_key, PathBuf::from("/pki/peer.key"));

        // With --id, the same expansion with that id.
        let mut a = serve_args(&["--id", "7", "--advertise", "10.0.0.{id}:7070"]).expect("parses");
        assert_eq!(resolve_id(&mut a), Ok(7));
        assert_eq!(a.advertise.as_deref(), Some("10.0.0.7:7070"));
        assert!(a.cert_file.is_none());
    }

    #[test]
    fn id_from_hostname_refuses_a_bad_hostname_and_an_explicit_id() {
        let mut a = serve_args(&["--id-from-hostname", "--hostname", "db"]).expect("parses");
        let e = resolve_id(&mut a).unwrap_err();
        assert!(e.contains("\"db\" does not end in -N"), "{e}");
        let e = serve_args(&["--id", "2", "--id-from-hostname"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
    }

    #[test]
    fn metrics_listen_is_a_flag() {
        let a = serve_args(&["--metrics-listen", "0.0.0.0:9090"]).expect("parses");
        assert_eq!(a.metrics_listen.as_deref(), Some("0.0.0.0:9090"));
        assert!(serve_args(&[]).expect("parses").metrics_listen.is_none());
    }
}
