//! `leasehold certs`: the certificates, tokens and rules of a TLS cluster,
//! made by the binary itself because the docker image is `FROM scratch`
//! (no openssl, no shell) and a quick start should not need either.
//!
//! `certs init` makes two CAs, so that a user's certificate can never pass
//! for a peer's (a connection is a peer iff its chain verifies against the
//! peer roots alone, docs/design/security.md §3):
//! - `ca.crt`/`ca.key`, the cluster CA: signs node certificates; nodes
//!   trust it for peers (`--peer-trusted-ca-file`), clients for the server
//!   (`--cacert`);
//! - `client-ca.crt`/`client-ca.key`, the client CA: signs user
//!   certificates; nodes trust it for clients (`--trusted-ca-file`);
//! - `node-ID.crt`/`.key` per `--node`, `USER.crt`/`.key` per `--client`;
//! - `tokens.csv` (`--token-auth-file`, kube-apiserver's format) and a
//!   `kubeconfig-USER.yaml` per `--token-user`;
//! - `authz.yaml` (`--authorization-file`), a rule per group named.
//!
//! `certs issue` adds node or client certificates later, from the CAs in
//! the directory ([`Ca::from_pem`]).

use super::{EXIT_INVALID, EXIT_OK, EXIT_REFUSED};
use crate::auth::pki::{self, Ca, PkiError, Validity, MAX_CERT_GROUPS};
use crate::lease::validate::validate_dns_label;
use clap::{ArgGroup, Args, Subcommand};
use rustls::pki_types::ServerName;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The cluster CA's files (it signs node certificates).
const CLUSTER_CA: &str = "ca";
/// The client CA's files (it signs user certificates).
const CLIENT_CA: &str = "client-ca";
/// The group whose rule in `authz.yaml` allows everything.
pub const ADMIN_GROUP: &str = "leasehold:admins";
/// Every lease verb, which a group other than [`ADMIN_GROUP`] gets in its
/// own namespace (`admin`, membership changes, is not one).
const LEASE_VERBS: [&str; 8] = [
    "get", "list", "watch", "acquire", "renew", "release", "put", "delete",
];
/// A CA outlives the certificates it signs by default: `certs issue` can
/// then add nodes and users for years without a new CA.
const MIN_CA_DAYS: u32 = 3650;
/// Mode of files holding a secret (keys, tokens, kubeconfigs with tokens).
const SECRET: u32 = 0o600;
/// Mode of the other files.
const PUBLIC: u32 = 0o644;

/// `leasehold certs` commands.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: CertsAction,
}

/// `leasehold certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsAction {
    /// Make the CAs, node and client certificates, tokens, rules and
    /// kubeconfigs of a cluster in DIR. Does nothing if DIR/ca.crt exists,
    /// so that a second run never replaces the CA under running nodes.
    Init(InitArgs),
    /// Add node or client certificates, signed by the CAs in DIR.
    Issue(IssueArgs),
}

/// `leasehold certs init` flags.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write into (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// A node certificate, repeatable: `ID[=NAME[,NAME|IP...]]` writes
    /// node-ID.crt/.key, CN node-ID, usable as server and as client (peer),
    /// valid for the names and IPs given plus 127.0.0.1 and localhost.
    #[arg(long = "node", value_name = "ID=NAMES")]
    pub nodes: Vec<String>,
    /// A client certificate, repeatable: `NAME[:GROUP[,GROUP]]` writes
    /// NAME.crt/.key with CN NAME and one O per group (at most two).
    #[arg(long = "client", value_name = "NAME[:GROUPS]")]
    pub clients: Vec<String>,
    /// A bearer-token user, repeatable: `NAME[:GROUP[,GROUP...]]` adds a
    /// random token to tokens.csv and writes kubeconfig-NAME.yaml. (Not
    /// `--token`: that is the client's global flag for its own token.)
    #[arg(long = "token-user", value_name = "NAME[:GROUPS]")]
    pub token_users: Vec<String>,
    /// Days the node and client certificates are valid; the CAs get at
    /// least 3650. Each starts a day in the past (clock skew).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// The `server` of the kubeconfigs; `certificate-authority` is ca.crt,
    /// beside them (kubectl resolves it against the kubeconfig's directory).
    #[arg(long, default_value = "https://127.0.0.1:7071")]
    pub kube_server: String,
    /// Start over: delete DIR's *.crt, *.key, tokens.csv, authz.yaml and
    /// kubeconfig-*.yaml, then make new CAs and everything else.
    #[arg(long)]
    pub force: bool,
}

