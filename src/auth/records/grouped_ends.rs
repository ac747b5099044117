//! Marking ended sign-ins' rows in PostgreSQL together (speed only): the ends that arrive while one write is
//! in flight go into the next statement as a group, so a burst of sign-outs costs PostgreSQL one
//! statement and one commit per group instead of one per sign-out (in a pgbench trial of this
//! statement, 16 rows to a statement cost PostgreSQL a quarter of the CPU per row of one). Each
//! end still waits for the commit that holds its row and its audit row, so a sign-out answers
//! once both are written, as before; one arriving alone is written alone, at once.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use tokio::sync::{mpsc, oneshot};

use super::MarkedEnded;
use crate::{
    db::Pool,
    error::{AppError, Result},
};

/// The most ends one statement writes (ten parameters each).
const MOST: usize = 64;

/// One sign-in's row to mark ended, with its audit row.
#[derive(Debug, Clone)]
pub struct RowEnd {
    pub sid: String,
    pub reason: &'static str,
    pub event: &'static str,
    pub audit_id: String,
    pub at: i64,
    pub ip: String,
    pub user_agent: String,
    pub txn: String,
    /// Who ended it, and the order of its event, for the events other applications are sent
    /// (see `crate::signals`).
    pub initiator: &'static str,
    pub seq: i64,
}

struct Queued {
    end: RowEnd,
    done: oneshot::Sender<Result<Option<MarkedEnded>>>,
}

/// The queue of ends waiting for their statement, and the task that writes them (started with
/// the first end, on the runtime that sent it). A clone shares both.
#[derive(Clone)]
pub struct GroupedEnds {
    db: Pool,
    queue: Arc<OnceLock<mpsc::UnboundedSender<Queued>>>,
}

impl GroupedEnds {
    pub fn new(db: Pool) -> Self {
        Self {
            db,
            queue: Arc::new(OnceLock::new()),
        }
    }

    /// Marks `end.sid`'s row ended and writes its audit row, unless the row already is ended:
    /// `Some` when this call ended it. Returns once the statement holding it committed.
    pub async fn mark(&self, end: RowEnd) -> Result<Option<MarkedEnded>> {
        let queue = self.queue.get_or_init(|| {
            let (queue, waiting) = mpsc::unbounded_channel();
            tokio::spawn(write_in_groups(self.db.clone(), waiting));
            queue
        });
        let (done, answer) = oneshot::channel();
        let queued = Queued {
            end: end.clone(),
            done,
        };
        if queue.send(queued).is_ok()
            && let Ok(answer) = answer.await
        {
            return answer;
        }
        // The writing task is gone (its runtime ended, or it failed part-way): write it here.
        // Done already, the row is ended, and this finds nothing to do.
        alone(&self.db, &end).await
    }
}

/// The writing task: whatever queued while the last statement ran goes into the next one.
async fn write_in_groups(db: Pool, mut waiting: mpsc::UnboundedReceiver<Queued>) {
    let mut group = Vec::with_capacity(MOST);
    while waiting.recv_many(&mut group, MOST).await > 0 {
        write(&db, std::mem::take(&mut group)).await;
    }
}

/// Writes one group and answers each of its ends.
async fn write(db: &Pool, mut group: Vec<Queued>) {
    if group.len() == 1
        && let Some(queued) = group.pop()
    {
        let _ = queued.done.send(alone(db, &queued.end).await);
        return;
    }
    // The same sign-in twice (two tabs signing out at once): the first end is the one that may
    // mark it; the others find it ended, as they would one after the other.
    let mut firsts: Vec<&RowEnd> = Vec::with_capacity(group.len());
    for queued in &group {
        if !firsts.iter().any(|f| f.sid == queued.end.sid) {
            firsts.push(&queued.end);
        }
    }
    // In id order, so two instances writing groups that share rows lock them in the same order.
    firsts.sort_by(|a, b| a.sid.cmp(&b.sid));
    match together(db, &firsts).await {
        Ok(marked) => {
            let mut marked: HashMap<String, MarkedEnded> = marked
                .into_iter()
                .map(|(sid, user_id, expires_at)| {
                    (
                        sid,
                        MarkedEnded {
                            user_id,
                            expires_at,
                        },
                    )
                })
                .collect();
            for queued in group {
                // Only the first end of a sign-in finds it unmarked.
                let _ = queued.done.send(Ok(marked.remove(&queued.end.sid)));
            }
        }
        Err(err) if crate::error::connection_lost(&err) => {
            // The database is out of reach: each end hears so now, as it would have alone
            // (should the statement have committed with its reply lost, the retry finds the
            // rows ended).
            let cause = err.to_string();
            for queued in group {
                let _ = queued.done.send(Err(AppError::unavailable(
                    anyhow::anyhow!("{cause}").context("database"),
                )));
            }
        }
        Err(err) => {
            // One row the database refuses fails the statement: each end is written on its own
            // instead, at once and beside the next group, so each gets its own answer and the
            // others are not lost. A deadlock with another instance's group ends the same way.
            tracing::warn!(error = %err, ends = group.len(), "a group of sign-in ends is written one by one");
            for queued in group {
                let db = db.clone();
                tokio::spawn(async move {
                    let _ = queued.done.send(alone(&db, &queued.end).await);
                });
            }
        }
    }
}

