//! Leaving for good: a learner deletes their account (every credential refused at once, on
//! every instance; nothing of them left but anonymous audit rows), and operators disable,
//! enable and delete accounts.

use axum::http::StatusCode;

use crate::{
    helpers::*,
    logout::{SignedIn, assert_everything_refused, signed_in},
};

/// Every text value in every table of the app's database, with where it is.
async fn every_text_value(app: &TestApp) -> Vec<(String, String)> {
    let postgres = app.database_url.starts_with("postgres");
    let columns: Vec<(String, String)> = if postgres {
        sqlx::query_as(
            "select table_name::text, column_name::text from information_schema.columns
             where table_schema = 'public' and data_type in ('text', 'character varying')",
        )
        .fetch_all(&app.state.db)
        .await
        .unwrap()
    } else {
        let tables: Vec<String> = sqlx::query_scalar(
            "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'",
        )
        .fetch_all(&app.state.db)
        .await
        .unwrap();
        let mut columns = Vec::new();
        for table in tables {
            let names: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "select name from pragma_table_info('{table}') where type = 'TEXT'"
            )))
            .fetch_all(&app.state.db)
            .await
            .unwrap();
            columns.extend(names.into_iter().map(|c| (table.clone(), c)));
        }
        columns
    };
    let mut values = Vec::new();
    for (table, column) in columns {
        let found: Vec<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select cast({column} as text) from {table}"
        )))
        .fetch_all(&app.state.db)
        .await
        .unwrap();
        values.extend(
            found
                .into_iter()
                .flatten()
                .map(|v| (format!("{table}.{column}"), v)),
        );
    }
    values
}

/// The learner's id, as the database holds it.
async fn user_id(app: &TestApp, email: &str) -> String {
    let parsed = lectern::accounts::Email::parse(email).unwrap();
    lectern::accounts::find_by_email(&app.state.db, &parsed)
        .await
        .unwrap()
        .unwrap()
        .id
}

async fn delete_own(app: &TestApp, password: &str, confirm: &str) -> axum_test::TestResponse {
    let token = app.csrf("/account").await;
    app.server
        .post("/account/delete")
        .form(&[
            ("csrf_token", token.as_str()),
            ("current_password", password),
            ("confirm", confirm),
        ])
        .await
}

