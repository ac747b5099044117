//! Headers every response carries: a Content-Security-Policy that allows only this origin, and
//! the usual hardening.

use axum::{
    http::{HeaderName, HeaderValue},
    response::Response,
};
use tower::util::MapResponseLayer;

/// Scripts, styles and everything else come from this origin only; no inline code at all.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Each header, unless the response set its own.
const HEADERS: [(HeaderName, HeaderValue); 5] = [
    (
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    ),
    (
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    ),
    (
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("same-origin"),
    ),
    (
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    ),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    ),
];

fn add_headers(mut response: Response) -> Response {
    let out = response.headers_mut();
    for (name, value) in HEADERS {
        out.entry(name).or_insert(value);
    }
    response
}

/// Adds the security headers to every response of the service it wraps.
pub fn headers() -> MapResponseLayer<fn(Response) -> Response> {
    MapResponseLayer::new(add_headers)
}
