//! The production shape's stores, in Redis (or a Redis Cluster), through the same fred pool as
//! the session store. Every key has a TTL; values that carry a deadline are also checked against
//! the application's clock, so Redis's own expiry is only the garbage collector.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use tower_sessions_redis_store::fred::{
    interfaces::{ClientLike, KeysInterface, SetsInterface, SortedSetsInterface},
    prelude::{Builder, Config, Pool},
    types::{Expiration, ExpireOptions, SetOptions, config::ReconnectPolicy},
};

use super::{Ended, RateCounters, SignInStore, Standing, WINDOW_SECS, keys::RedisKeys};
use crate::{
    clock::Clock,
    error::{AppError, Result},
};

/// Connects a small Redis pool (on 2 cores, 1-4 connections are fastest). Commands time out
/// after two seconds so a lost Redis fails requests closed instead of hanging them. A
/// `redis-cluster://host:port?node=host:port` URL connects to a cluster.
pub async fn connect(url: &str) -> anyhow::Result<Pool> {
    let config = Config::from_url(url).context("REDIS_URL is not a valid Redis URL")?;
    let pool = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
        })
        .with_performance_config(|c| c.default_command_timeout = Duration::from_secs(2))
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build_pool(2)
        .context("building the Redis pool")?;
    tokio::time::timeout(Duration::from_secs(5), pool.init())
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map(drop).map_err(anyhow::Error::from))
        .with_context(|| format!("cannot reach Redis at {}", crate::db::redact(url)))?;
    Ok(pool)
}

/// Both stores of the production shape.
pub struct RedisStore {
    pool: Pool,
    keys: RedisKeys,
    clock: Clock,
}

fn unavailable(err: impl Into<anyhow::Error>) -> AppError {
    AppError::unavailable(err.into().context("Redis"))
}

impl RedisStore {
    pub fn new(pool: Pool, prefix: &str, clock: Clock) -> Self {
        Self {
            pool,
            keys: RedisKeys::new(prefix),
            clock,
        }
    }

    /// A stored standing, if it is live now on the application's clock.
    fn live(&self, value: Option<String>) -> Option<Standing> {
        let now = self.clock.now();
        value
            .as_deref()
            .and_then(Standing::decode)
            .filter(|s| s.live_at(now))
    }

    /// `SADD` with an expiry that only ever grows (a later sign-in may outlive an earlier one).
    async fn add_until(&self, key: String, member: &str, until: i64) -> Result<()> {
        let pipe = self.pool.next().pipeline();
        pipe.sadd::<(), _, _>(&key, member)
            .await
            .map_err(unavailable)?;
        pipe.expire_at::<(), _>(&key, until, Some(ExpireOptions::NX))
            .await
            .map_err(unavailable)?;
        pipe.expire_at::<(), _>(&key, until, Some(ExpireOptions::GT))
            .await
            .map_err(unavailable)?;
        pipe.all::<()>().await.map_err(unavailable)
    }
}

#[async_trait]
impl SignInStore for RedisStore {
    async fn ping(&self) -> Result<()> {
        self.pool.ping::<()>(None).await.map_err(unavailable)
    }

    async fn mark_live(&self, sid: &str, standing: &Standing) -> Result<()> {
        self.pool
            .set::<(), _, _>(
                self.keys.live(sid),
                standing.encode(),
                Some(Expiration::EXAT(standing.deadline())),
                None,
                false,
            )
            .await
            .map_err(unavailable)
    }

