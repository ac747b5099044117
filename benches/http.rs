//! `cargo bench --bench http`: Lectern over real HTTP, side by side with baselines served the same
//! way and driven by the same load generator, in one run, so every figure is read as a ratio.
//!
//! - Baselines: a bare axum handler; one that does one Redis GET; one that verifies an HS256 JWT
//!   and does one Redis EXISTS; a plain axum-login + tower-sessions-redis-store page that loads
//!   its user from PostgreSQL.
//! - Lectern in the production shape (Redis and PostgreSQL), release build, two instances for
//!   the revocation-propagation trials.
//! - Load: a tokio + hyper client, 64 keep-alive connections, warm-up, a fixed duration;
//!   requests a second, p50/p99/p99.9, and errors (any unexpected status). The baselines and
//!   page views run in three interleaved rounds and each keeps its median.
//!
//! `REDIS_URL` and `DATABASE_URL` (a PostgreSQL admin URL; a database is created for the run and
//! dropped after) default to the local services. `--quick` runs a short smoke version. The table
//! goes to standard output and everything to `target/bench/http.json`. `--serve` measures
//! nothing: it serves the baselines and Lectern, prints a `wrk` command for each steady target,
//! and waits for Ctrl-C, so a profiler can watch the same servers under an outside load.
#![expect(
    clippy::unwrap_used,
    reason = "a benchmark that cannot unwrap should stop loudly"
)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use axum_login::{AuthManagerLayerBuilder, AuthUser, AuthnBackend, UserId};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use lectern::{Application, Settings, config::ServeArgs};
use serde_json::json;
use sqlx::Connection;
use tower_sessions::SessionManagerLayer;
use tower_sessions_redis_store::{
    RedisStore,
    fred::{
        interfaces::{ClientLike, KeysInterface, MemoryInterface, SortedSetsInterface},
        prelude::Pool,
    },
};

// The binary's allocator, so Lectern is measured as it ships (the baselines run on it too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PASSWORD: &str = "correct horse battery staple";
const SECRET: &str = "bench secret that is at least thirty-two bytes long";
const JWT_KEY: &[u8] = b"baseline jwt key, thirty-two bytes or more";

/// How hard and how long each measurement runs.
#[derive(Clone, Copy)]
struct Plan {
    connections: usize,
    warmup: Duration,
    duration: Duration,
    sign_outs: usize,
    trials: usize,
    /// Rounds of the steady scenarios (baselines and page views), interleaved; the median is kept.
    rounds: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                connections: 16,
                warmup: Duration::from_millis(200),
                duration: Duration::from_secs(1),
                sign_outs: 64,
                trials: 5,
                rounds: 1,
            }
        } else {
            Self {
                connections: 64,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(5),
                sign_outs: 1280,
                trials: 40,
                rounds: 3,
            }
        }
    }
}

/// One request to send: cloned for each send.
#[derive(Clone)]
struct Template {
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Template {
    fn get(path: &str) -> Self {
        Self {
            method: Method::GET,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    fn post(path: &str, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self {
            method: Method::POST,
            path: path.to_owned(),
            headers: vec![(
                header::CONTENT_TYPE,
                HeaderValue::from_str(content_type).unwrap(),
            )],
            body: body.into(),
        }
    }

    fn with(mut self, name: &str, value: &str) -> Self {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        ));
        self
    }

    fn request(&self, addr: SocketAddr) -> Request<Full<Bytes>> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header(header::HOST, addr.to_string());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request.body(Full::new(self.body.clone())).unwrap()
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Connection1 {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection1 {
    async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { addr, sender }
    }

    async fn send(&mut self, template: &Template) -> (StatusCode, HeaderMap, Bytes) {
        if self.sender.ready().await.is_err() {
            *self = Self::open(self.addr).await;
        }
        match self.sender.send_request(template.request(self.addr)).await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                (status, headers, body)
            }
            Err(_) => {
                *self = Self::open(self.addr).await;
                (StatusCode::BAD_GATEWAY, HeaderMap::new(), Bytes::new())
            }
        }
    }
}

/// What one measurement saw.
#[derive(Clone, Debug)]
struct Measured {
    name: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
    count: u64,
    /// CPU time spent serving each request, in microseconds (see [`CpuMeter`]); 0 when the row
    /// was not metered.
    cpu_us: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

fn measured(name: &str, hist: &Histogram<u64>, errors: u64, elapsed: Duration) -> Measured {
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Measured {
        name: name.to_owned(),
        rps: hist.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        errors,
        count: hist.len(),
        cpu_us: 0.0,
    }
}

/// The connections' latencies, merged, and their errors, summed.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<(Histogram<u64>, u64)>>,
) -> (Histogram<u64>, u64) {
    let mut hist = histogram();
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await.unwrap();
        hist.add(h).unwrap();
        errors += e;
    }
    (hist, errors)
}

/// Drives `template` over `connections` connections: a warm-up, then `duration` measured. Any
/// status but `expect` counts as an error.
async fn drive(
    name: &str,
    addr: SocketAddr,
    plan: Plan,
    template: Template,
    expect: StatusCode,
) -> Measured {
    let template = Arc::new(template);
    let start = Instant::now() + plan.warmup;
    let end = start + plan.duration;
    let mut tasks = Vec::new();
    for _ in 0..plan.connections {
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection1::open(addr).await;
            let mut hist = histogram();
            let mut errors = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let (status, _, _) = conn.send(&template).await;
                if sent >= start {
                    hist.record(sent.elapsed().as_micros().max(1) as u64)
                        .unwrap();
                    if status != expect {
                        errors += 1;
                    }
                }
            }
            (hist, errors)
        }));
    }
    let (hist, errors) = gather(tasks).await;
    measured(name, &hist, errors, plan.duration)
}

/// Sends each prepared request once, spread over the connections. The first on each connection
/// is its warm-up and is not timed (as the steady scenarios warm up before they are timed); the
/// clock starts once every connection has sent it.
async fn drive_each(
    name: &str,
    addr: SocketAddr,
    connections: usize,
    requests: Vec<Template>,
    expect: StatusCode,
) -> Measured {
    let queue = Arc::new(Mutex::new(requests));
    let warm = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (queue, warm) = (queue.clone(), warm.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection1::open(addr).await;
            let mut hist = histogram();
            let mut errors = 0u64;
            let first = queue.lock().unwrap().pop();
            if let Some(template) = first
                && conn.send(&template).await.0 != expect
            {
                errors += 1;
            }
            warm.wait().await;
            loop {
                let Some(template) = queue.lock().unwrap().pop() else {
                    break;
                };
                let sent = Instant::now();
                let (status, _, _) = conn.send(&template).await;
                hist.record(sent.elapsed().as_micros().max(1) as u64)
                    .unwrap();
                if status != expect {
                    errors += 1;
                }
            }
            (hist, errors)
        }));
    }
    warm.wait().await;
    let began = Instant::now();
    let (hist, errors) = gather(tasks).await;
    measured(name, &hist, errors, began.elapsed())
}

