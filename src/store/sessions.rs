//! The browser-session store for tower-sessions: one type whichever backend was chosen.
//!
//! In Redis a page view's session record is read in the same round trip as what the view checks
//! next: its browser sign-in's liveness and its learner's enrolment mark (see [`Beside`]).

use std::{cell::RefCell, sync::Arc};

use async_trait::async_trait;
use tower_sessions::{
    MemoryStore, SessionStore,
    session::{Id, Record},
    session_store,
};
use tower_sessions_redis_store::{RedisStore, fred::prelude::Pool};

use super::{
    Standing,
    redis::{self, SLOT_MOVE_PATIENCE, retry_while},
};
use crate::error::{AppError, Result};

#[derive(Debug, Clone)]
pub enum SessionBackend {
    Memory(MemoryStore),
    Redis {
        records: RedisStore<Pool>,
        /// The sign-in store on the same pool, which reads a record with what a page checks.
        sign_ins: Arc<redis::RedisStore>,
    },
}

tokio::task_local! {
    /// What the page view this task serves would read beside its session record.
    static BESIDE: RefCell<Beside>;
}

/// What a page view reads beside its session record, in the same Redis round trip: its browser
/// sign-in's standing and its learner's enrolment mark. Set for one request by
/// [`Beside::scope`], filled by the record's load, and taken once by the check that would
/// otherwise read them, so nothing of it outlives the request or is used twice.
#[derive(Debug)]
pub struct Beside {
    session_id: String,
    sid: String,
    /// The change mark to read: the learner's, as this instance last saw the session.
    mark: String,
    read: Option<Read>,
}

/// A sign-in's standing and a change mark, as one round trip found them.
#[derive(Debug)]
pub struct Read {
    pub standing: Option<Standing>,
    pub mark: Option<String>,
    /// How long that round trip took (session record included).
    pub seconds: f64,
}

impl Beside {
    /// Runs `request` with the session `session_id`'s load also reading sign-in `sid`'s standing
    /// and the change mark `mark`.
    pub async fn scope<F: Future>(
        session_id: String,
        sid: String,
        mark: String,
        request: F,
    ) -> F::Output {
        let beside = Self {
            session_id,
            sid,
            mark,
            read: None,
        };
        BESIDE.scope(RefCell::new(beside), request).await
    }

    /// What this request's record load read for exactly this session, sign-in and mark, once.
    pub fn take(session_id: &str, sid: &str, mark: &str) -> Option<Read> {
        BESIDE
            .try_with(|beside| {
                let mut beside = beside.borrow_mut();
                let same =
                    beside.session_id == session_id && beside.sid == sid && beside.mark == mark;
                if same { beside.read.take() } else { None }
            })
            .ok()
            .flatten()
    }

    /// The sign-in and mark to read with record `id`, when this request asked and has not read
    /// them yet.
    fn wanted(id: &str) -> Option<(String, String)> {
        BESIDE
            .try_with(|beside| {
                let beside = beside.borrow();
                (beside.session_id == id && beside.read.is_none())
                    .then(|| (beside.sid.clone(), beside.mark.clone()))
            })
            .ok()
            .flatten()
    }

    fn keep(read: Read) {
        let _ = BESIDE.try_with(|beside| beside.borrow_mut().read = Some(read));
    }
}

impl SessionBackend {
    pub fn memory() -> Self {
        Self::Memory(MemoryStore::default())
    }

    pub fn redis(pool: Pool, sign_ins: Arc<redis::RedisStore>) -> Self {
        Self::Redis {
            records: RedisStore::new(pool),
            sign_ins,
        }
    }

    /// Whether a record's load can read what a page checks in the same round trip.
    pub fn reads_beside(&self) -> bool {
        matches!(self, Self::Redis { .. })
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
impl SessionStore for SessionBackend {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            Self::Memory(s) => s.create(record).await,
            Self::Redis { records: s, .. } => {
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
        match self {
            Self::Memory(s) => s.save(record).await,
            Self::Redis { records: s, .. } => retry_while(moving, || s.save(record)).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            Self::Memory(s) => s.load(id).await,
            Self::Redis { records, sign_ins } => {
                let key = id.to_string();
                let Some((sid, mark)) = Beside::wanted(&key) else {
                    return retry_while(moving, || records.load(id)).await;
                };
                let started = std::time::Instant::now();
                let (record, standing, mark) = sign_ins
                    .record_with_standing(&key, &sid, &mark)
                    .await
                    .map_err(|err| session_store::Error::Backend(format!("{err:#}")))?;
                Beside::keep(Read {
                    standing,
                    mark,
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
        match self {
            Self::Memory(s) => s.delete(id).await,
            Self::Redis { records: s, .. } => retry_while(moving, || s.delete(id)).await,
        }
    }
}
