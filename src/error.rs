//! One error type for everything a handler can fail with.
//!
//! Pages render `templates/error.html`; `/api` wraps it in [`crate::api::ApiError`] and answers JSON.
//! A 5xx is logged once with its cause chain and its detail never reaches the client.

use askama::Template;
use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

/// Errors that users can cause, and the one that they cannot (`Unexpected`).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the email or password is not right")]
    InvalidCredentials,
    #[error("you need to sign in")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    #[error("too many attempts; try again in {retry_after} seconds")]
    RateLimited { retry_after: u64 },
    #[error("a service Lectern depends on is not answering")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The crate-wide result type.
pub type Result<T, E = AppError> = std::result::Result<T, E>;

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidCredentials | Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told: never the detail of a 5xx.
    pub fn public_message(&self) -> String {
        match self {
            Self::Unavailable(_) => {
                "Lectern cannot reach one of its services right now. Please try again in a moment."
                    .to_owned()
            }
            Self::Unexpected(_) => "Something went wrong on our side. Please try again.".to_owned(),
            other => other.to_string(),
        }
    }

    /// Logs server-side failures once, with their cause chain.
    pub fn log(&self) {
        match self {
            Self::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "dependency unavailable")
            }
            Self::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "unexpected error")
            }
            _ => {}
        }
    }

    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        Self::Unavailable(cause.into())
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable(err.into())
            }
            other => Self::Unexpected(anyhow::Error::new(other).context("database query")),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: crate::web::Layout,
    status: u16,
    title: &'static str,
    message: String,
}

impl AppError {
    /// The error page with a given layout (the learner's header when the caller knows them).
    pub fn into_page(self, layout: crate::web::Layout) -> Response {
        self.log();
        let status = self.status();
        let page = ErrorPage {
            layout,
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            message: self.public_message(),
        };
        let body = page
            .render()
            .unwrap_or_else(|_| format!("{} {}", status.as_u16(), page.message));
        let mut response = (status, Html(body)).into_response();
        if let Self::RateLimited { retry_after } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.into_page(crate::web::Layout::bare())
    }
}
