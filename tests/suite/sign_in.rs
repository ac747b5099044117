//! Signing in: the form, `next`, the session id and CSRF token it rotates, and the rate limits.

use axum::http::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn a_cross_site_sign_in_is_refused_even_with_a_valid_visitor_token() {
    let mut app = spawn_app().await;
    let email = app.signed_up().await;
    app.server.clear_cookies();
    let token = app.csrf("/login").await;
    let response = app
        .server
        .post("/login")
        .add_header("Origin", "https://evil.example")
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", email.as_str()),
            ("password", PASSWORD),
        ])
        .await;
    assert_eq!(response.status_code(), StatusCode::FORBIDDEN);
    assert!(response.maybe_cookie("lectern_session").is_none());
}

#[tokio::test]
async fn sign_in_redirects_to_a_local_next() {
    let mut app = spawn_app().await;
    let email = app.signed_up().await;
    app.server.clear_cookies();
    let response = app.sign_in(&email, PASSWORD, "/account").await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/account");
    assert_eq!(
        response.header("cache-control"),
        "no-store",
        "it sets auth cookies"
    );
    assert_eq!(
        app.server.get("/account").await.status_code(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn open_redirect_attempts_fall_back_to_the_dashboard() {
    let mut app = spawn_app().await;
    let email = app.signed_up().await;
    for next in [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
    ] {
        app.server.clear_cookies();
        let response = app.sign_in(&email, PASSWORD, next).await;
        assert_redirect_to(&response, StatusCode::SEE_OTHER, "/dashboard");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_email_are_answered_alike() {
    let mut app = spawn_app().await;
    let email = app.signed_up().await;
    app.server.clear_cookies();
    let wrong = app.sign_in(&email, "wrong password entirely", "").await;
    let unknown = app.sign_in(&unique_email(), PASSWORD, "").await;
    assert_eq!(wrong.status_code(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status_code(), StatusCode::UNAUTHORIZED);
    let message = "The email or password is not right.";
    assert!(wrong.text().contains(message) && unknown.text().contains(message));
    assert!(wrong.maybe_cookie("lectern_session").is_none());
    assert_eq!(
        app.server.get("/dashboard").await.status_code(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn the_session_id_changes_at_every_sign_in_even_when_already_signed_in() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let first = app.sign_in(&email, PASSWORD, "").await;
    let first_cookie = first.cookie("lectern_session");
    let second = app.sign_in(&email, PASSWORD, "").await;
    let second_cookie = second.cookie("lectern_session");
    assert_ne!(first_cookie.value(), second_cookie.value());
    // The replaced session is gone, not just unused.
    assert!(!app.session_exists(&first_cookie).await);
    let old = app.get_with_session("/dashboard", &first_cookie).await;
    assert_eq!(old.status_code(), StatusCode::SEE_OTHER);
    let new = app.get_with_session("/dashboard", &second_cookie).await;
    assert_eq!(new.status_code(), StatusCode::OK);
}

#[tokio::test]
async fn the_csrf_token_rotates_at_sign_in() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let before = app.csrf("/dashboard").await;
    app.sign_in(&email, PASSWORD, "").await;
    let after = app.csrf("/dashboard").await;
    assert_ne!(before, after);
    let stale = app
        .post_with_token("/courses/rust-foundations/enrol", &before)
        .await;
    assert_eq!(stale.status_code(), StatusCode::FORBIDDEN);
}

/// A session record holds its learner and nothing else: the CSRF token derives from the session's
/// id, so it is in no record, differs between two sessions of one learner, and neither session's
/// token is taken by the other.
#[tokio::test]
async fn a_session_record_holds_only_its_learner_and_each_session_has_its_own_token() {
    let mut app = spawn_app().await;
    let email = unique_email();
    let first = app
        .sign_up(&email, PASSWORD)
        .await
        .cookie("lectern_session");
    let first_token = csrf_from(&app.get_with_session("/dashboard", &first).await.text());
    app.server.clear_cookies();
    let second = app
        .sign_in(&email, PASSWORD, "")
        .await
        .cookie("lectern_session");
    let second_token = csrf_from(&app.get_with_session("/dashboard", &second).await.text());
    assert_ne!(first_token, second_token);

    for (session, token) in [(&first, &first_token), (&second, &second_token)] {
        let id: tower_sessions::session::Id = session.value().parse().unwrap();
        let record = tower_sessions::SessionStore::load(&app.sessions, &id)
            .await
            .unwrap()
            .unwrap();
        let keys: Vec<&String> = record.data.keys().collect();
        assert_eq!(keys, ["axum-login.data"], "{:?}", record.data);
        let stored = serde_json::to_string(&record.data).unwrap();
        assert!(!stored.contains(token.as_str()), "{stored}");
        assert!(!stored.contains("argon2"), "{stored}");
    }
    // Each session's token is refused on the other, and taken on its own.
    for (session, token, taken) in [
        (&first, &second_token, false),
        (&second, &first_token, false),
        (&second, &second_token, true),
    ] {
        let enrol = app
            .server
            .post("/courses/rust-foundations/enrol")
            .clear_cookies()
            .do_not_save_cookies()
            .add_cookie(session.clone())
            .form(&[("csrf_token", token.as_str())])
            .await;
        let status = enrol.status_code();
        if taken {
            assert!(status.is_redirection(), "{status}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN);
        }
    }
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_account_at_one_address() {
    let mut app = spawn_app_with(|s| s.rate_limit = 10).await;
    let email = app.signed_up().await;
    app.server.clear_cookies();
    for _ in 0..2 {
        assert_eq!(
            app.sign_in(&email, "wrong password entirely", "")
                .await
                .status_code(),
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = app.sign_in(&email, PASSWORD, "").await;
    assert_eq!(limited.status_code(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited
        .header("retry-after")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    // The sign-in form again, the email kept, the wait in words.
    let page = limited.text();
    assert!(page.contains(r#"action="/login""#), "{page}");
    assert!(page.contains(&format!(r#"value="{email}""#)), "{page}");
    assert!(page.contains("Too many attempts. Try again in"), "{page}");
}

/// An API sign-in from a given client address (behind one trusted proxy).
pub(crate) async fn api_sign_in_from(
    app: &TestApp,
    ip: &str,
    email: &str,
    password: &str,
) -> StatusCode {
    app.server
        .post("/api/v1/auth/login")
        .clear_cookies()
        .do_not_save_cookies()
        .add_header("X-Forwarded-For", ip.to_owned())
        .json(&serde_json::json!({"email": email, "password": password}))
        .await
        .status_code()
}

#[tokio::test]
async fn wrong_passwords_from_one_address_never_lock_the_owner_out_from_another() {
    let app = spawn_app_with(|s| {
        s.rate_limit = 10;
        s.trusted_proxies = 1;
    })
    .await;
    let email = app.signed_up().await;
    let mut attacker = Vec::new();
    for _ in 0..5 {
        attacker
            .push(api_sign_in_from(&app, "203.0.113.9", &email, "wrong password entirely").await);
    }
    assert_eq!(
        attacker,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "the attacker is slowed to a fifth of the limit"
    );
    assert_eq!(
        api_sign_in_from(&app, "198.51.100.1", &email, PASSWORD).await,
        StatusCode::OK,
        "the owner, from elsewhere"
    );
    let visitor_token = csrf_from(&app.server.get("/login").clear_cookies().await.text());
    let form = app
        .server
        .post("/login")
        .clear_cookies()
        .add_header("X-Forwarded-For", "198.51.100.2")
        .form(&[
            ("csrf_token", visitor_token.as_str()),
            ("email", email.as_str()),
            ("password", PASSWORD),
        ])
        .await;
    assert_redirect_to(&form, StatusCode::SEE_OTHER, "/dashboard");
}

#[tokio::test]
async fn parallel_wrong_passwords_cannot_exceed_the_account_limit() {
    let app = spawn_app_with(|s| s.rate_limit = 10).await;
    let email = app.signed_up().await;
    let attempts =
        (0..8).map(|_| api_sign_in_from(&app, "ignored", &email, "wrong password entirely"));
    let statuses = futures::future::join_all(attempts).await;
    let refused = |code| statuses.iter().filter(|s| **s == code).count();
    assert_eq!(refused(StatusCode::UNAUTHORIZED), 2, "{statuses:?}");
    assert_eq!(refused(StatusCode::TOO_MANY_REQUESTS), 6, "{statuses:?}");
}

#[tokio::test]
async fn correct_passwords_do_not_count_against_the_account_limit() {
    let app = spawn_app_with(|s| s.rate_limit = 10).await;
    let email = app.signed_up().await;
    assert_eq!(
        api_sign_in_from(&app, "ignored", &email, "wrong password entirely").await,
        StatusCode::UNAUTHORIZED
    );
    for _ in 0..4 {
        assert_eq!(
            api_sign_in_from(&app, "ignored", &email, PASSWORD).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        api_sign_in_from(&app, "ignored", &email, "wrong password entirely").await,
        StatusCode::UNAUTHORIZED,
        "one failure so far, the second is still answered"
    );
}

#[tokio::test]
async fn a_protected_page_sends_visitors_to_the_login_page_with_next() {
    let app = spawn_app().await;
    for path in ["/dashboard", "/account"] {
        let response = app.server.get(path).await;
        assert_redirect_to(
            &response,
            StatusCode::SEE_OTHER,
            &format!("/login?next=%2F{}", &path[1..]),
        );
    }
}

#[tokio::test]
async fn an_htmx_request_without_a_session_gets_401_and_hx_redirect() {
    let app = spawn_app().await;
    let response = app
        .server
        .get("/dashboard")
        .add_header("HX-Request", "true")
        .await;
    assert_eq!(response.status_code(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.header("hx-redirect"), "/login?next=%2Fdashboard");
}
