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
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tower_sessions::Session;

use super::sign_out::SIGNED_OUT_HOME;
use crate::{
    accounts::{self, Password, User},
    audit,
    auth::{
        AuthSession, CurrentUser, NOTICE_KEY,
        sign_ins::{EndReason, SignIn},
        sign_out::{self, Owed, Scope, clear_client_state},
    },
    error::{AppError, Result},
    layout::{Layout, Notice},
    state::AppState,
    store::sessions::unavailable,
    telemetry,
    web::{ClientInfo, PageForm, PagePath, redirect},
};

/// The learner's routes; `app` puts them behind `guards::learners_only`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/account", get(account))
        .route("/account/sessions/{id}/end", post(end_sign_in))
        .route("/account/password", post(change_password))
}

/// A sign-in as the page shows it.
struct Row {
    sign_in: SignIn,
    device: String,
    browser: String,
    this_browser: bool,
}

#[derive(Debug, Default)]
struct PasswordErrors {
    current_password: Option<String>,
    new_password: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "account/account.html")]
struct AccountPage {
    layout: Layout,
    user: User,
    rows: Vec<Row>,
    events: Vec<audit::Entry>,
    password_errors: PasswordErrors,
}

async fn page(
    state: &AppState,
    current: &CurrentUser,
    layout: Layout,
    password_errors: PasswordErrors,
) -> Result<AccountPage> {
    let rows = state
        .sign_ins
        .live_for_user(&current.user.id)
        .await?
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
    let events = audit::recent_for_user(&state.db, &current.user.id, 20).await?;
    Ok(AccountPage {
        layout,
        user: current.user.clone(),
        rows,
        events,
        password_errors,
    })
}

/// The notice a password change leaves for the account page it redirects to.
const PASSWORD_CHANGED: &str = "password_changed";

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
    if notice.as_deref() == Some(PASSWORD_CHANGED) {
        layout = layout.with_notice(Notice::success(
            "Your password was changed. Every other sign-in was ended; this browser stays signed in.",
        ));
    }
    page(&state, &current, layout, PasswordErrors::default()).await
}

/// Ends one of the learner's live sign-ins, as from another device: its browser lands on the
/// login page saying so. htmx gets an empty 200 (the row goes); a plain form goes back to the
/// account page. Ending this browser's own sign-in is signing out. Not one of the learner's live
/// sign-ins: 404, nothing ended.
async fn end_sign_in(
    State(state): State<AppState>,
    current: CurrentUser,
    auth: AuthSession,
    HxRequest(htmx): HxRequest,
    client: ClientInfo,
    PagePath(id): PagePath,
) -> Result<Response> {
    let ended = sign_out::end_one(
        &state.sign_ins,
        &current.user.id,
        &id,
        &current.sid,
        Some(&current.session_id),
        &client,
    )
    .await?;
    if !ended {
        return Err(AppError::NotFound);
    }
    if id == current.sid {
        // This browser's record goes with its cookie.
        auth.session.flush().await.map_err(unavailable)?;
        return Ok(clear_client_state(
            redirect(htmx, SIGNED_OUT_HOME),
            state.client_state(),
        ));
    }
    Ok(if htmx {
        StatusCode::OK.into_response()
    } else {
        Redirect::to("/account").into_response()
    })
}

/// Ends every sign-in of the learner but the ones this browser holds, for a password change.
async fn end_other_sign_ins(
    state: &AppState,
    current: &CurrentUser,
    client: &ClientInfo,
) -> Result<()> {
    let mut presented = Owed::default();
    presented.add_sid(&current.sid);
    presented.add_session(&current.session_id);
    let others =
        sign_out::reach(&state.sign_ins, &presented, &current.user.id, Scope::Others).await?;
    sign_out::end_all(
        &state.sign_ins,
        &others,
        None,
        EndReason::PasswordChanged,
        client,
    )
    .await
    .map(drop)
    .map_err(|unfinished| unfinished.error)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PasswordForm {
    current_password: SecretString,
    new_password: SecretString,
}

/// Changes the learner's password: every other sign-in ends (reason `password_changed`), and this
/// browser is signed in again under a new session id and a new sign-in, so its old session
/// cookie, access tokens and refresh cookie die with the old password. A wrong current password
/// counts as a failed sign-in (the same limits), and like a weak new one re-renders the form with
/// the error beside the field (422) and ends nothing.
async fn change_password(
    State(state): State<AppState>,
    current: CurrentUser,
    mut auth: AuthSession,
    client: ClientInfo,
    jar: SignedCookieJar,
    PageForm(form): PageForm<PasswordForm>,
) -> Result<Response> {
    let rerender = async |errors: PasswordErrors| -> Result<Response> {
        let page = page(&state, &current, current.layout(), errors).await?;
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
    };
    let weak = Password::parse(form.new_password.expose_secret().to_owned()).err();
    let email = accounts::Email::parse(&current.user.email).ok();
    let attempt = state
        .limits
        .sign_in_attempt(email.as_ref(), &client)
        .await?;
    // Checked against the stored hash, not the cached learner's.
    let stored = accounts::find_by_id(&state.db, &current.user.id)
        .await?
        .map(|user| user.password_hash);
    let right = state
        .passwords
        .verify(form.current_password.clone(), stored)
        .await?;
    if !right {
        telemetry::sign_in_failed();
        return rerender(PasswordErrors {
            current_password: Some("That is not your current password.".to_owned()),
            new_password: weak,
        })
        .await;
    }
    attempt.succeeded().await?;
    let new = match Password::parse(form.new_password.expose_secret().to_owned()) {
        Ok(new) => new,
        Err(message) => {
            return rerender(PasswordErrors {
                new_password: Some(message),
                ..PasswordErrors::default()
            })
            .await;
        }
    };
    let hash = state.passwords.hash(new.secret()).await?;
    // Every other sign-in ends before the new password is stored, so a store that cannot be
    // reached fails the change with nothing changed; and once more after, for a sign-in that was
    // checked against the old password a moment before (a later one is refused by
    // `SignIns::start`). Then this browser's own, with whatever else it holds.
    end_other_sign_ins(&state, &current, &client).await?;
    accounts::set_password_hash(&state.db, &current.user.id, &hash).await?;
    state.users.forget(&current.user.id);
    tracing::info!(user.id = %current.user.id, "password changed");
    end_other_sign_ins(&state, &current, &client).await?;
    let user = User {
        password_hash: hash,
        ..current.user.clone()
    };
    let jar = super::sign_in::establish(
        &state,
        &mut auth,
        Some((&current, EndReason::PasswordChanged)),
        &user,
        &client,
        jar,
    )
    .await?;
    auth.session
        .insert(NOTICE_KEY, PASSWORD_CHANGED)
        .await
        .map_err(unavailable)?;
    telemetry::signed_out(Scope::Others.as_str(), EndReason::PasswordChanged.as_str());
    Ok((jar, Redirect::to("/account")).into_response())
}
