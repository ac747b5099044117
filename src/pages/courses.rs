//! The dashboard, and enrol/leave as htmx `POST`s that also work as plain forms.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    extract::State,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_htmx::HxRequest;

use crate::{
    auth::CurrentUser,
    courses::{self, Course, CourseId},
    error::Result,
    layout::Layout,
    state::AppState,
    web::PagePath,
};

/// The learner's routes; `app` puts them behind `guards::learners_only`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(dashboard))
        .route("/courses/{id}/enrol", post(enrol))
        .route("/courses/{id}/leave", post(leave))
}

#[derive(Template, WebTemplate)]
#[template(path = "courses/dashboard.html")]
struct DashboardPage {
    layout: Layout,
    mine: Vec<Course>,
    others: Vec<Course>,
}

async fn dashboard(State(state): State<AppState>, current: CurrentUser) -> Result<DashboardPage> {
    let (mine, others) = state
        .catalog
        .marked_for(Some(&current.user.id))
        .await?
        .into_iter()
        .partition(Course::enrolled);
    Ok(DashboardPage {
        layout: current.layout(),
        mine,
        others,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "partials/course_card.html")]
struct CourseCard {
    course: Course,
    csrf_token: String,
}

/// htmx gets the updated card; a plain form goes back to the dashboard.
async fn card_or_back(
    state: &AppState,
    current: &CurrentUser,
    id: CourseId<'_>,
    htmx: bool,
) -> Result<Response> {
    if !htmx {
        return Ok(Redirect::to("/dashboard").into_response());
    }
    let card = CourseCard {
        course: state.catalog.one(&current.user.id, id).await?,
        csrf_token: current.csrf.clone(),
    };
    Ok(card.into_response())
}

async fn enrol(
    State(state): State<AppState>,
    current: CurrentUser,
    PagePath(id): PagePath,
    HxRequest(htmx): HxRequest,
) -> Result<Response> {
    let id = CourseId::parse(&id)?;
    courses::enrol(&state.catalog, &current.user.id, id, state.clock.now()).await?;
    card_or_back(&state, &current, id, htmx).await
}

async fn leave(
    State(state): State<AppState>,
    current: CurrentUser,
    PagePath(id): PagePath,
    HxRequest(htmx): HxRequest,
) -> Result<Response> {
    let id = CourseId::parse(&id)?;
    courses::leave(&state.catalog, &current.user.id, id).await?;
    card_or_back(&state, &current, id, htmx).await
}
