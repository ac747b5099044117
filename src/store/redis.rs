//! The production shape's stores, in Redis (or a Redis Cluster), through the same fred pool as
//! the session store. Every key has a TTL; values that carry a deadline are also checked against
//! the application's clock, so Redis's own expiry is only the garbage collector.

use std::{sync::LazyLock, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use tower_sessions_redis_store::fred::{
    error::{Error as FredError, ErrorKind},
    interfaces::{
        ClientLike, ClusterInterface, EventInterface, KeysInterface, LuaInterface, ServerInterface,
        SetsInterface, SortedSetsInterface,
    },
    prelude::{Builder, Client, Config, Pool},
    types::{
        Expiration, ExpireOptions, FromValue, Value, cluster::ClusterRouting,
        config::ReconnectPolicy, scripts::Script,
    },
};

use super::{
    ChangeMarks, ClusterHealth, ENDED_KEPT, Ended, LAPSE_KEPT, LiveSignIn, RateCounters,
    SignInStore, WINDOW_SECS, keys::RedisKeys,
};
use crate::{
    clock::Clock,
    error::{AppError, Result},
};

/// Connects a small Redis pool (on 2 cores, 1-4 connections are fastest). Commands time out
/// after two seconds so a lost Redis fails requests closed instead of hanging them. A
/// `redis-cluster://host:port?node=host:port` URL connects to a cluster.
pub async fn connect(url: &str) -> anyhow::Result<Pool> {
    connect_sized(url, 2).await
}

/// As [`connect`], with `size` connections (to each node).
pub async fn connect_sized(url: &str, size: usize) -> anyhow::Result<Pool> {
    let config = Config::from_url(url).context("REDIS_URL is not a valid Redis URL")?;
    let pool = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            // More write attempts than redirections (5): a command that keeps meeting `ASK`
            // while its slot moves then fails with "too many redirections", which the stores
            // retry, instead of "max attempts", which in fred 10 also ends the client's router
            // task and leaves every later command to time out.
            c.max_command_attempts = 8;
        })
        .with_performance_config(|c| c.default_command_timeout = Duration::from_secs(2))
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build_pool(size)
        .context("building the Redis pool")?;
    tokio::time::timeout(Duration::from_secs(5), pool.init())
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map(drop).map_err(anyhow::Error::from))
        .with_context(|| format!("cannot reach Redis at {}", crate::db::redact(url)))?;
    Ok(pool)
}

/// Runs `script` by its hash. A node without it (restarted, newly promoted, flushed) gets the
/// body instead (`EVAL`, which caches it there), so a call never waits on loading it into every
/// master of a cluster.
async fn run_script<R: FromValue>(
    client: &Client,
    script: &Script,
    keys: &[String],
    args: &[Value],
) -> std::result::Result<R, FredError> {
    match client
        .evalsha(script.sha1().clone(), keys.to_vec(), args.to_vec())
        .await
    {
        Err(err) if err.details().starts_with("NOSCRIPT") => {
            let body = script.lua().cloned().unwrap_or_default();
            client.eval(body, keys.to_vec(), args.to_vec()).await
        }
        other => other,
    }
}

/// A bearer token's whole check in one command: the sign-in's liveness value when the token's
/// `jti` is not on its revocation list, else nil. Both keys share the sign-in's hash tag, so a
/// cluster runs it on one node; it is declared read-only (`no-writes`).
static ACCESS_ALLOWED: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "#!lua flags=no-writes\n\
         local live = redis.call('GET', KEYS[1])\n\
         if live and not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return live end\n\
         return false\n",
    )
});

