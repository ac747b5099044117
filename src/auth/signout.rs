//! The way out: `POST /logout` (and the page that says when a sign-out could not be confirmed),
//! what every sign-out response carries, and [`guard`], the outermost auth middleware.
//!
//! The revocation itself is [`super::signin::end`], shared with the API's logout and with
//! refresh-token reuse.

use askama::Template;
use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

use super::{
    AuthSession, REFRESH_COOKIE, SESSION_COOKIE, SID_KEY, auth_error, refresh, session_error,
    signin::{self, EndReason},
};
use crate::{
    AppState,
    api::ApiError,
    error::{AppError, Result},
    web::{self, ClientInfo, Layout, PageQuery, now},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/logout", post(logout))
        .route("/logout/unconfirmed", get(logout_unconfirmed))
}

/// Where the learner lands after signing out; the query shows the notice (a flash cookie would be
/// wiped by `Clear-Site-Data: "cookies"` in the same response).
pub const SIGNED_OUT_HOME: &str = "/?signed_out=1";

/// How long the note on the "could not confirm" page stays good.
const RETRY_TTL: i64 = 3600;

/// What a sign-out must end: browser session ids and sign-in ids. When the server cannot confirm
/// a sign-out, this is sealed into the page that says so, and its "try again" button sends it
/// back. Sealed, so a script on the page cannot read a usable session id out of it; holding it
/// lets one do nothing but finish the sign-out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Owed {
    session_ids: Vec<String>,
    sids: Vec<String>,
}

/// What the retry note is sealed for (bound in as associated data).
pub const RETRY_PURPOSE: &str = "lectern.signout-retry";
/// At most this many of each: a note names one browser's sign-out, not a list.
const OWED_MAX: usize = 4;

/// A sign-in id as `random_token(16)` makes them.
fn is_sid(value: &str) -> bool {
    value.len() == 22
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_session_id(value: &str) -> bool {
    value.parse::<tower_sessions::session::Id>().is_ok()
}

impl Owed {
    /// What a browser's session cookie names, when its record could not be read. Only a
    /// well-formed session id counts, so a crafted cookie cannot smuggle other entries in.
    pub fn from_cookie(headers: &HeaderMap) -> Self {
        let mut owed = Self::default();
        if let Some(id) = web::cookie_value(headers, SESSION_COOKIE) {
            owed.add_session(&id);
        }
        owed
    }

    fn add_session(&mut self, id: &str) {
        if is_session_id(id)
            && self.session_ids.len() < OWED_MAX
            && !self.session_ids.iter().any(|s| s == id)
        {
            self.session_ids.push(id.to_owned());
        }
    }

    fn add_sid(&mut self, sid: &str) {
        if is_sid(sid) && self.sids.len() < OWED_MAX && !self.sids.iter().any(|s| s == sid) {
            self.sids.push(sid.to_owned());
        }
    }

    fn seal(&self, keys: &super::Keys) -> String {
        let note = format!(
            "{}|{}|{}",
            now() + RETRY_TTL,
            self.session_ids.join(","),
            self.sids.join(",")
        );
        keys.seal(RETRY_PURPOSE, &note)
    }

    fn open(keys: &super::Keys, sealed: &str) -> Option<Self> {
        let plain = keys.open(RETRY_PURPOSE, sealed)?;
        let mut parts = plain.splitn(3, '|');
        let expires: i64 = parts.next()?.parse().ok()?;
        if expires < now() {
            return None;
        }
        let mut owed = Self::default();
        parts.next()?.split(',').for_each(|id| owed.add_session(id));
        parts.next()?.split(',').for_each(|sid| owed.add_sid(sid));
        Some(owed)
    }
}

/// The sign-in a browser session record belongs to.
async fn sid_of_session(state: &AppState, session_id: &str) -> Result<Option<String>> {
    let Ok(id) = session_id.parse::<tower_sessions::session::Id>() else {
        return Ok(None);
    };
    let record = tower_sessions::SessionStore::load(&state.sessions, &id)
        .await
        .map_err(session_error)?;
    Ok(record.and_then(|r| {
        r.data
            .get(SID_KEY)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }))
}

/// Ends every sign-in and deletes every session `owed` names. Each step is tried even if an
/// earlier one failed; the first failure is returned.
async fn settle(state: &AppState, owed: &Owed, client: &ClientInfo) -> Result<()> {
    let mut outcome = Ok(());
    let mut sids = owed.sids.clone();
    for id in &owed.session_ids {
        match sid_of_session(state, id).await {
            Ok(Some(sid)) if !sids.contains(&sid) => sids.push(sid),
            Ok(_) => {}
            Err(err) => outcome = outcome.and(Err(err)),
        }
    }
    for sid in &sids {
        let ended = signin::end(state, sid, EndReason::SignedOut, client).await;
        outcome = outcome.and(ended);
    }
    for id in &owed.session_ids {
        let deleted = signin::delete_session(state, id).await;
        outcome = outcome.and(deleted);
    }
    outcome
}

async fn logout(
    State(state): State<AppState>,
    mut auth: AuthSession,
    client: ClientInfo,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut owed = web::form_field(&headers, &body, "retry")
        .and_then(|sealed| Owed::open(&state.keys, &sealed))
        .unwrap_or_default();
    if let Some(id) = auth.session.id() {
        owed.add_session(&id.to_string());
    }
    if let Ok(Some(sid)) = auth.session.get::<String>(SID_KEY).await {
        owed.add_sid(&sid);
    }
    let settled = settle(&state, &owed, &client).await;
    // `logout` flushes: the record is deleted from the store, not just emptied.
    let flushed = auth.logout().await.map(drop).map_err(auth_error);
    match settled.and(flushed) {
        Ok(()) => clear_client_state(
            web::redirect(&headers, SIGNED_OUT_HOME),
            state.settings.secure_cookies,
        ),
        Err(err) => {
            err.log();
            unconfirmed(&state, &headers, &owed)
        }
    }
}

/// A sign-out the server could not confirm: 503 (htmx is sent to the page that says so), with the
/// browser's cookies and storage cleared all the same, and what is still owed sealed into the page
/// so that trying again finishes it.
pub fn unconfirmed(state: &AppState, headers: &HeaderMap, owed: &Owed) -> Response {
    let retry = owed.seal(&state.keys);
    let response = if web::is_htmx(headers) {
        // A body of its own (htmx follows HX-Redirect and ignores it), so `guard` can tell this
        // answer from a library's bare failure.
        let mut r = (StatusCode::SERVICE_UNAVAILABLE, "Sign-out not confirmed").into_response();
        let to = format!("/logout/unconfirmed?retry={}", web::query_escape(&retry));
        if let Ok(v) = HeaderValue::from_str(&to) {
            r.headers_mut().insert("hx-redirect", v);
        }
        r
    } else {
        logout_page(Layout::new(state, None), retry)
    };
    clear_client_state(response, state.settings.secure_cookies)
}

#[derive(Template)]
#[template(path = "auth/logout_unconfirmed.html")]
struct LogoutUnconfirmedPage {
    layout: Layout,
    retry: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RetryQuery {
    retry: String,
}

/// Said when the server could not confirm a sign-out: never that it succeeded.
async fn logout_unconfirmed(
    State(state): State<AppState>,
    PageQuery(query): PageQuery<RetryQuery>,
) -> Response {
    let retry = Owed::open(&state.keys, &query.retry)
        .map(|_| query.retry)
        .unwrap_or_default();
    logout_page(Layout::new(&state, None), retry)
}

fn logout_page(layout: Layout, retry: String) -> Response {
    web::render_with(
        StatusCode::SERVICE_UNAVAILABLE,
        &LogoutUnconfirmedPage { layout, retry },
    )
    .map(web::no_store)
    .unwrap_or_else(IntoResponse::into_response)
}

/// What every sign-out response carries, whether or not the server side succeeded: the refresh
/// cookie expired with the exact name and path it was set with, `Clear-Site-Data` for cookies and
/// storage (not "cache": it stalls Chromium), and (through [`guard`]) `no-store`. The session cookie's removal is
/// ensured by [`guard`], which sees the response after tower-sessions has added its own.
pub fn clear_client_state(mut response: Response, secure: bool) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&refresh::removal_cookie(secure).to_string()) {
        headers.append(header::SET_COOKIE, v);
    }
    headers.insert(
        "clear-site-data",
        HeaderValue::from_static("\"cookies\", \"storage\""),
    );
    // `no-store` comes from `guard`, as for every response that sets or clears an auth cookie.
    response
}

