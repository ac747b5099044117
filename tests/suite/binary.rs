//! The binary as users run it: started from an empty directory (a service manager, a container,
//! a copied binary), it serves every page with its style sheet, scripts and icon, all embedded.

use axum::http::StatusCode;

use crate::helpers::*;

/// Every `/static/...` address a page links with `href` or `src`.
fn linked_assets(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for marker in ["href=\"/static/", "src=\"/static/"] {
        for (i, _) in html.match_indices(marker) {
            let start = i + marker.len() - "/static/".len();
            let end = start + html[start..].find('"').unwrap();
            out.push(html[start..end].to_owned());
        }
    }
    out
}

#[tokio::test]
async fn started_from_an_empty_directory_the_binary_serves_pages_styles_scripts_and_icon() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningBinary::start(dir.path(), &[]).await;
    for page in ["/", "/login", "/register"] {
        let (status, headers, body) = http_get(&format!("{}{page}", server.base), &[]).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = String::from_utf8(body).unwrap();
        let assets = linked_assets(&html);
        assert_eq!(assets.len(), 4, "{page} links {assets:?}");
        for asset in assets {
            let (status, headers, body) = http_get(&format!("{}{asset}", server.base), &[]).await;
            assert_eq!(status, StatusCode::OK, "{asset}");
            assert!(!body.is_empty(), "{asset}");
            let kind = headers["content-type"].to_str().unwrap().to_owned();
            let expected = match asset.split('?').next().unwrap().rsplit('.').next() {
                Some("css") => "text/css",
                Some("js") => "javascript",
                Some("svg") => "image/svg+xml",
                other => panic!("unexpected asset {other:?}"),
            };
            assert!(kind.contains(expected), "{asset}: {kind}");
            assert!(headers.contains_key("etag"), "{asset}");
            assert_eq!(
                headers["cache-control"], "public, max-age=31536000, immutable",
                "{asset}: a versioned address may be kept for a year"
            );
        }
    }
    // The embedded shape's database is made where the binary was started.
    assert!(dir.path().join("lectern.db").exists());
}

#[tokio::test]
async fn an_unversioned_asset_is_revalidated_by_its_etag() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningBinary::start(dir.path(), &[]).await;
    let url = format!("{}/static/app.js", server.base);
    let (status, headers, _) = http_get(&url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "public, no-cache");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, headers, body) = http_get(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(headers["etag"], etag.as_str());
    let (status, _, _) = http_get(&format!("{}/static/nope.js", server.base), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, headers, _) = http_get(&format!("{}/favicon.ico", server.base), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "image/svg+xml");
    let (status, _, _) = http_get(&format!("{}/static/../Cargo.toml", server.base), &[]).await;
    assert_ne!(status, StatusCode::OK);
}

#[tokio::test]
async fn scripts_and_styles_are_sent_gzipped_to_clients_that_accept_it() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let server = RunningBinary::start(dir.path(), &[]).await;
    let url = format!("{}/static/htmx-2.0.11.min.js", server.base);
    let (status, plain_headers, plain) = http_get(&url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!plain_headers.contains_key("content-encoding"));
    assert_eq!(plain_headers["vary"], "accept-encoding");
    let (status, headers, zipped) =
        http_get(&url, &[("accept-encoding", "gzip, deflate, br")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["vary"], "accept-encoding");
    assert_ne!(
        headers["etag"], plain_headers["etag"],
        "one ETag per representation"
    );
    assert!(zipped.len() < plain.len() / 2);
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
    // Revalidating the gzipped copy by its own ETag.
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, _) = http_get(
        &url,
        &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (_, headers, _) = http_get(&url, &[("accept-encoding", "gzip;q=0")]).await;
    assert!(!headers.contains_key("content-encoding"));
}

#[tokio::test]
async fn the_binary_serves_metrics_on_their_own_address_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningBinary::start(
        dir.path(),
        &[("LECTERN_METRICS_ADDR", "127.0.0.1:0".to_owned())],
    )
    .await;
    let metrics = server.metrics.as_deref().expect("a metrics address");
    assert_ne!(metrics, server.base);
    let (status, headers, body) = http_get(&format!("{metrics}/metrics"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("lectern_live_sign_ins 0"), "{text}");
    let (status, _, _) = http_get(&format!("{}/metrics", server.base), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not on the site's address");
}

/// Logs that go to a file (or the journal) are plain text, without a terminal's colour codes.
#[tokio::test]
async fn logs_written_to_a_file_are_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("lectern.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let env = [("RUST_LOG", "info".to_owned())];
    let server = RunningBinary::start_with_stderr(dir.path(), &env, log).await;
    let (status, _, _) = http_get(&format!("{}/healthz", server.base), &[]).await;
    assert_eq!(status, StatusCode::OK);
    drop(server);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains(" INFO Lectern is listening on http://"),
        "{logs}"
    );
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
}

