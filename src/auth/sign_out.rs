//! The one way out. Every way a sign-in ends goes through [`SignOut`], one verb per way: a
//! browser's sign-out ([`SignOut::browser`]) or an API client's ([`SignOut::api`]) with their
//! scopes, one sign-in ended by id ([`SignOut::one`]), the others ([`SignOut::others`]), all of a
//! learner's ([`SignOut::everywhere`]), a timeout ([`SignOut::lapsed`], and
//! [`SignOut::stale_session`] for a cookie whose record has gone), refresh-token reuse
//! ([`SignOut::reuse`]), a password change ([`SignOut::password_changed`]), a browser signing in
//! again ([`SignOut::replaced`]) and an operator ([`SignOut::operator`]).
//!
//! What ends with what, in the order the rules are applied:
//!
//! 1. A browser session that ends takes every sign-in it holds: its own browser sign-in (whose id
//!    derives from the session's) and every API sign-in made beside it. It is tombstoned in the
//!    same step as those are read, so nothing can be attached to it afterwards: a sign-in made
//!    beside a browser that is signing out never outlives it.
//! 2. A sign-in that ends takes the browser session that holds it, and so, by rule 1, every other
//!    sign-in that session holds (but those the caller keeps, for `others`).
//! 3. Ending a sign-in: first in the shared store, where its liveness goes (every instance refuses
//!    its session cookie, access tokens and refresh cookie at once) and its access tokens go on
//!    the revocation list until the last moment each could be accepted; then in the database,
//!    where its row is marked ended with its audit row (its refresh family dies with the row,
//!    and the row is what every instance refuses whatever Redis later forgets, see
//!    [`super::ledger`]). The browser sessions reached have their records deleted.
//! 4. Every step is tried even when an earlier one failed, so whatever can be ended is ended at
//!    once; what could not be is owed: the caller hears so (503) and it is settled later, by
//!    retrying the whole ending, which is harmless for what was already done.
//! 5. `local` ends what the caller presents; `others` every sign-in of the learner but those the
//!    caller holds; `global` (everywhere) both. Reaching beyond what is presented needs a
//!    credential of a live sign-in.
//! 6. A password change ends every other sign-in of the learner; the browser that changed it is
//!    signed in again under a new session ([`super::establish`]), which ends its old sign-in too.
//! 7. A browser signing in again ends its previous sign-in (`replaced`).
//! 8. A sign-in past its idle or absolute deadline ends at the next look, whoever looks.
//! 9. A refresh token presented again after its grace window ends its sign-in (possible theft).
//! 10. Whatever the server managed, a browser that signs itself out is told to forget: both auth
//!     cookies removed, `Clear-Site-Data`, `no-store` ([`clear_client_state`]).

use std::{sync::Arc, time::Duration};

use axum::{
    http::{HeaderName, HeaderValue},
    response::{IntoResponse, Response},
};
use axum_extra::extract::cookie::CookieJar;

use super::{
    access_tokens::Claims,
    ledger::Ledger,
    records::{EndReason, SignIn, SignInRecords},
    refresh_tokens::PlainToken,
    sign_ins::{Lifetimes, Liveness, SignIns, browser_sign_in_id, is_sign_in_id},
};
use crate::{
    audit::Txn,
    clock::Clock,
    config::ClearSiteData,
    error::{AppError, Result},
    store::{ENDED_KEPT, SessionRecords, SignInStore},
    telemetry,
    web::{ClientInfo, cache::set_no_store, cookies::auth_cookie_removals},
};

/// What a sign-out must end: browser sessions and sign-ins. When the server cannot finish, this
/// is sealed into the page that says so, and its "try again" button sends it back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Targets {
    sessions: Vec<String>,
    sids: Vec<String>,
}

/// What the retry note is sealed for (bound in as associated data).
pub const RETRY_PURPOSE: &str = "lectern.signout-retry";
/// How long a retry note stays good, in seconds: as long as the store names an ended sign-in's
/// sessions again, so a retry still reaches a browser whose first end was cut short.
const RETRY_TTL: i64 = ENDED_KEPT;
/// At most this many of each are read back from a retry note (a learner's every sign-in, for a
/// `global` sign-out, with room to spare).
const TARGETS_MAX: usize = 1024;

