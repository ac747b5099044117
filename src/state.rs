//! The state every handler shares, assembled once from the layers below: the database, the
//! stores of the chosen shape, the keys, the clock and the services built on them. Handlers and
//! extractors take the part they need (`State<SignIns>`, ...) through `FromRef`.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::{
    accounts::Users,
    auth::{
        AccessTokens, Backend, Keys, SignIns, passwords::Passwords, rate_limit::RateLimits,
        sign_ins::Lifetimes, sign_out::ClientState,
    },
    clock::Clock,
    config::Settings,
    courses::Catalog,
    db::{self, Pool},
    store::{self, SessionBackend, Stores},
    web::TrustedProxies,
};

/// Everything a handler may need, cloned into each request (and into each extractor that takes a
/// part): one shared allocation, so a clone is one reference count, not one per service.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares; its fields read as the state's own (`state.db`).
pub struct Shared {
    pub db: Pool,
    /// Learners, cached in process (see [`Users`]).
    pub users: Users,
    /// The course catalog, cached in process (see [`Catalog`]).
    pub catalog: Catalog,
    pub clock: Clock,
    pub settings: Arc<Settings>,
    pub keys: Keys,
    pub passwords: Passwords,
    pub stores: Stores,
    pub sign_ins: SignIns,
    pub limits: RateLimits,
}

impl AppState {
    /// Connects the stores the settings name (chosen once, here) and applies migrations.
    pub async fn connect(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let pool = db::connect(&settings.database_url).await?;
        db::migrate(&pool).await?;
        let stores = match &settings.redis_url {
            Some(url) => {
                let redis = store::redis::connect(url).await?;
                let revocations = store::redis::connect_sized(url, 1).await?;
                let shared = Arc::new(
                    store::redis::RedisStore::new(
                        redis.clone(),
                        &settings.key_prefix,
                        clock.clone(),
                    )
                    .with_revocations(revocations),
                );
                Stores {
                    sign_ins: shared.clone(),
                    counters: shared.clone(),
                    marks: shared.clone(),
                    sessions: SessionBackend::redis(redis, shared),
                    redis: true,
                }
            }
            None => {
                tracing::info!(
                    "REDIS_URL is not set: sessions and revocations are kept in process memory (one instance only)"
                );
                let shared = Arc::new(store::memory::MemoryStore::new(clock.clone()));
                Stores {
                    sign_ins: shared.clone(),
                    counters: shared.clone(),
                    marks: shared,
                    sessions: SessionBackend::memory(),
                    redis: false,
                }
            }
        };
        if settings.secret_generated {
            tracing::warn!(
                "LECTERN_SECRET is not set: generated a random one; sessions and tokens end when the process stops"
            );
        }
        let keys = Keys::derive(settings.secret_bytes());
        // Hashing runs on its own lower-priority threads, at most one per core, so sign-in floods queue there.
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let passwords = Passwords::new(cores)?;
        let sign_ins = SignIns::new(
            pool.clone(),
            stores.sign_ins.clone(),
            stores.sessions.clone(),
            Arc::new(AccessTokens::new(&keys.jwt)),
            clock.clone(),
            Lifetimes::from_settings(&settings),
        );
        let limits = RateLimits::new(stores.counters.clone(), clock.clone(), settings.rate_limit);
        Ok(Self(Arc::new(Shared {
            users: Users::new(pool.clone()),
            catalog: Catalog::new(pool.clone(), stores.marks.clone()),
            db: pool,
            clock,
            settings: Arc::new(settings),
            keys,
            passwords,
            stores,
            sign_ins,
            limits,
        })))
    }

    /// axum-login's backend over this state's database and hasher.
    pub fn backend(&self) -> Backend {
        Backend::new(self.db.clone(), self.users.clone(), self.passwords.clone())
    }

    /// How sign-out responses clear the browser.
    pub fn client_state(&self) -> ClientState {
        ClientState {
            secure_cookies: self.settings.secure_cookies,
            clear_site_data: self.settings.clear_site_data,
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for SignIns {
    fn from_ref(state: &AppState) -> Self {
        state.sign_ins.clone()
    }
}

impl FromRef<AppState> for Keys {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

impl FromRef<AppState> for axum_extra::extract::cookie::Key {
    fn from_ref(state: &AppState) -> Self {
        state.keys.cookie.clone()
    }
}

impl FromRef<AppState> for TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        TrustedProxies(state.settings.trusted_proxies)
    }
}

impl FromRef<AppState> for RateLimits {
    fn from_ref(state: &AppState) -> Self {
        state.limits.clone()
    }
}
