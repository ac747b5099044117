//! Sign-in records in the database: the `sign_ins` row of every sign-in, with its first refresh
//! token and audit event, marked ended once and for all when it ends. The database is the record
//! of what ended (see [`super::ledger`]); the shared store is how fast every instance learns it.
//!
//! One set of queries serves SQLite and PostgreSQL, except the grouped writes: on PostgreSQL a
//! sign-in starts in one statement, and ends arriving together are written several to a statement
//! ([`grouped_ends`]); SQLite, embedded, takes a short transaction instead.

mod grouped_ends;

use std::sync::Arc;

use sqlx::{Arguments, any::AnyArguments};
use tokio::sync::Notify;

use super::refresh_tokens::{self, PlainToken};
use crate::store::Lapse;
use crate::{
    audit::{self, Event, Txn},
    clock::Moment,
    db::Pool,
    error::{AppError, Result},
    signals,
    web::{
        ClientInfo,
        user_agent::{self, Described},
    },
};

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
    /// 1 when made on a shared or public computer.
    pub shared: i64,
    /// When it was bound to its browser's key (device-bound sign-ins); `None` when it is not.
    pub bound_at: Option<i64>,
}

impl SignIn {
    pub fn started(&self) -> Moment {
        Moment(self.created_at)
    }

    /// The last moment it was seen active: its last recorded activity, or its start.
    pub fn last_active_at(&self) -> i64 {
        self.last_seen_at.unwrap_or(self.created_at)
    }

    pub fn last_active(&self) -> Moment {
        Moment(self.last_active_at())
    }

    /// Whether it was made on a shared or public computer.
    pub fn is_shared(&self) -> bool {
        self.shared != 0
    }

    /// Device and browser in words.
    pub fn described(&self) -> Described {
        user_agent::describe(&self.user_agent)
    }

    /// Why it ended, if it did and the reason is one Lectern wrote.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.revoked_reason
            .as_deref()
            .and_then(EndReason::from_stored)
    }
}

/// A row of [`SignInRecords::open_and_recent`]: a sign-in or an audit row.
#[derive(sqlx::FromRow)]
struct AccountRow {
    kind: i64,
    id: String,
    at: i64,
    expires_at: Option<i64>,
    ip: String,
    user_agent: Option<String>,
    last_seen_at: Option<i64>,
    shared: Option<i64>,
    bound_at: Option<i64>,
    event: Option<String>,
    txn: Option<String>,
}

/// Why a sign-in ended; stored in `sign_ins.revoked_reason` and told to the login page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    SignedOut,
    RefreshReuse,
    /// The same browser signed in again.
    Replaced,
    /// Ended from another device, or by an operator.
    Revoked,
    /// No activity for the idle timeout.
    Idle,
    /// The absolute lifetime ran out.
    Expired,
    /// The learner changed their password.
    PasswordChanged,
    /// A shared computer's browser was closed (no open page for a while).
    Closed,
    /// The identity provider Lectern trusts signed the learner out.
    Provider,
    /// The account was deleted.
    AccountDeleted,
}

impl EndReason {
    pub const ALL: [Self; 10] = [
        Self::SignedOut,
        Self::RefreshReuse,
        Self::Replaced,
        Self::Revoked,
        Self::Idle,
        Self::Expired,
        Self::PasswordChanged,
        Self::Closed,
        Self::Provider,
        Self::AccountDeleted,
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
            Self::Closed => "closed",
            Self::Provider => "provider",
            Self::AccountDeleted => "account_deleted",
        }
    }

    /// The reason as stored in `sign_ins.revoked_reason`.
    pub fn from_stored(stored: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == stored)
    }

    /// What the login page is told (`/login?reason=`) when a browser still sends its session.
    /// Whether one of the sign-in's deadlines ran out (nothing of it was live when it ended).
    pub fn is_lapse(self) -> bool {
        matches!(self, Self::Idle | Self::Expired | Self::Closed)
    }

    pub fn login_reason(self) -> &'static str {
        match self {
            Self::RefreshReuse => "reuse",
            Self::Idle => "idle",
            Self::Expired => "expired",
            Self::PasswordChanged => "password_changed",
            Self::Closed => "closed",
            Self::Provider => "provider",
            Self::SignedOut | Self::Replaced | Self::Revoked | Self::AccountDeleted => "revoked",
        }
    }

    /// Who ended a sign-in, in CAEP's words (`initiating_entity`), for the events other
    /// applications are sent.
    pub fn initiator(self, by_operator: bool) -> &'static str {
        match self {
            _ if by_operator => "admin",
            Self::SignedOut
            | Self::Replaced
            | Self::Revoked
            | Self::PasswordChanged
            | Self::AccountDeleted => "user",
            Self::RefreshReuse | Self::Idle | Self::Expired | Self::Closed => "policy",
            Self::Provider => "system",
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
            Self::Closed => Event::Closed,
            Self::Provider => Event::Provider,
            Self::AccountDeleted => Event::AccountDeleted,
        }
    }
}