fn is_session_id(value: &str) -> bool {
    value.parse::<tower_sessions::session::Id>().is_ok()
}

impl Targets {
    /// A browser session. Only a well-formed id counts, so a crafted cookie cannot smuggle other
    /// entries in.
    pub fn add_session(&mut self, id: &str) {
        if is_session_id(id) && !self.sessions.iter().any(|s| s == id) {
            self.sessions.push(id.to_owned());
        }
    }

    /// A sign-in.
    pub fn add_sid(&mut self, sid: &str) {
        if is_sign_in_id(sid) && !self.sids.iter().any(|s| s == sid) {
            self.sids.push(sid.to_owned());
        }
    }

    /// The sign-ins named so far.
    pub fn sids(&self) -> &[String] {
        &self.sids
    }

    /// Sealed with AES-GCM, so a script on the page cannot read a usable session id out of it:
    /// holding the note lets one do nothing but finish this sign-out.
    pub fn seal(&self, keys: &super::Keys, now: i64) -> String {
        let note = format!(
            "{}|{}|{}",
            now + RETRY_TTL,
            self.sessions.join(","),
            self.sids.join(",")
        );
        keys.seal(RETRY_PURPOSE, &note)
    }

    pub fn open(keys: &super::Keys, sealed: &str, now: i64) -> Option<Self> {
        let plain = keys.open(RETRY_PURPOSE, sealed)?;
        let mut parts = plain.splitn(3, '|');
        let expires: i64 = parts.next()?.parse().ok()?;
        if expires < now {
            return None;
        }
        let mut targets = Self::default();
        parts
            .next()?
            .split(',')
            .take(TARGETS_MAX)
            .for_each(|id| targets.add_session(id));
        parts
            .next()?
            .split(',')
            .take(TARGETS_MAX)
            .for_each(|sid| targets.add_sid(sid));
        Some(targets)
    }
}

/// How far a sign-out reaches: `local` (the default: every sign-in whose credential the caller
/// presents), `others` (every other sign-in of the learner; the caller's stay), `global` (all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    Local,
    Others,
    Global,
}

impl Scope {
    /// Anything unknown reads as `local`: a sign-out never fails on its input.
    pub fn parse(raw: Option<&str>) -> Self {
        match raw.map(str::trim) {
            Some("others") => Self::Others,
            Some("global") => Self::Global,
            _ => Self::Local,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Others => "others",
            Self::Global => "global",
        }
    }
}

/// What a sign-out request presents, however it came (see `super::presented`).
#[derive(Debug, Default)]
pub struct Request {
    pub scope: Scope,
    /// The browser session its cookie names.
    pub session: Option<String>,
    /// The browser sign-in that session holds, while its record says it is signed in.
    pub signed_in: Option<String>,
    /// The bearer token's claims, even expired.
    pub bearer: Option<Claims>,
    pub refresh: Option<PlainToken>,
    /// What an earlier attempt still owed (the browser's retry note).
    pub retry: Targets,
}

/// Who asks to end a sign-in by id: their own sign-in, and the browser session the caller's
/// session layer deletes itself (a page), if any.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub sid: &'a str,
    pub session: Option<&'a str>,
}

/// How many passes of the closing sweep go by between two looks for sign-ins that ran out unseen.
pub const SETTLE_EVERY: u32 = 30;

/// A sign-out that could not be finished: why, and everything it still owes (settled later all
/// the same).
#[derive(Debug)]
pub struct Unfinished {
    pub error: AppError,
    pub owed: Targets,
}

impl From<Unfinished> for AppError {
    fn from(unfinished: Unfinished) -> Self {
        unfinished.error
    }
}

/// The sign-out service. A clone shares one allocation.
#[derive(Clone)]
pub struct SignOut(Arc<Parts>);

struct Parts {
    records: SignInRecords,
    store: Arc<dyn SignInStore>,
    session_records: SessionRecords,
    sign_ins: SignIns,
    ledger: Ledger,
    clock: Clock,
    /// The idle timeout (how long a browser may still send the cookie of a session ended by the
    /// system, so its login page can say why) and the recent-authentication window.
    lifetimes: Lifetimes,
}

