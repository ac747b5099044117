//! The transmitter's metadata, and the streams receivers manage (SSF 1.0 §7, §8.1).
//!
//! A receiver may hold up to [`MOST_STREAMS`] streams. Its events carry its client's audience.
//! A push stream's `endpoint_url` is the receiver's (`https`, or `http` on a loopback address); a
//! poll stream's is `/ssf/poll/{stream_id}` here. Verification may be asked for once every
//! [`MIN_VERIFICATION_INTERVAL`] seconds.

use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
    response::IntoResponse,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Ssf, SsfError, SsfResult,
    clients::{MANAGE, READ, Receiver},
};
use crate::{
    audit::Txn,
    db::Pool,
    error::Result,
    signals::{self, Event, Kind},
};

pub const MOST_STREAMS: i64 = 8;
pub const MIN_VERIFICATION_INTERVAL: i64 = 10;
pub const PUSH: &str = "urn:ietf:rfc:8935";
pub const POLL: &str = "urn:ietf:rfc:8936";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Push,
    Poll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Enabled,
    Paused,
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Paused => "paused",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Enabled, Self::Paused, Self::Disabled]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// A stream, with its client's audience.
#[derive(Debug, Clone)]
pub struct Stream {
    pub id: String,
    pub client_id: String,
    pub audience: String,
    pub method: Method,
    pub endpoint_url: Option<String>,
    pub authorization_header: Option<String>,
    /// `None`: the receiver asked for nothing in particular, and gets every event offered.
    pub events_requested: Option<Vec<String>>,
    pub description: Option<String>,
    pub status: Status,
    pub status_reason: Option<String>,
    pub verified_at: i64,
    pub failures: i64,
}

pub(super) const SELECT_STREAMS: &str = "select s.id, s.client_id, c.audience, s.method,
    s.endpoint_url, s.authorization_header, s.events_requested, s.description, s.status,
    s.status_reason, s.verified_at, s.failures
    from ssf_streams s join ssf_clients c on c.id = s.client_id";

impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for Stream {
    fn from_row(row: &'r sqlx::any::AnyRow) -> sqlx::Result<Self> {
        use sqlx::Row;
        let method: String = row.try_get("method")?;
        let status: String = row.try_get("status")?;
        let requested: Option<String> = row.try_get("events_requested")?;
        Ok(Self {
            id: row.try_get("id")?,
            client_id: row.try_get("client_id")?,
            audience: row.try_get("audience")?,
            method: if method == "push" {
                Method::Push
            } else {
                Method::Poll
            },
            endpoint_url: row.try_get("endpoint_url")?,
            authorization_header: row.try_get("authorization_header")?,
            events_requested: requested.and_then(|r| serde_json::from_str(&r).ok()),
            description: row.try_get("description")?,
            status: Status::parse(&status).unwrap_or(Status::Disabled),
            status_reason: row.try_get("status_reason")?,
            verified_at: row.try_get("verified_at")?,
            failures: row.try_get("failures")?,
        })
    }
}

impl Stream {
    /// Whether it takes `kind` (one of [`Kind::OFFERED`]).
    pub fn delivers(&self, kind: Kind) -> bool {
        self.events_requested
            .as_ref()
            .is_none_or(|asked| asked.iter().any(|uri| *uri == kind.uri()))
    }

    fn delivered(&self) -> Vec<String> {
        Kind::OFFERED
            .into_iter()
            .filter(|k| self.delivers(*k))
            .map(Kind::uri)
            .collect()
    }

