//! Identity: who is signed in, how they prove it, and how a sign-in ends.
//!
//! A *sign-in* (`sid`) is created by every successful sign-in, from the form or the API. It owns a
//! refresh-token family and the access tokens issued under it; [`signin::end`] revokes them as one.

pub mod backend;
pub mod csrf;
pub mod extract;
pub mod password;
pub mod ratelimit;
pub mod refresh;
pub mod routes;
pub mod signin;
pub mod signout;
pub mod tokens;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub use backend::Backend;
pub use extract::{BearerUser, CurrentUser, MaybeUser};

/// axum-login's session for our backend.
pub type AuthSession = axum_login::AuthSession<Backend>;

/// Session keys Lectern writes beside axum-login's own.
pub const SID_KEY: &str = "lectern.sid";
pub const CSRF_KEY: &str = "lectern.csrf";
pub const TOUCHED_KEY: &str = "lectern.touched";

/// Cookie names (the contract's).
pub const SESSION_COOKIE: &str = "lectern_session";
pub const REFRESH_COOKIE: &str = "lectern_refresh";
pub const REFRESH_PATH: &str = "/api/v1/auth";

/// `bytes` random bytes from the thread's CSPRNG, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The session store did not answer: a 503, never a pass.
pub(crate) fn session_error(
    err: impl std::error::Error + Send + Sync + 'static,
) -> crate::AppError {
    crate::AppError::unavailable(anyhow::Error::new(err).context("session store"))
}

/// axum-login's error, as ours: its session half is the session store not answering.
pub(crate) fn auth_error(err: axum_login::Error<Backend>) -> crate::AppError {
    match err {
        axum_login::Error::Session(e) => session_error(e),
        axum_login::Error::Backend(e) => e,
    }
}

/// Keys derived from `LECTERN_SECRET`, one per purpose, so no two uses share a key.
#[derive(Clone)]
pub struct Keys {
    pub cookie: axum_extra::extract::cookie::Key,
    pub jwt: std::sync::Arc<tokens::JwtKeys>,
    pub csrf: std::sync::Arc<[u8; 32]>,
}

impl Keys {
    pub fn derive(secret: &[u8]) -> anyhow::Result<Self> {
        // The cookie jar wants 64 bytes: a signing half and an encryption half.
        let mut cookie_key = [0u8; 64];
        cookie_key[..32].copy_from_slice(&derive_key(secret, "lectern/cookies/v1/signing")?);
        cookie_key[32..].copy_from_slice(&derive_key(secret, "lectern/cookies/v1/encryption")?);
        let cookie = axum_extra::extract::cookie::Key::from(&cookie_key);
        Ok(Self {
            cookie,
            jwt: std::sync::Arc::new(tokens::JwtKeys::new(&derive_key(secret, "lectern/jwt/v1")?)),
            csrf: std::sync::Arc::new(derive_key(secret, "lectern/csrf/v1")?),
        })
    }
}

impl Keys {
    /// Seals `value` for one `purpose` with AES-GCM (the cookie crate's private jar, keyed from
    /// `LECTERN_SECRET`; the purpose is bound in as associated data): only the server can read or
    /// forge it, and a value sealed for one purpose does not open for another.
    pub fn seal(&self, purpose: &str, value: &str) -> String {
        let mut jar = cookie::CookieJar::new();
        jar.private_mut(&self.cookie)
            .add(cookie::Cookie::new(purpose.to_owned(), value.to_owned()));
        jar.get(purpose)
            .map(|c| c.value().to_owned())
            .unwrap_or_default()
    }

    /// Opens what [`Keys::seal`] sealed for `purpose`; anything else reads as `None`.
    pub fn open(&self, purpose: &str, sealed: &str) -> Option<String> {
        let mut jar = cookie::CookieJar::new();
        jar.add_original(cookie::Cookie::new(purpose.to_owned(), sealed.to_owned()));
        jar.private(&self.cookie)
            .get(purpose)
            .map(|c| c.value().to_owned())
    }
}

/// HMAC-SHA256(secret, label): a 32-byte key for one purpose.
fn derive_key(secret: &[u8], label: &str) -> anyhow::Result<[u8; 32]> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)?;
    mac.update(label.as_bytes());
    Ok(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_secret() {
        let keys = Keys::derive(&[1; 32]).unwrap();
        let sealed = keys.seal("purpose", "session|sid");
        assert!(!sealed.contains("session"));
        assert_eq!(
            keys.open("purpose", &sealed).as_deref(),
            Some("session|sid")
        );
        assert_eq!(keys.open("another purpose", &sealed), None);
        assert_eq!(
            Keys::derive(&[2; 32]).unwrap().open("purpose", &sealed),
            None
        );
        assert_eq!(keys.open("purpose", "forged"), None);
        assert_eq!(keys.open("purpose", &sealed[1..]), None);
    }
}
