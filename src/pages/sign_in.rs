//! The browser's way in: `/register` and `/login` (the sign-in itself is
//! [`crate::auth::establish`]). The way out is [`super::sign_out`].

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
use secrecy::SecretString;
use serde::Deserialize;

use crate::{
    accounts::{self, CreateError, Registration, RegistrationErrors},
    audit::Txn,
    auth::{
        AuthSession, CurrentUser, Viewer, auth_error, backend::Credentials, establish::Way,
        records::EndReason,
    },
    error::{AppError, Result},
    layout::{Layout, Notice},
    state::AppState,
    web::{ClientInfo, PageForm, PageQuery, forms::checked, local_path},
};

/// The forms anyone may post; `app` puts them behind `guards::visitors_and_learners`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", get(register_page).post(register))
        .route("/login", get(login_page).post(login))
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
    /// The "shared or public computer" checkbox.
    shared: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/register.html")]
struct RegisterPage {
    layout: Layout,
    email: String,
    display_name: String,
    shared: bool,
    errors: RegistrationErrors,
}

async fn register_page(viewer: Viewer) -> Response {
    if viewer.user.is_some() {
        return Redirect::to("/dashboard").into_response();
    }
    RegisterPage {
        layout: viewer.layout,
        email: String::new(),
        display_name: String::new(),
        shared: false,
        errors: RegistrationErrors::default(),
    }
    .into_response()
}

/// The registration form again (422), with what was typed (but the password) and each error
/// beside its field.
fn register_again(viewer: &Viewer, form: &RegisterForm, errors: RegistrationErrors) -> Response {
    let page = RegisterPage {
        layout: viewer.layout.clone(),
        email: form.email.trim().to_owned(),
        display_name: form.display_name.trim().to_owned(),
        shared: checked(&form.shared),
        errors,
    };
    (StatusCode::UNPROCESSABLE_ENTITY, page).into_response()
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
    let rerender = |errors| Ok(register_again(&viewer, &form, errors));
    let new = match Registration::parse(&form.email, &form.display_name, &form.password) {
        Ok(new) => new,
        Err(errors) => return rerender(errors),
    };
    let hash = state.passwords.hash(new.password.secret()).await?;
    let now = state.clock.now();
    let user = match accounts::create(&state.db, &new.email, &new.display_name, hash, now).await {
        Ok(user) => user,
        Err(CreateError::EmailTaken) => return rerender(RegistrationErrors::email_taken()),
        Err(CreateError::Other(err)) => return Err(err),
    };
    tracing::info!(user.id = %user.id, "account created");
    let way = Way {
        client: &client,
        shared: checked(&form.shared),
        txn: &Txn::new(),
    };
    let jar = state
        .establish
        .browser(&mut auth, replacing(&viewer), &user, way, jar)
        .await?;
    let response = (jar, Redirect::to("/dashboard")).into_response();
    super::bound::offering(&state, &auth, response).await
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
    /// The "shared or public computer" checkbox.
    shared: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/login.html")]
struct LoginPage {
    layout: Layout,
    email: String,
    next: String,
    shared: bool,
    error: Option<String>,
}

/// Plain words for why the system, not the learner, ended a sign-in.
fn reason_notice(reason: &str) -> Option<Notice> {
    let text = match reason {
        "idle" => {
            "You were signed out because there was no activity for a while. Please sign in again."
        }
        "expired" => {
            "You were signed out because your sign-in reached its time limit. Please sign in again."
        }
        "revoked" => {
            "You were signed out from another device or by an administrator. Please sign in again."
        }
        "reuse" => {
            "For your safety we signed you out everywhere this sign-in was used: its refresh token was used twice, which can mean it was copied. Please sign in again."
        }
        "password_changed" => {
            "Your password was changed, so we signed you out. Please sign in with the new password."
        }
        "closed" => {
            "You were signed out because the browser was closed on a shared computer. Please sign in again."
        }
        "provider" => "Your organisation's sign-in service signed you out. Please sign in again.",
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
        shared: false,
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
    let next = safe_next(Some(&form.next));
    let shared = checked(&form.shared);
    let again = |err: AppError| form_again(&viewer, (&form.email, shared), &next, err);
    let creds = Credentials::new(&form.email, form.password.clone());
    let limits = &state.limits;
    let counted = match limits.per_ip("login", &client).await {
        Ok(()) => limits.sign_in_attempt(creds.email.as_ref(), &client).await,
        Err(err) => Err(err),
    };
    let attempt = match counted {
        Ok(attempt) => attempt,
        Err(err) => return again(err),
    };
    let Some(user) = auth.authenticate(creds).await.map_err(auth_error)? else {
        tracing::info!(ip = %client.ip, "sign-in refused");
        // One message: it must not say which of the two was wrong.
        return again(AppError::InvalidCredentials);
    };
    attempt.succeeded().await?;
    let way = Way {
        client: &client,
        shared,
        txn: &Txn::new(),
    };
    let jar = state
        .establish
        .browser(&mut auth, replacing(&viewer), &user, way, jar)
        .await?;
    let response = (jar, Redirect::to(&next)).into_response();
    super::bound::offering(&state, &auth, response).await
}

/// The sign-in form again, with the email kept and why it was refused above it: a wrong email or
/// password (401), or too many attempts (429, with the wait in words and `Retry-After`). Anything
/// else is the error page.
fn form_again(
    viewer: &Viewer,
    (email, shared): (&str, bool),
    next: &str,
    err: AppError,
) -> Result<Response> {
    let status = match &err {
        AppError::InvalidCredentials => StatusCode::UNAUTHORIZED,
        AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => return Err(err),
    };
    let page = LoginPage {
        layout: viewer.layout.clone(),
        email: email.trim().to_owned(),
        next: next.to_owned(),
        shared,
        error: Some(err.to_string()),
    };
    let mut response = (status, page).into_response();
    if let AppError::RateLimited { retry_after } = err {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, retry_after.into());
    }
    Ok(response)
}
