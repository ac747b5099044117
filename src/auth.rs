//! Identity: how learners prove who they are, what a sign-in is, and how it ends.
//!
//! A *sign-in* (`sid`) is created by every successful sign-in, from the form or the API. It owns
//! a refresh-token family and the access tokens issued under it; a browser sign-in is held by a
//! browser session, whose *session record* tower-sessions keeps. [`sign_ins`] is its life,
//! [`records`] its rows, [`sign_out`] the one way every sign-in ends, and [`ledger`] what keeps an
//! ending ended whatever happens to Redis.

pub mod access_tokens;
pub mod backend;
pub mod bound;
pub mod csrf;
pub mod establish;
pub mod extract;
pub mod guards;
pub mod keys;
pub mod leaving;
pub mod ledger;
pub mod password_change;
pub mod passwords;
pub mod presented;
pub mod rate_limit;
pub mod recent;
pub mod records;
pub mod refresh_tokens;
pub mod sign_ins;
pub mod sign_out;

pub use access_tokens::AccessTokens;
pub use backend::Backend;
pub use extract::{BearerUser, CurrentUser, MaybeUser, Viewer};
pub use keys::Keys;
pub use sign_ins::SignIns;
pub use sign_out::SignOut;

/// axum-login's session for our backend.
pub type AuthSession = axum_login::AuthSession<Backend>;

/// Where axum-login keeps the signed-in learner in a session record.
pub const AUTH_DATA_KEY: &str = "axum-login.data";
/// A one-time notice for the next page the session shows (then removed).
pub const NOTICE_KEY: &str = "lectern.notice";

/// axum-login's error, as ours: its session half is the session store not answering.
pub(crate) fn auth_error(err: axum_login::Error<Backend>) -> crate::error::AppError {
    match err {
        axum_login::Error::Session(e) => crate::store::session_records::unavailable(e),
        axum_login::Error::Backend(e) => e,
    }
}
