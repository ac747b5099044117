//! Lectern's integration suites, one binary. They run against the embedded shape by default and
//! against real Redis and PostgreSQL when `TEST_REDIS_URL` and `TEST_DATABASE_URL` are set.
#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap should fail loudly"
)]

mod account;
mod binary;
mod bound;
mod browser;
mod caching;
mod cluster;
mod courses;
mod faults;
mod helpers;
mod layers;
mod leaving;
mod logout;
mod operators;
mod password;
mod properties;
mod recent;
mod shared;
mod sign_in;
mod sign_up;
mod signals;
mod site;
mod stores;
mod timeouts;
mod tokens;