/// How one ending goes: the browser session the caller's session layer deletes itself, the
/// sign-ins to leave alone, why, and for whom.
#[derive(Clone, Copy)]
struct How<'a> {
    own_session: Option<&'a str>,
    spare: &'a [String],
    reason: EndReason,
    client: &'a ClientInfo,
    /// The action the endings belong to (their audit rows share it).
    txn: &'a Txn,
}

impl SignOut {
    pub fn new(
        records: SignInRecords,
        store: Arc<dyn SignInStore>,
        session_records: SessionRecords,
        sign_ins: SignIns,
        ledger: Ledger,
        clock: Clock,
        lifetimes: Lifetimes,
    ) -> Self {
        Self(Arc::new(Parts {
            records,
            store,
            session_records,
            sign_ins,
            ledger,
            clock,
            lifetimes,
        }))
    }

    /// A browser's sign-out (`POST /logout`): this browser session, what it holds and what its
    /// retry note owes; with `others` or `global`, the learner's other sign-ins too. Returns the
    /// scope it had (a wider one falls back to `local` without a live sign-in here).
    pub async fn browser(
        &self,
        request: &Request,
        client: &ClientInfo,
    ) -> Result<Scope, Unfinished> {
        let mut targets = request.retry.clone();
        if let Some(session) = &request.session {
            targets.add_session(session);
        }
        if let Some(sid) = &request.signed_in {
            targets.add_sid(sid);
        }
        let user = match (request.scope, &request.signed_in) {
            (Scope::Local, _) | (_, None) => None,
            (_, Some(sid)) => self
                .0
                .sign_ins
                .live_user(sid)
                .await
                .map_err(|error| Unfinished {
                    error,
                    owed: targets.clone(),
                })?,
        };
        self.scoped(request.scope, user, targets, None, client)
            .await
    }

    /// An API client's sign-out (`POST /api/v1/auth/logout`): the bearer token's sign-in (even
    /// expired), the refresh cookie's and the browser session's; with `others` or `global` the
    /// learner's other sign-ins too. The sign-ins it can name without the database are ended
    /// first, so a database that cannot be reached leaves only the refresh cookie's owed.
    pub async fn api(&self, request: &Request, client: &ClientInfo) -> Result<Scope> {
        let parts = &self.0;
        let wider = request.scope != Scope::Local;
        let mut targets = Targets::default();
        if let Some(session) = &request.session {
            targets.add_session(session);
        }
        let mut user = None;
        if let Some(claims) = &request.bearer {
            targets.add_sid(&claims.sid);
            if wider && parts.sign_ins.live_user(&claims.sid).await?.as_deref() == Some(&claims.sub)
            {
                self.recently_authenticated(claims.auth_time)?;
                user = Some(claims.sub.clone());
            }
        }
        let refresh = match &request.refresh {
            Some(token) => parts
                .sign_ins
                .refresh_family(token)
                .await
                .map_err(|err| (token, err)),
            None => Ok(None),
        };
        let owed_refresh = match refresh {
            Ok(Some(found)) => {
                targets.add_sid(&found.sign_in_id);
                if wider && user.is_none() && found.revoked_at.is_none() {
                    let live = parts.sign_ins.live_sign_in(&found.sign_in_id).await?;
                    if let Some(live) = live {
                        self.recently_authenticated(live.auth_at)?;
                        user = Some(live.user_id);
                    }
                }
                None
            }
            Ok(None) => None,
            // The refresh family cannot be found now: end everything else, then owe it.
            Err((token, err)) if request.scope != Scope::Others => Some((token.clone(), err)),
            Err((_, err)) => return Err(err),
        };
        let scope = self
            .scoped(request.scope, user, targets, None, client)
            .await?;
        if let Some((token, error)) = owed_refresh {
            self.settle_refresh_later(token, client.clone());
            return Err(error);
        }
        Ok(scope)
    }

    /// Reaching beyond what is presented needs the password entered recently (RFC 9470).
    fn recently_authenticated(&self, auth_at: i64) -> Result<()> {
        let window = self.0.lifetimes.reauth_window;
        if self.0.clock.now() - auth_at <= window {
            return Ok(());
        }
        Err(AppError::InsufficientAuthentication { max_age: window })
    }

