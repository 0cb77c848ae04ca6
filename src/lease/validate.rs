//! Field validation, following Kubernetes' apimachinery rules.
//!
//! Leasehold stores objects that Kubernetes clients (client-go's leader
//! election, `kubectl`) create and read, so it accepts exactly the names,
//! labels and annotations a Kubernetes API server would accept: anything
//! looser could be stored here but not mirrored into or compared with a real
//! cluster, and anything stricter would break clients that work against
//! Kubernetes.
//!
//! Every check is pure and runs before a command is proposed, so a malformed
//! request never reaches the Raft log. Every failure is
//! [`LeaseError::Invalid`] carrying a Kubernetes-style field path (such as
//! `metadata.name` or `metadata.labels["app"]`) and a reason that says what
//! would have been accepted, so a client can fix its request without reading
//! this file.
//!
//! The character checks are written out by hand rather than with regular
//! expressions: the grammars are tiny, and a byte loop gives precise messages
//! ("contains 'F'") for free.

use super::command::Command;
use super::error::LeaseError;
use super::model::{LeaseKey, LeaseSpec};
use std::collections::BTreeMap;

/// Longest RFC 1123 label (a namespace, or one dot-separated part of a
/// subdomain), as DNS and Kubernetes define it.
pub const MAX_DNS_LABEL_LEN: usize = 63;

/// Longest RFC 1123 subdomain (a lease name, or a label key prefix).
pub const MAX_DNS_SUBDOMAIN_LEN: usize = 253;

/// Longest name part of a qualified name (label or annotation key), and
/// longest label value.
pub const MAX_QUALIFIED_NAME_LEN: usize = 63;

/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 63;

/// Longest holder identity, in bytes. Kubernetes sets no limit, but holder
/// identities are copied into every lease, every response and every log
/// line, so an unbounded one is a cheap way to bloat all of them; 1 KiB is far
/// more than any real identity (hostnames plus a UUID) needs.
pub const MAX_HOLDER_LEN: usize = 1024;

/// Longest lease duration: one year. Leases are meant to be renewed every few
/// seconds; a bound keeps `renewTime + duration` arithmetic (in microseconds)
/// far away from overflow, and catches unit mistakes such as sending
/// milliseconds or a Unix timestamp where seconds were meant.
pub const MAX_LEASE_DURATION_SECONDS: i32 = 366 * 24 * 3600;

/// Kubernetes' limit on the total size of an object's annotations: the sum of
/// the byte lengths of all keys and values.
pub const MAX_ANNOTATIONS_TOTAL_BYTES: usize = 256 * 1024;

/// Largest lease Leasehold stores, counted as the bytes of every string in
/// it (namespace, name, label and annotation keys and values, holder,
/// strategy, preferred holder). Every accepted lease must stay readable,
/// listable, watchable and forwardable: a response carries a whole lease
/// (a watch event or a put reply, even two leases), and every gRPC message
/// is bounded by the API's message limit (`api::limits`). 512 KiB leaves
/// room for Kubernetes' own 256 KiB of annotations plus labels.
pub const MAX_LEASE_BYTES: usize = 512 * 1024;

/// The one built-in coordinated leader election strategy Kubernetes defines;
/// any other strategy must be a qualified name.
pub const STRATEGY_OLDEST_EMULATION_VERSION: &str = "OldestEmulationVersion";

const DNS_LABEL_RULE: &str = "must be a lowercase RFC 1123 label: at most 63 characters of \
     lowercase letters, digits or '-', starting and ending with a letter or digit \
     (e.g. 'my-name' or '123-abc')";

const DNS_SUBDOMAIN_RULE: &str = "must be a lowercase RFC 1123 subdomain: at most 253 \
     characters; one or more labels separated by '.', each at most 63 characters of \
     lowercase letters, digits or '-', starting and ending with a letter or digit \
     (e.g. 'example.com')";

const QUALIFIED_NAME_RULE: &str = "must be a qualified name: an optional prefix and '/', \
     followed by a name of at most 63 characters of letters, digits, \
     '-', '_' or '.', starting and ending with a letter or digit \
     (e.g. 'app', 'my.name' or 'example.com/app'); the prefix is a lowercase RFC 1123 \
     subdomain of at most 253 characters";

