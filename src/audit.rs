//! The audit log: every sign-in, sign-out, refresh-token reuse, timeout and revocation, with
//! who, which sign-in, when, from where and with what user agent.

use crate::{db::Pool, error::Result, web::ClientInfo};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    SignIn,
    SignOut,
    RefreshReuse,
    Revoked,
    /// Ended for want of activity.
    Idle,
    /// Ended at its absolute lifetime.
    Expired,
    /// The learner changed their password (the change itself, and each sign-in it ended).
    PasswordChanged,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::SignOut => "sign_out",
            Self::RefreshReuse => "refresh_reuse",
            Self::Revoked => "revoked",
            Self::Idle => "idle",
            Self::Expired => "expired",
            Self::PasswordChanged => "password_changed",
        }
    }
}

/// One row of the log, as shown on the account page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub event: String,
    pub sign_in_id: Option<String>,
    pub at: i64,
    pub ip: String,
    pub user_agent: String,
}

impl Entry {
    pub fn when(&self) -> crate::clock::Moment {
        crate::clock::Moment(self.at)
    }

    pub fn label(&self) -> &str {
        match self.event.as_str() {
            "sign_in" => "Signed in",
            "sign_out" => "Signed out",
            "refresh_reuse" => "Stolen token detected; signed out",
            "revoked" => "Sign-in ended",
            "idle" => "Signed out after a period of inactivity",
            "expired" => "Sign-in expired",
            "password_changed" => "Password changed",
            other => other,
        }
    }
}

/// One entry, written by whoever caused it.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    pub event: Event,
    pub user_id: Option<&'a str>,
    pub sign_in_id: Option<&'a str>,
    pub client: &'a ClientInfo,
    pub at: i64,
}

/// Writes one event, on a pool or inside the transaction of the change it records.
pub async fn record<'e, E>(db: E, entry: Record<'_>) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "insert into audit_events (id, event, user_id, sign_in_id, at, ip, user_agent)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id())
    .bind(entry.event.as_str())
    .bind(entry.user_id)
    .bind(entry.sign_in_id)
    .bind(entry.at)
    .bind(&entry.client.ip)
    .bind(&entry.client.user_agent)
    .execute(db)
    .await?;
    logged(&entry);
    Ok(())
}

/// A new event's id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The log line of an event written (for a statement that writes one beside its change).
pub(crate) fn logged(entry: &Record<'_>) {
    tracing::info!(
        event = entry.event.as_str(),
        user.id = entry.user_id,
        sign_in.id = entry.sign_in_id,
        ip = %entry.client.ip,
        "audit"
    );
}

/// The newest `limit` events of one learner.
pub async fn recent_for_user(pool: &Pool, user_id: &str, limit: i64) -> Result<Vec<Entry>> {
    Ok(sqlx::query_as(
        "select event, sign_in_id, at, ip, user_agent from audit_events
         where user_id = $1 order by at desc limit $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
