//! The operators' tools: the `lectern` command line and the metrics.

use axum::http::StatusCode;
use serde_json::Value;

use crate::{
    account::learner_signed_in_three_times, helpers::*, logout::assert_everything_refused,
};

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

/// Runs the built binary's `sessions` commands against this app's database and Redis.
fn sessions_cli(app: &TestApp, args: &[&str], redis_url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
        .arg("sessions")
        .args(args)
        .env_clear()
        .env("DATABASE_URL", &app.database_url)
        .env("REDIS_URL", redis_url)
        .env("LECTERN_REDIS_KEY_PREFIX", &app.key_prefix)
        .output()
        .unwrap()
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A failure: a non-zero exit and one line that says why.
fn assert_fails_with_one_line(output: &std::process::Output, says: &str) {
    assert!(!output.status.success(), "{output:?}");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(says), "{err}");
}

#[tokio::test]
async fn operators_list_show_and_revoke_sign_ins_from_the_command_line() {
    let app = spawn_app().await;
    let Ok(redis_url) = std::env::var("TEST_REDIS_URL") else {
        // The embedded shape keeps sign-ins in one server's memory: the command says so.
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
            .args(["sessions", "list"])
            .env_clear()
            .env("DATABASE_URL", &app.database_url)
            .output()
            .unwrap();
        assert_fails_with_one_line(&output, "REDIS_URL");
        return;
    };
    let learner = learner_signed_in_three_times(&app).await;
    let listed = sessions_cli(
        &app,
        &["list", "--user", &learner.email, "--json"],
        &redis_url,
    );
    assert!(listed.status.success(), "{listed:?}");
    let rows: Vec<Value> = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        for field in [
            "id",
            "email",
            "created_at",
            "last_seen_at",
            "ip",
            "device",
            "browser",
        ] {
            assert!(row[field].is_string(), "{field} in {row}");
        }
        assert_eq!(row["email"], learner.email.as_str());
    }
    let everyone = sessions_cli(&app, &["list"], &redis_url);
    assert!(everyone.status.success());
    assert!(stdout(&everyone).contains(&learner.email));

    let elsewhere = app.sid_of(&learner.elsewhere.access[0]);
    let shown = sessions_cli(&app, &["show", &elsewhere], &redis_url);
    assert!(shown.status.success(), "{shown:?}");
    assert!(
        stdout(&shown).contains("live") && stdout(&shown).contains("Firefox 128"),
        "{shown:?}"
    );

    // Ending one: its credentials are refused, on a second instance too; the others work.
    let revoked = sessions_cli(&app, &["revoke", &elsewhere], &redis_url);
    assert!(revoked.status.success(), "{revoked:?}");
    assert_everything_refused(&app, &learner.elsewhere).await;
    let peer = spawn_peer(&app).await;
    assert_eq!(
        peer.me(&learner.elsewhere.access[0]).await.status_code(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.me(&learner.api.0).await.status_code(), StatusCode::OK);
    assert_eq!(
        app.server.get("/dashboard").await.status_code(),
        StatusCode::OK
    );
    let shown = sessions_cli(&app, &["show", &elsewhere, "--json"], &redis_url);
    let shown: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(shown["status"], "ended (revoked)");

    // Ending all of a learner's: this browser lands on the login page saying why.
    let all = sessions_cli(&app, &["revoke", "--user", &learner.email], &redis_url);
    assert!(all.status.success(), "{all:?}");
    app.assert_api_credentials_refused(&learner.api.0, &learner.api.1)
        .await;
    let page = app.server.get("/dashboard").await;
    assert!(
        page.header("location")
            .to_str()
            .unwrap()
            .ends_with("reason=revoked"),
        "{:?}",
        page.header("location")
    );
    let listed = sessions_cli(
        &app,
        &["list", "--user", &learner.email, "--json"],
        &redis_url,
    );
    assert_eq!(stdout(&listed).trim(), "[]");

    // Unknown id or email, or a store that is down: one line and a non-zero exit.
    assert_fails_with_one_line(
        &sessions_cli(&app, &["show", "AAAAAAAAAAAAAAAAAAAAAA"], &redis_url),
        "no sign-in with id",
    );
    assert_fails_with_one_line(
        &sessions_cli(&app, &["revoke", "nope"], &redis_url),
        "no sign-in with id",
    );
    // A mistyped option where the id goes is refused, not looked up.
    assert_fails_with_one_line(
        &sessions_cli(&app, &["show", "--jsn"], &redis_url),
        "neither an option of this command nor a sign-in id",
    );
    assert_fails_with_one_line(
        &sessions_cli(
            &app,
            &["revoke", "--user", "nobody@example.com"],
            &redis_url,
        ),
        "no account with email",
    );
    assert_fails_with_one_line(
        &sessions_cli(&app, &["list"], "redis://127.0.0.1:1"),
        "Redis",
    );
}

