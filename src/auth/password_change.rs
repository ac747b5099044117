//! Changing a password: the current one is checked (it counts as a sign-in attempt, under the
//! same limits), the new one hashed and stored, every other sign-in of the learner ended (reason
//! `password_changed`), and this browser signed in again under a new session and a new sign-in,
//! so its old session cookie, access tokens and refresh cookie die with the old password.

use axum_extra::extract::cookie::SignedCookieJar;
use secrecy::{ExposeSecret, SecretString};

use super::{
    AuthSession, CurrentUser,
    establish::{Establish, Way},
    passwords::Passwords,
    rate_limit::RateLimits,
    records::EndReason,
    sign_out::{Caller, SignOut},
};
use crate::{
    accounts::{self, Password, User, Users},
    audit::Txn,
    clock::Clock,
    db::Pool,
    error::Result,
    telemetry,
    web::ClientInfo,
};

/// What the learner typed that was refused, beside its field.
#[derive(Debug, Default)]
pub struct PasswordErrors {
    pub current_password: Option<String>,
    pub new_password: Option<String>,
}

/// What a change came to.
pub enum Changed {
    /// Changed: the refresh cookie of this browser's new sign-in.
    Yes(SignedCookieJar),
    /// Nothing changed, nothing ended.
    No(PasswordErrors),
}

/// The password change service. A clone shares its parts.
#[derive(Clone)]
pub struct PasswordChange {
    db: Pool,
    users: Users,
    passwords: Passwords,
    limits: RateLimits,
    sign_out: SignOut,
    establish: Establish,
    clock: Clock,
}

impl PasswordChange {
    pub fn new(
        db: Pool,
        users: Users,
        passwords: Passwords,
        limits: RateLimits,
        sign_out: SignOut,
        establish: Establish,
        clock: Clock,
    ) -> Self {
        Self {
            db,
            users,
            passwords,
            limits,
            sign_out,
            establish,
            clock,
        }
    }

    /// Changes `current`'s password from `old` to `new`. A wrong current password or a weak new
    /// one changes and ends nothing.
    pub async fn change(
        &self,
        current: &CurrentUser,
        auth: &mut AuthSession,
        old: SecretString,
        new: SecretString,
        client: &ClientInfo,
        jar: SignedCookieJar,
    ) -> Result<Changed> {
        let new = Password::parse(new.expose_secret().to_owned());
        let email = accounts::Email::parse(&current.user.email).ok();
        let attempt = self.limits.sign_in_attempt(email.as_ref(), client).await?;
        // Checked against the stored hash, not the cached learner's.
        let stored = accounts::find_by_id(&self.db, &current.user.id)
            .await?
            .map(|user| user.password_hash);
        if !self.passwords.verify(old, stored).await? {
            telemetry::sign_in_failed();
            return Ok(Changed::No(PasswordErrors {
                current_password: Some("That is not your current password.".to_owned()),
                new_password: new.err(),
            }));
        }
        attempt.succeeded().await?;
        let new = match new {
            Ok(new) => new,
            Err(message) => {
                return Ok(Changed::No(PasswordErrors {
                    new_password: Some(message),
                    ..PasswordErrors::default()
                }));
            }
        };
        let hash = self.passwords.hash(new.secret()).await?;
        let txn = Txn::new();
        let caller = Caller {
            sid: &current.sid,
            session: Some(&current.session_id),
        };
        // Every other sign-in ends before the new password is stored, so a store that cannot be
        // reached fails the change with nothing changed; and once more after, for a sign-in that
        // was checked against the old password a moment before (a later one is refused by
        // `SignIns::start`). Then this browser's own, with whatever else it holds.
        self.sign_out
            .password_changed(&current.user.id, caller, client, &txn)
            .await?;
        let now = self.clock.now();
        accounts::set_password_hash(&self.db, &current.user.id, &hash, &txn, now).await?;
        self.users.forget(&current.user.id);
        tracing::info!(user.id = %current.user.id, "password changed");
        self.sign_out
            .password_changed(&current.user.id, caller, client, &txn)
            .await?;
        let user = User {
            password_hash: hash,
            ..current.user.clone()
        };
        let previous = Some((current, EndReason::PasswordChanged));
        let way = Way {
            client,
            shared: current.shared,
            txn: &txn,
        };
        let jar = self
            .establish
            .browser(auth, previous, &user, way, jar)
            .await?;
        telemetry::signed_out("others", EndReason::PasswordChanged.as_str());
        Ok(Changed::Yes(jar))
    }
}
