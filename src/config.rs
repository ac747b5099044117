//! Settings: every one an environment variable and a `lectern serve` flag (see the README's table).
//!
//! Raw values arrive as strings so that each error can name the variable it came from.

use std::{net::SocketAddr, time::Duration};

use clap::Args;
use secrecy::{ExposeSecret, SecretString};

/// The SQLite file used when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://lectern.db?mode=rwc";

/// The raw settings as given on the command line or in the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LECTERN_ADDR")]
    pub addr: Option<String>,
    /// `sqlite://...` (default: the file lectern.db) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// `redis://...`: sessions, revocations and rate-limit counters move to Redis.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// At least 32 bytes; signs cookies and access tokens.
    #[arg(long, env = "LECTERN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// `true` or `false` (default: true when REDIS_URL is set).
    #[arg(long, env = "LECTERN_SECURE_COOKIES")]
    pub secure_cookies: Option<String>,
    /// Access-token lifetime, e.g. `300`, `5m` (default 5 min).
    #[arg(long, env = "LECTERN_ACCESS_TTL")]
    pub access_ttl: Option<String>,
    /// Idle timeout of a browser session (default 30 min).
    #[arg(long, env = "LECTERN_SESSION_IDLE")]
    pub session_idle: Option<String>,
    /// Absolute lifetime of a sign-in (default 12 h).
    #[arg(long, env = "LECTERN_SESSION_ABSOLUTE")]
    pub session_absolute: Option<String>,
    /// Sign-in, sign-up and refresh attempts a minute per IP (default 30; 0 turns limits off).
    #[arg(long, env = "LECTERN_RATE_LIMIT")]
    pub rate_limit: Option<String>,
    /// Reverse proxies in front of Lectern that append to X-Forwarded-For (default 0: use the
    /// peer address, trust no header).
    #[arg(long, env = "LECTERN_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
}

/// Validated settings, shared read-only through `AppState`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub database_url: String,
    pub redis_url: Option<String>,
    pub secret: SecretString,
    /// True when no secret was given and one was generated for this process.
    pub secret_generated: bool,
    pub secure_cookies: bool,
    pub access_ttl: Duration,
    pub session_idle: Duration,
    pub session_absolute: Duration,
    pub rate_limit: u32,
    /// How many proxies' `X-Forwarded-For` entries to trust (0: none).
    pub trusted_proxies: usize,
    /// Prefix of every Redis key Lectern writes; tests give each app its own.
    pub key_prefix: String,
}