    /// The configuration object (SSF 1.0 §8.1.1).
    fn config(&self, ssf: &Ssf) -> Value {
        let mut delivery = Map::new();
        delivery.insert(
            "method".into(),
            json!(match self.method {
                Method::Push => PUSH,
                Method::Poll => POLL,
            }),
        );
        let endpoint = match self.method {
            Method::Push => self.endpoint_url.clone(),
            Method::Poll => Some(ssf.url(&format!("/ssf/poll/{}", self.id))),
        };
        if let Some(url) = endpoint {
            delivery.insert("endpoint_url".into(), json!(url));
        }
        if let Some(authorization) = &self.authorization_header {
            delivery.insert("authorization_header".into(), json!(authorization));
        }
        let supported: Vec<String> = Kind::OFFERED.into_iter().map(Kind::uri).collect();
        let mut config = json!({
            "stream_id": self.id,
            "iss": ssf.issuer,
            "aud": self.audience,
            "events_supported": supported,
            "events_delivered": self.delivered(),
            "delivery": delivery,
            "min_verification_interval": MIN_VERIFICATION_INTERVAL,
        });
        if let Some(requested) = &self.events_requested {
            config["events_requested"] = json!(requested);
        }
        if let Some(description) = &self.description {
            config["description"] = json!(description);
        }
        config
    }

    fn status_object(&self) -> Value {
        let mut status = json!({ "stream_id": self.id, "status": self.status.as_str() });
        if let Some(reason) = &self.status_reason {
            status["reason"] = json!(reason);
        }
        status
    }
}

/// The receiver's stream `id`, or 404.
pub(super) async fn own(ssf: &Ssf, receiver: &Receiver, id: &str) -> SsfResult<Stream> {
    let stream: Option<Stream> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_STREAMS} where s.id = $1 and s.client_id = $2"
    )))
    .bind(id)
    .bind(&receiver.client.id)
    .fetch_optional(&ssf.db)
    .await?;
    stream.ok_or(SsfError::NotFound)
}

/// Every stream, for operators.
pub async fn all(db: &Pool) -> Result<Vec<Stream>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_STREAMS} order by s.created_at, s.id"
    )))
    .fetch_all(db)
    .await?)
}

/// `GET /.well-known/ssf-configuration`.
pub async fn metadata(State(ssf): State<Ssf>) -> impl IntoResponse {
    let ssf = &ssf;
    Json(json!({
        "spec_version": "1_0",
        "issuer": ssf.issuer,
        "jwks_uri": ssf.url("/ssf/jwks"),
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": ssf.url("/ssf/streams"),
        "status_endpoint": ssf.url("/ssf/status"),
        "verification_endpoint": ssf.url("/ssf/verify"),
        "authorization_schemes": [{ "spec_urn": "urn:ietf:rfc:6749" }],
        "default_subjects": "ALL",
        "token_endpoint": ssf.url("/ssf/token"),
    }))
}

/// What the receiver supplies, read from a request body.
struct Supplied {
    method: Method,
    endpoint_url: Option<String>,
    authorization_header: Option<String>,
    events_requested: Option<Vec<String>>,
    description: Option<String>,
}

const TRANSMITTER_SUPPLIED: [&str; 7] = [
    "stream_id",
    "iss",
    "aud",
    "events_supported",
    "events_delivered",
    "min_verification_interval",
    "inactivity_timeout",
];

fn body_object(body: &str) -> SsfResult<Map<String, Value>> {
    match serde_json::from_str(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(SsfError::bad("the body must be a JSON object")),
    }
}