impl From<Lapse> for EndReason {
    fn from(lapse: Lapse) -> Self {
        match lapse {
            Lapse::Closed => Self::Closed,
            Lapse::Idle => Self::Idle,
            Lapse::Expired => Self::Expired,
        }
    }
}

/// A sign-in to write: its id, learner, lifetime and client, and the password hash it was checked
/// against (the row is written only while that hash is the learner's).
pub struct NewSignIn<'a> {
    pub sid: &'a str,
    /// The action it is part of (a registration, a password change, a sign-in).
    pub txn: &'a Txn,
    /// Made on a shared or public computer: it gets no refresh token (no long-lived credential).
    pub shared: bool,
    pub user_id: &'a str,
    pub password_hash: &'a str,
    pub created_at: i64,
    pub expires_at: i64,
    pub client: &'a ClientInfo,
}

/// A sign-in's row just written: its first refresh token, if it has one.
#[derive(Debug)]
pub struct Inserted {
    pub refresh: Option<PlainToken>,
}

/// A row just marked ended, by this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedEnded {
    pub user_id: String,
    pub expires_at: i64,
}

/// An ending as the database holds it (what [`super::ledger`] reads).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Ending {
    pub id: String,
    pub expires_at: i64,
    pub revoked_at: i64,
}

/// The sign-in records, on either database. A clone shares the pool and the writer of grouped
/// ends.
#[derive(Clone)]
pub struct SignInRecords {
    db: Pool,
    /// On PostgreSQL, where ends are written several to a statement under load; `None` on
    /// SQLite.
    grouped: Option<grouped_ends::GroupedEnds>,
    /// Woken when an ending wrote events for other applications (see [`crate::signals`]).
    wake: Arc<Notify>,
}

/// `select` of every column of [`SignIn`] from `sign_ins`, followed by the rest of the query.
macro_rules! select_sign_ins {
    ($rest:literal) => {
        concat!(
            "select id, user_id, created_at, expires_at, ip, user_agent, revoked_at, ",
            "revoked_reason, last_seen_at, shared, bound_at from sign_ins ",
            $rest
        )
    };
}

