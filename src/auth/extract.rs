//! Who is asking: [`CurrentUser`], [`MaybeUser`] and [`Viewer`] for pages, [`BearerUser`] for
//! `/api/v1`.
//!
//! Every page request with a session checks its sign-in in the shared store, so a sign-in ended
//! anywhere (another instance, an operator, a timeout) ends here at once. A sign-in found idle or
//! past its lifetime is ended then and there, through the one way out.

use axum::{
    extract::{FromRef, FromRequestParts, Request, State},
    http::{HeaderMap, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use axum_extra::{
    TypedHeader,
    extract::cookie::CookieJar,
    headers::{Authorization, authorization::Bearer},
};
use tower_sessions::Session;

use super::{
    AuthSession, CSRF_KEY, Keys, SID_KEY, TOUCHED_KEY,
    sign_ins::{Liveness, SignIns, browser_sign_in_id},
    sign_out::{self, Owed},
};
use crate::{
    accounts::User,
    error::{ApiError, AppError, Result},
    layout::Layout,
    store::sessions::{Beside, unavailable},
    telemetry,
    web::{ClientInfo, TrustedProxies, cookies::SESSION_COOKIE, login_required},
};

/// A learner with a live sign-in. Rejects with the login page (saying why, when the system ended
/// the sign-in).
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: User,
    /// The sign-in this browser session belongs to.
    pub sid: String,
    /// The browser session's id.
    pub session_id: String,
    /// This session's CSRF token, for the page's meta tag and forms.
    pub csrf: String,
    /// The change mark of the learner's enrolments as this request found it, read in the same
    /// round trip as the sign-in's liveness (see [`crate::courses::Catalog`]).
    pub enrolments_mark: Option<String>,
}

impl CurrentUser {
    /// The page frame for this learner.
    pub fn layout(&self) -> Layout {
        Layout {
            csrf_token: self.csrf.clone(),
            user_name: Some(self.user.display_name.clone()),
            ..Layout::default()
        }
    }
}

/// `CurrentUser` when there is one.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<CurrentUser>);

/// Whoever is looking at a page anyone may see, with the page frame for them: a learner's, or a
/// visitor's with a stateless CSRF token (showing a page to a visitor never creates a session).
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user: Option<CurrentUser>,
    pub layout: Layout,
}

/// What the session says about the request.
enum Resolved {
    SignedIn(CurrentUser),
    /// No sign-in; `ended` says why a session the browser still had is gone.
    Anonymous {
        ended: Option<String>,
    },
}

