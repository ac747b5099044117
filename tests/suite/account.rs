//! The account page and the API's list of sign-ins: each live sign-in in words, each of which the learner can end (every credential of it then refused, the others kept).

use axum::http::StatusCode;
use cookie::Cookie;
use serde_json::Value;

use crate::{
    helpers::*,
    logout::{SignedIn, assert_everything_refused, browser_with_two_sign_ins},
    password::signed_up_user,
};

#[tokio::test]
async fn the_account_page_shows_the_profile_sign_ins_and_activity() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let html = app.server.get("/account").await.text();
    assert!(html.contains(&email));
    assert!(html.contains("This browser"));
    let activity = &html[html.find(r#"id="activity""#).unwrap()..];
    assert!(activity.contains("<td>Signed in</td>"), "{activity}");
}

/// The account page's recent-activity table.
async fn recent_activity(app: &TestApp) -> String {
    let html = app.server.get("/account").await.text();
    let activity = &html[html.find(r#"id="activity""#).unwrap()..];
    activity[..activity.find("</table>").unwrap()].to_owned()
}

/// The recent activity shows its twenty newest actions however many rows each wrote: an action
/// that ended hundreds of sign-ins is one entry with all of them counted, and the entries below
/// it are still there.
#[tokio::test]
async fn recent_activity_shows_twenty_actions_however_many_rows_one_wrote() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let user_id: String = sqlx::query_scalar("select id from users where email = $1")
        .bind(&email)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    let now = app.state.clock.now();
    // Older than the sign-up: thirty sign-ins, then one action that ended 200 of them.
    let mut rows = Vec::new();
    for i in 0..30 {
        rows.push(("sign_in", now - 1000 - i, None));
    }
    for _ in 0..200 {
        rows.push(("revoked", now - 500, Some("one-action")));
    }
    for (event, at, txn) in rows {
        sqlx::query(
            "insert into audit_events (id, event, user_id, sign_in_id, at, ip, user_agent, txn)
             values ($1, $2, $3, null, $4, '192.0.2.1', 'test', $5)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(event)
        .bind(&user_id)
        .bind(at)
        .bind(txn)
        .execute(&app.state.db)
        .await
        .unwrap();
    }
    let activity = recent_activity(&app).await;
    assert_eq!(activity.matches("<tr><td>").count(), 20, "{activity}");
    assert!(
        activity.contains("<td>Ended 200 sign-ins</td>"),
        "{activity}"
    );
    // The sign-up's own sign-in, the action, and eighteen of the thirty older sign-ins.
    assert_eq!(
        activity.matches("<td>Signed in</td>").count(),
        19,
        "{activity}"
    );
}

/// However many rows one action wrote, a view of the account page reads a bounded number of them:
/// an action of 1,500 rows shows as one entry counting the rows read.
#[tokio::test]
async fn recent_activity_reads_a_bounded_number_of_rows() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let now = app.state.clock.now();
    sqlx::query(
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 1500)
         insert into audit_events (id, event, user_id, sign_in_id, at, ip, user_agent, txn)
         select 'bulk-' || i, 'revoked', u.id, null, $2, '192.0.2.1', 'test', 'one-action'
         from n, users u where u.email = $1",
    )
    .bind(&email)
    .bind(now - 500)
    .execute(&app.state.db)
    .await
    .unwrap();
    let activity = recent_activity(&app).await;
    // The sign-up's sign-in, then the action: the first 1,000 rows read hold 999 of it.
    assert_eq!(activity.matches("<tr><td>").count(), 2, "{activity}");
    assert!(
        activity.contains("<td>Ended 999 sign-ins</td>"),
        "{activity}"
    );
}

/// The rows of the account page's "Where you are signed in" table.
fn sign_in_rows(html: &str) -> usize {
    let table = &html[html.find(r#"id="sign-ins""#).unwrap()..];
    let body = &table[table.find("<tbody>").unwrap()..table.find("</tbody>").unwrap()];
    body.matches("<tr").count()
}

#[tokio::test]
async fn the_account_page_lists_only_sign_ins_that_still_work() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let mut sids = Vec::new();
    for _ in 0..3 {
        let (access, _) = app.api_login(&email).await;
        sids.push(app.sid_of(&access));
    }
    assert_eq!(sign_in_rows(&app.server.get("/account").await.text()), 4);
    // The shared store loses two of them (a Redis restart): those no longer work anywhere...
    for sid in &sids[..2] {
        app.state.stores.sign_ins.end(sid).await.unwrap();
    }
    // ...and are not listed, though their rows were never revoked.
    let html = app.server.get("/account").await.text();
    assert_eq!(
        sign_in_rows(&html),
        2,
        "this browser and the one API sign-in left"
    );
    assert!(html.contains("This browser"));
}

pub(crate) const FIREFOX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

pub(crate) const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

/// Posts the form at `path` (`/login` or `/register`) from a browser of its own (its own cookies
/// and user agent) and returns every credential the sign-in hands out, with an access token
/// obtained through its refresh cookie.
pub(crate) async fn new_browser_signs_in(
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

pub(crate) async fn browser_sign_in(app: &TestApp, email: &str, user_agent: &str) -> SignedIn {
    let fields = [("email", email), ("password", PASSWORD)];
    new_browser_signs_in(app, "/login", &fields, user_agent).await
}

/// Asserts that a sign-in's credentials all still work.
pub(crate) async fn assert_still_works(app: &TestApp, signed_in: &SignedIn) {
    let page = app.get_with_session("/dashboard", &signed_in.session).await;
    assert_eq!(page.status_code(), StatusCode::OK, "session cookie");
    for token in &signed_in.access {
        assert_eq!(app.me(token).await.status_code(), StatusCode::OK, "token");
    }
}

/// The ids of the sign-in rows of the account page, in order.
pub(crate) fn row_ids(html: &str) -> Vec<String> {
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
pub(crate) struct Learner {
    pub(crate) email: String,
    pub(crate) elsewhere: SignedIn,
    pub(crate) api: (String, Cookie<'static>),
}

pub(crate) async fn learner_signed_in_three_times(app: &TestApp) -> Learner {
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

    // htmx: the row goes, and the API client's sign-in ends.
    let api_sid = app.sid_of(&learner.api.0);
    let response = app
        .server
        .post(&format!("/account/sessions/{api_sid}/end"))
        .add_header("HX-Request", "true")
        .add_header("X-CSRF-Token", token.as_str())
        .await;
    assert_eq!(response.status_code(), StatusCode::OK);
    // Only out-of-band parts: the row's own swap is empty, so it goes; the recent activity is
    // shown again with the ending in it, and a notice says what was done.
    let parts = response.text();
    assert!(
        parts.starts_with(r#"<div id="activity" hx-swap-oob="true">"#),
        "{parts}"
    );
    assert!(parts.contains("Sign-in ended"), "{parts}");
    assert!(
        parts.contains(r#"hx-swap-oob="innerHTML:#notices""#),
        "{parts}"
    );
    assert!(parts.contains("Signed out "), "{parts}");
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
            .issue_access_token(&user.id, &started.sid, app.clock.now())
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
