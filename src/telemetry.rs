//! What Lectern tells operators: structured logs with `tracing` (auth events are fields; secrets
//! never are) and counters in the Prometheus text format, served on `LECTERN_METRICS_ADDR` only.
//!
//! Metrics go through the `metrics` facade into one process-wide Prometheus recorder; each
//! function below is one thing the README's metrics table names.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, fmt::MakeWriter};

/// The default log filter of the server. The session and login layers open a span of their own
/// on every request at `info` (the login one naming the learner, whom Lectern's audit lines name
/// too); below `warn` they are left out, so no request pays for them. Their warnings and errors
/// still log, inside Lectern's request span (method, route, request id).
pub const SERVER_LOGS: &str = "info,tower_http=info,sqlx=warn,fred=warn,\
                               tower_sessions=warn,tower_sessions_core=warn,axum_login=warn";

/// Installs the global subscriber once, with `default` as the filter unless `RUST_LOG` says
/// otherwise (the server logs at `info`; a one-shot command logs nothing, so its output and its
/// one-line failure are all it prints).
pub fn init(default: &str) {
    // To standard error, so a command's output (`--json`) is only its answer; coloured only on
    // a terminal (and not when `NO_COLOR` is set), so a log file or the journal holds plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    init_with(default, std::io::stderr, ansi);
}

/// [`init`], writing to `writer` (the benchmark logs as the server does, into a sink). A second
/// call (tests) is harmless: the first subscriber stays.
pub fn init_with<W>(default: &str, writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer)
        .try_init();
}

/// Latency buckets for the revocation check, in seconds: 50 µs to 1 s.
const CHECK_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The process's recorder, installed the first time it is asked for (several apps in one test
/// process share it; counters only grow, so tests read differences).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(REVOCATION_CHECK.to_owned()),
                    CHECK_BUCKETS,
                )
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(SSF_DELIVERY.to_owned()),
                        DELIVERY_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder already installed (never in Lectern) leaves ours unfed, not broken.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

const REVOCATION_CHECK: &str = "lectern_revocation_check_seconds";
/// How long after its ending an event reached its push receiver (see `crate::ssf`).
pub const SSF_DELIVERY: &str = "lectern_ssf_delivery_seconds";

/// Buckets for event delivery, in seconds: at once to days.
const DELIVERY_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21_600.0, 86_400.0, 259_200.0,
];

/// A sign-in started (`browser` or `api`).
pub fn sign_in_started(kind: &'static str) {
    counter!("lectern_sign_ins_total", "kind" => kind).increment(1);
}

/// A revocation no replica confirmed in time (it stands on its master only).
pub fn revocation_unconfirmed() {
    counter!("lectern_revocations_unconfirmed_total").increment(1);
}

/// A sign-in attempt with wrong credentials.
pub fn sign_in_failed() {
    counter!("lectern_failed_sign_ins_total").increment(1);
}

/// A learner's or client's sign-out request: how far it reached and why its sign-ins ended.
pub fn signed_out(scope: &'static str, reason: &'static str) {
    counter!("lectern_sign_outs_total", "scope" => scope, "reason" => reason).increment(1);
}

/// A sign-in ended, by why: `signed_out` when the learner asked, anything else when the system
/// (a timeout, a reused refresh token, a password change, another device or an operator) did.
pub fn sign_in_ended(reason: &'static str) {
    counter!("lectern_sign_ins_ended_total", "reason" => reason).increment(1);
}

/// A device-bound sign-in's request refused: `cookie` (its session cookie came without a valid
/// bound cookie: a copy, or a browser that lost its key) or `proof` (a refresh that did not
/// prove the key).
pub fn bound_refused(what: &'static str) {
    counter!("lectern_bound_refused_total", "what" => what).increment(1);
}

/// A request refused by a rate limit.
pub fn rate_limited(limit: &'static str) {
    counter!("lectern_rate_limited_total", "limit" => limit).increment(1);
}

/// A used refresh token presented again after its grace window.
pub fn refresh_reuse_detected() {
    counter!("lectern_refresh_reuse_detected_total").increment(1);
}

/// How long one bearer token's revocation check took.
pub fn revocation_checked(seconds: f64) {
    histogram!(REVOCATION_CHECK).record(seconds);
}

/// The number of live sign-ins, counted when metrics are scraped.
pub fn live_sign_ins(count: usize) {
    gauge!("lectern_live_sign_ins").set(count as f64);
}