/// Ends a sign-in in one command, atomically, in its own slot (every key carries its `{sid}`).
/// KEYS: its recorded access tokens, its revocation list, its liveness, and the session it named
/// once ended; ARGV: now, and how long that session is remembered.
///
/// The liveness goes first, so a step that fails part-way (a script is not rolled back) leaves
/// the sign-in refused. However many tokens the sign-in was issued, those still acceptable move
/// onto its revocation list inside Redis (when there is no list yet, the recorded set itself
/// becomes it, renamed, so a first end copies no tokens; else a union keeping each token's
/// latest moment), entries already past are dropped, and the list lives until the last of them;
/// then the recorded tokens are deleted. The browser session it named (the fourth field of the
/// liveness value, see `LiveSignIn::encode`) is remembered for a while, and an end that finds
/// none (ended before: nothing left, or only tokens recorded since) names it again, so a repeat
/// (a command replayed after its reply was lost, a sign-out retried) deletes it too. An end that
/// finds nothing at all writes nothing.
/// Returns whether it wrote, how many tokens it revoked, and the session (or an empty string).
static END: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "local now = tonumber(ARGV[1])\n\
         local live = redis.call('GET', KEYS[3])\n\
         local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')\n\
         if not live and #newest == 0 then\n\
           return {0, 0, redis.call('GET', KEYS[4]) or ''}\n\
         end\n\
         redis.call('DEL', KEYS[3], KEYS[5], KEYS[6])\n\
         local open = redis.call('ZCOUNT', KEYS[1], now + 1, '+inf')\n\
         if open > 0 then\n\
           local last = tonumber(newest[2])\n\
           local listed = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')\n\
           if #listed > 0 then\n\
             last = math.max(last, tonumber(listed[2]))\n\
             redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[2], KEYS[1], 'AGGREGATE', 'MAX')\n\
           else\n\
             redis.call('RENAME', KEYS[1], KEYS[2])\n\
           end\n\
           redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n\
           redis.call('EXPIREAT', KEYS[2], last, 'NX')\n\
           redis.call('EXPIREAT', KEYS[2], last, 'GT')\n\
         end\n\
         redis.call('DEL', KEYS[1])\n\
         local named = live and string.match(live, '^[^|]*|[^|]*|[^|]*|([^|]+)|')\n\
         if not named or named == '-' then return {1, open, redis.call('GET', KEYS[4]) or ''} end\n\
         redis.call('SET', KEYS[4], named, 'EX', ARGV[2])\n\
         return {1, open, named}\n",
    )
});

/// Changes one field of a live sign-in's value in one step, unless it is no longer live at `now`
/// (an ended or lapsed sign-in stays so), and keeps it until its new deadline (a shared
/// computer's a little longer, see `LiveSignIn::kept_until`). KEYS: its liveness. ARGV: now, what
/// (`touch`: the idle deadline, ARGV[3] or for a shared computer's ARGV[4]; `heartbeat`: the open
/// deadline of a shared computer's, ARGV[3]; `auth`: when the password was entered, ARGV[3]),
/// and how long a shared computer's is kept past its deadline. Returns the new value, or nil.
static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "local v = redis.call('GET', KEYS[1])\n\
         if not v then return false end\n\
         local f = {}\n\
         for p in string.gmatch(v .. '|', '([^|]*)|') do f[#f + 1] = p end\n\
         if #f ~= 7 then return false end\n\
         local shared = f[5] ~= '-'\n\
         local function deadline()\n\
           local d = math.min(tonumber(f[2]), tonumber(f[3]))\n\
           if shared then d = math.min(d, tonumber(f[5])) end\n\
           return d\n\
         end\n\
         if tonumber(ARGV[1]) >= deadline() then return false end\n\
         if ARGV[2] == 'touch' then\n\
           if shared then f[3] = ARGV[4] else f[3] = ARGV[3] end\n\
         elseif ARGV[2] == 'heartbeat' then\n\
           if not shared then return false end\n\
           f[5] = ARGV[3]\n\
         elseif ARGV[2] == 'bind' then\n\
           f[7] = '1'\n\
         else\n\
           f[6] = ARGV[3]\n\
         end\n\
         local kept = deadline()\n\
         if shared then kept = kept + tonumber(ARGV[5]) end\n\
         local value = table.concat(f, '|')\n\
         redis.call('SET', KEYS[1], value, 'EXAT', kept, 'XX')\n\
         return value\n",
    )
});