/// `leasehold certs issue` flags.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).multiple(true).args(["nodes", "clients"])))]
pub struct IssueArgs {
    /// Directory of `certs init` (ca.crt/.key for nodes, client-ca.crt/.key
    /// for clients); the new files are written there.
    #[arg(long)]
    pub dir: PathBuf,
    /// A node certificate, as for `certs init` (repeatable).
    #[arg(long = "node", value_name = "ID=NAMES")]
    pub nodes: Vec<String>,
    /// A client certificate, as for `certs init` (repeatable). A new group
    /// also needs a rule in authz.yaml.
    #[arg(long = "client", value_name = "NAME[:GROUPS]")]
    pub clients: Vec<String>,
    /// Days the certificates are valid (from a day in the past).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// Replace existing files of the same names.
    #[arg(long)]
    pub force: bool,
}

/// `leasehold certs`: 0 done (or nothing to do), 2 invalid input, 1 any
/// other failure (a file that exists, an unreadable CA, I/O).
pub fn run(args: CertsArgs) -> i32 {
    let done = match args.action {
        CertsAction::Init(a) => init(&a),
        CertsAction::Issue(a) => issue(&a),
    };
    match done {
        Ok(()) => EXIT_OK,
        Err(CertsError::Invalid(m)) => {
            eprintln!("error: {m}");
            EXIT_INVALID
        }
        Err(CertsError::Failed(m)) => {
            eprintln!("error: {m}");
            EXIT_REFUSED
        }
    }
}

/// Why `certs` failed, by exit code.
#[derive(Debug)]
enum CertsError {
    /// Bad flags (exit 2).
    Invalid(String),
    /// Anything else (exit 1).
    Failed(String),
}

impl From<PkiError> for CertsError {
    fn from(e: PkiError) -> Self {
        match e {
            PkiError::Invalid(m) => CertsError::Invalid(m),
            e => CertsError::Failed(e.to_string()),
        }
    }
}

/// A `--node` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeSpec {
    id: u64,
    names: Vec<String>,
}

impl NodeSpec {
    /// Its files' stem and its CN.
    fn stem(&self) -> String {
        format!("node-{}", self.id)
    }
}

/// A `--client` or `--token-user` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UserSpec {
    name: String,
    groups: Vec<String>,
}

/// Parses `ID[=NAME[,NAME|IP...]]`.
fn parse_node(spec: &str) -> Result<NodeSpec, String> {
    let bad = |why: String| format!("--node {spec:?}: {why} (expected ID=NAME[,NAME|IP...])");
    let (id, names) = spec.split_once('=').unwrap_or((spec, ""));
    let id = match id.parse::<u64>() {
        Ok(id) if id > 0 => id,
        _ => return Err(bad(format!("{id:?} is not a positive node id"))),
    };
    let mut out: Vec<String> = Vec::new();
    for name in names.split(',').filter(|n| !n.is_empty()) {
        if ServerName::try_from(name).is_err() {
            return Err(bad(format!(
                "{name:?} is neither an IP address nor a DNS name"
            )));
        }
        if !out.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            out.push(name.to_string());
        }
    }
    Ok(NodeSpec { id, names: out })
}