/// What `wrk`, a load generator outside this process, saw driving one target.
#[derive(Clone, Debug)]
struct Outside {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Responses that were not 2xx or 3xx, and socket errors.
    errors: u64,
    requests: u64,
    /// CPU time spent serving each request, in microseconds (see [`CpuMeter`]).
    cpu_us: f64,
}

/// The CPU time (user and system) spent serving, whichever load generator asks: this process's
/// server threads (its servers' runtime, named [`SERVER_THREADS`]), the Redis server and the
/// PostgreSQL processes serving the run's database (not its background workers, which catch up
/// on the writes made before). A load generator's own work is not in it, so the same target
/// costs the same under either generator, however fast each can ask. Read from `/proc`; 0
/// without it.
#[derive(Clone, Debug)]
struct CpuMeter {
    redis_pid: Option<u32>,
    /// The run's database, as its PostgreSQL backends name it in their process titles.
    database: String,
}

const SERVER_THREADS: &str = "bench-server";

impl CpuMeter {
    /// Seconds of CPU time so far.
    fn seconds(&self) -> f64 {
        // Linux reports these times in clock ticks of 1/100 s (`USER_HZ`).
        const TICK: f64 = 0.01;
        let mut ticks = 0u64;
        for (_, comm, used) in stats("/proc/self/task") {
            if comm == SERVER_THREADS {
                ticks += used;
            }
        }
        for (pid, comm, used) in stats("/proc") {
            let serves_run = || {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|title| {
                    String::from_utf8_lossy(&title).contains(self.database.as_str())
                })
            };
            if Some(pid) == self.redis_pid || (comm == "postgres" && serves_run()) {
                ticks += used;
            }
        }
        ticks as f64 * TICK
    }

    /// Seconds of CPU time spent over the measured part of a run that starts now: after
    /// `plan.warmup`, for `plan.duration`. Divided by the run's requests, its cost per request.
    async fn over(self, plan: Plan) -> f64 {
        tokio::time::sleep(plan.warmup).await;
        let before = self.seconds();
        tokio::time::sleep(plan.duration).await;
        self.seconds() - before
    }
}

