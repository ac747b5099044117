//! Refresh tokens: opaque random values sent only in the signed `lectern_refresh` cookie. The server
//! keeps only their SHA-256 hash, so a database leak reveals no usable token. Each token is used
//! once; presenting a used one means it was copied, and the whole family (sign-in) is revoked.

use std::fmt;

use axum_extra::extract::cookie::{Cookie, SameSite, SignedCookieJar};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{REFRESH_COOKIE, REFRESH_PATH};
use crate::{db::Pool, error::Result};

/// A refresh token as sent to the client. Never stored, never logged.
#[derive(Clone)]
pub struct PlainToken(String);

impl PlainToken {
    pub fn generate() -> Self {
        Self(super::random_token(32))
    }

    pub fn from_cookie(value: &str) -> Self {
        Self(value.to_owned())
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(hex(&Sha256::digest(self.0.as_bytes())))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainToken([redacted])")
    }
}

/// What the server stores in place of a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores a new token of family `sid` and returns it for the cookie.
pub async fn issue(pool: &Pool, sid: &str, now: i64) -> Result<PlainToken> {
    let token = PlainToken::generate();
    sqlx::query(
        "insert into refresh_tokens (token_hash, sign_in_id, issued_at) values ($1, $2, $3)",
    )
    .bind(token.hash().as_str())
    .bind(sid)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(token)
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Presented {
    /// The token was current and is now used up; `sid`'s sign-in must still be checked.
    Current { sid: String },
    /// The token was already used (or its family revoked): it was copied.
    Reused { sid: String },
    /// No such token.
    Unknown,
}

/// Marks the token used, atomically: of two requests racing with one token, exactly one sees
/// `Current`; the other sees `Reused`.
pub async fn consume(pool: &Pool, token: &PlainToken, now: i64) -> Result<Presented> {
    let hash = token.hash();
    // One round trip on the usual path: the update names the family it used up.
    let current: Option<String> = sqlx::query(
        "update refresh_tokens set used_at = $1 where token_hash = $2 and used_at is null
         returning sign_in_id",
    )
    .bind(now)
    .bind(hash.as_str())
    .fetch_optional(pool)
    .await?
    .map(|row| row.try_get("sign_in_id"))
    .transpose()?;
    if let Some(sid) = current {
        return Ok(Presented::Current { sid });
    }
    Ok(match family_of(pool, token).await? {
        Some(sid) => Presented::Reused { sid },
        None => Presented::Unknown,
    })
}

/// The sign-in a token belongs to, whether or not it is used (for logout).
pub async fn family_of(pool: &Pool, token: &PlainToken) -> Result<Option<String>> {
    Ok(
        sqlx::query("select sign_in_id from refresh_tokens where token_hash = $1")
            .bind(token.hash().as_str())
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("sign_in_id"))
            .transpose()?,
    )
}

/// The refresh token from the signed cookie; a missing, forged or truncated cookie reads as none.
pub fn from_jar(jar: &SignedCookieJar) -> Option<PlainToken> {
    jar.get(REFRESH_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
        .map(|v| PlainToken::from_cookie(&v))
}

/// Sets the refresh cookie (signed, HttpOnly, SameSite=Strict, only sent to `/api/v1/auth`).
pub fn set_cookie(
    jar: SignedCookieJar,
    token: &PlainToken,
    max_age_secs: i64,
    secure: bool,
) -> SignedCookieJar {
    let cookie = Cookie::build((REFRESH_COOKIE, token.expose().to_owned()))
        .path(REFRESH_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(time::Duration::seconds(max_age_secs.max(0)));
    jar.add(cookie)
}

/// The removal cookie for the refresh token: same name and path, empty, `Max-Age=0`.
pub fn removal_cookie(secure: bool) -> Cookie<'static> {
    Cookie::build((REFRESH_COOKIE, ""))
        .path(REFRESH_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(time::Duration::ZERO)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_hash_is_not_the_token_and_is_stable() {
        let token = PlainToken::generate();
        let hash = token.hash();
        assert_eq!(hash, token.hash());
        assert_eq!(hash.as_str().len(), 64);
        assert!(!hash.as_str().contains(token.expose()));
        assert_ne!(hash, PlainToken::generate().hash());
    }

    #[test]
    fn tokens_do_not_show_in_debug_output() {
        let token = PlainToken::generate();
        assert!(!format!("{token:?}").contains(token.expose()));
    }
}
