//! Field selectors (`?fieldSelector=metadata.name=x`), as the apiserver
//! supports them for leases: the fields `metadata.name` and
//! `metadata.namespace` with `=`, `==` and `!=`, requirements separated by
//! commas, all of which must hold. A backslash escapes `,`, `=`, `!` and
//! itself inside a value (apimachinery `fields.ParseSelector`).
//!
//! Any other field is refused with upstream's message, `field label not
//! supported: F`, as a 400 naming `fieldSelector`; so is a selector over
//! [`MAX_FIELD_SELECTOR_BYTES`] (a name is at most 253 bytes, a namespace
//! 63: a real selector is far shorter).

use super::status::KubeError;

/// The query parameter.
pub const PARAM: &str = "fieldSelector";

/// Longest field selector accepted, in bytes.
pub const MAX_FIELD_SELECTOR_BYTES: usize = 4 * 1024;

/// A field a lease can be selected by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `metadata.name`.
    Name,
    /// `metadata.namespace`.
    Namespace,
}

/// One requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The field.
    pub field: Field,
    /// `true` for `=`/`==`, `false` for `!=`.
    pub equals: bool,
    /// The value compared with.
    pub value: String,
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// All must hold.
    pub requirements: Vec<Requirement>,
}

impl FieldSelector {
    /// Parses the selector text.
    pub fn parse(text: &str) -> Result<FieldSelector, KubeError> {
        if text.len() > MAX_FIELD_SELECTOR_BYTES {
            return Err(KubeError::bad_param(
                PARAM,
                format!(
                    "it is {} bytes long; at most {MAX_FIELD_SELECTOR_BYTES} are accepted",
                    text.len()
                ),
            ));
        }
        let mut requirements = Vec::new();
        for term in split_unescaped(text, ',') {
            if term.trim().is_empty() {
                continue;
            }
            requirements.push(parse_term(&term)?);
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether a lease in `namespace` named `name` is selected.
    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        self.requirements.iter().all(|r| {
            let actual = match r.field {
                Field::Name => name,
                Field::Namespace => namespace,
            };
            (actual == r.value) == r.equals
        })
    }

    /// The one namespace the selector pins (`metadata.namespace=X`), which
    /// lets a listing of every namespace scan that namespace alone.
    pub fn namespace(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == Field::Namespace && r.equals)
            .map(|r| r.value.as_str())
    }
}

/// Splits at `sep` where it is not escaped, keeping escapes in the parts.
fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
            continue;
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

fn parse_term(term: &str) -> Result<Requirement, KubeError> {
    // The operator is the first unescaped `!=`, `==` or `=`.
    let bytes = term.as_bytes();
    let mut i = 0;
    let mut found = None;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                found = Some((i, 2, false));
                break;
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                found = Some((i, 2, true));
                break;
            }
            b'=' => {
                found = Some((i, 1, true));
                break;
            }
            _ => i += 1,
        }
    }
    let Some((at, len, equals)) = found else {
        return Err(KubeError::bad_param(
            PARAM,
            format!(
                "{term:?} is not a requirement of the form field=value, field==value or field!=value"
            ),
        ));
    };
    let key = term[..at].trim();
    let field = match key {
        "metadata.name" => Field::Name,
        "metadata.namespace" => Field::Namespace,
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(KubeError::bad_param(
                PARAM,
                format!("field label not supported: {shown}"),
            ));
        }
    };
    let value = unescape(term[at + len..].trim())?;
    Ok(Requirement {
        field,
        equals,
        value,
    })
}

fn unescape(v: &str) -> Result<String, KubeError> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(e @ ('\\' | ',' | '=' | '!')) => out.push(e),
            Some(other) => {
                return Err(KubeError::bad_param(
                    PARAM,
                    format!("invalid escape sequence \\{other}"),
                ))
            }
            None => {
                return Err(KubeError::bad_param(
                    PARAM,
                    "a value ends with an unfinished escape (\\)",
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> FieldSelector {
        FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e:?}"))
    }

    #[test]
    fn operators_and_matching() {
        let s = sel("metadata.name=a");
        assert!(s.matches("ns", "a"));
        assert!(!s.matches("ns", "b"));
        let s = sel("metadata.name==a,metadata.namespace!=kube-system");
        assert!(s.matches("ns", "a"));
        assert!(!s.matches("kube-system", "a"));
        assert!(sel("").matches("x", "y"));
        assert!(sel(" , ").matches("x", "y"));
        assert_eq!(sel("metadata.namespace=ns").namespace(), Some("ns"));
        assert_eq!(sel("metadata.namespace!=ns").namespace(), None);
        // An empty value is a value: nothing has an empty name.
        assert!(!sel("metadata.name=").matches("ns", "a"));
    }

    #[test]
    fn escapes() {
        let s = sel(r"metadata.name=a\,b\=c\\d");
        assert_eq!(s.requirements[0].value, r"a,b=c\d");
        assert_eq!(s.requirements.len(), 1);
        assert!(FieldSelector::parse(r"metadata.name=a\x").is_err());
        assert!(FieldSelector::parse(r"metadata.name=a\").is_err());
    }

    #[test]
    fn refusals_name_the_parameter() {
        for bad in [
            "spec.holderIdentity=a",
            "metadata.name",
            "metadata.name in (a)",
            &format!("metadata.name={}", "a".repeat(MAX_FIELD_SELECTOR_BYTES)),
        ] {
            let e = FieldSelector::parse(bad).expect_err(bad);
            let v = serde_json::to_value(&e.status).unwrap();
            assert_eq!(v["code"], 400, "{bad}");
            assert_eq!(v["details"]["causes"][0]["field"], PARAM, "{bad}");
        }
        let e = FieldSelector::parse("spec.holderIdentity=a").unwrap_err();
        assert!(e
            .status
            .message
            .contains("field label not supported: spec.holderIdentity"));
    }
}
