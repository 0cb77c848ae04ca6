//! Successful answers: a JSON body with `Content-Type: application/json`.
//!
//! Tables go out as `application/json` too: kubectl decodes the body by
//! its `kind` and `apiVersion`, not by parameters of the content type.
//! `?pretty=true` indents, as the apiserver does for people reading curl
//! output.

use super::status::KubeError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `value` as a 200 JSON answer.
pub fn json<T: Serialize>(value: &T, pretty: bool) -> Result<Response, KubeError> {
    let body = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
    .map_err(|e| KubeError::internal(format!("cannot encode the answer: {e}")))?;
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
