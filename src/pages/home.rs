//! The homepage (the course catalog) and the page for addresses that name nothing.

use askama::Template;
use askama_web::WebTemplate;
use axum::{Router, extract::State, routing::get};
use serde::Deserialize;

use crate::{
    auth::Viewer,
    courses::Course,
    error::{AppError, Result},
    layout::{Layout, Notice},
    state::AppState,
    web::PageQuery,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(home))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HomeQuery {
    signed_out: Option<String>,
    account_deleted: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
pub struct HomePage {
    layout: Layout,
    courses: Vec<Course>,
}

async fn home(
    State(state): State<AppState>,
    viewer: Viewer,
    PageQuery(query): PageQuery<HomeQuery>,
) -> Result<HomePage> {
    let learner = viewer.user.as_ref().map(|current| current.user.id.as_str());
    let courses = state.catalog.marked_for(learner).await?;
    let mut layout = viewer.layout;
    if viewer.user.is_none() {
        let said = match (&query.account_deleted, &query.signed_out) {
            (Some(_), _) => "Your account and everything it held were deleted. You are signed out.",
            (None, Some(_)) => "You are signed out.",
            (None, None) => "",
        };
        if !said.is_empty() {
            layout.notice = Some(Notice::success(said));
            layout.signed_out = true;
        }
    }
    Ok(HomePage { layout, courses })
}

/// Unknown pages: a 404 page with the learner's own header (name and Sign out) when signed in.
pub async fn not_found(viewer: Viewer) -> axum::response::Response {
    AppError::NotFound.page(viewer.layout)
}
