//! The browser's way in and out: `/register`, `/login`, `/logout`.

use askama::Template;
use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_extra::extract::cookie::SignedCookieJar;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    AuthSession, CSRF_KEY, CurrentUser, MaybeUser, SESSION_COOKIE, SID_KEY, TOUCHED_KEY,
    backend::Credentials,
    csrf, ratelimit, refresh,
    signin::{self, EndReason},
};
use crate::{
    AppState,
    api::ApiError,
    error::{AppError, Result},
    users::{self, CreateError, DisplayName, Email, Password, User},
    web::{self, ClientInfo, Layout, Notice, PageForm, PageQuery, now},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", get(register_page).post(register))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/logout/unconfirmed", get(logout_unconfirmed))
}

fn auth_error(err: axum_login::Error<super::Backend>) -> AppError {
    match err {
        axum_login::Error::Session(e) => {
            AppError::unavailable(anyhow::Error::new(e).context("session store"))
        }
        axum_login::Error::Backend(e) => e,
    }
}

fn session_error(err: tower_sessions::session::Error) -> AppError {
    AppError::unavailable(anyhow::Error::new(err).context("session store"))
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
    Ok(web::no_store(
        (jar, Redirect::to("/dashboard")).into_response(),
    ))
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
    Ok(web::no_store((jar, Redirect::to(&next)).into_response()))
}

// ---- logout ----

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
        .map_err(|e| AppError::unavailable(anyhow::Error::new(e).context("session store")))?;
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
/// storage (not "cache": it stalls Chromium), and `no-store`. The session cookie's removal is
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
    web::no_store(response)
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
    if sets_cookie(&response, SESSION_COOKIE) || sets_cookie(&response, super::REFRESH_COOKIE) {
        response = web::no_store(response);
    }
    response
}
