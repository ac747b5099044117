//! Device-bound sign-ins (W3C Device Bound Session Credentials): a copied session cookie is worth
//! nothing on another machine.
//!
//! Over HTTPS, a browser sign-in's answer offers binding (`Secure-Session-Registration`, with a
//! one-time challenge and an authorization value tied to the sign-in). A browser that supports it
//! makes a key pair it keeps to itself and proves it (a `dbsc+jwt` signed with the new key, whose
//! public half is in the proof's header: the one time that header key is trusted). The sign-in is
//! then bound to that public key, kept with the sign-in in the store, and the browser holds a
//! short-lived cookie, `lectern_bound`, that only a proof signed with the same key renews. From
//! then on, a request that brings the sign-in's session cookie without a valid `lectern_bound` is
//! answered as a signed-out one (and audited): a stolen session cookie alone opens nothing.
//! Whether a sign-in is bound is part of its liveness value in the store, read with it on every
//! request; a key, once bound, is never replaced.
//!
//! The bound cookie is `<expiry>.<mac>`, an HMAC over the sign-in and its expiry (a key of its
//! own from `LECTERN_SECRET`), so checking it needs no store. Challenges are kept in the store,
//! one per sign-in, and used once. Ending a sign-in (every way goes through
//! [`super::SignOut`]) deletes its key and challenge with it: a refresh then answers
//! `{"continue": false}` and the browser drops the binding.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use axum_extra::extract::cookie::{Cookie, SameSite};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
use serde_json::{Value, json};
use sfv::{RefBareItem, RefListSerializer};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::records::SignInRecords;
use crate::{
    clock::Clock,
    crypto::{derive_key, random_token},
    error::{AppError, Result},
    store::SignInStore,
    web::ClientInfo,
};

/// The short-lived cookie a bound sign-in's requests must carry.
pub use crate::web::cookies::BOUND_COOKIE;
/// Its attributes, exactly as the session configuration names them.
pub const BOUND_ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Lax";
/// Where a browser proves its new key, and where it renews the bound cookie.
pub const REGISTER_PATH: &str = "/dbsc/register";
pub const REFRESH_PATH: &str = "/dbsc/refresh";
/// How long a registration's challenge lasts (registration runs in the background after the
/// sign-in answer), and a refresh's.
const REGISTRATION_CHALLENGE: i64 = 300;
const REFRESH_CHALLENGE: i64 = 60;
/// For how long after a binding a request without the bound cookie may be one the browser sent
/// before the registration's answer (and its cookie) reached it; its page then looks again
/// shortly, with the cookie. It is refused all the same.
pub const BINDING_SETTLES: i64 = 10;
/// What a challenge is for, its first characters: one for a registration is never taken for a
/// refresh's, nor the other way round.
const FOR_REGISTRATION: &str = "r.";
const FOR_REFRESH: &str = "f.";
/// The algorithms offered: ES256 first (browsers' software keys have only that).
const ALGORITHMS: [Algorithm; 2] = [Algorithm::ES256, Algorithm::RS256];

/// Why a proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a `dbsc+jwt` signed with an offered algorithm (or no key in a registration's header).
    Malformed,
    /// Its signature does not verify with the key.
    WrongKey,
    /// Its challenge is not the one outstanding (used, expired, or never given).
    WrongChallenge,
    /// Its authorization value is not this sign-in's.
    WrongAuthorization,
    /// The sign-in ended (or never was): nothing to bind or renew.
    Ended,
    /// The sign-in is bound already: a key, once bound, is not replaced.
    AlreadyBound,
}

/// What a refresh comes to.
pub enum Refresh {
    /// A new challenge to sign (answered with 403, as DBSC asks).
    Challenge(String),
    /// Proved: a fresh bound cookie.
    Renewed(Cookie<'static>),
    /// The sign-in ended: the browser is told to stop (`continue: false`).
    Ended,
}

/// Device binding. A clone shares it.
#[derive(Clone)]
pub struct Binding(Arc<Parts>);

struct Parts {
    store: Arc<dyn SignInStore>,
    records: SignInRecords,
    clock: Clock,
    key: [u8; 32],
    /// How long a bound cookie lasts, in seconds.
    ttl: i64,
    enabled: bool,
    /// The sign-ins whose refusal was audited in the last minute.
    audited: moka::sync::Cache<String, ()>,
}

impl Binding {
    pub fn new(
        store: Arc<dyn SignInStore>,
        records: SignInRecords,
        clock: Clock,
        secret: &[u8],
        ttl: i64,
        enabled: bool,
    ) -> Self {
        Self(Arc::new(Parts {
            store,
            records,
            clock,
            key: derive_key(secret, "lectern/bound/v1"),
            ttl,
            enabled,
            audited: moka::sync::Cache::builder()
                .time_to_live(std::time::Duration::from_secs(60))
                .max_capacity(100_000)
                .build(),
        }))
    }

    pub fn enabled(&self) -> bool {
        self.0.enabled
    }