fn sets_cookie(response: &Response, name: &str) -> bool {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.as_bytes().starts_with(format!("{name}=").as_bytes()))
}

/// The outermost auth middleware; it sees responses after the session and auth layers.
///
/// - axum-login and tower-sessions answer a session-store or user-lookup failure with an empty 500
///   of their own. That becomes Lectern's answer: a 503 page (JSON under `/api`), and for a
///   sign-out, cleared cookies and the plain statement that it could not be confirmed.
/// - Every sign-out response (and only those) expires the session cookie exactly once.
/// - Every response that sets or clears an auth cookie is `no-store`.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let secure = state.settings.secure_cookies;
    let mut response = next.run(request).await;
    let bare_failure = response.status().is_server_error()
        && !response.headers().contains_key(header::CONTENT_TYPE);
    if bare_failure {
        let cause =
            || AppError::unavailable(anyhow::anyhow!("session store or user lookup failed"));
        // Clearing cookies is for this site's own pages only (no Fetch-Metadata/Origin check has
        // run yet: the failure came first).
        let own_page = crate::auth::csrf::same_origin(&headers);
        response = match path.as_str() {
            "/logout" if own_page => unconfirmed(&state, &headers, &Owed::from_cookie(&headers)),
            "/api/v1/auth/logout" if own_page => {
                clear_client_state(ApiError::App(cause()).into_response(), secure)
            }
            p if p.starts_with("/api/") => ApiError::App(cause()).into_response(),
            _ => cause().into_response(),
        };
    }
    // Only a response that signs out (it carries Clear-Site-Data) expires the session cookie: a
    // refused request (403 CSRF) must leave the learner's cookie alone.
    let signs_out = response.headers().contains_key("clear-site-data");
    if signs_out && !sets_cookie(&response, SESSION_COOKIE) {
        let removal = format!(
            "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&removal) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    if sets_cookie(&response, SESSION_COOKIE) || sets_cookie(&response, REFRESH_COOKIE) {
        response = web::no_store(response);
    }
    response
}
