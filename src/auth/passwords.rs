//! Password hashing with argon2id, off the async threads and with bounded concurrency, so a flood
//! of sign-ins queues for hashing instead of starving page views. The caller's tracing span is
//! carried into the blocking task.

use std::sync::Arc;

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::SaltString,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::error::{AppError, Result};

/// The hasher every sign-up and sign-in goes through.
#[derive(Clone)]
pub struct Passwords {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// Verified against when the email is unknown, so timing does not reveal which emails exist.
    dummy_hash: Arc<str>,
}

impl Passwords {
    /// OWASP's baseline for argon2id: m = 19 MiB, t = 2, p = 1. `concurrency` hashes at a time.
    pub fn new(concurrency: usize) -> anyhow::Result<Self> {
        let params = Params::new(19 * 1024, 2, 1, None).context("argon2 parameters")?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let dummy_hash = argon2
            .hash_password(b"lectern dummy password, never used", &salt)
            .map_err(|e| anyhow::anyhow!("hashing the dummy password: {e}"))?
            .to_string();
        Ok(Self {
            argon2,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Hashes a new password into a PHC string.
    #[tracing::instrument(name = "password.hash", skip_all)]
    pub async fn hash(&self, password: SecretString) -> Result<String> {
        let argon2 = self.argon2.clone();
        self.run(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            argon2
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AppError::Unexpected(anyhow::anyhow!("hashing a password: {e}")))
        })
        .await
    }

    /// Verifies `password` against `hash`, or against the dummy hash when there is no account,
    /// taking the same time either way. Only `Some(hash)` that matches returns true.
    #[tracing::instrument(name = "password.verify", skip_all)]
    pub async fn verify(&self, password: SecretString, hash: Option<String>) -> Result<bool> {
        let argon2 = self.argon2.clone();
        let dummy = self.dummy_hash.clone();
        self.run(move || {
            let known = hash.is_some();
            let phc = hash.as_deref().unwrap_or(&dummy);
            let parsed = PasswordHash::new(phc).map_err(|e| {
                AppError::Unexpected(anyhow::anyhow!("stored hash is malformed: {e}"))
            })?;
            let matches = argon2
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok();
            Ok(known && matches)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| AppError::Unexpected(e.into()))?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .await
            .map_err(|e| AppError::Unexpected(anyhow::Error::new(e).context("password task")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let p = Passwords::new(2).unwrap();
        let hash = p
            .hash(SecretString::from("correct horse battery"))
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            p.verify(
                SecretString::from("correct horse battery"),
                Some(hash.clone())
            )
            .await
            .unwrap()
        );
        assert!(
            !p.verify(SecretString::from("wrong horse battery"), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let p = Passwords::new(1).unwrap();
        assert!(
            !p.verify(
                SecretString::from("lectern dummy password, never used"),
                None
            )
            .await
            .unwrap()
        );
    }
}
