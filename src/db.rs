//! The database: SQLite (embedded default) or PostgreSQL, behind sqlx's `Any` driver so one set of
//! queries serves both. Only text, integers and nulls cross the driver: ids are text, times are
//! unix seconds.

use std::time::Duration;

use anyhow::Context;
use sqlx::any::AnyPoolOptions;

/// The connection pool every query goes through.
pub type Pool = sqlx::AnyPool;

/// A pooled connection that sat idle this long is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Connects to `url` (`sqlite:` or `postgres://`).
///
/// A connection is pinged before use only when it sat idle for [`PING_AFTER_IDLE`] (sqlx's
/// default pings before every use, a second round trip for every query): under load connections
/// come back within milliseconds, and one the server dropped meanwhile (a restart) fails its
/// query with a 503, after which the pool replaces it.
pub async fn connect(url: &str) -> anyhow::Result<Pool> {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    let pool = AnyPoolOptions::new()
        // SQLite has one writer at a time; a small pool avoids lock contention.
        .max_connections(if sqlite { 4 } else { 10 })
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect(url)
        .await
        .with_context(|| format!("cannot open the database ({})", redact(url)))?;
    if sqlite {
        // WAL lets page views read while a sign-in writes; it is a property of the file.
        sqlx::query("pragma journal_mode = wal")
            .execute(&pool)
            .await
            .context("setting SQLite's journal mode")?;
    }
    Ok(pool)
}

/// Applies the migrations in `migrations/` (the same SQL runs on both databases).
pub async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations")
        .run(pool)
        .await
        .context("applying database migrations")
}

/// Readiness: one round trip.
pub async fn ping(pool: &Pool) -> anyhow::Result<()> {
    sqlx::query("select 1").execute(pool).await?;
    Ok(())
}

/// Drops a password from a URL before it is printed.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
