//! Authorization rules: who may do which verb in which namespace, and
//! optionally to which lease names (by prefix). Default deny: a request is
//! allowed if and only if some rule matches it.
//!
//! ```yaml
//! rules:
//!   - subjects: ["user:alice", "group:team-a"]
//!     verbs: [get, list, watch, acquire, renew, release]
//!     namespaces: ["team-a"]          # "*" = every namespace
//!     names: ["jobs-"]                # optional name prefixes
//!   - subjects: ["group:leasehold:admins"]
//!     verbs: ["*"]                    # every verb, admin included
//!     namespaces: ["*"]
//! ```
//!
//! Scope, as Kubernetes RBAC does it: a collection read (list, watch of a
//! namespace) is authorized as a whole, never filtered, so it needs a rule
//! without `names`; a read across all namespaces and `admin` need a rule
//! for `"*"` without `names`. Cluster members (`system:peers`) may do
//! anything: they can append to the log anyway.

use super::identity::Identity;
use serde::Deserialize;

/// Largest rules file read.
pub const MAX_RULES_FILE: u64 = 1024 * 1024;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// Read one lease.
    Get,
    /// List leases.
    List,
    /// Watch leases.
    Watch,
    /// Acquire a lease.
    Acquire,
    /// Renew a tenure.
    Renew,
    /// Release a tenure.
    Release,
    /// Create or replace a lease object (`Put`, Kubernetes writes).
    Put,
    /// Delete a lease.
    Delete,
    /// Change the membership (the `Cluster` service's writes).
    Admin,
}

impl Verb {
    /// Every verb, in the order the docs list them.
    pub const ALL: [Verb; 9] = [
        Verb::Get,
        Verb::List,
        Verb::Watch,
        Verb::Acquire,
        Verb::Renew,
        Verb::Release,
        Verb::Put,
        Verb::Delete,
        Verb::Admin,
    ];

    /// The verb's name in rules and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Acquire => "acquire",
            Verb::Renew => "renew",
            Verb::Release => "release",
            Verb::Put => "put",
            Verb::Delete => "delete",
            Verb::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is asked for: a verb over a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access<'a> {
    /// The verb.
    pub verb: Verb,
    /// The namespace; `None` = every namespace (and the cluster for `admin`).
    pub namespace: Option<&'a str>,
    /// The lease name; `None` = the whole collection.
    pub name: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    subjects: Vec<String>,
    verbs: Vec<String>,
    namespaces: Vec<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    rules: Vec<FileRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    User(String),
    Group(String),
}

/// One rule.
#[derive(Debug, Clone)]
struct Rule {
    subjects: Vec<Subject>,
    /// `None` = every verb.
    verbs: Option<Vec<Verb>>,
    /// `None` = every namespace.
    namespaces: Option<Vec<String>>,
    /// `None` = every name.
    names: Option<Vec<String>>,
}

/// A parsed rules file.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

fn list_or_star(field: &str, i: usize, v: Vec<String>) -> Result<Option<Vec<String>>, String> {
    if v.is_empty() {
        return Err(format!("rules[{i}].{field}: must not be empty"));
    }
    if v.iter().any(|s| s == "*") {
        return Ok(None);
    }
    Ok(Some(v))
}

