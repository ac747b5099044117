//! The site as a whole: health and readiness, headers, CSRF on every state change, clear errors for bad input, a database that drops its connections.

use axum::http::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn liveness_and_readiness_answer_ok_when_the_stores_are_up() {
    let app = spawn_app().await;
    let live = app.server.get("/healthz").await;
    assert_eq!(live.status_code(), StatusCode::OK);
    let ready = app.server.get("/readyz").await;
    assert_eq!(ready.status_code(), StatusCode::OK);
    let body: serde_json::Value = ready.json();
    assert_eq!(body["database"], "ok");
    let expected_redis = if real_services() {
        "ok"
    } else {
        "not configured"
    };
    assert_eq!(body["redis"], expected_redis);
}

#[tokio::test]
async fn readiness_is_503_when_the_database_is_down() {
    let app = spawn_app().await;
    app.state.db.close().await;
    let ready = app.server.get("/readyz").await;
    assert_eq!(ready.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json::<serde_json::Value>()["database"], "unavailable");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app().await;
    for (method, path, status) in [
        ("GET", "/", StatusCode::OK),
        ("GET", "/login", StatusCode::OK),
        ("GET", "/nope", StatusCode::NOT_FOUND),
        ("GET", "/api/v1/me", StatusCode::UNAUTHORIZED),
        ("GET", "/static/app.css", StatusCode::OK),
        ("DELETE", "/", StatusCode::METHOD_NOT_ALLOWED),
        ("PUT", "/api/v1/me", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/api/v1/nope", StatusCode::NOT_FOUND),
    ] {
        let r = app.server.method(method.parse().unwrap(), path).await;
        assert_eq!(r.status_code(), status, "{method} {path}");
        let csp = r.header("content-security-policy");
        let csp = csp.to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{path}");
        assert_eq!(r.header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(r.header("referrer-policy"), "same-origin", "{path}");
        assert!(r.maybe_header("x-request-id").is_some(), "{path}");
    }
}

#[tokio::test]
async fn pages_have_a_csrf_meta_tag_and_no_inline_script_or_style() {
    let app = spawn_app().await;
    for path in ["/", "/login", "/register"] {
        let html = app.server.get(path).await.text();
        assert!(!csrf_from(&html).is_empty(), "{path}");
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "{path}"
        );
        assert!(html.contains("/static/htmx-2.0.11.min.js"), "{path}");
    }
    let htmx = app.server.get("/static/htmx-2.0.11.min.js").await;
    assert_eq!(htmx.status_code(), StatusCode::OK);
}

#[tokio::test]
async fn visitors_see_the_catalog_and_get_no_cookie() {
    let app = spawn_app().await;
    let home = app.server.get("/").await;
    assert!(home.text().contains("Rust foundations"));
    assert!(home.text().contains("Sign in") && home.text().contains("Sign up"));
    assert!(
        set_cookies(&home).is_empty(),
        "a visitor's page view must not create a session"
    );
}

#[tokio::test]
async fn unknown_pages_are_a_clear_404_page() {
    let app = spawn_app().await;
    let response = app.server.get("/no/such/page").await;
    assert_eq!(response.status_code(), StatusCode::NOT_FOUND);
    let text = response.text();
    assert!(text.contains("Page not found"), "{text}");
    assert!(text.contains("There is no page at this address."), "{text}");
    app.signed_up().await;
    let signed_in = app.server.get("/no/such/page").await;
    assert_eq!(signed_in.status_code(), StatusCode::NOT_FOUND);
    assert!(
        signed_in.text().contains(">Sign out</button>"),
        "the header shows the learner on every page"
    );
}

#[tokio::test]
async fn malformed_forms_get_an_error_page_not_plain_text() {
    let app = spawn_app().await;
    let token = app.csrf("/").await;
    let form = app
        .server
        .post("/login")
        .add_header("X-CSRF-Token", token)
        .content_type("application/json")
        .bytes(br#"{"email":"a"}"#.to_vec().into())
        .await;
    assert_client_error_page(&form);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_a_clear_error_and_change_nothing() {
    let app = spawn_app().await;
    let token = app.csrf("/").await;
    let huge = "x".repeat(200 * 1024);
    let form = app
        .server
        .post("/register")
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", "big@example.com"),
            ("display_name", "Big"),
            ("password", huge.as_str()),
        ])
        .await;
    assert_client_error_page(&form);
    let json = app
        .server
        .post("/api/v1/auth/login")
        .json(&serde_json::json!({"email": "big@example.com", "password": huge}))
        .await;
    assert!(
        json.status_code().is_client_error(),
        "{}",
        json.status_code()
    );
    assert!(json.json::<serde_json::Value>()["error"].is_string());
    assert_eq!(app.account_count().await, 0);
}

#[tokio::test]
async fn a_method_a_page_does_not_take_gets_a_clear_405_page() {
    let app = spawn_app().await;
    for (method, path) in [
        ("GET", "/logout"),
        ("DELETE", "/"),
        ("POST", "/healthz"),
        ("PUT", "/favicon.ico"),
        ("DELETE", "/static/app.css"),
    ] {
        let response = app.server.method(method.parse().unwrap(), path).await;
        assert_eq!(
            response.status_code(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_client_error_page(&response);
    }
    let api = app.server.get("/api/v1/auth/logout").await;
    assert_eq!(
        api.json::<serde_json::Value>()["error"],
        "method_not_allowed"
    );
}

/// The body limit sits in front of every route: a request over 64 KiB is refused before any
/// handler reads it (a 422 that says why, never a 500), and one just under it is read as usual.
#[tokio::test]
async fn a_body_over_64_kib_is_refused_before_any_handler_reads_it() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let login = |padding: usize| {
        app.server
            .post("/api/v1/auth/login")
            .json(&serde_json::json!({
                "email": email,
                "password": "not the password",
                "padding": "x".repeat(padding),
            }))
    };
    let under = login(60 * 1024).await;
    assert_eq!(
        under.status_code(),
        StatusCode::UNAUTHORIZED,
        "read and checked"
    );
    let over = login(70 * 1024).await;
    assert_eq!(over.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = over.json();
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("length limit")),
        "{body}"
    );
}

/// A database that drops the app's connections (a restart, an operator ending them) costs at
/// most the requests already holding one: each gets a 503 that says so, never a 500, and the
/// pool replaces the connection for the next.
#[tokio::test]
async fn a_database_that_drops_its_connections_is_a_503_and_then_served_again() {
    use sqlx::Connection;
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        skipped("needs TEST_DATABASE_URL");
        return;
    };
    let app = spawn_app().await;
    app.signed_up().await;
    assert_eq!(
        app.server.get("/account").await.status_code(),
        StatusCode::OK
    );
    let name = url::Url::parse(&app.database_url).unwrap().path()[1..].to_owned();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1",
    )
    .bind(&name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ended.is_empty(), "the app had connections open");
    let mut served = false;
    for _ in 0..=ended.len() {
        let page = app.server.get("/account").await;
        match page.status_code() {
            StatusCode::OK => {
                served = true;
                break;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(page.text().contains("cannot reach one of its services"));
            }
            other => panic!("{other}: {}", page.text()),
        }
    }
    assert!(served, "a dropped connection is replaced");
}

