//! The JSON API under `/api/v1`: short-lived bearer tokens and a rotating refresh cookie.
//!
//! Errors are always JSON (`{"error", "message"}`), never HTML. The API takes no CSRF token: it
//! accepts only `application/json` bodies (or none), and the refresh cookie is `SameSite=Strict`.

use axum::{
    Json, Router,
    extract::{FromRequest, Request, State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use axum_extra::extract::cookie::SignedCookieJar;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::json;

use crate::{
    AppState,
    auth::{
        Backend, BearerUser,
        backend::Credentials,
        extract::bearer_token,
        ratelimit, refresh,
        refresh::Presented,
        signin::{self, EndReason},
        signout::clear_client_state,
    },
    courses,
    error::AppError,
    users,
    web::{ClientInfo, now},
};

/// An API failure, rendered as RFC-style JSON.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// RFC 6750: missing, malformed, forged, expired or revoked bearer token.
    #[error("the access token is missing, malformed, expired or revoked")]
    InvalidToken,
    #[error("the email or password is not right")]
    InvalidCredentials,
    /// The refresh token is missing, unknown, used or revoked.
    #[error("the refresh token is missing, invalid, already used or revoked; sign in again")]
    InvalidGrant,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("send a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("no such endpoint")]
    NotFound,
    #[error("this endpoint does not take that method")]
    MethodNotAllowed,
    #[error(transparent)]
    App(#[from] AppError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            Self::InvalidGrant => (StatusCode::UNAUTHORIZED, "invalid_grant"),
            Self::InvalidRequest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::App(err) => (
                err.status(),
                match err {
                    AppError::RateLimited { .. } => "rate_limited",
                    AppError::Unavailable(_) => "temporarily_unavailable",
                    AppError::Validation { .. } => "invalid_request",
                    AppError::Forbidden(_) => "forbidden",
                    AppError::NotFound => "not_found",
                    AppError::InvalidCredentials => "invalid_credentials",
                    AppError::Unauthorized => "invalid_token",
                    AppError::Unexpected(_) => "server_error",
                },
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::App(err) => {
                err.log();
                err.public_message()
            }
            other => other.to_string(),
        };
        let mut response =
            (status, Json(json!({ "error": code, "message": message }))).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            Self::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            Self::App(AppError::RateLimited { retry_after }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// `Json<T>` whose rejections are JSON errors: 415 for a non-JSON body, 422 for a malformed one.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(rejection) => Err(ApiError::InvalidRequest(rejection.body_text())),
        }
    }
}

/// Refuses bodies that are not JSON, and state-changing requests a browser marks as cross-site,
/// before any handler runs: a cross-site form cannot reach the API.
async fn json_only(request: Request, next: Next) -> Response {
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|len| len != "0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let mime = ct.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json")
        });
    if has_body && !json {
        return ApiError::UnsupportedMediaType.into_response();
    }
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe && !crate::auth::csrf::same_origin(request.headers()) {
        return ApiError::App(AppError::Forbidden(
            "cross-site requests to the API are not accepted",
        ))
        .into_response();
    }
    next.run(request).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/me", get(me))
        .route("/me/courses", get(my_courses))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(json_only))
}

#[derive(Debug, Deserialize)]
pub struct LoginBody {
    email: String,
    password: secrecy::SecretString,
}

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
}

fn token_response(jar: SignedCookieJar, issued: &signin::Issued) -> Response {
    let body = TokenResponse {
        access_token: issued.token.clone(),
        token_type: "Bearer",
        expires_in: issued.claims.exp - issued.claims.iat,
    };
    (jar, Json(body)).into_response()
}

async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: SignedCookieJar,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    ratelimit::per_ip(&state, "login", &client).await?;
    let creds = Credentials::new(&body.email, body.password);
    let email = creds.email.clone();
    ratelimit::account_open(&state, email.as_ref()).await?;
    let backend = Backend::new(state.db.clone(), state.passwords.clone());
    let Some(user) = axum_login::AuthnBackend::authenticate(&backend, creds).await? else {
        ratelimit::account_failed(&state, email.as_ref()).await?;
        return Err(ApiError::InvalidCredentials);
    };
    let started = signin::start(&state, &user, &client).await?;
    let issued = signin::issue_access_token(&state, &user.id, &started.sid).await?;
    let jar = refresh::set_cookie(
        jar,
        &started.refresh,
        started.expires_at - now(),
        state.settings.secure_cookies,
    );
    Ok(token_response(jar, &issued))
}

/// Rotates the refresh token. A token presented twice was copied: its whole family is revoked.
async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: SignedCookieJar,
) -> ApiResult<Response> {
    ratelimit::per_ip(&state, "refresh", &client).await?;
    let token = refresh::from_jar(&jar).ok_or(ApiError::InvalidGrant)?;
    let sid = match refresh::consume(&state.db, &token, now()).await? {
        Presented::Current { sid } => sid,
        Presented::Reused { sid } => {
            tracing::warn!(sign_in.id = %sid, ip = %client.ip, "refresh token reused: revoking its family");
            signin::end(&state, &sid, EndReason::RefreshReuse, &client).await?;
            return Err(ApiError::InvalidGrant);
        }
        Presented::Unknown => return Err(ApiError::InvalidGrant),
    };
    let sign_in = signin::find(&state.db, &sid)
        .await?
        .ok_or(ApiError::InvalidGrant)?;
    if !sign_in.is_live(now()) || !state.kv.is_live(&sid).await? {
        return Err(ApiError::InvalidGrant);
    }
    let next = refresh::issue(&state.db, &sid, now()).await?;
    let issued = signin::issue_access_token(&state, &sign_in.user_id, &sid).await?;
    let jar = refresh::set_cookie(
        jar,
        &next,
        sign_in.expires_at - now(),
        state.settings.secure_cookies,
    );
    Ok(token_response(jar, &issued))
}

/// Ends the sign-in(s) named by the bearer token and/or the refresh cookie. Always 204 with the
/// cookie cleared, unless the revocation could not be confirmed (503).
async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Response {
    let outcome = async {
        let mut sids = Vec::new();
        if let Some(claims) =
            bearer_token(&headers).and_then(|t| state.keys.jwt.verify_ignoring_expiry(t))
        {
            sids.push(claims.sid);
        }
        if let Some(token) = refresh::from_jar(&jar)
            && let Some(sid) = refresh::family_of(&state.db, &token).await?
            && !sids.contains(&sid)
        {
            sids.push(sid);
        }
        for sid in &sids {
            signin::end(&state, sid, EndReason::SignedOut, &client).await?;
        }
        Ok::<_, AppError>(())
    }
    .await;
    let response = match outcome {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => ApiError::App(err).into_response(),
    };
    clear_client_state(response, state.settings.secure_cookies)
}

#[derive(Debug, Serialize)]
struct Me {
    id: String,
    email: String,
    display_name: String,
}

async fn me(State(state): State<AppState>, bearer: BearerUser) -> ApiResult<Json<Me>> {
    let user = users::find_by_id(&state.db, &bearer.user_id)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    Ok(Json(Me {
        id: user.id,
        email: user.email,
        display_name: user.display_name,
    }))
}

async fn my_courses(
    State(state): State<AppState>,
    bearer: BearerUser,
) -> ApiResult<Json<Vec<courses::Course>>> {
    Ok(Json(courses::enrolled(&state.db, &bearer.user_id).await?))
}
