//! Rate limits on sign-in, sign-up and refresh: `LECTERN_RATE_LIMIT` attempts a minute per IP, and a
//! fifth of that in failed sign-ins a minute per account. Counters live in the revocation store,
//! so several instances share them. `0` turns limits off.

use sha2::{Digest, Sha256};

use crate::{AppState, error::AppError, error::Result, users::Email, web::ClientInfo};

/// Counts one attempt of `action` from this client's IP; refuses past the limit.
pub async fn per_ip(state: &AppState, action: &str, client: &ClientInfo) -> Result<()> {
    let limit = u64::from(state.settings.rate_limit);
    if limit == 0 {
        return Ok(());
    }
    let (count, reset) = state.kv.hit(&format!("{action}:ip:{}", client.ip)).await?;
    if count > limit {
        tracing::warn!(action, ip = %client.ip, "rate limit reached");
        return Err(AppError::RateLimited { retry_after: reset });
    }
    Ok(())
}

fn account_limit(state: &AppState) -> u64 {
    (u64::from(state.settings.rate_limit) / 5).max(1)
}

/// Accounts are keyed by a hash of the email, so Redis holds no addresses.
fn account_bucket(email: &Email) -> String {
    let digest = Sha256::digest(email.as_str().as_bytes());
    let short: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("fail:acct:{short}")
}

/// Refuses a sign-in to an account that has failed too often this minute.
pub async fn account_open(state: &AppState, email: Option<&Email>) -> Result<()> {
    let (Some(email), true) = (email, state.settings.rate_limit > 0) else {
        return Ok(());
    };
    let (count, reset) = state.kv.count(&account_bucket(email)).await?;
    if count >= account_limit(state) {
        tracing::warn!("per-account failed sign-in limit reached");
        return Err(AppError::RateLimited { retry_after: reset });
    }
    Ok(())
}

/// Counts one failed sign-in against the account.
pub async fn account_failed(state: &AppState, email: Option<&Email>) -> Result<()> {
    if let (Some(email), true) = (email, state.settings.rate_limit > 0) {
        state.kv.hit(&account_bucket(email)).await?;
    }
    Ok(())
}
