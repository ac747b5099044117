//! The outbox: events waiting for their receivers, one row per event and stream.
//!
//! A row is written in the same transaction as what it tells ([`crate::signals`], and the statement
//! that marks ended sign-ins in PostgreSQL, see `auth::records`), for every stream that is not
//! disabled, so a crash between the two loses nothing. It leaves when the receiver has it: a
//! push receiver's 202 (or its 400: it will never take that SET), a poll receiver's
//! acknowledgement, or the give-up age (`LECTERN_SSF_GIVE_UP`, with a metric and an audit row).
//! Delivery is at least once: a receiver dedupes by `jti`.
//!
//! The worker on every instance pushes each push stream's rows oldest first, stopping at the
//! first that fails and trying again with exponential backoff, so a receiver that was down gets
//! them in order; a lease on the stream lets one instance at a time do it. A paused stream holds
//! its rows (only its `stream-updated` events go); a disabled one has none.

use std::{collections::HashMap, time::Duration};

use axum::{
    Json,
    extract::{Path, State},
    http::header,
    response::IntoResponse,
};
use metrics::{counter, gauge, histogram};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    Ssf, SsfError, SsfResult,
    clients::{READ, Receiver},
    set::{self, Row},
    streams::{Method, Status, Stream},
};
use crate::{
    audit::{self, Event as AuditEvent, Txn},
    error::Result,
    signals::Kind,
    web::ClientInfo,
};

/// How long a lease on a stream lasts: longer than one round of pushes (see [`ROUND`]).
const LEASE: i64 = 60;
/// How long one round of pushes to one stream may go on before it yields its lease.
const ROUND: Duration = Duration::from_secs(20);
/// The most rows one round sends to one stream, or one poll returns.
const BATCH: i64 = 100;
/// The longest wait between two pushes to a receiver that keeps failing.
const MAX_BACKOFF: i64 = 300;
/// How long a poll that asked to wait (`returnImmediately: false`) waits for an event.
const LONG_POLL: Duration = Duration::from_secs(10);
/// How often the worker looks for rows another instance wrote.
const LOOK: Duration = Duration::from_millis(500);

const SELECT_ROWS: &str = "select jti, stream_id, kind, user_id, sign_in_id, reason, initiator,
    detail, txn, at from ssf_outbox";

/// A stream's rows that may go now, oldest first: all of them when it is enabled, only its
/// `stream-updated` events otherwise.
async fn sendable(ssf: &Ssf, stream: &Stream, limit: i64) -> Result<Vec<Row>> {
    let enabled = stream.status == Status::Enabled;
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_ROWS} where stream_id = $1 and ($2 = 1 or kind = 'stream-updated')
         order by at, seq, jti limit $3"
    )))
    .bind(&stream.id)
    .bind(i64::from(enabled))
    .bind(limit)
    .fetch_all(&ssf.db)
    .await?)
}

/// What became of a row on its way out.
enum Made {
    /// Its signed SET.
    Signed(String),
    /// The stream does not take its kind: it is dropped.
    Unwanted,
    /// It could not be signed: it stays, for the next round.
    Unsigned,
}

/// The signed SETs of `rows` for `stream`, in order, as they are signed: off the async threads
/// (an RS256 signature is CPU work), so the first can be sent while the rest are signed.
async fn signed(ssf: &Ssf, stream: &Stream, rows: Vec<Row>) -> Result<mpsc::Receiver<(Row, Made)>> {
    let signer = ssf.keys.signer().await?;
    let (issuer, stream) = (ssf.issuer.clone(), stream.clone());
    let (out, signed) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        for row in rows {
            let wanted = Kind::from_stored(&row.kind)
                .is_some_and(|kind| !kind.requested() || stream.delivers(kind));
            let claims = set::claims(&row, &issuer, &stream.audience).filter(|_| wanted);
            let made = match claims.map(|claims| set::sign(&claims, &signer)) {
                None => Made::Unwanted,
                Some(Ok(token)) => Made::Signed(token),
                Some(Err(err)) => {
                    tracing::error!(error = %err, "could not sign a SET");
                    Made::Unsigned
                }
            };
            if out.blocking_send((row, made)).is_err() {
                break;
            }
        }
    });
    Ok(signed)
}