/// Attaches a sign-in to a browser session unless that session was ended, in one step.
/// KEYS: the session's tombstone, the sign-ins it holds; ARGV: the sign-in, until when.
/// Returns 1 when attached, 0 when the session was ended.
static HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n\
         redis.call('SADD', KEYS[2], ARGV[1])\n\
         redis.call('EXPIREAT', KEYS[2], ARGV[2], 'NX')\n\
         redis.call('EXPIREAT', KEYS[2], ARGV[2], 'GT')\n\
         return 1\n",
    )
});

/// Ends a browser session in one step: its tombstone (the first reason stands), and the
/// sign-ins it holds at that moment. KEYS: the tombstone, the held set; ARGV: reason, until.
static END_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2], 'NX')\n\
         return redis.call('SMEMBERS', KEYS[2])\n",
    )
});

/// Takes one attempt back from a rate-limit counter that still exists: `DECR` on a missing key
/// would create it without a TTL.
static UNDO: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end\n\
         return 0\n",
    )
});

/// Raises a time kept in a key, never lowering it, and keeps the key for a while longer.
/// KEYS: the key; ARGV: the time, how long to keep it.
static RAISE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "local held = tonumber(redis.call('GET', KEYS[1]) or '0')\n\
         if tonumber(ARGV[1]) > held then\n\
           redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n\
         else\n\
           redis.call('EXPIRE', KEYS[1], ARGV[2])\n\
         end\n\
         return 0\n",
    )
});

/// How long the endings mark outlives the last ending it names: a day without any ending lets
/// it go, and the next look replays what the database still holds (nothing old is live).
const ENDINGS_KEPT: i64 = 86_400;

/// How long a revocation waits for a replica to confirm it has the revocation too.
const REPLICA_WAIT_MS: i64 = 200;

/// Both stores of the production shape.
#[derive(Debug)]
pub struct RedisStore {
    pool: Pool,
    /// Where a revocation is written and its replication awaited: `WAIT` holds up its whole
    /// connection, so it gets connections of its own, and page loads never queue behind it.
    revocations: Pool,
    keys: RedisKeys,
    clock: Clock,
}

fn unavailable(err: impl Into<anyhow::Error>) -> AppError {
    AppError::unavailable(err.into().context("Redis"))
}

impl RedisStore {
    pub fn new(pool: Pool, prefix: &str, clock: Clock) -> Self {
        Self {
            revocations: pool.clone(),
            pool,
            keys: RedisKeys::new(prefix),
            clock,
        }
    }

    /// Writes revocations (and awaits their replication) on `pool` instead of the shared one.
    pub fn with_revocations(mut self, pool: Pool) -> Self {
        self.revocations = pool;
        self
    }

    /// A stored liveness value, if it is live now on the application's clock.
    fn still_live(&self, value: Option<String>) -> Option<LiveSignIn> {
        let now = self.clock.now();
        value
            .as_deref()
            .and_then(LiveSignIn::decode)
            .filter(|s| s.live_at(now))
    }

    /// Runs [`UPDATE`] on a sign-in's liveness: `what` with its values (see there).
    async fn update(
        &self,
        sid: &str,
        what: &str,
        value: i64,
        shared_value: i64,
    ) -> Result<Option<LiveSignIn>> {
        let keys = vec![self.keys.live(sid)];
        let args = [
            Value::from(self.clock.now()),
            Value::from(what),
            Value::from(value),
            Value::from(shared_value),
            Value::from(LAPSE_KEPT),
        ];
        let updated: Option<String> =
            across_slot_moves(|| run_script(self.pool.next(), &UPDATE, &keys, &args)).await?;
        Ok(updated.as_deref().and_then(LiveSignIn::decode))
    }

    /// Lists a shared computer's sign-in among those to end when its open deadline passes, and
    /// keeps the list a while past the latest of them.
    async fn list_closing(&self, sid: &str, open_until: i64) -> Result<()> {
        let key = self.keys.closing();
        let until = open_until + LAPSE_KEPT + ENDED_KEPT;
        across_slot_moves(|| async {
            let pipe = self.pool.next().pipeline();
            pipe.zadd::<(), _, _>(&key, None, None, false, false, (open_until as f64, sid))
                .await?;
            pipe.expire_at::<(), _>(&key, until, Some(ExpireOptions::NX))
                .await?;
            pipe.expire_at::<(), _>(&key, until, Some(ExpireOptions::GT))
                .await?;
            pipe.all::<()>().await
        })
        .await
    }

