//! The receiver: SETs pushed by the transmitters an operator trusts (`LECTERN_SSF_TRUST`), at
//! `POST /ssf/receive` (RFC 8935).
//!
//! The signature authenticates a SET: the issuer's `ssf-configuration` names its `jwks_uri`, whose
//! keys are kept (read again when a SET names a key not seen yet, at most every [`REREAD`]). A
//! SET is refused (400 with an RFC 8935 `err`, nothing ended) unless it is typed
//! `secevent+jwt`, signed with an asymmetric algorithm by a key of a trusted issuer, has an `aud`
//! that holds `LECTERN_PUBLIC_URL`, has neither `sub` nor `exp`, has a `jti` not seen before and
//! an `iat` within [`REMEMBERED`]. A `session-revoked` or `credential-change` whose subject is a
//! learner (an `email`, alone or as a complex subject's `user`, or an `iss_sub` an operator
//! linked) ends every sign-in of that learner on every instance, reason `provider`. Other
//! subjects and events are accepted and counted.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{Jwk, JwkSet},
};
use metrics::counter;
use serde_json::Value;
use tokio::sync::RwLock;

use super::{Ssf, SsfError, SsfResult};
use crate::{
    accounts::{self, Email},
    audit::Txn,
    auth::records::EndReason,
    signals::Kind,
    web::ClientInfo,
};

/// How soon an issuer's keys may be read again when a SET names an unknown key.
const REREAD: Duration = Duration::from_secs(10);
/// How long an issuer's keys are kept before they are read again anyway.
const KEPT: Duration = Duration::from_secs(3600);
/// How long a `jti` is remembered; an older SET is refused.
pub const REMEMBERED: i64 = 7 * 24 * 3600;
/// How far in the future an `iat` may be (clocks differ).
const SKEW: i64 = 60;

struct Keys {
    keys: Vec<Jwk>,
    read: Instant,
}

/// The trusted issuers and what was read of them.
pub struct Trust {
    issuers: Vec<String>,
    audience: String,
    keys: RwLock<HashMap<String, Keys>>,
}

impl Trust {
    pub fn new(issuers: Vec<String>, audience: &str) -> Self {
        Self {
            issuers,
            audience: audience.to_owned(),
            keys: RwLock::new(HashMap::new()),
        }
    }

    /// The trusted issuer a SET's `iss` names (a trailing slash aside).
    fn trusted(&self, issuer: &str) -> Option<&str> {
        let issuer = issuer.trim_end_matches('/');
        self.issuers
            .iter()
            .find(|i| i.as_str() == issuer)
            .map(String::as_str)
    }

    /// The issuer's keys: those kept, or read now when there are none, they are old, or
    /// `kid` is not among them (and they were not read a moment ago).
    async fn keys(
        &self,
        http: &reqwest::Client,
        issuer: &str,
        kid: Option<&str>,
    ) -> SsfResult<Vec<Jwk>> {
        {
            let kept = self.keys.read().await;
            if let Some(keys) = kept.get(issuer) {
                let known = kid.is_none_or(|kid| {
                    keys.keys
                        .iter()
                        .any(|k| k.common.key_id.as_deref() == Some(kid))
                });
                let fresh = keys.read.elapsed() < KEPT;
                if fresh && (known || keys.read.elapsed() < REREAD) {
                    return Ok(keys.keys.clone());
                }
            }
        }
        let keys = fetch(http, issuer).await.map_err(|why| {
            tracing::warn!(%issuer, %why, "could not read a trusted transmitter's keys");
            SsfError::App(crate::error::AppError::unavailable(anyhow::anyhow!(
                "the transmitter's keys: {why}"
            )))
        })?;
        self.keys.write().await.insert(
            issuer.to_owned(),
            Keys {
                keys: keys.clone(),
                read: Instant::now(),
            },
        );
        Ok(keys)
    }
}

/// Where an issuer's metadata is: the well-known path goes between the host and the issuer's
/// own path (SSF 1.0 §7.2).
fn metadata_url(issuer: &str) -> Option<String> {
    let url = url::Url::parse(issuer).ok()?;
    let path = url.path().trim_end_matches('/');
    let origin = url.origin().ascii_serialization();
    Some(format!("{origin}/.well-known/ssf-configuration{path}"))
}