/// Removes a stream's rows, in one statement.
async fn forget(ssf: &Ssf, stream_id: &str, jtis: &[String]) -> Result<u64> {
    if jtis.is_empty() {
        return Ok(0);
    }
    let marks: Vec<String> = (0..jtis.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "delete from ssf_outbox where stream_id = $1 and jti in ({})",
        marks.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(stream_id);
    for jti in jtis {
        query = query.bind(jti);
    }
    Ok(query.execute(&ssf.db).await?.rows_affected())
}

/// How one push went.
enum Pushed {
    /// 2xx: the receiver has it.
    Taken,
    /// 400: the receiver will never take it (its `err`).
    Refused(String),
    /// Anything else: try again later.
    Failed(String),
}

async fn push(ssf: &Ssf, stream: &Stream, token: String) -> Pushed {
    let Some(url) = &stream.endpoint_url else {
        return Pushed::Failed("no endpoint".to_owned());
    };
    let mut request = ssf
        .http
        .post(url)
        .header(header::CONTENT_TYPE, "application/secevent+jwt")
        .header(header::ACCEPT, "application/json")
        .body(token);
    if let Some(authorization) = &stream.authorization_header {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => Pushed::Taken,
        Ok(response) if response.status() == reqwest::StatusCode::BAD_REQUEST => {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let err = body["err"].as_str().unwrap_or("invalid_request").to_owned();
            Pushed::Refused(err)
        }
        Ok(response) => Pushed::Failed(format!("HTTP {}", response.status().as_u16())),
        Err(err) if err.is_timeout() => Pushed::Failed("timed out".to_owned()),
        Err(err) if err.is_connect() => Pushed::Failed("could not connect".to_owned()),
        Err(_) => Pushed::Failed("the request failed".to_owned()),
    }
}

/// Takes the lease on a push stream that has rows and is due, if no instance holds it.
async fn lease(ssf: &Ssf, stream_id: &str, me: &str, now: i64) -> Result<bool> {
    let taken = sqlx::query(
        "update ssf_streams set lease_until = $1, leased_by = $2
         where id = $3 and lease_until < $4 and retry_at <= $4",
    )
    .bind(now + LEASE)
    .bind(me)
    .bind(stream_id)
    .bind(now)
    .execute(&ssf.db)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// One round for one stream, under its lease: its rows in order until one fails. Whether it
/// sent a whole batch, so more may be waiting.
async fn deliver(ssf: &Ssf, stream: &Stream, me: &str) -> Result<bool> {
    let started = std::time::Instant::now();
    let rows = sendable(ssf, stream, BATCH).await?;
    let full = rows.len() as i64 == BATCH;
    let mut tokens = signed(ssf, stream, rows).await?;
    let mut failed = None;
    let mut done = Vec::new();
    while let Some((row, made)) = tokens.recv().await {
        if started.elapsed() > ROUND {
            break;
        }
        let token = match made {
            Made::Signed(token) => token,
            Made::Unwanted => {
                done.push(row.jti);
                continue;
            }
            Made::Unsigned => {
                failed = Some("a SET could not be signed".to_owned());
                break;
            }
        };
        match push(ssf, stream, token).await {
            Pushed::Taken => {
                counter!("lectern_ssf_events_delivered_total").increment(1);
                let waited = (ssf.clock.now() - row.at).max(0);
                histogram!(crate::telemetry::SSF_DELIVERY).record(waited as f64);
                done.push(row.jti);
            }
            Pushed::Refused(err) => {
                tracing::warn!(stream.id = %stream.id, jti = %row.jti, %err, "a receiver refused an event; it is dropped");
                counter!("lectern_ssf_events_failed_total", "why" => "refused").increment(1);
                done.push(row.jti);
            }
            Pushed::Failed(why) => {
                failed = Some(why);
                break;
            }
        }
        // What was sent leaves the outbox as it goes, a few rows to a statement.
        if done.len() >= 16 {
            forget(ssf, &stream.id, &std::mem::take(&mut done)).await?;
        }
    }
    forget(ssf, &stream.id, &done).await?;
    let now = ssf.clock.now();
    let more = full && failed.is_none();
    match failed {
        None => {
            sqlx::query(
                "update ssf_streams set failures = 0, retry_at = 0, lease_until = 0
                 where id = $1 and leased_by = $2",
            )
            .bind(&stream.id)
            .bind(me)
            .execute(&ssf.db)
            .await?;
        }
        Some(why) => {
            let failures = stream.failures + 1;
            let wait = 1_i64
                .checked_shl(u32::try_from(failures.min(20)).unwrap_or(20))
                .unwrap_or(MAX_BACKOFF)
                .min(MAX_BACKOFF);
            tracing::warn!(stream.id = %stream.id, failures, wait, %why, "a receiver did not take an event; trying again later");
            sqlx::query(
                "update ssf_streams set failures = $1, retry_at = $2, lease_until = 0
                 where id = $3 and leased_by = $4",
            )
            .bind(failures)
            .bind(now + wait)
            .bind(&stream.id)
            .bind(me)
            .execute(&ssf.db)
            .await?;
        }
    }
    Ok(more)
}

/// Drops rows older than the give-up age: each with a metric and an audit row.
async fn give_up(ssf: &Ssf) -> Result<()> {
    let now = ssf.clock.now();
    let old: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_ROWS} where at < $1 order by at, seq limit 1000"
    )))
    .bind(now - ssf.give_up)
    .fetch_all(&ssf.db)
    .await?;
    for row in old {
        let mut tx = ssf.db.begin().await?;
        let gone = sqlx::query("delete from ssf_outbox where jti = $1")
            .bind(&row.jti)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 1 {
            let client = ClientInfo::system();
            let txn = Txn::new();
            let record = audit::Record {
                event: AuditEvent::SignalUndelivered,
                user_id: None,
                sign_in_id: row.sign_in_id.as_deref(),
                client: &client,
                at: now,
                txn: &txn,
            };
            audit::record(&mut *tx, record).await?;
        }
        tx.commit().await?;
        if gone == 1 {
            tracing::warn!(stream.id = %row.stream_id, jti = %row.jti, kind = %row.kind, "an event was never taken by its receiver; given up");
            counter!("lectern_ssf_events_failed_total", "why" => "expired").increment(1);
        }
    }
    Ok(())
}

