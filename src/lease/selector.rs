//! Kubernetes label selectors in their string form (`kubectl get -l ...`,
//! `ListOptions.labelSelector`).
//!
//! The syntax is a comma-separated list of requirements, all of which must
//! hold:
//!
//! | form              | meaning                                   |
//! |-------------------|-------------------------------------------|
//! | `k=v`, `k==v`     | label `k` is present with value `v`       |
//! | `k!=v`            | label `k` is absent or has another value  |
//! | `k in (v1,v2)`    | label `k` is present with one of the values |
//! | `k notin (v1,v2)` | label `k` is absent or has none of them   |
//! | `k`               | label `k` is present                      |
//! | `!k`              | label `k` is absent                       |
//!
//! The semantics of `!=` and `notin` for absent labels follow Kubernetes, so
//! a selector lists the same leases here as it would on an API server. Keys
//! and values are checked with the same rules as stored labels
//! ([`super::validate`]): a selector that names an impossible label is a
//! client mistake, reported rather than silently matching nothing.
//!
//! Deliberate differences from Kubernetes: the numeric `k>n` / `k<n`
//! operators are not supported, and an empty value (`k=`, `k in (a,)`) is
//! refused instead of meaning "the empty string", because it is far more
//! often a truncated selector than an intent to match empty labels.

use super::error::LeaseError;
use super::validate::{quote, validate_label_key, validate_label_value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// The field path reported for every selector error.
const FIELD: &str = "labelSelector";

/// Longest selector accepted, in bytes. A selector is parsed and then
/// evaluated against every lease a List or Watch scans, so its size is
/// work per lease; real selectors are a few dozen bytes.
pub const MAX_SELECTOR_LEN: usize = 8 * 1024;

/// One condition on a label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// `key=value` or `key==value`: present with exactly this value.
    Equals(String, String),
    /// `key!=value`: absent, or present with another value.
    NotEquals(String, String),
    /// `key in (v1,...)`: present with one of the values (never empty).
    In(String, BTreeSet<String>),
    /// `key notin (v1,...)`: absent, or present with none of the values
    /// (never empty).
    NotIn(String, BTreeSet<String>),
    /// `key`: present, with any value.
    Exists(String),
    /// `!key`: absent.
    NotExists(String),
}

impl Requirement {
    /// The label key this requirement is about.
    pub fn key(&self) -> &str {
        match self {
            Requirement::Equals(key, _)
            | Requirement::NotEquals(key, _)
            | Requirement::In(key, _)
            | Requirement::NotIn(key, _)
            | Requirement::Exists(key)
            | Requirement::NotExists(key) => key,
        }
    }

    /// Whether `labels` satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => !labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::NotExists(key) => !labels.contains_key(key),
        }
    }
}

/// Writes `(v1,v2)`; the set is ordered, so the form is canonical.
fn write_set(f: &mut fmt::Formatter<'_>, values: &BTreeSet<String>) -> fmt::Result {
    f.write_str("(")?;
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        f.write_str(value)?;
    }
    f.write_str(")")
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Equals(key, value) => write!(f, "{key}={value}"),
            Requirement::NotEquals(key, value) => write!(f, "{key}!={value}"),
            Requirement::In(key, values) => {
                write!(f, "{key} in ")?;
                write_set(f, values)
            }
            Requirement::NotIn(key, values) => {
                write!(f, "{key} notin ")?;
                write_set(f, values)
            }
            Requirement::Exists(key) => f.write_str(key),
            Requirement::NotExists(key) => write!(f, "!{key}"),
        }
    }
}