/// A push endpoint: an `https` URL, or `http` on a loopback address (a receiver on this machine).
fn endpoint(raw: &Value) -> SsfResult<String> {
    let raw = raw
        .as_str()
        .ok_or_else(|| SsfError::bad("delivery.endpoint_url must be a URL"))?;
    let url =
        url::Url::parse(raw).map_err(|_| SsfError::bad("delivery.endpoint_url must be a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    let fine = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !fine || url.cannot_be_a_base() {
        return Err(SsfError::bad(
            "delivery.endpoint_url must be https (http only on a loopback address)",
        ));
    }
    Ok(url.to_string())
}

/// Reads the receiver-supplied properties of `object`; a missing one is taken from `base` (an
/// update) or left out (a create, a replace).
fn supplied(object: &Map<String, Value>, base: Option<&Stream>) -> SsfResult<Supplied> {
    let delivery = object.get("delivery");
    let (method, endpoint_url, authorization_header) = match delivery {
        None => match base {
            Some(stream) => (
                stream.method,
                stream.endpoint_url.clone(),
                stream.authorization_header.clone(),
            ),
            None => (Method::Poll, None, None),
        },
        Some(Value::Object(delivery)) => {
            let method = match delivery.get("method").and_then(Value::as_str) {
                Some(PUSH) => Method::Push,
                Some(POLL) | None => Method::Poll,
                Some(_) => return Err(SsfError::bad("delivery.method is not one offered")),
            };
            let authorization = match delivery.get("authorization_header") {
                None | Some(Value::Null) => None,
                Some(Value::String(value)) if !value.is_empty() && value.len() <= 4096 => {
                    Some(value.clone())
                }
                Some(_) => return Err(SsfError::bad("delivery.authorization_header must be text")),
            };
            match method {
                Method::Push => {
                    let url = delivery.get("endpoint_url").ok_or_else(|| {
                        SsfError::bad("a push stream needs delivery.endpoint_url")
                    })?;
                    (method, Some(endpoint(url)?), authorization)
                }
                Method::Poll => (method, None, authorization),
            }
        }
        Some(_) => return Err(SsfError::bad("delivery must be an object")),
    };
    let events_requested = match object.get("events_requested") {
        None => base.and_then(|s| s.events_requested.clone()),
        Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let uris: Option<Vec<String>> = items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect();
            Some(uris.ok_or_else(|| SsfError::bad("events_requested must be a list of URIs"))?)
        }
        Some(_) => return Err(SsfError::bad("events_requested must be a list of URIs")),
    };
    let description = match object.get("description") {
        None => base.and_then(|s| s.description.clone()),
        Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.chars().take(256).collect()),
        Some(_) => return Err(SsfError::bad("description must be text")),
    };
    Ok(Supplied {
        method,
        endpoint_url,
        authorization_header,
        events_requested,
        description,
    })
}

/// An update or replace may repeat what the transmitter supplies, but not change it.
fn unchanged(object: &Map<String, Value>, current: &Value) -> SsfResult<()> {
    for key in TRANSMITTER_SUPPLIED {
        if let Some(given) = object.get(key)
            && Some(given) != current.get(key)
            && !(key == "aud"
                && given
                    .as_array()
                    .is_some_and(|a| a == &vec![current[key].clone()]))
        {
            return Err(SsfError::bad(format!(
                "{key} is the transmitter's and cannot be changed"
            )));
        }
    }
    Ok(())
}

async fn store(ssf: &Ssf, id: &str, supplied: &Supplied) -> Result<()> {
    sqlx::query(
        "update ssf_streams set method = $1, endpoint_url = $2, authorization_header = $3,
         events_requested = $4, description = $5, failures = 0, retry_at = 0 where id = $6",
    )
    .bind(match supplied.method {
        Method::Push => "push",
        Method::Poll => "poll",
    })
    .bind(&supplied.endpoint_url)
    .bind(&supplied.authorization_header)
    .bind(
        supplied
            .events_requested
            .as_ref()
            .map(|e| Value::from(e.clone()).to_string()),
    )
    .bind(&supplied.description)
    .bind(id)
    .execute(&ssf.db)
    .await?;
    Ok(())
}

async fn reread(ssf: &Ssf, receiver: &Receiver, id: &str) -> SsfResult<Json<Value>> {
    Ok(Json(own(ssf, receiver, id).await?.config(ssf)))
}

/// `POST /ssf/streams`: 201 with the new stream's configuration.
pub async fn create(
    State(ssf): State<Ssf>,
    receiver: Receiver,
    body: String,
) -> SsfResult<impl IntoResponse> {
    let ssf = &ssf;
    receiver.needs(MANAGE)?;
    let object = body_object(&body)?;
    if let Some(key) = TRANSMITTER_SUPPLIED
        .iter()
        .find(|k| object.contains_key(**k))
    {
        return Err(SsfError::bad(format!("{key} is the transmitter's to set")));
    }
    let supplied = supplied(&object, None)?;
    let (count,): (i64,) = sqlx::query_as("select count(*) from ssf_streams where client_id = $1")
        .bind(&receiver.client.id)
        .fetch_one(&ssf.db)
        .await?;
    if count >= MOST_STREAMS {
        return Err(SsfError::Conflict(
            "this receiver has as many streams as it may",
        ));
    }
    let id = crate::crypto::random_token(16);
    sqlx::query(
        "insert into ssf_streams (id, client_id, method, status, created_at)
         values ($1, $2, 'poll', 'enabled', $3)",
    )
    .bind(&id)
    .bind(&receiver.client.id)
    .bind(ssf.clock.now())
    .execute(&ssf.db)
    .await?;
    store(ssf, &id, &supplied).await?;
    tracing::info!(stream.id = %id, client.id = %receiver.client.id, "a receiver created a stream");
    Ok((StatusCode::CREATED, reread(ssf, &receiver, &id).await?))
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    stream_id: Option<String>,
}

