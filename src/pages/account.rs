//! The account page: profile, where the learner is signed in (each of which they can end), the
//! password change, recent activity.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_extra::extract::cookie::SignedCookieJar;
use axum_htmx::HxRequest;
use secrecy::SecretString;
use serde::Deserialize;
use tower_sessions::Session;

use super::confirm::{self, Ask};
use crate::{
    accounts::{self, User},
    audit,
    auth::{
        AuthSession, CurrentUser, NOTICE_KEY,
        leaving::DeletionErrors,
        password_change::{Changed, PasswordErrors},
        recent::Gate,
        records::{EndReason, SignIn},
        sign_out::{Caller, clear_client_state},
    },
    error::{AppError, Result},
    layout::{Layout, Notice},
    state::AppState,
    store::session_records::unavailable,
    web::{ClientInfo, MaybeForm, PageForm, PagePath, SIGNED_OUT_HOME, redirect},
};

/// The learner's routes; `app` puts them behind `guards::learners_only`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/account", get(account))
        .route("/account/sessions/{id}/end", post(end_sign_in))
        .route("/account/password", post(change_password))
        .route("/account/profile", post(rename))
        .route("/account/delete", post(delete_account))
}

/// A sign-in as the page shows it.
struct Row {
    sign_in: SignIn,
    device: String,
    browser: String,
    this_browser: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "account/account.html")]
struct AccountPage {
    layout: Layout,
    user: User,
    rows: Vec<Row>,
    events: Vec<audit::Entry>,
    password_errors: PasswordErrors,
    /// What the learner typed as a new display name, and why it was refused.
    name_error: Option<(String, String)>,
    deletion_errors: DeletionErrors,
    oob: bool,
}

/// The out-of-band part of [`device_ended`].
#[derive(Template, WebTemplate)]
#[template(
    source = r#"{% include "partials/activity.html" %}
{% include "partials/notice.html" %}"#,
    ext = "html"
)]
struct DeviceEnded {
    events: Vec<audit::Entry>,
    oob: bool,
    notice: Notice,
}

/// How many recent events the account page shows.
const RECENT: usize = 20;

async fn page(
    state: &AppState,
    current: &CurrentUser,
    layout: Layout,
    password_errors: PasswordErrors,
) -> Result<AccountPage> {
    let (live, events) = state
        .sign_ins
        .live_with_activity(&current.user.id, RECENT)
        .await?;
    let rows = live
        .into_iter()
        .map(|sign_in| {
            let described = sign_in.described();
            Row {
                this_browser: sign_in.id == current.sid,
                device: described.device,
                browser: described.browser,
                sign_in,
            }
        })
        .collect();
    Ok(AccountPage {
        layout,
        user: current.user.clone(),
        rows,
        events,
        password_errors,
        name_error: None,
        deletion_errors: DeletionErrors::default(),
        oob: false,
    })
}

/// The notice a password change leaves for the account page it redirects to.
const PASSWORD_CHANGED: &str = "password_changed";
/// The notice a new display name leaves.
const RENAMED: &str = "renamed";

async fn account(
    State(state): State<AppState>,
    current: CurrentUser,
    session: Session,
) -> Result<AccountPage> {
    let mut layout = current.layout();
    // Read first: removing marks the session for saving, which only a shown notice needs.
    let notice: Option<String> = session.get(NOTICE_KEY).await.map_err(unavailable)?;
    if notice.is_some() {
        session
            .remove::<String>(NOTICE_KEY)
            .await
            .map_err(unavailable)?;
    }
    let said = match notice.as_deref() {
        Some(PASSWORD_CHANGED) => {
            "Your password was changed. Every other sign-in was ended; this browser stays signed in."
        }
        Some(RENAMED) => "Your display name was changed.",
        _ => "",
    };
    if !said.is_empty() {
        layout = layout.with_notice(Notice::success(said));
    }
    page(&state, &current, layout, PasswordErrors::default()).await
}

/// Ends one of the learner's live sign-ins, as from another device: its browser lands on the
/// login page saying so. htmx gets an empty 200 (the row goes); a plain form goes back to the
/// account page. Ending this browser's own sign-in is signing out. Not one of the learner's live
/// sign-ins: 404, nothing ended.
/// Ending another sign-in needs the password entered recently: the prompt, when it was not.
async fn password_first(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
    form: Confirmed,
    client: &ClientInfo,
    htmx: bool,
) -> Result<Option<Response>> {
    let gate = state
        .reauth
        .browser(&current.sid, form.current_password, client);
    let Gate::Ask { error } = gate.await? else {
        return Ok(None);
    };
    let action = format!("/account/sessions/{id}/end");
    let ask = Ask {
        action: &action,
        fields: Vec::new(),
        what: "sign out that device",
        error,
    };
    Ok(Some(confirm::ask(ask, current.layout(), htmx)))
}