/// The pending count and the oldest pending event's age, as gauges.
async fn measure(ssf: &Ssf) -> Result<()> {
    let (pending, oldest): (i64, Option<i64>) =
        sqlx::query_as("select count(*), min(at) from ssf_outbox")
            .fetch_one(&ssf.db)
            .await?;
    gauge!("lectern_ssf_events_pending").set(pending as f64);
    let age = oldest.map_or(0, |at| (ssf.clock.now() - at).max(0));
    gauge!("lectern_ssf_oldest_pending_seconds").set(age as f64);
    Ok(())
}

/// One pass of the worker: every push stream that has rows and is due. Whether one of them may
/// have more waiting.
pub async fn work_once(ssf: &Ssf, me: &str) -> Result<bool> {
    let now = ssf.clock.now();
    let due: Vec<Stream> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} where s.method = 'push' and s.retry_at <= $1 and s.lease_until < $1
         and exists (select 1 from ssf_outbox o where o.stream_id = s.id
                     and (s.status = 'enabled' or o.kind = 'stream-updated'))",
        super::streams::SELECT_STREAMS
    )))
    .bind(now)
    .fetch_all(&ssf.db)
    .await?;
    let mut more = false;
    for stream in due {
        // One stream's trouble does not hold up the others.
        let delivered = async {
            if lease(ssf, &stream.id, me, now).await? {
                return deliver(ssf, &stream, me).await;
            }
            Ok(false)
        };
        match delivered.await {
            Ok(busy) => more |= busy,
            Err(err) => {
                tracing::warn!(stream.id = %stream.id, error = %err, "could not deliver a stream's events");
            }
        }
    }
    Ok(more)
}

