//! The signed-in API client's own data.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get},
};
use serde::Serialize;

use super::ApiPath;
use crate::{
    auth::{
        BearerUser,
        sign_out::{Caller, clear_client_state},
    },
    clock,
    courses::Course,
    error::{ApiResult, AppError},
    state::AppState,
    web::ClientInfo,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/me", get(me).delete(delete_me))
        .route("/me/courses", get(my_courses))
        .route("/me/sessions", get(my_sessions))
        .route("/me/sessions/{id}", delete(end_session))
}

#[derive(Debug, Serialize)]
struct Me {
    id: String,
    email: String,
    display_name: String,
}

async fn me(State(state): State<AppState>, bearer: BearerUser) -> ApiResult<Json<Me>> {
    let user = state
        .users
        .profile(&bearer.user_id)
        .await?
        .ok_or(AppError::InvalidToken)?;
    Ok(Json(Me {
        id: user.id,
        email: user.email,
        display_name: user.display_name,
    }))
}

async fn my_courses(
    State(state): State<AppState>,
    bearer: BearerUser,
) -> ApiResult<Json<Vec<Course>>> {
    Ok(Json(state.catalog.enrolled(&bearer.user_id).await?))
}

/// One live sign-in, as `GET /api/v1/me/sessions` lists it.
#[derive(Debug, Serialize)]
struct SessionView {
    id: String,
    /// The sign-in of the token asking.
    current: bool,
    created_at: String,
    last_seen_at: String,
    ip: String,
    device: String,
    browser: String,
}

async fn my_sessions(
    State(state): State<AppState>,
    bearer: BearerUser,
) -> ApiResult<Json<Vec<SessionView>>> {
    let live = state.sign_ins.live(Some(&bearer.user_id)).await?;
    Ok(Json(
        live.into_iter()
            .map(|s| {
                let described = s.described();
                SessionView {
                    current: s.id == bearer.sid,
                    created_at: clock::rfc3339(s.created_at),
                    last_seen_at: clock::rfc3339(s.last_active_at()),
                    id: s.id,
                    ip: s.ip,
                    device: described.device,
                    browser: described.browser,
                }
            })
            .collect(),
    ))
}

/// Ends one of the learner's live sign-ins: 204; 404 when it is not one of theirs, and nothing is
/// ended. Its own id ends the caller's sign-in (its refresh cookie is refused from then on); a
/// client that wants its cookies cleared signs out with `POST /api/v1/auth/logout`.
async fn end_session(
    State(state): State<AppState>,
    bearer: BearerUser,
    client: ClientInfo,
    ApiPath(id): ApiPath,
) -> ApiResult<Response> {
    if id != bearer.sid {
        state.reauth.api(bearer.auth_time)?;
    }
    let caller = Caller {
        sid: &bearer.sid,
        session: None,
    };
    match state
        .sign_out
        .one(&bearer.user_id, &id, caller, &client)
        .await?
    {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(AppError::NotFound.into()),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct DeleteBody {
    password: secrecy::SecretString,
}

/// Deletes the learner's account, as `POST /account/delete` does: 204, the cookies cleared; 401
/// `invalid_credentials` for a wrong password, `insufficient_user_authentication` when the token
/// is older than the recent-authentication window.
async fn delete_me(
    State(state): State<AppState>,
    bearer: BearerUser,
    client: ClientInfo,
    super::ApiJson(body): super::ApiJson<DeleteBody>,
) -> ApiResult<Response> {
    state.reauth.api(bearer.auth_time)?;
    let user = state
        .users
        .profile(&bearer.user_id)
        .await?
        .ok_or(AppError::InvalidToken)?;
    match state
        .leaving
        .delete_own(&user, body.password, None, &client)
        .await?
    {
        Ok(()) => Ok(clear_client_state(
            StatusCode::NO_CONTENT,
            state.client_state(),
        )),
        Err(_) => Err(AppError::InvalidCredentials.into()),
    }
}
