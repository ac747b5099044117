//! CSRF protection for every state-changing page request (the JSON API takes none: it accepts only
//! JSON bodies, refuses cross-site requests, and its cookie is `SameSite=Strict`).
//!
//! A session that holds a sign-in has a token derived from its id (an HMAC under a key derived
//! from `LECTERN_SECRET`): the session record stores none, nobody can compute it without the
//! secret, and it changes at every sign-in, which gives the session a new id. Requests present it
//! as the `csrf_token` field or the `X-CSRF-Token` header. Visitors get a stateless token signed
//! with the same key (so the homepage never creates a session or sets a cookie), and their
//! requests must also come from this origin (Fetch Metadata / Origin). Both tokens are Lectern's
//! own code because no crate offers one that needs no stored state.
//!
//! The rules are applied as route layers by [`super::guards`]; the sign-out checks its token
//! itself (it must read any body).

use axum::http::{HeaderMap, header};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{AUTH_DATA_KEY, Keys};
use crate::web::forms::form_field;

/// How long a visitor's stateless token stays valid.
const ANONYMOUS_TTL: i64 = 12 * 3600;

fn keyed(keys: &Keys) -> Option<Hmac<Sha256>> {
    <Hmac<Sha256> as Mac>::new_from_slice(keys.csrf.as_slice()).ok()
}

/// The token of the browser session `session_id` (one that holds a sign-in).
pub fn session_token(keys: &Keys, session_id: &str) -> String {
    match keyed(keys) {
        Some(mut mac) => {
            mac.update(b"session|");
            mac.update(session_id.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes a key of any length, so this never happens; if it did, a random token
        // matches nothing.
        None => crate::crypto::random_token(32),
    }
}

/// Whether a session record holds a sign-in, so that its state changes need its token:
/// axum-login writes its data at a sign-in, and a sign-out deletes the record.
pub fn holds_sign_in(record: &tower_sessions::session::Record) -> bool {
    record.data.contains_key(AUTH_DATA_KEY)
}

/// The token a state change by `auth`'s browser must carry: its session's when the session holds
/// a learner, `None` otherwise (a visitor, or a session whose learner is not found: the request
/// then needs a stateless token from this origin, as a visitor's does).
pub fn expected(keys: &Keys, auth: &super::AuthSession) -> Option<String> {
    auth.user.as_ref()?;
    auth.session
        .id()
        .map(|id| session_token(keys, &id.to_string()))
}

fn mac(keys: &Keys, issued: i64, nonce: &str) -> Option<Hmac<Sha256>> {
    let mut mac = keyed(keys)?;
    mac.update(format!("anonymous|{issued}|{nonce}").as_bytes());
    Some(mac)
}

/// A stateless token for visitors: `issued.nonce.mac`.
pub fn anonymous_token(keys: &Keys, now: i64) -> String {
    let nonce = crate::crypto::random_token(12);
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
        && now.saturating_sub(issued) <= ANONYMOUS_TTL
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

/// Whether `presented` is `expected`, in constant time.
pub fn matches(expected: &str, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| bool::from(expected.as_bytes().ct_eq(p.as_bytes())))
}

/// The token a request presents: the `X-CSRF-Token` header, or the form's `csrf_token` field.
pub fn presented(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| form_field(headers, body, "csrf_token"))
}

/// Whether a visitor's request carries a valid stateless token and comes from this origin.
pub fn visitor_may(keys: &Keys, headers: &HeaderMap, token: Option<&str>, now: i64) -> bool {
    same_origin(headers) && token.is_some_and(|t| anonymous_token_valid(keys, t, now))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn keys() -> Keys {
        Keys::derive(&[7; 32])
    }

    const NOW: i64 = 1_900_000_000;

    #[test]
    fn an_anonymous_token_verifies_only_with_its_key_and_in_time() {
        let token = anonymous_token(&keys(), NOW);
        assert!(anonymous_token_valid(&keys(), &token, NOW));
        assert!(!anonymous_token_valid(&Keys::derive(&[8; 32]), &token, NOW));
        assert!(!anonymous_token_valid(
            &keys(),
            &token,
            NOW + ANONYMOUS_TTL + 1
        ));
        assert!(!anonymous_token_valid(&keys(), "1.2.3", NOW));
        assert!(!anonymous_token_valid(&keys(), "", NOW));
        let tampered = token.replacen('.', "1.", 1);
        assert!(!anonymous_token_valid(&keys(), &tampered, NOW));
        // Issue times at the ends of the range are refused, not an overflow.
        for issued in [i64::MIN, i64::MAX] {
            assert!(!anonymous_token_valid(
                &keys(),
                &format!("{issued}.n.s"),
                NOW
            ));
        }
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

    #[test]
    fn tokens_match_exactly() {
        assert!(matches("abc", Some("abc")));
        assert!(!matches("abc", Some("abd")));
        assert!(!matches("abc", None));
    }
}
