//! Receivers an operator registered, and their bearer tokens.
//!
//! `lectern ssf clients create NAME` makes a client id and a secret (shown once; only its SHA-256
//! is kept: it is 256 random bits, so no slow hash is needed). The client trades them at
//! `POST /ssf/token` (OAuth 2.0 client credentials, RFC 6749 §4.4; HTTP Basic or form fields)
//! for a bearer token of [`TOKEN_TTL`] with the scopes `ssf.manage` (change streams) and
//! `ssf.read` (read them, poll). Tokens are accepted in the `Authorization` header only, never in
//! a query string, and only while their client is still registered.

use axum::{
    Json,
    extract::{FromRef, FromRequestParts, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{Ssf, SsfError};
use crate::{
    crypto,
    db::Pool,
    error::{AppError, Result},
};

/// How long a receiver's bearer token lasts.
pub const TOKEN_TTL: i64 = 15 * 60;
pub const MANAGE: &str = "ssf.manage";
pub const READ: &str = "ssf.read";

/// A registered receiver.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct Client {
    pub id: String,
    pub name: String,
    /// The `aud` of its streams' events.
    pub audience: String,
    pub created_at: i64,
}

/// Registers a receiver: the client and its secret (shown once). Its audience defaults to its id.
pub async fn create(
    db: &Pool,
    name: &str,
    audience: Option<&str>,
    now: i64,
) -> Result<(Client, String)> {
    let id = crypto::random_token(16);
    let secret = crypto::random_token(32);
    let client = Client {
        audience: audience.map_or_else(|| id.clone(), str::to_owned),
        id,
        name: name.to_owned(),
        created_at: now,
    };
    sqlx::query(
        "insert into ssf_clients (id, name, secret_hash, audience, created_at)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(&client.id)
    .bind(&client.name)
    .bind(crypto::sha256_hex(secret.as_bytes()))
    .bind(&client.audience)
    .bind(now)
    .execute(db)
    .await?;
    Ok((client, secret))
}

pub async fn list(db: &Pool) -> Result<Vec<Client>> {
    Ok(sqlx::query_as(
        "select id, name, audience, created_at from ssf_clients order by created_at, id",
    )
    .fetch_all(db)
    .await?)
}

pub async fn find(db: &Pool, id: &str) -> Result<Option<Client>> {
    Ok(
        sqlx::query_as("select id, name, audience, created_at from ssf_clients where id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Removes a receiver, its streams and their pending events; its tokens stop working at once.
/// Whether it existed.
pub async fn delete(db: &Pool, id: &str) -> Result<bool> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "delete from ssf_outbox where stream_id in (select id from ssf_streams where client_id = $1)",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("delete from ssf_streams where client_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query("delete from ssf_clients where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted == 1)
}

/// Whether `secret` is `id`'s.
async fn authenticate(db: &Pool, id: &str, secret: &str) -> Result<Option<Client>> {
    let row: Option<(String,)> =
        sqlx::query_as("select secret_hash from ssf_clients where id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    let given = crypto::sha256_hex(secret.as_bytes());
    // Compared in constant time even when the client is unknown.
    let stored = row.map_or_else(|| "0".repeat(64), |(hash,)| hash);
    if !bool::from(given.as_bytes().ct_eq(stored.as_bytes())) {
        return Ok(None);
    }
    find(db, id).await
}

/// Signs and checks receivers' bearer tokens (HS256, a key derived from `LECTERN_SECRET` for
/// this use alone).
pub struct ClientTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    audience: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    scope: String,
    iat: i64,
    exp: i64,
    jti: String,
}

impl ClientTokens {
    pub fn new(secret: &[u8], issuer: &str) -> Self {
        let key = crypto::derive_key(secret, "lectern ssf client tokens v1");
        Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            issuer: issuer.to_owned(),
            audience: format!("{issuer}/ssf"),
        }
    }

    fn issue(&self, client: &str, scope: &str, now: i64) -> Result<String> {
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: client.to_owned(),
            scope: scope.to_owned(),
            iat: now,
            exp: now + TOKEN_TTL,
            jti: crypto::random_token(12),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AppError::Unexpected(anyhow::anyhow!("signing a client token: {e}")))
    }

    fn check(&self, token: &str, now: i64) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()?
            .claims;
        (claims.exp > now).then_some(claims)
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

/// An OAuth error answer (RFC 6749 §5.2); `basic`: the client tried HTTP Basic, so the answer
/// says that scheme.
struct OAuthRefusal {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
    basic: bool,
}

impl OAuthRefusal {
    fn bad(error: &'static str, description: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description,
            basic: false,
        }
    }

    fn client(description: &'static str, basic: bool) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description,
            basic,
        }
    }
}

impl IntoResponse for OAuthRefusal {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut response = (self.status, Json(body)).into_response();
        if self.basic {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="lectern-ssf""#),
            );
        }
        response
    }
}

