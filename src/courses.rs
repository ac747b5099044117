//! The course catalog and enrolments: the dashboard, and enrol/leave as htmx `POST`s that also
//! work as plain forms.

use askama::Template;
use axum::{
    Router,
    extract::{Path, State},
    http::HeaderMap,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Serialize;
use sqlx::Row;

use crate::{
    AppState,
    auth::CurrentUser,
    db::Pool,
    error::{AppError, Result},
    web::{self, Layout},
};

/// A course, with whether the learner asking is enrolled.
#[derive(Debug, Clone, Serialize)]
pub struct Course {
    pub id: String,
    pub title: String,
    pub summary: String,
    #[serde(skip)]
    pub enrolled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrolled_at: Option<i64>,
}

fn course_from_row(row: &sqlx::any::AnyRow) -> Result<Course, sqlx::Error> {
    let enrolled_at: Option<i64> = row.try_get("enrolled_at")?;
    Ok(Course {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        summary: row.try_get("summary")?,
        enrolled: enrolled_at.is_some(),
        enrolled_at,
    })
}

/// The whole catalog, marked for `user_id` (visitors: nothing enrolled).
pub async fn catalog(pool: &Pool, user_id: Option<&str>) -> Result<Vec<Course>> {
    let rows = sqlx::query(
        "select c.id, c.title, c.summary, e.enrolled_at from courses c
         left join enrolments e on e.course_id = c.id and e.user_id = $1
         order by c.position",
    )
    .bind(user_id.unwrap_or(""))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(course_from_row).collect::<Result<_, _>>()?)
}

/// The courses a learner is enrolled in.
pub async fn enrolled(pool: &Pool, user_id: &str) -> Result<Vec<Course>> {
    Ok(catalog(pool, Some(user_id))
        .await?
        .into_iter()
        .filter(|c| c.enrolled)
        .collect())
}

async fn one(pool: &Pool, user_id: &str, course_id: &str) -> Result<Course> {
    catalog(pool, Some(user_id))
        .await?
        .into_iter()
        .find(|c| c.id == course_id)
        .ok_or(AppError::NotFound)
}

/// Course ids are slugs; anything else names no course (and never reaches the database).
fn course_id(raw: &str) -> Result<&str> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(raw).ok_or(AppError::NotFound)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(dashboard))
        .route("/courses/{id}/enrol", post(enrol))
        .route("/courses/{id}/leave", post(leave))
}

#[derive(Template)]
#[template(path = "courses/dashboard.html")]
struct DashboardPage {
    layout: Layout,
    mine: Vec<Course>,
    others: Vec<Course>,
}

async fn dashboard(State(state): State<AppState>, current: CurrentUser) -> Result<Response> {
    let (mine, others) = catalog(&state.db, Some(&current.user.id))
        .await?
        .into_iter()
        .partition(|c| c.enrolled);
    let page = DashboardPage {
        layout: Layout::new(&state, Some(&current)),
        mine,
        others,
    };
    Ok(web::no_store(web::render(&page)?.into_response()))
}

#[derive(Template)]
#[template(path = "partials/course_card.html")]
struct CourseCard {
    course: Course,
    csrf_token: String,
}

/// htmx gets the updated card; a plain form goes back to the dashboard.
async fn card_or_back(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response> {
    if !web::is_htmx(headers) {
        return Ok(web::no_store(Redirect::to("/dashboard").into_response()));
    }
    let card = CourseCard {
        course: one(&state.db, &current.user.id, id).await?,
        csrf_token: current.csrf.clone(),
    };
    Ok(web::no_store(web::render(&card)?.into_response()))
}

async fn enrol(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let id = course_id(&id)?;
    let inserted = sqlx::query(
        "insert into enrolments (user_id, course_id, enrolled_at)
         select $1, id, $2 from courses where id = $3
         on conflict (user_id, course_id) do nothing",
    )
    .bind(&current.user.id)
    .bind(web::now())
    .bind(id)
    .execute(&state.db)
    .await?;
    if inserted.rows_affected() == 0 {
        // Either already enrolled (fine) or no such course (404).
        one(&state.db, &current.user.id, id).await?;
    }
    card_or_back(&state, &current, id, &headers).await
}

async fn leave(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let id = course_id(&id)?;
    sqlx::query("delete from enrolments where user_id = $1 and course_id = $2")
        .bind(&current.user.id)
        .bind(id)
        .execute(&state.db)
        .await?;
    card_or_back(&state, &current, id, &headers).await
}
