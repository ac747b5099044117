//! CSRF protection for every state-changing page request (the JSON API takes none: it accepts only
//! JSON bodies and its cookie is `SameSite=Strict`).
//!
//! A signed-in session has a random token, rotated at every sign-in; requests must present it as
//! the `csrf_token` field or the `X-CSRF-Token` header. Visitors without a session get a stateless
//! token signed with a key derived from `LECTERN_SECRET` (so the homepage never creates a session
//! or sets a cookie), and their requests must also come from this origin (Fetch Metadata / Origin).

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use super::{CSRF_KEY, Keys, SESSION_COOKIE, extract::login_required};
use crate::{AppState, error::AppError, web};

/// How long a visitor's stateless token stays valid.
const ANONYMOUS_TTL: i64 = 12 * 3600;
/// Form bodies larger than this are refused before parsing.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A fresh per-session token.
pub fn session_token() -> String {
    super::random_token(32)
}

fn mac(keys: &Keys, issued: i64, nonce: &str) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(keys.csrf.as_slice()).ok()?;
    mac.update(format!("anonymous|{issued}|{nonce}").as_bytes());
    Some(mac)
}

/// A stateless token for visitors: `issued.nonce.mac`.
pub fn anonymous_token(keys: &Keys, now: i64) -> String {
    let nonce = super::random_token(12);
    let sig = mac(keys, now, &nonce)
        .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("{now}.{nonce}.{sig}")
}

fn anonymous_token_valid(keys: &Keys, token: &str, now: i64) -> bool {
    let mut parts = token.splitn(3, '.');
    let (Some(issued), Some(nonce), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(issued) = issued.parse::<i64>() else {
        return false;
    };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    issued <= now + 60
        && now - issued <= ANONYMOUS_TTL
        && mac(keys, issued, nonce).is_some_and(|m| m.verify_slice(&sig).is_ok())
}

/// Whether the browser says the request came from this site. Non-browser clients send neither
/// header and pass; a cross-site page cannot forge them.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
            let origin_host = origin.split_once("://").map(|(_, rest)| rest);
            host.is_some() && origin_host == host
        }
    }
}

fn refused() -> Response {
    AppError::Forbidden(
        "This form has expired or did not come from Lectern. Reload the page and try again.",
    )
    .into_response()
}

/// The middleware: safe methods pass; others need the right token or get 403 and change nothing.
pub async fn verify(
    State(state): State<AppState>,
    session: Session,
    request: Request,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let expected: Option<String> = match session.get(CSRF_KEY).await {
        Ok(v) => v,
        Err(err) => return AppError::unavailable(err).into_response(),
    };
    let (parts, body) = request.into_parts();
    let mut presented = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = match to_bytes(body, MAX_FORM_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return AppError::Validation {
                field: "body",
                message: "The form is too large.".into(),
            }
            .into_response();
        }
    };
    if presented.is_none() {
        presented = web::form_field(&parts.headers, &bytes, "csrf_token");
    }
    // A session cookie whose session is gone (idle timeout, ended elsewhere): the learner needs
    // to sign in again, which is a better answer than a 403 that htmx would silently drop.
    let expired = expected.is_none() && web::sent_cookie(&parts.headers, SESSION_COOKIE);
    if expired && !matches!(parts.uri.path(), "/login" | "/register" | "/logout") {
        return login_required(&parts, Some("expired"));
    }
    let ok = match (&expected, &presented) {
        (Some(expected), Some(presented)) => {
            bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
        }
        (Some(_), None) => false,
        // No live session: nothing to end on the server, but a cross-site page still may not
        // clear this browser's cookies.
        (None, _) if parts.uri.path() == "/logout" => same_origin(&parts.headers),
        (None, Some(presented)) => {
            same_origin(&parts.headers)
                && anonymous_token_valid(&state.keys, presented, crate::web::now())
        }
        (None, None) => false,
    };
    if !ok {
        tracing::warn!(path = parts.uri.path(), "csrf check failed");
        return refused();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn keys() -> Keys {
        Keys::derive(&[7; 32]).unwrap()
    }

    #[test]
    fn an_anonymous_token_verifies_only_with_its_key_and_in_time() {
        let now = crate::web::now();
        let token = anonymous_token(&keys(), now);
        assert!(anonymous_token_valid(&keys(), &token, now));
        assert!(!anonymous_token_valid(
            &Keys::derive(&[8; 32]).unwrap(),
            &token,
            now
        ));
        assert!(!anonymous_token_valid(
            &keys(),
            &token,
            now + ANONYMOUS_TTL + 1
        ));
        assert!(!anonymous_token_valid(&keys(), "1.2.3", now));
        assert!(!anonymous_token_valid(&keys(), "", now));
        let tampered = token.replacen('.', "1.", 1);
        assert!(!anonymous_token_valid(&keys(), &tampered, now));
    }

    #[test]
    fn cross_site_requests_are_not_same_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:3000"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:3000"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }
}
