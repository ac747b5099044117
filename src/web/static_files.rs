//! Serves the embedded assets of [`crate::assets`] under `/static`, with their content type and
//! an ETag, gzipped for a client that accepts it. A versioned address (`?v=` matching the content) is immutable for a year; the plain
//! address is revalidated on each use, so an old page never runs a stale script.
//!
//! Written here rather than taken from a crate: with the files already embedded by rust-embed,
//! what is left is these few header rules.

use std::borrow::Cow;

use axum::{
    Router,
    extract::{Path, Request},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{assets::Asset, error::AppError, web::forms::query_field};

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    // At its full address rather than nested: nesting rebuilds each request's URI.
    Router::new().route("/static/{*path}", get(serve))
}

/// `/favicon.ico`, for browsers that ask before reading the page's icon link.
pub async fn favicon(request: Request) -> Response {
    respond("favicon.svg", None, request.headers())
}

/// The request is taken whole, so its headers are read where they are, not copied.
async fn serve(Path(path): Path<String>, request: Request) -> Response {
    let version = query_field(request.uri().query(), "v");
    respond(&path, version, request.headers())
}

fn respond(name: &str, version: Option<Cow<'_, str>>, headers: &HeaderMap) -> Response {
    let Some(asset) = Asset::get(name) else {
        return AppError::NotFound.into_response();
    };
    let (data, etag, gzipped) = match &asset.gzip {
        Some(gzip) if accepts_gzip(headers) => (&gzip.data, &gzip.etag, true),
        _ => (&asset.data, &asset.etag, false),
    };
    let cache = if version.as_deref() == Some(asset.version()) {
        "public, max-age=31536000, immutable"
    } else {
        "public, no-cache"
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .map(str::trim)
                .any(|t| t.as_bytes() == etag.as_bytes() || t == "*")
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = data.clone().into_response();
        let out = response.headers_mut();
        out.insert(header::CONTENT_TYPE, asset.content_type.clone());
        if gzipped {
            out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    };
    let out = response.headers_mut();
    out.insert(header::ETAG, etag.clone());
    if asset.gzip.is_some() {
        out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// Whether `Accept-Encoding` accepts gzip: named (or `*`, when gzip is not named) without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    for coding in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let accepted = !parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if name.eq_ignore_ascii_case("gzip") {
            gzip = Some(accepted);
        } else if name == "*" {
            any = Some(accepted);
        }
    }
    gzip.or(any).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        accepts_gzip(&headers)
    }

    #[test]
    fn gzip_is_sent_only_where_accepted() {
        assert!(accepting("gzip, deflate, br, zstd"));
        assert!(accepting("br;q=1.0, GZIP;q=0.5"));
        assert!(accepting("*"));
        assert!(!accepting("br"));
        assert!(!accepting("gzip;q=0"));
        assert!(!accepting("gzip;q=0, *"));
        assert!(!accepting("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
