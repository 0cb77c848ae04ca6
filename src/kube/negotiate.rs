//! Content negotiation: which representation the `Accept` header asks for.
//!
//! kubectl's `get` sends
//! `application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json`
//! and prints a server-side Table when it gets one; `-o json`, `describe`
//! and client libraries send `application/json` (client-go puts protobuf
//! first, then JSON). Ranges are tried by decreasing `q` (ties in the
//! order given), and the first this server can produce wins:
//! - `application/json` without `as`, `application/*` and `*/*`: JSON;
//! - `application/json;as=Table;g=meta.k8s.io;v=v1` (or `v1beta1`): a
//!   Table, where the endpoint offers one;
//! - anything else (protobuf, YAML, CBOR, `as=PartialObjectMetadata`,
//!   aggregated discovery) is skipped. Nothing left: 406.
//!
//! A missing or empty header means JSON. The header is at most
//! [`MAX_ACCEPT_BYTES`]; a longer one is a 400 naming it.

use super::status::KubeError;
use axum::http::{header, HeaderMap};

/// Longest `Accept` header considered, in bytes.
pub const MAX_ACCEPT_BYTES: usize = 4 * 1024;

/// The version of `meta.k8s.io` a Table is asked for in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableVersion {
    /// `meta.k8s.io/v1`.
    V1,
    /// `meta.k8s.io/v1beta1` (same shape).
    V1beta1,
}

impl TableVersion {
    /// The `apiVersion` of the Table and of its rows' PartialObjectMetadata.
    pub fn api_version(self) -> &'static str {
        match self {
            TableVersion::V1 => "meta.k8s.io/v1",
            TableVersion::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// What to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The object (or list) as JSON.
    Json,
    /// A `meta.k8s.io` Table.
    Table(TableVersion),
}

/// The media types an endpoint offering Tables produces (for the 406
/// message).
pub const WITH_TABLE: &[&str] = &[
    "application/json",
    "application/json;as=Table;v=v1;g=meta.k8s.io",
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
];

/// The media types an endpoint without Tables produces.
pub const JSON_ONLY: &[&str] = &["application/json"];

/// One media range of the header.
struct Range<'a> {
    mime: String,
    params: Vec<(String, &'a str)>,
    q: f32,
}

fn parse_range(text: &str) -> Range<'_> {
    let mut parts = text.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let mut params = Vec::new();
    let mut q = 1.0;
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().trim_matches('"');
        if k == "q" {
            q = v.parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0);
        } else {
            params.push((k, v));
        }
    }
    Range { mime, params, q }
}

impl Range<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    fn representation(&self, tables: bool) -> Option<Representation> {
        match self.mime.as_str() {
            "*/*" | "application/*" => Some(Representation::Json),
            "application/json" => match self.param("as") {
                None => Some(Representation::Json),
                Some("Table") if tables && self.param("g") == Some("meta.k8s.io") => {
                    match self.param("v") {
                        Some("v1") => Some(Representation::Table(TableVersion::V1)),
                        Some("v1beta1") => Some(Representation::Table(TableVersion::V1beta1)),
                        _ => None,
                    }
                }
                Some(_) => None,
            },
            _ => None,
        }
    }
}

/// The representation `headers` ask for, among JSON and (when `tables`)
/// Tables.
pub fn negotiate(headers: &HeaderMap, tables: bool) -> Result<Representation, KubeError> {
    let offered = if tables { WITH_TABLE } else { JSON_ONLY };
    let mut values = headers.get_all(header::ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return Ok(Representation::Json);
    }
    let mut text = String::new();
    for v in values {
        let v = v
            .to_str()
            .map_err(|_| KubeError::bad_param("Accept header", "it is not visible ASCII"))?;
        if !text.is_empty() {
            text.push(',');
        }
        text.push_str(v);
        if text.len() > MAX_ACCEPT_BYTES {
            return Err(KubeError::bad_param(
                "Accept header",
                format!("it is longer than {MAX_ACCEPT_BYTES} bytes"),
            ));
        }
    }
    if text.trim().is_empty() {
        return Ok(Representation::Json);
    }
    let mut ranges: Vec<Range<'_>> = text
        .split(',')
        .filter(|r| !r.trim().is_empty())
        .map(parse_range)
        .collect();
    // Stable: equal q keeps the client's order.
    ranges.sort_by(|a, b| b.q.total_cmp(&a.q));
    ranges
        .iter()
        .filter(|r| r.q > 0.0)
        .find_map(|r| r.representation(tables))
        .ok_or_else(|| KubeError::not_acceptable(offered))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(accept: &str, tables: bool) -> Result<Representation, KubeError> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        negotiate(&h, tables)
    }

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn kubectl_get_gets_a_v1_table() {
        assert_eq!(
            with(KUBECTL_GET, true).unwrap(),
            Representation::Table(TableVersion::V1)
        );
        // Where no Table is offered, the last choice (JSON) wins.
        assert_eq!(with(KUBECTL_GET, false).unwrap(), Representation::Json);
        assert_eq!(
            with("application/json;as=Table;v=v1beta1;g=meta.k8s.io", true).unwrap(),
            Representation::Table(TableVersion::V1beta1)
        );
    }

    #[test]
    fn plain_json_wildcards_and_no_header() {
        assert_eq!(
            with("application/json", true).unwrap(),
            Representation::Json
        );
        assert_eq!(
            with("application/json, */*", false).unwrap(),
            Representation::Json
        );
        assert_eq!(with("*/*", true).unwrap(), Representation::Json);
        assert_eq!(
            negotiate(&HeaderMap::new(), true).unwrap(),
            Representation::Json
        );
        assert_eq!(with("", true).unwrap(), Representation::Json);
        // client-go's typed clients: protobuf first, then JSON.
        assert_eq!(
            with("application/vnd.kubernetes.protobuf,application/json", true).unwrap(),
            Representation::Json
        );
        // Aggregated discovery first, legacy JSON last (kubectl's /apis).
        assert_eq!(
            with(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
                false
            )
            .unwrap(),
            Representation::Json
        );
    }

    #[test]
    fn q_values_order_the_choices() {
        assert_eq!(
            with(
                "application/json;q=0.5,application/json;as=Table;v=v1;g=meta.k8s.io",
                true
            )
            .unwrap(),
            Representation::Table(TableVersion::V1)
        );
        assert!(with("application/json;q=0", true).is_err());
    }

    #[test]
    fn nothing_acceptable_is_406() {
        for accept in [
            "application/vnd.kubernetes.protobuf",
            "application/yaml",
            "application/json;as=Table;v=v2;g=meta.k8s.io",
            "application/json;as=Table;v=v1",
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
            "text/html",
        ] {
            let e = with(accept, true).expect_err(accept);
            assert_eq!(e.status.code, 406, "{accept}");
            assert_eq!(e.status.reason, "NotAcceptable");
        }
        assert_eq!(
            with("application/json;as=Table;v=v1;g=meta.k8s.io", false)
                .unwrap_err()
                .status
                .code,
            406
        );
    }

    #[test]
    fn an_oversized_header_is_refused_by_name() {
        let e = with(&"application/json,".repeat(400), true).unwrap_err();
        assert_eq!(e.status.code, 400);
        assert!(e.status.message.contains("Accept header"));
    }
}
