//! The one way out. Every sign-out (the form, htmx, the API, with their scopes; one sign-in ended
//! from the account page or the API; a password change; an operator's revoke; refresh-token reuse;
//! an idle or absolute timeout; a browser signing in again) goes through [`end_all`], and every
//! response that signs a browser out is finished by [`clear_client_state`].
//!
//! [`end_all`] collects what to end once: the sign-ins named directly and every sign-in the
//! presented browser sessions hold; ends each through [`SignIns::end`]; then deletes each browser
//! session record once, leaving a note on the ones that did not ask, so their login page can say why.

use axum::{
    http::{HeaderName, HeaderValue},
    response::{IntoResponse, Response},
};
use axum_extra::extract::cookie::CookieJar;

use super::sign_ins::{EndReason, SignIns};
use crate::{
    config::ClearSiteData,
    error::AppError,
    web::{ClientInfo, cache::set_no_store, cookies::auth_cookie_removals},
};

/// What a sign-out must end: browser sessions and sign-ins. When the server cannot finish, this
/// is sealed into the page that says so, and its "try again" button sends it back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Owed {
    session_ids: Vec<String>,
    sids: Vec<String>,
    /// Sign-ins that stay even when a browser session they share is ended (the caller's own,
    /// for `others`); never sealed into a retry note.
    spare: Vec<String>,
}

/// What the retry note is sealed for (bound in as associated data).
pub const RETRY_PURPOSE: &str = "lectern.signout-retry";
/// How long a retry note stays good, in seconds: as long as the store names an ended sign-in's
/// sessions again, so a retry still reaches a browser whose first end was cut short.
const RETRY_TTL: i64 = crate::store::ENDED_KEPT;
/// At most this many of each are read back from a retry note (a learner's every sign-in, for a
/// `global` sign-out, with room to spare).
const OWED_MAX: usize = 1024;

/// A sign-in id: 22 base64url characters, as `random_token(16)` and `browser_sign_in_id` make them.
pub fn is_sid(value: &str) -> bool {
    value.len() == 22
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_session_id(value: &str) -> bool {
    value.parse::<tower_sessions::session::Id>().is_ok()
}

impl Owed {
    /// A browser session this request presents. Only a well-formed id counts, so a crafted cookie
    /// cannot smuggle other entries in.
    pub fn add_session(&mut self, id: &str) {
        if is_session_id(id) && !self.session_ids.iter().any(|s| s == id) {
            self.session_ids.push(id.to_owned());
        }
    }

    /// A sign-in this request presents a credential of.
    pub fn add_sid(&mut self, sid: &str) {
        if is_sid(sid) && !self.sids.iter().any(|s| s == sid) {
            self.sids.push(sid.to_owned());
        }
    }

    /// The sign-ins named so far.
    pub fn sids(&self) -> &[String] {
        &self.sids
    }

    pub fn merge(&mut self, other: &Self) {
        other.session_ids.iter().for_each(|id| self.add_session(id));
        other.sids.iter().for_each(|sid| self.add_sid(sid));
    }

    /// Sealed with AES-GCM, so a script on the page cannot read a usable session id out of it:
    /// holding the note lets one do nothing but finish this sign-out.
    pub fn seal(&self, keys: &super::Keys, now: i64) -> String {
        let note = format!(
            "{}|{}|{}",
            now + RETRY_TTL,
            self.session_ids.join(","),
            self.sids.join(",")
        );
        keys.seal(RETRY_PURPOSE, &note)
    }

    pub fn open(keys: &super::Keys, sealed: &str, now: i64) -> Option<Self> {
        let plain = keys.open(RETRY_PURPOSE, sealed)?;
        let mut parts = plain.splitn(3, '|');
        let expires: i64 = parts.next()?.parse().ok()?;
        if expires < now {
            return None;
        }
        let mut owed = Self::default();
        parts
            .next()?
            .split(',')
            .take(OWED_MAX)
            .for_each(|id| owed.add_session(id));
        parts
            .next()?
            .split(',')
            .take(OWED_MAX)
            .for_each(|sid| owed.add_sid(sid));
        Some(owed)
    }
}

/// How far a sign-out reaches: `local` (the default: every sign-in whose credential the caller
/// presents), `others` (every other sign-in of the learner; the caller's stay), `global` (all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    Local,
    Others,
    Global,
}