/// One end, in one statement (so one round trip).
async fn alone(db: &Pool, end: &RowEnd) -> Result<Option<MarkedEnded>> {
    let marked: Option<(String, i64)> = sqlx::query_as(
        "with marked as (
           update sign_ins set revoked_at = $1, revoked_reason = $2
           where id = $3 and revoked_at is null returning user_id, expires_at),
         audited as (
           insert into audit_events (id, event, user_id, sign_in_id, at, ip, user_agent, txn)
           select $4, $5, user_id, $3, $1, $6, $7, $8 from marked),
         told as (
           insert into ssf_outbox (jti, stream_id, kind, user_id, sign_in_id, reason, initiator, txn, at, seq)
           select $4 || '.' || s.id, s.id, 'session-revoked', marked.user_id, $3, $2, $9, $8, $1, $10
           from marked cross join ssf_streams s where s.status <> 'disabled')
         select user_id, expires_at from marked",
    )
    .bind(end.at)
    .bind(end.reason)
    .bind(&end.sid)
    .bind(&end.audit_id)
    .bind(end.event)
    .bind(&end.ip)
    .bind(&end.user_agent)
    .bind(&end.txn)
    .bind(end.initiator)
    .bind(end.seq)
    .fetch_optional(db)
    .await?;
    Ok(marked.map(|(user_id, expires_at)| MarkedEnded {
        user_id,
        expires_at,
    }))
}

/// Several ends (of distinct sign-ins) in one statement: the (sign-in, learner, lifetime end) of
/// each row it ended. The list is padded to a power of two with rows that match nothing (a null id), so
/// each connection prepares a handful of statements, not one per group size.
async fn together(db: &Pool, ends: &[&RowEnd]) -> sqlx::Result<Vec<(String, String, i64)>> {
    let rows = ends.len().next_power_of_two();
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let first = row * 10;
            let params: Vec<String> = (1..=10).map(|p| format!("${}", first + p)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let sql = format!(
        "with input (sid, reason, audit_id, event, ip, user_agent, at, txn, initiator, seq) as (values {}),
         marked as (
           update sign_ins s set revoked_at = input.at, revoked_reason = input.reason
           from input where s.id = input.sid and s.revoked_at is null
           returning s.id, s.user_id, s.expires_at),
         audited as (
           insert into audit_events (id, event, user_id, sign_in_id, at, ip, user_agent, txn)
           select input.audit_id, input.event, marked.user_id, marked.id, input.at, input.ip,
                  input.user_agent, input.txn
           from marked join input on input.sid = marked.id),
         told as (
           insert into ssf_outbox (jti, stream_id, kind, user_id, sign_in_id, reason, initiator, txn, at, seq)
           select input.audit_id || '.' || s.id, s.id, 'session-revoked', marked.user_id,
                  marked.id, input.reason, input.initiator, input.txn, input.at, input.seq
           from marked join input on input.sid = marked.id
           cross join ssf_streams s where s.status <> 'disabled')
         select id, user_id, expires_at from marked",
        values.join(", ")
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    for row in 0..rows {
        query = match ends.get(row) {
            Some(end) => query
                .bind(&end.sid)
                .bind(end.reason)
                .bind(&end.audit_id)
                .bind(end.event)
                .bind(&end.ip)
                .bind(&end.user_agent)
                .bind(end.at)
                .bind(&end.txn)
                .bind(end.initiator)
                .bind(end.seq),
            None => query
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<i64>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<i64>),
        };
    }
    query.fetch_all(db).await
}