#[tokio::test]
async fn a_state_change_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    app.signed_up().await;
    let none = app.server.post("/courses/async-rust/enrol").await;
    assert_eq!(none.status_code(), StatusCode::FORBIDDEN);
    let wrong = app
        .post_with_token("/courses/async-rust/enrol", "forged")
        .await;
    assert_eq!(wrong.status_code(), StatusCode::FORBIDDEN);
    let visitor_token = csrf_from(&app.server.get("/login").clear_cookies().await.text());
    let anonymous = app
        .post_with_token("/courses/async-rust/enrol", &visitor_token)
        .await;
    assert_eq!(
        anonymous.status_code(),
        StatusCode::FORBIDDEN,
        "a visitor token cannot act for a session"
    );
    assert!(
        app.server
            .get("/dashboard")
            .await
            .text()
            .contains(r#"id="no-courses""#)
    );
}

/// A field given twice in a page's address (a link copied twice, a proxy that appends) is read
/// by its first value: the page, not an error.
#[tokio::test]
async fn a_repeated_query_field_gets_the_page_with_its_first_value() {
    let app = spawn_app().await;
    let home = app.server.get("/?signed_out=1&signed_out=1").await;
    assert_eq!(home.status_code(), StatusCode::OK);
    assert!(home.text().contains("You are signed out."));
    let login = app.server.get("/login?reason=idle&reason=revoked").await;
    assert_eq!(login.status_code(), StatusCode::OK);
    assert!(login.text().contains("no activity"), "the first reason");
    let next = app.server.get("/login?next=/account&next=/dashboard").await;
    assert_eq!(next.status_code(), StatusCode::OK);
    assert!(
        next.text().contains(r#"value="/account""#),
        "{}",
        next.text()
    );
}

/// Every answer to a request that carries the session cookie may be about a learner, so none is
/// stored: the 405 page and the refused sign-out included.
#[tokio::test]
async fn answers_to_a_request_with_the_session_cookie_are_never_stored() {
    let app = spawn_app().await;
    app.signed_up().await;
    let wrong_method = app.server.delete("/dashboard").await;
    assert_eq!(wrong_method.status_code(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.header("cache-control"), "no-store");
    let refused = app.server.post("/logout").await;
    assert_eq!(refused.status_code(), StatusCode::FORBIDDEN);
    assert_eq!(refused.header("cache-control"), "no-store");
    let unknown = app.server.get("/no-such-page").await;
    assert_eq!(unknown.status_code(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.header("cache-control"), "no-store");
}
