//! Building the application: the router with each group of routes behind the layers its rules
//! need, and the server around it.
//!
//! | routes | behind |
//! | --- | --- |
//! | `/dashboard`, `/courses/…`, `/account` | sessions, a live sign-in, the session's CSRF token |
//! | `/login`, `/register` | sessions, a session or visitor CSRF token |
//! | `/` and unknown pages | sessions |
//! | `/logout` | nothing shared: it reads the session itself, whatever state it is in |
//! | `/api/v1/…` | JSON errors, no-store, cross-site refused |
//! | `/ssf/…`, `/.well-known/ssf-configuration` | JSON errors, no-store; receivers' bearer tokens |
//! | `/static/…`, `/healthz`, `/readyz` | nothing: no session is ever read for them |
//! | `/metrics` | only on `LECTERN_METRICS_ADDR`, its own listener |

use std::net::SocketAddr;

use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath},
    http::{HeaderName, Request},
    middleware,
    routing::get,
};
use axum_login::AuthManagerLayerBuilder;
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use tower_sessions::{Expiry, SessionManagerLayer, cookie::SameSite};

use crate::{
    auth::guards,
    clock::Clock,
    config::Settings,
    pages,
    state::AppState,
    web::{self, cookies::SESSION_COOKIE},
};

/// The router the binary serves and the tests drive.
pub fn router(state: AppState) -> Router {
    let settings = state.settings.clone();
    let session_layer = SessionManagerLayer::new(state.stores.session_records.clone())
        .with_name(SESSION_COOKIE)
        .with_path("/")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(settings.secure_cookies)
        // A browser-session cookie: it outlives both deadlines, which the server enforces, so a
        // browser that comes back after a timeout still presents it and is told why.
        .with_expiry(Expiry::OnSessionEnd);
    let auth_layer = AuthManagerLayerBuilder::new(state.backend(), session_layer)
        .with_data_key(crate::auth::AUTH_DATA_KEY)
        .build();

    let learners = Router::new()
        .merge(pages::courses::router())
        .merge(pages::account::router())
        .merge(pages::presence::learner_router())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guards::learners_only,
        ));
    let forms = pages::sign_in::router().route_layer(middleware::from_fn_with_state(
        state.clone(),
        guards::visitors_and_learners::<AppState>,
    ));
    let pages = Router::new()
        .merge(learners)
        .merge(forms)
        .merge(pages::presence::router())
        .merge(pages::bound::router())
        .merge(pages::home::router())
        .fallback(pages::home::not_found)
        // One stack, outermost first, so each route is wrapped once, not once per layer.
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(web::failures::as_pages))
                .layer(web::failures::timeout())
                .layer(middleware::from_fn_with_state(
                    (state.stores.session_records.clone(), state.learners.clone()),
                    crate::auth::extract::read_ahead,
                ))
                .layer(auth_layer),
        );
    let sign_out = pages::sign_out::router().layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn(web::failures::as_pages))
            .layer(web::failures::timeout()),
    );
    let api = crate::api::router();
    let method_not_allowed = || async { crate::error::AppError::MethodNotAllowed };

    let app = Router::new()
        .merge(pages)
        .merge(sign_out)
        .merge(pages::health::router())
        .method_not_allowed_fallback(method_not_allowed)
        .nest("/api/v1", api)
        .merge(crate::ssf::router())
        // The one layer that needs the matched route, so it wraps each route.
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
        // Outside the request span: the liveness probe and the static files read no store and
        // log nothing, and the trace layer with its span (whose fields are formatted whatever is
        // logged) was a quarter to a third of what they cost. Their answers still carry the
        // request id, and (the second call below) the same 405 page as every other route.
        .merge(pages::health::liveness())
        .route("/favicon.ico", get(web::static_files::favicon))
        .merge(web::static_files::router())
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    // The layers every request passes whatever its route, once around the whole router: each
    // `Router::layer` would wrap every route again, and a request would pay for a boxed copy of
    // each of them.
    let x_request_id = HeaderName::from_static("x-request-id");
    let everything = ServiceBuilder::new()
        .map_request(web::client::host_from_authority)
        .layer(SetRequestIdLayer::new(
            x_request_id.clone(),
            MakeRequestUuid,
        ))
        .layer(PropagateRequestIdLayer::new(x_request_id))
        .layer(web::security::headers())
        .layer(middleware::from_fn(web::cache::no_store_for_learners))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .service(app);
    Router::new().fallback_service(everything)
}