/// Parses `NAME[:GROUP[,GROUP...]]` of `--FLAG`. The name ends at the first
/// colon, so groups may contain colons (`leasehold:admins`) and names may
/// not. A name becomes a file name (NAME.crt, kubeconfig-NAME.yaml), so it
/// is limited to `[A-Za-z0-9._@+-]`, and `ca`, `client-ca` and `node-N`
/// are taken. A group must not hold a comma (the separator here and in
/// tokens.csv), a quote, whitespace or a control character.
fn parse_user(flag: &str, spec: &str) -> Result<UserSpec, String> {
    let bad = |why: String| format!("--{flag} {spec:?}: {why} (expected NAME[:GROUP[,GROUP]])");
    let (name, groups) = match spec.split_once(':') {
        Some((name, groups)) => (name, Some(groups)),
        None => (spec, None),
    };
    if name.is_empty() || name.len() > 64 {
        return Err(bad("the name must have 1 to 64 characters".into()));
    }
    if name.starts_with(['.', '-'])
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c))
    {
        return Err(bad(format!(
            "the name {name:?} may hold only letters, digits and ._@+- and must not start with . or -"
        )));
    }
    let is_node = name
        .strip_prefix("node-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if name == CLUSTER_CA || name == CLIENT_CA || is_node {
        return Err(bad(format!(
            "the name {name:?} is taken by the CA or node files"
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for group in groups.into_iter().flat_map(|g| g.split(',')) {
        if group.is_empty() || group.len() > 64 {
            return Err(bad("a group must have 1 to 64 characters".into()));
        }
        if group
            .chars()
            .any(|c| c == '"' || c.is_whitespace() || c.is_control())
        {
            return Err(bad(format!(
                "the group {group:?} holds a quote, a space or a control character"
            )));
        }
        if out.iter().any(|g| g == group) {
            return Err(bad(format!("the group {group:?} is given twice")));
        }
        out.push(group.to_string());
    }
    Ok(UserSpec {
        name: name.to_string(),
        groups: out,
    })
}

/// Every flag of a kind parsed, refusing a node id or a name given twice.
fn parse_nodes(specs: &[String]) -> Result<Vec<NodeSpec>, String> {
    let mut out: Vec<NodeSpec> = Vec::new();
    for s in specs {
        let node = parse_node(s)?;
        if out.iter().any(|n| n.id == node.id) {
            return Err(format!("--node {s:?}: node {} is given twice", node.id));
        }
        out.push(node);
    }
    Ok(out)
}

/// `--client` flags parsed: a certificate holds at most two groups.
fn parse_clients(specs: &[String]) -> Result<Vec<UserSpec>, String> {
    let clients = parse_users("client", specs)?;
    if let Some(c) = clients.iter().find(|c| c.groups.len() > MAX_CERT_GROUPS) {
        return Err(format!(
            "--client {}: {} groups, and a certificate from `leasehold certs` holds at most \
             {MAX_CERT_GROUPS}; use --token-user for this user, or issue the certificate with openssl",
            c.name,
            c.groups.len()
        ));
    }
    Ok(clients)
}

/// `--FLAG` user flags parsed, refusing a name given twice.
fn parse_users(flag: &str, specs: &[String]) -> Result<Vec<UserSpec>, String> {
    let mut out: Vec<UserSpec> = Vec::new();
    for s in specs {
        let user = parse_user(flag, s)?;
        if out.iter().any(|u| u.name == user.name) {
            return Err(format!("--{flag} {s:?}: {:?} is given twice", user.name));
        }
        out.push(user);
    }
    Ok(out)
}

/// `leasehold certs init`.
fn init(args: &InitArgs) -> Result<(), CertsError> {
    let nodes = parse_nodes(&args.nodes).map_err(CertsError::Invalid)?;
    let clients = parse_clients(&args.clients).map_err(CertsError::Invalid)?;
    let token_users = parse_users("token-user", &args.token_users).map_err(CertsError::Invalid)?;
    if !(args.kube_server.starts_with("https://") || args.kube_server.starts_with("http://")) {
        return Err(CertsError::Invalid(format!(
            "--kube-server {:?} must be an https:// URL",
            args.kube_server
        )));
    }
    let dir = &args.dir;
    let marker = dir.join(format!("{CLUSTER_CA}.crt"));
    if marker.exists() && !args.force {
        println!(
            "{} exists: nothing written (--force starts over with new CAs)",
            marker.display()
        );
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CertsError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    if args.force {
        remove_generated(dir)?;
    }

    let leaf = Validity::days(args.days);
    let ca_validity = Validity::days(args.days.max(MIN_CA_DAYS));
    let cluster_ca = Ca::new("leasehold-ca", ca_validity)?;
    let client_ca = Ca::new("leasehold-client-ca", ca_validity)?;
    let mut written = Vec::new();
    // ca.crt is written last: it is the marker of a finished init, so an
    // init that failed half-way is redone by the next one.
    write(
        dir,
        &format!("{CLUSTER_CA}.key"),
        cluster_ca.key_pem(),
        SECRET,
        &mut written,
    )?;
    write_pair(
        dir,
        CLIENT_CA,
        client_ca.cert_pem(),
        client_ca.key_pem(),
        &mut written,
    )?;
    for node in &nodes {
        let pem = cluster_ca.issue_node(&node.stem(), &node.names, leaf)?;
        write_pair(dir, &node.stem(), &pem.cert, &pem.key, &mut written)?;
    }
    for client in &clients {
        let pem = client_ca.issue_client(&client.name, &client.groups, leaf)?;
        write_pair(dir, &client.name, &pem.cert, &pem.key, &mut written)?;
    }
    let mut csv = String::new();
    for user in &token_users {
        let token = pki::random_token()?;
        csv.push_str(&token_line(&token, user));
        let kubeconfig = kubeconfig(
            &args.kube_server,
            &format!("{CLUSTER_CA}.crt"),
            user,
            &token,
        );
        write(
            dir,
            &format!("kubeconfig-{}.yaml", user.name),
            &kubeconfig,
            SECRET,
            &mut written,
        )?;
    }
    write(dir, "tokens.csv", &csv, SECRET, &mut written)?;
    let groups: BTreeSet<&str> = clients
        .iter()
        .chain(&token_users)
        .flat_map(|u| u.groups.iter().map(String::as_str))
        .collect();
    for g in &groups {
        if *g != ADMIN_GROUP && validate_dns_label("namespace", g).is_err() {
            eprintln!(
                "warning: group {g:?} is not a namespace name: its rule in authz.yaml allows nothing"
            );
        }
    }
    write(
        dir,
        "authz.yaml",
        &authz_yaml(&groups),
        PUBLIC,
        &mut written,
    )?;
    write(
        dir,
        &format!("{CLUSTER_CA}.crt"),
        cluster_ca.cert_pem(),
        PUBLIC,
        &mut written,
    )?;
    print_written(dir, &written);
    Ok(())
}

/// `leasehold certs issue`.
fn issue(args: &IssueArgs) -> Result<(), CertsError> {
    let nodes = parse_nodes(&args.nodes).map_err(CertsError::Invalid)?;
    let clients = parse_clients(&args.clients).map_err(CertsError::Invalid)?;
    let dir = &args.dir;
    let stems: Vec<String> = nodes
        .iter()
        .map(NodeSpec::stem)
        .chain(clients.iter().map(|c| c.name.clone()))
        .collect();
    if !args.force {
        let existing: Vec<String> = stems
            .iter()
            .flat_map(|s| [format!("{s}.crt"), format!("{s}.key")])
            .map(|f| dir.join(f))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(CertsError::Failed(format!(
                "{} already exist; --force replaces them",
                existing.join(", ")
            )));
        }
    }
    let leaf = Validity::days(args.days);
    let mut written = Vec::new();
    if !nodes.is_empty() {
        let ca = load_ca(dir, CLUSTER_CA)?;
        for node in &nodes {
            let pem = ca.issue_node(&node.stem(), &node.names, leaf)?;
            write_pair(dir, &node.stem(), &pem.cert, &pem.key, &mut written)?;
        }
    }
    if !clients.is_empty() {
        let ca = load_ca(dir, CLIENT_CA)?;
        for client in &clients {
            let pem = ca.issue_client(&client.name, &client.groups, leaf)?;
            write_pair(dir, &client.name, &pem.cert, &pem.key, &mut written)?;
        }
    }
    print_written(dir, &written);
    // A rule is what gives a group any right: say so when one is missing.
    let rules = std::fs::read_to_string(dir.join("authz.yaml")).unwrap_or_default();
    for g in clients.iter().flat_map(|c| &c.groups) {
        if !rules.contains(&format!("\"group:{g}\"")) {
            eprintln!(
                "note: {} has no rule for group {g:?}; add one to let its members do anything",
                dir.join("authz.yaml").display()
            );
        }
    }
    Ok(())
}

/// The CA `STEM.crt`/`STEM.key` in `dir`.
fn load_ca(dir: &Path, stem: &str) -> Result<Ca, CertsError> {
    let read = |name: String| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map_err(|e| CertsError::Failed(format!("cannot read {}: {e}", path.display())))
    };
    let cert = read(format!("{stem}.crt"))?;
    let key = read(format!("{stem}.key"))?;
    Ca::from_pem(&cert, &key).map_err(|e| {
        CertsError::Failed(format!(
            "{}: {e}",
            dir.join(format!("{stem}.crt")).display()
        ))
    })
}

/// Writes `STEM.crt` (0644) and `STEM.key` (0600).
fn write_pair(
    dir: &Path,
    stem: &str,
    cert: &str,
    key: &str,
    written: &mut Vec<String>,
) -> Result<(), CertsError> {
    write(dir, &format!("{stem}.key"), key, SECRET, written)?;
    write(dir, &format!("{stem}.crt"), cert, PUBLIC, written)
}

/// Writes `dir/name` with `mode`, through a new temporary file renamed over
/// it: the mode of a file is set only when it is created, so overwriting a
/// key in place could leave it readable by others; and a reader never sees
/// half a file.
fn write(
    dir: &Path,
    name: &str,
    contents: &str,
    mode: u32,
    written: &mut Vec<String>,
) -> Result<(), CertsError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let failed =
        |e: std::io::Error| CertsError::Failed(format!("cannot write {}: {e}", path.display()));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(failed)?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    std::fs::rename(&tmp, &path).map_err(failed)?;
    written.push(name.to_string());
    Ok(())
}

/// `--force`: deletes what an earlier init may have written, so that no
/// certificate of the old CAs is left beside the new ones.
fn remove_generated(dir: &Path) -> Result<(), CertsError> {
    let failed =
        |e: std::io::Error| CertsError::Failed(format!("cannot clean {}: {e}", dir.display()));
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.ends_with(".crt")
            || name.ends_with(".key")
            || name == "tokens.csv"
            || name == "authz.yaml"
            || (name.starts_with("kubeconfig-") && name.ends_with(".yaml"))
            || (name.starts_with('.') && name.ends_with(".tmp"));
        if ours && entry.file_type().map_err(failed)?.is_file() {
            std::fs::remove_file(entry.path()).map_err(failed)?;
        }
    }
    Ok(())
}

