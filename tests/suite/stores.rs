//! One conformance suite for the store traits, run against every implementation: process memory
//! always, Redis when `TEST_REDIS_URL` is set. Time is the manual clock's; the Redis TTL checks
//! read Redis's own clock, so they run before the clock moves.

use std::{sync::Arc, time::Duration};

use lectern::{
    clock::Clock,
    store::{
        ENDED_KEPT, Lapse, LiveSignIn, RateCounters, SignInStore, memory::MemoryStore,
        redis::RedisStore,
    },
};

use crate::helpers::skipped;

struct Subject {
    name: &'static str,
    sign_ins: Arc<dyn SignInStore>,
    counters: Arc<dyn RateCounters>,
    clock: Clock,
    /// Redis: the key prefix, and a connection of the test's own.
    redis: Option<(String, fred::prelude::Pool)>,
}

/// Every implementation, each with its own manual clock (and its own key prefix on Redis).
async fn subjects() -> Vec<Subject> {
    let clock = Clock::manual();
    let memory = Arc::new(MemoryStore::new(clock.clone()));
    let mut all = vec![Subject {
        name: "memory",
        sign_ins: memory.clone(),
        counters: memory,
        clock,
        redis: None,
    }];
    if let Ok(url) = std::env::var("TEST_REDIS_URL") {
        let clock = Clock::manual();
        let pool = lectern::store::redis::connect(&url).await.unwrap();
        let prefix = format!("lectern:test:{}:", uuid::Uuid::new_v4().simple());
        let redis = Arc::new(RedisStore::new(pool.clone(), &prefix, clock.clone()));
        all.push(Subject {
            name: "redis",
            sign_ins: redis.clone(),
            counters: redis,
            clock,
            redis: Some((prefix, pool)),
        });
    }
    all
}

fn sid() -> String {
    lectern::crypto::random_token(16)
}

/// A live browser sign-in issued one access token, `j1`, accepted for 305 s more: its id.
async fn live_with_j1(s: &Subject) -> String {
    let (now, sid) = (s.clock.now(), sid());
    s.sign_ins.mark_live(&sid, &browser(now)).await.unwrap();
    s.sign_ins
        .record_access_token(&sid, "j1", now + 305)
        .await
        .unwrap();
    sid
}

fn browser(now: i64) -> LiveSignIn {
    LiveSignIn {
        user_id: "user-1".into(),
        expires_at: now + 3600,
        idle_until: now + 60,
        session: Some("browser-session".into()),
        open_until: None,
        auth_at: now,
        bound: false,
    }
}

/// A shared computer's browser sign-in: it also ends 30 s after its last heartbeat.
fn shared(now: i64) -> LiveSignIn {
    LiveSignIn {
        open_until: Some(now + 30),
        ..browser(now)
    }
}

#[tokio::test]
async fn a_live_sign_in_reads_back_until_its_idle_deadline() {
    for s in subjects().await {
        let now = s.clock.now();
        let sid = sid();
        let standing = browser(now);
        s.sign_ins.mark_live(&sid, &standing).await.unwrap();
        assert_eq!(
            s.sign_ins.live(&sid).await.unwrap(),
            Some(standing.clone()),
            "{}",
            s.name
        );
        s.clock.advance(Duration::from_secs(60));
        assert_eq!(s.sign_ins.live(&sid).await.unwrap(), None, "{}", s.name);
    }
}

#[tokio::test]
async fn touching_moves_the_idle_deadline_but_never_past_the_absolute_one() {
    for s in subjects().await {
        let now = s.clock.now();
        let sid = sid();
        s.sign_ins.mark_live(&sid, &browser(now)).await.unwrap();
        s.clock.advance(Duration::from_secs(50));
        let touched = s.sign_ins.touch(&sid, now + 110, now + 90).await.unwrap();
        assert_eq!(touched.map(|t| t.idle_until), Some(now + 110), "{}", s.name);
        s.clock.advance(Duration::from_secs(50));
        let standing = s.sign_ins.live(&sid).await.unwrap();
        assert_eq!(
            standing.map(|st| st.idle_until),
            Some(now + 110),
            "{}",
            s.name
        );
        s.sign_ins
            .touch(&sid, now + 99_999, now + 99_999)
            .await
            .unwrap();
        s.clock.advance(Duration::from_secs(3500));
        assert_eq!(s.sign_ins.live(&sid).await.unwrap(), None, "{}", s.name);
    }
}

