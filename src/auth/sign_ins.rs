//! The life of a sign-in record: started by every successful sign-in, kept live by activity,
//! rotated through its refresh tokens, and ended by exactly one routine ([`SignIns::end`]) whether
//! the learner signed out, it idled or ran out, a refresh token was reused, or it was revoked.

use std::sync::Arc;

use sqlx::{Arguments, any::AnyArguments};

use super::{
    access_tokens::{AccessTokens, Claims},
    flips::{Flip, Flips},
    refresh_tokens::{self, PlainToken},
};
use crate::{
    accounts::User,
    audit::{self, Event},
    clock::{self, Clock},
    db::Pool,
    error::{AppError, Result},
    store::{Ended, SessionBackend, SignInStore, Standing},
    telemetry,
    web::{
        ClientInfo,
        user_agent::{self, Described},
    },
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

/// A row of `sign_ins`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignIn {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub ip: String,
    pub user_agent: String,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    /// When it was last active (recorded at most once a minute); `None` before the first time.
    pub last_seen_at: Option<i64>,
}

/// `select` of every column of [`SignIn`] from `sign_ins`, followed by the rest of the query.
/// A value sqlx could not bind (none of a sign-in's can fail to).
fn unbound(err: sqlx::error::BoxDynError) -> AppError {
    AppError::Unexpected(anyhow::anyhow!("binding a sign-in's values: {err}"))
}

/// The insert of a new sign-in's row (`$1`-`$7`: id, learner, created, expires, address, user
/// agent, and the password hash it was checked against), which writes it only while that hash is
/// the learner's current one.
macro_rules! insert_sign_in {
    () => {
        "insert into sign_ins (id, user_id, created_at, expires_at, ip, user_agent)
         select $1, $2, $3, $4, $5, $6
         where exists (select 1 from users where id = $2 and password_hash = $7)"
    };
}

macro_rules! select_sign_ins {
    ($rest:literal) => {
        concat!(
            "select id, user_id, created_at, expires_at, ip, user_agent, revoked_at, ",
            "revoked_reason, last_seen_at from sign_ins ",
            $rest
        )
    };
}

impl SignIn {
    pub fn started(&self) -> String {
        clock::format_time(self.created_at)
    }

    /// The last moment it was seen active: its last recorded activity, or its start.
    pub fn last_active_at(&self) -> i64 {
        self.last_seen_at.unwrap_or(self.created_at)
    }

    pub fn last_active(&self) -> String {
        clock::format_time(self.last_active_at())
    }

    /// Device and browser in words.
    pub fn described(&self) -> Described {
        user_agent::describe(&self.user_agent)
    }
}

/// The id of the browser sign-in that the browser session `session_id` holds: derived from the
/// session's id, so the session record need not store it (one browser session holds at most one
/// browser sign-in; signing in again cycles the session id).
pub fn browser_sign_in_id(session_id: &str) -> String {
    crate::crypto::derived_id("lectern.sign-in", session_id)
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

/// Why a sign-in ended; stored in `sign_ins.revoked_reason` and told to the login page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    SignedOut,
    RefreshReuse,
    /// The same browser signed in again.
    Replaced,
    Revoked,
    /// No activity for the idle timeout.
    Idle,
    /// The absolute lifetime ran out.
    Expired,
    /// The learner changed their password.
    PasswordChanged,
}

