//! `spawn_app()` and friends: each test gets its own database (a temp SQLite file, or a fresh
//! PostgreSQL database when `TEST_DATABASE_URL` is set) and its own Redis key prefix (when
//! `TEST_REDIS_URL` is set), so tests run in parallel without touching each other.

use std::time::Duration;

use axum::http::StatusCode;
use axum_test::{TestResponse, TestServer};
use cookie::Cookie;
use lectern::{AppState, Settings, app, clock::Clock, config::ServeArgs, store::SessionRecords};
use sqlx::Connection;
use tower_sessions::{SessionStore, session::Id};

pub const PASSWORD: &str = "correct horse battery staple";
pub const TEST_SECRET: &str = "test secret that is at least thirty-two bytes long";

/// The server's JWT key, derived the way the server derives it, so tests can forge tokens that
/// differ from a real one in exactly one respect.
pub fn server_jwt_key() -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(TEST_SECRET.as_bytes()).unwrap();
    mac.update(b"lectern/jwt/v1");
    mac.finalize().into_bytes().to_vec()
}

pub struct TestApp {
    pub server: TestServer,
    pub state: AppState,
    pub sessions: SessionRecords,
    /// The app's clock: tests move it instead of sleeping.
    pub clock: Clock,
    pub database_url: String,
    pub key_prefix: String,
    _dir: Option<tempfile::TempDir>,
}

/// Whether this run uses real Redis and PostgreSQL (CI always does).
pub fn real_services() -> bool {
    std::env::var("TEST_REDIS_URL").is_ok() && std::env::var("TEST_DATABASE_URL").is_ok()
}

pub async fn fresh_database() -> (String, Option<tempfile::TempDir>) {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin_url) => {
            let name = format!("lectern_test_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("TEST_DATABASE_URL must reach PostgreSQL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
                .execute(&mut admin)
                .await
                .expect("create the test database");
            let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
            url.set_path(&name);
            (url.to_string(), None)
        }
        Err(_) => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("lectern.db").display()
            );
            (url, Some(dir))
        }
    }
}

/// Settings for a test app: fixed secret, insecure cookies (the test client speaks http).
pub fn test_settings(database_url: &str, key_prefix: &str) -> Settings {
    let args = ServeArgs {
        addr: Some("127.0.0.1:0".parse().expect("address")),
        database_url: Some(database_url.to_owned()),
        redis_url: std::env::var("TEST_REDIS_URL").ok(),
        secret: Some(TEST_SECRET.into()),
        secure_cookies: Some(false),
        ..ServeArgs::default()
    };
    let mut settings = Settings::from_args(&args).expect("test settings");
    settings.key_prefix = key_prefix.to_owned();
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Says a test was skipped, and why, where the person running the tests reads: straight to
/// standard output, past the test harness's capture (which keeps a passing test's output to
/// itself), so `cargo test` shows `SKIPPED <test>: <why>` among its results.
pub fn skipped(why: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stdout().lock(), "SKIPPED {test}: {why}");
}

/// Logs go through the test harness's capture, so only a failing test shows them.
pub fn quiet_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .try_init();
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    quiet_logs();
    let (database_url, dir) = fresh_database().await;
    let key_prefix = format!("lectern:test:{}:", uuid::Uuid::new_v4().simple());
    let mut settings = test_settings(&database_url, &key_prefix);
    tweak(&mut settings);
    let mut app = build(settings).await;
    app._dir = dir;
    app
}

/// A second instance sharing the first one's database, Redis and clock (real services only).
pub async fn spawn_peer(first: &TestApp) -> TestApp {
    spawn_peer_with(first, |_| {}).await
}

/// [`spawn_peer`] with settings of its own (another Redis URL for the same Redis, say).
pub async fn spawn_peer_with(first: &TestApp, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(&first.database_url, &first.key_prefix);
    tweak(&mut settings);
    build_on(settings, first.clock.clone()).await
}

async fn build(settings: Settings) -> TestApp {
    build_on(settings, Clock::manual()).await
}

async fn build_on(settings: Settings, clock: Clock) -> TestApp {
    let database_url = settings.database_url.clone();
    let key_prefix = settings.key_prefix.clone();
    let state = AppState::connect(settings, clock.clone())
        .await
        .expect("connect the app");
    let sessions = state.stores.session_records.clone();
    let server = TestServer::builder()
        .save_cookies()
        .build(app::router(state.clone()));
    TestApp {
        server,
        state,
        sessions,
        clock,
        database_url,
        key_prefix,
        _dir: None,
    }
}

