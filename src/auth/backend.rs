//! axum-login's backend over the `users` table.

use std::sync::Arc;

use axum_login::{AuthUser, AuthnBackend};
use secrecy::SecretString;

use super::passwords::Passwords;
use crate::{
    accounts::{self, Email, User, Users},
    db::Pool,
    error::AppError,
};

/// How much of the password hash a session keeps.
const AUTH_HASH_LEN: usize = 22;

impl AuthUser for User {
    type Id = String;

    /// `<id>.<credentials>`: which learner, and under which password (see
    /// [`User::credentials`]).
    fn id(&self) -> String {
        format!("{}.{}", self.id, self.credentials())
    }

    /// The end of the password hash (the last 22 characters of argon2's output, without salt or
    /// parameters): a new password invalidates every session signed with the old one, and a
    /// session record in Redis holds nothing a guess could be checked against.
    fn session_auth_hash(&self) -> &[u8] {
        let phc = self.password_hash.as_bytes();
        &phc[phc.len().saturating_sub(AUTH_HASH_LEN)..]
    }
}

/// What a sign-in form or API body carries. An email that does not parse is kept as `None` and
/// still costs a (dummy) hash, so malformed and unknown emails take as long as wrong passwords.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub email: Option<Email>,
    pub password: SecretString,
}

impl Credentials {
    pub fn new(email: &str, password: SecretString) -> Self {
        Self {
            email: Email::parse(email).ok(),
            password,
        }
    }
}

/// axum-login clones it into every request: one shared allocation.
#[derive(Clone)]
pub struct Backend(Arc<Parts>);

struct Parts {
    pool: Pool,
    users: Users,
    passwords: Passwords,
}

impl Backend {
    pub fn new(pool: Pool, users: Users, passwords: Passwords) -> Self {
        Self(Arc::new(Parts {
            pool,
            users,
            passwords,
        }))
    }
}

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    type Error = AppError;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, AppError> {
        let user = match &creds.email {
            Some(email) => accounts::find_by_email(&self.0.pool, email).await?,
            None => None,
        };
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let ok = self.0.passwords.verify(creds.password, hash).await?;
        if !ok {
            crate::telemetry::sign_in_failed();
        }
        // A disabled account gets the ordinary refusal, after the same work.
        Ok(user.filter(|user| ok && user.disabled_at.is_none()))
    }

    /// Every page request: the cached learner, when the session's password is still theirs.
    async fn get_user(&self, user_id: &String) -> Result<Option<User>, AppError> {
        self.0.users.signed_in(user_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_keeps_only_the_end_of_the_password_hash() {
        let user = User {
            id: "u1".into(),
            email: "ada@example.com".into(),
            display_name: "Ada".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g".into(),
            created_at: 0,
            disabled_at: None,
        };
        assert_eq!(user.session_auth_hash(), b"Ghhc2hoYXNoaGFzaGhhc2g");
        assert!(!String::from_utf8_lossy(user.session_auth_hash()).contains('$'));
    }
}
