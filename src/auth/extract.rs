//! Who is asking: [`CurrentUser`], [`MaybeUser`] and [`Viewer`] for pages, [`BearerUser`] for
//! `/api/v1`.
//!
//! Every page request with a session checks its sign-in in the shared store, so a sign-in ended
//! anywhere (another instance, an operator, a timeout) ends here at once. A sign-in found idle or
//! past its lifetime is ended then and there, through the sign-out service.

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
    AuthSession, Keys,
    bound::Binding,
    sign_ins::{Lifetimes, Liveness, SignIns, browser_sign_in_id},
    sign_out::SignOut,
};
use crate::{
    accounts::User,
    clock::Clock,
    error::{ApiError, AppError, Result},
    layout::{Layout, SignInClock},
    store::{
        LiveSignIn, SessionRecords,
        read_ahead::{KnownLearners, ReadAhead},
        session_records::unavailable,
    },
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
    /// Whether the sign-in was made on a shared or public computer.
    pub shared: bool,
    /// When the learner last entered their password for this sign-in.
    pub auth_at: i64,
    /// The sign-in's clock, for the page's script.
    pub clock: SignInClock,
}

impl CurrentUser {
    /// The page frame for this learner.
    pub fn layout(&self) -> Layout {
        Layout {
            csrf_token: self.csrf.clone(),
            user_name: Some(self.user.display_name.clone()),
            sign_in: Some(self.clock.clone()),
            ..Layout::default()
        }
    }

    /// Whether the learner entered their password for this sign-in within `window` seconds.
    pub fn recently_authenticated(&self, window: i64) -> bool {
        self.clock.now - self.auth_at <= window
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
    SignedIn(Box<CurrentUser>),
    /// No sign-in; `ended` says why a session the browser still had is gone. `unbound`: the
    /// session's sign-in is device-bound and this request came without the bound cookie.
    Anonymous {
        ended: Option<String>,
        unbound: Option<Unbound>,
    },
}

/// A bound sign-in whose session cookie came alone: the sign-in, and when its password was
/// entered. A page shown for it asks whether the binding is moments old
/// ([`SignIns::binding_settling`]); a login redirect does not need to.
struct Unbound {
    sid: String,
    auth_at: i64,
}

/// Who the session says is asking. `explain`: find out why a session the browser still sends is
/// gone (only a login redirect uses that, so pages anyone may see skip the lookups).
async fn resolve<S>(parts: &mut Parts, state: &S, explain: bool) -> Result<Resolved>
where
    S: Send + Sync,
    SignIns: FromRef<S>,
    SignOut: FromRef<S>,
    Clock: FromRef<S>,
    Lifetimes: FromRef<S>,
    KnownLearners: FromRef<S>,
    Binding: FromRef<S>,
    TrustedProxies: FromRef<S>,
    Keys: FromRef<S>,
{
    if let Some(cached) = parts.extensions.get::<CurrentUser>() {
        return Ok(Resolved::SignedIn(Box::new(cached.clone())));
    }
    let auth = parts
        .extensions
        .get::<AuthSession>()
        .cloned()
        .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("the auth layer is missing")))?;
    let session = auth.session.clone();
    let Some(user) = auth.user else {
        let ended = match session_cookie(&parts.headers) {
            Some(stale) if explain => {
                let client = client_of(parts, state).await;
                Some(
                    SignOut::from_ref(state)
                        .stale_session(&stale, &client)
                        .await?,
                )
            }
            _ => None,
        };
        return Ok(Resolved::Anonymous {
            ended,
            unbound: None,
        });
    };
    let sign_ins = SignIns::from_ref(state);
    let session_id = session.id().map(|id| id.to_string()).unwrap_or_default();
    let sid = browser_sign_in_id(&session_id);
    let liveness = match ReadAhead::take_live(&session_id, &sid) {
        Some((live, seconds)) => {
            telemetry::revocation_checked(seconds);
            sign_ins.liveness_of(&sid, live).await?
        }
        None => sign_ins.liveness(&sid).await?,
    };
    let live = match liveness {
        Liveness::Live(live) => live,
        Liveness::Ended(reason) => return lapsed(parts, state, &session, &sid, reason).await,
    };
    // A device-bound sign-in: its session cookie alone is not enough.
    if live.bound && !Binding::from_ref(state).holds(&parts.headers, &sid) {
        let client = client_of(parts, state).await;
        tracing::warn!(sign_in.id = %sid, ip = %client.ip, "a device-bound sign-in's session cookie came without its bound cookie; refused");
        telemetry::bound_refused("cookie");
        Binding::from_ref(state).refused(&sid, &client).await;
        return Ok(Resolved::Anonymous {
            ended: None,
            unbound: Some(Unbound {
                sid,
                auth_at: live.auth_at,
            }),
        });
    }
    let (now, lifetimes) = (Clock::from_ref(state).now(), Lifetimes::from_ref(state));
    let live = kept_up(&session, &sign_ins, &lifetimes, now, &sid, live).await?;
    let csrf = super::csrf::session_token(&Keys::from_ref(state), &session_id);
    let clock = SignInClock {
        now,
        idle_until: live.idle_until.min(live.expires_at),
        warn_before: lifetimes.idle_warning,
        heartbeat_every: if live.shared() {
            (lifetimes.shared_close / 3).max(1)
        } else {
            0
        },
        learner: crate::crypto::derived_id("lectern.page-learner", &user.id),
    };
    let current = CurrentUser {
        shared: live.shared(),
        auth_at: live.auth_at,
        user,
        sid,
        session_id,
        csrf,
        clock,
    };
    KnownLearners::from_ref(state).remember(&current.session_id, &current.user.id);
    parts.extensions.insert(current.clone());
    Ok(Resolved::SignedIn(Box::new(current)))
}