async fn end_sign_in(
    State(state): State<AppState>,
    current: CurrentUser,
    auth: AuthSession,
    HxRequest(htmx): HxRequest,
    client: ClientInfo,
    PagePath(id): PagePath,
    MaybeForm(form): MaybeForm<Confirmed>,
) -> Result<Response> {
    if id != current.sid
        && let Some(ask) = password_first(&state, &current, &id, form, &client, htmx).await?
    {
        return Ok(ask);
    }
    let caller = Caller {
        sid: &current.sid,
        session: Some(&current.session_id),
    };
    let ended = state.sign_out.one(&current.user.id, &id, caller, &client);
    match ended.await? {
        None => Err(AppError::NotFound),
        Some((EndReason::SignedOut, _)) => {
            // This browser's record goes with its cookie.
            auth.session.flush().await.map_err(unavailable)?;
            let home = redirect(htmx, SIGNED_OUT_HOME);
            Ok(clear_client_state(home, state.client_state()))
        }
        Some((_, row)) if htmx => device_ended(&state, &current, &row).await,
        Some(_) => Ok(Redirect::to("/account").into_response()),
    }
}

/// The htmx answer to ending another device: its row goes (the main swap, empty), and out of
/// band the recent activity with the ending in it and a notice that says what was done.
async fn device_ended(state: &AppState, current: &CurrentUser, row: &SignIn) -> Result<Response> {
    let device = row.described();
    let said = format!("Signed out {}, {}.", device.device, device.browser);
    Ok(DeviceEnded {
        events: audit::recent_for_user(&state.db, &current.user.id, RECENT).await?,
        oob: true,
        notice: Notice::success(said),
    }
    .into_response())
}

/// What needs the password entered recently may carry it (see [`crate::auth::recent`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Confirmed {
    current_password: Option<SecretString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PasswordForm {
    current_password: SecretString,
    new_password: SecretString,
}

/// Changes the learner's password (see [`crate::auth::password_change`]): 303 back to the account
/// page with a notice, or the form again (422) with the error beside the field.
async fn change_password(
    State(state): State<AppState>,
    current: CurrentUser,
    mut auth: AuthSession,
    client: ClientInfo,
    jar: SignedCookieJar,
    PageForm(form): PageForm<PasswordForm>,
) -> Result<Response> {
    let (old, new) = (form.current_password, form.new_password);
    let changed = state
        .password_change
        .change(&current, &mut auth, old, new, &client, jar)
        .await?;
    match changed {
        Changed::Yes(jar) => {
            auth.session
                .insert(NOTICE_KEY, PASSWORD_CHANGED)
                .await
                .map_err(unavailable)?;
            let response = (jar, Redirect::to("/account")).into_response();
            super::bound::offering(&state, &auth, response).await
        }
        Changed::No(errors) => {
            let page = page(&state, &current, current.layout(), errors).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProfileForm {
    display_name: String,
}

/// A new display name: 303 back to the account page with a notice, or the page again (422) with
/// the error beside the field.
async fn rename(
    State(state): State<AppState>,
    current: CurrentUser,
    session: Session,
    PageForm(form): PageForm<ProfileForm>,
) -> Result<Response> {
    let name = match accounts::DisplayName::parse(&form.display_name) {
        Ok(name) => name,
        Err(message) => {
            let layout = current.layout();
            let mut page = page(&state, &current, layout, PasswordErrors::default()).await?;
            page.name_error = Some((form.display_name.trim().to_owned(), message));
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    accounts::set_display_name(&state.db, &current.user.id, &name).await?;
    state.users.forget(&current.user.id);
    session
        .insert(NOTICE_KEY, RENAMED)
        .await
        .map_err(unavailable)?;
    Ok(Redirect::to("/account").into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteForm {
    current_password: SecretString,
    confirm: String,
}

/// Deletes the learner's account (see [`crate::auth::leaving`]): every sign-in ends, the data
/// goes, and this browser lands on the home page saying so; or the page again (422) with the
/// errors beside the fields, nothing deleted.
async fn delete_account(
    State(state): State<AppState>,
    current: CurrentUser,
    auth: AuthSession,
    HxRequest(htmx): HxRequest,
    client: ClientInfo,
    PageForm(form): PageForm<DeleteForm>,
) -> Result<Response> {
    let leaving = &state.leaving;
    let (typed, confirm) = (form.current_password, form.confirm);
    match leaving
        .delete_own(&current.user, typed, Some(&confirm), &client)
        .await?
    {
        Ok(()) => {
            auth.session.flush().await.map_err(unavailable)?;
            let home = redirect(htmx, "/?account_deleted=1");
            Ok(clear_client_state(home, state.client_state()))
        }
        Err(errors) => {
            let layout = current.layout();
            let mut page = page(&state, &current, layout, PasswordErrors::default()).await?;
            page.deletion_errors = errors;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}
