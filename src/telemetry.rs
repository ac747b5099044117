//! Structured logging with `tracing`. Auth events are fields; secrets never are.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber once; `RUST_LOG` overrides the default level.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,sqlx=warn,fred=warn"));
    // A second call (tests) is harmless: the first subscriber stays.
    let _ = fmt().with_env_filter(filter).with_target(false).try_init();
}