/// The value of one sample line of a Prometheus text page (0 when absent).
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_sign_ins_sign_outs_failures_reuse_and_live_sign_ins() {
    let app = spawn_app_with(|s| s.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics = axum_test::TestServer::builder()
        .build(lectern::pages::health::metrics_router().with_state(app.state.clone()));
    let scrape = || async {
        let r = metrics.get("/metrics").await;
        assert_eq!(r.status_code(), StatusCode::OK);
        assert!(
            r.header("content-type")
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        r.text()
    };
    // Not on the site's own address.
    assert_eq!(
        app.server.get("/metrics").await.status_code(),
        StatusCode::NOT_FOUND
    );
    let before = scrape().await;
    let email = app.signed_up().await;
    let (token, refresh) = app.api_login(&email).await;
    assert_eq!(app.me(&token).await.status_code(), StatusCode::OK);
    let wrong = app
        .server
        .post("/api/v1/auth/login")
        .clear_cookies()
        .json(&serde_json::json!({"email": email, "password": "wrong password here"}))
        .await;
    assert_eq!(wrong.status_code(), StatusCode::UNAUTHORIZED);
    // Wrong passwords for one account from one address, past its limit (a fifth of 30).
    for _ in 0..7 {
        app.server
            .post("/api/v1/auth/login")
            .clear_cookies()
            .do_not_save_cookies()
            .json(&serde_json::json!({"email": email, "password": "not the password"}))
            .await;
    }
    let first = app.refresh_with(&refresh).await;
    assert_eq!(first.status_code(), StatusCode::OK);
    app.advance(60);
    assert_eq!(
        app.refresh_with(&refresh).await.status_code(),
        StatusCode::UNAUTHORIZED
    );
    let after = scrape().await;
    // This app's sign-ins are the only ones in its database: one browser sign-in is live.
    assert_eq!(sample(&after, "lectern_live_sign_ins"), 1.0, "{after}");
    for (series, grew_by) in [
        ("lectern_sign_ins_total{kind=\"browser\"}", 1.0),
        ("lectern_sign_ins_total{kind=\"api\"}", 1.0),
        ("lectern_failed_sign_ins_total", 6.0),
        ("lectern_rate_limited_total{limit=\"account\"}", 1.0),
        ("lectern_refresh_reuse_detected_total", 1.0),
        (
            "lectern_sign_ins_ended_total{reason=\"refresh_reuse\"}",
            1.0,
        ),
    ] {
        assert!(
            sample(&after, series) >= sample(&before, series) + grew_by,
            "{series}: {after}"
        );
    }
    assert!(
        after.contains("lectern_revocation_check_seconds_bucket"),
        "{after}"
    );
    let out = app.sign_out_htmx().await;
    assert_eq!(out.status_code(), StatusCode::OK);
    let last = scrape().await;
    let series = "lectern_sign_outs_total{scope=\"local\",reason=\"signed_out\"}";
    assert!(
        sample(&last, series) >= sample(&after, series) + 1.0,
        "{last}"
    );
    assert_eq!(sample(&last, "lectern_live_sign_ins"), 0.0);
}
