//! The state every handler shares, assembled once from the layers below: the database, the
//! stores of the chosen shape, the keys, the clock and the services built on them. Handlers and
//! extractors take the part they need (`State<SignIns>`, ...) through `FromRef`.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::{
    accounts::Users,
    auth::{
        AccessTokens, Backend, Keys, SignIns, SignOut, bound::Binding, establish::Establish,
        leaving::Leaving, ledger::Ledger, password_change::PasswordChange, passwords::Passwords,
        rate_limit::RateLimits, recent::Reauth, records::SignInRecords, sign_ins::Lifetimes,
        sign_out::ClientState,
    },
    clock::{self, Clock},
    config::Settings,
    courses::Catalog,
    db::{self, Pool},
    ssf::Ssf,
    store::{self, SessionRecords, Stores, read_ahead::KnownLearners},
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
    pub lifetimes: Lifetimes,
    pub keys: Keys,
    pub tokens: Arc<AccessTokens>,
    pub passwords: Passwords,
    pub stores: Stores,
    pub sign_ins: SignIns,
    pub sign_out: SignOut,
    pub establish: Establish,
    pub password_change: PasswordChange,
    /// Recent authentication, for what needs the password again.
    pub reauth: Reauth,
    /// Deleting, disabling and enabling accounts.
    pub leaving: Leaving,
    /// What ended, kept by this instance (see [`Ledger`]).
    pub ledger: Ledger,
    pub limits: RateLimits,
    /// Which learner each recent browser session is, for reading ahead.
    pub learners: KnownLearners,
    /// Shared Signals: telling other applications, and hearing from identity providers.
    pub ssf: Ssf,
    /// Device-bound sign-ins (DBSC).
    pub binding: Binding,
}

impl AppState {
    /// Connects the stores the settings name (chosen once, here), applies migrations and reads
    /// what ended from the database.
    pub async fn connect(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let pool = db::connect(&settings.database_url).await?;
        db::migrate(&pool).await?;
        let lifetimes = Lifetimes::from_settings(&settings);
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
                    session_records: SessionRecords::redis(
                        redis,
                        shared,
                        clock.clone(),
                        lifetimes.idle,
                    ),
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
                    session_records: SessionRecords::memory(clock.clone(), lifetimes.idle),
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
        let tokens = Arc::new(AccessTokens::new(&keys.jwt));
        // Hashing runs on its own lower-priority threads, at most one per core, so sign-in floods queue there.
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let passwords = Passwords::new(cores)?;
        let outbox_written = Arc::new(tokio::sync::Notify::new());
        let records = SignInRecords::new(pool.clone(), outbox_written.clone());
        let ledger = Ledger::new(
            records.clone(),
            stores.sign_ins.clone(),
            stores.session_records.clone(),
            clock.clone(),
        );
        let notified = ledger.clone();
        stores
            .sign_ins
            .on_reconnect(Arc::new(move || notified.reconnected()));
        ledger
            .catch_up()
            .await
            .map_err(|err| anyhow::anyhow!("reading the sign-in endings: {err:#}"))?;
        let sign_ins = SignIns::new(
            pool.clone(),
            records.clone(),
            stores.sign_ins.clone(),
            ledger.clone(),
            tokens.clone(),
            clock.clone(),
            lifetimes,
        );
        let binding = Binding::new(
            stores.sign_ins.clone(),
            records.clone(),
            clock.clone(),
            settings.secret_bytes(),
            clock::secs(settings.bound_ttl),
            settings.dbsc,
        );
        let sign_out = SignOut::new(
            records,
            stores.sign_ins.clone(),
            stores.session_records.clone(),
            sign_ins.clone(),
            ledger.clone(),
            clock.clone(),
            lifetimes,
        );
        let establish = Establish::new(
            sign_ins.clone(),
            sign_out.clone(),
            stores.session_records.clone(),
            clock.clone(),
            settings.secure_cookies,
        );
        let limits = RateLimits::new(
            stores.counters.clone(),
            clock.clone(),
            settings.rate_limit,
            settings.rate_limit_ipv6_prefix,
        );
        let users = Users::new(pool.clone());
        let password_change = PasswordChange::new(
            pool.clone(),
            users.clone(),
            passwords.clone(),
            limits.clone(),
            sign_out.clone(),
            establish.clone(),
            clock.clone(),
        );
        let reauth = Reauth::new(
            pool.clone(),
            passwords.clone(),
            limits.clone(),
            sign_ins.clone(),
            clock.clone(),
            lifetimes.reauth_window,
        );
        let leaving = Leaving::new(
            pool.clone(),
            users.clone(),
            passwords.clone(),
            limits.clone(),
            sign_out.clone(),
            clock.clone(),
        );
        let ssf = Ssf::new(
            pool.clone(),
            clock.clone(),
            &settings,
            sign_out.clone(),
            outbox_written,
        )?;
        Ok(Self(Arc::new(Shared {
            ssf,
            binding,
            reauth,
            leaving,
            users,
            catalog: Catalog::new(pool.clone(), stores.marks.clone()),
            db: pool,
            clock,
            settings: Arc::new(settings),
            lifetimes,
            keys,
            tokens,
            passwords,
            stores,
            sign_ins,
            sign_out,
            establish,
            password_change,
            ledger,
            limits,
            learners: KnownLearners::default(),
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
            bound: self.settings.dbsc,
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// `FromRef<AppState>` for each part an extractor or a route layer takes.
macro_rules! parts {
    ($($part:ty => |$state:ident| $get:expr;)*) => {
        $(impl FromRef<AppState> for $part {
            fn from_ref($state: &AppState) -> Self {
                $get
            }
        })*
    };
}

parts! {
    SignIns => |state| state.sign_ins.clone();
    SignOut => |state| state.sign_out.clone();
    Keys => |state| state.keys.clone();
    axum_extra::extract::cookie::Key => |state| state.keys.cookie.clone();
    Arc<AccessTokens> => |state| state.tokens.clone();
    Clock => |state| state.clock.clone();
    Lifetimes => |state| state.lifetimes;
    KnownLearners => |state| state.learners.clone();
    SessionRecords => |state| state.stores.session_records.clone();
    (SessionRecords, KnownLearners) => |state| (state.stores.session_records.clone(), state.learners.clone());
    TrustedProxies => |state| TrustedProxies(state.settings.trusted_proxies);
    RateLimits => |state| state.limits.clone();
    Ssf => |state| state.ssf.clone();
    Binding => |state| state.binding.clone();
}
