//! Authorization checks of the services: one function per shape of call,
//! each turning a refusal into its status before anything is proposed or
//! read.

use super::status::from_refusal;
use crate::auth::identity::Caller;
use crate::auth::rules::{Access, Verb};
use crate::auth::Auth;
use tonic::{Request, Status};

/// The caller the authentication layer attached (anonymous if none did:
/// a missing identity fails closed).
pub fn caller<T>(req: &Request<T>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous)
}

fn scope(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Whether `caller` may do `verb` on `namespace`/`name` (an empty
/// namespace is every namespace; an empty name the collection).
pub fn check(
    auth: &Auth,
    caller: &Caller,
    verb: Verb,
    namespace: &str,
    name: &str,
) -> Result<(), Status> {
    auth.authorize(
        caller,
        Access {
            verb,
            namespace: scope(namespace),
            name: scope(name),
        },
    )
    .map_err(|r| {
        tracing::debug!(user = %caller.identity, %verb, namespace, name, "refused: {r}");
        from_refusal(&r)
    })
}

/// [`check`] of a request's own caller.
pub fn check_request<T>(
    auth: &Auth,
    req: &Request<T>,
    verb: Verb,
    namespace: &str,
    name: &str,
) -> Result<(), Status> {
    check(auth, &caller(req), verb, namespace, name)
}

/// Calls open to any authenticated caller (`Status`).
pub fn authenticated<T>(auth: &Auth, req: &Request<T>) -> Result<(), Status> {
    auth.require_authenticated(&caller(req))
        .map_err(|r| from_refusal(&r))
}
