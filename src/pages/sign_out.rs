//! `POST /logout`, and the page that says so when a sign-out could not be confirmed.
//!
//! This router sits outside the session layers: a sign-out reads the cookie and the session
//! record itself, so it works whatever state the session is in (live, idled out, expired, gone)
//! and whatever body it is sent, and nothing saves the record back after it is deleted.

use std::borrow::Cow;

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    body::Body,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use axum_extra::extract::cookie::CookieJar;
use axum_htmx::{HxRedirect, HxRequest};
use serde::Deserialize;

use crate::{
    auth::{
        AUTH_DATA_KEY, CSRF_KEY, SID_KEY, csrf,
        sign_ins::{EndReason, browser_sign_in_id},
        sign_out::{self, Owed, Scope, clear_client_state},
    },
    error::AppError,
    layout::Layout,
    state::AppState,
    telemetry,
    web::{
        ClientInfo, PageQuery,
        cache::set_no_store,
        cookies::SESSION_COOKIE,
        forms::{MAX_FORM_BYTES, form_field, query_field, read_prefix},
        query_escape, redirect,
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/logout", post(logout))
        .route("/logout/unconfirmed", get(logout_unconfirmed))
}

/// Where the learner lands after signing out; the query shows the notice (a flash cookie would be
/// wiped by `Clear-Site-Data: "cookies"` in the same response).
pub const SIGNED_OUT_HOME: &str = "/?signed_out=1";

/// Signs this browser out: every sign-in its session holds, plus what a retry note still owes;
/// with `scope=global` every other sign-in of the learner too, with `scope=others` only those
/// (this browser stays signed in and lands on its account page).
/// A session cookie whose record still exists needs its CSRF token; without one the request must
/// come from this origin, so a cross-site page can neither sign a learner out nor clear cookies.
async fn logout(
    State(state): State<AppState>,
    cookies: CookieJar,
    HxRequest(htmx): HxRequest,
    client: ClientInfo,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let scope = query_field(query.as_deref(), "scope").map(Cow::into_owned);
    // Any body at all: read what fits and never refuse for the rest.
    let body = read_prefix(body, MAX_FORM_BYTES).await;
    let now = state.clock.now();
    let mut owed = form_field(&headers, &body, "retry")
        .and_then(|sealed| Owed::open(&state.keys, &sealed, now))
        .unwrap_or_default();
    let session_id = cookies.get(SESSION_COOKIE).map(|c| c.value().to_owned());
    let record = match &session_id {
        Some(id) => match state.stores.sessions.find(id).await {
            Ok(record) => record,
            Err(err) if csrf::same_origin(&headers) => {
                owed.add_session(id);
                return unconfirmed(&state, htmx, &owed, err);
            }
            Err(_) => return refused(),
        },
        None => None,
    };
    let read = |key: &str| {
        record
            .as_ref()
            .and_then(|r| r.data.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let allowed = match read(CSRF_KEY) {
        Some(expected) => csrf::matches(&expected, csrf::presented(&headers, &body).as_deref()),
        None => csrf::same_origin(&headers),
    };
    if !allowed {
        return refused();
    }
    if let Some(id) = &session_id {
        owed.add_session(id);
    }
    // The browser sign-in this session holds, while its record says it is signed in.
    let sid = read(SID_KEY).or_else(|| {
        let id = session_id.as_deref()?;
        let signed_in = record.as_ref()?.data.contains_key(AUTH_DATA_KEY);
        signed_in.then(|| browser_sign_in_id(id))
    });
    if let Some(sid) = &sid {
        owed.add_sid(sid);
    }
    let scope = Scope::parse(
        form_field(&headers, &body, "scope")
            .as_deref()
            .or(scope.as_deref()),
    );
    // Reaching beyond this browser needs a learner whose sign-in is live here.
    let user = match (scope, &sid) {
        (Scope::Local, _) | (_, None) => None,
        (_, Some(sid)) => match state.sign_ins.live_user(sid).await {
            Ok(user) => user,
            Err(err) => return unconfirmed(&state, htmx, &owed, err),
        },
    };
    let (scope, owed) = match &user {
        Some(user) => match sign_out::reach(&state.sign_ins, &owed, user, scope).await {
            Ok(reached) => (scope, reached),
            Err(err) if scope == Scope::Others => return err.into_response(),
            Err(err) => return unconfirmed(&state, htmx, &owed, err),
        },
        None => (Scope::Local, owed),
    };
    if scope == Scope::Others {
        // This browser stays signed in; the others are ended as if from another device.
        return match sign_out::end_all(&state.sign_ins, &owed, None, EndReason::Revoked, &client)
            .await
        {
            Ok(_) => {
                telemetry::signed_out(scope.as_str(), EndReason::Revoked.as_str());
                let mut response = redirect(htmx, "/account");
                set_no_store(&mut response);
                response
            }
            Err(unfinished) => unfinished.error.into_response(),
        };
    }
    match sign_out::end_all(&state.sign_ins, &owed, None, EndReason::SignedOut, &client).await {
        Ok(_) => {
            telemetry::signed_out(scope.as_str(), EndReason::SignedOut.as_str());
            clear_client_state(redirect(htmx, SIGNED_OUT_HOME), state.client_state())
        }
        Err(unfinished) => unconfirmed(&state, htmx, &unfinished.owed, unfinished.error),
    }
}

/// A refused sign-out changes nothing, cookies included.
fn refused() -> Response {
    tracing::warn!("sign-out refused: csrf check failed");
    AppError::Forbidden(
        "This sign-out did not come from a Lectern page. Reload the page and try again.",
    )
    .into_response()
}

/// A sign-out the server could not confirm: 503 (htmx is sent to the page that says so), with the
/// browser's cookies and storage cleared all the same, and what is still owed sealed into the page
/// so that trying again finishes it. Never that it succeeded.
fn unconfirmed(state: &AppState, htmx: bool, owed: &Owed, cause: AppError) -> Response {
    tracing::warn!(error = %cause, "sign-out could not be confirmed");
    let retry = owed.seal(&state.keys, state.clock.now());
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
    let retry = Owed::open(&state.keys, &query.retry, state.clock.now())
        .map(|_| query.retry)
        .unwrap_or_default();
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        unconfirmed_page(&state, retry),
    )
        .into_response();
    crate::web::cache::set_no_store(&mut response);
    response
}