    fn mac(&self, parts: &[&str]) -> String {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b"\x1f");
        }
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The authorization value a registration for `sid` must carry.
    fn authorization(&self, sid: &str) -> String {
        self.mac(&["authorization", sid])
    }

    /// The `Secure-Session-Registration` header for a browser sign-in just made, with its
    /// challenge kept; `None` when binding is off.
    pub async fn offer(&self, sid: &str) -> Result<Option<HeaderValue>> {
        if !self.0.enabled {
            return Ok(None);
        }
        let challenge = format!("{FOR_REGISTRATION}{}", random_token(24));
        let until = self.0.clock.now() + REGISTRATION_CHALLENGE;
        self.0.store.put_challenge(sid, &challenge, until).await?;
        let authorization = self.authorization(sid);
        let mut value = String::new();
        let mut list = RefListSerializer::new(&mut value).open_inner_list();
        for algorithm in ALGORITHMS {
            let token = format!("{algorithm:?}");
            list = list
                .inner_list_bare_item(&RefBareItem::Token(&token))
                .map_err(structured)?;
        }
        list.close_inner_list()
            .parameter("path", &RefBareItem::String(REGISTER_PATH))
            .and_then(|p| p.parameter("challenge", &RefBareItem::String(&challenge)))
            .and_then(|p| p.parameter("authorization", &RefBareItem::String(&authorization)))
            .map_err(structured)?;
        Ok(HeaderValue::from_str(&value).ok())
    }

    /// A registration: `proof` must be signed by the key its header carries, answer the
    /// outstanding challenge and carry this sign-in's authorization. Binds the sign-in to that key
    /// until its lifetime ends; the bound cookie to set.
    pub async fn register(
        &self,
        sid: &str,
        proof: &str,
    ) -> Result<std::result::Result<Cookie<'static>, Refused>> {
        let parts = &self.0;
        let Some(live) = parts.store.live(sid).await? else {
            return Ok(Err(Refused::Ended));
        };
        if live.bound {
            return Ok(Err(Refused::AlreadyBound));
        }
        let (key, claims) = match verified(proof, None) {
            Ok(verified) => verified,
            Err(refused) => return Ok(Err(refused)),
        };
        if !self.answers(sid, &claims, FOR_REGISTRATION).await? {
            return Ok(Err(Refused::WrongChallenge));
        }
        let authorization = claims["authorization"].as_str().unwrap_or_default();
        let expected = self.authorization(sid);
        if !bool::from(authorization.as_bytes().ct_eq(expected.as_bytes())) {
            return Ok(Err(Refused::WrongAuthorization));
        }
        let key = serde_json::to_string(&key)
            .map_err(|e| AppError::Unexpected(anyhow::anyhow!("encoding a key: {e}")))?;
        if !parts.store.bind(sid, &key, live.expires_at).await? {
            return Ok(Err(Refused::Ended));
        }
        parts.records.mark_bound(sid, parts.clock.now()).await?;
        Ok(Ok(self.cookie(sid)))
    }

    /// A refresh of `sid`'s bound cookie: with no proof (or a proof that fails), a new challenge;
    /// with a proof signed by the bound key answering the outstanding challenge, a fresh cookie.
    /// A sign-in that ended is told so.
    pub async fn refresh(&self, sid: &str, proof: Option<&str>) -> Result<Refresh> {
        let parts = &self.0;
        if !parts.store.live(sid).await?.is_some_and(|live| live.bound) {
            return Ok(Refresh::Ended);
        }
        let Some(stored) = parts.store.bound_key(sid).await? else {
            return Ok(Refresh::Ended);
        };
        if let Some(proof) = proof {
            let key: Option<Jwk> = serde_json::from_str(&stored).ok();
            match key.map(|key| verified(proof, Some(key))) {
                Some(Ok((_, claims))) if self.answers(sid, &claims, FOR_REFRESH).await? => {
                    return Ok(Refresh::Renewed(self.cookie(sid)));
                }
                _ => {
                    tracing::warn!(sign_in.id = %sid, "a device-bound refresh brought a proof that does not verify");
                    crate::telemetry::bound_refused("proof");
                }
            }
        }
        let challenge = format!("{FOR_REFRESH}{}", random_token(24));
        let until = parts.clock.now() + REFRESH_CHALLENGE;
        parts.store.put_challenge(sid, &challenge, until).await?;
        Ok(Refresh::Challenge(challenge))
    }

    /// Whether the proof's `jti` is the challenge outstanding for `sid`, given for `purpose`
    /// (it is used up either way).
    async fn answers(&self, sid: &str, claims: &Value, purpose: &str) -> Result<bool> {
        let Some(outstanding) = self.0.store.take_challenge(sid).await? else {
            return Ok(false);
        };
        let jti = claims["jti"].as_str().unwrap_or_default();
        Ok(outstanding.starts_with(purpose)
            && bool::from(jti.as_bytes().ct_eq(outstanding.as_bytes())))
    }

    /// A fresh bound cookie for `sid`.
    pub fn cookie(&self, sid: &str) -> Cookie<'static> {
        let expires = self.0.clock.now() + self.0.ttl;
        let value = format!(
            "{expires}.{}",
            self.mac(&["cookie", sid, &expires.to_string()])
        );
        Cookie::build((BOUND_COOKIE, value))
            .path("/")
            .secure(true)
            .http_only(true)
            .same_site(SameSite::Lax)
            .max_age(time::Duration::seconds(self.0.ttl))
            .build()
    }

    /// Whether the request carries a bound cookie of `sid` that has not run out.
    pub fn holds(&self, headers: &HeaderMap, sid: &str) -> bool {
        let now = self.0.clock.now();
        cookie_values(headers, BOUND_COOKIE).any(|value| {
            let Some((expires, mac)) = value.split_once('.') else {
                return false;
            };
            let fresh = expires.parse::<i64>().is_ok_and(|at| at > now);
            let expected = self.mac(&["cookie", sid, expires]);
            fresh && bool::from(mac.as_bytes().ct_eq(expected.as_bytes()))
        })
    }

    /// Records (in the audit log) a request refused for coming without the bound cookie, at most
    /// once a minute for a sign-in on this instance (a replayed copy cannot flood the learner's
    /// recent activity). Nothing ends: the learner's own browser still holds the key.
    pub async fn refused(&self, sid: &str, client: &ClientInfo) {
        if self.0.audited.contains_key(sid) {
            return;
        }
        self.0.audited.insert(sid.to_owned(), ());
        let at = self.0.clock.now();
        if let Err(err) = self
            .0
            .records
            .note(sid, crate::audit::Event::BoundRefused, client, at)
            .await
        {
            tracing::warn!(error = %err, "could not audit a refused device-bound request");
        }
    }

    /// The session configuration a registration answers with (DBSC's session instructions).
    pub fn config(sid: &str) -> Value {
        json!({
            "session_identifier": sid,
            "refresh_url": REFRESH_PATH,
            "scope": { "include_site": false },
            "credentials": [
                { "type": "cookie", "name": BOUND_COOKIE, "attributes": BOUND_ATTRIBUTES }
            ],
        })
    }
}

