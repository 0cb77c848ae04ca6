//! Authentication and authorization: TLS on the node's port, who a caller
//! is, and what it may do.
//!
//! Layout:
//! - `identity.rs`: [`identity::Identity`] (user and groups) and what the
//!   authentication layer attaches to a request ([`identity::Caller`]).
//! - `subject.rs`: the CN and O of a verified certificate.
//! - `tokens.rs`: the static bearer-token file (kube-apiserver's format).
//! - `rules.rs`: the authorization rules (default deny).
//! - `tls.rs`: the server's TLS configuration and the accept loop that
//!   classifies each connection (client, peer) once, at the handshake.
//! - `layer.rs`: the one middleware in front of every route: identity,
//!   header stripping, the peer-only Raft service.
//! - `reload.rs`: re-reading certificates, tokens and rules without a
//!   restart.
//! - `pki.rs`: certificates for `leasehold certs` and the tests.
//!
//! This module needs only `types`-level things (no store, no Raft), so
//! `raft` (the peer channels) and `api` (the checks) can both name it.

pub mod identity;
pub mod pki;
pub mod reload;
pub mod rules;
pub mod subject;
pub mod tls;
pub mod tokens;

use identity::{Caller, Identity};
use rules::{Access, Rules, Verb};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tls::{TlsFiles, TlsState};
use tokens::Tokens;

/// Request metadata carrying the identity a follower forwards to the
/// leader; honoured only on a peer's connection (`api::authn`).
pub const IDENTITY_HEADER: &str = "x-leasehold-identity-bin";

/// What `leasehold serve` was told about security.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// TLS files; `None` serves plaintext.
    pub tls: Option<TlsFiles>,
    /// Bearer tokens (`--token-auth-file`).
    pub token_file: Option<PathBuf>,
    /// Authorization rules (`--authorization-file`); `None` = off.
    pub rules_file: Option<PathBuf>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No acceptable credential (or a bad one).
    Unauthenticated(String),
    /// Authenticated, but no rule allows it.
    Forbidden {
        /// The user.
        user: String,
        /// The verb.
        verb: Verb,
        /// The namespace (`None`: all).
        namespace: Option<String>,
        /// The lease name (`None`: the collection).
        name: Option<String>,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unauthenticated(m) => f.write_str(m),
            Refusal::Forbidden {
                user,
                verb: Verb::Admin,
                ..
            } => write!(
                f,
                "user {user:?} may not administer the cluster (verb admin)"
            ),
            Refusal::Forbidden {
                user,
                verb,
                namespace,
                name,
            } => {
                write!(f, "user {user:?} may not {verb} ")?;
                match name {
                    Some(n) => write!(f, "lease {n:?}")?,
                    None => write!(f, "leases")?,
                }
                match namespace {
                    Some(ns) => write!(f, " in namespace {ns:?}"),
                    None => write!(f, " in all namespaces"),
                }
            }
        }
    }
}

/// The node's authentication and authorization state: TLS material,
/// tokens and rules, each swapped whole by the reloader.
pub struct Auth {
    /// The TLS material; `None` when serving plaintext.
    pub tls: Option<Arc<TlsState>>,
    tokens: RwLock<Option<Arc<Tokens>>>,
    rules: RwLock<Option<Arc<Rules>>>,
    /// Bumped whenever tokens or rules change, so that running watches
    /// re-check their scope.
    generation: AtomicU64,
    /// Where everything was read from.
    pub config: AuthConfig,
}

/// A bounded UTF-8 file, errors naming it.
fn read_text(path: &std::path::Path, max: u64) -> Result<String, String> {
    let bytes = tls::read_bounded(path, max)?;
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))
}

