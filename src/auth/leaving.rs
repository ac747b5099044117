//! Leaving for good (ASVS 5.0 7.4.2): a learner deletes their account (with their password and
//! their email typed as a confirmation), or an operator disables, enables or deletes one. Every
//! sign-in of the learner ends first, through the sign-out service; a deleted account's data goes
//! with it, and its audit rows stay without anything that names the learner.

use secrecy::SecretString;

use super::{
    passwords::Passwords,
    rate_limit::RateLimits,
    records::EndReason,
    sign_out::{SignOut, Targets},
};
use crate::{
    accounts::{self, Email, User, Users},
    audit::{self, Event, Txn},
    clock::Clock,
    db::Pool,
    error::Result,
    telemetry,
    web::ClientInfo,
};

/// What the learner typed that was refused, beside its field.
#[derive(Debug, Default)]
pub struct DeletionErrors {
    pub current_password: Option<String>,
    pub confirm: Option<String>,
}

/// The service. A clone shares its parts.
#[derive(Clone)]
pub struct Leaving {
    db: Pool,
    users: Users,
    passwords: Passwords,
    limits: RateLimits,
    sign_out: SignOut,
    clock: Clock,
}

impl Leaving {
    pub fn new(
        db: Pool,
        users: Users,
        passwords: Passwords,
        limits: RateLimits,
        sign_out: SignOut,
        clock: Clock,
    ) -> Self {
        Self {
            db,
            users,
            passwords,
            limits,
            sign_out,
            clock,
        }
    }

    /// A learner deletes their own account: `typed` must be their password (counted as a sign-in
    /// attempt), and `confirm`, when the form asks for it, their email. `Err` of what was refused
    /// (nothing deleted), or `Ok` once everything of theirs is gone.
    pub async fn delete_own(
        &self,
        user: &User,
        typed: SecretString,
        confirm: Option<&str>,
        client: &ClientInfo,
    ) -> Result<std::result::Result<(), DeletionErrors>> {
        let mut errors = DeletionErrors::default();
        let confirmed = confirm.is_none_or(|typed| {
            Email::parse(typed).is_ok_and(|typed| typed.as_str() == user.email)
        });
        if !confirmed {
            errors.confirm = Some("Type your email address exactly as it is above.".to_owned());
        }
        let email = Email::parse(&user.email).ok();
        let attempt = self.limits.sign_in_attempt(email.as_ref(), client).await?;
        // Checked against the stored hash, not the cached learner's.
        let stored = accounts::find_by_id(&self.db, &user.id).await?;
        let hash = stored.map(|u| u.password_hash);
        if !self.passwords.verify(typed, hash).await? {
            telemetry::sign_in_failed();
            errors.current_password = Some("That is not your password.".to_owned());
            return Ok(Err(errors));
        }
        attempt.succeeded().await?;
        if !confirmed {
            return Ok(Err(errors));
        }
        self.delete(&user.id, client).await?;
        Ok(Ok(()))
    }

    /// Deletes an account: it is closed to new sign-ins, every sign-in of it ends (on every
    /// instance, at once), then its data goes in one transaction. Closing it first means a
    /// sign-in being made meanwhile is either among those ended or refused. Whether it existed.
    pub async fn delete(&self, user_id: &str, client: &ClientInfo) -> Result<bool> {
        let txn = Txn::new();
        let now = self.clock.now();
        let closed = accounts::close_for_deletion(&self.db, user_id, Some(now)).await?;
        self.users.forget(user_id);
        let deleted = async {
            self.sign_out
                .everywhere(user_id, EndReason::AccountDeleted, client, &txn)
                .await?;
            accounts::delete(&self.db, user_id, now, &txn).await
        };
        let existed = match deleted.await {
            Ok(existed) => existed,
            Err(err) => {
                // The learner may try again: open the account again, as it was.
                if closed {
                    let _ = accounts::close_for_deletion(&self.db, user_id, None).await;
                    self.users.forget(user_id);
                }
                return Err(err);
            }
        };
        if existed {
            let record = audit::Record {
                event: Event::AccountDeleted,
                user_id: None,
                sign_in_id: None,
                client,
                at: now,
                txn: &txn,
            };
            audit::record(&self.db, record).await?;
        }
        Ok(existed)
    }

    /// An operator disables an account: every sign-in of it ends (reason `revoked`), and a
    /// sign-in attempt gets the ordinary refusal until it is enabled. What it ended.
    pub async fn disable(&self, user_id: &str, client: &ClientInfo) -> Result<Targets> {
        let now = self.clock.now();
        let txn = Txn::new();
        accounts::set_disabled(&self.db, user_id, Some(now), &txn).await?;
        self.users.forget(user_id);
        self.audit(Event::AccountDisabled, user_id, client, now, &txn)
            .await?;
        self.sign_out
            .everywhere(user_id, EndReason::Revoked, client, &txn)
            .await
    }

    /// An operator enables a disabled account again.
    pub async fn enable(&self, user_id: &str, client: &ClientInfo) -> Result<()> {
        let now = self.clock.now();
        let txn = Txn::new();
        accounts::set_disabled(&self.db, user_id, None, &txn).await?;
        self.users.forget(user_id);
        self.audit(Event::AccountEnabled, user_id, client, now, &txn)
            .await
    }

    async fn audit(
        &self,
        event: Event,
        user_id: &str,
        client: &ClientInfo,
        at: i64,
        txn: &Txn,
    ) -> Result<()> {
        let record = audit::Record {
            event,
            user_id: Some(user_id),
            sign_in_id: None,
            client,
            at,
            txn,
        };
        audit::record(&self.db, record).await
    }
}