/// The `name=value` of each `Set-Cookie` with a value (removals skipped).
/// Asserts one step's status, with what came back when it is not the one wanted.
fn assert_step(step: &str, want: StatusCode, got: StatusCode, body: &[u8]) {
    assert_eq!(got, want, "{step}: {}", String::from_utf8_lossy(body));
}

/// A full sign-up, sign-in, refresh, API call and sign-out against the binary logging at `debug`
/// (every crate): none of the secrets it used appears in its logs.
#[tokio::test]
async fn no_secret_reaches_the_logs_even_at_debug() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("lectern.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (database_url, _db_dir) = fresh_database().await;
    let secret = format!("log-test-secret-{}", uuid::Uuid::new_v4().simple());
    let mut env = vec![
        ("RUST_LOG", "debug".to_owned()),
        ("LECTERN_SECRET", secret.clone()),
        ("DATABASE_URL", database_url),
    ];
    if let Ok(redis) = std::env::var("TEST_REDIS_URL") {
        env.push(("REDIS_URL", redis));
        env.push((
            "LECTERN_REDIS_KEY_PREFIX",
            format!("lectern:test:{}:", uuid::Uuid::new_v4().simple()),
        ));
    }
    let server = RunningBinary::start_with_stderr(dir.path(), &env, log).await;
    let base = &server.base;
    let password = format!("Pw {} staple", uuid::Uuid::new_v4().simple());
    let email = unique_email();
    let mut secrets = vec![("LECTERN_SECRET", secret), ("password", password.clone())];
    let form = |pairs: &[(&str, &str)]| {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes()
    };
    let form_type = ("content-type", "application/x-www-form-urlencoded");

    // Sign up through the form.
    let (_, _, home) = http_get(&format!("{base}/"), &[]).await;
    let csrf = csrf_from(&String::from_utf8(home).unwrap());
    secrets.push(("visitor CSRF token", csrf.clone()));
    let (status, headers, body) = http_request(
        "POST",
        &format!("{base}/register"),
        &[form_type],
        form(&[
            ("csrf_token", &csrf),
            ("email", &email),
            ("display_name", "Ada"),
            ("password", &password),
        ]),
    )
    .await;
    assert_step("sign-up", StatusCode::SEE_OTHER, status, &body);
    let first_session = cookie_of(&headers, "lectern_session");

    // Sign in again through the form, with the signed-up browser's cookie.
    let cookie = format!("lectern_session={first_session}");
    let (_, _, page) = http_get(&format!("{base}/"), &[("cookie", &cookie)]).await;
    let csrf = csrf_from(&String::from_utf8(page).unwrap());
    let (status, headers, body) = http_request(
        "POST",
        &format!("{base}/login"),
        &[form_type, ("cookie", &cookie)],
        form(&[
            ("csrf_token", &csrf),
            ("email", &email),
            ("password", &password),
        ]),
    )
    .await;
    assert_step("sign-in", StatusCode::SEE_OTHER, status, &body);
    let session = cookie_of(&headers, "lectern_session");
    let refresh = cookie_of(&headers, "lectern_refresh");
    secrets.extend([
        ("CSRF token", csrf),
        ("first session cookie", first_session),
        ("session cookie", session.clone()),
        ("refresh cookie", refresh.clone()),
    ]);

    // Refresh, then call the API with the access token.
    let (status, headers, body) = http_request(
        "POST",
        &format!("{base}/api/v1/auth/refresh"),
        &[("cookie", &format!("lectern_refresh={refresh}"))],
        Vec::new(),
    )
    .await;
    assert_step("refresh", StatusCode::OK, status, &body);
    let access = access_token_of(&body);
    let refresh = cookie_of(&headers, "lectern_refresh");
    let bearer = format!("Bearer {access}");
    let (status, _, body) =
        http_get(&format!("{base}/api/v1/me"), &[("authorization", &bearer)]).await;
    assert_step("API call", StatusCode::OK, status, &body);
    secrets.extend([
        ("access token", access.clone()),
        ("rotated refresh cookie", refresh.clone()),
    ]);

    // An API client's own sign-in, and its sign-out.
    let (status, headers, body) = http_request(
        "POST",
        &format!("{base}/api/v1/auth/login"),
        &[("content-type", "application/json")],
        serde_json::json!({"email": email, "password": password})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_step("API sign-in", StatusCode::OK, status, &body);
    let api_access = access_token_of(&body);
    let api_refresh = cookie_of(&headers, "lectern_refresh");
    let (status, _, body) = http_request(
        "POST",
        &format!("{base}/api/v1/auth/logout"),
        &[
            ("authorization", &format!("Bearer {api_access}")),
            ("cookie", &format!("lectern_refresh={api_refresh}")),
        ],
        Vec::new(),
    )
    .await;
    assert_step("API sign-out", StatusCode::NO_CONTENT, status, &body);
    secrets.extend([
        ("API access token", api_access),
        ("API refresh cookie", api_refresh),
    ]);

    // The browser signs out the way the htmx button does.
    let cookie = format!("lectern_session={session}");
    let (_, _, page) = http_get(&format!("{base}/dashboard"), &[("cookie", &cookie)]).await;
    let csrf = csrf_from(&String::from_utf8(page).unwrap());
    let (status, _, body) = http_request(
        "POST",
        &format!("{base}/logout"),
        &[
            ("cookie", &cookie),
            ("hx-request", "true"),
            ("x-csrf-token", &csrf),
        ],
        Vec::new(),
    )
    .await;
    assert_step("htmx sign-out", StatusCode::OK, status, &body);
    let (status, _, body) =
        http_get(&format!("{base}/api/v1/me"), &[("authorization", &bearer)]).await;
    assert_step("signed out", StatusCode::UNAUTHORIZED, status, &body);
    secrets.push(("dashboard CSRF token", csrf));

    drop(server);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.lines().count() > 20 && logs.contains("DEBUG"),
        "the binary logged at debug: {logs}"
    );
    for (name, secret) in &secrets {
        // As sent, as a form or a URL would encode it, and any 16 characters of it (a JWT's
        // signature, a cookie's value without its signature).
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let mut pieces = vec![secret.clone(), encoded];
        let chars: Vec<char> = secret.chars().collect();
        pieces.extend(
            chars
                .windows(16)
                .step_by(4)
                .map(|w| w.iter().collect::<String>()),
        );
        for piece in &pieces {
            if let Some(line) = logs.lines().find(|l| l.contains(piece.as_str())) {
                // The line up to the secret: which event, and none of the secret.
                let before = &line[..line.find(piece.as_str()).unwrap_or(0)];
                panic!(
                    "{} characters of the {name} are in the log line: {before}<secret…>",
                    piece.len()
                );
            }
        }
    }
    // The password's words are not in any log line either (as a field a logger might split).
    assert!(!logs.contains(password.split(' ').nth(1).unwrap()));
}