/// The insert of a new sign-in's row (`$1`-`$8`: id, learner, created, expires, address, user
/// agent, the password hash it was checked against, and whether it is a shared computer's), which
/// writes it only while that hash is the learner's current one and the account is not disabled.
/// A password change, a disable and a deletion change the learner's row before they end its
/// sign-ins, so a sign-in either lands before that change (and is ended with the rest) or is
/// refused. `$lock` is PostgreSQL's row lock, which makes the insert wait for such a change to
/// commit and read the row as it left it; SQLite has one writer at a time already.
macro_rules! insert_sign_in {
    ($lock:literal) => {
        concat!(
            "insert into sign_ins (id, user_id, created_at, expires_at, ip, user_agent, shared)
             select $1, $2, $3, $4, $5, $6, $8
             where exists (select 1 from users
               where id = $2 and password_hash = $7 and disabled_at is null ",
            $lock,
            ")"
        )
    };
}

/// A value sqlx could not bind (none of a sign-in's can fail to).
fn unbound(err: sqlx::error::BoxDynError) -> AppError {
    AppError::Unexpected(anyhow::anyhow!("binding a sign-in's values: {err}"))
}

impl SignInRecords {
    pub fn new(db: Pool, wake: Arc<Notify>) -> Self {
        let postgres = db
            .connect_options()
            .database_url
            .scheme()
            .starts_with("postgres");
        Self {
            grouped: postgres.then(|| grouped_ends::GroupedEnds::new(db.clone())),
            db,
            wake,
        }
    }

    /// Writes a new sign-in's row, its first refresh token (when it has one) and its audit
    /// event, all or nothing: on PostgreSQL one statement (one round trip, one commit), on SQLite
    /// a transaction of three steps. `None`, and nothing written, when the password it was checked
    /// against is no longer the learner's.
    pub async fn insert(&self, new: &NewSignIn<'_>) -> Result<Option<Inserted>> {
        let record = audit::Record {
            event: Event::SignIn,
            user_id: Some(new.user_id),
            sign_in_id: Some(new.sid),
            client: new.client,
            at: new.created_at,
            txn: new.txn,
        };
        let mut row = AnyArguments::default();
        let bound = (|| {
            row.add(new.sid)?;
            row.add(new.user_id)?;
            row.add(new.created_at)?;
            row.add(new.expires_at)?;
            row.add(new.client.ip.as_str())?;
            row.add(new.client.user_agent.as_str())?;
            row.add(new.password_hash)?;
            row.add(i64::from(new.shared))
        })();
        bound.map_err(unbound)?;
        if self.grouped.is_some() {
            let refresh = PlainToken::generate();
            let mut all = row;
            let bound = (|| {
                all.add(refresh.hash().as_str())?;
                all.add(audit::new_id())?;
                all.add(record.event.as_str())?;
                all.add(new.txn.as_str())?;
                all.add(i64::from(!new.shared))
            })();
            bound.map_err(unbound)?;
            let inserted: i64 = sqlx::query_scalar_with(
                concat!(
                    "with inserted as (",
                    insert_sign_in!("for share"),
                    " returning id),
                     refreshed as (
                       insert into refresh_tokens (token_hash, sign_in_id, issued_at)
                       select $9, id, $3 from inserted where $13 = 1),
                     audited as (
                       insert into audit_events (id, event, user_id, sign_in_id, at, ip, user_agent, txn)
                       select $10, $11, $2, id, $3, $5, $6, $12 from inserted)
                     select count(*) from inserted"
                ),
                all,
            )
            .fetch_one(&self.db)
            .await?;
            if inserted != 1 {
                return Ok(None);
            }
            audit::logged(&record);
            let refresh = (!new.shared).then_some(refresh);
            return Ok(Some(Inserted { refresh }));
        }
        let mut tx = self.db.begin().await?;
        let inserted = sqlx::query_with(insert_sign_in!(""), row)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted != 1 {
            return Ok(None);
        }
        let refresh = match new.shared {
            false => Some(refresh_tokens::insert(&mut *tx, new.sid, new.created_at).await?),
            true => None,
        };
        audit::record(&mut *tx, record).await?;
        tx.commit().await?;
        Ok(Some(Inserted { refresh }))
    }

    /// Marks `sid`'s row ended for `reason` at `at`, unless it already is, and writes the audit
    /// row with it (of the action `txn`), together: only the call that marks the row writes one.
    /// `Some` when this call marked it.
    pub async fn mark_ended(
        &self,
        sid: &str,
        reason: EndReason,
        client: &ClientInfo,
        at: i64,
        txn: &Txn,
    ) -> Result<Option<MarkedEnded>> {
        let record = |user_id| audit::Record {
            event: reason.event(),
            user_id: Some(user_id),
            sign_in_id: Some(sid),
            client,
            at,
            txn,
        };
        let initiator = reason.initiator(client.is_operator());
        let marked = if let Some(grouped) = &self.grouped {
            let marked = grouped
                .mark(grouped_ends::RowEnd {
                    sid: sid.to_owned(),
                    reason: reason.as_str(),
                    event: reason.event().as_str(),
                    audit_id: audit::new_id(),
                    at,
                    ip: client.ip.clone(),
                    user_agent: client.user_agent.clone(),
                    txn: txn.as_str().to_owned(),
                    initiator,
                    seq: signals::sequence(),
                })
                .await?;
            if let Some(marked) = &marked {
                audit::logged(&record(&marked.user_id));
            }
            marked
        } else {
            // SQLite: no update inside `with`; it is embedded, so its steps cost no trips.
            let mut tx = self.db.begin().await?;
            let marked: Option<(String, i64)> = sqlx::query_as(
                "update sign_ins set revoked_at = $1, revoked_reason = $2
                 where id = $3 and revoked_at is null returning user_id, expires_at",
            )
            .bind(at)
            .bind(reason.as_str())
            .bind(sid)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((user_id, _)) = &marked {
                audit::record(&mut *tx, record(user_id)).await?;
                let event = signals::Event {
                    kind: signals::Kind::SessionRevoked,
                    user_id: Some(user_id),
                    sign_in_id: Some(sid),
                    reason: Some(reason.as_str()),
                    initiator: Some(initiator),
                    detail: None,
                    txn,
                    at,
                };
                signals::enqueue(&mut *tx, &event).await?;
            }
            tx.commit().await?;
            marked.map(|(user_id, expires_at)| MarkedEnded {
                user_id,
                expires_at,
            })
        };
        if marked.is_some() {
            self.wake.notify_waiters();
        }
        Ok(marked)
    }

    /// Writes an audit row about sign-in `sid` (of its learner) that is not an ending.
    pub async fn note(&self, sid: &str, event: Event, client: &ClientInfo, at: i64) -> Result<()> {
        sqlx::query(
            "insert into audit_events (id, event, user_id, sign_in_id, at, ip, user_agent, txn)
             select $1, $2, user_id, id, $3, $4, $5, $6 from sign_ins where id = $7",
        )
        .bind(audit::new_id())
        .bind(event.as_str())
        .bind(at)
        .bind(&client.ip)
        .bind(&client.user_agent)
        .bind(Txn::new().as_str())
        .bind(sid)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Notes that `sid` was bound to its browser's key at `at`.
    pub async fn mark_bound(&self, sid: &str, at: i64) -> Result<()> {
        sqlx::query("update sign_ins set bound_at = $1 where id = $2")
            .bind(at)
            .bind(sid)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    pub async fn find(&self, sid: &str) -> Result<Option<SignIn>> {
        Ok(sqlx::query_as(select_sign_ins!("where id = $1"))
            .bind(sid)
            .fetch_optional(&self.db)
            .await?)
    }

    /// Sign-ins nobody ended that may have run out unseen: past their absolute lifetime at
    /// `now`, or not seen since `quiet_since` (the least recently seen first), with the end of
    /// their lifetime. At most `limit`.
    pub async fn maybe_lapsed(
        &self,
        now: i64,
        quiet_since: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "select id, expires_at from sign_ins
             where revoked_at is null and (expires_at <= $1 or coalesce(last_seen_at, created_at) <= $2)
             order by coalesce(last_seen_at, created_at) limit $3",
        )
        .bind(now)
        .bind(quiet_since)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.db)
        .await?)
    }

    /// The sign-ins nobody ended whose lifetime has not run out at `now` (live, or lapsed
    /// without anyone looking), newest first: every learner's, or `user_id`'s.
    pub async fn open(&self, user_id: Option<&str>, now: i64) -> Result<Vec<SignIn>> {
        // Two statements, so the learner's goes by their index on every plan.
        let query = match user_id {
            Some(user_id) => sqlx::query_as(select_sign_ins!(
                "where user_id = $2 and revoked_at is null and expires_at > $1
                 order by created_at desc"
            ))
            .bind(now)
            .bind(user_id),
            None => sqlx::query_as(select_sign_ins!(
                "where revoked_at is null and expires_at > $1 order by created_at desc"
            ))
            .bind(now),
        };
        Ok(query.fetch_all(&self.db).await?)
    }

    /// A learner's open sign-ins (as [`Self::open`]) and their newest `rows` audit rows, newest
    /// first, read in one statement: what the account page shows.
    pub async fn open_and_recent(
        &self,
        user_id: &str,
        now: i64,
        rows: i64,
    ) -> Result<(Vec<SignIn>, Vec<audit::Row>)> {
        // One shape for both kinds of row (`kind` 0: a sign-in, 1: an audit row); `at` is when a
        // sign-in started or when the event happened.
        let read: Vec<AccountRow> = sqlx::query_as(
            "select 0 as kind, id, created_at as at, expires_at, ip, user_agent, last_seen_at,
                    shared, bound_at, null as event, null as txn
             from sign_ins where user_id = $2 and revoked_at is null and expires_at > $1
             union all
             select 1, id, at, null, ip, null, null, null, null, event, txn from (
                 select id, at, ip, event, txn from audit_events
                 where user_id = $2 order by at desc, id desc limit $3
             ) recent
             order by kind, at desc, id desc",
        )
        .bind(now)
        .bind(user_id)
        .bind(rows)
        .fetch_all(&self.db)
        .await?;
        let (mut sign_ins, mut events) = (Vec::new(), Vec::new());
        for row in read {
            match row.kind {
                0 => sign_ins.push(SignIn {
                    id: row.id,
                    user_id: user_id.to_owned(),
                    created_at: row.at,
                    expires_at: row.expires_at.unwrap_or_default(),
                    ip: row.ip,
                    user_agent: row.user_agent.unwrap_or_default(),
                    revoked_at: None,
                    revoked_reason: None,
                    last_seen_at: row.last_seen_at,
                    shared: row.shared.unwrap_or_default(),
                    bound_at: row.bound_at,
                }),
                _ => events.push(audit::Row {
                    id: row.id,
                    event: row.event.unwrap_or_default(),
                    at: row.at,
                    ip: row.ip,
                    txn: row.txn,
                }),
            }
        }
        Ok((sign_ins, events))
    }

    /// Records when a sign-in was last active (while nobody has ended it).
    pub async fn seen(&self, sid: &str, at: i64) -> Result<()> {
        sqlx::query("update sign_ins set last_seen_at = $1 where id = $2 and revoked_at is null")
            .bind(at)
            .bind(sid)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// The sign-ins ended at `since` or later whose lifetime has not run out at `now`, oldest
    /// ending first.
    pub async fn ended_since(&self, since: i64, now: i64) -> Result<Vec<Ending>> {
        Ok(sqlx::query_as(
            "select id, expires_at, revoked_at from sign_ins
             where revoked_at >= $1 and expires_at > $2
             union all
             select sign_in_id, expires_at, revoked_at from forgotten_endings
             where revoked_at >= $1 and expires_at > $2
             order by revoked_at",
        )
        .bind(since)
        .bind(now)
        .fetch_all(&self.db)
        .await?)
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
