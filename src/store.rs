//! Where sessions, revocations and rate-limit counters live: Redis in production, process memory in
//! the embedded shape. Chosen once at start-up; handlers never know which one runs.
//!
//! Redis keys (every one with a TTL; `{sid}` is a hash tag so one sign-in's keys share a slot):
//! - `lectern:{<sid>}:live`: the sign-in is live (value: user id); expires with the sign-in.
//! - `lectern:{<sid>}:jtis`: sorted set of the access-token ids issued under it, scored by `exp`.
//! - `lectern:{<sid>}:revoked:<jti>`: a revoked access token; expires at the token's own `exp`.
//! - `lectern:{<sid>}:session`: the id of the browser session this sign-in runs in, if any.
//! - `lectern:{session:<id>}:ended`: why the system ended that browser session (for the login page).
//! - `lectern:{rl:<bucket>}:<window>`: a rate-limit counter for one minute.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use async_trait::async_trait;
use tower_sessions::{
    MemoryStore, SessionStore,
    session::{Id, Record},
    session_store,
};
use tower_sessions_redis_store::{
    RedisStore,
    fred::{
        interfaces::{ClientLike, KeysInterface, SortedSetsInterface},
        prelude::{Builder, Config, Pool},
        types::{Expiration, ExpireOptions, config::ReconnectPolicy},
    },
};

use crate::error::{AppError, Result};

/// Connects a small Redis pool (on 2 cores, 1-4 connections are fastest). Commands time out
/// after two seconds so a lost Redis fails requests closed instead of hanging them.
pub async fn connect_redis(url: &str) -> anyhow::Result<Pool> {
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

/// The tower-sessions store: one type whichever backend was chosen.
#[derive(Debug, Clone)]
pub enum SessionBackend {
    Memory(MemoryStore),
    Redis(RedisStore<Pool>),
}

#[async_trait]
impl SessionStore for SessionBackend {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            Self::Memory(s) => s.create(record).await,
            Self::Redis(s) => s.create(record).await,
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            Self::Memory(s) => s.save(record).await,
            Self::Redis(s) => s.save(record).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            Self::Memory(s) => s.load(id).await,
            Self::Redis(s) => s.load(id).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            Self::Memory(s) => s.delete(id).await,
            Self::Redis(s) => s.delete(id).await,
        }
    }
}

/// The revocation and rate-limit store.
#[derive(Clone)]
pub enum Kv {
    Redis { pool: Pool, prefix: Arc<str> },
    Memory(Arc<MemoryKv>),
}

fn unavailable(err: impl Into<anyhow::Error>) -> AppError {
    AppError::unavailable(err.into().context("Redis"))
}

/// `SET key value EXAT expires_at`: every key Lectern writes expires by itself.
async fn set_until(pool: &Pool, key: String, value: &str, expires_at: i64) -> Result<()> {
    pool.set::<(), _, _>(key, value, Some(Expiration::EXAT(expires_at)), None, false)
        .await
        .map_err(unavailable)
}

impl Kv {
    pub fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    pub fn redis(pool: Pool, prefix: &str) -> Self {
        Self::Redis {
            pool,
            prefix: prefix.into(),
        }
    }

    pub fn is_redis(&self) -> bool {
        matches!(self, Self::Redis { .. })
    }

    fn key(prefix: &str, sid: &str, suffix: &str) -> String {
        format!("{prefix}{{{sid}}}:{suffix}")
    }

    /// Readiness: one round trip.
    pub async fn ping(&self) -> Result<()> {
        match self {
            Self::Redis { pool, .. } => pool.ping::<()>(None).await.map_err(unavailable),
            Self::Memory(_) => Ok(()),
        }
    }

    /// Marks a sign-in live until `expires_at` (unix seconds).
    pub async fn mark_live(&self, sid: &str, user_id: &str, expires_at: i64) -> Result<()> {
        match self {
            Self::Redis { pool, prefix } => {
                set_until(pool, Self::key(prefix, sid, "live"), user_id, expires_at).await
            }
            Self::Memory(m) => {
                m.with(|s| {
                    s.live.insert(sid.to_owned(), expires_at);
                });
                Ok(())
            }
        }
    }

    /// Whether a sign-in is still live (not revoked, not past its absolute expiry).
    pub async fn is_live(&self, sid: &str) -> Result<bool> {
        match self {
            Self::Redis { pool, prefix } => pool
                .exists::<i64, _>(Self::key(prefix, sid, "live"))
                .await
                .map(|n| n == 1)
                .map_err(unavailable),
            Self::Memory(m) => Ok(m.with(|s| s.live_at(sid, crate::web::now()))),
        }
    }

