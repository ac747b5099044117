//! Changing the password: every other sign-in ends, this browser stays under a new session, and no sign-in checked against the old password survives.

use axum::http::StatusCode;

use crate::{
    account::{assert_still_works, learner_signed_in_three_times, row_ids},
    helpers::*,
    logout::{SignedIn, assert_everything_refused},
};

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

/// Signs a learner up in this browser and reads their account back from the database.
pub(crate) async fn signed_up_user(app: &TestApp) -> lectern::accounts::User {
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

/// A sign-in that checked the password just before an operator disabled the account is refused
/// when it is stored, and leaves nothing live: the disable's sweep could not have seen it.
#[tokio::test]
async fn a_sign_in_checked_just_before_its_account_was_disabled_is_refused() {
    let app = spawn_app().await;
    let before = signed_up_user(&app).await;
    let operator = lectern::web::ClientInfo::operator();
    app.state
        .leaving
        .disable(&before.id, &operator)
        .await
        .unwrap();
    let stored = stored_for(&app, &before.id).await;
    let late = app.start_api_sign_in(&before).await;
    assert!(
        matches!(late, Err(lectern::AppError::InvalidCredentials)),
        "{late:?}"
    );
    assert!(
        app.state
            .sign_ins
            .live(Some(&before.id))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        stored_for(&app, &before.id).await,
        stored,
        "nothing of it was stored"
    );
}

/// Each instance keeps learners in memory; a password changed on one of them must neither sign
/// the learner out of another that had them cached, nor let the old session in there.
#[tokio::test]
async fn a_password_changed_on_one_instance_holds_on_another_that_had_the_learner_cached() {
    if !real_services() {
        skipped("needs TEST_REDIS_URL and TEST_DATABASE_URL (two instances)");
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

/// A session names the password it was signed in under, and finds no learner once the stored one
/// is another, even while its sign-in is still live in the store; its browser can still sign in.
#[tokio::test]
async fn a_session_signed_in_under_a_replaced_password_finds_no_learner() {
    let app = spawn_app().await;
    let email = unique_email();
    let session = app
        .sign_up(&email, PASSWORD)
        .await
        .cookie("lectern_session");
    let page = app.get_with_session("/dashboard", &session).await;
    assert_eq!(page.status_code(), StatusCode::OK);
    let id: String = sqlx::query_scalar("select id from users where email = $1")
        .bind(&email)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    // Another hash of the same password, written behind the sign-in store's back.
    let rehashed = app
        .state
        .passwords
        .hash(secrecy::SecretString::from(PASSWORD))
        .await
        .unwrap();
    sqlx::query("update users set password_hash = $1 where id = $2")
        .bind(&rehashed)
        .bind(&id)
        .execute(&app.state.db)
        .await
        .unwrap();
    app.state.users.forget(&id);
    // Its browser can sign in again from the login page, whose token it shows.
    let login = app.get_with_session("/login", &session).await;
    assert_eq!(login.status_code(), StatusCode::OK);
    let token = csrf_from(&login.text());
    let again = app
        .server
        .post("/login")
        .clear_cookies()
        .do_not_save_cookies()
        .add_cookie(session.clone())
        .form(&[
            ("csrf_token", token.as_str()),
            ("email", email.as_str()),
            ("password", PASSWORD),
        ])
        .await;
    assert_redirect_to(&again, StatusCode::SEE_OTHER, "/dashboard");
    let refused = app.get_with_session("/dashboard", &session).await;
    assert_eq!(refused.status_code(), StatusCode::SEE_OTHER);
    assert!(
        refused
            .header("location")
            .to_str()
            .unwrap()
            .starts_with("/login"),
        "{:?}",
        refused.header("location")
    );
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

/// One password change is one entry in the account's recent activity, however many sign-ins it
/// ended, though each ending keeps its own audit row.
#[tokio::test]
async fn a_password_change_is_one_entry_in_recent_activity() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    app.api_login(&email).await;
    app.api_login(&email).await;
    let changed = change_password(&app, PASSWORD, NEW_PASSWORD).await;
    assert_redirect_to(&changed, StatusCode::SEE_OTHER, "/account");
    let html = app.server.get("/account").await.text();
    let activity = &html[html.find(r#"id="activity""#).unwrap()..];
    assert_eq!(
        activity.matches("Password changed").count(),
        1,
        "{activity}"
    );
    assert!(
        activity.contains("Password changed; 2 other sign-ins ended"),
        "{activity}"
    );
    let rows: i64 =
        sqlx::query_scalar("select count(*) from audit_events where event = 'password_changed'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(rows, 3, "the browser's own sign-in and the two others");
}
