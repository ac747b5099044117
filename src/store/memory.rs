//! The embedded shape's stores, in process memory. Every entry carries its deadline on the
//! application's clock and expired entries are swept, so memory stays bounded by what is live.
//!
//! Expiry is kept by hand because it must follow the application's clock (tests move it), which
//! no in-memory cache crate takes from outside.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use async_trait::async_trait;

use super::{ChangeMarks, Ended, LiveSignIn, RateCounters, SignInStore, WINDOW_SECS};
use crate::{clock::Clock, error::Result};

/// Both stores of the embedded shape.
#[derive(Default)]
pub struct MemoryStore {
    clock: Clock,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    live: HashMap<String, LiveSignIn>,
    /// sid -> issued (jti, accepted_until)
    jtis: HashMap<String, Vec<(String, i64)>>,
    /// (sid, jti) -> until
    revoked: HashMap<(String, String), i64>,
    /// browser session -> (the sign-ins it holds besides its own, until)
    session_sign_ins: HashMap<String, (HashSet<String>, i64)>,
    /// browser session -> (why it was ended, until): its tombstone
    ended: HashMap<String, (String, i64)>,
    /// ended sign-in -> (the browser sessions it named, until)
    ended_sign_ins: HashMap<String, (Vec<String>, i64)>,
    /// (bucket, window) -> count
    counters: HashMap<(String, i64), u64>,
    /// name -> (mark, until)
    marks: HashMap<String, (String, i64)>,
    /// the time of the newest ending held (see `SignInStore::endings_held_until`)
    endings: Option<i64>,
    /// shared computers' sign-ins -> when they end unless a page sends a heartbeat
    closing: HashMap<String, i64>,
    /// device-bound sign-in -> (its next proof's challenge, until)
    challenges: HashMap<String, (String, i64)>,
    /// device-bound sign-in -> (its public key, until)
    bound: HashMap<String, (String, i64)>,
    writes: u64,
}