    /// Records an access token issued under a sign-in, so logout can revoke it unseen.
    pub async fn record_jti(&self, sid: &str, jti: &str, exp: i64) -> Result<()> {
        match self {
            Self::Redis { pool, prefix } => {
                let key = Self::key(prefix, sid, "jtis");
                let pipe = pool.next().pipeline();
                pipe.zadd::<(), _, _>(&key, None, None, false, false, (exp as f64, jti))
                    .await
                    .map_err(unavailable)?;
                // Tokens are issued in time order, so the newest `exp` is the set's lifetime.
                pipe.expire_at::<(), _>(&key, exp, None)
                    .await
                    .map_err(unavailable)?;
                pipe.all::<()>().await.map_err(unavailable)
            }
            Self::Memory(m) => {
                m.with(|s| {
                    s.jtis
                        .entry(sid.to_owned())
                        .or_default()
                        .push((jti.to_owned(), exp))
                });
                Ok(())
            }
        }
    }

    /// The bearer check: the sign-in is live and this token is not revoked. One round trip.
    pub async fn access_allowed(&self, sid: &str, jti: &str) -> Result<bool> {
        match self {
            Self::Redis { pool, prefix } => {
                let pipe = pool.next().pipeline();
                pipe.exists::<(), _>(Self::key(prefix, sid, "live"))
                    .await
                    .map_err(unavailable)?;
                pipe.exists::<(), _>(Self::key(prefix, sid, &format!("revoked:{jti}")))
                    .await
                    .map_err(unavailable)?;
                let (live, revoked): (i64, i64) = pipe.all().await.map_err(unavailable)?;
                Ok(live == 1 && revoked == 0)
            }
            Self::Memory(m) => {
                let now = crate::web::now();
                Ok(m.with(|s| s.live_at(sid, now) && !s.revoked_at(sid, jti, now)))
            }
        }
    }

    /// Whether one access token is on the revocation list (for operators and tests).
    pub async fn is_revoked(&self, sid: &str, jti: &str) -> Result<bool> {
        match self {
            Self::Redis { pool, prefix } => pool
                .exists::<i64, _>(Self::key(prefix, sid, &format!("revoked:{jti}")))
                .await
                .map(|n| n == 1)
                .map_err(unavailable),
            Self::Memory(m) => Ok(m.with(|s| s.revoked_at(sid, jti, crate::web::now()))),
        }
    }

    /// Seconds until a revoked token's entry disappears by itself (`None`: not revoked).
    pub async fn revocation_ttl(&self, sid: &str, jti: &str) -> Result<Option<i64>> {
        match self {
            Self::Redis { pool, prefix } => pool
                .ttl::<i64, _>(Self::key(prefix, sid, &format!("revoked:{jti}")))
                .await
                .map(|t| (t >= 0).then_some(t))
                .map_err(unavailable),
            Self::Memory(m) => {
                let now = crate::web::now();
                Ok(m.with(|s| {
                    s.revoked
                        .get(&(sid.to_owned(), jti.to_owned()))
                        .filter(|exp| **exp > now)
                        .map(|exp| exp - now)
                }))
            }
        }
    }

    /// Records which browser session a sign-in runs in, so ending the sign-in can delete it.
    pub async fn bind_session(&self, sid: &str, session_id: &str, expires_at: i64) -> Result<()> {
        match self {
            Self::Redis { pool, prefix } => {
                set_until(
                    pool,
                    Self::key(prefix, sid, "session"),
                    session_id,
                    expires_at,
                )
                .await
            }
            Self::Memory(m) => {
                m.with(|s| {
                    s.sessions
                        .insert(sid.to_owned(), (session_id.to_owned(), expires_at))
                });
                Ok(())
            }
        }
    }

    /// Remembers, for as long as the browser may still send its cookie, why a session was ended.
    pub async fn mark_session_ended(
        &self,
        session_id: &str,
        reason: &str,
        ttl_secs: i64,
    ) -> Result<()> {
        match self {
            Self::Redis { pool, prefix } => pool
                .set::<(), _, _>(
                    format!("{prefix}{{session:{session_id}}}:ended"),
                    reason,
                    Some(Expiration::EX(ttl_secs.max(1))),
                    None,
                    false,
                )
                .await
                .map_err(unavailable),
            Self::Memory(m) => {
                let until = crate::web::now() + ttl_secs;
                m.with(|s| {
                    s.ended
                        .insert(session_id.to_owned(), (reason.to_owned(), until))
                });
                Ok(())
            }
        }
    }

