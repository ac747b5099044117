//! Where sign-ins are live, the revocation lists of their access tokens, the browser sessions
//! that hold them, rate-limit counters and change marks live: Redis in production, process
//! memory in the embedded shape. Each is a small trait with one file per backend, chosen once at
//! start-up; services never know which one runs. The browser's session records themselves are
//! tower-sessions' ([`session_records`]).
//!
//! Every deadline is a unix second on the application's clock, and both backends compare against
//! that clock, so a test that moves the clock sees the same expiries as production.

pub mod keys;
pub mod memory;
pub mod read_ahead;
pub mod redis;
pub mod session_records;

use std::sync::Arc;

use async_trait::async_trait;

pub use session_records::SessionRecords;

use crate::error::Result;

/// What the store knows of a live sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSignIn {
    pub user_id: String,
    /// The absolute end of the sign-in.
    pub expires_at: i64,
    /// When it ends unless the learner is active again.
    pub idle_until: i64,
    /// The browser session that holds it (a browser sign-in's own, or the one an API sign-in
    /// was made beside), which ending it deletes.
    pub session: Option<String>,
    /// On a shared or public computer: when it ends unless an open page says it is still open
    /// (a heartbeat). `None` elsewhere.
    pub open_until: Option<i64>,
    /// When the learner last entered their password for it (signing in, or confirming it).
    pub auth_at: i64,
    /// Bound to its browser's key (device-bound sign-ins): its session cookie alone is not
    /// enough.
    pub bound: bool,
}

/// Which deadline a sign-in that is no longer live ran out at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapse {
    /// No open page sent a heartbeat in time: its browser was closed (shared computers).
    Closed,
    /// No activity for its idle time.
    Idle,
    /// Its absolute lifetime.
    Expired,
}

/// How long a shared computer's sign-in is kept past its deadline, so that whoever looks next
/// can tell which deadline it ran out at (see [`LiveSignIn::lapse`]).
pub const LAPSE_KEPT: i64 = 60;

impl LiveSignIn {
    /// The moment the sign-in stops being live unless touched.
    pub fn deadline(&self) -> i64 {
        let deadline = self.idle_until.min(self.expires_at);
        self.open_until.map_or(deadline, |open| open.min(deadline))
    }

    pub fn live_at(&self, now: i64) -> bool {
        now < self.deadline()
    }

    /// Whether it was made on a shared or public computer.
    pub fn shared(&self) -> bool {
        self.open_until.is_some()
    }

    /// Until when the store keeps it: its deadline, and for a shared computer's sign-in a little
    /// longer, so the next look can say which deadline it ran out at.
    pub fn kept_until(&self) -> i64 {
        self.deadline() + if self.shared() { LAPSE_KEPT } else { 0 }
    }

    /// Which deadline it ran out at (the earliest of them).
    pub fn lapse(&self) -> Lapse {
        let deadline = self.deadline();
        if self.open_until == Some(deadline) && deadline < self.idle_until.min(self.expires_at) {
            Lapse::Closed
        } else if self.expires_at <= self.idle_until {
            Lapse::Expired
        } else {
            Lapse::Idle
        }
    }

    /// `user|expires_at|idle_until|session|open_until|auth_at|bound` (`-` for none; `bound` is
    /// `1` or `0`): the value of the Redis key, which the store's scripts read field by field.
    fn encode(&self) -> String {
        let session = self.session.as_deref().unwrap_or("-");
        let open = self
            .open_until
            .map_or_else(|| "-".to_owned(), |t| t.to_string());
        format!(
            "{}|{}|{}|{session}|{open}|{}|{}",
            self.user_id,
            self.expires_at,
            self.idle_until,
            self.auth_at,
            u8::from(self.bound)
        )
    }

    /// Reads what [`Self::encode`] wrote.
    fn decode(value: &str) -> Option<Self> {
        let mut parts = value.split('|');
        let user_id = parts.next()?.to_owned();
        let expires_at = parts.next()?.parse().ok()?;
        let idle_until = parts.next()?.parse().ok()?;
        let session = match parts.next()? {
            "-" => None,
            id => Some(id.to_owned()),
        };
        let open_until = match parts.next()? {
            "-" => None,
            t => Some(t.parse().ok()?),
        };
        let auth_at = parts.next()?.parse().ok()?;
        let bound = parts.next()? == "1";
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            user_id,
            expires_at,
            idle_until,
            session,
            open_until,
            auth_at,
            bound,
        })
    }
}

