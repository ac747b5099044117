//! Courses: the dashboard's enrol and leave, course ids, and enrolments seen on every instance.

use axum::http::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn enrol_and_leave_work_as_htmx_and_as_plain_forms() {
    let app = spawn_app().await;
    app.signed_up().await;
    let token = app.csrf("/dashboard").await;
    let changed = app
        .server
        .post("/courses/async-rust/enrol")
        .add_header("HX-Request", "true")
        .add_header("X-CSRF-Token", token.clone())
        .await;
    assert_eq!(changed.status_code(), StatusCode::OK);
    // htmx gets both lists again, out of band (the card moves to "My courses" and the note that
    // there is none goes), and a notice for the page's live region.
    let lists = changed.text();
    assert!(
        lists.starts_with(r#"<div id="course-lists" hx-swap-oob="true">"#),
        "{lists}"
    );
    let mine = &lists
        [lists.find(r#"id="my-courses""#).unwrap()..lists.find(r#"id="more-courses""#).unwrap()];
    assert!(
        mine.contains("Async Rust") && mine.contains("Enrolled"),
        "{mine}"
    );
    assert!(!lists.contains(r#"id="no-courses""#));
    assert!(lists.contains(r#"hx-swap-oob="innerHTML:#notices""#));
    assert!(lists.contains("You are enrolled in Async Rust."));
    let dashboard = app.server.get("/dashboard").await.text();
    let mine = &dashboard[dashboard.find(r#"id="my-courses""#).unwrap()
        ..dashboard.find(r#"id="more-courses""#).unwrap()];
    assert!(mine.contains("Async Rust"));
    let plain = app
        .server
        .post("/courses/async-rust/leave")
        .form(&[("csrf_token", token.as_str())])
        .await;
    assert_redirect_to(&plain, StatusCode::SEE_OTHER, "/dashboard");
    assert!(
        app.server
            .get("/dashboard")
            .await
            .text()
            .contains(r#"id="no-courses""#)
    );
    let missing = app
        .post_with_token("/courses/no-such-course/enrol", &token)
        .await;
    assert_eq!(missing.status_code(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn course_ids_that_are_not_slugs_are_404_on_every_database() {
    let app = spawn_app().await;
    app.signed_up().await;
    let token = app.csrf("/dashboard").await;
    for id in ["%00", "x%00y", "R%C3%BCst", "a%20b"] {
        let r = app
            .server
            .post(&format!("/courses/{id}/enrol"))
            .add_header("X-CSRF-Token", token.clone())
            .await;
        assert_eq!(r.status_code(), StatusCode::NOT_FOUND, "{id}");
        let r = app
            .server
            .post(&format!("/courses/{id}/leave"))
            .add_header("X-CSRF-Token", token.clone())
            .await;
        assert_eq!(r.status_code(), StatusCode::NOT_FOUND, "{id}");
    }
}

/// Every instance keeps the catalog and a learner's enrolments in memory; an enrolment made, or a
/// course left, on one instance shows on another that had them kept, at once.
#[tokio::test]
async fn an_enrolment_made_on_one_instance_shows_on_another_at_once() {
    if !real_services() {
        skipped("needs TEST_REDIS_URL and TEST_DATABASE_URL (two instances)");
        return;
    }
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let session = app
        .sign_up(&unique_email(), PASSWORD)
        .await
        .cookie("lectern_session");
    let before = peer.get_with_session("/dashboard", &session).await.text();
    assert!(before.contains(r#"id="no-courses""#), "{before}");
    let token = app.csrf("/dashboard").await;
    let enrolled = app
        .post_with_token("/courses/async-rust/enrol", &token)
        .await;
    assert_redirect_to(&enrolled, StatusCode::SEE_OTHER, "/dashboard");
    let after = peer.get_with_session("/dashboard", &session).await.text();
    let mine = &after
        [after.find(r#"id="my-courses""#).unwrap()..after.find(r#"id="more-courses""#).unwrap()];
    assert!(mine.contains("Async Rust"), "{after}");
    let left = app
        .post_with_token("/courses/async-rust/leave", &token)
        .await;
    assert_redirect_to(&left, StatusCode::SEE_OTHER, "/dashboard");
    let again = peer.get_with_session("/dashboard", &session).await.text();
    assert!(again.contains(r#"id="no-courses""#), "{again}");
}
