//! Recent authentication: ending another sign-in, signing out the others or everywhere, and
//! deleting the account need the password entered within the window (10 minutes by default).
//! After it, a browser is asked first, without losing what it asked; an API client is told
//! `insufficient_user_authentication` and re-authenticates for a fresh token.

use axum::http::StatusCode;

use crate::helpers::*;

/// The window, and a little more.
const PAST_THE_WINDOW: u64 = 10 * 60 + 1;

/// An app whose access tokens outlive the window, so a token refused after it is refused for
/// what it asks, not for its age.
async fn spawn() -> TestApp {
    spawn_app_with(|s| s.access_ttl = std::time::Duration::from_secs(3600)).await
}

#[tokio::test]
async fn after_the_window_ending_another_sign_in_asks_for_the_password_first() {
    let app = spawn().await;
    let email = app.signed_up().await;
    let (other, refresh) = app.api_login(&email).await;
    let sid = app.sid_of(&other);
    let path = format!("/account/sessions/{sid}/end");
    let token = app.csrf("/account").await;
    app.advance(PAST_THE_WINDOW);
    // htmx: the prompt replaces the page's content, and nothing is ended yet.
    let asked = app
        .server
        .post(&path)
        .add_header("HX-Request", "true")
        .add_header("X-CSRF-Token", token.clone())
        .await;
    assert_eq!(asked.status_code(), StatusCode::OK);
    assert_eq!(asked.header("hx-retarget"), "#main");
    let prompt = asked.text();
    assert!(prompt.contains(r#"name="current_password""#), "{prompt}");
    assert!(prompt.contains(&format!(r#"action="{path}""#)), "{prompt}");
    assert_eq!(app.me(&other).await.status_code(), StatusCode::OK);
    // A wrong password: asked again, saying so; still nothing ended.
    let wrong = app
        .server
        .post(&path)
        .form(&[
            ("csrf_token", token.as_str()),
            ("current_password", "not the password at all"),
        ])
        .await;
    assert_eq!(wrong.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.text().contains("That is not your password."));
    assert_eq!(app.me(&other).await.status_code(), StatusCode::OK);
    // The password with the same request: it goes ahead.
    let done = app
        .server
        .post(&path)
        .form(&[
            ("csrf_token", token.as_str()),
            ("current_password", PASSWORD),
        ])
        .await;
    assert_redirect_to(&done, StatusCode::SEE_OTHER, "/account");
    app.assert_api_credentials_refused(&other, &refresh).await;
}

#[tokio::test]
async fn within_the_window_ending_another_sign_in_goes_ahead_and_signing_this_browser_out_never_asks()
 {
    let app = spawn().await;
    let email = app.signed_up().await;
    let (other, _) = app.api_login(&email).await;
    let token = app.csrf("/account").await;
    app.advance(9 * 60);
    let path = format!("/account/sessions/{}/end", app.sid_of(&other));
    let ended = app.post_with_token(&path, &token).await;
    assert_redirect_to(&ended, StatusCode::SEE_OTHER, "/account");
    assert_eq!(app.me(&other).await.status_code(), StatusCode::UNAUTHORIZED);
    app.advance(PAST_THE_WINDOW);
    let token = app.csrf("/account").await;
    let out = app
        .server
        .post("/logout")
        .form(&[("csrf_token", token.as_str())])
        .await;
    assert_redirect_to(&out, StatusCode::SEE_OTHER, "/?signed_out=1");
}

#[tokio::test]
async fn after_the_window_signing_out_everywhere_asks_first_and_then_signs_out_everywhere() {
    let app = spawn().await;
    let email = app.signed_up().await;
    let (other, refresh) = app.api_login(&email).await;
    let token = app.csrf("/account").await;
    app.advance(PAST_THE_WINDOW);
    let asked = app
        .server
        .post("/logout")
        .form(&[("csrf_token", token.as_str()), ("scope", "global")])
        .await;
    assert_eq!(asked.status_code(), StatusCode::OK);
    let prompt = asked.text();
    assert!(
        prompt.contains(r#"name="scope" value="global""#),
        "{prompt}"
    );
    assert_eq!(asked.header("cache-control"), "no-store");
    assert!(
        asked.maybe_header("clear-site-data").is_none(),
        "not signed out yet"
    );
    assert_eq!(app.me(&other).await.status_code(), StatusCode::OK);
    let done = app
        .server
        .post("/logout")
        .form(&[
            ("csrf_token", token.as_str()),
            ("scope", "global"),
            ("current_password", PASSWORD),
        ])
        .await;
    assert_redirect_to(&done, StatusCode::SEE_OTHER, "/?signed_out=1");
    app.assert_api_credentials_refused(&other, &refresh).await;
}

#[tokio::test]
async fn an_api_call_that_needs_recent_authentication_says_so_and_a_fresh_token_gets_through() {
    let app = spawn().await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let (other, _) = app.api_login(&email).await;
    let claims = app.state.tokens.verify_ignoring_expiry(&access).unwrap();
    assert_eq!(
        claims.auth_time, claims.iat,
        "the token says when the password was entered"
    );
    app.advance(PAST_THE_WINDOW);
    // A token of the same sign-in, refreshed after the window, keeps the old auth_time.
    let (access, _) = app.access_via(&refresh).await;
    let path = format!("/api/v1/me/sessions/{}", app.sid_of(&other));
    let refused = app
        .server
        .delete(&path)
        .clear_cookies()
        .authorization_bearer(&access)
        .await;
    assert_eq!(refused.status_code(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.json::<serde_json::Value>()["error"],
        "insufficient_user_authentication"
    );
    assert_eq!(
        refused.header("www-authenticate"),
        r#"Bearer error="insufficient_user_authentication", max_age=600"#
    );
    let wider = app.api_logout_scoped("global", Some(&access), None).await;
    assert_eq!(wider.status_code(), StatusCode::UNAUTHORIZED);
    assert!(
        set_cookies(&wider).is_empty(),
        "the client keeps its cookies"
    );
    assert_eq!(app.me(&other).await.status_code(), StatusCode::OK);
    let reauth = |password: &str| {
        app.server
            .post("/api/v1/auth/reauthenticate")
            .clear_cookies()
            .authorization_bearer(&access)
            .json(&serde_json::json!({"password": password}))
    };
    let wrong = reauth("not the password at all").await;
    assert_eq!(wrong.status_code(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.json::<serde_json::Value>()["error"],
        "invalid_credentials"
    );
    let fresh = reauth(PASSWORD).await;
    assert_eq!(fresh.status_code(), StatusCode::OK);
    let fresh = fresh.json::<serde_json::Value>()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.sid_of(&fresh), app.sid_of(&access), "the same sign-in");
    let ended = app
        .server
        .delete(&path)
        .clear_cookies()
        .authorization_bearer(&fresh)
        .await;
    assert_eq!(ended.status_code(), StatusCode::NO_CONTENT);
    assert_eq!(app.me(&other).await.status_code(), StatusCode::UNAUTHORIZED);
}