/// `GET /ssf/streams[?stream_id=]`: one stream, or every stream of the receiver's as a list.
pub async fn read(
    State(ssf): State<Ssf>,
    receiver: Receiver,
    Query(query): Query<StreamQuery>,
) -> SsfResult<Json<Value>> {
    let ssf = &ssf;
    receiver.needs(READ)?;
    if let Some(id) = query.stream_id {
        return reread(ssf, &receiver, &id).await;
    }
    let streams: Vec<Stream> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_STREAMS} where s.client_id = $1 order by s.created_at, s.id"
    )))
    .bind(&receiver.client.id)
    .fetch_all(&ssf.db)
    .await?;
    Ok(Json(Value::Array(
        streams.iter().map(|s| s.config(ssf)).collect(),
    )))
}

/// The stream a PATCH or PUT body names, with the body.
async fn named(
    ssf: &Ssf,
    receiver: &Receiver,
    body: &str,
) -> SsfResult<(Map<String, Value>, Stream)> {
    let object = body_object(body)?;
    let id = object
        .get("stream_id")
        .and_then(Value::as_str)
        .ok_or_else(|| SsfError::bad("stream_id is required"))?;
    let stream = own(ssf, receiver, id).await?;
    unchanged(&object, &stream.config(ssf))?;
    Ok((object, stream))
}

/// `PATCH /ssf/streams`: what the body gives changes; the rest stays.
pub async fn update(
    State(ssf): State<Ssf>,
    receiver: Receiver,
    body: String,
) -> SsfResult<Json<Value>> {
    let ssf = &ssf;
    receiver.needs(MANAGE)?;
    let (object, stream) = named(ssf, &receiver, &body).await?;
    let supplied = supplied(&object, Some(&stream))?;
    store(ssf, &stream.id, &supplied).await?;
    reread(ssf, &receiver, &stream.id).await
}

/// `PUT /ssf/streams`: the body is the whole of what the receiver supplies.
pub async fn replace(
    State(ssf): State<Ssf>,
    receiver: Receiver,
    body: String,
) -> SsfResult<Json<Value>> {
    let ssf = &ssf;
    receiver.needs(MANAGE)?;
    let (object, stream) = named(ssf, &receiver, &body).await?;
    let supplied = supplied(&object, None)?;
    store(ssf, &stream.id, &supplied).await?;
    reread(ssf, &receiver, &stream.id).await
}

