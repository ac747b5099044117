//! Settings: every one an environment variable and a `lectern serve` flag (the README's table).
//!
//! clap parses each value with the parser named beside it, so a bad value is refused before
//! anything starts; [`Settings::from_args`] then checks the rules that tie settings together.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, builder::BoolishValueParser};
use secrecy::{ExposeSecret, SecretString};

/// The SQLite file used when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://lectern.db?mode=rwc";

/// The raw settings as given on the command line or in the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:3000).
    #[arg(long, env = "LECTERN_ADDR")]
    pub addr: Option<SocketAddr>,
    /// `sqlite://...` (default: the file lectern.db) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", value_parser = database_url)]
    pub database_url: Option<String>,
    /// `redis://...` (or `redis-cluster://host:port?node=host:port`): sessions, revocations and
    /// rate-limit counters move to Redis.
    #[arg(long, env = "REDIS_URL", value_parser = redis_url)]
    pub redis_url: Option<String>,
    /// At least 32 bytes; signs cookies and access tokens.
    #[arg(long, env = "LECTERN_SECRET", hide_env_values = true, value_parser = secret)]
    pub secret: Option<SecretString>,
    /// `true` or `false` (default: true when REDIS_URL is set).
    #[arg(long, env = "LECTERN_SECURE_COOKIES", value_parser = BoolishValueParser::new())]
    pub secure_cookies: Option<bool>,
    /// Access-token lifetime, e.g. `300`, `5m` (default 5 min).
    #[arg(long, env = "LECTERN_ACCESS_TTL", value_parser = lifetime)]
    pub access_ttl: Option<Duration>,
    /// Idle timeout of a browser session (default 30 min).
    #[arg(long, env = "LECTERN_SESSION_IDLE", value_parser = lifetime)]
    pub session_idle: Option<Duration>,
    /// Absolute lifetime of a sign-in (default 12 h).
    #[arg(long, env = "LECTERN_SESSION_ABSOLUTE", value_parser = lifetime)]
    pub session_absolute: Option<Duration>,
    /// Idle timeout of a sign-in on a shared or public computer (default 10 min).
    #[arg(long, env = "LECTERN_SHARED_IDLE", value_parser = lifetime)]
    pub shared_idle: Option<Duration>,
    /// Absolute lifetime of a sign-in on a shared or public computer (default 4 h).
    #[arg(long, env = "LECTERN_SHARED_ABSOLUTE", value_parser = lifetime)]
    pub shared_absolute: Option<Duration>,
    /// A sign-in on a shared computer ends this long after its last open page stopped sending
    /// heartbeats: its browser was closed (default 90 s; at least 5 s).
    #[arg(long, env = "LECTERN_SHARED_CLOSE", value_parser = close_window)]
    pub shared_close: Option<Duration>,
    /// How long before the idle timeout every signed-in page warns (default 2 min).
    #[arg(long, env = "LECTERN_IDLE_WARNING", value_parser = lifetime)]
    pub idle_warning: Option<Duration>,
    /// How recently this sign-in must have entered the password to end other sign-ins, change
    /// the password or delete the account (default 10 min).
    #[arg(long, env = "LECTERN_REAUTH_WINDOW", value_parser = lifetime)]
    pub reauth_window: Option<Duration>,
    /// How long after a rotation the same refresh token still gets an answer (default 10 s; 0: never).
    #[arg(long, env = "LECTERN_REFRESH_GRACE", value_parser = grace)]
    pub refresh_grace: Option<Duration>,
    /// Sign-in, sign-up and refresh attempts a minute per IP (default 30; 0 turns limits off).
    #[arg(long, env = "LECTERN_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// How much of an IPv6 address the rate limits count as one client: its first 64 bits by
    /// default (one host controls a whole /64); 56 or 48 for networks that hand out more.
    #[arg(long, env = "LECTERN_RATE_LIMIT_IPV6_PREFIX", value_parser = clap::value_parser!(u8).range(32..=128))]
    pub rate_limit_ipv6_prefix: Option<u8>,
    /// Reverse proxies in front of Lectern that append to X-Forwarded-For (default 0: use the
    /// peer address, trust no header).
    #[arg(long, env = "LECTERN_TRUSTED_PROXIES", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub trusted_proxies: Option<u8>,
    /// What a sign-out's `Clear-Site-Data` names: `cookies,storage` (default) or `storage`.
    #[arg(long, env = "LECTERN_CLEAR_SITE_DATA", value_parser = clear_site_data)]
    pub clear_site_data: Option<ClearSiteData>,
    /// Serve `GET /metrics` (Prometheus text) on this separate address, e.g. 127.0.0.1:9100
    /// (default: no metrics).
    #[arg(long, env = "LECTERN_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// The prefix of every Redis key Lectern writes (default `lectern:`); several deployments can
    /// share one Redis with prefixes such as `lectern:staging:`.
    #[arg(long, env = "LECTERN_REDIS_KEY_PREFIX", value_parser = key_prefix)]
    pub redis_key_prefix: Option<String>,
    /// The site's public origin, e.g. `https://learn.example.edu`: the Shared Signals issuer and
    /// the origin of its endpoints (default `http://<LECTERN_ADDR>`).
    #[arg(long, env = "LECTERN_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<String>,
    /// Issuer URLs of the Shared Signals transmitters whose events are accepted, separated by
    /// commas (default: none).
    #[arg(long, env = "LECTERN_SSF_TRUST", value_parser = trusted_issuers)]
    pub ssf_trust: Option<TrustedIssuers>,
    /// How long an event for another application is kept for a receiver that does not take it
    /// (default 3 days).
    #[arg(long, env = "LECTERN_SSF_GIVE_UP", value_parser = lifetime)]
    pub ssf_give_up: Option<Duration>,
    /// A PEM certificate chain: with LECTERN_TLS_KEY, serve HTTPS (a renewed file is picked up
    /// without a restart).
    #[arg(long, env = "LECTERN_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of LECTERN_TLS_CERT.
    #[arg(long, env = "LECTERN_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Device-bound sign-ins (DBSC): `on` (the default with TLS) or `off`.
    #[arg(long, env = "LECTERN_DBSC", value_parser = BoolishValueParser::new())]
    pub dbsc: Option<bool>,
    /// How long a device-bound sign-in's short cookie lasts before the browser proves its key
    /// again (default 10 min; at least 5 min).
    #[arg(long, env = "LECTERN_BOUND_TTL", value_parser = bound_ttl)]
    pub bound_ttl: Option<Duration>,
}

