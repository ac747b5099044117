//! Whole requests against the app in the embedded shape (a SQLite file, memory stores): any
//! method, path, cookies, bearer header, `X-Forwarded-For`, content type and body. The answer is
//! never a server error.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::{Router, body::Body, http::Request};
use lectern::{AppState, Settings, app, clock::Clock, config::ServeArgs};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    path: String,
    session: Option<String>,
    refresh: Option<String>,
    authorization: Option<String>,
    forwarded_for: Option<String>,
    htmx: bool,
    json: bool,
    body: Vec<u8>,
}

const PATHS: [&str; 10] = [
    "/",
    "/login",
    "/register",
    "/logout",
    "/dashboard",
    "/account",
    "/account/password",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/logout",
];

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: Router,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let args = ServeArgs {
            database_url: Some(format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("fuzz.db").display()
            )),
            secret: Some("fuzzing secret that is long enough to be one".into()),
            secure_cookies: Some(false),
            rate_limit: Some(0),
            trusted_proxies: Some(1),
            ..ServeArgs::default()
        };
        let settings = Settings::from_args(&args).unwrap();
        let state = runtime
            .block_on(AppState::connect(settings, Clock::system()))
            .unwrap();
        Fixture {
            router: app::router(state),
            runtime,
            _dir: dir,
        }
    })
}

fuzz_target!(|input: Input| {
    let fixture = fixture();
    let method = ["GET", "POST", "DELETE", "PUT", "HEAD"][usize::from(input.method) % 5];
    // Half the time one of the real routes (with the fuzzed text as its query), else the text.
    let path = if input.method & 0x80 == 0 {
        format!(
            "{}?{}",
            PATHS[usize::from(input.method / 5) % PATHS.len()],
            input.path
        )
    } else {
        input.path.clone()
    };
    let mut request = Request::builder().method(method).uri(path.as_str());
    let mut cookies = Vec::new();
    if let Some(v) = &input.session {
        cookies.push(format!("lectern_session={v}"));
    }
    if let Some(v) = &input.refresh {
        cookies.push(format!("lectern_refresh={v}"));
    }
    if !cookies.is_empty() {
        request = request.header("cookie", cookies.join("; "));
    }
    if let Some(v) = &input.authorization {
        request = request.header("authorization", format!("Bearer {v}"));
    }
    if let Some(v) = &input.forwarded_for {
        request = request.header("x-forwarded-for", v.as_str());
    }
    if input.htmx {
        request = request.header("hx-request", "true");
    }
    request = request.header(
        "content-type",
        if input.json {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        },
    );
    // Header values or a URI the HTTP layer itself would refuse never reach the app.
    let Ok(request) = request.body(Body::from(input.body)) else {
        return;
    };
    let response = fixture
        .runtime
        .block_on(fixture.router.clone().oneshot(request))
        .unwrap();
    assert!(
        !response.status().is_server_error(),
        "{} {path}: {}",
        method,
        response.status()
    );
});
