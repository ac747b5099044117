//! Recent authentication (ASVS 5.0 7.5.2, RFC 9470): ending another sign-in, signing out the
//! others or everywhere, and deleting the account need the password entered by this sign-in
//! within `LECTERN_REAUTH_WINDOW`. A browser is asked for it first (or sends it with the form);
//! an API client gets `insufficient_user_authentication` and re-authenticates for a fresh token.

use secrecy::SecretString;

use super::{
    passwords::Passwords,
    rate_limit::RateLimits,
    sign_ins::{Issued, SignIns},
};
use crate::{
    accounts::{self, Email},
    clock::Clock,
    db::Pool,
    error::{AppError, Result},
    telemetry,
    web::ClientInfo,
};

/// Whether what needs a recent password may go ahead.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Ask for the password first (again, with why, when the one given was wrong).
    Ask {
        error: Option<String>,
    },
}

/// The recent-authentication service. A clone shares its parts.
#[derive(Clone)]
pub struct Reauth {
    db: Pool,
    passwords: Passwords,
    limits: RateLimits,
    sign_ins: SignIns,
    clock: Clock,
    /// Seconds a password entry counts as recent.
    window: i64,
}

impl Reauth {
    pub fn new(
        db: Pool,
        passwords: Passwords,
        limits: RateLimits,
        sign_ins: SignIns,
        clock: Clock,
        window: i64,
    ) -> Self {
        Self {
            db,
            passwords,
            limits,
            sign_ins,
            clock,
            window,
        }
    }

    /// Whether a password entered at `auth_at` is recent now.
    pub fn recent(&self, auth_at: i64) -> bool {
        self.clock.now() - auth_at <= self.window
    }

    /// For an API call: its token's `auth_time` is recent, or the call is refused (401
    /// `insufficient_user_authentication` with the window as `max_age`).
    pub fn api(&self, auth_time: i64) -> Result<()> {
        if self.recent(auth_time) {
            return Ok(());
        }
        Err(AppError::InsufficientAuthentication {
            max_age: self.window,
        })
    }

    /// For a browser's sign-in `sid`: open when its password was entered recently, or when
    /// `typed` is its learner's password (checked as a sign-in attempt is, under the same limits;
    /// the sign-in then counts as freshly authenticated). A sign-in that is not live is open: what
    /// follows finds it over.
    pub async fn browser(
        &self,
        sid: &str,
        typed: Option<SecretString>,
        client: &ClientInfo,
    ) -> Result<Gate> {
        let Some(live) = self.sign_ins.live_sign_in(sid).await? else {
            return Ok(Gate::Open);
        };
        if self.recent(live.auth_at) {
            return Ok(Gate::Open);
        }
        let Some(typed) = typed else {
            return Ok(Gate::Ask { error: None });
        };
        if !self.password_is(&live.user_id, typed, client).await? {
            return Ok(Gate::Ask {
                error: Some("That is not your password.".to_owned()),
            });
        }
        self.sign_ins.reauthenticated(sid).await?;
        Ok(Gate::Open)
    }

    /// `POST /api/v1/auth/reauthenticate`: the bearer's learner's password again, and a new access
    /// token of the same sign-in with a fresh `auth_time`. `None` for a wrong password.
    pub async fn api_reauthenticate(
        &self,
        user_id: &str,
        sid: &str,
        typed: SecretString,
        client: &ClientInfo,
    ) -> Result<Option<Issued>> {
        if !self.password_is(user_id, typed, client).await? {
            return Ok(None);
        }
        if !self.sign_ins.reauthenticated(sid).await? {
            return Err(AppError::InvalidToken);
        }
        let now = self.clock.now();
        Ok(Some(
            self.sign_ins.issue_access_token(user_id, sid, now).await?,
        ))
    }

    /// Whether `typed` is the learner's password, counted as a sign-in attempt.
    async fn password_is(
        &self,
        user_id: &str,
        typed: SecretString,
        client: &ClientInfo,
    ) -> Result<bool> {
        let user = accounts::find_by_id(&self.db, user_id).await?;
        let email = user.as_ref().and_then(|u| Email::parse(&u.email).ok());
        let attempt = self.limits.sign_in_attempt(email.as_ref(), client).await?;
        let hash = user.map(|u| u.password_hash);
        if !self.passwords.verify(typed, hash).await? {
            telemetry::sign_in_failed();
            return Ok(false);
        }
        attempt.succeeded().await?;
        Ok(true)
    }
}
