//! Who is asking: [`CurrentUser`] and [`MaybeUser`] for pages, [`BearerUser`] for `/api/v1`.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use tower_sessions::Session;

use super::{
    AuthSession, CSRF_KEY, SESSION_COOKIE, SID_KEY, TOUCHED_KEY, session_error,
    signin::{self, EndReason},
};
use crate::{
    AppState,
    api::ApiError,
    error::{AppError, Result},
    users::User,
    web::{self, now},
};

/// A learner with a live sign-in. Rejects with a redirect to the login page.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: User,
    /// The sign-in this browser session belongs to.
    pub sid: String,
    /// This session's CSRF token, for the page's meta tag and forms.
    pub csrf: String,
}

/// `CurrentUser` when there is one; pages that anyone may see use this.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<CurrentUser>);

/// What the session says about the request.
enum Resolved {
    SignedIn(CurrentUser),
    /// No sign-in; `ended` says why a session the browser still had is gone.
    Anonymous {
        ended: Option<&'static str>,
    },
}

/// Who the session says is asking. `explain`: find out why a session the browser still sends is
/// gone (only a login redirect uses that, so pages anyone may see skip the lookups).
async fn resolve(parts: &mut Parts, state: &AppState, explain: bool) -> Result<Resolved> {
    if let Some(cached) = parts.extensions.get::<CurrentUser>() {
        return Ok(Resolved::SignedIn(cached.clone()));
    }
    let auth = AuthSession::from_request_parts(parts, state)
        .await
        .map_err(|(_, msg)| AppError::Unexpected(anyhow::anyhow!("auth layer missing: {msg}")))?;
    let session = auth.session.clone();
    let Some(user) = auth.user else {
        // A cookie without a session: ended by the system (say why) or expired.
        let stale = web::cookie_value(&parts.headers, SESSION_COOKIE)
            .filter(|id| explain && id.parse::<tower_sessions::session::Id>().is_ok());
        let ended = match stale {
            // The note holds a `login_reason`; map it back to the static string.
            Some(id) => Some(match state.kv.session_end_reason(&id).await? {
                Some(note) if note == EndReason::RefreshReuse.login_reason() => "reuse",
                Some(_) => "revoked",
                None => "expired",
            }),
            None => web::sent_cookie(&parts.headers, SESSION_COOKIE).then_some("expired"),
        };
        return Ok(Resolved::Anonymous { ended });
    };
    let sid: Option<String> = session.get(SID_KEY).await.map_err(session_error)?;
    let live = match &sid {
        Some(sid) => state.kv.is_live(sid).await?,
        None => false,
    };
    let Some(live_sid) = sid.clone().filter(|_| live) else {
        // Ended elsewhere (sign-out on another device, refresh-token reuse) or past its absolute
        // lifetime: delete this browser's session too, and say why.
        session.flush().await.map_err(session_error)?;
        let reason = match sid.as_ref().filter(|_| explain) {
            Some(sid) => signin::find(&state.db, sid)
                .await?
                .and_then(|s| s.revoked_reason)
                .and_then(|r| EndReason::from_stored(&r))
                .map_or("expired", EndReason::login_reason),
            None => "expired",
        };
        return Ok(Resolved::Anonymous {
            ended: Some(reason),
        });
    };
    touch(&session).await?;
    let csrf = match session
        .get::<String>(CSRF_KEY)
        .await
        .map_err(session_error)?
    {
        Some(token) => token,
        None => {
            let token = super::csrf::session_token();
            session
                .insert(CSRF_KEY, &token)
                .await
                .map_err(session_error)?;
            token
        }
    };
    let current = CurrentUser {
        user,
        sid: live_sid,
        csrf,
    };
    parts.extensions.insert(current.clone());
    Ok(Resolved::SignedIn(current))
}

/// Idle expiry counts only writes, so a session is written at most once a minute to stay alive
/// without a Redis SET on every page view.
async fn touch(session: &Session) -> Result<()> {
    let now = now();
    let last: i64 = session
        .get(TOUCHED_KEY)
        .await
        .map_err(session_error)?
        .unwrap_or(0);
    if now - last >= 60 {
        session
            .insert(TOUCHED_KEY, now)
            .await
            .map_err(session_error)?;
    }
    Ok(())
}

/// The answer to a page that needs a sign-in: 303 to the login page, or for htmx 401 with
/// `HX-Redirect`, so htmx navigates instead of swapping a login form into a fragment.
pub fn login_required(parts: &Parts, reason: Option<&str>) -> Response {
    let next = return_path(parts);
    let mut to = format!("/login?next={}", web::query_escape(&next));
    if let Some(reason) = reason {
        to.push_str("&reason=");
        to.push_str(reason);
    }
    let response = if web::is_htmx(&parts.headers) {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        if let Ok(v) = HeaderValue::from_str(&to) {
            r.headers_mut().insert("hx-redirect", v);
        }
        r
    } else {
        Redirect::to(&to).into_response()
    };
    web::no_store(response)
}

/// Where to come back to after signing in: the page itself for a GET; for anything else (an htmx
/// enrol, a form post) the page it was sent from, since the action itself cannot be revisited.
fn return_path(parts: &Parts) -> String {
    if parts.method == axum::http::Method::GET {
        return parts
            .uri
            .path_and_query()
            .map_or("/dashboard", |pq| pq.as_str())
            .to_owned();
    }
    ["hx-current-url", "referer"]
        .iter()
        .filter_map(|name| parts.headers.get(*name)?.to_str().ok())
        .filter_map(|value| url::Url::parse(value).ok())
        .map(|url| match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        })
        .find(|path| web::local_path(path).is_some())
        .unwrap_or_else(|| "/dashboard".to_owned())
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match resolve(parts, state, true).await {
            Ok(Resolved::SignedIn(user)) => Ok(user),
            Ok(Resolved::Anonymous { ended }) => Err(login_required(parts, ended)),
            Err(err) => Err(err.into_response()),
        }
    }
}

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match resolve(parts, state, false).await {
            Ok(Resolved::SignedIn(user)) => Ok(Self(Some(user))),
            Ok(Resolved::Anonymous { .. }) => Ok(Self(None)),
            Err(err) => Err(err.into_response()),
        }
    }
}

/// A caller of `/api/v1` with a valid, unrevoked access token.
#[derive(Debug, Clone)]
pub struct BearerUser {
    pub user_id: String,
    pub sid: String,
    pub jti: String,
}

/// The token of an `Authorization: Bearer` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for BearerUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or(ApiError::InvalidToken)?;
        // Signature and claims first: cheap and local. Then one round trip for revocation.
        let claims = state.keys.jwt.verify(token).ok_or(ApiError::InvalidToken)?;
        if !state.kv.access_allowed(&claims.sid, &claims.jti).await? {
            return Err(ApiError::InvalidToken);
        }
        Ok(Self {
            user_id: claims.sub,
            sid: claims.sid,
            jti: claims.jti,
        })
    }
}