/// The issuers `LECTERN_SSF_TRUST` names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedIssuers(pub Vec<String>);

/// Validated settings, shared read-only through the application state.
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
    pub refresh_grace: Duration,
    pub shared_idle: Duration,
    pub shared_absolute: Duration,
    pub shared_close: Duration,
    pub idle_warning: Duration,
    pub reauth_window: Duration,
    pub rate_limit: u32,
    /// The prefix length an IPv6 client is counted by.
    pub rate_limit_ipv6_prefix: u8,
    /// How many proxies' `X-Forwarded-For` entries to trust (0: none).
    pub trusted_proxies: usize,
    pub clear_site_data: ClearSiteData,
    /// Prefix of every Redis key Lectern writes; tests give each app its own.
    pub key_prefix: String,
    /// Where `GET /metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// The public origin, without a trailing slash.
    pub public_url: String,
    /// The Shared Signals transmitters whose events are accepted.
    pub ssf_trust: Vec<String>,
    pub ssf_give_up: Duration,
    /// The certificate and key HTTPS is served with, when it is.
    pub tls: Option<Tls>,
    /// Whether browser sign-ins are offered device binding (DBSC).
    pub dbsc: bool,
    pub bound_ttl: Duration,
}

/// Where the certificate and key are.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
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

impl Settings {
    /// Applies defaults and the rules that tie settings together.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let redis_url = args.redis_url.clone();
        let (secret, secret_generated) = match &args.secret {
            Some(secret) => (secret.clone(), false),
            None if redis_url.is_some() => {
                return Err(invalid(
                    "LECTERN_SECRET",
                    "required when REDIS_URL is set (instances must share it)",
                ));
            }
            None => (SecretString::from(crate::crypto::random_token(48)), true),
        };
        let session_idle = args.session_idle.unwrap_or(Duration::from_secs(30 * 60));
        let session_absolute = args
            .session_absolute
            .unwrap_or(Duration::from_secs(12 * 3600));
        if session_idle > session_absolute {
            return Err(invalid(
                "LECTERN_SESSION_IDLE",
                "must not be longer than LECTERN_SESSION_ABSOLUTE",
            ));
        }
        let shared_idle = args.shared_idle.unwrap_or(Duration::from_secs(10 * 60));
        let shared_absolute = args
            .shared_absolute
            .unwrap_or(Duration::from_secs(4 * 3600));
        if shared_idle > shared_absolute {
            return Err(invalid(
                "LECTERN_SHARED_IDLE",
                "must not be longer than LECTERN_SHARED_ABSOLUTE",
            ));
        }
        let addr = args
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000)));
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(Tls {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid("LECTERN_TLS_KEY", "required with LECTERN_TLS_CERT"));
            }
            (None, Some(_)) => {
                return Err(invalid("LECTERN_TLS_CERT", "required with LECTERN_TLS_KEY"));
            }
        };
        let dbsc = args.dbsc.unwrap_or(tls.is_some());
        let scheme = if tls.is_some() { "https" } else { "http" };
        // A shared computer's limits are never longer than everyone's.
        let shared_idle = shared_idle.min(session_idle);
        let shared_absolute = shared_absolute.min(session_absolute);
        let idle_warning = match args.idle_warning {
            Some(warning) if warning >= shared_idle => {
                return Err(invalid(
                    "LECTERN_IDLE_WARNING",
                    "must be shorter than LECTERN_SESSION_IDLE and LECTERN_SHARED_IDLE",
                ));
            }
            Some(warning) => warning,
            // Two minutes, or half the shortest idle timeout when that is shorter.
            None => Duration::from_secs(120).min(shared_idle / 2),
        };
        Ok(Self {
            addr,
            database_url: args
                .database_url
                .clone()
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            secure_cookies: args
                .secure_cookies
                .unwrap_or(redis_url.is_some() || tls.is_some()),
            redis_url,
            secret,
            secret_generated,
            access_ttl: args.access_ttl.unwrap_or(Duration::from_secs(300)),
            session_idle,
            session_absolute,
            refresh_grace: args.refresh_grace.unwrap_or(Duration::from_secs(10)),
            shared_idle,
            shared_absolute,
            shared_close: args.shared_close.unwrap_or(Duration::from_secs(90)),
            idle_warning,
            reauth_window: args.reauth_window.unwrap_or(Duration::from_secs(600)),
            rate_limit: args.rate_limit.unwrap_or(30),
            rate_limit_ipv6_prefix: args.rate_limit_ipv6_prefix.unwrap_or(64),
            trusted_proxies: usize::from(args.trusted_proxies.unwrap_or(0)),
            clear_site_data: args.clear_site_data.unwrap_or_default(),
            key_prefix: args
                .redis_key_prefix
                .clone()
                .unwrap_or_else(|| "lectern:".to_owned()),
            metrics_addr: args.metrics_addr,
            public_url: args
                .public_url
                .clone()
                .unwrap_or_else(|| format!("{scheme}://{addr}")),
            ssf_trust: args.ssf_trust.clone().unwrap_or_default().0,
            ssf_give_up: args
                .ssf_give_up
                .unwrap_or(Duration::from_secs(3 * 24 * 3600)),
            tls,
            dbsc,
            bound_ttl: args.bound_ttl.unwrap_or(Duration::from_secs(600)),
        })
    }

    /// The secret's bytes, for key derivation only.
    pub fn secret_bytes(&self) -> &[u8] {
        self.secret.expose_secret().as_bytes()
    }
}

