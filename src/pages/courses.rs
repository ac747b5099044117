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
    layout::{Layout, Notice},
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

/// The learner's courses and the others, as the dashboard shows them (and re-renders them in
/// place after an enrol or a leave).
struct Lists {
    mine: Vec<Course>,
    others: Vec<Course>,
    csrf_token: String,
    /// The course whose button keeps the keyboard focus after a re-render.
    focus: String,
}

impl Lists {
    async fn of(state: &AppState, current: &CurrentUser, focus: &str) -> Result<Self> {
        let (mine, others) = state
            .catalog
            .marked_for(Some(&current.user.id))
            .await?
            .into_iter()
            .partition(Course::enrolled);
        Ok(Self {
            mine,
            others,
            csrf_token: current.csrf.clone(),
            focus: focus.to_owned(),
        })
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "courses/dashboard.html")]
struct DashboardPage {
    layout: Layout,
    lists: Lists,
    oob: bool,
}

async fn dashboard(State(state): State<AppState>, current: CurrentUser) -> Result<DashboardPage> {
    Ok(DashboardPage {
        layout: current.layout(),
        lists: Lists::of(&state, &current, "").await?,
        oob: false,
    })
}

/// What an htmx enrol or leave answers: both lists again (out of band, so the card moves to its
/// new list and the empty-list note comes or goes) and a notice in the page's live region.
#[derive(Template, WebTemplate)]
#[template(
    source = r#"{% include "partials/course_lists.html" %}
{% include "partials/notice.html" %}"#,
    ext = "html"
)]
struct Changed {
    lists: Lists,
    oob: bool,
    notice: Notice,
}

/// htmx gets both lists again and a notice; a plain form goes back to the dashboard.
async fn lists_or_back(
    state: &AppState,
    current: &CurrentUser,
    id: CourseId<'_>,
    htmx: bool,
    said: &str,
) -> Result<Response> {
    if !htmx {
        return Ok(Redirect::to("/dashboard").into_response());
    }
    let course = state.catalog.one(&current.user.id, id).await?;
    Ok(Changed {
        lists: Lists::of(state, current, id.as_str()).await?,
        oob: true,
        notice: Notice::success(format!("{said} {}.", course.title)),
    }
    .into_response())
}

async fn enrol(
    State(state): State<AppState>,
    current: CurrentUser,
    PagePath(id): PagePath,
    HxRequest(htmx): HxRequest,
) -> Result<Response> {
    let id = CourseId::parse(&id)?;
    courses::enrol(&state.catalog, &current.user.id, id, state.clock.now()).await?;
    lists_or_back(&state, &current, id, htmx, "You are enrolled in").await
}

async fn leave(
    State(state): State<AppState>,
    current: CurrentUser,
    PagePath(id): PagePath,
    HxRequest(htmx): HxRequest,
) -> Result<Response> {
    let id = CourseId::parse(&id)?;
    courses::leave(&state.catalog, &current.user.id, id).await?;
    lists_or_back(&state, &current, id, htmx, "You left").await
}
