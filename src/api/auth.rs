//! Signing in, refreshing and signing out through the API.

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use axum_extra::{
    TypedHeader,
    extract::cookie::{CookieJar, SignedCookieJar},
    headers::{Authorization, authorization::Bearer},
};
use serde::{Deserialize, Serialize};

use super::ApiJson;
use crate::{
    auth::{
        backend::Credentials,
        refresh_tokens,
        sign_ins::{EndReason, Issued, Kind, Refresh},
        sign_out::{self, Owed, Scope, clear_client_state},
    },
    error::{ApiError, ApiResult, AppError},
    state::AppState,
    telemetry,
    web::{ClientInfo, cookies::SESSION_COOKIE},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
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

fn token_response(jar: SignedCookieJar, issued: &Issued) -> Response {
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
    // A page's script signing in beside its browser session: the two hold each other, so that
    // the browser's sign-out (with or without JavaScript) ends this sign-in too, and this one's
    // sign-out the browser's.
    let beside = match cookies.get(SESSION_COOKIE).map(|c| c.value().to_owned()) {
        Some(id) if state.stores.sessions.find(&id).await?.is_some() => Some(id),
        _ => None,
    };
    let started = state
        .sign_ins
        .start(
            &user,
            &client,
            Kind::Api {
                beside: beside.as_deref(),
            },
        )
        .await?;
    if let Some(session_id) = &beside {
        state
            .sign_ins
            .hold(session_id, &started.sid, started.expires_at)
            .await?;
    }
    let issued = state
        .sign_ins
        .issue_access_token(&user.id, &started.sid)
        .await?;
    let jar = refresh_tokens::set_cookie(
        jar,
        &started.refresh,
        started.expires_at - state.clock.now(),
        state.settings.secure_cookies,
    );
    Ok(token_response(jar, &issued))
}

/// Rotates the refresh token. A used token presented again after the grace window was copied:
/// its whole family is revoked, through the one way out.
async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: SignedCookieJar,
) -> ApiResult<Response> {
    state.limits.per_ip("refresh", &client).await?;
    let token = refresh_tokens::from_jar(&jar).ok_or(AppError::InvalidGrant)?;
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
            let mut owed = Owed::default();
            owed.add_sid(&sid);
            sign_out::end_all(
                &state.sign_ins,
                &owed,
                None,
                EndReason::RefreshReuse,
                &client,
            )
            .await
            .map_err(|unfinished| unfinished.error)?;
            Err(AppError::InvalidGrant.into())
        }
    }
}

/// Ends every sign-in the caller presents a credential of: the bearer token's (even expired),
/// the refresh cookie's family, and the browser session's; with `?scope=global` every other
/// sign-in of the learner too, with `?scope=others` only those (the caller stays signed in).
/// 204, with the cookies cleared unless the caller stays, or 503 when the revocation could not be
/// confirmed (cookies cleared all the same).
async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    RawQuery(query): RawQuery,
    bearer: Option<TypedHeader<Authorization<Bearer>>>,
    jar: SignedCookieJar,
    cookies: CookieJar,
) -> Response {
    let scope = Scope::parse(crate::web::forms::query_field(query.as_deref(), "scope").as_deref());
    let token = bearer.map(|TypedHeader(Authorization(bearer))| bearer.token().to_owned());
    let outcome = async {
        let mut owed = Owed::default();
        // Whose sign-ins a wider scope reaches: only a live credential can say. A local sign-out
        // ends what is presented, live or not, so it does not ask.
        let wider = scope != Scope::Local;
        let mut user = None;
        if let Some(token) = &token
            && let Some(claims) = state.sign_ins.tokens().verify_ignoring_expiry(token)
        {
            owed.add_sid(&claims.sid);
            if wider && let Some(live) = state.sign_ins.authorize_bearer(token).await? {
                user = Some(live.sub);
            }
        }
        if let Some(token) = refresh_tokens::from_jar(&jar)
            && let Some(presented) = refresh_tokens::find(&state.db, &token).await?
        {
            owed.add_sid(&presented.sign_in_id);
            if wider && user.is_none() && presented.revoked_at.is_none() {
                user = state.sign_ins.live_user(&presented.sign_in_id).await?;
            }
        }
        if let Some(session) = cookies.get(SESSION_COOKIE) {
            owed.add_session(session.value());
        }
        let scope = if user.is_some() { scope } else { Scope::Local };
        if let Some(user) = &user {
            owed = sign_out::reach(&state.sign_ins, &owed, user, scope).await?;
        }
        let reason = match scope {
            Scope::Others => EndReason::Revoked,
            _ => EndReason::SignedOut,
        };
        sign_out::end_all(&state.sign_ins, &owed, None, reason, &client)
            .await
            .map_err(|unfinished| unfinished.error)?;
        telemetry::signed_out(scope.as_str(), reason.as_str());
        Ok::<_, AppError>(scope)
    }
    .await;
    match outcome {
        Ok(Scope::Others) => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => clear_client_state(StatusCode::NO_CONTENT, state.client_state()),
        // A caller that asked to stay keeps its cookies even when the others could not be ended.
        Err(err) if scope == Scope::Others => ApiError(err).into_response(),
        Err(err) => clear_client_state(ApiError(err), state.client_state()),
    }
}
