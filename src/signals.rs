//! Events for other applications, written where what they tell happens.
//!
//! When a sign-in ends, a password changes or an account is deleted or disabled, the same
//! database transaction that records it writes an event to the outbox (`ssf_outbox`), one row
//! for each Shared Signals stream that takes events, so a crash between the two loses nothing.
//! The transmitter ([`crate::ssf`]) sends them from there.

use crate::{audit::Txn, error::Result};

const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
const SSF: &str = "https://schemas.openid.net/secevent/ssf/event-type/";

/// The order of rows written within one second: the wall clock, in microseconds.
pub fn sequence() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// What an outbox row tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SessionRevoked,
    CredentialChange,
    AccountPurged,
    AccountDisabled,
    Verification,
    StreamUpdated,
}

impl Kind {
    /// The events a receiver can ask for (verification and stream-updated always come).
    pub const OFFERED: [Self; 4] = [
        Self::SessionRevoked,
        Self::CredentialChange,
        Self::AccountPurged,
        Self::AccountDisabled,
    ];

    /// As stored in `ssf_outbox.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionRevoked => "session-revoked",
            Self::CredentialChange => "credential-change",
            Self::AccountPurged => "account-purged",
            Self::AccountDisabled => "account-disabled",
            Self::Verification => "verification",
            Self::StreamUpdated => "stream-updated",
        }
    }

    pub fn from_stored(stored: &str) -> Option<Self> {
        [
            Self::SessionRevoked,
            Self::CredentialChange,
            Self::AccountPurged,
            Self::AccountDisabled,
            Self::Verification,
            Self::StreamUpdated,
        ]
        .into_iter()
        .find(|k| k.as_str() == stored)
    }

    /// The event type's URI.
    pub fn uri(self) -> String {
        let base = match self {
            Self::SessionRevoked | Self::CredentialChange => CAEP,
            Self::AccountPurged | Self::AccountDisabled => RISC,
            Self::Verification | Self::StreamUpdated => SSF,
        };
        format!("{base}{}", self.as_str())
    }

    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::OFFERED
            .into_iter()
            .chain([Self::Verification, Self::StreamUpdated])
            .find(|k| k.uri() == uri)
    }

    /// Whether a stream sends it only when it asked for it.
    pub fn requested(self) -> bool {
        Self::OFFERED.contains(&self)
    }
}

/// An event for the outbox.
pub struct Event<'a> {
    pub kind: Kind,
    pub user_id: Option<&'a str>,
    pub sign_in_id: Option<&'a str>,
    /// A sign-in's end reason, or a stream's new status.
    pub reason: Option<&'a str>,
    pub initiator: Option<&'a str>,
    /// A verification's `state`, or why a stream's status changed.
    pub detail: Option<&'a str>,
    pub txn: &'a Txn,
    pub at: i64,
}

/// Writes `event` for every stream that takes events (each row's `jti` is the event's id and
/// the stream's), on `db`: the caller's transaction.
pub async fn enqueue<'e, E>(db: E, event: &Event<'_>) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let query = sqlx::query(
        "insert into ssf_outbox
           (jti, stream_id, kind, user_id, sign_in_id, reason, initiator, detail, txn, at, seq)
         select $1 || '.' || id, id, $2, $3, $4, $5, $6, $7, $8, $9, $10
         from ssf_streams where status <> 'disabled'",
    )
    .bind(crate::crypto::random_token(12));
    with_event(query, event).execute(db).await?;
    Ok(())
}

/// Writes `event` for one stream.
pub async fn enqueue_for<'e, E>(db: E, stream_id: &str, event: &Event<'_>) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let query = sqlx::query(
        "insert into ssf_outbox
           (jti, stream_id, kind, user_id, sign_in_id, reason, initiator, detail, txn, at, seq)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(format!("{}.{stream_id}", crate::crypto::random_token(12)))
    .bind(stream_id);
    with_event(query, event).execute(db).await?;
    Ok(())
}

/// Binds an event's columns, in the outbox's order, after whatever the query bound first.
fn with_event<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    event: &'q Event<'q>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(event.kind.as_str())
        .bind(event.user_id)
        .bind(event.sign_in_id)
        .bind(event.reason)
        .bind(event.initiator)
        .bind(event.detail)
        .bind(event.txn.as_str())
        .bind(event.at)
        .bind(sequence())
}
