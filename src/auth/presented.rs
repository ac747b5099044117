//! What a sign-out request presents, read leniently, whatever the state of its session (live,
//! idled out, expired, gone) and whatever body it is sent: the session cookie and its record, the
//! CSRF verdict, the bearer token's claims (even expired), the refresh cookie, the scope and the
//! sealed retry note. The sign-out routes sit outside the session layers and take this instead, so
//! nothing saves a record back after the sign-out deleted it.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequest, Request},
    http::header,
};
use axum_extra::extract::cookie::{CookieJar, SignedCookieJar};
use secrecy::SecretString;

use super::{
    Keys,
    access_tokens::AccessTokens,
    csrf, refresh_tokens,
    sign_ins::browser_sign_in_id,
    sign_out::{self, Scope, Targets},
};
use crate::{
    clock::Clock,
    error::AppError,
    store::SessionRecords,
    web::{
        cookies::SESSION_COOKIE,
        forms::{MAX_FORM_BYTES, form_field, query_field, read_prefix},
    },
};

/// A sign-out request as presented.
#[derive(Debug)]
pub struct Presented {
    pub request: sign_out::Request,
    pub htmx: bool,
    /// Whether it may sign this browser out: it carries its session's CSRF token, or, when the
    /// session has none (gone, or never signed in), it comes from this origin.
    pub allowed: bool,
    /// The session store could not be read, so nothing can be confirmed.
    pub unreadable: Option<AppError>,
    /// The session's CSRF token, for a form asking for the password again.
    pub csrf: Option<String>,
    /// The password, when the form carries it (what reaches beyond this browser needs it
    /// entered recently, see [`super::recent`]).
    pub current_password: Option<SecretString>,
}

impl<S> FromRequest<S> for Presented
where
    S: Send + Sync,
    Keys: FromRef<S>,
    Clock: FromRef<S>,
    SessionRecords: FromRef<S>,
    Arc<AccessTokens>: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let headers = &parts.headers;
        // Any body at all: read what fits and never refuse for the rest.
        let body = read_prefix(body, MAX_FORM_BYTES).await;
        let keys = Keys::from_ref(state);
        let now = Clock::from_ref(state).now();
        let retry = form_field(headers, &body, "retry")
            .and_then(|sealed| Targets::open(&keys, &sealed, now))
            .unwrap_or_default();
        let scope = Scope::parse(
            form_field(headers, &body, "scope")
                .as_deref()
                .or(query_field(parts.uri.query(), "scope").as_deref()),
        );
        let session = CookieJar::from_headers(headers)
            .get(SESSION_COOKIE)
            .map(|c| c.value().to_owned())
            .filter(|id| !id.is_empty());
        let (record, unreadable) = match &session {
            Some(id) => match SessionRecords::from_ref(state).find(id).await {
                Ok(record) => (record, None),
                Err(err) => (None, Some(err)),
            },
            None => (None, None),
        };
        let holds_sign_in = record.as_ref().is_some_and(csrf::holds_sign_in);
        let token = session
            .as_deref()
            .filter(|_| holds_sign_in)
            .map(|id| csrf::session_token(&keys, id));
        let allowed = match &token {
            Some(expected) => csrf::matches(expected, csrf::presented(headers, &body).as_deref()),
            None => csrf::same_origin(headers),
        };
        let signed_in = session
            .as_deref()
            .filter(|_| holds_sign_in)
            .map(browser_sign_in_id);
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|token| Arc::<AccessTokens>::from_ref(state).verify_ignoring_expiry(token));
        let signed = SignedCookieJar::from_headers(headers, keys.cookie.clone());
        Ok(Self {
            request: sign_out::Request {
                scope,
                session,
                signed_in,
                bearer,
                refresh: refresh_tokens::from_jar(&signed),
                retry,
            },
            htmx: headers
                .get("hx-request")
                .is_some_and(|v| v.as_bytes() == b"true"),
            allowed,
            unreadable,
            csrf: token,
            current_password: form_field(headers, &body, "current_password")
                .map(SecretString::from),
        })
    }
}
