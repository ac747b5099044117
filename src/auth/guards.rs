//! The route layers that guard the site's forms and the learner's pages (see `app`): who may
//! reach them, and which CSRF token a state change must carry ([`super::csrf`]).

use axum::{
    body::Body,
    extract::{FromRef, Request, State},
    http::{Method, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    AuthSession, CurrentUser, Keys,
    csrf::{expected, matches, presented, visitor_may},
};
use crate::{clock::Clock, error::AppError, web::forms::MAX_FORM_BYTES};

fn refused() -> Response {
    tracing::warn!("csrf check failed");
    AppError::Forbidden(
        "This form has expired or did not come from Lectern. Reload the page and try again.",
    )
    .into_response()
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Buffers the body (at most [`MAX_FORM_BYTES`]) to read the token, and puts it back.
async fn split(request: Request) -> Result<(Parts, axum::body::Bytes), Response> {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(bytes) => Ok((parts, bytes)),
        Err(_) => Err(AppError::Validation {
            field: "body",
            message: "The form is too large.".into(),
        }
        .into_response()),
    }
}

/// For the learner's routes: no sign-in, no entry (the login page, saying why, for pages and
/// actions alike); a state change must carry the session's token.
pub async fn learners_only(current: CurrentUser, request: Request, next: Next) -> Response {
    let mut response = if is_safe(request.method()) {
        next.run(request).await
    } else {
        let (parts, bytes) = match split(request).await {
            Ok(split) => split,
            Err(response) => return response,
        };
        if !matches(&current.csrf, presented(&parts.headers, &bytes).as_deref()) {
            return refused();
        }
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    };
    // Where the sign-in's idle deadline stands after this request, for the page's warning.
    let clock = &current.clock;
    let said = format!("{}; now={}", clock.idle_until, clock.now);
    if let Ok(value) = axum::http::HeaderValue::from_str(&said) {
        response.headers_mut().insert("x-lectern-idle-until", value);
    }
    response
}

/// For the sign-in and sign-up forms: a signed-in learner's session token, or a visitor's
/// stateless token from this origin.
pub async fn visitors_and_learners<S>(
    State(state): State<S>,
    auth: AuthSession,
    request: Request,
    next: Next,
) -> Response
where
    S: Send + Sync,
    Keys: FromRef<S>,
    Clock: FromRef<S>,
{
    if is_safe(request.method()) {
        return next.run(request).await;
    }
    let expected = expected(&Keys::from_ref(&state), &auth);
    let (parts, bytes) = match split(request).await {
        Ok(split) => split,
        Err(response) => return response,
    };
    let token = presented(&parts.headers, &bytes);
    let now = Clock::from_ref(&state).now();
    let ok = match &expected {
        Some(expected) => matches(expected, token.as_deref()),
        None => visitor_may(
            &Keys::from_ref(&state),
            &parts.headers,
            token.as_deref(),
            now,
        ),
    };
    if !ok {
        return refused();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
