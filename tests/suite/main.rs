//! Lectern's integration suites, one binary. They run against the embedded shape by default and
//! against real Redis and PostgreSQL when `TEST_REDIS_URL` and `TEST_DATABASE_URL` are set.
#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap should fail loudly"
)]

mod binary;
mod browser;
mod cluster;
mod foundation;
mod helpers;
mod layers;
mod logout;
mod properties;
mod sessions;
mod stores;
mod tokens;