impl Rules {
    /// Parses a rules file (YAML). Errors name the rule and field; unknown
    /// fields and verbs are errors, so a typo never silently grants or
    /// denies.
    pub fn parse(text: &str) -> Result<Rules, String> {
        let file: File = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = Vec::with_capacity(file.rules.len());
        for (i, r) in file.rules.into_iter().enumerate() {
            if r.subjects.is_empty() {
                return Err(format!("rules[{i}].subjects: must not be empty"));
            }
            let subjects = r
                .subjects
                .iter()
                .map(|s| {
                    if let Some(u) = s.strip_prefix("user:").filter(|u| !u.is_empty()) {
                        Ok(Subject::User(u.to_string()))
                    } else if let Some(g) = s.strip_prefix("group:").filter(|g| !g.is_empty()) {
                        Ok(Subject::Group(g.to_string()))
                    } else {
                        Err(format!(
                            "rules[{i}].subjects: {s:?} must be user:NAME or group:NAME"
                        ))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let verbs = match list_or_star("verbs", i, r.verbs)? {
                None => None,
                Some(v) => Some(
                    v.iter()
                        .map(|s| {
                            Verb::parse(s).ok_or_else(|| {
                                format!(
                                    "rules[{i}].verbs: unknown verb {s:?} (one of {}, or \"*\")",
                                    Verb::ALL.map(Verb::as_str).join(", ")
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            let namespaces = list_or_star("namespaces", i, r.namespaces)?;
            let names = match r.names {
                None => None,
                Some(n) if n.is_empty() => {
                    return Err(format!(
                        "rules[{i}].names: must not be empty (leave it out for every name)"
                    ))
                }
                Some(n) => Some(n),
            };
            rules.push(Rule {
                subjects,
                verbs,
                namespaces,
                names,
            });
        }
        Ok(Rules { rules })
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none (then everything but peers is denied).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `who` may do `access`.
    pub fn allows(&self, who: &Identity, access: Access<'_>) -> bool {
        if who.is_peer() {
            return true;
        }
        self.rules.iter().any(|r| r.matches(who, access))
    }
}

impl Rule {
    fn matches(&self, who: &Identity, a: Access<'_>) -> bool {
        let subject = self.subjects.iter().any(|s| match s {
            Subject::User(u) => *u == who.user,
            Subject::Group(g) => who.groups.iter().any(|x| x == g),
        });
        let verb = self.verbs.as_ref().is_none_or(|v| v.contains(&a.verb));
        // `admin` and every-namespace reads need a cluster-wide rule.
        let cluster_wide = a.verb == Verb::Admin || a.namespace.is_none();
        let namespace = match (&self.namespaces, a.namespace) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(list), Some(ns)) => !cluster_wide && list.iter().any(|n| n == ns),
        };
        let name = match (&self.names, a.name) {
            (None, _) => true,
            // A collection read is never filtered by name.
            (Some(_), None) => false,
            (Some(prefixes), Some(n)) => {
                !cluster_wide && prefixes.iter().any(|p| n.starts_with(p.as_str()))
            }
        };
        subject && verb && namespace && name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
rules:
  - subjects: ["group:team-a"]
    verbs: [get, list, watch, acquire, renew, release, put, delete]
    namespaces: ["team-a"]
  - subjects: ["user:bob"]
    verbs: [acquire, renew, get, watch]
    namespaces: ["shared"]
    names: ["jobs-"]
  - subjects: ["group:leasehold:admins"]
    verbs: ["*"]
    namespaces: ["*"]
"#;

    fn at<'a>(verb: Verb, ns: Option<&'a str>, name: Option<&'a str>) -> Access<'a> {
        Access {
            verb,
            namespace: ns,
            name,
        }
    }

    #[test]
    fn rules_grant_by_subject_verb_namespace_and_name_prefix() {
        let r = Rules::parse(RULES).unwrap();
        let alice = Identity::user("alice", ["team-a".to_string()]);
        let bob = Identity::user("bob", []);
        let admin = Identity::user("root", ["leasehold:admins".to_string()]);
        assert!(r.allows(&alice, at(Verb::Acquire, Some("team-a"), Some("x"))));
        assert!(!r.allows(&alice, at(Verb::Acquire, Some("team-b"), Some("x"))));
        assert!(r.allows(&alice, at(Verb::List, Some("team-a"), None)));
        assert!(
            !r.allows(&alice, at(Verb::List, None, None)),
            "cluster-wide list"
        );
        assert!(!r.allows(&alice, at(Verb::Admin, Some("team-a"), None)));
        assert!(r.allows(&bob, at(Verb::Acquire, Some("shared"), Some("jobs-1"))));
        assert!(!r.allows(&bob, at(Verb::Acquire, Some("shared"), Some("other"))));
        assert!(!r.allows(&bob, at(Verb::Release, Some("shared"), Some("jobs-1"))));
        assert!(r.allows(&bob, at(Verb::Watch, Some("shared"), Some("jobs-1"))));
        assert!(
            !r.allows(&bob, at(Verb::Watch, Some("shared"), None)),
            "a named rule never grants a collection"
        );
        assert!(r.allows(&admin, at(Verb::Admin, None, None)));
        assert!(r.allows(&admin, at(Verb::Watch, None, None)));
        assert!(!r.allows(
            &Identity::anonymous(),
            at(Verb::Get, Some("team-a"), Some("x"))
        ));
        assert!(r.allows(&Identity::peer("node-1"), at(Verb::Admin, None, None)));
        assert!(!Rules::default().allows(&admin, at(Verb::Get, Some("a"), Some("b"))));
    }

    #[test]
    fn mistakes_in_the_file_are_errors_naming_the_field() {
        for (text, want) in [
            (
                "rules: [{subjects: [alice], verbs: [get], namespaces: [a]}]",
                "rules[0].subjects",
            ),
            (
                "rules: [{subjects: [\"user:a\"], verbs: [gett], namespaces: [a]}]",
                "unknown verb \"gett\"",
            ),
            (
                "rules: [{subjects: [\"user:a\"], verbs: [get], namespaces: []}]",
                "rules[0].namespaces",
            ),
            (
                "rules: [{subjects: [\"user:a\"], verbs: [get], namespaces: [a], names: []}]",
                "rules[0].names",
            ),
            (
                "rules: [{subjects: [\"user:a\"], verbs: [get], namespace: [a]}]",
                "unknown field",
            ),
        ] {
            let e = Rules::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