/// A parsed label selector: a conjunction of requirements. The empty
/// selector matches every label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Selector {
    /// Sorted by key (stably), as Kubernetes sorts them, so equal selectors
    /// written in different orders print the same.
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Selector::default()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `labels` satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector has no requirements and so matches everything
    /// (callers can skip filtering altogether).
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for Selector {
    /// The canonical form: requirements sorted by key, joined by ',', with
    /// `=` for equality, no spaces except around `in`/`notin`, and sets
    /// sorted. The empty selector prints as the empty string. Parsing the
    /// output gives back an equal selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

impl FromStr for Selector {
    type Err = LeaseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Parses a label selector string. An empty or all-whitespace string is the
/// selector that matches everything.
///
/// Errors are [`LeaseError::Invalid`] with field `labelSelector` and a reason
/// quoting the offending part of the input.
pub fn parse(input: &str) -> Result<Selector, LeaseError> {
    if input.len() > MAX_SELECTOR_LEN {
        return Err(LeaseError::invalid(
            FIELD,
            format!(
                "{} is {} bytes long; a selector may be at most {MAX_SELECTOR_LEN} bytes",
                quote(input),
                input.len()
            ),
        ));
    }
    let tokens = lex(input);
    let mut parser = Parser {
        input,
        tokens,
        next: 0,
    };
    let mut requirements = Vec::new();
    if !parser.tokens.is_empty() {
        loop {
            requirements.push(parser.requirement()?);
            match parser.bump() {
                None => break,
                Some(Token {
                    kind: Kind::Comma, ..
                }) => {}
                Some(other) => {
                    return Err(parser.error(format!(
                        "unexpected {} at position {} after {}; requirements must be \
                         separated by ','",
                        other.describe(),
                        other.pos,
                        quote(input[..other.pos].trim_end())
                    )))
                }
            }
        }
    }
    requirements.sort_by(|a, b| a.key().cmp(b.key()));
    Ok(Selector { requirements })
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A run of characters that are neither whitespace nor punctuation: a
    /// key, a value, or the keywords `in` / `notin`.
    Word,
    /// `!`
    Bang,
    /// `=`
    Eq,
    /// `==`
    DoubleEq,
    /// `!=`
    NotEq,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `,`
    Comma,
}

/// A token and where it is in the input (for messages).
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    /// Byte offset in the input.
    pos: usize,
}

impl Token<'_> {
    /// The token, quoted, for error messages.
    fn describe(&self) -> String {
        quote(self.text)
    }
}

/// Characters that end a word. Anything else that is not whitespace is part
/// of a word; words are then checked as label keys or values, which rejects
/// stray characters with a precise message.
fn is_punct(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',')
}

/// Splits the input into tokens, dropping whitespace. Lexing cannot fail:
/// every non-whitespace character belongs to some token, and the parser
/// reports any token in the wrong place.
fn lex(input: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let followed_by_eq = matches!(chars.peek(), Some((_, '=')));
        let (kind, len) = match c {
            '!' if followed_by_eq => (Kind::NotEq, 2),
            '!' => (Kind::Bang, 1),
            '=' if followed_by_eq => (Kind::DoubleEq, 2),
            '=' => (Kind::Eq, 1),
            '(' => (Kind::Open, 1),
            ')' => (Kind::Close, 1),
            ',' => (Kind::Comma, 1),
            _ => {
                let mut end = pos + c.len_utf8();
                while let Some(&(i, next)) = chars.peek() {
                    if next.is_whitespace() || is_punct(next) {
                        break;
                    }
                    end = i + next.len_utf8();
                    chars.next();
                }
                tokens.push(Token {
                    kind: Kind::Word,
                    text: &input[pos..end],
                    pos,
                });
                continue;
            }
        };
        if len == 2 {
            chars.next();
        }
        tokens.push(Token {
            kind,
            text: &input[pos..pos + len],
            pos,
        });
    }
    tokens
}