/// The production start before its PostgreSQL database exists: the binary creates it (as
/// `createdb` would) and serves, instead of stopping with the server's error.
#[tokio::test]
async fn on_postgresql_the_binary_creates_its_database_when_it_is_missing() {
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        skipped("needs TEST_DATABASE_URL");
        return;
    };
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("lectern_test_{}", uuid::Uuid::new_v4().simple()));
    let dir = tempfile::tempdir().unwrap();
    let server = RunningBinary::start(dir.path(), &[("DATABASE_URL", url.to_string())]).await;
    let (status, _, body) = http_get(&format!("{}/readyz", server.base), &[]).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

/// The production recipe starts two instances at once before the database exists: both create
/// it at the same moment, and both serve (PostgreSQL reports the loser's attempt as a unique
/// violation in its catalog, not as "already exists").
#[tokio::test]
async fn two_instances_creating_a_missing_database_at_once_both_start() {
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        skipped("needs TEST_DATABASE_URL");
        return;
    };
    for _ in 0..5 {
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&format!("lectern_test_{}", uuid::Uuid::new_v4().simple()));
        let url = url.to_string();
        let (first, second) = tokio::join!(lectern::db::connect(&url), lectern::db::connect(&url));
        assert!(first.is_ok(), "{:?}", first.err());
        assert!(second.is_ok(), "{:?}", second.err());
    }
}
