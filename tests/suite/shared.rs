//! Shared and public computers: a sign-in that keeps nothing long-lived, lives shorter, and ends
//! when its browser is closed (no open page sends a heartbeat for the close window).

use std::time::Duration;

use axum::http::StatusCode;

use crate::helpers::*;

/// Signs in through the form with the "shared or public computer" box ticked.
async fn shared_sign_in(app: &TestApp, email: &str) -> axum_test::TestResponse {
    let token = app.csrf("/login").await;
    app.server
        .post("/login")
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", email),
            ("password", PASSWORD),
            ("shared", "on"),
        ])
        .await
}

/// A heartbeat from an open page, with the page's CSRF token.
async fn heartbeat(app: &TestApp, token: &str) -> StatusCode {
    app.server
        .post("/heartbeat")
        .add_header("X-CSRF-Token", token.to_owned())
        .await
        .status_code()
}

#[tokio::test]
async fn a_shared_computers_sign_in_sets_no_refresh_cookie_and_a_cookie_that_ends_with_the_browser()
{
    let mut app = spawn_app().await;
    let email = app.signed_up().await;
    app.server.clear_cookies();
    let response = shared_sign_in(&app, &email).await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/dashboard");
    let cookies = set_cookies(&response);
    assert!(
        !cookies.iter().any(|c| c.starts_with("lectern_refresh=")),
        "{cookies:?}"
    );
    let session = set_cookie(&response, "lectern_session");
    assert!(
        !session.contains("Max-Age") && !session.contains("Expires"),
        "{session}"
    );
    // The account page says which sign-ins are a shared computer's.
    let account = app.server.get("/account").await.text();
    assert!(account.contains("Shared computer"), "{account}");
    // The API's sign-in on a shared computer gets no refresh cookie either.
    let api = app
        .server
        .post("/api/v1/auth/login")
        .clear_cookies()
        .do_not_save_cookies()
        .json(&serde_json::json!({"email": email, "password": PASSWORD, "shared": true}))
        .await;
    assert_eq!(api.status_code(), StatusCode::OK);
    assert!(api.maybe_cookie("lectern_refresh").is_none());
}

#[tokio::test]
async fn without_heartbeats_a_shared_computers_sign_in_ends_as_closed() {
    let mut app = spawn_app().await;
    let email = app.signed_up().await;
    app.server.clear_cookies();
    let response = shared_sign_in(&app, &email).await;
    let session = response.cookie("lectern_session");
    let page = app.get_with_session("/dashboard", &session).await;
    assert_eq!(page.status_code(), StatusCode::OK);
    // The browser is closed: nothing is heard from it for the close window (90 s).
    app.advance(91);
    let back = app.get_with_session("/dashboard", &session).await;
    assert_eq!(back.status_code(), StatusCode::SEE_OTHER);
    let location = back.header("location").to_str().unwrap().to_owned();
    assert!(location.ends_with("reason=closed"), "{location}");
}

#[tokio::test]
async fn the_server_ends_a_closed_browsers_sign_in_by_itself() {
    let mut app = spawn_app().await;
    let email = app.signed_up().await;
    app.server.clear_cookies();
    let session = shared_sign_in(&app, &email).await.cookie("lectern_session");
    let (elsewhere, _) = app.api_login(&email).await;
    let sid = lectern::auth::sign_ins::browser_sign_in_id(session.value());
    app.advance(91);
    assert_eq!(app.state.sign_out.close_abandoned().await.unwrap(), 1);
    let row = app.sign_in_row(&sid).await;
    assert_eq!(row.revoked_reason.as_deref(), Some("closed"));
    assert!(
        !app.session_exists(&session).await,
        "its session record is gone"
    );
    let back = app.get_with_session("/dashboard", &session).await;
    let location = back.header("location").to_str().unwrap().to_owned();
    assert!(location.ends_with("reason=closed"), "{location}");
    // A sign-in made apart from it is not a shared computer's: it stays.
    assert_eq!(app.me(&elsewhere).await.status_code(), StatusCode::OK);
}

#[tokio::test]
async fn heartbeats_keep_a_shared_computers_sign_in_open_but_not_active() {
    let mut app = spawn_app().await;
    let email = app.signed_up().await;
    app.server.clear_cookies();
    shared_sign_in(&app, &email).await;
    let token = app.csrf("/dashboard").await;
    assert_eq!(
        app.server.post("/heartbeat").await.status_code(),
        StatusCode::FORBIDDEN,
        "without the page's CSRF token"
    );
    // Ten minutes of heartbeats and no activity: open all along, and then idle.
    for _ in 0..10 {
        app.advance(59);
        assert_eq!(heartbeat(&app, &token).await, StatusCode::NO_CONTENT);
    }
    app.advance(15);
    let page = app.server.get("/dashboard").await;
    assert_eq!(page.status_code(), StatusCode::SEE_OTHER);
    let location = page.header("location").to_str().unwrap().to_owned();
    assert!(location.ends_with("reason=idle"), "{location}");
    assert_eq!(heartbeat(&app, &token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_shared_computers_sign_in_ends_at_its_shorter_lifetime() {
    let mut app = spawn_app_with(|s| s.shared_absolute = Duration::from_secs(15 * 60)).await;
    let email = app.signed_up().await;
    app.server.clear_cookies();
    let session = shared_sign_in(&app, &email).await.cookie("lectern_session");
    // Busy (a page every minute, which also says the browser is open) for fifteen minutes.
    for minute in 1..=15 {
        app.advance(60);
        let page = app.get_with_session("/dashboard", &session).await;
        if page.status_code() != StatusCode::OK {
            assert_eq!(minute, 15, "ended early");
            let location = page.header("location").to_str().unwrap().to_owned();
            assert!(location.ends_with("reason=expired"), "{location}");
            let again = app.get_with_session("/dashboard", &session).await;
            assert_eq!(again.status_code(), StatusCode::SEE_OTHER);
            return;
        }
    }
    panic!("still signed in after its lifetime");
}
