//! The life of a sign-in: started by every successful sign-in, kept live by activity, rotated
//! through its refresh tokens, and checked on every request. How one ends is [`super::sign_out`].

use std::sync::Arc;

use super::{
    access_tokens::{AccessTokens, Claims},
    ledger::Ledger,
    records::{EndReason, NewSignIn, SignIn, SignInRecords},
    refresh_tokens::{self, PlainToken},
};
use crate::{
    accounts::User,
    audit::{self, Txn},
    clock::{self, Clock},
    db::Pool,
    error::{AppError, Result},
    store::{LiveSignIn, SignInStore},
    telemetry,
    web::ClientInfo,
};

/// How long things live, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub access_ttl: i64,
    pub idle: i64,
    pub absolute: i64,
    pub refresh_grace: i64,
    /// The idle timeout and lifetime of a sign-in on a shared or public computer.
    pub shared_idle: i64,
    pub shared_absolute: i64,
    /// How long a shared computer's sign-in lives without a heartbeat from an open page.
    pub shared_close: i64,
    /// How long before the idle timeout a page warns.
    pub idle_warning: i64,
    /// How recently the password must have been entered for what needs it.
    pub reauth_window: i64,
}

impl Lifetimes {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            access_ttl: clock::secs(settings.access_ttl),
            idle: clock::secs(settings.session_idle),
            absolute: clock::secs(settings.session_absolute),
            refresh_grace: clock::secs(settings.refresh_grace),
            shared_idle: clock::secs(settings.shared_idle),
            shared_absolute: clock::secs(settings.shared_absolute),
            shared_close: clock::secs(settings.shared_close),
            idle_warning: clock::secs(settings.idle_warning),
            reauth_window: clock::secs(settings.reauth_window),
        }
    }

    /// The idle timeout of a sign-in, shared computer or not.
    pub fn idle_of(&self, shared: bool) -> i64 {
        if shared { self.shared_idle } else { self.idle }
    }
}

/// The id of the browser sign-in that the browser session `session_id` holds: derived from the
/// session's id, so the session record need not store it (one browser session holds at most one
/// browser sign-in; signing in again cycles the session id).
pub fn browser_sign_in_id(session_id: &str) -> String {
    crate::crypto::derived_id("lectern.sign-in", session_id)
}

/// A sign-in id: 22 base64url characters, as `random_token(16)` and [`browser_sign_in_id`] make
/// them.
pub fn is_sign_in_id(value: &str) -> bool {
    value.len() == 22
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where a sign-in was made, and the browser session that holds it (which ending it deletes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A browser form, in this session: the sign-in's id derives from the session's (see
    /// [`browser_sign_in_id`]).
    Browser { session: &'a str },
    /// The API, beside a browser session when a page's script sent its cookie.
    Api { beside: Option<&'a str> },
}

impl<'a> Kind<'a> {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browser { .. } => "browser",
            Self::Api { .. } => "api",
        }
    }

    /// The browser session that holds the sign-in.
    fn session(self) -> Option<&'a str> {
        match self {
            Self::Browser { session } => Some(session),
            Self::Api { beside } => beside,
        }
    }
}

/// A sign-in just started: its id and the first refresh token of its family (none on a shared or
/// public computer, which gets no long-lived credential).
#[derive(Debug)]
pub struct Started {
    pub sid: String,
    pub expires_at: i64,
    pub refresh: Option<PlainToken>,
}

/// An access token just issued, as the API returns it.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub claims: Claims,
}

/// Whether a sign-in is live and, if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Live(LiveSignIn),
    Ended(EndReason),
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Refresh {
    /// A new access token and refresh token of the same sign-in.
    Rotated {
        issued: Issued,
        next: PlainToken,
        expires_at: i64,
    },
    /// Unknown token, or its sign-in is over: refused, nothing changes.
    Refused,
    /// A used token presented again after the grace window: it was copied.
    Reused { sid: String },
}

/// The sign-in service. A clone shares one allocation.
#[derive(Clone)]
pub struct SignIns(Arc<Parts>);

struct Parts {
    db: Pool,
    records: SignInRecords,
    store: Arc<dyn SignInStore>,
    ledger: Ledger,
    tokens: Arc<AccessTokens>,
    clock: Clock,
    lifetimes: Lifetimes,
}

impl SignIns {
    pub fn new(
        db: Pool,
        records: SignInRecords,
        store: Arc<dyn SignInStore>,
        ledger: Ledger,
        tokens: Arc<AccessTokens>,
        clock: Clock,
        lifetimes: Lifetimes,
    ) -> Self {
        Self(Arc::new(Parts {
            db,
            records,
            store,
            ledger,
            tokens,
            clock,
            lifetimes,
        }))
    }