impl EndReason {
    const ALL: [Self; 7] = [
        Self::SignedOut,
        Self::RefreshReuse,
        Self::Replaced,
        Self::Revoked,
        Self::Idle,
        Self::Expired,
        Self::PasswordChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignedOut => "signed_out",
            Self::RefreshReuse => "refresh_reuse",
            Self::Replaced => "replaced",
            Self::Revoked => "revoked",
            Self::Idle => "idle",
            Self::Expired => "expired",
            Self::PasswordChanged => "password_changed",
        }
    }

    /// The reason as stored in `sign_ins.revoked_reason`.
    pub fn from_stored(stored: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == stored)
    }

    /// What the login page is told (`/login?reason=`) when a browser still sends its session.
    pub fn login_reason(self) -> &'static str {
        match self {
            Self::RefreshReuse => "reuse",
            Self::Idle => "idle",
            Self::Expired => "expired",
            Self::PasswordChanged => "password_changed",
            Self::SignedOut | Self::Replaced | Self::Revoked => "revoked",
        }
    }

    fn event(self) -> Event {
        match self {
            Self::SignedOut => Event::SignOut,
            Self::RefreshReuse => Event::RefreshReuse,
            Self::Replaced | Self::Revoked => Event::Revoked,
            Self::Idle => Event::Idle,
            Self::Expired => Event::Expired,
            Self::PasswordChanged => Event::PasswordChanged,
        }
    }
}

/// Whether a sign-in is live and, if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Live(Standing),
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

/// The sign-in service: the records, their liveness in the shared store, and their tokens. A clone
/// shares one allocation.
#[derive(Clone)]
pub struct SignIns(Arc<Parts>);

/// What [`SignIns`] shares.
pub struct Parts {
    db: Pool,
    /// Whether `db` is PostgreSQL (else SQLite): a few writes take one statement there.
    postgres: bool,
    /// On PostgreSQL, where ended sign-ins' rows are marked, several to a statement under load.
    flips: Option<Flips>,
    store: Arc<dyn SignInStore>,
    sessions: SessionBackend,
    tokens: Arc<AccessTokens>,
    clock: Clock,
    lifetimes: Lifetimes,
    /// The learner of each browser session this instance has recently shown a page to, so the
    /// next view's session load can read the learner's enrolment mark too. Only a hint: a wrong
    /// or missing entry costs that view a second round trip, never a wrong answer.
    learners: moka::sync::Cache<String, String>,
}

impl std::ops::Deref for SignIns {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl SignIns {
    pub fn new(
        db: Pool,
        store: Arc<dyn SignInStore>,
        sessions: SessionBackend,
        tokens: Arc<AccessTokens>,
        clock: Clock,
        lifetimes: Lifetimes,
    ) -> Self {
        let postgres = db
            .connect_options()
            .database_url
            .scheme()
            .starts_with("postgres");
        Self(Arc::new(Parts {
            flips: postgres.then(|| Flips::new(db.clone())),
            postgres,
            db,
            store,
            sessions,
            tokens,
            clock,
            lifetimes,
            learners: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(300))
                .build(),
        }))
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    pub fn store(&self) -> &dyn SignInStore {
        self.store.as_ref()
    }

    pub fn sessions(&self) -> &SessionBackend {
        &self.sessions
    }

    pub fn tokens(&self) -> &AccessTokens {
        &self.tokens
    }