    /// Ends what `targets` names, and for `others`/`global` the learner's other sign-ins.
    async fn scoped(
        &self,
        scope: Scope,
        user: Option<String>,
        targets: Targets,
        own_session: Option<&str>,
        client: &ClientInfo,
    ) -> Result<Scope, Unfinished> {
        let (scope, user) = match user {
            Some(user) => (scope, user),
            None => (Scope::Local, String::new()),
        };
        let txn = Txn::new();
        let how = |reason, spare| How {
            own_session,
            spare,
            reason,
            client,
            txn: &txn,
        };
        match scope {
            Scope::Local => {
                self.end_all(targets, how(EndReason::SignedOut, &[]))
                    .await?;
            }
            Scope::Others => {
                self.others_than(&user, targets, EndReason::Revoked, client, &txn)
                    .await?;
            }
            Scope::Global => {
                let mut all = targets;
                self.add_open_of(&user, &mut all)
                    .await
                    .map_err(|error| Unfinished {
                        error,
                        owed: all.clone(),
                    })?;
                self.end_all(all, how(EndReason::SignedOut, &[])).await?;
            }
        }
        telemetry::signed_out(
            scope.as_str(),
            match scope {
                Scope::Others => EndReason::Revoked.as_str(),
                _ => EndReason::SignedOut.as_str(),
            },
        );
        Ok(scope)
    }

    /// Ends one sign-in a learner names by id (from their account page or the API). Naming the
    /// caller's own sign-in is signing out; anything else is ending it from another device.
    /// `None`, and nothing ended, when the id is not one of the learner's live sign-ins; else why
    /// it ended, and what it was.
    pub async fn one(
        &self,
        user_id: &str,
        sid: &str,
        caller: Caller<'_>,
        client: &ClientInfo,
    ) -> Result<Option<(EndReason, SignIn)>> {
        let Some(row) = self.0.sign_ins.live_of_user(user_id, sid).await? else {
            return Ok(None);
        };
        let (reason, own_session) = if sid == caller.sid {
            (EndReason::SignedOut, caller.session)
        } else {
            (EndReason::Revoked, None)
        };
        let mut targets = Targets::default();
        targets.add_sid(sid);
        self.end_all(
            targets,
            How {
                own_session,
                spare: &[],
                reason,
                client,
                txn: &Txn::new(),
            },
        )
        .await?;
        telemetry::signed_out("one", reason.as_str());
        Ok(Some((reason, row)))
    }

    /// Ends every sign-in of the learner but those the caller holds (its own, and those its
    /// browser session holds), as if from another device. Returns how many it ended.
    pub async fn others(
        &self,
        user_id: &str,
        caller: Caller<'_>,
        client: &ClientInfo,
    ) -> Result<usize> {
        let mut held = Targets::default();
        held.add_sid(caller.sid);
        if let Some(session) = caller.session {
            held.add_session(session);
        }
        let ended = self
            .others_than(user_id, held, EndReason::Revoked, client, &Txn::new())
            .await?;
        telemetry::signed_out(Scope::Others.as_str(), EndReason::Revoked.as_str());
        Ok(ended)
    }

    /// After a password change: every other sign-in of the learner ends (reason
    /// `password_changed`). The caller's own is replaced by [`super::establish`].
    pub async fn password_changed(
        &self,
        user_id: &str,
        caller: Caller<'_>,
        client: &ClientInfo,
        txn: &Txn,
    ) -> Result<usize> {
        let mut held = Targets::default();
        held.add_sid(caller.sid);
        if let Some(session) = caller.session {
            held.add_session(session);
        }
        Ok(self
            .others_than(user_id, held, EndReason::PasswordChanged, client, txn)
            .await?)
    }

    /// Every sign-in of the learner, for `reason` (an operator, the learner's own "everywhere").
    /// Returns every sign-in it ended.
    pub async fn everywhere(
        &self,
        user_id: &str,
        reason: EndReason,
        client: &ClientInfo,
        txn: &Txn,
    ) -> Result<Targets> {
        let mut all = Targets::default();
        self.add_open_of(user_id, &mut all).await?;
        Ok(self
            .end_all(
                all,
                How {
                    own_session: None,
                    spare: &[],
                    reason,
                    client,
                    txn,
                },
            )
            .await?)
    }

    /// An operator ends one sign-in (and what its browser session holds). Returns every sign-in
    /// it ended.
    pub async fn operator(&self, sid: &str, client: &ClientInfo) -> Result<Targets> {
        Ok(self.end_sid(sid, EndReason::Revoked, client).await?)
    }