/// `(pid, command name, user + system ticks)` of every process (or thread) listed in `dir`.
fn stats(dir: &str) -> Vec<(u32, String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`: the name may hold spaces, so split at the parentheses.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime, the 14th and 15th fields of the line.
            let used =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some((pid, comm, used))
        })
        .collect()
}

/// The middle value (0 for none).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn per_request_us(seconds: f64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        seconds * 1e6 / requests as f64
    }
}

/// Drives `template` at `addr` with `wrk -t1`, as the figures outside the project are taken: a
/// warm-up run, then `plan.duration` measured. `None` when `wrk` is not installed.
fn wrk(addr: SocketAddr, plan: Plan, template: &Template, meter: &CpuMeter) -> Option<Outside> {
    let run = |secs: u64| {
        let mut command = std::process::Command::new("wrk");
        command.args([
            "-t1".to_owned(),
            format!("-c{}", plan.connections),
            format!("-d{secs}s"),
            "--latency".to_owned(),
        ]);
        for (name, value) in &template.headers {
            command
                .arg("-H")
                .arg(format!("{name}: {}", value.to_str().unwrap()));
        }
        command.arg(format!("http://{addr}{}", template.path));
        let output = command.output().ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    };
    if plan.warmup >= Duration::from_secs(1) {
        run(plan.warmup.as_secs())?;
    }
    let before = meter.seconds();
    let report = run(plan.duration.as_secs().max(1))?;
    let used = meter.seconds() - before;
    let mut outside = parse_wrk(&report)?;
    outside.cpu_us = per_request_us(used, outside.requests);
    Some(outside)
}

/// Reads `wrk --latency`'s report.
fn parse_wrk(report: &str) -> Option<Outside> {
    let ms = |text: &str| -> Option<f64> {
        let split = text.find(|c: char| c.is_ascii_alphabetic())?;
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().ok()?;
        Some(match unit {
            "us" => number / 1000.0,
            "ms" => number,
            "s" => number * 1000.0,
            "m" => number * 60_000.0,
            _ => return None,
        })
    };
    let (mut rps, mut p50, mut p99, mut errors, mut requests) = (None, None, None, 0, None);
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => rps = n.parse().ok(),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["50%", t] => p50 = ms(t),
            ["99%", t] => p99 = ms(t),
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    Some(Outside {
        rps: rps?,
        p50_ms: p50?,
        p99_ms: p99?,
        errors,
        requests: requests?,
        cpu_us: 0.0,
    })
}

/// Serves `router` on a random port of its own.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

// ---- Baselines ----------------------------------------------------------------------------

fn bare() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

/// A bare handler answering with a response's bytes and the headers that say what they are: what
/// serving a static asset costs with nothing but axum in the way.
fn same_bytes(headers: HeaderMap, body: Bytes) -> Router {
    Router::new().route(
        "/",
        get(move || {
            let (headers, body) = (headers.clone(), body.clone());
            async move { (headers, body) }
        }),
    )
}

fn one_redis_get(pool: Pool) -> Router {
    Router::new()
        .route(
            "/",
            get(|State(pool): State<Pool>| async move {
                match pool.get::<Option<String>, _>("bench:baseline:key").await {
                    Ok(_) => (StatusCode::OK, "ok"),
                    Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis"),
                }
            }),
        )
        .with_state(pool)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
    jti: String,
    exp: i64,
}

fn jwt_and_exists(pool: Pool) -> Router {
    Router::new()
        .route(
            "/",
            get(|State(pool): State<Pool>, headers: HeaderMap| async move {
                let token = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default();
                let key = jsonwebtoken::DecodingKey::from_secret(JWT_KEY);
                let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
                let Ok(data) = jsonwebtoken::decode::<Claims>(token, &key, &validation) else {
                    return (StatusCode::UNAUTHORIZED, "token");
                };
                let revoked = format!("bench:baseline:revoked:{}", data.claims.jti);
                match pool.exists::<i64, _>(revoked).await {
                    Ok(0) => (StatusCode::OK, "ok"),
                    Ok(_) => (StatusCode::UNAUTHORIZED, "revoked"),
                    Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis"),
                }
            }),
        )
        .with_state(pool)
}

fn baseline_token() -> String {
    let claims = Claims {
        sub: "u1".into(),
        jti: "j1".into(),
        exp: time::OffsetDateTime::now_utc().unix_timestamp() + 3600,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_KEY),
    )
    .unwrap()
}

/// The plain stack: axum-login over tower-sessions-redis-store, its user loaded from PostgreSQL
/// on every request (axum-login's `get_user`).
#[derive(Clone, Debug)]
struct PlainUser {
    id: i64,
    name: String,
    password: String,
}

impl AuthUser for PlainUser {
    type Id = i64;
    fn id(&self) -> i64 {
        self.id
    }
    fn session_auth_hash(&self) -> &[u8] {
        self.password.as_bytes()
    }
}

#[derive(Clone)]
struct PlainBackend(sqlx::PgPool);

impl AuthnBackend for PlainBackend {
    type User = PlainUser;
    type Credentials = i64;
    type Error = sqlx::Error;

    async fn authenticate(&self, id: i64) -> Result<Option<PlainUser>, sqlx::Error> {
        self.get_user(&id).await
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<PlainUser>, sqlx::Error> {
        let row: Option<(i64, String, String)> =
            sqlx::query_as("select id, name, password from bench_users where id = $1")
                .bind(id)
                .fetch_optional(&self.0)
                .await?;
        Ok(row.map(|(id, name, password)| PlainUser { id, name, password }))
    }
}

type PlainAuth = axum_login::AuthSession<PlainBackend>;

async fn plain_stack(pool: Pool, db: sqlx::PgPool) -> Router {
    sqlx::raw_sql(
        "create table if not exists bench_users (id bigint primary key, name text, password text);
         insert into bench_users values (1, 'Ada', 'hash') on conflict do nothing",
    )
    .execute(&db)
    .await
    .unwrap();
    let sessions = SessionManagerLayer::new(RedisStore::new(pool)).with_secure(false);
    let auth = AuthManagerLayerBuilder::new(PlainBackend(db), sessions).build();
    Router::new()
        .route(
            "/login",
            post(|mut auth: PlainAuth| async move {
                let user = auth.authenticate(1).await.unwrap().unwrap();
                auth.login(&user).await.unwrap();
                StatusCode::OK
            }),
        )
        .route(
            "/",
            get(|auth: PlainAuth| async move {
                match auth.user {
                    Some(user) => format!("<p>Hello, {}</p>", user.name).into_response(),
                    None => StatusCode::UNAUTHORIZED.into_response(),
                }
            }),
        )
        .layer(auth)
}

// ---- Lectern --------------------------------------------------------------------------------

fn cookie_of(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("a {name} cookie"))
        .to_owned()
}

fn csrf_of(html: &[u8]) -> String {
    let html = String::from_utf8_lossy(html);
    let marker = r#"<meta name="csrf-token" content=""#;
    let start = html.find(marker).expect("a csrf meta tag") + marker.len();
    html[start..start + html[start..].find('"').expect("closed")].to_owned()
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Adds `count` sign-in rows to the recent activity of the learner `email`, a second apart
/// going back from now, straight into the database.
async fn add_events(database_url: &str, email: &str, count: i64) {
    let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
    sqlx::query(
        "insert into audit_events (id, event, user_id, sign_in_id, at, ip, user_agent, txn)
         select gen_random_uuid()::text, 'sign_in', u.id, null,
                extract(epoch from now())::bigint - g, '127.0.0.1', 'bench', null
         from users u, generate_series(1, $2) g where u.email = $1",
    )
    .bind(email)
    .bind(count)
    .execute(&mut db)
    .await
    .unwrap();
}

struct Lectern {
    addr: SocketAddr,
    origin: String,
}

struct Browser {
    session: String,
    csrf: String,
}

impl Lectern {
    async fn start(settings: Settings) -> (Self, Application) {
        let app = Application::build(settings).await.expect("lectern starts");
        let addr: SocketAddr = format!("127.0.0.1:{}", app.port()).parse().unwrap();
        (
            Self {
                addr,
                origin: format!("http://{addr}"),
            },
            app,
        )
    }

    /// A new learner through the sign-up form: their email and the session cookie of the
    /// sign-in that signing up makes.
    async fn sign_up(&self, conn: &mut Connection1) -> (String, String) {
        let (_, _, page) = conn.send(&Template::get("/")).await;
        let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
        let body = form(&[
            ("csrf_token", &csrf_of(&page)),
            ("email", &email),
            ("display_name", "Bench"),
            ("password", PASSWORD),
        ]);
        let register = Template::post("/register", "application/x-www-form-urlencoded", body)
            .with("origin", &self.origin);
        let (status, headers, _) = conn.send(&register).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "sign-up");
        (email, cookie_of(&headers, "lectern_session"))
    }

    /// A browser sign-in through the form: its session cookie and the CSRF token of its pages.
    async fn browser(&self, conn: &mut Connection1, email: &str) -> Browser {
        let (_, _, page) = conn.send(&Template::get("/")).await;
        let body = form(&[
            ("csrf_token", &csrf_of(&page)),
            ("email", email),
            ("password", PASSWORD),
        ]);
        let login = Template::post("/login", "application/x-www-form-urlencoded", body)
            .with("origin", &self.origin);
        let (status, headers, _) = conn.send(&login).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "sign-in");
        let session = cookie_of(&headers, "lectern_session");
        let (_, _, page) = conn
            .send(&Template::get("/dashboard").with("cookie", &session))
            .await;
        Browser {
            csrf: csrf_of(&page),
            session,
        }
    }

    /// An API sign-in: its access token and refresh cookie.
    async fn api(&self, conn: &mut Connection1, email: &str) -> (String, String) {
        let body = json!({"email": email, "password": PASSWORD}).to_string();
        let login = Template::post("/api/v1/auth/login", "application/json", body);
        let (status, headers, body) = conn.send(&login).await;
        assert_eq!(status, StatusCode::OK, "API sign-in");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (
            json["access_token"].as_str().unwrap().to_owned(),
            cookie_of(&headers, "lectern_refresh"),
        )
    }

    /// Refreshes `times` times: the last access token and refresh cookie.
    async fn refreshed(
        &self,
        conn: &mut Connection1,
        mut refresh: String,
        times: usize,
    ) -> (String, String) {
        let mut access = String::new();
        for _ in 0..times {
            let template = Template::post("/api/v1/auth/refresh", "application/json", "")
                .with("cookie", &refresh);
            let (status, headers, body) = conn.send(&template).await;
            assert_eq!(status, StatusCode::OK, "refresh");
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            access = json["access_token"].as_str().unwrap().to_owned();
            refresh = cookie_of(&headers, "lectern_refresh");
        }
        (access, refresh)
    }
}

fn sid_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

/// What `key` takes in Redis under the name it has in production: a key under this run's longer
/// `prefix` is copied to `lectern:`…, measured there and deleted (the hash tag keeps both names
/// in one slot).
async fn memory_usage(pool: &Pool, prefix: &str, key: &str) -> u64 {
    let measure = |key: String| async move {
        pool.memory_usage::<Option<u64>, _>(key, Some(0))
            .await
            .unwrap()
            .unwrap_or(0)
    };
    let Some(rest) = key.strip_prefix(prefix) else {
        return measure(key.to_owned()).await;
    };
    let production = format!("lectern:{rest}");
    let copied: bool = pool.copy(key, &production, None, false).await.unwrap();
    assert!(copied, "{production} already exists");
    let bytes = measure(production.clone()).await;
    pool.del::<(), _>(&production).await.unwrap();
    bytes
}

/// The Redis server's process id, when it says (`INFO server`).
async fn redis_pid(pool: &Pool) -> Option<u32> {
    let info: String = pool
        .info(Some(
            tower_sessions_redis_store::fred::types::InfoKind::Server,
        ))
        .await
        .ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// Every key under `pattern` (SCAN on each master).
async fn keys_matching(redis_url: &str, pattern: &str) -> Vec<String> {
    let output = std::process::Command::new("redis-cli")
        .args(["-u", redis_url, "--scan", "--pattern", pattern])
        .output();
    match output {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn settings(database_url: &str, redis_url: &str, prefix: &str) -> Settings {
    let args = ServeArgs {
        addr: Some("127.0.0.1:0".parse().unwrap()),
        database_url: Some(database_url.to_owned()),
        redis_url: Some(redis_url.to_owned()),
        secret: Some(SECRET.into()),
        secure_cookies: Some(false),
        rate_limit: Some(0),
        // The bearer row's token is made before the first round and used in the last: it must
        // outlive the whole run, however long the machine takes.
        access_ttl: Some(Duration::from_secs(4 * 3600)),
        ..ServeArgs::default()
    };
    let mut settings = Settings::from_args(&args).expect("settings");
    settings.key_prefix = prefix.to_owned();
    settings
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn print_row(m: &Measured, baselines: &[(&str, f64)]) {
    let ratios: Vec<String> = baselines
        .iter()
        .map(|(name, rps)| format!("{:.2}x {name}", ratio(m.rps, *rps)))
        .collect();
    println!(
        "{:<52} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>6}  {}",
        m.name,
        m.rps,
        m.p50_ms,
        m.p99_ms,
        m.p999_ms,
        m.errors,
        ratios.join(", ")
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let serve_only = std::env::args().any(|a| a == "--serve");
    let plan = Plan::new(quick);
    // Lectern logs as the server does (its default filter: a span per request, the audit lines
    // of each sign-in and sign-out), formatted and thrown away, so that cost is in every figure.
    lectern::telemetry::init_with(lectern::telemetry::SERVER_LOGS, std::io::sink, false);
    // The servers and the load generator share the machine's two cores, as wrk on the same
    // machine would; each has a runtime of its own.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db_name = format!("lectern_bench_{}", uuid::Uuid::new_v4().simple());
    let database_url = servers.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("DATABASE_URL must reach PostgreSQL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {db_name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&db_name);
        url.to_string()
    });
    let prefix = format!("lectern:bench:{}:", uuid::Uuid::new_v4().simple());

    // Everything served, each on its own port, on the servers' runtime.
    let (addrs, lectern, peer, redis) = servers.block_on(async {
        let redis = lectern::store::redis::connect(&redis_url).await.unwrap();
        let db = sqlx::PgPool::connect(&database_url).await.unwrap();
        let bare = serve(bare()).await;
        let get1 = serve(one_redis_get(redis.clone())).await;
        let jwt = serve(jwt_and_exists(redis.clone())).await;
        let plain = serve(plain_stack(redis.clone(), db).await).await;
        let (lectern, app) =
            Lectern::start(settings(&database_url, &redis_url, &prefix).await).await;
        tokio::spawn(app.run_until_stopped());
        let (peer, app) = Lectern::start(settings(&database_url, &redis_url, &prefix).await).await;
        tokio::spawn(app.run_until_stopped());
        ([bare, get1, jwt, plain], lectern, peer, redis)
    });
    let meter = CpuMeter {
        redis_pid: servers.block_on(redis_pid(&redis)),
        database: db_name.clone(),
    };
    let [bare_addr, get_addr, jwt_addr, plain_addr] = addrs;

    let on_servers = servers.handle().clone();
    let report = load.block_on(async {
        let mut results: Vec<Measured> = Vec::new();
        let mut conn = Connection1::open(lectern.addr).await;

        // The plain stack's learner, and a Lectern learner with a browser and an API sign-in.
        let mut plain_conn = Connection1::open(plain_addr).await;
        let (_, headers, _) = plain_conn.send(&Template::post("/login", "text/plain", "")).await;
        let plain_cookie = cookie_of(&headers, "id");
        let (email, _) = lectern.sign_up(&mut conn).await;
        let browser = lectern.browser(&mut conn, &email).await;
        let (access, _) = lectern.api(&mut conn, &email).await;
        // The account page as its work grows: learners with 1, 20 and 100 live sign-ins (the
        // sign-up's browser, the rest API), and one whose recent activity is 1,000 rows.
        let mut curve = Vec::new();
        for live in [1usize, 20, 100] {
            let (email, session) = lectern.sign_up(&mut conn).await;
            for _ in 1..live {
                lectern.api(&mut conn, &email).await;
            }
            let name = match live {
                1 => "lectern: GET /account, 1 live sign-in".to_owned(),
                _ => format!("lectern: GET /account, {live} live sign-ins"),
            };
            curve.push((name, session));
        }
        let (busy, session) = lectern.sign_up(&mut conn).await;
        add_events(&database_url, &busy, 999).await;
        curve.push((
            "lectern: GET /account, 1,000 rows of activity".to_owned(),
            session,
        ));
        let (_, _, home) = conn.send(&Template::get("/")).await;
        let home = String::from_utf8_lossy(&home).into_owned();
        let asset = home
            .split("src=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .find(|s| s.starts_with("/static/"))
            .expect("a script")
            .to_owned();
        // The asset's bytes as a browser gets them, served by a bare handler: the static row's
        // fair baseline.
        let as_browsers_ask =
            Template::get(&asset).with("accept-encoding", "gzip, deflate, br, zstd");
        let (_, headers, asset_body) = conn.send(&as_browsers_ask).await;
        let mut asset_headers = HeaderMap::new();
        for name in [
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::CACHE_CONTROL,
            header::ETAG,
            header::VARY,
        ] {
            if let Some(value) = headers.get(&name) {
                asset_headers.insert(name, value.clone());
            }
        }
        let same_bytes_addr = on_servers
            .spawn(serve(same_bytes(asset_headers, asset_body)))
            .await
            .unwrap();

        // The steady scenarios: the baselines, then Lectern's page views, in interleaved rounds
        // (so a slow spell of the machine touches every row alike); each row keeps its median.
        let steady = [
            ("baseline: bare axum handler", bare_addr, Template::get("/")),
            ("baseline: axum + one Redis GET", get_addr, Template::get("/")),
            (
                "baseline: axum + HS256 verify + one Redis EXISTS",
                jwt_addr,
                Template::get("/").with("authorization", &format!("Bearer {}", baseline_token())),
            ),
            (
                "baseline: axum-login + tower-sessions-redis + PG",
                plain_addr,
                Template::get("/").with("cookie", &plain_cookie),
            ),
            (
                "baseline: bare axum serving the asset's bytes",
                same_bytes_addr,
                Template::get("/").with("accept-encoding", "gzip, deflate, br, zstd"),
            ),
            ("lectern: GET /healthz", lectern.addr, Template::get("/healthz")),
            // As every browser asks for it.
            ("lectern: GET static asset", lectern.addr, as_browsers_ask),
            ("lectern: GET / as a visitor", lectern.addr, Template::get("/")),
            (
                "lectern: GET /dashboard signed in",
                lectern.addr,
                Template::get("/dashboard").with("cookie", &browser.session),
            ),
            (
                "lectern: GET /account signed in",
                lectern.addr,
                Template::get("/account").with("cookie", &browser.session),
            ),
            (
                "lectern: GET /api/v1/me (bearer)",
                lectern.addr,
                Template::get("/api/v1/me").with("authorization", &format!("Bearer {access}")),
            ),
        ];
        let steady: Vec<(&str, SocketAddr, Template)> = steady
            .into_iter()
            .chain(curve.iter().map(|(name, session)| {
                let page = Template::get("/account").with("cookie", session);
                (name.as_str(), lectern.addr, page)
            }))
            .collect();
        if serve_only {
            // For a profiler: the same servers, driven from outside.
            println!("serving until Ctrl-C; each target as `wrk` drives it:");
            for (name, addr, template) in &steady {
                let headers: String = template
                    .headers
                    .iter()
                    .map(|(n, v)| format!(" -H '{n}: {}'", v.to_str().unwrap()))
                    .collect();
                println!("{name}\n  wrk -t1 -c64 -d10s{headers} http://{addr}{}", template.path);
            }
            let _ = tokio::signal::ctrl_c().await;
            return None;
        }
        // Each target is driven from inside and then by wrk, one after the other in each round.
        let mut rounds: Vec<Vec<Measured>> = vec![Vec::new(); steady.len()];
        let mut outside_rounds: Vec<Vec<Outside>> = vec![Vec::new(); steady.len()];
        for _ in 0..plan.rounds {
            for (i, (name, addr, template)) in steady.iter().enumerate() {
                let cpu = tokio::spawn(meter.clone().over(plan));
                let mut inside = drive(name, *addr, plan, template.clone(), StatusCode::OK).await;
                inside.cpu_us = per_request_us(cpu.await.unwrap(), inside.count);
                rounds[i].push(inside);
                let (addr, template, meter) = (*addr, template.clone(), meter.clone());
                let outside =
                    tokio::task::spawn_blocking(move || wrk(addr, plan, &template, &meter));
                outside_rounds[i].extend(outside.await.unwrap());
            }
        }
        // Each figure is the median of its own rounds: the CPU time of the round with the median
        // requests a second may be that round's outlier.
        let mut medians: Vec<Measured> = rounds
            .into_iter()
            .map(|mut runs| {
                let cpu_us = median(runs.iter().map(|m| m.cpu_us));
                runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
                Measured {
                    cpu_us,
                    ..runs.swap_remove(runs.len() / 2)
                }
            })
            .collect();
        let outside: Vec<Option<Outside>> = outside_rounds
            .into_iter()
            .map(|mut runs| {
                let cpu_us = median(runs.iter().map(|o| o.cpu_us));
                runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
                (!runs.is_empty()).then(|| Outside {
                    cpu_us,
                    ..runs.swap_remove(runs.len() / 2)
                })
            })
            .collect();
        let lectern_rows = medians.split_off(5);
        let [bare_m, get_m, jwt_m, plain_m, same_bytes_m]: [Measured; 5] =
            medians.try_into().unwrap();
        let baselines = [
            ("bare", bare_m.rps),
            ("GET", get_m.rps),
            ("JWT", jwt_m.rps),
            ("plain", plain_m.rps),
        ];
        let dashboard = lectern_rows[3].clone();

        // Sign-outs: sign-ins made ahead, only the sign-out timed; one more per connection for
        // its warm-up.
        let mut browsers = Vec::new();
        for _ in 0..plan.sign_outs + plan.connections {
            let b = lectern.browser(&mut conn, &email).await;
            browsers.push(
                Template::post("/logout", "application/x-www-form-urlencoded", "")
                    .with("cookie", &b.session)
                    .with("hx-request", "true")
                    .with("x-csrf-token", &b.csrf),
            );
        }
        let browser_out = drive_each(
            "lectern: POST /logout (browser, htmx)",
            lectern.addr,
            plan.connections,
            browsers,
            StatusCode::OK,
        )
        .await;
        let mut sign_out_rows = vec![browser_out];
        // The same number of sign-outs either way, and every sign-in of both rows made before
        // either is driven, so the two rows meet the same database (tens of thousands of
        // refreshes made ahead leave work behind them) and compare like with like.
        let mut prepared = Vec::new();
        for tokens in [100usize, 1] {
            let count = plan.sign_outs / 4 + plan.connections;
            let mut api = Vec::new();
            for _ in 0..count {
                let (first, refresh) = lectern.api(&mut conn, &email).await;
                let (access, refresh) = if tokens > 1 {
                    lectern.refreshed(&mut conn, refresh, tokens - 1).await
                } else {
                    (first, refresh)
                };
                api.push(
                    Template::post("/api/v1/auth/logout", "application/json", "")
                        .with("authorization", &format!("Bearer {access}"))
                        .with("cookie", &refresh),
                );
            }
            prepared.push((tokens, api));
        }
        prepared.reverse();
        for (tokens, api) in prepared {
            sign_out_rows.push(
                drive_each(
                    &format!("lectern: POST /api/v1/auth/logout ({tokens} token(s))"),
                    lectern.addr,
                    plan.connections,
                    api,
                    StatusCode::NO_CONTENT,
                )
                .await,
            );
        }

        // The dashboard while a flood of wrong passwords hits the sign-in form.
        let flood_stop = Arc::new(AtomicBool::new(false));
        let mut flooders = Vec::new();
        for _ in 0..plan.connections {
            let stop = flood_stop.clone();
            let (addr, origin, email) = (lectern.addr, lectern.origin.clone(), email.clone());
            flooders.push(tokio::spawn(async move {
                let mut c = Connection1::open(addr).await;
                let (_, _, page) = c.send(&Template::get("/")).await;
                let body = form(&[
                    ("csrf_token", &csrf_of(&page)),
                    ("email", &email),
                    ("password", "not the password"),
                ]);
                let wrong = Template::post("/login", "application/x-www-form-urlencoded", body)
                    .with("origin", &origin);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    c.send(&wrong).await;
                    n += 1;
                }
                n
            }));
        }
        let flooded = drive(
            "lectern: GET /dashboard under a wrong-password flood",
            lectern.addr,
            plan,
            Template::get("/dashboard").with("cookie", &browser.session),
            StatusCode::OK,
        )
        .await;
        flood_stop.store(true, Ordering::Relaxed);
        let mut wrong = 0;
        for f in flooders {
            wrong += f.await.unwrap();
        }

        // Sign-in throughput with the right password, against the argon2 ceiling.
        let (argon2_secs, argon2_together_secs) = {
            use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
            let argon = Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(19 * 1024, 2, 1, None).unwrap(),
            );
            let salt = argon2::password_hash::SaltString::generate(
                &mut argon2::password_hash::rand_core::OsRng,
            );
            let hash = argon.hash_password(PASSWORD.as_bytes(), &salt).unwrap().to_string();
            let parsed = argon2::PasswordHash::new(&hash).unwrap();
            let runs = if quick { 4 } else { 16 };
            let verify = || {
                let began = Instant::now();
                for _ in 0..runs {
                    argon.verify_password(PASSWORD.as_bytes(), &parsed).unwrap();
                }
                began.elapsed().as_secs_f64() / runs as f64
            };
            let alone = verify();
            // The same verifies on every core at once: what one costs while the cores share
            // their caches and memory bandwidth, as they do under a sign-in load.
            let threads = std::thread::available_parallelism().map_or(1, usize::from);
            let together = std::thread::scope(|scope| {
                let each: Vec<_> = (0..threads).map(|_| scope.spawn(verify)).collect();
                each.into_iter().map(|t| t.join().unwrap()).sum::<f64>() / threads as f64
            });
            (alone, together)
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let ceiling = cores / argon2_secs;
        let sign_ins = drive(
            "lectern: POST /api/v1/auth/login (right password)",
            lectern.addr,
            plan,
            Template::post(
                "/api/v1/auth/login",
                "application/json",
                json!({"email": email, "password": PASSWORD}).to_string(),
            ),
            StatusCode::OK,
        )
        .await;

        // Revocation propagation: sign out on one instance while another is replayed the old
        // token; time from sending the sign-out until the replays are refused.
        let mut propagation = histogram();
        let mut peer_conn = Connection1::open(peer.addr).await;
        for _ in 0..plan.trials {
            let (access, refresh) = lectern.api(&mut conn, &email).await;
            let me = Template::get("/api/v1/me").with("authorization", &format!("Bearer {access}"));
            assert_eq!(peer_conn.send(&me).await.0, StatusCode::OK);
            let logout = Template::post("/api/v1/auth/logout", "application/json", "")
                .with("authorization", &format!("Bearer {access}"))
                .with("cookie", &refresh);
            let sent = Instant::now();
            let signing_out = {
                let addr = lectern.addr;
                tokio::spawn(async move { Connection1::open(addr).await.send(&logout).await.0 })
            };
            loop {
                if peer_conn.send(&me).await.0 == StatusCode::UNAUTHORIZED {
                    break;
                }
            }
            propagation
                .record(sent.elapsed().as_micros().max(1) as u64)
                .unwrap();
            assert_eq!(signing_out.await.unwrap(), StatusCode::NO_CONTENT);
        }

        // Memory: what one browser sign-in and one API sign-in keep, and one revoked jti.
        let b = lectern.browser(&mut conn, &email).await;
        let session_id = b.session.split_once('=').unwrap().1.to_owned();
        let (access, refresh) = lectern.api(&mut conn, &email).await;
        let api_sid = sid_of(&access);
        let browser_keys = {
            // The session record, what the session holds besides, and its sign-in's keys (whose
            // id derives from the session's).
            let mut keys = vec![session_id.clone()];
            keys.extend(keys_matching(&redis_url, &format!("{prefix}{{session:{session_id}}}*")).await);
            let sid = lectern::auth::sign_ins::browser_sign_in_id(&session_id);
            keys.extend(keys_matching(&redis_url, &format!("{prefix}{{{sid}}}*")).await);
            keys
        };
        let mut browser_bytes = Vec::new();
        for key in &browser_keys {
            let shown = key.replace(&prefix, "lectern:").replace(&session_id, "<session id>");
            browser_bytes.push((shown, memory_usage(&redis, &prefix, key).await));
        }
        let api_keys = keys_matching(&redis_url, &format!("{prefix}{{{api_sid}}}*")).await;
        let mut api_bytes = 0;
        for key in &api_keys {
            api_bytes += memory_usage(&redis, &prefix, key).await;
        }
        let logout = Template::post("/api/v1/auth/logout", "application/json", "")
            .with("authorization", &format!("Bearer {access}"))
            .with("cookie", &refresh);
        assert_eq!(conn.send(&logout).await.0, StatusCode::NO_CONTENT);
        // The sign-in's revocation list, holding its one token.
        let revoked = keys_matching(&redis_url, &format!("{prefix}{{{api_sid}}}:revoked")).await;
        let revoked_bytes = match revoked.first() {
            Some(key) => memory_usage(&redis, &prefix, key).await,
            None => 0,
        };
        // A sign-in issued 100 access tokens: what each further revoked jti adds to its list.
        let (_, refresh) = lectern.api(&mut conn, &email).await;
        let (access, refresh) = lectern.refreshed(&mut conn, refresh, 99).await;
        let hundred_sid = sid_of(&access);
        let logout = Template::post("/api/v1/auth/logout", "application/json", "")
            .with("authorization", &format!("Bearer {access}"))
            .with("cookie", &refresh);
        assert_eq!(conn.send(&logout).await.0, StatusCode::NO_CONTENT);
        let hundred_key = format!("{prefix}{{{hundred_sid}}}:revoked");
        let hundred_entries: u64 = redis.zcard(&hundred_key).await.unwrap_or(0);
        let hundred_bytes = memory_usage(&redis, &prefix, &hundred_key).await;
        let revoked_each = if hundred_entries > 1 {
            hundred_bytes.saturating_sub(revoked_bytes) as f64 / (hundred_entries - 1) as f64
        } else {
            0.0
        };
        // Every key this run wrote has a TTL.
        let all = keys_matching(&redis_url, &format!("{prefix}*")).await;
        let mut without_ttl = Vec::new();
        for key in &all {
            if redis.ttl::<i64, _>(key).await.unwrap_or(-2) == -1 {
                without_ttl.push(key.clone());
            }
        }

        let outside_of = |name: &str| {
            steady
                .iter()
                .position(|(n, _, _)| *n == name)
                .and_then(|i| outside[i].clone())
        };
        let outside_baselines = ["bare", "GET", "plain", "same bytes"].map(|b| {
            let name = match b {
                "bare" => "baseline: bare axum handler",
                "GET" => "baseline: axum + one Redis GET",
                "plain" => "baseline: axum-login + tower-sessions-redis + PG",
                _ => "baseline: bare axum serving the asset's bytes",
            };
            outside_of(name).map_or(0.0, |o| o.rps)
        });
        let outside_plain_cpu = outside_of("baseline: axum-login + tower-sessions-redis + PG")
            .map_or(0.0, |o| o.cpu_us);
        let outside_json = |m: &Measured| {
            outside_of(&m.name).map(|o| {
                let to_get = ratio(o.rps, outside_baselines[1]);
                json!({
                    "rps": o.rps,
                    "p50_ms": o.p50_ms,
                    "p99_ms": o.p99_ms,
                    "errors": o.errors,
                    "ratio_to_bare": ratio(o.rps, outside_baselines[0]),
                    "ratio_to_redis_get": to_get,
                    "ratio_to_plain_axum_login": ratio(o.rps, outside_baselines[2]),
                    "ratio_to_bare_same_bytes": ratio(o.rps, outside_baselines[3]),
                    // How far the two load generators' ratios to one Redis GET stand apart.
                    "disagreement": ratio(to_get, ratio(m.rps, baselines[1].1)) - 1.0,
                    "cpu_us_per_request": o.cpu_us,
                    "cpu_ratio_to_plain_axum_login": ratio(outside_plain_cpu, o.cpu_us),
                    // How far the CPU time a request cost under wrk stands from the in-process
                    // generator's figure for the same target.
                    "cpu_disagreement": ratio(o.cpu_us, m.cpu_us) - 1.0,
                })
            })
        };
        let same_bytes_rps = same_bytes_m.rps;
        let plain_cpu = plain_m.cpu_us;
        results.extend([bare_m, get_m, jwt_m, plain_m, same_bytes_m]);
        results.extend(lectern_rows);
        results.extend(sign_out_rows);
        results.push(flooded.clone());
        results.push(sign_ins.clone());
        Some(json!({
            "quick": quick,
            "connections": plan.connections,
            "duration_s": plan.duration.as_secs_f64(),
            "rounds": plan.rounds,
            "baselines": baselines.iter().map(|(n, r)| (n.to_string(), *r)).collect::<std::collections::BTreeMap<_, _>>(),
            "results": results.iter().map(|m| json!({
                "name": m.name,
                "rps": m.rps,
                "p50_ms": m.p50_ms,
                "p99_ms": m.p99_ms,
                "p999_ms": m.p999_ms,
                "errors": m.errors,
                "count": m.count,
                "ratio_to_redis_get": ratio(m.rps, baselines[1].1),
                "ratio_to_bare": ratio(m.rps, baselines[0].1),
                "ratio_to_plain_axum_login": ratio(m.rps, baselines[3].1),
                "ratio_to_bare_same_bytes": ratio(m.rps, same_bytes_rps),
                "cpu_us_per_request": (m.cpu_us > 0.0).then_some(m.cpu_us),
                "cpu_ratio_to_plain_axum_login": (m.cpu_us > 0.0).then(|| ratio(plain_cpu, m.cpu_us)),
                "outside": outside_json(m),
            })).collect::<Vec<_>>(),
            "flood": {
                "wrong_passwords_sent": wrong,
                "dashboard_p99_ms": flooded.p99_ms,
                "dashboard_unloaded_p99_ms": dashboard.p99_ms,
                "dashboard_errors": flooded.errors,
            },
            "sign_in": {
                "rps": sign_ins.rps,
                "argon2_verify_ms": argon2_secs * 1000.0,
                "argon2_verify_on_every_core_ms": argon2_together_secs * 1000.0,
                "cores": cores,
                "argon2_ceiling_rps": ceiling,
                "ratio_to_ceiling": ratio(sign_ins.rps, ceiling),
            },
            "propagation": {
                "trials": propagation.len(),
                "p50_ms": propagation.value_at_quantile(0.5) as f64 / 1000.0,
                "p99_ms": propagation.value_at_quantile(0.99) as f64 / 1000.0,
                "max_ms": propagation.max() as f64 / 1000.0,
            },
            "memory": {
                "browser_sign_in_bytes": browser_bytes.iter().map(|(_, b)| b).sum::<u64>(),
                "browser_sign_in_keys": browser_bytes.iter().map(|(k, b)| json!({"key": k.replace(&prefix, "lectern:"), "bytes": b})).collect::<Vec<_>>(),
                "api_sign_in_bytes": api_bytes,
                "revoked_jti_bytes": revoked_bytes,
                "revoked_list_of_100_bytes": hundred_bytes,
                "revoked_list_of_100_entries": hundred_entries,
                "revoked_jti_bytes_each_in_a_list": revoked_each,
                "keys_written": all.len(),
                "keys_without_ttl": without_ttl,
            },
        }))
    });
    let Some(report) = report else {
        drop(load);
        drop_database(&servers, &admin_url, &db_name);
        return;
    };

    // The table.
    let baselines: Vec<(&str, f64)> = ["bare", "GET", "JWT", "plain"]
        .iter()
        .map(|n| (*n, report["baselines"][n].as_f64().unwrap()))
        .collect();
    println!(
        "lectern http bench{}: {} connections, {:?} each after {:?} warm-up; baselines and page views: median of {} interleaved round(s)",
        if quick { " (quick)" } else { "" },
        plan.connections,
        plan.duration,
        plan.warmup,
        plan.rounds
    );
    println!(
        "{:<52} {:>9} {:>8} {:>8} {:>8} {:>6}  ratios",
        "target", "req/s", "p50 ms", "p99 ms", "p99.9ms", "errors"
    );
    for row in report["results"].as_array().unwrap() {
        let m = Measured {
            name: row["name"].as_str().unwrap().to_owned(),
            rps: row["rps"].as_f64().unwrap(),
            p50_ms: row["p50_ms"].as_f64().unwrap(),
            p99_ms: row["p99_ms"].as_f64().unwrap(),
            p999_ms: row["p999_ms"].as_f64().unwrap(),
            errors: row["errors"].as_u64().unwrap(),
            count: row["count"].as_u64().unwrap(),
            cpu_us: row["cpu_us_per_request"].as_f64().unwrap_or(0.0),
        };
        print_row(&m, &baselines);
    }
    print_outside(&report, plan);
    let f = &report["flood"];
    println!(
        "flood: {} wrong passwords sent; dashboard p99 {:.2} ms loaded vs {:.2} ms unloaded ({:.2}x), {} errors",
        f["wrong_passwords_sent"],
        f["dashboard_p99_ms"].as_f64().unwrap(),
        f["dashboard_unloaded_p99_ms"].as_f64().unwrap(),
        ratio(
            f["dashboard_p99_ms"].as_f64().unwrap(),
            f["dashboard_unloaded_p99_ms"].as_f64().unwrap()
        ),
        f["dashboard_errors"]
    );
    let s = &report["sign_in"];
    println!(
        "sign-in: {:.1}/s; argon2 verify {:.1} ms on {} cores = ceiling {:.1}/s; {:.2}x the ceiling",
        s["rps"].as_f64().unwrap(),
        s["argon2_verify_ms"].as_f64().unwrap(),
        s["cores"],
        s["argon2_ceiling_rps"].as_f64().unwrap(),
        s["ratio_to_ceiling"].as_f64().unwrap()
    );
    let together = s["argon2_verify_on_every_core_ms"].as_f64().unwrap();
    println!(
        "  one verify on every core at once: {together:.1} ms each ({:.1}/s with every core hashing; sign-in is {:.2}x that)",
        s["cores"].as_f64().unwrap() * 1000.0 / together,
        s["rps"].as_f64().unwrap() / (s["cores"].as_f64().unwrap() * 1000.0 / together)
    );
    let p = &report["propagation"];
    println!(
        "revocation propagation between two instances ({} trials): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p["trials"],
        p["p50_ms"].as_f64().unwrap(),
        p["p99_ms"].as_f64().unwrap(),
        p["max_ms"].as_f64().unwrap()
    );
    let m = &report["memory"];
    println!(
        "Redis: browser sign-in {} bytes {}, API sign-in {} bytes, revoked jti {} bytes alone (its list), {:.1} bytes each in a list of {} ({} bytes); {} keys written, without a TTL: {}",
        m["browser_sign_in_bytes"],
        m["browser_sign_in_keys"],
        m["api_sign_in_bytes"],
        m["revoked_jti_bytes"],
        m["revoked_jti_bytes_each_in_a_list"]
            .as_f64()
            .unwrap_or(0.0),
        m["revoked_list_of_100_entries"],
        m["revoked_list_of_100_bytes"],
        m["keys_written"],
        m["keys_without_ttl"]
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("http.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("written: target/bench/http.json");

    drop(load);
    drop_database(&servers, &admin_url, &db_name);
}

/// The same targets as wrk saw them, beside what the in-process load generator saw.
fn print_outside(report: &serde_json::Value, plan: Plan) {
    let rows = report["results"].as_array().unwrap();
    if rows.iter().all(|row| row["outside"].is_null()) {
        println!("wrk is not installed: no figures from outside the process");
        return;
    }
    println!(
        "driven from outside by wrk -t1 -c{} -d{}s (median of the same rounds); disagreement: its ratio to one Redis GET against the in-process one",
        plan.connections,
        plan.duration.as_secs().max(1)
    );
    println!(
        "{:<52} {:>9} {:>8} {:>8} {:>6}  {:>8} {:>8} {:>8} {:>12}",
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "x bare",
        "x GET",
        "x plain",
        "disagreement"
    );
    for row in rows {
        let o = &row["outside"];
        if o.is_null() {
            continue;
        }
        let f = |key: &str| o[key].as_f64().unwrap_or(0.0);
        println!(
            "{:<52} {:>9.0} {:>8.2} {:>8.2} {:>6}  {:>7.2}x {:>7.2}x {:>7.2}x {:>+11.0}%",
            row["name"].as_str().unwrap(),
            f("rps"),
            f("p50_ms"),
            f("p99_ms"),
            o["errors"],
            f("ratio_to_bare"),
            f("ratio_to_redis_get"),
            f("ratio_to_plain_axum_login"),
            f("disagreement") * 100.0
        );
    }
    print_cpu(rows);
    if let Some(asset) = rows
        .iter()
        .find(|row| row["name"] == "lectern: GET static asset")
    {
        println!(
            "static asset: {:.2}x a bare axum handler serving the same bytes (in-process), {:.2}x (wrk)",
            asset["ratio_to_bare_same_bytes"].as_f64().unwrap_or(0.0),
            asset["outside"]["ratio_to_bare_same_bytes"]
                .as_f64()
                .unwrap_or(0.0)
        );
    }
}

/// What each steady target cost in CPU time, as each generator drove it (see [`CpuMeter`]).
fn print_cpu(rows: &[serde_json::Value]) {
    println!(
        "CPU time spent serving a request (server threads, Redis, PostgreSQL); x plain: the plain page's CPU time over this one's"
    );
    println!(
        "{:<52} {:>10} {:>8} {:>10} {:>8} {:>12}",
        "target", "µs inside", "x plain", "µs wrk", "x plain", "disagreement"
    );
    for row in rows {
        let (inside, outside) = (&row["cpu_us_per_request"], &row["outside"]);
        let (Some(inside), false) = (inside.as_f64(), outside.is_null()) else {
            continue;
        };
        let f = |value: &serde_json::Value| value.as_f64().unwrap_or(0.0);
        println!(
            "{:<52} {:>10.1} {:>7.2}x {:>10.1} {:>7.2}x {:>+11.0}%",
            row["name"].as_str().unwrap(),
            inside,
            f(&row["cpu_ratio_to_plain_axum_login"]),
            f(&outside["cpu_us_per_request"]),
            f(&outside["cpu_ratio_to_plain_axum_login"]),
            f(&outside["cpu_disagreement"]) * 100.0
        );
    }
}

/// Drops the run's database.
fn drop_database(servers: &tokio::runtime::Runtime, admin_url: &str, db_name: &str) {
    servers.block_on(async {
        if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "drop database if exists {db_name} with (force)"
            )))
            .execute(&mut admin)
            .await;
        }
    });
}