/// One line of kube-apiserver's token file: `token,user,uid,"g1,g2"`. The
/// uid is the user name; the groups column is left out when there are none.
fn token_line(token: &str, user: &UserSpec) -> String {
    let mut line = format!("{token},{},{}", user.name, user.name);
    if !user.groups.is_empty() {
        let _ = write!(line, ",\"{}\"", user.groups.join(","));
    }
    line.push('\n');
    line
}

/// `s` as a YAML double-quoted scalar (a JSON string is one).
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The rules for `groups`. `leasehold:admins` may do everything; any
/// other group may use leases (every lease verb, not `admin`) in the one
/// namespace named like the group: a team's own namespace, default deny
/// elsewhere. A broader grant is an edit of the file, not a default.
fn authz_yaml(groups: &BTreeSet<&str>) -> String {
    let mut out = String::from(
        "# Written by `leasehold certs init` (--authorization-file). Default deny: a\n\
         # request is allowed iff some rule matches it. Group leasehold:admins may do\n\
         # everything; any other group may use leases in the namespace named like it.\n",
    );
    if groups.is_empty() {
        out.push_str("# No group was named, so nothing is allowed.\nrules: []\n");
        return out;
    }
    out.push_str("rules:\n");
    let verbs = LEASE_VERBS.map(quoted).join(", ");
    for g in groups {
        let subject = quoted(&format!("group:{g}"));
        if *g == ADMIN_GROUP {
            let _ = write!(
                out,
                "  - subjects: [{subject}]\n    verbs: [\"*\"]\n    namespaces: [\"*\"]\n"
            );
        } else {
            let _ = write!(
                out,
                "  - subjects: [{subject}]\n    verbs: [{verbs}]\n    namespaces: [{}]\n",
                quoted(g)
            );
        }
    }
    out
}