/// What a sign-out asks the browser to clear. `"cookies"` clears every cookie of the registrable
/// domain, subdomains included, so a site sharing its domain with others names only `storage`
/// (the auth cookies are then expired one by one, as they always are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClearSiteData {
    pub cookies: bool,
    pub storage: bool,
}

impl Default for ClearSiteData {
    fn default() -> Self {
        Self {
            cookies: true,
            storage: true,
        }
    }
}

impl ClearSiteData {
    /// The header value, e.g. `"cookies", "storage"`.
    pub fn header_value(self) -> String {
        let mut parts = Vec::new();
        if self.cookies {
            parts.push("\"cookies\"");
        }
        if self.storage {
            parts.push("\"storage\"");
        }
        parts.join(", ")
    }
}

fn clear_site_data(raw: &str) -> Result<ClearSiteData, String> {
    let mut value = ClearSiteData {
        cookies: false,
        storage: false,
    };
    for part in raw.split(',').map(|p| p.trim().trim_matches('"')) {
        match part.to_ascii_lowercase().as_str() {
            "cookies" => value.cookies = true,
            "storage" => value.storage = true,
            "cache" => {
                return Err(
                    "\"cache\" is not offered: it stalls Chromium's sign-out for seconds".into(),
                );
            }
            _ => return Err("expected cookies,storage or storage".into()),
        }
    }
    Ok(value)
}

