//! What ended stays ended, whatever happens to Redis.
//!
//! The database is the record of every sign-in that ended (its row is marked in the same step as
//! its audit row); Redis is how fast every instance learns it. Redis can lose writes: a restart
//! from a snapshot, a failover to a replica that had not received them, a flush. A sign-in whose
//! ending Redis lost would look live again. So:
//!
//! 1. Every instance keeps, in memory, the ids of the sign-ins the database says ended whose
//!    lifetime has not run out: read whole at start-up, then every [`POLL`] the endings since the
//!    last read (with an overlap, so a slow commit is not missed), and its own endings at once.
//!    Every credential check refuses those, whatever Redis says.
//! 2. Redis keeps the time of the newest ending it holds (`lectern:{endings}`). When it is
//!    missing, or older than the database's newest by more than [`LAG`], or a connection to Redis
//!    was re-established (a restart, a failover), the endings Redis may have lost are replayed
//!    into it: each ended again (its liveness, its tokens, its browser session), which is
//!    harmless where Redis still had it.
//!
//! So a sign-out confirmed to the learner is refused by every instance within [`POLL`] of it,
//! even if Redis forgets it afterwards; and Redis itself is put right within [`POLL`] of coming
//! back. A sign-out confirmed while the database could not be reached (it is settled later) lives
//! only in Redis until then.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use super::records::SignInRecords;
use crate::{
    clock::Clock,
    error::Result,
    store::{SessionRecords, SignInStore},
};

/// How often every instance reads the endings since its last read.
pub const POLL: Duration = Duration::from_secs(1);
/// How far back each read reaches before the newest ending already read: a transaction that
/// committed this much later than its ending's time is still seen.
const OVERLAP: i64 = 5;
/// How far Redis's mark may trail the database's newest ending before its endings are replayed
/// (endings in flight have not raised it yet).
const LAG: i64 = 5;
/// How far back a replay after a re-established connection reaches (a replica promoted after a
/// failover misses at most the last moments of its master).
const AFTER_RECONNECT: i64 = 300;

/// The endings every instance refuses. A clone shares them.
#[derive(Clone)]
pub struct Ledger(Arc<Parts>);

struct Parts {
    records: SignInRecords,
    store: Arc<dyn SignInStore>,
    session_records: SessionRecords,
    clock: Clock,
    /// sign-in id -> the end of its lifetime (after which it is refused anyway).
    ended: RwLock<HashMap<String, i64>>,
    /// The newest ending time read from the database; 0 before the first read.
    read_until: AtomicI64,
    /// A connection to Redis was re-established since the last look.
    reconnected: AtomicBool,
}

impl Ledger {
    pub fn new(
        records: SignInRecords,
        store: Arc<dyn SignInStore>,
        session_records: SessionRecords,
        clock: Clock,
    ) -> Self {
        Self(Arc::new(Parts {
            records,
            store,
            session_records,
            clock,
            ended: RwLock::default(),
            read_until: AtomicI64::new(0),
            reconnected: AtomicBool::new(false),
        }))
    }

    /// Whether the database says this sign-in ended.
    pub fn is_ended(&self, sid: &str) -> bool {
        let ended = self.0.ended.read().unwrap_or_else(|e| e.into_inner());
        ended.contains_key(sid)
    }

    /// Notes an ending this instance just recorded.
    pub fn note(&self, sid: &str, expires_at: i64) {
        let mut ended = self.0.ended.write().unwrap_or_else(|e| e.into_inner());
        ended.insert(sid.to_owned(), expires_at);
    }

    /// A connection to Redis was re-established: the next look replays recent endings.
    pub fn reconnected(&self) {
        self.0.reconnected.store(true, Ordering::Release);
    }

    /// Reads the endings since the last read, forgets those past their lifetime, and replays into
    /// the store what it may have lost. Returns how many endings were replayed.
    pub async fn catch_up(&self) -> Result<usize> {
        let parts = &self.0;
        let now = parts.clock.now();
        let read_until = parts.read_until.load(Ordering::Acquire);
        let since = if read_until == 0 {
            0
        } else {
            read_until - OVERLAP
        };
        let endings = parts.records.ended_since(since, now).await?;
        let newest = endings
            .iter()
            .map(|e| e.revoked_at)
            .max()
            .unwrap_or(read_until)
            .max(read_until);
        {
            let mut ended = parts.ended.write().unwrap_or_else(|e| e.into_inner());
            ended.retain(|_, expires_at| *expires_at > now);
            for ending in &endings {
                ended.insert(ending.id.clone(), ending.expires_at);
            }
        }
        parts.read_until.store(newest, Ordering::Release);
        let reconnected = parts.reconnected.swap(false, Ordering::AcqRel);
        let held = parts.store.endings_held_until().await?;
        let replay_from = match held {
            // Redis lost everything (or never held an ending): every ending still in lifetime.
            None => Some(0),
            Some(held) if held < newest - LAG => Some(held - OVERLAP),
            Some(_) if reconnected => Some(now - AFTER_RECONNECT),
            Some(_) => None,
        };
        let mut replayed = 0;
        if let Some(from) = replay_from {
            for ending in parts.records.ended_since(from, now).await? {
                self.replay(&ending.id).await?;
                replayed += 1;
            }
            if replayed > 0 {
                tracing::warn!(
                    replayed,
                    "Redis had lost sign-in endings; they were replayed"
                );
            }
        }
        if newest > 0 && held.is_none_or(|held| held < newest) {
            parts.store.hold_endings_until(newest).await?;
        }
        Ok(replayed)
    }

    /// Ends a sign-in in the store again, and deletes the browser session it named.
    async fn replay(&self, sid: &str) -> Result<()> {
        let ended = self.0.store.end(sid).await?;
        for session in &ended.sessions {
            self.0.session_records.remove(session).await?;
        }
        Ok(())
    }

    /// Keeps catching up every [`POLL`], on this runtime, for as long as it runs.
    pub fn spawn(&self) {
        let ledger = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(POLL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(err) = ledger.catch_up().await {
                    tracing::warn!(error = %err, "could not read the sign-in endings");
                }
            }
        });
    }
}
