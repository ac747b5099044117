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

impl AuthUser for User {
    type Id = String;

    /// `<id>.<credentials>`: which learner, and under which password (see
    /// [`User::credentials`]).
    fn id(&self) -> String {
        format!("{}.{}", self.id, self.credentials())
    }

    /// Nothing: the id already names the password the session was signed in under, and a
    /// session under another one finds no learner ([`accounts::Users::signed_in`]). So a new
    /// password still invalidates every session signed with the old one, and a session record
    /// holds nothing of the hash twice.
    fn session_auth_hash(&self) -> &[u8] {
        &[]
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

    fn ada(password_hash: &str) -> User {
        User {
            id: "u1".into(),
            email: "ada@example.com".into(),
            display_name: "Ada".into(),
            password_hash: password_hash.into(),
            created_at: 0,
            disabled_at: None,
        }
    }

    #[test]
    fn a_session_names_its_password_by_a_digest_of_it_only() {
        let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let user = ada(phc);
        let (id, credentials) = user
            .id()
            .split_once('.')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        assert_eq!(id, "u1");
        assert_eq!(credentials.len(), 11);
        assert!(!phc.contains(&credentials) && !credentials.contains('$'));
        assert!(user.session_auth_hash().is_empty());
        let renewed = ada(&phc.replace("c2FsdHNhbHRzYWx0", "bmV3c2FsdG5ld3NhbHQ"));
        assert_ne!(
            renewed.id(),
            user.id(),
            "a new password hash names other credentials"
        );
    }
}