    /// Why the system ended this browser session, if it did.
    pub async fn session_end_reason(&self, session_id: &str) -> Result<Option<String>> {
        match self {
            Self::Redis { pool, prefix } => pool
                .get(format!("{prefix}{{session:{session_id}}}:ended"))
                .await
                .map_err(unavailable),
            Self::Memory(m) => {
                let now = crate::web::now();
                Ok(m.with(|s| {
                    s.ended
                        .get(session_id)
                        .filter(|(_, until)| *until > now)
                        .map(|(reason, _)| reason.clone())
                }))
            }
        }
    }

    /// Ends a sign-in: every unexpired access token issued under it goes on the revocation list
    /// until its own `exp`, and the sign-in stops being live. Revoking twice is harmless.
    pub async fn revoke_sign_in(&self, sid: &str) -> Result<Revoked> {
        let now = crate::web::now();
        match self {
            Self::Redis { pool, prefix } => {
                let read = pool.next().pipeline();
                read.zrangebyscore::<(), _, _, _>(
                    Self::key(prefix, sid, "jtis"),
                    now + 1,
                    "+inf",
                    true,
                    None,
                )
                .await
                .map_err(unavailable)?;
                read.get::<(), _>(Self::key(prefix, sid, "session"))
                    .await
                    .map_err(unavailable)?;
                let (issued, session): (Vec<(String, f64)>, Option<String>) =
                    read.all().await.map_err(unavailable)?;
                let pipe = pool.next().pipeline();
                for (jti, exp) in &issued {
                    pipe.set::<(), _, _>(
                        Self::key(prefix, sid, &format!("revoked:{jti}")),
                        1,
                        Some(Expiration::EXAT(*exp as i64)),
                        None,
                        false,
                    )
                    .await
                    .map_err(unavailable)?;
                }
                pipe.del::<(), _>(vec![
                    Self::key(prefix, sid, "live"),
                    Self::key(prefix, sid, "session"),
                ])
                .await
                .map_err(unavailable)?;
                pipe.all::<()>().await.map_err(unavailable)?;
                Ok(Revoked {
                    access_tokens: issued.len(),
                    session,
                })
            }
            Self::Memory(m) => Ok(m.with(|s| s.revoke(sid, now))),
        }
    }

    /// The current one-minute window's start and the seconds until it ends.
    fn window() -> (i64, u64) {
        let now = crate::web::now();
        let window = now - now.rem_euclid(60);
        (window, u64::try_from(window + 60 - now).unwrap_or(60))
    }

    /// The attempts counted so far in this window of `bucket`, and the seconds until it ends.
    pub async fn count(&self, bucket: &str) -> Result<(u64, u64)> {
        let (window, reset) = Self::window();
        match self {
            Self::Redis { pool, prefix } => {
                let key = format!("{prefix}{{rl:{bucket}}}:{window}");
                let count: Option<u64> = pool.get(&key).await.map_err(unavailable)?;
                Ok((count.unwrap_or(0), reset))
            }
            Self::Memory(m) => Ok((
                m.with(|s| {
                    s.counters
                        .get(bucket)
                        .filter(|(w, _)| *w == window)
                        .map_or(0, |(_, c)| *c)
                }),
                reset,
            )),
        }
    }

    /// Counts one attempt in the current one-minute window of `bucket`; returns the count and the
    /// seconds until the window ends.
    pub async fn hit(&self, bucket: &str) -> Result<(u64, u64)> {
        let (window, reset) = Self::window();
        match self {
            Self::Redis { pool, prefix } => {
                let key = format!("{prefix}{{rl:{bucket}}}:{window}");
                let pipe = pool.next().pipeline();
                pipe.incr::<(), _>(&key).await.map_err(unavailable)?;
                pipe.expire::<(), _>(&key, 61, Some(ExpireOptions::NX))
                    .await
                    .map_err(unavailable)?;
                let (count, _): (u64, i64) = pipe.all().await.map_err(unavailable)?;
                Ok((count, reset))
            }
            Self::Memory(m) => Ok((m.with(|s| s.hit(bucket, window)), reset)),
        }
    }
}

/// What ending a sign-in revoked.
#[derive(Debug, Default)]
pub struct Revoked {
    /// Access tokens put on the revocation list.
    pub access_tokens: usize,
    /// The browser session the sign-in ran in, for the caller to delete.
    pub session: Option<String>,
}

/// The embedded shape's store. Every entry carries its expiry and expired entries are swept, so
/// memory stays bounded by what is live.
#[derive(Default)]
pub struct MemoryKv {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    /// sid -> expires_at
    live: HashMap<String, i64>,
    /// browser session id -> (why it was ended, until)
    ended: HashMap<String, (String, i64)>,
    /// sid -> (browser session id, expires_at)
    sessions: HashMap<String, (String, i64)>,
    /// sid -> issued (jti, exp)
    jtis: HashMap<String, Vec<(String, i64)>>,
    /// (sid, jti) -> exp
    revoked: HashMap<(String, String), i64>,
    /// bucket -> (window, count)
    counters: HashMap<String, (i64, u64)>,
    writes: u64,
}

