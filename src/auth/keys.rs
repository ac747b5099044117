//! Keys derived from `LECTERN_SECRET`, one per purpose, and sealing (authenticated encryption)
//! of small values only the server may read.

use std::sync::Arc;

use axum_extra::extract::cookie::Key;

use crate::crypto::derive_key;

#[derive(Clone)]
pub struct Keys {
    /// Signs the refresh cookie and seals values (the cookie crate's signed and private jars).
    pub cookie: Key,
    /// Signs visitors' stateless CSRF tokens.
    pub csrf: Arc<[u8; 32]>,
    /// Signs access tokens.
    pub jwt: Arc<[u8; 32]>,
}

impl Keys {
    pub fn derive(secret: &[u8]) -> Self {
        // The cookie jar wants 64 bytes: a signing half and an encryption half.
        let mut cookie_key = [0u8; 64];
        cookie_key[..32].copy_from_slice(&derive_key(secret, "lectern/cookies/v1/signing"));
        cookie_key[32..].copy_from_slice(&derive_key(secret, "lectern/cookies/v1/encryption"));
        Self {
            cookie: Key::from(&cookie_key),
            csrf: Arc::new(derive_key(secret, "lectern/csrf/v1")),
            jwt: Arc::new(derive_key(secret, "lectern/jwt/v1")),
        }
    }

    /// Seals `value` for one `purpose` with AES-GCM (the cookie crate's private jar; the purpose
    /// is bound in as associated data): only the server can read or forge it, and a value sealed
    /// for one purpose does not open for another.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_secret_and_purpose() {
        let keys = Keys::derive(&[1; 32]);
        let sealed = keys.seal("purpose", "session|sid");
        assert!(!sealed.contains("session"));
        assert_eq!(
            keys.open("purpose", &sealed).as_deref(),
            Some("session|sid")
        );
        assert_eq!(keys.open("another purpose", &sealed), None);
        assert_eq!(Keys::derive(&[2; 32]).open("purpose", &sealed), None);
        assert_eq!(keys.open("purpose", "forged"), None);
        assert_eq!(keys.open("purpose", &sealed[1..]), None);
    }
}
