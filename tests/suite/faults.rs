//! Races and partial outages on the way out: a sign-out stays done whatever runs beside it, and
//! whatever part of the system is down. Each test replays every old credential and expects it
//! refused.

use axum::http::StatusCode;
use cookie::Cookie;
use sqlx::Connection;

use crate::helpers::*;

/// The test database made to refuse new connections (SQLSTATE 55000) and its open ones ended, as
/// a PostgreSQL being restarted or taken out of service does. Lets them in again when dropped.
struct Refusing {
    admin_url: String,
    name: String,
}

impl Refusing {
    async fn start(app: &TestApp) -> Option<Self> {
        let admin_url = std::env::var("TEST_DATABASE_URL").ok()?;
        let name = url::Url::parse(&app.database_url).unwrap().path()[1..].to_owned();
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "alter database {name} allow_connections false"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
            .bind(&name)
            .execute(&mut admin)
            .await
            .unwrap();
        Some(Self { admin_url, name })
    }

    async fn lift(self) {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "alter database {} allow_connections true",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

/// Waits (a few seconds at most) until `sql` on the app's database returns a count above zero.
async fn eventually(app: &TestApp, sql: &str, sid: &str) -> bool {
    for _ in 0..100 {
        let count: Result<i64, _> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(sid)
            .fetch_one(&app.state.db)
            .await;
        if matches!(count, Ok(n) if n > 0) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// An API sign-out while PostgreSQL refuses connections cannot look the refresh cookie up, but
/// the bearer token names its sign-in: that one is ended in Redis at once (the client hears 503,
/// its cookies cleared), and the rest is settled once the database is back.
#[tokio::test]
async fn an_api_sign_out_while_postgres_refuses_connections_still_ends_the_bearers_sign_in() {
    if !real_services() {
        eprintln!("skipped: needs TEST_DATABASE_URL and TEST_REDIS_URL");
        return;
    }
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let sid = app.sid_of(&access);
    let refusing = Refusing::start(&app).await.unwrap();
    let response = app.api_logout(Some(&access), Some(&refresh)).await;
    assert_eq!(
        response.status_code(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        response.text()
    );
    let cleared = set_cookies(&response);
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("lectern_refresh=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    assert_eq!(
        app.me(&access).await.status_code(),
        StatusCode::UNAUTHORIZED,
        "the bearer's sign-in ended while the database was away"
    );
    refusing.lift().await;
    app.assert_api_credentials_refused(&access, &refresh).await;
    assert!(
        eventually(
            &app,
            "select count(*) from sign_ins where id = $1 and revoked_reason = 'signed_out'",
            &sid,
        )
        .await,
        "its row is marked once the database is back"
    );
}

/// While PostgreSQL refuses connections (SQLSTATE 55000), pages, the API sign-in, ending a
/// sign-in by id and a bearer-only API sign-out answer 503 (a page, or JSON), never a 500.
#[tokio::test]
async fn a_database_that_refuses_connections_is_a_503_everywhere() {
    if !real_services() {
        eprintln!("skipped: needs TEST_DATABASE_URL and TEST_REDIS_URL");
        return;
    }
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (access, _) = app.api_login(&email).await;
    let (other, _) = app.api_login(&email).await;
    let refusing = Refusing::start(&app).await.unwrap();
    let page = app.server.get("/account").await;
    assert_eq!(page.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.text().contains("cannot reach one of its services"));
    let login = app
        .server
        .post("/api/v1/auth/login")
        .clear_cookies()
        .json(&serde_json::json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(login.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        login.json::<serde_json::Value>()["error"],
        "temporarily_unavailable"
    );
    let delete = app
        .server
        .delete(&format!("/api/v1/me/sessions/{}", app.sid_of(&other)))
        .clear_cookies()
        .authorization_bearer(&access)
        .await;
    assert_eq!(delete.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    let logout = app.api_logout(Some(&access), None).await;
    assert_eq!(logout.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        logout.json::<serde_json::Value>()["error"],
        "temporarily_unavailable"
    );
    refusing.lift().await;
    assert_eq!(
        app.me(&access).await.status_code(),
        StatusCode::UNAUTHORIZED
    );
}

/// A page's script signs in through the API beside its browser session (it sends the session
/// cookie) while that browser signs out. Whichever comes first, the API sign-in does not outlive
/// the browser's: either the sign-out finds it held by the session, or attaching it finds the
/// session already ended and ends it. Forty races, the sign-out started at a different moment of
/// the sign-in each time; no access token of them works afterwards.
#[tokio::test]
async fn an_api_sign_in_beside_a_browser_that_is_signing_out_never_outlives_it() {
    if !real_services() {
        eprintln!("skipped: needs TEST_DATABASE_URL and TEST_REDIS_URL");
        return;
    }
    let app = spawn_app_with(|s| s.rate_limit = 0).await;
    let email = app.signed_up().await;
    let login = |session: Cookie<'static>| {
        app.server
            .post("/api/v1/auth/login")
            .clear_cookies()
            .do_not_save_cookies()
            .add_cookie(session)
            .json(&serde_json::json!({"email": email, "password": PASSWORD}))
    };
    // How long a sign-in takes here, so the sign-outs can be spread across it.
    let (session, _) = browser(&app, &email).await;
    let started = std::time::Instant::now();
    assert_eq!(login(session).await.status_code(), StatusCode::OK);
    let takes = started.elapsed();
    let (mut survived, mut raced) = (Vec::new(), 0);
    for round in 0..40u32 {
        let (session, csrf) = browser(&app, &email).await;
        let sign_out = app
            .server
            .post("/logout")
            .clear_cookies()
            .do_not_save_cookies()
            .add_cookie(session.clone())
            .form(&[("csrf_token", csrf.as_str())]);
        let wait = takes * round / 40;
        let (signed_in, signed_out) = tokio::join!(login(session.clone()), async {
            tokio::time::sleep(wait).await;
            sign_out.await
        });
        assert_eq!(signed_out.status_code(), StatusCode::SEE_OTHER);
        match signed_in.status_code() {
            StatusCode::OK => {
                let token = signed_in.json::<serde_json::Value>()["access_token"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                if app.me(&token).await.status_code() != StatusCode::UNAUTHORIZED {
                    survived.push(round);
                }
            }
            StatusCode::UNAUTHORIZED => raced += 1,
            other => panic!("round {round}: {other} {}", signed_in.text()),
        }
        assert_eq!(
            app.get_with_session("/dashboard", &session)
                .await
                .status_code(),
            StatusCode::SEE_OTHER
        );
    }
    assert!(
        survived.is_empty(),
        "API sign-ins that outlived their browser: {survived:?}"
    );
    eprintln!("{raced} of 40 sign-ins were refused because their browser had signed out");
}

/// A browser of its own signed in as `email`: its session cookie and CSRF token.
async fn browser(app: &TestApp, email: &str) -> (Cookie<'static>, String) {
    let token = csrf_from(&app.server.get("/login").clear_cookies().await.text());
    let response = app
        .server
        .post("/login")
        .clear_cookies()
        .do_not_save_cookies()
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", email),
            ("password", PASSWORD),
        ])
        .await;
    assert_eq!(response.status_code(), StatusCode::SEE_OTHER);
    let session = response.cookie("lectern_session");
    let page = app.get_with_session("/dashboard", &session).await;
    (session, csrf_from(&page.text()))
}