    /// Starts a sign-in for `user`: the live marker, the record, the first refresh token, the
    /// audit row. The record is written only while `user.password_hash` (the hash the password
    /// was just checked against) is still the learner's: a sign-in verified against a password
    /// that changed meanwhile is refused, so a password change's sweep of open sign-ins (taken
    /// after the new hash is stored) cannot miss one. The live marker goes first, so no record
    /// exists that a sweep could end before its marker is written. It names the browser session
    /// `kind` says holds it.
    #[tracing::instrument(name = "sign_in.start", skip_all, fields(user.id = %user.id, sign_in.id))]
    pub async fn start(
        &self,
        user: &User,
        client: &ClientInfo,
        kind: Kind<'_>,
        shared: bool,
        txn: &Txn,
    ) -> Result<Started> {
        let parts = &self.0;
        let lifetimes = &parts.lifetimes;
        let sid = match kind {
            Kind::Browser { session } => browser_sign_in_id(session),
            Kind::Api { .. } => crate::crypto::random_token(16),
        };
        tracing::Span::current().record("sign_in.id", sid.as_str());
        let now = parts.clock.now();
        let absolute = if shared {
            lifetimes.shared_absolute
        } else {
            lifetimes.absolute
        };
        let expires_at = now + absolute;
        let live = LiveSignIn {
            user_id: user.id.clone(),
            expires_at,
            // Idle applies to the whole sign-in, whatever started it: a browser's activity or an
            // API client's refreshes keep it going.
            idle_until: now + lifetimes.idle_of(shared),
            session: kind.session().map(str::to_owned),
            open_until: shared.then_some(now + lifetimes.shared_close),
            auth_at: now,
            bound: false,
        };
        parts.store.mark_live(&sid, &live).await?;
        let new = NewSignIn {
            sid: &sid,
            txn,
            shared,
            user_id: &user.id,
            password_hash: &user.password_hash,
            created_at: now,
            expires_at,
            client,
        };
        let refresh = match parts.records.insert(&new).await {
            Ok(Some(inserted)) => inserted.refresh,
            // The password changed since it was checked.
            Ok(None) => {
                let _ = parts.store.end(&sid).await;
                return Err(AppError::InvalidCredentials);
            }
            Err(err) => {
                // Nothing refers to the marker; take it back (it would lapse at its idle deadline).
                let _ = parts.store.end(&sid).await;
                return Err(err);
            }
        };
        telemetry::sign_in_started(kind.as_str());
        Ok(Started {
            sid,
            expires_at,
            refresh,
        })
    }

    /// Records that browser session `session_id` holds the API sign-in `sid` made beside it, so
    /// that signing that browser out ends both. `false` when the browser signed out meanwhile.
    pub async fn hold(&self, session_id: &str, sid: &str, until: i64) -> Result<bool> {
        self.0.store.hold(session_id, sid, until).await
    }

    /// Whether browser session `session_id` was ended (it is tombstoned for an idle period).
    pub async fn session_was_ended(&self, session_id: &str) -> Result<bool> {
        Ok(self.0.store.session_ended(session_id).await?.is_some())
    }

    /// Issues an access token under `sid` and records its `jti`, so ending the sign-in revokes
    /// it without the client having to present it. `auth_time` is when the learner last entered
    /// their password for this sign-in.
    pub async fn issue_access_token(
        &self,
        user_id: &str,
        sid: &str,
        auth_time: i64,
    ) -> Result<Issued> {
        let parts = &self.0;
        let (now, ttl) = (parts.clock.now(), parts.lifetimes.access_ttl);
        let (token, claims) = parts.tokens.issue(user_id, sid, now, ttl, auth_time)?;
        parts
            .store
            .record_access_token(sid, &claims.jti, claims.accepted_until())
            .await?;
        Ok(Issued { token, claims })
    }

