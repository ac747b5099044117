//! The signed-in API client's own data.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;

use crate::{
    accounts,
    auth::BearerUser,
    courses::{self, Course},
    error::{ApiResult, AppError},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/me", get(me))
        .route("/me/courses", get(my_courses))
}

#[derive(Debug, Serialize)]
struct Me {
    id: String,
    email: String,
    display_name: String,
}

async fn me(State(state): State<AppState>, bearer: BearerUser) -> ApiResult<Json<Me>> {
    let user = accounts::find_by_id(&state.db, &bearer.user_id)
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
    Ok(Json(courses::enrolled(&state.db, &bearer.user_id).await?))
}
