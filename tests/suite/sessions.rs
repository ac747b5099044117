//! Sessions a learner can see and end, the password change, timeouts with reasons, and the
//! operators' tools. Every ending is checked the same way: each credential of the ended sign-in
//! is tried and refused, and each of the others still works.

use axum::http::StatusCode;
use cookie::Cookie;
use serde_json::Value;

use crate::{
    helpers::*,
    logout::{SignedIn, assert_everything_refused, browser_with_two_sign_ins},
};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

/// Posts the form at `path` (`/login` or `/register`) from a browser of its own (its own cookies
/// and user agent) and returns every credential the sign-in hands out, with an access token
/// obtained through its refresh cookie.
async fn new_browser_signs_in(
    app: &TestApp,
    path: &str,
    fields: &[(&str, &str)],
    user_agent: &str,
) -> SignedIn {
    let token = csrf_from(&app.server.get(path).clear_cookies().await.text());
    let mut form = vec![("csrf_token", token.as_str())];
    form.extend_from_slice(fields);
    let response = app
        .server
        .post(path)
        .clear_cookies()
        .do_not_save_cookies()
        .add_header("User-Agent", user_agent)
        .form(&form)
        .await;
    assert_eq!(response.status_code(), StatusCode::SEE_OTHER);
    let (access, refresh) = app.access_via(&response.cookie("lectern_refresh")).await;
    SignedIn {
        session: response.cookie("lectern_session"),
        refresh,
        access: vec![access],
    }
}

async fn browser_sign_in(app: &TestApp, email: &str, user_agent: &str) -> SignedIn {
    let fields = [("email", email), ("password", PASSWORD)];
    new_browser_signs_in(app, "/login", &fields, user_agent).await
}

/// Asserts that a sign-in's credentials all still work.
async fn assert_still_works(app: &TestApp, signed_in: &SignedIn) {
    let page = app.get_with_session("/dashboard", &signed_in.session).await;
    assert_eq!(page.status_code(), StatusCode::OK, "session cookie");
    for token in &signed_in.access {
        assert_eq!(app.me(token).await.status_code(), StatusCode::OK, "token");
    }
}

/// The ids of the sign-in rows of the account page, in order.
fn row_ids(html: &str) -> Vec<String> {
    html.match_indices("data-sign-in=\"")
        .map(|(i, m)| {
            let start = i + m.len();
            html[start..start + html[start..].find('"').unwrap()].to_owned()
        })
        .collect()
}

async fn account_html(app: &TestApp) -> String {
    let page = app.server.get("/account").await;
    assert_eq!(page.status_code(), StatusCode::OK);
    page.text()
}