/// A browser sign-in found idle, past its lifetime or ended elsewhere: it is ended here too (for
/// a timeout this is where its tokens, row and audit are settled). The store no longer has it
/// live, so every credential is refused already; what is left is settled later if it cannot be
/// now. This browser's record is deleted, and the layer expires the cookie.
async fn lapsed<S>(
    parts: &mut Parts,
    state: &S,
    session: &Session,
    sid: &str,
    reason: super::records::EndReason,
) -> Result<Resolved>
where
    S: Send + Sync,
    SignOut: FromRef<S>,
    TrustedProxies: FromRef<S>,
{
    let client = client_of(parts, state).await;
    let session_id = session.id().map(|id| id.to_string()).unwrap_or_default();
    let _ = SignOut::from_ref(state)
        .lapsed(sid, &session_id, reason, &client)
        .await;
    session.flush().await.map_err(unavailable)?;
    Ok(Resolved::Anonymous {
        ended: Some(reason.login_reason().to_owned()),
        unbound: None,
    })
}

/// Keeps a live sign-in going as a page view does: activity moves its idle deadline (written at
/// most once a minute, or every quarter of the idle timeout when that is shorter than four
/// minutes, not on every view), and on a shared computer a view, like a page's heartbeat, says
/// the browser is open (written once half the close window has gone by). The sign-in as it is
/// after.
async fn kept_up(
    session: &Session,
    sign_ins: &SignIns,
    lifetimes: &Lifetimes,
    now: i64,
    sid: &str,
    live: LiveSignIn,
) -> Result<LiveSignIn> {
    let idle = lifetimes.idle_of(live.shared());
    let every = (idle / 4).clamp(0, 60);
    // Activity was last recorded one idle timeout before the idle deadline.
    let last = live.idle_until - idle;
    let mut live = live;
    if now - last >= every {
        // Saved again (with nothing in it changed), the record is kept as long as the sign-in.
        session.set_expiry(session.expiry());
        // Just found live; ended since, it stays ended and the next request says so.
        if let Some(touched) = sign_ins.touch(sid).await? {
            live = touched;
        }
    }
    if let Some(open_until) = live.open_until
        && open_until - now < lifetimes.shared_close / 2
        && sign_ins.heartbeat(sid).await?
    {
        live.open_until = Some(now + lifetimes.shared_close);
    }
    Ok(live)
}

