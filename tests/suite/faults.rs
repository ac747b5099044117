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
        skipped("needs TEST_DATABASE_URL and TEST_REDIS_URL");
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
        skipped("needs TEST_DATABASE_URL and TEST_REDIS_URL");
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
        skipped("needs TEST_DATABASE_URL and TEST_REDIS_URL");
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

/// A Redis of the test's own that keeps what `SAVE` writes in `dir`, and can be killed (`-9`)
/// and started again on it, as a crashed Redis is restarted from its last snapshot.
struct SnapshotRedis {
    server: std::path::PathBuf,
    dir: tempfile::TempDir,
    node: Option<PrivateRedis>,
    port: u16,
}

impl SnapshotRedis {
    async fn start() -> Option<Self> {
        let server = find_on_path("redis-server")?;
        let mut redis = Self {
            server,
            dir: tempfile::tempdir().unwrap(),
            node: None,
            port: free_port(),
        };
        redis.run().await;
        Some(redis)
    }

    async fn run(&mut self) {
        let child = std::process::Command::new(&self.server)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.node = Some(PrivateRedis {
            child,
            port: self.port,
        });
        wait_for_port(self.port).await;
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `kill -9`, then a start on the same directory: it loads the last snapshot.
    async fn crash_and_restart(&mut self) {
        drop(self.node.take());
        self.run().await;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// Two instances of the binary on one Redis and one PostgreSQL database, as in production.
struct TwoInstances {
    servers: [RunningBinary; 2],
    _dirs: Vec<tempfile::TempDir>,
}

impl TwoInstances {
    async fn start(redis_url: &str) -> Self {
        let (database_url, db_dir) = fresh_database().await;
        let env = vec![
            ("DATABASE_URL", database_url),
            ("REDIS_URL", redis_url.to_owned()),
            ("LECTERN_SECRET", TEST_SECRET.to_owned()),
            ("LECTERN_SECURE_COOKIES", "false".to_owned()),
            ("LECTERN_RATE_LIMIT", "0".to_owned()),
        ];
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let servers = [
            RunningBinary::start(one.path(), &env).await,
            RunningBinary::start(two.path(), &env).await,
        ];
        let mut dirs = vec![one, two];
        dirs.extend(db_dir);
        Self {
            servers,
            _dirs: dirs,
        }
    }

    /// Until both say they are ready (Redis answers again).
    async fn ready(&self) {
        for server in &self.servers {
            let url = format!("{}/readyz", server.base);
            for _ in 0..200 {
                if http_get(&url, &[]).await.0 == StatusCode::OK {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Everything a learner signed in with, by browser and by API.
struct Credentials {
    session: String,
    access: String,
    refresh: String,
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes()
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// Signs up through the form and signs in through the API, on the instance at `base`.
async fn sign_in_both_ways(base: &str) -> Credentials {
    let email = unique_email();
    let (_, _, home) = http_get(&format!("{base}/"), &[]).await;
    let csrf = csrf_from(&String::from_utf8(home).unwrap());
    let fields = [
        ("csrf_token", csrf.as_str()),
        ("email", email.as_str()),
        ("display_name", "Ada"),
        ("password", PASSWORD),
    ];
    let (status, headers, _) =
        http_request("POST", &format!("{base}/register"), &[FORM], form(&fields)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = cookie_of(&headers, "lectern_session");
    let body = serde_json::json!({"email": email, "password": PASSWORD}).to_string();
    let (status, headers, body) = http_request(
        "POST",
        &format!("{base}/api/v1/auth/login"),
        &[("content-type", "application/json")],
        body.into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    Credentials {
        session,
        access: access_token_of(&body),
        refresh: cookie_of(&headers, "lectern_refresh"),
    }
}

/// Signs the browser out everywhere, on the instance at `base`.
async fn sign_out_everywhere(base: &str, old: &Credentials) {
    let cookie = format!("lectern_session={}", old.session);
    let (_, _, page) = http_get(&format!("{base}/dashboard"), &[("cookie", &cookie)]).await;
    let csrf = csrf_from(&String::from_utf8(page).unwrap());
    let fields = [("csrf_token", csrf.as_str()), ("scope", "global")];
    let (status, _, _) = http_request(
        "POST",
        &format!("{base}/logout"),
        &[FORM, ("cookie", &cookie)],
        form(&fields),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

/// Every old credential tried on every instance: the ones accepted, by name.
async fn accepted(instances: &TwoInstances, old: &Credentials) -> Vec<String> {
    let mut accepted = Vec::new();
    for (n, server) in instances.servers.iter().enumerate() {
        let base = &server.base;
        let cookie = format!("lectern_session={}", old.session);
        let page = http_get(&format!("{base}/dashboard"), &[("cookie", &cookie)]).await;
        if page.0 == StatusCode::OK {
            accepted.push(format!("session cookie on instance {n}"));
        }
        let bearer = format!("Bearer {}", old.access);
        let me = http_get(&format!("{base}/api/v1/me"), &[("authorization", &bearer)]).await;
        if me.0 == StatusCode::OK {
            accepted.push(format!("access token on instance {n}"));
        }
        let refresh = format!("lectern_refresh={}", old.refresh);
        let (status, _, _) = http_request(
            "POST",
            &format!("{base}/api/v1/auth/refresh"),
            &[("cookie", &refresh)],
            Vec::new(),
        )
        .await;
        if status == StatusCode::OK {
            accepted.push(format!("refresh cookie on instance {n}"));
        }
    }
    accepted
}

/// The sign-in an access token names (its `sid` claim, read without the key).
fn sid_in(access: &str) -> String {
    use base64::Engine;
    let payload = access.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

/// Redis keeps snapshots (`SAVE`); one is taken while the learner is signed in; the learner
/// signs out everywhere; Redis crashes and comes back from that snapshot, which still holds the
/// sign-ins live. Neither instance accepts any old credential, and Redis itself is put right.
#[tokio::test]
async fn a_redis_restarted_from_a_snapshot_taken_before_a_sign_out_brings_nothing_back() {
    if !real_services() {
        skipped("needs TEST_DATABASE_URL and TEST_REDIS_URL");
        return;
    }
    let mut redis = SnapshotRedis::start().await.expect("redis-server");
    let instances = TwoInstances::start(&redis.url()).await;
    let (first, second) = (&instances.servers[0].base, &instances.servers[1].base);
    let old = sign_in_both_ways(first).await;
    assert_eq!(redis.cli(&["SAVE"]), "OK");
    sign_out_everywhere(second, &old).await;
    assert!(accepted(&instances, &old).await.is_empty());
    // Every instance learns an ending from the database within a second of it.
    tokio::time::sleep(auth_ledger_poll() * 3 / 2).await;
    redis.crash_and_restart().await;
    let live = format!("lectern:{{{}}}:live", sid_in(&old.access));
    assert_eq!(
        redis.cli(&["EXISTS", &live]),
        "1",
        "the snapshot brought it back"
    );
    instances.ready().await;
    assert_eq!(accepted(&instances, &old).await, Vec::<String>::new());
    let mut repaired = false;
    for _ in 0..50 {
        if redis.cli(&["EXISTS", &live]) == "0" {
            repaired = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(repaired, "the ending was replayed into Redis");
    // A learner who signs in now is served as before.
    let fresh = sign_in_both_ways(first).await;
    let bearer = format!("Bearer {}", fresh.access);
    let me = http_get(
        &format!("{second}/api/v1/me"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(me.0, StatusCode::OK);
}

/// Redis flushed after a sign-out: nothing of the learner is accepted, and new sign-ins work.
#[tokio::test]
async fn a_redis_flushed_after_a_sign_out_brings_nothing_back() {
    if !real_services() {
        skipped("needs TEST_DATABASE_URL and TEST_REDIS_URL");
        return;
    }
    let redis = SnapshotRedis::start().await.expect("redis-server");
    let instances = TwoInstances::start(&redis.url()).await;
    let (first, second) = (&instances.servers[0].base, &instances.servers[1].base);
    let old = sign_in_both_ways(first).await;
    sign_out_everywhere(first, &old).await;
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    assert_eq!(accepted(&instances, &old).await, Vec::<String>::new());
    let fresh = sign_in_both_ways(second).await;
    let bearer = format!("Bearer {}", fresh.access);
    let me = http_get(&format!("{first}/api/v1/me"), &[("authorization", &bearer)]).await;
    assert_eq!(me.0, StatusCode::OK);
}

/// Redis's mark of the endings it holds moves with every sign-out, so an ending after a quiet
/// hour is not taken for one Redis lost: nothing is replayed.
#[tokio::test]
async fn an_ending_after_a_quiet_while_is_not_taken_for_a_lost_one() {
    let app = spawn_app().await;
    for _ in 0..2 {
        app.signed_up().await;
        assert_eq!(app.sign_out_htmx().await.status_code(), StatusCode::OK);
        assert_eq!(app.state.ledger.catch_up().await.unwrap(), 0, "replayed");
        app.advance(3600);
    }
}

fn auth_ledger_poll() -> std::time::Duration {
    lectern::auth::ledger::POLL
}