fn database_url(raw: &str) -> Result<String, String> {
    let ok = ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| raw.starts_with(scheme));
    ok.then(|| raw.to_owned())
        .ok_or_else(|| "expected a sqlite: or postgres:// URL".into())
}

fn key_prefix(raw: &str) -> Result<String, String> {
    let ok = raw.starts_with("lectern:")
        && raw.ends_with(':')
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_'));
    ok.then(|| raw.to_owned()).ok_or_else(|| {
        "expected `lectern:` or a longer prefix such as `lectern:staging:` (letters, digits, - _ :)"
            .into()
    })
}

fn redis_url(raw: &str) -> Result<String, String> {
    let schemes = [
        "redis://",
        "rediss://",
        "redis-cluster://",
        "rediss-cluster://",
        "redis-sentinel://",
        "rediss-sentinel://",
    ];
    let ok = schemes.iter().any(|scheme| raw.starts_with(scheme));
    ok.then(|| raw.to_owned())
        .ok_or_else(|| "expected a redis://, rediss:// or redis-cluster:// URL".into())
}

/// An origin (`https://host[:port]`, or `http://`), or an origin with a path; no query, no
/// fragment, no trailing slash kept.
fn origin_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw.trim())
        .map_err(|_| "expected a URL such as https://learn.example.edu".to_owned())?;
    let fine = matches!(url.scheme(), "https" | "http")
        && url.host().is_some()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !fine {
        return Err("expected an http(s) URL without a query, fragment or credentials".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The public origin: scheme, host and port, no path (Lectern is served at the root).
fn public_url(raw: &str) -> Result<String, String> {
    let url = origin_url(raw)?;
    let parsed = url::Url::parse(&url).map_err(|e| e.to_string())?;
    if parsed.path() != "/" {
        return Err("expected an origin such as https://learn.example.edu, without a path".into());
    }
    Ok(url)
}

fn trusted_issuers(raw: &str) -> Result<TrustedIssuers, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(origin_url)
        .collect::<Result<Vec<_>, _>>()
        .map(TrustedIssuers)
}

fn secret(raw: &str) -> Result<SecretString, String> {
    (raw.len() >= 32)
        .then(|| SecretString::from(raw.to_owned()))
        .ok_or_else(|| "must be at least 32 bytes".into())
}

/// Whole seconds (`300`) or a human duration (`5m`, `12h`, `90s`).
fn duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let parsed = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw)
            .map_err(|_| "expected a duration such as 300, 5m or 12h".to_owned())?,
    };
    if parsed > Duration::from_secs(366 * 24 * 3600) {
        return Err("must be at most a year".into());
    }
    Ok(Duration::from_secs(parsed.as_secs()))
}

/// A lifetime: at least one second.
fn lifetime(raw: &str) -> Result<Duration, String> {
    let parsed = duration(raw)?;
    if parsed < Duration::from_secs(1) {
        return Err("must be at least one second".into());
    }
    Ok(parsed)
}

/// The close window of a shared computer's sign-in: at least five seconds, so a page's
/// heartbeats (three to a window) are not too frequent.
fn close_window(raw: &str) -> Result<Duration, String> {
    let parsed = duration(raw)?;
    if parsed < Duration::from_secs(5) {
        return Err("must be at least 5 seconds".into());
    }
    Ok(parsed)
}

/// A bound cookie's lifetime: at least five minutes (a browser proves its key again each time).
fn bound_ttl(raw: &str) -> Result<Duration, String> {
    let parsed = duration(raw)?;
    if parsed < Duration::from_secs(300) {
        return Err("must be at least 5 minutes".into());
    }
    Ok(parsed)
}