const LABEL_VALUE_RULE: &str = "must be empty or at most 63 characters of letters, \
     digits, '-', '_' or '.', starting and ending with a letter or digit \
     (e.g. 'v1', 'my_value' or '12.3-beta')";

/// Quotes a value for an error message, shortening very long ones: a reason
/// must identify the value, not echo back a 256 KiB string.
pub(crate) fn quote(value: &str) -> String {
    const KEEP: usize = 48;
    if value.chars().count() <= KEEP + 16 {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(KEEP).collect();
        format!("{head:?}... ({} bytes)", value.len())
    }
}

/// Describes a character for an error message.
fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("'{c}'")
    }
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Checks one RFC 1123 label; the error is the specific problem, without the
/// rule (callers add the rule that applies in their context).
fn check_dns_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_string());
    }
    if value.len() > MAX_DNS_LABEL_LEN {
        return Err(format!(
            "is {} characters long, more than {MAX_DNS_LABEL_LEN}",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|&c| !is_lower_alnum(c) && c != '-') {
        return Err(format!("contains {}", describe_char(c)));
    }
    // The charset check passed, so the value is ASCII and non-empty.
    if value.starts_with('-') {
        return Err("starts with '-'".to_string());
    }
    if value.ends_with('-') {
        return Err("ends with '-'".to_string());
    }
    Ok(())
}

/// Checks an RFC 1123 subdomain; the error is the specific problem.
fn check_dns_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_string());
    }
    if value.len() > MAX_DNS_SUBDOMAIN_LEN {
        return Err(format!(
            "is {} characters long, more than {MAX_DNS_SUBDOMAIN_LEN}",
            value.len()
        ));
    }
    for label in value.split('.') {
        if label.is_empty() {
            return Err("has an empty label (a leading, trailing or doubled '.')".to_string());
        }
        check_dns_label(label).map_err(|problem| {
            if label.len() == value.len() {
                problem
            } else {
                format!("has a label {} that {problem}", quote(label))
            }
        })?;
    }
    Ok(())
}

/// Whether `c` may appear inside a qualified name's name part or a label
/// value.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// Checks the name part of a qualified name, or a non-empty label value
/// (they share a grammar); `max` is the length limit.
fn check_name_chars(value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!(
            "is {} characters long, more than {max}",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|&c| !is_name_char(c)) {
        return Err(format!("contains {}", describe_char(c)));
    }
    // The charset check passed, so the value is ASCII; it is non-empty
    // because every caller handles the empty case first.
    if let Some(c) = value.chars().next().filter(|c| !c.is_ascii_alphanumeric()) {
        return Err(format!("starts with '{c}'"));
    }
    if let Some(c) = value.chars().last().filter(|c| !c.is_ascii_alphanumeric()) {
        return Err(format!("ends with '{c}'"));
    }
    Ok(())
}

/// Checks a Kubernetes qualified name (`[prefix/]name`); the error is the
/// specific problem.
fn check_qualified_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_string());
    }
    let mut parts = value.split('/');
    let (prefix, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, None) => (None, name),
        (Some(prefix), Some(name), None) => (Some(prefix), name),
        _ => return Err("contains more than one '/'".to_string()),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("has an empty prefix before '/'".to_string());
        }
        check_dns_subdomain(prefix)
            .map_err(|problem| format!("has a prefix {} that {problem}", quote(prefix)))?;
    }
    if name.is_empty() {
        return Err(match prefix {
            Some(_) => "has an empty name after '/'".to_string(),
            None => "must not be empty".to_string(),
        });
    }
    check_name_chars(name, MAX_QUALIFIED_NAME_LEN).map_err(|problem| match prefix {
        Some(_) => format!("has a name part {} that {problem}", quote(name)),
        None => problem,
    })
}

/// Checks a label value; the error is the specific problem.
fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_chars(value, MAX_LABEL_VALUE_LEN)
}

/// Builds the error for `value` at `field` failing `rule` because of
/// `problem`.
fn invalid(field: &str, value: &str, problem: String, rule: &str) -> LeaseError {
    LeaseError::invalid(field, format!("{} {problem}; {rule}", quote(value)))
}