/// A shared computer's sign-in: activity moves its own (shorter) idle deadline; heartbeats move
/// its open deadline, and only its; without them it lapses as closed, is listed for the server to
/// end, and the store can still say why a little past its deadline.
#[tokio::test]
async fn a_shared_computers_sign_in_stays_open_with_heartbeats_and_lapses_as_closed() {
    for s in subjects().await {
        let now = s.clock.now();
        let (sid, plain) = (sid(), sid());
        s.sign_ins.mark_live(&sid, &shared(now)).await.unwrap();
        s.sign_ins.mark_live(&plain, &browser(now)).await.unwrap();
        let touched = s.sign_ins.touch(&sid, now + 600, now + 50).await.unwrap();
        assert_eq!(touched.map(|t| t.idle_until), Some(now + 50), "{}", s.name);
        assert!(!s.sign_ins.heartbeat(&plain, now + 40).await.unwrap());
        s.clock.advance(Duration::from_secs(20));
        assert!(
            s.sign_ins.heartbeat(&sid, now + 45).await.unwrap(),
            "{}",
            s.name
        );
        assert!(
            s.sign_ins
                .closing(s.clock.now(), 10)
                .await
                .unwrap()
                .is_empty()
        );
        s.clock.advance(Duration::from_secs(25));
        assert_eq!(s.sign_ins.live(&sid).await.unwrap(), None, "{}", s.name);
        let lapsed = s
            .sign_ins
            .lapsed(&sid)
            .await
            .unwrap()
            .expect("kept a while");
        assert_eq!(lapsed.lapse(), Lapse::Closed, "{}", s.name);
        assert!(
            !s.sign_ins.heartbeat(&sid, now + 90).await.unwrap(),
            "no revival"
        );
        let closing = s.sign_ins.closing(s.clock.now(), 10).await.unwrap();
        assert_eq!(closing, vec![sid.clone()], "{}", s.name);
        s.sign_ins.closed(&sid).await.unwrap();
        assert!(
            s.sign_ins
                .closing(s.clock.now(), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.sign_ins.lapsed(&plain).await.unwrap().map(|l| l.lapse()),
            Some(Lapse::Idle),
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn entering_the_password_again_is_recorded_on_a_live_sign_in_only() {
    for s in subjects().await {
        let now = s.clock.now();
        let sid = sid();
        s.sign_ins.mark_live(&sid, &browser(now)).await.unwrap();
        assert!(s.sign_ins.reauthenticated(&sid, now + 5).await.unwrap());
        let live = s.sign_ins.live(&sid).await.unwrap().unwrap();
        assert_eq!(live.auth_at, now + 5, "{}", s.name);
        s.sign_ins.end(&sid).await.unwrap();
        assert!(!s.sign_ins.reauthenticated(&sid, now + 6).await.unwrap());
        assert_eq!(s.sign_ins.live(&sid).await.unwrap(), None);
    }
}

#[tokio::test]
async fn touching_never_revives_an_ended_sign_in() {
    for s in subjects().await {
        let now = s.clock.now();
        let sid = sid();
        s.sign_ins.mark_live(&sid, &browser(now)).await.unwrap();
        s.sign_ins.end(&sid).await.unwrap();
        assert_eq!(
            s.sign_ins.touch(&sid, now + 600, now + 600).await.unwrap(),
            None,
            "{}",
            s.name
        );
        assert_eq!(s.sign_ins.live(&sid).await.unwrap(), None, "{}", s.name);
    }
}

#[tokio::test]
async fn ending_revokes_every_token_that_could_still_be_accepted_until_that_moment() {
    for s in subjects().await {
        let now = s.clock.now();
        let sid = live_with_j1(&s).await;
        s.sign_ins
            .record_access_token(&sid, "j2", now + 120)
            .await
            .unwrap();
        assert!(s.sign_ins.access_allowed(&sid, "j1").await.unwrap());
        assert_eq!(s.sign_ins.revocation_ttl(&sid, "j1").await.unwrap(), None);
        let ended = s.sign_ins.end(&sid).await.unwrap();
        assert_eq!(ended.access_tokens, 2, "{}", s.name);
        let ttl = s
            .sign_ins
            .revocation_ttl(&sid, "j1")
            .await
            .unwrap()
            .unwrap();
        assert!((303..=305).contains(&ttl), "{}: ttl {ttl}", s.name);
        assert!(!s.sign_ins.access_allowed(&sid, "j1").await.unwrap());
        assert_eq!(
            s.sign_ins.end(&sid).await.unwrap().access_tokens,
            0,
            "{}: ending twice is harmless",
            s.name
        );
    }
}

#[tokio::test]
async fn ending_again_adds_later_tokens_to_the_list_and_drops_those_already_past() {
    for s in subjects().await {
        let now = s.clock.now();
        let sid = sid();
        s.sign_ins.mark_live(&sid, &browser(now)).await.unwrap();
        for (jti, until) in [("past", now + 2), ("j1", now + 305)] {
            s.sign_ins
                .record_access_token(&sid, jti, until)
                .await
                .unwrap();
        }
        s.clock.advance(Duration::from_secs(5));
        assert_eq!(s.sign_ins.end(&sid).await.unwrap().access_tokens, 1);
        // A token recorded after the end (a refresh racing it) is revoked by the next one.
        s.sign_ins
            .record_access_token(&sid, "j2", now + 400)
            .await
            .unwrap();
        assert_eq!(s.sign_ins.end(&sid).await.unwrap().access_tokens, 1);
        for (jti, ttl) in [("past", None), ("j1", Some(300)), ("j2", Some(395))] {
            let left = s.sign_ins.revocation_ttl(&sid, jti).await.unwrap();
            // Within a moment or two of the expected time left (the list's own clock is Redis's).
            let near = match (left, ttl) {
                (Some(l), Some(t)) => (t - 2..=t).contains(&l),
                (l, t) => l == t,
            };
            assert!(
                near,
                "{}: {jti} has {left:?} left, not about {ttl:?}",
                s.name
            );
        }
    }
}

#[tokio::test]
async fn a_token_of_a_lapsed_sign_in_is_refused_without_being_revoked() {
    for s in subjects().await {
        let sid = live_with_j1(&s).await;
        s.clock.advance(Duration::from_secs(61));
        assert!(
            !s.sign_ins.access_allowed(&sid, "j1").await.unwrap(),
            "{}",
            s.name
        );
    }
}

/// The revocation list is checked beside liveness, not instead of it: after a failover that kept
/// the list but lost the liveness delete, the sign-in reads live again, and its revoked token is
/// still refused while a token it never revoked is accepted.
#[tokio::test]
async fn a_revoked_token_is_refused_even_while_its_sign_in_reads_live() {
    for s in subjects().await {
        let now = s.clock.now();
        let sid = live_with_j1(&s).await;
        s.sign_ins.end(&sid).await.unwrap();
        s.sign_ins.mark_live(&sid, &browser(now)).await.unwrap();
        assert!(
            !s.sign_ins.access_allowed(&sid, "j1").await.unwrap(),
            "{}: the revoked token",
            s.name
        );
        assert!(
            s.sign_ins.access_allowed(&sid, "j2").await.unwrap(),
            "{}: a token never revoked",
            s.name
        );
    }
}

/// Checks and ends run as Lua scripts by hash; a Redis that lost them (restarted, newly
/// promoted, flushed) is sent their body, and both keep working.
#[tokio::test]
async fn checks_and_ends_keep_working_after_redis_loses_its_scripts() {
    use fred::interfaces::LuaInterface;
    let Ok(url) = std::env::var("TEST_REDIS_URL") else {
        skipped("needs TEST_REDIS_URL");
        return;
    };
    let admin = lectern::store::redis::connect(&url).await.unwrap();
    let forget = || async { admin.next().script_flush_cluster(false).await.unwrap() };
    for s in subjects().await.into_iter().filter(|s| s.name == "redis") {
        let sid = live_with_j1(&s).await;
        forget().await;
        assert!(s.sign_ins.access_allowed(&sid, "j1").await.unwrap());
        forget().await;
        assert_eq!(s.sign_ins.end(&sid).await.unwrap().access_tokens, 1);
        forget().await;
        assert!(!s.sign_ins.access_allowed(&sid, "j1").await.unwrap());
    }
}

#[tokio::test]
async fn a_session_finds_what_it_holds_and_ending_a_sign_in_names_its_session() {
    for s in subjects().await {
        let now = s.clock.now();
        let (form, api) = (sid(), sid());
        for sid in [&form, &api] {
            s.sign_ins.mark_live(sid, &browser(now)).await.unwrap();
        }
        assert!(
            s.sign_ins
                .hold("browser-session", &api, now + 3600)
                .await
                .unwrap()
        );
        let held = s.sign_ins.session_holds("browser-session").await.unwrap();
        assert_eq!(held, vec![api.clone()], "{}", s.name);
        let ended = s.sign_ins.end(&form).await.unwrap();
        assert_eq!(
            ended.sessions,
            vec!["browser-session".to_owned()],
            "{}",
            s.name
        );
        // Ended again (a command replayed after its reply was lost, a sign-out retried):
        // nothing more is revoked, and the session is named again, so the repeat deletes it.
        let again = s.sign_ins.end(&form).await.unwrap();
        assert_eq!(again.access_tokens, 0, "{}", s.name);
        assert_eq!(again.sessions, ended.sessions, "{}", s.name);
        assert!(
            s.sign_ins
                .session_holds("no-such-session")
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// What an ended sign-in named is named again by a repeated end, even one that finds a token
/// recorded after the first (a request racing it), and only for a while: memory forgets it on
/// its clock, Redis by the key's TTL. A sign-in that named no session keeps nothing.
#[tokio::test]
async fn an_ended_sign_ins_sessions_are_named_again_only_for_a_while() {
    use fred::interfaces::KeysInterface;
    for s in subjects().await {
        let now = s.clock.now();
        let (form, api) = (live_with_j1(&s).await, sid());
        let standing = LiveSignIn {
            session: None,
            ..browser(now)
        };
        s.sign_ins.mark_live(&api, &standing).await.unwrap();
        for sid in [&form, &api] {
            s.sign_ins.end(sid).await.unwrap();
        }
        let named = vec!["browser-session".to_owned()];
        assert_eq!(
            s.sign_ins.end(&form).await.unwrap().sessions,
            named,
            "{}",
            s.name
        );
        s.sign_ins
            .record_access_token(&form, "j2", now + 300)
            .await
            .unwrap();
        let again = s.sign_ins.end(&form).await.unwrap();
        assert_eq!(again.access_tokens, 1, "{}", s.name);
        assert_eq!(again.sessions, named, "{}: a racing token", s.name);
        assert!(s.sign_ins.end(&api).await.unwrap().sessions.is_empty());
        if let Some((prefix, pool)) = &s.redis {
            let ttl = |sid: String| async move {
                let key = format!("{prefix}{{{sid}}}:ended");
                pool.ttl::<i64, _>(key).await.unwrap()
            };
            let left = ttl(form.clone()).await;
            assert!((1..=ENDED_KEPT).contains(&left), "ttl {left}");
            assert_eq!(
                ttl(api.clone()).await,
                -2,
                "nothing kept for the API sign-in"
            );
        } else {
            s.clock.advance(Duration::from_secs(ENDED_KEPT as u64 + 1));
            assert!(s.sign_ins.end(&form).await.unwrap().sessions.is_empty());
        }
    }
}

#[tokio::test]
async fn many_sign_ins_are_read_back_in_order() {
    for s in subjects().await {
        let now = s.clock.now();
        let (a, b, c) = (sid(), sid(), sid());
        s.sign_ins.mark_live(&a, &browser(now)).await.unwrap();
        s.sign_ins.mark_live(&c, &browser(now)).await.unwrap();
        let standings = s
            .sign_ins
            .live_many(&[a.clone(), b.clone(), c.clone()])
            .await
            .unwrap();
        let live: Vec<bool> = standings.iter().map(Option::is_some).collect();
        assert_eq!(live, [true, false, true], "{}", s.name);
        assert!(s.sign_ins.live_many(&[]).await.unwrap().is_empty());
        let one = s
            .sign_ins
            .live_many(std::slice::from_ref(&b))
            .await
            .unwrap();
        assert_eq!(one, vec![None], "{}", s.name);
    }
}

/// Ending a browser session tombstones it: it says why until the tombstone expires (a repeated
/// end does not rewrite why), it hands back what it held at that moment, and from then on
/// nothing more can be attached to it, so a sign-in made beside a browser that is signing out
/// never outlives it.
#[tokio::test]
async fn an_ended_session_says_why_and_takes_nothing_more_on() {
    for s in subjects().await {
        let now = s.clock.now();
        let session = format!("s-{}", sid());
        let before = sid();
        assert!(
            s.sign_ins
                .hold(&session, &before, now + 3600)
                .await
                .unwrap()
        );
        let held = s
            .sign_ins
            .end_session(&session, "reuse", now + 60)
            .await
            .unwrap();
        assert_eq!(held, vec![before.clone()], "{}", s.name);
        let again = s
            .sign_ins
            .end_session(&session, "revoked", now + 60)
            .await
            .unwrap();
        assert_eq!(again, vec![before], "{}", s.name);
        let read = s.sign_ins.session_ended(&session).await.unwrap();
        assert_eq!(read.as_deref(), Some("reuse"), "{}", s.name);
        let late = sid();
        assert!(
            !s.sign_ins.hold(&session, &late, now + 3600).await.unwrap(),
            "{}: attached after the end",
            s.name
        );
        assert!(
            !s.sign_ins
                .session_holds(&session)
                .await
                .unwrap()
                .contains(&late)
        );
        assert_eq!(s.sign_ins.session_ended("s2").await.unwrap(), None);
        // Memory follows the manual clock; Redis expires by its own (checked by TTL elsewhere).
        if s.redis.is_none() {
            s.clock.advance(Duration::from_secs(61));
            assert_eq!(s.sign_ins.session_ended(&session).await.unwrap(), None);
        }
    }
}

#[tokio::test]
async fn rate_counters_count_per_bucket_and_window_and_take_back() {
    for s in subjects().await {
        let window = s.clock.now() / 60 * 60;
        let bucket = format!("test:{}", uuid::Uuid::new_v4().simple());
        assert_eq!(s.counters.hit(&bucket, window).await.unwrap(), 1);
        assert_eq!(s.counters.hit(&bucket, window).await.unwrap(), 2);
        s.counters.undo(&bucket, window).await.unwrap();
        assert_eq!(
            s.counters.hit(&bucket, window).await.unwrap(),
            2,
            "{}",
            s.name
        );
        assert_eq!(s.counters.hit(&bucket, window + 60).await.unwrap(), 1);
        assert_eq!(s.counters.hit("another", window).await.unwrap(), 1);
    }
}

/// A counter that expired while its attempt was being checked (a slow database, a burst) is not
/// brought back by the give-back: no key is left without its expiry.
#[tokio::test]
async fn taking_an_attempt_back_after_its_window_expired_leaves_nothing_behind() {
    use fred::interfaces::KeysInterface;
    for s in subjects().await {
        let window = s.clock.now() / 60 * 60;
        let bucket = format!("test:{}", uuid::Uuid::new_v4().simple());
        assert_eq!(s.counters.hit(&bucket, window).await.unwrap(), 1);
        match &s.redis {
            Some((prefix, pool)) => {
                let key = format!("{prefix}{{rl:{bucket}}}:{window}");
                // Expired mid-request, as Redis expires it.
                pool.del::<(), _>(&key).await.unwrap();
                s.counters.undo(&bucket, window).await.unwrap();
                assert_eq!(pool.exists::<u64, _>(&key).await.unwrap(), 0, "no key left");
                assert_eq!(s.counters.hit(&bucket, window).await.unwrap(), 1);
                assert!(
                    pool.ttl::<i64, _>(&key).await.unwrap() > 0,
                    "with its expiry"
                );
            }
            None => {
                s.clock.advance(Duration::from_secs(61));
                s.counters.undo(&bucket, window).await.unwrap();
                s.clock.advance(Duration::from_secs(120));
                let next = s.clock.now() / 60 * 60;
                assert_eq!(s.counters.hit(&bucket, next).await.unwrap(), 1);
            }
        }
    }
}

#[tokio::test]
async fn parallel_hits_are_each_counted_once() {
    for s in subjects().await {
        let window = s.clock.now() / 60 * 60;
        let bucket = format!("test:{}", uuid::Uuid::new_v4().simple());
        let hits = (0..20).map(|_| s.counters.hit(&bucket, window));
        let mut counts: Vec<u64> = futures_counts(hits).await;
        counts.sort_unstable();
        assert_eq!(counts, (1..=20).collect::<Vec<_>>(), "{}", s.name);
    }
}

async fn futures_counts<F>(hits: impl Iterator<Item = F>) -> Vec<u64>
where
    F: std::future::Future<Output = lectern::Result<u64>>,
{
    let mut set = Vec::new();
    for hit in hits {
        set.push(hit);
    }
    let mut out = Vec::new();
    for result in futures::future::join_all(set).await {
        out.push(result.unwrap());
    }
    out
}

/// Binding marks a live sign-in bound, keeps its key, and takes challenges once; ending the
/// sign-in forgets both.
#[tokio::test]
async fn a_bound_sign_in_keeps_its_key_until_it_ends() {
    for s in subjects().await {
        let now = s.clock.now();
        let sid = sid();
        s.sign_ins.mark_live(&sid, &browser(now)).await.unwrap();
        assert!(!s.sign_ins.live(&sid).await.unwrap().unwrap().bound);
        assert!(
            s.sign_ins
                .bind(&sid, "{\"kty\":\"EC\"}", now + 3600)
                .await
                .unwrap()
        );
        assert!(
            s.sign_ins.live(&sid).await.unwrap().unwrap().bound,
            "{}",
            s.name
        );
        assert_eq!(
            s.sign_ins.bound_key(&sid).await.unwrap().as_deref(),
            Some("{\"kty\":\"EC\"}")
        );
        s.sign_ins
            .put_challenge(&sid, "c1", now + 60)
            .await
            .unwrap();
        assert_eq!(
            s.sign_ins.take_challenge(&sid).await.unwrap().as_deref(),
            Some("c1")
        );
        assert_eq!(s.sign_ins.take_challenge(&sid).await.unwrap(), None, "once");
        s.sign_ins
            .put_challenge(&sid, "c2", now + 60)
            .await
            .unwrap();
        s.sign_ins.end(&sid).await.unwrap();
        assert_eq!(
            s.sign_ins.bound_key(&sid).await.unwrap(),
            None,
            "{}",
            s.name
        );
        assert_eq!(s.sign_ins.take_challenge(&sid).await.unwrap(), None);
        let other = self::sid();
        assert!(
            !s.sign_ins.bind(&other, "{}", now + 3600).await.unwrap(),
            "not live"
        );
    }
}