/// Who the session says is asking. `explain`: find out why a session the browser still sends is
/// gone (only a login redirect uses that, so pages anyone may see skip the lookups).
async fn resolve<S>(parts: &mut Parts, state: &S, explain: bool) -> Result<Resolved>
where
    S: Send + Sync,
    SignIns: FromRef<S>,
    TrustedProxies: FromRef<S>,
{
    if let Some(cached) = parts.extensions.get::<CurrentUser>() {
        return Ok(Resolved::SignedIn(cached.clone()));
    }
    let auth = parts
        .extensions
        .get::<AuthSession>()
        .cloned()
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("the auth layer is missing")))?;
    let sign_ins = SignIns::from_ref(state);
    let session = auth.session.clone();
    let Some(user) = auth.user else {
        if !explain {
            return Ok(Resolved::Anonymous { ended: None });
        }
        let ended = explain_stale_cookie(parts, state, &sign_ins).await?;
        return Ok(Resolved::Anonymous { ended });
    };
    let session_id = session.id().map(|id| id.to_string()).unwrap_or_default();
    // A sign-in started before its id derived from the session's keeps the id it stored.
    let stored: Option<String> = session.get(SID_KEY).await.map_err(unavailable)?;
    let sid = stored.unwrap_or_else(|| browser_sign_in_id(&session_id));
    let mark = crate::courses::enrolments_mark(&user.id);
    // Read with the session record when the record's load could (see `read_beside_session`).
    let (liveness, enrolments_mark) = match Beside::take(&session_id, &sid, &mark) {
        Some(read) => {
            telemetry::revocation_checked(read.seconds);
            (
                sign_ins.liveness_from(&sid, read.standing).await?,
                read.mark,
            )
        }
        None => sign_ins.liveness_and_mark(&sid, &mark).await?,
    };
    let reason = match liveness {
        Liveness::Live(_) => None,
        Liveness::Ended(reason) => Some(reason),
    };
    if let Some(reason) = reason {
        // Idle, past its lifetime, or ended elsewhere: end it here too (for a timeout this is
        // where its tokens, row and audit are settled) and delete this browser's record once.
        let client = ClientInfo::from_request_parts(parts, state)
            .await
            .unwrap_or_else(|never| match never {});
        let mut owed = Owed::default();
        owed.add_sid(&sid);
        // The store no longer has it live, so every credential is refused already; what is left
        // (revocation entries of a lapsed sign-in, its row, its audit row) is settled here when
        // it can be, and by the next look otherwise.
        if let Err(unfinished) =
            sign_out::end_all(&sign_ins, &owed, Some(&session_id), reason, &client).await
        {
            tracing::warn!(error = %unfinished.error, "an ended sign-in could not be settled");
        }
        // Deletes this browser's record (once) and makes the layer expire the cookie.
        session.flush().await.map_err(unavailable)?;
        return Ok(Resolved::Anonymous {
            ended: Some(reason.login_reason().to_owned()),
        });
    }
    touch(&session, &sign_ins, &sid).await?;
    let csrf = match session.get::<String>(CSRF_KEY).await.map_err(unavailable)? {
        Some(token) => token,
        None => {
            let token = super::csrf::session_token();
            session
                .insert(CSRF_KEY, &token)
                .await
                .map_err(unavailable)?;
            token
        }
    };
    let current = CurrentUser {
        user,
        sid,
        session_id,
        csrf,
        enrolments_mark,
    };
    sign_ins.remember_learner(&current.session_id, &current.user.id);
    parts.extensions.insert(current.clone());
    Ok(Resolved::SignedIn(current))
}

/// Around the page routes, outside the session layer: when this instance has shown a page to the
/// request's session before (so knows its learner), lets the session record's load also read the
/// browser sign-in's liveness and the learner's enrolment mark, so the view learns who is asking
/// in one Redis round trip. The read belongs to this request only ([`Beside`]); nothing of it is
/// kept. A session new to this instance reads them after its record, as before.
pub async fn read_beside_session(
    State(sign_ins): State<SignIns>,
    request: Request,
    next: Next,
) -> Response {
    if !sign_ins.sessions().reads_beside() {
        return next.run(request).await;
    }
    let known = session_cookie(request.headers())
        .and_then(|session_id| Some((sign_ins.learner_of(&session_id)?, session_id)));
    match known {
        Some((user, session_id)) => {
            let sid = browser_sign_in_id(&session_id);
            let mark = crate::courses::enrolments_mark(&user);
            Beside::scope(session_id, sid, mark, next.run(request)).await
        }
        None => next.run(request).await,
    }
}

/// The session id a request's cookie names, if it names one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    CookieJar::from_headers(headers)
        .get(SESSION_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|id| !id.is_empty())
}

/// Why a session cookie names no session: the system ended it (its note says why), or its record
/// expired while it still held sign-ins, which are ended now so nothing of them survives.
async fn explain_stale_cookie<S>(
    parts: &mut Parts,
    state: &S,
    sign_ins: &SignIns,
) -> Result<Option<String>>
where
    S: Send + Sync,
    TrustedProxies: FromRef<S>,
{
    let Some(session_id) = session_cookie(&parts.headers) else {
        return Ok(None);
    };
    if session_id.parse::<tower_sessions::session::Id>().is_err() {
        return Ok(Some("expired".to_owned()));
    }
    // The system may have ended it (its note says why); either way, whatever it still holds ends
    // now, so nothing of it survives a sign-out that stopped half-way.
    let note = sign_ins.store().session_end_note(&session_id).await?;
    // Its own sign-in if it ever had one (a visitor's session never did), else one it held.
    let own = browser_sign_in_id(&session_id);
    let first = match sign_ins.find(&own).await? {
        Some(_) => own,
        None => match sign_ins
            .store()
            .sign_ins_of_session(&session_id)
            .await?
            .first()
        {
            Some(sid) => sid.clone(),
            None => return Ok(Some(note.unwrap_or_else(|| "expired".to_owned()))),
        },
    };
    let reason = match sign_ins.liveness(&first).await? {
        Liveness::Ended(reason) => reason,
        Liveness::Live(_) => super::sign_ins::EndReason::Expired,
    };
    let client = ClientInfo::from_request_parts(parts, state)
        .await
        .unwrap_or_else(|never| match never {});
    let mut owed = Owed::default();
    owed.add_session(&session_id);
    if let Err(unfinished) = sign_out::end_all(sign_ins, &owed, None, reason, &client).await {
        tracing::warn!(error = %unfinished.error, "the sign-ins of an expired session could not be ended");
    }
    Ok(Some(
        note.unwrap_or_else(|| reason.login_reason().to_owned()),
    ))
}