#[tokio::test]
async fn a_deleted_account_leaves_no_credential_and_nothing_that_names_the_learner() {
    let app = spawn_app().await;
    let old: SignedIn = signed_in(&app).await;
    let email = app.me(&old.access[0]).await.json::<serde_json::Value>()["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = user_id(&app, &email).await;
    let enrolled = app
        .post_with_token("/courses/async-rust/enrol", &app.csrf("/dashboard").await)
        .await;
    assert_eq!(enrolled.status_code(), StatusCode::SEE_OTHER);
    let (api, api_refresh) = app.api_login(&email).await;
    // Wrong password, or the email not typed: refused beside the field, nothing deleted.
    let wrong = delete_own(&app, "not the password at all", &email).await;
    assert_eq!(wrong.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.text().contains("That is not your password."));
    let unconfirmed = delete_own(&app, PASSWORD, "someone@example.com").await;
    assert_eq!(unconfirmed.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unconfirmed
            .text()
            .contains("Type your email address exactly")
    );
    assert_eq!(app.me(&api).await.status_code(), StatusCode::OK);
    let deleted = delete_own(&app, PASSWORD, &email.to_uppercase()).await;
    assert_redirect_to(&deleted, StatusCode::SEE_OTHER, "/?account_deleted=1");
    assert!(deleted.maybe_header("clear-site-data").is_some());
    assert_everything_refused(&app, &old).await;
    app.assert_api_credentials_refused(&api, &api_refresh).await;
    let home = app.server.get("/?account_deleted=1").await.text();
    assert!(home.contains("Your account and everything it held were deleted."));
    // Nothing names the learner; their audit rows stay, anonymous.
    let names = [id.as_str(), email.as_str(), "Ada Lovelace"];
    let left: Vec<_> = every_text_value(&app)
        .await
        .into_iter()
        .filter(|(_, value)| names.iter().any(|n| value.contains(n)))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let audit: i64 = sqlx::query_scalar("select count(*) from audit_events where user_id is null")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert!(audit > 0, "the audit rows stay");
    // The email can be used again.
    let again = app.sign_up(&email, PASSWORD).await;
    assert_redirect_to(&again, StatusCode::SEE_OTHER, "/dashboard");
}

#[tokio::test]
async fn an_account_deleted_on_one_instance_is_refused_by_another_at_once() {
    if !real_services() {
        skipped("needs TEST_REDIS_URL and TEST_DATABASE_URL (two instances)");
        return;
    }
    let first = spawn_app().await;
    let second = spawn_peer(&first).await;
    let old = signed_in(&first).await;
    let email = first.me(&old.access[0]).await.json::<serde_json::Value>()["email"]
        .as_str()
        .unwrap()
        .to_owned();
    // Seen by the second instance first, so it has the learner cached.
    assert_eq!(
        second.me(&old.access[1]).await.status_code(),
        StatusCode::OK
    );
    let deleted = delete_own(&first, PASSWORD, &email).await;
    assert_eq!(deleted.status_code(), StatusCode::SEE_OTHER);
    assert_everything_refused(&second, &old).await;
}

#[tokio::test]
async fn an_api_client_deletes_the_account_with_its_password() {
    let app = spawn_app().await;
    let email = app.signed_up().await;
    let (access, refresh) = app.api_login(&email).await;
    let delete = |password: &str| {
        app.server
            .delete("/api/v1/me")
            .clear_cookies()
            .authorization_bearer(&access)
            .json(&serde_json::json!({"password": password}))
    };
    let wrong = delete("not the password at all").await;
    assert_eq!(wrong.status_code(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(&access).await.status_code(), StatusCode::OK);
    let deleted = delete(PASSWORD).await;
    assert_eq!(deleted.status_code(), StatusCode::NO_CONTENT);
    app.assert_api_credentials_refused(&access, &refresh).await;
    assert_eq!(app.account_count().await, 0);
}

fn users_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
        .arg("users")
        .args(args)
        .env_clear()
        .env("DATABASE_URL", &app.database_url)
        .env(
            "REDIS_URL",
            std::env::var("TEST_REDIS_URL").unwrap_or_default(),
        )
        .env("LECTERN_REDIS_KEY_PREFIX", &app.key_prefix)
        .output()
        .unwrap()
}

#[tokio::test]
async fn operators_disable_enable_and_delete_accounts() {
    if !real_services() {
        skipped(
            "needs TEST_REDIS_URL and TEST_DATABASE_URL (the command reaches the servers' stores)",
        );
        return;
    }
    let mut app = spawn_app().await;
    let old = signed_in(&app).await;
    let email = app.me(&old.access[0]).await.json::<serde_json::Value>()["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let disabled = users_cli(&app, &["disable", &email, "--json"]);
    assert!(disabled.status.success(), "{disabled:?}");
    assert_everything_refused(&app, &old).await;
    // A disabled learner's sign-in attempt gets the ordinary refusal.
    app.server.clear_cookies();
    let refused = app.sign_in(&email, PASSWORD, "").await;
    assert_eq!(refused.status_code(), StatusCode::UNAUTHORIZED);
    assert!(
        refused
            .text()
            .contains("The email or password is not right.")
    );
    let api = app
        .server
        .post("/api/v1/auth/login")
        .clear_cookies()
        .json(&serde_json::json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(api.status_code(), StatusCode::UNAUTHORIZED);
    let enabled = users_cli(&app, &["enable", &email]);
    assert!(enabled.status.success(), "{enabled:?}");
    let back = app.sign_in(&email, PASSWORD, "").await;
    assert_redirect_to(&back, StatusCode::SEE_OTHER, "/dashboard");
    let deleted = users_cli(&app, &["delete", &email]);
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(app.account_count().await, 0);
    let page = app.server.get("/dashboard").await;
    assert_eq!(page.status_code(), StatusCode::SEE_OTHER);
    let unknown = users_cli(&app, &["disable", "nobody@example.com"]);
    assert!(!unknown.status.success());
    assert_eq!(String::from_utf8_lossy(&unknown.stderr).lines().count(), 1);
}