/// A kubeconfig for a token user. A relative `certificate-authority` is
/// resolved against the kubeconfig's own directory by kubectl and the
/// Python client, so the directory can be moved or mounted elsewhere.
fn kubeconfig(server: &str, ca_file: &str, user: &UserSpec, token: &str) -> String {
    format!(
        "# Written by `leasehold certs init`: user {name} with a bearer token.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: leasehold\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n\
         - name: {name}\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: leasehold\n  context:\n    cluster: leasehold\n    user: {name}\n\
         current-context: leasehold\n",
        server = quoted(server),
        ca = quoted(ca_file),
        name = quoted(&user.name),
        token = quoted(token),
    )
}

/// Lists what was written.
fn print_written(dir: &Path, written: &[String]) {
    println!("wrote in {}: {}", dir.display(), written.join(" "));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn init_args(dir: &Path) -> InitArgs {
        InitArgs {
            dir: dir.to_path_buf(),
            nodes: strings(&["1=node1,172.28.0.11", "2=node2,172.28.0.12"]),
            clients: strings(&["chaos:leasehold:admins", "alice:team-a,ops"]),
            token_users: strings(&["kubectl:leasehold:admins", "bob:team-b,x,y"]),
            days: 365,
            kube_server: "https://127.0.0.1:7071".into(),
            force: false,
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn node_specs_parse_and_bad_ones_name_the_flag() {
        assert_eq!(
            parse_node("1=node1,172.28.0.11,node1").unwrap(),
            NodeSpec {
                id: 1,
                names: strings(&["node1", "172.28.0.11"])
            }
        );
        assert_eq!(parse_node("7").unwrap().names, Vec::<String>::new());
        for bad in ["0=a", "x=a", "=a", "1=bad name", "-1=a", ""] {
            let e = parse_node(bad).unwrap_err();
            assert!(e.starts_with("--node "), "{bad}: {e}");
        }
        let e = parse_nodes(&strings(&["1=a", "1=b"])).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn user_specs_split_at_the_first_colon() {
        assert_eq!(
            parse_user("client", "chaos:leasehold:admins").unwrap(),
            UserSpec {
                name: "chaos".into(),
                groups: strings(&["leasehold:admins"])
            }
        );
        assert_eq!(
            parse_user("token-user", "bob:a,b,c").unwrap().groups,
            strings(&["a", "b", "c"])
        );
        assert!(parse_user("client", "carol").unwrap().groups.is_empty());
        for bad in [
            "",
            ":g",
            "a/b",
            ".x",
            "-x",
            "ca",
            "client-ca",
            "node-3",
            "a:",
            "a:g,",
            "a:g,g",
            "a:x y",
            "a:\"q\"",
        ] {
            let e = parse_user("client", bad).unwrap_err();
            assert!(e.starts_with("--client "), "{bad:?}: {e}");
        }
        assert!(parse_user("client", "node-x").is_ok());
        let e = parse_clients(&strings(&["dan:a,b,c"])).unwrap_err();
        assert!(
            e.contains("--client dan") && e.contains("--token-user"),
            "{e}"
        );
        let e = parse_users("token-user", &strings(&["a:x", "a:y"])).unwrap_err();
        assert!(e.starts_with("--token-user") && e.contains("twice"), "{e}");
    }

    #[test]
    fn init_writes_every_file_with_secret_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        init(&init_args(&dir)).unwrap();
        let secret = [
            "ca.key",
            "client-ca.key",
            "node-1.key",
            "node-2.key",
            "chaos.key",
            "alice.key",
            "tokens.csv",
            "kubeconfig-kubectl.yaml",
            "kubeconfig-bob.yaml",
        ];
        let public = [
            "ca.crt",
            "client-ca.crt",
            "node-1.crt",
            "node-2.crt",
            "chaos.crt",
            "alice.crt",
            "authz.yaml",
        ];
        for f in secret {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        for f in public {
            assert_eq!(mode(&dir.join(f)), 0o644, "{f}");
        }
        let count = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(
            count,
            secret.len() + public.len(),
            "no temporary file is left"
        );

        // The CAs in the directory issue more (what `certs issue` does).
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        Ca::from_pem(&read("ca.crt"), &read("ca.key")).unwrap();
        Ca::from_pem(&read("client-ca.crt"), &read("client-ca.key")).unwrap();

        let tokens = read("tokens.csv");
        let lines: Vec<&str> = tokens.lines().collect();
        assert_eq!(lines.len(), 2);
        let (token, rest) = lines[0].split_once(',').unwrap();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(rest, "kubectl,kubectl,\"leasehold:admins\"");
        assert!(lines[1].ends_with(",bob,bob,\"team-b,x,y\""));

        let kube: serde_yaml::Value =
            serde_yaml::from_str(&read("kubeconfig-kubectl.yaml")).unwrap();
        assert_eq!(kube["users"][0]["user"]["token"].as_str(), Some(token));
        assert_eq!(
            kube["clusters"][0]["cluster"]["certificate-authority"].as_str(),
            Some("ca.crt")
        );
        assert_eq!(
            kube["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:7071")
        );

        let authz: serde_yaml::Value = serde_yaml::from_str(&read("authz.yaml")).unwrap();
        let rules = authz["rules"].as_sequence().unwrap();
        let rule = |g: &str| {
            rules
                .iter()
                .find(|r| r["subjects"][0].as_str() == Some(&format!("group:{g}")))
                .unwrap_or_else(|| panic!("no rule for {g}"))
                .clone()
        };
        assert_eq!(
            rules.len(),
            6,
            "leasehold:admins, team-a, ops, team-b, x, y: {rules:?}"
        );
        assert_eq!(rule("leasehold:admins")["verbs"][0].as_str(), Some("*"));
        assert_eq!(
            rule("leasehold:admins")["namespaces"][0].as_str(),
            Some("*")
        );
        let team = rule("team-a");
        assert_eq!(team["namespaces"].as_sequence().unwrap().len(), 1);
        assert_eq!(team["namespaces"][0].as_str(), Some("team-a"));
        let verbs: Vec<&str> = team["verbs"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(verbs, LEASE_VERBS);
    }

    #[test]
    fn a_second_init_without_force_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        init(&init_args(&dir)).unwrap();
        let snapshot = |d: &Path| {
            let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect();
            files.sort();
            files
        };
        let before = snapshot(&dir);
        let mut again = init_args(&dir);
        again.nodes = strings(&["9=node9"]);
        assert_eq!(run_init(again), EXIT_OK);
        assert_eq!(snapshot(&dir), before);

        // --force starts over: new CA, and the old node files are gone.
        let mut force = init_args(&dir);
        force.nodes = strings(&["9=node9"]);
        force.force = true;
        assert_eq!(run_init(force), EXIT_OK);
        let after = snapshot(&dir);
        let names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"node-9.crt") && !names.contains(&"node-1.crt"),
            "{names:?}"
        );
        let ca = |files: &[(String, Vec<u8>)]| {
            files.iter().find(|(n, _)| n == "ca.crt").unwrap().1.clone()
        };
        assert_ne!(ca(&after), ca(&before));
    }

    fn run_init(args: InitArgs) -> i32 {
        run(CertsArgs {
            action: CertsAction::Init(args),
        })
    }

    #[test]
    fn bad_input_exits_2_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let mut args = init_args(&dir);
        args.clients = strings(&["eve:a,b,c"]);
        assert_eq!(run_init(args), EXIT_INVALID);
        let mut args = init_args(&dir);
        args.kube_server = "127.0.0.1:7071".into();
        assert_eq!(run_init(args), EXIT_INVALID);
        assert!(!dir.exists());
    }

    #[test]
    fn issue_adds_certificates_from_the_directory_cas() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        init(&init_args(&dir)).unwrap();
        let issue_args = |nodes: &[&str], clients: &[&str], force| IssueArgs {
            dir: dir.clone(),
            nodes: strings(nodes),
            clients: strings(clients),
            days: 30,
            force,
        };
        issue(&issue_args(&["4=node4,10.0.0.4"], &["frank:team-f"], false)).unwrap();
        assert_eq!(mode(&dir.join("node-4.key")), 0o600);
        assert_eq!(mode(&dir.join("frank.key")), 0o600);
        let before = std::fs::read(dir.join("node-4.crt")).unwrap();
        // Existing files are refused (exit 1) unless --force.
        let refused = issue(&issue_args(&["4=node4"], &[], false)).unwrap_err();
        assert!(
            matches!(refused, CertsError::Failed(ref m) if m.contains("--force")),
            "{refused:?}"
        );
        assert_eq!(std::fs::read(dir.join("node-4.crt")).unwrap(), before);
        issue(&issue_args(&["4=node4"], &[], true)).unwrap();
        assert_ne!(std::fs::read(dir.join("node-4.crt")).unwrap(), before);
        // No CA there.
        let empty = tempfile::tempdir().unwrap();
        let mut args = issue_args(&["5"], &[], false);
        args.dir = empty.path().to_path_buf();
        assert!(matches!(issue(&args), Err(CertsError::Failed(_))));
    }

    #[test]
    fn certs_parses_on_the_command_line() {
        use clap::{CommandFactory, Parser};
        super::super::Cli::command().debug_assert();
        let cli = super::super::Cli::try_parse_from([
            "leasehold",
            "certs",
            "init",
            "--dir",
            "/pki",
            "--node",
            "1=node1,172.28.0.11",
            "--client",
            "chaos:leasehold:admins",
            "--token-user",
            "kubectl:leasehold:admins",
            "--days",
            "30",
        ])
        .unwrap();
        let super::super::Command::Certs(CertsArgs {
            action: CertsAction::Init(a),
        }) = cli.command
        else {
            panic!("not certs init");
        };
        assert_eq!(a.token_users, strings(&["kubectl:leasehold:admins"]));
        assert_eq!(a.days, 30);
        assert!(
            super::super::Cli::try_parse_from(["leasehold", "certs", "issue", "--dir", "d"])
                .is_err()
        );
    }
}
