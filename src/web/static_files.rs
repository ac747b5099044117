//! Serves the embedded assets of [`crate::assets`] under `/static`, with their content type and
//! an ETag. A versioned address (`?v=` matching the content) is immutable for a year; the plain
//! address is revalidated on each use, so an old page never runs a stale script.
//!
//! Written here rather than taken from a crate: with the files already embedded by rust-embed,
//! what is left is these few header rules.

use axum::{
    Router,
    extract::{Path, Query},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

use crate::{assets::Asset, error::AppError};

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/{*path}", get(serve))
}

/// `/favicon.ico`, for browsers that ask before reading the page's icon link.
pub async fn favicon(headers: HeaderMap) -> Response {
    respond("favicon.svg", None, &headers)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Version {
    v: Option<String>,
}

async fn serve(
    Path(path): Path<String>,
    Query(version): Query<Version>,
    headers: HeaderMap,
) -> Response {
    respond(&path, version.v.as_deref(), &headers)
}

fn respond(name: &str, version: Option<&str>, headers: &HeaderMap) -> Response {
    let Some(asset) = Asset::get(name) else {
        return AppError::NotFound.into_response();
    };
    let etag = asset.etag.as_str();
    let cache = if version == Some(asset.version()) {
        "public, max-age=31536000, immutable"
    } else {
        "public, no-cache"
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = asset.data.clone().into_response();
        if let Ok(kind) = HeaderValue::from_str(&asset.content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, kind);
        }
        response
    };
    let out = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(etag) {
        out.insert(header::ETAG, tag);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}
