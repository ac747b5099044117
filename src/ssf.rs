//! Shared Signals (SSF 1.0, CAEP 1.0, RISC 1.0): other applications hear when a sign-in ends.
//!
//! **Transmitter.** Every sign-in that ends, whatever the way (every way goes through
//! [`crate::auth::SignOut`], which marks its row), gets a CAEP `session-revoked` event; a password
//! change also a `credential-change`, a deleted or disabled account a RISC `account-purged` or
//! `account-disabled`. Each is written to the [`outbox`], one row per stream, in the same database
//! transaction as what it tells, so nothing between the two can lose it. A worker on every
//! instance pushes each push stream's events in order (one instance at a time per stream, by a
//! lease), with backoff, until the receiver answers 202; poll streams fetch and acknowledge
//! theirs. The Security Event Tokens are made and signed ([`set`], RS256 with the shared
//! [`keys`]) as they are sent. Receivers are registered by an operator ([`clients`]), get bearer
//! tokens by the client-credentials grant, and manage their [`streams`] as SSF 1.0 says.
//!
//! **Receiver.** [`receiver`] accepts SETs pushed by the transmitters an operator trusts
//! (`LECTERN_SSF_TRUST`), verified against their published keys; a `session-revoked` or
//! `credential-change` for a learner ends every sign-in of theirs, reason `provider`.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /.well-known/ssf-configuration` | the transmitter's metadata |
//! | `GET /ssf/jwks` | the keys SETs are signed with |
//! | `POST /ssf/token` | client credentials for a bearer token (`ssf.manage ssf.read`) |
//! | `/ssf/streams` | stream configuration: `POST`, `GET`, `PATCH`, `PUT`, `DELETE` |
//! | `GET/POST /ssf/status` | a stream's status |
//! | `POST /ssf/verify` | asks for a verification event |
//! | `POST /ssf/poll/{stream_id}` | a poll stream's events (RFC 8936) |
//! | `POST /ssf/receive` | SETs pushed by trusted transmitters (RFC 8935) |

pub mod clients;
pub mod keys;
pub mod outbox;
pub mod receiver;
pub mod set;
pub mod streams;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{FromRef, Request},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;
use tokio::sync::Notify;
use tower::ServiceBuilder;

use crate::{
    auth::SignOut,
    clock::Clock,
    config::Settings,
    db::Pool,
    error::AppError,
    web::{TrustedProxies, cache, failures},
};

/// Everything the transmitter and the receiver share. A clone shares it.
#[derive(Clone)]
pub struct Ssf(Arc<Parts>);

pub struct Parts {
    pub db: Pool,
    pub clock: Clock,
    /// `LECTERN_PUBLIC_URL`, without a trailing slash: the issuer, and every endpoint's origin.
    pub issuer: String,
    pub keys: keys::SigningKeys,
    pub tokens: clients::ClientTokens,
    pub http: reqwest::Client,
    /// Woken when an event is written to the outbox, so this instance sends it at once.
    pub wake: Arc<Notify>,
    /// How long an event is kept for a receiver that does not take it.
    pub give_up: i64,
    pub trust: receiver::Trust,
    pub sign_out: SignOut,
}

impl std::ops::Deref for Ssf {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl Ssf {
    pub fn new(
        db: Pool,
        clock: Clock,
        settings: &Settings,
        sign_out: SignOut,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lectern/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let issuer = settings.public_url.clone();
        let give_up = i64::try_from(settings.ssf_give_up.as_secs()).unwrap_or(i64::MAX);
        Ok(Self(Arc::new(Parts {
            keys: keys::SigningKeys::new(
                db.clone(),
                clock.clone(),
                settings.secret_bytes(),
                give_up,
            ),
            tokens: clients::ClientTokens::new(settings.secret_bytes(), &issuer),
            trust: receiver::Trust::new(settings.ssf_trust.clone(), &issuer),
            db,
            clock,
            issuer,
            http,
            wake,
            give_up,
            sign_out,
        })))
    }

    /// An endpoint's full address.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

/// The Shared Signals routes (see the module documentation).
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Ssf: FromRef<S>,
    TrustedProxies: FromRef<S>,
{
    Router::new()
        .route("/.well-known/ssf-configuration", get(streams::metadata))
        .route("/ssf/jwks", get(keys::jwks))
        .route("/ssf/token", post(clients::token))
        .route(
            "/ssf/streams",
            get(streams::read)
                .post(streams::create)
                .patch(streams::update)
                .put(streams::replace)
                .delete(streams::delete),
        )
        .route(
            "/ssf/status",
            get(streams::status).post(streams::set_status),
        )
        .route("/ssf/verify", post(streams::verify))
        .route("/ssf/poll/{stream_id}", post(outbox::poll))
        .route("/ssf/receive", post(receiver::receive))
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(json_rules))
                .layer(failures::timeout()),
        )
}

/// Every answer is `no-store`, and a library's bare 5xx becomes JSON.
async fn json_rules(request: Request, next: Next) -> Response {
    let mut response = failures::as_json(next.run(request).await);
    cache::set_no_store(&mut response);
    response
}

/// What a Shared Signals endpoint answers when it refuses: JSON, with the status SSF 1.0 names.
#[derive(Debug)]
pub enum SsfError {
    /// 401: no bearer token, or one that is not valid (RFC 6750).
    InvalidToken,
    /// 403: the token lacks the scope this needs.
    InsufficientScope(&'static str),
    /// 400 `invalid_request`.
    BadRequest(String),
    /// 404: no such stream for this receiver.
    NotFound,
    /// 409: this receiver has as many streams as it may.
    Conflict(&'static str),
    /// 429: asked again too soon.
    TooSoon { retry_after: i64 },
    /// A pushed SET refused (RFC 8935 §2.3): 400 with `err` and `description`.
    Set {
        err: &'static str,
        description: String,
    },
    /// Lectern's own failures (5xx), and the rest.
    App(AppError),
}

impl<E: Into<AppError>> From<E> for SsfError {
    fn from(err: E) -> Self {
        Self::App(err.into())
    }
}

impl SsfError {
    pub fn bad(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn set(err: &'static str, description: impl Into<String>) -> Self {
        Self::Set {
            err,
            description: description.into(),
        }
    }
}

impl IntoResponse for SsfError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::InvalidToken => {
                let body = json!({
                    "error": "invalid_token",
                    "message": "A valid bearer token is needed: get one from the token endpoint.",
                });
                let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
                return response;
            }
            Self::InsufficientScope(scope) => {
                let body = json!({
                    "error": "insufficient_scope",
                    "message": format!("This needs a token with the scope {scope}."),
                });
                let mut response = (StatusCode::FORBIDDEN, Json(body)).into_response();
                let challenge = format!(r#"Bearer error="insufficient_scope", scope="{scope}""#);
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, value);
                }
                return response;
            }
            Self::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                json!({ "error": "invalid_request", "message": message }),
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                json!({ "error": "not_found", "message": "There is no such stream for this receiver." }),
            ),
            Self::Conflict(message) => (
                StatusCode::CONFLICT,
                json!({ "error": "conflict", "message": message }),
            ),
            Self::TooSoon { retry_after } => {
                let body = json!({
                    "error": "too_many_requests",
                    "message": format!("Ask again in {retry_after} seconds."),
                });
                let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
                return response;
            }
            Self::Set { err, description } => (
                StatusCode::BAD_REQUEST,
                json!({ "err": err, "description": description }),
            ),
            Self::App(err) => return err.json(),
        };
        (status, Json(body)).into_response()
    }
}

/// The result of a Shared Signals handler.
pub type SsfResult<T> = Result<T, SsfError>;
