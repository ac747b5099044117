//! What open pages tell the server: a shared computer's page that it is still open (a heartbeat,
//! which is not activity), and a learner who chose "Stay signed in" (which is).

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::json;

use crate::{
    auth::{AuthSession, CurrentUser, csrf, sign_ins::browser_sign_in_id},
    error::{AppError, Result},
    state::AppState,
};

/// `POST /heartbeat`, outside the learners' guard: a heartbeat must not count as activity, which
/// resolving the learner would record.
pub fn router() -> Router<AppState> {
    Router::new().route("/heartbeat", post(heartbeat))
}

/// `POST /account/stay`, behind the learners' guard (its CSRF check, and the activity it records).
pub fn learner_router() -> Router<AppState> {
    Router::new().route("/account/stay", post(stay))
}

/// A shared computer's open page: its sign-in stays open for another close window. 204; 401
/// when the sign-in is over (the page then finds out why); 403 without the session's CSRF token.
async fn heartbeat(
    State(state): State<AppState>,
    auth: AuthSession,
    headers: HeaderMap,
) -> Result<Response> {
    let (Some(id), Some(expected)) = (auth.session.id(), csrf::expected(&state.keys, &auth)) else {
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    };
    if !csrf::matches(&expected, csrf::presented(&headers, &[]).as_deref()) {
        return Err(AppError::Forbidden(
            "This page is out of date. Reload it and try again.",
        ));
    }
    let open = state
        .sign_ins
        .heartbeat(&browser_sign_in_id(&id.to_string()))
        .await?;
    Ok(if open {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
    .into_response())
}

/// "Stay signed in": activity, recorded now whenever it was last recorded. The sign-in's new
/// idle deadline, with the server's time, for the page to tell its other tabs.
async fn stay(State(state): State<AppState>, current: CurrentUser) -> Result<Response> {
    let now = state.clock.now();
    let Some(live) = state.sign_ins.touch(&current.sid).await? else {
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    };
    let idle_until = live.idle_until.min(live.expires_at);
    Ok(Json(json!({ "now": now, "idle_until": idle_until })).into_response())
}
