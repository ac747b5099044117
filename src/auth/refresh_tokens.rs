//! Refresh tokens: opaque random values sent only in the signed `lectern_refresh` cookie. The
//! server keeps only their SHA-256 hash (a database leak reveals no usable token). Each is used
//! once; its successor joins the same family (the sign-in).

use std::fmt;

use axum_extra::extract::cookie::{Cookie, SameSite, SignedCookieJar};

use crate::{
    db::Pool,
    error::Result,
    web::cookies::{REFRESH_COOKIE, REFRESH_PATH},
};

/// A refresh token as sent to the client. Never stored, never logged.
#[derive(Clone)]
pub struct PlainToken(String);

impl PlainToken {
    pub fn generate() -> Self {
        Self(crate::crypto::random_token(32))
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(crate::crypto::sha256_hex(self.0.as_bytes()))
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

/// Stores a new token of family `sid` (in the caller's transaction, or on the pool).
pub async fn insert<'e, E>(executor: E, sid: &str, now: i64) -> Result<PlainToken>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let token = PlainToken::generate();
    sqlx::query(
        "insert into refresh_tokens (token_hash, sign_in_id, issued_at) values ($1, $2, $3)",
    )
    .bind(token.hash().as_str())
    .bind(sid)
    .bind(now)
    .execute(executor)
    .await?;
    Ok(token)
}

/// A presented token, with its family's state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Presented {
    pub sign_in_id: String,
    pub used_at: Option<i64>,
    pub user_id: String,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// The token's row and its sign-in's, if the token exists. Reads only.
pub async fn find(pool: &Pool, token: &PlainToken) -> Result<Option<Presented>> {
    Ok(sqlx::query_as(
        "select r.sign_in_id, r.used_at, s.user_id, s.expires_at, s.revoked_at
         from refresh_tokens r join sign_ins s on s.id = r.sign_in_id
         where r.token_hash = $1",
    )
    .bind(token.hash().as_str())
    .fetch_optional(pool)
    .await?)
}

/// Uses `token` up and issues its successor in one transaction: both happen or neither does.
/// `None`: another request used it first (the caller decides whether that is within grace).
pub async fn rotate(
    pool: &Pool,
    token: &PlainToken,
    sid: &str,
    now: i64,
) -> Result<Option<PlainToken>> {
    let mut tx = pool.begin().await?;
    let used = sqlx::query(
        "update refresh_tokens set used_at = $1 where token_hash = $2 and used_at is null",
    )
    .bind(now)
    .bind(token.hash().as_str())
    .execute(&mut *tx)
    .await?;
    if used.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(None);
    }
    let next = insert(&mut *tx, sid, now).await?;
    tx.commit().await?;
    Ok(Some(next))
}

/// The refresh token from the signed cookie; a missing, forged or truncated cookie reads as none.
pub fn from_jar(jar: &SignedCookieJar) -> Option<PlainToken> {
    jar.get(REFRESH_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
        .map(PlainToken)
}

/// Sets the refresh cookie (signed, HttpOnly, SameSite=Strict, only sent to `/api/v1/auth`).
pub fn set_cookie(
    jar: SignedCookieJar,
    token: &PlainToken,
    max_age_secs: i64,
    secure: bool,
) -> SignedCookieJar {
    let cookie = Cookie::build((REFRESH_COOKIE, token.0.clone()))
        .path(REFRESH_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(time::Duration::seconds(max_age_secs.max(0)));
    jar.add(cookie)
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
        assert!(!hash.as_str().contains(&token.0));
        assert_ne!(hash, PlainToken::generate().hash());
    }

    #[test]
    fn tokens_do_not_show_in_debug_output() {
        let token = PlainToken::generate();
        assert!(!format!("{token:?}").contains(&token.0));
    }
}
