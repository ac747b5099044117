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
    /// A shared computer's browser was closed.
    Closed,
    /// The identity provider signed the learner out.
    Provider,
    /// The account was deleted (and each sign-in it ended).
    AccountDeleted,
    /// An operator disabled the account, or enabled it again.
    AccountDisabled,
    AccountEnabled,
    /// An event for another application that its receiver never took (see `crate::ssf`).
    SignalUndelivered,
    /// A device-bound sign-in's session cookie came without its bound cookie: refused.
    BoundRefused,
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
            Self::Closed => "closed",
            Self::Provider => "provider",
            Self::AccountDeleted => "account_deleted",
            Self::AccountDisabled => "account_disabled",
            Self::AccountEnabled => "account_enabled",
            Self::SignalUndelivered => "signal_undelivered",
            Self::BoundRefused => "bound_refused",
        }
    }
}

/// One row of the log, as the account page reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub id: String,
    pub event: String,
    pub at: i64,
    pub ip: String,
    pub txn: Option<String>,
}

/// One thing the learner (or the system) did, as the account page shows it: the rows one action
/// wrote (its `txn`) shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub label: String,
    pub at: i64,
    pub ip: String,
}

impl Entry {
    pub fn when(&self) -> crate::clock::Moment {
        crate::clock::Moment(self.at)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The rows of one action, newest first, as one entry.
    fn of(rows: &[&Row]) -> Self {
        let count = |event: &str| rows.iter().filter(|r| r.event == event).count();
        let label = match rows {
            [] => String::new(),
            _ if count("password_changed") > 0 => match count("password_changed") - 1 {
                // The browser that changed it had its own sign-in replaced.
                0 => "Password changed".to_owned(),
                1 => "Password changed; 1 other sign-in ended".to_owned(),
                others => format!("Password changed; {others} other sign-ins ended"),
            },
            [one] => single(&one.event).to_owned(),
            _ if count("sign_out") == rows.len() => {
                format!("Signed out of {} sign-ins", rows.len())
            }
            _ if count("revoked") == rows.len() => format!("Ended {} sign-ins", rows.len()),
            [first, ..] => single(&first.event).to_owned(),
        };
        let newest = rows.first();
        Self {
            label,
            at: newest.map_or(0, |r| r.at),
            ip: newest.map(|r| r.ip.clone()).unwrap_or_default(),
        }
    }
}

/// What one row says, in words.
fn single(event: &str) -> &str {
    match event {
        "sign_in" => "Signed in",
        "sign_out" => "Signed out",
        "refresh_reuse" => "Stolen token detected; signed out",
        "revoked" => "Sign-in ended",
        "idle" => "Signed out after a period of inactivity",
        "expired" => "Sign-in expired",
        "password_changed" => "Password changed",
        "closed" => "Signed out: the shared computer's browser was closed",
        "provider" => "Signed out by your organisation's sign-in service",
        "account_disabled" => "Account disabled by an administrator",
        "account_enabled" => "Account enabled again by an administrator",
        "bound_refused" => "Refused: a copy of a sign-in without its device",
        other => other,
    }
}

/// The id that ties together the audit rows of one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn(String);

impl Txn {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Txn {
    fn default() -> Self {
        Self::new()
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
    /// The action it belongs to.
    pub txn: &'a Txn,
}

/// Writes one event, on a pool or inside the transaction of the change it records.
pub async fn record<'e, E>(db: E, entry: Record<'_>) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "insert into audit_events (id, event, user_id, sign_in_id, at, ip, user_agent, txn)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new_id())
    .bind(entry.event.as_str())
    .bind(entry.user_id)
    .bind(entry.sign_in_id)
    .bind(entry.at)
    .bind(&entry.client.ip)
    .bind(&entry.client.user_agent)
    .bind(entry.txn.as_str())
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

/// How many of a learner's newest rows to read first for `limit` entries: enough when most
/// actions wrote one row; [`entries_from`] reads on when they did not.
pub fn first_read(limit: usize) -> i64 {
    i64::try_from(limit * 2).unwrap_or(i64::MAX)
}

/// The newest `limit` things one learner did (or the system did to their sign-ins), the rows of
/// one action shown once.
pub async fn recent_for_user(pool: &Pool, user_id: &str, limit: usize) -> Result<Vec<Entry>> {
    let asked = first_read(limit);
    let rows = older(pool, user_id, None, asked).await?;
    entries_from(pool, user_id, rows, asked, limit).await
}

/// Up to `count` of a learner's rows, newest first, older than `before` (`at`, `id`) if given.
async fn older(
    pool: &Pool,
    user_id: &str,
    before: Option<(i64, &str)>,
    count: i64,
) -> Result<Vec<Row>> {
    let (at, id) = before.unwrap_or((i64::MAX, ""));
    Ok(sqlx::query_as(
        "select id, event, at, ip, txn from audit_events
         where user_id = $1 and (at < $2 or (at = $2 and id < $3))
         order by at desc, id desc limit $4",
    )
    .bind(user_id)
    .bind(at)
    .bind(id)
    .bind(count)
    .fetch_all(pool)
    .await?)
}

/// The most rows one look at a learner's activity reads, however many one action wrote.
const MOST_ROWS: usize = 1000;

/// A learner's newest `limit` entries from their newest rows, `rows` (a read of `asked` rows):
/// reads older rows, twice as many each time, until the rows hold one action more than `limit`
/// (so the last one shown has all its rows) or there are no more. It stops at [`MOST_ROWS`], so
/// a learner whose one action wrote more (signing out of thousands of sign-ins) sees fewer
/// entries, the last of them counting only the rows read, and a page view stays bounded.
pub async fn entries_from(
    pool: &Pool,
    user_id: &str,
    mut rows: Vec<Row>,
    mut asked: i64,
    limit: usize,
) -> Result<Vec<Entry>> {
    let mut got = rows.len();
    while i64::try_from(got).unwrap_or(i64::MAX) >= asked
        && rows.len() < MOST_ROWS
        && actions(&rows).len() <= limit
    {
        let Some(last) = rows.last() else { break };
        let room = i64::try_from(MOST_ROWS - rows.len()).unwrap_or(i64::MAX);
        asked = asked.saturating_mul(2).min(room);
        let more = older(pool, user_id, Some((last.at, &last.id)), asked).await?;
        got = more.len();
        rows.extend(more);
    }
    Ok(actions(&rows)
        .iter()
        .take(limit)
        .map(|rows| Entry::of(rows))
        .collect())
}

/// A learner's rows, newest first, grouped by action in the order of each action's newest row;
/// a row without one stands alone.
fn actions(rows: &[Row]) -> Vec<Vec<&Row>> {
    let mut actions: Vec<Vec<&Row>> = Vec::new();
    let mut by_txn: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for row in rows {
        match row.txn.as_deref() {
            Some(txn) => match by_txn.get(txn) {
                Some(&at) => actions[at].push(row),
                None => {
                    by_txn.insert(txn, actions.len());
                    actions.push(vec![row]);
                }
            },
            None => actions.push(vec![row]),
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(event: &str, txn: Option<&str>) -> Row {
        Row {
            id: uuid::Uuid::new_v4().to_string(),
            event: event.to_owned(),
            at: 1,
            ip: "ip".to_owned(),
            txn: txn.map(str::to_owned),
        }
    }

    #[test]
    fn one_action_is_one_entry_in_words() {
        let label = |rows: &[Row]| Entry::of(&rows.iter().collect::<Vec<_>>()).label;
        let change = [
            row("sign_in", Some("t")),
            row("password_changed", Some("t")),
            row("password_changed", Some("t")),
        ];
        assert_eq!(label(&change), "Password changed; 1 other sign-in ended");
        assert_eq!(label(&change[1..2]), "Password changed");
        assert_eq!(
            label(&[row("sign_out", Some("g")), row("sign_out", Some("g"))]),
            "Signed out of 2 sign-ins"
        );
        assert_eq!(label(&[row("revoked", None)]), "Sign-in ended");
        assert_eq!(
            label(&[row("idle", None)]),
            "Signed out after a period of inactivity"
        );
    }

    #[test]
    fn rows_group_by_action_in_the_order_of_each_newest_row() {
        let rows = [
            row("sign_out", Some("a")),
            row("sign_in", None),
            row("sign_out", Some("a")),
            row("sign_in", None),
            row("revoked", Some("b")),
        ];
        let grouped: Vec<Vec<&str>> = actions(&rows)
            .iter()
            .map(|action| action.iter().map(|r| r.event.as_str()).collect())
            .collect();
        assert_eq!(
            grouped,
            [
                vec!["sign_out", "sign_out"],
                vec!["sign_in"],
                vec!["sign_in"],
                vec!["revoked"]
            ]
        );
    }
}
