//! The JSON API under `/api/v1`: short-lived bearer tokens and a rotating refresh cookie.
//!
//! Errors are always JSON (the JSON face of [`crate::error::AppError`]), never HTML. The API takes
//! no CSRF token: bodies must be JSON, cross-site requests are refused, and the refresh cookie is
//! `SameSite=Strict`.

pub mod auth;
pub mod me;

use axum::{
    Json, Router,
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::Method,
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use tower::ServiceBuilder;

use crate::{
    error::{ApiError, AppError},
    state::AppState,
    web::{cache, failures},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(auth::router())
        .merge(me::router())
        .fallback(|| async { ApiError(AppError::NotFound) })
        .method_not_allowed_fallback(|| async { ApiError(AppError::MethodNotAllowed) })
        // One stack, so each route is wrapped once: the rules outside, so a request that runs
        // out of time is answered in JSON too.
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(api_rules))
                .layer(failures::timeout()),
        )
}

/// `Json<T>` whose rejections are JSON errors: 415 for a non-JSON body, 422 for a malformed one.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError(AppError::UnsupportedMediaType))
            }
            Err(rejection) => Err(ApiError(AppError::Validation {
                field: "body",
                message: rejection.body_text(),
            })),
        }
    }
}

/// One path segment as text, or a JSON 404 (never axum's plain-text 400).
pub struct ApiPath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ApiPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|_| ApiError(AppError::NotFound))
    }
}

/// The API's rules around every route, in one layer (a call pays for one, not three):
/// state-changing requests a browser marks as cross-site are refused before any handler runs, so
/// a cross-site page can neither sign in, refresh, nor sign a learner out; every answer is
/// `no-store`; and a library's bare 5xx becomes a JSON error.
async fn api_rules(request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let mut response = if !safe && !crate::auth::csrf::same_origin(request.headers()) {
        ApiError(AppError::Forbidden(
            "cross-site requests to the API are not accepted",
        ))
        .into_response()
    } else {
        failures::as_json(next.run(request).await)
    };
    cache::set_no_store(&mut response);
    response
}