/// The field path of one entry of a map field, as Kubernetes prints it:
/// `metadata.labels["app"]`. A very long key is shortened (see [`quote`]):
/// the path names the entry, it does not echo a client's megabyte back.
fn entry_path(field_prefix: &str, key: &str) -> String {
    format!("{field_prefix}[{}]", quote(key))
}

fn map_bytes(m: &BTreeMap<String, String>) -> usize {
    m.iter().fold(0usize, |n, (k, v)| {
        n.saturating_add(k.len()).saturating_add(v.len())
    })
}

/// Checks that a lease built from these parts stays within
/// [`MAX_LEASE_BYTES`]. The error names the larger of the two maps (the
/// only parts that can be large), with the sizes that add up to the total.
pub fn validate_lease_size(
    key: &LeaseKey,
    labels: (&str, &BTreeMap<String, String>),
    annotations: Option<(&str, &BTreeMap<String, String>)>,
    strings: &[Option<&str>],
) -> Result<(), LeaseError> {
    let label_bytes = map_bytes(labels.1);
    let annotation_bytes = annotations.map(|(_, m)| map_bytes(m)).unwrap_or(0);
    let other = strings
        .iter()
        .flatten()
        .fold(key.namespace.len() + key.name.len(), |n, s| {
            n.saturating_add(s.len())
        });
    let total = label_bytes
        .saturating_add(annotation_bytes)
        .saturating_add(other);
    if total <= MAX_LEASE_BYTES {
        return Ok(());
    }
    let field = match annotations {
        Some((field, _)) if annotation_bytes > label_bytes => field,
        _ => labels.0,
    };
    Err(LeaseError::invalid(
        field,
        format!(
            "makes the lease {total} bytes (labels {label_bytes}, annotations \
             {annotation_bytes}, names and holder {other}); a lease may be at most \
             {MAX_LEASE_BYTES} bytes (512 KiB) in all"
        ),
    ))
}

/// Validates a lowercase RFC 1123 subdomain (a lease name): non-empty, at
/// most 253 characters, dot-separated labels of `[a-z0-9-]` that start and end
/// with a letter or digit and are at most 63 characters each.
///
/// Kubernetes itself only bounds the whole name; the per-label bound is DNS's
/// and keeps every name usable as a hostname component.
pub fn validate_dns_subdomain(field: &str, value: &str) -> Result<(), LeaseError> {
    check_dns_subdomain(value).map_err(|problem| invalid(field, value, problem, DNS_SUBDOMAIN_RULE))
}

/// Validates a lowercase RFC 1123 label (a namespace): at most 63 characters
/// of `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn validate_dns_label(field: &str, value: &str) -> Result<(), LeaseError> {
    check_dns_label(value).map_err(|problem| invalid(field, value, problem, DNS_LABEL_RULE))
}

/// Validates a lease's identity. The namespace is a DNS label, as Kubernetes
/// namespaces are, and the name a DNS subdomain, as Kubernetes requires for
/// Lease objects, so every key here names a lease a cluster could hold too.
pub fn validate_key(key: &LeaseKey) -> Result<(), LeaseError> {
    validate_dns_label("metadata.namespace", &key.namespace)?;
    validate_dns_subdomain("metadata.name", &key.name)
}

/// Validates a holder identity: non-empty, at most [`MAX_HOLDER_LEN`] bytes,
/// and free of control characters (which would corrupt log lines and
/// terminal output, and are never part of a real identity).
pub fn validate_holder(field: &str, holder: &str) -> Result<(), LeaseError> {
    if holder.is_empty() {
        return Err(LeaseError::invalid(
            field,
            "must not be empty; a holder identity is a non-empty string of at most 1024 bytes \
             without control characters",
        ));
    }
    if holder.len() > MAX_HOLDER_LEN {
        return Err(LeaseError::invalid(
            field,
            format!(
                "{} is {} bytes long; a holder identity must be at most {MAX_HOLDER_LEN} bytes",
                quote(holder),
                holder.len()
            ),
        ));
    }
    if let Some((at, c)) = holder.char_indices().find(|(_, c)| c.is_control()) {
        return Err(LeaseError::invalid(
            field,
            format!(
                "{} contains the control character {} at byte {at}; a holder identity must \
                 not contain control characters",
                quote(holder),
                describe_char(c)
            ),
        ));
    }
    Ok(())
}