/// How long, in seconds, an ended sign-in's store remembers the browser sessions it named: as
/// long as a sign-out's retry note is good.
pub const ENDED_KEPT: i64 = 3600;

/// What ending a sign-in in the store did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ended {
    /// Access tokens put on the revocation list.
    pub access_tokens: usize,
    /// The browser sessions that held the sign-in, for the caller to delete.
    pub sessions: Vec<String>,
}

/// Sign-in liveness and access-token revocation, shared by every instance.
#[async_trait]
pub trait SignInStore: Send + Sync + 'static {
    /// Readiness: one round trip.
    async fn ping(&self) -> Result<()>;

    /// What a Redis Cluster says of itself; `None` when the store is not a cluster.
    async fn cluster_health(&self) -> Result<Option<ClusterHealth>> {
        Ok(None)
    }

    /// Marks a sign-in live until its deadline.
    async fn mark_live(&self, sid: &str, live: &LiveSignIn) -> Result<()>;

    /// Activity: moves a live sign-in's idle deadline to `idle_until`, or `shared_idle_until` for
    /// a shared computer's; a sign-in that has ended stays ended. The sign-in as it is now, if it
    /// was live (and so touched), in the same round trip as the move.
    async fn touch(
        &self,
        sid: &str,
        idle_until: i64,
        shared_idle_until: i64,
    ) -> Result<Option<LiveSignIn>>;

    /// A shared computer's open page says it is still open: its sign-in's open deadline moves to
    /// `open_until`. Whether it was live and shared (and so moved).
    async fn heartbeat(&self, sid: &str, open_until: i64) -> Result<bool>;

    /// The learner entered their password again for this sign-in at `at`. Whether it was live.
    async fn reauthenticated(&self, sid: &str, at: i64) -> Result<bool>;

    /// What the store still holds of a sign-in, live or just past its deadline (a shared
    /// computer's is kept [`LAPSE_KEPT`] longer): which deadline it ran out at.
    async fn lapsed(&self, sid: &str) -> Result<Option<LiveSignIn>>;

    /// Keeps `challenge` as the one a device-bound sign-in's next proof must sign, until `until`
    /// (a new one replaces it).
    async fn put_challenge(&self, sid: &str, challenge: &str, until: i64) -> Result<()>;

    /// Takes the challenge kept for `sid`: each can be used once.
    async fn take_challenge(&self, sid: &str) -> Result<Option<String>>;

    /// Binds a live sign-in to a public key (a JWK) until `until`, its lifetime's end, and marks
    /// it bound. Whether it was live (an ended one stays unbound).
    async fn bind(&self, sid: &str, key: &str, until: i64) -> Result<bool>;

    /// The public key a sign-in is bound to, while it is.
    async fn bound_key(&self, sid: &str) -> Result<Option<String>>;

    /// The shared computers' sign-ins whose open deadline has passed at `now`, for the server to
    /// end them (reason `closed`), at most `limit` of them.
    async fn closing(&self, now: i64, limit: usize) -> Result<Vec<String>>;

    /// Stops listing a sign-in among [`SignInStore::closing`] (it was ended).
    async fn closed(&self, sid: &str) -> Result<()>;

    /// A sign-in that is live now; `None` once it ended or lapsed.
    async fn live(&self, sid: &str) -> Result<Option<LiveSignIn>>;

    /// [`SignInStore::live`], and the change mark `mark` (see [`ChangeMarks`]), in one round
    /// trip: what a page view needs to know besides its session.
    async fn live_and_mark(
        &self,
        sid: &str,
        mark: &str,
    ) -> Result<(Option<LiveSignIn>, Option<String>)>;

    /// [`SignInStore::live`] for many sign-ins in one round trip, in order.
    async fn live_many(&self, sids: &[String]) -> Result<Vec<Option<LiveSignIn>>>;

    /// Records an access token issued under a sign-in, so ending the sign-in revokes it unseen.
    /// `accepted_until` is the last moment a verifier could accept it (its `exp` plus leeway).
    async fn record_access_token(&self, sid: &str, jti: &str, accepted_until: i64) -> Result<()>;

    /// The bearer check, in one round trip: whether the sign-in is live and the token not revoked.
    async fn access_allowed(&self, sid: &str, jti: &str) -> Result<bool>;

    /// Seconds until a revoked token's entry disappears by itself; `None` when it is not revoked.
    async fn revocation_ttl(&self, sid: &str, jti: &str) -> Result<Option<i64>>;

    /// Records, until `until`, that a browser session holds a sign-in besides its own (an API
    /// sign-in made beside it), so that signing the browser out ends that one too. `false`, and
    /// nothing recorded, when the session has been ended already: checked in the same step, so
    /// a sign-in made beside a browser that is signing out never outlives it.
    async fn hold(&self, session_id: &str, sid: &str, until: i64) -> Result<bool>;

    /// Ends a browser session in the store, in one step: from now on [`SignInStore::hold`]
    /// refuses it, and, until `until`, [`SignInStore::session_ended`] says `reason` (the first
    /// reason stands: a repeat does not rewrite it). Returns the sign-ins it holds besides its
    /// own, as they are at that moment.
    async fn end_session(&self, session_id: &str, reason: &str, until: i64) -> Result<Vec<String>>;

    /// The sign-ins a browser session holds besides its own (recorded by [`SignInStore::hold`]).
    async fn session_holds(&self, session_id: &str) -> Result<Vec<String>>;

    /// Why a browser session was ended, while that is remembered.
    async fn session_ended(&self, session_id: &str) -> Result<Option<String>>;

    /// Ends a sign-in: every recorded access token that could still be accepted goes on the
    /// revocation list until that moment, and it stops being live. Returns the browser session
    /// it named, for the caller to delete. Ending twice is harmless, and for [`ENDED_KEPT`]
    /// seconds an end repeated (a command replayed after its reply was lost, a sign-out retried,
    /// a replay after Redis lost data) names that session again, so the repeat finishes what the
    /// first began.
    async fn end(&self, sid: &str) -> Result<Ended>;

    /// The time of the newest ending this store is known to hold (see `auth::ledger`): older
    /// than the database's newest means the store lost writes; `None` after it lost them all.
    async fn endings_held_until(&self) -> Result<Option<i64>>;

    /// Raises [`SignInStore::endings_held_until`] to `at` (never lowers it).
    async fn hold_endings_until(&self, at: i64) -> Result<()>;

    /// Calls `notify` each time a connection to the store is re-established (a restart, a
    /// failover: the store may have lost writes). A store in process memory never reconnects.
    fn on_reconnect(&self, notify: Arc<dyn Fn() + Send + Sync>) {
        let _ = notify;
    }
}

