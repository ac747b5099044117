//! The ways in: a browser session turned into a new sign-in (for a sign-in, a registration or a
//! password change), and an API client's sign-in, beside the browser whose page asked for it.
//! The way out is [`super::sign_out`].

use axum_extra::extract::cookie::SignedCookieJar;

use super::{
    AuthSession, CurrentUser, auth_error,
    records::EndReason,
    refresh_tokens,
    sign_ins::{Issued, Kind, SignIns, Started},
    sign_out::SignOut,
};
use crate::{
    accounts::User,
    audit::Txn,
    clock::Clock,
    error::{AppError, Result},
    store::{SessionRecords, session_records::unavailable},
    web::ClientInfo,
};

/// How a sign-in is made: from where, whether on a shared or public computer (no refresh cookie,
/// shorter lifetimes, ends when its browser is closed), and as part of which action.
#[derive(Debug, Clone, Copy)]
pub struct Way<'a> {
    pub client: &'a ClientInfo,
    pub shared: bool,
    pub txn: &'a Txn,
}

/// The ways in: the sign-in service, the way out (for the sign-in a browser replaces, or an API
/// sign-in whose browser signed out meanwhile), the session records, and how the refresh cookie
/// is set. A clone shares them.
#[derive(Clone)]
pub struct Establish {
    sign_ins: SignIns,
    sign_out: SignOut,
    session_records: SessionRecords,
    clock: Clock,
    secure_cookies: bool,
}

impl Establish {
    pub fn new(
        sign_ins: SignIns,
        sign_out: SignOut,
        session_records: SessionRecords,
        clock: Clock,
        secure_cookies: bool,
    ) -> Self {
        Self {
            sign_ins,
            sign_out,
            session_records,
            clock,
            secure_cookies,
        }
    }

    /// Sets the refresh cookie of a sign-in just started, when it has one.
    fn with_refresh_cookie(&self, jar: SignedCookieJar, started: &Started) -> SignedCookieJar {
        match &started.refresh {
            Some(refresh) => refresh_tokens::set_cookie(
                jar,
                refresh,
                started.expires_at - self.clock.now(),
                self.secure_cookies,
            ),
            None => jar,
        }
    }

    /// An API client's sign-in for `user`: its first access token, and the refresh cookie in
    /// `jar`. When a page's script signs in beside its browser session (`beside`, the session
    /// cookie it sent, when that session exists), the two hold each other, so that the browser's
    /// sign-out (with or without JavaScript) ends this sign-in too, and this one's sign-out the
    /// browser's; a browser that signed out before or meanwhile takes this sign-in with it
    /// ([`crate::error::AppError::SignedOutMeanwhile`]).
    pub async fn api(
        &self,
        user: &User,
        way: Way<'_>,
        beside: Option<&str>,
        jar: SignedCookieJar,
    ) -> Result<(Issued, SignedCookieJar)> {
        let client = way.client;
        let beside = match beside {
            Some(id) if self.session_records.find(id).await?.is_some() => Some(id),
            Some(id) if self.sign_ins.session_was_ended(id).await? => {
                return Err(AppError::SignedOutMeanwhile);
            }
            _ => None,
        };
        let started = self
            .sign_ins
            .start(user, client, Kind::Api { beside }, way.shared, way.txn)
            .await?;
        if let Some(session) = beside
            && !self
                .sign_ins
                .hold(session, &started.sid, started.expires_at)
                .await?
        {
            self.sign_out.operator(&started.sid, client).await?;
            return Err(AppError::SignedOutMeanwhile);
        }
        let now = self.clock.now();
        let issued = self
            .sign_ins
            .issue_access_token(&user.id, &started.sid, now)
            .await?;
        Ok((issued, self.with_refresh_cookie(jar, &started)))
    }

    /// Signs `user` in on this browser: ends the sign-in it had (`previous`, for its reason),
    /// cycles the session id (axum-login only does so when the session had no user yet, and a
    /// fixed id would let a planted cookie ride the sign-in), stores the learner and a fresh CSRF
    /// token in the session, starts the sign-in under an id derived from the session's, and sets
    /// the refresh cookie; all of it one action (`txn`) in the audit log.
    #[tracing::instrument(name = "sign_in.establish", skip_all)]
    pub async fn browser(
        &self,
        auth: &mut AuthSession,
        previous: Option<(&CurrentUser, EndReason)>,
        user: &User,
        way: Way<'_>,
        jar: SignedCookieJar,
    ) -> Result<SignedCookieJar> {
        let (client, txn) = (way.client, way.txn);
        if let Some((previous, reason)) = previous {
            // The session layer deletes the old record itself when the id is cycled below.
            let (sid, session) = (&previous.sid, &previous.session_id);
            self.sign_out
                .replaced(sid, session, reason, client, txn)
                .await?;
        }
        if auth.session.id().is_some() {
            auth.session.cycle_id().await.map_err(unavailable)?;
        }
        auth.login(user).await.map_err(auth_error)?;
        let session = &auth.session;
        // Save now so the session has its final id, from which the sign-in's id derives: ending
        // the sign-in from anywhere then deletes this browser session, and a sign-out from this
        // browser finds the sign-in even after the session record itself has expired.
        session.save().await.map_err(unavailable)?;
        let session_id = session
            .id()
            .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("a saved session without an id")))?
            .to_string();
        let kind = Kind::Browser {
            session: &session_id,
        };
        let started = match self
            .sign_ins
            .start(user, client, kind, way.shared, txn)
            .await
        {
            Ok(started) => started,
            Err(err) => {
                // No sign-in to go with it: the record must not outlive this request.
                let _ = session.flush().await;
                return Err(err);
            }
        };
        Ok(self.with_refresh_cookie(jar, &started))
    }
}
