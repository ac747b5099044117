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
    audit::Txn,
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
}

impl Lifetimes {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            access_ttl: clock::secs(settings.access_ttl),
            idle: clock::secs(settings.session_idle),
            absolute: clock::secs(settings.session_absolute),
            refresh_grace: clock::secs(settings.refresh_grace),
        }
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

/// A sign-in just started: its id and the first refresh token of its family.
#[derive(Debug)]
pub struct Started {
    pub sid: String,
    pub expires_at: i64,
    pub refresh: PlainToken,
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
        txn: &Txn,
    ) -> Result<Started> {
        let parts = &self.0;
        let sid = match kind {
            Kind::Browser { session } => browser_sign_in_id(session),
            Kind::Api { .. } => crate::crypto::random_token(16),
        };
        tracing::Span::current().record("sign_in.id", sid.as_str());
        let now = parts.clock.now();
        let expires_at = now + parts.lifetimes.absolute;
        let live = LiveSignIn {
            user_id: user.id.clone(),
            expires_at,
            // Idle applies to the whole sign-in, whatever started it: a browser's activity or an
            // API client's refreshes keep it going.
            idle_until: now + parts.lifetimes.idle,
            session: kind.session().map(str::to_owned),
        };
        parts.store.mark_live(&sid, &live).await?;
        let new = NewSignIn {
            sid: &sid,
            txn,
            user_id: &user.id,
            password_hash: &user.password_hash,
            created_at: now,
            expires_at,
            client,
        };
        let refresh = match parts.records.insert(&new).await {
            Ok(Some(refresh)) => refresh,
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
    /// it without the client having to present it.
    pub async fn issue_access_token(&self, user_id: &str, sid: &str) -> Result<Issued> {
        let parts = &self.0;
        let (token, claims) =
            parts
                .tokens
                .issue(user_id, sid, parts.clock.now(), parts.lifetimes.access_ttl)?;
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
                None if row.expires_at <= now => EndReason::Expired,
                // Not ended by anyone and not past its lifetime: its idle time ran out.
                None => EndReason::Idle,
            },
            None => EndReason::Expired,
        };
        Ok(Liveness::Ended(reason))
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
    /// on every request. Whether the sign-in was live (and so touched).
    pub async fn touch(&self, sid: &str) -> Result<bool> {
        let parts = &self.0;
        let now = parts.clock.now();
        if parts.ledger.is_ended(sid) || !parts.store.touch(sid, now + parts.lifetimes.idle).await?
        {
            return Ok(false);
        }
        parts.records.seen(sid, now).await?;
        Ok(true)
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
        if !self.touch(&sid).await? {
            return Ok(Refresh::Refused);
        }
        let issued = self.issue_access_token(&presented.user_id, &sid).await?;
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
