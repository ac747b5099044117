//! The browser's way in: `/register` and `/login`. The way out is [`super::signout`].

use askama::Template;
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use axum_extra::extract::cookie::SignedCookieJar;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    AuthSession, CSRF_KEY, CurrentUser, MaybeUser, SID_KEY, TOUCHED_KEY, auth_error,
    backend::Credentials,
    csrf, ratelimit, refresh, session_error,
    signin::{self, EndReason},
};
use crate::{
    AppState,
    error::{AppError, Result},
    users::{self, CreateError, DisplayName, Email, Password, User},
    web::{self, ClientInfo, Layout, Notice, PageForm, PageQuery, now},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", get(register_page).post(register))
        .route("/login", get(login_page).post(login))
}

/// Turns an authenticated learner's browser session into a new sign-in: ends any sign-in it had,
/// cycles the session id (axum-login only does so when the session had no user yet), starts the
/// sign-in, stores its id and a fresh CSRF token in the session, and sets the refresh cookie.
async fn establish(
    state: &AppState,
    auth: &mut AuthSession,
    previous: Option<CurrentUser>,
    user: &User,
    client: &ClientInfo,
    jar: SignedCookieJar,
) -> Result<SignedCookieJar> {
    if let Some(previous) = previous {
        signin::end(state, &previous.sid, EndReason::Replaced, client).await?;
    }
    if auth.session.id().is_some() {
        auth.session.cycle_id().await.map_err(session_error)?;
    }
    let started = signin::start(state, user, client).await?;
    auth.login(user).await.map_err(auth_error)?;
    let session = &auth.session;
    session
        .insert(SID_KEY, &started.sid)
        .await
        .map_err(session_error)?;
    session
        .insert(CSRF_KEY, csrf::session_token())
        .await
        .map_err(session_error)?;
    session
        .insert(TOUCHED_KEY, now())
        .await
        .map_err(session_error)?;
    // Save now so the session has its (new) id, and record it: ending this sign-in from anywhere
    // (API logout, refresh-token reuse) then deletes this browser session, not just its marker.
    session.save().await.map_err(session_error)?;
    if let Some(id) = session.id() {
        state
            .kv
            .bind_session(&started.sid, &id.to_string(), started.expires_at)
            .await?;
    }
    let max_age = started.expires_at - now();
    Ok(refresh::set_cookie(
        jar,
        &started.refresh,
        max_age,
        state.settings.secure_cookies,
    ))
}

// ---- register ----

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RegisterForm {
    email: String,
    display_name: String,
    password: SecretString,
}

#[derive(Debug, Default)]
struct RegisterErrors {
    email: Option<String>,
    display_name: Option<String>,
    password: Option<String>,
}

#[derive(Template)]
#[template(path = "auth/register.html")]
struct RegisterPage {
    layout: Layout,
    email: String,
    display_name: String,
    errors: RegisterErrors,
}

async fn register_page(
    State(state): State<AppState>,
    MaybeUser(current): MaybeUser,
) -> Result<Response> {
    if current.is_some() {
        return Ok(Redirect::to("/dashboard").into_response());
    }
    let page = RegisterPage {
        layout: Layout::new(&state, None),
        email: String::new(),
        display_name: String::new(),
        errors: RegisterErrors::default(),
    };
    Ok(web::render(&page)?.into_response())
}