/// A recursive-descent parser over the token list.
struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token<'a>>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.next).copied()
    }

    fn bump(&mut self) -> Option<Token<'a>> {
        let token = self.peek();
        if token.is_some() {
            self.next += 1;
        }
        token
    }

    /// An error about this selector; `message` names the offending part.
    fn error(&self, message: String) -> LeaseError {
        LeaseError::invalid(
            FIELD,
            format!("{message} (in selector {})", quote(self.input)),
        )
    }

    /// "found X" for the token that was there instead, or the end of input.
    fn found(token: Option<Token<'_>>) -> String {
        match token {
            Some(t) => format!("found {} at position {}", t.describe(), t.pos),
            None => "found the end of the selector".to_string(),
        }
    }

    /// A label key; the error reason comes from the label-key rules.
    fn key(&self, token: Token<'_>) -> Result<String, LeaseError> {
        validate_label_key(FIELD, token.text).map_err(|e| self.rewrap("label key", e))?;
        Ok(token.text.to_string())
    }

    /// A label value; the error reason comes from the label-value rules.
    fn value(&self, token: Token<'_>) -> Result<String, LeaseError> {
        validate_label_value(FIELD, token.text).map_err(|e| self.rewrap("label value", e))?;
        Ok(token.text.to_string())
    }

    /// Prefixes a validation error's reason with what was being validated.
    fn rewrap(&self, what: &str, err: LeaseError) -> LeaseError {
        match err {
            LeaseError::Invalid { reason, .. } => self.error(format!("{what} {reason}")),
            other => other,
        }
    }

    /// One requirement: `!key`, `key`, `key op value`, `key in (set)` or
    /// `key notin (set)`.
    fn requirement(&mut self) -> Result<Requirement, LeaseError> {
        let first = self.bump();
        let key_token = match first {
            Some(Token {
                kind: Kind::Bang, ..
            }) => {
                return match self.bump() {
                    Some(t) if t.kind == Kind::Word => Ok(Requirement::NotExists(self.key(t)?)),
                    other => Err(self.error(format!(
                        "expected a label key after \"!\", {}",
                        Self::found(other)
                    ))),
                };
            }
            Some(t) if t.kind == Kind::Word => t,
            other => {
                return Err(self.error(format!(
                    "expected a label key or \"!key\", {}",
                    Self::found(other)
                )))
            }
        };
        let key = self.key(key_token)?;
        let op = match self.peek() {
            None
            | Some(Token {
                kind: Kind::Comma, ..
            }) => return Ok(Requirement::Exists(key)),
            Some(op) => op,
        };
        match op.kind {
            Kind::Eq | Kind::DoubleEq | Kind::NotEq => {
                self.next += 1;
                let value = match self.bump() {
                    Some(t) if t.kind == Kind::Word => self.value(t)?,
                    other => {
                        return Err(self.error(format!(
                            "expected a value after \"{key}{}\", {}",
                            op.text,
                            Self::found(other)
                        )))
                    }
                };
                Ok(if op.kind == Kind::NotEq {
                    Requirement::NotEquals(key, value)
                } else {
                    Requirement::Equals(key, value)
                })
            }
            Kind::Word if op.text == "in" || op.text == "notin" => {
                self.next += 1;
                let values = self.set(&key, op.text)?;
                Ok(if op.text == "in" {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                })
            }
            _ => Err(self.error(format!(
                "expected an operator (=, ==, !=, in, notin), ',' or the end after the key \
                 {key:?}, {}",
                Self::found(Some(op))
            ))),
        }
    }

    /// A parenthesised, comma-separated, non-empty set of values after
    /// `key in` / `key notin`.
    fn set(&mut self, key: &str, op: &str) -> Result<BTreeSet<String>, LeaseError> {
        let context = format!("{key} {op}");
        match self.bump() {
            Some(Token {
                kind: Kind::Open, ..
            }) => {}
            other => {
                return Err(self.error(format!(
                    "expected '(' after \"{context}\", {}",
                    Self::found(other)
                )))
            }
        }
        let mut values = BTreeSet::new();
        if let Some(Token {
            kind: Kind::Close,
            pos,
            ..
        }) = self.peek()
        {
            return Err(self.error(format!(
                "\"{context} ()\" at position {pos} has an empty set; list at least one value"
            )));
        }
        loop {
            match self.bump() {
                Some(t) if t.kind == Kind::Word => {
                    values.insert(self.value(t)?);
                }
                other => {
                    return Err(self.error(format!(
                        "expected a value in the set of \"{context}\", {}",
                        Self::found(other)
                    )))
                }
            }
            match self.bump() {
                Some(Token {
                    kind: Kind::Comma, ..
                }) => {}
                Some(Token {
                    kind: Kind::Close, ..
                }) => return Ok(values),
                other => {
                    return Err(self.error(format!(
                        "expected ',' or ')' in the set of \"{context}\", {}",
                        Self::found(other)
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn long_selectors_are_refused_and_errors_quote_a_prefix() {
        let long = format!("a={}", "v".repeat(MAX_SELECTOR_LEN));
        let e = parse(&long).unwrap_err().to_string();
        assert!(e.len() < 1024, "{} bytes", e.len());
        assert!(e.contains("at most"), "{e}");
        // Just within the limit but malformed: the message stays short.
        let bad = format!("{}!", "k".repeat(MAX_SELECTOR_LEN - 10));
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.len() < 1024, "{} bytes: {e}", e.len());
    }

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        match parse(s) {
            Ok(selector) => selector,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    /// The reason of the error for `s`, after checking the field.
    fn reject(s: &str) -> String {
        match parse(s) {
            Err(LeaseError::Invalid { field, reason }) => {
                assert_eq!(field, "labelSelector", "{s:?}");
                reason
            }
            other => panic!("{s:?} should be rejected, got {other:?}"),
        }
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| (*v).to_string()).collect()
    }

    #[test]
    fn empty_matches_everything() {
        for s in ["", " ", "\t\n  "] {
            let selector = sel(s);
            assert!(selector.is_everything(), "{s:?}");
            assert!(selector.matches(&labels(&[])));
            assert!(selector.matches(&labels(&[("a", "b")])));
            assert_eq!(selector.to_string(), "");
        }
        assert_eq!(Selector::everything(), sel(""));
        assert!(!sel("a").is_everything());
    }

    #[test]
    fn equals() {
        for s in ["a=b", "a==b", " a = b ", "a ==b"] {
            let selector = sel(s);
            assert_eq!(
                selector.requirements(),
                &[Requirement::Equals("a".into(), "b".into())],
                "{s:?}"
            );
            assert!(selector.matches(&labels(&[("a", "b")])));
            assert!(selector.matches(&labels(&[("a", "b"), ("c", "d")])));
            assert!(!selector.matches(&labels(&[("a", "c")])));
            assert!(!selector.matches(&labels(&[])));
            assert!(!selector.matches(&labels(&[("b", "a")])));
        }
    }

    #[test]
    fn not_equals_matches_absent_keys() {
        let selector = sel("a!=b");
        assert_eq!(
            selector.requirements(),
            &[Requirement::NotEquals("a".into(), "b".into())]
        );
        assert!(!selector.matches(&labels(&[("a", "b")])));
        assert!(selector.matches(&labels(&[("a", "c")])));
        assert!(selector.matches(&labels(&[])));
        assert!(selector.matches(&labels(&[("x", "b")])));
    }

    #[test]
    fn in_set() {
        let selector = sel("env in (prod, staging)");
        assert_eq!(
            selector.requirements(),
            &[Requirement::In("env".into(), set(&["prod", "staging"]))]
        );
        assert!(selector.matches(&labels(&[("env", "prod")])));
        assert!(selector.matches(&labels(&[("env", "staging")])));
        assert!(!selector.matches(&labels(&[("env", "dev")])));
        assert!(!selector.matches(&labels(&[])));
        assert!(sel("env in (prod)").matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn notin_set_matches_absent_keys() {
        let selector = sel("env notin (dev,test)");
        assert_eq!(
            selector.requirements(),
            &[Requirement::NotIn("env".into(), set(&["dev", "test"]))]
        );
        assert!(selector.matches(&labels(&[("env", "prod")])));
        assert!(!selector.matches(&labels(&[("env", "dev")])));
        assert!(!selector.matches(&labels(&[("env", "test")])));
        assert!(selector.matches(&labels(&[])));
    }

    #[test]
    fn exists_and_not_exists() {
        let exists = sel("example.com/app");
        assert_eq!(
            exists.requirements(),
            &[Requirement::Exists("example.com/app".into())]
        );
        assert!(exists.matches(&labels(&[("example.com/app", "")])));
        assert!(exists.matches(&labels(&[("example.com/app", "x")])));
        assert!(!exists.matches(&labels(&[("app", "x")])));

        let absent = sel("! app");
        assert_eq!(
            absent.requirements(),
            &[Requirement::NotExists("app".into())]
        );
        assert!(absent.matches(&labels(&[])));
        assert!(absent.matches(&labels(&[("other", "x")])));
        assert!(!absent.matches(&labels(&[("app", "")])));
    }

    #[test]
    fn combinations_are_conjunctions() {
        let selector = sel("app=web, env in (prod,staging), !canary, tier, zone!=eu");
        assert_eq!(selector.requirements().len(), 5);
        let good = labels(&[("app", "web"), ("env", "prod"), ("tier", "1")]);
        assert!(selector.matches(&good));
        let mut with_canary = good.clone();
        with_canary.insert("canary".into(), "true".into());
        assert!(!selector.matches(&with_canary));
        let mut wrong_zone = good.clone();
        wrong_zone.insert("zone".into(), "eu".into());
        assert!(!selector.matches(&wrong_zone));
        let mut other_zone = good.clone();
        other_zone.insert("zone".into(), "us".into());
        assert!(selector.matches(&other_zone));
        let mut no_tier = good;
        no_tier.remove("tier");
        assert!(!selector.matches(&no_tier));
    }

    #[test]
    fn whitespace_is_allowed_around_tokens() {
        let tight = sel("a=b,c!=d,e in (f,g),h notin (i),j,!k");
        let loose = sel("  a = b ,\tc != d , e in ( f , g ) ,h notin(i) , j , ! k  ");
        assert_eq!(tight, loose);
        // `in(` without a space is fine: '(' ends the word.
        assert_eq!(sel("e in(f,g)"), sel("e in (g,f)"));
    }

    #[test]
    fn commas_inside_parentheses_belong_to_the_set() {
        let selector = sel("a in (x,y,z),b");
        assert_eq!(
            selector.requirements(),
            &[
                Requirement::In("a".into(), set(&["x", "y", "z"])),
                Requirement::Exists("b".into()),
            ]
        );
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let selector = sel("z==1, a notin (y, x), !m, b in (q), c!=d, e");
        let printed = selector.to_string();
        assert_eq!(printed, "a notin (x,y),b in (q),c!=d,e,!m,z=1");
        assert_eq!(sel(&printed), selector);
        assert_eq!(printed.parse::<Selector>(), Ok(selector));
    }

    #[test]
    fn keywords_are_only_keywords_in_operator_position() {
        // A label may be called "in"; only the word after a key is an operator.
        let selector = sel("in in (notin)");
        assert_eq!(
            selector.requirements(),
            &[Requirement::In("in".into(), set(&["notin"]))]
        );
    }

    #[test]
    fn malformed_selectors_are_rejected_with_the_offending_part_quoted() {
        let cases: &[(&str, &str)] = &[
            ("a=", "\"a=\""),
            ("=b", "\"=\""),
            ("a in x", "\"x\""),
            ("a in (x", "end of the selector"),
            ("a==b==c", "\"==\""),
            ("!", "after \"!\""),
            ("a b", "\"b\""),
            ("a in ()", "empty set"),
            ("a notin ()", "empty set"),
            ("a,", "end of the selector"),
            (",a", "\",\""),
            ("a,,b", "\",\""),
            ("a in (x,)", "\")\""),
            ("a in (x y)", "\"y\""),
            ("a=b c", "\"c\""),
            ("!a=b", "\"=\""),
            ("!!a", "\"!\""),
            ("a!=", "\"a!=\""),
            ("a in (x))", "\")\""),
            ("a)", "\")\""),
            ("(a)", "\"(\""),
        ];
        for (input, quoted) in cases {
            let reason = reject(input);
            assert!(reason.contains(quoted), "{input:?}: {reason}");
            assert!(
                reason.contains(&format!("{input:?}")),
                "reason quotes the selector: {reason}"
            );
        }
    }

    #[test]
    fn invalid_keys_and_values_are_rejected() {
        for input in [
            "Example.com/a=b",
            "a/b/c=d",
            "example.com/=x",
            "-a",
            "a=-x",
            "a in (ok, -bad)",
            "a=b/c",
            "a>1",
            "ä",
        ] {
            let reason = reject(input);
            assert!(reason.starts_with("label "), "{input:?}: {reason}");
        }
        let reason = reject("a=-x");
        assert!(reason.contains("\"-x\""), "{reason}");
        let long = format!("a={}", "v".repeat(64));
        reject(&long);
    }
}
