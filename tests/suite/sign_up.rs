//! Signing up: the form, its errors beside each field, one account per email as a person reads it.

use axum::http::StatusCode;

use crate::{helpers::*, sign_in::api_sign_in_from};

#[tokio::test]
async fn sign_up_signs_the_learner_in_and_lands_on_the_dashboard() {
    let app = spawn_app().await;
    let response = app.sign_up(&unique_email(), PASSWORD).await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/dashboard");
    assert_eq!(
        response.header("cache-control"),
        "no-store",
        "it sets auth cookies"
    );
    let session = set_cookie(&response, "lectern_session");
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Lax")
            && session.contains("Path=/")
    );
    assert!(
        !session.contains("Secure"),
        "secure cookies are off in this test"
    );
    let dashboard = app.server.get("/dashboard").await;
    assert_eq!(dashboard.status_code(), StatusCode::OK);
    assert!(dashboard.text().contains("Ada Lovelace"));
    assert!(dashboard.text().contains("Sign out"));
}

#[tokio::test]
async fn a_taken_email_is_refused_beside_the_field_whatever_its_case() {
    let mut app = spawn_app().await;
    let email = app.signed_up().await;
    app.server.clear_cookies();
    let again = app.sign_up(&email.to_uppercase(), PASSWORD).await;
    assert_eq!(again.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = again.text();
    assert!(
        html.contains(r#"id="email-error""#) && html.contains("already exists"),
        "{html}"
    );
    assert!(!html.contains(PASSWORD), "the password is never echoed");
}

#[tokio::test]
async fn a_weak_password_is_refused_beside_the_field_and_creates_nothing() {
    let app = spawn_app().await;
    let email = unique_email();
    let response = app.sign_up(&email, "too short").await;
    assert_eq!(response.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().contains(r#"id="password-error""#));
    assert!(response.text().contains("at least 12 characters"));
    let long = app.sign_up(&email, &"x".repeat(1025)).await;
    assert_eq!(long.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(long.text().contains("1024 characters"));
    assert_eq!(app.account_count().await, 0);
}

#[tokio::test]
async fn malformed_email_and_empty_name_are_refused_beside_their_fields() {
    let app = spawn_app().await;
    let token = app.csrf("/register").await;
    let response = app
        .server
        .post("/register")
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", "not-an-email"),
            ("display_name", " "),
            ("password", PASSWORD),
        ])
        .await;
    assert_eq!(response.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text();
    assert!(html.contains(r#"id="email-error""#) && html.contains(r#"id="display-name-error""#));
    assert!(
        html.contains(r#"value="not-an-email""#),
        "what was typed is kept"
    );
}

#[tokio::test]
async fn sign_up_without_a_csrf_token_is_refused_and_creates_nothing() {
    let app = spawn_app().await;
    let response = app
        .server
        .post("/register")
        .form(&[
            ("email", unique_email().as_str()),
            ("display_name", "Eve"),
            ("password", PASSWORD),
        ])
        .await;
    assert_eq!(response.status_code(), StatusCode::FORBIDDEN);
    assert_eq!(app.account_count().await, 0);
}

#[tokio::test]
async fn one_address_spelled_two_ways_is_one_account() {
    let app = spawn_app().await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let composed = format!("jos\u{e9}-{tag}@example.com");
    let decomposed = format!("jose\u{301}-{tag}@EXAMPLE.com");
    assert_redirect_to(
        &app.sign_up(&composed, PASSWORD).await,
        StatusCode::SEE_OTHER,
        "/dashboard",
    );
    let mut app = app;
    app.server.clear_cookies();
    let again = app.sign_up(&decomposed, PASSWORD).await;
    assert_eq!(again.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.text().contains("already exists"));
    assert_eq!(app.account_count().await, 1);
    assert_redirect_to(
        &app.sign_in(&decomposed, PASSWORD, "").await,
        StatusCode::SEE_OTHER,
        "/dashboard",
    );
    assert_eq!(
        api_sign_in_from(&app, "ignored", &decomposed, PASSWORD).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_email_with_an_invisible_character_is_refused_beside_the_field() {
    let app = spawn_app().await;
    for email in [
        format!("ada\u{200b}{}@example.com", uuid::Uuid::new_v4().simple()),
        format!("\u{feff}ada{}@example.com", uuid::Uuid::new_v4().simple()),
        format!("ada\u{202e}{}@example.com", uuid::Uuid::new_v4().simple()),
    ] {
        let response = app.sign_up(&email, PASSWORD).await;
        assert_eq!(response.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = response.text();
        let field = &html[html
            .find(r#"id="email-error""#)
            .expect("an error beside the email field")..];
        assert!(field.contains("invisible"), "{field}");
    }
    assert_eq!(app.account_count().await, 0);
}