/// A configuration error: one line naming the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn invalid(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// Treats an empty value like an unset one.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl Settings {
    /// Validates raw settings; the first bad value stops start-up.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let addr = given(&args.addr)
            .unwrap_or("127.0.0.1:3000")
            .parse::<SocketAddr>()
            .map_err(|_| invalid("LECTERN_ADDR", "expected host:port such as 127.0.0.1:3000"))?;
        let database_url = given(&args.database_url)
            .unwrap_or(DEFAULT_DATABASE_URL)
            .to_owned();
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "DATABASE_URL",
                "expected a sqlite: or postgres:// URL",
            ));
        }
        let redis_url = given(&args.redis_url).map(str::to_owned);
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(invalid("REDIS_URL", "expected a redis:// or rediss:// URL"));
        }
        let (secret, secret_generated) = match given(&args.secret) {
            Some(s) if s.len() >= 32 => (SecretString::from(s.to_owned()), false),
            Some(_) => return Err(invalid("LECTERN_SECRET", "must be at least 32 bytes")),
            None if redis_url.is_some() => {
                return Err(invalid(
                    "LECTERN_SECRET",
                    "required when REDIS_URL is set (instances must share it)",
                ));
            }
            None => (SecretString::from(crate::auth::random_token(48)), true),
        };
        let secure_cookies = match given(&args.secure_cookies) {
            None => redis_url.is_some(),
            Some(v) => parse_bool(v)
                .ok_or_else(|| invalid("LECTERN_SECURE_COOKIES", "expected true or false"))?,
        };
        let access_ttl = duration("LECTERN_ACCESS_TTL", &args.access_ttl, 300)?;
        let session_idle = duration("LECTERN_SESSION_IDLE", &args.session_idle, 30 * 60)?;
        let session_absolute = duration(
            "LECTERN_SESSION_ABSOLUTE",
            &args.session_absolute,
            12 * 3600,
        )?;
        if session_idle > session_absolute {
            return Err(invalid(
                "LECTERN_SESSION_IDLE",
                "must not be longer than LECTERN_SESSION_ABSOLUTE",
            ));
        }
        let rate_limit = match given(&args.rate_limit) {
            None => 30,
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| invalid("LECTERN_RATE_LIMIT", "expected a whole number (0 = off)"))?,
        };
        let trusted_proxies = match given(&args.trusted_proxies) {
            None => 0,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= 10)
                .ok_or_else(|| {
                    invalid(
                        "LECTERN_TRUSTED_PROXIES",
                        "expected a number of proxies from 0 to 10",
                    )
                })?,
        };
        Ok(Self {
            addr,
            database_url,
            redis_url,
            secret,
            secret_generated,
            secure_cookies,
            access_ttl,
            session_idle,
            session_absolute,
            rate_limit,
            trusted_proxies,
            key_prefix: "lectern:".to_owned(),
        })
    }

    /// The secret's bytes, for key derivation only.
    pub(crate) fn secret_bytes(&self) -> &[u8] {
        self.secret.expose_secret().as_bytes()
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Whole seconds (`300`) or a human duration (`5m`, `12h`, `90s`); at least one second.
fn duration(
    var: &'static str,
    value: &Option<String>,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    let Some(raw) = given(value) else {
        return Ok(Duration::from_secs(default_secs));
    };
    let parsed = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw)
            .map_err(|_| invalid(var, "expected a duration such as 300, 5m or 12h"))?,
    };
    if parsed < Duration::from_secs(1) || parsed > Duration::from_secs(366 * 24 * 3600) {
        return Err(invalid(var, "must be between 1 second and a year"));
    }
    Ok(Duration::from_secs(parsed.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs::default()
    }

    #[test]
    fn defaults_are_the_embedded_shape() {
        let s = Settings::from_args(&args()).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert!(s.redis_url.is_none() && s.secret_generated && !s.secure_cookies);
        assert_eq!(s.access_ttl, Duration::from_secs(300));
        assert_eq!(s.session_idle, Duration::from_secs(1800));
        assert_eq!(s.session_absolute, Duration::from_secs(43200));
        assert_eq!(s.rate_limit, 30);
    }

    #[test]
    fn redis_without_secret_is_refused_and_names_the_variable() {
        let mut a = args();
        a.redis_url = Some("redis://127.0.0.1:6379".into());
        let err = Settings::from_args(&a).unwrap_err();
        assert_eq!(err.var, "LECTERN_SECRET");
    }

    #[test]
    fn redis_turns_secure_cookies_on_by_default() {
        let mut a = args();
        a.redis_url = Some("redis://127.0.0.1:6379".into());
        a.secret = Some("x".repeat(32));
        assert!(Settings::from_args(&a).unwrap().secure_cookies);
        a.secure_cookies = Some("false".into());
        assert!(!Settings::from_args(&a).unwrap().secure_cookies);
    }

    #[test]
    fn bad_values_name_their_variable() {
        type Case = (fn(&mut ServeArgs), &'static str);
        let cases: [Case; 6] = [
            (|a| a.secret = Some("short".into()), "LECTERN_SECRET"),
            (|a| a.access_ttl = Some("soon".into()), "LECTERN_ACCESS_TTL"),
            (|a| a.rate_limit = Some("-1".into()), "LECTERN_RATE_LIMIT"),
            (|a| a.addr = Some("nowhere".into()), "LECTERN_ADDR"),
            (
                |a| a.database_url = Some("mysql://x".into()),
                "DATABASE_URL",
            ),
            (
                |a| a.secure_cookies = Some("maybe".into()),
                "LECTERN_SECURE_COOKIES",
            ),
        ];
        for (set, var) in cases {
            let mut a = args();
            set(&mut a);
            assert_eq!(Settings::from_args(&a).unwrap_err().var, var);
        }
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        let mut a = args();
        a.access_ttl = Some("90".into());
        a.session_idle = Some("10m".into());
        a.session_absolute = Some("2h".into());
        let s = Settings::from_args(&a).unwrap();
        assert_eq!(s.access_ttl.as_secs(), 90);
        assert_eq!(s.session_idle.as_secs(), 600);
        assert_eq!(s.session_absolute.as_secs(), 7200);
    }
}