    /// A browser sign-in found idle or past its lifetime (or ended elsewhere) by a page view: it
    /// is settled here (its tokens, row and audit). Its browser session's record is deleted by the
    /// caller's session layer.
    pub async fn lapsed(
        &self,
        sid: &str,
        session: &str,
        reason: EndReason,
        client: &ClientInfo,
    ) -> Result<(), Unfinished> {
        let mut targets = Targets::default();
        targets.add_sid(sid);
        self.end_all(
            targets,
            How {
                own_session: Some(session),
                spare: &[],
                reason,
                client,
                txn: &Txn::new(),
            },
        )
        .await
        .map(drop)
    }

    /// A browser still sends the cookie of a session whose record is gone: the system may have
    /// ended it (its tombstone says why), or its record expired while it still held sign-ins,
    /// which end now, so nothing of them survives. Returns why, for the login page.
    pub async fn stale_session(&self, session: &str, client: &ClientInfo) -> Result<String> {
        let parts = &self.0;
        let expired = || EndReason::Expired.login_reason().to_owned();
        if !is_session_id(session) {
            return Ok(expired());
        }
        let noted = parts.store.session_ended(session).await?;
        // Its own sign-in if it ever had one (a visitor's session never did), else one it held.
        let own = browser_sign_in_id(session);
        let first = match parts.records.find(&own).await? {
            Some(_) => own,
            None => match parts.store.session_holds(session).await?.into_iter().next() {
                Some(sid) => sid,
                None => return Ok(noted.unwrap_or_else(expired)),
            },
        };
        let reason = match parts.sign_ins.liveness(&first).await? {
            Liveness::Ended(reason) => reason,
            Liveness::Live(_) => EndReason::Expired,
        };
        // An ending in flight (a sweep) may have left its note since the first look; it knows
        // better than a guess from what is left.
        let noted = match noted {
            Some(noted) => Some(noted),
            None => parts.store.session_ended(session).await?,
        };
        let mut targets = Targets::default();
        targets.add_session(session);
        let how = How {
            own_session: None,
            spare: &[],
            reason,
            client,
            txn: &Txn::new(),
        };
        if let Err(unfinished) = self.end_all(targets, how).await {
            tracing::warn!(error = %unfinished.error, "the sign-ins of an expired session could not be ended");
        }
        Ok(noted.unwrap_or_else(|| reason.login_reason().to_owned()))
    }

    /// Shared computers' sign-ins whose browser was closed (no open page sent a heartbeat within
    /// the close window), each ended for the deadline it ran out at (`closed`, or `idle` or
    /// `expired` when that came first), whoever is looking. How many it ended.
    pub async fn close_abandoned(&self) -> Result<usize> {
        let parts = &self.0;
        let now = parts.clock.now();
        let mut ended = 0;
        for sid in parts.store.closing(now, 256).await? {
            let reason = match parts.store.lapsed(&sid).await? {
                // A heartbeat moved it since it was listed.
                Some(live) if live.live_at(now) => continue,
                Some(lapsed) => EndReason::from(lapsed.lapse()),
                // Ended already, or lapsed too long ago to say: it ends as closed.
                None => EndReason::Closed,
            };
            self.end_sid(&sid, reason, &ClientInfo::system()).await?;
            parts.store.closed(&sid).await?;
            ended += 1;
        }
        Ok(ended)
    }

    /// Ends the sign-ins whose time ran out while nobody presented them (an API client that
    /// stopped calling, a browser that never came back): each ends once, as idle or expired,
    /// so nothing that ended goes untold to other applications. At most `limit` a pass. How many
    /// it ended.
    pub async fn settle_lapsed(&self, limit: usize) -> Result<usize> {
        let parts = &self.0;
        let now = parts.clock.now();
        let quiet_since = now - parts.lifetimes.shared_idle.min(parts.lifetimes.idle);
        let mut ended = 0;
        for (sid, expires_at) in parts.records.maybe_lapsed(now, quiet_since, limit).await? {
            if parts.store.live(&sid).await?.is_some() {
                continue;
            }
            let reason = match parts.store.lapsed(&sid).await? {
                Some(lapsed) => EndReason::from(lapsed.lapse()),
                None if expires_at <= now => EndReason::Expired,
                None => EndReason::Idle,
            };
            self.end_sid(&sid, reason, &ClientInfo::system()).await?;
            ended += 1;
        }
        Ok(ended)
    }