/// Rate-limit counters, shared by every instance, in one-minute windows. Every counter expires
/// with its window, whatever the timing of the calls.
#[async_trait]
pub trait RateCounters: Send + Sync + 'static {
    /// Counts one attempt in `bucket`'s window starting at `window` and returns the count so far.
    async fn hit(&self, bucket: &str, window: i64) -> Result<u64>;

    /// Takes one attempt back (it turned out not to count); nothing when the window is gone.
    async fn undo(&self, bucket: &str, window: i64) -> Result<()>;
}

/// Change marks, shared by every instance: a cache in process keeps what it read with the mark it
/// saw, and whoever changes the data replaces the mark, so every instance notices on its next look
/// (one small read instead of the data itself).
#[async_trait]
pub trait ChangeMarks: Send + Sync + 'static {
    /// The current mark of `name`; `None` when it has none (never changed, or forgotten).
    async fn mark(&self, name: &str) -> Result<Option<String>>;

    /// Gives `name` a new random mark, kept for `ttl` seconds (longer than any cache keeps what it
    /// read, so a mark that lapses cannot make an old entry look current).
    async fn remark(&self, name: &str, ttl: i64) -> Result<()>;
}

/// A new random mark.
fn fresh_mark() -> String {
    use rand::RngCore;
    format!("{:016x}", rand::rng().next_u64())
}