/// Reads the issuer's metadata (whose `issuer` must be the one trusted) and its key set.
async fn fetch(http: &reqwest::Client, issuer: &str) -> Result<Vec<Jwk>, String> {
    let url = metadata_url(issuer).ok_or("not a URL")?;
    let metadata: Value = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("metadata: {e}"))?
        .json()
        .await
        .map_err(|e| format!("metadata: {e}"))?;
    let named = metadata["issuer"].as_str().map(|i| i.trim_end_matches('/'));
    if named != Some(issuer) {
        return Err("its metadata names another issuer".to_owned());
    }
    let jwks_uri = metadata["jwks_uri"].as_str().ok_or("no jwks_uri")?;
    let set: JwkSet = http
        .get(jwks_uri)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("keys: {e}"))?
        .json()
        .await
        .map_err(|e| format!("keys: {e}"))?;
    Ok(set.keys)
}

const ASYMMETRIC: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The SET's claims once everything about it checks out.
async fn verified(ssf: &Ssf, token: &str) -> SsfResult<Value> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| SsfError::set("invalid_request", "the body is not a signed JWT"))?;
    let typed = header
        .typ
        .as_deref()
        .map(|t| t.to_ascii_lowercase())
        .is_some_and(|t| t == "secevent+jwt" || t == "application/secevent+jwt");
    if !typed {
        return Err(SsfError::set(
            "invalid_request",
            "the JWT is not typed secevent+jwt",
        ));
    }
    if !ASYMMETRIC.contains(&header.alg) {
        return Err(SsfError::set(
            "invalid_key",
            "the SET is not signed with a public-key algorithm",
        ));
    }
    // Which issuer it claims, to know whose keys to check it with.
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, p).ok()
        })
        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
        .ok_or_else(|| SsfError::set("invalid_request", "the claims are not JSON"))?;
    let issuer = payload["iss"]
        .as_str()
        .ok_or_else(|| SsfError::set("invalid_issuer", "the SET has no iss"))?;
    let trusted = ssf
        .trust
        .trusted(issuer)
        .ok_or_else(|| SsfError::set("invalid_issuer", "this issuer is not trusted here"))?;
    let keys = ssf
        .trust
        .keys(&ssf.http, trusted, header.kid.as_deref())
        .await?;
    let candidates = keys.iter().filter(|k| {
        header
            .kid
            .as_deref()
            .is_none_or(|kid| k.common.key_id.as_deref() == Some(kid))
    });
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[&ssf.trust.audience]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    // The contract asks for `aud` on every SET; the library checks it only when it is there.
    validation.set_required_spec_claims(&["aud", "iss"]);
    let mut wrong_audience = false;
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<Value>(token, &key, &validation) {
            Ok(data) => return checked(data.claims, ssf.clock.now()),
            Err(err) => {
                use jsonwebtoken::errors::ErrorKind;
                // Signed by the issuer, but addressed to no one or to someone else.
                if matches!(
                    err.kind(),
                    ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_)
                ) {
                    wrong_audience = true;
                }
            }
        }
    }
    if wrong_audience {
        return Err(SsfError::set(
            "invalid_audience",
            "the SET is not addressed to this receiver",
        ));
    }
    Err(SsfError::set(
        "invalid_key",
        "no key of the issuer verifies the signature",
    ))
}

/// The rules SSF 1.0 adds to a verified JWT.
fn checked(claims: Value, now: i64) -> SsfResult<Value> {
    if claims.get("sub").is_some() || claims.get("exp").is_some() {
        return Err(SsfError::set(
            "invalid_request",
            "a SET carries neither sub nor exp",
        ));
    }
    if claims["jti"].as_str().is_none_or(str::is_empty) {
        return Err(SsfError::set("invalid_request", "the SET has no jti"));
    }
    let iat = claims["iat"]
        .as_i64()
        .ok_or_else(|| SsfError::set("invalid_request", "the SET has no iat"))?;
    if iat > now + SKEW || iat < now - REMEMBERED {
        return Err(SsfError::set(
            "invalid_request",
            "the SET's iat is out of range",
        ));
    }
    if claims["events"]
        .as_object()
        .is_none_or(serde_json::Map::is_empty)
    {
        return Err(SsfError::set("invalid_request", "the SET has no events"));
    }
    Ok(claims)
}

