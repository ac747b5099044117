//! Password hashing with argon2id, off the async threads and with bounded concurrency, so a flood
//! of sign-ins queues for hashing instead of starving page views. Hashes run on a pool of their own,
//! one thread per core at a lower scheduling priority (nice 10, on Linux): an idle machine gives
//! them every core, a busy one serves page views first. The caller's tracing span is carried into
//! the hashing task. Each hashing thread keeps the memory one verify fills (19 MiB) for the next.

use std::{cell::RefCell, sync::Arc};

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{Output, SaltString},
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
            let matches =
                verify_on_kept_memory(&argon2, password.expose_secret().as_bytes(), &parsed);
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

thread_local! {
    /// The memory a hashing thread's last verify filled, kept for its next one.
    static KEPT_BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// What `argon2.verify_password(password, hash)` answers, computed in memory this thread keeps
/// (as large as `argon2`'s own parameters ask) instead of 19 MiB allocated, written over and
/// returned on every sign-in: the same inputs (algorithm, version, parameters and salt from
/// `hash`), the crate's own hashing call for caller-provided memory, and `Output`'s constant-time
/// comparison. A hash that asks for more memory than that goes the crate's own way. Lectern's
/// hasher has no secret (pepper); one would have to be given to the hasher built here too.
fn verify_on_kept_memory(argon2: &Argon2<'_>, password: &[u8], hash: &PasswordHash<'_>) -> bool {
    let computed = (|| {
        let (salt, expected) = (hash.salt?, hash.hash?);
        let params = Params::try_from(hash).ok()?;
        let version = match hash.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
        let mut salt_bytes = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_bytes).ok()?;
        let blocks = params.block_count();
        if blocks > argon2.params().block_count() {
            return Some(argon2.verify_password(password, hash).is_ok());
        }
        let hasher = Argon2::new(algorithm, version, params);
        let output = KEPT_BLOCKS.with_borrow_mut(|kept| {
            if kept.len() < blocks {
                kept.resize(argon2.params().block_count(), Block::default());
            }
            Output::init_with(expected.len(), |out| {
                hasher
                    .hash_password_into_with_memory(password, salt, out, &mut kept[..])
                    .map_err(Into::into)
            })
            .ok()
        })?;
        Some(output == expected)
    })();
    computed.unwrap_or(false)
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

    #[test]
    fn kept_memory_answers_as_the_crates_own_verify() {
        use argon2::password_hash::rand_core::OsRng;
        let ours = Passwords::new(1).unwrap().argon2;
        let argon2 = |algorithm, version, m, t, p, len| {
            Argon2::new(algorithm, version, Params::new(m, t, p, len).unwrap())
        };
        // Lectern's own parameters; less memory and more passes; another algorithm, version,
        // lane count and output length; and more memory than is kept (the crate's own way).
        let hashers = [
            ours.clone(),
            argon2(Algorithm::Argon2id, Version::V0x13, 4096, 3, 1, None),
            argon2(Algorithm::Argon2i, Version::V0x10, 8192, 2, 2, Some(64)),
            argon2(Algorithm::Argon2id, Version::V0x13, 32 * 1024, 1, 1, None),
        ];
        for hasher in hashers {
            let salt = SaltString::generate(&mut OsRng);
            let hash = hasher.hash_password(b"correct horse", &salt).unwrap();
            // Twice, the second time on the memory the first run left behind.
            for _ in 0..2 {
                for (password, right) in [(&b"correct horse"[..], true), (b"correct hors", false)] {
                    assert_eq!(ours.verify_password(password, &hash).is_ok(), right);
                    assert_eq!(verify_on_kept_memory(&ours, password, &hash), right);
                }
            }
        }
        // A hash without its output, or with parameters argon2 refuses, verifies nothing.
        for phc in [
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0",
            "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let hash = PasswordHash::new(phc).unwrap();
            assert!(!verify_on_kept_memory(&ours, b"correct horse", &hash));
        }
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