    /// A browser session's record (stored by tower-sessions-redis-store under the bare id
    /// `record_key`), a sign-in's liveness and the change mark `mark`: one `MGET`, so a page view
    /// learns who is asking and whether that sign-in is live in one round trip. On a cluster the
    /// keys may live on different masters: a pipeline of `GET`s asks each of them at once.
    pub async fn record_with_live(
        &self,
        record_key: &str,
        sid: &str,
        mark: &str,
    ) -> Result<(Option<Vec<u8>>, Option<LiveSignIn>, Option<String>)> {
        let keys = [
            record_key.to_owned(),
            self.keys.live(sid),
            self.keys.mark(mark),
        ];
        let (record, live, mark): (Option<Vec<u8>>, Option<String>, Option<String>) =
            across_slot_moves(|| get_each(self.pool.next(), &keys)).await?;
        Ok((record, self.still_live(live), mark))
    }

    /// On a Redis Cluster whose master for `key` has replicas: waits (up to [`REPLICA_WAIT_MS`])
    /// until one of them has every write `client` sent that master, so a failover, which
    /// promotes the most up-to-date replica, keeps them. Elsewhere it does nothing. This is
    /// best effort: a replica that does not confirm in time is logged and counted
    /// (`lectern_revocations_unconfirmed_total`), and the sign-out stands on the master (failing
    /// it would leave every sign-out failing while a replica is down).
    async fn replicate(client: &Client, key: &str) {
        let Some(routing) = client.cached_cluster_state() else {
            return;
        };
        let Some(master) = routing.get_server(ClusterRouting::hash_key(key.as_bytes())) else {
            return;
        };
        if routing.replicas(master).is_empty() {
            return;
        }
        let confirmed = client
            .with_cluster_node(master.clone())
            .wait::<i64>(1, REPLICA_WAIT_MS)
            .await;
        match confirmed {
            Ok(n) if n >= 1 => {}
            Ok(_) => {
                crate::telemetry::revocation_unconfirmed();
                tracing::warn!(
                    node = %master,
                    "no replica confirmed a revocation in time; it stands on the master only"
                );
            }
            Err(err) => {
                crate::telemetry::revocation_unconfirmed();
                tracing::warn!(
                    node = %master,
                    error = %err,
                    "could not learn whether a replica has a revocation"
                );
            }
        }
    }
}

/// How long a command keeps trying while its slot moves between masters.
pub(super) const SLOT_MOVE_PATIENCE: Duration = Duration::from_secs(2);

/// Runs a Redis step, trying again for up to [`SLOT_MOVE_PATIENCE`] while it fails to route.
/// fred 10 sends a command that meets `ASK` (its slot half-way moved to another master) back to
/// the old master, and gives up with a routing error; once the move is done, `MOVED` routes it
/// right. A command over two keys of one slot may meet `TRYAGAIN` while only one of them has
/// moved, until the move is done. Every step here is safe to repeat. Any error left is a 503,
/// never a pass.
async fn across_slot_moves<T, Fut>(step: impl FnMut() -> Fut) -> Result<T>
where
    Fut: Future<Output = std::result::Result<T, FredError>>,
{
    let moving = |err: &FredError| {
        *err.kind() == ErrorKind::Routing || err.details().starts_with("TRYAGAIN")
    };
    retry_while(moving, step).await.map_err(unavailable)
}

/// The values of `keys`, in order. On one Redis a single `MGET`: one command to write and one
/// reply to read. On a cluster the keys may live on different masters, so a pipeline of `GET`s
/// asks each of them at once.
async fn get_each<R: FromValue>(client: &Client, keys: &[String]) -> Result<R, FredError> {
    if !client.is_clustered() {
        return client.mget(keys.to_vec()).await;
    }
    let pipe = client.pipeline();
    for key in keys {
        pipe.get::<(), _>(key).await?;
    }
    pipe.all().await
}