/// A grace window: zero turns it off; at most a minute, since it widens what a stolen token buys.
fn grace(raw: &str) -> Result<Duration, String> {
    let parsed = duration(raw)?;
    if parsed > Duration::from_secs(60) {
        return Err("must be at most 60 seconds".into());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(flags: &[&str]) -> Result<Settings, String> {
        let probe = Probe::try_parse_from(std::iter::once("lectern").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?;
        Settings::from_args(&probe.args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_embedded_shape() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert!(s.redis_url.is_none() && s.secret_generated && !s.secure_cookies);
        assert_eq!(s.access_ttl, Duration::from_secs(300));
        assert_eq!(s.session_idle, Duration::from_secs(1800));
        assert_eq!(s.session_absolute, Duration::from_secs(43200));
        assert_eq!(s.refresh_grace, Duration::from_secs(10));
        assert_eq!(s.rate_limit, 30);
        assert_eq!(s.clear_site_data, ClearSiteData::default());
        assert_eq!(s.shared_idle, Duration::from_secs(600));
        assert_eq!(s.shared_absolute, Duration::from_secs(4 * 3600));
        assert_eq!(s.shared_close, Duration::from_secs(90));
        assert_eq!(s.idle_warning, Duration::from_secs(120));
        assert_eq!(s.reauth_window, Duration::from_secs(600));
        assert_eq!(s.public_url, "http://127.0.0.1:3000");
        assert!(s.ssf_trust.is_empty());
    }

    #[test]
    fn public_and_trusted_urls_lose_their_trailing_slash() {
        let s = parse(&[
            "--public-url",
            "https://learn.example.edu/",
            "--ssf-trust",
            "https://idp.example.edu/, https://sso.example.org/tenant/",
        ])
        .unwrap();
        assert_eq!(s.public_url, "https://learn.example.edu");
        assert_eq!(
            s.ssf_trust,
            ["https://idp.example.edu", "https://sso.example.org/tenant"]
        );
    }

    #[test]
    fn redis_without_secret_is_refused_and_names_the_variable() {
        let err = parse(&["--redis-url", "redis://127.0.0.1:6379"]).unwrap_err();
        assert!(err.starts_with("LECTERN_SECRET:"), "{err}");
    }

    #[test]
    fn redis_turns_secure_cookies_on_by_default() {
        let secret = "x".repeat(32);
        let on = ["--redis-url", "redis://127.0.0.1:6379", "--secret", &secret];
        assert!(parse(&on).unwrap().secure_cookies);
        let mut off = on.to_vec();
        off.extend(["--secure-cookies", "off"]);
        assert!(!parse(&off).unwrap().secure_cookies);
    }

    #[test]
    fn a_cluster_url_is_accepted() {
        let secret = "x".repeat(32);
        let url = "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001";
        let s = parse(&["--redis-url", url, "--secret", &secret]).unwrap();
        assert_eq!(s.redis_url.as_deref(), Some(url));
    }

    #[test]
    fn bad_values_are_refused() {
        for flags in [
            ["--secret", "short"],
            ["--access-ttl", "soon"],
            ["--access-ttl", "0"],
            ["--rate-limit", "-1"],
            ["--addr", "nowhere"],
            ["--database-url", "mysql://x"],
            ["--secure-cookies", "maybe"],
            ["--trusted-proxies", "11"],
            ["--refresh-grace", "5m"],
            ["--clear-site-data", "cache"],
            ["--clear-site-data", "everything"],
            ["--shared-close", "4s"],
            ["--reauth-window", "0"],
            ["--public-url", "learn.example.edu"],
            ["--public-url", "https://learn.example.edu/?x=1"],
            ["--public-url", "https://example.edu/learn"],
            ["--ssf-trust", "https://idp.example.edu,ftp://x"],
            ["--idle-warning", "30m"],
            ["--bound-ttl", "1m"],
            ["--tls-cert", "cert.pem"],
            ["--dbsc", "sometimes"],
        ] {
            assert!(parse(&flags).is_err(), "{flags:?}");
        }
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        let s = parse(&[
            "--access-ttl",
            "90",
            "--session-idle",
            "10m",
            "--session-absolute",
            "2h",
            "--refresh-grace",
            "0",
        ])
        .unwrap();
        assert_eq!(s.access_ttl.as_secs(), 90);
        assert_eq!(s.session_idle.as_secs(), 600);
        assert_eq!(s.session_absolute.as_secs(), 7200);
        assert_eq!(s.refresh_grace.as_secs(), 0);
    }

    #[test]
    fn clear_site_data_can_leave_cookies_alone() {
        let s = parse(&["--clear-site-data", "storage"]).unwrap();
        assert_eq!(s.clear_site_data.header_value(), "\"storage\"");
        assert_eq!(
            ClearSiteData::default().header_value(),
            "\"cookies\", \"storage\""
        );
    }
}
