//! The browser's way in: `/register` and `/login`. The way out is [`super::sign_out`].

use askama::Template;
use askama_web::WebTemplate;
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

use crate::{
    accounts::{self, CreateError, DisplayName, Email, Password, User},
    auth::{
        AuthSession, CSRF_KEY, CurrentUser, TOUCHED_KEY, Viewer, auth_error,
        backend::Credentials,
        csrf, refresh_tokens,
        sign_ins::{EndReason, Kind},
        sign_out::{self, Owed},
    },
    error::{AppError, Result},
    layout::{Layout, Notice},
    state::AppState,
    store::sessions::unavailable,
    web::{ClientInfo, PageForm, PageQuery, local_path},
};

/// The forms anyone may post; `app` puts them behind `guards::visitors_and_learners`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", get(register_page).post(register))
        .route("/login", get(login_page).post(login))
}

/// Turns a browser session into a new sign-in: ends any sign-in it had (for `ending`), cycles the
/// session id (axum-login only does so when the session had no user yet, and a fixed id would let
/// a planted cookie ride the sign-in), stores the learner and a fresh CSRF token in the session,
/// starts the sign-in under an id derived from the session's, and sets the refresh cookie.
#[tracing::instrument(name = "sign_in.establish", skip_all)]
pub(super) async fn establish(
    state: &AppState,
    auth: &mut AuthSession,
    previous: Option<(&CurrentUser, EndReason)>,
    user: &User,
    client: &ClientInfo,
    jar: SignedCookieJar,
) -> Result<SignedCookieJar> {
    if let Some((previous, ending)) = previous {
        // The session layer deletes the old record itself when the id is cycled below.
        let mut owed = Owed::default();
        owed.add_sid(&previous.sid);
        sign_out::end_all(
            &state.sign_ins,
            &owed,
            Some(&previous.session_id),
            ending,
            client,
        )
        .await
        .map_err(|unfinished| unfinished.error)?;
    }
    if auth.session.id().is_some() {
        auth.session.cycle_id().await.map_err(unavailable)?;
    }
    auth.login(user).await.map_err(auth_error)?;
    let session = &auth.session;
    session
        .insert(CSRF_KEY, csrf::session_token())
        .await
        .map_err(unavailable)?;
    session
        .insert(TOUCHED_KEY, state.clock.now())
        .await
        .map_err(unavailable)?;
    // Save now so the session has its final id, from which the sign-in's id derives: ending
    // the sign-in from anywhere then deletes this browser session, and a sign-out from this
    // browser finds the sign-in even after the session record itself has expired.
    session.save().await.map_err(unavailable)?;
    let session_id = session
        .id()
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("a saved session without an id")))?
        .to_string();
    let started = match state
        .sign_ins
        .start(
            user,
            client,
            Kind::Browser {
                session: &session_id,
            },
        )
        .await
    {
        Ok(started) => started,
        Err(err) => {
            // No sign-in to go with it: the record must not outlive this request.
            let _ = session.flush().await;
            return Err(err);
        }
    };
    Ok(refresh_tokens::set_cookie(
        jar,
        &started.refresh,
        started.expires_at - state.clock.now(),
        state.settings.secure_cookies,
    ))
}

/// A learner signing in again from the same browser replaces their sign-in there.
fn replacing(viewer: &Viewer) -> Option<(&CurrentUser, EndReason)> {
    viewer.user.as_ref().map(|user| (user, EndReason::Replaced))
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

#[derive(Template, WebTemplate)]
#[template(path = "auth/register.html")]
struct RegisterPage {
    layout: Layout,
    email: String,
    display_name: String,
    errors: RegisterErrors,
}

async fn register_page(viewer: Viewer) -> Response {
    if viewer.user.is_some() {
        return Redirect::to("/dashboard").into_response();
    }
    RegisterPage {
        layout: viewer.layout,
        email: String::new(),
        display_name: String::new(),
        errors: RegisterErrors::default(),
    }
    .into_response()
}

async fn register(
    State(state): State<AppState>,
    mut auth: AuthSession,
    viewer: Viewer,
    client: ClientInfo,
    jar: SignedCookieJar,
    PageForm(form): PageForm<RegisterForm>,
) -> Result<Response> {
    state.limits.per_ip("register", &client).await?;
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
            layout: viewer.layout.clone(),
            email: form.email.trim().to_owned(),
            display_name: form.display_name.trim().to_owned(),
            errors,
        };
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
    };
    let (Ok(email), Ok(display_name), Ok(password)) = (email, display_name, password) else {
        return rerender(errors);
    };
    let hash = state.passwords.hash(password.secret()).await?;
    let created = accounts::create(&state.db, &email, &display_name, hash, state.clock.now()).await;
    let user = match created {
        Ok(user) => user,
        Err(CreateError::EmailTaken) => {
            errors.email = Some(CreateError::EmailTaken.to_string());
            return rerender(errors);
        }
        Err(CreateError::Other(err)) => return Err(err),
    };
    tracing::info!(user.id = %user.id, "account created");
    let jar = establish(&state, &mut auth, replacing(&viewer), &user, &client, jar).await?;
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

#[derive(Template, WebTemplate)]
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
        "idle" => {
            "You were signed out because there was no activity for a while. Please sign in again."
        }
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
    next.and_then(local_path)
        .unwrap_or_else(|| "/dashboard".to_owned())
}

async fn login_page(viewer: Viewer, PageQuery(query): PageQuery<LoginQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    if viewer.user.is_some() {
        return Redirect::to(&next).into_response();
    }
    let mut layout = viewer.layout;
    layout.notice = query.reason.as_deref().and_then(reason_notice);
    LoginPage {
        layout,
        email: String::new(),
        next,
        error: None,
    }
    .into_response()
}

async fn login(
    State(state): State<AppState>,
    mut auth: AuthSession,
    viewer: Viewer,
    client: ClientInfo,
    jar: SignedCookieJar,
    PageForm(form): PageForm<LoginForm>,
) -> Result<Response> {
    state.limits.per_ip("login", &client).await?;
    let next = safe_next(Some(&form.next));
    let creds = Credentials::new(&form.email, form.password);
    let attempt = state
        .limits
        .sign_in_attempt(creds.email.as_ref(), &client)
        .await?;
    let Some(user) = auth.authenticate(creds).await.map_err(auth_error)? else {
        tracing::info!(ip = %client.ip, "sign-in refused");
        let page = LoginPage {
            layout: viewer.layout,
            email: form.email.trim().to_owned(),
            next,
            // One message: it must not say which of the two was wrong.
            error: Some(AppError::InvalidCredentials.to_string()),
        };
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    };
    attempt.succeeded().await?;
    let jar = establish(&state, &mut auth, replacing(&viewer), &user, &client, jar).await?;
    Ok((jar, Redirect::to(&next)).into_response())
}
