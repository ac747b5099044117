//! `cargo bench`: requests through the whole router, in process (no network, so the figures are
//! Lectern's own cost), for each kind of request a learner or client makes. Each is printed as
//! requests a second and as a ratio to an in-run baseline, `GET /healthz`, which reads no store,
//! so the ratios hold when the machine's speed drifts. Peak memory is printed at the end.
//!
//! The embedded shape by default; Redis and PostgreSQL when `TEST_REDIS_URL` and
//! `TEST_DATABASE_URL` are set (as `.ci/run` sets them).

use std::time::{Duration, Instant};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use http_body_util::BodyExt;
use lectern::{AppState, Settings, app, clock::Clock, config::ServeArgs};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";
const SECRET: &str = "bench secret that is at least thirty-two bytes long";

async fn settings(dir: &std::path::Path) -> Settings {
    let database_url = match std::env::var("TEST_DATABASE_URL") {
        Ok(admin) => {
            use sqlx::Connection;
            let name = format!("lectern_test_bench_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
                .execute(&mut conn)
                .await
                .expect("create the bench database");
            let mut url = url::Url::parse(&admin).expect("a URL");
            url.set_path(&name);
            url.to_string()
        }
        Err(_) => format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
    };
    let args = ServeArgs {
        database_url: Some(database_url),
        redis_url: std::env::var("TEST_REDIS_URL").ok(),
        secret: Some(SECRET.into()),
        secure_cookies: Some(false),
        rate_limit: Some(0),
        ..ServeArgs::default()
    };
    let mut settings = Settings::from_args(&args).expect("settings");
    settings.key_prefix = format!("lectern:bench:{}:", uuid::Uuid::new_v4().simple());
    settings
}

async fn send(
    router: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn csrf_of(html: &str) -> String {
    let marker = r#"<meta name="csrf-token" content=""#;
    let start = html.find(marker).expect("a csrf meta tag") + marker.len();
    html[start..start + html[start..].find('"').expect("closed")].to_owned()
}

fn cookie_of(headers: &axum::http::HeaderMap, name: &str) -> String {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .expect("the cookie")
        .to_owned()
}

fn get(path: &str, header: Option<(&str, &str)>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    request.body(Body::empty()).expect("a request")
}

async fn api_login(router: &Router, email: &str) -> String {
    let body = serde_json::json!({"email": email, "password": PASSWORD}).to_string();
    let request = Request::post("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("a request");
    let (status, _, body) = send(router, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    json["access_token"].as_str().expect("a token").to_owned()
}

/// Builds one request of a kind.
type MakeRequest<'a> = Box<dyn Fn() -> Request<Body> + 'a>;

/// Runs `make` for about `budget`, each request answered with `expect`; returns requests a second.
async fn rate(
    router: &Router,
    budget: Duration,
    expect: StatusCode,
    make: impl Fn() -> Request<Body>,
) -> f64 {
    for _ in 0..50 {
        send(router, make()).await;
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        let (status, _, _) = send(router, make()).await;
        assert_eq!(status, expect);
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let shape = if std::env::var("TEST_REDIS_URL").is_ok() {
        "Redis + PostgreSQL"
    } else {
        "embedded"
    };
    let state = AppState::connect(settings(dir.path()).await, Clock::system())
        .await
        .expect("connect");
    let router = app::router(state);
    let budget = Duration::from_secs(3);

    // A learner, signed up through the form.
    let (_, _, page) = send(&router, get("/register", None)).await;
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let form = format!(
        "csrf_token={}&email={}&display_name=Bench&password={}",
        csrf_of(&page),
        url::form_urlencoded::byte_serialize(email.as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(PASSWORD.as_bytes()).collect::<String>(),
    );
    let request = Request::post("/register")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .expect("a request");
    let (status, headers, _) = send(&router, request).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = cookie_of(&headers, "lectern_session");
    let access = api_login(&router, &email).await;
    let bearer = format!("Bearer {access}");
    // Ten more sign-ins, so the lists of sign-ins below hold twelve.
    for _ in 0..10 {
        api_login(&router, &email).await;
    }

    println!("lectern bench: in-process requests, {shape} shape, one task, {budget:?} each");
    let baseline = rate(&router, budget, StatusCode::OK, || get("/healthz", None)).await;
    println!("{:<44} {:>9.0} req/s  (baseline)", "GET /healthz", baseline);
    let cases: [(&str, MakeRequest<'_>); 6] = [
        ("GET / as a visitor", Box::new(|| get("/", None))),
        (
            "GET /dashboard signed in",
            Box::new(|| get("/dashboard", Some(("cookie", session.as_str())))),
        ),
        (
            "GET /api/v1/me with a bearer token",
            Box::new(|| get("/api/v1/me", Some(("authorization", bearer.as_str())))),
        ),
        (
            "GET /account signed in (12 live sign-ins)",
            Box::new(|| get("/account", Some(("cookie", session.as_str())))),
        ),
        (
            "GET /api/v1/me/sessions (12 live sign-ins)",
            Box::new(|| {
                get(
                    "/api/v1/me/sessions",
                    Some(("authorization", bearer.as_str())),
                )
            }),
        ),
        (
            "GET /static/app.js?v=… (embedded asset)",
            Box::new(|| get(&lectern::assets::url("app.js"), None)),
        ),
    ];
    for (name, make) in cases {
        let r = rate(&router, budget, StatusCode::OK, make).await;
        println!(
            "{name:<44} {r:>9.0} req/s  {:>5.2} x baseline",
            r / baseline
        );
    }

    // Sign-outs: each ends a fresh API sign-in (tokens revoked, row, audit), made beforehand.
    let mut tokens = Vec::new();
    for _ in 0..40 {
        tokens.push(api_login(&router, &email).await);
    }
    let start = Instant::now();
    for token in &tokens {
        let request = Request::post("/api/v1/auth/logout")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .expect("a request");
        let (status, _, _) = send(&router, request).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let r = tokens.len() as f64 / start.elapsed().as_secs_f64();
    println!(
        "{:<44} {r:>9.0} req/s  {:>5.2} x baseline",
        "POST /api/v1/auth/logout (ends a sign-in)",
        r / baseline
    );
    if let Some(kib) = peak_memory_kib() {
        println!("peak memory (VmHWM): {:.1} MiB", kib as f64 / 1024.0);
    }
}
