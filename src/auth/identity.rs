//! Who is calling: a user name and groups, as Kubernetes models it.
//!
//! An identity comes from exactly one place per request (see
//! `auth::layer`): a verified client certificate (CN = user, each O = a
//! group), else a bearer token from the token file, else nobody
//! (`system:anonymous`). Peers are `system:peer:<CN>` in `system:peers`; a
//! peer may forward the identity of the client it serves.

use serde::{Deserialize, Serialize};

/// The group every authenticated identity is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of callers without credentials.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user name of callers without credentials.
pub const ANONYMOUS: &str = "system:anonymous";
/// The group of cluster members (certificates from the peer CA): they may
/// append to the Raft log, so they may do anything.
pub const PEERS: &str = "system:peers";

/// A caller's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// User name (`alice`, `system:anonymous`, `system:peer:node-1`).
    pub user: String,
    /// Groups, `system:authenticated` included when authenticated.
    pub groups: Vec<String>,
}

/// Bounds on a forwarded identity (it arrives in a header from a peer, and
/// is bounded like any input).
const MAX_NAME: usize = 256;
const MAX_GROUPS: usize = 64;

impl Identity {
    /// The caller without credentials.
    pub fn anonymous() -> Self {
        Identity {
            user: ANONYMOUS.into(),
            groups: vec![UNAUTHENTICATED.into()],
        }
    }

    /// An authenticated user in `groups` (plus `system:authenticated`).
    pub fn user(user: impl Into<String>, groups: impl IntoIterator<Item = String>) -> Self {
        let mut groups: Vec<String> = groups.into_iter().filter(|g| !g.is_empty()).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        Identity {
            user: user.into(),
            groups,
        }
    }

    /// A cluster member whose certificate's CN is `cn`.
    pub fn peer(cn: &str) -> Self {
        Identity::user(format!("system:peer:{cn}"), [PEERS.to_string()])
    }

    /// Whether this is the caller without credentials.
    pub fn is_anonymous(&self) -> bool {
        !self.groups.iter().any(|g| g == AUTHENTICATED)
    }

    /// Whether this is a cluster member.
    pub fn is_peer(&self) -> bool {
        self.groups.iter().any(|g| g == PEERS)
    }

    /// The encoding carried from a follower to the leader in
    /// `x-leasehold-identity-bin` (JSON; small and self-describing).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes [`Identity::encode`]; `None` for anything malformed or over
    /// the bounds. A forwarded identity can never claim to be a peer: only
    /// the connection itself proves that.
    pub fn decode(bytes: &[u8]) -> Option<Identity> {
        if bytes.len() > 64 * 1024 {
            return None;
        }
        let id: Identity = serde_json::from_slice(bytes).ok()?;
        let ok = !id.user.is_empty()
            && id.user.len() <= MAX_NAME
            && id.groups.len() <= MAX_GROUPS
            && id.groups.iter().all(|g| g.len() <= MAX_NAME)
            && !id.is_peer();
        ok.then_some(id)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.user)
    }
}

/// What the authentication layer attached to a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Whom the request acts for (a forwarded request: the original client).
    pub identity: Identity,
    /// Whether the connection itself is a cluster member's (peer
    /// certificate): only then may the request carry a forwarded identity
    /// or reach the Raft service.
    pub peer: bool,
}

impl Caller {
    /// The caller of a request that passed no authentication layer (an
    /// in-process call without one): anonymous, so that a missing identity
    /// fails closed.
    pub fn anonymous() -> Self {
        Caller {
            identity: Identity::anonymous(),
            peer: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticated_users_get_the_authenticated_group_once() {
        let a = Identity::user("alice", ["team-a".to_string(), AUTHENTICATED.to_string()]);
        assert_eq!(
            a.groups,
            vec!["team-a".to_string(), AUTHENTICATED.to_string()]
        );
        assert!(!a.is_anonymous());
        assert!(Identity::anonymous().is_anonymous());
        assert!(Identity::peer("node-1").is_peer());
    }

    #[test]
    fn a_forwarded_identity_round_trips_but_cannot_claim_to_be_a_peer() {
        let a = Identity::user("alice", ["team-a".to_string()]);
        assert_eq!(Identity::decode(&a.encode()), Some(a));
        assert_eq!(Identity::decode(&Identity::peer("n1").encode()), None);
        assert_eq!(Identity::decode(b"not json"), None);
        let long = Identity::user("x".repeat(300), []);
        assert_eq!(Identity::decode(&long.encode()), None);
    }
}
