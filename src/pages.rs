//! Pages that are not about signing in or courses: home, account, health.

use askama::Template;
use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    AppState, audit,
    auth::{CurrentUser, MaybeUser, signin},
    courses::{self, Course},
    error::Result,
    users::User,
    web::{self, Layout, Notice, PageQuery},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/account", get(account))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HomeQuery {
    signed_out: Option<String>,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    courses: Vec<Course>,
}

async fn home(
    State(state): State<AppState>,
    MaybeUser(current): MaybeUser,
    PageQuery(query): PageQuery<HomeQuery>,
) -> Result<Response> {
    let courses = courses::catalog(&state.db, current.as_ref().map(|c| c.user.id.as_str())).await?;
    let mut layout = Layout::new(&state, current.as_ref());
    if query.signed_out.is_some() && current.is_none() {
        layout.notice = Some(Notice::success("You are signed out."));
        layout.signed_out = true;
    }
    let response = web::render(&HomePage { layout, courses })?.into_response();
    Ok(match current {
        Some(_) => web::no_store(response),
        None => response,
    })
}

#[derive(Template)]
#[template(path = "account/account.html")]
struct AccountPage {
    layout: Layout,
    user: User,
    current_sid: String,
    sign_ins: Vec<signin::SignIn>,
    events: Vec<audit::Entry>,
}

async fn account(State(state): State<AppState>, current: CurrentUser) -> Result<Response> {
    let sign_ins = signin::active_for_user(&state.db, &current.user.id).await?;
    let events = audit::recent_for_user(&state.db, &current.user.id, 20).await?;
    let page = AccountPage {
        layout: Layout::new(&state, Some(&current)),
        current_sid: current.sid.clone(),
        user: current.user,
        sign_ins,
        events,
    };
    Ok(web::no_store(web::render(&page)?.into_response()))
}

/// Unknown pages: a 404 page with the learner's own header (name and Sign out) when signed in.
pub async fn not_found(State(state): State<AppState>, MaybeUser(current): MaybeUser) -> Response {
    crate::error::AppError::NotFound.into_page(Layout::new(&state, current.as_ref()))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database and (if configured) Redis answer; 503 otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    let database = crate::db::ping(&state.db).await.is_ok();
    let store = state.kv.ping().await.is_ok();
    let redis = match (state.kv.is_redis(), store) {
        (false, _) => "not configured",
        (true, true) => "ok",
        (true, false) => "unavailable",
    };
    let status = if database && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if status.is_success() { "ok" } else { "unavailable" },
        "database": if database { "ok" } else { "unavailable" },
        "redis": redis,
    });
    (status, Json(body)).into_response()
}