/// The length of a rate-limit window, in seconds.
pub const WINDOW_SECS: i64 = 60;

/// A Redis Cluster's own account of its health (`CLUSTER INFO`), for readiness.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterHealth {
    /// `ok`, or `fail` while some slot has no reachable master.
    pub state: String,
    pub slots_ok: u64,
    pub known_nodes: u64,
    /// Masters serving at least one slot.
    pub size: u64,
}

impl ClusterHealth {
    /// Reads the `key:value` lines of `CLUSTER INFO`.
    pub fn parse(info: &str) -> Option<Self> {
        let field = |name: &str| {
            info.lines()
                .filter_map(|line| line.trim().split_once(':'))
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_owned())
        };
        let number = |name: &str| field(name).and_then(|v| v.parse().ok());
        Some(Self {
            state: field("cluster_state")?,
            slots_ok: number("cluster_slots_ok")?,
            known_nodes: number("cluster_known_nodes")?,
            size: number("cluster_size")?,
        })
    }

    pub fn is_ok(&self) -> bool {
        self.state == "ok"
    }
}

/// The stores of one shape, chosen once.
#[derive(Clone)]
pub struct Stores {
    pub sign_ins: Arc<dyn SignInStore>,
    pub counters: Arc<dyn RateCounters>,
    pub marks: Arc<dyn ChangeMarks>,
    pub session_records: SessionRecords,
    /// Whether Redis backs them (readiness reports it).
    pub redis: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_info_is_read_field_by_field() {
        let info = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n\
                    cluster_known_nodes:6\r\ncluster_size:3\r\n";
        let health = ClusterHealth::parse(info).unwrap();
        assert!(health.is_ok());
        assert_eq!(
            (health.slots_ok, health.known_nodes, health.size),
            (16384, 6, 3)
        );
        assert_eq!(
            ClusterHealth::parse("cluster_state:fail").map(|h| h.is_ok()),
            None
        );
        let failing = info.replace("cluster_state:ok", "cluster_state:fail");
        assert!(!ClusterHealth::parse(&failing).unwrap().is_ok());
    }

    fn live(expires_at: i64, idle_until: i64, open_until: Option<i64>) -> LiveSignIn {
        LiveSignIn {
            user_id: "u".into(),
            expires_at,
            idle_until,
            session: Some("s1".into()),
            open_until,
            auth_at: 7,
            bound: false,
        }
    }

    #[test]
    fn live_sign_ins_read_back_what_they_wrote() {
        for live in [
            live(100, 50, None),
            LiveSignIn {
                session: None,
                ..live(100, 60, Some(70))
            },
            LiveSignIn {
                bound: true,
                ..live(100, 60, None)
            },
        ] {
            assert_eq!(LiveSignIn::decode(&live.encode()), Some(live));
        }
        for garbage in [
            "garbage",
            "u|1|2|3|4",
            "u|x|-|-|-|1",
            "u3|100|50|-|-",
            "u|1|2|-|x|1",
            "u|1|2|-|-|1",
            "u|1|2|-|-|1|1|1",
        ] {
            assert_eq!(LiveSignIn::decode(garbage), None);
        }
    }

    #[test]
    fn the_deadline_is_the_earliest_and_says_which_it_was() {
        let idle = live(100, 50, None);
        assert_eq!(idle.deadline(), 50);
        assert!(idle.live_at(49) && !idle.live_at(50));
        assert_eq!((idle.lapse(), idle.kept_until()), (Lapse::Idle, 50));
        assert_eq!(live(40, 50, None).lapse(), Lapse::Expired);
        let closed = live(100, 50, Some(30));
        assert_eq!((closed.deadline(), closed.lapse()), (30, Lapse::Closed));
        assert_eq!(closed.kept_until(), 30 + LAPSE_KEPT);
        assert_eq!(live(100, 50, Some(80)).lapse(), Lapse::Idle);
    }
}