/// The learners a subject names.
async fn learners(ssf: &Ssf, issuer: &str, subject: &Value) -> crate::error::Result<Vec<String>> {
    let mut found = Vec::new();
    match subject["format"].as_str() {
        Some("email") => {
            if let Some(email) = subject["email"].as_str().and_then(|e| Email::parse(e).ok())
                && let Some(user) = accounts::find_by_email(&ssf.db, &email).await?
            {
                found.push(user.id);
            }
        }
        Some("iss_sub") => {
            // Only the issuer's own subjects: a trusted provider names its own learners.
            let iss = subject["iss"]
                .as_str()
                .map(|i| i.trim_end_matches('/'))
                .filter(|i| *i == issuer.trim_end_matches('/'));
            if let (Some(iss), Some(sub)) = (iss, subject["sub"].as_str()) {
                let linked: Option<(String,)> =
                    sqlx::query_as("select user_id from ssf_links where iss = $1 and sub = $2")
                        .bind(iss)
                        .bind(sub)
                        .fetch_optional(&ssf.db)
                        .await?;
                found.extend(linked.map(|(id,)| id));
            }
        }
        Some("complex") if subject["user"].is_object() => {
            found.extend(Box::pin(learners(ssf, issuer, &subject["user"])).await?);
        }
        Some("aliases") => {
            for alias in subject["identifiers"].as_array().into_iter().flatten() {
                if alias["format"].as_str() != Some("aliases") {
                    found.extend(Box::pin(learners(ssf, issuer, alias)).await?);
                }
            }
        }
        _ => {}
    }
    found.dedup();
    Ok(found)
}

/// `POST /ssf/receive`: 202 once the SET is taken (and what it asks done), or 400.
pub async fn receive(
    State(ssf): State<Ssf>,
    client: ClientInfo,
    headers: HeaderMap,
    body: Bytes,
) -> SsfResult<StatusCode> {
    let result = take(&ssf, &client, &headers, &body).await;
    match &result {
        Ok(outcome) => counter!("lectern_ssf_received_total", "outcome" => *outcome).increment(1),
        Err(SsfError::Set { err, description }) => {
            counter!("lectern_ssf_received_total", "outcome" => "refused").increment(1);
            tracing::warn!(%err, %description, "a pushed SET was refused");
        }
        Err(_) => {}
    }
    result.map(|_| StatusCode::ACCEPTED)
}

/// Takes one pushed SET: checked, not seen before, done, and remembered. What came of it.
async fn take(
    ssf: &Ssf,
    client: &ClientInfo,
    headers: &HeaderMap,
    body: &[u8],
) -> SsfResult<&'static str> {
    let typed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/secevent+jwt"));
    if !typed {
        return Err(SsfError::set(
            "invalid_request",
            "send one SET with Content-Type: application/secevent+jwt",
        ));
    }
    let token = std::str::from_utf8(body)
        .map(str::trim)
        .map_err(|_| SsfError::set("invalid_request", "the body is not text"))?;
    let claims = verified(ssf, token).await?;
    let (issuer, jti) = (
        claims["iss"].as_str().unwrap_or_default(),
        claims["jti"].as_str().unwrap_or_default(),
    );
    let seen: Option<(String,)> =
        sqlx::query_as("select jti from ssf_received where iss = $1 and jti = $2")
            .bind(issuer)
            .bind(jti)
            .fetch_optional(&ssf.db)
            .await?;
    if seen.is_some() {
        return Err(SsfError::set(
            "invalid_request",
            "this SET was received already",
        ));
    }
    let outcome = apply(ssf, &claims, client).await?;
    let now = ssf.clock.now();
    sqlx::query(
        "insert into ssf_received (iss, jti, received_at) values ($1, $2, $3)
         on conflict do nothing",
    )
    .bind(issuer)
    .bind(jti)
    .bind(now)
    .execute(&ssf.db)
    .await?;
    sqlx::query("delete from ssf_received where received_at < $1")
        .bind(now - REMEMBERED)
        .execute(&ssf.db)
        .await?;
    Ok(outcome)
}

/// Does what the SET's events ask: what came of it, for the metric.
async fn apply(ssf: &Ssf, claims: &Value, client: &ClientInfo) -> SsfResult<&'static str> {
    let issuer = claims["iss"].as_str().unwrap_or_default();
    let mut outcome = "ignored";
    let Some(events) = claims["events"].as_object() else {
        return Ok(outcome);
    };
    for (uri, event) in events {
        let ends = matches!(
            Kind::from_uri(uri),
            Some(Kind::SessionRevoked | Kind::CredentialChange)
        );
        if !ends {
            continue;
        }
        // The subject: `sub_id`, or the event's own `subject` (CAEP's older form).
        let subject = claims.get("sub_id").unwrap_or(&event["subject"]);
        let learners = learners(ssf, issuer, subject).await?;
        if learners.is_empty() {
            outcome = "unknown_subject";
            continue;
        }
        let client = ClientInfo {
            ip: client.ip.clone(),
            user_agent: format!("Shared Signals: {issuer}"),
        };
        // One SET is one action: its endings share a transaction id.
        let txn = Txn::new();
        for user_id in learners {
            ssf.sign_out
                .everywhere(&user_id, EndReason::Provider, &client, &txn)
                .await?;
            tracing::info!(user.id = %user_id, %issuer, "the identity provider signed a learner out");
        }
        outcome = "applied";
    }
    Ok(outcome)
}