/// Runs `step` again (for up to [`SLOT_MOVE_PATIENCE`]) while its error is `moving`.
pub(super) async fn retry_while<T, E, Fut>(
    moving: impl Fn(&E) -> bool,
    mut step: impl FnMut() -> Fut,
) -> std::result::Result<T, E>
where
    E: std::fmt::Display,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + SLOT_MOVE_PATIENCE;
    loop {
        match step().await {
            Err(err) if moving(&err) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %err, "a slot is moving between masters; trying again");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

#[async_trait]
impl SignInStore for RedisStore {
    /// Every connection of both pools answers: one whose client has stopped would otherwise
    /// fail only the requests that happen to land on it.
    async fn ping(&self) -> Result<()> {
        for client in self.pool.clients().iter().chain(self.revocations.clients()) {
            client.ping::<()>(None).await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn cluster_health(&self) -> Result<Option<ClusterHealth>> {
        let client = self.pool.next();
        if client.cached_cluster_state().is_none() {
            return Ok(None);
        }
        let info: String = client.cluster_info().await.map_err(unavailable)?;
        // The revocation clients learn the cluster's replicas from here too (fred re-reads the
        // topology only when a command is redirected or a connection is lost), so a replica
        // added after start-up is waited for from the next readiness probe on.
        for client in self.revocations.clients() {
            client.sync_cluster().await.map_err(unavailable)?;
        }
        ClusterHealth::parse(&info)
            .map(Some)
            .ok_or_else(|| unavailable(anyhow::anyhow!("CLUSTER INFO without its fields")))
    }

    async fn mark_live(&self, sid: &str, live: &LiveSignIn) -> Result<()> {
        across_slot_moves(|| {
            self.pool.set::<(), _, _>(
                self.keys.live(sid),
                live.encode(),
                Some(Expiration::EXAT(live.kept_until())),
                None,
                false,
            )
        })
        .await?;
        match live.open_until {
            Some(open_until) => self.list_closing(sid, open_until).await,
            None => Ok(()),
        }
    }

    async fn touch(
        &self,
        sid: &str,
        idle_until: i64,
        shared_idle_until: i64,
    ) -> Result<Option<LiveSignIn>> {
        self.update(sid, "touch", idle_until, shared_idle_until)
            .await
    }

    async fn heartbeat(&self, sid: &str, open_until: i64) -> Result<bool> {
        if self
            .update(sid, "heartbeat", open_until, 0)
            .await?
            .is_none()
        {
            return Ok(false);
        }
        self.list_closing(sid, open_until).await?;
        Ok(true)
    }

    async fn reauthenticated(&self, sid: &str, at: i64) -> Result<bool> {
        Ok(self.update(sid, "auth", at, 0).await?.is_some())
    }

    async fn lapsed(&self, sid: &str) -> Result<Option<LiveSignIn>> {
        let key = self.keys.live(sid);
        let value: Option<String> = across_slot_moves(|| self.pool.get(&key)).await?;
        Ok(value.as_deref().and_then(LiveSignIn::decode))
    }

    async fn closing(&self, now: i64, limit: usize) -> Result<Vec<String>> {
        let key = self.keys.closing();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        across_slot_moves(|| {
            self.pool
                .zrangebyscore(&key, "-inf", now as f64, false, Some((0, limit)))
        })
        .await
    }

    async fn closed(&self, sid: &str) -> Result<()> {
        let key = self.keys.closing();
        across_slot_moves(|| self.pool.zrem::<(), _, _>(&key, sid)).await
    }

    async fn live(&self, sid: &str) -> Result<Option<LiveSignIn>> {
        let key = self.keys.live(sid);
        let value: Option<String> = across_slot_moves(|| self.pool.get(&key)).await?;
        Ok(self.still_live(value))
    }

    async fn live_and_mark(
        &self,
        sid: &str,
        mark: &str,
    ) -> Result<(Option<LiveSignIn>, Option<String>)> {
        // One pipeline; on a cluster the two keys may live on two masters, asked at once.
        let (live, mark): (Option<String>, Option<String>) = across_slot_moves(|| async {
            let pipe = self.pool.next().pipeline();
            pipe.get::<(), _>(self.keys.live(sid)).await?;
            pipe.get::<(), _>(self.keys.mark(mark)).await?;
            pipe.all().await
        })
        .await?;
        Ok((self.still_live(live), mark))
    }

    async fn live_many(&self, sids: &[String]) -> Result<Vec<Option<LiveSignIn>>> {
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = sids.iter().map(|sid| self.keys.live(sid)).collect();
        let values: Vec<Option<String>> =
            across_slot_moves(|| get_each(self.pool.next(), &keys)).await?;
        Ok(values.into_iter().map(|v| self.still_live(v)).collect())
    }

    async fn record_access_token(&self, sid: &str, jti: &str, accepted_until: i64) -> Result<()> {
        let key = self.keys.jtis(sid);
        across_slot_moves(|| async {
            let pipe = self.pool.next().pipeline();
            pipe.zadd::<(), _, _>(&key, None, None, false, false, (accepted_until as f64, jti))
                .await?;
            // Tokens are issued in time order, so the newest one's moment is the set's lifetime.
            pipe.expire_at::<(), _>(&key, accepted_until, None).await?;
            pipe.all::<()>().await
        })
        .await
    }

    async fn access_allowed(&self, sid: &str, jti: &str) -> Result<bool> {
        // One command: the liveness value, when the token is not on the revocation list.
        let keys = vec![self.keys.live(sid), self.keys.revoked(sid)];
        let args = [Value::from(jti)];
        let live: Option<String> =
            across_slot_moves(|| run_script(self.pool.next(), &ACCESS_ALLOWED, &keys, &args))
                .await?;
        Ok(self.still_live(live).is_some())
    }

    async fn revocation_ttl(&self, sid: &str, jti: &str) -> Result<Option<i64>> {
        let key = self.keys.revoked(sid);
        let until: Option<f64> = across_slot_moves(|| self.pool.zscore(&key, jti)).await?;
        let now = self.clock.now();
        Ok(until.map(|u| u as i64 - now).filter(|ttl| *ttl > 0))
    }

    async fn hold(&self, session_id: &str, sid: &str, until: i64) -> Result<bool> {
        let keys = vec![
            self.keys.session_ended(session_id),
            self.keys.session_sign_ins(session_id),
        ];
        let args = [Value::from(sid), Value::from(until)];
        let held: i64 =
            across_slot_moves(|| run_script(self.pool.next(), &HOLD, &keys, &args)).await?;
        Ok(held == 1)
    }

    async fn end_session(&self, session_id: &str, reason: &str, until: i64) -> Result<Vec<String>> {
        let keys = vec![
            self.keys.session_ended(session_id),
            self.keys.session_sign_ins(session_id),
        ];
        let args = [Value::from(reason), Value::from(until)];
        across_slot_moves(|| run_script(self.pool.next(), &END_SESSION, &keys, &args)).await
    }

    async fn session_holds(&self, session_id: &str) -> Result<Vec<String>> {
        let key = self.keys.session_sign_ins(session_id);
        across_slot_moves(|| self.pool.smembers(&key)).await
    }

    async fn session_ended(&self, session_id: &str) -> Result<Option<String>> {
        let key = self.keys.session_ended(session_id);
        across_slot_moves(|| self.pool.get(&key)).await
    }

    async fn end(&self, sid: &str) -> Result<Ended> {
        let keys = vec![
            self.keys.jtis(sid),
            self.keys.revoked(sid),
            self.keys.live(sid),
            self.keys.ended(sid),
            self.keys.bound(sid),
            self.keys.challenge(sid),
        ];
        let args = [Value::from(self.clock.now()), Value::from(ENDED_KEPT)];
        // One command, run on the connection a replica wait then holds (see `END`).
        let client = self.revocations.next();
        let (wrote, open, session): (bool, u64, String) =
            across_slot_moves(|| run_script(client, &END, &keys, &args)).await?;
        // When nothing of it was left (ended before, or never started), nothing was written,
        // so there is nothing for a replica to confirm.
        if wrote {
            Self::replicate(client, &self.keys.live(sid)).await;
        }
        Ok(Ended {
            access_tokens: open as usize,
            sessions: (!session.is_empty())
                .then_some(session)
                .into_iter()
                .collect(),
        })
    }

    fn on_reconnect(&self, notify: std::sync::Arc<dyn Fn() + Send + Sync>) {
        for client in self.pool.clients().iter().chain(self.revocations.clients()) {
            let notify = notify.clone();
            client.on_reconnect(move |_| {
                notify();
                async { Ok(()) }
            });
        }
    }

    async fn put_challenge(&self, sid: &str, challenge: &str, until: i64) -> Result<()> {
        let key = self.keys.challenge(sid);
        // Its deadline goes with it, checked on the application's clock when it is taken; the
        // key's own expiry only clears it away.
        let value = format!("{until} {challenge}");
        let expire = Some(Expiration::EXAT(until));
        across_slot_moves(|| {
            self.pool
                .set::<(), _, _>(&key, value.as_str(), expire.clone(), None, false)
        })
        .await
    }

    async fn take_challenge(&self, sid: &str) -> Result<Option<String>> {
        let key = self.keys.challenge(sid);
        let taken: Option<String> = across_slot_moves(|| self.pool.getdel(&key)).await?;
        let now = self.clock.now();
        Ok(taken.and_then(|value| {
            let (until, challenge) = value.split_once(' ')?;
            (until.parse::<i64>().ok()? > now).then(|| challenge.to_owned())
        }))
    }

    async fn bind(&self, sid: &str, key: &str, until: i64) -> Result<bool> {
        let name = self.keys.bound(sid);
        let expire = Some(Expiration::EXAT(until));
        across_slot_moves(|| {
            self.pool
                .set::<(), _, _>(&name, key, expire.clone(), None, false)
        })
        .await?;
        Ok(self.update(sid, "bind", 0, 0).await?.is_some())
    }

    async fn bound_key(&self, sid: &str) -> Result<Option<String>> {
        let key = self.keys.bound(sid);
        across_slot_moves(|| self.pool.get(&key)).await
    }

    async fn endings_held_until(&self) -> Result<Option<i64>> {
        let key = self.keys.endings();
        across_slot_moves(|| self.pool.get(&key)).await
    }

    async fn hold_endings_until(&self, at: i64) -> Result<()> {
        let keys = vec![self.keys.endings()];
        let args = [Value::from(at), Value::from(ENDINGS_KEPT)];
        across_slot_moves(|| run_script::<i64>(self.pool.next(), &RAISE, &keys, &args))
            .await
            .map(drop)
    }
}

#[async_trait]
impl RateCounters for RedisStore {
    async fn hit(&self, bucket: &str, window: i64) -> Result<u64> {
        let key = self.keys.counter(bucket, window);
        let (count, _): (u64, i64) = across_slot_moves(|| async {
            let pipe = self.pool.next().pipeline();
            pipe.incr::<(), _>(&key).await?;
            pipe.expire::<(), _>(&key, WINDOW_SECS + 1, Some(ExpireOptions::NX))
                .await?;
            pipe.all().await
        })
        .await?;
        Ok(count)
    }

    async fn undo(&self, bucket: &str, window: i64) -> Result<()> {
        let keys = vec![self.keys.counter(bucket, window)];
        across_slot_moves(|| run_script::<i64>(self.pool.next(), &UNDO, &keys, &[]))
            .await
            .map(drop)
    }
}

#[async_trait]
impl ChangeMarks for RedisStore {
    async fn mark(&self, name: &str) -> Result<Option<String>> {
        let key = self.keys.mark(name);
        across_slot_moves(|| self.pool.get(&key)).await
    }

    async fn remark(&self, name: &str, ttl: i64) -> Result<()> {
        let key = self.keys.mark(name);
        let mark = super::fresh_mark();
        across_slot_moves(|| {
            self.pool
                .set::<(), _, _>(&key, &mark, Some(Expiration::EX(ttl)), None, false)
        })
        .await
    }
}