impl MemoryKv {
    fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> T {
        // A poisoned lock only means another request panicked mid-update; the maps stay usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.writes += 1;
        if state.writes.is_multiple_of(512) {
            state.sweep(crate::web::now());
        }
        f(&mut state)
    }

    /// Number of entries held, for the boundedness test.
    pub fn len(&self) -> usize {
        self.with(|s| {
            s.sweep(crate::web::now());
            s.live.len()
                + s.sessions.len()
                + s.ended.len()
                + s.jtis.len()
                + s.revoked.len()
                + s.counters.len()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MemoryState {
    fn live_at(&self, sid: &str, now: i64) -> bool {
        self.live.get(sid).is_some_and(|exp| *exp > now)
    }

    fn revoked_at(&self, sid: &str, jti: &str, now: i64) -> bool {
        self.revoked
            .get(&(sid.to_owned(), jti.to_owned()))
            .is_some_and(|exp| *exp > now)
    }

    fn revoke(&mut self, sid: &str, now: i64) -> Revoked {
        self.live.remove(sid);
        let session = self
            .sessions
            .remove(sid)
            .filter(|(_, exp)| *exp > now)
            .map(|(id, _)| id);
        let issued = self.jtis.remove(sid).unwrap_or_default();
        let mut access_tokens = 0;
        for (jti, exp) in issued.into_iter().filter(|(_, exp)| *exp > now) {
            self.revoked.insert((sid.to_owned(), jti), exp);
            access_tokens += 1;
        }
        Revoked {
            access_tokens,
            session,
        }
    }

    fn hit(&mut self, bucket: &str, window: i64) -> u64 {
        let entry = self
            .counters
            .entry(bucket.to_owned())
            .or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 += 1;
        entry.1
    }

    fn sweep(&mut self, now: i64) {
        self.live.retain(|_, exp| *exp > now);
        self.sessions.retain(|_, (_, exp)| *exp > now);
        self.ended.retain(|_, (_, until)| *until > now);
        self.revoked.retain(|_, exp| *exp > now);
        self.jtis.retain(|_, issued| {
            issued.retain(|(_, exp)| *exp > now);
            !issued.is_empty()
        });
        self.counters.retain(|_, (window, _)| *window + 60 > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revocation_entry_lives_as_long_as_the_token() {
        let kv = Kv::memory();
        let exp = crate::web::now() + 120;
        kv.mark_live("s1", "u1", exp + 1000).await.unwrap();
        kv.record_jti("s1", "j1", exp).await.unwrap();
        assert!(kv.access_allowed("s1", "j1").await.unwrap());
        kv.bind_session("s1", "browser-session", exp + 1000)
            .await
            .unwrap();
        let revoked = kv.revoke_sign_in("s1").await.unwrap();
        assert_eq!(revoked.access_tokens, 1);
        assert_eq!(revoked.session.as_deref(), Some("browser-session"));
        let ttl = kv.revocation_ttl("s1", "j1").await.unwrap().unwrap();
        assert!(
            (119..=120).contains(&ttl),
            "ttl {ttl} should equal the token's remaining life"
        );
        assert!(!kv.access_allowed("s1", "j1").await.unwrap());
    }

    #[tokio::test]
    async fn revoking_twice_is_harmless() {
        let kv = Kv::memory();
        let exp = crate::web::now() + 60;
        kv.mark_live("s1", "u1", exp).await.unwrap();
        kv.record_jti("s1", "j1", exp).await.unwrap();
        assert_eq!(kv.revoke_sign_in("s1").await.unwrap().access_tokens, 1);
        assert_eq!(kv.revoke_sign_in("s1").await.unwrap().access_tokens, 0);
        assert!(kv.is_revoked("s1", "j1").await.unwrap());
        assert!(!kv.is_live("s1").await.unwrap());
    }

    #[tokio::test]
    async fn expired_entries_are_swept() {
        let kv = MemoryKv::default();
        let past = crate::web::now() - 1;
        kv.with(|s| {
            s.live.insert("old".into(), past);
            s.revoked.insert(("old".into(), "j".into()), past);
            s.jtis.insert("old".into(), vec![("j".into(), past)]);
        });
        assert!(kv.is_empty());
    }

    #[tokio::test]
    async fn rate_counter_counts_within_a_window() {
        let kv = Kv::memory();
        assert_eq!(kv.hit("ip:1").await.unwrap().0, 1);
        assert_eq!(kv.hit("ip:1").await.unwrap().0, 2);
        assert_eq!(kv.hit("ip:2").await.unwrap().0, 1);
    }
}