impl Scope {
    /// Anything unknown reads as `local`: a sign-out never fails on its input.
    pub fn parse(raw: Option<&str>) -> Self {
        match raw.map(str::trim) {
            Some("others") => Self::Others,
            Some("global") => Self::Global,
            _ => Self::Local,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Others => "others",
            Self::Global => "global",
        }
    }
}

/// What a scope reaches for the learner `user_id`, given what the caller presents: for `local`
/// just that; for `global` that and every sign-in of the learner not yet over; for `others` every
/// sign-in of the learner except the ones the caller holds.
pub async fn reach(
    sign_ins: &SignIns,
    presented: &Owed,
    user_id: &str,
    scope: Scope,
) -> crate::error::Result<Owed> {
    if scope == Scope::Local {
        return Ok(presented.clone());
    }
    let mut held = presented.sids.clone();
    for session_id in &presented.session_ids {
        held.extend(sign_ins.held_by(session_id).await?);
    }
    let mut owed = match scope {
        Scope::Others => Owed {
            spare: held.clone(),
            ..Owed::default()
        },
        _ => presented.clone(),
    };
    for sid in sign_ins.open_for_user(user_id).await? {
        if scope == Scope::Global || !held.contains(&sid) {
            owed.add_sid(&sid);
        }
    }
    Ok(owed)
}

/// Ends one sign-in a learner names by id (from their account page or the API), as the one way
/// out does, and counts it. `own` is the caller's sign-in and `own_session` the browser session
/// the caller's session layer will delete itself: naming the caller's own sign-in is signing
/// out, anything else is ending it from another device. `false`, and nothing ended, when the id
/// is not one of the learner's live sign-ins.
pub async fn end_one(
    sign_ins: &SignIns,
    user_id: &str,
    sid: &str,
    own: &str,
    own_session: Option<&str>,
    client: &ClientInfo,
) -> crate::error::Result<bool> {
    if sign_ins.live_of_user(user_id, sid).await?.is_none() {
        return Ok(false);
    }
    let (reason, own_session) = if sid == own {
        (EndReason::SignedOut, own_session)
    } else {
        (EndReason::Revoked, None)
    };
    let mut owed = Owed::default();
    owed.add_sid(sid);
    end_all(sign_ins, &owed, own_session, reason, client)
        .await
        .map_err(|unfinished| unfinished.error)?;
    crate::telemetry::signed_out("one", reason.as_str());
    Ok(true)
}

/// A sign-out that could not be finished: why, and everything it still owes.
#[derive(Debug)]
pub struct Unfinished {
    pub error: AppError,
    pub owed: Owed,
}

