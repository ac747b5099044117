//! The site and its sign-up/sign-in: pages, rules, CSRF, redirects, headers, readiness.

use std::time::Duration;

use axum::http::StatusCode;

use crate::helpers::*;

// ---- health and headers ----

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

// ---- sign-up ----

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

// ---- sign-in ----

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
    let message = "the email or password is not right";
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
}

// ---- protected pages, CSRF, courses ----

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
async fn enrol_and_leave_work_as_htmx_and_as_plain_forms() {
    let app = spawn_app().await;
    app.signed_up().await;
    let token = app.csrf("/dashboard").await;
    let card = app
        .server
        .post("/courses/async-rust/enrol")
        .add_header("HX-Request", "true")
        .add_header("X-CSRF-Token", token.clone())
        .await;
    assert_eq!(card.status_code(), StatusCode::OK);
    assert!(card.text().contains("Enrolled") && card.text().starts_with("<li"));
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

#[tokio::test]
async fn unknown_pages_are_a_clear_404_page() {
    let app = spawn_app().await;
    let response = app.server.get("/no/such/page").await;
    assert_eq!(response.status_code(), StatusCode::NOT_FOUND);
    assert!(response.text().contains("Not Found"));
    app.signed_up().await;
    let signed_in = app.server.get("/no/such/page").await;
    assert_eq!(signed_in.status_code(), StatusCode::NOT_FOUND);
    assert!(
        signed_in.text().contains(">Sign out</button>"),
        "the header shows the learner on every page"
    );
}

#[tokio::test]
async fn the_account_page_shows_the_profile_sign_ins_and_activity() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let html = app.server.get("/account").await.text();
    assert!(html.contains(&email));
    assert!(html.contains("This browser"));
    let activity = &html[html.find(r#"id="activity""#).unwrap()..];
    assert!(activity.contains("<td>Signed in</td>"), "{activity}");
}

/// Runs the `lectern` binary against a test database, with `stdin` as its standard input.
fn lectern_cli(app: &TestApp, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
        .args(args)
        .args(["--database-url", &app.database_url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn operators_can_create_and_list_users_from_the_command_line() {
    let app = spawn_app().await;
    let email = unique_email();
    let create = [
        "users",
        "create",
        "--email",
        email.as_str(),
        "--display-name",
        "Grace",
    ];
    let created = lectern_cli(&app, &create, &format!("{PASSWORD}\n"));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let list = lectern_cli(&app, &["users", "list", "--json"], "");
    assert!(String::from_utf8_lossy(&list.stdout).contains(&email));
    // The same email again, with a valid password: refused for the email, in one line.
    let again = lectern_cli(&app, &create, &format!("{PASSWORD}\n"));
    assert!(!again.status.success());
    let reason = String::from_utf8_lossy(&again.stderr);
    assert!(
        reason.contains("already exists") && reason.trim().lines().count() == 1,
        "{reason}"
    );
    let weak = lectern_cli(
        &app,
        &[
            "users",
            "create",
            "--email",
            &unique_email(),
            "--display-name",
            "G",
        ],
        "short\n",
    );
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 12 characters"));
    let signed_in = app.sign_in(&email, PASSWORD, "").await;
    assert_redirect_to(&signed_in, StatusCode::SEE_OTHER, "/dashboard");
}

// ---- expiry ----

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

#[tokio::test]
async fn malformed_queries_and_forms_get_an_error_page_not_plain_text() {
    let app = spawn_app().await;
    let query = app.server.get("/?signed_out=1&signed_out=2").await;
    assert_eq!(query.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        query
            .header("content-type")
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
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

// ---- limits that slow attackers and never lock the owner out ----

/// An API sign-in from a given client address (behind one trusted proxy).
async fn api_sign_in_from(app: &TestApp, ip: &str, email: &str, password: &str) -> StatusCode {
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

// ---- nothing of a learner is stored by a cache ----

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

// ---- one account per email as a person reads it ----

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

// ---- the account page lists what still works ----

/// The rows of the account page's "Where you are signed in" table.
fn sign_in_rows(html: &str) -> usize {
    let table = &html[html.find(r#"id="sign-ins""#).unwrap()..];
    let body = &table[table.find("<tbody>").unwrap()..table.find("</tbody>").unwrap()];
    body.matches("<tr").count()
}

#[tokio::test]
async fn the_account_page_lists_only_sign_ins_that_still_work() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let mut sids = Vec::new();
    for _ in 0..3 {
        let (access, _) = app.api_login(&email).await;
        sids.push(app.sid_of(&access));
    }
    assert_eq!(sign_in_rows(&app.server.get("/account").await.text()), 4);
    // The shared store loses two of them (a Redis restart): those no longer work anywhere...
    for sid in &sids[..2] {
        app.state.stores.sign_ins.end(sid).await.unwrap();
    }
    // ...and are not listed, though their rows were never revoked.
    let html = app.server.get("/account").await.text();
    assert_eq!(
        sign_in_rows(&html),
        2,
        "this browser and the one API sign-in left"
    );
    assert!(html.contains("This browser"));
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
        eprintln!("skipped: needs TEST_DATABASE_URL");
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
