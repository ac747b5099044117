//! One error type for everything a handler can fail with, and its two faces: an HTML page
//! (`templates/error.html`) for the site, RFC-style JSON (`{"error", "message"}`) for `/api/v1`.
//!
//! A 5xx is logged once with its cause chain and its detail never reaches the client.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::layout::Layout;

/// Errors that users can cause, and the ones they cannot (`Unavailable`, `Unexpected`).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("The email or password is not right.")]
    InvalidCredentials,
    #[error("You need to sign in.")]
    Unauthorized,
    /// RFC 6750: a missing, malformed, forged, expired or revoked bearer token.
    #[error("The access token is missing, malformed, expired or revoked.")]
    InvalidToken,
    /// The refresh token is missing, unknown, used or revoked.
    #[error("The refresh token is missing, invalid, already used or revoked. Sign in again.")]
    InvalidGrant,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("There is no page at this address. Check it, or go back to the homepage.")]
    NotFound,
    #[error("This address does not take that kind of request.")]
    MethodNotAllowed,
    #[error("Send a JSON body with Content-Type: application/json.")]
    UnsupportedMediaType,
    #[error("{message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    /// What was asked needs the password entered more recently (RFC 9470).
    #[error("This needs your password again: re-authenticate and try again.")]
    InsufficientAuthentication { max_age: i64 },
    /// An API sign-in made beside a browser that signed out meanwhile: it was ended with it.
    #[error("This browser was signed out while you were signing in. Sign in again.")]
    SignedOutMeanwhile,
    #[error("Too many attempts. Try again {}.", in_words(*retry_after))]
    RateLimited { retry_after: u64 },
    #[error("a service Lectern depends on is not answering")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A wait in words: "in a moment", "in 40 seconds", "in about a minute", "in 3 minutes".
pub fn in_words(seconds: u64) -> String {
    match seconds {
        0..=5 => "in a moment".to_owned(),
        6..=50 => format!("in {seconds} seconds"),
        51..=90 => "in about a minute".to_owned(),
        _ => format!("in {} minutes", seconds.div_ceil(60)),
    }
}

/// The crate-wide result type.
pub type Result<T, E = AppError> = std::result::Result<T, E>;

impl AppError {
    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        Self::Unavailable(cause.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidCredentials
            | Self::Unauthorized
            | Self::InvalidToken
            | Self::InvalidGrant
            | Self::SignedOutMeanwhile
            | Self::InsufficientAuthentication { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code of the JSON face.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::Unauthorized | Self::InvalidToken => "invalid_token",
            Self::InvalidGrant => "invalid_grant",
            Self::SignedOutMeanwhile => "signed_out",
            Self::InsufficientAuthentication { .. } => "insufficient_user_authentication",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Validation { .. } => "invalid_request",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "temporarily_unavailable",
            Self::Unexpected(_) => "server_error",
        }
    }

    /// The page's heading, in plain words.
    pub fn heading(&self) -> &'static str {
        match self {
            Self::InvalidCredentials | Self::Unauthorized | Self::SignedOutMeanwhile => {
                "Please sign in"
            }
            Self::InvalidToken | Self::InvalidGrant | Self::InsufficientAuthentication { .. } => {
                "Please sign in again"
            }
            Self::Forbidden(_) => "That was not allowed",
            Self::NotFound => "Page not found",
            Self::MethodNotAllowed => "Not something this page does",
            Self::UnsupportedMediaType | Self::Validation { .. } => {
                "Something in the request is not right"
            }
            Self::RateLimited { .. } => "Too many attempts",
            Self::Unavailable(_) => "Lectern is not available right now",
            Self::Unexpected(_) => "Something went wrong",
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
    fn log(&self) {
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

    /// Headers either face carries.
    fn decorate(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        match self {
            Self::RateLimited { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            Self::InsufficientAuthentication { max_age } => {
                let challenge = format!(
                    r#"Bearer error="insufficient_user_authentication", max_age={max_age}"#
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        response
    }

    /// The HTML face, with the learner's header when the caller knows them.
    pub fn page(self, layout: Layout) -> Response {
        self.log();
        let status = self.status();
        let page = ErrorPage {
            layout,
            status: status.as_u16(),
            title: self.heading(),
            message: self.public_message(),
        };
        self.decorate((status, page).into_response())
    }

    /// The JSON face.
    pub fn json(self) -> Response {
        self.log();
        let body = json!({ "error": self.code(), "message": self.public_message() });
        let response = (self.status(), Json(body)).into_response();
        self.decorate(response)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        if connection_lost(&err) {
            return Self::Unavailable(anyhow::Error::new(err).context("database"));
        }
        Self::Unexpected(anyhow::Error::new(err).context("database query"))
    }
}

/// Whether the database cannot be used now, though it may be in a moment: it could not be
/// reached or dropped the connection (SQLSTATE class 08; 57P01-57P03 and 57P05: shut down by an
/// administrator, crash shutdown, cannot connect now, idle session timeout), it is out of
/// resources (class 53: too many clients, out of memory or disk), it is not accepting connections
/// (55000), or a lock or a conflicting transaction stood in the way (55P03, 40001, 40P01).
pub(crate) fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(
                    &*code,
                    "57P01" | "57P02" | "57P03" | "57P05" | "55000" | "55P03" | "40001" | "40P01"
                )
        }),
        _ => false,
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    title: &'static str,
    message: String,
}

/// A page handler's error: the HTML face.
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.page(Layout::bare())
    }
}

/// An API handler's error: the same [`AppError`], answered with its JSON face.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl<E: Into<AppError>> From<E> for ApiError {
    fn from(err: E) -> Self {
        Self(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.json()
    }
}

/// The result type of API handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_5xx_never_shows_its_cause() {
        let err = AppError::Unexpected(anyhow::anyhow!("secret detail"));
        assert!(!err.public_message().contains("secret"));
        let err = AppError::unavailable(anyhow::anyhow!("redis at 10.0.0.1"));
        assert!(!err.public_message().contains("10.0.0.1"));
    }

    #[test]
    fn both_faces_carry_the_status_and_retry_after() {
        let page = AppError::RateLimited { retry_after: 7 }.page(Layout::bare());
        assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(page.headers()[header::RETRY_AFTER], "7");
        assert!(
            page.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap_or("")
                .starts_with("text/html")
        );
        let json = AppError::InvalidToken.json();
        assert_eq!(json.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            json.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
    }

    /// A database error with only a SQLSTATE, as a driver reports one.
    #[derive(Debug, thiserror::Error)]
    #[error("database error {0}")]
    struct Coded(&'static str);

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    #[test]
    fn a_lost_database_connection_is_a_503_and_a_failed_query_a_500() {
        let status = |code| AppError::from(sqlx::Error::Database(Box::new(Coded(code)))).status();
        for lost in [
            "57P01", "57P02", "57P03", "57P05", "08006", "08003", "55000", "53300", "53100",
            "53200", "55P03", "40001", "40P01",
        ] {
            assert_eq!(status(lost), StatusCode::SERVICE_UNAVAILABLE, "{lost}");
        }
        for failed in ["23505", "42P01", "57014", "P0001"] {
            assert_eq!(
                status(failed),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{failed}"
            );
        }
    }
}
