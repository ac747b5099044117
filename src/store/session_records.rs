//! The browser's session records for tower-sessions: one type whichever backend was chosen.
//!
//! A record is kept one idle period past its last save (the cookie may outlive it, so that the
//! server can still tell a browser why its sign-in ended): both backends expire it on the
//! application's clock, and the embedded one sweeps what has expired. In Redis a page view's
//! record is read in the same round trip as what the view checks next (see [`super::read_ahead`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions::{
    SessionStore,
    session::{Id, Record},
    session_store,
};
use tower_sessions_redis_store::{RedisStore, fred::prelude::Pool};

use super::{
    read_ahead::{ReadAhead, ReadBeside},
    redis::{self, SLOT_MOVE_PATIENCE, retry_while},
};
use crate::{
    clock::Clock,
    error::{AppError, Result},
};

/// The session records of the chosen shape, and how long a record is kept after its last save.
#[derive(Debug, Clone)]
pub struct SessionRecords {
    backend: Backend,
    clock: Clock,
    /// Seconds a record is kept after its last save: the idle timeout.
    kept: i64,
}

#[derive(Debug, Clone)]
enum Backend {
    Memory(Arc<MemoryRecords>),
    Redis {
        records: RedisStore<Pool>,
        /// The sign-in store on the same pool, which reads a record with what a page checks.
        sign_ins: Arc<redis::RedisStore>,
    },
}

impl SessionRecords {
    pub fn memory(clock: Clock, kept: i64) -> Self {
        Self {
            backend: Backend::Memory(Arc::new(MemoryRecords {
                clock: clock.clone(),
                state: Mutex::default(),
            })),
            clock,
            kept,
        }
    }

    pub fn redis(pool: Pool, sign_ins: Arc<redis::RedisStore>, clock: Clock, kept: i64) -> Self {
        Self {
            backend: Backend::Redis {
                records: RedisStore::new(pool),
                sign_ins,
            },
            clock,
            kept,
        }
    }

    /// Whether a record's load can read what a page checks in the same round trip.
    pub fn reads_ahead(&self) -> bool {
        matches!(self.backend, Backend::Redis { .. })
    }

    /// The record a session cookie names, if it exists (a malformed id names nothing).
    pub async fn find(&self, session_id: &str) -> Result<Option<Record>> {
        let Ok(id) = session_id.parse::<Id>() else {
            return Ok(None);
        };
        self.load(&id).await.map_err(unavailable)
    }

    /// Deletes a record by id (a malformed id names nothing).
    pub async fn remove(&self, session_id: &str) -> Result<()> {
        let Ok(id) = session_id.parse::<Id>() else {
            return Ok(());
        };
        self.delete(&id).await.map_err(unavailable)
    }

    /// How many records the embedded store holds after sweeping what expired (Redis expires its
    /// own: `None`).
    pub fn held(&self) -> Option<usize> {
        match &self.backend {
            Backend::Memory(memory) => Some(memory.held()),
            Backend::Redis { .. } => None,
        }
    }

    /// The record as it is stored: kept one idle period from now, or less if its own expiry
    /// comes first.
    fn kept_for_idle(&self, record: &mut Record) {
        let until = OffsetDateTime::from_unix_timestamp(self.clock.now() + self.kept);
        if let Ok(until) = until
            && until < record.expiry_date
        {
            record.expiry_date = until;
        }
    }
}

/// The session store did not answer: a 503, never a pass.
pub fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> AppError {
    AppError::unavailable(anyhow::Error::new(err).context("session store"))
}

/// Whether the Redis client could not route a command (a slot moving between masters): the
/// store only passes on the client's message, which names the kind of error first.
fn moving(err: &session_store::Error) -> bool {
    matches!(err, session_store::Error::Backend(message) if message.starts_with("Routing Error"))
}