impl Ssf {
    /// Runs the worker on this runtime for as long as it runs: at once when this instance wrote
    /// an event, and every [`LOOK`] for the others'.
    pub fn spawn(&self) {
        let ssf = self.clone();
        let me = crate::crypto::random_token(9);
        tokio::spawn(async move {
            let mut rounds: u64 = 0;
            let mut more = false;
            loop {
                if !more {
                    tokio::select! {
                        () = ssf.wake.notified() => {}
                        () = tokio::time::sleep(LOOK) => {}
                    }
                }
                more = match work_once(&ssf, &me).await {
                    Ok(more) => more,
                    Err(err) => {
                        tracing::warn!(error = %err, "could not deliver events");
                        false
                    }
                };
                rounds += 1;
                // Every so often, not every pass: old rows, and the gauges.
                if rounds % 20 == 1 {
                    if let Err(err) = give_up(&ssf).await {
                        tracing::warn!(error = %err, "could not give up old events");
                    }
                    if let Err(err) = measure(&ssf).await {
                        tracing::debug!(error = %err, "could not measure the outbox");
                    }
                }
            }
        });
    }
}

/// A poll request (RFC 8936 §2.1).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollRequest {
    max_events: Option<u32>,
    return_immediately: Option<bool>,
    #[serde(default)]
    ack: Vec<String>,
    #[serde(default)]
    set_errs: HashMap<String, Value>,
}

/// `POST /ssf/poll/{stream_id}`: acknowledges what the receiver names, then returns its pending
/// SETs (waiting up to [`LONG_POLL`] for one unless `returnImmediately`).
pub async fn poll(
    State(ssf): State<Ssf>,
    receiver: Receiver,
    Path(stream_id): Path<String>,
    body: String,
) -> SsfResult<impl IntoResponse> {
    let ssf = &ssf;
    receiver.needs(READ)?;
    let stream = super::streams::own(ssf, &receiver, &stream_id).await?;
    if stream.method != Method::Poll {
        return Err(SsfError::bad("this stream is delivered by push, not poll"));
    }
    let request: PollRequest = if body.trim().is_empty() {
        PollRequest::default()
    } else {
        serde_json::from_str(&body).map_err(|e| SsfError::bad(format!("the body: {e}")))?
    };
    settle_receipts(ssf, &stream, &request).await?;
    let max = request
        .max_events
        .map_or(BATCH, |m| i64::from(m).min(BATCH));
    let wait = !request.return_immediately.unwrap_or(false);
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    loop {
        let (sets, more) = pending(ssf, &stream, max).await?;
        if max == 0 || !sets.is_empty() || !wait || tokio::time::Instant::now() >= deadline {
            return Ok(Json(json!({ "sets": sets, "moreAvailable": more })));
        }
        tokio::select! {
            () = ssf.wake.notified() => {}
            () = tokio::time::sleep(LOOK) => {}
        }
    }
}

/// A poll's acknowledgements and errors: each names a SET the receiver is done with.
async fn settle_receipts(ssf: &Ssf, stream: &Stream, request: &PollRequest) -> Result<()> {
    let acknowledged = forget(ssf, &stream.id, &request.ack).await?;
    counter!("lectern_ssf_events_delivered_total").increment(acknowledged);
    let refused: Vec<String> = request.set_errs.keys().cloned().collect();
    for (jti, error) in &request.set_errs {
        tracing::warn!(stream.id = %stream.id, %jti, err = %error["err"], "a receiver refused an event; it is dropped");
    }
    let dropped = forget(ssf, &stream.id, &refused).await?;
    counter!("lectern_ssf_events_failed_total", "why" => "refused").increment(dropped);
    Ok(())
}

/// Up to `max` of a poll stream's pending SETs, signed, and whether more are waiting.
async fn pending(
    ssf: &Ssf,
    stream: &Stream,
    max: i64,
) -> Result<(serde_json::Map<String, Value>, bool)> {
    let mut sets = serde_json::Map::new();
    if max == 0 {
        return Ok((sets, false));
    }
    let mut rows = sendable(ssf, stream, max + 1).await?;
    let more = rows.len() as i64 > max;
    rows.truncate(usize::try_from(max).unwrap_or(0));
    let mut tokens = signed(ssf, stream, rows).await?;
    let mut unwanted = Vec::new();
    while let Some((row, made)) = tokens.recv().await {
        match made {
            Made::Signed(token) => {
                sets.insert(row.jti, json!(token));
            }
            Made::Unwanted => unwanted.push(row.jti),
            Made::Unsigned => {}
        }
    }
    forget(ssf, &stream.id, &unwanted).await?;
    Ok((sets, more))
}
