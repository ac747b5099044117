//! Liveness and readiness, for load balancers and service managers, and the metrics, for
//! Prometheus (served on their own address, see `app`).

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::{state::AppState, telemetry};

/// `GET /metrics` in the Prometheus text format: the counters so far, and the number of live
/// sign-ins counted now.
pub fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.sign_ins.live(None).await {
        Ok(live) => telemetry::live_sign_ins(live.len()),
        Err(err) => tracing::warn!(error = %err, "live sign-ins could not be counted"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::metrics_handle().render(),
    )
        .into_response()
}

pub fn router() -> Router<AppState> {
    Router::new().route("/readyz", get(readyz))
}

/// `/healthz`: the process answers. Apart from [`router`], as it reads nothing and logs nothing.
pub fn liveness<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database and (if configured) Redis answer, and a Redis Cluster says every slot
/// is served (`cluster_state:ok`); 503 otherwise. On a cluster the body carries what it says of
/// itself.
async fn readyz(State(state): State<AppState>) -> Response {
    let database = crate::db::ping(&state.db).await.is_ok();
    let pinged = state.stores.sign_ins.ping().await.is_ok();
    let cluster = if pinged {
        state.stores.sign_ins.cluster_health().await
    } else {
        Ok(None)
    };
    let store = pinged
        && cluster
            .as_ref()
            .is_ok_and(|c| c.as_ref().is_none_or(|c| c.is_ok()));
    let redis = match (state.stores.redis, store) {
        (false, _) => "not configured",
        (true, true) => "ok",
        (true, false) => "unavailable",
    };
    let status = if database && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if status.is_success() { "ok" } else { "unavailable" },
        "database": if database { "ok" } else { "unavailable" },
        "redis": redis,
    });
    if let Ok(Some(cluster)) = cluster {
        body["cluster"] = json!(cluster);
    }
    (status, Json(body)).into_response()
}