    async fn touch(&self, sid: &str, idle_until: i64) -> Result<bool> {
        let key = self.keys.live(sid);
        let current: Option<String> = self.pool.get(&key).await.map_err(unavailable)?;
        let Some(mut standing) = self.live(current) else {
            return Ok(false);
        };
        standing.idle_until = Some(idle_until);
        // XX: a sign-in ended between the read and this write stays ended.
        self.pool
            .set::<(), _, _>(
                key,
                standing.encode(),
                Some(Expiration::EXAT(standing.deadline())),
                Some(SetOptions::XX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    async fn standing(&self, sid: &str) -> Result<Option<Standing>> {
        let value: Option<String> = self
            .pool
            .get(self.keys.live(sid))
            .await
            .map_err(unavailable)?;
        Ok(self.live(value))
    }

    async fn standings(&self, sids: &[String]) -> Result<Vec<Option<Standing>>> {
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        // One GET each in one pipeline: the keys live in different slots of a cluster.
        let pipe = self.pool.next().pipeline();
        for sid in sids {
            pipe.get::<(), _>(self.keys.live(sid))
                .await
                .map_err(unavailable)?;
        }
        let values: Vec<Option<String>> = pipe.all().await.map_err(unavailable)?;
        Ok(values.into_iter().map(|v| self.live(v)).collect())
    }

    async fn record_access_token(&self, sid: &str, jti: &str, accepted_until: i64) -> Result<()> {
        let key = self.keys.jtis(sid);
        let pipe = self.pool.next().pipeline();
        pipe.zadd::<(), _, _>(&key, None, None, false, false, (accepted_until as f64, jti))
            .await
            .map_err(unavailable)?;
        // Tokens are issued in time order, so the newest one's moment is the set's lifetime.
        pipe.expire_at::<(), _>(&key, accepted_until, None)
            .await
            .map_err(unavailable)?;
        pipe.all::<()>().await.map_err(unavailable)
    }

    async fn access_allowed(&self, sid: &str, jti: &str) -> Result<bool> {
        let pipe = self.pool.next().pipeline();
        pipe.get::<(), _>(self.keys.live(sid))
            .await
            .map_err(unavailable)?;
        pipe.exists::<(), _>(self.keys.revoked(sid, jti))
            .await
            .map_err(unavailable)?;
        let (live, revoked): (Option<String>, i64) = pipe.all().await.map_err(unavailable)?;
        Ok(self.live(live).is_some() && revoked == 0)
    }

    async fn revocation_ttl(&self, sid: &str, jti: &str) -> Result<Option<i64>> {
        let ttl: i64 = self
            .pool
            .ttl(self.keys.revoked(sid, jti))
            .await
            .map_err(unavailable)?;
        Ok((ttl >= 0).then_some(ttl))
    }

    async fn bind_session(&self, sid: &str, session_id: &str, until: i64) -> Result<()> {
        self.add_until(self.keys.sessions(sid), session_id, until)
            .await?;
        self.add_until(self.keys.session_sign_ins(session_id), sid, until)
            .await
    }

    async fn sign_ins_of_session(&self, session_id: &str) -> Result<Vec<String>> {
        self.pool
            .smembers(self.keys.session_sign_ins(session_id))
            .await
            .map_err(unavailable)
    }

    async fn end(&self, sid: &str) -> Result<Ended> {
        let now = self.clock.now();
        let read = self.pool.next().pipeline();
        read.zrangebyscore::<(), _, _, _>(self.keys.jtis(sid), now + 1, "+inf", true, None)
            .await
            .map_err(unavailable)?;
        read.smembers::<(), _>(self.keys.sessions(sid))
            .await
            .map_err(unavailable)?;
        let (issued, sessions): (Vec<(String, f64)>, Vec<String>) =
            read.all().await.map_err(unavailable)?;
        let write = self.pool.next().pipeline();
        for (jti, until) in &issued {
            write
                .set::<(), _, _>(
                    self.keys.revoked(sid, jti),
                    1,
                    Some(Expiration::EXAT(*until as i64)),
                    None,
                    false,
                )
                .await
                .map_err(unavailable)?;
        }
        write
            .del::<(), _>(vec![
                self.keys.live(sid),
                self.keys.jtis(sid),
                self.keys.sessions(sid),
            ])
            .await
            .map_err(unavailable)?;
        write.all::<()>().await.map_err(unavailable)?;
        Ok(Ended {
            access_tokens: issued.len(),
            sessions,
        })
    }

    async fn note_session_ended(&self, session_id: &str, reason: &str, until: i64) -> Result<()> {
        self.pool
            .set::<(), _, _>(
                self.keys.session_ended(session_id),
                reason,
                Some(Expiration::EXAT(until)),
                None,
                false,
            )
            .await
            .map_err(unavailable)
    }

    async fn session_end_note(&self, session_id: &str) -> Result<Option<String>> {
        self.pool
            .get(self.keys.session_ended(session_id))
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl RateCounters for RedisStore {
    async fn hit(&self, bucket: &str, window: i64) -> Result<u64> {
        let key = self.keys.counter(bucket, window);
        let pipe = self.pool.next().pipeline();
        pipe.incr::<(), _>(&key).await.map_err(unavailable)?;
        pipe.expire::<(), _>(&key, WINDOW_SECS + 1, Some(ExpireOptions::NX))
            .await
            .map_err(unavailable)?;
        let (count, _): (u64, i64) = pipe.all().await.map_err(unavailable)?;
        Ok(count)
    }

    async fn undo(&self, bucket: &str, window: i64) -> Result<()> {
        let key = self.keys.counter(bucket, window);
        self.pool.decr::<(), _>(key).await.map_err(unavailable)
    }
}