#[async_trait]
impl SessionStore for SessionRecords {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.kept_for_idle(record);
        match &self.backend {
            Backend::Memory(s) => s.create(record).await,
            Backend::Redis { records: s, .. } => {
                // `create` may change the record's id, so it cannot be handed out as a closure.
                let deadline = tokio::time::Instant::now() + SLOT_MOVE_PATIENCE;
                loop {
                    match s.create(record).await {
                        Err(err) if moving(&err) && tokio::time::Instant::now() < deadline => {
                            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let mut record = record.clone();
        self.kept_for_idle(&mut record);
        match &self.backend {
            Backend::Memory(s) => s.save(&record).await,
            Backend::Redis { records: s, .. } => retry_while(moving, || s.save(&record)).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match &self.backend {
            Backend::Memory(s) => s.load(id).await,
            Backend::Redis { records, sign_ins } => {
                let key = id.to_string();
                let Some((sid, mark)) = ReadAhead::wanted(&key) else {
                    return retry_while(moving, || records.load(id)).await;
                };
                let started = std::time::Instant::now();
                let (record, live, mark) = sign_ins
                    .record_with_live(&key, &sid, &mark)
                    .await
                    .map_err(|err| session_store::Error::Backend(format!("{err:#}")))?;
                ReadAhead::keep(ReadBeside {
                    live: Some(live),
                    mark: Some(mark),
                    seconds: started.elapsed().as_secs_f64(),
                });
                // Decoded as tower-sessions-redis-store encodes it.
                record
                    .map(|bytes| rmp_serde::from_slice(&bytes))
                    .transpose()
                    .map_err(|err| session_store::Error::Decode(err.to_string()))
            }
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match &self.backend {
            Backend::Memory(s) => s.delete(id).await,
            Backend::Redis { records: s, .. } => retry_while(moving, || s.delete(id)).await,
        }
    }
}

/// The embedded shape's session records, in process memory, expiring on the application's clock
/// and swept every few hundred writes, so a browser that leaves without signing out costs nothing
/// once its record has expired. (tower-sessions' own memory store keeps expired records until
/// the process ends, and reads the system clock.)
#[derive(Debug)]
pub struct MemoryRecords {
    clock: Clock,
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    records: HashMap<Id, Record>,
    writes: u64,
}

/// Sweep expired records once per this many writes.
const SWEEP_EVERY: u64 = 256;

impl MemoryRecords {
    fn with<T>(&self, f: impl FnOnce(&mut MemoryState, i64) -> T) -> T {
        let now = self.clock.now();
        // A poisoned lock only means another request panicked mid-update; the map stays usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state, now)
    }

    fn write(&self, f: impl FnOnce(&mut HashMap<Id, Record>)) {
        self.with(|state, now| {
            state.writes += 1;
            if state.writes.is_multiple_of(SWEEP_EVERY) {
                state.sweep(now);
            }
            f(&mut state.records);
        });
    }

    fn held(&self) -> usize {
        self.with(|state, now| {
            state.sweep(now);
            state.records.len()
        })
    }
}

impl MemoryState {
    fn sweep(&mut self, now: i64) {
        self.records
            .retain(|_, record| record.expiry_date.unix_timestamp() > now);
    }
}

#[async_trait]
impl SessionStore for MemoryRecords {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.write(|records| {
            while records.contains_key(&record.id) {
                record.id = Id::default();
            }
            records.insert(record.id, record.clone());
        });
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.write(|records| {
            records.insert(record.id, record.clone());
        });
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        Ok(self.with(|state, now| {
            state
                .records
                .get(id)
                .filter(|record| record.expiry_date.unix_timestamp() > now)
                .cloned()
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.write(|records| {
            records.remove(id);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A browser that leaves without signing out costs nothing once its record has expired: the
    /// embedded store sweeps it on the application's clock.
    #[tokio::test]
    async fn expired_records_are_swept_from_memory() {
        let clock = Clock::manual();
        let records = SessionRecords::memory(clock.clone(), 60);
        for _ in 0..10 {
            let mut record = Record {
                id: Id::default(),
                data: Default::default(),
                expiry_date: OffsetDateTime::now_utc() + time::Duration::weeks(2),
            };
            records.create(&mut record).await.unwrap();
        }
        assert_eq!(records.held(), Some(10));
        clock.advance(Duration::from_secs(59));
        assert_eq!(records.held(), Some(10), "kept one idle period");
        clock.advance(Duration::from_secs(2));
        assert_eq!(records.held(), Some(0));
    }
}
