//! The browser-session store for tower-sessions: one type whichever backend was chosen.

use async_trait::async_trait;
use tower_sessions::{
    MemoryStore, SessionStore,
    session::{Id, Record},
    session_store,
};
use tower_sessions_redis_store::{RedisStore, fred::prelude::Pool};

use super::redis::{SLOT_MOVE_PATIENCE, retry_while};
use crate::error::{AppError, Result};

#[derive(Debug, Clone)]
pub enum SessionBackend {
    Memory(MemoryStore),
    Redis(RedisStore<Pool>),
}

impl SessionBackend {
    pub fn memory() -> Self {
        Self::Memory(MemoryStore::default())
    }

    pub fn redis(pool: Pool) -> Self {
        Self::Redis(RedisStore::new(pool))
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
            Self::Redis(s) => {
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
            Self::Redis(s) => retry_while(moving, || s.save(record)).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            Self::Memory(s) => s.load(id).await,
            Self::Redis(s) => retry_while(moving, || s.load(id)).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            Self::Memory(s) => s.delete(id).await,
            Self::Redis(s) => retry_while(moving, || s.delete(id)).await,
        }
    }
}