/// The `client_id:client_secret` of an HTTP Basic header, each form-urlencoded (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// What a token request asks: the client's id and secret, the scopes (both when none are named),
/// and whether HTTP Basic carried the credentials.
struct Asked {
    id: String,
    secret: String,
    scope: String,
    basic: bool,
}

fn asked(headers: &HeaderMap, body: &str) -> Result<Asked, OAuthRefusal> {
    let form: TokenRequest = serde_urlencoded::from_str(body).map_err(|_| {
        OAuthRefusal::bad(
            "invalid_request",
            "send application/x-www-form-urlencoded fields",
        )
    })?;
    if form.grant_type.as_deref() != Some("client_credentials") {
        return Err(OAuthRefusal::bad(
            "unsupported_grant_type",
            "only grant_type=client_credentials is offered",
        ));
    }
    let basic = basic_credentials(headers);
    let used_basic = basic.is_some();
    let (id, secret) = basic
        .or(form.client_id.zip(form.client_secret))
        .ok_or(OAuthRefusal::client("client credentials are missing", true))?;
    let scope = match form.scope.as_deref().map(str::trim) {
        None | Some("") => format!("{MANAGE} {READ}"),
        Some(asked) if asked.split_whitespace().all(|s| s == MANAGE || s == READ) => {
            asked.split_whitespace().collect::<Vec<_>>().join(" ")
        }
        Some(_) => {
            return Err(OAuthRefusal::bad(
                "invalid_scope",
                "the scopes offered are ssf.manage and ssf.read",
            ));
        }
    };
    Ok(Asked {
        id,
        secret,
        scope,
        basic: used_basic,
    })
}

/// `POST /ssf/token`: `grant_type=client_credentials`, the client's credentials (Basic, or the
/// form's `client_id` and `client_secret`) and an optional `scope`.
pub async fn token(State(ssf): State<Ssf>, headers: HeaderMap, body: String) -> Response {
    let asked = match asked(&headers, &body) {
        Ok(asked) => asked,
        Err(refusal) => return refusal.into_response(),
    };
    let client = match authenticate(&ssf.db, &asked.id, &asked.secret).await {
        Ok(Some(client)) => client,
        Ok(None) => {
            return OAuthRefusal::client("unknown client or wrong secret", asked.basic)
                .into_response();
        }
        Err(err) => return err.json(),
    };
    match ssf.tokens.issue(&client.id, &asked.scope, ssf.clock.now()) {
        Ok(token) => Json(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL,
            "scope": asked.scope,
        }))
        .into_response(),
        Err(err) => err.json(),
    }
}

/// The receiver a request's bearer token names, with its scopes. Refuses a token in the query
/// string, whatever else the request carries.
pub struct Receiver {
    pub client: Client,
    scopes: Vec<String>,
}

impl Receiver {
    /// Refuses the request unless the token has `scope` (`ssf.manage` also reads).
    pub fn needs(&self, scope: &'static str) -> Result<(), SsfError> {
        let has = |s: &str| self.scopes.iter().any(|own| own == s);
        if has(scope) || (scope == READ && has(MANAGE)) {
            return Ok(());
        }
        Err(SsfError::InsufficientScope(scope))
    }
}

impl<S> FromRequestParts<S> for Receiver
where
    S: Send + Sync,
    Ssf: FromRef<S>,
{
    type Rejection = SsfError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, SsfError> {
        let ssf = &Ssf::from_ref(state);
        let in_query = parts.uri.query().is_some_and(|q| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .is_ok_and(|pairs| pairs.iter().any(|(k, _)| k == "access_token"))
        });
        if in_query {
            return Err(SsfError::bad(
                "a token is accepted in the Authorization header only, never in the address",
            ));
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(SsfError::InvalidToken)?;
        let claims = ssf
            .tokens
            .check(token, ssf.clock.now())
            .ok_or(SsfError::InvalidToken)?;
        let client = find(&ssf.db, &claims.sub)
            .await?
            .ok_or(SsfError::InvalidToken)?;
        Ok(Self {
            client,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        })
    }
}