/// The removal of the bound cookie, as a sign-out sends it.
pub fn removal() -> Cookie<'static> {
    Cookie::build((BOUND_COOKIE, ""))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(time::Duration::ZERO)
        .build()
}

/// The `Secure-Session-Challenge` header for `challenge` of sign-in `sid`.
pub fn challenge_header(challenge: &str, sid: &str) -> Option<HeaderValue> {
    let mut value = String::new();
    RefListSerializer::new(&mut value)
        .bare_item(&RefBareItem::String(challenge))
        .and_then(|p| p.parameter("id", &RefBareItem::String(sid)))
        .ok()?;
    HeaderValue::from_str(&value).ok()
}

fn structured(err: impl std::fmt::Display) -> AppError {
    AppError::Unexpected(anyhow::anyhow!("a structured header: {err}"))
}

/// A header value a browser may send bare or as a structured-field string (RFC 9651).
pub fn unquoted(value: &str) -> String {
    match sfv::Parser::parse_item(value.trim().as_bytes()) {
        Ok(sfv::Item {
            bare_item: sfv::BareItem::String(inner),
            ..
        }) => inner,
        _ => value.trim().to_owned(),
    }
}

/// Every value of cookie `name` in the request.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (n, value) = pair.trim().split_once('=')?;
            (n == name).then_some(value)
        })
}

/// A proof checked: a `dbsc+jwt` with an offered algorithm, its signature verified with `key`
/// (a refresh: the bound key) or with its header's own key (a registration). The key and the
/// claims.
fn verified(proof: &str, key: Option<Jwk>) -> std::result::Result<(Jwk, Value), Refused> {
    let proof = unquoted(proof);
    let proof = proof.as_str();
    let header = jsonwebtoken::decode_header(proof).map_err(|_| Refused::Malformed)?;
    if header.typ.as_deref() != Some("dbsc+jwt") || !ALGORITHMS.contains(&header.alg) {
        return Err(Refused::Malformed);
    }
    let key = match key {
        Some(bound) => bound,
        None => header.jwk.ok_or(Refused::Malformed)?,
    };
    let decoding = DecodingKey::from_jwk(&key).map_err(|_| Refused::Malformed)?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(proof, &decoding, &validation)
        .map_err(|_| Refused::WrongKey)?
        .claims;
    Ok((key, claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_values_are_read_quoted_or_bare() {
        assert_eq!(unquoted("\"abc\""), "abc");
        assert_eq!(unquoted(" abc.def-ghi "), "abc.def-ghi");
        assert_eq!(challenge_header("c1", "s1").unwrap(), "\"c1\";id=\"s1\"");
    }

    #[test]
    fn a_proof_that_is_not_a_dbsc_jwt_is_malformed() {
        assert_eq!(verified("nonsense", None).unwrap_err(), Refused::Malformed);
    }
}
