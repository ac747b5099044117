//! The JSON API: access tokens, rotating refresh cookies, reuse detection, bad input.

use axum::http::StatusCode;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use cookie::Cookie;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::helpers::*;

fn assert_invalid_token(response: &axum_test::TestResponse) {
    assert_eq!(
        response.status_code(),
        StatusCode::UNAUTHORIZED,
        "{}",
        response.text()
    );
    assert_eq!(
        response.header("www-authenticate"),
        r#"Bearer error="invalid_token""#
    );
    assert_eq!(
        response.json::<serde_json::Value>()["error"],
        "invalid_token"
    );
}

#[tokio::test]
async fn api_login_returns_a_bearer_token_and_a_strict_refresh_cookie() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let response = app
        .server
        .post("/api/v1/auth/login")
        .json(&serde_json::json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(response.status_code(), StatusCode::OK);
    assert_eq!(response.header("cache-control"), "no-store");
    let body: serde_json::Value = response.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    let refresh = set_cookie(&response, "lectern_refresh");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/api/v1/auth"] {
        assert!(refresh.contains(attribute), "{refresh}");
    }
    let me = app.me(body["access_token"].as_str().unwrap()).await;
    assert_eq!(me.status_code(), StatusCode::OK);
    let me: serde_json::Value = me.json();
    assert_eq!(me["email"], email.as_str());
    assert_eq!(me["display_name"], "Ada Lovelace");
    assert!(me["id"].is_string());
}

#[tokio::test]
async fn the_access_token_names_the_sign_in_not_the_session_cookie() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let signed_in = app.sign_in(&email, PASSWORD, "").await;
    let session = signed_in.cookie("lectern_session");
    // An access token for this very sign-in, as a page would get one.
    let refreshed = app.refresh_with(&signed_in.cookie("lectern_refresh")).await;
    let token = refreshed.json::<serde_json::Value>()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    for claim in ["sub", "jti", "iat", "exp", "iss", "aud", "sid"] {
        assert!(!claims[claim].is_null(), "missing {claim}");
    }
    let sid = claims["sid"].as_str().unwrap();
    assert_eq!(
        sid,
        lectern::auth::sign_ins::browser_sign_in_id(session.value()),
        "the token names this browser's sign-in"
    );
    assert!(
        !sid.contains(session.value()) && !token.contains(session.value()),
        "but never by the session cookie's value"
    );
    let id: tower_sessions::session::Id = session.value().parse().unwrap();
    let record = tower_sessions::SessionStore::load(&app.sessions, &id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !record.data.contains_key("lectern.sid"),
        "the session record does not store what derives from its id"
    );
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256");
}

#[tokio::test]
async fn wrong_credentials_get_invalid_credentials_json() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    for (email, password) in [
        (email.as_str(), "wrong password entirely"),
        ("nobody@example.com", PASSWORD),
    ] {
        let response = app
            .server
            .post("/api/v1/auth/login")
            .json(&serde_json::json!({"email": email, "password": password}))
            .await;
        assert_eq!(response.status_code(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.json::<serde_json::Value>()["error"],
            "invalid_credentials"
        );
        assert!(response.maybe_cookie("lectern_refresh").is_none());
    }
}