pub fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`.
pub async fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

pub fn unique_email() -> String {
    format!("learner-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The value of `<meta name="csrf-token" content="...">`.
pub fn csrf_from(html: &str) -> String {
    let marker = r#"<meta name="csrf-token" content=""#;
    let start = html.find(marker).expect("page has a csrf meta tag") + marker.len();
    let end = html[start..].find('"').expect("meta tag closes") + start;
    html[start..end].to_owned()
}

pub fn assert_redirect_to(response: &TestResponse, status: StatusCode, location: &str) {
    assert_eq!(response.status_code(), status, "body: {}", response.text());
    assert_eq!(response.header("location"), location);
}

/// A 4xx answered with an HTML page (not plain text, not a 5xx).
pub fn assert_client_error_page(response: &TestResponse) {
    assert!(
        response.status_code().is_client_error(),
        "{}",
        response.status_code()
    );
    let content_type = response.header("content-type");
    assert!(
        content_type.to_str().unwrap().starts_with("text/html"),
        "{content_type:?}"
    );
}

/// All `Set-Cookie` header values of a response.
pub fn set_cookies(response: &TestResponse) -> Vec<String> {
    response
        .iter_headers_by_name("set-cookie")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

/// The `Set-Cookie` header for `name`.
pub fn set_cookie(response: &TestResponse, name: &str) -> String {
    set_cookies(response)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name}"))
}

impl TestApp {
    /// The CSRF token of a page, with the test client's cookies.
    pub async fn csrf(&self, path: &str) -> String {
        csrf_from(&self.server.get(path).await.text())
    }

    pub async fn sign_up(&self, email: &str, password: &str) -> TestResponse {
        // The homepage has a token for visitors and signed-in learners alike.
        let token = self.csrf("/").await;
        self.server
            .post("/register")
            .form(&[
                ("csrf_token", token.as_str()),
                ("email", email),
                ("display_name", "Ada Lovelace"),
                ("password", password),
            ])
            .await
    }

    /// Signs up a fresh learner and returns their email.
    pub async fn signed_up(&self) -> String {
        let email = unique_email();
        let response = self.sign_up(&email, PASSWORD).await;
        assert_redirect_to(&response, StatusCode::SEE_OTHER, "/dashboard");
        email
    }

    pub async fn sign_in(&self, email: &str, password: &str, next: &str) -> TestResponse {
        let token = self.csrf("/").await;
        self.server
            .post("/login")
            .form(&[
                ("csrf_token", token.as_str()),
                ("email", email),
                ("password", password),
                ("next", next),
            ])
            .await
    }

    /// Signs out the way the htmx button does.
    pub async fn sign_out_htmx(&self) -> TestResponse {
        let token = self.csrf("/dashboard").await;
        self.server
            .post("/logout")
            .add_header("HX-Request", "true")
            .add_header("X-CSRF-Token", token)
            .await
    }

    /// API sign-in from a client of its own (no browser cookies): the access token and the
    /// refresh cookie.
    pub async fn api_login(&self, email: &str) -> (String, Cookie<'static>) {
        let response = self
            .server
            .post("/api/v1/auth/login")
            .clear_cookies()
            .do_not_save_cookies()
            .json(&serde_json::json!({"email": email, "password": PASSWORD}))
            .await;
        assert_eq!(
            response.status_code(),
            StatusCode::OK,
            "{}",
            response.text()
        );
        let body: serde_json::Value = response.json();
        let token = body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        (token, response.cookie("lectern_refresh"))
    }

    /// API sign-out with exactly these credentials (either may be absent).
    pub async fn api_logout(
        &self,
        bearer: Option<&str>,
        refresh: Option<&Cookie<'static>>,
    ) -> TestResponse {
        self.api_logout_at("/api/v1/auth/logout", bearer, refresh)
            .await
    }

    /// [`Self::api_logout`] with `?scope=`.
    pub async fn api_logout_scoped(
        &self,
        scope: &str,
        bearer: Option<&str>,
        refresh: Option<&Cookie<'static>>,
    ) -> TestResponse {
        let path = format!("/api/v1/auth/logout?scope={scope}");
        self.api_logout_at(&path, bearer, refresh).await
    }

    async fn api_logout_at(
        &self,
        path: &str,
        bearer: Option<&str>,
        refresh: Option<&Cookie<'static>>,
    ) -> TestResponse {
        let mut request = self.server.post(path).clear_cookies().do_not_save_cookies();
        if let Some(token) = bearer {
            request = request.authorization_bearer(token);
        }
        if let Some(cookie) = refresh {
            request = request.add_cookie(cookie.clone());
        }
        request.await
    }

    /// Presents a refresh cookie, and only it.
    pub async fn refresh_with(&self, cookie: &Cookie<'static>) -> TestResponse {
        self.server
            .post("/api/v1/auth/refresh")
            .clear_cookies()
            .do_not_save_cookies()
            .add_cookie(cookie.clone())
            .await
    }

    pub async fn me(&self, token: &str) -> TestResponse {
        self.server
            .get("/api/v1/me")
            .clear_cookies()
            .do_not_save_cookies()
            .authorization_bearer(token)
            .await
    }

    /// Requests `path` with exactly this session cookie.
    pub async fn get_with_session(&self, path: &str, session: &Cookie<'static>) -> TestResponse {
        self.server
            .get(path)
            .clear_cookies()
            .do_not_save_cookies()
            .add_cookie(session.clone())
            .await
    }

    /// A state-changing request with the CSRF token in its header (as htmx sends it).
    pub async fn post_with_token(&self, path: &str, token: &str) -> TestResponse {
        self.server
            .post(path)
            .add_header("X-CSRF-Token", token.to_owned())
            .await
    }

    /// Both API credentials of a sign-in are refused.
    pub async fn assert_api_credentials_refused(&self, access: &str, refresh: &Cookie<'static>) {
        assert_eq!(
            self.me(access).await.status_code(),
            StatusCode::UNAUTHORIZED,
            "old access token"
        );
        assert_eq!(
            self.refresh_with(refresh).await.status_code(),
            StatusCode::UNAUTHORIZED,
            "old refresh cookie"
        );
    }

    /// How many accounts exist.
    pub async fn account_count(&self) -> usize {
        lectern::accounts::list(&self.state.db).await.unwrap().len()
    }

    /// Moves the app's clock forward.
    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// The sign-in an access token names.
    pub fn sid_of(&self, access_token: &str) -> String {
        self.state
            .tokens
            .verify_ignoring_expiry(access_token)
            .expect("a token of this app")
            .sid
    }

    /// An API sign-in started for `user` directly, as the operator's client (no HTTP, no
    /// password check), as the token login starts one.
    pub async fn start_api_sign_in(
        &self,
        user: &lectern::accounts::User,
    ) -> lectern::error::Result<lectern::auth::sign_ins::Started> {
        let client = lectern::web::ClientInfo::operator();
        self.state
            .sign_ins
            .start(
                user,
                &client,
                lectern::auth::sign_ins::Kind::Api { beside: None },
                false,
                &lectern::audit::Txn::new(),
            )
            .await
    }

    /// The row of a sign-in.
    pub async fn sign_in_row(&self, sid: &str) -> lectern::auth::records::SignIn {
        self.state
            .sign_ins
            .find(sid)
            .await
            .unwrap()
            .expect("a sign-in row")
    }

    /// An access token obtained through a refresh cookie, with the rotated cookie.
    pub async fn access_via(&self, refresh: &Cookie<'static>) -> (String, Cookie<'static>) {
        let r = self.refresh_with(refresh).await;
        assert_eq!(r.status_code(), StatusCode::OK, "{}", r.text());
        let token = r.json::<serde_json::Value>()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        (token, r.cookie("lectern_refresh"))
    }

    /// Deletes the session record this cookie names, as the store's own expiry does.
    pub async fn drop_session_record(&self, session: &Cookie<'static>) {
        let id: Id = session.value().parse().expect("session id");
        self.sessions.delete(&id).await.expect("session store");
    }

    /// Whether the session store still holds a record for this cookie.
    pub async fn session_exists(&self, session: &Cookie<'static>) -> bool {
        let id: Id = session.value().parse().expect("session id");
        self.sessions
            .load(&id)
            .await
            .expect("session store")
            .is_some()
    }
}

/// A Redis server of the test's own, so the test can pause or stop it without touching anyone
/// else's. Killed when dropped.
pub struct PrivateRedis {
    pub child: std::process::Child,
    pub port: u16,
}

impl PrivateRedis {
    /// Redis stops answering for `millis` (keeping its data); returns when it answers again.
    pub fn pause(&self, millis: u64) -> tokio::time::Instant {
        let paused = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &self.port.to_string(),
                "CLIENT",
                "PAUSE",
                &millis.to_string(),
                "ALL",
            ])
            .output()
            .unwrap();
        assert!(paused.status.success(), "CLIENT PAUSE failed");
        tokio::time::Instant::now() + std::time::Duration::from_millis(millis + 300)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An app on a private Redis; `None` (the test says it skipped) where no redis-server exists,
/// which CI does not allow.
pub async fn spawn_app_on_private_redis() -> Option<(PrivateRedis, TestApp)> {
    let Some(redis_server) = find_on_path("redis-server") else {
        assert!(
            !real_services(),
            "CI must run this test: redis-server is missing"
        );
        skipped("needs a redis-server binary to start and stop");
        return None;
    };
    let port = free_port();
    let child = std::process::Command::new(redis_server)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let redis = PrivateRedis { child, port };
    wait_for_port(port).await;
    let app = spawn_app_with(|s| s.redis_url = Some(format!("redis://127.0.0.1:{port}"))).await;
    Some((redis, app))
}

/// SQL that makes the database refuse every `op` (`insert`, `update`) on `table`, and the SQL
/// that lifts it: a real failure halfway through a request, on either database.
pub fn refuse_writes(app: &TestApp, table: &str, op: &str) -> (String, String) {
    if app.database_url.starts_with("postgres") {
        (
            format!(
                "create or replace function lectern_refuse() returns trigger language plpgsql as $$ \
                 begin raise exception 'injected failure'; end $$; \
                 create trigger refuse_{op} before {op} on {table} for each row execute function lectern_refuse();"
            ),
            format!("drop trigger refuse_{op} on {table}"),
        )
    } else {
        (
            format!(
                "create trigger refuse_{op} before {op} on {table} begin select raise(abort, 'injected failure'); end;"
            ),
            format!("drop trigger refuse_{op}"),
        )
    }
}

/// The built `lectern` binary, started as users start it: a process of its own, in `dir`, with
/// only the environment given (and `PATH`). Killed when dropped.
pub struct RunningBinary {
    child: std::process::Child,
    /// Copies the binary's standard error to where its logs go; done once the binary is gone.
    logs: Option<std::thread::JoinHandle<()>>,
    pub base: String,
    /// `http://host:port` of its metrics listener, when `LECTERN_METRICS_ADDR` was given.
    pub metrics: Option<String>,
}