/// A bound, ready-to-run server, with its metrics listener when `LECTERN_METRICS_ADDR` is set
/// and its certificate when it serves HTTPS.
pub struct Application {
    listener: TcpListener,
    metrics: Option<TcpListener>,
    tls: Option<RustlsConfig>,
    router: Router,
    state: AppState,
}

impl Application {
    /// Connects the stores, applies migrations and binds the address, on the real clock.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// As [`Application::build`], with a given clock (tests move a manual one).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let addr = settings.addr;
        let state = AppState::connect(settings, clock).await?;
        state.ledger.spawn();
        state.sign_out.spawn_closing(crate::auth::ledger::POLL);
        state.ssf.spawn();
        let tls = match &state.settings.tls {
            Some(tls) => Some(tls_config(tls).await?),
            None => None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (LECTERN_ADDR)"))?;
        let metrics =
            match state.settings.metrics_addr {
                Some(addr) => {
                    crate::telemetry::metrics_handle();
                    Some(TcpListener::bind(addr).await.with_context(|| {
                        format!("cannot listen on {addr} (LECTERN_METRICS_ADDR)")
                    })?)
                }
                None => None,
            };
        Ok(Self {
            listener,
            metrics,
            tls,
            router: router(state.clone()),
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// The metrics listener's port, when there is one.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM or Ctrl-C, letting requests in flight finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, "Lectern is listening on {scheme}://{addr}");
        if let Some(metrics) = self.metrics {
            let addr = metrics.local_addr()?;
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
            let router = pages::health::metrics_router().with_state(self.state.clone());
            tokio::spawn(async move {
                if let Err(err) = axum::serve(metrics, router)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
                {
                    tracing::error!(error = %err, "the metrics listener stopped");
                }
            });
        }
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let (Some(tls), Some(files)) = (self.tls, self.state.settings.tls.clone()) else {
            return axum::serve(self.listener, service)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .context("serving HTTP");
        };
        tokio::spawn(reload_when_renewed(tls.clone(), files));
        let handle = axum_server::Handle::new();
        let stopping = handle.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stopping.graceful_shutdown(Some(std::time::Duration::from_secs(30)));
        });
        axum_server::from_tcp_rustls(self.listener.into_std()?, tls)?
            .handle(handle)
            .serve(service)
            .await
            .context("serving HTTPS")
    }
}

/// The certificate and key of `LECTERN_TLS_CERT` and `LECTERN_TLS_KEY`, on rustls with ring.
async fn tls_config(files: &crate::config::Tls) -> anyhow::Result<RustlsConfig> {
    // The one process-wide provider; installed already (a second app in a test) is fine.
    #[expect(
        deprecated,
        reason = "ring is already the TLS library under reqwest; aws-lc-rs would add a C build for post-quantum key exchange, which a load balancer in front can offer"
    )]
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.install_default();
    RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .with_context(|| {
            format!(
                "LECTERN_TLS_CERT, LECTERN_TLS_KEY: cannot use {} and {} (PEM certificate chain and private key)",
                files.cert.display(),
                files.key.display()
            )
        })
}

/// Reads the certificate again when its files change (a renewal), so no restart is needed; a
/// renewal that does not load keeps the certificate in use, and says so.
async fn reload_when_renewed(tls: RustlsConfig, files: crate::config::Tls) {
    let changed = |files: &crate::config::Tls| {
        [&files.cert, &files.key]
            .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
    };
    let mut seen = changed(&files);
    let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = changed(&files);
        if now == seen {
            continue;
        }
        match tls.reload_from_pem_file(&files.cert, &files.key).await {
            Ok(()) => {
                seen = now;
                tracing::info!("the TLS certificate was renewed and is in use");
            }
            Err(err) => {
                tracing::warn!(error = %err, "the renewed TLS certificate could not be loaded; the previous one stays in use");
            }
        }
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
