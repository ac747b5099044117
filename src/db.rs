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
    match open(url).await {
        Err(err) if missing_database(&err) => {
            create_database(url).await?;
            open(url).await
        }
        opened => opened,
    }
    .map_err(|err| {
        anyhow::anyhow!(
            "cannot open the database {}: {}",
            redact(url),
            describe(&err)
        )
    })
}

/// Whether PostgreSQL says the database does not exist (SQLSTATE 3D000).
fn missing_database(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000"))
}

/// A database error in one plain line: the server's message (sqlx's own text adds where in the
/// server's source it was raised, twice).
fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// Creates the PostgreSQL database `url` names, from the server's `postgres` database, as
/// `createdb` would. Another instance creating it at the same moment is fine.
async fn create_database(url: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let parsed = url::Url::parse(url).context("DATABASE_URL is not a URL")?;
    let name = parsed.path().trim_start_matches('/').to_owned();
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !plain {
        anyhow::bail!(
            "the database {} does not exist; create it first (createdb)",
            redact(url)
        );
    }
    let mut server = parsed.clone();
    server.set_path("/postgres");
    let mut conn = sqlx::PgConnection::connect(server.as_str())
        .await
        .map_err(|err| anyhow::anyhow!("{}", describe(&err)))?;
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
        .execute(&mut conn)
        .await;
    match created {
        Ok(_) => {
            tracing::info!(database = %name, "created the database, which did not exist");
            Ok(())
        }
        // Already there (42P04), or created by another instance at the same moment, which
        // PostgreSQL reports as a unique violation in its catalog (23505).
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("42P04" | "23505")) =>
        {
            Ok(())
        }
        Err(err) => anyhow::bail!(
            "the database {} does not exist and could not be created ({}); create it with createdb",
            redact(url),
            describe(&err)
        ),
    }
}

async fn open(url: &str) -> Result<Pool, sqlx::Error> {
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
        .await?;
    if sqlite {
        // WAL lets page views read while a sign-in writes; it is a property of the file.
        sqlx::query("pragma journal_mode = wal")
            .execute(&pool)
            .await?;
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
