//! The libraries under Lectern (the session layer, axum-login, the request timeout) answer a
//! failure with a bare 5xx of their own. These layers, one on each router, turn such an answer
//! into Lectern's: a 503 page for the site, JSON for the API. A lost store fails closed, clearly.

use std::time::Duration;

use axum::{
    extract::Request,
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tower_http::timeout::TimeoutLayer;

use crate::error::AppError;

/// How long a request may take before it is answered with a 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The request timeout: a bare 503, which the layer outside it turns into a page or JSON.
pub fn timeout() -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT)
}

fn is_bare_failure(response: &Response) -> bool {
    response.status().is_server_error() && !response.headers().contains_key(header::CONTENT_TYPE)
}

fn cause() -> AppError {
    AppError::unavailable(anyhow::anyhow!(
        "the session store, the user lookup or the request timed out"
    ))
}

/// For pages.
pub async fn as_pages(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if is_bare_failure(&response) {
        return cause().into_response();
    }
    response
}

/// For the API (part of its one layer of rules, see `api`).
pub fn as_json(response: Response) -> Response {
    if is_bare_failure(&response) {
        return cause().json();
    }
    response
}
