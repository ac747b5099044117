//! Liveness and readiness, for load balancers and service managers.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database and (if configured) Redis answer; 503 otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    let database = crate::db::ping(&state.db).await.is_ok();
    let store = state.stores.sign_ins.ping().await.is_ok();
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
    let body = json!({
        "status": if status.is_success() { "ok" } else { "unavailable" },
        "database": if database { "ok" } else { "unavailable" },
        "redis": redis,
    });
    (status, Json(body)).into_response()
}
