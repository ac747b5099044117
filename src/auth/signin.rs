//! The life of a sign-in: started by every successful sign-in, ended by exactly one routine
//! ([`end`]) whether the learner signed out, a refresh token was reused, or it was revoked.

use sqlx::Row;

use super::{refresh, refresh::PlainToken, tokens::Claims};
use crate::{
    AppState,
    audit::{self, Event},
    db::Pool,
    error::Result,
    users::User,
    web::{ClientInfo, now},
};

/// A row of `sign_ins`.
#[derive(Debug, Clone)]
pub struct SignIn {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub ip: String,
    pub user_agent: String,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
}

impl SignIn {
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }

    pub fn started(&self) -> String {
        crate::web::format_time(self.created_at)
    }
}

/// A sign-in just started: its id and the first refresh token of its family.
#[derive(Debug)]
pub struct Started {
    pub sid: String,
    pub expires_at: i64,
    pub refresh: PlainToken,
}

/// Why a sign-in ended; shown on the login page as `?reason=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    SignedOut,
    RefreshReuse,
    /// The same browser signed in again.
    Replaced,
    Revoked,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignedOut => "signed_out",
            Self::RefreshReuse => "refresh_reuse",
            Self::Replaced => "replaced",
            Self::Revoked => "revoked",
        }
    }

    /// The reason as stored in `sign_ins.revoked_reason`.
    pub fn from_stored(stored: &str) -> Option<Self> {
        [
            Self::SignedOut,
            Self::RefreshReuse,
            Self::Replaced,
            Self::Revoked,
        ]
        .into_iter()
        .find(|r| r.as_str() == stored)
    }

    /// What the login page is told (`/login?reason=`) when a browser still sends this session.
    pub fn login_reason(self) -> &'static str {
        match self {
            Self::RefreshReuse => "reuse",
            Self::SignedOut | Self::Replaced | Self::Revoked => "revoked",
        }
    }

    fn event(self) -> Event {
        match self {
            Self::SignedOut => Event::SignOut,
            Self::RefreshReuse => Event::RefreshReuse,
            Self::Replaced | Self::Revoked => Event::Revoked,
        }
    }
}

/// Starts a sign-in for `user`: the record, the live marker, the first refresh token, the audit row.
pub async fn start(state: &AppState, user: &User, client: &ClientInfo) -> Result<Started> {
    let sid = super::random_token(16);
    let created = now();
    let expires_at = created + state.settings.session_absolute.as_secs() as i64;
    sqlx::query(
        "insert into sign_ins (id, user_id, created_at, expires_at, ip, user_agent)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&sid)
    .bind(&user.id)
    .bind(created)
    .bind(expires_at)
    .bind(&client.ip)
    .bind(&client.user_agent)
    .execute(&state.db)
    .await?;
    state.kv.mark_live(&sid, &user.id, expires_at).await?;
    let refresh = refresh::issue(&state.db, &sid, created).await?;
    audit::record(&state.db, Event::SignIn, Some(&user.id), Some(&sid), client).await?;
    Ok(Started {
        sid,
        expires_at,
        refresh,
    })
}

/// An access token just issued, as the API returns it.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub claims: Claims,
}

/// Issues an access token under `sid` and records its `jti`, so ending the sign-in revokes it
/// without the client having to present it.
pub async fn issue_access_token(state: &AppState, user_id: &str, sid: &str) -> Result<Issued> {
    let ttl = state.settings.access_ttl.as_secs() as i64;
    let (token, claims) = state.keys.jwt.issue(user_id, sid, now(), ttl)?;
    state.kv.record_jti(sid, &claims.jti, claims.exp).await?;
    Ok(Issued { token, claims })
}

/// Ends a sign-in, as one: every access token issued under it goes on the revocation list until
/// its own expiry, it stops being live (every instance checks that on every request), its browser
/// session record is deleted, and its row is marked revoked, which also kills its refresh family.
/// Idempotent.
///
/// Redis goes first: every check reads it, so when it cannot be reached nothing is half-done and
/// the caller can say so; a retry then repeats the whole routine, audit row included.
pub async fn end(
    state: &AppState,
    sid: &str,
    reason: EndReason,
    client: &ClientInfo,
) -> Result<()> {
    let revoked = state.kv.revoke_sign_in(sid).await?;
    if let Some(session) = revoked.session.as_deref() {
        delete_session(state, session).await?;
        let idle = state.settings.session_idle.as_secs() as i64;
        state
            .kv
            .mark_session_ended(session, reason.login_reason(), idle)
            .await?;
    }
    // Only the call that flips the row writes the audit row; it learns the learner in passing.
    let ended_now: Option<String> = sqlx::query(
        "update sign_ins set revoked_at = $1, revoked_reason = $2
         where id = $3 and revoked_at is null returning user_id",
    )
    .bind(now())
    .bind(reason.as_str())
    .bind(sid)
    .fetch_optional(&state.db)
    .await?
    .map(|row| row.try_get("user_id"))
    .transpose()?;
    if let Some(user_id) = ended_now {
        audit::record(&state.db, reason.event(), Some(&user_id), Some(sid), client).await?;
        tracing::info!(
            sign_in.id = sid,
            reason = reason.as_str(),
            revoked_tokens = revoked.access_tokens,
            "sign-in ended"
        );
    }
    Ok(())
}

/// Deletes a browser session record by id (a malformed id names nothing).
pub async fn delete_session(state: &AppState, session_id: &str) -> Result<()> {
    let Ok(id) = session_id.parse::<tower_sessions::session::Id>() else {
        return Ok(());
    };
    tower_sessions::SessionStore::delete(&state.sessions, &id)
        .await
        .map_err(super::session_error)
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<SignIn, sqlx::Error> {
    Ok(SignIn {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_reason: row.try_get("revoked_reason")?,
    })
}

pub async fn find(pool: &Pool, sid: &str) -> Result<Option<SignIn>> {
    let row = sqlx::query(
        "select id, user_id, created_at, expires_at, ip, user_agent, revoked_at, revoked_reason
         from sign_ins where id = $1",
    )
    .bind(sid)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// A learner's sign-ins that are neither revoked nor expired, newest first.
pub async fn active_for_user(pool: &Pool, user_id: &str) -> Result<Vec<SignIn>> {
    let rows = sqlx::query(
        "select id, user_id, created_at, expires_at, ip, user_agent, revoked_at, revoked_reason
         from sign_ins where user_id = $1 and revoked_at is null and expires_at > $2
         order by created_at desc",
    )
    .bind(user_id)
    .bind(now())
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_reasons_read_back_and_tell_the_login_page_why() {
        for reason in [
            EndReason::SignedOut,
            EndReason::RefreshReuse,
            EndReason::Replaced,
            EndReason::Revoked,
        ] {
            assert_eq!(EndReason::from_stored(reason.as_str()), Some(reason));
        }
        assert_eq!(EndReason::from_stored("something else"), None);
        assert_eq!(EndReason::RefreshReuse.login_reason(), "reuse");
        assert_eq!(EndReason::SignedOut.login_reason(), "revoked");
    }
}
