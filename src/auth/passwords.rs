//! Password hashing with argon2id, off the async threads and with bounded concurrency, so a flood
//! of sign-ins queues for hashing instead of starving page views. Hashes run on a pool of their own,
//! one thread per core at a lower scheduling priority (nice 10, on Linux): an idle machine gives
//! them every core, a busy one serves page views first. The caller's tracing span is carried into
//! the hashing task.

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
    pool: Arc<rayon::ThreadPool>,
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
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(concurrency.max(1))
            .thread_name(|i| format!("lectern-hash-{i}"))
            .start_handler(|_| lower_priority())
            // A panicking hash fails its request (its answer is dropped), not the process.
            .panic_handler(|_| tracing::error!("a password-hashing task panicked"))
            .build()
            .context("starting the password-hashing threads")?;
        Ok(Self {
            argon2,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            pool: Arc::new(pool),
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
        let (done, result) = tokio::sync::oneshot::channel();
        self.pool.spawn(move || {
            // The receiver is gone only when the request was dropped; nothing is waiting.
            let _ = done.send(span.in_scope(work));
        });
        result
            .await
            .map_err(|e| AppError::Unexpected(anyhow::Error::new(e).context("password task")))?
    }
}

/// How much nicer than the rest of the process the hashing threads are.
const HASHING_NICE: i32 = 10;

/// The calling thread's niceness (Linux keeps one per thread).
#[cfg(target_os = "linux")]
fn thread_nice() -> (libc::id_t, i32) {
    // SAFETY: plain system calls about the calling thread, with no pointers involved.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        (tid, libc::getpriority(libc::PRIO_PROCESS, tid))
    }
}

/// Lowers the calling thread's scheduling priority by [`HASHING_NICE`] (on Linux, `setpriority`
/// on a thread id moves that thread alone). Best effort: a refusal leaves it where it was.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let (tid, nice) = thread_nice();
        // SAFETY: a plain system call on the calling thread.
        let refused =
            unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, (nice + HASHING_NICE).min(19)) }
                != 0;
        if refused {
            tracing::warn!("could not lower the priority of a password-hashing thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_hash_fails_its_request_not_the_process() {
        let p = Passwords::new(1).unwrap();
        let failed = p
            .run(|| -> Result<()> { panic!("a hash that panics") })
            .await;
        assert!(failed.is_err());
        assert!(
            p.hash(SecretString::from("the pool still hashes"))
                .await
                .is_ok()
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_at_a_lower_priority_than_page_views() {
        let p = Passwords::new(1).unwrap();
        let (_, ours) = thread_nice();
        let (_, hashing) = p.run(|| Ok(thread_nice())).await.unwrap();
        assert_eq!(hashing, (ours + HASHING_NICE).min(19));
    }

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
