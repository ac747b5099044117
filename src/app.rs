//! Building the application: state, router, middleware, server.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRef, MatchedPath},
    http::{HeaderName, HeaderValue, Request, header},
    middleware,
};
use axum_login::AuthManagerLayerBuilder;
use tokio::net::TcpListener;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    services::ServeDir,
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use tower_sessions::{
    Expiry, MemoryStore, SessionManagerLayer,
    cookie::{SameSite, time::Duration as CookieDuration},
};
use tower_sessions_redis_store::RedisStore;

use crate::{
    auth::{self, Backend, Keys, password::Passwords},
    config::Settings,
    db::{self, Pool},
    store::{self, Kv, SessionBackend},
};

/// Everything a handler may need, cloned cheaply into each request.
#[derive(Clone)]
pub struct AppState {
    pub db: Pool,
    pub kv: Kv,
    pub keys: Keys,
    pub passwords: Passwords,
    /// The browser-session store, so ending a sign-in can delete its session record.
    pub sessions: SessionBackend,
    pub settings: Arc<Settings>,
}

impl FromRef<AppState> for axum_extra::extract::cookie::Key {
    fn from_ref(state: &AppState) -> Self {
        state.keys.cookie.clone()
    }
}

/// Connects the stores the settings name (chosen once, here) and applies migrations.
pub async fn connect(settings: Settings) -> anyhow::Result<AppState> {
    let pool = db::connect(&settings.database_url).await?;
    db::migrate(&pool).await?;
    let (kv, sessions) = match &settings.redis_url {
        Some(url) => {
            let redis = store::connect_redis(url).await?;
            (
                Kv::redis(redis.clone(), &settings.key_prefix),
                SessionBackend::Redis(RedisStore::new(redis)),
            )
        }
        None => {
            tracing::info!(
                "REDIS_URL is not set: sessions and revocations are kept in process memory (one instance only)"
            );
            (Kv::memory(), SessionBackend::Memory(MemoryStore::default()))
        }
    };
    if settings.secret_generated {
        tracing::warn!(
            "LECTERN_SECRET is not set: generated a random one; sessions and tokens end when the process stops"
        );
    }
    let keys = Keys::derive(settings.secret_bytes())?;
    // Hashing runs on the blocking pool, at most one per core, so sign-in floods queue there.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let passwords = Passwords::new(cores)?;
    Ok(AppState {
        db: pool,
        kv,
        keys,
        passwords,
        sessions,
        settings: Arc::new(settings),
    })
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// The router the binary serves and the tests drive.
pub fn router(state: AppState) -> Router {
    let settings = state.settings.clone();
    let session_layer = SessionManagerLayer::new(state.sessions.clone())
        .with_name(auth::SESSION_COOKIE)
        .with_path("/")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(settings.secure_cookies)
        .with_expiry(Expiry::OnInactivity(CookieDuration::seconds(
            settings.session_idle.as_secs() as i64,
        )));
    let auth_layer = AuthManagerLayerBuilder::new(
        Backend::new(state.db.clone(), state.passwords.clone()),
        session_layer,
    )
    .build();

    let pages = Router::new()
        .merge(crate::pages::router())
        .merge(auth::routes::router())
        .merge(auth::signout::router())
        .merge(crate::courses::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::csrf::verify,
        ));

    let static_files = Router::new()
        .fallback_service(ServeDir::new("static"))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        ));

    let x_request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(pages)
        .nest("/api/v1", crate::api::router())
        .nest("/static", static_files)
        .fallback(crate::pages::not_found)
        .layer(auth_layer)
        // Inside the guard, so a timeout's bare 503 becomes a page too.
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::signout::guard,
        ))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(security_header("content-security-policy", CSP))
        .layer(security_header("x-content-type-options", "nosniff"))
        .layer(security_header("referrer-policy", "same-origin"))
        .layer(security_header("x-frame-options", "DENY"))
        .layer(security_header("cross-origin-opener-policy", "same-origin"))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let path = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("unmatched", MatchedPath::as_str);
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), path, request_id = id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .with_state(state)
}

fn security_header(name: &'static str, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let addr = settings.addr;
        let state = connect(settings).await?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (LECTERN_ADDR)"))?;
        Ok(Self {
            listener,
            router: router(state.clone()),
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM or Ctrl-C, letting requests in flight finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, "Lectern is listening on http://{addr}");
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
