//! The audit log: every sign-in, sign-out, refresh-token reuse and revocation, with who, which
//! sign-in, when, from where and with what user agent.

use sqlx::Row;

use crate::{db::Pool, error::Result, web::ClientInfo};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    SignIn,
    SignOut,
    RefreshReuse,
    Revoked,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::SignOut => "sign_out",
            Self::RefreshReuse => "refresh_reuse",
            Self::Revoked => "revoked",
        }
    }
}

/// One row of the log, as shown on the account page.
#[derive(Debug, Clone)]
pub struct Entry {
    pub event: String,
    pub sign_in_id: Option<String>,
    pub at: i64,
    pub ip: String,
    pub user_agent: String,
}

impl Entry {
    pub fn when(&self) -> String {
        crate::web::format_time(self.at)
    }

    pub fn label(&self) -> &str {
        match self.event.as_str() {
            "sign_in" => "Signed in",
            "sign_out" => "Signed out",
            "refresh_reuse" => "Stolen token detected; signed out",
            "revoked" => "Sign-in ended",
            other => other,
        }
    }
}

pub async fn record(
    pool: &Pool,
    event: Event,
    user_id: Option<&str>,
    sign_in_id: Option<&str>,
    client: &ClientInfo,
) -> Result<()> {
    sqlx::query(
        "insert into audit_events (id, event, user_id, sign_in_id, at, ip, user_agent)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(event.as_str())
    .bind(user_id)
    .bind(sign_in_id)
    .bind(crate::web::now())
    .bind(&client.ip)
    .bind(&client.user_agent)
    .execute(pool)
    .await?;
    tracing::info!(event = event.as_str(), user.id = user_id, sign_in.id = sign_in_id, ip = %client.ip, "audit");
    Ok(())
}

/// The newest `limit` events of one learner.
pub async fn recent_for_user(pool: &Pool, user_id: &str, limit: i64) -> Result<Vec<Entry>> {
    let rows = sqlx::query(
        "select event, sign_in_id, at, ip, user_agent from audit_events
         where user_id = $1 order by at desc limit $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Entry {
                event: row.try_get("event")?,
                sign_in_id: row.try_get("sign_in_id")?,
                at: row.try_get("at")?,
                ip: row.try_get("ip")?,
                user_agent: row.try_get("user_agent")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}
