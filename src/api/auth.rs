//! Signing in, refreshing and signing out through the API.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use axum_extra::extract::cookie::{CookieJar, SignedCookieJar};
use serde::{Deserialize, Serialize};

use super::ApiJson;
use crate::{
    audit::Txn,
    auth::{
        BearerUser,
        backend::Credentials,
        establish::Way,
        presented::Presented,
        refresh_tokens,
        sign_ins::{Issued, Refresh},
        sign_out::{Scope, clear_client_state},
    },
    error::{ApiError, ApiResult, AppError},
    state::AppState,
    web::{ClientInfo, cookies::SESSION_COOKIE},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/reauthenticate", post(reauthenticate))
}

#[derive(Debug, Deserialize)]
pub struct LoginBody {
    email: String,
    password: secrecy::SecretString,
    /// A shared or public computer: no refresh cookie, shorter lifetimes.
    #[serde(default)]
    shared: bool,
}

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
}

fn token_body(issued: &Issued) -> Json<TokenResponse> {
    Json(TokenResponse {
        access_token: issued.token.clone(),
        token_type: "Bearer",
        expires_in: issued.claims.exp - issued.claims.iat,
    })
}

fn token_response(jar: SignedCookieJar, issued: &Issued) -> Response {
    (jar, token_body(issued)).into_response()
}

async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: SignedCookieJar,
    cookies: CookieJar,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    state.limits.per_ip("login", &client).await?;
    let creds = Credentials::new(&body.email, body.password);
    let attempt = state
        .limits
        .sign_in_attempt(creds.email.as_ref(), &client)
        .await?;
    let backend = state.backend();
    let Some(user) = axum_login::AuthnBackend::authenticate(&backend, creds).await? else {
        return Err(AppError::InvalidCredentials.into());
    };
    attempt.succeeded().await?;
    let beside = cookies.get(SESSION_COOKIE).map(|c| c.value().to_owned());
    let way = Way {
        client: &client,
        shared: body.shared,
        txn: &Txn::new(),
    };
    let (issued, jar) = state
        .establish
        .api(&user, way, beside.as_deref(), jar)
        .await?;
    Ok(token_response(jar, &issued))
}

/// Rotates the refresh token. A used token presented again after the grace window was copied:
/// its whole family is revoked, through the one way out.
/// A device-bound browser sign-in's refresh cookie, like its session cookie, works only beside
/// its bound cookie: whether this one came without it (refused, audited; a copy of it opens
/// nothing and consumes nothing).
async fn away_from_its_device(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    token: &refresh_tokens::PlainToken,
    client: &ClientInfo,
) -> crate::error::Result<bool> {
    if !state.binding.enabled() {
        return Ok(false);
    }
    let Some(family) = state.sign_ins.refresh_family(token).await? else {
        return Ok(false);
    };
    let sid = &family.sign_in_id;
    let bound = state
        .sign_ins
        .live_sign_in(sid)
        .await?
        .is_some_and(|live| live.bound);
    if !bound || state.binding.holds(headers, sid) {
        return Ok(false);
    }
    tracing::warn!(sign_in.id = %sid, ip = %client.ip, "a device-bound sign-in's refresh cookie came without its bound cookie; refused");
    crate::telemetry::bound_refused("cookie");
    state.binding.refused(sid, client).await;
    Ok(true)
}

async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: axum::http::HeaderMap,
    jar: SignedCookieJar,
) -> ApiResult<Response> {
    state.limits.per_ip("refresh", &client).await?;
    let token = refresh_tokens::from_jar(&jar).ok_or(AppError::InvalidGrant)?;
    if away_from_its_device(&state, &headers, &token, &client).await? {
        return Err(AppError::InvalidGrant.into());
    }
    match state.sign_ins.refresh(&token).await? {
        Refresh::Rotated {
            issued,
            next,
            expires_at,
        } => {
            let jar = refresh_tokens::set_cookie(
                jar,
                &next,
                expires_at - state.clock.now(),
                state.settings.secure_cookies,
            );
            Ok(token_response(jar, &issued))
        }
        Refresh::Refused => Err(AppError::InvalidGrant.into()),
        Refresh::Reused { sid } => {
            tracing::warn!(sign_in.id = %sid, ip = %client.ip, "refresh token reused: revoking its family");
            state.sign_out.reuse(&sid, &client).await?;
            Err(AppError::InvalidGrant.into())
        }
    }
}

/// Ends every sign-in the caller presents a credential of: the bearer token's (even expired),
/// the refresh cookie's family, and the browser session's; with `?scope=global` every other
/// sign-in of the learner too, with `?scope=others` only those (the caller stays signed in).
/// 204, with the cookies cleared unless the caller stays, or 503 when the revocation could not be
/// confirmed (cookies cleared all the same; the rest is settled later).
async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    presented: Presented,
) -> Response {
    let stays = presented.request.scope == Scope::Others;
    match state.sign_out.api(&presented.request, &client).await {
        Ok(Scope::Others) => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => clear_client_state(StatusCode::NO_CONTENT, state.client_state()),
        // A caller that asked to stay keeps its cookies even when the others could not be ended,
        // and one asked to re-authenticate first keeps them to do so.
        Err(err) if stays || matches!(err, AppError::InsufficientAuthentication { .. }) => {
            ApiError(err).into_response()
        }
        Err(err) => clear_client_state(ApiError(err), state.client_state()),
    }
}

#[derive(Debug, Deserialize)]
pub struct ReauthBody {
    password: secrecy::SecretString,
}

/// The password again, for what needs it recently: 200 with a new access token of the same
/// sign-in (a fresh `auth_time`); 401 `invalid_credentials` for a wrong one.
async fn reauthenticate(
    State(state): State<AppState>,
    bearer: BearerUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<ReauthBody>,
) -> ApiResult<Json<TokenResponse>> {
    let (user, sid) = (&bearer.user_id, &bearer.sid);
    match state
        .reauth
        .api_reauthenticate(user, sid, body.password, &client)
        .await?
    {
        Some(issued) => Ok(token_body(&issued)),
        None => Err(AppError::InvalidCredentials.into()),
    }
}