    /// The bearer check: a valid token whose sign-in is live and which is not revoked.
    pub async fn authorize_bearer(&self, token: &str) -> Result<Option<Claims>> {
        let parts = &self.0;
        let Some(claims) = parts.tokens.verify(token, parts.clock.now()) else {
            return Ok(None);
        };
        if parts.ledger.is_ended(&claims.sid) {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let allowed = parts.store.access_allowed(&claims.sid, &claims.jti).await;
        telemetry::revocation_checked(started.elapsed().as_secs_f64());
        Ok(allowed?.then_some(claims))
    }

    /// Whether a sign-in is live now; if not, why it is over.
    pub async fn liveness(&self, sid: &str) -> Result<Liveness> {
        let started = std::time::Instant::now();
        let live = self.0.store.live(sid).await;
        telemetry::revocation_checked(started.elapsed().as_secs_f64());
        self.liveness_of(sid, live?).await
    }

    /// [`Self::liveness`], with the change mark `mark` read in the same round trip.
    pub async fn liveness_and_mark(
        &self,
        sid: &str,
        mark: &str,
    ) -> Result<(Liveness, Option<String>)> {
        let started = std::time::Instant::now();
        let read = self.0.store.live_and_mark(sid, mark).await;
        telemetry::revocation_checked(started.elapsed().as_secs_f64());
        let (live, mark) = read?;
        Ok((self.liveness_of(sid, live).await?, mark))
    }

    /// A sign-in's liveness from what the store said of it (read in this request already): live
    /// unless the store says otherwise or the database says it ended; if over, why (its row).
    pub async fn liveness_of(&self, sid: &str, live: Option<LiveSignIn>) -> Result<Liveness> {
        if let Some(live) = live
            && !self.0.ledger.is_ended(sid)
        {
            return Ok(Liveness::Live(live));
        }
        let now = self.0.clock.now();
        let reason = match self.0.records.find(sid).await? {
            Some(row) => match row.end_reason() {
                Some(reason) => reason,
                // Nobody ended it: one of its deadlines ran out. Which one, the store may still
                // say (a shared computer's is kept a little past its deadline).
                None => match self.0.store.lapsed(sid).await? {
                    Some(lapsed) => EndReason::from(lapsed.lapse()),
                    None if row.expires_at <= now => EndReason::Expired,
                    None => EndReason::Idle,
                },
            },
            None => EndReason::Expired,
        };
        Ok(Liveness::Ended(reason))
    }

    /// Whether `sid` was bound moments ago (see [`super::bound::BINDING_SETTLES`]). A binding
    /// not yet in its row (the registration is finishing, or could not write it) counts from
    /// `auth_at`, when the password was entered: a registration follows its sign-in.
    pub async fn binding_settling(&self, sid: &str, auth_at: i64) -> Result<bool> {
        let now = self.0.clock.now();
        let since = match self.0.records.find(sid).await? {
            Some(row) => row.bound_at.unwrap_or(auth_at),
            None => return Ok(false),
        };
        Ok(now - since < super::bound::BINDING_SETTLES)
    }

    /// A sign-in as the store holds it, if it is live.
    pub async fn live_sign_in(&self, sid: &str) -> Result<Option<LiveSignIn>> {
        if self.0.ledger.is_ended(sid) {
            return Ok(None);
        }
        self.0.store.live(sid).await
    }

    /// The learner whose sign-in this is, if it is live.
    pub async fn live_user(&self, sid: &str) -> Result<Option<String>> {
        if self.0.ledger.is_ended(sid) {
            return Ok(None);
        }
        Ok(self.0.store.live(sid).await?.map(|s| s.user_id))
    }

    /// Keeps a sign-in alive for another idle period and records when it was last active. The
    /// callers do this at most once a minute per sign-in (a page view) or once per refresh, never
    /// on every request. The sign-in as it is now, if it was live (and so touched).
    pub async fn touch(&self, sid: &str) -> Result<Option<LiveSignIn>> {
        let parts = &self.0;
        let lifetimes = &parts.lifetimes;
        let now = parts.clock.now();
        if parts.ledger.is_ended(sid) {
            return Ok(None);
        }
        let (idle, shared_idle) = (now + lifetimes.idle, now + lifetimes.shared_idle);
        let Some(live) = parts.store.touch(sid, idle, shared_idle).await? else {
            return Ok(None);
        };
        parts.records.seen(sid, now).await?;
        Ok(Some(live))
    }

    /// An open page of a shared computer's sign-in says it is still open (another sign-in has
    /// nothing to keep open). Whether it is live. Not activity: an open tab alone keeps nobody
    /// signed in past the idle timeout.
    pub async fn heartbeat(&self, sid: &str) -> Result<bool> {
        let parts = &self.0;
        let open_until = parts.clock.now() + parts.lifetimes.shared_close;
        if parts.ledger.is_ended(sid) {
            return Ok(false);
        }
        if parts.store.heartbeat(sid, open_until).await? {
            return Ok(true);
        }
        Ok(parts.store.live(sid).await?.is_some())
    }

    /// The learner entered their password again for this sign-in, now. Whether it was live.
    pub async fn reauthenticated(&self, sid: &str) -> Result<bool> {
        let parts = &self.0;
        let now = parts.clock.now();
        Ok(!parts.ledger.is_ended(sid) && parts.store.reauthenticated(sid, now).await?)
    }

    /// The sign-in a refresh token belongs to, with its state, if the token exists.
    pub async fn refresh_family(
        &self,
        token: &PlainToken,
    ) -> Result<Option<refresh_tokens::Presented>> {
        refresh_tokens::find(&self.0.db, token).await
    }

    pub async fn find(&self, sid: &str) -> Result<Option<SignIn>> {
        self.0.records.find(sid).await
    }

    /// Sign-ins that still work, newest first: not ended, not past their lifetime, and live in
    /// the shared store (idled-out sign-ins are not). Every learner's (for operators), or one
    /// learner's.
    pub async fn live(&self, user_id: Option<&str>) -> Result<Vec<SignIn>> {
        let parts = &self.0;
        let rows = parts.records.open(user_id, parts.clock.now()).await?;
        self.still_live(rows).await
    }

    /// A learner's live sign-ins (as [`Self::live`]) and their newest `limit` audit entries: the
    /// account page, in one database round trip (more only when actions wrote several rows each,
    /// see [`audit::entries_from`]) and one store round trip.
    pub async fn live_with_activity(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<(Vec<SignIn>, Vec<audit::Entry>)> {
        let parts = &self.0;
        let now = parts.clock.now();
        let asked = audit::first_read(limit);
        let (open, rows) = parts.records.open_and_recent(user_id, now, asked).await?;
        let entries = audit::entries_from(&parts.db, user_id, rows, asked, limit).await?;
        Ok((self.still_live(open).await?, entries))
    }

    /// Of `rows`, the sign-ins live in the shared store that this instance has not seen end.
    async fn still_live(&self, rows: Vec<SignIn>) -> Result<Vec<SignIn>> {
        let parts = &self.0;
        let mut live = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(1000) {
            let sids: Vec<String> = chunk.iter().map(|r| r.id.clone()).collect();
            let found = parts.store.live_many(&sids).await?;
            live.extend(
                chunk
                    .iter()
                    .zip(found)
                    .filter(|(row, found)| found.is_some() && !parts.ledger.is_ended(&row.id))
                    .map(|(row, _)| row.clone()),
            );
        }
        Ok(live)
    }

    /// One of the learner's sign-ins, if it is theirs and live now: what a learner may end by id.
    pub async fn live_of_user(&self, user_id: &str, sid: &str) -> Result<Option<SignIn>> {
        if self.live_user(sid).await?.as_deref() != Some(user_id) {
            return Ok(None);
        }
        Ok(self
            .find(sid)
            .await?
            .filter(|row| row.user_id == user_id && row.revoked_at.is_none()))
    }

    /// Presents a refresh token. A rotation is all or nothing: the token is used up and its
    /// successor stored in one transaction, after everything that can fail first (the liveness
    /// check, the new access token), so a failure consumes nothing and a retry is not reuse.
    /// Within the grace window after a rotation the same token gets another answer of the same
    /// sign-in (two tabs at once, a lost response); after it, reuse is theft.
    #[tracing::instrument(name = "sign_in.refresh", skip_all, fields(sign_in.id))]
    pub async fn refresh(&self, token: &PlainToken) -> Result<Refresh> {
        let parts = &self.0;
        let Some(presented) = refresh_tokens::find(&parts.db, token).await? else {
            return Ok(Refresh::Refused);
        };
        let sid = presented.sign_in_id.clone();
        tracing::Span::current().record("sign_in.id", sid.as_str());
        let now = parts.clock.now();
        let grace = parts.lifetimes.refresh_grace;
        let within_grace = |used_at: i64| grace > 0 && now - used_at <= grace;
        if let Some(used_at) = presented.used_at
            && !within_grace(used_at)
        {
            telemetry::refresh_reuse_detected();
            return Ok(Refresh::Reused { sid });
        }
        if presented.revoked_at.is_some() || presented.expires_at <= now {
            return Ok(Refresh::Refused);
        }
        // A refresh is activity: the sign-in idles from here (harmless if the rotation fails). A
        // sign-in that is not live is refused, found out in that same round trip.
        let Some(live) = self.touch(&sid).await? else {
            return Ok(Refresh::Refused);
        };
        let issued = self
            .issue_access_token(&presented.user_id, &sid, live.auth_at)
            .await?;
        let next = match presented.used_at {
            // Within grace: a sibling successor; the used token stays used.
            Some(_) => refresh_tokens::insert(&parts.db, &sid, now).await?,
            None => match refresh_tokens::rotate(&parts.db, token, &sid, now).await? {
                Some(next) => next,
                // Another request used it a moment ago.
                None if within_grace(now) => refresh_tokens::insert(&parts.db, &sid, now).await?,
                None => {
                    telemetry::refresh_reuse_detected();
                    return Ok(Refresh::Reused { sid });
                }
            },
        };
        Ok(Refresh::Rotated {
            issued,
            next,
            expires_at: presented.expires_at,
        })
    }
}
