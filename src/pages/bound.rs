//! Device-bound sign-ins, the browser's side (see [`crate::auth::bound`]): the offer on a sign-in
//! answer, `POST /dbsc/register` where the browser proves its new key, and `POST /dbsc/refresh`
//! where it renews the bound cookie with a proof of the same key.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderName, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use axum_extra::extract::cookie::CookieJar;
use serde_json::json;

use crate::{
    auth::{
        AuthSession, MaybeUser,
        bound::{self, REFRESH_PATH, REGISTER_PATH, Refresh, unquoted},
        sign_ins::browser_sign_in_id,
    },
    error::{AppError, Result},
    state::AppState,
    web::{
        cache::set_no_store,
        cookies::{SESSION_COOKIE, auth_cookie_removals},
    },
};

/// The proof a browser sends, and the sign-in a refresh names.
const RESPONSE: HeaderName = HeaderName::from_static("secure-session-response");
const SESSION_ID: HeaderName = HeaderName::from_static("sec-secure-session-id");
const REGISTRATION: HeaderName = HeaderName::from_static("secure-session-registration");
const CHALLENGE: HeaderName = HeaderName::from_static("secure-session-challenge");

pub fn router() -> Router<AppState> {
    Router::new()
        .route(REGISTER_PATH, post(register))
        .route(REFRESH_PATH, post(refresh))
}

/// A sign-in answer with binding offered to the sign-in this browser session now holds (over
/// HTTPS with DBSC on; otherwise as it was).
pub async fn offering(
    state: &AppState,
    auth: &AuthSession,
    response: Response,
) -> Result<Response> {
    let Some(session) = auth.session.id() else {
        return Ok(response);
    };
    let sid = browser_sign_in_id(&session.to_string());
    let mut response = response;
    if let Some(offer) = state.binding.offer(&sid).await? {
        response.headers_mut().insert(REGISTRATION, offer);
    }
    Ok(response)
}

/// `POST /dbsc/register`: the browser's proof of its new key, for the sign-in its session holds.
/// 200 with the session configuration and the bound cookie; 400 (binding fails, the sign-in
/// goes on unbound) when the proof does not hold.
async fn register(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    headers: HeaderMap,
) -> Result<Response> {
    let Some(user) = user.filter(|_| state.binding.enabled()) else {
        return Ok(refused(StatusCode::UNAUTHORIZED, "no sign-in to bind"));
    };
    let Some(proof) = headers.get(RESPONSE).and_then(|v| v.to_str().ok()) else {
        return Ok(refused(StatusCode::BAD_REQUEST, "no proof"));
    };
    match state.binding.register(&user.sid, proof).await? {
        Ok(cookie) => {
            tracing::info!(sign_in.id = %user.sid, "a sign-in was bound to its browser's key");
            let mut response = (
                CookieJar::new().add(cookie),
                Json(bound::Binding::config(&user.sid)),
            )
                .into_response();
            set_no_store(&mut response);
            Ok(response)
        }
        Err(why) => {
            tracing::warn!(sign_in.id = %user.sid, ?why, "a device-binding registration was refused");
            crate::telemetry::bound_refused("proof");
            Ok(refused(StatusCode::BAD_REQUEST, "the proof does not hold"))
        }
    }
}

/// `POST /dbsc/refresh`: `Sec-Secure-Session-Id` names the sign-in. Without a proof that holds,
/// 403 with a new challenge; with one, a fresh bound cookie; for a sign-in that ended,
/// `{"continue": false}` and its cookies removed.
async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let sid = headers
        .get(SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(unquoted)
        .unwrap_or_default();
    // Only the browser that holds the sign-in may renew it: its session cookie names it. Any other
    // caller (a stranger, or this browser after it signed in again) hears that this one is over,
    // and no cookie of its is touched.
    let own = session_cookie(&headers).is_some_and(|s| browser_sign_in_id(&s) == sid);
    let proof = headers.get(RESPONSE).and_then(|v| v.to_str().ok());
    let outcome = if state.binding.enabled() && own {
        state.binding.refresh(&sid, proof).await?
    } else {
        Refresh::Ended
    };
    let mut response = match outcome {
        Refresh::Challenge(challenge) => {
            let mut response = StatusCode::FORBIDDEN.into_response();
            let header = bound::challenge_header(&challenge, &sid).ok_or_else(|| {
                AppError::Unexpected(anyhow::anyhow!("a challenge header that does not encode"))
            })?;
            response.headers_mut().insert(CHALLENGE, header);
            response
        }
        Refresh::Renewed(cookie) => (CookieJar::new().add(cookie), StatusCode::OK).into_response(),
        Refresh::Ended => ended(&state, &sid, own),
    };
    set_no_store(&mut response);
    Ok(response)
}

/// `{"continue": false}` for a sign-in that is over; its cookies removed when they are this
/// browser's.
fn ended(state: &AppState, sid: &str, own: bool) -> Response {
    let body = Json(json!({ "session_identifier": sid, "continue": false }));
    if !own {
        return body.into_response();
    }
    let jar = auth_cookie_removals(state.settings.secure_cookies)
        .into_iter()
        .chain([bound::removal()])
        .fold(CookieJar::new(), CookieJar::add);
    (jar, body).into_response()
}

/// The session cookie's value, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    CookieJar::from_headers(headers)
        .get(SESSION_COOKIE)
        .map(|c| c.value().to_owned())
}

fn refused(status: StatusCode, why: &str) -> Response {
    let mut response =
        (status, Json(json!({ "error": "refused", "message": why }))).into_response();
    set_no_store(&mut response);
    response
}