async fn client_of<S>(parts: &mut Parts, state: &S) -> ClientInfo
where
    S: Send + Sync,
    TrustedProxies: FromRef<S>,
{
    ClientInfo::from_request_parts(parts, state)
        .await
        .unwrap_or_else(|never| match never {})
}

/// Around the page routes, outside the session layer: when this instance has shown a page to the
/// request's session before (so knows its learner), lets the session record's load also read the
/// browser sign-in's liveness and the learner's enrolment mark, so the view learns who is asking
/// in one Redis round trip ([`ReadAhead`]). A session new to this instance reads them after its
/// record.
pub async fn read_ahead(
    State((records, learners)): State<(SessionRecords, KnownLearners)>,
    request: Request,
    next: Next,
) -> Response {
    if !records.reads_ahead() {
        return next.run(request).await;
    }
    let known = session_cookie(request.headers())
        .and_then(|session_id| Some((learners.of(&session_id)?, session_id)));
    match known {
        Some((user, session_id)) => {
            let sid = browser_sign_in_id(&session_id);
            let mark = crate::courses::enrolments_mark(&user);
            ReadAhead::scope(session_id, sid, mark, next.run(request)).await
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

impl<S> FromRequestParts<S> for CurrentUser
where
    S: Send + Sync,
    SignIns: FromRef<S>,
    SignOut: FromRef<S>,
    Clock: FromRef<S>,
    Lifetimes: FromRef<S>,
    KnownLearners: FromRef<S>,
    Binding: FromRef<S>,
    TrustedProxies: FromRef<S>,
    Keys: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match resolve(parts, state, true).await {
            Ok(Resolved::SignedIn(user)) => Ok(*user),
            Ok(Resolved::Anonymous { ended, .. }) => {
                Err(login_required(parts, ended.as_deref()).await)
            }
            Err(err) => Err(err.into_response()),
        }
    }
}

impl<S> FromRequestParts<S> for MaybeUser
where
    S: Send + Sync,
    SignIns: FromRef<S>,
    SignOut: FromRef<S>,
    Clock: FromRef<S>,
    Lifetimes: FromRef<S>,
    KnownLearners: FromRef<S>,
    Binding: FromRef<S>,
    TrustedProxies: FromRef<S>,
    Keys: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match resolve(parts, state, false).await {
            Ok(Resolved::SignedIn(user)) => Ok(Self(Some(*user))),
            Ok(Resolved::Anonymous { .. }) => Ok(Self(None)),
            Err(err) => Err(err.into_response()),
        }
    }
}

impl<S> FromRequestParts<S> for Viewer
where
    S: Send + Sync,
    SignIns: FromRef<S>,
    SignOut: FromRef<S>,
    Clock: FromRef<S>,
    Lifetimes: FromRef<S>,
    KnownLearners: FromRef<S>,
    Binding: FromRef<S>,
    Keys: FromRef<S>,
    TrustedProxies: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match resolve(parts, state, false).await {
            Ok(Resolved::SignedIn(user)) => Ok(Self {
                layout: user.layout(),
                user: Some(*user),
            }),
            Ok(Resolved::Anonymous { unbound, .. }) => {
                let now = Clock::from_ref(state).now();
                let mut layout =
                    Layout::visitor(super::csrf::anonymous_token(&Keys::from_ref(state), now));
                // A binding moments old: the browser looks again in a moment, with the bound
                // cookie it has by then.
                if let Some(unbound) = unbound {
                    layout.look_again = SignIns::from_ref(state)
                        .binding_settling(&unbound.sid, unbound.auth_at)
                        .await
                        .map_err(IntoResponse::into_response)?;
                }
                Ok(Self { user: None, layout })
            }
            Err(err) => Err(err.into_response()),
        }
    }
}

/// A caller of `/api/v1` with a valid, unrevoked access token of a live sign-in.
#[derive(Debug, Clone)]
pub struct BearerUser {
    pub user_id: String,
    pub sid: String,
    pub jti: String,
    /// When the learner last entered their password for this sign-in.
    pub auth_time: i64,
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
            auth_time: claims.auth_time,
        })
    }
}