/// This (the test server's) browser signed up, plus a second browser and an API client of the
/// same learner.
struct Learner {
    email: String,
    elsewhere: SignedIn,
    api: (String, Cookie<'static>),
}

async fn learner_signed_in_three_times(app: &TestApp) -> Learner {
    let email = app.signed_up().await;
    let elsewhere = browser_sign_in(app, &email, FIREFOX).await;
    let api = app.api_login(&email).await;
    Learner {
        email,
        elsewhere,
        api,
    }
}

#[tokio::test]
async fn the_account_page_lists_each_live_sign_in_in_words_and_marks_this_browser() {
    let app = spawn_app().await;
    let learner = learner_signed_in_three_times(&app).await;
    let phone = browser_sign_in(&app, &learner.email, IPHONE).await;
    let html = account_html(&app).await;
    assert_eq!(row_ids(&html).len(), 4, "{html}");
    assert!(
        html.contains("Linux computer") && html.contains("Firefox 128"),
        "{html}"
    );
    assert!(
        html.contains("iPhone phone") && html.contains("Safari"),
        "{html}"
    );
    assert_eq!(html.matches("This browser").count(), 1);
    assert!(html.contains("Sign out everywhere else") && html.contains("Sign out everywhere"));
    // An ended one (signed out) and a lost one (its live marker gone) are not listed.
    let out = app
        .api_logout(Some(&phone.access[0]), Some(&phone.refresh))
        .await;
    assert_eq!(out.status_code(), StatusCode::NO_CONTENT);
    let api_sid = app.sid_of(&learner.api.0);
    let html = account_html(&app).await;
    let rows = row_ids(&html);
    assert_eq!(rows.len(), 3, "{html}");
    assert!(rows.contains(&api_sid));
    // Only this browser is active: after the idle timeout the other browser and the API client
    // (which stopped refreshing) are no longer listed.
    app.advance(20 * 60);
    account_html(&app).await;
    app.advance(11 * 60);
    let html = account_html(&app).await;
    assert_eq!(row_ids(&html).len(), 1, "{html}");
    assert!(html.contains("This browser"));
}

#[tokio::test]
async fn last_active_is_recorded_at_most_once_a_minute_and_listed() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (token, _) = app.api_login(&email).await;
    let list = |token: String| {
        let app = &app;
        async move {
            let r = app
                .server
                .get("/api/v1/me/sessions")
                .authorization_bearer(&token)
                .await;
            assert_eq!(r.status_code(), StatusCode::OK, "{}", r.text());
            r.json::<Vec<Value>>()
        }
    };
    let browser_sid = {
        let rows = list(token.clone()).await;
        assert_eq!(rows.len(), 2);
        rows.iter().find(|r| r["current"] == false).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let seen = |rows: &[Value]| {
        rows.iter()
            .find(|r| r["id"] == browser_sid.as_str())
            .unwrap()["last_seen_at"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = seen(&list(token.clone()).await);
    app.advance(20);
    app.server.get("/dashboard").await;
    assert_eq!(
        seen(&list(token.clone()).await),
        before,
        "not a write per request"
    );
    app.advance(61);
    app.server.get("/dashboard").await;
    let after = seen(&list(token.clone()).await);
    assert_ne!(after, before, "recorded after a minute");
    let row = app.sign_in_row(&browser_sid).await;
    assert_eq!(row.last_seen_at, Some(app.clock.now()));
}

#[tokio::test]
async fn ending_one_sign_in_from_the_account_page_refuses_its_credentials_and_keeps_the_rest() {
    let app = spawn_app().await;
    let learner = learner_signed_in_three_times(&app).await;
    let elsewhere_sid = app.sid_of(&learner.elsewhere.access[0]);
    let token = app.csrf("/account").await;
    let response = app
        .server
        .post(&format!("/account/sessions/{elsewhere_sid}/end"))
        .form(&[("csrf_token", token.as_str())])
        .await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/account");
    assert_everything_refused(&app, &learner.elsewhere).await;
    let page = app
        .get_with_session("/dashboard", &learner.elsewhere.session)
        .await;
    assert!(
        page.header("location")
            .to_str()
            .unwrap()
            .ends_with("reason=revoked"),
        "the other browser is told why"
    );
    // This browser and the API client are untouched.
    assert_eq!(
        app.server.get("/dashboard").await.status_code(),
        StatusCode::OK
    );
    assert_eq!(app.me(&learner.api.0).await.status_code(), StatusCode::OK);
    assert_eq!(
        app.refresh_with(&learner.api.1).await.status_code(),
        StatusCode::OK
    );
    assert!(!row_ids(&account_html(&app).await).contains(&elsewhere_sid));

    // htmx: the row goes (an empty 200), and the API client's sign-in ends.
    let api_sid = app.sid_of(&learner.api.0);
    let response = app
        .server
        .post(&format!("/account/sessions/{api_sid}/end"))
        .add_header("HX-Request", "true")
        .add_header("X-CSRF-Token", token.as_str())
        .await;
    assert_eq!(response.status_code(), StatusCode::OK);
    assert!(response.text().is_empty());
    assert_eq!(
        app.me(&learner.api.0).await.status_code(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.server.get("/dashboard").await.status_code(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn ending_a_sign_in_that_is_not_the_learners_is_404_and_ends_nothing() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let mine = app.api_login(&email).await;
    let stranger_email = unique_email();
    let token = app.csrf("/account").await;
    // Another learner, signed up from a browser of their own.
    let fields = [
        ("email", stranger_email.as_str()),
        ("display_name", "Stranger"),
        ("password", PASSWORD),
    ];
    let stranger = new_browser_signs_in(&app, "/register", &fields, FIREFOX).await;
    let theirs = app.sid_of(&stranger.access[0]);
    for id in [
        theirs.as_str(),
        "AAAAAAAAAAAAAAAAAAAAAA",
        "not-an-id",
        "%7B%7D",
    ] {
        let response = app
            .server
            .post(&format!("/account/sessions/{id}/end"))
            .form(&[("csrf_token", token.as_str())])
            .await;
        assert_eq!(response.status_code(), StatusCode::NOT_FOUND, "{id}");
        assert_client_error_page(&response);
        let api = app
            .server
            .delete(&format!("/api/v1/me/sessions/{id}"))
            .authorization_bearer(&mine.0)
            .await;
        assert_eq!(api.status_code(), StatusCode::NOT_FOUND, "{id}");
        assert_eq!(api.header("content-type"), "application/json");
    }
    assert_still_works(&app, &stranger).await;
    assert_eq!(
        app.refresh_with(&stranger.refresh).await.status_code(),
        StatusCode::OK
    );
    // Without the CSRF token nothing ends either.
    let mine_sid = app.sid_of(&mine.0);
    let response = app
        .server
        .post(&format!("/account/sessions/{mine_sid}/end"))
        .await;
    assert_eq!(response.status_code(), StatusCode::FORBIDDEN);
    assert_eq!(app.me(&mine.0).await.status_code(), StatusCode::OK);
}

#[tokio::test]
async fn the_api_lists_live_sign_ins_and_ends_one_by_id() {
    let app = spawn_app().await;
    let learner = learner_signed_in_three_times(&app).await;
    let (token, refresh) = &learner.api;
    let response = app
        .server
        .get("/api/v1/me/sessions")
        .authorization_bearer(token)
        .await;
    assert_eq!(response.status_code(), StatusCode::OK);
    assert_eq!(response.header("cache-control"), "no-store");
    let rows: Vec<Value> = response.json();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let current: Vec<&Value> = rows.iter().filter(|r| r["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], app.sid_of(token).as_str());
    for row in &rows {
        for field in [
            "id",
            "created_at",
            "last_seen_at",
            "ip",
            "device",
            "browser",
        ] {
            assert!(row[field].is_string(), "{field} in {row}");
        }
        let created = row["created_at"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{created}"
        );
    }
    assert!(rows.iter().any(|r| r["browser"] == "Firefox 128"));

    let elsewhere_sid = app.sid_of(&learner.elsewhere.access[0]);
    let response = app
        .server
        .delete(&format!("/api/v1/me/sessions/{elsewhere_sid}"))
        .authorization_bearer(token)
        .await;
    assert_eq!(response.status_code(), StatusCode::NO_CONTENT);
    assert!(
        set_cookies(&response).is_empty(),
        "the caller keeps its cookies"
    );
    assert_everything_refused(&app, &learner.elsewhere).await;
    assert_eq!(
        app.server.get("/dashboard").await.status_code(),
        StatusCode::OK
    );

    // Its own id: a sign-out of the caller.
    let own = app.sid_of(token);
    let response = app
        .server
        .delete(&format!("/api/v1/me/sessions/{own}"))
        .authorization_bearer(token)
        .await;
    assert_eq!(response.status_code(), StatusCode::NO_CONTENT);
    app.assert_api_credentials_refused(token, refresh).await;
    assert_eq!(
        app.server.get("/dashboard").await.status_code(),
        StatusCode::OK
    );
}

async fn change_password(app: &TestApp, current: &str, new: &str) -> axum_test::TestResponse {
    let token = app.csrf("/account").await;
    app.server
        .post("/account/password")
        .form(&[
            ("csrf_token", token.as_str()),
            ("current_password", current),
            ("new_password", new),
        ])
        .await
}

const NEW_PASSWORD: &str = "a brand new passphrase for lectern";

#[tokio::test]
async fn changing_the_password_ends_every_other_sign_in_and_keeps_this_browser_under_a_new_session()
{
    let app = spawn_app().await;
    let learner = learner_signed_in_three_times(&app).await;
    // This browser signs in again, so the test holds each of its credentials.
    let login = app.sign_in(&learner.email, PASSWORD, "").await;
    let (my_access, my_refresh) = app.access_via(&login.cookie("lectern_refresh")).await;
    let mine = SignedIn {
        session: login.cookie("lectern_session"),
        refresh: my_refresh,
        access: vec![my_access],
    };

    let response = change_password(&app, PASSWORD, NEW_PASSWORD).await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/account");
    assert_eq!(response.header("cache-control"), "no-store");
    let new_session = response.cookie("lectern_session");
    assert_ne!(
        new_session.value(),
        mine.session.value(),
        "a new session id"
    );
    assert!(
        !response.cookie("lectern_refresh").value().is_empty(),
        "a new refresh cookie"
    );

    // Everything of every earlier sign-in is refused, this browser's old credentials included.
    assert_everything_refused(&app, &learner.elsewhere).await;
    app.assert_api_credentials_refused(&learner.api.0, &learner.api.1)
        .await;
    assert_everything_refused(&app, &mine).await;
    let page = app
        .get_with_session("/dashboard", &learner.elsewhere.session)
        .await;
    assert!(
        page.header("location")
            .to_str()
            .unwrap()
            .ends_with("reason=password_changed"),
        "the other browser is told why: {:?}",
        page.header("location")
    );
    let login = app
        .server
        .get("/login?reason=password_changed")
        .clear_cookies()
        .do_not_save_cookies()
        .await
        .text();
    assert!(login.contains("Your password was changed"), "{login}");

    // This browser stays signed in, and says so.
    let html = app.get_with_session("/account", &new_session).await.text();
    assert!(html.contains("Your password was changed."), "{html}");
    assert_eq!(row_ids(&html).len(), 1, "{html}");
    let again = app.get_with_session("/account", &new_session).await.text();
    assert!(
        !again.contains("Your password was changed."),
        "the notice is shown once"
    );
    let page = app.get_with_session("/dashboard", &new_session).await;
    assert_eq!(page.status_code(), StatusCode::OK);

    // The new password signs in; the old one no longer does.
    for (password, status) in [
        (NEW_PASSWORD, StatusCode::OK),
        (PASSWORD, StatusCode::UNAUTHORIZED),
    ] {
        let api = app
            .server
            .post("/api/v1/auth/login")
            .clear_cookies()
            .do_not_save_cookies()
            .json(&serde_json::json!({"email": learner.email, "password": password}))
            .await;
        assert_eq!(api.status_code(), status);
    }
}

#[tokio::test]
async fn a_wrong_current_password_or_a_weak_new_one_is_refused_beside_the_field_and_ends_nothing() {
    let app = spawn_app().await;
    let learner = learner_signed_in_three_times(&app).await;
    let wrong = change_password(&app, "not my password at all", NEW_PASSWORD).await;
    assert_eq!(wrong.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong.header("cache-control"), "no-store");
    let html = wrong.text();
    assert!(html.contains("id=\"current-password-error\""), "{html}");
    assert!(!html.contains("id=\"new-password-error\""));
    let weak = change_password(&app, PASSWORD, "short").await;
    assert_eq!(weak.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = weak.text();
    assert!(html.contains("id=\"new-password-error\""), "{html}");
    assert!(!html.contains("id=\"current-password-error\""));
    assert_still_works(&app, &learner.elsewhere).await;
    assert_eq!(app.me(&learner.api.0).await.status_code(), StatusCode::OK);
    assert_eq!(
        app.server.get("/dashboard").await.status_code(),
        StatusCode::OK
    );
    // The password is unchanged.
    let (token, _) = app.api_login(&learner.email).await;
    assert_eq!(app.me(&token).await.status_code(), StatusCode::OK);
}

#[tokio::test]
async fn an_api_sign_in_idles_out_without_refreshes_and_each_refresh_keeps_it_alive() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (_, mut refresh) = app.api_login(&email).await;
    for _ in 0..4 {
        app.advance(20 * 60);
        let (_, next) = app.access_via(&refresh).await;
        refresh = next;
    }
    let (token, next) = app.access_via(&refresh).await;
    app.advance(31 * 60);
    app.assert_api_credentials_refused(&token, &next).await;
}

#[tokio::test]
async fn a_sign_in_ended_for_its_lifetime_refuses_every_credential_and_the_login_page_says_expired()
{
    let app = spawn_app_with(|s| {
        s.session_absolute = std::time::Duration::from_secs(3600);
        s.session_idle = std::time::Duration::from_secs(3600);
    })
    .await;
    let email = app.signed_up().await;
    let other = browser_sign_in(&app, &email, FIREFOX).await;
    app.advance(1800);
    let later = browser_sign_in(&app, &email, IPHONE).await;
    app.advance(1801);
    assert_everything_refused(&app, &other).await;
    // A sign-in made later has its own lifetime and still works.
    let (token, _) = app.access_via(&later.refresh).await;
    assert_eq!(app.me(&token).await.status_code(), StatusCode::OK);
    let page = app.get_with_session("/dashboard", &later.session).await;
    assert_eq!(page.status_code(), StatusCode::OK);
    let page = app.get_with_session("/dashboard", &other.session).await;
    let location = page.header("location").to_str().unwrap().to_owned();
    assert!(location.ends_with("reason=expired"), "{location}");
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

#[tokio::test]
async fn ending_a_browser_from_elsewhere_ends_every_sign_in_that_browser_holds() {
    let app = spawn_app().await;
    // This browser: a form sign-in and a script's API sign-in bound to it.
    let (form, api) = browser_with_two_sign_ins(&app).await;
    let email = app.me(&form.access[0]).await.json::<Value>()["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let (phone_token, _) = app.api_login(&email).await;
    let form_sid = app.sid_of(&form.access[0]);
    let response = app
        .server
        .delete(&format!("/api/v1/me/sessions/{form_sid}"))
        .authorization_bearer(&phone_token)
        .await;
    assert_eq!(response.status_code(), StatusCode::NO_CONTENT);
    assert_everything_refused(&app, &form).await;
    assert_eq!(
        app.me(&api.access[0]).await.status_code(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh_with(&api.refresh).await.status_code(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.me(&phone_token).await.status_code(), StatusCode::OK);
}

/// Signs a learner up in this browser and reads their account back from the database.
async fn signed_up_user(app: &TestApp) -> lectern::accounts::User {
    let email = app.signed_up().await;
    let parsed = lectern::accounts::Email::parse(&email).unwrap();
    lectern::accounts::find_by_email(&app.state.db, &parsed)
        .await
        .unwrap()
        .unwrap()
}

/// A sign-in checked against a password that changed before its record was written is refused
/// and stores nothing (no row, refresh token or audit event); one checked against the current
/// password stores one of each.
#[tokio::test]
async fn a_sign_in_checked_against_a_password_that_changed_meanwhile_is_refused() {
    let app = spawn_app().await;
    // The learner as a sign-in that verified the old password sees them.
    let before = signed_up_user(&app).await;
    let response = change_password(&app, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(response.status_code(), StatusCode::SEE_OTHER);
    let stored = stored_for(&app, &before.id).await;
    let late = app.start_api_sign_in(&before).await;
    assert!(
        matches!(late, Err(lectern::AppError::InvalidCredentials)),
        "{late:?}"
    );
    let live = app.state.sign_ins.live(Some(&before.id)).await.unwrap();
    assert_eq!(live.len(), 1, "only this browser's new sign-in");
    assert_eq!(
        stored_for(&app, &before.id).await,
        stored,
        "nothing of it was stored"
    );

    let current = lectern::accounts::find_by_email(
        &app.state.db,
        &lectern::accounts::Email::parse(&before.email).unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    app.start_api_sign_in(&current).await.unwrap();
    let (rows, refresh_tokens, audited) = stored;
    assert_eq!(
        stored_for(&app, &before.id).await,
        (rows + 1, refresh_tokens + 1, audited + 1)
    );
}

#[tokio::test]
async fn signing_out_everywhere_reaches_every_sign_in_however_many() {
    let app = spawn_app().await;
    let user = signed_up_user(&app).await;
    let mut tokens = Vec::new();
    for _ in 0..80 {
        let started = app.start_api_sign_in(&user).await.unwrap();
        let issued = app
            .state
            .sign_ins
            .issue_access_token(&user.id, &started.sid)
            .await
            .unwrap();
        tokens.push(issued.token);
    }
    let token = app.csrf("/account").await;
    let response = app
        .server
        .post("/logout")
        .form(&[("csrf_token", token.as_str()), ("scope", "global")])
        .await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/?signed_out=1");
    for token in &tokens {
        assert_eq!(app.me(token).await.status_code(), StatusCode::UNAUTHORIZED);
    }
    assert!(
        app.state
            .sign_ins
            .live(Some(&user.id))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_undecodable_id_is_a_404_page_or_json_not_plain_text() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (token, _) = app.api_login(&email).await;
    let csrf = app.csrf("/account").await;
    let page = app
        .server
        .post("/account/sessions/%FF/end")
        .form(&[("csrf_token", csrf.as_str())])
        .await;
    assert_eq!(page.status_code(), StatusCode::NOT_FOUND);
    assert_client_error_page(&page);
    let api = app
        .server
        .delete("/api/v1/me/sessions/%FF")
        .authorization_bearer(&token)
        .await;
    assert_eq!(api.status_code(), StatusCode::NOT_FOUND);
    assert_eq!(api.json::<Value>()["error"], "not_found");
    let course = app
        .server
        .post("/courses/%FF/enrol")
        .form(&[("csrf_token", csrf.as_str())])
        .await;
    assert_eq!(course.status_code(), StatusCode::NOT_FOUND);
    assert_client_error_page(&course);
}

#[tokio::test]
async fn ending_this_browsers_own_sign_in_from_the_account_page_signs_it_out() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let login = app.sign_in(&email, PASSWORD, "").await;
    let (access, refresh) = app.access_via(&login.cookie("lectern_refresh")).await;
    let mine = SignedIn {
        session: login.cookie("lectern_session"),
        refresh,
        access: vec![access],
    };
    let own = app.sid_of(&mine.access[0]);
    let token = app.csrf("/account").await;
    let response = app
        .server
        .post(&format!("/account/sessions/{own}/end"))
        .form(&[("csrf_token", token.as_str())])
        .await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/?signed_out=1");
    assert_eq!(response.header("cache-control"), "no-store");
    assert!(set_cookie(&response, "lectern_session").contains("Max-Age=0"));
    assert!(set_cookie(&response, "lectern_refresh").contains("Max-Age=0"));
    assert_everything_refused(&app, &mine).await;
}

/// Each instance keeps learners in memory; a password changed on one of them must neither sign
/// the learner out of another that had them cached, nor let the old session in there.
#[tokio::test]
async fn a_password_changed_on_one_instance_holds_on_another_that_had_the_learner_cached() {
    if !real_services() {
        eprintln!("skipped: needs TEST_REDIS_URL and TEST_DATABASE_URL (two instances)");
        return;
    }
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let old_session = app
        .sign_up(&unique_email(), PASSWORD)
        .await
        .cookie("lectern_session");
    // The peer reads the learner once and keeps them.
    for _ in 0..2 {
        let page = peer.get_with_session("/dashboard", &old_session).await;
        assert_eq!(page.status_code(), StatusCode::OK);
    }

    let response = change_password(&app, PASSWORD, NEW_PASSWORD).await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/account");
    let new_session = response.cookie("lectern_session");

    // The new session is the learner's on the peer too, on every request; the old one is not.
    for _ in 0..2 {
        let page = peer.get_with_session("/dashboard", &new_session).await;
        assert_eq!(page.status_code(), StatusCode::OK);
        assert!(page.text().contains("Ada Lovelace"));
    }
    let old = peer.get_with_session("/dashboard", &old_session).await;
    assert_eq!(old.status_code(), StatusCode::SEE_OTHER);
    assert!(
        old.header("location")
            .to_str()
            .unwrap()
            .ends_with("reason=password_changed"),
        "{:?}",
        old.header("location")
    );
    // The current password is checked against the stored one, not a cached copy: on the peer,
    // which had the learner cached under the old password, the old one is now wrong.
    let token = csrf_from(&peer.get_with_session("/account", &new_session).await.text());
    let wrong = peer
        .server
        .post("/account/password")
        .clear_cookies()
        .do_not_save_cookies()
        .add_cookie(new_session.clone())
        .form(&[
            ("csrf_token", token.as_str()),
            ("current_password", PASSWORD),
            ("new_password", "yet another passphrase for lectern"),
        ])
        .await;
    assert_eq!(wrong.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// Every instance keeps the catalog and a learner's enrolments in memory; an enrolment made, or a
/// course left, on one instance shows on another that had them kept, at once.
#[tokio::test]
async fn an_enrolment_made_on_one_instance_shows_on_another_at_once() {
    if !real_services() {
        eprintln!("skipped: needs TEST_REDIS_URL and TEST_DATABASE_URL (two instances)");
        return;
    }
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let session = app
        .sign_up(&unique_email(), PASSWORD)
        .await
        .cookie("lectern_session");
    let before = peer.get_with_session("/dashboard", &session).await.text();
    assert!(before.contains(r#"id="no-courses""#), "{before}");
    let token = app.csrf("/dashboard").await;
    let enrolled = app
        .post_with_token("/courses/async-rust/enrol", &token)
        .await;
    assert_redirect_to(&enrolled, StatusCode::SEE_OTHER, "/dashboard");
    let after = peer.get_with_session("/dashboard", &session).await.text();
    let mine = &after
        [after.find(r#"id="my-courses""#).unwrap()..after.find(r#"id="more-courses""#).unwrap()];
    assert!(mine.contains("Async Rust"), "{after}");
    let left = app
        .post_with_token("/courses/async-rust/leave", &token)
        .await;
    assert_redirect_to(&left, StatusCode::SEE_OTHER, "/dashboard");
    let again = peer.get_with_session("/dashboard", &session).await.text();
    assert!(again.contains(r#"id="no-courses""#), "{again}");
}

/// A learner's sign-in rows, refresh tokens and `sign_in` audit events, counted.
async fn stored_for(app: &TestApp, user_id: &str) -> (i64, i64, i64) {
    let mut counts = [0; 3];
    for (count, sql) in counts.iter_mut().zip([
        "select count(*) from sign_ins where user_id = $1",
        "select count(*) from refresh_tokens t join sign_ins s on s.id = t.sign_in_id \
         where s.user_id = $1",
        "select count(*) from audit_events where event = 'sign_in' and user_id = $1",
    ]) {
        *count = sqlx::query_scalar::<_, i64>(sql)
            .bind(user_id)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    }
    (counts[0], counts[1], counts[2])
}