fn read_tokens(path: &std::path::Path) -> Result<Tokens, String> {
    Tokens::parse(&read_text(path, tokens::MAX_TOKEN_FILE)?)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn read_rules(path: &std::path::Path) -> Result<Rules, String> {
    Rules::parse(&read_text(path, rules::MAX_RULES_FILE)?)
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl Auth {
    /// Plaintext, everyone anonymous, everything allowed: the single-node
    /// quick start (and tests that do not test security).
    pub fn disabled() -> Auth {
        Auth {
            tls: None,
            tokens: RwLock::new(None),
            rules: RwLock::new(None),
            generation: AtomicU64::new(0),
            config: AuthConfig::default(),
        }
    }

    /// Reads and validates everything `config` names. Tokens and rules need
    /// TLS: a token sent in clear is anyone's, and without authenticated
    /// peers a forged Raft message could bypass any rule.
    pub fn new(config: AuthConfig) -> Result<Auth, String> {
        if config.tls.is_none() {
            if config.token_file.is_some() {
                return Err("--token-auth-file needs TLS (--cert-file and --key-file): \
                            tokens sent in clear would be anyone's"
                    .into());
            }
            if config.rules_file.is_some() {
                return Err(
                    "--authorization-file needs TLS (--cert-file and --key-file): \
                            without it no caller can be authenticated"
                        .into(),
                );
            }
        }
        let tls = config
            .tls
            .clone()
            .map(TlsState::new)
            .transpose()?
            .map(Arc::new);
        let tokens = config.token_file.as_deref().map(read_tokens).transpose()?;
        let rules = config.rules_file.as_deref().map(read_rules).transpose()?;
        Ok(Auth {
            tls,
            tokens: RwLock::new(tokens.map(Arc::new)),
            rules: RwLock::new(rules.map(Arc::new)),
            generation: AtomicU64::new(0),
            config,
        })
    }

    /// Whether authorization rules are enforced.
    pub fn authorization_on(&self) -> bool {
        self.rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The generation of tokens and rules (see [`Auth::reload_tokens`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The identity of an `Authorization` header value. `Ok(None)`: no
    /// token file, so the header means nothing here. An unknown token or
    /// another scheme is refused (401), as kube-apiserver does.
    pub fn token_identity(&self, header: &str) -> Result<Option<Identity>, Refusal> {
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(tokens) = tokens else {
            return Ok(None);
        };
        let Some(token) = tokens::bearer(header) else {
            return Err(Refusal::Unauthenticated(
                "the Authorization header must be \"Bearer <token>\"".into(),
            ));
        };
        match tokens.lookup(token) {
            Some(id) => Ok(Some(id.clone())),
            None => Err(Refusal::Unauthenticated("invalid bearer token".into())),
        }
    }

    /// Whether `caller` may do `access`. With authorization off everything
    /// is allowed. A refused anonymous caller is told to authenticate
    /// (UNAUTHENTICATED); a refused identity is FORBIDDEN.
    pub fn authorize(&self, caller: &Caller, access: Access<'_>) -> Result<(), Refusal> {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(rules) = rules else {
            return Ok(());
        };
        if rules.allows(&caller.identity, access) {
            return Ok(());
        }
        if caller.identity.is_anonymous() {
            return Err(Refusal::Unauthenticated(
                "a client certificate or bearer token is required".into(),
            ));
        }
        Err(Refusal::Forbidden {
            user: caller.identity.user.clone(),
            verb: access.verb,
            namespace: access.namespace.map(str::to_string),
            name: access.name.map(str::to_string),
        })
    }

    /// Calls any authenticated caller may make (`Status`): with
    /// authorization on, anonymous callers are refused.
    pub fn require_authenticated(&self, caller: &Caller) -> Result<(), Refusal> {
        if self.authorization_on() && caller.identity.is_anonymous() {
            return Err(Refusal::Unauthenticated(
                "a client certificate or bearer token is required".into(),
            ));
        }
        Ok(())
    }

    /// Re-reads the token file; on error keeps the old tokens. Returns
    /// whether anything was read.
    pub fn reload_tokens(&self) -> Result<bool, String> {
        self.reload(&self.config.token_file, read_tokens, &self.tokens)
    }

    /// Re-reads the rules file; on error keeps the old rules (never fails
    /// open).
    pub fn reload_rules(&self) -> Result<bool, String> {
        self.reload(&self.config.rules_file, read_rules, &self.rules)
    }

    /// Reads `path` with `read` into `slot` whole, or changes nothing;
    /// a change bumps the generation running watches re-check on.
    fn reload<T>(
        &self,
        path: &Option<PathBuf>,
        read: fn(&std::path::Path) -> Result<T, String>,
        slot: &RwLock<Option<Arc<T>>>,
    ) -> Result<bool, String> {
        let Some(path) = path else {
            return Ok(false);
        };
        let new = read(path)?;
        *slot.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(new));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// How many rules are loaded (`None`: authorization off).
    pub fn rule_count(&self) -> Option<usize> {
        self.rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| r.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_rules_need_tls() {
        let e = Auth::new(AuthConfig {
            token_file: Some("t.csv".into()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.contains("--token-auth-file needs TLS"), "{e}");
        let e = Auth::new(AuthConfig {
            rules_file: Some("r.yaml".into()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.contains("--authorization-file needs TLS"), "{e}");
    }

    #[test]
    fn refusals_name_the_verb_and_scope() {
        let r = Refusal::Forbidden {
            user: "alice".into(),
            verb: Verb::Acquire,
            namespace: Some("team-b".into()),
            name: Some("x".into()),
        };
        assert_eq!(
            r.to_string(),
            "user \"alice\" may not acquire lease \"x\" in namespace \"team-b\""
        );
        let r = Refusal::Forbidden {
            user: "alice".into(),
            verb: Verb::Watch,
            namespace: None,
            name: None,
        };
        assert_eq!(
            r.to_string(),
            "user \"alice\" may not watch leases in all namespaces"
        );
    }

    #[test]
    fn with_authorization_off_everything_is_allowed() {
        let a = Auth::disabled();
        let access = Access {
            verb: Verb::Delete,
            namespace: Some("x"),
            name: Some("y"),
        };
        assert!(a.authorize(&Caller::anonymous(), access).is_ok());
        assert!(a.require_authenticated(&Caller::anonymous()).is_ok());
    }
}
