//! Logout: nothing of the session survives. Each acceptance point, with every old credential
//! replayed and refused.

use axum::http::StatusCode;
use cookie::Cookie;

use crate::helpers::*;

/// A learner signed in through the form, with an access token obtained through the refresh cookie
/// (as a page would), plus every credential that sign-in handed out.
pub(crate) struct SignedIn {
    pub session: Cookie<'static>,
    /// The refresh cookie currently valid (after one rotation).
    pub refresh: Cookie<'static>,
    /// Two access tokens issued under the sign-in.
    pub access: Vec<String>,
}

pub(crate) async fn signed_in(app: &TestApp) -> SignedIn {
    let email = app.signed_up().await;
    let response = app.sign_in(&email, PASSWORD, "").await;
    let session = response.cookie("lectern_session");
    let mut refresh = response.cookie("lectern_refresh");
    let mut access = Vec::new();
    for _ in 0..2 {
        let r = app.refresh_with(&refresh).await;
        assert_eq!(r.status_code(), StatusCode::OK);
        access.push(
            r.json::<serde_json::Value>()["access_token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        refresh = r.cookie("lectern_refresh");
    }
    SignedIn {
        session,
        refresh,
        access,
    }
}

fn assert_cookies_cleared(response: &axum_test::TestResponse) {
    let session = set_cookie(response, "lectern_session");
    assert!(session.starts_with("lectern_session=;"), "{session}");
    assert!(
        session.contains("Path=/") && session.contains("Max-Age=0"),
        "{session}"
    );
    let refresh = set_cookie(response, "lectern_refresh");
    assert!(refresh.starts_with("lectern_refresh=;"), "{refresh}");
    assert!(
        refresh.contains("Path=/api/v1/auth") && refresh.contains("Max-Age=0"),
        "{refresh}"
    );
    assert_eq!(
        response.header("clear-site-data"),
        r#""cookies", "storage""#
    );
    assert_eq!(response.header("cache-control"), "no-store");
}

pub(crate) async fn assert_everything_refused(app: &TestApp, old: &SignedIn) {
    let page = app.get_with_session("/dashboard", &old.session).await;
    assert_eq!(
        page.status_code(),
        StatusCode::SEE_OTHER,
        "old session cookie"
    );
    assert!(
        page.header("location")
            .to_str()
            .unwrap()
            .starts_with("/login?next=%2Fdashboard")
    );
    let htmx = app
        .server
        .get("/account")
        .clear_cookies()
        .do_not_save_cookies()
        .add_cookie(old.session.clone())
        .add_header("HX-Request", "true")
        .await;
    assert_eq!(
        htmx.status_code(),
        StatusCode::UNAUTHORIZED,
        "old session cookie via htmx"
    );
    for token in &old.access {
        let me = app.me(token).await;
        assert_eq!(
            me.status_code(),
            StatusCode::UNAUTHORIZED,
            "old access token"
        );
        assert_eq!(me.json::<serde_json::Value>()["error"], "invalid_token");
    }
    let refresh = app.refresh_with(&old.refresh).await;
    assert_eq!(
        refresh.status_code(),
        StatusCode::UNAUTHORIZED,
        "old refresh cookie"
    );
}

#[tokio::test]
async fn htmx_logout_redirects_home_and_every_old_credential_is_refused() {
    let app = spawn_app().await;
    let old = signed_in(&app).await;
    for token in &old.access {
        assert_eq!(
            app.me(token).await.status_code(),
            StatusCode::OK,
            "works before logout"
        );
    }
    let response = app.sign_out_htmx().await;
    assert_eq!(response.status_code(), StatusCode::OK);
    assert_eq!(response.header("hx-redirect"), "/?signed_out=1");
    assert_cookies_cleared(&response);
    assert_everything_refused(&app, &old).await;
}

#[tokio::test]
async fn plain_form_logout_answers_303_to_the_homepage_with_cleared_cookies() {
    let app = spawn_app().await;
    let old = signed_in(&app).await;
    let token = app.csrf("/dashboard").await;
    let response = app
        .server
        .post("/logout")
        .form(&[("csrf_token", token.as_str())])
        .await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/?signed_out=1");
    assert_cookies_cleared(&response);
    assert_everything_refused(&app, &old).await;
}

#[tokio::test]
async fn logout_deletes_the_session_record_from_the_store() {
    let app = spawn_app().await;
    let old = signed_in(&app).await;
    assert!(app.session_exists(&old.session).await);
    app.sign_out_htmx().await;
    assert!(
        !app.session_exists(&old.session).await,
        "deleted, not just emptied"
    );
}

#[tokio::test]
async fn every_access_token_is_revoked_until_the_last_moment_it_could_be_accepted() {
    let app = spawn_app().await;
    let old = signed_in(&app).await;
    app.sign_out_htmx().await;
    let tokens = &app.state.tokens;
    for token in &old.access {
        let claims = tokens
            .verify_ignoring_expiry(token)
            .expect("validly signed");
        let ttl = app
            .state
            .stores
            .sign_ins
            .revocation_ttl(&claims.sid, &claims.jti)
            .await
            .unwrap()
            .expect("on the revocation list");
        // Accepted up to exp plus the verifier's leeway: the entry lives that long.
        let accepted_for = claims.exp + lectern::auth::access_tokens::LEEWAY - app.clock.now();
        assert!(
            (accepted_for - 2..=accepted_for).contains(&ttl),
            "entry ttl {ttl} vs accepted for {accepted_for}"
        );
    }
    let sign_in = app.sign_in_row(&app.sid_of(&old.access[0])).await;
    assert_eq!(sign_in.revoked_reason.as_deref(), Some("signed_out"));
}

#[tokio::test]
async fn a_revoked_token_is_refused_through_its_leeway() {
    let app = spawn_app_with(|s| s.access_ttl = std::time::Duration::from_secs(60)).await;
    let old = signed_in(&app).await;
    app.sign_out_htmx().await;
    // Past exp, within the leeway: the verifier would accept it, so its revocation must stand.
    app.advance(60 + 4);
    let claims = app
        .state
        .tokens
        .verify(&old.access[1], app.clock.now())
        .expect("the signature and time alone would still pass");
    assert!(
        app.state
            .stores
            .sign_ins
            .revocation_ttl(&claims.sid, &claims.jti)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        app.me(&old.access[1]).await.status_code(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn api_logout_answers_204_and_revokes_the_sign_in() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let response = app.api_logout(Some(&access), Some(&refresh)).await;
    assert_eq!(response.status_code(), StatusCode::NO_CONTENT);
    assert_cookies_cleared(&response);
    app.assert_api_credentials_refused(&access, &refresh).await;
}

#[tokio::test]
async fn api_logout_with_only_the_refresh_cookie_revokes_tokens_it_never_saw() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let response = app.api_logout(None, Some(&refresh)).await;
    assert_eq!(response.status_code(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me(&access).await.status_code(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn logout_is_idempotent_and_never_an_error_page() {
    let app = spawn_app().await;
    // No session at all.
    let nothing = app.server.post("/logout").clear_cookies().await;
    assert_redirect_to(&nothing, StatusCode::SEE_OTHER, "/?signed_out=1");
    assert_cookies_cleared(&nothing);
    // A session cookie the store does not know (expired or made up).
    let unknown = app
        .server
        .post("/logout")
        .clear_cookies()
        .add_cookie(Cookie::new("lectern_session", "AAAAAAAAAAAAAAAAAAAAAA"))
        .add_header("HX-Request", "true")
        .await;
    assert_eq!(unknown.status_code(), StatusCode::OK);
    assert_eq!(unknown.header("hx-redirect"), "/?signed_out=1");
    assert_cookies_cleared(&unknown);
    // Twice in a row, and the API with an already revoked token.
    let email = app.signed_up().await;
    let (access, _) = app.api_login(&email).await;
    let old_session = app.server.get("/dashboard").await;
    assert_eq!(old_session.status_code(), StatusCode::OK);
    assert_eq!(
        app.sign_out_htmx_twice().await,
        (StatusCode::OK, StatusCode::OK)
    );
    for _ in 0..2 {
        let api = app.api_logout(Some(&access), None).await;
        assert_eq!(api.status_code(), StatusCode::NO_CONTENT);
    }
}

impl TestApp {
    async fn sign_out_htmx_twice(&self) -> (StatusCode, StatusCode) {
        let first = self.sign_out_htmx_with_stale_token().await;
        let second = self.sign_out_htmx_with_stale_token().await;
        (first, second)
    }

    async fn sign_out_htmx_with_stale_token(&self) -> StatusCode {
        let token = self.csrf("/").await;
        let r = self
            .server
            .post("/logout")
            .add_header("HX-Request", "true")
            .add_header("X-CSRF-Token", token)
            .await;
        assert_eq!(r.header("hx-redirect"), "/?signed_out=1");
        r.status_code()
    }
}

#[tokio::test]
async fn logout_without_a_csrf_token_is_refused_and_the_session_stays_alive() {
    let app = spawn_app().await;
    let old = signed_in(&app).await;
    let forged = app
        .server
        .post("/logout")
        .add_header("HX-Request", "true")
        .await;
    assert_eq!(forged.status_code(), StatusCode::FORBIDDEN);
    assert!(
        set_cookies(&forged).is_empty(),
        "a refused sign-out touches no cookie"
    );
    assert!(forged.maybe_header("clear-site-data").is_none());
    let wrong = app
        .server
        .post("/logout")
        .form(&[("csrf_token", "guess")])
        .await;
    assert_eq!(wrong.status_code(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.get_with_session("/dashboard", &old.session)
            .await
            .status_code(),
        StatusCode::OK
    );
    assert_eq!(app.me(&old.access[0]).await.status_code(), StatusCode::OK);
    assert!(app.session_exists(&old.session).await);
}

#[tokio::test]
async fn the_homepage_after_logout_says_so_and_sets_no_cookie() {
    let app = spawn_app().await;
    signed_in(&app).await;
    app.sign_out_htmx().await;
    let home = app.server.get("/?signed_out=1").clear_cookies().await;
    assert_eq!(home.status_code(), StatusCode::OK);
    let html = home.text();
    assert!(html.contains("You are signed out."));
    assert!(
        html.contains("data-signed-out"),
        "the script clears client state and tells other tabs"
    );
    assert!(!html.contains("data-authenticated") && !html.contains("Sign out"));
    assert!(set_cookies(&home).is_empty(), "{:?}", set_cookies(&home));
}

#[tokio::test]
async fn sign_in_and_sign_out_are_audited_and_shown_on_the_account_page() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    app.sign_out_htmx().await;
    app.sign_in(&email, PASSWORD, "").await;
    let html = app.server.get("/account").await.text();
    let activity = &html[html.find(r#"id="activity""#).unwrap()..];
    assert!(
        activity.contains("<td>Signed out</td>") && activity.contains("<td>Signed in</td>"),
        "{activity}"
    );
    let rows: Vec<(String, Option<String>, String)> =
        sqlx::query_as("select event, sign_in_id, ip from audit_events order by at, event")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    let events: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(events.iter().filter(|e| **e == "sign_in").count(), 2);
    assert_eq!(events.iter().filter(|e| **e == "sign_out").count(), 1);
    assert!(
        rows.iter().all(|r| r.1.is_some()),
        "every row names its sign-in"
    );
}

#[tokio::test]
async fn the_sign_out_control_is_on_every_authenticated_page_and_works_without_javascript() {
    let app = spawn_app().await;
    app.signed_up().await;
    for path in ["/", "/dashboard", "/account"] {
        let html = app.server.get(path).await.text();
        assert!(
            html.contains(r#"<form class="signout-form" method="post" action="/logout""#),
            "{path}"
        );
        assert!(html.contains(r#"hx-post="/logout""#), "{path}");
        assert!(
            html.contains(r#"name="csrf_token""#) && html.contains(">Sign out</button>"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_sign_out_on_one_instance_is_honoured_by_another() {
    if !real_services() {
        skipped(
            "needs TEST_REDIS_URL and TEST_DATABASE_URL (two instances share nothing in memory)",
        );
        return;
    }
    let first = spawn_app().await;
    let second = spawn_peer(&first).await;
    let old = signed_in(&first).await;
    // The second instance accepts everything before the sign-out...
    assert_eq!(
        second
            .get_with_session("/dashboard", &old.session)
            .await
            .status_code(),
        StatusCode::OK
    );
    assert_eq!(
        second.me(&old.access[0]).await.status_code(),
        StatusCode::OK
    );
    first.sign_out_htmx().await;
    // ...and refuses each credential after it.
    assert_everything_refused(&second, &old).await;
}

/// A page view reads its sign-in's liveness in the same round trip as its session record, once
/// the instance knows the session's learner. A sign-in ended elsewhere whose record is still
/// there (a sign-out stopped before deleting it) is refused by the very next view all the same.
#[tokio::test]
async fn a_sign_in_ended_elsewhere_is_refused_by_the_next_view_though_its_record_is_left() {
    if !real_services() {
        skipped("needs TEST_REDIS_URL and TEST_DATABASE_URL (two instances)");
        return;
    }
    let first = spawn_app().await;
    let second = spawn_peer(&first).await;
    let old = signed_in(&first).await;
    // The second view is the one that reads liveness beside the record.
    for _ in 0..2 {
        let page = second.get_with_session("/dashboard", &old.session).await;
        assert_eq!(page.status_code(), StatusCode::OK);
    }
    let sid = first.sid_of(&old.access[0]);
    first.state.stores.sign_ins.end(&sid).await.unwrap();
    let page = second.get_with_session("/dashboard", &old.session).await;
    assert_eq!(page.status_code(), StatusCode::SEE_OTHER);
    let location = page.header("location").to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/login?next=%2Fdashboard"),
        "{location}"
    );
    second
        .assert_api_credentials_refused(&old.access[0], &old.refresh)
        .await;
}

#[tokio::test]
async fn when_redis_is_lost_sign_out_still_clears_cookies_and_says_it_could_not_confirm() {
    let Some((mut redis, app)) = spawn_app_on_private_redis().await else {
        return;
    };
    let old = signed_in(&app).await;
    let csrf = app.csrf("/dashboard").await;
    assert_eq!(
        app.server.get("/readyz").await.status_code(),
        StatusCode::OK
    );

    redis.child.kill().unwrap();
    redis.child.wait().unwrap();

    // Sign-out: cookies and storage cleared anyway, and the learner is told it was not confirmed.
    let htmx = app
        .server
        .post("/logout")
        .add_header("HX-Request", "true")
        .add_header("X-CSRF-Token", csrf.clone())
        .await;
    assert_eq!(htmx.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        htmx.header("hx-redirect")
            .to_str()
            .unwrap()
            .starts_with("/logout/unconfirmed?retry=")
    );
    assert_cookies_cleared(&htmx);
    let plain = app
        .server
        .post("/logout")
        .clear_cookies()
        .add_cookie(old.session.clone())
        .form(&[("csrf_token", csrf.as_str())])
        .await;
    assert_eq!(plain.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_cookies_cleared(&plain);
    assert!(
        plain.text().contains("could not confirm your sign-out"),
        "{}",
        plain.text()
    );
    assert!(!plain.text().contains("You are signed out"));
    let page = app.server.get("/logout/unconfirmed").await;
    assert!(page.text().contains("could not confirm your sign-out"));

    // Everything else fails closed with a clear 503, never a 500 and never a pass.
    let dashboard = app.get_with_session("/dashboard", &old.session).await;
    assert_eq!(dashboard.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        dashboard
            .text()
            .contains("cannot reach one of its services")
    );
    let me = app.me(&old.access[0]).await;
    assert_eq!(me.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        me.json::<serde_json::Value>()["error"],
        "temporarily_unavailable"
    );
    let api_logout = app.api_logout(Some(&old.access[0]), None).await;
    assert_eq!(api_logout.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_cookies_cleared(&api_logout);
    let ready = app.server.get("/readyz").await;
    assert_eq!(ready.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json::<serde_json::Value>()["redis"], "unavailable");
}

#[tokio::test]
async fn a_cross_site_page_cannot_sign_a_browser_out_or_clear_its_cookies() {
    let app = spawn_app().await;
    let old = signed_in(&app).await;
    for path in ["/logout", "/api/v1/auth/logout"] {
        // A cross-site POST carries no Lax or Strict cookie at all; the browser marks it.
        let r = app
            .server
            .post(path)
            .clear_cookies()
            .add_header("Sec-Fetch-Site", "cross-site")
            .add_header("Origin", "https://evil.example")
            .await;
        assert_eq!(r.status_code(), StatusCode::FORBIDDEN, "{path}");
        assert!(set_cookies(&r).is_empty(), "{path}: {:?}", set_cookies(&r));
        assert!(r.maybe_header("clear-site-data").is_none(), "{path}");
    }
    assert_eq!(
        app.get_with_session("/dashboard", &old.session)
            .await
            .status_code(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn api_logout_also_deletes_the_browser_session_of_that_sign_in() {
    let app = spawn_app().await;
    let old = signed_in(&app).await;
    let r = app.api_logout(Some(&old.access[0]), None).await;
    assert_eq!(r.status_code(), StatusCode::NO_CONTENT);
    assert!(
        !app.session_exists(&old.session).await,
        "deleted at once, not on its next request"
    );
    let page = app.get_with_session("/dashboard", &old.session).await;
    assert_redirect_to(
        &page,
        StatusCode::SEE_OTHER,
        "/login?next=%2Fdashboard&reason=revoked",
    );
}

#[tokio::test]
async fn a_sign_out_that_could_not_be_confirmed_is_finished_by_trying_again() {
    let Some((redis, app)) = spawn_app_on_private_redis().await else {
        return;
    };
    let old = signed_in(&app).await;
    let csrf = app.csrf("/dashboard").await;

    // Redis stops answering for a few seconds (it keeps its data).
    let resumed = redis.pause(4000);
    let first = app
        .server
        .post("/logout")
        .add_header("HX-Request", "true")
        .add_header("X-CSRF-Token", csrf)
        .await;
    assert_eq!(first.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    let to = first.header("hx-redirect").to_str().unwrap().to_owned();
    assert!(to.starts_with("/logout/unconfirmed?retry="), "{to}");
    assert_cookies_cleared(&first);
    let page = app.server.get(&to).clear_cookies().await.text();
    let marker = r#"name="retry" value=""#;
    let start = page.find(marker).expect("the page carries what is owed") + marker.len();
    let retry = page[start..start + page[start..].find('"').unwrap()].to_owned();
    assert_sealed(&app, &retry, old.session.value());

    tokio::time::sleep_until(resumed).await;
    // Not confirmed means not done: the old session still works until the retry.
    assert_eq!(
        app.get_with_session("/dashboard", &old.session)
            .await
            .status_code(),
        StatusCode::OK
    );
    let again = app
        .server
        .post("/logout")
        .clear_cookies()
        .form(&[("retry", retry.as_str())])
        .await;
    assert_redirect_to(&again, StatusCode::SEE_OTHER, "/?signed_out=1");
    assert_everything_refused(&app, &old).await;
    let forged = app
        .server
        .post("/logout")
        .clear_cookies()
        .form(&[("retry", "forged")])
        .await;
    assert_redirect_to(&forged, StatusCode::SEE_OTHER, "/?signed_out=1");
}

/// The retry note opens only on the server and shows the id neither as text nor as base64.
fn assert_sealed(app: &TestApp, retry: &str, session_id: &str) {
    use base64::Engine;
    assert!(
        app.state
            .keys
            .open(lectern::auth::sign_out::RETRY_PURPOSE, retry)
            .is_some()
    );
    assert!(!retry.contains(session_id));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(retry)
        .unwrap_or_default();
    assert!(
        !raw.windows(session_id.len())
            .any(|w| w == session_id.as_bytes())
    );
}

/// The retry note from a `/logout/unconfirmed?retry=...` address.
fn retry_of(hx_redirect: &str) -> String {
    let query = hx_redirect.split_once('?').unwrap().1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "retry")
        .unwrap()
        .1
        .into_owned()
}

#[tokio::test]
async fn a_sign_out_that_fails_halfway_keeps_what_it_owes_and_the_retry_finishes_it() {
    let app = spawn_app().await;
    let old = signed_in(&app).await;
    let sid = app.sid_of(&old.access[0]);
    let csrf = app.csrf("/dashboard").await;
    // A real failure: the database refuses to mark sign-ins revoked.
    let (inject, remove) = refuse_writes(&app, "sign_ins", "update");
    sqlx::raw_sql(sqlx::AssertSqlSafe(inject))
        .execute(&app.state.db)
        .await
        .unwrap();

    let first = app
        .server
        .post("/logout")
        .add_header("HX-Request", "true")
        .add_header("X-CSRF-Token", csrf)
        .await;
    assert_eq!(first.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_cookies_cleared(&first);
    let retry = retry_of(first.header("hx-redirect").to_str().unwrap());
    let note = app
        .state
        .keys
        .open(lectern::auth::sign_out::RETRY_PURPOSE, &retry)
        .unwrap();
    assert!(
        note.contains(&sid),
        "the note still names the sign-in: {note}"
    );
    // Redis went first, so every credential is already refused...
    assert_everything_refused(&app, &old).await;
    // ...but the record and its audit row are still owed.
    let sign_in = app.sign_in_row(&sid).await;
    assert!(sign_in.revoked_at.is_none());

    sqlx::raw_sql(sqlx::AssertSqlSafe(remove))
        .execute(&app.state.db)
        .await
        .unwrap();
    let again = app
        .server
        .post("/logout")
        .clear_cookies()
        .form(&[("retry", retry.as_str())])
        .await;
    assert_redirect_to(&again, StatusCode::SEE_OTHER, "/?signed_out=1");
    let sign_in = app.sign_in_row(&sid).await;
    assert_eq!(sign_in.revoked_reason.as_deref(), Some("signed_out"));
    let sign_outs: i64 = sqlx::query_scalar(
        "select count(*) from audit_events where event = 'sign_out' and sign_in_id = $1",
    )
    .bind(&sid)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(sign_outs, 1);
}

#[tokio::test]
async fn a_crafted_cookie_cannot_smuggle_another_sign_in_into_the_retry_note() {
    let Some((redis, app)) = spawn_app_on_private_redis().await else {
        return;
    };
    let victim = signed_in(&app).await;
    let victim_sid = app.sid_of(&victim.access[0]);
    let resumed = redis.pause(3000);
    // A crafted value first, a well-formed id last (the one the session layer reads).
    let attack = app
        .server
        .post("/logout")
        .clear_cookies()
        .add_header("HX-Request", "true")
        .add_header(
            "Cookie",
            format!("lectern_session=AAAAAAAAAAAAAAAAAAAAAg|{victim_sid},; lectern_session=AAAAAAAAAAAAAAAAAAAAAA"),
        )
        .await;
    assert_eq!(attack.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    let retry = retry_of(attack.header("hx-redirect").to_str().unwrap());
    let note = app
        .state
        .keys
        .open(lectern::auth::sign_out::RETRY_PURPOSE, &retry)
        .unwrap();
    assert!(!note.contains(&victim_sid), "{note}");
    tokio::time::sleep_until(resumed).await;
    let replayed = app
        .server
        .post("/logout")
        .clear_cookies()
        .form(&[("retry", retry.as_str())])
        .await;
    assert_redirect_to(&replayed, StatusCode::SEE_OTHER, "/?signed_out=1");
    assert_eq!(
        app.me(&victim.access[0]).await.status_code(),
        StatusCode::OK,
        "the victim is still signed in"
    );
    assert_eq!(
        app.get_with_session("/dashboard", &victim.session)
            .await
            .status_code(),
        StatusCode::OK
    );
}

// ---- credentials that outlived a sign-out ----

/// A form sign-in's credentials: the session cookie, the refresh cookie it was given, and an
/// access token obtained with a copy of that refresh cookie (as a page's script would).
async fn form_sign_in(app: &TestApp) -> SignedIn {
    let email = app.signed_up().await;
    let response = app.sign_in(&email, PASSWORD, "").await;
    let session = response.cookie("lectern_session");
    let (access, refresh) = app.access_via(&response.cookie("lectern_refresh")).await;
    SignedIn {
        session,
        refresh,
        access: vec![access],
    }
}

/// A sign-out as the plain form sends it, with exactly this session cookie.
async fn sign_out_with(
    app: &TestApp,
    session: &Cookie<'static>,
    csrf: &str,
) -> axum_test::TestResponse {
    app.server
        .post("/logout")
        .clear_cookies()
        .add_cookie(session.clone())
        .form(&[("csrf_token", csrf)])
        .await
}

#[tokio::test]
async fn a_session_that_idled_out_is_still_signed_out_with_all_its_credentials() {
    let app = spawn_app_with(|s| s.session_idle = std::time::Duration::from_secs(60)).await;
    let old = form_sign_in(&app).await;
    let csrf = app.csrf("/dashboard").await;
    app.advance(61);
    // Idle: nothing of the sign-in works any more, even before the learner presses Sign out.
    app.assert_api_credentials_refused(&old.access[0], &old.refresh)
        .await;
    let response = sign_out_with(&app, &old.session, &csrf).await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/?signed_out=1");
    assert_cookies_cleared(&response);
    assert_everything_refused(&app, &old).await;
    assert!(!app.session_exists(&old.session).await);
    let row = app.sign_in_row(&app.sid_of(&old.access[0])).await;
    assert!(
        row.revoked_at.is_some(),
        "the sign-in is ended, not left to lapse"
    );
}

#[tokio::test]
async fn a_sign_out_with_a_cookie_whose_session_record_expired_still_ends_its_sign_in() {
    let app = spawn_app_with(|s| s.session_idle = std::time::Duration::from_secs(60)).await;
    let old = form_sign_in(&app).await;
    // The store expired the record on its own; the browser still holds the cookie.
    app.advance(61);
    app.drop_session_record(&old.session).await;
    let response = app
        .server
        .post("/logout")
        .clear_cookies()
        .add_cookie(old.session.clone())
        .await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/?signed_out=1");
    assert_everything_refused(&app, &old).await;
    let row = app.sign_in_row(&app.sid_of(&old.access[0])).await;
    assert_eq!(row.revoked_reason.as_deref(), Some("signed_out"));
}

#[tokio::test]
async fn a_page_view_with_an_expired_record_says_idle_and_ends_its_sign_in() {
    let app = spawn_app_with(|s| s.session_idle = std::time::Duration::from_secs(60)).await;
    let old = form_sign_in(&app).await;
    app.advance(61);
    app.drop_session_record(&old.session).await;
    let page = app.get_with_session("/dashboard", &old.session).await;
    assert_redirect_to(
        &page,
        StatusCode::SEE_OTHER,
        "/login?next=%2Fdashboard&reason=idle",
    );
    let row = app.sign_in_row(&app.sid_of(&old.access[0])).await;
    assert_eq!(row.revoked_reason.as_deref(), Some("idle"));
    app.assert_api_credentials_refused(&old.access[0], &old.refresh)
        .await;
}

/// A browser signed in by form whose page also signed in through the API (the browser then
/// holds the API sign-in's refresh cookie in place of the form's).
pub(crate) async fn browser_with_two_sign_ins(app: &TestApp) -> (SignedIn, SignedIn) {
    let form = form_sign_in(app).await;
    let email = app.signed_up_email_of(&form.access[0]).await;
    let response = app
        .server
        .post("/api/v1/auth/login")
        .json(&serde_json::json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(response.status_code(), StatusCode::OK);
    let access = response.json::<serde_json::Value>()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = SignedIn {
        session: form.session.clone(),
        refresh: response.cookie("lectern_refresh"),
        access: vec![access],
    };
    assert_ne!(app.sid_of(&api.access[0]), app.sid_of(&form.access[0]));
    (form, api)
}

impl TestApp {
    async fn signed_up_email_of(&self, access: &str) -> String {
        self.me(access).await.json::<serde_json::Value>()["email"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// An end that repeats after its first run was cut short (the store ended the sign-in but the
/// reply was lost, and the command was replayed or the sign-out retried) still finishes the job:
/// the browser session that sign-in named is deleted, and the API sign-in that session holds is
/// refused, before that browser sends anything.
#[tokio::test]
async fn an_end_repeated_after_a_lost_reply_still_ends_the_browser_and_what_it_holds() {
    let app = spawn_app().await;
    let (form, api) = browser_with_two_sign_ins(&app).await;
    let sid = app.sid_of(&form.access[0]);
    // The first run: done in the store, its reply never heard.
    app.state.stores.sign_ins.end(&sid).await.unwrap();
    app.state
        .sign_out
        .operator(&sid, &lectern::web::ClientInfo::operator())
        .await
        .unwrap();
    app.assert_api_credentials_refused(&api.access[0], &api.refresh)
        .await;
    let id: tower_sessions::session::Id = form.session.value().parse().unwrap();
    let record = tower_sessions::SessionStore::load(&app.sessions, &id)
        .await
        .unwrap();
    assert!(record.is_none(), "the browser's session record is deleted");
    assert_everything_refused(&app, &form).await;
}

#[tokio::test]
async fn a_sign_out_without_javascript_ends_every_sign_in_the_browser_holds() {
    let app = spawn_app().await;
    let (form, api) = browser_with_two_sign_ins(&app).await;
    let token = app.csrf("/dashboard").await;
    let response = app
        .server
        .post("/logout")
        .form(&[("csrf_token", token.as_str())])
        .await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/?signed_out=1");
    assert_everything_refused(&app, &form).await;
    app.assert_api_credentials_refused(&api.access[0], &api.refresh)
        .await;
}

#[tokio::test]
async fn an_htmx_sign_out_ends_every_sign_in_the_browser_holds() {
    let app = spawn_app().await;
    let (form, api) = browser_with_two_sign_ins(&app).await;
    let response = app.sign_out_htmx().await;
    assert_eq!(response.header("hx-redirect"), "/?signed_out=1");
    assert_everything_refused(&app, &form).await;
    app.assert_api_credentials_refused(&api.access[0], &api.refresh)
        .await;
}

#[tokio::test]
async fn an_api_sign_out_from_the_browser_ends_its_session_too() {
    let app = spawn_app().await;
    let (form, api) = browser_with_two_sign_ins(&app).await;
    let response = app
        .server
        .post("/api/v1/auth/logout")
        .add_cookie(api.refresh.clone())
        .await;
    assert_eq!(response.status_code(), StatusCode::NO_CONTENT);
    assert_cookies_cleared(&response);
    assert_everything_refused(&app, &form).await;
    app.assert_api_credentials_refused(&api.access[0], &api.refresh)
        .await;
}

#[tokio::test]
async fn a_sign_out_signs_out_whatever_its_body() {
    let app = spawn_app().await;
    let huge = "x".repeat(300 * 1024);
    type Body = (&'static str, Vec<u8>);
    let bodies: Vec<(&str, Body)> = vec![
        (
            "oversized form",
            (
                "application/x-www-form-urlencoded",
                format!("junk={huge}").into_bytes(),
            ),
        ),
        (
            "malformed form",
            (
                "application/x-www-form-urlencoded",
                b"%%%&=&csrf=%ZZ\xff".to_vec(),
            ),
        ),
        (
            "json",
            ("application/json", br#"{"not": "a form""#.to_vec()),
        ),
        (
            "binary",
            ("application/octet-stream", vec![0, 159, 146, 150]),
        ),
    ];
    for (what, (content_type, body)) in bodies {
        let old = signed_in(&app).await;
        let token = app.csrf("/dashboard").await;
        let response = app
            .server
            .post("/logout")
            .add_header("HX-Request", "true")
            .add_header("X-CSRF-Token", token)
            .content_type(content_type)
            .bytes(body.into())
            .await;
        assert_eq!(response.status_code(), StatusCode::OK, "{what}");
        assert_eq!(response.header("hx-redirect"), "/?signed_out=1", "{what}");
        assert_everything_refused(&app, &old).await;
    }
    // A plain form whose token comes first and whose tail is oversized and broken.
    let old = signed_in(&app).await;
    let token = app.csrf("/dashboard").await;
    let response = app
        .server
        .post("/logout")
        .content_type("application/x-www-form-urlencoded")
        .bytes(
            format!("csrf_token={token}&pad={huge}%%%")
                .into_bytes()
                .into(),
        )
        .await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/?signed_out=1");
    assert_everything_refused(&app, &old).await;
    // The API's sign-out too.
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let response = app
        .server
        .post("/api/v1/auth/logout")
        .clear_cookies()
        .authorization_bearer(&access)
        .add_cookie(refresh.clone())
        .content_type("text/plain")
        .bytes(huge.into_bytes().into())
        .await;
    assert_eq!(response.status_code(), StatusCode::NO_CONTENT);
    app.assert_api_credentials_refused(&access, &refresh).await;
}

#[tokio::test]
async fn the_sign_out_changes_an_http_only_cookie_so_no_browser_keeps_the_page_cached() {
    let app = spawn_app().await;
    signed_in(&app).await;
    let response = app.sign_out_htmx().await;
    // Chromium evicts back/forward-cached pages when a cookie changes; the session cookie's
    // removal is that change, HttpOnly like the cookie itself.
    let session = set_cookie(&response, "lectern_session");
    assert!(
        session.contains("HttpOnly") && session.contains("Max-Age=0"),
        "{session}"
    );
}

#[tokio::test]
async fn clear_site_data_can_name_storage_only_and_the_auth_cookies_still_go() {
    let app = spawn_app_with(|s| {
        s.clear_site_data = lectern::config::ClearSiteData {
            cookies: false,
            storage: true,
        };
    })
    .await;
    let old = signed_in(&app).await;
    let response = app.sign_out_htmx().await;
    assert_eq!(response.header("clear-site-data"), r#""storage""#);
    for name in ["lectern_session", "lectern_refresh"] {
        assert!(set_cookie(&response, name).contains("Max-Age=0"), "{name}");
    }
    assert_everything_refused(&app, &old).await;
}

// ---- how far a sign-out reaches ----

/// A learner signed in three ways: this browser (the test client's cookies), another browser,
/// and an API client.
struct Everywhere {
    other_browser: SignedIn,
    api: (String, Cookie<'static>),
}

async fn signed_in_everywhere(app: &TestApp) -> Everywhere {
    let email = app.signed_up().await;
    let token = csrf_from(&app.server.get("/login").clear_cookies().await.text());
    let elsewhere = app
        .server
        .post("/login")
        .clear_cookies()
        .do_not_save_cookies()
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", email.as_str()),
            ("password", PASSWORD),
        ])
        .await;
    assert_eq!(elsewhere.status_code(), StatusCode::SEE_OTHER);
    let (access, refresh) = app.access_via(&elsewhere.cookie("lectern_refresh")).await;
    let other_browser = SignedIn {
        session: elsewhere.cookie("lectern_session"),
        refresh,
        access: vec![access],
    };
    Everywhere {
        other_browser,
        api: app.api_login(&email).await,
    }
}

#[tokio::test]
async fn signing_out_the_others_keeps_this_browser_and_ends_every_other_sign_in() {
    let app = spawn_app().await;
    let everywhere = signed_in_everywhere(&app).await;
    let token = app.csrf("/dashboard").await;
    let response = app
        .server
        .post("/logout")
        .form(&[("csrf_token", token.as_str()), ("scope", "others")])
        .await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/account");
    assert!(
        set_cookies(&response).is_empty(),
        "this browser keeps its cookies"
    );
    assert_eq!(
        app.server.get("/dashboard").await.status_code(),
        StatusCode::OK
    );
    assert_everything_refused(&app, &everywhere.other_browser).await;
    let (access, refresh) = &everywhere.api;
    app.assert_api_credentials_refused(access, refresh).await;
    let page = app
        .get_with_session("/dashboard", &everywhere.other_browser.session)
        .await;
    assert!(
        page.header("location")
            .to_str()
            .unwrap()
            .ends_with("reason=revoked")
    );
    let html = app.server.get("/account").await.text();
    assert!(html.contains("This browser"), "{html}");
}

#[tokio::test]
async fn signing_out_globally_ends_every_sign_in_this_one_included() {
    let app = spawn_app().await;
    let everywhere = signed_in_everywhere(&app).await;
    let this_session = app.server.get("/dashboard").await;
    assert_eq!(this_session.status_code(), StatusCode::OK);
    let token = app.csrf("/dashboard").await;
    let response = app
        .server
        .post("/logout?scope=global")
        .add_header("HX-Request", "true")
        .add_header("X-CSRF-Token", token)
        .await;
    assert_eq!(response.header("hx-redirect"), "/?signed_out=1");
    assert_cookies_cleared(&response);
    assert_redirect_to(
        &app.server.get("/dashboard").await,
        StatusCode::SEE_OTHER,
        "/login?next=%2Fdashboard",
    );
    assert_everything_refused(&app, &everywhere.other_browser).await;
    let (access, refresh) = &everywhere.api;
    app.assert_api_credentials_refused(access, refresh).await;
}

#[tokio::test]
async fn an_api_client_can_sign_out_the_others_and_stay() {
    let app = spawn_app().await;
    let everywhere = signed_in_everywhere(&app).await;
    let (access, refresh) = &everywhere.api;
    let response = app
        .api_logout_scoped("others", Some(access), Some(refresh))
        .await;
    assert_eq!(response.status_code(), StatusCode::NO_CONTENT);
    assert!(set_cookies(&response).is_empty(), "the caller stays");
    assert_eq!(app.me(access).await.status_code(), StatusCode::OK);
    assert_everything_refused(&app, &everywhere.other_browser).await;
    let this_browser = app.server.get("/dashboard").await;
    assert_eq!(this_browser.status_code(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_api_client_with_only_its_refresh_cookie_can_sign_out_everywhere() {
    let app = spawn_app().await;
    let everywhere = signed_in_everywhere(&app).await;
    let (access, refresh) = &everywhere.api;
    let response = app.api_logout_scoped("global", None, Some(refresh)).await;
    assert_eq!(response.status_code(), StatusCode::NO_CONTENT);
    app.assert_api_credentials_refused(access, refresh).await;
    assert_everything_refused(&app, &everywhere.other_browser).await;
}

#[tokio::test]
async fn an_api_client_signing_out_locally_ends_its_own_sign_in_only() {
    let app = spawn_app().await;
    let everywhere = signed_in_everywhere(&app).await;
    let (access, refresh) = &everywhere.api;
    let response = app.api_logout(Some(access), Some(refresh)).await;
    assert_eq!(response.status_code(), StatusCode::NO_CONTENT);
    app.assert_api_credentials_refused(access, refresh).await;
    assert_eq!(
        app.get_with_session("/dashboard", &everywhere.other_browser.session)
            .await
            .status_code(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_unknown_scope_signs_out_this_browser_only() {
    let app = spawn_app().await;
    let everywhere = signed_in_everywhere(&app).await;
    let token = app.csrf("/dashboard").await;
    let response = app
        .server
        .post("/logout")
        .form(&[("csrf_token", token.as_str()), ("scope", "everything!")])
        .await;
    assert_redirect_to(&response, StatusCode::SEE_OTHER, "/?signed_out=1");
    let (access, _) = &everywhere.api;
    assert_eq!(app.me(access).await.status_code(), StatusCode::OK);
    assert_eq!(
        app.get_with_session("/dashboard", &everywhere.other_browser.session)
            .await
            .status_code(),
        StatusCode::OK
    );
}

/// Sign-outs that arrive together are written together on PostgreSQL, several to a statement:
/// each still ends its own sign-in once, with one audit row, whether its end is repeated at the
/// same moment (two tabs) or not; and an end the database refuses fails alone, its row left for
/// the next try, while the others that came with it are written.
#[tokio::test]
async fn sign_outs_at_once_each_end_their_own_sign_in_once_and_a_refused_one_fails_alone() {
    use lectern::web::ClientInfo;
    let app = spawn_app().await;
    let postgres = app.database_url.starts_with("postgres");
    // Twelve API sign-ins, each from a client of its own.
    let email = app.signed_up().await;
    let mut credentials = Vec::new();
    for _ in 0..12 {
        credentials.push(app.api_login(&email).await);
    }
    let sids: Vec<String> = credentials.iter().map(|(a, _)| app.sid_of(a)).collect();
    let refused = sids[8].clone();
    let (refuse, lift) = if postgres {
        (
            format!(
                "create or replace function lectern_refuse_one() returns trigger language plpgsql as $$ \
                 begin if new.sign_in_id = '{refused}' then raise exception 'injected failure'; end if; \
                 return new; end $$; \
                 create trigger refuse_one before insert on audit_events for each row \
                 execute function lectern_refuse_one(); \
                 create table statement_rows (written bigint); \
                 create function lectern_count_rows() returns trigger language plpgsql as $$ \
                 begin insert into statement_rows select count(*) from new_rows; return null; end $$; \
                 create trigger count_rows after insert on audit_events referencing new table as new_rows \
                 for each statement execute function lectern_count_rows();"
            ),
            "drop trigger refuse_one on audit_events",
        )
    } else {
        (
            format!(
                "create trigger refuse_one before insert on audit_events \
                 when new.sign_in_id = '{refused}' begin select raise(abort, 'injected failure'); end;"
            ),
            "drop trigger refuse_one",
        )
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(refuse))
        .execute(&app.state.db)
        .await
        .unwrap();

    // Two groups of six, each sign-in ended twice at once; the second group holds the refused one.
    let mut failed = Vec::new();
    for group in sids.chunks(6) {
        failed.extend(ends_at_once(&app, group).await);
    }
    let twice: Vec<&String> = sids.chunks(6).flat_map(|g| g.iter().chain(g)).collect();
    for (sid, failed) in twice.iter().zip(&failed) {
        assert_eq!(*failed, **sid == refused, "the end of {sid}");
    }
    let sign_outs = |sid: String| {
        let db = app.state.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from audit_events where event = 'revoked' and sign_in_id = $1",
            )
            .bind(sid)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    for sid in &sids {
        let row = app.sign_in_row(sid).await;
        if *sid == refused {
            assert!(row.revoked_at.is_none(), "its row waits for the next try");
            assert_eq!(sign_outs(sid.clone()).await, 0);
        } else {
            assert_eq!(row.revoked_reason.as_deref(), Some("revoked"), "{sid}");
            assert_eq!(sign_outs(sid.clone()).await, 1, "{sid}");
        }
    }
    if postgres {
        // The ends did share statements: one wrote several of them.
        let most: Option<i64> = sqlx::query_scalar("select max(written) from statement_rows")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
        assert!(most.unwrap_or(0) > 1, "largest statement: {most:?} rows");
    }
    // Redis went first: every credential of every one of them is refused already.
    for (access, refresh) in &credentials {
        app.assert_api_credentials_refused(access, refresh).await;
    }

    sqlx::raw_sql(lift).execute(&app.state.db).await.unwrap();
    app.state
        .sign_out
        .operator(&refused, &ClientInfo::operator())
        .await
        .unwrap();
    let row = app.sign_in_row(&refused).await;
    assert_eq!(row.revoked_reason.as_deref(), Some("revoked"));
    assert_eq!(sign_outs(refused).await, 1);
}

/// Ends each of `sids` twice at once; whether each end failed, in the order `sids` then `sids`
/// again. On PostgreSQL the first one's row is held locked meanwhile, so its statement waits and
/// the others queue behind it, as they do under load.
async fn ends_at_once(app: &TestApp, sids: &[String]) -> Vec<bool> {
    use lectern::{auth::sign_ins::Liveness, web::ClientInfo};
    use sqlx::Connection;
    let end = |sid: String| {
        let sign_out = app.state.sign_out.clone();
        tokio::spawn(async move {
            sign_out
                .operator(&sid, &ClientInfo::operator())
                .await
                .is_err()
        })
    };
    let mut holder = None;
    if app.database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&app.database_url)
            .await
            .unwrap();
        sqlx::raw_sql("begin").execute(&mut conn).await.unwrap();
        sqlx::query("select 1 from sign_ins where id = $1 for update")
            .bind(&sids[0])
            .execute(&mut conn)
            .await
            .unwrap();
        holder = Some(conn);
    }
    let first = end(sids[0].clone());
    if holder.is_some() {
        wait_until(
            app,
            "select count(*) from pg_stat_activity \
             where datname = current_database() and wait_event_type = 'Lock'",
        )
        .await;
    }
    let rest: Vec<_> = sids[1..]
        .iter()
        .chain(sids)
        .map(|sid| end(sid.clone()))
        .collect();
    if let Some(mut conn) = holder {
        // Every other end has left Redis and so is queued for (or in) the next statement.
        for sid in sids {
            while matches!(
                app.state.sign_ins.liveness(sid).await.unwrap(),
                Liveness::Live(_)
            ) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        sqlx::raw_sql("commit").execute(&mut conn).await.unwrap();
    }
    let mut failed = vec![first.await.unwrap()];
    for end in rest {
        failed.push(end.await.unwrap());
    }
    failed
}

/// Waits (up to ten seconds) until `count_sql` counts something.
async fn wait_until(app: &TestApp, count_sql: &'static str) {
    for _ in 0..1000 {
        let n: i64 = sqlx::query_scalar(count_sql)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
        if n > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("nothing came of: {count_sql}");
}