/// Activity keeps a browser sign-in alive. Idle expiry counts only writes, so the session (and
/// the sign-in's idle deadline) is written at most once a minute (more often only for idle
/// timeouts shorter than four minutes), not on every page view.
async fn touch(session: &Session, sign_ins: &SignIns, sid: &str) -> Result<()> {
    let now = sign_ins.clock().now();
    let every = (sign_ins.lifetimes().idle / 4).clamp(0, 60);
    let last: i64 = session
        .get(TOUCHED_KEY)
        .await
        .map_err(unavailable)?
        .unwrap_or(0);
    if now - last >= every {
        session
            .insert(TOUCHED_KEY, now)
            .await
            .map_err(unavailable)?;
        // Just found live; ended since, it stays ended and the next request says so.
        sign_ins.touch(sid).await?;
    }
    Ok(())
}

impl<S> FromRequestParts<S> for CurrentUser
where
    S: Send + Sync,
    SignIns: FromRef<S>,
    TrustedProxies: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match resolve(parts, state, true).await {
            Ok(Resolved::SignedIn(user)) => Ok(user),
            Ok(Resolved::Anonymous { ended }) => Err(login_required(parts, ended.as_deref()).await),
            Err(err) => Err(err.into_response()),
        }
    }
}

impl<S> FromRequestParts<S> for MaybeUser
where
    S: Send + Sync,
    SignIns: FromRef<S>,
    TrustedProxies: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match resolve(parts, state, false).await {
            Ok(Resolved::SignedIn(user)) => Ok(Self(Some(user))),
            Ok(Resolved::Anonymous { .. }) => Ok(Self(None)),
            Err(err) => Err(err.into_response()),
        }
    }
}

impl<S> FromRequestParts<S> for Viewer
where
    S: Send + Sync,
    SignIns: FromRef<S>,
    Keys: FromRef<S>,
    TrustedProxies: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let MaybeUser(user) = MaybeUser::from_request_parts(parts, state).await?;
        let layout = match &user {
            Some(current) => current.layout(),
            None => {
                let now = SignIns::from_ref(state).clock().now();
                Layout {
                    csrf_token: super::csrf::anonymous_token(&Keys::from_ref(state), now),
                    ..Layout::default()
                }
            }
        };
        Ok(Self { user, layout })
    }
}

/// A caller of `/api/v1` with a valid, unrevoked access token of a live sign-in.
#[derive(Debug, Clone)]
pub struct BearerUser {
    pub user_id: String,
    pub sid: String,
    pub jti: String,
}

impl<S> FromRequestParts<S> for BearerUser
where
    S: Send + Sync,
    SignIns: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let TypedHeader(Authorization(bearer)) =
            TypedHeader::<Authorization<Bearer>>::from_request_parts(parts, state)
                .await
                .map_err(|_| AppError::InvalidToken)?;
        // Signature and claims first: cheap and local. Then one round trip for revocation.
        let claims = SignIns::from_ref(state)
            .authorize_bearer(bearer.token())
            .await?
            .ok_or(AppError::InvalidToken)?;
        Ok(Self {
            user_id: claims.sub,
            sid: claims.sid,
            jti: claims.jti,
        })
    }
}