/// What the binary logs (at `info`) once a listener is bound: `<marker><scheme>://<host:port>[/path] …`.
const LISTENING: &str = "Lectern is listening on ";
const METRICS: &str = "metrics on ";

impl RunningBinary {
    pub async fn start(dir: &std::path::Path, env: &[(&str, String)]) -> Self {
        Self::start_logging_to(dir, env, None).await
    }

    /// As [`RunningBinary::start`], with its standard error (its logs) going to `log`.
    pub async fn start_with_stderr(
        dir: &std::path::Path,
        env: &[(&str, String)],
        log: std::fs::File,
    ) -> Self {
        Self::start_logging_to(dir, env, Some(log)).await
    }

    /// Starts it on port 0 and learns the port the system gave it from its own log line, so no
    /// port found free here can be taken by another test before the binary binds it.
    async fn start_logging_to(
        dir: &std::path::Path,
        env: &[(&str, String)],
        log: Option<std::fs::File>,
    ) -> Self {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lectern"));
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LECTERN_ADDR", "127.0.0.1:0")
            // Warnings, and the lines that name its addresses.
            .env("RUST_LOG", "warn,lectern::app=info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let wants_metrics = env.iter().any(|(key, _)| *key == "LECTERN_METRICS_ADDR");
        let mut child = command.spawn().expect("start the lectern binary");
        let stderr = child.stderr.take().expect("the binary's standard error");
        let (found, addresses) = std::sync::mpsc::channel::<(&str, String)>();
        let logs = std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let mut sink: Box<dyn Write + Send> = match log {
                Some(file) => Box::new(file),
                None => Box::new(std::io::stderr()),
            };
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(sink, "{line}");
                for marker in [LISTENING, METRICS] {
                    if let Some((_, rest)) = line.split_once(marker) {
                        // `http://host:port` or `https://host:port`, without a path.
                        let url = rest.split_whitespace().next().unwrap_or_default();
                        let (scheme, after) = url.split_once("://").unwrap_or(("http", url));
                        let addr = after.split('/').next().unwrap_or_default();
                        let _ = found.send((marker, format!("{scheme}://{addr}")));
                    }
                }
            }
        });
        let mut running = Self {
            child,
            logs: Some(logs),
            base: String::new(),
            metrics: None,
        };
        for _ in 0..200 {
            while let Ok((marker, url)) = addresses.try_recv() {
                if marker == LISTENING {
                    running.base = url;
                } else {
                    running.metrics = Some(url);
                }
            }
            if !running.base.is_empty() && (running.metrics.is_some() || !wants_metrics) {
                return running;
            }
            if let Some(status) = running.child.try_wait().expect("the binary's status") {
                panic!("the lectern binary stopped before listening: {status}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the lectern binary did not say where it listens within 10 s");
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its standard error is closed now, so the copy ends with everything written.
        if let Some(logs) = self.logs.take() {
            let _ = logs.join();
        }
    }
}

/// A plain HTTP/1.1 GET with extra headers: status, headers, body.
pub async fn http_get(
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    http_request("GET", url, headers, Vec::new()).await
}

/// A plain HTTP/1.1 request: status, headers, body.
pub async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<axum::body::Bytes>>();
    let mut request = axum::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(http_body_util::Full::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// The cookies a response sets (not those it removes): (name, value).
pub fn cookies_set(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// The value a response sets for cookie `name`.
pub fn cookie_of(headers: &axum::http::HeaderMap, name: &str) -> String {
    cookies_set(headers)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("no {name} cookie set"))
}

/// The `access_token` of a JSON body.
pub fn access_token_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}