impl MemoryStore {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            state: Mutex::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State, i64) -> T) -> T {
        let now = self.clock.now();
        // A poisoned lock only means another request panicked mid-update; the maps stay usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.writes += 1;
        if state.writes.is_multiple_of(512) {
            state.sweep(now);
        }
        f(&mut state, now)
    }

    /// Number of entries held after a sweep, for the boundedness test.
    pub fn len(&self) -> usize {
        self.with(|s, now| {
            s.sweep(now);
            s.live.len()
                + s.closing.len()
                + s.jtis.len()
                + s.revoked.len()
                + s.session_sign_ins.len()
                + s.ended.len()
                + s.ended_sign_ins.len()
                + s.counters.len()
                + s.challenges.len()
                + s.bound.len()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn sweep(&mut self, now: i64) {
        self.live.retain(|_, s| s.kept_until() > now);
        self.jtis.retain(|_, issued| {
            issued.retain(|(_, until)| *until > now);
            !issued.is_empty()
        });
        self.revoked.retain(|_, until| *until > now);
        self.session_sign_ins.retain(|_, (_, until)| *until > now);
        self.ended.retain(|_, (_, until)| *until > now);
        self.ended_sign_ins.retain(|_, (_, until)| *until > now);
        self.counters
            .retain(|(_, window), _| *window + WINDOW_SECS > now);
        self.marks.retain(|_, (_, until)| *until > now);
        self.challenges.retain(|_, (_, until)| *until > now);
        self.bound.retain(|_, (_, until)| *until > now);
    }

    fn live(&self, sid: &str, now: i64) -> Option<LiveSignIn> {
        self.live.get(sid).filter(|s| s.live_at(now)).cloned()
    }

    /// Changes a live sign-in (an ended or lapsed one stays so); it as it is now.
    fn update(
        &mut self,
        sid: &str,
        now: i64,
        change: impl FnOnce(&mut LiveSignIn) -> bool,
    ) -> Option<LiveSignIn> {
        let live = self.live.get_mut(sid).filter(|live| live.live_at(now))?;
        change(live).then(|| live.clone())
    }

    fn mark(&self, name: &str, now: i64) -> Option<String> {
        self.marks
            .get(name)
            .filter(|(_, until)| *until > now)
            .map(|(mark, _)| mark.clone())
    }
}

#[async_trait]
impl SignInStore for MemoryStore {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn mark_live(&self, sid: &str, live: &LiveSignIn) -> Result<()> {
        self.with(|s, _| {
            if let Some(open_until) = live.open_until {
                s.closing.insert(sid.to_owned(), open_until);
            }
            s.live.insert(sid.to_owned(), live.clone())
        });
        Ok(())
    }

    async fn touch(
        &self,
        sid: &str,
        idle_until: i64,
        shared_idle_until: i64,
    ) -> Result<Option<LiveSignIn>> {
        Ok(self.with(|s, now| {
            s.update(sid, now, |live| {
                live.idle_until = if live.shared() {
                    shared_idle_until
                } else {
                    idle_until
                };
                true
            })
        }))
    }

    async fn heartbeat(&self, sid: &str, open_until: i64) -> Result<bool> {
        Ok(self.with(|s, now| {
            let moved = s
                .update(sid, now, |live| {
                    live.open_until = live.open_until.map(|_| open_until);
                    live.shared()
                })
                .is_some();
            if moved {
                s.closing.insert(sid.to_owned(), open_until);
            }
            moved
        }))
    }

    async fn reauthenticated(&self, sid: &str, at: i64) -> Result<bool> {
        Ok(self.with(|s, now| {
            s.update(sid, now, |live| {
                live.auth_at = at;
                true
            })
            .is_some()
        }))
    }

    async fn lapsed(&self, sid: &str) -> Result<Option<LiveSignIn>> {
        Ok(self.with(|s, now| {
            s.live
                .get(sid)
                .filter(|live| live.kept_until() > now)
                .cloned()
        }))
    }

    async fn closing(&self, now: i64, limit: usize) -> Result<Vec<String>> {
        Ok(self.with(|s, _| {
            s.closing
                .iter()
                .filter(|(_, open_until)| **open_until <= now)
                .map(|(sid, _)| sid.clone())
                .take(limit)
                .collect()
        }))
    }

    async fn closed(&self, sid: &str) -> Result<()> {
        self.with(|s, _| s.closing.remove(sid));
        Ok(())
    }

    async fn live(&self, sid: &str) -> Result<Option<LiveSignIn>> {
        Ok(self.with(|s, now| s.live(sid, now)))
    }

    async fn live_and_mark(
        &self,
        sid: &str,
        mark: &str,
    ) -> Result<(Option<LiveSignIn>, Option<String>)> {
        Ok(self.with(|s, now| (s.live(sid, now), s.mark(mark, now))))
    }

    async fn live_many(&self, sids: &[String]) -> Result<Vec<Option<LiveSignIn>>> {
        Ok(self.with(|s, now| sids.iter().map(|sid| s.live(sid, now)).collect()))
    }

    async fn record_access_token(&self, sid: &str, jti: &str, accepted_until: i64) -> Result<()> {
        self.with(|s, _| {
            s.jtis
                .entry(sid.to_owned())
                .or_default()
                .push((jti.to_owned(), accepted_until));
        });
        Ok(())
    }

    async fn access_allowed(&self, sid: &str, jti: &str) -> Result<bool> {
        Ok(self.with(|s, now| {
            let revoked = s
                .revoked
                .get(&(sid.to_owned(), jti.to_owned()))
                .is_some_and(|until| *until > now);
            s.live(sid, now).is_some() && !revoked
        }))
    }

    async fn revocation_ttl(&self, sid: &str, jti: &str) -> Result<Option<i64>> {
        Ok(self.with(|s, now| {
            s.revoked
                .get(&(sid.to_owned(), jti.to_owned()))
                .filter(|until| **until > now)
                .map(|until| until - now)
        }))
    }

    async fn hold(&self, session_id: &str, sid: &str, until: i64) -> Result<bool> {
        Ok(self.with(|s, now| {
            if s.ended.get(session_id).is_some_and(|(_, end)| *end > now) {
                return false;
            }
            let entry = s
                .session_sign_ins
                .entry(session_id.to_owned())
                .or_insert_with(|| (HashSet::new(), until));
            entry.0.insert(sid.to_owned());
            entry.1 = entry.1.max(until);
            true
        }))
    }

    async fn end_session(&self, session_id: &str, reason: &str, until: i64) -> Result<Vec<String>> {
        Ok(self.with(|s, now| {
            let noted = s.ended.get(session_id).is_some_and(|(_, end)| *end > now);
            if !noted {
                s.ended
                    .insert(session_id.to_owned(), (reason.to_owned(), until));
            }
            s.session_sign_ins
                .get(session_id)
                .filter(|(_, until)| *until > now)
                .map(|(sids, _)| sids.iter().cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn session_holds(&self, session_id: &str) -> Result<Vec<String>> {
        Ok(self.with(|s, now| {
            s.session_sign_ins
                .get(session_id)
                .filter(|(_, until)| *until > now)
                .map(|(sids, _)| sids.iter().cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn session_ended(&self, session_id: &str) -> Result<Option<String>> {
        Ok(self.with(|s, now| {
            s.ended
                .get(session_id)
                .filter(|(_, until)| *until > now)
                .map(|(reason, _)| reason.clone())
        }))
    }

    async fn end(&self, sid: &str) -> Result<Ended> {
        Ok(self.with(|s, now| {
            s.challenges.remove(sid);
            s.bound.remove(sid);
            let sessions: Vec<String> = match s.live.remove(sid) {
                Some(live) => {
                    let sessions: Vec<String> = live.session.into_iter().collect();
                    if !sessions.is_empty() {
                        let until = now + super::ENDED_KEPT;
                        s.ended_sign_ins
                            .insert(sid.to_owned(), (sessions.clone(), until));
                    }
                    sessions
                }
                // Ended before: the sessions that end named, while they are remembered.
                None => s
                    .ended_sign_ins
                    .get(sid)
                    .filter(|(_, until)| *until > now)
                    .map(|(sessions, _)| sessions.clone())
                    .unwrap_or_default(),
            };
            let mut access_tokens = 0;
            for (jti, until) in s.jtis.remove(sid).unwrap_or_default() {
                if until > now {
                    s.revoked.insert((sid.to_owned(), jti), until);
                    access_tokens += 1;
                }
            }
            Ended {
                access_tokens,
                sessions,
            }
        }))
    }

    async fn endings_held_until(&self) -> Result<Option<i64>> {
        Ok(self.with(|s, _| s.endings))
    }

    async fn put_challenge(&self, sid: &str, challenge: &str, until: i64) -> Result<()> {
        self.with(|s, _| {
            s.challenges
                .insert(sid.to_owned(), (challenge.to_owned(), until))
        });
        Ok(())
    }

    async fn take_challenge(&self, sid: &str) -> Result<Option<String>> {
        Ok(self.with(|s, now| {
            s.challenges
                .remove(sid)
                .filter(|(_, until)| *until > now)
                .map(|(challenge, _)| challenge)
        }))
    }

    async fn bind(&self, sid: &str, key: &str, until: i64) -> Result<bool> {
        Ok(self.with(|s, now| {
            let bound = s
                .update(sid, now, |live| {
                    live.bound = true;
                    true
                })
                .is_some();
            if bound {
                s.bound.insert(sid.to_owned(), (key.to_owned(), until));
            }
            bound
        }))
    }

    async fn bound_key(&self, sid: &str) -> Result<Option<String>> {
        Ok(self.with(|s, now| {
            s.bound
                .get(sid)
                .filter(|(_, until)| *until > now)
                .map(|(key, _)| key.clone())
        }))
    }

    async fn hold_endings_until(&self, at: i64) -> Result<()> {
        self.with(|s, _| s.endings = Some(s.endings.map_or(at, |held| held.max(at))));
        Ok(())
    }
}

#[async_trait]
impl RateCounters for MemoryStore {
    async fn hit(&self, bucket: &str, window: i64) -> Result<u64> {
        Ok(self.with(|s, _| {
            let count = s.counters.entry((bucket.to_owned(), window)).or_insert(0);
            *count += 1;
            *count
        }))
    }

    async fn undo(&self, bucket: &str, window: i64) -> Result<()> {
        self.with(|s, now| {
            let key = (bucket.to_owned(), window);
            if window + WINDOW_SECS <= now {
                s.counters.remove(&key);
            } else if let Some(count) = s.counters.get_mut(&key) {
                *count = count.saturating_sub(1);
            }
        });
        Ok(())
    }
}

#[async_trait]
impl ChangeMarks for MemoryStore {
    async fn mark(&self, name: &str) -> Result<Option<String>> {
        Ok(self.with(|state, now| state.mark(name, now)))
    }

    async fn remark(&self, name: &str, ttl: i64) -> Result<()> {
        let mark = super::fresh_mark();
        self.with(|state, now| {
            state.marks.insert(name.to_owned(), (mark, now + ttl));
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn expired_entries_are_swept() {
        let clock = Clock::manual();
        let store = MemoryStore::new(clock.clone());
        let now = clock.now();
        let live = LiveSignIn {
            user_id: "u".into(),
            expires_at: now + 10,
            idle_until: now + 10,
            session: Some("b".into()),
            open_until: None,
            auth_at: now,
            bound: false,
        };
        store.mark_live("s", &live).await.unwrap();
        store.record_access_token("s", "j", now + 10).await.unwrap();
        store.hold("b", "s", now + 10).await.unwrap();
        store.hit("bucket", now - now % 60).await.unwrap();
        assert!(!store.is_empty());
        clock.advance(Duration::from_secs(120));
        assert!(store.is_empty());
    }
}
