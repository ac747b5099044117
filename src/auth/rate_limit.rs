//! Rate limits on sign-in, sign-up and refresh: `LECTERN_RATE_LIMIT` attempts a minute per
//! address, and a fifth of that in sign-in attempts a minute per account *from one address*.
//! Counters are taken atomically before the password is checked, so parallel attempts cannot
//! exceed a limit, and a successful sign-in takes its attempt back. Keyed by account and address,
//! the account limit slows an attacker at one address and never refuses the owner's correct
//! password from another. Counters live in the shared store, so every instance counts together;
//! this is Lectern's own code because the limits must be shared across instances (in Redis).
//!
//! A client is its IPv4 address (an IPv4-mapped IPv6 address counts as the IPv4 one), or the
//! network of its IPv6 address (a /64 by default, `LECTERN_RATE_LIMIT_IPV6_PREFIX`): one host
//! controls a whole /64, and would otherwise get a fresh budget per address.

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

use crate::{
    accounts::Email,
    clock::Clock,
    error::{AppError, Result},
    store::{RateCounters, WINDOW_SECS},
    web::ClientInfo,
};

#[derive(Clone)]
pub struct RateLimits {
    counters: Arc<dyn RateCounters>,
    clock: Clock,
    /// Attempts a minute per address; 0 turns every limit off.
    limit: u32,
    /// The prefix length an IPv6 client is counted by.
    ipv6_prefix: u8,
}

/// What a limit counts as one client: an IPv4 address (IPv4-mapped IPv6 addresses included), the
/// `prefix`-bit network of an IPv6 one, or the text as it is when it is no address at all.
pub fn client_key(ip: &str, prefix: u8) -> String {
    match ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => {
            let bits = u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            format!("{}/{bits}", Ipv6Addr::from(u128::from(v6) & mask))
        }
        Err(_) => ip.to_owned(),
    }
}

/// A sign-in attempt counted against an account at one address.
#[must_use = "a successful sign-in takes its attempt back"]
pub struct Attempt {
    counted: Option<(String, i64)>,
    counters: Arc<dyn RateCounters>,
}

impl Attempt {
    /// The password was right: the attempt does not count as a failure.
    pub async fn succeeded(self) -> Result<()> {
        match &self.counted {
            Some((bucket, window)) => self.counters.undo(bucket, *window).await,
            None => Ok(()),
        }
    }
}

impl RateLimits {
    pub fn new(counters: Arc<dyn RateCounters>, clock: Clock, limit: u32, ipv6_prefix: u8) -> Self {
        Self {
            counters,
            clock,
            limit,
            ipv6_prefix,
        }
    }

    fn client(&self, client: &ClientInfo) -> String {
        client_key(&client.ip, self.ipv6_prefix)
    }

    /// The current window's start and the seconds until it ends.
    fn window(&self) -> (i64, u64) {
        let now = self.clock.now();
        let start = now - now.rem_euclid(WINDOW_SECS);
        (
            start,
            u64::try_from(start + WINDOW_SECS - now).unwrap_or(60),
        )
    }

    async fn take(&self, label: &'static str, bucket: &str, limit: u64) -> Result<(String, i64)> {
        let (window, retry_after) = self.window();
        let count = self.counters.hit(bucket, window).await?;
        if count > limit {
            crate::telemetry::rate_limited(label);
            return Err(AppError::RateLimited { retry_after });
        }
        Ok((bucket.to_owned(), window))
    }

    /// Counts one attempt of `action` from this client's address; refuses past the limit.
    pub async fn per_ip(&self, action: &str, client: &ClientInfo) -> Result<()> {
        if self.limit == 0 {
            return Ok(());
        }
        self.take(
            "ip",
            &format!("{action}:ip:{}", self.client(client)),
            u64::from(self.limit),
        )
        .await
        .inspect_err(|_| tracing::warn!(action, ip = %client.ip, "rate limit reached"))
        .map(drop)
    }

    /// Counts one sign-in attempt against `email` from this client's address, before the
    /// password is checked; refuses past a fifth of the limit. Accounts are keyed by a hash of
    /// the email, so the store holds no addresses.
    pub async fn sign_in_attempt(
        &self,
        email: Option<&Email>,
        client: &ClientInfo,
    ) -> Result<Attempt> {
        let counters = self.counters.clone();
        let (Some(email), true) = (email, self.limit > 0) else {
            return Ok(Attempt {
                counted: None,
                counters,
            });
        };
        let account = &crate::crypto::sha256_hex(email.as_str().as_bytes())[..24];
        let bucket = format!("signin:acct:{account}:ip:{}", self.client(client));
        let limit = u64::from(self.limit / 5).max(1);
        let counted = self.take("account", &bucket, limit).await.inspect_err(
            |_| tracing::warn!(ip = %client.ip, "per-account sign-in limit reached"),
        )?;
        Ok(Attempt {
            counted: Some(counted),
            counters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_network_and_a_mapped_ipv4_one_its_ipv4_address() {
        assert_eq!(client_key("203.0.113.7", 64), "203.0.113.7");
        assert_eq!(client_key("::ffff:203.0.113.7", 64), "203.0.113.7");
        assert_eq!(
            client_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            client_key("2001:db8:1:2:ffff::1", 64),
            client_key("2001:db8:1:2::9", 64)
        );
        assert_ne!(
            client_key("2001:db8:1:3::1", 64),
            client_key("2001:db8:1:2::1", 64)
        );
        assert_eq!(client_key("2001:db8:1:2ff::1", 56), "2001:db8:1:200::/56");
        assert_eq!(client_key("2001:db8::1", 128), "2001:db8::1/128");
        assert_eq!(client_key("unknown", 64), "unknown");
    }
}