    /// Starts a sign-in for `user`: the live marker, the record, the first refresh token, the
    /// audit row. The record is written only while `user.password_hash` (the hash the password
    /// was just checked against) is still the learner's: a sign-in verified against a password
    /// that changed meanwhile is refused, so a password change's sweep of open sign-ins (taken
    /// after the new hash is stored) cannot miss one. The live marker goes first, so no record
    /// exists that a sweep could end before its marker is written. Its standing names the
    /// browser session `kind` says holds it.
    #[tracing::instrument(name = "sign_in.start", skip_all, fields(user.id = %user.id, sign_in.id))]
    pub async fn start(&self, user: &User, client: &ClientInfo, kind: Kind<'_>) -> Result<Started> {
        let sid = match kind {
            Kind::Browser { session } => browser_sign_in_id(session),
            Kind::Api { .. } => crate::crypto::random_token(16),
        };
        tracing::Span::current().record("sign_in.id", sid.as_str());
        let now = self.clock.now();
        let expires_at = now + self.lifetimes.absolute;
        let standing = Standing {
            user_id: user.id.clone(),
            expires_at,
            // Idle applies to the whole sign-in, whatever started it: a browser's activity or an
            // API client's refreshes keep it going.
            idle_until: Some(now + self.lifetimes.idle),
            session: kind.session().map(str::to_owned),
        };
        self.store.mark_live(&sid, &standing).await?;
        let written = self
            .write_started(user, client, &sid, now, expires_at)
            .await;
        let refresh = match written {
            Ok(refresh) => refresh,
            Err(err) => {
                // Nothing refers to the marker; take it back (it would lapse at its idle deadline).
                let _ = self.store.end(&sid).await;
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

    /// The row of a new sign-in, its first refresh token and its audit event, all or nothing: on
    /// PostgreSQL one statement (one round trip, one commit), on SQLite (no insert inside `with`)
    /// a transaction of three steps, embedded, so they cost no trips. The row is written only
    /// while the password it was checked against is current; otherwise nothing is, and the
    /// sign-in is refused.
    async fn write_started(
        &self,
        user: &User,
        client: &ClientInfo,
        sid: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<PlainToken> {
        let record = audit::Record {
            event: Event::SignIn,
            user_id: Some(&user.id),
            sign_in_id: Some(sid),
            client,
            at: now,
        };
        // `$1`-`$7` of the row's insert (`insert_sign_in!`), in both shapes.
        let mut row = AnyArguments::default();
        let bound = (|| {
            row.add(sid)?;
            row.add(user.id.as_str())?;
            row.add(now)?;
            row.add(expires_at)?;
            row.add(client.ip.as_str())?;
            row.add(client.user_agent.as_str())?;
            row.add(user.password_hash.as_str())
        })();
        bound.map_err(unbound)?;
        let written = if self.postgres {
            let refresh = PlainToken::generate();
            let mut all = row;
            let bound = (|| {
                all.add(refresh.hash().as_str())?;
                all.add(audit::new_id())?;
                all.add(record.event.as_str())
            })();
            bound.map_err(unbound)?;
            let inserted: i64 = sqlx::query_scalar_with(
                concat!(
                    "with inserted as (",
                    insert_sign_in!(),
                    " returning id),
                     refreshed as (
                       insert into refresh_tokens (token_hash, sign_in_id, issued_at)
                       select $8, id, $3 from inserted),
                     audited as (
                       insert into audit_events (id, event, user_id, sign_in_id, at, ip, user_agent)
                       select $9, $10, $2, id, $3, $5, $6 from inserted)
                     select count(*) from inserted"
                ),
                all,
            )
            .fetch_one(&self.db)
            .await?;
            if inserted == 1 {
                audit::logged(&record);
            }
            (inserted == 1).then_some(refresh)
        } else {
            let mut tx = self.db.begin().await?;
            let inserted = sqlx::query_with(insert_sign_in!(), row)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 1 {
                let refresh = refresh_tokens::insert(&mut *tx, sid, now).await?;
                audit::record(&mut *tx, record).await?;
                tx.commit().await?;
                Some(refresh)
            } else {
                None
            }
        };
        // None: the password changed since it was checked.
        written.ok_or(AppError::InvalidCredentials)
    }

    /// Records that a browser session holds an API sign-in made beside it, so that signing that
    /// browser out ends both.
    pub async fn hold(&self, session_id: &str, sid: &str, expires_at: i64) -> Result<()> {
        self.store.hold(session_id, sid, expires_at).await
    }

    /// The sign-ins a browser session holds, even after the session record itself has expired:
    /// its own (whose id derives from the session's; live, ended or never started) and those
    /// [`Self::hold`] added, in one round trip.
    pub async fn held_by(&self, session_id: &str) -> Result<Vec<String>> {
        let mut sids = vec![browser_sign_in_id(session_id)];
        sids.extend(self.store.sign_ins_of_session(session_id).await?);
        Ok(sids)
    }

    /// Issues an access token under `sid` and records its `jti`, so ending the sign-in revokes
    /// it without the client having to present it.
    pub async fn issue_access_token(&self, user_id: &str, sid: &str) -> Result<Issued> {
        let (token, claims) =
            self.tokens
                .issue(user_id, sid, self.clock.now(), self.lifetimes.access_ttl)?;
        self.store
            .record_access_token(sid, &claims.jti, claims.accepted_until())
            .await?;
        Ok(Issued { token, claims })
    }

    /// The bearer check: a valid token whose sign-in is live and which is not revoked.
    pub async fn authorize_bearer(&self, token: &str) -> Result<Option<Claims>> {
        let Some(claims) = self.tokens.verify(token, self.clock.now()) else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let allowed = self.store.access_allowed(&claims.sid, &claims.jti).await;
        telemetry::revocation_checked(started.elapsed().as_secs_f64());
        Ok(allowed?.then_some(claims))
    }

    /// Whether a sign-in is live now; if not, why it is over.
    pub async fn liveness(&self, sid: &str) -> Result<Liveness> {
        let started = std::time::Instant::now();
        let standing = self.store.standing(sid).await;
        telemetry::revocation_checked(started.elapsed().as_secs_f64());
        self.why(sid, standing?).await
    }

    /// [`Self::liveness`], with the change mark `mark` read in the same round trip.
    pub async fn liveness_and_mark(
        &self,
        sid: &str,
        mark: &str,
    ) -> Result<(Liveness, Option<String>)> {
        let started = std::time::Instant::now();
        let read = self.store.standing_and_mark(sid, mark).await;
        telemetry::revocation_checked(started.elapsed().as_secs_f64());
        let (standing, mark) = read?;
        Ok((self.why(sid, standing).await?, mark))
    }

    /// The learner [`Self::remember_learner`] last saw on browser session `session_id`.
    pub fn learner_of(&self, session_id: &str) -> Option<String> {
        self.learners.get(session_id)
    }

    /// Notes that browser session `session_id` is `user_id`'s (see [`Self::learner_of`]).
    pub fn remember_learner(&self, session_id: &str, user_id: &str) {
        if self.learners.get(session_id).as_deref() != Some(user_id) {
            self.learners
                .insert(session_id.to_owned(), user_id.to_owned());
        }
    }

    /// [`Self::liveness`] from a standing already read in this request (with its session record).
    pub async fn liveness_from(&self, sid: &str, standing: Option<Standing>) -> Result<Liveness> {
        self.why(sid, standing).await
    }

    /// A sign-in's liveness from its stored standing: live, or over and why (from its row).
    async fn why(&self, sid: &str, standing: Option<Standing>) -> Result<Liveness> {
        if let Some(standing) = standing {
            return Ok(Liveness::Live(standing));
        }
        let row = self.find(sid).await?;
        let now = self.clock.now();
        let reason = match row {
            Some(row) => match row
                .revoked_reason
                .as_deref()
                .and_then(EndReason::from_stored)
            {
                Some(reason) => reason,
                None if row.expires_at <= now => EndReason::Expired,
                // Not ended by anyone and not past its lifetime: its idle time ran out.
                None => EndReason::Idle,
            },
            None => EndReason::Expired,
        };
        Ok(Liveness::Ended(reason))
    }

    /// Keeps a sign-in alive for another idle period and records when it was last active. The
    /// callers do this at most once a minute per sign-in (a page view) or once per refresh, never
    /// on every request.
    /// Whether the sign-in was live (and so touched).
    pub async fn touch(&self, sid: &str) -> Result<bool> {
        let now = self.clock.now();
        if !self.store.touch(sid, now + self.lifetimes.idle).await? {
            return Ok(false);
        }
        sqlx::query("update sign_ins set last_seen_at = $1 where id = $2 and revoked_at is null")
            .bind(now)
            .bind(sid)
            .execute(&self.db)
            .await?;
        Ok(true)
    }

    /// Ends a sign-in, as one: every access token issued under it goes on the revocation list
    /// until the last moment it could be accepted, it stops being live (every instance checks
    /// that on every request), and its row is marked revoked, which also kills its refresh
    /// family. Returns the browser session that holds it, which the caller deletes (see
    /// [`super::sign_out`]). Idempotent.
    ///
    /// The store goes first: every check reads it, so when it cannot be reached nothing is
    /// half-done and the caller can say so; a retry repeats the whole routine.
    #[tracing::instrument(name = "sign_in.end", skip_all, fields(sign_in.id = sid, reason = reason.as_str()))]
    pub async fn end(&self, sid: &str, reason: EndReason, client: &ClientInfo) -> Result<Ended> {
        let ended = self.store.end(sid).await?;
        let now = self.clock.now();
        let flipped = self.flip(sid, reason, client, now).await?;
        if flipped.is_some() {
            telemetry::sign_in_ended(reason.as_str());
            tracing::info!(revoked_tokens = ended.access_tokens, "sign-in ended");
        }
        Ok(ended)
    }

    /// Marks the row of `sid` ended for `reason`, unless it already is, and writes the audit
    /// row with it: only the call that flips the row writes one (it learns the learner in
    /// passing), and both commit together. `Some(user id)` when this call flipped it.
    async fn flip(
        &self,
        sid: &str,
        reason: EndReason,
        client: &ClientInfo,
        now: i64,
    ) -> Result<Option<String>> {
        let event = |user_id| audit::Record {
            event: reason.event(),
            user_id: Some(user_id),
            sign_in_id: Some(sid),
            client,
            at: now,
        };
        let Some(flips) = &self.flips else {
            // SQLite has no update inside `with`; it is embedded, so its steps cost no trips.
            let mut tx = self.db.begin().await?;
            let flipped: Option<String> = sqlx::query_scalar(
                "update sign_ins set revoked_at = $1, revoked_reason = $2
                 where id = $3 and revoked_at is null returning user_id",
            )
            .bind(now)
            .bind(reason.as_str())
            .bind(sid)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(user_id) = &flipped {
                audit::record(&mut *tx, event(user_id)).await?;
            }
            tx.commit().await?;
            return Ok(flipped);
        };
        // One statement (so one round trip), shared with the ends that arrive with it.
        let flipped = flips
            .flip(Flip {
                sid: sid.to_owned(),
                reason: reason.as_str(),
                event: reason.event().as_str(),
                audit_id: audit::new_id(),
                at: now,
                ip: client.ip.clone(),
                user_agent: client.user_agent.clone(),
            })
            .await?;
        if let Some(user_id) = &flipped {
            audit::logged(&event(user_id));
        }
        Ok(flipped)
    }

    pub async fn find(&self, sid: &str) -> Result<Option<SignIn>> {
        Ok(sqlx::query_as(select_sign_ins!("where id = $1"))
            .bind(sid)
            .fetch_optional(&self.db)
            .await?)
    }

    /// The ids of a learner's sign-ins that nobody ended and whose lifetime has not run out
    /// (live or lapsed): what "sign out everywhere" must end.
    pub async fn open_for_user(&self, user_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "select id from sign_ins where user_id = $1 and revoked_at is null and expires_at > $2",
        )
        .bind(user_id)
        .bind(self.clock.now())
        .fetch_all(&self.db)
        .await?)
    }

    /// One of the learner's sign-ins, if it is theirs and live now: what a learner may end by id.
    pub async fn live_of_user(&self, user_id: &str, sid: &str) -> Result<Option<SignIn>> {
        match self.store.standing(sid).await? {
            Some(standing) if standing.user_id == user_id => Ok(self
                .find(sid)
                .await?
                .filter(|row| row.user_id == user_id && row.revoked_at.is_none())),
            _ => Ok(None),
        }
    }

    /// Every learner's sign-ins that still work, newest first (for operators), or one learner's.
    pub async fn live(&self, user_id: Option<&str>) -> Result<Vec<SignIn>> {
        let rows: Vec<SignIn> = sqlx::query_as(select_sign_ins!(
            "where (cast($1 as text) is null or user_id = $1) and revoked_at is null
             and expires_at > $2 order by created_at desc"
        ))
        .bind(user_id)
        .bind(self.clock.now())
        .fetch_all(&self.db)
        .await?;
        self.only_live(rows).await
    }

    /// How many sign-ins are live now, across every learner (for the metrics): the candidates
    /// from the database, checked against the shared store a thousand per round trip.
    pub async fn count_live(&self) -> Result<usize> {
        let sids: Vec<String> = sqlx::query_scalar(
            "select id from sign_ins where revoked_at is null and expires_at > $1",
        )
        .bind(self.clock.now())
        .fetch_all(&self.db)
        .await?;
        let mut live = 0;
        for chunk in sids.chunks(1000) {
            live += self
                .store
                .standings(chunk)
                .await?
                .iter()
                .filter(|s| s.is_some())
                .count();
        }
        Ok(live)
    }

    /// The rows whose sign-in the shared store holds live, in one round trip.
    async fn only_live(&self, rows: Vec<SignIn>) -> Result<Vec<SignIn>> {
        let sids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let standings = self.store.standings(&sids).await?;
        Ok(rows
            .into_iter()
            .zip(standings)
            .filter_map(|(row, standing)| standing.map(|_| row))
            .collect())
    }

    /// The learner whose live sign-in this is, if it is live.
    pub async fn live_user(&self, sid: &str) -> Result<Option<String>> {
        Ok(self.store.standing(sid).await?.map(|s| s.user_id))
    }

    /// A learner's sign-ins that still work, newest first: not revoked, not past their lifetime,
    /// and live in the shared store (idled-out sign-ins, and all of them after the store lost its
    /// data, are not).
    pub async fn live_for_user(&self, user_id: &str) -> Result<Vec<SignIn>> {
        let rows: Vec<SignIn> = sqlx::query_as(select_sign_ins!(
            "where user_id = $1 and revoked_at is null and expires_at > $2
             order by created_at desc"
        ))
        .bind(user_id)
        .bind(self.clock.now())
        .fetch_all(&self.db)
        .await?;
        self.only_live(rows).await
    }

    /// Presents a refresh token. A rotation is all or nothing: the token is used up and its
    /// successor stored in one transaction, after everything that can fail first (the liveness
    /// check, the new access token), so a failure consumes nothing and a retry is not reuse.
    /// Within the grace window after a rotation the same token gets another answer of the same
    /// sign-in (two tabs at once, a lost response); after it, reuse is theft.
    #[tracing::instrument(name = "sign_in.refresh", skip_all, fields(sign_in.id))]
    pub async fn refresh(&self, token: &PlainToken) -> Result<Refresh> {
        let Some(presented) = refresh_tokens::find(&self.db, token).await? else {
            return Ok(Refresh::Refused);
        };
        let sid = presented.sign_in_id.clone();
        tracing::Span::current().record("sign_in.id", sid.as_str());
        let now = self.clock.now();
        let grace = self.lifetimes.refresh_grace;
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
            Some(_) => refresh_tokens::insert(&self.db, &sid, now).await?,
            None => match refresh_tokens::rotate(&self.db, token, &sid, now).await? {
                Some(next) => next,
                // Another request used it a moment ago.
                None if within_grace(now) => refresh_tokens::insert(&self.db, &sid, now).await?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_reasons_read_back_and_tell_the_login_page_why() {
        for reason in EndReason::ALL {
            assert_eq!(EndReason::from_stored(reason.as_str()), Some(reason));
        }
        assert_eq!(EndReason::from_stored("something else"), None);
        assert_eq!(EndReason::RefreshReuse.login_reason(), "reuse");
        assert_eq!(EndReason::Idle.login_reason(), "idle");
        assert_eq!(EndReason::Expired.login_reason(), "expired");
        assert_eq!(EndReason::SignedOut.login_reason(), "revoked");
    }
}