/// Ends every sign-in `presented` names or its browser sessions hold, and every other sign-in
/// held by a browser session one of those holds (a browser that is signed out keeps nothing),
/// deletes each of those sessions once, and notes why on the sessions that did not ask. `own_session` is the browser
/// session of the request itself when the caller's session layer deletes that record (a flush,
/// a new id): its sign-ins are ended here, its record is left to the layer. Each step is tried
/// even if an earlier one failed; the first failure is returned with everything that was
/// collected, so a retry can finish the job. On success, everything it ended.
#[tracing::instrument(name = "sign_out", skip_all, fields(reason = reason.as_str()))]
pub async fn end_all(
    sign_ins: &SignIns,
    presented: &Owed,
    own_session: Option<&str>,
    reason: EndReason,
    client: &ClientInfo,
) -> Result<Owed, Unfinished> {
    let store = sign_ins.store();
    let mut owed = presented.clone();
    let mut first_error: Option<AppError> = None;
    let mut keep = |result: crate::error::Result<()>| {
        if let Err(err) = result
            && first_error.is_none()
        {
            first_error = Some(err);
        }
    };
    // The sessions whose sign-ins are collected, starting with those presented.
    let mut held: Vec<String> = presented
        .session_ids
        .iter()
        .map(String::as_str)
        .chain(own_session)
        .map(str::to_owned)
        .collect();
    for session_id in &held {
        match sign_ins.held_by(session_id).await {
            Ok(sids) => sids.iter().for_each(|sid| owed.add_sid(sid)),
            Err(err) => keep(Err(err)),
        }
    }
    let mut next = 0;
    while let Some(sid) = owed.sids.get(next).cloned() {
        next += 1;
        let sessions = match sign_ins.end(&sid, reason, client).await {
            Ok(ended) => ended.sessions,
            Err(err) => {
                keep(Err(err));
                continue;
            }
        };
        for session_id in sessions {
            if held.contains(&session_id) {
                continue;
            }
            match sign_ins.held_by(&session_id).await {
                Ok(sids) => sids
                    .iter()
                    .filter(|s| !presented.spare.contains(s))
                    .for_each(|s| owed.add_sid(s)),
                Err(err) => keep(Err(err)),
            }
            held.push(session_id);
        }
    }
    // A browser may send its session cookie for one idle period after its last activity.
    let note_until = sign_ins.clock().now() + sign_ins.lifetimes().idle;
    for session_id in &held {
        if owed.session_ids.contains(session_id) || own_session == Some(session_id.as_str()) {
            continue;
        }
        owed.add_session(session_id);
        keep(
            store
                .note_session_ended(session_id, reason.login_reason(), note_until)
                .await,
        );
    }
    for session_id in &owed.session_ids {
        keep(sign_ins.sessions().remove(session_id).await);
    }
    match first_error {
        None => Ok(owed),
        Some(error) => Err(Unfinished { error, owed }),
    }
}

/// How a sign-out response tells the browser to forget: which cookies are secure, and what
/// `Clear-Site-Data` names.
#[derive(Debug, Clone, Copy)]
pub struct ClientState {
    pub secure_cookies: bool,
    pub clear_site_data: ClearSiteData,
}

/// What every sign-out response carries, whether or not the server side succeeded: both auth
/// cookies removed with the exact name and path they were set with, `Clear-Site-Data` (not
/// "cache": it stalls Chromium), and `Cache-Control: no-store`.
pub fn clear_client_state(response: impl IntoResponse, policy: ClientState) -> Response {
    let jar = auth_cookie_removals(policy.secure_cookies)
        .into_iter()
        .fold(CookieJar::new(), CookieJar::add);
    let mut response = (jar, response).into_response();
    if let Ok(value) = HeaderValue::from_str(&policy.clear_site_data.header_value()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("clear-site-data"), value);
    }
    set_no_store(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_note_keeps_only_well_formed_entries_and_expires() {
        let keys = super::super::Keys::derive(&[3; 32]);
        let mut owed = Owed::default();
        owed.add_session("AAAAAAAAAAAAAAAAAAAAAA");
        owed.add_session("not|a session,id");
        owed.add_sid("abcdefghijklmnopqrstuv");
        owed.add_sid("short");
        let sealed = owed.seal(&keys, 1000);
        assert_eq!(Owed::open(&keys, &sealed, 1000), Some(owed.clone()));
        assert_eq!(owed.session_ids.len(), 1);
        assert_eq!(owed.sids.len(), 1);
        assert_eq!(Owed::open(&keys, &sealed, 1000 + RETRY_TTL + 1), None);
        assert_eq!(Owed::open(&keys, "forged", 1000), None);
    }

    #[test]
    fn a_sign_out_response_clears_both_cookies_and_the_site_data() {
        let policy = ClientState {
            secure_cookies: false,
            clear_site_data: ClearSiteData::default(),
        };
        let response = clear_client_state(axum::http::StatusCode::NO_CONTENT, policy);
        let cookies: Vec<_> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(cookies.len(), 2, "{cookies:?}");
        assert!(cookies.iter().any(|c| c.starts_with("lectern_session=;")));
        assert!(cookies.iter().any(|c| c.starts_with("lectern_refresh=;")));
        assert_eq!(
            response.headers()["clear-site-data"],
            "\"cookies\", \"storage\""
        );
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
}
