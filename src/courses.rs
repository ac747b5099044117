//! The course catalog and enrolments.

use std::sync::Arc;

use serde::Serialize;

use crate::{
    db::Pool,
    error::{AppError, Result},
    store::{ChangeMarks, read_ahead::ReadAhead},
};

/// A course, with whether the learner asking is enrolled.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Course {
    pub id: String,
    pub title: String,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrolled_at: Option<i64>,
}

impl Course {
    pub fn enrolled(&self) -> bool {
        self.enrolled_at.is_some()
    }
}

/// A course id: a slug. Anything else names no course (and never reaches the database).
#[derive(Debug, Clone, Copy)]
pub struct CourseId<'a>(&'a str);

impl<'a> CourseId<'a> {
    pub fn parse(raw: &'a str) -> Result<Self> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then_some(Self(raw)).ok_or(AppError::NotFound)
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// The course catalog and learners' enrolments, kept in process. The catalog changes only with a
/// migration or an operator's edit, which every instance sees within a minute. A learner's
/// enrolments are theirs to change at any moment, on any instance: each is kept with the change
/// mark it was read under (`enrolments:<user id>`, see [`ChangeMarks`]), which every enrol and
/// leave replaces, so a view costs one small shared-store read and no query until they change.
#[derive(Clone)]
pub struct Catalog(Arc<CatalogParts>);

/// What [`Catalog`] shares.
pub struct CatalogParts {
    pool: Pool,
    marks: Arc<dyn ChangeMarks>,
    courses: moka::sync::Cache<(), Arc<[Course]>>,
    enrolments: moka::sync::Cache<String, Enrolments>,
}

/// One learner's enrolments (course id, when), as read under `mark`.
#[derive(Clone)]
struct Enrolments {
    mark: Option<String>,
    courses: Arc<[(String, i64)]>,
}

/// How long an instance keeps a learner's enrolments without a change.
const ENROLMENTS_KEPT_SECS: u64 = 300;
/// How long a change mark is kept: well past [`ENROLMENTS_KEPT_SECS`].
const MARK_TTL_SECS: i64 = 86_400;

impl std::ops::Deref for Catalog {
    type Target = CatalogParts;

    fn deref(&self) -> &CatalogParts {
        &self.0
    }
}

/// The name of a learner's enrolments' change mark.
pub fn enrolments_mark(user_id: &str) -> String {
    format!("enrolments:{user_id}")
}

impl Catalog {
    pub fn new(pool: Pool, marks: Arc<dyn ChangeMarks>) -> Self {
        Self(Arc::new(CatalogParts {
            pool,
            marks,
            courses: moka::sync::Cache::builder()
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
            enrolments: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(ENROLMENTS_KEPT_SECS))
                .build(),
        }))
    }

    async fn courses(&self) -> Result<Arc<[Course]>> {
        if let Some(courses) = self.courses.get(&()) {
            return Ok(courses);
        }
        let courses: Vec<Course> = sqlx::query_as(
            "select id, title, summary, cast(null as bigint) as enrolled_at from courses order by position",
        )
        .fetch_all(&self.pool)
        .await?;
        let courses: Arc<[Course]> = courses.into();
        self.courses.insert((), courses.clone());
        Ok(courses)
    }

    /// A learner's enrolments: the kept ones while their mark is current, else the database's.
    /// The mark (read ahead with the request's session record when it could be, see
    /// [`ReadAhead`]) is read before the query, so a change made meanwhile is noticed on the next
    /// look.
    async fn enrolments(&self, user_id: &str) -> Result<Arc<[(String, i64)]>> {
        let name = enrolments_mark(user_id);
        let mark = match ReadAhead::take_mark(&name) {
            Some(mark) => mark,
            None => self.marks.mark(&name).await?,
        };
        if let Some(kept) = self.enrolments.get(user_id)
            && kept.mark == mark
        {
            return Ok(kept.courses);
        }
        let courses: Vec<(String, i64)> =
            sqlx::query_as("select course_id, enrolled_at from enrolments where user_id = $1")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        let courses: Arc<[(String, i64)]> = courses.into();
        self.enrolments.insert(
            user_id.to_owned(),
            Enrolments {
                mark,
                courses: courses.clone(),
            },
        );
        Ok(courses)
    }

    /// After a learner's enrolments changed: every instance reads them again.
    async fn changed(&self, user_id: &str) -> Result<()> {
        self.enrolments.invalidate(user_id);
        self.marks
            .remark(&enrolments_mark(user_id), MARK_TTL_SECS)
            .await
    }

    /// The whole catalog, marked for `user_id` (visitors: nothing enrolled).
    pub async fn marked_for(&self, user_id: Option<&str>) -> Result<Vec<Course>> {
        let enrolled = match user_id {
            Some(user_id) => self.enrolments(user_id).await?,
            None => Arc::from([]),
        };
        self.marked(&enrolled).await
    }

    async fn marked(&self, enrolled: &[(String, i64)]) -> Result<Vec<Course>> {
        let courses = self.courses().await?;
        Ok(courses
            .iter()
            .map(|course| Course {
                enrolled_at: enrolled
                    .iter()
                    .find(|(id, _)| *id == course.id)
                    .map(|(_, at)| *at),
                ..course.clone()
            })
            .collect())
    }

    /// The courses a learner is enrolled in.
    pub async fn enrolled(&self, user_id: &str) -> Result<Vec<Course>> {
        Ok(self
            .marked_for(Some(user_id))
            .await?
            .into_iter()
            .filter(Course::enrolled)
            .collect())
    }

    /// One course, marked for the learner.
    pub async fn one(&self, user_id: &str, id: CourseId<'_>) -> Result<Course> {
        self.marked_for(Some(user_id))
            .await?
            .into_iter()
            .find(|c| c.id == id.as_str())
            .ok_or(AppError::NotFound)
    }
}

/// Enrols the learner; enrolling twice is fine, an unknown course is not found.
pub async fn enrol(catalog: &Catalog, user_id: &str, id: CourseId<'_>, now: i64) -> Result<()> {
    let pool = &catalog.pool;
    let inserted = sqlx::query(
        "insert into enrolments (user_id, course_id, enrolled_at)
         select $1, id, $2 from courses where id = $3
         on conflict (user_id, course_id) do nothing",
    )
    .bind(user_id)
    .bind(now)
    .bind(id.as_str())
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        // Either already enrolled (fine) or no such course (404).
        catalog.one(user_id, id).await?;
    }
    // Also after "already enrolled": a retry of an enrolment whose mark did not change.
    catalog.changed(user_id).await
}

/// Leaves a course; leaving one not enrolled in is fine.
pub async fn leave(catalog: &Catalog, user_id: &str, id: CourseId<'_>) -> Result<()> {
    sqlx::query("delete from enrolments where user_id = $1 and course_id = $2")
        .bind(user_id)
        .bind(id.as_str())
        .execute(&catalog.pool)
        .await?;
    catalog.changed(user_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn course_ids_are_slugs() {
        assert!(CourseId::parse("rust-101").is_ok());
        for bad in ["", "R\u{fc}st", "a b", "x\0y", &"a".repeat(65)] {
            assert!(CourseId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
