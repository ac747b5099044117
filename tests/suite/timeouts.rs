//! Idle and absolute timeouts, with the movable clock: every credential of the sign-in ends, and the login page says why.

use std::time::Duration;

use axum::http::StatusCode;

use crate::{
    account::{FIREFOX, IPHONE, browser_sign_in},
    helpers::*,
    logout::assert_everything_refused,
};

#[tokio::test]
async fn an_idle_session_ends_its_sign_in_and_the_login_page_says_why() {
    let app = spawn_app_with(|s| s.session_idle = Duration::from_secs(60)).await;
    let email = app.signed_up().await;
    let (access, _) = app.api_login(&email).await;
    let session = app.server.get("/").await; // a page view within the idle time
    assert!(session.text().contains("data-authenticated"));
    app.advance(61);
    let page = app.server.get("/dashboard").await;
    assert_redirect_to(
        &page,
        StatusCode::SEE_OTHER,
        "/login?next=%2Fdashboard&reason=idle",
    );
    let removal = set_cookie(&page, "lectern_session");
    assert!(removal.contains("Max-Age=0"), "{removal}");
    assert_eq!(page.header("cache-control"), "no-store");
    let login = app.server.get("/login?next=%2Fdashboard&reason=idle").await;
    assert!(login.text().contains("no activity for a while"));
    // The idle rule is the whole sign-in's: the API sign-in beside it, which never refreshed in
    // that time, has idled out too.
    assert_eq!(
        app.me(&access).await.status_code(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn activity_keeps_a_session_alive_past_the_idle_time() {
    let app = spawn_app_with(|s| s.session_idle = Duration::from_secs(60)).await;
    app.signed_up().await;
    for _ in 0..4 {
        app.advance(40);
        let page = app.server.get("/dashboard").await;
        assert_eq!(page.status_code(), StatusCode::OK, "active for {} s", 40);
    }
}

#[tokio::test]
async fn a_sign_in_past_its_absolute_lifetime_is_refused_by_the_api_too() {
    let app = spawn_app_with(|s| {
        s.session_idle = Duration::from_secs(60);
        s.session_absolute = Duration::from_secs(120);
    })
    .await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    assert_eq!(app.me(&access).await.status_code(), StatusCode::OK);
    for _ in 0..3 {
        app.advance(35);
        assert_eq!(
            app.server.get("/dashboard").await.status_code(),
            StatusCode::OK
        );
    }
    // Active all along, but past the absolute lifetime; the access token's own exp is still
    // minutes away, and the sign-in's cap ends it anyway.
    app.advance(16);
    let page = app.server.get("/dashboard").await;
    assert_redirect_to(
        &page,
        StatusCode::SEE_OTHER,
        "/login?next=%2Fdashboard&reason=expired",
    );
    app.assert_api_credentials_refused(&access, &refresh).await;
}

#[tokio::test]
async fn an_action_on_an_expired_session_goes_to_sign_in_and_back_to_the_page() {
    let app = spawn_app_with(|s| s.session_idle = Duration::from_secs(60)).await;
    app.signed_up().await;
    let token = app.csrf("/dashboard").await;
    app.advance(61);
    let htmx = app
        .server
        .post("/courses/async-rust/enrol")
        .add_header("HX-Request", "true")
        .add_header("HX-Current-URL", "http://localhost/dashboard")
        .add_header("X-CSRF-Token", token.clone())
        .await;
    assert_eq!(htmx.status_code(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        htmx.header("hx-redirect"),
        "/login?next=%2Fdashboard&reason=idle"
    );
    let plain = app
        .server
        .post("/courses/async-rust/enrol")
        .add_cookie(cookie::Cookie::new(
            "lectern_session",
            "AAAAAAAAAAAAAAAAAAAAAA",
        ))
        .form(&[("csrf_token", token.as_str())])
        .await;
    assert_redirect_to(
        &plain,
        StatusCode::SEE_OTHER,
        "/login?next=%2Fdashboard&reason=expired",
    );
}

#[tokio::test]
async fn an_api_sign_in_idles_out_without_refreshes_and_each_refresh_keeps_it_alive() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (_, mut refresh) = app.api_login(&email).await;
    for _ in 0..4 {
        app.advance(20 * 60);
        let (_, next) = app.access_via(&refresh).await;
        refresh = next;
    }
    let (token, next) = app.access_via(&refresh).await;
    app.advance(31 * 60);
    app.assert_api_credentials_refused(&token, &next).await;
}

#[tokio::test]
async fn a_sign_in_ended_for_its_lifetime_refuses_every_credential_and_the_login_page_says_expired()
{
    let app = spawn_app_with(|s| {
        s.session_absolute = std::time::Duration::from_secs(3600);
        s.session_idle = std::time::Duration::from_secs(3600);
    })
    .await;
    let email = app.signed_up().await;
    let other = browser_sign_in(&app, &email, FIREFOX).await;
    app.advance(1800);
    let later = browser_sign_in(&app, &email, IPHONE).await;
    app.advance(1801);
    assert_everything_refused(&app, &other).await;
    // A sign-in made later has its own lifetime and still works.
    let (token, _) = app.access_via(&later.refresh).await;
    assert_eq!(app.me(&token).await.status_code(), StatusCode::OK);
    let page = app.get_with_session("/dashboard", &later.session).await;
    assert_eq!(page.status_code(), StatusCode::OK);
    let page = app.get_with_session("/dashboard", &other.session).await;
    let location = page.header("location").to_str().unwrap().to_owned();
    assert!(location.ends_with("reason=expired"), "{location}");
}