#[tokio::test]
async fn malformed_bodies_are_json_4xx_errors() {
    let app = spawn_app().await;
    let cases: [(&str, &str, StatusCode); 4] = [
        (
            "application/json",
            "{not json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"email":"a@example.com"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"email":1,"password":[]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/x-www-form-urlencoded",
            "email=a&password=b",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (content_type, body, status) in cases {
        let response = app
            .server
            .post("/api/v1/auth/login")
            .content_type(content_type)
            .bytes(body.as_bytes().to_vec().into())
            .await;
        assert_eq!(response.status_code(), status, "{body}");
        assert!(
            response
                .header("content-type")
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        assert!(response.json::<serde_json::Value>()["error"].is_string());
    }
    let wrong_method = app.server.get("/api/v1/auth/login").await;
    assert_eq!(wrong_method.status_code(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        wrong_method.json::<serde_json::Value>()["error"],
        "method_not_allowed"
    );
    let unknown = app.server.get("/api/v1/nothing-here").await;
    assert_eq!(unknown.status_code(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.json::<serde_json::Value>()["error"], "not_found");
}

#[tokio::test]
async fn bad_bearer_tokens_are_refused_per_rfc_6750() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (token, _) = app.api_login(&email).await;
    let parts: Vec<&str> = token.split('.').collect();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let sign = |claims: &serde_json::Value, key: &[u8], alg: Algorithm| {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
    };
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let mut tampered = claims.clone();
    tampered["sub"] = "someone-else".into();
    let mut expired = claims.clone();
    expired["exp"] = (claims["iat"].as_i64().unwrap() - 3600).into();
    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = "someone".into();
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = "other-api".into();
    let cases = vec![
        ("malformed", "not-a-jwt".to_owned()),
        ("alg none", format!("{none_header}.{}.", parts[1])),
        (
            "another key",
            sign(
                &claims,
                b"another secret of at least thirty-two bytes",
                Algorithm::HS256,
            ),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(tampered.to_string()),
                parts[2]
            ),
        ),
        ("truncated", token[..token.len() - 5].to_owned()),
        (
            "expired (right key)",
            sign(&expired, &server_jwt_key(), Algorithm::HS256),
        ),
        (
            "wrong iss (right key)",
            sign(&wrong_iss, &server_jwt_key(), Algorithm::HS256),
        ),
        (
            "wrong aud (right key)",
            sign(&wrong_aud, &server_jwt_key(), Algorithm::HS256),
        ),
        (
            "HS512 with the right key",
            sign(&claims, &server_jwt_key(), Algorithm::HS512),
        ),
        ("20 KB", "x".repeat(20_000)),
    ];
    for (what, bad) in cases {
        let response = app.me(&bad).await;
        assert_invalid_token(&response);
        assert!(!response.text().contains("panicked"), "{what}");
    }
    // Control: the original claims re-signed with the same key and algorithm are accepted, so the
    // cases above fail for the one thing each changes.
    let resigned = sign(&claims, &server_jwt_key(), Algorithm::HS256);
    assert_eq!(app.me(&resigned).await.status_code(), StatusCode::OK);
    let missing = app.server.get("/api/v1/me").clear_cookies().await;
    assert_invalid_token(&missing);
    let basic = app
        .server
        .get("/api/v1/me")
        .authorization("Basic YTpi")
        .await;
    assert_invalid_token(&basic);
    // The real token still works: nothing above changed server state.
    assert_eq!(app.me(&token).await.status_code(), StatusCode::OK);
}

#[tokio::test]
async fn an_access_token_is_accepted_until_exp_plus_leeway_and_refused_after() {
    let app = spawn_app_with(|s| s.access_ttl = std::time::Duration::from_secs(60)).await;
    let email = app.signed_up().await;
    let (token, _) = app.api_login(&email).await;
    assert_eq!(app.me(&token).await.status_code(), StatusCode::OK);
    app.advance(60 + 5);
    assert_eq!(
        app.me(&token).await.status_code(),
        StatusCode::OK,
        "within the leeway"
    );
    app.advance(1);
    assert_invalid_token(&app.me(&token).await);
}

#[tokio::test]
async fn my_courses_lists_the_learners_enrolments() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let csrf = app.csrf("/dashboard").await;
    app.post_with_token("/courses/sql-in-practice/enrol", &csrf)
        .await;
    let (token, _) = app.api_login(&email).await;
    let response = app
        .server
        .get("/api/v1/me/courses")
        .authorization_bearer(&token)
        .await;
    assert_eq!(response.status_code(), StatusCode::OK);
    let courses: serde_json::Value = response.json();
    assert_eq!(courses.as_array().unwrap().len(), 1);
    assert_eq!(courses[0]["id"], "sql-in-practice");
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_whole_family() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (first_access, first_refresh) = app.api_login(&email).await;

    let rotated = app.refresh_with(&first_refresh).await;
    assert_eq!(rotated.status_code(), StatusCode::OK);
    let second_refresh = rotated.cookie("lectern_refresh");
    assert_ne!(second_refresh.value(), first_refresh.value());
    let second_access = rotated.json::<serde_json::Value>()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.me(&second_access).await.status_code(), StatusCode::OK);

    // The first token again, after the grace window: theft. 401, and the whole family dies.
    app.advance(11);
    let reused = app.refresh_with(&first_refresh).await;
    assert_eq!(reused.status_code(), StatusCode::UNAUTHORIZED);
    assert_eq!(reused.json::<serde_json::Value>()["error"], "invalid_grant");
    assert_eq!(
        app.refresh_with(&second_refresh).await.status_code(),
        StatusCode::UNAUTHORIZED
    );
    assert_invalid_token(&app.me(&first_access).await);
    assert_invalid_token(&app.me(&second_access).await);

    let reuse_rows: i64 =
        sqlx::query_scalar("select count(*) from audit_events where event = 'refresh_reuse'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(reuse_rows, 1);
}

#[tokio::test]
async fn refresh_reuse_also_ends_the_browser_session_of_that_sign_in() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let signed_in = app.sign_in(&email, PASSWORD, "").await;
    let session = signed_in.cookie("lectern_session");
    let refresh = signed_in.cookie("lectern_refresh");
    assert_eq!(
        app.refresh_with(&refresh).await.status_code(),
        StatusCode::OK
    );
    assert!(app.session_exists(&session).await);
    app.advance(11);
    assert_eq!(
        app.refresh_with(&refresh).await.status_code(),
        StatusCode::UNAUTHORIZED
    );
    // Deleted by the theft response itself, before the browser comes back.
    assert!(
        !app.session_exists(&session).await,
        "the session record is deleted"
    );
    let page = app.get_with_session("/dashboard", &session).await;
    assert_redirect_to(
        &page,
        StatusCode::SEE_OTHER,
        "/login?next=%2Fdashboard&reason=reuse",
    );
    let login = app.server.get("/login?reason=reuse").await;
    assert!(login.text().contains("refresh token was used twice"));
}

async fn reuse_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from audit_events where event = 'refresh_reuse'")
        .fetch_one(&app.state.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_tabs_refreshing_at_once_both_stay_signed_in() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (first_access, refresh) = app.api_login(&email).await;
    let sid = app.sid_of(&first_access);
    let (a, b) = tokio::join!(app.refresh_with(&refresh), app.refresh_with(&refresh));
    for r in [&a, &b] {
        assert_eq!(r.status_code(), StatusCode::OK, "{}", r.text());
        let token = r.json::<serde_json::Value>()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(app.sid_of(&token), sid, "the same sign-in");
        assert_eq!(app.me(&token).await.status_code(), StatusCode::OK);
        // Each refresh cookie handed out keeps working.
        assert_eq!(
            app.refresh_with(&r.cookie("lectern_refresh"))
                .await
                .status_code(),
            StatusCode::OK
        );
    }
    assert_eq!(reuse_rows(&app).await, 0, "no theft was seen");
    assert_eq!(app.me(&first_access).await.status_code(), StatusCode::OK);
}

#[tokio::test]
async fn within_the_grace_window_a_rotated_token_answers_again_and_after_it_is_theft() {
    let app = spawn_app_with(|s| s.refresh_grace = std::time::Duration::from_secs(10)).await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let (_, rotated) = app.access_via(&refresh).await;
    // A lost response: the same token again within the window.
    app.advance(10);
    let (again, sibling) = app.access_via(&refresh).await;
    assert_eq!(app.sid_of(&again), app.sid_of(&access));
    assert_eq!(reuse_rows(&app).await, 0);
    // After the window, reuse is theft: the whole family dies, grace children included.
    app.advance(1);
    let theft = app.refresh_with(&refresh).await;
    assert_eq!(theft.status_code(), StatusCode::UNAUTHORIZED);
    assert_eq!(theft.json::<serde_json::Value>()["error"], "invalid_grant");
    assert_eq!(reuse_rows(&app).await, 1);
    for token in [&access, &again] {
        assert_invalid_token(&app.me(token).await);
    }
    for cookie in [&rotated, &sibling] {
        assert_eq!(
            app.refresh_with(cookie).await.status_code(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn with_no_grace_window_a_second_presentation_is_theft() {
    let app = spawn_app_with(|s| s.refresh_grace = std::time::Duration::ZERO).await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    app.access_via(&refresh).await;
    let reused = app.refresh_with(&refresh).await;
    assert_eq!(reused.status_code(), StatusCode::UNAUTHORIZED);
    assert_invalid_token(&app.me(&access).await);
    assert_eq!(reuse_rows(&app).await, 1);
}

#[tokio::test]
async fn a_refresh_that_fails_part_way_consumes_nothing_and_its_retry_is_not_theft() {
    let Some((redis, app)) = spawn_app_on_private_redis().await else {
        return;
    };
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let resumed = redis.pause(2500);
    let failed = app.refresh_with(&refresh).await;
    assert_eq!(failed.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        failed.json::<serde_json::Value>()["error"],
        "temporarily_unavailable"
    );
    assert!(failed.maybe_cookie("lectern_refresh").is_none());
    tokio::time::sleep_until(resumed).await;
    // Past any grace window: the retry is a first use, not a reuse.
    app.advance(11);
    let retried = app.refresh_with(&refresh).await;
    assert_eq!(retried.status_code(), StatusCode::OK, "{}", retried.text());
    assert_eq!(reuse_rows(&app).await, 0);
    assert_eq!(app.me(&access).await.status_code(), StatusCode::OK);
    let used: i64 =
        sqlx::query_scalar("select count(*) from refresh_tokens where used_at is not null")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(used, 1, "only the retry used the token up");
}

#[tokio::test]
async fn a_refresh_whose_database_write_fails_consumes_nothing() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let (inject, remove) = refuse_writes(&app, "refresh_tokens", "insert");
    sqlx::raw_sql(sqlx::AssertSqlSafe(inject))
        .execute(&app.state.db)
        .await
        .unwrap();
    let failed = app.refresh_with(&refresh).await;
    assert!(
        failed.status_code().is_server_error(),
        "{}",
        failed.status_code()
    );
    assert!(failed.json::<serde_json::Value>()["error"].is_string());
    sqlx::raw_sql(sqlx::AssertSqlSafe(remove))
        .execute(&app.state.db)
        .await
        .unwrap();
    app.advance(11);
    assert_eq!(
        app.refresh_with(&refresh).await.status_code(),
        StatusCode::OK
    );
    assert_eq!(reuse_rows(&app).await, 0);
    assert_eq!(app.me(&access).await.status_code(), StatusCode::OK);
}

#[tokio::test]
async fn forged_truncated_or_missing_refresh_cookies_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let value = refresh.value().to_owned();
    let forged = [
        Cookie::new("lectern_refresh", "forged-value"),
        Cookie::new("lectern_refresh", value[..value.len() - 4].to_owned()),
        Cookie::new("lectern_refresh", format!("{}x", &value)),
        Cookie::new("lectern_refresh", ""),
    ];
    for cookie in forged {
        let response = app.refresh_with(&cookie).await;
        assert_eq!(response.status_code(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.json::<serde_json::Value>()["error"],
            "invalid_grant"
        );
    }
    let none = app
        .server
        .post("/api/v1/auth/refresh")
        .clear_cookies()
        .await;
    assert_eq!(none.status_code(), StatusCode::UNAUTHORIZED);
    // Nothing was revoked: the real pair still works.
    assert_eq!(app.me(&access).await.status_code(), StatusCode::OK);
    assert_eq!(
        app.refresh_with(&refresh).await.status_code(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn html_sign_in_sets_a_refresh_cookie_the_api_accepts() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let response = app.sign_in(&email, PASSWORD, "").await;
    let refresh = response.cookie("lectern_refresh");
    let refreshed = app.refresh_with(&refresh).await;
    assert_eq!(refreshed.status_code(), StatusCode::OK);
    let token = refreshed.json::<serde_json::Value>()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.me(&token).await.json::<serde_json::Value>()["email"],
        email.as_str()
    );
}

#[tokio::test]
async fn api_sign_ins_are_rate_limited_per_ip_with_retry_after() {
    let app = spawn_app_with(|s| s.rate_limit = 3).await;
    let statuses = futures_statuses(&app, 4).await;
    assert_eq!(&statuses[..3], &[StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
}

async fn futures_statuses(app: &TestApp, n: usize) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for i in 0..n {
        let r = app
            .server
            .post("/api/v1/auth/login")
            .json(&serde_json::json!({"email": format!("nobody{i}@example.com"), "password": PASSWORD}))
            .await;
        if r.status_code() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.maybe_header("retry-after").is_some());
            assert_eq!(r.json::<serde_json::Value>()["error"], "rate_limited");
        }
        out.push(r.status_code());
    }
    out
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_limit_and_cannot_forge_another() {
    let app = spawn_app_with(|s| {
        s.rate_limit = 1;
        s.trusted_proxies = 1;
    })
    .await;
    // A new email each time, so only the per-IP limit (not the per-account one) is in play.
    let attempt = |forwarded: &'static str| {
        app.server
            .post("/api/v1/auth/login")
            .add_header("X-Forwarded-For", forwarded)
            .json(&serde_json::json!({"email": unique_email(), "password": PASSWORD}))
    };
    assert_eq!(
        attempt("203.0.113.1").await.status_code(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        attempt("203.0.113.1").await.status_code(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        attempt("203.0.113.2").await.status_code(),
        StatusCode::UNAUTHORIZED
    );
    // A client that prepends a fresh address is still the address the proxy appended.
    assert_eq!(
        attempt("198.51.100.7, 203.0.113.2").await.status_code(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// One IPv6 host controls a whole /64: every address in it shares one budget, while the next
/// network has its own. An IPv4-mapped address is its IPv4 address.
#[tokio::test]
async fn behind_a_trusted_proxy_an_ipv6_network_shares_one_limit_and_mapped_ipv4_is_ipv4() {
    let app = spawn_app_with(|s| {
        s.rate_limit = 1;
        s.trusted_proxies = 1;
    })
    .await;
    let attempt = |forwarded: &'static str| {
        app.server
            .post("/api/v1/auth/login")
            .add_header("X-Forwarded-For", forwarded)
            .json(&serde_json::json!({"email": unique_email(), "password": PASSWORD}))
    };
    let status = |r: axum_test::TestResponse| r.status_code();
    assert_eq!(
        status(attempt("2001:db8:1:2::1").await),
        StatusCode::UNAUTHORIZED
    );
    for same_network in ["2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"] {
        assert_eq!(
            status(attempt(same_network).await),
            StatusCode::TOO_MANY_REQUESTS,
            "{same_network}"
        );
    }
    assert_eq!(
        status(attempt("2001:db8:1:3::1").await),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(attempt("198.51.100.9").await),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(attempt("::ffff:198.51.100.9").await),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// A network that hands its hosts a /56 is counted by its /56 when the setting says so.
#[tokio::test]
async fn the_ipv6_network_a_limit_counts_by_can_be_widened() {
    let app = spawn_app_with(|s| {
        s.rate_limit = 1;
        s.trusted_proxies = 1;
        s.rate_limit_ipv6_prefix = 56;
    })
    .await;
    let attempt = |forwarded: &'static str| {
        app.server
            .post("/api/v1/auth/login")
            .add_header("X-Forwarded-For", forwarded)
            .json(&serde_json::json!({"email": unique_email(), "password": PASSWORD}))
    };
    assert_eq!(
        attempt("2001:db8:1:200::1").await.status_code(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        attempt("2001:db8:1:2ff::1").await.status_code(),
        StatusCode::TOO_MANY_REQUESTS
    );
}
