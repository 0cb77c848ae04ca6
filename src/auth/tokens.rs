//! Static bearer tokens in kube-apiserver's `--token-auth-file` format:
//! one `token,user,uid[,"group1,group2"]` record per line (CSV: fields may
//! be double-quoted, `""` is a quote inside one; empty lines are skipped).
//!
//! Only SHA-256 digests of the tokens are kept in memory, and a lookup
//! compares digests, so the file's secrets do not sit in the process and a
//! lookup's timing does not reveal how much of a token matched.

use super::identity::Identity;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Largest token file read (a static file for a handful of users).
pub const MAX_TOKEN_FILE: u64 = 1024 * 1024;

/// The tokens of one file.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Identity>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Splits one CSV record (RFC 4180, without embedded newlines).
fn record(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => {
                quoted = true;
                at_start = false;
            }
            (true, '"') => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("a closing quote must end its field".into());
                    }
                }
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            (false, '"') => return Err("a quote inside an unquoted field".into()),
            (_, c) => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(field);
    Ok(fields)
}

impl Tokens {
    /// Parses a token file's text. Errors name the line; a record with
    /// fewer than three fields or an empty user is an error (a typo must not
    /// quietly drop a user); an empty token is skipped, as kube-apiserver
    /// does; for a repeated token the last record wins.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut by_digest = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let n = i + 1;
            let f = record(line).map_err(|e| format!("line {n}: {e}"))?;
            if f.len() < 3 {
                return Err(format!(
                    "line {n}: a record is token,user,uid[,\"group1,group2\"] (found {} fields)",
                    f.len()
                ));
            }
            let (token, user) = (f[0].trim(), f[1].trim());
            if token.is_empty() {
                tracing::warn!(line = n, "token file: empty token skipped");
                continue;
            }
            if user.is_empty() {
                return Err(format!("line {n}: the user name is empty"));
            }
            let groups = f
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(|s| s.trim().to_string())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            if by_digest
                .insert(digest(token), Identity::user(user, groups))
                .is_some()
            {
                tracing::warn!(
                    line = n,
                    "token file: a repeated token; the last record wins"
                );
            }
        }
        Ok(Tokens { by_digest })
    }

    /// The identity of `token`, if the file has it.
    pub fn lookup(&self, token: &str) -> Option<&Identity> {
        self.by_digest.get(&digest(token))
    }

    /// How many tokens are known.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// The token of an `Authorization` header value: scheme `Bearer` (any
/// case), one token; `None` for another scheme or an empty token.
pub fn bearer(value: &str) -> Option<&str> {
    let mut parts = value.trim().splitn(2, ' ');
    let scheme = parts.next()?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = parts.next()?.trim();
    (!token.is_empty() && !token.contains(' ')).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kube_apiserver_token_files() {
        let t = Tokens::parse(
            "tok-a,alice,1,\"team-a,admins\"\n\n tok-b , bob ,2\r\n,nobody,3\ntok-c,\"carol, \"\"c\"\"\",4,ops\n",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        let a = t.lookup("tok-a").unwrap();
        assert_eq!(a.user, "alice");
        assert_eq!(a.groups, vec!["team-a", "admins", "system:authenticated"]);
        assert_eq!(t.lookup("tok-b").unwrap().user, "bob");
        assert_eq!(t.lookup("tok-c").unwrap().user, "carol, \"c\"");
        assert!(t.lookup("tok-").is_none());
        assert!(t.lookup("").is_none());
    }

    #[test]
    fn bad_records_name_their_line() {
        let e = Tokens::parse("a,b,c\ntok,alice\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(Tokens::parse("tok,\"alice,1\n")
            .unwrap_err()
            .contains("not closed"));
        assert!(Tokens::parse("tok,al\"ice,1\n").is_err());
        assert!(Tokens::parse("tok, ,1\n")
            .unwrap_err()
            .contains("user name"));
    }

    #[test]
    fn bearer_header_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer a b"), None);
    }
}