/// `DELETE /ssf/streams?stream_id=`: 204; its pending events go with it.
pub async fn delete(
    State(ssf): State<Ssf>,
    receiver: Receiver,
    Query(query): Query<StreamQuery>,
) -> SsfResult<StatusCode> {
    let ssf = &ssf;
    receiver.needs(MANAGE)?;
    let id = query
        .stream_id
        .ok_or_else(|| SsfError::bad("stream_id is required"))?;
    let stream = own(ssf, &receiver, &id).await?;
    let mut tx = ssf.db.begin().await?;
    sqlx::query("delete from ssf_outbox where stream_id = $1")
        .bind(&stream.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("delete from ssf_streams where id = $1")
        .bind(&stream.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /ssf/status?stream_id=`.
pub async fn status(
    State(ssf): State<Ssf>,
    receiver: Receiver,
    Query(query): Query<StreamQuery>,
) -> SsfResult<Json<Value>> {
    let ssf = &ssf;
    receiver.needs(READ)?;
    let id = query
        .stream_id
        .ok_or_else(|| SsfError::bad("stream_id is required"))?;
    Ok(Json(own(ssf, &receiver, &id).await?.status_object()))
}

/// Sets a stream's status. A disabled stream's pending events are dropped (but its
/// `stream-updated` ones); a change the transmitter makes (`told`) sends `stream-updated`.
pub async fn change_status(
    db: &Pool,
    stream_id: &str,
    status: Status,
    reason: Option<&str>,
    told: Option<i64>,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let changed =
        sqlx::query("update ssf_streams set status = $1, status_reason = $2 where id = $3")
            .bind(status.as_str())
            .bind(reason)
            .bind(stream_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if status == Status::Disabled {
        sqlx::query("delete from ssf_outbox where stream_id = $1 and kind <> 'stream-updated'")
            .bind(stream_id)
            .execute(&mut *tx)
            .await?;
    }
    if let (1, Some(at)) = (changed, told) {
        let txn = Txn::new();
        let event = Event {
            kind: Kind::StreamUpdated,
            user_id: None,
            sign_in_id: None,
            reason: Some(status.as_str()),
            initiator: None,
            detail: reason,
            txn: &txn,
            at,
        };
        signals::enqueue_for(&mut *tx, stream_id, &event).await?;
    }
    tx.commit().await?;
    Ok(changed == 1)
}

/// `POST /ssf/status`: `{"stream_id","status","reason"?}`.
pub async fn set_status(
    State(ssf): State<Ssf>,
    receiver: Receiver,
    body: String,
) -> SsfResult<Json<Value>> {
    let ssf = &ssf;
    receiver.needs(MANAGE)?;
    let object = body_object(&body)?;
    let id = object
        .get("stream_id")
        .and_then(Value::as_str)
        .ok_or_else(|| SsfError::bad("stream_id is required"))?;
    let status = object
        .get("status")
        .and_then(Value::as_str)
        .and_then(Status::parse)
        .ok_or_else(|| SsfError::bad("status must be enabled, paused or disabled"))?;
    let reason = match object.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.chars().take(256).collect::<String>()),
        Some(_) => return Err(SsfError::bad("reason must be text")),
    };
    let stream = own(ssf, &receiver, id).await?;
    change_status(&ssf.db, &stream.id, status, reason.as_deref(), None).await?;
    ssf.wake.notify_waiters();
    Ok(Json(own(ssf, &receiver, id).await?.status_object()))
}

/// `POST /ssf/verify`: `{"stream_id","state"?}`: 204, and a verification event follows.
pub async fn verify(
    State(ssf): State<Ssf>,
    receiver: Receiver,
    body: String,
) -> SsfResult<StatusCode> {
    let ssf = &ssf;
    receiver.needs(MANAGE)?;
    let object = body_object(&body)?;
    let id = object
        .get("stream_id")
        .and_then(Value::as_str)
        .ok_or_else(|| SsfError::bad("stream_id is required"))?;
    let state_value = match object.get("state") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.len() <= 1024 => Some(text.clone()),
        Some(_) => return Err(SsfError::bad("state must be text")),
    };
    let stream = own(ssf, &receiver, id).await?;
    let now = ssf.clock.now();
    let next = stream.verified_at + MIN_VERIFICATION_INTERVAL;
    if stream.verified_at > 0 && now < next {
        return Err(SsfError::TooSoon {
            retry_after: next - now,
        });
    }
    ask_verification(&ssf.db, &stream, state_value.as_deref(), now).await?;
    ssf.wake.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

/// Notes when verification was asked for, and writes the verification event (none for a
/// disabled stream).
async fn ask_verification(db: &Pool, stream: &Stream, state: Option<&str>, now: i64) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("update ssf_streams set verified_at = $1 where id = $2")
        .bind(now)
        .bind(&stream.id)
        .execute(&mut *tx)
        .await?;
    if stream.status != Status::Disabled {
        let txn = Txn::new();
        let event = Event {
            kind: Kind::Verification,
            user_id: None,
            sign_in_id: None,
            reason: None,
            initiator: None,
            detail: state,
            txn: &txn,
            at: now,
        };
        signals::enqueue_for(&mut *tx, &stream.id, &event).await?;
    }
    tx.commit().await?;
    Ok(())
}
