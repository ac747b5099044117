//! Every Redis key Lectern writes, built here and only here. `{...}` is a Redis Cluster hash tag:
//! the keys one step writes together share a slot (a read may span slots: a page view reads its
//! session record, its sign-in's liveness and a change mark at once).

use std::sync::Arc;

/// Builds keys under one prefix (`lectern:`; tests give each app its own).
#[derive(Clone, Debug)]
pub struct RedisKeys {
    prefix: Arc<str>,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    fn sign_in(&self, sid: &str, part: &str) -> String {
        format!("{}{{{sid}}}:{part}", self.prefix)
    }

    /// `lectern:{<sid>}:live`: the sign-in is live (value
    /// `user|expires_at|idle_until|session|open_until|auth_at|bound`, see `LiveSignIn::encode`; the
    /// store's scripts read it field by field).
    pub fn live(&self, sid: &str) -> String {
        self.sign_in(sid, "live")
    }

    /// `lectern:{<sid>}:jtis`: the access tokens issued under it, scored by when they stop being accepted.
    pub fn jtis(&self, sid: &str) -> String {
        self.sign_in(sid, "jtis")
    }

    /// `lectern:{<sid>}:revoked`: the revocation list of an ended sign-in, a sorted set of its
    /// access tokens' `jti`s, each scored by the last moment that token could be accepted.
    pub fn revoked(&self, sid: &str) -> String {
        self.sign_in(sid, "revoked")
    }

    /// `lectern:{<sid>}:ended`: the browser session an ended sign-in named, so an end repeated
    /// (a replayed command, a retried sign-out) deletes it too.
    pub fn ended(&self, sid: &str) -> String {
        self.sign_in(sid, "ended")
    }

    /// `lectern:{<sid>}:challenge`: the one challenge a device-bound sign-in's next proof must
    /// sign (see `auth::bound`).
    pub fn challenge(&self, sid: &str) -> String {
        self.sign_in(sid, "challenge")
    }

    /// `lectern:{<sid>}:bound`: the public key (a JWK) a device-bound sign-in is bound to.
    pub fn bound(&self, sid: &str) -> String {
        self.sign_in(sid, "bound")
    }

    /// `lectern:{session:<id>}:sign_ins`: the sign-ins a browser session holds besides its own
    /// (API sign-ins made beside it).
    pub fn session_sign_ins(&self, session_id: &str) -> String {
        format!("{}{{session:{session_id}}}:sign_ins", self.prefix)
    }

    /// `lectern:{session:<id>}:ended`: that browser session was ended, and why (its tombstone:
    /// nothing can be attached to it any more).
    pub fn session_ended(&self, session_id: &str) -> String {
        format!("{}{{session:{session_id}}}:ended", self.prefix)
    }

    /// `lectern:{closing}`: the shared computers' sign-ins, each scored by the moment it ends
    /// unless an open page sends a heartbeat, for the server to end those that ran out.
    pub fn closing(&self) -> String {
        format!("{}{{closing}}", self.prefix)
    }

    /// `lectern:{endings}`: the time of the newest sign-in ending Redis is known to hold (see
    /// `auth::ledger`).
    pub fn endings(&self) -> String {
        format!("{}{{endings}}", self.prefix)
    }

    /// `lectern:{mark:<name>}`: the change mark of `name` (see [`super::ChangeMarks`]), such as
    /// `enrolments:<user id>`.
    pub fn mark(&self, name: &str) -> String {
        format!("{}{{mark:{name}}}", self.prefix)
    }

    /// `lectern:{rl:<bucket>}:<window>`: a rate-limit counter for one minute.
    pub fn counter(&self, bucket: &str, window: i64) -> String {
        format!("{}{{rl:{bucket}}}:{window}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sign_ins_keys_share_a_hash_tag() {
        let k = RedisKeys::new("lectern:");
        assert_eq!(k.live("abc"), "lectern:{abc}:live");
        assert_eq!(k.revoked("abc"), "lectern:{abc}:revoked");
        assert_eq!(k.jtis("abc"), "lectern:{abc}:jtis");
        assert_eq!(k.ended("abc"), "lectern:{abc}:ended");
        assert_eq!(k.session_ended("s1"), "lectern:{session:s1}:ended");
        assert_eq!(k.mark("enrolments:u1"), "lectern:{mark:enrolments:u1}");
        assert_eq!(
            k.counter("login:ip:1.2.3.4", 60),
            "lectern:{rl:login:ip:1.2.3.4}:60"
        );
    }
}