/// Longest uid accepted as a precondition, bytes. Ours are 36 (a UUID's
/// text); Kubernetes' are too.
pub const MAX_UID_LEN: usize = 128;

/// Validates a uid precondition: printable ASCII, at most
/// [`MAX_UID_LEN`] bytes (it is compared, never stored).
pub fn validate_uid(field: &str, uid: Option<&str>) -> Result<(), LeaseError> {
    let Some(uid) = uid else {
        return Ok(());
    };
    if uid.len() > MAX_UID_LEN {
        return Err(LeaseError::invalid(
            field,
            format!("must be at most {MAX_UID_LEN} characters"),
        ));
    }
    if !uid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(LeaseError::invalid(
            field,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// Validates a lease duration in seconds: greater than zero and at most
/// [`MAX_LEASE_DURATION_SECONDS`] (one year; see there for why).
pub fn validate_duration(field: &str, seconds: i32) -> Result<(), LeaseError> {
    if seconds <= 0 {
        return Err(LeaseError::invalid(
            field,
            format!("must be greater than 0 seconds (got {seconds})"),
        ));
    }
    if seconds > MAX_LEASE_DURATION_SECONDS {
        return Err(LeaseError::invalid(
            field,
            format!(
                "must be at most {MAX_LEASE_DURATION_SECONDS} seconds (one year), got {seconds}; \
                 the duration is in seconds, not milliseconds"
            ),
        ));
    }
    Ok(())
}

/// Validates a label key: a Kubernetes qualified name, i.e. an optional DNS
/// subdomain prefix (at most 253 characters) and '/', then a name of 1 to 63
/// characters of `[A-Za-z0-9-_.]` starting and ending with a letter or digit.
pub fn validate_label_key(field: &str, key: &str) -> Result<(), LeaseError> {
    check_qualified_name(key).map_err(|problem| invalid(field, key, problem, QUALIFIED_NAME_RULE))
}

/// Validates a label value: empty, or at most 63 characters of
/// `[A-Za-z0-9-_.]` starting and ending with a letter or digit.
pub fn validate_label_value(field: &str, value: &str) -> Result<(), LeaseError> {
    check_label_value(value).map_err(|problem| invalid(field, value, problem, LABEL_VALUE_RULE))
}

/// Validates a label map. A bad entry is reported at
/// `<field_prefix>["<key>"]`, e.g. `metadata.labels["app/x"]`.
pub fn validate_labels(
    field_prefix: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), LeaseError> {
    for (key, value) in labels {
        let field = entry_path(field_prefix, key);
        validate_label_key(&field, key)?;
        validate_label_value(&field, value)?;
    }
    Ok(())
}

/// Validates an annotation map: every key is a qualified name, and keys plus
/// values total at most [`MAX_ANNOTATIONS_TOTAL_BYTES`].
///
/// As Kubernetes does, keys are checked in lowercase: annotation keys may use
/// uppercase letters in their prefix (label keys may not). Values are free
/// text; only their size counts, because the whole object is replicated and
/// kept in memory by every node.
pub fn validate_annotations(
    field_prefix: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<(), LeaseError> {
    let mut total: usize = 0;
    for (key, value) in annotations {
        check_qualified_name(&key.to_ascii_lowercase()).map_err(|problem| {
            invalid(
                &entry_path(field_prefix, key),
                key,
                problem,
                QUALIFIED_NAME_RULE,
            )
        })?;
        total = total.saturating_add(key.len()).saturating_add(value.len());
    }
    if total > MAX_ANNOTATIONS_TOTAL_BYTES {
        return Err(LeaseError::invalid(
            field_prefix,
            format!(
                "annotations total {total} bytes; keys and values together must be at most \
                 {MAX_ANNOTATIONS_TOTAL_BYTES} bytes (256 KiB)"
            ),
        ));
    }
    Ok(())
}

/// Validates a coordinated leader election strategy: the built-in
/// `OldestEmulationVersion`, or a qualified name for a custom strategy.
fn validate_strategy(field: &str, strategy: &str) -> Result<(), LeaseError> {
    if strategy == STRATEGY_OLDEST_EMULATION_VERSION {
        return Ok(());
    }
    check_qualified_name(strategy).map_err(|problem| {
        LeaseError::invalid(
            field,
            format!(
                "{} {problem}; a strategy must be {STRATEGY_OLDEST_EMULATION_VERSION:?} or a \
                 qualified name (e.g. 'example.com/my-strategy')",
                quote(strategy)
            ),
        )
    })
}

/// Validates a lease spec as a Kubernetes client may send it.
///
/// An empty `holderIdentity` is allowed and means "no holder" (client-go
/// writes it on release). `preferredHolder` only has meaning under a
/// `strategy`, so setting it alone is refused rather than silently ignored;
/// when set it must look like a holder identity, since it names one.
pub fn validate_spec(spec: &LeaseSpec) -> Result<(), LeaseError> {
    if let Some(holder) = spec.holder_identity.as_deref() {
        if !holder.is_empty() {
            validate_holder("spec.holderIdentity", holder)?;
        }
    }
    if let Some(seconds) = spec.lease_duration_seconds {
        validate_duration("spec.leaseDurationSeconds", seconds)?;
    }
    if let Some(transitions) = spec.lease_transitions {
        if transitions < 0 {
            return Err(LeaseError::invalid(
                "spec.leaseTransitions",
                format!("must be greater than or equal to 0 (got {transitions})"),
            ));
        }
    }
    if let Some(strategy) = spec.strategy.as_deref() {
        validate_strategy("spec.strategy", strategy)?;
    }
    if let Some(preferred) = spec.preferred_holder.as_deref() {
        if !preferred.is_empty() {
            if spec.strategy.is_none() {
                return Err(LeaseError::invalid(
                    "spec.preferredHolder",
                    "may only be set when spec.strategy is set",
                ));
            }
            validate_holder("spec.preferredHolder", preferred)?;
        }
    }
    Ok(())
}

/// Validates a fencing token sent by a client: tokens are revisions, which
/// start at 1, and 0 means "no tenure", so a client can never hold token 0.
fn validate_fencing_token(field: &str, token: u64) -> Result<(), LeaseError> {
    if token == 0 {
        return Err(LeaseError::invalid(
            field,
            "must be greater than 0: use the token returned when the lease was acquired",
        ));
    }
    Ok(())
}

/// Validates every field of a command before it is proposed, so that the
/// state machine only ever sees well-formed input and refuses commands for
/// semantic reasons alone.
pub fn validate_command(cmd: &Command) -> Result<(), LeaseError> {
    match cmd {
        Command::Acquire {
            key,
            holder,
            duration_seconds,
            labels,
        } => {
            validate_key(key)?;
            validate_holder("holder", holder)?;
            validate_duration("leaseDurationSeconds", *duration_seconds)?;
            validate_labels("labels", labels)?;
            validate_lease_size(key, ("labels", labels), None, &[Some(holder)])
        }
        Command::Renew {
            key,
            holder,
            fencing_token,
        }
        | Command::Release {
            key,
            holder,
            fencing_token,
        }
        | Command::Expire {
            key,
            holder,
            fencing_token,
        } => {
            validate_key(key)?;
            validate_holder("holder", holder)?;
            validate_fencing_token("fencingToken", *fencing_token)
        }
        Command::Put { draft } => {
            validate_key(&draft.key)?;
            validate_uid("metadata.uid", draft.uid.as_deref())?;
            validate_labels("metadata.labels", &draft.labels)?;
            validate_annotations("metadata.annotations", &draft.annotations)?;
            validate_spec(&draft.spec)?;
            validate_lease_size(
                &draft.key,
                ("metadata.labels", &draft.labels),
                Some(("metadata.annotations", &draft.annotations)),
                &[
                    draft.spec.holder_identity.as_deref(),
                    draft.spec.strategy.as_deref(),
                    draft.spec.preferred_holder.as_deref(),
                ],
            )
        }
        Command::Delete {
            key,
            resource_version: _,
            uid,
        } => {
            validate_key(key)?;
            validate_uid("uid", uid.as_deref())
        }
    }
}

#[cfg(test)]
mod tests;
