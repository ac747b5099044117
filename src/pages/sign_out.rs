//! `POST /logout`, and the page that says so when a sign-out could not be confirmed.
//!
//! This router sits outside the session layers: a sign-out reads the cookie and the session
//! record itself, so it works whatever state the session is in (live, idled out, expired, gone)
//! and whatever body it is sent, and nothing saves the record back after it is deleted.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use axum_htmx::HxRedirect;
use serde::Deserialize;

use super::confirm::{self, Ask};
use crate::{
    auth::{
        csrf,
        presented::Presented,
        recent::Gate,
        sign_out::{Scope, Targets, Unfinished, clear_client_state},
    },
    error::AppError,
    layout::Layout,
    state::AppState,
    web::{ClientInfo, PageQuery, SIGNED_OUT_HOME, cache::set_no_store, query_escape, redirect},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/logout", post(logout))
        .route("/logout/unconfirmed", get(logout_unconfirmed))
}

/// Signs this browser out, as far as its scope reaches (see [`crate::auth::sign_out`]); with
/// `scope=others` this browser stays and lands on its account page. A request that may not sign
/// this browser out (no CSRF token of its session, or cross-site) changes nothing, cookies
/// included.
async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    presented: Presented,
) -> Response {
    let htmx = presented.htmx;
    if !presented.allowed {
        return not_from_lectern();
    }
    let mut request = presented.request;
    if let Some(error) = presented.unreadable {
        let mut owed = std::mem::take(&mut request.retry);
        request.session.iter().for_each(|id| owed.add_session(id));
        return unconfirmed(&state, htmx, Unfinished { error, owed });
    }
    if let (Scope::Others | Scope::Global, Some(sid)) = (request.scope, &request.signed_in) {
        let typed = presented.current_password;
        match state.reauth.browser(sid, typed, &client).await {
            Ok(Gate::Open) => {}
            Ok(Gate::Ask { error }) => {
                return ask_first(presented.csrf, request.scope, error, htmx);
            }
            Err(err) => return err.into_response(),
        }
    }
    match state.sign_out.browser(&request, &client).await {
        Ok(Scope::Others) => {
            let mut response = redirect(htmx, "/account");
            set_no_store(&mut response);
            response
        }
        Ok(_) => clear_client_state(redirect(htmx, SIGNED_OUT_HOME), state.client_state()),
        // This browser asked to stay: it keeps its cookies, and hears what went wrong.
        Err(unfinished) if request.scope == Scope::Others => unfinished.error.into_response(),
        Err(unfinished) => unconfirmed(&state, htmx, unfinished),
    }
}

/// A sign-out that may not sign this browser out (no CSRF token of its session, or cross-site):
/// 403, and nothing changes, cookies included.
fn not_from_lectern() -> Response {
    tracing::warn!("sign-out refused: csrf check failed");
    AppError::Forbidden(
        "This sign-out did not come from a Lectern page. Reload the page and try again.",
    )
    .into_response()
}

/// Signing out the others, or everywhere, needs the password entered recently: this asks for it,
/// and sends the same sign-out again with it.
fn ask_first(csrf: Option<String>, scope: Scope, error: Option<String>, htmx: bool) -> Response {
    let what = match scope {
        Scope::Global => "sign out everywhere",
        _ => "sign out your other devices",
    };
    let ask = Ask {
        action: "/logout",
        fields: vec![("scope", scope.as_str().to_owned())],
        what,
        error,
    };
    let layout = Layout::visitor(csrf.unwrap_or_default());
    let mut response = confirm::ask(ask, layout, htmx);
    set_no_store(&mut response);
    response
}

/// A sign-out the server could not confirm: 503 (htmx is sent to the page that says so), with the
/// browser's cookies and storage cleared all the same, and what is still owed sealed into the page
/// so that trying again finishes it (the server settles it later too). Never that it succeeded.
fn unconfirmed(state: &AppState, htmx: bool, unfinished: Unfinished) -> Response {
    tracing::warn!(error = %unfinished.error, "sign-out could not be confirmed");
    let retry = unfinished.owed.seal(&state.keys, state.clock.now());
    let response = if htmx {
        let to = format!("/logout/unconfirmed?retry={}", query_escape(&retry));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            HxRedirect(to),
            "Sign-out not confirmed",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            unconfirmed_page(state, retry),
        )
            .into_response()
    };
    clear_client_state(response, state.client_state())
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/logout_unconfirmed.html")]
struct LogoutUnconfirmedPage {
    layout: Layout,
    retry: String,
}

fn unconfirmed_page(state: &AppState, retry: String) -> LogoutUnconfirmedPage {
    let token = csrf::anonymous_token(&state.keys, state.clock.now());
    LogoutUnconfirmedPage {
        layout: Layout::visitor(token),
        retry,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RetryQuery {
    retry: String,
}

async fn logout_unconfirmed(
    State(state): State<AppState>,
    PageQuery(query): PageQuery<RetryQuery>,
) -> Response {
    let retry = Targets::open(&state.keys, &query.retry, state.clock.now())
        .map(|_| query.retry)
        .unwrap_or_default();
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        unconfirmed_page(&state, retry),
    )
        .into_response();
    set_no_store(&mut response);
    response
}