    /// Ends closed shared computers' sign-ins every `every`, and those that ran out unseen every
    /// [`SETTLE_EVERY`] of those, on this runtime, for as long as it runs.
    pub fn spawn_closing(&self, every: Duration) {
        let sign_out = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut count: u32 = 0;
            loop {
                ticks.tick().await;
                if let Err(err) = sign_out.close_abandoned().await {
                    tracing::warn!(error = %err, "could not end the sign-ins of closed browsers");
                }
                count = count.wrapping_add(1);
                if count % SETTLE_EVERY == 1
                    && let Err(err) = sign_out.settle_lapsed(256).await
                {
                    tracing::warn!(error = %err, "could not end the sign-ins that ran out");
                }
            }
        });
    }

    /// A refresh token presented again after its grace window: its sign-in ends.
    pub async fn reuse(&self, sid: &str, client: &ClientInfo) -> Result<()> {
        self.end_sid(sid, EndReason::RefreshReuse, client).await?;
        Ok(())
    }

    /// A browser signing in again: its previous sign-in ends (`reason`: `replaced`, or
    /// `password_changed` for the browser that changed the password). The caller's session layer
    /// deletes the old record when it cycles the session id.
    pub async fn replaced(
        &self,
        sid: &str,
        session: &str,
        reason: EndReason,
        client: &ClientInfo,
        txn: &Txn,
    ) -> Result<()> {
        let mut targets = Targets::default();
        targets.add_sid(sid);
        self.end_all(
            targets,
            How {
                own_session: Some(session),
                spare: &[],
                reason,
                client,
                txn,
            },
        )
        .await?;
        Ok(())
    }

    /// Every sign-in of `user_id` that nobody ended and whose lifetime has not run out.
    async fn add_open_of(&self, user_id: &str, targets: &mut Targets) -> Result<()> {
        let parts = &self.0;
        for row in parts.records.open(Some(user_id), parts.clock.now()).await? {
            targets.add_sid(&row.id);
        }
        Ok(())
    }

    /// Ends every sign-in of the learner but those `held` names and those its browser sessions
    /// hold. Returns how many it ended.
    async fn others_than(
        &self,
        user_id: &str,
        held: Targets,
        reason: EndReason,
        client: &ClientInfo,
        txn: &Txn,
    ) -> Result<usize, Unfinished> {
        let parts = &self.0;
        let owed = |error| Unfinished {
            error,
            owed: Targets::default(),
        };
        let mut spare = held.sids.clone();
        for session in &held.sessions {
            spare.push(browser_sign_in_id(session));
            spare.extend(parts.store.session_holds(session).await.map_err(owed)?);
        }
        let mut all = Targets::default();
        self.add_open_of(user_id, &mut all).await.map_err(owed)?;
        let mut others = Targets::default();
        for sid in all.sids.iter().filter(|sid| !spare.contains(sid)) {
            others.add_sid(sid);
        }
        let count = others.sids.len();
        self.end_all(
            others,
            How {
                own_session: None,
                spare: &spare,
                reason,
                client,
                txn,
            },
        )
        .await?;
        Ok(count)
    }

    /// The one ending routine: [`Self::end_each`], and what it could not finish is settled later
    /// (rule 4). On success, everything it ended.
    /// [`Self::end_all`] of one sign-in (and what its browser session holds), as an action of
    /// its own.
    async fn end_sid(
        &self,
        sid: &str,
        reason: EndReason,
        client: &ClientInfo,
    ) -> Result<Targets, Unfinished> {
        let mut targets = Targets::default();
        targets.add_sid(sid);
        let how = How {
            own_session: None,
            spare: &[],
            reason,
            client,
            txn: &Txn::new(),
        };
        self.end_all(targets, how).await
    }

    async fn end_all(&self, targets: Targets, how: How<'_>) -> Result<Targets, Unfinished> {
        let (ended, failed) = self.end_each(targets, how).await;
        match failed {
            None => Ok(ended),
            Some(error) => {
                tracing::warn!(%error, "a sign-out could not be finished; it is settled later");
                let sign_out = self.clone();
                let (owed, spare) = (ended.clone(), how.spare.to_vec());
                let (reason, client, txn) = (how.reason, how.client.clone(), how.txn.clone());
                tokio::spawn(async move {
                    let how = How {
                        own_session: None,
                        spare: &spare,
                        reason,
                        client: &client,
                        txn: &txn,
                    };
                    let attempt = || async {
                        match sign_out.end_each(owed.clone(), how).await {
                            (_, None) => Ok(()),
                            (_, Some(err)) => Err(err),
                        }
                    };
                    sign_out.retry(attempt).await;
                });
                Err(Unfinished { error, owed: ended })
            }
        }
    }

    /// Collects what to end once: the sign-ins named, every sign-in the named browser sessions
    /// hold, and the sessions those sign-ins name, and so on (rules 1 and 2). Ends each sign-in
    /// in the store, tombstones and deletes each session (but the caller's own record,
    /// `how.own_session`, which its layer deletes), then marks each row ended (rule 3). Each step
    /// is tried even if an earlier one failed. Returns everything it reached, and the first
    /// failure.
    #[tracing::instrument(name = "sign_out", skip_all, fields(reason = how.reason.as_str()))]
    async fn end_each(&self, targets: Targets, how: How<'_>) -> (Targets, Option<AppError>) {
        let parts = &self.0;
        let reason = how.reason;
        let mut ended = targets;
        let mut failed: Option<AppError> = None;
        let mut keep = |result: Result<()>| {
            if let Err(err) = result {
                failed.get_or_insert(err);
            }
        };
        let now = parts.clock.now();
        let explained_until = now + parts.lifetimes.idle;
        // A deadline that ran out: the rows say why before the store forgets the sign-ins, so a
        // request in between reads the reason, not a guess. Nothing of them is live to end first.
        if reason.is_lapse() {
            keep(self.record(&ended.sids, &how, now).await);
        }
        // The store: sessions and sign-ins, each reaching more of the other.
        if let Some(own) = how.own_session {
            ended.add_session(own);
        }
        let (mut next_session, mut next_sid) = (0, 0);
        let mut store_held = true;
        loop {
            if let Some(session) = ended.sessions.get(next_session).cloned() {
                next_session += 1;
                ended.add_sid(&browser_sign_in_id(&session));
                match parts
                    .store
                    .end_session(&session, reason.login_reason(), explained_until)
                    .await
                {
                    Ok(held) => held
                        .iter()
                        .filter(|sid| !how.spare.contains(sid))
                        .for_each(|sid| ended.add_sid(sid)),
                    Err(err) => {
                        store_held = false;
                        keep(Err(err));
                    }
                }
                continue;
            }
            let Some(sid) = ended.sids.get(next_sid).cloned() else {
                break;
            };
            next_sid += 1;
            match parts.store.end(&sid).await {
                Ok(gone) => {
                    if gone.access_tokens > 0 {
                        tracing::info!(sign_in.id = %sid, revoked_tokens = gone.access_tokens, "access tokens revoked");
                    }
                    gone.sessions.iter().for_each(|s| ended.add_session(s));
                }
                Err(err) => {
                    store_held = false;
                    keep(Err(err));
                }
            }
        }
        // Redis now holds these endings: its mark says so, or the ledger would take the next
        // ending after a quiet while for a loss. Not raised when any of them failed, so that the
        // ledger replays them; failing to raise it only costs a harmless replay.
        if store_held
            && !ended.sids.is_empty()
            && let Err(err) = parts.store.hold_endings_until(now).await
        {
            tracing::warn!(error = %err, "could not mark the endings Redis holds");
        }
        for session in &ended.sessions {
            if how.own_session != Some(session.as_str()) {
                keep(parts.session_records.remove(session).await);
            }
        }
        // The database: the record of what ended.
        keep(self.record(&ended.sids, &how, now).await);
        (ended, failed)
    }

    /// Marks each sign-in's row ended (with its audit row and events) unless it is already, and
    /// notes the ones it marked in the ledger. The first error, after trying every one.
    async fn record(&self, sids: &[String], how: &How<'_>, now: i64) -> Result<()> {
        let parts = &self.0;
        let mut failed = None;
        for sid in sids {
            let marked = parts
                .records
                .mark_ended(sid, how.reason, how.client, now, how.txn);
            match marked.await {
                Ok(Some(marked)) => {
                    parts.ledger.note(sid, marked.expires_at);
                    telemetry::sign_in_ended(how.reason.as_str());
                }
                Ok(None) => {}
                Err(err) => {
                    failed.get_or_insert(err);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Retries finding and ending a refresh cookie's sign-in in the background.
    fn settle_refresh_later(&self, token: PlainToken, client: ClientInfo) {
        let sign_out = self.clone();
        tokio::spawn(async move {
            let attempt = || async {
                let Some(found) = sign_out.0.sign_ins.refresh_family(&token).await? else {
                    return Ok(());
                };
                let mut targets = Targets::default();
                targets.add_sid(&found.sign_in_id);
                let how = How {
                    own_session: None,
                    spare: &[],
                    reason: EndReason::SignedOut,
                    client: &client,
                    txn: &Txn::new(),
                };
                sign_out.end_each(targets, how).await.1.map_or(Ok(()), Err)
            };
            sign_out.retry(attempt).await;
        });
    }

    /// Runs `attempt` until it succeeds, waiting longer each time, for at most an hour.
    async fn retry<F, Fut>(&self, attempt: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(ENDED_KEPT as u64);
        let mut wait = Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            match attempt().await {
                Ok(()) => return,
                Err(err) if tokio::time::Instant::now() >= give_up => {
                    tracing::error!(error = %err, "an unfinished sign-out was given up after an hour");
                    return;
                }
                Err(_) => wait = (wait * 2).min(Duration::from_secs(30)),
            }
        }
    }
}

/// How a sign-out response tells the browser to forget: which cookies are secure, and what
/// `Clear-Site-Data` names.
#[derive(Debug, Clone, Copy)]
pub struct ClientState {
    pub secure_cookies: bool,
    pub clear_site_data: ClearSiteData,
    /// Device-bound sign-ins are on: the bound cookie is removed too.
    pub bound: bool,
}

/// What every sign-out response carries, whether or not the server side succeeded: both auth
/// cookies removed with the exact name and path they were set with, `Clear-Site-Data` (not
/// "cache": it stalls Chromium), and `Cache-Control: no-store`.
pub fn clear_client_state(response: impl IntoResponse, policy: ClientState) -> Response {
    let bound = policy.bound.then(super::bound::removal);
    let jar = auth_cookie_removals(policy.secure_cookies)
        .into_iter()
        .chain(bound)
        .fold(CookieJar::new(), CookieJar::add);
    let mut response = (jar, response).into_response();
    if let Ok(value) = HeaderValue::from_str(&policy.clear_site_data.header_value()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("clear-site-data"), value);
    }
    set_no_store(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_note_keeps_only_well_formed_entries_and_expires() {
        let keys = super::super::Keys::derive(&[3; 32]);
        let mut targets = Targets::default();
        targets.add_session("AAAAAAAAAAAAAAAAAAAAAA");
        targets.add_session("not|a session,id");
        targets.add_sid("abcdefghijklmnopqrstuv");
        targets.add_sid("short");
        let sealed = targets.seal(&keys, 1000);
        assert_eq!(Targets::open(&keys, &sealed, 1000), Some(targets.clone()));
        assert_eq!(targets.sessions.len(), 1);
        assert_eq!(targets.sids.len(), 1);
        assert_eq!(Targets::open(&keys, &sealed, 1000 + RETRY_TTL + 1), None);
        assert_eq!(Targets::open(&keys, "forged", 1000), None);
    }

    #[test]
    fn a_sign_out_response_clears_both_cookies_and_the_site_data() {
        let policy = ClientState {
            secure_cookies: false,
            clear_site_data: ClearSiteData::default(),
            bound: false,
        };
        let response = clear_client_state(axum::http::StatusCode::NO_CONTENT, policy);
        let cookies: Vec<_> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(cookies.len(), 2, "{cookies:?}");
        assert!(cookies.iter().any(|c| c.starts_with("lectern_session=;")));
        assert!(cookies.iter().any(|c| c.starts_with("lectern_refresh=;")));
        assert_eq!(
            response.headers()["clear-site-data"],
            "\"cookies\", \"storage\""
        );
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
}