async fn register(
    State(state): State<AppState>,
    mut auth: AuthSession,
    MaybeUser(current): MaybeUser,
    client: ClientInfo,
    jar: SignedCookieJar,
    PageForm(form): PageForm<RegisterForm>,
) -> Result<Response> {
    ratelimit::per_ip(&state, "register", &client).await?;
    let email = Email::parse(&form.email);
    let display_name = DisplayName::parse(&form.display_name);
    let password = Password::parse(form.password.expose_secret().to_owned());
    let mut errors = RegisterErrors {
        email: email.as_ref().err().cloned(),
        display_name: display_name.as_ref().err().cloned(),
        password: password.as_ref().err().cloned(),
    };
    let rerender = |errors: RegisterErrors| {
        let page = RegisterPage {
            layout: Layout::new(&state, current.as_ref()),
            email: form.email.trim().to_owned(),
            display_name: form.display_name.trim().to_owned(),
            errors,
        };
        web::render_with(StatusCode::UNPROCESSABLE_ENTITY, &page)
    };
    let (Ok(email), Ok(display_name), Ok(password)) = (email, display_name, password) else {
        return rerender(errors);
    };
    let hash = state.passwords.hash(password.secret()).await?;
    let user = match users::create(&state.db, &email, &display_name, hash).await {
        Ok(user) => user,
        Err(CreateError::EmailTaken) => {
            errors.email = Some(CreateError::EmailTaken.to_string());
            return rerender(errors);
        }
        Err(CreateError::Other(err)) => return Err(err),
    };
    tracing::info!(user.id = %user.id, "account created");
    let jar = establish(&state, &mut auth, current, &user, &client, jar).await?;
    Ok((jar, Redirect::to("/dashboard")).into_response())
}

// ---- login ----

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginQuery {
    next: Option<String>,
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginForm {
    email: String,
    password: SecretString,
    next: String,
}

#[derive(Template)]
#[template(path = "auth/login.html")]
struct LoginPage {
    layout: Layout,
    email: String,
    next: String,
    error: Option<String>,
}

/// Plain words for why the system, not the learner, ended a sign-in.
fn reason_notice(reason: &str) -> Option<Notice> {
    let text = match reason {
        "expired" => "Your session expired. Please sign in again.",
        "revoked" => {
            "You were signed out from another device or by an administrator. Please sign in again."
        }
        "reuse" => {
            "For your safety we signed you out everywhere this sign-in was used: its refresh token was used twice, which can mean it was copied. Please sign in again."
        }
        "password_changed" => {
            "Your password was changed, so we signed you out. Please sign in with the new password."
        }
        _ => return None,
    };
    Some(Notice::info(text))
}

fn safe_next(next: Option<&str>) -> String {
    next.and_then(web::local_path)
        .unwrap_or("/dashboard")
        .to_owned()
}

async fn login_page(
    State(state): State<AppState>,
    MaybeUser(current): MaybeUser,
    PageQuery(query): PageQuery<LoginQuery>,
) -> Result<Response> {
    let next = safe_next(query.next.as_deref());
    if current.is_some() {
        return Ok(Redirect::to(&next).into_response());
    }
    let mut layout = Layout::new(&state, None);
    layout.notice = query.reason.as_deref().and_then(reason_notice);
    let page = LoginPage {
        layout,
        email: String::new(),
        next,
        error: None,
    };
    Ok(web::render(&page)?.into_response())
}

async fn login(
    State(state): State<AppState>,
    mut auth: AuthSession,
    MaybeUser(current): MaybeUser,
    client: ClientInfo,
    jar: SignedCookieJar,
    PageForm(form): PageForm<LoginForm>,
) -> Result<Response> {
    ratelimit::per_ip(&state, "login", &client).await?;
    let next = safe_next(Some(&form.next));
    let creds = Credentials::new(&form.email, form.password);
    let email = creds.email.clone();
    ratelimit::account_open(&state, email.as_ref()).await?;
    let Some(user) = auth.authenticate(creds).await.map_err(auth_error)? else {
        ratelimit::account_failed(&state, email.as_ref()).await?;
        tracing::info!(ip = %client.ip, "sign-in refused");
        let page = LoginPage {
            layout: Layout::new(&state, current.as_ref()),
            email: form.email.trim().to_owned(),
            next,
            // One message: it must not say which of the two was wrong.
            error: Some(AppError::InvalidCredentials.to_string()),
        };
        return web::render_with(StatusCode::UNAUTHORIZED, &page);
    };
    let jar = establish(&state, &mut auth, current, &user, &client, jar).await?;
    Ok((jar, Redirect::to(&next)).into_response())
}
