//! What browsers and proxies may keep: nothing rendered for a signed-in learner.

use axum::http::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn authenticated_pages_are_not_stored_and_not_snapshotted_by_htmx() {
    let mut app = spawn_app().await;
    app.signed_up().await;
    for path in ["/dashboard", "/account", "/"] {
        let response = app.server.get(path).await;
        assert_eq!(response.header("cache-control"), "no-store", "{path}");
        assert!(response.text().contains(r#"hx-history="false""#), "{path}");
    }
    app.server.clear_cookies();
    assert!(
        !app.server
            .get("/")
            .await
            .text()
            .contains(r#"hx-history="false""#)
    );
}

#[tokio::test]
async fn every_response_rendered_for_a_signed_in_learner_is_not_stored() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let token = app.csrf("/dashboard").await;
    let not_found = app.server.get("/no/such/page").await;
    assert_eq!(not_found.status_code(), StatusCode::NOT_FOUND);
    assert!(not_found.text().contains(">Sign out</button>"));
    let rerendered = app
        .server
        .post("/register")
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", "not-an-email"),
            ("display_name", ""),
            ("password", "short"),
        ])
        .await;
    assert_eq!(rerendered.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused = app
        .server
        .post("/login")
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", email.as_str()),
            ("password", "wrong password entirely"),
        ])
        .await;
    assert_eq!(refused.status_code(), StatusCode::UNAUTHORIZED);
    let redirected = app.server.get("/login?next=/account").await;
    assert_eq!(redirected.status_code(), StatusCode::SEE_OTHER);
    for (what, response) in [
        ("404 page", &not_found),
        ("form with errors", &rerendered),
        ("refused sign-in", &refused),
        ("redirect", &redirected),
    ] {
        assert_eq!(response.header("cache-control"), "no-store", "{what}");
    }
    let (access, _) = app.api_login(&email).await;
    for path in ["/api/v1/me", "/api/v1/me/courses"] {
        let response = app
            .server
            .get(path)
            .clear_cookies()
            .authorization_bearer(&access)
            .await;
        assert_eq!(response.status_code(), StatusCode::OK);
        assert_eq!(response.header("cache-control"), "no-store", "{path}");
    }
    // A visitor's catalog, on the other hand, is the same for everyone.
    let visitor = app.server.get("/").clear_cookies().await;
    assert!(visitor.maybe_header("cache-control").is_none());
}

#[tokio::test]
async fn a_page_that_clears_a_dead_session_cookie_is_not_stored() {
    let app = spawn_app().await;
    let home = app
        .server
        .get("/")
        .add_cookie(cookie::Cookie::new(
            "lectern_session",
            "AAAAAAAAAAAAAAAAAAAAAA",
        ))
        .await;
    assert_eq!(home.status_code(), StatusCode::OK);
    assert!(set_cookie(&home, "lectern_session").contains("Max-Age=0"));
    assert_eq!(home.header("cache-control"), "no-store");
}
